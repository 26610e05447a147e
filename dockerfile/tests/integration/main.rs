//! Integration tests for `kiln-dockerfile`: BuildKit's own parser testfiles,
//! the real-Dockerfile corpus against BuildKit's answers (current BuildKit and
//! BuildKit 0.12.5), rewrite round trips, property tests and the fuzz corpus.

mod corpus;
mod fuzz_corpus;
mod oracle;
mod properties;
mod testfiles;
