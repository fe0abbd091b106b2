//! The INVITE client transaction (RFC 3261 §17.1.1, Figure 5), with the "Accepted"
//! state of RFC 6026 §7.2 and §8.4.
//!
//! ```text
//!   Calling --1xx--> Proceeding --1xx--> Proceeding
//!   Calling/Proceeding --2xx--> Accepted (timer M)  --2xx--> TU
//!   Calling/Proceeding --300-699--> Completed (send ACK, timer D) --300-699--> resend ACK
//!   Calling: timer A resends the request (unreliable only), timer B times out
//!   Completed --D--> Terminated, Accepted --M--> Terminated
//! ```

use std::time::Duration;

use bytes::Bytes;
use holdfast_sip::{HeaderName, Message};

use super::{Context, Event, Timer, TransactionState};
use crate::transport::Peer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Calling,
    Proceeding,
    Completed,
    Accepted,
}

/// One INVITE client transaction.
#[derive(Debug)]
pub(crate) struct ClientInviteTransaction {
    state: State,
    peer: Peer,
    /// The INVITE, kept to build the ACK for a non-2xx final response.
    request: Message,
    /// The INVITE as sent, for retransmission.
    data: Bytes,
    /// Timer A's current interval.
    interval: Duration,
    /// The ACK for the non-2xx final response, once built.
    ack: Option<Bytes>,
}

impl ClientInviteTransaction {
    /// Sends the INVITE and arms timers A (unreliable transports) and B (§17.1.1.2).
    pub(crate) fn start(request: Message, peer: Peer, cx: &mut Context<'_>) -> Self {
        let data = request.to_bytes();
        cx.send(peer, data.clone());
        let interval = cx.timers.t1;
        if !peer.is_reliable() {
            cx.arm(Timer::A, interval);
        }
        cx.arm(Timer::B, cx.timers.timer_b);
        ClientInviteTransaction {
            state: State::Calling,
            peer,
            request,
            data,
            interval,
            ack: None,
        }
    }

    pub(crate) fn state(&self) -> TransactionState {
        match self.state {
            State::Calling => TransactionState::Calling,
            State::Proceeding => TransactionState::Proceeding,
            State::Completed => TransactionState::Completed,
            State::Accepted => TransactionState::Accepted,
        }
    }

    pub(crate) fn peer(&self) -> &Peer {
        &self.peer
    }

    /// A response matched this transaction (§17.1.1.2, RFC 6026 §8.4).
    pub(crate) fn on_response(&mut self, response: Message, from: Peer, cx: &mut Context<'_>) {
        let Some(status) = response.status() else {
            return;
        };
        let waiting = matches!(self.state, State::Calling | State::Proceeding);
        match status {
            100..=199 if waiting => {
                cx.cancel(Timer::A);
                cx.cancel(Timer::B);
                self.state = State::Proceeding;
                self.deliver(response, from, cx);
            }
            200..=299 if waiting => {
                cx.cancel(Timer::A);
                cx.cancel(Timer::B);
                self.state = State::Accepted;
                cx.arm(Timer::M, cx.timers.t1x64());
                self.deliver(response, from, cx);
            }
            200..=299 if self.state == State::Accepted => {
                // A retransmission, or a 2xx from another fork: the TU acknowledges
                // each one itself (RFC 6026 §7.2).
                self.deliver(response, from, cx);
            }
            300..=699 if waiting => {
                cx.cancel(Timer::A);
                cx.cancel(Timer::B);
                self.ack = build_ack(&self.request, &response);
                self.send_ack(cx);
                self.state = State::Completed;
                self.deliver(response, from, cx);
                let wait = cx.timers.timer_d(self.peer.is_reliable());
                if wait.is_zero() {
                    cx.terminate();
                } else {
                    cx.arm(Timer::D, wait);
                }
            }
            300..=699 if self.state == State::Completed => self.send_ack(cx),
            // Everything else is absorbed: provisional responses after a final one,
            // non-2xx after a 2xx, 2xx after a non-2xx.
            _ => {}
        }
    }

