//! The proxy in the shell: deciding where a request goes, before the sans-IO proxy
//! core ([`holdfast_core::proxy`]) forwards it.
//!
//! An out-of-dialog request (INVITE, MESSAGE, SUBSCRIBE, REFER …, with no To tag
//! whatever its Route) is *admitted* before the proxy core takes it, because it may need the
//! directory:
//!
//! 1. From a local user (the From domain is one holdfast serves): proxy
//!    authentication (407, RFC 3261 §22.3) with the registrar's digest logic, its
//!    identical answers for every failure and its ban rules; the authenticated user
//!    must be the From user, and the credentials go no further.
//! 2. To a domain holdfast does not serve: 403, there being no trunks (no open
//!    relay). Nothing is ever resolved or sent to a host a request names.
//! 3. To an unknown user: 404. To a user with no binding: 480.
//! 4. Otherwise the targets are the AoR's bindings, each reached over the flow it
//!    registered from (RFC 5626 §5.3), with its Path as Route.
//!
//! Dialog-creating requests are record-routed with flow tokens
//! ([`holdfast_core::proxy::route`]): one Record-Route when both sides use the same
//! socket, two when the call crosses transports or sockets (RFC 5658). An in-dialog
//! request comes back with those Routes; the flow they name is where it goes
//! ([`resolve_in_dialog`]), on the core shard, without the directory.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use holdfast_core::proxy::route::{self, FlowTokens, FLOW_SEPARATOR};
use holdfast_core::proxy::Target;
use holdfast_core::registrar::Binding;
use holdfast_core::{Peer as CorePeer, TransactionKey, Transport};
use holdfast_sip::auth::Credentials;
use holdfast_sip::{Header, HeaderName, Message, Method, NameAddr, Uri, Value, Via};
use holdfast_store::{Directory, SqliteStore};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::calls::CallStart;
use crate::core::{new_tag, to_core};
use crate::registrar::Registrar;
use crate::shared::{Peer, Shared};

/// What admission decided, for its core shard.
#[derive(Debug)]
pub enum Admission {
    /// Forward the request to these targets.
    Forward {
        key: TransactionKey,
        request: Message,
        targets: Vec<Target>,
        call: Option<CallStart>,
    },
    /// Answer the request with this response.
    Answer {
        key: TransactionKey,
        response: Message,
        /// A call attempt refused after authentication gets a record too.
        call: Option<CallStart>,
    },
}

/// The domains holdfast serves, re-read from the directory at most every two seconds.
pub struct Domains {
    store: Arc<SqliteStore>,
    cache: Mutex<(Option<Instant>, Arc<HashSet<String>>)>,
}

impl std::fmt::Debug for Domains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domains").finish_non_exhaustive()
    }
}

const DOMAIN_TTL: Duration = Duration::from_secs(2);

impl Domains {
    pub fn new(store: Arc<SqliteStore>) -> Domains {
        Domains {
            store,
            cache: Mutex::new((None, Arc::new(HashSet::new()))),
        }
    }

    /// Whether `domain` is served, when the cache is fresh.
    pub fn cached(&self, domain: &str) -> Option<bool> {
        self.cached_for(domain, Duration::ZERO)
    }

    /// Whether `domain` is served, when the cache stays fresh for `margin` at least.
    pub fn cached_for(&self, domain: &str, margin: Duration) -> Option<bool> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (at, set) = &*cache;
        at.is_some_and(|t| t.elapsed() < DOMAIN_TTL.saturating_sub(margin))
            .then(|| set.contains(&domain.to_ascii_lowercase()))
    }

    pub async fn serves(&self, domain: &str) -> bool {
        let domain = domain.to_ascii_lowercase();
        let (at, set) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // A list near its end is read again, so that it is still fresh when the caller
        // goes on to decide from the cache.
        if at
            .is_some_and(|t| t.elapsed() < DOMAIN_TTL.saturating_sub(crate::registrar::WARM_MARGIN))
        {
            return set.contains(&domain);
        }
        let fresh: HashSet<String> = match self.store.list_domains().await {
            Ok(list) => list.into_iter().map(|d| d.name).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "domain list unavailable");
                return set.contains(&domain);
            }
        };
        let found = fresh.contains(&domain);
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) =
            (Some(Instant::now()), Arc::new(fresh));
        found
    }
}

/// `user@host` of a SIP or SIPS URI, the host lower-cased.
pub fn aor_of_uri(uri: &Uri) -> Option<(String, String)> {
    let sip = uri.as_sip()?;
    let user = sip.user_unescaped()?;
    let user = String::from_utf8_lossy(&user).into_owned();
    let host = String::from_utf8_lossy(&sip.host_text).to_ascii_lowercase();
    Some((user, host))
}

