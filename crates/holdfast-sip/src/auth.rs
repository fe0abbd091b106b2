//! The digest authentication headers: Authorization and Proxy-Authorization
//! ([`Credentials`]), WWW-Authenticate and Proxy-Authenticate ([`Challenge`]), and
//! Authentication-Info ([`AuthenticationInfo`]).
//!
//! Grammar: RFC 3261 §20.6, §20.7, §20.27, §20.28, §20.44 and §25.1, with the additions
//! of RFC 7616 (SHA-256 and SHA-512-256, `userhash`, `charset`, `username*`) that
//! RFC 8760 brings to SIP, and RFC 2617 §3.2.3 for Authentication-Info. This module only
//! reads and writes the headers; computing and checking digests belongs to the
//! authenticating roles.
//!
//! Parsing is zero-copy: every value is a [`Bytes`] slice of the header value, with its
//! quotes removed. Only a quoted string that contains `\` escapes is copied, into a
//! buffer no longer than the value. A parameter list holds at most [`MAX_PARAMS`]
//! parameters and a `qop` option list at most [`MAX_QOP_OPTIONS`] options, so a hostile
//! peer gets at most linear work and allocation out of a header.
//!
//! What is accepted:
//!
//! - The scheme and the parameter names are case-insensitive; LWS (folds included) may
//!   surround `=` and `,`.
//! - Any parameter value may be a token or a quoted string. RFC 7235 §2.1 makes the two
//!   forms equivalent; RFC 7616 §3.3 and §3.4 only tell senders which form to use, and
//!   some clients quote `qop` or `algorithm` all the same.
//! - A parameter name appears at most once (RFC 7235 §2.1), and `username` and
//!   `username*` exclude each other (RFC 7616 §3.4.4): two values for one parameter
//!   would let two elements disagree about what was authenticated.
//! - `nc` is exactly 8 hex digits (RFC 3261 §25.1 `nc-value`).
//! - `stale` and `userhash` are true only when their value is `true`, in any case
//!   (RFC 2617 §3.2.1: "anything other than TRUE" is false).
//! - A scheme other than Digest parses into [`OtherAuth`] with its parameters kept as
//!   written (RFC 4475 §3.3.7 `regaut01`: a proxy forwards it unchanged).
//!
//! The builders (`to_header_value`) write what RFC 7616 §3.3 and §3.4 ask of a sender:
//! quoted `realm`, `domain`, `nonce`, `opaque`, challenge `qop`, `username`, `uri`,
//! `response`, `cnonce`, `nextnonce` and `rspauth`; bare tokens for `algorithm`,
//! `stale`, `userhash`, credential `qop` and `nc`. Whatever bytes the fields hold, the
//! output keeps the header's framing: no bare CR or LF, every quoted string closed. A
//! value this module parsed writes back to one that parses to the same fields, except
//! that a fold inside a quoted value becomes the SP it stands for.

use std::borrow::Cow;

use bytes::Bytes;

use crate::grammar::{
    is_lws, is_name, is_token, is_token_str, slice, unquote, Param, Scanner, Span,
};

/// Most parameters one digest header may carry; more is [`AuthError::TooMany`].
pub const MAX_PARAMS: usize = 64;

/// Most options one challenge's `qop` list may carry; more is [`AuthError::TooMany`].
pub const MAX_QOP_OPTIONS: usize = 16;

/// Why an authentication header value did not parse. Every variant is a malformed
/// peer header: a request carrying one is answered 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No authentication scheme, or the scheme is not a token followed by LWS.
    #[error("missing or invalid authentication scheme")]
    Scheme,
    /// A digest header with no parameters at all.
    #[error("no authentication parameters")]
    Empty,
    /// A parameter is not `token = ( token / quoted-string )`, a list element is
    /// missing, or something other than `,` follows a parameter.
    #[error("malformed authentication parameter")]
    Param,
    /// A quoted string is not terminated or holds an invalid escape.
    #[error("malformed quoted string in an authentication parameter")]
    Quoting,
    /// A parameter is given twice, or both `username` and `username*` are given.
    #[error("authentication parameter given more than once")]
    Duplicate,
    /// The nonce count is not exactly 8 hex digits.
    #[error("nonce count is not 8 hex digits")]
    Nc,
    /// A challenge's `qop` option is not a token.
    #[error("malformed qop options")]
    Qop,
    /// More than [`MAX_PARAMS`] parameters, or more than [`MAX_QOP_OPTIONS`] qop options.
    #[error("too many authentication parameters")]
    TooMany,
}

/// A digest algorithm (RFC 7616 §3.2, §6.1; RFC 8760 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5`, the default when no algorithm is given.
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `SHA-512-256`.
    Sha512_256,
    /// `SHA-512-256-sess`.
    Sha512_256Sess,
    /// Any other algorithm; a challenge with one is ignored (RFC 7616 §3.3).
    Other,
}

impl Algorithm {
    /// Reads an `algorithm` value, case-insensitively.
    pub fn from_bytes(name: &[u8]) -> Algorithm {
        [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
            Algorithm::Sha512_256,
            Algorithm::Sha512_256Sess,
        ]
        .into_iter()
        .find(|a| {
            a.as_str()
                .is_some_and(|s| s.as_bytes().eq_ignore_ascii_case(name))
        })
        .unwrap_or(Algorithm::Other)
    }

    /// The registered name, or `None` for [`Algorithm::Other`].
    pub const fn as_str(self) -> Option<&'static str> {
        match self {
            Algorithm::Md5 => Some("MD5"),
            Algorithm::Md5Sess => Some("MD5-sess"),
            Algorithm::Sha256 => Some("SHA-256"),
            Algorithm::Sha256Sess => Some("SHA-256-sess"),
            Algorithm::Sha512_256 => Some("SHA-512-256"),
            Algorithm::Sha512_256Sess => Some("SHA-512-256-sess"),
            Algorithm::Other => None,
        }
    }

    /// True for the `-sess` variants, whose A1 includes the nonce and cnonce
    /// (RFC 7616 §3.4.2).
    pub const fn is_session(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }
}

/// A scheme other than Digest, kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtherAuth {
    /// The scheme, as written.
    pub scheme: Bytes,
    /// Everything after the scheme and its LWS, up to the last non-LWS byte, unparsed.
    pub params: Bytes,
}

/// The value of an Authorization or Proxy-Authorization header (RFC 3261 §20.7, §20.28).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
// Digest is the variant nearly every request carries, and the message model already
// boxes the whole value; boxing the variant too would cost a second allocation.
#[allow(clippy::large_enum_variant)]
pub enum Credentials {
    /// `Digest` credentials.
    Digest(DigestCredentials),
    /// Any other scheme.
    Other(OtherAuth),
}

/// Digest credentials (RFC 3261 §25.1 `digest-response`, RFC 7616 §3.4). Every
/// parameter is optional here; which are required is for the verifier to say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DigestCredentials {
    /// `username`, unquoted. With `userhash`, the hashed username.
    pub username: Option<Bytes>,
    /// `realm`, unquoted.
    pub realm: Option<Bytes>,
    /// `nonce`, unquoted.
    pub nonce: Option<Bytes>,
    /// `uri` (the digest-uri), unquoted, as the client wrote it.
    pub uri: Option<Bytes>,
    /// `response`, unquoted: the request digest in hex.
    pub response: Option<Bytes>,
    /// `algorithm`, as written; see [`DigestCredentials::algorithm_kind`].
    pub algorithm: Option<Bytes>,
    /// `cnonce`, unquoted.
    pub cnonce: Option<Bytes>,
    /// `opaque`, unquoted.
    pub opaque: Option<Bytes>,
    /// `qop`: the one quality of protection the client chose.
    pub qop: Option<Bytes>,
    /// `nc`: the nonce count.
    pub nc: Option<u32>,
    /// `userhash=true` (RFC 7616 §3.4.4).
    pub userhash: bool,
    /// Every parameter in order, as written (names keep their case, values their
    /// quotes). Extensions such as `username*` and `charset` are read from here.
    pub params: Vec<Param>,
}

