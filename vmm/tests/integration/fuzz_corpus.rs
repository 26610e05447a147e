//! Replays the QMP fuzz corpus (`fuzz/corpus/qmp`) through the fuzz
//! target's own check.

#[path = "../../../fuzz/fuzz_targets/common/qmp.rs"]
mod fuzz_check;

#[test]
fn fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/qmp");
    let (mut files, mut decoded) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        files += 1;
        if fuzz_check::check(&std::fs::read(entry.unwrap().path()).unwrap()) {
            decoded += 1;
        }
    }
    assert!(files >= 10, "fuzz corpus too small: {files}");
    assert!(decoded >= 6);
}
