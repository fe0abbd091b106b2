//! The simulation harness: [`Pair`] drives a UAC [`Node`] and a UAS [`Node`] over a
//! [`Network`] that can drop, duplicate, delay and reorder datagrams, with a seeded
//! PRNG so every run is reproducible. [`Star`] drives holdfast's proxy core
//! ([`ProxyNode`]) between a caller and callees ([`Party`]), each over links of its
//! own. Both keep simulated time through [`Clock`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_sip::{parse_datagram, HeaderName, Limits, Message, Method, Uri, Via};

use crate::proxy::{Proxy, ProxyConfig, ProxyEvent, Target};
use crate::transaction::{
    Action, Config, Error, Event, TimerConfig, TransactionKey, TransactionState,
};
use crate::{Peer, TransactionLayer, Transport};

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// xorshift64*: small, fast, good enough to pick losses; no dependency.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> XorShift {
        // Zero is the one state xorshift cannot leave.
        XorShift(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `per_mille`/1000.
    pub(crate) fn chance(&mut self, per_mille: u32) -> bool {
        self.next_u64() % 1000 < u64::from(per_mille)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// One direction of the simulated network.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Link {
    /// Datagrams dropped, per mille (unreliable transports only).
    pub(crate) loss: u32,
    /// Datagrams delivered twice, per mille (unreliable transports only).
    pub(crate) duplicate: u32,
    /// Fixed one-way delay.
    pub(crate) latency: Duration,
    /// Extra random delay in `0..jitter` per copy: reorders datagrams (unreliable
    /// transports only; a stream keeps its order).
    pub(crate) jitter: Duration,
}

/// The network between the two nodes.
#[derive(Debug)]
pub(crate) struct Network {
    pub(crate) to_uas: Link,
    pub(crate) to_uac: Link,
    /// Every send fails, as a dead connection does: the harness reports it back to
    /// the layer with `handle_transport_error`, as the shell would.
    pub(crate) broken: bool,
    wire: Wire,
}

/// Datagrams due at a node: (arrival, sequence) -> (bytes, sender as the node sees it).
type Inbound = BTreeMap<(Instant, u64), (Bytes, Peer)>;

/// What carries datagrams over [`Link`]s: the seeded PRNG that picks losses,
/// duplicates and delays, and the sequence that keeps equal arrival times in order.
#[derive(Debug)]
struct Wire {
    rng: XorShift,
    seq: u64,
}

impl Wire {
    fn new(seed: u64) -> Wire {
        Wire {
            rng: XorShift::new(seed),
            seq: 0,
        }
    }

    /// Queues `data` at `inbound` now, with no loss or delay (a test's injection).
    fn inject(&mut self, data: Bytes, from: Peer, now: Instant, inbound: &mut Inbound) {
        self.seq += 1;
        inbound.insert((now, self.seq), (data, from));
    }

    fn transmit(
        &mut self,
        link: Link,
        reliable: bool,
        data: Bytes,
        from: Peer,
        now: Instant,
        inbound: &mut Inbound,
    ) {
        if reliable {
            self.seq += 1;
            inbound.insert((now + link.latency, self.seq), (data, from));
            return;
        }
        if self.rng.chance(link.loss) {
            return;
        }
        let copies = if self.rng.chance(link.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = self.rng.below(link.jitter.as_millis() as u64);
            self.seq += 1;
            inbound.insert(
                (now + link.latency + ms(jitter), self.seq),
                (data.clone(), from),
            );
        }
    }
}

/// One message a node put on the wire.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) at: Instant,
    pub(crate) to: Peer,
    pub(crate) message: Message,
    pub(crate) transaction: Option<TransactionKey>,
}

impl Sent {
    fn new(at: Instant, to: Peer, data: &Bytes, transaction: Option<TransactionKey>) -> Sent {
        let message =
            parse_datagram(data.clone(), &Limits::DEFAULT).expect("the layer sends valid SIP");
        Sent {
            at,
            to,
            message,
            transaction,
        }
    }
}

/// A transaction layer, the trivial TU on top of it, and what it did.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) layer: TransactionLayer,
    pub(crate) tu: ScriptedTu,
    /// The other node, as this one sends to it.
    pub(crate) remote: Peer,
    /// Every event the layer gave the TU, with its time.
    pub(crate) events: Vec<(Instant, Event)>,
    /// Every message this node sent.
    pub(crate) sent: Vec<Sent>,
    /// Errors `handle_message` returned.
    pub(crate) errors: Vec<Error>,
    inbound: Inbound,
}

impl Node {
    fn new(config: Config, remote: Peer) -> Node {
        let timers = config.timers.clone();
        Node {
            layer: TransactionLayer::new(config),
            tu: ScriptedTu::new(timers),
            remote,
            events: Vec::new(),
            sent: Vec::new(),
            errors: Vec::new(),
            inbound: BTreeMap::new(),
        }
    }

