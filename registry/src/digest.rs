//! Digests the registry stores content under, and hashing on the way in.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::DigestAlgorithm;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};

use crate::Error;

/// A content digest of an algorithm the registry stores (`sha256` or
/// `sha512`), lowercase hex of the right length: safe as a file or object
/// name.
///
/// ```
/// use kiln_registry::Digest;
/// let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap();
/// assert_eq!(d.algorithm(), "sha256");
/// assert!("sha256:E3B0".parse::<Digest>().is_err());
/// assert!("md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// `sha256` or `sha512`.
    pub fn algorithm(&self) -> &str {
        &self.0[..6]
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The whole `algorithm:hex`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.finish()
    }

    /// The algorithm as a [`Hasher`] choice.
    pub fn hasher(&self) -> Hasher {
        Hasher::new(if self.algorithm() == "sha256" {
            Algorithm::Sha256
        } else {
            Algorithm::Sha512
        })
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidDigest(s.chars().take(200).collect());
        let parsed = oci_spec::image::Digest::from_str(s).map_err(|_| bad())?;
        match parsed.algorithm() {
            // oci-spec checks length and lowercase hex for these two.
            DigestAlgorithm::Sha256 | DigestAlgorithm::Sha512 => Ok(Self(s.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<&str> for Digest {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Error> {
        s.parse()
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A digest algorithm the registry computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

/// An incremental hash of one of the stored algorithms. A SHA-256 hash's
/// running state can be saved and restored ([`Hasher::save`]), so an upload
/// continued by another process goes on hashing where it stood.
#[derive(Clone)]
pub struct Hasher(Inner);

#[derive(Clone)]
enum Inner {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Inner::Sha256(_) => "Hasher(sha256)",
            Inner::Sha512(_) => "Hasher(sha512)",
        })
    }
}

impl Hasher {
    /// A fresh hash.
    pub fn new(algorithm: Algorithm) -> Self {
        Self(match algorithm {
            Algorithm::Sha256 => Inner::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Inner::Sha512(sha2::Sha512::new()),
        })
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            Inner::Sha256(h) => h.update(bytes),
            Inner::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        let (algo, bytes) = match self.0 {
            Inner::Sha256(h) => ("sha256", h.finalize().to_vec()),
            Inner::Sha512(h) => ("sha512", h.finalize().to_vec()),
        };
        Digest(format!("{algo}:{}", to_hex(&bytes)))
    }

    /// The running state of a SHA-256 hash, to carry to another process
    /// ([`Hasher::restore`]); `None` for SHA-512.
    pub fn save(&self) -> Option<String> {
        match &self.0 {
            Inner::Sha256(h) => Some(to_hex(&h.serialize())),
            Inner::Sha512(_) => None,
        }
    }

    /// A SHA-256 hash from a state [`Hasher::save`] gave; `None` for
    /// anything else.
    pub fn restore(saved: &str) -> Option<Self> {
        let bytes = from_hex(saved)?;
        let state = SerializedState::<sha2::Sha256>::try_from(bytes.as_slice()).ok()?;
        sha2::Sha256::deserialize(&state)
            .ok()
            .map(|h| Self(Inner::Sha256(h)))
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of hex text (either case); `None` for anything else.
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_stored_algorithms() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Digest::sha256_of(b"").as_str(), empty);
        assert_eq!(empty.parse::<Digest>().unwrap().hex().len(), 64);
        for bad in [
            "sha256:totallywrong",
            "sha256:../../etc/passwd",
            "sha384:abc",
            "sha256",
            "",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "foo+bar:abc",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"abc");
        let d = h.finish();
        assert_eq!(d.algorithm(), "sha512");
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn sha256_states_are_saved_and_restored_anywhere() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        // Lengths around the padding's edges, cut anywhere, saved and
        // restored between the pieces.
        for len in (0..200).chain([1000, 2999, 3000]) {
            let want = Digest::sha256_of(&data[..len]);
            for cut in [0, 1, 55, 56, 63, 64, 65, 128, len / 2, len] {
                let cut = cut.min(len);
                let mut a = Hasher::new(Algorithm::Sha256);
                a.update(&data[..cut]);
                let mut b = Hasher::restore(&a.save().unwrap()).unwrap();
                b.update(&data[cut..len]);
                assert_eq!(b.finish(), want, "{len} cut at {cut}");
            }
        }
        assert!(Hasher::new(Algorithm::Sha512).save().is_none());
        let good = Hasher::new(Algorithm::Sha256).save().unwrap();
        assert!(Hasher::restore(&good).is_some());
        let mut full_buffer = good.clone();
        full_buffer.replace_range(good.len() - 2.., "40");
        for bad in [
            String::new(),
            "0".into(),
            "zz".repeat(good.len() / 2),
            good[..good.len() - 2].to_owned(),
            format!("{good}00"),
            format!("{}é", &good[..good.len() - 2]),
            full_buffer,
        ] {
            assert!(Hasher::restore(&bad).is_none(), "{bad:?}");
        }
    }
}
