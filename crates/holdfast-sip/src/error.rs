//! Errors, split by cause as rustls does, and the one mapping from an error to the
//! answer an element owes the peer.
//!
//! - [`Malformed`]: the peer's bytes do not follow the grammar (400, or drop for a
//!   response).
//! - [`LimitExceeded`]: the message is larger or more complex than [`Limits`] allow
//!   (513, or 400).
//! - [`Violation`]: well formed, but not a message an element may accept (400 naming
//!   the header, 416, 420, 483, 501, 505).
//! - [`FramingError`]: a byte stream cannot be cut into messages any more; the
//!   connection must close.
//!
//! [`Limits`]: crate::Limits

use std::borrow::Cow;

use bytes::Bytes;

use crate::limits::Limit;
use crate::uri::UriError;

/// Why a message did not parse or was refused by the validator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The bytes do not follow the SIP grammar.
    #[error("malformed message: {0}")]
    Malformed(#[from] Malformed),
    /// The message goes over a configured limit.
    #[error("{0}")]
    Limit(#[from] LimitExceeded),
    /// The message is well formed but an element must refuse it.
    #[error("{0}")]
    Violation(#[from] Violation),
}

/// The part of a message that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// Nothing but line breaks.
    #[error("empty message")]
    Empty,
    /// The request or status line is not `Method SP URI SP Version` or
    /// `Version SP Code SP Reason`.
    #[error("bad start line")]
    StartLine,
    /// The request method is not a token.
    #[error("bad method")]
    Method,
    /// The Request-URI does not parse.
    #[error("bad Request-URI: {0}")]
    RequestUri(UriError),
    /// The version is not `SIP/<digits>.<digits>`.
    #[error("bad SIP version")]
    Version,
    /// The status code is not three digits from 100 to 699.
    #[error("bad status code")]
    StatusCode,
    /// A header line has no colon or its name is not a token.
    #[error("bad header line")]
    HeaderLine,
    /// A line break that is neither the end of a header nor a fold.
    #[error("bad line folding")]
    Folding,
    /// The value of a header holdfast interprets does not follow its grammar.
    #[error("bad {0} header")]
    Header(&'static str),
    /// The headers end before the blank line that must close them.
    #[error("missing blank line after the headers")]
    Unterminated,
    /// Content-Length says more bytes than the datagram carries.
    #[error("Content-Length {declared} exceeds the {available} body bytes received")]
    Truncated {
        /// What Content-Length declared.
        declared: u64,
        /// The bytes present after the headers.
        available: usize,
    },
}

/// A limit of [`crate::Limits`] that the message exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{limit} limit of {max} exceeded")]
pub struct LimitExceeded {
    /// Which limit.
    pub limit: Limit,
    /// Its configured value.
    pub max: usize,
}

/// A well-formed message that an element must refuse (RFC 3261 §8.2, §16.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A mandatory header is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header that may appear once appears more than once.
    #[error("more than one {0} header")]
    DuplicateHeader(&'static str),
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMethod {
        /// The request method is not one holdfast knows (501 rather than 400).
        unknown_method: bool,
    },
    /// The SIP version is not 2.0.
    #[error("SIP version not supported")]
    Version,
    /// The Request-URI scheme is not one holdfast serves.
    #[error("unsupported URI scheme")]
    UriScheme,
    /// The Request-URI carries `?headers`, which must not be forwarded (RFC 4475 §3.1.2.11).
    #[error("Request-URI carries headers")]
    UriHeaders,
    /// Require / Proxy-Require list option tags holdfast does not support.
    #[error("unsupported extension")]
    BadExtension(Vec<Bytes>),
    /// Max-Forwards reached zero.
    #[error("too many hops")]
    TooManyHops,
    /// The top Via branch is the bare magic cookie.
    #[error("bad Via branch")]
    Branch,
    /// A response whose Via would send it to a broadcast or unspecified address.
    #[error("response routed to a broadcast address")]
    BroadcastVia,
    /// An endpoint was offered a body type it does not accept.
    #[error("unsupported media type")]
    MediaType,
    /// An endpoint cannot answer in a type the request accepts.
    #[error("not acceptable")]
    NotAcceptable,
}

/// A stream can no longer be cut into messages: the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// A message over a stream has no Content-Length (RFC 3261 §18.3).
    #[error("missing Content-Length on a stream")]
    MissingContentLength,
    /// Content-Length is not a non-negative number that fits the limits.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Content-Length appears with different values.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// The headers, body or keepalive run went over a limit before the message ended.
    #[error("{0}")]
    Limit(LimitExceeded),
    /// The stream already failed; nothing more can be read from it.
    #[error("stream already failed")]
    Failed,
}

/// What an element owes the sender of a message it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send this response.
    Respond {
        /// The status code.
        status: u16,
        /// The reason phrase (names the bad header where there is one).
        reason: Cow<'static, str>,
        /// Option tags for an `Unsupported` header (420 only).
        unsupported: Vec<Bytes>,
    },
    /// Send nothing: the message was a response, or cannot be answered.
    Drop,
}

