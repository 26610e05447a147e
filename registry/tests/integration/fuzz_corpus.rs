//! Replays the fuzz corpus (`fuzz/corpus/registry`) through the fuzz
//! target's own check.

#[path = "../../../fuzz/fuzz_targets/common/registry.rs"]
mod fuzz_check;

#[test]
fn fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/registry");
    let mut files = 0;
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        files += 1;
        if fuzz_check::check(&std::fs::read(entry.unwrap().path()).unwrap()) {
            parsed += 1;
        }
    }
    assert!(files >= 20, "fuzz corpus too small: {files}");
    assert!(parsed >= 15, "only {parsed} of {files} seeds parse");
}
