//! Repository names, repository patterns and actions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

const NAME_MAX: usize = 255;

/// A repository name of the OCI distribution grammar: path components of
/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` joined by `/`, any number of
/// them (`cache/global/node` has three), at most 255 characters.
///
/// ```
/// use kiln_registry_token::RepositoryName;
/// let r: RepositoryName = "cache/global/node".parse().unwrap();
/// assert_eq!(r.as_str(), "cache/global/node");
/// assert!("Cache/x".parse::<RepositoryName>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` component.
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
        let sep = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        match &s[sep..i] {
            "." | "_" | "__" => {}
            run if run.bytes().all(|c| c == b'-') => {}
            _ => return false,
        }
    }
}

impl FromStr for RepositoryName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s.is_empty() || s.len() > NAME_MAX || !s.split('/').all(is_path_component) {
            return Err(Error::InvalidRepository(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<&str> for RepositoryName {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Error> {
        s.parse()
    }
}

impl TryFrom<String> for RepositoryName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl AsRef<str> for RepositoryName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RepositoryName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RepositoryName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Which repositories a permission covers: one exactly, every repository
/// below a prefix (`tenant-a/*` matches `tenant-a/x` and `tenant-a/x/y`, not
/// `tenant-a`), or all (`*`). Nothing else is a wildcard.
///
/// ```
/// use kiln_registry_token::{RepositoryName, RepositoryPattern};
/// let p: RepositoryPattern = "cache/global/*".parse().unwrap();
/// assert!(p.matches(&"cache/global/node".parse::<RepositoryName>().unwrap()));
/// assert!(!p.matches(&"cache/global".parse::<RepositoryName>().unwrap()));
/// assert!("cache/*/node".parse::<RepositoryPattern>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RepositoryPattern {
    /// Exactly this repository.
    Exact(RepositoryName),
    /// Every repository strictly below this prefix.
    Below(RepositoryName),
    /// Every repository.
    Any,
}

impl RepositoryPattern {
    /// Whether `repo` is covered.
    pub fn matches(&self, repo: &RepositoryName) -> bool {
        match self {
            Self::Exact(r) => r == repo,
            Self::Below(prefix) => repo
                .as_str()
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/')),
            Self::Any => true,
        }
    }
}

impl FromStr for RepositoryPattern {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidPattern(s.to_owned());
        if s == "*" {
            return Ok(Self::Any);
        }
        if let Some(prefix) = s.strip_suffix("/*") {
            return prefix.parse().map(Self::Below).map_err(|_| bad());
        }
        s.parse().map(Self::Exact).map_err(|_| bad())
    }
}

impl fmt::Display for RepositoryPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(r) => write!(f, "{r}"),
            Self::Below(r) => write!(f, "{r}/*"),
            Self::Any => f.write_str("*"),
        }
    }
}

impl Serialize for RepositoryPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RepositoryPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One registry action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Action {
    /// Read manifests and blobs.
    Pull,
    /// Upload blobs and manifests (implies pull).
    Push,
    /// Delete manifests and blobs.
    Delete,
}

impl Action {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::Delete => "delete",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::Pull => 1,
            Self::Push => 2,
            Self::Delete => 4,
        }
    }
}

impl FromStr for Action {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "pull" => Ok(Self::Pull),
            "push" => Ok(Self::Push),
            "delete" => Ok(Self::Delete),
            _ => Err(Error::InvalidAction(s.to_owned())),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of actions; push always brings pull with it.
///
/// ```
/// use kiln_registry_token::{Action, Actions};
/// let a: Actions = "push".parse().unwrap();
/// assert!(a.contains(Action::Pull));
/// assert_eq!(a.to_string(), "pull,push");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Actions(u8);

impl Actions {
    /// No action.
    pub const NONE: Self = Self(0);
    /// Every action.
    pub const ALL: Self = Self(7);

    /// Adds `a` (and pull with push).
    #[must_use]
    pub fn with(self, a: Action) -> Self {
        let mut bits = self.0 | a.bit();
        if a == Action::Push {
            bits |= Action::Pull.bit();
        }
        Self(bits)
    }

    /// Whether `a` is included.
    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    /// Whether empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Every action of `self` also in `other`.
    #[must_use]
    pub fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Both sets.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The actions in wire order (pull, push, delete).
    pub fn iter(self) -> impl Iterator<Item = Action> {
        [Action::Pull, Action::Push, Action::Delete]
            .into_iter()
            .filter(move |a| self.contains(*a))
    }

    /// Reads wire action names; `*` means every action.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAction`] for any other name.
    pub fn from_wire<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, Error> {
        names.into_iter().try_fold(Self::NONE, |acc, n| {
            if n == "*" {
                Ok(Self::ALL)
            } else {
                Ok(acc.with(n.parse()?))
            }
        })
    }
}

impl FromStr for Actions {
    type Err = Error;

    /// `pull`, `push`, `pull,push,delete`, ... (comma separated).
    fn from_str(s: &str) -> Result<Self, Error> {
        let set = Self::from_wire(s.split(','))?;
        if set.is_empty() {
            return Err(Error::InvalidAction(s.to_owned()));
        }
        Ok(set)
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Action::as_str).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("a")]
    #[case("cache/global/node")]
    #[case("a/b/c/d/e")]
    #[case("a.b_c__d---e")]
    fn valid_names(#[case] s: &str) {
        assert_eq!(s.parse::<RepositoryName>().unwrap().as_str(), s);
    }

    #[rstest]
    #[case("")]
    #[case("A")]
    #[case("a//b")]
    #[case("/a")]
    #[case("a/")]
    #[case("a/../b")]
    #[case("a..b")]
    #[case("a:b")]
    #[case("a/*")]
    fn invalid_names(#[case] s: &str) {
        assert!(s.parse::<RepositoryName>().is_err());
    }

    #[test]
    fn name_length() {
        assert!("a".repeat(255).parse::<RepositoryName>().is_ok());
        assert!("a".repeat(256).parse::<RepositoryName>().is_err());
    }

    #[rstest]
    #[case("*", "x/y", true)]
    #[case("tenant-a/*", "tenant-a/x", true)]
    #[case("tenant-a/*", "tenant-a/x/y/z", true)]
    #[case("tenant-a/*", "tenant-a", false)]
    #[case("tenant-a/*", "tenant-ab/x", false)]
    #[case("builds/1", "builds/1", true)]
    #[case("builds/1", "builds/12", false)]
    fn patterns(#[case] p: &str, #[case] repo: &str, #[case] want: bool) {
        let p: RepositoryPattern = p.parse().unwrap();
        assert_eq!(p.matches(&repo.parse().unwrap()), want);
        assert_eq!(p.to_string().parse::<RepositoryPattern>().unwrap(), p);
    }

    #[rstest]
    #[case("a*")]
    #[case("*/a")]
    #[case("a/*/b")]
    #[case("a/**")]
    #[case("/*")]
    #[case("")]
    fn bad_patterns(#[case] p: &str) {
        assert!(p.parse::<RepositoryPattern>().is_err());
    }

    #[test]
    fn actions() {
        let a: Actions = "delete,push".parse().unwrap();
        assert_eq!(a.to_string(), "pull,push,delete");
        assert_eq!(Actions::from_wire(["*"]).unwrap(), Actions::ALL);
        assert!("pull,admin".parse::<Actions>().is_err());
        assert!("".parse::<Actions>().is_err());
    }
}
