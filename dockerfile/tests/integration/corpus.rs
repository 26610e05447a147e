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

/// The interpreter of BuildKit's parser (PyPI `dockerfile`), from
/// `KILN_PYTHON` (`scripts/test` sets it to the oracle's virtual environment
/// under `target/`). Unset: a failure in CI, a loud skip elsewhere. Set but
/// unable to parse `FROM x` (run isolated, from outside the repository, so
/// the crate folder `dockerfile/` cannot pass for the package): a failure.
pub(crate) fn oracle_python() -> Option<PathBuf> {
    let Some(python) = std::env::var_os("KILN_PYTHON") else {
        let msg = "KILN_PYTHON is unset: it names the Python that has BuildKit's parser \
                   (PyPI `dockerfile==3.4.0`; scripts/test creates target/oracle-venv)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}: required in CI");
        }
        eprintln!("\n\n!!!!! SKIPPING: {msg} !!!!!\n\n");
        return None;
    };
    let python = PathBuf::from(python);
    let check = std::process::Command::new(&python)
        .current_dir(std::env::temp_dir())
        .args([
            "-I",
            "-c",
            "import dockerfile; assert dockerfile.parse_string('FROM x')[0].cmd == 'FROM'",
        ])
        .output();
    match check {
        Ok(out) if out.status.success() => Some(python),
        Ok(out) => panic!(
            "KILN_PYTHON={} cannot run BuildKit's parser (PyPI `dockerfile==3.4.0`): {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("KILN_PYTHON={}: {e}", python.display()),
    }
}

/// Reads a JSON Lines file.
pub(crate) fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}
