//! Cuts a TCP, TLS or WebSocket byte stream into messages (RFC 3261 §18.3, RFC 5626
//! §4.4.1), with the same rules as [`parse_datagram`](crate::parse_datagram).
//!
//! - Content-Length is required and parsed with checked arithmetic; a missing,
//!   negative, non-numeric, oversized or conflicting one makes the stream unframeable:
//!   [`FramingError`], close the connection.
//! - A message that frames but does not parse is [`Framed::Invalid`]: answer it and
//!   keep reading.
//! - CRLF CRLF between messages is an RFC 5626 ping: [`Framed::Ping`], answer CRLF.
//!   A lone CRLF (a pong, or RFC 3261 §7.5 padding) is skipped.
//! - What the framer buffers is bounded by [`Limits::max_message_size`]; the result is
//!   the same whatever the chunking of the input.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::error::{FramingError, LimitExceeded, ParseError};
use crate::grammar;
use crate::limits::{Limit, Limits};
use crate::message::Message;
use crate::parser::{self, HeadEnd};

/// One thing the framer cut out of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // moved once from framer to caller; boxing would cost an allocation per message
pub enum Framed {
    /// A well-formed message.
    Message(Message),
    /// A message that framed but did not parse; the stream goes on.
    Invalid {
        /// Why it did not parse.
        error: ParseError,
        /// Its bytes, for answering it.
        raw: Bytes,
    },
    /// An RFC 5626 CRLF CRLF keepalive: answer with a single CRLF.
    Ping,
}

/// The stream framer. Feed it with [`push`](StreamFramer::push) and drain it with
/// [`next`](StreamFramer::next) after each push.
#[derive(Debug)]
pub struct StreamFramer {
    limits: Limits,
    buf: BytesMut,
    /// Where the search for the end of the headers resumes.
    scanned: usize,
    /// The current message's header end, once found.
    head: Option<(HeadEnd, usize)>,
    out: VecDeque<Result<Framed, FramingError>>,
    failed: bool,
}

impl StreamFramer {
    /// A framer that enforces `limits`.
    pub fn new(limits: Limits) -> StreamFramer {
        StreamFramer {
            limits,
            buf: BytesMut::new(),
            scanned: 0,
            head: None,
            out: VecDeque::new(),
            failed: false,
        }
    }

    /// Bytes held for a message not yet complete.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True once the stream failed; the connection must be closed.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// True when a message has started arriving but is not complete (for the "time to
    /// read one message" limit of the I/O layer).
    pub fn in_message(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Adds bytes from the stream and frames every message they complete.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed {
            return;
        }
        let mut keepalive = 0usize;
        let mut data = data;
        while !data.is_empty() {
            // Take no more than the bound allows into the buffer at once, so a large
            // read never grows it past one message.
            let room = self
                .limits
                .max_message_size
                .saturating_add(4)
                .saturating_sub(self.buf.len())
                .max(1);
            let take = room.min(data.len());
            let (now, later) = data.split_at(take);
            self.buf.extend_from_slice(now);
            data = later;
            if let Err(e) = self.frame(&mut keepalive) {
                self.fail(e);
                return;
            }
        }
    }

    /// The next framed item. An `Err` is final: close the connection.
    #[allow(clippy::should_implement_trait)] // a pull API on a mutable framer, not an Iterator
    pub fn next(&mut self) -> Option<Result<Framed, FramingError>> {
        self.out.pop_front()
    }

    fn fail(&mut self, e: FramingError) {
        self.failed = true;
        self.buf = BytesMut::new();
        self.out.push_back(Err(e));
    }

    fn frame(&mut self, keepalive: &mut usize) -> Result<(), FramingError> {
        loop {
            if self.head.is_none() {
                // Between messages: keepalives and stray line ends.
                match self.buf.as_ref() {
                    [] => return Ok(()),
                    [b'\r', b'\n', b'\r', b'\n', ..] => {
                        self.skip_keepalive(4, keepalive)?;
                        self.out.push_back(Ok(Framed::Ping));
                        continue;
                    }
                    [b'\r', b'\n', b'\r'] | [b'\r', b'\n'] | [b'\r'] => return Ok(()),
                    [b'\r', b'\n', ..] => {
                        self.skip_keepalive(2, keepalive)?;
                        continue;
                    }
                    [b'\n', ..] => {
                        self.skip_keepalive(1, keepalive)?;
                        continue;
                    }
                    _ => {}
                }
                let resume = self.scanned.saturating_sub(3);
                match parser::find_head_end(&self.buf, resume) {
                    Some(end) => {
                        if end.blank_start > self.limits.max_head_size {
                            return Err(self.limit(Limit::HeadSize));
                        }
                        let body = self.content_length(end)?;
                        let total = end.body_start.saturating_add(body);
                        if total > self.limits.max_message_size {
                            return Err(self.limit(Limit::MessageSize));
                        }
                        self.head = Some((end, total));
                    }
                    None => {
                        if self.buf.len() > self.limits.max_head_size {
                            return Err(self.limit(Limit::HeadSize));
                        }
                        self.scanned = self.buf.len();
                        return Ok(());
                    }
                }
            }
            let Some((end, total)) = self.head else {
                return Ok(());
            };
            if self.buf.len() < total {
                return Ok(());
            }
            let raw = self.buf.split_to(total).freeze();
            self.head = None;
            self.scanned = 0;
            *keepalive = 0;
            let item = match parser::parse_framed(raw.clone(), end, &self.limits) {
                Ok(m) => Framed::Message(m),
                Err(error) => Framed::Invalid { error, raw },
            };
            self.out.push_back(Ok(item));
        }
    }

