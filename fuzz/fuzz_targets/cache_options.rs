//! Fuzz BuildKit cache-option parsing and rendering (CSV, buildctl and
//! buildx arguments) and the cache-layout names, checking round trips.

#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

#[path = "common/cache_options.rs"]
mod cache_options;

fuzz_target!(|data: &[u8]| -> Corpus {
    if cache_options::check(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
