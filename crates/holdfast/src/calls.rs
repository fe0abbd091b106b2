//! Call records: every INVITE the proxy takes (after authentication) leaves one
//! record, written through the store's group commit.
//!
//! - A call refused before forwarding (403 relay, 404, 480) is recorded at once.
//! - A forwarded call is recorded when its final response goes to the caller: as
//!   busy, no answer, cancelled or failed, or, when answered, as an *open* record
//!   (answer time, no end yet) that is durable while the call is up.
//! - The BYE closes an open record: end time, duration and which side hung up. The
//!   open records of this node are reloaded at start, so a call that was up across a
//!   crash or restart still gets its end when its BYE comes through.
//!
//! Writes leave each core shard in order on one channel; a writer task gathers them for
//! [`GATHER`] (a record is committed within that time plus one commit of being made),
//! folds the end of a call into its record when both are in the same batch (a short
//! call is then one row write, not two), and queues the batch on the store in order (an
//! open record is never overwritten by a stale one), letting commits overlap so that
//! records share group commits with bindings.
//!
//! Record ids are `<node>-<process id><sequence>` in hex: unique per node (the process
//! id is random per start), and rising within a run, so that new rows land together at
//! the end of the primary key instead of on a random page each.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use holdfast_core::proxy::Ending;
use holdfast_core::TransactionKey;
use holdfast_sip::Message;
use holdfast_store::{CallRecord, CdrOp, Cdrs, Disposition, HangupSide, SqliteStore};
use tokio::sync::mpsc;

use crate::proxy::{aor_of_uri, unix_ms};
use crate::shared::Peer;

/// What is known of a call attempt when it is admitted.
#[derive(Debug, Clone)]
pub struct CallStart {
    pub call_id: String,
    pub caller: String,
    pub callee: String,
    pub request_uri: String,
    pub source: String,
    pub transport: &'static str,
    pub started_at_ms: i64,
}

impl CallStart {
    /// The start of a call attempt for an out-of-dialog INVITE; `None` for anything
    /// else.
    pub fn new(request: &Message, peer: &Peer, caller: Option<&(String, String)>) -> Option<Self> {
        if request.method() != Some(&holdfast_sip::Method::Invite) {
            return None;
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let uri = request.request_uri()?;
        let callee = aor_of_uri(uri)
            .map(|(u, d)| format!("{u}@{d}"))
            .unwrap_or_else(|| text(uri.as_bytes()));
        let caller = caller
            .map(|(u, d)| format!("{u}@{d}"))
            .or_else(|| request.from().map(|f| text(f.uri.as_bytes())))
            .unwrap_or_default();
        Some(CallStart {
            call_id: request.call_id().map(|c| text(c)).unwrap_or_default(),
            caller,
            callee,
            request_uri: text(uri.as_bytes()),
            source: peer.remote.to_string(),
            transport: peer.transport.as_str(),
            started_at_ms: unix_ms(),
        })
    }
}

/// The disposition of a call that was not answered.
fn disposition(status: u16, ending: Ending) -> Disposition {
    match (ending, status) {
        (_, 200..=299) => Disposition::Answered,
        // 487 answers a CANCEL: the caller's (before or during admission).
        (Ending::Cancelled, _) | (_, 487) => Disposition::Cancelled,
        (Ending::NoAnswer, _) | (_, 408 | 480) => Disposition::NoAnswer,
        (_, 486 | 600 | 603) => Disposition::Busy,
        _ => Disposition::Failed,
    }
}

/// The call records of one core shard.
#[derive(Debug)]
pub struct Calls {
    node: String,
    metrics: Arc<crate::metrics::Metrics>,
    /// Forwarded INVITEs with no final response yet, by server transaction.
    attempts: HashMap<TransactionKey, CallStart>,
    /// Answered calls that are up, by Call-ID.
    up: HashMap<String, CallRecord>,
    writes: mpsc::UnboundedSender<CdrOp>,
}

impl Calls {
    /// Reloads this node's open calls, each into the core shard of its Call-ID (of
    /// `shards`), and starts the writer they share. Returns one `Calls` per shard.
    pub async fn start(
        store: Arc<SqliteStore>,
        node: String,
        metrics: Arc<crate::metrics::Metrics>,
        shards: usize,
    ) -> anyhow::Result<Vec<Calls>> {
        let open = store.open_calls(&node).await?;
        tracing::info!(open = open.len(), "open calls loaded");
        metrics
            .calls_up
            .store(open.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let (writes, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(store, rx));
        let mut all: Vec<Calls> = (0..shards.max(1))
            .map(|_| Calls {
                metrics: metrics.clone(),
                node: node.clone(),
                attempts: HashMap::new(),
                up: HashMap::new(),
                writes: writes.clone(),
            })
            .collect();
        let n = all.len();
        for record in open {
            let shard = crate::shared::shard_of(Some(record.call_id.as_bytes()), n);
            if let Some(calls) = all.get_mut(shard) {
                calls.up.insert(record.call_id.clone(), record);
            }
        }
        Ok(all)
    }

    /// Counts a call up (`true`) or down in holdfast_calls_up, which all shards share.
    fn count_up(&self, up: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if up {
            self.metrics.calls_up.fetch_add(1, Relaxed);
        } else {
            self.metrics.calls_up.fetch_sub(1, Relaxed);
        }
    }

    fn record(&self, start: CallStart, status: u16, disposition: Disposition) -> CallRecord {
        let now = unix_ms();
        let answered = disposition == Disposition::Answered;
        CallRecord {
            id: self.next_id(),
            call_id: start.call_id,
            caller: start.caller,
            callee: start.callee,
            request_uri: start.request_uri,
            source: start.source,
            transport: start.transport.to_ascii_lowercase(),
            started_at_ms: start.started_at_ms,
            answered_at_ms: answered.then_some(now),
            ended_at_ms: (!answered).then_some(now),
            disposition,
            status,
            hangup: None,
            node: self.node.clone(),
        }
    }

    /// A new record id: see the module documentation.
    fn next_id(&self) -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::OnceLock;
        static RUN: OnceLock<String> = OnceLock::new();
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let run = RUN.get_or_init(crate::core::new_tag);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        format!("{}-{run}{seq:012x}", self.node)
    }

