//! Replays the fuzz corpus (`fuzz/corpus/registry_token`) through the fuzz
//! target's own check.

use crate::fuzz_check::check;

#[test]
fn fuzz_corpus_replays() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/registry_token");
    let mut files = 0;
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        files += 1;
        if check(&data) {
            parsed += 1;
        }
    }
    assert!(files >= 10, "fuzz corpus too small: {files} files");
    assert!(parsed > 0);
}