/// The value of a WWW-Authenticate or Proxy-Authenticate header (RFC 3261 §20.27,
/// §20.44).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Challenge {
    /// A `Digest` challenge.
    Digest(DigestChallenge),
    /// Any other scheme.
    Other(OtherAuth),
}

/// A digest challenge (RFC 3261 §25.1 `digest-cln`, RFC 7616 §3.3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DigestChallenge {
    /// `realm`, unquoted.
    pub realm: Option<Bytes>,
    /// `domain`, unquoted: a space-separated list of URIs; see
    /// [`DigestChallenge::domain_uris`].
    pub domain: Option<Bytes>,
    /// `nonce`, unquoted.
    pub nonce: Option<Bytes>,
    /// `opaque`, unquoted.
    pub opaque: Option<Bytes>,
    /// `stale=true`.
    pub stale: bool,
    /// `algorithm`, as written; see [`DigestChallenge::algorithm_kind`].
    pub algorithm: Option<Bytes>,
    /// The `qop` options, split out of their quoted list; empty when absent.
    pub qop: Vec<Bytes>,
    /// `userhash=true` (RFC 7616 §3.3).
    pub userhash: bool,
    /// Every parameter in order, as written. Extensions such as `charset` are read from
    /// here.
    pub params: Vec<Param>,
}

/// The value of an Authentication-Info header (RFC 3261 §20.6, RFC 2617 §3.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AuthenticationInfo {
    /// `nextnonce`, unquoted.
    pub nextnonce: Option<Bytes>,
    /// `qop`.
    pub qop: Option<Bytes>,
    /// `rspauth`, unquoted: the response digest in hex.
    pub rspauth: Option<Bytes>,
    /// `cnonce`, unquoted.
    pub cnonce: Option<Bytes>,
    /// `nc`: the nonce count.
    pub nc: Option<u32>,
    /// Every parameter in order, as written.
    pub params: Vec<Param>,
}

/// The parameters a [`DigestCredentials`] field stands for; the rest are extensions.
const CREDENTIAL_FIELDS: [&str; 11] = [
    "username",
    "realm",
    "nonce",
    "uri",
    "response",
    "algorithm",
    "cnonce",
    "opaque",
    "qop",
    "nc",
    "userhash",
];

/// The parameters a [`DigestChallenge`] field stands for.
const CHALLENGE_FIELDS: [&str; 8] = [
    "realm",
    "domain",
    "nonce",
    "opaque",
    "stale",
    "algorithm",
    "qop",
    "userhash",
];

/// The parameters an [`AuthenticationInfo`] field stands for.
const AUTH_INFO_FIELDS: [&str; 5] = ["nextnonce", "qop", "rspauth", "cnonce", "nc"];

impl Credentials {
    /// Parses an Authorization or Proxy-Authorization header value.
    pub fn parse(value: &Bytes) -> Result<Credentials, AuthError> {
        let mut s = Scanner::new(value);
        let scheme = scheme(&mut s)?;
        if is_digest(s.bytes(scheme)) {
            DigestCredentials::from_params(param_list(value, &mut s)?).map(Credentials::Digest)
        } else {
            Ok(Credentials::Other(other(value, scheme, &s)))
        }
    }

    /// True when [`Credentials::parse`] accepts `value`; allocates nothing.
    pub(crate) fn check(value: &[u8]) -> bool {
        let mut s = Scanner::new(value);
        let Ok(scheme) = scheme(&mut s) else {
            return false;
        };
        if !is_digest(s.bytes(scheme)) {
            return true;
        }
        let (mut username, mut username_star) = (false, false);
        let listed = scan_param_list(&mut s, |s, known, _, value| {
            match known {
                Some(Known::Nc) => {
                    parse_nc(&unquote(s.bytes(value)))?;
                }
                Some(Known::Username) => username = true,
                Some(Known::UsernameStar) => username_star = true,
                _ => {}
            }
            Ok(())
        });
        listed.is_ok() && !(username && username_star)
    }
}

impl DigestCredentials {
    fn from_params(params: Vec<Param>) -> Result<DigestCredentials, AuthError> {
        let mut c = DigestCredentials::default();
        let mut username_star = false;
        for p in &params {
            let v = value_of(p);
            let n = &p.name;
            if is(n, "username") {
                c.username = Some(v);
            } else if is(n, "realm") {
                c.realm = Some(v);
            } else if is(n, "nonce") {
                c.nonce = Some(v);
            } else if is(n, "uri") {
                c.uri = Some(v);
            } else if is(n, "response") {
                c.response = Some(v);
            } else if is(n, "algorithm") {
                c.algorithm = Some(v);
            } else if is(n, "cnonce") {
                c.cnonce = Some(v);
            } else if is(n, "opaque") {
                c.opaque = Some(v);
            } else if is(n, "qop") {
                c.qop = Some(v);
            } else if is(n, "nc") {
                c.nc = Some(parse_nc(&v)?);
            } else if is(n, "userhash") {
                c.userhash = is_true(&v);
            } else if is(n, "username*") {
                username_star = true;
            }
        }
        if username_star && c.username.is_some() {
            return Err(AuthError::Duplicate);
        }
        c.params = params;
        Ok(c)
    }

    /// The algorithm, MD5 when none is given (RFC 7616 §3.3).
    pub fn algorithm_kind(&self) -> Algorithm {
        algorithm_kind(self.algorithm.as_deref())
    }

    /// Writes the header value: `Digest username="…", realm="…", …`, then the
    /// extension parameters of [`DigestCredentials::params`] (those no field stands for).
    pub fn to_header_value(&self) -> Vec<u8> {
        let mut w = ParamWriter::new(Some("Digest"));
        w.quoted("username", self.username.as_deref());
        w.quoted("realm", self.realm.as_deref());
        w.quoted("nonce", self.nonce.as_deref());
        w.quoted("uri", self.uri.as_deref());
        w.token("algorithm", self.algorithm.as_deref());
        w.token("qop", self.qop.as_deref());
        w.nc(self.nc);
        w.quoted("cnonce", self.cnonce.as_deref());
        w.quoted("response", self.response.as_deref());
        w.quoted("opaque", self.opaque.as_deref());
        w.flag("userhash", self.userhash, &self.params);
        w.extensions(&self.params, &CREDENTIAL_FIELDS);
        w.finish()
    }
}

impl Challenge {
    /// Parses a WWW-Authenticate or Proxy-Authenticate header value: one challenge, as
    /// RFC 3261 §20.27 and §20.44 allow per header field.
    pub fn parse(value: &Bytes) -> Result<Challenge, AuthError> {
        let mut s = Scanner::new(value);
        let scheme = scheme(&mut s)?;
        if is_digest(s.bytes(scheme)) {
            DigestChallenge::from_params(param_list(value, &mut s)?).map(Challenge::Digest)
        } else {
            Ok(Challenge::Other(other(value, scheme, &s)))
        }
    }

