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

    /// The credentials Docker's `config.json` gives `registry`, looked up
    /// as the Docker client does: a `credHelpers` entry for the registry,
    /// else an inline `auths` entry (`auth` = base64 `user:password`, or
    /// `username`/`password`), else the `credsStore` helper. Helpers are
    /// run as `docker-credential-NAME get` with the registry on stdin (the
    /// docker-credential-helpers protocol). Docker Hub is also looked up
    /// under its legacy `https://index.docker.io/v1/` key.
    ///
    /// # Errors
    ///
    /// [`Error::Auth`] when the file is not valid JSON, an `auth` entry is
    /// malformed, or a helper cannot run or answers garbage. `Ok(None)`
    /// when nothing names the registry (or its helper knows nothing).
    pub fn from_docker_config(json: &str, registry: &str) -> Result<Option<Self>, Error> {
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
        if let Some(helper) = keys.iter().find_map(|k| config.cred_helpers.get(k)) {
            return from_helper(helper, legacy.unwrap_or(registry), registry);
        }
        if let Some(entry) = keys.iter().find_map(|k| config.auths.get(k)) {
            if let Some(auth) = &entry.auth {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| bad(format!("docker config auth: {e}")))?;
                let text = String::from_utf8(decoded).map_err(|e| bad(e.to_string()))?;
                let (user, password) = text
                    .split_once(':')
                    .ok_or_else(|| bad("docker config auth is not user:password".into()))?;
                return Ok(Some(Self::new(user, password)));
            }
            if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
                return Ok(Some(Self::new(u, p)));
            }
        }
        match &config.creds_store {
            Some(store) => from_helper(store, legacy.unwrap_or(registry), registry),
            None => Ok(None),
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
    if helper.is_empty()
        || !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(bad("not a helper name".into()));
    }
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
    fn helper_names_cannot_smuggle_paths() {
        let json = r#"{"credHelpers": {"r:1": "../../bin/sh"}}"#;
        let err = Credentials::from_docker_config(json, "r:1").unwrap_err();
        assert!(err.to_string().contains("not a helper name"), "{err}");
    }
}
