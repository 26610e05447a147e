//! Locating the shared corpus (third-party files stay outside the repo).

use std::path::PathBuf;

/// `$KILN_SHARED_DIR`, default `../shared` beside the repository. Absent
/// in CI (`CI=true`) is a failure; elsewhere the caller is told loudly and
/// gets `None`.
pub(crate) fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_SHARED_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
        PathBuf::from,
    );
    if dir.join("corpus/dockerfile").is_dir() {
        return Some(dir);
    }
    let msg = format!(
        "shared corpus not found at {} (set KILN_SHARED_DIR)",
        dir.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}: required in CI");
    }
    eprintln!("\n\n!!!!! SKIPPING: {msg} !!!!!\n\n");
    None
}

/// Reads a JSON Lines file.
pub(crate) fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}
