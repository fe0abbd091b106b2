//! Fuzz target `uri`: URIs: a parsed URI is equivalent to itself and re-parses from its own bytes into an
//! equal value.
//!
//! The check is `checks::uri` in `fuzz/checks.rs`, shared with the corpus replay test
//! `crates/holdfast-sip/tests/fuzz_corpus.rs`.
#![no_main]

// Each target calls one of the shared checks; the others are unused here.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::uri(data));
