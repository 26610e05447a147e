//! The token endpoint: `GET /token` (Docker token flow, Basic credentials
//! or none) and `POST /token` (OAuth2 password and refresh-token grants, as
//! docker and podman use them).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, RawForm, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_registry::api::form_pairs;
use kiln_registry_token::{Scope, parse_scopes};

use super::auth::{Auth, Principal, basic_refusal};

pub(super) fn router(auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/token", axum::routing::get(get_token).post(post_token))
        .with_state(auth)
}

fn bad_request(msg: String) -> Response {
    let body = serde_json::json!({"error": "invalid_request", "error_description": msg});
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Every `scope` value (each may hold several, space-separated); invalid
/// ones are refused.
fn scopes(auth: &Auth, pairs: &[(String, String)]) -> Result<Vec<Scope>, String> {
    if let Some((_, s)) = pairs
        .iter()
        .find(|(k, v)| k == "service" && v != auth.service())
    {
        return Err(format!("unknown service {s:?}"));
    }
    let mut out = Vec::new();
    for (k, v) in pairs {
        if k == "scope" {
            out.extend(parse_scopes(v).map_err(|e| e.to_string())?);
        }
    }
    if out.len() > 256 {
        return Err("more than 256 scopes".into());
    }
    Ok(out)
}

fn token_response(
    auth: &Auth,
    principal: &Principal,
    scopes: &[Scope],
    refresh: Option<String>,
) -> Response {
    match auth.issue(principal, scopes) {
        Ok((token, ttl)) => {
            let issued = httpdate_rfc3339();
            let mut body = serde_json::json!({
                "token": token,
                "access_token": token,
                "expires_in": ttl.as_secs(),
                "issued_at": issued,
            });
            if let Some(r) = refresh {
                body["refresh_token"] = r.into();
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        Err(e) => basic_refusal(&e),
    }
}

/// Now as RFC 3339 (UTC, seconds).
fn httpdate_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn get_token(
    State(auth): State<Arc<Auth>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = q.as_deref().map(form_pairs).unwrap_or_default();
    let scopes = match scopes(&auth, &pairs) {
        Ok(s) => s,
        Err(msg) => return bad_request(msg),
    };
    match auth.basic(&headers, Some(peer.ip())) {
        Ok(p) => {
            let refresh = pairs
                .iter()
                .any(|(k, v)| k == "offline_token" && v == "true")
                .then(|| auth.refresh_token(&p).ok())
                .flatten()
                .filter(|_| !matches!(p, Principal::Anonymous | Principal::Build { .. }));
            token_response(&auth, &p, &scopes, refresh)
        }
        Err(e) => basic_refusal(&e),
    }
}

async fn post_token(
    State(auth): State<Arc<Auth>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawForm(form): RawForm,
) -> Response {
    let Ok(form) = std::str::from_utf8(&form) else {
        return bad_request("form is not UTF-8".into());
    };
    let pairs = form_pairs(form);
    let get = |k: &str| pairs.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
    let scopes = match scopes(&auth, &pairs) {
        Ok(s) => s,
        Err(msg) => return bad_request(msg),
    };
    let principal = match get("grant_type") {
        Some("password") => match (get("username"), get("password")) {
            (Some(u), Some(p)) => auth.login(u, p, Some(peer.ip())),
            _ => return bad_request("username and password required".into()),
        },
        Some("refresh_token") => match get("refresh_token") {
            Some(t) => auth.redeem_refresh(t),
            None => return bad_request("refresh_token required".into()),
        },
        other => return bad_request(format!("unsupported grant_type {other:?}")),
    };
    match principal {
        Ok(p) => {
            let refresh = (get("access_type") == Some("offline")
                || get("grant_type") == Some("refresh_token"))
            .then(|| auth.refresh_token(&p).ok())
            .flatten();
            token_response(&auth, &p, &scopes, refresh)
        }
        Err(e) => basic_refusal(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let now = httpdate_rfc3339();
        assert_eq!(now.len(), 20);
        assert!(now.starts_with("20"));
    }
}
