//! A registry client: the distribution API calls a copy needs, with the
//! Bearer token flow (tokens cached per repository scope), basic auth,
//! plain HTTP per registry, and retries with backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kiln_registry_token::Challenge;
use reqwest::header::{CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::{Credentials, Error};

/// Manifest media types a copy accepts.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The OCI index media type.
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Whether a manifest media type is an index or a Docker manifest list.
pub(crate) fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// The largest manifest read (manifests are small; this bounds memory).
pub(crate) const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// The largest token endpoint answer read.
const MAX_TOKEN_RESPONSE: usize = 1024 * 1024;

/// How to reach one registry.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Host with port.
    pub host: String,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// Credentials, if any.
    pub credentials: Option<Credentials>,
    /// Attempts per request for connection errors, 5xx and 429.
    pub attempts: u32,
    /// Retry 429 (honouring `Retry-After`) instead of failing fast.
    pub retry_rate_limited: bool,
    /// Extra trusted CA certificates (PEM), for registries with a private CA.
    pub ca_certificates: Vec<Vec<u8>>,
}

impl RegistryConfig {
    /// HTTPS, anonymous, 4 attempts, 429 retried.
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            insecure: false,
            credentials: None,
            attempts: 4,
            retry_rate_limited: true,
            ca_certificates: Vec::new(),
        }
    }
}

/// A client for one registry.
#[derive(Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    config: RegistryConfig,
    /// `scheme://endpoint/`, what every path is resolved against and the
    /// only origin credentials are sent to.
    base: reqwest::Url,
    /// Bearer tokens by scope string.
    tokens: Mutex<HashMap<String, String>>,
    /// Whether the registry asked for basic auth.
    basic: Mutex<bool>,
}

/// A fetched manifest: its exact bytes, media type and digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The bytes as served (copied byte for byte).
    pub bytes: Vec<u8>,
    /// `Content-Type` (or the JSON `mediaType`).
    pub media_type: String,
    /// `sha256:` of the bytes.
    pub digest: String,
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn scope(repository: &str, push: bool) -> String {
    if push {
        format!("repository:{repository}:pull,push")
    } else {
        format!("repository:{repository}:pull")
    }
}

