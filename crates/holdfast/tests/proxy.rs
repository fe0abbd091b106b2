//! The stateful proxy end to end: the real binary, and raw user agents over real
//! sockets on loopback whose every message is checked.
//!
//! - Authentication: a local user's INVITE is challenged 407 in the domain's realm,
//!   forwarded with the right credentials (which are not passed on), and refused with
//!   one identical 403 for a wrong password, an unknown user and someone else's
//!   credentials; a refused request is never challenged again.
//! - Routing answers: 404, 480, 403 for a domain holdfast does not serve (nothing is
//!   sent anywhere, no name is resolved), 483, 482 for a request that comes back.
//! - Calls, UDP to UDP and UDP to TCP: the forwarded INVITE's Via, Record-Route,
//!   Max-Forwards and Request-URI; responses relayed; ACK and BYE both ways along the
//!   route set; CANCEL while the INVITE is being admitted, and before and after the
//!   callee's provisional; busy; no answer (timer B, with a small T1); forking; and
//!   the call records all of these leave.
//! - Crash: a call up across `kill -9` and a restart still ends and gets its record
//!   closed, with a configured secret (its flow tokens still verify) and without
//!   (the binding whose Contact is the Request-URI).
//! - No open relay: a forged or altered flow token, or a preloaded Route on a new
//!   request, sends nothing to the address it names and skips no authentication.
//!
//! Every receive has a deadline; a retransmission of a message already seen and
//! holdfast's own 100 Trying are skipped, anything else unexpected fails the test.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use support::{
    bounded, challenges_in, note, unique, Client, Core, CoreBuilder, Recv, SipMessage, Transport,
    LOCALHOST,
};

const LIMIT: Duration = Duration::from_secs(45);
/// How long an expected message may take.
const WAIT: Duration = Duration::from_secs(5);
/// How long to listen before concluding that nothing was sent.
const QUIET: Duration = Duration::from_millis(600);
const DOMAIN: &str = "example.test";
const TOKEN: &str = "e2e-proxy-admin-token";
const SECRET: &str = "e2e-proxy-fixed-secret";

fn password(user: &str) -> String {
    format!("{user}-secret")
}

/// A core on UDP and TCP serving example.test with alice, bob, carol (who never
/// registers) and loop.
fn core_builder(tag: &str) -> CoreBuilder {
    let mut b = CoreBuilder::new(tag)
        .listen(Transport::Udp, LOCALHOST)
        .listen(Transport::Tcp, LOCALHOST)
        .admin_token(TOKEN);
    for user in ["alice", "bob", "carol", "loop"] {
        b = b.user(&format!("{user}@{DOMAIN}:{}", password(user)));
    }
    b
}

fn new_branch() -> String {
    format!("z9hG4bK-{}", unique())
}

// ---------------------------------------------------------------------------------
// A user agent over raw sockets
// ---------------------------------------------------------------------------------

/// A request as sent, for its ACK or CANCEL.
#[derive(Debug, Clone)]
struct Sent {
    branch: String,
    cseq: u32,
}

/// A dialog (or the attempt at one) as one side sees it: what its requests carry
/// (RFC 3261 §12).
#[derive(Debug, Clone)]
struct Dialog {
    call_id: String,
    /// From of this side's requests, with its tag.
    local: String,
    /// To of this side's requests, with the remote tag once known.
    remote: String,
    /// The Request-URI: the remote target.
    target: String,
    /// The route set, top first.
    route: Vec<String>,
    cseq: u32,
}

impl Dialog {
    /// A new call from `ua` to `uri`.
    fn outgoing(ua: &Ua, uri: &str) -> Dialog {
        Dialog {
            call_id: format!("{}@{}", unique(), ua.user),
            local: format!("<{}>;tag={}", ua.aor(), unique()),
            remote: format!("<{uri}>"),
            target: uri.to_string(),
            route: Vec::new(),
            cseq: 0,
        }
    }

    /// The caller's dialog once `answer` (a 2xx) came: the remote tag, the Contact as
    /// target, the Record-Route set reversed (RFC 3261 §12.1.2).
    fn confirmed(&self, answer: &SipMessage) -> Dialog {
        let mut route = answer.values("Record-Route");
        route.reverse();
        Dialog {
            remote: answer.header("To").expect("To").to_string(),
            target: contact_uri(answer),
            route,
            ..self.clone()
        }
    }

    /// The callee's dialog for the INVITE it answered with `tag` (RFC 3261 §12.1.1).
    fn incoming(invite: &SipMessage, tag: &str) -> Dialog {
        Dialog {
            call_id: invite.header("Call-ID").expect("Call-ID").to_string(),
            local: format!("{};tag={tag}", invite.header("To").expect("To")),
            remote: invite.header("From").expect("From").to_string(),
            target: contact_uri(invite),
            route: invite.values("Record-Route"),
            cseq: 0,
        }
    }

    /// A request of this dialog from `ua`.
    fn request(&self, ua: &Ua, method: &str, sent: &Sent, extra: &[String]) -> String {
        let mut s = format!(
            "{method} {} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\n",
            self.target,
            ua.via(&sent.branch)
        );
        for r in &self.route {
            s.push_str(&format!("Route: {r}\r\n"));
        }
        s.push_str(&format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\n",
            self.local, self.remote, self.call_id, sent.cseq
        ));
        for h in extra {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s
    }
}

/// The URI of a message's Contact.
fn contact_uri(m: &SipMessage) -> String {
    let c = m
        .header("Contact")
        .unwrap_or_else(|| panic!("no Contact:\n{}", m.raw));
    c.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(u, _)| u.to_string())
        .unwrap_or_else(|| panic!("Contact without <>: {c}"))
}

