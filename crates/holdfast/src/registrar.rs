//! The registrar in the shell: digest authentication against the directory, the
//! location actor that owns the in-memory bindings, and durable commits before any
//! 200 is sent.
//!
//! A REGISTER travels: the core shard of its Call-ID (server transaction; the challenge, and the digest
//! check when the user's credentials are in the short-lived cache, happen right there;
//! otherwise a task asks the store first) → the location actor (RFC 3261 §10.3
//! decisions on the AoR's current bindings, applied in memory in arrival order, a batch
//! of REGISTERs at a time) → the store's group commit, one write per batch → the 200s
//! back to that shard, which answers through the transactions. Nothing is answered
//! 200 before its binding is on disk.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;

use holdfast_core::digest::{DigestAuth, DigestConfig, Ha1, Verdict};
use holdfast_core::registrar::{
    aor_of, process_register, Binding, Flow, Location, RegisterOutcome, RegistrarConfig,
};
use holdfast_core::response::{EncodedResponse, ResponseWriter};
use holdfast_core::{TransactionKey, TransactionLayer, Transport};
use holdfast_sip::auth::{Algorithm, Credentials, DigestCredentials};
use holdfast_sip::{HeaderName, Message};
use holdfast_store::{BindingOp, Directory, Location as LocationStore, SqliteStore, StoreError};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::challenge::RecentChallenges;
use crate::shared::{Peer, Shared};

/// Which challenge a request gets: 401 from the registrar, 407 from the proxy
/// (RFC 3261 §22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    Registrar,
    Proxy,
}

/// A response for its core shard to send through the transaction `key`.
#[derive(Debug)]
pub struct Reply {
    pub key: TransactionKey,
    pub response: Response,
}

/// A response as the registrar made it.
#[derive(Debug)]
pub enum Response {
    /// Built as a message (the rare answers).
    Message(Box<Message>),
    /// Encoded straight to bytes (the 200s).
    Encoded(EncodedResponse),
}

/// The queues back to the core shards: a reply goes to the shard that holds its
/// transaction, the one of its request's Call-ID.
#[derive(Debug, Clone)]
pub struct Replies(Arc<[mpsc::Sender<Reply>]>);

impl Replies {
    pub fn new(shards: Vec<mpsc::Sender<Reply>>) -> Replies {
        Replies(shards.into())
    }

    /// Sends `reply` to the shard of `call_id`, its request's (nothing when the core
    /// has stopped).
    async fn send(&self, call_id: Option<impl AsRef<[u8]>>, reply: Reply) {
        let i = crate::shared::shard_of(call_id, self.0.len());
        if let Some(shard) = self.0.get(i) {
            let _ = shard.send(reply).await;
        }
    }
}

impl Reply {
    /// Sends the response through its transaction.
    pub fn respond(self, layer: &mut TransactionLayer, now: std::time::Instant) {
        // The transaction may have ended meanwhile; nothing is left to answer then.
        let _ = match self.response {
            Response::Message(m) => layer.respond(&self.key, *m, now),
            Response::Encoded(e) => layer.respond_encoded(&self.key, &e, now),
        };
    }
}

struct Job {
    key: TransactionKey,
    request: Message,
    aor: String,
    flow: Flow,
}

const CREDENTIAL_TTL: Duration = Duration::from_secs(5);
/// Most users whose credentials are cached at once; past it the cache starts over.
const CREDENTIAL_CACHE: usize = 200_000;
/// Most REGISTERs the location actor takes at once: one store write for all of them.
const LOCATION_BATCH: usize = 256;

/// How long a fetched cache entry is still good for at the least.
pub const WARM_MARGIN: Duration = Duration::from_secs(1);

/// When a user's credentials were looked up, and what was found.
type CachedHa1 = (Instant, Option<Arc<Ha1>>);

/// The credentials looked up lately: domain → username → when looked up, and the HA1
/// values (None: no such user). Two levels, so that a lookup allocates nothing.
#[derive(Debug, Default)]
struct CredentialCache {
    by_domain: HashMap<String, HashMap<String, CachedHa1>>,
    len: usize,
}

