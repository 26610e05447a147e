//! Image references normalised exactly as `distribution/reference`'s
//! `ParseNormalizedNamed` + `TagNameOnly` (what BuildKit applies to every
//! base image): `docker.io/library/` for familiar names, `:latest` only when
//! there is neither tag nor digest, registry ports and IPv6 hosts kept, tag
//! and digest together kept, upper-case repositories rejected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Why a reference was rejected; messages are distribution/reference's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// Does not match the reference grammar.
    #[error("invalid reference format")]
    InvalidFormat,
    /// Upper-case letters in the repository path.
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    RepositoryNotLowercase(String),
    /// Only valid once lower-cased.
    #[error("invalid reference format: repository name must be lowercase")]
    ContainsUppercase,
    /// Name (domain + path) over 255 characters.
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    /// Empty name.
    #[error("repository name must have at least one component")]
    NameEmpty,
    /// A bare 64-hex-digit string (an image ID, not a name).
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexIdentifier(String),
    /// Digest not `algorithm:hex` of the right form.
    #[error("invalid checksum digest format")]
    DigestFormat,
    /// Digest hex of the wrong length for its algorithm.
    #[error("invalid checksum digest length")]
    DigestLength,
    /// Digest algorithm other than sha256, sha384, sha512.
    #[error("unsupported digest algorithm")]
    DigestAlgorithm,
}

/// A normalised, validated image reference.
///
/// ```
/// # fn main() -> Result<(), kiln_dockerfile::ReferenceError> {
/// use kiln_dockerfile::ImageRef;
/// let r: ImageRef = "alpine".parse()?;
/// assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
/// assert_eq!(r.repository(), "docker.io/library/alpine");
/// let r: ImageRef = "[::1]:5000/app:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".parse()?;
/// assert_eq!(r.domain(), "[::1]:5000");
/// assert_eq!(r.tag(), Some("1"));
/// assert!(r.digest().is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// `ParseNormalizedNamed` without adding `:latest`.
    ///
    /// # Errors
    ///
    /// Any [`ReferenceError`].
    pub fn parse_normalized(s: &str) -> Result<Self, ReferenceError> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReferenceError::HexIdentifier(s.to_owned()));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote = remainder.split(':').next().unwrap_or_default();
        if remote.to_lowercase() != remote {
            return Err(ReferenceError::RepositoryNotLowercase(remote.to_owned()));
        }
        parse(&format!("{domain}/{remainder}"))
    }

    /// The registry host (with port), e.g. `docker.io`, `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry, e.g. `library/alpine`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `domain/path`: the repository, without tag or digest (just the path
    /// in the rare names distribution reads without a domain, like
    /// `a_b.c/foo`).
    pub fn repository(&self) -> String {
        if self.domain.is_empty() {
            return self.path.clone();
        }
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`algorithm:hex`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Adds `:latest` when there is neither tag nor digest (`TagNameOnly`).
    #[must_use]
    pub fn with_default_tag(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".to_owned());
        }
        self
    }

    /// The same reference under another registry/prefix:
    /// `{mirror}/{registry}/{path}[:tag][@digest]`, the registry written as
    /// one path component by [`crate::registry_component`]
    /// (`localhost:5000` → `localhost__5000`, `[::1]:5000` →
    /// `ipv6_…__5000`).
    ///
    /// # Errors
    ///
    /// When the result is not a valid reference (e.g. over 255 characters).
    pub fn mirrored(&self, mirror: &Mirror) -> Result<Self, ReferenceError> {
        let registry = if self.domain.is_empty() {
            String::new()
        } else {
            let component =
                crate::registry_component(&self.domain).ok_or(ReferenceError::InvalidFormat)?;
            format!("{component}/")
        };
        let mut s = format!("{}/{registry}{}", mirror.as_str(), self.path);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        Self::parse_normalized(&s)
    }
}

