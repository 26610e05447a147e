//! The crate's error type.

/// What can go wrong talking to registries and copying images.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An image location that is not `[docker://]HOST/REPO[:TAG][@DIGEST]`.
    #[error("invalid image location {input:?}: {reason}")]
    InvalidLocation {
        /// What was given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
    /// A request could not be sent or its body not read.
    #[error("{operation} {url}")]
    Request {
        /// What was being done.
        operation: &'static str,
        /// Where.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an unexpected status.
    #[error("{operation} {url}: HTTP {status}: {body}")]
    Status {
        /// What was being done.
        operation: &'static str,
        /// Where.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the response body (registry error JSON).
        body: String,
    },
    /// The registry asked for authentication the client cannot satisfy.
    #[error("authentication at {registry} failed: {reason}")]
    Auth {
        /// The registry.
        registry: String,
        /// Why.
        reason: String,
    },
    /// Content whose digest or size is not what its descriptor says.
    #[error("{what} {expected}: got digest {actual} ({size} bytes)")]
    DigestMismatch {
        /// Manifest or blob.
        what: &'static str,
        /// The digest the descriptor names.
        expected: String,
        /// What the bytes hash to.
        actual: String,
        /// How many bytes arrived.
        size: u64,
    },
    /// A blob whose length differs from its descriptor.
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: String,
        /// Descriptor size.
        expected: u64,
        /// Bytes seen.
        actual: u64,
    },
    /// A registry answer that breaks the protocol (too large, a link or
    /// upload location elsewhere, an upload acknowledged early).
    #[error("{url}: {reason}")]
    Protocol {
        /// Where.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// A manifest that cannot be read.
    #[error("manifest {reference}: {reason}")]
    Manifest {
        /// Which manifest.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The platform filter matched nothing in the index.
    #[error("no manifest in the index matches the requested platforms")]
    NoPlatformMatch,
    /// The total deadline passed.
    #[error("copy did not finish within {0:?}")]
    Deadline(std::time::Duration),
}