impl CredentialCache {
    /// The cached answer for `username@domain`, if it is fresh: `Some(None)` is a
    /// cached "no such user".
    /// `margin`: how long the entry must stay fresh at the least.
    fn get(
        &self,
        username: &str,
        domain: &str,
        now: Instant,
        margin: Duration,
    ) -> Option<Option<Arc<Ha1>>> {
        let (at, ha1) = self.by_domain.get(domain)?.get(username)?;
        let fresh = now.saturating_duration_since(*at) < CREDENTIAL_TTL.saturating_sub(margin);
        fresh.then(|| ha1.clone())
    }

    fn insert(&mut self, username: &str, domain: &str, now: Instant, ha1: Option<Arc<Ha1>>) {
        if self.len >= CREDENTIAL_CACHE {
            *self = CredentialCache::default();
        }
        let users = self.by_domain.entry(domain.to_owned()).or_default();
        if users.insert(username.to_owned(), (now, ha1)).is_none() {
            self.len = self.len.saturating_add(1);
        }
    }
}

pub struct Registrar {
    store: Arc<SqliteStore>,
    /// Flow tokens for the proxy's Record-Route, under the same secret as nonces.
    pub tokens: holdfast_core::proxy::route::FlowTokens,
    /// The bindings in memory: written by the location actor, read by the proxy.
    location: Arc<RwLock<Location>>,
    auth: Mutex<DigestAuth>,
    cache: Mutex<CredentialCache>,
    /// When the challenges sent without a transaction were issued.
    recent: RecentChallenges,
    user_failures: Mutex<HashMap<String, (u32, Instant)>>,
    jobs: mpsc::Sender<Job>,
    replies: Replies,
    failures_per_user: u32,
    window: Duration,
    /// Lower-cased User-Agent substrings that get MD5-only challenges.
    md5_only_user_agents: Vec<String>,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar").finish_non_exhaustive()
    }
}

/// Wall-clock Unix seconds: the shell is where the wall clock is read.
#[allow(clippy::disallowed_methods)]
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn secret(configured: Option<&str>) -> Vec<u8> {
    match configured {
        Some(s) => s.as_bytes().to_vec(),
        None => {
            let mut key = vec![0u8; 32];
            if getrandom::fill(&mut key).is_err() {
                // No OS randomness: fall back to the process's hash keys.
                key = crate::core::new_tag().into_bytes();
            }
            key
        }
    }
}

/// A random start for the nonce salt counter.
fn salt_seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        let tag = crate::core::new_tag();
        return u64::from_str_radix(&tag, 16).unwrap_or(0);
    }
    u64::from_be_bytes(b)
}

fn transport_name(t: Transport) -> &'static str {
    t.as_str()
}

