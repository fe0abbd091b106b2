//! The call records' SQL. Records and filters arrive validated.
//!
//! A query is one statement built from the filter's conditions, so that each variant
//! uses its own index: `cdrs_by_start`, or `cdrs_by_disposition` (a rare disposition
//! would otherwise scan the history), and for a user the newest matches of
//! `cdrs_by_caller` and of `cdrs_by_callee`, merged. Paging is by keyset on
//! `(started_at, id)`, which every one of those indexes ends with.

use rusqlite::types::{Type, Value};
use rusqlite::{params, params_from_iter, Connection, Row};

use super::sqlite_error;
use crate::cdr::{CallRecord, CdrFilter, CdrOp, CdrPage, Cursor, Disposition, HangupSide};
use crate::error::StoreError;

const COLUMNS: &str = "id, call_id, caller, callee, request_uri, source, transport, \
                       started_at, answered_at, ended_at, disposition, status, hangup, node";

pub(super) fn record(conn: &Connection, ops: &[CdrOp]) -> Result<(), StoreError> {
    for op in ops {
        match op {
            CdrOp::Put(record) => put(conn, record)?,
            CdrOp::End {
                id,
                ended_at_ms,
                hangup,
            } => end(conn, id, *ended_at_ms, *hangup)?,
        }
    }
    Ok(())
}

fn put(conn: &Connection, r: &CallRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO cdrs (id, call_id, caller, callee, request_uri, source, transport,
             started_at, answered_at, ended_at, disposition, status, hangup, node)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (id) DO UPDATE SET
             call_id = excluded.call_id,
             caller = excluded.caller,
             callee = excluded.callee,
             request_uri = excluded.request_uri,
             source = excluded.source,
             transport = excluded.transport,
             started_at = excluded.started_at,
             answered_at = excluded.answered_at,
             ended_at = excluded.ended_at,
             disposition = excluded.disposition,
             status = excluded.status,
             hangup = excluded.hangup,
             node = excluded.node",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            r.id,
            r.call_id,
            r.caller,
            r.callee,
            r.request_uri,
            r.source,
            r.transport,
            r.started_at_ms,
            r.answered_at_ms,
            r.ended_at_ms,
            r.disposition.as_str(),
            r.status,
            r.hangup.map(HangupSide::as_str),
            r.node,
        ])
    })
    .map_err(sqlite_error)?;
    Ok(())
}

/// Sets only the end of an open call: of the indexes, only the partial `cdrs_open`
/// changes (the call leaves it).
fn end(
    conn: &Connection,
    id: &str,
    ended_at_ms: i64,
    hangup: HangupSide,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE cdrs SET ended_at = ?2, hangup = ?3
         WHERE id = ?1 AND answered_at IS NOT NULL AND ended_at IS NULL",
    )
    .and_then(|mut stmt| stmt.execute(params![id, ended_at_ms, hangup.as_str()]))
    .map_err(sqlite_error)?;
    Ok(())
}

fn decode_error(column: usize, what: &str, value: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        Type::Text,
        format!("unknown {what} {value:?}").into(),
    )
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<CallRecord> {
    let disposition: String = row.get(10)?;
    let disposition = Disposition::parse(&disposition)
        .ok_or_else(|| decode_error(10, "disposition", disposition))?;
    let hangup = row
        .get::<_, Option<String>>(12)?
        .map(|side| HangupSide::parse(&side).ok_or_else(|| decode_error(12, "hangup side", side)))
        .transpose()?;
    Ok(CallRecord {
        id: row.get(0)?,
        call_id: row.get(1)?,
        caller: row.get(2)?,
        callee: row.get(3)?,
        request_uri: row.get(4)?,
        source: row.get(5)?,
        transport: row.get(6)?,
        started_at_ms: row.get(7)?,
        answered_at_ms: row.get(8)?,
        ended_at_ms: row.get(9)?,
        disposition,
        status: row.get(11)?,
        hangup,
        node: row.get(13)?,
    })
}

