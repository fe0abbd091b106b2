//! What makes a challenge sent without a transaction the same for a retransmitted
//! request: the time it was first issued, remembered for a few seconds.
//!
//! A REGISTER without credentials is answered 401 with no server transaction
//! ([`crate::registrar::Registrar::stateless_challenge`]). A client that retransmits
//! it (its 401 lost, or late) must get the very same 401, as a transaction would have
//! resent it (RFC 3261 §17.2.2): a client whose scenario matches responses by content,
//! as sipp does, counts a different second 401 as an unexpected message. Everything
//! in the 401 follows from the request, a keyed hash of the request's identity (the
//! nonce's salt and the To tag), and the time the nonce was issued, kept here.
//!
//! Memory is bounded: two generations of at most [`GENERATION`] entries each (16 bytes
//! of identity, 8 of time), the older dropped whole every [`ROTATE`] or when the newer
//! fills. Past that a retransmission gets a fresh challenge, which any client's
//! transaction layer absorbs as it does every retransmitted final response.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use holdfast_sip::Message;
use tokio::time::Instant;

/// Most identities one generation holds.
pub const GENERATION: usize = 131_072;
/// How long a generation is filled before it becomes the older one.
pub const ROTATE: Duration = Duration::from_secs(8);

/// A request's identity for its challenge: two independent keyed hashes of its top
/// Via branch and sent-by, Call-ID and CSeq (what a retransmission repeats, byte for
/// byte). `key` finds the issue time; `salt` salts the nonce and makes the To tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub key: u64,
    pub salt: u64,
}

#[derive(Debug)]
struct Generations {
    current: HashMap<u64, u64>,
    previous: HashMap<u64, u64>,
    since: Instant,
}

/// The challenges issued lately, by request identity.
#[derive(Debug)]
pub struct RecentChallenges {
    keys: (RandomState, RandomState),
    issued: Mutex<Generations>,
}

impl Default for RecentChallenges {
    fn default() -> Self {
        RecentChallenges {
            keys: (RandomState::new(), RandomState::new()),
            issued: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
                since: Instant::now(),
            }),
        }
    }
}

impl RecentChallenges {
    /// The identity of `request`, `None` without a top Via or CSeq.
    pub fn identity(&self, request: &Message) -> Option<Identity> {
        let via = request.top_via()?;
        let cseq = request.cseq()?.seq;
        let call_id = request.call_id().map(|c| &c[..]).unwrap_or_default();
        let hash = |state: &RandomState| {
            let mut h = state.build_hasher();
            via.branch()
                .map(|b| &b[..])
                .unwrap_or_default()
                .hash(&mut h);
            via.host_text.hash(&mut h);
            via.port_or_default().hash(&mut h);
            call_id.hash(&mut h);
            cseq.hash(&mut h);
            h.finish()
        };
        Some(Identity {
            key: hash(&self.keys.0),
            salt: hash(&self.keys.1),
        })
    }

    /// When the challenge of `identity` was issued: `now` (Unix seconds) the first
    /// time, the same time again for a retransmission.
    pub fn issued_at(&self, identity: Identity, now: u64) -> u64 {
        let mut g = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&at) = g
            .current
            .get(&identity.key)
            .or_else(|| g.previous.get(&identity.key))
        {
            return at;
        }
        let clock = Instant::now();
        if g.current.len() >= GENERATION || clock.saturating_duration_since(g.since) >= ROTATE {
            g.previous = std::mem::take(&mut g.current);
            g.since = clock;
        }
        g.current.insert(identity.key, now);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use holdfast_sip::{parse_datagram, Limits};

    fn register(branch: &str, call_id: &str, cseq: u32) -> Message {
        let raw = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5060;branch={branch}\r\n\
From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: {call_id}\r\n\
CSeq: {cseq} REGISTER\r\nContent-Length: 0\r\n\r\n"
        );
        parse_datagram(Bytes::from(raw), &Limits::default()).unwrap()
    }

    #[test]
    fn a_retransmission_keeps_its_issue_time_and_others_differ() {
        let recent = RecentChallenges::default();
        let first = recent.identity(&register("z9hG4bK1", "c", 1)).unwrap();
        assert_eq!(recent.identity(&register("z9hG4bK1", "c", 1)), Some(first));
        for other in [
            register("z9hG4bK2", "c", 1),
            register("z9hG4bK1", "d", 1),
            register("z9hG4bK1", "c", 2),
        ] {
            let id = recent.identity(&other).unwrap();
            assert_ne!(id.key, first.key);
            assert_ne!(id.salt, first.salt);
        }
        assert_eq!(recent.issued_at(first, 1000), 1000);
        assert_eq!(recent.issued_at(first, 1001), 1000);
        let second = recent.identity(&register("z9hG4bK2", "c", 1)).unwrap();
        assert_eq!(recent.issued_at(second, 1002), 1002);
    }

    #[tokio::test(start_paused = true)]
    async fn generations_rotate_and_forget() {
        let recent = RecentChallenges::default();
        let id = recent.identity(&register("z9hG4bK1", "c", 1)).unwrap();
        let other = recent.identity(&register("z9hG4bK2", "c", 1)).unwrap();
        assert_eq!(recent.issued_at(id, 1000), 1000);
        tokio::time::advance(ROTATE).await;
        // The first generation becomes the older one: still remembered.
        assert_eq!(recent.issued_at(other, 1008), 1008);
        assert_eq!(recent.issued_at(id, 1008), 1000);
        tokio::time::advance(ROTATE).await;
        let third = recent.identity(&register("z9hG4bK3", "c", 1)).unwrap();
        assert_eq!(recent.issued_at(third, 1016), 1016);
        // Two rotations later it is forgotten: a fresh time.
        assert_eq!(recent.issued_at(id, 1016), 1016);
    }
}
