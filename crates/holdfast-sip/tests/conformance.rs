//! RFC 4475 and RFC 5118 torture messages: one expectation per file, taken from each
//! corpus folder's INDEX.md, for the datagram parser, the stream framer and the
//! validator.

use std::path::PathBuf;

use bytes::Bytes;
use holdfast_sip::{
    parse_datagram, validate, Answer, Framed, FramingError, Host, Limits, Message, ParseError,
    StreamFramer, Uri, ValidationPolicy,
};

fn corpus(dir: &str, file: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(dir)
        .join(file);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// What an element must do with a message, per the corpus INDEX.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Parses, and the validator lets it through.
    Parses,
    /// The parser refuses it; the answer is this status (`None`: drop).
    ParserRejects(Option<u16>),
    /// Parses, but the validator answers this status (`None`: drop).
    ValidatorAnswers(Option<u16>),
}

use Expect::*;

/// The outcome for one datagram under one validation policy.
fn verdict(raw: Bytes, policy: &ValidationPolicy<'_>) -> (Expect, Option<Message>) {
    let is_request = !raw.starts_with(b"SIP/");
    match parse_datagram(raw, &Limits::default()) {
        Err(e) => (ParserRejects(e.answer(is_request).status()), None),
        Ok(m) => match validate(&m, policy) {
            Ok(()) => (Parses, Some(m)),
            Err(e) => (ValidatorAnswers(e.answer(m.is_request()).status()), Some(m)),
        },
    }
}

/// RFC 4475, as a proxy would judge each message (INDEX.md "what an element should do").
const RFC4475_PROXY: &[(&str, Expect)] = &[
    ("wsinv.dat", Parses),
    ("intmeth.dat", Parses),
    ("esc01.dat", Parses),
    ("escnull.dat", Parses),
    ("esc02.dat", Parses),
    ("lwsdisp.dat", Parses),
    ("longreq.dat", Parses),
    ("dblreq.dat", Parses),
    ("semiuri.dat", Parses),
    ("transports.dat", Parses),
    ("mpart01.dat", Parses),
    ("unreason.dat", Parses),
    ("noreason.dat", Parses),
    ("badinv01.dat", ParserRejects(Some(400))),
    ("clerr.dat", ParserRejects(Some(400))),
    ("ncl.dat", ParserRejects(Some(400))),
    ("scalar02.dat", ParserRejects(Some(400))),
    ("scalarlg.dat", ParserRejects(None)),
    ("quotbal.dat", ParserRejects(Some(400))),
    ("ltgtruri.dat", ParserRejects(Some(400))),
    ("lwsruri.dat", ParserRejects(Some(400))),
    ("lwsstart.dat", ParserRejects(Some(400))),
    ("trws.dat", ParserRejects(Some(400))),
    ("escruri.dat", ValidatorAnswers(Some(400))),
    ("baddate.dat", Parses),
    ("regbadct.dat", ParserRejects(Some(400))),
    ("badaspec.dat", ParserRejects(Some(400))),
    ("baddn.dat", ParserRejects(Some(400))),
    ("badvers.dat", ValidatorAnswers(Some(505))),
    ("mismatch01.dat", ValidatorAnswers(Some(400))),
    ("mismatch02.dat", ValidatorAnswers(Some(501))),
    ("bigcode.dat", ParserRejects(None)),
    ("badbranch.dat", ValidatorAnswers(Some(400))),
    ("insuf.dat", ValidatorAnswers(Some(400))),
    ("unkscm.dat", ValidatorAnswers(Some(416))),
    ("novelsc.dat", ValidatorAnswers(Some(416))),
    ("unksm2.dat", Parses),
    ("bext01.dat", ValidatorAnswers(Some(420))),
    ("invut.dat", Parses),
    ("regaut01.dat", Parses),
    ("multi01.dat", ValidatorAnswers(Some(400))),
    ("mcl01.dat", ParserRejects(Some(400))),
    ("bcast.dat", ValidatorAnswers(None)),
    ("zeromf.dat", ValidatorAnswers(Some(483))),
    ("cparam01.dat", Parses),
    ("cparam02.dat", Parses),
    ("regescrt.dat", Parses),
    ("sdp01.dat", Parses),
    ("inv2543.dat", Parses),
];

/// Where the endpoint (UAS, registrar) verdict differs from the proxy's.
const RFC4475_UAS: &[(&str, Expect)] = &[
    ("zeromf.dat", Parses),
    ("invut.dat", ValidatorAnswers(Some(415))),
    ("sdp01.dat", ValidatorAnswers(Some(406))),
    ("bext01.dat", ValidatorAnswers(Some(420))),
];

