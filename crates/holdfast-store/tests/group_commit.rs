//! Group commit: concurrent writes share transactions, and a failing write fails alone.

mod common;

use std::io::Write;

use common::binding;
use holdfast_store::{BindingOp, Directory, Location, SqliteStore, StoreError};

const NOW: i64 = 1_700_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_applies_share_few_commits() {
    const OPS: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let applies = (0..OPS).map(|i| {
        store.apply(vec![BindingOp::Upsert(binding(
            &format!("user{i}@example.com"),
            &format!("sip:user{i}@192.0.2.1"),
            NOW + 3600,
        ))])
    });
    for result in futures::future::join_all(applies).await {
        result.unwrap();
    }
    let stats = store.stats();
    writeln!(
        std::io::stdout(),
        "group commit: {} applies in {} commits ({:.1} per commit)",
        stats.writes,
        stats.commits,
        stats.writes as f64 / stats.commits as f64
    )
    .unwrap();
    assert_eq!(stats.writes, OPS);
    assert!(stats.commits >= 1);
    assert!(
        stats.commits < OPS / 5,
        "{} commits for {OPS} applies",
        stats.commits
    );
    assert_eq!(store.load_unexpired(NOW).await.unwrap().len(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_fails_alone_in_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.add_domain("example.com").await.unwrap();
    store.add_user("taken", "example.com", "pw").await.unwrap();
    let usernames: Vec<String> = (0..1000).map(|i| format!("user{i}")).collect();
    let adds = usernames.iter().enumerate().map(|(i, username)| {
        // Every tenth write fails inside the batch: unknown domain, or a duplicate.
        let (username, domain) = match i % 20 {
            0 => (username.as_str(), "nowhere.example"),
            10 => ("taken", "example.com"),
            _ => (username.as_str(), "example.com"),
        };
        store.add_user(username, domain, "pw")
    });
    let results = futures::future::join_all(adds).await;
    for (i, result) in results.iter().enumerate() {
        match i % 20 {
            0 => assert!(matches!(result, Err(StoreError::NotFound { .. })), "{i}"),
            10 => assert!(
                matches!(result, Err(StoreError::AlreadyExists { .. })),
                "{i}"
            ),
            _ => assert!(result.is_ok(), "{i}: {result:?}"),
        }
    }
    let stats = store.stats();
    assert!(stats.commits < stats.writes / 5, "{stats:?}");
    // 900 new users and the one added first.
    assert_eq!(
        store.list_users(Some("example.com")).await.unwrap().len(),
        901
    );
}