    /// Starts a client transaction sending `request` to the other node.
    pub(crate) fn start_client(&mut self, request: Message, now: Instant) -> TransactionKey {
        let key = self
            .layer
            .start_client(request.clone(), self.remote, now)
            .expect("client transaction starts");
        self.tu.started.push((key.clone(), request));
        key
    }

    /// The request the test started client transaction `key` with.
    pub(crate) fn started(&self, key: &TransactionKey) -> &Message {
        let started = self.tu.started.iter().find(|(k, _)| k == key);
        &started.expect("a request the test started").1
    }

    fn next_wakeup(&self) -> Option<Instant> {
        [
            self.layer.poll_timeout(),
            self.tu.next_timeout(),
            self.inbound.keys().next().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Times at which this node sent a request with `method`.
    pub(crate) fn requests_sent(&self, method: &Method) -> Vec<Instant> {
        self.sent
            .iter()
            .filter(|s| s.message.method() == Some(method))
            .map(|s| s.at)
            .collect()
    }

    /// Times at which this node sent a response with `status`.
    pub(crate) fn responses_sent(&self, status: u16) -> Vec<Instant> {
        self.sent
            .iter()
            .filter(|s| s.message.status() == Some(status))
            .map(|s| s.at)
            .collect()
    }

    /// The events about one transaction, in order.
    pub(crate) fn events_of(&self, key: &TransactionKey) -> Vec<(Instant, Event)> {
        self.events
            .iter()
            .filter(|(_, e)| event_key(e) == Some(key))
            .cloned()
            .collect()
    }

    /// Requests that created a server transaction.
    pub(crate) fn new_requests(&self) -> Vec<(TransactionKey, Message)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Request {
                    key: Some(key),
                    request,
                    ..
                } => Some((key.clone(), request.clone())),
                _ => None,
            })
            .collect()
    }

    /// Requests handed to the TU without a transaction (ACK for 2xx).
    pub(crate) fn transactionless_requests(&self) -> Vec<Message> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Request {
                    key: None, request, ..
                } => Some(request.clone()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn stray_responses(&self) -> Vec<Message> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::StrayResponse { response, .. } => Some(response.clone()),
                _ => None,
            })
            .collect()
    }

    /// Status codes of the responses the TU got for `key`.
    pub(crate) fn statuses(&self, key: &TransactionKey) -> Vec<u16> {
        self.events_of(key)
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Response { response, .. } => response.status(),
                _ => None,
            })
            .collect()
    }

    /// When `key` terminated, if it did.
    pub(crate) fn terminated_at(&self, key: &TransactionKey) -> Option<Instant> {
        self.events_of(key)
            .iter()
            .find(|(_, e)| matches!(e, Event::Terminated { .. }))
            .map(|(at, _)| *at)
    }
}

/// The transaction a given event is about.
pub(crate) fn event_key(event: &Event) -> Option<&TransactionKey> {
    match event {
        Event::Request { key, .. } => key.as_ref(),
        Event::Response { key, .. }
        | Event::Timeout { key, .. }
        | Event::TransportError { key }
        | Event::Terminated { key } => Some(key),
        Event::StrayResponse { .. } | Event::Overloaded { .. } => None,
    }
}

/// What a TU gets to work with while it handles an event.
pub(crate) struct TuIo<'a> {
    pub(crate) layer: &'a mut TransactionLayer,
    pub(crate) now: Instant,
    pub(crate) remote: Peer,
}

/// A trivial transaction user: as a UAS it answers each request by a script; as a
/// UAC it acknowledges 2xx responses (§13.2.2.4) and can CANCEL on ringing.
#[derive(Debug)]
pub(crate) struct ScriptedTu {
    /// (delay after the request, status) for each INVITE.
    pub(crate) invite_script: Vec<(Duration, u16)>,
    /// (delay after the request, status) for every other request but CANCEL.
    pub(crate) non_invite_script: Vec<(Duration, u16)>,
    /// Retransmit 2xx to INVITE until the ACK comes (§13.3.1.4).
    pub(crate) retransmit_2xx: bool,
    /// UAC: leave this many 2xx unacknowledged (as if the ACK were lost).
    pub(crate) ignore_2xx: usize,
    /// UAC: CANCEL an INVITE when a 180 arrives for it.
    pub(crate) cancel_on_ringing: bool,
    /// UAC: the CANCEL client transactions started.
    pub(crate) cancels: Vec<TransactionKey>,
    /// UAC: ACKs sent for 2xx.
    pub(crate) acks_sent: usize,
    /// Errors `respond` or `start_client` returned.
    pub(crate) errors: Vec<Error>,
    /// UAC: the requests the test started, to build a CANCEL from.
    pub(crate) started: Vec<(TransactionKey, Message)>,
    /// UAS: the To tag of every response.
    pub(crate) tag: String,
    /// UAS: header fields (name, value) added to every response with that status.
    pub(crate) response_headers: Vec<(u16, &'static str, String)>,
    /// UAS: the INVITEs received, to answer 487 to on CANCEL.
    invites: Vec<(TransactionKey, Message)>,
    pending: Vec<(Instant, TransactionKey, Message)>,
    retransmitting: Vec<Retransmission>,
    timers: TimerConfig,
    next_branch: u64,
}

/// A 2xx the UAS core retransmits until its ACK arrives (§13.3.1.4).
#[derive(Debug)]
struct Retransmission {
    key: TransactionKey,
    response: Message,
    call_id: Bytes,
    next: Instant,
    interval: Duration,
    until: Instant,
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        _ => "Whatever",
    }
}

