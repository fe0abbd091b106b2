//! Call records (CDRs): one row per call attempt, written by the proxy when the call is
//! answered and again when it ends (or once, when it fails), read by the admin API, the
//! CLI and a restarted node.
//!
//! A record is keyed by [`CallRecord::id`], which the proxy makes unique per attempt;
//! writing a record with a known id replaces it ([`CdrOp::Put`]); the end of an open
//! call touches only its end ([`CdrOp::End`]). Times are Unix
//! milliseconds. Queries go newest first and page with an opaque keyset cursor, so a
//! page costs the same wherever it is in the history and records written meanwhile
//! neither repeat nor hide others.

use std::fmt;

use futures::future::BoxFuture;

use crate::error::StoreError;

/// How a call attempt ended, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// A 2xx reached the caller: the call was (or still is) up.
    Answered,
    /// The callee was busy (486, 600).
    Busy,
    /// Nobody answered in time (408, 480, or the proxy's no-answer timer).
    NoAnswer,
    /// The caller hung up before an answer (CANCEL).
    Cancelled,
    /// Any other final failure.
    Failed,
}

impl Disposition {
    /// Every disposition, in declaration order.
    pub const ALL: [Self; 5] = [
        Self::Answered,
        Self::Busy,
        Self::NoAnswer,
        Self::Cancelled,
        Self::Failed,
    ];

    /// The stored and displayed name: `answered`, `busy`, `no_answer`, `cancelled`,
    /// `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Busy => "busy",
            Self::NoAnswer => "no_answer",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    /// The disposition named `s` (exactly as [`as_str`](Self::as_str) writes it).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who ended an answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HangupSide {
    /// The caller sent the BYE.
    Caller,
    /// The callee sent the BYE.
    Callee,
    /// The node ended it (shutdown, a dead flow, a session timer).
    Node,
}

impl HangupSide {
    /// Every side, in declaration order.
    pub const ALL: [Self; 3] = [Self::Caller, Self::Callee, Self::Node];

    /// The stored and displayed name: `caller`, `callee`, `node`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Callee => "callee",
            Self::Node => "node",
        }
    }

    /// The side named `s` (exactly as [`as_str`](Self::as_str) writes it).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

impl fmt::Display for HangupSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One call attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Unique per call attempt (made by the proxy); the key a [`CdrOp::Put`] replaces.
    pub id: String,
    /// The INVITE's Call-ID.
    pub call_id: String,
    /// The caller's address of record, `user@domain`.
    pub caller: String,
    /// The callee's address of record, `user@domain`.
    pub callee: String,
    /// The INVITE's Request-URI as received.
    pub request_uri: String,
    /// The caller's source address, `ip:port`.
    pub source: String,
    /// The transport the INVITE arrived on (`udp`, `tcp`, `tls`, `ws`, `wss`).
    pub transport: String,
    /// When the INVITE arrived, Unix milliseconds.
    pub started_at_ms: i64,
    /// When the 2xx was sent to the caller, Unix milliseconds.
    pub answered_at_ms: Option<i64>,
    /// When the call ended, Unix milliseconds; `None` while an answered call is still
    /// up ("open").
    pub ended_at_ms: Option<i64>,
    /// How it ended (or `Answered` while it is up).
    pub disposition: Disposition,
    /// The final status sent to the caller (200 when answered).
    pub status: u16,
    /// Who hung up an answered call.
    pub hangup: Option<HangupSide>,
    /// The cluster node that handled the call.
    pub node: String,
}

impl CallRecord {
    /// How long the call was up: end minus answer, in milliseconds; 0 when it was not
    /// answered or is still up (or when the times are inconsistent).
    pub fn duration_ms(&self) -> i64 {
        match (self.answered_at_ms, self.ended_at_ms) {
            (Some(answered), Some(ended)) => ended.saturating_sub(answered).max(0),
            _ => 0,
        }
    }

    /// Whether this is an answered call with no end yet.
    pub fn is_open(&self) -> bool {
        self.answered_at_ms.is_some() && self.ended_at_ms.is_none()
    }
}

