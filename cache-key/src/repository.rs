//! Repository names (OCI distribution path grammar), the registry the
//! caches live in, and classification of a repository as global cache,
//! tenant cache or neither.

use std::net::Ipv6Addr;

use crate::error::{Error, PathError, RegistryError};
use crate::names::{BuildId, GlobalKey, NAME_MAX, TenantScope, string_newtype};

/// distribution's `NameTotalLengthMax`: a repository name, and a reference
/// name with its registry host, are at most this long.
pub(crate) const NAME_TOTAL_MAX: usize = 255;
/// The cache namespace, the first component under the registry prefix.
pub(crate) const CACHE: &str = "cache";
/// The global tier below [`CACHE`].
pub(crate) const GLOBAL: &str = "global";
/// The namespace of build results.
pub(crate) const BUILDS: &str = "builds";
/// Longest registry: `{registry}/cache/global/{64-character key}` must fit
/// in [`NAME_TOTAL_MAX`].
pub(crate) const REGISTRY_MAX: usize = NAME_TOTAL_MAX - "/cache/global/".len() - NAME_MAX;

/// A repository name inside a registry, e.g. `cache/global/node`,
/// `builds/42` or `docker.io/library/alpine` (a mirrored image).
///
/// Validated by the OCI distribution grammar: one or more components
/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` joined by `/`, at most 255
/// characters. Any number of components is allowed. No registry host: a
/// repository is what appears in `/v2/<name>/...` and in token scopes.
///
/// ```
/// # fn main() -> Result<(), kiln_cache_key::Error> {
/// use kiln_cache_key::Repository;
/// let r: Repository = "cache/global/node".parse()?;
/// assert_eq!(r.components().collect::<Vec<_>>(), ["cache", "global", "node"]);
/// assert!("Cache/x".parse::<Repository>().is_err());
/// assert!("10.0.0.1:5000/cache/x".parse::<Repository>().is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository(String);

impl Repository {
    /// Validates a repository name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRepository`] with the [`PathError`].
    pub fn parse(input: &str) -> Result<Self, Error> {
        validate_path(input)
            .map(|()| Self(input.to_owned()))
            .map_err(|reason| Error::InvalidRepository {
                input: input.to_owned(),
                reason,
            })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Joins validated components; callers guarantee validity and length.
    fn from_parts(parts: &[&str]) -> Self {
        Self(parts.join("/"))
    }
}

string_newtype!(Repository, Error);

/// What a repository is in the two-tier cache layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RepositoryKind {
    /// `cache/global/{key}`: the global tier.
    GlobalCache(GlobalKey),
    /// `cache/{tenant}`: one tenant's cache.
    TenantCache(TenantScope),
    /// Under `cache/` but neither tier's shape (`cache/global`,
    /// `cache/a/b`, `cache/ab`, a reserved name...). Still cache namespace:
    /// never runnable, never a base image.
    OtherCache,
    /// Not in the cache namespace.
    NotCache,
}

impl RepositoryKind {
    /// Whether the repository is anywhere in the cache namespace.
    pub fn is_cache(&self) -> bool {
        !matches!(self, Self::NotCache)
    }
}

/// The registry the caches and build results live in:
/// `HOST[:PORT][/PREFIX]`.
///
/// - `HOST` is a domain name (components of `[A-Za-z0-9-]`, not starting or
///   ending with `-`), an IPv4 address, or a bracketed IPv6 address
///   (`[::1]`, checked with [`Ipv6Addr`]).
/// - The host must read as a host to reference parsers (distribution's
///   rule, which BuildKit applies to every `ref`): it contains `.` or a
///   port, or is `localhost` or IPv6. A bare `reg` is rejected
///   ([`RegistryError::NotAHost`]): `reg/cache/acme` would mean
///   `docker.io/reg/cache/acme`, pushing cache to Docker Hub.
/// - `PORT` is 1..=65535.
/// - `PREFIX` is a repository path; every repository of the layout
///   (`cache/...`, `builds/...`) goes under it.
/// - A URL scheme is rejected with [`RegistryError::Scheme`]; plain-HTTP
///   registries are selected with the plan's insecure option instead.
/// - Trailing `/` are dropped. At most 177 characters, so that
///   `{registry}/cache/global/{64-character key}` stays within
///   distribution's 255-character name limit.
///
/// ```
/// # fn main() -> Result<(), kiln_cache_key::Error> {
/// use kiln_cache_key::{Registry, RepositoryKind};
/// let r: Registry = "[::1]:5000/kiln".parse()?;
/// assert_eq!((r.host(), r.prefix()), ("[::1]:5000", Some("kiln")));
/// let kind = r.classify("[::1]:5000/kiln/cache/global/node")?;
/// assert!(matches!(kind, RepositoryKind::GlobalCache(k) if k.as_str() == "node"));
/// assert!("http://registry:5000".parse::<Registry>().is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Registry {
    full: String,
    host_len: usize,
}

