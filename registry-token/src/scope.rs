//! Docker scope strings (`repository:cache/global/node:pull,push`) as
//! clients send them, and what a token server grants for them.

use std::fmt;
use std::str::FromStr;

use crate::Error;
use crate::claims::Permission;
use crate::repository::{Actions, RepositoryName, RepositoryPattern};

/// One requested resource: `TYPE[(CLASS)]:NAME:ACTION[,ACTION...]`.
///
/// ```
/// use kiln_registry_token::Scope;
/// let s: Scope = "repository:cache/global/node:push,pull".parse().unwrap();
/// assert_eq!(s.name, "cache/global/node");
/// assert_eq!(s.to_string(), "repository:cache/global/node:push,pull");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// `repository`, `registry`, ...
    pub resource_type: String,
    /// The optional class, e.g. `plugin` in `repository(plugin)`.
    pub resource_class: Option<String>,
    /// The resource name (may contain `:`, e.g. a host with a port).
    pub name: String,
    /// The action names, in the order sent.
    pub actions: Vec<String>,
}

impl Scope {
    /// A repository scope.
    pub fn repository(repo: &RepositoryName, actions: Actions) -> Self {
        Self {
            resource_type: "repository".to_owned(),
            resource_class: None,
            name: repo.to_string(),
            actions: actions.iter().map(|a| a.as_str().to_owned()).collect(),
        }
    }

    /// For a `repository` scope: the repository and the actions.
    ///
    /// # Errors
    ///
    /// For other resource types, invalid names or unknown actions.
    pub fn as_repository(&self) -> Result<(RepositoryName, Actions), Error> {
        if self.resource_type != "repository" {
            return Err(Error::InvalidScope(self.to_string()));
        }
        Ok((
            self.name.parse()?,
            Actions::from_wire(self.actions.iter().map(String::as_str))?,
        ))
    }
}

fn is_token(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

impl FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidScope(s.to_owned());
        let (typ, rest) = s.split_once(':').ok_or_else(bad)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(bad)?;
        let (resource_type, resource_class) = match typ.split_once('(') {
            Some((t, c)) => (t, Some(c.strip_suffix(')').ok_or_else(bad)?)),
            None => (typ, None),
        };
        if !is_token(resource_type, b"") || resource_class.is_some_and(|c| !is_token(c, b"-_.")) {
            return Err(bad());
        }
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace() || b == b'"') {
            return Err(bad());
        }
        let actions: Vec<String> = actions.split(',').map(str::to_owned).collect();
        if actions.iter().any(|a| !is_token(a, b"*-_")) {
            return Err(bad());
        }
        Ok(Self {
            resource_type: resource_type.to_owned(),
            resource_class: resource_class.map(str::to_owned),
            name: name.to_owned(),
            actions,
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resource_type)?;
        if let Some(c) = &self.resource_class {
            write!(f, "({c})")?;
        }
        write!(f, ":{}:{}", self.name, self.actions.join(","))
    }
}

/// Several scopes separated by spaces (one `scope` challenge parameter).
///
/// # Errors
///
/// The first invalid scope.
pub fn parse_scopes(s: &str) -> Result<Vec<Scope>, Error> {
    s.split_ascii_whitespace().map(str::parse).collect()
}

/// What a token server grants for `requested` under `policy`: for each
/// requested repository, the requested actions the policy allows (exact
/// repositories; nothing for other resource types or disallowed actions).
///
/// ```
/// use kiln_registry_token::{grant, parse_scopes, Permission};
/// let policy: Vec<Permission> = vec!["tenant-a/*:push".parse().unwrap()];
/// let req = parse_scopes("repository:tenant-a/app:pull,push repository:tenant-b/x:pull").unwrap();
/// let granted = grant(&req, &policy);
/// assert_eq!(granted.len(), 1);
/// assert_eq!(granted[0].to_string(), "tenant-a/app:pull,push");
/// ```
pub fn grant(requested: &[Scope], policy: &[Permission]) -> Vec<Permission> {
    let mut out: Vec<Permission> = Vec::new();
    // Where each repository is in `out`: linear in the scopes requested,
    // however many a client sends.
    let mut at = std::collections::HashMap::new();
    for scope in requested {
        let Ok((repo, wanted)) = scope.as_repository() else {
            continue;
        };
        let allowed = policy
            .iter()
            .filter(|p| p.pattern.matches(&repo))
            .fold(Actions::NONE, |a, p| a.union(p.actions));
        let actions = wanted.intersection(allowed);
        if actions.is_empty() {
            continue;
        }
        match at.get(repo.as_str()) {
            Some(&i) => {
                let p: &mut Permission = &mut out[i];
                p.actions = p.actions.union(actions);
            }
            None => {
                at.insert(repo.as_str().to_owned(), out.len());
                out.push(Permission::new(RepositoryPattern::Exact(repo), actions));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn grant_merges_repeated_repositories_in_first_seen_order() {
        let policy: Vec<Permission> = vec!["t/*:push".parse().unwrap()];
        let mut requested = Vec::new();
        for i in 0..10_000 {
            let (repo, action) = if i % 2 == 0 {
                ("t/b", "pull")
            } else {
                ("t/a", "push")
            };
            requested.push(format!("repository:{repo}:{action}").parse().unwrap());
        }
        let granted: Vec<String> = grant(&requested, &policy)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(granted, ["t/b:pull", "t/a:pull,push"]);
    }

    #[rstest]
    #[case("repository:foo/bar:pull")]
    #[case("repository:cache/global/node:pull,push")]
    #[case("registry:catalog:*")]
    #[case("repository(plugin):a/b:pull")]
    #[case("repository:localhost:5000/foo:pull")]
    #[case("repository:a:delete")]
    fn round_trips(#[case] s: &str) {
        assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
    }

    #[rstest]
    #[case("")]
    #[case("repository")]
    #[case("repository:foo")]
    #[case(":foo:pull")]
    #[case("repository::pull")]
    #[case("repository:foo:")]
    #[case("repository:foo:pu ll")]
    #[case("repo sitory:foo:pull")]
    #[case("repository(x:foo:pull")]
    fn rejects(#[case] s: &str) {
        assert!(s.parse::<Scope>().is_err());
    }

    #[test]
    fn several_scopes_any_order() {
        let scopes = parse_scopes("repository:a/b:push,pull  repository:c/d:pull").unwrap();
        assert_eq!(scopes.len(), 2);
        let (repo, actions) = scopes[0].as_repository().unwrap();
        assert_eq!(
            (repo.as_str(), actions.to_string().as_str()),
            ("a/b", "pull,push")
        );
    }

    #[test]
    fn grant_intersects() {
        let policy: Vec<Permission> = vec![
            "cache/global/*:pull".parse().unwrap(),
            "builds/1:push".parse().unwrap(),
        ];
        let req = parse_scopes(
            "repository:cache/global/node:pull,push repository:builds/1:pull repository:x:pull registry:catalog:*",
        )
        .unwrap();
        let got: Vec<String> = grant(&req, &policy)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["cache/global/node:pull", "builds/1:pull"]);
    }
}
