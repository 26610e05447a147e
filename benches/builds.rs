//! Builds through `kiln serve` (`kiln build`: upload, plan, buildah in a
//! fresh store, push, conversion) against buildah run by hand on the same
//! Dockerfile with the same registry cache flags, in the same run: cold
//! (empty cache) and warm (the cache filled by an earlier build, a fresh
//! builder store) wall times, the median of three each; then the time
//! from push to `ready` and, with a guest kernel, instance start to first
//! output. Needs buildah, skopeo and the test images (`scripts/test`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::test_utils::{free_port, have, kiln_binary, wait_for};

const PASSWORD: &str = "bench-password";
const RUNS: usize = 3;

struct Kiln {
    child: Child,
    host: String,
    /// The release binary, built once.
    binary: PathBuf,
}

impl Drop for Kiln {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn layout() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_TEST_IMAGES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-images"),
        PathBuf::from,
    );
    let layout = dir.join("layout");
    layout.join("index.json").exists().then_some(layout)
}

/// `[vm]` from the VM tests' environment, when there is one.
fn vm_section() -> Option<String> {
    let kernel = std::env::var("KILN_TEST_KERNEL").ok()?;
    let init = std::env::var("KILN_INIT").ok()?;
    Some(format!("[vm]\nkernel = \"{kernel}\"\ninit = \"{init}\"\n"))
}

