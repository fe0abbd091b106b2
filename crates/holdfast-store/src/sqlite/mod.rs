//! The embedded backend: one SQLite file in the data directory.
//!
//! Durability: WAL journal with `synchronous=FULL` by default, so a commit returns only
//! after the WAL is fsynced, and a committed write survives both `kill -9` and power
//! loss. (`synchronous=NORMAL` in WAL mode survives a killed process but may lose the
//! last commits on power loss; a REGISTER answered 200 must not be lost, so it is only an
//! option here.) Group commit ([`group_commit`]) shares one fsync among every write
//! queued meanwhile, which keeps FULL cheap under load. `examples/group_commit.rs`
//! measures both modes; on the 2-core development VM, 10,000 upserts with 256 in flight
//! ran at 42–48k/s with FULL against 54–57k/s with NORMAL (about 190 upserts per
//! commit), while one at a time FULL managed 0.7–2.7k/s against NORMAL's 10–15k/s. The
//! registrar's load is the concurrent case, where FULL costs under a quarter: FULL it is.
//!
//! Several processes may open one data directory at once (the CLI's `holdfast user add`
//! while a core runs): WAL lets readers run beside the one writer, and the busy timeout
//! makes a writer wait for another process's transaction instead of failing.

mod cdr;
mod directory;
mod group_commit;
mod location;
mod schema;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures::future::BoxFuture;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use self::group_commit::{Counters, Job, WriteJob};
use crate::cdr::{self as cdr_ops, CallRecord, CdrFilter, CdrOp, CdrPage, Cdrs};
use crate::directory::{
    ha1, normalize_domain, validate_password, validate_username, DigestAlgorithm, Directory,
    Domain, User,
};
use crate::error::{BackendKind, StoreError};
use crate::location::{validate_op, Binding, BindingOp, Location};

/// How hard a commit works to reach the disk (SQLite's `PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Synchronous {
    /// fsync the WAL at every commit: a commit survives power loss. The default.
    Full,
    /// fsync only at checkpoints: a commit survives a killed process, but the last
    /// ones may be lost on power loss or an OS crash.
    Normal,
}

/// Tuning for [`SqliteStore::open_with`]; [`SqliteConfig::default`] is what
/// [`SqliteStore::open`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// Commit durability. Default [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// How long a write waits for another process's transaction before failing with a
    /// retryable [`BackendKind::Busy`]. Default 5 s.
    pub busy_timeout: Duration,
    /// The most writes one group commit takes. Default 1024.
    pub max_batch: usize,
    /// The least time from the start of one commit to the start of the next. A write
    /// that arrives after a quiet spell commits at once; under load the writes of
    /// this long share one commit, so its fsync and the pages every write touches
    /// (the tables' inner pages) are paid once for all of them. Default 2 ms: at most
    /// 500 commits a second, and a write waits at most that much longer.
    pub commit_spacing: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_batch: 1024,
            commit_spacing: Duration::from_millis(2),
        }
    }
}

/// What the writer thread has done since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Writes (calls to a writing method) processed, committed or failed.
    pub writes: u64,
}

/// How many writes may wait for the writer thread before callers wait to queue.
const WRITE_QUEUE: usize = 4096;
/// How many reads may wait for the reader thread.
const READ_QUEUE: usize = 1024;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The SQLite store: [`Directory`], [`Location`] and [`Cdrs`] on `holdfast.sqlite` in
/// the data directory.
///
/// It owns two threads: the writer, which runs every write with group commit, and a
/// reader with its own read-only connection. Dropping the store lets both finish what
/// is queued, then joins them.
pub struct SqliteStore {
    path: PathBuf,
    writer: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    reader: Option<mpsc::Sender<ReadJob>>,
    threads: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The database file's name inside the data directory.
    pub const FILE_NAME: &'static str = "holdfast.sqlite";

    /// The schema version this build writes; older databases are migrated to it.
    pub const SCHEMA_VERSION: i64 = schema::SCHEMA_VERSION;

