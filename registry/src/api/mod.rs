//! The OCI Distribution v1.1 HTTP API as an axum [`Router`], over a
//! [`Registry`] and an [`Access`] policy.

mod access;
mod route;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use kiln_registry_token::{Action, RepositoryName};

pub use access::{Access, Denial, Everything, Grant, Need, Open, Request};
pub use route::Route;

use crate::storage::{ByteStream, Storage};
use crate::{Digest, Error, Registry, UploadId};

/// The digest of what a response carries or names.
const DOCKER_CONTENT_DIGEST: header::HeaderName =
    header::HeaderName::from_static("docker-content-digest");

/// A manifest the API just stored.
#[derive(Debug, Clone)]
pub struct ManifestPushed {
    /// Where.
    pub repository: RepositoryName,
    /// The tag or digest it was pushed under.
    pub reference: crate::Reference,
    /// What was stored.
    pub put: crate::PutManifest,
}

/// Work a hook asks the request to finish first.
pub type HookWork = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Called after every stored manifest (e.g. to queue work on it); it must
/// not block, and may return work to finish before the push is
/// acknowledged (e.g. recording the work durably).
pub type OnManifest = Arc<dyn Fn(ManifestPushed) -> Option<HookWork> + Send + Sync>;

/// Called before an authorized manifest GET or HEAD: may return work to
/// finish first (e.g. fetch the manifest from an upstream on a miss, or
/// refresh a stale tag: pull-through). The read then goes ahead as usual.
pub type BeforeManifestRead =
    Arc<dyn Fn(&RepositoryName, &crate::Reference) -> Option<HookWork> + Send + Sync>;

/// Router options.
#[derive(Clone)]
#[non_exhaustive]
pub struct ApiOptions {
    /// Mount a blob a client is about to upload from any repository the
    /// client may pull, when the POST names no `from` (default on).
    pub automatic_mount: bool,
    /// Told of every manifest stored (default none).
    pub on_manifest: Option<OnManifest>,
    /// Asked before every manifest read (default none).
    pub before_manifest_read: Option<BeforeManifestRead>,
    /// Answer an authorized blob GET with `307 Temporary Redirect` to a URL
    /// of the store valid this long, where the store gives one (an object
    /// store with a signer): bytes then flow from the store, not through
    /// the registry. Default none: served here.
    pub redirect_blobs: Option<std::time::Duration>,
}

impl std::fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiOptions")
            .field("automatic_mount", &self.automatic_mount)
            .field("on_manifest", &self.on_manifest.is_some())
            .field("before_manifest_read", &self.before_manifest_read.is_some())
            .field("redirect_blobs", &self.redirect_blobs)
            .finish()
    }
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            automatic_mount: true,
            on_manifest: None,
            before_manifest_read: None,
            redirect_blobs: None,
        }
    }
}

struct Api<S, A> {
    registry: Arc<Registry<S>>,
    access: Arc<A>,
    options: ApiOptions,
}

/// The `/v2/` routes. Serve with
/// `into_make_service_with_connect_info::<SocketAddr>()` so that the
/// [`Access`] learns client addresses.
pub fn router<S: Storage, A: Access>(
    registry: Arc<Registry<S>>,
    access: Arc<A>,
    options: ApiOptions,
) -> Router {
    let api = Arc::new(Api {
        registry,
        access,
        options,
    });
    Router::new()
        .route("/v2", axum::routing::any(dispatch::<S, A>))
        .route("/v2/", axum::routing::any(dispatch::<S, A>))
        .route("/v2/{*path}", axum::routing::any(dispatch::<S, A>))
        .with_state(api)
}

/// An error as the spec's JSON body, with its status.
pub fn error_response(e: &Error) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %e, "request failed");
    }
    let mut r = (status, e.to_json()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn denial_response(d: Denial) -> Response {
    let mut r = error_response(&d.error);
    if let Some(c) = d.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, c);
    }
    r
}

