//! The crate's error type.

use std::fmt;
use std::io;

/// Everything that can go wrong while converting an image.
///
/// On any error the output written so far is incomplete and must be
/// discarded (the CLI writes to a temporary file and renames it only on
/// success).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The manifest describes something that is not a runnable container
    /// image: a BuildKit cache manifest, an SBOM or another OCI artifact.
    /// Callers that convert everything pushed to a registry skip these.
    #[error("not a runnable image (config media type {config_media_type})")]
    NotRunnableImage {
        /// The manifest's config media type.
        config_media_type: String,
    },
    /// The image's `/lost+found` is not a directory: ext4 reserves that
    /// name for the directory `e2fsck` reconnects lost files into.
    #[error("/lost+found is not a directory in the image; ext4 reserves it")]
    LostFoundNotADirectory,
    /// Nothing in the source matches the requested tag or digest.
    #[error("no image {selector} in the source")]
    ImageNotFound {
        /// The tag or digest asked for.
        selector: String,
    },
    /// The image index has no manifest for the requested platform.
    #[error("no manifest for platform {platform} (index has: {})", available.join(", "))]
    PlatformNotFound {
        /// The platform asked for.
        platform: String,
        /// The platforms the index lists.
        available: Vec<String>,
    },
    /// A manifest, index, config or layer has a media type this crate does
    /// not read.
    #[error("unsupported media type {media_type}")]
    UnsupportedMediaType {
        /// The media type found.
        media_type: String,
    },
    /// A digest uses an algorithm other than sha256.
    #[error("unsupported digest algorithm in {digest}")]
    UnsupportedDigest {
        /// The digest found.
        digest: String,
    },
    /// A blob's content does not hash to the digest that names it.
    #[error("blob {expected} has digest {actual}")]
    DigestMismatch {
        /// The digest in the descriptor.
        expected: String,
        /// The digest of the bytes read.
        actual: String,
    },
    /// A blob's length differs from its descriptor's size.
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The blob's digest.
        digest: String,
        /// The size in the descriptor.
        expected: u64,
        /// The bytes read.
        actual: u64,
    },
    /// A layer's uncompressed content does not match the config's `diff_id`.
    #[error("layer {layer} has diff_id {actual}, the config says {expected}")]
    DiffIdMismatch {
        /// Index of the layer in the manifest.
        layer: usize,
        /// The `diff_id` in the image config.
        expected: String,
        /// The digest of the uncompressed bytes.
        actual: String,
    },
    /// The config's `rootfs.diff_ids` and the manifest's layers disagree.
    #[error("the manifest has {layers} layers but the config has {diff_ids} diff_ids")]
    LayerCountMismatch {
        /// Layers in the manifest.
        layers: usize,
        /// `diff_ids` in the config.
        diff_ids: usize,
    },
    /// A manifest, index or config is not valid JSON of its kind.
    #[error("invalid {what}")]
    InvalidJson {
        /// Which document.
        what: &'static str,
        /// The decoder's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The source could not produce a blob.
    #[error("reading blob {digest}")]
    ReadBlob {
        /// The blob's digest.
        digest: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A layer is not a readable (compressed) tar stream.
    #[error("layer {layer}: reading the tar stream")]
    ReadLayer {
        /// Index of the layer (0 = bottom).
        layer: usize,
        /// The I/O or decoding error.
        #[source]
        source: io::Error,
    },
    /// A tar entry cannot be represented or applied.
    #[error("layer {layer}: {path}: {kind}")]
    Entry {
        /// Index of the layer (0 = bottom).
        layer: usize,
        /// The entry's path, lossily decoded.
        path: String,
        /// What is wrong with it.
        kind: EntryError,
    },
    /// A configured limit was exceeded.
    #[error("{limit} limit of {max} exceeded")]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// The configured maximum.
        max: u64,
    },
    /// Writing the ext4 image failed.
    #[error("writing the ext4 image")]
    Write(#[source] io::Error),
}

/// Why a tar entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryError {
    /// A path component is longer than ext4's 255 bytes.
    NameTooLong,
    /// A path, link target or symlink target contains a NUL byte.
    NulByte,
    /// A parent path component exists and is not a directory (or a symlink
    /// to one).
    NotADirectory,
    /// More than 255 symlinks were followed resolving a parent path.
    TooManySymlinks,
    /// A hardlink names a path that does not exist.
    HardlinkTargetMissing {
        /// The link target, lossily decoded.
        target: String,
    },
    /// A hardlink names a directory.
    HardlinkToDirectory,
    /// More than ext4's 65 000 names for one file.
    TooManyLinks,
    /// A tar header (PAX records, GNU long name) or the data skipped
    /// between two entries is larger than 64 MiB.
    HeaderTooLarge,
    /// A symlink with an empty target.
    EmptySymlink,
    /// A symlink target longer than 4095 bytes.
    SymlinkTooLong,
    /// An entry type ext4 cannot hold (the tar type flag).
    UnsupportedType(u8),
    /// The extended attributes do not fit in one inode plus one block.
    XattrTooLarge,
    /// An extended attribute name with no known namespace prefix.
    InvalidXattrName,
    /// A POSIX ACL attribute that is not a valid ACL.
    InvalidAcl,
    /// A header field (size, mode, time, ids) could not be decoded.
    InvalidHeader,
    /// The root directory replaced by something else.
    RootNotDirectory,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NameTooLong => f.write_str("a name is longer than 255 bytes"),
            Self::NulByte => f.write_str("a NUL byte in a path or link target"),
            Self::NotADirectory => f.write_str("a parent is not a directory"),
            Self::TooManySymlinks => f.write_str("too many levels of symbolic links"),
            Self::HardlinkTargetMissing { target } => {
                write!(f, "hardlink target {target} does not exist")
            }
            Self::HardlinkToDirectory => f.write_str("hardlink to a directory"),
            Self::TooManyLinks => f.write_str("more than 65000 hardlinks to one file"),
            Self::HeaderTooLarge => f.write_str("a tar header or skipped entry body over 64 MiB"),
            Self::EmptySymlink => f.write_str("symlink with an empty target"),
            Self::SymlinkTooLong => f.write_str("symlink target longer than 4095 bytes"),
            Self::UnsupportedType(t) => write!(f, "unsupported tar entry type {:?}", *t as char),
            Self::XattrTooLarge => f.write_str("extended attributes too large for ext4"),
            Self::InvalidXattrName => f.write_str("extended attribute with an unknown namespace"),
            Self::InvalidAcl => f.write_str("invalid POSIX ACL attribute"),
            Self::InvalidHeader => f.write_str("invalid tar header"),
            Self::RootNotDirectory => f.write_str("the root can only be a directory"),
        }
    }
}

/// The limits of [`crate::Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// Uncompressed layer bytes, all layers together.
    LayerBytes,
    /// Size of the ext4 file system.
    ImageBytes,
    /// Inodes (files, directories, links, ...).
    Inodes,
    /// Path components below the root.
    PathDepth,
    /// Size of a manifest, index or config blob.
    DocumentBytes,
    /// Layers of an image.
    Layers,
    /// Names, symlink targets and xattrs held in memory.
    MetadataBytes,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LayerBytes => "uncompressed layer bytes",
            Self::ImageBytes => "file system size",
            Self::Inodes => "inode count",
            Self::PathDepth => "path depth",
            Self::DocumentBytes => "manifest/config size",
            Self::Layers => "layer count",
            Self::MetadataBytes => "name, link target and xattr bytes",
        })
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
