//! Validated names: tenant cache scopes, global cache keys and build ids.

use crate::error::{Error, NameError, PathError};
use crate::repository::is_path_component;

/// Shortest tenant scope or global key.
pub(crate) const NAME_MIN: usize = 3;
/// Longest tenant scope or global key.
pub(crate) const NAME_MAX: usize = 64;
/// Longest build id.
pub(crate) const BUILD_ID_MAX: usize = 128;

/// Implements the house newtype traits over a `parse` constructor:
/// `FromStr`, `TryFrom<&str>`, `TryFrom<String>`, `Display`, `AsRef<str>`,
/// `Serialize` (as the string) and `Deserialize` (through the parser).
macro_rules! string_newtype {
    ($ty:ident, $err:ty) => {
        impl ::std::str::FromStr for $ty {
            type Err = $err;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = $err;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = $err;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(::serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use string_newtype;

/// A tenant's cache scope: the `{tenant}` in `{registry}/cache/{tenant}`.
///
/// Parsing normalises, then validates:
///
/// 1. trims ASCII whitespace and lower-cases ASCII letters (only ASCII:
///    Unicode case folding would turn look-alikes such as the Kelvin sign
///    `K` into `k`, letting two different inputs name one tenant);
/// 2. requires 3 to 64 characters from `[a-z0-9-]`, no leading, trailing
///    or doubled `-` (so `..`, `/`, `_` and the empty string never pass);
/// 3. rejects the [reserved](Self::RESERVED) names.
///
/// Every valid scope is also a valid OCI repository path component.
///
/// ```
/// # fn main() -> Result<(), kiln_cache_key::Error> {
/// use kiln_cache_key::TenantScope;
/// let t: TenantScope = "  Acme-Corp ".parse()?;
/// assert_eq!(t.as_str(), "acme-corp");
/// assert!("global".parse::<TenantScope>().is_err());
/// assert!("a--b".parse::<TenantScope>().is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantScope(String);

impl TenantScope {
    /// Names no tenant may use, and why:
    ///
    /// - `global`: `cache/global` is the global tier; a tenant called
    ///   `global` would own the parent of every global cache repository.
    /// - `admin`, `system`, `root`: reserved for operators, so that no tenant
    ///   can pass for one in logs, token subjects or scope patterns such as
    ///   `admin:*`.
    /// - `cache`, `builds`, `mirror`, `mirrors`: the registry's top-level
    ///   namespaces; reserving them keeps a path-joining mistake (or a layout
    ///   change that moves tenants up a level) from aliasing them.
    /// - `blobs`, `manifests`, `tags`, `uploads`, `referrers`: the words of
    ///   the distribution API routes (`/v2/<name>/blobs/uploads/`); a
    ///   repository component equal to one of them confuses routers that
    ///   split paths naively, as one did before.
    pub const RESERVED: &'static [&'static str] = &[
        "global",
        "admin",
        "system",
        "root",
        "cache",
        "builds",
        "mirror",
        "mirrors",
        "blobs",
        "manifests",
        "tags",
        "uploads",
        "referrers",
    ];

    /// Normalises and validates a tenant scope (see the type docs).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTenantScope`] with the [`NameError`].
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bad = |reason| Error::InvalidTenantScope {
            input: input.to_owned(),
            reason,
        };
        let name = normalise_name(input).map_err(bad)?;
        if Self::RESERVED.contains(&name.as_str()) {
            return Err(bad(NameError::Reserved));
        }
        Ok(Self(name))
    }

    /// The normalised scope.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype!(TenantScope, Error);

/// A global cache key: the `{key}` in `{registry}/cache/global/{key}`, e.g.
/// `node`, `python`, `ubuntu`.
///
/// Normalised and validated like [`TenantScope`] (trim ASCII whitespace,
/// ASCII lower-case, 3 to 64 characters of `[a-z0-9-]`, no leading,
/// trailing or doubled `-`), without reserved names: keys live one level
/// below `cache/global/`, where nothing else does.
///
/// ```
/// # fn main() -> Result<(), kiln_cache_key::Error> {
/// use kiln_cache_key::GlobalKey;
/// let k: GlobalKey = "Node".parse()?;
/// assert_eq!(k.to_string(), "node");
/// assert!("../etc".parse::<GlobalKey>().is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GlobalKey(String);

impl GlobalKey {
    /// Normalises and validates a global cache key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidGlobalKey`] with the [`NameError`].
    pub fn parse(input: &str) -> Result<Self, Error> {
        normalise_name(input)
            .map(Self)
            .map_err(|reason| Error::InvalidGlobalKey {
                input: input.to_owned(),
                reason,
            })
    }

    /// The normalised key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype!(GlobalKey, Error);

/// A build id: the `{id}` in the result repository `builds/{id}`.
///
/// One OCI repository path component
/// (`[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`), 1 to 128 characters. Not
/// normalised: ids are machine-made, and lower-casing `AbC` could make two
/// case-sensitive ids share one repository, so upper case is rejected.
///
/// ```
/// # fn main() -> Result<(), kiln_cache_key::Error> {
/// use kiln_cache_key::BuildId;
/// let id: BuildId = "0b6f1c2e-9d4a-4c55-8f7e-3f1a2b3c4d5e".parse()?;
/// assert_eq!(id.as_str().len(), 36);
/// assert!("a/b".parse::<BuildId>().is_err());
/// assert!("ABC".parse::<BuildId>().is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BuildId(String);

impl BuildId {
    /// Validates a build id.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBuildId`] with the [`PathError`].
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bad = |reason| Error::InvalidBuildId {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(bad(PathError::Empty));
        }
        if input.contains('/') {
            return Err(bad(PathError::NotSingleComponent));
        }
        if input.len() > BUILD_ID_MAX {
            return Err(bad(PathError::TooLong {
                len: input.chars().count(),
                max: BUILD_ID_MAX,
            }));
        }
        if !is_path_component(input) {
            return Err(bad(PathError::InvalidComponent { index: 0 }));
        }
        Ok(Self(input.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype!(BuildId, Error);

/// Trim, ASCII-lower-case and validate a tenant scope or global key.
fn normalise_name(input: &str) -> Result<String, NameError> {
    let name = input
        .trim_matches(|c: char| c.is_ascii_whitespace())
        .to_ascii_lowercase();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some((index, character)) = name
        .chars()
        .enumerate()
        .find(|&(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(NameError::InvalidCharacter { character, index });
    }
    if name.starts_with('-') {
        return Err(NameError::LeadingDash);
    }
    if name.ends_with('-') {
        return Err(NameError::TrailingDash);
    }
    if name.contains("--") {
        return Err(NameError::DoubleDash);
    }
    // ASCII only from here: bytes are characters.
    let len = name.len();
    if len < NAME_MIN {
        return Err(NameError::TooShort { len, min: NAME_MIN });
    }
    if len > NAME_MAX {
        return Err(NameError::TooLong { len, max: NAME_MAX });
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("acme", "acme")]
    #[case("  ACME\t", "acme")]
    #[case("a-b-c", "a-b-c")]
    #[case("123", "123")]
    #[case("team-42", "team-42")]
    #[case("globals", "globals")]
    #[case(&"a".repeat(64), &"a".repeat(64))]
    fn tenant_scopes_normalise(#[case] input: &str, #[case] want: &str) {
        assert_eq!(TenantScope::parse(input).unwrap().as_str(), want);
    }

    #[rstest]
    #[case("", NameError::Empty)]
    #[case("   ", NameError::Empty)]
    #[case("..", NameError::InvalidCharacter { character: '.', index: 0 })]
    #[case("/", NameError::InvalidCharacter { character: '/', index: 0 })]
    #[case("a/b", NameError::InvalidCharacter { character: '/', index: 1 })]
    #[case("a_b", NameError::InvalidCharacter { character: '_', index: 1 })]
    #[case("a b", NameError::InvalidCharacter { character: ' ', index: 1 })]
    #[case("caf\u{e9}", NameError::InvalidCharacter { character: '\u{e9}', index: 3 })]
    #[case("\u{212a}ey", NameError::InvalidCharacter { character: '\u{212a}', index: 0 })]
    #[case("-abc", NameError::LeadingDash)]
    #[case("abc-", NameError::TrailingDash)]
    #[case("a--b", NameError::DoubleDash)]
    #[case("ab", NameError::TooShort { len: 2, min: 3 })]
    #[case(&"a".repeat(65), NameError::TooLong { len: 65, max: 64 })]
    #[case("global", NameError::Reserved)]
    #[case(" Global ", NameError::Reserved)]
    #[case("admin", NameError::Reserved)]
    #[case("builds", NameError::Reserved)]
    #[case("manifests", NameError::Reserved)]
    fn tenant_scopes_reject(#[case] input: &str, #[case] want: NameError) {
        assert_eq!(
            TenantScope::parse(input).unwrap_err(),
            Error::InvalidTenantScope {
                input: input.to_owned(),
                reason: want
            }
        );
    }

    #[test]
    fn every_reserved_name_is_otherwise_valid_and_rejected() {
        for name in TenantScope::RESERVED {
            assert!(normalise_name(name).is_ok(), "{name}");
            assert!(GlobalKey::parse(name).is_ok(), "{name}");
            assert!(TenantScope::parse(name).is_err(), "{name}");
        }
    }

    #[rstest]
    #[case("node", true)]
    #[case("PYTHON", true)]
    #[case("global", true)]
    #[case("ubuntu-24-04", true)]
    #[case("no", false)]
    #[case("node.js", false)]
    #[case("", false)]
    fn global_keys(#[case] input: &str, #[case] ok: bool) {
        assert_eq!(GlobalKey::parse(input).is_ok(), ok, "{input}");
    }

    #[rstest]
    #[case("1", true)]
    #[case("0b6f1c2e-9d4a-4c55-8f7e-3f1a2b3c4d5e", true)]
    #[case("build.42_x", true)]
    #[case("a__b", true)]
    #[case("", false)]
    #[case("A1", false)]
    #[case("a/b", false)]
    #[case("-a", false)]
    #[case("a..b", false)]
    #[case("a___b", false)]
    fn build_ids(#[case] input: &str, #[case] ok: bool) {
        assert_eq!(BuildId::parse(input).is_ok(), ok, "{input}");
    }

    #[test]
    fn build_id_length_limit() {
        assert!(BuildId::parse(&"a".repeat(128)).is_ok());
        assert_eq!(
            BuildId::parse(&"a".repeat(129)).unwrap_err(),
            Error::InvalidBuildId {
                input: "a".repeat(129),
                reason: PathError::TooLong { len: 129, max: 128 }
            }
        );
    }

    #[test]
    fn serde_goes_through_the_parser() {
        let t: TenantScope = serde_json::from_str("\" Acme \"").unwrap();
        assert_eq!(t.as_str(), "acme");
        assert!(serde_json::from_str::<TenantScope>("\"global\"").is_err());
        assert!(serde_json::from_str::<GlobalKey>("\"x\"").is_err());
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"acme\"");
    }
}