fn transport_from(name: &str) -> Transport {
    match name {
        "TCP" => Transport::Tcp,
        "TLS" => Transport::Tls,
        "WS" => Transport::Ws,
        "WSS" => Transport::Wss,
        _ => Transport::Udp,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The store's form of a binding.
pub fn to_store(b: &Binding, node: &str, now: u64) -> holdfast_store::Binding {
    holdfast_store::Binding {
        aor: b.aor.clone(),
        contact: text(&b.contact),
        instance: b.instance.as_deref().map(text),
        reg_id: b.reg_id,
        q: b.q.unwrap_or(1000),
        expires_at: i64::try_from(b.expires_at).unwrap_or(i64::MAX),
        call_id: text(&b.call_id),
        cseq: b.cseq,
        path: b.path.iter().map(|p| text(p)).collect(),
        transport: transport_name(b.flow.transport).into(),
        source: b.flow.remote.to_string(),
        local: b.flow.local.map(|l| l.to_string()).unwrap_or_default(),
        connection: b.flow.connection,
        user_agent: b.user_agent.as_deref().map(text),
        node: node.into(),
        updated_at: i64::try_from(now).unwrap_or(i64::MAX),
    }
}

fn from_store(b: holdfast_store::Binding) -> Option<Binding> {
    Some(Binding {
        aor: b.aor,
        contact: b.contact.into(),
        instance: b.instance.map(Into::into),
        reg_id: b.reg_id,
        q: Some(b.q),
        expires_at: u64::try_from(b.expires_at).ok()?,
        call_id: b.call_id.into(),
        cseq: b.cseq,
        path: b.path.into_iter().map(Into::into).collect(),
        flow: Flow {
            transport: transport_from(&b.transport),
            remote: b.source.parse::<SocketAddr>().ok()?,
            local: b.local.parse().ok(),
            // Connections do not survive a restart; the device re-registers over a new one.
            connection: None,
        },
        user_agent: b.user_agent.map(Into::into),
    })
}

impl Registrar {
    /// Loads every unexpired binding from the store, then starts the location actor.
    /// Returns once the bindings are in memory: the core takes no traffic before.
    pub async fn start(
        shared: &Arc<Shared>,
        store: Arc<SqliteStore>,
        replies: Replies,
    ) -> anyhow::Result<Arc<Registrar>> {
        let cfg = &shared.config.registrar;
        let now = unix_now();
        let mut location = Location::new();
        let mut by_aor: HashMap<String, Vec<Binding>> = HashMap::new();
        let loaded = store
            .load_unexpired(i64::try_from(now).unwrap_or(i64::MAX))
            .await?;
        let count = loaded.len();
        for b in loaded.into_iter().filter_map(from_store) {
            by_aor.entry(b.aor.clone()).or_default().push(b);
        }
        for (aor, list) in by_aor {
            location.replace(&aor, list);
        }
        tracing::info!(bindings = count, "location service loaded");
        let (jobs, jobs_rx) = mpsc::channel(65_536);
        let location = Arc::new(RwLock::new(location));
        let secret = secret(cfg.nonce_secret.as_deref());
        let registrar = Arc::new(Registrar {
            tokens: holdfast_core::proxy::route::FlowTokens::new(&secret),
            store: store.clone(),
            location: location.clone(),
            auth: Mutex::new(DigestAuth::new(DigestConfig {
                secret,
                nonce_lifetime: cfg.nonce_lifetime_secs,
                max_tracked_nonces: cfg.max_tracked_nonces,
                algorithms: cfg
                    .digest_algorithms
                    .iter()
                    .map(|a| Algorithm::from_bytes(a.as_bytes()))
                    .collect(),
                salt_seed: salt_seed(),
            })),
            cache: Mutex::new(CredentialCache::default()),
            recent: RecentChallenges::default(),
            user_failures: Mutex::new(HashMap::new()),
            jobs,
            replies: replies.clone(),
            failures_per_user: cfg.auth_failures_per_user,
            window: Duration::from_secs(shared.config.bans.window_secs),
            md5_only_user_agents: cfg
                .md5_only_user_agents
                .iter()
                .map(|u| u.to_ascii_lowercase())
                .collect(),
        });
        let core_cfg = RegistrarConfig {
            min_expires: cfg.min_expires,
            max_expires: cfg.max_expires,
            default_expires: cfg.default_expires,
            max_contacts: cfg.max_contacts,
            flow_timer: cfg.flow_timer,
        };
        tokio::spawn(location_actor(
            shared.clone(),
            store,
            location,
            core_cfg,
            jobs_rx,
            replies,
        ));
        Ok(registrar)
    }

    /// Handles a REGISTER that opened server transaction `key`: returns the response to
    /// send now, or `None` when it is answered later (through the replies channel).
    ///
    /// The challenge, and the check of credentials whose user is in the cache, are
    /// done here on the caller's task: a task of its own would cost more than the work.
    pub fn handle(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        key: &TransactionKey,
        request: Message,
        peer: Peer,
    ) -> Option<Message> {
        // §10.3 step 5 (RFC 4475 §3.3.4): the AoR must be a SIP or SIPS URI.
        let Some(aor) = aor_of(&request) else {
            return Some(request.response(400, "Invalid To URI", Some(&crate::core::new_tag())));
        };
        let now = unix_now();
        let domain = domain_of(&aor);
        let Some(creds) = digest_credentials(&request, HeaderName::Authorization, domain) else {
            return Some(self.challenge(&request, domain, false, now));
        };
        let username = digest_user(creds);
        if let Some(stored) = self.cached_credentials(&username, domain, Duration::ZERO) {
            let verdict = self.verify(creds, b"REGISTER", domain, stored.as_deref(), now);
            return self.decide(shared, key, request, peer, aor, &username, verdict, now);
        }
        // Not cached: the directory is asked off the caller's task.
        let this = self.clone();
        let shared = shared.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let domain = domain_of(&aor);
            let stored = this.credentials(&username, domain).await;
            let now = unix_now();
            let verdict = match digest_credentials(&request, HeaderName::Authorization, domain) {
                Some(creds) => this.verify(creds, b"REGISTER", domain, stored.as_deref(), now),
                None => Verdict::Failed,
            };
            let call_id = request.call_id().cloned();
            if let Some(response) =
                this.decide(&shared, &key, request, peer, aor, &username, verdict, now)
            {
                let response = Response::Message(Box::new(response));
                let reply = Reply { key, response };
                this.replies.send(call_id, reply).await;
            }
        });
        None
    }

    fn verify(
        &self,
        creds: &DigestCredentials,
        method: &[u8],
        realm: &str,
        stored: Option<&Ha1>,
        now: u64,
    ) -> Verdict {
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).verify(
            creds,
            method,
            realm.as_bytes(),
            stored,
            now,
        )
    }

    /// What a REGISTER whose credentials were checked gets: a new challenge, a 403,
    /// or (`None`) a place in the location actor's queue.
    #[allow(clippy::too_many_arguments)] // one REGISTER's state, handed on as it is
    fn decide(
        &self,
        shared: &Arc<Shared>,
        key: &TransactionKey,
        request: Message,
        peer: Peer,
        aor: String,
        username: &str,
        verdict: Verdict,
        now: u64,
    ) -> Option<Message> {
        let domain = domain_of(&aor);
        let user_matches = aor.rsplit_once('@').is_some_and(|(u, _)| u == username);
        match verdict {
            Verdict::Stale => Some(self.challenge(&request, domain, true, now)),
            Verdict::Authenticated if user_matches => {
                let flow = Flow {
                    transport: crate::core::to_core(&peer).transport,
                    remote: peer.remote,
                    local: Some(peer.local),
                    connection: peer.conn,
                };
                let job = Job {
                    key: key.clone(),
                    request,
                    aor,
                    flow,
                };
                match self.jobs.try_send(job) {
                    Ok(()) => None,
                    Err(
                        mpsc::error::TrySendError::Full(job)
                        | mpsc::error::TrySendError::Closed(job),
                    ) => {
                        shared
                            .metrics
                            .overloaded
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Some(job.request.response(
                            503,
                            "Service Unavailable",
                            Some(&crate::core::new_tag()),
                        ))
                    }
                }
            }
            // Wrong password, unknown user, unknown domain, replayed or forged nonce,
            // or a user registering someone else's AoR: one answer for all.
            _ => {
                self.failed(shared, &peer, username, domain);
                Some(request.response(403, "Forbidden", Some(&crate::core::new_tag())))
            }
        }
    }

    fn challenge(&self, request: &Message, realm: &str, stale: bool, now: u64) -> Message {
        self.challenge_with(request, realm, stale, now, Challenge::Registrar)
    }

    fn challenge_with(
        &self,
        request: &Message,
        realm: &str,
        stale: bool,
        now: u64,
        kind: Challenge,
    ) -> Message {
        let (status, reason, header) = match kind {
            Challenge::Registrar => (401, "Unauthorized", "WWW-Authenticate"),
            Challenge::Proxy => (407, "Proxy Authentication Required", "Proxy-Authenticate"),
        };
        let mut resp = request.response(status, reason, Some(&crate::core::new_tag()));
        for c in self.challenge_values(request, realm, stale, now) {
            crate::core::add_header(&mut resp, header, &c);
        }
        resp
    }

    /// The challenges for `request`, all with one fresh nonce.
    fn challenge_values(
        &self,
        request: &Message,
        realm: &str,
        stale: bool,
        now: u64,
    ) -> Vec<Vec<u8>> {
        let algorithms = self.algorithms_for(request);
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .challenges(realm.as_bytes(), stale, now, algorithms)
    }

    /// The algorithms to offer `request`'s device: `None` for the configured ones.
    fn algorithms_for(&self, request: &Message) -> Option<&'static [Algorithm]> {
        // Devices known to refuse a 401 that offers anything but MD5 get MD5 alone.
        let md5_only = !self.md5_only_user_agents.is_empty()
            && request.header(HeaderName::UserAgent).is_some_and(|ua| {
                let ua = ua.raw_value();
                self.md5_only_user_agents.iter().any(|m| {
                    ua.windows(m.len().max(1))
                        .any(|w| w.eq_ignore_ascii_case(m.as_bytes()))
                })
            });
        md5_only.then_some(&[Algorithm::Md5][..])
    }

    /// The answer to a REGISTER without credentials for its AoR's domain, to send
    /// statelessly (RFC 3261 §8.2.7): a 401 with a fresh challenge, encoded. `None`
    /// when the REGISTER needs a server transaction (it has credentials, or its To is
    /// not an AoR).
    ///
    /// Half of all REGISTERs are these. Without a transaction they cost no table
    /// entry and no timer J (32 s over UDP), a flood of them fills nothing, and they
    /// are answered as soon as they are parsed, before any transaction. A retransmitted one
    /// gets the same 401 again, as from a transaction (see [`crate::challenge`]).
    pub fn stateless_challenge(&self, request: &Message) -> Option<Bytes> {
        let aor = aor_of(request)?;
        let domain = domain_of(&aor);
        if digest_credentials(request, HeaderName::Authorization, domain).is_some() {
            return None;
        }
        let identity = self.recent.identity(request)?;
        let issued = self.recent.issued_at(identity, unix_now());
        let algorithms = self.algorithms_for(request);
        let challenges = self
            .auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .challenges_with(domain.as_bytes(), false, issued, identity.salt, algorithms);
        let tag = format!("{:016x}", identity.salt);
        let mut resp = ResponseWriter::new(request, 401, "Unauthorized", &tag);
        for c in &challenges {
            resp.header("WWW-Authenticate", c);
        }
        Some(resp.finish().data)
    }

    /// The bindings of `aor`, best first.
    pub fn bindings(&self, aor: &str) -> Vec<Binding> {
        read(&self.location).lookup(aor).to_vec()
    }

    /// The binding whose Contact is `uri` (RFC 3261 §19.1.4 comparison): how a request
    /// whose flow is unknown finds the device's current flow.
    pub fn binding_for_contact(&self, uri: &holdfast_sip::Uri) -> Option<Binding> {
        read(&self.location)
            .iter()
            .find(|b| b.uri().is_some_and(|u| u.equivalent(uri)))
            .cloned()
    }

    /// Whether `user@domain` exists, when the credential cache has an answer that stays
    /// fresh for `margin` at least.
    pub fn user_exists_cached(&self, user: &str, domain: &str, margin: Duration) -> Option<bool> {
        self.cached_credentials(user, domain, margin)
            .map(|c| c.is_some())
    }

    /// Looks up `user@domain` so that the cache has a fresh answer.
    pub async fn warm_user(&self, user: &str, domain: &str) {
        let _ = self.credentials(user, domain).await;
    }

    /// Looks up the user a request's Proxy-Authorization names, so that
    /// [`authorize_cached`](Self::authorize_cached) can decide from the cache.
    pub async fn warm_proxy_credentials(&self, request: &Message, domain: &str) {
        if let Some(creds) = digest_credentials(request, HeaderName::ProxyAuthorization, domain) {
            self.warm_user(&digest_user(creds), domain).await;
        }
    }

    /// Whether the cache holds what [`authorize_cached`](Self::authorize_cached) needs
    /// for this request, fresh for `margin` at least (nothing, when it offers no
    /// credentials for `domain`).
    pub fn proxy_credentials_cached(
        &self,
        request: &Message,
        domain: &str,
        margin: Duration,
    ) -> bool {
        match digest_credentials(request, HeaderName::ProxyAuthorization, domain) {
            Some(creds) => self
                .cached_credentials(&digest_user(creds), domain, margin)
                .is_some(),
            None => true,
        }
    }

    /// Proxy authentication (RFC 3261 §22.3) of a request from a local user of
    /// `domain` whose From user is `user`: `Ok` when its Proxy-Authorization verifies
    /// for that user, else the answer (407 with a challenge, or 403 with the
    /// registrar's anti-enumeration and ban rules). `None` when the user's credentials
    /// are not in the cache: [`warm_proxy_credentials`](Self::warm_proxy_credentials)
    /// first, off its core shard.
    pub fn authorize_cached(
        &self,
        shared: &Arc<Shared>,
        request: &Message,
        peer: &Peer,
        user: &str,
        domain: &str,
    ) -> Option<Result<(), Message>> {
        let now = unix_now();
        let Some(creds) = digest_credentials(request, HeaderName::ProxyAuthorization, domain)
        else {
            return Some(Err(self.challenge_with(
                request,
                domain,
                false,
                now,
                Challenge::Proxy,
            )));
        };
        let username = digest_user(creds);
        let stored = self.cached_credentials(&username, domain, Duration::ZERO)?;
        let method = request.method().map(|m| m.as_bytes()).unwrap_or_default();
        let verdict = self.verify(creds, method, domain, stored.as_deref(), now);
        Some(match verdict {
            Verdict::Stale => {
                Err(self.challenge_with(request, domain, true, now, Challenge::Proxy))
            }
            Verdict::Authenticated if username == user => Ok(()),
            _ => {
                self.failed(shared, peer, &username, domain);
                Err(request.response(403, "Forbidden", Some(&crate::core::new_tag())))
            }
        })
    }

    fn failed(&self, shared: &Arc<Shared>, peer: &Peer, username: &str, domain: &str) {
        crate::transport::offence(shared, peer.remote.ip(), "auth_failure");
        let now = Instant::now();
        let mut failures = self.user_failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 100_000 {
            let window = self.window;
            failures.retain(|_, (_, t)| now.saturating_duration_since(*t) < window);
        }
        let entry = failures
            .entry(format!("{username}@{domain}"))
            .or_insert((0, now));
        if now.saturating_duration_since(entry.1) > self.window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        if entry.0 >= self.failures_per_user {
            // Past the per-user threshold every further failing source is banned.
            crate::transport::ban(shared, peer.remote.ip(), "auth_failures_per_user");
        }
    }

    /// A cached answer for `username@domain` that stays fresh for `margin` at least:
    /// `Some(None)` when the user does not exist, `None` when the cache has nothing
    /// fresh.
    fn cached_credentials(
        &self,
        username: &str,
        domain: &str,
        margin: Duration,
    ) -> Option<Option<Arc<Ha1>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(
            username,
            domain,
            Instant::now(),
            margin,
        )
    }

    /// A user's HA1 values: from a short-lived cache, else from the store. Misses are
    /// cached too, so an unknown user costs the store no more than a known one. An
    /// entry near its end is read again, so that what this fetched is still fresh
    /// when the caller goes on to decide from the cache.
    async fn credentials(&self, username: &str, domain: &str) -> Option<Arc<Ha1>> {
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(
            username,
            domain,
            Instant::now(),
            WARM_MARGIN,
        );
        if let Some(cached) = cached {
            return cached;
        }
        let found = match self.store.credentials(username, domain).await {
            Ok(Some(u)) => Some(Arc::new(Ha1 {
                md5: u.ha1_md5,
                sha256: u.ha1_sha256,
            })),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "directory lookup failed");
                return None;
            }
        };
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
            username,
            domain,
            Instant::now(),
            found.clone(),
        );
        found
    }
}

