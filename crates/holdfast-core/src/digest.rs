//! Digest authentication of requests (RFC 3261 §22, RFC 7616, RFC 8760): challenges,
//! stateless nonces, and verification of credentials against stored HA1 values.
//!
//! - Challenges offer SHA-256 and MD5 (in the configured order), with `qop="auth"`.
//! - A nonce is `hex(timestamp) || hex(salt) || hex(HMAC-SHA256(secret, timestamp ||
//!   salt || realm))`: any node holding the secret can check it without state, and the
//!   salt (a per-challenge counter from a seed the shell draws at random) makes every
//!   challenge's nonce distinct, so clients challenged in the same second never share
//!   a nonce-count. It expires after
//!   [`DigestConfig::nonce_lifetime`]; an expired nonce gets a fresh challenge with
//!   `stale=true`.
//! - Replays are refused: the highest nonce-count seen per nonce is remembered (for the
//!   nonce's lifetime, in a bounded table), and a count that does not grow fails.
//! - Anti-enumeration: an unknown user is checked against a dummy HA1 with the same
//!   work as a known one, and fails the same way; the challenge never depends on the
//!   user.
//! - Comparison of digests is constant-time.
//!
//! Time is an input (seconds since the Unix epoch); nothing here reads a clock.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use holdfast_sip::auth::{Algorithm, DigestChallenge, DigestCredentials};
use md5::{Digest as _, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Stored credentials of one user: HA1 = H(username ":" realm ":" password), in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ha1 {
    /// MD5 HA1, lower-case hex.
    pub md5: String,
    /// SHA-256 HA1, lower-case hex.
    pub sha256: String,
}

impl Ha1 {
    /// Computes both HA1 values (RFC 7616 §3.4.2), with the realm being the domain.
    pub fn from_password(username: &str, realm: &str, password: &str) -> Ha1 {
        let a1 = format!("{username}:{realm}:{password}");
        Ha1 {
            md5: hex(&Md5::digest(a1.as_bytes())),
            sha256: hex(&Sha256::digest(a1.as_bytes())),
        }
    }
}

/// Settings of the verifier.
#[derive(Debug, Clone)]
pub struct DigestConfig {
    /// The per-node (or per-cluster) secret nonces are signed with.
    pub secret: Vec<u8>,
    /// Seconds a nonce stays valid.
    pub nonce_lifetime: u64,
    /// Most nonces whose counts are remembered at once.
    pub max_tracked_nonces: usize,
    /// The algorithms challenges offer, most preferred first (RFC 8760 §2.4). Some
    /// devices read only the first challenge, so the order is an interop choice.
    pub algorithms: Vec<Algorithm>,
    /// Where the per-challenge salt counter starts (the shell draws it at random).
    pub salt_seed: u64,
}

/// The outcome of checking credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The credentials are right.
    Authenticated,
    /// The nonce was ours but expired: challenge again with `stale=true`.
    Stale,
    /// Wrong password, unknown user, forged or replayed nonce, or malformed
    /// credentials: answer 403 (the same for every cause).
    Failed,
}

/// Issues challenges and verifies credentials.
#[derive(Debug)]
pub struct DigestAuth {
    config: DigestConfig,
    /// nonce → (issued at, highest nonce-count seen).
    counts: HashMap<Bytes, (u64, u32)>,
    /// The tracked nonces in the order they were first used, with that time: a
    /// nonce first used at `t` is stale by `t + nonce_lifetime` at the latest, so the
    /// front of this queue is always the next to forget, in O(1).
    order: VecDeque<(u64, Bytes)>,
    /// The next challenge's salt.
    salt: u64,
}

type HmacSha256 = Hmac<Sha256>;

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for &b in bytes {
        s.push(char::from(
            DIGITS.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
        ));
        s.push(char::from(
            DIGITS.get(usize::from(b & 0x0f)).copied().unwrap_or(b'0'),
        ));
    }
    s
}

fn h(algorithm: Algorithm, data: &[u8]) -> String {
    match algorithm {
        Algorithm::Sha256 | Algorithm::Sha256Sess => hex(&Sha256::digest(data)),
        _ => hex(&Md5::digest(data)),
    }
}

