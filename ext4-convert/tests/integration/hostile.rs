//! Hostile layers: escapes stay inside the image, limits and unrepresentable
//! entries give typed errors.

use std::io::Cursor;

use kiln_ext4::{EntryError, Error, Ext4Writer, Limit, Limits, Options};

use crate::fuzz_corpus::corpus_layers;
use crate::oracle::{e2fsck_clean, scratch};
use crate::writer::TarBuilder;

fn convert(layers: &[Vec<u8>], limits: Limits) -> Result<Vec<u8>, Error> {
    let options = Options {
        limits,
        ..Options::default()
    };
    let mut writer = Ext4Writer::new(Cursor::new(Vec::new()), options);
    for layer in layers {
        writer.add_layer(&layer[..])?;
    }
    Ok(writer.finish()?.0.into_inner())
}

fn load(image: Vec<u8>) -> ext4_view::Ext4 {
    ext4_view::Ext4::load(Box::new(image)).unwrap()
}

#[test]
fn dot_dot_absolute_and_symlinked_paths_stay_inside_the_image() {
    let image = convert(&corpus_layers("symlink-escape"), Limits::default()).unwrap();
    let dir = scratch("escape");
    let path = dir.join("image.ext4");
    std::fs::write(&path, &image).unwrap();
    e2fsck_clean(&path);
    let fs = load(image);
    // `link -> /etc` then `link/passwd`: resolved inside the image's root.
    assert_eq!(fs.read_to_string("/etc/passwd").unwrap(), "inside");
    // `up -> ../../..` clamps at the root.
    assert_eq!(fs.read_to_string("/x").unwrap(), "still inside");
    assert_eq!(fs.read_to_string("/outside").unwrap(), "clamped");
    assert_eq!(fs.read_to_string("/abs/path").unwrap(), "abs");
    assert!(fs.symlink_metadata("/link").unwrap().is_symlink());
    // Nothing was written next to the output.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["image.ext4"]);
}

#[test]
fn whiteouts_opaque_dirs_and_replacements_apply_across_layers() {
    let fs = load(convert(&corpus_layers("whiteouts"), Limits::default()).unwrap());
    let names = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = fs
            .read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_str().unwrap().to_string())
            .filter(|n| n != "." && n != "..")
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("/a"), ["z"]);
    assert_eq!(names("/"), ["a", "c", "lost+found"]);
    assert_eq!(fs.read_to_string("/c").unwrap(), "z");

    let fs = load(convert(&corpus_layers("replace"), Limits::default()).unwrap());
    assert_eq!(fs.read_to_string("/p").unwrap(), "now a file");
    assert_eq!(fs.read_to_string("/f/inner").unwrap(), "dup wins");
}

fn entry_error(result: Result<Vec<u8>, Error>) -> EntryError {
    match result {
        Err(Error::Entry { kind, .. }) => kind,
        other => panic!("expected an entry error, got {other:?}"),
    }
}

