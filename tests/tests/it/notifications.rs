//! Notifications end to end: health events reach a receiver that verifies every
//! Standard Webhooks signature, exactly once per event id; deliveries follow the retry
//! rules; freshness objectives breach once and recover; a worker killed mid-delivery
//! loses nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tests::ApiClient;
use tests::env::test_env;
use tests::procs;
use uuid::Uuid;

use syncfleet_worker::notifications::sign;

use crate::util::eventually;

/// How a receiver path answers, one reply per request (then 200).
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    RetryAfter(u16, u64),
    /// Never answers (within any timeout a test uses).
    Hang,
}

#[derive(Debug, Clone)]
struct Got {
    path: String,
    id: String,
    body: Value,
    verified: bool,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    secrets: HashMap<String, String>,
    script: HashMap<String, VecDeque<Reply>>,
    got: Vec<Got>,
}

/// A webhook receiver on 127.0.0.1 that records each request and checks its signature
/// with the secret of its path, as any Standard Webhooks library would.
#[derive(Clone)]
struct Receiver {
    url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let st = inner.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let st = st.clone();
            async move { receive(st, uri, headers, body).await }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner }
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn secret(&self, path: &str, secret: &str) {
        self.inner
            .lock()
            .expect("lock")
            .secrets
            .insert(path.into(), secret.into());
    }

    fn script(&self, path: &str, replies: &[Reply]) {
        self.inner
            .lock()
            .expect("lock")
            .script
            .insert(path.into(), replies.iter().copied().collect());
    }

    fn got(&self, path: &str) -> Vec<Got> {
        let g = self.inner.lock().expect("lock");
        g.got.iter().filter(|x| x.path == path).cloned().collect()
    }

    /// Distinct events of `type` about `integration` (deduplicated by `webhook-id`).
    fn events(&self, path: &str, t: &str, integration: Uuid) -> usize {
        let mut ids: Vec<String> = self
            .got(path)
            .into_iter()
            .filter(|g| {
                g.body["type"] == t && g.body["data"]["integrationId"] == json!(integration)
            })
            .map(|g| g.id)
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    }
}