pub(super) fn open_calls(conn: &Connection, node: &str) -> Result<Vec<CallRecord>, StoreError> {
    // The WHERE terms are those of the partial index `cdrs_open`.
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM cdrs
             WHERE node = ?1 AND answered_at IS NOT NULL AND ended_at IS NULL
             ORDER BY started_at, id"
        ))
        .map_err(sqlite_error)?;
    let rows = stmt
        .query_map([node], record_from_row)
        .map_err(sqlite_error)?;
    rows.collect::<Result<_, _>>().map_err(sqlite_error)
}

/// The conditions of one filter as SQL, with their values in order.
struct Conditions {
    sql: String,
    values: Vec<Value>,
}

impl Conditions {
    fn new() -> Self {
        Self {
            sql: String::new(),
            values: Vec::new(),
        }
    }

    /// Adds `AND <clause>`, in which each `?` takes the next of `values`.
    fn and(&mut self, clause: &str, values: impl IntoIterator<Item = Value>) {
        self.sql.push_str(" AND ");
        self.sql.push_str(clause);
        self.values.extend(values);
    }
}

pub(super) fn query(
    conn: &Connection,
    filter: &CdrFilter,
    cursor: Option<&Cursor>,
) -> Result<CdrPage, StoreError> {
    let page_size = filter.page_size();
    // One more than the page: whether it exists says whether there is a next page.
    let fetch = i64::from(page_size).saturating_add(1);

    let mut common = Conditions::new();
    if let Some(from) = filter.from_ms {
        common.and("started_at >= ?", [Value::Integer(from)]);
    }
    if let Some(to) = filter.to_ms {
        common.and("started_at < ?", [Value::Integer(to)]);
    }
    if let Some(disposition) = filter.disposition {
        common.and(
            "disposition = ?",
            [Value::Text(disposition.as_str().into())],
        );
    }
    if let Some(cursor) = cursor {
        common.and(
            "(started_at, id) < (?, ?)",
            [
                Value::Integer(cursor.started_at_ms),
                Value::Text(cursor.id.clone()),
            ],
        );
    }
    const ORDER: &str = "ORDER BY started_at DESC, id DESC LIMIT ?";
    let (sql, values) = match &filter.user {
        None => (
            format!("SELECT {COLUMNS} FROM cdrs WHERE 1{} {ORDER}", common.sql),
            common
                .values
                .into_iter()
                .chain([Value::Integer(fetch)])
                .collect::<Vec<_>>(),
        ),
        Some(user) => {
            // The newest matches as caller, and as callee of someone else (a call to
            // oneself counts once), each from its own index; then the newest of both.
            let user = Value::Text(user.clone());
            let sql = format!(
                "SELECT {COLUMNS} FROM (
                     SELECT * FROM (SELECT {COLUMNS} FROM cdrs WHERE caller = ?{c} {ORDER})
                     UNION ALL
                     SELECT * FROM (SELECT {COLUMNS} FROM cdrs
                                    WHERE callee = ? AND caller <> ?{c} {ORDER})
                 ) {ORDER}",
                c = common.sql,
            );
            let mut values = vec![user.clone()];
            values.extend(common.values.iter().cloned());
            values.push(Value::Integer(fetch));
            values.extend([user.clone(), user]);
            values.extend(common.values);
            values.push(Value::Integer(fetch));
            values.push(Value::Integer(fetch));
            (sql, values)
        }
    };
    let mut stmt = conn.prepare_cached(&sql).map_err(sqlite_error)?;
    let rows = stmt
        .query_map(params_from_iter(values), record_from_row)
        .map_err(sqlite_error)?;
    let mut records = rows.collect::<Result<Vec<_>, _>>().map_err(sqlite_error)?;
    let page_len = usize::try_from(page_size).unwrap_or(usize::MAX);
    let next_cursor = if records.len() > page_len {
        records.truncate(page_len);
        records.last().map(|r| Cursor::after(r).encode())
    } else {
        None
    };
    Ok(CdrPage {
        records,
        next_cursor,
    })
}