/// A UAS's response to `req` (RFC 3261 §8.2.6): its Vias, From, To (with `tag`
/// when it has none), Call-ID and CSeq, its Record-Route in a provisional or 2xx
/// answer to an INVITE, and `extra`.
fn response(req: &SipMessage, status: u16, reason: &str, tag: &str, extra: &[String]) -> String {
    let mut s = format!("SIP/2.0 {status} {reason}\r\n");
    let dialog = req.method() == Some("INVITE") && (101..300).contains(&status);
    for (name, value) in &req.headers {
        match name.as_str() {
            "Via" | "From" | "Call-ID" | "CSeq" => {}
            "Record-Route" if dialog => {}
            "To" if !value.contains("tag=") => {
                s.push_str(&format!("To: {value};tag={tag}\r\n"));
                continue;
            }
            "To" => {}
            _ => continue,
        }
        s.push_str(&format!("{name}: {value}\r\n"));
    }
    for h in extra {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s
}

/// A user of example.test with one socket (or connection) to the core.
struct Ua {
    user: String,
    client: Client,
    /// Every message received, to tell a retransmission from a new one.
    seen: HashSet<String>,
    reg_call_id: String,
    reg_cseq: u32,
}

impl Ua {
    async fn new(core: &Core, t: Transport, user: &str) -> Ua {
        Ua {
            user: user.to_string(),
            client: Client::connect(core, t, false).await,
            seen: HashSet::new(),
            reg_call_id: format!("{}@reg", unique()),
            reg_cseq: 0,
        }
    }

    fn aor(&self) -> String {
        format!("sip:{}@{DOMAIN}", self.user)
    }

    fn local(&self) -> SocketAddr {
        self.client.local()
    }

    fn transport(&self) -> Transport {
        self.client.transport()
    }

    fn contact(&self) -> String {
        match self.transport() {
            Transport::Udp => format!("sip:{}@{}", self.user, self.local()),
            t => format!(
                "sip:{}@{};transport={}",
                self.user,
                self.local(),
                t.as_str()
            ),
        }
    }

    fn contact_header(&self) -> String {
        format!("Contact: <{}>", self.contact())
    }

    fn via(&self, branch: &str) -> String {
        format!(
            "Via: SIP/2.0/{} {};branch={branch};rport",
            self.transport().via(),
            self.local()
        )
    }

    async fn send(&mut self, text: &str) {
        self.client
            .send(text.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{}: send: {e}", self.user));
    }

    /// The next message that is neither a retransmission of one already received nor
    /// a 100 Trying, or `None` when nothing comes within `limit`.
    async fn try_next(&mut self, limit: Duration) -> Option<SipMessage> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.client.recv(left).await {
                Recv::Message(bytes) => {
                    let m = SipMessage::parse(&bytes).unwrap_or_else(|| {
                        panic!(
                            "{}: not SIP: {}",
                            self.user,
                            String::from_utf8_lossy(&bytes)
                        )
                    });
                    if m.status() == Some(100) || !self.seen.insert(m.raw.clone()) {
                        continue;
                    }
                    return Some(m);
                }
                Recv::Timeout => return None,
                Recv::Closed(why) => panic!("{}: connection closed: {why}", self.user),
            }
        }
    }

    async fn next(&mut self) -> SipMessage {
        match self.try_next(WAIT).await {
            Some(m) => m,
            None => panic!("{}: nothing within {WAIT:?}", self.user),
        }
    }

    /// Asserts that nothing new arrives for a while.
    async fn quiet(&mut self) {
        if let Some(m) = self.try_next(QUIET).await {
            panic!("{}: expected nothing, got:\n{}", self.user, m.raw);
        }
    }

    async fn expect_request(&mut self, method: &str) -> SipMessage {
        let m = self.next().await;
        assert_eq!(
            m.method(),
            Some(method),
            "{}: expected {method}, got:\n{}",
            self.user,
            m.raw
        );
        m
    }

    async fn expect_response(&mut self, status: u16, method: &str) -> SipMessage {
        let m = self.next().await;
        assert_eq!(
            (m.status(), m.cseq_method()),
            (Some(status), Some(method)),
            "{}: expected {status} to {method}, got:\n{}",
            self.user,
            m.raw
        );
        m
    }

    /// Answers `req` with `tag`; provisional and 2xx answers to an INVITE carry
    /// this UA's Contact.
    async fn reply(&mut self, req: &SipMessage, status: u16, reason: &str, tag: &str) {
        let mut extra = Vec::new();
        if req.method() == Some("INVITE") && (101..300).contains(&status) {
            extra.push(self.contact_header());
        }
        self.send(&response(req, status, reason, tag, &extra)).await;
    }

    /// Takes the CANCEL of `invite` and ends it as a UAS does (RFC 3261 §9.2): 200 to
    /// the CANCEL, 487 to the INVITE, then the ACK for the 487. Gives the CANCEL.
    async fn cancelled(&mut self, invite: &SipMessage, tag: &str) -> SipMessage {
        let cancel = self.expect_request("CANCEL").await;
        self.reply(&cancel, 200, "OK", tag).await;
        self.reply(invite, 487, "Request Terminated", tag).await;
        self.expect_request("ACK").await;
        cancel
    }

    /// Registers `contact` for this UA's AoR through the MD5 challenge.
    async fn register_contact(&mut self, contact: &str) {
        let mut auth = None;
        loop {
            self.reg_cseq += 1;
            let mut s = format!(
                "REGISTER sip:{DOMAIN} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\n\
                 From: <{aor}>;tag={}\r\nTo: <{aor}>\r\nCall-ID: {}\r\n\
                 CSeq: {} REGISTER\r\nContact: <{contact}>\r\nExpires: 3600\r\n",
                self.via(&new_branch()),
                unique(),
                self.reg_call_id,
                self.reg_cseq,
                aor = self.aor(),
            );
            if let Some(a) = &auth {
                s.push_str(&format!("Authorization: {a}\r\n"));
            }
            s.push_str("Content-Length: 0\r\n\r\n");
            self.send(&s).await;
            let r = self.next().await;
            match (r.status(), &auth) {
                (Some(401), None) => {
                    let ch = challenges_in(&r.headers, "WWW-Authenticate")
                        .into_iter()
                        .find(|c| c.algorithm() == "MD5")
                        .unwrap_or_else(|| panic!("no MD5 challenge:\n{}", r.raw));
                    let (user, pw) = (self.user.clone(), password(&self.user));
                    auth =
                        Some(ch.credentials(&user, &pw, "REGISTER", &format!("sip:{DOMAIN}"), 1));
                }
                (Some(200), Some(_)) => return,
                _ => panic!("{}: REGISTER answered:\n{}", self.user, r.raw),
            }
        }
    }

    async fn register(&mut self) {
        let contact = self.contact();
        self.register_contact(&contact).await;
    }

    /// Sends `method` in `d` with the next CSeq and a fresh branch.
    async fn send_request(&mut self, d: &mut Dialog, method: &str, extra: &[String]) -> Sent {
        d.cseq += 1;
        let sent = Sent {
            branch: new_branch(),
            cseq: d.cseq,
        };
        let text = d.request(self, method, &sent, extra);
        self.send(&text).await;
        sent
    }

    /// The ACK for a final answer other than 2xx (RFC 3261 §17.1.1.3): the INVITE's
    /// branch and Route, the answer's To.
    async fn ack_failure(&mut self, d: &Dialog, invite: &Sent, answer: &SipMessage) {
        let d = Dialog {
            remote: answer.header("To").expect("To").to_string(),
            ..d.clone()
        };
        let text = d.request(self, "ACK", invite, &[]);
        self.send(&text).await;
    }

    /// The ACK for a 2xx (RFC 3261 §13.2.2.4): in the dialog, a fresh branch, the
    /// INVITE's CSeq number.
    async fn ack_answer(&mut self, d: &Dialog, invite: &Sent) {
        let sent = Sent {
            branch: new_branch(),
            cseq: invite.cseq,
        };
        let text = d.request(self, "ACK", &sent, &[]);
        self.send(&text).await;
    }

    /// The CANCEL of `invite` (RFC 3261 §9.1).
    async fn cancel(&mut self, d: &Dialog, invite: &Sent) {
        let text = d.request(self, "CANCEL", invite, &[]);
        self.send(&text).await;
    }

    /// Proxy-Authorization answering the MD5 challenge of a 407, for an INVITE of
    /// `uri`, as `user` with `password`.
    fn proxy_authorization(&self, r: &SipMessage, uri: &str, user: &str, pw: &str) -> String {
        let ch = challenges_in(&r.headers, "Proxy-Authenticate")
            .into_iter()
            .find(|c| c.algorithm() == "MD5")
            .unwrap_or_else(|| panic!("no MD5 proxy challenge:\n{}", r.raw));
        format!(
            "Proxy-Authorization: {}",
            ch.credentials(user, pw, "INVITE", uri, 1)
        )
    }

    /// Sends `d`'s INVITE, takes its 407 (asserting it), ACKs it and sends it again
    /// with credentials as `user` with `pw`. Gives the second INVITE.
    async fn invite_as(&mut self, d: &mut Dialog, user: &str, pw: &str) -> Sent {
        let contact = self.contact_header();
        let first = self
            .send_request(d, "INVITE", std::slice::from_ref(&contact))
            .await;
        let challenge = self.expect_response(407, "INVITE").await;
        self.ack_failure(d, &first, &challenge).await;
        let auth = self.proxy_authorization(&challenge, &d.target.clone(), user, pw);
        self.send_request(d, "INVITE", &[contact, auth]).await
    }

    /// Calls `uri` through the 407 with this UA's own credentials.
    async fn call(&mut self, uri: &str) -> (Dialog, Sent) {
        let mut d = Dialog::outgoing(self, uri);
        let (user, pw) = (self.user.clone(), password(&self.user));
        let invite = self.invite_as(&mut d, &user, &pw).await;
        (d, invite)
    }

    /// Takes the final answer `status` to `invite` and ACKs it.
    async fn refused(&mut self, d: &Dialog, invite: &Sent, status: u16) -> SipMessage {
        let r = self.expect_response(status, "INVITE").await;
        self.ack_failure(d, invite, &r).await;
        r
    }
}

