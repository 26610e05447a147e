//! Signing and verifying keys. The algorithm is pinned by the key: a token
//! is only ever checked with the algorithm of the key its `kid` names.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};

use crate::Error;

/// Minimum shared-secret length for HS256 keys.
pub const MIN_SIGNING_SECRET: usize = 32;
/// Minimum length of a legacy-format secret (older deployments).
pub const MIN_VERIFYING_SECRET: usize = 16;

/// The algorithms Kiln signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rs256,
}

impl Algorithm {
    /// The JOSE name (`HS256`, `ES256`, `EdDSA`, `RS256`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }

    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Hs256 => jsonwebtoken::Algorithm::HS256,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One PEM block: its label and DER bytes.
fn pem_block(pem: &[u8]) -> Result<(String, Vec<u8>), Error> {
    let text =
        std::str::from_utf8(pem).map_err(|_| Error::InvalidKey("PEM is not UTF-8".into()))?;
    let begin = text
        .find("-----BEGIN ")
        .ok_or_else(|| Error::InvalidKey("no PEM block".into()))?;
    let rest = &text[begin + 11..];
    let label_end = rest
        .find("-----")
        .ok_or_else(|| Error::InvalidKey("bad PEM header".into()))?;
    let label = rest[..label_end].to_owned();
    let body_and_end = &rest[label_end + 5..];
    let end = body_and_end
        .find("-----END ")
        .ok_or_else(|| Error::InvalidKey("PEM block not terminated".into()))?;
    let b64: String = body_and_end[..end].split_whitespace().collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|e| Error::InvalidKey(format!("PEM body: {e}")))?;
    Ok((label, der))
}

const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

/// One DER TLV at `pos`: (tag, content range).
fn der_tlv(der: &[u8], pos: usize) -> Option<(u8, std::ops::Range<usize>)> {
    let tag = *der.get(pos)?;
    let first = *der.get(pos + 1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = der.get(pos + 2..pos + 2 + n)?;
        (
            bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)),
            2 + n,
        )
    };
    let start = pos + header;
    let end = start.checked_add(len)?;
    (end <= der.len()).then_some((tag, start..end))
}

/// The algorithm OID and first parameter (the curve for EC) of a PKCS#8
/// `PrivateKeyInfo` or a `SubjectPublicKeyInfo`.
fn algorithm_identifier(der: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (0x30, outer) = der_tlv(der, 0)? else {
        return None;
    };
    let mut pos = outer.start;
    if let Some((0x02, version)) = der_tlv(der, pos) {
        pos = version.end; // PKCS#8 version
    }
    let (0x30, alg) = der_tlv(der, pos)? else {
        return None;
    };
    let (0x06, oid) = der_tlv(der, alg.start)? else {
        return None;
    };
    let param = match der_tlv(der, oid.end) {
        Some((0x06, p)) if p.end <= alg.end => Some(&der[p]),
        _ => None,
    };
    Some((&der[oid], param))
}

/// The algorithm a DER key structure (PKCS#8, SEC1, PKCS#1 or SPKI) is for.
fn algorithm_of_der(label: &str, der: &[u8]) -> Result<Algorithm, Error> {
    match label {
        "RSA PRIVATE KEY" | "RSA PUBLIC KEY" => return Ok(Algorithm::Rs256),
        "EC PRIVATE KEY" => {
            // SEC1: the curve is an explicit [0] parameter.
            let p256 = der.windows(OID_P256.len()).any(|w| w == OID_P256);
            return if p256 {
                Ok(Algorithm::Es256)
            } else {
                Err(Error::InvalidKey(
                    "only the P-256 curve is supported".into(),
                ))
            };
        }
        _ => {}
    }
    // The OID constants include their tag and length bytes.
    let Some((oid, param)) = algorithm_identifier(der) else {
        return Err(Error::InvalidKey(format!("unsupported key type ({label})")));
    };
    if oid == &OID_EC[2..] {
        return if param == Some(&OID_P256[2..]) {
            Ok(Algorithm::Es256)
        } else {
            Err(Error::InvalidKey(
                "only the P-256 curve is supported".into(),
            ))
        };
    }
    if oid == &OID_ED25519[2..] {
        return Ok(Algorithm::EdDsa);
    }
    if oid == &OID_RSA[2..] {
        return Ok(Algorithm::Rs256);
    }
    Err(Error::InvalidKey(format!("unsupported key type ({label})")))
}

