//! Fidelity against umoci: every image built by `scripts/test-images`
//! is unpacked by `umoci unpack` (the oracle) and converted by us; both
//! trees must hold the same paths with the same type, mode, owner, size,
//! content, link target, link count, xattrs, device number and mtime. Our
//! side is read back by two independent readers: the `ext4-view` crate and
//! e2fsprogs' `debugfs`; `e2fsck -fn` must find nothing to fix.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use kiln_ext4::{Error, Image, OciLayout, Options, Reference, Selector, convert};
use sha2::{Digest, Sha256};

use crate::oracle::{e2fsck_clean, scratch};
use crate::test_images::test_images;

/// What both sides must agree on for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Files and symlinks only (directory sizes are file-system specific).
    size: Option<u64>,
    sha256: Option<String>,
    link: Option<Vec<u8>>,
    /// Non-directories only (directory link counts are file-system specific).
    nlink: Option<u64>,
    rdev: Option<(u32, u32)>,
    xattrs: BTreeMap<String, Vec<u8>>,
    mtime: (i64, u32),
}

fn sha256_of(mut r: impl Read) -> String {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    format!("{:x}", hasher.finalize())
}

/// The umoci side: a real directory tree.
fn walk_host(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for item in std::fs::read_dir(&dir).unwrap() {
            let path = item.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let kind = match () {
                _ if ft.is_dir() => 'd',
                _ if ft.is_symlink() => 'l',
                _ if ft.is_file() => 'f',
                _ if ft.is_char_device() => 'c',
                _ if ft.is_block_device() => 'b',
                _ if ft.is_fifo() => 'p',
                _ => 's',
            };
            if kind == 'd' {
                pending.push(path.clone());
            }
            let mut xattrs = BTreeMap::new();
            for name in xattr::list(&path).unwrap() {
                let value = xattr::get(&path, &name).unwrap().unwrap_or_default();
                xattrs.insert(name.to_string_lossy().into_owned(), value);
            }
            let rdev = meta.rdev();
            let entry = Entry {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                size: matches!(kind, 'f' | 'l').then(|| meta.len()),
                sha256: (kind == 'f').then(|| sha256_of(File::open(&path).unwrap())),
                link: (kind == 'l').then(|| {
                    std::fs::read_link(&path)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                nlink: (kind != 'd').then(|| meta.nlink()),
                rdev: matches!(kind, 'c' | 'b').then(|| {
                    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff);
                    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
                    (major as u32, minor as u32)
                }),
                xattrs,
                mtime: (meta.mtime(), meta.mtime_nsec() as u32),
            };
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            out.insert([b"/".as_slice(), &rel].concat(), entry);
        }
    }
    out
}

/// Our side, reader 1: ext4-view for names, types, modes, owners, sizes,
/// content, link targets and mtimes.
fn walk_ext4_view(image: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let fs = ext4_view::Ext4::load_from_path(image).unwrap();
    let mut out = BTreeMap::new();
    let mut pending = vec![ext4_view::PathBuf::new("/")];
    while let Some(dir) = pending.pop() {
        for item in fs.read_dir(&dir).unwrap() {
            let item = item.unwrap();
            let name = item.file_name();
            if name.as_ref() == b"." || name.as_ref() == b".." {
                continue;
            }
            let path = item.path();
            let meta = fs.symlink_metadata(&path).unwrap();
            use ext4_view::FileType as T;
            let kind = match meta.file_type() {
                T::Directory => 'd',
                T::Symlink => 'l',
                T::Regular => 'f',
                T::CharacterDevice => 'c',
                T::BlockDevice => 'b',
                T::Fifo => 'p',
                _ => 's',
            };
            if kind == 'd' {
                pending.push(path.clone());
            }
            let mtime = meta.modified();
            let entry = Entry {
                kind,
                mode: u32::from(meta.mode()),
                uid: meta.uid(),
                gid: meta.gid(),
                size: matches!(kind, 'f' | 'l').then(|| meta.len()),
                sha256: (kind == 'f').then(|| sha256_of(fs.open(&path).unwrap())),
                link: (kind == 'l').then(|| fs.read_link(&path).unwrap().as_ref().to_vec()),
                nlink: None,
                rdev: None,
                xattrs: BTreeMap::new(),
                mtime: (mtime.seconds(), mtime.nanoseconds()),
            };
            out.insert(path.as_ref().to_vec(), entry);
        }
    }
    out
}

