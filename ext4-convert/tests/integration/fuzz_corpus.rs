//! Replays the `ext4` fuzz corpus: no panics, and every image the converter
//! writes passes `e2fsck -fn`.

#[path = "../../../fuzz/fuzz_targets/common/ext4.rs"]
mod ext4;

use std::path::Path;

use crate::oracle::{e2fsck_clean, scratch};

#[test]
fn fuzz_corpus_replays_and_every_output_passes_e2fsck() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ext4");
    let work = scratch("fuzz-corpus");
    let mut converted = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "empty corpus at {}", dir.display());
    for path in entries {
        let data = std::fs::read(&path).unwrap();
        if let Some(image) = ext4::check(&data) {
            let out = work.join("image.ext4");
            std::fs::write(&out, image).unwrap();
            e2fsck_clean(&out);
            converted += 1;
        }
    }
    assert!(converted >= 5, "the seeds convert");
}

/// Splits a corpus file into layers, for tests that inspect one.
pub(crate) fn corpus_layers(name: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus/ext4")
        .join(name);
    let data = std::fs::read(path).unwrap();
    let mut layers = Vec::new();
    let mut rest = data.as_slice();
    while let Some(at) = rest
        .windows(ext4::LAYER_BREAK.len())
        .position(|w| w == ext4::LAYER_BREAK)
    {
        layers.push(rest[..at].to_vec());
        rest = &rest[at + ext4::LAYER_BREAK.len()..];
    }
    layers.push(rest.to_vec());
    layers
}
