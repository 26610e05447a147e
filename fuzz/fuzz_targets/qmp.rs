//! Fuzz QMP message decoding.

#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

#[path = "common/qmp.rs"]
mod qmp;

fuzz_target!(|data: &[u8]| -> Corpus {
    if qmp::check(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
