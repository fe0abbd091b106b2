//! What a record-routing proxy writes into its own headers, and reads back from them.
//!
//! - **Flow tokens.** A request to a device must leave over the flow the device used
//!   (its own TCP/TLS/WS connection, or the NAT binding its UDP packets came from),
//!   never to the private address in its Contact (RFC 5626 §5.3, §7). When holdfast
//!   record-routes a dialog it writes each side's flow into the user part of its
//!   Record-Route URI, so that an in-dialog request, which comes back with that URI in
//!   its Route, says where it must go. Tokens carry an HMAC: a forged Route cannot make
//!   holdfast send anywhere it has not seen a device come from (no open relay).
//! - **Loop detection** (RFC 3261 §16.3 item 4, §16.6 item 8): the branch of every
//!   Via holdfast adds carries a hash of the fields that identify the request as it
//!   arrived; a request that comes back with one of holdfast's Vias whose hash equals
//!   the request's own has looped (482), one with a different hash is a spiral.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use holdfast_sip::{HeaderName, Message, Via};
use sha2::Sha256;

use crate::transport::{Peer, Transport};

type HmacSha256 = Hmac<Sha256>;

/// The prefix of every branch holdfast writes: the RFC 3261 magic cookie, then a mark
/// that the loop hash follows.
pub const BRANCH_PREFIX: &str = "z9hG4bK-hf";

/// Bytes of HMAC kept in a flow token.
const MAC_LEN: usize = 8;

/// Separates the two flows of a single Record-Route that serves both sides.
pub const FLOW_SEPARATOR: char = '~';

/// Encodes and checks flow tokens with one secret (a cluster's nodes share it, so
/// that any node can route an in-dialog request of a dialog another node set up).
#[derive(Clone)]
pub struct FlowTokens {
    secret: Vec<u8>,
}

impl std::fmt::Debug for FlowTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTokens").finish_non_exhaustive()
    }
}

fn transport_code(t: Transport) -> u8 {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
        Transport::Ws => 3,
        Transport::Wss => 4,
    }
}

fn transport_of(code: u8) -> Option<Transport> {
    Some(match code {
        0 => Transport::Udp,
        1 => Transport::Tcp,
        2 => Transport::Tls,
        3 => Transport::Ws,
        4 => Transport::Wss,
        _ => return None,
    })
}

fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// A cursor over a decoded token.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn addr(&mut self) -> Option<SocketAddr> {
        let [family] = self.take::<1>()?;
        let ip = match family {
            4 => IpAddr::from(self.take::<4>()?),
            6 => IpAddr::from(self.take::<16>()?),
            _ => return None,
        };
        let port = u16::from_be_bytes(self.take::<2>()?);
        Some(SocketAddr::new(ip, port))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c.wrapping_sub(b'0')),
            b'a'..=b'f' => Some(c.wrapping_sub(b'a').wrapping_add(10)),
            b'A'..=b'F' => Some(c.wrapping_sub(b'A').wrapping_add(10)),
            _ => None,
        }
    };
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) || bytes.len() > 256 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Some((digit(*hi)? << 4) | digit(*lo)?),
            _ => None,
        })
        .collect()
}

