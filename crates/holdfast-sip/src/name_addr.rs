//! `name-addr` / `addr-spec` values: From, To, Contact, Route, Record-Route, Path
//! (RFC 3261 §20.10, §20.20, §20.30, §20.34, §20.39; RFC 3327; RFC 5626 §4.2).

use bytes::Bytes;

use crate::grammar::{self, slice, Param, ParamSpan, Scanner, Span};
use crate::uri::{scan_uri, scan_uri_prefix, Uri, UriShape};

/// `( name-addr / addr-spec ) *( SEMI param )`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameAddr {
    raw: Bytes,
    /// The display name as written (quoted, or a run of tokens), if any.
    pub display: Option<Bytes>,
    /// The URI.
    pub uri: Uri,
    /// Whether the URI was written in `<` `>`.
    pub angle: bool,
    /// Header parameters (outside the `<>`), in order.
    pub params: Vec<Param>,
}

impl NameAddr {
    /// The whole value exactly as written.
    pub fn as_bytes(&self) -> &Bytes {
        &self.raw
    }

    /// A header parameter by case-insensitive name; `Some(None)` when present without
    /// a value.
    pub fn param(&self, name: &str) -> Option<Option<&Bytes>> {
        grammar::find_param(&self.params, name).map(|p| p.value.as_ref())
    }

    /// The tag parameter (From / To).
    pub fn tag(&self) -> Option<&Bytes> {
        self.param("tag").flatten()
    }

    /// Parses a value that must hold exactly one name-addr (From, To).
    pub(crate) fn parse_single(v: &Bytes) -> Option<NameAddr> {
        scan_single(v).map(|shape| shape.build(v))
    }

    /// Parses a comma-separated list (Route, Record-Route, Path), where every element
    /// must be in `<>` form (RFC 3261 §20.30: `route-param = name-addr *( SEMI rr-param )`).
    pub(crate) fn parse_list(v: &Bytes) -> Option<Vec<NameAddr>> {
        let mut out = Vec::with_capacity(1);
        scan_route_list(v, |shape| out.push(shape.build(v)))?;
        Some(out)
    }
}

/// True when `v` holds exactly one name-addr (From, To); allocates nothing.
pub(crate) fn check_single(v: &[u8]) -> bool {
    scan_single(v).is_some()
}

/// Checks a value that must hold exactly one name-addr (From, To).
#[inline(always)]
fn scan_single(v: &[u8]) -> Option<NameAddrShape> {
    let mut s = Scanner::new(v);
    s.skip_lws();
    let shape = scan_at(&mut s, |_, _| Some(()))?;
    s.skip_lws();
    s.at_end().then_some(shape)
}

/// True when `v` is a Route, Record-Route or Path list; allocates nothing.
pub(crate) fn check_route_list(v: &[u8]) -> bool {
    scan_route_list(v, |_| ()).is_some()
}

/// True when `v` is a Contact value; allocates nothing.
pub(crate) fn check_contacts(v: &[u8]) -> bool {
    scan_contacts(v, |_| ()).is_some()
}

/// Checks a Route, Record-Route or Path list, handing each element to `f`.
#[inline(always)]
fn scan_route_list(v: &[u8], mut f: impl FnMut(NameAddrShape)) -> Option<()> {
    let mut s = Scanner::new(v);
    s.skip_lws();
    loop {
        let shape = scan_at(&mut s, |_, _| Some(()))?;
        if !shape.angle {
            return None;
        }
        f(shape);
        if !s.list_sep()? {
            return Some(());
        }
    }
}

/// Where the parts of one name-addr or addr-spec are, once [`scan_at`] has checked it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NameAddrShape {
    start: usize,
    end: usize,
    display: Option<Span>,
    uri: Span,
    uri_shape: UriShape,
    angle: bool,
    /// Where the parameters start (before the first `;`).
    params: usize,
}

