//! The Via header (RFC 3261 §20.42, §18.2.1; RFC 3581 rport; RFC 5118 §4.5 received).

use bytes::Bytes;

use crate::grammar::{self, slice, Param, ParamSpan, Scanner, Span};
use crate::uri::{host_kind, Host, HostKind};

/// The magic cookie that starts an RFC 3261 branch (§8.1.1.7).
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

/// The transport named in a Via.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP
    Udp,
    /// TCP
    Tcp,
    /// TLS
    Tls,
    /// SCTP
    Sctp,
    /// WS (RFC 7118)
    Ws,
    /// WSS (RFC 7118)
    Wss,
    /// Any other token, as written.
    Other(Bytes),
}

impl Transport {
    /// The transport named by the token `raw[span]`.
    fn from_span(raw: &Bytes, span: Span) -> Transport {
        let t = raw.get(span.0..span.1).unwrap_or_default();
        let is = |s: &str| t.eq_ignore_ascii_case(s.as_bytes());
        if is("UDP") {
            Transport::Udp
        } else if is("TCP") {
            Transport::Tcp
        } else if is("TLS") {
            Transport::Tls
        } else if is("SCTP") {
            Transport::Sctp
        } else if is("WS") {
            Transport::Ws
        } else if is("WSS") {
            Transport::Wss
        } else {
            Transport::Other(slice(raw, span))
        }
    }

    /// The canonical upper-case name.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Transport::Udp => b"UDP",
            Transport::Tcp => b"TCP",
            Transport::Tls => b"TLS",
            Transport::Sctp => b"SCTP",
            Transport::Ws => b"WS",
            Transport::Wss => b"WSS",
            Transport::Other(t) => t,
        }
    }

    /// True for transports that deliver a byte stream (framed by Content-Length).
    pub fn is_reliable(&self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// One Via value: `SIP / 2.0 / transport sent-by *( ; via-params )`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Via {
    raw: Bytes,
    /// The protocol name (`SIP`).
    pub protocol: Bytes,
    /// The protocol version (`2.0`).
    pub version: Bytes,
    /// The transport.
    pub transport: Transport,
    /// The sent-by host.
    pub host: Host,
    /// The sent-by host as written.
    pub host_text: Bytes,
    /// The sent-by port, if written.
    pub port: Option<u16>,
    /// Parameters in order, as written.
    pub params: Vec<Param>,
}

impl Via {
    /// Builds a Via from its parts (a proxy's own Via). `branch` must be a token.
    pub fn new(transport: &str, sent_by: &str, branch: &str) -> Option<Via> {
        let raw = Bytes::from(format!("SIP/2.0/{transport} {sent_by};branch={branch}"));
        parse_one(&raw)
    }

    /// The Via value exactly as written.
    pub fn as_bytes(&self) -> &Bytes {
        &self.raw
    }

    fn param(&self, name: &str) -> Option<&Param> {
        grammar::find_param(&self.params, name)
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&Bytes> {
        self.param("branch").and_then(|p| p.value.as_ref())
    }

    /// True when the branch starts with the RFC 3261 magic cookie.
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(MAGIC_COOKIE))
    }

    /// The received parameter, if present (brackets tolerated, RFC 5118 §4.5).
    pub fn received(&self) -> Option<Host> {
        let v = self.param("received")?.value.as_ref()?;
        Host::parse(v, true).ok()
    }

    /// The rport parameter: `None` if absent, `Some(None)` if present without a value
    /// (a request asking for it, RFC 3581 §3), `Some(Some(port))` once filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        let p = self.param("rport")?;
        Some(p.value.as_deref().and_then(port))
    }

    /// The maddr parameter.
    pub fn maddr(&self) -> Option<&Bytes> {
        self.param("maddr").and_then(|p| p.value.as_ref())
    }

    /// The ttl parameter.
    pub fn ttl(&self) -> Option<u8> {
        self.param("ttl")
            .and_then(|p| p.value.as_deref())
            .and_then(ttl)
    }

    /// The sent-by port, or the transport's default (5060, or 5061 for TLS).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(match self.transport {
            Transport::Tls => 5061,
            _ => 5060,
        })
    }
}

/// Where the parts of one Via value are, once [`scan_at`] has checked it.
#[derive(Debug, Clone, Copy)]
struct ViaShape {
    start: usize,
    end: usize,
    protocol: Span,
    version: Span,
    transport: Span,
    host: Span,
    host_kind: HostKind,
    port: Option<u16>,
    /// Where the parameters start (before the first `;`).
    params: usize,
}

impl ViaShape {
    fn build(&self, src: &Bytes) -> Via {
        let host_text = slice(src, self.host);
        Via {
            raw: slice(src, (self.start, self.end)),
            protocol: slice(src, self.protocol),
            version: slice(src, self.version),
            transport: Transport::from_span(src, self.transport),
            host: self.host_kind.host(&host_text),
            host_text,
            port: self.port,
            params: grammar::collect_params(src, self.params),
        }
    }
}

/// Checks one Via field (which may hold several comma-separated values) and counts its
/// values, allocating nothing.
pub(crate) fn check_list(v: &[u8]) -> Option<usize> {
    let mut s = Scanner::new(v);
    s.skip_lws();
    let mut n = 0usize;
    loop {
        scan_at(&mut s)?;
        n = n.saturating_add(1);
        if !s.list_sep()? {
            return Some(n);
        }
    }
}