impl Registry {
    /// Validates a registry (see the type docs).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRegistry`] with the [`RegistryError`].
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bad = |reason| Error::InvalidRegistry {
            input: input.to_owned(),
            reason,
        };
        if input.contains("://") {
            return Err(bad(RegistryError::Scheme));
        }
        let full = input.trim_end_matches('/');
        if full.is_empty() {
            return Err(bad(RegistryError::Empty));
        }
        let (host, prefix) = match full.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (full, None),
        };
        check_host_and_port(host).map_err(bad)?;
        if !looks_like_host(host) {
            return Err(bad(RegistryError::NotAHost));
        }
        if let Some(p) = prefix
            && validate_path(p).is_err()
        {
            return Err(bad(RegistryError::InvalidPrefix));
        }
        if full.len() > REGISTRY_MAX {
            return Err(bad(RegistryError::TooLong {
                len: full.chars().count(),
                max: REGISTRY_MAX,
            }));
        }
        Ok(Self {
            full: full.to_owned(),
            host_len: host.len(),
        })
    }

    /// `HOST[:PORT][/PREFIX]` as given, without trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// `HOST[:PORT]`.
    pub fn host(&self) -> &str {
        &self.full[..self.host_len]
    }

    /// `PREFIX`, if any.
    pub fn prefix(&self) -> Option<&str> {
        self.full.get(self.host_len + 1..)
    }

    /// `{prefix}/cache/global/{key}`.
    pub fn global_cache(&self, key: &GlobalKey) -> Repository {
        self.layout(&[CACHE, GLOBAL, key.as_str()])
    }

    /// `{prefix}/cache/{tenant}`.
    pub fn tenant_cache(&self, tenant: &TenantScope) -> Repository {
        self.layout(&[CACHE, tenant.as_str()])
    }

    /// `{prefix}/builds/{id}`: where a build pushes its result.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRepository`] when `{host}/{prefix}/builds/{id}` is
    /// over 255 characters (a long prefix and a long id).
    pub fn build_repository(&self, id: &BuildId) -> Result<Repository, Error> {
        let repo = self.layout(&[BUILDS, id.as_str()]);
        let len = self.host().len() + 1 + repo.as_str().len();
        if len > NAME_TOTAL_MAX {
            return Err(Error::InvalidRepository {
                input: self.reference(&repo),
                reason: PathError::TooLong {
                    len,
                    max: NAME_TOTAL_MAX,
                },
            });
        }
        Ok(repo)
    }

    /// The reference name BuildKit pushes to or pulls from:
    /// `{host}/{repository}`.
    pub fn reference(&self, repository: &Repository) -> String {
        format!("{}/{}", self.host(), repository.as_str())
    }

    /// Classifies a repository name of this registry (a path, as in
    /// `/v2/<name>/...`): `{prefix}/cache/global/{key}`,
    /// `{prefix}/cache/{tenant}`, anything else under `{prefix}/cache/`, or
    /// not cache. Component-wise, never by string prefix.
    pub fn classify_path(&self, repository: &Repository) -> RepositoryKind {
        let mut parts = repository.components();
        if let Some(prefix) = self.prefix() {
            for want in prefix.split('/') {
                if parts.next() != Some(want) {
                    return RepositoryKind::NotCache;
                }
            }
        }
        if parts.next() != Some(CACHE) {
            return RepositoryKind::NotCache;
        }
        let rest: Vec<&str> = parts.collect();
        match rest.as_slice() {
            [GLOBAL, key] => match GlobalKey::parse(key) {
                Ok(k) if k.as_str() == *key => RepositoryKind::GlobalCache(k),
                _ => RepositoryKind::OtherCache,
            },
            [tenant] => match TenantScope::parse(tenant) {
                Ok(t) if t.as_str() == *tenant => RepositoryKind::TenantCache(t),
                _ => RepositoryKind::OtherCache,
            },
            _ => RepositoryKind::OtherCache,
        }
    }

    /// Classifies a repository name as the server may see it: a path
    /// (`cache/global/node`) or a path behind a registry host
    /// (`10.0.0.1:5000/cache/global/node`, `localhost/cache/acme`).
    ///
    /// The first component is taken as a host when distribution's reference
    /// parser would take it as one (it contains `.` or `:`, is `localhost`,
    /// is bracketed IPv6 or has upper case) and it is a valid
    /// `HOST[:PORT]`; any host is accepted, since a registry is reached
    /// under several names. When a name reads as cache in one reading and not
    /// in the other (a mirrored `docker.io/cache/foo` path), the cache reading
    /// wins: this is the answer for "must this be skipped", e.g. for ext4
    /// conversion, where wrongly skipping is harmless. For an exact answer on
    /// a known path use [`classify_path`](Self::classify_path).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRepository`] when the name is a valid repository in
    /// neither reading.
    pub fn classify(&self, name: &str) -> Result<RepositoryKind, Error> {
        let direct = Repository::parse(name);
        if let Ok(repo) = &direct {
            let kind = self.classify_path(repo);
            if kind.is_cache() {
                return Ok(kind);
            }
        }
        if let Some((first, rest)) = name.split_once('/')
            && looks_like_host(first)
            && let Ok(repo) = Repository::parse(rest)
        {
            return Ok(self.classify_path(&repo));
        }
        direct.map(|_| RepositoryKind::NotCache)
    }

    /// Joins `{prefix}` and validated layout components. The registry length
    /// limit keeps the result within every name limit.
    fn layout(&self, parts: &[&str]) -> Repository {
        let mut all: Vec<&str> = self.prefix().into_iter().collect();
        all.extend_from_slice(parts);
        Repository::from_parts(&all)
    }
}