impl ScriptedTu {
    fn new(timers: TimerConfig) -> ScriptedTu {
        ScriptedTu {
            invite_script: Vec::new(),
            non_invite_script: vec![(Duration::ZERO, 200)],
            retransmit_2xx: false,
            ignore_2xx: 0,
            cancel_on_ringing: false,
            cancels: Vec::new(),
            acks_sent: 0,
            errors: Vec::new(),
            started: Vec::new(),
            tag: "uas".to_owned(),
            response_headers: Vec::new(),
            invites: Vec::new(),
            pending: Vec::new(),
            retransmitting: Vec::new(),
            timers,
            next_branch: 0,
        }
    }

    fn next_timeout(&self) -> Option<Instant> {
        let pending = self.pending.iter().map(|p| p.0);
        let retx = self.retransmitting.iter().map(|r| r.next);
        pending.chain(retx).min()
    }

    fn on_event(&mut self, event: &Event, io: &mut TuIo<'_>) {
        match event {
            Event::Request {
                key: Some(key),
                request,
                ..
            } => self.on_request(key, request, io),
            // The ACK for a 2xx stops its retransmission.
            Event::Request {
                key: None, request, ..
            } => {
                let call_id = request.call_id().cloned();
                self.retransmitting
                    .retain(|r| Some(&r.call_id) != call_id.as_ref());
            }
            Event::Response { key, response, .. } => self.on_response(key, response, io),
            _ => {}
        }
    }

    fn on_request(&mut self, key: &TransactionKey, request: &Message, io: &mut TuIo<'_>) {
        let script = match request.method() {
            Some(Method::Invite) => {
                self.invites.push((key.clone(), request.clone()));
                self.invite_script.clone()
            }
            Some(Method::Cancel) => {
                let target = io.layer.cancel_target(request);
                let status = if target.is_some() { 200 } else { 481 };
                let ok = self.response(request, status);
                if let Err(e) = io.layer.respond(key, ok, io.now) {
                    self.errors.push(e);
                }
                // §9.2: a CANCEL has no effect on a request already answered finally.
                let unanswered = target
                    .as_ref()
                    .is_some_and(|t| io.layer.state(t) == Some(TransactionState::Proceeding));
                if let Some(target) = target.filter(|_| unanswered) {
                    self.pending.retain(|p| p.1 != target);
                    let invite = self.invites.iter().find(|(k, _)| *k == target);
                    if let Some((_, invite)) = invite {
                        let terminated = self.response(invite, 487);
                        if let Err(e) = io.layer.respond(&target, terminated, io.now) {
                            self.errors.push(e);
                        }
                    }
                }
                return;
            }
            _ => self.non_invite_script.clone(),
        };
        for (delay, status) in script {
            let response = self.response(request, status);
            self.pending.push((io.now + delay, key.clone(), response));
        }
        self.on_timeout(io);
    }

    /// The UAS's response to `request`, with its tag and the extra fields for `status`.
    fn response(&self, request: &Message, status: u16) -> Message {
        let mut response = request.response(status, reason(status), Some(&self.tag));
        for (_, name, value) in self.response_headers.iter().filter(|h| h.0 == status) {
            let header = holdfast_sip::Header::new(name, value.as_bytes()).expect("a valid field");
            let at = response.headers().len().saturating_sub(1);
            response.insert_header(at, header);
        }
        response
    }

    fn on_response(&mut self, key: &TransactionKey, response: &Message, io: &mut TuIo<'_>) {
        let status = response.status().unwrap_or(0);
        let is_invite = response.cseq().map(|c| &c.method) == Some(&Method::Invite);
        if is_invite && (200..300).contains(&status) {
            if self.ignore_2xx > 0 {
                self.ignore_2xx -= 1;
            } else {
                let ack = self.ack_for_2xx(response);
                io.layer.send_stateless(io.remote, ack);
                self.acks_sent += 1;
            }
        }
        if is_invite && status == 180 && self.cancel_on_ringing {
            let invite = self.started.iter().find(|(k, _)| k == key);
            if let Some((_, invite)) = invite {
                let cancel = cancel_for(invite);
                match io.layer.start_client(cancel, io.remote, io.now) {
                    Ok(k) => self.cancels.push(k),
                    Err(e) => self.errors.push(e),
                }
            }
        }
    }

