//! The message model: a start line, header fields in arrival order, and a body, all
//! zero-copy slices of the received bytes (RFC 3261 §7).
//!
//! Serialization concatenates the slices, so an unmodified message comes out byte for
//! byte as it came in. Each proxy edit replaces only the field it changes.

use bytes::Bytes;

use crate::auth::Credentials;
use crate::error::Malformed;
use crate::header::{CSeq, Header, HeaderName, MediaType, Method, Value};
use crate::name_addr::{Contact, ContactList, NameAddr};
use crate::uri::Uri;
use crate::via::Via;

/// `Method SP Request-URI SP SIP-Version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// The version as written (`SIP/2.0`).
    pub version: Bytes,
}

/// `SIP-Version SP Status-Code SP Reason-Phrase`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    /// The version as written.
    pub version: Bytes,
    /// The status code, 100–699.
    pub code: u16,
    /// The reason phrase as written (any bytes, possibly empty).
    pub reason: Bytes,
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per message, stored inline in it; a box would add an allocation
pub enum StartLine {
    /// A request.
    Request(RequestLine),
    /// A response.
    Response(StatusLine),
}

impl StartLine {
    /// The SIP version as written.
    pub fn version(&self) -> &Bytes {
        match self {
            StartLine::Request(r) => &r.version,
            StartLine::Response(s) => &s.version,
        }
    }
}

/// A SIP request or response.
#[derive(Debug, Clone)]
pub struct Message {
    pub(crate) start: StartLine,
    /// The start line's bytes, line end included.
    pub(crate) start_raw: Bytes,
    pub(crate) headers: Vec<Header>,
    /// The empty line that ends the headers (CRLF, LF, or empty when a datagram had none).
    pub(crate) blank: Bytes,
    pub(crate) body: Bytes,
    /// The exact bytes this message was parsed from, while no edit has been made.
    pub(crate) original: Option<Bytes>,
}

impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.start == other.start
            && self.start_raw == other.start_raw
            && self.headers == other.headers
            && self.blank == other.blank
            && self.body == other.body
    }
}

impl Eq for Message {}

