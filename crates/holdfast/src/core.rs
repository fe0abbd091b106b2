//! The SIP service: what the core answers to requests addressed to it, until the
//! registrar and proxy take over their methods.
//!
//! OPTIONS gets 200 with Allow, Accept and Supported; ACK is absorbed; CANCEL of an
//! unknown transaction gets 481; other known methods get 405 with Allow; extension
//! methods get 501. Invalid requests get the validator's answer (505, 483, 416, 420,
//! 400 …); invalid responses and responses for no transaction are dropped.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use holdfast_core::transaction::Config as TxConfig;
use holdfast_core::{Action, Event, Peer as CorePeer, TimerConfig, TransactionLayer, Transport};
use holdfast_sip::{validate, Answer, Header, Message, Method, ValidationPolicy};
use tokio::sync::mpsc;

use crate::config::ListenTransport;
use crate::registrar::{Registrar, Reply};
use crate::shared::{Inbound, Peer, Shared};

pub const ALLOW: &str = "OPTIONS, REGISTER";
pub const SUPPORTED: &str = "path, outbound";

/// A fresh tag for the To header of a response (RFC 3261 §19.3: at least 32 bits of
/// randomness).
pub fn new_tag() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", h.finish())
}

pub async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Inbound>,
    registrar: Arc<Registrar>,
    mut replies: mpsc::Receiver<Reply>,
) {
    let timers = &shared.config.timers;
    let mut layer = TransactionLayer::new(TxConfig {
        timers: TimerConfig::new(
            Duration::from_millis(timers.t1_ms),
            Duration::from_millis(timers.t2_ms),
            Duration::from_millis(timers.t4_ms),
        ),
        max_transactions: shared.config.limits.max_transactions,
    });
    let mut batch = Vec::with_capacity(64);
    loop {
        let deadline = layer.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            n = rx.recv_many(&mut batch, 64) => {
                if n == 0 {
                    return;
                }
                let now = now();
                for Inbound { msg, peer } in batch.drain(..) {
                    // The core's handling runs under the same guard as a connection's:
                    // a fault here costs one message, never the service.
                    let _ = crate::transport::guarded(&shared, &peer, || {
                        receive(&shared, &mut layer, msg, peer, now);
                    });
                }
            }
            Some(reply) = replies.recv() => {
                let _ = layer.respond(&reply.key, reply.response, now());
            }
            _ = sleep_until_opt(deadline) => layer.handle_timeout(now()),
        }
        drain(&shared, &mut layer, &registrar);
    }
}

