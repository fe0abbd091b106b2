//! Responses encoded straight to bytes (RFC 3261 §8.2.6.2), for the answers that are
//! sent and never looked at again: a registrar's challenge and its 200.
//!
//! [`ResponseWriter`] writes the status line, the request's Via, From, To, Call-ID and
//! CSeq fields as they arrived (a To tag added when To has none), the caller's fields,
//! and `Content-Length: 0`: the same bytes as [`Message::response`], fields inserted
//! before its Content-Length, and [`Message::to_bytes`], without building a message
//! and re-parsing every added field on the way.
//!
//! The added fields' values are the caller's own (challenges, contacts it stored from
//! parsed URIs, numbers), never raw peer bytes that could carry a line end.

use bytes::Bytes;
use holdfast_sip::{HeaderName, Message, NameAddr};

/// A response being written: [`new`](Self::new), any [`header`](Self::header)s, then
/// [`finish`](Self::finish).
#[derive(Debug)]
pub struct ResponseWriter {
    status: u16,
    buf: Vec<u8>,
}

/// A response encoded for sending, with its status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedResponse {
    /// The status code.
    pub status: u16,
    /// The bytes to send.
    pub data: Bytes,
}

impl ResponseWriter {
    /// Starts the response to `request`: status line and the copied fields. `to_tag`
    /// is added to To when To has no tag yet.
    pub fn new(request: &Message, status: u16, reason: &str, to_tag: &str) -> ResponseWriter {
        let copied_len: usize = request
            .headers()
            .iter()
            .filter(|h| copied(h.name()))
            .map(|h| h.line().len())
            .sum();
        let mut buf = Vec::with_capacity(copied_len.saturating_add(512));
        buf.extend_from_slice(b"SIP/2.0 ");
        push_number(&mut buf, u64::from(status));
        buf.push(b' ');
        buf.extend_from_slice(reason.as_bytes());
        buf.extend_from_slice(b"\r\n");
        let needs_tag = request.to().and_then(NameAddr::tag).is_none();
        for h in request.headers() {
            match h.name() {
                HeaderName::To if needs_tag => {
                    buf.extend_from_slice(b"To: ");
                    buf.extend_from_slice(h.raw_value());
                    buf.extend_from_slice(b";tag=");
                    buf.extend_from_slice(to_tag.as_bytes());
                    buf.extend_from_slice(b"\r\n");
                }
                name if copied(name) => buf.extend_from_slice(h.line()),
                _ => {}
            }
        }
        ResponseWriter { status, buf }
    }

    /// Adds a field.
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut ResponseWriter {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Adds a field whose value is a number.
    pub fn number(&mut self, name: &str, value: u64) -> &mut ResponseWriter {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        push_number(&mut self.buf, value);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Adds a field whose value is written by `value` straight into the response.
    pub fn header_with(
        &mut self,
        name: &str,
        value: impl FnOnce(&mut Vec<u8>),
    ) -> &mut ResponseWriter {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        value(&mut self.buf);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Ends the response: `Content-Length: 0` and the empty line.
    pub fn finish(mut self) -> EncodedResponse {
        self.buf.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        EncodedResponse {
            status: self.status,
            data: Bytes::from(self.buf),
        }
    }
}

/// The fields a response copies from its request (§8.2.6.2).
fn copied(name: HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
    )
}

/// Appends `n` in decimal.
pub fn push_number(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at = at.saturating_sub(1);
        if let Some(d) = digits.get_mut(at) {
            // `rest % 10` is below 10.
            *d = b'0'.saturating_add(u8::try_from(rest % 10).unwrap_or(0));
        }
        rest /= 10;
        if rest == 0 || at == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(at..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_sip::{parse_datagram, Header, Limits};

    fn request(to: &str, line_end: &str) -> Message {
        let raw = format!(
            "REGISTER sip:example.com SIP/2.0{e}Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1{e}\
v: SIP/2.0/TCP 192.0.2.8;branch=z9hG4bK2{e}Max-Forwards: 70{e}f: <sip:alice@example.com>;tag=1{e}\
{to}{e}Call-ID: abc@192.0.2.7{e}CSeq: 7 REGISTER{e}Contact: <sip:alice@192.0.2.7>{e}\
Content-Length: 0{e}{e}",
            e = line_end
        );
        parse_datagram(Bytes::from(raw), &Limits::default()).unwrap()
    }

    /// What `Message::response`, inserted fields and `to_bytes` give.
    fn by_message(
        req: &Message,
        status: u16,
        reason: &str,
        tag: &str,
        extra: &[(&str, &[u8])],
    ) -> Bytes {
        let mut resp = req.response(status, reason, Some(tag));
        for (name, value) in extra {
            let h = Header::new(name, value).unwrap();
            resp.insert_header(resp.headers().len() - 1, h);
        }
        resp.to_bytes()
    }

    #[test]
    fn writes_what_a_built_message_serializes_to() {
        let extra: [(&str, &[u8]); 3] = [
            (
                "WWW-Authenticate",
                b"Digest realm=\"example.com\", nonce=\"abc\", algorithm=MD5, qop=\"auth\"",
            ),
            ("Contact", b"<sip:alice@192.0.2.7>;expires=3600"),
            ("Date", b"Sat, 13 Nov 2010 23:29:00 GMT"),
        ];
        for to in [
            "To: <sip:alice@example.com>",
            "t: Alice <sip:alice@example.com>;tag=9",
        ] {
            for e in ["\r\n", "\n"] {
                let req = request(to, e);
                for (status, reason) in [(401, "Unauthorized"), (200, "OK")] {
                    let mut w = ResponseWriter::new(&req, status, reason, "77aa");
                    for (name, value) in extra {
                        w.header(name, value);
                    }
                    assert_eq!(
                        w.finish().data,
                        by_message(&req, status, reason, "77aa", &extra),
                        "{to:?} {e:?} {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn numbers_and_written_values() {
        let req = request("To: <sip:a@example.com>", "\r\n");
        let mut w = ResponseWriter::new(&req, 423, "Interval Too Brief", "1");
        w.number("Min-Expires", 60)
            .number("Zero", 0)
            .number("Max", u64::MAX)
            .header_with("Contact", |v| v.extend_from_slice(b"<sip:x>"));
        let text = String::from_utf8(w.finish().data.to_vec()).unwrap();
        assert!(
            text.starts_with("SIP/2.0 423 Interval Too Brief\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nMin-Expires: 60\r\nZero: 0\r\nMax: 18446744073709551615\r\nContact: <sip:x>\r\nContent-Length: 0\r\n\r\n"), "{text}");
        let back = parse_datagram(Bytes::from(text), &Limits::default()).unwrap();
        assert_eq!(
            back.to().and_then(|t| t.tag()).map(|t| &t[..]),
            Some(&b"1"[..])
        );
    }
}
