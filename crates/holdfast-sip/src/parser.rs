//! The message parser shared by datagrams and streams (RFC 3261 §7, §18.3, §25).
//!
//! One pass over the header section: split lines (CRLF, or a bare LF as many devices
//! send), join folds, slice each field, type the core headers. Every limit is checked
//! before anything it guards is allocated.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::error::{LimitExceeded, Malformed, ParseError};
use crate::grammar::{self, slice, Span};
use crate::header::{check_value, Header, HeaderName, Method};
use crate::limits::{Limit, Limits};
use crate::message::{Message, RequestLine, StartLine, StatusLine};
use crate::uri::{scan_uri, UriShape};

fn limit(limit: Limit, max: usize) -> ParseError {
    ParseError::Limit(LimitExceeded { limit, max })
}

/// Where the header section ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadEnd {
    /// Offset of the empty line that closes the headers.
    pub(crate) blank_start: usize,
    /// Offset of the first body byte.
    pub(crate) body_start: usize,
}

/// Finds the empty line that ends the header section, starting the search at `from`
/// (a resumption point that must be at a line start or before the last line end seen).
/// `None` when `buf` does not hold it yet.
pub(crate) fn find_head_end(buf: &[u8], from: usize) -> Option<HeadEnd> {
    let mut pos = from;
    loop {
        let nl = pos.checked_add(memchr::memchr(b'\n', buf.get(pos..)?)?)?;
        let after = nl.checked_add(1)?;
        match buf.get(after) {
            Some(b'\n') => {
                return Some(HeadEnd {
                    blank_start: after,
                    body_start: after.checked_add(1)?,
                })
            }
            Some(b'\r') if buf.get(after.checked_add(1)?) == Some(&b'\n') => {
                return Some(HeadEnd {
                    blank_start: after,
                    body_start: after.checked_add(2)?,
                })
            }
            _ => pos = after,
        }
    }
}

