//! The proxy core (RFC 3261 §16) end to end: a caller, holdfast's proxy and callees
//! over the simulated network ([`Star`]), with simulated time.

use bytes::Bytes;
use holdfast_sip::{HeaderName, Message, Method};
use proptest::prelude::*;

use super::sim::*;
use crate::proxy::route::{self, BRANCH_PREFIX};
use crate::proxy::Ending::{self, Cancelled, NoAnswer, Responded};
use crate::proxy::{ProxyConfig, ProxyEvent};
use crate::transaction::{Config, Event, TransactionKey, TransactionState};
use crate::Transport;

/// Nothing left anywhere: no context in the proxy core, no transaction or timer in
/// any transaction layer, no error.
fn assert_drained(star: &Star) {
    let p = &star.proxy;
    assert!(p.proxy.is_empty(), "contexts left: {}", p.proxy.len());
    assert_eq!(p.proxy.poll_timeout(), None, "timer C left");
    assert!(
        p.layer.is_empty(),
        "proxy transactions left: {}",
        p.layer.len()
    );
    assert_eq!(p.layer.poll_timeout(), None);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    for party in std::iter::once(&star.caller).chain(&star.callees) {
        let node = &party.node;
        assert!(
            node.layer.is_empty(),
            "transactions left: {}",
            node.layer.len()
        );
        assert_eq!(node.layer.poll_timeout(), None);
        assert!(node.errors.is_empty(), "{:?}", node.errors);
        assert!(node.tu.errors.is_empty(), "{:?}", node.tu.errors);
    }
}

/// The call ended as expected: the caller got `statuses` for `invite`, the proxy
/// reported `outcome` (ms, status, ending), and nothing is left anywhere.
fn assert_ended(
    star: &Star,
    invite: &TransactionKey,
    statuses: &[u16],
    outcome: (u64, u16, Ending),
) {
    assert_eq!(star.caller.node.statuses(invite), statuses);
    assert_eq!(finals(star), [outcome]);
    assert_drained(star);
}

/// What the proxy core reported: (ms, status, ending) of each `Final`.
fn finals(star: &Star) -> Vec<(u64, u16, Ending)> {
    star.proxy
        .finals
        .iter()
        .map(|(at, ProxyEvent::Final { status, ending, .. })| {
            (star.ms_since_start(*at), *status, *ending)
        })
        .collect()
}

/// The responses the proxy sent to the caller: (ms, status), retransmissions included.
fn to_caller(star: &Star) -> Vec<(u64, u16)> {
    star.proxy
        .sent_to(&star.caller.peer)
        .iter()
        .filter_map(|s| Some((star.ms_since_start(s.at), s.message.status()?)))
        .collect()
}

/// When the proxy sent requests with `method` to callee `i`, retransmissions included.
fn requests_to(star: &Star, i: usize, method: &Method) -> Vec<u64> {
    star.proxy
        .sent_to(&star.callees[i].peer)
        .iter()
        .filter(|s| s.message.method() == Some(method))
        .map(|s| star.ms_since_start(s.at))
        .collect()
}

/// The requests with `method` that opened a server transaction at callee `i`.
fn received(star: &Star, i: usize, method: &Method) -> Vec<Message> {
    star.callees[i]
        .node
        .new_requests()
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.method() == Some(method))
        .collect()
}

/// ACKs for 2xx that reached callee `i`.
fn acks_at(star: &Star, i: usize) -> usize {
    star.callees[i].node.transactionless_requests().len()
}

fn tag_of(m: &Message) -> Option<String> {
    m.to()
        .and_then(|t| t.tag())
        .map(|t| String::from_utf8_lossy(t).into_owned())
}

fn values(headers: impl Iterator<Item = impl AsRef<[u8]>>) -> Vec<String> {
    headers
        .map(|h| String::from_utf8_lossy(h.as_ref()).into_owned())
        .collect()
}

/// A star whose targets have the given q values, one callee each.
fn star_with_q(q: &[u16]) -> Star {
    let mut star = Star::udp(q.len());
    for (t, q) in star.proxy.targets.iter_mut().zip(q) {
        t.q = *q;
    }
    star
}

/// Callee `i` answers every INVITE by `script` (ms after the request, status).
fn script(star: &mut Star, i: usize, script: &[(u64, u16)]) {
    star.callees[i].node.tu.invite_script = script.iter().map(|(d, s)| (ms(*d), *s)).collect();
}

/// Everything callee `i` sends is lost (it rings into the void, or is unreachable).
fn silence(star: &mut Star, i: usize, silent: bool) {
    star.callees[i].up.loss = if silent { 1000 } else { 0 };
}