    fn skip_keepalive(&mut self, n: usize, keepalive: &mut usize) -> Result<(), FramingError> {
        *keepalive = keepalive.saturating_add(n);
        if *keepalive > self.limits.max_keepalive_bytes {
            return Err(self.limit(Limit::Keepalive));
        }
        let _ = self.buf.split_to(n.min(self.buf.len()));
        Ok(())
    }

    fn limit(&self, limit: Limit) -> FramingError {
        let max = match limit {
            Limit::HeadSize => self.limits.max_head_size,
            Limit::BodySize => self.limits.max_body_size,
            Limit::Keepalive => self.limits.max_keepalive_bytes,
            _ => self.limits.max_message_size,
        };
        FramingError::Limit(LimitExceeded { limit, max })
    }

    /// The body length the header section declares. Every Content-Length field (long or
    /// compact name) must agree; the value must be digits only and fit the limits.
    fn content_length(&self, end: HeadEnd) -> Result<usize, FramingError> {
        let head = self.buf.get(..end.blank_start).unwrap_or_default();
        let mut found: Option<u64> = None;
        for value in content_length_values(head) {
            let n = grammar::parse_u64(grammar::trim_lws(value))
                .ok_or(FramingError::InvalidContentLength)?;
            if found.is_some_and(|prev| prev != n) {
                return Err(FramingError::ConflictingContentLength);
            }
            found = Some(n);
        }
        let n = found.ok_or(FramingError::MissingContentLength)?;
        match usize::try_from(n) {
            Ok(n) if n <= self.limits.max_body_size => Ok(n),
            _ => Err(self.limit(Limit::BodySize)),
        }
    }
}

/// The values of every Content-Length field (long or compact name) in a header
/// section, each running to the end of its field (continuation lines included), so
/// that it is read exactly as the message parser reads it.
fn content_length_values(head: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    // Skip the start line.
    let mut pos = memchr::memchr(b'\n', head).map_or(head.len(), |p| p.saturating_add(1));
    std::iter::from_fn(move || {
        while pos < head.len() {
            let field_start = pos;
            // The field ends at the first line end not followed by white space.
            let mut field_end;
            loop {
                let rest = head.get(pos..).unwrap_or_default();
                field_end =
                    memchr::memchr(b'\n', rest).map_or(head.len(), |p| pos.saturating_add(p));
                pos = field_end.saturating_add(1);
                if !matches!(head.get(pos), Some(b' ' | b'\t')) {
                    break;
                }
            }
            let field = head.get(field_start..field_end).unwrap_or_default();
            let Some(colon) = memchr::memchr(b':', field) else {
                continue;
            };
            let name = grammar::trim_lws(field.get(..colon).unwrap_or_default());
            if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
                return field.get(colon.saturating_add(1)..);
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(chunks: &[&[u8]]) -> Vec<Result<Framed, FramingError>> {
        let mut f = StreamFramer::new(Limits::default());
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(x) = f.next() {
                out.push(x);
            }
        }
        out
    }

    const OPT: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 3\r\n\r\nabc";

    #[test]
    fn frames_pipelined_messages_and_pings() {
        let mut all = Vec::new();
        all.extend_from_slice(b"\r\n\r\n");
        all.extend_from_slice(OPT);
        all.extend_from_slice(b"\r\n");
        all.extend_from_slice(OPT);
        let out = frame_all(&[&all]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], Ok(Framed::Ping));
        assert!(matches!(&out[1], Ok(Framed::Message(m)) if m.body().as_ref() == b"abc"));
        assert!(matches!(&out[2], Ok(Framed::Message(_))));
    }

    #[test]
    fn content_length_errors_are_fatal() {
        for cl in ["18446744073709551615", "-1", "9999999999", "abc", "1 2"] {
            let raw = format!("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: {cl}\r\n\r\n");
            let out = frame_all(&[raw.as_bytes()]);
            assert!(matches!(out.last(), Some(Err(_))), "{cl}: {out:?}");
        }
        let out = frame_all(&[b"OPTIONS sip:a@b SIP/2.0\r\nl: 13\r\nContent-Length: 5\r\n\r\n"]);
        assert_eq!(out, vec![Err(FramingError::ConflictingContentLength)]);
        let out = frame_all(&[b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n"]);
        assert_eq!(out, vec![Err(FramingError::MissingContentLength)]);
    }

    #[test]
    fn waits_for_the_body_and_bounds_the_head() {
        let out = frame_all(&[b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nabc"]);
        assert!(out.is_empty());
        let big = vec![b'a'; Limits::default().max_head_size + 10];
        let out = frame_all(&[&big]);
        assert!(matches!(out.last(), Some(Err(FramingError::Limit(_)))));
    }

    #[test]
    fn keepalive_flood_is_bounded() {
        let flood = b"\r\n".repeat(100_000);
        let out = frame_all(&[&flood]);
        assert!(
            matches!(out.last(), Some(Err(FramingError::Limit(l))) if l.limit == Limit::Keepalive)
        );
    }
}
