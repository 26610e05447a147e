//! The QMP decoding fuzz check, shared by the fuzz target and the corpus
//! replay in `cargo test` (`vmm/tests/integration/fuzz_corpus.rs`).

/// Decodes `data` as a QMP line; never panics. Returns whether it decoded.
pub(crate) fn check(data: &[u8]) -> bool {
    kiln_vmm::decode(&String::from_utf8_lossy(data)).is_ok()
}
