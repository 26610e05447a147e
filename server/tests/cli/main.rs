//! The `kiln` binary, run as users run it.

// Integration tests are outside `#[cfg(test)]` modules by nature.
#![allow(clippy::tests_outside_test_module)]

mod cache;
mod dockerfile;
mod ext4;
mod mirror;
mod token;
mod vm;
