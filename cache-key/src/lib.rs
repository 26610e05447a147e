//! Two-tier BuildKit build caches for a multi-tenant build service.
//!
//! - Global cache `{registry}/cache/global/{key}`, shared by every tenant
//!   and written only by admin builds; tenant cache
//!   `{registry}/cache/{tenant}`, private to one tenant.
//! - [`TenantScope`], [`GlobalKey`], [`BuildId`], [`Repository`] and
//!   [`Registry`]: validated names; [`Registry::classify`] tells global
//!   cache, tenant cache and the rest apart, with or without a registry
//!   host in front.
//! - [`CachePlan`]: what a tenant build ([`CachePlan::tenant`]) or an admin
//!   build ([`CachePlan::admin`], admin credentials only) imports and
//!   exports, rendered as `buildctl`/`buildx` arguments or JSON, and the
//!   registry access its token needs ([`CachePlan::access`]).
//! - [`CacheOption`] and [`CacheArgs`]: BuildKit's cache options for all
//!   six backends, parsed with BuildKit's CSV rules and rendered so that
//!   parsing gives the same value back; unknown attributes are kept.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_cache_key::{Action, CachePlan, Registry, Repository};
//!
//! let registry: Registry = "10.0.0.1:5000".parse()?;
//! // A tenant build, as requested by tenant "acme" with key "node".
//! let plan = CachePlan::tenant(registry.clone(), "Acme".parse()?, Some("node".parse()?));
//! let args = plan.buildctl_args(); // pass to Command::args as they are
//! assert_eq!(args[1], "type=registry,ref=10.0.0.1:5000/cache/global/node");
//! assert!(args[5].contains(",mode=max,image-manifest=true,oci-mediatypes=true,"));
//!
//! // The token for this build.
//! let base: Repository = "docker.io/library/alpine".parse()?;
//! let access = plan.access(&"42".parse()?, &[base])?;
//! let scopes: Vec<String> = access.iter().map(ToString::to_string).collect();
//! assert_eq!(scopes, [
//!     "repository:cache/global/node:pull",
//!     "repository:cache/acme:pull,push",
//!     "repository:builds/42:pull,push",
//!     "repository:docker.io/library/alpine:pull",
//! ]);
//! assert!(!access[0].allows(Action::Push)); // tenants never write the global tier
//!
//! // The registry skips cache repositories, however they are named.
//! assert!(registry.classify("10.0.0.1:5000/cache/global/node")?.is_cache());
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! Name validation, plans and access lists return [`Error`], which names
//! the input and carries a typed reason ([`NameError`], [`PathError`],
//! [`RegistryError`]). Cache-option parsing returns [`OptionError`]: the
//! input, the 1-based column Go would report, and an [`OptionErrorKind`].
//! No input makes this crate panic.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod access;
mod args;
mod csv;
mod error;
mod names;
mod option;
mod plan;
mod repository;

pub use access::{Action, RepositoryAccess};
pub use args::{CacheArgs, Client, Direction};
pub use error::{Error, NameError, PathError, RegistryError};
pub use names::{BuildId, GlobalKey, TenantScope};
pub use option::{Backend, CacheMode, CacheOption, CompressionType, OptionError, OptionErrorKind};
pub use plan::{CachePlan, Compression};
pub use repository::{Registry, Repository, RepositoryKind};
