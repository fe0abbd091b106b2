//! Shared harness for the end-to-end tests: start the real `holdfast` binary on
//! loopback with a temporary configuration, talk SIP to it over real sockets (UDP,
//! TCP, TLS, WS, WSS), and read its admin API.
//!
//! Rules every test follows through this module: only 127.0.0.0/8 and ::1 are ever
//! addressed, no name is ever resolved, every wait has a deadline, and the process
//! is killed when its [`Core`] is dropped.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub(crate) mod phones;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

pub(crate) const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub(crate) const LOCALHOST6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Prints a progress line or a summary for whoever runs the tests (shown with
/// `--nocapture`, or when the test fails).
#[allow(clippy::print_stdout)] // test output for the person running the test
pub(crate) fn note(msg: impl AsRef<str>) {
    println!("{}", msg.as_ref());
}

/// Runs a test body under a deadline, so that no test can hang.
pub(crate) async fn bounded<T>(limit: Duration, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}

// ---------------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------------

/// A directory removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        loop {
            let path = std::env::temp_dir().join(format!(
                "holdfast-e2e-{tag}-{}-{}-{:x}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed),
                process_nonce() & 0xffff_ffff
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return TempDir(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("create {}: {e}", path.display()),
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every regular file under `dir`, recursively, with its size.
pub(crate) fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                out.push((e.path(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------

/// A port on `ip` that is free for TCP (and for UDP as well when `udp` is set) at the
/// moment of the call. Another process may take it before we use it: callers retry.
pub(crate) fn free_port(ip: IpAddr, udp: bool) -> u16 {
    for _ in 0..200 {
        let Ok(l) = std::net::TcpListener::bind(SocketAddr::new(ip, 0)) else {
            continue;
        };
        let Ok(port) = l.local_addr().map(|a| a.port()) else {
            continue;
        };
        if !udp || std::net::UdpSocket::bind(SocketAddr::new(ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// A UDP port `p` on 127.0.0.1 with `p..p+n` all free (sipp binds media ports in pairs).
pub(crate) fn free_udp_run(n: u16) -> u16 {
    for _ in 0..200 {
        let base = free_port(LOCALHOST, true);
        if base > u16::MAX - n {
            continue;
        }
        let held: Vec<_> = (0..n)
            .map_while(|i| std::net::UdpSocket::bind((LOCALHOST, base + i)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no run of {n} free UDP ports");
}

// ---------------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------------

/// A self-signed certificate for 127.0.0.1, ::1 and localhost, made at test time.
#[derive(Debug, Clone)]
pub(crate) struct TestCert {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) der: CertificateDer<'static>,
}

impl TestCert {
    pub(crate) fn generate() -> TestCert {
        let ck = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ])
        .expect("rcgen self-signed certificate");
        TestCert {
            cert_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
            der: ck.cert.der().clone(),
        }
    }

    /// A rustls client configuration that trusts only this certificate.
    pub(crate) fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).expect("add test root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

// ---------------------------------------------------------------------------------
// The process
// ---------------------------------------------------------------------------------

/// A SIP transport, as in holdfast's `[sip] listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    pub(crate) const ALL: [Transport; 5] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// The Via transport token (RFC 3261 §20.42, RFC 7118 §5).
    pub(crate) fn via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    fn uses_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }
}

/// The last bytes a process wrote to stdout and stderr, kept in memory only.
#[derive(Debug, Default)]
struct OutputTail {
    buf: VecDeque<u8>,
    total: u64,
}

const OUTPUT_TAIL: usize = 256 * 1024;

impl OutputTail {
    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        self.buf.extend(data);
        while self.buf.len() > OUTPUT_TAIL {
            self.buf.pop_front();
        }
    }
}

fn drain(mut from: impl std::io::Read + Send + 'static, into: Arc<Mutex<OutputTail>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into.lock().unwrap().push(&buf[..n]),
            }
        }
    });
}

/// How to start a core.
#[derive(Debug, Clone)]
pub(crate) struct CoreBuilder {
    listeners: Vec<(Transport, IpAddr)>,
    sections: String,
    log_level: Option<String>,
    cert: Option<TestCert>,
    tag: String,
    admin_token: Option<String>,
    data_dir: Option<PathBuf>,
    extra_args: Vec<String>,
}

impl CoreBuilder {
    pub(crate) fn new(tag: &str) -> CoreBuilder {
        CoreBuilder {
            listeners: Vec::new(),
            sections: String::new(),
            log_level: None,
            cert: None,
            tag: tag.to_string(),
            admin_token: None,
            data_dir: None,
            extra_args: Vec::new(),
        }
    }

    /// Sets `[admin] token`, which the directory and registrations API require.
    pub(crate) fn admin_token(mut self, token: &str) -> CoreBuilder {
        self.admin_token = Some(token.to_string());
        self
    }

    /// Runs on this data directory (kept by the caller, so that a second core can be
    /// started on it) instead of a fresh one in the run directory.
    pub(crate) fn data_dir(mut self, dir: &Path) -> CoreBuilder {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Makes sure a user exists at start: `holdfast run --user user@domain:password`.
    pub(crate) fn user(mut self, spec: &str) -> CoreBuilder {
        self.extra_args.push("--user".into());
        self.extra_args.push(spec.to_string());
        self
    }

    /// Adds a listener on `ip`; its port is chosen at start.
    pub(crate) fn listen(mut self, t: Transport, ip: IpAddr) -> CoreBuilder {
        self.listeners.push((t, ip));
        self
    }

    /// Every transport on 127.0.0.1.
    pub(crate) fn all_v4(mut self) -> CoreBuilder {
        for t in Transport::ALL {
            self.listeners.push((t, LOCALHOST));
        }
        self
    }

    /// Extra TOML appended to the configuration (sections other than `[sip]`,
    /// `[admin]`, `[tls]`; `[log]` only without [`CoreBuilder::log_file`]).
    pub(crate) fn toml(mut self, text: &str) -> CoreBuilder {
        self.sections.push_str(text);
        self.sections.push('\n');
        self
    }

    /// Logs at `level` to `holdfast.log` in the run directory, rotated at 1 MiB with
    /// two old files kept.
    pub(crate) fn log_file(mut self, level: &str) -> CoreBuilder {
        self.log_level = Some(level.to_string());
        self
    }

    pub(crate) fn cert(mut self, cert: TestCert) -> CoreBuilder {
        self.cert = Some(cert);
        self
    }

    /// Starts the binary and waits until `/health` answers. Ports taken by someone
    /// else between choosing and binding are chosen again.
    pub(crate) async fn start(self) -> Core {
        let root = TempDir::new(&self.tag);
        let run_dir = root.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let cert = match (&self.cert, self.listeners.iter().any(|(t, _)| t.uses_tls())) {
            (Some(c), _) => Some(c.clone()),
            (None, true) => Some(TestCert::generate()),
            (None, false) => None,
        };
        let mut tls_section = String::new();
        if let Some(c) = &cert {
            let certs = root.path().join("certs");
            std::fs::create_dir_all(&certs).unwrap();
            std::fs::write(certs.join("cert.pem"), &c.cert_pem).unwrap();
            std::fs::write(certs.join("key.pem"), &c.key_pem).unwrap();
            tls_section = format!(
                "[tls]\ncertificate = {:?}\nprivate_key = {:?}\n",
                certs.join("cert.pem"),
                certs.join("key.pem")
            );
        }
        let mut last_failure = String::new();
        for attempt in 0..6 {
            let mut taken = Vec::new();
            let mut listeners = Vec::new();
            for (t, ip) in &self.listeners {
                let port = loop {
                    let p = free_port(*ip, *t == Transport::Udp);
                    if !taken.contains(&p) {
                        break p;
                    }
                };
                taken.push(port);
                listeners.push((*t, SocketAddr::new(*ip, port)));
            }
            let admin_port = loop {
                let p = free_port(LOCALHOST, false);
                if !taken.contains(&p) {
                    break p;
                }
            };
            let admin = SocketAddr::new(LOCALHOST, admin_port);
            let mut config = String::from("[sip]\nlisten = [");
            for (i, (t, a)) in listeners.iter().enumerate() {
                if i > 0 {
                    config.push_str(", ");
                }
                let _ = write!(config, "\"{}:{a}\"", t.as_str());
            }
            config.push_str("]\nshutdown_grace_secs = 2\n");
            let _ = writeln!(config, "[admin]\nlisten = \"{admin}\"");
            if let Some(token) = &self.admin_token {
                let _ = writeln!(config, "token = {token:?}");
            }
            config.push_str(&tls_section);
            if let Some(level) = &self.log_level {
                let _ = writeln!(
                    config,
                    "[log]\nfile = {:?}\nlevel = {level:?}\nmax_bytes = 1048576\nkeep = 2",
                    run_dir.join("holdfast.log")
                );
            }
            config.push_str(&self.sections);
            let config_path = root.path().join("holdfast.toml");
            std::fs::write(&config_path, &config).unwrap();

            let mut args = vec![
                "run".into(),
                "--config".into(),
                config_path.into_os_string(),
            ];
            let data_dir = self
                .data_dir
                .clone()
                .unwrap_or_else(|| run_dir.join("data"));
            args.push("--data-dir".into());
            args.push(data_dir.clone().into_os_string());
            args.extend(self.extra_args.iter().map(Into::into));
            let launch = Launch {
                args,
                run_dir: run_dir.clone(),
                admin,
                listeners,
                cert: cert.clone(),
                config: config.clone(),
            };
            match Core::launch(launch).await {
                Ok(mut core) => {
                    core.root = Some(root);
                    core.data_dir = Some(data_dir);
                    return core;
                }
                Err(failure) => {
                    let clash =
                        failure.contains("Address already in use") || failure.contains("binding");
                    last_failure = format!("{failure}\n--- config ---\n{config}");
                    if !clash {
                        break;
                    }
                    note(format!(
                        "port clash on attempt {attempt}; choosing new ports"
                    ));
                }
            }
        }
        panic!("holdfast did not start: {last_failure}");
    }
}

/// A running holdfast process, killed when dropped.
#[derive(Debug)]
pub(crate) struct Core {
    pid: u32,
    child: Mutex<Child>,
    pub(crate) admin: SocketAddr,
    listeners: Vec<(Transport, SocketAddr)>,
    pub(crate) cert: Option<TestCert>,
    pub(crate) config: String,
    /// The process's working directory (empty at start; holds the log file if any).
    pub(crate) run_dir: PathBuf,
    output: Arc<Mutex<OutputTail>>,
    root: Option<TempDir>,
    data_dir: Option<PathBuf>,
}

/// How to launch the binary: its arguments and what the harness must know about it.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) args: Vec<std::ffi::OsString>,
    /// The working directory of the process.
    pub(crate) run_dir: PathBuf,
    /// Where `/health` will answer.
    pub(crate) admin: SocketAddr,
    pub(crate) listeners: Vec<(Transport, SocketAddr)>,
    pub(crate) cert: Option<TestCert>,
    /// The configuration text, for failure messages.
    pub(crate) config: String,
}

impl Drop for Core {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

impl Core {
    /// Starts the binary and waits for `/health`. On failure the process is killed
    /// and the error carries what it printed.
    pub(crate) async fn launch(launch: Launch) -> Result<Core, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(&launch.args)
            .current_dir(&launch.run_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn holdfast");
        let output = Arc::new(Mutex::new(OutputTail::default()));
        drain(child.stdout.take().unwrap(), output.clone());
        drain(child.stderr.take().unwrap(), output.clone());
        let core = Core {
            pid: child.id(),
            child: Mutex::new(child),
            admin: launch.admin,
            listeners: launch.listeners,
            cert: launch.cert,
            config: launch.config,
            run_dir: launch.run_dir,
            output,
            root: None,
            data_dir: None,
        };
        match core.wait_healthy(Duration::from_secs(15)).await {
            Ok(()) => Ok(core),
            Err(why) => {
                let exited = core.exited();
                let _ = core.kill();
                // Let the drain threads read what the process wrote last.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let out = core.output();
                Err(format!("{why} (exit: {exited:?})\n--- output ---\n{out}"))
            }
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    fn kill(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        child.wait().ok()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and reaps it.
    pub(crate) fn kill_9(&self) -> Option<ExitStatus> {
        self.kill()
    }

    /// The data directory of a core started by [`CoreBuilder::start`].
    pub(crate) fn data_dir(&self) -> &Path {
        self.data_dir
            .as_deref()
            .expect("a core started by CoreBuilder has a data directory")
    }

    /// A request to the admin API with an optional bearer token and JSON body.
    pub(crate) async fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        http_request(self.admin, method, path, token, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Every binding of `/api/v1/registrations`.
    pub(crate) async fn registrations(&self, token: &str) -> Vec<serde_json::Value> {
        let (status, body) = self
            .api("GET", "/api/v1/registrations", Some(token), None)
            .await;
        assert_eq!(status, 200, "/api/v1/registrations: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("registrations JSON");
        v["registrations"]
            .as_array()
            .expect("registrations array")
            .clone()
    }

    /// The listener of transport `t` on the IPv4 (or IPv6) loopback.
    pub(crate) fn addr(&self, t: Transport) -> SocketAddr {
        self.addr_on(t, false)
    }

    pub(crate) fn addr_on(&self, t: Transport, v6: bool) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(lt, a)| *lt == t && a.is_ipv6() == v6)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no {} listener (v6: {v6})", t.as_str()))
    }

    /// What the process wrote to stdout and stderr (its last 256 KiB), and the total
    /// number of bytes written.
    pub(crate) fn output(&self) -> String {
        let tail = self.output.lock().unwrap();
        let bytes: Vec<u8> = tail.buf.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub(crate) fn output_bytes(&self) -> u64 {
        self.output.lock().unwrap().total
    }

    /// The exit status if the process has exited.
    pub(crate) fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    /// Panics with the process's output when it is no longer running.
    pub(crate) fn assert_alive(&self) {
        if let Some(status) = self.exited() {
            panic!("holdfast exited ({status}); its output:\n{}", self.output());
        }
    }

    /// The resident set size in KiB (`VmRSS` of /proc/PID/status).
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// A line of /proc/PID/limits, e.g. "Max core file size", as (soft, hard).
    pub(crate) fn rlimit(&self, name: &str) -> Option<(String, String)> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid)).ok()?;
        let rest = limits.lines().find_map(|l| l.strip_prefix(name))?;
        let mut fields = rest.split_whitespace();
        Some((fields.next()?.to_string(), fields.next()?.to_string()))
    }

    /// Open file descriptors of the process.
    pub(crate) fn open_fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .ok()
            .map(|d| d.count())
    }

    async fn wait_healthy(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Err(format!("holdfast exited during start-up ({status})"));
            }
            if let Ok((200, body)) = http_get(self.admin, "/health").await {
                if body.contains("\"ok\"") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("/health did not answer within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The Prometheus text of `/metrics`.
    pub(crate) async fn metrics(&self) -> Metrics {
        let (status, body) = http_get(self.admin, "/metrics")
            .await
            .expect("GET /metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        Metrics::parse(&body)
    }

    /// The ban list of `/api/v1/bans`.
    pub(crate) async fn bans(&self) -> Vec<Ban> {
        let (status, body) = http_get(self.admin, "/api/v1/bans")
            .await
            .expect("GET /api/v1/bans");
        assert_eq!(status, 200, "/api/v1/bans: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("bans JSON");
        v["bans"]
            .as_array()
            .expect("bans array")
            .iter()
            .map(|b| Ban {
                ip: b["ip"].as_str().expect("ip").parse().expect("ip address"),
                reason: b["reason"].as_str().unwrap_or_default().to_string(),
                expires_in_secs: b["expires_in_secs"].as_u64().expect("expires_in_secs"),
            })
            .collect()
    }

    /// Sends SIGTERM (through kill(1)) and waits up to `limit` for the exit.
    pub(crate) async fn terminate(&self, limit: Duration) -> Option<ExitStatus> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One entry of `/api/v1/bans`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ban {
    pub(crate) ip: IpAddr,
    pub(crate) reason: String,
    pub(crate) expires_in_secs: u64,
}

/// Samples of a Prometheus text page.
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics(Vec<(String, f64)>);

impl Metrics {
    pub(crate) fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    Some((k.to_string(), v.trim().parse().ok()?))
                })
                .collect(),
        )
    }

    /// One sample, by name and labels exactly as rendered, e.g.
    /// `holdfast_limit_hits_total{limit="read_timeout"}`.
    pub(crate) fn get(&self, sample: &str) -> f64 {
        self.0
            .iter()
            .find(|(k, _)| k == sample)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no metric {sample}"))
    }

    /// The sum of a family's samples.
    pub(crate) fn sum(&self, family: &str) -> f64 {
        let found: Vec<f64> = self
            .0
            .iter()
            .filter(|(k, _)| k == family || k.starts_with(&format!("{family}{{")))
            .map(|(_, v)| *v)
            .collect();
        assert!(!found.is_empty(), "no metric family {family}");
        found.iter().sum()
    }

    /// Samples of a family that are not zero, for summaries.
    pub(crate) fn nonzero(&self, prefix: &str) -> Vec<(String, f64)> {
        self.0
            .iter()
            .filter(|(k, v)| k.starts_with(prefix) && *v != 0.0)
            .cloned()
            .collect()
    }
}

/// A minimal HTTP/1.1 GET (`Connection: close`) with a deadline.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// A minimal HTTP/1.1 request (`Connection: close`) with an optional bearer token and
/// JSON body, with a deadline.
pub(crate) async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(t) = token {
            let _ = write!(req, "Authorization: Bearer {t}\r\n");
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        let _ = write!(req, "Content-Length: {}\r\n\r\n{body}", body.len());
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------
// SIP messages
// ---------------------------------------------------------------------------------

/// A random number drawn once per test process (from the standard library's hash
/// seed), so that tokens differ between runs.
pub(crate) fn process_nonce() -> u64 {
    static NONCE: OnceLock<u64> = OnceLock::new();
    *NONCE.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    })
}

/// A unique token (branch suffix, Call-ID, tag).
pub(crate) fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:x}{:x}",
        process_nonce() & 0xffff_ffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A request built field by field; [`Request::options`] gives a valid OPTIONS.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) version: String,
    pub(crate) via_transport: String,
    pub(crate) sent_by: String,
    pub(crate) branch: String,
    pub(crate) max_forwards: Option<String>,
    pub(crate) call_id: String,
    pub(crate) to: String,
    pub(crate) cseq: String,
    pub(crate) extra: Vec<String>,
}

impl Request {
    /// A valid OPTIONS to `target`, sent from `local` over `t`, with a fresh branch
    /// and Call-ID.
    pub(crate) fn options(t: Transport, local: SocketAddr, target: SocketAddr) -> Request {
        Request::new("OPTIONS", t, local, target)
    }

    pub(crate) fn new(
        method: &str,
        t: Transport,
        local: SocketAddr,
        target: SocketAddr,
    ) -> Request {
        let id = unique();
        Request {
            method: method.to_string(),
            uri: format!("sip:{target}"),
            version: "SIP/2.0".into(),
            via_transport: t.via().into(),
            sent_by: local.to_string(),
            branch: format!("z9hG4bK-{id}"),
            max_forwards: Some("70".into()),
            call_id: format!("{id}@holdfast.test"),
            to: "<sip:core@holdfast.test>".into(),
            cseq: format!("1 {method}"),
            extra: Vec::new(),
        }
    }

    /// The ACK for a non-2xx final response to this INVITE (RFC 3261 §17.1.1.3): same
    /// branch, the response's To (with its tag), CSeq method ACK.
    pub(crate) fn ack(&self, resp: &Response) -> Request {
        let mut ack = self.clone();
        ack.method = "ACK".into();
        ack.to = resp.header("To").unwrap_or_default().to_string();
        ack.cseq = format!("{} ACK", self.cseq.split(' ').next().unwrap_or("1"));
        ack.extra.clear();
        ack
    }

    pub(crate) fn header(mut self, line: &str) -> Request {
        self.extra.push(line.to_string());
        self
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!(
            "{} {} {}\r\nVia: SIP/2.0/{} {};branch={};rport\r\n",
            self.method, self.uri, self.version, self.via_transport, self.sent_by, self.branch
        );
        if let Some(mf) = &self.max_forwards {
            let _ = write!(s, "Max-Forwards: {mf}\r\n");
        }
        let _ = write!(
            s,
            "From: <sip:e2e@holdfast.test>;tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
            &self.branch[8..],
            self.to,
            self.call_id,
            self.cseq
        );
        for h in &self.extra {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }
}

/// A parsed SIP response (enough of it for the tests).
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) reason: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) raw: String,
}

impl Response {
    pub(crate) fn parse(bytes: &[u8]) -> Option<Response> {
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let head = raw.split("\r\n\r\n").next()?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?;
        let rest = status_line.strip_prefix("SIP/2.0 ")?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let headers = lines
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                Some((n.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        Some(Response {
            status: code.parse().ok()?,
            reason: reason.to_string(),
            headers,
            raw,
        })
    }

    /// The first value of a header (case-insensitive name).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True when this answers `req`: same Call-ID and top-Via branch.
    pub(crate) fn answers(&self, req: &Request) -> bool {
        self.header("Call-ID") == Some(req.call_id.as_str())
            && self
                .header("Via")
                .is_some_and(|v| v.contains(&format!("branch={}", req.branch)))
    }
}

/// The Content-Length of a header block, if present and numeric.
fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l"))
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

// ---------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------

/// Any byte stream the clients use (TCP, or TLS over TCP).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What a receive gave.
#[derive(Debug)]
pub(crate) enum Recv {
    Message(Vec<u8>),
    Timeout,
    /// The peer closed the connection (EOF or reset).
    Closed(String),
}

/// A SIP client over one transport.
pub(crate) enum Client {
    Udp {
        sock: UdpSocket,
        target: SocketAddr,
    },
    Stream {
        io: Pin<Box<dyn Io>>,
        buf: Vec<u8>,
        local: SocketAddr,
        transport: Transport,
    },
    Ws {
        ws: Box<WebSocketStream<Pin<Box<dyn Io>>>>,
        local: SocketAddr,
        transport: Transport,
    },
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({}, {})", self.transport().as_str(), self.local())
    }
}

/// Connects TCP from `from` (a loopback address; port 0 = any) to `to`.
pub(crate) async fn tcp_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = if to.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    sock.bind(SocketAddr::new(from, 0))?;
    let s = tokio::time::timeout(Duration::from_secs(5), sock.connect(to))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let _ = s.set_nodelay(true);
    Ok(s)
}

impl Client {
    /// Connects to the core's `t` listener from the loopback of the same family.
    pub(crate) async fn connect(core: &Core, t: Transport, v6: bool) -> Client {
        let from = if v6 { LOCALHOST6 } else { LOCALHOST };
        Client::connect_from(core, t, from, core.addr_on(t, v6))
            .await
            .unwrap_or_else(|e| panic!("connect {} from {from}: {e}", t.as_str()))
    }

    /// Connects to `target` (a `t` listener of `core`) from source address `from`.
    pub(crate) async fn connect_from(
        core: &Core,
        t: Transport,
        from: IpAddr,
        target: SocketAddr,
    ) -> anyhow::Result<Client> {
        if t == Transport::Udp {
            let sock = UdpSocket::bind(SocketAddr::new(from, 0)).await?;
            return Ok(Client::Udp { sock, target });
        }
        let tcp = tcp_from(from, target).await?;
        let local = tcp.local_addr()?;
        let io: Pin<Box<dyn Io>> = if t.uses_tls() {
            let cert = core.cert.as_ref().expect("a TLS core has a certificate");
            let connector = tokio_rustls::TlsConnector::from(cert.client_config());
            let tls = tokio::time::timeout(
                Duration::from_secs(5),
                connector.connect(ServerName::from(target.ip()), tcp),
            )
            .await??;
            Box::pin(tls)
        } else {
            Box::pin(tcp)
        };
        match t {
            Transport::Tcp | Transport::Tls => Ok(Client::Stream {
                io,
                buf: Vec::new(),
                local,
                transport: t,
            }),
            _ => {
                let scheme = if t == Transport::Wss { "wss" } else { "ws" };
                let mut req = format!("{scheme}://{target}/").into_client_request()?;
                req.headers_mut()
                    .insert("Sec-WebSocket-Protocol", "sip".parse()?);
                let (ws, resp) = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio_tungstenite::client_async(req, io),
                )
                .await??;
                anyhow::ensure!(
                    resp.headers()
                        .get("Sec-WebSocket-Protocol")
                        .is_some_and(|v| v == "sip"),
                    "the server did not select the sip subprotocol"
                );
                Ok(Client::Ws {
                    ws: Box::new(ws),
                    local,
                    transport: t,
                })
            }
        }
    }

    pub(crate) fn transport(&self) -> Transport {
        match self {
            Client::Udp { .. } => Transport::Udp,
            Client::Stream { transport, .. } | Client::Ws { transport, .. } => *transport,
        }
    }

    /// The local address, for Via.
    pub(crate) fn local(&self) -> SocketAddr {
        match self {
            Client::Udp { sock, .. } => sock.local_addr().expect("udp local addr"),
            Client::Stream { local, .. } | Client::Ws { local, .. } => *local,
        }
    }

    /// The remote address.
    pub(crate) fn target(&self, core: &Core) -> SocketAddr {
        match self {
            Client::Udp { target, .. } => *target,
            _ => core.addr_on(self.transport(), self.local().is_ipv6()),
        }
    }

    /// A fresh OPTIONS from this client to `target`.
    pub(crate) fn options(&self, target: SocketAddr) -> Request {
        Request::options(self.transport(), self.local(), target)
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Client::Udp { sock, target } => sock.send_to(bytes, *target).await.map(|_| ()),
            Client::Stream { io, .. } => {
                io.write_all(bytes).await?;
                io.flush().await
            }
            Client::Ws { ws, .. } => {
                let msg = match std::str::from_utf8(bytes) {
                    Ok(t) => WsMessage::text(t),
                    Err(_) => WsMessage::binary(bytes.to_vec()),
                };
                ws.send(msg).await.map_err(std::io::Error::other)
            }
        }
    }

    /// The next SIP message (a datagram, a WebSocket message, or a stream message
    /// framed by Content-Length; CRLF keepalives between stream messages skipped).
    pub(crate) async fn recv(&mut self, limit: Duration) -> Recv {
        let deadline = tokio::time::Instant::now() + limit;
        match self {
            Client::Udp { sock, .. } => {
                let mut buf = vec![0u8; 65_536];
                match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                    Ok(Ok((n, _))) => Recv::Message(buf[..n].to_vec()),
                    Ok(Err(e)) => Recv::Closed(e.to_string()),
                    Err(_) => Recv::Timeout,
                }
            }
            Client::Stream { io, buf, .. } => loop {
                while buf.starts_with(b"\r\n") {
                    buf.drain(..2);
                }
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let body = content_length(&buf[..end]).unwrap_or(0);
                    let total = end + 4 + body;
                    if buf.len() >= total {
                        return Recv::Message(buf.drain(..total).collect());
                    }
                }
                let mut chunk = [0u8; 16 * 1024];
                match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
                    Ok(Ok(0)) => return Recv::Closed("EOF".into()),
                    Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                    Ok(Err(e)) => return Recv::Closed(e.to_string()),
                    Err(_) => return Recv::Timeout,
                }
            },
            Client::Ws { ws, .. } => loop {
                match tokio::time::timeout_at(deadline, ws.next()).await {
                    Err(_) => return Recv::Timeout,
                    Ok(None) => return Recv::Closed("EOF".into()),
                    Ok(Some(Err(e))) => return Recv::Closed(e.to_string()),
                    Ok(Some(Ok(WsMessage::Text(t)))) => {
                        return Recv::Message(t.as_bytes().to_vec())
                    }
                    Ok(Some(Ok(WsMessage::Binary(b)))) => return Recv::Message(b.to_vec()),
                    Ok(Some(Ok(WsMessage::Close(_)))) => return Recv::Closed("close".into()),
                    Ok(Some(Ok(_))) => continue,
                }
            },
        }
    }

    /// Raw bytes from a stream client, whatever they are (for pongs).
    pub(crate) async fn recv_raw(&mut self, limit: Duration) -> Recv {
        let Client::Stream { io, buf, .. } = self else {
            panic!("recv_raw is for stream clients");
        };
        if !buf.is_empty() {
            return Recv::Message(std::mem::take(buf));
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(limit, io.read(&mut chunk)).await {
            Ok(Ok(0)) => Recv::Closed("EOF".into()),
            Ok(Ok(n)) => Recv::Message(chunk[..n].to_vec()),
            Ok(Err(e)) => Recv::Closed(e.to_string()),
            Err(_) => Recv::Timeout,
        }
    }

    /// Sends `req` and waits for the response that answers it (other messages are
    /// skipped). UDP retransmits once after `retransmit` when set.
    pub(crate) async fn request_with(
        &mut self,
        req: &Request,
        limit: Duration,
        retransmit: Option<Duration>,
    ) -> Result<(Response, bool), String> {
        let bytes = req.to_bytes();
        self.send(&bytes)
            .await
            .map_err(|e| format!("send failed: {e}"))?;
        let start = tokio::time::Instant::now();
        let deadline = start + limit;
        let mut resend_at = retransmit.map(|d| start + d);
        let mut retransmitted = false;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(format!("no answer within {limit:?}"));
            }
            let wait_until = resend_at.map_or(deadline, |r| r.min(deadline));
            match self.recv(wait_until - now).await {
                Recv::Message(m) => {
                    if let Some(r) = Response::parse(&m) {
                        if r.answers(req) {
                            return Ok((r, retransmitted));
                        }
                    }
                }
                Recv::Timeout => {
                    if resend_at.is_some_and(|r| tokio::time::Instant::now() >= r) {
                        resend_at = None;
                        retransmitted = true;
                        self.send(&bytes)
                            .await
                            .map_err(|e| format!("resend failed: {e}"))?;
                    }
                }
                Recv::Closed(why) => return Err(format!("connection closed: {why}")),
            }
        }
    }

    /// Sends `req` and returns the answer, within 5 s.
    pub(crate) async fn request(&mut self, req: &Request) -> Response {
        match self.request_with(req, Duration::from_secs(5), None).await {
            Ok((r, _)) => r,
            Err(e) => panic!(
                "{} {} over {}: {e}",
                req.method,
                req.uri,
                self.transport().as_str()
            ),
        }
    }

    /// Asserts that nothing arrives within `quiet`.
    pub(crate) async fn expect_silence(&mut self, quiet: Duration) {
        match self.recv(quiet).await {
            Recv::Timeout => {}
            other => panic!("expected no message, got {other:?}"),
        }
    }

    /// Waits up to `limit` for the server to close the connection, ignoring whatever
    /// it sends first. True when it closed.
    pub(crate) async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            match self.recv(deadline - now).await {
                Recv::Closed(_) => return true,
                Recv::Timeout => return false,
                Recv::Message(_) => {}
            }
        }
    }
}

