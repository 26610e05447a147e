//! Per-repository scoped registry tokens in the Docker registry token format
//! (what CNCF distribution and its clients speak), with one claims type and
//! one validation path for whoever mints and whoever checks.
//!
//! - [`Permission`]s are `(pattern, actions)`: an exact [`RepositoryName`],
//!   everything below a prefix (`cache/global/*`), or `*`; actions pull,
//!   push (implies pull), delete.
//! - [`Minter`] signs with a [`SigningKey`] (HS256 secret, or ES256 / EdDSA /
//!   RS256 key pair with a `kid`); [`Verifier`] checks with a [`KeySet`]
//!   (several keys at once for rotation, JWKS import/export). The key pins
//!   the algorithm: `alg: none`, HS/RS confusion and unknown `kid`s fail.
//! - Tokens in Kiln's legacy format (`{build_id, repos, scope}`, HS256) are
//!   accepted and mapped onto the same permissions.
//! - [`Scope`] and [`Challenge`] read and write what registries and clients
//!   exchange (`repository:a/b:pull,push`, `WWW-Authenticate: Bearer ...`).
//!
//! ```
//! # fn main() -> Result<(), kiln_registry_token::Error> {
//! use std::time::Duration;
//! use kiln_registry_token::*;
//!
//! let key = SigningKey::hs256(&[7u8; 32])?.with_kid("k1");
//! let mut keys = KeySet::new();
//! keys.insert(key.verifying_key()?)?;
//!
//! let minter = Minter::new(key, "kiln", "registry");
//! let token = minter.mint(&MintRequest {
//!     subject: "build-42".into(),
//!     permissions: vec!["cache/global/*:pull".parse()?, "builds/42:push".parse()?],
//!     ttl: Duration::from_secs(600),
//!     build_id: Some("42".into()),
//! })?;
//!
//! let claims = Verifier::new(&keys, "kiln", "registry").verify(&token)?;
//! assert!(claims.authorize(&"cache/global/node".parse()?, Action::Pull).is_ok());
//! assert!(claims.authorize(&"cache/global/node".parse()?, Action::Push).is_err());
//! # Ok(())
//! # }
//! ```
//!
//! Note: CNCF distribution matches `access` names exactly, so tokens for it
//! should carry exact repository names; prefix patterns are understood by
//! Kiln's own verifier.
//!
//! # Errors
//!
//! Every fallible call returns the typed [`Error`]; nothing panics on input.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod challenge;
mod claims;
mod error;
mod keys;
mod repository;
mod scope;
mod token;

pub use cache::CachingVerifier;
pub use challenge::{Challenge, ChallengeError};
pub use claims::{AccessEntry, Claims, Denied, Permission, TokenFormat, authorize};
pub use error::Error;
pub use keys::{
    Algorithm, KeySet, MIN_SIGNING_SECRET, MIN_VERIFYING_SECRET, SigningKey, VerifyingKey,
    libtrust_key_id,
};
pub use repository::{Action, Actions, RepositoryName, RepositoryPattern};
pub use scope::{Scope, grant, parse_scopes};
pub use token::{MintRequest, Minter, Verifier};