fn query(uri: &axum::http::Uri) -> HashMap<String, String> {
    uri.query()
        .map(form_pairs)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The pairs of a query string or `application/x-www-form-urlencoded`
/// body, decoded, in order (repeated keys kept); undecodable pairs dropped.
pub fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `Content-Range: <start>-<end>` (inclusive; `bytes ` / `bytes=` allowed).
fn content_range(h: &HeaderMap) -> Result<Option<(u64, u64)>, Error> {
    let Some(v) = header_str(h, header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || Error::InvalidUpload(format!("bad Content-Range {v:?}"));
    let v = v.trim();
    let v = v
        .strip_prefix("bytes")
        .map_or(v, |r| r.trim_start_matches([' ', '=']));
    let v = v.split('/').next().unwrap_or(v);
    let (a, b) = v.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    // `b` may be u64::MAX: the length is checked, never wrapped.
    let len = b
        .checked_sub(a)
        .and_then(|d| d.checked_add(1))
        .ok_or_else(bad)?;
    Ok(Some((a, len)))
}

/// A single `Range: bytes=a-b | a- | -n` against a blob of `size` bytes:
/// `Ok(None)` serves the whole blob (no header, or one this server ignores
/// as RFC 9110 allows: several ranges, other units, bad syntax).
fn byte_range(h: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, Error> {
    let Some(v) = header_str(h, header::RANGE) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = Error::RangeNotSatisfiable { size };
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => match n.parse::<u64>() {
            Ok(0) => return Err(unsatisfiable),
            Ok(n) => (size.saturating_sub(n), size),
            Err(_) => return Ok(None),
        },
        (a, "") => match a.parse::<u64>() {
            Ok(a) => (a, size),
            Err(_) => return Ok(None),
        },
        (a, b) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(a), Ok(b)) if b >= a => (a, b.saturating_add(1).min(size)),
            _ => return Ok(None),
        },
    };
    if start >= size {
        return Err(unsatisfiable);
    }
    Ok(Some((start, end)))
}

fn with_headers(
    status: StatusCode,
    body: Body,
    headers: &[(header::HeaderName, String)],
) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(k.clone(), v);
        }
    }
    r
}

fn upload_accepted(repo: &RepositoryName, id: &UploadId, size: u64) -> Response {
    let h = header::HeaderName::from_static;
    with_headers(
        StatusCode::ACCEPTED,
        Body::empty(),
        &[
            (header::LOCATION, format!("/v2/{repo}/blobs/uploads/{id}")),
            (header::RANGE, format!("0-{}", size.saturating_sub(1))),
            (h("docker-upload-uuid"), id.to_string()),
            (header::CONTENT_LENGTH, "0".into()),
        ],
    )
}

fn blob_created(repo: &RepositoryName, d: &Digest) -> Response {
    with_headers(
        StatusCode::CREATED,
        Body::empty(),
        &[
            (header::LOCATION, format!("/v2/{repo}/blobs/{d}")),
            (DOCKER_CONTENT_DIGEST, d.to_string()),
            (header::CONTENT_LENGTH, "0".into()),
        ],
    )
}

fn needs_for(method: &Method, route: &Route, q: &HashMap<String, String>) -> Vec<Need> {
    let on = |r: &RepositoryName, a| Need::Repository(r.clone(), a);
    let write = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    match route {
        Route::Base => vec![Need::Base],
        Route::Catalog => vec![Need::Catalog],
        Route::Tags(r) | Route::Referrers(r, _) => vec![on(r, Action::Pull)],
        Route::Manifest(r, _) | Route::Blob(r, _) if *method == Method::DELETE => {
            vec![on(r, Action::Delete)]
        }
        Route::Manifest(r, _) | Route::Blob(r, _) if write => vec![on(r, Action::Push)],
        Route::Manifest(r, _) | Route::Blob(r, _) => vec![on(r, Action::Pull)],
        Route::UploadStart(r) => {
            let mut needs = vec![on(r, Action::Push)];
            if let Some(from) = q.get("from").and_then(|f| f.parse().ok()) {
                needs.push(Need::Wanted(from, Action::Pull));
            }
            needs
        }
        Route::Upload(r, _) => vec![on(r, Action::Push)],
    }
}

