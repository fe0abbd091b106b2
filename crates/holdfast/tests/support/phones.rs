//! Real SIP phones for the end-to-end call tests: baresip, linphonec and pjsua2, each
//! started headless as one user, registered with digest through a given proxy over
//! UDP or TCP, then driven by the test (dial, answer, hang up, cancel) and observed
//! (registered, ringing, established, RTP received, call ended). Also the reference
//! Kamailio that every driver is checked against, so that a failing call through
//! holdfast is holdfast's failure, not the driver's.
//!
//! Every phone runs from its own temporary directory (its generated configuration and
//! its logs) on ports chosen free at start, so tests can run in parallel. It binds
//! 127.0.0.1 only, advertises 127.0.0.1 in Contact and SDP, and uses the proxy as its
//! outbound proxy: its AoR is `user@domain` (e.g. `alice@127.0.0.1`, the domain being
//! the address the phones use), whatever port the proxy listens on. Each process runs
//! in a process group of its own, killed when the [`Phone`] (or [`Kamailio`]) is
//! dropped.
//!
//! How each client is driven and observed (see also `../shared/interop`):
//! - baresip 1.0.0: JSON netstrings over its ctrl_tcp module (commands `dial`,
//!   `accept`, `hangup`, `reginfo`; events CALL_INCOMING, CALL_RINGING,
//!   CALL_ESTABLISHED, CALL_RTPESTAB = the first RTP packet received, CALL_CLOSED). It
//!   binds TLS on its SIP port + 1 whatever it is told, and emits no CALL_INCOMING when
//!   it answers by itself, nor CALL_CLOSED for a call it hung up itself.
//! - linphonec 5.1.65: its own stdin and stdout (not `--pipe`, whose socket is one per
//!   uid). Its log (`-d 6`) gives the registration state and, every second of a call,
//!   the RTP bandwidth received. It rewrites its rc file (dropping the password) and
//!   opens no SIP socket at all unless `~/.local/share/linphone` exists, so each start
//!   gets a fresh rc and HOME. It sends RTP only when it plays a file.
//! - pjsua2 (PJSIP 2.15.1, the `pjsua2-python` wheel in a virtual environment made by
//!   scripts/test): `tests/phones/pj_phone.py`, commands on stdin, JSON events on stdout;
//!   RTP received is read from its stream statistics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{free_port, free_udp_run, note, TempDir, Transport, LOCALHOST};

/// How long a phone may take to register.
const REGISTER_LIMIT: Duration = Duration::from_secs(20);

/// Which client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PhoneKind {
    Baresip,
    Linphone,
    Pjsua,
}

impl PhoneKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            PhoneKind::Baresip => "baresip",
            PhoneKind::Linphone => "linphonec",
            PhoneKind::Pjsua => "pjsua2",
        }
    }
}

/// What a phone reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Happening {
    /// Its registration was answered 200.
    Registered,
    /// Its registration failed (or it asked for a password).
    RegisterFailed,
    /// A call is coming in (not reported by baresip when it answers by itself).
    Incoming,
    /// Our INVITE got a 180.
    Ringing,
    /// The call is up: 200 and ACK.
    Established,
    /// RTP from the peer arrived.
    Rtp,
    /// The call ended (a BYE or CANCEL from the other side, an error, or, for linphonec
    /// and pjsua2, our own hangup).
    Closed,
}

/// One report of a phone.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) what: Happening,
    /// The SIP Call-ID, where the client tells it (baresip, pjsua2).
    pub(crate) call_id: Option<String>,
    /// The client's own words (a reason, a status line, a peer URI).
    pub(crate) detail: String,
    pub(crate) at: Instant,
}

/// Everything a phone reported, in order, each taken at most once by a waiter.
#[derive(Debug, Default)]
struct Events {
    list: Mutex<Vec<(Event, bool)>>,
}

impl Events {
    fn push(&self, what: Happening, call_id: Option<String>, detail: impl Into<String>) {
        let event = Event {
            what,
            call_id,
            detail: detail.into(),
            at: Instant::now(),
        };
        self.list.lock().unwrap().push((event, false));
    }

    /// The first report of `what` that no waiter took yet.
    fn take(&self, what: Happening) -> Option<Event> {
        let mut list = self.list.lock().unwrap();
        let entry = list
            .iter_mut()
            .find(|(e, taken)| !taken && e.what == what)?;
        entry.1 = true;
        Some(entry.0.clone())
    }

    /// The first report of `what` that no waiter took yet, left untaken.
    fn peek(&self, what: Happening) -> Option<Event> {
        let list = self.list.lock().unwrap();
        list.iter()
            .find(|(e, taken)| !taken && e.what == what)
            .map(|(e, _)| e.clone())
    }

