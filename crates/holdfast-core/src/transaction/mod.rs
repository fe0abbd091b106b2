//! The transaction layer (RFC 3261 §17, updated by RFC 6026).
//!
//! [`TransactionLayer`] owns every client and server transaction of one element. The
//! I/O shell drives it like `quinn-proto`'s endpoint:
//!
//! 1. each parsed message from the network goes to
//!    [`handle_message`](TransactionLayer::handle_message);
//! 2. the transaction user (TU: UA core, registrar, proxy core) starts client
//!    transactions with [`start_client`](TransactionLayer::start_client) and answers
//!    server transactions with [`respond`](TransactionLayer::respond);
//! 3. after every call the shell drains [`poll_action`](TransactionLayer::poll_action):
//!    [`Action::Send`] goes to the network, [`Action::ToUser`] to the TU;
//! 4. the shell sleeps until [`poll_timeout`](TransactionLayer::poll_timeout) and then
//!    calls [`handle_timeout`](TransactionLayer::handle_timeout);
//! 5. a send that fails is reported with
//!    [`handle_transport_error`](TransactionLayer::handle_transport_error) (the
//!    [`Action::Send`] names its transaction), a connection that dies with
//!    [`handle_peer_error`](TransactionLayer::handle_peer_error).
//!
//! State machines live in one module each, named after the RFC's figures:
//! `client_invite` (Figure 5), `client_non_invite` (Figure 6), `server_invite`
//! (Figure 7), `server_non_invite` (Figure 8), with the RFC 6026 "Accepted" states.
//! `key` matches messages to them ([`TransactionKey`]); `timer` holds timers A–M
//! ([`Timer`], [`TimerConfig`]).

mod client_invite;
mod client_non_invite;
mod key;
mod layer;
mod server_invite;
mod server_non_invite;
mod timer;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_sip::{Message, Violation};

pub use key::{Role, TransactionKey};
pub use layer::TransactionLayer;
pub use timer::{Timer, TimerConfig};

use crate::transport::Peer;
use timer::{ArmedTimers, TimerHandle, TimerQueue, TxId};

/// Configuration of a [`TransactionLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Timer values.
    pub timers: TimerConfig,
    /// Most transactions alive at once, client and server together. A request that
    /// would create one more is handed back as [`Event::Overloaded`] (the shell answers
    /// 503) and [`TransactionLayer::start_client`] fails with
    /// [`LocalError::Overloaded`]. Default 100 000: about 32 s of 3 000 requests a
    /// second over UDP, where a completed transaction lingers 64*T1.
    pub max_transactions: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            timers: TimerConfig::default(),
            max_transactions: 100_000,
        }
    }
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // drained at once; boxing would allocate per event
pub enum Action {
    /// Send these bytes (one serialized message) to `to`.
    Send {
        /// Where: for a response, the peer the request came from (over its connection
        /// when reliable, RFC 3261 §18.2.2; to its source address and port over UDP,
        /// RFC 3581 §4); for a request, the peer the TU chose.
        to: Peer,
        /// The serialized message.
        data: Bytes,
        /// The transaction that sends it, to report a failure to; `None` for
        /// [`TransactionLayer::send_stateless`].
        transaction: Option<TransactionKey>,
    },
    /// Hand this event to the transaction user.
    ToUser(Event),
}

