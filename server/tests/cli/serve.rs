//! `kiln serve` as users run it: zero-configuration start, the conformance
//! workflows through token auth, real clients (skopeo, podman, buildah,
//! containerd's ctr, oras), and attacks on the token flow.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::client::{Oci, error_code, header, sha256};
use crate::conformance;
use crate::peers::{Layout, have, ok, runtime, scratch, skopeo};

/// The password of tenants `acme` and `umbrella` in these tests.
pub(crate) const SECRET: &str = "s3cret-tenant-password";

/// A plain HTTP client (reqwest wants a TLS provider chosen even so).
pub(crate) fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A value of `kiln serve`'s `/metrics` page.
pub(crate) async fn metric(base: &str, name: &str) -> u64 {
    let page = http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn tenant_config(extra: &str) -> String {
    let hash = format!(
        "{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(SECRET.as_bytes())
    );
    format!(
        "{extra}\n[[tenants]]\nname = \"acme\"\npassword_sha256 = \"{hash}\"\n[[tenants]]\nname = \"umbrella\"\npassword_sha256 = \"{hash}\"\n"
    )
}

/// A running `kiln serve`, stopped (SIGTERM) on drop.
pub(crate) struct Kiln {
    child: Child,
    dir: PathBuf,
    /// What its environment adds (the store's credentials).
    env: Vec<(String, String)>,
    pub(crate) host: String,
}

/// With `KILN_TEST_SERVE_STORAGE=s3` (scripts/test's second pass over the
/// registry suite), a server whose configuration names no storage keeps
/// its registry in the Garage cluster's bucket, under a prefix of its
/// folder's own (the same across restarts).
fn storage_override(
    dir: &Path,
    config: &str,
    env: &[(String, String)],
) -> (String, Vec<(String, String)>) {
    let mut env = env.to_vec();
    if std::env::var("KILN_TEST_SERVE_STORAGE").as_deref() != Ok("s3")
        || config
            .lines()
            .any(|l| l.trim_start().starts_with("storage"))
    {
        return (config.to_owned(), env);
    }
    let (aws, bucket) = s3_env().expect("KILN_TEST_SERVE_STORAGE=s3 needs KILN_TEST_S3_*");
    env.extend(aws);
    let folder = sha256(dir.to_string_lossy().as_bytes());
    let prefix = format!("suite-{}-{}", std::process::id(), &folder[7..19]);
    (
        format!("storage = \"s3://{bucket}/{prefix}\"\n{config}"),
        env,
    )
}

impl Kiln {
    /// Starts `kiln serve` in `dir` (its working directory) with `config`
    /// as its configuration file and `args` added.
    pub(crate) fn start(dir: &Path, config: &str, args: &[&str]) -> Self {
        Self::start_on(dir, config, args, format!("127.0.0.1:{}", free_port()), &[])
    }

    /// Starts it with variables added to its environment.
    pub(crate) fn start_with_env(dir: &Path, config: &str, env: &[(String, String)]) -> Self {
        Self::start_on(dir, config, &[], format!("127.0.0.1:{}", free_port()), env)
    }

    /// Two replicas in `dir/a` and `dir/b` of one configuration (a shared
    /// store), sharing the token key and admin credential as replicas do.
    pub(crate) fn start_replicas(
        dir: &Path,
        config: &str,
        env: &[(String, String)],
    ) -> (Self, Self) {
        let a = Self::start_with_env(&dir.join("a"), config, env);
        let auth = dir.join("a/kiln-data/auth");
        let b_auth = dir.join("b/kiln-data/auth");
        std::fs::create_dir_all(&b_auth).unwrap();
        for f in std::fs::read_dir(&auth).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), b_auth.join(f.file_name())).unwrap();
        }
        let b = Self::start_with_env(&dir.join("b"), config, env);
        (a, b)
    }

    /// Stops this server and starts it again on the same address.
    pub(crate) fn restart(mut self, config: &str, args: &[&str]) -> Self {
        self.stop();
        Self::start_on(&self.dir.clone(), config, args, self.host.clone(), &[])
    }

    /// Kills this server with SIGKILL (nothing it holds is flushed) and
    /// starts it again on the same address and data.
    pub(crate) fn crash_and_restart(mut self, config: &str, env: &[(String, String)]) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Self::start_on(&self.dir.clone(), config, &[], self.host.clone(), env)
    }

    fn start_on(
        dir: &Path,
        config: &str,
        args: &[&str],
        host: String,
        env: &[(String, String)],
    ) -> Self {
        let (config, env) = storage_override(dir, config, env);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("kiln.toml"), config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("kiln.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .current_dir(dir)
            .args(["serve", "--config", "kiln.toml", "--listen", &host])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kiln serve");
        let kiln = Self {
            child,
            dir: dir.to_owned(),
            env,
            host,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&kiln.host).is_ok() {
                return kiln;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kiln serve did not start: {}", kiln.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kiln.log")).unwrap_or_default()
    }

    /// The admin password printed at first start.
    pub(crate) fn admin_password(&self) -> String {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.trim_start().starts_with("password: "))
            .expect("admin password printed");
        line.trim_start()["password: ".len()..].to_owned()
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// Copies `src` (an `oci:` layout reference) to `repo_tag` here with
    /// skopeo as `creds`.
    pub(crate) fn push_oci(&self, src: &str, repo_tag: &str, creds: &str) {
        ok(skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            src,
            &format!("docker://{}/{repo_tag}", self.host),
        ]));
    }

    /// The digest of `repo_tag`'s manifest here, as skopeo reads it.
    pub(crate) fn digest_of(&self, creds: &str, repo_tag: &str) -> String {
        sha256(&ok(skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            creds,
            &format!("docker://{}/{repo_tag}", self.host),
        ])))
    }

    fn oci(&self, user: Option<(&str, &str)>) -> Oci {
        Oci::new(&self.url(), user)
    }

    /// Kills this server with SIGKILL.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs another `kiln` command (`gc`, `scrub`) on this server's store.
    pub(crate) fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .current_dir(&self.dir)
            .args(args)
            .args(["--config", "kiln.toml"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }

    pub(crate) fn log_text(&self) -> String {
        self.log()
    }

    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Kiln {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn zero_configuration_start_prints_the_admin_credential_once_and_keeps_its_hash() {
    let dir = scratch("serve-zero");
    let mut kiln = Kiln::start(&dir, "", &[]);
    let password = kiln.admin_password();
    let hash_file = dir.join("kiln-data/auth/admin.sha256");
    let stored = std::fs::read_to_string(&hash_file).unwrap();
    assert_eq!(
        stored.trim(),
        sha256(password.as_bytes()).trim_start_matches("sha256:")
    );
    assert!(!stored.contains(&password));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&hash_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.join("kiln-data/auth/token-signing.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    kiln.stop();
    let kiln = Kiln::start(&dir, "", &[]);
    assert_eq!(
        kiln.log().matches("password: ").count(),
        1,
        "printed once, not again on restart"
    );
    // The printed credential works after the restart.
    runtime().block_on(async {
        let oci = kiln.oci(Some(("admin", &password)));
        assert_eq!(oci.get("/v2/").await.status(), 200);
        assert_eq!(oci.get("/v2/_catalog").await.status(), 200);
        let wrong = kiln.oci(Some(("admin", "not-it")));
        assert_eq!(wrong.get("/v2/").await.status(), 401);
        let health = http()
            .get(format!("{}/healthz", kiln.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(
            http()
                .get(format!("{}/readyz", kiln.url()))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    });
}

#[test]
fn conformance_workflows_pass_through_token_auth() {
    let dir = scratch("serve-conformance");
    let kiln = Kiln::start(&dir, &tenant_config(""), &[]);
    runtime().block_on(async {
        let oci = kiln.oci(Some(("acme", SECRET)));
        conformance::all(&oci, "acme/conformance", "acme/other").await;
        conformance::pull(&oci, "cache/acme/deep/name").await;
        // The catalog shows what the tenant may pull, nothing else.
        let admin = kiln.oci(Some(("admin", &kiln.admin_password())));
        let (m, _) = push_image(&admin, "umbrella/secret", "v1").await;
        assert_eq!(
            admin
                .get(&format!("/v2/umbrella/secret/manifests/{m}"))
                .await
                .status(),
            200
        );
        let v: serde_json::Value = oci.get("/v2/_catalog").await.json().await.unwrap();
        let repos: Vec<String> = serde_json::from_value(v["repositories"].clone()).unwrap();
        assert!(repos.contains(&"acme/conformance".to_owned()), "{repos:?}");
        assert!(
            !repos.iter().any(|r| r.starts_with("umbrella/")),
            "{repos:?}"
        );
        let v: serde_json::Value = admin.get("/v2/_catalog").await.json().await.unwrap();
        assert!(
            v["repositories"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "umbrella/secret")
        );
    });
}

/// Pushes a one-layer image; returns its manifest digest and layer digest.
async fn push_image(oci: &Oci, repo: &str, tag: &str) -> (String, String) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","author":"{repo}"}}"#);
    let layer = format!("layer of {repo}:{tag}").into_bytes();
    let c = oci.push_blob(repo, config.as_bytes()).await;
    let l = oci.push_blob(repo, &layer).await;
    let m = conformance::manifest(&c, config.len(), &[(l.clone(), layer.len())], "");
    let r = oci
        .put_manifest(repo, tag, "application/vnd.oci.image.manifest.v1+json", &m)
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    (sha256(&m), l)
}

#[test]
fn tenants_cannot_reach_past_their_namespaces() {
    let dir = scratch("serve-tenants");
    let kiln = Kiln::start(&dir, &tenant_config("anonymous_pull = [\"public/*\"]"), &[]);
    runtime().block_on(async {
        let admin = kiln.oci(Some(("admin", &kiln.admin_password())));
        let acme = kiln.oci(Some(("acme", SECRET)));
        let (_, global_layer) = push_image(&admin, "cache/global/node", "v1").await;
        push_image(&admin, "mirror/docker.io/library/alpine", "3").await;
        let (_, secret_layer) = push_image(&admin, "umbrella/secret", "v1").await;
        push_image(&admin, "public/tool", "v1").await;

        // What a tenant may do.
        push_image(&acme, "acme/app", "v1").await;
        push_image(&acme, "cache/acme", "v1").await;
        assert_eq!(
            acme.get("/v2/cache/global/node/manifests/v1")
                .await
                .status(),
            200
        );
        assert_eq!(
            acme.get("/v2/mirror/docker.io/library/alpine/manifests/3")
                .await
                .status(),
            200
        );

        // What it may not: push to the global cache, the mirror namespace or
        // another tenant; read another tenant.
        for repo in [
            "cache/global/node",
            "mirror/docker.io/library/alpine",
            "umbrella/app",
            "cache/umbrella",
        ] {
            let r = acme
                .send(
                    Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/"),
                    &[],
                    vec![],
                )
                .await;
            assert_eq!(r.status(), 401, "push to {repo}");
            assert_eq!(error_code(r).await, "UNAUTHORIZED");
        }
        assert_eq!(
            acme.get("/v2/umbrella/secret/manifests/v1").await.status(),
            401
        );
        assert_eq!(
            acme.get("/v2/umbrella/secret/tags/list").await.status(),
            401
        );
        assert_eq!(
            acme.get(&format!("/v2/umbrella/secret/referrers/{}", sha256(b"x")))
                .await
                .status(),
            401
        );
        // A mount from a repository it may not pull opens an upload instead.
        let r = acme
            .send(
                Method::POST,
                &format!("/v2/acme/app/blobs/uploads/?mount={secret_layer}&from=umbrella/secret"),
                &[],
                vec![],
            )
            .await;
        assert_eq!(r.status(), 202);
        let r = acme
            .send(
                Method::POST,
                &format!("/v2/acme/app/blobs/uploads/?mount={secret_layer}"),
                &[],
                vec![],
            )
            .await;
        assert_eq!(
            r.status(),
            202,
            "no automatic mount from an unpullable repository"
        );
        assert_eq!(
            acme.get(&format!("/v2/acme/app/blobs/{secret_layer}"))
                .await
                .status(),
            404
        );
        // ... and from one it may pull, mounts.
        let r = acme
            .send(
                Method::POST,
                &format!("/v2/acme/app/blobs/uploads/?mount={global_layer}"),
                &[],
                vec![],
            )
            .await;
        assert_eq!(r.status(), 201);
        // Deleting in another tenant's namespace.
        let r = acme.delete("/v2/umbrella/secret/manifests/v1").await;
        assert_eq!(r.status(), 401);

        // Basic credentials straight to the registry: the same policy, 403.
        let r = kiln
            .oci(None)
            .http
            .post(format!(
                "{}/v2/cache/global/node/blobs/uploads/",
                kiln.url()
            ))
            .basic_auth("acme", Some(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);

        // Anonymous clients: only the configured patterns, pull only.
        let anon = kiln.oci(None);
        assert_eq!(anon.get("/v2/public/tool/manifests/v1").await.status(), 200);
        assert_eq!(anon.get("/v2/acme/app/manifests/v1").await.status(), 401);
        let r = anon
            .send(Method::POST, "/v2/public/tool/blobs/uploads/", &[], vec![])
            .await;
        assert_eq!(r.status(), 401);
        assert_eq!(anon.get("/v2/_catalog").await.status(), 401);

        // Nothing of the refused pushes was stored.
        let v: serde_json::Value = admin.get("/v2/_catalog").await.json().await.unwrap();
        let repos: Vec<String> = serde_json::from_value(v["repositories"].clone()).unwrap();
        assert_eq!(
            repos,
            [
                "acme/app",
                "cache/acme",
                "cache/global/node",
                "mirror/docker.io/library/alpine",
                "public/tool",
                "umbrella/secret"
            ]
        );
    });
}

/// A JWT signed with HS256 by `secret`, with `header` and `claims`.
fn hs256_jwt(header: &serde_json::Value, claims: &serde_json::Value, secret: &[u8]) -> String {
    let alg = match header["alg"].as_str() {
        Some("HS256") => jsonwebtoken::Algorithm::HS256,
        _ => unreachable!(),
    };
    let mut h = jsonwebtoken::Header::new(alg);
    h.kid = header["kid"].as_str().map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap()
}

fn b64(v: &serde_json::Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn token_attacks_get_401_and_write_nothing() {
    let dir = scratch("serve-attacks");
    let kiln = Kiln::start(&dir, &tenant_config(""), &[]);
    let key = std::fs::read(dir.join("kiln-data/auth/token-signing.key")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |aud: &str, exp: u64, repo: &str| {
        serde_json::json!({
            "iss": "kiln", "sub": "tenant:acme", "aud": aud, "exp": exp, "iat": now - 10,
            "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}],
        })
    };
    let jwt_header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "kiln-1"});
    // An RSA key pair, for a token that names RS256 under our key id.
    let pem = dir.join("rsa.pem");
    ok(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&pem)
        .arg("2048")
        .output()
        .unwrap());
    let rsa = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&pem).unwrap()).unwrap();
    let mut rs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    rs_header.kid = Some("kiln-1".into());

    let target = "cache/global/node";
    let good = hs256_jwt(&jwt_header, &claims("kiln", now + 300, "acme/app"), &key);
    let attacks = [
        (
            "expired",
            hs256_jwt(&jwt_header, &claims("kiln", now - 3600, target), &key),
        ),
        (
            "wrong key",
            hs256_jwt(&jwt_header, &claims("kiln", now + 300, target), &[9u8; 32]),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
                b64(&claims("kiln", now + 300, target))
            ),
        ),
        (
            "RS256 under the HS256 key id",
            jsonwebtoken::encode(&rs_header, &claims("kiln", now + 300, target), &rsa).unwrap(),
        ),
        (
            "HS256 signed with the key id as secret",
            hs256_jwt(
                &jwt_header,
                &claims("kiln", now + 300, target),
                b"kiln-1kiln-1kiln-1kiln-1kiln-1kiln-1",
            ),
        ),
        (
            "wrong audience",
            hs256_jwt(
                &jwt_header,
                &claims("other-registry", now + 300, target),
                &[9u8; 32],
            ),
        ),
        (
            "audience of refresh tokens",
            hs256_jwt(
                &jwt_header,
                &claims("kiln/refresh", now + 300, target),
                &key,
            ),
        ),
        ("scope for another repository", good.clone()),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    runtime().block_on(async {
        let http = http();
        // The real token works for its own repository.
        let r = http
            .post(format!("{}/v2/acme/app/blobs/uploads/", kiln.url()))
            .bearer_auth(&good)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        for (what, token) in &attacks {
            let r = http
                .post(format!("{}/v2/{target}/blobs/uploads/", kiln.url()))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{what}");
            let challenge = header(&r, "www-authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer realm=") && challenge.contains("error="),
                "{what}: {challenge}"
            );
        }
        // The token endpoint grants a tenant nothing in the global cache.
        let v: serde_json::Value = http
            .get(format!(
                "{}/token?service=kiln&scope=repository:{target}:push,pull",
                kiln.url()
            ))
            .basic_auth("acme", Some(SECRET))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let granted = v["token"].as_str().unwrap();
        let payload = granted.split('.').nth(1).unwrap();
        use base64::Engine as _;
        let payload: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            payload["access"],
            serde_json::json!([{"type": "repository", "name": target, "actions": ["pull"]}])
        );
        let r = http
            .post(format!("{}/v2/{target}/blobs/uploads/", kiln.url()))
            .bearer_auth(granted)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(
            header(&r, "www-authenticate")
                .unwrap()
                .contains("insufficient_scope")
        );
        // A wrong service is refused outright.
        let r = http
            .get(format!("{}/token?service=elsewhere", kiln.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        // Oversized manifests and manifests naming missing blobs.
        let acme = kiln.oci(Some(("acme", SECRET)));
        // With a token from the start: a 401 challenge answered before the
        // 4 MiB body is read would end the connection under the client.
        let v: serde_json::Value = http
            .get(format!(
                "{}/token?service=kiln&scope=repository:acme/app:pull,push",
                kiln.url()
            ))
            .basic_auth("acme", Some(SECRET))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let r = http
            .put(format!("{}/v2/acme/app/manifests/big", kiln.url()))
            .bearer_auth(v["token"].as_str().unwrap())
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(vec![b' '; (4 << 20) + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        let dangling = conformance::manifest(&sha256(b"missing config"), 14, &[], "");
        let r = acme
            .put_manifest(
                "acme/app",
                "dangling",
                "application/vnd.oci.image.manifest.v1+json",
                &dangling,
            )
            .await;
        assert_eq!(r.status(), 400);
        assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    });
    // Nothing was written but the one upload session the good token
    // opened (asked through the API and the store, so on either backend).
    runtime().block_on(async {
        let admin = kiln.oci(Some(("admin", &kiln.admin_password())));
        let v: serde_json::Value = admin.get("/v2/_catalog").await.json().await.unwrap();
        assert_eq!(
            v["repositories"],
            serde_json::json!([]),
            "a repository was created"
        );
        assert_eq!(metric(&kiln.url(), "kiln_upload_sessions").await, 1);
    });
    let scrub = kiln.command(&["scrub", "--json"]);
    assert!(
        scrub.status.success(),
        "{}",
        String::from_utf8_lossy(&scrub.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&scrub.stdout).unwrap();
    assert_eq!(report["blobs"], 0, "a blob was stored: {report}");
}

#[test]
fn bad_credentials_are_rate_limited_per_address() {
    let dir = scratch("serve-ratelimit");
    let kiln = Kiln::start(&dir, &tenant_config(""), &[]);
    runtime().block_on(async {
        let http = http();
        let token = |user: &'static str, pass: &'static str| {
            http.get(format!("{}/token?service=kiln", kiln.url()))
                .basic_auth(user, Some(pass))
                .send()
        };
        for _ in 0..10 {
            assert_eq!(token("acme", "wrong").await.unwrap().status(), 401);
        }
        assert_eq!(token("acme", "wrong").await.unwrap().status(), 429);
        assert_eq!(
            token("acme", SECRET).await.unwrap().status(),
            429,
            "even the right password, for a while"
        );
        let r = http
            .post(format!("{}/token", kiln.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=password&username=acme&password={SECRET}&service=kiln"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
    });
}

#[test]
fn oauth2_password_and_refresh_grants() {
    let dir = scratch("serve-oauth");
    let kiln = Kiln::start(&dir, &tenant_config(""), &[]);
    runtime().block_on(async {
        let http = http();
        let post = |body: String| {
            http.post(format!("{}/token", kiln.url()))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
        };
        let v: serde_json::Value = post(format!(
            "grant_type=password&username=acme&password={SECRET}&service=kiln&client_id=podman&access_type=offline&scope=repository%3Aacme%2Fapp%3Apull%2Cpush"
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let access = v["access_token"].as_str().unwrap().to_owned();
        let refresh = v["refresh_token"].as_str().unwrap().to_owned();
        let r = http
            .post(format!("{}/v2/acme/app/blobs/uploads/", kiln.url()))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = post(format!(
            "grant_type=refresh_token&refresh_token={refresh}&service=kiln&client_id=podman&scope=repository%3Aacme%2Fapp%3Apull"
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert!(v["access_token"].is_string(), "{v}");
        // A refresh token is no access token, nor the other way round.
        let r = http
            .get(format!("{}/v2/acme/app/tags/list", kiln.url()))
            .bearer_auth(&refresh)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = post(format!("grant_type=refresh_token&refresh_token={access}&service=kiln")).await.unwrap();
        assert_eq!(r.status(), 401);
        let r = post("grant_type=client_credentials".into()).await.unwrap();
        assert_eq!(r.status(), 400);
    });
}

/// An OCI layout with a one-platform image `v1` and a two-platform index
/// `multi`.
fn layouts(dir: &Path) -> (Layout, Layout) {
    let single = Layout::new(&dir.join("single"));
    let amd64 = single.image(1, &[300_000, 5_000], "amd64");
    single.tag("v1", &[(amd64.0, amd64.1, "amd64")]);
    let multi = Layout::new(&dir.join("multi"));
    let a = multi.image(2, &[100_000], "amd64");
    let b = multi.image(3, &[100_000], "arm64");
    multi.tag("multi", &[(a.0, a.1, "amd64"), (b.0, b.1, "arm64")]);
    (single, multi)
}

#[test]
fn skopeo_copies_images_and_indexes_in_and_out_through_the_token_flow() {
    if !have("skopeo") {
        return;
    }
    let dir = scratch("serve-clients");
    let kiln = Kiln::start(&dir, &tenant_config(""), &[]);
    let (single, multi) = layouts(&dir);
    let host = &kiln.host;
    let creds = format!("acme:{SECRET}");
    // skopeo in, by tag and the whole index.
    let src = format!("oci:{}:v1", single.dir.display());
    kiln.push_oci(&src, "acme/app:v1", &creds);
    let src = format!("oci:{}:multi", multi.dir.display());
    ok(skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &src,
        &format!("docker://{host}/acme/multi:v1"),
    ]));
    // ... and out again, byte for byte.
    let raw = ok(skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{host}/acme/multi:v1"),
    ]));
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    let out = dir.join("out");
    ok(skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{host}/acme/multi:v1"),
        &format!("oci:{}:back", out.display()),
    ]));
    // What skopeo pushed (it compresses uncompressed layers on the way)
    // is what comes back, byte for byte.
    let back: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        back["manifests"][0]["digest"].as_str().unwrap(),
        sha256(&raw),
        "the index round-trips unchanged"
    );
    // Wrong credentials fail.
    let bad = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "acme:wrong",
        &format!("docker://{host}/acme/app:v1"),
    ]);
    assert!(!bad.status.success());
}

#[test]
fn podman_and_buildah_push_and_pull_through_the_token_flow() {
    if !(have("skopeo") && have("podman") && have("buildah")) {
        return;
    }
    // They unpack what they pull: a real image (busybox, from scripts/test-images).
    let Some(images) = crate::ext4::images() else {
        return;
    };
    let dir = scratch("serve-podman");
    let kiln = Kiln::start(&dir, &tenant_config(""), &[]);
    let host = &kiln.host;
    let creds = format!("acme:{SECRET}");
    let src = format!("oci:{}:busybox", images.display());
    kiln.push_oci(&src, "acme/app:v1", &creds);
    // podman pull and push, buildah push, each with their own storage.
    // podman refuses a run root path over 50 characters: a short one.
    let run = tempfile::tempdir().unwrap();
    let storage = |tool: &str| {
        let mut c = Command::new(tool);
        c.arg("--root")
            .arg(dir.join("containers"))
            .arg("--runroot")
            .arg(run.path())
            .args(["--storage-driver", "vfs"]);
        c
    };
    ok(storage("podman")
        .args([
            "pull",
            "--tls-verify=false",
            "--creds",
            &creds,
            &format!("{host}/acme/app:v1"),
        ])
        .output()
        .unwrap());
    ok(storage("podman")
        .args([
            "push",
            "--tls-verify=false",
            "--creds",
            &creds,
            &format!("{host}/acme/app:v1"),
            &format!("{host}/acme/podman:v1"),
        ])
        .output()
        .unwrap());
    ok(storage("buildah")
        .args([
            "push",
            "--tls-verify=false",
            "--creds",
            &creds,
            &format!("{host}/acme/app:v1"),
            &format!("docker://{host}/acme/buildah:v1"),
        ])
        .output()
        .unwrap());
    for repo in ["acme/podman", "acme/buildah"] {
        ok(skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--creds",
            &creds,
            &format!("docker://{host}/{repo}:v1"),
        ]));
    }
    // A tenant's client cannot push into another namespace.
    let refused = storage("podman")
        .args([
            "push",
            "--tls-verify=false",
            "--creds",
            &creds,
            &format!("{host}/acme/app:v1"),
            &format!("{host}/cache/global/x:v1"),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[test]
fn containerd_pulls_through_the_token_flow() {
    if !(have("containerd") && have("ctr") && have("skopeo")) {
        return;
    }
    // ctr unpacks what it pulls: a real image (busybox, from scripts/test-images).
    let Some(images) = crate::ext4::images() else {
        return;
    };
    let dir = scratch("serve-ctr");
    let kiln = Kiln::start(&dir, &tenant_config(""), &[]);
    let creds = format!("acme:{SECRET}");
    let src = format!("oci:{}:busybox", images.display());
    kiln.push_oci(&src, "acme/app:v1", &creds);

    let c = dir.join("containerd");
    let sock = c.join("containerd.sock");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("config.toml"),
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{1}\"\n[ttrpc]\n  address = \"{1}.ttrpc\"\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            c.display(),
            sock.display()
        ),
    )
    .unwrap();
    let mut daemon = ChildGuard(
        Command::new("containerd")
            .arg("--config")
            .arg(c.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(c.join("log")).unwrap())
            .spawn()
            .expect("start containerd"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ctr = |args: &[&str]| {
        Command::new("ctr")
            .arg("-a")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap()
    };
    let image = format!("{}/acme/app:v1", kiln.host);
    ok(ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        &creds,
        &image,
    ]));
    let listed = String::from_utf8(ok(ctr(&["images", "ls", "-q"]))).unwrap();
    assert!(listed.contains(&image), "{listed}");
    let refused = ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        "acme:wrong",
        &image,
    ]);
    assert!(!refused.status.success());
    daemon.0.kill().ok();
}

