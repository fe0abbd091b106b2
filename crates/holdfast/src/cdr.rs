//! Call history as the operator sees it. The admin API's `GET /api/v1/cdrs` and the
//! CLI's `holdfast cdrs` share this module: the query parameters and their checks, the
//! query itself, a record's JSON, and the CLI's table.
//!
//! Times are given as RFC 3339 (`2024-05-01T08:00:00Z`, any offset) or as Unix
//! milliseconds, and shown as both: `started_at_ms` and `started_at` (UTC, to the
//! millisecond).

use std::fmt;

use holdfast_store::{CallRecord, CdrFilter, CdrPage, Cdrs, Disposition, StoreError};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The parameters of one query, as text exactly as given (`None`: not given). The
/// CLI's flags are the same names.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CdrQuery {
    /// Only calls that started at or after this time: RFC 3339
    /// (2024-05-01T08:00:00Z) or Unix milliseconds.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Only calls that started before this time (same forms as --from).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Only calls from or to this address of record.
    #[arg(long, value_name = "USER@DOMAIN")]
    pub user: Option<String>,
    /// Only calls that ended so: answered, busy, no_answer, cancelled, failed.
    #[arg(long)]
    pub disposition: Option<String>,
    /// Records per page, 1 to 1000 [default: 100].
    #[arg(long, value_name = "N")]
    pub limit: Option<String>,
    /// Continue after the page that printed this cursor.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// A parameter that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// The parameter's name in the API (`from`, `limit`, …); the CLI's flag is
    /// `--` followed by it.
    pub param: &'static str,
    pub message: String,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.param, self.message)
    }
}

/// Why a query failed: a parameter, or the store.
#[derive(Debug)]
pub enum QueryError {
    Param(ParamError),
    Store(StoreError),
}

impl CdrQuery {
    /// The parameter names, in the order the API documents them.
    pub const PARAMS: [&'static str; 6] = ["from", "to", "user", "disposition", "limit", "cursor"];

    /// The parameter named `name`, for the API's query string; `None` for an unknown
    /// name.
    pub fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "from" => &mut self.from,
            "to" => &mut self.to,
            "user" => &mut self.user,
            "disposition" => &mut self.disposition,
            "limit" => &mut self.limit,
            "cursor" => &mut self.cursor,
            _ => return None,
        })
    }

    /// Checks every parameter and builds the store's filter. An empty value counts as
    /// not given (what an HTML form sends for an empty field).
    pub fn filter(&self) -> Result<CdrFilter, ParamError> {
        fn given(value: &Option<String>) -> Option<&str> {
            value.as_deref().filter(|v| !v.is_empty())
        }
        let from_ms = given(&self.from)
            .map(|v| parse_time("from", v))
            .transpose()?;
        let to_ms = given(&self.to).map(|v| parse_time("to", v)).transpose()?;
        if let (Some(from), Some(to)) = (from_ms, to_ms) {
            if from > to {
                return Err(ParamError {
                    param: "to",
                    message: "is before from".into(),
                });
            }
        }
        let user = given(&self.user).map(parse_user).transpose()?;
        let disposition = given(&self.disposition)
            .map(|v| {
                Disposition::parse(v).ok_or_else(|| ParamError {
                    param: "disposition",
                    message: format!(
                        "expected one of {}, got {v:?}",
                        Disposition::ALL.map(Disposition::as_str).join(", ")
                    ),
                })
            })
            .transpose()?;
        let limit = given(&self.limit)
            .map(|v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=CdrFilter::MAX_LIMIT).contains(n))
                    .ok_or_else(|| ParamError {
                        param: "limit",
                        message: format!(
                            "expected a whole number from 1 to {}, got {v:?}",
                            CdrFilter::MAX_LIMIT
                        ),
                    })
            })
            .transpose()?
            .unwrap_or(CdrFilter::DEFAULT_LIMIT);
        let filter = CdrFilter {
            from_ms,
            to_ms,
            user,
            disposition,
            cursor: given(&self.cursor).map(str::to_owned),
            limit,
        };
        // What is left to check is the cursor.
        filter.validate().map_err(|e| ParamError {
            param: match &e {
                StoreError::Invalid { field: "to_ms", .. } => "to",
                StoreError::Invalid { field: "user", .. } => "user",
                _ => "cursor",
            },
            message: match e {
                StoreError::Invalid { reason, .. } => reason.to_owned(),
                other => other.to_string(),
            },
        })?;
        Ok(filter)
    }

    /// Runs the query on `store`.
    pub async fn run(&self, store: &dyn Cdrs) -> Result<CdrPage, QueryError> {
        let filter = self.filter().map_err(QueryError::Param)?;
        store.query(filter).await.map_err(QueryError::Store)
    }
}

