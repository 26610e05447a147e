//! A verifier that remembers the tokens it verified, so that a client
//! presenting the same token on every request pays for the signature once.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::claims::Claims;
use crate::error::Error;
use crate::token::Verifier;

/// Bytes of a token's end (its signature) that key the cache; the whole
/// token is compared on a hit.
const KEY_BYTES: usize = 32;

/// A [`Verifier`] with a bounded cache of verified tokens.
///
/// A cached token is taken as the verifier took it until its `exp` (never
/// past it: from then on it is verified again, leeway and all); refused
/// tokens are not cached. When full, expired entries go, then everything.
///
/// ```
/// # fn main() -> Result<(), kiln_registry_token::Error> {
/// use std::time::Duration;
/// use kiln_registry_token::{CachingVerifier, KeySet, MintRequest, Minter, SigningKey, Verifier};
/// let key = SigningKey::hs256(b"a secret of at least 32 bytes!!!")?;
/// let mut keys = KeySet::new();
/// keys.insert(key.verifying_key()?)?;
/// let token = Minter::new(key, "kiln", "registry").mint(&MintRequest {
///     subject: "ci".into(),
///     permissions: vec!["app/*:pull".parse()?],
///     ttl: Duration::from_secs(300),
///     build_id: None,
/// })?;
/// let verifier = CachingVerifier::new(Verifier::new(&keys, "kiln", "registry"), 10_000);
/// let first = verifier.verify(&token)?; // the signature is checked
/// let again = verifier.verify(&token)?; // from the cache
/// assert_eq!(first, again);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CachingVerifier {
    inner: Verifier,
    capacity: usize,
    hasher: std::collections::hash_map::RandomState,
    entries: RwLock<HashMap<u64, Entry>>,
}

#[derive(Debug)]
struct Entry {
    token: Box<str>,
    claims: Arc<Claims>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl CachingVerifier {
    /// Wraps `inner`, remembering at most `capacity` tokens.
    pub fn new(inner: Verifier, capacity: usize) -> Self {
        Self {
            inner,
            capacity: capacity.max(1),
            hasher: std::collections::hash_map::RandomState::new(),
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The verifier it wraps.
    pub fn verifier(&self) -> &Verifier {
        &self.inner
    }

    fn key(&self, token: &str) -> u64 {
        let bytes = token.as_bytes();
        self.hasher
            .hash_one(&bytes[bytes.len().saturating_sub(KEY_BYTES)..])
    }

    /// Verifies `token` as [`Verifier::verify`] does, or answers from the
    /// cache.
    ///
    /// # Errors
    ///
    /// As [`Verifier::verify`].
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, Error> {
        let key = self.key(token);
        {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = entries.get(&key)
                && *e.token == *token
                && now() < e.claims.expires_at
            {
                return Ok(e.claims.clone());
            }
        }
        let claims = Arc::new(self.inner.verify(token)?);
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            let t = now();
            entries.retain(|_, e| t < e.claims.expires_at);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                token: token.into(),
                claims: claims.clone(),
            },
        );
        Ok(claims)
    }

    /// Tokens remembered now.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeySet, MintRequest, Minter, SigningKey};
    use std::time::Duration;

    fn setup() -> (Minter, Verifier) {
        let key = SigningKey::hs256(b"a secret of at least 32 bytes!!!").unwrap();
        let mut keys = KeySet::new();
        keys.insert(key.verifying_key().unwrap()).unwrap();
        (
            Minter::new(key, "kiln", "registry"),
            Verifier::new(&keys, "kiln", "registry"),
        )
    }

    fn mint(m: &Minter, ttl: u64, subject: &str) -> String {
        m.mint(&MintRequest {
            subject: subject.into(),
            permissions: vec!["app/*:pull".parse().unwrap()],
            ttl: Duration::from_secs(ttl),
            build_id: None,
        })
        .unwrap()
    }

    #[test]
    fn caches_good_tokens_only_and_stays_bounded() {
        let (m, v) = setup();
        let c = CachingVerifier::new(v, 2);
        let t = mint(&m, 300, "a");
        assert_eq!(c.verify(&t).unwrap().subject.as_deref(), Some("a"));
        assert_eq!(c.len(), 1);
        assert_eq!(c.verify(&t).unwrap().subject.as_deref(), Some("a"));
        // A forged token with the same signature part is not a hit: the
        // whole token is compared.
        let dot = t.find('.').unwrap();
        let forged = format!("{}x{}", &t[..dot], &t[dot..]);
        assert!(c.verify(&forged).is_err());
        assert!(c.verify("not a token").is_err());
        assert_eq!(c.len(), 1, "refusals are not cached");
        for s in ["b", "c", "d"] {
            c.verify(&mint(&m, 300, s)).unwrap();
        }
        assert!(c.len() <= 2);
    }

    #[test]
    fn an_expired_token_is_verified_again() {
        let (m, v) = setup();
        let c = CachingVerifier::new(v.leeway(Duration::ZERO), 10);
        // Already past its exp when cached would be refused; mint one that
        // expires now and check it is not served from the cache afterwards.
        let t = mint(&m, 1, "e");
        assert!(c.verify(&t).is_ok());
        std::thread::sleep(Duration::from_millis(2100));
        assert!(
            c.verify(&t).is_err(),
            "past exp: verified again, and refused"
        );
    }
}
