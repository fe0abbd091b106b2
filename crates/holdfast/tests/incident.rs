//! The incident of `seed/incident-report.txt`, replayed against the real binary.
//!
//! In 2019 malformed TCP from one device crashed a SIP core again and again; core
//! dumps filled the disk; the full disk stopped everything else. Here one holdfast
//! process with UDP, TCP, TLS and WS listeners serves a well-behaved client on
//! 127.0.0.1 over all four transports for the whole test, while hostile clients on
//! 127.0.0.2 … (one source address per kind of attack) send it the torture corpora
//! whole and mutated, impossible Content-Lengths, 10,000 headers, a 10 MB header
//! line, a slowloris, 100,000 CRLFs, TLS garbage, too many connections and a UDP
//! flood.
//!
//! The log is configured at `trace`, the most verbose level, so that its rotation is
//! exercised under the attack.
//!
//! Asserted at the start: core dumps are disabled. Throughout: the process never
//! exits; every well-behaved request is answered 200 (UDP may retransmit once);
//! memory stays under [`RSS_BOUND_KIB`]; the log files stay under [`LOG_BOUND`]; and
//! nothing is written to disk but the log and the configured data directory (itself
//! under [`DATA_BOUND`]). At the end: every attacking address (each
//! commits at least `offence_threshold` offences, see [`attacks`]) is in
//! `/api/v1/bans` and counted in `holdfast_bans_total`; the well-behaved address and
//! the low-volume fuzz senders are not; bans hold on every transport; no panic was
//! caught; and SIGTERM still stops the process cleanly.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use support::{
    bounded, corpus, files_under, mutate, note, tcp_from, Client, Core, CoreBuilder, Metrics,
    Request, Response, Rng, Transport, LOCALHOST,
};

/// How long the well-behaved client runs; the attacks happen inside this window.
const RUN: Duration = Duration::from_secs(40);
/// Requests per second the well-behaved client sends on each transport.
const GOOD_RATE: u64 = 20;
/// The bound on the process's resident memory.
const RSS_BOUND_KIB: u64 = 200 * 1024;
/// The log bound: (keep + 1) × max_bytes.
const LOG_BOUND: u64 = 3 * 1024 * 1024;
/// The bound on the data directory (`--data-dir`, inside the run directory): the
/// store the operator configured, which hostile traffic must not grow.
const DATA_BOUND: u64 = 16 * 1024 * 1024;
const LOG_FILES: [&str; 3] = ["holdfast.log", "holdfast.log.1", "holdfast.log.2"];
const OFFENCE_THRESHOLD: usize = 10;
/// Mutated variants each single-address fuzz attack sends (beside the whole corpus).
const VARIANTS: usize = 300;
/// Fuzz senders spread over many addresses, so that every variant reaches the parser.
const POOL: u8 = 200;
const POOL_VARIANTS_EACH: usize = 3;

const CONFIG: &str = r#"
[limits]
messages_per_sec_per_ip = 200
message_burst_per_ip = 400
max_connections_per_ip = 20
message_read_timeout_ms = 2000
first_message_timeout_ms = 2000
tls_handshake_timeout_ms = 2000

[bans]
offence_threshold = 10
window_secs = 60
duration_secs = 600
exempt = ["127.0.0.1"]
"#;

fn hostile(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

fn pool_udp(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, n))
}

fn pool_tcp(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 2, n))
}

/// The kinds of attack, one source address each.
#[derive(Debug, Clone, Copy)]
enum Kind {
    CorpusUdp,
    CorpusTcp,
    ContentLength,
    ManyHeaders,
    LongHeaderLine,
    Slowloris,
    CrlfFlood,
    TlsGarbage,
    ConnectionCap,
    UdpFlood,
}

/// One attack: its source address, when it starts, and why it must end up banned.
#[derive(Debug, Clone, Copy)]
struct Attack {
    kind: Kind,
    name: &'static str,
    ip: IpAddr,
    start_secs: u64,
    why_banned: &'static str,
}

