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

/// Bytes a quoted string holds as they are: anything but the quote, the backslash and
/// line breaks.
const fn qdtext_plain(b: u8) -> bool {
    !matches!(b, b'"' | b'\\' | b'\r' | b'\n')
}

static TOKEN: [bool; 256] = byte_table!(token_char);
static QDTEXT: [bool; 256] = byte_table!(qdtext_plain);
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

/// True when `s` equals `lower`, a lower-case ASCII name, ignoring ASCII case: the
/// fast form of `eq_ignore_ascii_case` for comparing peer bytes with a known name.
#[inline(always)]
pub(crate) fn is_name(s: &[u8], lower: &[u8]) -> bool {
    s.len() == lower.len()
        && s.iter()
            .zip(lower)
            .all(|(&b, &c)| b == c || (c.is_ascii_lowercase() && b | 0x20 == c))
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

/// Where the run of bytes a quoted string holds as they are (see [`QDTEXT`]) that
/// starts at `pos` ends. Eight bytes at a time while they last: a byte equal to one of
/// the four stops is found with the zero-byte test of `x ^ stop`, whose lowest flagged
/// byte is exact.
#[inline]
fn qdtext_end(src: &[u8], mut pos: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let has = |x: u64, b: u8| {
        let y = x ^ LO.wrapping_mul(u64::from(b));
        y.wrapping_sub(LO) & !y & HI
    };
    while let Some(chunk) = src
        .get(pos..pos.saturating_add(8))
        .and_then(|c| <[u8; 8]>::try_from(c).ok())
    {
        let x = u64::from_le_bytes(chunk);
        let stops = has(x, b'"') | has(x, b'\\') | has(x, b'\r') | has(x, b'\n');
        if stops != 0 {
            // trailing_zeros of a non-zero u64 is at most 63, so this is at most 7.
            return pos.wrapping_add((stops.trailing_zeros() / 8) as usize);
        }
        pos = pos.wrapping_add(8);
    }
    while let Some(&b) = src.get(pos) {
        if !in_table(&QDTEXT, b) {
            break;
        }
        pos = pos.wrapping_add(1);
    }
    pos
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

/// A byte range `(start, end)` of the value a [`Scanner`] reads.
pub(crate) type Span = (usize, usize);

/// A `generic-param` found by a [`Scanner`]: where its name and value are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParamSpan {
    pub(crate) name: Span,
    pub(crate) value: Option<Span>,
}

impl ParamSpan {
    /// The parameter as slices of `src`, the buffer the scanner read.
    pub(crate) fn to_param(self, src: &Bytes) -> Param {
        Param {
            name: slice(src, self.name),
            value: self.value.map(|v| slice(src, v)),
        }
    }
}

/// `src[start..end]` as a `Bytes` sharing `src`'s buffer (empty if out of range).
#[inline]
pub(crate) fn slice(src: &Bytes, (start, end): Span) -> Bytes {
    if start < end && end <= src.len() {
        src.slice(start..end)
    } else {
        Bytes::new()
    }
}

/// A cursor over a header value. It only reads: positions are byte offsets into
/// `src`, and what it finds comes out as [`Span`]s, so checking a value allocates
/// nothing and building a typed value slices the `Bytes` the value came from.
#[derive(Debug, Clone)]
pub(crate) struct Scanner<'a> {
    src: &'a [u8],
    pos: usize,
}

// Positions only move forward over bytes that exist (`pos < src.len()` before every
// step), so `pos + 1` cannot overflow: the steps use `wrapping_add`, which keeps the
// hot loops free of overflow branches.
impl<'a> Scanner<'a> {
    #[inline]
    pub(crate) fn new(src: &'a [u8]) -> Self {
        Scanner { src, pos: 0 }
    }

    /// A scanner positioned at `pos`.
    #[inline]
    pub(crate) fn at(src: &'a [u8], pos: usize) -> Self {
        Scanner {
            src,
            pos: pos.min(src.len()),
        }
    }