/// Single target: 100 is the proxy's own, 180 and 200 are relayed without the
/// proxy's Via; the forwarded INVITE has the target's Request-URI, Max-Forwards one
/// less, the target's Record-Route values on top in their order, and the target's
/// Path above the Route it came with (§16.6, RFC 3327).
#[test]
fn single_target_relays_180_200_and_rewrites_the_request() {
    let mut star = Star::udp(1);
    script(&mut star, 0, &[(0, 100), (1000, 180), (2000, 200)]);
    star.proxy.targets[0].route = vec![
        Bytes::from_static(b"<sip:edge1.example.com;lr>"),
        Bytes::from_static(b"<sip:edge2.example.com;lr>"),
    ];
    star.proxy.targets[0].record_route = vec![
        "<sip:rr1@192.0.2.10;lr>".to_owned(),
        "<sip:rr2@192.0.2.10;lr>".to_owned(),
    ];
    let invite = message(
        "INVITE sip:bob@example.com SIP/2.0\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsingle\n\
Max-Forwards: 70\n\
Route: <sip:next.example.com;lr>\n\
Record-Route: <sip:upstream.example.com;lr>\n\
From: <sip:alice@example.com>;tag=alice\n\
To: <sip:bob@example.com>\n\
Call-ID: single\n\
CSeq: 7 INVITE\n\
Content-Length: 0\n\n",
    );
    let key = star.start_client(invite.clone());
    star.drive();

    let got = received(&star, 0, &Method::Invite);
    assert_eq!(got.len(), 1);
    let fwd = &got[0];
    assert_eq!(fwd.request_uri(), Some(&star.target(0).uri));
    assert_eq!(fwd.max_forwards(), Some(69));
    assert_eq!(
        values(fwd.record_routes().map(|r| r.as_bytes())),
        [
            "<sip:rr1@192.0.2.10;lr>",
            "<sip:rr2@192.0.2.10;lr>",
            "<sip:upstream.example.com;lr>"
        ]
    );
    assert_eq!(
        values(fwd.routes().map(|r| r.as_bytes())),
        [
            "<sip:edge1.example.com;lr>",
            "<sip:edge2.example.com;lr>",
            "<sip:next.example.com;lr>"
        ]
    );
    let vias: Vec<_> = fwd.vias().collect();
    assert_eq!(vias.len(), 2);
    assert!(vias[0]
        .branch()
        .unwrap()
        .starts_with(BRANCH_PREFIX.as_bytes()));
    assert_eq!(&vias[0].host_text[..], b"192.0.2.10");
    assert_eq!(vias[1], invite.top_via().unwrap());

    // The 100 the caller got is the proxy's own (no To tag, after 200 ms); the
    // callee's is not relayed. Then 180 and 200, each with the caller's Via only.
    assert_eq!(to_caller(&star), [(200, 100), (1000, 180), (2000, 200)]);
    for sent in star.proxy.sent_to(&star.caller.peer) {
        let m = &sent.message;
        assert_eq!(m.vias().count(), 1);
        assert_eq!(m.top_via(), invite.top_via());
        let tag = tag_of(m);
        match m.status() {
            Some(100) => assert_eq!(tag, None),
            _ => assert_eq!(tag.as_deref(), Some("callee0")),
        }
    }
    assert_eq!(
        acks_at(&star, 0),
        1,
        "the ACK for the 2xx reaches the callee"
    );
    assert_ended(&star, &key, &[100, 180, 200], (2000, 200, Responded));
}

/// The callee's 2xx retransmissions (§13.3.1.4) reach the caller through the proxy
/// until the caller's ACK comes back through it.
#[test]
fn two_xx_retransmissions_are_relayed_until_the_ack() {
    let mut star = Star::udp(1);
    script(&mut star, 0, &[(0, 180), (1000, 200)]);
    star.callees[0].node.tu.retransmit_2xx = true;
    star.caller.node.tu.ignore_2xx = 2;
    let key = star.invite(1);
    star.drive();
    assert_eq!(
        star.ms_list(&star.callees[0].node.responses_sent(200)),
        [1000, 1500, 2500]
    );
    assert_eq!(
        to_caller(&star),
        [(0, 180), (1000, 200), (1500, 200), (2500, 200)]
    );
    assert_eq!(star.caller.node.tu.acks_sent, 1);
    assert_eq!(acks_at(&star, 0), 1);
    assert_ended(&star, &key, &[180, 200, 200, 200], (1000, 200, Responded));
}

/// Parallel forking: the first 2xx goes to the caller and the other branches are
/// cancelled: one that rings at once, one that has not answered provisionally only
/// when its first provisional response arrives (§9.1, §16.7 item 10).
#[test]
fn parallel_fork_first_2xx_wins_and_cancels_the_others() {
    let mut star = Star::udp(3);
    script(&mut star, 0, &[(0, 180), (1000, 200)]);
    script(&mut star, 1, &[(0, 180)]);
    script(&mut star, 2, &[(0, 180)]);
    silence(&mut star, 2, true);
    let key = star.invite(1);
    star.drive_until(star.at(3000));
    assert_eq!(requests_to(&star, 1, &Method::Cancel), [1000]);
    assert!(
        requests_to(&star, 2, &Method::Cancel).is_empty(),
        "no CANCEL before a provisional response"
    );
    // Callee 2 is heard again: its 180, resent for the INVITE retransmission at
    // 3.5 s, draws the CANCEL.
    silence(&mut star, 2, false);
    star.drive();
    assert_eq!(requests_to(&star, 2, &Method::Invite), [0, 500, 1500, 3500]);
    assert_eq!(requests_to(&star, 2, &Method::Cancel), [3500]);
    for i in [1, 2] {
        assert_eq!(star.callees[i].node.responses_sent(487).len(), 1);
        assert_eq!(
            requests_to(&star, i, &Method::Ack).len(),
            1,
            "the proxy's transaction ACKs the 487"
        );
    }
    assert_eq!(to_caller(&star), [(0, 180), (0, 180), (1000, 200)]);
    assert_eq!(acks_at(&star, 0), 1);
    assert_ended(&star, &key, &[180, 180, 200], (1000, 200, Responded));
}