async fn receive(st: Arc<Mutex<Inner>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, ts, sig) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    let reply = {
        let mut g = st.lock().expect("lock");
        let now = chrono::Utc::now().timestamp();
        let verified = g.secrets.get(&path).is_some_and(|s| {
            ts.parse::<i64>()
                .ok()
                .is_some_and(|t| sign::verify(s, &id, t, &body, &sig, now).is_ok())
        });
        g.got.push(Got {
            path: path.clone(),
            id,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            verified,
            at: Instant::now(),
        });
        g.script.get_mut(&path).and_then(VecDeque::pop_front)
    };
    match reply {
        None => StatusCode::OK.into_response(),
        Some(Reply::Status(s)) => StatusCode::from_u16(s).expect("status").into_response(),
        Some(Reply::RetryAfter(s, secs)) => (
            StatusCode::from_u16(s).expect("status"),
            [("retry-after", secs.to_string())],
        )
            .into_response(),
        Some(Reply::Hang) => {
            tokio::time::sleep(Duration::from_secs(300)).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Timings for these tests: deliveries pumped every 50 ms, attempts time out after 1 s,
/// backoff from 300 ms.
const NOTIFY: &[(&str, &str)] = &[
    ("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true"),
    ("SYNCFLEET_NOTIFY_PUMP_MS", "50"),
    ("SYNCFLEET_NOTIFY_TIMEOUT_MS", "1000"),
    ("SYNCFLEET_NOTIFY_BACKOFF_BASE_MS", "300"),
    ("SYNCFLEET_NOTIFY_BACKOFF_CAP_MS", "2000"),
];

/// Adds an endpoint at `path` of the receiver; returns its id (and tells the receiver
/// its secret).
async fn endpoint(c: &ApiClient, r: &Receiver, path: &str, extra: Value) -> Uuid {
    let mut body = json!({ "url": r.at(path), "description": path });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (s, v) = c.post("/api/notifications/endpoints", &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let secret = v["secret"].as_str().expect("secret shown once");
    assert!(secret.starts_with("whsec_"), "{secret}");
    r.secret(path, secret);
    v["id"].as_str().and_then(|s| s.parse().ok()).expect("id")
}

async fn patch(c: &ApiClient, path: &str, body: &Value) -> (reqwest::StatusCode, Value) {
    let r = c
        .http
        .patch(format!("{}{path}", c.base))
        .bearer_auth(&c.key)
        .json(body)
        .send()
        .await
        .expect("PATCH");
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// The delivery `id` once its status is `status`.
async fn delivery_when(c: &ApiClient, id: &str, status: &str, within: Duration) -> Value {
    eventually(within, &format!("delivery {status}"), || async {
        let (_, d) = c.get(&format!("/api/notifications/deliveries/{id}")).await;
        (d["status"] == status).then_some(d)
    })
    .await
}

/// A failing integration (maxRetries 3) tells exactly one `integration.at_risk` and one
/// `integration.disabled`; after it is mended and resumed, exactly one
/// `integration.recovered`. Every request is signed and verifies.
#[tokio::test]
async fn a_failing_integration_is_at_risk_then_disabled_then_recovers_once_each() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("its interval keeps scheduling runs until the end");
    let r = Receiver::start().await;
    let app = env.spawn_app(NOTIFY).await;
    let (stop, worker) = env.spawn_worker(NOTIFY);
    let c = &app.client;
    endpoint(c, &r, "/hook", json!({})).await;
    let (s, v) = c
        .post(
            "/api/integrations",
            &json!({ "name": "flaky source", "kind": "synthetic", "syncInterval": 1, "maxRetries": 3,
                     "config": { "failAlways": true } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id: Uuid = v["id"].as_str().and_then(|s| s.parse().ok()).expect("id");

    eventually(
        Duration::from_secs(30),
        "integration.disabled delivered",
        || async { (r.events("/hook", "integration.disabled", id) >= 1).then_some(()) },
    )
    .await;
    let (_, now) = c.get(&format!("/api/integrations/{id}")).await;
    assert_eq!(now["health"], "disabled", "{now}");

    // Mend the source and resume it: one recovery, however many successes follow.
    let (s, v) = patch(
        c,
        &format!("/api/integrations/{id}"),
        &json!({ "version": now["version"], "config": { "failAlways": false } }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = c
        .post(
            &format!("/api/integrations/{id}/resume"),
            &json!({ "reason": "source fixed" }),
        )
        .await;
    assert!(s.is_success(), "{v}");
    eventually(
        Duration::from_secs(30),
        "integration.recovered delivered",
        || async { (r.events("/hook", "integration.recovered", id) >= 1).then_some(()) },
    )
    .await;
    // A few more successful runs (1 s interval) must not tell anything new.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(r.events("/hook", "integration.at_risk", id), 1);
    assert_eq!(r.events("/hook", "integration.disabled", id), 1);
    assert_eq!(r.events("/hook", "integration.recovered", id), 1);
    assert_eq!(r.events("/hook", "integration.resumed", id), 1);
    assert_eq!(
        r.events("/hook", "sync.failed", id),
        0,
        "sync.failed is opt-in"
    );

    let got = r.got("/hook");
    assert!(
        got.iter().all(|g| g.verified),
        "a request failed verification: {got:?}"
    );
    for g in &got {
        assert_eq!(g.body["id"], json!(g.id), "webhook-id is the event id");
        assert!(g.body["timestamp"].is_string() && g.body["workspaceId"].is_string());
    }
    let disabled = got
        .iter()
        .find(|g| g.body["type"] == "integration.disabled")
        .expect("disabled");
    let data = &disabled.body["data"];
    assert_eq!(data["reason"], "max_retries", "{data}");
    assert_eq!(data["integrationName"], "flaky source");
    assert_eq!(data["kind"], "synthetic");
    assert_eq!(data["healthAfter"], "disabled");
    assert_eq!(data["retryCount"], 3);
    assert_eq!(data["maxRetries"], 3);
    assert!(
        data["runId"].is_string() && data["errorClass"].is_string(),
        "{data}"
    );

    // The event log shows the same events.
    let (_, evs) = c
        .get(&format!(
            "/api/notifications/events?integrationId={id}&type=integration.at_risk"
        ))
        .await;
    assert_eq!(evs.as_array().map(Vec::len), Some(1), "{evs}");

    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// The retry rules, one endpoint each: 500 twice then 200 = three attempts spaced by the
/// backoff; 410 = one attempt, failed; no answer within the timeout = retried; 429 with
/// `Retry-After: 2` = the next attempt no earlier than 2 s later.
#[tokio::test]
async fn deliveries_follow_the_retry_rules() {
    let Some(env) = test_env().await else { return };
    let r = Receiver::start().await;
    let app = env.spawn_app(NOTIFY).await;
    let (stop, worker) = env.spawn_worker(NOTIFY);
    let c = &app.client;
    r.script("/flaky", &[Reply::Status(500), Reply::Status(500)]);
    r.script("/gone", &[Reply::Status(410)]);
    r.script("/slow", &[Reply::Hang]);
    r.script("/busy", &[Reply::RetryAfter(429, 2)]);
    let mut deliveries = HashMap::new();
    for path in ["/flaky", "/gone", "/slow", "/busy"] {
        let ep = endpoint(c, &r, path, json!({})).await;
        let (s, v) = c
            .post(
                &format!("/api/notifications/endpoints/{ep}/test"),
                &json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        deliveries.insert(path, v["deliveryId"].as_str().expect("delivery").to_owned());
    }
    let within = Duration::from_secs(30);

    let d = delivery_when(c, &deliveries["/flaky"], "succeeded", within).await;
    assert_eq!(d["attempts"], 3, "{d}");
    let at: Vec<Instant> = r.got("/flaky").iter().map(|g| g.at).collect();
    assert_eq!(at.len(), 3);
    // Backoff 300 ms then 600 ms (plus up to 10 % jitter).
    assert!(
        at[1] - at[0] >= Duration::from_millis(290),
        "{:?}",
        at[1] - at[0]
    );
    assert!(
        at[2] - at[1] >= Duration::from_millis(590),
        "{:?}",
        at[2] - at[1]
    );
    let ids: Vec<String> = r.got("/flaky").into_iter().map(|g| g.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "the webhook-id is stable: {ids:?}"
    );
    let log = d["attemptLog"].as_array().expect("attempt log");
    assert_eq!(log.len(), 3);
    assert_eq!(log[0]["statusCode"], 500);
    assert_eq!(log[2]["outcome"], "delivered");

    let d = delivery_when(c, &deliveries["/gone"], "failed", within).await;
    assert_eq!(d["attempts"], 1, "{d}");
    assert_eq!(d["lastStatusCode"], 410);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(r.got("/gone").len(), 1, "a 410 is not retried");

    let d = delivery_when(c, &deliveries["/slow"], "succeeded", within).await;
    assert_eq!(d["attempts"], 2, "{d}");
    let log = d["attemptLog"].as_array().expect("attempt log");
    assert!(
        log[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{log:?}"
    );

    let d = delivery_when(c, &deliveries["/busy"], "succeeded", within).await;
    assert_eq!(d["attempts"], 2, "{d}");
    let at: Vec<Instant> = r.got("/busy").iter().map(|g| g.at).collect();
    assert!(
        at[1] - at[0] >= Duration::from_secs(2),
        "Retry-After: 2 honoured: {:?}",
        at[1] - at[0]
    );

    // A failed delivery can be retried by hand; a pending one cannot.
    let (s, _) = c
        .post(
            &format!(
                "/api/notifications/deliveries/{}/retry",
                deliveries["/gone"]
            ),
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    delivery_when(c, &deliveries["/gone"], "succeeded", within).await;
    assert_eq!(r.got("/gone").len(), 2);

    let (_, list) = c.get("/api/notifications/deliveries?status=failed").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// Endpoints are validated (SSRF guard included) and keep failing endpoints from being
/// retried forever: a run of failed deliveries disables the endpoint, audited.
#[tokio::test]
async fn endpoints_are_validated_and_disabled_after_repeated_failures() {
    let Some(env) = test_env().await else { return };
    let r = Receiver::start().await;
    let vars: Vec<(&str, &str)> = NOTIFY
        .iter()
        .copied()
        .chain([("SYNCFLEET_NOTIFY_DISABLE_AFTER", "2")])
        .collect();
    let app = env.spawn_app(&vars).await;
    let (stop, worker) = env.spawn_worker(&vars);
    let c = &app.client;
    for (body, field) in [
        (json!({ "url": "ftp://example.com/x" }), "url"),
        (json!({ "url": "not a url" }), "url"),
        (
            json!({ "url": r.at("/x"), "eventTypes": ["integration.exploded"] }),
            "eventTypes",
        ),
        (json!({ "url": r.at("/x"), "format": "teams" }), "format"),
    ] {
        let (s, v) = c.post("/api/notifications/endpoints", &body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert!(v["errors"].to_string().contains(field), "{v}");
    }
    // Without the private-network allowance, a loopback receiver is refused at save.
    let strict = env.spawn_app(&[]).await;
    let (s, v) = strict
        .client
        .post(
            "/api/notifications/endpoints",
            &json!({ "url": r.at("/x") }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    strict.stop().await;

    r.script(
        "/dead",
        &[Reply::Status(404), Reply::Status(404), Reply::Status(404)],
    );
    let ep = endpoint(c, &r, "/dead", json!({})).await;
    for _ in 0..2 {
        let (s, v) = c
            .post(
                &format!("/api/notifications/endpoints/{ep}/test"),
                &json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    }
    let e = eventually(Duration::from_secs(20), "endpoint disabled", || async {
        let (_, e) = c.get(&format!("/api/notifications/endpoints/{ep}")).await;
        (e["enabled"] == false).then_some(e)
    })
    .await;
    assert!(
        e["disabledReason"]
            .as_str()
            .is_some_and(|r| r.contains("2 consecutive")),
        "{e}"
    );
    let audited = crate::util::count(
        &env.db,
        "SELECT COUNT(*) FROM audit_events WHERE action = 'notification_endpoint.disable' AND actor = 'system'",
        vec![],
    )
    .await;
    assert_eq!(audited, 1, "the disable is audited");
    // Enabling it again clears the streak.
    let (s, e) = patch(
        c,
        &format!("/api/notifications/endpoints/{ep}"),
        &json!({ "enabled": true }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["consecutiveFailures"], 0);
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// A rotated secret: both sign during the grace period, and after it only the new one.
#[tokio::test]
async fn a_rotated_secret_signs_beside_the_new_one_until_its_grace_ends() {
    let Some(env) = test_env().await else { return };
    let r = Receiver::start().await;
    let app = env.spawn_app(NOTIFY).await;
    let (stop, worker) = env.spawn_worker(NOTIFY);
    let c = &app.client;
    let ep = endpoint(c, &r, "/rot", json!({})).await;
    let old = r.inner.lock().expect("lock").secrets["/rot"].clone();
    let (s, v) = c
        .post(
            &format!("/api/notifications/endpoints/{ep}/rotate-secret"),
            &json!({ "graceSeconds": 2 }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let new = v["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new, old);
    let (_, t) = c
        .post(
            &format!("/api/notifications/endpoints/{ep}/test"),
            &json!({}),
        )
        .await;
    delivery_when(
        c,
        t["deliveryId"].as_str().expect("id"),
        "succeeded",
        Duration::from_secs(20),
    )
    .await;
    // Verified with the old secret (the receiver still holds it) during the grace.
    assert!(r.got("/rot").iter().all(|g| g.verified));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, t) = c
        .post(
            &format!("/api/notifications/endpoints/{ep}/test"),
            &json!({}),
        )
        .await;
    delivery_when(
        c,
        t["deliveryId"].as_str().expect("id"),
        "succeeded",
        Duration::from_secs(20),
    )
    .await;
    let got = r.got("/rot");
    assert!(
        !got.last().expect("second").verified,
        "the rotated-out secret no longer verifies"
    );
    r.secret("/rot", &new);
    let (_, t) = c
        .post(
            &format!("/api/notifications/endpoints/{ep}/test"),
            &json!({}),
        )
        .await;
    delivery_when(
        c,
        t["deliveryId"].as_str().expect("id"),
        "succeeded",
        Duration::from_secs(20),
    )
    .await;
    assert!(
        r.got("/rot").last().expect("third").verified,
        "the new secret verifies"
    );
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// A source that hangs past its objective (interval 1 s + lease 1 s: 3 s) makes one
/// `integration.stale`, and one `integration.recovered` when it syncs again.
#[tokio::test]
async fn a_hanging_source_goes_stale_once_and_recovers_once() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("its interval keeps scheduling runs until the end");
    let r = Receiver::start().await;
    let app = env.spawn_app(NOTIFY).await;
    let (stop, worker) = env.spawn_worker(NOTIFY);
    let c = &app.client;
    endpoint(c, &r, "/fresh", json!({})).await;
    let id = c
        .create(
            "slow source",
            "synthetic",
            json!({ "latencyMs": 0 }),
            Some(1),
        )
        .await;
    let v = eventually(Duration::from_secs(20), "a first success", || async {
        let (_, v) = c.get(&format!("/api/integrations/{id}")).await;
        v["lastSuccessAt"].is_string().then_some(v)
    })
    .await;
    assert_eq!(v["staleAfter"], 3, "twice the interval plus the lease: {v}");
    assert_eq!(v["stale"], false);
    let (s, v) = patch(
        c,
        &format!("/api/integrations/{id}"),
        &json!({ "version": v["version"], "config": { "latencyMs": 7000 } }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    eventually(
        Duration::from_secs(20),
        "integration.stale delivered",
        || async { (r.events("/fresh", "integration.stale", id) >= 1).then_some(()) },
    )
    .await;
    let (_, st) = c.get("/api/sync/status").await;
    assert_eq!(st["staleCount"], 1, "{st}");
    let (_, v) = c.get(&format!("/api/integrations/{id}")).await;
    assert_eq!(v["stale"], true, "{v}");
    assert!(
        v["stalenessSeconds"].as_i64().is_some_and(|s| s >= 3),
        "{v}"
    );
    eventually(
        Duration::from_secs(30),
        "integration.recovered delivered",
        || async { (r.events("/fresh", "integration.recovered", id) >= 1).then_some(()) },
    )
    .await;
    let (_, v) = c.get(&format!("/api/integrations/{id}")).await;
    let (s, _) = patch(
        c,
        &format!("/api/integrations/{id}"),
        &json!({ "version": v["version"], "config": { "latencyMs": 0 } }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        r.events("/fresh", "integration.stale", id),
        1,
        "once per breach"
    );
    assert_eq!(r.events("/fresh", "integration.recovered", id), 1);
    let stale = r
        .got("/fresh")
        .into_iter()
        .find(|g| g.body["type"] == "integration.stale")
        .expect("stale");
    assert_eq!(stale.body["data"]["healthAfter"], "stale");
    assert!(
        stale.body["data"]["stalenessSeconds"]
            .as_i64()
            .is_some_and(|s| s >= 3)
    );
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// 10,000 healthy integrations, their objectives not due: the detector reads none of
/// them and writes no event (it reads the due-time index, never the whole table).
#[tokio::test]
async fn ten_thousand_fresh_integrations_make_no_stale_event() {
    let Some(env) = test_env().await else { return };
    let ws = syncfleet_api::db::default_workspace(&env.db)
        .await
        .expect("workspace");
    sea_orm::ConnectionTrait::execute_unprepared(
        &env.db,
        &format!(
            "INSERT INTO integrations (id, workspace_id, name, kind, config, sync_interval_secs, sync_enabled, \
               next_trigger, followup_requested, retry_count, max_retries, health, version, created_at, updated_at, \
               last_success_at, stale_after_secs, stale_at) \
             SELECT gen_random_uuid(), '{ws}', 'fresh ' || g, 'synthetic', '{{}}', 300, true, 'schedule', false, 0, 3, \
               'healthy', 1, now(), now(), now(), 630, now() + interval '630 seconds' FROM generate_series(1, 10000) g"
        ),
    )
    .await
    .expect("seed");
    let stale = syncfleet_worker::notifications::freshness::detect(&env.db, 1000)
        .await
        .expect("detect");
    assert!(stale.is_empty());
    let n = crate::util::count(&env.db, "SELECT COUNT(*) FROM events", vec![]).await;
    assert_eq!(n, 0);
    // The detector's read is the partial index on stale_at (statistics as autovacuum
    // would have them).
    sea_orm::ConnectionTrait::execute_unprepared(&env.db, "ANALYZE integrations")
        .await
        .expect("analyze");
    let plan = crate::util::strings(
        &env.db,
        "EXPLAIN SELECT id FROM integrations WHERE stale_at <= now() ORDER BY stale_at LIMIT 1000",
        vec![],
    )
    .await
    .join("\n");
    assert!(plan.contains("idx_integrations_stale_at"), "{plan}");
}

/// A worker killed (SIGKILL) while delivering an event that its finish committed: the
/// delivery is reaped and delivered by another worker. Nothing is lost, and the only
/// duplicate the receiver sees carries the same `webhook-id`.
#[tokio::test]
async fn a_worker_killed_mid_delivery_loses_nothing() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("its interval keeps scheduling runs until the end");
    let r = Receiver::start().await;
    // The first attempt hangs past the lease (1.5 s): the worker is killed inside it.
    let vars: Vec<(&str, &str)> = NOTIFY
        .iter()
        .copied()
        .filter(|(k, _)| *k != "SYNCFLEET_NOTIFY_TIMEOUT_MS")
        .chain([("SYNCFLEET_NOTIFY_TIMEOUT_MS", "30000")])
        .collect();
    let app = env.spawn_app(&vars).await;
    let c = &app.client;
    r.script("/k", &[Reply::Hang]);
    endpoint(
        c,
        &r,
        "/k",
        json!({ "eventTypes": ["integration.disabled"] }),
    )
    .await;
    let mut a = procs::syncfleet("worker", &env.vars(&vars));
    let id = c
        .create(
            "broken",
            "synthetic",
            json!({ "failAlways": true, "errorClass": "config" }),
            Some(1),
        )
        .await;
    eventually(
        Duration::from_secs(30),
        "the first attempt reached the receiver",
        || async { (!r.got("/k").is_empty()).then_some(()) },
    )
    .await;
    a.signal("KILL");
    let _ = a.child.wait();
    let _b = procs::syncfleet("worker", &env.vars(&vars));
    eventually(
        Duration::from_secs(30),
        "delivered by the second worker",
        || async {
            let (_, list) = c
                .get("/api/notifications/deliveries?status=succeeded")
                .await;
            (list.as_array().map(Vec::len) == Some(1)).then_some(())
        },
    )
    .await;
    let got = r.got("/k");
    assert!(got.len() >= 2, "{got:?}");
    assert!(
        got.iter().all(|g| g.id == got[0].id && g.verified),
        "one event, one id: {got:?}"
    );
    assert_eq!(r.events("/k", "integration.disabled", id), 1);
    app.stop().await;
}

/// The embedded mode (SQLite, one process) delivers too.
#[tokio::test]
async fn the_embedded_mode_delivers() {
    let r = Receiver::start().await;
    let app = tests::embedded::spawn_standalone(NOTIFY).await;
    let c = &app.client;
    endpoint(
        c,
        &r,
        "/e",
        json!({ "eventTypes": ["integration.disabled", "sync.failed"] }),
    )
    .await;
    let id = c
        .create(
            "broken",
            "synthetic",
            json!({ "failAlways": true, "errorClass": "auth" }),
            None,
        )
        .await;
    eventually(
        Duration::from_secs(30),
        "integration.disabled delivered",
        || async { (r.events("/e", "integration.disabled", id) == 1).then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(10), "sync.failed delivered", || async {
        (r.events("/e", "sync.failed", id) == 1).then_some(())
    })
    .await;
    let got = r.got("/e");
    assert!(got.iter().all(|g| g.verified), "{got:?}");
    let disabled = got
        .iter()
        .find(|g| g.body["type"] == "integration.disabled")
        .expect("disabled");
    assert_eq!(disabled.body["data"]["reason"], "auth");
    app.stop().await;
}

/// Events older than the retention go with their finished deliveries and attempts; an
/// event with a delivery still pending stays, however old.
#[tokio::test]
async fn old_events_are_pruned_with_their_finished_deliveries() {
    let Some(env) = test_env().await else { return };
    let ws = syncfleet_api::db::default_workspace(&env.db)
        .await
        .expect("workspace");
    let (done, pending, fresh) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let ep = Uuid::now_v7();
    let sql = format!(
        "INSERT INTO notification_endpoints (id, workspace_id, url, event_types, format, secret, created_at, updated_at) \
           VALUES ('{ep}', '{ws}', 'http://example.com/h', '[]', 'standard', 'whsec_x', now(), now()); \
         INSERT INTO events (id, workspace_id, event_type, body, created_at) VALUES \
           ('{done}', '{ws}', 'test', '{{}}', now() - interval '40 days'), \
           ('{pending}', '{ws}', 'test', '{{}}', now() - interval '40 days'), \
           ('{fresh}', '{ws}', 'test', '{{}}', now()); \
         INSERT INTO notification_deliveries (id, workspace_id, endpoint_id, event_id, event_type, status, attempts, created_at) VALUES \
           (gen_random_uuid(), '{ws}', '{ep}', '{done}', 'test', 'succeeded', 1, now() - interval '40 days'), \
           (gen_random_uuid(), '{ws}', '{ep}', '{pending}', 'test', 'pending', 0, now() - interval '40 days'); \
         INSERT INTO delivery_attempts (id, delivery_id, attempt, finished_at, outcome) \
           SELECT gen_random_uuid(), id, 1, now(), 'delivered' FROM notification_deliveries WHERE event_id = '{done}';"
    );
    sea_orm::ConnectionTrait::execute_unprepared(&env.db, &sql)
        .await
        .expect("seed");
    let n = syncfleet_worker::notifications::prune(&env.db, Duration::from_secs(30 * 86_400), 100)
        .await
        .expect("prune");
    assert_eq!(n, 1);
    let left =
        crate::util::strings(&env.db, "SELECT id::text FROM events ORDER BY id", vec![]).await;
    let mut want = vec![pending.to_string(), fresh.to_string()];
    want.sort();
    assert_eq!(left, want);
    assert_eq!(
        crate::util::count(&env.db, "SELECT COUNT(*) FROM delivery_attempts", vec![]).await,
        0
    );
    assert_eq!(
        crate::util::count(
            &env.db,
            "SELECT COUNT(*) FROM notification_deliveries",
            vec![]
        )
        .await,
        1
    );
}