impl RegistryClient {
    /// A client (sharing nothing with others; use one per registry).
    ///
    /// # Errors
    ///
    /// When the TLS client cannot be built.
    pub fn new(config: RegistryConfig) -> Result<Self, Error> {
        // reqwest is built without a default TLS provider: use ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .connect_timeout(Duration::from_secs(30))
            // A peer that stops sending mid-body; the whole copy has its
            // own deadline.
            .read_timeout(Duration::from_secs(120))
            .redirect(redirect_policy());
        for pem in &config.ca_certificates {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(Error::Client)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(Error::Client)?;
        let scheme = if config.insecure { "http" } else { "https" };
        // Docker Hub's name is not where its API is (as in the Docker
        // client and containerd); credentials still go by the name.
        let endpoint = match config.host.as_str() {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            host => host,
        };
        let base = reqwest::Url::parse(&format!("{scheme}://{endpoint}/"))
            .ok()
            .filter(|u| u.path() == "/" && u.query().is_none() && u.username().is_empty())
            .ok_or_else(|| Error::InvalidLocation {
                input: config.host.clone(),
                reason: "not a registry host[:port]".into(),
            })?;
        Ok(Self {
            base,
            http,
            config,
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(false),
        })
    }

    /// The registry host.
    pub fn host(&self) -> &str {
        &self.config.host
    }

    /// The next page a paginated answer names in its `Link` header
    /// (`<URL>; rel="next"`), as a path on this registry. A link to
    /// another host is refused: following it would hand this registry's
    /// credentials to whoever the answer names.
    pub(crate) fn next_page(&self, headers: &HeaderMap) -> Result<Option<String>, Error> {
        for value in headers.get_all(reqwest::header::LINK) {
            let Ok(value) = value.to_str() else { continue };
            for link in value.split(',') {
                let Some((target, params)) = link.trim().split_once(';') else {
                    continue;
                };
                let next = params.split(';').any(|p| {
                    p.trim()
                        .strip_prefix("rel=")
                        .is_some_and(|r| r.trim_matches('"') == "next")
                });
                let target = target
                    .trim()
                    .strip_prefix('<')
                    .and_then(|t| t.strip_suffix('>'));
                let Some(target) = target.filter(|_| next) else {
                    continue;
                };
                let url = self.url(target);
                if !self.same_origin(&url) {
                    return Err(Error::Protocol {
                        url: target.to_owned(),
                        reason: format!("next page is not on {}", self.config.host),
                    });
                }
                return Ok(Some(url));
            }
        }
        Ok(None)
    }

    /// `path` (or a URL, relative or absolute, as in a `Location` header)
    /// resolved against the registry (unchanged when it cannot be: the
    /// request then fails on it).
    pub(crate) fn url(&self, path: &str) -> String {
        self.base
            .join(path)
            .map_or_else(|_| path.to_owned(), String::from)
    }

    /// Whether `url` is on the registry itself (scheme, host and port):
    /// only then does a request carry its credentials or tokens.
    pub(crate) fn same_origin(&self, url: &str) -> bool {
        reqwest::Url::parse(url).is_ok_and(|u| u.origin() == self.base.origin())
    }

    /// Adds the cached token for `scope` (or basic auth) when `url` is on
    /// the registry; returns the request and the token it carries.
    fn authorize(
        &self,
        req: RequestBuilder,
        url: &str,
        scope: &str,
    ) -> (RequestBuilder, Option<String>) {
        if !self.same_origin(url) {
            return (req, None);
        }
        if let Some(token) = self.tokens.lock().ok().and_then(|t| t.get(scope).cloned()) {
            return (req.bearer_auth(&token), Some(token));
        }
        let basic = self.basic.lock().is_ok_and(|b| *b);
        match (&self.config.credentials, basic) {
            (Some(c), true) => (req.basic_auth(c.user(), Some(c.password())), None),
            _ => (req, None),
        }
    }

    /// Reacts to a 401 of a request that carried `sent`: fetches a token
    /// for `scope` (or switches to basic auth). Returns whether a retry can
    /// succeed: never for a 401 from elsewhere (after a redirect), which
    /// this registry's credentials must not answer.
    async fn authenticate(
        &self,
        resp: &Response,
        scope: &str,
        sent: Option<&str>,
    ) -> Result<bool, Error> {
        if !self.same_origin(resp.url().as_str()) {
            return Ok(false);
        }
        let auth_err = |reason: String| Error::Auth {
            registry: self.config.host.clone(),
            reason,
        };
        let Some(value) = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
        else {
            return Err(auth_err("401 without WWW-Authenticate".into()));
        };
        if value.trim_start().to_ascii_lowercase().starts_with("basic") {
            if self.config.credentials.is_none() {
                return Err(auth_err(
                    "basic auth required and no credentials given".into(),
                ));
            }
            let mut basic = self.basic.lock().map_err(|_| auth_err("lock".into()))?;
            if *basic {
                return Err(auth_err("credentials refused".into()));
            }
            *basic = true;
            return Ok(true);
        }
        let challenge: Challenge = value
            .parse()
            .map_err(|e| auth_err(format!("challenge {value:?}: {e}")))?;
        // Credentials go to the realm: never in the clear unless this
        // registry itself is plain HTTP.
        if !self.config.insecure && !challenge.realm.starts_with("https://") {
            return Err(auth_err(format!(
                "token realm {:?} is not HTTPS",
                challenge.realm
            )));
        }
        let mut req = self.http.get(&challenge.realm);
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &challenge.service {
            query.push(("service", s.clone()));
        }
        query.push(("scope", scope.to_owned()));
        req = req.query(&query);
        if let Some(c) = &self.config.credentials {
            req = req.basic_auth(c.user(), Some(c.password()));
        }
        let resp = req.send().await.map_err(|source| Error::Request {
            operation: "token request",
            url: challenge.realm.clone(),
            source,
        })?;
        if !resp.status().is_success() {
            return Err(auth_err(format!(
                "token endpoint answered {}",
                resp.status()
            )));
        }
        let body = read_limited(resp, MAX_TOKEN_RESPONSE, &challenge.realm).await?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| auth_err(format!("token response: {e}")))?;
        let token = body
            .token
            .or(body.access_token)
            .ok_or_else(|| auth_err("token response without token".into()))?;
        let fresh = token.clone();
        self.tokens
            .lock()
            .map_err(|_| auth_err("lock".into()))?
            .insert(scope.to_owned(), token);
        // Retry with a token other than the refused one (another task may
        // have fetched the same one meanwhile: that is fine); the same token
        // refused again would only loop.
        Ok(sent != Some(fresh.as_str()))
    }