impl Answer {
    fn respond(status: u16, reason: impl Into<Cow<'static, str>>) -> Answer {
        Answer::Respond {
            status,
            reason: reason.into(),
            unsupported: Vec::new(),
        }
    }

    /// The status code, if this is a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            Answer::Respond { status, .. } => Some(*status),
            Answer::Drop => None,
        }
    }
}

impl ParseError {
    /// The one mapping from an error to the answer RFC 3261 expects. A bad response is
    /// always dropped (§18.1.2); a bad request gets the status of its cause.
    pub fn answer(&self, is_request: bool) -> Answer {
        if !is_request {
            return Answer::Drop;
        }
        match self {
            ParseError::Malformed(m) => Answer::respond(400, malformed_reason(m)),
            ParseError::Limit(l) => match l.limit {
                Limit::MessageSize | Limit::BodySize | Limit::HeadSize => {
                    Answer::respond(513, "Message Too Large")
                }
                _ => Answer::respond(400, format!("Bad Request ({} limit)", l.limit)),
            },
            ParseError::Violation(v) => violation_answer(v),
        }
    }
}

fn malformed_reason(m: &Malformed) -> Cow<'static, str> {
    match m {
        Malformed::Header(name) => format!("Bad {name}").into(),
        Malformed::RequestUri(_) => "Bad Request-URI".into(),
        Malformed::Truncated { .. } => "Bad Content-Length".into(),
        Malformed::Version => "Bad SIP Version".into(),
        Malformed::Method => "Bad Method".into(),
        Malformed::Folding | Malformed::HeaderLine => "Bad Header Line".into(),
        _ => "Bad Request".into(),
    }
}

fn violation_answer(v: &Violation) -> Answer {
    match v {
        Violation::MissingHeader(name) => Answer::respond(400, format!("Missing {name}")),
        Violation::DuplicateHeader(name) => Answer::respond(400, format!("Duplicate {name}")),
        Violation::CSeqMethod {
            unknown_method: true,
        } => Answer::respond(501, "Not Implemented"),
        Violation::CSeqMethod {
            unknown_method: false,
        } => Answer::respond(400, "CSeq Method Mismatch"),
        Violation::Version => Answer::respond(505, "Version Not Supported"),
        Violation::UriScheme => Answer::respond(416, "Unsupported URI Scheme"),
        Violation::UriHeaders => Answer::respond(400, "Bad Request-URI"),
        Violation::BadExtension(tags) => Answer::Respond {
            status: 420,
            reason: "Bad Extension".into(),
            unsupported: tags.clone(),
        },
        Violation::TooManyHops => Answer::respond(483, "Too Many Hops"),
        Violation::Branch => Answer::respond(400, "Bad Via Branch"),
        Violation::BroadcastVia => Answer::Drop,
        Violation::MediaType => Answer::respond(415, "Unsupported Media Type"),
        Violation::NotAcceptable => Answer::respond(406, "Not Acceptable"),
    }
}

impl FramingError {
    /// What to send before closing, when the head of the message can be answered.
    pub fn answer(&self) -> Answer {
        match self {
            FramingError::MissingContentLength => Answer::respond(400, "Missing Content-Length"),
            FramingError::InvalidContentLength | FramingError::ConflictingContentLength => {
                Answer::respond(400, "Bad Content-Length")
            }
            FramingError::Limit(_) => Answer::respond(513, "Message Too Large"),
            FramingError::Failed => Answer::Drop,
        }
    }
}
