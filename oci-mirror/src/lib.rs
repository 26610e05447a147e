//! Registry-to-registry OCI image mirroring that never leaves a half-copied
//! image: blobs first (skipped when present, mounted within a registry,
//! streamed and digest-verified on the way through), then manifests, then
//! the index, then the tag.
//!
//! ```no_run
//! # async fn run() -> Result<(), kiln_oci_mirror::Error> {
//! use kiln_oci_mirror::*;
//! let src_loc: ImageLocation = "docker://127.0.0.1:5000/library/alpine:3.20".parse()?;
//! let dst_loc = mirrored(&src_loc, "127.0.0.1:5001")?;
//! let mut src_cfg = RegistryConfig::new(src_loc.registry());
//! src_cfg.insecure = true;
//! let mut dst_cfg = RegistryConfig::new(dst_loc.registry());
//! dst_cfg.insecure = true;
//! let report = copy(
//!     &RegistryClient::new(src_cfg)?,
//!     &src_loc,
//!     &RegistryClient::new(dst_cfg)?,
//!     &dst_loc,
//!     &CopyOptions::default(),
//! )
//! .await?;
//! println!("{} blobs copied, {} skipped", report.blobs_copied, report.blobs_skipped);
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! Every call returns the typed [`Error`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod copy;
mod credentials;
mod error;
mod location;
mod referrers;

/// Entry points for the fuzz targets; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// Reads `bytes` as a manifest served as `media_type` (document,
    /// descriptor digests, index children) and as a referrers list:
    /// whether either was accepted. Never panics.
    #[must_use]
    pub fn manifest(bytes: &[u8], media_type: &str) -> bool {
        crate::copy::accepts(bytes, media_type) | crate::referrers::accepts(bytes)
    }
}

pub use client::{Manifest, RegistryClient, RegistryConfig};
pub use copy::{CopyOptions, CopyReport, Platforms, Progress, ProgressFn, copy};
pub use credentials::{CredentialSource, Credentials};
pub use error::Error;
pub use location::{ImageLocation, mirrored};
