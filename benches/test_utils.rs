//! Helpers shared by the benchmark areas.

use std::path::PathBuf;
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
