//! Counters and gauges, rendered in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use holdfast_sip::Limit;

use crate::config::ListenTransport;

const TRANSPORTS: [ListenTransport; 5] = [
    ListenTransport::Udp,
    ListenTransport::Tcp,
    ListenTransport::Tls,
    ListenTransport::Ws,
    ListenTransport::Wss,
];

const LIMITS: [Limit; 8] = [
    Limit::MessageSize,
    Limit::HeadSize,
    Limit::Headers,
    Limit::HeaderLine,
    Limit::Vias,
    Limit::Folds,
    Limit::BodySize,
    Limit::Keepalive,
];

/// Ingress limits of the transport layer, beside the wire layer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressLimit {
    Connections,
    ConnectionsPerIp,
    Fragments,
    ReadTimeout,
    FirstMessageTimeout,
    WriteQueue,
    TlsHandshake,
    MessageRate,
    OpenFiles,
}

const INGRESS: [IngressLimit; 9] = [
    IngressLimit::Connections,
    IngressLimit::ConnectionsPerIp,
    IngressLimit::Fragments,
    IngressLimit::ReadTimeout,
    IngressLimit::FirstMessageTimeout,
    IngressLimit::WriteQueue,
    IngressLimit::TlsHandshake,
    IngressLimit::MessageRate,
    IngressLimit::OpenFiles,
];

impl IngressLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            IngressLimit::Connections => "connections",
            IngressLimit::ConnectionsPerIp => "connections_per_ip",
            IngressLimit::Fragments => "fragments",
            IngressLimit::ReadTimeout => "read_timeout",
            IngressLimit::FirstMessageTimeout => "first_message_timeout",
            IngressLimit::WriteQueue => "write_queue",
            IngressLimit::TlsHandshake => "tls_handshake",
            IngressLimit::MessageRate => "message_rate",
            IngressLimit::OpenFiles => "open_files",
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    messages_in: [AtomicU64; 5],
    messages_out: [AtomicU64; 5],
    connections_open: [AtomicU64; 5],
    connections_total: [AtomicU64; 5],
    wire_limits: [AtomicU64; 8],
    ingress_limits: [AtomicU64; 9],
    pub parse_errors: AtomicU64,
    pub framing_errors: AtomicU64,
    pub panics_caught: AtomicU64,
    pub bans_total: AtomicU64,
    pub dropped_banned: AtomicU64,
    pub responses_dropped: AtomicU64,
    pub overloaded: AtomicU64,
    pub logs_suppressed: AtomicU64,
    /// Call records written, by disposition (see [`DISPOSITIONS`]).
    calls: [AtomicU64; 5],
    /// Answered calls up now.
    pub calls_up: AtomicU64,
}

/// The dispositions of call records, in the order of `Metrics::calls`.
pub const DISPOSITIONS: [holdfast_store::Disposition; 5] = [
    holdfast_store::Disposition::Answered,
    holdfast_store::Disposition::Busy,
    holdfast_store::Disposition::NoAnswer,
    holdfast_store::Disposition::Cancelled,
    holdfast_store::Disposition::Failed,
];

