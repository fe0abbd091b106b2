//! The properties the fuzz targets check, in one copy.
//!
//! Each `fuzz_targets/*.rs` includes this file with `#[path = "../checks.rs"] mod checks;`
//! and calls one function; `crates/holdfast-sip/tests/fuzz_corpus.rs` includes it the
//! same way and runs every file of `fuzz/corpus/<target>/` through the same function on
//! stable. A check returns normally for any input the property holds for (including
//! every input the parser rejects) and panics when it does not.
//!
//! It depends on `holdfast_sip` and `bytes` only, so that both crates can include it.

use bytes::Bytes;
use holdfast_sip::auth::{AuthenticationInfo, Challenge, Credentials};
use holdfast_sip::{
    parse_datagram, response_to_unparsable, validate, Framed, FramingError, Header, HeaderName,
    Limits, Malformed, Message, ParseError, StreamFramer, Uri, ValidationPolicy, Value, Via,
};

/// The headers holdfast gives a typed value.
fn is_typed(name: HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via
            | HeaderName::From
            | HeaderName::To
            | HeaderName::Contact
            | HeaderName::Route
            | HeaderName::RecordRoute
            | HeaderName::Path
            | HeaderName::CallId
            | HeaderName::CSeq
            | HeaderName::ContentLength
            | HeaderName::MaxForwards
            | HeaderName::Expires
            | HeaderName::MinExpires
            | HeaderName::FlowTimer
            | HeaderName::ContentType
            | HeaderName::Supported
            | HeaderName::Require
            | HeaderName::ProxyRequire
            | HeaderName::Unsupported
            | HeaderName::Authorization
            | HeaderName::ProxyAuthorization
            | HeaderName::WwwAuthenticate
            | HeaderName::ProxyAuthenticate
            | HeaderName::AuthenticationInfo
    )
}

/// `datagram`: the parser is total; a message that parses passes through the validator
/// and serializes back into exactly the message it was (RFC 3261 §7, §18.3); one that
/// does not gets a well-formed answer from [`response_to_unparsable`] or none. Every
/// header the parser checked has its typed value (built on first use by the code that
/// checked it), and the re-parsed message has the same typed values.
pub(crate) fn datagram(data: &[u8]) {
    let m = match parse_datagram(Bytes::copy_from_slice(data), &Limits::default()) {
        Ok(m) => m,
        Err(e) => {
            unparsable(data, &e);
            return;
        }
    };
    for h in m.headers() {
        assert!(
            !is_typed(h.name()) || !matches!(h.value(), Value::Raw),
            "a checked {:?} header has no typed value",
            h.name()
        );
    }
    let _ = validate(&m, &ValidationPolicy::PROXY);
    let _ = validate(&m, &ValidationPolicy::UAS);
    let out = m.to_bytes();
    // An unmodified message comes out as a copy of its own bytes: no more (the bytes
    // after the declared body are not part of it) and no less.
    assert!(
        out.len() <= data.len(),
        "serialization grew an unmodified message"
    );
    match parse_datagram(out.clone(), &Limits::default()) {
        Ok(again) => {
            assert_eq!(again, m, "parse(to_bytes(m)) != m");
            assert_eq!(again.to_bytes(), out, "serialization is not a fixed point");
            for (a, b) in again.headers().iter().zip(m.headers()) {
                assert_eq!(a.value(), b.value(), "a typed value changed on re-parsing");
            }
        }
        Err(e) => panic!("to_bytes() of a parsed message does not parse: {e:?}"),
    }
}

/// A datagram that did not parse: the answer to it (RFC 3261 §8.2, §18.2.1) is built
/// from its raw lines without a panic, and is a response no larger than the limits
/// allow the request to be.
fn unparsable(data: &[u8], e: &ParseError) {
    let status = e.answer(true).status().unwrap_or(400);
    let limits = Limits::default();
    let Some(r) = response_to_unparsable(data, status, "Bad Request", "fuzz", &limits) else {
        return;
    };
    assert!(
        r.bytes
            .starts_with(format!("SIP/2.0 {status} Bad Request\r\n").as_bytes()),
        "the salvaged answer is not a status line"
    );
    assert!(
        r.bytes.ends_with(b"\r\n\r\n"),
        "the salvaged answer has no blank line"
    );
    // At most the head, plus per copied line a CR and the To tag, plus the status line
    // and Content-Length.
    let bound = limits.max_head_size + limits.max_headers * (2 + ";tag=fuzz".len()) + 128;
    assert!(
        r.bytes.len() <= bound,
        "the salvaged answer is larger than its bound: {} > {bound} bytes",
        r.bytes.len()
    );
}

