//! The writer thread: every write of the store runs here, and as many as are queued
//! share one transaction and one fsync.
//!
//! The thread waits for a write, waits out what is left of the commit spacing since
//! the last commit began (nothing after a quiet spell), opens a transaction (`BEGIN
//! IMMEDIATE`, so the lock is taken once, up front, under the busy timeout), runs that
//! write and then every write that has queued meanwhile, up to `max_batch`, each in
//! its own savepoint (but the first, which a rollback of the whole transaction undoes
//! alone), commits, and only then answers each caller. A write that fails is rolled back to its savepoint and
//! answered with its error; the others are not affected. If the commit fails, every
//! write of the batch is answered with that error: none of them was written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
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

/// How the writer groups writes into commits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pacing {
    /// The most writes in one commit.
    pub(super) max_batch: usize,
    /// The least time between the starts of two commits.
    pub(super) spacing: Duration,
}

/// The writer thread's loop; returns when every sender is gone and the queue is empty.
///
/// It is a thread of its own, outside any runtime, that blocks on SQLite anyway: the
/// spacing is waited out with the thread's own clock and sleep.
#[allow(clippy::disallowed_methods)]
pub(super) fn run(
    mut conn: Connection,
    mut queue: mpsc::Receiver<Box<dyn WriteJob>>,
    pacing: Pacing,
    counters: &Counters,
) {
    let mut last_commit: Option<Instant> = None;
    while let Some(first) = queue.blocking_recv() {
        // Under load, let the writes of the rest of the spacing queue up behind this
        // one: they join its commit.
        if let Some(wait) = last_commit.and_then(|t| pacing.spacing.checked_sub(t.elapsed())) {
            std::thread::sleep(wait);
        }
        last_commit = Some(Instant::now());
        let mut batch = vec![first];
        let committed = run_batch(&mut conn, &mut queue, &mut batch, pacing.max_batch);
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
/// transaction, and commits it. `BEGIN IMMEDIATE` takes the write lock up front, under
/// the busy timeout; a batch that fails is rolled back.
fn run_batch(
    conn: &mut Connection,
    queue: &mut mpsc::Receiver<Box<dyn WriteJob>>,
    batch: &mut Vec<Box<dyn WriteJob>>,
    max_batch: usize,
) -> Result<(), StoreError> {
    execute_cached(conn, "BEGIN IMMEDIATE")?;
    let result =
        run_jobs(conn, queue, batch, max_batch).and_then(|()| execute_cached(conn, "COMMIT"));
    if result.is_err() && !conn.is_autocommit() {
        // The batch's error is what its writers are told; a failed rollback leaves
        // nothing more to do than the next BEGIN failing in turn.
        let _ = execute_cached(conn, "ROLLBACK");
    }
    result
}

fn run_jobs(
    conn: &Connection,
    queue: &mut mpsc::Receiver<Box<dyn WriteJob>>,
    batch: &mut Vec<Box<dyn WriteJob>>,
    max_batch: usize,
) -> Result<(), StoreError> {
    let mut next = 0_usize;
    while let Some(job) = batch.get_mut(next) {
        // The job keeps its own result; only the batch's error stops the batch.
        if next == 0 {
            // The first write of the transaction needs no savepoint (whose journal
            // copies every page the write touches): when it fails, the transaction
            // holds nothing else, and is rolled back and begun anew for the rest.
            if !job.run(conn) {
                if !conn.is_autocommit() {
                    execute_cached(conn, "ROLLBACK")?;
                }
                execute_cached(conn, "BEGIN IMMEDIATE")?;
            } else if conn.is_autocommit() {
                return Err(rolled_back());
            }
        } else {
            let _own = in_savepoint(
                conn,
                JOB,
                |conn| if job.run(conn) { Ok(()) } else { Err(()) },
            )?;
        }
        next = next.saturating_add(1);
        if batch.len() < max_batch {
            if let Ok(job) = queue.try_recv() {
                batch.push(job);
            }
        }
    }
    Ok(())
}

/// The statements of one savepoint name.
#[derive(Debug, Clone, Copy)]
pub(super) struct SavepointSql {
    begin: &'static str,
    release: &'static str,
    rollback: &'static str,
}

/// The savepoint around each write of a batch.
const JOB: SavepointSql = SavepointSql {
    begin: "SAVEPOINT job",
    release: "RELEASE job",
    rollback: "ROLLBACK TO job",
};

/// A savepoint nested in a write, around each of its parts that fail alone.
pub(super) const PART: SavepointSql = SavepointSql {
    begin: "SAVEPOINT part",
    release: "RELEASE part",
    rollback: "ROLLBACK TO part",
};

/// Runs `work` in a savepoint: kept when it succeeds, rolled back when it fails, and
/// its result returned either way. The outer error is the batch's: the savepoint
/// itself failed, or the database rolled the whole transaction back.
///
/// The savepoint statements are prepared once and reused: they run for every write,
/// and preparing SQL costs more than running it.
pub(super) fn in_savepoint<T, E>(
    conn: &Connection,
    sql: SavepointSql,
    work: impl FnOnce(&Connection) -> Result<T, E>,
) -> Result<Result<T, E>, StoreError> {
    execute_cached(conn, sql.begin)?;
    let result = work(conn);
    if result.is_err() {
        execute_cached(conn, sql.rollback)?;
    }
    execute_cached(conn, sql.release)?;
    // Some errors (I/O, disk full) make SQLite roll back the whole transaction; the
    // connection is then back in autocommit mode, and further writes would each commit
    // on their own. Stop the batch instead: every write in it fails.
    if conn.is_autocommit() {
        return Err(rolled_back());
    }
    Ok(result)
}

/// The batch's error when SQLite rolled the whole transaction back.
fn rolled_back() -> StoreError {
    StoreError::Backend {
        kind: BackendKind::Database,
        message: "the database rolled the transaction back".to_owned(),
    }
}

fn execute_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(|_| ())
        .map_err(sqlite_error)
}
