//! The registrar (RFC 3261 §10.3) and the location service it writes: bindings of an
//! address-of-record to contacts, each with the flow it arrived on (RFC 5626), its
//! Path (RFC 3327) and its expiry.
//!
//! [`process_register`] decides what a REGISTER does, given the current bindings: a
//! refusal (400, 423 with Min-Expires), or the complete new binding set of the AoR and
//! the 200 response listing it. Both responses come encoded ([`crate::response`]):
//! they are sent as they are, never read again. The shell makes the change durable before it sends the
//! 200, then applies it to [`Location`]. Expiry is an ordered index: each tick pops
//! only what has expired, never scanning every binding.
//!
//! Authentication happens before this: the shell verifies digest credentials
//! ([`crate::digest`]) and checks the authenticated user may register the AoR.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use bytes::Bytes;
use holdfast_sip::{ContactList, HeaderName, Message, Uri};

use crate::response::{push_number, EncodedResponse, ResponseWriter};

use crate::transport::Transport;

/// The flow a binding arrived on: how to reach the device behind NAT or over its own
/// connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The transport.
    pub transport: Transport,
    /// The source address the REGISTER came from (after NAT).
    pub remote: SocketAddr,
    /// The local address it arrived on.
    pub local: Option<SocketAddr>,
    /// The connection, for stream transports.
    pub connection: Option<u64>,
}

/// One binding of an AoR to a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// `user@domain`, domain lower-cased.
    pub aor: String,
    /// The contact URI as the device wrote it.
    pub contact: Bytes,
    /// RFC 5626 `+sip.instance`.
    pub instance: Option<Bytes>,
    /// RFC 5626 `reg-id`.
    pub reg_id: Option<u32>,
    /// q-value in thousandths.
    pub q: Option<u16>,
    /// Unix seconds at which it expires.
    pub expires_at: u64,
    /// Call-ID and CSeq of the REGISTER that last wrote it (§10.3 step 7).
    pub call_id: Bytes,
    /// See `call_id`.
    pub cseq: u32,
    /// Path headers to use towards the device (RFC 3327).
    pub path: Vec<Bytes>,
    /// Where the REGISTER came from.
    pub flow: Flow,
    /// The device's User-Agent.
    pub user_agent: Option<Bytes>,
}

impl Binding {
    /// The parsed contact URI.
    pub fn uri(&self) -> Option<Uri> {
        Uri::parse(self.contact.clone()).ok()
    }

    /// True when `other` names the same binding: same instance and reg-id (RFC 5626
    /// §6), else an equivalent contact URI (RFC 3261 §10.3 step 7).
    fn same_as(&self, instance: Option<&Bytes>, reg_id: Option<u32>, uri: &Uri) -> bool {
        match (&self.instance, instance, self.reg_id, reg_id) {
            (Some(a), Some(b), Some(x), Some(y)) => a == b && x == y,
            _ => self.uri().is_some_and(|u| u.equivalent(uri)),
        }
    }
}

/// Registrar settings.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Shortest registration accepted (423 below it).
    pub min_expires: u32,
    /// Longest registration granted (longer requests are shortened).
    pub max_expires: u32,
    /// Used when the request names no expiry.
    pub default_expires: u32,
    /// Most contacts one AoR may hold.
    pub max_contacts: usize,
    /// Seconds between RFC 5626 keepalives the registrar asks for (Flow-Timer).
    pub flow_timer: u32,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_contacts: 10,
            flow_timer: 120,
        }
    }
}

/// What a REGISTER does.
#[derive(Debug)]
pub enum RegisterOutcome {
    /// Refuse it with this response.
    Reject(EncodedResponse),
    /// Replace the AoR's bindings with `bindings` (durably), then send `response`.
    Update {
        /// The AoR.
        aor: String,
        /// Its complete new binding set (empty: every binding removed).
        bindings: Vec<Binding>,
        /// The 200 listing them.
        response: EncodedResponse,
    },
}

