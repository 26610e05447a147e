//! Minting and verifying: one [`Minter`] and one [`Verifier`], sharing the
//! claims type and the wire format.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Header, Validation};
use serde::Deserialize;

use crate::Error;
use crate::claims::{AccessEntry, Claims, Permission, TokenFormat, WireClaims};
use crate::keys::{Algorithm, KeySet, SigningKey};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mints tokens in the Docker registry token format.
#[derive(Debug, Clone)]
pub struct Minter {
    key: SigningKey,
    issuer: String,
    audience: String,
    max_ttl: Duration,
}

/// What one token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRequest {
    /// `sub`: who the token is for (a build, a user).
    pub subject: String,
    /// The grants.
    pub permissions: Vec<Permission>,
    /// Lifetime.
    pub ttl: Duration,
    /// The build it is for, if any.
    pub build_id: Option<String>,
}

impl Minter {
    /// Default maximum lifetime of a token: one hour.
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(3600);

    /// A minter for `issuer`, whose tokens name `audience` (the registry's
    /// `service`).
    pub fn new(key: SigningKey, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            key,
            issuer: issuer.into(),
            audience: audience.into(),
            max_ttl: Self::DEFAULT_MAX_TTL,
        }
    }

    /// Sets the longest lifetime `mint` accepts.
    #[must_use]
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// Signs a token for `req`. `aud` is a single string, as CNCF
    /// distribution requires; `nbf` and `iat` are now, `jti` is random.
    ///
    /// # Errors
    ///
    /// [`Error::TtlTooLong`], or a signing failure.
    pub fn mint(&self, req: &MintRequest) -> Result<String, Error> {
        if req.ttl > self.max_ttl {
            return Err(Error::TtlTooLong {
                requested_secs: req.ttl.as_secs(),
                max_secs: self.max_ttl.as_secs(),
            });
        }
        let now = now();
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| Error::Signing(format!("randomness: {e}")))?;
        let claims = WireClaims {
            iss: Some(self.issuer.clone()),
            sub: Some(req.subject.clone()),
            aud: Some(vec![self.audience.clone()]),
            exp: Some(now.saturating_add(req.ttl.as_secs())),
            nbf: Some(now),
            iat: Some(now),
            jti: Some(jti.iter().map(|b| format!("{b:02x}")).collect()),
            access: Some(req.permissions.iter().map(AccessEntry::from).collect()),
            build_id: req.build_id.clone(),
            repos: None,
            scope: None,
        };
        let mut header = Header::new(self.key.algorithm().jwt());
        header.kid = self.key.kid().map(str::to_owned);
        // `aud` must be a single string for distribution: serialize it so.
        let mut value = serde_json::to_value(&claims).map_err(|e| Error::Signing(e.to_string()))?;
        value["aud"] = serde_json::Value::String(self.audience.clone());
        Ok(jsonwebtoken::encode(&header, &value, self.key.encoding())?)
    }
}

/// Verifies tokens: one validation path for both formats.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<(crate::keys::VerifyingKey, Validation)>,
    issuer: String,
    audience: String,
    leeway: u64,
    max_token_size: usize,
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl Verifier {
    /// Default clock leeway: 60 s (as distribution).
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
    /// Default largest token accepted: 16 KiB.
    pub const DEFAULT_MAX_TOKEN_SIZE: usize = 16 * 1024;

    /// A verifier for tokens from `issuer` for `audience`, signed by one of
    /// `keys`. Legacy-format tokens (HS256, no `aud`) verify only with a
    /// [`VerifyingKey::legacy_hs256`](crate::VerifyingKey::legacy_hs256) key in the set, and such a key verifies
    /// nothing else.
    pub fn new(keys: &KeySet, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        let issuer = issuer.into();
        let audience = audience.into();
        let mut v = Self {
            keys: Vec::new(),
            issuer,
            audience,
            leeway: Self::DEFAULT_LEEWAY.as_secs(),
            max_token_size: Self::DEFAULT_MAX_TOKEN_SIZE,
        };
        v.keys = keys
            .keys()
            .iter()
            .map(|k| (k.clone(), v.validation(k.algorithm())))
            .collect();
        v
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut val = Validation::new(alg.jwt());
        val.leeway = self.leeway;
        val.validate_exp = true;
        val.validate_nbf = true;
        val.set_issuer(&[&self.issuer]);
        val.set_audience(&[&self.audience]);
        val.set_required_spec_claims(&["exp", "iss"]);
        val
    }

    /// Sets the clock leeway for `exp`, `nbf` and `iat` (at most a day).
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.as_secs().min(86_400);
        self.rebuild();
        self
    }

    /// Sets the largest token (in bytes) accepted.
    #[must_use]
    pub fn max_token_size(mut self, bytes: usize) -> Self {
        self.max_token_size = bytes;
        self
    }

    fn rebuild(&mut self) {
        let keys = std::mem::take(&mut self.keys);
        self.keys = keys
            .into_iter()
            .map(|(k, _)| {
                let v = self.validation(k.algorithm());
                (k, v)
            })
            .collect();
    }

    /// Verifies `token` and returns its claims.
    ///
    /// # Errors
    ///
    /// Typed: [`Error::TooLarge`], [`Error::Malformed`],
    /// [`Error::AlgorithmNotAllowed`] (incl. `none` and HS/RS confusion),
    /// [`Error::UnknownKeyId`], [`Error::BadSignature`], [`Error::Expired`],
    /// [`Error::NotYetValid`], [`Error::IssuedInFuture`],
    /// [`Error::WrongIssuer`], [`Error::WrongAudience`],
    /// [`Error::LegacyNotAccepted`] (no legacy key in the set).
    pub fn verify(&self, token: &str) -> Result<Claims, Error> {
        if token.len() > self.max_token_size {
            return Err(Error::TooLarge {
                size: token.len(),
                max: self.max_token_size,
            });
        }
        let header = token
            .split_once('.')
            .map(|(h, _)| h)
            .ok_or_else(|| Error::Malformed("not a JWT".into()))?;
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| Error::Malformed("header is not base64url".into()))?;
        let header: JoseHeader = serde_json::from_slice(&header)
            .map_err(|e| Error::Malformed(format!("header: {e}")))?;
        let (key, validation) = self.select(header.kid.as_deref())?;
        if header.alg != key.algorithm().name() {
            return Err(Error::AlgorithmNotAllowed(header.alg));
        }
        let data = jsonwebtoken::decode::<WireClaims>(token, key.decoding(), validation)?;
        let claims = data.claims.into_claims()?;
        match (claims.format, key.is_legacy()) {
            (TokenFormat::Docker, true) => {
                return Err(Error::Malformed(
                    "a legacy key cannot vouch for an access-list token".into(),
                ));
            }
            (TokenFormat::Legacy, false) => return Err(Error::LegacyNotAccepted),
            (TokenFormat::Docker, false) if claims.audience.is_empty() => {
                return Err(Error::WrongAudience);
            }
            _ => {}
        }
        if claims
            .issued_at
            .is_some_and(|iat| iat > now().saturating_add(self.leeway))
        {
            return Err(Error::IssuedInFuture);
        }
        Ok(claims)
    }

    fn select(&self, kid: Option<&str>) -> Result<&(crate::keys::VerifyingKey, Validation), Error> {
        match kid {
            Some(k) => self
                .keys
                .iter()
                .find(|(key, _)| key.kid() == Some(k))
                .ok_or_else(|| Error::UnknownKeyId(k.to_owned())),
            None => self
                .keys
                .iter()
                .find(|(key, _)| key.kid().is_none())
                .ok_or(Error::NoKey),
        }
    }
}
