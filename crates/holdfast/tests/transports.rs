//! End to end over every transport: the real binary on loopback answers OPTIONS,
//! applies the validator's statuses, answers keepalives, and interoperates with
//! sipsak and sipp.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{
    assert_options_ok, bounded, free_port, free_udp_run, note, run_bounded, Client, Core,
    CoreBuilder, Recv, Request, Response, TempDir, Transport, LOCALHOST, LOCALHOST6,
};

const LIMIT: Duration = Duration::from_secs(120);
const SIPSAK: &str = "/usr/bin/sipsak";
const SIPP: &str = "/usr/bin/sipp";

async fn every_transport() -> Core {
    CoreBuilder::new("transports")
        .all_v4()
        .listen(Transport::Udp, LOCALHOST6)
        .listen(Transport::Tcp, LOCALHOST6)
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_gets_200_with_allow_on_every_transport() {
    bounded(LIMIT, async {
        let core = every_transport().await;
        let flows = [
            (Transport::Udp, false),
            (Transport::Tcp, false),
            (Transport::Tls, false),
            (Transport::Ws, false),
            (Transport::Wss, false),
            (Transport::Udp, true),
            (Transport::Tcp, true),
        ];
        for (t, v6) in flows {
            let mut c = Client::connect(&core, t, v6).await;
            let target = c.target(&core);
            // Several requests on one flow: a connection stays usable after an answer.
            for _ in 0..3 {
                let req = c.options(target);
                let r = c.request(&req).await;
                assert_options_ok(&r, &req);
            }
        }
        let m = core.metrics().await;
        for (t, n) in [
            ("udp", 6.0),
            ("tcp", 6.0),
            ("tls", 3.0),
            ("ws", 3.0),
            ("wss", 3.0),
        ] {
            let sample = format!("holdfast_messages_in_total{{transport=\"{t}\"}}");
            assert_eq!(m.get(&sample), n, "{sample}");
            let sample = format!("holdfast_messages_out_total{{transport=\"{t}\"}}");
            assert_eq!(m.get(&sample), n, "{sample}");
        }
        core.assert_alive();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_without_the_sip_subprotocol_is_refused() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("ws-proto")
            .listen(Transport::Ws, LOCALHOST)
            .start()
            .await;
        let tcp = tokio::net::TcpStream::connect(core.addr(Transport::Ws))
            .await
            .unwrap();
        let url = format!("ws://{}/", core.addr(Transport::Ws));
        let refused = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::client_async(url, tcp),
        )
        .await
        .expect("handshake answered");
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 400)
            }
            other => panic!(
                "a handshake without Sec-WebSocket-Protocol: sip must fail with HTTP 400: {other:?}"
            ),
        }
        // With the subprotocol it works.
        let mut c = Client::connect(&core, Transport::Ws, false).await;
        let req = c.options(core.addr(Transport::Ws));
        assert_options_ok(&c.request(&req).await, &req);
    })
    .await;
}