fn attacks() -> Vec<Attack> {
    vec![
        Attack {
            kind: Kind::CorpusUdp,
            name: "corpus+mutations over UDP",
            ip: hostile(2),
            start_secs: 2,
            why_banned: "dozens of unparsable datagrams (parse_error offences)",
        },
        Attack {
            kind: Kind::CorpusTcp,
            name: "corpus+mutations over TCP",
            ip: hostile(3),
            start_secs: 2,
            why_banned: "dozens of unparsable or unframeable messages (parse_error / framing)",
        },
        Attack {
            kind: Kind::ContentLength,
            name: "Content-Length 2^64-1, -1, 9999999999 over TCP",
            ip: hostile(4),
            start_secs: 4,
            why_banned: "12 connections, each an unframeable stream (framing)",
        },
        Attack {
            kind: Kind::ManyHeaders,
            name: "10,000 headers over TCP and UDP",
            ip: hostile(5),
            start_secs: 6,
            why_banned:
                "6 streams over the head-size limit (framing) + 6 datagrams over it (parse_error)",
        },
        Attack {
            kind: Kind::LongHeaderLine,
            name: "10 MB header line over TCP",
            ip: hostile(6),
            start_secs: 8,
            why_banned: "10 streams over the head-size limit (framing)",
        },
        Attack {
            kind: Kind::Slowloris,
            name: "slowloris, 1 byte/s",
            ip: hostile(7),
            start_secs: 10,
            why_banned: "12 connections closed by message_read_timeout (read_timeout)",
        },
        Attack {
            kind: Kind::CrlfFlood,
            name: "100,000 CRLFs over TCP",
            ip: hostile(8),
            start_secs: 12,
            why_banned: "10 streams over the keepalive limit (framing)",
        },
        Attack {
            kind: Kind::TlsGarbage,
            name: "TLS garbage and truncated ClientHello",
            ip: hostile(9),
            start_secs: 14,
            why_banned: "12 failed or timed-out handshakes (tls_handshake)",
        },
        Attack {
            kind: Kind::ConnectionCap,
            name: "30 connections against a cap of 20",
            ip: hostile(10),
            start_secs: 16,
            why_banned: "10 connections over max_connections_per_ip (connections_per_ip)",
        },
        Attack {
            kind: Kind::UdpFlood,
            name: "UDP flood at 10x the per-IP rate",
            ip: hostile(11),
            start_secs: 18,
            why_banned: "thousands of datagrams over messages_per_sec_per_ip (message_rate)",
        },
    ]
}

// ---------------------------------------------------------------------------------
// The well-behaved client
// ---------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct GoodStats {
    sent: u64,
    ok: u64,
    retransmitted: u64,
    max_latency: Duration,
    failures: Vec<String>,
    reconnects: u64,
}

async fn good_client(core: Arc<Core>, t: Transport, until: Instant) -> GoodStats {
    let mut stats = GoodStats::default();
    let target = core.addr(t);
    let mut client: Option<Client> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / GOOD_RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        tick.tick().await;
        stats.sent += 1;
        let c = match client.as_mut() {
            Some(c) => c,
            None => match Client::connect_from(&core, t, LOCALHOST, target).await {
                Ok(c) => client.insert(c),
                Err(e) => {
                    stats.failures.push(format!("connect failed: {e:#}"));
                    continue;
                }
            },
        };
        let req = c.options(target);
        let started = Instant::now();
        let retransmit = (t == Transport::Udp).then_some(Duration::from_millis(500));
        match c
            .request_with(&req, Duration::from_secs(5), retransmit)
            .await
        {
            Ok((r, retx)) => {
                stats.max_latency = stats.max_latency.max(started.elapsed());
                stats.retransmitted += u64::from(retx);
                if r.status == 200 {
                    stats.ok += 1;
                } else {
                    stats
                        .failures
                        .push(format!("answered {} {}", r.status, r.reason));
                }
            }
            Err(e) => {
                stats.failures.push(format!(
                    "request {} at +{:?}: {e}",
                    stats.sent,
                    started.elapsed()
                ));
                if t != Transport::Udp {
                    // Keep measuring on a fresh connection; the failure is recorded.
                    stats.reconnects += 1;
                    client = None;
                }
            }
        }
    }
    stats
}

// ---------------------------------------------------------------------------------
// Watching the process
// ---------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Watch {
    samples: u64,
    max_rss_kib: u64,
    max_log_bytes: u64,
    max_fds: usize,
    exited: Option<String>,
    exempt_banned: bool,
}

