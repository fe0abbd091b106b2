//! The INVITE server transaction (RFC 3261 §17.2.1, Figure 7), with the "Accepted"
//! state of RFC 6026 §7.1 and §8.5–§8.8.
//!
//! ```text
//!   Proceeding: TU 1xx sent; INVITE retransmission resends the last 1xx;
//!               after 200 ms without a TU response, 100 Trying is sent
//!   Proceeding --TU 2xx--> Accepted (timer L): INVITE absorbed, ACK to TU, TU 2xx sent
//!   Proceeding --TU 300-699--> Completed (timers G unreliable, H)
//!   Completed: INVITE or G resends the final response; ACK --> Confirmed (timer I);
//!              H --> timeout, Terminated
//!   Confirmed: ACK absorbed; I --> Terminated.  Accepted: L --> Terminated
//! ```

use std::time::Duration;

use bytes::Bytes;
use holdfast_sip::{Message, Method};

use super::{send_response, Context, Event, LocalError, Timer, TransactionState};
use crate::transport::Peer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
}

/// One INVITE server transaction.
#[derive(Debug)]
pub(crate) struct ServerInviteTransaction {
    state: State,
    /// Where responses go: the source of the latest copy of the INVITE.
    peer: Peer,
    /// The INVITE, kept only while the transaction may still send 100 Trying itself.
    request: Option<Message>,
    /// The most recent provisional response sent, for INVITE retransmissions.
    provisional: Option<Bytes>,
    /// The non-2xx final response, for retransmission.
    final_response: Option<Bytes>,
    /// The To tag of the final response: an RFC 2543 ACK must carry it (§17.2.3).
    to_tag: Option<Bytes>,
    /// Timer G's current interval.
    interval: Duration,
}

impl ServerInviteTransaction {
    /// Hands the INVITE to the TU and arms the 100 Trying timer (§17.2.1).
    pub(crate) fn start(request: Message, peer: Peer, cx: &mut Context<'_>) -> Self {
        let mut tx = ServerInviteTransaction {
            state: State::Proceeding,
            peer,
            request: None,
            provisional: None,
            final_response: None,
            to_tag: None,
            interval: cx.timers.t1,
        };
        match cx.timers.trying {
            Some(after) if after.is_zero() => tx.send_trying(&request, cx),
            Some(after) => {
                tx.request = Some(request.clone());
                cx.arm(Timer::Trying, after);
            }
            None => {}
        }
        let key = cx.key();
        cx.tell_user(Event::Request {
            key: Some(key),
            request,
            peer,
        });
        tx
    }

    pub(crate) fn state(&self) -> TransactionState {
        match self.state {
            State::Proceeding => TransactionState::Proceeding,
            State::Completed => TransactionState::Completed,
            State::Confirmed => TransactionState::Confirmed,
            State::Accepted => TransactionState::Accepted,
        }
    }

    pub(crate) fn peer(&self) -> &Peer {
        &self.peer
    }

    /// §17.2.1: 100 Trying built by §8.2.6 with no To tag added.
    fn send_trying(&mut self, request: &Message, cx: &mut Context<'_>) {
        let trying = request.response(100, "Trying", None);
        self.provisional = Some(send_response(cx, self.peer, &trying));
    }

