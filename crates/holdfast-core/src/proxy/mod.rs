//! The stateful proxy core (RFC 3261 §16), sans-IO, on top of the
//! [`TransactionLayer`].
//!
//! The shell decides *where* a request goes (authentication, the location service, a
//! dialog's flow tokens) and hands the proxy a target set; the proxy does the rest of
//! §16:
//!
//! - §16.6 request forwarding: a copy per target with the new Request-URI, the
//!   target's Path as Route (RFC 3327), Max-Forwards decremented, the target's
//!   Record-Route values, and a Via of holdfast's own whose branch carries the loop
//!   hash ([`route::branch`]); each copy goes out in a client transaction.
//! - Forking: targets of equal q are tried in parallel, groups of lower q in turn
//!   (RFC 3261 §16.6, §16.7 item 10) when every branch of the group failed.
//! - §16.7 the response context: provisional responses (but 100) are forwarded at
//!   once; every 2xx is forwarded and ends the search (the other branches are
//!   cancelled); a 6xx ends the search and cancels the others; otherwise, when no
//!   branch is left, the best final response goes back (6xx, else the lowest class,
//!   preferring 401/407/415/420/484 within 4xx; 503 becomes 500; the challenges of
//!   every 401/407 are gathered into the one sent).
//! - §16.8 timer C for each INVITE branch, reset by every provisional response above
//!   100: on expiry a branch that has answered provisionally is cancelled, one that
//!   has not is ended as if it had answered 408. A cancelled branch with no final
//!   response 64*T1 after its CANCEL is ended the same way (§9.1).
//! - §16.10 CANCEL: the shell answers the CANCEL 200 and calls [`Proxy::cancel`];
//!   every pending branch is cancelled (a branch with no provisional response yet is
//!   cancelled as soon as one arrives, §9.1), and no further group starts.
//!
//! What happened to each request the proxy took is reported once, as
//! [`ProxyEvent::Final`], for call records.

pub mod route;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_sip::{parse_datagram, Header, HeaderName, Limits, Message, Method, Uri, Via};

use crate::transaction::{Action, Event, TransactionKey, TransactionLayer};
use crate::transport::Peer;

/// Configuration of a [`Proxy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Timer C (RFC 3261 §16.6 item 11): more than 3 minutes.
    pub timer_c: Duration,
    /// Most branches one request may fork to.
    pub max_branches: usize,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            timer_c: Duration::from_secs(181),
            max_branches: 16,
        }
    }
}

/// One destination of a forwarded request, as the shell resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The new Request-URI (a binding's Contact, or the dialog's remote target).
    pub uri: Uri,
    /// Where the request is sent: the flow the device registered over.
    pub peer: Peer,
    /// Route values to put above the request's own (the binding's Path), top first.
    pub route: Vec<Bytes>,
    /// Record-Route values to add, top first (none for requests that make no dialog).
    pub record_route: Vec<String>,
    /// holdfast's sent-by toward this target (`host:port` of the socket it leaves
    /// from) for its Via.
    pub sent_by: String,
    /// Preference (RFC 3261 §10.2.1.2, in thousandths): higher first.
    pub q: u16,
}

/// Why a request's handling ended, for call records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ending {
    /// The final response a branch gave (or the best of them, or one standing for a
    /// branch that failed: 408 for a timeout, 480 for a transport error) went to the
    /// caller; its status tells what happened.
    Responded,
    /// The caller cancelled (§16.10).
    Cancelled,
    /// Timer C or the branches' transaction timers ran out (no answer).
    NoAnswer,
}

/// What the proxy reports to the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyEvent {
    /// The first final response for a request the proxy took went to the caller.
    Final {
        /// The request's server transaction.
        server: TransactionKey,
        /// The status sent.
        status: u16,
        /// Why.
        ending: Ending,
    },
}

/// A forwarded request could not be sent at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// No target was given.
    #[error("no target")]
    NoTargets,
    /// A context already exists for that server transaction.
    #[error("the request is already being forwarded")]
    Duplicate,
}