async fn watch(core: Arc<Core>, stop: Arc<AtomicBool>) -> Watch {
    let mut w = Watch::default();
    while !stop.load(Ordering::Relaxed) {
        if let Some(status) = core.exited() {
            w.exited = Some(status.to_string());
            return w;
        }
        w.samples += 1;
        w.max_rss_kib = w.max_rss_kib.max(core.rss_kib().unwrap_or(0));
        w.max_fds = w.max_fds.max(core.open_fds().unwrap_or(0));
        let logs: u64 = files_under(&core.run_dir)
            .iter()
            .filter(|(p, _)| !p.starts_with(core.run_dir.join("data")))
            .map(|(_, n)| n)
            .sum();
        w.max_log_bytes = w.max_log_bytes.max(logs);
        if w.samples % 4 == 0 && core.bans().await.iter().any(|b| b.ip == LOCALHOST) {
            w.exempt_banned = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    w
}

// ---------------------------------------------------------------------------------
// The attacks
// ---------------------------------------------------------------------------------

/// What an attack did, for the summary, and what went against expectations.
#[derive(Debug, Default)]
struct Report {
    sent: String,
    failures: Vec<String>,
}

/// Reads until the peer closes; returns what was read and whether it closed in time.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => {
                if got.len() < 1 << 20 {
                    got.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
}

/// Sends each message on its own connection from `ip`, then half-closes and waits
/// for the server to finish with it.
async fn stream_each(ip: IpAddr, target: SocketAddr, messages: Vec<Vec<u8>>) -> (usize, usize) {
    let (mut sent, mut answered) = (0, 0);
    for m in messages {
        let Ok(mut s) = tcp_from(ip, target).await else {
            continue;
        };
        if s.write_all(&m).await.is_ok() {
            sent += 1;
        }
        let _ = s.shutdown().await;
        let (got, _) = until_closed(&mut s, Duration::from_secs(3)).await;
        if got.starts_with(b"SIP/2.0 ") {
            answered += 1;
        }
    }
    (sent, answered)
}

fn corpus_and_variants(seed: u64, variants: usize) -> Vec<Vec<u8>> {
    let files = corpus();
    let mut rng = Rng::new(seed);
    let mut out: Vec<Vec<u8>> = files.iter().map(|(_, b)| b.clone()).collect();
    for _ in 0..variants {
        let (_, base) = &files[rng.below(files.len())];
        out.push(mutate(base, &mut rng));
    }
    out
}

async fn corpus_over_udp(core: Arc<Core>, ip: IpAddr) -> Report {
    let target = core.addr(Transport::Udp);
    let sock = UdpSocket::bind((ip, 0)).await.unwrap();
    let messages = corpus_and_variants(4475, VARIANTS);
    let mut sent = 0;
    for m in &messages {
        if m.len() <= 65_507 && sock.send_to(m, target).await.is_ok() {
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    Report {
        sent: format!("{sent} datagrams ({} whole files)", corpus().len()),
        ..Report::default()
    }
}

async fn corpus_over_tcp(core: Arc<Core>, ip: IpAddr) -> Report {
    let target = core.addr(Transport::Tcp);
    let messages = corpus_and_variants(5118, VARIANTS);
    let n = messages.len();
    let (sent, answered) = stream_each(ip, target, messages).await;
    Report {
        sent: format!("{sent} of {n} connections written, {answered} answered"),
        ..Report::default()
    }
}

/// The same mutations, each variant from the next address of a pool, so that none of
/// them is stopped by a ban before it reaches the parser.
async fn fuzz_pools(core: Arc<Core>) -> Report {
    let udp_target = core.addr(Transport::Udp);
    let tcp_target = core.addr(Transport::Tcp);
    let files = corpus();
    let mut rng = Rng::new(0x0dd_5eed);
    let mut udp_sent = 0;
    for n in 1..=POOL {
        let sock = UdpSocket::bind((pool_udp(n), 0)).await.unwrap();
        for _ in 0..POOL_VARIANTS_EACH {
            let (_, base) = &files[rng.below(files.len())];
            let v = mutate(base, &mut rng);
            if v.len() <= 65_507 && sock.send_to(&v, udp_target).await.is_ok() {
                udp_sent += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut tasks = Vec::new();
    for chunk in 0..4u8 {
        let mut jobs = Vec::new();
        for n in (1..=POOL).filter(|n| n % 4 == chunk) {
            let variants: Vec<Vec<u8>> = (0..POOL_VARIANTS_EACH)
                .map(|_| {
                    let (_, base) = &files[rng.below(files.len())];
                    mutate(base, &mut rng)
                })
                .collect();
            jobs.push((pool_tcp(n), variants));
        }
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            for (ip, variants) in jobs {
                sent += stream_each(ip, tcp_target, variants).await.0;
            }
            sent
        }));
    }
    let mut tcp_sent = 0;
    for t in tasks {
        tcp_sent += t.await.unwrap();
    }
    Report {
        sent: format!(
            "{udp_sent} datagrams from 127.0.1.1-{POOL}, {tcp_sent} connections from 127.0.2.1-{POOL}"
        ),
        ..Report::default()
    }
}

fn raw_options(ip: IpAddr, target: SocketAddr, t: Transport) -> Request {
    Request::options(t, SocketAddr::new(ip, 5060), target)
}

async fn content_length_overflow(core: Arc<Core>, ip: IpAddr) -> Report {
    let target = core.addr(Transport::Tcp);
    let mut r = Report::default();
    let mut n = 0;
    for round in 0..4 {
        for value in ["18446744073709551615", "-1", "9999999999"] {
            let mut req = raw_options(ip, target, Transport::Tcp).to_bytes();
            let text = String::from_utf8(req.clone()).unwrap();
            req = text
                .replace("Content-Length: 0", &format!("Content-Length: {value}"))
                .into_bytes();
            req.extend_from_slice(b"v=0\r\n");
            let Ok(mut s) = tcp_from(ip, target).await else {
                continue;
            };
            n += 1;
            let _ = s.write_all(&req).await;
            let (got, closed) = until_closed(&mut s, Duration::from_secs(3)).await;
            if !closed {
                r.failures.push(format!(
                    "round {round}, Content-Length {value}: connection still open after 3 s"
                ));
            }
            if got.starts_with(b"SIP/2.0 2") {
                r.failures
                    .push(format!("Content-Length {value} was answered with a 2xx"));
            }
        }
    }
    r.sent = format!("{n} connections");
    r
}

async fn many_headers(core: Arc<Core>, ip: IpAddr) -> Report {
    let mut r = Report::default();
    let tcp = core.addr(Transport::Tcp);
    let udp = core.addr(Transport::Udp);
    let build = |t: Transport, target: SocketAddr| {
        let mut req = raw_options(ip, target, t);
        for i in 0..10_000 {
            req.extra.push(format!("X:{}", i % 10));
        }
        req.to_bytes()
    };
    let tcp_msg = build(Transport::Tcp, tcp);
    let udp_msg = build(Transport::Udp, udp);
    assert!(
        udp_msg.len() < 65_507,
        "the 10,000-header datagram must fit UDP"
    );
    let sock = UdpSocket::bind((ip, 0)).await.unwrap();
    let mut udp_answers = Vec::new();
    for i in 0..6 {
        if let Ok(mut s) = tcp_from(ip, tcp).await {
            let _ = s.write_all(&tcp_msg).await;
            let (got, closed) = until_closed(&mut s, Duration::from_secs(3)).await;
            if !closed {
                r.failures
                    .push(format!("TCP attempt {i}: not closed within 3 s"));
            }
            if got.starts_with(b"SIP/2.0 2") {
                r.failures
                    .push("10,000 headers answered 2xx over TCP".into());
            }
        }
        sock.send_to(&udp_msg, udp).await.unwrap();
        let mut buf = vec![0u8; 65_536];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), sock.recv(&mut buf)).await
        {
            if let Some(resp) = Response::parse(&buf[..n]) {
                udp_answers.push(format!("{} {}", resp.status, resp.reason));
                if resp.status < 400 {
                    r.failures
                        .push(format!("10,000 headers over UDP answered {}", resp.status));
                }
            }
        }
    }
    udp_answers.dedup();
    r.sent = format!(
        "6 TCP streams of {} bytes, 6 datagrams of {} bytes (UDP answers: {udp_answers:?})",
        tcp_msg.len(),
        udp_msg.len()
    );
    r
}

async fn long_header_line(core: Arc<Core>, ip: IpAddr) -> Report {
    const TOTAL: usize = 10 * 1024 * 1024;
    let target = core.addr(Transport::Tcp);
    let mut r = Report::default();
    let mut written_max = 0;
    let mut attempts = 0;
    let head = {
        let text = String::from_utf8(raw_options(ip, target, Transport::Tcp).to_bytes()).unwrap();
        let (start, _) = text.split_once("Content-Length").unwrap();
        format!("{start}X-Long: ")
    };
    let chunk = vec![b'a'; 64 * 1024];
    for i in 0..10 {
        let Ok(mut s) = tcp_from(ip, target).await else {
            continue;
        };
        attempts += 1;
        let started = Instant::now();
        let mut written = 0usize;
        let mut refused = s.write_all(head.as_bytes()).await.is_err();
        while !refused && written < TOTAL {
            match tokio::time::timeout(Duration::from_secs(10), s.write_all(&chunk)).await {
                Ok(Ok(())) => written += chunk.len(),
                Ok(Err(_)) => refused = true,
                Err(_) => break,
            }
        }
        written_max = written_max.max(written);
        let (_, closed) = until_closed(&mut s, Duration::from_secs(3)).await;
        if !refused || written >= TOTAL {
            r.failures.push(format!(
                "attempt {i}: the server took all {written} bytes of a 10 MB header line"
            ));
        }
        if !closed {
            r.failures.push(format!(
                "attempt {i}: connection not closed after the header line"
            ));
        }
        if started.elapsed() > Duration::from_secs(10) {
            r.failures.push(format!(
                "attempt {i}: took {:?} to be refused",
                started.elapsed()
            ));
        }
    }
    r.sent = format!(
        "{attempts} connections; at most {written_max} bytes of the 10 MB line were written before the server cut it"
    );
    r
}

async fn slowloris(core: Arc<Core>, ip: IpAddr) -> Report {
    let target = core.addr(Transport::Tcp);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        tasks.push(tokio::spawn(async move {
            let mut s = tcp_from(ip, target).await.ok()?;
            let bytes = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.7\r\n";
            let started = Instant::now();
            let mut buf = [0u8; 1024];
            for (i, b) in bytes.iter().enumerate() {
                if s.write_all(&[*b]).await.is_err() {
                    return Some((i, started.elapsed()));
                }
                match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some((i + 1, started.elapsed())),
                    _ => {}
                }
            }
            Some((bytes.len(), started.elapsed()))
        }));
    }
    let mut r = Report::default();
    let mut closed_after = Vec::new();
    for t in tasks {
        if let Some((sent, after)) = t.await.unwrap() {
            closed_after.push(after);
            // message_read_timeout_ms = 2000: closed after 2-3 bytes at 1 byte/s.
            if after > Duration::from_secs(5) || sent > 5 {
                r.failures.push(format!(
                    "a slowloris connection lasted {after:?} and sent {sent} bytes"
                ));
            }
        }
    }
    closed_after.sort();
    r.sent = format!(
        "{} connections at 1 byte/s, closed after {:?} to {:?}",
        closed_after.len(),
        closed_after.first().copied().unwrap_or_default(),
        closed_after.last().copied().unwrap_or_default()
    );
    r
}

