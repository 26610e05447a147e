//! The registry access a build's token must carry.
//!
//! Deliberately this crate's own small types: the server maps them onto
//! `kiln-registry-token`'s scopes, so neither crate depends on the other.

use std::fmt;

use crate::repository::Repository;

/// A registry action on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read manifests and blobs.
    Pull,
    /// Write manifests and blobs.
    Push,
}

impl Action {
    /// `pull` or `push`, as in a distribution token scope.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One repository and the actions a build needs on it.
///
/// `Display` is the distribution token scope,
/// `repository:{name}:{actions}`, e.g. `repository:cache/acme:pull,push`.
/// Serialised as `{"repository": ..., "actions": [...]}`; there is no
/// `Deserialize`: an access list is derived from a plan the server built,
/// never taken from a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct RepositoryAccess {
    repository: Repository,
    actions: Vec<Action>,
}

impl RepositoryAccess {
    /// Pull-only access.
    pub(crate) fn pull(repository: Repository) -> Self {
        Self {
            repository,
            actions: vec![Action::Pull],
        }
    }

    /// Pull and push access: pushing needs pull too, because clients
    /// (BuildKit's pusher, docker, containerd) check for existing blobs and
    /// request `pull,push` scopes when they push.
    pub(crate) fn pull_push(repository: Repository) -> Self {
        Self {
            repository,
            actions: vec![Action::Pull, Action::Push],
        }
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// The actions, sorted (`pull` before `push`), without duplicates.
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// Whether `action` is granted.
    pub fn allows(&self, action: Action) -> bool {
        self.actions.contains(&action)
    }

    /// Adds the actions of `other` (same repository).
    pub(crate) fn merge(&mut self, other: &[Action]) {
        self.actions.extend_from_slice(other);
        self.actions.sort_unstable();
        self.actions.dedup();
    }
}

impl fmt::Display for RepositoryAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "repository:{}:", self.repository)?;
        for (i, a) in self.actions.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(a.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> Repository {
        s.parse().unwrap()
    }

    #[test]
    fn displays_as_a_token_scope() {
        assert_eq!(
            RepositoryAccess::pull(repo("cache/global/node")).to_string(),
            "repository:cache/global/node:pull"
        );
        assert_eq!(
            RepositoryAccess::pull_push(repo("builds/1")).to_string(),
            "repository:builds/1:pull,push"
        );
    }

    #[test]
    fn merge_sorts_and_dedups() {
        let mut a = RepositoryAccess::pull(repo("a"));
        a.merge(&[Action::Push, Action::Pull]);
        assert_eq!(a.actions(), [Action::Pull, Action::Push]);
        assert!(a.allows(Action::Push));
    }

    #[test]
    fn serialises_lower_case() {
        let a = RepositoryAccess::pull_push(repo("cache/acme"));
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"repository":"cache/acme","actions":["pull","push"]}"#
        );
    }
}