async fn dispatch<S: Storage, A: Access>(
    State(api): State<Arc<Api<S, A>>>,
    req: HttpRequest,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let path = path.strip_prefix("/v2").unwrap_or(path);
    let path = path.strip_prefix('/').unwrap_or(path);
    let mut response = match Route::parse(path) {
        // No manifest has an invalid tag: reading one is a plain 404 (as
        // the conformance suite expects); writing one is a 400.
        Err(Error::InvalidTag(t))
            if matches!(parts.method, Method::GET | Method::HEAD | Method::DELETE) =>
        {
            error_response(&Error::ManifestUnknown(t))
        }
        Err(e) => error_response(&e),
        Ok(route) => {
            let needs = needs_for(&parts.method, &route, &query(&parts.uri));
            let request = Request {
                headers: &parts.headers,
                peer,
            };
            match api.access.authorize(request, &needs) {
                Err(d) => denial_response(d),
                Ok(grant) => match api
                    .handle(
                        &parts.method,
                        &parts.uri,
                        &parts.headers,
                        route,
                        body,
                        &grant,
                    )
                    .await
                {
                    Ok(r) => r,
                    Err(e) => error_response(&e),
                },
            }
        }
    };
    response.headers_mut().insert(
        header::HeaderName::from_static("docker-distribution-api-version"),
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

impl<S: Storage, A: Access> Api<S, A> {
    async fn handle(
        &self,
        method: &Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        route: Route,
        body: Body,
        grant: &A::Grant,
    ) -> Result<Response, Error> {
        let reg = &self.registry;
        let q = query(uri);
        let unsupported = || Err(Error::Unsupported(format!("{method} on this endpoint")));
        match (route, method.clone()) {
            (Route::Base, Method::GET | Method::HEAD) => Ok(with_headers(
                StatusCode::OK,
                Body::from("{}"),
                &[(header::CONTENT_TYPE, "application/json".into())],
            )),
            (Route::Catalog, Method::GET) => {
                let (n, last) = paging(&q)?;
                let (repos, more) = reg
                    .catalog(|r| grant.allows(r, Action::Pull), n, last.as_deref())
                    .await?;
                let link = more.then(|| next_link("/v2/_catalog", n, repos.last()));
                Ok(json_page(
                    serde_json::json!({ "repositories": repos }),
                    link,
                ))
            }
            (Route::Tags(repo), Method::GET) => {
                let (n, last) = paging(&q)?;
                let (tags, more) = reg.tags(&repo, n, last.as_deref()).await?;
                let link =
                    more.then(|| next_link(&format!("/v2/{repo}/tags/list"), n, tags.last()));
                Ok(json_page(
                    serde_json::json!({ "name": repo.as_str(), "tags": tags }),
                    link,
                ))
            }
            (Route::Referrers(repo, subject), Method::GET) => {
                let filter = q.get("artifactType").map(String::as_str);
                let body = reg.referrers(&repo, &subject, filter).await?;
                let mut h = vec![(header::CONTENT_TYPE, crate::manifest::OCI_INDEX.to_owned())];
                if filter.is_some() {
                    h.push((
                        header::HeaderName::from_static("oci-filters-applied"),
                        "artifactType".into(),
                    ));
                }
                Ok(with_headers(StatusCode::OK, Body::from(body), &h))
            }
            (Route::Manifest(repo, r), m @ (Method::GET | Method::HEAD)) => {
                if let Some(work) = self
                    .options
                    .before_manifest_read
                    .as_ref()
                    .and_then(|hook| hook(&repo, &r))
                {
                    work.await;
                }
                if m == Method::HEAD {
                    let info = reg.manifest_info(&repo, &r).await?;
                    return Ok(with_headers(
                        StatusCode::OK,
                        Body::empty(),
                        &[
                            (header::CONTENT_TYPE, info.media_type),
                            (header::CONTENT_LENGTH, info.size.to_string()),
                            (DOCKER_CONTENT_DIGEST, info.digest.to_string()),
                        ],
                    ));
                }
                let (info, bytes) = reg.manifest(&repo, &r).await?;
                Ok(with_headers(
                    StatusCode::OK,
                    Body::from(bytes),
                    &[
                        (header::CONTENT_TYPE, info.media_type),
                        (DOCKER_CONTENT_DIGEST, info.digest.to_string()),
                    ],
                ))
            }
            (Route::Manifest(repo, r), Method::PUT) => {
                let limit = reg.limits().max_manifest_bytes;
                let bytes = axum::body::to_bytes(body, limit)
                    .await
                    .map_err(|_| Error::TooLarge(limit as u64))?;
                let put = reg
                    .put_manifest(&repo, &r, header_str(headers, header::CONTENT_TYPE), bytes)
                    .await?;
                let mut h = vec![
                    (
                        header::LOCATION,
                        format!("/v2/{repo}/manifests/{}", put.digest),
                    ),
                    (DOCKER_CONTENT_DIGEST, put.digest.to_string()),
                    (header::CONTENT_LENGTH, "0".into()),
                ];
                if let Some(s) = &put.manifest.subject {
                    h.push((
                        header::HeaderName::from_static("oci-subject"),
                        s.to_string(),
                    ));
                }
                tracing::info!(repository = %repo, reference = %r, digest = %put.digest, "manifest stored");
                if let Some(hook) = &self.options.on_manifest
                    && let Some(work) = hook(ManifestPushed {
                        repository: repo,
                        reference: r,
                        put,
                    })
                {
                    work.await;
                }
                Ok(with_headers(StatusCode::CREATED, Body::empty(), &h))
            }
            (Route::Manifest(repo, r), Method::DELETE) => {
                reg.delete_manifest(&repo, &r).await?;
                Ok(with_headers(StatusCode::ACCEPTED, Body::empty(), &[]))
            }
            (Route::Blob(repo, d), m @ (Method::GET | Method::HEAD)) => {
                let size = reg.blob_size(&repo, &d).await?;
                let digest_h = (DOCKER_CONTENT_DIGEST, d.to_string());
                if m == Method::GET
                    && let Some(expires) = self.options.redirect_blobs
                    && let Some(url) = reg.storage().blob_url(&d, expires).await?
                {
                    return Ok(with_headers(
                        StatusCode::TEMPORARY_REDIRECT,
                        Body::empty(),
                        &[digest_h, (header::LOCATION, url)],
                    ));
                }
                let octets = (header::CONTENT_TYPE, "application/octet-stream".to_owned());
                let ranges = (header::ACCEPT_RANGES, "bytes".to_owned());
                let range = match byte_range(headers, size) {
                    Ok(r) => r,
                    Err(e) => {
                        let mut resp = error_response(&e);
                        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                            resp.headers_mut().insert(header::CONTENT_RANGE, v);
                        }
                        return Ok(resp);
                    }
                };
                let (status, start, end) = match range {
                    Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
                    None => (StatusCode::OK, 0, size),
                };
                let mut h = vec![
                    digest_h,
                    octets,
                    ranges,
                    (header::CONTENT_LENGTH, (end - start).to_string()),
                ];
                if range.is_some() {
                    h.push((
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{}/{size}", end - 1),
                    ));
                }
                let body = if m == Method::HEAD {
                    Body::empty()
                } else {
                    Body::from_stream(reg.read_blob(&d, start, end).await?)
                };
                Ok(with_headers(status, body, &h))
            }
            (Route::Blob(repo, d), Method::DELETE) => {
                reg.delete_blob(&repo, &d).await?;
                Ok(with_headers(StatusCode::ACCEPTED, Body::empty(), &[]))
            }
            (Route::UploadStart(repo), Method::POST) => {
                if let Some(mount) = q.get("mount") {
                    let d: Digest = mount.parse()?;
                    let from: Option<RepositoryName> = q.get("from").and_then(|f| f.parse().ok());
                    let sources = match from {
                        Some(f) => vec![f],
                        None if self.options.automatic_mount => reg.blob_holders(&d).await?,
                        None => Vec::new(),
                    };
                    for source in sources {
                        if grant.allows(&source, Action::Pull)
                            && reg.mount(&repo, &d, &source).await?
                        {
                            return Ok(blob_created(&repo, &d));
                        }
                    }
                }
                if let Some(d) = q.get("digest") {
                    let d: Digest = d.parse()?;
                    reg.put_blob(&repo, &d, body_stream(body)).await?;
                    return Ok(blob_created(&repo, &d));
                }
                let id = reg.start_upload(&repo).await?;
                let mut r = upload_accepted(&repo, &id, 0);
                if let Some(min) = reg.storage().chunk_min_length() {
                    r.headers_mut()
                        .insert("oci-chunk-min-length", HeaderValue::from(min));
                }
                Ok(r)
            }
            (Route::Upload(repo, id), Method::GET) => {
                let size = reg.upload_size(&repo, &id).await?;
                let mut r = upload_accepted(&repo, &id, size);
                *r.status_mut() = StatusCode::NO_CONTENT;
                Ok(r)
            }
            (Route::Upload(repo, id), Method::PATCH) => {
                let range = content_range(headers)?;
                let size = reg
                    .append(
                        &repo,
                        &id,
                        range.map(|r| r.0),
                        range.map(|r| r.1),
                        body_stream(body),
                    )
                    .await?;
                Ok(upload_accepted(&repo, &id, size))
            }
            (Route::Upload(repo, id), Method::PUT) => {
                let d: Digest = q
                    .get("digest")
                    .ok_or_else(|| Error::InvalidDigest("missing ?digest=".into()))?
                    .parse()?;
                let body = match content_range(headers)? {
                    Some((start, len)) => {
                        reg.append(&repo, &id, Some(start), Some(len), body_stream(body))
                            .await?;
                        None
                    }
                    None => Some(body_stream(body)),
                };
                reg.complete(&repo, &id, &d, body).await?;
                Ok(blob_created(&repo, &d))
            }
            (Route::Upload(repo, id), Method::DELETE) => {
                reg.cancel(&repo, &id).await?;
                Ok(with_headers(StatusCode::NO_CONTENT, Body::empty(), &[]))
            }
            _ => unsupported(),
        }
    }
}

fn paging(q: &HashMap<String, String>) -> Result<(Option<usize>, Option<String>), Error> {
    let n = match q.get("n") {
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| Error::Unsupported(format!("bad n={n:?}")))?,
        ),
        None => None,
    };
    Ok((n, q.get("last").cloned()))
}

