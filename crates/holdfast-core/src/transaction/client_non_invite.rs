//! The non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6).
//!
//! ```text
//!   Trying --1xx--> Proceeding --1xx--> Proceeding
//!   Trying/Proceeding --200-699--> Completed (timer K) --any--> absorbed
//!   Trying: timer E resends at T1, 2T1, … capped at T2; Proceeding: every T2
//!   Trying/Proceeding --F--> timeout, Terminated; Completed --K--> Terminated
//! ```

use std::time::Duration;

use bytes::Bytes;
use holdfast_sip::Message;

use super::{Context, Event, Timer, TransactionState};
use crate::transport::Peer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Trying,
    Proceeding,
    Completed,
}

/// One non-INVITE client transaction.
#[derive(Debug)]
pub(crate) struct ClientNonInviteTransaction {
    state: State,
    peer: Peer,
    /// The request as sent, for retransmission.
    data: Bytes,
    /// Timer E's current interval.
    interval: Duration,
}

impl ClientNonInviteTransaction {
    /// Sends the request and arms timers E (unreliable transports) and F (§17.1.2.2).
    pub(crate) fn start(request: &Message, peer: Peer, cx: &mut Context<'_>) -> Self {
        let data = request.to_bytes();
        cx.send(peer, data.clone());
        let interval = cx.timers.t1;
        if !peer.is_reliable() {
            cx.arm(Timer::E, interval);
        }
        cx.arm(Timer::F, cx.timers.timer_f);
        ClientNonInviteTransaction {
            state: State::Trying,
            peer,
            data,
            interval,
        }
    }

    pub(crate) fn state(&self) -> TransactionState {
        match self.state {
            State::Trying => TransactionState::Trying,
            State::Proceeding => TransactionState::Proceeding,
            State::Completed => TransactionState::Completed,
        }
    }

    pub(crate) fn peer(&self) -> &Peer {
        &self.peer
    }

    pub(crate) fn on_response(&mut self, response: Message, from: Peer, cx: &mut Context<'_>) {
        let Some(status) = response.status() else {
            return;
        };
        if self.state == State::Completed {
            // Retransmissions of the final response are absorbed.
            return;
        }
        if status < 200 {
            self.state = State::Proceeding;
        } else {
            cx.cancel(Timer::E);
            cx.cancel(Timer::F);
            self.state = State::Completed;
            let wait = cx.timers.timer_i_k(self.peer.is_reliable());
            if wait.is_zero() {
                cx.terminate();
            } else {
                cx.arm(Timer::K, wait);
            }
        }
        let key = cx.key();
        cx.tell_user(Event::Response {
            key,
            response,
            peer: from,
        });
    }

    pub(crate) fn on_timer(&mut self, timer: Timer, cx: &mut Context<'_>) {
        match (self.state, timer) {
            (State::Trying, Timer::E) => {
                cx.send(self.peer, self.data.clone());
                self.interval = self.interval.saturating_mul(2).min(cx.timers.t2);
                cx.arm(Timer::E, self.interval);
            }
            (State::Proceeding, Timer::E) => {
                cx.send(self.peer, self.data.clone());
                cx.arm(Timer::E, cx.timers.t2);
            }
            (State::Trying | State::Proceeding, Timer::F) => {
                cx.cancel(Timer::E);
                let key = cx.key();
                cx.tell_user(Event::Timeout {
                    key,
                    timer: Timer::F,
                });
                cx.terminate();
            }
            (State::Completed, Timer::K) => cx.terminate(),
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