/// The domain of an AoR `user@domain`.
fn domain_of(aor: &str) -> &str {
    aor.rsplit_once('@').map_or("", |(_, d)| d)
}

/// The first digest credentials of `name` fields for `realm`.
fn digest_credentials<'a>(
    request: &'a Message,
    name: HeaderName,
    realm: &str,
) -> Option<&'a DigestCredentials> {
    request.credentials(name).find_map(|c| match c {
        Credentials::Digest(d) if d.realm.as_deref() == Some(realm.as_bytes()) => Some(d),
        _ => None,
    })
}

/// The user a digest response names. Some clients send `user@` or `user@domain`.
fn digest_user(creds: &DigestCredentials) -> String {
    let name = creds.username.as_deref().unwrap_or_default();
    let user = name
        .iter()
        .position(|&b| b == b'@')
        .and_then(|at| name.get(..at))
        .unwrap_or(name);
    text(user)
}

fn read(location: &RwLock<Location>) -> std::sync::RwLockReadGuard<'_, Location> {
    location.read().unwrap_or_else(|e| e.into_inner())
}

fn write(location: &RwLock<Location>) -> std::sync::RwLockWriteGuard<'_, Location> {
    location.write().unwrap_or_else(|e| e.into_inner())
}

/// A REGISTER whose binding change is on its way to the disk.
struct Pending {
    key: TransactionKey,
    request: Message,
    /// The 200 to send once the change is durable.
    response: EncodedResponse,
}

