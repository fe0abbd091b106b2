//! Ingress limits for the wire layer.
//!
//! Every limit is checked before the memory it guards is allocated, so a hostile
//! peer can make the parser do at most `O(max_message_size)` work and allocation per
//! message.

/// Bounds the parser and the stream framer enforce. The defaults are safe for a
/// public-facing element; raise them only for trusted peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole message (start line, headers and body), in bytes.
    pub max_message_size: usize,
    /// Largest header section (start line and headers, up to the blank line).
    pub max_head_size: usize,
    /// Most header fields (lines, after unfolding) in one message.
    pub max_headers: usize,
    /// Longest single header field, including its continuation lines.
    pub max_header_line: usize,
    /// Most Via values in one message, across all Via fields.
    pub max_vias: usize,
    /// Most continuation (folded) lines in one message.
    pub max_folds: usize,
    /// Largest body, in bytes.
    pub max_body_size: usize,
    /// Most consecutive CRLF keepalives a stream may send before a message.
    pub max_keepalive_bytes: usize,
}

impl Limits {
    /// The defaults: the 64 KiB datagram ceiling of UDP, and header budgets well above
    /// what any real device sends (RFC 4475's longest message uses a tenth of them).
    pub const DEFAULT: Limits = Limits {
        max_message_size: 65_535,
        max_head_size: 32 * 1024,
        max_headers: 128,
        max_header_line: 8 * 1024,
        max_vias: 64,
        max_folds: 64,
        max_body_size: 32 * 1024,
        max_keepalive_bytes: 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which limit a message went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`Limits::max_message_size`]
    MessageSize,
    /// [`Limits::max_head_size`]
    HeadSize,
    /// [`Limits::max_headers`]
    Headers,
    /// [`Limits::max_header_line`]
    HeaderLine,
    /// [`Limits::max_vias`]
    Vias,
    /// [`Limits::max_folds`]
    Folds,
    /// [`Limits::max_body_size`]
    BodySize,
    /// [`Limits::max_keepalive_bytes`]
    Keepalive,
}

impl Limit {
    /// A short name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MessageSize => "message_size",
            Limit::HeadSize => "head_size",
            Limit::Headers => "headers",
            Limit::HeaderLine => "header_line",
            Limit::Vias => "vias",
            Limit::Folds => "folds",
            Limit::BodySize => "body_size",
            Limit::Keepalive => "keepalive",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
