//! The SQLite schema and its migrations.
//!
//! `MIGRATIONS[i]` takes a database from version `i` to version `i + 1`; the version is
//! the one row of `schema_version`. The list is append-only: a released migration is
//! never edited, a change is a new entry. Opening a database migrates it to
//! [`SCHEMA_VERSION`] in one transaction; opening one with a newer version fails with
//! [`StoreError::SchemaTooNew`] and changes nothing.

use rusqlite::{Connection, TransactionBehavior};

use super::sqlite_error;
use crate::error::{BackendKind, StoreError};

/// The migrations, oldest first.
const MIGRATIONS: &[&str] = &[
    // 1: the directory.
    "CREATE TABLE domains (
        name TEXT NOT NULL PRIMARY KEY
    ) WITHOUT ROWID;
    CREATE TABLE users (
        domain TEXT NOT NULL REFERENCES domains (name),
        username TEXT NOT NULL,
        ha1_md5 TEXT NOT NULL,
        ha1_sha256 TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (domain, username)
    ) WITHOUT ROWID;",
    // 2: the location service. `identity` encodes Binding::identity (see
    // location::identity_key); `path` is a JSON array of strings; `connection` holds
    // the u64 flow id's bits as a signed integer.
    "CREATE TABLE bindings (
        aor TEXT NOT NULL,
        identity TEXT NOT NULL,
        contact TEXT NOT NULL,
        instance TEXT,
        reg_id INTEGER,
        q INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        call_id TEXT NOT NULL,
        cseq INTEGER NOT NULL,
        path TEXT NOT NULL,
        transport TEXT NOT NULL,
        source TEXT NOT NULL,
        local TEXT NOT NULL,
        connection INTEGER,
        user_agent TEXT,
        node TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (aor, identity)
    ) WITHOUT ROWID;
    CREATE INDEX bindings_by_contact ON bindings (aor, contact);
    CREATE INDEX bindings_by_expiry ON bindings (expires_at);",
    // 3: call records. Times are Unix milliseconds; `disposition` and `hangup` hold
    // the names of Disposition and HangupSide. Every index ends with (started_at, id),
    // the newest-first paging key; `cdrs_open` holds only the calls that are up.
    "CREATE TABLE cdrs (
        id TEXT NOT NULL PRIMARY KEY,
        call_id TEXT NOT NULL,
        caller TEXT NOT NULL,
        callee TEXT NOT NULL,
        request_uri TEXT NOT NULL,
        source TEXT NOT NULL,
        transport TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        answered_at INTEGER,
        ended_at INTEGER,
        disposition TEXT NOT NULL,
        status INTEGER NOT NULL,
        hangup TEXT,
        node TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX cdrs_by_start ON cdrs (started_at, id);
    CREATE INDEX cdrs_by_caller ON cdrs (caller, started_at, id);
    CREATE INDEX cdrs_by_callee ON cdrs (callee, started_at, id);
    CREATE INDEX cdrs_by_disposition ON cdrs (disposition, started_at, id);
    CREATE INDEX cdrs_open ON cdrs (node, started_at, id)
        WHERE answered_at IS NOT NULL AND ended_at IS NULL;",
    // 4: bindings are only ever looked up by AoR, which the primary key leads with (an
    // AoR holds a handful of bindings, so a contact is found among them): the index on
    // (aor, contact) was one more b-tree written by every REGISTER.
    "DROP INDEX bindings_by_contact;",
];

/// The schema version this build writes: the number of migrations (a handful, so the
/// cast is exact).
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`SCHEMA_VERSION`]. Takes the write lock first, so two
/// processes opening one old database migrate it once.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(sqlite_error)?;
    let found: Option<i64> = tx
        .query_row("SELECT max(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .map_err(sqlite_error)?;
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let Ok(applied) = usize::try_from(found) else {
        return Err(StoreError::Backend {
            kind: BackendKind::Corrupt,
            message: format!("negative schema version {found}"),
        });
    };
    if found < SCHEMA_VERSION {
        for migration in MIGRATIONS.iter().skip(applied) {
            tx.execute_batch(migration).map_err(sqlite_error)?;
        }
        tx.execute("DELETE FROM schema_version", [])
            .map_err(sqlite_error)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [SCHEMA_VERSION],
        )
        .map_err(sqlite_error)?;
    }
    tx.commit().map_err(sqlite_error)
}
