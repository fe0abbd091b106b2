//! URIs: `sip`, `sips` and `tel` parsed, any other scheme kept as opaque text
//! (RFC 3261 §19.1, §25.1; RFC 3966; RFC 5118 for IPv6 references).
//!
//! A [`Uri`] keeps the exact bytes it was parsed from, so forwarding one never rewrites
//! it. [`Uri::equivalent`] is the comparison of RFC 3261 §19.1.4.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;

use crate::grammar::{slice, Param, Span};

/// Most `;params` (and, separately, `?headers`) one URI may carry.
pub const MAX_URI_PARAMS: usize = 32;

/// Why a URI did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// No `scheme:` at the start.
    #[error("missing or invalid scheme")]
    Scheme,
    /// The user or password part holds a character the grammar does not allow.
    #[error("invalid user part")]
    UserInfo,
    /// The host is missing or is not a hostname, IPv4 address or IPv6 reference.
    #[error("invalid host")]
    Host,
    /// The port is not a number from 0 to 65535.
    #[error("invalid port")]
    Port,
    /// A `;name=value` parameter is malformed.
    #[error("invalid parameter")]
    Param,
    /// A `?name=value` header is malformed.
    #[error("invalid header")]
    Header,
    /// A byte that no URI may contain (space, control character, `<`, `>`, `"`).
    #[error("invalid character")]
    Char,
    /// A `%` that is not followed by two hex digits.
    #[error("invalid escape")]
    Escape,
}

/// A parsed URI. Equality (`==`) is byte-for-byte; use [`Uri::equivalent`] for the
/// RFC 3261 comparison.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// `tel:` (RFC 3966).
    Tel(TelUri),
    /// Any other scheme, kept as written.
    Other(OtherUri),
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SipUri {
    raw: Bytes,
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part, still %-escaped as written.
    pub user: Option<Bytes>,
    /// The password, still %-escaped as written.
    pub password: Option<Bytes>,
    /// The host.
    pub host: Host,
    /// The host as written (an IPv6 reference keeps its brackets).
    pub host_text: Bytes,
    /// The explicit port, if any.
    pub port: Option<u16>,
    /// `;name[=value]` parameters in order, escapes kept.
    pub params: Vec<Param>,
    /// `?name=value&…` headers in order, escapes kept.
    pub headers: Vec<Param>,
}

/// A `tel:` URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TelUri {
    raw: Bytes,
    /// The number as written, with its visual separators.
    pub number: Bytes,
    /// `;name[=value]` parameters in order.
    pub params: Vec<Param>,
}

/// A URI of a scheme holdfast does not interpret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtherUri {
    raw: Bytes,
    /// The scheme, as written.
    pub scheme: Bytes,
}

/// The host of a SIP URI or Via.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name, as written.
    Name(Bytes),
    /// A dotted IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 reference (written in brackets).
    V6(Ipv6Addr),
}

impl Host {
    /// Parses a host: hostname, IPv4 address or bracketed IPv6 reference. With
    /// `bare_v6`, an IPv6 address without brackets is accepted too (RFC 5118 §4.5 asks
    /// for that liberality in Via `received`).
    pub fn parse(text: &Bytes, bare_v6: bool) -> Result<Host, UriError> {
        host_kind(text, bare_v6).map(|k| k.host(text))
    }

    /// The address, when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Name(_) => None,
            Host::V4(a) => Some(IpAddr::V4(*a)),
            Host::V6(a) => Some(IpAddr::V6(*a)),
        }
    }

    /// Host comparison of RFC 3261 §19.1.4: names case-insensitively, addresses by value,
    /// and a name never equals an address.
    pub fn equivalent(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Name(a), Host::Name(b)) => trim_dot(a).eq_ignore_ascii_case(trim_dot(b)),
            (Host::V4(a), Host::V4(b)) => a == b,
            (Host::V6(a), Host::V6(b)) => a == b,
            _ => false,
        }
    }
}

/// What a host is, found without keeping its text: [`Host`] less the name's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostKind {
    Name,
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl HostKind {
    /// The host, `text` being the bytes this kind was read from.
    pub(crate) fn host(self, text: &Bytes) -> Host {
        match self {
            HostKind::Name => Host::Name(text.clone()),
            HostKind::V4(a) => Host::V4(a),
            HostKind::V6(a) => Host::V6(a),
        }
    }
}

