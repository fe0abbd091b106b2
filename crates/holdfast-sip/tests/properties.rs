//! Property tests: generated messages round-trip through serialize and parse, proxy
//! edits touch only what they change, and the stream framer gives the same result
//! whatever the chunking.

use std::path::PathBuf;

use bytes::Bytes;
use holdfast_sip::{parse_datagram, Framed, FramingError, Limits, Message, StreamFramer, Uri, Via};
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,12}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

fn sip_uri() -> impl Strategy<Value = String> {
    (
        prop::bool::ANY,
        prop::option::of("[a-zA-Z0-9_.!~*'()&=+$,;?/-]{1,12}"),
        host(),
        prop::option::of(any::<u16>()),
        prop::collection::vec(
            (
                "[a-zA-Z0-9][a-zA-Z0-9.!*_+'~-]{0,12}",
                prop::option::of("[a-zA-Z0-9_.-]{1,8}"),
            ),
            0..3,
        ),
    )
        .prop_map(|(secure, user, host, port, params)| {
            let mut s = String::from(if secure { "sips:" } else { "sip:" });
            if let Some(u) = user {
                s.push_str(&u);
                s.push('@');
            }
            s.push_str(&host);
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            for (n, v) in params {
                s.push(';');
                s.push_str(&n);
                if let Some(v) = v {
                    s.push('=');
                    s.push_str(&v);
                }
            }
            s
        })
}

fn lws() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(""), Just(" "), Just("  "), Just("\r\n "), Just("\t")]
}

fn name_addr() -> impl Strategy<Value = String> {
    (
        prop::option::of("[a-zA-Z ]{1,10}"),
        sip_uri(),
        prop::option::of(token()),
        lws(),
    )
        .prop_map(|(display, uri, tag, ws)| {
            let mut s = match display {
                Some(d) => format!("\"{d}\"{ws}<{uri}>"),
                None => format!("<{uri}>"),
            };
            if let Some(t) = tag {
                s.push_str(&format!("{ws};{ws}tag={ws}{t}"));
            }
            s
        })
}

fn via() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("UDP"),
            Just("TCP"),
            Just("TLS"),
            Just("WS"),
            Just("SCTP")
        ],
        host(),
        prop::option::of(any::<u16>()),
        token(),
        prop::bool::ANY,
        lws(),
    )
        .prop_map(|(t, h, p, branch, rport, ws)| {
            let port = p.map(|p| format!(":{p}")).unwrap_or_default();
            let rport = if rport { ";rport" } else { "" };
            format!("SIP{ws}/2.0/{t} {h}{port}{ws};branch=z9hG4bK{branch}{rport}")
        })
}

fn header_name(long: &'static str, short: &'static str) -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(long), Just(short)]
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::bool::ANY,
        prop_oneof![
            Just("INVITE"),
            Just("REGISTER"),
            Just("OPTIONS"),
            Just("BYE"),
            Just("NEWMETHOD")
        ],
        sip_uri(),
        100u16..700,
        prop::collection::vec(via(), 1..4),
        (
            name_addr(),
            name_addr(),
            "[a-zA-Z0-9.@-]{1,20}",
            any::<u32>(),
            prop::option::of(0u32..=255),
        ),
        prop::collection::vec(name_addr(), 0..3),
        prop::collection::vec(("X-[a-zA-Z0-9-]{1,10}", "[ -~]{0,30}"), 0..4),
        prop::collection::vec(any::<u8>(), 0..200),
        (
            header_name("Via", "v"),
            header_name("Content-Length", "l"),
            header_name("Contact", "m"),
        ),
        prop::bool::ANY,
    )
        .prop_map(
            |(
                is_request,
                method,
                uri,
                code,
                vias,
                (from, to, call_id, seq, mf),
                contacts,
                extra,
                body,
                names,
                crlf,
            )| {
                let eol = if crlf { "\r\n" } else { "\n" };
                let mut s = if is_request {
                    format!("{method} {uri} SIP/2.0{eol}")
                } else {
                    format!("SIP/2.0 {code} Some Reason{eol}")
                };
                // Several values on one Via line, or one line each.
                if vias.len() > 1 && crlf {
                    s.push_str(&format!("{}: {}{eol}", names.0, vias.join(", ")));
                } else {
                    for v in &vias {
                        s.push_str(&format!("{}: {v}{eol}", names.0));
                    }
                }
                s.push_str(&format!(
                    "From: {from}{eol}To: {to}{eol}Call-ID: {call_id}{eol}"
                ));
                s.push_str(&format!("CSeq: {seq} {method}{eol}"));
                if let Some(mf) = mf {
                    s.push_str(&format!("Max-Forwards: {mf}{eol}"));
                }
                if !contacts.is_empty() {
                    s.push_str(&format!("{}: {}{eol}", names.2, contacts.join(",")));
                }
                for (n, v) in &extra {
                    s.push_str(&format!("{n}: {}{eol}", v.trim()));
                }
                s.push_str(&format!("{}: {}{eol}{eol}", names.1, body.len()));
                let mut bytes = s.into_bytes();
                bytes.extend_from_slice(&body);
                bytes
            },
        )
}