#[test]
fn unrepresentable_entries_are_typed_errors() {
    let missing = TarBuilder::new()
        .link(tar::EntryType::Link, "hard", "nowhere")
        .build();
    assert!(matches!(
        entry_error(convert(&[missing], Limits::default())),
        EntryError::HardlinkTargetMissing { .. }
    ));
    let to_dir = TarBuilder::new()
        .dir("d/", 0o755)
        .link(tar::EntryType::Link, "hard", "d")
        .build();
    assert_eq!(
        entry_error(convert(&[to_dir], Limits::default())),
        EntryError::HardlinkToDirectory
    );
    let through_file = TarBuilder::new()
        .file("f", 0o644, b"x")
        .file("f/child", 0o644, b"y")
        .build();
    assert_eq!(
        entry_error(convert(&[through_file], Limits::default())),
        EntryError::NotADirectory
    );
    let looped = TarBuilder::new()
        .link(tar::EntryType::Symlink, "a", "b")
        .link(tar::EntryType::Symlink, "b", "a")
        .file("a/x", 0o644, b"x")
        .build();
    assert_eq!(
        entry_error(convert(&[looped], Limits::default())),
        EntryError::TooManySymlinks
    );
    // Symlinks whose long targets queue thousands of parts each behind the
    // next link: charged when queued (not only when walked, which a
    // missing name would cut short), so a whiteout through them costs
    // bounded work.
    let padding = "x/../".repeat(750);
    let queued = TarBuilder::new()
        .dir("x/", 0o755)
        .link(tar::EntryType::Symlink, "s1", &format!("s2/{padding}"))
        .link(tar::EntryType::Symlink, "s2", &format!("s3/{padding}"))
        .link(tar::EntryType::Symlink, "s3", &format!("missing/{padding}"))
        .file("s1/.wh.x", 0o644, b"")
        .build();
    assert_eq!(
        entry_error(convert(&[queued], Limits::default())),
        EntryError::TooManySymlinks
    );
    // Device numbers ext4 cannot hold (12-bit major, 20-bit minor).
    for (major, minor) in [(4096, 0), (0, 1 << 20)] {
        let device = TarBuilder::new()
            .special(tar::EntryType::Char, "dev/x", major, minor)
            .build();
        assert_eq!(
            entry_error(convert(&[device], Limits::default())),
            EntryError::InvalidHeader,
            "{major}:{minor}"
        );
    }
    let largest = TarBuilder::new()
        .special(tar::EntryType::Char, "dev/x", 0xfff, 0xf_ffff)
        .build();
    convert(&[largest], Limits::default()).unwrap();
}

#[test]
fn limits_are_enforced_with_typed_errors() {
    let many = (0..50).fold(TarBuilder::new(), |t, i| {
        t.file(&format!("f{i}"), 0o644, b"x")
    });
    let many = many.build();
    let limit = |result: Result<Vec<u8>, Error>| match result {
        Err(Error::LimitExceeded { limit, .. }) => limit,
        other => panic!("expected a limit error, got {other:?}"),
    };
    let mut limits = Limits::default();
    limits.max_inodes = 10;
    assert_eq!(
        limit(convert(std::slice::from_ref(&many), limits)),
        Limit::Inodes
    );

    let mut limits = Limits::default();
    limits.max_layer_bytes = 4096;
    assert_eq!(
        limit(convert(std::slice::from_ref(&many), limits)),
        Limit::LayerBytes
    );

    let deep = TarBuilder::new().file(&"d/".repeat(40).to_string().add_file(), 0o644, b"x");
    let mut limits = Limits::default();
    limits.max_path_depth = 16;
    assert_eq!(limit(convert(&[deep.build()], limits)), Limit::PathDepth);

    let big = TarBuilder::new()
        .file("big", 0o644, &vec![1u8; 3 << 20])
        .build();
    let mut limits = Limits::default();
    limits.max_image_bytes = 1 << 20;
    assert_eq!(limit(convert(&[big], limits)), Limit::ImageBytes);

    // One path written again and again with a long link target: few live
    // inodes, but every version's bytes were taken in.
    let target = "t".repeat(4000);
    let rewritten = (0..100).fold(TarBuilder::new(), |t, _| {
        t.link(tar::EntryType::Symlink, "l", &target)
    });
    let mut limits = Limits::default();
    limits.max_metadata_bytes = 64 << 10;
    assert_eq!(
        limit(convert(&[rewritten.build()], limits)),
        Limit::MetadataBytes
    );
}

trait AddFile {
    fn add_file(self) -> String;
}

impl AddFile for String {
    fn add_file(self) -> String {
        self + "f"
    }
}

#[test]
fn lost_and_found_must_stay_a_directory() {
    let file = TarBuilder::new().file("lost+found", 0o644, b"x").build();
    assert!(matches!(
        convert(&[file], Limits::default()),
        Err(Error::LostFoundNotADirectory)
    ));
    // A directory of the image's own is kept, with its content.
    let dir = TarBuilder::new()
        .dir("lost+found/", 0o755)
        .file("lost+found/note", 0o644, b"kept")
        .build();
    let fs = load(convert(&[dir], Limits::default()).unwrap());
    assert_eq!(fs.read_to_string("/lost+found/note").unwrap(), "kept");
}

