//! The HTTP API as clients see it: every endpoint's happy path, every rejection (status,
//! `code`, nothing written), roles, optimistic locking, cursor pagination under
//! inserts, rate limiting, and the OpenAPI document against real responses.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::ApiClient;
use tests::env::test_env;
use uuid::Uuid;

use crate::util::{count, eventually};

async fn raw(
    client: &ApiClient,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut req = client
        .http
        .request(method, format!("{}{path}", client.base))
        .bearer_auth(&client.key);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let r = req.send().await.expect("request");
    let (s, h) = (r.status(), r.headers().clone());
    (s, r.json().await.unwrap_or(Value::Null), h)
}

fn assert_problem(v: &Value, status: u16, code: &str) {
    assert_eq!(v["status"], status, "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(
        v["title"].is_string() && v["detail"].is_string() && v["type"].is_string(),
        "{v}"
    );
}

#[tokio::test]
async fn create_rejects_every_invalid_input_and_writes_nothing() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("new enabled integrations are due at once and no worker runs them");
    let app = env
        .spawn_app(&[("SYNCFLEET_MIN_INTERVAL_SECS", "60")])
        .await;
    let c = &app.client;
    let long_name = "x".repeat(201);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "name": "a", "kind": "synthetic", "syncInterval": 30 }),
            "syncInterval",
        ),
        (
            json!({ "name": "a", "kind": "synthetic", "syncInterval": 0 }),
            "syncInterval",
        ),
        (
            json!({ "name": "a", "kind": "synthetic", "syncInterval": -60 }),
            "syncInterval",
        ),
        (
            json!({ "name": "a", "kind": "synthetic", "syncInterval": 90.5 }),
            "syncInterval",
        ),
        (
            json!({ "name": "a", "kind": "synthetic", "syncInterval": "60" }),
            "syncInterval",
        ),
        (
            json!({ "name": "a", "kind": "synthetic", "syncInterval": 2_592_001 }),
            "syncInterval",
        ),
        (json!({ "name": "a", "kind": "ftp" }), "kind"),
        (
            json!({ "name": "a", "kind": "synthetic", "config": { "records": "many" } }),
            "config",
        ),
        (
            json!({ "name": "a", "kind": "synthetic", "config": { "surprise": 1 } }),
            "config",
        ),
        (
            json!({ "name": "a", "kind": "synthetic", "colour": "red" }),
            "colour",
        ),
        (json!({ "name": long_name, "kind": "synthetic" }), "name"),
        (json!({ "name": "", "kind": "synthetic" }), "name"),
        (
            json!({ "name": "a", "kind": "synthetic", "maxRetries": 0 }),
            "maxRetries",
        ),
    ];
    for (body, field) in cases {
        let (s, v) = c.post("/api/integrations", &body).await;
        assert_eq!(s, 422, "{body} → {v}");
        assert_problem(&v, 422, "validation_failed");
        let errors = v["errors"].as_array().cloned().unwrap_or_default();
        assert!(
            errors
                .iter()
                .any(|e| e["field"].as_str().is_some_and(|f| f.contains(field))),
            "{field} not named: {v}"
        );
    }
    // Every offending field is listed at once.
    let (_, v) = c
        .post(
            "/api/integrations",
            &json!({ "name": "", "kind": "synthetic", "syncInterval": 0, "maxRetries": 500 }),
        )
        .await;
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(3), "{v}");
    let (s, v, _) = raw(
        c,
        reqwest::Method::POST,
        "/api/integrations",
        Some("{\"name\": "),
    )
    .await;
    assert_eq!(s, 400);
    assert_problem(&v, 400, "bad_request");
    let huge = format!(
        "{{\"name\":\"a\",\"kind\":\"synthetic\",\"config\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(1_100_000)
    );
    let (s, v, _) = raw(c, reqwest::Method::POST, "/api/integrations", Some(&huge)).await;
    assert_eq!(s, 413);
    assert_problem(&v, 413, "payload_too_large");
    let (s, v) = c.get("/api/integrations/not-a-uuid").await;
    assert_eq!(s, 400);
    assert_problem(&v, 400, "bad_request");
    let (s, v) = c.get("/api/integrations?pageSize=501").await;
    assert_eq!(s, 422);
    assert_problem(&v, 422, "validation_failed");
    let (s, v) = c
        .get(&format!("/api/integrations/{}", Uuid::now_v7()))
        .await;
    assert_eq!(s, 404);
    assert_problem(&v, 404, "not_found");
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM integrations", vec![]).await,
        0,
        "a rejected request wrote"
    );
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM audit_events", vec![]).await,
        0
    );
    // And the happy path, secrets masked.
    let (s, v) = c
        .post("/api/integrations", &json!({ "name": "ok", "kind": "synthetic", "config": { "records": 3 }, "syncInterval": 60, "maxRetries": 5 }))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (
            v["syncInterval"].as_i64(),
            v["maxRetries"].as_i64(),
            v["version"].as_i64()
        ),
        (Some(60), Some(5), Some(1))
    );
    assert_eq!(v["health"], "healthy");
    assert!(
        v["nextSyncAt"].is_string(),
        "a new integration is due at once"
    );
    app.stop().await;
}

