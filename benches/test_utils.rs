//! Helpers shared by the benchmark areas.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `$KILN_SHARED_DIR`, default `../shared` beside the repository; the
/// benchmarks need the corpus and say so.
pub(crate) fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("KILN_SHARED_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
        PathBuf::from,
    );
    assert!(
        dir.join("corpus").is_dir(),
        "shared corpus not found at {} (set KILN_SHARED_DIR)",
        dir.display()
    );
    dir
}

/// Runs `f` repeatedly for about `budget` and returns the best time of one
/// call (the least disturbed run), after a warm-up.
pub(crate) fn best_time(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut runs = 0u32;
    while runs < 3 || (start.elapsed() < budget && runs < 10_000) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

/// Megabytes (10^6 bytes) per second.
pub(crate) fn mb_per_s(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e6
}

/// Whether the side-by-side comparison of `area` should run: no name
/// filter was given on the command line, or one matches `area`.
pub(crate) fn selected(area: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| area.contains(f.as_str()))
}

/// Peak RSS (MiB) of `cmd`, which must run under GNU `time -f %M`.
pub(crate) fn peak_rss_mib(cmd: &mut std::process::Command) -> f64 {
    let out = cmd.output().expect("GNU time (package `time`)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stderr);
    let kb: f64 = text
        .lines()
        .last()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0.0);
    kb / 1024.0
}

/// A free loopback port.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (30 s at most) until `host` accepts connections.
pub(crate) fn wait_for(host: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(host).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `tool` is on `PATH`.
pub(crate) fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `kiln`, built in release mode for a comparison.
pub(crate) fn kiln_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "kiln",
            "--bin",
            "kiln",
        ])
        .status()
        .expect("cargo build kiln");
    assert!(status.success(), "building kiln failed");
    root.join("target/release/kiln")
}

/// `kiln` as released: `scripts/release-build` (static, its code laid out
/// by a profile run of itself).
pub(crate) fn kiln_release_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(root.join("scripts/release-build"))
        .current_dir(&root)
        .status()
        .expect("scripts/release-build");
    assert!(status.success(), "scripts/release-build failed");
    root.join("target/kiln-release/kiln")
}