    /// Sends a bodiless request with auth and retries; returns the response
    /// whatever its status (after auth).
    pub(crate) async fn send(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        repository: &str,
        push: bool,
        headers: &[(&'static str, String)],
    ) -> Result<Response, Error> {
        let scope = scope(repository, push);
        let url = self.url(path);
        let mut attempt = 0;
        let mut authenticated = false;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), &url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let (req, sent) = self.authorize(req, &url, &scope);
            let result = req.send().await;
            let retry_after = match &result {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !authenticated => {
                    authenticated = true;
                    if self.authenticate(resp, &scope, sent.as_deref()).await? {
                        continue;
                    }
                    return result.map_err(|source| Error::Request {
                        operation,
                        url,
                        source,
                    });
                }
                Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => {
                    if !self.config.retry_rate_limited {
                        return result.map_err(|source| Error::Request {
                            operation,
                            url,
                            source,
                        });
                    }
                    retry_after(resp.headers())
                }
                Ok(resp) if resp.status().is_server_error() => retry_after(resp.headers()),
                Ok(_) => {
                    return result.map_err(|source| Error::Request {
                        operation,
                        url,
                        source,
                    });
                }
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => None,
                Err(_) => {
                    return result.map_err(|source| Error::Request {
                        operation,
                        url,
                        source,
                    });
                }
            };
            if attempt >= self.config.attempts {
                return result.map_err(|source| Error::Request {
                    operation,
                    url,
                    source,
                });
            }
            tokio::time::sleep(retry_after.unwrap_or_else(|| backoff(attempt))).await;
        }
    }

    /// `GET /v2/` with the credentials for pushing to `repository`
    /// (fetching its token if the registry asks for one).
    pub(crate) async fn ping(&self, repository: &str) -> Result<(), Error> {
        let resp = self
            .send("ping", Method::GET, "/v2/", repository, true, &[])
            .await?;
        // Some registries answer /v2/ with 401/404 even to a good client;
        // the requests that matter say what is wrong with more precision.
        if resp.status().is_server_error() {
            check(resp, "ping", &self.url("/v2/")).await?;
        }
        Ok(())
    }

    /// GET a manifest by tag or digest.
    ///
    /// # Errors
    ///
    /// Transport, status, size, and (by digest) digest mismatch.
    pub async fn get_manifest(&self, repository: &str, reference: &str) -> Result<Manifest, Error> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let resp = self
            .send(
                "get manifest",
                Method::GET,
                &path,
                repository,
                false,
                &[("Accept", MANIFEST_ACCEPT.to_owned())],
            )
            .await?;
        let resp = check(resp, "get manifest", &self.url(&path)).await?;
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let bytes = read_limited(resp, MAX_MANIFEST, &self.url(&path)).await?;
        let digest = sha256_digest(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(Error::DigestMismatch {
                what: "manifest",
                expected: reference.to_owned(),
                actual: digest,
                size: bytes.len() as u64,
            });
        }
        let media_type = match media_type {
            Some(m) if m != "application/json" && m != "text/plain" => m,
            // A registry that does not say: the document's own mediaType,
            // else what its fields make it.
            _ => {
                let doc = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default();
                match doc["mediaType"].as_str() {
                    Some(declared) => declared.to_owned(),
                    None if doc.get("manifests").is_some() => OCI_INDEX.to_owned(),
                    None => "application/vnd.oci.image.manifest.v1+json".to_owned(),
                }
            }
        };
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Whether a manifest exists (by digest or tag) and its digest.
    pub(crate) async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>, Error> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let resp = self
            .send(
                "head manifest",
                Method::HEAD,
                &path,
                repository,
                false,
                &[("Accept", MANIFEST_ACCEPT.to_owned())],
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = check(resp, "head manifest", &self.url(&path)).await?;
        Ok(resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    /// PUT a manifest (exact bytes) under a tag or digest.
    ///
    /// # Errors
    ///
    /// Transport or status errors.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<(), Error> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let url = self.url(&path);
        let scope = scope(repository, true);
        for _ in 0..2 {
            let req = self
                .http
                .put(&url)
                .header(CONTENT_TYPE, &manifest.media_type)
                .body(manifest.bytes.clone());
            let (req, sent) = self.authorize(req, &url, &scope);
            let resp = req.send().await.map_err(|source| Error::Request {
                operation: "put manifest",
                url: url.clone(),
                source,
            })?;
            if resp.status() == StatusCode::UNAUTHORIZED
                && self.authenticate(&resp, &scope, sent.as_deref()).await?
            {
                continue;
            }
            check(resp, "put manifest", &url).await?;
            return Ok(());
        }
        Err(Error::Auth {
            registry: self.config.host.clone(),
            reason: "push refused".into(),
        })
    }

    /// Whether the blob exists (HEAD).
    pub(crate) async fn has_blob(&self, repository: &str, digest: &str) -> Result<bool, Error> {
        let path = format!("/v2/{repository}/blobs/{digest}");
        let resp = self
            .send("head blob", Method::HEAD, &path, repository, true, &[])
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => check(resp, "head blob", &self.url(&path))
                .await
                .map(|_| false),
        }
    }

