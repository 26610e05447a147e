//! The crate's error type and the OCI error codes it maps onto.

use std::fmt;

use crate::Digest;

/// The error codes of the OCI Distribution Spec (and `TOO_MANY_REQUESTS`),
/// as they appear in `{"errors": [{"code": ...}]}` bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Blob unknown to registry.
    BlobUnknown,
    /// Blob upload invalid.
    BlobUploadInvalid,
    /// Blob upload unknown to registry.
    BlobUploadUnknown,
    /// Provided digest did not match uploaded content.
    DigestInvalid,
    /// Manifest references a manifest or blob unknown to registry.
    ManifestBlobUnknown,
    /// Manifest invalid.
    ManifestInvalid,
    /// Manifest unknown to registry.
    ManifestUnknown,
    /// Invalid repository name.
    NameInvalid,
    /// Repository name not known to registry.
    NameUnknown,
    /// Provided length did not match content length.
    SizeInvalid,
    /// Authentication required.
    Unauthorized,
    /// Requested access to the resource is denied.
    Denied,
    /// The operation is unsupported.
    Unsupported,
    /// Too many requests.
    TooManyRequests,
    /// The registry cannot serve the request now; retry (`UNAVAILABLE`,
    /// as distribution names it).
    Unavailable,
}

impl ErrorCode {
    /// The wire name (`BLOB_UNKNOWN`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::Unavailable => "UNAVAILABLE",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong in the registry. Each variant maps onto one
/// [`ErrorCode`] and one HTTP status ([`Error::code`], [`Error::status`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A digest that is malformed or of an algorithm the registry does not
    /// store (only `sha256` and `sha512`).
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    /// Uploaded content does not have the digest the client named.
    #[error("content has digest {actual}, not {expected}")]
    DigestMismatch {
        /// What the client named.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A repository name outside the distribution grammar.
    #[error("invalid repository name {0:?}")]
    InvalidName(String),
    /// A tag outside `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    #[error("invalid tag {0:?}")]
    InvalidTag(String),
    /// The repository has no manifests (tags list, referrers of a name).
    #[error("repository {0} not known")]
    NameUnknown(String),
    /// No such blob in the repository.
    #[error("blob {0} unknown")]
    BlobUnknown(Digest),
    /// No such manifest (tag or digest) in the repository.
    #[error("manifest {0} unknown")]
    ManifestUnknown(String),
    /// A manifest names a blob or child manifest the repository lacks.
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    /// A manifest that is not valid JSON of a supported kind.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// No such upload session (for this repository).
    #[error("upload {0:?} unknown")]
    UploadUnknown(String),
    /// A chunk that does not continue the upload where it stands
    /// (`416 Range Not Satisfiable`).
    #[error("chunk starts at {got}, the upload holds {have} bytes")]
    ChunkOutOfOrder {
        /// Bytes the session holds.
        have: u64,
        /// Where the chunk claims to start.
        got: u64,
    },
    /// A malformed `Content-Range`, or a body whose length disagrees with it.
    #[error("invalid upload: {0}")]
    InvalidUpload(String),
    /// A `Range` the blob cannot satisfy.
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable {
        /// The blob's size.
        size: u64,
    },
    /// A declared size that disagrees with the content, or a body over a
    /// limit.
    #[error("invalid size: {0}")]
    SizeInvalid(String),
    /// A path that names no endpoint.
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// A body over a limit (`413`).
    #[error("request body over the limit of {0} bytes")]
    TooLarge(u64),
    /// An operation this registry does not allow.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The request carries no usable credentials.
    #[error("authentication required")]
    Unauthorized,
    /// The credentials do not allow the request.
    #[error("access denied")]
    Denied,
    /// Too many failed attempts.
    #[error("too many requests")]
    TooManyRequests,
    /// The registry cannot serve the request now; a retry may succeed
    /// (`503`).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The storage failed.
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The OCI error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidDigest(_) | Self::DigestMismatch { .. } => ErrorCode::DigestInvalid,
            Self::InvalidName(_) => ErrorCode::NameInvalid,
            Self::InvalidTag(_) | Self::InvalidManifest(_) => ErrorCode::ManifestInvalid,
            Self::NameUnknown(_) => ErrorCode::NameUnknown,
            Self::BlobUnknown(_) => ErrorCode::BlobUnknown,
            Self::ManifestUnknown(_) | Self::NotFound(_) => ErrorCode::ManifestUnknown,
            Self::ManifestBlobUnknown(_) => ErrorCode::ManifestBlobUnknown,
            Self::UploadUnknown(_) => ErrorCode::BlobUploadUnknown,
            Self::ChunkOutOfOrder { .. } | Self::InvalidUpload(_) | Self::Io(_) => {
                ErrorCode::BlobUploadInvalid
            }
            Self::RangeNotSatisfiable { .. } => ErrorCode::BlobUnknown,
            Self::SizeInvalid(_) | Self::TooLarge(_) => ErrorCode::SizeInvalid,
            Self::Unsupported(_) => ErrorCode::Unsupported,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::Denied => ErrorCode::Denied,
            Self::TooManyRequests => ErrorCode::TooManyRequests,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
    }

    /// The HTTP status the error answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidDigest(_)
            | Self::DigestMismatch { .. }
            | Self::InvalidName(_)
            | Self::InvalidTag(_)
            | Self::InvalidManifest(_)
            | Self::ManifestBlobUnknown(_)
            | Self::InvalidUpload(_)
            | Self::SizeInvalid(_) => 400,
            Self::NameUnknown(_)
            | Self::BlobUnknown(_)
            | Self::ManifestUnknown(_)
            | Self::NotFound(_)
            | Self::UploadUnknown(_) => 404,
            Self::ChunkOutOfOrder { .. } | Self::RangeNotSatisfiable { .. } => 416,
            Self::TooLarge(_) => 413,
            Self::Unsupported(_) => 405,
            Self::Unauthorized => 401,
            Self::Denied => 403,
            Self::TooManyRequests => 429,
            Self::Unavailable(_) => 503,
            Self::Io(_) => 500,
        }
    }

    /// The OCI error body: `{"errors":[{"code","message","detail"}]}`.
    pub fn to_json(&self) -> String {
        let detail = match self {
            Self::RangeNotSatisfiable { size } => serde_json::json!({ "size": size }),
            Self::ChunkOutOfOrder { have, .. } => serde_json::json!({ "size": have }),
            _ => serde_json::Value::Null,
        };
        // Storage errors carry host paths: say only that storage failed.
        let message = match self {
            Self::Io(_) => "storage error".to_owned(),
            other => other.to_string(),
        };
        serde_json::json!({"errors": [{
            "code": self.code().as_str(),
            "message": message,
            "detail": detail,
        }]})
        .to_string()
    }
}