impl Message {
    /// The start line.
    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    /// True for a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request(_))
    }

    /// The request line, for a request.
    pub fn request_line(&self) -> Option<&RequestLine> {
        match &self.start {
            StartLine::Request(r) => Some(r),
            StartLine::Response(_) => None,
        }
    }

    /// The status line, for a response.
    pub fn status_line(&self) -> Option<&StatusLine> {
        match &self.start {
            StartLine::Request(_) => None,
            StartLine::Response(s) => Some(s),
        }
    }

    /// The request method.
    pub fn method(&self) -> Option<&Method> {
        self.request_line().map(|r| &r.method)
    }

    /// The Request-URI.
    pub fn request_uri(&self) -> Option<&Uri> {
        self.request_line().map(|r| &r.uri)
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        self.status_line().map(|s| s.code)
    }

    /// Every header field, in order.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The fields with a given name, in order.
    pub fn headers_named(&self, name: HeaderName) -> impl Iterator<Item = &Header> + '_ {
        self.headers.iter().filter(move |h| h.name == name)
    }

    /// The first field with a given name.
    pub fn header(&self, name: HeaderName) -> Option<&Header> {
        self.headers.iter().find(|h| h.name == name)
    }

    /// The first field whose name matches `name` case-insensitively (for headers
    /// holdfast does not interpret).
    pub fn header_by_str(&self, name: &str) -> Option<&Header> {
        self.headers.iter().find(|h| h.is(name))
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    fn values(&self, name: HeaderName) -> impl Iterator<Item = &Value> + '_ {
        self.headers_named(name).map(Header::value)
    }

    /// Every Via value, top first, across all Via fields.
    pub fn vias(&self) -> impl Iterator<Item = &Via> + '_ {
        self.values(HeaderName::Via).flat_map(|v| match v {
            Value::Via(list) => list.as_slice(),
            _ => &[],
        })
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Option<&Via> {
        self.vias().next()
    }

    fn name_addr(&self, name: HeaderName) -> Option<&NameAddr> {
        self.values(name).find_map(|v| match v {
            Value::NameAddr(n) => Some(&**n),
            _ => None,
        })
    }

    /// From.
    pub fn from(&self) -> Option<&NameAddr> {
        self.name_addr(HeaderName::From)
    }

    /// To.
    pub fn to(&self) -> Option<&NameAddr> {
        self.name_addr(HeaderName::To)
    }

    /// Call-ID.
    pub fn call_id(&self) -> Option<&Bytes> {
        self.values(HeaderName::CallId).find_map(|v| match v {
            Value::CallId(c) => Some(c),
            _ => None,
        })
    }

    /// CSeq.
    pub fn cseq(&self) -> Option<&CSeq> {
        self.values(HeaderName::CSeq).find_map(|v| match v {
            Value::CSeq(c) => Some(c),
            _ => None,
        })
    }

    fn number(&self, name: HeaderName) -> Option<u32> {
        self.values(name).find_map(|v| match v {
            Value::Number(n) => Some(*n),
            _ => None,
        })
    }

    /// Max-Forwards; `None` when absent or out of range (treated as absent).
    pub fn max_forwards(&self) -> Option<u32> {
        self.number(HeaderName::MaxForwards)
    }

    /// Expires; `None` when absent or out of range.
    pub fn expires(&self) -> Option<u32> {
        self.number(HeaderName::Expires)
    }

    /// Min-Expires.
    pub fn min_expires(&self) -> Option<u32> {
        self.number(HeaderName::MinExpires)
    }

    /// Flow-Timer (RFC 5626).
    pub fn flow_timer(&self) -> Option<u32> {
        self.number(HeaderName::FlowTimer)
    }

    /// Content-Length.
    pub fn content_length(&self) -> Option<u64> {
        self.values(HeaderName::ContentLength)
            .find_map(|v| match v {
                Value::ContentLength(n) => Some(*n),
                _ => None,
            })
    }

    /// Content-Type.
    pub fn content_type(&self) -> Option<&MediaType> {
        self.values(HeaderName::ContentType).find_map(|v| match v {
            Value::MediaType(m) => Some(m),
            _ => None,
        })
    }

    /// Every Contact field's value, in order.
    pub fn contact_lists(&self) -> impl Iterator<Item = &ContactList> + '_ {
        self.values(HeaderName::Contact).filter_map(|v| match v {
            Value::Contact(c) => Some(c),
            _ => None,
        })
    }

    /// Every contact across all Contact fields (none for `Contact: *`).
    pub fn contacts(&self) -> impl Iterator<Item = &Contact> + '_ {
        self.contact_lists().flat_map(ContactList::contacts)
    }

    /// True when a Contact field is `*`.
    pub fn has_star_contact(&self) -> bool {
        self.contact_lists().any(|c| matches!(c, ContactList::Star))
    }

    fn route_values(&self, name: HeaderName) -> impl Iterator<Item = &NameAddr> + '_ {
        self.values(name).flat_map(|v| match v {
            Value::Routes(r) => r.as_slice(),
            _ => &[],
        })
    }

    /// Route values, top first.
    pub fn routes(&self) -> impl Iterator<Item = &NameAddr> + '_ {
        self.route_values(HeaderName::Route)
    }

    /// Record-Route values, top first.
    pub fn record_routes(&self) -> impl Iterator<Item = &NameAddr> + '_ {
        self.route_values(HeaderName::RecordRoute)
    }

    /// Path values (RFC 3327), top first.
    pub fn paths(&self) -> impl Iterator<Item = &NameAddr> + '_ {
        self.route_values(HeaderName::Path)
    }

    /// Option tags of Supported, Require, Proxy-Require or Unsupported.
    pub fn option_tags(&self, name: HeaderName) -> impl Iterator<Item = &Bytes> + '_ {
        self.values(name).flat_map(|v| match v {
            Value::Tags(t) => t.as_slice(),
            _ => &[],
        })
    }

    /// Credentials of Authorization or Proxy-Authorization fields.
    pub fn credentials(&self, name: HeaderName) -> impl Iterator<Item = &Credentials> + '_ {
        self.values(name).filter_map(|v| match v {
            Value::Credentials(c) => Some(&**c),
            _ => None,
        })
    }

    /// Serializes the message.
    pub fn to_bytes(&self) -> Bytes {
        if let Some(original) = &self.original {
            return original.clone();
        }
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        Bytes::from(out)
    }

    fn encoded_len(&self) -> usize {
        self.headers
            .iter()
            .fold(self.start_raw.len(), |n, h| n.saturating_add(h.line.len()))
            .saturating_add(self.blank.len())
            .saturating_add(self.body.len())
    }

    /// Appends the serialized message to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if let Some(original) = &self.original {
            out.extend_from_slice(original);
            return;
        }
        out.extend_from_slice(&self.start_raw);
        for h in &self.headers {
            out.extend_from_slice(&h.line);
        }
        out.extend_from_slice(&self.blank);
        out.extend_from_slice(&self.body);
    }

    fn edited(&mut self) {
        self.original = None;
        if self.blank.is_empty() {
            // A datagram that lacked the blank line gets one once it is rewritten, and
            // its last line gets the line end it lacked, so that no inserted header is
            // glued onto it (fuzzing finding R1).
            self.blank = Bytes::from_static(b"\r\n");
            let last = match self.headers.last_mut() {
                Some(h) => &mut h.line,
                None => &mut self.start_raw,
            };
            if !last.ends_with(b"\n") {
                let mut line = last.to_vec();
                line.extend_from_slice(b"\r\n");
                *last = Bytes::from(line);
            }
        }
    }

    fn first_index(&self, name: HeaderName) -> Option<usize> {
        self.headers.iter().position(|h| h.name == name)
    }

    /// Inserts a field at `index` (clamped to the end).
    pub fn insert_header(&mut self, index: usize, header: Header) {
        self.edited();
        let index = index.min(self.headers.len());
        self.headers.insert(index, header);
    }

    /// Appends a field after the others.
    pub fn push_header(&mut self, header: Header) {
        self.edited();
        self.headers.push(header);
    }

    /// Removes every field with `name`; returns how many were removed.
    pub fn remove_headers(&mut self, name: HeaderName) -> usize {
        let before = self.headers.len();
        self.headers.retain(|h| h.name != name);
        let removed = before.saturating_sub(self.headers.len());
        if removed > 0 {
            self.edited();
        }
        removed
    }

    /// Pushes a Via on top (RFC 3261 §16.6 step 8).
    pub fn push_via(&mut self, via: &Via) {
        let at = self.first_index(HeaderName::Via).unwrap_or(0);
        let header = Header::typed("Via", via.as_bytes(), Value::Via(vec![via.clone()]));
        self.insert_header(at, header);
    }

    /// Removes the topmost Via value (RFC 3261 §16.7 step 3) and returns it.
    pub fn pop_via(&mut self) -> Option<Via> {
        self.pop_first(HeaderName::Via, |v| match v {
            Value::Via(list) => Some(list),
            _ => None,
        })
    }

    /// Removes the topmost Route value (RFC 3261 §16.4) and returns it.
    pub fn pop_route(&mut self) -> Option<NameAddr> {
        self.pop_first(HeaderName::Route, |v| match v {
            Value::Routes(list) => Some(list),
            _ => None,
        })
    }

    /// Removes the first value of the first `name` field. A field left with other
    /// values is rewritten from their original bytes; an emptied one is removed.
    fn pop_first<T: Clone + ValueBytes>(
        &mut self,
        name: HeaderName,
        list_of: impl Fn(&mut Value) -> Option<&mut Vec<T>>,
    ) -> Option<T> {
        let idx = self.first_index(name)?;
        let header = self.headers.get_mut(idx)?;
        let list = list_of(header.value_mut()?)?;
        if list.is_empty() {
            return None;
        }
        let first = list.remove(0);
        if list.is_empty() {
            self.headers.remove(idx);
        } else {
            let mut value = Vec::new();
            for (i, item) in list.iter().enumerate() {
                if i > 0 {
                    value.extend_from_slice(b", ");
                }
                value.extend_from_slice(item.value_bytes());
            }
            let rebuilt = Header::typed_raw(header.raw_name(), &value, header.value().clone());
            *header = rebuilt;
        }
        self.edited();
        Some(first)
    }

    /// Records where a request really came from in its top Via (RFC 3261 §18.2.1,
    /// RFC 3581 §4): `received` when the sent-by host is not that address or rport was
    /// asked for, and the source port in `rport` when it was asked for. Returns whether
    /// the Via changed.
    pub fn set_top_via_received(&mut self, ip: std::net::IpAddr, port: u16) -> bool {
        let Some(top) = self.top_via() else {
            return false;
        };
        let wants_rport = top.rport().is_some();
        if top.host.ip() == Some(ip) && !wants_rport {
            return false;
        }
        let raw = top.as_bytes();
        let split = memchr::memchr(b';', raw).unwrap_or(raw.len());
        let mut value = raw.get(..split).unwrap_or_default().to_vec();
        for p in &top.params {
            if p.name.eq_ignore_ascii_case(b"received") {
                continue;
            }
            value.push(b';');
            value.extend_from_slice(&p.name);
            if p.name.eq_ignore_ascii_case(b"rport") {
                value.extend_from_slice(format!("={port}").as_bytes());
            } else if let Some(v) = &p.value {
                value.push(b'=');
                value.extend_from_slice(v);
            }
        }
        value.extend_from_slice(format!(";received={ip}").as_bytes());
        let Some(via) = crate::via::parse_one(&Bytes::from(value)) else {
            return false;
        };
        self.pop_via();
        self.push_via(&via);
        true
    }

    /// Adds a Record-Route value on top (RFC 3261 §16.6 step 4). `value` is the
    /// name-addr, e.g. `<sip:proxy.example.com;lr>`.
    pub fn push_record_route(&mut self, value: &[u8]) -> Result<(), Malformed> {
        let header = Header::new("Record-Route", value)?;
        let at = match self.first_index(HeaderName::RecordRoute) {
            Some(i) => i,
            None => self
                .headers
                .iter()
                .rposition(|h| h.name == HeaderName::Via)
                .map_or(0, |i| i.saturating_add(1)),
        };
        self.insert_header(at, header);
        Ok(())
    }

    /// Replaces the Request-URI (RFC 3261 §16.6 step 2). No effect on a response.
    pub fn set_request_uri(&mut self, uri: Uri) {
        let StartLine::Request(line) = &mut self.start else {
            return;
        };
        let mut raw = Vec::with_capacity(self.start_raw.len().saturating_add(uri.as_bytes().len()));
        raw.extend_from_slice(line.method.as_bytes());
        raw.push(b' ');
        raw.extend_from_slice(uri.as_bytes());
        raw.push(b' ');
        raw.extend_from_slice(&line.version);
        raw.extend_from_slice(b"\r\n");
        line.uri = uri;
        self.start_raw = Bytes::from(raw);
        self.edited();
    }

    /// Decrements Max-Forwards for forwarding (RFC 3261 §16.6 step 3): a missing or
    /// invalid one is replaced by 70. Returns the new value, or `None` when it is
    /// already zero (the proxy must answer 483).
    pub fn decrement_max_forwards(&mut self) -> Option<u32> {
        let current = self.max_forwards();
        let next = match current {
            Some(0) => return None,
            Some(n) => n.saturating_sub(1),
            None => 70,
        };
        let value = next.to_string();
        match self.first_index(HeaderName::MaxForwards) {
            Some(idx) => {
                let header = self.headers.get_mut(idx)?;
                *header =
                    Header::typed_raw(header.raw_name(), value.as_bytes(), Value::Number(next));
                // A second (invalid) Max-Forwards must not survive next to the new one.
                let mut seen = false;
                self.headers.retain(|h| {
                    if h.name != HeaderName::MaxForwards {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
                self.edited();
            }
            None => {
                let at = self
                    .headers
                    .iter()
                    .rposition(|h| h.name == HeaderName::Via)
                    .map_or(0, |i| i.saturating_add(1));
                let header = Header::typed("Max-Forwards", value.as_bytes(), Value::Number(next));
                self.insert_header(at, header);
            }
        }
        Some(next)
    }

    /// Builds a response to this request with the headers RFC 3261 §8.2.6.2 copies
    /// (Via, From, To, Call-ID, CSeq) and `Content-Length: 0`. `to_tag` is added to To
    /// when To has no tag yet.
    pub fn response(&self, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let start_raw = Bytes::from(format!("SIP/2.0 {code} {reason}\r\n"));
        let start = StartLine::Response(StatusLine {
            version: Bytes::from_static(b"SIP/2.0"),
            code,
            reason: start_raw.slice(12..start_raw.len().saturating_sub(2)),
        });
        let mut headers: Vec<Header> = Vec::with_capacity(8);
        for h in &self.headers {
            match h.name {
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                    headers.push(h.clone());
                }
                HeaderName::To => match (to_tag, self.to().and_then(NameAddr::tag)) {
                    (Some(tag), None) => {
                        let mut v = h.raw_value().to_vec();
                        v.extend_from_slice(b";tag=");
                        v.extend_from_slice(tag.as_bytes());
                        match Header::new("To", &v) {
                            Ok(t) => headers.push(t),
                            Err(_) => headers.push(h.clone()),
                        }
                    }
                    _ => headers.push(h.clone()),
                },
                _ => {}
            }
        }
        headers.push(Header::typed(
            "Content-Length",
            b"0",
            Value::ContentLength(0),
        ));
        Message {
            start,
            start_raw,
            headers,
            blank: Bytes::from_static(b"\r\n"),
            body: Bytes::new(),
            original: None,
        }
    }
}

/// Items of a multi-value header that can be written back from their original bytes.
pub(crate) trait ValueBytes {
    fn value_bytes(&self) -> &[u8];
}

impl ValueBytes for Via {
    fn value_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl ValueBytes for NameAddr {
    fn value_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Header {
    /// A field built by holdfast from a value it already holds in typed form.
    pub(crate) fn typed(name: &'static str, value: &[u8], typed: Value) -> Header {
        Header::typed_raw(name.as_bytes(), value, typed)
    }

    pub(crate) fn typed_raw(raw_name: &[u8], value: &[u8], typed: Value) -> Header {
        let mut line =
            Vec::with_capacity(raw_name.len().saturating_add(value.len()).saturating_add(4));
        line.extend_from_slice(raw_name);
        line.extend_from_slice(b": ");
        line.extend_from_slice(value);
        line.extend_from_slice(b"\r\n");
        let name_end = raw_name.len();
        let value_start = name_end.saturating_add(2);
        let value_end = value_start.saturating_add(value.len());
        let offset = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Header {
            name: HeaderName::from_bytes(raw_name),
            line: Bytes::from(line),
            name_end: offset(name_end),
            value_start: offset(value_start),
            value_end: offset(value_end),
            value: std::sync::OnceLock::from(Box::new(typed)),
        }
    }
}
