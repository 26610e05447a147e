//! The crate's error type.

/// Everything that can go wrong minting, verifying or parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not a repository name of the OCI distribution grammar.
    #[error("invalid repository name {0:?}")]
    InvalidRepository(String),
    /// Not `name`, `prefix/*` or `*`.
    #[error("invalid repository pattern {0:?}: expected NAME, PREFIX/* or *")]
    InvalidPattern(String),
    /// An action other than pull, push, delete (or `*` on the wire).
    #[error("invalid action {0:?}: expected pull, push or delete")]
    InvalidAction(String),
    /// A Docker scope string that is not `type:name:actions`.
    #[error("invalid scope {0:?}: expected TYPE:NAME:ACTIONS")]
    InvalidScope(String),
    /// A `WWW-Authenticate` value that cannot be read.
    #[error("invalid challenge: {0}")]
    InvalidChallenge(String),
    /// A `--access` argument that is not `PATTERN:ACTIONS`.
    #[error("invalid access {0:?}: expected PATTERN:ACTIONS (e.g. cache/global/*:pull)")]
    InvalidAccess(String),
    /// A key that cannot be loaded.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A shared secret shorter than the minimum.
    #[error("shared secret too short: {len} bytes, at least {min} required")]
    SecretTooShort {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// Minting with a lifetime above the configured maximum.
    #[error("token lifetime {requested_secs}s exceeds the maximum {max_secs}s")]
    TtlTooLong {
        /// What was asked for.
        requested_secs: u64,
        /// The limit.
        max_secs: u64,
    },
    /// The token is larger than the verifier accepts.
    #[error("token too large: {size} bytes, at most {max} accepted")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not a JWT, or claims of the wrong shape.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm the key does not use (incl. `none`).
    #[error("algorithm {0} not allowed for this key")]
    AlgorithmNotAllowed(String),
    /// The header's `kid` names no key of the set.
    #[error("unknown key id {0:?}")]
    UnknownKeyId(String),
    /// No `kid` and more than one candidate key, or none.
    #[error("token names no key id and no default key matches")]
    NoKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway), or missing.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `iss` differs from the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` differs from the expected audience, or is missing.
    #[error("wrong audience")]
    WrongAudience,
    /// A legacy-format token while legacy tokens are not accepted.
    #[error("legacy token format not accepted")]
    LegacyNotAccepted,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
}

impl From<jsonwebtoken::errors::Error> for Error {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidSignature => Self::BadSignature,
            K::ExpiredSignature => Self::Expired,
            K::ImmatureSignature => Self::NotYetValid,
            K::InvalidIssuer => Self::WrongIssuer,
            K::InvalidAudience => Self::WrongAudience,
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
                Self::AlgorithmNotAllowed(e.to_string())
            }
            K::MissingRequiredClaim(c) if c == "exp" => Self::Expired,
            K::MissingRequiredClaim(c) if c == "iss" => Self::WrongIssuer,
            K::MissingRequiredClaim(c) if c == "aud" => Self::WrongAudience,
            K::InvalidEcdsaKey | K::InvalidEddsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat => {
                Self::InvalidKey(e.to_string())
            }
            K::RsaFailedSigning | K::Signing(_) => Self::Signing(e.to_string()),
            _ => Self::Malformed(e.to_string()),
        }
    }
}
