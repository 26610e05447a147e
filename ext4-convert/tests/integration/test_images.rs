//! Where the OCI images of `scripts/test-images` are (shared with other
//! crates' tests, which include this file by path).

use std::path::{Path, PathBuf};

/// The test images' layout, built by `scripts/test-images` (which the
/// README's test command runs). Outside CI a missing layout is a loud skip.
pub(crate) fn test_images() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_TEST_IMAGES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-images"),
        PathBuf::from,
    );
    let layout = dir.join("layout");
    if layout.join("index.json").exists() {
        return Some(layout);
    }
    let message = format!(
        "test images missing at {}: run scripts/test-images {}",
        layout.display(),
        dir.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("\n\n!!!!! SKIPPING (not in CI): {message} !!!!!\n\n");
    None
}