impl NameAddrShape {
    pub(crate) fn build(&self, src: &Bytes) -> NameAddr {
        NameAddr {
            raw: slice(src, (self.start, self.end)),
            display: self.display.map(|d| slice(src, d)),
            uri: self.uri_shape.build(slice(src, self.uri)),
            angle: self.angle,
            params: grammar::collect_params(src, self.params),
        }
    }
}

/// Checks one name-addr or addr-spec with its parameters, starting at `s`, handing each
/// parameter to `param` (which may refuse it).
#[inline(always)]
fn scan_at(
    s: &mut Scanner<'_>,
    param: impl FnMut(&Scanner<'_>, ParamSpan) -> Option<()>,
) -> Option<NameAddrShape> {
    let start = s.pos();
    let (display, angle_follows) = match s.peek()? {
        b'"' => {
            let q = s.quoted_string()?;
            s.skip_lws();
            (Some(q), true)
        }
        b'<' => (None, true),
        _ => {
            // `*(token LWS)` before `<` is a display name; otherwise this is an addr-spec
            // (a URI's scheme ends in ':', which is not a token character).
            let save = s.pos();
            let mut end = save;
            while s.token().is_some() {
                end = s.pos();
                s.skip_lws();
            }
            if s.peek() == Some(b'<') && end > save {
                (Some((save, end)), true)
            } else {
                s.set_pos(save);
                (None, false)
            }
        }
    };
    let (uri, uri_shape) = if angle_follows {
        if !s.eat(b'<') {
            return None;
        }
        // No LWS inside the brackets (RFC 4475 §3.1.2.14): the URI runs to '>', and
        // holds only URI characters.
        let start = s.pos();
        let (len, shape) = scan_uri_prefix(s.rest()).ok()?;
        s.set_pos(start.saturating_add(len));
        if !s.eat(b'>') {
            return None;
        }
        ((start, start.saturating_add(len)), shape)
    } else {
        // addr-spec: the URI ends at the first ';', ',' or white space, and may not hold
        // '?' (RFC 3261 §20: such a URI must be in angle brackets).
        let r = s.take_while(|b| !matches!(b, b';' | b',') && !grammar::is_lws(b));
        if s.bytes(r).contains(&b'?') {
            return None;
        }
        (r, scan_uri(s.bytes(r)).ok()?)
    };
    let params = s.pos();
    s.params(param)?;
    Some(NameAddrShape {
        start,
        end: s.pos(),
        display,
        uri,
        uri_shape,
        angle: angle_follows,
        params,
    })
}

/// One Contact value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Contact {
    /// The address and its contact-params.
    pub addr: NameAddr,
}

impl Contact {
    /// The `expires` contact-param. `None` when absent or out of range (RFC 4475
    /// §3.1.2.4: treat it as absent).
    pub fn expires(&self) -> Option<u32> {
        self.addr
            .param("expires")
            .flatten()
            .and_then(|v| grammar::parse_u32(v))
    }

    /// The `q` value in thousandths (0–1000), if present and valid.
    pub fn q(&self) -> Option<u16> {
        parse_qvalue(self.addr.param("q").flatten()?)
    }

    /// The RFC 5626 `+sip.instance` value, quotes removed.
    pub fn instance(&self) -> Option<Bytes> {
        let v = self.addr.param("+sip.instance").flatten()?;
        match grammar::unquote(v) {
            std::borrow::Cow::Borrowed(b) if b.len() == v.len() => Some(v.clone()),
            std::borrow::Cow::Borrowed(_) => Some(v.slice(1..v.len().saturating_sub(1))),
            std::borrow::Cow::Owned(o) => Some(Bytes::from(o)),
        }
    }

