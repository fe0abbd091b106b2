//! Call records on a real SQLite file: upsert by id, open calls, every filter, keyset
//! paging, bad input, reopening, and the non-blocking queue.

mod common;

use std::collections::HashSet;

use common::{call, ended, failed, history};
use holdfast_store::{
    BackendKind, CallRecord, CdrFilter, CdrOp, CdrPage, Cdrs, Disposition, HangupSide, SqliteStore,
    StoreError,
};

/// 2023-11-14T22:13:20Z, in Unix milliseconds.
const T0: i64 = 1_700_000_000_000;

fn puts(records: &[CallRecord]) -> Vec<CdrOp> {
    records.iter().cloned().map(CdrOp::Put).collect()
}

fn ids(page: &CdrPage) -> Vec<&str> {
    page.records.iter().map(|r| r.id.as_str()).collect()
}

/// Every record matching `filter`, page by page with `limit`; also returns how many
/// pages it took.
async fn all_pages(store: &SqliteStore, filter: CdrFilter, limit: u32) -> (Vec<String>, usize) {
    let mut filter = CdrFilter { limit, ..filter };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.query(filter.clone()).await.unwrap();
        pages += 1;
        assert!(page.records.len() <= limit as usize);
        seen.extend(page.records.iter().map(|r| r.id.clone()));
        match page.next_cursor {
            Some(cursor) => {
                assert_eq!(
                    page.records.len(),
                    limit as usize,
                    "a short page has a cursor"
                );
                filter.cursor = Some(cursor);
            }
            None => return (seen, pages),
        }
        assert!(pages < 10_000, "paging does not end");
    }
}

/// The ids of `records` newest first: started_at descending, then id descending.
fn newest_first(records: &[CallRecord]) -> Vec<String> {
    let mut sorted: Vec<&CallRecord> = records.iter().collect();
    sorted.sort_by(|a, b| (b.started_at_ms, &b.id).cmp(&(a.started_at_ms, &a.id)));
    sorted.into_iter().map(|r| r.id.clone()).collect()
}

#[tokio::test]
async fn an_open_call_is_closed_by_a_second_put_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut open = call("c1", "alice@example.com", "bob@example.com", T0);
    open.transport = "wss".into();
    open.source = "[2001:db8::1]:5061".into();
    open.request_uri = "sip:bob@example.com;transport=ws?odd=\"quoted\"".into();
    store.record(vec![CdrOp::Put(open.clone())]).await.unwrap();

    assert_eq!(
        store.open_calls("node-a").await.unwrap(),
        std::slice::from_ref(&open)
    );
    let page = store.query(CdrFilter::default()).await.unwrap();
    assert_eq!(page.records, [open.clone()]);
    assert_eq!(page.next_cursor, None);
    assert_eq!(
        page.records[0].duration_ms(),
        0,
        "an open call has no duration yet"
    );

    let closed = ended(open.clone(), 61_500, HangupSide::Callee);
    store
        .record(vec![CdrOp::Put(closed.clone())])
        .await
        .unwrap();
    assert_eq!(store.open_calls("node-a").await.unwrap(), []);
    let page = store.query(CdrFilter::default()).await.unwrap();
    assert_eq!(page.records, [closed], "replaced, not added");
    assert_eq!(page.records[0].duration_ms(), 61_500);
    assert_eq!(page.records[0].hangup, Some(HangupSide::Callee));
}

