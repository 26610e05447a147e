//! Base-image mirroring, admin only: `POST /kiln/v1/mirror` copies an
//! upstream image into this registry under its mirrored name
//! (`<mirror_prefix>/<registry component>/<repository>`, the naming the
//! Dockerfile rewrite uses), and `POST /kiln/v1/mirror/dockerfile` mirrors
//! every external image a Dockerfile uses and returns it rewritten to the
//! copies. An image that fails to mirror is left as written and reported;
//! it never fails the request as a whole.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kiln_dockerfile::{Dockerfile, Mirror, ResolveOptions};
use kiln_oci_mirror::{
    CopyOptions, CopyReport, Credentials, ImageLocation, RegistryClient, RegistryConfig, copy,
    mirrored,
};
use serde::Deserialize;

use kiln_registry::Reference;
use kiln_registry::api::HookWork;
use kiln_registry_token::RepositoryName;

use super::auth::Auth;
use super::config::Upstream;
use super::json;

/// How long one image's copy may take.
const COPY_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Most distinct images one Dockerfile request mirrors.
const MAX_IMAGES: usize = 64;

pub(super) struct Mirroring {
    auth: Arc<Auth>,
    /// Where this server is reached from itself (the copies' destination).
    self_host: String,
    /// The registry host clients use, for rewritten Dockerfiles.
    public_host: String,
    prefix: String,
    upstreams: Vec<Upstream>,
    /// Pull-through: when each tag was last checked upstream, and one lock
    /// per reference being fetched (concurrent misses fetch once).
    checked: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    fetching: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    tag_ttl: Duration,
    registry: Arc<kiln_registry::Registry<super::store::Store>>,
}

pub(super) fn router(m: Arc<Mirroring>) -> Router {
    Router::new()
        .route("/kiln/v1/mirror", axum::routing::post(mirror_image))
        .route(
            "/kiln/v1/mirror/dockerfile",
            axum::routing::post(mirror_dockerfile),
        )
        .with_state(m)
}

fn bad_request(message: impl Into<String>, line: Option<usize>) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({"error": message.into(), "line": line}),
    )
}

impl Mirroring {
    pub(super) fn new(
        auth: Arc<Auth>,
        self_host: String,
        public_host: String,
        prefix: String,
        upstreams: Vec<Upstream>,
        tag_ttl: Duration,
        registry: Arc<kiln_registry::Registry<super::store::Store>>,
    ) -> Self {
        Self {
            auth,
            self_host,
            public_host,
            prefix,
            upstreams,
            checked: std::sync::Mutex::new(std::collections::HashMap::new()),
            fetching: std::sync::Mutex::new(std::collections::HashMap::new()),
            tag_ttl,
            registry,
        }
    }