/// The grammar of [`Host::parse`], on bytes.
pub(crate) fn host_kind(t: &[u8], bare_v6: bool) -> Result<HostKind, UriError> {
    match t {
        [] => Err(UriError::Host),
        [b'[', inner @ .., b']'] => parse_v6(inner).map(HostKind::V6).ok_or(UriError::Host),
        t if bare_v6 && t.contains(&b':') => parse_v6(t).map(HostKind::V6).ok_or(UriError::Host),
        [first, ..] if first.is_ascii_alphabetic() => {
            if is_hostname(t) {
                Ok(HostKind::Name)
            } else {
                Err(UriError::Host)
            }
        }
        t => match dotted(t) {
            Dotted::V4(a) => Ok(HostKind::V4(a)),
            Dotted::BadV4 => Err(UriError::Host),
            Dotted::Other if is_hostname(t) => Ok(HostKind::Name),
            Dotted::Other => Err(UriError::Host),
        },
    }
}

/// What a host that does not start with a letter is, read in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dotted {
    /// Digits and exactly three dots that `Ipv4Addr`'s `FromStr` reads as an address:
    /// four decimal octets of one to three digits, no leading zero, each at most 255.
    V4(Ipv4Addr),
    /// Digits and exactly three dots, but not an address.
    BadV4,
    /// Anything else (a hostname is still possible).
    Other,
}

fn dotted(t: &[u8]) -> Dotted {
    let mut octets = [0u8; 4];
    let mut part = 0usize;
    let (mut digits, mut value, mut valid) = (0u8, 0u16, true);
    let mut close = |part: usize, digits: u8, value: u16, valid: &mut bool| match (
        u8::try_from(value),
        octets.get_mut(part),
    ) {
        (Ok(v), Some(slot)) if digits > 0 => *slot = v,
        _ => *valid = false,
    };
    for &b in t {
        if b.is_ascii_digit() {
            // No leading zero: a zero may only be the whole octet.
            if digits == 1 && value == 0 {
                valid = false;
            }
            digits = digits.saturating_add(1);
            if digits > 3 {
                valid = false;
            } else {
                value = value
                    .wrapping_mul(10)
                    .wrapping_add(u16::from(b.wrapping_sub(b'0')));
            }
        } else if b == b'.' {
            close(part, digits, value, &mut valid);
            part = part.saturating_add(1);
            (digits, value) = (0, 0);
        } else {
            return Dotted::Other;
        }
    }
    if part != 3 {
        return Dotted::Other;
    }
    close(part, digits, value, &mut valid);
    if valid {
        Dotted::V4(Ipv4Addr::from(octets))
    } else {
        Dotted::BadV4
    }
}

fn trim_dot(s: &[u8]) -> &[u8] {
    s.strip_suffix(b".").unwrap_or(s)
}

fn is_hostname(t: &[u8]) -> bool {
    // *( domainlabel "." ) toplabel [ "." ]; '_' is tolerated as real deployments use it.
    // One pass: host characters only, no empty label.
    let t = t.strip_suffix(b".").unwrap_or(t);
    let mut prev_dot = true;
    for &b in t {
        if crate::grammar::in_table(&LABEL_CHAR, b) {
            prev_dot = false;
        } else if b == b'.' && !prev_dot {
            prev_dot = true;
        } else {
            return false;
        }
    }
    !prev_dot
}

/// Parses the inside of an IPv6 reference. RFC 5118 §4.10: an element must tolerate the
/// three-colon form (`2001:db8:::192.0.2.1`) that RFC 3261's ABNF allows, and read it as
/// the two-colon address.
fn parse_v6(t: &[u8]) -> Option<Ipv6Addr> {
    if t.len() > 64
        || !t
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return None;
    }
    let s = std::str::from_utf8(t).ok()?;
    s.parse::<Ipv6Addr>()
        .ok()
        .or_else(|| s.replacen(":::", "::", 1).parse::<Ipv6Addr>().ok())
}

static USER: [bool; 256] = crate::grammar::byte_table!(is_user_char);
static PASSWORD: [bool; 256] = crate::grammar::byte_table!(is_password_char);
static PARAM: [bool; 256] = crate::grammar::byte_table!(is_param_char);
static HNV: [bool; 256] = crate::grammar::byte_table!(is_hnv_char);
static LABEL_CHAR: [bool; 256] = crate::grammar::byte_table!(is_label_char);

/// Bytes a URI may contain at all: visible ASCII except `<`, `>` and `"`.
const fn is_uri_char(b: u8) -> bool {
    b > b' ' && b < 0x7f && !matches!(b, b'<' | b'>' | b'"')
}

/// The characters of a host name's labels (the dots between them aside).
const fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

const fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

const fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

const fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

const fn is_hnv_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

/// RFC 3261 §19.1.2 `reserved`: escaped and unescaped forms of these differ.
const fn is_reserved(b: u8) -> bool {
    matches!(
        b,
        b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b','
    )
}