/// Two forks answer 2xx before the CANCEL reaches the second: both 2xx reach the
/// caller (§16.7 item 9), whose ACK for each goes to the callee that sent it.
#[test]
fn parallel_fork_two_2xx_both_forwarded() {
    let mut star = Star::udp(2);
    // Callee 1 gets the INVITE at 20 ms and answers 200 at 995 ms; the CANCEL the
    // proxy sends at 990 ms reaches it at 1010 ms.
    script(&mut star, 0, &[(0, 180), (990, 200)]);
    script(&mut star, 1, &[(0, 180), (975, 200)]);
    star.callees[1].down.latency = ms(20);
    let key = star.invite(1);
    star.drive();
    assert_eq!(requests_to(&star, 1, &Method::Cancel), [990]);
    assert!(star.callees[1].node.responses_sent(487).is_empty());
    let oks: Vec<_> = star
        .proxy
        .sent_to(&star.caller.peer)
        .iter()
        .filter(|s| s.message.status() == Some(200))
        .map(|s| tag_of(&s.message).unwrap())
        .collect();
    assert_eq!(oks, ["callee0", "callee1"]);
    assert_eq!((acks_at(&star, 0), acks_at(&star, 1)), (1, 1));
    assert_ended(&star, &key, &[180, 180, 200, 200], (990, 200, Responded));
}

/// Sequential forking: the q 0.5 group starts only when both q 1.0 branches have
/// failed, and a 2xx there ends the search before the q 0.1 group.
#[test]
fn sequential_fork_by_q_stops_at_2xx() {
    let mut star = star_with_q(&[1000, 1000, 500, 100]);
    script(&mut star, 0, &[(0, 180), (1000, 486)]);
    script(&mut star, 1, &[(0, 180), (2000, 404)]);
    script(&mut star, 2, &[(0, 180), (500, 200)]);
    script(&mut star, 3, &[(0, 200)]);
    let key = star.invite(1);
    star.drive();
    assert_eq!(requests_to(&star, 0, &Method::Invite), [0]);
    assert_eq!(requests_to(&star, 1, &Method::Invite), [0]);
    assert_eq!(requests_to(&star, 2, &Method::Invite), [2000]);
    assert!(requests_to(&star, 3, &Method::Invite).is_empty());
    assert_ended(&star, &key, &[180, 180, 180, 200], (2500, 200, Responded));
}

/// Sequential forking stops at a 6xx too: the next group never starts.
#[test]
fn sequential_fork_stops_at_6xx() {
    let mut star = star_with_q(&[1000, 500, 100]);
    script(&mut star, 0, &[(0, 486)]);
    script(&mut star, 1, &[(0, 603)]);
    script(&mut star, 2, &[(0, 200)]);
    let key = star.invite(1);
    star.drive();
    assert_eq!(requests_to(&star, 1, &Method::Invite), [0]);
    assert!(requests_to(&star, 2, &Method::Invite).is_empty());
    assert_ended(&star, &key, &[603], (0, 603, Responded));
}

/// A 6xx beats every other answer and cancels the branches still ringing; the best
/// response goes once they have all answered (§16.7 items 5, 6).
#[test]
fn six_xx_wins_and_cancels_the_other_branches() {
    let mut star = Star::udp(3);
    script(&mut star, 0, &[(0, 404)]);
    script(&mut star, 1, &[(0, 180), (1000, 600)]);
    script(&mut star, 2, &[(0, 180)]);
    let key = star.invite(1);
    star.drive();
    assert_eq!(requests_to(&star, 2, &Method::Cancel), [1000]);
    assert_eq!(star.callees[2].node.responses_sent(487).len(), 1);
    assert_ended(&star, &key, &[180, 180, 600], (1000, 600, Responded));
}

/// Runs one INVITE to callees answering at once with `statuses` (callee `i` after
/// `10 * i` ms), returning the final response the caller got.
fn best_of(statuses: &[u16], headers: &[(usize, &'static str, &str)]) -> (Message, Star) {
    let mut star = Star::udp(statuses.len());
    for (i, status) in statuses.iter().enumerate() {
        script(&mut star, i, &[(10 * i as u64, *status)]);
    }
    for (i, name, value) in headers {
        let status = statuses[*i];
        let tu = &mut star.callees[*i].node.tu;
        tu.response_headers
            .push((status, name, (*value).to_owned()));
    }
    let key = star.invite(1);
    star.drive();
    let finals: Vec<Message> = star
        .caller
        .node
        .events_of(&key)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Response { response, .. } => Some(response),
            _ => None,
        })
        .filter(|r| r.status() >= Some(200))
        .collect();
    assert_eq!(finals.len(), 1, "{finals:?}");
    assert_drained(&star);
    (finals[0].clone(), star)
}