    /// Opens (creating if needed) `data_dir/holdfast.sqlite` with the default
    /// configuration, creating `data_dir` if it is missing, and migrates its schema.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, SqliteConfig::default())
    }

    /// [`open`](Self::open) with explicit tuning.
    pub fn open_with(data_dir: &Path, config: SqliteConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Backend {
            kind: BackendKind::Io,
            message: format!("creating {}: {e}", data_dir.display()),
        })?;
        let path = data_dir.join(Self::FILE_NAME);

        let mut writer = Connection::open(&path).map_err(sqlite_error)?;
        writer
            .busy_timeout(config.busy_timeout)
            .map_err(sqlite_error)?;
        let mode: String = writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sqlite_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend {
                kind: BackendKind::Database,
                message: format!("{} cannot use WAL mode (got {mode})", path.display()),
            });
        }
        let synchronous = match config.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        writer
            .pragma_update(None, "synchronous", synchronous)
            .map_err(sqlite_error)?;
        writer
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite_error)?;
        // Every write runs in a savepoint, whose undo copies of the pages it changes go
        // to a temporary journal: in memory, not in a file created for each write. It
        // never holds more than one batch's changed pages, and nothing in it is needed
        // for durability (that is the WAL's job).
        writer
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(sqlite_error)?;
        // Checkpoint every 8,192 WAL pages (32 MiB) rather than every 1,000: a
        // checkpoint copies each page the WAL holds once, however often it was
        // rewritten, and a REGISTER load rewrites the same few hundred binding pages
        // again and again. A page cache of 64 MiB keeps those pages (and the call
        // records' newest index pages) in memory instead of reading them back.
        writer
            .pragma_update(None, "wal_autocheckpoint", 8192)
            .map_err(sqlite_error)?;
        writer
            .pragma_update(None, "cache_size", -65_536)
            .map_err(sqlite_error)?;
        schema::migrate(&mut writer)?;
        // Every statement the store runs stays prepared: there are fewer of them than
        // this, so none is ever prepared twice.
        writer.set_prepared_statement_cache_capacity(STATEMENT_CACHE);

        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite_error)?;
        reader
            .busy_timeout(config.busy_timeout)
            .map_err(sqlite_error)?;
        reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE);

        let counters = Arc::new(Counters::default());
        let (write_tx, write_rx) = mpsc::channel::<Box<dyn WriteJob>>(WRITE_QUEUE);
        let (read_tx, mut read_rx) = mpsc::channel::<ReadJob>(READ_QUEUE);
        let pacing = group_commit::Pacing {
            max_batch: config.max_batch.max(1),
            spacing: config.commit_spacing,
        };
        let writer_counters = Arc::clone(&counters);
        let writer_thread = spawn("holdfast-store-writer", move || {
            group_commit::run(writer, write_rx, pacing, &writer_counters);
        })?;
        let reader_thread = spawn("holdfast-store-reader", move || {
            while let Some(job) = read_rx.blocking_recv() {
                job(&reader);
            }
        })?;
        Ok(Self {
            path,
            writer: Some(write_tx),
            reader: Some(read_tx),
            threads: vec![writer_thread, reader_thread],
            counters,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits and writes so far: `writes / commits` is the group-commit factor.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }

    /// Queues changes of the location service (each one REGISTER's ops) on the writer
    /// now, in call order, as one write, and returns a future that resolves once they
    /// are durable, with each change's own result: a change that is invalid or fails
    /// is not applied and fails alone. A caller that must keep successive changes in
    /// order (the location actor) queues them one after another without waiting for
    /// each commit, so they still share group commits. A full queue is
    /// [`BackendKind::Busy`](crate::BackendKind::Busy); nothing is queued then.
    #[allow(clippy::type_complexity)] // a nested result: the batch's, then each change's
    pub fn queue_apply_each(
        &self,
        changes: Vec<Vec<BindingOp>>,
    ) -> Result<
        impl Future<Output = Result<Vec<Result<(), StoreError>>, StoreError>> + Send + 'static,
        StoreError,
    > {
        let changes: Vec<_> = changes
            .into_iter()
            .map(|ops| ops.iter().try_for_each(validate_op).map(|()| ops))
            .collect();
        self.try_write(move |conn: &Connection| location::apply_each(conn, changes))
    }

    /// [`Cdrs::record`] for a caller that cannot wait to queue (the core's event
    /// loop): queues `ops` on the writer now, in call order, and returns a future that
    /// resolves once they are durable. A full queue is
    /// [`BackendKind::Busy`](crate::BackendKind::Busy); nothing is queued then.
    pub fn queue_cdr(
        &self,
        ops: Vec<CdrOp>,
    ) -> Result<impl Future<Output = Result<(), StoreError>> + Send + 'static, StoreError> {
        ops.iter().try_for_each(cdr_ops::validate_op)?;
        self.try_write(move |conn: &Connection| cdr::record(conn, &ops))
    }

    /// Queues `work` for the writer thread without waiting for room in the queue, and
    /// returns a future that resolves once its batch is committed.
    fn try_write<T, F>(
        &self,
        work: F,
    ) -> Result<impl Future<Output = Result<T, StoreError>> + Send + 'static, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let sender = self.writer.as_ref().ok_or_else(StoreError::closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .try_send(Box::new(Job::new(work, reply)))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Backend {
                    kind: BackendKind::Busy,
                    message: "the writer queue is full".into(),
                },
                mpsc::error::TrySendError::Closed(_) => StoreError::closed(),
            })?;
        Ok(async move { answer.await.map_err(|_| StoreError::closed())? })
    }

    /// Queues `work` for the writer thread and waits until its batch is committed.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let sender = self.writer.as_ref().ok_or_else(StoreError::closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(Box::new(Job::new(work, reply)))
            .await
            .map_err(|_| StoreError::closed())?;
        answer.await.map_err(|_| StoreError::closed())?
    }

    /// Runs `work` on the reader thread.
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let sender = self.reader.as_ref().ok_or_else(StoreError::closed)?;
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            // The caller may have stopped waiting.
            let _ = reply.send(work(conn));
        });
        sender.send(job).await.map_err(|_| StoreError::closed())?;
        answer.await.map_err(|_| StoreError::closed())?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queues ends each thread once it has done what was queued.
        self.writer = None;
        self.reader = None;
        for thread in self.threads.drain(..) {
            // A thread that panicked has already failed its callers (their replies
            // were dropped); there is nothing more to do about it here.
            let _ = thread.join();
        }
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map_err(|e| StoreError::Backend {
            kind: BackendKind::Io,
            message: format!("starting thread {name}: {e}"),
        })
}

