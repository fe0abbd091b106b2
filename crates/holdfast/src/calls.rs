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
//! Writes leave the core task in order on one channel; a writer task queues them on
//! the store in that order (an open record is never overwritten by a stale one) and
//! lets their commits overlap, so records share group commits with bindings.

use std::collections::HashMap;
use std::sync::Arc;

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

/// The call records of one core task.
#[derive(Debug)]
pub struct Calls {
    node: String,
    metrics: Arc<crate::metrics::Metrics>,
    /// Forwarded INVITEs with no final response yet, by server transaction.
    attempts: HashMap<TransactionKey, CallStart>,
    /// Answered calls that are up, by Call-ID.
    up: HashMap<String, CallRecord>,
    writes: mpsc::UnboundedSender<CallRecord>,
}

impl Calls {
    /// Reloads this node's open calls and starts the writer.
    pub async fn start(
        store: Arc<SqliteStore>,
        node: String,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Calls> {
        let open = store.open_calls(&node).await?;
        tracing::info!(open = open.len(), "open calls loaded");
        let up: HashMap<String, CallRecord> =
            open.into_iter().map(|r| (r.call_id.clone(), r)).collect();
        let (writes, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(store, rx));
        metrics
            .calls_up
            .store(up.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(Calls {
            metrics,
            node,
            attempts: HashMap::new(),
            up,
            writes,
        })
    }

    fn record(&self, start: CallStart, status: u16, disposition: Disposition) -> CallRecord {
        let now = unix_ms();
        let answered = disposition == Disposition::Answered;
        CallRecord {
            id: format!("{}-{}", self.node, crate::core::new_tag()),
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

    fn write(&self, record: CallRecord) {
        self.metrics
            .calls_up
            .store(self.up.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if self.writes.send(record).is_err() {
            tracing::error!("call record writer stopped; a record is lost");
        }
    }

    /// A call was refused before any forwarding.
    pub fn refused(&mut self, start: CallStart, status: u16) {
        let record = self.record(start, status, disposition(status, Ending::Responded));
        self.metrics.call(record.disposition);
        self.write(record);
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
        if record.disposition == Disposition::Answered {
            self.up.insert(record.call_id.clone(), record.clone());
        }
        self.write(record);
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
            if let Some(mut record) = self.up.remove(&call_id) {
                record.hangup = Some(HangupSide::Node);
                record.ended_at_ms = Some(now);
                self.write(record);
            }
        }
    }

    /// An in-dialog BYE went through: the call it ends gets its end.
    pub fn bye(&mut self, request: &Message) {
        let Some(call_id) = request.call_id() else {
            return;
        };
        let Some(mut record) = self.up.remove(String::from_utf8_lossy(call_id).as_ref()) else {
            return;
        };
        let from = request
            .from()
            .and_then(|f| aor_of_uri(&f.uri))
            .map(|(u, d)| format!("{u}@{d}"));
        record.hangup = Some(if from.as_deref() == Some(record.caller.as_str()) {
            HangupSide::Caller
        } else {
            HangupSide::Callee
        });
        record.ended_at_ms = Some(unix_ms());
        self.write(record);
    }
}

/// Queues records on the store in arrival order, awaiting their commits off the
/// queueing loop so that they share group commits.
async fn writer(store: Arc<SqliteStore>, mut rx: mpsc::UnboundedReceiver<CallRecord>) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let ops: Vec<CdrOp> = batch.drain(..).map(CdrOp::Put).collect();
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
