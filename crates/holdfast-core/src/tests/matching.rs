//! Matching: responses to client transactions (§17.1.3), requests to server
//! transactions (§17.2.3), CANCEL (§9), and the RFC 2543 fallback.

use holdfast_sip::{Method, Violation};

use super::sim::*;
use crate::transaction::{Error, Event, Role, TransactionState};
use crate::TransactionKey;

/// A CANCEL shares its INVITE's branch but is a transaction of its own on both sides;
/// the UAS finds the INVITE it cancels with `cancel_target` and answers it 487, which
/// the INVITE client transaction acknowledges itself.
#[test]
fn cancel_is_its_own_transaction() {
    let mut pair = Pair::udp();
    pair.uas.tu.invite_script = vec![(ms(0), 180), (ms(60_000), 200)];
    pair.uac.tu.cancel_on_ringing = true;
    let invite = pair.invite(1);
    pair.drive();

    let cancel = pair.uac.tu.cancels[0].clone();
    assert_ne!(cancel, invite);
    assert_eq!(cancel.method(), &Method::Cancel);
    assert_eq!(cancel.branch(), invite.branch());
    assert_eq!(pair.uac.statuses(&cancel), [200]);
    assert_eq!(pair.uac.statuses(&invite), [180, 487]);
    assert_eq!(
        pair.uac.requests_sent(&Method::Ack).len(),
        1,
        "ACK for the 487"
    );

    let server = pair.uas.new_requests();
    assert_eq!(server.len(), 2);
    let (s_invite, s_cancel) = (&server[0].0, &server[1].0);
    assert_eq!(s_invite.role(), Role::Server);
    assert_eq!(s_cancel.method(), &Method::Cancel);
    assert_ne!(s_invite, s_cancel);
    assert_eq!(
        TransactionKey::cancelled_invite(&server[1].1).as_ref(),
        Ok(s_invite)
    );
    assert_eq!(
        pair.uas.responses_sent(200).len(),
        1,
        "the CANCEL's 200 only"
    );
    assert_eq!(pair.uas.responses_sent(487).len(), 1);
    assert!(pair.uas.tu.errors.is_empty() && pair.uac.tu.errors.is_empty());
    assert!(pair.uac.layer.is_empty() && pair.uas.layer.is_empty());
}

/// A CANCEL for no live INVITE: `cancel_target` finds nothing (the TU answers 481).
#[test]
fn cancel_without_invite_finds_no_target() {
    let mut pair = Pair::udp();
    let invite = request("INVITE", "z9hG4bKgone", 1, "gone", crate::Transport::Udp);
    pair.inject_to_uas(&cancel_for(&invite));
    pair.drive();
    assert_eq!(pair.ms_list(&pair.uas.responses_sent(481)), [0]);
}

/// §17.1.3: a response matches by top Via branch *and* CSeq method.
#[test]
fn responses_match_by_branch_and_cseq_method() {
    let mut pair = Pair::udp();
    pair.uas.tu.non_invite_script = Vec::new();
    let key = pair.options(1);
    pair.drive_for(ms(10));
    let sent = pair.uac.tu.started[0].1.clone();

    let wrong_method = message(
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP uac.example.com:5060;branch=z9hG4bKopt1\n\
From: <sip:alice@uac.example.com>;tag=alice\nTo: <sip:bob@uas.example.com>;tag=b\n\
Call-ID: opt-1\nCSeq: 1 INFO\nContent-Length: 0\n\n",
    );
    let wrong_branch = message(
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP uac.example.com:5060;branch=z9hG4bKother\n\
From: <sip:alice@uac.example.com>;tag=alice\nTo: <sip:bob@uas.example.com>;tag=b\n\
Call-ID: opt-1\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n",
    );
    pair.inject_to_uac(&wrong_method);
    pair.inject_to_uac(&wrong_branch);
    pair.drive_for(ms(10));
    assert_eq!(pair.uac.stray_responses().len(), 2);
    assert_eq!(pair.uac.layer.state(&key), Some(TransactionState::Trying));

    pair.inject_to_uac(&sent.response(200, "OK", Some("b")));
    pair.drive_for(ms(10));
    assert_eq!(pair.uac.statuses(&key), [200]);
}

/// §17.2.3: the sent-by is part of a server transaction's identity, and a request
/// without a top Via cannot be matched at all.
#[test]
fn server_match_uses_sent_by_and_needs_via() {
    let mut pair = Pair::udp();
    let a = request("OPTIONS", "z9hG4bKsame", 1, "c", crate::Transport::Udp);
    let b = message(
        "OPTIONS sip:bob@uas.example.com SIP/2.0\nVia: SIP/2.0/UDP other.example.com;branch=z9hG4bKsame\n\
Max-Forwards: 70\nFrom: <sip:alice@uac.example.com>;tag=alice\nTo: <sip:bob@uas.example.com>\n\
Call-ID: c\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n",
    );
    let no_via = message(
        "OPTIONS sip:bob@uas.example.com SIP/2.0\nMax-Forwards: 70\n\
From: <sip:alice@uac.example.com>;tag=alice\nTo: <sip:bob@uas.example.com>\n\
Call-ID: c\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n",
    );
    pair.inject_to_uas(&a);
    pair.inject_to_uas(&b);
    pair.inject_to_uas(&a);
    pair.inject_to_uas(&no_via);
    pair.drive_for(ms(1));
    assert_eq!(pair.uas.new_requests().len(), 2);
    assert_eq!(
        pair.uas.errors,
        [Error::Violation(Violation::MissingHeader("Via"))]
    );
}

