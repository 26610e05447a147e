//! The tar→ext4 fuzz check, shared by the fuzz target and the corpus replay
//! in `cargo test` (`ext4-convert/tests/integration/fuzz_corpus.rs`).

use std::io::Cursor;

use kiln_ext4::{Ext4Writer, Limits, Options};

/// Separates layers in a fuzz input.
pub(crate) const LAYER_BREAK: &[u8] = b"KILN-LAYER-BREAK";

/// Applies `data` (tar layers separated by [`LAYER_BREAK`]) with small
/// limits; never panics. Returns the ext4 image when conversion succeeds.
pub(crate) fn check(data: &[u8]) -> Option<Vec<u8>> {
    let mut limits = Limits::default();
    limits.max_layer_bytes = 16 << 20;
    limits.max_image_bytes = 64 << 20;
    limits.max_inodes = 10_000;
    limits.max_path_depth = 64;
    let options = Options {
        limits,
        ..Options::default()
    };
    let mut writer = Ext4Writer::new(Cursor::new(Vec::new()), options);
    for layer in split(data) {
        writer.add_layer(layer).ok()?;
    }
    let (out, summary) = writer.finish().ok()?;
    let image = out.into_inner();
    assert_eq!(
        image.len() as u64,
        summary.bytes,
        "output length is the file system size"
    );
    Some(image)
}

fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut layers = Vec::new();
    while let Some(at) = data
        .windows(LAYER_BREAK.len())
        .position(|w| w == LAYER_BREAK)
    {
        layers.push(&data[..at]);
        data = &data[at + LAYER_BREAK.len()..];
    }
    layers.push(data);
    layers
}