    fn write(&self, op: CdrOp) {
        if self.writes.send(op).is_err() {
            tracing::error!("call record writer stopped; a record is lost");
        }
    }

    /// A call was refused before any forwarding.
    pub fn refused(&mut self, start: CallStart, status: u16) {
        let record = self.record(start, status, disposition(status, Ending::Responded));
        self.metrics.call(record.disposition);
        self.write(CdrOp::Put(record));
    }

    /// A call was forwarded on server transaction `key`.
    pub fn forwarded(&mut self, key: TransactionKey, start: CallStart) {
        self.attempts.insert(key, start);
    }

    /// The proxy sent the caller its first final response.
    pub fn finished(&mut self, key: &TransactionKey, status: u16, ending: Ending) {
        let Some(start) = self.attempts.remove(key) else {
            return;
        };
        let record = self.record(start, status, disposition(status, ending));
        self.metrics.call(record.disposition);
        if record.disposition == Disposition::Answered
            && self
                .up
                .insert(record.call_id.clone(), record.clone())
                .is_none()
        {
            self.count_up(true);
        }
        self.write(CdrOp::Put(record));
    }

    /// Closes the answered calls that have been up longer than `max` with no BYE
    /// (both phones gone, or a BYE that never came through holdfast): hung up by the
    /// node, so that the history does not keep them open for ever.
    pub fn close_stale(&mut self, max: std::time::Duration) {
        let Ok(max_ms) = i64::try_from(max.as_millis()) else {
            return;
        };
        let now = unix_ms();
        let stale: Vec<String> = self
            .up
            .iter()
            .filter(|(_, r)| {
                r.answered_at_ms
                    .is_some_and(|a| now.saturating_sub(a) > max_ms)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for call_id in stale {
            if let Some(record) = self.up.remove(&call_id) {
                self.count_up(false);
                self.end(record.id, now, HangupSide::Node);
            }
        }
    }

    /// An in-dialog BYE went through: the call it ends gets its end.
    pub fn bye(&mut self, request: &Message) {
        let Some(call_id) = request.call_id() else {
            return;
        };
        let Some(record) = self.up.remove(String::from_utf8_lossy(call_id).as_ref()) else {
            return;
        };
        self.count_up(false);
        let from = request
            .from()
            .and_then(|f| aor_of_uri(&f.uri))
            .map(|(u, d)| format!("{u}@{d}"));
        let side = if from.as_deref() == Some(record.caller.as_str()) {
            HangupSide::Caller
        } else {
            HangupSide::Callee
        };
        self.end(record.id, unix_ms(), side);
    }

    fn end(&self, id: String, ended_at_ms: i64, hangup: HangupSide) {
        self.write(CdrOp::End {
            id,
            ended_at_ms,
            hangup,
        });
    }
}

/// How long the writer gathers records before queueing them as one write.
pub const GATHER: Duration = Duration::from_millis(5);
/// Most records in one write.
const BATCH: usize = 1024;

/// Folds each [`CdrOp::End`] into the open record [`CdrOp::Put`] earlier in the same
/// batch: the row is written once, ended. Order is otherwise kept.
fn fold_ends(ops: Vec<CdrOp>) -> Vec<CdrOp> {
    let mut out: Vec<CdrOp> = Vec::with_capacity(ops.len());
    let mut open: HashMap<String, usize> = HashMap::new();
    for op in ops {
        match op {
            CdrOp::Put(record) => {
                if record.is_open() {
                    open.insert(record.id.clone(), out.len());
                }
                out.push(CdrOp::Put(record));
            }
            CdrOp::End {
                id,
                ended_at_ms,
                hangup,
            } => match open.remove(&id).and_then(|i| out.get_mut(i)) {
                Some(CdrOp::Put(record)) => {
                    record.ended_at_ms = Some(ended_at_ms);
                    record.hangup = Some(hangup);
                }
                _ => out.push(CdrOp::End {
                    id,
                    ended_at_ms,
                    hangup,
                }),
            },
            other => out.push(other),
        }
    }
    out
}

/// Queues records on the store in arrival order, awaiting their commits off the
/// queueing loop so that they share group commits.
async fn writer(store: Arc<SqliteStore>, mut rx: mpsc::UnboundedReceiver<CdrOp>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let until = tokio::time::Instant::now() + GATHER;
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(until, rx.recv_many(&mut batch, room)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        let ops = fold_ends(std::mem::take(&mut batch));
        let result = match store.queue_cdr(ops.clone()) {
            Ok(commit) => {
                tokio::spawn(async move {
                    if let Err(e) = commit.await {
                        tracing::error!(error = %e, "call records not stored");
                    }
                });
                Ok(())
            }
            // The writer queue is full: wait for room, keeping the order.
            Err(_) => store.record(ops).await,
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "call records not stored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(id: &str) -> CallRecord {
        CallRecord {
            id: id.to_owned(),
            call_id: format!("{id}@test"),
            caller: "alice@example.com".into(),
            callee: "bob@example.com".into(),
            request_uri: "sip:bob@example.com".into(),
            source: "127.0.0.1:5060".into(),
            transport: "udp".into(),
            started_at_ms: 1_000,
            answered_at_ms: Some(2_000),
            ended_at_ms: None,
            disposition: Disposition::Answered,
            status: 200,
            hangup: None,
            node: "n".into(),
        }
    }

    fn end(id: &str, at: i64) -> CdrOp {
        CdrOp::End {
            id: id.to_owned(),
            ended_at_ms: at,
            hangup: HangupSide::Callee,
        }
    }

    #[test]
    fn an_end_folds_into_its_open_record_in_the_same_batch_only() {
        let mut failed = open("f");
        failed.answered_at_ms = None;
        failed.ended_at_ms = Some(1_500);
        failed.disposition = Disposition::Busy;
        let ops = vec![
            CdrOp::Put(open("a")),
            end("old", 9_000),
            CdrOp::Put(failed.clone()),
            CdrOp::Put(open("b")),
            end("a", 3_000),
            end("f", 3_000),
            end("a", 4_000),
        ];
        let mut a = open("a");
        a.ended_at_ms = Some(3_000);
        a.hangup = Some(HangupSide::Callee);
        assert_eq!(
            fold_ends(ops),
            vec![
                CdrOp::Put(a),
                end("old", 9_000),
                CdrOp::Put(failed),
                CdrOp::Put(open("b")),
                // Not open in this batch: left to the store, which ignores them.
                end("f", 3_000),
                end("a", 4_000),
            ]
        );
    }

    #[test]
    fn record_ids_are_unique_and_rise() {
        let (writes, _rx) = mpsc::unbounded_channel();
        let calls = Calls {
            metrics: Arc::new(crate::metrics::Metrics::default()),
            node: "node-a".into(),
            attempts: HashMap::new(),
            up: HashMap::new(),
            writes,
        };
        let ids: Vec<String> = (0..1000).map(|_| calls.next_id()).collect();
        assert!(ids.iter().all(|id| id.starts_with("node-a-")));
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise");
    }
}