/// An ACK that matches no transaction (the ACK for a 2xx, end-to-end) reaches the TU
/// as a request without a transaction, and creates none.
#[test]
fn ack_without_transaction_reaches_tu() {
    let mut pair = Pair::udp();
    let ack = request("ACK", "z9hG4bKack", 1, "c", crate::Transport::Udp);
    pair.inject_to_uas(&ack);
    pair.drive();
    assert_eq!(pair.uas.transactionless_requests(), [ack]);
    assert!(pair.uas.layer.is_empty());
    assert!(pair.uas.sent.is_empty());
}

fn rfc2543(method: &str, uri: &str, cseq: &str, to: &str) -> holdfast_sip::Message {
    message(&format!(
        "{method} {uri} SIP/2.0\nVia: SIP/2.0/UDP old.example.com:5060\n\
From: <sip:carol@old.example.com>;tag=c1\nTo: {to}\nCall-ID: legacy@old.example.com\n\
CSeq: {cseq}\nContent-Length: 0\n\n"
    ))
}

/// §17.2.3, last paragraphs: requests whose branch lacks the magic cookie are matched
/// by Request-URI, tags, Call-ID, CSeq and top Via; an ACK by the To tag of the
/// response the transaction sent.
#[test]
fn rfc2543_matching_without_branch() {
    let mut pair = Pair::udp();
    pair.uas.tu.invite_script = vec![(ms(0), 180), (ms(1000), 486)];
    let invite = rfc2543(
        "INVITE",
        "sip:bob@uas.example.com",
        "5 INVITE",
        "<sip:bob@uas.example.com>",
    );
    pair.inject_to_uas(&invite);
    pair.drive_for(ms(100));
    let requests = pair.uas.new_requests();
    assert_eq!(requests.len(), 1);
    let key = requests[0].0.clone();
    assert!(key.is_rfc2543());

    // A retransmission, with an equivalent Request-URI (§19.1.4), is absorbed and
    // draws the 180 again.
    let again = rfc2543(
        "INVITE",
        "sip:bob@UAS.example.com",
        "5 INVITE",
        "<sip:bob@uas.example.com>",
    );
    pair.inject_to_uas(&again);
    pair.drive_for(ms(100));
    assert_eq!(pair.uas.new_requests().len(), 1);
    assert_eq!(pair.ms_list(&pair.uas.responses_sent(180)), [0, 100]);

    // Another Request-URI or CSeq is another transaction.
    let other = rfc2543(
        "INVITE",
        "sip:dave@uas.example.com",
        "5 INVITE",
        "<sip:bob@uas.example.com>",
    );
    pair.inject_to_uas(&other);
    pair.drive_until(pair.at(1500));
    assert_eq!(pair.uas.new_requests().len(), 2);
    assert_eq!(
        pair.uas.layer.state(&key),
        Some(TransactionState::Completed)
    );

    // An ACK with a To tag other than the 486's is not this transaction's.
    let stranger = rfc2543(
        "ACK",
        "sip:bob@uas.example.com",
        "5 ACK",
        "<sip:bob@uas.example.com>;tag=zz",
    );
    pair.inject_to_uas(&stranger);
    pair.drive_for(ms(1));
    assert_eq!(pair.uas.transactionless_requests().len(), 1);
    assert_eq!(
        pair.uas.layer.state(&key),
        Some(TransactionState::Completed)
    );
    // The ACK with the 486's To tag confirms it.
    let ack = rfc2543(
        "ACK",
        "sip:bob@uas.example.com",
        "5 ACK",
        "<sip:bob@uas.example.com>;tag=uas",
    );
    pair.inject_to_uas(&ack);
    pair.drive_for(ms(1));
    assert_eq!(
        pair.uas.layer.state(&key),
        Some(TransactionState::Confirmed)
    );
    assert_eq!(pair.uas.transactionless_requests().len(), 1);

    // Non-INVITE: the To tag is part of the match.
    let bye1 = rfc2543(
        "BYE",
        "sip:bob@uas.example.com",
        "6 BYE",
        "<sip:bob@uas.example.com>;tag=t1",
    );
    let bye2 = rfc2543(
        "BYE",
        "sip:bob@uas.example.com",
        "6 BYE",
        "<sip:bob@uas.example.com>;tag=t2",
    );
    pair.inject_to_uas(&bye1);
    pair.inject_to_uas(&bye2);
    pair.inject_to_uas(&bye1);
    pair.drive_for(ms(1));
    let byes: Vec<_> = pair
        .uas
        .new_requests()
        .into_iter()
        .filter(|(k, _)| k.method() == &Method::Bye)
        .collect();
    assert_eq!(byes.len(), 2);
    assert_eq!(
        pair.uas.responses_sent(200).len(),
        3,
        "the copy of BYE 1 draws its 200 again"
    );
    assert!(pair
        .uas
        .events
        .iter()
        .all(|(_, e)| !matches!(e, Event::Overloaded { .. })));
}
