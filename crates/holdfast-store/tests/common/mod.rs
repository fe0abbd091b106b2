//! Helpers shared by the integration tests: each test opens a real SQLite file in its
//! own temporary directory.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use holdfast_store::Binding;

/// A binding with plausible values; tests change the fields they care about.
pub(crate) fn binding(aor: &str, contact: &str, expires_at: i64) -> Binding {
    Binding {
        aor: aor.to_owned(),
        contact: contact.to_owned(),
        instance: None,
        reg_id: None,
        q: 1000,
        expires_at,
        call_id: format!("call-{contact}"),
        cseq: 1,
        path: Vec::new(),
        transport: "udp".to_owned(),
        source: "192.0.2.10:5060".to_owned(),
        local: "192.0.2.1:5060".to_owned(),
        connection: None,
        user_agent: None,
        node: "node-a".to_owned(),
        updated_at: expires_at - 3600,
    }
}

/// Every byte of the store's files (database, WAL, shared memory) in `dir`.
pub(crate) fn database_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("holdfast.sqlite")
        {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
