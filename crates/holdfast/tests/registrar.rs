//! The registrar end to end: the real binary, real sockets and real clients.
//!
//! - sipp (`scenarios/register.xml`), sipsak and baresip register with digest over UDP
//!   and TCP, and the admin API shows their bindings.
//! - Raw sockets check the rules: 401 then 200, 403 for a wrong password, an unknown
//!   user or domain challenged and refused exactly like a known one, replayed
//!   nonce-counts refused, stale nonces challenged again with `stale=true`, 423 with
//!   Min-Expires, `Contact: *`, another user's AoR refused, and repeat offenders banned.
//! - Durability: every binding answered 200 is there after `kill -9` and a restart,
//!   before the restarted core answers anything.
//! - The CLI and the admin API manage the directory of a running core; the data
//!   directory never holds a password.
//!
//! The digest client (`support::Challenge`) is our own (RFC 7616 §3.4.1 with md-5 and
//! sha2), not holdfast-core's, so that a shared mistake cannot make both sides agree.
//!
//! Known bug (see `phones_challenged_in_the_same_second_both_register`): every
//! challenge issued in the same second carries the same nonce, and the replay check
//! counts nonce-counts per nonce across all clients. Until it is fixed, the phones of
//! these tests draw their nonce-counts from one table ([`next_nc`]) so that two of them
//! never send the same count on a shared nonce, and the real clients (which always
//! start at nc=1) are started in distinct wall-clock seconds ([`next_wall_second`]).

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use support::{
    bounded, challenges, files_under, free_port, free_udp_run, h, note, run_bounded, sipp_stats,
    unique, Challenge, Client, Core, CoreBuilder, Request, Response, TempDir, Transport, LOCALHOST,
};

const LIMIT: Duration = Duration::from_secs(90);
const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const TOKEN: &str = "e2e-registrar-admin-token";
/// The credential cache of the running core keeps a lookup (hit or miss) this long.
const CREDENTIAL_TTL: Duration = Duration::from_secs(5);

/// The next nonce-count to use with `nonce`, shared by every phone of the test binary
/// (see the module documentation: a workaround for the shared-nonce bug).
fn next_nc(nonce: &str) -> u32 {
    static COUNTS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
    let mut counts = COUNTS.lock().unwrap();
    let n = counts
        .get_or_insert_with(HashMap::new)
        .entry(nonce.to_string())
        .or_insert(0);
    *n += 1;
    *n
}

/// Sleeps into the next wall-clock second (holdfast's nonces carry Unix seconds), so
/// that a client started now gets a nonce no earlier client got.
async fn next_wall_second() {
    // The nonce's timestamp is the wall clock: only the wall clock can say when it
    // changes.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    let left = 1000 - u64::from(now.subsec_millis());
    tokio::time::sleep(Duration::from_millis(left + 30)).await;
}

// ---------------------------------------------------------------------------------
// A phone over raw sockets
// ---------------------------------------------------------------------------------

/// A registering device: one client socket (or connection), one AoR, one Call-ID.
struct Phone {
    client: Client,
    target: SocketAddr,
    user: String,
    domain: String,
    /// Who the phone authenticates as, and with what.
    auth_user: String,
    password: String,
    call_id: String,
    cseq: u32,
}

impl Phone {
    /// A phone for `user@domain` over `t`, from 127.0.0.1.
    async fn new(core: &Core, t: Transport, aor: &str, password: &str) -> Phone {
        Phone::from_ip(core, t, LOCALHOST, aor, password).await
    }

    /// A phone for `aor` over `t`, from the loopback address `ip`.
    async fn from_ip(core: &Core, t: Transport, ip: IpAddr, aor: &str, password: &str) -> Phone {
        let target = core.addr(t);
        let client = Client::connect_from(core, t, ip, target)
            .await
            .unwrap_or_else(|e| panic!("connect {} from {ip}: {e}", t.as_str()));
        let (user, domain) = aor.split_once('@').expect("user@domain");
        Phone {
            client,
            target,
            user: user.to_string(),
            domain: domain.to_string(),
            auth_user: user.to_string(),
            password: password.to_string(),
            call_id: format!("{}@phone.test", unique()),
            cseq: 0,
        }
    }

    fn transport(&self) -> Transport {
        self.client.transport()
    }

    fn local(&self) -> SocketAddr {
        self.client.local()
    }

    fn aor(&self) -> String {
        format!("{}@{}", self.user, self.domain)
    }

    /// This phone's contact URI.
    fn contact_uri(&self) -> String {
        format!(
            "sip:{}@{};transport={}",
            self.user,
            self.local(),
            self.transport().as_str()
        )
    }

    /// Contact and Expires: the headers of a plain registration.
    fn binding(&self, expires: u32) -> Vec<String> {
        vec![
            format!("Contact: <{}>", self.contact_uri()),
            format!("Expires: {expires}"),
        ]
    }

    fn digest_uri(&self) -> String {
        format!("sip:{}", self.domain)
    }

    /// A REGISTER of this phone's AoR with the next CSeq and `headers`.
    fn request(&mut self, headers: &[String]) -> Request {
        self.cseq += 1;
        let mut req = Request::new("REGISTER", self.transport(), self.local(), self.target);
        req.uri = self.digest_uri();
        req.to = format!("<sip:{}>", self.aor());
        req.call_id = self.call_id.clone();
        req.cseq = format!("{} REGISTER", self.cseq);
        req.extra = headers.to_vec();
        req
    }

    /// Sends a REGISTER with `headers` and returns its final answer.
    async fn send(&mut self, headers: &[String]) -> Response {
        let req = self.request(headers);
        self.client.request(&req).await
    }

    /// Sends a REGISTER with `headers` and gives its answer, or `None` when nothing
    /// answers within `limit`.
    async fn try_send(&mut self, headers: &[String], limit: Duration) -> Option<Response> {
        let req = self.request(headers);
        self.client
            .request_with(&req, limit, None)
            .await
            .ok()
            .map(|(r, _)| r)
    }

    /// Sends a REGISTER without credentials; asserts the 401 and returns it with its
    /// challenge for `algorithm`.
    async fn challenge(&mut self, headers: &[String], algorithm: &str) -> (Response, Challenge) {
        let r = self.send(headers).await;
        assert_eq!(r.status, 401, "{} unauthenticated:\n{}", self.aor(), r.raw);
        let ch = challenges(&r)
            .into_iter()
            .find(|c| c.algorithm().eq_ignore_ascii_case(algorithm))
            .unwrap_or_else(|| panic!("no {algorithm} challenge:\n{}", r.raw));
        (r, ch)
    }

    /// The Authorization header answering `ch` with nonce-count `nc`.
    fn authorization(&self, ch: &Challenge, nc: u32) -> String {
        let credentials = ch.credentials(
            &self.auth_user,
            &self.password,
            "REGISTER",
            &self.digest_uri(),
            nc,
        );
        format!("Authorization: {credentials}")
    }

    /// Registers with `headers` through the MD5 challenge; returns the final answer.
    async fn register(&mut self, headers: &[String]) -> Response {
        self.register_with(headers, "MD5").await
    }

    /// Registers with `headers` through the challenge for `algorithm`.
    async fn register_with(&mut self, headers: &[String], algorithm: &str) -> Response {
        let (_, ch) = self.challenge(headers, algorithm).await;
        self.answer(&ch, headers).await
    }

    /// Sends `headers` with credentials for `ch` (the next nonce-count).
    async fn answer(&mut self, ch: &Challenge, headers: &[String]) -> Response {
        let mut with_auth = headers.to_vec();
        with_auth.push(self.authorization(ch, next_nc(ch.nonce())));
        self.send(&with_auth).await
    }
}

/// The Contact URIs of a 200 to REGISTER, with their expires parameters.
fn contacts(r: &Response) -> Vec<(String, u32)> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Contact") || n == "m")
        .map(|(_, v)| {
            let uri = v
                .split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(u, _)| u.to_string())
                .unwrap_or_else(|| panic!("Contact without <>: {v}"));
            let expires = v
                .split(';')
                .find_map(|p| p.trim().strip_prefix("expires="))
                .and_then(|e| e.parse().ok())
                .unwrap_or_else(|| panic!("Contact without expires: {v}"));
            (uri, expires)
        })
        .collect()
}