impl FlowTokens {
    /// Tokens under `secret`.
    pub fn new(secret: &[u8]) -> FlowTokens {
        FlowTokens {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let mut out = [0u8; MAC_LEN];
        if let Ok(mut mac) = HmacSha256::new_from_slice(&self.secret) {
            mac.update(data);
            let full = mac.finalize().into_bytes();
            for (o, b) in out.iter_mut().zip(full.iter()) {
                *o = *b;
            }
        }
        out
    }

    /// The token for `peer`: its transport, remote and local address and connection,
    /// as hex, with a MAC. Usable as the user part of a SIP URI.
    pub fn encode(&self, peer: &Peer) -> String {
        let mut data = Vec::with_capacity(48);
        data.push(transport_code(peer.transport));
        data.extend_from_slice(&peer.connection.unwrap_or(0).to_be_bytes());
        put_addr(&mut data, peer.addr);
        match peer.local {
            Some(local) => put_addr(&mut data, local),
            None => data.push(0),
        }
        let mac = self.mac(&data);
        data.extend_from_slice(&mac);
        hex(&data)
    }

    /// The peer a token names, when its MAC is right.
    pub fn decode(&self, token: &str) -> Option<Peer> {
        let data = unhex(token)?;
        let split = data.len().checked_sub(MAC_LEN)?;
        let (body, mac) = data.split_at(split);
        let expected = self.mac(body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(mac, &expected[..])) {
            return None;
        }
        let mut r = Reader(body);
        let [code] = r.take::<1>()?;
        let transport = transport_of(code)?;
        let connection = u64::from_be_bytes(r.take::<8>()?);
        let addr = r.addr()?;
        let local = match r.0.first() {
            Some(0) => None,
            _ => Some(r.addr()?),
        };
        Some(Peer {
            transport,
            addr,
            connection: (connection != 0).then_some(connection),
            local,
        })
    }

    /// The flows a Record-Route URI user part names: one, or two for a single
    /// Record-Route that serves both sides of a dialog. Empty when the user part is
    /// not holdfast's or does not verify.
    pub fn decode_user(&self, user: &str) -> Vec<Peer> {
        let flows: Option<Vec<Peer>> = user
            .split(FLOW_SEPARATOR)
            .take(3)
            .map(|t| self.decode(t))
            .collect();
        match flows {
            Some(f) if (1..=2).contains(&f.len()) => f,
            _ => Vec::new(),
        }
    }
}

/// A Record-Route value for holdfast's socket `local` on `transport`, carrying `user`
/// (one or two flow tokens): `<sip:USER@HOST:PORT;transport=tcp;lr>`.
pub fn record_route(local: SocketAddr, transport: Transport, user: &str) -> String {
    let host = match local.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let port = local.port();
    match transport {
        Transport::Udp => format!("<sip:{user}@{host}:{port};lr>"),
        t => format!(
            "<sip:{user}@{host}:{port};transport={};lr>",
            t.as_str().to_ascii_lowercase()
        ),
    }
}

/// The hash of what identifies a request as it arrives (RFC 3261 §16.6 item 8): the
/// Request-URI, Call-ID, From and To tags and the CSeq number. A request that comes
/// back with the same hash in one of holdfast's Vias has looped.
pub fn loop_hash(request: &Message) -> u64 {
    // A fixed-key hasher: the same request hashes the same in every run.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    if let Some(uri) = request.request_uri() {
        uri.as_bytes().hash(&mut h);
    }
    request.call_id().hash(&mut h);
    request.from().and_then(|f| f.tag()).hash(&mut h);
    request.to().and_then(|t| t.tag()).hash(&mut h);
    request.cseq().map(|c| c.seq).hash(&mut h);
    h.finish()
}

/// A new branch for a request holdfast forwards: unique, and carrying the request's
/// [`loop_hash`].
pub fn branch(request: &Message) -> String {
    format!(
        "{BRANCH_PREFIX}{:016x}.{}",
        loop_hash(request),
        crate::tag()
    )
}

/// True when one of holdfast's own Vias (as `is_ours` tells) carries this request's
/// loop hash: the request was forwarded by holdfast before, unchanged, and came back
/// (482 Loop Detected).
pub fn has_looped(request: &Message, is_ours: impl Fn(&Via) -> bool) -> bool {
    let mut hash = None;
    request.vias().any(|via| {
        let Some(b) = via.branch() else { return false };
        let Some(rest) = b.strip_prefix(BRANCH_PREFIX.as_bytes()) else {
            return false;
        };
        if !is_ours(via) {
            return false;
        }
        let theirs = rest
            .get(..16)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        let mine = *hash.get_or_insert_with(|| loop_hash(request));
        theirs == Some(mine)
    })
}

/// Adds `Content-Length` when a message has none: it is optional over UDP but
/// required over TCP, TLS and WebSocket (RFC 3261 §18.3, §20.14), and a proxy may
/// forward from one to the other.
pub fn ensure_content_length(message: &mut Message) {
    if message.content_length().is_none() {
        let len = message.body().len().to_string();
        if let Ok(h) = holdfast_sip::Header::new("Content-Length", len.as_bytes()) {
            message.push_header(h);
        }
    }
}

