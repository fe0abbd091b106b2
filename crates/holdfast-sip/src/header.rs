//! Header fields: names (with compact forms), the raw field as it arrived, and the typed
//! value of the headers holdfast interprets (RFC 3261 §7.3, §20).
//!
//! Every value of a header holdfast interprets is checked against its grammar when the
//! field is read, without allocating: a field that parses has a typed value. The typed
//! value is built from the field's bytes the first time [`Header::value`] is asked, by
//! the same code that checked it, and kept.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::auth::{AuthenticationInfo, Challenge, Credentials};
use crate::error::Malformed;
use crate::grammar::{self, slice, Param, Scanner, Span};
use crate::name_addr::{ContactList, NameAddr};
use crate::via::Via;

macro_rules! header_names {
    ($( $variant:ident => $canon:literal $(, $compact:literal)? ;)*) => {
        /// The name of a header field. Names compare case-insensitively and compact forms
        /// map to their long form; anything else is [`HeaderName::Other`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum HeaderName {
            $(
                #[doc = $canon]
                $variant,
            )*
            /// A header holdfast passes through without interpreting.
            Other,
        }

        impl HeaderName {
            /// Recognizes a name as written on the wire.
            #[inline]
            pub fn from_bytes(name: &[u8]) -> HeaderName {
                let Some(&first) = name.first() else {
                    return HeaderName::Other;
                };
                let first = first.to_ascii_lowercase();
                if name.len() == 1 {
                    $( $( if first == $compact { return HeaderName::$variant; } )? )*
                    return HeaderName::Other;
                }
                let last = name.last().copied().unwrap_or(first);
                let slot = NAME_SLOTS.get(name_hash(name.len(), first, last)).copied().unwrap_or(0);
                let Some((canon, known)) = usize::from(slot).checked_sub(1).and_then(|i| NAMES.get(i)) else {
                    return HeaderName::Other;
                };
                // Names nearly always arrive in their canonical case: compare bytes, and
                // fold case only where they differ.
                let canon = canon.as_bytes();
                if canon.len() == name.len()
                    && canon.iter().zip(name).all(|(&c, &n)| {
                        c == n || (c.is_ascii_alphabetic() && c ^ 0x20 == n)
                    })
                {
                    return *known;
                }
                HeaderName::Other
            }

            /// The canonical long form (`""` for [`HeaderName::Other`]).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( HeaderName::$variant => $canon, )*
                    HeaderName::Other => "",
                }
            }
        }

        /// Every known name in its canonical long form.
        const NAMES: &[(&str, HeaderName)] = &[ $( ($canon, HeaderName::$variant), )* ];
    };
}

/// Where a name of length `len`, first byte `first` and last byte `last` sits in
/// [`NAME_SLOTS`]: a hash that gives every known name its own slot (the table below
/// fails to compile if two collide), so recognizing a name is one comparison.
const fn name_hash(len: usize, first: u8, last: u8) -> usize {
    let first = (first | 0x20) as usize;
    let last = (last | 0x20) as usize;
    len.wrapping_add(first.wrapping_mul(13))
        .wrapping_add(last << 2)
        & 127
}

/// For each hash slot, the index (plus one; zero is empty) into [`NAMES`] of the known
/// name that hashes there.
static NAME_SLOTS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0usize;
    // Const evaluation over a fixed list; a collision fails the build.
    #[allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation
    )]
    while i < NAMES.len() {
        let name = NAMES[i].0.as_bytes();
        let h = name_hash(name.len(), name[0], name[name.len() - 1]);
        assert!(t[h] == 0, "two header names share a hash slot");
        t[h] = (i + 1) as u8;
        i += 1;
    }
    t
};

header_names! {
    Via => "Via", b'v';
    From => "From", b'f';
    To => "To", b't';
    CallId => "Call-ID", b'i';
    CSeq => "CSeq";
    MaxForwards => "Max-Forwards";
    Contact => "Contact", b'm';
    Route => "Route";
    RecordRoute => "Record-Route";
    Path => "Path";
    ContentLength => "Content-Length", b'l';
    ContentType => "Content-Type", b'c';
    ContentEncoding => "Content-Encoding", b'e';
    Expires => "Expires";
    MinExpires => "Min-Expires";
    Supported => "Supported", b'k';
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Unsupported => "Unsupported";
    Authorization => "Authorization";
    ProxyAuthorization => "Proxy-Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthenticate => "Proxy-Authenticate";
    AuthenticationInfo => "Authentication-Info";
    FlowTimer => "Flow-Timer";
    Allow => "Allow";
    Accept => "Accept";
    Date => "Date";
    Subject => "Subject", b's';
    Event => "Event", b'o';
    ReferTo => "Refer-To", b'r';
    UserAgent => "User-Agent";
    Server => "Server";
    Timestamp => "Timestamp";
}

