//! The Via header (RFC 3261 §20.42, §18.2.1; RFC 3581 rport; RFC 5118 §4.5 received).

use bytes::Bytes;

use crate::grammar::{self, Param, Scanner};
use crate::uri::Host;

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
    fn parse(t: &Bytes) -> Transport {
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
            Transport::Other(t.clone())
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
        Some(
            p.value
                .as_ref()
                .and_then(|v| grammar::parse_u32(v))
                .and_then(|n| u16::try_from(n).ok()),
        )
    }

    /// The maddr parameter.
    pub fn maddr(&self) -> Option<&Bytes> {
        self.param("maddr").and_then(|p| p.value.as_ref())
    }

    /// The ttl parameter.
    pub fn ttl(&self) -> Option<u8> {
        self.param("ttl")
            .and_then(|p| p.value.as_ref())
            .and_then(|v| grammar::parse_u32(v))
            .and_then(|n| u8::try_from(n).ok())
    }

    /// The sent-by port, or the transport's default (5060, or 5061 for TLS).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(match self.transport {
            Transport::Tls => 5061,
            _ => 5060,
        })
    }
}

/// Parses one Via field (which may hold several comma-separated values).
pub(crate) fn parse_list(v: &Bytes) -> Option<Vec<Via>> {
    let mut out = Vec::with_capacity(1);
    let mut s = Scanner::new(v);
    s.skip_lws();
    loop {
        out.push(parse_at(&mut s)?);
        if !s.list_sep()? {
            return Some(out);
        }
    }
}

pub(crate) fn parse_one(v: &Bytes) -> Option<Via> {
    let mut s = Scanner::new(v);
    let via = parse_at(&mut s)?;
    s.at_end().then_some(via)
}

fn parse_at(s: &mut Scanner<'_>) -> Option<Via> {
    let start = s.pos();
    let protocol = s.token()?;
    if !s.eat_sep(b'/') {
        return None;
    }
    let version = s.token()?;
    if !s.eat_sep(b'/') {
        return None;
    }
    let transport = Transport::parse(&s.token()?);
    if !s.skip_lws() {
        return None;
    }
    // sent-by = host [ COLON port ]; LWS around the colon is allowed.
    let host_range = if s.peek() == Some(b'[') {
        let r = s.take_while(|b| b != b']');
        if !s.eat(b']') {
            return None;
        }
        (r.0, s.pos())
    } else {
        s.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    let host_text = s.slice(host_range);
    let host = Host::parse(&host_text, false).ok()?;
    let port = if s.eat_sep(b':') {
        let digits = s.take_while(|b| b.is_ascii_digit());
        Some(u16::try_from(grammar::parse_u32(s.bytes(digits))?).ok()?)
    } else {
        None
    };
    let mut params = Vec::new();
    s.params(&mut params)?;
    let end = s.pos();
    let via = Via {
        raw: s.slice((start, end)),
        protocol,
        version,
        transport,
        host,
        host_text,
        port,
        params,
    };
    check_params(&via)?;
    Some(via)
}

/// The typed via-params must hold values of their type (RFC 3261 §20.42, RFC 3581).
fn check_params(via: &Via) -> Option<()> {
    for p in &via.params {
        let name = &p.name;
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        if is("ttl") {
            via.ttl()?;
        } else if is("received") {
            via.received()?;
        } else if is("rport") {
            if p.value.is_some() {
                via.rport()??;
            }
        } else if is("maddr") {
            Host::parse(p.value.as_ref()?, false).ok()?;
        } else if is("branch") && !grammar::is_token_str(p.value.as_ref()?) {
            return None;
        }
    }
    Some(())
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