#[test]
fn rfc4475_every_file_has_its_verdict() {
    let listed: Vec<_> =
        std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/rfc4475"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".dat") && n != "test.dat")
            .collect();
    assert_eq!(listed.len(), 49);
    for name in &listed {
        assert!(
            RFC4475_PROXY.iter().any(|(f, _)| f == name),
            "{name} has no expectation"
        );
    }
    let mut wrong = Vec::new();
    for (file, want) in RFC4475_PROXY {
        let (got, _) = verdict(corpus("rfc4475", file), &ValidationPolicy::PROXY);
        if got != *want {
            wrong.push(format!("{file}: want {want:?}, got {got:?}"));
        }
    }
    for (file, want) in RFC4475_UAS {
        let (got, _) = verdict(corpus("rfc4475", file), &ValidationPolicy::UAS);
        if got != *want {
            wrong.push(format!("{file} (UAS): want {want:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn rfc4475_test_dat_does_not_crash_and_is_refused() {
    // Not described by any section; by RFC 3261 it is malformed.
    let (got, _) = verdict(corpus("rfc4475", "test.dat"), &ValidationPolicy::PROXY);
    assert!(matches!(got, ParserRejects(_)), "{got:?}");
}

fn parsed(file: &str) -> Message {
    parse_datagram(corpus("rfc4475", file), &Limits::default()).unwrap()
}

#[test]
fn rfc4475_details_of_valid_messages() {
    // §3.1.1.1: folded, spaced, compact and odd-case headers all read; unknown headers
    // kept; byte-exact round trip.
    let raw = corpus("rfc4475", "wsinv.dat");
    let m = parsed("wsinv.dat");
    assert_eq!(m.max_forwards(), Some(68));
    assert_eq!(m.cseq().unwrap().seq, 9);
    assert_eq!(m.vias().count(), 3);
    assert_eq!(m.from().unwrap().tag().unwrap().as_ref(), b"98asjd8");
    assert_eq!(m.to().unwrap().tag().unwrap().as_ref(), b"1918181833n");
    assert_eq!(m.body().len(), 150);
    assert_eq!(m.contacts().next().unwrap().q(), Some(330));
    assert!(m.header_by_str("NewFangledHeader").is_some());
    assert_eq!(m.to_bytes(), raw);

    // §3.1.1.4: %00 is not a terminator; the two contacts stay distinct.
    let m = parsed("escnull.dat");
    let users: Vec<Vec<u8>> = m
        .contacts()
        .map(|c| {
            c.addr
                .uri
                .as_sip()
                .unwrap()
                .user_unescaped()
                .unwrap()
                .into_owned()
        })
        .collect();
    assert_eq!(users, vec![b"\0".to_vec(), b"\0\0".to_vec()]);

    // §3.1.1.8: the bytes after the declared body are not part of the message.
    let m = parsed("dblreq.dat");
    assert!(m.body().is_empty());
    assert!(!m.to_bytes().windows(6).any(|w| w == b"INVITE"));

    // §3.1.1.9: the user part holds ';' and an escaped '@'.
    let m = parsed("semiuri.dat");
    let uri = m.request_uri().unwrap().as_sip().unwrap();
    assert_eq!(uri.user.as_deref(), Some(&b"user;par=u%40example.net"[..]));

    // §3.1.1.11: multipart body with NULs framed by Content-Length.
    let m = parsed("mpart01.dat");
    assert_eq!(m.body().len() as u64, m.content_length().unwrap());

    // §3.1.1.7: 34 Via values across long and compact names.
    assert_eq!(parsed("longreq.dat").vias().count(), 34);

    // §3.1.2.4: Max-Forwards 300 and huge Expires are treated as absent (the CSeq is
    // what makes scalar02 fail).
    // §3.3.12 – §3.3.14: contact-params versus URI params.
    let m = parsed("cparam01.dat");
    for c in m.contacts() {
        assert!(c.addr.uri.as_sip().unwrap().param("unknownparam").is_none());
    }
    assert!(m.contacts().any(|c| c.addr.param("unknownparam").is_some()));
    let m = parsed("cparam02.dat");
    assert!(m
        .contacts()
        .any(|c| c.addr.uri.as_sip().unwrap().param("unknownparam").is_some()));
    let m = parsed("regescrt.dat");
    let c = m.contacts().next().unwrap();
    assert!(c
        .addr
        .uri
        .as_sip()
        .unwrap()
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case(b"Route")));

    // §3.1.1.10: the unknown transport is kept.
    assert_eq!(parsed("transports.dat").vias().count(), 5);

    // §3.3.7: an unknown Authorization scheme is kept for forwarding.
    let m = parsed("regaut01.dat");
    assert!(m
        .to_bytes()
        .windows(21)
        .any(|w| w == b"NoOneKnowsThisScheme "));
}

#[test]
fn rfc4475_bad_extension_lists_the_unknown_tags() {
    let m = parsed("bext01.dat");
    let err = validate(&m, &ValidationPolicy::UAS).unwrap_err();
    match err.answer(true) {
        Answer::Respond {
            status: 420,
            unsupported,
            ..
        } => {
            assert!(!unsupported.is_empty());
            for t in &unsupported {
                assert!(m
                    .option_tags(holdfast_sip::HeaderName::Require)
                    .any(|r| r == t));
            }
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rfc4475_bad_headers_are_named_in_the_reason() {
    let is_request = true;
    let err = parse_datagram(corpus("rfc4475", "scalar02.dat"), &Limits::default()).unwrap_err();
    match err.answer(is_request) {
        Answer::Respond {
            status: 400,
            reason,
            ..
        } => assert_eq!(reason, "Bad CSeq"),
        other => panic!("{other:?}"),
    }
    let m = parsed("insuf.dat");
    let err = validate(&m, &ValidationPolicy::PROXY).unwrap_err();
    assert!(
        matches!(err.answer(true), Answer::Respond { status: 400, ref reason, .. } if reason.starts_with("Missing"))
    );
}

/// Frames a whole file through the stream framer.
fn frame(raw: &[u8]) -> Vec<Result<Framed, FramingError>> {
    let mut f = StreamFramer::new(Limits::default());
    f.push(raw);
    std::iter::from_fn(|| f.next()).collect()
}

#[test]
fn rfc4475_over_a_stream() {
    // Content-Length larger than what arrived: wait for more (then the I/O layer's
    // read timeout closes the connection).
    assert!(frame(&corpus("rfc4475", "clerr.dat")).is_empty());
    // No blank line: the headers are not over yet.
    assert!(frame(&corpus("rfc4475", "baddn.dat")).is_empty());
    // Negative, conflicting or missing Content-Length: the stream cannot be framed.
    assert_eq!(
        frame(&corpus("rfc4475", "ncl.dat")),
        vec![Err(FramingError::InvalidContentLength)]
    );
    assert_eq!(
        frame(&corpus("rfc4475", "mcl01.dat")),
        vec![Err(FramingError::ConflictingContentLength)]
    );
    assert_eq!(
        frame(&corpus("rfc4475", "inv2543.dat")),
        vec![Err(FramingError::MissingContentLength)]
    );
    // Every other file with a correct Content-Length frames into the same verdict as a
    // datagram.
    for (file, want) in RFC4475_PROXY {
        if matches!(
            *file,
            "clerr.dat" | "baddn.dat" | "ncl.dat" | "mcl01.dat" | "inv2543.dat" | "dblreq.dat"
        ) {
            continue;
        }
        let raw = corpus("rfc4475", file);
        let out = frame(&raw);
        assert_eq!(out.len(), 1, "{file}: {out:?}");
        let got = match &out[0] {
            Ok(Framed::Message(m)) => match validate(m, &ValidationPolicy::PROXY) {
                Ok(()) => Parses,
                Err(e) => ValidatorAnswers(e.answer(m.is_request()).status()),
            },
            Ok(Framed::Invalid { error, raw }) => {
                ParserRejects(error.answer(!raw.starts_with(b"SIP/")).status())
            }
            other => panic!("{file}: {other:?}"),
        };
        assert_eq!(got, *want, "{file}");
    }
    // §3.1.1.8 on a stream: the trailing octets are the next message.
    let out = frame(&corpus("rfc4475", "dblreq.dat"));
    assert!(out.len() >= 2, "{out:?}");
    assert!(matches!(&out[0], Ok(Framed::Message(m)) if m.body().is_empty()));
}

/// RFC 5118 SDP messages carry wrong Content-Length values (INDEX.md): fix them so the
/// IPv6 handling is what gets tested.
fn fix_content_length(raw: &[u8]) -> Bytes {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (sep, eol) = if text.contains("\r\n\r\n") {
        ("\r\n\r\n", "\r\n")
    } else {
        ("\n\n", "\n")
    };
    let Some(split) = text.find(sep) else {
        return Bytes::from(text);
    };
    let (head, body) = (&text[..split], &text[split + sep.len()..]);
    let head: Vec<String> = head
        .split(eol)
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length") {
                format!("Content-Length: {}", body.len())
            } else {
                l.to_string()
            }
        })
        .collect();
    Bytes::from(format!("{}{sep}{body}", head.join(eol)))
}

const RFC5118: &[(&str, Expect)] = &[
    ("ipv6-good.dat", Parses),
    ("ipv6-bad.dat", ParserRejects(Some(400))),
    ("port-ambiguous.dat", Parses),
    ("port-unambiguous.dat", Parses),
    ("via-received-param-with-delim.dat", Parses),
    ("via-received-param-no-delim.dat", Parses),
    ("ipv6-in-sdp.dat", Parses),
    ("mult-ip-in-header.dat", Parses),
    ("mult-ip-in-sdp.dat", Parses),
    ("ipv4-mapped-ipv6.dat", Parses),
    ("ipv6-bug-abnf-3-colons.dat", Parses),
    ("ipv6-correct-abnf-2-colons.dat", Parses),
];

#[test]
fn rfc5118_every_file_has_its_verdict() {
    let mut wrong = Vec::new();
    for (file, want) in RFC5118 {
        // As archived (bare LF), over UDP.
        let (got, _) = verdict(
            fix_content_length(&corpus("rfc5118", file)),
            &ValidationPolicy::PROXY,
        );
        if got != *want {
            wrong.push(format!("{file}: want {want:?}, got {got:?}"));
        }
        // The CRLF copy, over a stream.
        let wire = fix_content_length(&corpus("rfc5118/wire", file));
        let out = frame(&wire);
        let got = match out.as_slice() {
            [Ok(Framed::Message(m))] => match validate(m, &ValidationPolicy::PROXY) {
                Ok(()) => Parses,
                Err(e) => ValidatorAnswers(e.answer(true).status()),
            },
            [Ok(Framed::Invalid { error, .. })] => ParserRejects(error.answer(true).status()),
            other => panic!("{file}: {other:?}"),
        };
        if got != *want {
            wrong.push(format!("{file} (stream): want {want:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn parsed5118(file: &str) -> Message {
    parse_datagram(
        fix_content_length(&corpus("rfc5118/wire", file)),
        &Limits::default(),
    )
    .unwrap()
}

#[test]
fn rfc5118_addresses() {
    let v6 = |s: &str| Host::V6(s.parse().unwrap());
    // §4.3: everything inside the brackets is the address; there is no port.
    let m = parsed5118("port-ambiguous.dat");
    let uri = m.request_uri().unwrap().as_sip().unwrap();
    assert_eq!(uri.host, v6("2001:db8::10:5070"));
    assert_eq!(uri.port, None);
    // §4.4
    let m = parsed5118("port-unambiguous.dat");
    let uri = m.request_uri().unwrap().as_sip().unwrap();
    assert_eq!(
        (uri.host.clone(), uri.port),
        (v6("2001:db8::10"), Some(5070))
    );
    // §4.5: received with and without brackets.
    for f in [
        "via-received-param-with-delim.dat",
        "via-received-param-no-delim.dat",
    ] {
        let m = parsed5118(f);
        assert_eq!(
            m.top_via().unwrap().received(),
            Some(v6("2001:db8::9:255")),
            "{f}"
        );
    }
    // §4.9: IPv4-mapped addresses.
    let m = parsed5118("ipv4-mapped-ipv6.dat");
    let vias: Vec<_> = m.vias().map(|v| (v.host.clone(), v.port)).collect();
    assert_eq!(
        vias,
        vec![
            (v6("::ffff:192.0.2.10"), Some(19823)),
            (v6("::ffff:192.0.2.2"), None)
        ]
    );
    // §4.10: three colons mean the same address as two.
    let a = parsed5118("ipv6-bug-abnf-3-colons.dat");
    let b = parsed5118("ipv6-correct-abnf-2-colons.dat");
    let (ua, ub): (&Uri, &Uri) = (a.request_uri().unwrap(), b.request_uri().unwrap());
    assert!(ua.equivalent(ub));
}

#[test]
fn parse_errors_on_responses_are_dropped() {
    let e: ParseError =
        parse_datagram(corpus("rfc4475", "bigcode.dat"), &Limits::default()).unwrap_err();
    assert_eq!(e.answer(false), Answer::Drop);
}