/// Checks that `s` is made of `allowed` characters and well-formed `%HH` escapes.
fn check_escaped(s: &[u8], allowed: &[bool; 256], err: UriError) -> Result<(), UriError> {
    if s.iter().all(|&b| crate::grammar::in_table(allowed, b)) {
        return Ok(());
    }
    let mut i = 0usize;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            let ok = s
                .get(i.saturating_add(1))
                .is_some_and(u8::is_ascii_hexdigit)
                && s.get(i.saturating_add(2))
                    .is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(UriError::Escape);
            }
            i = i.saturating_add(3);
        } else if crate::grammar::in_table(allowed, b) {
            i = i.saturating_add(1);
        } else {
            return Err(err);
        }
    }
    Ok(())
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b.wrapping_sub(b'0'),
        b'a'..=b'f' => b.wrapping_sub(b'a').wrapping_add(10),
        b'A'..=b'F' => b.wrapping_sub(b'A').wrapping_add(10),
        _ => 0,
    }
}

/// Decodes every `%HH` escape (a `%` not followed by two hex digits stays as is).
/// `%00` decodes to a NUL byte: the result is bytes, never cut at a NUL.
pub fn unescape(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0usize;
    while let Some(&b) = s.get(i) {
        match (b, s.get(i.saturating_add(1)), s.get(i.saturating_add(2))) {
            (b'%', Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                out.push(hex_val(h).wrapping_mul(16).wrapping_add(hex_val(l)));
                i = i.saturating_add(3);
            }
            _ => {
                out.push(b);
                i = i.saturating_add(1);
            }
        }
    }
    Cow::Owned(out)
}

/// The canonical form for §19.1.4 comparison: unreserved characters unescaped,
/// reserved ones kept escaped with upper-case hex, optionally lower-cased.
fn canonical(s: &[u8], fold_case: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0usize;
    while let Some(&b) = s.get(i) {
        let (c, escaped, step) = match (b, s.get(i.saturating_add(1)), s.get(i.saturating_add(2))) {
            (b'%', Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => (
                hex_val(h).wrapping_mul(16).wrapping_add(hex_val(l)),
                true,
                3usize,
            ),
            _ => (b, false, 1usize),
        };
        if escaped && is_reserved(c) {
            out.push(b'%');
            out.extend_from_slice(format!("{c:02X}").as_bytes());
        } else if fold_case {
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
        i = i.saturating_add(step);
    }
    out
}

/// Where a URI's `;params` or `?headers` are, and how to read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamsKind {
    /// `;name[=value]` (RFC 3261 §19.1.1 `uri-parameters`).
    Params,
    /// `?name=value&…` (`headers`).
    Headers,
}

impl ParamsKind {
    fn sep(self) -> u8 {
        match self {
            ParamsKind::Params => b';',
            ParamsKind::Headers => b'&',
        }
    }

    fn chars(self) -> &'static [bool; 256] {
        match self {
            ParamsKind::Params => &PARAM,
            ParamsKind::Headers => &HNV,
        }
    }

    fn err(self) -> UriError {
        match self {
            ParamsKind::Params => UriError::Param,
            ParamsKind::Headers => UriError::Header,
        }
    }
}

/// Reads `a=b;c` (without the leading `;`) in `raw[start..end]`, checking each
/// character, and hands each parameter's name and value to `f`, as spans of `raw`.
fn scan_uri_params(
    raw: &[u8],
    (start, end): Span,
    kind: ParamsKind,
    mut f: impl FnMut(Span, Option<Span>),
) -> Result<(), UriError> {
    let (sep, chars, err) = (kind.sep(), kind.chars(), kind.err());
    let require_value = kind == ParamsKind::Headers;
    let mut count = 0usize;
    let mut at = start;
    loop {
        // One pass over the part: where it ends, where its first '=' is, and whether
        // anything else than the characters of `chars` occurs (only then are the name
        // and value checked for escapes and the exact error).
        let mut i = at;
        let mut eq = None;
        let mut plain = true;
        while i < end {
            let Some(&b) = raw.get(i) else {
                break;
            };
            if !crate::grammar::in_table(chars, b) {
                if b == sep {
                    break;
                }
                if b == b'=' && eq.is_none() {
                    eq = Some(i);
                } else {
                    plain = false;
                }
            }
            i = i.wrapping_add(1);
        }
        let part_end = i;
        if part_end == at {
            return Err(err);
        }
        let (name, value) = match eq {
            Some(eq) => ((at, eq), Some((eq.saturating_add(1), part_end))),
            None if require_value => return Err(err),
            None => ((at, part_end), None),
        };
        if name.0 == name.1 {
            return Err(err);
        }
        if !plain {
            check_escaped(raw.get(name.0..name.1).unwrap_or_default(), chars, err)?;
            if let Some(v) = value {
                check_escaped(raw.get(v.0..v.1).unwrap_or_default(), chars, err)?;
            }
        }
        // A bound on parameters keeps §19.1.4 comparison (which compares repeated
        // names as lists) cheap whatever a peer sends (fuzzing finding U2).
        if count >= MAX_URI_PARAMS {
            return Err(err);
        }
        count = count.saturating_add(1);
        f(name, value);
        if part_end >= end {
            return Ok(());
        }
        at = part_end.saturating_add(1);
    }
}