fn reparse(m: &Message) -> Message {
    parse_datagram(m.to_bytes(), &Limits::default()).expect("serialized message must parse")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn generated_messages_round_trip(raw in message()) {
        let m = parse_datagram(Bytes::from(raw.clone()), &Limits::default()).expect("generated message parses");
        let out = m.to_bytes();
        prop_assert_eq!(out.as_ref(), &raw[..]);
        prop_assert_eq!(reparse(&m), m.clone());
        // The same through the stream framer.
        let mut f = StreamFramer::new(Limits::default());
        f.push(&raw);
        prop_assert_eq!(f.next(), Some(Ok(Framed::Message(m))));
        prop_assert_eq!(f.next(), None);
    }

    #[test]
    fn proxy_edits_round_trip(raw in message(), uri in sip_uri()) {
        let mut m = parse_datagram(Bytes::from(raw), &Limits::default()).unwrap();
        let vias_before: Vec<Bytes> = m.vias().map(|v| v.as_bytes().clone()).collect();
        let own = Via::new("UDP", "192.0.2.1:5060", "z9hG4bKedit").unwrap();
        m.push_via(&own);
        let top = reparse(&m).top_via().unwrap().clone();
        prop_assert_eq!(top.as_bytes(), own.as_bytes());
        let popped = m.pop_via().unwrap();
        prop_assert_eq!(popped.as_bytes(), own.as_bytes());
        let popped = m.pop_via().unwrap();
        prop_assert_eq!(popped.as_bytes(), &vias_before[0]);
        let after: Vec<Bytes> = reparse(&m).vias().map(|v| v.as_bytes().clone()).collect();
        prop_assert_eq!(&after[..], &vias_before[1..]);
        m.push_record_route(b"<sip:192.0.2.1;lr>").unwrap();
        let mf = m.max_forwards();
        let next = m.decrement_max_forwards();
        prop_assert_eq!(next, match mf { Some(0) => None, Some(n) => Some(n - 1), None => Some(70) });
        if m.is_request() {
            m.set_request_uri(Uri::parse(Bytes::from(uri)).unwrap());
        }
        let again = reparse(&m);
        prop_assert_eq!(&again, &m);
        prop_assert_eq!(again.record_routes().next().unwrap().as_bytes().as_ref(), b"<sip:192.0.2.1;lr>");
    }

    #[test]
    fn random_chunking_of_concatenated_messages(picks in prop::collection::vec(0usize..1000, 1..8), cuts in prop::collection::vec(1usize..400, 1..64)) {
        let files = stream_corpus();
        let mut all = Vec::new();
        for p in &picks {
            all.extend_from_slice(&files[p % files.len()]);
            if p % 3 == 0 {
                all.extend_from_slice(b"\r\n\r\n");
            }
        }
        let whole = frame_chunks(&all, &[all.len()]);
        prop_assert!(whole.len() >= picks.len());
        prop_assert_eq!(frame_chunks(&all, &cuts), whole);
    }
}

/// Corpus files that frame on a stream: the RFC 4475 files with a correct
/// Content-Length, and the CRLF copies of RFC 5118 whose Content-Length is right.
fn stream_corpus() -> Vec<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let mut out = Vec::new();
    for dir in ["rfc4475", "rfc5118/wire"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "dat"))
            .collect();
        entries.sort();
        for p in entries {
            let raw = std::fs::read(&p).unwrap();
            let mut f = StreamFramer::new(Limits::default());
            f.push(&raw);
            let one: Vec<_> = std::iter::from_fn(|| f.next()).collect();
            // Only files that frame into one item with no bytes left over.
            if matches!(one.as_slice(), [Ok(_)]) && f.buffered() == 0 {
                out.push(raw);
            }
        }
    }
    assert!(out.len() > 30, "only {} corpus files frame", out.len());
    out
}