    fn deliver(&self, response: Message, peer: Peer, cx: &mut Context<'_>) {
        let key = cx.key();
        cx.tell_user(Event::Response {
            key,
            response,
            peer,
        });
    }

    fn send_ack(&self, cx: &mut Context<'_>) {
        if let Some(ack) = &self.ack {
            cx.send(self.peer, ack.clone());
        }
    }

    pub(crate) fn on_timer(&mut self, timer: Timer, cx: &mut Context<'_>) {
        match (self.state, timer) {
            (State::Calling, Timer::A) => {
                cx.send(self.peer, self.data.clone());
                self.interval = self.interval.saturating_mul(2);
                cx.arm(Timer::A, self.interval);
            }
            (State::Calling, Timer::B) => {
                cx.cancel(Timer::A);
                let key = cx.key();
                cx.tell_user(Event::Timeout {
                    key,
                    timer: Timer::B,
                });
                cx.terminate();
            }
            (State::Completed, Timer::D) | (State::Accepted, Timer::M) => cx.terminate(),
            _ => {}
        }
    }

    /// §17.1.4: inform the TU and terminate.
    pub(crate) fn on_transport_error(&mut self, cx: &mut Context<'_>) {
        let key = cx.key();
        cx.tell_user(Event::TransportError { key });
        cx.terminate();
    }
}

/// The ACK for a non-2xx final response (§17.1.1.3): the INVITE's Request-URI, its
/// top Via only, its Route, From and Call-ID, the response's To, the INVITE's CSeq
/// number with method ACK. `None` when the INVITE or the response lacks a field it
/// needs (the parser's validator refuses such messages before they get here).
fn build_ack(invite: &Message, response: &Message) -> Option<Bytes> {
    let uri = invite.request_uri()?;
    let via = invite.top_via()?;
    let cseq = invite.cseq()?;
    let to = response.header(HeaderName::To)?;
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"ACK ");
    out.extend_from_slice(uri.as_bytes());
    out.extend_from_slice(b" SIP/2.0\r\nVia: ");
    out.extend_from_slice(via.as_bytes());
    out.extend_from_slice(b"\r\n");
    for header in invite.headers() {
        if matches!(
            header.name(),
            HeaderName::Route | HeaderName::From | HeaderName::CallId
        ) {
            out.extend_from_slice(header.line());
        }
    }
    out.extend_from_slice(to.line());
    out.extend_from_slice(format!("CSeq: {} ACK\r\n", cseq.seq).as_bytes());
    out.extend_from_slice(b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use holdfast_sip::{parse_datagram, Limits, Method};

    use super::*;

    #[test]
    fn ack_for_non_2xx_follows_17_1_1_3() {
        let invite = parse_datagram(
            Bytes::from_static(
                b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bKinv, SIP/2.0/UDP b.example.com;branch=z9hG4bKold\r\n\
Route: <sip:p1.example.com;lr>\r\n\
Max-Forwards: 69\r\n\
From: <sip:alice@example.com>;tag=af\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: ack-test\r\n\
CSeq: 314 INVITE\r\n\
Contact: <sip:alice@a.example.com>\r\n\
Content-Length: 0\r\n\r\n",
            ),
            &Limits::DEFAULT,
        )
        .unwrap();
        let busy = invite.response(486, "Busy Here", Some("bt"));
        let ack = build_ack(&invite, &busy).unwrap();
        let ack = parse_datagram(ack, &Limits::DEFAULT).unwrap();
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(ack.request_uri(), invite.request_uri());
        assert_eq!(ack.vias().count(), 1);
        assert_eq!(ack.top_via(), invite.top_via());
        assert_eq!(ack.routes().count(), 1);
        assert_eq!(ack.from(), invite.from());
        assert_eq!(
            ack.to().and_then(|t| t.tag()).map(|t| &t[..]),
            Some(&b"bt"[..])
        );
        assert_eq!(ack.call_id(), invite.call_id());
        let cseq = ack.cseq().unwrap();
        assert_eq!((cseq.seq, &cseq.method), (314, &Method::Ack));
        assert!(ack.header(HeaderName::Contact).is_none());
    }
}