/// One change to the call records.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
// Ops are short-lived and mostly Puts: boxing the record would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum CdrOp {
    /// Adds the record, or replaces the one with the same [`id`](CallRecord::id).
    Put(CallRecord),
    /// Ends the open call `id` (answered, not yet ended): sets its end time and which
    /// side hung up, nothing else. Cheaper than a [`Put`](CdrOp::Put) of the whole
    /// record: the indexes on the other fields are not touched. A record that is not
    /// open (unknown, never answered or already ended) is left as it is.
    End {
        id: String,
        ended_at_ms: i64,
        hangup: HangupSide,
    },
}

/// Which records a [`Cdrs::query`] returns. Every condition set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CdrFilter {
    /// Only records with `started_at_ms >= from_ms`.
    pub from_ms: Option<i64>,
    /// Only records with `started_at_ms < to_ms`.
    pub to_ms: Option<i64>,
    /// Only records whose caller or callee is exactly this address of record.
    pub user: Option<String>,
    /// Only records with this disposition.
    pub disposition: Option<Disposition>,
    /// Continue after the page that returned this [`CdrPage::next_cursor`].
    pub cursor: Option<String>,
    /// The most records per page: 0 means [`CdrFilter::DEFAULT_LIMIT`], and more than
    /// [`CdrFilter::MAX_LIMIT`] means that.
    pub limit: u32,
}

impl CdrFilter {
    /// The page size when `limit` is 0.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// The largest page.
    pub const MAX_LIMIT: u32 = 1000;

    /// The page size this filter asks for, after the default and the cap.
    pub fn page_size(&self) -> u32 {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }

    /// Checks the filter as [`Cdrs::query`] does, without a store: the cursor must be
    /// one a page gave out, `to_ms` must not be before `from_ms`, and `user` must not
    /// be empty. The error is [`StoreError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), StoreError> {
        validate_filter(self).map(|_| ())
    }
}

/// One page of records, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrPage {
    /// The records, by `started_at_ms` then `id`, both descending.
    pub records: Vec<CallRecord>,
    /// Present when more records match: pass it as [`CdrFilter::cursor`] (with the same
    /// other conditions) for the next page.
    pub next_cursor: Option<String>,
}

/// The call-record store.
pub trait Cdrs: Send + Sync {
    /// Applies `ops` in order, all or none. The future resolves once they are durable
    /// (group commit, on the same writer as the bindings).
    fn record(&self, ops: Vec<CdrOp>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The answered calls of `node` with no end yet, oldest first: what a restarted
    /// node reloads so that the BYE still closes them.
    fn open_calls(&self, node: &str) -> BoxFuture<'_, Result<Vec<CallRecord>, StoreError>>;

    /// One page of the records that match `filter`, newest first (`started_at_ms`
    /// descending, then `id` descending), paged by keyset. A cursor that no page gave
    /// out is [`StoreError::Invalid`].
    fn query(&self, filter: CdrFilter) -> BoxFuture<'_, Result<CdrPage, StoreError>>;
}

pub(crate) fn validate_op(op: &CdrOp) -> Result<(), StoreError> {
    let invalid = |field, reason| Err(StoreError::Invalid { field, reason });
    match op {
        CdrOp::Put(record) => {
            if record.id.is_empty() {
                return invalid("id", "empty");
            }
            if record.call_id.is_empty() {
                return invalid("call_id", "empty");
            }
            Ok(())
        }
        CdrOp::End { id, .. } if id.is_empty() => invalid("id", "empty"),
        CdrOp::End { .. } => Ok(()),
    }
}

/// Where a page ended: the last record's start and id. The cursor is
/// `<started_at_ms>.<id as lower-case hex>`, which needs no escaping in a URL and
/// keeps any id byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) started_at_ms: i64,
    pub(crate) id: String,
}