/// The typed value of a header holdfast interprets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Value {
    /// Not interpreted: only the raw bytes are kept.
    Raw,
    /// Via: one field may hold several values.
    Via(Vec<Via>),
    /// From, To.
    NameAddr(Box<NameAddr>),
    /// Contact.
    Contact(ContactList),
    /// Route, Record-Route, Path.
    Routes(Vec<NameAddr>),
    /// Call-ID.
    CallId(Bytes),
    /// CSeq.
    CSeq(CSeq),
    /// Max-Forwards, Expires, Min-Expires, Flow-Timer.
    Number(u32),
    /// A number header whose value is out of range or not a number. RFC 4475 §3.1.2.4:
    /// such a Max-Forwards or Expires is treated as absent, not fatal.
    BadNumber,
    /// Content-Length.
    ContentLength(u64),
    /// Content-Type.
    MediaType(MediaType),
    /// Supported, Require, Proxy-Require, Unsupported: option tags.
    Tags(Vec<Bytes>),
    /// Authorization, Proxy-Authorization.
    Credentials(Box<Credentials>),
    /// WWW-Authenticate, Proxy-Authenticate.
    Challenge(Box<Challenge>),
    /// Authentication-Info.
    AuthInfo(Box<AuthenticationInfo>),
}

/// One header field as it arrived: its exact bytes (continuation lines and line end
/// included), its name and value as slices of them, and the typed value.
#[derive(Clone)]
pub struct Header {
    pub(crate) name: HeaderName,
    pub(crate) line: Bytes,
    /// `line[..name_end]` is the name as written.
    pub(crate) name_end: u32,
    /// `line[value_start..value_end]` is the value, trimmed.
    pub(crate) value_start: u32,
    pub(crate) value_end: u32,
    /// The typed value, built on first use (boxed, so that a field the parser moves
    /// around stays small). Always what the value's bytes parse to, so equality
    /// ignores it.
    pub(crate) value: OnceLock<Box<Value>>,
}

impl PartialEq for Header {
    fn eq(&self, other: &Header) -> bool {
        self.name == other.name
            && self.line == other.line
            && self.name_end == other.name_end
            && self.value_start == other.value_start
            && self.value_end == other.value_end
    }
}

impl Eq for Header {}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header")
            .field("name", &self.name)
            .field("line", &self.line)
            .field("name_end", &self.name_end)
            .field("value_start", &self.value_start)
            .field("value_end", &self.value_end)
            .field("value", self.value())
            .finish()
    }
}

/// What the parser needs to know of a value it checked.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    /// How many Via values a Via field holds.
    pub(crate) vias: usize,
    /// The value of a Content-Length field.
    pub(crate) content_length: Option<u64>,
}

impl Header {
    /// Builds a header from a name and value, typed as if it had been received.
    pub fn new(name: &str, value: &[u8]) -> Result<Header, Malformed> {
        let mut line = Vec::with_capacity(name.len().saturating_add(value.len()).saturating_add(4));
        line.extend_from_slice(name.as_bytes());
        line.extend_from_slice(b": ");
        line.extend_from_slice(value);
        line.extend_from_slice(b"\r\n");
        let line = Bytes::from(line);
        let name_end = name.len();
        let value_start = name_end.saturating_add(2);
        let value_end = line.len().saturating_sub(2);
        Header::from_parts(line, name_end, value_start, value_end)
    }

    /// Types a field whose line, name end and value bounds are known. The name must be a
    /// token and the value must not hold a line break that is not a fold.
    pub(crate) fn from_parts(
        line: Bytes,
        name_end: usize,
        value_start: usize,
        value_end: usize,
    ) -> Result<Header, Malformed> {
        let raw_name = line.get(..name_end).ok_or(Malformed::HeaderLine)?;
        if !grammar::is_token_str(raw_name) {
            return Err(Malformed::HeaderLine);
        }
        let name = HeaderName::from_bytes(raw_name);
        Header::checked(line, name, name_end, value_start, value_end).map(|(h, _)| h)
    }