/// The AoR of a REGISTER: its To URI as `user@domain` (RFC 3261 §10.3 step 5). `None`
/// when To is not a SIP or SIPS URI with a user part.
pub fn aor_of(msg: &Message) -> Option<String> {
    let to = msg.to()?.uri.as_sip()?;
    let user = to.user_unescaped()?;
    let user = std::str::from_utf8(&user).ok()?;
    let host = std::str::from_utf8(to.host_text.as_ref()).ok()?;
    Some(format!("{user}@{}", host.to_ascii_lowercase()))
}

fn reject(req: &Message, code: u16, reason: &str) -> RegisterOutcome {
    RegisterOutcome::Reject(ResponseWriter::new(req, code, reason, &crate::tag()).finish())
}

/// Decides what a REGISTER for `aor` does, given the AoR's `current` bindings.
/// `now` is Unix seconds; `flow` is where the request came from.
pub fn process_register(
    config: &RegistrarConfig,
    current: &[Binding],
    req: &Message,
    aor: &str,
    flow: &Flow,
    now: u64,
) -> RegisterOutcome {
    let (Some(call_id), Some(cseq)) = (req.call_id(), req.cseq()) else {
        return reject(req, 400, "Missing Call-ID or CSeq");
    };
    let header_expires = req.expires();
    let supported = |tag: &str| {
        req.option_tags(HeaderName::Supported)
            .any(|t| t.eq_ignore_ascii_case(tag.as_bytes()))
    };
    let path: Vec<Bytes> = if supported("path") {
        req.paths().map(|p| p.as_bytes().clone()).collect()
    } else {
        Vec::new()
    };
    let user_agent = req
        .header(HeaderName::UserAgent)
        .map(|h| Bytes::copy_from_slice(h.raw_value()));

    let mut bindings: Vec<Binding> = current
        .iter()
        .filter(|b| b.expires_at > now)
        .cloned()
        .collect();
    let lists: Vec<&ContactList> = req.contact_lists().collect();
    let mut outbound = false;

    if lists.iter().any(|l| matches!(l, ContactList::Star)) {
        // §10.3 step 6: `*` only alone and with Expires: 0.
        if lists.len() != 1 || header_expires != Some(0) {
            return reject(req, 400, "Invalid Contact: *");
        }
        for b in &bindings {
            if b.call_id == *call_id && cseq.seq <= b.cseq {
                return reject(req, 400, "CSeq Out of Order");
            }
        }
        bindings.clear();
    } else {
        for contact in req.contacts() {
            let Some(uri) = Some(contact.addr.uri.clone()) else {
                continue;
            };
            let requested = contact
                .expires()
                .or(header_expires)
                .unwrap_or(config.default_expires);
            if requested != 0 && requested < config.min_expires {
                let mut resp = ResponseWriter::new(req, 423, "Interval Too Brief", &crate::tag());
                resp.number("Min-Expires", u64::from(config.min_expires));
                return RegisterOutcome::Reject(resp.finish());
            }
            let expires = requested.min(config.max_expires);
            let instance = contact.instance();
            let reg_id = contact.reg_id();
            if instance.is_some() && reg_id.is_some() && supported("outbound") {
                outbound = true;
            }
            let existing = bindings
                .iter()
                .position(|b| b.same_as(instance.as_ref(), reg_id, &uri));
            if let Some(i) = existing {
                if let Some(b) = bindings.get(i) {
                    if b.call_id == *call_id && cseq.seq <= b.cseq {
                        return reject(req, 400, "CSeq Out of Order");
                    }
                }
                bindings.remove(i);
            }
            if expires == 0 {
                continue;
            }
            bindings.push(Binding {
                aor: aor.to_string(),
                contact: uri.as_bytes().clone(),
                instance,
                reg_id,
                q: contact.q(),
                expires_at: now.saturating_add(u64::from(expires)),
                call_id: call_id.clone(),
                cseq: cseq.seq,
                path: path.clone(),
                flow: flow.clone(),
                user_agent: user_agent.clone(),
            });
        }
        if bindings.len() > config.max_contacts {
            // Drop the ones closest to expiry first, keeping the newest registrations.
            bindings.sort_by_key(|b| std::cmp::Reverse(b.expires_at));
            bindings.truncate(config.max_contacts);
        }
    }

    let mut resp = ResponseWriter::new(req, 200, "OK", &crate::tag());
    for b in &bindings {
        let left = b.expires_at.saturating_sub(now);
        resp.header_with("Contact", |v| {
            v.push(b'<');
            v.extend_from_slice(&b.contact);
            v.extend_from_slice(b">;expires=");
            push_number(v, left);
        });
    }
    for p in &path {
        resp.header("Path", p);
    }
    if outbound {
        resp.header("Require", b"outbound");
        resp.number("Flow-Timer", u64::from(config.flow_timer));
    }
    resp.header("Supported", b"path, outbound");
    resp.header_with("Date", |v| write_http_date(v, now));
    RegisterOutcome::Update {
        aor: aor.to_string(),
        bindings,
        response: resp.finish(),
    }
}