    /// True when [`Challenge::parse`] accepts `value`; allocates nothing.
    pub(crate) fn check(value: &[u8]) -> bool {
        let mut s = Scanner::new(value);
        let Ok(scheme) = scheme(&mut s) else {
            return false;
        };
        if !is_digest(s.bytes(scheme)) {
            return true;
        }
        scan_param_list(&mut s, |s, known, _, value| {
            if known == Some(Known::Qop) {
                scan_qop_options(&unquote(s.bytes(value)), |_| ())?;
            }
            Ok(())
        })
        .is_ok()
    }
}

impl DigestChallenge {
    fn from_params(params: Vec<Param>) -> Result<DigestChallenge, AuthError> {
        let mut c = DigestChallenge::default();
        for p in &params {
            let v = value_of(p);
            let n = &p.name;
            if is(n, "realm") {
                c.realm = Some(v);
            } else if is(n, "domain") {
                c.domain = Some(v);
            } else if is(n, "nonce") {
                c.nonce = Some(v);
            } else if is(n, "opaque") {
                c.opaque = Some(v);
            } else if is(n, "stale") {
                c.stale = is_true(&v);
            } else if is(n, "algorithm") {
                c.algorithm = Some(v);
            } else if is(n, "qop") {
                c.qop = qop_options(&v)?;
            } else if is(n, "userhash") {
                c.userhash = is_true(&v);
            }
        }
        c.params = params;
        Ok(c)
    }

    /// The algorithm, MD5 when none is given (RFC 7616 §3.3).
    pub fn algorithm_kind(&self) -> Algorithm {
        algorithm_kind(self.algorithm.as_deref())
    }

    /// The URIs of `domain`, split on LWS (RFC 3261 §25.1: `URI *( 1*SP URI )`).
    pub fn domain_uris(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.domain
            .as_deref()
            .unwrap_or_default()
            .split(|&b| is_lws(b))
            .filter(|u| !u.is_empty())
    }

    /// Writes the header value: `Digest realm="…", nonce="…", algorithm=…, qop="…"`,
    /// then the extension parameters of [`DigestChallenge::params`]. `stale` and
    /// `userhash` are written only when true; `qop` options that are not tokens are
    /// left out.
    pub fn to_header_value(&self) -> Vec<u8> {
        let mut w = ParamWriter::new(Some("Digest"));
        w.quoted("realm", self.realm.as_deref());
        w.quoted("domain", self.domain.as_deref());
        w.quoted("nonce", self.nonce.as_deref());
        w.quoted("opaque", self.opaque.as_deref());
        w.token("algorithm", self.algorithm.as_deref());
        w.qop_options(&self.qop);
        w.flag("stale", self.stale, &self.params);
        w.flag("userhash", self.userhash, &self.params);
        w.extensions(&self.params, &CHALLENGE_FIELDS);
        w.finish()
    }
}

impl AuthenticationInfo {
    /// Parses an Authentication-Info header value.
    pub fn parse(value: &Bytes) -> Result<AuthenticationInfo, AuthError> {
        let mut s = Scanner::new(value);
        let params = param_list(value, &mut s)?;
        let mut a = AuthenticationInfo::default();
        for p in &params {
            let v = value_of(p);
            let n = &p.name;
            if is(n, "nextnonce") {
                a.nextnonce = Some(v);
            } else if is(n, "qop") {
                a.qop = Some(v);
            } else if is(n, "rspauth") {
                a.rspauth = Some(v);
            } else if is(n, "cnonce") {
                a.cnonce = Some(v);
            } else if is(n, "nc") {
                a.nc = Some(parse_nc(&v)?);
            }
        }
        a.params = params;
        Ok(a)
    }

    /// True when [`AuthenticationInfo::parse`] accepts `value`; allocates nothing.
    pub(crate) fn check(value: &[u8]) -> bool {
        let mut s = Scanner::new(value);
        scan_param_list(&mut s, |s, known, _, value| {
            if known == Some(Known::Nc) {
                parse_nc(&unquote(s.bytes(value)))?;
            }
            Ok(())
        })
        .is_ok()
    }

    /// Writes the header value: `nextnonce="…", qop=…, rspauth="…", cnonce="…", nc=…`,
    /// then the extension parameters of [`AuthenticationInfo::params`].
    pub fn to_header_value(&self) -> Vec<u8> {
        let mut w = ParamWriter::new(None);
        w.quoted("nextnonce", self.nextnonce.as_deref());
        w.token("qop", self.qop.as_deref());
        w.quoted("rspauth", self.rspauth.as_deref());
        w.quoted("cnonce", self.cnonce.as_deref());
        w.nc(self.nc);
        w.extensions(&self.params, &AUTH_INFO_FIELDS);
        w.finish()
    }
}

fn is_digest(scheme: &[u8]) -> bool {
    scheme.eq_ignore_ascii_case(b"Digest")
}

/// Case-insensitive parameter name comparison.
fn is(name: &[u8], known: &str) -> bool {
    name.eq_ignore_ascii_case(known.as_bytes())
}

fn is_true(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"true")
}

fn algorithm_kind(algorithm: Option<&[u8]>) -> Algorithm {
    algorithm.map_or(Algorithm::Md5, Algorithm::from_bytes)
}

/// `auth-scheme` and the LWS after it. A scheme alone (nothing after it) is allowed
/// here; the Digest parameter list then reports [`AuthError::Empty`].
fn scheme(s: &mut Scanner<'_>) -> Result<Span, AuthError> {
    s.skip_lws();
    let scheme = s.token().ok_or(AuthError::Scheme)?;
    if !s.skip_lws() && !s.at_end() {
        return Err(AuthError::Scheme);
    }
    Ok(scheme)
}

/// A scheme other than Digest, with the rest of the value kept as written.
fn other(src: &Bytes, scheme: Span, s: &Scanner<'_>) -> OtherAuth {
    let start = s.pos();
    let len = s
        .rest()
        .iter()
        .rposition(|&b| !is_lws(b))
        .map_or(0, |p| p.saturating_add(1));
    OtherAuth {
        scheme: slice(src, scheme),
        params: slice(src, (start, start.saturating_add(len))),
    }
}

/// The parameter names the digest headers give a meaning to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Username,
    UsernameStar,
    Realm,
    Nonce,
    Uri,
    Response,
    Algorithm,
    Cnonce,
    Opaque,
    Qop,
    Nc,
    Userhash,
    Domain,
    Stale,
    Nextnonce,
    Rspauth,
    Charset,
}

/// The known names by length (lower case).
fn known_of_len(len: usize) -> &'static [(&'static str, Known)] {
    match len {
        2 => &[("nc", Known::Nc)],
        3 => &[("uri", Known::Uri), ("qop", Known::Qop)],
        5 => &[
            ("realm", Known::Realm),
            ("nonce", Known::Nonce),
            ("stale", Known::Stale),
        ],
        6 => &[
            ("cnonce", Known::Cnonce),
            ("opaque", Known::Opaque),
            ("domain", Known::Domain),
        ],
        7 => &[("rspauth", Known::Rspauth), ("charset", Known::Charset)],
        8 => &[
            ("username", Known::Username),
            ("response", Known::Response),
            ("userhash", Known::Userhash),
        ],
        9 => &[
            ("username*", Known::UsernameStar),
            ("algorithm", Known::Algorithm),
            ("nextnonce", Known::Nextnonce),
        ],
        _ => &[],
    }
}

