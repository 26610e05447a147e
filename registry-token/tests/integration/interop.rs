//! Interop with a real peer: Debian's `docker-registry` (CNCF distribution
//! 2.8) configured with `auth: token`, trusting a certificate whose key Kiln
//! signs with (ES256, libtrust `kid`); real requests with curl and skopeo
//! through a token endpoint that mints with this crate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_registry_token::{
    Challenge, ChallengeError, MintRequest, Minter, Permission, SigningKey, grant, parse_scopes,
};
use sha2::{Digest, Sha256};

const SERVICE: &str = "kiln-interop";
const ISSUER: &str = "kiln-interop-issuer";

/// `None` (with a loud message) when a tool is missing outside CI; in CI
/// a missing tool fails the test.
fn tools() -> Option<()> {
    for tool in ["docker-registry", "skopeo", "openssl", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            let msg = format!("{tool} not installed (scripts/test installs it)");
            assert!(std::env::var("CI").is_err(), "{msg}: required in CI");
            eprintln!("\n\n!!!!! SKIPPING interop test: {msg} !!!!!\n\n");
            return None;
        }
    }
    Some(())
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-token-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output().expect("spawn")
}

/// Kills the registry when the test ends, however it ends.
struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A token endpoint: grants the requested scopes that `policy` allows,
/// minted by this crate. Stops itself when dropped (or after 5 minutes).
struct TokenServer {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve_one(mut stream: TcpStream, minter: &Minter, policy: &[Permission]) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Skip the headers.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut requested = Vec::new();
    for pair in query.split('&') {
        if let Some(("scope", v)) = pair.split_once('=') {
            requested.extend(parse_scopes(&percent_decode(v)).unwrap_or_default());
        }
    }
    let permissions = grant(&requested, policy);
    let token = minter
        .mint(&MintRequest {
            subject: "interop".into(),
            permissions,
            ttl: Duration::from_secs(300),
            build_id: None,
        })
        .unwrap();
    let body = format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

fn token_server(minter: Minter, policy: Vec<Permission>) -> TokenServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).ok();
                    serve_one(stream, &minter, &policy);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    TokenServer {
        url,
        stop,
        thread: Some(thread),
    }
}

fn write_blob(layout: &Path, data: &[u8]) -> String {
    let hex = format!("{:x}", Sha256::digest(data));
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    format!("sha256:{hex}")
}

/// A one-layer OCI image layout (an empty tar as the layer), tag `v1`.
fn oci_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let layer = vec![0u8; 1024];
    let layer_digest = write_blob(&layout, &layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    );
    let config_digest = write_blob(&layout, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let manifest_digest = write_blob(&layout, manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
        manifest.len()
    );
    std::fs::write(layout.join("index.json"), index).unwrap();
    layout
}

fn start_registry(dir: &Path, port: u16, realm: &str, cert: &Path) -> Registry {
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        dir.join("storage").display(),
        cert.display()
    );
    let config_path = dir.join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start docker-registry");
    let registry = Registry(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return registry;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut log = String::new();
    std::fs::File::open(dir.join("registry.log"))
        .and_then(|mut f| f.read_to_string(&mut log))
        .ok();
    panic!("docker-registry did not start: {log}");
}

/// `(status, WWW-Authenticate)` of a GET with an optional bearer token.
fn get(url: &str, token: Option<&str>) -> (u16, Option<String>) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-D", "-", "--max-time", "10", url]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = run(&mut cmd);
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let challenge = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("www-authenticate")
            .then(|| v.trim().to_owned())
    });
    (status, challenge)
}

fn mint(minter: &Minter, permissions: &[&str]) -> String {
    minter
        .mint(&MintRequest {
            subject: "interop".into(),
            permissions: permissions.iter().map(|p| p.parse().unwrap()).collect(),
            ttl: Duration::from_secs(300),
            build_id: Some("interop-1".into()),
        })
        .unwrap()
}