#[tokio::test]
async fn roles_keys_and_revocation() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("new enabled integrations are due at once and no worker runs them");
    let app = env.spawn_app(&[]).await;
    let admin = &app.client;
    let (s, k) = admin
        .post(
            "/api/keys",
            &json!({ "name": "dashboard", "role": "viewer" }),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    let viewer = ApiClient::new(&app.url, k["key"].as_str().unwrap());
    let id = admin.create("x", "synthetic", json!({}), None).await;
    assert_eq!(viewer.get(&format!("/api/integrations/{id}")).await.0, 200);
    for (path, body) in [
        (
            "/api/integrations".to_owned(),
            json!({ "name": "v", "kind": "synthetic" }),
        ),
        (format!("/api/integrations/{id}/sync"), json!({})),
        (format!("/api/integrations/{id}/pause"), json!({})),
        (
            "/api/keys".to_owned(),
            json!({ "name": "n", "role": "admin" }),
        ),
    ] {
        let (s, v) = viewer.post(&path, &body).await;
        assert_eq!(s, 403, "{path}: {v}");
        assert_problem(&v, 403, "forbidden");
    }
    let anonymous = reqwest::get(format!("{}/api/integrations", app.url))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        ApiClient::new(&app.url, "sf_nope")
            .get("/api/integrations")
            .await
            .0,
        401
    );
    let (s, list) = admin.get("/api/keys").await;
    assert_eq!(s, 200);
    assert!(
        !list.to_string().contains(k["key"].as_str().unwrap()),
        "a listed key leaks its secret"
    );
    let (s, bad) = admin
        .post("/api/keys", &json!({ "name": "n", "role": "root" }))
        .await;
    assert_eq!(s, 422, "{bad}");
    let kid = k["id"].as_str().unwrap();
    let r = admin
        .http
        .delete(format!("{}/api/keys/{kid}", app.url))
        .bearer_auth(&admin.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        viewer.get("/api/integrations").await.0,
        401,
        "a revoked key still works"
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM audit_events WHERE action IN ('key.create', 'key.revoke')",
            vec![]
        )
        .await,
        2
    );
    app.stop().await;
}

