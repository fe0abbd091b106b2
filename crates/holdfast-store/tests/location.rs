//! The location service on a real SQLite file: bindings, identity, expiry, reopen.

mod common;

use std::sync::Arc;

use common::binding;
use holdfast_store::{Binding, BindingOp, Location, SqliteStore, StoreError};

const NOW: i64 = 1_700_000_000;

fn contacts(bindings: &[Binding]) -> Vec<&str> {
    bindings.iter().map(|b| b.contact.as_str()).collect()
}

#[tokio::test]
async fn upsert_replaces_the_same_contact_and_loads_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut full = binding("alice@example.com", "sip:alice@192.0.2.10:5060", NOW + 60);
    full.path = vec![
        "<sip:edge.example.com;lr>".into(),
        "<sip:\"odd\",\n\u{0}chars;lr>".into(),
    ];
    full.connection = Some(u64::MAX);
    full.user_agent = Some("Phone/1.0".into());
    full.transport = "tcp".into();
    full.q = 500;
    full.cseq = u32::MAX;
    store
        .apply(vec![
            BindingOp::Upsert(full.clone()),
            BindingOp::Upsert(binding("bob@example.com", "sip:bob@192.0.2.11", NOW + 60)),
        ])
        .await
        .unwrap();
    let loaded = store.load_unexpired(NOW).await.unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0], full);

    // Same (aor, contact): replaced, not added.
    let mut refreshed = full.clone();
    refreshed.expires_at = NOW + 3600;
    refreshed.cseq = 2;
    refreshed.path.clear();
    refreshed.connection = None;
    store
        .apply(vec![BindingOp::Upsert(refreshed.clone())])
        .await
        .unwrap();
    let loaded = store.load_unexpired(NOW).await.unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0], refreshed);
}

#[tokio::test]
async fn instance_and_reg_id_identify_a_binding() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let aor = "alice@example.com";
    let instance = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";
    let flow = |contact: &str, reg_id: Option<u32>| {
        let mut b = binding(aor, contact, NOW + 60);
        b.instance = Some(instance.to_owned());
        b.reg_id = reg_id;
        b
    };
    store
        .apply(vec![
            BindingOp::Upsert(flow("sip:alice@192.0.2.10:1111;transport=tcp", Some(1))),
            BindingOp::Upsert(flow("sip:alice@192.0.2.10:2222;transport=tcp", Some(2))),
        ])
        .await
        .unwrap();
    assert_eq!(store.load_unexpired(NOW).await.unwrap().len(), 2);

    // The device re-registers flow 1 from a new port: same instance and reg-id, so the
    // binding is replaced even though the Contact URI changed (RFC 5626 §6).
    store
        .apply(vec![BindingOp::Upsert(flow(
            "sip:alice@192.0.2.10:3333;transport=tcp",
            Some(1),
        ))])
        .await
        .unwrap();
    let loaded = store.load_unexpired(NOW).await.unwrap();
    assert_eq!(
        contacts(&loaded),
        [
            "sip:alice@192.0.2.10:2222;transport=tcp",
            "sip:alice@192.0.2.10:3333;transport=tcp"
        ]
    );

    // Instance without reg-id (RFC 5627) is a third identity; a plain contact equal to
    // an instance binding's contact is a fourth.
    store
        .apply(vec![
            BindingOp::Upsert(flow("sip:alice@192.0.2.10:4444", None)),
            BindingOp::Upsert(binding(
                aor,
                "sip:alice@192.0.2.10:3333;transport=tcp",
                NOW + 60,
            )),
        ])
        .await
        .unwrap();
    assert_eq!(store.load_unexpired(NOW).await.unwrap().len(), 4);
}

