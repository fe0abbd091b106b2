//! holdfast-sip: the SIP wire layer.
//!
//! Every byte a peer sends reaches holdfast through this crate. It turns bytes into a
//! [`Message`] and back:
//!
//! - [`parse_datagram`] parses one UDP datagram; [`StreamFramer`] cuts a TCP, TLS or
//!   WebSocket byte stream into messages with the same rules (RFC 3261 §7, §18.3, §25;
//!   RFC 5626 §4.4.1 keepalives).
//! - The message keeps every header as a zero-copy slice of the input, in order. The
//!   value of every core header is checked against its grammar while the message is
//!   parsed, without allocating, so a message that parses has a typed value for each
//!   ([`Via`], [`NameAddr`], [`CSeq`], [`Contact`], the digest headers of [`auth`], …);
//!   the typed value is built from the header's bytes the first time it is asked for,
//!   by the same scanner that checked it, and kept.
//! - [`Message::to_bytes`] gives back the input byte for byte when nothing was changed;
//!   the proxy edits (push / pop Via, pop Route, add Record-Route, replace the
//!   Request-URI, decrement Max-Forwards, add a header) touch only what they change.
//! - [`validate`] says what an element must answer to a parsed message (400 naming the
//!   bad header, 416, 420, 483, 505, 513, or drop), and [`ParseError::answer`] maps
//!   every parse error to its status.
//!
//! Invariants: the parser is total (every input gives a message or a typed error, never
//! a panic), every [`Limits`] bound is checked before the memory it guards is
//! allocated, and all arithmetic on peer-supplied numbers is checked. The crate never
//! does I/O, reads the clock, spawns, or logs.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod auth;
mod error;
mod framer;
mod grammar;
mod header;
mod limits;
mod message;
mod name_addr;
mod parser;
mod salvage;
pub mod uri;
mod validate;
mod via;

pub use error::{Answer, FramingError, LimitExceeded, Malformed, ParseError, Violation};
pub use framer::{Framed, StreamFramer};
pub use grammar::{unquote, Param};
pub use header::{CSeq, Header, HeaderName, MediaType, Method, Value};
pub use limits::{Limit, Limits};
pub use message::{Message, RequestLine, StartLine, StatusLine};
pub use name_addr::{Contact, ContactList, NameAddr};
pub use parser::parse_datagram;
pub use salvage::{response_to_unparsable, SalvagedResponse};
pub use uri::{Host, Uri, UriError};
pub use validate::{validate, Role, ValidationPolicy};
pub use via::{Transport, Via, MAGIC_COOKIE};
