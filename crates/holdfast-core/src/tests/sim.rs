//! The simulation harness: [`Pair`] drives a UAC [`Node`] and a UAS [`Node`] over a
//! [`Network`] that can drop, duplicate, delay and reorder datagrams, with a seeded
//! PRNG so every run is reproducible.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_sip::{parse_datagram, HeaderName, Limits, Message, Method};

use crate::transaction::{Action, Config, Error, Event, TimerConfig, TransactionKey};
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
    rng: XorShift,
    seq: u64,
}

impl Network {
    fn transmit(
        &mut self,
        link: Link,
        reliable: bool,
        data: Bytes,
        from: Peer,
        now: Instant,
        inbound: &mut BTreeMap<(Instant, u64), (Bytes, Peer)>,
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
    pub(crate) message: Message,
    pub(crate) transaction: Option<TransactionKey>,
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
    inbound: BTreeMap<(Instant, u64), (Bytes, Peer)>,
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
                let ok = request.response(status, reason(status), Some("uas"));
                if let Err(e) = io.layer.respond(key, ok, io.now) {
                    self.errors.push(e);
                }
                if let Some(target) = target {
                    self.pending.retain(|p| p.1 != target);
                    let invite = self.invites.iter().find(|(k, _)| *k == target);
                    if let Some((_, invite)) = invite {
                        let terminated = invite.response(487, reason(487), Some("uas"));
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
            let response = request.response(status, reason(status), Some("uas"));
            self.pending.push((io.now + delay, key.clone(), response));
        }
        self.on_timeout(io);
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
        let connection = transport.is_reliable().then_some(1);
        let to_uas = Peer {
            transport,
            addr: uas_addr,
            connection,
            local: None,
        };
        let to_uac = Peer {
            transport,
            addr: uac_addr,
            connection,
            local: None,
        };
        let epoch = super::epoch();
        Pair {
            uac: Node::new(config.clone(), to_uas),
            uas: Node::new(config, to_uac),
            net: Network {
                to_uas: Link::default(),
                to_uac: Link::default(),
                broken: false,
                rng: XorShift::new(seed),
                seq: 0,
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

    /// The instant `n` milliseconds after the start of the simulation.
    pub(crate) fn at(&self, n: u64) -> Instant {
        self.epoch + ms(n)
    }

    /// Milliseconds since the start of the simulation.
    pub(crate) fn ms_since_start(&self, at: Instant) -> u64 {
        (at - self.epoch).as_millis() as u64
    }

    pub(crate) fn ms_list(&self, times: &[Instant]) -> Vec<u64> {
        times.iter().map(|t| self.ms_since_start(*t)).collect()
    }

    /// Starts a client transaction on the UAC, sending to the UAS.
    pub(crate) fn start_client(&mut self, request: Message) -> TransactionKey {
        let key = self
            .uac
            .layer
            .start_client(request.clone(), self.uac.remote, self.time)
            .expect("client transaction starts");
        self.uac.tu.started.push((key.clone(), request));
        key
    }

    /// An INVITE from the UAC with a fresh branch.
    pub(crate) fn invite(&mut self, n: u32) -> TransactionKey {
        let request = request(
            "INVITE",
            &format!("z9hG4bKinv{n}"),
            n,
            &format!("call-{n}"),
            self.transport,
        );
        self.start_client(request)
    }

    /// A non-INVITE request from the UAC with a fresh branch.
    pub(crate) fn options(&mut self, n: u32) -> TransactionKey {
        let request = request(
            "OPTIONS",
            &format!("z9hG4bKopt{n}"),
            n,
            &format!("opt-{n}"),
            self.transport,
        );
        self.start_client(request)
    }

    /// Delivers `message` to the UAS now, as if the UAC had sent it.
    pub(crate) fn inject_to_uas(&mut self, message: &Message) {
        let from = self.uas.remote;
        self.net.seq += 1;
        self.uas
            .inbound
            .insert((self.time, self.net.seq), (message.to_bytes(), from));
    }

    /// Delivers `message` to the UAC now, as if the UAS had sent it.
    pub(crate) fn inject_to_uac(&mut self, message: &Message) {
        let from = self.uac.remote;
        self.net.seq += 1;
        self.uac
            .inbound
            .insert((self.time, self.net.seq), (message.to_bytes(), from));
    }

    /// Handles everything due now on both nodes, then advances the clock to the next
    /// deadline. False when nothing is left to do.
    pub(crate) fn step(&mut self) -> bool {
        self.drive_now();
        match self.next_wakeup() {
            Some(t) => {
                self.time = self.time.max(t);
                true
            }
            None => false,
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        [self.uac.next_wakeup(), self.uas.next_wakeup()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs until both nodes are idle: no datagram in flight, no timer armed.
    pub(crate) fn drive(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the simulation never went idle");
    }

    /// Runs until `until`, leaving the clock there.
    pub(crate) fn drive_until(&mut self, until: Instant) {
        loop {
            self.drive_now();
            match self.next_wakeup() {
                Some(t) if t <= until => self.time = self.time.max(t),
                _ => {
                    self.time = until;
                    self.drive_now();
                    return;
                }
            }
        }
    }

    /// Runs for `d` of simulated time.
    pub(crate) fn drive_for(&mut self, d: Duration) {
        self.drive_until(self.time + d);
    }

    /// Handles everything due at the current time, until both nodes are quiet.
    fn drive_now(&mut self) {
        let reliable = self.transport.is_reliable();
        loop {
            let a = drive_node(
                &mut self.uac,
                &mut self.uas,
                self.net.to_uas,
                &mut self.net,
                self.time,
                reliable,
            );
            let b = drive_node(
                &mut self.uas,
                &mut self.uac,
                self.net.to_uac,
                &mut self.net,
                self.time,
                reliable,
            );
            if !a && !b {
                return;
            }
        }
    }
}

/// Runs one node at `now`: delivers due datagrams, fires due timers, and drains the
/// layer's actions to the network and the TU. True if anything happened.
fn drive_node(
    node: &mut Node,
    other: &mut Node,
    link: Link,
    net: &mut Network,
    now: Instant,
    reliable: bool,
) -> bool {
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
                    let message = parse_datagram(data.clone(), &Limits::DEFAULT)
                        .expect("the layer sends valid SIP");
                    node.sent.push(Sent {
                        at: now,
                        message,
                        transaction: transaction.clone(),
                    });
                    if net.broken {
                        if let Some(key) = transaction {
                            node.layer.handle_transport_error(&key, now);
                        }
                        continue;
                    }
                    net.transmit(link, reliable, data, other.remote, now, &mut other.inbound);
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