/// The parameters in `span` of `raw`, which [`scan_uri_params`] has accepted.
fn collect_uri_params(raw: &Bytes, span: Option<Span>, kind: ParamsKind) -> Vec<Param> {
    let mut out = Vec::new();
    if let Some(span) = span {
        let _ = scan_uri_params(raw, span, kind, |name, value| {
            out.push(Param {
                name: slice(raw, name),
                value: value.map(|v| slice(raw, v)),
            });
        });
    }
    out
}

fn is_scheme(s: &[u8]) -> bool {
    matches!(s.first(), Some(b) if b.is_ascii_alphabetic())
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

impl Uri {
    /// Parses a URI from exactly these bytes (no surrounding LWS or brackets).
    pub fn parse(raw: Bytes) -> Result<Uri, UriError> {
        let shape = scan_uri(&raw)?;
        Ok(shape.build(raw))
    }

    /// The URI exactly as written.
    pub fn as_bytes(&self) -> &Bytes {
        match self {
            Uri::Sip(u) => &u.raw,
            Uri::Tel(u) => &u.raw,
            Uri::Other(u) => &u.raw,
        }
    }

    /// The scheme, lower-case for the known ones and as written otherwise.
    pub fn scheme(&self) -> &[u8] {
        match self {
            Uri::Sip(u) if u.secure => b"sips",
            Uri::Sip(_) => b"sip",
            Uri::Tel(_) => b"tel",
            Uri::Other(u) => &u.scheme,
        }
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// URI comparison of RFC 3261 §19.1.4 (and RFC 3966 §4 for `tel`).
    pub fn equivalent(&self, other: &Uri) -> bool {
        match (self, other) {
            (Uri::Sip(a), Uri::Sip(b)) => a.equivalent(b),
            (Uri::Tel(a), Uri::Tel(b)) => a.equivalent(b),
            (Uri::Other(a), Uri::Other(b)) => {
                a.scheme.eq_ignore_ascii_case(&b.scheme)
                    && a.raw.get(a.scheme.len()..) == b.raw.get(b.scheme.len()..)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl SipUri {
    /// The URI exactly as written.
    pub fn as_bytes(&self) -> &Bytes {
        &self.raw
    }

    /// The value of a URI parameter, by case-insensitive name. `Some(None)` means the
    /// parameter is present without a value (as `lr`).
    pub fn param(&self, name: &str) -> Option<Option<&Bytes>> {
        crate::grammar::find_param(&self.params, name).map(|p| p.value.as_ref())
    }

    /// The user part with its escapes decoded (`%00` becomes a NUL byte).
    pub fn user_unescaped(&self) -> Option<Cow<'_, [u8]>> {
        self.user.as_deref().map(unescape)
    }

    /// RFC 3261 §19.1.4.
    pub fn equivalent(&self, other: &SipUri) -> bool {
        if self.secure != other.secure
            || !opt_eq(&self.user, &other.user, false)
            || !opt_eq(&self.password, &other.password, false)
            || !self.host.equivalent(&other.host)
            || self.port != other.port
        {
            return false;
        }
        // user, ttl, method, maddr and transport must match when either side has them;
        // any other parameter must match only when both sides have it.
        const MUST: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];
        // A name given more than once compares as the whole list of its values.
        let values = |params: &'_ [Param], name: &[u8]| -> Vec<Option<Vec<u8>>> {
            params
                .iter()
                .filter(|q| q.name.eq_ignore_ascii_case(name))
                .map(|q| q.value.as_deref().map(|v| canonical(v, true)))
                .collect()
        };
        for p in &self.params {
            let theirs = values(&other.params, &p.name);
            if theirs.is_empty() {
                if MUST
                    .iter()
                    .any(|m| p.name.eq_ignore_ascii_case(m.as_bytes()))
                {
                    return false;
                }
            } else if values(&self.params, &p.name) != theirs {
                return false;
            }
        }
        for m in MUST {
            if other.param(m).is_some() && self.param(m).is_none() {
                return false;
            }
        }
        // Headers are never ignored: each side's must all be on the other.
        self.headers.len() == other.headers.len()
            && self.headers.iter().all(|h| {
                other.headers.iter().any(|o| {
                    canonical(&h.name, true) == canonical(&o.name, true)
                        && opt_eq(&h.value, &o.value, false)
                })
            })
    }
}

fn opt_eq(a: &Option<Bytes>, b: &Option<Bytes>, fold_case: bool) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => canonical(a, fold_case) == canonical(b, fold_case),
        _ => false,
    }
}

/// Where the parts of a `sip:` or `sips:` URI are, as spans of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SipShape {
    secure: bool,
    user: Option<Span>,
    password: Option<Span>,
    host: Span,
    host_kind: HostKind,
    port: Option<u16>,
    params: Option<Span>,
    headers: Option<Span>,
}