impl Known {
    /// The known parameter `name` stands for (names are case-insensitive).
    fn of(name: &[u8]) -> Option<Known> {
        known_of_len(name.len())
            .iter()
            .find(|(k, _)| is_name(name, k.as_bytes()))
            .map(|&(_, known)| known)
    }

    fn bit(self) -> u32 {
        1u32.wrapping_shl(self as u32)
    }
}

/// The names of the parameters read so far, to refuse a second one with the same name:
/// a bit per known name, and the spans of the others (four inline; a header with more,
/// up to [`MAX_PARAMS`], spills into a vector).
struct SeenNames {
    count: usize,
    known: u32,
    inline: [Span; 4],
    others: usize,
    more: Vec<Span>,
}

impl SeenNames {
    #[inline(always)]
    fn new() -> SeenNames {
        SeenNames {
            count: 0,
            known: 0,
            inline: [(0, 0); 4],
            others: 0,
            more: Vec::new(),
        }
    }

    /// Records `name`; false when it was already seen.
    #[inline(always)]
    fn insert(&mut self, s: &Scanner<'_>, name: Span, known: Option<Known>) -> bool {
        self.count = self.count.saturating_add(1);
        match known {
            Some(k) => {
                let seen = self.known & k.bit() != 0;
                self.known |= k.bit();
                !seen
            }
            None => self.insert_other(s, name),
        }
    }

    fn insert_other(&mut self, s: &Scanner<'_>, name: Span) -> bool {
        let bytes = s.bytes(name);
        let same = |&n: &Span| s.bytes(n).eq_ignore_ascii_case(bytes);
        let inline = self.inline.get(..self.others).unwrap_or_default();
        if inline.iter().any(same) || self.more.iter().any(same) {
            return false;
        }
        match self.inline.get_mut(self.others) {
            Some(slot) => {
                *slot = name;
                self.others = self.others.saturating_add(1);
            }
            None => self.more.push(name),
        }
        true
    }
}

