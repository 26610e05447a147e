//! Kiln benchmarks: `cargo bench -p kiln-benches [-- FILTER]`.
//!
//! Each area runs criterion groups and then prints a side-by-side summary
//! with the peer tool measured in the same run, on the same input.

#![allow(missing_docs)]

mod dockerfile;
mod mirror;
mod test_utils;
mod token;

criterion::criterion_main!(dockerfile::benches, token::benches, mirror::benches);
