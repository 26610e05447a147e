//! The one claims type, its two wire formats (Docker registry token auth,
//! and Kiln's legacy `{build_id, repos, scope}`), and authorization.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::repository::{Action, Actions, RepositoryName, RepositoryPattern};

/// One permission: actions on the repositories a pattern covers. Written
/// (and serialized) as `PATTERN:ACTIONS`, e.g. `cache/global/*:pull`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Permission {
    /// The repositories.
    pub pattern: RepositoryPattern,
    /// What may be done to them.
    pub actions: Actions,
}

impl Permission {
    /// A permission.
    pub fn new(pattern: RepositoryPattern, actions: Actions) -> Self {
        Self { pattern, actions }
    }
}

impl std::str::FromStr for Permission {
    type Err = Error;

    /// `PATTERN:ACTIONS`, e.g. `cache/global/*:pull` or `builds/42:push`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let (pattern, actions) = s
            .rsplit_once(':')
            .ok_or_else(|| Error::InvalidAccess(s.to_owned()))?;
        Ok(Self {
            pattern: pattern.parse()?,
            actions: actions.parse()?,
        })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.pattern, self.actions)
    }
}

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Which wire format a token came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenFormat {
    /// Docker registry token auth (`access` list).
    Docker,
    /// Kiln's first format: `{build_id, repos, scope}` (HS256).
    Legacy,
}

/// Validated claims: what a token grants, to whom, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: Option<String>,
    /// `aud` (absent in legacy tokens).
    pub audience: Vec<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// `nbf`.
    pub not_before: Option<u64>,
    /// `iat`.
    pub issued_at: Option<u64>,
    /// `jti`.
    pub token_id: Option<String>,
    /// The build the token was minted for, if any.
    pub build_id: Option<String>,
    /// What it grants on repositories.
    pub permissions: Vec<Permission>,
    /// Non-repository grants (e.g. `registry:catalog:*`), kept as sent.
    pub other_access: Vec<AccessEntry>,
    /// The format it arrived in.
    pub format: TokenFormat,
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{action} on {repository} not granted")]
pub struct Denied {
    /// The repository asked for.
    pub repository: RepositoryName,
    /// The action asked for.
    pub action: Action,
}

impl Claims {
    /// Whether `action` on `repo` is granted.
    ///
    /// # Errors
    ///
    /// [`Denied`] when no permission covers it.
    pub fn authorize(&self, repo: &RepositoryName, action: Action) -> Result<(), Denied> {
        authorize(self, repo, action)
    }

    /// The actions granted on `repo` (union over matching permissions).
    pub fn granted(&self, repo: &RepositoryName) -> Actions {
        self.permissions
            .iter()
            .filter(|p| p.pattern.matches(repo))
            .fold(Actions::NONE, |a, p| a.union(p.actions))
    }
}

/// Whether `claims` grant `action` on `repo`.
///
/// # Errors
///
/// [`Denied`] when no permission covers it.
pub fn authorize(claims: &Claims, repo: &RepositoryName, action: Action) -> Result<(), Denied> {
    if claims.granted(repo).contains(action) {
        Ok(())
    } else {
        Err(Denied {
            repository: repo.clone(),
            action,
        })
    }
}

/// One entry of the Docker `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccessEntry {
    /// `repository`, `registry`, ...
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The resource name (for repositories: a name or, for Kiln's own
    /// verifier, a pattern).
    pub name: String,
    /// Action names.
    pub actions: Vec<String>,
}

/// The claims as they travel: both formats, every field optional, so one
/// decoder reads both and the checks happen in one place.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct WireClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sub: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_list",
        default
    )]
    pub(crate) aud: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) nbf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) access: Option<Vec<AccessEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) build_id: Option<String>,
    /// Legacy: the repositories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) repos: Option<Vec<String>>,
    /// Legacy: `push` or `pull` for all of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scope: Option<String>,
}

/// The registry accepts `aud` only as a single string; readers accept both.
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

