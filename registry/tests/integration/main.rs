//! kiln-registry against real HTTP clients: the conformance behaviours,
//! restarts, concurrency and hostile input, on an in-process server.

// Integration tests are outside `#[cfg(test)]` modules by nature.
#![allow(clippy::tests_outside_test_module)]

mod cache;
mod client;
mod conformance;
mod fuzz_corpus;
mod gc;
mod server;
mod sessions;