    fn on_timeout(&mut self, io: &mut TuIo<'_>) {
        let now = io.now;
        let mut due = Vec::new();
        self.pending.retain(|p| {
            if p.0 <= now {
                due.push(p.clone());
                false
            } else {
                true
            }
        });
        due.sort_by_key(|p| p.0);
        for (_, key, response) in due {
            let status = response.status().unwrap_or(0);
            let is_invite = response.cseq().map(|c| &c.method) == Some(&Method::Invite);
            if self.retransmit_2xx && is_invite && (200..300).contains(&status) {
                self.retransmitting.push(Retransmission {
                    key: key.clone(),
                    response: response.clone(),
                    call_id: response.call_id().cloned().unwrap_or_default(),
                    next: now + self.timers.t1,
                    interval: self.timers.t1,
                    until: now + self.timers.t1x64(),
                });
            }
            if let Err(e) = io.layer.respond(&key, response, now) {
                self.errors.push(e);
            }
        }
        let t2 = self.timers.t2;
        for r in &mut self.retransmitting {
            if r.next <= now {
                if let Err(e) = io.layer.respond(&r.key, r.response.clone(), now) {
                    self.errors.push(e);
                }
                r.interval = (r.interval * 2).min(t2);
                r.next = now + r.interval;
            }
        }
        self.retransmitting.retain(|r| r.next <= r.until);
    }

    /// The ACK for a 2xx (§13.2.2.4): a new transaction-less request with a new branch.
    fn ack_for_2xx(&mut self, response: &Message) -> Bytes {
        self.next_branch += 1;
        let line = |name| {
            response
                .header(name)
                .map(|h| String::from_utf8_lossy(h.line()).into_owned())
                .unwrap_or_default()
        };
        let seq = response.cseq().map_or(0, |c| c.seq);
        let via = response.top_via().map_or(String::new(), |v| {
            format!(
                "SIP/2.0/{} uac.example.com",
                String::from_utf8_lossy(v.transport.as_bytes())
            )
        });
        Bytes::from(format!(
            "ACK sip:bob@uas.example.com SIP/2.0\r\nVia: {via};branch=z9hG4bKack{}\r\n{}{}{}CSeq: {seq} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            self.next_branch,
            line(HeaderName::From),
            line(HeaderName::To),
            line(HeaderName::CallId),
        ))
    }
}

/// Parses a message written with `\n` line ends.
pub(crate) fn message(text: &str) -> Message {
    parse_datagram(Bytes::from(text.replace('\n', "\r\n")), &Limits::DEFAULT)
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A request from the UAC (`uac.example.com`) to `sip:bob@uas.example.com`.
pub(crate) fn request(
    method: &str,
    branch: &str,
    cseq: u32,
    call_id: &str,
    transport: Transport,
) -> Message {
    message(&format!(
        "{method} sip:bob@uas.example.com SIP/2.0\n\
Via: SIP/2.0/{transport} uac.example.com:5060;branch={branch}\n\
Max-Forwards: 70\n\
From: <sip:alice@uac.example.com>;tag=alice\n\
To: <sip:bob@uas.example.com>\n\
Call-ID: {call_id}\n\
CSeq: {cseq} {method}\n\
Content-Length: 0\n\n"
    ))
}

/// The CANCEL for a request (§9.1): same Request-URI, top Via (so the same branch),
/// From, To, Call-ID and CSeq number.
pub(crate) fn cancel_for(invite: &Message) -> Message {
    let mut text = format!(
        "CANCEL {} SIP/2.0\r\nVia: {}\r\n",
        invite
            .request_uri()
            .map(ToString::to_string)
            .unwrap_or_default(),
        invite
            .top_via()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    );
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
        if let Some(h) = invite.header(name) {
            text.push_str(&String::from_utf8_lossy(h.line()));
        }
    }
    let seq = invite.cseq().map_or(0, |c| c.seq);
    text.push_str(&format!(
        "CSeq: {seq} CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ));
    parse_datagram(Bytes::from(text), &Limits::DEFAULT).expect("CANCEL parses")
}

/// Simulated time, shared by the harnesses: they handle everything due at the current
/// instant, then jump the clock to the next deadline.
pub(crate) trait Clock {
    /// The start of the simulation.
    fn epoch(&self) -> Instant;
    /// The current simulated instant.
    fn now(&self) -> Instant;
    /// Moves the clock (never backwards).
    fn set_now(&mut self, at: Instant);
    /// Handles everything due at the current time, until every node is quiet.
    fn drive_now(&mut self);
    /// The earliest deadline of any node: a datagram, a timer.
    fn next_wakeup(&self) -> Option<Instant>;

    /// The instant `n` milliseconds after the start of the simulation.
    fn at(&self, n: u64) -> Instant {
        self.epoch() + ms(n)
    }

    /// Milliseconds since the start of the simulation.
    fn ms_since_start(&self, at: Instant) -> u64 {
        (at - self.epoch()).as_millis() as u64
    }

    /// [`ms_since_start`](Self::ms_since_start) of each of `times`.
    fn ms_list(&self, times: &[Instant]) -> Vec<u64> {
        times.iter().map(|t| self.ms_since_start(*t)).collect()
    }

    /// Handles everything due now, then advances the clock to the next deadline.
    /// False when nothing is left to do.
    fn step(&mut self) -> bool {
        self.drive_now();
        match self.next_wakeup() {
            Some(t) => {
                self.set_now(self.now().max(t));
                true
            }
            None => false,
        }
    }

    /// Runs until every node is idle: no datagram in flight, no timer armed.
    fn drive(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the simulation never went idle");
    }

    /// Runs until `until`, leaving the clock there.
    fn drive_until(&mut self, until: Instant) {
        loop {
            self.drive_now();
            match self.next_wakeup() {
                Some(t) if t <= until => self.set_now(self.now().max(t)),
                _ => {
                    self.set_now(until);
                    self.drive_now();
                    return;
                }
            }
        }
    }

    /// Runs for `d` of simulated time.
    fn drive_for(&mut self, d: Duration) {
        self.drive_until(self.now() + d);
    }
}

/// Two nodes, a network and a clock.
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) uac: Node,
    pub(crate) uas: Node,
    pub(crate) net: Network,
    pub(crate) transport: Transport,
    pub(crate) epoch: Instant,
    pub(crate) time: Instant,
}