/// The validator's answers, checked on one flow.
async fn check_statuses(core: &Core, t: Transport) {
    let mut c = Client::connect(core, t, false).await;
    let target = c.target(core);

    let mut req = c.options(target);
    req.max_forwards = Some("0".into());
    let r = c.request(&req).await;
    assert_eq!(
        r.status,
        483,
        "Max-Forwards 0 over {}:\n{}",
        t.as_str(),
        r.raw
    );

    let mut req = c.options(target);
    req.version = "SIP/7.0".into();
    let r = c.request(&req).await;
    assert_eq!(r.status, 505, "SIP/7.0 over {}:\n{}", t.as_str(), r.raw);

    let req = Request::new("FROBNICATE", t, c.local(), target);
    let r = c.request(&req).await;
    assert_eq!(
        r.status,
        501,
        "unknown method over {}:\n{}",
        t.as_str(),
        r.raw
    );

    let req = Request::new("INVITE", t, c.local(), target)
        .header(&format!("Contact: <sip:e2e@{}>", c.local()));
    let r = c.request(&req).await;
    assert_eq!(r.status, 405, "INVITE over {}:\n{}", t.as_str(), r.raw);
    assert!(
        r.header("Allow").is_some_and(|a| a.contains("OPTIONS")),
        "405 without Allow:\n{}",
        r.raw
    );
    // The INVITE server transaction retransmits its final answer until the ACK.
    c.send(&req.ack(&r).to_bytes()).await.unwrap();

    // A request that does not parse but whose Via can be read: 400 naming the header.
    let mut req = c.options(target);
    req.cseq = "abc OPTIONS".into();
    let r = c.request(&req).await;
    assert_eq!(r.status, 400, "bad CSeq over {}:\n{}", t.as_str(), r.raw);
    assert!(
        r.reason.contains("CSeq"),
        "reason should name CSeq: {:?}",
        r.reason
    );

    // A second, malformed From: 400 naming From (as a bad value or a duplicate).
    let req = c
        .options(target)
        .header("From: this is <<< not a name-addr");
    let r = c.request(&req).await;
    assert_eq!(
        r.status,
        400,
        "duplicate From over {}:\n{}",
        t.as_str(),
        r.raw
    );
    assert!(
        r.reason.contains("From"),
        "reason should name From: {:?}",
        r.reason
    );

    // A response that matches no transaction is dropped: nothing comes back, and the
    // next request's answer is the next thing on the flow.
    let stray = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/{} {};branch=z9hG4bK-stray-{}\r\nFrom: <sip:x@holdfast.test>;tag=1\r\nTo: <sip:y@holdfast.test>;tag=2\r\nCall-ID: stray-{}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        t.via(),
        c.local(),
        support::unique(),
        support::unique()
    );
    c.send(stray.as_bytes()).await.unwrap();
    if t == Transport::Udp {
        c.expect_silence(Duration::from_millis(700)).await;
    }
    let req = c.options(target);
    c.send(&req.to_bytes()).await.unwrap();
    match c.recv(Duration::from_secs(5)).await {
        Recv::Message(m) => {
            let r = Response::parse(&m).expect("a response");
            assert_options_ok(&r, &req);
        }
        other => panic!("expected the OPTIONS answer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_statuses_over_udp_and_tcp() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("statuses")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .listen(Transport::Ws, LOCALHOST)
            .start()
            .await;
        for t in [Transport::Udp, Transport::Tcp, Transport::Ws] {
            check_statuses(&core, t).await;
        }
        let m = core.metrics().await;
        assert!(
            m.get("holdfast_responses_dropped_total") >= 3.0,
            "stray responses are counted as dropped"
        );
        assert!(m.get("holdfast_parse_errors_total") >= 6.0);
        core.assert_alive();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_ping_gets_a_crlf_pong() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("ping")
            .listen(Transport::Tcp, LOCALHOST)
            .listen(Transport::Tls, LOCALHOST)
            .start()
            .await;
        for t in [Transport::Tcp, Transport::Tls] {
            let mut c = Client::connect(&core, t, false).await;
            let target = c.target(&core);
            for _ in 0..3 {
                c.send(b"\r\n\r\n").await.unwrap();
                match c.recv_raw(Duration::from_secs(5)).await {
                    Recv::Message(m) => assert_eq!(m, b"\r\n", "pong over {}", t.as_str()),
                    other => panic!("no pong over {}: {other:?}", t.as_str()),
                }
            }
            // A lone CRLF (a pong, or padding) is not answered.
            c.send(b"\r\n").await.unwrap();
            match c.recv_raw(Duration::from_millis(500)).await {
                Recv::Timeout => {}
                other => panic!("a lone CRLF must not be answered: {other:?}"),
            }
            // The flow still carries SIP.
            let req = c.options(target);
            assert_options_ok(&c.request(&req).await, &req);
        }
        core.assert_alive();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipsak_options_over_udp_and_tcp() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("sipsak")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .start()
            .await;
        for t in [Transport::Udp, Transport::Tcp] {
            let target = core.addr(t);
            let mut cmd = Command::new(SIPSAK);
            // -H: our own address in the headers (no host name lookup); -S: send and
            // receive on one UDP port, so that the answer reaches sipsak.
            cmd.args(["-vv", "-H", "127.0.0.1"]);
            match t {
                Transport::Udp => cmd.arg("-S"),
                _ => cmd.args(["--transport", "tcp"]),
            };
            cmd.args(["-s", &format!("sip:{target}")]);
            let out = run_bounded(cmd, Duration::from_secs(30))
                .await
                .unwrap_or_else(|| panic!("sipsak over {} did not finish in 30 s", t.as_str()));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let status = out.status;
            assert!(
                status.success(),
                "sipsak over {} exited {status}:\n{stdout}{stderr}",
                t.as_str()
            );
            assert!(
                stdout.contains("SIP/2.0 200 OK"),
                "sipsak over {} saw no 200:\n{stdout}",
                t.as_str()
            );
        }
        let m = core.metrics().await;
        assert!(m.get("holdfast_messages_in_total{transport=\"udp\"}") >= 1.0);
        assert!(m.get("holdfast_messages_in_total{transport=\"tcp\"}") >= 1.0);
    })
    .await;
}

