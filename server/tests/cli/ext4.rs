//! `kiln ext4 convert`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

/// Where `scripts/test-images` puts its OCI layout
/// (`$KILN_TEST_IMAGES/layout`).
pub(crate) fn layout_dir() -> PathBuf {
    std::env::var_os("KILN_TEST_IMAGES")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-images"),
            PathBuf::from,
        )
        .join("layout")
}

/// The layout `scripts/test-images` builds; loud skip outside CI.
pub(crate) fn images() -> Option<PathBuf> {
    let layout = layout_dir();
    if layout.join("index.json").exists() {
        return Some(layout);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "ext4 test images missing at {}",
        layout.display()
    );
    eprintln!("SKIPPED (not in CI): ext4 test images missing; run scripts/test-images");
    None
}

/// An empty scratch directory under `target/test-scratch/cli`.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-scratch/cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn convert_writes_a_clean_image_and_its_run_config() {
    let Some(layout) = images() else {
        return;
    };
    let dir = scratch("convert");
    let out = dir.join("debian.ext4");
    let source = format!("oci:{}:debian", layout.display());
    let result = kiln(&[
        "ext4",
        "convert",
        &source,
        "-o",
        out.to_str().unwrap(),
        "--free",
        "10%",
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.join("debian.json")).unwrap()).unwrap();
    assert_eq!(config["entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(config["cmd"], serde_json::json!(["echo hello"]));
    assert_eq!(config["working_dir"], "/srv");
    assert_eq!(config["user"], "1000:1000");
    assert!(
        config["env"]
            .as_array()
            .unwrap()
            .contains(&"FOO=bar".into())
    );
    assert_eq!(config["exposed_ports"], serde_json::json!(["8080/tcp"]));
    assert_eq!(config["labels"]["org.example.test"], "1");
    assert_eq!(config["stop_signal"], "SIGTERM");
    assert!(config["image"].as_str().unwrap().starts_with("sha256:"));
    // --free 10% leaves at least a tenth of the file system free.
    let dumpe2fs = Command::new("dumpe2fs")
        .arg("-h")
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dumpe2fs.stdout);
    let field = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..].trim().parse().unwrap()
    };
    let (blocks, free) = (field("Block count:"), field("Free blocks:"));
    assert!(free * 10 >= blocks, "{free} free of {blocks}");

    // Same image twice: byte-identical output.
    let again = dir.join("again.ext4");
    let meta = dir.join("again.json");
    let result = kiln(&[
        "ext4",
        "convert",
        &source,
        "-o",
        again.to_str().unwrap(),
        "--free",
        "10%",
        "--metadata",
        meta.to_str().unwrap(),
    ]);
    assert!(result.status.success());
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&again).unwrap(),
        "not deterministic"
    );
    assert!(meta.exists());
}

#[test]
fn cache_manifests_are_refused_and_leave_no_output() {
    let Some(layout) = images() else {
        return;
    };
    let dir = scratch("refused");
    let out = dir.join("cache.ext4");
    let source = format!("oci:{}:buildkit-cache", layout.display());
    let result = kiln(&["ext4", "convert", &source, "-o", out.to_str().unwrap()]);
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("not a runnable image"), "{stderr}");
    assert!(
        stderr.contains("application/vnd.buildkit.cacheconfig.v0"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "output left behind: {left:?}");
}

#[test]
fn a_corrupt_layer_fails_and_leaves_no_output() {
    let Some(layout) = images() else {
        return;
    };
    // A private copy of the layout whose zstd image has one flipped byte.
    let dir = scratch("corrupt");
    let copy = dir.join("layout");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&layout)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let index: Value =
        serde_json::from_slice(&std::fs::read(copy.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "zstd")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = |d: &str| {
        copy.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    let layer = blob(manifest["layers"][1]["digest"].as_str().unwrap());
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[600] ^= 0x40;
    std::fs::write(&layer, bytes).unwrap();
    let out = dir.join("out.ext4");
    let source = format!("oci:{}:zstd", copy.display());
    let result = kiln(&["ext4", "convert", &source, "-o", out.to_str().unwrap()]);
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("digest"), "{stderr}");
    assert!(!out.exists());
    assert!(!dir.join("out.json").exists());
}
