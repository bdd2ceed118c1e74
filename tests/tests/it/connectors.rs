//! Real connectors through the whole system: secrets at rest and the canary search,
//! change detection, and the SSRF guard at save and at fetch.

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use tests::env::test_env;
use uuid::Uuid;

use crate::protocol::runs;
use crate::util::{count, eventually, strings};

const CANARY: &str = "canary-7f3a9c2e51d4";

async fn pos_server() -> (String, tokio::net::TcpListener) {
    let app = Router::new().route(
        "/orders",
        get(|h: HeaderMap| async move {
            if h.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {CANARY}")) {
                return (StatusCode::UNAUTHORIZED, "bad token").into_response();
            }
            axum::Json(json!({ "orders": (1..=25).map(|i| json!({ "id": format!("o-{i}"), "total": i * 3 })).collect::<Vec<_>>() }))
                .into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    // A second, silent listener for "no connection was made" checks.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (base, silent)
}

#[tokio::test]
async fn secrets_never_leak_and_unchanged_data_is_not_rewritten() {
    let Some(env) = test_env().await else { return };
    let allow = [("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true")];
    let app = env.spawn_app(&allow).await;
    let (stop, worker) = env.spawn_worker(&allow);
    let (base, _) = pos_server().await;
    let c = &app.client;
    let cfg = json!({ "url": format!("{base}/orders"), "recordsPointer": "/orders", "idPointer": "/id",
                      "auth": { "type": "bearer", "token": CANARY } });
    let id = c.create("pos", "http_json", cfg, None).await;
    eventually(Duration::from_secs(10), "first sync", || async {
        (runs(&env.db, id).await.first()?.status == "SUCCESS").then_some(())
    })
    .await;
    let (_, view) = c.get(&format!("/api/integrations/{id}")).await;
    assert_eq!(view["config"]["auth"], "********", "{view}");
    // Second run: same data → nothing rewritten.
    c.trigger(id).await;
    eventually(Duration::from_secs(10), "second sync", || async {
        (runs(&env.db, id)
            .await
            .iter()
            .filter(|r| r.status == "SUCCESS")
            .count()
            == 2)
            .then_some(())
    })
    .await;
    let h = c.history(id).await;
    assert_eq!(
        (
            &h[0]["recordsInserted"],
            &h[0]["recordsUpdated"],
            &h[0]["recordsUnchanged"]
        ),
        (&json!(0), &json!(0), &json!(25)),
        "{}",
        h[0]
    );
    assert_eq!(
        (&h[1]["recordsInserted"], &h[1]["recordsCount"]),
        (&json!(25), &json!(25))
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE integration_id = $1 AND version = 1",
            vec![id.into()]
        )
        .await,
        25
    );
    // Echoing the masked config back keeps the stored secret.
    let r = c
        .http
        .patch(format!("{}/api/integrations/{id}", c.base))
        .bearer_auth(&c.key)
        .json(&json!({ "version": view["version"], "config": view["config"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.trigger(id).await;
    eventually(
        Duration::from_secs(10),
        "third sync with the kept secret",
        || async {
            (runs(&env.db, id)
                .await
                .iter()
                .filter(|r| r.status == "SUCCESS")
                .count()
                == 3)
                .then_some(())
        },
    )
    .await;
    // The canary appears nowhere: database rows, API answers, Redis.
    for table in ["integrations", "sync_logs", "audit_events", "records"] {
        let dumps = strings(
            &env.db,
            &format!("SELECT CAST(t.* AS TEXT) FROM {table} t"),
            vec![],
        )
        .await;
        assert!(
            dumps.iter().all(|row| !row.contains(CANARY)),
            "canary in {table}"
        );
    }
    for path in [
        "/api/integrations".to_owned(),
        format!("/api/integrations/{id}"),
        format!("/api/integrations/{id}/sync-history"),
        format!("/api/integrations/{id}/audit"),
        "/api/sync/queue".to_owned(),
    ] {
        assert!(
            !c.get(&path).await.1.to_string().contains(CANARY),
            "canary in {path}"
        );
    }
    let mut r = env.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", env.prefix))
        .query_async(&mut r)
        .await
        .unwrap();
    for k in keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(&k)
            .query_async(&mut r)
            .await
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&dump.unwrap_or_default()).contains(CANARY),
            "canary in Redis key {k}"
        );
    }
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

#[tokio::test]
async fn ssrf_is_refused_at_save_and_at_fetch() {
    let Some(env) = test_env().await else { return };
    let (base, silent) = pos_server().await;
    let silent_url = format!("http://{}/orders", silent.local_addr().unwrap());
    // Default policy: private destinations are refused when saved.
    let app = env.spawn_app(&[]).await;
    for url in [
        silent_url.clone(),
        format!("{base}/orders"),
        "http://localhost:1/x".into(),
        "http://169.254.169.254/latest".into(),
        "http://[::ffff:10.0.0.1]/".into(),
    ] {
        let (s, v) = app
            .client
            .post(
                "/api/integrations",
                &json!({ "name": "x", "kind": "http_json",
            "config": { "url": url, "recordsPointer": "", "idPointer": "/id" } }),
            )
            .await;
        assert_eq!(s, 422, "{url}: {v}");
        assert_eq!(v["errors"][0]["field"], "config.url", "{v}");
    }
    app.stop().await;
    // Saved while allowed, fetched by a worker that is not: refused, no connection made.
    let permissive = env
        .spawn_app(&[("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true")])
        .await;
    let id = permissive
        .client
        .create(
            "sneaky",
            "http_json",
            json!({ "url": silent_url, "recordsPointer": "", "idPointer": "/id" }),
            None,
        )
        .await;
    let (stop, worker) = env.spawn_worker(&[]);
    eventually(Duration::from_secs(10), "refused run", || async {
        runs(&env.db, id)
            .await
            .first()
            .filter(|r| r.status == "FAILED")
            .map(|r| r.error_class.clone())
    })
    .await;
    let r = &runs(&env.db, id).await[0];
    assert_eq!(r.error_class.as_deref(), Some("config"));
    let accepted = tokio::time::timeout(Duration::from_millis(300), silent.accept()).await;
    assert!(
        accepted.is_err(),
        "the worker connected to a forbidden address"
    );
    let _: Uuid = id;
    let _: Value = Value::Null;
    stop.cancel();
    let _ = worker.await;
    permissive.stop().await;
}

#[tokio::test]
async fn key_rotation_re_encrypts_every_secret() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("new enabled integrations are due at once and no worker runs them");
    let app = env
        .spawn_app(&[("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true")])
        .await;
    let cfg = json!({ "url": "http://127.0.0.1:9/x", "recordsPointer": "", "idPointer": "/id",
                      "auth": { "type": "bearer", "token": CANARY } });
    let id = app.client.create("rot", "http_json", cfg, None).await;
    app.stop().await;
    let new_key = syncfleet_worker::secrets::SecretBox::generate();
    let n = syncfleet_api::app::run_rotate_key(env.config(&[]), &new_key)
        .await
        .expect("rotate");
    assert_eq!(n, 1);
    let stored: Value = crate::util::strings(
        &env.db,
        "SELECT CAST(config AS TEXT) FROM integrations WHERE id = $1",
        vec![id.into()],
    )
    .await
    .first()
    .map(|s| serde_json::from_str(s).unwrap())
    .unwrap();
    let kind = entity::ConnectorKind::HttpJson;
    let new = syncfleet_worker::secrets::SecretBox::parse(&new_key).unwrap();
    let old = syncfleet_worker::secrets::SecretBox::parse(tests::env::TEST_SECRET_KEY).unwrap();
    assert_eq!(
        new.open_config(kind, id, &stored).unwrap()["auth"]["token"],
        CANARY
    );
    assert!(
        old.open_config(kind, id, &stored).is_err(),
        "the old key still opens the secret"
    );
}

/// One provider's limit holds across three worker processes.
#[tokio::test]
async fn provider_rate_limit_holds_across_worker_processes() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("interval integrations keep being scheduled until the fleet stops");
    let limits = [("SYNCFLEET_RATE_LIMITS", "synthetic=4/1s:2")];
    let app = env.spawn_app(&limits).await;
    let vars = env.vars(&limits);
    let workers: Vec<tests::procs::Proc> = (0..3)
        .map(|_| tests::procs::syncfleet("worker", &vars))
        .collect();
    for i in 0..30 {
        app.client
            .create(&format!("rl{i}"), "synthetic", json!({}), Some(1))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = chrono::Utc::now();
    let window = 30;
    tokio::time::sleep(Duration::from_secs(window)).await;
    let t1 = t0 + chrono::TimeDelta::seconds(window as i64);
    let fetched = count(
        &env.db,
        "SELECT COUNT(*) FROM sync_logs WHERE status = 'SUCCESS' AND completed_at >= $1 AND completed_at < $2",
        vec![t0.into(), t1.into()],
    )
    .await;
    let limited = count(
        &env.db,
        "SELECT COUNT(*) FROM sync_logs WHERE status = 'RATE_LIMITED'",
        vec![],
    )
    .await;
    let bound = 4 * window as i64 + 2;
    eprintln!(
        "rate limit: {fetched} fetches in {window} s across 3 workers (limit 4/s + burst 2 = {bound}); {limited} runs deferred"
    );
    assert!(
        fetched <= bound + 1,
        "{fetched} fetches exceed the fleet-wide limit {bound}"
    );
    assert!(
        fetched >= 2 * window as i64,
        "the limiter starved the fleet: {fetched}"
    );
    assert!(
        limited > 0,
        "30 integrations at 1/s should have been limited"
    );
    drop(workers);
    app.stop().await;
}

/// A provider's concurrency cap holds across three worker processes: a slow source
/// never sees more requests in flight than the cap, and every integration still syncs.
#[tokio::test]
async fn provider_concurrency_cap_holds_across_worker_processes() {
    let Some(env) = test_env().await else { return };
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let (inflight, peak, served) = (
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
    );
    let (i, p, n) = (inflight.clone(), peak.clone(), served.clone());
    let server = Router::new().route(
        "/export",
        get(move || {
            let (i, p, n) = (i.clone(), p.clone(), n.clone());
            async move {
                let now = i.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(400)).await;
                i.fetch_sub(1, Ordering::SeqCst);
                n.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({ "items": [{ "id": 1 }] }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, server).await });
    let cap = 2;
    let vars = [
        ("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true"),
        ("SYNCFLEET_PROVIDER_CONCURRENCY", "http_json=2"),
    ];
    let app = env.spawn_app(&vars).await;
    let procs = env.vars(&vars);
    let workers: Vec<tests::procs::Proc> = (0..3)
        .map(|_| tests::procs::syncfleet("worker", &procs))
        .collect();
    // One credential: every integration is the same provider.
    let cfg = json!({ "url": format!("{base}/export"), "recordsPointer": "/items", "idPointer": "/id",
                      "auth": { "type": "bearer", "token": "shared-token" } });
    let mut ids = Vec::new();
    for k in 0..12 {
        ids.push(
            app.client
                .create(&format!("cc{k}"), "http_json", cfg.clone(), None)
                .await,
        );
    }
    eventually(
        Duration::from_secs(60),
        "every integration synced",
        || async {
            for id in &ids {
                if !runs(&env.db, *id)
                    .await
                    .iter()
                    .any(|r| r.status == "SUCCESS")
                {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let deferred = count(
        &env.db,
        "SELECT COUNT(*) FROM sync_logs WHERE status = 'RATE_LIMITED'",
        vec![],
    )
    .await;
    let failed = count(
        &env.db,
        "SELECT COUNT(*) FROM sync_logs WHERE status = 'FAILED'",
        vec![],
    )
    .await;
    let peak = peak.load(Ordering::SeqCst);
    eprintln!(
        "concurrency cap: peak {peak} requests in flight across 3 workers (cap {cap}); {} requests served, {deferred} runs deferred",
        served.load(Ordering::SeqCst)
    );
    assert!(
        peak <= cap,
        "{peak} requests in flight exceed the cap {cap}"
    );
    assert_eq!(peak, cap, "the cap should still allow {cap} at once");
    assert_eq!(failed, 0, "a busy provider is not a failure");
    drop(workers);
    app.stop().await;
}

/// Redis slots are leases: a holder that vanished without releasing (a killed worker)
/// frees its slot when its lease runs out; a held slot is renewed; dropping it frees it.
#[tokio::test]
async fn provider_slots_expire_renew_and_release() {
    let Some(env) = test_env().await else { return };
    let queue = syncfleet_worker::Queue::redis(&env.redis_url, &env.prefix, Duration::from_secs(5))
        .await
        .unwrap();
    let caps = syncfleet_worker::ratelimit::parse_caps("http_json=1").unwrap();
    let limiter = queue.limiter(Default::default(), caps);
    let kind = entity::ConnectorKind::HttpJson;
    let (lease, none, ample) = (
        Duration::from_millis(600),
        Duration::from_millis(50),
        Duration::from_secs(3),
    );
    // A holder from a dead process, 400 ms from expiry by the Redis clock.
    let mut r = env.redis().await;
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut r).await.unwrap();
    let now_ms = secs * 1000 + micros / 1000;
    let key = format!("{{{}:sync}}:rl:slots:p", env.prefix);
    let _: () = redis::cmd("ZADD")
        .arg(&key)
        .arg(now_ms + 400)
        .arg("dead-worker")
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(
        limiter
            .acquire_slot(kind, "p", lease, none)
            .await
            .unwrap()
            .is_none()
    );
    let started = std::time::Instant::now();
    let slot = limiter.acquire_slot(kind, "p", lease, ample).await.unwrap();
    assert!(slot.is_some(), "the dead holder's slot never freed");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Held past several leases: the renewal keeps it.
    tokio::time::sleep(lease * 3).await;
    assert!(
        limiter
            .acquire_slot(kind, "p", lease, none)
            .await
            .unwrap()
            .is_none()
    );
    drop(slot);
    let slot = limiter
        .acquire_slot(kind, "p", lease, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(slot.is_some(), "a dropped slot was not given back");
}

/// A 429 from a source pauses that provider for every worker until its reset.
#[tokio::test]
async fn a_429_pauses_the_provider_for_everyone() {
    let Some(env) = test_env().await else { return };
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let hits = Arc::new(AtomicU32::new(0));
    let h = hits.clone();
    let app_server = Router::new().route(
        "/busy",
        get(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "30")],
                    "slow down",
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app_server).await });
    let allow = [("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true")];
    let app = env.spawn_app(&allow).await;
    let (stop, worker) = env.spawn_worker(&allow);
    let cfg = json!({ "url": format!("{base}/busy"), "recordsPointer": "", "idPointer": "/id",
                      "auth": { "type": "bearer", "token": "shared-token" } });
    let first = app.client.create("a", "http_json", cfg.clone(), None).await;
    eventually(
        Duration::from_secs(10),
        "first run rate limited",
        || async { (runs(&env.db, first).await.first()?.status == "RATE_LIMITED").then_some(()) },
    )
    .await;
    let second = app.client.create("b", "http_json", cfg, None).await;
    eventually(Duration::from_secs(10), "second run deferred", || async {
        (runs(&env.db, second).await.first()?.status == "RATE_LIMITED").then_some(())
    })
    .await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the paused provider was called again"
    );
    let (enabled, _, retries) = crate::protocol::state(&env.db, second).await;
    assert!(enabled && retries == 0, "a rate limit is not a failure");
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// Full syncs soft-delete what disappeared from the source; incremental syncs never
/// delete, and the watermark only advances when a run succeeds.
#[tokio::test]
async fn soft_delete_and_watermark_only_on_success() {
    let Some(env) = test_env().await else { return };
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    // Phase 0: 5 items; phase 1: items 1–3 only; phase 2: a failure.
    let phase = Arc::new(AtomicU32::new(0));
    let ph = phase.clone();
    let server = Router::new().route(
        "/stock",
        get(move || {
            let ph = ph.clone();
            async move {
                let n = match ph.load(Ordering::SeqCst) {
                    0 => 5,
                    1 => 3,
                    _ => return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
                };
                let items: Vec<Value> = (1..=n)
                    .map(|i| json!({ "id": i, "updatedAt": format!("2026-11-0{i}T00:00:00Z") }))
                    .collect();
                axum::Json(json!({ "items": items })).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, server).await });
    let allow = [("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true")];
    let app = env.spawn_app(&allow).await;
    let (stop, worker) = env.spawn_worker(&allow);
    let c = &app.client;
    let full = c
        .create("full", "http_json", json!({ "url": format!("{base}/stock"), "recordsPointer": "/items", "idPointer": "/id" }), None)
        .await;
    settled(&env.db, full, 1).await;
    phase.store(1, Ordering::SeqCst);
    c.trigger(full).await;
    settled(&env.db, full, 2).await;
    let h = c.history(full).await;
    assert_eq!(h[0]["recordsDeleted"], 2, "{}", h[0]);
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE integration_id = $1 AND deleted_at IS NOT NULL",
            vec![full.into()]
        )
        .await,
        2
    );
    let (_, page) = c.get(&format!("/api/integrations/{full}/records")).await;
    assert_eq!(page["records"].as_array().unwrap().len(), 3);
    let (_, page) = c
        .get(&format!(
            "/api/integrations/{full}/records?includeDeleted=true"
        ))
        .await;
    assert_eq!(page["records"].as_array().unwrap().len(), 5);
    // Incremental: first run sets the watermark; a failed run leaves it; nothing deleted.
    phase.store(0, Ordering::SeqCst);
    let inc = c
        .create(
            "inc",
            "http_json",
            json!({ "url": format!("{base}/stock"), "recordsPointer": "/items", "idPointer": "/id",
                    "sinceParam": "since", "watermarkPointer": "/updatedAt" }),
            None,
        )
        .await;
    settled(&env.db, inc, 1).await;
    let mark = || async {
        strings(
            &env.db,
            "SELECT COALESCE(watermark, '') FROM integrations WHERE id = $1",
            vec![inc.into()],
        )
        .await[0]
            .clone()
    };
    assert_eq!(mark().await, "2026-11-05T00:00:00Z");
    phase.store(2, Ordering::SeqCst);
    c.trigger(inc).await;
    settled(&env.db, inc, 2).await;
    assert_eq!(runs(&env.db, inc).await[1].status, "FAILED");
    assert_eq!(
        mark().await,
        "2026-11-05T00:00:00Z",
        "a failed run moved the watermark"
    );
    phase.store(1, Ordering::SeqCst);
    let _ = c
        .post(
            &format!("/api/integrations/{inc}/sync"),
            &json!({ "force": true }),
        )
        .await;
    settled(&env.db, inc, 3).await;
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE integration_id = $1 AND deleted_at IS NOT NULL",
            vec![inc.into()]
        )
        .await,
        0,
        "an incremental run deleted"
    );
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// Waits until `id` has at least `n` runs and none of them is live.
async fn settled(db: &sea_orm::DatabaseConnection, id: Uuid, n: usize) {
    eventually(Duration::from_secs(10), "runs finished", || async {
        let rs = runs(db, id).await;
        (rs.len() >= n
            && rs
                .iter()
                .all(|r| r.status != "PENDING" && r.status != "RUNNING"))
        .then_some(())
    })
    .await;
}

/// The `sql` connector through the fleet: a table in the test's own PostgreSQL database,
/// synced incrementally in pages of `maxRows`, its URL sealed at rest and refused at save
/// by a server that does not allow private networks.
#[tokio::test]
async fn sql_source_syncs_through_the_fleet() {
    use sea_orm::ConnectionTrait;
    let Some(env) = test_env().await else { return };
    env.db
        .execute_unprepared(
            "CREATE TABLE shop_items (id int PRIMARY KEY, name text, price numeric(8,2), \
             updated_at timestamptz NOT NULL); \
             INSERT INTO shop_items VALUES (1, 'tea', 1.50, '2026-01-01T00:00:00Z'), \
             (2, 'cake', 2.00, '2026-01-02T00:00:00Z'), (3, 'pie', 3.25, '2026-01-03T00:00:00Z')",
        )
        .await
        .unwrap();
    let cfg = json!({ "url": env.db_url, "query": "SELECT id, name, price, updated_at FROM shop_items",
                      "idColumn": "id", "watermarkColumn": "updated_at", "maxRows": 2 });

    let strict = env.spawn_app(&[]).await;
    let (s, v) = strict
        .client
        .post(
            "/api/integrations",
            &json!({ "name": "shop", "kind": "sql", "config": cfg }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(!v.to_string().contains(&env.db_url), "{v}");
    strict.stop().await;

    let allow = [("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true")];
    let app = env.spawn_app(&allow).await;
    let (stop, worker) = env.spawn_worker(&allow);
    let c = &app.client;
    let id = c.create("shop", "sql", cfg, None).await;
    settled(&env.db, id, 1).await;
    let (_, view) = c.get(&format!("/api/integrations/{id}")).await;
    assert_eq!(view["config"]["url"], "********", "{view}");
    let stored = strings(
        &env.db,
        "SELECT config::text FROM integrations WHERE id = $1",
        vec![id.into()],
    )
    .await;
    assert!(!stored[0].contains("127.0.0.1"), "url stored in clear");

    let (_, page) = c.get(&format!("/api/integrations/{id}/records")).await;
    let mut got: Vec<Value> = page["records"].as_array().unwrap().clone();
    got.sort_by_key(|r| r["externalId"].as_str().unwrap_or_default().to_owned());
    assert_eq!(got.len(), 2, "{page}");
    assert_eq!(got[0]["externalId"], "1");
    assert_eq!(
        got[0]["data"],
        json!({ "id": 1, "name": "tea", "price": "1.50", "updated_at": "2026-01-01T00:00:00Z" })
    );

    // The next run continues after the watermark.
    c.trigger(id).await;
    settled(&env.db, id, 2).await;
    let (_, page) = c.get(&format!("/api/integrations/{id}/records")).await;
    assert_eq!(page["records"].as_array().unwrap().len(), 3, "{page}");
    let mark = strings(
        &env.db,
        "SELECT COALESCE(watermark, '') FROM integrations WHERE id = $1",
        vec![id.into()],
    )
    .await;
    assert_eq!(mark[0], "2026-01-03T00:00:00Z");
    assert!(
        runs(&env.db, id)
            .await
            .iter()
            .all(|r| r.status == "SUCCESS")
    );
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}