impl From<&ImageRef> for oci_spec::distribution::Reference {
    /// The same reference as `oci-spec`'s type, for crates built on it.
    ///
    /// `oci-spec`'s own parser is not used for normalising: it rejects IPv6
    /// registry hosts (`[::1]:5000/app`), accepts upper-case digest hex that
    /// `go-digest` rejects, reports upper-case repositories as a bare format
    /// error and lacks the 64-hex image-ID check. Converting a validated
    /// [`ImageRef`] keeps tag and digest together.
    fn from(r: &ImageRef) -> Self {
        use oci_spec::distribution::Reference;
        let (domain, path) = (r.domain.clone(), r.path.clone());
        match (r.tag.clone(), r.digest.clone()) {
            (Some(t), Some(d)) => Reference::with_tag_and_digest(domain, path, t, d),
            (None, Some(d)) => Reference::with_digest(domain, path, d),
            (t, None) => Reference::with_tag(domain, path, t.unwrap_or_else(|| "latest".into())),
        }
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    /// Normalises as BuildKit does for a base image (with `:latest`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_normalized(s).map(Self::with_default_tag)
    }
}

impl TryFrom<&str> for ImageRef {
    type Error = ReferenceError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<String> for ImageRef {
    type Error = ReferenceError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl Serialize for ImageRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A mirror location `HOST[:PORT][/PREFIX]` that references are rewritten to.
///
/// ```
/// # fn main() -> Result<(), kiln_dockerfile::Error> {
/// use kiln_dockerfile::{ImageRef, Mirror};
/// let m: Mirror = "127.0.0.1:5000/mirror".parse()?;
/// let r: ImageRef = "alpine:3.20".parse().unwrap();
/// assert_eq!(r.mirrored(&m).unwrap().to_string(), "127.0.0.1:5000/mirror/docker.io/library/alpine:3.20");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mirror(String);

impl Mirror {
    /// The mirror as written (no trailing slash).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Mirror {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || crate::Error::new(crate::ErrorKind::InvalidMirror(s.to_owned()), None);
        let trimmed = s.trim_end_matches('/');
        let (host, prefix) = match trimmed.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (trimmed, None),
        };
        if !is_domain_and_port(host) {
            return Err(bad());
        }
        if let Some(p) = prefix
            && !p.split('/').all(is_path_component)
        {
            return Err(bad());
        }
        Ok(Self(trimmed.to_owned()))
    }
}

impl AsRef<str> for Mirror {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// distribution/reference `splitDockerDomain` (v0.6).
fn split_docker_domain(name: &str) -> (&str, String) {
    let Some((maybe_domain, maybe_remote)) = name.split_once('/') else {
        return (DEFAULT_DOMAIN, format!("{OFFICIAL_REPO_PREFIX}{name}"));
    };
    let (domain, remote) = if maybe_domain == "localhost" {
        (maybe_domain, maybe_remote)
    } else if maybe_domain == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN, maybe_remote)
    } else if maybe_domain.contains(['.', ':']) || maybe_domain.to_lowercase() != maybe_domain {
        (maybe_domain, maybe_remote)
    } else {
        (DEFAULT_DOMAIN, name)
    };
    if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        return (domain, format!("{OFFICIAL_REPO_PREFIX}{remote}"));
    }
    (domain, remote.to_owned())
}

/// distribution/reference `Parse` of a fully qualified `domain/path...`.
fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
    let Some((domain, path, tag, digest)) = match_reference(s) else {
        if s.is_empty() {
            return Err(ReferenceError::NameEmpty);
        }
        if match_reference(&s.to_lowercase()).is_some() {
            return Err(ReferenceError::ContainsUppercase);
        }
        return Err(ReferenceError::InvalidFormat);
    };
    let name_len = domain.map_or(0, |d| d.len() + 1) + path.len();
    if name_len > NAME_TOTAL_LENGTH_MAX {
        return Err(ReferenceError::NameTooLong);
    }
    if let Some(d) = digest {
        validate_digest(d)?;
    }
    Ok(ImageRef {
        domain: domain.unwrap_or_default().to_owned(),
        path: path.to_owned(),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
    })
}