/// distribution's (libtrust) key ID for a public key: SHA-256 of the DER
/// SubjectPublicKeyInfo, first 240 bits, base32 without padding, in 12
/// groups of 4 joined by `:`.
///
/// ```
/// let kid = kiln_registry_token::libtrust_key_id(b"spki bytes");
/// assert_eq!(kid.len(), 48 + 11);
/// ```
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let hash = Sha256::digest(spki_der);
    let encoded = base32(&hash[..30]);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(":")
}

/// RFC 4648 base32, no padding.
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// A DER INTEGER from unsigned big-endian bytes.
fn der_uint(out: &mut Vec<u8>, bytes: &[u8]) {
    let trimmed: &[u8] = {
        let first = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len().saturating_sub(1));
        &bytes[first..]
    };
    let pad = trimmed.first().is_some_and(|b| b & 0x80 != 0);
    out.push(0x02);
    der_len(out, trimmed.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend(trimmed);
}

/// The DER SubjectPublicKeyInfo of a P-256 or RSA public JWK (the key types
/// distribution's libtrust accepts).
fn spki_of_jwk(jwk: &Jwk) -> Result<Vec<u8>, Error> {
    let b64 = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| Error::InvalidKey(format!("JWK parameter: {e}")))
    };
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            let mut der = vec![
                0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
            ];
            der.extend(b64(&ec.x)?);
            der.extend(b64(&ec.y)?);
            Ok(der)
        }
        AlgorithmParameters::RSA(rsa) => {
            let mut key = Vec::new();
            der_uint(&mut key, &b64(&rsa.n)?);
            der_uint(&mut key, &b64(&rsa.e)?);
            let mut rsa_key = vec![0x30];
            der_len(&mut rsa_key, key.len());
            rsa_key.extend(key);
            let mut bits = vec![0x00];
            bits.extend(rsa_key);
            let mut body = vec![0x30, 0x0d];
            body.extend(OID_RSA);
            body.extend([0x05, 0x00]);
            body.push(0x03);
            der_len(&mut body, bits.len());
            body.extend(bits);
            let mut der = vec![0x30];
            der_len(&mut der, body.len());
            der.extend(body);
            Ok(der)
        }
        _ => Err(Error::InvalidKey(
            "libtrust key ids exist for P-256 and RSA keys (distribution cannot verify Ed25519); pass --kid".into(),
        )),
    }
}

/// A DER length.
fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

/// PKCS#8 `PrivateKeyInfo` around a SEC1 P-256 private key.
fn pkcs8_of_sec1_p256(sec1: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00, 0x30, 0x13];
    body.extend(OID_EC);
    body.extend(OID_P256);
    body.push(0x04);
    der_len(&mut body, sec1.len());
    body.extend(sec1);
    let mut out = vec![0x30];
    der_len(&mut out, body.len());
    out.extend(body);
    out
}

/// A key that signs tokens.
#[derive(Clone)]
pub struct SigningKey {
    alg: Algorithm,
    kid: Option<String>,
    key: EncodingKey,
    /// The public half (asymmetric keys only).
    public: Option<Jwk>,
    /// The shared secret (HS256 only), to build the matching verifying key.
    secret: Option<Vec<u8>>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// An HS256 key from a shared secret (at least 32 bytes).
    ///
    /// # Errors
    ///
    /// [`Error::SecretTooShort`].
    pub fn hs256(secret: &[u8]) -> Result<Self, Error> {
        if secret.len() < MIN_SIGNING_SECRET {
            return Err(Error::SecretTooShort {
                len: secret.len(),
                min: MIN_SIGNING_SECRET,
            });
        }
        Ok(Self {
            alg: Algorithm::Hs256,
            kid: None,
            key: EncodingKey::from_secret(secret),
            public: None,
            secret: Some(secret.to_vec()),
        })
    }