#[test]
fn nul_bytes_in_names_are_refused() {
    let layers = corpus_layers("nul-in-name");
    assert_eq!(
        entry_error(convert(&layers, Limits::default())),
        EntryError::NulByte
    );
}

/// Writes `value` into a numeric tar field: octal when it fits, else GNU
/// base-256.
fn numeric(field: &mut [u8], value: u64) {
    let octal = format!("{value:0width$o}", width = field.len() - 1);
    if octal.len() < field.len() {
        field[..octal.len()].copy_from_slice(octal.as_bytes());
        field[octal.len()] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
    }
}

#[test]
fn a_sparse_entry_cannot_expand_past_the_layer_limit() {
    // A GNU sparse file claiming 1 TiB with 512 bytes of data far out.
    let mut h = tar::Header::new_gnu();
    h.set_path("huge").unwrap();
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(512);
    {
        let gnu = h.as_gnu_mut().unwrap();
        numeric(&mut gnu.sparse[0].offset, 1 << 40);
        numeric(&mut gnu.sparse[0].numbytes, 512);
        numeric(&mut gnu.realsize, (1 << 40) + 512);
    }
    h.set_cksum();
    let mut layer = h.as_bytes().to_vec();
    layer.extend_from_slice(&[b'x'; 512]);
    layer.extend_from_slice(&[0; 1024]);
    let mut limits = Limits::default();
    limits.max_layer_bytes = 1 << 20;
    match convert(&[layer], limits) {
        Err(Error::LimitExceeded { limit, .. }) => assert_eq!(limit, Limit::LayerBytes),
        other => panic!("expected the layer byte limit, got {other:?}"),
    }
}

#[test]
fn an_oversized_pax_header_is_refused_before_it_is_buffered() {
    let mut h = tar::Header::new_ustar();
    h.set_path("././@PaxHeader").unwrap();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(65 << 20);
    h.set_mode(0o644);
    h.set_cksum();
    let mut layer = h.as_bytes().to_vec();
    layer.resize(512 + (65 << 20), b'a');
    assert_eq!(
        entry_error(convert(&[layer], Limits::default())),
        EntryError::HeaderTooLarge
    );
}

#[test]
fn hostile_timestamps_are_clamped_not_overflowed() {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, mtime) in [
        ("min", "-9223372036854775807.5"),
        ("max", "9223372036854775807"),
    ] {
        builder
            .append_pax_extensions([("mtime", mtime.as_bytes())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o644);
        builder.append_data(&mut h, name, &b"x"[..]).unwrap();
    }
    let image = convert(&[builder.into_inner().unwrap()], Limits::default()).unwrap();
    let dir = scratch("times");
    std::fs::write(dir.join("image.ext4"), &image).unwrap();
    e2fsck_clean(&dir.join("image.ext4"));
}

#[test]
fn repeated_opaque_markers_keep_the_layers_own_files() {
    let lower = TarBuilder::new()
        .dir("d/", 0o755)
        .file("d/old", 0o644, b"old")
        .build();
    let mut upper = TarBuilder::new().dir("d/", 0o755);
    for i in 0..200 {
        upper = upper.file(&format!("d/new{i}"), 0o644, b"n");
    }
    for _ in 0..200 {
        upper = upper.file("d/.wh..wh..opq", 0o644, b"");
    }
    let fs = load(convert(&[lower, upper.build()], Limits::default()).unwrap());
    assert!(!fs.exists("/d/old").unwrap());
    assert!(fs.exists("/d/new0").unwrap() && fs.exists("/d/new199").unwrap());
}

#[test]
fn hardlinks_count_against_the_inode_limit() {
    let mut layer = TarBuilder::new().file("f", 0o644, b"x");
    for i in 0..20 {
        layer = layer.link(tar::EntryType::Link, &format!("h{i}"), "f");
    }
    let mut limits = Limits::default();
    limits.max_inodes = 10;
    match convert(&[layer.build()], limits) {
        Err(Error::LimitExceeded { limit, .. }) => assert_eq!(limit, Limit::Inodes),
        other => panic!("expected the inode limit, got {other:?}"),
    }
}
