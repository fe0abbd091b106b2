//! INVITE transactions end to end: §17.1.1 and §17.2.1 with RFC 6026.

use holdfast_sip::Method;

use super::sim::*;
use crate::transaction::{Config, Event, Timer, TransactionState};
use crate::Transport;

fn server_key(pair: &Pair) -> crate::TransactionKey {
    pair.uas.new_requests()[0].0.clone()
}

fn assert_idle(pair: &Pair) {
    for node in [&pair.uac, &pair.uas] {
        assert!(
            node.layer.is_empty(),
            "transactions left: {}",
            node.layer.len()
        );
        assert_eq!(node.layer.poll_timeout(), None);
        assert_eq!(node.layer.armed_timers(), 0);
        assert!(node.errors.is_empty(), "{:?}", node.errors);
        assert!(node.tu.errors.is_empty(), "{:?}", node.tu.errors);
    }
}

/// INVITE -> 180 -> 200 over UDP. The UAS core retransmits its 2xx (§13.3.1.4) through
/// the server transaction in Accepted; the UAC core leaves the first two unacknowledged,
/// so the client transaction in Accepted must hand every copy to the TU (RFC 6026 §7.2)
/// rather than drop it as stray. Timers M and L end both sides 64*T1 after the 2xx.
#[test]
fn invite_180_200_accepted_states_and_timers_l_m() {
    let mut pair = Pair::udp();
    pair.uas.tu.invite_script = vec![(ms(0), 180), (ms(1000), 200)];
    pair.uas.tu.retransmit_2xx = true;
    pair.uac.tu.ignore_2xx = 2;
    let key = pair.invite(1);
    pair.drive_until(pair.at(1200));
    assert_eq!(pair.uac.layer.state(&key), Some(TransactionState::Accepted));
    assert_eq!(
        pair.uas.layer.state(&server_key(&pair)),
        Some(TransactionState::Accepted)
    );
    pair.drive();

    assert_eq!(pair.uac.statuses(&key), [180, 200, 200, 200]);
    assert!(pair.uac.stray_responses().is_empty());
    assert_eq!(pair.uac.tu.acks_sent, 1);
    assert_eq!(
        pair.ms_list(&pair.uac.requests_sent(&Method::Invite)),
        [0],
        "no INVITE retransmission once the 180 arrived"
    );
    assert_eq!(
        pair.ms_list(&pair.uas.responses_sent(200)),
        [1000, 1500, 2500],
        "2xx retransmitted by the TU at T1, 2*T1 until the ACK"
    );
    assert!(
        pair.uas.responses_sent(100).is_empty(),
        "the TU answered within 200 ms"
    );
    assert_eq!(pair.uas.new_requests().len(), 1);
    let acks = pair.uas.transactionless_requests();
    assert_eq!(acks.len(), 1, "the ACK for the 2xx reaches the UAS core");
    assert_eq!(acks[0].method(), Some(&Method::Ack));

    // Timer M (client) and timer L (server) at 64*T1 after the 2xx.
    assert_eq!(
        pair.uac.terminated_at(&key).map(|t| pair.ms_since_start(t)),
        Some(33_000)
    );
    let skey = server_key(&pair);
    assert_eq!(
        pair.uas
            .terminated_at(&skey)
            .map(|t| pair.ms_since_start(t)),
        Some(33_000)
    );
    assert_idle(&pair);
}

/// In Accepted, a retransmitted INVITE is absorbed without reaching the TU or drawing a
/// response (RFC 6026 §7.1). After timer M, a 2xx matches nothing and is stray; after
/// timer L, the same INVITE is a new request.
#[test]
fn accepted_absorbs_invite_then_timers_l_m_release_it() {
    let mut pair = Pair::udp();
    pair.uas.tu.invite_script = vec![(ms(0), 200)];
    let key = pair.invite(1);
    pair.drive_for(ms(100));
    let invite = pair.uac.tu.started[0].1.clone();
    pair.inject_to_uas(&invite);
    pair.drive_for(ms(100));
    assert_eq!(pair.uas.new_requests().len(), 1);
    assert_eq!(
        pair.uas.responses_sent(200).len(),
        1,
        "nothing resent in Accepted"
    );

    pair.drive();
    assert_eq!(pair.uac.statuses(&key), [200]);
    let ok = pair
        .uas
        .sent
        .iter()
        .find(|s| s.message.status() == Some(200))
        .unwrap()
        .message
        .clone();
    pair.inject_to_uac(&ok);
    pair.drive_for(ms(1));
    assert_eq!(pair.uac.stray_responses().len(), 1);
    assert_eq!(pair.uac.statuses(&key), [200]);
    pair.inject_to_uas(&invite);
    pair.drive_for(ms(1));
    assert_eq!(pair.uas.new_requests().len(), 2);
}

