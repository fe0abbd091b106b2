//! Transaction identity: which transaction a message belongs to (RFC 3261 §17.1.3,
//! §17.2.3).
//!
//! A key is the role (client or server), the method of the request that created the
//! transaction, and either
//!
//! - the top Via branch, when it starts with the magic cookie `z9hG4bK` (plus the
//!   sent-by for server transactions, since only our own branches are known unique), or
//! - for a server transaction whose request came from an RFC 2543 element (a branch
//!   without the cookie, or none), the fields §17.2.3 lists: Request-URI, From tag,
//!   Call-ID, CSeq number and top Via, plus the To tag for methods other than INVITE
//!   and ACK. The To tag of an ACK is compared by the transaction itself, against the
//!   response it sent.
//!
//! Each field is compared by its own rule: branch, tags and sent-by host
//! case-insensitively (tokens, §7.3.1), Call-ID byte for byte (§20.8), the
//! Request-URI by §19.1.4, the top Via by §20.42 (same sent-protocol, sent-by, and set
//! of parameters). [`Hash`] covers only fields compared exactly or case-insensitively,
//! so it agrees with [`Eq`].

use std::hash::{Hash, Hasher};

use bytes::Bytes;
use holdfast_sip::{Message, Method, Uri, Via, Violation};

/// Which side of a transaction this element plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The client transaction: sent the request (§17.1).
    Client,
    /// The server transaction: received the request (§17.2).
    Server,
}

/// The identity of a transaction. See the module documentation for what it holds and
/// how it compares.
#[derive(Debug, Clone)]
pub struct TransactionKey {
    role: Role,
    method: Method,
    id: KeyId,
}

#[derive(Debug, Clone)]
enum KeyId {
    /// An RFC 3261 branch (§17.1.3, §17.2.3 first paragraphs).
    Branch {
        branch: Bytes,
        /// Host and port of the top Via's sent-by; server transactions only.
        sent_by: Option<(Bytes, u16)>,
    },
    /// The RFC 2543 fallback (§17.2.3 last paragraphs).
    Rfc2543(Box<Rfc2543Key>),
}

#[derive(Debug, Clone)]
struct Rfc2543Key {
    request_uri: Uri,
    from_tag: Option<Bytes>,
    /// The request's To tag; `None` for INVITE and ACK, whose To tag the transaction
    /// checks itself.
    to_tag: Option<Bytes>,
    call_id: Bytes,
    cseq: u32,
    top_via: Via,
}

impl TransactionKey {
    /// The key of the server transaction `request` belongs to (§17.2.3). An ACK gets
    /// the key of its INVITE. Fails when the request lacks a header matching needs.
    pub fn server(request: &Message) -> Result<TransactionKey, Violation> {
        let method = match request.method() {
            Some(Method::Ack) => Method::Invite,
            Some(m) => m.clone(),
            None => return Err(Violation::MissingHeader("request line")),
        };
        TransactionKey::server_with_method(request, method)
    }

    /// The key of the INVITE server transaction that a CANCEL asks to cancel (§9.2:
    /// the CANCEL matched as if its method were INVITE).
    pub fn cancelled_invite(cancel: &Message) -> Result<TransactionKey, Violation> {
        TransactionKey::server_with_method(cancel, Method::Invite)
    }

    fn server_with_method(request: &Message, method: Method) -> Result<TransactionKey, Violation> {
        let via = request.top_via().ok_or(Violation::MissingHeader("Via"))?;
        let cseq = request.cseq().ok_or(Violation::MissingHeader("CSeq"))?;
        if via.is_rfc3261_branch() {
            if let Some(branch) = via.branch() {
                return Ok(TransactionKey {
                    role: Role::Server,
                    method,
                    id: KeyId::Branch {
                        branch: branch.clone(),
                        sent_by: Some((via.host_text.clone(), via.port_or_default())),
                    },
                });
            }
        }
        let request_uri = request
            .request_uri()
            .ok_or(Violation::MissingHeader("request line"))?
            .clone();
        let call_id = request
            .call_id()
            .ok_or(Violation::MissingHeader("Call-ID"))?
            .clone();
        let from = request.from().ok_or(Violation::MissingHeader("From"))?;
        let to = request.to().ok_or(Violation::MissingHeader("To"))?;
        let to_tag = match method {
            Method::Invite => None,
            _ => to.tag().cloned(),
        };
        Ok(TransactionKey {
            role: Role::Server,
            method,
            id: KeyId::Rfc2543(Box::new(Rfc2543Key {
                request_uri,
                from_tag: from.tag().cloned(),
                to_tag,
                call_id,
                cseq: cseq.seq,
                top_via: via.clone(),
            })),
        })
    }