impl std::str::FromStr for Registry {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Registry {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Registry {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl std::fmt::Display for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.full)
    }
}

impl AsRef<str> for Registry {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

impl serde::Serialize for Registry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for Registry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The OCI distribution path grammar with the name length limit.
fn validate_path(s: &str) -> Result<(), PathError> {
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    for (index, component) in s.split('/').enumerate() {
        if component.is_empty() {
            return Err(PathError::EmptyComponent { index });
        }
        if !is_path_component(component) {
            return Err(PathError::InvalidComponent { index });
        }
    }
    // Valid paths are ASCII: bytes are characters.
    if s.len() > NAME_TOTAL_MAX {
        return Err(PathError::TooLong {
            len: s.len(),
            max: NAME_TOTAL_MAX,
        });
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
pub(crate) fn is_path_component(s: &str) -> bool {
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
        match &b[sep_start..i] {
            b"." | b"_" | b"__" => {}
            sep if sep.iter().all(|&c| c == b'-') => {}
            _ => return false,
        }
    }
}

/// distribution's heuristic for "the first component is a registry host".
fn looks_like_host(first: &str) -> bool {
    (first.contains(['.', ':'])
        || first == "localhost"
        || first.starts_with('[')
        || first.bytes().any(|c| c.is_ascii_uppercase()))
        && check_host_and_port(first).is_ok()
}

/// `(domain | [IPv6]) (:port)?`
fn check_host_and_port(s: &str) -> Result<(), RegistryError> {
    if s.is_empty() {
        return Err(RegistryError::Empty);
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']').ok_or(RegistryError::InvalidHost)?;
        let inner = &rest[..close];
        let hex_and_colons =
            !inner.is_empty() && inner.bytes().all(|c| c.is_ascii_hexdigit() || c == b':');
        if !hex_and_colons || inner.parse::<Ipv6Addr>().is_err() {
            return Err(RegistryError::InvalidHost);
        }
        (&s[..close + 2], &s[close + 2..])
    } else {
        match s.find(':') {
            Some(c) => (&s[..c], &s[c..]),
            None => (s, ""),
        }
    };
    if !host.starts_with('[') && !host.split('.').all(is_domain_component) {
        return Err(RegistryError::InvalidHost);
    }
    if !port.is_empty() {
        let digits = port.strip_prefix(':').ok_or(RegistryError::InvalidHost)?;
        let valid = !digits.is_empty()
            && digits.bytes().all(|c| c.is_ascii_digit())
            && digits.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Err(RegistryError::InvalidPort);
        }
    }
    Ok(())
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn is_domain_component(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("a", true)]
    #[case("a0", true)]
    #[case("a.b", true)]
    #[case("a_b", true)]
    #[case("a__b", true)]
    #[case("a---b", true)]
    #[case("docker.io", true)]
    #[case("", false)]
    #[case("A", false)]
    #[case("a.", false)]
    #[case(".a", false)]
    #[case("a..b", false)]
    #[case("a___b", false)]
    #[case("a._b", false)]
    #[case("a-_b", false)]
    #[case("a:b", false)]
    fn path_components(#[case] input: &str, #[case] ok: bool) {
        assert_eq!(is_path_component(input), ok, "{input}");
    }

