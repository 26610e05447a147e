//! `/kiln/v1/images/<digest>`: a pushed image's conversion state, and its
//! ext4 and run configuration once ready. Readable by whoever may pull the
//! repository it was pushed to.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_registry::Error;
use kiln_registry::api::{Access, Need, Request, error_response};
use kiln_registry_token::{Action, RepositoryName};

use super::auth::Auth;
use super::convert::{Conversions, Record, State as ConversionState};

#[derive(Clone)]
struct Images {
    conversions: Arc<Conversions>,
    auth: Arc<Auth>,
}

pub(super) fn router(conversions: Arc<Conversions>, auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/kiln/v1/images/{digest}", axum::routing::get(status))
        .route("/kiln/v1/images/{digest}/ext4", axum::routing::get(ext4))
        .route(
            "/kiln/v1/images/{digest}/metadata",
            axum::routing::get(metadata),
        )
        .with_state(Images { conversions, auth })
}

/// The record of `digest` if the caller may pull its repository. Without
/// credentials: a challenge; with credentials that do not cover it: the
/// same 404 as an unknown digest (no probing of other tenants' digests).
async fn authorized(
    images: &Images,
    digest: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Record, Box<Response>> {
    let unknown = || {
        Box::new(error_response(&Error::ManifestUnknown(
            digest.chars().take(200).collect(),
        )))
    };
    let Some(record) = images.conversions.get(digest).await else {
        return Err(unknown());
    };
    let request = Request {
        headers,
        peer: Some(peer.ip()),
    };
    // Any repository holding it will do.
    let repositories: Vec<RepositoryName> = std::iter::once(&record.repository)
        .chain(&record.also_in)
        .filter_map(|r| r.parse().ok())
        .collect();
    for repo in &repositories {
        let needs = [Need::Repository(repo.clone(), Action::Pull)];
        if images.auth.authorize(request, &needs).is_ok() {
            return Ok(record);
        }
    }
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(unknown());
    }
    // Without credentials: a challenge naming every repository, so that the
    // token asked for covers whichever the client may pull.
    let needs: Vec<Need> = repositories
        .into_iter()
        .map(|r| Need::Repository(r, Action::Pull))
        .collect();
    let Err(d) = images.auth.authorize(request, &needs) else {
        return Ok(record);
    };
    let mut r = error_response(&d.error);
    if let Some(c) = d.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, c);
    }
    Err(Box::new(r))
}

async fn status(
    State(images): State<Images>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Response {
    match authorized(&images, &digest, &headers, peer).await {
        Ok(record) => {
            let mut v = serde_json::to_value(&record).unwrap_or_default();
            if record.state == ConversionState::Ready {
                v["ext4"] = format!("/kiln/v1/images/{digest}/ext4").into();
                v["metadata"] = format!("/kiln/v1/images/{digest}/metadata").into();
            }
            ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
        }
        Err(r) => *r,
    }
}

async fn file(
    images: &Images,
    digest: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
    run_config: bool,
) -> Response {
    let record = match authorized(images, digest, headers, peer).await {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if record.state != ConversionState::Ready {
        let body = serde_json::json!({"errors": [{"code": "NOT_READY", "message": format!("conversion is {:?}", record.state).to_lowercase()}]});
        return (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
    }
    let (ext4, run) = match images.conversions.outputs(&record.digest).await {
        Ok(paths) => paths,
        Err(e) => return error_response(&Error::Io(e)),
    };
    let (path, content_type) = if run_config {
        (run, "application/json")
    } else {
        (ext4, "application/octet-stream")
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return error_response(&Error::Io(e)),
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut r = Response::new(Body::from_stream(
        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024),
    ));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

async fn ext4(
    State(images): State<Images>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Response {
    file(&images, &digest, &headers, peer, false).await
}

async fn metadata(
    State(images): State<Images>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Response {
    file(&images, &digest, &headers, peer, true).await
}
