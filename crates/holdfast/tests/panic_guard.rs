//! A fault while handling one peer's message costs that peer's connection (or that
//! datagram) and nothing else: the test-only `[testing] panic_marker_header` makes
//! handling panic, and the process must go on serving everyone else.

mod support;

use std::time::Duration;

use support::{
    assert_options_ok, bounded, Client, Core, CoreBuilder, Recv, Response, Transport, LOCALHOST,
};

const LIMIT: Duration = Duration::from_secs(60);
const MARKER: &str = "X-Panic";

async fn core_with_marker() -> Core {
    CoreBuilder::new("panic")
        .all_v4()
        .toml(&format!("[testing]\npanic_marker_header = \"{MARKER}\""))
        .start()
        .await
}

async fn panics(core: &Core) -> f64 {
    core.metrics().await.get("holdfast_panics_caught_total")
}

async fn assert_ok(c: &mut Client, core: &Core, times: usize) {
    let target = c.target(core);
    for _ in 0..times {
        let req = c.options(target);
        assert_options_ok(&c.request(&req).await, &req);
    }
}

/// Two connections; the one that sends the marker is closed without an answer, the
/// other keeps being served.
async fn stream_case(core: &Core, t: Transport) {
    let before = panics(core).await;
    let mut victim = Client::connect(core, t, false).await;
    let mut bystander = Client::connect(core, t, false).await;
    assert_ok(&mut victim, core, 2).await;
    assert_ok(&mut bystander, core, 2).await;

    let bomb = victim
        .options(victim.target(core))
        .header(&format!("{MARKER}: boom"));
    victim.send(&bomb.to_bytes()).await.unwrap();
    match victim.recv(Duration::from_secs(5)).await {
        Recv::Closed(_) => {}
        Recv::Message(m) => panic!(
            "{}: the panicking connection got an answer instead of being closed:\n{}",
            t.as_str(),
            String::from_utf8_lossy(&m)
        ),
        Recv::Timeout => panic!("{}: the panicking connection was not closed", t.as_str()),
    }

    assert_ok(&mut bystander, core, 5).await;
    assert_eq!(panics(core).await, before + 1.0, "{}", t.as_str());
    // Only the bystander's connection is still open.
    let open = format!("holdfast_connections_open{{transport=\"{}\"}}", t.as_str());
    let mut n = 0.0;
    for _ in 0..50 {
        n = core.metrics().await.get(&open);
        if n == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(n, 1.0, "{open}");
    core.assert_alive();
    // A new connection from the same address is welcome.
    let mut again = Client::connect(core, t, false).await;
    assert_ok(&mut again, core, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_closes_only_its_tcp_connection() {
    bounded(LIMIT, async {
        let core = core_with_marker().await;
        stream_case(&core, Transport::Tcp).await;
        assert_eq!(panics(&core).await, 1.0);
        let (status, _) = support::http_get(core.admin, "/health").await.unwrap();
        assert_eq!(status, 200);
        core.assert_alive();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_closes_only_its_tls_or_ws_connection() {
    bounded(LIMIT, async {
        let core = core_with_marker().await;
        for (i, t) in [Transport::Tls, Transport::Ws, Transport::Wss]
            .into_iter()
            .enumerate()
        {
            stream_case(&core, t).await;
            assert_eq!(panics(&core).await, (i + 1) as f64);
        }
        core.assert_alive();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_drops_only_its_datagram() {
    bounded(LIMIT, async {
        let core = core_with_marker().await;
        let mut victim = Client::connect(&core, Transport::Udp, false).await;
        let mut bystander = Client::connect(&core, Transport::Udp, false).await;
        assert_ok(&mut victim, &core, 1).await;
        assert_ok(&mut bystander, &core, 1).await;

        let target = core.addr(Transport::Udp);
        let bomb = victim.options(target).header(&format!("{MARKER}: boom"));
        victim.send(&bomb.to_bytes()).await.unwrap();
        // Dropped: no answer, not even to a retransmission.
        match victim.recv(Duration::from_millis(800)).await {
            Recv::Timeout => {}
            Recv::Message(m) => panic!(
                "the panicking datagram was answered:\n{:?}",
                Response::parse(&m).map(|r| r.raw)
            ),
            Recv::Closed(e) => panic!("udp recv failed: {e}"),
        }
        assert_eq!(panics(&core).await, 1.0);

        // The socket keeps serving, the sender of the bad datagram included.
        assert_ok(&mut bystander, &core, 5).await;
        assert_ok(&mut victim, &core, 5).await;
        let fresh = Client::connect_from(&core, Transport::Udp, LOCALHOST, target).await;
        assert_ok(&mut fresh.unwrap(), &core, 1).await;
        assert_eq!(panics(&core).await, 1.0);
        core.assert_alive();
    })
    .await;
}

/// Known gap: the guard's own log line is rate-limited, but the standard panic hook
/// still writes every panic (with a backtrace when RUST_BACKTRACE is set) to stderr,
/// so a peer that can trigger a panic can grow whatever stderr is written to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caught_panics_do_not_flood_stderr() {
    bounded(LIMIT, async {
        let core = core_with_marker().await;
        let mut c = Client::connect(&core, Transport::Udp, false).await;
        let target = core.addr(Transport::Udp);
        let before = core.output_bytes();
        for _ in 0..100 {
            let bomb = c.options(target).header(&format!("{MARKER}: boom"));
            c.send(&bomb.to_bytes()).await.unwrap();
        }
        let req = c.options(target);
        assert_options_ok(&c.request(&req).await, &req);
        // The datagrams are spread over the core shards by Call-ID: the answer above
        // can come back while another shard is still working through its share.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while panics(&core).await < 100.0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(panics(&core).await, 100.0);
        let grown = core.output_bytes() - before;
        assert!(
            grown < 4096,
            "100 panics wrote {grown} bytes to stderr; like the log, it must be rate-limited"
        );
    })
    .await;
}