    /// The key of the client transaction that sends `request`: its top Via branch,
    /// which must carry the magic cookie, and its method (§17.1.3). `None` when the
    /// branch is missing or lacks the cookie.
    pub fn client(request: &Message) -> Option<TransactionKey> {
        let method = request.method()?.clone();
        TransactionKey::client_with_method(request, method)
    }

    /// The key of the client transaction a response belongs to: top Via branch and
    /// CSeq method (§17.1.3). `None` when the response cannot belong to one.
    pub fn client_for_response(response: &Message) -> Option<TransactionKey> {
        let method = response.cseq()?.method.clone();
        if method == Method::Ack {
            return None;
        }
        TransactionKey::client_with_method(response, method)
    }

    fn client_with_method(message: &Message, method: Method) -> Option<TransactionKey> {
        let via = message.top_via()?;
        if !via.is_rfc3261_branch() {
            return None;
        }
        Some(TransactionKey {
            role: Role::Client,
            method,
            id: KeyId::Branch {
                branch: via.branch()?.clone(),
                sent_by: None,
            },
        })
    }

    /// Client or server.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The method of the request that created the transaction (INVITE for an ACK).
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The branch, for an RFC 3261 key.
    pub fn branch(&self) -> Option<&Bytes> {
        match &self.id {
            KeyId::Branch { branch, .. } => Some(branch),
            KeyId::Rfc2543(_) => None,
        }
    }

    /// True for a key built by the RFC 2543 fallback.
    pub fn is_rfc2543(&self) -> bool {
        matches!(self.id, KeyId::Rfc2543(_))
    }
}

fn eq_nocase_opt(a: &Option<Bytes>, b: &Option<Bytes>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (None, None) => true,
        _ => false,
    }
}

/// Hashes `bytes` lower-cased, a chunk at a time: a hasher call per byte costs more
/// than the rest of a lookup.
fn hash_nocase<H: Hasher>(bytes: &[u8], state: &mut H) {
    state.write_usize(bytes.len());
    let mut lower = [0u8; 64];
    for chunk in bytes.chunks(lower.len()) {
        let out = lower.get_mut(..chunk.len()).unwrap_or_default();
        for (o, b) in out.iter_mut().zip(chunk) {
            *o = b.to_ascii_lowercase();
        }
        state.write(out);
    }
}

fn hash_nocase_opt<H: Hasher>(bytes: &Option<Bytes>, state: &mut H) {
    match bytes {
        Some(b) => {
            state.write_u8(1);
            hash_nocase(b, state);
        }
        None => state.write_u8(0),
    }
}

/// Via equality of §20.42: same sent-protocol and sent-by, and the same set of
/// parameters with equal values.
fn via_equal(a: &Via, b: &Via) -> bool {
    a.protocol.eq_ignore_ascii_case(&b.protocol)
        && a.version == b.version
        && a.transport == b.transport
        && a.host_text.eq_ignore_ascii_case(&b.host_text)
        && a.port_or_default() == b.port_or_default()
        && a.params.len() == b.params.len()
        && a.params.iter().all(|p| {
            b.params
                .iter()
                .any(|q| p.name.eq_ignore_ascii_case(&q.name) && eq_nocase_opt(&p.value, &q.value))
        })
}

