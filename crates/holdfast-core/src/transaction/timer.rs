//! Transaction timers (RFC 3261 §17 and Table 4 of Appendix A; RFC 6026 §8.4 for M
//! and §8.7 for L) and the queue that orders them.
//!
//! The queue is a [`BTreeMap`] keyed by deadline and insertion order, so timers fire
//! in deadline order and, at equal deadlines, in the order they were armed. Each
//! transaction remembers the handles of its armed timers, so cancelling one removes it
//! at once: the queue never holds a dead entry, and its size is bounded by the number
//! of live transactions times the timers one can have armed at a time (two).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A transaction timer, by its RFC letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE request retransmission, unreliable transports only (§17.1.1.2).
    A,
    /// INVITE transaction timeout (§17.1.1.2).
    B,
    /// Wait time for response retransmissions after a non-2xx (§17.1.1.2).
    D,
    /// Non-INVITE request retransmission, unreliable transports only (§17.1.2.2).
    E,
    /// Non-INVITE transaction timeout (§17.1.2.2).
    F,
    /// INVITE final response retransmission, unreliable transports only (§17.2.1).
    G,
    /// Wait time for the ACK (§17.2.1).
    H,
    /// Wait time for ACK retransmissions (§17.2.1).
    I,
    /// Wait time for non-INVITE request retransmissions (§17.2.2).
    J,
    /// Wait time for non-INVITE response retransmissions (§17.1.2.2).
    K,
    /// Wait time for INVITE retransmissions after a 2xx (RFC 6026 §7.1).
    L,
    /// Wait time for 2xx retransmissions and forked 2xx (RFC 6026 §7.2).
    M,
    /// The 200 ms after which an INVITE server transaction sends 100 Trying itself
    /// when the TU has not answered (§17.2.1). It has no letter in the RFC.
    Trying,
}

/// Timer values (RFC 3261 Appendix A).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate; the base of most timers. Default 500 ms.
    pub t1: Duration,
    /// Longest retransmission interval for non-INVITE requests and INVITE responses.
    /// Default 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network. Default 5 s.
    pub t4: Duration,
    /// Timer B: INVITE transaction timeout. Default 64*T1.
    pub timer_b: Duration,
    /// Timer F: non-INVITE transaction timeout. Default 64*T1.
    pub timer_f: Duration,
    /// Timer H: wait time for the ACK. Default 64*T1.
    pub timer_h: Duration,
    /// When the INVITE server transaction sends 100 Trying itself if the TU has sent
    /// no response (§17.2.1). Default 200 ms; `None` when the TU always answers at
    /// once; zero sends it on arrival.
    pub trying: Option<Duration>,
}

/// Timer D's value for unreliable transports (§17.1.1.2: "at least 32 seconds").
const TIMER_D: Duration = Duration::from_secs(32);

impl TimerConfig {
    /// Timers derived from T1, T2 and T4 as Table 4 of RFC 3261 gives them.
    pub fn new(t1: Duration, t2: Duration, t4: Duration) -> TimerConfig {
        let t1x64 = t1.saturating_mul(64);
        TimerConfig {
            t1,
            t2,
            t4,
            timer_b: t1x64,
            timer_f: t1x64,
            timer_h: t1x64,
            trying: Some(Duration::from_millis(200)),
        }
    }

    /// 64*T1: timers J, L and M.
    pub fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer D: at least 32 s unreliable, zero reliable.
    pub fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            TIMER_D
        }
    }

    /// Timer I and K: T4 unreliable, zero reliable.
    pub fn timer_i_k(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }

    /// Timer J: 64*T1 unreliable, zero reliable.
    pub fn timer_j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t1x64()
        }
    }
}

impl Default for TimerConfig {
    fn default() -> TimerConfig {
        TimerConfig::new(
            Duration::from_millis(500),
            Duration::from_secs(4),
            Duration::from_secs(5),
        )
    }
}

/// The internal id of a live transaction.
pub(crate) type TxId = u64;

/// Where an armed timer sits in the queue.
pub(crate) type TimerHandle = (Instant, u64);

/// Every armed timer of every transaction, by deadline.
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    entries: BTreeMap<TimerHandle, (TxId, Timer)>,
    next_seq: u64,
}

