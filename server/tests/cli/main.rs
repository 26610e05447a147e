//! The `kiln` binary, run as users run it.

// Integration tests are outside `#[cfg(test)]` modules by nature.
#![allow(clippy::tests_outside_test_module)]

#[path = "../../../registry/tests/integration/client.rs"]
mod client;
#[path = "../../../registry/tests/integration/conformance.rs"]
mod conformance;
#[path = "../../../oci-mirror/tests/integration/peers.rs"]
#[allow(dead_code, unreachable_pub)]
mod peers;

mod builds;
mod cache;
mod crash;
mod dockerfile;
mod ext4;
mod gc;
mod mirror;
mod openapi;
mod serve;
mod token;
mod vm;
