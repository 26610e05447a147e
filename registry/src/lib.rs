//! An OCI Distribution Spec v1.1 registry as a library.
//!
//! - [`Registry`]: every registry operation over a [`Storage`] backend —
//!   blobs visible only once verified and durable, upload sessions stored
//!   with the content (they survive restarts and may continue on another
//!   process over the same store), manifests stored byte for byte after
//!   their references are checked, tags, referrers, catalog.
//! - [`FsStorage`]: the local-directory backend (fsync + rename);
//!   [`ObjectStorage`]: any `object_store` store (S3 and compatibles),
//!   several registry processes sharing one.
//! - [`api::router`]: the HTTP API as an axum router, asking an
//!   [`api::Access`] policy before every request.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use kiln_registry::{FsStorage, Limits, Registry, api};
//!
//! let registry = Arc::new(Registry::new(FsStorage::open("data")?, Limits::default()));
//! let app = api::router(registry, Arc::new(api::Open), api::ApiOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! Every fallible call returns the typed [`Error`], which maps onto the
//! spec's error codes and statuses; nothing panics on input.

#![forbid(unsafe_code)]

pub mod api;
mod cache;
mod digest;
mod error;
mod gc;
pub mod lease;
pub mod manifest;
mod names;
mod registry;
pub mod storage;

pub use digest::{Algorithm, Digest, Hasher};
pub use error::{Error, ErrorCode};
pub use gc::{GcOptions, GcReport, ScrubReport};
pub use names::{Reference, Tag, UploadId};
pub use registry::{Limits, ManifestInfo, PutManifest, Registry};
pub use storage::{FsStorage, Listed, ObjectStorage, Storage};