/// Methods whose out-of-dialog request makes a dialog, and so is record-routed.
fn makes_dialog(method: &Method) -> bool {
    matches!(
        method,
        Method::Invite | Method::Subscribe | Method::Refer | Method::Notify
    ) || method.as_bytes().eq_ignore_ascii_case(b"SUBSCRIBE")
}

/// The flow of a binding as the transaction layer's peer.
fn binding_peer(b: &Binding) -> CorePeer {
    CorePeer {
        transport: b.flow.transport,
        addr: b.flow.remote,
        connection: b.flow.connection,
        local: b.flow.local,
    }
}

/// holdfast's socket toward a flow: its local address, or any UDP socket.
fn local_of(shared: &Shared, peer: &CorePeer) -> SocketAddr {
    peer.local
        .or_else(|| shared.any_udp_local(peer.addr.is_ipv6()))
        .unwrap_or(peer.addr)
}

/// Record-Route values (top first) for a dialog between `caller` and `callee`.
pub fn record_routes(
    shared: &Shared,
    tokens: &FlowTokens,
    caller: &CorePeer,
    callee: &CorePeer,
) -> Vec<String> {
    let a = tokens.encode(caller);
    let b = tokens.encode(callee);
    let (la, lb) = (local_of(shared, caller), local_of(shared, callee));
    if caller.transport == callee.transport && la == lb {
        vec![route::record_route(
            la,
            caller.transport,
            &format!("{a}{FLOW_SEPARATOR}{b}"),
        )]
    } else {
        // RFC 5658: the top one faces the callee, the other the caller.
        vec![
            route::record_route(lb, callee.transport, &b),
            route::record_route(la, caller.transport, &a),
        ]
    }
}

/// A target for a binding, reached over its flow.
fn target_for(
    shared: &Shared,
    tokens: &FlowTokens,
    binding: &Binding,
    caller: &CorePeer,
    record: bool,
) -> Option<Target> {
    let uri = binding.uri()?;
    let peer = binding_peer(binding);
    Some(Target {
        uri,
        record_route: if record {
            record_routes(shared, tokens, caller, &peer)
        } else {
            Vec::new()
        },
        route: binding.path.clone(),
        sent_by: local_of(shared, &peer).to_string(),
        q: binding.q.unwrap_or(1000),
        peer,
    })
}

