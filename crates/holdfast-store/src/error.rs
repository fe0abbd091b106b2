//! Storage errors, split by cause: what the caller asked for does not exist, already
//! exists or is still in use; the input is invalid; or the backend failed.

use std::fmt;

/// The kind of record an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Entity {
    /// A SIP domain (and realm) of the directory.
    Domain,
    /// A user of one domain.
    User,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Domain => "domain",
            Self::User => "user",
        })
    }
}

/// Why the backend failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// The file system: creating the data directory, opening the file, starting threads.
    Io,
    /// Another writer (another process) held the database past the busy timeout.
    /// Retrying is safe: nothing was written.
    Busy,
    /// The disk is full. Nothing was written.
    Full,
    /// Stored data that does not decode (an integer out of range, a malformed value):
    /// corruption, or a writer that is not holdfast.
    Corrupt,
    /// Any other error the database engine reported.
    Database,
    /// The store's threads have stopped; nothing more can be done with it.
    Closed,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Io => "i/o",
            Self::Busy => "busy",
            Self::Full => "disk full",
            Self::Corrupt => "corrupt data",
            Self::Database => "database",
            Self::Closed => "closed",
        })
    }
}

/// Every way a storage operation can fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record the operation names does not exist.
    #[error("{entity} {key:?} not found")]
    NotFound {
        /// What kind of record.
        entity: Entity,
        /// Its key, as normalised by the store (`user@domain` for a user).
        key: String,
    },
    /// The record to create exists already.
    #[error("{entity} {key:?} already exists")]
    AlreadyExists {
        /// What kind of record.
        entity: Entity,
        /// Its key, as normalised by the store.
        key: String,
    },
    /// The record cannot be deleted while others depend on it (a domain with users,
    /// unless the delete cascades).
    #[error("{entity} {key:?} still has {dependents} user(s)")]
    Conflict {
        /// What kind of record.
        entity: Entity,
        /// Its key, as normalised by the store.
        key: String,
        /// How many records depend on it.
        dependents: u64,
    },
    /// The input is not acceptable; nothing was written.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The argument or field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The database was written by a newer holdfast, whose schema this build does not
    /// know. Nothing was changed.
    #[error(
        "database schema version {found} is newer than this build supports \
         ({supported}); run a newer holdfast"
    )]
    SchemaTooNew {
        /// The version found in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The backend failed.
    #[error("storage backend error ({kind}): {message}")]
    Backend {
        /// Why.
        kind: BackendKind,
        /// The backend's own description.
        message: String,
    },
}

impl StoreError {
    /// Whether the same operation may succeed if simply tried again (another writer
    /// held the database for too long). Other errors need a change first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Backend {
                kind: BackendKind::Busy,
                ..
            }
        )
    }

    pub(crate) fn closed() -> Self {
        Self::Backend {
            kind: BackendKind::Closed,
            message: "the store's threads have stopped".to_owned(),
        }
    }
}