impl Cursor {
    pub(crate) fn after(record: &CallRecord) -> Self {
        Self {
            started_at_ms: record.started_at_ms,
            id: record.id.clone(),
        }
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = format!("{}.", self.started_at_ms);
        for byte in self.id.bytes() {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }

    pub(crate) fn decode(cursor: &str) -> Result<Self, StoreError> {
        const BAD: StoreError = StoreError::Invalid {
            field: "cursor",
            reason: "not a cursor that a page of call records gave out",
        };
        let (started, hex) = cursor.split_once('.').ok_or(BAD)?;
        let started_at_ms = started.parse().map_err(|_| BAD)?;
        if hex.is_empty() || hex.len() % 2 != 0 {
            return Err(BAD);
        }
        let bytes = hex
            .as_bytes()
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or(BAD)
            })
            .collect::<Result<Vec<u8>, _>>()?;
        let id = String::from_utf8(bytes).map_err(|_| BAD)?;
        let decoded = Self { started_at_ms, id };
        // One spelling per position: no sign, leading zero or upper-case digit that
        // the parsers above would accept.
        if decoded.encode() != cursor {
            return Err(BAD);
        }
        Ok(decoded)
    }
}

/// Checks a filter and decodes its cursor.
pub(crate) fn validate_filter(filter: &CdrFilter) -> Result<Option<Cursor>, StoreError> {
    if let (Some(from), Some(to)) = (filter.from_ms, filter.to_ms) {
        if from > to {
            return Err(StoreError::Invalid {
                field: "to_ms",
                reason: "before from_ms",
            });
        }
    }
    if filter.user.as_deref() == Some("") {
        return Err(StoreError::Invalid {
            field: "user",
            reason: "empty (omit it instead)",
        });
    }
    filter.cursor.as_deref().map(Cursor::decode).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in Disposition::ALL {
            assert_eq!(Disposition::parse(d.as_str()), Some(d));
        }
        for h in HangupSide::ALL {
            assert_eq!(HangupSide::parse(h.as_str()), Some(h));
        }
        assert_eq!(Disposition::parse("Answered"), None);
        assert_eq!(Disposition::parse("no-answer"), None);
        assert_eq!(HangupSide::parse(""), None);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        for (started_at_ms, id) in [
            (0, "a"),
            (-5, "x.y.z"),
            (i64::MAX, "\u{0}é\u{10ffff}"),
            (i64::MIN, "id with spaces"),
        ] {
            let cursor = Cursor {
                started_at_ms,
                id: id.to_owned(),
            };
            let encoded = cursor.encode();
            assert!(encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
            assert_eq!(Cursor::decode(&encoded), Ok(cursor));
        }
        for bad in [
            "",
            ".",
            "12",
            "12.",
            "x.61",
            "12.6",
            "12.zz",
            "12.+1",
            "12.ff",
            "99999999999999999999.61",
            "12.é1",
            "+12.61",
            "012.61",
            "12.6A",
        ] {
            assert!(
                matches!(
                    Cursor::decode(bad),
                    Err(StoreError::Invalid {
                        field: "cursor",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn duration_is_end_minus_answer() {
        let mut record = CallRecord {
            id: "1".into(),
            call_id: "c".into(),
            caller: "a@x".into(),
            callee: "b@x".into(),
            request_uri: "sip:b@x".into(),
            source: "192.0.2.1:5060".into(),
            transport: "udp".into(),
            started_at_ms: 1_000,
            answered_at_ms: None,
            ended_at_ms: Some(9_000),
            disposition: Disposition::NoAnswer,
            status: 480,
            hangup: None,
            node: "n".into(),
        };
        assert_eq!(record.duration_ms(), 0);
        record.answered_at_ms = Some(3_000);
        assert_eq!(record.duration_ms(), 6_000);
        record.ended_at_ms = None;
        assert_eq!(record.duration_ms(), 0);
        assert!(record.is_open());
        record.answered_at_ms = Some(i64::MIN);
        record.ended_at_ms = Some(i64::MAX);
        assert_eq!(record.duration_ms(), i64::MAX);
        record.answered_at_ms = Some(10);
        record.ended_at_ms = Some(5);
        assert_eq!(record.duration_ms(), 0);
    }
}