/// Unix milliseconds from the wall clock.
#[allow(clippy::disallowed_methods)]
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Admits an out-of-dialog request. When everything it needs is in the caches (the
/// usual case) the decision is made now, on its core shard, and returned; otherwise
/// the lookups run off its core shard and the decision goes to `out`.
pub fn admit(
    shared: &Arc<Shared>,
    registrar: &Arc<Registrar>,
    domains: &Arc<Domains>,
    key: TransactionKey,
    request: Message,
    peer: Peer,
    out: &mpsc::Sender<Admission>,
) -> Option<Admission> {
    // Decide only once everything is cached: verifying credentials records their
    // nonce count, so one request's decision must never be started twice.
    if cached(registrar, domains, &request) {
        return Some(
            decide(shared, registrar, domains, key, request, peer)
                .unwrap_or_else(|pending| unavailable(*pending)),
        );
    }
    let (shared, registrar, domains, out) = (
        shared.clone(),
        registrar.clone(),
        domains.clone(),
        out.clone(),
    );
    tokio::spawn(async move {
        warm(&registrar, &domains, &request).await;
        let decided = if cached(&registrar, &domains, &request) {
            decide(&shared, &registrar, &domains, key, request, peer)
                .unwrap_or_else(|pending| unavailable(*pending))
        } else {
            // Still not decidable: the directory did not answer.
            unavailable((key, request, peer))
        };
        let _ = out.send(decided).await;
    });
    None
}

/// 503: the directory could not be read.
fn unavailable((key, request, _): (TransactionKey, Message, Peer)) -> Admission {
    let mut response = request.response(503, "Service Unavailable", Some(&new_tag()));
    crate::core::add_header(&mut response, "Retry-After", b"5");
    Admission::Answer {
        key,
        response,
        call: None,
    }
}

/// How long every cache entry [`decide`] reads must stay fresh when [`cached`] says
/// yes: far longer than the decision takes, so that no entry can expire between the
/// check and the decision (which would leave a caller's request undecided).
const DECIDE_MARGIN: Duration = Duration::from_millis(200);

/// Whether the caches hold everything [`decide`] reads for this request (what
/// [`warm`] fills), fresh for [`DECIDE_MARGIN`] at least.
fn cached(registrar: &Registrar, domains: &Domains, request: &Message) -> bool {
    let margin = DECIDE_MARGIN;
    if let Some((_, domain)) = request.from().and_then(|f| aor_of_uri(&f.uri)) {
        match domains.cached_for(&domain, margin) {
            None => return false,
            Some(true) if !registrar.proxy_credentials_cached(request, &domain, margin) => {
                return false
            }
            _ => {}
        }
    }
    if let Some((user, domain)) = request.request_uri().and_then(aor_of_uri) {
        match domains.cached_for(&domain, margin) {
            None => return false,
            Some(true)
                if registrar
                    .user_exists_cached(&user, &domain, margin)
                    .is_none() =>
            {
                return false
            }
            _ => {}
        }
    }
    true
}

/// Fills the caches [`decide`] reads for this request: the served domains, the user
/// its Proxy-Authorization names, and the callee.
async fn warm(registrar: &Registrar, domains: &Domains, request: &Message) {
    if let Some((_, domain)) = request.from().and_then(|f| aor_of_uri(&f.uri)) {
        if domains.serves(&domain).await {
            registrar.warm_proxy_credentials(request, &domain).await;
        }
    }
    if let Some((user, domain)) = request.request_uri().and_then(aor_of_uri) {
        if domains.serves(&domain).await {
            registrar.warm_user(&user, &domain).await;
        }
    }
}

/// A request admission could not decide from the caches, given back whole.
type Pending = Box<(TransactionKey, Message, Peer)>;

/// The admission decision from the caches; the request back when a lookup is needed.
fn decide(
    shared: &Arc<Shared>,
    registrar: &Registrar,
    domains: &Domains,
    key: TransactionKey,
    mut request: Message,
    peer: Peer,
) -> Result<Admission, Pending> {
    let caller = request.from().and_then(|f| aor_of_uri(&f.uri));
    let mut authenticated = false;
    // 1. A local user's request must prove who it is.
    if let Some((user, domain)) = &caller {
        let Some(local) = domains.cached(domain) else {
            return Err(Box::new((key, request, peer)));
        };
        if local {
            match registrar.authorize_cached(shared, &request, &peer, user, domain) {
                None => return Err(Box::new((key, request, peer))),
                Some(Err(response)) => {
                    return Ok(Admission::Answer {
                        key,
                        response,
                        call: None,
                    })
                }
                Some(Ok(())) => {}
            }
            consume_credentials(&mut request, domain);
            authenticated = true;
        }
    }
    let refuse =
        |key: TransactionKey, request: &Message, status: u16, reason: &str| Admission::Answer {
            response: request.response(status, reason, Some(&new_tag())),
            call: CallStart::new(request, &peer, caller.as_ref()),
            key,
        };
    // 2. No open relay: only domains holdfast serves.
    let Some((user, domain)) = request.request_uri().and_then(aor_of_uri) else {
        return Ok(refuse(key, &request, 416, "Unsupported URI Scheme"));
    };
    match domains.cached(&domain) {
        None => return Err(Box::new((key, request, peer))),
        Some(false) => {
            // Recorded only for a local user: a stranger's relay attempts must not be
            // able to fill the call history.
            let mut refused = refuse(key, &request, 403, "Relaying Forbidden");
            if let Admission::Answer { call, .. } = &mut refused {
                if !authenticated {
                    *call = None;
                }
            }
            return Ok(refused);
        }
        Some(true) => {}
    }
    // 3. The callee.
    match registrar.user_exists_cached(&user, &domain, Duration::ZERO) {
        None => return Err(Box::new((key, request, peer))),
        Some(false) => return Ok(refuse(key, &request, 404, "Not Found")),
        Some(true) => {}
    }
    let aor = format!("{user}@{domain}");
    let caller_peer = to_core(&peer);
    let record = request.method().is_some_and(makes_dialog);
    let targets: Vec<Target> = registrar
        .bindings(&aor)
        .iter()
        .filter_map(|b| target_for(shared, &registrar.tokens, b, &caller_peer, record))
        .collect();
    if targets.is_empty() {
        return Ok(refuse(key, &request, 480, "Temporarily Unavailable"));
    }
    Ok(Admission::Forward {
        call: CallStart::new(&request, &peer, caller.as_ref()),
        key,
        request,
        targets,
    })
}

/// Takes out the credentials a request carried for holdfast's `realm`: they were for
/// holdfast alone (RFC 3261 §22.3), and a callee given the caller's digest response
/// could guess the caller's password offline. Credentials for other realms stay.
fn consume_credentials(request: &mut Message, realm: &str) {
    let ours = |h: &Header| match h.value() {
        Value::Credentials(c) => matches!(&**c,
            Credentials::Digest(d) if d.realm.as_deref() == Some(realm.as_bytes())),
        _ => false,
    };
    let others: Vec<Header> = request
        .headers()
        .iter()
        .filter(|h| h.name() == HeaderName::ProxyAuthorization && !ours(h))
        .cloned()
        .collect();
    if request.remove_headers(HeaderName::ProxyAuthorization) > 0 {
        for h in others {
            request.push_header(h);
        }
    }
}

/// Whether a Route value names holdfast: its user part is a verified flow token, or
/// its host and port are one of holdfast's sockets.
fn our_route(shared: &Shared, tokens: &FlowTokens, route: &NameAddr) -> Option<Vec<CorePeer>> {
    let sip = route.uri.as_sip()?;
    let flows = sip
        .user
        .as_ref()
        .map(|u| tokens.decode_user(&String::from_utf8_lossy(u)))
        .unwrap_or_default();
    if !flows.is_empty() {
        return Some(flows);
    }
    let ip = sip.host.ip()?;
    let port = sip.port.unwrap_or(5060);
    shared.is_local(SocketAddr::new(ip, port)).then(Vec::new)
}

/// Where an in-dialog request goes.
#[derive(Debug)]
pub enum InDialog {
    /// Not for holdfast's dialogs (no Route naming a flow of holdfast's on top, or no
    /// To tag): the request is admitted like any out-of-dialog request.
    NotOurs,
    /// Forward to this target (the request's own Routes to holdfast are removed).
    Forward(Box<Target>),
    /// The dialog's device cannot be reached.
    Unreachable,
}

/// Resolves a request whose top Route is holdfast's (RFC 3261 §16.4): pops every
/// Route of holdfast's, then sends it over the flow the last one names: the one of
/// the two that is not where the request came from, for a single Record-Route. A
/// device that reconnected since is found by its remote address when the request is
/// sent, or by its Contact in the location service.
pub fn resolve_in_dialog(
    shared: &Shared,
    registrar: &Registrar,
    request: &mut Message,
    from: &Peer,
) -> InDialog {
    let tokens = &registrar.tokens;
    let mut last: Option<Vec<CorePeer>> = None;
    loop {
        let flows = request
            .routes()
            .next()
            .and_then(|r| our_route(shared, tokens, r));
        let Some(flows) = flows else { break };
        request.pop_route();
        last = Some(flows);
    }
    let Some(flows) = last else {
        return InDialog::NotOurs;
    };
    // No To tag: outside any dialog (RFC 3261 §12.2). Whatever its Route says, it is
    // admitted like any new request: neither a flow token nor a device's Contact lets
    // it skip authentication.
    if request.to().and_then(|t| t.tag()).is_none() {
        return InDialog::NotOurs;
    }
    let came_from = |p: &CorePeer| p.addr == from.remote && p.transport == to_core(from).transport;
    let chosen = match flows.as_slice() {
        [one] => Some(*one),
        [a, b] => match (came_from(a), came_from(b)) {
            (true, false) => Some(*b),
            (false, true) => Some(*a),
            _ => None,
        },
        _ => None,
    };
    let Some(uri) = request.request_uri().cloned() else {
        return InDialog::Unreachable;
    };
    let peer = chosen.or_else(|| {
        registrar
            .binding_for_contact(&uri)
            .map(|b| binding_peer(&b))
    });
    if peer.is_none() && flows.is_empty() {
        // A Route to holdfast's address with no flow in it (a device's outbound
        // proxy setting, RFC 3261 §8.1.2): the request is routed like one without.
        return InDialog::NotOurs;
    }
    match peer {
        Some(peer) => InDialog::Forward(Box::new(Target {
            uri,
            route: Vec::new(),
            record_route: Vec::new(),
            sent_by: local_of(shared, &peer).to_string(),
            q: 1000,
            peer,
        })),
        None => InDialog::Unreachable,
    }
}

/// The ACK for a 2xx, forwarded statelessly along its dialog (RFC 3261 §16.11 for a
/// request with no transaction of its own).
pub fn forward_stateless(request: &Message, target: &Target) -> Option<Bytes> {
    let mut out = request.clone();
    out.decrement_max_forwards()?;
    route::ensure_content_length(&mut out);
    out.set_request_uri(target.uri.clone());
    let via = Via::new(
        target.peer.transport.as_str(),
        &target.sent_by,
        &route::branch(request),
    )?;
    out.push_via(&via);
    Some(out.to_bytes())
}

/// A response that matches no transaction, forwarded statelessly to the next Via
/// (RFC 3261 §16.11): the retransmitted 2xx of an INVITE whose transactions ended.
pub fn stray_response_destination(response: &mut Message) -> Option<CorePeer> {
    let ours = response
        .top_via()?
        .branch()?
        .starts_with(route::BRANCH_PREFIX.as_bytes());
    if !ours {
        return None;
    }
    response.pop_via();
    route::ensure_content_length(response);
    let via = response.top_via()?;
    let transport = Transport::from_via(&via.transport)?;
    let ip = via
        .received()
        .and_then(|h| h.ip())
        .or_else(|| via.host.ip())?;
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port_or_default(),
    };
    Some(CorePeer {
        transport,
        addr: SocketAddr::new(ip, port),
        connection: None,
        local: None,
    })
}
