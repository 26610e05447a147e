//! The crate's error type for names, registries, plans and access lists.
//!
//! Cache-option parsing has its own positional error,
//! [`OptionError`](crate::OptionError), following the parse-error template
//! (input, column, kind).

use crate::option::CompressionType;

/// An error from validating a name or building a plan.
///
/// Every variant carries the offending input, so a caller can report it
/// without keeping the original string around.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tenant cache scope that is not a valid, unreserved name.
    #[error("invalid tenant scope {input:?}: {reason}")]
    InvalidTenantScope {
        /// The input as given (before normalisation).
        input: String,
        /// Why it was rejected.
        reason: NameError,
    },
    /// A global cache key that is not a valid name.
    #[error("invalid global cache key {input:?}: {reason}")]
    InvalidGlobalKey {
        /// The input as given (before normalisation).
        input: String,
        /// Why it was rejected.
        reason: NameError,
    },
    /// A build id that is not one repository path component.
    #[error("invalid build id {input:?}: {reason}")]
    InvalidBuildId {
        /// The input as given.
        input: String,
        /// Why it was rejected.
        reason: PathError,
    },
    /// A repository name that does not match the OCI distribution grammar.
    #[error("invalid repository name {input:?}: {reason}")]
    InvalidRepository {
        /// The input as given.
        input: String,
        /// Why it was rejected.
        reason: PathError,
    },
    /// A registry that is not `HOST[:PORT][/PREFIX]`.
    #[error("invalid registry {input:?}: {reason}")]
    InvalidRegistry {
        /// The input as given.
        input: String,
        /// Why it was rejected.
        reason: RegistryError,
    },
    /// An admin plan was requested without a global cache key: an admin
    /// build only exports to the global tier, so it would have nowhere to
    /// export.
    #[error("an admin build needs a global cache key to export to")]
    AdminWithoutGlobalKey,
    /// A compression level the chosen algorithm does not accept.
    #[error("compression level {level} is not valid for {compression}: {expected}")]
    InvalidCompressionLevel {
        /// The algorithm.
        compression: CompressionType,
        /// The level asked for.
        level: u8,
        /// What the algorithm accepts.
        expected: &'static str,
    },
    /// A base-image repository that is a cache repository: granting pull on
    /// it would let a build read another tier's (or tenant's) cache.
    #[error("base image repository {repository} is a build-cache repository")]
    BaseImageIsCache {
        /// The offending repository.
        repository: String,
    },
}

/// Why a tenant scope or global key was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Nothing left after trimming whitespace.
    #[error("must not be empty")]
    Empty,
    /// A character outside `[a-z0-9-]` (after lower-casing ASCII letters).
    #[error("character {character:?} at index {index} is not one of a-z, 0-9 or '-'")]
    InvalidCharacter {
        /// The character.
        character: char,
        /// Its 0-based character index in the normalised name.
        index: usize,
    },
    /// Starts with `-`.
    #[error("must not start with '-'")]
    LeadingDash,
    /// Ends with `-`.
    #[error("must not end with '-'")]
    TrailingDash,
    /// Contains `--`.
    #[error("must not contain \"--\"")]
    DoubleDash,
    /// Shorter than the minimum.
    #[error("is {len} characters long, the minimum is {min}")]
    TooShort {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// Longer than the maximum.
    #[error("is {len} characters long, the maximum is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A name reserved by the cache layout or the registry.
    #[error("is a reserved name")]
    Reserved,
}

/// Why a repository name or build id was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Empty name.
    #[error("must not be empty")]
    Empty,
    /// An empty component (`a//b`, leading or trailing `/`).
    #[error("component {index} is empty")]
    EmptyComponent {
        /// 0-based component index.
        index: usize,
    },
    /// A component not matching `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
    #[error("component {index} does not match [a-z0-9]+((.|_|__|-+)[a-z0-9]+)*")]
    InvalidComponent {
        /// 0-based component index.
        index: usize,
    },
    /// A `/` where exactly one component is expected.
    #[error("must be a single path component")]
    NotSingleComponent,
    /// Over the length limit.
    #[error("is {len} characters long, the maximum is {max}")]
    TooLong {
        /// Its length (for repositories: with the registry host when the
        /// limit is the reference limit).
        len: usize,
        /// The maximum.
        max: usize,
    },
}

/// Why a registry was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Empty input.
    #[error("must not be empty")]
    Empty,
    /// A URL scheme such as `http://`: give the host only, and use
    /// `registry.insecure` for plain-HTTP registries.
    #[error(
        "must not have a URL scheme; give HOST[:PORT][/PREFIX] and use the insecure option for plain HTTP"
    )]
    Scheme,
    /// The host is not a domain name, IPv4 address or bracketed IPv6
    /// address.
    #[error("host is not a domain name or [IPv6] address")]
    InvalidHost,
    /// A host that reference parsers would read as a Docker Hub namespace:
    /// `reg/cache/acme` means `docker.io/reg/cache/acme` to BuildKit. A
    /// registry host needs a `.` or a port, or must be `localhost` or an
    /// IPv6 address.
    #[error(
        "host would be read as a Docker Hub namespace; add a domain or a port (e.g. reg.internal or reg:5000)"
    )]
    NotAHost,
    /// The port is not a number in 1..=65535.
    #[error("port is not a number in 1..=65535")]
    InvalidPort,
    /// The prefix is not a valid repository path.
    #[error("prefix is not a valid repository path")]
    InvalidPrefix,
    /// Too long for every cache repository under it to stay within the
    /// 255-character reference name limit.
    #[error("is {len} characters long, the maximum is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
}