fn start(dir: &Path) -> Kiln {
    let host = format!("127.0.0.1:{}", free_port());
    let hash = format!("{:x}", Sha256::digest(PASSWORD.as_bytes()));
    let tenants: String = (0..=RUNS)
        .map(|i| format!("[[tenants]]\nname = \"tenant{i}\"\npassword_sha256 = \"{hash}\"\n"))
        .collect();
    let config = format!(
        "anonymous_pull = [\"base/*\"]\n{}\n[builds]\nmax_per_principal = 8\n{tenants}",
        vm_section().unwrap_or_default()
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("kiln.toml"), config).unwrap();
    let binary = kiln_binary();
    let child = Command::new(&binary)
        .current_dir(dir)
        .args(["serve", "--config", "kiln.toml", "--listen", &host])
        .env("KILN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("kiln.log")).unwrap())
        .spawn()
        .expect("start kiln serve");
    wait_for(&host, "kiln serve");
    Kiln {
        child,
        host,
        binary,
    }
}

fn admin_password(dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(dir.join("kiln.log")).unwrap_or_default();
        if let Some(line) = log
            .lines()
            .find(|l| l.trim_start().starts_with("password: "))
        {
            return line.trim_start()["password: ".len()..].to_owned();
        }
        assert!(Instant::now() < deadline, "no admin password printed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kiln build` of `src` as tenant `tenant`: the wall time and the image.
fn kiln_build(kiln: &Kiln, dir: &Path, src: &Path, tenant: &str) -> (Duration, String) {
    let password = dir.join("password");
    std::fs::write(&password, PASSWORD).unwrap();
    let t = Instant::now();
    let image = run(Command::new(&kiln.binary)
        .args(["build", "--server", &format!("http://{}", kiln.host)])
        .args(["--user", tenant, "--password-file"])
        .arg(&password)
        .arg(src));
    (t.elapsed(), image.trim().to_owned())
}

/// buildah by hand: a fresh store, the cache flags a kiln build uses, the
/// push; the wall time.
fn buildah_build(
    kiln: &Kiln,
    dir: &Path,
    src: &Path,
    cache: &str,
    target: &str,
    admin: &str,
) -> Duration {
    let store = dir.join("buildah-store");
    let _ = std::fs::remove_dir_all(&store);
    let creds = format!("admin:{admin}");
    let buildah = || {
        let mut c = Command::new("buildah");
        c.arg(format!("--root={}", store.join("root").display()))
            .arg(format!("--runroot={}", store.join("run").display()))
            .arg("--storage-driver=vfs");
        c
    };
    let iid = dir.join("iid");
    let cache = format!("{}/{cache}", kiln.host);
    let t = Instant::now();
    run(buildah()
        .args([
            "bud",
            "--isolation=chroot",
            "--layers",
            "--tls-verify=false",
        ])
        .args([
            "--creds",
            &creds,
            "--cache-from",
            &cache,
            "--cache-to",
            &cache,
        ])
        .arg(format!("--iidfile={}", iid.display()))
        .arg(src));
    let image = std::fs::read_to_string(&iid).unwrap();
    run(buildah()
        .args([
            "push",
            "--tls-verify=false",
            "--format=oci",
            "--creds",
            &creds,
        ])
        .arg(image.trim())
        .arg(format!("docker://{}/{target}:latest", kiln.host)));
    let elapsed = t.elapsed();
    let _ = std::fs::remove_dir_all(&store);
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn line(name: &str, kiln: Duration, peer: Duration) {
    let (k, p) = (kiln.as_secs_f64(), peer.as_secs_f64());
    println!("{name:<34} {k:>10.2} {p:>10.2} {:>8.2}x", k / p);
}

pub(crate) fn benches() {
    if !crate::test_utils::selected("builds") {
        return;
    }
    let Some(layout) = layout() else {
        println!("builds: not run: the test images are missing (scripts/test-images)\n");
        return;
    };
    if !(have("buildah") && have("skopeo")) {
        println!("builds: not run: needs buildah and skopeo\n");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("kiln-bench-builds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let kiln = start(&dir.join("kiln"));
    let admin = admin_password(&dir.join("kiln"));
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!("admin:{admin}"))
        .arg(format!("oci:{}:busybox", layout.display()))
        .arg(format!("docker://{}/base/box:1", kiln.host)));
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("Dockerfile"),
        format!(
            "FROM {}/base/box:1\nUSER 0\nRUN dd if=/dev/urandom of=/data bs=1M count=16 2>/dev/null\nRUN echo done > /done\nCMD [\"cat /done\"]\n",
            kiln.host
        ),
    )
    .unwrap();

    // Cold: a tenant (a cache scope) of its own each time; warm: tenant0
    // again.
    let mut kiln_cold = Vec::new();
    let mut peer_cold = Vec::new();
    for i in 0..RUNS {
        kiln_cold.push(kiln_build(&kiln, &dir, &src, &format!("tenant{i}")).0);
        peer_cold.push(buildah_build(
            &kiln,
            &dir,
            &src,
            &format!("cache/peer{i}"),
            &format!("peer/app{i}"),
            &admin,
        ));
    }
    let mut kiln_warm = Vec::new();
    let mut peer_warm = Vec::new();
    let mut image = String::new();
    for _ in 0..RUNS {
        let (t, i) = kiln_build(&kiln, &dir, &src, "tenant0");
        kiln_warm.push(t);
        image = i;
        peer_warm.push(buildah_build(
            &kiln,
            &dir,
            &src,
            "cache/peer0",
            "peer/warm",
            &admin,
        ));
    }
    println!("\nbuilds (wall seconds, median of {RUNS})  kiln build    buildah    ratio");
    line("cold (empty cache)", median(kiln_cold), median(peer_cold));
    line(
        "warm (cache filled, fresh store)",
        median(kiln_warm),
        median(peer_warm),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let base = format!("http://{}", kiln.host);
        let digest = image.split('@').nth(1).unwrap_or_default().to_owned();
        let get = |path: String| {
            http.get(format!("{base}{path}"))
                .basic_auth("tenant0", Some(PASSWORD))
                .send()
        };
        let builds: serde_json::Value = get("/kiln/v1/builds".into()).await.unwrap().json().await.unwrap();
        let last = &builds["builds"][0];
        println!(
            "last warm build, server side: queued {} ms, built {} ms (buildah and the server's own steps)",
            last["timings"]["queued_ms"], last["timings"]["build_ms"]
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        let record = loop {
            let v: serde_json::Value = get(format!("/kiln/v1/images/{digest}"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if !matches!(v["state"].as_str(), Some("pending" | "converting"))
                || Instant::now() > deadline
            {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!(
            "push to ready: conversion {} ({} s converting)",
            record["state"], record["seconds"]
        );
        if vm_section().is_none() {
            println!(
                "instance start to first output: not measured (no KILN_TEST_KERNEL/KILN_INIT)\n"
            );
            return;
        }
        let t = Instant::now();
        let r = http
            .post(format!("{base}/kiln/v1/instances"))
            .basic_auth("tenant0", Some(PASSWORD))
            .json(&serde_json::json!({"image": image}))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        let id = v["id"].as_str().unwrap_or_default().to_owned();
        let mut console = get(format!("/kiln/v1/instances/{id}/console"))
            .await
            .unwrap();
        let mut first = None;
        while let Ok(Some(chunk)) = console.chunk().await {
            if first.is_none() && !chunk.is_empty() {
                first = Some(t.elapsed());
            }
        }
        match first {
            Some(f) => println!(
                "instance start to first output: {:.2} s (POST to the first console byte)\n",
                f.as_secs_f64()
            ),
            None => println!("instance start to first output: no output ({v})\n"),
        }
    });
    drop(kiln);
    let _ = std::fs::remove_dir_all(&dir);
}
