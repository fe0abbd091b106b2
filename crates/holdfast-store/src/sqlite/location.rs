//! The location service's SQL. Operations arrive validated.

use rusqlite::types::Type;
use rusqlite::{params, Connection, Row};

use super::group_commit::{in_savepoint, PART};
use super::sqlite_error;
use crate::error::StoreError;
use crate::location::{Binding, BindingIdentity, BindingOp};

/// The `identity` column: `c:<contact>` or `i:<reg-id or ->:<instance>`. The prefix
/// keeps the two kinds apart, and the reg-id (digits or `-`) ends at the first `:`, so
/// the encoding is unambiguous whatever the strings hold.
fn identity_key(binding: &Binding) -> String {
    match binding.identity() {
        BindingIdentity::Contact(contact) => format!("c:{contact}"),
        BindingIdentity::Instance {
            instance,
            reg_id: Some(reg_id),
        } => format!("i:{reg_id}:{instance}"),
        BindingIdentity::Instance {
            instance,
            reg_id: None,
        } => format!("i:-:{instance}"),
    }
}

/// A flow id's bits as SQLite's signed 64-bit integer, and back: every `u64` round-trips.
fn connection_to_sql(connection: u64) -> i64 {
    i64::from_ne_bytes(connection.to_ne_bytes())
}

fn connection_from_sql(connection: i64) -> u64 {
    u64::from_ne_bytes(connection.to_ne_bytes())
}

pub(super) fn apply(conn: &Connection, ops: &[BindingOp]) -> Result<(), StoreError> {
    for op in ops {
        match op {
            BindingOp::Upsert(binding) => upsert(conn, binding)?,
            BindingOp::Remove { aor, contact } => {
                conn.prepare_cached("DELETE FROM bindings WHERE aor = ?1 AND contact = ?2")
                    .and_then(|mut stmt| stmt.execute([aor, contact]))
                    .map_err(sqlite_error)?;
            }
            BindingOp::RemoveAll { aor } => {
                conn.prepare_cached("DELETE FROM bindings WHERE aor = ?1")
                    .and_then(|mut stmt| stmt.execute([aor]))
                    .map_err(sqlite_error)?;
            }
        }
    }
    Ok(())
}

/// Applies each change (one REGISTER's ops) so that a change that was refused before
/// it got here, or fails, is not applied and fails alone. Fails as a whole only when
/// the transaction itself is lost.
///
/// The changes are first applied together in one savepoint: a change of the location
/// service fails only when the database does, and a savepoint per change copies every
/// page it touches into the statement journal first (a third of the writer's work
/// under a REGISTER load). Only when one of them fails is that savepoint rolled back
/// and each change applied again in a savepoint of its own.
pub(super) fn apply_each(
    conn: &Connection,
    changes: Vec<Result<Vec<BindingOp>, StoreError>>,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let together = in_savepoint(conn, PART, |conn| {
        changes
            .iter()
            .try_for_each(|change| change.as_ref().map_or(Ok(()), |ops| apply(conn, ops)))
    })?;
    if together.is_ok() {
        return Ok(changes
            .into_iter()
            .map(|change| change.map(|_| ()))
            .collect());
    }
    changes
        .into_iter()
        .map(|change| match change {
            Ok(ops) => in_savepoint(conn, PART, |conn| apply(conn, &ops)),
            Err(refused) => Ok(Err(refused)),
        })
        .collect()
}

fn upsert(conn: &Connection, binding: &Binding) -> Result<(), StoreError> {
    let path = serde_json::to_string(&binding.path).map_err(|e| StoreError::Backend {
        kind: crate::error::BackendKind::Database,
        message: format!("encoding Path: {e}"),
    })?;
    conn.prepare_cached(
        "INSERT INTO bindings (aor, identity, contact, instance, reg_id, q, expires_at,
             call_id, cseq, path, transport, source, local, connection, user_agent, node,
             updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
         ON CONFLICT (aor, identity) DO UPDATE SET
             contact = excluded.contact,
             instance = excluded.instance,
             reg_id = excluded.reg_id,
             q = excluded.q,
             expires_at = excluded.expires_at,
             call_id = excluded.call_id,
             cseq = excluded.cseq,
             path = excluded.path,
             transport = excluded.transport,
             source = excluded.source,
             local = excluded.local,
             connection = excluded.connection,
             user_agent = excluded.user_agent,
             node = excluded.node,
             updated_at = excluded.updated_at",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            binding.aor,
            identity_key(binding),
            binding.contact,
            binding.instance,
            binding.reg_id,
            binding.q,
            binding.expires_at,
            binding.call_id,
            binding.cseq,
            path,
            binding.transport,
            binding.source,
            binding.local,
            binding.connection.map(connection_to_sql),
            binding.user_agent,
            binding.node,
            binding.updated_at,
        ])
    })
    .map_err(sqlite_error)?;
    Ok(())
}

fn binding_from_row(row: &Row<'_>) -> rusqlite::Result<Binding> {
    let path: String = row.get(8)?;
    let path = serde_json::from_str(&path)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(8, Type::Text, Box::new(e)))?;
    Ok(Binding {
        aor: row.get(0)?,
        contact: row.get(1)?,
        instance: row.get(2)?,
        reg_id: row.get(3)?,
        q: row.get(4)?,
        expires_at: row.get(5)?,
        call_id: row.get(6)?,
        cseq: row.get(7)?,
        path,
        transport: row.get(9)?,
        source: row.get(10)?,
        local: row.get(11)?,
        connection: row.get::<_, Option<i64>>(12)?.map(connection_from_sql),
        user_agent: row.get(13)?,
        node: row.get(14)?,
        updated_at: row.get(15)?,
    })
}

pub(super) fn load_unexpired(conn: &Connection, now: i64) -> Result<Vec<Binding>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT aor, contact, instance, reg_id, q, expires_at, call_id, cseq, path,
                    transport, source, local, connection, user_agent, node, updated_at
             FROM bindings
             WHERE expires_at > ?1
             ORDER BY aor, q DESC, contact",
        )
        .map_err(sqlite_error)?;
    let rows = stmt
        .query_map([now], binding_from_row)
        .map_err(sqlite_error)?;
    rows.collect::<Result<_, _>>().map_err(sqlite_error)
}

pub(super) fn purge_expired(conn: &Connection, now: i64) -> Result<u64, StoreError> {
    let purged = conn
        .prepare_cached("DELETE FROM bindings WHERE expires_at <= ?1")
        .and_then(|mut stmt| stmt.execute([now]))
        .map_err(sqlite_error)?;
    Ok(u64::try_from(purged).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_ids_round_trip() {
        for id in [0, 1, u64::from(u32::MAX), i64::MAX as u64, u64::MAX] {
            assert_eq!(connection_from_sql(connection_to_sql(id)), id);
        }
    }
}