#[tokio::test]
async fn end_closes_only_an_open_call_and_changes_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let open = call("c1", "alice@example.com", "bob@example.com", T0);
    let refused = failed(
        call("c2", "alice@example.com", "carol@example.com", T0 + 1),
        Disposition::Busy,
        486,
    );
    store
        .record(vec![CdrOp::Put(open.clone()), CdrOp::Put(refused.clone())])
        .await
        .unwrap();
    let end = |id: &str, after_answer: i64, hangup| CdrOp::End {
        id: id.to_owned(),
        ended_at_ms: T0 + 1_000 + after_answer,
        hangup,
    };
    // The open call ends; a failed call (never answered) and an unknown id are left
    // alone, in the same write.
    store
        .record(vec![
            end("c1", 30_000, HangupSide::Caller),
            end("c2", 1, HangupSide::Callee),
            end("nope", 1, HangupSide::Callee),
        ])
        .await
        .unwrap();
    assert_eq!(store.open_calls("node-a").await.unwrap(), []);
    let page = store.query(CdrFilter::default()).await.unwrap();
    let closed = ended(open, 30_000, HangupSide::Caller);
    assert_eq!(page.records, [refused.clone(), closed.clone()]);
    assert_eq!(page.records[1].duration_ms(), 30_000);
    // A second end (a retransmitted BYE handled twice) does not move the first.
    store
        .record(vec![end("c1", 99_000, HangupSide::Callee)])
        .await
        .unwrap();
    let page = store.query(CdrFilter::default()).await.unwrap();
    assert_eq!(page.records, [refused, closed]);
    // An empty id is refused like a Put's.
    let err = store.record(vec![end("", 1, HangupSide::Node)]).await;
    assert!(
        matches!(err, Err(StoreError::Invalid { field: "id", .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn every_field_round_trips_including_extremes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut records = Vec::new();
    for (i, disposition) in Disposition::ALL.into_iter().enumerate() {
        let mut r = call(&format!("d{i}"), "a@x.test", "b@x.test", T0 + i as i64);
        r.disposition = disposition;
        r.status = [200, 486, 480, 487, 503][i];
        r.hangup = HangupSide::ALL.get(i).copied();
        records.push(r);
    }
    let mut extreme = call("\u{0}é\u{10ffff} id", "", "", i64::MIN);
    extreme.call_id = "x".repeat(10_000);
    extreme.answered_at_ms = Some(i64::MAX);
    extreme.ended_at_ms = Some(i64::MIN);
    extreme.status = u16::MAX;
    records.push(extreme);
    store.record(puts(&records)).await.unwrap();
    let page = store.query(CdrFilter::default()).await.unwrap();
    let mut expected = records.clone();
    expected.sort_by(|a, b| (b.started_at_ms, &b.id).cmp(&(a.started_at_ms, &a.id)));
    assert_eq!(page.records, expected);
}

#[tokio::test]
async fn open_calls_are_the_answered_unended_calls_of_one_node_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let a_late = call("a-late", "alice@x.test", "bob@x.test", T0 + 50);
    let a_early = call("a-early", "carol@x.test", "bob@x.test", T0);
    let mut b_open = call("b-open", "alice@x.test", "bob@x.test", T0 + 10);
    b_open.node = "node-b".into();
    let a_closed = ended(
        call("a-closed", "alice@x.test", "bob@x.test", T0 + 20),
        1,
        HangupSide::Caller,
    );
    let a_failed = failed(
        call("a-failed", "alice@x.test", "bob@x.test", T0 + 30),
        Disposition::Busy,
        486,
    );
    // Still ringing: no answer and no end. Not an open call (no BYE will close it).
    let mut a_ringing = call("a-ringing", "alice@x.test", "bob@x.test", T0 + 40);
    a_ringing.answered_at_ms = None;
    store
        .record(puts(&[
            a_late.clone(),
            a_early.clone(),
            b_open.clone(),
            a_closed,
            a_failed,
            a_ringing,
        ]))
        .await
        .unwrap();
    assert_eq!(store.open_calls("node-a").await.unwrap(), [a_early, a_late]);
    assert_eq!(store.open_calls("node-b").await.unwrap(), [b_open]);
    assert_eq!(store.open_calls("node-c").await.unwrap(), []);
    assert_eq!(store.open_calls("").await.unwrap(), []);
}

#[tokio::test]
async fn filters_by_time_user_and_disposition() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let records = history(T0);
    store.record(puts(&records)).await.unwrap();
    let query = |filter: CdrFilter| {
        let store = &store;
        async move {
            let page = store.query(filter).await.unwrap();
            assert_eq!(page.next_cursor, None);
            ids(&page)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };

    assert_eq!(
        query(CdrFilter::default()).await,
        ["7", "6", "5", "4", "3", "2", "1"]
    );
    // [from, to): from is included, to is not.
    let range = CdrFilter {
        from_ms: Some(T0 + 1_000),
        to_ms: Some(T0 + 4_000),
        ..CdrFilter::default()
    };
    assert_eq!(query(range.clone()).await, ["4", "3", "2"]);
    let from = CdrFilter {
        from_ms: Some(T0 + 4_000),
        ..CdrFilter::default()
    };
    assert_eq!(query(from).await, ["7", "6", "5"]);
    let to = CdrFilter {
        to_ms: Some(T0 + 1),
        ..CdrFilter::default()
    };
    assert_eq!(query(to).await, ["1"]);
    let empty = CdrFilter {
        from_ms: Some(T0 + 2_000),
        to_ms: Some(T0 + 2_000),
        ..CdrFilter::default()
    };
    assert_eq!(query(empty).await, Vec::<String>::new());

    // As caller or callee; a call to oneself once.
    let alice = CdrFilter {
        user: Some("alice@x.test".into()),
        ..CdrFilter::default()
    };
    assert_eq!(query(alice.clone()).await, ["6", "4", "2", "1"]);
    let bob = CdrFilter {
        user: Some("bob@x.test".into()),
        ..CdrFilter::default()
    };
    assert_eq!(query(bob).await, ["7", "3", "2", "1"]);
    let nobody = CdrFilter {
        user: Some("alice".into()),
        ..CdrFilter::default()
    };
    assert_eq!(query(nobody).await, Vec::<String>::new());

    for (disposition, expected) in [
        (Disposition::Answered, vec!["7", "4", "1"]),
        (Disposition::Busy, vec!["2"]),
        (Disposition::NoAnswer, vec!["3"]),
        (Disposition::Cancelled, vec!["6"]),
        (Disposition::Failed, vec!["5"]),
    ] {
        let filter = CdrFilter {
            disposition: Some(disposition),
            ..CdrFilter::default()
        };
        assert_eq!(query(filter).await, expected, "{disposition}");
    }

    // All at once.
    let all = CdrFilter {
        disposition: Some(Disposition::Answered),
        ..CdrFilter {
            user: alice.user.clone(),
            ..range
        }
    };
    assert_eq!(query(all).await, ["4"]);
}

#[tokio::test]
async fn pages_cover_equal_timestamps_with_no_duplicate_and_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    // 23 distinct start times, 7 calls at each: every page boundary of every limit
    // below falls inside a run of equal times somewhere.
    let mut records = Vec::new();
    for i in 0..161_i64 {
        let (caller, callee) = match i % 3 {
            0 => ("alice@x.test", "bob@x.test"),
            1 => ("bob@x.test", "alice@x.test"),
            _ => ("carol@x.test", "dave@x.test"),
        };
        let mut r = call(
            &format!("call-{:03}", (i * 37) % 161),
            caller,
            callee,
            T0 + (i / 7) * 1_000,
        );
        if i % 5 == 0 {
            r = failed(r, Disposition::NoAnswer, 480);
        }
        records.push(r);
    }
    store.record(puts(&records)).await.unwrap();

    let expected = newest_first(&records);
    for limit in [1, 2, 3, 7, 10, 160, 161] {
        let (seen, pages) = all_pages(&store, CdrFilter::default(), limit).await;
        assert_eq!(seen, expected, "limit {limit}");
        assert_eq!(
            pages,
            expected.len().div_ceil(limit as usize),
            "limit {limit}"
        );
    }
    let (seen, pages) = all_pages(&store, CdrFilter::default(), 1000).await;
    assert_eq!((seen.len(), pages), (161, 1));

    // The same with each filter, whose SQL differs.
    let alice: Vec<CallRecord> = records
        .iter()
        .filter(|r| r.caller == "alice@x.test" || r.callee == "alice@x.test")
        .cloned()
        .collect();
    let filter = CdrFilter {
        user: Some("alice@x.test".into()),
        ..CdrFilter::default()
    };
    for limit in [1, 4, 7, 50] {
        let (seen, _) = all_pages(&store, filter.clone(), limit).await;
        assert_eq!(seen, newest_first(&alice), "user, limit {limit}");
    }
    let unanswered: Vec<CallRecord> = records
        .iter()
        .filter(|r| r.disposition == Disposition::NoAnswer && r.started_at_ms >= T0 + 5_000)
        .cloned()
        .collect();
    let filter = CdrFilter {
        disposition: Some(Disposition::NoAnswer),
        from_ms: Some(T0 + 5_000),
        ..CdrFilter::default()
    };
    let (seen, _) = all_pages(&store, filter, 3).await;
    assert_eq!(seen, newest_first(&unanswered));
}

#[tokio::test]
async fn a_page_walk_is_not_disturbed_by_newer_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let records: Vec<CallRecord> = (0..30)
        .map(|i| call(&format!("old-{i:02}"), "a@x.test", "b@x.test", T0 + i))
        .collect();
    store.record(puts(&records)).await.unwrap();
    let first = store
        .query(CdrFilter {
            limit: 10,
            ..CdrFilter::default()
        })
        .await
        .unwrap();
    // Calls start while the operator pages through the history.
    let newer: Vec<CallRecord> = (0..5)
        .map(|i| call(&format!("new-{i}"), "a@x.test", "b@x.test", T0 + 1_000 + i))
        .collect();
    store.record(puts(&newer)).await.unwrap();
    let mut seen: Vec<String> = first.records.iter().map(|r| r.id.clone()).collect();
    let (rest, _) = all_pages(
        &store,
        CdrFilter {
            cursor: first.next_cursor.clone(),
            ..CdrFilter::default()
        },
        10,
    )
    .await;
    seen.extend(rest);
    assert_eq!(seen, newest_first(&records));
}