/// Without 6xx or 2xx the lowest class wins; within 4xx 401 and 407 come first and
/// carry every challenge (§16.7 items 6, 7); a lone 503 goes up as 500.
#[test]
fn best_response_selection() {
    let (best, star) = best_of(&[500, 486, 302], &[]);
    assert_eq!(best.status(), Some(302));
    assert_eq!(finals(&star)[0].1, 302);

    let www = r#"Digest realm="a.example.com", nonce="n1""#;
    let proxy_auth = r#"Digest realm="b.example.com", nonce="n2""#;
    let (best, star) = best_of(
        &[404, 401, 407, 486],
        &[
            (1, "WWW-Authenticate", www),
            (2, "Proxy-Authenticate", proxy_auth),
        ],
    );
    assert_eq!(best.status(), Some(401));
    assert_eq!(tag_of(&best).as_deref(), Some("callee1"));
    assert_eq!(
        values(
            best.headers_named(HeaderName::WwwAuthenticate)
                .map(|h| h.raw_value())
        ),
        [www]
    );
    assert_eq!(
        values(
            best.headers_named(HeaderName::ProxyAuthenticate)
                .map(|h| h.raw_value())
        ),
        [proxy_auth]
    );
    assert_eq!(finals(&star)[0].1, 401);

    let (best, star) = best_of(&[503], &[]);
    assert_eq!(best.status(), Some(500));
    assert_eq!(finals(&star), [(0, 500, Responded)]);

    let (best, _) = best_of(&[503, 480], &[]);
    assert_eq!(best.status(), Some(480));
}

/// Challenges are gathered once each: two 401s with the same challenge add it once.
#[test]
fn gathered_challenges_are_not_repeated() {
    let a = r#"Digest realm="a.example.com", nonce="n1""#;
    let b = r#"Digest realm="b.example.com", nonce="n2""#;
    let (best, _) = best_of(
        &[401, 401, 401],
        &[
            (0, "WWW-Authenticate", a),
            (1, "WWW-Authenticate", b),
            (2, "WWW-Authenticate", b),
        ],
    );
    assert_eq!(tag_of(&best).as_deref(), Some("callee0"));
    assert_eq!(
        values(
            best.headers_named(HeaderName::WwwAuthenticate)
                .map(|h| h.raw_value())
        ),
        [a, b]
    );
}

/// Past `max_branches`, the least preferred targets are the ones left out.
#[test]
fn max_branches_keeps_the_most_preferred_targets() {
    let mut star = Star::new(
        Transport::Udp,
        3,
        Config::default(),
        ProxyConfig {
            max_branches: 2,
            ..ProxyConfig::default()
        },
        1,
    );
    for (t, q) in star.proxy.targets.iter_mut().zip([500, 1000, 1000]) {
        t.q = q;
    }
    for i in 0..3 {
        script(&mut star, i, &[(0, 180), (1000, 486)]);
    }
    let key = star.invite(1);
    star.drive();
    assert!(requests_to(&star, 0, &Method::Invite).is_empty());
    assert_eq!(requests_to(&star, 1, &Method::Invite), [0]);
    assert_eq!(requests_to(&star, 2, &Method::Invite), [0]);
    assert_eq!(star.caller.node.statuses(&key), [180, 180, 486]);
    assert_drained(&star);
}

/// Branches that never answer time out (timer B) and count as 408 (§16.7 item 6);
/// the caller hears 408 and the request ends with no answer.
#[test]
fn all_branches_timing_out_give_408() {
    let mut star = Star::udp(2);
    for i in 0..2 {
        // Too late: everything the callees send is lost anyway.
        script(&mut star, i, &[(40_000, 486)]);
        silence(&mut star, i, true);
    }
    let key = star.invite(1);
    star.drive();
    assert_ended(&star, &key, &[100, 408], (32_000, 408, NoAnswer));
}

/// The caller's CANCEL (§16.10): 200 to the CANCEL, a CANCEL on each ringing branch,
/// and their 487 goes to the caller.
#[test]
fn caller_cancel_cancels_every_branch() {
    let mut star = Star::udp(2);
    script(&mut star, 0, &[(0, 180)]);
    script(&mut star, 1, &[(0, 183)]);
    let key = star.invite(1);
    star.drive_until(star.at(1000));
    let cancel = star.cancel(&key);
    star.drive();
    assert_eq!(star.caller.node.statuses(&cancel), [200]);
    for i in 0..2 {
        assert_eq!(requests_to(&star, i, &Method::Cancel), [1000]);
        assert_eq!(star.callees[i].node.responses_sent(487).len(), 1);
    }
    assert_ended(&star, &key, &[180, 183, 487], (1000, 487, Cancelled));
}

/// A CANCEL that crosses the callee's 200: the 200 still reaches the caller, which
/// acknowledges it, and the callee, already answered, ignores the CANCEL.
#[test]
fn cancel_racing_a_200_the_200_wins() {
    let mut star = Star::udp(1);
    star.set_links(Link {
        latency: ms(50),
        ..Link::default()
    });
    // INVITE at the callee at 100 ms; 180 at the caller at 200 ms, which cancels at
    // once; its CANCEL reaches the proxy at 250 ms and the callee at 300 ms, after
    // the callee's 200 at 280 ms.
    script(&mut star, 0, &[(0, 180), (180, 200)]);
    star.caller.node.tu.cancel_on_ringing = true;
    let key = star.invite(1);
    star.drive();
    assert_eq!(requests_to(&star, 0, &Method::Cancel), [250]);
    assert!(star.callees[0].node.responses_sent(487).is_empty());
    assert_eq!(star.caller.node.tu.acks_sent, 1);
    assert_eq!(acks_at(&star, 0), 1);
    assert_ended(&star, &key, &[180, 200], (330, 200, Responded));
}