/// Asserts a 200 answer to OPTIONS with the capabilities headers.
pub(crate) fn assert_options_ok(r: &Response, req: &Request) {
    assert_eq!(r.status, 200, "OPTIONS answer:\n{}", r.raw);
    assert!(
        r.answers(req),
        "answer does not match the request:\n{}",
        r.raw
    );
    let allow = r
        .header("Allow")
        .unwrap_or_else(|| panic!("no Allow:\n{}", r.raw));
    assert!(allow.contains("OPTIONS"), "Allow lacks OPTIONS: {allow}");
    assert!(r.header("Accept").is_some(), "no Accept:\n{}", r.raw);
    assert!(r.header("Supported").is_some(), "no Supported:\n{}", r.raw);
    assert!(
        r.header("To").is_some_and(|t| t.contains("tag=")),
        "no To tag:\n{}",
        r.raw
    );
    assert_eq!(r.header("CSeq"), Some(req.cseq.as_str()), "{}", r.raw);
}

// ---------------------------------------------------------------------------------
// External programs
// ---------------------------------------------------------------------------------

/// The statistics of a sipp run (the last row of its `-trace_stat` file), by column
/// name.
pub(crate) fn sipp_stats(csv: &str) -> Vec<(String, String)> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
    let last: Vec<&str> = lines.next_back().unwrap_or_default().split(';').collect();
    header
        .into_iter()
        .zip(last)
        .map(|(h, v)| (h.to_string(), v.to_string()))
        .collect()
}

