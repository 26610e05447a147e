//! `kiln serve` against CNCF distribution 2.8 (Debian's `docker-registry`)
//! in the same run, both on local disk, on loopback: manifest GET req/s and
//! p50/p99 (anonymous and with token auth), blob GET MB/s at 1, 16 and 64
//! connections, push MB/s (monolithic and chunked), RSS at rest and at peak
//! under load. kiln is the release build (`scripts/release-build`); the
//! plain `cargo build --release` binary's RSS at rest is shown beside it.
//! Then, where `garage` is installed, the same kiln figures on a three-node
//! Garage cluster (replication factor 3, fsync) the bench starts with
//! `scripts/garage-cluster`. Reads are driven by `wrk` (Debian's
//! package), pushes by a Rust client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_registry_token::{MintRequest, Minter, SigningKey};

use crate::test_utils::{free_port, have, kiln_binary, kiln_release_binary, wait_for};
use sha2::{Digest as _, Sha256};

const SERVICE: &str = "bench-registry";
const ISSUER: &str = "kiln-bench";
const REPO: &str = "bench/app";
const BLOB_BYTES: usize = 16 << 20;
const PUSH_BYTES: usize = 32 << 20;
const PUSHES: usize = 6;
/// A chunked push's PATCH size.
const CHUNK: usize = 8 << 20;
const LOAD: &str = "5s";