#[tokio::test]
async fn the_limit_defaults_to_100_and_is_capped_at_1000() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let records: Vec<CallRecord> = (0..1_005)
        .map(|i| call(&format!("{i:04}"), "a@x.test", "b@x.test", T0 + i))
        .collect();
    store.record(puts(&records)).await.unwrap();
    let page = store.query(CdrFilter::default()).await.unwrap();
    assert_eq!(page.records.len(), 100);
    assert!(page.next_cursor.is_some());
    let page = store
        .query(CdrFilter {
            limit: u32::MAX,
            ..CdrFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.records.len(), 1000);
    let last = store
        .query(CdrFilter {
            cursor: page.next_cursor,
            ..CdrFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&last), ["0004", "0003", "0002", "0001", "0000"]);
    assert_eq!(last.next_cursor, None);
}

#[tokio::test]
async fn bad_input_is_invalid_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let good = call("good", "a@x.test", "b@x.test", T0);
    let mut no_id = call("", "a@x.test", "b@x.test", T0);
    let mut no_call_id = call("x", "a@x.test", "b@x.test", T0);
    no_call_id.call_id.clear();
    for (bad, field) in [(no_id.clone(), "id"), (no_call_id, "call_id")] {
        let error = store
            .record(vec![CdrOp::Put(good.clone()), CdrOp::Put(bad.clone())])
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::Invalid { field: f, .. } if f == field),
            "{error:?}"
        );
        let error = store.queue_cdr(vec![CdrOp::Put(bad)]).err().unwrap();
        assert!(
            matches!(error, StoreError::Invalid { field: f, .. } if f == field),
            "{error:?}"
        );
    }
    assert_eq!(store.query(CdrFilter::default()).await.unwrap().records, []);
    no_id.id = "fixed".into();
    store.record(vec![CdrOp::Put(no_id)]).await.unwrap();

    for cursor in [
        "",
        "garbage",
        "1700000000000",
        "1700000000000.6",
        "abc.61",
        "1.zz",
        "1.ff",
    ] {
        let error = store
            .query(CdrFilter {
                cursor: Some(cursor.into()),
                ..CdrFilter::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Invalid {
                    field: "cursor",
                    ..
                }
            ),
            "{cursor:?}: {error:?}"
        );
    }
    let error = store
        .query(CdrFilter {
            from_ms: Some(T0 + 1),
            to_ms: Some(T0),
            ..CdrFilter::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Invalid { field: "to_ms", .. }),
        "{error:?}"
    );
    let error = store
        .query(CdrFilter {
            user: Some(String::new()),
            ..CdrFilter::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Invalid { field: "user", .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_row_that_does_not_decode_is_corrupt_data_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store
        .record(vec![CdrOp::Put(call("ok", "a@x.test", "b@x.test", T0))])
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    for (sql, what) in [
        ("UPDATE cdrs SET disposition = 'vanished'", "disposition"),
        (
            "UPDATE cdrs SET disposition = 'answered', hangup = 'cat'",
            "hangup",
        ),
        ("UPDATE cdrs SET hangup = NULL, status = 70000", "status"),
    ] {
        conn.execute(sql, []).unwrap();
        for result in [
            store.query(CdrFilter::default()).await.map(|_| ()),
            store.open_calls("node-a").await.map(|_| ()),
        ] {
            assert!(
                matches!(
                    result,
                    Err(StoreError::Backend {
                        kind: BackendKind::Corrupt,
                        ..
                    })
                ),
                "{what}: {result:?}"
            );
        }
    }
}

#[tokio::test]
async fn records_survive_closing_and_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let open = call("open", "a@x.test", "b@x.test", T0);
    let done = ended(
        call("done", "b@x.test", "a@x.test", T0 + 1),
        5,
        HangupSide::Node,
    );
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .record(puts(&[open.clone(), done.clone()]))
            .await
            .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(
        store.open_calls("node-a").await.unwrap(),
        std::slice::from_ref(&open)
    );
    assert_eq!(
        store.query(CdrFilter::default()).await.unwrap().records,
        [done, open]
    );
}

#[tokio::test]
async fn queue_cdr_queues_now_and_reports_a_full_queue_as_busy() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    // Another connection holds the write lock, so the writer thread stops at its first
    // job (waiting up to the 5 s busy timeout) and the queue fills.
    let blocker = rusqlite::Connection::open(store.path()).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut queued = Vec::new();
    let busy = loop {
        let i = queued.len();
        assert!(i < 10_000, "the writer queue never filled");
        let op = CdrOp::Put(call(
            &format!("q{i:05}"),
            "a@x.test",
            "b@x.test",
            T0 + i as i64,
        ));
        match store.queue_cdr(vec![op]) {
            Ok(done) => queued.push(done),
            Err(error) => break error,
        }
    };
    assert!(
        matches!(
            busy,
            StoreError::Backend {
                kind: BackendKind::Busy,
                ..
            }
        ),
        "{busy:?}"
    );
    assert!(busy.is_retryable());
    blocker.execute_batch("COMMIT").unwrap();
    let acknowledged = queued.len();
    for done in futures::future::join_all(queued).await {
        done.unwrap();
    }
    // Every acknowledged record is there, and the refused one is not.
    let (seen, _) = all_pages(&store, CdrFilter::default(), 1000).await;
    let seen: HashSet<String> = seen.into_iter().collect();
    assert_eq!(seen.len(), acknowledged);
    assert!(!seen.contains(&format!("q{acknowledged:05}")));
    assert!(seen.contains("q00000"));
}
