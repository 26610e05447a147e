//! Where an image is: registry host, repository, tag and/or digest.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// An image in a registry: `[docker://]HOST[:PORT]/REPO[:TAG][@DIGEST]`
/// (a name without a host means Docker Hub, `library/` for one component).
///
/// ```
/// use kiln_oci_mirror::ImageLocation;
/// let l: ImageLocation = "docker://127.0.0.1:5000/mirror/alpine:3.20".parse().unwrap();
/// assert_eq!((l.registry(), l.repository(), l.tag()), ("127.0.0.1:5000", "mirror/alpine", Some("3.20")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageLocation {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageLocation {
    /// Registry host with port.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Tag, if given.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Digest, if given.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What to fetch the manifest by: the digest when given, else the tag,
    /// else `latest`.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

fn is_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| alnum(c) || matches!(c, b'.' | b'_' | b'-'))
        && !s.contains("..")
}

/// A SHA-256 digest (`sha256:` and 64 lower-case hex digits): the only
/// kind a copy verifies, and safe to put in a URL.
pub(crate) fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A registry as the reference grammar has it: DNS labels or an IPv6
/// address in brackets, and an optional port.
fn is_host(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) if !p.contains(']') => (n, Some(p)),
        _ => (h, None),
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let name_ok = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => name.len() <= 253 && name.split('.').all(label),
    };
    port_ok && name_ok
}

impl FromStr for ImageLocation {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidLocation {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let s = input.strip_prefix("docker://").unwrap_or(input);
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) if is_digest(d) => (r, Some(d.to_owned())),
            Some(_) => return Err(bad("digest must be sha256: and 64 lower-case hex digits")),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, p)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), p)
            }
            _ => ("docker.io".to_owned(), rest),
        };
        let (path, tag) = match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t.to_owned())),
            _ => (path, None),
        };
        if !is_host(&registry) {
            return Err(bad("invalid registry host[:port]"));
        }
        if tag.as_deref().is_some_and(|t| !is_tag(t)) {
            return Err(bad("invalid tag"));
        }
        if !path.split('/').all(is_component) {
            return Err(bad("invalid repository path"));
        }
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        // distribution's limit is on the whole normalised name.
        if registry.len() + 1 + repository.len() > 255 {
            return Err(bad("name longer than 255 characters"));
        }
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for ImageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The mirrored name of an image: `{mirror}/{registry}/{repository}`, as the
/// Dockerfile rewrite produces (`docker.io/library/alpine:3.20` under
/// `127.0.0.1:5000` becomes `127.0.0.1:5000/docker.io/library/alpine:3.20`),
/// the registry written as one path component by
/// [`kiln_dockerfile::registry_component`] (`localhost:5000` →
/// `localhost__5000`, `[::1]:5000` → `ipv6_…__5000`).
///
/// `mirror` is `HOST[:PORT][/PREFIX]`.
///
/// # Errors
///
/// When the result is not a valid location.
pub fn mirrored(source: &ImageLocation, mirror: &str) -> Result<ImageLocation, Error> {
    let mirror = mirror.trim_end_matches('/');
    let registry = kiln_dockerfile::registry_component(&source.registry).ok_or_else(|| {
        Error::InvalidLocation {
            input: source.to_string(),
            reason: "registry has no mirrored name".into(),
        }
    })?;
    let mut s = format!("{mirror}/{registry}/{}", source.repository);
    if let Some(t) = &source.tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = &source.digest {
        s.push('@');
        s.push_str(d);
    }
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("docker://127.0.0.1:5000/a/b:1", "127.0.0.1:5000", "a/b", Some("1"))]
    #[case("alpine:3.20", "docker.io", "library/alpine", Some("3.20"))]
    #[case("localhost/x", "localhost", "x", None)]
    #[case("ghcr.io/o/r/s", "ghcr.io", "o/r/s", None)]
    #[case("[::1]:5000/a:v", "[::1]:5000", "a", Some("v"))]
    #[case("Reg-1.Example.com:443/a", "Reg-1.Example.com:443", "a", None)]
    fn parses(#[case] s: &str, #[case] reg: &str, #[case] repo: &str, #[case] tag: Option<&str>) {
        let l: ImageLocation = s.parse().unwrap();
        assert_eq!((l.registry(), l.repository(), l.tag()), (reg, repo, tag));
    }

    #[rstest]
    #[case("docker://h.io/A/b")]
    #[case("h.io/a@sha256:abc")]
    #[case("h.io/a:")]
    #[case("h.io//a")]
    #[case("h.io?x/repo")]
    #[case("h.io#x/repo")]
    #[case("user@h.io/repo")]
    #[case("h.io:99999/repo")]
    #[case("h.io:/repo")]
    #[case("-h.io/repo")]
    #[case("[::1/repo")]
    #[case(&format!("{}:1", "a".repeat(250)))]
    fn rejects(#[case] s: &str) {
        assert!(s.parse::<ImageLocation>().is_err());
    }

    #[test]
    fn mirror_naming() {
        let src: ImageLocation = "alpine:3.20".parse().unwrap();
        let m = mirrored(&src, "127.0.0.1:5000").unwrap();
        assert_eq!(
            m.to_string(),
            "127.0.0.1:5000/docker.io/library/alpine:3.20"
        );
        // The names the Dockerfile rewrite gives, for every registry form.
        for (src, want) in [
            (
                "localhost:5000/team/app:1",
                "m.io/p/localhost__5000/team/app:1",
            ),
            ("10.0.0.5:8443/x", "m.io/p/10.0.0.5__8443/x"),
            (
                "[::1]:5000/x",
                "m.io/p/ipv6_0000.0000.0000.0000.0000.0000.0000.0001__5000/x",
            ),
            (
                "registry.example.com:443/x",
                "m.io/p/registry.example.com__443/x",
            ),
        ] {
            let m = mirrored(&src.parse().unwrap(), "m.io/p").unwrap();
            assert_eq!(m.to_string(), want);
            let r: kiln_dockerfile::ImageRef = src.parse().unwrap();
            let rewritten = r.mirrored(&"m.io/p".parse().unwrap()).unwrap().to_string();
            assert_eq!(rewritten.trim_end_matches(":latest"), want);
        }
    }
}