impl Pair {
    pub(crate) fn new(transport: Transport, config: Config, seed: u64) -> Pair {
        let uac_addr: SocketAddr = "192.0.2.1:5060".parse().expect("address");
        let uas_addr: SocketAddr = "192.0.2.2:5060".parse().expect("address");
        let to_uas = peer(transport, uas_addr, 1);
        let to_uac = peer(transport, uac_addr, 1);
        let epoch = super::epoch();
        Pair {
            uac: Node::new(config.clone(), to_uas),
            uas: Node::new(config, to_uac),
            net: Network {
                to_uas: Link::default(),
                to_uac: Link::default(),
                broken: false,
                wire: Wire::new(seed),
            },
            transport,
            epoch,
            time: epoch,
        }
    }

    /// A pair over UDP with default timers and a lossless network.
    pub(crate) fn udp() -> Pair {
        Pair::new(Transport::Udp, Config::default(), 1)
    }

    /// Starts a client transaction on the UAC, sending to the UAS.
    pub(crate) fn start_client(&mut self, request: Message) -> TransactionKey {
        self.uac.start_client(request, self.time)
    }

    /// An INVITE from the UAC with a fresh branch.
    pub(crate) fn invite(&mut self, n: u32) -> TransactionKey {
        self.start_client(numbered_request("INVITE", n, self.transport))
    }

    /// A non-INVITE request from the UAC with a fresh branch.
    pub(crate) fn options(&mut self, n: u32) -> TransactionKey {
        self.start_client(numbered_request("OPTIONS", n, self.transport))
    }

    /// Delivers `message` to the UAS now, as if the UAC had sent it.
    pub(crate) fn inject_to_uas(&mut self, message: &Message) {
        let from = self.uas.remote;
        let inbound = &mut self.uas.inbound;
        self.net
            .wire
            .inject(message.to_bytes(), from, self.time, inbound);
    }

    /// Delivers `message` to the UAC now, as if the UAS had sent it.
    pub(crate) fn inject_to_uac(&mut self, message: &Message) {
        let from = self.uac.remote;
        let inbound = &mut self.uac.inbound;
        self.net
            .wire
            .inject(message.to_bytes(), from, self.time, inbound);
    }
}

impl Clock for Pair {
    fn epoch(&self) -> Instant {
        self.epoch
    }

    fn now(&self) -> Instant {
        self.time
    }

    fn set_now(&mut self, at: Instant) {
        self.time = at;
    }

    fn next_wakeup(&self) -> Option<Instant> {
        [self.uac.next_wakeup(), self.uas.next_wakeup()]
            .into_iter()
            .flatten()
            .min()
    }

    fn drive_now(&mut self) {
        let reliable = self.transport.is_reliable();
        let now = self.time;
        loop {
            let a = drive_node(&mut self.uac, now, |data| {
                if self.net.broken {
                    return false;
                }
                let inbound = &mut self.uas.inbound;
                let from = self.uas.remote;
                let link = self.net.to_uas;
                self.net
                    .wire
                    .transmit(link, reliable, data, from, now, inbound);
                true
            });
            let b = drive_node(&mut self.uas, now, |data| {
                if self.net.broken {
                    return false;
                }
                let inbound = &mut self.uac.inbound;
                let from = self.uac.remote;
                let link = self.net.to_uac;
                self.net
                    .wire
                    .transmit(link, reliable, data, from, now, inbound);
                true
            });
            if !a && !b {
                return;
            }
        }
    }
}

/// The peer `addr` as a node sends to it; over a reliable transport, on connection
/// `connection`.
fn peer(transport: Transport, addr: SocketAddr, connection: u64) -> Peer {
    Peer {
        transport,
        addr,
        connection: transport.is_reliable().then_some(connection),
        local: None,
    }
}

