//! Pushing local changes to a fake cloud that records every request, can go down,
//! answers 409/412/400 when told, and deduplicates by `Idempotency-Key` the way a real
//! cloud does: changes reach it exactly once in effect, in per-record order, through a
//! cloud outage and a worker killed mid-push.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tests::ApiClient;
use tests::env::test_env;
use tests::procs;
use uuid::Uuid;

use crate::cloud::FakeCloud;
use crate::util::{count, eventually, strings};

pub const PUSH: &[(&str, &str)] = &[
    ("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true"),
    ("SYNCFLEET_NOTIFY_PUMP_MS", "50"),
    ("SYNCFLEET_NOTIFY_BACKOFF_BASE_MS", "200"),
    ("SYNCFLEET_NOTIFY_BACKOFF_CAP_MS", "1000"),
];

/// A manual-only http_json integration whose push target is the fake cloud.
pub async fn integration(c: &ApiClient, cloud: &FakeCloud) -> Uuid {
    if std::env::var("SYNCFLEET_TEST_LOGS").is_ok() {
        let _ = syncfleet_api::telemetry::init(syncfleet_api::config::LogFormat::Text);
    }
    let (s, v) = c
        .post(
            "/api/integrations",
            &json!({
                "name": "outlet 12", "kind": "http_json", "syncEnabled": false,
                "config": {
                    "url": format!("{}/items", cloud.url), "recordsPointer": "/items", "idPointer": "/id",
                    "auth": { "type": "bearer", "token": "cloud-token" },
                    "push": { "url": format!("{}/items/{{externalId}}", cloud.url),
                              "versionPointer": "/version", "idPointer": "/id" }
                }
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().and_then(|s| s.parse().ok()).expect("id")
}

/// Sends one `records:batch` request, again after a 503 (busy: nothing was written,
/// `Retry-After` says when) as a client should, a few times.
pub async fn batch(c: &ApiClient, id: Uuid, ops: Vec<Value>) {
    let body = json!({ "operations": ops });
    for attempt in 1..=5 {
        let (s, v) = c
            .post(&format!("/api/integrations/{id}/records:batch"), &body)
            .await;
        if s == StatusCode::SERVICE_UNAVAILABLE && attempt < 5 {
            eprintln!("records:batch answered busy (attempt {attempt}): {v}");
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        assert_eq!(s, StatusCode::OK, "{v}");
        return;
    }
}

/// Waits until every record of the database is `synced`, or panics after `within` with
/// what is left: the records by state, the live pushes and the outbox entries.
async fn drained(env: &tests::env::TestEnv, within: Duration) -> Duration {
    let start = std::time::Instant::now();
    let mut said = std::time::Instant::now();
    loop {
        let left = count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE sync_state <> 'synced'",
            vec![],
        )
        .await;
        if left == 0 {
            return start.elapsed();
        }
        if said.elapsed() > Duration::from_secs(10) {
            eprintln!("{:?}: {left} records not synced", start.elapsed());
            said = std::time::Instant::now();
        }
        if start.elapsed() > within {
            let states = strings(
                &env.db,
                "SELECT 'records ' || sync_state || ': ' || COUNT(*) FROM records GROUP BY sync_state \
                 UNION ALL SELECT 'live ' || status || ' due ' || CAST(due_at <= now() AS TEXT) || ' enqueued ' || \
                   CAST(enqueued_at IS NOT NULL AS TEXT) || ' claims ' || CAST(claims AS TEXT) || ': ' || COUNT(*) \
                   FROM live_pushes GROUP BY status, due_at <= now(), enqueued_at IS NOT NULL, claims \
                 UNION ALL SELECT 'outbox ' || status || ': ' || COUNT(*) FROM outbox GROUP BY status \
                 UNION ALL SELECT 'failed ' || COALESCE(CAST(last_status_code AS TEXT), '-') || ' ' || \
                   COALESCE(last_error, '') || ': ' || COUNT(*) FROM outbox WHERE status = 'failed' \
                   GROUP BY last_status_code, last_error \
                 UNION ALL SELECT 'stuck ' || r.external_id || ' ' || r.sync_state || ' live ' || \
                   COALESCE(p.status, '-') || ' entries ' || COALESCE((SELECT string_agg(o.status || '@' || \
                   CAST(o.record_version AS TEXT), ',' ORDER BY o.record_version) FROM outbox o \
                   WHERE o.integration_id = r.integration_id AND o.external_id = r.external_id), '') \
                   FROM records r LEFT JOIN live_pushes p ON p.integration_id = r.integration_id \
                   AND p.external_id = r.external_id WHERE r.sync_state <> 'synced'",
                vec![],
            )
            .await;
            panic!(
                "the outbox did not drain in {within:?}: {states:#?}; queue {:?}",
                env.leftovers().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Changes written while a record's push waits (no worker yet) are carried by that one
/// push: its first claim takes the newest change and supersedes the others, so the cloud
/// sees one request with the latest state.
#[tokio::test]
async fn a_waiting_push_carries_the_newest_change() {
    let Some(env) = test_env().await else { return };
    let cloud = FakeCloud::start().await;
    let app = env.spawn_app(PUSH).await;
    let c = &app.client;
    let id = integration(c, &cloud).await;
    for round in 0..3 {
        batch(
            c,
            id,
            vec![json!({ "op": "put", "externalId": "r1", "data": { "round": round } })],
        )
        .await;
    }
    let (stop, worker) = env.spawn_worker(PUSH);
    drained(&env, Duration::from_secs(60)).await;
    let (items, applied) = cloud.get(|c| (c.items.clone(), c.applied.clone()));
    assert_eq!(items["r1"].0, json!({ "round": 2 }));
    assert_eq!(
        applied.len(),
        1,
        "one push for three waiting changes: {applied:?}"
    );
    assert_eq!(
        strings(
            &env.db,
            "SELECT status FROM outbox WHERE integration_id = $1 ORDER BY record_version",
            vec![id.into()],
        )
        .await,
        ["superseded", "superseded", "pushed"]
    );
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// Writes while the cloud is down are kept; when it is back the outbox drains: each
/// record ends with its latest state at the cloud, applied once per change that was
/// pushed, in per-record order, and every record `synced` with the cloud's version and id.
#[tokio::test]
async fn local_writes_reach_the_cloud_once_after_an_outage() {
    let Some(env) = test_env().await else { return };
    let cloud = FakeCloud::start().await;
    cloud.set(|c| c.up = false);
    let app = env.spawn_app(PUSH).await;
    let (stop, worker) = env.spawn_worker(PUSH);
    let c = &app.client;
    let id = integration(c, &cloud).await;
    // 300 records, three changes each, while the cloud is down.
    for round in 0..3 {
        let ops = (0..300)
            .map(|k| json!({ "op": "put", "externalId": format!("sale-{k}"), "data": { "total": k, "round": round } }))
            .collect();
        batch(c, id, ops).await;
    }
    let (s, v) = c
        .post(
            &format!("/api/integrations/{id}/records:batch"),
            &json!({ "operations": [
        { "op": "delete", "externalId": "sale-0" }
    ] }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        cloud.get(|c| c.requests) > 0,
        "pushes were tried while the cloud was down"
    );
    let (_, st) = c.get("/api/sync/status").await;
    assert!(
        st["outboxPending"].as_i64().is_some_and(|n| n >= 300),
        "{st}"
    );
    assert!(
        st["outboxOldestPendingSeconds"]
            .as_i64()
            .is_some_and(|s| s >= 1),
        "{st}"
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE sync_state IN ('pending', 'pushing')",
            vec![]
        )
        .await,
        300
    );

    cloud.set(|c| c.up = true);
    drained(&env, Duration::from_secs(60)).await;
    let (items, applied) = cloud.get(|c| (c.items.clone(), c.applied.clone()));
    assert_eq!(items.len(), 299, "sale-0 was deleted");
    for k in 1..300 {
        let x = format!("sale-{k}");
        if items[&x].0 != json!({ "total": k, "round": 2 }) {
            let entries = strings(
                &env.db,
                "SELECT CAST(id AS TEXT) || ' ' || status || ' v' || CAST(record_version AS TEXT) || ' base ' || \
                 COALESCE(base_cloud_version, '-') || ' ' || COALESCE(CAST(data AS TEXT), 'delete') || ' ' || \
                 COALESCE(last_error, '') FROM outbox WHERE external_id = $1 ORDER BY record_version",
                vec![x.clone().into()],
            )
            .await;
            let at_cloud: Vec<&(String, String)> =
                applied.iter().filter(|(r, _)| *r == x).collect();
            panic!(
                "{x}: the cloud holds {:?}; applied {at_cloud:?}; entries {entries:#?}",
                items[&x]
            );
        }
    }
    // Exactly once in effect: no key applied twice, no more than one change per write.
    let mut keys: Vec<&String> = applied.iter().map(|(_, k)| k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        applied.len(),
        "an Idempotency-Key was applied twice"
    );
    assert!(applied.len() <= 3 * 300 + 1);
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'pushing')",
            vec![]
        )
        .await,
        0
    );
    let (_, page) = c
        .get(&format!("/api/integrations/{id}/records?pageSize=2"))
        .await;
    let r = &page["records"][0];
    assert_eq!(r["syncState"], "synced", "{r}");
    assert!(
        r["cloudVersion"].is_string() && r["cloudId"].as_str().is_some_and(|s| s.starts_with("c-")),
        "{r}"
    );
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// A change after a push was acknowledged carries the cloud version it was based on
/// (`If-Match`); the cloud's 409/412 is a conflict, another 4xx a failure.
#[tokio::test]
async fn refused_pushes_are_conflicts_or_failures() {
    let Some(env) = test_env().await else { return };
    let cloud = FakeCloud::start().await;
    let app = env.spawn_app(PUSH).await;
    let (stop, worker) = env.spawn_worker(PUSH);
    let c = &app.client;
    let id = integration(c, &cloud).await;
    batch(
        c,
        id,
        vec![json!({ "op": "put", "externalId": "a", "data": { "n": 1 } })],
    )
    .await;
    let synced = |ext: &'static str, state: &'static str| {
        let db = env.db.clone();
        async move {
            eventually(
                Duration::from_secs(20),
                &format!("{ext} {state}"),
                || async {
                    let n = count(
                        &db,
                        "SELECT COUNT(*) FROM records WHERE external_id = $1 AND sync_state = $2",
                        vec![ext.into(), state.into()],
                    )
                    .await;
                    (n == 1).then_some(())
                },
            )
            .await;
        }
    };
    synced("a", "synced").await;
    // The cloud changes the record behind our back: our next push is based on version 1.
    cloud.set(|c| {
        if let Some(it) = c.items.get_mut("a") {
            it.1 = 7;
        }
    });
    batch(
        c,
        id,
        vec![json!({ "op": "patch", "externalId": "a", "data": { "n": 2 } })],
    )
    .await;
    synced("a", "conflict").await;
    assert_eq!(
        cloud.get(|c| c.items["a"].0.clone()),
        json!({ "n": 1 }),
        "nothing overwritten"
    );

    cloud.set(|c| {
        c.refuse.insert("b".into(), 400);
    });
    batch(
        c,
        id,
        vec![json!({ "op": "put", "externalId": "b", "data": { "n": 1 } })],
    )
    .await;
    synced("b", "failed").await;
    let err: Vec<String> = crate::util::strings(
        &env.db,
        "SELECT last_error FROM outbox WHERE external_id = 'b'",
        vec![],
    )
    .await;
    assert!(err[0].contains("HTTP 400"), "{err:?}");
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// A worker killed (SIGKILL) after the cloud applied a push and before its finish
/// committed: the retry carries the same `Idempotency-Key`, so the cloud applies the
/// change once, and the record ends `synced`.
#[tokio::test]
async fn a_worker_killed_mid_push_applies_the_change_once() {
    let Some(env) = test_env().await else { return };
    let cloud = FakeCloud::start().await;
    cloud.set(|c| c.hang_after_apply = true);
    let app = env.spawn_app(PUSH).await;
    let c = &app.client;
    let mut a = procs::syncfleet("worker", &env.vars(PUSH));
    let id = integration(c, &cloud).await;
    batch(
        c,
        id,
        vec![json!({ "op": "put", "externalId": "x", "data": { "n": 1 } })],
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the cloud applied the change",
        || async { (cloud.get(|c| c.applied.len()) == 1).then_some(()) },
    )
    .await;
    a.signal("KILL");
    let _ = a.child.wait();
    let _b = procs::syncfleet("worker", &env.vars(PUSH));
    eventually(Duration::from_secs(30), "the record synced", || async {
        let n = count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE sync_state = 'synced'",
            vec![],
        )
        .await;
        (n == 1).then_some(())
    })
    .await;
    let (applied, requests) = cloud.get(|c| (c.applied.len(), c.requests));
    assert_eq!(applied, 1, "applied once");
    assert!(requests >= 2, "the push was retried");
    app.stop().await;
}

/// 10,000 local writes (5,000 records, two changes each) while the cloud is down, to a
/// target that takes 100 changes a request: when the cloud is back every record reaches
/// it with its latest state, each change applied at most once and in per-record order,
/// in batch requests; a batch setting the cloud cannot take is refused up front.
#[tokio::test]
async fn ten_thousand_writes_drain_in_batches_after_an_outage() {
    let Some(env) = test_env().await else { return };
    if std::env::var("SYNCFLEET_TEST_LOGS").is_ok() {
        let _ = syncfleet_api::telemetry::init(syncfleet_api::config::LogFormat::Text);
    }
    let cloud = FakeCloud::start().await;
    cloud.set(|c| c.up = false);
    let app = env.spawn_app(PUSH).await;
    let (stop, worker) = env.spawn_worker(PUSH);
    let c = &app.client;
    let config = |batch: Value| {
        json!({
            "name": "outlet 7", "kind": "http_json", "syncEnabled": false,
            "config": {
                "url": format!("{}/items", cloud.url), "recordsPointer": "/items", "idPointer": "/id",
                "push": { "url": format!("{}/items/{{externalId}}", cloud.url),
                          "versionPointer": "/version", "idPointer": "/id", "batch": batch }
            }
        })
    };
    for (bad, field) in [
        (
            json!({ "url": format!("{}/batch", cloud.url), "maxOperations": 1 }),
            "config.push.batch.maxOperations",
        ),
        (
            json!({ "url": format!("{}/batch", cloud.url), "body": { "ops": [] } }),
            "config.push.batch.body",
        ),
        (json!({ "url": "ftp://x/batch" }), "config.push.batch.url"),
    ] {
        let (s, v) = c.post("/api/integrations", &config(bad)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(v.to_string().contains(field), "{field}: {v}");
    }
    let (s, v) = c
        .post(
            "/api/integrations",
            &config(json!({ "url": format!("{}/batch", cloud.url), "maxOperations": 100 })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id: Uuid = v["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
    const RECORDS: usize = 5_000;
    // Requests of 250 operations: a write's transaction holds its records' rows, and a
    // debug build's 1,000-operation write outlasts this suite's short lock timeout.
    const OPS: usize = 250;
    let writing = std::time::Instant::now();
    for round in 0..2 {
        for chunk in 0..RECORDS / OPS {
            let ops = (chunk * OPS..(chunk + 1) * OPS)
                .map(|k| json!({ "op": "put", "externalId": format!("sale-{k}"), "data": { "total": k, "round": round } }))
                .collect();
            batch(c, id, ops).await;
        }
    }
    let (_, st) = c.get("/api/sync/status").await;
    assert!(
        st["outboxPending"]
            .as_i64()
            .is_some_and(|n| n >= RECORDS as i64),
        "{st}"
    );
    eprintln!("10,000 writes took {:?}", writing.elapsed());
    cloud.set(|c| c.up = true);
    let took = drained(&env, Duration::from_secs(400)).await;
    eprintln!("drained {took:?} after the cloud came back");
    let (items, applied, batches) = cloud.get(|c| (c.items.clone(), c.applied.clone(), c.batches));
    assert_eq!(items.len(), RECORDS);
    for k in 0..RECORDS {
        assert_eq!(
            items[&format!("sale-{k}")].0,
            json!({ "total": k, "round": 1 }),
            "sale-{k}"
        );
    }
    let mut keys: Vec<&String> = applied.iter().map(|(_, k)| k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), applied.len(), "a change was applied twice");
    assert!(
        applied.len() <= 2 * RECORDS,
        "{} changes applied",
        applied.len()
    );
    // Per record, changes arrive in the order they were written (outbox ids are
    // time-ordered).
    let mut last: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for (rec, key) in &applied {
        if let Some(prev) = last.insert(rec, key) {
            assert!(prev < key.as_str(), "{rec}: {prev} after {key}");
        }
    }
    assert!(
        batches > 0 && batches <= applied.len() / 10,
        "{batches} batch requests for {} changes",
        applied.len()
    );
    // The queue entries of pushes that went along in another's batch find them done:
    // no-ops the worker drains.
    eventually(Duration::from_secs(60), "the queue drained", || async {
        (env.leftovers().await.2 == 0).then_some(())
    })
    .await;
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// Pushes keep the provider's fleet-wide rate (`SYNCFLEET_RATE_LIMITS`, shared with the
/// pulls of the same source and credential): 24 changes at 8 requests/s (burst 2) take
/// at least 2.5 s however fast the cloud answers, and every one arrives.
#[tokio::test]
async fn pushes_keep_the_providers_rate_limit() {
    let Some(env) = test_env().await else { return };
    let cloud = FakeCloud::start().await;
    let vars: Vec<(&str, &str)> = PUSH
        .iter()
        .copied()
        .chain([("SYNCFLEET_RATE_LIMITS", "http_json=8/1s:2")])
        .collect();
    let app = env.spawn_app(&vars).await;
    let c = &app.client;
    let id = integration(c, &cloud).await;
    let ops = (0..24)
        .map(|k| json!({ "op": "put", "externalId": format!("r-{k}"), "data": { "n": k } }))
        .collect();
    batch(c, id, ops).await;
    let began = std::time::Instant::now();
    let (stop, worker) = env.spawn_worker(&vars);
    eventually(Duration::from_secs(60), "every change pushed", || async {
        (cloud.get(|c| c.applied.len()) == 24).then_some(())
    })
    .await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "24 pushes at 8/s took {took:?}"
    );
    eventually(Duration::from_secs(20), "all synced", || async {
        let n = count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE sync_state = 'synced'",
            vec![],
        )
        .await;
        (n == 24).then_some(())
    })
    .await;
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// The embedded mode (SQLite) pushes the same way: changes written while the cloud is
/// down drain when it returns, batched and one by one, each record's latest state
/// (a delete too) applied once per change pushed, every record `synced`.
#[tokio::test]
async fn the_embedded_mode_pushes_after_an_outage() {
    let cloud = FakeCloud::start().await;
    cloud.set(|c| c.up = false);
    let app = tests::embedded::spawn_standalone(PUSH).await;
    let c = &app.client;
    let mut ids = Vec::new();
    for (name, batch) in [
        ("single", Value::Null),
        (
            "batched",
            json!({ "url": format!("{}/batch", cloud.url), "maxOperations": 40 }),
        ),
    ] {
        let mut push = json!({ "url": format!("{}/items/{{externalId}}", cloud.url),
                               "versionPointer": "/version", "idPointer": "/id" });
        if !batch.is_null() {
            push["batch"] = batch;
        }
        let (s, v) = c
            .post(
                "/api/integrations",
                &json!({
                    "name": name, "kind": "http_json", "syncEnabled": false,
                    "config": { "url": format!("{}/items", cloud.url), "recordsPointer": "/items",
                                "idPointer": "/id", "push": push }
                }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ids.push((
            name,
            v["id"]
                .as_str()
                .and_then(|s| s.parse::<Uuid>().ok())
                .expect("id"),
        ));
    }
    for &(name, id) in &ids {
        for round in 0..2 {
            let ops = (0..100)
                .map(|k| json!({ "op": "put", "externalId": format!("{name}{k}"), "data": { "k": k, "round": round } }))
                .collect();
            batch(c, id, ops).await;
        }
        batch(
            c,
            id,
            vec![json!({ "op": "delete", "externalId": format!("{name}0") })],
        )
        .await;
    }
    // Nothing reaches a cloud that is down, and every change waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cloud.get(|c| c.items.is_empty()));
    cloud.set(|c| c.up = true);
    for &(name, id) in &ids {
        eventually(
            Duration::from_secs(120),
            "the embedded outbox drained",
            || async {
                let (_, v) = c
                    .get(&format!(
                        "/api/integrations/{id}/records?syncState=synced&pageSize=500"
                    ))
                    .await;
                (v["records"].as_array().map(Vec::len) == Some(99)).then_some(())
            },
        )
        .await;
        let (_, v) = c
            .get(&format!("/api/integrations/{id}/records?syncState=pending"))
            .await;
        assert_eq!(v["records"], json!([]), "{name}: {v}");
    }
    let (items, applied, batches) = cloud.get(|c| (c.items.clone(), c.applied.clone(), c.batches));
    assert_eq!(
        items.len(),
        2 * 99,
        "{:?}",
        items.keys().collect::<Vec<_>>()
    );
    for k in 1..100 {
        for name in ["single", "batched"] {
            assert_eq!(
                items[&format!("{name}{k}")].0,
                json!({ "k": k, "round": 1 }),
                "{name}{k}"
            );
        }
    }
    let mut keys: Vec<&String> = applied.iter().map(|(_, k)| k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), applied.len(), "a change was applied twice");
    assert!(batches > 0, "the batched target got no batch request");
    app.stop().await;
}

/// A create carries `If-None-Match: *` (single and batched), so a late duplicate of an
/// older create — a zombie push whose record has moved on — is refused by a cloud that
/// already holds a newer change instead of overwriting it; a change of a record the
/// cloud knows carries `If-Match` instead, and `conditionalCreate: false` sends neither.
#[tokio::test]
async fn a_late_create_cannot_overwrite_a_newer_change() {
    use syncfleet_worker::connectors::ConnectorEnv;
    use syncfleet_worker::connectors::http_json::{HttpJson, PushRequest};
    let cloud = FakeCloud::start().await;
    let env = ConnectorEnv {
        net: syncfleet_worker::net::NetPolicy {
            allow_private: true,
            allowed: Vec::new(),
        },
    };
    let target = |batch: bool, conditional: bool| {
        let mut push = json!({ "url": format!("{}/items/{{externalId}}", cloud.url),
                               "versionPointer": "/version", "conditionalCreate": conditional });
        if batch {
            push["batch"] = json!({ "url": format!("{}/batch", cloud.url) });
        }
        HttpJson::from_config(
            &json!({ "url": format!("{}/items", cloud.url), "recordsPointer": "/items",
                     "idPointer": "/id", "push": push }),
            Some(&env),
        )
        .expect("config")
    };
    let create =
        |id: &'static str, data: &'static str, key: &'static str, c: &HttpJson| PushRequest {
            external_id: id,
            cloud_id: None,
            data: Some(data),
            idempotency_key: key,
            if_match: None,
            create_only: c.conditional_create(),
        };
    for batch in [false, true] {
        let c = target(batch, true);
        let id = if batch { "b" } else { "s" };
        // The newer change arrives first, then the older create's late duplicate.
        let newer = c
            .push_many(&[create(
                id,
                r#"{"n":2}"#,
                if batch { "b2" } else { "s2" },
                &c,
            )])
            .await
            .expect("push");
        assert_eq!(newer[0].status, 200, "{newer:?}");
        let late = c
            .push_many(&[create(
                id,
                r#"{"n":1}"#,
                if batch { "b1" } else { "s1" },
                &c,
            )])
            .await
            .expect("push");
        assert_eq!(late[0].status, 412, "{late:?}");
        assert_eq!(cloud.get(|cl| cl.items[id].0.clone()), json!({ "n": 2 }));
        // The retry of the newer create (its own key) is answered as the first time.
        let again = c
            .push_many(&[create(
                id,
                r#"{"n":2}"#,
                if batch { "b2" } else { "s2" },
                &c,
            )])
            .await
            .expect("push");
        assert_eq!(again[0].status, 200, "{again:?}");
    }
    // Without conditional creates the late create wins (what the header prevents).
    let c = target(false, false);
    assert!(!c.conditional_create());
    c.push_many(&[create("u", r#"{"n":2}"#, "u2", &c)])
        .await
        .expect("push");
    let late = c
        .push_many(&[create("u", r#"{"n":1}"#, "u1", &c)])
        .await
        .expect("push");
    assert_eq!(late[0].status, 200);
    assert_eq!(cloud.get(|cl| cl.items["u"].0.clone()), json!({ "n": 1 }));
}

/// Local writes to one integration race with each other and with its pushes' finishes:
/// six writers send batches over the same 30 records in shuffled orders while the cloud
/// takes each change, and four requests race with one `Idempotency-Key`. No write
/// deadlocks or errors (a 503 would be a busy retry, and is counted), every accepted
/// change bumps its record's version once, the key writes once and every racer gets that
/// answer (one told busy sends again with its key), a change written while the previous one was on its way is not refused as a
/// conflict with ourselves (its base version follows our own push), and the cloud ends
/// with each record's local copy.
#[tokio::test]
async fn concurrent_writers_of_one_integration_keep_every_change() {
    let Some(env) = test_env().await else { return };
    let cloud = FakeCloud::start().await;
    let app = env.spawn_app(PUSH).await;
    let (stop, worker) = env.spawn_worker(PUSH);
    let c = &app.client;
    let id = integration(c, &cloud).await;
    const RECORDS: usize = 30;
    let writer = |w: usize| {
        let c = c.clone();
        async move {
            let mut touched = vec![0_i64; RECORDS];
            let mut busy = 0;
            for b in 0..15_usize {
                // A different order each batch (a simple permutation of the 30 keys).
                let ops: Vec<usize> = (0..10)
                    .map(|k| (k * 7 + w * 11 + b * 13) % RECORDS)
                    .collect();
                let body = json!({ "operations": ops.iter().map(|&k| json!({
                    "op": "put", "externalId": format!("r{k:02}"), "data": { "w": w, "b": b, "k": k }
                })).collect::<Vec<_>>() });
                let (s, v) = c
                    .post(&format!("/api/integrations/{id}/records:batch"), &body)
                    .await;
                match s {
                    StatusCode::OK => ops.iter().for_each(|&k| touched[k] += 1),
                    StatusCode::SERVICE_UNAVAILABLE => busy += 1,
                    other => panic!("writer {w} batch {b}: {other} {v}"),
                }
            }
            (touched, busy)
        }
    };
    // A racer is a client that honours a busy answer (503 with `Retry-After`) by
    // sending the same request again with its key: it must then get the first answer.
    let racer = || {
        let c = c.clone();
        async move {
            let mut tries = 0;
            loop {
                tries += 1;
                let r = c
                    .http
                    .put(format!("{}/api/integrations/{id}/records/same", c.base))
                    .bearer_auth(&c.key)
                    .header("Idempotency-Key", "race-1")
                    .json(&json!({ "n": 1 }))
                    .send()
                    .await
                    .expect("request");
                let status = r.status();
                let body = r.json::<Value>().await.unwrap_or(Value::Null);
                if status != StatusCode::SERVICE_UNAVAILABLE || tries == 5 {
                    return (status, body);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let (writes, races) = tokio::join!(
        futures::future::join_all((0..6).map(writer)),
        futures::future::join_all((0..4).map(|_| racer()))
    );
    let mut touched = vec![0_i64; RECORDS];
    let mut busy = 0;
    for (t, b) in writes {
        busy += b;
        for (k, n) in t.into_iter().enumerate() {
            touched[k] += n;
        }
    }
    eprintln!("{busy} of 90 batches answered busy");
    for (s, v) in &races {
        assert_eq!((*s, v), (StatusCode::CREATED, &races[0].1), "{races:?}");
    }
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM outbox WHERE integration_id = $1 AND external_id = 'same'",
            vec![id.into()]
        )
        .await,
        1
    );
    for (k, n) in touched.iter().enumerate() {
        let v = count(
            &env.db,
            "SELECT CAST(version AS BIGINT) FROM records WHERE integration_id = $1 AND external_id = $2",
            vec![id.into(), format!("r{k:02}").into()],
        )
        .await;
        assert_eq!(v, *n, "r{k:02}: version {v}, {n} accepted changes");
    }
    drained(&env, Duration::from_secs(120)).await;
    let local: Vec<String> = strings(
        &env.db,
        "SELECT external_id || '=' || CAST(data AS TEXT) FROM records WHERE integration_id = $1 ORDER BY external_id",
        vec![id.into()],
    )
    .await;
    let items = cloud.get(|c| c.items.clone());
    for l in &local {
        let (x, data) = l.split_once('=').expect("row");
        let data: Value = serde_json::from_str(data).expect("json");
        assert_eq!(items.get(x).map(|i| &i.0), Some(&data), "{x}");
    }
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}