    /// A request matched this transaction: an INVITE retransmission or an ACK.
    /// Returns the request when it turns out not to belong here (an RFC 2543 ACK whose
    /// To tag is not the one this transaction sent), for the layer to treat as
    /// unmatched.
    pub(crate) fn on_request(
        &mut self,
        request: Message,
        from: Peer,
        cx: &mut Context<'_>,
    ) -> Option<Message> {
        if request.method() != Some(&Method::Ack) {
            self.peer = from;
            let resend = match self.state {
                State::Proceeding => self.provisional.clone(),
                State::Completed => self.final_response.clone(),
                // RFC 6026 §7.1: absorbed entirely in Accepted.
                State::Confirmed | State::Accepted => None,
            };
            if let Some(data) = resend {
                cx.send(self.peer, data);
            }
            return None;
        }
        if cx.key_is_rfc2543() {
            let tag = request.to().and_then(|t| t.tag());
            let same = match (tag, &self.to_tag) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            };
            if !same {
                return Some(request);
            }
        }
        match self.state {
            State::Completed => {
                cx.cancel(Timer::G);
                cx.cancel(Timer::H);
                self.state = State::Confirmed;
                let wait = cx.timers.timer_i_k(self.peer.is_reliable());
                if wait.is_zero() {
                    cx.terminate();
                } else {
                    cx.arm(Timer::I, wait);
                }
            }
            State::Accepted => {
                // The ACK for a 2xx is end-to-end: the TU routes it (RFC 6026 §7.1).
                cx.tell_user(Event::Request {
                    key: None,
                    request,
                    peer: from,
                });
            }
            // An ACK before any final response is bogus; a repeated one is absorbed.
            State::Proceeding | State::Confirmed => {}
        }
        None
    }

    /// A response from the TU (§17.2.1, RFC 6026 §8.5).
    pub(crate) fn on_tu_response(
        &mut self,
        response: &Message,
        status: u16,
        cx: &mut Context<'_>,
    ) -> Result<(), LocalError> {
        match (self.state, status) {
            (State::Proceeding, 100..=199) => {
                self.answered(cx);
                self.provisional = Some(send_response(cx, self.peer, response));
            }
            (State::Proceeding, 200..=299) => {
                self.answered(cx);
                send_response(cx, self.peer, response);
                self.to_tag = response.to().and_then(|t| t.tag()).cloned();
                self.state = State::Accepted;
                cx.arm(Timer::L, cx.timers.t1x64());
            }
            // 2xx retransmissions by the TU, or 2xx from other forks at a proxy.
            (State::Accepted, 200..=299) => {
                send_response(cx, self.peer, response);
            }
            (State::Proceeding, 300..=699) => {
                self.answered(cx);
                self.final_response = Some(send_response(cx, self.peer, response));
                self.to_tag = response.to().and_then(|t| t.tag()).cloned();
                self.state = State::Completed;
                if !self.peer.is_reliable() {
                    cx.arm(Timer::G, self.interval);
                }
                cx.arm(Timer::H, cx.timers.timer_h);
            }
            (_, status) => {
                return Err(LocalError::ResponseNotAllowed {
                    state: self.state(),
                    status,
                })
            }
        }
        Ok(())
    }

    /// The TU has answered: no 100 Trying from the transaction any more.
    fn answered(&mut self, cx: &mut Context<'_>) {
        cx.cancel(Timer::Trying);
        self.request = None;
    }

    pub(crate) fn on_timer(&mut self, timer: Timer, cx: &mut Context<'_>) {
        match (self.state, timer) {
            (State::Proceeding, Timer::Trying) => {
                if let Some(request) = self.request.take() {
                    if self.provisional.is_none() {
                        self.send_trying(&request, cx);
                    }
                }
            }
            (State::Completed, Timer::G) => {
                if let Some(data) = self.final_response.clone() {
                    cx.send(self.peer, data);
                }
                self.interval = self.interval.saturating_mul(2).min(cx.timers.t2);
                cx.arm(Timer::G, self.interval);
            }
            (State::Completed, Timer::H) => {
                cx.cancel(Timer::G);
                let key = cx.key();
                cx.tell_user(Event::Timeout {
                    key,
                    timer: Timer::H,
                });
                cx.terminate();
            }
            (State::Confirmed, Timer::I) | (State::Accepted, Timer::L) => cx.terminate(),
            _ => {}
        }
    }

    /// §17.2.4 as RFC 6026 §7.1 and §8.8 rewrite it: inform the TU but keep the
    /// state, so retransmissions of the INVITE are still absorbed; the TU's final
    /// response and timers H, I and L end the transaction.
    pub(crate) fn on_transport_error(&mut self, cx: &mut Context<'_>) {
        let key = cx.key();
        cx.tell_user(Event::TransportError { key });
    }
}
