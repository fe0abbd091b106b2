//! UDP: one task per socket; each datagram is one message (RFC 3261 §18.3). The task
//! parses and screens ([`crate::core::screen`]: validation and the stateless answers)
//! every datagram before the core task sees it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use holdfast_sip::parse_datagram;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::config::ListenTransport;
use crate::guard::Admission;
use crate::shared::{Peer, Shared};

/// Binds a UDP socket with a receive buffer large enough for bursts.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(8 << 20);
    let _ = socket.set_send_buffer_size(8 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

pub async fn serve(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut shutdown = shared.shutdown.clone();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, remote) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors surface here on some systems; keep serving.
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let peer = Peer {
            transport: ListenTransport::Udp,
            remote,
            local,
            conn: None,
        };
        if super::admit(&shared, &peer) != Admission::Allow {
            continue;
        }
        let data = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
        if super::is_keepalive(&data) {
            continue;
        }
        let handled = super::guarded(&shared, &peer, || {
            match parse_datagram(data.clone(), &shared.wire) {
                Ok(msg) => {
                    super::fault_injection(&shared, &msg);
                    super::deliver(&shared, peer, msg);
                }
                Err(e) => super::parse_failed(&shared, &peer, &data, &e),
            }
        });
        if handled.is_none() {
            // The datagram is dropped; a panic never stops the socket.
            continue;
        }
    }
}