    #[rstest]
    #[case("cache/global/node", Ok(()))]
    #[case("a/b/c/d/e/f", Ok(()))]
    #[case("", Err(PathError::Empty))]
    #[case("/a", Err(PathError::EmptyComponent { index: 0 }))]
    #[case("a/", Err(PathError::EmptyComponent { index: 1 }))]
    #[case("a//b", Err(PathError::EmptyComponent { index: 1 }))]
    #[case("a/../b", Err(PathError::InvalidComponent { index: 1 }))]
    #[case("a/B", Err(PathError::InvalidComponent { index: 1 }))]
    #[case("host:5000/a", Err(PathError::InvalidComponent { index: 0 }))]
    fn paths(#[case] input: &str, #[case] want: Result<(), PathError>) {
        assert_eq!(validate_path(input), want);
    }

    #[test]
    fn path_length_limit() {
        let ok = format!("a/{}", "b".repeat(253));
        assert!(Repository::parse(&ok).is_ok());
        let long = format!("a/{}", "b".repeat(254));
        assert_eq!(
            validate_path(&long),
            Err(PathError::TooLong { len: 256, max: 255 })
        );
    }

    #[rstest]
    #[case("registry.local", "registry.local", None)]
    #[case("localhost", "localhost", None)]
    #[case("[::1]", "[::1]", None)]
    #[case("10.0.0.1:5000", "10.0.0.1:5000", None)]
    #[case("localhost:5000/kiln/", "localhost:5000", Some("kiln"))]
    #[case("[::1]:5000", "[::1]:5000", None)]
    #[case("[fe80::1]/a/b", "[fe80::1]", Some("a/b"))]
    #[case("Registry.Example.com", "Registry.Example.com", None)]
    fn registries(#[case] input: &str, #[case] host: &str, #[case] prefix: Option<&str>) {
        let r = Registry::parse(input).unwrap();
        assert_eq!((r.host(), r.prefix()), (host, prefix));
        assert_eq!(r.to_string(), input.trim_end_matches('/'));
    }

    #[rstest]
    #[case("", RegistryError::Empty)]
    #[case("/", RegistryError::Empty)]
    #[case("http://registry", RegistryError::Scheme)]
    #[case("-bad", RegistryError::InvalidHost)]
    #[case("registry", RegistryError::NotAHost)]
    #[case("reg/kiln", RegistryError::NotAHost)]
    #[case("a..b", RegistryError::InvalidHost)]
    #[case("a_b", RegistryError::InvalidHost)]
    #[case("[::1", RegistryError::InvalidHost)]
    #[case("[]:5000", RegistryError::InvalidHost)]
    #[case("[:::::]", RegistryError::InvalidHost)]
    #[case("[::ffff:1.2.3.4]", RegistryError::InvalidHost)]
    #[case("[::1]x", RegistryError::InvalidHost)]
    #[case("host:", RegistryError::InvalidPort)]
    #[case("host:0", RegistryError::InvalidPort)]
    #[case("host:65536", RegistryError::InvalidPort)]
    #[case("host:+80", RegistryError::InvalidPort)]
    #[case("host:80:80", RegistryError::InvalidPort)]
    #[case("host:1/UPPER", RegistryError::InvalidPrefix)]
    #[case("host:1//x", RegistryError::InvalidPrefix)]
    fn registries_reject(#[case] input: &str, #[case] want: RegistryError) {
        assert_eq!(
            Registry::parse(input).unwrap_err(),
            Error::InvalidRegistry {
                input: input.to_owned(),
                reason: want
            }
        );
    }

    #[test]
    fn registry_length_limit_keeps_cache_repositories_valid() {
        let host = format!("r:1/{}", "p".repeat(REGISTRY_MAX - 4));
        let r = Registry::parse(&host).unwrap();
        let key = GlobalKey::parse(&"k".repeat(64)).unwrap();
        let reference = r.reference(&r.global_cache(&key));
        assert_eq!(reference.len(), NAME_TOTAL_MAX);
        assert!(Repository::parse(r.global_cache(&key).as_str()).is_ok());
        let too_long = format!("{host}p");
        assert!(matches!(
            Registry::parse(&too_long),
            Err(Error::InvalidRegistry {
                reason: RegistryError::TooLong { .. },
                ..
            })
        ));
    }

