//! Fuzz target `datagram`: UDP datagrams: parse, validate, serialize, and re-parse into
//! an equal message; answer what does not parse (`response_to_unparsable`).
//!
//! The check is `checks::datagram` in `fuzz/checks.rs`, shared with the corpus replay test
//! `crates/holdfast-sip/tests/fuzz_corpus.rs`.
#![no_main]

// Each target calls one of the shared checks; the others are unused here.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::datagram(data));