/// `value` as Unix milliseconds: an integer is taken as milliseconds, anything else
/// must be an RFC 3339 timestamp (truncated to the millisecond).
fn parse_time(param: &'static str, value: &str) -> Result<i64, ParamError> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    OffsetDateTime::parse(value, &Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok())
        .ok_or_else(|| ParamError {
            param,
            message: format!(
                "expected an RFC 3339 time such as 2024-05-01T08:00:00Z, or Unix \
                 milliseconds, got {value:?}"
            ),
        })
}

/// An address of record, `user@domain`, with the domain lower-cased as the registrar
/// and the proxy store it.
fn parse_user(value: &str) -> Result<String, ParamError> {
    crate::admin::split_aor(value)
        .map(|(user, domain)| format!("{user}@{}", domain.to_ascii_lowercase()))
        .ok_or_else(|| ParamError {
            param: "user",
            message: format!("expected an address of record user@domain, got {value:?}"),
        })
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds
/// (`2023-11-14T22:13:20.000Z`); `None` outside the years 0000–9999.
pub fn rfc3339(ms: i64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    ))
}

/// One record as the API and `holdfast cdrs --json` show it.
pub fn record_json(r: &CallRecord) -> Value {
    json!({
        "id": r.id,
        "call_id": r.call_id,
        "caller": r.caller,
        "callee": r.callee,
        "request_uri": r.request_uri,
        "source": r.source,
        "transport": r.transport,
        "started_at_ms": r.started_at_ms,
        "started_at": rfc3339(r.started_at_ms),
        "answered_at_ms": r.answered_at_ms,
        "answered_at": r.answered_at_ms.and_then(rfc3339),
        "ended_at_ms": r.ended_at_ms,
        "ended_at": r.ended_at_ms.and_then(rfc3339),
        "duration_ms": r.duration_ms(),
        "open": r.is_open(),
        "disposition": r.disposition.as_str(),
        "status": r.status,
        "hangup": r.hangup.map(|h| h.as_str()),
        "node": r.node,
    })
}