/// How the `stream` target cuts its input: the first byte picks a chunk-size pattern,
/// the rest is the stream. Returns the chunk sizes (each at least 1) and the stream.
///
/// The low 4 bits of the first byte are the largest chunk, `2^n` bytes (1 to 32768);
/// the high 4 bits seed a small xorshift generator that draws each size in `1..=max`.
/// So `0x00` feeds one byte at a time, and any byte is a reproducible schedule.
pub(crate) fn stream_chunks(data: &[u8]) -> Option<(Vec<usize>, &[u8])> {
    let (&selector, stream) = data.split_first()?;
    let max = 1usize << (selector & 0x0f);
    let mut state = u32::from(selector >> 4).wrapping_mul(0x9e37_79b9) | 1;
    let mut sizes = Vec::new();
    let mut left = stream.len();
    while left > 0 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (state as usize % max + 1).min(left);
        sizes.push(size);
        left -= size;
    }
    Some((sizes, stream))
}

/// Everything a framer hands out for `stream` pushed in the given chunks, draining
/// after every push.
fn frame_all(stream: &[u8], chunks: &[usize]) -> Vec<Result<Framed, FramingError>> {
    let mut framer = StreamFramer::new(Limits::default());
    let mut out = Vec::new();
    let mut at = 0;
    for &size in chunks {
        framer.push(&stream[at..at + size]);
        at += size;
        while let Some(item) = framer.next() {
            out.push(item);
        }
    }
    assert_eq!(at, stream.len(), "chunks do not cover the stream");
    // Nothing is left behind once the queue is drained.
    assert!(framer.next().is_none());
    out
}

/// `stream`: the framer gives the same items whatever the chunk boundaries, stops at
/// its first error, and every framed message serializes back into bytes that parse to
/// it (RFC 3261 §18.3, RFC 5626 §4.4.1).
pub(crate) fn stream(data: &[u8]) {
    let Some((chunks, stream)) = stream_chunks(data) else {
        return;
    };
    let chunked = frame_all(stream, &chunks);
    let at_once = if stream.is_empty() {
        Vec::new()
    } else {
        vec![stream.len()]
    };
    let whole = frame_all(stream, &at_once);
    assert_eq!(chunked, whole, "the result depends on the chunk boundaries");
    if let Some(i) = whole.iter().position(Result::is_err) {
        assert_eq!(i + 1, whole.len(), "the framer went on after an error");
    }
    let total: usize = whole
        .iter()
        .map(|item| match item {
            Ok(Framed::Message(m)) => m.to_bytes().len(),
            Ok(Framed::Invalid { raw, .. }) => raw.len(),
            Ok(Framed::Ping) | Err(_) => 0,
        })
        .sum();
    assert!(
        total <= stream.len(),
        "the framer handed out more bytes than it got"
    );
    for item in &whole {
        if let Ok(Framed::Message(m)) = item {
            let big = roomy_limits();
            match parse_datagram(m.to_bytes(), &big) {
                Ok(again) => assert_eq!(&again, m, "a framed message does not re-parse to itself"),
                Err(e) => panic!("a framed message does not re-parse: {e:?}"),
            }
        }
    }
}

/// `uri`: a URI that parses is equivalent to itself and parses again from its own bytes
/// into an equal value (RFC 3261 §19.1.4).
pub(crate) fn uri(data: &[u8]) {
    let parsed = Uri::parse(Bytes::copy_from_slice(data));
    request_uri_agrees(data, &parsed);
    let Ok(u) = parsed else {
        return;
    };
    assert!(u.equivalent(&u), "a URI is not equivalent to itself");
    assert_eq!(u.as_bytes().as_ref(), data, "as_bytes() is not the input");
    match Uri::parse(u.as_bytes().clone()) {
        Ok(again) => {
            assert_eq!(again, u, "Uri::parse(as_bytes(u)) != u");
            assert!(again.equivalent(&u) && u.equivalent(&again));
        }
        Err(e) => panic!("as_bytes() of a parsed URI does not parse: {e:?}"),
    }
    let _ = u.to_string();
}