/// Number of leading CR and LF bytes (RFC 3261 §7.5: ignored before a start line).
pub(crate) fn leading_line_ends(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// Parses one UDP datagram. Bytes after the body that Content-Length declares are
/// ignored (RFC 4475 §3.1.1.8); a Content-Length larger than the datagram is an error
/// (§18.3); without Content-Length the body runs to the end of the datagram.
pub fn parse_datagram(mut data: Bytes, limits: &Limits) -> Result<Message, ParseError> {
    if data.len() > limits.max_message_size {
        return Err(limit(Limit::MessageSize, limits.max_message_size));
    }
    let skip = leading_line_ends(&data);
    if skip > 0 {
        data = data.slice(skip..);
    }
    if data.is_empty() {
        return Err(Malformed::Empty.into());
    }
    // The header loop finds the blank line itself. A head over its limit is refused
    // before anything else is said about it, as if it had been measured first.
    let head = match parse_head(&data, limits) {
        Ok(parsed) => parsed,
        Err(e) => {
            let head_len = find_head_end(&data, 0).map_or(data.len(), |e| e.blank_start);
            if head_len > limits.max_head_size {
                return Err(limit(Limit::HeadSize, limits.max_head_size));
            }
            return Err(e);
        }
    };
    let head_len = head.end.map_or(data.len(), |e| e.blank_start);
    if head_len > limits.max_head_size {
        return Err(limit(Limit::HeadSize, limits.max_head_size));
    }
    let Some(end) = head.end else {
        // The datagram ends inside the headers. RFC 5118 §4.10 asks elements to
        // tolerate this; there is no body then, and Content-Length must not say
        // otherwise.
        if head.content_length.unwrap_or(0) != 0 {
            return Err(Malformed::Unterminated.into());
        }
        return Ok(head.into_message(Bytes::new(), Bytes::new(), data));
    };
    let blank = data.slice(end.blank_start..end.body_start);
    let available = data.len().saturating_sub(end.body_start);
    let body_len = match head.content_length {
        Some(declared) => {
            let declared_len = usize::try_from(declared).ok().filter(|&n| n <= available);
            declared_len.ok_or(Malformed::Truncated {
                declared,
                available,
            })?
        }
        None => available,
    };
    if body_len > limits.max_body_size {
        return Err(limit(Limit::BodySize, limits.max_body_size));
    }
    let msg_end = end.body_start.saturating_add(body_len);
    let body = if body_len > 0 {
        data.slice(end.body_start..msg_end)
    } else {
        Bytes::new()
    };
    if msg_end < data.len() {
        data.truncate(msg_end);
    }
    Ok(head.into_message(blank, body, data))
}

/// Parses a message whose bytes are exactly head + blank line + body, as the stream
/// framer cuts them.
pub(crate) fn parse_framed(
    data: Bytes,
    end: HeadEnd,
    limits: &Limits,
) -> Result<Message, ParseError> {
    let head = parse_head(&data, limits)?;
    let blank = data.slice(end.blank_start..end.body_start);
    let body = if end.body_start < data.len() {
        data.slice(end.body_start..)
    } else {
        Bytes::new()
    };
    Ok(head.into_message(blank, body, data))
}

/// What [`parse_head`] read: the message less its blank line and body.
struct Head {
    start: Start,
    start_raw: Bytes,
    headers: Vec<Header>,
    content_length: Option<u64>,
    /// Where the blank line is, if there is one.
    end: Option<HeadEnd>,
}

impl Head {
    fn into_message(self, blank: Bytes, body: Bytes, original: Bytes) -> Message {
        Message {
            start: self.start.build(&original),
            start_raw: self.start_raw,
            headers: self.headers,
            blank,
            body,
            original: Some(original),
        }
    }
}

/// Parses the start line and header fields of `data`, up to the blank line that ends
/// them (or the end of `data`). A head longer than [`Limits::max_head_size`] is
/// refused as soon as the loop passes the limit.
fn parse_head(data: &Bytes, limits: &Limits) -> Result<Head, ParseError> {
    let bytes: &[u8] = data;
    let first_nl = memchr::memchr(b'\n', bytes);
    let start_end = first_nl.map_or(bytes.len(), |p| p.saturating_add(1));
    if start_end > limits.max_header_line {
        return Err(limit(Limit::HeaderLine, limits.max_header_line));
    }
    let start = parse_start_line(data, start_end)?;
    let start_raw = data.slice(..start_end);

    let mut headers = Vec::with_capacity(limits.max_headers.min(16));
    let mut folds = 0usize;
    let mut vias = 0usize;
    let mut content_length: Option<u64> = None;

    let mut pos = start_end;
    let end = loop {
        // `pos` is at the start of a line: the blank line, or a field.
        match bytes.get(pos) {
            None => break None,
            Some(b'\n') => {
                break Some(HeadEnd {
                    blank_start: pos,
                    body_start: pos.saturating_add(1),
                })
            }
            Some(b'\r') if bytes.get(pos.saturating_add(1)) == Some(&b'\n') => {
                break Some(HeadEnd {
                    blank_start: pos,
                    body_start: pos.saturating_add(2),
                })
            }
            Some(_) => {}
        }
        // This line belongs to the head, so the head is longer than `pos`.
        if pos >= limits.max_head_size {
            return Err(limit(Limit::HeadSize, limits.max_head_size));
        }
        if headers.len() >= limits.max_headers {
            return Err(limit(Limit::Headers, limits.max_headers));
        }
        // One field: its first line and every continuation line after it. A line ends
        // at LF; a CR must be part of a CRLF. Positions only move over bytes that
        // exist, so they cannot overflow.
        let field_start = pos;
        let name_end = token_end(bytes, pos);
        let mut bare_cr = false;
        // Where the last line's content ends (before its CRLF or LF).
        let mut content_end;
        pos = name_end;
        loop {
            match memchr::memchr2(b'\r', b'\n', bytes.get(pos..).unwrap_or_default()) {
                Some(p) => {
                    let at = pos.wrapping_add(p);
                    content_end = at;
                    pos = at.wrapping_add(1);
                    if bytes.get(at) == Some(&b'\r') {
                        if bytes.get(pos) != Some(&b'\n') {
                            bare_cr = true;
                            continue;
                        }
                        pos = pos.wrapping_add(1);
                    }
                }
                None => {
                    pos = bytes.len();
                    content_end = pos;
                }
            }
            if !matches!(bytes.get(pos), Some(b' ' | b'\t')) {
                break;
            }
            folds = folds.saturating_add(1);
            if folds > limits.max_folds {
                return Err(limit(Limit::Folds, limits.max_folds));
            }
        }
        let field_len = pos.wrapping_sub(field_start);
        if field_len > limits.max_header_line {
            return Err(limit(Limit::HeaderLine, limits.max_header_line));
        }
        let (value_start, value_end) =
            split_field(bytes, field_start, name_end, content_end, bare_cr)?;
        let name = HeaderName::from_bytes(bytes.get(field_start..name_end).unwrap_or_default());
        let value = bytes.get(value_start..value_end).unwrap_or_default();
        let checked = check_value(name, value).ok_or(Malformed::Header(name.as_str()))?;
        // Offsets into the field are u32: all fit when the field's length does.
        if u32::try_from(field_len).is_err() {
            return Err(Malformed::HeaderLine.into());
        }
        let offset = |n: usize| n.wrapping_sub(field_start) as u32;
        let header = Header {
            name,
            name_end: offset(name_end),
            value_start: offset(value_start),
            value_end: offset(value_end),
            line: data.slice(field_start..pos),
            value: OnceLock::new(),
        };
        if checked.vias > 0 {
            vias = vias.saturating_add(checked.vias);
            if vias > limits.max_vias {
                return Err(limit(Limit::Vias, limits.max_vias));
            }
        }
        if let Some(n) = checked.content_length {
            // Two different Content-Length values cannot both frame the message
            // (RFC 4475 §3.3.9).
            if content_length.is_some_and(|prev| prev != n) {
                return Err(Malformed::Header("Content-Length").into());
            }
            content_length = Some(n);
        }
        headers.push(header);
    };
    Ok(Head {
        start,
        start_raw,
        headers,
        content_length,
        end,
    })
}

/// Where the token that starts at `pos` ends.
#[inline(always)]
fn token_end(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(&b) = bytes.get(pos) {
        if !grammar::is_token(b) {
            break;
        }
        pos = pos.wrapping_add(1);
    }
    pos
}

/// Checks the field that starts at `start`, whose name runs to `name_end` and whose
/// last line's content ends at `content_end`, and finds its value without surrounding
/// LWS.
#[inline(always)]
fn split_field(
    bytes: &[u8],
    start: usize,
    name_end: usize,
    content_end: usize,
    bare_cr: bool,
) -> Result<(usize, usize), Malformed> {
    // `field-name HCOLON`: a token, white space, the colon. The usual field has the
    // colon right after the name.
    let mut colon = name_end;
    if bytes.get(colon) != Some(&b':') || name_end == start {
        if matches!(bytes.get(start), Some(b' ' | b'\t')) && content_end > start {
            // A continuation line with no field before it.
            return Err(Malformed::Folding);
        }
        // Within the field, a CR must be part of a CRLF (the line splitter already
        // made every line break inside it a fold).
        if bare_cr {
            return Err(Malformed::Folding);
        }
        while matches!(bytes.get(colon), Some(b' ' | b'\t')) {
            colon = colon.wrapping_add(1);
        }
        if name_end == start || colon >= content_end || bytes.get(colon) != Some(&b':') {
            return Err(Malformed::HeaderLine);
        }
    } else if bare_cr {
        return Err(Malformed::Folding);
    }
    let mut value_start = colon.wrapping_add(1);
    while value_start < content_end && bytes.get(value_start).copied().is_some_and(grammar::is_lws)
    {
        value_start = value_start.wrapping_add(1);
    }
    let mut value_end = content_end;
    while value_end > value_start
        && bytes
            .get(value_end.wrapping_sub(1))
            .copied()
            .is_some_and(grammar::is_lws)
    {
        value_end = value_end.wrapping_sub(1);
    }
    Ok((value_start, value_end))
}

/// The end of a line's content: before its CRLF or LF.
fn line_content_end(line: &[u8]) -> usize {
    match line {
        [.., b'\r', b'\n'] => line.len().saturating_sub(2),
        [.., b'\n'] => line.len().saturating_sub(1),
        _ => line.len(),
    }
}

fn is_version(v: &[u8]) -> bool {
    // SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT
    let Some(rest) = v
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case(b"SIP/"))
        .and_then(|_| v.get(4..))
    else {
        return false;
    };
    let mut parts = rest.splitn(2, |&b| b == b'.');
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    !major.is_empty()
        && !minor.is_empty()
        && major.len() <= 9
        && minor.len() <= 9
        && major.iter().chain(minor).all(u8::is_ascii_digit)
}

