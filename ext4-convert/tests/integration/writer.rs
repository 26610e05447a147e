//! Synthetic layers through `Ext4Writer`, read back by e2fsprogs.

use std::fs::File;
use std::io::BufWriter;

use kiln_ext4::{Ext4Writer, Options};

use crate::oracle::{debugfs, e2fsck_clean, scratch};

/// A tar stream built entry by entry.
pub(crate) struct TarBuilder(tar::Builder<Vec<u8>>);

impl TarBuilder {
    pub(crate) fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    pub(crate) fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub(crate) fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    pub(crate) fn link(mut self, kind: tar::EntryType, path: &str, target: &str) -> Self {
        let mut h = Self::header(kind, 0o777, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    pub(crate) fn special(
        mut self,
        kind: tar::EntryType,
        path: &str,
        major: u32,
        minor: u32,
    ) -> Self {
        let mut h = Self::header(kind, 0o640, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub(crate) fn build(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn write_image(name: &str, layers: &[Vec<u8>], options: Options) -> std::path::PathBuf {
    let dir = scratch(name);
    let path = dir.join("out.ext4");
    let mut writer = Ext4Writer::new(BufWriter::new(File::create(&path).unwrap()), options);
    for layer in layers {
        writer.add_layer(&layer[..]).unwrap();
    }
    writer.finish().unwrap();
    path
}

#[test]
fn basic_tree_passes_e2fsck() {
    let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let layer = TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/hostname", 0o644, b"kiln\n")
        .file("etc/big", 0o600, &big)
        .link(tar::EntryType::Symlink, "etc/short", "hostname")
        .link(tar::EntryType::Symlink, "etc/long", &"x/".repeat(100))
        .link(tar::EntryType::Link, "etc/hard", "etc/hostname")
        .special(tar::EntryType::Char, "dev-null", 1, 3)
        .special(tar::EntryType::Fifo, "fifo", 0, 0)
        .build();
    let image = write_image("basic", &[layer], Options::default());
    e2fsck_clean(&image);
    let cat = debugfs(&image, "cat /etc/hostname");
    assert_eq!(cat, "kiln\n");
    let listing = debugfs(&image, "ls -l /etc");
    assert!(listing.contains("hostname"), "{listing}");
}

#[test]
fn large_directories_are_htrees_that_e2fsck_and_ext4_view_accept() {
    // 3000 entries: one index level; 150000: two; non-ASCII names exercise
    // the signed-character hash.
    for (count, name) in [(3000, "htree-small"), (150_000, "htree-big")] {
        let mut layer = TarBuilder::new().dir("d/", 0o755);
        for i in 0..count {
            layer = layer.file(&format!("d/fïle-{i:06}"), 0o644, b"");
        }
        let options = Options {
            uuid: [7; 16],
            ..Options::default()
        };
        let image = write_image(name, &[layer.build()], options);
        e2fsck_clean(&image);
        let fs = ext4_view::Ext4::load_from_path(&image).unwrap();
        for i in (0..count).step_by(997) {
            assert!(
                fs.exists(format!("/d/fïle-{i:06}").as_str()).unwrap(),
                "{i}"
            );
        }
        assert!(!fs.exists("/d/missing").unwrap());
        let flags = debugfs(&image, "stat /d");
        assert!(flags.contains("Flags: 0x81000"), "{flags}");
    }
}