/// Runs a program to completion, or kills it at `limit` and gives `None`. Panics with
/// a clear message when the program is not installed.
pub(crate) async fn run_bounded(cmd: Command, limit: Duration) -> Option<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{program} is not installed; these tests need it (Debian: apt-get install sip-tester sipsak, or run scripts/test)"
        ),
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    // On timeout the future, which owns the child, is dropped: kill_on_drop kills it.
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => Some(out),
        Ok(Err(e)) => panic!("waiting for {program}: {e}"),
        Err(_) => None,
    }
}

// ---------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------

/// The torture corpora: every `testdata/rfc4475/*.dat`, `testdata/rfc5118/*.dat` and
/// `testdata/rfc5118/wire/*.dat`, as (name, bytes).
pub(crate) fn corpus() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let mut out = Vec::new();
    for dir in ["rfc4475", "rfc5118", "rfc5118/wire"] {
        let d = root.join(dir);
        let mut names: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "dat"))
            .collect();
        names.sort();
        for p in names {
            let bytes = std::fs::read(&p).unwrap();
            out.push((
                format!("{dir}/{}", p.file_name().unwrap().to_string_lossy()),
                bytes,
            ));
        }
    }
    assert!(
        out.len() >= 70,
        "the torture corpus is incomplete: {} files",
        out.len()
    );
    out
}

