//! The connection loop shared by TCP and TLS: framing, timeouts, fragment and write
//! queue limits, keepalive pongs, and the panic guard.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use holdfast_sip::{Framed, FramingError, StreamFramer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::{timeout_at, Instant};

use crate::config::{Config, ListenTransport};
use crate::guard::Admission;
use crate::metrics::IngressLimit;
use crate::shared::{ConnHandle, Peer, Shared};

/// Holds a connection's slots (global and per source); frees them when dropped.
#[derive(Debug)]
pub struct ConnPermit {
    shared: Arc<Shared>,
    remote: SocketAddr,
    transport: ListenTransport,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        self.shared
            .guard
            .close_connection(self.remote.ip(), Instant::now());
        self.shared.metrics.connection_closed(self.transport);
    }
}

/// Admits a new connection or says why not. Refusal is cheap: the socket is dropped
/// before any task or buffer exists for it.
pub fn admit(
    shared: &Arc<Shared>,
    remote: SocketAddr,
    transport: ListenTransport,
) -> Option<ConnPermit> {
    let ip = remote.ip();
    let now = Instant::now();
    if shared.guard.is_banned(ip, now) {
        shared
            .metrics
            .dropped_banned
            .fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let open = shared.open_connections.fetch_add(1, Ordering::Relaxed);
    if open >= shared.config.limits.max_connections {
        shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        shared.metrics.ingress_limit(IngressLimit::Connections);
        if shared.logs.allow("max_connections") {
            tracing::warn!(open, "connection limit reached; refusing new connections");
        }
        return None;
    }
    if !shared.guard.open_connection(ip, now) {
        shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        shared.metrics.ingress_limit(IngressLimit::ConnectionsPerIp);
        super::offence(shared, ip, "connections_per_ip");
        return None;
    }
    shared.metrics.connection_opened(transport);
    Some(ConnPermit {
        shared: shared.clone(),
        remote,
        transport,
    })
}

/// Accepts TCP connections for a tcp, tls, ws or wss listener.
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    transport: ListenTransport,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (tcp, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors (EMFILE/ENFILE) or similar: refuse cleanly,
                // back off briefly, keep serving the connections already open.
                shared.metrics.ingress_limit(IngressLimit::OpenFiles);
                if shared.logs.allow("accept") {
                    tracing::warn!(error = %e, "accept failed; backing off");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(permit) = admit(&shared, remote, transport) else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let peer = Peer {
            transport,
            remote,
            local,
            conn: None,
        };
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            connection(shared, tcp, peer, tls, permit).await;
        });
    }
}

async fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: Peer,
    tls: Option<tokio_rustls::TlsAcceptor>,
    permit: ConnPermit,
) {
    match (peer.transport, tls) {
        (ListenTransport::Tcp, _) => serve(shared, tcp, peer, permit).await,
        (ListenTransport::Ws, _) => super::ws::serve(shared, tcp, peer, permit).await,
        (ListenTransport::Tls, Some(acceptor)) => {
            if let Some(io) = super::tls::handshake(&shared, &acceptor, tcp, &peer).await {
                serve(shared, io, peer, permit).await;
            }
        }
        (ListenTransport::Wss, Some(acceptor)) => {
            if let Some(io) = super::tls::handshake(&shared, &acceptor, tcp, &peer).await {
                super::ws::serve(shared, io, peer, permit).await;
            }
        }
        _ => {}
    }
}

/// Registers a connection's outbound queue and spawns the task that drains it in
/// batches.
pub fn outbound<W>(
    shared: &Arc<Shared>,
    peer: &Peer,
    mut writer: W,
) -> (u64, Arc<Notify>, tokio::task::JoinHandle<()>)
where
    W: FnMut(Vec<Bytes>) -> futures_util::future::BoxFuture<'static, bool> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Bytes>(shared.config.limits.write_queue);
    let close = Arc::new(Notify::new());
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let id = shared.register_conn(ConnHandle {
        tx,
        queued: queued.clone(),
        close: close.clone(),
        transport: peer.transport,
        remote: peer.remote,
    });
    let closer = close.clone();
    let task = tokio::spawn(async move {
        // Everything queued goes out in one write: under load a connection drains its
        // queue in a few syscalls instead of one per message.
        let mut batch = Vec::with_capacity(64);
        while rx.recv_many(&mut batch, 256).await > 0 {
            let taken = batch.iter().map(Bytes::len).sum();
            queued.fetch_sub(taken, Ordering::Relaxed);
            if !writer(std::mem::take(&mut batch)).await {
                closer.notify_one();
                break;
            }
        }
    });
    (id, close, task)
}

/// Serves one TCP or TLS connection until it closes, fails or breaks a limit.
pub async fn serve<S>(shared: Arc<Shared>, io: S, peer: Peer, permit: ConnPermit)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    serve_with(shared, io, peer, permit, false).await;
}

/// Opens a TCP connection to a device whose connection is gone (RFC 3261 §18.1.1:
/// a request over TCP opens a connection when none is open) and sends `data` over it.
/// Only addresses a device registered from reach here, never a host a message names.
pub fn connect_and_send(shared: Arc<Shared>, remote: SocketAddr, data: Bytes) {
    // One connection attempt per device at a time: what is sent meanwhile waits for it.
    if !shared.queue_for_connect(remote, data) {
        return;
    }
    tokio::spawn(async move {
        let tcp = match admit(&shared, remote, ListenTransport::Tcp) {
            Some(permit) => {
                let connect = TcpStream::connect(remote);
                match tokio::time::timeout(Duration::from_secs(5), connect).await {
                    Ok(Ok(tcp)) => Some((tcp, permit)),
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "connection to a device failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "connection to a device timed out");
                        None
                    }
                }
            }
            None => None,
        };
        let Some((tcp, permit)) = tcp else {
            shared.take_connect_queue(remote);
            return;
        };
        let _ = tcp.set_nodelay(true);
        let Ok(local) = tcp.local_addr() else {
            shared.take_connect_queue(remote);
            return;
        };
        let peer = Peer {
            transport: ListenTransport::Tcp,
            remote,
            local,
            conn: None,
        };
        serve_with(shared, tcp, peer, permit, true).await;
    });
}