/// The sipp statistics (the last row of `-trace_stat`), by column name.
fn sipp_stats(csv: &str) -> Vec<(String, String)> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
    let last: Vec<&str> = lines.next_back().unwrap_or_default().split(';').collect();
    header
        .into_iter()
        .zip(last)
        .map(|(h, v)| (h.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_options_scenario_over_udp_and_tcp() {
    const CALLS: u32 = 200;
    bounded(LIMIT, async {
        let core = CoreBuilder::new("sipp")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .start()
            .await;
        let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/options.xml");
        assert!(scenario.is_file(), "{} is missing", scenario.display());
        for (mode, t) in [("u1", Transport::Udp), ("t1", Transport::Tcp)] {
            let target = core.addr(t);
            let mut done = None;
            for attempt in 0..3 {
                let work = TempDir::new("sipp-run");
                let mut cmd = Command::new(SIPP);
                cmd.current_dir(work.path())
                    .arg("-sf")
                    .arg(&scenario)
                    .args(["-t", mode, "-i", "127.0.0.1"])
                    .args(["-p", &free_port(LOCALHOST, true).to_string()])
                    .args(["-cp", &free_port(LOCALHOST, true).to_string()])
                    .args(["-mp", &free_udp_run(4).to_string()])
                    .args(["-m", &CALLS.to_string(), "-r", "100", "-timeout", "30s"])
                    .args([
                        "-timeout_error",
                        "-nostdin",
                        "-trace_stat",
                        "-stf",
                        "stat.csv",
                    ])
                    .args(["-fd", "1"])
                    .arg(target.to_string());
                let started = tokio::time::Instant::now();
                let out = run_bounded(cmd, Duration::from_secs(45))
                    .await
                    .unwrap_or_else(|| panic!("sipp -t {mode} did not stop within 45 s"));
                let stats =
                    std::fs::read_to_string(work.path().join("stat.csv")).unwrap_or_default();
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let status = out.status;
                // sipp exits 254 (-2) when it cannot bind its own sockets: pick new ports.
                if status.code() == Some(254) && attempt < 2 {
                    note(format!("sipp could not bind (attempt {attempt}); retrying"));
                    continue;
                }
                done = Some((status, stats, text, started.elapsed()));
                break;
            }
            let (status, stats, text, took) = done.expect("sipp ran");
            let tail: String = text.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            assert!(
                status.success(),
                "sipp -t {mode} exited {status} (1 = some calls failed):\n{tail}"
            );
            let stats = sipp_stats(&stats);
            let get = |k: &str| {
                stats
                    .iter()
                    .find(|(h, _)| h == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("no {k} in sipp's statistics: {stats:?}"))
            };
            assert_eq!(
                get("SuccessfulCall(C)"),
                CALLS.to_string(),
                "sipp -t {mode}"
            );
            assert_eq!(get("FailedCall(C)"), "0", "sipp -t {mode}");
            note(format!(
                "sipp -t {mode}: {CALLS} OPTIONS, 0 failed, {took:?}"
            ));
        }
        let m = core.metrics().await;
        assert!(m.get("holdfast_messages_in_total{transport=\"udp\"}") >= f64::from(CALLS));
        assert!(m.get("holdfast_messages_in_total{transport=\"tcp\"}") >= f64::from(CALLS));
        core.assert_alive();
    })
    .await;
}

/// A peer that sends and never reads is cut off when what waits for it passes
/// `write_queue_bytes`, and counted; the core and other connections carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_closed_at_its_write_queue_bound() {
    use tokio::io::AsyncWriteExt;
    bounded(LIMIT, async {
        let core = CoreBuilder::new("writeq")
            .listen(Transport::Tcp, LOCALHOST)
            .toml(
                // Only the byte bound can close it: the message bound is out of reach.
                "[limits]\nwrite_queue = 1000000\nwrite_queue_bytes = 65536\n\
                 messages_per_sec_per_ip = 1000000\n\
                 message_burst_per_ip = 1000000\n[bans]\nenabled = false\n",
            )
            .start()
            .await;
        let target = core.addr(Transport::Tcp);
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut stream = sock.connect(target).await.unwrap();
        let local = stream.local_addr().unwrap();
        // Pipelined OPTIONS whose answers (about 400 bytes each) are never read: the
        // kernel's buffers fill, then the core's queue. Writing fails once the core
        // has closed the connection.
        let mut closed = false;
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            let mut chunk = Vec::new();
            for _ in 0..100 {
                chunk.extend(Request::options(Transport::Tcp, local, target).to_bytes());
            }
            let write = tokio::time::timeout_at(deadline, stream.write_all(&chunk));
            if let Ok(Err(_)) = write.await {
                closed = true;
                break;
            }
            // Paced so that the core answers what it reads while the test writes.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            closed,
            "the connection of a peer that never reads stayed open"
        );
        // Well before a write of the core's would time out (10 s): the bound did it.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        let m = core.metrics().await;
        assert!(
            m.get("holdfast_limit_hits_total{limit=\"write_queue\"}") >= 1.0,
            "{:?}",
            m.nonzero("holdfast_limit_hits_total")
        );
        // Another connection is served as before.
        let mut c = Client::connect(&core, Transport::Tcp, false).await;
        let req = c.options(c.target(&core));
        assert_options_ok(&c.request(&req).await, &req);
        core.assert_alive();
    })
    .await;
}