async fn location_actor(
    shared: Arc<Shared>,
    store: Arc<SqliteStore>,
    location: Arc<RwLock<Location>>,
    config: RegistrarConfig,
    mut jobs: mpsc::Receiver<Job>,
    replies: Replies,
) {
    let node = shared.config.registrar.node_name.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_purge = Instant::now();
    let mut batch = Vec::with_capacity(LOCATION_BATCH);
    loop {
        tokio::select! {
            n = jobs.recv_many(&mut batch, LOCATION_BATCH) => {
                if n == 0 {
                    return;
                }
                let now = unix_now();
                let mut changes = Vec::with_capacity(n);
                let mut pending = Vec::with_capacity(n);
                for job in batch.drain(..) {
                    let outcome = process_register(
                        &config,
                        read(&location).lookup(&job.aor),
                        &job.request,
                        &job.aor,
                        &job.flow,
                        now,
                    );
                    match outcome {
                        RegisterOutcome::Reject(response) => {
                            let response = Response::Encoded(response);
                            let reply = Reply { key: job.key, response };
                            replies.send(job.request.call_id(), reply).await;
                        }
                        RegisterOutcome::Update { aor, bindings, response } => {
                            let mut ops = Vec::with_capacity(bindings.len().saturating_add(1));
                            ops.push(BindingOp::RemoveAll { aor: aor.clone() });
                            ops.extend(bindings.iter().map(|b| BindingOp::Upsert(to_store(b, &node, now))));
                            write(&location).replace(&aor, bindings);
                            changes.push(ops);
                            pending.push(Pending { key: job.key, request: job.request, response });
                        }
                    }
                }
                if !pending.is_empty() {
                    // Durable before answered. The batch's changes are queued on the
                    // writer now, in arrival order, as one write, and its commit awaited
                    // off the actor so that the next batches share group commits.
                    let commit = store.queue_apply_each(changes);
                    tokio::spawn(answer_when_durable(commit, pending, replies.clone()));
                }
            }
            _ = tick.tick() => {
                let now = unix_now();
                let gone = write(&location).expire(now);
                if !gone.is_empty() {
                    tracing::debug!(expired = gone.len(), "bindings expired");
                }
                if last_purge.elapsed() > Duration::from_secs(60) {
                    last_purge = Instant::now();
                    let store = store.clone();
                    tokio::spawn(async move {
                        let _ = store.purge_expired(i64::try_from(now).unwrap_or(i64::MAX)).await;
                    });
                }
            }
        }
    }
}