/// Inserts `routes` (name-addr values, top first) above the request's Route fields
/// (a Path learned at registration, RFC 3327 §5.3).
pub fn push_routes(request: &mut Message, routes: &[bytes::Bytes]) {
    let at = request
        .headers()
        .iter()
        .position(|h| h.name() == HeaderName::Route)
        .or_else(|| {
            request
                .headers()
                .iter()
                .rposition(|h| h.name() == HeaderName::Via)
                .map(|i| i.saturating_add(1))
        })
        .unwrap_or(0);
    for (i, route) in routes.iter().enumerate() {
        if let Ok(h) = holdfast_sip::Header::new("Route", route) {
            request.insert_header(at.saturating_add(i), h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(t: Transport, conn: Option<u64>, addr: &str) -> Peer {
        Peer {
            transport: t,
            addr: addr.parse().unwrap(),
            connection: conn,
            local: Some("127.0.0.1:5060".parse().unwrap()),
        }
    }

    #[test]
    fn flow_token_round_trip_and_forgery() {
        let tokens = FlowTokens::new(b"secret");
        for p in [
            peer(Transport::Udp, None, "192.0.2.7:40000"),
            peer(Transport::Tcp, Some(77), "[2001:db8::1]:5061"),
            Peer {
                local: None,
                ..peer(Transport::Ws, Some(1), "10.0.0.1:1")
            },
        ] {
            let t = tokens.encode(&p);
            assert_eq!(tokens.decode(&t), Some(p));
            assert!(t.bytes().all(|c| c.is_ascii_hexdigit()));
            // Another secret, a flipped digit, a truncation: rejected.
            assert_eq!(FlowTokens::new(b"other").decode(&t), None);
            let mut flipped = t.clone().into_bytes();
            flipped[4] = if flipped[4] == b'0' { b'1' } else { b'0' };
            assert_eq!(tokens.decode(std::str::from_utf8(&flipped).unwrap()), None);
            assert_eq!(tokens.decode(&t[..t.len() - 2]), None);
        }
        assert_eq!(tokens.decode("zz"), None);
        assert_eq!(tokens.decode(""), None);
        let a = tokens.encode(&peer(Transport::Udp, None, "192.0.2.7:1"));
        let b = tokens.encode(&peer(Transport::Tcp, Some(3), "192.0.2.8:2"));
        assert_eq!(tokens.decode_user(&format!("{a}~{b}")).len(), 2);
        assert!(tokens.decode_user(&format!("{a}~{a}~{b}")).is_empty());
        assert!(tokens.decode_user(&format!("{a}~bad")).is_empty());
    }

    #[test]
    fn content_length_is_added_for_stream_transports() {
        let raw =
            "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
                   From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
                   Call-ID: c\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\r\nv=0\r\n";
        let limits = holdfast_sip::Limits::default();
        let mut m = holdfast_sip::parse_datagram(bytes::Bytes::from(raw), &limits).unwrap();
        assert_eq!(m.content_length(), None);
        ensure_content_length(&mut m);
        let again = holdfast_sip::parse_datagram(m.to_bytes(), &limits).unwrap();
        assert_eq!(again.content_length(), Some(5));
        assert_eq!(again.body().as_ref(), b"v=0\r\n");
        // Framed on a stream it is one whole message.
        let mut framer = holdfast_sip::StreamFramer::new(limits);
        framer.push(&m.to_bytes());
        assert!(matches!(
            framer.next(),
            Some(Ok(holdfast_sip::Framed::Message(_)))
        ));
        // A message that has one is left as it is.
        let before = again.to_bytes();
        let mut same = again;
        ensure_content_length(&mut same);
        assert_eq!(same.to_bytes(), before);
    }

    #[test]
    fn record_route_shapes() {
        let l: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        assert_eq!(
            record_route(l, Transport::Udp, "ab"),
            "<sip:ab@127.0.0.1:5060;lr>"
        );
        let l6: SocketAddr = "[::1]:5061".parse().unwrap();
        assert_eq!(
            record_route(l6, Transport::Tcp, "ab"),
            "<sip:ab@[::1]:5061;transport=tcp;lr>"
        );
    }
}