/// The transaction layer's clock: tokio's, so tests can pause it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A message from the transports: validated, then given to the transaction layer.
fn receive(
    shared: &Shared,
    layer: &mut TransactionLayer,
    mut msg: Message,
    peer: Peer,
    now: Instant,
) {
    if let Err(e) = validate(&msg, &ValidationPolicy::PROXY) {
        if msg.is_request() && msg.method() != Some(&Method::Ack) {
            if let Answer::Respond {
                status,
                reason,
                unsupported,
            } = e.answer(true)
            {
                let mut resp = msg.response(status, &reason, Some(&new_tag()));
                if !unsupported.is_empty() {
                    let tags: Vec<&[u8]> = unsupported.iter().map(|t| t.as_ref()).collect();
                    add_header(&mut resp, "Unsupported", &tags.join(&b", "[..]));
                }
                shared.send(&peer, resp.to_bytes());
            }
        } else {
            shared
                .metrics
                .responses_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        return;
    }
    if msg.is_request() {
        // RFC 3261 §18.2.1, RFC 3581 §4: the answer tells a device behind NAT its
        // public address and port.
        msg.set_top_via_received(peer.remote.ip(), peer.remote.port());
    }
    // OPTIONS addressed to the core is answered statelessly (RFC 3261 §8.2.7): a
    // retransmission gets the same answer again, and keepalive and monitoring OPTIONS
    // never fill the transaction table.
    if msg.method() == Some(&Method::Options) {
        if let Some(resp) = answer(&msg) {
            shared.send(&peer, resp.to_bytes());
        }
        return;
    }
    if let Err(e) = layer.handle_message(msg.clone(), to_core(&peer), now) {
        // The request lacks what transaction matching needs: answer statelessly.
        if msg.is_request() && msg.method() != Some(&Method::Ack) {
            let resp = msg.response(400, &format!("Bad Request ({e})"), Some(&new_tag()));
            shared.send(&peer, resp.to_bytes());
        }
    }
}

/// Carries out what the transaction layer asks for, answering requests as the TU.
fn drain(shared: &Arc<Shared>, layer: &mut TransactionLayer, registrar: &Arc<Registrar>) {
    while let Some(action) = layer.poll_action() {
        match action {
            Action::Send {
                to,
                data,
                transaction,
            } => {
                if !shared.send(&from_core(shared, &to), data) {
                    if let Some(key) = transaction {
                        layer.handle_transport_error(&key, now());
                    }
                }
            }
            Action::ToUser(Event::Request {
                key: Some(key),
                request,
                peer,
            }) => {
                if request.method() == Some(&Method::Register) {
                    registrar.handle(shared, key, request, from_core(shared, &peer));
                } else if let Some(resp) = answer(&request) {
                    let _ = layer.respond(&key, resp, now());
                }
            }
            Action::ToUser(Event::Overloaded { request, peer }) => {
                shared.metrics.overloaded.fetch_add(1, Ordering::Relaxed);
                let mut resp = request.response(503, "Service Unavailable", Some(&new_tag()));
                add_header(&mut resp, "Retry-After", b"5");
                layer.send_stateless(peer, resp.to_bytes());
            }
            Action::ToUser(Event::StrayResponse { .. }) => {
                shared
                    .metrics
                    .responses_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
            Action::ToUser(_) => {}
        }
    }
}

/// The TU's answer to a request addressed to the core.
fn answer(msg: &Message) -> Option<Message> {
    let method = msg.method()?;
    Some(match method {
        Method::Ack => return None,
        Method::Options => {
            let mut r = msg.response(200, "OK", Some(&new_tag()));
            for (name, value) in [
                ("Allow", ALLOW),
                ("Accept", "application/sdp"),
                ("Supported", SUPPORTED),
            ] {
                add_header(&mut r, name, value.as_bytes());
            }
            r
        }
        Method::Cancel => msg.response(481, "Call/Transaction Does Not Exist", Some(&new_tag())),
        m if m.is_extension() => msg.response(501, "Not Implemented", Some(&new_tag())),
        _ => {
            let mut r = msg.response(405, "Method Not Allowed", Some(&new_tag()));
            add_header(&mut r, "Allow", ALLOW.as_bytes());
            r
        }
    })
}

pub fn to_core(peer: &Peer) -> CorePeer {
    CorePeer {
        transport: match peer.transport {
            ListenTransport::Udp => Transport::Udp,
            ListenTransport::Tcp => Transport::Tcp,
            ListenTransport::Tls => Transport::Tls,
            ListenTransport::Ws => Transport::Ws,
            ListenTransport::Wss => Transport::Wss,
        },
        addr: peer.remote,
        connection: peer.conn,
        local: Some(peer.local),
    }
}

fn from_core(shared: &Shared, peer: &CorePeer) -> Peer {
    let transport = match peer.transport {
        Transport::Udp => ListenTransport::Udp,
        Transport::Tcp => ListenTransport::Tcp,
        Transport::Tls => ListenTransport::Tls,
        Transport::Ws => ListenTransport::Ws,
        Transport::Wss => ListenTransport::Wss,
    };
    let local = peer
        .local
        .or_else(|| shared.any_udp_local(peer.addr.is_ipv6()));
    Peer {
        transport,
        remote: peer.addr,
        local: local.unwrap_or(peer.addr),
        conn: peer.connection,
    }
}

/// Adds a header to a response built by [`Message::response`], before its final
/// Content-Length.
pub fn add_header(resp: &mut Message, name: &str, value: &[u8]) {
    if let Ok(h) = Header::new(name, value) {
        resp.insert_header(resp.headers().len().saturating_sub(1), h);
    }
}
