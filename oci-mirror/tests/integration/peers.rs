//! Real peers for the tests: registries, skopeo, OCI layouts to push.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Whether `tool` is installed; in CI its absence fails the test,
/// elsewhere the test says so loudly and skips.
pub(crate) fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let msg = format!("{tool} not installed (scripts/test installs it)");
        assert!(std::env::var("CI").is_err(), "{msg}: required in CI");
        eprintln!("\n\n!!!!! SKIPPING: {msg} !!!!!\n\n");
    }
    found
}

/// The registry and its client, which every test needs.
pub(crate) fn tools() -> bool {
    have("docker-registry") && have("skopeo")
}

/// A small multi-threaded runtime for the async copies.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh directory for test `name` under the workspace's
/// `target/test-scratch/<crate>/`: emptied when a run starts, left after it
/// for a look at a failure, so repeated runs leave one copy, not one each.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let krate = manifest.file_name().unwrap_or_default();
    let dir = manifest
        .parent()
        .unwrap_or(manifest)
        .join("target/test-scratch")
        .join(krate)
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `docker-registry`, stopped on drop.
pub(crate) struct Registry {
    child: Child,
    pub(crate) host: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) of process `pid` (`self` for this one) and
/// of its children that have been waited for, from `/proc/PID/stat`.
#[allow(dead_code, reason = "for the mirror bench, which shares this file")]
pub(crate) fn cpu_seconds(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may hold spaces: state is the
    // first, utime the 12th, stime, cutime, cstime the next three.
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0.0))
                .collect()
        })
        .unwrap_or_default();
    let tick = |i: usize| fields.get(i).copied().unwrap_or(0.0) / 100.0;
    (tick(11) + tick(12), tick(13) + tick(14))
}

impl Registry {
    /// CPU seconds the registry has used so far.
    #[allow(dead_code, reason = "for the mirror bench, which shares this file")]
    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.child.id().to_string()).0
    }

    pub(crate) fn start(dir: &Path) -> Self {
        Self::start_with(dir, "")
    }

    /// A registry with extra configuration (e.g. an `auth:` section).
    pub(crate) fn start_with(dir: &Path, extra: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::create_dir_all(dir).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
            dir.join("storage").display()
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
        let reg = Self {
            child,
            host: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return reg;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut log = String::new();
        let _ = std::fs::File::open(dir.join("registry.log"))
            .and_then(|mut f| f.read_to_string(&mut log));
        panic!("docker-registry did not start: {log}");
    }
}

/// A registry that wants basic auth: user `kiln`, password `s3cret`
/// (an htpasswd file written with Apache's `htpasswd`).
pub(crate) fn htpasswd_registry(dir: &Path) -> Registry {
    std::fs::create_dir_all(dir).unwrap();
    let passwd = dir.join("htpasswd");
    let out = Command::new("htpasswd")
        .args(["-Bbn", "kiln", "s3cret"])
        .output()
        .expect("run htpasswd");
    assert!(out.status.success());
    std::fs::write(&passwd, out.stdout).unwrap();
    Registry::start_with(
        dir,
        &format!(
            "auth:\n  htpasswd:\n    realm: kiln\n    path: {}\n",
            passwd.display()
        ),
    )
}

pub(crate) fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("run skopeo")
}

pub(crate) fn ok(out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The raw manifest skopeo reads at `image` (plain HTTP).
pub(crate) fn raw_manifest(image: &str) -> Vec<u8> {
    ok(skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]))
}

pub(crate) fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Deterministic pseudo-random bytes (xorshift).
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

/// An OCI image layout under construction.
pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
}

impl Layout {
    pub(crate) fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Self {
            dir: dir.to_owned(),
        }
    }

    fn blob(&self, data: &[u8]) -> String {
        let d = sha256(data);
        std::fs::write(self.dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        d
    }

    /// An image manifest with layers of the given sizes; returns
    /// `(digest, size)` of the manifest.
    pub(crate) fn image(&self, seed: u64, layer_sizes: &[usize], arch: &str) -> (String, usize) {
        let mut layers = Vec::new();
        for (i, size) in layer_sizes.iter().enumerate() {
            let data = noise(seed * 1000 + i as u64, *size);
            layers.push((self.blob(&data), data.len()));
        }
        let diff_ids: Vec<String> = layers.iter().map(|(d, _)| format!("\"{d}\"")).collect();
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
            diff_ids.join(",")
        );
        let config_digest = self.blob(config.as_bytes());
        let layer_json: Vec<String> = layers
            .iter()
            .map(|(d, s)| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{s}}}"#))
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
            config.len(),
            layer_json.join(",")
        );
        (self.blob(manifest.as_bytes()), manifest.len())
    }

    /// Writes `index.json` naming one manifest or an index of several.
    pub(crate) fn tag(&self, tag: &str, manifests: &[(String, usize, &str)]) {
        let entry = if let [(d, s, _)] = manifests {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{s},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}"#
            )
        } else {
            let items: Vec<String> = manifests
                .iter()
                .map(|(d, s, arch)| format!(r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{s},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#))
                .collect();
            let index = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
                items.join(",")
            );
            let d = self.blob(index.as_bytes());
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{d}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}"#,
                index.len()
            )
        };
        std::fs::write(
            self.dir.join("index.json"),
            format!(r#"{{"schemaVersion":2,"manifests":[{entry}]}}"#),
        )
        .unwrap();
    }

    /// Pushes tag `tag` of the layout with skopeo.
    pub(crate) fn push(&self, tag: &str, image: &str, all: bool) {
        let src = format!("oci:{}:{tag}", self.dir.display());
        let dst = format!("docker://{image}");
        let mut args = vec!["copy", "--dest-tls-verify=false"];
        if all {
            args.push("--all");
        }
        args.extend([src.as_str(), dst.as_str()]);
        ok(skopeo(&args));
    }
}