#[derive(Debug)]
struct Context {
    request: std::sync::Arc<Message>,
    invite: bool,
    groups: VecDeque<Vec<Target>>,
    /// Every branch started for this request (client transaction keys).
    branches: Vec<TransactionKey>,
    live: usize,
    finals: Vec<Message>,
    final_sent: bool,
    cancelled: bool,
    timed_out: bool,
    stop: bool,
}

#[derive(Debug)]
struct Branch {
    server: TransactionKey,
    /// What a CANCEL of this branch copies (INVITE branches only).
    cancel: Option<CancelParts>,
    peer: Peer,
    provisional: bool,
    cancel_pending: bool,
    cancel_sent: bool,
    done: bool,
    timer_c: Option<(Instant, u64)>,
}

/// The proxy core. One per transaction layer.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    contexts: HashMap<TransactionKey, Context>,
    branches: HashMap<TransactionKey, Branch>,
    cancels: HashMap<TransactionKey, ()>,
    timer_c: BTreeMap<(Instant, u64), TransactionKey>,
    next_timer: u64,
    events: VecDeque<ProxyEvent>,
    limits: Limits,
}

impl Proxy {
    /// A proxy with no contexts.
    pub fn new(config: ProxyConfig) -> Proxy {
        Proxy {
            config,
            contexts: HashMap::new(),
            branches: HashMap::new(),
            cancels: HashMap::new(),
            timer_c: BTreeMap::new(),
            next_timer: 0,
            events: VecDeque::new(),
            limits: Limits::default(),
        }
    }

    /// Requests being forwarded.
    pub fn len(&self) -> usize {
        self.contexts.len()
    }

