//! Configuration: TOML, unknown fields refused, defaults in code, and every problem
//! reported at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub sip: SipConfig,
    pub tls: TlsConfig,
    pub limits: LimitsConfig,
    pub bans: BanConfig,
    pub timers: TimerConfig,
    pub registrar: RegistrarSettings,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub process: ProcessConfig,
    pub testing: TestingConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Listeners as `transport:address:port`, transport one of udp, tcp, tls, ws, wss.
    pub listen: Vec<String>,
    /// Seconds a draining core waits for transactions on SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Core shards: each runs its own transaction layer and proxy for the Call-IDs
    /// that hash to it, in parallel with the others. 0: one per processor.
    pub core_shards: usize,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: vec!["udp:0.0.0.0:5060".into(), "tcp:0.0.0.0:5060".into()],
            shutdown_grace_secs: 5,
            core_shards: 0,
        }
    }
}

impl SipConfig {
    /// The number of core shards to run: `core_shards`, or one per processor.
    pub fn shards(&self) -> usize {
        match self.core_shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(MAX_CORE_SHARDS)
    }
}

/// Most core shards: more than the processors gains nothing.
pub const MAX_CORE_SHARDS: usize = 64;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, required by tls and wss listeners.
    pub certificate: Option<PathBuf>,
    /// PEM private key.
    pub private_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_message_size: usize,
    pub max_headers: usize,
    pub max_header_line: usize,
    pub max_vias: usize,
    pub max_body_size: usize,
    /// Most reads (TCP segments, TLS records) one message may arrive in.
    pub max_fragments_per_message: usize,
    /// Milliseconds from a message's first byte to its last.
    pub message_read_timeout_ms: u64,
    /// Milliseconds a new connection may stay silent before it is closed.
    pub first_message_timeout_ms: u64,
    /// Milliseconds without traffic after which a connection is reaped.
    pub idle_timeout_ms: u64,
    /// Messages queued for writing on one connection before it is closed.
    pub write_queue: usize,
    /// Bytes queued for writing on one connection before it is closed: what a peer
    /// that does not read can make the core hold for it, whatever its messages' size.
    pub write_queue_bytes: usize,
    pub tls_handshake_timeout_ms: u64,
    /// Messages per second one source IP may send (sustained), and the burst above it.
    pub messages_per_sec_per_ip: u32,
    pub message_burst_per_ip: u32,
    /// Transactions alive at once; past it new requests get 503. Over UDP a
    /// completed non-INVITE transaction lingers 64·T1 (32 s) to absorb
    /// retransmissions, so this bounds the sustained UDP request rate to about
    /// max_transactions / 32 per second.
    pub max_transactions: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let wire = holdfast_sip::Limits::DEFAULT;
        LimitsConfig {
            max_connections: 10_000,
            max_connections_per_ip: 50,
            max_message_size: wire.max_message_size,
            max_headers: wire.max_headers,
            max_header_line: wire.max_header_line,
            max_vias: wire.max_vias,
            max_body_size: wire.max_body_size,
            max_fragments_per_message: 64,
            message_read_timeout_ms: 5_000,
            first_message_timeout_ms: 10_000,
            idle_timeout_ms: 600_000,
            write_queue: 16_384,
            write_queue_bytes: 8 << 20,
            tls_handshake_timeout_ms: 5_000,
            messages_per_sec_per_ip: 500,
            message_burst_per_ip: 1_000,
            max_transactions: 500_000,
        }
    }
}