    /// An ES256 (P-256), EdDSA (Ed25519) or RS256 private key in PEM
    /// (PKCS#8, SEC1 or PKCS#1); the algorithm follows from the key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`].
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        let (label, der) = pem_block(pem)?;
        let alg = algorithm_of_der(&label, &der)?;
        let key = match alg {
            // jsonwebtoken reads PKCS#8 only: wrap a SEC1 key (openssl's
            // traditional `EC PRIVATE KEY`) first.
            Algorithm::Es256 if label == "EC PRIVATE KEY" => {
                EncodingKey::from_ec_der(&pkcs8_of_sec1_p256(&der))
            }
            Algorithm::Es256 => EncodingKey::from_ec_pem(pem)?,
            Algorithm::EdDsa => EncodingKey::from_ed_pem(pem)?,
            Algorithm::Rs256 => EncodingKey::from_rsa_pem(pem)?,
            Algorithm::Hs256 => return Err(Error::InvalidKey("not a private key".into())),
        };
        let public = Jwk::from_encoding_key(&key, alg.jwt())?;
        Ok(Self {
            alg,
            kid: None,
            key,
            public: Some(public),
            secret: None,
        })
    }

    /// Sets the key ID written into each token's header.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Sets the key ID to distribution's libtrust ID of the public key, as a
    /// CNCF distribution registry with `auth: token` expects it.
    ///
    /// # Errors
    ///
    /// For HS256 and Ed25519 keys (distribution's libtrust has no Ed25519).
    pub fn with_libtrust_kid(self) -> Result<Self, Error> {
        let jwk = self
            .public
            .as_ref()
            .ok_or_else(|| Error::InvalidKey("shared secrets have no libtrust key id".into()))?;
        let kid = libtrust_key_id(&spki_of_jwk(jwk)?);
        Ok(self.with_kid(kid))
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key ID, if set.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.key
    }

    /// The key that verifies this key's tokens (the public half, or the same
    /// secret for HS256), with the same key ID.
    ///
    /// # Errors
    ///
    /// When the public key cannot be rebuilt.
    pub fn verifying_key(&self) -> Result<VerifyingKey, Error> {
        let vk = match (&self.secret, &self.public) {
            // A minting key never makes legacy tokens.
            (Some(secret), _) => VerifyingKey::hs256(secret)?,
            (None, Some(jwk)) => VerifyingKey::from_jwk(jwk)?,
            (None, None) => return Err(Error::InvalidKey("no public key".into())),
        };
        Ok(match &self.kid {
            Some(k) => vk.with_kid(k.clone()),
            None => vk,
        })
    }
}

/// A key that verifies tokens: a public key (no signing secret needed) or,
/// for HS256, the shared secret.
#[derive(Clone)]
pub struct VerifyingKey {
    alg: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
    jwk: Option<Jwk>,
    /// Accepts legacy-format tokens only (and nothing else).
    legacy: bool,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// An HS256 shared secret (at least 32 bytes) for Docker-format tokens.
    ///
    /// # Errors
    ///
    /// [`Error::SecretTooShort`].
    pub fn hs256(secret: &[u8]) -> Result<Self, Error> {
        Self::secret(secret, MIN_SIGNING_SECRET, false)
    }

    /// The secret of Kiln's legacy format (`{build_id, repos, scope}`,
    /// HS256; at least 16 bytes). It verifies legacy tokens **only**: a
    /// legacy secret can never vouch for a Docker-format token (whose
    /// `access` could grant far more), and legacy tokens (which carry no
    /// audience) are accepted only from it.
    ///
    /// # Errors
    ///
    /// [`Error::SecretTooShort`].
    pub fn legacy_hs256(secret: &[u8]) -> Result<Self, Error> {
        Self::secret(secret, MIN_VERIFYING_SECRET, true)
    }

    fn secret(secret: &[u8], min: usize, legacy: bool) -> Result<Self, Error> {
        if secret.len() < min {
            return Err(Error::SecretTooShort {
                len: secret.len(),
                min,
            });
        }
        Ok(Self {
            alg: Algorithm::Hs256,
            kid: None,
            key: DecodingKey::from_secret(secret),
            jwk: None,
            legacy,
        })
    }

    /// Whether this key verifies legacy-format tokens (and only those).
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// A public key in PEM (`PUBLIC KEY`, SubjectPublicKeyInfo): P-256,
    /// Ed25519 or RSA.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`].
    pub fn from_public_pem(pem: &[u8]) -> Result<Self, Error> {
        let (label, der) = pem_block(pem)?;
        if !label.ends_with("PUBLIC KEY") {
            return Err(Error::InvalidKey(format!(
                "expected a PUBLIC KEY, got {label}"
            )));
        }
        let alg = algorithm_of_der(&label, &der)?;
        let key = match alg {
            Algorithm::Es256 => DecodingKey::from_ec_pem(pem)?,
            Algorithm::EdDsa => DecodingKey::from_ed_pem(pem)?,
            Algorithm::Rs256 => DecodingKey::from_rsa_pem(pem)?,
            Algorithm::Hs256 => return Err(Error::InvalidKey("not a public key".into())),
        };
        let jwk = Jwk::from_decoding_key(&key, Some(alg.jwt())).ok();
        Ok(Self {
            alg,
            kid: None,
            key,
            jwk,
            legacy: false,
        })
    }

