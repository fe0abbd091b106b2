//! State every task of a running core shares.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use holdfast_sip::{Limits, Message};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::config::{Config, ListenTransport};
use crate::guard::Guard;
use crate::log::LogLimiter;
use crate::metrics::Metrics;
use crate::registrar::Registrar;

/// Where a message came from, and how to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: ListenTransport,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The connection, for stream transports.
    pub conn: Option<u64>,
}

/// A message on its way to a core shard.
#[derive(Debug)]
// Moved once through a channel whose slots are sized for the larger variant anyway.
#[allow(clippy::large_enum_variant)]
pub enum Inbound {
    /// Parsed and screened where it was received (a stream connection's task).
    Message { msg: Message, peer: Peer },
    /// A datagram as received: the shard parses and screens it, so that the socket's
    /// receiving task only receives and the parsing runs on every shard in parallel.
    Datagram { data: Bytes, peer: Peer },
}

/// The live stream connections, by id and by remote address (the newest one wins).
#[derive(Debug, Default)]
struct Connections {
    by_id: HashMap<u64, ConnHandle>,
    by_remote: HashMap<(ListenTransport, SocketAddr), u64>,
}

/// A live stream connection's outbound side.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    pub tx: mpsc::Sender<Bytes>,
    /// Bytes in `tx` not yet taken by the writer: bounded by `[limits]
    /// write_queue_bytes`.
    pub queued: Arc<AtomicUsize>,
    /// Signalled to close the connection (write queue overflow, shutdown).
    pub close: Arc<tokio::sync::Notify>,
    /// The transport and remote address, so that a request for a device can find the
    /// connection it keeps open when the one it registered over has been replaced.
    pub transport: ListenTransport,
    pub remote: SocketAddr,
}

