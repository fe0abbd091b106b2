//! The transaction layer: the table of live transactions, message dispatch (§17.1.3,
//! §17.2.3), the timer queue and the action queue.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use holdfast_sip::{Message, Method};

use super::client_invite::ClientInviteTransaction;
use super::client_non_invite::ClientNonInviteTransaction;
use super::key::TransactionKey;
use super::server_invite::ServerInviteTransaction;
use super::server_non_invite::ServerNonInviteTransaction;
use super::timer::{ArmedTimers, Timer, TimerQueue, TxId};
use super::{Action, Config, Context, Error, Event, LocalError, TransactionState};
use crate::response::EncodedResponse;
use crate::transport::Peer;

/// Every transaction of one SIP element, driven by the I/O shell (see the
/// [module documentation](super)).
#[derive(Debug)]
pub struct TransactionLayer {
    config: Config,
    slots: HashMap<TxId, Slot>,
    index: HashMap<TransactionKey, TxId>,
    queue: TimerQueue,
    actions: VecDeque<Action>,
    next_id: TxId,
}

#[derive(Debug)]
struct Slot {
    key: TransactionKey,
    armed: ArmedTimers,
    machine: Machine,
}

/// The INVITE machines keep a request message (hundreds of bytes) and are boxed, so
/// that a slot costs what a non-INVITE transaction needs: a registrar keeps every
/// REGISTER's for 32 s over UDP (timer J), hundreds of thousands at once under load.
#[derive(Debug)]
#[allow(clippy::enum_variant_names)] // the four state machines of RFC 3261 §17, by their RFC names
enum Machine {
    ClientInvite(Box<ClientInviteTransaction>),
    ClientNonInvite(ClientNonInviteTransaction),
    ServerInvite(Box<ServerInviteTransaction>),
    ServerNonInvite(ServerNonInviteTransaction),
}

impl Machine {
    fn state(&self) -> TransactionState {
        match self {
            Machine::ClientInvite(t) => t.state(),
            Machine::ClientNonInvite(t) => t.state(),
            Machine::ServerInvite(t) => t.state(),
            Machine::ServerNonInvite(t) => t.state(),
        }
    }

    fn peer(&self) -> &Peer {
        match self {
            Machine::ClientInvite(t) => t.peer(),
            Machine::ClientNonInvite(t) => t.peer(),
            Machine::ServerInvite(t) => t.peer(),
            Machine::ServerNonInvite(t) => t.peer(),
        }
    }

    fn on_timer(&mut self, timer: Timer, cx: &mut Context<'_>) {
        match self {
            Machine::ClientInvite(t) => t.on_timer(timer, cx),
            Machine::ClientNonInvite(t) => t.on_timer(timer, cx),
            Machine::ServerInvite(t) => t.on_timer(timer, cx),
            Machine::ServerNonInvite(t) => t.on_timer(timer, cx),
        }
    }

    fn on_transport_error(&mut self, cx: &mut Context<'_>) {
        match self {
            Machine::ClientInvite(t) => t.on_transport_error(cx),
            Machine::ClientNonInvite(t) => t.on_transport_error(cx),
            Machine::ServerInvite(t) => t.on_transport_error(cx),
            Machine::ServerNonInvite(t) => t.on_transport_error(cx),
        }
    }
}

