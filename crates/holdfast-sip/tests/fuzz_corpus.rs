//! Replays the fuzz corpora on stable: every file of `fuzz/corpus/<target>/` goes
//! through the check its fuzz target runs (`fuzz/checks.rs`, included below, is the one
//! copy of those checks). A corpus folder that is missing or empty fails its test.
//! Seeding and fuzzing are described in `docs/fuzzing.md`.

use std::path::PathBuf;

#[path = "../../../fuzz/checks.rs"]
mod checks;

/// Runs `check` on every file of `fuzz/corpus/<target>/`, naming the file that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    files.retain(|p| p.is_file());
    files.sort();
    assert!(!files.is_empty(), "corpus {} has no files", dir.display());
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "fuzz target {target} fails on {} ({} bytes)",
            path.display(),
            data.len()
        );
    }
}

#[test]
fn datagram_corpus() {
    replay("datagram", checks::datagram);
}

#[test]
fn stream_corpus() {
    replay("stream", checks::stream);
}

#[test]
fn uri_corpus() {
    replay("uri", checks::uri);
}

#[test]
fn digest_corpus() {
    replay("digest", checks::digest);
}

#[test]
fn roundtrip_corpus() {
    replay("roundtrip", checks::roundtrip);
}