/// Our side, reader 2: `debugfs` for link counts, device numbers and xattrs
/// (and a second opinion on mode and owner).
fn fill_from_debugfs(image: &Path, entries: &mut BTreeMap<Vec<u8>, Entry>, work: &Path) {
    let mut commands = String::new();
    for path in entries.keys() {
        let path = std::str::from_utf8(path).expect("test image paths are UTF-8");
        assert!(!path.contains(['"', '\n']), "debugfs cannot quote {path:?}");
        writeln!(commands, "stat \"{path}\"").unwrap();
    }
    let stats = run_debugfs(image, &commands, work);
    let mut xattr_commands = String::new();
    let mut wanted = Vec::new();
    for (path, entry) in entries.iter_mut() {
        let text = stats.get(path.as_slice()).unwrap_or_else(|| {
            panic!(
                "debugfs printed nothing for {}",
                String::from_utf8_lossy(path)
            )
        });
        let field = |name: &str| -> &str {
            let at = text
                .find(name)
                .unwrap_or_else(|| panic!("no {name} in {text}"));
            text[at + name.len()..].split_whitespace().next().unwrap()
        };
        let mode = u32::from_str_radix(field("Mode:"), 8).unwrap();
        assert_eq!(mode, entry.mode, "debugfs vs ext4-view mode");
        assert_eq!(field("User:").parse::<u32>().unwrap(), entry.uid);
        assert_eq!(field("Group:").parse::<u32>().unwrap(), entry.gid);
        if entry.kind != 'd' {
            entry.nlink = Some(field("Links:").parse().unwrap());
        }
        if matches!(entry.kind, 'c' | 'b') {
            let (major, minor) = field("Device major/minor number:").split_once(':').unwrap();
            entry.rdev = Some((major.parse().unwrap(), minor.parse().unwrap()));
        }
        if let Some(at) = text.find("Extended attributes:\n") {
            for line in text[at..].lines().skip(1) {
                let Some(line) = line.strip_prefix("  ") else {
                    break;
                };
                let name = line.split(" (").next().unwrap().to_string();
                let file = work.join(format!("xattr-{}", wanted.len()));
                let path_str = String::from_utf8_lossy(path);
                writeln!(
                    xattr_commands,
                    "ea_get -f {} \"{path_str}\" {name}",
                    file.display()
                )
                .unwrap();
                wanted.push((path.clone(), name, file));
            }
        }
    }
    if !wanted.is_empty() {
        run_debugfs(image, &xattr_commands, work);
        for (path, name, file) in wanted {
            let value = std::fs::read(&file).unwrap();
            entries.get_mut(&path).unwrap().xattrs.insert(name, value);
        }
    }
}

/// Runs a debugfs command file; returns each command's output keyed by the
/// path it was given.
fn run_debugfs(image: &Path, commands: &str, work: &Path) -> BTreeMap<Vec<u8>, String> {
    let cmd_file = work.join("debugfs.cmd");
    std::fs::write(&cmd_file, commands).unwrap();
    let out = Command::new("debugfs")
        .arg("-f")
        .arg(&cmd_file)
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs) must be installed");
    assert!(out.status.success(), "debugfs failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut result = BTreeMap::new();
    for chunk in text.split("debugfs: ").skip(1) {
        let (command, body) = chunk.split_once('\n').unwrap_or((chunk, ""));
        if let Some(path) = command.split('"').nth(1) {
            result.insert(path.as_bytes().to_vec(), body.to_string());
        }
    }
    result
}

fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) {
    let status = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .status()
        .expect("umoci must be installed (scripts/test installs it)");
    assert!(status.success(), "umoci unpack {tag} failed");
}

fn convert_tag(layout_dir: &Path, tag: &str, out: &Path) -> kiln_ext4::Summary {
    let layout = OciLayout::open(layout_dir).unwrap();
    let selector = Selector {
        reference: Some(Reference::Tag(tag.into())),
        ..Selector::default()
    };
    let image = Image::resolve(&layout, &selector).unwrap();
    let file = BufWriter::new(File::create(out).unwrap());
    let (_, summary) = convert(&layout, &image, file, Options::default(), &mut |_| {}).unwrap();
    summary
}

/// Converts `tag`, unpacks it with umoci, and compares everything.
fn check_against_umoci(tag: &str) {
    check_against_umoci_of(tag, tag);
}

