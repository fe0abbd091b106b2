//! Transport errors (§17.1.4, §17.2.4; RFC 6026 §7.1, §8.8).

use holdfast_sip::Method;

use super::sim::*;
use crate::transaction::{Config, Event, TransactionState};
use crate::Transport;

/// A send that fails is reported by the shell; the client transaction tells the TU and
/// terminates at once, with no timeout later.
#[test]
fn transport_error_terminates_client_transaction() {
    let mut pair = Pair::new(Transport::Tcp, Config::default(), 1);
    pair.net.broken = true;
    let options = pair.options(1);
    let invite = pair.invite(2);
    pair.drive();
    for key in [&options, &invite] {
        let events = pair.uac.events_of(key);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(events[0].1, Event::TransportError { .. }));
        assert!(matches!(events[1].1, Event::Terminated { .. }));
        assert_eq!(pair.ms_since_start(events[1].0), 0);
    }
    assert!(pair.uac.layer.is_empty());
    assert_eq!(pair.uac.layer.poll_timeout(), None);
}

/// A connection that dies fails every client transaction sending over it.
#[test]
fn peer_error_fails_every_transaction_on_the_connection() {
    let mut config = Config::default();
    config.timers.trying = None;
    let mut pair = Pair::new(Transport::Tcp, config, 1);
    pair.uas.tu.non_invite_script = Vec::new();
    let options = pair.options(1);
    let invite = pair.invite(2);
    pair.drive_for(ms(10));
    let remote = pair.uac.remote;
    let now = pair.time;
    pair.uac.layer.handle_peer_error(&remote, now);
    pair.drive_for(ms(1));
    for key in [&options, &invite] {
        assert!(matches!(
            pair.uac.events_of(key)[..],
            [
                (_, Event::TransportError { .. }),
                (_, Event::Terminated { .. })
            ]
        ));
    }
    assert!(pair.uac.layer.is_empty());
}

/// A server transaction keeps its state on a transport error so that retransmitted
/// requests are still absorbed (RFC 6026 §7.1); the TU's final response and the
/// timers end it as usual.
#[test]
fn server_transaction_survives_transport_error() {
    let mut config = Config::default();
    config.timers.trying = None;
    let mut pair = Pair::new(Transport::Udp, config, 1);
    pair.uas.tu.invite_script = vec![(ms(5000), 486)];
    let key = pair.invite(1);
    pair.drive_for(ms(100));
    let server = pair.uas.new_requests()[0].0.clone();
    let now = pair.time;
    pair.uas.layer.handle_transport_error(&server, now);
    pair.drive_for(ms(1000));
    assert!(pair
        .uas
        .events_of(&server)
        .iter()
        .any(|(_, e)| matches!(e, Event::TransportError { .. })));
    assert_eq!(
        pair.uas.layer.state(&server),
        Some(TransactionState::Proceeding)
    );
    assert_eq!(
        pair.uac.requests_sent(&Method::Invite).len(),
        2,
        "timer A resent it"
    );
    assert_eq!(
        pair.uas.new_requests().len(),
        1,
        "and the copy was absorbed"
    );
    pair.drive();
    assert_eq!(pair.uac.statuses(&key), [486]);
    assert!(pair.uas.layer.is_empty());
}