/// The bindings of `aor` in a registrations listing.
fn bindings_of<'a>(list: &'a [Value], aor: &str) -> Vec<&'a Value> {
    list.iter().filter(|b| b["aor"] == aor).collect()
}

/// Polls `/api/v1/registrations` until `pred` holds of `aor`'s bindings, for `limit`.
async fn wait_bindings(
    core: &Core,
    aor: &str,
    limit: Duration,
    pred: impl Fn(&[&Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let list = core.registrations(TOKEN).await;
        let mine: Vec<&Value> = bindings_of(&list, aor);
        if pred(&mine) {
            return mine.into_iter().cloned().collect();
        }
        assert!(
            Instant::now() < deadline,
            "bindings of {aor} not as expected within {limit:?}: {mine:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------

/// Runs `holdfast ARGS --data-dir DIR`; gives the exit status and what it printed.
async fn holdfast(data_dir: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--data-dir").arg(data_dir);
    let out = run_bounded(cmd, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("holdfast {args:?} did not finish in 20 s"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Like [`holdfast`], asserting success.
async fn holdfast_ok(data_dir: &Path, args: &[&str]) -> String {
    let (ok, out) = holdfast(data_dir, args).await;
    assert!(ok, "holdfast {args:?} failed:\n{out}");
    out
}

/// `holdfast registrations --data-dir DIR`, parsed.
async fn cli_registrations(data_dir: &Path) -> Vec<Value> {
    let out = holdfast_ok(data_dir, &["registrations"]).await;
    serde_json::from_str::<Vec<Value>>(&out)
        .unwrap_or_else(|e| panic!("holdfast registrations: {e}:\n{out}"))
}

/// Registers `phone` until the answer is `want`, retrying every half second, within
/// `limit` (the running core caches each credential lookup, hit or miss, for up to
/// [`CREDENTIAL_TTL`]). Returns how long it took.
async fn register_until(phone: &mut Phone, want: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let headers = phone.binding(600);
        let r = phone.register(&headers).await;
        if r.status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{} never got {want} within {limit:?}; last answer:\n{}",
            phone.aor(),
            r.raw
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------------
// REGISTER over raw sockets: the rules
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_register_over_every_transport_is_listed_with_its_flow() {
    bounded(LIMIT, async {
        let mut builder = CoreBuilder::new("reg-every").all_v4().admin_token(TOKEN);
        for t in Transport::ALL {
            builder = builder.user(&format!("{}@example.test:pw-{}", t.as_str(), t.as_str()));
        }
        let core = builder.start().await;
        let mut expected = Vec::new();
        for t in Transport::ALL {
            let aor = format!("{}@example.test", t.as_str());
            let mut phone = Phone::new(&core, t, &aor, &format!("pw-{}", t.as_str())).await;
            let headers = phone.binding(600);
            let r = phone.register(&headers).await;
            assert_eq!(r.status, 200, "REGISTER over {}:\n{}", t.as_str(), r.raw);
            let listed = contacts(&r);
            assert_eq!(listed.len(), 1, "{}", r.raw);
            assert_eq!(listed[0].0, phone.contact_uri(), "{}", r.raw);
            assert!((590..=600).contains(&listed[0].1), "{}", r.raw);
            assert!(r.header("Date").is_some(), "no Date in the 200:\n{}", r.raw);
            expected.push((aor, t, phone.local(), phone.contact_uri()));
        }
        // SHA-256 works as well as MD5 (RFC 8760).
        let mut phone = Phone::new(&core, Transport::Udp, "udp@example.test", "pw-udp").await;
        let headers = phone.binding(600);
        let r = phone.register_with(&headers, "SHA-256").await;
        assert_eq!(r.status, 200, "SHA-256:\n{}", r.raw);
        assert_eq!(
            contacts(&r).len(),
            2,
            "the SHA-256 phone is a second contact"
        );

        let list = core.registrations(TOKEN).await;
        for (aor, t, local, contact) in expected {
            let b = bindings_of(&list, &aor)
                .into_iter()
                .find(|b| b["contact"] == contact.as_str())
                .unwrap_or_else(|| panic!("no binding {contact} of {aor}: {list:#?}"));
            assert_eq!(b["transport"], t.via(), "{b}");
            assert_eq!(b["flow"]["transport"], t.via(), "{b}");
            assert_eq!(b["source"], local.to_string(), "{b}");
            assert_eq!(b["flow"]["local"], core.addr(t).to_string(), "{b}");
            assert_eq!(
                b["flow"]["connection"].is_null(),
                t == Transport::Udp,
                "a connection id for stream flows only: {b}"
            );
            let left = b["expires_in"].as_i64().expect("expires_in");
            assert!((590..=600).contains(&left), "{b}");
        }
        note(format!(
            "registered over {} transports; {} bindings listed",
            Transport::ALL.len(),
            list.len()
        ));
        core.assert_alive();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_and_unknown_domain_get_the_same_answers() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("reg-enum")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .user("alice@example.test:alice-pw")
            .admin_token(TOKEN)
            .start()
            .await;
        for t in [Transport::Udp, Transport::Tcp] {
            let mut known = Phone::new(&core, t, "alice@example.test", "wrong-pw").await;
            let mut unknown = Phone::new(&core, t, "mallory@example.test", "any-pw").await;
            let mut elsewhere = Phone::new(&core, t, "alice@nowhere.test", "alice-pw").await;

            let h = known.binding(600);
            let (known_401, known_ch) = known.challenge(&h, "MD5").await;
            let h = unknown.binding(600);
            let (unknown_401, unknown_ch) = unknown.challenge(&h, "MD5").await;
            let h = elsewhere.binding(600);
            let (elsewhere_401, elsewhere_ch) = elsewhere.challenge(&h, "MD5").await;

            // The challenge never depends on the user: same status line, same header
            // names in the same order, same challenges but for the nonce.
            let names = |r: &Response| r.headers.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
            let shapes = |r: &Response| {
                challenges(r)
                    .iter()
                    .map(Challenge::shape)
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                (known_401.status, &known_401.reason),
                (unknown_401.status, &unknown_401.reason)
            );
            assert_eq!(
                names(&known_401),
                names(&unknown_401),
                "{}\n{}",
                known_401.raw,
                unknown_401.raw
            );
            assert_eq!(
                shapes(&known_401),
                shapes(&unknown_401),
                "{}\n{}",
                known_401.raw,
                unknown_401.raw
            );
            assert_eq!(
                challenges(&known_401).len(),
                2,
                "MD5 and SHA-256 offered:\n{}",
                known_401.raw
            );
            assert!(
                known_ch.get("qop").is_some_and(|q| q == "auth"),
                "{}",
                known_401.raw
            );
            assert!(!known_ch.stale(), "{}", known_401.raw);
            // An unknown domain is challenged too, in its own realm, in the same shape.
            assert_eq!(elsewhere_401.status, 401, "{}", elsewhere_401.raw);
            assert_eq!(
                elsewhere_ch.realm(),
                "nowhere.test",
                "{}",
                elsewhere_401.raw
            );
            assert_eq!(names(&known_401), names(&elsewhere_401));
            assert_eq!(
                shapes(&known_401),
                shapes(&elsewhere_401)
                    .iter()
                    .map(|s| s.replace("nowhere.test", "example.test"))
                    .collect::<Vec<_>>()
            );

            // Wrong password, unknown user, unknown domain: one refusal for all.
            let h = known.binding(600);
            let known_403 = known.answer(&known_ch, &h).await;
            let h = unknown.binding(600);
            let unknown_403 = unknown.answer(&unknown_ch, &h).await;
            let h = elsewhere.binding(600);
            let elsewhere_403 = elsewhere.answer(&elsewhere_ch, &h).await;
            // Headers that echo the request differ by design; every other one must not.
            let echoed = ["Via", "From", "To", "Call-ID", "CSeq"];
            let fixed = |r: &Response| {
                r.headers
                    .iter()
                    .filter(|(n, _)| !echoed.iter().any(|e| e.eq_ignore_ascii_case(n)))
                    .cloned()
                    .collect::<Vec<_>>()
            };
            for other in [&unknown_403, &elsewhere_403] {
                assert_eq!(known_403.status, 403, "{}", known_403.raw);
                assert_eq!(
                    (known_403.status, &known_403.reason),
                    (other.status, &other.reason)
                );
                assert_eq!(
                    names(&known_403),
                    names(other),
                    "{}\n{}",
                    known_403.raw,
                    other.raw
                );
                assert_eq!(
                    fixed(&known_403),
                    fixed(other),
                    "{}\n{}",
                    known_403.raw,
                    other.raw
                );
            }
            assert!(
                challenges(&known_403).is_empty(),
                "a 403 carries no new challenge:\n{}",
                known_403.raw
            );
            // The right password still works (with a fresh challenge).
            let mut right = Phone::new(&core, t, "alice@example.test", "alice-pw").await;
            let h = right.binding(600);
            let r = right.register(&h).await;
            assert_eq!(r.status, 200, "{}", r.raw);
        }
        let list = core.registrations(TOKEN).await;
        assert!(bindings_of(&list, "mallory@example.test").is_empty());
        assert!(bindings_of(&list, "alice@nowhere.test").is_empty());
        assert_eq!(
            bindings_of(&list, "alice@example.test").len(),
            2,
            "{list:#?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_nonce_count_gets_403() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("reg-replay")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .user("alice@example.test:alice-pw")
            .start()
            .await;
        for t in [Transport::Udp, Transport::Tcp] {
            let mut phone = Phone::new(&core, t, "alice@example.test", "alice-pw").await;
            let h = phone.binding(600);
            let (_, ch) = phone.challenge(&h, "MD5").await;
            let nc = next_nc(ch.nonce());
            let mut with_auth = h.clone();
            with_auth.push(phone.authorization(&ch, nc));
            let first = phone.send(&with_auth).await;
            assert_eq!(first.status, 200, "{}", first.raw);
            // The same Authorization in a new transaction (new branch and CSeq): a replay.
            let replay = phone.send(&with_auth).await;
            assert_eq!(replay.status, 403, "replayed nc={nc}:\n{}", replay.raw);
            // So is an older count.
            if nc > 1 {
                let mut older = h.clone();
                older.push(phone.authorization(&ch, nc - 1));
                let r = phone.send(&older).await;
                assert_eq!(r.status, 403, "older nc:\n{}", r.raw);
            }
            // The nonce itself is still good: the next count is accepted.
            let r = phone.answer(&ch, &h).await;
            assert_eq!(r.status, 200, "next nc on the same nonce:\n{}", r.raw);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_nonce_gets_a_new_challenge_with_stale_true() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("reg-stale")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .user("alice@example.test:alice-pw")
            .toml("[registrar]\nnonce_lifetime_secs = 1")
            .start()
            .await;
        for t in [Transport::Udp, Transport::Tcp] {
            let mut phone = Phone::new(&core, t, "alice@example.test", "alice-pw").await;
            let h = phone.binding(600);
            let (_, old) = phone.challenge(&h, "MD5").await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let r = phone.answer(&old, &h).await;
            assert_eq!(
                r.status, 401,
                "an expired nonce is challenged again:\n{}",
                r.raw
            );
            let fresh = challenges(&r);
            assert_eq!(fresh.len(), 2, "{}", r.raw);
            assert!(
                fresh.iter().all(Challenge::stale),
                "stale=true on every challenge:\n{}",
                r.raw
            );
            assert!(
                fresh.iter().all(|c| c.nonce() != old.nonce()),
                "a new nonce:\n{}",
                r.raw
            );
            // The phone retries with the new nonce at once, without asking the user.
            let md5 = fresh
                .iter()
                .find(|c| c.algorithm() == "MD5")
                .expect("MD5 challenge");
            let r = phone.answer(md5, &h).await;
            assert_eq!(r.status, 200, "{}", r.raw);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_brief_an_expiry_gets_423_with_min_expires() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("reg-423")
            .listen(Transport::Udp, LOCALHOST)
            .user("alice@example.test:alice-pw")
            .toml("[registrar]\nmin_expires = 120\nmax_expires = 900\ndefault_expires = 300")
            .admin_token(TOKEN)
            .start()
            .await;
        let mut phone = Phone::new(&core, Transport::Udp, "alice@example.test", "alice-pw").await;
        let contact = format!("<{}>", phone.contact_uri());
        // In the Expires header, and in the Contact's expires parameter.
        for headers in [
            vec![format!("Contact: {contact}"), "Expires: 30".to_string()],
            vec![
                format!("Contact: {contact};expires=119"),
                "Expires: 600".to_string(),
            ],
        ] {
            let r = phone.register(&headers).await;
            assert_eq!(r.status, 423, "{headers:?}:\n{}", r.raw);
            assert_eq!(r.reason, "Interval Too Brief", "{}", r.raw);
            assert_eq!(r.header("Min-Expires"), Some("120"), "{}", r.raw);
        }
        assert!(core.registrations(TOKEN).await.is_empty());
        // At the minimum it is accepted; above the maximum it is shortened; with no
        // expiry at all the default applies.
        for (headers, want) in [
            (
                vec![format!("Contact: {contact}"), "Expires: 120".to_string()],
                120,
            ),
            (vec![format!("Contact: {contact};expires=86400")], 900),
            (vec![format!("Contact: {contact}")], 300),
        ] {
            let r = phone.register(&headers).await;
            assert_eq!(r.status, 200, "{headers:?}:\n{}", r.raw);
            let listed = contacts(&r);
            assert_eq!(listed.len(), 1, "{}", r.raw);
            assert!(
                listed[0].1 <= want && listed[0].1 + 2 >= want,
                "{headers:?}: expires {} (want {want}):\n{}",
                listed[0].1,
                r.raw
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_star_with_expires_0_removes_every_binding() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("reg-star")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .user("alice@example.test:alice-pw")
            .user("bob@example.test:bob-pw")
            .admin_token(TOKEN)
            .start()
            .await;
        let mut desk = Phone::new(&core, Transport::Udp, "alice@example.test", "alice-pw").await;
        let mut soft = Phone::new(&core, Transport::Tcp, "alice@example.test", "alice-pw").await;
        let mut bob = Phone::new(&core, Transport::Udp, "bob@example.test", "bob-pw").await;
        for p in [&mut desk, &mut soft, &mut bob] {
            let h = p.binding(600);
            let r = p.register(&h).await;
            assert_eq!(r.status, 200, "{}", r.raw);
        }
        // One REGISTER may carry two contacts.
        let two = vec![
            "Contact: <sip:alice@192.0.2.10:5060>;q=0.5, <sip:alice@192.0.2.11:5060>".to_string(),
            "Expires: 600".to_string(),
        ];
        let r = desk.register(&two).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        assert_eq!(contacts(&r).len(), 4, "all of alice's bindings:\n{}", r.raw);
        assert_eq!(
            bindings_of(&core.registrations(TOKEN).await, "alice@example.test").len(),
            4
        );

        // `*` without Expires: 0 is refused and removes nothing.
        let r = desk.register(&["Contact: *".to_string()]).await;
        assert_eq!(r.status, 400, "{}", r.raw);
        let r = desk
            .register(&["Contact: *".to_string(), "Expires: 600".to_string()])
            .await;
        assert_eq!(r.status, 400, "{}", r.raw);
        assert_eq!(
            bindings_of(&core.registrations(TOKEN).await, "alice@example.test").len(),
            4
        );

        let r = desk
            .register(&["Contact: *".to_string(), "Expires: 0".to_string()])
            .await;
        assert_eq!(r.status, 200, "{}", r.raw);
        assert!(contacts(&r).is_empty(), "no contact left:\n{}", r.raw);
        let list = core.registrations(TOKEN).await;
        assert!(
            bindings_of(&list, "alice@example.test").is_empty(),
            "{list:#?}"
        );
        assert_eq!(
            bindings_of(&list, "bob@example.test").len(),
            1,
            "bob's stay: {list:#?}"
        );
        // A query (no Contact) from the other phone confirms it.
        let r = soft.register(&[]).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        assert!(contacts(&r).is_empty(), "{}", r.raw);
        // Expires: 0 on one contact removes that one only.
        let h = soft.binding(600);
        assert_eq!(soft.register(&h).await.status, 200);
        let h = desk.binding(600);
        assert_eq!(desk.register(&h).await.status, 200);
        let h = desk.binding(0);
        let r = desk.register(&h).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        assert_eq!(
            contacts(&r).into_iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![soft.contact_uri()],
            "{}",
            r.raw
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_another_users_aor_gets_403() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("reg-other")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .user("alice@example.test:alice-pw")
            .user("bob@example.test:bob-pw")
            .admin_token(TOKEN)
            .start()
            .await;
        let mut alice = Phone::new(&core, Transport::Udp, "alice@example.test", "alice-pw").await;
        let h = alice.binding(600);
        assert_eq!(alice.register(&h).await.status, 200);
        for t in [Transport::Udp, Transport::Tcp] {
            // Bob, with bob's right password, registers alice's AoR.
            let mut bob = Phone::new(&core, t, "alice@example.test", "bob-pw").await;
            bob.auth_user = "bob".into();
            let h = bob.binding(600);
            let r = bob.register(&h).await;
            assert_eq!(
                r.status,
                403,
                "bob registering alice over {}:\n{}",
                t.as_str(),
                r.raw
            );
            // Or removes all of alice's bindings.
            let r = bob
                .register(&["Contact: *".to_string(), "Expires: 0".to_string()])
                .await;
            assert_eq!(r.status, 403, "{}", r.raw);
            // Naming the same user in another domain is not alice either.
            let mut twin = Phone::new(&core, t, "alice@example.test", "alice-pw").await;
            twin.domain = "other.test".into();
            let h = twin.binding(600);
            let r = twin.register(&h).await;
            assert_eq!(r.status, 403, "{}", r.raw);
        }
        let list = core.registrations(TOKEN).await;
        let mine = bindings_of(&list, "alice@example.test");
        assert_eq!(mine.len(), 1, "{list:#?}");
        assert_eq!(mine[0]["contact"], alice.contact_uri().as_str());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_auth_failures_ban_the_source() {
    bounded(LIMIT, async {
        const THRESHOLD: u32 = 20;
        let core = CoreBuilder::new("reg-ban")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .user("alice@example.test:alice-pw")
            .user("bob@example.test:bob-pw")
            .toml(&format!(
                "[bans]\noffence_threshold = {THRESHOLD}\nwindow_secs = 60\n\
                 [registrar]\nauth_failures_per_user = 3"
            ))
            .admin_token(TOKEN)
            .start()
            .await;
        // A guesser on 127.0.0.2 tries a different user each time (so the per-user
        // count never trips): its source is banned at the threshold.
        let guesser = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        for i in 0..THRESHOLD {
            let mut p = Phone::from_ip(
                &core,
                Transport::Udp,
                guesser,
                &format!("guess{i}@example.test"),
                "123456",
            )
            .await;
            let h = p.binding(600);
            let (_, ch) = p.challenge(&h, "MD5").await;
            let r = p.answer(&ch, &h).await;
            assert_eq!(r.status, 403, "guess {i}:\n{}", r.raw);
        }
        let bans = core.bans().await;
        let ban = bans
            .iter()
            .find(|b| b.ip == guesser)
            .unwrap_or_else(|| panic!("{guesser} not banned after {THRESHOLD} failures: {bans:?}"));
        assert_eq!(ban.reason, "auth_failure", "{bans:?}");
        assert!(ban.expires_in_secs > 0);
        // Banned: its datagrams are dropped and its connections refused.
        let mut p = Phone::from_ip(
            &core,
            Transport::Udp,
            guesser,
            "alice@example.test",
            "alice-pw",
        )
        .await;
        let h = p.binding(600);
        assert!(
            p.try_send(&h, Duration::from_secs(1)).await.is_none(),
            "a banned source got an answer"
        );
        let tcp =
            Client::connect_from(&core, Transport::Tcp, guesser, core.addr(Transport::Tcp)).await;
        if let Ok(mut c) = tcp {
            assert!(
                c.closed_within(Duration::from_secs(3)).await,
                "a banned source kept a connection"
            );
        }
        // Everyone else is served.
        let mut alice = Phone::new(&core, Transport::Udp, "alice@example.test", "alice-pw").await;
        let h = alice.binding(600);
        assert_eq!(alice.register(&h).await.status, 200);

        // Failures against one user from many sources: past auth_failures_per_user
        // (3), each further failing source is banned at once.
        let sources: Vec<IpAddr> = (10..14)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect();
        for ip in &sources {
            let mut p =
                Phone::from_ip(&core, Transport::Udp, *ip, "bob@example.test", "not-bobs").await;
            let h = p.binding(600);
            let (_, ch) = p.challenge(&h, "MD5").await;
            assert_eq!(p.answer(&ch, &h).await.status, 403);
        }
        let bans = core.bans().await;
        let banned = |ip: &IpAddr| bans.iter().find(|b| b.ip == *ip).map(|b| b.reason.clone());
        assert_eq!(banned(&sources[0]), None, "{bans:?}");
        assert_eq!(banned(&sources[1]), None, "{bans:?}");
        assert_eq!(
            banned(&sources[2]).as_deref(),
            Some("auth_failures_per_user"),
            "{bans:?}"
        );
        assert_eq!(
            banned(&sources[3]).as_deref(),
            Some("auth_failures_per_user"),
            "{bans:?}"
        );
        let m = core.metrics().await;
        assert!(m.get("holdfast_bans_total") >= 3.0);
        note(format!("bans: {bans:?}"));
    })
    .await;
}

/// Pins a bug: two phones challenged in the same second both answer with nc=1, and the
/// second is refused as a replay.
///
/// `DigestAuth::nonce` (crates/holdfast-core/src/digest.rs:126) is
/// `hex(now) || HMAC(secret, now || realm)`: every challenge of a realm within one
/// second carries the same nonce. `record_count` (digest.rs:236) then tracks the
/// highest nonce-count per nonce across all clients, so the second client's nc=1 is
/// "not greater than" the first's and gets 403, and each such 403 counts as an auth
/// failure toward a ban. sipp at 100 REGISTER/s sees 19 of 20 calls fail and its
/// source banned; two phones booting together (or behind one NAT) hit it too.
/// Fix: give every challenge its own nonce, e.g.
/// `hex(ts) || hex(salt) || HMAC(secret, ts || salt || realm)` with a per-challenge
/// salt (a random value or a counter passed in by the shell, since the core does no
/// I/O), and let `nonce_time` read the salt back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_challenged_in_the_same_second_both_register() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("reg-same-second")
            .listen(Transport::Udp, LOCALHOST)
            .user("alice@example.test:alice-pw")
            .user("bob@example.test:bob-pw")
            .start()
            .await;
        let mut alice = Phone::new(&core, Transport::Udp, "alice@example.test", "alice-pw").await;
        let mut bob = Phone::new(&core, Transport::Udp, "bob@example.test", "bob-pw").await;
        let (ha, hb) = (alice.binding(600), bob.binding(600));
        // Both challenges within the first milliseconds of one wall-clock second.
        next_wall_second().await;
        let (_, ca) = alice.challenge(&ha, "MD5").await;
        let (_, cb) = bob.challenge(&hb, "MD5").await;
        note(format!("nonces: {} / {}", ca.nonce(), cb.nonce()));
        // Each phone answers its own challenge with nc=1, as RFC 7616 §3.4 has it.
        let mut a = ha.clone();
        a.push(alice.authorization(&ca, 1));
        let mut b = hb.clone();
        b.push(bob.authorization(&cb, 1));
        let ra = alice.send(&a).await;
        let rb = bob.send(&b).await;
        assert_eq!(ra.status, 200, "alice:\n{}", ra.raw);
        assert_eq!(
            rb.status, 200,
            "bob, challenged in the same second as alice:\n{}",
            rb.raw
        );
    })
    .await;
}

/// Pins a bug: a REGISTER from behind a NAT gets a response whose top Via lacks
/// `received` and `rport`.
///
/// RFC 3261 §18.2.1 has the server transport add `received=<source IP>` when the
/// sent-by host differs from the packet's source, and RFC 3581 §4 has it fill in
/// `rport=<source port>` when the request's Via has an empty `rport`. holdfast
/// answers to the right address (the packet's source) but leaves the Via as sent, so
/// a phone behind a NAT never learns its public address and port: its Contact stays
/// the private one. Nothing in crates/holdfast/src adds either parameter. Fix: on
/// receipt of a request (crates/holdfast/src/core.rs:91 `receive`, before the
/// transaction layer sees it), set those two parameters on the top Via.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_via_carries_received_and_rport() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("reg-rport")
            .listen(Transport::Udp, LOCALHOST)
            .user("alice@example.test:alice-pw")
            .start()
            .await;
        let mut phone = Phone::new(&core, Transport::Udp, "alice@example.test", "alice-pw").await;
        let source = phone.local();
        let h = phone.binding(600);
        let mut req = phone.request(&h);
        // The phone believes it is 192.0.2.1:5062 (its private address).
        req.sent_by = "192.0.2.1:5062".into();
        let r = phone.client.request(&req).await;
        let via = r.header("Via").expect("Via");
        assert!(via.contains("received=127.0.0.1"), "{via}");
        assert!(via.contains(&format!("rport={}", source.port())), "{via}");
    })
    .await;
}

// ---------------------------------------------------------------------------------
// Real clients: sipp, sipsak, baresip
// ---------------------------------------------------------------------------------

/// Runs `scenarios/register.xml` with sipp over `t` (u1 or t1) against `core`, with
/// the users of `inf`. Gives sipp's local port and the statistics.
async fn sipp_register(
    core: &Core,
    t: Transport,
    inf: &Path,
    calls: u32,
    rate: &[&str],
) -> (u16, Vec<(String, String)>) {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/register.xml");
    assert!(scenario.is_file(), "{} is missing", scenario.display());
    let mode = if t == Transport::Udp { "u1" } else { "t1" };
    for attempt in 0..3 {
        let work = TempDir::new("sipp-register");
        let port = free_port(LOCALHOST, true);
        let mut cmd = Command::new("sipp");
        cmd.current_dir(work.path())
            .arg("-sf")
            .arg(&scenario)
            .arg("-inf")
            .arg(inf)
            .args(["-t", mode, "-i", "127.0.0.1"])
            .args(["-p", &port.to_string()])
            .args(["-cp", &free_port(LOCALHOST, true).to_string()])
            .args(["-mp", &free_udp_run(4).to_string()])
            .args(["-m", &calls.to_string()])
            .args(rate)
            .args(["-timeout", "60s", "-timeout_error", "-recv_timeout", "10s"])
            .args(["-nostdin", "-trace_stat", "-stf", "stat.csv", "-trace_err"])
            .args(["-fd", "1"])
            .arg(core.addr(t).to_string());
        let started = Instant::now();
        let out = run_bounded(cmd, Duration::from_secs(75))
            .await
            .unwrap_or_else(|| panic!("sipp -t {mode} did not stop within 75 s"));
        let status = out.status;
        // sipp exits 254 (-2) when it cannot bind its own sockets: pick new ports.
        if status.code() == Some(254) && attempt < 2 {
            note(format!("sipp could not bind (attempt {attempt}); retrying"));
            continue;
        }
        let stats = std::fs::read_to_string(work.path().join("stat.csv")).unwrap_or_default();
        let errors: String = files_under(work.path())
            .iter()
            .filter(|(p, _)| p.to_string_lossy().ends_with("_errors.log"))
            .filter_map(|(p, _)| std::fs::read_to_string(p).ok())
            .collect::<String>()
            .chars()
            .take(3000)
            .collect();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let tail: String = text.lines().rev().take(30).collect::<Vec<_>>().join("\n");
        assert!(
            status.success(),
            "sipp -t {mode} exited {status} (1 = some calls failed):\n{tail}\n--- errors ---\n{errors}"
        );
        let stats = sipp_stats(&stats);
        let get = |k: &str| {
            stats
                .iter()
                .find(|(h, _)| h == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {k} in sipp's statistics: {stats:?}"))
        };
        assert_eq!(get("FailedCall(C)"), "0", "sipp -t {mode}: {errors}");
        assert_eq!(
            get("SuccessfulCall(C)"),
            calls.to_string(),
            "sipp -t {mode}"
        );
        note(format!(
            "sipp -t {mode}: {calls} REGISTER calls, 0 failed, {:?}",
            started.elapsed()
        ));
        return (port, stats);
    }
    unreachable!("the loop returns or panics on its last attempt")
}

/// Creates `n` users `{prefix}{i}@{domain}` with `holdfast user add` on a stopped
/// core's data directory, and writes the sipp injection file for them.
async fn sipp_users(data_dir: &Path, inf: &Path, prefix: &str, domain: &str, n: u32) {
    let mut lines = String::from("SEQUENTIAL\n");
    for i in 0..n {
        let (user, password) = (format!("{prefix}{i}"), format!("{prefix}-secret-{i}"));
        holdfast_ok(
            data_dir,
            &[
                "user",
                "add",
                &format!("{user}@{domain}"),
                "--password",
                &password,
            ],
        )
        .await;
        lines.push_str(&format!("{user};{password};{domain}\n"));
    }
    std::fs::write(inf, lines).unwrap();
}

/// sipp over UDP and TCP, then the bindings in the API: transport and sipp's port.
async fn sipp_scenario(tag: &str, users: u32, calls: u32, rate: &[&str]) {
    let data = TempDir::new(tag);
    holdfast_ok(data.path(), &["domain", "add", "example.test"]).await;
    let mut runs = Vec::new();
    for (t, prefix) in [(Transport::Udp, "u"), (Transport::Tcp, "t")] {
        let inf = data.path().join(format!("{prefix}-users.csv"));
        sipp_users(data.path(), &inf, prefix, "example.test", users).await;
        runs.push((t, prefix, inf));
    }
    let core = CoreBuilder::new(tag)
        .listen(Transport::Udp, LOCALHOST)
        .listen(Transport::Tcp, LOCALHOST)
        .data_dir(data.path())
        .admin_token(TOKEN)
        .start()
        .await;
    for (t, prefix, inf) in runs {
        let (port, _) = sipp_register(&core, t, &inf, calls, rate).await;
        let list = core.registrations(TOKEN).await;
        for i in 0..users {
            let aor = format!("{prefix}{i}@example.test");
            let mine = bindings_of(&list, &aor);
            assert_eq!(mine.len(), 1, "{aor}: {mine:#?}");
            let b = mine[0];
            assert_eq!(b["transport"], t.via(), "{b}");
            assert_eq!(b["source"], format!("127.0.0.1:{port}"), "sipp's port: {b}");
            assert_eq!(
                b["contact"],
                format!("sip:{prefix}{i}@127.0.0.1:{port};transport={}", t.via()),
                "{b}"
            );
            assert_eq!(b["user_agent"], "sipp", "{b}");
            assert!(b["expires_in"].as_i64().is_some_and(|e| e > 3500), "{b}");
        }
    }
    core.assert_alive();
}

/// sipp's REGISTER scenario, paced below one call a second so that no two calls share
/// a nonce (see `phones_challenged_in_the_same_second_both_register`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_with_digest_over_udp_and_tcp() {
    bounded(
        LIMIT,
        sipp_scenario("sipp-reg-paced", 4, 6, &["-r", "1", "-rp", "1100"]),
    )
    .await;
}

/// The load the issue asks for: 50 users, 200 REGISTER calls at 100 a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_50_users_200_calls_over_udp_and_tcp() {
    bounded(
        LIMIT,
        sipp_scenario("sipp-reg-load", 50, 200, &["-r", "100"]),
    )
    .await;
}

/// Runs `sipsak -U` (register, with digest) for `user@127.0.0.1` over `t`. sipsak
/// resolves the host of its URI, so these users live in the domain `127.0.0.1`.
async fn sipsak_register(
    core: &Core,
    t: Transport,
    user: &str,
    password: &str,
    dash_u: bool,
) -> (Output, u16) {
    let port = free_port(LOCALHOST, true);
    let mut cmd = Command::new("sipsak");
    cmd.args(["-U", "-vv", "-i", "-H", "127.0.0.1"])
        .args(["-l", &port.to_string()]);
    match t {
        // -S: send and receive on the one UDP port -l.
        Transport::Udp => cmd.arg("-S"),
        _ => cmd.args(["-E", "tcp"]),
    };
    cmd.args(["-s", &format!("sip:{user}@{}", core.addr(t))])
        .args(["-a", password]);
    if dash_u {
        // Without -u sipsak's digest username is "user@", which no HA1 matches.
        cmd.args(["-u", user]);
    }
    let out = run_bounded(cmd, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("sipsak over {} did not finish in 30 s", t.as_str()));
    (out, port)
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipsak_registers_over_udp_and_tcp() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("sipsak-reg")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .user("eve@127.0.0.1:eve-pw")
            .user("frank@127.0.0.1:frank-pw")
            // sipsak asks for Expires: 15.
            .toml("[registrar]\nmin_expires = 10")
            .admin_token(TOKEN)
            .start()
            .await;
        for (t, user) in [(Transport::Udp, "eve"), (Transport::Tcp, "frank")] {
            let password = format!("{user}-pw");
            next_wall_second().await;
            let (out, port) = sipsak_register(&core, t, user, &password, true).await;
            let text = output_text(&out);
            assert!(
                out.status.success(),
                "sipsak -U over {} exited {}:\n{text}",
                t.as_str(),
                out.status
            );
            assert!(text.contains("completed successful"), "{text}");
            let list = core.registrations(TOKEN).await;
            let mine = bindings_of(&list, &format!("{user}@127.0.0.1"));
            assert_eq!(mine.len(), 1, "{list:#?}");
            let b = mine[0];
            assert_eq!(b["transport"], t.via(), "{b}");
            assert_eq!(b["source"], format!("127.0.0.1:{port}"), "{b}");
            assert_eq!(b["contact"], format!("sip:{user}@127.0.0.1:{port}"), "{b}");
            assert!(
                b["user_agent"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("sipsak")),
                "{b}"
            );
            assert!(
                b["expires_in"]
                    .as_i64()
                    .is_some_and(|e| (1..=15).contains(&e)),
                "{b}"
            );

            let (out, _) = sipsak_register(&core, t, user, "wrong-pw", true).await;
            assert!(
                !out.status.success(),
                "a wrong password succeeded:\n{}",
                output_text(&out)
            );
            // sipsak's default username ("eve@") matches no user.
            let (out, _) = sipsak_register(&core, t, user, &password, false).await;
            assert!(
                !out.status.success(),
                "username {user}@ was accepted:\n{}",
                output_text(&out)
            );
            note(format!(
                "sipsak over {}: registered; wrong password refused",
                t.as_str()
            ));
        }
        core.assert_alive();
    })
    .await;
}

/// A port `p` free for UDP and TCP with `p + 1` free for TCP: baresip 1.0.0 binds TLS
/// on its SIP port + 1 whatever its configuration says.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let p = free_port(LOCALHOST, true);
        if p < u16::MAX && std::net::TcpListener::bind((LOCALHOST, p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two adjacent free ports");
}

/// Runs baresip registered as `user@example.test` through the core's `t` listener
/// (as its outbound proxy) until its binding shows in the API, checks the binding,
/// then stops baresip with SIGTERM and waits for its un-REGISTER.
async fn baresip_registers(core: &Core, t: Transport, user: &str, password: &str) {
    let dir = TempDir::new("baresip");
    let port = free_port_pair();
    let tp = t.as_str();
    std::fs::write(
        dir.path().join("config"),
        format!(
            "poll_method epoll\n\
             net_interface 127.0.0.1\n\
             sip_listen 127.0.0.1:{port}\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module_tmp uuid.so\n\
             module_tmp account.so\n\
             module_app menu.so\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("accounts"),
        format!(
            "<sip:{user}@example.test;transport={tp}>;auth_pass={password};regint=600;\
             outbound=\"sip:{};transport={tp}\"\n",
            core.addr(t)
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("contacts"), "").unwrap();
    let log = dir.path().join("baresip.log");
    let mut child = match tokio::process::Command::new("baresip")
        .arg("-4")
        .arg("-f")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("baresip is not installed (Debian: apt-get install baresip-core, or run scripts/test)")
        }
        Err(e) => panic!("cannot run baresip: {e}"),
    };
    let aor = format!("{user}@example.test");
    let deadline = Instant::now() + Duration::from_secs(15);
    let binding = loop {
        let list = core.registrations(TOKEN).await;
        if let Some(b) = bindings_of(&list, &aor).first() {
            break (*b).clone();
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill().await;
            panic!(
                "baresip over {tp} did not register within 15 s; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(binding["transport"], t.via(), "{binding}");
    assert!(
        binding["user_agent"]
            .as_str()
            .is_some_and(|u| u.starts_with("baresip v1.")),
        "{binding}"
    );
    assert!(
        binding["instance"]
            .as_str()
            .is_some_and(|i| i.contains("urn:uuid:")),
        "{binding}"
    );
    let contact = binding["contact"].as_str().unwrap_or_default();
    assert!(contact.contains(&format!("@127.0.0.1:{port}")), "{binding}");
    if t == Transport::Udp {
        assert_eq!(binding["source"], format!("127.0.0.1:{port}"), "{binding}");
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("200 OK"), "{text}");
    // SIGTERM: baresip un-REGISTERs (Expires: 0) before it exits. Its un-REGISTER is
    // challenged afresh and answered with nc=1: in the second of its registration that
    // nonce would be the one it already used (the shared-nonce bug), and the 403 would
    // leave the binding behind.
    next_wall_second().await;
    let pid = child.id().expect("baresip pid");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    wait_bindings(core, &aor, Duration::from_secs(5), |b| b.is_empty()).await;
    note(format!(
        "baresip over {tp}: registered ({}), then un-registered",
        binding["user_agent"]
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registers_over_udp_and_tcp() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("baresip-reg")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .user("carol@example.test:carol-pw")
            .user("dave@example.test:dave-pw")
            // baresip 1.0.0 refuses a 401 that also offers SHA-256 (see below).
            .toml("[registrar]\ndigest_algorithms = [\"MD5\"]")
            .admin_token(TOKEN)
            .start()
            .await;
        next_wall_second().await;
        baresip_registers(&core, Transport::Udp, "carol", "carol-pw").await;
        next_wall_second().await;
        baresip_registers(&core, Transport::Tcp, "dave", "dave-pw").await;
        core.assert_alive();
    })
    .await;
}

/// Interop: with the default `digest_algorithms = ["MD5", "SHA-256"]`, baresip 1.0.0
/// (Debian 12) cannot register at all: its libre gives up on the whole 401 when any
/// challenge names an algorithm other than MD5 ("Register: Function not
/// implemented", ENOSYS), even though an MD5 challenge comes first. The default of
/// crates/holdfast/src/config.rs:198 therefore locks out a common softphone.
/// Fix: default to ["MD5"] (SHA-256 opt-in) or document the setting next to the
/// default; RFC 8760 §2.4 lets a server offer several, but these clients predate it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registers_with_the_default_digest_algorithms() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("baresip-default")
            .listen(Transport::Udp, LOCALHOST)
            .user("carol@example.test:carol-pw")
            .admin_token(TOKEN)
            .start()
            .await;
        baresip_registers(&core, Transport::Udp, "carol", "carol-pw").await;
    })
    .await;
}

// ---------------------------------------------------------------------------------
// Durability
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binding_answered_200_survives_kill_9() {
    const N: usize = 200;
    bounded(LIMIT, async {
        let data = TempDir::new("durable");
        let mut builder = CoreBuilder::new("durable-1")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .data_dir(data.path())
            .admin_token(TOKEN);
        for i in 0..N {
            builder = builder.user(&format!("d{i}@example.test:durable-{i}"));
        }
        let core = builder.start().await;
        let started = Instant::now();
        let mut registered = Vec::with_capacity(N);
        for i in 0..N {
            let t = if i % 2 == 0 {
                Transport::Udp
            } else {
                Transport::Tcp
            };
            let mut p = Phone::new(
                &core,
                t,
                &format!("d{i}@example.test"),
                &format!("durable-{i}"),
            )
            .await;
            let h = p.binding(3600);
            let r = p.register(&h).await;
            assert_eq!(r.status, 200, "d{i}:\n{}", r.raw);
            registered.push((p.aor(), p.contact_uri(), t, p.local()));
        }
        // Right after the last 200: no shutdown, no flush, nothing.
        core.kill_9();
        let took = started.elapsed();
        note(format!(
            "{N} REGISTERs answered 200 in {took:?}; killed with SIGKILL"
        ));

        let check = |list: &[Value], from: &str| {
            assert_eq!(list.len(), N, "{from}: {} of {N} bindings", list.len());
            for (aor, contact, t, local) in &registered {
                let mine = bindings_of(list, aor);
                assert_eq!(mine.len(), 1, "{from}: {aor}: {mine:#?}");
                assert_eq!(mine[0]["contact"], contact.as_str(), "{from}");
                assert_eq!(mine[0]["transport"], t.via(), "{from}");
                assert_eq!(mine[0]["source"], local.to_string(), "{from}");
            }
        };
        // On disk, read by the CLI from the dead core's data directory.
        check(
            &cli_registrations(data.path()).await,
            "holdfast registrations (stopped)",
        );

        let core = CoreBuilder::new("durable-2")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            .data_dir(data.path())
            .admin_token(TOKEN)
            .start()
            .await;
        // The first REGISTER the restarted core answers already sees the old contact.
        let (aor, contact, _, _) = &registered[0];
        let mut p = Phone::new(&core, Transport::Udp, aor, "durable-0").await;
        let r = p.register(&[]).await;
        assert_eq!(r.status, 200, "query:\n{}", r.raw);
        let listed = contacts(&r);
        assert_eq!(listed.len(), 1, "{}", r.raw);
        assert_eq!(&listed[0].0, contact, "{}", r.raw);
        assert!(listed[0].1 > 3500, "the expiry survived too:\n{}", r.raw);
        // A refresh from a new contact adds to it.
        let h = p.binding(3600);
        let r = p.register(&h).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        let mut got: Vec<String> = contacts(&r).into_iter().map(|c| c.0).collect();
        got.sort();
        let mut want = vec![contact.clone(), p.contact_uri()];
        want.sort();
        assert_eq!(got, want, "{}", r.raw);

        let mut api = core.registrations(TOKEN).await;
        api.retain(|b| b["contact"] != p.contact_uri().as_str());
        check(&api, "/api/v1/registrations after restart");
        let mut cli = cli_registrations(data.path()).await;
        cli.retain(|b| b["contact"] != p.contact_uri().as_str());
        check(&cli, "holdfast registrations (running)");
        core.assert_alive();
    })
    .await;
}

// ---------------------------------------------------------------------------------
// The CLI and the admin API
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_the_directory_of_a_running_core() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("cli-dir")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            // This test fails authentication on purpose while it waits for caches.
            .toml("[bans]\nexempt = [\"127.0.0.1\"]")
            .admin_token(TOKEN)
            .start()
            .await;
        let dir = core.data_dir().to_path_buf();
        let limit = CREDENTIAL_TTL + Duration::from_secs(3);

        let out = holdfast_ok(&dir, &["domain", "add", "dyn.test"]).await;
        assert!(out.contains("added dyn.test"), "{out}");
        let out = holdfast_ok(&dir, &["domain", "list"]).await;
        assert!(out.lines().any(|l| l == "dyn.test"), "{out}");
        let (ok, out) =
            holdfast(&dir, &["user", "add", "x@nowhere.test", "--password", "pw"]).await;
        assert!(!ok, "a user in an unknown domain was added: {out}");

        // Not a user yet: refused, and the miss is cached by the core.
        let mut bob = Phone::new(&core, Transport::Udp, "bob@dyn.test", "first-pw").await;
        let h = bob.binding(600);
        assert_eq!(bob.register(&h).await.status, 403);
        let out = holdfast_ok(
            &dir,
            &["user", "add", "bob@dyn.test", "--password", "first-pw"],
        )
        .await;
        assert!(out.contains("added bob@dyn.test"), "{out}");
        let took = register_until(&mut bob, 200, limit).await;
        note(format!("a user added by the CLI registered after {took:?}"));
        for args in [&["user", "list"][..], &["user", "list", "dyn.test"][..]] {
            let out = holdfast_ok(&dir, args).await;
            assert!(out.lines().any(|l| l == "bob@dyn.test"), "{args:?}: {out}");
        }
        let (ok, _) = holdfast(
            &dir,
            &["user", "add", "bob@dyn.test", "--password", "again"],
        )
        .await;
        assert!(!ok, "a second add of the same user succeeded");
        let listed = cli_registrations(&dir).await;
        assert_eq!(bindings_of(&listed, "bob@dyn.test").len(), 1, "{listed:#?}");

        // A new password: the old one stops working, the new one works.
        holdfast_ok(
            &dir,
            &["user", "passwd", "bob@dyn.test", "--password", "second-pw"],
        )
        .await;
        bob.password = "second-pw".into();
        let took = register_until(&mut bob, 200, limit).await;
        note(format!(
            "a password changed by the CLI was in force after {took:?}"
        ));
        bob.password = "first-pw".into();
        let h = bob.binding(600);
        assert_eq!(
            bob.register(&h).await.status,
            403,
            "the old password still works"
        );
        bob.password = "second-pw".into();

        // A domain with users is not deleted without --cascade.
        let (ok, out) = holdfast(&dir, &["domain", "del", "dyn.test"]).await;
        assert!(!ok, "a domain with users was deleted: {out}");
        holdfast_ok(&dir, &["user", "del", "bob@dyn.test"]).await;
        let took = register_until(&mut bob, 403, limit).await;
        note(format!(
            "a user deleted by the CLI was refused after {took:?}"
        ));
        let out = holdfast_ok(&dir, &["user", "list", "dyn.test"]).await;
        assert!(!out.contains("bob@"), "{out}");
        let (ok, _) = holdfast(&dir, &["user", "del", "bob@dyn.test"]).await;
        assert!(!ok, "deleting a missing user succeeded");

        // --cascade deletes a domain with its users.
        holdfast_ok(
            &dir,
            &["user", "add", "carol@dyn.test", "--password", "carol-pw"],
        )
        .await;
        holdfast_ok(&dir, &["domain", "del", "dyn.test", "--cascade"]).await;
        let out = holdfast_ok(&dir, &["domain", "list"]).await;
        assert!(!out.lines().any(|l| l == "dyn.test"), "{out}");
        let out = holdfast_ok(&dir, &["user", "list"]).await;
        assert!(!out.contains("carol@dyn.test"), "{out}");
        core.assert_alive();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_api_needs_a_configured_token_and_the_bearer() {
    bounded(LIMIT, async {
        let closed = CoreBuilder::new("api-closed")
            .listen(Transport::Udp, LOCALHOST)
            .start()
            .await;
        let open = CoreBuilder::new("api-open")
            .listen(Transport::Udp, LOCALHOST)
            .admin_token(TOKEN)
            .start()
            .await;
        let requests: [(&str, &str, Option<&str>); 7] = [
            ("GET", "/api/v1/users", None),
            ("POST", "/api/v1/users", Some(r#"{"aor":"eve@example.test","password":"pw"}"#)),
            ("PUT", "/api/v1/users/eve@example.test", Some(r#"{"password":"pw2"}"#)),
            ("DELETE", "/api/v1/users/eve@example.test", None),
            ("GET", "/api/v1/domains", None),
            ("POST", "/api/v1/domains", Some(r#"{"name":"example.test"}"#)),
            ("GET", "/api/v1/registrations", None),
        ];
        let wrong = format!("{TOKEN}x");
        for (method, path, body) in requests {
            // No token configured: closed, whatever the request carries.
            for token in [None, Some(TOKEN)] {
                let (status, text) = closed.api(method, path, token, body).await;
                assert_eq!(status, 403, "{method} {path} on a core without a token: {text}");
            }
            // A token configured: the request needs exactly it.
            for token in [None, Some(wrong.as_str()), Some(&TOKEN[..TOKEN.len() - 1]), Some("")] {
                let (status, text) = open.api(method, path, token, body).await;
                assert_eq!(status, 401, "{method} {path} with {token:?}: {text}");
            }
        }
        // A lower-case scheme or a Basic header is not the bearer token either.
        for header in [format!("bearer {TOKEN}"), format!("Basic {TOKEN}")] {
            let req = format!(
                "GET /api/v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: {header}\r\nConnection: close\r\n\r\n"
            );
            let mut s = tokio::net::TcpStream::connect(open.admin).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
            let text = String::from_utf8_lossy(&buf);
            assert!(text.starts_with("HTTP/1.1 401"), "{header}: {text}");
        }
        // Health and metrics stay open.
        assert_eq!(open.api("GET", "/health", None, None).await.0, 200);
        assert_eq!(closed.api("GET", "/health", None, None).await.0, 200);
        // Nothing was created by the refused requests.
        let (status, body) = open.api("GET", "/api/v1/domains", Some(TOKEN), None).await;
        assert_eq!((status, body.as_str()), (200, r#"{"domains":[]}"#));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_created_over_the_api_registers() {
    bounded(LIMIT, async {
        let core = CoreBuilder::new("api-user")
            .listen(Transport::Udp, LOCALHOST)
            .listen(Transport::Tcp, LOCALHOST)
            // This test fails authentication on purpose while it waits for the cache.
            .toml("[bans]\nexempt = [\"127.0.0.1\"]")
            .admin_token(TOKEN)
            .start()
            .await;
        let t = Some(TOKEN);
        let (s, b) = core
            .api("POST", "/api/v1/domains", t, Some(r#"{"name":"api.test"}"#))
            .await;
        assert_eq!(s, 201, "{b}");
        let (s, b) = core
            .api("POST", "/api/v1/domains", t, Some(r#"{"name":"api.test"}"#))
            .await;
        assert_eq!(s, 409, "a second add of the same domain: {b}");
        let user = r#"{"aor":"carol@api.test","password":"api-carol-pw"}"#;
        let (s, b) = core.api("POST", "/api/v1/users", t, Some(user)).await;
        assert_eq!(s, 201, "{b}");
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["aor"], "carol@api.test", "{b}");
        let (s, b) = core.api("POST", "/api/v1/users", t, Some(user)).await;
        assert_eq!(s, 409, "{b}");
        let (s, b) = core
            .api(
                "POST",
                "/api/v1/users",
                t,
                Some(r#"{"aor":"dan@nowhere.test","password":"x"}"#),
            )
            .await;
        assert_eq!(s, 404, "a user in an unknown domain: {b}");
        let (s, b) = core
            .api(
                "POST",
                "/api/v1/users",
                t,
                Some(r#"{"aor":"no-domain","password":"x"}"#),
            )
            .await;
        assert_eq!(s, 400, "{b}");

        let (s, b) = core
            .api("GET", "/api/v1/users?domain=api.test", t, None)
            .await;
        assert_eq!(s, 200, "{b}");
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["users"][0]["aor"], "carol@api.test", "{b}");
        assert!(!b.contains("api-carol-pw"), "the API shows a password: {b}");
        assert!(
            !b.to_ascii_lowercase().contains("ha1"),
            "the API shows HA1 values: {b}"
        );

        for tr in [Transport::Udp, Transport::Tcp] {
            let mut p = Phone::new(&core, tr, "carol@api.test", "api-carol-pw").await;
            let h = p.binding(600);
            let r = p.register(&h).await;
            assert_eq!(r.status, 200, "over {}:\n{}", tr.as_str(), r.raw);
        }
        let list = core.registrations(TOKEN).await;
        let mine = bindings_of(&list, "carol@api.test");
        assert_eq!(mine.len(), 2, "{list:#?}");
        let mut transports: Vec<&str> = mine
            .iter()
            .filter_map(|b| b["transport"].as_str())
            .collect();
        transports.sort_unstable();
        assert_eq!(transports, ["TCP", "UDP"]);

        // PUT changes the password; DELETE removes the user.
        let (s, b) = core
            .api(
                "PUT",
                "/api/v1/users/carol@api.test",
                t,
                Some(r#"{"password":"api-carol-pw-2"}"#),
            )
            .await;
        assert_eq!(s, 204, "{b}");
        let mut p = Phone::new(&core, Transport::Udp, "carol@api.test", "api-carol-pw-2").await;
        register_until(&mut p, 200, CREDENTIAL_TTL + Duration::from_secs(3)).await;
        let (s, b) = core
            .api("DELETE", "/api/v1/users/carol@api.test", t, None)
            .await;
        assert_eq!(s, 204, "{b}");
        let (s, _) = core
            .api("DELETE", "/api/v1/users/carol@api.test", t, None)
            .await;
        assert_eq!(s, 404);
        let (s, b) = core
            .api("DELETE", "/api/v1/domains/api.test", t, None)
            .await;
        assert_eq!(s, 204, "{b}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_never_holds_a_password() {
    bounded(LIMIT, async {
        let passwords = [
            "Plain-run-user-7f3a",
            "Plain-cli-add-91c2",
            "Plain-cli-passwd-5d0e",
            "Plain-api-post-2b8f",
            "Plain-api-put-c4e1",
        ];
        let core = CoreBuilder::new("no-plaintext")
            .listen(Transport::Udp, LOCALHOST)
            .user(&format!("p1@plain.test:{}", passwords[0]))
            .admin_token(TOKEN)
            .start()
            .await;
        let dir = core.data_dir().to_path_buf();
        holdfast_ok(
            &dir,
            &["user", "add", "p2@plain.test", "--password", passwords[1]],
        )
        .await;
        holdfast_ok(
            &dir,
            &[
                "user",
                "passwd",
                "p2@plain.test",
                "--password",
                passwords[2],
            ],
        )
        .await;
        let body = format!(r#"{{"aor":"p3@plain.test","password":"{}"}}"#, passwords[3]);
        assert_eq!(
            core.api("POST", "/api/v1/users", Some(TOKEN), Some(&body))
                .await
                .0,
            201
        );
        let body = format!(r#"{{"password":"{}"}}"#, passwords[4]);
        assert_eq!(
            core.api(
                "PUT",
                "/api/v1/users/p3@plain.test",
                Some(TOKEN),
                Some(&body)
            )
            .await
            .0,
            204
        );
        for (aor, pw) in [
            ("p1@plain.test", passwords[0]),
            ("p2@plain.test", passwords[2]),
            ("p3@plain.test", passwords[4]),
        ] {
            let mut p = Phone::new(&core, Transport::Udp, aor, pw).await;
            let h = p.binding(600);
            assert_eq!(p.register(&h).await.status, 200, "{aor}");
        }
        let scan = |when: &str| {
            let files = files_under(&dir);
            assert!(
                files.iter().any(|(p, _)| p.ends_with("holdfast.sqlite")),
                "{when}: no holdfast.sqlite in {files:?}"
            );
            let mut all = Vec::new();
            for (path, _) in &files {
                let bytes = std::fs::read(path).unwrap_or_default();
                for pw in passwords {
                    assert!(
                        !bytes.windows(pw.len()).any(|w| w == pw.as_bytes()),
                        "{when}: {} holds the password {pw}",
                        path.display()
                    );
                }
                all.extend(bytes);
            }
            // What is stored is the HA1 (RFC 7616 §3.4.2): proof that the scan read the data.
            let ha1 = h("MD5", &format!("p1:plain.test:{}", passwords[0]));
            assert!(
                all.windows(ha1.len()).any(|w| w == ha1.as_bytes()),
                "{when}: p1's HA1 is nowhere in {files:?}"
            );
            files
        };
        let files = scan("running");
        note(format!("scanned {files:?}"));
        let out = core.output();
        for pw in passwords {
            assert!(!out.contains(pw), "the log holds the password {pw}");
        }
        core.kill_9();
        scan("after kill -9");
    })
    .await;
}