type Parts<'a> = (Option<&'a str>, &'a str, Option<&'a str>, Option<&'a str>);

/// `^(name)(?::(tag))?(?:@(digest))?$` with the domain split off as
/// `anchoredNameRegexp` does.
fn match_reference(s: &str) -> Option<Parts<'_>> {
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest
        && !is_digest_pattern(d)
    {
        return None;
    }
    let last_slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(c) if last_slash.is_none_or(|sl| c > sl) => (&name_tag[..c], Some(&name_tag[c + 1..])),
        _ => (name_tag, None),
    };
    if let Some(t) = tag
        && !is_tag(t)
    {
        return None;
    }
    let (domain, path) = split_name(name)?;
    Some((domain, path, tag, digest))
}

/// `optional(domainAndPort "/") remoteName`, preferring a domain.
fn split_name(name: &str) -> Option<(Option<&str>, &str)> {
    if let Some((first, rest)) = name.split_once('/')
        && is_domain_and_port(first)
        && is_remote_name(rest)
    {
        return Some((Some(first), rest));
    }
    is_remote_name(name).then_some((None, name))
}

fn is_remote_name(s: &str) -> bool {
    s.split('/').all(is_path_component)
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep_start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        match &s[sep_start..i] {
            "." | "_" | "__" => {}
            sep if sep.bytes().all(|c| c == b'-') => {}
            _ => return false,
        }
    }
}

