//! Answering a request that did not parse (RFC 3261 §8.2, §18.2.1).
//!
//! A response must copy the request's Via, From, To, Call-ID and CSeq. When a request
//! is malformed those headers may be the very thing that failed, so they are copied as
//! raw lines, not re-encoded. The top Via must parse: it is where the answer goes, and
//! without one the request is dropped.

use bytes::Bytes;

use crate::header::HeaderName;
use crate::limits::Limits;
use crate::parser::{find_head_end, leading_line_ends};
use crate::via::{self, Via};

/// A response to an unparsable request, ready to send, and the top Via it answers.
#[derive(Debug, Clone)]
pub struct SalvagedResponse {
    /// The serialized response.
    pub bytes: Bytes,
    /// The request's top Via (where the response goes, with rport / received rules).
    pub top_via: Via,
}

/// Builds `SIP/2.0 <status> <reason>` for the request in `raw`, copying its Via, From,
/// To, Call-ID and CSeq lines as they are, and adding `to_tag` to a To line that has
/// no tag (RFC 3261 §8.2.6.2). `None` when `raw` is not a request or has no readable
/// top Via. The work is bounded by `limits` like the parser's.
pub fn response_to_unparsable(
    raw: &[u8],
    status: u16,
    reason: &str,
    to_tag: &str,
    limits: &Limits,
) -> Option<SalvagedResponse> {
    let raw = raw.get(..raw.len().min(limits.max_message_size))?;
    let raw = raw.get(leading_line_ends(raw)..)?;
    if raw.len() >= 4
        && raw
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        return None;
    }
    let head_end = find_head_end(raw, 0).map_or(raw.len(), |e| e.blank_start);
    let head = raw.get(..head_end.min(limits.max_head_size))?;
    let mut lines = head.split(|&b| b == b'\n');
    lines.next()?;
    let mut out = format!("SIP/2.0 {status} {reason}\r\n").into_bytes();
    let mut top_via: Option<Via> = None;
    let mut copied = 0usize;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = crate::grammar::trim_lws(line.get(..colon).unwrap_or_default());
        let keep = matches!(
            HeaderName::from_bytes(name),
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
        );
        if !keep || line.iter().any(|&b| b == b'\r' || b == 0) {
            continue;
        }
        copied = copied.saturating_add(1);
        if copied > limits.max_headers {
            return None;
        }
        if top_via.is_none() && HeaderName::from_bytes(name) == HeaderName::Via {
            let value = Bytes::copy_from_slice(crate::grammar::trim_lws(
                line.get(colon.saturating_add(1)..).unwrap_or_default(),
            ));
            top_via = via::parse_list(&value).and_then(|v| v.into_iter().next());
            top_via.as_ref()?;
        }
        out.extend_from_slice(line);
        if HeaderName::from_bytes(name) == HeaderName::To && !has_tag(line) {
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(to_tag.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(SalvagedResponse {
        bytes: Bytes::from(out),
        top_via: top_via?,
    })
}

/// True when a raw To line carries a tag parameter (outside any quoted display name).
fn has_tag(line: &[u8]) -> bool {
    let mut quoted = false;
    let mut angle = false;
    let lower: Vec<u8> = line.iter().map(u8::to_ascii_lowercase).collect();
    for (i, &b) in lower.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b';' if !quoted && !angle => {
                let rest = lower.get(i.saturating_add(1)..).unwrap_or_default();
                let rest = crate::grammar::trim_lws(rest);
                if rest.starts_with(b"tag") {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_raw_lines() {
        let raw = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKx\r\nCSeq: 99999999999999 INVITE\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c1\r\nX: y\r\n\r\n";
        let r = response_to_unparsable(raw, 400, "Bad CSeq", "t1", &Limits::default()).unwrap();
        let text = String::from_utf8(r.bytes.to_vec()).unwrap();
        assert!(text.starts_with("SIP/2.0 400 Bad CSeq\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKx\r\nCSeq: 99999999999999 INVITE\r\n"));
        assert!(!text.contains("X: y"));
        assert!(text.contains("To: <sip:a@b>;tag=t1\r\n"));
        assert!(text.contains("From: <sip:x@y>;tag=1\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        assert_eq!(r.top_via.port, Some(5070));
    }

    #[test]
    fn no_via_no_answer() {
        assert!(response_to_unparsable(
            b"INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n",
            400,
            "x",
            "t",
            &Limits::default()
        )
        .is_none());
        assert!(response_to_unparsable(
            b"INVITE sip:a@b SIP/2.0\r\nVia: garbage\r\n\r\n",
            400,
            "x",
            "t",
            &Limits::default()
        )
        .is_none());
        assert!(response_to_unparsable(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n",
            400,
            "x",
            "t",
            &Limits::default()
        )
        .is_none());
    }
}