    /// Checks the value of a field whose name is known to be a token and recognized as
    /// `name`; returns the field and what the parser needs to know of its value.
    pub(crate) fn checked(
        line: Bytes,
        name: HeaderName,
        name_end: usize,
        value_start: usize,
        value_end: usize,
    ) -> Result<(Header, Checked), Malformed> {
        let (value_start, value_end) = if value_start <= value_end && value_end <= line.len() {
            (value_start, value_end)
        } else {
            (name_end, name_end)
        };
        let value = line.get(value_start..value_end).unwrap_or_default();
        let checked = check_value(name, value).ok_or(Malformed::Header(name.as_str()))?;
        let offset = |n: usize| u32::try_from(n).map_err(|_| Malformed::HeaderLine);
        Ok((
            Header {
                name,
                name_end: offset(name_end)?,
                value_start: offset(value_start)?,
                value_end: offset(value_end)?,
                line,
                value: OnceLock::new(),
            },
            checked,
        ))
    }

    /// The recognized name.
    pub fn name(&self) -> HeaderName {
        self.name
    }

    /// The name as written.
    pub fn raw_name(&self) -> &[u8] {
        self.line.get(..self.name_end as usize).unwrap_or_default()
    }

    /// The value as written, without the surrounding white space; continuation lines
    /// are kept as they arrived.
    pub fn raw_value(&self) -> &[u8] {
        self.line
            .get(self.value_start as usize..self.value_end as usize)
            .unwrap_or_default()
    }

    /// The whole field as it will be serialized, line end included.
    pub fn line(&self) -> &Bytes {
        &self.line
    }

    /// The typed value (built from the field's bytes the first time it is asked).
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            let v = slice(
                &self.line,
                (self.value_start as usize, self.value_end as usize),
            );
            // The value was checked when the field was read, by the grammar that builds
            // it here, so this gives the typed value; Raw only stands in for the
            // impossible.
            Box::new(build_value(self.name, &v).unwrap_or(Value::Raw))
        })
    }

    /// The typed value, for an edit that changes it.
    pub(crate) fn value_mut(&mut self) -> Option<&mut Value> {
        self.value();
        self.value.get_mut().map(|v| &mut **v)
    }

    /// True when the name matches `name` (case-insensitive, compact forms included for
    /// known headers).
    pub fn is(&self, name: &str) -> bool {
        match self.name {
            HeaderName::Other => self.raw_name().eq_ignore_ascii_case(name.as_bytes()),
            n => HeaderName::from_bytes(name.as_bytes()) == n,
        }
    }
}

/// Checks `v` as the value of a `name` field, allocating nothing.
pub(crate) fn check_value(name: HeaderName, v: &[u8]) -> Option<Checked> {
    let mut checked = Checked::default();
    let valid = match name {
        HeaderName::Via => {
            checked.vias = crate::via::check_list(v)?;
            true
        }
        HeaderName::From | HeaderName::To => crate::name_addr::check_single(v),
        HeaderName::Contact => crate::name_addr::check_contacts(v),
        HeaderName::Route | HeaderName::RecordRoute | HeaderName::Path => {
            crate::name_addr::check_route_list(v)
        }
        HeaderName::CallId => is_call_id(v),
        HeaderName::CSeq => CSeq::scan(v).is_some(),
        HeaderName::ContentLength => {
            checked.content_length = Some(grammar::parse_u64(v)?);
            true
        }
        HeaderName::ContentType => MediaType::scan(v).is_some(),
        HeaderName::Supported
        | HeaderName::Require
        | HeaderName::ProxyRequire
        | HeaderName::Unsupported => scan_tags(v, |_| ()).is_some(),
        HeaderName::Authorization | HeaderName::ProxyAuthorization => Credentials::check(v),
        HeaderName::WwwAuthenticate | HeaderName::ProxyAuthenticate => Challenge::check(v),
        HeaderName::AuthenticationInfo => AuthenticationInfo::check(v),
        // Max-Forwards, Expires, Min-Expires and Flow-Timer take any value: one that is
        // not a number in range is kept as BadNumber (treated as absent). The other
        // names are not interpreted.
        _ => true,
    };
    valid.then_some(checked)
}

