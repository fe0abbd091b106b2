//! The directory on a real SQLite file: domains, users, HA1 credentials.

mod common;

use std::sync::Arc;

use holdfast_store::{ha1, DigestAlgorithm, Directory, Domain, Entity, SqliteStore, StoreError};
use md5::Md5;
use sha2::{Digest, Sha256};

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn ha1_matches_rfc_2617_md5_vector() {
    // RFC 2617 §3.5.
    assert_eq!(
        ha1(
            DigestAlgorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life"
        ),
        "939e7578ed9e3c518a452acee763bce9"
    );
}

#[test]
fn ha1_matches_rfc_7616_vectors() {
    // RFC 7616 §3.9.1 publishes responses, not HA1. The SHA-256 HA1 below was computed
    // independently: printf 'Mufasa:http-auth@example.org:Circle of Life' | sha256sum
    let sha256 = ha1(
        DigestAlgorithm::Sha256,
        "Mufasa",
        "http-auth@example.org",
        "Circle of Life",
    );
    assert_eq!(
        sha256,
        "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
    );
    let md5 = ha1(
        DigestAlgorithm::Md5,
        "Mufasa",
        "http-auth@example.org",
        "Circle of Life",
    );
    assert_eq!(md5, "3d78807defe7de2157e2b0b6573a855f");

    // And through to the RFC's published responses (qop=auth, RFC 7616 §3.4.1).
    fn hex<D: Digest>(input: &str) -> String {
        D::digest(input.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
    fn response<D: Digest>(ha1: &str) -> String {
        let ha2 = hex::<D>("GET:/dir/index.html");
        hex::<D>(&format!(
            "{ha1}:7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v:00000001:\
             f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ:auth:{ha2}"
        ))
    }
    assert_eq!(
        response::<Sha256>(&sha256),
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
    assert_eq!(response::<Md5>(&md5), "8ca523f5e9506fed4657c9700eebdbec");
}

#[tokio::test]
async fn domains_add_list_delete() {
    let (_dir, store) = open();
    assert_eq!(
        store.add_domain("Example.COM").await.unwrap(),
        Domain {
            name: "example.com".into()
        }
    );
    store.add_domain("b.example").await.unwrap();
    assert_eq!(
        store.add_domain("EXAMPLE.com").await,
        Err(StoreError::AlreadyExists {
            entity: Entity::Domain,
            key: "example.com".into()
        })
    );
    let names: Vec<String> = store
        .list_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["b.example", "example.com"]);

    store.delete_domain("b.example", false).await.unwrap();
    assert!(matches!(
        store.delete_domain("b.example", false).await,
        Err(StoreError::NotFound {
            entity: Entity::Domain,
            ..
        })
    ));
    assert_eq!(store.list_domains().await.unwrap().len(), 1);
}

#[tokio::test]
async fn deleting_a_domain_with_users_needs_cascade() {
    let (_dir, store) = open();
    store.add_domain("example.com").await.unwrap();
    store.add_domain("other.example").await.unwrap();
    store
        .add_user("alice", "example.com", "pw-a")
        .await
        .unwrap();
    store.add_user("bob", "example.com", "pw-b").await.unwrap();
    store
        .add_user("carol", "other.example", "pw-c")
        .await
        .unwrap();

    assert_eq!(
        store.delete_domain("example.com", false).await,
        Err(StoreError::Conflict {
            entity: Entity::Domain,
            key: "example.com".into(),
            dependents: 2
        })
    );
    assert_eq!(store.list_users(None).await.unwrap().len(), 3);

    store.delete_domain("example.com", true).await.unwrap();
    let users = store.list_users(None).await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].username, "carol");
    assert!(store
        .credentials("alice", "example.com")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn users_add_set_password_delete_list() {
    let (_dir, store) = open();
    assert_eq!(
        store.add_user("alice", "example.com", "pw").await,
        Err(StoreError::NotFound {
            entity: Entity::Domain,
            key: "example.com".into()
        })
    );
    store.add_domain("example.com").await.unwrap();
    store.add_domain("b.example").await.unwrap();

    let alice = store
        .add_user("alice", "Example.com", "secret-1")
        .await
        .unwrap();
    assert_eq!(alice.domain, "example.com");
    assert_eq!(
        alice.ha1_md5,
        ha1(DigestAlgorithm::Md5, "alice", "example.com", "secret-1")
    );
    assert_eq!(
        alice.ha1_sha256,
        ha1(DigestAlgorithm::Sha256, "alice", "example.com", "secret-1")
    );
    assert!(alice.created_at > 1_600_000_000, "{}", alice.created_at);
    assert_eq!(
        store.add_user("alice", "example.com", "other").await,
        Err(StoreError::AlreadyExists {
            entity: Entity::User,
            key: "alice@example.com".into()
        })
    );
    // Unique per domain, not globally; usernames are case-sensitive.
    store.add_user("alice", "b.example", "pw").await.unwrap();
    store.add_user("Alice", "example.com", "pw").await.unwrap();

    assert_eq!(
        store
            .credentials("alice", "EXAMPLE.COM")
            .await
            .unwrap()
            .as_ref(),
        Some(&alice)
    );

    store
        .set_password("alice", "example.com", "secret-2")
        .await
        .unwrap();
    let changed = store
        .credentials("alice", "example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        changed.ha1(DigestAlgorithm::Md5),
        ha1(DigestAlgorithm::Md5, "alice", "example.com", "secret-2")
    );
    assert_eq!(
        changed.ha1(DigestAlgorithm::Sha256),
        ha1(DigestAlgorithm::Sha256, "alice", "example.com", "secret-2")
    );
    assert_eq!(changed.created_at, alice.created_at);
    assert!(matches!(
        store.set_password("nobody", "example.com", "x").await,
        Err(StoreError::NotFound {
            entity: Entity::User,
            ..
        })
    ));

    let listed: Vec<(String, String)> = store
        .list_users(None)
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.domain, u.username))
        .collect();
    assert_eq!(
        listed,
        [
            ("b.example".into(), "alice".into()),
            ("example.com".into(), "Alice".into()),
            ("example.com".into(), "alice".into()),
        ]
    );
    assert_eq!(store.list_users(Some("B.example")).await.unwrap().len(), 1);
    assert!(matches!(
        store.list_users(Some("nowhere.example")).await,
        Err(StoreError::NotFound {
            entity: Entity::Domain,
            ..
        })
    ));

    store.delete_user("alice", "example.com").await.unwrap();
    assert!(store
        .credentials("alice", "example.com")
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        store.delete_user("alice", "example.com").await,
        Err(StoreError::NotFound {
            entity: Entity::User,
            ..
        })
    ));
    assert_eq!(store.list_users(None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn invalid_input_is_refused_and_unknown_credentials_are_none() {
    let (_dir, store) = open();
    store.add_domain("example.com").await.unwrap();
    for (username, domain, password, field) in [
        ("", "example.com", "pw", "username"),
        ("a b", "example.com", "pw", "username"),
        ("a@b", "example.com", "pw", "username"),
        ("a:b", "example.com", "pw", "username"),
        ("alice", "example.com", "", "password"),
        ("alice", "", "pw", "domain"),
        ("alice", "exa mple.com", "pw", "domain"),
        ("alice", "a..b", "pw", "domain"),
    ] {
        match store.add_user(username, domain, password).await {
            Err(StoreError::Invalid { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{username:?} {domain:?} {password:?}: {other:?}"),
        }
    }
    assert!(matches!(
        store.add_domain("-bad-.example").await,
        Err(StoreError::Invalid {
            field: "domain",
            ..
        })
    ));
    // Names from a peer's Authorization header that could never be stored.
    assert_eq!(store.credentials("a\u{0}b", "example.com").await, Ok(None));
    assert_eq!(store.credentials("alice", "\u{7f}").await, Ok(None));
    assert_eq!(store.credentials("nobody", "example.com").await, Ok(None));
    assert!(store.list_users(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn no_plaintext_password_reaches_the_database_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = "Plaintext-Marker-One-7f3a";
    let second = "Plaintext-Marker-Two-9c1e";
    let expected_ha1 = {
        let store = SqliteStore::open(dir.path()).unwrap();
        store.add_domain("example.com").await.unwrap();
        store.add_user("alice", "example.com", first).await.unwrap();
        store
            .set_password("alice", "example.com", second)
            .await
            .unwrap();
        store.add_user("bob", "example.com", first).await.unwrap();
        // Read while the store is open (the WAL holds the data) and after it closed.
        let bytes = common::database_bytes(dir.path());
        assert!(!common::contains(&bytes, first.as_bytes()));
        assert!(!common::contains(&bytes, second.as_bytes()));
        ha1(DigestAlgorithm::Sha256, "alice", "example.com", second)
    };
    let bytes = common::database_bytes(dir.path());
    assert!(!bytes.is_empty());
    assert!(!common::contains(&bytes, first.as_bytes()));
    assert!(!common::contains(&bytes, second.as_bytes()));
    // The scan does see the stored values: the HA1 is there.
    assert!(common::contains(&bytes, expected_ha1.as_bytes()));
}

#[tokio::test]
async fn works_as_a_trait_object() {
    let (_dir, store) = open();
    let directory: Arc<dyn Directory> = Arc::new(store);
    directory.add_domain("example.com").await.unwrap();
    directory
        .add_user("alice", "example.com", "pw")
        .await
        .unwrap();
    let task = {
        let directory = Arc::clone(&directory);
        tokio::spawn(async move { directory.credentials("alice", "example.com").await })
    };
    assert!(task.await.unwrap().unwrap().is_some());
}
