//! Integration tests for `kiln-cache-key`: the two-tier flows end to end
//! (plans, arguments, access lists, classification as the registry sees
//! names), property tests of the round trips, and the fuzz corpus.

// Integration tests are outside `#[cfg(test)]` modules by nature.
#![allow(clippy::tests_outside_test_module)]

#[path = "../../../fuzz/fuzz_targets/common/cache_options.rs"]
mod fuzz_check;
mod fuzz_corpus;
mod plans;
mod properties;
