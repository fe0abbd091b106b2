//! The writer thread: every write of the store runs here, and as many as are queued
//! share one transaction and one fsync.
//!
//! The thread waits for a write, opens a transaction (`BEGIN IMMEDIATE`, so the lock is
//! taken once, up front, under the busy timeout), runs that write and then every write
//! that has queued meanwhile, up to `max_batch`, each in its own savepoint, commits, and
//! only then answers each caller. A write that fails is rolled back to its savepoint and
//! answered with its error; the others are not affected. If the commit fails, every
//! write of the batch is answered with that error: none of them was written.

use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::sqlite_error;
use crate::error::{BackendKind, StoreError};

/// One queued write.
pub(super) trait WriteJob: Send {
    /// Runs the write inside the batch's transaction; says whether it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, committed: Result<(), &StoreError>);
}

/// A write with a result for its caller.
pub(super) struct Job<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job<T, F> {
    pub(super) fn new(work: F, reply: oneshot::Sender<Result<T, StoreError>>) -> Self {
        Self {
            work: Some(work),
            result: None,
            reply,
        }
    }
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), &StoreError>) {
        let answer = match (self.result, committed) {
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)) | None, Err(batch)) => Err(batch.clone()),
            (None, Ok(())) => Err(StoreError::Backend {
                kind: BackendKind::Database,
                message: "write was not run".to_owned(),
            }),
        };
        // The caller may have stopped waiting; the write stands either way.
        let _ = self.reply.send(answer);
    }
}

/// Counters of the writer thread, read by `SqliteStore::stats`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) commits: AtomicU64,
    pub(super) writes: AtomicU64,
}

/// The writer thread's loop; returns when every sender is gone and the queue is empty.
pub(super) fn run(
    mut conn: Connection,
    mut queue: mpsc::Receiver<Box<dyn WriteJob>>,
    max_batch: usize,
    counters: &Counters,
) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        let committed = run_batch(&mut conn, &mut queue, &mut batch, max_batch);
        if committed.is_ok() {
            counters.commits.fetch_add(1, Ordering::Relaxed);
        }
        counters.writes.fetch_add(
            u64::try_from(batch.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let committed = committed.as_ref().map(|_| ());
        for job in batch {
            job.finish(committed);
        }
    }
}

/// Runs `batch` and whatever else is queued, up to `max_batch` writes, in one
/// transaction, and commits it.
fn run_batch(
    conn: &mut Connection,
    queue: &mut mpsc::Receiver<Box<dyn WriteJob>>,
    batch: &mut Vec<Box<dyn WriteJob>>,
    max_batch: usize,
) -> Result<(), StoreError> {
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let mut next = 0_usize;
    while let Some(job) = batch.get_mut(next) {
        run_in_savepoint(&mut tx, job.as_mut())?;
        next = next.saturating_add(1);
        if batch.len() < max_batch {
            if let Ok(job) = queue.try_recv() {
                batch.push(job);
            }
        }
    }
    tx.commit().map_err(sqlite_error)
}

/// Runs one write in its own savepoint. The savepoint statements are prepared once and
/// reused: they run for every write, and preparing SQL costs more than running it.
fn run_in_savepoint(tx: &mut Transaction<'_>, job: &mut dyn WriteJob) -> Result<(), StoreError> {
    let conn: &Connection = tx;
    execute_cached(conn, "SAVEPOINT job")?;
    if job.run(conn) {
        execute_cached(conn, "RELEASE job")?;
    } else {
        execute_cached(conn, "ROLLBACK TO job")?;
        execute_cached(conn, "RELEASE job")?;
    }
    // Some errors (I/O, disk full) make SQLite roll back the whole transaction; the
    // connection is then back in autocommit mode, and further writes would each commit
    // on their own. Stop the batch instead: every write in it fails.
    if tx.is_autocommit() {
        return Err(StoreError::Backend {
            kind: BackendKind::Database,
            message: "the database rolled the transaction back".to_owned(),
        });
    }
    Ok(())
}

fn execute_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(|_| ())
        .map_err(sqlite_error)
}