    /// Pull-through: the upstream image a manifest read of `repo` and
    /// `reference` stands for, when `repo` is `<prefix>/<registry>/<path>`
    /// of an upstream configured for it.
    fn pull_through_source(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Option<ImageLocation> {
        let rest = repo
            .as_str()
            .strip_prefix(&self.prefix)?
            .strip_prefix('/')?;
        let (component, path) = rest.split_once('/')?;
        let registry = kiln_dockerfile::registry_from_component(component)?;
        self.upstreams
            .iter()
            .find(|u| u.pull_through && u.registry == registry)?;
        let sep = if matches!(reference, Reference::Digest(_)) {
            '@'
        } else {
            ':'
        };
        format!("{registry}/{path}{sep}{reference}").parse().ok()
    }

    /// Work before a manifest read: fetch a missing reference, or a tag not
    /// checked upstream within the TTL, from a pull-through upstream. A
    /// failed check of a stale tag serves what is stored.
    pub(super) fn before_read(
        self: &Arc<Self>,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Option<HookWork> {
        let source = self.pull_through_source(repo, reference)?;
        let key = format!("{repo}:{reference}");
        if self.checked_recently(&key) {
            return None;
        }
        let (this, repo, reference) = (self.clone(), repo.clone(), reference.clone());
        Some(Box::pin(async move {
            let lock = this
                .fetching
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key.clone())
                .or_default()
                .clone();
            let held = lock.lock().await;
            this.refresh(&key, &repo, &reference, &source).await;
            drop(held);
            this.fetching
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }))
    }

    fn source_config(&self, registry: &str) -> RegistryConfig {
        let mut c = RegistryConfig::new(registry);
        if let Some(u) = self.upstreams.iter().find(|u| u.registry == registry) {
            c.insecure = u.insecure;
            if let (Some(user), Some(password)) = (&u.username, u.password()) {
                c.credentials = Some(Credentials::new(user.clone(), password));
            }
        }
        c
    }

    /// Whether the tag `key` was checked upstream within the TTL.
    fn checked_recently(&self, key: &str) -> bool {
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .is_some_and(|t| t.elapsed() < self.tag_ttl)
    }

    /// Fetches `source` as `repo`/`reference` unless another request just
    /// did, or it is a stored digest (content addressed: never stale).
    async fn refresh(
        &self,
        key: &str,
        repo: &RepositoryName,
        reference: &Reference,
        source: &ImageLocation,
    ) {
        // Another request may have fetched it while this one waited.
        if self.checked_recently(key) {
            return;
        }
        let stored = self.registry.manifest_info(repo, reference).await.is_ok();
        if stored && matches!(reference, Reference::Digest(_)) {
            return;
        }
        let target = match reference {
            Reference::Tag(t) => format!("{}/{repo}:{t}", self.self_host),
            _ => format!("{}/{repo}", self.self_host),
        };
        let Ok(target) = target.parse::<ImageLocation>() else {
            return;
        };
        match self.copy(source, &target).await {
            Ok(report) => {
                tracing::info!(%source, digest = %report.digest, "pulled through");
                if matches!(reference, Reference::Tag(_)) {
                    self.checked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key.to_owned(), std::time::Instant::now());
                }
            }
            Err(e) if stored => {
                tracing::warn!(%source, error = %e, "upstream check failed: serving the stored copy")
            }
            Err(e) => tracing::warn!(%source, error = %e, "pull-through failed"),
        }
    }

