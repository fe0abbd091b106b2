//! The far end of a transport-layer exchange (RFC 3261 §18): which transport, which
//! address, and for connection-oriented transports which connection.

use std::net::SocketAddr;

/// A transport the I/O shell serves. Unlike [`holdfast_sip::Transport`], which names
/// whatever a Via says, this is only what holdfast actually sends and receives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: unreliable, so the transaction layer retransmits (§17.1.1.2, §17.1.2.2,
    /// §17.2.1).
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket (RFC 7118).
    Ws,
    /// Secure WebSocket (RFC 7118).
    Wss,
}

impl Transport {
    /// True for transports that deliver reliably: no retransmission timers run over
    /// them, and timers D, I, J and K are zero (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The transport a Via names, when holdfast serves it.
    pub fn from_via(transport: &holdfast_sip::Transport) -> Option<Transport> {
        match transport {
            holdfast_sip::Transport::Udp => Some(Transport::Udp),
            holdfast_sip::Transport::Tcp => Some(Transport::Tcp),
            holdfast_sip::Transport::Tls => Some(Transport::Tls),
            holdfast_sip::Transport::Ws => Some(Transport::Ws),
            holdfast_sip::Transport::Wss => Some(Transport::Wss),
            _ => None,
        }
    }

    /// The name as written in a Via (`UDP`, `TCP`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The transport.
    pub transport: Transport,
    /// The remote address.
    pub addr: SocketAddr,
    /// The shell's id of the connection, for connection-oriented transports. `None`
    /// for UDP, and for a request the shell must open a connection for.
    pub connection: Option<u64>,
    /// The local address the message arrived on (which of the shell's sockets), when
    /// the shell has more than one; responses leave from the same one.
    pub local: Option<SocketAddr>,
}

impl Peer {
    /// A peer with no connection yet.
    pub fn new(transport: Transport, addr: SocketAddr) -> Peer {
        Peer {
            transport,
            addr,
            connection: None,
            local: None,
        }
    }

    /// True when the transport is reliable (see [`Transport::is_reliable`]).
    pub fn is_reliable(&self) -> bool {
        self.transport.is_reliable()
    }

    /// True when a failure of `failed` is a failure of this peer: the same connection
    /// when `failed` names one, otherwise the same transport and address.
    pub fn is_affected_by(&self, failed: &Peer) -> bool {
        if self.transport != failed.transport {
            return false;
        }
        match failed.connection {
            Some(c) => self.connection == Some(c),
            None => self.addr == failed.addr,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.connection {
            Some(c) => write!(f, "{} {} (connection {c})", self.transport, self.addr),
            None => write!(f, "{} {}", self.transport, self.addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reliability_and_failure_scope() {
        let addr: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let udp = Peer::new(Transport::Udp, addr);
        assert!(!udp.is_reliable());
        let tcp = Peer {
            connection: Some(7),
            ..Peer::new(Transport::Tcp, addr)
        };
        assert!(tcp.is_reliable());
        assert!(tcp.is_affected_by(&tcp));
        assert!(!tcp.is_affected_by(&Peer {
            connection: Some(8),
            ..tcp
        }));
        assert!(tcp.is_affected_by(&Peer::new(Transport::Tcp, addr)));
        assert!(!udp.is_affected_by(&tcp));
        assert_eq!(
            Transport::from_via(&holdfast_sip::Transport::Wss),
            Some(Transport::Wss)
        );
        assert_eq!(Transport::from_via(&holdfast_sip::Transport::Sctp), None);
    }
}
