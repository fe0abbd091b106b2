//! The SIP service: what the core answers to requests addressed to it, until the
//! registrar and proxy take over their methods.
//!
//! OPTIONS gets 200 with Allow, Accept and Supported; ACK is absorbed; CANCEL of an
//! unknown transaction gets 481; other known methods get 405 with Allow; extension
//! methods get 501. Invalid requests get the validator's answer (505, 483, 416, 420,
//! 400 …); invalid responses and responses for no transaction are dropped.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use holdfast_core::proxy::{route, Proxy, ProxyConfig, ProxyEvent};
use holdfast_core::transaction::Config as TxConfig;
use holdfast_core::{
    Action, Event, Peer as CorePeer, TimerConfig, TransactionKey, TransactionLayer,
    TransactionState, Transport,
};
use holdfast_sip::{validate, Answer, Header, Message, Method, ValidationPolicy};
use tokio::sync::mpsc;

use crate::calls::Calls;
use crate::config::ListenTransport;
use crate::proxy::{resolve_in_dialog, Admission, Domains, InDialog};
use crate::registrar::{Registrar, Reply};
use crate::shared::{shard_of, Inbound, Peer, Shared};

/// What the core's own URI (no user part) accepts; requests for users are proxied.
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

/// The core shard's state: the transaction layer, the proxy core above it, and what
/// they need from the rest of the process.
struct Core {
    shared: Arc<Shared>,
    layer: TransactionLayer,
    proxy: Proxy,
    registrar: Arc<Registrar>,
    domains: Arc<Domains>,
    calls: Calls,
    admissions: mpsc::Sender<Admission>,
    /// INVITEs cancelled while being admitted: answered 487 when admission ends.
    cancelled: HashSet<TransactionKey>,
    /// This shard's index (see [`crate::shared::shard_of`]).
    shard: usize,
}

/// One core shard: the transaction layer and proxy for the Call-IDs that hash to it
/// (see [`crate::shared::shard_of`]), fed by `rx` (messages) and `replies` (the
/// registrar's answers for its transactions).
pub async fn run(
    shard: usize,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Inbound>,
    registrar: Arc<Registrar>,
    mut replies: mpsc::Receiver<Reply>,
    domains: Arc<Domains>,
    calls: Calls,
) {
    let timers = &shared.config.timers;
    // The limit is the node's: each shard holds its share.
    let max_transactions = (shared.config.limits.max_transactions / shared.core_tx.len()).max(1);
    let layer = TransactionLayer::new(TxConfig {
        timers: TimerConfig::new(
            Duration::from_millis(timers.t1_ms),
            Duration::from_millis(timers.t2_ms),
            Duration::from_millis(timers.t4_ms),
        ),
        max_transactions,
    });
    let proxy = Proxy::new(ProxyConfig {
        timer_c: Duration::from_secs(shared.config.timers.timer_c_secs),
        ..ProxyConfig::default()
    });
    let (admissions, mut admitted) = mpsc::channel(65_536);
    let mut core = Core {
        domains,
        shared,
        layer,
        proxy,
        registrar,
        calls,
        admissions,
        cancelled: HashSet::new(),
        shard,
    };
    let mut batch = Vec::with_capacity(64);
    let mut answered = Vec::with_capacity(64);
    let mut replies_closed = false;
    let max_call = Duration::from_secs(core.shared.config.timers.max_call_secs);
    // Often enough that a call is closed within a quarter of the limit past it.
    let mut sweep = tokio::time::interval(Duration::from_secs(
        (core.shared.config.timers.max_call_secs / 4).clamp(1, 60),
    ));
    loop {
        let deadline = [core.layer.poll_timeout(), core.proxy.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            n = rx.recv_many(&mut batch, 64) => {
                if n == 0 {
                    return;
                }
                let now = now();
                for inbound in batch.drain(..) {
                    core.inbound(inbound, now);
                }
            }
            n = replies.recv_many(&mut answered, 64), if !replies_closed => {
                replies_closed = n == 0;
                let now = now();
                for reply in answered.drain(..) {
                    reply.respond(&mut core.layer, now);
                }
            }
            Some(admission) = admitted.recv() => core.admitted(admission, now()),
            _ = sweep.tick(), if !max_call.is_zero() => core.calls.close_stale(max_call),
            _ = sleep_until_opt(deadline) => {
                let now = now();
                core.layer.handle_timeout(now);
                core.proxy.handle_timeout(&mut core.layer, now);
            }
        }
        core.drain();
        // Let the socket readers and the other shards run between batches: a busy
        // shard would otherwise keep its worker for as long as its queue is never
        // empty, and a UDP socket nobody reads meanwhile drops datagrams.
        tokio::task::yield_now().await;
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

/// A message from a peer, screened as soon as it is parsed (on a stream connection's
/// task, or on the shard a datagram was queued on) before the transaction layer sees
/// it: validated, and answered there when it needs no transaction. Returns the
/// message for the transaction layer, if any.
pub fn screen(shared: &Shared, mut msg: Message, peer: &Peer) -> Option<Message> {
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
                shared.send(peer, resp.to_bytes());
            }
        } else {
            shared
                .metrics
                .responses_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        return None;
    }
    if msg.is_request() {
        // RFC 3261 §18.2.1, RFC 3581 §4: the answer tells a device behind NAT its
        // public address and port.
        msg.set_top_via_received(peer.remote.ip(), peer.remote.port());
    }
    // OPTIONS addressed to the core is answered statelessly (RFC 3261 §8.2.7): a
    // retransmission gets the same answer again, and keepalive and monitoring OPTIONS
    // never fill the transaction table.
    if msg.method() == Some(&Method::Options) && msg.routes().next().is_none() {
        if let Some(resp) = answer(&msg) {
            shared.send(peer, resp.to_bytes());
        }
        return None;
    }
    // So is the challenge to a REGISTER without credentials (see
    // `Registrar::stateless_challenge`).
    if msg.method() == Some(&Method::Register) {
        let registrar = shared.registrar.get();
        if let Some(challenge) = registrar.and_then(|r| r.stateless_challenge(&msg)) {
            shared.send(peer, challenge);
            return None;
        }
    }
    if msg.is_request() {
        // A request that lacks what transaction matching needs is answered
        // statelessly (an ACK is dropped). Checked here so that the message itself
        // need not be kept (copied) for the answer.
        if let Err(e) = TransactionKey::server(&msg) {
            if msg.method() != Some(&Method::Ack) {
                let resp = msg.response(400, &format!("Bad Request ({e})"), Some(&new_tag()));
                shared.send(peer, resp.to_bytes());
            }
            return None;
        }
    }
    Some(msg)
}