#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub wire: Limits,
    pub metrics: Arc<Metrics>,
    pub guard: Guard,
    pub logs: LogLimiter,
    /// The core shards' queues: every message of a Call-ID goes to the same shard
    /// ([`Shared::core_for`]).
    pub core_tx: Vec<mpsc::Sender<Inbound>>,
    /// The registrar, once it has loaded the bindings: the receivers answer the
    /// challenges it issues without a transaction ([`crate::core::screen`]).
    pub registrar: OnceLock<Arc<Registrar>>,
    pub udp: RwLock<HashMap<SocketAddr, Arc<UdpSocket>>>,
    /// Every listening socket's address: a Route naming one of them is holdfast's.
    pub locals: RwLock<std::collections::HashSet<SocketAddr>>,
    /// Messages waiting for a TCP connection holdfast is opening to a device.
    connecting: Mutex<HashMap<SocketAddr, Vec<Bytes>>>,
    conns: Mutex<Connections>,
    next_conn: AtomicU64,
    pub open_connections: AtomicUsize,
    pub shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub fn new(
        config: Config,
        core_tx: Vec<mpsc::Sender<Inbound>>,
        shutdown: watch::Receiver<bool>,
    ) -> Shared {
        assert!(!core_tx.is_empty(), "a core has one shard at least");
        let metrics = Arc::new(Metrics::default());
        Shared {
            wire: config.limits.wire(),
            guard: Guard::new(&config.bans, &config.limits),
            logs: LogLimiter::new(Duration::from_secs(10), metrics.clone()),
            metrics,
            config,
            core_tx,
            registrar: OnceLock::new(),
            udp: RwLock::new(HashMap::new()),
            locals: RwLock::new(std::collections::HashSet::new()),
            connecting: Mutex::new(HashMap::new()),
            conns: Mutex::new(Connections::default()),
            next_conn: AtomicU64::new(1),
            open_connections: AtomicUsize::new(0),
            shutdown,
        }
    }

    /// The queue of the core shard that handles `msg`: the one of its Call-ID.
    pub fn core_for(&self, msg: &Message) -> &mpsc::Sender<Inbound> {
        self.shard(shard_of(msg.call_id(), self.core_tx.len()))
    }

    /// The queue of shard `i` (of [`shard_of`]; shard 0 for anything else).
    pub fn shard(&self, i: usize) -> &mpsc::Sender<Inbound> {
        // There is one shard at least (see `new`).
        self.core_tx.get(i).unwrap_or(&self.core_tx[0])
    }

    /// A UDP socket's local address of the wanted family, for requests the core
    /// originates without a flow to follow.
    pub fn any_udp_local(&self, v6: bool) -> Option<SocketAddr> {
        let udp = self.udp.read().unwrap_or_else(|e| e.into_inner());
        udp.keys()
            .find(|a| a.is_ipv6() == v6)
            .or_else(|| udp.keys().next())
            .copied()
    }

    /// Queues `data` for a connection to `remote` that is being opened. True when no
    /// attempt was under way: the caller must open the connection.
    pub fn queue_for_connect(&self, remote: SocketAddr, data: Bytes) -> bool {
        /// Messages held for one device while its connection opens.
        const MAX_QUEUED: usize = 256;
        let mut connecting = self.connecting.lock().unwrap_or_else(|e| e.into_inner());
        match connecting.get_mut(&remote) {
            Some(queue) => {
                if queue.len() < MAX_QUEUED {
                    queue.push(data);
                }
                false
            }
            None => {
                connecting.insert(remote, vec![data]);
                true
            }
        }
    }

    /// Ends an attempt to connect to `remote`, returning what waited for it.
    pub fn take_connect_queue(&self, remote: SocketAddr) -> Vec<Bytes> {
        self.connecting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&remote)
            .unwrap_or_default()
    }

    /// Records a listening socket's address.
    pub fn add_local(&self, addr: SocketAddr) {
        self.locals
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr);
    }

    /// Whether `addr` is one of holdfast's listening sockets (an unspecified listen
    /// address matches any address on its port).
    pub fn is_local(&self, addr: SocketAddr) -> bool {
        let locals = self.locals.read().unwrap_or_else(|e| e.into_inner());
        locals.contains(&addr)
            || locals
                .iter()
                .any(|l| l.ip().is_unspecified() && l.port() == addr.port())
    }

    pub fn register_conn(&self, handle: ConnHandle) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns
            .by_remote
            .insert((handle.transport, handle.remote), id);
        conns.by_id.insert(id, handle);
        id
    }

    pub fn unregister_conn(&self, id: u64) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = conns.by_id.remove(&id) {
            let key = (h.transport, h.remote);
            if conns.by_remote.get(&key) == Some(&id) {
                conns.by_remote.remove(&key);
            }
        }
    }

    /// Connection `id`, or when it is gone (or not given) the live connection from the
    /// same remote address over the same transport: a device that reconnected keeps
    /// being reachable (RFC 5626 §5.3).
    fn conn(
        &self,
        id: Option<u64>,
        transport: ListenTransport,
        remote: SocketAddr,
    ) -> Option<ConnHandle> {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        id.and_then(|id| conns.by_id.get(&id))
            .or_else(|| {
                conns
                    .by_remote
                    .get(&(transport, remote))
                    .and_then(|id| conns.by_id.get(id))
            })
            .cloned()
    }

    pub fn close_all_connections(&self) {
        for h in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .values()
        {
            h.close.notify_one();
        }
    }

    /// Sends bytes to a peer over the flow it used: the same UDP socket, or the same
    /// connection (RFC 3261 §18.2.2). Never blocks: a full write queue closes the
    /// connection, a full socket buffer drops the datagram.
    pub fn send(&self, peer: &Peer, bytes: Bytes) -> bool {
        let sent = match (peer.transport, peer.conn) {
            (ListenTransport::Udp, _) => {
                let sock = self
                    .udp
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&peer.local)
                    .cloned();
                sock.is_some_and(|s| s.try_send_to(&bytes, peer.remote).is_ok())
            }
            (transport, id) => match self.conn(id, transport, peer.remote) {
                Some(h) => self.queue_on(&h, bytes),
                None => false,
            },
        };
        if sent {
            self.metrics.message_out(peer.transport);
        }
        sent
    }

    /// Queues `bytes` on a connection's writer. A queue over either bound (messages,
    /// bytes) means a peer that does not read what it is sent: the connection is
    /// closed and counted.
    fn queue_on(&self, h: &ConnHandle, bytes: Bytes) -> bool {
        let len = bytes.len();
        let queued = h
            .queued
            .fetch_add(len, Ordering::Relaxed)
            .saturating_add(len);
        let full = queued > self.config.limits.write_queue_bytes
            || match h.tx.try_send(bytes) {
                Ok(()) => return true,
                Err(e) => matches!(e, mpsc::error::TrySendError::Full(_)),
            };
        h.queued.fetch_sub(len, Ordering::Relaxed);
        if full {
            self.metrics
                .ingress_limit(crate::metrics::IngressLimit::WriteQueue);
            h.close.notify_one();
        }
        false
    }
}

