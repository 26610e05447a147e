//! The bzImage → vmlinux fuzz check, shared by the fuzz target and the
//! corpus replay in `cargo test` (`vmm/tests/integration/fuzz_corpus.rs`).

/// Extracts a PVH `vmlinux` from `data` (bounded to 1 MiB); never panics.
/// Returns whether one came out.
pub(crate) fn check(data: &[u8]) -> bool {
    match kiln_vmm::vmlinux::extract(data, 1 << 20) {
        Ok(elf) => {
            assert!(elf.len() <= 1 << 20, "the limit holds");
            assert!(elf.starts_with(b"\x7fELF"), "only ELF comes out");
            true
        }
        Err(kiln_vmm::Error::KernelImage(_)) => false,
        Err(e) => panic!("untyped error: {e}"),
    }
}
