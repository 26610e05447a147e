//! `server/openapi.yaml` against a running `kiln serve`: every documented
//! path, method and status is answered, with a body matching its schema
//! (the subset of JSON Schema the document uses is checked here: `$ref`,
//! `type`, `required`, `properties`, `items`, `enum`,
//! `additionalProperties`).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::peers::{Layout, have, runtime, scratch};
use crate::serve::{Kiln, SECRET, http, tenant_config};

fn document() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local reference");
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("dangling {r}"))
        }
        None => schema,
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        other => panic!("schema type {other} not understood"),
    }
}

/// Checks `v` against `schema`; the path names where a mismatch is.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str) {
    let schema = resolve(doc, schema);
    match schema.get("type") {
        Some(Value::String(t)) => assert!(type_matches(t, v), "{at}: {v} is not {t}"),
        Some(Value::Array(ts)) => {
            assert!(
                ts.iter().any(|t| type_matches(t.as_str().unwrap(), v)),
                "{at}: {v} is none of {ts:?}"
            );
        }
        _ => {}
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        assert!(options.contains(v), "{at}: {v} not in {options:?}");
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required {
            assert!(
                v.get(r.as_str().unwrap()).is_some(),
                "{at}: {r} missing in {v}"
            );
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        v.as_object(),
    ) {
        for (k, value) in obj {
            if let Some(p) = props.get(k) {
                validate(doc, p, value, &format!("{at}.{k}"));
            } else if let Some(extra) = schema.get("additionalProperties").filter(|e| e.is_object())
            {
                validate(doc, extra, value, &format!("{at}.{k}"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"));
        }
    }
}

struct Checker {
    doc: Value,
    seen: BTreeSet<(String, String, u16)>,
}

impl Checker {
    /// Checks a response to `method` on the documented `path` against the
    /// document and records that the status was exercised.
    async fn check(&mut self, method: &Method, path: &str, resp: reqwest::Response) -> u16 {
        let status = resp.status().as_u16();
        let op = self.doc["paths"][path][method.as_str().to_lowercase()].clone();
        assert!(op.is_object(), "{method} {path} is not documented");
        let documented = &op["responses"][status.to_string()];
        assert!(
            documented.is_object(),
            "{method} {path} answered {status}, which is not documented"
        );
        let content = documented["content"]
            .as_object()
            .expect("documented content");
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let media = content.get(&content_type).unwrap_or_else(|| {
            panic!("{method} {path} {status}: content type {content_type:?} not documented")
        });
        let body = resp.bytes().await.unwrap();
        if content_type == "application/json" {
            let v: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{method} {path} {status}: {e}"));
            validate(
                &self.doc,
                &media["schema"],
                &v,
                &format!("{method} {path} {status}"),
            );
        }
        self.seen
            .insert((path.to_owned(), method.as_str().to_lowercase(), status));
        status
    }

    fn documented(&self) -> BTreeSet<(String, String, u16)> {
        let mut all = BTreeSet::new();
        for (path, ops) in self.doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                for status in op["responses"].as_object().unwrap().keys() {
                    all.insert((path.clone(), method.clone(), status.parse().unwrap()));
                }
            }
        }
        all
    }
}

#[test]
fn every_documented_route_and_status_answers_as_documented() {
    if !(have("docker-registry") && have("skopeo") && have("buildah")) {
        return;
    }
    let Some(images) = crate::ext4::images() else {
        return;
    };
    let Some(vm) = crate::serve::vm_config() else {
        return;
    };
    let dir = scratch("serve-openapi");
    let upstream = crate::peers::Registry::start(&dir.join("upstream"));
    let kiln = Kiln::start(
        &dir.join("kiln"),
        &tenant_config(&format!(
            "{vm}[builds]\nmax_per_principal = 1\nmax_upload_bytes = 1048576\n[[upstreams]]\nregistry = \"{}\"\ninsecure = true\n",
            upstream.host
        )),
        &[],
    );
    let admin = kiln.admin_password();
    let creds = format!("acme:{SECRET}");
    // A runnable image (it converts) and one whose layer is no tar (it fails).
    let src = format!("oci:{}:busybox", images.display());
    kiln.push_oci(&src, "acme/box:v1", &creds);
    let broken = Layout::new(&dir.join("broken"));
    let (d, s) = broken.image(7, &[1000], "amd64");
    broken.tag("v1", &[(d, s, "amd64")]);
    let src = format!("oci:{}:v1", broken.dir.display());
    kiln.push_oci(&src, "acme/broken:v1", &creds);
    broken.push("v1", &format!("{}/acme/app:v1", upstream.host), false);
    let ready = kiln.digest_of(&creds, "acme/box:v1");
    let failed = kiln.digest_of(&creds, "acme/broken:v1");

    let mut c = Checker {
        doc: document(),
        seen: BTreeSet::new(),
    };
    let base = kiln.url();
    runtime().block_on(async {
        let get = |path: String, user: Option<(&str, &str)>| {
            let mut r = http().get(format!("{base}{path}"));
            if let Some((u, p)) = user {
                r = r.basic_auth(u, Some(p));
            }
            r.send()
        };
        let acme = Some(("acme", SECRET));
        let (img, ext4, meta) = ("/kiln/v1/images/{digest}", "/kiln/v1/images/{digest}/ext4", "/kiln/v1/images/{digest}/metadata");
        // Wait (bounded) for both conversions to finish.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        for d in [&ready, &failed] {
            loop {
                let v: Value = get(format!("/kiln/v1/images/{d}"), acme).await.unwrap().json().await.unwrap();
                if !matches!(v["state"].as_str(), Some("pending" | "converting")) {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "conversion of {d} still {v}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        assert_eq!(c.check(&Method::GET, img, get(format!("/kiln/v1/images/{ready}"), acme).await.unwrap()).await, 200);
        assert_eq!(c.check(&Method::GET, img, get(format!("/kiln/v1/images/{failed}"), acme).await.unwrap()).await, 200);
        assert_eq!(c.check(&Method::GET, img, get(format!("/kiln/v1/images/{ready}"), None).await.unwrap()).await, 401);
        assert_eq!(c.check(&Method::GET, img, get(format!("/kiln/v1/images/{ready}"), Some(("umbrella", SECRET))).await.unwrap()).await, 404);
        assert_eq!(c.check(&Method::GET, ext4, get(format!("/kiln/v1/images/{ready}/ext4"), acme).await.unwrap()).await, 200);
        assert_eq!(c.check(&Method::GET, ext4, get(format!("/kiln/v1/images/{failed}/ext4"), acme).await.unwrap()).await, 409);
        assert_eq!(c.check(&Method::GET, ext4, get("/kiln/v1/images/sha256:0/ext4".into(), acme).await.unwrap()).await, 404);
        assert_eq!(c.check(&Method::GET, meta, get(format!("/kiln/v1/images/{ready}/metadata"), acme).await.unwrap()).await, 200);
        assert_eq!(c.check(&Method::GET, meta, get(format!("/kiln/v1/images/{failed}/metadata"), acme).await.unwrap()).await, 409);
        assert_eq!(c.check(&Method::GET, meta, get("/kiln/v1/images/sha256:0/metadata".into(), acme).await.unwrap()).await, 404);

        let post = |path: &str, user: Option<(&str, &str)>, body: Value| {
            let mut r = http().post(format!("{base}{path}")).header("content-type", "application/json").body(body.to_string());
            if let Some((u, p)) = user {
                r = r.basic_auth(u, Some(p));
            }
            r.send()
        };
        let admin = Some(("admin", admin.as_str()));
        let source = format!("{}/acme/app:v1", upstream.host);
        let m = "/kiln/v1/mirror";
        assert_eq!(c.check(&Method::POST, m, post(m, admin, serde_json::json!({"source": source})).await.unwrap()).await, 200);
        assert_eq!(c.check(&Method::POST, m, post(m, admin, serde_json::json!({"source": "Bad/Name"})).await.unwrap()).await, 400);
        assert_eq!(c.check(&Method::POST, m, post(m, None, serde_json::json!({"source": source})).await.unwrap()).await, 401);
        assert_eq!(c.check(&Method::POST, m, post(m, acme, serde_json::json!({"source": source})).await.unwrap()).await, 403);
        assert_eq!(c.check(&Method::POST, m, post(m, admin, serde_json::json!({"source": "127.0.0.1:9/x:1"})).await.unwrap()).await, 502);
        let md = "/kiln/v1/mirror/dockerfile";
        let df = serde_json::json!({"dockerfile": format!("ARG V\nFROM {source}\nFROM 127.0.0.1:9/x:$V\n"), "build_args": {"V": "1"}, "platform": "linux/amd64"});
        assert_eq!(c.check(&Method::POST, md, post(md, admin, df.clone()).await.unwrap()).await, 200);
        assert_eq!(c.check(&Method::POST, md, post(md, admin, serde_json::json!({"dockerfile": "FROM a\nFOO\n"})).await.unwrap()).await, 400);
        assert_eq!(c.check(&Method::POST, md, post(md, None, df.clone()).await.unwrap()).await, 401);
        assert_eq!(c.check(&Method::POST, md, post(md, acme, df).await.unwrap()).await, 403);

        // Builds: one slow build fills acme's one slot.
        let builds = "/kiln/v1/builds";
        let source = |dockerfile: &str| crate::builds::tarball(&[("Dockerfile", dockerfile)]);
        let submit = |user: Option<(&str, &str)>, f: reqwest::multipart::Form| {
            let mut r = http().post(format!("{base}{builds}")).multipart(f);
            if let Some((u, p)) = user {
                r = r.basic_auth(u, Some(p));
            }
            r.send()
        };
        let form = crate::builds::form;
        let slow = format!("FROM {}/acme/box:v1\nRUN sleep 611\n", kiln.host);
        let r = submit(acme, form(source(&slow), &[("build_arg", "A=b"), ("target", ""), ("platform", "linux/amd64")])).await.unwrap();
        let r = {
            let status = c.check(&Method::POST, builds, r).await;
            assert_eq!(status, 202);
            get(builds.into(), acme).await.unwrap()
        };
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        let id = v["builds"][0]["id"].as_str().unwrap().to_owned();
        assert_eq!(c.check(&Method::GET, builds, get(builds.into(), acme).await.unwrap()).await, 200);
        assert_eq!(c.check(&Method::GET, builds, get(builds.into(), None).await.unwrap()).await, 401);
        assert_eq!(c.check(&Method::POST, builds, submit(acme, form(source("FROM busybox\n"), &[])).await.unwrap()).await, 429);
        assert_eq!(c.check(&Method::POST, builds, submit(None, form(source("FROM busybox\n"), &[])).await.unwrap()).await, 401);
        let umbrella = Some(("umbrella", SECRET));
        assert_eq!(c.check(&Method::POST, builds, submit(umbrella, form(source("FROM busybox\nFOO\n"), &[])).await.unwrap()).await, 400);
        assert_eq!(c.check(&Method::POST, builds, submit(umbrella, form(source("FROM busybox\n"), &[("is_admin_build", "true")])).await.unwrap()).await, 403);
        assert_eq!(c.check(&Method::POST, builds, submit(umbrella, form(vec![0; 2 << 20], &[])).await.unwrap()).await, 413);
        let (one, logs, cancel) = ("/kiln/v1/builds/{id}", "/kiln/v1/builds/{id}/logs", "/kiln/v1/builds/{id}/cancel");
        assert_eq!(c.check(&Method::GET, one, get(format!("{builds}/{id}"), acme).await.unwrap()).await, 200);
        assert_eq!(c.check(&Method::GET, one, get(format!("{builds}/{id}"), umbrella).await.unwrap()).await, 404);
        let cancel_as = |user: (&str, &str), id: &str| http().post(format!("{base}{builds}/{id}/cancel")).basic_auth(user.0, Some(user.1)).send();
        assert_eq!(c.check(&Method::POST, cancel, cancel_as(("acme", SECRET), &id).await.unwrap()).await, 202);
        assert_eq!(c.check(&Method::GET, logs, get(format!("{builds}/{id}/logs"), acme).await.unwrap()).await, 200);
        assert_eq!(c.check(&Method::POST, cancel, cancel_as(("acme", SECRET), &id).await.unwrap()).await, 409);
        assert_eq!(c.check(&Method::POST, cancel, cancel_as(("acme", SECRET), "nope").await.unwrap()).await, 404);
        assert_eq!(c.check(&Method::GET, logs, get(format!("{builds}/nope/logs"), acme).await.unwrap()).await, 404);
        // A server without its builder.
        let builderless = Kiln::start(&dir.join("builderless"), &tenant_config("[builds]\nbuildah = \"/nonexistent/buildah\"\n"), &[]);
        let r = http()
            .post(format!("{}{builds}", builderless.url()))
            .basic_auth("acme", Some(SECRET))
            .multipart(form(source("FROM busybox\n"), &[]))
            .send()
            .await
            .unwrap();
        assert_eq!(c.check(&Method::POST, builds, r).await, 503);

        // Two sleepers fill the server's two instance slots: a third is 429.
        let inst = "/kiln/v1/instances";
        let launch = |body: Value| post(inst, acme, body);
        let mut sleepers = Vec::new();
        for _ in 0..2 {
            let r = launch(serde_json::json!({"image": "acme/box:v1", "cmd": ["sleep 600"], "memory": "64M", "cpus": 1, "timeout": 600, "env": ["A=b"]})).await.unwrap();
            let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            sleepers.push(v["id"].as_str().unwrap().to_owned());
        }
        let r = launch(serde_json::json!({"image": "acme/box:v1"})).await.unwrap();
        assert_eq!(c.check(&Method::POST, inst, r).await, 429);
        let (one, console, stop) = ("/kiln/v1/instances/{id}", "/kiln/v1/instances/{id}/console", "/kiln/v1/instances/{id}/stop");
        for id in &sleepers {
            let r = http().post(format!("{base}/kiln/v1/instances/{id}/stop")).basic_auth("acme", Some(SECRET)).send().await.unwrap();
            assert_eq!(c.check(&Method::POST, stop, r).await, 202);
            // The console ends when the instance does.
            let _ = get(format!("/kiln/v1/instances/{id}/console"), acme).await.unwrap().bytes().await;
        }
        let r = launch(serde_json::json!({"image": "acme/box:v1", "cmd": ["echo hi; exit 3"]})).await.unwrap();
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        let r = launch(serde_json::json!({"image": "acme/box:v1", "cmd": ["exit 0"]})).await.unwrap();
        assert_eq!(c.check(&Method::POST, inst, r).await, 201);
        assert_eq!(c.check(&Method::POST, inst, launch(serde_json::json!({"image": "Bad"})).await.unwrap()).await, 400);
        assert_eq!(c.check(&Method::POST, inst, post(inst, None, serde_json::json!({"image": "acme/box:v1"})).await.unwrap()).await, 401);
        assert_eq!(c.check(&Method::POST, inst, post(inst, Some(("umbrella", SECRET)), serde_json::json!({"image": "acme/box:v1"})).await.unwrap()).await, 404);
        assert_eq!(c.check(&Method::POST, inst, launch(serde_json::json!({"image": "acme/broken:v1"})).await.unwrap()).await, 409);
        assert_eq!(c.check(&Method::GET, console, get(format!("/kiln/v1/instances/{id}/console"), acme).await.unwrap()).await, 200);
        assert_eq!(c.check(&Method::GET, one, get(format!("/kiln/v1/instances/{id}"), acme).await.unwrap()).await, 200);
        assert_eq!(c.check(&Method::GET, one, get(format!("/kiln/v1/instances/{id}"), Some(("umbrella", SECRET))).await.unwrap()).await, 404);
        assert_eq!(c.check(&Method::GET, console, get("/kiln/v1/instances/nope/console".into(), acme).await.unwrap()).await, 404);
        let r = http().post(format!("{base}/kiln/v1/instances/nope/stop")).basic_auth("acme", Some(SECRET)).send().await.unwrap();
        assert_eq!(c.check(&Method::POST, stop, r).await, 404);

        for p in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(c.check(&Method::GET, p, get(p.into(), None).await.unwrap()).await, 200);
        }
        let t = "/token";
        let scope = "/token?service=kiln&scope=repository:acme/app:pull";
        assert_eq!(c.check(&Method::GET, t, get(scope.into(), acme).await.unwrap()).await, 200);
        assert_eq!(c.check(&Method::GET, t, get(scope.into(), Some(("acme", "wrong"))).await.unwrap()).await, 401);
        let mut status = 401;
        for _ in 0..20 {
            status = c.check(&Method::GET, t, get(scope.into(), Some(("acme", "wrong"))).await.unwrap()).await;
            if status == 429 {
                break;
            }
        }
        assert_eq!(status, 429);
    });
    let missing: Vec<_> = c.documented().difference(&c.seen).cloned().collect();
    assert!(missing.is_empty(), "documented but never seen: {missing:?}");
}
