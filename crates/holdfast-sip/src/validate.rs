//! The checks beside the parser: what RFC 3261 §8.2 and §16.3 expect an element to
//! answer to a message that parsed (RFC 4475 §3.2 – §3.3 are the cases).
//!
//! The validator never changes the message; it returns the [`Violation`] whose
//! [`ParseError::answer`] is the response to send (or drop, for a response).

use std::net::IpAddr;

use crate::error::{ParseError, Violation};
use crate::header::{HeaderName, Method};
use crate::message::Message;
use crate::uri::Uri;
use crate::via::MAGIC_COOKIE;

/// Which role the element plays for this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A proxy that will forward the request (§16.3): checks Proxy-Require and
    /// Max-Forwards.
    Proxy,
    /// The request's final destination, such as the registrar or a request addressed to
    /// the core (§8.2): checks Require, Content-Type and Accept.
    Uas,
}

/// What the element supports.
#[derive(Debug, Clone, Copy)]
pub struct ValidationPolicy<'a> {
    /// The role.
    pub role: Role,
    /// Option tags the element supports (for 420 Bad Extension).
    pub supported: &'a [&'a str],
}

impl ValidationPolicy<'_> {
    /// A proxy supporting `path` and `outbound`.
    pub const PROXY: ValidationPolicy<'static> = ValidationPolicy {
        role: Role::Proxy,
        supported: &["path", "outbound"],
    };
    /// A UAS (registrar) supporting `path` and `outbound`.
    pub const UAS: ValidationPolicy<'static> = ValidationPolicy {
        role: Role::Uas,
        supported: &["path", "outbound"],
    };
}

fn fail<T>(v: Violation) -> Result<T, ParseError> {
    Err(ParseError::Violation(v))
}

/// Checks a parsed message. `Ok` means process it; `Err` carries the violation, whose
/// [`ParseError::answer`] says what to send.
pub fn validate(msg: &Message, policy: &ValidationPolicy<'_>) -> Result<(), ParseError> {
    if !msg.start.version().eq_ignore_ascii_case(b"SIP/2.0") {
        return fail(Violation::Version);
    }
    for name in [
        HeaderName::To,
        HeaderName::From,
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::Via,
    ] {
        if msg.header(name).is_none() {
            return fail(Violation::MissingHeader(name.as_str()));
        }
    }
    let mut seen: Vec<HeaderName> = Vec::with_capacity(8);
    for h in msg.headers().iter().filter(|h| h.is_single()) {
        if seen.contains(&h.name()) {
            return fail(Violation::DuplicateHeader(h.name().as_str()));
        }
        seen.push(h.name());
    }
    match msg.request_line() {
        Some(_) => validate_request(msg, policy),
        None => validate_response(msg),
    }
}

fn validate_request(msg: &Message, policy: &ValidationPolicy<'_>) -> Result<(), ParseError> {
    let (Some(method), Some(uri), Some(cseq)) = (msg.method(), msg.request_uri(), msg.cseq())
    else {
        return fail(Violation::MissingHeader("CSeq"));
    };
    if &cseq.method != method {
        return fail(Violation::CSeqMethod {
            unknown_method: method.is_extension(),
        });
    }
    if msg
        .top_via()
        .and_then(|v| v.branch())
        .is_some_and(|b| b.as_ref() == MAGIC_COOKIE)
    {
        return fail(Violation::Branch);
    }
    match uri {
        Uri::Sip(sip) if !sip.headers.is_empty() => return fail(Violation::UriHeaders),
        Uri::Sip(_) | Uri::Tel(_) => {}
        Uri::Other(_) => return fail(Violation::UriScheme),
    }
    // §8.2.2.3 / §16.3 step 6: unknown extensions the sender requires. Never for ACK and
    // CANCEL, whose answer could not be delivered meaningfully.
    if !matches!(method, Method::Ack | Method::Cancel) {
        let required = match policy.role {
            Role::Proxy => HeaderName::ProxyRequire,
            Role::Uas => HeaderName::Require,
        };
        let unknown: Vec<_> = msg
            .option_tags(required)
            .filter(|t| {
                !policy
                    .supported
                    .iter()
                    .any(|s| t.eq_ignore_ascii_case(s.as_bytes()))
            })
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return fail(Violation::BadExtension(unknown));
        }
    }
    match policy.role {
        Role::Proxy => {
            if msg.max_forwards() == Some(0) {
                return fail(Violation::TooManyHops);
            }
        }
        Role::Uas => check_uas_body(msg, method)?,
    }
    Ok(())
}

/// §8.2.3: an endpoint refuses a body it cannot read, and a request whose Accept rules
/// out what it would answer with. holdfast as an endpoint reads only SDP.
fn check_uas_body(msg: &Message, method: &Method) -> Result<(), ParseError> {
    if !matches!(method, Method::Invite) {
        return Ok(());
    }
    if !msg.body().is_empty() {
        if let Some(ct) = msg.content_type() {
            if !ct.is("application", "sdp") && !ct.is("multipart", "mixed") {
                return fail(Violation::MediaType);
            }
        }
    }
    if let Some(accept) = msg.header(HeaderName::Accept) {
        let ok = accept.raw_value().split(|&b| b == b',').any(|range| {
            let range =
                crate::grammar::trim_lws(range.split(|&b| b == b';').next().unwrap_or_default());
            range.eq_ignore_ascii_case(b"application/sdp")
                || range.eq_ignore_ascii_case(b"application/*")
                || range == b"*/*"
        });
        if !ok && !accept.raw_value().is_empty() {
            return fail(Violation::NotAcceptable);
        }
    }
    Ok(())
}

/// §18.1.2 / RFC 4475 §3.3.10: a response that would travel to a broadcast or
/// unspecified address is dropped.
fn validate_response(msg: &Message) -> Result<(), ParseError> {
    let bad = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.is_broadcast() || a.is_unspecified() || a.is_multicast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    };
    let routed_to_bad = msg.vias().any(|v| {
        v.received()
            .and_then(|h| h.ip())
            .or_else(|| v.host.ip())
            .is_some_and(bad)
    });
    if routed_to_bad {
        return fail(Violation::BroadcastVia);
    }
    Ok(())
}