/// The caller cancels before the branch answered provisionally: the proxy holds its
/// CANCEL until the branch's first provisional response (§9.1), then the 487 reaches
/// the caller. The 180 that came after the CANCEL is not relayed.
#[test]
fn cancel_before_any_provisional() {
    let mut star = Star::udp(1);
    script(&mut star, 0, &[(0, 180)]);
    silence(&mut star, 0, true);
    let key = star.invite(1);
    star.drive_until(star.at(1000));
    star.cancel(&key);
    star.drive_until(star.at(3000));
    assert!(requests_to(&star, 0, &Method::Cancel).is_empty());
    silence(&mut star, 0, false);
    star.drive();
    assert_eq!(requests_to(&star, 0, &Method::Cancel), [3500]);
    assert_ended(&star, &key, &[100, 487], (3500, 487, Cancelled));
}

/// Timer C (§16.8) on a ringing branch: CANCEL, and the caller hears 408 (no
/// answer), not the 487 of the CANCEL.
#[test]
fn timer_c_with_a_provisional_cancels_and_answers_408() {
    let mut star = Star::udp(1);
    script(&mut star, 0, &[(0, 180)]);
    let key = star.invite(1);
    star.drive();
    assert_eq!(requests_to(&star, 0, &Method::Cancel), [181_000]);
    assert_eq!(star.callees[0].node.responses_sent(487).len(), 1);
    assert_ended(&star, &key, &[180, 408], (181_000, 408, NoAnswer));
}

/// Timer C on a branch that never answered: it ends as if it had answered 408, with
/// no CANCEL, and its INVITE is no longer retransmitted.
#[test]
fn timer_c_without_a_provisional_ends_the_branch_as_408() {
    let mut star = Star::new(
        Transport::Udp,
        1,
        Config::default(),
        ProxyConfig {
            timer_c: ms(10_000),
            ..ProxyConfig::default()
        },
        1,
    );
    script(&mut star, 0, &[(40_000, 486)]);
    silence(&mut star, 0, true);
    let key = star.invite(1);
    star.drive();
    assert_eq!(
        requests_to(&star, 0, &Method::Invite),
        [0, 500, 1500, 3500, 7500]
    );
    assert!(requests_to(&star, 0, &Method::Cancel).is_empty());
    assert_ended(&star, &key, &[100, 408], (10_000, 408, NoAnswer));
}

/// Timer C restarts with every provisional response above 100 (a 183 at 100 s), not
/// with a 100 (at 200 s).
#[test]
fn timer_c_is_reset_by_180_183_but_not_by_100() {
    let mut star = Star::udp(1);
    script(&mut star, 0, &[(0, 180), (100_000, 183), (200_000, 100)]);
    let key = star.invite(1);
    star.drive();
    assert_eq!(requests_to(&star, 0, &Method::Cancel), [281_000]);
    assert_ended(&star, &key, &[180, 183, 408], (281_000, 408, NoAnswer));
}

/// A branch whose send fails (§17.1.4) counts as a 480 from it; it beats the other
/// branch's 503 (4xx before 5xx).
#[test]
fn transport_error_on_a_branch_counts_as_480() {
    let mut star = Star::udp(2);
    star.callees[0].broken = true;
    script(&mut star, 1, &[(0, 180), (1000, 503)]);
    let key = star.invite(1);
    star.drive();
    assert!(star.callees[0].node.new_requests().is_empty());
    assert_ended(&star, &key, &[180, 480], (1000, 480, Responded));
}

/// A ringing branch that goes silent, then timer C: its CANCEL is never answered,
/// so 64*T1 later the branch is given up as 408 (§9.1) and everything drains.
#[test]
fn timer_c_cancel_unanswered_ends_the_branch() {
    let mut star = Star::udp(1);
    script(&mut star, 0, &[(0, 180), (200_000, 486)]);
    let key = star.invite(1);
    star.drive_until(star.at(1000));
    silence(&mut star, 0, true);
    star.drive();
    assert_eq!(
        requests_to(&star, 0, &Method::Cancel).first(),
        Some(&181_000)
    );
    assert_ended(&star, &key, &[180, 408], (213_000, 408, NoAnswer));
}

/// A cancelled branch that keeps ringing but never answers the CANCEL (lost on the
/// way) is given up 64*T1 after the CANCEL; its 183s do not extend that.
#[test]
fn cancelled_branch_ringing_forever_is_given_up_after_64_t1() {
    let mut star = Star::udp(1);
    // It rings every 10 s, and gives up itself at 100 s (its 486 finds no branch).
    let mut answers: Vec<(u64, u16)> = (0..10).map(|n| (n * 10_000, 183)).collect();
    answers.push((100_000, 486));
    script(&mut star, 0, &answers);
    let key = star.invite(1);
    star.drive_until(star.at(1000));
    star.callees[0].down.loss = 1000;
    star.cancel(&key);
    star.drive();
    assert_eq!(requests_to(&star, 0, &Method::Cancel).first(), Some(&1000));
    assert_ended(&star, &key, &[183, 487], (33_000, 487, Cancelled));
}

