//! A small distribution-API client for the tests: raw requests, and the
//! Docker token flow when the server challenges (so one suite runs against
//! an open registry and through token auth alike).

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, Response};
use sha2::{Digest as _, Sha256};

pub(crate) fn sha256(data: &[u8]) -> String {
    // Byte by byte: the crates including this file use different `sha2`s.
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// A client of one registry, with optional basic credentials for the
/// token endpoint.
#[derive(Clone)]
pub(crate) struct Oci {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) creds: Option<(String, String)>,
}

fn param<'a>(challenge: &'a str, key: &str) -> Option<&'a str> {
    let at = challenge.find(&format!("{key}=\""))? + key.len() + 2;
    let rest = &challenge[at..];
    Some(&rest[..rest.find('"')?])
}

impl Oci {
    pub(crate) fn new(base: &str, creds: Option<(&str, &str)>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            creds: creds.map(|(u, p)| (u.to_owned(), p.to_owned())),
        }
    }

    /// A token for a Bearer challenge.
    pub(crate) async fn token(&self, challenge: &str) -> Option<String> {
        let realm = param(challenge, "realm")?;
        let mut q = vec![(
            "service",
            param(challenge, "service").unwrap_or("").to_owned(),
        )];
        if let Some(scope) = param(challenge, "scope") {
            for s in scope.split(' ') {
                q.push(("scope", s.to_owned()));
            }
        }
        let mut req = self.http.get(realm).query(&q);
        if let Some((u, p)) = &self.creds {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let v: serde_json::Value = resp.json().await.ok()?;
        v["token"].as_str().map(str::to_owned)
    }

    /// A request to `path` (absolute, or relative to the base); on a
    /// Bearer challenge, fetches a token and tries once more.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Response {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let build = |token: Option<&str>| {
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.insert(
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            if let Some(t) = token {
                h.insert(
                    reqwest::header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
                );
            }
            self.http
                .request(method.clone(), &url)
                .headers(h)
                .body(body.clone())
        };
        let resp = build(None).send().await.unwrap();
        if resp.status() != 401 {
            return resp;
        }
        let Some(challenge) = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .filter(|c| c.starts_with("Bearer "))
            .map(str::to_owned)
        else {
            return resp;
        };
        match self.token(&challenge).await {
            Some(t) => build(Some(&t)).send().await.unwrap(),
            None => resp,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, &[], Vec::new()).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Response {
        self.send(Method::DELETE, path, &[], Vec::new()).await
    }

    /// Uploads a blob monolithically (POST, then PUT with the bytes).
    pub(crate) async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let r = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Vec::new(),
            )
            .await;
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
        let loc = location(&r);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self
            .send(
                Method::PUT,
                &format!("{loc}{sep}digest={d}"),
                &[("content-type", "application/octet-stream")],
                data.to_vec(),
            )
            .await;
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        d
    }

    /// PUTs a manifest; returns the response.
    pub(crate) async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            body.to_vec(),
        )
        .await
    }
}

pub(crate) fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

pub(crate) fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// The first error code of an OCI error body.
pub(crate) async fn error_code(r: Response) -> String {
    let v: serde_json::Value = r.json().await.expect("an OCI error body");
    v["errors"][0]["code"].as_str().unwrap().to_owned()
}
