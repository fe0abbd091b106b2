//! The location service: the registrar's bindings (RFC 3261 §10.3, RFC 5626 §6).

use futures::future::BoxFuture;

use crate::error::StoreError;

/// One binding of an address of record to a contact, as the registrar accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The address of record, `user@domain` with the domain lower-cased.
    pub aor: String,
    /// The Contact URI as received.
    pub contact: String,
    /// The `+sip.instance` Contact parameter (RFC 5626 §4.1), as received.
    pub instance: Option<String>,
    /// The `reg-id` Contact parameter (RFC 5626 §4.2).
    pub reg_id: Option<u32>,
    /// The Contact's `q`, in thousandths (1000 = 1.0).
    pub q: u16,
    /// When the binding expires, Unix seconds.
    pub expires_at: i64,
    /// The Call-ID of the REGISTER that last refreshed it (RFC 3261 §10.3 step 7).
    pub call_id: String,
    /// The CSeq number of that REGISTER.
    pub cseq: u32,
    /// The Path header values of that REGISTER, in order (RFC 3327).
    pub path: Vec<String>,
    /// The transport it arrived on (`udp`, `tcp`, `tls`, `ws`, `wss`).
    pub transport: String,
    /// The peer's address, `ip:port`.
    pub source: String,
    /// The local address it arrived at, `ip:port`.
    pub local: String,
    /// The connection (flow) it arrived on, for connection-oriented transports; the
    /// identifier is meaningful on `node` only.
    pub connection: Option<u64>,
    /// The User-Agent header, if any.
    pub user_agent: Option<String>,
    /// The cluster node that holds the flow.
    pub node: String,
    /// When the binding was last written, Unix seconds.
    pub updated_at: i64,
}

/// What makes two bindings of one AOR the same binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingIdentity<'a> {
    /// No `+sip.instance`: the Contact URI (RFC 3261 §10.3 step 6).
    Contact(&'a str),
    /// `+sip.instance` present: the instance and reg-id (RFC 5626 §6; a binding with an
    /// instance and no reg-id is RFC 5627's case).
    Instance {
        /// The `+sip.instance` value.
        instance: &'a str,
        /// The `reg-id` value.
        reg_id: Option<u32>,
    },
}

impl Binding {
    /// The binding's identity within its AOR: an [`BindingOp::Upsert`] replaces the
    /// binding of the same AOR and identity.
    pub fn identity(&self) -> BindingIdentity<'_> {
        match &self.instance {
            Some(instance) => BindingIdentity::Instance {
                instance,
                reg_id: self.reg_id,
            },
            None => BindingIdentity::Contact(&self.contact),
        }
    }
}

/// One change to the bindings.
// Most ops of a REGISTER are upserts, so boxing the binding would add an allocation to
// nearly every op while saving space only in the rare removals.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindingOp {
    /// Adds the binding, or replaces the one with the same AOR and
    /// [`identity`](Binding::identity).
    Upsert(Binding),
    /// Removes every binding of `aor` whose Contact is `contact` (Expires: 0 for one
    /// contact).
    Remove {
        /// The address of record.
        aor: String,
        /// The Contact URI, exactly as stored.
        contact: String,
    },
    /// Removes every binding of `aor` (`Contact: *`, RFC 3261 §10.2.2).
    RemoveAll {
        /// The address of record.
        aor: String,
    },
}

/// The location service's storage.
pub trait Location: Send + Sync {
    /// Applies `ops`, in order and all or none. The future resolves once the change is
    /// durable: a REGISTER may be answered then.
    fn apply(&self, ops: Vec<BindingOp>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Every binding with `expires_at > now`, ordered by AOR, then q (highest first),
    /// then contact: what a node loads before it takes traffic.
    fn load_unexpired(&self, now: i64) -> BoxFuture<'_, Result<Vec<Binding>, StoreError>>;

    /// Deletes every binding with `expires_at <= now`; returns how many.
    fn purge_expired(&self, now: i64) -> BoxFuture<'_, Result<u64, StoreError>>;
}

pub(crate) fn validate_op(op: &BindingOp) -> Result<(), StoreError> {
    let invalid = |field, reason| Err(StoreError::Invalid { field, reason });
    let aor = match op {
        BindingOp::Upsert(binding) => {
            if binding.contact.is_empty() {
                return invalid("contact", "empty");
            }
            if binding.instance.as_deref() == Some("") {
                return invalid("instance", "empty (omit it instead)");
            }
            &binding.aor
        }
        BindingOp::Remove { aor, contact } => {
            if contact.is_empty() {
                return invalid("contact", "empty");
            }
            aor
        }
        BindingOp::RemoveAll { aor } => aor,
    };
    if aor.is_empty() {
        return invalid("aor", "empty");
    }
    Ok(())
}