/// Non-INVITE requests (MESSAGE, BYE) are forwarded and their response relayed,
/// with no timer C.
#[test]
fn non_invite_forwarded_without_timer_c() {
    let mut star = Star::udp(1);
    star.callees[0].node.tu.non_invite_script = vec![(ms(3000), 202)];
    let key = star.start_client(numbered_request("MESSAGE", 1, Transport::Udp));
    star.drive_until(star.at(1000));
    assert!(star.proxy.proxy.has_context(&star.server_key(0)));
    assert_eq!(star.proxy.proxy.poll_timeout(), None, "no timer C");
    star.drive();
    assert_eq!(star.caller.node.statuses(&key), [202]);
    assert_eq!(received(&star, 0, &Method::Message).len(), 1);
    assert_eq!(finals(&star), [(3000, 202, Responded)]);

    star.callees[0].node.tu.non_invite_script = vec![(ms(0), 200)];
    let bye = request("BYE", "z9hG4bKbye1", 2, "message-1", Transport::Udp);
    let bye_at = star.ms_since_start(star.time);
    let key = star.start_client(bye);
    star.drive();
    assert_eq!(star.caller.node.statuses(&key), [200]);
    let got = received(&star, 0, &Method::Bye);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].max_forwards(), Some(69));
    assert_eq!(got[0].vias().count(), 2);
    assert_eq!(finals(&star)[1..], [(bye_at, 200, Responded)]);
    assert_drained(&star);
}

/// A forked MESSAGE: one final response to the caller, whatever the others answer.
#[test]
fn forked_non_invite_relays_one_final() {
    let mut star = Star::udp(2);
    star.callees[0].node.tu.non_invite_script = vec![(ms(0), 200)];
    star.callees[1].node.tu.non_invite_script = vec![(ms(100), 200)];
    let key = star.start_client(numbered_request("MESSAGE", 1, Transport::Udp));
    star.drive();
    assert_eq!(to_caller(&star), [(0, 200)]);
    assert!(requests_to(&star, 1, &Method::Cancel).is_empty());
    assert_ended(&star, &key, &[200], (0, 200, Responded));
}

/// §16.3 item 4 and §16.6 item 8: a request that comes back to the proxy unchanged
/// has looped; one whose Request-URI (or other identifying field) changed on the way
/// is a spiral. Only the proxy's own Vias count.
#[test]
fn loop_detection_tells_a_loop_from_a_spiral() {
    let mut star = Star::udp(1);
    script(&mut star, 0, &[(0, 486)]);
    star.invite(1);
    star.drive();
    let original = star.caller.node.tu.started[0].1.clone();
    let forwarded = received(&star, 0, &Method::Invite).remove(0);
    let ours = |v: &holdfast_sip::Via| &v.host_text[..] == b"192.0.2.10";

    // Back with the Request-URI it first came with: a loop.
    let mut back = forwarded.clone();
    back.set_request_uri(original.request_uri().unwrap().clone());
    assert_eq!(route::loop_hash(&back), route::loop_hash(&original));
    assert!(route::has_looped(&back, ours));
    assert!(!route::has_looped(&back, |_| false), "someone else's Via");
    // Back with the target's Request-URI: a spiral.
    assert!(!route::has_looped(&forwarded, ours));
    // Another CSeq or To tag: another request.
    let text = String::from_utf8(back.to_bytes().to_vec()).unwrap();
    for changed in [
        text.replace("CSeq: 1 INVITE", "CSeq: 2 INVITE"),
        text.replace(
            "To: <sip:bob@uas.example.com>",
            "To: <sip:bob@uas.example.com>;tag=x",
        ),
    ] {
        assert_ne!(changed, text);
        assert!(!route::has_looped(
            &message(&changed.replace("\r\n", "\n")),
            ours
        ));
    }
    // What does not identify the request does not change the hash.
    let mut hops = original.clone();
    hops.decrement_max_forwards();
    assert_eq!(route::loop_hash(&hops), route::loop_hash(&original));
    // No Via of the proxy's: no loop.
    assert!(!route::has_looped(&original, |_| true));
}