async fn crlf_flood(core: Arc<Core>, ip: IpAddr) -> Report {
    let target = core.addr(Transport::Tcp);
    let flood = b"\r\n".repeat(100_000);
    let mut r = Report::default();
    let mut pongs = 0;
    for i in 0..10 {
        let Ok(mut s) = tcp_from(ip, target).await else {
            continue;
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&flood)).await;
        let (got, closed) = until_closed(&mut s, Duration::from_secs(3)).await;
        pongs += got.len() / 2;
        if !closed {
            r.failures
                .push(format!("attempt {i}: not closed after 100,000 CRLFs"));
        }
        if got.iter().any(|&b| b != b'\r' && b != b'\n') {
            r.failures.push(format!(
                "attempt {i}: a CRLF flood was answered with more than pongs"
            ));
        }
    }
    r.sent = format!("10 streams of 100,000 CRLFs; {pongs} pongs came back in all");
    r
}

async fn tls_garbage(core: Arc<Core>, ip: IpAddr) -> Report {
    let target = core.addr(Transport::Tls);
    let cert = core.cert.clone().expect("TLS core has a certificate");
    let mut hello = Vec::new();
    let mut client =
        rustls::ClientConnection::new(cert.client_config(), ServerName::from(target.ip())).unwrap();
    client.write_tls(&mut hello).unwrap();
    let truncated = hello[..hello.len() / 2].to_vec();
    let mut rng = Rng::new(0x715);
    let mut r = Report::default();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (bytes, half_close) = match i % 3 {
            0 => {
                let n = 1 + rng.below(4096);
                (rng.bytes(n), false)
            }
            1 => (truncated.clone(), true),
            _ => (truncated.clone(), false),
        };
        tasks.push(tokio::spawn(async move {
            let mut s = tcp_from(ip, target).await.ok()?;
            let started = Instant::now();
            let _ = s.write_all(&bytes).await;
            if half_close {
                let _ = s.shutdown().await;
            }
            // tls_handshake_timeout_ms = 2000.
            let (_, closed) = until_closed(&mut s, Duration::from_secs(5)).await;
            Some((closed, started.elapsed()))
        }));
    }
    let mut slowest = Duration::ZERO;
    for (i, t) in tasks.into_iter().enumerate() {
        if let Some((closed, after)) = t.await.unwrap() {
            slowest = slowest.max(after);
            if !closed {
                r.failures
                    .push(format!("TLS garbage connection {i} still open after 5 s"));
            }
        }
    }
    r.sent = format!(
        "4 random-byte and 8 truncated-ClientHello ({} of {} bytes) connections; all closed within {slowest:?}",
        truncated.len(),
        hello.len()
    );
    r
}