/// Converts `tag` and compares it with umoci's unpack of `oracle_tag` (an
/// image with the same layer contents).
fn check_against_umoci_of(tag: &str, oracle_tag: &str) {
    let Some(layout) = test_images() else {
        return;
    };
    let work = scratch(&format!("fidelity-{tag}"));
    let image = work.join("image.ext4");
    convert_tag(&layout, tag, &image);
    e2fsck_clean(&image);

    let bundle = work.join("bundle");
    umoci_unpack(&layout, oracle_tag, &bundle);
    let expected = walk_host(&bundle.join("rootfs"));

    let mut actual = walk_ext4_view(&image);
    actual.remove(b"/lost+found".as_slice());
    fill_from_debugfs(&image, &mut actual, &work);

    let mut problems = Vec::new();
    for (path, want) in &expected {
        let shown = String::from_utf8_lossy(path);
        match actual.get(path) {
            None => problems.push(format!("missing {shown}")),
            Some(got) if got != want => {
                problems.push(format!("{shown}:\n  umoci {want:?}\n  ours  {got:?}"));
            }
            Some(_) => {}
        }
    }
    for path in actual.keys().filter(|p| !expected.contains_key(*p)) {
        problems.push(format!("extra {}", String::from_utf8_lossy(path)));
    }
    assert!(
        problems.is_empty(),
        "{tag}: {} of {} paths differ from umoci:\n{}",
        problems.len(),
        expected.len(),
        problems
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("{tag}: {} paths identical to umoci unpack", expected.len());
    // umoci writes sparse files out in full (5 GiB for `layers`): free the
    // disk as soon as the comparison passed.
    std::fs::remove_dir_all(&work).ok();
}

#[test]
fn debian_minbase_matches_umoci() {
    check_against_umoci("debian");
}

#[test]
fn layers_with_whiteouts_links_devices_xattrs_match_umoci() {
    check_against_umoci("layers");
}

#[test]
fn hundred_thousand_files_match_umoci() {
    check_against_umoci("many-files");
}

/// umoci 0.4.7 cannot read zstd layers: its oracle is the same tars
/// gzip-compressed (same `diff_ids`).
#[test]
fn zstd_and_uncompressed_layers_match_umoci() {
    check_against_umoci_of("zstd", "zstd-gzip-twin");
}

#[test]
fn buildkit_cache_and_artifacts_are_refused_with_a_typed_error() {
    let Some(layout_dir) = test_images() else {
        return;
    };
    let layout = OciLayout::open(&layout_dir).unwrap();
    for (tag, media_type) in [
        ("buildkit-cache", "application/vnd.buildkit.cacheconfig.v0"),
        ("artifact", "application/vnd.oci.empty.v1+json"),
    ] {
        let selector = Selector {
            reference: Some(Reference::Tag(tag.into())),
            ..Selector::default()
        };
        match Image::resolve(&layout, &selector) {
            Err(Error::NotRunnableImage { config_media_type }) => {
                assert_eq!(config_media_type, media_type, "{tag}");
            }
            other => panic!("{tag}: expected NotRunnableImage, got {other:?}"),
        }
    }
}

#[test]
fn platforms_are_picked_from_an_index() {
    let Some(layout_dir) = test_images() else {
        return;
    };
    let layout = OciLayout::open(&layout_dir).unwrap();
    for platform in ["linux/amd64", "linux/arm64"] {
        let selector = Selector {
            reference: Some(Reference::Tag("multi".into())),
            platform: platform.parse().unwrap(),
        };
        let image = Image::resolve(&layout, &selector).unwrap();
        let work = scratch(&format!("multi-{}", platform.replace('/', "-")));
        let out = work.join("image.ext4");
        let file = BufWriter::new(File::create(&out).unwrap());
        convert(&layout, &image, file, Options::default(), &mut |_| {}).unwrap();
        e2fsck_clean(&out);
        let fs = ext4_view::Ext4::load_from_path(&out).unwrap();
        let content = fs.read_to_string("/platform").unwrap();
        assert_eq!(content.trim(), platform);
    }
    let selector = Selector {
        reference: Some(Reference::Tag("multi".into())),
        platform: "linux/s390x".parse().unwrap(),
    };
    match Image::resolve(&layout, &selector) {
        Err(Error::PlatformNotFound { available, .. }) => {
            assert!(
                available.contains(&"linux/arm64/v8".to_string()),
                "{available:?}"
            );
        }
        other => panic!("expected PlatformNotFound, got {other:?}"),
    }
}
