//! Fuzz what a registry reads from clients: paths, manifests, digests,
//! references, range headers, query strings, mirrored registry names.

#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

#[path = "common/registry.rs"]
mod registry;

fuzz_target!(|data: &[u8]| -> Corpus {
    if registry::check(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