/// What [`scan_uri`] found: every check of [`Uri::parse`] passed, and where the parts
/// are. [`UriShape::build`] makes the [`Uri`] from it without checking again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UriShape {
    Sip(SipShape),
    Tel { number: Span, params: Option<Span> },
    Other { colon: usize },
}

/// Where the characters that delimit a URI's parts first occur: what the grammar of
/// [`Uri::parse`] needs to know before it looks at each part.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Landmarks {
    /// How many bytes are URI characters, from the start.
    len: usize,
    /// The first `:`, which ends the scheme.
    colon: Option<usize>,
    /// The first `@` after the scheme, which ends the userinfo.
    at: Option<usize>,
    /// The first `:` between the scheme and the `@`: user and password.
    user_colon: Option<usize>,
    /// In the host part (after the `@`, or after the scheme when there is none): the
    /// first `:`, the first `;` or `?`, and the first `?`.
    host_colon: Option<usize>,
    host_end: Option<usize>,
    query: Option<usize>,
}

const U_PLAIN: u8 = 0;
const U_BAD: u8 = 1;
const U_COLON: u8 = 2;
const U_AT: u8 = 3;
const U_SEMI: u8 = 4;
const U_QUERY: u8 = 5;

/// What each byte is to [`landmarks`].
static URI_CLASS: [u8; 256] = {
    let mut t = [U_BAD; 256];
    let mut i = 0usize;
    // Const evaluation over 0..256: in bounds, lossless, no overflow.
    #[allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation
    )]
    while i < 256 {
        let b = i as u8;
        t[i] = match b {
            b':' => U_COLON,
            b'@' => U_AT,
            b';' => U_SEMI,
            b'?' => U_QUERY,
            _ if is_uri_char(b) => U_PLAIN,
            _ => U_BAD,
        };
        i += 1;
    }
    t
};

/// One pass over the URI characters at the start of `raw`, up to the first byte that
/// no URI may contain (or the end).
#[inline(always)]
fn landmarks(raw: &[u8]) -> Landmarks {
    let mut m = Landmarks {
        len: raw.len(),
        ..Landmarks::default()
    };
    let class = |b: u8| URI_CLASS.get(usize::from(b)).copied().unwrap_or(U_BAD);
    let mut i = 0usize;
    loop {
        // Most bytes are plain URI characters: skip them in a tight loop. `i` only
        // moves over bytes that exist, so it cannot overflow.
        while let Some(&b) = raw.get(i) {
            if class(b) != U_PLAIN {
                break;
            }
            i = i.wrapping_add(1);
        }
        let Some(&b) = raw.get(i) else {
            break;
        };
        match class(b) {
            U_COLON => {
                if m.colon.is_none() {
                    m.colon = Some(i);
                } else if m.host_colon.is_none() {
                    m.host_colon = Some(i);
                }
            }
            U_AT => {
                if m.colon.is_some() && m.at.is_none() {
                    m.at = Some(i);
                    m.user_colon = m.host_colon.take();
                    m.host_end = None;
                    m.query = None;
                }
            }
            U_SEMI => {
                if m.colon.is_some() && m.host_end.is_none() {
                    m.host_end = Some(i);
                }
            }
            U_QUERY => {
                if m.colon.is_some() {
                    m.host_end.get_or_insert(i);
                    m.query.get_or_insert(i);
                }
            }
            _ => {
                m.len = i;
                break;
            }
        }
        i = i.wrapping_add(1);
    }
    m
}

