//! The build routes: `POST /kiln/v1/builds` (multipart), `GET
//! /kiln/v1/builds[/<id>]`, `GET .../logs` (streamed while the build runs)
//! and `POST .../cancel`.
//!
//! A request is checked whole before anything is kept: the upload goes to
//! a scratch directory that is removed unless the build is queued.

use std::net::SocketAddr;
use std::path::{Component, Path};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Multipart, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_dockerfile::Dockerfile;
use tokio::io::AsyncWriteExt as _;

use super::context::{self, ContextError, Limits};
use super::plan::PlanError;
use super::{BuildState, Builds, Params, Record, now_ms};
use crate::serve::auth::{Principal, basic_refusal};
use crate::serve::{json, problem};

/// Largest Dockerfile, and largest other text field.
const MAX_DOCKERFILE: usize = 1 << 20;
const MAX_FIELD: usize = 64 << 10;

pub(crate) fn router(builds: Arc<Builds>) -> Router {
    Router::new()
        .route(
            "/kiln/v1/builds",
            axum::routing::post(create)
                .get(list)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/kiln/v1/builds/{id}", axum::routing::get(status))
        .route("/kiln/v1/builds/{id}/logs", axum::routing::get(logs))
        .route("/kiln/v1/builds/{id}/cancel", axum::routing::post(cancel))
        .route("/kiln/v1/builds/{id}/source", axum::routing::get(source))
        .with_state(builds)
}

fn plan_refusal(e: &PlanError) -> Response {
    match e {
        PlanError::Dockerfile { message, line } => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": message, "line": line}),
        ),
        PlanError::Invalid(m) => problem(StatusCode::BAD_REQUEST, m.clone()),
        PlanError::Denied(m) => problem(StatusCode::FORBIDDEN, m.clone()),
    }
}

/// The caller: a tenant or the admin.
fn caller(b: &Builds, headers: &HeaderMap, peer: SocketAddr) -> Result<Principal, Box<Response>> {
    let refuse = |e: &kiln_registry::Error| Box::new(basic_refusal(e));
    match b.auth.principal(headers, Some(peer.ip())) {
        Ok(Principal::Anonymous) => Err(refuse(&kiln_registry::Error::Unauthorized)),
        Ok(Principal::Build { .. }) => Err(refuse(&kiln_registry::Error::Denied)),
        Ok(p) => Ok(p),
        Err(e) => Err(refuse(&e)),
    }
}

/// A build as reported: its record, timings and the result's conversion.
async fn view(b: &Builds, r: &Record) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    let ms = |a: Option<u64>, z: Option<u64>| a.zip(z).map(|(a, z)| z.saturating_sub(a));
    v["timings"] = serde_json::json!({
        "queued_ms": ms(Some(r.created_at), r.started_at.or(r.finished_at)),
        "build_ms": ms(r.started_at, r.finished_at),
    });
    if let Some(d) = &r.digest {
        v["conversion"] = b
            .conversions
            .get(d)
            .await
            .map_or(serde_json::Value::Null, |c| serde_json::json!(c.state));
    }
    v
}

/// The multipart form of a build request.
#[derive(Default)]
struct Form {
    params: Params,
    /// Whether a `context` part was sent (kept in `staging/source`).
    context: bool,
    dockerfile: Option<String>,
    file: Option<String>,
}

/// Why a form was refused.
enum FormError {
    TooLarge(String),
    Bad(String),
}

async fn text(
    mut field: axum::extract::multipart::Field<'_>,
    max: usize,
) -> Result<String, FormError> {
    let name = field.name().unwrap_or_default().to_owned();
    let mut out = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| FormError::Bad(e.body_text()))?
    {
        out.extend_from_slice(&chunk);
        if out.len() > max {
            return Err(FormError::TooLarge(format!(
                "field {name} over {max} bytes"
            )));
        }
    }
    String::from_utf8(out).map_err(|_| FormError::Bad(format!("field {name} is not UTF-8")))
}