impl TimerQueue {
    /// Arms `timer` for transaction `id` at `deadline`.
    pub(crate) fn insert(&mut self, deadline: Instant, id: TxId, timer: Timer) -> TimerHandle {
        let handle = (deadline, self.next_seq);
        self.next_seq = self.next_seq.wrapping_add(1);
        self.entries.insert(handle, (id, timer));
        handle
    }

    pub(crate) fn remove(&mut self, handle: TimerHandle) {
        self.entries.remove(&handle);
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries.first_key_value().map(|((at, _), _)| *at)
    }

    /// Removes and returns the earliest timer whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TimerHandle, TxId, Timer)> {
        let entry = self.entries.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let handle = *entry.key();
        let (id, timer) = entry.remove();
        Some((handle, id, timer))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The timers one transaction has armed, with their queue handles.
#[derive(Debug, Default)]
pub(crate) struct ArmedTimers {
    armed: Vec<(Timer, TimerHandle)>,
}

impl ArmedTimers {
    /// Records `timer` as armed, returning the handle of the same timer armed before
    /// (which the caller removes from the queue).
    pub(crate) fn set(&mut self, timer: Timer, handle: TimerHandle) -> Option<TimerHandle> {
        let previous = self.take(timer);
        self.armed.push((timer, handle));
        previous
    }

    /// Forgets `timer`, returning its handle if it was armed.
    pub(crate) fn take(&mut self, timer: Timer) -> Option<TimerHandle> {
        let pos = self.armed.iter().position(|(t, _)| *t == timer)?;
        Some(self.armed.swap_remove(pos).1)
    }

    /// Forgets `timer` if `handle` is the one it is armed with (it just fired).
    pub(crate) fn fired(&mut self, timer: Timer, handle: TimerHandle) -> bool {
        match self.armed.iter().position(|e| *e == (timer, handle)) {
            Some(pos) => {
                self.armed.swap_remove(pos);
                true
            }
            None => false,
        }
    }

    /// Every armed handle, emptying the set.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = TimerHandle> + '_ {
        self.armed.drain(..).map(|(_, h)| h)
    }

    /// True when `timer` is armed.
    #[cfg(test)]
    pub(crate) fn is_armed(&self, timer: Timer) -> bool {
        self.armed.iter().any(|(t, _)| *t == timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_table_4() {
        let c = TimerConfig::default();
        assert_eq!(c.t1, Duration::from_millis(500));
        assert_eq!(c.timer_b, Duration::from_secs(32));
        assert_eq!(c.timer_f, Duration::from_secs(32));
        assert_eq!(c.timer_h, Duration::from_secs(32));
        assert_eq!(c.t1x64(), Duration::from_secs(32));
        assert_eq!(c.timer_d(false), Duration::from_secs(32));
        assert_eq!(c.timer_d(true), Duration::ZERO);
        assert_eq!(c.timer_i_k(false), Duration::from_secs(5));
        assert_eq!(c.timer_i_k(true), Duration::ZERO);
        assert_eq!(c.timer_j(true), Duration::ZERO);
        assert_eq!(c.trying, Some(Duration::from_millis(200)));
    }

    #[test]
    fn queue_orders_by_deadline_then_arming() {
        let t0 = crate::tests::epoch();
        let mut q = TimerQueue::default();
        let late = q.insert(t0 + Duration::from_secs(2), 1, Timer::B);
        q.insert(t0 + Duration::from_secs(1), 2, Timer::E);
        q.insert(t0 + Duration::from_secs(1), 3, Timer::F);
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(q.pop_due(t0).is_none());
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(q.pop_due(t1).map(|e| (e.1, e.2)), Some((2, Timer::E)));
        assert_eq!(q.pop_due(t1).map(|e| (e.1, e.2)), Some((3, Timer::F)));
        assert!(q.pop_due(t1).is_none());
        q.remove(late);
        assert_eq!(q.len(), 0);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn armed_set_replaces_and_fires_by_handle() {
        let t0 = crate::tests::epoch();
        let mut a = ArmedTimers::default();
        assert_eq!(a.set(Timer::A, (t0, 1)), None);
        assert_eq!(a.set(Timer::A, (t0, 2)), Some((t0, 1)));
        assert!(!a.fired(Timer::A, (t0, 1)));
        assert!(a.fired(Timer::A, (t0, 2)));
        assert!(!a.is_armed(Timer::A));
    }
}
