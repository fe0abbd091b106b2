//! Fuzz target `roundtrip`: proxy edits (push / pop Via, add Record-Route, decrement Max-Forwards, pop
//! Route) serialize into bytes that re-parse into the same Vias, Routes and Max-Forwards.
//!
//! The check is `checks::roundtrip` in `fuzz/checks.rs`, shared with the corpus replay test
//! `crates/holdfast-sip/tests/fuzz_corpus.rs`.
#![no_main]

// Each target calls one of the shared checks; the others are unused here.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::roundtrip(data));