struct Server {
    name: &'static str,
    child: Child,
    host: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn rss_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

fn start_kiln(binary: &Path, dir: &Path, storage: Option<(&str, &[(String, String)])>) -> Server {
    let host = format!("127.0.0.1:{}", free_port());
    let hash = format!("{:x}", Sha256::digest(b"bench-password"));
    std::fs::create_dir_all(dir).unwrap();
    let store = storage.map_or(String::new(), |(s, _)| format!("storage = \"{s}\"\n"));
    std::fs::write(
        dir.join("kiln.toml"),
        format!("{store}service = \"{SERVICE}\"\nanonymous_pull = [\"{REPO}\"]\n[[tenants]]\nname = \"bench\"\npassword_sha256 = \"{hash}\"\n"),
    )
    .unwrap();
    let env: &[(String, String)] = storage.map_or(&[], |(_, e)| e);
    let child = Command::new(binary)
        .current_dir(dir)
        .args(["serve", "--config", "kiln.toml", "--listen", &host])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("KILN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("kiln.log")).unwrap())
        .spawn()
        .expect("start kiln serve");
    wait_for(&host, "kiln serve");
    Server {
        name: "kiln",
        child,
        host,
    }
}

fn start_distribution(dir: &Path, storage: &Path, auth: &str) -> Server {
    let host = format!("127.0.0.1:{}", free_port());
    std::fs::create_dir_all(dir).unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{auth}",
        storage.display()
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
        .spawn()
        .expect("start docker-registry");
    wait_for(&host, "docker-registry");
    Server {
        name: "distribution",
        child,
        host,
    }
}

/// Deterministic noise (xorshift), so blobs are incompressible and distinct.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// POST then PUT `?digest=` with the whole body.
async fn push_blob(http: &reqwest::Client, host: &str, auth: Option<(&str, &str)>, data: Vec<u8>) {
    let d = digest(&data);
    let mut post = http.post(format!("http://{host}/v2/{REPO}/blobs/uploads/"));
    if let Some((u, p)) = auth {
        post = post.basic_auth(u, Some(p));
    }
    let r = post.send().await.unwrap();
    assert_eq!(r.status(), 202, "{host}: {:?}", r.text().await);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let url = if loc.starts_with("http") {
        loc
    } else {
        format!("http://{host}{loc}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut put = http.put(format!("{url}{sep}digest={d}")).body(data);
    if let Some((u, p)) = auth {
        put = put.basic_auth(u, Some(p));
    }
    let r = put.send().await.unwrap();
    assert_eq!(r.status(), 201, "{host}: {:?}", r.text().await);
}

/// POST, then the body in `CHUNK`-byte PATCHes, then PUT `?digest=`.
async fn push_blob_chunked(
    http: &reqwest::Client,
    host: &str,
    auth: Option<(&str, &str)>,
    data: Vec<u8>,
) {
    let d = digest(&data);
    let with_auth = |req: reqwest::RequestBuilder| match auth {
        Some((u, p)) => req.basic_auth(u, Some(p)),
        None => req,
    };
    let absolute = |loc: &str| {
        if loc.starts_with("http") {
            loc.to_owned()
        } else {
            format!("http://{host}{loc}")
        }
    };
    let r = with_auth(http.post(format!("http://{host}/v2/{REPO}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{host}: {:?}", r.text().await);
    let mut loc = r.headers()["location"].to_str().unwrap().to_owned();
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        let start = i * CHUNK;
        let r = with_auth(http.patch(absolute(&loc)))
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{start}-{}", start + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{host}: {:?}", r.text().await);
        loc = r.headers()["location"].to_str().unwrap().to_owned();
    }
    let url = absolute(&loc);
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = with_auth(http.put(format!("{url}{sep}digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{host}: {:?}", r.text().await);
}

/// Pushes the benchmark image: a 16 MiB layer, its config and manifest.
async fn push_image(
    http: &reqwest::Client,
    host: &str,
    auth: Option<(&str, &str)>,
) -> (String, String) {
    let layer = noise(1, BLOB_BYTES);
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        digest(&config),
        config.len(),
        digest(&layer),
        layer.len()
    );
    let layer_digest = digest(&layer);
    push_blob(http, host, auth, config).await;
    push_blob(http, host, auth, layer).await;
    let mut put = http
        .put(format!("http://{host}/v2/{REPO}/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest);
    if let Some((u, p)) = auth {
        put = put.basic_auth(u, Some(p));
    }
    assert_eq!(put.send().await.unwrap().status(), 201);
    ("v1".into(), layer_digest)
}

/// What `wrk` measured.
#[derive(Debug, Default, Clone, Copy)]
struct Wrk {
    req_per_s: f64,
    mb_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn to_ms(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

fn to_mb(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    let bytes = match unit {
        "B" => n,
        "KB" => n * 1024.0,
        "MB" => n * 1024.0 * 1024.0,
        "GB" => n * 1024.0 * 1024.0 * 1024.0,
        _ => f64::NAN,
    };
    bytes / 1e6
}

fn wrk(url: &str, connections: u32, headers: &[String]) -> Wrk {
    let threads = connections.min(2);
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        &threads.to_string(),
        "-c",
        &connections.to_string(),
        "-d",
        LOAD,
        "--latency",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("Non-2xx"),
        "wrk {url}: {text}"
    );
    let mut w = Wrk::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", n] => w.req_per_s = n.parse().unwrap_or(f64::NAN),
            ["Transfer/sec:", n] => w.mb_per_s = to_mb(n),
            ["50%", t] => w.p50_ms = to_ms(t),
            ["99%", t] => w.p99_ms = to_ms(t),
            _ => {}
        }
    }
    w
}

/// MB/s of `PUSHES` pushes of distinct 32 MiB blobs, monolithic (POST,
/// then one PUT with the body) or chunked (8 MiB PATCHes).
async fn push_mb_per_s(
    http: &reqwest::Client,
    host: &str,
    auth: Option<(&str, &str)>,
    seed: u64,
    chunked: bool,
) -> f64 {
    let blobs: Vec<Vec<u8>> = (0..PUSHES as u64)
        .map(|i| noise(seed * 100 + i + 10, PUSH_BYTES))
        .collect();
    let t = Instant::now();
    for b in blobs {
        if chunked {
            push_blob_chunked(http, host, auth, b).await;
        } else {
            push_blob(http, host, auth, b).await;
        }
    }
    (PUSHES * PUSH_BYTES) as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// MB/s of `PUSHES` PUTs of 32 MiB objects straight to the bucket with
/// `object_store` (no registry): what the store itself sustains.
async fn raw_put_mb_per_s(env: &[(String, String)], bucket: &str) -> f64 {
    use object_store::ObjectStoreExt as _;
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(get("AWS_ENDPOINT_URL"))
        .with_allow_http(true)
        .with_region(get("AWS_REGION"))
        .with_bucket_name(bucket)
        .with_access_key_id(get("AWS_ACCESS_KEY_ID"))
        .with_secret_access_key(get("AWS_SECRET_ACCESS_KEY"))
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    let blobs: Vec<Vec<u8>> = (0..PUSHES as u64)
        .map(|i| noise(900 + i, PUSH_BYTES))
        .collect();
    let t = Instant::now();
    for (i, b) in blobs.into_iter().enumerate() {
        store
            .put(
                &object_store::path::Path::from(format!("raw/{i}")),
                object_store::PutPayload::from(b),
            )
            .await
            .unwrap();
    }
    (PUSHES * PUSH_BYTES) as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// Blob GET MB/s over one HTTP/2 connection (cleartext, prior knowledge)
/// carrying 16 concurrent streams, for `LOAD`.
async fn h2_blob_mb_per_s(url: &str) -> f64 {
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let secs: u64 = LOAD.trim_end_matches('s').parse().unwrap_or(5);
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let streams: Vec<_> = (0..16)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut bytes = 0u64;
                while Instant::now() < until {
                    let r = client.get(&url).send().await.unwrap();
                    assert_eq!(r.version(), reqwest::Version::HTTP_2);
                    bytes += r.bytes().await.unwrap().len() as u64;
                }
                bytes
            })
        })
        .collect();
    let mut total = 0u64;
    for s in streams {
        total += s.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// kiln's figures alone: token manifest GETs, blob GETs at 1/16/64
/// connections, pushes, RSS.
struct Figures {
    tok: Wrk,
    blobs: [Wrk; 3],
    push: f64,
    push_chunked: f64,
    rss_rest_kib: u64,
    rss_peak_kib: u64,
}

/// A pull token for the benchmark repository from kiln's token endpoint.
async fn kiln_token(http: &reqwest::Client, host: &str) -> String {
    let v: serde_json::Value = http
        .get(format!(
            "http://{host}/token?service={SERVICE}&scope=repository:{REPO}:pull"
        ))
        .basic_auth("bench", Some("bench-password"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// A Garage cluster `scripts/garage-cluster` started, stopped on drop.
struct Cluster {
    script: PathBuf,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// The same kiln figures with its registry on a three-node Garage cluster
/// (when `garage` is installed), beside those on local disk.
fn on_garage(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    binary: &Path,
    dir: &Path,
    disk: &Figures,
) {
    if !have("garage") {
        println!("registry on Garage: not run: garage missing (scripts/test installs it)\n");
        return;
    }
    let cluster = dir.join("garage");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/garage-cluster");
    // Stopped on every way out, a panic's too.
    let cluster = Cluster {
        script,
        dir: cluster,
    };
    let started = Command::new("bash")
        .arg(&cluster.script)
        .arg("start")
        .arg(&cluster.dir)
        .status()
        .expect("scripts/garage-cluster");
    assert!(started.success(), "Garage cluster did not start");
    let env_file = std::fs::read_to_string(cluster.dir.join("env")).unwrap();
    let var = |k: &str| {
        env_file
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export KILN_TEST_S3_{k}=")))
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned()
    };
    let env = vec![
        ("AWS_ENDPOINT_URL".to_owned(), var("ENDPOINT")),
        ("AWS_ACCESS_KEY_ID".to_owned(), var("KEY_ID")),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), var("SECRET")),
        ("AWS_REGION".to_owned(), var("REGION")),
    ];
    let spec = format!("s3://{}/bench", var("BUCKET"));
    let kiln = start_kiln(binary, &dir.join("kiln-garage"), Some((&spec, &env)));
    std::thread::sleep(Duration::from_secs(1));
    let rss_rest_kib = kiln.rss_kib("VmRSS:");
    let bench_auth = Some(("bench", "bench-password"));
    let (token, layer) = rt.block_on(async {
        let (_, layer) = push_image(http, &kiln.host, bench_auth).await;
        (kiln_token(http, &kiln.host).await, layer)
    });
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json".to_owned();
    let tok = wrk(
        &format!("http://{}/v2/{REPO}/manifests/v1", kiln.host),
        16,
        &[accept, format!("Authorization: Bearer {token}")],
    );
    let blob = format!("http://{}/v2/{REPO}/blobs/{layer}", kiln.host);
    let blobs = [1, 16, 64].map(|c| wrk(&blob, c, &[]));
    let (push, push_chunked) = rt.block_on(async {
        (
            push_mb_per_s(http, &kiln.host, bench_auth, 7, false).await,
            push_mb_per_s(http, &kiln.host, bench_auth, 8, true).await,
        )
    });
    // The store's own ceiling: the same puts straight to the bucket.
    let raw_put = rt.block_on(raw_put_mb_per_s(&env, &var("BUCKET")));
    let g = Figures {
        tok,
        blobs,
        push,
        push_chunked,
        rss_rest_kib,
        rss_peak_kib: kiln.rss_kib("VmHWM:"),
    };
    drop(kiln);
    drop(cluster);
    println!(
        "registry: kiln on local disk vs kiln on Garage (3 nodes on loopback, replication factor 3, fsync)"
    );
    println!("{:<34} {:>10} {:>14}", "figure", "disk", "Garage");
    let both = |name: &str, a: f64, b: f64| println!("{name:<34} {a:>10.2} {b:>14.2}");
    both(
        "manifest GET token req/s (16)",
        disk.tok.req_per_s,
        g.tok.req_per_s,
    );
    both("manifest GET token p50 ms", disk.tok.p50_ms, g.tok.p50_ms);
    both("manifest GET token p99 ms", disk.tok.p99_ms, g.tok.p99_ms);
    for (i, c) in [1, 16, 64].iter().enumerate() {
        both(
            &format!("blob GET MB/s, {c} connections"),
            disk.blobs[i].mb_per_s,
            g.blobs[i].mb_per_s,
        );
    }
    both("monolithic push MB/s", disk.push, g.push);
    both(
        "chunked push MB/s (8 MiB)",
        disk.push_chunked,
        g.push_chunked,
    );
    println!(
        "{:<34} {:>10} {raw_put:>14.2}",
        "S3 PUT MB/s straight (object_store)", "-"
    );
    let mib = |k: u64| k as f64 / 1024.0;
    both(
        "RSS at rest MiB",
        mib(disk.rss_rest_kib),
        mib(g.rss_rest_kib),
    );
    both(
        "RSS peak under load MiB",
        mib(disk.rss_peak_kib),
        mib(g.rss_peak_kib),
    );
    println!();
}

fn row(name: &str, kiln: f64, dist: f64, higher_is_better: bool) {
    let ratio = if higher_is_better {
        kiln / dist
    } else {
        dist / kiln
    };
    println!("{name:<34} {kiln:>10.2} {dist:>14.2} {ratio:>8.2}x");
}

pub(crate) fn benches() {
    if !crate::test_utils::selected("registry") {
        return;
    }
    let missing: Vec<&str> = ["docker-registry", "wrk", "openssl"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        println!(
            "registry: not run: {} missing (apt-get install docker-registry wrk openssl)\n",
            missing.join(", ")
        );
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("kiln-bench-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // Distribution's token auth trusts a certificate whose key signs tokens.
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=kiln-bench",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(ok.status.success());
    // The figures are the release build's; the plain `cargo build
    // --release` binary is started too, for its idle RSS beside it.
    let binary = kiln_release_binary();
    let plain = start_kiln(&kiln_binary(), &dir.join("kiln-plain"), None);
    let kiln = start_kiln(&binary, &dir.join("kiln"), None);
    let storage = dir.join("distribution-storage");
    let dist = start_distribution(&dir.join("dist-anon"), &storage, "");
    let dist_auth = start_distribution(
        &dir.join("dist-token"),
        &storage,
        &format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:9/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            cert.display()
        ),
    );
    std::thread::sleep(Duration::from_secs(1));
    let (kiln_rest, dist_rest) = (kiln.rss_kib("VmRSS:"), dist.rss_kib("VmRSS:"));
    let plain_rest = plain.rss_kib("VmRSS:");
    drop(plain);
    // Of which the process's own memory (heap, stacks, written data), not
    // file pages of the binary and libraries the kernel may share or drop.
    let (kiln_anon, dist_anon) = (kiln.rss_kib("RssAnon:"), dist.rss_kib("RssAnon:"));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let bench_auth = Some(("bench", "bench-password"));
    let (kiln_token, dist_token, layer) = rt.block_on(async {
        let (_, layer) = push_image(&http, &kiln.host, bench_auth).await;
        push_image(&http, &dist.host, None).await;
        let kiln_token = kiln_token(&http, &kiln.host).await;
        let signing = SigningKey::from_pem(&std::fs::read(&key).unwrap())
            .unwrap()
            .with_libtrust_kid()
            .unwrap();
        let dist_token = Minter::new(signing, ISSUER, SERVICE)
            .mint(&MintRequest {
                subject: "bench".into(),
                permissions: vec![format!("{REPO}:pull").parse().unwrap()],
                ttl: Duration::from_secs(3600),
                build_id: None,
            })
            .unwrap();
        (kiln_token, dist_token, layer)
    });
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json".to_owned();
    let manifest = |host: &str| format!("http://{host}/v2/{REPO}/manifests/v1");
    let blob = |host: &str| format!("http://{host}/v2/{REPO}/blobs/{layer}");

    let k_anon = wrk(&manifest(&kiln.host), 16, std::slice::from_ref(&accept));
    let d_anon = wrk(&manifest(&dist.host), 16, std::slice::from_ref(&accept));
    let k_tok = wrk(
        &manifest(&kiln.host),
        16,
        &[
            accept.clone(),
            format!("Authorization: Bearer {kiln_token}"),
        ],
    );
    let d_tok = wrk(
        &manifest(&dist_auth.host),
        16,
        &[
            accept.clone(),
            format!("Authorization: Bearer {dist_token}"),
        ],
    );
    let k_b1 = wrk(&blob(&kiln.host), 1, &[]);
    let d_b1 = wrk(&blob(&dist.host), 1, &[]);
    let k_b16 = wrk(&blob(&kiln.host), 16, &[]);
    let d_b16 = wrk(&blob(&dist.host), 16, &[]);
    let k_b64 = wrk(&blob(&kiln.host), 64, &[]);
    let d_b64 = wrk(&blob(&dist.host), 64, &[]);
    let k_h2 = rt.block_on(h2_blob_mb_per_s(&blob(&kiln.host)));
    let (k_push, d_push, k_chunked, d_chunked) = rt.block_on(async {
        (
            push_mb_per_s(&http, &kiln.host, bench_auth, 1, false).await,
            push_mb_per_s(&http, &dist.host, None, 2, false).await,
            push_mb_per_s(&http, &kiln.host, bench_auth, 3, true).await,
            push_mb_per_s(&http, &dist.host, None, 4, true).await,
        )
    });
    let (kiln_peak, dist_peak) = (
        kiln.rss_kib("VmHWM:"),
        dist.rss_kib("VmHWM:").max(dist_auth.rss_kib("VmHWM:")),
    );

    println!(
        "\nregistry: {} vs CNCF {} 2.8 (Debian docker-registry), loopback, local disk, wrk {LOAD} per figure",
        kiln.name, dist.name
    );
    println!(
        "{:<34} {:>10} {:>14} {:>9}",
        "figure", "kiln", "distribution", "ratio"
    );
    row(
        "manifest GET anonymous req/s (16)",
        k_anon.req_per_s,
        d_anon.req_per_s,
        true,
    );
    row(
        "manifest GET anonymous p50 ms",
        k_anon.p50_ms,
        d_anon.p50_ms,
        false,
    );
    row(
        "manifest GET anonymous p99 ms",
        k_anon.p99_ms,
        d_anon.p99_ms,
        false,
    );
    row(
        "manifest GET token req/s (16)",
        k_tok.req_per_s,
        d_tok.req_per_s,
        true,
    );
    row(
        "manifest GET token p50 ms",
        k_tok.p50_ms,
        d_tok.p50_ms,
        false,
    );
    row(
        "manifest GET token p99 ms",
        k_tok.p99_ms,
        d_tok.p99_ms,
        false,
    );
    row(
        "blob GET MB/s, 1 connection",
        k_b1.mb_per_s,
        d_b1.mb_per_s,
        true,
    );
    row(
        "blob GET MB/s, 16 connections",
        k_b16.mb_per_s,
        d_b16.mb_per_s,
        true,
    );
    row(
        "blob GET MB/s, 64 connections",
        k_b64.mb_per_s,
        d_b64.mb_per_s,
        true,
    );
    row("monolithic push MB/s", k_push, d_push, true);
    row("chunked push MB/s (8 MiB)", k_chunked, d_chunked, true);
    println!(
        "{:<34} {k_h2:>10.2} {:>14} {:>9}",
        "blob GET MB/s, HTTP/2 (1 conn, 16)", "(no h2c)", "-"
    );
    row(
        "RSS at rest MiB",
        kiln_rest as f64 / 1024.0,
        dist_rest as f64 / 1024.0,
        false,
    );
    row(
        "  of which anonymous MiB",
        kiln_anon as f64 / 1024.0,
        dist_anon as f64 / 1024.0,
        false,
    );
    row(
        "  plain cargo build --release MiB",
        plain_rest as f64 / 1024.0,
        dist_rest as f64 / 1024.0,
        false,
    );
    row(
        "RSS peak under load MiB",
        kiln_peak as f64 / 1024.0,
        dist_peak as f64 / 1024.0,
        false,
    );
    println!(
        "(ratio: how many times better kiln is; targets: >= 1 everywhere, >= 2 for token req/s, >= 5 for RSS)\n"
    );
    drop((kiln, dist, dist_auth));
    let disk = Figures {
        tok: k_tok,
        blobs: [k_b1, k_b16, k_b64],
        push: k_push,
        push_chunked: k_chunked,
        rss_rest_kib: kiln_rest,
        rss_peak_kib: kiln_peak,
    };
    on_garage(&rt, &http, &binary, &dir, &disk);
    let _ = std::fs::remove_dir_all(&dir);
}