#[tokio::test]
async fn remove_and_remove_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store
        .apply(vec![
            BindingOp::Upsert(binding("alice@example.com", "sip:a1@192.0.2.1", NOW + 60)),
            BindingOp::Upsert(binding("alice@example.com", "sip:a2@192.0.2.2", NOW + 60)),
            BindingOp::Upsert(binding("alice@example.com", "sip:a3@192.0.2.3", NOW + 60)),
            BindingOp::Upsert(binding("bob@example.com", "sip:a1@192.0.2.1", NOW + 60)),
        ])
        .await
        .unwrap();

    store
        .apply(vec![BindingOp::Remove {
            aor: "alice@example.com".into(),
            contact: "sip:a1@192.0.2.1".into(),
        }])
        .await
        .unwrap();
    let loaded = store.load_unexpired(NOW).await.unwrap();
    assert_eq!(
        contacts(&loaded),
        ["sip:a2@192.0.2.2", "sip:a3@192.0.2.3", "sip:a1@192.0.2.1"]
    );
    assert_eq!(loaded[2].aor, "bob@example.com");

    // Removing what is not there is not an error (a repeated Expires: 0).
    store
        .apply(vec![BindingOp::Remove {
            aor: "alice@example.com".into(),
            contact: "sip:a1@192.0.2.1".into(),
        }])
        .await
        .unwrap();

    store
        .apply(vec![BindingOp::RemoveAll {
            aor: "alice@example.com".into(),
        }])
        .await
        .unwrap();
    let loaded = store.load_unexpired(NOW).await.unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].aor, "bob@example.com");
}

#[tokio::test]
async fn ops_apply_in_order_and_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let aor = "alice@example.com";
    // `Contact: *` then a new contact, in one REGISTER's worth of ops.
    store
        .apply(vec![BindingOp::Upsert(binding(
            aor,
            "sip:old@192.0.2.1",
            NOW + 60,
        ))])
        .await
        .unwrap();
    store
        .apply(vec![
            BindingOp::RemoveAll { aor: aor.into() },
            BindingOp::Upsert(binding(aor, "sip:new@192.0.2.2", NOW + 60)),
        ])
        .await
        .unwrap();
    assert_eq!(
        contacts(&store.load_unexpired(NOW).await.unwrap()),
        ["sip:new@192.0.2.2"]
    );

    // One invalid op: nothing of the call is applied.
    let result = store
        .apply(vec![
            BindingOp::RemoveAll { aor: aor.into() },
            BindingOp::Upsert(binding("", "sip:x@192.0.2.3", NOW + 60)),
        ])
        .await;
    assert!(matches!(
        result,
        Err(StoreError::Invalid { field: "aor", .. })
    ));
    for bad in [
        BindingOp::Upsert(binding(aor, "", NOW + 60)),
        BindingOp::Upsert(Binding {
            instance: Some(String::new()),
            ..binding(aor, "sip:x@192.0.2.3", NOW + 60)
        }),
        BindingOp::Remove {
            aor: aor.into(),
            contact: String::new(),
        },
        BindingOp::RemoveAll { aor: String::new() },
    ] {
        assert!(matches!(
            store.apply(vec![bad]).await,
            Err(StoreError::Invalid { .. })
        ));
    }
    assert_eq!(
        contacts(&store.load_unexpired(NOW).await.unwrap()),
        ["sip:new@192.0.2.2"]
    );
    store.apply(Vec::new()).await.unwrap();
}

