//! The command line: `check-config` on good and bad files, SIGTERM, and `run` with no
//! configuration at all.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

use support::{
    assert_options_ok, bounded, note, run_bounded, Client, Core, CoreBuilder, Launch, Recv,
    TempDir, Transport, LOCALHOST,
};

const LIMIT: Duration = Duration::from_secs(60);
const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

async fn check_config(file: &Path) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config").arg(file);
    let out = run_bounded(cmd, Duration::from_secs(30))
        .await
        .expect("check-config finishes within 30 s");
    (
        out.status.code().expect("check-config exits with a code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[tokio::test]
async fn check_config_accepts_the_shipped_examples() {
    for name in ["holdfast.toml", "minimal.toml"] {
        let file = examples().join(name);
        let (code, stdout, stderr) = check_config(&file).await;
        assert_eq!(code, 0, "{name}: {stdout}{stderr}");
        assert_eq!(stdout.trim(), format!("{}: ok", file.display()), "{name}");
        assert!(stderr.is_empty(), "{name}: {stderr}");
    }
}

#[tokio::test]
async fn check_config_prints_every_problem_and_exits_2() {
    let dir = TempDir::new("check-config");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        r#"
[sip]
listen = ["udp:127.0.0.1:5060", "carrier-pigeon:127.0.0.1:5060", "tcp:127.0.0.1"]

[limits]
max_connections_per_ip = 0

[bans]
forever = true

[admin]
listen = "nowhere"
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = check_config(&file).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(!stdout.contains("ok"), "{stdout}");
    let expected = [
        ("unknown field", "`forever`"),
        ("bad listener transport", "carrier-pigeon"),
        ("bad listener address", "\"tcp:127.0.0.1\""),
        (
            "zero limit",
            "max_connections_per_ip: must be greater than 0",
        ),
        ("bad admin address", "[admin] listen: \"nowhere\""),
    ];
    for (what, needle) in expected {
        assert!(
            stderr.contains(needle),
            "{what} ({needle}) not reported:\n{stderr}"
        );
    }
    let prefix = format!("{}: ", file.display());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per problem:\n{stderr}"
    );
    assert!(lines.iter().all(|l| l.starts_with(&prefix)), "{stderr}");
}

/// Known gap: a section that fails to deserialize (here, an unknown key in `[sip]`)
/// is replaced by its defaults, so its other problems go unreported.
#[tokio::test]
async fn check_config_reports_problems_beside_an_unknown_key() {
    let dir = TempDir::new("check-config-same-section");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[sip]\nlisten = [\"carrier-pigeon:127.0.0.1:5060\"]\ncolour = \"blue\"\n",
    )
    .unwrap();
    let (code, _, stderr) = check_config(&file).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("colour"), "{stderr}");
    assert!(stderr.contains("carrier-pigeon"), "{stderr}");
}

#[tokio::test]
async fn check_config_refuses_unreadable_and_unparsable_files() {
    let dir = TempDir::new("check-config-broken");
    let missing = dir.path().join("missing.toml");
    let (code, _, stderr) = check_config(&missing).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("missing.toml"), "{stderr}");

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[sip\nlisten = 3\n").unwrap();
    let (code, stdout, stderr) = check_config(&broken).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("TOML parse error"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_0_within_the_grace_time() {
    // The harness configures shutdown_grace_secs = 2.
    const GRACE: Duration = Duration::from_secs(2);
    bounded(LIMIT, async {
        let core = CoreBuilder::new("sigterm")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .listen(Transport::Ws, LOCALHOST)
            .start()
            .await;
        // Open flows at the time of the signal: a TCP connection that was served and
        // an idle WebSocket.
        let mut tcp = Client::connect(&core, Transport::Tcp, false).await;
        let req = tcp.options(core.addr(Transport::Tcp));
        assert_options_ok(&tcp.request(&req).await, &req);
        let mut ws = Client::connect(&core, Transport::Ws, false).await;
        let mut udp = Client::connect(&core, Transport::Udp, false).await;
        let req = udp.options(core.addr(Transport::Udp));
        assert_options_ok(&udp.request(&req).await, &req);

        let started = Instant::now();
        let status = core
            .terminate(GRACE + Duration::from_secs(5))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "no exit within {GRACE:?} + 5 s of SIGTERM:\n{}",
                    core.output()
                )
            });
        let took = started.elapsed();
        assert_eq!(
            status.code(),
            Some(0),
            "exit status {status}:\n{}",
            core.output()
        );
        assert!(
            took <= GRACE + Duration::from_millis(500),
            "SIGTERM took {took:?}, more than the {GRACE:?} grace"
        );
        note(format!("SIGTERM to exit: {took:?}"));
        assert!(
            matches!(tcp.recv(Duration::from_secs(2)).await, Recv::Closed(_)),
            "the TCP connection is closed"
        );
        assert!(
            matches!(ws.recv(Duration::from_secs(2)).await, Recv::Closed(_)),
            "the WebSocket is closed"
        );
        assert!(
            tokio::net::TcpStream::connect(core.admin).await.is_err(),
            "the admin listener is gone"
        );
    })
    .await;
}

/// What `holdfast run` binds with no configuration.
fn default_ports_free() -> Result<(), String> {
    let checks: [(&str, SocketAddr, bool); 3] = [
        ("udp", "0.0.0.0:5060".parse().unwrap(), true),
        ("tcp", "0.0.0.0:5060".parse().unwrap(), false),
        ("admin tcp", "127.0.0.1:9060".parse().unwrap(), false),
    ];
    for (what, addr, udp) in checks {
        let free = if udp {
            std::net::UdpSocket::bind(addr).is_ok()
        } else {
            std::net::TcpListener::bind(addr).is_ok()
        };
        if !free {
            return Err(format!("{what} {addr} is in use"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_a_config_serves_the_defaults() {
    bounded(LIMIT, async {
        if let Err(why) = default_ports_free() {
            note(format!(
                "run_without_a_config_serves_the_defaults: skipped, {why} (holdfast's default ports)"
            ));
            return;
        }
        let dir = TempDir::new("no-config");
        let launch = Launch {
            args: vec!["run".into()],
            run_dir: dir.path().to_path_buf(),
            admin: "127.0.0.1:9060".parse().unwrap(),
            listeners: vec![
                (Transport::Udp, "127.0.0.1:5060".parse().unwrap()),
                (Transport::Tcp, "127.0.0.1:5060".parse().unwrap()),
            ],
            cert: None,
            config: "(none: holdfast run)".into(),
        };
        let core = match Core::launch(launch).await {
            Ok(core) => core,
            // Someone took a default port between the check and the start.
            Err(why) if why.contains("Address already in use") => {
                note(format!("run_without_a_config_serves_the_defaults: skipped, {why}"));
                return;
            }
            Err(why) => panic!("holdfast run (no config) did not start: {why}"),
        };
        for t in [Transport::Udp, Transport::Tcp] {
            let mut c = Client::connect(&core, t, false).await;
            let req = c.options(core.addr(t));
            assert_options_ok(&c.request(&req).await, &req);
        }
        let status = core
            .terminate(Duration::from_secs(10))
            .await
            .expect("exit after SIGTERM");
        assert_eq!(status.code(), Some(0), "{}", core.output());
    })
    .await;
}