/// A small deterministic PRNG (xorshift64*), so every run sends the same variants.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A byte-mutated copy of `input`: 1 to 8 bit flips, byte overwrites, insertions
/// (biased to SIP's structural bytes), deletions and duplicated runs.
pub(crate) fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    const SPECIAL: &[u8] = b"\r\n:;,<>\"\\%@= \t\x00\xff0123456789-";
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        if v.is_empty() {
            v.push(b'\n');
        }
        let i = rng.below(v.len());
        match rng.below(6) {
            0 => v[i] ^= 1 << rng.below(8),
            1 => v[i] = rng.next_u64() as u8,
            2 => {
                let b = SPECIAL[rng.below(SPECIAL.len())];
                v.insert(i, b);
            }
            3 => {
                v.remove(i);
            }
            4 => {
                let n = (1 + rng.below(16)).min(v.len() - i);
                v.drain(i..i + n);
            }
            _ => {
                let n = (1 + rng.below(64)).min(v.len() - i);
                let run: Vec<u8> = v[i..i + n].to_vec();
                v.splice(i..i, run);
            }
        }
    }
    v
}

// ---------------------------------------------------------------------------------
// Restarts
// ---------------------------------------------------------------------------------

impl Core {
    /// Kills the process with SIGKILL and starts the binary again on the same
    /// configuration, data directory, listeners and admin address: what a supervisor
    /// does after a crash. Users given with [`CoreBuilder::user`] are in the data
    /// directory already.
    pub(crate) async fn kill_9_and_restart(mut self) -> Core {
        self.kill_9();
        let root = self.root.take().expect("a core started by CoreBuilder");
        let data_dir = self.data_dir.take().expect("a core started by CoreBuilder");
        let launch = Launch {
            args: vec![
                "run".into(),
                "--config".into(),
                root.path().join("holdfast.toml").into_os_string(),
                "--data-dir".into(),
                data_dir.clone().into_os_string(),
            ],
            run_dir: self.run_dir.clone(),
            admin: self.admin,
            listeners: self.listeners.clone(),
            cert: self.cert.clone(),
            config: self.config.clone(),
        };
        let mut core = Core::launch(launch)
            .await
            .unwrap_or_else(|why| panic!("holdfast did not restart: {why}"));
        core.root = Some(root);
        core.data_dir = Some(data_dir);
        core
    }
}