async fn read_form(
    mut multipart: Multipart,
    staging: &Path,
    max_upload: u64,
) -> Result<Form, FormError> {
    let mut form = Form::default();
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| FormError::Bad(e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let p = &mut form.params;
        // An empty optional field is an absent one.
        let optional = |t: String| Some(t).filter(|t| !t.is_empty());
        match name.as_str() {
            "context" => {
                let mut out = tokio::fs::File::create(staging.join("source"))
                    .await
                    .map_err(|e| FormError::Bad(e.to_string()))?;
                let mut size = 0u64;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| FormError::Bad(e.body_text()))?
                {
                    size += chunk.len() as u64;
                    if size > max_upload {
                        return Err(FormError::TooLarge(format!(
                            "the source is over {max_upload} bytes"
                        )));
                    }
                    out.write_all(&chunk)
                        .await
                        .map_err(|e| FormError::Bad(e.to_string()))?;
                }
                out.flush()
                    .await
                    .map_err(|e| FormError::Bad(e.to_string()))?;
                form.context = true;
            }
            "dockerfile" => form.dockerfile = Some(text(field, MAX_DOCKERFILE).await?),
            "file" => form.file = optional(text(field, MAX_FIELD).await?),
            "cache_scope" => p.cache_scope = optional(text(field, MAX_FIELD).await?),
            "global_cache_key" => p.global_cache_key = optional(text(field, MAX_FIELD).await?),
            "target" => p.target = optional(text(field, MAX_FIELD).await?),
            "platform" => p.platform = optional(text(field, MAX_FIELD).await?),
            "tag" => p.tag = optional(text(field, MAX_FIELD).await?),
            "build_arg" => {
                let arg = text(field, MAX_FIELD).await?;
                let (k, v) = arg
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| FormError::Bad(format!("build_arg {arg:?} is not KEY=VALUE")))?;
                p.build_args.insert(k.to_owned(), v.to_owned());
            }
            "is_admin_build" => {
                p.is_admin_build = match text(field, MAX_FIELD).await?.as_str() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    other => {
                        return Err(FormError::Bad(format!(
                            "is_admin_build {other:?}: true or false"
                        )));
                    }
                }
            }
            other => return Err(FormError::Bad(format!("unknown field {other:?}"))),
        }
    }
    Ok(form)
}

/// The Dockerfile at `file` inside the unpacked source.
fn dockerfile_in(context: &Path, file: &str) -> Result<String, String> {
    let rel = Path::new(file);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("Dockerfile path {file:?} leaves the source"));
    }
    let missing = || format!("no Dockerfile at {file:?} in the source");
    let root = context.canonicalize().map_err(|_| missing())?;
    let path = context.join(rel).canonicalize().map_err(|_| missing())?;
    if !path.starts_with(&root) {
        return Err(format!("Dockerfile path {file:?} leaves the source"));
    }
    let meta = std::fs::metadata(&path).map_err(|_| missing())?;
    if !meta.is_file() {
        return Err(missing());
    }
    if meta.len() > MAX_DOCKERFILE as u64 {
        return Err(format!("the Dockerfile is over {MAX_DOCKERFILE} bytes"));
    }
    std::fs::read_to_string(&path).map_err(|e| format!("reading {file:?}: {e}"))
}

