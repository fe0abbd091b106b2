//! Helpers shared by the integration tests: each test opens a real SQLite file in its
//! own temporary directory.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use holdfast_store::{Binding, CallRecord, Disposition, HangupSide};

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

/// A call from `caller` to `callee` that started at `started_at_ms`, was answered a
/// second later and is still up; tests change the fields they care about.
pub(crate) fn call(id: &str, caller: &str, callee: &str, started_at_ms: i64) -> CallRecord {
    CallRecord {
        id: id.to_owned(),
        call_id: format!("{id}@192.0.2.10"),
        caller: caller.to_owned(),
        callee: callee.to_owned(),
        request_uri: format!("sip:{callee}"),
        source: "192.0.2.10:5060".to_owned(),
        transport: "udp".to_owned(),
        started_at_ms,
        answered_at_ms: Some(started_at_ms + 1_000),
        ended_at_ms: None,
        disposition: Disposition::Answered,
        status: 200,
        hangup: None,
        node: "node-a".to_owned(),
    }
}

/// `record`, ended by `side` after `duration_ms` of talk.
pub(crate) fn ended(mut record: CallRecord, duration_ms: i64, side: HangupSide) -> CallRecord {
    let answered = record.answered_at_ms.unwrap_or(record.started_at_ms);
    record.ended_at_ms = Some(answered + duration_ms);
    record.hangup = Some(side);
    record
}

/// `record` as a call that failed with `status` before any answer.
pub(crate) fn failed(mut record: CallRecord, disposition: Disposition, status: u16) -> CallRecord {
    record.answered_at_ms = None;
    record.ended_at_ms = Some(record.started_at_ms + 5_000);
    record.disposition = disposition;
    record.status = status;
    record
}

/// A small call history: seven calls a second apart from `t0`, with ids "1" to "7";
/// those with no failure are answered, and the first ended after 61.25 s of talk.
/// (The binary's end-to-end tests use it too.)
pub(crate) fn history(t0: i64) -> Vec<CallRecord> {
    let calls = [
        ("alice@x.test", "bob@x.test", None),
        ("bob@x.test", "alice@x.test", Some((Disposition::Busy, 486))),
        (
            "carol@x.test",
            "bob@x.test",
            Some((Disposition::NoAnswer, 480)),
        ),
        ("alice@x.test", "alice@x.test", None),
        (
            "carol@x.test",
            "dave@x.test",
            Some((Disposition::Failed, 503)),
        ),
        (
            "alice@x.test",
            "carol@x.test",
            Some((Disposition::Cancelled, 487)),
        ),
        // An address of record's user part is case-sensitive: not alice's call.
        ("Alice@x.test", "bob@x.test", None),
    ];
    let mut records: Vec<CallRecord> = calls
        .into_iter()
        .zip(0_i64..)
        .map(|((caller, callee, failure), i)| {
            let record = call(&(i + 1).to_string(), caller, callee, t0 + i * 1_000);
            match failure {
                Some((disposition, status)) => failed(record, disposition, status),
                None => record,
            }
        })
        .collect();
    if let Some(first) = records.first_mut() {
        *first = ended(first.clone(), 61_250, HangupSide::Callee);
    }
    records
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
