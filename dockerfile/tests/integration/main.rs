//! Integration tests for `kiln-dockerfile`: BuildKit's own parser testfiles,
//! the real-Dockerfile corpus against BuildKit's answers (current BuildKit and
//! BuildKit 0.12.5), rewrite round trips, property tests and the fuzz corpus.

// Integration tests are outside `#[cfg(test)]` modules by nature.
#![allow(clippy::tests_outside_test_module)]

mod corpus;
#[path = "../../../fuzz/fuzz_targets/common/dockerfile.rs"]
mod fuzz_check;
mod fuzz_corpus;
mod oracle;
mod properties;
mod testfiles;
