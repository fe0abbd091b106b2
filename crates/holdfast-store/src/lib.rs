//! holdfast-store: holdfast's storage, behind traits.
//!
//! Callers (the registrar, the authenticator, the proxy, the CLI, the admin API) hold an
//! `Arc<dyn Directory>`, `Arc<dyn Location>` or `Arc<dyn Cdrs>` and never name a
//! database. That is the
//! point of the crate: the PostgreSQL backend that the multi-site cluster needs can be
//! added later as one more implementation, without touching a caller. The embedded
//! default is [`SqliteStore`]: one SQLite file, `holdfast.sqlite`, in the data directory.
//!
//! - [`Directory`]: domains and their users. A credential is stored only as HA1 =
//!   H(username ":" realm ":" password) for MD5 and for SHA-256 (RFC 7616 §3.4.2; RFC 3261
//!   §22.4 uses the same A1), with realm = the domain name. See [`ha1`].
//! - [`Location`]: registrar bindings (RFC 3261 §10.3), keyed by (AOR, contact), or by
//!   (AOR, +sip.instance, reg-id) when the device sent an instance (RFC 5626 §6). Changes
//!   are applied as [`BindingOp`]s; time is always an argument (`now`, Unix seconds).
//! - [`Cdrs`]: call records, one [`CallRecord`] per call attempt, keyed by its `id`
//!   and written whole by [`CdrOp::Put`] (when answered, or once when it failed), then
//!   ended by [`CdrOp::End`] (end time and hangup side only). A record
//!   with an answer and no end is an open call, which a restarted node reloads with
//!   [`Cdrs::open_calls`]. [`Cdrs::query`] pages newest first with an opaque keyset
//!   cursor, filtered by start time, user (caller or callee) and [`Disposition`]; times
//!   are Unix milliseconds. Records share the bindings' writer and group commit, so a
//!   record is as durable as a binding once its future resolves.
//!
//! Invariants:
//!
//! - A write's future resolves only after its transaction is committed durably. For
//!   SQLite that is WAL mode with `synchronous=FULL` (the WAL is fsynced at each commit),
//!   so a binding that made a REGISTER answer 200 survives `kill -9` and power loss.
//!   Group commit keeps this cheap: the writer thread commits every queued write in one
//!   transaction, each in its own savepoint so one failing write fails alone.
//! - Plaintext passwords never leave the calling task: they are hashed before a write is
//!   queued, and only the HA1 values reach a backend.
//! - No input panics; bad input is [`StoreError::Invalid`].
//! - Database work never runs on the caller's executor: SQLite runs on the store's own
//!   threads, one writer and one reader, and futures only wait on channels.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

mod cdr;
mod directory;
mod error;
mod location;
mod sqlite;

pub use cdr::{CallRecord, CdrFilter, CdrOp, CdrPage, Cdrs, Disposition, HangupSide};
pub use directory::{ha1, DigestAlgorithm, Directory, Domain, User};
pub use error::{BackendKind, Entity, StoreError};
pub use location::{Binding, BindingIdentity, BindingOp, Location};
pub use sqlite::{SqliteConfig, SqliteStore, Synchronous, WriterStats};

/// The future every storage method returns: boxed so that the traits stay object safe
/// (`Arc<dyn Directory>`, `Arc<dyn Location>`, `Arc<dyn Cdrs>`).
pub use futures::future::BoxFuture;
