//! Operations: request ids and access logs, Prometheus metrics, health.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tracing::Instrument;

/// Counters behind `/metrics`, and the request body idle timeout.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// How long a request body may send nothing.
    pub(crate) body_idle_timeout: Duration,
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    next_id: AtomicU64,
}

impl Metrics {
    /// Counters at zero, with request bodies idle for at most
    /// `body_idle_timeout`.
    pub(crate) fn new(body_idle_timeout: Duration) -> Self {
        Self {
            body_idle_timeout,
            ..Self::default()
        }
    }
}

/// Which endpoint a path is, for labels (never the path itself: names and
/// digests would make unbounded label sets).
fn route_of(path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/v2") else {
        return match path {
            "/token" => "token",
            "/metrics" => "metrics",
            "/healthz" | "/readyz" => "health",
            p if p.starts_with("/kiln/v1/images/") => "images",
            _ => "other",
        };
    };
    match rest {
        "" | "/" => "base",
        "/_catalog" => "catalog",
        r if r.ends_with("/tags/list") => "tags",
        r if r.contains("/blobs/uploads") => "uploads",
        r if r.contains("/manifests/") => "manifests",
        r if r.contains("/referrers/") => "referrers",
        r if r.contains("/blobs/") => "blobs",
        _ => "other",
    }
}

fn method_label(m: &axum::http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "OTHER",
    }
}

/// Gives every request an id (`X-Request-Id`, and a tracing span), logs it,
/// and counts it and its bytes.
pub(crate) async fn observe(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let id = format!(
        "{:x}-{}",
        std::process::id(),
        metrics.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let method = req.method().clone();
    let route = route_of(req.uri().path());
    let span = tracing::info_span!("request", request_id = %id, method = %method, path = %req.uri().path());
    let idle = metrics.body_idle_timeout;
    let req = req.map(|body| counting(idle_limited(body, idle), metrics.clone(), |m| &m.bytes_in));
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::debug!(
            status,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "request"
        );
    });
    *metrics
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((route, method_label(&method), status))
        .or_default() += 1;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response.map(|body| counting(body, metrics, |m| &m.bytes_out))
}

/// `body`, failing once it has sent nothing for `idle` (an upload then
/// stays where its last whole write left it).
fn idle_limited(body: Body, idle: Duration) -> Body {
    let stream = body.into_data_stream();
    Body::from_stream(futures_util::stream::unfold(
        Some(stream),
        move |state| async move {
            let mut stream = state?;
            match tokio::time::timeout(idle, stream.next()).await {
                Ok(Some(item)) => Some((item, Some(stream))),
                Ok(None) => None,
                Err(_) => {
                    let idle = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request body idle for too long",
                    );
                    Some((Err(axum::Error::new(idle)), None))
                }
            }
        },
    ))
}

/// `body`, its bytes added to a counter: at once when its length is known
/// (the body stays as it is, with its length), else as they stream.
fn counting(body: Body, metrics: Arc<Metrics>, counter: fn(&Metrics) -> &AtomicU64) -> Body {
    use http_body::Body as _;
    if let Some(n) = body.size_hint().exact() {
        counter(&metrics).fetch_add(n, Ordering::Relaxed);
        return body;
    }
    Body::from_stream(body.into_data_stream().inspect(move |chunk| {
        if let Ok(c) = chunk {
            counter(&metrics).fetch_add(c.len() as u64, Ordering::Relaxed);
        }
    }))
}

/// Figures the metrics page needs from elsewhere.
pub(crate) struct Gauges {
    pub(crate) auth_failures: u64,
    pub(crate) upload_sessions: u64,
    /// Conversions by state (`pending`, `converting`, ...).
    pub(crate) conversions: BTreeMap<&'static str, u64>,
    pub(crate) conversion_seconds_sum: f64,
    pub(crate) conversion_seconds_count: u64,
    pub(crate) gc: super::gc::Totals,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub(crate) fn render(&self, g: &Gauges) -> Response {
        use std::fmt::Write as _;
        let mut s = String::new();
        s.push_str("# HELP kiln_http_requests_total HTTP requests by endpoint, method and status.\n# TYPE kiln_http_requests_total counter\n");
        for ((route, method, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                s,
                "kiln_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = write!(
            s,
            "# HELP kiln_http_request_bytes_total Request body bytes received.\n# TYPE kiln_http_request_bytes_total counter\nkiln_http_request_bytes_total {}\n\
             # HELP kiln_http_response_bytes_total Response body bytes sent.\n# TYPE kiln_http_response_bytes_total counter\nkiln_http_response_bytes_total {}\n\
             # HELP kiln_auth_failures_total Refused credentials and tokens.\n# TYPE kiln_auth_failures_total counter\nkiln_auth_failures_total {}\n\
             # HELP kiln_upload_sessions Open blob upload sessions.\n# TYPE kiln_upload_sessions gauge\nkiln_upload_sessions {}\n\
             # HELP kiln_conversion_queue_depth Conversions pending or running.\n# TYPE kiln_conversion_queue_depth gauge\nkiln_conversion_queue_depth {}\n",
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
            g.auth_failures,
            g.upload_sessions,
            ["pending", "converting"]
                .iter()
                .filter_map(|k| g.conversions.get(k))
                .sum::<u64>(),
        );
        s.push_str(
            "# HELP kiln_conversions Conversions by state.\n# TYPE kiln_conversions gauge\n",
        );
        for (state, n) in &g.conversions {
            let _ = writeln!(s, "kiln_conversions{{state=\"{state}\"}} {n}");
        }
        let _ = write!(
            s,
            "# HELP kiln_conversion_seconds Time spent converting images to ext4.\n# TYPE kiln_conversion_seconds summary\nkiln_conversion_seconds_sum {}\nkiln_conversion_seconds_count {}\n",
            g.conversion_seconds_sum, g.conversion_seconds_count
        );
        let _ = write!(
            s,
            "# HELP kiln_gc_runs_total Garbage collections this process ran.\n# TYPE kiln_gc_runs_total counter\nkiln_gc_runs_total {}\n\
             # HELP kiln_gc_blobs_deleted_total Blobs garbage collection removed.\n# TYPE kiln_gc_blobs_deleted_total counter\nkiln_gc_blobs_deleted_total {}\n\
             # HELP kiln_gc_bytes_freed_total Bytes garbage collection removed.\n# TYPE kiln_gc_bytes_freed_total counter\nkiln_gc_bytes_freed_total {}\n\
             # HELP kiln_gc_failures_total Garbage collections that failed.\n# TYPE kiln_gc_failures_total counter\nkiln_gc_failures_total {}\n\
             # HELP kiln_gc_conversions_pruned_total Conversions removed with their deleted manifests.\n# TYPE kiln_gc_conversions_pruned_total counter\nkiln_gc_conversions_pruned_total {}\n",
            g.gc.runs, g.gc.blobs_deleted, g.gc.bytes_freed, g.gc.failures, g.gc.conversions_pruned
        );
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_without_names() {
        assert_eq!(route_of("/v2/"), "base");
        assert_eq!(route_of("/v2/a/b/blobs/uploads/"), "uploads");
        assert_eq!(route_of("/v2/a/b/blobs/sha256:x"), "blobs");
        assert_eq!(route_of("/v2/blobs/manifests/latest"), "manifests");
        assert_eq!(route_of("/v2/a/tags/list"), "tags");
        assert_eq!(route_of("/kiln/v1/images/sha256:x/ext4"), "images");
        assert_eq!(route_of("/etc/passwd"), "other");
    }
}