    fn any(&self, what: Happening) -> bool {
        self.list
            .lock()
            .unwrap()
            .iter()
            .any(|(e, taken)| !taken && e.what == what)
    }

    /// Marks every report so far as taken.
    fn forget(&self) {
        for entry in self.list.lock().unwrap().iter_mut() {
            entry.1 = true;
        }
    }

    fn summary(&self) -> String {
        let list = self.list.lock().unwrap();
        let first = list.first().map(|(e, _)| e.at);
        list.iter()
            .map(|(e, taken)| {
                let t = first.map_or(0.0, |f| e.at.duration_since(f).as_secs_f64());
                format!(
                    "  +{t:6.2}s {:?}{} {} {}",
                    e.what,
                    if *taken { "" } else { " (not taken)" },
                    e.call_id.as_deref().unwrap_or("-"),
                    e.detail
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// How to start a phone.
#[derive(Debug, Clone)]
pub(crate) struct PhoneBuilder {
    kind: PhoneKind,
    user: String,
    password: String,
    domain: String,
    proxy: SocketAddr,
    transport: Transport,
    auto_answer: bool,
}

impl PhoneBuilder {
    /// Answer every incoming call at once (default: no, the test calls
    /// [`Phone::answer`]).
    pub(crate) fn auto_answer(mut self, yes: bool) -> PhoneBuilder {
        self.auto_answer = yes;
        self
    }

    /// Starts the client and waits until it is registered. Ports that another
    /// process took between choosing and binding are chosen again.
    pub(crate) async fn start(self) -> Phone {
        let mut last = String::new();
        for attempt in 0..3 {
            let phone = match self.kind {
                PhoneKind::Baresip => Phone::spawn_baresip(&self).await,
                PhoneKind::Linphone => Phone::spawn_linphone(&self).await,
                PhoneKind::Pjsua => Phone::spawn_pjsua(&self).await,
            };
            match phone.wait_registered().await {
                Ok(()) => {
                    note(format!(
                        "{} {} registered over {} (SIP port {}, RTP {})",
                        self.kind.name(),
                        phone.aor(),
                        self.transport.as_str(),
                        phone.sip_port,
                        phone.rtp_port
                    ));
                    return phone;
                }
                Err(why) => {
                    let report = phone.diagnostics();
                    let clash = report.contains("Address already in use")
                        || report.contains("No listening point")
                        || report.contains("EADDRINUSE");
                    last = format!("{why}\n{report}");
                    if !clash {
                        break;
                    }
                    note(format!(
                        "{} {}: port clash on attempt {attempt}; new ports",
                        self.kind.name(),
                        self.user
                    ));
                }
            }
        }
        panic!(
            "{} {}@{} did not register through {} over {}: {last}",
            self.kind.name(),
            self.user,
            self.domain,
            self.proxy,
            self.transport.as_str()
        );
    }
}

/// How the test talks to a running client.
enum Control {
    Baresip(BaresipCtrl),
    Stdin(tokio::sync::Mutex<ChildStdin>),
}

/// A running phone. Dropping it kills the client.
pub(crate) struct Phone {
    kind: PhoneKind,
    user: String,
    domain: String,
    transport: Transport,
    sip_port: u16,
    rtp_port: u16,
    child: Child,
    pgid: Option<u32>,
    control: Control,
    events: Arc<Events>,
    tasks: Vec<JoinHandle<()>>,
    /// The client's logs, for failure reports.
    logs: Vec<PathBuf>,
    dir: TempDir,
}

impl std::fmt::Debug for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Phone({} {} over {})",
            self.kind.name(),
            self.aor(),
            self.transport.as_str()
        )
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        kill_group(self.pgid);
    }
}

/// SIGKILL to the process group `pgid` (a group made for one child of this test).
fn kill_group(pgid: Option<u32>) {
    if let Some(pgid) = pgid {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A port free for UDP and TCP whose next port is free for TCP (baresip binds TLS
/// there).
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let p = free_port(LOCALHOST, true);
        if p < u16::MAX && std::net::TcpListener::bind((LOCALHOST, p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two adjacent free ports");
}

/// The last `n` lines of a file, or a note that it cannot be read.
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Spawns `cmd` in a process group of its own, killed when dropped.
fn spawn(mut cmd: Command, what: &str, install: &str) -> Child {
    cmd.process_group(0).kill_on_drop(true);
    match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{what} is not installed; these tests need it ({install}, or run scripts/test)")
        }
        Err(e) => panic!("cannot run {what}: {e}"),
    }
}

/// A mono 16-bit 8 kHz WAV file of `secs` seconds of a 440 Hz tone: what linphonec
/// plays as its microphone.
fn write_tone(path: &Path, secs: u32) {
    let rate: u32 = 8000;
    let samples = rate * secs;
    let mut wav = Vec::with_capacity(44 + 2 * samples as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + 2 * samples).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(2 * rate).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(2 * samples).to_le_bytes());
    for i in 0..samples {
        let t = f64::from(i) / f64::from(rate);
        let v = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16;
        wav.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, wav).unwrap();
}

/// The interpreter of the pjsua2 virtual environment: `HOLDFAST_PJSUA2_PYTHON`, else
/// `pjsua2-venv/bin/python` in the target directory (where scripts/test makes it).
fn pjsua_python() -> PathBuf {
    if let Some(p) = std::env::var_os("HOLDFAST_PJSUA2_PYTHON") {
        return PathBuf::from(p);
    }
    // target/<profile>/holdfast -> target
    let bin = Path::new(env!("CARGO_BIN_EXE_holdfast"));
    let target = bin
        .parent()
        .and_then(Path::parent)
        .expect("the binary lives in target/<profile>/");
    target.join("pjsua2-venv/bin/python")
}

/// The directory of the phone control scripts and the reference Kamailio config.
fn phones_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/phones")
}

impl Phone {
    fn builder(
        kind: PhoneKind,
        user: &str,
        password: &str,
        proxy: SocketAddr,
        t: Transport,
    ) -> PhoneBuilder {
        assert!(
            matches!(t, Transport::Udp | Transport::Tcp),
            "the phones register over UDP or TCP"
        );
        PhoneBuilder {
            kind,
            user: user.to_string(),
            password: password.to_string(),
            domain: "127.0.0.1".into(),
            proxy,
            transport: t,
            auto_answer: false,
        }
    }

    /// A baresip phone for `user` through `proxy` over `t`.
    pub(crate) fn baresip(
        user: &str,
        password: &str,
        proxy: SocketAddr,
        t: Transport,
    ) -> PhoneBuilder {
        Phone::builder(PhoneKind::Baresip, user, password, proxy, t)
    }

    /// A phone of `kind`.
    pub(crate) fn of(
        kind: PhoneKind,
        user: &str,
        password: &str,
        proxy: SocketAddr,
        t: Transport,
    ) -> PhoneBuilder {
        Phone::builder(kind, user, password, proxy, t)
    }

    pub(crate) fn kind(&self) -> PhoneKind {
        self.kind
    }

    /// `user@domain`.
    pub(crate) fn aor(&self) -> String {
        format!("{}@{}", self.user, self.domain)
    }

    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }

    /// The SIP port the client listens on (its UDP source port).
    pub(crate) fn sip_port(&self) -> u16 {
        self.sip_port
    }

    fn new_phone(
        b: &PhoneBuilder,
        dir: TempDir,
        child: Child,
        control: Control,
        sip_port: u16,
        rtp_port: u16,
        logs: Vec<PathBuf>,
    ) -> Phone {
        Phone {
            kind: b.kind,
            user: b.user.clone(),
            domain: b.domain.clone(),
            transport: b.transport,
            sip_port,
            rtp_port,
            pgid: child.id(),
            child,
            control,
            events: Arc::new(Events::default()),
            tasks: Vec::new(),
            logs,
            dir,
        }
    }

    // -------------------------------------------------------------------- baresip

    async fn spawn_baresip(b: &PhoneBuilder) -> Phone {
        let dir = TempDir::new(&format!("baresip-{}", b.user));
        let sip_port = free_port_pair();
        let ctrl_port = loop {
            let p = free_port(LOCALHOST, false);
            if p != sip_port && p != sip_port + 1 {
                break p;
            }
        };
        let rtp = free_udp_run(4);
        let tp = b.transport.as_str();
        let name = &b.user;
        std::fs::write(
            dir.path().join("config"),
            format!(
                "poll_method epoll\n\
                 net_interface 127.0.0.1\n\
                 sip_listen 127.0.0.1:{sip_port}\n\
                 call_local_timeout 120\n\
                 call_max_calls 4\n\
                 audio_player aubridge,null-{name}\n\
                 audio_source ausine,440\n\
                 ausrc_srate 48000\n\
                 ausrc_channels 2\n\
                 audio_alert aubridge,null-{name}\n\
                 audio_level no\n\
                 ausrc_format s16\n\
                 auplay_format s16\n\
                 rtp_ports {rtp}-{}\n\
                 rtcp_mux no\n\
                 jitter_buffer_delay 5-10\n\
                 rtp_stats yes\n\
                 module_path /usr/lib/baresip/modules\n\
                 module g711.so\n\
                 module ausine.so\n\
                 module aubridge.so\n\
                 module_tmp uuid.so\n\
                 module_tmp account.so\n\
                 module_app menu.so\n\
                 module_app ctrl_tcp.so\n\
                 ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n",
                rtp + 3
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("accounts"),
            format!(
                "<sip:{}@{};transport={tp}>;auth_pass={};answermode={};regint=600;\
                 audio_codecs=PCMU;outbound=\"sip:{};transport={tp}\"\n",
                b.user,
                b.domain,
                b.password,
                if b.auto_answer { "auto" } else { "manual" },
                b.proxy
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("contacts"), "").unwrap();
        let log = dir.path().join("baresip.log");
        let mut cmd = Command::new("baresip");
        cmd.arg("-4")
            .arg("-f")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null());
        let mut child = spawn(cmd, "baresip", "Debian: apt-get install baresip-core");

        // Its control port opens once its modules are loaded.
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            if let Ok(s) = TcpStream::connect((LOCALHOST, ctrl_port)).await {
                break Some(s);
            }
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let events = Arc::new(Events::default());
        let (control, task) = match stream {
            Some(s) => {
                let (ctrl, task) = BaresipCtrl::new(s, events.clone());
                (ctrl, Some(task))
            }
            None => {
                // A control channel that answers nothing: start() reports the log.
                let (tx, rx) = mpsc::unbounded_channel();
                drop(tx);
                (
                    BaresipCtrl {
                        writer: tokio::sync::Mutex::new(None),
                        responses: tokio::sync::Mutex::new(rx),
                        token: std::sync::atomic::AtomicU64::new(0),
                    },
                    None,
                )
            }
        };
        let mut phone = Phone::new_phone(
            b,
            dir,
            child,
            Control::Baresip(control),
            sip_port,
            rtp,
            vec![log],
        );
        phone.events = events;
        phone.tasks.extend(task);
        phone
    }

    // -------------------------------------------------------------------- linphonec

    async fn spawn_linphone(b: &PhoneBuilder) -> Phone {
        let dir = TempDir::new(&format!("linphonec-{}", b.user));
        let home = dir.path().join("home");
        // Without this directory linphonec fails to open its database and never
        // creates its SIP sockets.
        std::fs::create_dir_all(home.join(".local/share/linphone")).unwrap();
        let sip_port = free_port(LOCALHOST, true);
        let rtp = free_udp_run(4);
        let tone = dir.path().join("tone.wav");
        write_tone(&tone, 60);
        let (udp, tcp) = match b.transport {
            Transport::Udp => (sip_port, 0),
            _ => (0, sip_port),
        };
        let tp = b.transport.as_str();
        let rc = home.join("linphonerc");
        std::fs::write(
            &rc,
            format!(
                "[sip]\n\
                 sip_port={udp}\n\
                 sip_tcp_port={tcp}\n\
                 sip_tls_port=0\n\
                 sip_dtls_port=0\n\
                 use_ipv6=0\n\
                 bind_address=127.0.0.1\n\
                 default_proxy=0\n\
                 register_only_when_network_is_up=0\n\
                 register_only_when_upnp_is_ok=0\n\
                 guess_hostname=1\n\
                 inc_timeout=60\n\
                 use_info=0\n\
                 store_auth_info=0\n\
                 sip_random_port=0\n\
                 \n\
                 [net]\n\
                 firewall_policy=0\n\
                 nat_policy_ref=\n\
                 mtu=1300\n\
                 \n\
                 [rtp]\n\
                 bind_address=127.0.0.1\n\
                 audio_rtp_port={rtp}\n\
                 video_rtp_port=0\n\
                 audio_jitt_comp=60\n\
                 nortp_timeout=30\n\
                 rtcp_mux=0\n\
                 \n\
                 [video]\n\
                 enabled=0\n\
                 capture=0\n\
                 display=0\n\
                 automatically_initiate=0\n\
                 automatically_accept=0\n\
                 \n\
                 [sound]\n\
                 echocancellation=0\n\
                 \n\
                 [misc]\n\
                 max_calls=4\n\
                 enable_basic_to_client_group_chat_room_migration=0\n\
                 version_check_url_root=\n\
                 \n\
                 [proxy_0]\n\
                 reg_proxy=<sip:{proxy};transport={tp}>\n\
                 reg_route=<sip:{proxy};transport={tp};lr>\n\
                 reg_identity=<sip:{user}@{domain}>\n\
                 reg_expires=600\n\
                 reg_sendregister=1\n\
                 publish=0\n\
                 dial_escape_plus=0\n\
                 realm={domain}\n\
                 \n\
                 [auth_info_0]\n\
                 username={user}\n\
                 passwd={password}\n\
                 realm={domain}\n\
                 domain={domain}\n",
                proxy = b.proxy,
                user = b.user,
                domain = b.domain,
                password = b.password,
            ),
        )
        .unwrap();
        let log = dir.path().join("linphonec.log");
        let out = dir.path().join("linphonec.out");
        let mut cmd = Command::new("linphonec");
        cmd.arg("-c")
            .arg(&rc)
            .args(["-d", "6", "-l"])
            .arg(&log)
            .env("HOME", &home)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if b.auto_answer {
            cmd.arg("-a");
        }
        let mut child = spawn(cmd, "linphonec", "Debian: apt-get install linphone-cli");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut phone = Phone::new_phone(
            b,
            dir,
            child,
            Control::Stdin(tokio::sync::Mutex::new(stdin)),
            sip_port,
            rtp,
            vec![out.clone(), log.clone()],
        );
        let events = phone.events.clone();
        phone
            .tasks
            .push(tokio::spawn(linphone_stdout(stdout, out, events.clone())));
        phone.tasks.push(tokio::spawn(linphone_log(log, events)));
        // No sound card: play a file as the microphone, or it sends no RTP.
        phone.send_line("soundcard use files").await;
        phone.send_line(&format!("play {}", tone.display())).await;
        phone
    }

    // -------------------------------------------------------------------- pjsua2

    async fn spawn_pjsua(b: &PhoneBuilder) -> Phone {
        let dir = TempDir::new(&format!("pjsua2-{}", b.user));
        let sip_port = free_port(LOCALHOST, true);
        let rtp = free_udp_run(4);
        let python = pjsua_python();
        assert!(
            python.exists(),
            "no pjsua2 environment at {} (scripts/test makes it; or set HOLDFAST_PJSUA2_PYTHON)",
            python.display()
        );
        let log = dir.path().join("pjsua2.log");
        let out = dir.path().join("pjsua2.out");
        let mut cmd = Command::new(&python);
        cmd.arg(phones_dir().join("pj_phone.py"))
            .args(["--user", &b.user, "--password", &b.password])
            .args(["--domain", &b.domain, "--proxy", &b.proxy.to_string()])
            .args(["--transport", b.transport.as_str()])
            .args(["--sip-port", &sip_port.to_string()])
            .args(["--rtp-port", &rtp.to_string()])
            .arg("--log-file")
            .arg(&log)
            .args(["--log-level", "5"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if b.auto_answer {
            cmd.arg("--auto-answer");
        }
        let mut child = spawn(cmd, "python (pjsua2)", "scripts/test makes the environment");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut phone = Phone::new_phone(
            b,
            dir,
            child,
            Control::Stdin(tokio::sync::Mutex::new(stdin)),
            sip_port,
            rtp,
            vec![out.clone(), log],
        );
        let events = phone.events.clone();
        phone
            .tasks
            .push(tokio::spawn(pjsua_stdout(stdout, out, events)));
        phone
    }

    // -------------------------------------------------------------------- common

    async fn send_line(&self, line: &str) {
        let Control::Stdin(stdin) = &self.control else {
            panic!("{self:?} is not driven through stdin");
        };
        let mut stdin = stdin.lock().await;
        let sent = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        if let Err(e) = sent.await {
            panic!("{self:?}: sending {line:?}: {e}\n{}", self.diagnostics());
        }
    }

    async fn ctrl(&self, command: &str, params: &str) -> Value {
        let Control::Baresip(ctrl) = &self.control else {
            panic!("{self:?} is not baresip");
        };
        match ctrl.command(command, params).await {
            Ok(v) => v,
            Err(e) => panic!("{self:?}: {command} {params}: {e}\n{}", self.diagnostics()),
        }
    }

    async fn wait_registered(&self) -> Result<(), String> {
        let deadline = Instant::now() + REGISTER_LIMIT;
        loop {
            if self.kind == PhoneKind::Baresip {
                // ctrl_tcp reports REGISTER_OK only to clients connected by then: ask.
                let Control::Baresip(ctrl) = &self.control else {
                    unreachable!("a baresip phone has a baresip control channel");
                };
                if let Ok(r) = ctrl.command("reginfo", "").await {
                    let data = strip_ansi(r["data"].as_str().unwrap_or_default());
                    if data.contains(" OK ") {
                        self.events.push(Happening::Registered, None, data.trim());
                    } else if data.contains("ERR") {
                        self.events
                            .push(Happening::RegisterFailed, None, data.trim());
                    }
                }
            }
            if self.events.take(Happening::Registered).is_some() {
                return Ok(());
            }
            if let Some(e) = self.events.take(Happening::RegisterFailed) {
                return Err(format!("registration failed: {}", e.detail));
            }
            if let Some(pid) = self.pgid {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    return Err("the client exited".into());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not registered within {REGISTER_LIMIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Places a call to `sip:{aor}`.
    pub(crate) async fn dial(&self, aor: &str) {
        let uri = format!("sip:{aor}");
        match self.kind {
            PhoneKind::Baresip => {
                let r = self.ctrl("dial", &uri).await;
                assert!(r["ok"] == true, "{self:?}: dial {uri}: {r}");
            }
            PhoneKind::Linphone => self.send_line(&format!("call {uri}")).await,
            PhoneKind::Pjsua => self.send_line(&format!("dial {uri}")).await,
        }
    }

    /// Answers the incoming call with 200.
    pub(crate) async fn answer(&self) {
        match self.kind {
            PhoneKind::Baresip => {
                let r = self.ctrl("accept", "").await;
                assert!(r["ok"] == true, "{self:?}: accept: {r}");
            }
            PhoneKind::Linphone | PhoneKind::Pjsua => self.send_line("answer").await,
        }
    }

    /// Hangs up: BYE when the call is up, CANCEL while it rings. For clients that
    /// report the end of a call they ended themselves (linphonec, pjsua2), waits up to
    /// `limit` for that report, so that it does not stand for the next call's end.
    pub(crate) async fn hangup_and_wait(&self, limit: Duration) {
        self.hangup().await;
        if matches!(self.kind, PhoneKind::Linphone | PhoneKind::Pjsua) {
            self.wait(Happening::Closed, limit).await;
        }
    }

    /// Hangs up: BYE when the call is up, CANCEL while it rings.
    pub(crate) async fn hangup(&self) {
        match self.kind {
            PhoneKind::Baresip => {
                let r = self.ctrl("hangup", "").await;
                assert!(r["ok"] == true, "{self:?}: hangup: {r}");
            }
            PhoneKind::Linphone => self.send_line("terminate").await,
            PhoneKind::Pjsua => self.send_line("hangup").await,
        }
    }

    /// Waits up to `limit` for a report of `what` not taken before, and takes it.
    pub(crate) async fn try_wait(&self, what: Happening, limit: Duration) -> Option<Event> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.events.take(what) {
                return Some(e);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Like [`Phone::try_wait`], panicking with the phone's reports and logs when
    /// nothing comes.
    pub(crate) async fn wait(&self, what: Happening, limit: Duration) -> Event {
        match self.try_wait(what, limit).await {
            Some(e) => e,
            None => panic!(
                "{self:?}: no {what:?} within {limit:?}\n{}",
                self.diagnostics()
            ),
        }
    }

    /// The first report of `what` not taken yet, if any, without taking it.
    pub(crate) fn peek(&self, what: Happening) -> Option<Event> {
        self.events.peek(what)
    }

    /// True when a report of `what` is waiting to be taken.
    pub(crate) fn has(&self, what: Happening) -> bool {
        self.events.any(what)
    }

    /// Forgets every report so far: the next waits see only what comes after.
    pub(crate) fn forget(&self) {
        self.events.forget();
    }

    /// The reports so far and the tails of the client's logs.
    pub(crate) fn diagnostics(&self) -> String {
        let mut out = format!(
            "--- {} {} ({}, SIP port {}, RTP {}) reports:\n{}",
            self.kind.name(),
            self.aor(),
            self.transport.as_str(),
            self.sip_port,
            self.rtp_port,
            self.events.summary()
        );
        for log in &self.logs {
            let n = if log.extension().is_some_and(|e| e == "log") {
                80
            } else {
                30
            };
            out.push_str(&format!(
                "\n--- {} (last {n} lines):\n{}",
                log.display(),
                tail(log, n)
            ));
        }
        out
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ------------------------------------------------------------------------ baresip

/// baresip's ctrl_tcp: JSON in netstrings (`<len>:<json>,`), one command at a time.
struct BaresipCtrl {
    writer: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
    responses: tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>,
    token: std::sync::atomic::AtomicU64,
}

impl BaresipCtrl {
    fn new(stream: TcpStream, events: Arc<Events>) -> (BaresipCtrl, JoinHandle<()>) {
        let (mut read, write) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                while let Some((msg, used)) = netstring(&buf) {
                    buf.drain(..used);
                    let Ok(v) = serde_json::from_slice::<Value>(&msg) else {
                        continue;
                    };
                    if v["event"] == true {
                        baresip_event(&v, &events);
                    } else if v["response"] == true {
                        let _ = tx.send(v);
                    }
                }
                match read.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        (
            BaresipCtrl {
                writer: tokio::sync::Mutex::new(Some(write)),
                responses: tokio::sync::Mutex::new(rx),
                token: std::sync::atomic::AtomicU64::new(0),
            },
            task,
        )
    }

    async fn command(&self, command: &str, params: &str) -> Result<Value, String> {
        let mut writer = self.writer.lock().await;
        let w = writer.as_mut().ok_or("no control connection to baresip")?;
        let token = (self
            .token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1)
        .to_string();
        let body =
            serde_json::json!({"command": command, "params": params, "token": token}).to_string();
        let frame = format!("{}:{body},", body.len());
        w.write_all(frame.as_bytes())
            .await
            .map_err(|e| format!("control connection: {e}"))?;
        let mut responses = self.responses.lock().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, responses.recv()).await {
                Err(_) => return Err(format!("no answer to {command} within 5 s")),
                Ok(None) => return Err("baresip closed the control connection".into()),
                Ok(Some(v)) if v["token"] == token.as_str() => return Ok(v),
                Ok(Some(_)) => {}
            }
        }
    }
}

/// The first netstring of `buf` and the bytes it used.
fn netstring(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let colon = buf.iter().position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&buf[..colon]).ok()?.parse().ok()?;
    let end = colon + 1 + len;
    if buf.len() < end + 1 {
        return None;
    }
    Some((buf[colon + 1..end].to_vec(), end + 1))
}

fn baresip_event(v: &Value, events: &Events) {
    let what = match v["type"].as_str().unwrap_or_default() {
        "REGISTER_OK" => Happening::Registered,
        "REGISTER_FAIL" => Happening::RegisterFailed,
        "CALL_INCOMING" => Happening::Incoming,
        "CALL_RINGING" => Happening::Ringing,
        "CALL_ESTABLISHED" => Happening::Established,
        "CALL_RTPESTAB" => Happening::Rtp,
        "CALL_CLOSED" => Happening::Closed,
        _ => return,
    };
    let detail = format!(
        "{} {}",
        v["param"].as_str().unwrap_or_default(),
        v["peeruri"].as_str().unwrap_or_default()
    );
    events.push(what, v["id"].as_str().map(str::to_string), detail.trim());
}

// ------------------------------------------------------------------------ linphonec

/// Reads linphonec's stdout (copying it to `copy`) and reports call states.
async fn linphone_stdout(stdout: tokio::process::ChildStdout, copy: PathBuf, events: Arc<Events>) {
    let mut file = tokio::fs::File::create(&copy).await.ok();
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(f) = file.as_mut() {
            let _ = f.write_all(format!("{line}\n").as_bytes()).await;
            let _ = f.flush().await;
        }
        let l = line.trim_start_matches("linphonec> ").trim();
        if l.contains("Receiving new incoming call from") {
            events.push(Happening::Incoming, None, l);
        } else if l.starts_with("Call ") && l.ends_with(" ringing.") {
            events.push(Happening::Ringing, None, l);
        } else if l.starts_with("Call ") && l.ends_with(" connected.") {
            events.push(Happening::Established, None, l);
        } else if l.starts_with("Call ") && (l.contains(" ended (") || l.ends_with(" error.")) {
            events.push(Happening::Closed, None, l);
        } else if l.contains("Password for ") {
            events.push(Happening::RegisterFailed, None, l);
        }
    }
}

/// Follows linphonec's log: registration states, and the first second of each call
/// session with RTP received (its once-a-second "RTP : [d=<kbit/s>,u=...]" line).
async fn linphone_log(path: PathBuf, events: Arc<Events>) {
    let mut offset = 0usize;
    let mut partial = String::new();
    let mut session = String::new();
    let mut rtp_sessions: Vec<String> = Vec::new();
    loop {
        if let Ok(bytes) = tokio::fs::read(&path).await {
            if bytes.len() > offset {
                partial.push_str(&String::from_utf8_lossy(&bytes[offset..]));
                offset = bytes.len();
                let complete = partial.rfind('\n').map_or(0, |i| i + 1);
                let text: String = partial.drain(..complete).collect();
                for line in text.lines() {
                    if line.contains("to [LinphoneRegistrationOk]") {
                        events.push(Happening::Registered, None, line);
                    } else if line.contains("to [LinphoneRegistrationFailed]") {
                        events.push(Happening::RegisterFailed, None, line);
                    } else if let Some(rest) =
                        line.split("Bandwidth usage for CallSession [").nth(1)
                    {
                        session = rest.split(']').next().unwrap_or_default().to_string();
                    } else if let Some(rest) = line.split("RTP : [d=").nth(1) {
                        let down: f64 = rest
                            .split(',')
                            .next()
                            .and_then(|d| d.trim().parse().ok())
                            .unwrap_or(0.0);
                        if down > 0.0 && !rtp_sessions.contains(&session) {
                            rtp_sessions.push(session.clone());
                            events.push(
                                Happening::Rtp,
                                None,
                                format!("session {session}: {}", line.trim()),
                            );
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------------ pjsua2

/// Reads pj_phone.py's JSON lines (copying them to `copy`).
async fn pjsua_stdout(stdout: tokio::process::ChildStdout, copy: PathBuf, events: Arc<Events>) {
    let mut file = tokio::fs::File::create(&copy).await.ok();
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(f) = file.as_mut() {
            let _ = f.write_all(format!("{line}\n").as_bytes()).await;
            let _ = f.flush().await;
        }
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let what = match v["event"].as_str().unwrap_or_default() {
            "registered" => Happening::Registered,
            "register_failed" => Happening::RegisterFailed,
            "incoming" => Happening::Incoming,
            "ringing" => Happening::Ringing,
            "established" => Happening::Established,
            "rtp" => Happening::Rtp,
            "closed" => Happening::Closed,
            _ => continue,
        };
        events.push(
            what,
            v["call_id"].as_str().map(str::to_string),
            line.clone(),
        );
    }
}

// ------------------------------------------------------------------------ Kamailio

/// The reference registrar and proxy: Kamailio with `tests/phones/kamailio.cfg` on a
/// free port (UDP and TCP), its users in a db_text table. Killed when dropped.
pub(crate) struct Kamailio {
    child: Child,
    pgid: Option<u32>,
    port: u16,
    log: PathBuf,
    dir: TempDir,
}

impl std::fmt::Debug for Kamailio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kamailio(127.0.0.1:{})", self.port)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        kill_group(self.pgid);
    }
}

impl Kamailio {
    /// Starts Kamailio with `users` (user, password) in `domain`.
    pub(crate) async fn start(domain: &str, users: &[(&str, &str)]) -> Kamailio {
        let dir = TempDir::new("kamailio");
        let db = dir.path().join("dbtext");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(
            db.join("version"),
            "id(int,auto) table_name(string) table_version(int) \n0:subscriber:7\n",
        )
        .unwrap();
        let mut subscriber = String::from(
            "id(int,auto) username(string) domain(string) password(string) ha1(string,null) ha1b(string,null) \n",
        );
        for (i, (user, password)) in users.iter().enumerate() {
            subscriber.push_str(&format!("{}:{user}:{domain}:{password}::\n", i + 1));
        }
        std::fs::write(db.join("subscriber"), subscriber).unwrap();
        let cfg = phones_dir().join("kamailio.cfg");
        let log = dir.path().join("kamailio.log");
        for attempt in 0..3 {
            let port = free_port(LOCALHOST, true);
            let mut cmd = Command::new("kamailio");
            cmd.arg("-f")
                .arg(&cfg)
                .arg("-P")
                .arg(dir.path().join("kamailio.pid"))
                .arg("-Y")
                .arg(dir.path())
                .args(["-DD", "-E", "-m", "64", "-M", "8"])
                .arg("-A")
                .arg(format!("DBURL=\"text://{}\"", db.display()))
                .arg("-A")
                .arg(format!("CTLSOCK=\"unix:{}/ctl\"", dir.path().display()))
                .arg("-A")
                .arg(format!("LISTEN_UDP=udp:127.0.0.1:{port}"))
                .arg("-A")
                .arg(format!("LISTEN_TCP=tcp:127.0.0.1:{port}"))
                .args(["-A", "PORT_MIN=1024", "-A", "PORT_MAX=65535"])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::options().append(true).open(&log).unwrap());
            let mut child = spawn(cmd, "kamailio", "Debian: apt-get install kamailio");
            let pgid = child.id();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                // TCP listens last: once it accepts, UDP is bound too.
                if TcpStream::connect((LOCALHOST, port)).await.is_ok() {
                    return Kamailio {
                        child,
                        pgid,
                        port,
                        log,
                        dir,
                    };
                }
                if matches!(child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            kill_group(pgid);
            let text = tail(&log, 40);
            if attempt == 2 || !text.contains("in use") {
                panic!("kamailio did not start on 127.0.0.1:{port}:\n{text}");
            }
            note("kamailio: port clash; new port");
        }
        unreachable!("the loop returns or panics on its last attempt")
    }

    /// Its address (UDP and TCP).
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::new(LOCALHOST, self.port)
    }

    /// Its log: a line per challenge, REGISTER and relay.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
