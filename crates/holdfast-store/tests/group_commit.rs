//! Group commit: concurrent writes share transactions, and a failing write fails alone.

mod common;

use std::io::Write;

use common::binding;
use holdfast_store::{BindingOp, Directory, Location, SqliteStore, StoreError};

const NOW: i64 = 1_700_000_000;

/// A store whose commits start at least `spacing` apart.
fn spaced_store(dir: &std::path::Path, spacing: std::time::Duration) -> SqliteStore {
    let mut config = holdfast_store::SqliteConfig::default();
    config.commit_spacing = spacing;
    SqliteStore::open_with(dir, config).unwrap()
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_spaced_under_load_and_immediate_after_a_quiet_spell() {
    use std::time::Duration;
    use tokio::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let store = spaced_store(dir.path(), Duration::from_millis(300));
    let put = |i: u32| {
        store.apply(vec![BindingOp::Upsert(binding(
            &format!("user{i}@example.com"),
            &format!("sip:user{i}@192.0.2.1"),
            NOW + 3600,
        ))])
    };
    // The first write after a quiet spell is not held back.
    let started = Instant::now();
    put(0).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // Writes that follow it one by one, 5 ms apart, within the spacing: they wait for
    // the spacing to pass and then share one commit.
    let before = store.stats().commits;
    let started = Instant::now();
    let writes = (1..=20u32).map(|i| {
        let write = put(i);
        async move {
            tokio::time::sleep(Duration::from_millis(5 * u64::from(i))).await;
            write.await
        }
    });
    for result in futures::future::join_all(writes).await {
        result.unwrap();
    }
    let commits = store.stats().commits - before;
    assert!(
        commits <= 2,
        "{commits} commits for 20 writes within the spacing"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    // After a quiet spell longer than the spacing, a write commits at once again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    put(99).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(store.load_unexpired(NOW).await.unwrap().len(), 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_first_write_of_a_batch_fails_alone() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    // Writes queued within the spacing after a commit share the next one, in order.
    let store = spaced_store(dir.path(), Duration::from_millis(300));
    store.add_domain("example.com").await.unwrap();
    // Queued together behind that commit: the first fails (its domain is unknown),
    // in the same transaction as the two after it, which must stand.
    let first = store.add_user("a", "nowhere.example", "pw");
    let second = store.add_user("b", "example.com", "pw");
    let third = store.add_user("c", "example.com", "pw");
    let before = store.stats().commits;
    let (first, second, third) = tokio::join!(first, second, third);
    assert!(first.is_err(), "{first:?}");
    second.unwrap();
    third.unwrap();
    assert_eq!(
        store.stats().commits - before,
        1,
        "one commit for the three"
    );
    let users = store.list_users(Some("example.com")).await.unwrap();
    let names: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
}