/// A request whose Request-URI is `data` parses exactly when `Uri::parse` accepts it,
/// and fails with its error otherwise (the parser checks the Request-URI with the same
/// grammar before it builds it). Only for bytes that cannot change how the request
/// line splits.
fn request_uri_agrees(data: &[u8], parsed: &Result<Uri, holdfast_sip::UriError>) {
    if data.len() > 4096 || data.iter().any(|&b| matches!(b, b' ' | b'\r' | b'\n')) {
        return;
    }
    let mut request = b"OPTIONS ".to_vec();
    request.extend_from_slice(data);
    request.extend_from_slice(b" SIP/2.0\r\n\r\n");
    let result = parse_datagram(Bytes::from(request), &Limits::default());
    match (parsed, result) {
        (Ok(u), Ok(m)) => assert_eq!(m.request_uri(), Some(u), "the Request-URI differs"),
        (Err(e), Err(ParseError::Malformed(Malformed::RequestUri(r)))) => {
            assert_eq!(*e, r, "the Request-URI error differs")
        }
        (p, r) => panic!("Uri::parse gave {p:?} but the request gave {r:?}"),
    }
}

/// What a field must read back as once written: the writer drops CR and LF (RFC 3261
/// §25.1: a quoted string cannot carry them; a fold becomes the SP it stands for).
fn written(v: &Option<Bytes>) -> Option<Vec<u8>> {
    v.as_ref().map(|b| {
        b.iter()
            .copied()
            .filter(|&c| c != b'\r' && c != b'\n')
            .collect()
    })
}

fn read(v: &Option<Bytes>) -> Option<Vec<u8>> {
    v.as_ref().map(|b| b.to_vec())
}

/// `digest`: the value is parsed as each of the three headers; whatever parses as
/// Digest writes back (`to_header_value`) into a value that parses to the same typed
/// fields, and writing that again gives the same bytes (RFC 3261 §25.1, RFC 7616).
pub(crate) fn digest(data: &[u8]) {
    let value = Bytes::copy_from_slice(data);

    // The parser checks these header values without building them; its verdict must
    // be the typed parser's.
    for (name, parses) in [
        ("Authorization", Credentials::parse(&value).is_ok()),
        ("WWW-Authenticate", Challenge::parse(&value).is_ok()),
        (
            "Authentication-Info",
            AuthenticationInfo::parse(&value).is_ok(),
        ),
    ] {
        assert_eq!(
            Header::new(name, data).is_ok(),
            parses,
            "the {name} check and its parser disagree"
        );
    }

    if let Ok(Credentials::Digest(c)) = Credentials::parse(&value) {
        let out = c.to_header_value();
        let d = match Credentials::parse(&Bytes::from(out.clone())) {
            Ok(Credentials::Digest(d)) => d,
            other => panic!("credentials {out:?} did not parse back: {other:?}"),
        };
        for (name, a, b) in [
            ("username", &c.username, &d.username),
            ("realm", &c.realm, &d.realm),
            ("nonce", &c.nonce, &d.nonce),
            ("uri", &c.uri, &d.uri),
            ("response", &c.response, &d.response),
            ("algorithm", &c.algorithm, &d.algorithm),
            ("cnonce", &c.cnonce, &d.cnonce),
            ("opaque", &c.opaque, &d.opaque),
            ("qop", &c.qop, &d.qop),
        ] {
            assert_eq!(written(a), read(b), "credentials {name} changed");
        }
        assert_eq!(c.nc, d.nc, "credentials nc changed");
        assert_eq!(c.userhash, d.userhash, "credentials userhash changed");
        assert_eq!(c.algorithm_kind(), d.algorithm_kind());
        assert_eq!(
            d.to_header_value(),
            out,
            "credentials writing is not a fixed point"
        );
    }

    if let Ok(Challenge::Digest(c)) = Challenge::parse(&value) {
        let out = c.to_header_value();
        let d = match Challenge::parse(&Bytes::from(out.clone())) {
            Ok(Challenge::Digest(d)) => d,
            other => panic!("challenge {out:?} did not parse back: {other:?}"),
        };
        for (name, a, b) in [
            ("realm", &c.realm, &d.realm),
            ("domain", &c.domain, &d.domain),
            ("nonce", &c.nonce, &d.nonce),
            ("opaque", &c.opaque, &d.opaque),
            ("algorithm", &c.algorithm, &d.algorithm),
        ] {
            assert_eq!(written(a), read(b), "challenge {name} changed");
        }
        assert_eq!(c.qop, d.qop, "challenge qop changed");
        assert_eq!(c.stale, d.stale, "challenge stale changed");
        assert_eq!(c.userhash, d.userhash, "challenge userhash changed");
        assert_eq!(c.algorithm_kind(), d.algorithm_kind());
        assert_eq!(
            d.to_header_value(),
            out,
            "challenge writing is not a fixed point"
        );
    }

    if let Ok(a) = AuthenticationInfo::parse(&value) {
        let out = a.to_header_value();
        let d = match AuthenticationInfo::parse(&Bytes::from(out.clone())) {
            Ok(d) => d,
            Err(e) => panic!("authentication-info {out:?} did not parse back: {e:?}"),
        };
        for (name, x, y) in [
            ("nextnonce", &a.nextnonce, &d.nextnonce),
            ("qop", &a.qop, &d.qop),
            ("rspauth", &a.rspauth, &d.rspauth),
            ("cnonce", &a.cnonce, &d.cnonce),
        ] {
            assert_eq!(written(x), read(y), "authentication-info {name} changed");
        }
        assert_eq!(a.nc, d.nc, "authentication-info nc changed");
        assert_eq!(
            d.to_header_value(),
            out,
            "authentication-info writing is not a fixed point"
        );
    }
}