/// The whole grammar of [`Uri::parse`], without allocating. Inlined into its callers,
/// so that a caller that only checks does not compute the shape.
#[inline(always)]
pub(crate) fn scan_uri(raw: &[u8]) -> Result<UriShape, UriError> {
    let m = landmarks(raw);
    if m.len < raw.len() {
        return Err(UriError::Char);
    }
    scan_uri_parts(raw, &m)
}

/// The URI at the start of `v` that ends before a byte no URI may contain: its length
/// and shape. The caller checks what follows it.
#[inline(always)]
pub(crate) fn scan_uri_prefix(v: &[u8]) -> Result<(usize, UriShape), UriError> {
    let m = landmarks(v);
    let raw = v.get(..m.len).unwrap_or_default();
    scan_uri_parts(raw, &m).map(|shape| (m.len, shape))
}

/// The grammar of [`Uri::parse`] once `raw` is known to hold URI characters only.
#[inline(always)]
fn scan_uri_parts(raw: &[u8], m: &Landmarks) -> Result<UriShape, UriError> {
    let colon = m.colon.ok_or(UriError::Scheme)?;
    let scheme = raw.get(..colon).unwrap_or_default();
    if !is_scheme(scheme) {
        return Err(UriError::Scheme);
    }
    let rest = colon.saturating_add(1);
    if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
        scan_sip(raw, rest, scheme.len() == 4, m).map(UriShape::Sip)
    } else if scheme.eq_ignore_ascii_case(b"tel") {
        scan_tel(raw, rest)
    } else if rest >= raw.len() {
        Err(UriError::Scheme)
    } else {
        Ok(UriShape::Other { colon })
    }
}

#[inline(always)]
fn scan_sip(raw: &[u8], rest: usize, secure: bool, m: &Landmarks) -> Result<SipShape, UriError> {
    let end = raw.len();
    // userinfo is everything before the first '@': no other URI component may hold
    // an unescaped '@', while the user part may hold ';' and '?'.
    let (user, password, hostpart) = match m.at {
        Some(at) => {
            let (user, password) = match m.user_colon {
                Some(c) => ((rest, c), Some((c.saturating_add(1), at))),
                None => ((rest, at), None),
            };
            if user.0 == user.1 {
                return Err(UriError::UserInfo);
            }
            check_escaped(
                raw.get(user.0..user.1).unwrap_or_default(),
                &USER,
                UriError::UserInfo,
            )?;
            if let Some(p) = password {
                check_escaped(
                    raw.get(p.0..p.1).unwrap_or_default(),
                    &PASSWORD,
                    UriError::UserInfo,
                )?;
            }
            (Some(user), password, at.saturating_add(1))
        }
        None => (None, None, rest),
    };
    // host [ ":" port ], up to the first ';' or '?'.
    let hp_end = m.host_end.unwrap_or(end);
    let hostport = raw.get(hostpart..hp_end).unwrap_or_default();
    let host_end = if hostport.first() == Some(&b'[') {
        let close = memchr::memchr(b']', hostport).ok_or(UriError::Host)?;
        hostpart.saturating_add(close).saturating_add(1)
    } else {
        m.host_colon.filter(|&c| c < hp_end).unwrap_or(hp_end)
    };
    let port = match raw.get(host_end..hp_end).unwrap_or_default() {
        [] => None,
        [b':', digits @ ..] => Some(
            crate::grammar::parse_u32(digits)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(UriError::Port)?,
        ),
        _ => return Err(UriError::Host),
    };
    let host = (hostpart, host_end);
    let host_kind = host_kind(raw.get(host.0..host.1).unwrap_or_default(), false)?;

    let q = m.query.unwrap_or(end);
    let mut params = None;
    let mut headers = None;
    if raw.get(hp_end) == Some(&b';') {
        let p = (hp_end.saturating_add(1), q);
        scan_uri_params(raw, p, ParamsKind::Params, |_, _| {})?;
        params = Some(p);
    }
    if q < end {
        let h = (q.saturating_add(1), end);
        scan_uri_params(raw, h, ParamsKind::Headers, |_, _| {})?;
        headers = Some(h);
    }
    Ok(SipShape {
        secure,
        user,
        password,
        host,
        host_kind,
        port,
        params,
        headers,
    })
}

#[inline(always)]
fn scan_tel(raw: &[u8], rest: usize) -> Result<UriShape, UriError> {
    let tail = raw.get(rest..).unwrap_or_default();
    let end = rest.saturating_add(tail.iter().position(|&b| b == b';').unwrap_or(tail.len()));
    let number = raw.get(rest..end).unwrap_or_default();
    let ok = |b: u8| {
        b.is_ascii_hexdigit()
            || matches!(
                b,
                b'+' | b'-' | b'.' | b'(' | b')' | b'*' | b'#' | b'p' | b'w'
            )
    };
    if number.is_empty() || !number.iter().all(|&b| ok(b)) {
        return Err(UriError::UserInfo);
    }
    let mut params = None;
    if end < raw.len() {
        let p = (end.saturating_add(1), raw.len());
        scan_uri_params(raw, p, ParamsKind::Params, |_, _| {})?;
        params = Some(p);
    }
    Ok(UriShape::Tel {
        number: (rest, end),
        params,
    })
}