    /// Attempts per request (and per blob transfer).
    pub(crate) fn attempts(&self) -> u32 {
        self.config.attempts
    }

    /// Whether 429 answers are retried.
    pub(crate) fn retries_rate_limited(&self) -> bool {
        self.config.retry_rate_limited
    }

    /// [`check`] for a push whose body cannot be replayed: a 401 refreshes
    /// the token (so that a retry of the whole transfer can succeed) and
    /// is returned as the status error it is.
    pub(crate) async fn check_push(
        &self,
        resp: Response,
        repository: &str,
        operation: &'static str,
        url: &str,
    ) -> Result<Response, Error> {
        if resp.status() == StatusCode::UNAUTHORIZED {
            let _ = self
                .authenticate(&resp, &scope(repository, true), None)
                .await;
        }
        check(resp, operation, url).await
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request (one with a body: no retries here) to `url`, with
    /// the registry's credentials when `url` is on the registry.
    pub(crate) async fn execute(
        &self,
        req: RequestBuilder,
        url: &str,
        repository: &str,
        push: bool,
    ) -> Result<Response, reqwest::Error> {
        self.authorize(req, url, &scope(repository, push))
            .0
            .send()
            .await
    }
}

pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 200u64 << attempt.min(6);
    // Jitter from the clock's nanoseconds: good enough to spread retries.
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    ) % (base / 2 + 1);
    Duration::from_millis(base + jitter)
}

pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get("Retry-After")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

/// Redirects (registries send blob GETs to CDNs) are followed at most 10
/// times and never from HTTPS to plain HTTP; reqwest drops credentials
/// when one leaves the host.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else if downgrade {
            attempt.error("redirect from HTTPS to plain HTTP")
        } else {
            attempt.follow()
        }
    })
}

/// Turns a non-success response into [`Error::Status`].
pub(crate) async fn check(
    resp: Response,
    operation: &'static str,
    url: &str,
) -> Result<Response, Error> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let body = read_prefix(resp, 4096).await;
    Err(Error::Status {
        operation,
        url: url.to_owned(),
        status,
        body: String::from_utf8_lossy(&body).chars().take(300).collect(),
    })
}

/// At most the first `max` bytes of a body (an error answer's start, for
/// the message); the rest is never read.
async fn read_prefix(mut resp: Response, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(max - out.len())]),
            _ => break,
        }
    }
    out
}

