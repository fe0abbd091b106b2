//! Call history through the real binary: `GET /api/v1/cdrs` on a running core and
//! `holdfast cdrs` on its data directory. Records are written with the store crate
//! into the data directory, before the core starts and while it runs, as another
//! process on the same SQLite file.

mod support;
// The store's own test fixtures: call records and the small history the tests query.
#[path = "../../holdfast-store/tests/common/mod.rs"]
mod store_fixtures;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use holdfast_store::{CallRecord, CdrOp, Cdrs, SqliteStore};
use serde_json::Value;
use store_fixtures::{call, history};
use support::{bounded, run_bounded, Core, CoreBuilder, TempDir, Transport, LOCALHOST};

const LIMIT: Duration = Duration::from_secs(60);
const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const TOKEN: &str = "call-history-test-token";
/// 2023-11-14T22:13:20Z, in Unix milliseconds.
const T0: i64 = 1_700_000_000_000;

/// Writes `records` into `data_dir` through the store crate, durably.
async fn seed(data_dir: &Path, records: Vec<CallRecord>) {
    let store = SqliteStore::open(data_dir).expect("open the data directory's store");
    store
        .record(records.into_iter().map(CdrOp::Put).collect())
        .await
        .expect("record the seed call records");
}

async fn start_core(tag: &str, data_dir: &Path) -> Core {
    CoreBuilder::new(tag)
        .listen(Transport::Udp, LOCALHOST)
        .admin_token(TOKEN)
        .data_dir(data_dir)
        .start()
        .await
}

/// `GET /api/v1/cdrs?<query>` with the token: the status and the parsed body.
async fn get(core: &Core, query: &str) -> (u16, Value) {
    let path = format!("/api/v1/cdrs{query}");
    let (status, body) = core.api("GET", &path, Some(TOKEN), None).await;
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{path}: {status} with a body that is not JSON ({e}): {body}"));
    (status, json)
}