impl UriShape {
    /// The URI this shape describes, `raw` being the bytes [`scan_uri`] accepted.
    pub(crate) fn build(self, raw: Bytes) -> Uri {
        match self {
            UriShape::Sip(s) => {
                let host_text = slice(&raw, s.host);
                Uri::Sip(SipUri {
                    secure: s.secure,
                    user: s.user.map(|u| slice(&raw, u)),
                    password: s.password.map(|p| slice(&raw, p)),
                    host: s.host_kind.host(&host_text),
                    host_text,
                    port: s.port,
                    params: collect_uri_params(&raw, s.params, ParamsKind::Params),
                    headers: collect_uri_params(&raw, s.headers, ParamsKind::Headers),
                    raw,
                })
            }
            UriShape::Tel { number, params } => Uri::Tel(TelUri {
                number: slice(&raw, number),
                params: collect_uri_params(&raw, params, ParamsKind::Params),
                raw,
            }),
            UriShape::Other { colon } => Uri::Other(OtherUri {
                scheme: slice(&raw, (0, colon)),
                raw,
            }),
        }
    }
}

impl TelUri {
    /// The URI exactly as written.
    pub fn as_bytes(&self) -> &Bytes {
        &self.raw
    }

    /// RFC 3966 §4: numbers compare without their visual separators; parameters compare
    /// case-insensitively regardless of order.
    pub fn equivalent(&self, other: &TelUri) -> bool {
        let digits = |n: &[u8]| -> Vec<u8> {
            n.iter()
                .filter(|b| !matches!(b, b'-' | b'.' | b'(' | b')'))
                .map(u8::to_ascii_lowercase)
                .collect()
        };
        digits(&self.number) == digits(&other.number)
            && self.params.len() == other.params.len()
            && self.params.iter().all(|p| {
                other.params.iter().any(|o| {
                    p.name.eq_ignore_ascii_case(&o.name) && opt_eq(&p.value, &o.value, true)
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &'static str) -> SipUri {
        match Uri::parse(Bytes::from_static(s.as_bytes())) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn eq(a: &'static str, b: &'static str) -> bool {
        let a = Uri::parse(Bytes::from_static(a.as_bytes())).unwrap();
        let b = Uri::parse(Bytes::from_static(b.as_bytes())).unwrap();
        a.equivalent(&b) && b.equivalent(&a)
    }

    #[test]
    fn parts() {
        let u = sip(
            "sip:alice:secret@atlanta.com:5070;transport=tcp;lr?subject=project&priority=urgent",
        );
        assert_eq!(u.user.as_deref(), Some(&b"alice"[..]));
        assert_eq!(u.password.as_deref(), Some(&b"secret"[..]));
        assert_eq!(u.host, Host::Name(Bytes::from_static(b"atlanta.com")));
        assert_eq!(u.port, Some(5070));
        assert_eq!(
            u.param("transport"),
            Some(Some(&Bytes::from_static(b"tcp")))
        );
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.headers.len(), 2);
    }

    #[test]
    fn unusual_user_and_password() {
        let u = sip("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        assert_eq!(
            u.user.as_deref(),
            Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
        );
        assert_eq!(
            u.password.as_deref(),
            Some(&b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"[..])
        );
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some(&b"user;par=u%40example.net"[..]));
        assert!(u.params.is_empty());
    }

    #[test]
    fn escaped_nul_is_kept() {
        let u = sip("sip:null-%00-null@example.com");
        assert_eq!(u.user_unescaped().unwrap().as_ref(), b"null-\0-null");
    }

    #[test]
    fn ipv6() {
        let u = sip("sip:[2001:db8::10]:5070");
        assert_eq!(u.host, Host::V6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port, Some(5070));
        let u = sip("sip:[2001:db8::10:5070]");
        assert_eq!(u.port, None);
        assert_eq!(u.host, Host::V6("2001:db8::10:5070".parse().unwrap()));
        let a = sip("sip:[2001:db8:::192.0.2.1]");
        let b = sip("sip:[2001:db8::192.0.2.1]");
        assert!(a.equivalent(&b));
        assert!(Uri::parse(Bytes::from_static(b"sip:2001:db8::10")).is_err());
    }

    #[test]
    fn other_schemes_are_opaque() {
        let u = Uri::parse(Bytes::from_static(
            b"nobodyKnowsThisScheme:totallyopaquecontent",
        ))
        .unwrap();
        assert_eq!(u.scheme(), b"nobodyKnowsThisScheme");
        let u = Uri::parse(Bytes::from_static(b"soap.beep://192.0.2.103:3002")).unwrap();
        assert!(matches!(u, Uri::Other(_)));
        let u = Uri::parse(Bytes::from_static(
            b"tel:+1-201-555-0123;phone-context=example.com",
        ))
        .unwrap();
        assert!(matches!(u, Uri::Tel(_)));
    }

    #[test]
    fn ipv4_as_std_reads_it() {
        let octets = [
            "", "0", "00", "01", "1", "9", "10", "099", "100", "255", "256", "999", "0000", "1234",
            "300", "25", "007", "99999",
        ];
        let expect = |s: &str| {
            let shape = s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && s.bytes().filter(|&b| b == b'.').count() == 3;
            match s.parse::<Ipv4Addr>() {
                Ok(a) => Dotted::V4(a),
                Err(_) if shape => Dotted::BadV4,
                Err(_) => Dotted::Other,
            }
        };
        for a in octets {
            for b in octets {
                for c in octets {
                    for d in octets {
                        let s = format!("{a}.{b}.{c}.{d}");
                        assert_eq!(dotted(s.as_bytes()), expect(&s), "{s}");
                    }
                }
            }
        }
        for s in [
            "1.2.3",
            "1.2.3.4.5",
            "",
            ".",
            "...",
            "1..2.3",
            "1.2.3.4x",
            "x",
        ] {
            assert_eq!(dotted(s.as_bytes()), expect(s), "{s}");
        }
    }

    #[test]
    fn parameter_count_is_bounded() {
        let many = format!("sip:a@h{}", ";a".repeat(MAX_URI_PARAMS + 1));
        assert_eq!(Uri::parse(Bytes::from(many)), Err(UriError::Param));
        let ok = format!("sip:a@h{}", ";a".repeat(MAX_URI_PARAMS));
        assert!(Uri::parse(Bytes::from(ok)).is_ok());
    }

    #[test]
    fn rejects() {
        for bad in [
            "sip:",
            "sip:@host",
            "sip:user@",
            "sip:host:99999",
            "sip:host:-1",
            "sip:us er@host",
            "sip:host;;lr",
            "sip:host?x",
            "sip:a%zz@host",
            ":nothing",
            "sip:[::1",
        ] {
            assert!(Uri::parse(Bytes::from(bad)).is_err(), "{bad}");
        }
    }

    /// The equivalent and non-equivalent pairs listed in RFC 3261 §19.1.4.
    #[test]
    fn rfc3261_19_1_4_examples() {
        assert!(eq(
            "sip:%61lice@atlanta.com;transport=TCP",
            "sip:alice@AtLanTa.CoM;Transport=tcp"
        ));
        assert!(eq(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com;newparam=5"
        ));
        assert!(eq(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com;security=on"
        ));
        assert!(eq(
            "sip:carol@chicago.com;newparam=5",
            "sip:carol@chicago.com;security=on"
        ));
        assert!(eq(
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"
        ));
        assert!(eq(
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x"
        ));

        assert!(!eq(
            "SIP:ALICE@AtLanTa.CoM;Transport=udp",
            "sip:alice@AtLanTa.CoM;Transport=UDP"
        ));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"));
        assert!(!eq(
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com;transport=udp"
        ));
        assert!(!eq(
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com:6000;transport=tcp"
        ));
        assert!(!eq(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com?Subject=next%20meeting"
        ));
        assert!(!eq("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"));
        assert!(!eq(
            "sip:carol@chicago.com;security=on",
            "sip:carol@chicago.com;security=off"
        ));
        assert!(!eq("sip:alice@atlanta.com", "sips:alice@atlanta.com"));
    }

    #[test]
    fn repeated_params_compare_as_lists() {
        assert!(eq(
            "sip:[8::10]:5070;m.addr=n070;m.addr=x",
            "sip:[8::10]:5070;m.addr=n070;m.addr=x"
        ));
        assert!(!eq("sip:h;a=1;a=2", "sip:h;a=2;a=1"));
    }

    #[test]
    fn tel_comparison() {
        assert!(eq("tel:+1-201-555-0123", "tel:+12015550123"));
        assert!(!eq("tel:+1-201-555-0123", "tel:+12015550124"));
    }
}
