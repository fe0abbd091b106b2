//! Fuzz target `stream`: TCP / TLS / WebSocket streams: the framer gives the same
//! items whatever the chunk boundaries (the first input byte picks them).
//!
//! The check is `checks::stream` in `fuzz/checks.rs`, shared with the corpus replay test
//! `crates/holdfast-sip/tests/fuzz_corpus.rs`.
#![no_main]

// Each target calls one of the shared checks; the others are unused here.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::stream(data));
