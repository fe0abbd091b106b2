//! Non-INVITE transactions end to end: §17.1.2 and §17.2.2.

use holdfast_sip::Method;

use super::sim::*;
use crate::transaction::{Event, Timer, TransactionState};
use crate::Transport;

/// A request that is always lost is resent by timer E at T1, 2*T1, 4*T1, then every T2,
/// and times out at exactly timer F = 64*T1 (§17.1.2.2).
#[test]
fn lost_request_timer_e_until_timeout_at_timer_f() {
    let mut pair = Pair::udp();
    pair.net.to_uas.loss = 1000;
    let key = pair.options(1);
    pair.drive();
    assert_eq!(
        pair.ms_list(&pair.uac.requests_sent(&Method::Options)),
        [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    let events = pair.uac.events_of(&key);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(pair.ms_since_start(events[0].0), 32_000);
    assert!(matches!(
        events[0].1,
        Event::Timeout {
            timer: Timer::F,
            ..
        }
    ));
    assert_eq!(pair.ms_since_start(events[1].0), 32_000);
    assert!(matches!(events[1].1, Event::Terminated { .. }));
    assert!(pair.uac.layer.is_empty());
    assert_eq!(pair.uac.layer.poll_timeout(), None);
}

/// After a provisional response, timer E resends every T2 (§17.1.2.2); each
/// retransmission draws the last provisional again (§17.2.2). Timer K (T4) ends the
/// client, timer J (64*T1) the server.
#[test]
fn proceeding_retransmits_every_t2_timers_k_and_j() {
    let mut pair = Pair::udp();
    pair.uas.tu.non_invite_script = vec![(ms(0), 100), (ms(10_000), 200)];
    let key = pair.options(1);
    pair.drive_until(pair.at(1));
    assert_eq!(
        pair.uac.layer.state(&key),
        Some(TransactionState::Proceeding)
    );
    pair.drive();
    assert_eq!(
        pair.ms_list(&pair.uac.requests_sent(&Method::Options)),
        [0, 500, 4500, 8500]
    );
    assert_eq!(
        pair.ms_list(&pair.uas.responses_sent(100)),
        [0, 500, 4500, 8500]
    );
    assert_eq!(pair.ms_list(&pair.uas.responses_sent(200)), [10_000]);
    // Every provisional reaches the TU, retransmitted ones included (§17.1.2.2).
    assert_eq!(pair.uac.statuses(&key), [100, 100, 100, 100, 200]);
    assert_eq!(
        pair.uac.terminated_at(&key).map(|t| pair.ms_since_start(t)),
        Some(15_000)
    );
    let skey = pair.uas.new_requests()[0].0.clone();
    assert_eq!(pair.uas.new_requests().len(), 1);
    assert_eq!(
        pair.uas
            .terminated_at(&skey)
            .map(|t| pair.ms_since_start(t)),
        Some(42_000)
    );
}

/// Request and response duplicated by the network: the server transaction hands the
/// request to the TU once and answers the copy with its final response again; the
/// client transaction hands the TU one final response (§17.2.2, §17.1.2.2).
#[test]
fn duplicates_absorbed_by_both_transactions() {
    let mut pair = Pair::udp();
    for link in [&mut pair.net.to_uas, &mut pair.net.to_uac] {
        link.duplicate = 1000;
        link.latency = ms(10);
    }
    pair.uas.tu.invite_script = vec![(ms(0), 486)];
    let options = pair.options(1);
    let invite = pair.invite(2);
    pair.drive();
    assert_eq!(pair.uas.new_requests().len(), 2);
    assert_eq!(pair.uac.statuses(&options), [200]);
    assert_eq!(pair.uac.statuses(&invite), [486]);
    assert_eq!(
        pair.uas.responses_sent(200).len(),
        2,
        "the copy draws the final again"
    );
    assert_eq!(pair.uas.responses_sent(486).len(), 2);
    assert!(
        pair.uas.transactionless_requests().is_empty(),
        "duplicate ACKs absorbed"
    );
    assert!(pair.uac.stray_responses().is_empty());
    assert!(pair.uac.layer.is_empty() && pair.uas.layer.is_empty());
}

/// Over a reliable transport a request is sent once, even to a silent server, and
/// the timeout still comes at timer F (§17.1.2.2: E only for unreliable transports).
#[test]
fn reliable_request_sent_once_then_timer_f() {
    let mut pair = Pair::new(Transport::Tcp, Default::default(), 1);
    pair.uas.tu.non_invite_script = Vec::new();
    let key = pair.options(1);
    pair.drive();
    assert_eq!(pair.ms_list(&pair.uac.requests_sent(&Method::Options)), [0]);
    let events = pair.uac.events_of(&key);
    assert_eq!(pair.ms_since_start(events[0].0), 32_000);
    assert!(matches!(
        events[0].1,
        Event::Timeout {
            timer: Timer::F,
            ..
        }
    ));
}

/// Over a reliable transport timers J and K are zero: both transactions end when the
/// final response is sent and received.
#[test]
fn reliable_zero_timers_j_and_k() {
    let mut pair = Pair::new(Transport::Tls, Default::default(), 1);
    pair.uas.tu.non_invite_script = vec![(ms(300), 200)];
    let key = pair.options(1);
    pair.drive();
    assert_eq!(pair.uac.statuses(&key), [200]);
    assert_eq!(
        pair.uac.terminated_at(&key).map(|t| pair.ms_since_start(t)),
        Some(300)
    );
    let skey = pair.uas.new_requests()[0].0.clone();
    assert_eq!(
        pair.uas
            .terminated_at(&skey)
            .map(|t| pair.ms_since_start(t)),
        Some(300)
    );
    assert_eq!(pair.ms_list(&pair.uac.requests_sent(&Method::Options)), [0]);
}

/// A final response from the TU after the first one is refused (§17.2.2: discarded).
#[test]
fn second_final_response_is_refused() {
    let mut pair = Pair::udp();
    pair.uas.tu.non_invite_script = vec![(ms(0), 200), (ms(10), 486)];
    pair.options(1);
    pair.drive();
    assert_eq!(pair.uas.tu.errors.len(), 1);
    assert!(pair.uas.responses_sent(486).is_empty());
}

/// A T1 configured as zero cannot make a retransmission timer spin at one instant.
#[test]
fn zero_t1_does_not_spin() {
    let mut config = crate::transaction::Config::default();
    config.timers.t1 = std::time::Duration::ZERO;
    config.timers.t2 = std::time::Duration::ZERO;
    let mut pair = Pair::new(Transport::Udp, config, 1);
    pair.net.to_uas.loss = 1000;
    pair.options(1);
    pair.drive_for(ms(10));
    assert_eq!(
        pair.uac.requests_sent(&Method::Options).len(),
        11,
        "every 1 ms"
    );
}

/// An encoded response is sent as it is, resent for a retransmitted request, and ends
/// the transaction by timer J like any final response; an INVITE transaction refuses
/// one (it reads the To tag of its responses).
#[test]
fn an_encoded_response_is_sent_kept_and_resent() {
    use crate::response::ResponseWriter;
    use crate::transaction::{Action, Config, LocalError, TransactionLayer};
    use crate::{Error, Peer};

    let mut layer = TransactionLayer::new(Config::default());
    let peer = Peer {
        transport: Transport::Udp,
        addr: "192.0.2.1:5060".parse().unwrap(),
        connection: None,
        local: None,
    };
    let now = super::epoch();
    let register = request("REGISTER", "z9hG4bKenc", 1, "enc", Transport::Udp);
    layer.handle_message(register.clone(), peer, now).unwrap();
    let key = match layer.poll_action() {
        Some(Action::ToUser(Event::Request { key: Some(key), .. })) => key,
        other => panic!("{other:?}"),
    };
    let response = ResponseWriter::new(&register, 200, "OK", "t1").finish();
    layer.respond_encoded(&key, &response, now).unwrap();
    let sent = |layer: &mut TransactionLayer| match layer.poll_action() {
        Some(Action::Send { data, .. }) => data,
        other => panic!("{other:?}"),
    };
    assert_eq!(sent(&mut layer), response.data);
    assert_eq!(layer.state(&key), Some(TransactionState::Completed));
    layer.handle_message(register, peer, now + ms(100)).unwrap();
    assert_eq!(sent(&mut layer), response.data);
    assert!(matches!(
        layer.respond_encoded(&key, &response, now),
        Err(Error::Local(LocalError::ResponseNotAllowed { .. }))
    ));
    layer.handle_timeout(now + ms(32_000));
    assert_eq!(layer.state(&key), None);

    let invite = request("INVITE", "z9hG4bKinv", 1, "inv", Transport::Udp);
    layer.handle_message(invite.clone(), peer, now).unwrap();
    let key = std::iter::from_fn(|| layer.poll_action())
        .find_map(|a| match a {
            Action::ToUser(Event::Request { key: Some(key), .. }) => Some(key),
            _ => None,
        })
        .unwrap();
    let ok = ResponseWriter::new(&invite, 200, "OK", "t2").finish();
    assert!(matches!(
        layer.respond_encoded(&key, &ok, now),
        Err(Error::Local(LocalError::InviteNeedsMessage))
    ));
}