/// The typed value of a `name` field whose value is `v`.
fn build_value(name: HeaderName, v: &Bytes) -> Option<Value> {
    Some(match name {
        HeaderName::Via => Value::Via(crate::via::parse_list(v)?),
        HeaderName::From | HeaderName::To => Value::NameAddr(Box::new(NameAddr::parse_single(v)?)),
        HeaderName::Contact => Value::Contact(ContactList::parse(v)?),
        HeaderName::Route | HeaderName::RecordRoute | HeaderName::Path => {
            Value::Routes(NameAddr::parse_list(v)?)
        }
        HeaderName::CallId => Value::CallId(is_call_id(v).then(|| v.clone())?),
        HeaderName::CSeq => Value::CSeq(CSeq::parse(v)?),
        HeaderName::ContentLength => Value::ContentLength(grammar::parse_u64(v)?),
        HeaderName::MaxForwards => number(v, 255),
        HeaderName::Expires | HeaderName::MinExpires | HeaderName::FlowTimer => number(v, u32::MAX),
        HeaderName::ContentType => Value::MediaType(MediaType::parse(v)?),
        HeaderName::Supported
        | HeaderName::Require
        | HeaderName::ProxyRequire
        | HeaderName::Unsupported => {
            let mut tags = Vec::new();
            scan_tags(v, |t| tags.push(slice(v, t)))?;
            Value::Tags(tags)
        }
        HeaderName::Authorization | HeaderName::ProxyAuthorization => {
            Value::Credentials(Box::new(Credentials::parse(v).ok()?))
        }
        HeaderName::WwwAuthenticate | HeaderName::ProxyAuthenticate => {
            Value::Challenge(Box::new(Challenge::parse(v).ok()?))
        }
        HeaderName::AuthenticationInfo => {
            Value::AuthInfo(Box::new(AuthenticationInfo::parse(v).ok()?))
        }
        _ => Value::Raw,
    })
}

/// A delta-seconds style number: digits are required (anything else is malformed),
/// but a value above `max` is kept as [`Value::BadNumber`] (treated as absent).
fn number(v: &[u8], max: u32) -> Value {
    match grammar::parse_u32(v) {
        Some(n) if n <= max => Value::Number(n),
        _ => Value::BadNumber,
    }
}

/// `callid = word [ "@" word ]`: any visible characters, no white space.
fn is_call_id(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&b| b > b' ' && b < 0x7f)
}

/// Option tags, handed to `f`.
fn scan_tags(v: &[u8], mut f: impl FnMut(Span)) -> Option<()> {
    let mut s = Scanner::new(v);
    s.skip_lws();
    if s.at_end() {
        // An empty Supported is legal (RFC 3261 §20.37).
        return Some(());
    }
    loop {
        f(s.token()?);
        if !s.list_sep()? {
            return Some(());
        }
    }
}

/// A request method. Methods are case-sensitive (RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// REGISTER
    Register,
    /// OPTIONS
    Options,
    /// INFO (RFC 6086)
    Info,
    /// UPDATE (RFC 3311)
    Update,
    /// PRACK (RFC 3262)
    Prack,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// NOTIFY (RFC 6665)
    Notify,
    /// REFER (RFC 3515)
    Refer,
    /// MESSAGE (RFC 3428)
    Message,
    /// PUBLISH (RFC 3903)
    Publish,
    /// An extension method, as written.
    Other(Bytes),
}

impl Method {
    /// Parses a method token; `None` if it is not a token.
    pub fn parse(token: &Bytes) -> Option<Method> {
        Method::from_span(token, (0, token.len()))
    }

    /// The method token `src[span]`; an extension method keeps a slice of `src`.
    pub(crate) fn from_span(src: &Bytes, span: Span) -> Option<Method> {
        let token = src.get(span.0..span.1).unwrap_or_default();
        if !grammar::is_token_str(token) {
            return None;
        }
        Some(match token {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"INFO" => Method::Info,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => Method::Other(slice(src, span)),
        })
    }

    /// The method as it is written on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Method::Invite => b"INVITE",
            Method::Ack => b"ACK",
            Method::Bye => b"BYE",
            Method::Cancel => b"CANCEL",
            Method::Register => b"REGISTER",
            Method::Options => b"OPTIONS",
            Method::Info => b"INFO",
            Method::Update => b"UPDATE",
            Method::Prack => b"PRACK",
            Method::Subscribe => b"SUBSCRIBE",
            Method::Notify => b"NOTIFY",
            Method::Refer => b"REFER",
            Method::Message => b"MESSAGE",
            Method::Publish => b"PUBLISH",
            Method::Other(b) => b,
        }
    }

    /// True for an extension method holdfast does not know.
    pub fn is_extension(&self) -> bool {
        matches!(self, Method::Other(_))
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// `CSeq = 1*DIGIT LWS Method`, the number checked to fit 32 bits (RFC 3261 §8.1.1.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CSeq {
    /// The sequence number.
    pub seq: u32,
    /// The method.
    pub method: Method,
}