    /// A public JWK; its `alg` (or key type) fixes the algorithm and its
    /// `kid` is kept.
    ///
    /// # Errors
    ///
    /// Symmetric or unsupported keys.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, Error> {
        let alg = match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::Es256
            }
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDsa
            }
            AlgorithmParameters::RSA(_) => Algorithm::Rs256,
            _ => {
                return Err(Error::InvalidKey(
                    "unsupported JWK (need P-256, Ed25519 or RSA)".into(),
                ));
            }
        };
        let mut jwk = jwk.clone();
        jwk.common.key_algorithm = Some(alg.jwt().into());
        Ok(Self {
            alg,
            kid: jwk.common.key_id.clone(),
            key: DecodingKey::from_jwk(&jwk)?,
            jwk: Some(jwk),
            legacy: false,
        })
    }

    /// Sets the key ID tokens must name.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        let kid = kid.into();
        if let Some(j) = &mut self.jwk {
            j.common.key_id = Some(kid.clone());
        }
        self.kid = Some(kid);
        self
    }

    /// The algorithm this key accepts (and no other).
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key ID.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.key
    }
}

/// Several verifying keys valid at once (rotation).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key.
    ///
    /// # Errors
    ///
    /// When another key has the same ID (or neither has one).
    pub fn insert(&mut self, key: VerifyingKey) -> Result<(), Error> {
        if self.keys.iter().any(|k| k.kid == key.kid) {
            return Err(Error::InvalidKey(format!(
                "duplicate key id {:?}",
                key.kid.as_deref().unwrap_or("<none>")
            )));
        }
        self.keys.push(key);
        Ok(())
    }

    /// The keys.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// Reads a JWKS document (`{"keys": [...]}`); every key needs a `kid`.
    ///
    /// # Errors
    ///
    /// Malformed JSON, unsupported or ID-less keys.
    pub fn from_jwks(json: &str) -> Result<Self, Error> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|e| Error::InvalidKey(format!("JWKS: {e}")))?;
        let mut out = Self::new();
        for jwk in &set.keys {
            if jwk.common.key_id.is_none() {
                return Err(Error::InvalidKey("JWKS key without kid".into()));
            }
            out.insert(VerifyingKey::from_jwk(jwk)?)?;
        }
        Ok(out)
    }

    /// The public keys as a JWKS document (shared secrets are never
    /// exported).
    pub fn to_jwks(&self) -> String {
        let set = JwkSet {
            keys: self.keys.iter().filter_map(|k| k.jwk.clone()).collect(),
        };
        serde_json::to_string(&set).unwrap_or_else(|_| "{\"keys\":[]}".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"fooba"), "MZXW6YTB");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn libtrust_id_shape() {
        let kid = libtrust_key_id(b"x");
        let groups: Vec<&str> = kid.split(':').collect();
        assert_eq!(groups.len(), 12);
        assert!(groups.iter().all(|g| g.len() == 4));
    }

    #[test]
    fn secrets_have_minimum_lengths() {
        assert!(matches!(
            SigningKey::hs256(b"short"),
            Err(Error::SecretTooShort { len: 5, min: 32 })
        ));
        assert!(VerifyingKey::hs256(&[7; 16]).is_err());
        assert!(VerifyingKey::legacy_hs256(&[7; 16]).unwrap().is_legacy());
    }

    #[test]
    fn key_set_selection() {
        let mut set = KeySet::new();
        set.insert(VerifyingKey::hs256(&[1; 32]).unwrap()).unwrap();
        set.insert(VerifyingKey::hs256(&[2; 32]).unwrap().with_kid("b"))
            .unwrap();
        assert!(
            set.insert(VerifyingKey::hs256(&[3; 32]).unwrap().with_kid("b"))
                .is_err()
        );
        assert_eq!(set.keys().len(), 2);
        assert_eq!(set.to_jwks(), "{\"keys\":[]}");
    }
}