/// A whole body of at most `max` bytes.
pub(crate) async fn read_limited(
    mut resp: Response,
    max: usize,
    url: &str,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|source| Error::Request {
        operation: "read answer",
        url: url.to_owned(),
        source,
    })? {
        if out.len() + chunk.len() > max {
            return Err(Error::Protocol {
                url: url.to_owned(),
                reason: format!("answer larger than {max} bytes"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, LINK};

    use super::*;

    fn next(link: &[&str]) -> Result<Option<String>, Error> {
        let mut config = RegistryConfig::new("reg.example:5000");
        config.insecure = true;
        let client = RegistryClient::new(config).unwrap();
        let mut headers = HeaderMap::new();
        for l in link {
            headers.append(LINK, HeaderValue::from_str(l).unwrap());
        }
        client.next_page(&headers)
    }

    #[test]
    fn docker_hub_is_reached_at_its_api_host() {
        let hub = RegistryClient::new(RegistryConfig::new("docker.io")).unwrap();
        assert_eq!(
            hub.url("/v2/library/alpine/manifests/3.20"),
            "https://registry-1.docker.io/v2/library/alpine/manifests/3.20"
        );
        assert_eq!(hub.host(), "docker.io");
        let other = RegistryClient::new(RegistryConfig::new("ghcr.io")).unwrap();
        assert_eq!(other.url("/v2/"), "https://ghcr.io/v2/");
    }

    #[test]
    fn locations_resolve_against_the_registry_and_credentials_stay_on_it() {
        let mut config = RegistryConfig::new("reg.example:5000");
        config.insecure = true;
        let client = RegistryClient::new(config).unwrap();
        for (location, url, ours) in [
            (
                "/v2/a/blobs/uploads/1?_state=x",
                "http://reg.example:5000/v2/a/blobs/uploads/1?_state=x",
                true,
            ),
            (
                "v2/a/blobs/uploads/1",
                "http://reg.example:5000/v2/a/blobs/uploads/1",
                true,
            ),
            (
                "http://reg.example:5000/v2/a/x",
                "http://reg.example:5000/v2/a/x",
                true,
            ),
            (
                "https://reg.example:5000/v2/a/x",
                "https://reg.example:5000/v2/a/x",
                false,
            ),
            (
                "http://reg.example:5001/v2/a/x",
                "http://reg.example:5001/v2/a/x",
                false,
            ),
            (
                "//elsewhere.example/v2/a",
                "http://elsewhere.example/v2/a",
                false,
            ),
            (
                "http://reg.example:5000@elsewhere.example/",
                "http://reg.example:5000@elsewhere.example/",
                false,
            ),
        ] {
            assert_eq!(client.url(location), url, "{location}");
            assert_eq!(
                client.same_origin(&client.url(location)),
                ours,
                "{location}"
            );
        }
        for bad in ["h.io/x", "h.io?x", "user@h.io", "h io"] {
            assert!(
                RegistryClient::new(RegistryConfig::new(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn next_pages_stay_on_the_registry() {
        assert_eq!(next(&[]).unwrap(), None);
        assert_eq!(
            next(&[r#"</v2/a/referrers/sha256:1?n=1&last=x>; rel="next""#]).unwrap(),
            Some("http://reg.example:5000/v2/a/referrers/sha256:1?n=1&last=x".into())
        );
        assert_eq!(
            next(&["<http://reg.example:5000/v2/a/tags/list?n=2>;rel=next"]).unwrap(),
            Some("http://reg.example:5000/v2/a/tags/list?n=2".into())
        );
        assert_eq!(
            next(&[r#"</v2/a/x?p=0>; rel="prev", </v2/a/x?p=2>; rel="next""#]).unwrap(),
            Some("http://reg.example:5000/v2/a/x?p=2".into())
        );
        assert_eq!(
            next(&[
                r#"</v2/a/x?p=0>; rel="prev""#,
                r#"</v2/a/x?p=2>; rel="next""#
            ])
            .unwrap(),
            Some("http://reg.example:5000/v2/a/x?p=2".into())
        );
        assert_eq!(next(&[r#"</v2/a/x?p=0>; rel="prev""#]).unwrap(), None);
        for elsewhere in [
            r#"<http://evil.example/v2/a/x>; rel="next""#,
            r#"<http://reg.example:5000.evil.example/v2/a>; rel="next""#,
            r#"<//evil.example/v2/a>; rel="next""#,
            r#"<https://reg.example:5000/v2/a>; rel="next""#,
        ] {
            assert!(next(&[elsewhere]).is_err(), "{elsewhere}");
        }
    }
}
