//! Parser comparison: holdfast-sip against `rsipstack` (0.7, its built-in `rsip` types)
//! and `sipx-sip` (1.0), on the same softphone INVITE (with SDP) and REGISTER (with a
//! digest `Authorization`).
//!
//! Four groups, three functions each (`holdfast`, `rsipstack`, `sipx`):
//!
//! - `<METHOD> raw parse`: bytes to a message object, dropped at the end of the iteration.
//! - `<METHOD> parse + typed access`: the same, then the top Via's branch and host, From's
//!   URI and tag, To's URI, CSeq number and method, and Call-ID, each through the
//!   library's typed API.
//!
//! The three libraries differ in when they parse headers. holdfast checks every core
//! header's value while it parses (a malformed one fails the parse) and builds the
//! typed value on first access. rsipstack keeps every header as an owned `String` and
//! parses on `.typed()`; sipx keeps raw slices and parses on `headers.typed::<H>()`.
//! Only the second group compares like with like.
//!
//! After criterion has run, `main` reads criterion's estimates back from
//! `<criterion home>/<group>/<function>/new/estimates.json` and prints a table of
//! ns/iter and the ratios rsipstack/holdfast and sipx/holdfast, between the lines
//! `=== parse ratio table ===` and `=== end ratio table ===`. Run it with
//! `bench/parse-bench.sh` or `cargo bench -p holdfast-sip --bench parse`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, Criterion};

// ---------------------------------------------------------------------------------------
// Sample messages
// ---------------------------------------------------------------------------------------

/// The SDP offer of a typical softphone: four audio codecs and DTMF.
const SDP: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n\
s=-\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 9 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// A softphone's initial INVITE: 16 header fields and the SDP offer above.
fn invite() -> Bytes {
    let head = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK-524287-1---6d1a9f2c3b8e7a40;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:alice@192.0.2.101:5060;transport=udp>;+sip.instance=\"<urn:uuid:3e4f2a10-7c5b-4d8e-9f01-a2b3c4d5e6f7>\"\r\n\
To: \"Bob\" <sip:bob@biloxi.example.com>\r\n\
From: \"Alice Liddell\" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE, UPDATE\r\n\
Supported: replaces, norefersub, extended-refer, timer, outbound, path, X-cisco-serviceuri\r\n\
User-Agent: Softphone 5.1.4 (Linux x86_64)\r\n\
Allow-Events: presence, kpml, talk\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
Content-Type: application/sdp\r\n";
    Bytes::from(format!("{head}Content-Length: {}\r\n\r\n{SDP}", SDP.len()))
}

/// A softphone's REGISTER answering a 401: 15 header fields, digest credentials, no body.
fn register() -> Bytes {
    Bytes::from_static(
        b"REGISTER sip:registrar.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK-524287-1---77ba17085d60f141;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:alice@192.0.2.101:5060;rinstance=6f8dc969b62d1466;transport=udp>;expires=3600;+sip.instance=\"<urn:uuid:3e4f2a10-7c5b-4d8e-9f01-a2b3c4d5e6f7>\"\r\n\
To: \"Alice Liddell\" <sip:alice@example.com>\r\n\
From: \"Alice Liddell\" <sip:alice@example.com>;tag=4ee3d4b7\r\n\
Call-ID: NzU3YjdkNDQ4ZGMzYjYxZDZkY2JiZDNiYjA2ZjJkNjk\r\n\
CSeq: 2 REGISTER\r\n\
Expires: 3600\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE, UPDATE\r\n\
Supported: replaces, norefersub, extended-refer, timer, outbound, path\r\n\
User-Agent: Softphone 5.1.4 (Linux x86_64)\r\n\
Authorization: Digest username=\"alice\",realm=\"example.com\",nonce=\"5f2c1a9e8b7d6c5b4a3928171615e4d3\",uri=\"sip:registrar.example.com\",response=\"3b2d7e7a9f1c4b8e0d6a5c2f1e9b8a7d\",cnonce=\"0a4f113b\",nc=00000001,qop=auth,algorithm=MD5\r\n\
Allow-Events: presence, kpml, talk\r\n\
Content-Length: 0\r\n\
\r\n",
    )
}