impl TransactionLayer {
    /// An empty layer.
    pub fn new(config: Config) -> TransactionLayer {
        TransactionLayer {
            config,
            slots: HashMap::new(),
            index: HashMap::new(),
            queue: TimerQueue::default(),
            actions: VecDeque::new(),
            next_id: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many transactions are alive.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The state of a live transaction; `None` once it has terminated.
    pub fn state(&self, key: &TransactionKey) -> Option<TransactionState> {
        let id = self.index.get(key)?;
        Some(self.slots.get(id)?.machine.state())
    }

    /// The next action for the shell, in the order they arose.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called; `None` when
    /// no timer is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.next_deadline()
    }

    /// Fires every timer due at `now`, in deadline order.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((handle, id, timer)) = self.queue.pop_due(now) {
            self.with_slot(id, now, |machine, cx| {
                if cx.fired(timer, handle) {
                    machine.on_timer(timer, cx);
                }
            });
        }
    }

    /// A message from the network, parsed (and validated) by the shell.
    ///
    /// A request goes to its server transaction (§17.2.3): a retransmission is
    /// absorbed there, an ACK completes an INVITE transaction, and anything new
    /// creates a server transaction and reaches the TU as [`Event::Request`]. An ACK
    /// that no transaction takes is handed to the TU with no key, and a request past
    /// [`Config::max_transactions`] comes back as [`Event::Overloaded`].
    ///
    /// A response goes to its client transaction (§17.1.3), or back as
    /// [`Event::StrayResponse`].
    ///
    /// Fails only for a request that lacks a header matching needs.
    pub fn handle_message(
        &mut self,
        message: Message,
        peer: Peer,
        now: Instant,
    ) -> Result<(), Error> {
        if message.is_request() {
            self.handle_request(message, peer, now)
        } else {
            self.handle_response(message, peer, now);
            Ok(())
        }
    }

    fn handle_request(&mut self, request: Message, peer: Peer, now: Instant) -> Result<(), Error> {
        let key = TransactionKey::server(&request)?;
        let request = match self.index.get(&key).copied() {
            Some(id) => {
                let unmatched = self.with_slot(id, now, |machine, cx| match machine {
                    Machine::ServerInvite(t) => t.on_request(request, peer, cx),
                    Machine::ServerNonInvite(t) => {
                        t.on_request(peer, cx);
                        None
                    }
                    // A server key never indexes a client transaction.
                    Machine::ClientInvite(_) | Machine::ClientNonInvite(_) => None,
                });
                match unmatched.flatten() {
                    Some(request) => request,
                    None => return Ok(()),
                }
            }
            None => request,
        };
        if request.method() == Some(&Method::Ack) {
            self.actions.push_back(Action::ToUser(Event::Request {
                key: None,
                request,
                peer,
            }));
            return Ok(());
        }
        if self.index.contains_key(&key) {
            // Only an ACK can come back unmatched from a live transaction.
            return Ok(());
        }
        if self.slots.len() >= self.config.max_transactions {
            self.actions
                .push_back(Action::ToUser(Event::Overloaded { request, peer }));
            return Ok(());
        }
        let invite = request.method() == Some(&Method::Invite);
        self.create(key, now, |cx| {
            if invite {
                Machine::ServerInvite(Box::new(ServerInviteTransaction::start(request, peer, cx)))
            } else {
                Machine::ServerNonInvite(ServerNonInviteTransaction::start(request, peer, cx))
            }
        });
        Ok(())
    }

    fn handle_response(&mut self, response: Message, peer: Peer, now: Instant) {
        let id = TransactionKey::client_for_response(&response)
            .and_then(|key| self.index.get(&key).copied());
        let Some(id) = id else {
            self.actions
                .push_back(Action::ToUser(Event::StrayResponse { response, peer }));
            return;
        };
        self.with_slot(id, now, |machine, cx| match machine {
            Machine::ClientInvite(t) => t.on_response(response, peer, cx),
            Machine::ClientNonInvite(t) => t.on_response(response, peer, cx),
            // A client key never indexes a server transaction.
            Machine::ServerInvite(_) | Machine::ServerNonInvite(_) => {}
        });
    }

    /// Starts a client transaction that sends `request` to `peer` (§17.1). The request
    /// must carry the element's own top Via with a fresh `z9hG4bK` branch, and a CSeq
    /// naming its method. A CANCEL carries the branch of the request it cancels and
    /// is a transaction of its own (§9.1). ACK has no client transaction: see
    /// [`send_stateless`](Self::send_stateless).
    pub fn start_client(
        &mut self,
        request: Message,
        peer: Peer,
        now: Instant,
    ) -> Result<TransactionKey, Error> {
        let method = request.method().ok_or(LocalError::NotARequest)?.clone();
        if method == Method::Ack {
            return Err(LocalError::AckHasNoTransaction.into());
        }
        if request.cseq().map(|c| &c.method) != Some(&method) {
            return Err(LocalError::CSeqMethod.into());
        }
        let key = TransactionKey::client(&request).ok_or(LocalError::NotRfc3261Branch)?;
        if self.index.contains_key(&key) {
            return Err(LocalError::DuplicateTransaction.into());
        }
        if self.slots.len() >= self.config.max_transactions {
            return Err(LocalError::Overloaded.into());
        }
        self.create(key.clone(), now, |cx| {
            if method == Method::Invite {
                Machine::ClientInvite(Box::new(ClientInviteTransaction::start(request, peer, cx)))
            } else {
                Machine::ClientNonInvite(ClientNonInviteTransaction::start(&request, peer, cx))
            }
        });
        Ok(key)
    }

    /// Sends the TU's response on a server transaction (§17.2.1, §17.2.2). On an
    /// INVITE transaction in the Accepted state, a 2xx is sent again each time the TU
    /// passes one (the TU retransmits its 2xx, §13.3.1.4, RFC 6026 §7.1).
    pub fn respond(
        &mut self,
        key: &TransactionKey,
        response: Message,
        now: Instant,
    ) -> Result<(), Error> {
        let status = response.status().ok_or(LocalError::NotAResponse)?;
        if !(100..=699).contains(&status) {
            return Err(LocalError::InvalidStatus(status).into());
        }
        let id = *self.index.get(key).ok_or(LocalError::UnknownTransaction)?;
        let result = self.with_slot(id, now, |machine, cx| match machine {
            Machine::ServerInvite(t) => t.on_tu_response(&response, status, cx),
            Machine::ServerNonInvite(t) => t.on_tu_response(&response, status, cx),
            Machine::ClientInvite(_) | Machine::ClientNonInvite(_) => {
                Err(LocalError::NotAServerTransaction)
            }
        });
        Ok(result.unwrap_or(Err(LocalError::UnknownTransaction))?)
    }

    /// [`respond`](Self::respond) with a response already encoded (see
    /// [`crate::response`]): for a non-INVITE server transaction, which sends the bytes
    /// and keeps them for retransmissions without reading them. An INVITE server
    /// transaction reads its responses' To tag, so it takes them only as messages.
    pub fn respond_encoded(
        &mut self,
        key: &TransactionKey,
        response: &EncodedResponse,
        now: Instant,
    ) -> Result<(), Error> {
        let status = response.status;
        if !(100..=699).contains(&status) {
            return Err(LocalError::InvalidStatus(status).into());
        }
        let id = *self.index.get(key).ok_or(LocalError::UnknownTransaction)?;
        let result = self.with_slot(id, now, |machine, cx| match machine {
            Machine::ServerNonInvite(t) => t.on_tu_encoded(response.data.clone(), status, cx),
            Machine::ServerInvite(_) => Err(LocalError::InviteNeedsMessage),
            Machine::ClientInvite(_) | Machine::ClientNonInvite(_) => {
                Err(LocalError::NotAServerTransaction)
            }
        });
        Ok(result.unwrap_or(Err(LocalError::UnknownTransaction))?)
    }

    /// Queues a message that belongs to no transaction: the ACK for a 2xx (§13.2.2.4),
    /// a 2xx retransmitted after its transaction ended, a stateless response or a
    /// statelessly forwarded message.
    pub fn send_stateless(&mut self, to: Peer, data: Bytes) {
        self.actions.push_back(Action::Send {
            to,
            data,
            transaction: None,
        });
    }

    /// A send of this transaction failed (§17.1.4, §17.2.4; RFC 6026 §8.8). The TU
    /// gets [`Event::TransportError`]; a client transaction terminates. Unknown keys
    /// (a transaction that already ended) are ignored.
    pub fn handle_transport_error(&mut self, key: &TransactionKey, now: Instant) {
        if let Some(id) = self.index.get(key).copied() {
            self.with_slot(id, now, Machine::on_transport_error);
        }
    }

    /// A connection (or, with no connection id, a transport address) failed: every
    /// transaction sending to it gets a transport error, as by
    /// [`handle_transport_error`](Self::handle_transport_error). This walks every live
    /// transaction; connections fail far more rarely than messages arrive.
    pub fn handle_peer_error(&mut self, peer: &Peer, now: Instant) {
        let affected: Vec<TxId> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.machine.peer().is_affected_by(peer))
            .map(|(id, _)| *id)
            .collect();
        for id in affected {
            self.with_slot(id, now, Machine::on_transport_error);
        }
    }

    /// Destroys a transaction now, whatever its state, and tells the TU
    /// ([`Event::Terminated`]). This is for the decisions the RFC leaves to the TU: an
    /// INVITE client transaction in Proceeding has no timer of its own, so a UAC ends
    /// it when no final response follows its CANCEL within 64*T1 (§9.1), and a proxy
    /// when timer C fires before any provisional response (§16.8). False when `key`
    /// is not alive.
    pub fn terminate(&mut self, key: &TransactionKey) -> bool {
        match self.index.get(key).copied() {
            Some(id) => {
                self.destroy(id);
                true
            }
            None => false,
        }
    }

    /// The INVITE server transaction a CANCEL applies to (§9.2), if it is alive. The
    /// CANCEL itself has its own server transaction, which the TU answers (200, or
    /// 481 when this is `None`); the TU then answers the INVITE with 487 if it has
    /// not sent a final response yet.
    pub fn cancel_target(&self, cancel: &Message) -> Option<TransactionKey> {
        let key = TransactionKey::cancelled_invite(cancel).ok()?;
        let id = self.index.get(&key)?;
        let slot = self.slots.get(id)?;
        matches!(slot.machine, Machine::ServerInvite(_)).then(|| slot.key.clone())
    }

    /// Creates a transaction: `build` runs the state machine's entry actions.
    fn create(
        &mut self,
        key: TransactionKey,
        now: Instant,
        build: impl FnOnce(&mut Context<'_>) -> Machine,
    ) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut armed = ArmedTimers::default();
        let mut cx = Context {
            now,
            timers: &self.config.timers,
            key: &key,
            id,
            actions: &mut self.actions,
            queue: &mut self.queue,
            armed: &mut armed,
            terminated: false,
        };
        let machine = build(&mut cx);
        let terminated = cx.terminated;
        self.index.insert(key.clone(), id);
        self.slots.insert(
            id,
            Slot {
                key,
                armed,
                machine,
            },
        );
        if terminated {
            self.destroy(id);
        }
    }

    /// Runs `f` on a live transaction with a context over the layer's queues, then
    /// destroys the transaction if it terminated. `None` when `id` is not alive.
    fn with_slot<R>(
        &mut self,
        id: TxId,
        now: Instant,
        f: impl FnOnce(&mut Machine, &mut Context<'_>) -> R,
    ) -> Option<R> {
        let slot = self.slots.get_mut(&id)?;
        let mut cx = Context {
            now,
            timers: &self.config.timers,
            key: &slot.key,
            id,
            actions: &mut self.actions,
            queue: &mut self.queue,
            armed: &mut slot.armed,
            terminated: false,
        };
        let result = f(&mut slot.machine, &mut cx);
        if cx.terminated {
            self.destroy(id);
        }
        Some(result)
    }

    /// The Terminated state: the transaction is destroyed at once (§17.1.1.2,
    /// §17.2.1), its timers disarmed, and the TU told.
    fn destroy(&mut self, id: TxId) {
        let Some(mut slot) = self.slots.remove(&id) else {
            return;
        };
        for handle in slot.armed.drain() {
            self.queue.remove(handle);
        }
        self.index.remove(&slot.key);
        self.actions
            .push_back(Action::ToUser(Event::Terminated { key: slot.key }));
    }

    #[cfg(test)]
    pub(crate) fn armed_timers(&self) -> usize {
        self.queue.len()
    }
}
