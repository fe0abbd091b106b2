//! The transports: UDP, and the stream transports (TCP, TLS, WS, WSS) sharing one
//! connection loop. Every message a peer sends is handled under a panic guard; every
//! offence is counted against its source address.

pub mod stream;
pub mod tls;
pub mod udp;
pub mod ws;

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use holdfast_sip::{Answer, Message, ParseError};
use tokio::time::Instant;

use crate::guard::{Admission, Offence};
use crate::metrics::IngressLimit;
use crate::shared::{Inbound, Peer, Shared};

/// Runs `f` under a panic guard. A panic is counted and logged (rate-limited); the
/// caller then closes the connection (or drops the datagram).
pub fn guarded<R>(shared: &Shared, peer: &Peer, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(_) => {
            shared.metrics.panics_caught.fetch_add(1, Ordering::Relaxed);
            if shared.logs.allow("panic") {
                tracing::error!(remote = %peer.remote, transport = peer.transport.as_str(), "panic while handling a message; connection closed");
            }
            None
        }
    }
}

/// Test-only fault injection: panics when the configured marker header is present.
pub fn fault_injection(shared: &Shared, msg: &Message) {
    if let Some(marker) = &shared.config.testing.panic_marker_header {
        if msg.header_by_str(marker).is_some() {
            panic!("fault injection: {marker} header");
        }
    }
}

/// Admits one message (or keepalive) from `peer` against its source's ban and
/// message rate, counting what is refused. A flood over the rate is an offence.
pub fn admit(shared: &Shared, peer: &Peer) -> Admission {
    let ip = peer.remote.ip();
    let admission = shared.guard.admit_message(ip, Instant::now());
    match admission {
        Admission::Allow => {}
        Admission::Banned => {
            shared
                .metrics
                .dropped_banned
                .fetch_add(1, Ordering::Relaxed);
        }
        Admission::RateLimited => {
            shared.metrics.ingress_limit(IngressLimit::MessageRate);
            offence(shared, ip, "message_rate");
        }
    }
    admission
}

/// Records an offence by `ip`, logging a new ban once.
pub fn offence(shared: &Shared, ip: IpAddr, reason: &'static str) {
    if shared.guard.offence(ip, reason, Instant::now()) == Offence::NewBan {
        shared.metrics.bans_total.fetch_add(1, Ordering::Relaxed);
        if shared.logs.allow("ban") {
            tracing::warn!(%ip, reason, "source banned");
        }
    }
}

/// Bans `ip` at once (abuse that needs no threshold, or one counted elsewhere).
pub fn ban(shared: &Shared, ip: IpAddr, reason: &'static str) {
    if shared.guard.ban(ip, reason, Instant::now()) == Offence::NewBan {
        shared.metrics.bans_total.fetch_add(1, Ordering::Relaxed);
        if shared.logs.allow("ban") {
            tracing::warn!(%ip, reason, "source banned");
        }
    }
}

/// Handles a message that did not parse: count it, count an offence, and answer it
/// when it is a request whose Via can be read.
pub fn parse_failed(shared: &Shared, peer: &Peer, raw: &[u8], error: &ParseError) {
    shared.metrics.parse_errors.fetch_add(1, Ordering::Relaxed);
    if let ParseError::Limit(l) = error {
        shared.metrics.wire_limit(l.limit);
    }
    offence(shared, peer.remote.ip(), "parse_error");
    if shared.logs.allow("parse_error") {
        tracing::info!(remote = %peer.remote, transport = peer.transport.as_str(), %error, "unparsable message");
    }
    if let Answer::Respond { status, reason, .. } = error.answer(true) {
        if let Some(r) = holdfast_sip::response_to_unparsable(
            raw,
            status,
            &reason,
            &crate::core::new_tag(),
            &shared.wire,
        ) {
            shared.send(peer, r.bytes);
        }
    }
}

/// Screens a parsed message ([`crate::core::screen`], here on the connection's task)
/// and hands what needs the core to its shard. When the shard is saturated the
/// message is dropped (UDP peers retransmit) and counted.
pub fn deliver(shared: &Shared, peer: Peer, msg: Message) {
    if let Some(msg) = screened(shared, &peer, msg) {
        to_shard(
            shared,
            shared.core_for(&msg),
            Inbound::Message { msg, peer },
        );
    }
}

/// Counts a parsed message in and screens it: what the transaction layer must see.
pub fn screened(shared: &Shared, peer: &Peer, msg: Message) -> Option<Message> {
    shared.metrics.message_in(peer.transport);
    crate::core::screen(shared, msg, peer)
}

/// Queues `inbound` on a shard, or drops and counts it when the shard is saturated.
pub fn to_shard(shared: &Shared, shard: &tokio::sync::mpsc::Sender<Inbound>, inbound: Inbound) {
    if shard.try_send(inbound).is_err() {
        shared.metrics.overloaded.fetch_add(1, Ordering::Relaxed);
    }
}

/// Parses a datagram that reached a shard. `None` when it did not parse (counted,
/// answered when it can be: see [`parse_failed`]).
pub fn parse(shared: &Shared, peer: &Peer, data: Bytes) -> Option<Message> {
    match holdfast_sip::parse_datagram(data.clone(), &shared.wire) {
        Ok(msg) => {
            fault_injection(shared, &msg);
            Some(msg)
        }
        Err(e) => {
            parse_failed(shared, peer, &data, &e);
            None
        }
    }
}

/// True for a datagram or WebSocket message that holds only line ends (a keepalive).
pub fn is_keepalive(data: &Bytes) -> bool {
    !data.is_empty() && data.iter().all(|&b| b == b'\r' || b == b'\n')
}