/// Kills a helper process when the test ends, however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// oras (PyPI `oras`, from `KILN_ORAS_PYTHON`) pushes an artifact whose
/// subject is an image, pulls it back, and the referrers API finds it.
#[test]
fn oras_pushes_an_artifact_with_a_subject_that_the_referrers_api_finds() {
    let Some(python) = oras_python() else { return };
    if !have("skopeo") {
        return;
    }
    let dir = scratch("serve-oras");
    let kiln = Kiln::start(&dir, &tenant_config(""), &[]);
    let (single, _) = layouts(&dir);
    let creds = format!("acme:{SECRET}");
    let src = format!("oci:{}:v1", single.dir.display());
    kiln.push_oci(&src, "acme/app:v1", &creds);
    let subject = ok(skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{}/acme/app:v1", kiln.host),
    ]));
    let subject_digest = sha256(&subject);
    std::fs::write(dir.join("sbom.json"), br#"{"packages":[]}"#).unwrap();
    // oras-py's token backend reuses its first token even when a request
    // needs a wider scope (it asks again only after a 403): its basic
    // backend, which this server accepts on the registry routes, is the one
    // that works with scoped tokens here.
    let script = r#"
import sys, oras.client, oras.oci
host, user, pw, target, digest, size, out = sys.argv[1:]
c = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
c.login(username=user, password=pw, hostname=host)
subject = oras.oci.Subject(mediaType="application/vnd.oci.image.manifest.v1+json", digest=digest, size=int(size))
r = c.push(target=target, files=["sbom.json"], subject=subject, disable_path_validation=True)
assert r.status_code == 201, r.status_code
assert r.headers.get("OCI-Subject") == digest, r.headers
print(c.pull(target=target, outdir=out))
"#;
    let out = Command::new(&python)
        .current_dir(&dir)
        .args(["-I", "-c", script, &kiln.host, "acme", SECRET])
        .arg(format!("{}/acme/app:sbom", kiln.host))
        .arg(&subject_digest)
        .arg(subject.len().to_string())
        .arg(dir.join("pulled"))
        .output()
        .unwrap();
    ok(out);
    assert_eq!(
        std::fs::read(dir.join("pulled/sbom.json")).unwrap(),
        br#"{"packages":[]}"#
    );
    runtime().block_on(async {
        let oci = kiln.oci(Some(("acme", SECRET)));
        let r = oci
            .get(&format!("/v2/acme/app/referrers/{subject_digest}"))
            .await;
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        let found = v["manifests"].as_array().unwrap();
        assert_eq!(found.len(), 1, "{v}");
        let sbom = oci.get("/v2/acme/app/manifests/sbom").await;
        assert_eq!(
            header(&sbom, "docker-content-digest").unwrap(),
            found[0]["digest"].as_str().unwrap()
        );
    });
}