/// What the transaction layer tells the transaction user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request the TU must handle.
    ///
    /// With `key: Some`, the request created that server transaction: the TU answers
    /// it with [`TransactionLayer::respond`]. With `key: None`, it is an ACK with no
    /// transaction of its own: the ACK for a 2xx, which is end-to-end (RFC 3261
    /// §17.1.1.3, RFC 6026 §7.1), whether or not an INVITE server transaction in the
    /// Accepted state matched it. Nothing answers an ACK.
    Request {
        /// The server transaction, `None` for an ACK.
        key: Option<TransactionKey>,
        /// The request.
        request: Message,
        /// Where it came from.
        peer: Peer,
    },
    /// A response for a client transaction: every provisional and the first final
    /// response (every 2xx for an INVITE, RFC 6026 §7.2). Retransmissions of a
    /// non-2xx final response are absorbed.
    Response {
        /// The client transaction.
        key: TransactionKey,
        /// The response.
        response: Message,
        /// Where it came from.
        peer: Peer,
    },
    /// Timer B, F (client: no final response) or H (INVITE server: no ACK) fired.
    /// [`Event::Terminated`] follows.
    Timeout {
        /// The transaction.
        key: TransactionKey,
        /// Which timer.
        timer: Timer,
    },
    /// A send for this transaction failed (RFC 3261 §17.1.4, §17.2.4). A client
    /// transaction then terminates ([`Event::Terminated`] follows). A server
    /// transaction stays in its state, so retransmitted requests are still absorbed,
    /// until the TU's final response and its timers end it (RFC 6026 §7.1, §8.8).
    TransportError {
        /// The transaction.
        key: TransactionKey,
    },
    /// The transaction was destroyed. Sent once per transaction, last.
    Terminated {
        /// The transaction.
        key: TransactionKey,
    },
    /// A response that matches no client transaction (RFC 3261 §17.1.3, RFC 6026
    /// §7.2). The shell drops it (a stateless proxy core may forward it).
    StrayResponse {
        /// The response.
        response: Message,
        /// Where it came from.
        peer: Peer,
    },
    /// A request that would have created a server transaction past
    /// [`Config::max_transactions`]. No transaction state was kept for it; the shell
    /// answers 503 statelessly (or drops it under attack).
    Overloaded {
        /// The request.
        request: Message,
        /// Where it came from.
        peer: Peer,
    },
}

/// The state of a live transaction (Figures 5–8 of RFC 3261, RFC 6026 §7). A
/// transaction in the Terminated state no longer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionState {
    /// INVITE client: request sent, no response yet.
    Calling,
    /// Non-INVITE client or server: request sent or received, no response yet.
    Trying,
    /// A provisional response was received or sent.
    Proceeding,
    /// A final response (non-2xx for INVITE) was received or sent.
    Completed,
    /// INVITE server: the ACK for the non-2xx arrived.
    Confirmed,
    /// INVITE: a 2xx was received or sent (RFC 6026).
    Accepted,
}

/// Why a call into the transaction layer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A peer's request lacks a header that transaction matching needs (Via, CSeq,
    /// and for RFC 2543 peers Call-ID, From and To). The peer's fault: answer as
    /// `holdfast_sip::ParseError::Violation(v).answer(true)` says (400), or drop.
    #[error(transparent)]
    Violation(#[from] Violation),
    /// The TU asked for something the transaction layer cannot do.
    #[error(transparent)]
    Local(#[from] LocalError),
}

/// A request of the transaction user that the transaction layer refuses. Either a bug
/// in the TU or a race with a transaction that just ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// A client transaction starts with a request.
    #[error("not a request")]
    NotARequest,
    /// [`TransactionLayer::respond`] takes a response.
    #[error("not a response")]
    NotAResponse,
    /// A status code outside 100–699.
    #[error("invalid status code {0}")]
    InvalidStatus(u16),
    /// ACK has no client transaction: the one for a non-2xx is sent by the INVITE
    /// client transaction, the one for a 2xx by the TU with
    /// [`TransactionLayer::send_stateless`].
    #[error("ACK has no client transaction")]
    AckHasNoTransaction,
    /// The request of a client transaction must carry a top Via whose branch starts
    /// with the magic cookie (RFC 3261 §8.1.1.7), and a CSeq.
    #[error("client transaction request needs a top Via with a z9hG4bK branch")]
    NotRfc3261Branch,
    /// The request's CSeq is missing or names another method.
    #[error("CSeq missing or its method differs from the request method")]
    CSeqMethod,
    /// A transaction with this key is alive.
    #[error("transaction already exists")]
    DuplicateTransaction,
    /// [`Config::max_transactions`] are alive.
    #[error("too many transactions")]
    Overloaded,
    /// No such transaction (it may have just terminated).
    #[error("no such transaction")]
    UnknownTransaction,
    /// Only a server transaction takes responses from the TU.
    #[error("not a server transaction")]
    NotAServerTransaction,
    /// An INVITE server transaction takes its responses as messages, not encoded
    /// ([`TransactionLayer::respond_encoded`]).
    #[error("an INVITE transaction takes responses as messages")]
    InviteNeedsMessage,
    /// The transaction's state does not take this response (RFC 3261 §17.2: e.g. a
    /// second final response, or a non-2xx after a 2xx). It was discarded.
    #[error("a {status} response is not allowed in the {state:?} state")]
    ResponseNotAllowed {
        /// The transaction's state.
        state: TransactionState,
        /// The status of the refused response.
        status: u16,
    },
}

