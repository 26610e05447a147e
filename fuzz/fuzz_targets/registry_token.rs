//! Fuzz token decoding, scope strings, permissions and Bearer challenges.

#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

#[path = "common/registry_token.rs"]
mod registry_token;

fuzz_target!(|data: &[u8]| -> Corpus {
    if registry_token::check(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