/// Parses one Via field (which may hold several comma-separated values).
pub(crate) fn parse_list(v: &Bytes) -> Option<Vec<Via>> {
    let mut out = Vec::with_capacity(1);
    let mut s = Scanner::new(v);
    s.skip_lws();
    loop {
        out.push(scan_at(&mut s)?.build(v));
        if !s.list_sep()? {
            return Some(out);
        }
    }
}

pub(crate) fn parse_one(v: &Bytes) -> Option<Via> {
    let mut s = Scanner::new(v);
    let via = scan_at(&mut s)?;
    s.at_end().then(|| via.build(v))
}

#[inline(always)]
fn scan_at(s: &mut Scanner<'_>) -> Option<ViaShape> {
    let start = s.pos();
    let protocol = s.token()?;
    if !s.eat_sep(b'/') {
        return None;
    }
    let version = s.token()?;
    if !s.eat_sep(b'/') {
        return None;
    }
    let transport = s.token()?;
    if !s.skip_lws() {
        return None;
    }
    // sent-by = host [ COLON port ]; LWS around the colon is allowed.
    let host = if s.peek() == Some(b'[') {
        let r = s.take_while(|b| b != b']');
        if !s.eat(b']') {
            return None;
        }
        (r.0, s.pos())
    } else {
        s.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    let host_kind = host_kind(s.bytes(host), false).ok()?;
    let port = if s.eat_sep(b':') {
        let digits = s.take_while(|b| b.is_ascii_digit());
        Some(u16::try_from(grammar::parse_u32(s.bytes(digits))?).ok()?)
    } else {
        None
    };
    let params = s.pos();
    let mut check = ParamCheck::default();
    s.params(|s, p| check.param(s, p))?;
    Some(ViaShape {
        start,
        end: s.pos(),
        protocol,
        version,
        transport,
        host,
        host_kind,
        port,
        params,
    })
}

/// The typed via-params must hold values of their type (RFC 3261 §20.42, RFC 3581).
/// `ttl`, `received` and `rport` are read from their first occurrence, as
/// [`Via::ttl`], [`Via::received`] and [`Via::rport`] read them, so that is the one
/// that must be valid; every `maddr` must be a host and every `branch` a token.
#[derive(Debug, Default)]
struct ParamCheck {
    ttl: Option<bool>,
    received: Option<bool>,
    rport: Option<bool>,
}

impl ParamCheck {
    fn param(&mut self, s: &Scanner<'_>, p: ParamSpan) -> Option<()> {
        let name = s.bytes(p.name);
        let value = p.value.map(|v| s.bytes(v));
        // Only names of these lengths are checked; most parameters are none of them.
        if !matches!(name.len(), 3 | 5 | 6 | 8) {
            return Some(());
        }
        let is = |n: &str| grammar::is_name(name, n.as_bytes());
        let ok = if is("ttl") {
            *self
                .ttl
                .get_or_insert_with(|| value.and_then(ttl).is_some())
        } else if is("received") {
            *self
                .received
                .get_or_insert_with(|| value.is_some_and(|v| host_kind(v, true).is_ok()))
        } else if is("rport") {
            let first_ok = *self
                .rport
                .get_or_insert_with(|| value.and_then(port).is_some());
            value.is_none() || first_ok
        } else if is("maddr") {
            value.is_some_and(|v| host_kind(v, false).is_ok())
        } else if is("branch") {
            value.is_some_and(grammar::is_token_str)
        } else {
            true
        };
        ok.then_some(())
    }
}

fn ttl(v: &[u8]) -> Option<u8> {
    grammar::parse_u32(v).and_then(|n| u8::try_from(n).ok())
}

fn port(v: &[u8]) -> Option<u16> {
    grammar::parse_u32(v).and_then(|n| u16::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vias(s: &'static str) -> Option<Vec<Via>> {
        parse_list(&Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn folded_and_spaced() {
        let v = vias("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].transport, Transport::Udp);
        assert_eq!(v[0].branch().unwrap().as_ref(), b"390skdjuw");
        let v = vias("SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].branch().unwrap().as_ref(), b"z9hG4bK30239");
        assert_eq!(v[1].host, Host::V4("192.168.255.111".parse().unwrap()));
    }

    #[test]
    fn params() {
        let v = vias("SIP/2.0/UDP [2001:db8::9:1]:5070;received=[2001:db8::9:255];rport=5061;ttl=16;branch=z9hG4bKx").unwrap();
        let v = &v[0];
        assert_eq!(v.port, Some(5070));
        assert_eq!(
            v.received(),
            Some(Host::V6("2001:db8::9:255".parse().unwrap()))
        );
        assert_eq!(v.rport(), Some(Some(5061)));
        assert_eq!(v.ttl(), Some(16));
        assert!(v.is_rfc3261_branch());
        let v = vias("SIP/2.0/UDP host;received=2001:db8::9:255;rport").unwrap();
        assert!(v[0].received().is_some());
        assert_eq!(v[0].rport(), Some(None));
    }

    #[test]
    fn rejects() {
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/2.0/UDP",
            "SIP/2.0 host",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host;ttl=300",
            "SIP/2.0/UDP host;received=not..an.ip",
            "SIP/2.0/UDP host;rport=x",
            "SIP/2.0/UDP host,",
            "SIP/2.0/UDP host;branch=\"q\"",
        ] {
            assert!(vias(bad).is_none(), "{bad}");
        }
    }
}
