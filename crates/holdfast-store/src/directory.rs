//! The directory: domains, and the users of each domain with their digest credentials.

use std::fmt;
use std::net::Ipv6Addr;

use futures::future::BoxFuture;
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::error::StoreError;

/// A SIP domain served by holdfast. Its name is also the digest realm of its users.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Domain {
    /// The host name (or IP literal), lower-cased.
    pub name: String,
}

/// A user of one domain, with its credentials as HA1 values only.
///
/// `Debug` leaves the HA1 values out: an HA1 is as good as the password within its realm.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The user part of the address of record; case-sensitive.
    pub username: String,
    /// The domain's name (lower-cased).
    pub domain: String,
    /// HA1 for `algorithm=MD5`, lower-case hex.
    pub ha1_md5: String,
    /// HA1 for `algorithm=SHA-256`, lower-case hex.
    pub ha1_sha256: String,
    /// When the user was created, Unix seconds, by the database's clock.
    pub created_at: i64,
}

impl User {
    /// The stored HA1 for `algorithm`, to check a digest response against.
    pub fn ha1(&self, algorithm: DigestAlgorithm) -> &str {
        match algorithm {
            DigestAlgorithm::Md5 => &self.ha1_md5,
            DigestAlgorithm::Sha256 => &self.ha1_sha256,
        }
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("domain", &self.domain)
            .field("ha1_md5", &"<redacted>")
            .field("ha1_sha256", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// The digest algorithms whose HA1 the directory keeps (RFC 7616 §3.4.2, RFC 8760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DigestAlgorithm {
    /// `MD5`: what every SIP device supports (RFC 3261 §22.4).
    Md5,
    /// `SHA-256` (RFC 8760 for SIP).
    Sha256,
}

/// HA1 = H(username ":" realm ":" password), as lower-case hex (RFC 7616 §3.4.2).
///
/// The directory stores this for realm = the domain name, never the password.
pub fn ha1(algorithm: DigestAlgorithm, username: &str, realm: &str, password: &str) -> String {
    fn digest<D: Digest>(username: &str, realm: &str, password: &str) -> String {
        let mut hasher = D::new();
        hasher.update(username.as_bytes());
        hasher.update(b":");
        hasher.update(realm.as_bytes());
        hasher.update(b":");
        hasher.update(password.as_bytes());
        lower_hex(&hasher.finalize())
    }
    match algorithm {
        DigestAlgorithm::Md5 => digest::<Md5>(username, realm, password),
        DigestAlgorithm::Sha256 => digest::<Sha256>(username, realm, password),
    }
}

fn lower_hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len().saturating_mul(2));
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            // A nibble is below 16, so from_digit always gives a digit.
            hex.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    hex
}

/// Domains and users.
///
/// Names are normalised by the store: a domain name is lower-cased (DNS names are
/// case-insensitive), a username is kept as given (the user part of a SIP URI is
/// case-sensitive, RFC 3261 §19.1.4). Every method takes the names as the caller has
/// them and returns the normalised form.
pub trait Directory: Send + Sync {
    /// Adds a domain. [`StoreError::AlreadyExists`] if it is there already.
    fn add_domain<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Domain, StoreError>>;

    /// Every domain, by name.
    fn list_domains(&self) -> BoxFuture<'_, Result<Vec<Domain>, StoreError>>;

    /// Deletes a domain. While it has users this is [`StoreError::Conflict`], unless
    /// `cascade`, which deletes its users with it.
    fn delete_domain<'a>(
        &'a self,
        name: &'a str,
        cascade: bool,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Adds a user to an existing domain, storing only the HA1 values of `password`
    /// with realm = the domain name. [`StoreError::NotFound`] for an unknown domain,
    /// [`StoreError::AlreadyExists`] if the domain has this user already.
    fn add_user<'a>(
        &'a self,
        username: &'a str,
        domain: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<User, StoreError>>;