// ---------------------------------------------------------------------------------
// SIP messages of either kind
// ---------------------------------------------------------------------------------

/// A SIP request or response as received, parsed loosely: enough for the tests to
/// look at every field. Compact header names are given in their long form.
#[derive(Debug, Clone)]
pub(crate) struct SipMessage {
    /// The request or status line.
    pub(crate) start: String,
    /// Every header field in order, as (long name, value).
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
    pub(crate) raw: String,
}

/// The long form of a compact header name (RFC 3261 §7.3.3).
fn long_name(name: &str) -> &str {
    match name.to_ascii_lowercase().as_str() {
        "v" => "Via",
        "f" => "From",
        "t" => "To",
        "i" => "Call-ID",
        "m" => "Contact",
        "l" => "Content-Length",
        "c" => "Content-Type",
        "k" => "Supported",
        _ => name,
    }
}

/// The comma-separated items of a header value, commas inside `<…>` or quotes kept.
pub(crate) fn split_list(value: &str) -> Vec<String> {
    let (mut out, mut item) = (Vec::new(), String::new());
    let (mut angle, mut quoted) = (false, false);
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(item.trim().to_string());
                item.clear();
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    if !item.trim().is_empty() {
        out.push(item.trim().to_string());
    }
    out
}

impl SipMessage {
    pub(crate) fn parse(bytes: &[u8]) -> Option<SipMessage> {
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let start = lines.next()?.to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let (_, v) = headers.last_mut()?;
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            let (n, v) = line.split_once(':')?;
            headers.push((long_name(n.trim()).to_string(), v.trim().to_string()));
        }
        Some(SipMessage {
            start,
            headers,
            body: body.to_string(),
            raw,
        })
    }

    /// The method of a request.
    pub(crate) fn method(&self) -> Option<&str> {
        (!self.start.starts_with("SIP/2.0 ")).then(|| self.start.split(' ').next())?
    }

    /// The Request-URI of a request.
    pub(crate) fn uri(&self) -> Option<&str> {
        self.method()?;
        self.start.split(' ').nth(1)
    }

    /// The status code of a response.
    pub(crate) fn status(&self) -> Option<u16> {
        self.start.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    /// The reason phrase of a response.
    pub(crate) fn reason(&self) -> Option<&str> {
        self.start.strip_prefix("SIP/2.0 ")?.get(4..)
    }

    /// The first value of a header (case-insensitive name).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every field of a header, as written.
    pub(crate) fn fields(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every value of a list header, across its fields, top first.
    pub(crate) fn values(&self, name: &str) -> Vec<String> {
        self.fields(name).into_iter().flat_map(split_list).collect()
    }

    /// The method of the CSeq header.
    pub(crate) fn cseq_method(&self) -> Option<&str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }

    /// The header names in order: the shape of a message, whatever its values.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).collect()
    }
}