async fn connection_cap(core: Arc<Core>, ip: IpAddr) -> Report {
    let target = core.addr(Transport::Tcp);
    let mut conns = Vec::new();
    for _ in 0..30 {
        if let Ok(s) = tcp_from(ip, target).await {
            conns.push(s);
        }
    }
    let mut tasks = Vec::new();
    for mut s in conns {
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let (_, closed) = until_closed(&mut s, Duration::from_secs(5)).await;
            (closed, started.elapsed())
        }));
    }
    let mut r = Report::default();
    let (mut refused_at_once, mut closed) = (0, 0);
    for t in tasks {
        let (c, after) = t.await.unwrap();
        if c {
            closed += 1;
            if after < Duration::from_millis(1000) {
                refused_at_once += 1;
            }
        }
    }
    if refused_at_once < 10 {
        r.failures.push(format!(
            "only {refused_at_once} of 30 connections were refused at once (cap 20)"
        ));
    }
    if closed < 30 {
        r.failures.push(format!(
            "{} idle connections outlived first_message_timeout",
            30 - closed
        ));
    }
    r.sent = format!(
        "30 connections: {refused_at_once} refused at once, the others closed by first_message_timeout"
    );
    r
}

async fn udp_flood(core: Arc<Core>, ip: IpAddr) -> Report {
    let target = core.addr(Transport::Udp);
    let sock = UdpSocket::bind((ip, 0)).await.unwrap();
    let local = sock.local_addr().unwrap();
    // 10 x messages_per_sec_per_ip = 2000/s for 3 s: 10 datagrams every 5 ms.
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut sent = 0;
    let started = Instant::now();
    for _ in 0..600 {
        tick.tick().await;
        for _ in 0..10 {
            let req = Request::options(Transport::Udp, local, target).to_bytes();
            if sock.send_to(&req, target).await.is_ok() {
                sent += 1;
            }
        }
    }
    Report {
        sent: format!("{sent} datagrams in {:?}", started.elapsed()),
        ..Report::default()
    }
}

// ---------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------

struct Running {
    name: &'static str,
    ip: Option<IpAddr>,
    handle: JoinHandle<(Report, Duration)>,
}

async fn run_attack(kind: Kind, core: Arc<Core>, ip: IpAddr) -> Report {
    match kind {
        Kind::CorpusUdp => corpus_over_udp(core, ip).await,
        Kind::CorpusTcp => corpus_over_tcp(core, ip).await,
        Kind::ContentLength => content_length_overflow(core, ip).await,
        Kind::ManyHeaders => many_headers(core, ip).await,
        Kind::LongHeaderLine => long_header_line(core, ip).await,
        Kind::Slowloris => slowloris(core, ip).await,
        Kind::CrlfFlood => crlf_flood(core, ip).await,
        Kind::TlsGarbage => tls_garbage(core, ip).await,
        Kind::ConnectionCap => connection_cap(core, ip).await,
        Kind::UdpFlood => udp_flood(core, ip).await,
    }
}

