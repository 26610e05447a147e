//! Registry credentials: given directly, or found as Docker's client finds
//! them in `config.json` (inline `auths`, a per-registry `credHelpers`
//! entry, or the `credsStore` default, run as `docker-credential-NAME get`).

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::Error;

/// Username and password (or identity token) for one registry.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::HashMap<String, Entry>,
    #[serde(default)]
    cred_helpers: std::collections::HashMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

impl Credentials {
    /// Credentials for basic auth and token requests.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password (or token).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The credentials Docker's `config.json` gives `registry`: where
    /// [`CredentialSource::from_docker_config`] says they are, fetched
    /// (running the credential helper if it names one).
    ///
    /// # Errors
    ///
    /// [`Error::Auth`] when the file is not valid JSON, an `auth` entry is
    /// malformed, or a helper cannot run or answers garbage. `Ok(None)`
    /// when nothing names the registry (or its helper knows nothing).
    pub fn from_docker_config(json: &str, registry: &str) -> Result<Option<Self>, Error> {
        CredentialSource::from_docker_config(json, registry)?.fetch()
    }
}

/// Where Docker's `config.json` keeps a registry's credentials.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CredentialSource {
    /// Nowhere: anonymous.
    None,
    /// In the file itself.
    Inline(Credentials),
    /// With the credential helper `docker-credential-{name}`.
    Helper {
        /// The helper's name.
        name: String,
        /// The server it is asked about.
        server: String,
        /// The registry, for error messages.
        registry: String,
    },
}

impl CredentialSource {
    /// Looks `registry` up as the Docker client does (nothing is run): the
    /// registry's `credHelpers` entry, else the `credsStore` default
    /// (either alone: what the helper does not know is unknown), else an
    /// inline `auths` entry (`auth` = base64 `user:password`, or
    /// `username`/`password`). Docker Hub is also looked up under its
    /// legacy `https://index.docker.io/v1/` key.
    ///
    /// # Errors
    ///
    /// [`Error::Auth`] for invalid JSON, a malformed `auth` entry or a
    /// helper name that is not one.
    pub fn from_docker_config(json: &str, registry: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::Auth {
            registry: registry.to_owned(),
            reason,
        };
        let config: DockerConfig =
            serde_json::from_str(json).map_err(|e| bad(format!("docker config: {e}")))?;
        let legacy = (registry == "docker.io").then_some("https://index.docker.io/v1/");
        let keys: Vec<String> = [
            registry.to_owned(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
        .into_iter()
        .chain(legacy.map(str::to_owned))
        .collect();
        let helper = keys
            .iter()
            .find_map(|k| config.cred_helpers.get(k))
            .or(config.creds_store.as_ref())
            .filter(|name| !name.is_empty());
        if let Some(name) = helper {
            let valid = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                return Err(bad(format!(
                    "credential helper {name:?} is not a helper name"
                )));
            }
            return Ok(Self::Helper {
                name: name.clone(),
                server: legacy.unwrap_or(registry).to_owned(),
                registry: registry.to_owned(),
            });
        }
        let Some(entry) = keys.iter().find_map(|k| config.auths.get(k)) else {
            return Ok(Self::None);
        };
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| bad(format!("docker config auth: {e}")))?;
            let text = String::from_utf8(decoded).map_err(|e| bad(e.to_string()))?;
            let (user, password) = text
                .split_once(':')
                .ok_or_else(|| bad("docker config auth is not user:password".into()))?;
            return Ok(Self::Inline(Credentials::new(user, password)));
        }
        Ok(match (&entry.username, &entry.password) {
            (Some(u), Some(p)) => Self::Inline(Credentials::new(u, p)),
            _ => Self::None,
        })
    }

    /// The credentials: as they are, or from the helper, run as
    /// `docker-credential-NAME get` with the server on stdin (the
    /// docker-credential-helpers protocol; "credentials not found" is
    /// none). Identity tokens (the user `<token>`) are refused: the OAuth
    /// refresh flow they need is not implemented.
    ///
    /// # Errors
    ///
    /// [`Error::Auth`] when the helper cannot run or answers garbage.
    pub fn fetch(self) -> Result<Option<Credentials>, Error> {
        match self {
            Self::None => Ok(None),
            Self::Inline(c) => Ok(Some(c)),
            Self::Helper {
                name,
                server,
                registry,
            } => from_helper(&name, &server, &registry),
        }
    }
}

/// Runs `docker-credential-{helper} get` for `server_url`.
fn from_helper(
    helper: &str,
    server_url: &str,
    registry: &str,
) -> Result<Option<Credentials>, Error> {
    let bad = |reason: String| Error::Auth {
        registry: registry.to_owned(),
        reason: format!("credential helper docker-credential-{helper}: {reason}"),
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| bad(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server_url.as_bytes())
            .map_err(|e| bad(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| bad(e.to_string()))?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // The protocol's answer for "no entry" (Docker treats it as none).
        if message.contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(bad(format!("{} {message} {stderr}", out.status)));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        username: String,
        secret: String,
    }
    let answer: Answer =
        serde_json::from_slice(&out.stdout).map_err(|e| bad(format!("answer: {e}")))?;
    if answer.username == "<token>" {
        return Err(bad(
            "an identity token (OAuth refresh token) is not supported; use a password or access token".into(),
        ));
    }
    Ok(Some(Credentials::new(answer.username, answer.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_credentials() {
        let json = r#"{"auths": {"127.0.0.1:5000": {"auth": "a2lsbjpzM2NyZXQ="}, "https://index.docker.io/v1/": {"username": "u", "password": "p"}}}"#;
        let c = Credentials::from_docker_config(json, "127.0.0.1:5000")
            .unwrap()
            .unwrap();
        assert_eq!((c.user(), c.password()), ("kiln", "s3cret"));
        let hub = Credentials::from_docker_config(json, "docker.io")
            .unwrap()
            .unwrap();
        assert_eq!(hub.user(), "u");
        assert!(
            Credentials::from_docker_config(json, "other:1")
                .unwrap()
                .is_none()
        );
        assert!(Credentials::from_docker_config("{", "x").is_err());
        assert!(format!("{c:?}").contains("redacted"));
    }

    #[test]
    fn a_credential_store_takes_precedence_over_inline_auths() {
        // The store is consulted (and here cannot run) even though an
        // inline entry exists, as in Docker; an empty store name is none.
        let json = r#"{"auths": {"r:1": {"auth": "a2lsbjpzM2NyZXQ="}}, "credsStore": "kiln-no-such-helper"}"#;
        let err = Credentials::from_docker_config(json, "r:1").unwrap_err();
        assert!(
            err.to_string()
                .contains("docker-credential-kiln-no-such-helper"),
            "{err}"
        );
        let json = r#"{"auths": {"r:1": {"auth": "a2lsbjpzM2NyZXQ="}}, "credsStore": ""}"#;
        let c = Credentials::from_docker_config(json, "r:1")
            .unwrap()
            .unwrap();
        assert_eq!(c.user(), "kiln");
    }

    #[test]
    fn helper_names_cannot_smuggle_paths() {
        let json = r#"{"credHelpers": {"r:1": "../../bin/sh"}}"#;
        let err = CredentialSource::from_docker_config(json, "r:1").unwrap_err();
        assert!(err.to_string().contains("not a helper name"), "{err}");
        let json = r#"{"credHelpers": {"r:1": "ecr-login"}}"#;
        assert!(matches!(
            CredentialSource::from_docker_config(json, "r:1").unwrap(),
            CredentialSource::Helper { name, .. } if name == "ecr-login"
        ));
    }
}
