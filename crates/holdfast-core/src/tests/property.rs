//! Properties over random loss, duplication and reordering.

use proptest::prelude::*;

use super::sim::*;
use crate::transaction::{Config, Event, Timer};
use crate::Transport;

/// How one client transaction ended, from the events its TU saw.
#[derive(Debug, PartialEq)]
enum Outcome {
    Final(u16),
    Timeout(Timer, u64),
}

fn outcome(pair: &Pair, key: &crate::TransactionKey) -> Outcome {
    let events = pair.uac.events_of(key);
    let (_, last) = events.last().expect("some event");
    assert!(
        matches!(last, Event::Terminated { .. }),
        "ends with Terminated: {events:?}"
    );
    let terminated = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Terminated { .. }))
        .count();
    assert_eq!(terminated, 1, "{events:?}");
    let finals: Vec<u16> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Response { response, .. } => response.status().filter(|s| *s >= 200),
            _ => None,
        })
        .collect();
    let timeouts: Vec<(Timer, u64)> = events
        .iter()
        .filter_map(|(at, e)| match e {
            Event::Timeout { timer, .. } => Some((*timer, pair.ms_since_start(*at))),
            _ => None,
        })
        .collect();
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, Event::TransportError { .. })),
        "{events:?}"
    );
    match (&finals[..], &timeouts[..]) {
        ([status], []) => Outcome::Final(*status),
        ([], [(timer, at)]) => Outcome::Timeout(*timer, *at),
        _ => panic!("exactly one final response or one timeout: {events:?}"),
    }
}

fn lossy_pair(seed: u64, loss: u32, duplicate: u32, latency: u64, jitter: u64) -> Pair {
    let mut pair = Pair::new(Transport::Udp, Config::default(), seed);
    for link in [&mut pair.net.to_uas, &mut pair.net.to_uac] {
        link.loss = loss;
        link.duplicate = duplicate;
        link.latency = ms(latency);
        link.jitter = ms(jitter);
    }
    pair
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every non-INVITE client transaction either completes with the final response
    /// (delivered once) or times out at exactly timer F after it started, never both,
    /// and then terminates exactly once.
    #[test]
    fn non_invite_completes_or_times_out_at_exactly_timer_f(
        seed in any::<u64>(),
        loss in 0u32..500,
        duplicate in 0u32..300,
        latency in 0u64..200,
        jitter in 0u64..1500,
        // Prompt answers, and answers that race timer F at the client.
        answer_after in prop_oneof![0u64..2000, 31_000u64..33_000],
        count in 1u32..6,
    ) {
        let mut pair = lossy_pair(seed, loss, duplicate, latency, jitter);
        pair.uas.tu.non_invite_script = vec![(ms(answer_after), 200)];
        let keys: Vec<_> = (0..count).map(|n| pair.options(n)).collect();
        pair.drive();
        for key in &keys {
            match outcome(&pair, key) {
                Outcome::Final(status) => prop_assert_eq!(status, 200),
                Outcome::Timeout(timer, at) => {
                    prop_assert_eq!(timer, Timer::F);
                    prop_assert_eq!(at, 32_000);
                }
            }
        }
        prop_assert!(pair.uac.layer.is_empty() && pair.uas.layer.is_empty());
        prop_assert!(pair.uac.errors.is_empty() && pair.uas.errors.is_empty());
        prop_assert_eq!(pair.uac.layer.armed_timers() + pair.uas.layer.armed_timers(), 0);
    }

    /// Every INVITE client transaction answered 486 either gets the 486 once (and the
    /// transaction's own ACK goes out) or times out at exactly timer B.
    #[test]
    fn invite_completes_or_times_out_at_exactly_timer_b(
        seed in any::<u64>(),
        loss in 0u32..500,
        duplicate in 0u32..300,
        latency in 0u64..200,
        jitter in 0u64..1500,
        answer_after in prop_oneof![0u64..2000, 31_000u64..33_000],
        count in 1u32..4,
    ) {
        let mut pair = lossy_pair(seed, loss, duplicate, latency, jitter);
        pair.uas.tu.invite_script = vec![(ms(answer_after), 486)];
        let keys: Vec<_> = (0..count).map(|n| pair.invite(n)).collect();
        pair.drive();
        for key in &keys {
            match outcome(&pair, key) {
                Outcome::Final(status) => {
                    prop_assert_eq!(status, 486);
                    prop_assert!(pair.uac.sent.iter().any(|s| s.transaction.as_ref() == Some(key)
                        && s.message.method() == Some(&holdfast_sip::Method::Ack)));
                }
                Outcome::Timeout(timer, at) => {
                    prop_assert_eq!(timer, Timer::B);
                    prop_assert_eq!(at, 32_000);
                }
            }
        }
        prop_assert!(pair.uac.layer.is_empty() && pair.uas.layer.is_empty());
    }
}