impl PartialEq for TransactionKey {
    fn eq(&self, other: &TransactionKey) -> bool {
        if self.role != other.role || self.method != other.method {
            return false;
        }
        match (&self.id, &other.id) {
            (
                KeyId::Branch { branch, sent_by },
                KeyId::Branch {
                    branch: b2,
                    sent_by: s2,
                },
            ) => {
                branch.eq_ignore_ascii_case(b2)
                    && match (sent_by, s2) {
                        (Some((h1, p1)), Some((h2, p2))) => h1.eq_ignore_ascii_case(h2) && p1 == p2,
                        (None, None) => true,
                        _ => false,
                    }
            }
            (KeyId::Rfc2543(a), KeyId::Rfc2543(b)) => {
                a.call_id == b.call_id
                    && a.cseq == b.cseq
                    && eq_nocase_opt(&a.from_tag, &b.from_tag)
                    && eq_nocase_opt(&a.to_tag, &b.to_tag)
                    && a.request_uri.equivalent(&b.request_uri)
                    && via_equal(&a.top_via, &b.top_via)
            }
            _ => false,
        }
    }
}

impl Eq for TransactionKey {}

impl Hash for TransactionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.role.hash(state);
        self.method.hash(state);
        match &self.id {
            KeyId::Branch { branch, sent_by } => {
                state.write_u8(0);
                hash_nocase(branch, state);
                if let Some((host, port)) = sent_by {
                    hash_nocase(host, state);
                    port.hash(state);
                }
            }
            KeyId::Rfc2543(k) => {
                state.write_u8(1);
                k.call_id.hash(state);
                k.cseq.hash(state);
                hash_nocase_opt(&k.from_tag, state);
                hash_nocase_opt(&k.to_tag, state);
            }
        }
    }
}

