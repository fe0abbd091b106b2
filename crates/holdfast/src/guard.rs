//! Per-source policy: message rate, connection counts, offences and bans.
//!
//! One table keyed by source IP. A source that floods past its message rate or keeps
//! sending what cannot be parsed is banned for a configured time: its datagrams are
//! dropped and its connections refused at accept. The table is bounded; when full,
//! the entries that hold no ban and no connection are dropped first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{BanConfig, LimitsConfig};

const MAX_ENTRIES: usize = 200_000;

#[derive(Debug)]
struct Source {
    tokens: f64,
    refilled: Instant,
    offences: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
    ban_reason: &'static str,
    connections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allow,
    /// Over the message rate: drop this one (and count an offence).
    RateLimited,
    Banned,
}

#[derive(Debug, Serialize)]
pub struct BanInfo {
    pub ip: IpAddr,
    pub reason: &'static str,
    pub expires_in_secs: u64,
}

#[derive(Debug)]
pub struct Guard {
    bans: BanConfig,
    rate: f64,
    burst: f64,
    per_ip_connections: usize,
    table: Mutex<HashMap<IpAddr, Source>>,
}

/// What happened when an offence was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offence {
    Counted,
    NewBan,
}

impl Guard {
    pub fn new(bans: &BanConfig, limits: &LimitsConfig) -> Guard {
        Guard {
            bans: bans.clone(),
            rate: f64::from(limits.messages_per_sec_per_ip),
            burst: f64::from(
                limits
                    .message_burst_per_ip
                    .max(limits.messages_per_sec_per_ip),
            ),
            per_ip_connections: limits.max_connections_per_ip,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, ip: IpAddr, now: Instant, f: impl FnOnce(&mut Source) -> R) -> R {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= MAX_ENTRIES && !table.contains_key(&ip) {
            table.retain(|_, s| s.connections > 0 || s.banned_until.is_some_and(|t| t > now));
        }
        let s = table.entry(ip).or_insert_with(|| Source {
            tokens: self.burst,
            refilled: now,
            offences: 0,
            window_start: now,
            banned_until: None,
            ban_reason: "",
            connections: 0,
        });
        if s.banned_until.is_some_and(|t| t <= now) {
            s.banned_until = None;
            s.offences = 0;
        }
        f(s)
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        !self.bans.enabled || self.bans.exempt.contains(&ip)
    }

    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        !self.exempt(ip) && self.with(ip, now, |s| s.banned_until.is_some())
    }

    /// Admits one message from `ip`: checks the ban and takes a token.
    pub fn admit_message(&self, ip: IpAddr, now: Instant) -> Admission {
        let exempt = self.exempt(ip);
        let (rate, burst) = (self.rate, self.burst);
        self.with(ip, now, |s| {
            if s.banned_until.is_some() && !exempt {
                return Admission::Banned;
            }
            let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
            s.tokens = (s.tokens + elapsed * rate).min(burst);
            s.refilled = now;
            if s.tokens >= 1.0 {
                s.tokens -= 1.0;
                Admission::Allow
            } else {
                Admission::RateLimited
            }
        })
    }

    /// Records an offence (parse error, limit hit, flood); bans past the threshold.
    pub fn offence(&self, ip: IpAddr, reason: &'static str, now: Instant) -> Offence {
        if self.exempt(ip) {
            return Offence::Counted;
        }
        let (threshold, window, duration) = (
            self.bans.offence_threshold,
            Duration::from_secs(self.bans.window_secs),
            Duration::from_secs(self.bans.duration_secs),
        );
        self.with(ip, now, |s| {
            if s.banned_until.is_some() {
                return Offence::Counted;
            }
            if now.saturating_duration_since(s.window_start) > window {
                s.window_start = now;
                s.offences = 0;
            }
            s.offences = s.offences.saturating_add(1);
            if s.offences >= threshold {
                s.banned_until = Some(now + duration);
                s.ban_reason = reason;
                Offence::NewBan
            } else {
                Offence::Counted
            }
        })
    }

    /// Bans at once, without a threshold.
    pub fn ban(&self, ip: IpAddr, reason: &'static str, now: Instant) -> Offence {
        if self.exempt(ip) {
            return Offence::Counted;
        }
        let duration = Duration::from_secs(self.bans.duration_secs);
        self.with(ip, now, |s| {
            if s.banned_until.is_some() {
                return Offence::Counted;
            }
            s.banned_until = Some(now + duration);
            s.ban_reason = reason;
            Offence::NewBan
        })
    }

    /// Takes a connection slot for `ip`; false when it is at its cap.
    pub fn open_connection(&self, ip: IpAddr, now: Instant) -> bool {
        let cap = self.per_ip_connections;
        self.with(ip, now, |s| {
            if s.connections >= cap {
                false
            } else {
                s.connections += 1;
                true
            }
        })
    }

    pub fn close_connection(&self, ip: IpAddr, now: Instant) {
        self.with(ip, now, |s| s.connections = s.connections.saturating_sub(1));
    }

    pub fn bans(&self, now: Instant) -> Vec<BanInfo> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<BanInfo> = table
            .iter()
            .filter_map(|(ip, s)| {
                let until = s.banned_until.filter(|t| *t > now)?;
                Some(BanInfo {
                    ip: *ip,
                    reason: s.ban_reason,
                    expires_in_secs: until.saturating_duration_since(now).as_secs(),
                })
            })
            .collect();
        out.sort_by_key(|b| b.ip);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(threshold: u32, rate: u32) -> Guard {
        let bans = BanConfig {
            offence_threshold: threshold,
            ..BanConfig::default()
        };
        let limits = LimitsConfig {
            messages_per_sec_per_ip: rate,
            message_burst_per_ip: rate,
            max_connections_per_ip: 2,
            ..LimitsConfig::default()
        };
        Guard::new(&bans, &limits)
    }

    #[tokio::test(start_paused = true)]
    async fn offences_ban_then_expire() {
        let g = guard(3, 100);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let now = Instant::now();
        assert_eq!(g.offence(ip, "parse", now), Offence::Counted);
        assert_eq!(g.offence(ip, "parse", now), Offence::Counted);
        assert_eq!(g.offence(ip, "parse", now), Offence::NewBan);
        assert!(g.is_banned(ip, now));
        assert_eq!(g.admit_message(ip, now), Admission::Banned);
        assert_eq!(g.bans(now).len(), 1);
        let later = now + Duration::from_secs(601);
        assert!(!g.is_banned(ip, later));
        assert!(g.bans(later).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_refills() {
        let g = guard(100, 10);
        let ip: IpAddr = "127.0.0.3".parse().unwrap();
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(g.admit_message(ip, now), Admission::Allow);
        }
        assert_eq!(g.admit_message(ip, now), Admission::RateLimited);
        assert_eq!(
            g.admit_message(ip, now + Duration::from_millis(200)),
            Admission::Allow
        );
    }

    #[tokio::test(start_paused = true)]
    async fn per_ip_connection_cap() {
        let g = guard(100, 10);
        let ip: IpAddr = "127.0.0.4".parse().unwrap();
        let now = Instant::now();
        assert!(g.open_connection(ip, now));
        assert!(g.open_connection(ip, now));
        assert!(!g.open_connection(ip, now));
        g.close_connection(ip, now);
        assert!(g.open_connection(ip, now));
    }
}
