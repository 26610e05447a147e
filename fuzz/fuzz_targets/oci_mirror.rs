//! Fuzz image-location parsing and Docker config credential lookup.

#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

#[path = "common/oci_mirror.rs"]
mod oci_mirror;

fuzz_target!(|data: &[u8]| -> Corpus {
    if oci_mirror::check(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