/// A request from the UAC numbered `n`: branch, CSeq and Call-ID all its own.
pub(crate) fn numbered_request(method: &str, n: u32, transport: Transport) -> Message {
    let (branch, call) = match method {
        "INVITE" => ("inv".to_owned(), "call".to_owned()),
        "OPTIONS" => ("opt".to_owned(), "opt".to_owned()),
        other => (other.to_ascii_lowercase(), other.to_ascii_lowercase()),
    };
    request(
        method,
        &format!("z9hG4bK{branch}{n}"),
        n,
        &format!("{call}-{n}"),
        transport,
    )
}

/// Runs one node at `now`: delivers due datagrams, fires due timers, and drains the
/// layer's actions to the network (through `transmit`, which is false when the send
/// failed) and to the TU. True if anything happened.
fn drive_node(node: &mut Node, now: Instant, mut transmit: impl FnMut(Bytes) -> bool) -> bool {
    let mut progressed = false;
    loop {
        let mut busy = false;
        // One datagram at a time, its actions drained before the next, as a shell does.
        if let Some(entry) = node.inbound.first_entry().filter(|e| e.key().0 <= now) {
            let (data, from) = entry.remove();
            busy = true;
            let message =
                parse_datagram(data, &Limits::DEFAULT).expect("the layers send valid SIP");
            if let Err(e) = node.layer.handle_message(message, from, now) {
                node.errors.push(e);
            }
        } else if node.layer.poll_timeout().is_some_and(|t| t <= now) {
            busy = true;
            node.layer.handle_timeout(now);
        }
        if node.tu.next_timeout().is_some_and(|t| t <= now) {
            busy = true;
            let mut io = TuIo {
                layer: &mut node.layer,
                now,
                remote: node.remote,
            };
            node.tu.on_timeout(&mut io);
        }
        while let Some(action) = node.layer.poll_action() {
            busy = true;
            match action {
                Action::Send {
                    to,
                    data,
                    transaction,
                } => {
                    assert_eq!(to, node.remote, "sent to the other node");
                    node.sent
                        .push(Sent::new(now, to, &data, transaction.clone()));
                    if !transmit(data) {
                        if let Some(key) = transaction {
                            node.layer.handle_transport_error(&key, now);
                        }
                    }
                }
                Action::ToUser(event) => {
                    node.events.push((now, event.clone()));
                    let mut io = TuIo {
                        layer: &mut node.layer,
                        now,
                        remote: node.remote,
                    };
                    node.tu.on_event(&event, &mut io);
                }
            }
        }
        if !busy {
            return progressed;
        }
        progressed = true;
    }
}

/// A user agent around the proxy of a [`Star`]: its node and its link to the proxy.
#[derive(Debug)]
pub(crate) struct Party {
    pub(crate) node: Node,
    /// Datagrams toward the proxy.
    pub(crate) up: Link,
    /// Datagrams from the proxy.
    pub(crate) down: Link,
    /// Every send of the proxy to this party fails, as over a dead connection: the
    /// harness reports it back with `handle_transport_error`, as the shell would.
    pub(crate) broken: bool,
    /// The party as the proxy sends to it.
    pub(crate) peer: Peer,
}

/// holdfast's proxy: a transaction layer, the proxy core, and the least of a shell
/// around them.
///
/// The shell forwards every new request to [`targets`](Self::targets), answers a
/// CANCEL 200 (481 with no INVITE to cancel) and hands it to [`Proxy::cancel`], and
/// forwards each ACK for a 2xx statelessly to the callee whose To tag it carries.
#[derive(Debug)]
pub(crate) struct ProxyNode {
    pub(crate) layer: TransactionLayer,
    pub(crate) proxy: Proxy,
    /// Where every new request goes.
    pub(crate) targets: Vec<Target>,
    /// Where an ACK for a 2xx goes: (To tag of the callee, the callee).
    pub(crate) dialogs: Vec<(String, Target)>,
    /// The events that reached the shell (those the proxy core did not keep).
    pub(crate) events: Vec<(Instant, Event)>,
    /// What the proxy core reported.
    pub(crate) finals: Vec<(Instant, ProxyEvent)>,
    /// Every message the proxy node sent.
    pub(crate) sent: Vec<Sent>,
    /// Errors of the transaction layer or the proxy core the shell saw.
    pub(crate) errors: Vec<String>,
    inbound: Inbound,
}

