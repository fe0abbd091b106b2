//! Measures group commit: binding upserts per second and upserts per commit, with 1 to
//! 10,000 `apply` calls in flight, for `synchronous=FULL` (the default) and `NORMAL`.
//!
//! ```text
//! cargo run --release -p holdfast-store --example group_commit [OPS]
//! ```
//!
//! It reports; it asserts nothing (the test `ten_thousand_concurrent_applies_share_few_
//! commits` does). The database lives in a temporary directory: put TMPDIR on the disk
//! that matters, since fsync cost is what FULL pays.

// A measurement prints its results and reads the wall clock; both are banned in library
// code only.
#![allow(clippy::print_stdout, clippy::disallowed_methods)]

use std::time::Instant;

use futures::StreamExt;
use holdfast_store::{Binding, BindingOp, Location, SqliteConfig, SqliteStore, Synchronous};

fn binding(i: usize) -> Binding {
    Binding {
        aor: format!("user{i}@example.com"),
        contact: format!("sip:user{i}@192.0.2.1:5060;transport=tcp"),
        instance: Some(format!("<urn:uuid:00000000-0000-0000-0000-{i:012}>")),
        reg_id: Some(1),
        q: 1000,
        expires_at: 1_700_003_600,
        call_id: format!("{i}@192.0.2.1"),
        cseq: 1,
        path: vec!["<sip:edge.example.com;lr;ob>".to_owned()],
        transport: "tcp".to_owned(),
        source: "192.0.2.1:40000".to_owned(),
        local: "192.0.2.2:5060".to_owned(),
        connection: u64::try_from(i).ok(),
        user_agent: Some("Example/1.0".to_owned()),
        node: "node-a".to_owned(),
        updated_at: 1_700_000_000,
    }
}

async fn run(synchronous: Synchronous, in_flight: usize, ops: usize) {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => return println!("temporary directory: {e}"),
    };
    let mut config = SqliteConfig::default();
    config.synchronous = synchronous;
    let store = match SqliteStore::open_with(dir.path(), config) {
        Ok(store) => store,
        Err(e) => return println!("open: {e}"),
    };
    let started = Instant::now();
    let failures = futures::stream::iter(0..ops)
        .map(|i| store.apply(vec![BindingOp::Upsert(binding(i))]))
        .buffer_unordered(in_flight)
        .filter(|result| std::future::ready(result.is_err()))
        .count()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = store.stats();
    println!(
        "{:<6} {:>9} {:>8} {:>8} {:>9.1} {:>11.0} {:>8}",
        format!("{synchronous:?}"),
        in_flight,
        stats.writes,
        stats.commits,
        stats.writes as f64 / stats.commits.max(1) as f64,
        ops as f64 / elapsed,
        failures,
    );
}

#[tokio::main]
async fn main() {
    let ops = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(10_000_usize);
    println!(
        "{:<6} {:>9} {:>8} {:>8} {:>9} {:>11} {:>8}",
        "sync", "in-flight", "applies", "commits", "per-commit", "applies/s", "failed"
    );
    for synchronous in [Synchronous::Full, Synchronous::Normal] {
        for in_flight in [1, 16, 256, ops] {
            // One at a time, FULL pays an fsync per apply: fewer ops keep it short.
            let ops = if in_flight == 1 { ops.min(1000) } else { ops };
            run(synchronous, in_flight, ops).await;
        }
    }
}
