//! Integration tests for `kiln-oci-mirror` against real registries: two
//! Debian `docker-registry` (CNCF distribution) instances on loopback,
//! images pushed and checked with skopeo.

// Integration tests are outside `#[cfg(test)]` modules by nature.
#![allow(clippy::tests_outside_test_module)]

mod auth;
mod copies;
mod faults;
mod fuzz_corpus;
mod peers;
mod proxy;
mod referrers;
mod umoci_images;