impl ProxyNode {
    fn next_wakeup(&self) -> Option<Instant> {
        [
            self.layer.poll_timeout(),
            self.proxy.poll_timeout(),
            self.inbound.keys().next().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The messages the proxy sent to `peer`.
    pub(crate) fn sent_to(&self, peer: &Peer) -> Vec<&Sent> {
        self.sent.iter().filter(|s| s.to == *peer).collect()
    }

    /// The shell's part: what the proxy core hands back.
    fn on_event(&mut self, event: Event, now: Instant) {
        let result = match event {
            Event::Request {
                key: Some(key),
                request,
                ..
            } => self.on_request(key, request, now),
            Event::Request {
                key: None, request, ..
            } => self.forward_ack(request),
            _ => Ok(()),
        };
        if let Err(e) = result {
            self.errors.push(e);
        }
    }

    fn on_request(
        &mut self,
        key: TransactionKey,
        request: Message,
        now: Instant,
    ) -> Result<(), String> {
        let answer = |layer: &mut TransactionLayer, status, reason| {
            let response = request.response(status, reason, Some("proxy"));
            layer
                .respond(&key, response, now)
                .map_err(|e| e.to_string())
        };
        if request.method() == Some(&Method::Cancel) {
            // §16.10: 200 to the CANCEL, then cancel the branches.
            let Some(invite) = self.layer.cancel_target(&request) else {
                return answer(&mut self.layer, 481, "Call/Transaction Does Not Exist");
            };
            answer(&mut self.layer, 200, "OK")?;
            self.proxy.cancel(&mut self.layer, &invite, now);
            return Ok(());
        }
        if request.max_forwards() == Some(0) {
            return answer(&mut self.layer, 483, "Too Many Hops");
        }
        let targets = self.targets.clone();
        match self
            .proxy
            .forward(&mut self.layer, key.clone(), request.clone(), targets, now)
        {
            Ok(()) => Ok(()),
            Err(e) => {
                answer(&mut self.layer, 480, "Temporarily Unavailable")?;
                Err(e.to_string())
            }
        }
    }

    /// §16.6 for an ACK to a 2xx: statelessly, to the callee that answered.
    fn forward_ack(&mut self, mut ack: Message) -> Result<(), String> {
        let tag = ack.to().and_then(|t| t.tag()).cloned().unwrap_or_default();
        let (_, target) = self
            .dialogs
            .iter()
            .find(|(t, _)| t.as_bytes() == &tag[..])
            .ok_or_else(|| format!("no callee for the ACK of {tag:?}"))?;
        ack.set_request_uri(target.uri.clone());
        ack.decrement_max_forwards();
        let branch = crate::proxy::route::branch(&ack);
        let transport = target.peer.transport.as_str();
        let via = Via::new(transport, &target.sent_by, &branch).ok_or("Via")?;
        ack.push_via(&via);
        self.layer.send_stateless(target.peer, ack.to_bytes());
        Ok(())
    }
}

/// holdfast's proxy between a caller and callees, each over its own simulated link,
/// with a simulated clock: the three-party counterpart of [`Pair`].
#[derive(Debug)]
pub(crate) struct Star {
    pub(crate) caller: Party,
    pub(crate) proxy: ProxyNode,
    pub(crate) callees: Vec<Party>,
    pub(crate) transport: Transport,
    pub(crate) epoch: Instant,
    pub(crate) time: Instant,
    wire: Wire,
}

/// The proxy's sent-by in its Vias.
pub(crate) const PROXY_SENT_BY: &str = "192.0.2.10:5060";

impl Star {
    /// A caller, a proxy and `callees` callees over `transport`, every link lossless;
    /// the proxy forwards to every callee in parallel (q 1000).
    pub(crate) fn new(
        transport: Transport,
        callees: usize,
        config: Config,
        proxy: ProxyConfig,
        seed: u64,
    ) -> Star {
        let proxy_addr: SocketAddr = PROXY_SENT_BY.parse().expect("address");
        let party = |addr: SocketAddr, connection: u64, tag: String| {
            let mut node = Node::new(config.clone(), peer(transport, proxy_addr, connection));
            node.tu.tag = tag;
            Party {
                node,
                up: Link::default(),
                down: Link::default(),
                broken: false,
                peer: peer(transport, addr, connection),
            }
        };
        let caller = party(
            "192.0.2.1:5060".parse().expect("address"),
            1,
            "caller".into(),
        );
        let callees: Vec<Party> = (0..callees)
            .map(|i| {
                let addr = SocketAddr::from(([192, 0, 2, 20 + i as u8], 5060));
                party(addr, 100 + i as u64, format!("callee{i}"))
            })
            .collect();
        let epoch = super::epoch();
        let mut star = Star {
            caller,
            proxy: ProxyNode {
                layer: TransactionLayer::new(config),
                proxy: Proxy::new(proxy),
                targets: Vec::new(),
                dialogs: Vec::new(),
                events: Vec::new(),
                finals: Vec::new(),
                sent: Vec::new(),
                errors: Vec::new(),
                inbound: Inbound::new(),
            },
            callees,
            transport,
            epoch,
            time: epoch,
            wire: Wire::new(seed),
        };
        let targets: Vec<Target> = (0..star.callees.len()).map(|i| star.target(i)).collect();
        star.proxy.dialogs = targets
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("callee{i}"), t.clone()))
            .collect();
        star.proxy.targets = targets;
        star
    }

    /// Over UDP, default timers and timer C, lossless.
    pub(crate) fn udp(callees: usize) -> Star {
        Star::new(
            Transport::Udp,
            callees,
            Config::default(),
            ProxyConfig::default(),
            1,
        )
    }