/// What "parse + typed access" must read, as plain values, for the pre-run check.
#[derive(Debug, PartialEq, Eq)]
struct Fields {
    branch: String,
    via_host: String,
    via_port: Option<u16>,
    from_uri: String,
    from_tag: String,
    to_uri: String,
    cseq: u32,
    method: String,
    call_id: String,
}

struct Sample {
    name: &'static str,
    data: Bytes,
    expected: Fields,
}

fn samples() -> Vec<Sample> {
    vec![
        Sample {
            name: "INVITE",
            data: invite(),
            expected: Fields {
                branch: "z9hG4bK-524287-1---6d1a9f2c3b8e7a40".into(),
                via_host: "192.0.2.101".into(),
                via_port: Some(5060),
                from_uri: "sip:alice@atlanta.example.com".into(),
                from_tag: "9fxced76sl".into(),
                to_uri: "sip:bob@biloxi.example.com".into(),
                cseq: 1,
                method: "INVITE".into(),
                call_id: "3848276298220188511@atlanta.example.com".into(),
            },
        },
        Sample {
            name: "REGISTER",
            data: register(),
            expected: Fields {
                branch: "z9hG4bK-524287-1---77ba17085d60f141".into(),
                via_host: "192.0.2.101".into(),
                via_port: Some(5060),
                from_uri: "sip:alice@example.com".into(),
                from_tag: "4ee3d4b7".into(),
                to_uri: "sip:alice@example.com".into(),
                cseq: 2,
                method: "REGISTER".into(),
                call_id: "NzU3YjdkNDQ4ZGMzYjYxZDZkY2JiZDNiYjA2ZjJkNjk".into(),
            },
        },
    ]
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------
// holdfast-sip
// ---------------------------------------------------------------------------------------

mod holdfast {
    use super::{black_box, lossy, Bytes, Fields};
    use holdfast_sip::{parse_datagram, Host, Limits, Message};

    pub(super) fn limits() -> Limits {
        Limits::default()
    }

    pub(super) fn parse(data: &Bytes, limits: &Limits) -> Message {
        parse_datagram(data.clone(), limits).expect("holdfast: parse")
    }

    pub(super) fn access(data: &Bytes, limits: &Limits) {
        let msg = parse(data, limits);
        let via = msg.top_via().expect("holdfast: Via");
        black_box(via.branch().expect("holdfast: branch"));
        black_box(&via.host);
        black_box(via.port);
        let from = msg.from().expect("holdfast: From");
        black_box(&from.uri);
        black_box(from.tag().expect("holdfast: From tag"));
        let to = msg.to().expect("holdfast: To");
        black_box(&to.uri);
        let cseq = msg.cseq().expect("holdfast: CSeq");
        black_box(cseq.seq);
        black_box(&cseq.method);
        black_box(msg.call_id().expect("holdfast: Call-ID"));
        black_box(msg);
    }

    fn host(h: &Host) -> String {
        match h {
            Host::Name(n) => lossy(n),
            Host::V4(a) => a.to_string(),
            Host::V6(a) => format!("[{a}]"),
        }
    }

    pub(super) fn fields(data: &Bytes) -> Fields {
        let msg = parse(data, &limits());
        let via = msg.top_via().expect("holdfast: Via");
        let from = msg.from().expect("holdfast: From");
        let to = msg.to().expect("holdfast: To");
        let cseq = msg.cseq().expect("holdfast: CSeq");
        Fields {
            branch: lossy(via.branch().expect("holdfast: branch")),
            via_host: host(&via.host),
            via_port: via.port,
            from_uri: from.uri.to_string(),
            from_tag: lossy(from.tag().expect("holdfast: From tag")),
            to_uri: to.uri.to_string(),
            cseq: cseq.seq,
            method: cseq.method.to_string(),
            call_id: lossy(msg.call_id().expect("holdfast: Call-ID")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// rsipstack: `rsipstack::sip` is its own copy of the `rsip` types (also exported as
// `rsipstack::rsip`). `SipMessage::try_from(&[u8])` runs `sip::parser::parse_message`,
// which keeps each header as an owned `String`; `.typed()` on a header parses it.
// ---------------------------------------------------------------------------------------

mod rsipstack_impl {
    use super::{black_box, Fields};
    use rsipstack::sip::{prelude::*, SipMessage};

    pub(super) fn parse(data: &[u8]) -> SipMessage {
        SipMessage::try_from(data).expect("rsipstack: parse")
    }

    pub(super) fn access(data: &[u8]) {
        let msg = parse(data);
        // `top_via_header` splits off the first comma-separated hop; this is the path
        // rsipstack's own transaction layer takes (`HeadersExt::transaction_id`).
        let via = msg
            .top_via_header()
            .expect("rsipstack: Via")
            .typed()
            .expect("rsipstack: typed Via");
        black_box(via.branch().expect("rsipstack: branch"));
        black_box(&via.sent_by().host);
        black_box(&via.sent_by().port);
        let from = msg
            .from_header()
            .expect("rsipstack: From")
            .typed()
            .expect("rsipstack: typed From");
        black_box(&from.uri);
        black_box(from.tag().expect("rsipstack: From tag"));
        let to = msg
            .to_header()
            .expect("rsipstack: To")
            .typed()
            .expect("rsipstack: typed To");
        black_box(&to.uri);
        let cseq = msg
            .cseq_header()
            .expect("rsipstack: CSeq")
            .typed()
            .expect("rsipstack: typed CSeq");
        black_box(cseq.seq);
        black_box(&cseq.method);
        black_box(msg.call_id_header().expect("rsipstack: Call-ID").value());
        black_box(via);
        black_box(from);
        black_box(to);
        black_box(msg);
    }

    pub(super) fn fields(data: &[u8]) -> Fields {
        let msg = parse(data);
        let via = msg.top_via_header().expect("Via").typed().expect("Via");
        let from = msg.from_header().expect("From").typed().expect("From");
        let to = msg.to_header().expect("To").typed().expect("To");
        let cseq = msg.cseq_header().expect("CSeq").typed().expect("CSeq");
        Fields {
            branch: via.branch().expect("branch").to_string(),
            via_host: via.sent_by().host.to_string(),
            via_port: via.sent_by().port.as_ref().map(rsipstack::sip::Port::value),
            from_uri: from.uri.to_string(),
            from_tag: from.tag().expect("tag").to_string(),
            to_uri: to.uri.to_string(),
            cseq: cseq.seq,
            method: cseq.method.to_string(),
            call_id: msg.call_id_header().expect("Call-ID").value().to_owned(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// sipx-sip: `sipx_sip::parse_datagram(Bytes, &Limits)`; headers stay raw slices and
// `headers.typed::<H>()` parses one on demand.
// ---------------------------------------------------------------------------------------

mod sipx {
    use super::{black_box, lossy, Bytes, Fields};
    use sipx_sip::headers::{CSeq, CallId, From, To, Via};
    use sipx_sip::{parse_datagram, Limits, Message};

    pub(super) fn limits() -> Limits {
        Limits::default()
    }

    pub(super) fn parse(data: &Bytes, limits: &Limits) -> Message {
        parse_datagram(data.clone(), limits).expect("sipx: parse")
    }

    pub(super) fn access(data: &Bytes, limits: &Limits) {
        let msg = parse(data, limits);
        let h = msg.headers();
        let via = h
            .typed::<Via>()
            .expect("sipx: Via")
            .expect("sipx: typed Via");
        black_box(via.branch().expect("sipx: branch"));
        black_box(&via.host);
        black_box(via.port);
        let from = h
            .typed::<From>()
            .expect("sipx: From")
            .expect("sipx: typed From");
        black_box(&from.uri);
        black_box(from.tag().expect("sipx: From tag"));
        let to = h.typed::<To>().expect("sipx: To").expect("sipx: typed To");
        black_box(&to.uri);
        let cseq = h
            .typed::<CSeq>()
            .expect("sipx: CSeq")
            .expect("sipx: typed CSeq");
        black_box(cseq.sequence);
        black_box(&cseq.method);
        let call_id = h
            .typed::<CallId>()
            .expect("sipx: Call-ID")
            .expect("sipx: typed Call-ID");
        black_box(&call_id.0);
        black_box(via);
        black_box(from);
        black_box(to);
        black_box(call_id);
        black_box(msg);
    }

    pub(super) fn fields(data: &Bytes) -> Fields {
        let msg = parse(data, &limits());
        let h = msg.headers();
        let via = h.typed::<Via>().expect("Via").expect("Via");
        let from = h.typed::<From>().expect("From").expect("From");
        let to = h.typed::<To>().expect("To").expect("To");
        let cseq = h.typed::<CSeq>().expect("CSeq").expect("CSeq");
        let call_id = h.typed::<CallId>().expect("Call-ID").expect("Call-ID");
        Fields {
            branch: lossy(via.branch().expect("branch")),
            via_host: via.host.to_string(),
            via_port: via.port,
            from_uri: from.uri.to_string(),
            from_tag: lossy(from.tag().expect("tag")),
            to_uri: to.uri.to_string(),
            cseq: cseq.sequence,
            method: cseq.method.to_string(),
            call_id: lossy(&call_id.0),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------

const RAW: &str = "raw parse";
const TYPED: &str = "parse + typed access";
const FUNCTIONS: [&str; 3] = ["holdfast", "rsipstack", "sipx"];

fn group_name(sample: &str, kind: &str) -> String {
    format!("{sample} {kind}")
}

/// Every parser must read the same values from every sample before anything is timed.
fn check_samples() {
    for s in samples() {
        let hf = holdfast::fields(&s.data);
        let rs = rsipstack_impl::fields(&s.data);
        let sx = sipx::fields(&s.data);
        assert_eq!(hf, s.expected, "holdfast misread the {}", s.name);
        assert_eq!(rs, s.expected, "rsipstack misread the {}", s.name);
        assert_eq!(sx, s.expected, "sipx misread the {}", s.name);
    }
}

fn bench_parsers(c: &mut Criterion) {
    let hf_limits = holdfast::limits();
    let sx_limits = sipx::limits();
    for s in samples() {
        let data = s.data.clone();
        // Promote the buffer to a shared one now, so no iteration pays for it.
        let _ = data.clone();

        let mut g = c.benchmark_group(group_name(s.name, RAW));
        g.bench_function("holdfast", |b| {
            b.iter(|| holdfast::parse(black_box(&data), &hf_limits));
        });
        g.bench_function("rsipstack", |b| {
            b.iter(|| rsipstack_impl::parse(black_box(&data[..])));
        });
        g.bench_function("sipx", |b| {
            b.iter(|| sipx::parse(black_box(&data), &sx_limits));
        });
        g.finish();

        let mut g = c.benchmark_group(group_name(s.name, TYPED));
        g.bench_function("holdfast", |b| {
            b.iter(|| holdfast::access(black_box(&data), &hf_limits));
        });
        g.bench_function("rsipstack", |b| {
            b.iter(|| rsipstack_impl::access(black_box(&data[..])));
        });
        g.bench_function("sipx", |b| {
            b.iter(|| sipx::access(black_box(&data), &sx_limits));
        });
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_parsers
}

// ---------------------------------------------------------------------------------------
// Ratio table from criterion's estimates
// ---------------------------------------------------------------------------------------

/// Where criterion writes its results, found the way criterion 0.5 finds it:
/// `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else the target directory
/// `cargo metadata` names, else `target/criterion`.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("criterion");
    }
    let from_metadata = std::env::var_os("CARGO").and_then(|cargo| {
        let out = std::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        json_string_after(&text, "\"target_directory\":")
    });
    match from_metadata {
        Some(dir) => PathBuf::from(dir).join("criterion"),
        None => PathBuf::from("target/criterion"),
    }
}

/// The JSON string value that follows `key` (a minimal reader: no serde in this bench).
fn json_string_after(text: &str, key: &str) -> Option<String> {
    let rest = text.get(text.find(key)? + key.len()..)?.trim_start();
    let mut chars = rest.strip_prefix('"')?.chars();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// The `point_estimate` of the estimate named `key` in criterion's estimates.json, or
/// `None` when it is absent or `null` (as `slope` is under flat sampling).
fn estimate(json: &str, key: &str) -> Option<f64> {
    let rest = json.get(json.find(&format!("\"{key}\":"))?..)?;
    let rest = rest.get(rest.find(':')? + 1..)?.trim_start();
    if !rest.starts_with('{') {
        return None;
    }
    let field = "\"point_estimate\":";
    let rest = rest.get(rest.find(field)? + field.len()..)?;
    let end = rest.find([',', '}'])?;
    rest.get(..end)?.trim().parse().ok()
}

fn estimates_path(home: &Path, group: &str, function: &str) -> PathBuf {
    home.join(group)
        .join(function)
        .join("new")
        .join("estimates.json")
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn all_rows() -> Vec<String> {
    let mut rows = Vec::new();
    for s in ["INVITE", "REGISTER"] {
        for kind in [RAW, TYPED] {
            rows.push(group_name(s, kind));
        }
    }
    rows
}

/// Reads the estimates criterion wrote in this run (files whose modification time moved
/// since `before`) and prints ns/iter and ratios. Criterion's headline "time" is the
/// slope estimate when it has one, else the mean; the table uses the same.
fn print_ratio_table(home: &Path, before: &HashMap<PathBuf, Option<SystemTime>>) {
    let mut lines = Vec::new();
    for group in all_rows() {
        let mut ns = [None; 3];
        for (slot, function) in ns.iter_mut().zip(FUNCTIONS) {
            let path = estimates_path(home, &group, function);
            let fresh = modified(&path).is_some()
                && before.get(&path).copied().flatten() != modified(&path);
            if !fresh {
                continue;
            }
            *slot = std::fs::read_to_string(&path)
                .ok()
                .and_then(|json| estimate(&json, "slope").or_else(|| estimate(&json, "mean")));
        }
        if ns.iter().all(Option::is_none) {
            continue;
        }
        let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        let ratio = |v: Option<f64>| match (v, ns[0]) {
            (Some(v), Some(h)) if h > 0.0 => format!("{:.2}x", v / h),
            _ => "-".to_owned(),
        };
        lines.push(format!(
            "{:<32} {:>10} {:>10} {:>10} {:>9} {:>9}",
            group,
            cell(ns[0]),
            cell(ns[1]),
            cell(ns[2]),
            ratio(ns[1]),
            ratio(ns[2]),
        ));
    }

    println!();
    println!("=== parse ratio table ===");
    if lines.is_empty() {
        println!(
            "(no benchmark of this bench ran in this invocation; estimates not found under {})",
            home.display()
        );
    } else {
        println!(
            "{:<32} {:>10} {:>10} {:>10} {:>9} {:>9}",
            "ns/iter", "holdfast", "rsipstack", "sipx", "rs/hf", "sipx/hf"
        );
        for line in lines {
            println!("{line}");
        }
        println!(
            "(ratios above 1 mean holdfast is faster; source: {})",
            home.display()
        );
    }
    println!("=== end ratio table ===");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; without it (cargo test --benches) criterion runs
    // each benchmark once as a test and writes no estimates, so there is no table.
    let benchmarking = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list");

    check_samples();

    let home = criterion_home();
    let before: HashMap<PathBuf, Option<SystemTime>> = all_rows()
        .into_iter()
        .flat_map(|g| FUNCTIONS.map(|f| estimates_path(&home, &g, f)))
        .map(|p| {
            let m = modified(&p);
            (p, m)
        })
        .collect();

    benches();
    Criterion::default().configure_from_args().final_summary();

    if benchmarking {
        print_ratio_table(&home, &before);
    }
}