/// `KILN_ORAS_PYTHON`: a Python with PyPI `oras` (`scripts/test` makes
/// `target/oras-venv`). Unset: a failure in CI, a loud skip elsewhere.
fn oras_python() -> Option<PathBuf> {
    match std::env::var_os("KILN_ORAS_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            let msg = "KILN_ORAS_PYTHON is unset (a Python with PyPI `oras`; scripts/test creates target/oras-venv)";
            assert!(std::env::var("CI").is_err(), "{msg}: required in CI");
            eprintln!("\n\n!!!!! SKIPPING: {msg} !!!!!\n\n");
            None
        }
    }
}

/// Polls `/kiln/v1/images/<digest>` until the conversion leaves
/// pending/converting (bounded: two minutes).
pub(crate) async fn conversion(oci: &Oci, digest: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = oci.get(&format!("/kiln/v1/images/{digest}")).await;
        assert_eq!(r.status(), 200, "{digest}");
        let v: serde_json::Value = r.json().await.unwrap();
        if !matches!(v["state"].as_str(), Some("pending" | "converting")) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "conversion of {digest} still {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn pushed_images_convert_to_ext4_and_caches_and_artifacts_are_skipped() {
    if !(have("skopeo") && have("e2fsck")) {
        return;
    }
    let Some(images) = crate::ext4::images() else {
        return;
    };
    let dir = scratch("serve-convert");
    let mut kiln = Kiln::start(&dir, &tenant_config(""), &[]);
    let admin_password = kiln.admin_password();
    let creds = format!("acme:{SECRET}");
    let push = |tag: &str, to: &str, creds: &str, all: bool| {
        let src = format!("oci:{}:{tag}", images.display());
        let dst = format!("docker://{}/{to}", kiln.host);
        let mut args = vec!["copy", "--dest-tls-verify=false", "--dest-creds", creds];
        if all {
            args.push("--all");
        }
        args.extend([src.as_str(), dst.as_str()]);
        ok(skopeo(&args));
    };
    push("debian", "acme/debian:v1", &creds, false);
    push("multi", "acme/multi:v1", &creds, true);
    push("buildkit-cache", "cache/acme:node", &creds, false);
    push("buildkit-cache", "acme/not-a-cache:v1", &creds, false);
    push("busybox", "cache/acme:runnable", &creds, false);
    push("artifact", "acme/sbom:v1", &creds, false);
    let admin = format!("admin:{admin_password}");
    push("buildkit-cache", "cache/global/node:latest", &admin, false);
    let debian = kiln.digest_of(&creds, "acme/debian:v1");
    let multi = kiln.digest_of(&creds, "acme/multi:v1");
    let cache = kiln.digest_of(&creds, "cache/acme:node");
    let runnable_cache = kiln.digest_of(&creds, "cache/acme:runnable");
    let artifact = kiln.digest_of(&creds, "acme/sbom:v1");

    let out = dir.join("debian.ext4");
    runtime().block_on(async {
        let oci = kiln.oci(Some(("acme", SECRET)));
        let v = conversion(&oci, &debian).await;
        assert_eq!(v["state"], "ready", "{v}");
        assert_eq!(v["repository"], "acme/debian");
        let r = oci.get(&format!("/kiln/v1/images/{debian}/ext4")).await;
        assert_eq!(r.status(), 200);
        std::fs::write(&out, r.bytes().await.unwrap()).unwrap();
        let run: serde_json::Value = oci
            .get(&format!("/kiln/v1/images/{debian}/metadata"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(run["env"], serde_json::json!(["FOO=bar"]), "{run}");

        // An index converts this host's platform.
        let v = conversion(&oci, &multi).await;
        assert_eq!(v["state"], "ready", "{v}");
        let index: serde_json::Value = serde_json::from_slice(&ok(skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &creds,
            &format!("docker://{}/acme/multi:v1", kiln.host),
        ])))
        .unwrap();
        let amd64 = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64")
            .unwrap();
        assert_eq!(v["image_manifest"], amd64["digest"]);

        // Caches and artifacts: skipped with a reason, never failed. A
        // runnable image in a cache repository is not converted; a cache
        // manifest pushed elsewhere too is looked at, and is not runnable.
        let v = conversion(&oci, &runnable_cache).await;
        assert_eq!(
            (v["state"].as_str(), v["reason"].as_str()),
            (Some("skipped"), Some("cache repository")),
            "{v}"
        );
        let v = conversion(&oci, &cache).await;
        assert_eq!(v["state"], "skipped", "{v}");
        assert!(
            v["reason"]
                .as_str()
                .unwrap()
                .contains("not a runnable image"),
            "{v}"
        );
        let v = conversion(&oci, &artifact).await;
        assert_eq!(v["state"], "skipped", "{v}");
        assert!(
            v["reason"]
                .as_str()
                .unwrap()
                .contains("not a runnable image"),
            "{v}"
        );

        // Another tenant cannot see acme's conversions; no credentials get a challenge.
        let umbrella = kiln.oci(Some(("umbrella", SECRET)));
        assert_eq!(
            umbrella
                .get(&format!("/kiln/v1/images/{debian}"))
                .await
                .status(),
            404
        );
        let r = http()
            .get(format!("{}/kiln/v1/images/{debian}", kiln.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(
            header(&r, "www-authenticate")
                .unwrap()
                .contains("repository:acme/debian:pull")
        );
        assert_eq!(
            oci.get(&format!("/kiln/v1/images/{}", sha256(b"never pushed")))
                .await
                .status(),
            404
        );

        let metrics = http()
            .get(format!("{}/metrics", kiln.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("kiln_conversions{state=\"ready\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains(
                "kiln_http_requests_total{route=\"manifests\",method=\"PUT\",status=\"201\"}"
            ),
            "{metrics}"
        );
    });
    // The ext4 is a clean file system, byte for byte what `kiln ext4
    // convert` (whose fidelity against umoci is tested) makes of the image.
    ok(Command::new("e2fsck")
        .arg("-fn")
        .arg(&out)
        .output()
        .unwrap());
    let cli = dir.join("cli.ext4");
    ok(Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "ext4",
            "convert",
            &format!("oci:{}:debian", images.display()),
            "-o",
        ])
        .arg(&cli)
        .output()
        .unwrap());
    assert!(
        std::fs::read(&cli).unwrap() == std::fs::read(&out).unwrap(),
        "server and CLI conversions differ"
    );

    // A conversion that was running when the server stopped runs again:
    // its record (in the registry's store) says converting, it is still
    // listed as pending, and its output is gone.
    kiln.stop();
    let conversions = dir.join("kiln-data/conversions");
    let docs = dir.join("kiln-data/registry/docs");
    let stem = debian.replace(':', "-");
    let state_file = docs.join(format!("conversions/{stem}"));
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(state["state"], "ready");
    state["state"] = "converting".into();
    std::fs::write(&state_file, state.to_string()).unwrap();
    std::fs::write(docs.join(format!("conversions-pending/{stem}")), b"").unwrap();
    std::fs::remove_file(conversions.join(format!("{stem}.ext4"))).unwrap();
    let kiln = Kiln::start(&dir, &tenant_config(""), &[]);
    runtime().block_on(async {
        let oci = kiln.oci(Some(("acme", SECRET)));
        let v = conversion(&oci, &debian).await;
        assert_eq!(v["state"], "ready", "{v}");
    });
    assert!(
        std::fs::read(&cli).unwrap()
            == std::fs::read(conversions.join(format!("{stem}.ext4"))).unwrap()
    );
}

#[test]
fn the_admin_mirrors_upstream_images_and_dockerfiles_tenants_pull_them() {
    if !(have("docker-registry") && have("skopeo")) {
        return;
    }
    let dir = scratch("serve-mirror");
    let upstream = crate::peers::Registry::start(&dir.join("upstream"));
    let (single, _) = layouts(&dir);
    single.push("v1", &format!("{}/team/app:v1", upstream.host), false);
    let config = tenant_config(&format!(
        "[[upstreams]]\nregistry = \"{}\"\ninsecure = true\n",
        upstream.host
    ));
    let kiln = Kiln::start(&dir.join("kiln"), &config, &[]);
    let admin_password = kiln.admin_password();
    let component = upstream.host.replace(':', "__");
    runtime().block_on(async {
        let post = |path: &str, user: &str, password: &str, body: serde_json::Value| {
            http()
                .post(format!("{}{path}", kiln.url()))
                .basic_auth(user, Some(password))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
        };
        let source = format!("{}/team/app:v1", upstream.host);
        // Tenants may not mirror.
        let r = post("/kiln/v1/mirror", "acme", SECRET, serde_json::json!({"source": source})).await.unwrap();
        assert_eq!(r.status(), 403);
        let r = http().post(format!("{}/kiln/v1/mirror", kiln.url())).send().await.unwrap();
        assert_eq!(r.status(), 401);

        let r = post("/kiln/v1/mirror", "admin", &admin_password, serde_json::json!({"source": source})).await.unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        let target = format!("{}/mirror/{component}/team/app:v1", kiln.host);
        assert_eq!(v["target"], target, "{v}");
        // A tenant pulls the copy; it is the upstream's manifest, byte for byte.
        let acme = kiln.oci(Some(("acme", SECRET)));
        let r = acme.get(&format!("/v2/mirror/{component}/team/app/manifests/v1")).await;
        assert_eq!(r.status(), 200);
        let ours = r.bytes().await.unwrap();
        assert_eq!(&ours[..], &crate::peers::raw_manifest(&source)[..]);

        // An explicit target; a source that cannot be reached fails clearly.
        let r = post("/kiln/v1/mirror", "admin", &admin_password, serde_json::json!({"source": source, "target": "base/app:v1"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = post("/kiln/v1/mirror", "admin", &admin_password, serde_json::json!({"source": "127.0.0.1:9/x:1"})).await.unwrap();
        assert_eq!(r.status(), 502);
        assert!(r.json::<serde_json::Value>().await.unwrap()["error"].is_string());
        let r = post("/kiln/v1/mirror", "admin", &admin_password, serde_json::json!({"source": "Bad/Name"})).await.unwrap();
        assert_eq!(r.status(), 400);

        // A Dockerfile: what mirrors is rewritten, what fails stays as written.
        let dockerfile = format!(
            "ARG TAG=v1\nFROM {}/team/app:$TAG AS base\nRUN true\nFROM 127.0.0.1:9/missing:1\nCOPY --from=base /x /x\n",
            upstream.host
        );
        let r = post("/kiln/v1/mirror/dockerfile", "admin", &admin_password, serde_json::json!({"dockerfile": dockerfile}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        let text = v["dockerfile"].as_str().unwrap();
        assert!(text.contains(&format!("FROM {target} AS base\n")), "{text}");
        assert!(text.contains("FROM 127.0.0.1:9/missing:1\n"), "{text}");
        let images = v["images"].as_array().unwrap();
        assert_eq!(images.len(), 2, "{v}");
        assert!(images.iter().any(|i| i["reference"] == "127.0.0.1:9/missing:1" && i["error"].is_string()), "{v}");
        // BuildKit's error, with its line.
        let r = post("/kiln/v1/mirror/dockerfile", "admin", &admin_password, serde_json::json!({"dockerfile": "FROM alpine\nFOO bar\n"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("unknown instruction: FOO"), "{v}");
        assert_eq!(v["line"], 2);
    });
}

#[test]
fn tls_serves_https_with_http2_to_real_clients() {
    if !(have("openssl") && have("curl") && have("skopeo") && have("docker-registry")) {
        return;
    }
    let dir = scratch("serve-tls");
    // A CA, and a server certificate it signed for 127.0.0.1.
    let (ca_key, cert) = (dir.join("ca.key"), dir.join("ca.pem"));
    let (key, leaf) = (dir.join("leaf.key"), dir.join("leaf.pem"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let openssl = |args: &[&str], paths: &[(&str, &Path)]| {
        let mut c = Command::new("openssl");
        c.args(args);
        for (flag, path) in paths {
            c.arg(flag).arg(path);
        }
        ok(c.output().unwrap());
    };
    let ca_args = [
        &["req", "-x509", "-days", "1", "-subj", "/CN=kiln-test-ca"][..],
        &ec[..],
    ]
    .concat();
    openssl(&ca_args, &[("-keyout", &ca_key), ("-out", &cert)]);
    let csr_args = [&["req", "-subj", "/CN=127.0.0.1"][..], &ec[..]].concat();
    openssl(
        &csr_args,
        &[("-keyout", &key), ("-out", &dir.join("leaf.csr"))],
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &["x509", "-req", "-days", "1", "-set_serial", "1"],
        &[
            ("-in", &dir.join("leaf.csr")),
            ("-CA", &cert),
            ("-CAkey", &ca_key),
            ("-extfile", &dir.join("leaf.ext")),
            ("-out", &leaf),
        ],
    );
    let upstream = crate::peers::Registry::start(&dir.join("upstream"));
    let (single, _) = layouts(&dir);
    single.push("v1", &format!("{}/team/app:v1", upstream.host), false);
    let config = tenant_config(&format!(
        "[[upstreams]]\nregistry = \"{}\"\ninsecure = true\n",
        upstream.host
    ));
    let kiln = Kiln::start(
        &dir.join("kiln"),
        &config,
        &[
            "--tls-cert",
            leaf.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = format!("https://{}", kiln.host);
    // HTTP/2 by ALPN, and the challenge names an HTTPS realm.
    let out = ok(Command::new("curl")
        .args(["-s", "--http2", "--cacert"])
        .arg(&cert)
        .args(["-o", "/dev/null", "-D", "-", "-w", "%{http_version}\n"])
        .arg(format!("{url}/v2/"))
        .output()
        .unwrap());
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("HTTP/2 401"), "{out}");
    assert!(out.contains(&format!("realm=\"{url}/token\"")), "{out}");
    assert!(out.trim_end().ends_with('2'), "{out}");
    // Plain HTTP to the TLS port gets nowhere.
    let plain = Command::new("curl")
        .args(["-s", "-m", "5"])
        .arg(format!("http://{}/v2/", kiln.host))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("UNAUTHORIZED"));
    // skopeo through the token flow, verifying the certificate.
    let certs = dir.join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&cert, certs.join("ca.crt")).unwrap();
    let src = format!("oci:{}:v1", single.dir.display());
    ok(skopeo(&[
        "copy",
        "--dest-cert-dir",
        certs.to_str().unwrap(),
        "--dest-creds",
        &format!("acme:{SECRET}"),
        &src,
        &format!("docker://{}/acme/app:v1", kiln.host),
    ]));
    // The mirror copies into this server over TLS, verifying its certificate.
    let admin = kiln.admin_password();
    let out = ok(Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&cert)
        .args([
            "-u",
            &format!("admin:{admin}"),
            "-H",
            "content-type: application/json",
            "-d",
        ])
        .arg(format!(r#"{{"source":"{}/team/app:v1"}}"#, upstream.host))
        .arg(format!("{url}/kiln/v1/mirror"))
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(v["digest"].is_string(), "{v}");
}

#[test]
fn legacy_format_tokens_are_accepted_when_configured_and_name_no_principal() {
    let dir = scratch("serve-legacy");
    std::fs::create_dir_all(&dir).unwrap();
    let secret = b"an old platform's legacy token secret, long enough";
    std::fs::write(dir.join("legacy.key"), secret).unwrap();
    let kiln = Kiln::start(
        &dir,
        &tenant_config(
            "[legacy_tokens]\nsecret_file = \"legacy.key\"\nissuer = \"builder-platform\"\n",
        ),
        &[],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let legacy = |sub: &str, scope: &str, iss: &str, key: &[u8]| {
        let claims = serde_json::json!({
            "iss": iss, "sub": sub, "iat": now, "exp": now + 300,
            "build_id": "7", "repos": ["acme/app"], "scope": scope,
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key),
        )
        .unwrap()
    };
    runtime().block_on(async {
        let upload = |token: String, repo: &'static str| {
            http()
                .post(format!("{}/v2/{repo}/blobs/uploads/", kiln.url()))
                .bearer_auth(token)
                .send()
        };
        let push = legacy("builder-7", "push", "builder-platform", secret);
        assert_eq!(
            upload(push.clone(), "acme/app").await.unwrap().status(),
            202
        );
        assert_eq!(
            upload(push.clone(), "acme/other").await.unwrap().status(),
            401
        );
        let r = http()
            .get(format!("{}/v2/", kiln.url()))
            .bearer_auth(&push)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "a valid token may ping");
        let pull = legacy("builder-7", "pull", "builder-platform", secret);
        assert_eq!(upload(pull, "acme/app").await.unwrap().status(), 401);
        assert_eq!(
            upload(
                legacy("builder-7", "push", "someone-else", secret),
                "acme/app"
            )
            .await
            .unwrap()
            .status(),
            401
        );
        assert_eq!(
            upload(
                legacy(
                    "builder-7",
                    "push",
                    "builder-platform",
                    b"a different secret, also long enough!!"
                ),
                "acme/app"
            )
            .await
            .unwrap()
            .status(),
            401
        );
        // A legacy token saying it is the admin is still only its grants.
        let forged = legacy("admin", "push", "builder-platform", secret);
        let r = http()
            .post(format!("{}/kiln/v1/mirror", kiln.url()))
            .bearer_auth(&forged)
            .header("content-type", "application/json")
            .body(r#"{"source":"127.0.0.1:9/x:1"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    });
}

#[test]
fn shutdown_lets_an_upload_in_flight_finish_and_then_exits() {
    let dir = scratch("serve-shutdown");
    let mut kiln = Kiln::start(&dir, "", &["--open"]);
    let pid = kiln.child.id().to_string();
    runtime().block_on(async {
        let oci = kiln.oci(None);
        let r = oci
            .send(Method::POST, "/v2/a/blobs/uploads/", &[], vec![])
            .await;
        let upload = format!("{}{}", kiln.url(), crate::client::location(&r));
        // A chunk that arrives slowly: the first half, SIGTERM, the rest.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
        let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
        let patch = tokio::spawn(
            http()
                .patch(&upload)
                .header("content-range", "0-1999")
                .body(body)
                .send(),
        );
        tx.send(Ok(vec![1; 1000])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        // New connections are no longer accepted; the upload goes on.
        assert!(
            std::net::TcpStream::connect(&kiln.host).is_err(),
            "still accepting after SIGTERM"
        );
        tx.send(Ok(vec![2; 1000])).await.unwrap();
        drop(tx);
        let r = patch.await.unwrap().unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(header(&r, "range").as_deref(), Some("0-1999"));
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while kiln.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "kiln serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(kiln.child.try_wait().unwrap().unwrap().success());
}

/// A stream of what the channel receives.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[test]
fn pull_through_fetches_misses_and_rechecks_stale_tags() {
    if !(have("docker-registry") && have("skopeo")) {
        return;
    }
    let dir = scratch("serve-pull-through");
    let upstream = crate::peers::Registry::start(&dir.join("upstream"));
    let other = crate::peers::Registry::start(&dir.join("other"));
    let (single, multi) = layouts(&dir);
    single.push("v1", &format!("{}/team/app:v1", upstream.host), false);
    single.push("v1", &format!("{}/team/app:v1", other.host), false);
    let config = tenant_config(&format!(
        "pull_through_tag_ttl_secs = 1\n[[upstreams]]\nregistry = \"{}\"\ninsecure = true\npull_through = true\n[[upstreams]]\nregistry = \"{}\"\ninsecure = true\n",
        upstream.host, other.host
    ));
    let kiln = Kiln::start(&dir.join("kiln"), &config, &[]);
    let creds = format!("acme:{SECRET}");
    let through = |registry: &str, reference: &str| {
        skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &creds,
            &format!(
                "docker://{}/mirror/{}/team/app{reference}",
                kiln.host,
                registry.replace(':', "__")
            ),
        ])
    };
    let first = ok(through(&upstream.host, ":v1"));
    assert_eq!(
        first,
        crate::peers::raw_manifest(&format!("{}/team/app:v1", upstream.host))
    );
    // By digest too, and the blobs came along.
    let digest = sha256(&first);
    assert_eq!(ok(through(&upstream.host, &format!("@{digest}"))), first);
    ok(skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!(
            "docker://{}/mirror/{}/team/app:v1",
            kiln.host,
            upstream.host.replace(':', "__")
        ),
        &format!("oci:{}:copy", dir.join("out").display()),
    ]));
    // The tag moves upstream: served as it was within the TTL, then again.
    multi.push("multi", &format!("{}/team/app:v1", upstream.host), true);
    let moved = crate::peers::raw_manifest(&format!("{}/team/app:v1", upstream.host));
    assert_ne!(moved, first);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        ok(through(&upstream.host, ":v1")),
        moved,
        "a stale tag is checked upstream"
    );
    // Upstreams not configured for it, and unknown names, are plain misses.
    assert!(!through(&other.host, ":v1").status.success());
    assert!(!through(&upstream.host, ":nope").status.success());
    // Tenants still cannot push into the mirror namespace.
    let src = format!("oci:{}:v1", single.dir.display());
    let refused = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &src,
        &format!(
            "docker://{}/mirror/{}/team/app:v2",
            kiln.host,
            upstream.host.replace(':', "__")
        ),
    ]);
    assert!(!refused.status.success());
}

#[test]
fn slow_headers_and_idle_bodies_time_out_and_an_upload_keeps_what_arrived() {
    use std::io::{Read as _, Write as _};
    let dir = scratch("serve-timeouts");
    let kiln = Kiln::start(
        &dir,
        "header_timeout_secs = 1\nbody_idle_timeout_secs = 1\n",
        &["--open"],
    );
    // Headers that never end: the connection is closed.
    let mut slow = std::net::TcpStream::connect(&kiln.host).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "slow headers were not cut off"
    );
    // A chunk that stops half way: the request fails, the session keeps the
    // upload as it was, and the client can go on.
    let loc = runtime().block_on(async {
        let r = kiln
            .oci(None)
            .send(Method::POST, "/v2/a/blobs/uploads/", &[], vec![])
            .await;
        crate::client::location(&r)
    });
    let mut idle = std::net::TcpStream::connect(&kiln.host).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        idle,
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nContent-Range: 0-99\r\n\r\n"
    )
    .unwrap();
    idle.write_all(&[7; 40]).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = idle.read_to_end(&mut answer);
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "an idle body was not cut off"
    );
    runtime().block_on(async {
        let oci = kiln.oci(None);
        let r = oci.get(&loc).await;
        assert_eq!(r.status(), 204);
        assert_eq!(
            header(&r, "range").as_deref(),
            Some("0-0"),
            "nothing of the cut chunk kept"
        );
        let r = oci
            .send(
                Method::PATCH,
                &loc,
                &[("content-range", "0-99")],
                vec![7; 100],
            )
            .await;
        assert_eq!(r.status(), 202);
    });
}

/// `[vm]` for instances from the VM tests' environment (`KILN_TEST_KERNEL`,
/// `KILN_INIT`; scripts/test provides both), with qemu installed.
pub(crate) fn vm_config() -> Option<String> {
    let kernel = std::env::var("KILN_TEST_KERNEL").ok();
    let init = std::env::var("KILN_INIT").ok();
    match (kernel, init, have("qemu-system-x86_64")) {
        (Some(k), Some(i), true) => Some(format!(
            "[vm]\nkernel = \"{k}\"\ninit = \"{i}\"\nmax_instances = 2\n"
        )),
        _ => {
            let msg = "instance tests need qemu-system-x86_64, KILN_TEST_KERNEL and KILN_INIT (scripts/test provides them)";
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("\n!!!!! SKIPPING: {msg} !!!!!\n");
            None
        }
    }
}

#[test]
fn instances_boot_converted_images_report_exit_status_and_stop() {
    let Some(vm) = vm_config() else { return };
    let Some(images) = crate::ext4::images() else {
        return;
    };
    if !have("skopeo") {
        return;
    }
    let dir = scratch("serve-instances");
    let kiln = Kiln::start(&dir, &tenant_config(&vm), &[]);
    let creds = format!("acme:{SECRET}");
    kiln.push_oci(
        &format!("oci:{}:busybox", images.display()),
        "acme/box:v1",
        &creds,
    );
    let digest = kiln.digest_of(&creds, "acme/box:v1");
    let ids = runtime().block_on(async {
        let acme = kiln.oci(Some(("acme", SECRET)));
        assert_eq!(conversion(&acme, &digest).await["state"], "ready");
        let launch = |user: &'static str, body: serde_json::Value| {
            http()
                .post(format!("{}/kiln/v1/instances", kiln.url()))
                .basic_auth(user, Some(SECRET))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
        };
        let get = |user: &'static str, path: String| http().get(format!("{}{path}", kiln.url())).basic_auth(user, Some(SECRET)).send();
        // Another tenant cannot run acme's image, nor anyone without credentials.
        let r = launch("umbrella", serde_json::json!({"image": "acme/box:v1"})).await.unwrap();
        assert_eq!(r.status(), 404);
        let r = http().post(format!("{}/kiln/v1/instances", kiln.url())).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = launch("acme", serde_json::json!({"image": "acme/nothing:v1"})).await.unwrap();
        assert_eq!(r.status(), 404);

        let r = launch(
            "acme",
            serde_json::json!({"image": "acme/box:v1", "cmd": ["echo hello from an instance; echo \"$GREETING\"; exit 7"], "env": ["GREETING=hi there"]}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = r.json().await.unwrap();
        let first = v["id"].as_str().unwrap().to_owned();
        let id = first.clone();
        // The console streams until the instance ends.
        let console = get("acme", format!("/kiln/v1/instances/{id}/console")).await.unwrap().text().await.unwrap();
        let v: serde_json::Value = get("acme", format!("/kiln/v1/instances/{id}")).await.unwrap().json().await.unwrap();
        assert!(console.contains("hello from an instance\nhi there\n"), "{console} {v}");
        assert!(!console.contains("KILN-REPORT"), "the report line is not shown");
        let v: serde_json::Value = get("acme", format!("/kiln/v1/instances/{id}")).await.unwrap().json().await.unwrap();
        assert_eq!((v["state"].as_str(), v["exit_code"].as_i64()), (Some("exited"), Some(7)), "{v}");
        assert_eq!(get("umbrella", format!("/kiln/v1/instances/{id}")).await.unwrap().status(), 404);

        // A long workload, stopped.
        let r = launch("acme", serde_json::json!({"image": "acme/box:v1", "cmd": ["sleep 600"]})).await.unwrap();
        let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let v: serde_json::Value = get("acme", format!("/kiln/v1/instances/{id}")).await.unwrap().json().await.unwrap();
            if v["state"] == "running" {
                break;
            }
            assert!(Instant::now() < deadline && v["state"] == "starting", "{v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let r = http()
            .post(format!("{}/kiln/v1/instances/{id}/stop", kiln.url()))
            .basic_auth("acme", Some(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let _ = get("acme", format!("/kiln/v1/instances/{id}/console")).await.unwrap().text().await;
        let v: serde_json::Value = get("acme", format!("/kiln/v1/instances/{id}")).await.unwrap().json().await.unwrap();
        assert_eq!(v["state"], "stopped", "{v}");
        [first, id]
    });
    // `kiln run` over the same API: the console on stdout, the exit status.
    std::fs::write(dir.join("password"), SECRET).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "run",
            "--server",
            &kiln.url(),
            "--user",
            "acme",
            "--password-file",
        ])
        .arg(dir.join("password"))
        .args([
            "--env",
            "WHO=kiln run",
            "acme/box:v1",
            "--",
            "echo \"hello from $WHO\"; exit 5",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from kiln run\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(5));
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "run",
            "--server",
            &kiln.url(),
            "--user",
            "umbrella",
            "--password-file",
        ])
        .arg(dir.join("password"))
        .arg("acme/box:v1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No QEMU outlives its instance.
    for id in ids {
        let left = Command::new("pgrep")
            .args(["-f", &format!("kiln-i-{id}")])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&left.stdout).trim().is_empty(),
            "QEMU of {id} left running"
        );
    }
}

/// The S3 bucket of the Garage cluster scripts/test starts, as the `AWS_*`
/// environment `kiln serve --storage s3://…` reads, and the bucket name.
pub(crate) fn s3_env() -> Option<(Vec<(String, String)>, String)> {
    let var = |k: &str| std::env::var(format!("KILN_TEST_S3_{k}")).ok();
    let (Some(endpoint), Some(bucket), Some(key), Some(secret)) =
        (var("ENDPOINT"), var("BUCKET"), var("KEY_ID"), var("SECRET"))
    else {
        let msg = "KILN_TEST_S3_* not set: no S3 store (scripts/test starts a Garage cluster)";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("\n!!!!! SKIPPING: {msg} !!!!!\n");
        return None;
    };
    let env = vec![
        ("AWS_ENDPOINT_URL".to_owned(), endpoint),
        ("AWS_ACCESS_KEY_ID".to_owned(), key),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), secret),
        (
            "AWS_REGION".to_owned(),
            var("REGION").unwrap_or_else(|| "garage".into()),
        ),
    ];
    Some((env, bucket))
}

#[test]
fn replicas_on_one_s3_bucket_serve_as_one_registry() {
    let Some((env, bucket)) = s3_env() else {
        return;
    };
    if !(have("skopeo") && have("e2fsck")) {
        return;
    }
    let Some(images) = crate::ext4::images() else {
        return;
    };
    let dir = scratch("serve-s3");
    let config = tenant_config(&format!(
        "storage = \"s3://{bucket}/serve-{}\"\nconversion_lease_secs = 3\n",
        std::process::id()
    ));
    let (mut a, b) = Kiln::start_replicas(&dir, &config, &env);
    let creds = format!("acme:{SECRET}");
    // Pushed through A, read through B, converted (from the bucket) on A.
    a.push_oci(
        &format!("oci:{}:busybox", images.display()),
        "acme/box:v1",
        &creds,
    );
    let digest = a.digest_of(&creds, "acme/box:v1");
    assert_eq!(b.digest_of(&creds, "acme/box:v1"), digest);
    let out = dir.join("pulled");
    ok(skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{}/acme/box:v1", b.host),
        &format!("oci:{}:v1", out.display()),
    ]));
    runtime().block_on(async {
        let on_a = a.oci(Some(("acme", SECRET)));
        assert_eq!(conversion(&on_a, &digest).await["state"], "ready");
        // An upload started on A continues and finishes on B (tokens asked
        // up front: a large body answered early by a challenge would close
        // the connection under the client).
        let token = |kiln: &Kiln| {
            let challenge = format!(
                "Bearer realm=\"{}/token\",service=\"kiln\",scope=\"repository:acme/up:pull,push\"",
                kiln.url()
            );
            let oci = kiln.oci(Some(("acme", SECRET)));
            async move { oci.token(&challenge).await.expect("a token") }
        };
        let (ta, tb) = (token(&a).await, token(&b).await);
        let blob: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
        let r = http()
            .post(format!("{}/v2/acme/up/blobs/uploads/", a.url()))
            .bearer_auth(&ta)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let loc = header(&r, "location").unwrap();
        assert!(loc.starts_with('/'), "{loc}");
        let r = http()
            .patch(format!("{}{loc}", b.url()))
            .bearer_auth(&tb)
            .header("content-range", "0-1048575")
            .body(blob[..1 << 20].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let d = sha256(&blob);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = http()
            .put(format!("{}{loc}{sep}digest={d}", b.url()))
            .bearer_auth(&tb)
            .body(blob[1 << 20..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = on_a.get(&format!("/v2/acme/up/blobs/{d}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(sha256(&r.bytes().await.unwrap()), d);

        // B answers for A's conversion (the record is in the bucket) and
        // serves its disk image (fetched from the bucket).
        let on_b = b.oci(Some(("acme", SECRET)));
        assert_eq!(conversion(&on_b, &digest).await["state"], "ready");
        let disk = |oci: &crate::client::Oci| {
            let oci = oci.clone();
            let digest = digest.clone();
            async move {
                let r = oci.get(&format!("/kiln/v1/images/{digest}/ext4")).await;
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap()
            }
        };
        assert!(
            disk(&on_a).await == disk(&on_b).await,
            "B's disk differs from A's"
        );
    });
    // The same image pushed through B is not converted again.
    b.push_oci(
        &format!("oci:{}:busybox", images.display()),
        "acme/box2:v1",
        &creds,
    );
    runtime().block_on(async {
        let v = conversion(&b.oci(Some(("acme", SECRET))), &digest).await;
        assert_eq!(v["state"], "ready");
        assert!(v["also_in"].to_string().contains("acme/box2"), "{v}");
    });
    let converted = |log: &str, digest: &str| {
        log.lines()
            .filter(|l| l.contains("conversion ready") && l.contains(digest))
            .count()
    };
    assert_eq!(
        converted(&a.log_text(), &digest) + converted(&b.log_text(), &digest),
        1,
        "converted twice"
    );

    // A killed right after it acknowledged a push: B takes the conversion
    // up once A's lease runs out.
    a.push_oci(
        &format!("oci:{}:debian", images.display()),
        "acme/deb:v1",
        &creds,
    );
    a.kill();
    let deb = b.digest_of(&creds, "acme/deb:v1");
    runtime().block_on(async {
        let v = conversion(&b.oci(Some(("acme", SECRET))), &deb).await;
        assert_eq!(v["state"], "ready", "{v}");
    });
    // Either A finished it before it died or B took it up and converted
    // it; never both. (Each logs "conversion ready" just after recording
    // it: a kill in between leaves no line, and B's may follow the record
    // by a moment.)
    let taken_up = b
        .log_text()
        .lines()
        .any(|l| l.contains("conversion taken up") && l.contains(&deb));
    let deadline = Instant::now() + Duration::from_secs(10);
    while taken_up && converted(&b.log_text(), &deb) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (by_a, by_b) = (
        converted(&a.log_text(), &deb),
        converted(&b.log_text(), &deb),
    );
    assert!(by_a + by_b <= 1, "{deb} converted twice");
    assert_eq!(
        by_b,
        usize::from(taken_up),
        "B converted only what it took up"
    );
}

/// A configuration storing in the Garage cluster's bucket under a prefix
/// of this run's own, and the environment it needs.
pub(crate) fn s3_config(name: &str) -> Option<(String, Vec<(String, String)>)> {
    let (env, bucket) = s3_env()?;
    let config = tenant_config(&format!(
        "storage = \"s3://{bucket}/{name}-{}\"\n",
        std::process::id()
    ));
    Some((config, env))
}

/// With `blob_redirect_secs`, blob GETs on an S3 store answer 307 to a
/// presigned URL of the bucket that serves the same bytes (HEAD and the
/// default configuration answer here); skopeo pulls through the redirect.
#[test]
fn blob_gets_redirect_to_presigned_urls_when_asked() {
    let Some((config, env)) = s3_config("redirect") else {
        return;
    };
    let dir = crate::ext4::scratch("redirect");
    let config = format!("blob_redirect_secs = 60\n{config}");
    let kiln = Kiln::start_with_env(&dir, &config, &env);
    let endpoint = &env.iter().find(|(k, _)| k == "AWS_ENDPOINT_URL").unwrap().1;
    let runtime = crate::peers::runtime();
    runtime.block_on(async {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let d = crate::crash::push_blob(&kiln.url(), data.clone())
            .await
            .expect("pushed");
        let no_follow = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let url = format!("{}/v2/acme/crash/blobs/{d}", kiln.url());
        let r = no_follow
            .get(&url)
            .basic_auth("acme", Some(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 307);
        let to = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(to.starts_with(endpoint.as_str()), "{to}");
        assert!(to.contains("X-Amz-Signature="), "{to}");
        // The URL alone (no credentials of ours) serves the blob.
        let bytes = http().get(&to).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(sha256(&bytes), d);
        // Unauthorized clients get no URL.
        let r = no_follow.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401);
        // HEAD answers here.
        let r = no_follow
            .head(&url)
            .basic_auth("acme", Some(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // A following client ends with the bytes.
        let r = http()
            .get(&url)
            .basic_auth("acme", Some(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(sha256(&r.bytes().await.unwrap()), d);
    });
    if crate::peers::have("skopeo")
        && let Some(images) = crate::ext4::images()
    {
        let creds = format!("acme:{SECRET}");
        kiln.push_oci(
            &format!("oci:{}:busybox", images.display()),
            "acme/box:v1",
            &creds,
        );
        let out = dir.join("pulled");
        crate::peers::ok(crate::peers::skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &creds,
            &format!("docker://{}/acme/box:v1", kiln.host),
            &format!("oci:{}:v1", out.display()),
        ]));
    }
}