impl Core {
    /// A message for this shard. A datagram is parsed and screened here first; one
    /// whose parsed Call-ID is another shard's (a header the quick look at the raw
    /// datagram read differently) is passed on to that shard.
    fn inbound(&mut self, inbound: Inbound, now: Instant) {
        // The core's handling runs under the same guard as a connection's: a fault
        // here costs one message, never the service.
        let shared = self.shared.clone();
        let (msg, peer) = match inbound {
            Inbound::Message { msg, peer } => (msg, peer),
            Inbound::Datagram { data, peer } => {
                let screened = crate::transport::guarded(&shared, &peer, || {
                    crate::transport::parse(&shared, &peer, data)
                        .and_then(|msg| crate::transport::screened(&shared, &peer, msg))
                });
                let Some(Some(msg)) = screened else {
                    return;
                };
                let shard = shard_of(msg.call_id(), shared.core_tx.len());
                if shard != self.shard {
                    let to = shared.shard(shard);
                    crate::transport::to_shard(&shared, to, Inbound::Message { msg, peer });
                    return;
                }
                (msg, peer)
            }
        };
        let _ = crate::transport::guarded(&shared, &peer, || {
            let _ = self.layer.handle_message(msg, to_core(&peer), now);
        });
    }

    /// Carries out what the transaction layer and the proxy ask for.
    fn drain(&mut self) {
        let now = now();
        while let Some(action) = self.proxy.poll_action(&mut self.layer, now) {
            match action {
                Action::Send {
                    to,
                    data,
                    transaction,
                } => {
                    let peer = from_core(&self.shared, &to);
                    let request = transaction
                        .as_ref()
                        .is_some_and(|k| k.role() == holdfast_core::Role::Client);
                    if !self.shared.send(&peer, data.clone()) {
                        if request && peer.transport == ListenTransport::Tcp {
                            // The device's connection is gone: open a new one.
                            crate::transport::stream::connect_and_send(
                                self.shared.clone(),
                                peer.remote,
                                data,
                            );
                        } else if let Some(key) = transaction {
                            self.layer.handle_transport_error(&key, now);
                        }
                    }
                }
                Action::ToUser(Event::Request {
                    key: Some(key),
                    request,
                    peer,
                }) => {
                    let peer = from_core(&self.shared, &peer);
                    let shared = self.shared.clone();
                    let _ = crate::transport::guarded(&shared, &peer, || {
                        self.request(key, request, peer, now);
                    });
                }
                Action::ToUser(Event::Request {
                    key: None,
                    request,
                    peer,
                }) => self.ack(request, from_core(&self.shared, &peer)),
                Action::ToUser(Event::Overloaded { request, peer }) => {
                    self.shared
                        .metrics
                        .overloaded
                        .fetch_add(1, Ordering::Relaxed);
                    let mut resp = request.response(503, "Service Unavailable", Some(&new_tag()));
                    add_header(&mut resp, "Retry-After", b"5");
                    self.layer.send_stateless(peer, resp.to_bytes());
                }
                Action::ToUser(Event::StrayResponse { mut response, .. }) => {
                    // A 2xx retransmitted after its transactions ended still goes back
                    // (RFC 3261 §16.7, RFC 6026); anything else is dropped.
                    let forwarded = response.status().is_some_and(|s| (200..300).contains(&s))
                        && crate::proxy::stray_response_destination(&mut response).is_some_and(
                            |to| {
                                self.shared
                                    .send(&from_core(&self.shared, &to), response.to_bytes())
                            },
                        );
                    if !forwarded {
                        self.shared
                            .metrics
                            .responses_dropped
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                Action::ToUser(_) => {}
            }
        }
        while let Some(ProxyEvent::Final {
            server,
            status,
            ending,
        }) = self.proxy.poll_event()
        {
            self.calls.finished(&server, status, ending);
        }
    }

    /// A request that opened server transaction `key`.
    fn request(&mut self, key: TransactionKey, request: Message, peer: Peer, now: Instant) {
        let respond =
            |layer: &mut TransactionLayer, request: &Message, status: u16, reason: &str| {
                let resp = request.response(status, reason, Some(&new_tag()));
                let _ = layer.respond(&key, resp, now);
            };
        match request.method() {
            Some(Method::Register) => {
                if let Some(resp) = self.registrar.handle(&self.shared, &key, request, peer) {
                    let _ = self.layer.respond(&key, resp, now);
                }
                return;
            }
            Some(Method::Cancel) => {
                // RFC 3261 §16.10: 200 to the CANCEL, then cancel the branches (or,
                // for an INVITE still being admitted, answer it 487 once admission
                // gives it back: the 487 is built from the INVITE, not the CANCEL).
                match self.layer.cancel_target(&request) {
                    Some(invite) => {
                        respond(&mut self.layer, &request, 200, "OK");
                        let pending = matches!(
                            self.layer.state(&invite),
                            Some(TransactionState::Trying | TransactionState::Proceeding)
                        );
                        if !self.proxy.cancel(&mut self.layer, &invite, now) && pending {
                            self.cancelled.insert(invite);
                        }
                    }
                    None => respond(
                        &mut self.layer,
                        &request,
                        481,
                        "Call/Transaction Does Not Exist",
                    ),
                }
                return;
            }
            _ => {}
        }
        let has_route = request.routes().next().is_some();
        let has_user = request
            .request_uri()
            .and_then(|u| u.as_sip())
            .is_some_and(|s| s.user.is_some());
        if !has_route && !has_user {
            // Addressed to the core itself.
            if let Some(resp) = answer(&request) {
                let _ = self.layer.respond(&key, resp, now);
            }
            return;
        }
        if request.max_forwards() == Some(0) {
            respond(&mut self.layer, &request, 483, "Too Many Hops");
            return;
        }
        if route::has_looped(&request, |_| true) {
            respond(&mut self.layer, &request, 482, "Loop Detected");
            return;
        }
        let mut request = request;
        match resolve_in_dialog(&self.shared, &self.registrar, &mut request, &peer) {
            InDialog::Forward(target) => {
                if request.method() == Some(&Method::Bye) {
                    self.calls.bye(&request);
                }
                let _ = self
                    .proxy
                    .forward(&mut self.layer, key, request, vec![*target], now);
            }
            InDialog::Unreachable => {
                respond(&mut self.layer, &request, 480, "Temporarily Unavailable")
            }
            InDialog::NotOurs => {
                if let Some(decided) = crate::proxy::admit(
                    &self.shared,
                    &self.registrar,
                    &self.domains,
                    key,
                    request,
                    peer,
                    &self.admissions,
                ) {
                    self.admitted(decided, now);
                }
            }
        }
    }

    /// An ACK with no transaction of its own: the ACK for a 2xx, forwarded along its
    /// dialog. Anything else is absorbed.
    fn ack(&mut self, mut request: Message, peer: Peer) {
        if request.routes().next().is_none() {
            return;
        }
        if let InDialog::Forward(target) =
            resolve_in_dialog(&self.shared, &self.registrar, &mut request, &peer)
        {
            if let Some(data) = crate::proxy::forward_stateless(&request, &target) {
                self.shared
                    .send(&from_core(&self.shared, &target.peer), data);
            }
        }
    }

    /// Admission decided: forward or answer, unless the request was cancelled or
    /// ended meanwhile.
    fn admitted(&mut self, admission: Admission, now: Instant) {
        match admission {
            Admission::Answer {
                key,
                response,
                call,
            } => {
                self.cancelled.remove(&key);
                if let (Some(call), Some(status)) = (call, response.status()) {
                    self.calls.refused(call, status);
                }
                let _ = self.layer.respond(&key, response, now);
            }
            Admission::Forward {
                key,
                request,
                targets,
                call,
            } => {
                if self.cancelled.remove(&key) {
                    let resp = request.response(487, "Request Terminated", Some(&new_tag()));
                    let _ = self.layer.respond(&key, resp, now);
                }
                let pending = matches!(
                    self.layer.state(&key),
                    Some(TransactionState::Trying | TransactionState::Proceeding)
                );
                if !pending {
                    if let Some(call) = call {
                        self.calls.refused(call, 487);
                    }
                    return;
                }
                if self
                    .proxy
                    .forward(&mut self.layer, key.clone(), request, targets, now)
                    .is_ok()
                {
                    if let Some(call) = call {
                        self.calls.forwarded(key, call);
                    }
                }
            }
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

pub fn from_core(shared: &Shared, peer: &CorePeer) -> Peer {
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