fn idx(t: ListenTransport) -> usize {
    TRANSPORTS.iter().position(|x| *x == t).unwrap_or(0)
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn message_in(&self, t: ListenTransport) {
        inc(&self.messages_in[idx(t)]);
    }

    pub fn message_out(&self, t: ListenTransport) {
        inc(&self.messages_out[idx(t)]);
    }

    pub fn connection_opened(&self, t: ListenTransport) {
        inc(&self.connections_open[idx(t)]);
        inc(&self.connections_total[idx(t)]);
    }

    pub fn connection_closed(&self, t: ListenTransport) {
        self.connections_open[idx(t)].fetch_sub(1, Ordering::Relaxed);
    }

    pub fn connections_open(&self) -> u64 {
        self.connections_open
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// A call attempt ended (or, answered, went up) with this disposition.
    pub fn call(&self, d: holdfast_store::Disposition) {
        if let Some(i) = DISPOSITIONS.iter().position(|x| *x == d) {
            inc(&self.calls[i]);
        }
    }

    pub fn wire_limit(&self, l: Limit) {
        if let Some(i) = LIMITS.iter().position(|x| *x == l) {
            inc(&self.wire_limits[i]);
        }
    }

    pub fn ingress_limit(&self, l: IngressLimit) {
        if let Some(i) = INGRESS.iter().position(|x| *x == l) {
            inc(&self.ingress_limits[i]);
        }
    }

    pub fn render(&self, bans_active: usize) -> String {
        let mut out = String::with_capacity(4096);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let per_transport = |arr: &[AtomicU64; 5]| {
            TRANSPORTS
                .iter()
                .zip(arr)
                .map(|(t, c)| (format!("{{transport=\"{}\"}}", t.as_str()), get(c)))
                .collect::<Vec<_>>()
        };
        family(
            "holdfast_messages_in_total",
            "counter",
            "SIP messages received",
            per_transport(&self.messages_in),
        );
        family(
            "holdfast_messages_out_total",
            "counter",
            "SIP messages sent",
            per_transport(&self.messages_out),
        );
        family(
            "holdfast_connections_open",
            "gauge",
            "Open connections",
            per_transport(&self.connections_open),
        );
        family(
            "holdfast_connections_total",
            "counter",
            "Connections accepted",
            per_transport(&self.connections_total),
        );
        let mut limits: Vec<(String, u64)> = LIMITS
            .iter()
            .zip(&self.wire_limits)
            .map(|(l, c)| (format!("{{limit=\"{}\"}}", l.as_str()), get(c)))
            .collect();
        limits.extend(
            INGRESS
                .iter()
                .zip(&self.ingress_limits)
                .map(|(l, c)| (format!("{{limit=\"{}\"}}", l.as_str()), get(c))),
        );
        family(
            "holdfast_limit_hits_total",
            "counter",
            "Messages or connections refused by a limit",
            limits,
        );
        let one = |v: u64| vec![(String::new(), v)];
        family(
            "holdfast_parse_errors_total",
            "counter",
            "Messages that did not parse",
            one(get(&self.parse_errors)),
        );
        family(
            "holdfast_framing_errors_total",
            "counter",
            "Streams closed because they could not be framed",
            one(get(&self.framing_errors)),
        );
        family(
            "holdfast_panics_caught_total",
            "counter",
            "Panics caught by a connection's guard",
            one(get(&self.panics_caught)),
        );
        family(
            "holdfast_bans_total",
            "counter",
            "Source addresses banned",
            one(get(&self.bans_total)),
        );
        family(
            "holdfast_bans_active",
            "gauge",
            "Source addresses banned now",
            one(bans_active as u64),
        );
        family(
            "holdfast_banned_drops_total",
            "counter",
            "Packets and connections refused from banned sources",
            one(get(&self.dropped_banned)),
        );
        family(
            "holdfast_responses_dropped_total",
            "counter",
            "Responses that matched no transaction or were invalid",
            one(get(&self.responses_dropped)),
        );
        family(
            "holdfast_overloaded_total",
            "counter",
            "Messages refused because the core was overloaded",
            one(get(&self.overloaded)),
        );
        family(
            "holdfast_calls_total",
            "counter",
            "Call attempts recorded, by disposition",
            DISPOSITIONS
                .iter()
                .zip(&self.calls)
                .map(|(d, c)| (format!("{{disposition=\"{}\"}}", d.as_str()), get(c)))
                .collect(),
        );
        family(
            "holdfast_calls_up",
            "gauge",
            "Answered calls not yet ended",
            one(get(&self.calls_up)),
        );
        family(
            "holdfast_logs_suppressed_total",
            "counter",
            "Log lines suppressed by rate limiting",
            one(get(&self.logs_suppressed)),
        );
        out
    }
}