impl LimitsConfig {
    pub fn wire(&self) -> holdfast_sip::Limits {
        holdfast_sip::Limits {
            max_message_size: self.max_message_size,
            max_headers: self.max_headers,
            max_header_line: self.max_header_line,
            max_vias: self.max_vias,
            max_body_size: self.max_body_size,
            ..holdfast_sip::Limits::DEFAULT
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BanConfig {
    pub enabled: bool,
    /// Seconds a ban lasts.
    pub duration_secs: u64,
    /// Offences (parse errors, limit hits) within `window_secs` that earn a ban.
    pub offence_threshold: u32,
    pub window_secs: u64,
    /// Source addresses never banned (exact IPs).
    pub exempt: Vec<std::net::IpAddr>,
}

impl Default for BanConfig {
    fn default() -> Self {
        BanConfig {
            enabled: true,
            duration_secs: 600,
            offence_threshold: 20,
            window_secs: 60,
            exempt: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimerConfig {
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    /// Timer C (RFC 3261 §16.6 item 11): how long a forwarded INVITE may ring without
    /// a final answer. More than 180 s.
    pub timer_c_secs: u64,
    /// An answered call whose BYE never comes (both phones gone, a lost BYE) is
    /// closed in the call history after this long, hung up by the node. 0: never.
    pub max_call_secs: u64,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1_ms: 500,
            t2_ms: 4_000,
            t4_ms: 5_000,
            timer_c_secs: 181,
            max_call_secs: 14_400,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarSettings {
    /// Shortest registration accepted, in seconds (423 Interval Too Brief below it).
    pub min_expires: u32,
    /// Longest registration granted; longer requests are shortened to it.
    pub max_expires: u32,
    /// Used when a REGISTER names no expiry.
    pub default_expires: u32,
    /// Most contacts one address-of-record may hold.
    pub max_contacts: usize,
    /// RFC 5626 keepalive interval asked of outbound clients (Flow-Timer).
    pub flow_timer: u32,
    /// Seconds a digest nonce stays valid.
    pub nonce_lifetime_secs: u64,
    /// Most nonces whose counts are remembered at once (replay protection, RFC 7616
    /// §3.3). A nonce is forgotten once it is stale, so this bounds the rate of new
    /// authentications to max_tracked_nonces / nonce_lifetime_secs a second; each
    /// entry costs about 150 bytes. Past it a device is asked to retry (stale=true).
    pub max_tracked_nonces: usize,
    /// The secret nonces are signed with (hex or any text). Give every node of a
    /// cluster the same one; when absent a random one is made at start.
    pub nonce_secret: Option<String>,
    /// Failed authentications of one user (from any address) within the ban window
    /// that get the source banned.
    pub auth_failures_per_user: u32,
    /// This node's name in bindings and records.
    pub node_name: String,
    /// Digest algorithms offered, most preferred first: "MD5", "SHA-256". Many
    /// devices read only the first challenge, so MD5 comes first by default.
    pub digest_algorithms: Vec<String>,
    /// User-Agent substrings (any case) of devices that refuse a 401 offering
    /// anything but MD5; they are challenged with MD5 alone.
    pub md5_only_user_agents: Vec<String>,
}

impl Default for RegistrarSettings {
    fn default() -> Self {
        RegistrarSettings {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_contacts: 10,
            flow_timer: 120,
            nonce_lifetime_secs: 300,
            max_tracked_nonces: 2_000_000,
            nonce_secret: None,
            auth_failures_per_user: 20,
            node_name: "holdfast".into(),
            digest_algorithms: vec!["MD5".into(), "SHA-256".into()],
            md5_only_user_agents: vec!["baresip".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The admin HTTP listener (health, metrics, API); empty to disable.
    pub listen: String,
    /// Bearer token the user, domain and registration API requires. Without one
    /// those endpoints answer 403.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9060".into(),
            token: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. "info" or "holdfast=debug".
    pub level: String,
    /// A log file; when absent, logs go to standard error.
    pub file: Option<PathBuf>,
    /// Size at which the file is rotated.
    pub max_bytes: u64,
    /// Rotated files kept (`file.1` … `file.N`).
    pub keep: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            file: None,
            max_bytes: 10 * 1024 * 1024,
            keep: 3,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Allow core dumps (off by default: a crash loop must not fill the disk).
    pub core_dumps: bool,
}

/// Test-only switches. Never set in production.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TestingConfig {
    /// A header name whose presence makes message handling panic, to prove the panic
    /// guard closes only that connection.
    pub panic_marker_header: Option<String>,
}

/// A listener: transport and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Listen {
    pub transport: ListenTransport,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenTransport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl ListenTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenTransport::Udp => "udp",
            ListenTransport::Tcp => "tcp",
            ListenTransport::Tls => "tls",
            ListenTransport::Ws => "ws",
            ListenTransport::Wss => "wss",
        }
    }
}

pub fn parse_listen(spec: &str) -> Result<Listen, String> {
    let (t, addr) = spec
        .split_once(':')
        .ok_or_else(|| format!("listener {spec:?}: expected transport:address:port"))?;
    let transport = match t.to_ascii_lowercase().as_str() {
        "udp" => ListenTransport::Udp,
        "tcp" => ListenTransport::Tcp,
        "tls" => ListenTransport::Tls,
        "ws" => ListenTransport::Ws,
        "wss" => ListenTransport::Wss,
        other => {
            return Err(format!(
                "listener {spec:?}: unknown transport {other:?} (udp, tcp, tls, ws, wss)"
            ))
        }
    };
    let addr = addr.parse::<SocketAddr>().map_err(|e| {
        format!("listener {spec:?}: bad address {addr:?}: {e} (IPv6 as [::1]:5060)")
    })?;
    Ok(Listen { transport, addr })
}

/// Deserializes one section. An unknown key is reported and removed, and the rest of
/// the section is read again, so one bad key never hides the section's other
/// problems; any other error is reported and the section keeps its defaults.
fn parse_section<T: serde::de::DeserializeOwned>(
    key: &str,
    value: toml::Value,
    problems: &mut Vec<String>,
) -> Option<T> {
    let mut value = value;
    for _ in 0..64 {
        match value.clone().try_into::<T>() {
            Ok(v) => return Some(v),
            Err(e) => {
                let message = e.to_string();
                let message = message.trim();
                problems.push(format!("[{key}]: {message}"));
                let unknown = message
                    .split_once("unknown field `")
                    .and_then(|(_, rest)| rest.split_once('`'))
                    .map(|(name, _)| name.to_string());
                let removed = match (unknown, value.as_table_mut()) {
                    (Some(name), Some(table)) => table.remove(&name).is_some(),
                    _ => false,
                };
                if !removed {
                    return None;
                }
            }
        }
    }
    None
}

impl Config {
    /// Reads and checks a file, collecting every problem.
    pub fn load(path: &Path) -> Result<Config, Vec<String>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        Config::parse(&text)
    }

    /// Parses TOML text section by section so that each section's error is reported,
    /// then checks the values.
    pub fn parse(text: &str) -> Result<Config, Vec<String>> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| vec![e.to_string()])?;
        let mut problems = Vec::new();
        let mut config = Config::default();
        for (key, value) in table {
            let value = value.clone();
            macro_rules! section {
                ($field:ident) => {
                    match parse_section(&key, value, &mut problems) {
                        Some(v) => config.$field = v,
                        None => {}
                    }
                };
            }
            match key.as_str() {
                "sip" => section!(sip),
                "tls" => section!(tls),
                "limits" => section!(limits),
                "bans" => section!(bans),
                "timers" => section!(timers),
                "registrar" => section!(registrar),
                "admin" => section!(admin),
                "log" => section!(log),
                "process" => section!(process),
                "testing" => section!(testing),
                other => problems.push(format!("unknown section [{other}]")),
            }
        }
        problems.extend(config.check());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Semantic checks; returns every problem.
    pub fn check(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut needs_tls = false;
        let mut seen = std::collections::HashSet::new();
        if self.sip.listen.is_empty() {
            p.push("[sip] listen: at least one listener is required".into());
        }
        if self.sip.core_shards > MAX_CORE_SHARDS {
            p.push(format!(
                "[sip] core_shards: at most {MAX_CORE_SHARDS} (0: one per processor)"
            ));
        }
        for spec in &self.sip.listen {
            match parse_listen(spec) {
                Ok(l) => {
                    needs_tls |= matches!(l.transport, ListenTransport::Tls | ListenTransport::Wss);
                    if !seen.insert(l) {
                        p.push(format!("[sip] listen: {spec:?} is listed twice"));
                    }
                }
                Err(e) => p.push(format!("[sip] {e}")),
            }
        }
        if needs_tls {
            for (name, path) in [
                ("certificate", &self.tls.certificate),
                ("private_key", &self.tls.private_key),
            ] {
                match path {
                    None => p.push(format!("[tls] {name}: required by the tls/wss listeners")),
                    Some(path) if !path.is_file() => p.push(format!(
                        "[tls] {name}: {} is not a readable file",
                        path.display()
                    )),
                    Some(_) => {}
                }
            }
        }
        let l = &self.limits;
        let positive: [(&str, u64); 14] = [
            ("max_connections", l.max_connections as u64),
            ("max_connections_per_ip", l.max_connections_per_ip as u64),
            ("max_message_size", l.max_message_size as u64),
            ("max_headers", l.max_headers as u64),
            ("max_header_line", l.max_header_line as u64),
            ("max_vias", l.max_vias as u64),
            (
                "max_fragments_per_message",
                l.max_fragments_per_message as u64,
            ),
            ("message_read_timeout_ms", l.message_read_timeout_ms),
            ("first_message_timeout_ms", l.first_message_timeout_ms),
            ("idle_timeout_ms", l.idle_timeout_ms),
            ("write_queue", l.write_queue as u64),
            ("write_queue_bytes", l.write_queue_bytes as u64),
            (
                "messages_per_sec_per_ip",
                u64::from(l.messages_per_sec_per_ip),
            ),
            ("max_transactions", l.max_transactions as u64),
        ];
        for (name, v) in positive {
            if v == 0 {
                p.push(format!("[limits] {name}: must be greater than 0"));
            }
        }
        if l.write_queue > 1 << 20 {
            p.push(format!(
                "[limits] write_queue: {} messages is more than the 1048576 a queue can hold (bound it in bytes: write_queue_bytes)",
                l.write_queue
            ));
        }
        if l.write_queue_bytes < l.max_message_size {
            p.push(format!(
                "[limits] write_queue_bytes: {} cannot hold one message of max_message_size ({})",
                l.write_queue_bytes, l.max_message_size
            ));
        }
        if l.max_connections > 19_000 {
            p.push(format!(
                "[limits] max_connections: {} leaves no room under the 20,000 open-file cap (at most 19000)",
                l.max_connections
            ));
        }
        if l.max_connections_per_ip > l.max_connections {
            p.push("[limits] max_connections_per_ip: larger than max_connections".into());
        }
        if l.max_message_size > 1 << 20 {
            p.push("[limits] max_message_size: at most 1048576".into());
        }
        if l.max_body_size > l.max_message_size {
            p.push("[limits] max_body_size: larger than max_message_size".into());
        }
        let t = &self.timers;
        if t.t1_ms == 0 || t.t2_ms < t.t1_ms || t.t4_ms == 0 {
            p.push("[timers] need t1_ms > 0, t2_ms >= t1_ms and t4_ms > 0".into());
        }
        if t.timer_c_secs <= 180 {
            p.push("[timers] timer_c_secs: must be more than 180 (RFC 3261 §16.6)".into());
        }
        if self.bans.duration_secs == 0
            || self.bans.window_secs == 0
            || self.bans.offence_threshold == 0
        {
            p.push(
                "[bans] duration_secs, window_secs and offence_threshold must be greater than 0"
                    .into(),
            );
        }
        if !self.admin.listen.is_empty() && self.admin.listen.parse::<SocketAddr>().is_err() {
            p.push(format!(
                "[admin] listen: {:?} is not an address:port",
                self.admin.listen
            ));
        }
        let r = &self.registrar;
        if r.min_expires == 0 || r.max_expires < r.min_expires {
            p.push("[registrar] need min_expires > 0 and max_expires >= min_expires".into());
        }
        if r.default_expires < r.min_expires || r.default_expires > r.max_expires {
            p.push(
                "[registrar] default_expires must lie between min_expires and max_expires".into(),
            );
        }
        if r.max_contacts == 0 || r.nonce_lifetime_secs == 0 || r.auth_failures_per_user == 0 {
            p.push("[registrar] max_contacts, nonce_lifetime_secs and auth_failures_per_user must be greater than 0".into());
        }
        if r.digest_algorithms.is_empty()
            || r.digest_algorithms
                .iter()
                .any(|a| !matches!(a.as_str(), "MD5" | "SHA-256"))
        {
            p.push(
                "[registrar] digest_algorithms: a non-empty list of \"MD5\" and \"SHA-256\"".into(),
            );
        }
        if self.admin.token.as_deref().is_some_and(|t| t.len() < 16) {
            p.push("[admin] token: use at least 16 characters".into());
        }
        if self.log.max_bytes < 4096 {
            p.push("[log] max_bytes: at least 4096".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            p.push(format!(
                "[log] level: {:?} is not a valid filter",
                self.log.level
            ));
        }
        p
    }

    pub fn listeners(&self) -> Vec<Listen> {
        self.sip
            .listen
            .iter()
            .filter_map(|s| parse_listen(s).ok())
            .collect()
    }

    pub fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().check().is_empty());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"
[sip]
listen = ["udp:127.0.0.1:5060", "carrier-pigeon:1.2.3.4:5", "tls:127.0.0.1:5061"]
bogus = 1
[limits]
max_connections = 0
[nonsense]
x = 1
[admin]
listen = "nowhere"
"#;
        let problems = Config::parse(text).unwrap_err();
        let all = problems.join("\n");
        assert!(all.contains("bogus"), "{all}");
        assert!(all.contains("[nonsense]"), "{all}");
        assert!(all.contains("[admin] listen"), "{all}");
        assert!(
            all.contains("max_connections: must"),
            "a broken section hides no other problem: {all}"
        );
    }

    #[test]
    fn the_write_queue_is_bounded_in_bytes_that_hold_a_message() {
        let ok = Config::parse("[limits]\nwrite_queue_bytes = 1048576\n").unwrap();
        assert_eq!(ok.limits.write_queue_bytes, 1 << 20);
        let small = Config::parse("[limits]\nwrite_queue_bytes = 1000\nmax_message_size = 4096\n")
            .unwrap_err()
            .join("\n");
        assert!(
            small.contains("[limits] write_queue_bytes: 1000 cannot hold one message"),
            "{small}"
        );
    }

    #[test]
    fn core_shards_default_to_the_processors_and_are_bounded() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(Config::default().sip.shards(), cpus.min(MAX_CORE_SHARDS));
        let three = Config::parse("[sip]\ncore_shards = 3\n").unwrap();
        assert_eq!(three.sip.shards(), 3);
        let all = Config::parse("[sip]\ncore_shards = 65\n")
            .unwrap_err()
            .join("\n");
        assert!(all.contains("[sip] core_shards: at most 64"), "{all}");
    }

    #[test]
    fn semantic_problems_all_reported() {
        let text = r#"
[sip]
listen = ["carrier-pigeon:1.2.3.4:5", "tls:127.0.0.1:5061"]
[limits]
max_connections = 0
max_connections_per_ip = 5
[admin]
listen = "nowhere"
"#;
        let problems = Config::parse(text).unwrap_err();
        let all = problems.join("\n");
        for needle in [
            "carrier-pigeon",
            "[tls] certificate",
            "[tls] private_key",
            "max_connections: must",
            "[admin] listen",
        ] {
            assert!(all.contains(needle), "missing {needle}: {all}");
        }
    }

    #[test]
    fn shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let table: toml::Table = text.parse().unwrap();
                let parsed: Result<Config, _> = toml::Table::try_into(table);
                assert!(parsed.is_ok(), "{}: {parsed:?}", path.display());
                n += 1;
            }
        }
        assert!(n >= 2);
    }
}