// ---------------------------------------------------------------------------------
// Digest, from the client's side (RFC 7616 §3.4.1, qop=auth)
// ---------------------------------------------------------------------------------

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// H(data) of RFC 7616 for `algorithm` (MD5 unless SHA-256).
pub(crate) fn h(algorithm: &str, data: &str) -> String {
    use md5::Digest as _;
    if algorithm.eq_ignore_ascii_case("SHA-256") {
        hex(&sha2::Sha256::digest(data.as_bytes()))
    } else {
        hex(&md5::Md5::digest(data.as_bytes()))
    }
}

/// One WWW-Authenticate or Proxy-Authenticate value, as written and as (name,
/// unquoted value) pairs.
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    pub(crate) raw: String,
    pub(crate) params: Vec<(String, String)>,
}

impl Challenge {
    pub(crate) fn parse(raw: &str) -> Challenge {
        let rest = raw
            .strip_prefix("Digest ")
            .unwrap_or_else(|| panic!("not a Digest challenge: {raw}"));
        let mut params = Vec::new();
        let (mut item, mut quoted) = (String::new(), false);
        for c in rest.chars().chain(std::iter::once(',')) {
            match c {
                '"' => {
                    quoted = !quoted;
                    item.push(c);
                }
                ',' if !quoted => {
                    if let Some((k, v)) = item.split_once('=') {
                        params.push((
                            k.trim().to_ascii_lowercase(),
                            v.trim().trim_matches('"').to_string(),
                        ));
                    }
                    item.clear();
                }
                _ => item.push(c),
            }
        }
        Challenge {
            raw: raw.to_string(),
            params,
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn realm(&self) -> &str {
        self.get("realm").expect("challenge has a realm")
    }

    pub(crate) fn nonce(&self) -> &str {
        self.get("nonce").expect("challenge has a nonce")
    }

    pub(crate) fn algorithm(&self) -> &str {
        self.get("algorithm").unwrap_or("MD5")
    }

    pub(crate) fn stale(&self) -> bool {
        self.get("stale")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The value as written with the nonce blanked: what must not depend on the user.
    pub(crate) fn shape(&self) -> String {
        self.raw.replace(self.nonce(), "NONCE")
    }

    /// The credentials (an Authorization or Proxy-Authorization value) answering this
    /// challenge for `method` on `uri` with nonce-count `nc`.
    pub(crate) fn credentials(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
    ) -> String {
        let alg = self.algorithm();
        let (realm, nonce) = (self.realm(), self.nonce());
        let cnonce = format!("{:08x}", nc.wrapping_mul(2_654_435_761));
        let ha1 = h(alg, &format!("{user}:{realm}:{password}"));
        let ha2 = h(alg, &format!("{method}:{uri}"));
        let response = h(alg, &format!("{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", \
             uri=\"{uri}\", response=\"{response}\", algorithm={alg}, cnonce=\"{cnonce}\", \
             qop=auth, nc={nc:08x}"
        )
    }
}

/// Every challenge in the `name` fields (WWW-Authenticate or Proxy-Authenticate).
pub(crate) fn challenges_in(headers: &[(String, String)], name: &str) -> Vec<Challenge> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| Challenge::parse(v))
        .collect()
}

/// Every WWW-Authenticate challenge of a response.
pub(crate) fn challenges(r: &Response) -> Vec<Challenge> {
    challenges_in(&r.headers, "WWW-Authenticate")
}