async fn serve_with<S>(
    shared: Arc<Shared>,
    io: S,
    peer: Peer,
    _permit: ConnPermit,
    opened_by_us: bool,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, wr) = tokio::io::split(io);
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    let (id, close, writer) = outbound(&shared, &peer, move |batch: Vec<Bytes>| {
        let wr = wr.clone();
        Box::pin(async move {
            let mut out = Vec::with_capacity(batch.iter().map(Bytes::len).sum());
            for b in &batch {
                out.extend_from_slice(b);
            }
            let mut w = wr.lock().await;
            matches!(
                tokio::time::timeout(Duration::from_secs(10), w.write_all(&out)).await,
                Ok(Ok(()))
            )
        })
    });
    let peer = Peer {
        conn: Some(id),
        ..peer
    };
    if opened_by_us {
        // What was queued while the connection was being opened.
        for data in shared.take_connect_queue(peer.remote) {
            shared.send(&peer, data);
        }
    }
    read_loop(&shared, &mut rd, &peer, &close).await;
    shared.unregister_conn(id);
    writer.abort();
}

async fn read_loop<R: AsyncRead + Unpin>(
    shared: &Arc<Shared>,
    rd: &mut R,
    peer: &Peer,
    close: &Notify,
) {
    let limits = &shared.config.limits;
    let mut shutdown = shared.shutdown.clone();
    let mut framer = StreamFramer::new(shared.wire.clone());
    let mut buf = vec![0u8; 16 * 1024];
    let opened = Instant::now();
    let mut heard = false;
    let mut last_activity = opened;
    let mut message_started = opened;
    let mut fragments = 0usize;
    loop {
        let (deadline, expiry) = if !heard {
            (
                opened + Config::ms(limits.first_message_timeout_ms),
                Some(IngressLimit::FirstMessageTimeout),
            )
        } else if framer.in_message() {
            (
                message_started + Config::ms(limits.message_read_timeout_ms),
                Some(IngressLimit::ReadTimeout),
            )
        } else {
            (last_activity + Config::ms(limits.idle_timeout_ms), None)
        };
        let read = tokio::select! {
            r = timeout_at(deadline, rd.read(&mut buf)) => r,
            _ = close.notified() => return,
            _ = shutdown.changed() => return,
        };
        let n = match read {
            Err(_) => {
                if let Some(limit) = expiry {
                    shared.metrics.ingress_limit(limit);
                    super::offence(shared, peer.remote.ip(), limit.as_str());
                }
                return;
            }
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        let now = Instant::now();
        heard = true;
        last_activity = now;
        if framer.in_message() {
            fragments += 1;
            if fragments > limits.max_fragments_per_message {
                shared.metrics.ingress_limit(IngressLimit::Fragments);
                super::offence(shared, peer.remote.ip(), "fragments");
                return;
            }
        } else {
            fragments = 1;
            message_started = now;
        }
        let data = buf.get(..n).unwrap_or_default();
        let outcome = super::guarded(shared, peer, || {
            framer.push(data);
            let mut keep = true;
            let mut framed = 0usize;
            while let Some(item) = framer.next() {
                framed += 1;
                keep &= handle_item(shared, peer, item);
            }
            (keep, framed)
        });
        let Some((true, framed)) = outcome else {
            return;
        };
        if framed > 0 {
            // A message ended in this read: whatever is left started in it, so the
            // fragment count and read timer of the next message start here.
            fragments = usize::from(framer.in_message());
            message_started = now;
        }
    }
}

/// Handles one framed item; false when the connection must close.
fn handle_item(shared: &Arc<Shared>, peer: &Peer, item: Result<Framed, FramingError>) -> bool {
    match item {
        Ok(Framed::Message(msg)) => match super::admit(shared, peer) {
            Admission::Allow => {
                super::fault_injection(shared, &msg);
                super::deliver(shared, *peer, msg);
                true
            }
            Admission::RateLimited => true,
            Admission::Banned => false,
        },
        Ok(Framed::Invalid { error, raw }) => {
            super::parse_failed(shared, peer, &raw, &error);
            !shared.guard.is_banned(peer.remote.ip(), Instant::now())
        }
        // RFC 5626 §4.4.1: answer a CRLF CRLF ping with a CRLF pong. Pings count
        // against the source's message rate like any message.
        Ok(Framed::Ping) => match super::admit(shared, peer) {
            Admission::Allow => {
                shared.send(peer, Bytes::from_static(b"\r\n"));
                true
            }
            Admission::RateLimited => true,
            Admission::Banned => false,
        },
        Err(e) => {
            shared
                .metrics
                .framing_errors
                .fetch_add(1, Ordering::Relaxed);
            if let FramingError::Limit(l) = &e {
                shared.metrics.wire_limit(l.limit);
            }
            super::offence(shared, peer.remote.ip(), "framing");
            if shared.logs.allow("framing") {
                tracing::info!(remote = %peer.remote, error = %e, "unframeable stream; closing");
            }
            false
        }
    }
}
