//! RFC 3261 §25 character classes and the scanner every header parser shares.
//!
//! Header values reach these functions after the line splitter has checked that every
//! CR and LF inside them belongs to a fold (`CRLF 1*WSP`), so LWS here is simply any
//! run of SP, HTAB, CR and LF.

use bytes::Bytes;

/// Builds a 256-entry membership table from a `const fn(u8) -> bool`, at compile time.
macro_rules! byte_table {
    ($pred:expr) => {{
        let mut t = [false; 256];
        let mut i = 0usize;
        // Const evaluation over 0..256: in bounds, lossless, no overflow.
        #[allow(
            clippy::indexing_slicing,
            clippy::arithmetic_side_effects,
            clippy::cast_possible_truncation
        )]
        while i < 256 {
            t[i] = $pred(i as u8);
            i += 1;
        }
        t
    }};
}
pub(crate) use byte_table;

/// Looks a byte up in a table built by [`byte_table!`].
#[inline(always)]
pub(crate) fn in_table(t: &[bool; 256], b: u8) -> bool {
    // A u8 index is always below 256; `get` compiles to a plain load.
    t.get(usize::from(b)).copied().unwrap_or(false)
}

const fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

const fn value_char(b: u8) -> bool {
    token_char(b) || matches!(b, b':' | b'[' | b']')
}

static TOKEN: [bool; 256] = byte_table!(token_char);
static VALUE: [bool; 256] = byte_table!(value_char);

/// `token` characters (RFC 3261 §25.1).
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    in_table(&TOKEN, b)
}

/// Characters allowed in a `gen-value` that is not quoted: token, or a host, which adds
/// the `:` and brackets of IPv6 references.
#[inline]
pub(crate) fn is_value_char(b: u8) -> bool {
    in_table(&VALUE, b)
}

/// Linear white space once folds are known to be well formed.
pub(crate) const fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// True when every byte is a token character and there is at least one.
pub(crate) fn is_token_str(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token(b))
}

/// Parses `1*DIGIT` into a `u64`, refusing overflow, signs and anything else.
pub(crate) fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n
            .checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))?;
    }
    Some(n)
}

/// Parses `1*DIGIT` into a `u32`, refusing overflow.
pub(crate) fn parse_u32(digits: &[u8]) -> Option<u32> {
    parse_u64(digits).and_then(|n| u32::try_from(n).ok())
}

/// True when every CR and LF in `s` belongs to a fold (`CRLF 1*WSP`): a bare line
/// break is never part of a quoted string (RFC 3261 §25.1 `qdtext`).
pub(crate) fn folds_only(s: &[u8]) -> bool {
    let mut i = 0usize;
    while let Some(p) = memchr::memchr2(b'\r', b'\n', s.get(i..).unwrap_or_default()) {
        let at = i.saturating_add(p);
        let ok = s.get(at) == Some(&b'\r')
            && s.get(at.saturating_add(1)) == Some(&b'\n')
            && matches!(s.get(at.saturating_add(2)), Some(b' ' | b'\t'));
        if !ok {
            return false;
        }
        i = at.saturating_add(2);
    }
    true
}

/// Strips leading and trailing LWS.
pub(crate) fn trim_lws(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| !is_lws(b))
        .map_or(start, |p| p.saturating_add(1));
    s.get(start..end).unwrap_or_default()
}

