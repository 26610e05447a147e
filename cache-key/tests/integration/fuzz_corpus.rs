//! Replays the fuzz corpus (`fuzz/corpus/cache_options`) through the fuzz
//! target's own check, so every `cargo test` re-runs what fuzzing found.

use crate::fuzz_check as check;

#[test]
fn fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/cache_options");
    let mut files = 0;
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        files += 1;
        if check::check(&data) {
            parsed += 1;
        }
    }
    assert!(files >= 20, "fuzz corpus too small: {files} files");
    assert!(parsed > 0, "no corpus file parsed");
}