/// A core from `builder` with alice on UDP (registered when `alice_registers`) and
/// bob on `bob_over`, registered.
async fn alice_and_bob(
    builder: CoreBuilder,
    alice_registers: bool,
    bob_over: Transport,
) -> (Core, Ua, Ua) {
    let core = builder.start().await;
    let mut alice = Ua::new(&core, Transport::Udp, "alice").await;
    let mut bob = Ua::new(&core, bob_over, "bob").await;
    if alice_registers {
        alice.register().await;
    }
    bob.register().await;
    (core, alice, bob)
}

/// A callee's side of an answered call: the INVITE it got and its dialog.
struct Answered {
    invite: SipMessage,
    dialog: Dialog,
}

/// `caller` calls `callee` and `callee` answers (180, 200, ACK), every hop checked
/// for what both always hold. Gives the caller's dialog and the callee's side.
async fn answered_call(caller: &mut Ua, callee: &mut Ua) -> (Dialog, Answered) {
    let (d, invite) = caller.call(&callee.aor()).await;
    let inv = callee.expect_request("INVITE").await;
    let tag = unique();
    callee.reply(&inv, 180, "Ringing", &tag).await;
    caller.expect_response(180, "INVITE").await;
    callee.reply(&inv, 200, "OK", &tag).await;
    let ok = caller.expect_response(200, "INVITE").await;
    let d = d.confirmed(&ok);
    caller.ack_answer(&d, &invite).await;
    let ack = callee.expect_request("ACK").await;
    assert!(ack.fields("Route").is_empty(), "{}", ack.raw);
    let dialog = Dialog::incoming(&inv, &tag);
    (
        d,
        Answered {
            invite: inv,
            dialog,
        },
    )
}

/// `from` sends BYE in `d`; `to` gets it and answers 200, which `from` gets.
async fn hang_up(from: &mut Ua, d: &mut Dialog, to: &mut Ua) -> SipMessage {
    from.send_request(d, "BYE", &[]).await;
    let bye = to.expect_request("BYE").await;
    to.reply(&bye, 200, "OK", "unused").await;
    from.expect_response(200, "BYE").await;
    bye
}

// ---------------------------------------------------------------------------------
// What the tests look at
// ---------------------------------------------------------------------------------