    #[test]
    fn build_repository_checks_the_reference_length() {
        let r = Registry::parse(&format!("r:1/{}", "p".repeat(150))).unwrap();
        let id = BuildId::parse(&"i".repeat(100)).unwrap();
        assert!(matches!(
            r.build_repository(&id),
            Err(Error::InvalidRepository {
                reason: PathError::TooLong { .. },
                ..
            })
        ));
        let r = Registry::parse("r:1/kiln").unwrap();
        assert_eq!(
            r.build_repository(&id).unwrap().as_str(),
            format!("kiln/builds/{}", "i".repeat(100))
        );
    }

    fn kind(registry: &str, name: &str) -> Result<RepositoryKind, Error> {
        Registry::parse(registry).unwrap().classify(name)
    }

    fn global(k: &str) -> RepositoryKind {
        RepositoryKind::GlobalCache(GlobalKey::parse(k).unwrap())
    }

    fn tenant(t: &str) -> RepositoryKind {
        RepositoryKind::TenantCache(TenantScope::parse(t).unwrap())
    }

    #[rstest]
    #[case("reg:5000", "cache/global/node", global("node"))]
    #[case("reg:5000", "10.0.0.1:5000/cache/global/node", global("node"))]
    #[case("reg:5000", "localhost/cache/acme", tenant("acme"))]
    #[case("reg:5000", "[::1]:5000/cache/acme", tenant("acme"))]
    #[case("reg:5000", "Registry/cache/acme", tenant("acme"))]
    #[case("reg:5000", "cache/acme", tenant("acme"))]
    #[case("reg:5000", "cache/global", RepositoryKind::OtherCache)]
    #[case("reg:5000", "cache/global/no", RepositoryKind::OtherCache)]
    #[case("reg:5000", "cache/global/node/x", RepositoryKind::OtherCache)]
    #[case("reg:5000", "cache/a_b", RepositoryKind::OtherCache)]
    #[case("reg:5000", "cache/admin", RepositoryKind::OtherCache)]
    #[case("reg:5000", "cache/ab", RepositoryKind::OtherCache)]
    #[case("reg:5000", "cache", RepositoryKind::OtherCache)]
    #[case("reg:5000", "builds/1", RepositoryKind::NotCache)]
    #[case("reg:5000", "cachex/global/node", RepositoryKind::NotCache)]
    #[case("reg:5000", "x/cache/global/node", RepositoryKind::NotCache)]
    #[case("reg:5000", "docker.io/library/alpine", RepositoryKind::NotCache)]
    #[case("reg:5000", "10.0.0.1:5000/builds/1", RepositoryKind::NotCache)]
    #[case("reg:5000/kiln", "kiln/cache/acme", tenant("acme"))]
    #[case("reg:5000/kiln", "reg:5000/kiln/cache/global/golang", global("golang"))]
    // An upper-case first component is a host to distribution.
    #[case("reg:5000", "Cache/acme", RepositoryKind::NotCache)]
    #[case("reg:5000/kiln", "cache/acme", RepositoryKind::NotCache)]
    #[case("reg:5000/a/b", "a/b/cache/acme", tenant("acme"))]
    #[case("reg:5000/a/b", "a/cache/acme", RepositoryKind::NotCache)]
    fn classifies(#[case] registry: &str, #[case] name: &str, #[case] want: RepositoryKind) {
        assert_eq!(kind(registry, name).unwrap(), want, "{name}");
    }

    #[rstest]
    #[case("")]
    #[case("cache/Acme")]
    #[case("reg:5000/")]
    #[case("10.0.0.1:5000/cache/global/node:latest")]
    #[case("cache//acme")]
    fn classify_rejects_invalid_names(#[case] name: &str) {
        assert!(kind("reg:1", name).is_err(), "{name}");
    }

    #[test]
    fn classify_path_is_exact() {
        let r = Registry::parse("reg:1").unwrap();
        let mirrored = Repository::parse("docker.io/cache/foo").unwrap();
        assert_eq!(r.classify_path(&mirrored), RepositoryKind::NotCache);
        // The lenient reading treats the first component as a host.
        assert_eq!(r.classify(mirrored.as_str()).unwrap(), tenant("foo"));
    }
}
