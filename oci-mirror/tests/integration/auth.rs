//! The client's authentication against real registries: basic auth via
//! htpasswd, and the Bearer token flow against a registry with
//! `auth: token` whose tokens `kiln-registry-token` mints.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_oci_mirror::{
    CopyOptions, Credentials, Error, ImageLocation, RegistryClient, RegistryConfig, copy,
};
use kiln_registry_token::{MintRequest, Minter, Permission, SigningKey, grant, parse_scopes};

use crate::peers::{
    Layout, Registry, have, htpasswd_registry, raw_manifest, runtime, scratch, tools,
};

fn client(host: &str, creds: Option<Credentials>) -> RegistryClient {
    let mut cfg = RegistryConfig::new(host);
    cfg.insecure = true;
    cfg.credentials = creds;
    RegistryClient::new(cfg).unwrap()
}

fn source(dir: &std::path::Path) -> (Registry, ImageLocation) {
    let a = Registry::start(&dir.join("a"));
    let layout = Layout::new(&dir.join("layout"));
    let m = layout.image(3, &[1 << 20, 64 << 10], "amd64");
    layout.tag("v1", &[(m.0.clone(), m.1, "amd64")]);
    let src = format!("{}/src/app:v1", a.host);
    layout.push("v1", &src, false);
    (a, src.parse().unwrap())
}

#[test]
fn basic_auth_with_htpasswd() {
    if !tools() || !have("htpasswd") {
        return;
    }
    let dir = scratch("basic");
    let (a, src) = source(&dir);
    let b = htpasswd_registry(&dir.join("b"));
    let rt = runtime();
    let dst: ImageLocation = format!("{}/mirror/app:v1", b.host).parse().unwrap();
    let err = rt
        .block_on(copy(
            &client(&a.host, None),
            &src,
            &client(&b.host, None),
            &dst,
            &CopyOptions::default(),
        ))
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    let wrong = Some(Credentials::new("kiln", "wrong"));
    assert!(
        rt.block_on(copy(
            &client(&a.host, None),
            &src,
            &client(&b.host, wrong),
            &dst,
            &CopyOptions::default()
        ))
        .is_err()
    );
    let creds = Some(Credentials::new("kiln", "s3cret"));
    let report = rt
        .block_on(copy(
            &client(&a.host, None),
            &src,
            &client(&b.host, creds),
            &dst,
            &CopyOptions::default(),
        ))
        .unwrap();
    assert_eq!(report.blobs_copied, 3);
    let raw = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "kiln:s3cret",
        ])
        .arg(format!("docker://{}", dst))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(raw.stdout, raw_manifest(&src.to_string()));
    drop((a, b));
    std::fs::remove_dir_all(&dir).ok();
}

/// A token endpoint granting requested scopes as `policy` allows.
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

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            stream.set_nonblocking(false).ok();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let query = line
                .split_whitespace()
                .nth(1)
                .and_then(|t| t.split_once('?'))
                .map_or("", |(_, q)| q);
            let requested: Vec<_> = query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("scope="))
                .flat_map(|v| parse_scopes(&decode(v)).unwrap_or_default())
                .collect();
            let token = minter
                .mint(&MintRequest {
                    subject: "mirror".into(),
                    permissions: grant(&requested, &policy),
                    ttl: Duration::from_secs(300),
                    build_id: None,
                })
                .unwrap();
            let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    TokenServer {
        url,
        stop,
        thread: Some(thread),
    }
}

#[test]
fn bearer_token_flow_with_kiln_minted_tokens() {
    if !tools() || !have("openssl") {
        return;
    }
    let dir = scratch("token");
    let (a, src) = source(&dir);
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let out = Command::new("openssl")
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
            "/CN=kiln-mirror",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success());
    let signing = SigningKey::from_pem(&std::fs::read(&key).unwrap())
        .unwrap()
        .with_libtrust_kid()
        .unwrap();
    let minter = Minter::new(signing, "kiln-mirror-issuer", "kiln-mirror");
    let tokens = token_server(minter, vec!["mirror/*:push".parse().unwrap()]);
    let b = Registry::start_with(
        &dir.join("b"),
        &format!(
            "auth:\n  token:\n    realm: {}\n    service: kiln-mirror\n    issuer: kiln-mirror-issuer\n    rootcertbundle: {}\n",
            tokens.url,
            cert.display()
        ),
    );
    let rt = runtime();
    let dst: ImageLocation = format!("{}/mirror/app:v1", b.host).parse().unwrap();
    let report = rt
        .block_on(copy(
            &client(&a.host, None),
            &src,
            &client(&b.host, None),
            &dst,
            &CopyOptions::default(),
        ))
        .unwrap();
    assert_eq!(report.blobs_copied, 3);
    // Pulls are granted too (push implies pull): skopeo reads it back.
    assert_eq!(
        raw_manifest(&dst.to_string()),
        raw_manifest(&src.to_string())
    );
    // Outside the policy the token grants nothing: a clear error, no tag.
    let denied: ImageLocation = format!("{}/other/app:v1", b.host).parse().unwrap();
    let err = rt
        .block_on(copy(
            &client(&a.host, None),
            &src,
            &client(&b.host, None),
            &denied,
            &CopyOptions::default(),
        ))
        .unwrap_err();
    assert!(
        matches!(err, Error::Auth { .. } | Error::Status { status: 401, .. }),
        "{err}"
    );
    drop(tokens);
    drop((a, b));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn private_ca_is_trusted_only_when_given() {
    if !tools() || !have("openssl") {
        return;
    }
    let dir = scratch("tls");
    let (a, src) = source(&dir);
    // A private CA and a server certificate it signed (rustls refuses a
    // self-signed CA certificate as the server's own).
    let (ca_key, ca) = (dir.join("ca.key"), dir.join("ca.pem"));
    let (key, csr, cert, ext) = (
        dir.join("tls.key"),
        dir.join("tls.csr"),
        dir.join("tls.pem"),
        dir.join("tls.ext"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |p: &std::path::Path| p.display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=kiln-test-ca",
                "-keyout",
                &p(&ca_key),
                "-out",
                &p(&ca),
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                &p(&key),
                "-out",
                &p(&csr),
            ],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&cert),
    ]);
    let b = Registry::start_with(
        &dir.join("b"),
        &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ),
    );
    let rt = runtime();
    let dst: ImageLocation = format!("{}/mirror/app:v1", b.host).parse().unwrap();
    let https = |ca: Vec<Vec<u8>>| {
        let mut cfg = RegistryConfig::new(&b.host);
        cfg.ca_certificates = ca;
        cfg.attempts = 1;
        RegistryClient::new(cfg).unwrap()
    };
    let err = rt
        .block_on(copy(
            &client(&a.host, None),
            &src,
            &https(Vec::new()),
            &dst,
            &CopyOptions::default(),
        ))
        .unwrap_err();
    assert!(
        matches!(err, Error::Request { .. }),
        "an unknown CA is refused: {err}"
    );
    let report = rt
        .block_on(copy(
            &client(&a.host, None),
            &src,
            &https(vec![std::fs::read(&ca).unwrap()]),
            &dst,
            &CopyOptions::default(),
        ))
        .unwrap();
    assert_eq!(report.blobs_copied, 3);
    drop((a, b));
    std::fs::remove_dir_all(&dir).ok();
}
