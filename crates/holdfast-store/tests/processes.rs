//! Several stores on one data directory, across threads and processes, and a process
//! killed with SIGKILL.
//!
//! The child processes are this test binary run again with `--ignored --exact child`
//! and the environment variables below naming what to do.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use common::{binding, call};
use holdfast_store::{BindingOp, CdrOp, Cdrs, Directory, Location, SqliteStore};

const NOW: i64 = 1_700_000_000;
const ROLE: &str = "HOLDFAST_STORE_TEST_CHILD";
const DIR: &str = "HOLDFAST_STORE_TEST_DIR";
/// Writes each process makes in the concurrent-writers tests.
const WRITES: usize = 300;
/// Acknowledged writes the killed child makes before the kill.
const ACKED_BEFORE_KILL: usize = 200;

fn spawn_child(role: &str, dir: &Path) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env(DIR, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout)
}

/// What follows `marker` on the next line of the child's that holds it. (The first may
/// share its line with the test harness's `test child ... `.)
fn next_line(stdout: &mut BufReader<ChildStdout>, marker: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "child exited before printing {marker:?}"
        );
        if let Some((_, rest)) = line.trim_end().split_once(marker) {
            return rest.to_owned();
        }
    }
}

/// The child half. Without the environment variables (a plain `--ignored` run) it does
/// nothing.
#[test]
#[ignore = "run as a child process by the other tests of this file"]
fn child() {
    let (Ok(role), Some(dir)) = (std::env::var(ROLE), std::env::var_os(DIR)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&dir).unwrap();
        let mut stdout = std::io::stdout();
        match role.as_str() {
            // Applies bindings (`kill9`) or records open calls (`cdr_kill9`) one at a
            // time, saying which were acknowledged, until killed (or until the parent
            // stops reading).
            "kill9" | "cdr_kill9" => {
                for i in 0..100_000_i64 {
                    let write = if role == "kill9" {
                        store.apply(vec![BindingOp::Upsert(binding(
                            &format!("user{i}@example.com"),
                            &format!("sip:user{i}@192.0.2.1"),
                            NOW + 3600,
                        ))])
                    } else {
                        store.record(vec![CdrOp::Put(call(
                            &format!("call-{i}"),
                            "alice@example.com",
                            "bob@example.com",
                            NOW * 1000 + i,
                        ))])
                    };
                    write.await.unwrap();
                    if writeln!(stdout, "acked {i}")
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        break;
                    }
                }
            }
            // Writes users and bindings while the parent does the same.
            "writer" => {
                writeln!(stdout, "ready").unwrap();
                stdout.flush().unwrap();
                for i in 0..WRITES {
                    store
                        .add_user(&format!("child{i}"), "example.com", "pw")
                        .await
                        .unwrap();
                    store
                        .apply(vec![BindingOp::Upsert(binding(
                            &format!("child{i}@example.com"),
                            "sip:child@192.0.2.2",
                            NOW + 3600,
                        ))])
                        .await
                        .unwrap();
                }
            }
            other => panic!("unknown child role {other:?}"),
        }
    });
}

/// Runs the child `role` on `dir` until it has had at least [`ACKED_BEFORE_KILL`]
/// writes acknowledged, kills it with SIGKILL while it writes the next, checks the
/// database's integrity, and returns the last acknowledged write's number.
fn kill_after_acks(role: &str, dir: &Path) -> usize {
    let (mut child, mut stdout) = spawn_child(role, dir);
    let mut acked = 0;
    while acked < ACKED_BEFORE_KILL {
        acked = next_line(&mut stdout, "acked ").parse().unwrap();
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");

    let integrity: String = rusqlite::Connection::open(dir.join(SqliteStore::FILE_NAME))
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    acked
}

#[tokio::test]
async fn a_binding_acknowledged_before_sigkill_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let acked = kill_after_acks("kill9", dir.path());
    let store = SqliteStore::open(dir.path()).unwrap();
    let aors: HashSet<String> = store
        .load_unexpired(NOW)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.aor)
        .collect();
    for i in 0..=acked {
        assert!(
            aors.contains(&format!("user{i}@example.com")),
            "acknowledged binding {i} lost ({} kept)",
            aors.len()
        );
    }
}

#[tokio::test]
async fn a_call_record_acknowledged_before_sigkill_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let acked = kill_after_acks("cdr_kill9", dir.path());
    // Each acknowledged record is there, and still an open call of its node: what the
    // restarted node reloads.
    let store = SqliteStore::open(dir.path()).unwrap();
    let open: HashSet<String> = store
        .open_calls("node-a")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    for i in 0..=acked {
        assert!(
            open.contains(&format!("call-{i}")),
            "acknowledged call record {i} lost ({} kept)",
            open.len()
        );
    }
}

#[tokio::test]
async fn another_process_writes_while_this_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.add_domain("example.com").await.unwrap();
    let (mut child, mut stdout) = spawn_child("writer", dir.path());
    next_line(&mut stdout, "ready");
    for i in 0..WRITES {
        store
            .add_user(&format!("parent{i}"), "example.com", "pw")
            .await
            .unwrap();
        store
            .apply(vec![BindingOp::Upsert(binding(
                &format!("parent{i}@example.com"),
                "sip:parent@192.0.2.3",
                NOW + 3600,
            ))])
            .await
            .unwrap();
    }
    assert!(child.wait().unwrap().success());
    // Each process's writes are visible to the other's store.
    assert_eq!(store.list_users(None).await.unwrap().len(), 2 * WRITES);
    assert_eq!(store.load_unexpired(NOW).await.unwrap().len(), 2 * WRITES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_directory_write_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(dir.path()).unwrap();
    let second = SqliteStore::open(dir.path()).unwrap();
    first.add_domain("example.com").await.unwrap();
    let users = (0..WRITES).map(|i| {
        let (store, name) = if i % 2 == 0 {
            (&first, format!("first{i}"))
        } else {
            (&second, format!("second{i}"))
        };
        async move { store.add_user(&name, "example.com", "pw").await }
    });
    let bindings = (0..WRITES).map(|i| {
        let store = if i % 2 == 0 { &second } else { &first };
        store.apply(vec![BindingOp::Upsert(binding(
            &format!("b{i}@example.com"),
            "sip:b@192.0.2.4",
            NOW + 3600,
        ))])
    });
    let (users, bindings) = futures::future::join(
        futures::future::join_all(users),
        futures::future::join_all(bindings),
    )
    .await;
    for user in users {
        user.unwrap();
    }
    for binding in bindings {
        binding.unwrap();
    }
    for store in [&first, &second] {
        assert_eq!(store.list_users(None).await.unwrap().len(), WRITES);
        assert_eq!(store.load_unexpired(NOW).await.unwrap().len(), WRITES);
    }
}
