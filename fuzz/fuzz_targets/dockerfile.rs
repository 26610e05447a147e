//! Fuzz the Dockerfile parser, FROM resolution, image extraction and the
//! rewriter, checking the rewriter's round-trip invariants.

#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

#[path = "common/dockerfile.rs"]
mod dockerfile;

fuzz_target!(|data: &[u8]| -> Corpus {
    if dockerfile::check(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
