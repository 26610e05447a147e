//! Crafted OCI layouts: Docker schema2 media types, and every way a layer
//! can disagree with its descriptor or config.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use kiln_ext4::{Error, Image, Limit, OciLayout, Options, Selector, convert};
use sha2::{Digest, Sha256};

use crate::oracle::{e2fsck_clean, scratch};
use crate::writer::TarBuilder;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

fn sha(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Writes `data` as a blob; returns its digest.
fn blob(root: &Path, data: &[u8]) -> String {
    let digest = sha(data);
    let dir = root.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(digest.trim_start_matches("sha256:")), data).unwrap();
    digest
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A one-layer Docker schema2 image; `tweak` may change the layer
/// descriptor's size or the config's diff_id before they are written.
fn docker_image(name: &str, tweak: impl FnOnce(&mut u64, &mut String)) -> PathBuf {
    docker_image_with(name, 0, tweak)
}

/// [`docker_image`] whose layer has `trailing` zero bytes after the tar
/// stream's end (as tar's record padding does).
fn docker_image_with(
    name: &str,
    trailing: usize,
    tweak: impl FnOnce(&mut u64, &mut String),
) -> PathBuf {
    let root = scratch(name).join("layout");
    let mut tar = TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/hostname", 0o644, b"docker-schema2\n")
        .build();
    tar.resize(tar.len() + trailing, 0);
    let layer = gzip(&tar);
    let layer_digest = blob(&root, &layer);
    let mut size = layer.len() as u64;
    let mut diff_id = sha(&tar);
    tweak(&mut size, &mut diff_id);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/app"], "Env": ["A=1"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": blob(&root, &config), "size": config.len()},
        "layers": [{"mediaType": DOCKER_LAYER, "digest": layer_digest, "size": size}],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": blob(&root, &manifest), "size": manifest.len()}],
    });
    std::fs::write(root.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    root
}

fn convert_layout(root: &Path) -> Result<PathBuf, Error> {
    convert_layout_with(root, Options::default())
}

fn convert_layout_with(root: &Path, options: Options) -> Result<PathBuf, Error> {
    let layout = OciLayout::open(root)?;
    let image = Image::resolve(&layout, &Selector::default())?;
    let out = root.with_file_name("image.ext4");
    let file = BufWriter::new(File::create(&out).unwrap());
    convert(&layout, &image, file, options, &mut |_| {})?;
    Ok(out)
}

#[test]
fn what_follows_the_tar_stream_comes_out_of_the_layer_budget() {
    // A 2.5 KiB tar stream and 8 KiB of zeros after it: within a budget
    // that holds both, over one that holds the zeros alone but not both.
    let root = docker_image_with("trailing", 8 << 10, |_, _| {});
    let with_budget = |bytes: u64| {
        let mut options = Options::default();
        options.limits.max_layer_bytes = bytes;
        convert_layout_with(&root, options)
    };
    with_budget(16 << 10).unwrap();
    match with_budget(9000) {
        Err(Error::LimitExceeded {
            limit: Limit::LayerBytes,
            ..
        }) => {}
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

#[test]
fn docker_schema2_images_convert() {
    let root = docker_image("docker-schema2", |_, _| {});
    let layout = OciLayout::open(&root).unwrap();
    let image = Image::resolve(&layout, &Selector::default()).unwrap();
    assert_eq!(image.run_config().entrypoint, ["/bin/app"]);
    let out = convert_layout(&root).unwrap();
    e2fsck_clean(&out);
    let fs = ext4_view::Ext4::load_from_path(&out).unwrap();
    assert_eq!(
        fs.read_to_string("/etc/hostname").unwrap(),
        "docker-schema2\n"
    );
}

#[test]
fn a_wrong_diff_id_is_refused() {
    let root = docker_image("bad-diff-id", |_, diff_id| {
        *diff_id = sha(b"something else")
    });
    match convert_layout(&root) {
        Err(Error::DiffIdMismatch { layer: 0, .. }) => {}
        other => panic!("expected DiffIdMismatch, got {other:?}"),
    }
}

#[test]
fn a_wrong_layer_size_is_refused() {
    let root = docker_image("bad-size", |size, _| *size += 1);
    match convert_layout(&root) {
        Err(Error::SizeMismatch {
            expected, actual, ..
        }) => assert_eq!(expected, actual + 1),
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
}

/// The layer blob of a [`docker_image`] layout (the only gzip blob).
fn layer_blob(root: &Path) -> PathBuf {
    std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap().starts_with(&[0x1f, 0x8b]))
        .unwrap()
}

#[test]
fn layout_files_are_opened_without_symlinks_and_only_when_regular() {
    use std::os::unix::fs::symlink;
    let readable = |root: &Path| match convert_layout(root) {
        Ok(_) => Ok(()),
        Err(Error::ReadBlob { source, .. }) => Err(source.to_string()),
        Err(other) => panic!("expected ReadBlob, got {other:?}"),
    };
    // A blob that is a symlink to a real file with the right bytes.
    let root = docker_image("layout-blob-symlink", |_, _| {});
    let layer = layer_blob(&root);
    let elsewhere = root.with_file_name("elsewhere.tar.gz");
    std::fs::rename(&layer, &elsewhere).unwrap();
    symlink(&elsewhere, &layer).unwrap();
    readable(&root).unwrap_err();
    // The same bytes in place convert: the refusal is the link's.
    std::fs::remove_file(&layer).unwrap();
    std::fs::copy(&elsewhere, &layer).unwrap();
    readable(&root).unwrap();

    // `blobs` itself a symlink to a copy.
    let root = docker_image("layout-dir-symlink", |_, _| {});
    let copy = root.with_file_name("blobs-copy");
    std::fs::rename(root.join("blobs"), &copy).unwrap();
    symlink(&copy, root.join("blobs")).unwrap();
    assert!(Image::resolve(&OciLayout::open(&root).unwrap(), &Selector::default()).is_err());

    // A FIFO where the layer should be: an error, not a hang.
    let root = docker_image("layout-fifo", |_, _| {});
    let layer = layer_blob(&root);
    std::fs::remove_file(&layer).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&layer)
        .status()
        .unwrap();
    assert!(made.success());
    let err = readable(&root).unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");

    // index.json a symlink, or larger than the document limit.
    let root = docker_image("layout-index", |_, _| {});
    let index = root.join("index.json");
    let moved = root.with_file_name("index.json");
    std::fs::rename(&index, &moved).unwrap();
    symlink(&moved, &index).unwrap();
    assert!(OciLayout::open(&root).is_err());
    std::fs::remove_file(&index).unwrap();
    std::fs::rename(&moved, &index).unwrap();
    let mut limits = kiln_ext4::Limits::default();
    limits.max_document_bytes = 16;
    let resolved = |limits| {
        Image::resolve_with(
            &OciLayout::open(&root).unwrap(),
            &Selector::default(),
            &limits,
        )
    };
    match resolved(limits) {
        Err(Error::LimitExceeded {
            limit: Limit::DocumentBytes,
            ..
        }) => {}
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    // More layers than allowed.
    let mut limits = kiln_ext4::Limits::default();
    limits.max_layers = 0;
    match resolved(limits) {
        Err(Error::LimitExceeded {
            limit: Limit::Layers,
            ..
        }) => {}
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}