/// INVITE -> 486: the client transaction builds and sends the ACK itself (§17.1.1.3),
/// resends it for each retransmitted 486 without bothering the TU, and ends by timer
/// D (32 s); the server transaction is confirmed by the ACK and ends by timer I (T4).
#[test]
fn invite_486_ack_from_transaction_timers_d_and_i() {
    let mut pair = Pair::udp();
    pair.uas.tu.invite_script = vec![(ms(0), 486)];
    let key = pair.invite(1);
    pair.drive_for(ms(100));
    let skey = server_key(&pair);
    assert_eq!(
        pair.uac.layer.state(&key),
        Some(TransactionState::Completed)
    );
    assert_eq!(
        pair.uas.layer.state(&skey),
        Some(TransactionState::Confirmed)
    );
    let ack = pair
        .uac
        .sent
        .iter()
        .find(|s| s.message.method() == Some(&Method::Ack))
        .unwrap();
    assert_eq!(
        ack.transaction.as_ref(),
        Some(&key),
        "the ACK is the transaction's"
    );
    assert_eq!(ack.message.top_via(), pair.uac.tu.started[0].1.top_via());

    pair.drive_until(pair.at(1000));
    let busy = pair
        .uas
        .sent
        .iter()
        .find(|s| s.message.status() == Some(486))
        .unwrap()
        .message
        .clone();
    pair.inject_to_uac(&busy);
    pair.drive();

    assert_eq!(
        pair.uac.statuses(&key),
        [486],
        "retransmissions are absorbed"
    );
    assert_eq!(
        pair.ms_list(&pair.uac.requests_sent(&Method::Ack)),
        [0, 1000]
    );
    assert!(
        pair.uas.transactionless_requests().is_empty(),
        "the ACK belongs to the transaction"
    );
    assert_eq!(
        pair.uac.terminated_at(&key).map(|t| pair.ms_since_start(t)),
        Some(32_000)
    );
    assert_eq!(
        pair.uas
            .terminated_at(&skey)
            .map(|t| pair.ms_since_start(t)),
        Some(5_000)
    );
    assert!(!pair
        .uas
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::Timeout { .. })));
    assert_idle(&pair);
}

/// When no ACK arrives, timer G resends the 486 at T1, 2*T1, 4*T1, then every T2, until
/// timer H (64*T1) times the server transaction out (§17.2.1).
#[test]
fn lost_ack_timer_g_retransmits_until_timer_h() {
    let mut pair = Pair::udp();
    pair.net.to_uas.latency = ms(10);
    pair.uas.tu.invite_script = vec![(ms(0), 486)];
    let key = pair.invite(1);
    pair.drive_until(pair.at(0));
    pair.net.to_uas.loss = 1000; // the INVITE is on its way; every ACK will be lost
    pair.drive();

    assert_eq!(
        pair.ms_list(&pair.uas.responses_sent(486)),
        [10, 510, 1510, 3510, 7510, 11510, 15510, 19510, 23510, 27510, 31510]
    );
    let skey = server_key(&pair);
    let events: Vec<_> = pair
        .uas
        .events_of(&skey)
        .into_iter()
        .map(|(t, e)| (pair.ms_since_start(t), e))
        .collect();
    assert_eq!(events.len(), 3);
    assert!(matches!(
        events[1],
        (
            32_010,
            Event::Timeout {
                timer: Timer::H,
                ..
            }
        )
    ));
    assert!(matches!(events[2], (32_010, Event::Terminated { .. })));
    assert_eq!(pair.uac.statuses(&key), [486]);
    assert_eq!(
        pair.uac.requests_sent(&Method::Ack).len(),
        11,
        "one ACK per 486 copy"
    );
    assert_eq!(pair.uac.requests_sent(&Method::Invite).len(), 1);
    assert_idle(&pair);
}

/// A lost INVITE is resent by timer A at T1, 2*T1, 4*T1, … (doubling, no cap) until
/// timer B (64*T1) reports a timeout (§17.1.1.2).
#[test]
fn lost_invite_timer_a_doubles_until_timer_b() {
    let mut pair = Pair::udp();
    pair.net.to_uas.loss = 1000;
    let key = pair.invite(1);
    pair.drive();
    assert_eq!(
        pair.ms_list(&pair.uac.requests_sent(&Method::Invite)),
        [0, 500, 1500, 3500, 7500, 15500, 31500]
    );
    let events = pair.uac.events_of(&key);
    assert_eq!(events.len(), 2);
    assert_eq!(pair.ms_since_start(events[0].0), 32_000);
    assert!(matches!(
        events[0].1,
        Event::Timeout {
            timer: Timer::B,
            ..
        }
    ));
    assert!(matches!(events[1].1, Event::Terminated { .. }));
    assert_idle(&pair);
}

