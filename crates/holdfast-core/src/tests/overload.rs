//! The bound on live transactions.

use std::time::Duration;

use super::sim::*;
use crate::transaction::{Config, Error, Event, LocalError};
use crate::{TransactionLayer, Transport};

/// Past `max_transactions`, a new request is handed back as `Overloaded` (the shell
/// answers 503) and no transaction is created; retransmissions of live transactions
/// and transaction-less ACKs still pass, and room comes back as transactions end.
#[test]
fn max_transactions_refuses_new_server_transactions() {
    let mut pair = Pair::udp();
    pair.uas.layer = TransactionLayer::new(Config {
        max_transactions: 2,
        ..Config::default()
    });
    pair.uas.tu.non_invite_script = vec![(Duration::from_millis(1000), 200)];
    pair.options(1);
    pair.options(2);
    pair.options(3);
    pair.drive_for(ms(10));
    let overloaded = |pair: &Pair| {
        pair.uas
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Overloaded { .. }))
            .count()
    };
    assert_eq!(pair.uas.new_requests().len(), 2);
    assert_eq!(overloaded(&pair), 1);
    assert_eq!(pair.uas.layer.len(), 2);
    assert!(pair.uas.layer.armed_timers() <= 2 * pair.uas.layer.len());

    // Timer E resends all three at 500 ms: two are absorbed, the third refused again.
    pair.drive_until(pair.at(600));
    assert_eq!(pair.uas.new_requests().len(), 2);
    assert_eq!(overloaded(&pair), 2);
    let ack = request("ACK", "z9hG4bKack", 1, "c", Transport::Udp);
    pair.inject_to_uas(&ack);
    pair.drive_for(ms(1));
    assert_eq!(pair.uas.transactionless_requests().len(), 1);

    let remote = pair.uas.remote;
    let now = pair.time;
    let refused = pair.uas.layer.start_client(
        request("OPTIONS", "z9hG4bKout", 1, "out", Transport::Udp),
        remote,
        now,
    );
    assert_eq!(refused, Err(Error::Local(LocalError::Overloaded)));

    // Answered at 1 s, the two transactions linger for timer J (64*T1), then free
    // their slots.
    pair.drive_until(pair.at(33_100));
    assert!(pair.uas.layer.is_empty());
    pair.options(4);
    pair.drive_for(ms(10));
    assert_eq!(pair.uas.new_requests().len(), 3);
    assert_eq!(pair.uas.layer.len(), 1);
}
