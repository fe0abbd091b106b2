//! holdfast-core: the sans-IO SIP logic between the wire layer ([`holdfast_sip`]) and
//! the I/O shell (the `holdfast` binary).
//!
//! Today it holds the **transaction layer** ([`transaction`]):
//!
//! - RFC 3261 §17.1.1 INVITE client transaction (timers A, B, D; the ACK for a non-2xx
//!   final response built by the transaction, §17.1.1.3), with the "Accepted" state and
//!   timer M of RFC 6026 §7.2;
//! - §17.1.2 non-INVITE client transaction (timers E, F, K);
//! - §17.1.3 matching of responses to client transactions (top Via branch and CSeq
//!   method, so a CANCEL is a transaction of its own);
//! - §17.2.1 INVITE server transaction (timers G, H, I; the 100 Trying it sends itself
//!   when the TU is silent for 200 ms), with the "Accepted" state and timer L of
//!   RFC 6026 §7.1;
//! - §17.2.2 non-INVITE server transaction (timer J);
//! - §17.2.3 matching of requests to server transactions (branch, sent-by and method,
//!   ACK to its INVITE), with the RFC 2543 fallback for branches without the magic
//!   cookie.
//!
//! The registrar, digest authentication, proxy core (§16), dialogs and dial plan will
//! join it here.
//!
//! Invariants:
//!
//! - No I/O, no clock reads, no spawning, no logging. Time is an input: every entry
//!   point takes `now: Instant`. Outputs are a queue the shell drains
//!   ([`TransactionLayer::poll_action`]) and one deadline it sleeps until
//!   ([`TransactionLayer::poll_timeout`]).
//! - Nothing a peer sends can panic this crate: no `unwrap`, no indexing, no unchecked
//!   arithmetic outside tests (denied below).
//! - Memory is bounded: at most [`Config::max_transactions`] transactions live at
//!   once; past that a new request is handed back ([`Event::Overloaded`]) before any
//!   transaction state is allocated for it, and every live transaction ends by a timer
//!   or by the TU ([`TransactionLayer::terminate`]).
//! - Every transaction emits exactly one [`Event::Terminated`] when it is destroyed,
//!   and it is destroyed the instant it reaches the Terminated state.
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

pub mod digest;
pub mod proxy;
pub mod registrar;
pub mod response;
pub mod transaction;
mod transport;

pub use transaction::{
    Action, Config, Error, Event, LocalError, Role, Timer, TimerConfig, TransactionKey,
    TransactionLayer, TransactionState,
};
pub use transport::{Peer, Transport};

/// A fresh tag for a To or From header (RFC 3261 §19.3): at least 32 random bits.
/// Randomness comes from the standard library's per-process hash keys mixed with a
/// counter, so this crate needs no clock and no RNG dependency.
pub fn tag() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests;