    /// True when nothing is being forwarded.
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }

    /// Whether `server` is a request the proxy took.
    pub fn has_context(&self, server: &TransactionKey) -> bool {
        self.contexts.contains_key(server)
    }

    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<ProxyEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer_c.keys().next().map(|(at, _)| *at)
    }

    /// Forwards `request`, which opened server transaction `server`, to `targets`
    /// (§16.6). The request's Max-Forwards must be above zero (the shell answers 483
    /// otherwise, §16.3). Every outcome from here on reaches the caller through
    /// `layer`.
    pub fn forward(
        &mut self,
        layer: &mut TransactionLayer,
        server: TransactionKey,
        request: Message,
        mut targets: Vec<Target>,
        now: Instant,
    ) -> Result<(), ForwardError> {
        if targets.is_empty() {
            return Err(ForwardError::NoTargets);
        }
        if self.contexts.contains_key(&server) {
            return Err(ForwardError::Duplicate);
        }
        // Highest q first; equal q keep their order and are tried together. Past
        // max_branches, the least preferred are left out.
        targets.sort_by_key(|t| std::cmp::Reverse(t.q));
        targets.truncate(self.config.max_branches);
        let mut groups: VecDeque<Vec<Target>> = VecDeque::new();
        for t in targets {
            match groups.back_mut() {
                Some(g) if g.first().is_some_and(|f| f.q == t.q) => g.push(t),
                _ => groups.push_back(vec![t]),
            }
        }
        let invite = request.method() == Some(&Method::Invite);
        self.contexts.insert(
            server.clone(),
            Context {
                request: std::sync::Arc::new(request),
                invite,
                groups,
                branches: Vec::new(),
                live: 0,
                finals: Vec::new(),
                final_sent: false,
                cancelled: false,
                timed_out: false,
                stop: false,
            },
        );
        self.advance(layer, &server, now);
        Ok(())
    }

    /// Starts the next group of targets, or sends the best response when none is
    /// left and no branch is pending.
    fn advance(&mut self, layer: &mut TransactionLayer, server: &TransactionKey, now: Instant) {
        loop {
            let Some(ctx) = self.contexts.get_mut(server) else {
                return;
            };
            if ctx.live > 0 {
                return;
            }
            let next = if ctx.stop || ctx.final_sent {
                None
            } else {
                ctx.groups.pop_front()
            };
            let Some(group) = next else {
                self.finish(layer, server, now);
                return;
            };
            let request = ctx.request.clone();
            for target in group {
                self.start_branch(layer, server, &request, target, now);
            }
        }
    }

    fn start_branch(
        &mut self,
        layer: &mut TransactionLayer,
        server: &TransactionKey,
        request: &Message,
        target: Target,
        now: Instant,
    ) {
        let mut out = request.clone();
        let branch = route::branch(request);
        out.set_request_uri(target.uri.clone());
        let _ = out.decrement_max_forwards();
        route::ensure_content_length(&mut out);
        route::push_routes(&mut out, &target.route);
        for rr in target.record_route.iter().rev() {
            let _ = out.push_record_route(rr.as_bytes());
        }
        let via = Via::new(target.peer.transport.as_str(), &target.sent_by, &branch);
        let mut cancel = None;
        let started = match via {
            Some(via) => {
                out.push_via(&via);
                if out.method() == Some(&Method::Invite) {
                    cancel = CancelParts::of(&out);
                }
                layer.start_client(out, target.peer, now).ok()
            }
            None => None,
        };
        let Some(ctx) = self.contexts.get_mut(server) else {
            return;
        };
        let Some(key) = started else {
            // Could not even start (the transaction table is full): as if the branch
            // had answered 503.
            let resp = ctx
                .request
                .response(503, "Service Unavailable", Some(&crate::tag()));
            ctx.finals.push(resp);
            return;
        };
        ctx.live = ctx.live.saturating_add(1);
        ctx.branches.push(key.clone());
        let timer_c = if ctx.invite {
            let id = self.next_timer;
            self.next_timer = self.next_timer.wrapping_add(1);
            let at = now.checked_add(self.config.timer_c).unwrap_or(now);
            self.timer_c.insert((at, id), key.clone());
            Some((at, id))
        } else {
            None
        };
        self.branches.insert(
            key,
            Branch {
                server: server.clone(),
                cancel,
                peer: target.peer,
                provisional: false,
                cancel_pending: false,
                cancel_sent: false,
                done: false,
                timer_c,
            },
        );
    }

    /// Handles a transaction-layer event if it belongs to the proxy; gives it back
    /// otherwise.
    pub fn handle_event(
        &mut self,
        layer: &mut TransactionLayer,
        event: Event,
        now: Instant,
    ) -> Option<Event> {
        match event {
            Event::Response { key, response, .. } if self.owns(&key) => {
                self.on_response(layer, &key, response, now);
                None
            }
            Event::Timeout { key, .. } if self.owns(&key) => {
                self.branch_failed(layer, &key, 408, "Request Timeout", now);
                None
            }
            Event::TransportError { key } if self.owns(&key) => {
                self.branch_failed(layer, &key, 480, "Temporarily Unavailable", now);
                None
            }
            Event::Terminated { key } if self.owns(&key) => {
                self.cancels.remove(&key);
                if self.branches.get(&key).is_some_and(|b| !b.done) {
                    self.branch_failed(layer, &key, 408, "Request Timeout", now);
                }
                self.remove_branch(&key);
                None
            }
            Event::Terminated { key } if self.contexts.contains_key(&key) => {
                // The server transaction is gone; branches still pending end on their
                // own timers and find no context.
                if let Some(ctx) = self.contexts.get_mut(&key) {
                    ctx.final_sent = true;
                    if ctx.live == 0 {
                        self.contexts.remove(&key);
                    }
                }
                None
            }
            other => Some(other),
        }
    }

    fn owns(&self, key: &TransactionKey) -> bool {
        self.branches.contains_key(key) || self.cancels.contains_key(key)
    }

    fn remove_branch(&mut self, key: &TransactionKey) {
        if let Some(b) = self.branches.remove(key) {
            if let Some(t) = b.timer_c {
                self.timer_c.remove(&t);
            }
        }
    }

    fn on_response(
        &mut self,
        layer: &mut TransactionLayer,
        key: &TransactionKey,
        mut response: Message,
        now: Instant,
    ) {
        if self.cancels.contains_key(key) {
            // The answer to holdfast's own CANCEL: nothing to forward.
            return;
        }
        let Some(status) = response.status() else {
            return;
        };
        // §16.7 item 3: remove holdfast's own Via.
        response.pop_via();
        route::ensure_content_length(&mut response);
        if response.top_via().is_none() {
            return;
        }
        let Some(branch) = self.branches.get_mut(key) else {
            return;
        };
        let server = branch.server.clone();
        if status < 200 {
            branch.provisional = true;
            // Once cancelled, the branch waits for its final response 64*T1 at most
            // (`send_cancel`); its provisional responses do not extend that.
            if status > 100 && !branch.cancel_sent {
                if let Some(old) = branch.timer_c.take() {
                    self.timer_c.remove(&old);
                    let id = self.next_timer;
                    self.next_timer = self.next_timer.wrapping_add(1);
                    let at = now.checked_add(self.config.timer_c).unwrap_or(now);
                    self.timer_c.insert((at, id), key.clone());
                    branch.timer_c = Some((at, id));
                }
            }
            if branch.cancel_pending && !branch.cancel_sent {
                self.send_cancel(layer, key, now);
            }
            let forward = status > 100
                && self
                    .contexts
                    .get(&server)
                    .is_some_and(|c| !c.final_sent && !c.cancelled);
            if forward {
                let _ = layer.respond(&server, response, now);
            }
            return;
        }
        // A final response: the branch is done (an INVITE 2xx may repeat, RFC 6026).
        let first_final = !branch.done;
        if first_final {
            branch.done = true;
            if let Some(t) = branch.timer_c.take() {
                self.timer_c.remove(&t);
            }
        }
        let Some(ctx) = self.contexts.get_mut(&server) else {
            // The context is gone, but a retransmitted 2xx still goes to the caller
            // (its first copy may have been lost) while the server transaction lives.
            if (200..300).contains(&status) {
                let _ = layer.respond(&server, response, now);
            }
            return;
        };
        if first_final {
            ctx.live = ctx.live.saturating_sub(1);
        }
        if (200..300).contains(&status) {
            // Every 2xx is forwarded (§16.7 item 9; each fork's answer makes a dialog).
            let first = !ctx.final_sent;
            ctx.final_sent = true;
            ctx.stop = true;
            let _ = layer.respond(&server, response, now);
            if first {
                self.events.push_back(ProxyEvent::Final {
                    server: server.clone(),
                    status,
                    ending: Ending::Responded,
                });
                self.cancel_branches(layer, &server, now);
            }
        } else if first_final {
            if status >= 600 {
                ctx.stop = true;
            }
            ctx.finals.push(response);
            if status >= 600 {
                self.cancel_branches(layer, &server, now);
            }
        }
        self.advance(layer, &server, now);
    }

    /// A branch ended without a response (timeout, transport error): as if it had
    /// answered `status` (§16.7 item 6 treats a timeout as 408).
    fn branch_failed(
        &mut self,
        layer: &mut TransactionLayer,
        key: &TransactionKey,
        status: u16,
        reason: &str,
        now: Instant,
    ) {
        let Some(branch) = self.branches.get_mut(key) else {
            return;
        };
        if branch.done {
            return;
        }
        branch.done = true;
        if let Some(t) = branch.timer_c.take() {
            self.timer_c.remove(&t);
        }
        let server = branch.server.clone();
        if let Some(ctx) = self.contexts.get_mut(&server) {
            ctx.live = ctx.live.saturating_sub(1);
            let resp = ctx.request.response(status, reason, Some(&crate::tag()));
            ctx.finals.push(resp);
        }
        self.advance(layer, &server, now);
    }

    /// Sends the best final response if none was sent (§16.7 item 6), then drops the
    /// context once no branch is pending.
    fn finish(&mut self, layer: &mut TransactionLayer, server: &TransactionKey, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(server) else {
            return;
        };
        if !ctx.final_sent {
            ctx.final_sent = true;
            let mut best = best_response(&ctx.finals).unwrap_or_else(|| {
                ctx.request
                    .response(408, "Request Timeout", Some(&crate::tag()))
            });
            if best.status() == Some(503) {
                best = rebuild_status(&best, 500, "Server Internal Error");
            } else if ctx.timed_out && !ctx.cancelled && best.status() == Some(487) {
                // Timer C cancelled the branches: the caller hears "no answer".
                best = rebuild_status(&best, 408, "Request Timeout");
            } else if ctx.cancelled && best.status() == Some(408) {
                // The caller cancelled and a branch that never rang was given up: what
                // the caller asked for was a cancellation (RFC 3261 §9.2).
                best = rebuild_status(&best, 487, "Request Terminated");
            }
            if matches!(best.status(), Some(401 | 407)) {
                gather_challenges(&mut best, &ctx.finals);
            }
            let status = best.status().unwrap_or(500);
            let ending = if ctx.cancelled {
                Ending::Cancelled
            } else if ctx.timed_out || status == 408 {
                Ending::NoAnswer
            } else {
                Ending::Responded
            };
            let _ = layer.respond(server, best, now);
            self.events.push_back(ProxyEvent::Final {
                server: server.clone(),
                status,
                ending,
            });
        }
        if ctx.live == 0 {
            self.contexts.remove(server);
        }
    }

    /// The caller cancelled `server` (§16.10): cancel every pending branch and start
    /// no more. False when the proxy has no such request.
    pub fn cancel(
        &mut self,
        layer: &mut TransactionLayer,
        server: &TransactionKey,
        now: Instant,
    ) -> bool {
        let Some(ctx) = self.contexts.get_mut(server) else {
            return false;
        };
        if !ctx.final_sent {
            ctx.cancelled = true;
        }
        ctx.stop = true;
        self.cancel_branches(layer, server, now);
        self.advance(layer, server, now);
        true
    }

    fn cancel_branches(
        &mut self,
        layer: &mut TransactionLayer,
        server: &TransactionKey,
        now: Instant,
    ) {
        let keys: Vec<TransactionKey> = match self.contexts.get(server) {
            Some(ctx) => ctx.branches.clone(),
            None => return,
        };
        for key in keys {
            let Some(b) = self.branches.get_mut(&key) else {
                continue;
            };
            if b.done || b.cancel_sent || b.cancel.is_none() {
                continue;
            }
            if b.provisional {
                self.send_cancel(layer, &key, now);
            } else {
                // §9.1: no CANCEL before a provisional response; send it then.
                b.cancel_pending = true;
            }
        }
    }

    fn send_cancel(&mut self, layer: &mut TransactionLayer, key: &TransactionKey, now: Instant) {
        let Some(b) = self.branches.get_mut(key) else {
            return;
        };
        b.cancel_sent = true;
        // §9.1: with no final response 64*T1 after the CANCEL, the branch is given up
        // (`handle_timeout`); timer C's slot holds that deadline. Its INVITE client
        // transaction, in Proceeding, has no timer of its own to end it.
        if let Some(old) = b.timer_c.take() {
            self.timer_c.remove(&old);
        }
        let id = self.next_timer;
        self.next_timer = self.next_timer.wrapping_add(1);
        let at = now
            .checked_add(layer.config().timers.t1x64())
            .unwrap_or(now);
        self.timer_c.insert((at, id), key.clone());
        b.timer_c = Some((at, id));
        let Some(cancel) = b.cancel.as_ref().and_then(|c| c.build(&self.limits)) else {
            return;
        };
        if let Ok(k) = layer.start_client(cancel, b.peer, now) {
            self.cancels.insert(k, ());
        }
    }

    /// Runs timer C (§16.8), and the 64*T1 wait for a final response after a CANCEL
    /// (§9.1), for every branch whose time has come.
    pub fn handle_timeout(&mut self, layer: &mut TransactionLayer, now: Instant) {
        while let Some(entry) = self.timer_c.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            let Some(b) = self.branches.get_mut(&key) else {
                continue;
            };
            b.timer_c = None;
            let server = b.server.clone();
            let cancel = b.provisional && !b.cancel_sent;
            if let Some(ctx) = self.contexts.get_mut(&server) {
                ctx.timed_out = true;
            }
            if cancel {
                // The branch answers the CANCEL with 487; that ends it.
                self.send_cancel(layer, &key, now);
            } else {
                // No provisional response (§16.8), or no final response 64*T1 after
                // the CANCEL (§9.1): as if the branch had answered 408.
                self.branch_failed(layer, &key, 408, "Request Timeout", now);
                layer.terminate(&key);
            }
        }
    }

    /// Carries the transaction layer's actions to the shell, giving the proxy the
    /// events that are its own: what a shell's drain loop calls instead of
    /// [`TransactionLayer::poll_action`].
    pub fn poll_action(&mut self, layer: &mut TransactionLayer, now: Instant) -> Option<Action> {
        loop {
            match layer.poll_action()? {
                Action::ToUser(event) => {
                    if let Some(event) = self.handle_event(layer, event, now) {
                        return Some(Action::ToUser(event));
                    }
                }
                send => return Some(send),
            }
        }
    }
}

