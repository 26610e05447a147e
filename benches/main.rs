//! Kiln benchmarks: `cargo bench -p kiln-benches [-- FILTER]`.
//!
//! Each area runs criterion groups and then prints a side-by-side summary
//! with the peer tool measured in the same run, on the same input.

#![allow(missing_docs)]

mod builds;
mod dockerfile;
mod ext4;
mod mirror;
mod registry;
mod test_utils;
mod token;
mod vm;

fn main() {
    // The ext4 and mirror comparisons re-run this binary to measure one
    // conversion's or copy's peak memory alone.
    if ext4::child_main() || mirror::child_main() {
        return;
    }
    dockerfile::benches();
    token::benches();
    mirror::benches();
    registry::benches();
    ext4::benches();
    vm::benches();
    builds::benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
