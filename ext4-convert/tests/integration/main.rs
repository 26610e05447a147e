//! Integration tests for kiln-ext4: synthetic layers checked with e2fsprogs
//! and ext4-view, real images checked against `umoci unpack`.
#![allow(clippy::tests_outside_test_module)]

mod fidelity;
mod fuzz_corpus;
mod hostile;
mod layout;
mod oracle;
mod test_images;
mod writer;
