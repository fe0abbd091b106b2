//! Fuzz target `digest`: digest headers: Authorization, WWW-Authenticate and Authentication-Info values
//! written back by `to_header_value` parse into the same typed fields.
//!
//! The check is `checks::digest` in `fuzz/checks.rs`, shared with the corpus replay test
//! `crates/holdfast-sip/tests/fuzz_corpus.rs`.
#![no_main]

// Each target calls one of the shared checks; the others are unused here.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::digest(data));