fn skopeo_copy(layout: &Path, dest: &str) -> std::process::Output {
    run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--dest-tls-verify=false",
        "--retry-times=0",
        &format!("oci:{}:v1", layout.display()),
        dest,
    ]))
}

#[test]
fn distribution_accepts_exactly_what_kiln_tokens_grant() {
    if tools().is_none() {
        return;
    }
    let dir = scratch_dir();
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let out = run(Command::new("openssl")
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
            "/CN=kiln-interop",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signing = SigningKey::from_pem(&std::fs::read(&key).unwrap())
        .unwrap()
        .with_libtrust_kid()
        .unwrap();
    let minter = Minter::new(signing, ISSUER, SERVICE);
    let policy: Vec<Permission> = vec![
        "kiln/allowed:push".parse().unwrap(),
        "kiln/readonly:pull".parse().unwrap(),
    ];
    let tokens = token_server(minter.clone(), policy);
    let port = free_port();
    let _registry = start_registry(&dir, port, &tokens.url, &cert);
    let base = format!("http://127.0.0.1:{port}");

    // No token: a challenge that our parser reads.
    let (status, header) = get(&format!("{base}/v2/kiln/allowed/tags/list"), None);
    assert_eq!(status, 401);
    let challenge: Challenge = header.expect("WWW-Authenticate").parse().unwrap();
    assert_eq!(challenge.realm, tokens.url);
    assert_eq!(challenge.service.as_deref(), Some(SERVICE));
    assert_eq!(
        challenge.scopes[0].to_string(),
        "repository:kiln/allowed:pull"
    );

    // A token for exactly kiln/allowed: accepted there (404: empty repo),
    // refused next door with insufficient_scope.
    let token = mint(&minter, &["kiln/allowed:pull"]);
    assert_eq!(
        get(&format!("{base}/v2/kiln/allowed/tags/list"), Some(&token)).0,
        404
    );
    let (status, header) = get(&format!("{base}/v2/kiln/other/tags/list"), Some(&token));
    assert_eq!(status, 401);
    let refused: Challenge = header.unwrap().parse().unwrap();
    assert_eq!(refused.error, Some(ChallengeError::InsufficientScope));

    // A token signed by another key: invalid_token.
    let stranger = SigningKey::from_pem(include_bytes!("../data/es256.pem"))
        .unwrap()
        .with_libtrust_kid()
        .unwrap();
    let forged = mint(
        &Minter::new(stranger, ISSUER, SERVICE),
        &["kiln/allowed:pull"],
    );
    let (status, header) = get(&format!("{base}/v2/kiln/allowed/tags/list"), Some(&forged));
    assert_eq!(status, 401);
    let refused: Challenge = header.unwrap().parse().unwrap();
    assert_eq!(refused.error, Some(ChallengeError::InvalidToken));

    // skopeo runs the whole token flow: push where the policy allows it,
    // and only there.
    let layout = oci_layout(&dir);
    let pushed = skopeo_copy(
        &layout,
        &format!("docker://127.0.0.1:{port}/kiln/allowed:v1"),
    );
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let inspect = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://127.0.0.1:{port}/kiln/allowed:v1"),
    ]));
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    assert!(
        String::from_utf8_lossy(&inspect.stdout)
            .contains("application/vnd.oci.image.manifest.v1+json")
    );
    for denied in ["kiln/readonly", "kiln/denied"] {
        let out = skopeo_copy(&layout, &format!("docker://127.0.0.1:{port}/{denied}:v1"));
        assert!(!out.status.success(), "push to {denied} must be refused");
    }
    // Pull access to readonly is granted, but there is nothing there.
    let token = mint(&minter, &["kiln/readonly:pull"]);
    assert_eq!(
        get(&format!("{base}/v2/kiln/readonly/tags/list"), Some(&token)).0,
        404
    );

    drop(tokens);
    std::fs::remove_dir_all(&dir).ok();
}