#[tokio::test]
async fn update_settings_pause_resume_and_delete() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("new enabled integrations are due at once and no worker runs them");
    let app = env.spawn_app(&[]).await;
    let (wstop, wjoin) = env.spawn_worker(&[]);
    let c = &app.client;
    let id = c
        .create("orig", "synthetic", json!({ "records": 2 }), Some(60))
        .await;
    let patch = |body: Value, path: String| {
        let c = c.clone();
        async move {
            let r = c
                .http
                .patch(format!("{}{path}", c.base))
                .bearer_auth(&c.key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, v) = patch(
        json!({ "version": 1, "name": "renamed" }),
        format!("/api/integrations/{id}"),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["version"].as_i64(), v["name"].as_str()),
        (200, Some(2), Some("renamed")),
        "{v}"
    );
    let (s, v) = patch(
        json!({ "version": 1, "name": "stale" }),
        format!("/api/integrations/{id}"),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert_problem(&v, 409, "version_conflict");
    let (s, v) = patch(
        json!({ "version": 2, "config": { "nope": true } }),
        format!("/api/integrations/{id}"),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    // Interval change: rescheduled from the last sync.
    eventually(Duration::from_secs(10), "first sync", || async {
        let (_, v) = c.get(&format!("/api/integrations/{id}")).await;
        v["lastSyncAt"].is_string().then_some(())
    })
    .await;
    let (s, v) = patch(
        json!({ "syncInterval": 3600 }),
        format!("/api/integrations/{id}/sync-settings"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let last = chrono::DateTime::parse_from_rfc3339(v["lastSyncAt"].as_str().unwrap()).unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(v["nextSyncAt"].as_str().unwrap()).unwrap();
    assert_eq!((next - last).num_seconds(), 3600, "{v}");
    let (s, v) = patch(
        json!({ "syncInterval": 59 }),
        format!("/api/integrations/{id}/sync-settings"),
    )
    .await;
    assert_eq!(
        s, 200,
        "59 s is allowed with the tests' minimum of 1 s: {v}"
    );
    // Pause: no schedule; a plain trigger is refused, a forced one runs.
    let (s, v) = c
        .post(
            &format!("/api/integrations/{id}/pause"),
            &json!({ "reason": "maintenance" }),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["health"].as_str(), v["syncEnabled"].as_bool()),
        (200, Some("paused"), Some(false)),
        "{v}"
    );
    assert!(v["nextSyncAt"].is_null());
    let (s, v) = c
        .post(&format!("/api/integrations/{id}/sync"), &json!({}))
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = c
        .post(
            &format!("/api/integrations/{id}/sync"),
            &json!({ "force": true }),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["run"]["trigger"], "manual");
    // Resume: failures reset, due now.
    let (s, v) = c
        .post(&format!("/api/integrations/{id}/resume"), &json!({}))
        .await;
    assert_eq!(
        (s.as_u16(), v["health"].as_str(), v["retryCount"].as_i64()),
        (200, Some("healthy"), Some(0)),
        "{v}"
    );
    // A system-disabled integration re-enabled through sync-settings.
    let bad = c
        .create(
            "bad",
            "synthetic",
            json!({ "failAlways": true, "errorClass": "auth" }),
            Some(60),
        )
        .await;
    let (s, _) = c
        .post(&format!("/api/integrations/{bad}/sync"), &json!({}))
        .await;
    assert_eq!(s, 202);
    eventually(
        Duration::from_secs(10),
        "disabled by auth error",
        || async {
            let (_, v) = c.get(&format!("/api/integrations/{bad}")).await;
            (v["health"] == "disabled").then_some(())
        },
    )
    .await;
    let (s, v) = patch(
        json!({ "syncEnabled": true }),
        format!("/api/integrations/{bad}/sync-settings"),
    )
    .await;
    assert_eq!(
        (
            s.as_u16(),
            v["retryCount"].as_i64(),
            v["syncEnabled"].as_bool()
        ),
        (200, Some(0), Some(true)),
        "{v}"
    );
    wstop.cancel();
    let _ = wjoin.await;
    let actions: Vec<String> = crate::util::strings(
        &env.db,
        "SELECT action FROM audit_events WHERE integration_id = $1 ORDER BY id",
        vec![id.into()],
    )
    .await;
    for a in [
        "integration.create",
        "integration.update",
        "integration.settings",
        "integration.pause",
        "integration.trigger",
        "integration.resume",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
    let pause_reason = count(&env.db, "SELECT COUNT(*) FROM audit_events WHERE action = 'integration.pause' AND reason = 'maintenance'", vec![]).await;
    assert_eq!(pause_reason, 1);
    // Delete: gone with its runs; the audit trail stays.
    let r = c
        .http
        .delete(format!("{}/api/integrations/{id}", c.base))
        .bearer_auth(&c.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(c.get(&format!("/api/integrations/{id}")).await.0, 404);
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM sync_logs WHERE integration_id = $1",
            vec![id.into()]
        )
        .await,
        0
    );
    assert!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM audit_events WHERE integration_id = $1",
            vec![id.into()]
        )
        .await
            > 0
    );
    app.stop().await;
}

async fn seed_runs(env: &tests::TestEnv, id: Uuid, n: usize, offset_secs: usize) {
    for i in 0..n {
        let status = if i % 3 == 0 { "FAILED" } else { "SUCCESS" };
        syncfleet_worker::db::exec(
            &env.db,
            format!(
                "INSERT INTO run_history (id, integration_id, status, \"trigger\", scheduled_for, started_at, completed_at, created_at) \
                 VALUES ($1, $2, '{status}', 'schedule', now() - interval '{s} seconds', now(), now(), now())",
                s = 100_000 - offset_secs - i
            ),
            [Uuid::now_v7().into(), id.into()],
        )
        .await
        .expect("seed run");
    }
}

#[tokio::test]
async fn history_cursor_pages_have_no_gaps_or_duplicates_while_runs_arrive() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("runs keep arriving on a 1 s interval while the history is read");
    let app = env.spawn_app(&[]).await;
    let c = &app.client;
    let id = c.create("h", "synthetic", json!({}), None).await;
    seed_runs(&env, id, 120, 0).await;
    let before: Vec<String> = crate::util::strings(
        &env.db,
        "SELECT CAST(id AS TEXT) FROM sync_logs WHERE integration_id = $1",
        vec![id.into()],
    )
    .await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => format!("/api/integrations/{id}/sync-history?pageSize=25"),
            Some(cur) => format!("/api/integrations/{id}/sync-history?pageSize=25&cursor={cur}"),
        };
        let (s, v) = c.get(&path).await;
        assert_eq!(s, 200, "{v}");
        let logs = v["logs"].as_array().cloned().unwrap_or_default();
        seen.extend(logs.iter().map(|l| l["id"].as_str().unwrap().to_owned()));
        pages += 1;
        // New runs arrive between pages.
        seed_runs(&env, id, 3, 1000 + pages * 3).await;
        match v["nextCursor"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => break,
        }
    }
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "duplicates across pages");
    for id in &before {
        assert!(unique.contains(id), "gap: {id} missing");
    }
    // Newest first, filters, totals.
    let (_, v) = c
        .get(&format!(
            "/api/integrations/{id}/sync-history?pageSize=500&status=failed"
        ))
        .await;
    let logs = v["logs"].as_array().unwrap();
    assert!(logs.iter().all(|l| l["status"] == "FAILED"));
    assert_eq!(v["total"].as_u64(), Some(logs.len() as u64));
    assert_eq!(v["totalIsExact"], true);
    let ids: Vec<&str> = logs.iter().map(|l| l["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "not newest first");
    let (s, v) = c
        .get(&format!(
            "/api/integrations/{id}/sync-history?status=exploded"
        ))
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = c
        .get(&format!(
            "/api/integrations/{id}/sync-history?trigger=manual&from=2020-01-01T00:00:00Z"
        ))
        .await;
    assert_eq!(s, 200);
    let (s, v) = c
        .get(&format!(
            "/api/integrations/{id}/sync-history?from=yesterday"
        ))
        .await;
    // A query parameter of the wrong type is a 422 naming it, like a body field.
    assert_eq!(s, 422, "{v}");
    assert_problem(&v, 422, "validation_failed");
    assert_eq!(v["errors"][0]["field"], "from", "{v}");
    app.stop().await;
}

#[tokio::test]
async fn records_audit_and_fleet_endpoints() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("new enabled integrations are due at once and no worker runs them");
    let app = env.spawn_app(&[]).await;
    let (stop, worker) = env.spawn_worker(&[]);
    let c = &app.client;
    let id = c
        .create("rec", "synthetic", json!({ "records": 30 }), None)
        .await;
    let failing = c
        .create(
            "fail",
            "synthetic",
            json!({ "failAlways": true, "errorClass": "config" }),
            None,
        )
        .await;
    eventually(Duration::from_secs(10), "both ran", || async {
        let ok = count(
            &env.db,
            "SELECT COUNT(*) FROM sync_logs WHERE status IN ('SUCCESS', 'FAILED')",
            vec![],
        )
        .await;
        (ok == 2).then_some(())
    })
    .await;
    // Records: cursor pages over all 30.
    let mut all = Vec::new();
    let mut path = format!("/api/integrations/{id}/records?pageSize=12");
    loop {
        let (s, v) = c.get(&path).await;
        assert_eq!(s, 200, "{v}");
        all.extend(
            v["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["externalId"].as_str().unwrap().to_owned()),
        );
        match v["nextCursor"].as_str() {
            Some(cur) => path = format!("/api/integrations/{id}/records?pageSize=12&cursor={cur}"),
            None => break,
        }
    }
    assert_eq!(all.len(), 30);
    // The unfiltered total is maintained where runs are created.
    let (_, h) = c.get(&format!("/api/integrations/{id}/sync-history")).await;
    assert_eq!(
        (h["total"].as_u64(), h["totalIsExact"].as_bool()),
        (Some(1), Some(true)),
        "{h}"
    );
    let (s, v) = c.get(&format!("/api/integrations/{id}/audit")).await;
    assert_eq!(s, 200);
    assert_eq!(v["events"][0]["action"], "integration.create");
    // Fleet.
    let (s, st) = c.get("/api/sync/status").await;
    assert_eq!(s, 200, "{st}");
    assert!(st["workersAlive"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(st["disabledIntegrations"], 1);
    assert_eq!(st["failedLastHour"], 1);
    assert!(st["lastSuccessfulSync"].is_string());
    let (s, stats) = c.get("/api/sync/stats?window=1h").await;
    assert_eq!(s, 200, "{stats}");
    assert_eq!(stats["overall"]["runs"], 2);
    assert_eq!(stats["overall"]["successRate"], 0.5);
    assert_eq!(stats["byKind"]["synthetic"]["recordsPerRun"], 15.0);
    assert_eq!(c.get("/api/sync/stats?window=forever").await.0, 422);
    let (s, q) = c.get("/api/sync/queue").await;
    assert_eq!(s, 200, "{q}");
    assert!(q["pending"].is_array() && q["running"].is_array());
    // Retry: a failed run re-runs now; a successful one cannot be retried.
    let failed_run = c.history(failing).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ok_run = c.history(id).await[0]["id"].as_str().unwrap().to_owned();
    let (s, v) = c
        .post(&format!("/api/sync/retry/{failed_run}"), &json!({}))
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["run"]["trigger"], "manual");
    let (s, v) = c
        .post(&format!("/api/sync/retry/{ok_run}"), &json!({}))
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(
        c.post(&format!("/api/sync/retry/{}", Uuid::now_v7()), &json!({}))
            .await
            .0,
        404
    );
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

#[tokio::test]
async fn bursts_beyond_the_key_limit_get_429_with_retry_after() {
    let Some(env) = test_env().await else { return };
    let app = env
        .spawn_app(&[
            ("SYNCFLEET_API_RATE_PER_SEC", "1"),
            ("SYNCFLEET_API_RATE_BURST", "3"),
        ])
        .await;
    let mut limited = None;
    for _ in 0..10 {
        let (s, v, h) = raw(&app.client, reqwest::Method::GET, "/api/integrations", None).await;
        if s == 429 {
            limited = Some((v, h));
            break;
        }
    }
    let (v, h) = limited.expect("never rate limited");
    assert_problem(&v, 429, "rate_limited");
    assert!(
        h.get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some()
    );
    app.stop().await;
}

/// Marks every object schema closed, so a field the handler adds without the spec fails.
fn close_objects(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (_, child) in map.iter_mut() {
                close_objects(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

fn validate(spec: &Value, schema_name: &str, instance: &Value) {
    let mut components = spec["components"].clone();
    close_objects(&mut components);
    let schema =
        json!({ "$ref": format!("#/components/schemas/{schema_name}"), "components": components });
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{schema_name} drifted from the spec: {errors:?}\n{instance}"
    );
}

#[tokio::test]
async fn openapi_document_matches_real_responses() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let (stop, worker) = env.spawn_worker(&[]);
    let c = &app.client;
    let spec: Value = reqwest::get(format!("{}/api/openapi.json", app.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/integrations",
        "/api/integrations/{id}/sync-history",
        "/api/sync/status",
        "/api/keys",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the spec"
        );
    }
    let docs = reqwest::get(format!("{}/api/docs", app.url)).await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("/api/openapi.json"));
    let (_, created) = c
        .post(
            "/api/integrations",
            &json!({ "name": "spec", "kind": "synthetic", "syncInterval": 60 }),
        )
        .await;
    validate(&spec, "IntegrationView", &created);
    let id = created["id"].as_str().unwrap();
    eventually(Duration::from_secs(10), "a run", || async {
        (!c.history(id.parse().unwrap()).await.is_empty()).then_some(())
    })
    .await;
    validate(
        &spec,
        "IntegrationList",
        &c.get("/api/integrations").await.1,
    );
    validate(
        &spec,
        "SyncHistory",
        &c.get(&format!("/api/integrations/{id}/sync-history"))
            .await
            .1,
    );
    validate(
        &spec,
        "TriggerResult",
        &c.post(&format!("/api/integrations/{id}/sync"), &json!({}))
            .await
            .1,
    );
    validate(
        &spec,
        "RecordPage",
        &c.get(&format!("/api/integrations/{id}/records")).await.1,
    );
    validate(
        &spec,
        "AuditPage",
        &c.get(&format!("/api/integrations/{id}/audit")).await.1,
    );
    validate(&spec, "FleetStatus", &c.get("/api/sync/status").await.1);
    validate(&spec, "FleetStats", &c.get("/api/sync/stats").await.1);
    validate(
        &spec,
        "CreatedKey",
        &c.post("/api/keys", &json!({ "name": "k", "role": "viewer" }))
            .await
            .1,
    );
    validate(&spec, "Problem", &c.get("/api/integrations/nope").await.1);
    // The manual run above finishes before the worker stops (a hint popped but not yet
    // claimed when it stops would wait for the re-enqueuer).
    eventually(Duration::from_secs(10), "no live run", || async {
        (count(&env.db, "SELECT COUNT(*) FROM live_runs", vec![]).await == 0).then_some(())
    })
    .await;
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

#[tokio::test]
async fn list_filters_search_and_pages() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("new enabled integrations are due at once and no worker runs them");
    let app = env.spawn_app(&[]).await;
    let c = &app.client;
    for i in 0..7 {
        c.create(&format!("Shop {i}"), "synthetic", json!({}), Some(60))
            .await;
    }
    let paused = c.create("Warehouse", "synthetic", json!({}), None).await;
    let (s, _) = c
        .post(&format!("/api/integrations/{paused}/pause"), &json!({}))
        .await;
    assert_eq!(s, 200);
    let (_, v) = c.get("/api/integrations?q=shop&pageSize=5").await;
    assert_eq!(
        (
            v["total"].as_u64(),
            v["integrations"].as_array().map(Vec::len)
        ),
        (Some(7), Some(5)),
        "{v}"
    );
    let (_, v2) = c.get("/api/integrations?q=shop&pageSize=5&page=2").await;
    assert_eq!(v2["integrations"].as_array().map(Vec::len), Some(2));
    let (_, v) = c.get("/api/integrations?health=paused").await;
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["integrations"][0]["name"], "Warehouse");
    let (_, v) = c
        .get("/api/integrations?syncEnabled=true&kind=synthetic")
        .await;
    assert_eq!(v["total"], 7, "{v}");
    assert_eq!(c.get("/api/integrations?kind=ftp").await.0, 422);
    assert_eq!(c.get("/api/integrations?health=sad").await.0, 422);
    assert_eq!(
        c.get("/api/integrations?q=%25").await.1["total"],
        0,
        "LIKE wildcards are matched literally"
    );
    app.stop().await;
}