/// Path values go above the request's Route fields in their order, or right below
/// the Vias when it has none (RFC 3327 §5.3).
#[test]
fn push_routes_keeps_order_above_existing_routes() {
    let routes = [
        Bytes::from_static(b"<sip:p1.example.com;lr>"),
        Bytes::from_static(b"<sip:p2.example.com;lr>"),
    ];
    let mut with = message(
        "OPTIONS sip:bob@example.com SIP/2.0\n\
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bKr1\n\
Max-Forwards: 70\n\
Route: <sip:r1.example.com;lr>, <sip:r2.example.com;lr>\n\
From: <sip:alice@example.com>;tag=a\n\
To: <sip:bob@example.com>\n\
Call-ID: r\n\
CSeq: 1 OPTIONS\n\
Content-Length: 0\n\n",
    );
    route::push_routes(&mut with, &routes);
    assert_eq!(
        values(with.routes().map(|r| r.as_bytes())),
        [
            "<sip:p1.example.com;lr>",
            "<sip:p2.example.com;lr>",
            "<sip:r1.example.com;lr>",
            "<sip:r2.example.com;lr>"
        ]
    );
    let mut without = request("OPTIONS", "z9hG4bKr2", 1, "r", Transport::Udp);
    route::push_routes(&mut without, &routes);
    assert_eq!(
        values(without.routes().map(|r| r.as_bytes())),
        ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    );
    let names: Vec<_> = without.headers().iter().map(|h| h.name()).collect();
    assert_eq!(
        names[..3],
        [HeaderName::Via, HeaderName::Route, HeaderName::Route]
    );
    let reparsed = message(&String::from_utf8_lossy(&without.to_bytes()).replace("\r\n", "\n"));
    assert_eq!(reparsed.routes().count(), 2);
}

/// A lossy, duplicating, reordering network: every call still ends with the right
/// final response at the caller, each callee gets one INVITE transaction per call
/// (retransmissions absorbed), and the callee's 2xx is retransmitted until the
/// caller's ACK gets through.
#[test]
fn lossy_network_calls_complete() {
    for seed in 0..48 {
        let mut star = Star::new(
            Transport::Udp,
            2,
            Config::default(),
            ProxyConfig::default(),
            seed,
        );
        star.set_links(Link {
            loss: 250,
            duplicate: 100,
            latency: ms(20),
            jitter: ms(300),
        });
        script(&mut star, 0, &[(0, 180), (2000, 200)]);
        script(&mut star, 1, &[(0, 180), (1000, 486)]);
        star.callees[0].node.tu.retransmit_2xx = true;
        let keys: Vec<_> = (1..=3).map(|n| star.invite(n)).collect();
        star.drive();
        for key in &keys {
            let statuses = star.caller.node.statuses(key);
            let finals: Vec<_> = statuses.iter().filter(|s| **s >= 200).collect();
            assert!(
                !finals.is_empty() && finals.iter().all(|s| **s == 200),
                "seed {seed}: {statuses:?}"
            );
        }
        for i in 0..2 {
            let invites = received(&star, i, &Method::Invite);
            let mut calls: Vec<_> = invites.iter().map(|r| r.call_id().cloned()).collect();
            calls.sort();
            calls.dedup();
            assert_eq!(calls.len(), 3, "seed {seed}: callee {i}");
            assert_eq!(invites.len(), 3, "seed {seed}: callee {i}");
        }
        for key in &keys {
            assert_2xx_retransmitted_until_acked(&star, key);
        }
        let answered = finals(&star);
        assert_eq!(answered.len(), 3, "seed {seed}");
        assert!(answered.iter().all(|f| (f.1, f.2) == (200, Responded)));
        assert_drained(&star);
    }
}

/// Callee 0 retransmits its 2xx for the call of `invite` until the caller's ACK
/// reaches it through the proxy, and for 64*T1 when none does (§13.3.1.4).
fn assert_2xx_retransmitted_until_acked(star: &Star, invite: &TransactionKey) {
    let call = star.caller.node.started(invite).call_id().unwrap();
    let node = &star.callees[0].node;
    let oks: Vec<u64> = node
        .sent
        .iter()
        .filter(|s| s.message.status() == Some(200) && s.message.call_id() == Some(call))
        .map(|s| star.ms_since_start(s.at))
        .collect();
    let ack = node.events.iter().find_map(|(at, e)| match e {
        Event::Request {
            key: None, request, ..
        } if request.call_id() == Some(call) => Some(star.ms_since_start(*at)),
        _ => None,
    });
    let (first, last) = (oks[0], oks[oks.len() - 1]);
    match ack {
        Some(ack) => assert!(last <= ack, "2xx at {oks:?} after the ACK at {ack}"),
        None => assert_eq!(last - first, 31_500, "{oks:?}"),
    }
}

/// How a callee answers in the property test.
#[derive(Debug, Clone)]
struct Answer {
    q: u16,
    /// 180 after this many ms.
    ring: Option<u64>,
    /// A final response this many ms after the 180 (or the INVITE).
    last: Option<(u64, u16)>,
    /// The proxy cannot send to it (a dead connection).
    broken: bool,
}

/// One run of the property test.
#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    link: Link,
    reliable: bool,
    answers: Vec<Answer>,
    cancel_at: Option<u64>,
    timer_c: u64,
    /// 2xx the caller leaves unacknowledged, as if its ACK were lost.
    unacked: usize,
    /// A MESSAGE rather than an INVITE (and no CANCEL).
    message: bool,
}

