//! Opening databases: creation, migration from older schemas, refusal of newer ones.

use holdfast_store::{BackendKind, DigestAlgorithm, Directory, SqliteStore, StoreError};
use rusqlite::Connection;

fn version(dir: &std::path::Path) -> i64 {
    Connection::open(dir.join(SqliteStore::FILE_NAME))
        .unwrap()
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .unwrap()
}

/// The schema exactly as a version-1 build wrote it (a fixture: it must not follow
/// later changes of the migration list).
const VERSION_1: &str = "
    CREATE TABLE schema_version (version INTEGER NOT NULL);
    INSERT INTO schema_version (version) VALUES (1);
    CREATE TABLE domains (
        name TEXT NOT NULL PRIMARY KEY
    ) WITHOUT ROWID;
    CREATE TABLE users (
        domain TEXT NOT NULL REFERENCES domains (name),
        username TEXT NOT NULL,
        ha1_md5 TEXT NOT NULL,
        ha1_sha256 TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (domain, username)
    ) WITHOUT ROWID;
    INSERT INTO domains (name) VALUES ('example.com');
    INSERT INTO users VALUES ('example.com', 'alice', 'md5-ha1', 'sha256-ha1', 1600000000);
";

#[tokio::test]
async fn a_new_database_is_created_in_a_new_directory() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data").join("holdfast");
    let store = SqliteStore::open(&dir).unwrap();
    assert_eq!(store.path(), dir.join("holdfast.sqlite"));
    assert!(store.path().is_file());
    assert_eq!(version(&dir), SqliteStore::SCHEMA_VERSION);
    let journal: String = Connection::open(store.path())
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    drop(store);
    // Reopening is a no-op migration.
    let store = SqliteStore::open(&dir).unwrap();
    store.add_domain("example.com").await.unwrap();
    assert_eq!(version(&dir), SqliteStore::SCHEMA_VERSION);
}

#[tokio::test]
async fn a_version_1_database_is_migrated_and_keeps_its_data() {
    const { assert!(SqliteStore::SCHEMA_VERSION > 1) };
    let dir = tempfile::tempdir().unwrap();
    {
        // An old build's file, in the default rollback-journal mode.
        let conn = Connection::open(dir.path().join(SqliteStore::FILE_NAME)).unwrap();
        conn.execute_batch(VERSION_1).unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(version(dir.path()), SqliteStore::SCHEMA_VERSION);
    let alice = store
        .credentials("alice", "example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alice.ha1(DigestAlgorithm::Md5), "md5-ha1");
    assert_eq!(alice.created_at, 1_600_000_000);
    // What version 2 added works.
    use holdfast_store::{Binding, BindingOp, Location};
    let binding = Binding {
        aor: "alice@example.com".into(),
        contact: "sip:alice@192.0.2.1".into(),
        instance: None,
        reg_id: None,
        q: 1000,
        expires_at: 100,
        call_id: "c".into(),
        cseq: 1,
        path: vec![],
        transport: "udp".into(),
        source: "192.0.2.1:5060".into(),
        local: "192.0.2.2:5060".into(),
        connection: None,
        user_agent: None,
        node: "n".into(),
        updated_at: 0,
    };
    store
        .apply(vec![BindingOp::Upsert(binding.clone())])
        .await
        .unwrap();
    assert_eq!(store.load_unexpired(0).await.unwrap(), [binding]);
    // And what version 3 added.
    use holdfast_store::{CallRecord, CdrFilter, CdrOp, Cdrs, Disposition};
    let record = CallRecord {
        id: "1".into(),
        call_id: "c".into(),
        caller: "alice@example.com".into(),
        callee: "bob@example.com".into(),
        request_uri: "sip:bob@example.com".into(),
        source: "192.0.2.1:5060".into(),
        transport: "udp".into(),
        started_at_ms: 1,
        answered_at_ms: None,
        ended_at_ms: Some(2),
        disposition: Disposition::Failed,
        status: 503,
        hangup: None,
        node: "n".into(),
    };
    store
        .record(vec![CdrOp::Put(record.clone())])
        .await
        .unwrap();
    let page = store.query(CdrFilter::default()).await.unwrap();
    assert_eq!(page.records, [record]);
}

#[test]
fn a_newer_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let newer = SqliteStore::SCHEMA_VERSION + 1;
    Connection::open(dir.path().join(SqliteStore::FILE_NAME))
        .unwrap()
        .execute("UPDATE schema_version SET version = ?1", [newer])
        .unwrap();
    let error = SqliteStore::open(dir.path()).unwrap_err();
    assert_eq!(
        error,
        StoreError::SchemaTooNew {
            found: newer,
            supported: SqliteStore::SCHEMA_VERSION
        }
    );
    assert!(error.to_string().contains("newer"), "{error}");
    assert_eq!(version(dir.path()), newer);
}

#[test]
fn a_file_that_is_not_a_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(SqliteStore::FILE_NAME),
        b"this is not a SQLite database, just some bytes of text".repeat(100),
    )
    .unwrap();
    match SqliteStore::open(dir.path()) {
        Err(StoreError::Backend {
            kind: BackendKind::Corrupt,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_data_dir_that_is_a_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    match SqliteStore::open(&file) {
        Err(StoreError::Backend {
            kind: BackendKind::Io,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}