impl CSeq {
    fn parse(v: &Bytes) -> Option<CSeq> {
        let (seq, method) = CSeq::scan(v)?;
        Some(CSeq {
            seq,
            method: Method::from_span(v, method)?,
        })
    }

    /// Checks `v`: the number and where the method is.
    fn scan(v: &[u8]) -> Option<(u32, Span)> {
        let mut s = Scanner::new(v);
        let digits = s.take_while(|b| b.is_ascii_digit());
        let seq = grammar::parse_u32(s.bytes(digits))?;
        if !s.skip_lws() {
            return None;
        }
        let method = s.token()?;
        s.skip_lws();
        s.at_end().then_some((seq, method))
    }
}

/// `media-type = m-type SLASH m-subtype *(SEMI m-parameter)` (RFC 3261 §20.15).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaType {
    /// The top-level type, as written.
    pub kind: Bytes,
    /// The subtype, as written.
    pub subtype: Bytes,
    /// Parameters, in order.
    pub params: Vec<Param>,
}

impl MediaType {
    /// Checks `v`: the spans of the type and subtype, and where the parameters start.
    fn scan(v: &[u8]) -> Option<(Span, Span, usize)> {
        let mut s = Scanner::new(v);
        let kind = s.token()?;
        if !s.eat_sep(b'/') {
            return None;
        }
        let subtype = s.token()?;
        let params = s.pos();
        s.params(|_, _| Some(()))?;
        s.skip_lws();
        s.at_end().then_some((kind, subtype, params))
    }

    fn parse(v: &Bytes) -> Option<MediaType> {
        let (kind, subtype, params) = MediaType::scan(v)?;
        Some(MediaType {
            kind: slice(v, kind),
            subtype: slice(v, subtype),
            params: grammar::collect_params(v, params),
        })
    }

    /// True when this is `kind/subtype`, compared case-insensitively.
    pub fn is(&self, kind: &str, subtype: &str) -> bool {
        self.kind.eq_ignore_ascii_case(kind.as_bytes())
            && self.subtype.eq_ignore_ascii_case(subtype.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(HeaderName::from_bytes(b"v"), HeaderName::Via);
        assert_eq!(
            HeaderName::from_bytes(b"MaX-fOrWaRdS"),
            HeaderName::MaxForwards
        );
        assert_eq!(HeaderName::from_bytes(b"l"), HeaderName::ContentLength);
        assert_eq!(HeaderName::from_bytes(b"X-Foo"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"q"), HeaderName::Other);
        for &(canon, known) in NAMES {
            assert_eq!(HeaderName::from_bytes(canon.as_bytes()), known, "{canon}");
            let upper = canon.to_ascii_uppercase();
            let lower = canon.to_ascii_lowercase();
            assert_eq!(HeaderName::from_bytes(upper.as_bytes()), known, "{upper}");
            assert_eq!(HeaderName::from_bytes(lower.as_bytes()), known, "{lower}");
            assert_eq!(known.as_str(), canon);
            // One byte changed is another name.
            let mut other = canon.as_bytes().to_vec();
            other[canon.len() / 2] ^= 0x01;
            assert_eq!(
                HeaderName::from_bytes(&other),
                HeaderName::Other,
                "{other:?}"
            );
        }
        assert_eq!(HeaderName::from_bytes(b"Call\rID"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b""), HeaderName::Other);
    }

    #[test]
    fn cseq() {
        let c = CSeq::parse(&Bytes::from_static(b"0009\r\n  INVITE")).unwrap();
        assert_eq!(c.seq, 9);
        assert_eq!(c.method, Method::Invite);
        assert!(CSeq::parse(&Bytes::from_static(b"36893488147419103232 INVITE")).is_none());
        assert!(CSeq::parse(&Bytes::from_static(b"1INVITE")).is_none());
        assert!(CSeq::parse(&Bytes::from_static(b"1 INVITE x")).is_none());
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"300", 255), Value::BadNumber);
        assert_eq!(number(b"0068", 255), Value::Number(68));
        assert_eq!(
            number(b"10000000000000000000005", u32::MAX),
            Value::BadNumber
        );
    }

    #[test]
    fn header_new_types_its_value() {
        let h = Header::new("CSeq", b"4711 REGISTER").unwrap();
        assert_eq!(h.line().as_ref(), b"CSeq: 4711 REGISTER\r\n");
        assert!(matches!(h.value(), Value::CSeq(c) if c.seq == 4711));
        assert!(Header::new("CSeq", b"x").is_err());
        assert!(Header::new("Bad Name", b"x").is_err());
    }
}
