//! Integration tests for `kiln-vmm` against real QEMU (TCG).

// Integration tests are outside `#[cfg(test)]` modules by nature.
#![allow(clippy::tests_outside_test_module)]

mod cloud_hypervisor;
mod fuzz_corpus;
mod guest;
mod qemu;
mod vm_api;