fn next_link(path: &str, n: Option<usize>, last: Option<&String>) -> String {
    let mut s = format!("<{path}?");
    if let Some(n) = n {
        s.push_str(&format!("n={n}&"));
    }
    s.push_str(&format!(
        "last={}>; rel=\"next\"",
        last.map_or("", String::as_str)
    ));
    s
}

/// Entry points for the fuzz targets; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use super::{HeaderMap, HeaderValue, header};

    /// Reads `value` as a `Range` against a blob of `size` bytes and as a
    /// `Content-Range`; checks what is accepted lies within bounds. Never
    /// panics on input.
    pub fn ranges(value: &str, size: u64) -> bool {
        let Ok(v) = HeaderValue::from_str(value) else {
            return false;
        };
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, v.clone());
        h.insert(header::CONTENT_RANGE, v);
        let range = super::byte_range(&h, size);
        if let Ok(Some((start, end))) = range {
            assert!(
                start < end && end <= size,
                "{value:?} gave {start}..{end} of {size}"
            );
        }
        let content = super::content_range(&h);
        if let Ok(Some((_, len))) = content {
            assert!(len >= 1);
        }
        matches!(range, Ok(Some(_))) || matches!(content, Ok(Some(_)))
    }
}

fn json_page(value: serde_json::Value, link: Option<String>) -> Response {
    let mut h = vec![(header::CONTENT_TYPE, "application/json".to_owned())];
    if let Some(l) = link {
        h.push((header::LINK, l));
    }
    with_headers(StatusCode::OK, Body::from(value.to_string()), &h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: header::HeaderName, v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(name, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn ranges() {
        let r = |v: &str| byte_range(&h(header::RANGE, v), 100);
        assert_eq!(r("bytes=0-9").unwrap(), Some((0, 10)));
        assert_eq!(r("bytes=90-").unwrap(), Some((90, 100)));
        assert_eq!(r("bytes=-10").unwrap(), Some((90, 100)));
        assert_eq!(r("bytes=95-200").unwrap(), Some((95, 100)));
        assert!(r("bytes=100-").is_err());
        assert!(r("bytes=-0").is_err());
        assert_eq!(r("bytes=0-1,5-6").unwrap(), None);
        assert_eq!(r("items=0-1").unwrap(), None);
        assert_eq!(r("bytes=9-1").unwrap(), None);
        let c = |v: &str| content_range(&h(header::CONTENT_RANGE, v));
        assert_eq!(c("0-21").unwrap(), Some((0, 22)));
        assert_eq!(c("bytes 22-41/42").unwrap(), Some((22, 20)));
        assert!(c("5-1").is_err());
        assert!(c("x").is_err());
        assert_eq!(decode("a%2Fb+c").unwrap(), "a/b c");
        assert_eq!(
            form_pairs("scope=repository%3Aa%2Fb%3Apull&scope=x&&service=kiln"),
            [
                ("scope".to_owned(), "repository:a/b:pull".to_owned()),
                ("scope".to_owned(), "x".to_owned()),
                ("service".to_owned(), "kiln".to_owned())
            ]
        );
        assert_eq!(decode("%zz"), None);
    }
}