async fn create(
    State(b): State<Arc<Builds>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    multipart: Multipart,
) -> Response {
    let principal = match caller(&b, &headers, peer) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if let Err(e) = &b.builder {
        return problem(StatusCode::SERVICE_UNAVAILABLE, e.clone());
    }
    let staging = match tempfile::Builder::new()
        .prefix("upload-")
        .tempdir_in(b.dir.join("tmp"))
    {
        Ok(s) => s,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let form = match read_form(multipart, staging.path(), b.settings.max_upload_bytes).await {
        Ok(f) => f,
        Err(FormError::TooLarge(m)) => return problem(StatusCode::PAYLOAD_TOO_LARGE, m),
        Err(FormError::Bad(m)) => return problem(StatusCode::BAD_REQUEST, m),
    };
    if form.params.is_admin_build && principal != Principal::Admin {
        return problem(
            StatusCode::FORBIDDEN,
            "is_admin_build needs the admin's credentials",
        );
    }
    let owner = principal.subject();
    let active = b.active_of(&owner);
    if active >= b.settings.max_per_principal {
        return problem(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{active} builds queued or running (at most {})",
                b.settings.max_per_principal
            ),
        );
    }
    let ctx = staging.path().join("context");
    if form.context {
        let limits = Limits {
            bytes: b.settings.max_context_bytes,
            entries: b.settings.max_context_entries,
        };
        let source = staging.path().join("source");
        let unpacked = tokio::task::spawn_blocking(move || context::unpack(&source, &ctx, limits))
            .await
            .unwrap_or_else(|e| Err(ContextError::Io(std::io::Error::other(e.to_string()))));
        match unpacked {
            Ok(()) => {}
            Err(e @ (ContextError::TooLarge { .. } | ContextError::TooManyEntries { .. })) => {
                return problem(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
            }
            Err(e) => return problem(StatusCode::BAD_REQUEST, e.to_string()),
        }
        let _ = std::fs::remove_file(staging.path().join("source"));
    } else if let Err(e) = std::fs::create_dir(staging.path().join("context")) {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let ctx = staging.path().join("context");
    let text = match (&form.dockerfile, &form.file) {
        (Some(_), Some(_)) => {
            return problem(StatusCode::BAD_REQUEST, "send dockerfile or file, not both");
        }
        (Some(t), None) => t.clone(),
        (None, file) => match dockerfile_in(&ctx, file.as_deref().unwrap_or("Dockerfile")) {
            Ok(t) => t,
            Err(m) => return problem(StatusCode::BAD_REQUEST, m),
        },
    };
    let dockerfile = match Dockerfile::parse(&text) {
        Ok(d) => d,
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": e.to_string(), "line": e.line()}),
            );
        }
    };
    let id: kiln_cache_key::BuildId = match crate::serve::auth::random_bytes::<16>() {
        Ok(bytes) => match bytes
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
            .parse()
        {
            Ok(id) => id,
            Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")),
        },
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let plan = match b
        .prepare(&id, &principal, &form.params, &dockerfile, false)
        .await
    {
        Ok(p) => p,
        Err(e) => return plan_refusal(&e),
    };
    if let Err(e) = std::fs::write(staging.path().join("Dockerfile.original"), &text) {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let dir = b.build_dir(id.as_str());
    let kept = staging.keep();
    if let Err(e) = std::fs::rename(&kept, &dir) {
        let _ = std::fs::remove_dir_all(&kept);
        return problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let builder = b.builder.as_ref().map_or("none", |x| x.name()).to_owned();
    let record = Record {
        id: id.as_str().to_owned(),
        owner,
        state: BuildState::Queued,
        builder,
        params: form.params,
        created_at: now_ms(),
        started_at: None,
        finished_at: None,
        digest: None,
        image: None,
        error: None,
        plan,
    };
    if let Err(active) = b.enqueue(record.clone()) {
        let _ = std::fs::remove_dir_all(&dir);
        return problem(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{active} builds queued or running (at most {})",
                b.settings.max_per_principal
            ),
        );
    }
    tracing::info!(id = %record.id, owner = %record.owner, "build queued");
    let mut r = json(StatusCode::ACCEPTED, &view(&b, &record).await);
    if let Ok(v) = format!("/kiln/v1/builds/{}", record.id).parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn list(
    State(b): State<Arc<Builds>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let principal = match caller(&b, &headers, peer) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let mut records: Vec<Record> = b
        .lock()
        .values()
        .map(|e| e.record.clone())
        .filter(|r| principal == Principal::Admin || r.owner == principal.subject())
        .collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let mut builds: Vec<serde_json::Value> = Vec::with_capacity(records.len());
    for r in &records {
        builds.push(view(&b, r).await);
    }
    json(StatusCode::OK, &serde_json::json!({"builds": builds}))
}

/// The record of `id` for the caller, or the refusal (an unknown build and
/// another principal's look alike).
fn visible(
    b: &Builds,
    id: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Record, Box<Response>> {
    let principal = caller(b, headers, peer)?;
    b.visible(id, &principal)
        .ok_or_else(|| Box::new(problem(StatusCode::NOT_FOUND, format!("no build {id}"))))
}

async fn status(
    State(b): State<Arc<Builds>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    match visible(&b, &id, &headers, peer) {
        Ok(r) => json(StatusCode::OK, &view(&b, &r).await),
        Err(r) => *r,
    }
}

async fn cancel(
    State(b): State<Arc<Builds>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let record = match visible(&b, &id, &headers, peer) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if record.state.is_done() {
        return problem(
            StatusCode::CONFLICT,
            format!("the build has ended ({:?})", record.state).to_lowercase(),
        );
    }
    match b.cancel(&id) {
        Some(r) => json(StatusCode::ACCEPTED, &view(&b, &r).await),
        None => problem(StatusCode::NOT_FOUND, format!("no build {id}")),
    }
}

/// The log so far, then (streamed) the rest until the build ends.
async fn logs(
    State(b): State<Arc<Builds>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = visible(&b, &id, &headers, peer) {
        return *r;
    }
    let path = b.log_path(&id);
    let stream = futures_util::stream::unfold((0usize, false), move |(sent, done)| {
        let (b, id, path) = (b.clone(), id.clone(), path.clone());
        async move {
            if done {
                return None;
            }
            loop {
                // Registered before the check: an end in between still wakes.
                let changes = b.changes(&id);
                let changed = changes.as_ref().map(|c| c.notified());
                let ended = b.get(&id).is_none_or(|r| r.state.is_done());
                let new = read_from(&path, sent);
                if !new.is_empty() {
                    let upto = sent + new.len();
                    return Some((Ok::<_, std::io::Error>(new), (upto, false)));
                }
                if ended {
                    return None;
                }
                // The builder appends to the log itself: look again soon,
                // or at once when the build ends.
                let wait = tokio::time::sleep(Duration::from_millis(100));
                match changed {
                    Some(changed) => {
                        tokio::select! {
                            () = wait => {}
                            () = changed => {}
                        }
                    }
                    None => wait.await,
                }
            }
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A file's bytes from `offset` on (none when it cannot be read).
fn read_from(path: &Path, offset: usize) -> Vec<u8> {
    use std::io::{Read as _, Seek as _};
    let mut out = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(std::io::SeekFrom::Start(offset as u64)).is_ok()
    {
        let _ = f.read_to_end(&mut out);
    }
    out
}

/// A running build's source, for its builder VM: only to that build's own
/// credential.
async fn source(
    State(b): State<Arc<Builds>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let unknown = || problem(StatusCode::NOT_FOUND, format!("no source for build {id}"));
    match b.auth.principal(&headers, Some(peer.ip())) {
        Ok(Principal::Build { id: own, .. }) if own == id => {}
        Ok(Principal::Anonymous) => return basic_refusal(&kiln_registry::Error::Unauthorized),
        Ok(_) => return unknown(),
        Err(e) => return basic_refusal(&e),
    }
    let running = b.get(&id).is_some_and(|r| r.state == BuildState::Running);
    let path = b.build_dir(&id).join("work/source.tar");
    match tokio::fs::File::open(&path).await {
        Ok(f) if running => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-tar")],
            Body::from_stream(tokio_util::io::ReaderStream::new(f)),
        )
            .into_response(),
        _ => unknown(),
    }
}