/// An RFC 1123 date (RFC 3261 §20.17), e.g. `Sat, 13 Nov 2010 23:29:00 GMT`.
pub fn http_date(unix: u64) -> String {
    let mut out = Vec::with_capacity(29);
    write_http_date(&mut out, unix);
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends [`http_date`]`(unix)` to `out`.
// The input is the local clock, not peer bytes: `days` is below 2^48, so every
// intermediate of the civil-date arithmetic fits an i64 with room to spare.
#[allow(clippy::arithmetic_side_effects)]
pub fn write_http_date(out: &mut Vec<u8>, unix: u64) {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let weekday = DAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    // Civil from days (Howard Hinnant's algorithm), all in i64 with checked ranges.
    let z = i64::try_from(days).unwrap_or(0).saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let month = MONTHS
        .get(usize::try_from(m - 1).unwrap_or(0))
        .copied()
        .unwrap_or("Jan");
    let two = |out: &mut Vec<u8>, n: u64| {
        out.push(b'0' + (n / 10 % 10) as u8);
        out.push(b'0' + (n % 10) as u8);
    };
    out.extend_from_slice(weekday.as_bytes());
    out.extend_from_slice(b", ");
    two(out, u64::try_from(d).unwrap_or(0));
    out.push(b' ');
    out.extend_from_slice(month.as_bytes());
    out.push(b' ');
    push_number(out, u64::try_from(y).unwrap_or(0));
    out.push(b' ');
    two(out, secs / 3600);
    out.push(b':');
    two(out, (secs % 3600) / 60);
    out.push(b':');
    two(out, secs % 60);
    out.extend_from_slice(b" GMT");
}

/// The in-memory location service: every live binding, by AoR, with an expiry index.
#[derive(Debug, Default)]
pub struct Location {
    by_aor: HashMap<String, Vec<Binding>>,
    /// (expires_at, aor, contact) for every binding.
    expiry: BTreeSet<(u64, String, Bytes)>,
}

impl Location {
    /// An empty location service.
    pub fn new() -> Location {
        Location::default()
    }

    /// The AoR's bindings (expired ones may linger until the next [`expire`](Self::expire)).
    pub fn lookup(&self, aor: &str) -> &[Binding] {
        self.by_aor.get(aor).map_or(&[], Vec::as_slice)
    }

    /// Replaces the AoR's bindings.
    pub fn replace(&mut self, aor: &str, bindings: Vec<Binding>) {
        if let Some(old) = self.by_aor.remove(aor) {
            for b in old {
                self.expiry.remove(&(b.expires_at, b.aor, b.contact));
            }
        }
        if bindings.is_empty() {
            return;
        }
        for b in &bindings {
            self.expiry
                .insert((b.expires_at, b.aor.clone(), b.contact.clone()));
        }
        self.by_aor.insert(aor.to_string(), bindings);
    }

    /// Removes every binding expired at `now`; returns them. Costs O(expired · log n).
    pub fn expire(&mut self, now: u64) -> Vec<Binding> {
        let mut gone = Vec::new();
        while let Some(first) = self.expiry.first() {
            if first.0 > now {
                break;
            }
            let Some((at, aor, contact)) = self.expiry.pop_first() else {
                break;
            };
            if let Some(list) = self.by_aor.get_mut(&aor) {
                if let Some(i) = list
                    .iter()
                    .position(|b| b.contact == contact && b.expires_at == at)
                {
                    gone.push(list.remove(i));
                }
                if list.is_empty() {
                    self.by_aor.remove(&aor);
                }
            }
        }
        gone
    }

    /// When the next binding expires.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiry.first().map(|e| e.0)
    }

    /// Every binding.
    pub fn iter(&self) -> impl Iterator<Item = &Binding> + '_ {
        self.by_aor.values().flatten()
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.expiry.len()
    }

    /// True when there is no binding.
    pub fn is_empty(&self) -> bool {
        self.expiry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_sip::{parse_datagram, Limits};

    fn flow() -> Flow {
        Flow {
            transport: Transport::Udp,
            remote: "192.0.2.7:40000".parse().unwrap(),
            local: None,
            connection: None,
        }
    }

    fn register(call_id: &str, cseq: u32, contacts: &str, extra: &str) -> Message {
        let raw = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK{cseq}\r\n\
From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@Example.COM>\r\nCall-ID: {call_id}\r\n\
CSeq: {cseq} REGISTER\r\n{contacts}{extra}Content-Length: 0\r\n\r\n"
        );
        parse_datagram(Bytes::from(raw), &Limits::default()).unwrap()
    }

    /// An encoded response, parsed back.
    fn parsed(r: &EncodedResponse) -> Message {
        let msg = parse_datagram(r.data.clone(), &Limits::default()).unwrap();
        assert_eq!(msg.status(), Some(r.status));
        msg
    }

    fn update(out: RegisterOutcome) -> (Vec<Binding>, Message) {
        match out {
            RegisterOutcome::Update {
                bindings, response, ..
            } => (bindings, parsed(&response)),
            RegisterOutcome::Reject(r) => {
                panic!("rejected: {}", String::from_utf8_lossy(&r.data))
            }
        }
    }

    fn status(out: &RegisterOutcome) -> u16 {
        match out {
            RegisterOutcome::Update { .. } => 200,
            RegisterOutcome::Reject(r) => parsed(r).status().unwrap(),
        }
    }

    #[test]
    fn add_refresh_remove() {
        let cfg = RegistrarConfig::default();
        let req = register(
            "c1",
            1,
            "Contact: <sip:alice@192.0.2.7>;q=0.5\r\nContact: <sip:alice@10.0.0.1>\r\n",
            "Expires: 600\r\n",
        );
        let aor = aor_of(&req).unwrap();
        assert_eq!(aor, "alice@example.com");
        let (b, resp) = update(process_register(&cfg, &[], &req, &aor, &flow(), 1000));
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].expires_at, 1600);
        assert_eq!(b[0].q, Some(500));
        assert_eq!(resp.contacts().count(), 2);
        assert!(resp.header(HeaderName::Date).is_some());
        // Refresh one with a per-contact expiry; the other stays.
        let req = register(
            "c1",
            2,
            "Contact: <sip:alice@192.0.2.7>;expires=120\r\n",
            "",
        );
        let (b2, resp) = update(process_register(&cfg, &b, &req, &aor, &flow(), 1100));
        assert_eq!(b2.len(), 2);
        assert!(b2.iter().any(|x| x.expires_at == 1220));
        assert!(resp.contacts().all(|c| c.expires().is_some()));
        // An older CSeq on the same Call-ID does not win.
        let stale = register("c1", 1, "Contact: <sip:alice@192.0.2.7>;expires=0\r\n", "");
        assert_eq!(
            status(&process_register(&cfg, &b2, &stale, &aor, &flow(), 1100)),
            400
        );
        // Remove one; then * removes all.
        let req = register("c1", 3, "Contact: <sip:alice@192.0.2.7>;expires=0\r\n", "");
        let (b3, _) = update(process_register(&cfg, &b2, &req, &aor, &flow(), 1200));
        assert_eq!(b3.len(), 1);
        let star = register("c1", 4, "Contact: *\r\n", "Expires: 0\r\n");
        let (b4, resp) = update(process_register(&cfg, &b3, &star, &aor, &flow(), 1200));
        assert!(b4.is_empty());
        assert_eq!(resp.contacts().count(), 0);
        // * without Expires: 0 is refused.
        let bad = register("c1", 5, "Contact: *\r\n", "");
        assert_eq!(
            status(&process_register(&cfg, &b3, &bad, &aor, &flow(), 1200)),
            400
        );
    }

    #[test]
    fn min_and_max_expires() {
        let cfg = RegistrarConfig::default();
        let req = register("c", 1, "Contact: <sip:a@h>;expires=30\r\n", "");
        match process_register(&cfg, &[], &req, "alice@example.com", &flow(), 0) {
            RegisterOutcome::Reject(r) => {
                let r = parsed(&r);
                assert_eq!(r.status(), Some(423));
                assert_eq!(r.min_expires(), Some(60));
            }
            other => panic!("{other:?}"),
        }
        let req = register("c", 1, "Contact: <sip:a@h>;expires=99999\r\n", "");
        let (b, _) = update(process_register(
            &cfg,
            &[],
            &req,
            "alice@example.com",
            &flow(),
            0,
        ));
        assert_eq!(b[0].expires_at, 7200);
    }

    #[test]
    fn outbound_and_path() {
        let cfg = RegistrarConfig::default();
        let req = register(
            "c",
            1,
            "Contact: <sip:a@10.0.0.9;transport=tcp>;+sip.instance=\"<urn:uuid:1>\";reg-id=1\r\n",
            "Supported: outbound, path\r\nPath: <sip:edge.example.com;lr;ob>\r\n",
        );
        let (b, resp) = update(process_register(
            &cfg,
            &[],
            &req,
            "alice@example.com",
            &flow(),
            0,
        ));
        assert_eq!(b[0].instance.as_deref(), Some(&b"<urn:uuid:1>"[..]));
        assert_eq!(b[0].path.len(), 1);
        assert_eq!(b[0].flow, flow());
        assert!(resp
            .option_tags(HeaderName::Require)
            .any(|t| t.as_ref() == b"outbound"));
        assert_eq!(resp.flow_timer(), Some(120));
        assert_eq!(resp.paths().count(), 1);
        // A re-registration of the same instance and reg-id from a new address replaces it.
        let req = register(
            "c2",
            1,
            "Contact: <sip:a@10.0.0.10;transport=tcp>;+sip.instance=\"<urn:uuid:1>\";reg-id=1\r\n",
            "Supported: outbound\r\n",
        );
        let (b2, _) = update(process_register(
            &cfg,
            &b,
            &req,
            "alice@example.com",
            &flow(),
            1,
        ));
        assert_eq!(b2.len(), 1);
        assert!(b2[0].contact.ends_with(b"10.0.0.10;transport=tcp"));
    }

    #[test]
    fn location_expiry_pops_only_what_expired() {
        let cfg = RegistrarConfig::default();
        let mut loc = Location::new();
        for (i, exp) in [(1, 100u32), (2, 300)] {
            let req = register(
                &format!("c{i}"),
                1,
                &format!("Contact: <sip:a{i}@h>;expires={exp}\r\n"),
                "",
            );
            let aor = format!("u{i}@example.com");
            let (b, _) = update(process_register(&cfg, &[], &req, &aor, &flow(), 0));
            loc.replace(&aor, b);
        }
        assert_eq!(loc.len(), 2);
        assert_eq!(loc.next_expiry(), Some(100));
        assert!(loc.expire(99).is_empty());
        let gone = loc.expire(100);
        assert_eq!(gone.len(), 1);
        assert!(loc.lookup("u1@example.com").is_empty());
        assert_eq!(loc.lookup("u2@example.com").len(), 1);
    }

    #[test]
    fn dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_289_690_940), "Sat, 13 Nov 2010 23:29:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_767_225_599), "Wed, 31 Dec 2025 23:59:59 GMT");
        assert_eq!(http_date(253_402_300_799), "Fri, 31 Dec 9999 23:59:59 GMT");
    }
}
