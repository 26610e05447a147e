//! Builds end to end against `kiln serve` with buildah (Debian's, as root:
//! chroot isolation, vfs): the two cache tiers, the FROM rewrite to mirrored
//! copies, refusals, the queue across a restart, cancellation, and the
//! built image run as an instance.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};

use crate::peers::{have, ok, runtime, skopeo};
use crate::serve::{Kiln, SECRET, conversion, http, tenant_config, vm_config};

/// A tarball of `files` (`path`, contents); paths are written as given.
pub(crate) fn tarball(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, body.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

/// A build request: the source tarball and text fields.
pub(crate) fn form(source: Vec<u8>, fields: &[(&str, &str)]) -> Form {
    let mut f = Form::new().part("context", Part::bytes(source).file_name("src.tar"));
    for (k, v) in fields {
        f = f.text(k.to_string(), v.to_string());
    }
    f
}

async fn submit(kiln: &Kiln, user: &str, password: &str, f: Form) -> (u16, serde_json::Value) {
    let r = http()
        .post(format!("{}/kiln/v1/builds", kiln.url()))
        .basic_auth(user, Some(password))
        .multipart(f)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn get(kiln: &Kiln, user: &str, password: &str, path: &str) -> reqwest::Response {
    http()
        .get(format!("{}{path}", kiln.url()))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap()
}

/// The build's log, streamed until it ends, and its final record.
async fn follow(kiln: &Kiln, user: &str, password: &str, id: &str) -> (String, serde_json::Value) {
    let log = tokio::time::timeout(
        Duration::from_secs(600),
        get(kiln, user, password, &format!("/kiln/v1/builds/{id}/logs"))
            .await
            .text(),
    )
    .await
    .expect("the build ended within 10 minutes")
    .unwrap();
    let v = get(kiln, user, password, &format!("/kiln/v1/builds/{id}"))
        .await
        .json()
        .await
        .unwrap();
    (log, v)
}

/// Submits and follows a build that must succeed.
async fn build_ok(kiln: &Kiln, user: &str, password: &str, f: Form) -> (String, serde_json::Value) {
    let (status, v) = submit(kiln, user, password, f).await;
    assert_eq!(status, 202, "{v}");
    let (log, v) = follow(kiln, user, password, v["id"].as_str().unwrap()).await;
    assert_eq!(v["state"], "succeeded", "{v}\n{log}");
    (log, v)
}

/// Tags of a repository here, as the admin sees them.
async fn tags(kiln: &Kiln, admin: &str, repo: &str) -> Vec<String> {
    let r = get(kiln, "admin", admin, &format!("/v2/{repo}/tags/list")).await;
    if r.status() != 200 {
        return Vec::new();
    }
    let v: serde_json::Value = r.json().await.unwrap();
    v["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether builds can run here (buildah, the registry peers, the images).
fn builds_possible() -> Option<std::path::PathBuf> {
    if !(have("buildah") && have("docker-registry") && have("skopeo")) {
        return None;
    }
    crate::ext4::images()
}

/// `FROM {base}` and the first steps every Dockerfile here shares.
fn dockerfile(base: &str, rest: &str) -> String {
    format!("FROM {base}\nUSER 0\nRUN echo shared-step > /shared && sleep 3\n{rest}")
}

fn pgrep(pattern: &str) -> String {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn builds_share_the_global_cache_tier_rewrite_mirrored_bases_and_run_as_instances() {
    let Some(images) = builds_possible() else {
        return;
    };
    let vm = vm_config();
    let dir = crate::ext4::scratch("serve-builds");
    let upstream = crate::peers::Registry::start(&dir.join("upstream"));
    // A second upstream that kiln is not configured for: its mirror fails
    // (kiln speaks HTTPS to it), the builder still pulls the original.
    let unknown = crate::peers::Registry::start(&dir.join("unknown"));
    for host in [&upstream.host, &unknown.host] {
        ok(skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:busybox", images.display()),
            &format!("docker://{host}/team/busybox:1"),
        ]));
    }
    let config = tenant_config(&format!(
        "{}\n[[upstreams]]\nregistry = \"{}\"\ninsecure = true\n",
        vm.clone().unwrap_or_default(),
        upstream.host
    ));
    let kiln = Kiln::start(&dir.join("kiln"), &config, &[]);
    let admin = kiln.admin_password();
    let base = format!("{}/team/busybox:1", upstream.host);
    let mirrored = format!(
        "{}/mirror/{}/team/busybox:1",
        kiln.host,
        upstream.host.replace(':', "__")
    );
    runtime().block_on(async {
        // The admin build fills the global tier, from a base it mirrors first.
        let df = dockerfile(&base, "RUN echo admin > /who\n");
        let (log, v) = build_ok(
            &kiln,
            "admin",
            &admin,
            form(tarball(&[("Dockerfile", &df)]), &[("is_admin_build", "true"), ("global_cache_key", "node")]),
        )
        .await;
        assert!(log.contains(&format!("kiln: mirrored {base}")), "{log}");
        assert!(log.contains(&format!("STEP 1/4: FROM {mirrored}\n")), "rewritten in the builder's log: {log}");
        assert_eq!(v["plan"]["images"][0]["rewritten_to"], mirrored, "{v}");
        assert!(!tags(&kiln, &admin, "cache/global/node").await.is_empty(), "the global tier is filled");

        // A cold tenant build (umbrella: no global key, an empty cache) and a
        // warm one (acme: the same first steps, the global key).
        let tenant_df = dockerfile(&base, "RUN echo tenant > /who\nCMD [\"cat /shared /who; exit 3\"]\n");
        let source = || tarball(&[("app/Dockerfile", &tenant_df), ("app/README", "hello")]);
        let (cold_log, cold) = build_ok(&kiln, "umbrella", SECRET, form(source(), &[("file", "app/Dockerfile")])).await;
        assert!(!cold_log.contains("Cache pulled"), "{cold_log}");
        let (warm_log, warm) = build_ok(
            &kiln,
            "acme",
            SECRET,
            form(source(), &[("file", "app/Dockerfile"), ("global_cache_key", "node"), ("tag", "acme/app:v1")]),
        )
        .await;
        assert!(warm_log.contains("entries of") && warm_log.contains("cache/global/node into"), "{warm_log}");
        let shared = warm_log
            .split("STEP 3/5: RUN echo shared-step")
            .nth(1)
            .and_then(|rest| rest.split("STEP 4/5").next())
            .unwrap_or_default();
        assert!(shared.contains("Cache pulled from remote"), "the shared step comes from the cache: {warm_log}");
        assert!(warm_log.contains(&format!("Pushing cache {}/cache/acme:", kiln.host)), "{warm_log}");
        eprintln!(
            "build times: cold {} ms (no cache), warm {} ms (global tier), admin {} ms (cold, with mirroring)",
            cold["timings"]["build_ms"], warm["timings"]["build_ms"], v["timings"]["build_ms"]
        );
        let acme_cache = tags(&kiln, &admin, "cache/acme").await;
        assert!(!acme_cache.is_empty(), "the tenant's export lands in cache/acme");
        assert!(tags(&kiln, &admin, "cache/umbrella").await.len() >= 3);
        assert_eq!(warm["plan"]["access"][0], "cache/global/node:pull", "{warm}");

        // Cache entries are never converted; the result is, to ready.
        let acme = crate::client::Oci::new(&kiln.url(), Some(("acme", SECRET)));
        let results: Vec<&str> = [&v, &cold, &warm].iter().filter_map(|b| b["digest"].as_str()).collect();
        let digest = warm["digest"].as_str().unwrap().to_owned();
        let converted = conversion(&acme, &digest).await;
        assert_eq!(converted["state"], "ready");
        eprintln!(
            "push to ready: converted in {} s (queued at {}, ready at {}; the build ended at {} ms)",
            converted["seconds"], converted["queued_at"], converted["finished_at"], warm["finished_at"]
        );
        // (As the admin: umbrella pushed the same entries first, and the
        // conversion records name the repository of the first push.)
        let root = crate::client::Oci::new(&kiln.url(), Some(("admin", &admin)));
        let mut skipped = 0;
        for tag in &acme_cache {
            let r = acme.get(&format!("/v2/cache/acme/manifests/{tag}")).await;
            let d = crate::client::header(&r, "docker-content-digest").unwrap();
            if !results.contains(&d.as_str()) {
                assert_eq!(conversion(&root, &d).await["state"], "skipped", "{tag}");
                skipped += 1;
            }
        }
        assert!(skipped > 0);
        // The tag in the tenant's namespace is the same image.
        let r = acme.get("/v2/acme/app/manifests/v1").await;
        assert_eq!(crate::client::header(&r, "docker-content-digest").as_deref(), Some(digest.as_str()));

        // A tenant cannot write the global tier: not by asking for an admin
        // build, not by naming another scope, not with a token it asks for.
        let small = || tarball(&[("Dockerfile", "FROM busybox\n")]);
        for fields in [
            vec![("is_admin_build", "true"), ("global_cache_key", "node")],
            vec![("cache_scope", "global")],
            vec![("cache_scope", "umbrella")],
        ] {
            let (status, body) = submit(&kiln, "acme", SECRET, form(small(), &fields)).await;
            assert_eq!(status, 403, "{fields:?}: {body}");
        }
        let r = http()
            .get(format!("{}/token?service=kiln&scope=repository:cache/global/node:pull,push", kiln.url()))
            .basic_auth("acme", Some(SECRET))
            .send()
            .await
            .unwrap();
        let token = r.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
        let r = http()
            .post(format!("{}/v2/cache/global/node/blobs/uploads/", kiln.url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "a tenant's token grants no push on the global tier");

        // A base whose mirror fails is built from the original.
        let unknown_base = format!("{}/team/busybox:1", unknown.host);
        let (log, _) = build_ok(
            &kiln,
            "admin",
            &admin,
            form(tarball(&[("Dockerfile", &dockerfile(&unknown_base, ""))]), &[("is_admin_build", "true"), ("global_cache_key", "other")]),
        )
        .await;
        assert!(log.contains(&format!("kiln: mirroring {unknown_base} failed, building from the original")), "{log}");
        assert!(log.contains(&format!("STEP 1/3: FROM {unknown_base}\n")), "{log}");

        // The result runs as an instance of its owner (and only its owner).
        if vm.is_some() {
            let image = warm["image"].as_str().unwrap();
            let launch = |user: &'static str| {
                http()
                    .post(format!("{}/kiln/v1/instances", kiln.url()))
                    .basic_auth(user, Some(SECRET))
                    .json(&serde_json::json!({"image": image}))
                    .send()
            };
            assert_eq!(launch("umbrella").await.unwrap().status(), 404);
            let started = Instant::now();
            let r = launch("acme").await.unwrap();
            assert_eq!(r.status(), 201);
            let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
            let console = get(&kiln, "acme", SECRET, &format!("/kiln/v1/instances/{id}/console")).await.text().await.unwrap();
            eprintln!("instance of the built image: output after {:?}", started.elapsed());
            assert!(console.contains("shared-step\ntenant\n"), "{console}");
            let v: serde_json::Value = get(&kiln, "acme", SECRET, &format!("/kiln/v1/instances/{id}")).await.json().await.unwrap();
            assert_eq!((v["state"].as_str(), v["exit_code"].as_i64()), (Some("exited"), Some(3)), "{v}");
        }
    });
}

/// Entries under the builds directory other than `tmp`, and entries in
/// `tmp`.
fn leftovers(data: &Path) -> Vec<String> {
    let builds = data.join("builds");
    let mut out: Vec<String> = std::fs::read_dir(&builds)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "tmp")
        .collect();
    out.extend(
        std::fs::read_dir(builds.join("tmp"))
            .unwrap()
            .flatten()
            .map(|e| format!("tmp/{}", e.file_name().to_string_lossy())),
    );
    out
}

#[test]
fn bad_build_requests_get_a_clear_4xx_and_write_nothing() {
    if !have("buildah") {
        return;
    }
    let dir = crate::ext4::scratch("serve-builds-bad");
    let config = tenant_config("[builds]\nmax_upload_bytes = 65536\n");
    let kiln = Kiln::start(&dir, &config, &[]);
    let data = dir.join("kiln-data");
    runtime().block_on(async {
        let good = || tarball(&[("Dockerfile", "FROM busybox\n")]);
        let r = http()
            .post(format!("{}/kiln/v1/builds", kiln.url()))
            .multipart(form(good(), &[]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let cases: Vec<(Form, u16, &str)> = vec![
            (
                form(
                    tarball(&[("../evil", "x"), ("Dockerfile", "FROM busybox\n")]),
                    &[],
                ),
                400,
                "'..'",
            ),
            (form(tarball(&[("/etc/evil", "x")]), &[]), 400, "absolute"),
            (form(tarball(&[("src/a", "x")]), &[]), 400, "no Dockerfile"),
            (
                form(good(), &[("file", "../Dockerfile")]),
                400,
                "leaves the source",
            ),
            (
                form(
                    b"not a tarball, not at all, not even a little bit.....".to_vec(),
                    &[],
                ),
                400,
                "not a tar archive",
            ),
            (
                form(tarball(&[("Dockerfile", "FROM busybox\nFOO bar\n")]), &[]),
                400,
                "unknown instruction: FOO",
            ),
            (form(vec![7u8; 100_000], &[]), 413, "over 65536 bytes"),
            (form(good(), &[("colour", "blue")]), 400, "unknown field"),
            (form(good(), &[("build_arg", "novalue")]), 400, "KEY=VALUE"),
            (form(good(), &[("is_admin_build", "true")]), 403, "admin"),
            (
                form(good(), &[("tag", "umbrella/app:v1")]),
                403,
                "may not push",
            ),
            (form(good(), &[("global_cache_key", "Bad Key!")]), 400, ""),
        ];
        for (f, want, says) in cases {
            let (status, v) = submit(&kiln, "acme", SECRET, f).await;
            assert_eq!(status, want, "{says}: {v}");
            assert!(
                v["error"].as_str().unwrap_or_default().contains(says),
                "{says}: {v}"
            );
        }
        // BuildKit's line comes with its message.
        let (_, v) = submit(
            &kiln,
            "acme",
            SECRET,
            form(tarball(&[("Dockerfile", "FROM busybox\nFOO bar\n")]), &[]),
        )
        .await;
        assert_eq!(v["line"], 2, "{v}");
        // Nothing was kept of any of them.
        assert_eq!(leftovers(&data), Vec::<String>::new());
        // Unknown builds and others' builds look alike.
        let r = get(&kiln, "acme", SECRET, "/kiln/v1/builds/0123456789abcdef").await;
        assert_eq!(r.status(), 404);
    });
}

#[test]
fn the_queue_survives_a_restart_and_cancel_stops_the_builder() {
    let Some(images) = builds_possible() else {
        return;
    };
    let dir = crate::ext4::scratch("serve-builds-queue");
    let config = tenant_config("[builds]\nworkers = 1\nmax_per_principal = 2\n");
    let kiln = Kiln::start(&dir, &config, &[]);
    let creds = format!("acme:{SECRET}");
    kiln.push_oci(
        &format!("oci:{}:busybox", images.display()),
        "acme/box:1",
        &creds,
    );
    let base = format!("{}/acme/box:1", kiln.host);
    let slow = format!("FROM {base}\nRUN sleep 613\n");
    let quick = format!("FROM {base}\nUSER 0\nRUN echo quick > /q\n");
    let (first, second) = runtime().block_on(async {
        let (s, a) = submit(
            &kiln,
            "acme",
            SECRET,
            form(tarball(&[("Dockerfile", &slow)]), &[]),
        )
        .await;
        assert_eq!(s, 202, "{a}");
        let (s, b) = submit(
            &kiln,
            "acme",
            SECRET,
            form(tarball(&[("Dockerfile", &quick)]), &[]),
        )
        .await;
        assert_eq!(s, 202, "{b}");
        // At most two queued or running per principal.
        let (s, v) = submit(
            &kiln,
            "acme",
            SECRET,
            form(tarball(&[("Dockerfile", &quick)]), &[]),
        )
        .await;
        assert_eq!(s, 429, "{v}");
        let (a, b) = (
            a["id"].as_str().unwrap().to_owned(),
            b["id"].as_str().unwrap().to_owned(),
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        while pgrep("sleep 613").is_empty() {
            assert!(
                Instant::now() < deadline,
                "the slow build never ran its step"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let v: serde_json::Value = get(&kiln, "acme", SECRET, &format!("/kiln/v1/builds/{b}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["state"], "queued", "one worker: {v}");
        (a, b)
    });
    // A restart: the running build failed, the queued one runs.
    let kiln = kiln.restart(&config, &[]);
    assert_eq!(
        pgrep("sleep 613"),
        "",
        "the builder's processes died with the server"
    );
    runtime().block_on(async {
        let v: serde_json::Value = get(&kiln, "acme", SECRET, &format!("/kiln/v1/builds/{first}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["state"], "failed", "{v}");
        assert!(
            v["error"].as_str().unwrap().contains("server stopped"),
            "{v}"
        );
        let (log, v) = follow(&kiln, "acme", SECRET, &second).await;
        assert_eq!(v["state"], "succeeded", "{v}\n{log}");
        // Cancelling a running build kills its builder.
        let (_, a) = submit(
            &kiln,
            "acme",
            SECRET,
            form(tarball(&[("Dockerfile", &slow)]), &[]),
        )
        .await;
        let id = a["id"].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while pgrep("sleep 613").is_empty() {
            assert!(
                Instant::now() < deadline,
                "the slow build never ran its step"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let r = http()
            .post(format!("{}/kiln/v1/builds/{id}/cancel", kiln.url()))
            .basic_auth("acme", Some(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let (_, v) = follow(&kiln, "acme", SECRET, id).await;
        assert_eq!(v["state"], "cancelled", "{v}");
        assert_eq!(pgrep("sleep 613"), "");
        let r = http()
            .post(format!("{}/kiln/v1/builds/{id}/cancel", kiln.url()))
            .basic_auth("acme", Some(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409, "an ended build");
        // Another tenant sees none of it.
        let r = get(&kiln, "umbrella", SECRET, &format!("/kiln/v1/builds/{id}")).await;
        assert_eq!(r.status(), 404);
        let v: serde_json::Value = get(&kiln, "umbrella", SECRET, "/kiln/v1/builds")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["builds"], serde_json::json!([]));
        let v: serde_json::Value = get(&kiln, "acme", SECRET, "/kiln/v1/builds")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["builds"].as_array().unwrap().len(), 3);
    });
}

#[test]
fn kiln_build_uploads_a_directory_and_prints_the_image() {
    let Some(images) = builds_possible() else {
        return;
    };
    let dir = crate::ext4::scratch("serve-builds-cli");
    let kiln = Kiln::start(&dir.join("kiln"), &tenant_config(""), &[]);
    let creds = format!("acme:{SECRET}");
    kiln.push_oci(
        &format!("oci:{}:busybox", images.display()),
        "acme/box:1",
        &creds,
    );
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(
        src.join("sub/Containerfile"),
        format!(
            "FROM {}/acme/box:1\nARG WHO\nCOPY hello /hello\nRUN test \"$WHO\" = kiln\n",
            kiln.host
        ),
    )
    .unwrap();
    std::fs::write(src.join("hello"), "hello\n").unwrap();
    std::fs::write(dir.join("password"), SECRET).unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "build",
                "--server",
                &kiln.url(),
                "--user",
                "acme",
                "--password-file",
            ])
            .arg(dir.join("password"))
            .args(["--file", "sub/Containerfile"])
            .args(extra)
            .arg(&src)
            .output()
            .unwrap()
    };
    let out = run(&["--build-arg", "WHO=kiln", "--tag", "acme/hello:1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let image = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        image.starts_with("builds/") && image.contains("@sha256:"),
        "{image}"
    );
    assert!(
        stderr.contains("COPY hello /hello"),
        "the log streams: {stderr}"
    );
    let digest = image.split('@').nth(1).unwrap();
    assert_eq!(kiln.digest_of(&creds, "acme/hello:1"), digest);
    // A failing step fails the command, with the build's error.
    let out = run(&["--build-arg", "WHO=other"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A refusal names the server's reason.
    let out = run(&["--admin", "--global-cache-key", "node"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The builder image `scripts/builder-image` builds (`KILN_TEST_BUILDER`,
/// which scripts/test sets); a loud skip outside CI.
fn builder_layout() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("KILN_TEST_BUILDER").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-builder"),
        std::path::PathBuf::from,
    );
    let layout = dir.join("layout");
    if dir.join(".complete-v1").exists() {
        return Some(layout);
    }
    let msg = format!(
        "the builder image is missing at {} (scripts/builder-image builds it)",
        dir.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("\n!!!!! SKIPPING: {msg} !!!!!\n");
    None
}

#[test]
fn a_builder_vm_builds_and_pushes_a_small_image() {
    let Some(vm) = vm_config() else { return };
    let Some(images) = builds_possible() else {
        return;
    };
    let Some(builder) = builder_layout() else {
        return;
    };
    let dir = crate::ext4::scratch("serve-builds-vm");
    let config = tenant_config(&format!(
        "{vm}[builds]\nmode = \"vm\"\nvm_image = \"builders/buildah:1\"\nvm_memory_mib = 1024\n"
    ));
    let kiln = Kiln::start(&dir, &config, &[]);
    let admin = kiln.admin_password();
    kiln.push_oci(
        &format!("oci:{}:buildah", builder.display()),
        "builders/buildah:1",
        &format!("admin:{admin}"),
    );
    let creds = format!("acme:{SECRET}");
    kiln.push_oci(
        &format!("oci:{}:busybox", images.display()),
        "acme/box:1",
        &creds,
    );
    let builder_digest = kiln.digest_of(&format!("admin:{admin}"), "builders/buildah:1");
    runtime().block_on(async {
        let root = crate::client::Oci::new(&kiln.url(), Some(("admin", &admin)));
        assert_eq!(
            conversion(&root, &builder_digest).await["state"],
            "ready",
            "the builder image converts"
        );
        let df = format!(
            "FROM {}/acme/box:1\nUSER 0\nRUN echo built in a VM > /vm\nCMD [\"cat /vm\"]\n",
            kiln.host
        );
        let started = Instant::now();
        let (log, v) = build_ok(
            &kiln,
            "acme",
            SECRET,
            form(
                tarball(&[("Dockerfile", &df)]),
                &[("tag", "acme/vm-built:1")],
            ),
        )
        .await;
        eprintln!(
            "builder VM build: {:?} ({} ms in the VM)",
            started.elapsed(),
            v["timings"]["build_ms"]
        );
        assert_eq!(v["builder"], "buildah-vm", "{v}");
        assert!(
            log.contains("STEP 3/4: RUN echo built in a VM > /vm"),
            "{log}"
        );
        assert!(
            !log.contains("KILN-REPORT"),
            "the guest's report line is not shown: {log}"
        );
        let digest = v["digest"].as_str().unwrap().to_owned();
        let acme = crate::client::Oci::new(&kiln.url(), Some(("acme", SECRET)));
        let r = acme.get("/v2/acme/vm-built/manifests/1").await;
        assert_eq!(
            crate::client::header(&r, "docker-content-digest").as_deref(),
            Some(digest.as_str())
        );
        assert_eq!(conversion(&acme, &digest).await["state"], "ready");
        // The source is for the build's own credential only.
        let id = v["id"].as_str().unwrap();
        let r = get(
            &kiln,
            "acme",
            SECRET,
            &format!("/kiln/v1/builds/{id}/source"),
        )
        .await;
        assert_eq!(r.status(), 404);
        // The result runs.
        let r = http()
            .post(format!("{}/kiln/v1/instances", kiln.url()))
            .basic_auth("acme", Some(SECRET))
            .json(&serde_json::json!({"image": "acme/vm-built:1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let iid = r.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let console = get(
            &kiln,
            "acme",
            SECRET,
            &format!("/kiln/v1/instances/{iid}/console"),
        )
        .await
        .text()
        .await
        .unwrap();
        assert!(console.contains("built in a VM\n"), "{console}");

        // Cancelling a VM build stops its VM.
        let slow = format!("FROM {}/acme/box:1\nRUN sleep 607\n", kiln.host);
        let (status, v) = submit(
            &kiln,
            "acme",
            SECRET,
            form(tarball(&[("Dockerfile", &slow)]), &[]),
        )
        .await;
        assert_eq!(status, 202, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(300);
        let work = std::env::temp_dir().join(format!("kiln-b-{}", &id[..12]));
        loop {
            let v: serde_json::Value = get(&kiln, "acme", SECRET, &format!("/kiln/v1/builds/{id}"))
                .await
                .json()
                .await
                .unwrap();
            let console = std::fs::read_to_string(work.join("console.log")).unwrap_or_default();
            if console.contains("STEP 2/2: RUN sleep 607") {
                break;
            }
            assert!(
                Instant::now() < deadline && v["state"] != "failed",
                "{v} {console}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let r = http()
            .post(format!("{}/kiln/v1/builds/{id}/cancel", kiln.url()))
            .basic_auth("acme", Some(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let (_, v) = follow(&kiln, "acme", SECRET, &id).await;
        assert_eq!(v["state"], "cancelled", "{v}");
        assert_eq!(
            pgrep(&format!("kiln-b-{}", &id[..12])),
            "",
            "no QEMU outlives its build"
        );
    });
}

/// A `buildkitd` on a socket of its own, stopped on drop.
struct Buildkitd(std::process::Child);

impl Drop for Buildkitd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Ignored by default: Debian 12 packages no BuildKit, so scripts/test runs
/// it (`--ignored`) only where `buildctl` and `buildkitd` are installed, and
/// fails when `KILN_EXPECT_BUILDKIT` is set and they are not.
#[test]
#[ignore = "needs buildctl and buildkitd; scripts/test runs it where they are installed"]
fn buildkit_builds_with_both_cache_tiers_where_it_is_installed() {
    for tool in ["buildctl", "buildkitd"] {
        assert!(have(tool), "{tool} is not installed");
    }
    let Some(images) = builds_possible() else {
        return;
    };
    let dir = crate::ext4::scratch("serve-builds-buildkit");
    let socket = dir.join("buildkitd.sock");
    let kiln_dir = dir.join("kiln");
    let config = tenant_config(&format!(
        "[builds]\nbuilder = \"buildctl\"\nbuildkit_addr = \"unix://{}\"\n",
        socket.display()
    ));
    let kiln = Kiln::start(&kiln_dir, &config, &[]);
    std::fs::write(
        dir.join("buildkitd.toml"),
        format!(
            "[registry.\"{}\"]\nhttp = true\ninsecure = true\n",
            kiln.host
        ),
    )
    .unwrap();
    let _buildkitd = Buildkitd(
        Command::new("buildkitd")
            .arg(format!("--addr=unix://{}", socket.display()))
            .arg(format!("--root={}", dir.join("root").display()))
            .arg(format!("--config={}", dir.join("buildkitd.toml").display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("buildkitd.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "buildkitd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let admin = kiln.admin_password();
    kiln.push_oci(
        &format!("oci:{}:busybox", images.display()),
        "acme/box:1",
        &format!("acme:{SECRET}"),
    );
    let base = format!("{}/acme/box:1", kiln.host);
    runtime().block_on(async {
        let admin_df = dockerfile(&base, "RUN echo admin > /who\n");
        let (_, v) = build_ok(
            &kiln,
            "admin",
            &admin,
            form(
                tarball(&[("Dockerfile", &admin_df)]),
                &[("is_admin_build", "true"), ("global_cache_key", "node")],
            ),
        )
        .await;
        assert_eq!(v["builder"], "buildctl", "{v}");
        assert!(!tags(&kiln, &admin, "cache/global/node").await.is_empty());
        let tenant_df = dockerfile(&base, "RUN echo tenant > /who\n");
        let (log, _) = build_ok(
            &kiln,
            "acme",
            SECRET,
            form(
                tarball(&[("Dockerfile", &tenant_df)]),
                &[("global_cache_key", "node")],
            ),
        )
        .await;
        assert!(
            log.contains("CACHED"),
            "the shared steps come from the global tier: {log}"
        );
        assert!(!tags(&kiln, &admin, "cache/acme").await.is_empty());
    });
}