    /// The RFC 5626 `reg-id` value.
    pub fn reg_id(&self) -> Option<u32> {
        self.addr
            .param("reg-id")
            .flatten()
            .and_then(|v| grammar::parse_u32(v))
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match memchr::memchr(b'.', v) {
        Some(p) => (v.get(..p)?, v.get(p.saturating_add(1)..)?),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for i in 0..3 {
        let d = frac.get(i).map_or(0, |d| d.wrapping_sub(b'0'));
        thousandths = thousandths.checked_mul(10)?.checked_add(u16::from(d))?;
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Checks a Contact value, handing each contact to `f`; `Some(true)` for `*`.
#[inline(always)]
fn scan_contacts(v: &[u8], mut f: impl FnMut(NameAddrShape)) -> Option<bool> {
    if grammar::trim_lws(v) == b"*" {
        return Some(true);
    }
    let mut s = Scanner::new(v);
    s.skip_lws();
    loop {
        // Typed contact-params must be valid when present: `q`, read from its first
        // occurrence as [`Contact::q`] reads it.
        let mut q: Option<bool> = None;
        let shape = scan_at(&mut s, |s, p| {
            if q.is_none() && s.bytes(p.name).eq_ignore_ascii_case(b"q") {
                q = Some(p.value.and_then(|v| parse_qvalue(s.bytes(v))).is_some());
            }
            Some(())
        })?;
        if q == Some(false) {
            return None;
        }
        f(shape);
        if !s.list_sep()? {
            return Some(false);
        }
    }
}

/// The value of a Contact header: `*` or a list of contacts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContactList {
    /// `Contact: *` (remove all bindings, RFC 3261 §10.2.2).
    Star,
    /// One or more contacts.
    List(Vec<Contact>),
}

impl ContactList {
    pub(crate) fn parse(v: &Bytes) -> Option<ContactList> {
        let mut out = Vec::with_capacity(1);
        let star = scan_contacts(v, |shape| {
            out.push(Contact {
                addr: shape.build(v),
            })
        })?;
        Some(if star {
            ContactList::Star
        } else {
            ContactList::List(out)
        })
    }

    /// The contacts (empty for `*`).
    pub fn contacts(&self) -> &[Contact] {
        match self {
            ContactList::Star => &[],
            ContactList::List(l) => l,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &'static str) -> Option<NameAddr> {
        NameAddr::parse_single(&Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn forms() {
        let n = one(
            "\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .unwrap();
        assert_eq!(n.tag().unwrap().as_ref(), b"98asjd8");
        assert!(n.angle);
        let n = one("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert!(!n.angle);
        assert_eq!(n.tag().unwrap().as_ref(), b"1918181833n");
        let n = one("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display.unwrap().as_ref(), b"caller");
        let n = one("Bob Smith <sip:bob@biloxi.com>").unwrap();
        assert_eq!(n.display.unwrap().as_ref(), b"Bob Smith");
    }

    #[test]
    fn rejects() {
        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "< sip:t.watson@example.org >",
            "sip:user@example.com?Route=%3Csip:example.com%3E",
            "<sip:a@b> junk",
            "<sip:a@b>;",
        ] {
            assert!(one(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn contact_params() {
        let c = ContactList::parse(&Bytes::from_static(
            b"<sip:a@192.0.2.1;transport=tcp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1;q=0.7;expires=600, sip:b@host;q=1",
        ))
        .unwrap();
        let c0 = &c.contacts()[0];
        assert_eq!(c0.q(), Some(700));
        assert_eq!(c0.expires(), Some(600));
        assert_eq!(c0.reg_id(), Some(1));
        assert_eq!(
            c0.instance().unwrap().as_ref(),
            b"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"
        );
        assert_eq!(c.contacts()[1].q(), Some(1000));
        assert_eq!(
            ContactList::parse(&Bytes::from_static(b" * ")),
            Some(ContactList::Star)
        );
        assert!(ContactList::parse(&Bytes::from_static(b"<sip:a@b>;q=2")).is_none());
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue(b"0.33"), Some(330));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"1.5"), None);
        assert_eq!(parse_qvalue(b"0.1234"), None);
    }
}
