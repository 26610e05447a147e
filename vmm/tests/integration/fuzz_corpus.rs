//! Replays the QMP and vmlinux fuzz corpora (`fuzz/corpus/{qmp,vmlinux}`)
//! through the fuzz targets' own checks.

#[path = "../../../fuzz/fuzz_targets/common/qmp.rs"]
mod fuzz_check;

#[path = "../../../fuzz/fuzz_targets/common/vmlinux.rs"]
mod vmlinux_check;

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

#[test]
fn vmlinux_fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/vmlinux");
    let (mut files, mut extracted) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        files += 1;
        if vmlinux_check::check(&std::fs::read(entry.unwrap().path()).unwrap()) {
            extracted += 1;
        }
    }
    assert!(files >= 10, "fuzz corpus too small: {files}");
    // The LZ4 (one and two frames), gzip and zstd seeds.
    assert!(extracted >= 4, "{extracted}");
}