/// The call record of `call_id` once `ready` holds of it: records are written after
/// the answer that decides them.
async fn cdr(core: &Core, call_id: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = core
            .api("GET", "/api/v1/cdrs?limit=1000", Some(TOKEN), None)
            .await;
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).expect("JSON");
        let found = page["records"]
            .as_array()
            .expect("records")
            .iter()
            .find(|r| r["call_id"] == call_id)
            .cloned();
        match found {
            Some(r) if ready(&r) => return r,
            other => assert!(
                Instant::now() < deadline,
                "no record of {call_id} as expected within {WAIT:?}: {other:#?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that nothing arrives on `sock` for a while.
async fn assert_silent(sock: &UdpSocket, what: &str) {
    let mut buf = vec![0u8; 65_536];
    if let Ok(Ok((n, from))) = tokio::time::timeout(QUIET, sock.recv_from(&mut buf)).await {
        panic!(
            "{what} got {n} bytes from {from}:\n{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

/// holdfast's Via toward a device on `t`: its listener as sent-by, a branch with its
/// prefix.
fn assert_holdfast_via(via: &str, core: &Core, t: Transport) {
    let prefix = format!("SIP/2.0/{} {};branch=z9hG4bK-hf", t.via(), core.addr(t));
    assert!(via.starts_with(&prefix), "not holdfast's Via: {via}");
}

/// The user part of a Record-Route URI (its flow tokens), asserting the rest: holdfast's
/// `t` listener, loose routing.
fn flow_user<'a>(rr: &'a str, core: &Core, t: Transport) -> &'a str {
    let tail = match t {
        Transport::Udp => format!("@{};lr>", core.addr(t)),
        _ => format!("@{};transport={};lr>", core.addr(t), t.as_str()),
    };
    let user = rr
        .strip_prefix("<sip:")
        .and_then(|r| r.strip_suffix(&tail))
        .unwrap_or_else(|| panic!("not holdfast's {} Record-Route: {rr}", t.as_str()));
    assert!(
        user.chars().all(|c| c.is_ascii_hexdigit() || c == '~'),
        "{rr}"
    );
    user
}

/// The INVITE `callee` got from `caller` over `t`: holdfast's Via on top of
/// the caller's (with received and rport), Max-Forwards one less, the Request-URI
/// the callee's Contact, no Route, no credentials, and everything else as sent.
fn assert_forwarded_invite(inv: &SipMessage, core: &Core, caller: &Ua, callee: &Ua, t: Transport) {
    assert_eq!(inv.uri(), Some(callee.contact().as_str()), "{}", inv.raw);
    let vias = inv.values("Via");
    assert_eq!(vias.len(), 2, "{}", inv.raw);
    assert_holdfast_via(&vias[0], core, t);
    let port = caller.local().port();
    assert!(
        vias[1].starts_with(&format!("SIP/2.0/UDP {};branch=z9hG4bK-", caller.local()))
            && vias[1].contains(&format!(";rport={port}"))
            && vias[1].contains(";received=127.0.0.1"),
        "the caller's Via: {}",
        vias[1]
    );
    assert_eq!(inv.header("Max-Forwards"), Some("69"), "{}", inv.raw);
    assert!(inv.fields("Route").is_empty(), "{}", inv.raw);
    assert!(
        inv.fields("Proxy-Authorization").is_empty(),
        "the caller's credentials reached the callee:\n{}",
        inv.raw
    );
    assert_eq!(
        inv.header("Contact").map(str::to_string),
        Some(format!("<{}>", caller.contact()))
    );
    assert_eq!(
        inv.header("From")
            .map(|f| f.starts_with(&format!("<{}>;tag=", caller.aor()))),
        Some(true)
    );
    assert_eq!(
        inv.header("To").map(str::to_string),
        Some(format!("<{}>", callee.aor()))
    );
}

// ---------------------------------------------------------------------------------
// 1. Authentication
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_are_challenged_then_forwarded_and_every_failure_gets_one_403() {
    bounded(LIMIT, async {
        let (core, mut alice, mut bob) =
            alice_and_bob(core_builder("proxy-auth"), false, Transport::Udp).await;

        // Without credentials: 407 in the domain's realm, MD5 then SHA-256.
        let mut d = Dialog::outgoing(&alice, &bob.aor());
        let contact = alice.contact_header();
        let first = alice
            .send_request(&mut d, "INVITE", std::slice::from_ref(&contact))
            .await;
        let known = alice.expect_response(407, "INVITE").await;
        alice.ack_failure(&d, &first, &known).await;
        assert_eq!(known.reason(), Some("Proxy Authentication Required"));
        assert!(known.fields("WWW-Authenticate").is_empty(), "{}", known.raw);
        let offered = challenges_in(&known.headers, "Proxy-Authenticate");
        let algorithms: Vec<&str> = offered.iter().map(|c| c.algorithm()).collect();
        assert_eq!(algorithms, ["MD5", "SHA-256"], "{}", known.raw);
        assert!(offered.iter().all(|c| c.realm() == DOMAIN), "{}", known.raw);
        assert!(known.header("To").is_some_and(|t| t.contains(";tag=")));
        let shape = |r: &SipMessage| {
            challenges_in(&r.headers, "Proxy-Authenticate")
                .iter()
                .map(|c| c.shape())
                .collect::<Vec<_>>()
        };

        // Every failure, each after its own 407: the same 403, never a new challenge.
        let failures = [
            ("wrong password", "alice", "alice", "not-her-password"),
            ("unknown user", "mallory", "mallory", "mallory-secret"),
            ("another user's credentials", "alice", "bob", "bob-secret"),
        ];
        let mut refusals = Vec::new();
        for (what, from, user, pw) in failures {
            let mut d = Dialog::outgoing(&alice, &bob.aor());
            d.local = format!("<sip:{from}@{DOMAIN}>;tag={}", unique());
            let invite = alice.invite_as(&mut d, user, pw).await;
            let r = alice.refused(&d, &invite, 403).await;
            assert_eq!(r.reason(), Some("Forbidden"), "{what}:\n{}", r.raw);
            assert!(
                r.fields("Proxy-Authenticate").is_empty(),
                "{what}:\n{}",
                r.raw
            );
            refusals.push((what, r));
        }
        let (_, first_403) = &refusals[0];
        for (what, r) in &refusals {
            assert_eq!(r.names(), first_403.names(), "{what}:\n{}", r.raw);
            assert_eq!(r.start, first_403.start, "{what}");
        }
        // An unknown user was challenged exactly like a known one.
        let mut d = Dialog::outgoing(&alice, &bob.aor());
        d.local = format!("<sip:mallory@{DOMAIN}>;tag={}", unique());
        let first = alice.send_request(&mut d, "INVITE", &[contact]).await;
        let unknown = alice.expect_response(407, "INVITE").await;
        alice.ack_failure(&d, &first, &unknown).await;
        assert_eq!(unknown.names(), known.names());
        assert_eq!(shape(&unknown), shape(&known));
        bob.quiet().await;

        // The right credentials: forwarded at once, without them.
        let (d, invite) = alice.call(&bob.aor()).await;
        let inv = bob.expect_request("INVITE").await;
        assert_forwarded_invite(&inv, &core, &alice, &bob, Transport::Udp);
        bob.reply(&inv, 486, "Busy Here", &unique()).await;
        alice.refused(&d, &invite, 486).await;
        bob.expect_request("ACK").await;
        alice.quiet().await;
        bob.quiet().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------
// 2. Routing answers
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_unreachable_foreign_exhausted_and_looping_requests_are_answered() {
    bounded(LIMIT, async {
        let core = core_builder("proxy-routing").start().await;
        let mut alice = Ua::new(&core, Transport::Udp, "alice").await;

        // 404: no such user; 480: a user with no binding.
        for (callee, status, reason, disposition) in [
            ("nobody", 404, "Not Found", "failed"),
            ("carol", 480, "Temporarily Unavailable", "no_answer"),
        ] {
            let (d, invite) = alice.call(&format!("sip:{callee}@{DOMAIN}")).await;
            let r = alice.refused(&d, &invite, status).await;
            assert_eq!(r.reason(), Some(reason), "{}", r.raw);
            let record = cdr(&core, &d.call_id, |_| true).await;
            assert_eq!(record["status"], status, "{record}");
            assert_eq!(record["disposition"], disposition, "{record}");
        }

        // 403 for a domain holdfast does not serve, from a local user (after
        // authentication) and from anyone (no challenge): nothing is sent to the
        // port the Request-URI names, and `.invalid` is never resolved.
        let sentinel = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let port = sentinel.local_addr().unwrap().port();
        for host in ["127.0.0.1", "example.invalid"] {
            let uri = format!("sip:bob@{host}:{port}");
            let (d, invite) = alice.call(&uri).await;
            let r = alice.refused(&d, &invite, 403).await;
            assert_eq!(r.reason(), Some("Relaying Forbidden"), "{}", r.raw);
            let mut d = Dialog::outgoing(&alice, &uri);
            d.local = format!("<sip:eve@elsewhere.invalid>;tag={}", unique());
            let contact = alice.contact_header();
            let invite = alice.send_request(&mut d, "INVITE", &[contact]).await;
            let r = alice.refused(&d, &invite, 403).await;
            assert_eq!(r.reason(), Some("Relaying Forbidden"), "{}", r.raw);
        }
        assert_silent(&sentinel, "the foreign URI's port").await;

        // 483: Max-Forwards 0, before any authentication.
        let mut bob = Ua::new(&core, Transport::Udp, "bob").await;
        bob.register().await;
        let mut d = Dialog::outgoing(&alice, &bob.aor());
        d.cseq = 1;
        let invite = Sent {
            branch: new_branch(),
            cseq: 1,
        };
        let text = d
            .request(&alice, "INVITE", &invite, &[alice.contact_header()])
            .replace("Max-Forwards: 70", "Max-Forwards: 0");
        alice.send(&text).await;
        let r = alice.refused(&d, &invite, 483).await;
        assert_eq!(r.reason(), Some("Too Many Hops"), "{}", r.raw);
        bob.quiet().await;

        // 482: a device registered with the AoR itself as its Contact sends the
        // INVITE back to the domain, unchanged but for its own Via.
        let mut device = Ua::new(&core, Transport::Udp, "loop").await;
        device.register_contact(&format!("sip:loop@{DOMAIN}")).await;
        let (d, invite) = alice.call(&device.aor()).await;
        let inv = device.expect_request("INVITE").await;
        assert_eq!(inv.uri(), Some(device.aor().as_str()), "{}", inv.raw);
        let branch = new_branch();
        let (start, rest) = inv.raw.split_once("\r\n").unwrap();
        let back = format!("{start}\r\n{}\r\n{rest}", device.via(&branch))
            .replace("Max-Forwards: 69", "Max-Forwards: 68");
        device.send(&back).await;
        let looped = device.expect_response(482, "INVITE").await;
        assert_eq!(looped.reason(), Some("Loop Detected"), "{}", looped.raw);
        let vias = looped.values("Via");
        assert_eq!(vias.len(), 3, "{}", looped.raw);
        assert!(vias[0].contains(&branch), "{}", looped.raw);
        // The device ACKs holdfast's 482 and gives it back as its own answer.
        let ack = format!(
            "ACK {} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\n\
             Call-ID: {}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
            device.aor(),
            device.via(&branch),
            looped.header("From").unwrap(),
            looped.header("To").unwrap(),
            d.call_id,
            invite.cseq,
        );
        device.send(&ack).await;
        device.reply(&inv, 482, "Loop Detected", &unique()).await;
        alice.refused(&d, &invite, 482).await;
        device.expect_request("ACK").await;
        device.quiet().await;
        alice.quiet().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------
// 3. A call, UDP to UDP
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_call_goes_through_both_ways_and_is_recorded() {
    bounded(LIMIT, async {
        let (core, mut alice, mut bob) =
            alice_and_bob(core_builder("proxy-udp-call"), true, Transport::Udp).await;

        // The INVITE as bob gets it.
        let (d, invite) = alice.call(&bob.aor()).await;
        let inv = bob.expect_request("INVITE").await;
        assert_forwarded_invite(&inv, &core, &alice, &bob, Transport::Udp);
        let rr = inv.values("Record-Route");
        assert_eq!(rr.len(), 1, "one Record-Route for one socket:\n{}", inv.raw);
        let flows = flow_user(&rr[0], &core, Transport::Udp);
        assert_eq!(flows.split('~').count(), 2, "both flows: {}", rr[0]);

        // 180 and 200 reach alice with only her Via, the Record-Route kept.
        let tag = unique();
        for (status, reason) in [(180, "Ringing"), (200, "OK")] {
            bob.reply(&inv, status, reason, &tag).await;
            let r = alice.expect_response(status, "INVITE").await;
            let vias = r.values("Via");
            assert_eq!(vias.len(), 1, "{}", r.raw);
            assert!(vias[0].contains(&invite.branch), "{}", r.raw);
            assert_eq!(r.values("Record-Route"), rr, "{}", r.raw);
            assert_eq!(contact_uri(&r), bob.contact(), "{}", r.raw);
            assert!(r.header("To").unwrap().ends_with(&format!(";tag={tag}")));
            if status == 200 {
                let mut d = d.confirmed(&r);
                assert_eq!(d.route, rr);
                // The ACK, routed by the Record-Route, reaches bob without it.
                alice.ack_answer(&d, &invite).await;
                let ack = bob.expect_request("ACK").await;
                assert_eq!(ack.uri(), Some(bob.contact().as_str()), "{}", ack.raw);
                assert!(ack.fields("Route").is_empty(), "{}", ack.raw);
                let vias = ack.values("Via");
                assert_eq!(vias.len(), 2, "{}", ack.raw);
                assert_holdfast_via(&vias[0], &core, Transport::Udp);
                assert_eq!(ack.header("Max-Forwards"), Some("69"), "{}", ack.raw);
                assert_eq!(
                    ack.header("CSeq"),
                    Some(format!("{} ACK", invite.cseq).as_str())
                );

                // Up for a second, then alice hangs up.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let bye = hang_up(&mut alice, &mut d, &mut bob).await;
                assert_eq!(bye.uri(), Some(bob.contact().as_str()), "{}", bye.raw);
                assert!(bye.fields("Route").is_empty(), "{}", bye.raw);
                assert_holdfast_via(&bye.values("Via")[0], &core, Transport::Udp);
                assert_eq!(bye.header("Max-Forwards"), Some("69"), "{}", bye.raw);
            }
        }
        let record = cdr(&core, &d.call_id, |r| r["open"] == false).await;
        assert_eq!(record["disposition"], "answered", "{record}");
        assert_eq!(record["status"], 200, "{record}");
        assert_eq!(record["hangup"], "caller", "{record}");
        assert_eq!(record["caller"], format!("alice@{DOMAIN}"), "{record}");
        assert_eq!(record["callee"], format!("bob@{DOMAIN}"), "{record}");
        assert_eq!(record["source"], alice.local().to_string(), "{record}");
        assert_eq!(record["transport"], "udp", "{record}");
        let held = record["duration_ms"].as_i64().unwrap();
        assert!((900..5_000).contains(&held), "held about 1 s: {record}");

        // Another call, which bob ends: alice gets the BYE at her Contact.
        let (d, mut answered) = answered_call(&mut alice, &mut bob).await;
        assert_eq!(
            answered.dialog.route,
            answered.invite.values("Record-Route")
        );
        let bye = hang_up(&mut bob, &mut answered.dialog, &mut alice).await;
        assert_eq!(bye.uri(), Some(alice.contact().as_str()), "{}", bye.raw);
        assert!(bye.fields("Route").is_empty(), "{}", bye.raw);
        let vias = bye.values("Via");
        assert_eq!(vias.len(), 2, "{}", bye.raw);
        assert_holdfast_via(&vias[0], &core, Transport::Udp);
        assert!(vias[1].starts_with(&format!("SIP/2.0/UDP {}", bob.local())));
        assert_eq!(bye.header("From"), Some(answered.dialog.local.as_str()));
        let record = cdr(&core, &d.call_id, |r| r["open"] == false).await;
        assert_eq!(record["disposition"], "answered", "{record}");
        assert_eq!(record["hangup"], "callee", "{record}");
        assert!(record["ended_at_ms"].as_i64() >= record["answered_at_ms"].as_i64());
        alice.quiet().await;
        bob.quiet().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------
// 4. A call from UDP to TCP
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_from_udp_to_tcp_is_double_record_routed_and_ends_both_ways() {
    bounded(LIMIT, async {
        let (core, mut alice, mut bob) =
            alice_and_bob(core_builder("proxy-tcp-call"), false, Transport::Tcp).await;

        for bob_hangs_up in [false, true] {
            let (d, invite) = alice.call(&bob.aor()).await;
            // Over bob's own connection, with holdfast's TCP Via.
            let inv = bob.expect_request("INVITE").await;
            assert_forwarded_invite(&inv, &core, &alice, &bob, Transport::Tcp);
            // RFC 5658: the top Record-Route faces bob (TCP), the other alice (UDP).
            let rr = inv.values("Record-Route");
            assert_eq!(rr.len(), 2, "{}", inv.raw);
            assert_eq!(
                flow_user(&rr[0], &core, Transport::Tcp).split('~').count(),
                1
            );
            assert_eq!(
                flow_user(&rr[1], &core, Transport::Udp).split('~').count(),
                1
            );
            let tag = unique();
            bob.reply(&inv, 200, "OK", &tag).await;
            let ok = alice.expect_response(200, "INVITE").await;
            let mut d = d.confirmed(&ok);
            assert_eq!(d.route, [rr[1].clone(), rr[0].clone()]);
            alice.ack_answer(&d, &invite).await;
            let ack = bob.expect_request("ACK").await;
            assert_holdfast_via(&ack.values("Via")[0], &core, Transport::Tcp);
            assert!(ack.fields("Route").is_empty(), "{}", ack.raw);

            let bye = if bob_hangs_up {
                let mut bd = Dialog::incoming(&inv, &tag);
                assert_eq!(bd.route, rr);
                let bye = hang_up(&mut bob, &mut bd, &mut alice).await;
                assert_holdfast_via(&bye.values("Via")[0], &core, Transport::Udp);
                assert_eq!(bye.uri(), Some(alice.contact().as_str()));
                bye
            } else {
                let bye = hang_up(&mut alice, &mut d, &mut bob).await;
                assert_holdfast_via(&bye.values("Via")[0], &core, Transport::Tcp);
                assert_eq!(bye.uri(), Some(bob.contact().as_str()));
                bye
            };
            assert!(bye.fields("Route").is_empty(), "{}", bye.raw);
            let record = cdr(&core, &d.call_id, |r| r["open"] == false).await;
            let side = if bob_hangs_up { "callee" } else { "caller" };
            assert_eq!(record["hangup"], side, "{record}");
        }
        alice.quiet().await;
        bob.quiet().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------
// 5. CANCEL
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_callee_only_after_its_provisional() {
    bounded(LIMIT, async {
        let (core, mut alice, mut bob) =
            alice_and_bob(core_builder("proxy-cancel"), false, Transport::Udp).await;

        // Cancelled at once, while the INVITE is still being admitted (alice's
        // credentials not yet read from the store): answered 487 by holdfast; if it
        // was forwarded after all, it is cancelled like any other.
        let (d, invite) = alice.call(&bob.aor()).await;
        alice.cancel(&d, &invite).await;
        alice.expect_response(200, "CANCEL").await;
        if let Some(inv) = bob.try_next(QUIET).await {
            assert_eq!(inv.method(), Some("INVITE"), "{}", inv.raw);
            let tag = unique();
            bob.reply(&inv, 180, "Ringing", &tag).await;
            bob.cancelled(&inv, &tag).await;
            note("the CANCEL came after admission: cancelled like a ringing call");
        } else {
            note("the CANCEL came during admission: answered 487 by holdfast");
        }
        alice.refused(&d, &invite, 487).await;
        let record = cdr(&core, &d.call_id, |_| true).await;
        assert_eq!(record["disposition"], "cancelled", "{record}");
        assert_eq!(record["status"], 487, "{record}");

        for ringing_first in [true, false] {
            let (d, invite) = alice.call(&bob.aor()).await;
            let inv = bob.expect_request("INVITE").await;
            let tag = unique();
            if ringing_first {
                bob.reply(&inv, 180, "Ringing", &tag).await;
                alice.expect_response(180, "INVITE").await;
                alice.cancel(&d, &invite).await;
                alice.expect_response(200, "CANCEL").await;
            } else {
                // Bob says nothing: the CANCEL is answered, but waits for bob's 180.
                alice.cancel(&d, &invite).await;
                alice.expect_response(200, "CANCEL").await;
                bob.quiet().await;
                bob.reply(&inv, 180, "Ringing", &tag).await;
            }
            let cancel = bob.cancelled(&inv, &tag).await;
            // RFC 3261 §9.1: the INVITE's Request-URI, Call-ID, From, To, CSeq
            // number and (holdfast's) Via.
            assert_eq!(cancel.uri(), inv.uri(), "{}", cancel.raw);
            assert_eq!(
                cancel.values("Via"),
                inv.values("Via")[..1],
                "{}",
                cancel.raw
            );
            for h in ["Call-ID", "From", "To"] {
                assert_eq!(cancel.header(h), inv.header(h), "{h}:\n{}", cancel.raw);
            }
            assert_eq!(
                cancel.header("CSeq"),
                Some(format!("{} CANCEL", invite.cseq).as_str())
            );
            alice.refused(&d, &invite, 487).await;
            let record = cdr(&core, &d.call_id, |_| true).await;
            assert_eq!(record["disposition"], "cancelled", "{record}");
            assert_eq!(record["status"], 487, "{record}");
            alice.quiet().await;
            bob.quiet().await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------
// 6. Busy, and no answer
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_unanswered_calls_are_recorded_so() {
    bounded(LIMIT, async {
        // T1 of 40 ms: timer B (64·T1) gives up on a silent callee in 2.56 s.
        let builder = core_builder("proxy-busy").toml("[timers]\nt1_ms = 40");
        let (core, mut alice, mut bob) = alice_and_bob(builder, false, Transport::Udp).await;

        let (d, invite) = alice.call(&bob.aor()).await;
        let inv = bob.expect_request("INVITE").await;
        bob.reply(&inv, 486, "Busy Here", &unique()).await;
        bob.expect_request("ACK").await;
        alice.refused(&d, &invite, 486).await;
        let record = cdr(&core, &d.call_id, |_| true).await;
        assert_eq!(record["disposition"], "busy", "{record}");
        assert_eq!(record["status"], 486, "{record}");

        let started = Instant::now();
        let (d, invite) = alice.call(&bob.aor()).await;
        bob.expect_request("INVITE").await;
        let r = match alice.try_next(Duration::from_secs(10)).await {
            Some(r) => r,
            None => panic!("no answer to a call nobody answers"),
        };
        let took = started.elapsed();
        assert_eq!(
            (r.status(), r.cseq_method()),
            (Some(408), Some("INVITE")),
            "{}",
            r.raw
        );
        alice.ack_failure(&d, &invite, &r).await;
        assert!(took >= Duration::from_millis(2_000), "timer B: {took:?}");
        let record = cdr(&core, &d.call_id, |_| true).await;
        assert_eq!(record["disposition"], "no_answer", "{record}");
        assert_eq!(record["status"], 408, "{record}");
        alice.quiet().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_whose_bye_never_comes_is_closed_by_the_node() {
    bounded(LIMIT, async {
        let builder = core_builder("proxy-max-call").toml("[timers]\nmax_call_secs = 2");
        let (core, mut alice, mut bob) = alice_and_bob(builder, false, Transport::Udp).await;
        let started = Instant::now();
        let (d, _) = answered_call(&mut alice, &mut bob).await;
        let open = cdr(&core, &d.call_id, |r| r["open"] == true).await;
        assert_eq!(open["disposition"], "answered", "{open}");
        // Nobody sends BYE: the node ends the record after max_call_secs.
        let closed = cdr(&core, &d.call_id, |r| r["open"] == false).await;
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "closed too early"
        );
        assert_eq!(closed["hangup"], "node", "{closed}");
        assert_eq!(closed["disposition"], "answered", "{closed}");
        assert!(closed["duration_ms"].as_i64().unwrap() >= 2_000, "{closed}");
        let (_, metrics) = core.api("GET", "/metrics", None, None).await;
        assert!(metrics.contains("holdfast_calls_up 0"), "{metrics}");
        assert!(
            metrics.contains("holdfast_calls_total{disposition=\"answered\"} 1"),
            "{metrics}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------
// 7. Forking
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_call_is_answered_once_and_the_other_branch_cancelled() {
    bounded(LIMIT, async {
        let core = core_builder("proxy-fork").start().await;
        let mut alice = Ua::new(&core, Transport::Udp, "alice").await;
        let mut desk = Ua::new(&core, Transport::Udp, "bob").await;
        let mut mobile = Ua::new(&core, Transport::Udp, "bob").await;
        desk.register().await;
        mobile.register().await;

        // The mobile rings before the desk answers (CANCEL at once), then, in a
        // second call, only after it (CANCEL once it rings).
        for mobile_rings_first in [true, false] {
            let (d, invite) = alice.call(&desk.aor()).await;
            let at_desk = desk.expect_request("INVITE").await;
            let at_mobile = mobile.expect_request("INVITE").await;
            assert_eq!(at_desk.uri(), Some(desk.contact().as_str()));
            assert_eq!(at_mobile.uri(), Some(mobile.contact().as_str()));
            let (desk_tag, mobile_tag) = (unique(), unique());
            if mobile_rings_first {
                mobile.reply(&at_mobile, 180, "Ringing", &mobile_tag).await;
                let r = alice.expect_response(180, "INVITE").await;
                assert!(r.header("To").unwrap().ends_with(&mobile_tag));
            }
            desk.reply(&at_desk, 180, "Ringing", &desk_tag).await;
            alice.expect_response(180, "INVITE").await;
            desk.reply(&at_desk, 200, "OK", &desk_tag).await;
            let ok = alice.expect_response(200, "INVITE").await;
            assert!(ok.header("To").unwrap().ends_with(&desk_tag));
            if !mobile_rings_first {
                mobile.quiet().await;
                mobile.reply(&at_mobile, 180, "Ringing", &mobile_tag).await;
            }
            let cancel = mobile.cancelled(&at_mobile, &mobile_tag).await;
            assert_eq!(cancel.uri(), at_mobile.uri(), "{}", cancel.raw);

            let mut d = d.confirmed(&ok);
            alice.ack_answer(&d, &invite).await;
            desk.expect_request("ACK").await;
            hang_up(&mut alice, &mut d, &mut desk).await;
            let record = cdr(&core, &d.call_id, |r| r["open"] == false).await;
            assert_eq!(record["disposition"], "answered", "{record}");
            // Nothing else: the late 180 and the 487 stay with holdfast.
            alice.quiet().await;
            desk.quiet().await;
            mobile.quiet().await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------
// 8. A call up across a crash
// ---------------------------------------------------------------------------------

/// Starts a core, sets up two answered calls from alice (registered or not) to bob
/// (registered), waits until both are durable open records, then kills the core
/// with SIGKILL and restarts it on the same data directory and ports.
async fn calls_across_a_crash(
    tag: &str,
    toml: &str,
    alice_registers: bool,
) -> (Core, Ua, Ua, [(Dialog, Answered); 2]) {
    let builder = core_builder(tag).toml(toml);
    let (core, mut alice, mut bob) = alice_and_bob(builder, alice_registers, Transport::Udp).await;
    let first = answered_call(&mut alice, &mut bob).await;
    let second = answered_call(&mut alice, &mut bob).await;
    for (d, _) in [&first, &second] {
        let record = cdr(&core, &d.call_id, |r| r["open"] == true).await;
        assert_eq!(record["disposition"], "answered", "{record}");
    }
    let core = core.kill_9_and_restart().await;
    (core, alice, bob, [first, second])
}

/// The record of `d`'s call once closed, asserting its end and who hung up.
async fn closed(core: &Core, d: &Dialog, side: &str) {
    let record = cdr(core, &d.call_id, |r| r["open"] == false).await;
    assert_eq!(record["hangup"], side, "{record}");
    assert!(record["ended_at_ms"].is_i64(), "{record}");
    assert!(record["duration_ms"].as_i64() > Some(0), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_up_across_kill_9_still_ends_with_its_flow_tokens() {
    bounded(LIMIT, async {
        // Alice never registered: only the flow token in the Route can find her.
        let toml = format!("[registrar]\nnonce_secret = {SECRET:?}");
        let (core, mut alice, mut bob, calls) =
            calls_across_a_crash("proxy-crash", &toml, false).await;
        let [(first, mut at_bob), (mut second, _)] = calls;
        let bye = hang_up(&mut bob, &mut at_bob.dialog, &mut alice).await;
        assert_eq!(bye.uri(), Some(alice.contact().as_str()));
        assert_holdfast_via(&bye.values("Via")[0], &core, Transport::Udp);
        closed(&core, &first, "callee").await;
        hang_up(&mut alice, &mut second, &mut bob).await;
        closed(&core, &second, "caller").await;
        alice.quiet().await;
        bob.quiet().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fixed_secret_a_call_across_kill_9_ends_through_the_contact_binding() {
    bounded(LIMIT, async {
        // The restarted core's tokens are not the old ones: each BYE goes to the
        // binding whose Contact is its Request-URI.
        let (core, mut alice, mut bob, calls) =
            calls_across_a_crash("proxy-crash-random", "", true).await;
        let [(first, mut at_bob), (mut second, _)] = calls;
        hang_up(&mut bob, &mut at_bob.dialog, &mut alice).await;
        closed(&core, &first, "callee").await;
        hang_up(&mut alice, &mut second, &mut bob).await;
        closed(&core, &second, "caller").await;
        drop(core);

        // A caller with no binding cannot be found: bob's BYE is refused (it is
        // admitted as a new request), nothing reaches alice, the record stays open.
        let (core, mut alice, mut bob, calls) =
            calls_across_a_crash("proxy-crash-random-2", "", false).await;
        let [(first, mut at_bob), (mut second, _)] = calls;
        bob.send_request(&mut at_bob.dialog, "BYE", &[]).await;
        let r = bob.next().await;
        assert_eq!(r.cseq_method(), Some("BYE"), "{}", r.raw);
        assert!(r.status() >= Some(400), "{}", r.raw);
        note(format!("a BYE toward a lost flow: {}", r.start));
        alice.quiet().await;
        let record = cdr(&core, &first.call_id, |_| true).await;
        assert_eq!(record["open"], true, "{record}");
        // Bob is registered: alice's BYE still reaches him.
        hang_up(&mut alice, &mut second, &mut bob).await;
        closed(&core, &second, "caller").await;
    })
    .await;
}

// ---------------------------------------------------------------------------------
// 9. No open relay through Route
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_flow_tokens_and_preloaded_routes_relay_nothing() {
    bounded(LIMIT, async {
        let (core, mut alice, mut bob) =
            alice_and_bob(core_builder("proxy-forgery"), false, Transport::Udp).await;
        let udp = core.addr(Transport::Udp);
        let (d, answered) = answered_call(&mut alice, &mut bob).await;
        let rr = answered.invite.values("Record-Route");
        let user = flow_user(&rr[0], &core, Transport::Udp).to_string();
        let (alice_token, bob_token) = user.split_once('~').unwrap();

        let victim = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let target = victim.local_addr().unwrap();
        let port = format!("{:04x}", target.port());
        // A token's remote port is at hex 28..32 (transport, connection, family, IPv4).
        assert_eq!(
            &alice_token[28..32],
            format!("{:04x}", alice.local().port())
        );
        let altered = format!("{}{port}{}", &alice_token[..28], &alice_token[32..]);
        // A token made from scratch: UDP, no connection, the victim, holdfast's
        // socket, a made-up MAC.
        let forged = format!(
            "00{}047f000001{port}047f000001{:04x}0123456789abcdef",
            "0".repeat(16),
            udp.port()
        );
        let mut eve = Ua::new(&core, Transport::Udp, "eve").await;
        for user in [
            format!("{altered}~{bob_token}"),
            altered.clone(),
            forged.clone(),
        ] {
            let mut bye = d.clone();
            bye.local = format!("<sip:eve@elsewhere.invalid>;tag={}", unique());
            bye.target = format!("sip:victim@{target}");
            bye.route = vec![format!("<sip:{user}@{udp};lr>")];
            let sent = eve.send_request(&mut bye, "BYE", &[]).await;
            let r = eve.next().await;
            assert_eq!(r.status(), Some(403), "{user}:\n{}", r.raw);
            assert!(r.values("Via")[0].contains(&sent.branch));
        }
        // A new INVITE with a preloaded Route to holdfast and a device's Contact as
        // Request-URI is a new call like any other: challenged, not delivered.
        for route in [format!("<sip:{udp};lr>"), rr[0].clone()] {
            let mut call = Dialog::outgoing(&alice, &bob.contact());
            call.route = vec![route.clone()];
            let contact = alice.contact_header();
            let invite = alice.send_request(&mut call, "INVITE", &[contact]).await;
            let r = alice.next().await;
            assert_eq!(r.status(), Some(407), "Route {route}:\n{}", r.raw);
            alice.ack_failure(&call, &invite, &r).await;
        }
        assert_silent(&victim, "the address inside a forged token").await;
        bob.quiet().await;
        alice.quiet().await;
    })
    .await;
}