/// What a state machine sees of the layer while it handles one input: the clock, the
/// timer values, and the outputs it may produce.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    pub(crate) now: Instant,
    pub(crate) timers: &'a TimerConfig,
    key: &'a TransactionKey,
    id: TxId,
    actions: &'a mut VecDeque<Action>,
    queue: &'a mut TimerQueue,
    armed: &'a mut ArmedTimers,
    terminated: bool,
}

impl Context<'_> {
    /// The transaction's key.
    pub(crate) fn key(&self) -> TransactionKey {
        self.key.clone()
    }

    /// True when the transaction was matched by the RFC 2543 rules.
    pub(crate) fn key_is_rfc2543(&self) -> bool {
        self.key.is_rfc2543()
    }

    /// Queues a message for the network.
    pub(crate) fn send(&mut self, to: Peer, data: Bytes) {
        self.actions.push_back(Action::Send {
            to,
            data,
            transaction: Some(self.key.clone()),
        });
    }

    /// Queues an event for the TU.
    pub(crate) fn tell_user(&mut self, event: Event) {
        self.actions.push_back(Action::ToUser(event));
    }

    /// Arms `timer` to fire `after` from now, replacing it if it was armed. A
    /// deadline past what `Instant` can hold never fires. Retransmission timers wait
    /// at least 1 ms, so a T1 or T2 configured as zero cannot make one fire again at
    /// the same instant forever.
    pub(crate) fn arm(&mut self, timer: Timer, after: Duration) {
        let after = match timer {
            Timer::A | Timer::E | Timer::G => after.max(Duration::from_millis(1)),
            _ => after,
        };
        let Some(deadline) = self.now.checked_add(after) else {
            self.cancel(timer);
            return;
        };
        let handle = self.queue.insert(deadline, self.id, timer);
        if let Some(previous) = self.armed.set(timer, handle) {
            self.queue.remove(previous);
        }
    }

    /// Disarms `timer` if it is armed.
    pub(crate) fn cancel(&mut self, timer: Timer) {
        if let Some(handle) = self.armed.take(timer) {
            self.queue.remove(handle);
        }
    }

    /// Records that the timer armed with `handle` fired; false if it was not armed
    /// (the state machine then ignores it).
    fn fired(&mut self, timer: Timer, handle: TimerHandle) -> bool {
        self.armed.fired(timer, handle)
    }

    /// Moves the transaction to Terminated: the layer destroys it once this input is
    /// handled, disarming its timers and telling the TU.
    pub(crate) fn terminate(&mut self) {
        self.terminated = true;
    }
}

/// Sends a response and returns its bytes for retransmission.
fn send_response(cx: &mut Context<'_>, to: Peer, response: &Message) -> Bytes {
    let data = response.to_bytes();
    cx.send(to, data.clone());
    data
}
