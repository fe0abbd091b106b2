//! Deterministic simulation of the transaction layer: two [`TransactionLayer`]s (a UAC
//! and a UAS) over a simulated network with a simulated clock, in the manner of
//! quinn-proto's `Pair` (`src/tests/util.rs` in quinn-rs/quinn); and of the proxy core
//! between a caller and its callees (`proxy`). No sockets, no sleeps: time jumps from
//! one deadline to the next.
//!
//! [`TransactionLayer`]: crate::TransactionLayer

use std::time::Instant;

mod invite;
mod matching;
mod non_invite;
mod overload;
mod property;
mod proxy;
mod sim;
mod transport;

/// The origin of simulated time. The one clock read of the crate: simulated time only
/// ever adds durations to it.
#[allow(clippy::disallowed_methods)] // an arbitrary origin is needed to build any Instant
pub(crate) fn epoch() -> Instant {
    Instant::now()
}