/// The Call-ID of a datagram not yet parsed: the value of its first Call-ID (or `i`)
/// header line, trimmed; `None` when there is none before the blank line. For a
/// well-formed message it is what the parser reads, so both hash to the same shard; a
/// shard that parses a message which is not its own passes it on.
pub fn raw_call_id(data: &[u8]) -> Option<&[u8]> {
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    // The start line is skipped; headers end at the first empty line.
    for line in data.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let name = name.trim_ascii_end();
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            let value = value.get(1..).unwrap_or_default();
            let start = value.iter().position(|b| !is_ws(b)).unwrap_or(value.len());
            let end = value
                .iter()
                .rposition(|b| !is_ws(b))
                .map_or(start, |e| e + 1);
            return value.get(start..end);
        }
    }
    None
}

/// The core shard (of `shards`) that handles every message with this Call-ID: a
/// transaction, its CANCEL and ACK, the responses to it and every request of the
/// dialog land on the same shard, which then needs no lock to share its state.
pub fn shard_of(call_id: Option<impl AsRef<[u8]>>, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    // FNV-1a: a fixed, cheap hash. A peer that picks Call-IDs to load one shard gains
    // nothing it could not have by sending more: every shard has the same limits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in call_id.as_ref().map_or(&[][..], |c| c.as_ref()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    usize::try_from(h % shards as u64).unwrap_or(0)
}

#[cfg(test)]
mod shard_tests {
    use super::*;

    #[test]
    fn the_raw_call_id_is_what_the_parser_reads() {
        let cases: [&[u8]; 5] = [
            b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: abc@h\r\n\r\n",
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\ni:\t x y \r\nCSeq: 1 X\r\n\r\n",
            b"OPTIONS sip:x SIP/2.0\nCALL-ID   :  z\nContent-Length: 0\n\n",
            b"OPTIONS sip:x SIP/2.0\r\nIn-Reply-To: q\r\nX: i: no\r\nCall-Id: real\r\n\r\nCall-ID: body",
            b"OPTIONS sip:x SIP/2.0\r\nCall-ID:\r\n\r\n",
        ];
        let want: [&[u8]; 5] = [b"abc@h", b"x y", b"z", b"real", b""];
        for (data, want) in cases.iter().zip(want) {
            assert_eq!(
                raw_call_id(data),
                Some(want),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
        assert_eq!(
            raw_call_id(b"OPTIONS sip:x SIP/2.0\r\nTo: a\r\n\r\ni: body"),
            None
        );
        assert_eq!(raw_call_id(b""), None);
        assert_eq!(raw_call_id(b"Call-ID: on the start line\r\n"), None);
    }

    #[test]
    fn shards_spread_call_ids_and_keep_each_one_in_place() {
        assert_eq!(shard_of(Some(b"anything"), 1), 0);
        assert_eq!(shard_of(None::<&[u8]>, 4), shard_of(Some(b""), 4));
        let mut seen = [0usize; 4];
        for i in 0..4000 {
            let id = format!("{i}-4242@127.0.0.1");
            let s = shard_of(Some(id.as_bytes()), 4);
            assert_eq!(s, shard_of(Some(id.clone().into_bytes()), 4));
            seen[s] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