impl Case {
    fn method(&self) -> Method {
        if self.message {
            Method::Message
        } else {
            Method::Invite
        }
    }
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        prop_oneof![Just(1000u16), Just(500u16)],
        proptest::option::of(0u64..3000),
        proptest::option::of((
            0u64..6000,
            prop_oneof![
                Just(200u16),
                Just(486),
                Just(404),
                Just(603),
                Just(503),
                Just(401)
            ],
        )),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(q, ring, last, broken)| Answer {
            q,
            ring,
            last,
            broken,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        (0u32..300, 0u32..200, 0u64..100, 0u64..500),
        any::<bool>(),
        proptest::collection::vec(answer(), 1..5),
        proptest::option::of(0u64..8000),
        // Timer C also short enough to race the answers.
        prop_oneof![Just(181_000u64), 1000u64..10_000],
        0usize..3,
        proptest::bool::weighted(0.25),
    )
        .prop_map(
            |(
                seed,
                (loss, duplicate, latency, jitter),
                reliable,
                answers,
                cancel_at,
                timer_c,
                unacked,
                message,
            )| {
                Case {
                    seed,
                    link: Link {
                        loss,
                        duplicate,
                        latency: ms(latency),
                        jitter: ms(jitter),
                    },
                    reliable,
                    answers,
                    cancel_at,
                    timer_c,
                    unacked,
                    message,
                }
            },
        )
}

/// Runs `case` to the end.
fn run(case: &Case) -> Star {
    let transport = if case.reliable {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let proxy = ProxyConfig {
        timer_c: ms(case.timer_c),
        ..ProxyConfig::default()
    };
    let mut star = Star::new(
        transport,
        case.answers.len(),
        Config::default(),
        proxy,
        case.seed,
    );
    star.set_links(case.link);
    for (i, a) in case.answers.iter().enumerate() {
        star.proxy.targets[i].q = a.q;
        let mut answers: Vec<(u64, u16)> = a.ring.map(|r| (r, 180)).into_iter().collect();
        // A callee that does not answer gives up by itself after 10 minutes, as a
        // phone does: a branch the proxy ends without a CANCEL (no provisional
        // response reached it) leaves the callee's transaction to end that way.
        let last = a.last.unwrap_or((600_000, 480));
        answers.push((a.ring.unwrap_or(0) + last.0, last.1));
        let tu = &mut star.callees[i].node.tu;
        tu.invite_script = answers.iter().map(|(d, s)| (ms(*d), *s)).collect();
        tu.non_invite_script = tu.invite_script.clone();
        tu.retransmit_2xx = true;
        star.callees[i].broken = a.broken;
    }
    star.caller.node.tu.ignore_2xx = case.unacked;
    if case.message {
        star.start_client(numbered_request("MESSAGE", 1, transport));
        star.drive();
        return star;
    }
    let key = star.invite(1);
    if let Some(at) = case.cancel_at {
        star.drive_until(star.at(at));
        let state = star.caller.node.layer.state(&key);
        if matches!(
            state,
            Some(TransactionState::Calling | TransactionState::Proceeding)
        ) {
            star.cancel(&key);
        }
    }
    star.drive();
    // Every copy of the final response lost on the way (the proxy relays each 2xx
    // it gets, but the callee stops retransmitting after 64*T1): the caller's
    // transaction waits in Proceeding, with no timer, until its user gives up.
    if star.caller.node.layer.state(&key) == Some(TransactionState::Proceeding) {
        star.caller.node.layer.terminate(&key);
        star.drive();
    }
    star
}

/// The caller never gets two different final responses (one non-2xx, or only 2xx)
/// nor a provisional response after a final one nor a 100 but the proxy's own; the
/// proxy reports one outcome, the first final response the caller was sent; each
/// callee sees one transaction for the request; everything drains.
fn check(star: &Star, method: &Method) -> Result<(), TestCaseError> {
    let responses: Vec<&Message> = star
        .proxy
        .sent_to(&star.caller.peer)
        .iter()
        .map(|s| &s.message)
        .filter(|m| m.cseq().map(|c| &c.method) == Some(method))
        .collect();
    let first_final = responses.iter().position(|m| m.status() >= Some(200));
    let late = responses[first_final.unwrap_or(responses.len())..]
        .iter()
        .filter(|m| m.status() < Some(200));
    prop_assert_eq!(late.count(), 0);
    for trying in responses.iter().filter(|m| m.status() == Some(100)) {
        prop_assert_eq!(tag_of(trying), None);
    }
    // Distinct final responses sent to the caller: (status, To tag).
    let mut sent: Vec<(u16, Option<String>)> = responses
        .iter()
        .filter_map(|m| Some((m.status().filter(|s| *s >= 200)?, tag_of(m))))
        .collect();
    let first = sent.first().map(|s| s.0);
    sent.sort();
    sent.dedup();
    let non_2xx = sent.iter().filter(|(s, _)| *s >= 300).count();
    prop_assert!(non_2xx == 0 || sent.len() == 1, "{:?}", sent);

    let reported: Vec<u16> = finals(star).iter().map(|f| f.1).collect();
    let forwarded = star.proxy.events.iter().any(
        |(_, e)| matches!(e, Event::Request { request, .. } if request.method() == Some(method)),
    );
    prop_assert_eq!(reported.len(), usize::from(forwarded));
    prop_assert_eq!(reported.first().copied(), first);
    for i in 0..star.callees.len() {
        prop_assert!(received(star, i, method).len() <= 1);
    }
    assert_drained(star);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Whatever the targets answer, whatever the network does, whenever timer C
    /// fires and whenever the caller cancels, [`check`] holds.
    #[test]
    fn one_final_outcome_and_everything_drains(case in case()) {
        check(&run(&case), &case.method())?;
    }
}