/// A page as the API answers it.
pub fn page_json(page: &CdrPage) -> Value {
    json!({
        "records": page.records.iter().map(record_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })
}

/// `H:MM:SS` of talk time; `up` for a call still up, `-` for one never answered.
fn duration(r: &CallRecord) -> String {
    if r.is_open() {
        return "up".into();
    }
    if r.answered_at_ms.is_none() {
        return "-".into();
    }
    let secs = r.duration_ms() / 1000;
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `text` with each control character (which a peer may have put in a header, and which
/// a terminal would obey) shown as `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A page as the CLI's aligned table, newest first, with the command for the next page.
pub fn table(page: &CdrPage) -> String {
    const HEADER: [&str; 8] = [
        "START (UTC)",
        "CALLER",
        "CALLEE",
        "DISPOSITION",
        "STATUS",
        "DURATION",
        "HANGUP",
        "CALL-ID",
    ];
    if page.records.is_empty() {
        return "no call records".into();
    }
    let rows: Vec<[String; 8]> = page
        .records
        .iter()
        .map(|r| {
            [
                rfc3339(r.started_at_ms).unwrap_or_else(|| r.started_at_ms.to_string()),
                printable(&r.caller),
                printable(&r.callee),
                r.disposition.as_str().to_owned(),
                r.status.to_string(),
                duration(r),
                r.hangup.map_or("-", |h| h.as_str()).to_owned(),
                printable(&r.call_id),
            ]
        })
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 8]| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out
    };
    let mut lines = vec![line(&HEADER.map(str::to_owned))];
    lines.extend(rows.iter().map(line));
    if let Some(cursor) = &page.next_cursor {
        lines.push(format!("next page: --cursor {cursor}"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> CdrQuery {
        let mut q = CdrQuery::default();
        for (name, value) in pairs {
            *q.slot(name).unwrap() = Some((*value).to_owned());
        }
        q
    }

    #[test]
    fn times_parse_from_rfc3339_and_unix_milliseconds() {
        for (text, ms) in [
            ("1700000000000", 1_700_000_000_000),
            ("-1", -1),
            ("2023-11-14T22:13:20Z", 1_700_000_000_000),
            ("2023-11-14T22:13:20.123456Z", 1_700_000_000_123),
            ("2023-11-15T00:13:20+02:00", 1_700_000_000_000),
            ("1969-12-31T23:59:59.9995Z", -1),
        ] {
            let filter = query(&[("from", text)]).filter().unwrap();
            assert_eq!(filter.from_ms, Some(ms), "{text}");
        }
        for bad in [
            "yesterday",
            "2023-11-14",
            "2023-11-14 22:13:20",
            "1.5",
            "2023-13-01T00:00:00Z",
        ] {
            let error = query(&[("to", bad)]).filter().unwrap_err();
            assert_eq!(error.param, "to", "{bad}");
            assert!(error.message.contains("RFC 3339"), "{error}");
        }
    }

    #[test]
    fn every_parameter_is_checked() {
        let cases = [
            (("from", "5"), ("to", "4"), "to"),
            (("user", "alice"), ("limit", "1"), "user"),
            (("user", "@example.com"), ("limit", "1"), "user"),
            (("disposition", "Answered"), ("limit", "1"), "disposition"),
            (("limit", "0"), ("user", "a@b"), "limit"),
            (("limit", "1001"), ("user", "a@b"), "limit"),
            (("limit", "ten"), ("user", "a@b"), "limit"),
            (("cursor", "12.6"), ("user", "a@b"), "cursor"),
            (("cursor", "page-2"), ("limit", "5"), "cursor"),
        ];
        for (a, b, param) in cases {
            let error = query(&[a, b]).filter().unwrap_err();
            assert_eq!(error.param, param, "{a:?} {b:?}: {error}");
        }
        let filter = query(&[
            ("from", "1"),
            ("to", "1"),
            ("user", "Alice@Example.COM"),
            ("disposition", "no_answer"),
            ("limit", "1000"),
            ("cursor", "12.61"),
        ])
        .filter()
        .unwrap();
        assert_eq!(
            filter,
            CdrFilter {
                from_ms: Some(1),
                to_ms: Some(1),
                user: Some("Alice@example.com".into()),
                disposition: Some(Disposition::NoAnswer),
                cursor: Some("12.61".into()),
                limit: 1000,
            }
        );
        // Empty values are not given; no limit is the default.
        let filter = query(&[("from", ""), ("user", ""), ("cursor", "")])
            .filter()
            .unwrap();
        assert_eq!(
            filter,
            CdrFilter {
                limit: CdrFilter::DEFAULT_LIMIT,
                ..CdrFilter::default()
            }
        );
        assert!(CdrQuery::default().slot("offset").is_none());
    }

    #[test]
    fn times_format_as_utc_with_milliseconds() {
        assert_eq!(
            rfc3339(1_700_000_000_123).as_deref(),
            Some("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(rfc3339(-1).as_deref(), Some("1969-12-31T23:59:59.999Z"));
        assert_eq!(rfc3339(i64::MAX), None);
        assert_eq!(rfc3339(i64::MIN), None);
    }

    #[test]
    fn the_table_shows_no_control_character() {
        let record = CallRecord {
            id: "1".into(),
            call_id: "evil\u{1b}[2J\r\ncall".into(),
            caller: "a\u{7}@x.test".into(),
            callee: "b@x.test".into(),
            request_uri: "sip:b@x.test".into(),
            source: "192.0.2.1:5060".into(),
            transport: "udp".into(),
            started_at_ms: i64::MAX,
            answered_at_ms: None,
            ended_at_ms: Some(i64::MAX),
            disposition: Disposition::Failed,
            status: 500,
            hangup: None,
            node: "n".into(),
        };
        let table = table(&CdrPage {
            records: vec![record],
            next_cursor: None,
        });
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert_eq!(table.lines().count(), 2, "{table}");
        assert!(table.contains("evil?[2J??call"), "{table}");
        assert!(
            table.contains(&i64::MAX.to_string()),
            "out of range: raw ms"
        );
    }
}