impl DigestAuth {
    /// A verifier with the given settings.
    pub fn new(config: DigestConfig) -> DigestAuth {
        DigestAuth {
            salt: config.salt_seed,
            config,
            counts: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn mac(&self, ts: u64, salt: u64, realm: &[u8]) -> String {
        // HMAC accepts keys of any length; the fallback is never taken.
        let mut mac = match HmacSha256::new_from_slice(&self.config.secret) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(&ts.to_be_bytes());
        mac.update(&salt.to_be_bytes());
        mac.update(realm);
        let tag = mac.finalize().into_bytes();
        hex(tag.get(..16).unwrap_or_default())
    }

    /// A fresh nonce for `realm` at time `now`, distinct from every other one issued.
    pub fn nonce(&mut self, realm: &[u8], now: u64) -> String {
        let salt = self.salt;
        self.salt = self.salt.wrapping_add(1);
        self.nonce_with(realm, now, salt)
    }

    /// The nonce for `realm` issued at `issued` with `salt`: the same inputs give the
    /// same nonce. The caller keeps salts distinct (see [`challenges_with`](Self::challenges_with)).
    pub fn nonce_with(&self, realm: &[u8], issued: u64, salt: u64) -> String {
        format!("{issued:016x}{salt:016x}{}", self.mac(issued, salt, realm))
    }

    /// The challenges for a 401 / 407, one per algorithm in `algorithms` (or the
    /// configured ones when `None`), in order, all with one fresh nonce.
    pub fn challenges(
        &mut self,
        realm: &[u8],
        stale: bool,
        now: u64,
        algorithms: Option<&[Algorithm]>,
    ) -> Vec<Vec<u8>> {
        let salt = self.salt;
        self.salt = self.salt.wrapping_add(1);
        self.challenges_with(realm, stale, now, salt, algorithms)
    }

    /// [`challenges`](Self::challenges) with the nonce's time and salt given: for a
    /// challenge sent without a transaction, whose retransmitted request must get the
    /// same challenge again. Salts must differ between requests, or clients would share
    /// a nonce and its count; a keyed hash of the request's identity does.
    pub fn challenges_with(
        &self,
        realm: &[u8],
        stale: bool,
        issued: u64,
        salt: u64,
        algorithms: Option<&[Algorithm]>,
    ) -> Vec<Vec<u8>> {
        let nonce = Bytes::from(self.nonce_with(realm, issued, salt));
        algorithms
            .unwrap_or(&self.config.algorithms)
            .iter()
            .map(|alg| {
                DigestChallenge {
                    realm: Some(Bytes::copy_from_slice(realm)),
                    nonce: Some(nonce.clone()),
                    algorithm: alg.as_str().map(|a| Bytes::from_static(a.as_bytes())),
                    qop: vec![Bytes::from_static(b"auth")],
                    stale,
                    ..DigestChallenge::default()
                }
                .to_header_value()
            })
            .collect()
    }

    /// Checks `nonce` was issued by us for `realm`; returns its timestamp.
    fn nonce_time(&self, nonce: &[u8], realm: &[u8]) -> Option<u64> {
        let field = |range: std::ops::Range<usize>| -> Option<u64> {
            u64::from_str_radix(std::str::from_utf8(nonce.get(range)?).ok()?, 16).ok()
        };
        let ts = field(0..16)?;
        let salt = field(16..32)?;
        let expected = self.mac(ts, salt, realm);
        let given = nonce.get(32..)?;
        bool::from(given.ct_eq(expected.as_bytes())).then_some(ts)
    }

    /// Verifies credentials for a request with `method`. `stored` is the user's HA1 when
    /// the user exists in `realm`; `None` runs the same checks against a dummy so that
    /// an unknown user costs and answers exactly like a wrong password.
    pub fn verify(
        &mut self,
        creds: &DigestCredentials,
        method: &[u8],
        realm: &[u8],
        stored: Option<&Ha1>,
        now: u64,
    ) -> Verdict {
        let (Some(nonce), Some(response), Some(uri), Some(cred_realm)) =
            (&creds.nonce, &creds.response, &creds.uri, &creds.realm)
        else {
            return Verdict::Failed;
        };
        if cred_realm.as_ref() != realm {
            return Verdict::Failed;
        }
        let Some(issued) = self.nonce_time(nonce, realm) else {
            return Verdict::Failed;
        };
        if now.saturating_sub(issued) > self.config.nonce_lifetime
            || issued > now.saturating_add(60)
        {
            return Verdict::Stale;
        }
        let algorithm = creds.algorithm_kind();
        if !matches!(algorithm, Algorithm::Md5 | Algorithm::Sha256) {
            return Verdict::Failed;
        }
        // qop=auth is what we offer; RFC 2069 style (no qop) is refused.
        let (Some(qop), Some(nc), Some(cnonce)) = (&creds.qop, creds.nc, &creds.cnonce) else {
            return Verdict::Failed;
        };
        if !qop.eq_ignore_ascii_case(b"auth") {
            return Verdict::Failed;
        }
        let dummy;
        let ha1 = match stored {
            Some(s) => s,
            None => {
                dummy = Ha1::from_password("", "", "");
                &dummy
            }
        };
        let ha1 = match algorithm {
            Algorithm::Sha256 => &ha1.sha256,
            _ => &ha1.md5,
        };
        let mut a2 = Vec::with_capacity(method.len().saturating_add(uri.len()).saturating_add(1));
        a2.extend_from_slice(method);
        a2.push(b':');
        a2.extend_from_slice(uri);
        let ha2 = h(algorithm, &a2);
        let mut kd = Vec::with_capacity(256);
        kd.extend_from_slice(ha1.as_bytes());
        kd.push(b':');
        kd.extend_from_slice(nonce);
        kd.push(b':');
        kd.extend_from_slice(format!("{nc:08x}").as_bytes());
        kd.push(b':');
        kd.extend_from_slice(cnonce);
        kd.push(b':');
        kd.extend_from_slice(qop);
        kd.push(b':');
        kd.extend_from_slice(ha2.as_bytes());
        let expected = h(algorithm, &kd);
        let lower: Vec<u8> = response.iter().map(u8::to_ascii_lowercase).collect();
        let right = bool::from(lower.ct_eq(expected.as_bytes())) && stored.is_some();
        if !right {
            return Verdict::Failed;
        }
        // Replay: the count must grow for this nonce.
        self.record_count(nonce, issued, nc, now)
    }

    fn record_count(&mut self, nonce: &Bytes, issued: u64, nc: u32, now: u64) -> Verdict {
        if let Some((_, seen)) = self.counts.get_mut(nonce) {
            if nc <= *seen {
                return Verdict::Failed;
            }
            *seen = nc;
            return Verdict::Authenticated;
        }
        self.forget_stale(now);
        if self.counts.len() >= self.config.max_tracked_nonces {
            // Full of live nonces: this one cannot be tracked, so it cannot be used;
            // an honest client retries with a fresh nonce.
            return Verdict::Stale;
        }
        self.counts.insert(nonce.clone(), (issued, nc));
        self.order.push_back((now, nonce.clone()));
        Verdict::Authenticated
    }

    /// Forgets the counts of nonces that are stale whatever their count.
    fn forget_stale(&mut self, now: u64) {
        let lifetime = self.config.nonce_lifetime;
        while let Some((first_used, _)) = self.order.front() {
            if now.saturating_sub(*first_used) <= lifetime {
                break;
            }
            if let Some((_, nonce)) = self.order.pop_front() {
                self.counts.remove(&nonce);
            }
        }
    }

    /// Nonces whose counts are remembered now.
    pub fn tracked_nonces(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_sip::auth::Credentials;

    fn auth() -> DigestAuth {
        DigestAuth::new(DigestConfig {
            secret: b"test secret".to_vec(),
            nonce_lifetime: 300,
            max_tracked_nonces: 1000,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            salt_seed: 7,
        })
    }

    /// Builds credentials the way a client does (RFC 7616 §3.4.1).
    fn respond(
        alg: Algorithm,
        user: &str,
        realm: &str,
        password: &str,
        nonce: &str,
        nc: u32,
        uri: &str,
    ) -> DigestCredentials {
        let ha1 = Ha1::from_password(user, realm, password);
        let ha1 = if alg == Algorithm::Sha256 {
            ha1.sha256
        } else {
            ha1.md5
        };
        let ha2 = h(alg, format!("REGISTER:{uri}").as_bytes());
        let resp = h(
            alg,
            format!("{ha1}:{nonce}:{nc:08x}:0a4f113b:auth:{ha2}").as_bytes(),
        );
        DigestCredentials {
            username: Some(Bytes::from(user.to_string())),
            realm: Some(Bytes::from(realm.to_string())),
            nonce: Some(Bytes::from(nonce.to_string())),
            uri: Some(Bytes::from(uri.to_string())),
            response: Some(Bytes::from(resp)),
            algorithm: alg.as_str().map(|a| Bytes::from(a.to_string())),
            cnonce: Some(Bytes::from_static(b"0a4f113b")),
            qop: Some(Bytes::from_static(b"auth")),
            nc: Some(nc),
            ..DigestCredentials::default()
        }
    }

    /// RFC 7616 §3.9.1: the SHA-256 and MD5 responses of the worked example.
    #[test]
    fn rfc7616_vectors() {
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let realm = "http-auth@example.org";
        let ha1 = Ha1::from_password("Mufasa", realm, "Circle of Life");
        for (alg, ha1, expected) in [
            (Algorithm::Md5, &ha1.md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                &ha1.sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let ha2 = h(alg, b"GET:/dir/index.html");
            let got = h(
                alg,
                format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}").as_bytes(),
            );
            assert_eq!(got, expected, "{alg:?}");
        }
    }

    /// RFC 2617 §3.5 / RFC 3261-era MD5 HA1.
    #[test]
    fn ha1_vectors() {
        assert_eq!(
            Ha1::from_password("Mufasa", "testrealm@host.com", "Circle Of Life").md5,
            "939e7578ed9e3c518a452acee763bce9"
        );
    }

    #[test]
    fn verify_accepts_right_and_refuses_wrong_replayed_stale() {
        let mut a = auth();
        let realm = "example.com";
        let stored = Ha1::from_password("alice", realm, "pw");
        let nonce = a.nonce(realm.as_bytes(), 1000);
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            let nc = if alg == Algorithm::Md5 { 5 } else { 1 };
            let c = respond(alg, "alice", realm, "pw", &nonce, nc, "sip:example.com");
            assert_eq!(
                a.verify(&c, b"REGISTER", realm.as_bytes(), Some(&stored), 1001),
                Verdict::Authenticated
            );
            // The same count again is a replay.
            assert_eq!(
                a.verify(&c, b"REGISTER", realm.as_bytes(), Some(&stored), 1002),
                Verdict::Failed
            );
        }
        let wrong = respond(
            Algorithm::Md5,
            "alice",
            realm,
            "bad",
            &nonce,
            9,
            "sip:example.com",
        );
        assert_eq!(
            a.verify(&wrong, b"REGISTER", realm.as_bytes(), Some(&stored), 1003),
            Verdict::Failed
        );
        let right = respond(
            Algorithm::Md5,
            "alice",
            realm,
            "pw",
            &nonce,
            10,
            "sip:example.com",
        );
        assert_eq!(
            a.verify(
                &right,
                b"REGISTER",
                realm.as_bytes(),
                Some(&stored),
                1000 + 301
            ),
            Verdict::Stale
        );
        // A nonce we never issued.
        let forged = respond(
            Algorithm::Md5,
            "alice",
            realm,
            "pw",
            "00000000000003e8deadbeef",
            1,
            "sip:example.com",
        );
        assert_eq!(
            a.verify(&forged, b"REGISTER", realm.as_bytes(), Some(&stored), 1001),
            Verdict::Failed
        );
        // A nonce for another realm.
        let other = a.nonce(b"other.example", 1000);
        let c = respond(
            Algorithm::Md5,
            "alice",
            realm,
            "pw",
            &other,
            1,
            "sip:example.com",
        );
        assert_eq!(
            a.verify(&c, b"REGISTER", realm.as_bytes(), Some(&stored), 1001),
            Verdict::Failed
        );
    }

    #[test]
    fn nonces_of_one_second_differ_and_each_counts_alone() {
        let mut a = auth();
        let realm = "example.com";
        let stored = Ha1::from_password("alice", realm, "pw");
        let n1 = a.nonce(realm.as_bytes(), 1000);
        let n2 = a.nonce(realm.as_bytes(), 1000);
        assert_ne!(n1, n2);
        for n in [&n1, &n2] {
            let c = respond(
                Algorithm::Md5,
                "alice",
                realm,
                "pw",
                n,
                1,
                "sip:example.com",
            );
            assert_eq!(
                a.verify(&c, b"REGISTER", realm.as_bytes(), Some(&stored), 1000),
                Verdict::Authenticated
            );
        }
        let only_md5 = a.challenges(realm.as_bytes(), false, 1000, Some(&[Algorithm::Md5]));
        assert_eq!(only_md5.len(), 1);
    }

    #[test]
    fn the_nonce_table_forgets_stale_nonces_and_refuses_past_its_cap() {
        let mut a = DigestAuth::new(DigestConfig {
            max_tracked_nonces: 3,
            ..auth().config
        });
        let realm = "example.com";
        let stored = Ha1::from_password("alice", realm, "pw");
        let use_fresh = |a: &mut DigestAuth, now: u64| {
            let n = a.nonce(realm.as_bytes(), now);
            let c = respond(
                Algorithm::Md5,
                "alice",
                realm,
                "pw",
                &n,
                1,
                "sip:example.com",
            );
            a.verify(&c, b"REGISTER", realm.as_bytes(), Some(&stored), now)
        };
        for now in [1000, 1001, 1002] {
            assert_eq!(use_fresh(&mut a, now), Verdict::Authenticated);
        }
        // Full of live nonces: a fourth cannot be tracked, so it is refused as stale.
        assert_eq!(use_fresh(&mut a, 1003), Verdict::Stale);
        assert_eq!(a.tracked_nonces(), 3);
        // Once the first has outlived the nonce lifetime it is forgotten, and there is
        // room again; the table never holds a stale nonce for longer than that.
        assert_eq!(use_fresh(&mut a, 1301), Verdict::Authenticated);
        assert_eq!(a.tracked_nonces(), 3);
        assert_eq!(use_fresh(&mut a, 1700), Verdict::Authenticated);
        assert_eq!(a.tracked_nonces(), 1);
    }

    #[test]
    fn unknown_user_fails_like_a_wrong_password() {
        let mut a = auth();
        let nonce = a.nonce(b"example.com", 1000);
        let c = respond(
            Algorithm::Md5,
            "nobody",
            "example.com",
            "",
            &nonce,
            1,
            "sip:example.com",
        );
        assert_eq!(
            a.verify(&c, b"REGISTER", b"example.com", None, 1001),
            Verdict::Failed
        );
    }

    #[test]
    fn challenges_offer_sha256_then_md5_and_parse_back() {
        let mut a = auth();
        let ch = a.challenges(b"example.com", true, 1000, None);
        assert_eq!(ch.len(), 2);
        let parsed: Vec<_> = ch
            .iter()
            .map(
                |c| match holdfast_sip::auth::Challenge::parse(&Bytes::from(c.clone())).unwrap() {
                    holdfast_sip::auth::Challenge::Digest(d) => d,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(parsed[0].algorithm_kind(), Algorithm::Sha256);
        assert_eq!(parsed[1].algorithm_kind(), Algorithm::Md5);
        assert!(parsed
            .iter()
            .all(|p| p.stale && p.qop == vec![Bytes::from_static(b"auth")]));
        assert_eq!(parsed[0].nonce, parsed[1].nonce);
        // Credentials serialized by a client parse into what verify expects.
        let c = respond(
            Algorithm::Sha256,
            "alice",
            "example.com",
            "pw",
            "n",
            1,
            "sip:x",
        );
        let back = match Credentials::parse(&Bytes::from(c.to_header_value())).unwrap() {
            Credentials::Digest(d) => d,
            other => panic!("{other:?}"),
        };
        assert_eq!(back.response, c.response);
    }
}