fn spawn_attack<F>(
    delay: Duration,
    f: impl FnOnce() -> F + Send + 'static,
) -> JoinHandle<(Report, Duration)>
where
    F: std::future::Future<Output = Report> + Send + 'static,
{
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let started = Instant::now();
        let r = f().await;
        (r, started.elapsed())
    })
}

/// What went against expectations, and the summary printed at the end.
#[derive(Debug, Default)]
struct Outcome {
    failures: Vec<String>,
    summary: String,
}

impl Outcome {
    fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }

    fn line(&mut self, text: impl AsRef<str>) {
        self.summary.push_str(text.as_ref());
        self.summary.push('\n');
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incident_replay() {
    bounded(Duration::from_secs(240), replay()).await;
}

async fn replay() {
    let started = Instant::now();
    // The process runs in an empty directory (its data dir inside it), logging at
    // trace level to a file there.
    let core = Arc::new(
        CoreBuilder::new("incident")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .listen(Transport::Tls, LOCALHOST)
            .listen(Transport::Ws, LOCALHOST)
            .log_file("trace")
            .toml(CONFIG)
            .start()
            .await,
    );
    // Core dumps are off (RLIMIT_CORE 0): a crash loop could never fill the disk.
    assert_eq!(
        core.rlimit("Max core file size"),
        Some(("0".to_string(), "0".to_string())),
        "core dumps must be disabled"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch(core.clone(), stop.clone()));
    let until = Instant::now() + RUN;
    let good: Vec<_> = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
    ]
    .into_iter()
    .map(|t| (t, tokio::spawn(good_client(core.clone(), t, until))))
    .collect();
    let list = attacks();
    let running = spawn_attacks(&core, &list);

    let mut out = Outcome::default();
    out.line("attacks:");
    for Running { name, ip, handle } in running {
        match handle.await {
            Ok((report, took)) => {
                let ip = ip.map_or("pools".to_string(), |i| i.to_string());
                out.line(format!("  {ip:<11} {name}: {} [{took:.1?}]", report.sent));
                for f in report.failures {
                    out.fail(format!("{name}: {f}"));
                }
            }
            Err(e) => out.fail(format!("{name}: the attack task failed: {e}")),
        }
    }
    out.line(format!("attacks done at {:.1?}", started.elapsed()));
    out.line(format!(
        "well-behaved client on 127.0.0.1 ({GOOD_RATE}/s per transport):"
    ));
    for (t, handle) in good {
        match handle.await {
            Ok(g) => check_good(t, g, &mut out),
            Err(e) => out.fail(format!(
                "the well-behaved {} client failed: {e}",
                t.as_str()
            )),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let w = watcher.await.expect("watcher");
    if let Some(status) = core.exited() {
        panic!(
            "holdfast exited during the incident ({status}; first seen by the watcher: {:?})\n\
             - {}\n\n{}\n--- holdfast stdout/stderr (tail) ---\n{}",
            w.exited,
            out.failures.join("\n- "),
            out.summary,
            tail(&core.output(), 4000)
        );
    }

    let m = core.metrics().await;
    check_bans(&core, &list, &w, &m, &mut out).await;
    check_counters(&m, &mut out);
    check_memory_and_disk(&core, &w, &mut out);
    check_bans_enforced(&core, &m, &mut out).await;

    // Still a clean stop after all that.
    let stop_started = Instant::now();
    match core.terminate(Duration::from_secs(8)).await {
        Some(s) if s.code() == Some(0) => {}
        other => out.fail(format!("SIGTERM after the incident: {other:?}")),
    }
    out.line(format!(
        "SIGTERM to exit {:.1?}; {:.1?} in all",
        stop_started.elapsed(),
        started.elapsed()
    ));
    out.line("counters:");
    for prefix in [
        "holdfast_messages_in_total",
        "holdfast_messages_out_total",
        "holdfast_connections_total",
        "holdfast_limit_hits_total",
        "holdfast_parse_errors_total",
        "holdfast_framing_errors_total",
        "holdfast_panics_caught_total",
        "holdfast_banned_drops_total",
        "holdfast_overloaded_total",
        "holdfast_logs_suppressed_total",
    ] {
        for (k, v) in m.nonzero(prefix) {
            out.line(format!("  {k} {v}"));
        }
    }
    note(format!("incident replay\n{}", out.summary));
    assert!(
        out.failures.is_empty(),
        "the incident replay failed:\n- {}\n\n{}\n--- holdfast stdout/stderr (tail) ---\n{}",
        out.failures.join("\n- "),
        out.summary,
        tail(&core.output(), 4000)
    );
}

/// The attacks, staggered over the first half of the run, and the fuzz pools beside.
fn spawn_attacks(core: &Arc<Core>, list: &[Attack]) -> Vec<Running> {
    let mut running = Vec::new();
    for at in list {
        let (core, at) = (core.clone(), *at);
        running.push(Running {
            name: at.name,
            ip: Some(at.ip),
            handle: spawn_attack(Duration::from_secs(at.start_secs), move || {
                run_attack(at.kind, core, at.ip)
            }),
        });
    }
    let core = core.clone();
    running.push(Running {
        name: "mutated corpus from address pools",
        ip: None,
        handle: spawn_attack(Duration::from_secs(3), move || fuzz_pools(core)),
    });
    running
}

/// Every well-behaved request was answered 200, at about the intended rate.
fn check_good(t: Transport, g: GoodStats, out: &mut Outcome) {
    out.line(format!(
        "  {:<4} sent {} ok {} retransmitted {} reconnects {} max latency {:.1?}",
        t.as_str(),
        g.sent,
        g.ok,
        g.retransmitted,
        g.reconnects,
        g.max_latency
    ));
    if g.ok != g.sent || !g.failures.is_empty() {
        out.fail(format!(
            "well-behaved {} client: {} of {} answered 200; first failures: {:?}",
            t.as_str(),
            g.ok,
            g.sent,
            g.failures.iter().take(5).collect::<Vec<_>>()
        ));
    }
    // GOOD_RATE per second for RUN, less what slow answers delayed.
    if g.sent < GOOD_RATE * RUN.as_secs() / 2 {
        out.fail(format!(
            "well-behaved {} client sent only {} requests",
            t.as_str(),
            g.sent
        ));
    }
}

/// Every attack address is banned; 127.0.0.1 and the UDP fuzz pool are not.
async fn check_bans(core: &Core, list: &[Attack], w: &Watch, m: &Metrics, out: &mut Outcome) {
    let bans = core.bans().await;
    let banned: BTreeMap<IpAddr, String> = bans.iter().map(|b| (b.ip, b.reason.clone())).collect();
    let tcp_pool_banned = (1..=POOL)
        .map(pool_tcp)
        .filter(|ip| banned.contains_key(ip))
        .count();
    let bans_total = m.get("holdfast_bans_total");
    out.line(format!(
        "bans: {} active, holdfast_bans_total {bans_total}, {tcp_pool_banned} of them in the TCP fuzz pool",
        bans.len()
    ));
    for at in list {
        match banned.get(&at.ip) {
            Some(reason) => out.line(format!("  {:<11} banned ({reason}): {}", at.ip, at.name)),
            None => out.fail(format!(
                "{} ({}) is not banned; expected because: {}",
                at.ip, at.name, at.why_banned
            )),
        }
    }
    if banned.contains_key(&LOCALHOST) || w.exempt_banned {
        out.fail("the exempt well-behaved address 127.0.0.1 was banned");
    }
    let udp_pool_banned: Vec<_> = (1..=POOL)
        .map(pool_udp)
        .filter(|ip| banned.contains_key(ip))
        .collect();
    if !udp_pool_banned.is_empty() {
        out.fail(format!(
            "UDP fuzz senders with at most {POOL_VARIANTS_EACH} offences each \
             (threshold {OFFENCE_THRESHOLD}) were banned: {udp_pool_banned:?}"
        ));
    }
    if bans_total < list.len() as f64 {
        out.fail(format!(
            "holdfast_bans_total is {bans_total}, fewer than the {} attack addresses",
            list.len()
        ));
    }
}

/// No panic was caught, and every limit the attacks aim at was hit.
fn check_counters(m: &Metrics, out: &mut Outcome) {
    let panics = m.get("holdfast_panics_caught_total");
    if panics != 0.0 {
        out.fail(format!(
            "{panics} panics were caught: hostile input reached a panic \
             (the guard held, but the parser must be total)"
        ));
    }
    for (limit, why) in [
        ("head_size", "10 MB header line / 10,000 headers"),
        ("keepalive", "100,000 CRLFs"),
        ("read_timeout", "slowloris"),
        ("tls_handshake", "TLS garbage"),
        ("connections_per_ip", "connection cap"),
        ("message_rate", "UDP flood"),
    ] {
        if m.get(&format!("holdfast_limit_hits_total{{limit=\"{limit}\"}}")) < 1.0 {
            out.fail(format!("no {limit} limit hit recorded ({why})"));
        }
    }
    if m.get("holdfast_banned_drops_total") < 1.0 {
        out.fail("no packet or connection was dropped for a ban");
    }
}

/// The process stayed up, under the memory bound, and wrote only its capped log.
fn check_memory_and_disk(core: &Core, w: &Watch, out: &mut Outcome) {
    if let Some(exit) = &w.exited {
        out.fail(format!("the process exited: {exit}"));
    }
    if w.max_rss_kib > RSS_BOUND_KIB {
        out.fail(format!(
            "RSS reached {} KiB, over the {RSS_BOUND_KIB} KiB bound",
            w.max_rss_kib
        ));
    }
    // The run directory holds the log files and the data directory, nothing else:
    // no core file, no capture, no temporary file.
    let data_dir = core.run_dir.join("data");
    let files = files_under(&core.run_dir);
    let is_log = |p: &std::path::Path| {
        p.parent() == Some(core.run_dir.as_path())
            && p.file_name()
                .is_some_and(|n| LOG_FILES.contains(&n.to_string_lossy().as_ref()))
    };
    let log_bytes: u64 = files
        .iter()
        .filter(|(p, _)| is_log(p))
        .map(|(_, n)| n)
        .sum();
    let data_bytes: u64 = files
        .iter()
        .filter(|(p, _)| p.starts_with(&data_dir))
        .map(|(_, n)| n)
        .sum();
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| {
            p.strip_prefix(&core.run_dir)
                .unwrap_or(p)
                .display()
                .to_string()
        })
        .collect();
    let strangers: Vec<_> = files
        .iter()
        .filter(|(p, _)| !is_log(p) && !p.starts_with(&data_dir))
        .collect();
    if !strangers.is_empty() {
        out.fail(format!(
            "files other than the configured log and data directory were written: {strangers:?}"
        ));
    }
    let max_log = w.max_log_bytes.max(log_bytes);
    if max_log > LOG_BOUND {
        out.fail(format!(
            "the log files reached {max_log} bytes, over {LOG_BOUND}"
        ));
    }
    if data_bytes > DATA_BOUND {
        out.fail(format!(
            "the data directory holds {data_bytes} bytes, over {DATA_BOUND}"
        ));
    }
    out.line(format!(
        "process: max RSS {} KiB (bound {RSS_BOUND_KIB}), max open fds {}, {} samples; \
         logs {log_bytes} bytes now, {} at most (bound {LOG_BOUND}); data dir {data_bytes} \
         bytes; files {names:?}; \
         {} bytes on stdout/stderr",
        w.max_rss_kib,
        w.max_fds,
        w.samples,
        w.max_log_bytes,
        core.output_bytes()
    ));
}

/// A ban holds on every transport: a banned address is refused at accept and its
/// datagrams are dropped, while a new well-behaved connection is served.
async fn check_bans_enforced(core: &Core, m: &Metrics, out: &mut Outcome) {
    for (t, ip) in [(Transport::Tcp, hostile(3)), (Transport::Tls, hostile(9))] {
        if let Ok(mut s) = tcp_from(ip, core.addr(t)).await {
            let (got, closed) = until_closed(&mut s, Duration::from_secs(2)).await;
            if !closed || !got.is_empty() {
                out.fail(format!(
                    "banned {ip} was served on {} (closed: {closed}, got {} bytes)",
                    t.as_str(),
                    got.len()
                ));
            }
        }
    }
    let udp = core.addr(Transport::Udp);
    let mut banned = Client::connect_from(core, Transport::Udp, hostile(2), udp)
        .await
        .expect("udp socket");
    let req = banned.options(udp);
    if let Ok((r, _)) = banned
        .request_with(&req, Duration::from_secs(1), None)
        .await
    {
        out.fail(format!(
            "banned 127.0.0.2 got an answer over UDP: {} {}",
            r.status, r.reason
        ));
    }
    let mut fresh = Client::connect(core, Transport::Tcp, false).await;
    let req = fresh.options(core.addr(Transport::Tcp));
    match fresh.request_with(&req, Duration::from_secs(5), None).await {
        Ok((r, _)) if r.status == 200 => {}
        other => out.fail(format!(
            "a new well-behaved TCP connection after the incident: {other:?}"
        )),
    }
    let drops = m.get("holdfast_banned_drops_total");
    out.line(format!(
        "bans enforced: {drops} packets or connections dropped"
    ));
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    &s[start..]
}

/// Known gap: on WebSocket flows `message_read_timeout_ms` does not apply once the
/// first message has arrived: a peer that starts a frame and sends it one byte a
/// second keeps its connection for `idle_timeout_ms` (10 minutes by default), where
/// the same peer on TCP or TLS is cut after `message_read_timeout_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_slow_frame_is_cut_by_the_read_timeout() {
    bounded(Duration::from_secs(60), async {
        let core = CoreBuilder::new("ws-slow")
            .listen(Transport::Ws, LOCALHOST)
            .toml("[limits]\nmessage_read_timeout_ms = 2000\nfirst_message_timeout_ms = 2000")
            .start()
            .await;
        let target = core.addr(Transport::Ws);
        let mut s = tcp_from(hostile(12), target).await.unwrap();
        let handshake = format!(
            "GET / HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: sip\r\n\r\n"
        );
        s.write_all(handshake.as_bytes()).await.unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 101"), "WebSocket upgrade refused");
        // One complete (masked) message: a CRLF CRLF keepalive.
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x84];
        frame.extend_from_slice(&mask);
        frame.extend(b"\r\n\r\n".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        s.write_all(&frame).await.unwrap();
        // Then a 1000-byte text frame, one byte a second.
        s.write_all(&[0x81, 0xFE, 0x03, 0xE8, 1, 2, 3, 4]).await.unwrap();
        let started = Instant::now();
        let mut open_for = Duration::ZERO;
        while started.elapsed() < Duration::from_secs(8) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if s.write_all(b"a").await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(10), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => open_for = started.elapsed(),
            }
        }
        assert!(
            open_for < Duration::from_secs(5),
            "a WebSocket frame trickling at 1 byte/s was still open after {open_for:?} (message_read_timeout_ms = 2000)"
        );
    })
    .await;
}