impl WireClaims {
    /// Checks shape and converts (time, issuer and audience checks happen
    /// in the verifier before this).
    pub(crate) fn into_claims(self) -> Result<Claims, Error> {
        let malformed = |m: &str| Error::Malformed(m.to_owned());
        let legacy = self.repos.is_some() || self.scope.is_some();
        if legacy && self.access.is_some() {
            return Err(malformed("both access and legacy repos/scope claims"));
        }
        let (permissions, other_access, format) = if legacy {
            let (Some(repos), Some(scope)) = (self.repos, self.scope) else {
                return Err(malformed("legacy token needs both repos and scope"));
            };
            let actions = match scope.as_str() {
                "push" => Actions::NONE.with(Action::Push),
                "pull" => Actions::NONE.with(Action::Pull),
                _ => return Err(malformed("legacy scope must be push or pull")),
            };
            let permissions = repos
                .iter()
                .map(|r| {
                    Ok(Permission::new(
                        RepositoryPattern::Exact(r.parse()?),
                        actions,
                    ))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            (permissions, Vec::new(), TokenFormat::Legacy)
        } else {
            let mut permissions = Vec::new();
            let mut other = Vec::new();
            for entry in self.access.unwrap_or_default() {
                if entry.resource_type == "repository" {
                    let actions = Actions::from_wire(entry.actions.iter().map(String::as_str))?;
                    permissions.push(Permission::new(entry.name.parse()?, actions));
                } else {
                    other.push(entry);
                }
            }
            (permissions, other, TokenFormat::Docker)
        };
        Ok(Claims {
            issuer: self.iss.ok_or_else(|| malformed("missing iss"))?,
            subject: self.sub,
            audience: self.aud.unwrap_or_default(),
            expires_at: self.exp.ok_or(Error::Expired)?,
            not_before: self.nbf,
            issued_at: self.iat,
            token_id: self.jti,
            build_id: self.build_id,
            permissions,
            other_access,
            format,
        })
    }
}

impl From<&Permission> for AccessEntry {
    fn from(p: &Permission) -> Self {
        Self {
            resource_type: "repository".to_owned(),
            name: p.pattern.to_string(),
            actions: p.actions.iter().map(|a| a.as_str().to_owned()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(json: &str) -> Result<Claims, Error> {
        serde_json::from_str::<WireClaims>(json)
            .map_err(|e| Error::Malformed(e.to_string()))?
            .into_claims()
    }

    #[test]
    fn docker_format() {
        let c = wire(r#"{"iss":"i","aud":"svc","exp":10,"access":[{"type":"repository","name":"cache/global/*","actions":["pull"]},{"type":"repository","name":"builds/7","actions":["push"]},{"type":"registry","name":"catalog","actions":["*"]}]}"#).unwrap();
        assert_eq!(c.format, TokenFormat::Docker);
        assert_eq!(c.audience, ["svc"]);
        let r = |s: &str| s.parse::<RepositoryName>().unwrap();
        assert!(c.authorize(&r("cache/global/node"), Action::Pull).is_ok());
        assert!(c.authorize(&r("cache/global/node"), Action::Push).is_err());
        assert!(c.authorize(&r("builds/7"), Action::Pull).is_ok());
        assert_eq!(
            c.authorize(&r("builds/8"), Action::Pull)
                .unwrap_err()
                .to_string(),
            "pull on builds/8 not granted"
        );
        assert_eq!(c.other_access.len(), 1);
    }

    #[test]
    fn legacy_format_maps_onto_permissions() {
        let c = wire(r#"{"iss":"i","sub":"builder-42","exp":10,"iat":1,"build_id":"42","repos":["builds/42","cache/t"],"scope":"push"}"#).unwrap();
        assert_eq!(c.format, TokenFormat::Legacy);
        let r = |s: &str| s.parse::<RepositoryName>().unwrap();
        assert!(c.authorize(&r("cache/t"), Action::Pull).is_ok());
        assert!(c.authorize(&r("cache/t"), Action::Push).is_ok());
        assert!(c.authorize(&r("cache/t"), Action::Delete).is_err());
        assert!(wire(r#"{"iss":"i","exp":1,"repos":["a"],"scope":"admin"}"#).is_err());
        assert!(wire(r#"{"iss":"i","exp":1,"repos":["a"]}"#).is_err());
        assert!(wire(r#"{"iss":"i","exp":1,"repos":["A"],"scope":"pull"}"#).is_err());
    }

    #[test]
    fn missing_exp_is_expired() {
        assert_eq!(
            wire(r#"{"iss":"i","access":[]}"#).unwrap_err(),
            Error::Expired
        );
    }

    #[test]
    fn permission_strings() {
        let p: Permission = "cache/global/*:pull,push".parse().unwrap();
        assert_eq!(p.to_string(), "cache/global/*:pull,push");
        assert!("cache/global".parse::<Permission>().is_err());
    }
}
