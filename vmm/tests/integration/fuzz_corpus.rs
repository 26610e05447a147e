//! Replays the QMP and vmlinux fuzz corpora (`fuzz/corpus/{qmp,vmlinux}`)
//! through the fuzz targets' own checks.

#[path = "../../../fuzz/fuzz_targets/common/qmp.rs"]
mod fuzz_check;

#[path = "../../../fuzz/fuzz_targets/common/vmlinux.rs"]
mod vmlinux_check;

/// Runs every file of `fuzz/corpus/{target}` (at least 10) through `check`;
/// returns how many it accepted.
fn replay(target: &str, check: fn(&[u8]) -> bool) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let (mut files, mut accepted) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        files += 1;
        if check(&std::fs::read(entry.unwrap().path()).unwrap()) {
            accepted += 1;
        }
    }
    assert!(files >= 10, "{target} fuzz corpus too small: {files}");
    accepted
}

#[test]
fn fuzz_corpus_replays() {
    let decoded = replay("qmp", fuzz_check::check);
    assert!(decoded >= 6);
}

#[test]
fn vmlinux_fuzz_corpus_replays() {
    // The LZ4 (one and two frames), gzip and zstd seeds.
    let extracted = replay("vmlinux", vmlinux_check::check);
    assert!(extracted >= 4, "{extracted}");
}
