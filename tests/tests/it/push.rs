//! Pushing local changes to a fake cloud that records every request, can go down,
//! answers 409/412/400 when told, and deduplicates by `Idempotency-Key` the way a real
//! cloud does: changes reach it exactly once in effect, in per-record order, through a
//! cloud outage and a worker killed mid-push.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tests::ApiClient;
use tests::env::test_env;
use tests::procs;
use uuid::Uuid;

use crate::util::{count, eventually};

#[derive(Default)]
struct Cloud {
    /// `false` = every request gets 503.
    up: bool,
    /// The next request is applied, then answered only after 300 s (a worker killed
    /// while waiting for it).
    hang_after_apply: bool,
    /// Record id → status the cloud answers instead of applying.
    refuse: HashMap<String, u16>,
    /// Record id → (data, version); a delete removes it.
    items: HashMap<String, (Value, u64)>,
    /// Idempotency-Key → the answer first given (a repeat gets it without applying).
    answered: HashMap<String, (u16, Value)>,
    /// (record id, Idempotency-Key) of every applied change, in order.
    applied: Vec<(String, String)>,
    requests: usize,
}

#[derive(Clone)]
struct FakeCloud {
    url: String,
    st: Arc<Mutex<Cloud>>,
}

impl FakeCloud {
    async fn start() -> Self {
        let st = Arc::new(Mutex::new(Cloud {
            up: true,
            ..Cloud::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let s = st.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move { handle(s, method, uri, headers, body).await }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, st }
    }

    fn set(&self, f: impl FnOnce(&mut Cloud)) {
        f(&mut self.st.lock().expect("lock"));
    }

    fn get<T>(&self, f: impl FnOnce(&Cloud) -> T) -> T {
        f(&self.st.lock().expect("lock"))
    }
}

async fn handle(
    st: Arc<Mutex<Cloud>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = uri.path().trim_start_matches("/items/").to_owned();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let if_match = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, answer, hang) = {
        let mut c = st.lock().expect("lock");
        c.requests += 1;
        if !c.up {
            return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
        }
        if let Some((s, a)) = c.answered.get(&key) {
            (*s, a.clone(), false)
        } else if let Some(s) = c.refuse.get(&id) {
            (*s, json!({ "error": "refused" }), false)
        } else {
            let current = c.items.get(&id).map(|(_, v)| *v);
            if let (Some(m), Some(v)) = (&if_match, current)
                && m != &v.to_string()
            {
                (
                    412,
                    json!({ "error": "version mismatch", "version": v }),
                    false,
                )
            } else {
                let version = current.unwrap_or(0) + 1;
                if method == Method::DELETE {
                    c.items.remove(&id);
                } else {
                    let data: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    c.items.insert(id.clone(), (data, version));
                }
                c.applied.push((id.clone(), key.clone()));
                let a = json!({ "id": format!("c-{id}"), "version": version });
                c.answered.insert(key.clone(), (200, a.clone()));
                let hang = std::mem::take(&mut c.hang_after_apply);
                (200, a, hang)
            }
        }
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(300)).await;
    }
    (
        StatusCode::from_u16(status).expect("status"),
        axum::Json(answer),
    )
        .into_response()
}

const PUSH: &[(&str, &str)] = &[
    ("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true"),
    ("SYNCFLEET_NOTIFY_PUMP_MS", "50"),
    ("SYNCFLEET_NOTIFY_BACKOFF_BASE_MS", "200"),
    ("SYNCFLEET_NOTIFY_BACKOFF_CAP_MS", "1000"),
];

/// A manual-only http_json integration whose push target is the fake cloud.
async fn integration(c: &ApiClient, cloud: &FakeCloud) -> Uuid {
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

async fn batch(c: &ApiClient, id: Uuid, ops: Vec<Value>) {
    let (s, v) = c
        .post(
            &format!("/api/integrations/{id}/records:batch"),
            &json!({ "operations": ops }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
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
    eventually(Duration::from_secs(60), "the outbox drained", || async {
        let left = count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE sync_state <> 'synced'",
            vec![],
        )
        .await;
        (left == 0).then_some(())
    })
    .await;
    let (items, applied) = cloud.get(|c| (c.items.clone(), c.applied.clone()));
    assert_eq!(items.len(), 299, "sale-0 was deleted");
    for k in 1..300 {
        assert_eq!(
            items[&format!("sale-{k}")].0,
            json!({ "total": k, "round": 2 }),
            "sale-{k}"
        );
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