    /// Replaces a user's credentials. [`StoreError::NotFound`] for an unknown user.
    fn set_password<'a>(
        &'a self,
        username: &'a str,
        domain: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Deletes a user. [`StoreError::NotFound`] for an unknown user.
    fn delete_user<'a>(
        &'a self,
        username: &'a str,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Users ordered by domain then username; only `domain`'s when given
    /// ([`StoreError::NotFound`] if that domain does not exist).
    fn list_users<'a>(
        &'a self,
        domain: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<User>, StoreError>>;

    /// The user, with its HA1 values, for digest authentication; `None` if unknown.
    fn credentials<'a>(
        &'a self,
        username: &'a str,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, StoreError>>;
}

const MAX_DOMAIN_BYTES: usize = 253;
const MAX_LABEL_BYTES: usize = 63;
const MAX_USERNAME_BYTES: usize = 255;
const MAX_PASSWORD_BYTES: usize = 1024;

/// A domain name as stored: a host name or IPv4 address, lower-cased, or an IPv6
/// reference in brackets (the host forms of RFC 3261 §25.1).
pub(crate) fn normalize_domain(name: &str) -> Result<String, StoreError> {
    let invalid = |reason| StoreError::Invalid {
        field: "domain",
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_DOMAIN_BYTES {
        return Err(invalid("longer than 253 bytes"));
    }
    let lower = name.to_ascii_lowercase();
    if let Some(reference) = lower.strip_prefix('[') {
        return match reference.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(_)) => Ok(lower),
            _ => Err(invalid("not a valid IPv6 reference")),
        };
    }
    for label in lower.split('.') {
        if label.is_empty() {
            return Err(invalid("has an empty label"));
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(invalid("has a label longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid("only letters, digits, '-' and '.' are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label starts or ends with '-'"));
        }
    }
    Ok(lower)
}

pub(crate) fn validate_username(username: &str) -> Result<(), StoreError> {
    let invalid = |reason| StoreError::Invalid {
        field: "username",
        reason,
    };
    if username.is_empty() {
        return Err(invalid("empty"));
    }
    if username.len() > MAX_USERNAME_BYTES {
        return Err(invalid("longer than 255 bytes"));
    }
    if username
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '@' || c == ':')
    {
        return Err(invalid(
            "control characters, white space, '@' and ':' are not allowed",
        ));
    }
    Ok(())
}

pub(crate) fn validate_password(password: &str) -> Result<(), StoreError> {
    let invalid = |reason| StoreError::Invalid {
        field: "password",
        reason,
    };
    if password.is_empty() {
        return Err(invalid("empty"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid("longer than 1024 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lower_cased_and_checked() {
        assert_eq!(normalize_domain("Example.COM").unwrap(), "example.com");
        assert_eq!(normalize_domain("192.0.2.1").unwrap(), "192.0.2.1");
        assert_eq!(normalize_domain("[2001:DB8::1]").unwrap(), "[2001:db8::1]");
        for bad in [
            "", "a..b", "a.", "-a.b", "a b", "a@b", "[::1", "[zz]", "é.com",
        ] {
            assert!(
                matches!(normalize_domain(bad), Err(StoreError::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert!(normalize_domain(&"a".repeat(254)).is_err());
        assert!(normalize_domain(&"a".repeat(64)).is_err());
    }

    #[test]
    fn usernames_and_passwords_are_checked() {
        assert!(validate_username("alice.smith+1").is_ok());
        for bad in ["", "a b", "a@b", "a:b", "a\u{0}b", "a\nb"] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
        assert!(validate_username(&"u".repeat(256)).is_err());
        assert!(validate_password("x").is_ok());
        assert!(validate_password("").is_err());
        assert!(validate_password(&"p".repeat(1025)).is_err());
    }

    #[test]
    fn debug_hides_ha1() {
        let user = User {
            username: "alice".into(),
            domain: "example.com".into(),
            ha1_md5: "secretmd5".into(),
            ha1_sha256: "secretsha".into(),
            created_at: 0,
        };
        let shown = format!("{user:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("alice"));
    }
}
