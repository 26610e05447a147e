//! Benchmarks live in `main.rs` (`cargo bench -p kiln-benches`); this empty
//! library only gives the package a target for `cargo test`.