/// Sends each REGISTER of a batch its 200 once its change is committed, or the error.
async fn answer_when_durable(
    commit: Result<
        impl std::future::Future<Output = Result<Vec<Result<(), StoreError>>, StoreError>>,
        StoreError,
    >,
    pending: Vec<Pending>,
    replies: Replies,
) {
    let results = match commit {
        Ok(done) => done.await,
        Err(e) => Err(e),
    };
    let mut each = match &results {
        Ok(each) => each.iter(),
        Err(_) => [].iter(),
    };
    for p in pending {
        let result = match (&results, each.next()) {
            (Ok(_), Some(own)) => own.clone(),
            (Err(batch), _) => Err(batch.clone()),
            (Ok(_), None) => Err(StoreError::Backend {
                kind: holdfast_store::BackendKind::Database,
                message: "change not answered".to_owned(),
            }),
        };
        let response = match result {
            Ok(()) => Response::Encoded(p.response),
            Err(e) => {
                // A full writer queue is overload (503, try again); anything else is a
                // fault of the store (500).
                let (status, reason) = if e.is_retryable() {
                    (503, "Service Unavailable")
                } else {
                    (500, "Server Internal Error")
                };
                tracing::error!(error = %e, status, "binding not stored");
                let mut r = p
                    .request
                    .response(status, reason, Some(&crate::core::new_tag()));
                crate::core::add_header(&mut r, "Retry-After", b"5");
                Response::Message(Box::new(r))
            }
        };
        let reply = Reply {
            key: p.key,
            response,
        };
        replies.send(p.request.call_id(), reply).await;
    }
}