/// Classifies a SQLite error.
pub(crate) fn sqlite_error(error: rusqlite::Error) -> StoreError {
    let kind = match &error {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => BackendKind::Busy,
            ErrorCode::DiskFull => BackendKind::Full,
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => BackendKind::Corrupt,
            ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::PermissionDenied => {
                BackendKind::Io
            }
            _ => BackendKind::Database,
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => BackendKind::Corrupt,
        _ => BackendKind::Database,
    };
    StoreError::Backend {
        kind,
        message: error.to_string(),
    }
}

impl Directory for SqliteStore {
    fn add_domain<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Domain, StoreError>> {
        Box::pin(async move {
            let name = normalize_domain(name)?;
            self.write(move |conn| directory::add_domain(conn, name))
                .await
        })
    }

    fn list_domains(&self) -> BoxFuture<'_, Result<Vec<Domain>, StoreError>> {
        Box::pin(self.read(directory::list_domains))
    }

    fn delete_domain<'a>(
        &'a self,
        name: &'a str,
        cascade: bool,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let name = normalize_domain(name)?;
            self.write(move |conn| directory::delete_domain(conn, &name, cascade))
                .await
        })
    }

    fn add_user<'a>(
        &'a self,
        username: &'a str,
        domain: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        Box::pin(async move {
            let user = new_credentials(username, domain, password)?;
            self.write(move |conn| directory::add_user(conn, user))
                .await
        })
    }

    fn set_password<'a>(
        &'a self,
        username: &'a str,
        domain: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let user = new_credentials(username, domain, password)?;
            self.write(move |conn| directory::set_password(conn, &user))
                .await
        })
    }

    fn delete_user<'a>(
        &'a self,
        username: &'a str,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            validate_username(username)?;
            let username = username.to_owned();
            let domain = normalize_domain(domain)?;
            self.write(move |conn| directory::delete_user(conn, &username, &domain))
                .await
        })
    }

    fn list_users<'a>(
        &'a self,
        domain: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<User>, StoreError>> {
        Box::pin(async move {
            let domain = domain.map(normalize_domain).transpose()?;
            self.read(move |conn| directory::list_users(conn, domain.as_deref()))
                .await
        })
    }

    fn credentials<'a>(
        &'a self,
        username: &'a str,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, StoreError>> {
        Box::pin(async move {
            // A name that could never have been stored has no credentials; that is
            // not the caller's error (it comes from a peer's Authorization header).
            let (Ok(()), Ok(domain)) = (validate_username(username), normalize_domain(domain))
            else {
                return Ok(None);
            };
            let username = username.to_owned();
            self.read(move |conn| directory::credentials(conn, &username, &domain))
                .await
        })
    }
}

/// Validates the names and hashes the password, here in the caller's task: only HA1
/// values go to the writer thread.
fn new_credentials(username: &str, domain: &str, password: &str) -> Result<User, StoreError> {
    validate_username(username)?;
    validate_password(password)?;
    let domain = normalize_domain(domain)?;
    Ok(User {
        username: username.to_owned(),
        ha1_md5: ha1(DigestAlgorithm::Md5, username, &domain, password),
        ha1_sha256: ha1(DigestAlgorithm::Sha256, username, &domain, password),
        domain,
        // Set by the database when the user is inserted.
        created_at: 0,
    })
}

impl Location for SqliteStore {
    fn apply(&self, ops: Vec<BindingOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            ops.iter().try_for_each(validate_op)?;
            self.write(move |conn| location::apply(conn, &ops)).await
        })
    }

    fn load_unexpired(&self, now: i64) -> BoxFuture<'_, Result<Vec<Binding>, StoreError>> {
        Box::pin(self.read(move |conn| location::load_unexpired(conn, now)))
    }

    fn purge_expired(&self, now: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(move |conn| location::purge_expired(conn, now)))
    }
}

impl Cdrs for SqliteStore {
    fn record(&self, ops: Vec<CdrOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            ops.iter().try_for_each(cdr_ops::validate_op)?;
            self.write(move |conn| cdr::record(conn, &ops)).await
        })
    }

    fn open_calls(&self, node: &str) -> BoxFuture<'_, Result<Vec<CallRecord>, StoreError>> {
        let node = node.to_owned();
        Box::pin(self.read(move |conn| cdr::open_calls(conn, &node)))
    }

    fn query(&self, filter: CdrFilter) -> BoxFuture<'_, Result<CdrPage, StoreError>> {
        Box::pin(async move {
            let cursor = cdr_ops::validate_filter(&filter)?;
            self.read(move |conn| cdr::query(conn, &filter, cursor.as_ref()))
                .await
        })
    }
}