    #[inline(always)]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos.min(self.src.len());
    }

    #[inline(always)]
    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    #[inline(always)]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    #[inline(always)]
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.src.get(self.pos..).unwrap_or_default()
    }

    #[inline(always)]
    pub(crate) fn bump(&mut self) {
        if self.pos < self.src.len() {
            self.pos = self.pos.wrapping_add(1);
        }
    }

    /// Consumes `b` if it is next.
    #[inline(always)]
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos = self.pos.wrapping_add(1);
            true
        } else {
            false
        }
    }

    /// Skips LWS, returning whether any was skipped.
    #[inline(always)]
    pub(crate) fn skip_lws(&mut self) -> bool {
        let start = self.pos;
        let mut pos = start;
        while let Some(&b) = self.src.get(pos) {
            if !is_lws(b) {
                break;
            }
            pos = pos.wrapping_add(1);
        }
        self.pos = pos;
        pos != start
    }

    /// `SWS c SWS`: consumes separator `c` with optional LWS around it.
    #[inline(always)]
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
    #[inline(always)]
    pub(crate) fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> Span {
        // A local position, so that the loop keeps it in a register.
        let start = self.pos;
        let mut pos = start;
        while let Some(&b) = self.src.get(pos) {
            if !pred(b) {
                break;
            }
            pos = pos.wrapping_add(1);
        }
        self.pos = pos;
        (start, pos)
    }

    #[inline(always)]
    pub(crate) fn bytes(&self, (start, end): Span) -> &'a [u8] {
        self.src.get(start..end).unwrap_or_default()
    }

    /// A non-empty token.
    #[inline(always)]
    pub(crate) fn token(&mut self) -> Option<Span> {
        let r = self.take_while(is_token);
        (r.0 != r.1).then_some(r)
    }

    /// A quoted string (RFC 3261 §25.1 `quoted-string`), with its quotes and escapes as
    /// written. Fails on an unterminated string or a bare CR/LF that is not a fold.
    pub(crate) fn quoted_string(&mut self) -> Option<Span> {
        self.quoted_string_inline()
    }

    /// [`Scanner::quoted_string`], inlined into a caller that reads many of them.
    #[inline(always)]
    pub(crate) fn quoted_string_inline(&mut self) -> Option<Span> {
        let start = self.pos;
        if !self.eat(b'"') {
            return None;
        }
        let mut folds = false;
        loop {
            self.pos = qdtext_end(self.src, self.pos);
            match self.peek() {
                Some(b'"') => {
                    self.bump();
                    if folds && !folds_only(self.bytes((start, self.pos))) {
                        break;
                    }
                    return Some((start, self.pos));
                }
                // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                Some(b'\\') => {
                    self.bump();
                    match self.peek() {
                        Some(c) if c <= 0x7f && c != b'\r' && c != b'\n' => self.bump(),
                        _ => break,
                    }
                }
                Some(_) => {
                    // CR or LF: allowed only as part of a fold, checked at the end.
                    folds = true;
                    self.bump();
                }
                None => break,
            }
        }
        self.pos = start;
        None
    }

    /// A `gen-value`: token, host or quoted string.
    #[inline]
    pub(crate) fn gen_value(&mut self) -> Option<Span> {
        if self.peek() == Some(b'"') {
            return self.quoted_string();
        }
        let r = self.take_while(is_value_char);
        (r.0 != r.1).then_some(r)
    }

    /// Reads `*( SEMI generic-param )`, handing each to `f` (which may refuse it).
    /// Stops before anything that is not a `;` (with optional LWS before it).
    #[inline]
    pub(crate) fn params(
        &mut self,
        mut f: impl FnMut(&Self, ParamSpan) -> Option<()>,
    ) -> Option<()> {
        while self.eat_sep(b';') {
            let p = self.param()?;
            f(self, p)?;
        }
        Some(())
    }

    /// `generic-param = token [ EQUAL gen-value ]`
    #[inline]
    pub(crate) fn param(&mut self) -> Option<ParamSpan> {
        let name = self.token()?;
        let value = if self.eat_sep(b'=') {
            Some(self.gen_value()?)
        } else {
            None
        };
        Some(ParamSpan { name, value })
    }

    /// Ends a list element: LWS then `,` (more follow) or the end of the value.
    /// Returns `Some(true)` when another element follows, `Some(false)` at the end.
    #[inline]
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

/// Collects the `*( SEMI generic-param )` that start at `pos` in `src` into `Param`s;
/// `src` must be the buffer they were checked in, so this cannot fail.
pub(crate) fn collect_params(src: &Bytes, pos: usize) -> Vec<Param> {
    let mut out = Vec::new();
    let mut s = Scanner::at(src, pos);
    let _ = s.params(|_, p| {
        out.push(p.to_param(src));
        Some(())
    });
    out
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
        let s = Scanner::new(&b);
        let q = s.bytes(s.clone().quoted_string().unwrap());
        assert_eq!(q, b"\"J Rosenberg \\\\\\\"\"");
        assert_eq!(&unquote(q)[..], b"J Rosenberg \\\"");
        let b = Bytes::from_static(b"\"unterminated");
        assert!(Scanner::new(&b).quoted_string().is_none());
    }

    #[test]
    fn params_with_lws() {
        let b = Bytes::from_static(b" ;   tag    = 1918181833n ; lr");
        let ps = collect_params(&b, 0);
        let mut s = Scanner::new(&b);
        s.params(|_, _| Some(())).unwrap();
        assert!(s.at_end());
        assert_eq!(&ps[0].name[..], b"tag");
        assert_eq!(ps[0].value.as_deref(), Some(&b"1918181833n"[..]));
        assert_eq!(&ps[1].name[..], b"lr");
        assert_eq!(ps[1].value, None);
    }
}
