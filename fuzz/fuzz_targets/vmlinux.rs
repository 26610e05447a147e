//! Fuzz the extraction of a PVH `vmlinux` from a bzImage (setup header,
//! LZ4 legacy / gzip / zstd payload, ELF program headers and notes).

#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

#[path = "common/vmlinux.rs"]
mod vmlinux;

fuzz_target!(|data: &[u8]| -> Corpus {
    if vmlinux::check(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
