//! Independent readers of our output: `e2fsck -fn` and `debugfs`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory under `target/`, emptied first.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-scratch/ext4")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `e2fsck -fn` and panics with its output unless the file system is
/// clean.
pub(crate) fn e2fsck_clean(image: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .expect("e2fsck (e2fsprogs) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "e2fsck -fn {}:\n{text}",
        image.display()
    );
}

/// Runs debugfs commands against `image`; returns stdout.
pub(crate) fn debugfs(image: &Path, commands: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(commands)
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs) must be installed");
    assert!(out.status.success(), "debugfs -R {commands}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