/// Frames `data`, cutting it into chunks of the given sizes (cycled).
fn frame_chunks(data: &[u8], sizes: &[usize]) -> Vec<Result<Framed, FramingError>> {
    let mut f = StreamFramer::new(Limits::default());
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let (now, later) = rest.split_at(n);
        f.push(now);
        out.extend(std::iter::from_fn(|| f.next()));
        rest = later;
    }
    out
}

#[test]
fn every_split_offset_of_every_corpus_file() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let mut checked = 0;
    for dir in ["rfc4475", "rfc5118/wire"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "dat") {
                continue;
            }
            let raw = std::fs::read(&path).unwrap();
            let whole = frame_chunks(&raw, &[raw.len()]);
            for cut in 1..raw.len() {
                let mut f = StreamFramer::new(Limits::default());
                f.push(&raw[..cut]);
                let mut got: Vec<_> = std::iter::from_fn(|| f.next()).collect();
                f.push(&raw[cut..]);
                got.extend(std::iter::from_fn(|| f.next()));
                assert_eq!(got, whole, "{} split at {cut}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000);
}

#[test]
fn byte_at_a_time_equals_whole() {
    for raw in stream_corpus() {
        assert_eq!(frame_chunks(&raw, &[1]), frame_chunks(&raw, &[raw.len()]));
    }
}

#[test]
fn edits_leave_every_other_byte_alone() {
    let raw: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK2\r\n\
Max-Forwards: 0070\r\n\
Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
X-Weird :   keep   this  \r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 0\r\n\r\n";
    let mut m = parse_datagram(Bytes::from_static(raw), &Limits::default()).unwrap();
    m.pop_via();
    m.pop_route();
    m.decrement_max_forwards();
    m.push_record_route(b"<sip:p1.example.com;lr>").unwrap();
    m.set_request_uri(Uri::parse(Bytes::from_static(b"sip:bob@192.0.2.4:5062")).unwrap());
    let expected = "INVITE sip:bob@192.0.2.4:5062 SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK2\r\n\
Record-Route: <sip:p1.example.com;lr>\r\n\
Max-Forwards: 69\r\n\
Route: <sip:p2.example.com;lr>\r\n\
X-Weird :   keep   this  \r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 0\r\n\r\n";
    assert_eq!(String::from_utf8_lossy(&m.to_bytes()), expected);
}

#[test]
fn received_and_rport_are_recorded_in_the_top_via() {
    let raw: &[u8] = b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport, SIP/2.0/UDP h2;branch=z9hG4bKb\r\nl: 0\r\n\r\n";
    let mut m = parse_datagram(Bytes::from_static(raw), &Limits::default()).unwrap();
    assert!(m.set_top_via_received("192.0.2.9".parse().unwrap(), 40000));
    let again = parse_datagram(m.to_bytes(), &Limits::default()).unwrap();
    let top = again.top_via().unwrap();
    assert_eq!(top.rport(), Some(Some(40000)));
    assert_eq!(
        top.received(),
        Some(holdfast_sip::Host::V4("192.0.2.9".parse().unwrap()))
    );
    assert_eq!(top.branch().unwrap().as_ref(), b"z9hG4bKa");
    assert_eq!(again.vias().count(), 2);
    // Sent-by already the source and no rport asked: nothing to add.
    let raw: &[u8] = b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKa\r\nl: 0\r\n\r\n";
    let mut m = parse_datagram(Bytes::from_static(raw), &Limits::default()).unwrap();
    assert!(!m.set_top_via_received("192.0.2.9".parse().unwrap(), 5060));
    assert_eq!(m.to_bytes().as_ref(), raw);
}

#[test]
fn unknown_methods_and_headers_pass_through() {
    let raw: &[u8] = b"FOOBAR sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nP-Thing:\t\r\n  folded; ,,;;\r\nl: 0\r\n\r\n";
    let mut m = parse_datagram(Bytes::from_static(raw), &Limits::default()).unwrap();
    m.push_via(&Via::new("TCP", "10.0.0.1", "z9hG4bKb").unwrap());
    let out = m.to_bytes();
    assert_eq!(&out[..24], b"FOOBAR sip:x@y SIP/2.0\r\n");
    assert!(out.ends_with(b"P-Thing:\t\r\n  folded; ,,;;\r\nl: 0\r\n\r\n"));
}