/// The ids of a 200 page, asserting it is the last.
async fn ids(core: &Core, query: &str) -> Vec<String> {
    let (status, page) = get(core, query).await;
    assert_eq!(status, 200, "{query}: {page}");
    assert_eq!(page["next_cursor"], Value::Null, "{query}: {page}");
    page["records"]
        .as_array()
        .expect("records array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_every_field_and_applies_every_filter() {
    bounded(LIMIT, async {
        let data = TempDir::new("cdrs-api-filters");
        seed(data.path(), history(T0)).await;
        let core = start_core("cdrs-api-filters", data.path()).await;

        let (status, page) = get(&core, "").await;
        assert_eq!(status, 200, "{page}");
        let records = page["records"].as_array().expect("records");
        let all: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(all, ["7", "6", "5", "4", "3", "2", "1"], "newest first");
        assert_eq!(page["next_cursor"], Value::Null);

        // A finished answered call: every field, times both ways.
        let first = &records[6];
        let expected = serde_json::json!({
            "id": "1",
            "call_id": "1@192.0.2.10",
            "caller": "alice@x.test",
            "callee": "bob@x.test",
            "request_uri": "sip:bob@x.test",
            "source": "192.0.2.10:5060",
            "transport": "udp",
            "started_at_ms": T0,
            "started_at": "2023-11-14T22:13:20.000Z",
            "answered_at_ms": T0 + 1_000,
            "answered_at": "2023-11-14T22:13:21.000Z",
            "ended_at_ms": T0 + 62_250,
            "ended_at": "2023-11-14T22:14:22.250Z",
            "duration_ms": 61_250,
            "open": false,
            "disposition": "answered",
            "status": 200,
            "hangup": "callee",
            "node": "node-a",
        });
        assert_eq!(first, &expected);
        // A call still up, and one never answered.
        let up = &records[0];
        assert_eq!(up["open"], true);
        assert_eq!(up["ended_at_ms"], Value::Null);
        assert_eq!(up["ended_at"], Value::Null);
        assert_eq!(up["duration_ms"], 0);
        assert_eq!(up["hangup"], Value::Null);
        let busy = &records[5];
        assert_eq!(busy["disposition"], "busy");
        assert_eq!(busy["status"], 486);
        assert_eq!(busy["answered_at"], Value::Null);
        assert_eq!(busy["ended_at"], "2023-11-14T22:13:26.000Z");
        assert_eq!(busy["open"], false);

        // Time range: from included, to excluded; RFC 3339 in UTC or with an offset
        // (its '+' percent-encoded), or Unix milliseconds.
        for query in [
            "?from=2023-11-14T22:13:21Z&to=2023-11-14T22:13:24Z",
            "?from=2023-11-15T00:13:21%2B02:00&to=2023-11-14T22:13:24.000Z",
            "?from=1700000001000&to=1700000004000",
        ] {
            assert_eq!(ids(&core, query).await, ["4", "3", "2"], "{query}");
        }
        assert_eq!(ids(&core, "?from=1700000005000").await, ["7", "6"]);
        assert_eq!(ids(&core, "?to=1700000000001").await, ["1"]);
        // Caller or callee, a call to oneself once; the domain's case does not matter.
        assert_eq!(ids(&core, "?user=alice@X.TEST").await, ["6", "4", "2", "1"]);
        assert_eq!(ids(&core, "?user=bob%40x.test").await, ["7", "3", "2", "1"]);
        assert!(ids(&core, "?user=zoe@x.test").await.is_empty());
        for (disposition, expected) in [
            ("answered", vec!["7", "4", "1"]),
            ("busy", vec!["2"]),
            ("no_answer", vec!["3"]),
            ("cancelled", vec!["6"]),
            ("failed", vec!["5"]),
        ] {
            assert_eq!(
                ids(&core, &format!("?disposition={disposition}")).await,
                expected,
                "{disposition}"
            );
        }
        assert_eq!(
            ids(
                &core,
                "?user=alice@x.test&disposition=answered&from=1700000001000&limit=5"
            )
            .await,
            ["4"]
        );

        // A record written by another process while the core runs is served at once.
        seed(
            data.path(),
            vec![call("8", "frank@x.test", "bob@x.test", T0 + 7_000)],
        )
        .await;
        assert_eq!(ids(&core, "?user=frank@x.test").await, ["8"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_pages_with_its_cursor_through_equal_start_times() {
    bounded(LIMIT, async {
        let data = TempDir::new("cdrs-api-paging");
        // 25 calls, 5 per start time, ids not in time order.
        let records: Vec<CallRecord> = (0..25_i64)
            .map(|i| {
                call(
                    &format!("call-{:02}", (i * 7) % 25),
                    "alice@x.test",
                    "bob@x.test",
                    T0 + (i / 5) * 1_000,
                )
            })
            .collect();
        let mut expected: Vec<(i64, String)> = records
            .iter()
            .map(|r| (r.started_at_ms, r.id.clone()))
            .collect();
        expected.sort_by(|a, b| b.cmp(a));
        let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
        seed(data.path(), records).await;
        let core = start_core("cdrs-api-paging", data.path()).await;

        for (limit, pages_expected) in [(10, 3), (5, 5), (4, 7), (25, 1)] {
            let mut seen = Vec::new();
            let mut query = format!("?limit={limit}&user=bob@x.test");
            let mut pages = 0;
            loop {
                let (status, page) = get(&core, &query).await;
                assert_eq!(status, 200, "{query}: {page}");
                pages += 1;
                let records = page["records"].as_array().expect("records");
                assert!(records.len() <= limit);
                seen.extend(records.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
                match page["next_cursor"].as_str() {
                    Some(cursor) => {
                        query = format!("?limit={limit}&user=bob@x.test&cursor={cursor}")
                    }
                    None => break,
                }
                assert!(pages <= 25, "paging does not end");
            }
            assert_eq!(seen, expected, "limit {limit}");
            assert_eq!(pages, pages_expected, "limit {limit}");
            let unique: HashSet<&String> = seen.iter().collect();
            assert_eq!(unique.len(), 25, "no duplicates");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_the_token_and_names_each_bad_parameter() {
    bounded(LIMIT, async {
        let data = TempDir::new("cdrs-api-errors");
        seed(data.path(), history(T0)).await;
        let core = start_core("cdrs-api-errors", data.path()).await;

        for token in [None, Some("wrong-token")] {
            let (status, body) = core.api("GET", "/api/v1/cdrs", token, None).await;
            assert_eq!(status, 401, "{token:?}: {body}");
            assert!(!body.contains("alice"), "{body}");
        }

        for (query, param, needle) in [
            ("?from=yesterday", "from", "RFC 3339"),
            ("?to=2023-11-14", "to", "RFC 3339"),
            ("?from=1700000002000&to=1700000001000", "to", "before from"),
            ("?user=alice", "user", "user@domain"),
            ("?disposition=Answered", "disposition", "no_answer"),
            ("?limit=0", "limit", "1 to 1000"),
            ("?limit=1001", "limit", "1 to 1000"),
            ("?limit=-3", "limit", "1 to 1000"),
            ("?cursor=not-a-cursor", "cursor", "cursor"),
            ("?cursor=1700000000000.zz", "cursor", "cursor"),
        ] {
            let (status, body) = get(&core, query).await;
            assert_eq!(status, 400, "{query}: {body}");
            assert_eq!(body["parameter"], param, "{query}: {body}");
            let message = body["error"].as_str().expect("error message");
            assert!(message.contains(param), "{query}: {message}");
            assert!(message.contains(needle), "{query}: {message}");
        }
        for (query, needle) in [
            ("?offset=10", "unknown parameter \"offset\""),
            ("?limit=1&limit=2", "\"limit\" given more than once"),
        ] {
            let (status, body) = get(&core, query).await;
            assert_eq!(status, 400, "{query}: {body}");
            let message = body["error"].as_str().expect("error message");
            assert!(message.contains(needle), "{query}: {message}");
        }
        // The core is still serving.
        assert_eq!(ids(&core, "?disposition=busy").await, ["2"]);
    })
    .await;
}

/// `holdfast cdrs ARGS --data-dir DIR`: exit code, stdout, stderr.
async fn cli(data_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("cdrs").args(args).arg("--data-dir").arg(data_dir);
    let out = run_bounded(cmd, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("holdfast cdrs {args:?} did not finish in 20 s"));
    (
        out.status.code().expect("an exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_prints_an_aligned_table_and_the_next_cursor() {
    bounded(LIMIT, async {
        let data = TempDir::new("cdrs-cli-table");
        seed(data.path(), history(T0)).await;

        let (code, out, err) = cli(data.path(), &["--limit", "3"]).await;
        assert_eq!(code, 0, "{out}{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "header, 3 rows, cursor:\n{out}");
        // Aligned columns; a call still up, calls never answered.
        assert_eq!(
            lines[..4],
            [
                "START (UTC)               CALLER        CALLEE        DISPOSITION  STATUS  DURATION  HANGUP  CALL-ID",
                "2023-11-14T22:13:26.000Z  Alice@x.test  bob@x.test    answered     200     up        -       7@192.0.2.10",
                "2023-11-14T22:13:25.000Z  alice@x.test  carol@x.test  cancelled    487     -         -       6@192.0.2.10",
                "2023-11-14T22:13:24.000Z  carol@x.test  dave@x.test   failed       503     -         -       5@192.0.2.10",
            ],
            "{out}"
        );
        let cursor = lines[4]
            .strip_prefix("next page: --cursor ")
            .unwrap_or_else(|| panic!("no cursor line:\n{out}"));

        // The next page, through the printed cursor, then the last.
        let (code, out, err) = cli(data.path(), &["--limit", "3", "--cursor", cursor]).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.lines().nth(1).unwrap().contains("4@192"), "{out}");
        let (_, out, _) = cli(
            data.path(),
            &[
                "--disposition",
                "answered",
                "--from",
                "1700000000001",
                "--to",
                "2023-11-14T22:13:21Z",
            ],
        )
        .await;
        assert_eq!(out.trim(), "no call records");
        let (code, out, _) = cli(
            data.path(),
            &["--user", "alice@x.test", "--to", "1700000000001"],
        )
        .await;
        assert_eq!(code, 0);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[1].contains("0:01:01"), "61.25 s of talk: {out}");
        assert!(lines[1].contains("callee"), "{out}");
        assert!(!out.contains("next page"), "{out}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_json_is_the_api_page() {
    bounded(LIMIT, async {
        let data = TempDir::new("cdrs-cli-json");
        seed(data.path(), history(T0)).await;
        let args = ["--user", "bob@x.test", "--limit", "2"];
        let (code, out, err) = cli(data.path(), &[&args[..], &["--json"][..]].concat()).await;
        assert_eq!(code, 0, "{out}{err}");
        let from_cli: Value = serde_json::from_str(&out).expect("JSON output");
        assert_eq!(from_cli["records"].as_array().map(Vec::len), Some(2));
        let core = start_core("cdrs-cli-json", data.path()).await;
        let (status, from_api) = get(&core, "?user=bob@x.test&limit=2").await;
        assert_eq!(status, 200);
        assert_eq!(from_cli, from_api);
    })
    .await;
}

#[tokio::test]
async fn the_cli_names_a_bad_flag_and_exits_2_without_touching_the_data() {
    bounded(LIMIT, async {
        let parent = TempDir::new("cdrs-cli-errors");
        let data = parent.path().join("never-created");
        for (args, needle) in [
            (&["--from", "last week"][..], "invalid --from: expected an RFC 3339 time"),
            (&["--to", "1.5"][..], "invalid --to:"),
            (&["--from", "5", "--to", "4"][..], "invalid --to: is before from"),
            (&["--user", "bob"][..], "invalid --user: expected an address of record"),
            (&["--disposition", "lost"][..], "invalid --disposition: expected one of answered, busy, no_answer, cancelled, failed"),
            (&["--limit", "5000"][..], "invalid --limit: expected a whole number from 1 to 1000"),
            (&["--cursor", "abc"][..], "invalid --cursor:"),
        ] {
            let (code, out, err) = cli(&data, args).await;
            assert_eq!(code, 2, "{args:?}: {out}{err}");
            assert!(out.is_empty(), "{args:?}: {out}");
            assert!(err.contains(needle), "{args:?}: {err}");
            assert!(!data.exists(), "{args:?} created the data directory");
        }
    })
    .await;
}
