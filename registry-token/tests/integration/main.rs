//! Integration tests for `kiln-registry-token`: every key type end to end,
//! every rejection path, properties of the parsers, the fuzz corpus, and the
//! interop test against a real CNCF distribution registry with skopeo.

// Integration tests are outside `#[cfg(test)]` modules by nature.
#![allow(clippy::tests_outside_test_module)]

#[path = "../../../fuzz/fuzz_targets/common/registry_token.rs"]
mod fuzz_check;
mod fuzz_corpus;
mod interop;
mod properties;
mod tokens;