    /// Callee `i` as a target of q 1000, with no Path and no Record-Route.
    pub(crate) fn target(&self, i: usize) -> Target {
        let peer = self.callees[i].peer;
        Target {
            uri: Uri::parse(Bytes::from(format!("sip:callee{i}@{}", peer.addr))).expect("URI"),
            peer,
            route: Vec::new(),
            record_route: Vec::new(),
            sent_by: PROXY_SENT_BY.to_owned(),
            q: 1000,
        }
    }

    /// Every link of the star, both ways.
    pub(crate) fn set_links(&mut self, link: Link) {
        for party in std::iter::once(&mut self.caller).chain(&mut self.callees) {
            party.up = link;
            party.down = link;
        }
    }

    /// Starts a client transaction on the caller, sending to the proxy.
    pub(crate) fn start_client(&mut self, request: Message) -> TransactionKey {
        self.caller.node.start_client(request, self.time)
    }

    /// An INVITE from the caller with a fresh branch, CSeq and Call-ID.
    pub(crate) fn invite(&mut self, n: u32) -> TransactionKey {
        self.start_client(numbered_request("INVITE", n, self.transport))
    }

    /// The caller cancels the INVITE of client transaction `invite` (§9.1).
    pub(crate) fn cancel(&mut self, invite: &TransactionKey) -> TransactionKey {
        let cancel = cancel_for(self.caller.node.started(invite));
        let key = self.caller.node.start_client(cancel, self.time);
        self.caller.node.tu.cancels.push(key.clone());
        key
    }

    /// The proxy's server transaction for the caller's `n`th request.
    pub(crate) fn server_key(&self, n: usize) -> TransactionKey {
        let requests = self.proxy.events.iter().filter_map(|(_, e)| match e {
            Event::Request {
                key: Some(key),
                request,
                ..
            } if request.method() != Some(&Method::Cancel) => Some(key.clone()),
            _ => None,
        });
        requests
            .into_iter()
            .nth(n)
            .expect("the proxy got the request")
    }

    fn drive_proxy(&mut self, now: Instant) -> bool {
        let reliable = self.transport.is_reliable();
        let p = &mut self.proxy;
        let mut progressed = false;
        loop {
            let mut busy = false;
            if let Some(entry) = p.inbound.first_entry().filter(|e| e.key().0 <= now) {
                let (data, from) = entry.remove();
                busy = true;
                let message =
                    parse_datagram(data, &Limits::DEFAULT).expect("the parties send valid SIP");
                if let Err(e) = p.layer.handle_message(message, from, now) {
                    p.errors.push(e.to_string());
                }
            } else if p.layer.poll_timeout().is_some_and(|t| t <= now) {
                busy = true;
                p.layer.handle_timeout(now);
            }
            if p.proxy.poll_timeout().is_some_and(|t| t <= now) {
                busy = true;
                p.proxy.handle_timeout(&mut p.layer, now);
            }
            while let Some(action) = p.proxy.poll_action(&mut p.layer, now) {
                busy = true;
                match action {
                    Action::Send {
                        to,
                        data,
                        transaction,
                    } => {
                        p.sent.push(Sent::new(now, to, &data, transaction.clone()));
                        let party = std::iter::once(&mut self.caller)
                            .chain(&mut self.callees)
                            .find(|party| party.peer == to)
                            .expect("the proxy sends to a party");
                        if party.broken {
                            if let Some(key) = transaction {
                                p.layer.handle_transport_error(&key, now);
                            }
                            continue;
                        }
                        let from = party.node.remote;
                        let inbound = &mut party.node.inbound;
                        self.wire
                            .transmit(party.down, reliable, data, from, now, inbound);
                    }
                    Action::ToUser(event) => {
                        p.events.push((now, event.clone()));
                        p.on_event(event, now);
                    }
                }
            }
            while let Some(event) = p.proxy.poll_event() {
                busy = true;
                p.finals.push((now, event));
            }
            if !busy {
                return progressed;
            }
            progressed = true;
        }
    }
}

impl Clock for Star {
    fn epoch(&self) -> Instant {
        self.epoch
    }

    fn now(&self) -> Instant {
        self.time
    }

    fn set_now(&mut self, at: Instant) {
        self.time = at;
    }

    fn next_wakeup(&self) -> Option<Instant> {
        std::iter::once(&self.caller)
            .chain(&self.callees)
            .map(|party| party.node.next_wakeup())
            .chain([self.proxy.next_wakeup()])
            .flatten()
            .min()
    }

    fn drive_now(&mut self) {
        let reliable = self.transport.is_reliable();
        let now = self.time;
        loop {
            let mut progressed = self.drive_proxy(now);
            for party in std::iter::once(&mut self.caller).chain(&mut self.callees) {
                let (link, from) = (party.up, party.peer);
                let inbound = &mut self.proxy.inbound;
                let wire = &mut self.wire;
                progressed |= drive_node(&mut party.node, now, |data| {
                    wire.transmit(link, reliable, data, from, now, inbound);
                    true
                });
            }
            if !progressed {
                return;
            }
        }
    }
}