/// A TU silent for 200 ms makes the INVITE server transaction send 100 Trying itself,
/// which stops timer A at the client (§17.2.1).
#[test]
fn server_sends_100_trying_when_tu_is_slow() {
    let mut pair = Pair::udp();
    pair.uas.tu.invite_script = vec![(ms(1000), 180), (ms(2000), 486)];
    let key = pair.invite(1);
    pair.drive();
    assert_eq!(pair.ms_list(&pair.uas.responses_sent(100)), [200]);
    let trying = pair
        .uas
        .sent
        .iter()
        .find(|s| s.message.status() == Some(100))
        .unwrap();
    assert!(
        trying.message.to().unwrap().tag().is_none(),
        "no To tag on 100 Trying"
    );
    assert_eq!(pair.ms_list(&pair.uac.requests_sent(&Method::Invite)), [0]);
    assert_eq!(pair.uac.statuses(&key), [100, 180, 486]);
    assert_idle(&pair);
}

/// With the automatic 100 Trying turned off, the INVITE is retransmitted, absorbed,
/// and nothing is resent until the TU has sent a provisional response.
#[test]
fn trying_can_be_disabled_or_immediate() {
    let mut config = Config::default();
    config.timers.trying = None;
    let mut pair = Pair::new(Transport::Udp, config, 1);
    pair.uas.tu.invite_script = vec![(ms(1000), 180), (ms(2000), 486)];
    pair.invite(1);
    pair.drive();
    assert!(pair.uas.responses_sent(100).is_empty());
    assert_eq!(
        pair.ms_list(&pair.uac.requests_sent(&Method::Invite)),
        [0, 500]
    );
    assert_eq!(pair.uas.new_requests().len(), 1);
    assert_eq!(pair.ms_list(&pair.uas.responses_sent(180)), [1000]);

    let mut config = Config::default();
    config.timers.trying = Some(ms(0));
    let mut pair = Pair::new(Transport::Udp, config, 1);
    pair.uas.tu.invite_script = vec![(ms(1000), 486)];
    pair.invite(1);
    pair.drive();
    assert_eq!(pair.ms_list(&pair.uas.responses_sent(100)), [0]);
}

/// A retransmitted INVITE in Proceeding draws the most recent provisional response
/// again (§17.2.1).
#[test]
fn invite_retransmission_in_proceeding_resends_last_provisional() {
    let mut pair = Pair::udp();
    pair.uas.tu.invite_script = vec![(ms(0), 100), (ms(50), 180), (ms(5000), 486)];
    pair.invite(1);
    pair.drive_until(pair.at(100));
    let invite = pair.uac.tu.started[0].1.clone();
    pair.inject_to_uas(&invite);
    pair.drive();
    assert_eq!(pair.ms_list(&pair.uas.responses_sent(180)), [50, 100]);
    assert_eq!(pair.ms_list(&pair.uas.responses_sent(100)), [0]);
    assert_eq!(pair.uas.new_requests().len(), 1);
}

/// Over a reliable transport, nothing is retransmitted and timers D and I are zero:
/// both transactions end the moment the ACK is sent and received.
#[test]
fn reliable_invite_no_timer_a_g_and_zero_d_i() {
    let mut config = Config::default();
    config.timers.trying = None;
    let mut pair = Pair::new(Transport::Tcp, config, 1);
    pair.net.to_uas.loss = 1000; // ignored: a stream does not lose messages
    pair.uas.tu.invite_script = vec![(ms(10_000), 486)];
    let key = pair.invite(1);
    pair.drive();
    assert_eq!(pair.ms_list(&pair.uac.requests_sent(&Method::Invite)), [0]);
    assert_eq!(pair.ms_list(&pair.uas.responses_sent(486)), [10_000]);
    assert_eq!(
        pair.ms_list(&pair.uac.requests_sent(&Method::Ack)),
        [10_000]
    );
    assert_eq!(
        pair.uac.terminated_at(&key).map(|t| pair.ms_since_start(t)),
        Some(10_000)
    );
    let skey = server_key(&pair);
    assert_eq!(
        pair.uas
            .terminated_at(&skey)
            .map(|t| pair.ms_since_start(t)),
        Some(10_000)
    );
    assert_idle(&pair);
}

/// An INVITE client transaction in Proceeding has no timer of its own; the TU ends it
/// (§9.1, §16.8), after which a late final response is stray.
#[test]
fn tu_terminates_invite_stuck_in_proceeding() {
    let mut pair = Pair::udp();
    pair.uas.tu.invite_script = vec![(ms(0), 180), (ms(100_000), 486)];
    let key = pair.invite(1);
    pair.drive_for(ms(90_000));
    assert_eq!(
        pair.uac.layer.state(&key),
        Some(TransactionState::Proceeding)
    );
    assert_eq!(pair.uac.layer.poll_timeout(), None);
    assert!(pair.uac.layer.terminate(&key));
    assert!(!pair.uac.layer.terminate(&key));
    pair.drive();
    assert!(matches!(
        pair.uac.events_of(&key).last(),
        Some((_, Event::Terminated { .. }))
    ));
    // Every copy of the late 486 (timer G resends it: no ACK comes) is stray.
    assert_eq!(pair.uas.responses_sent(486).len(), 11);
    assert_eq!(pair.uac.stray_responses().len(), 11);
    assert!(pair.uac.requests_sent(&Method::Ack).is_empty());
}