/// Parses the start line `data[..raw_end]` (line end included).
fn parse_start_line(data: &Bytes, raw_end: usize) -> Result<Start, ParseError> {
    let raw = data.get(..raw_end).unwrap_or_default();
    let line_end = line_content_end(raw);
    let line = raw.get(..line_end).unwrap_or_default();
    if memchr::memchr(b'\r', line).is_some() {
        return Err(Malformed::StartLine.into());
    }
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = memchr::memchr(b' ', line).ok_or(Malformed::StartLine)?;
        if !is_version(line.get(..sp).unwrap_or_default()) {
            return Err(Malformed::Version.into());
        }
        let code = line
            .get(sp.saturating_add(1)..sp.saturating_add(4))
            .ok_or(Malformed::StatusCode)?;
        let code = grammar::parse_u32(code)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (100..=699).contains(c))
            .ok_or(Malformed::StatusCode)?;
        if line.get(sp.saturating_add(4)) != Some(&b' ') {
            return Err(Malformed::StatusCode.into());
        }
        return Ok(Start::Response {
            version: (0, sp),
            code,
            reason: (sp.saturating_add(5), line_end),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly one SP each.
    let sp1 = memchr::memchr(b' ', line).ok_or(Malformed::StartLine)?;
    let sp2 = memchr::memrchr(b' ', line).ok_or(Malformed::StartLine)?;
    if sp2 <= sp1 {
        return Err(Malformed::StartLine.into());
    }
    let method = Method::from_span(data, (0, sp1)).ok_or(Malformed::Method)?;
    let version = (sp2.saturating_add(1), line_end);
    if !is_version(line.get(version.0..version.1).unwrap_or_default()) {
        return Err(Malformed::Version.into());
    }
    let uri = (sp1.saturating_add(1), sp2);
    let shape =
        scan_uri(line.get(uri.0..uri.1).unwrap_or_default()).map_err(Malformed::RequestUri)?;
    Ok(Start::Request {
        method,
        uri,
        shape,
        version,
    })
}

/// A checked start line, built into a [`StartLine`] where the message is assembled
/// (so that the large value is written once, not moved through the parse).
enum Start {
    Request {
        method: Method,
        uri: Span,
        shape: UriShape,
        version: Span,
    },
    Response {
        version: Span,
        code: u16,
        reason: Span,
    },
}

impl Start {
    fn build(self, data: &Bytes) -> StartLine {
        match self {
            Start::Request {
                method,
                uri,
                shape,
                version,
            } => StartLine::Request(RequestLine {
                method,
                uri: shape.build(slice(data, uri)),
                version: slice(data, version),
            }),
            Start::Response {
                version,
                code,
                reason,
            } => StartLine::Response(StatusLine {
                version: slice(data, version),
                code,
                reason: slice(data, reason),
            }),
        }
    }
}

impl Header {
    /// True when this field is one RFC 3261 allows only once per message.
    pub(crate) fn is_single(&self) -> bool {
        matches!(
            self.name,
            HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::MaxForwards
                | HeaderName::ContentLength
                | HeaderName::ContentType
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    #[test]
    fn parses_and_serializes_exactly() {
        let m = parse_datagram(Bytes::from_static(INVITE), &Limits::default()).unwrap();
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.headers().len(), 9);
        assert_eq!(m.cseq().unwrap().seq, 314159);
        assert_eq!(m.body().as_ref(), b"v=0\n");
        assert_eq!(m.to_bytes().as_ref(), INVITE);
        let mut copy = m.clone();
        copy.original = None;
        assert_eq!(copy.to_bytes().as_ref(), INVITE);
    }

    #[test]
    fn head_end() {
        assert_eq!(
            find_head_end(b"A\r\nB: c\r\n\r\nbody", 0),
            Some(HeadEnd {
                blank_start: 9,
                body_start: 11
            })
        );
        assert_eq!(
            find_head_end(b"A\nB: c\n\nbody", 0),
            Some(HeadEnd {
                blank_start: 7,
                body_start: 8
            })
        );
        assert_eq!(find_head_end(b"A\r\nB: c\r\n\r", 0), None);
    }

    #[test]
    fn status_lines() {
        let l = Limits::default();
        let m = parse_datagram(
            Bytes::from_static(b"SIP/2.0 100 \r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n"),
            &l,
        )
        .unwrap();
        assert_eq!(m.status(), Some(100));
        for bad in [
            &b"SIP/2.0 4294967301 Huge\r\n\r\n"[..],
            b"SIP/2.0 99 Low\r\n\r\n",
            b"SIP/2.0 700 High\r\n\r\n",
            b"SIP/2.0 2000 x\r\n\r\n",
        ] {
            assert!(parse_datagram(Bytes::copy_from_slice(bad), &l).is_err());
        }
    }

    #[test]
    fn limits_are_enforced() {
        let l = Limits {
            max_headers: 5,
            ..Limits::default()
        };
        assert!(matches!(
            parse_datagram(Bytes::from_static(INVITE), &l),
            Err(ParseError::Limit(LimitExceeded {
                limit: Limit::Headers,
                ..
            }))
        ));
        let l = Limits {
            max_message_size: 100,
            ..Limits::default()
        };
        assert!(matches!(
            parse_datagram(Bytes::from_static(INVITE), &l),
            Err(ParseError::Limit(LimitExceeded {
                limit: Limit::MessageSize,
                ..
            }))
        ));
    }

    #[test]
    fn content_length_is_checked() {
        let l = Limits::default();
        for cl in [
            "18446744073709551615",
            "-1",
            "9999999999",
            "18446744073709551616",
            "5",
        ] {
            let raw = format!("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: {cl}\r\n\r\nab");
            assert!(parse_datagram(Bytes::from(raw), &l).is_err(), "{cl}");
        }
    }
}