    /// Copies `source` to `target` in this registry.
    async fn copy(
        &self,
        source: &ImageLocation,
        target: &ImageLocation,
    ) -> Result<CopyReport, String> {
        let src = RegistryClient::new(self.source_config(source.registry()))
            .map_err(|e| e.to_string())?;
        let mut dst = RegistryConfig::new(&self.self_host);
        dst.insecure = true;
        let (user, password) = self.auth.internal_credentials();
        dst.credentials = Some(Credentials::new(user, password));
        let dst = RegistryClient::new(dst).map_err(|e| e.to_string())?;
        let options = CopyOptions {
            deadline: Some(COPY_DEADLINE),
            ..CopyOptions::default()
        };
        let (source, target) = (source.clone(), target.clone());
        // The copy's future is not `Send` for every lifetime the handler
        // needs: it runs on a blocking thread of its own.
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            handle.block_on(copy(&src, &source, &dst, &target, &options))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{e:#}"))
    }

    /// Copies the upstream image `reference` to its mirrored name here (an
    /// admin build's bases): the copied digest, or why it failed.
    pub(super) async fn mirror_reference(&self, reference: &str) -> Result<String, String> {
        let source: ImageLocation = reference
            .parse()
            .map_err(|e: kiln_oci_mirror::Error| e.to_string())?;
        let target = self.target_of(&source).map_err(|e| e.to_string())?;
        Ok(self.copy(&source, &target).await?.digest)
    }

    /// The default destination of `source` in this registry.
    fn target_of(&self, source: &ImageLocation) -> Result<ImageLocation, kiln_oci_mirror::Error> {
        mirrored(source, &format!("{}/{}", self.self_host, self.prefix))
    }

    fn public_name(&self, target: &ImageLocation) -> String {
        let local = target.to_string();
        let path = local
            .strip_prefix(&format!("{}/", self.self_host))
            .unwrap_or(&local);
        format!("{}/{path}", self.public_host)
    }
}

/// The admin's JSON request: the request, or the response refusing it
/// (401/403 for anyone else, 400 for a body that is not the request).
fn admin_request<T: serde::de::DeserializeOwned>(
    m: &Mirroring,
    headers: &HeaderMap,
    peer: SocketAddr,
    body: &[u8],
) -> Result<T, Box<Response>> {
    m.auth
        .require_admin(headers, Some(peer.ip()))
        .map_err(|e| Box::new(super::auth::basic_refusal(&e)))?;
    serde_json::from_slice(body)
        .map_err(|e| Box::new(bad_request(format!("invalid request: {e}"), None)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorRequest {
    source: String,
    #[serde(default)]
    target: Option<String>,
}

async fn mirror_image(
    State(m): State<Arc<Mirroring>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req: MirrorRequest = match admin_request(&m, &headers, peer, &body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let source: ImageLocation = match req.source.parse() {
        Ok(s) => s,
        Err(e) => return bad_request(e.to_string(), None),
    };
    let target = match &req.target {
        Some(t) => format!("{}/{t}", m.self_host).parse(),
        None => m.target_of(&source),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return bad_request(e.to_string(), None),
    };
    tracing::info!(%source, %target, "mirroring");
    match m.copy(&source, &target).await {
        Ok(report) => json(
            StatusCode::OK,
            &serde_json::json!({
                "source": source.to_string(),
                "target": m.public_name(&target),
                "digest": report.digest,
                "manifests": report.manifests,
                "blobs_copied": report.blobs_copied,
                "blobs_skipped": report.blobs_skipped,
                "bytes_copied": report.bytes_copied,
            }),
        ),
        Err(e) => {
            tracing::warn!(%source, error = %e, "mirroring failed");
            json(
                StatusCode::BAD_GATEWAY,
                &serde_json::json!({"source": source.to_string(), "error": format!("{e:#}")}),
            )
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DockerfileRequest {
    dockerfile: String,
    #[serde(default)]
    build_args: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    target: Option<String>,
}

async fn mirror_dockerfile(
    State(m): State<Arc<Mirroring>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req: DockerfileRequest = match admin_request(&m, &headers, peer, &body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let mut opts = ResolveOptions::new();
    for (k, v) in &req.build_args {
        opts = opts.build_arg(k, v);
    }
    if let Some(p) = &req.platform {
        match p.parse() {
            Ok(p) => opts = opts.target_platform(p),
            Err(e) => return bad_request(format!("platform {p:?}: {e}"), None),
        }
    }
    if let Some(t) = &req.target {
        opts = opts.target_stage(t);
    }
    let df = match Dockerfile::parse(&req.dockerfile) {
        Ok(df) => df,
        Err(e) => return bad_request(e.to_string(), e.line()),
    };
    let images = match df.images(&opts) {
        Ok(i) => i,
        Err(e) => return bad_request(e.to_string(), e.line()),
    };
    let mut references: Vec<String> = images.iter().map(|i| i.reference.to_string()).collect();
    references.sort();
    references.dedup();
    if references.len() > MAX_IMAGES {
        return bad_request(format!("more than {MAX_IMAGES} external images"), None);
    }
    let mut results = Vec::new();
    let mut mirrored_ok = BTreeSet::new();
    for reference in &references {
        let outcome = async {
            let source: ImageLocation = reference
                .parse()
                .map_err(|e: kiln_oci_mirror::Error| e.to_string())?;
            let target = m.target_of(&source).map_err(|e| e.to_string())?;
            let report = m.copy(&source, &target).await?;
            Ok::<_, String>((m.public_name(&target), report.digest))
        }
        .await;
        match outcome {
            Ok((target, digest)) => {
                mirrored_ok.insert(reference.clone());
                results.push(serde_json::json!({"reference": reference, "mirrored": target, "digest": digest}));
            }
            Err(error) => {
                tracing::warn!(%reference, %error, "mirroring failed; left as written");
                results.push(serde_json::json!({"reference": reference, "error": error}));
            }
        }
    }
    let mirror: Mirror = match format!("{}/{}", m.public_host, m.prefix).parse() {
        Ok(mi) => mi,
        Err(e) => return bad_request(e.to_string(), None),
    };
    let rewrite = match df.rewrite(&opts, &mirror, |u| {
        mirrored_ok.contains(&u.reference.to_string())
    }) {
        Ok(r) => r,
        Err(e) => return bad_request(e.to_string(), e.line()),
    };
    let skipped: Vec<serde_json::Value> = rewrite
        .skipped
        .iter()
        .map(|s| serde_json::json!({"reference": s.image.reference.to_string(), "line": s.image.line, "reason": format!("{:?}", s.reason)}))
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({"dockerfile": rewrite.text, "images": results, "skipped": skipped}),
    )
}
