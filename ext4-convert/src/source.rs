//! Where blobs come from: the [`BlobSource`] trait and an OCI image layout
//! directory.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use oci_spec::image::{Descriptor, Digest, DigestAlgorithm, ImageIndex};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Limit, Result};

/// Anything that yields blobs (manifests, configs, layers) by digest: an
/// OCI layout on disk, a registry's storage, a mirror's cache.
pub trait BlobSource: Sync {
    /// Opens the blob named `digest`. The converter verifies the digest and
    /// size itself.
    ///
    /// # Errors
    ///
    /// `NotFound` for a missing blob, any other I/O error as it happens.
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send + '_>>;
}

/// An [OCI image layout] directory: `oci-layout`, `index.json`, `blobs/`.
///
/// Files are opened below the directory without following symbolic links
/// (a tenant's layout cannot point `blobs/` or a blob at another tenant's
/// data or at host files) and only when they are regular files (no FIFO
/// that blocks, no device that never ends).
///
/// [OCI image layout]: https://github.com/opencontainers/image-spec/blob/main/image-layout.md
#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
}

impl OciLayout {
    /// Opens the layout at `root` (which must hold an `index.json`).
    ///
    /// # Errors
    ///
    /// [`Error::ReadBlob`] if `index.json` is missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let layout = Self { root: root.into() };
        layout
            .open_inside(&["index.json"])
            .map_err(|source| Error::ReadBlob {
                digest: "index.json".into(),
                source,
            })?;
        Ok(layout)
    }

    /// Opens the regular file at `parts` below the root, following no
    /// symbolic link on the way (the root itself is the caller's choice).
    fn open_inside(&self, parts: &[&str]) -> io::Result<File> {
        let Some((file, dirs)) = parts.split_last() else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let mut dir = OwnedFd::from(File::open(&self.root)?);
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        for d in dirs {
            dir = openat(&dir, *d, flags | OFlag::O_DIRECTORY, Mode::empty())?;
        }
        let file = File::from(openat(
            &dir,
            *file,
            flags | OFlag::O_NONBLOCK,
            Mode::empty(),
        )?);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a regular file", parts.join("/")),
            ));
        }
        Ok(file)
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The top-level `index.json`.
    ///
    /// # Errors
    ///
    /// [`Error::ReadBlob`] or [`Error::InvalidJson`].
    pub fn index(&self) -> Result<ImageIndex> {
        self.index_within(crate::Limits::default().max_document_bytes)
    }

    /// The top-level `index.json`, if at most `max` bytes.
    pub(crate) fn index_within(&self, max: u64) -> Result<ImageIndex> {
        let read_err = |source| Error::ReadBlob {
            digest: "index.json".into(),
            source,
        };
        let mut bytes = Vec::new();
        self.open_inside(&["index.json"])
            .map_err(read_err)?
            .take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > max {
            return Err(Error::LimitExceeded {
                limit: Limit::DocumentBytes,
                max,
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| Error::InvalidJson {
            what: "index.json",
            source,
        })
    }
}

impl BlobSource for OciLayout {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send + '_>> {
        // `Digest` has validated both parts: no path separators can appear.
        let file = self.open_inside(&["blobs", digest.algorithm().as_ref(), digest.digest()])?;
        Ok(Box::new(file))
    }
}

/// Checks that the digest is one we verify (sha256).
pub(crate) fn check_algorithm(digest: &Digest) -> Result<()> {
    match digest.algorithm() {
        DigestAlgorithm::Sha256 => Ok(()),
        _ => Err(Error::UnsupportedDigest {
            digest: digest.to_string(),
        }),
    }
}

/// `sha256:<hex>` of `hasher`'s input.
pub(crate) fn sha256_digest(hasher: Sha256) -> String {
    let hash = hasher.finalize();
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Reads a small JSON document (manifest, index, config) whole, checking
/// its size and digest against the descriptor.
pub(crate) fn read_document(
    source: &dyn BlobSource,
    descriptor: &Descriptor,
    max: u64,
) -> Result<Vec<u8>> {
    let digest = descriptor.digest();
    check_algorithm(digest)?;
    if descriptor.size() > max {
        return Err(Error::LimitExceeded {
            limit: Limit::DocumentBytes,
            max,
        });
    }
    let read_err = |source| Error::ReadBlob {
        digest: digest.to_string(),
        source,
    };
    let mut bytes = Vec::new();
    source
        .open_blob(digest)
        .map_err(read_err)?
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 != descriptor.size() {
        return Err(Error::SizeMismatch {
            digest: digest.to_string(),
            expected: descriptor.size(),
            actual: bytes.len() as u64,
        });
    }
    let actual = sha256_digest(Sha256::new_with_prefix(&bytes));
    if actual != digest.to_string() {
        return Err(Error::DigestMismatch {
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(bytes)
}
