//! Pull meets push: each conflict strategy against a cloud change and a local change to
//! the same record, found by a pull and by a push the cloud refused (409 and 412), and
//! `manual` conflicts resolved each way (docs/architecture.md §4.18).

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tests::ApiClient;
use tests::env::{TestEnv, test_env};
use uuid::Uuid;

use crate::cloud::FakeCloud;
use crate::push::{PUSH, batch};
use crate::util::{count, eventually, gauge, strings};

/// Who should win a conflict in a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Winner {
    Cloud,
    Local,
    Person,
}

/// The records each scenario puts in conflict.
const IDS: [&str; 3] = ["a", "b", "c"];

/// An http_json integration pulling from and pushing to `cloud`, settling conflicts by
/// `strategy`; due at once, so its first pull runs as soon as it exists.
async fn integration(c: &ApiClient, cloud: &FakeCloud, strategy: &str) -> Uuid {
    let (s, v) = c
        .post(
            "/api/integrations",
            &json!({
                "name": format!("outlet {strategy}"), "kind": "http_json", "syncInterval": 3600,
                "conflictStrategy": strategy,
                "config": {
                    "url": format!("{}/items", cloud.url), "recordsPointer": "/items", "idPointer": "/id",
                    "push": { "url": format!("{}/items/{{externalId}}", cloud.url),
                              "versionPointer": "/version", "idPointer": "/id",
                              "updatedAtPointer": "/updatedAt", "conflictPointer": "/current" }
                }
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["conflictStrategy"], strategy, "{v}");
    v["id"].as_str().and_then(|s| s.parse().ok()).expect("id")
}

/// A record's local data and sync state.
async fn record(env: &TestEnv, id: Uuid, ext: &str) -> (Value, String) {
    let rows = strings(
        &env.db,
        "SELECT CAST(data AS TEXT) || '|' || sync_state FROM records WHERE integration_id = $1 AND external_id = $2",
        vec![id.into(), ext.into()],
    )
    .await;
    let (data, state) = rows[0].rsplit_once('|').expect("row");
    (serde_json::from_str(data).expect("json"), state.to_owned())
}

async fn states_are(env: &TestEnv, id: Uuid, state: &str, what: &str) {
    eventually(Duration::from_secs(30), what, || async {
        let n = count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE integration_id = $1 AND sync_state = $2",
            vec![id.into(), state.into()],
        )
        .await;
        (n == IDS.len() as i64).then_some(())
    })
    .await;
}

/// Successful runs of integration `id`.
async fn successes(env: &TestEnv, id: Uuid) -> i64 {
    count(
        &env.db,
        "SELECT COUNT(*) FROM run_history WHERE integration_id = $1 AND status = 'SUCCESS'",
        vec![id.into()],
    )
    .await
}

/// A cloud with `a`, `b`, `c` and an integration whose first pull brought them.
async fn synced_outlet(env: &TestEnv, c: &ApiClient, strategy: &str) -> (FakeCloud, Uuid) {
    let cloud = FakeCloud::start().await;
    cloud.set(|cl| {
        for ext in IDS {
            cl.change(ext, json!({ "n": 1, "by": "seed" }), "2000-01-01T00:00:00Z");
        }
    });
    let id = integration(c, &cloud, strategy).await;
    eventually(Duration::from_secs(30), "the first pull", || async {
        (successes(env, id).await == 1).then_some(())
    })
    .await;
    states_are(env, id, "synced", "the first pull's records").await;
    (cloud, id)
}

/// The conflicts of integration `id`: `(status, resolution, source)`.
async fn conflicts_of(env: &TestEnv, id: Uuid) -> Vec<String> {
    strings(
        &env.db,
        "SELECT status || '/' || COALESCE(resolution, '-') || '/' || source FROM conflicts \
         WHERE integration_id = $1 ORDER BY external_id",
        vec![id.into()],
    )
    .await
}

/// After a conflict settled for `winner` (and the cloud takes writes again): each
/// record ends synced with the winner's copy on both sides, and a local copy reaches
/// the cloud exactly once.
async fn ends_with(env: &TestEnv, cloud: &FakeCloud, id: Uuid, winner: Winner) {
    match winner {
        Winner::Cloud => {
            states_are(env, id, "synced", "the cloud's copies kept").await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            for ext in IDS {
                let (data, _) = record(env, id, ext).await;
                assert_eq!(data["by"], "cloud", "{ext}: {data}");
                assert_eq!(cloud.get(|c| c.applied_to(ext)), 0, "{ext} was pushed");
            }
            let left = count(
                &env.db,
                "SELECT COUNT(*) FROM outbox WHERE integration_id = $1 AND status IN ('pending', 'pushing', 'conflict')",
                vec![id.into()],
            )
            .await;
            assert_eq!(left, 0, "the dropped pushes");
        }
        Winner::Local => {
            states_are(env, id, "synced", "the local copies pushed").await;
            for ext in IDS {
                let (data, _) = record(env, id, ext).await;
                assert_eq!(data["by"], "local", "{ext}: {data}");
                let (at_cloud, applied) =
                    cloud.get(|c| (c.items[ext].0.clone(), c.applied_to(ext)));
                assert_eq!(at_cloud["by"], "local", "{ext} at the cloud: {at_cloud}");
                assert_eq!(applied, 1, "{ext} applied once");
            }
        }
        Winner::Person => unreachable!("a held conflict does not end by itself"),
    }
}

/// Backoff long enough that a push the cloud refused with 503 waits while the test
/// runs its pull (a running push would settle the record itself).
const SLOW_RETRY: &[(&str, &str)] = &[
    ("SYNCFLEET_NOTIFY_BACKOFF_BASE_MS", "4000"),
    ("SYNCFLEET_NOTIFY_BACKOFF_CAP_MS", "4000"),
];

/// A pull brings cloud changes to records with unpushed local changes: each strategy
/// settles them as it says; `newest_wins` both ways by the cloud's `updatedAt`.
#[tokio::test]
async fn a_pull_meets_local_changes_by_each_strategy() {
    let Some(env) = test_env().await else { return };
    let vars: Vec<(&str, &str)> = PUSH.iter().chain(SLOW_RETRY).copied().collect();
    let app = env.spawn_app(&vars).await;
    let (stop, worker) = env.spawn_worker(&vars);
    let c = &app.client;
    for (strategy, cloud_time, winner) in [
        ("cloud_wins", "2001-01-01T00:00:00Z", Winner::Cloud),
        ("local_wins", "2999-01-01T00:00:00Z", Winner::Local),
        ("newest_wins", "2999-01-01T00:00:00Z", Winner::Cloud),
        ("newest_wins", "2001-01-01T00:00:00Z", Winner::Local),
        ("manual", "2001-01-01T00:00:00Z", Winner::Person),
    ] {
        let (cloud, id) = synced_outlet(&env, c, strategy).await;
        // The cloud takes no writes: the local changes wait in the outbox.
        cloud.set(|cl| cl.writes_up = false);
        let ops = IDS
            .iter()
            .map(|ext| json!({ "op": "patch", "externalId": ext, "data": { "n": 2, "by": "local" } }))
            .collect();
        batch(c, id, ops).await;
        eventually(
            Duration::from_secs(20),
            "each push tried once and waiting",
            || async {
                let n = count(
                    &env.db,
                    "SELECT COUNT(*) FROM outbox WHERE integration_id = $1 AND status = 'pending' AND attempts >= 1",
                    vec![id.into()],
                )
                .await;
                (n == IDS.len() as i64).then_some(())
            },
        )
        .await;
        cloud.set(|cl| {
            for ext in IDS {
                cl.change(ext, json!({ "n": 3, "by": "cloud" }), cloud_time);
            }
        });
        c.trigger(id).await;
        eventually(Duration::from_secs(30), "the second pull", || async {
            (successes(&env, id).await == 2).then_some(())
        })
        .await;
        let found = conflicts_of(&env, id).await;
        let expect = match winner {
            Winner::Cloud => "resolved/cloud/pull",
            Winner::Local => "resolved/local/pull",
            Winner::Person => "open/-/pull",
        };
        assert_eq!(found, vec![expect; 3], "{strategy} ({cloud_time})");
        if winner == Winner::Person {
            manual_resolved_each_way(&env, &app.url, c, &cloud, id, "pull").await;
        } else {
            cloud.set(|cl| cl.writes_up = true);
            ends_with(&env, &cloud, id, winner).await;
        }
    }
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// Held conflicts: records `conflict`, nothing pushed, counted in the status and on
/// `/metrics`, a `conflict.detected` event each; then `a` resolved local, `b` cloud and
/// `c` merged, each ending synced with its chosen copy on both sides.
async fn manual_resolved_each_way(
    env: &TestEnv,
    base: &str,
    c: &ApiClient,
    cloud: &FakeCloud,
    id: Uuid,
    source: &str,
) {
    states_are(env, id, "conflict", "the records held").await;
    cloud.set(|cl| cl.writes_up = true);
    let (_, st) = c.get("/api/sync/status").await;
    assert_eq!(st["openConflicts"], 3, "{st}");
    eventually(
        Duration::from_secs(20),
        "the open-conflicts gauge",
        || async { (gauge(base, "syncfleet_open_conflicts").await == 3).then_some(()) },
    )
    .await;
    let events = count(
        &env.db,
        "SELECT COUNT(*) FROM events WHERE integration_id = $1 AND event_type = 'conflict.detected'",
        vec![id.into()],
    )
    .await;
    assert_eq!(events, 3, "one conflict.detected per conflict");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for ext in IDS {
        assert_eq!(
            cloud.get(|cl| cl.applied_to(ext)),
            0,
            "{ext} pushed while held"
        );
    }
    let (s, list) = c
        .get(&format!(
            "/api/sync/conflicts?integrationId={id}&status=open"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let list = list.as_array().cloned().expect("conflicts");
    assert_eq!(list.len(), 3, "{list:?}");
    let conflict_of = |ext: &str| {
        list.iter()
            .find(|k| k["externalId"] == ext)
            .and_then(|k| k["id"].as_str())
            .map(str::to_owned)
            .expect("the record's conflict")
    };
    let merged = json!({ "n": 9, "by": "merged" });
    for (ext, body) in [
        (
            "a",
            json!({ "resolution": "local", "reason": "the till is right" }),
        ),
        ("b", json!({ "resolution": "cloud" })),
        ("c", json!({ "resolution": "merged", "data": merged })),
    ] {
        let (s, v) = c
            .post(
                &format!("/api/sync/conflicts/{}/resolve", conflict_of(ext)),
                &body,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{ext}: {v}");
        assert_eq!(v["status"], "resolved", "{v}");
    }
    let (s, again) = c
        .post(
            &format!("/api/sync/conflicts/{}/resolve", conflict_of("a")),
            &json!({ "resolution": "cloud" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "resolving twice: {again}");
    states_are(env, id, "synced", "the resolved records").await;
    let (a, _) = record(env, id, "a").await;
    let (b, _) = record(env, id, "b").await;
    let (cc, _) = record(env, id, "c").await;
    assert_eq!(a["by"], "local", "{a}");
    assert_eq!(b["by"], "cloud", "{b}");
    assert_eq!(cc, merged);
    cloud.get(|cl| {
        assert_eq!(cl.items["a"].0["by"], "local");
        assert_eq!(cl.applied_to("a"), 1);
        assert_eq!(cl.items["b"].0["by"], "cloud");
        assert_eq!(
            cl.applied_to("b"),
            0,
            "the cloud's copy kept, nothing pushed"
        );
        assert_eq!(cl.items["c"].0, merged);
        assert_eq!(cl.applied_to("c"), 1);
    });
    let found = conflicts_of(env, id).await;
    assert_eq!(
        found,
        [
            format!("resolved/local/{source}"),
            format!("resolved/cloud/{source}"),
            format!("resolved/merged/{source}"),
        ]
    );
    let audited = count(
        &env.db,
        "SELECT COUNT(*) FROM audit_events WHERE integration_id = $1 AND action IN ('conflict.detect', 'conflict.resolve')",
        vec![id.into()],
    )
    .await;
    assert_eq!(audited, 6, "every detection and resolution audited");
    let (_, st) = c.get("/api/sync/status").await;
    assert_eq!(st["openConflicts"], 0, "{st}");
}

/// The cloud refuses a push (412 over an unseen cloud change, and 409 for another
/// record) and sends its current copy: each strategy settles it as a pull's would.
#[tokio::test]
async fn a_refused_push_goes_through_the_strategy() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(PUSH).await;
    let (stop, worker) = env.spawn_worker(PUSH);
    let c = &app.client;
    for (strategy, cloud_time, winner) in [
        ("cloud_wins", "2001-01-01T00:00:00Z", Winner::Cloud),
        ("local_wins", "2999-01-01T00:00:00Z", Winner::Local),
        ("newest_wins", "2999-01-01T00:00:00Z", Winner::Cloud),
        ("newest_wins", "2001-01-01T00:00:00Z", Winner::Local),
        ("manual", "2001-01-01T00:00:00Z", Winner::Person),
    ] {
        let (cloud, id) = synced_outlet(&env, c, strategy).await;
        // Changed at the cloud behind our back; `b` is answered 409 (a cloud that
        // checks versions its own way), the others 412 (our If-Match is stale).
        cloud.set(|cl| {
            for ext in IDS {
                cl.change(ext, json!({ "n": 3, "by": "cloud" }), cloud_time);
            }
            cl.refuse_once.insert("b".into(), 409);
        });
        let ops = IDS
            .iter()
            .map(|ext| json!({ "op": "put", "externalId": ext, "data": { "n": 2, "by": "local" } }))
            .collect();
        batch(c, id, ops).await;
        let expect = match winner {
            Winner::Cloud => "resolved/cloud/push",
            Winner::Local => "resolved/local/push",
            Winner::Person => "open/-/push",
        };
        eventually(Duration::from_secs(30), "the refusals settled", || async {
            let found = conflicts_of(&env, id).await;
            (found.len() == 3).then_some(())
        })
        .await;
        assert_eq!(
            conflicts_of(&env, id).await,
            vec![expect; 3],
            "{strategy} ({cloud_time})"
        );
        let mut first: Vec<(String, u16)> = cloud.get(|cl| cl.refused.clone());
        first.sort();
        first.dedup_by(|x, y| x.0 == y.0);
        assert_eq!(
            first,
            [("a".into(), 412), ("b".into(), 409), ("c".into(), 412)],
            "{strategy}"
        );
        if winner == Winner::Person {
            manual_resolved_each_way(&env, &app.url, c, &cloud, id, "push").await;
        } else {
            ends_with(&env, &cloud, id, winner).await;
        }
    }
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}