/// §16.7 item 6: 6xx first, else the lowest class; within 4xx the responses that let
/// the caller retry (401, 407, 415, 420, 484) first; the earliest among equals.
fn best_response(finals: &[Message]) -> Option<Message> {
    let rank = |m: &Message| -> (u16, u16) {
        let s = m.status().unwrap_or(500);
        let class = s / 100;
        let class_rank = if class == 6 { 0 } else { class };
        let within = u16::from(!matches!(s, 401 | 407 | 415 | 420 | 484));
        (class_rank, within)
    };
    finals.iter().min_by_key(|m| rank(m)).cloned()
}

/// The same response with another status line.
fn rebuild_status(resp: &Message, code: u16, reason: &str) -> Message {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n").into_bytes();
    for h in resp.headers() {
        out.extend_from_slice(h.line());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(resp.body());
    parse_datagram(Bytes::from(out), &Limits::default()).unwrap_or_else(|_| resp.clone())
}

/// Adds to `best` the challenges of every other 401/407 (§16.7 item 7).
fn gather_challenges(best: &mut Message, finals: &[Message]) {
    let mut have: Vec<Bytes> = best
        .headers()
        .iter()
        .filter(|h| is_challenge(h))
        .map(|h| h.line().clone())
        .collect();
    for m in finals {
        if !matches!(m.status(), Some(401 | 407)) {
            continue;
        }
        for h in m.headers() {
            if is_challenge(h) && !have.contains(h.line()) {
                let at = best.headers().len().saturating_sub(1);
                best.insert_header(at, h.clone());
                have.push(h.line().clone());
            }
        }
    }
}

fn is_challenge(h: &Header) -> bool {
    matches!(
        h.name(),
        HeaderName::WwwAuthenticate | HeaderName::ProxyAuthenticate
    )
}

/// What the CANCEL of a forwarded INVITE copies from it (§9.1): the Request-URI, the
/// branch's own Via (only that one), the Route, From, To and Call-ID fields, and the
/// CSeq number. Shared slices of the INVITE, kept instead of the whole request.
#[derive(Debug)]
struct CancelParts {
    uri: Bytes,
    via: Bytes,
    lines: Vec<Bytes>,
    cseq: u32,
}

impl CancelParts {
    fn of(invite: &Message) -> Option<CancelParts> {
        Some(CancelParts {
            uri: invite.request_line()?.uri.as_bytes().clone(),
            via: invite.top_via()?.as_bytes().clone(),
            lines: invite
                .headers()
                .iter()
                .filter(|h| {
                    matches!(
                        h.name(),
                        HeaderName::Route | HeaderName::From | HeaderName::To | HeaderName::CallId
                    )
                })
                .map(|h| h.line().clone())
                .collect(),
            cseq: invite.cseq()?.seq,
        })
    }

    /// The CANCEL request.
    fn build(&self, limits: &Limits) -> Option<Message> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"CANCEL ");
        out.extend_from_slice(&self.uri);
        out.extend_from_slice(b" SIP/2.0\r\nVia: ");
        out.extend_from_slice(&self.via);
        out.extend_from_slice(b"\r\n");
        for line in &self.lines {
            out.extend_from_slice(line);
        }
        let cseq = self.cseq;
        out.extend_from_slice(
            format!("CSeq: {cseq} CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        );
        parse_datagram(Bytes::from(out), limits).ok()
    }
}