/// `(?:domainName|\[[a-fA-F0-9:]+\])(?::[0-9]+)?`
fn is_domain_and_port(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some(close) = rest.find(']') else {
            return false;
        };
        let inner = &rest[..close];
        if inner.is_empty() || !inner.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        (&s[..close + 2], &s[close + 2..])
    } else {
        match s.find(':') {
            Some(c) => (&s[..c], &s[c..]),
            None => (s, ""),
        }
    };
    if !port.is_empty() {
        let Some(digits) = port.strip_prefix(':') else {
            return false;
        };
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    host.starts_with('[') || host.split('.').all(is_domain_component)
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn is_domain_component(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// `[\w][\w.-]{0,127}`
fn is_tag(s: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}`
fn is_digest_pattern(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    if hex.len() < 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return false;
    }
    alg.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    })
}

/// go-digest `Digest.Validate` with sha256/sha384/sha512 available.
fn validate_digest(d: &str) -> Result<(), ReferenceError> {
    let (alg, hex) = d.split_once(':').ok_or(ReferenceError::DigestFormat)?;
    let size = match alg {
        "sha256" => 32,
        "sha384" => 48,
        "sha512" => 64,
        _ => return Err(ReferenceError::DigestAlgorithm),
    };
    if hex.len() != size * 2 {
        return Err(ReferenceError::DigestLength);
    }
    if !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ReferenceError::DigestFormat);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const H: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[rstest]
    #[case("alpine", "docker.io/library/alpine:latest")]
    #[case("alpine:3.19", "docker.io/library/alpine:3.19")]
    #[case("library/alpine", "docker.io/library/alpine:latest")]
    #[case("index.docker.io/foo", "docker.io/library/foo:latest")]
    #[case("tonistiigi/xx:amd64", "docker.io/tonistiigi/xx:amd64")]
    #[case("localhost:5000/foo/bar:1.0", "localhost:5000/foo/bar:1.0")]
    #[case("localhost/foo", "localhost/foo:latest")]
    #[case("myregistry:443/imagename:tag", "myregistry:443/imagename:tag")]
    #[case("example.com/foo", "example.com/foo:latest")]
    #[case("[::1]:5000/a/b", "[::1]:5000/a/b:latest")]
    #[case("[fe80::1]/a", "[fe80::1]/a:latest")]
    #[case("Registry.Example.com/a", "Registry.Example.com/a:latest")]
    #[case("a.b/c/d/e/f:t", "a.b/c/d/e/f:t")]
    #[case("a__b/c---d", "docker.io/a__b/c---d:latest")]
    fn normalizes(#[case] input: &str, #[case] want: &str) {
        assert_eq!(input.parse::<ImageRef>().unwrap().to_string(), want);
    }

    #[test]
    fn tag_and_digest_are_both_kept() {
        let r: ImageRef = format!("alpine:3.19@sha256:{H}").parse().unwrap();
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/alpine:3.19@sha256:{H}")
        );
        let r: ImageRef = format!("alpine@sha256:{H}").parse().unwrap();
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/alpine@sha256:{H}")
        );
        assert_eq!(r.repository(), "docker.io/library/alpine");
    }

    #[rstest]
    #[case("", ReferenceError::InvalidFormat)]
    #[case("Alpine:3.19", ReferenceError::RepositoryNotLowercase("library/Alpine".into()))]
    #[case("golang:-alpine", ReferenceError::InvalidFormat)]
    #[case("golang:", ReferenceError::InvalidFormat)]
    #[case("alpine#x", ReferenceError::InvalidFormat)]
    #[case("alpine@sha256:abc", ReferenceError::InvalidFormat)]
    #[case("a..b", ReferenceError::InvalidFormat)]
    #[case("a___b", ReferenceError::InvalidFormat)]
    #[case(H, ReferenceError::HexIdentifier(H.into()))]
    #[case(
        "alpine@md5:0123456789abcdef0123456789abcdef",
        ReferenceError::DigestAlgorithm
    )]
    #[case(
        "alpine@sha256:0123456789abcdef0123456789abcdef",
        ReferenceError::DigestLength
    )]
    fn rejects(#[case] input: &str, #[case] want: ReferenceError) {
        assert_eq!(input.parse::<ImageRef>().unwrap_err(), want);
    }

    #[test]
    fn converts_to_oci_spec_where_its_parser_disagrees() {
        use oci_spec::distribution::Reference;
        let ipv6: ImageRef = "[::1]:5000/app:1".parse().unwrap();
        assert!("[::1]:5000/app:1".parse::<Reference>().is_err());
        let oci = Reference::from(&ipv6);
        assert_eq!((oci.registry(), oci.repository()), ("[::1]:5000", "app"));
        assert_eq!(oci.to_string(), ipv6.to_string());

        let both: ImageRef = format!("alpine:3.19@sha256:{H}").parse().unwrap();
        let oci = Reference::from(&both);
        assert_eq!(
            (oci.tag(), oci.digest()),
            (Some("3.19"), Some(format!("sha256:{H}").as_str()))
        );
        assert_eq!(oci.to_string(), both.to_string());

        let upper_hex = format!("alpine@sha256:{}", H.to_uppercase());
        assert!(upper_hex.parse::<Reference>().is_ok());
        assert_eq!(
            upper_hex.parse::<ImageRef>().unwrap_err(),
            ReferenceError::DigestFormat
        );
    }

    #[test]
    fn names_without_a_domain_print_without_a_slash() {
        let r: ImageRef = "a_b.c/foo".parse().unwrap();
        assert_eq!(r.to_string(), "a_b.c/foo:latest");
        assert_eq!(r.repository(), "a_b.c/foo");
    }

    #[test]
    fn name_length_limit() {
        let long = format!("example.com/{}", "a".repeat(250));
        assert_eq!(
            long.parse::<ImageRef>().unwrap_err(),
            ReferenceError::NameTooLong
        );
    }

    #[rstest]
    #[case("127.0.0.1:5000", true)]
    #[case("mirror.local/prefix/x/", true)]
    #[case("[::1]:5000", true)]
    #[case("http://x", false)]
    #[case("", false)]
    #[case("a/B", false)]
    fn mirrors(#[case] input: &str, #[case] ok: bool) {
        assert_eq!(input.parse::<Mirror>().is_ok(), ok);
    }
}
