//! The non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8).
//!
//! ```text
//!   Trying: request retransmissions absorbed
//!   Trying/Proceeding --TU 1xx--> Proceeding: retransmission resends the last 1xx
//!   Trying/Proceeding --TU 200-699--> Completed (timer J): retransmission resends it,
//!                                     further TU responses discarded
//!   Completed --J--> Terminated
//! ```

use bytes::Bytes;
use holdfast_sip::Message;

use super::{Context, Event, LocalError, Timer, TransactionState};
use crate::transport::Peer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Trying,
    Proceeding,
    Completed,
}

/// One non-INVITE server transaction.
#[derive(Debug)]
pub(crate) struct ServerNonInviteTransaction {
    state: State,
    /// Where responses go: the source of the latest copy of the request.
    peer: Peer,
    /// The last response sent, for request retransmissions.
    last_response: Option<Bytes>,
}

impl ServerNonInviteTransaction {
    /// Hands the request to the TU.
    pub(crate) fn start(request: Message, peer: Peer, cx: &mut Context<'_>) -> Self {
        let key = cx.key();
        cx.tell_user(Event::Request {
            key: Some(key),
            request,
            peer,
        });
        ServerNonInviteTransaction {
            state: State::Trying,
            peer,
            last_response: None,
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

    /// A retransmission of the request.
    pub(crate) fn on_request(&mut self, from: Peer, cx: &mut Context<'_>) {
        self.peer = from;
        if let Some(data) = &self.last_response {
            // Nothing in Trying; the last 1xx in Proceeding; the final in Completed.
            cx.send(self.peer, data.clone());
        }
    }

    pub(crate) fn on_tu_response(
        &mut self,
        response: &Message,
        status: u16,
        cx: &mut Context<'_>,
    ) -> Result<(), LocalError> {
        self.on_tu_encoded(response.to_bytes(), status, cx)
    }

    /// A response from the TU, encoded.
    pub(crate) fn on_tu_encoded(
        &mut self,
        data: Bytes,
        status: u16,
        cx: &mut Context<'_>,
    ) -> Result<(), LocalError> {
        if self.state == State::Completed {
            return Err(LocalError::ResponseNotAllowed {
                state: self.state(),
                status,
            });
        }
        cx.send(self.peer, data.clone());
        self.last_response = Some(data);
        if status < 200 {
            self.state = State::Proceeding;
        } else {
            self.state = State::Completed;
            let wait = cx.timers.timer_j(self.peer.is_reliable());
            if wait.is_zero() {
                cx.terminate();
            } else {
                cx.arm(Timer::J, wait);
            }
        }
        Ok(())
    }

    pub(crate) fn on_timer(&mut self, timer: Timer, cx: &mut Context<'_>) {
        if self.state == State::Completed && timer == Timer::J {
            cx.terminate();
        }
    }

    /// §17.2.4 as RFC 6026 §8.8 rewrites it: inform the TU and keep the state; the
    /// TU's final response and timer J end the transaction.
    pub(crate) fn on_transport_error(&mut self, cx: &mut Context<'_>) {
        let key = cx.key();
        cx.tell_user(Event::TransportError { key });
    }
}
