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

/// A parsed message on its way to the core.
#[derive(Debug)]
pub struct Inbound {
    pub msg: Message,
    pub peer: Peer,
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
    pub core_tx: mpsc::Sender<Inbound>,
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
        core_tx: mpsc::Sender<Inbound>,
        shutdown: watch::Receiver<bool>,
    ) -> Shared {
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
                Some(h) => match h.tx.try_send(bytes) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.metrics
                            .ingress_limit(crate::metrics::IngressLimit::WriteQueue);
                        h.close.notify_one();
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                },
                None => false,
            },
        };
        if sent {
            self.metrics.message_out(peer.transport);
        }
        sent
    }
}