#[tokio::test]
async fn queued_changes_apply_in_order_and_an_invalid_one_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let aor = "alice@example.com";
    let first = store
        .queue_apply_each(vec![
            vec![BindingOp::Upsert(binding(aor, "sip:a@192.0.2.1", NOW + 60))],
            // Refused before it reaches the database; its neighbours are not affected.
            vec![
                BindingOp::RemoveAll { aor: aor.into() },
                BindingOp::Upsert(binding(aor, "", NOW + 60)),
            ],
            vec![BindingOp::Upsert(binding(aor, "sip:b@192.0.2.2", NOW + 60))],
        ])
        .unwrap();
    // Queued after the first without waiting for it: applied after it.
    let second = store
        .queue_apply_each(vec![vec![
            BindingOp::RemoveAll { aor: aor.into() },
            BindingOp::Upsert(binding(aor, "sip:c@192.0.2.3", NOW + 60)),
        ]])
        .unwrap();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert!(first[0].is_ok() && first[2].is_ok(), "{first:?}");
    assert!(
        matches!(
            first[1],
            Err(StoreError::Invalid {
                field: "contact",
                ..
            })
        ),
        "{first:?}"
    );
    assert!(second[0].is_ok(), "{second:?}");
    assert_eq!(
        contacts(&store.load_unexpired(NOW).await.unwrap()),
        ["sip:c@192.0.2.3"]
    );
    assert!(store
        .queue_apply_each(Vec::new())
        .unwrap()
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_change_the_database_refuses_fails_alone_and_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    // A database that refuses one contact (as a full disk or a constraint would
    // refuse a write), set up from a connection of its own.
    rusqlite::Connection::open(dir.path().join(SqliteStore::FILE_NAME))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON bindings
             WHEN NEW.contact = 'sip:refused@192.0.2.9'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let aor = "alice@example.com";
    let done = store
        .queue_apply_each(vec![
            vec![BindingOp::Upsert(binding(aor, "sip:a@192.0.2.1", NOW + 60))],
            // Removes the binding above, then fails: both parts must be undone.
            vec![
                BindingOp::RemoveAll { aor: aor.into() },
                BindingOp::Upsert(binding(aor, "sip:refused@192.0.2.9", NOW + 60)),
            ],
            vec![BindingOp::Upsert(binding(aor, "sip:b@192.0.2.2", NOW + 60))],
        ])
        .unwrap()
        .await
        .unwrap();
    assert!(done[0].is_ok() && done[2].is_ok(), "{done:?}");
    assert!(done[1].is_err(), "{done:?}");
    assert_eq!(
        contacts(&store.load_unexpired(NOW).await.unwrap()),
        ["sip:a@192.0.2.1", "sip:b@192.0.2.2"]
    );
}

#[tokio::test]
async fn expiry_filters_loads_and_purge_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store
        .apply(vec![
            BindingOp::Upsert(binding("a@example.com", "sip:past@192.0.2.1", NOW - 1)),
            BindingOp::Upsert(binding("a@example.com", "sip:now@192.0.2.2", NOW)),
            BindingOp::Upsert(binding("a@example.com", "sip:soon@192.0.2.3", NOW + 1)),
            BindingOp::Upsert(binding("a@example.com", "sip:later@192.0.2.4", NOW + 3600)),
        ])
        .await
        .unwrap();
    // A binding whose expires_at is `now` has expired.
    assert_eq!(
        contacts(&store.load_unexpired(NOW).await.unwrap()),
        ["sip:later@192.0.2.4", "sip:soon@192.0.2.3"]
    );
    assert_eq!(store.load_unexpired(NOW - 10).await.unwrap().len(), 4);

    assert_eq!(store.purge_expired(NOW).await.unwrap(), 2);
    assert_eq!(store.purge_expired(NOW).await.unwrap(), 0);
    // Purged rows are gone even for a caller that asks about an earlier time.
    assert_eq!(store.load_unexpired(NOW - 10).await.unwrap().len(), 2);
    assert_eq!(store.purge_expired(NOW + 3600).await.unwrap(), 2);
    assert!(store.load_unexpired(i64::MIN).await.unwrap().is_empty());
}

#[tokio::test]
async fn bindings_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        for i in 0..50 {
            let mut b = binding(
                &format!("user{i:02}@example.com"),
                &format!("sip:u{i}@192.0.2.1"),
                NOW + 60,
            );
            b.reg_id = Some(i);
            b.instance = (i % 2 == 0).then(|| format!("<urn:uuid:{i}>"));
            expected.push(b.clone());
            store.apply(vec![BindingOp::Upsert(b)]).await.unwrap();
        }
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.load_unexpired(NOW).await.unwrap(), expected);
}

#[tokio::test]
async fn works_as_a_trait_object() {
    let dir = tempfile::tempdir().unwrap();
    let location: Arc<dyn Location> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let task = {
        let location = Arc::clone(&location);
        tokio::spawn(async move {
            location
                .apply(vec![BindingOp::Upsert(binding(
                    "a@example.com",
                    "sip:a@192.0.2.1",
                    NOW + 60,
                ))])
                .await
        })
    };
    task.await.unwrap().unwrap();
    assert_eq!(location.load_unexpired(NOW).await.unwrap().len(), 1);
}