/// A cursor over a header value. Positions are byte offsets into `src`; slices come out
/// as `Bytes` that share `src`'s buffer.
#[derive(Debug, Clone)]
pub(crate) struct Scanner<'a> {
    src: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(src: &'a Bytes) -> Self {
        Scanner {
            src,
            pos: 0,
            end: src.len(),
        }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos.min(self.end);
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        if self.pos < self.end {
            self.src.get(self.pos).copied()
        } else {
            None
        }
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.src.get(self.pos..self.end).unwrap_or_default()
    }

    pub(crate) fn bump(&mut self) {
        if self.pos < self.end {
            self.pos = self.pos.saturating_add(1);
        }
    }

    /// Consumes `b` if it is next.
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// Skips LWS, returning whether any was skipped.
    #[inline]
    pub(crate) fn skip_lws(&mut self) -> bool {
        let n = self.rest().iter().take_while(|&&b| is_lws(b)).count();
        self.pos = self.pos.saturating_add(n);
        n != 0
    }

    /// `SWS c SWS`: consumes separator `c` with optional LWS around it.
    pub(crate) fn eat_sep(&mut self, c: u8) -> bool {
        let save = self.pos;
        self.skip_lws();
        if self.eat(c) {
            self.skip_lws();
            true
        } else {
            self.pos = save;
            false
        }
    }

    /// Consumes a run of bytes matching `pred`; returns its range (possibly empty).
    #[inline]
    pub(crate) fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> (usize, usize) {
        let start = self.pos;
        let n = self.rest().iter().take_while(|&&b| pred(b)).count();
        self.pos = start.saturating_add(n);
        (start, self.pos)
    }

    pub(crate) fn slice(&self, (start, end): (usize, usize)) -> Bytes {
        if start <= end && end <= self.src.len() {
            self.src.slice(start..end)
        } else {
            Bytes::new()
        }
    }

    pub(crate) fn bytes(&self, (start, end): (usize, usize)) -> &'a [u8] {
        self.src.get(start..end).unwrap_or_default()
    }

    /// A non-empty token.
    pub(crate) fn token(&mut self) -> Option<Bytes> {
        let r = self.take_while(is_token);
        (r.0 != r.1).then(|| self.slice(r))
    }

    /// A quoted string (RFC 3261 §25.1 `quoted-string`), returned with its quotes and
    /// escapes as written. Fails on an unterminated string or a bare CR/LF that is not a
    /// fold.
    pub(crate) fn quoted_string(&mut self) -> Option<Bytes> {
        let start = self.pos;
        if !self.eat(b'"') {
            return None;
        }
        loop {
            let Some(i) = memchr::memchr2(b'"', b'\\', self.rest()) else {
                self.pos = start;
                return None;
            };
            self.pos = self.pos.saturating_add(i);
            if self.eat(b'"') {
                let text = self.bytes((start, self.pos));
                if !folds_only(text) {
                    self.pos = start;
                    return None;
                }
                return Some(self.slice((start, self.pos)));
            }
            self.bump();
            // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
            match self.peek() {
                Some(c) if c <= 0x7f && c != b'\r' && c != b'\n' => self.bump(),
                _ => {
                    self.pos = start;
                    return None;
                }
            }
        }
    }

    /// A `gen-value`: token, host or quoted string.
    pub(crate) fn gen_value(&mut self) -> Option<Bytes> {
        if self.peek() == Some(b'"') {
            return self.quoted_string();
        }
        let r = self.take_while(is_value_char);
        (r.0 != r.1).then(|| self.slice(r))
    }

    /// Parses `*( SEMI generic-param )` into `params`. Stops before anything that is
    /// not a `;` (with optional LWS before it).
    pub(crate) fn params(&mut self, params: &mut Vec<Param>) -> Option<()> {
        while self.eat_sep(b';') {
            params.push(self.param()?);
        }
        Some(())
    }

    /// `generic-param = token [ EQUAL gen-value ]`
    pub(crate) fn param(&mut self) -> Option<Param> {
        let name = self.token()?;
        let value = if self.eat_sep(b'=') {
            Some(self.gen_value()?)
        } else {
            None
        };
        Some(Param { name, value })
    }

    /// Ends a list element: LWS then `,` (more follow) or the end of the value.
    /// Returns `Some(true)` when another element follows, `Some(false)` at the end.
    pub(crate) fn list_sep(&mut self) -> Option<bool> {
        self.skip_lws();
        if self.at_end() {
            return Some(false);
        }
        if self.eat(b',') {
            self.skip_lws();
            // A trailing comma with nothing after it is malformed.
            return (!self.at_end()).then_some(true);
        }
        None
    }
}

/// A `generic-param`, as written (names keep their case; values keep quotes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Param {
    /// The parameter name.
    pub name: Bytes,
    /// The value, if the parameter has one; a quoted value keeps its quotes.
    pub value: Option<Bytes>,
}

/// Finds a parameter by case-insensitive name.
pub(crate) fn find_param<'p>(params: &'p [Param], name: &str) -> Option<&'p Param> {
    params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name.as_bytes()))
}

/// Removes the quotes and quoted-pair escapes of a `quoted-string`; a value that is not
/// quoted comes back unchanged.
pub fn unquote(v: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let inner = match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => return std::borrow::Cow::Borrowed(v),
    };
    if !inner.contains(&b'\\') {
        return std::borrow::Cow::Borrowed(inner);
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if escaped {
            out.push(b);
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else {
            out.push(b);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_checked() {
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"0068"), Some(68));
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_u32(b""), None);
    }

    #[test]
    fn quoted_strings() {
        let b = Bytes::from_static(b"\"J Rosenberg \\\\\\\"\" rest");
        let mut s = Scanner::new(&b);
        let q = s.quoted_string().unwrap();
        assert_eq!(&q[..], b"\"J Rosenberg \\\\\\\"\"");
        assert_eq!(&unquote(&q)[..], b"J Rosenberg \\\"");
        let b = Bytes::from_static(b"\"unterminated");
        assert!(Scanner::new(&b).quoted_string().is_none());
    }

    #[test]
    fn params_with_lws() {
        let b = Bytes::from_static(b" ;   tag    = 1918181833n ; lr");
        let mut s = Scanner::new(&b);
        let mut ps = Vec::new();
        s.params(&mut ps).unwrap();
        assert!(s.at_end());
        assert_eq!(&ps[0].name[..], b"tag");
        assert_eq!(ps[0].value.as_deref(), Some(&b"1918181833n"[..]));
        assert_eq!(&ps[1].name[..], b"lr");
        assert_eq!(ps[1].value, None);
    }
}
