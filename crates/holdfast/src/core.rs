//! The SIP service: what the core answers to requests addressed to it, until the
//! registrar and proxy take over their methods.
//!
//! OPTIONS gets 200 with Allow, Accept and Supported; ACK is absorbed; CANCEL of an
//! unknown transaction gets 481; other known methods get 405 with Allow; extension
//! methods get 501. Invalid requests get the validator's answer (505, 483, 416, 420,
//! 400 …); invalid responses and responses for no transaction are dropped.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use holdfast_sip::{validate, Answer, Header, Message, Method, ValidationPolicy};
use tokio::sync::mpsc;

use crate::shared::{Inbound, Peer, Shared};

pub const ALLOW: &str = "OPTIONS";
pub const SUPPORTED: &str = "path, outbound";

/// A fresh tag for the To header of a response (RFC 3261 §19.3: at least 32 bits of
/// randomness).
pub fn new_tag() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", h.finish())
}

pub async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Inbound>) {
    while let Some(Inbound { msg, peer }) = rx.recv().await {
        // The core's handling runs under the same guard as a connection's: a fault
        // here costs one message, never the service.
        let _ = crate::transport::guarded(&shared, &peer, || handle(&shared, &msg, &peer));
    }
}

fn handle(shared: &Shared, msg: &Message, peer: &Peer) {
    if !msg.is_request() {
        // No transactions yet: every response is a stray (RFC 3261 §18.1.2).
        shared
            .metrics
            .responses_dropped
            .fetch_add(1, Ordering::Relaxed);
        return;
    }
    if let Err(e) = validate(msg, &ValidationPolicy::PROXY) {
        if let Answer::Respond {
            status,
            reason,
            unsupported,
        } = e.answer(true)
        {
            if msg.method() == Some(&Method::Ack) {
                return;
            }
            let mut resp = msg.response(status, &reason, Some(&new_tag()));
            if !unsupported.is_empty() {
                let tags: Vec<&[u8]> = unsupported.iter().map(|t| t.as_ref()).collect();
                add_header(&mut resp, "Unsupported", &tags.join(&b", "[..]));
            }
            shared.send(peer, resp.to_bytes());
        }
        return;
    }
    let Some(method) = msg.method() else { return };
    let resp = match method {
        Method::Ack => return,
        Method::Options => {
            let mut r = msg.response(200, "OK", Some(&new_tag()));
            for (name, value) in [
                ("Allow", ALLOW),
                ("Accept", "application/sdp"),
                ("Supported", SUPPORTED),
            ] {
                add_header(&mut r, name, value.as_bytes());
            }
            r
        }
        Method::Cancel => msg.response(481, "Call/Transaction Does Not Exist", Some(&new_tag())),
        m if m.is_extension() => msg.response(501, "Not Implemented", Some(&new_tag())),
        _ => {
            let mut r = msg.response(405, "Method Not Allowed", Some(&new_tag()));
            add_header(&mut r, "Allow", ALLOW.as_bytes());
            r
        }
    };
    shared.send(peer, resp.to_bytes());
}

/// Adds a header to a response built by [`Message::response`], before its final
/// Content-Length.
fn add_header(resp: &mut Message, name: &str, value: &[u8]) {
    if let Ok(h) = Header::new(name, value) {
        resp.insert_header(resp.headers().len().saturating_sub(1), h);
    }
}