/// `auth-param *(COMMA auth-param)` to the end of the value, where
/// `auth-param = token EQUAL ( token / quoted-string )`. Names are unique
/// (case-insensitively) and at most [`MAX_PARAMS`]; each name (and the known name it
/// is, if any) and value is handed to `f`, which may refuse it.
#[inline(always)]
fn scan_param_list(
    s: &mut Scanner<'_>,
    mut f: impl FnMut(&Scanner<'_>, Option<Known>, Span, Span) -> Result<(), AuthError>,
) -> Result<(), AuthError> {
    s.skip_lws();
    if s.at_end() {
        return Err(AuthError::Empty);
    }
    let mut seen = SeenNames::new();
    loop {
        let name = s.token().ok_or(AuthError::Param)?;
        if !s.eat_sep(b'=') {
            return Err(AuthError::Param);
        }
        let value = if s.peek() == Some(b'"') {
            s.quoted_string_inline().ok_or(AuthError::Quoting)?
        } else {
            s.token().ok_or(AuthError::Param)?
        };
        if seen.count >= MAX_PARAMS {
            return Err(AuthError::TooMany);
        }
        let known = Known::of(s.bytes(name));
        if !seen.insert(s, name, known) {
            return Err(AuthError::Duplicate);
        }
        f(s, known, name, value)?;
        match s.list_sep() {
            Some(true) => {}
            Some(false) => return Ok(()),
            None => return Err(AuthError::Param),
        }
    }
}

/// The parameter list of [`scan_param_list`], as `Param`s sharing `src`'s buffer.
fn param_list(src: &Bytes, s: &mut Scanner<'_>) -> Result<Vec<Param>, AuthError> {
    let mut params = Vec::new();
    scan_param_list(s, |_, _, name, value| {
        params.push(Param {
            name: slice(src, name),
            value: Some(slice(src, value)),
        });
        Ok(())
    })?;
    Ok(params)
}

/// A parameter's value without its quotes: a slice of the input unless the quoted
/// string holds escapes.
fn value_of(p: &Param) -> Bytes {
    let Some(v) = p.value.as_ref() else {
        return Bytes::new();
    };
    match unquote(v) {
        Cow::Owned(o) => Bytes::from(o),
        // `unquote` hands back either `v` itself or `v` less its first and last byte.
        Cow::Borrowed(inner) if inner.len() == v.len() => v.clone(),
        Cow::Borrowed(_) => slice(v, (1, v.len().saturating_sub(1))),
    }
}

/// `nc-value = 8LHEX`. Upper-case hex digits are accepted too.
fn parse_nc(v: &[u8]) -> Result<u32, AuthError> {
    if v.len() != 8 {
        return Err(AuthError::Nc);
    }
    // Eight hex digits fit in 32 bits, so the shifts below lose nothing.
    v.iter().try_fold(0u32, |n, &d| {
        let digit = match d {
            b'0'..=b'9' => d.wrapping_sub(b'0'),
            b'a'..=b'f' => d.wrapping_sub(b'a').wrapping_add(10),
            b'A'..=b'F' => d.wrapping_sub(b'A').wrapping_add(10),
            _ => return Err(AuthError::Nc),
        };
        Ok(n.wrapping_shl(4) | u32::from(digit))
    })
}

/// The options of a challenge's `qop="auth, auth-int"`: tokens separated by commas and
/// LWS. Empty elements are skipped (RFC 7230 §7 list leniency), but at least one option
/// is required (RFC 3261 §25.1 `qop-options`; an empty list found by the `digest` fuzz
/// target would otherwise vanish when the challenge is written back).
fn qop_options(v: &Bytes) -> Result<Vec<Bytes>, AuthError> {
    let mut out = Vec::new();
    scan_qop_options(v, |option| out.push(slice(v, option)))?;
    Ok(out)
}

/// The grammar of [`qop_options`], handing each option to `f`.
fn scan_qop_options(v: &[u8], mut f: impl FnMut(Span)) -> Result<(), AuthError> {
    let mut s = Scanner::new(v);
    let mut count = 0usize;
    loop {
        s.skip_lws();
        if s.at_end() {
            return if count == 0 {
                Err(AuthError::Qop)
            } else {
                Ok(())
            };
        }
        if s.eat(b',') {
            continue;
        }
        let option = s.token().ok_or(AuthError::Qop)?;
        if count >= MAX_QOP_OPTIONS {
            return Err(AuthError::TooMany);
        }
        count = count.saturating_add(1);
        f(option);
        s.skip_lws();
        if !s.at_end() && !s.eat(b',') {
            return Err(AuthError::Qop);
        }
    }
}

/// Writes `[scheme SP] name=value *(", " name=value)`.
struct ParamWriter {
    out: Vec<u8>,
    first: bool,
}

impl ParamWriter {
    fn new(scheme: Option<&str>) -> ParamWriter {
        let mut out = Vec::with_capacity(256);
        if let Some(scheme) = scheme {
            out.extend_from_slice(scheme.as_bytes());
            out.push(b' ');
        }
        ParamWriter { out, first: true }
    }

    fn name(&mut self, name: &[u8]) {
        if !self.first {
            self.out.extend_from_slice(b", ");
        }
        self.first = false;
        self.out.extend_from_slice(name);
        self.out.push(b'=');
    }

    /// `name="value"`, always quoted.
    fn quoted(&mut self, name: &str, value: Option<&[u8]>) {
        if let Some(v) = value {
            self.name(name.as_bytes());
            write_quoted(&mut self.out, v);
        }
    }

    /// `name=value`, quoted only when the value is not a token.
    fn token(&mut self, name: &str, value: Option<&[u8]>) {
        if let Some(v) = value {
            self.name(name.as_bytes());
            write_token_or_quoted(&mut self.out, v);
        }
    }

    fn nc(&mut self, nc: Option<u32>) {
        if let Some(nc) = nc {
            self.name(b"nc");
            self.out.extend_from_slice(format!("{nc:08x}").as_bytes());
        }
    }

    /// Writes `name=true` when set; `name=false` when not set but the parsed value
    /// carried the flag (so a value whose only parameter is a false flag still writes
    /// back to one that parses, found by the `digest` fuzz target).
    fn flag(&mut self, name: &str, set: bool, params: &[Param]) {
        if set {
            self.name(name.as_bytes());
            self.out.extend_from_slice(b"true");
        } else if params
            .iter()
            .any(|p| p.name.eq_ignore_ascii_case(name.as_bytes()))
        {
            self.name(name.as_bytes());
            self.out.extend_from_slice(b"false");
        }
    }

    fn qop_options(&mut self, options: &[Bytes]) {
        let mut tokens = options.iter().filter(|o| is_token_str(o)).peekable();
        if tokens.peek().is_none() {
            return;
        }
        self.name(b"qop");
        self.out.push(b'"');
        for (i, o) in tokens.enumerate() {
            if i != 0 {
                self.out.extend_from_slice(b", ");
            }
            self.out.extend_from_slice(o);
        }
        self.out.push(b'"');
    }

    /// The parameters of `params` that no field stands for, in order. A parameter whose
    /// name is not a token or that has no value has no `auth-param` form and is left
    /// out; a value is written as a token when it is one and quoted otherwise.
    fn extensions(&mut self, params: &[Param], fields: &[&str]) {
        for p in params {
            let Some(v) = p.value.as_ref() else {
                continue;
            };
            if !is_token_str(&p.name) || fields.iter().any(|f| is(&p.name, f)) {
                continue;
            }
            self.name(&p.name);
            write_token_or_quoted(&mut self.out, &unquote(v));
        }
    }

    fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Writes `v` bare when it is a token and as a quoted string otherwise. CR and LF are
/// dropped first, as [`write_quoted`] would drop them, so that writing is idempotent.
fn write_token_or_quoted(out: &mut Vec<u8>, v: &[u8]) {
    let is_break = |b: u8| b == b'\r' || b == b'\n';
    if v.iter().any(|&b| is_token(b)) && v.iter().all(|&b| is_token(b) || is_break(b)) {
        out.extend(v.iter().filter(|&&b| !is_break(b)));
    } else {
        write_quoted(out, v);
    }
}

/// Writes `v` as a `quoted-string`: `"` and `\` and the control characters a
/// `quoted-pair` can carry are escaped. CR and LF cannot be carried at all (RFC 3261
/// §25.1) and are dropped, which turns a fold (`CRLF SP`) into the SP it stands for.
fn write_quoted(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    for &b in v {
        match b {
            b'\r' | b'\n' => {}
            b'"' | b'\\' | 0x00..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f => {
                out.push(b'\\');
                out.push(b);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn digest_credentials(s: &str) -> DigestCredentials {
        match Credentials::parse(&b(s)) {
            Ok(Credentials::Digest(c)) => c,
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    fn digest_challenge(s: &str) -> DigestChallenge {
        match Challenge::parse(&b(s)) {
            Ok(Challenge::Digest(c)) => c,
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    fn opt(s: &str) -> Option<Bytes> {
        Some(b(s))
    }

    /// RFC 7616 §3.9.1, with the folds the line splitter leaves in a value. The nonce
    /// and opaque are the RFC's (its SHA-256 and MD5 responses hash these exact values).
    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

    #[test]
    fn rfc7616_challenges() {
        for (alg, kind) in [("SHA-256", Algorithm::Sha256), ("MD5", Algorithm::Md5)] {
            let v = format!(
                "Digest\r\n       realm=\"http-auth@example.org\",\r\n       \
                 qop=\"auth, auth-int\",\r\n       algorithm={alg},\r\n       \
                 nonce=\"{RFC7616_NONCE}\",\r\n       opaque=\"{RFC7616_OPAQUE}\""
            );
            let c = digest_challenge(&v);
            assert_eq!(c.realm, opt("http-auth@example.org"));
            assert_eq!(c.qop, vec![b("auth"), b("auth-int")]);
            assert_eq!(c.algorithm, opt(alg));
            assert_eq!(c.algorithm_kind(), kind);
            assert_eq!(c.nonce, opt(RFC7616_NONCE));
            assert_eq!(c.opaque, opt(RFC7616_OPAQUE));
            assert!(!c.stale && !c.userhash);
            assert_eq!(c.domain, None);
            assert_eq!(c.params.len(), 5);
            assert_eq!(&c.params[1].name[..], b"qop");
            assert_eq!(c.params[1].value, opt("\"auth, auth-int\""));
        }
    }

    #[test]
    fn rfc7616_authorizations() {
        let sha = digest_credentials(&format!(
            "Digest username=\"Mufasa\",\r\n       realm=\"http-auth@example.org\",\r\n       \
             uri=\"/dir/index.html\",\r\n       algorithm=SHA-256,\r\n       \
             nonce=\"{RFC7616_NONCE}\",\r\n       nc=00000001,\r\n       \
             cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\",\r\n       \
             qop=auth,\r\n       \
             response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\",\r\n       \
             opaque=\"{RFC7616_OPAQUE}\""
        ));
        assert_eq!(sha.username, opt("Mufasa"));
        assert_eq!(sha.realm, opt("http-auth@example.org"));
        assert_eq!(sha.uri, opt("/dir/index.html"));
        assert_eq!(sha.algorithm_kind(), Algorithm::Sha256);
        assert_eq!(sha.nonce, opt(RFC7616_NONCE));
        assert_eq!(sha.nc, Some(1));
        assert_eq!(
            sha.cnonce,
            opt("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
        );
        assert_eq!(sha.qop, opt("auth"));
        assert_eq!(
            sha.response,
            opt("753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")
        );
        assert_eq!(sha.opaque, opt(RFC7616_OPAQUE));
        assert!(!sha.userhash);
        assert_eq!(sha.params.len(), 10);

        // §3.9.2: SHA-512-256 with a hashed username, and the challenge with charset.
        let c = digest_challenge(
            "Digest realm=\"api@example.org\", qop=\"auth\", algorithm=SHA-512-256, \
             nonce=\"5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK\", \
             opaque=\"HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS\", charset=UTF-8, \
             userhash=true",
        );
        assert_eq!(c.algorithm_kind(), Algorithm::Sha512_256);
        assert!(c.userhash);
        assert_eq!(c.qop, vec![b("auth")]);
        let charset = crate::grammar::find_param(&c.params, "CHARSET");
        assert_eq!(charset.and_then(|p| p.value.clone()), opt("UTF-8"));
        let a = digest_credentials(
            "Digest username=\"488869477bf257147b804c45308cd62ac4e25eb717b12b298c79e62dcea254ec\", \
             realm=\"api@example.org\", uri=\"/doe.json\", algorithm=SHA-512-256, \
             nonce=\"5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK\", nc=00000001, \
             cnonce=\"NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v\", qop=auth, \
             response=\"ae66e67d6b427bd3f120414a82e4acff38e8ecd9101d6c861229025f607a79dd\", \
             opaque=\"HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS\", userhash=true",
        );
        assert!(a.userhash);
        assert_eq!(a.algorithm_kind(), Algorithm::Sha512_256);
        assert_eq!(a.uri, opt("/doe.json"));

        // §3.4.4's extended notation for a non-ASCII username, kept in `params`.
        let a = digest_credentials(
            "Digest username*=UTF-8''J%C3%A4s%C3%B8n%20Doe, realm=\"api@example.org\"",
        );
        assert_eq!(a.username, None);
        let star = crate::grammar::find_param(&a.params, "username*");
        assert_eq!(
            star.and_then(|p| p.value.clone()),
            opt("UTF-8''J%C3%A4s%C3%B8n%20Doe")
        );
    }

    #[test]
    fn rfc3261_examples() {
        // §22.4
        let c = digest_credentials(
            "Digest username=\"bob\", realm=\"biloxi.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"sip:bob@biloxi.com\", \
             qop=auth, nc=00000001, cnonce=\"0a4f113b\", \
             response=\"6629fae49393a05397450978507c4ef1\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        );
        assert_eq!(c.username, opt("bob"));
        assert_eq!(c.realm, opt("biloxi.com"));
        assert_eq!(c.nonce, opt("dcd98b7102dd2f0e8b11d0f600bfb0c093"));
        assert_eq!(c.uri, opt("sip:bob@biloxi.com"));
        assert_eq!(c.qop, opt("auth"));
        assert_eq!(c.nc, Some(1));
        assert_eq!(c.cnonce, opt("0a4f113b"));
        assert_eq!(c.response, opt("6629fae49393a05397450978507c4ef1"));
        assert_eq!(c.opaque, opt("5ccc069c403ebaf9f0171e9517f40e41"));
        assert_eq!(c.algorithm, None);
        assert_eq!(c.algorithm_kind(), Algorithm::Md5);

        // §20.28 (Proxy-Authorization) with the scheme in another case.
        let c = digest_credentials(
            "digest username=\"Alice\", realm=\"atlanta.com\",\r\n \
             nonce=\"c60f3082ee1212b402a21831ae\",\r\n \
             response=\"245f23415f11432b3434341c022\"",
        );
        assert_eq!(c.username, opt("Alice"));
        assert_eq!(c.response, opt("245f23415f11432b3434341c022"));
        assert_eq!(c.nc, None);

        // §20.44 / §20.27: domain, an empty opaque and stale=FALSE.
        let c = digest_challenge(
            "Digest realm=\"atlanta.com\",\r\n domain=\"sip:boxesbybob.com\", qop=\"auth\",\r\n \
             nonce=\"f84f1cec41e6cbe5aea9c8e88d359\",\r\n opaque=\"\", stale=FALSE, \
             algorithm=MD5",
        );
        assert_eq!(c.realm, opt("atlanta.com"));
        assert_eq!(
            c.domain_uris().collect::<Vec<_>>(),
            vec![&b"sip:boxesbybob.com"[..]]
        );
        assert_eq!(c.qop, vec![b("auth")]);
        assert_eq!(c.opaque, opt(""));
        assert!(!c.stale);
        assert_eq!(c.algorithm_kind(), Algorithm::Md5);

        // §20.6
        let a = AuthenticationInfo::parse(&b("nextnonce=\"47364c23432d2e131a5fb210812c\""));
        assert_eq!(
            a.map(|a| a.nextnonce),
            Ok(opt("47364c23432d2e131a5fb210812c"))
        );
    }

    #[test]
    fn values_are_slices_of_the_input_unless_escaped() {
        let v = b("Digest username=\"a\\\"b\\\\c\", realm=\"plain\", nonce=n1");
        let Ok(Credentials::Digest(c)) = Credentials::parse(&v) else {
            panic!("no parse");
        };
        assert_eq!(c.username, Some(Bytes::from_static(b"a\"b\\c")));
        let in_input = |x: &Bytes| {
            let (p, start) = (x.as_ptr() as usize, v.as_ptr() as usize);
            p >= start && p + x.len() <= start + v.len()
        };
        assert!(!in_input(c.username.as_ref().unwrap()));
        assert!(in_input(c.realm.as_ref().unwrap()));
        assert_eq!(c.nonce, opt("n1"));
        assert!(in_input(c.nonce.as_ref().unwrap()));
    }

    #[test]
    fn lws_and_folds_around_separators() {
        let c = digest_credentials(
            "  Digest \r\n\t username \r\n = \"bob\"\r\n ,realm=\r\n \"biloxi.com\" ,\tnc\t=\t0000000A  ",
        );
        assert_eq!(c.username, opt("bob"));
        assert_eq!(c.realm, opt("biloxi.com"));
        assert_eq!(c.nc, Some(10));
        // A fold inside a quoted value is kept; the builder writes it as the SP it
        // stands for.
        let c = digest_challenge("Digest realm=\"a\r\n b\", qop=\"auth,\r\n auth-int\"");
        assert_eq!(c.realm, opt("a\r\n b"));
        assert_eq!(c.qop, vec![b("auth"), b("auth-int")]);
        assert_eq!(
            c.to_header_value(),
            b"Digest realm=\"a b\", qop=\"auth, auth-int\""
        );
    }

    #[test]
    fn quoted_token_values_are_accepted() {
        let c = digest_credentials(
            "Digest username=bob, algorithm=\"SHA-256-sess\", qop=\"auth-int\", nc=\"00000002\", userhash=\"TRUE\"",
        );
        assert_eq!(c.username, opt("bob"));
        assert_eq!(c.algorithm_kind(), Algorithm::Sha256Sess);
        assert_eq!(c.qop, opt("auth-int"));
        assert_eq!(c.nc, Some(2));
        assert!(c.userhash);
    }

    #[test]
    fn other_schemes_are_kept_as_written() {
        // RFC 4475 §3.3.7 regaut01.
        let v = b("NoOneKnowsThisScheme opaque-data=here");
        assert_eq!(
            Credentials::parse(&v),
            Ok(Credentials::Other(OtherAuth {
                scheme: b("NoOneKnowsThisScheme"),
                params: b("opaque-data=here"),
            }))
        );
        assert_eq!(
            Challenge::parse(&b("Basic realm=\"x\"  \r\n ")),
            Ok(Challenge::Other(OtherAuth {
                scheme: b("Basic"),
                params: b("realm=\"x\""),
            }))
        );
        assert_eq!(
            Credentials::parse(&b("Bearer")),
            Ok(Credentials::Other(OtherAuth {
                scheme: b("Bearer"),
                params: Bytes::new(),
            }))
        );
        // Digest needs a separator and parameters; another scheme's prefix is not Digest.
        assert!(matches!(
            Credentials::parse(&b("Digestive realm=\"x\"")),
            Ok(Credentials::Other(_))
        ));
    }

    #[test]
    fn malformed_values_are_rejected() {
        for (v, err) in [
            ("", AuthError::Scheme),
            ("   ", AuthError::Scheme),
            ("\"Digest\" realm=x", AuthError::Scheme),
            ("Digest,realm=\"x\"", AuthError::Scheme),
            ("Digest", AuthError::Empty),
            ("Digest   ", AuthError::Empty),
            ("Digest realm", AuthError::Param),
            ("Digest realm=", AuthError::Param),
            ("Digest realm=\"x\",", AuthError::Param),
            ("Digest realm=\"x\",, nonce=\"y\"", AuthError::Param),
            ("Digest realm=\"x\" nonce=\"y\"", AuthError::Param),
            ("Digest realm=\"x\"; nonce=\"y\"", AuthError::Param),
            ("Digest uri=sip:bob@biloxi.com", AuthError::Param),
            ("Digest =\"x\"", AuthError::Param),
            ("Digest realm=\"x", AuthError::Quoting),
            ("Digest realm=\"x\\", AuthError::Quoting),
            (
                "Digest realm=\"x\", nonce=\"y\\\r\n z\"",
                AuthError::Quoting,
            ),
        ] {
            assert_eq!(Credentials::parse(&b(v)), Err(err), "{v:?}");
            assert_eq!(Challenge::parse(&b(v)), Err(err), "{v:?}");
        }
        for (v, err) in [
            ("", AuthError::Empty),
            ("nextnonce", AuthError::Param),
            ("nextnonce=\"x\", ", AuthError::Param),
            ("nextnonce=\"x\", rspauth=\"", AuthError::Quoting),
            ("nc=1", AuthError::Nc),
        ] {
            assert_eq!(AuthenticationInfo::parse(&b(v)), Err(err), "{v:?}");
        }
        assert_eq!(
            Challenge::parse(&b("Digest qop=\"auth;x\"")),
            Err(AuthError::Qop)
        );
        assert_eq!(
            Challenge::parse(&b("Digest qop=\"auth int\"")),
            Err(AuthError::Qop)
        );
    }

    #[test]
    fn duplicates_are_rejected() {
        for v in [
            "Digest realm=\"a\", realm=\"a\"",
            "Digest realm=\"a\", nonce=\"n\", REALM=\"b\"",
            "Digest nc=00000001, nc=00000002",
            "Digest foo=1, Foo=2",
            "Digest username=\"bob\", username*=UTF-8''bob",
            "Digest username*=UTF-8''bob, Username=\"bob\"",
        ] {
            assert_eq!(
                Credentials::parse(&b(v)),
                Err(AuthError::Duplicate),
                "{v:?}"
            );
        }
        assert_eq!(
            Challenge::parse(&b("Digest qop=\"auth\", Qop=\"auth-int\"")),
            Err(AuthError::Duplicate)
        );
        assert_eq!(
            AuthenticationInfo::parse(&b("rspauth=\"a\", RSPAUTH=\"b\"")),
            Err(AuthError::Duplicate)
        );
    }

    #[test]
    fn nonce_count_is_eight_hex_digits() {
        let nc = |v: &str| {
            Credentials::parse(&b(&format!("Digest nc={v}"))).map(|c| match c {
                Credentials::Digest(d) => d.nc,
                Credentials::Other(_) => None,
            })
        };
        assert_eq!(nc("00000001"), Ok(Some(1)));
        assert_eq!(nc("ffffffff"), Ok(Some(u32::MAX)));
        assert_eq!(nc("FFFFFFFE"), Ok(Some(u32::MAX - 1)));
        for bad in [
            "100000000",
            "fffffffff",
            "0000000000000001",
            "0000001",
            "1",
            "0000000g",
            "+0000001",
            "\"\"",
        ] {
            assert_eq!(nc(bad), Err(AuthError::Nc), "{bad:?}");
        }
        assert_eq!(
            AuthenticationInfo::parse(&b("nc=100000000")),
            Err(AuthError::Nc)
        );
    }

    #[test]
    fn parameter_count_is_bounded() {
        let list = |n: usize| {
            let names: Vec<String> = (0..n).map(|i| format!("p{i}=v")).collect();
            names.join(", ")
        };
        let at_max = format!("Digest {}", list(MAX_PARAMS));
        assert_eq!(digest_credentials(&at_max).params.len(), MAX_PARAMS);
        assert_eq!(digest_challenge(&at_max).params.len(), MAX_PARAMS);
        let over = format!("Digest {}", list(MAX_PARAMS + 1));
        assert_eq!(Credentials::parse(&b(&over)), Err(AuthError::TooMany));
        assert_eq!(Challenge::parse(&b(&over)), Err(AuthError::TooMany));
        assert_eq!(
            AuthenticationInfo::parse(&b(&list(MAX_PARAMS + 1))),
            Err(AuthError::TooMany)
        );

        let options: Vec<String> = (0..=MAX_QOP_OPTIONS).map(|i| format!("q{i}")).collect();
        let v = format!("Digest qop=\"{}\"", options.join(","));
        assert_eq!(Challenge::parse(&b(&v)), Err(AuthError::TooMany));
        // Empty list elements are skipped and do not count.
        let c = digest_challenge("Digest qop=\" , auth,,auth-int , \"");
        assert_eq!(c.qop, vec![b("auth"), b("auth-int")]);
    }

    #[test]
    fn algorithms() {
        for (name, a) in [
            ("md5", Algorithm::Md5),
            ("MD5-SESS", Algorithm::Md5Sess),
            ("sha-256", Algorithm::Sha256),
            ("SHA-256-sess", Algorithm::Sha256Sess),
            ("Sha-512-256", Algorithm::Sha512_256),
            ("SHA-512-256-Sess", Algorithm::Sha512_256Sess),
        ] {
            assert_eq!(Algorithm::from_bytes(name.as_bytes()), a);
            let canonical = a.as_str().unwrap();
            assert!(canonical.eq_ignore_ascii_case(name));
            assert_eq!(a.is_session(), canonical.ends_with("-sess"));
        }
        for other in ["", "SHA-1", "MD5-", "SHA-512", "token"] {
            assert_eq!(Algorithm::from_bytes(other.as_bytes()), Algorithm::Other);
        }
        assert_eq!(Algorithm::Other.as_str(), None);
        assert_eq!(
            DigestCredentials::default().algorithm_kind(),
            Algorithm::Md5
        );
    }

    #[test]
    fn builders() {
        let c = DigestChallenge {
            realm: opt("x"),
            nonce: opt("y"),
            algorithm: opt("SHA-256"),
            qop: vec![b("auth")],
            ..DigestChallenge::default()
        };
        assert_eq!(
            c.to_header_value(),
            b"Digest realm=\"x\", nonce=\"y\", algorithm=SHA-256, qop=\"auth\""
        );

        let c = DigestCredentials {
            username: opt("bob"),
            realm: opt("biloxi.com"),
            nonce: opt("dcd98b7102dd2f0e8b11d0f600bfb0c093"),
            uri: opt("sip:bob@biloxi.com"),
            qop: opt("auth"),
            nc: Some(1),
            cnonce: opt("0a4f113b"),
            response: opt("6629fae49393a05397450978507c4ef1"),
            opaque: opt("5ccc069c403ebaf9f0171e9517f40e41"),
            ..DigestCredentials::default()
        };
        assert_eq!(
            String::from_utf8(c.to_header_value()).unwrap(),
            "Digest username=\"bob\", realm=\"biloxi.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"sip:bob@biloxi.com\", \
             qop=auth, nc=00000001, cnonce=\"0a4f113b\", \
             response=\"6629fae49393a05397450978507c4ef1\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""
        );

        let a = AuthenticationInfo {
            nextnonce: opt("47364c23432d2e131a5fb210812c"),
            qop: opt("auth"),
            rspauth: opt("6629fae4"),
            cnonce: opt("0a4f113b"),
            nc: Some(0xab),
            ..AuthenticationInfo::default()
        };
        assert_eq!(
            a.to_header_value(),
            b"nextnonce=\"47364c23432d2e131a5fb210812c\", qop=auth, rspauth=\"6629fae4\", \
              cnonce=\"0a4f113b\", nc=000000ab"
        );
    }

    #[test]
    fn builders_escape_what_they_quote() {
        let c = DigestCredentials {
            username: opt("a\"b\\c"),
            realm: opt("line\r\nX-Injected: 1"),
            algorithm: opt("not a token"),
            params: vec![
                Param {
                    name: b("charset"),
                    value: opt("UTF-8"),
                },
                Param {
                    name: b("x-note"),
                    value: opt("\"two words\""),
                },
                Param {
                    name: b("x-raw"),
                    value: opt("bare \"quote"),
                },
                Param {
                    name: b("bad name"),
                    value: opt("v"),
                },
                Param {
                    name: b("novalue"),
                    value: None,
                },
                // A field's own parameter in `params` is not written twice.
                Param {
                    name: b("Realm"),
                    value: opt("\"stale\""),
                },
            ],
            ..DigestCredentials::default()
        };
        let v = c.to_header_value();
        assert_eq!(
            String::from_utf8(v.clone()).unwrap(),
            "Digest username=\"a\\\"b\\\\c\", realm=\"lineX-Injected: 1\", \
             algorithm=\"not a token\", charset=UTF-8, x-note=\"two words\", \
             x-raw=\"bare \\\"quote\""
        );
        let back = digest_credentials(std::str::from_utf8(&v).unwrap());
        assert_eq!(back.username, c.username);
        assert_eq!(back.realm, opt("lineX-Injected: 1"));
        assert_eq!(back.algorithm, c.algorithm);
        assert_eq!(back.algorithm_kind(), Algorithm::Other);
    }

    #[test]
    fn round_trips() {
        let challenge = DigestChallenge {
            realm: opt("biloxi.com"),
            domain: opt("sip:biloxi.com sip:ss1.biloxi.com"),
            nonce: opt("n\"once\\"),
            opaque: opt(""),
            stale: true,
            algorithm: opt("SHA-512-256-sess"),
            qop: vec![b("auth"), b("auth-int")],
            userhash: true,
            params: vec![Param {
                name: b("charset"),
                value: opt("UTF-8"),
            }],
        };
        let back = digest_challenge(std::str::from_utf8(&challenge.to_header_value()).unwrap());
        assert_eq!(
            back.domain_uris().collect::<Vec<_>>(),
            vec![&b"sip:biloxi.com"[..], b"sip:ss1.biloxi.com"]
        );
        assert_eq!(
            DigestChallenge {
                params: challenge.params.clone(),
                ..back.clone()
            },
            challenge
        );
        assert_eq!(back.params.len(), 9);

        let credentials = DigestCredentials {
            username: opt("J\\\"R\""),
            realm: opt("biloxi.com"),
            nonce: opt("abc"),
            uri: opt("sips:bob@[2001:db8::1]:5061;transport=tcp"),
            response: opt("00ff"),
            algorithm: opt("MD5-sess"),
            cnonce: opt("c n"),
            opaque: opt("o"),
            qop: opt("auth-int"),
            nc: Some(u32::MAX),
            userhash: true,
            params: Vec::new(),
        };
        let back = digest_credentials(std::str::from_utf8(&credentials.to_header_value()).unwrap());
        assert_eq!(
            DigestCredentials {
                params: Vec::new(),
                ..back.clone()
            },
            credentials
        );
        assert_eq!(back.params.len(), 11);

        let info = AuthenticationInfo {
            nextnonce: opt("next"),
            qop: opt("auth"),
            rspauth: opt("beef"),
            cnonce: opt("c"),
            nc: Some(0),
            params: Vec::new(),
        };
        let back = AuthenticationInfo::parse(&Bytes::from(info.to_header_value())).unwrap();
        assert_eq!(
            AuthenticationInfo {
                params: Vec::new(),
                ..back
            },
            info
        );
    }

    /// A tiny deterministic generator (xorshift64) so the test needs no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Parses `v` three ways; whatever parses must serialize into a value that parses
    /// to the same fields, and serializing that again must be a fixed point.
    fn check_total(v: &Bytes) {
        if let Ok(Credentials::Digest(c)) = Credentials::parse(v) {
            let out = c.to_header_value();
            let Ok(Credentials::Digest(d)) = Credentials::parse(&Bytes::from(out.clone())) else {
                panic!("{v:?} -> {out:?} did not parse back");
            };
            assert_eq!(
                (&c.username.is_some(), c.nc, c.userhash),
                (&d.username.is_some(), d.nc, d.userhash)
            );
            assert_eq!(d.to_header_value(), out, "{v:?}");
        }
        if let Ok(Challenge::Digest(c)) = Challenge::parse(v) {
            let out = c.to_header_value();
            let Ok(Challenge::Digest(d)) = Challenge::parse(&Bytes::from(out.clone())) else {
                panic!("{v:?} -> {out:?} did not parse back");
            };
            assert_eq!((&c.qop, c.stale, c.userhash), (&d.qop, d.stale, d.userhash));
            assert_eq!(d.to_header_value(), out, "{v:?}");
        }
        if let Ok(a) = AuthenticationInfo::parse(v) {
            let out = a.to_header_value();
            let Ok(d) = AuthenticationInfo::parse(&Bytes::from(out.clone())) else {
                panic!("{v:?} -> {out:?} did not parse back");
            };
            assert_eq!(a.nc, d.nc);
            assert_eq!(d.to_header_value(), out, "{v:?}");
        }
    }

    #[test]
    fn random_input_never_panics() {
        const ALPHABET: &[u8] =
            b"Digest realm nonce qop auth-int nc username* \"\\,=,= \t\r\n0123456789abcdefF:@/;";
        let seeds = [
            "Digest username=\"bob\", realm=\"biloxi.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
             uri=\"sip:bob@biloxi.com\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", \
             response=\"6629fae49393a05397450978507c4ef1\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
            "Digest realm=\"atlanta.com\",\r\n domain=\"sip:boxesbybob.com\", qop=\"auth, auth-int\", \
             nonce=\"f84f1cec41e6cbe5aea9c8e88d359\", opaque=\"\", stale=FALSE, algorithm=MD5",
            "nextnonce=\"47364c23432d2e131a5fb210812c\", qop=auth, rspauth=\"a\\\"b\", nc=0000000a",
            "NoOneKnowsThisScheme opaque-data=here",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..6000 {
            let input: Vec<u8> = match round % 3 {
                // Bytes of any value.
                0 => (0..rng.below(96)).map(|_| rng.next() as u8).collect(),
                // Grammar-shaped noise.
                1 => (0..rng.below(160))
                    .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                    .collect(),
                // A valid header with a few bytes replaced, inserted or removed.
                _ => {
                    let mut v = seeds[rng.below(seeds.len())].as_bytes().to_vec();
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(v.len() + 1);
                        let byte = if rng.below(2) == 0 {
                            ALPHABET[rng.below(ALPHABET.len())]
                        } else {
                            rng.next() as u8
                        };
                        match rng.below(3) {
                            0 if at < v.len() => v[at] = byte,
                            1 => v.insert(at, byte),
                            _ if at < v.len() => {
                                v.remove(at);
                            }
                            _ => {}
                        }
                    }
                    v
                }
            };
            check_total(&Bytes::from(input));
        }
    }
}