impl std::fmt::Display for TransactionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = match self.role {
            Role::Client => "client",
            Role::Server => "server",
        };
        write!(f, "{role} {} ", self.method)?;
        match &self.id {
            KeyId::Branch { branch, sent_by } => {
                f.write_str(&String::from_utf8_lossy(branch))?;
                if let Some((host, port)) = sent_by {
                    write!(f, " from {}:{port}", String::from_utf8_lossy(host))?;
                }
                Ok(())
            }
            KeyId::Rfc2543(k) => write!(
                f,
                "rfc2543 {} {} {}",
                String::from_utf8_lossy(&k.call_id),
                k.cseq,
                k.request_uri
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use holdfast_sip::{parse_datagram, Limits};

    use super::*;

    fn msg(text: &str) -> Message {
        parse_datagram(Bytes::from(text.replace('\n', "\r\n")), &Limits::DEFAULT).unwrap()
    }

    fn request(method: &str, via: &str, cseq: &str, uri: &str, to: &str) -> Message {
        msg(&format!(
            "{method} {uri} SIP/2.0\nVia: {via}\nFrom: <sip:a@example.com>;tag=ft\nTo: {to}\nCall-ID: c1@example.com\nCSeq: {cseq}\nMax-Forwards: 70\nContent-Length: 0\n\n"
        ))
    }

    const VIA: &str = "SIP/2.0/UDP host.example.com:5060;branch=z9hG4bKabc";

    #[test]
    fn rfc3261_server_keys() {
        let invite = request(
            "INVITE",
            VIA,
            "1 INVITE",
            "sip:b@example.com",
            "<sip:b@example.com>",
        );
        let ack = request(
            "ACK",
            VIA,
            "1 ACK",
            "sip:b@example.com",
            "<sip:b@example.com>;tag=x",
        );
        let cancel = request(
            "CANCEL",
            VIA,
            "1 CANCEL",
            "sip:b@example.com",
            "<sip:b@example.com>",
        );
        let k = TransactionKey::server(&invite).unwrap();
        assert!(!k.is_rfc2543());
        assert_eq!(k, TransactionKey::server(&ack).unwrap());
        assert_ne!(k, TransactionKey::server(&cancel).unwrap());
        assert_eq!(k, TransactionKey::cancelled_invite(&cancel).unwrap());
        // Branch and host compare case-insensitively; the default port is 5060.
        let other = request(
            "INVITE",
            "SIP/2.0/UDP HOST.example.com;branch=z9hG4bKABC",
            "1 INVITE",
            "sip:b@example.com",
            "<sip:b@example.com>",
        );
        let k2 = TransactionKey::server(&other).unwrap();
        assert_eq!(k, k2);
        let set: HashSet<_> = [k.clone(), k2].into_iter().collect();
        assert_eq!(set.len(), 1);
        // A different sent-by is a different transaction.
        let moved = request(
            "INVITE",
            "SIP/2.0/UDP host.example.com:5070;branch=z9hG4bKabc",
            "1 INVITE",
            "sip:b@example.com",
            "<sip:b@example.com>",
        );
        assert_ne!(k, TransactionKey::server(&moved).unwrap());
        // Server and client keys never meet.
        assert_ne!(k, TransactionKey::client(&invite).unwrap());
    }

    #[test]
    fn client_keys_follow_cseq_method() {
        let invite = request(
            "INVITE",
            VIA,
            "1 INVITE",
            "sip:b@example.com",
            "<sip:b@example.com>",
        );
        let cancel = request(
            "CANCEL",
            VIA,
            "1 CANCEL",
            "sip:b@example.com",
            "<sip:b@example.com>",
        );
        let ok_invite = invite.response(200, "OK", Some("t"));
        let ok_cancel = cancel.response(200, "OK", Some("t"));
        let ki = TransactionKey::client(&invite).unwrap();
        let kc = TransactionKey::client(&cancel).unwrap();
        assert_ne!(ki, kc);
        assert_eq!(TransactionKey::client_for_response(&ok_invite), Some(ki));
        assert_eq!(TransactionKey::client_for_response(&ok_cancel), Some(kc));
        let old = request(
            "INVITE",
            "SIP/2.0/UDP h;branch=1234",
            "1 INVITE",
            "sip:b@example.com",
            "<sip:b@example.com>",
        );
        assert_eq!(TransactionKey::client(&old), None);
    }

    #[test]
    fn rfc2543_keys() {
        let via = "SIP/2.0/UDP host.example.com;received=192.0.2.1";
        let invite = request(
            "INVITE",
            via,
            "7 INVITE",
            "sip:b@example.com",
            "<sip:b@example.com>",
        );
        let k = TransactionKey::server(&invite).unwrap();
        assert!(k.is_rfc2543());
        // Equivalent Request-URI (§19.1.4: host case) and Via (parameter case).
        let same = request(
            "INVITE",
            "SIP/2.0/UDP HOST.example.com;RECEIVED=192.0.2.1",
            "7 INVITE",
            "sip:b@EXAMPLE.com",
            "<sip:b@example.com>",
        );
        assert_eq!(k, TransactionKey::server(&same).unwrap());
        let ack = request(
            "ACK",
            via,
            "7 ACK",
            "sip:b@example.com",
            "<sip:b@example.com>;tag=x",
        );
        assert_eq!(k, TransactionKey::server(&ack).unwrap());
        for different in [
            request(
                "INVITE",
                via,
                "8 INVITE",
                "sip:b@example.com",
                "<sip:b@example.com>",
            ),
            request(
                "INVITE",
                via,
                "7 INVITE",
                "sip:c@example.com",
                "<sip:b@example.com>",
            ),
            request(
                "INVITE",
                "SIP/2.0/UDP other.example.com",
                "7 INVITE",
                "sip:b@example.com",
                "<sip:b@example.com>",
            ),
        ] {
            assert_ne!(k, TransactionKey::server(&different).unwrap());
        }
        // Non-INVITE keys include the To tag.
        let bye1 = request(
            "BYE",
            via,
            "9 BYE",
            "sip:b@example.com",
            "<sip:b@example.com>;tag=1",
        );
        let bye2 = request(
            "BYE",
            via,
            "9 BYE",
            "sip:b@example.com",
            "<sip:b@example.com>;tag=2",
        );
        assert_ne!(
            TransactionKey::server(&bye1).unwrap(),
            TransactionKey::server(&bye2).unwrap()
        );
    }
}