/// Limits for re-parsing what a proxy wrote: the edits add a Via, a Record-Route and a
/// Max-Forwards and may lengthen a rewritten Route or Via line, so every bound is
/// raised well above the defaults the input was held to.
fn roomy_limits() -> Limits {
    let d = Limits::default();
    Limits {
        max_message_size: d.max_message_size * 4,
        max_head_size: d.max_head_size * 4,
        max_headers: d.max_headers * 4,
        max_header_line: d.max_header_line * 4,
        max_vias: d.max_vias * 4,
        max_folds: d.max_folds * 4,
        max_body_size: d.max_body_size * 4,
        max_keepalive_bytes: d.max_keepalive_bytes,
    }
}

/// The parts of a message a proxy's edits touch.
fn proxy_view(
    m: &Message,
) -> (
    Vec<Via>,
    Vec<holdfast_sip::NameAddr>,
    Vec<holdfast_sip::NameAddr>,
    Option<u32>,
) {
    (
        m.vias().cloned().collect(),
        m.routes().cloned().collect(),
        m.record_routes().cloned().collect(),
        m.max_forwards(),
    )
}

/// `roundtrip`: the proxy edits of RFC 3261 §16.6 and §16.7 on a parsed message give
/// bytes that parse back into the same Vias, Routes, Record-Routes and Max-Forwards.
pub(crate) fn roundtrip(data: &[u8]) {
    let Ok(mut m) = parse_datagram(Bytes::copy_from_slice(data), &Limits::default()) else {
        return;
    };
    let via = Via::new("UDP", "192.0.2.1:5060", "z9hG4bKfuzz").expect("the fuzz Via parses");
    let vias_before = m.vias().count();
    m.push_via(&via);
    assert_eq!(
        m.top_via(),
        Some(&via),
        "push_via did not put the Via on top"
    );
    assert_eq!(m.vias().count(), vias_before + 1);
    assert_eq!(
        m.pop_via().as_ref(),
        Some(&via),
        "pop_via did not return the pushed Via"
    );
    assert_eq!(m.vias().count(), vias_before);
    m.push_record_route(b"<sip:192.0.2.1;lr>")
        .expect("the fuzz Record-Route parses");
    let before = m.max_forwards();
    let after = m.decrement_max_forwards();
    match before {
        Some(0) => assert_eq!(after, None),
        Some(n) => assert_eq!(after, Some(n - 1)),
        None => assert_eq!(after, Some(70)),
    }
    assert_eq!(m.max_forwards(), after.or(before));
    let routes_before = m.routes().count();
    let popped = m.pop_route();
    assert_eq!(
        m.routes().count(),
        routes_before - usize::from(popped.is_some()),
        "pop_route removed the wrong number of values"
    );

    let out = m.to_bytes();
    let again = match parse_datagram(out.clone(), &roomy_limits()) {
        Ok(again) => again,
        Err(e) => panic!("the edited message does not re-parse: {e:?}\n{out:?}"),
    };
    assert_eq!(
        proxy_view(&again),
        proxy_view(&m),
        "the edits did not survive a re-parse"
    );
    assert_eq!(again.start_line(), m.start_line());
    assert_eq!(again.body(), m.body());
    // A field an edit built holds the typed value its bytes parse to (header equality
    // relies on it).
    assert_eq!(again.headers().len(), m.headers().len());
    for (a, b) in again.headers().iter().zip(m.headers()) {
        assert_eq!(
            a.value(),
            b.value(),
            "an edited field's typed value is not its bytes'"
        );
    }
}
