//! Workspaces through the API, and the scoping that keeps them apart: a workspace-B key
//! cannot see or touch anything of workspace A on any route the API serves.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use syncfleet_worker::db as q;
use tests::ApiClient;
use tests::env::test_env;
use uuid::Uuid;

async fn call(
    c: &ApiClient,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut r = c
        .http
        .request(method, format!("{}{path}", c.base))
        .bearer_auth(&c.key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("request");
    let s = r.status();
    (s, r.text().await.unwrap_or_default())
}

/// A key of `workspace` (an operator creates it).
async fn key_of(op: &ApiClient, workspace: Option<Uuid>, role: &str) -> ApiClient {
    let mut body = json!({ "name": format!("{role} key"), "role": role });
    if let Some(ws) = workspace {
        body["workspaceId"] = json!(ws);
    }
    let (s, v) = op.post("/api/keys", &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    ApiClient::new(&op.base, v["key"].as_str().expect("key"))
}

/// Operators create, list, rename and delete workspaces; others get 403; a workspace
/// with integrations or keys cannot be deleted.
#[tokio::test]
async fn operators_manage_workspaces() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let op = &app.client;
    let (s, v) = op
        .post("/api/workspaces", &json!({ "name": "outlets-north" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let ws: Uuid = v["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
    let (s, v) = op.get("/api/workspaces").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    let (s, _) = call(
        op,
        Method::PATCH,
        &format!("/api/workspaces/{ws}"),
        Some(json!({ "name": "north" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        op.get(&format!("/api/workspaces/{ws}")).await.1["name"],
        "north"
    );
    let (s, v) = op.post("/api/workspaces", &json!({ "name": "" })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let admin = key_of(op, Some(ws), "admin").await;
    for (m, p, b) in [
        (Method::GET, "/api/workspaces".to_owned(), None),
        (
            Method::POST,
            "/api/workspaces".to_owned(),
            Some(json!({ "name": "x" })),
        ),
        (Method::DELETE, format!("/api/workspaces/{ws}"), None),
    ] {
        assert_eq!(call(&admin, m, &p, b).await.0, StatusCode::FORBIDDEN);
    }
    let (s, v) = admin
        .post(
            "/api/keys",
            &json!({ "name": "x", "role": "admin", "workspaceId": ws }),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "only operators choose the workspace: {v}"
    );
    assert_eq!(
        call(op, Method::DELETE, &format!("/api/workspaces/{ws}"), None)
            .await
            .0,
        StatusCode::CONFLICT
    );
    let keys = admin.get("/api/keys").await.1;
    for k in keys.as_array().cloned().unwrap_or_default() {
        let id = k["id"].as_str().expect("id");
        assert_eq!(
            call(op, Method::DELETE, &format!("/api/keys/{id}"), None)
                .await
                .0,
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(
        call(op, Method::DELETE, &format!("/api/workspaces/{ws}"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        op.get(&format!("/api/workspaces/{ws}")).await.0,
        StatusCode::NOT_FOUND
    );
    let actions: Vec<String> = q::query(
        &env.db,
        "SELECT action FROM audit_events WHERE action LIKE 'workspace.%' ORDER BY created_at",
        [],
    )
    .await
    .expect("audit")
    .iter()
    .map(|r| r.try_get("", "action").expect("action"))
    .collect();
    assert_eq!(
        actions,
        ["workspace.create", "workspace.update", "workspace.delete"]
    );
    app.stop().await;
}

/// Every route the OpenAPI document lists that names an integration, a run or a key
/// answers 404 to a workspace-B key for workspace A's, and no list, status, stats or
/// queue answer shows B anything of A. The routes come from the served document, so a
/// route added later without scoping fails here.
#[tokio::test]
async fn a_workspace_sees_nothing_of_another() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("its integrations are due at once and no worker runs them");
    let app = env.spawn_app(&[]).await;
    let op = &app.client;
    let (_, v) = op.post("/api/workspaces", &json!({ "name": "b" })).await;
    let ws_b: Uuid = v["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
    let a = key_of(op, None, "admin").await;
    let b = key_of(op, Some(ws_b), "admin").await;
    let a_int = a
        .create("secret-of-a", "synthetic", json!({}), Some(60))
        .await;
    let a_run = Uuid::now_v7();
    q::exec(
        &env.db,
        "INSERT INTO run_history (id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, fence, created_at, completed_at, error_class) \
         VALUES ($1, $2, 'FAILED', 'schedule', now() - interval '1 hour', 1, 1, 1, now(), now(), 'transient')",
        [a_run.into(), a_int.into()],
    )
    .await
    .expect("failed run of A");
    // A's integration has a webhook, so its routes have something to find.
    let (s, v) = a
        .post(&format!("/api/integrations/{a_int}/webhook"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let a_conflict = Uuid::now_v7();
    q::exec(
        &env.db,
        "INSERT INTO conflicts (id, integration_id, external_id, status, source, strategy, local_data, local_deleted, cloud_data, cloud_deleted, cloud_known, detected_at) \
         VALUES ($1, $2, 'r1', 'open', 'pull', 'manual', '{\"n\":\"secret-of-a\"}', false, '{}', false, true, now())",
        [a_conflict.into(), a_int.into()],
    )
    .await
    .expect("open conflict of A");
    let a_entry = Uuid::now_v7();
    q::exec(
        &env.db,
        "INSERT INTO records (integration_id, external_id, data, content_hash, version, synced_at, sync_state) \
         VALUES ($1, 'r2', '{\"n\":\"secret-of-a\"}', 'h', 1, now(), 'failed')",
        [a_int.into()],
    )
    .await
    .expect("failed record of A");
    q::exec(
        &env.db,
        "INSERT INTO outbox (id, integration_id, external_id, operation, data, record_version, status, attempts, last_error, created_at) \
         VALUES ($1, $2, 'r2', 'upsert', '{\"n\":\"secret-of-a\"}', 1, 'failed', 1, 'HTTP 400: secret-of-a', now())",
        [a_entry.into(), a_int.into()],
    )
    .await
    .expect("failed push of A");
    let a_keys = a.get("/api/keys").await.1;
    let listed = a_keys.as_array().cloned().unwrap_or_default();
    assert!(
        listed.iter().all(|k| k["role"] != "operator"),
        "a workspace admin sees the operator key homed there: {a_keys}"
    );
    let a_key = a_keys[0]["id"].as_str().expect("key id").to_owned();
    let b_int = b.create("mine", "synthetic", json!({}), Some(60)).await;
    let (s, spec) = op.get("/api/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    let paths = spec["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        for (method, _op) in item.as_object().expect("path item") {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if !path.contains('{') {
                // A list/status/stats/queue answer: nothing of A in it.
                if m == Method::GET && !path.starts_with("/api/workspaces") {
                    let (s, text) = call(&b, m, path, None).await;
                    assert!(s.is_success(), "{path}: {s} {text}");
                    for secret in [
                        a_int.to_string(),
                        a_run.to_string(),
                        a_conflict.to_string(),
                        a_entry.to_string(),
                        "secret-of-a".into(),
                        a_key.clone(),
                    ] {
                        assert!(
                            !text.contains(&secret),
                            "GET {path} shows B something of A: {text}"
                        );
                    }
                    checked += 1;
                }
                continue;
            }
            let target = if path.starts_with("/api/keys") {
                a_key.clone()
            } else if path.starts_with("/api/sync/conflicts") {
                a_conflict.to_string()
            } else if path.starts_with("/api/sync/outbox") {
                a_entry.to_string()
            } else if path.starts_with("/api/sync/") {
                a_run.to_string()
            } else if path.starts_with("/api/workspaces") {
                continue; // operator-only: 403 for B, covered above
            } else {
                a_int.to_string()
            };
            let concrete = path
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        target.as_str()
                    } else {
                        seg
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let body = if path.ends_with("sync-settings") {
                Some(json!({ "syncInterval": 120 }))
            } else if m == Method::PATCH && path.ends_with("/webhook") {
                Some(json!({ "enabled": false }))
            } else if m == Method::PATCH && path.contains("/notifications/") {
                Some(json!({ "description": "stolen" }))
            } else if m == Method::PATCH {
                Some(json!({ "version": 1, "name": "stolen" }))
            } else if path.ends_with("/resolve") {
                Some(json!({ "resolution": "cloud" }))
            } else if m == Method::POST {
                Some(json!({}))
            } else {
                None
            };
            let (s, text) = call(&b, m.clone(), &concrete, body).await;
            if path.starts_with("/api/webhooks/") {
                // The cloud's receiver takes no API key: it answers by the signature
                // whoever sends, and B's unsigned request is refused as anyone's is
                // (`it::webhooks` covers the receiver).
                assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {path}: {text}");
                assert!(!text.contains("secret-of-a"), "{m} {path}: {text}");
                checked += 1;
                continue;
            }
            assert_eq!(
                s,
                StatusCode::NOT_FOUND,
                "{m} {path} as workspace B: {s} {text}"
            );
            assert!(!text.contains("secret-of-a"), "{m} {path}: {text}");
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} routes checked");
    // A is untouched, and B's own integration is B's.
    assert_eq!(
        a.get(&format!("/api/integrations/{a_int}")).await.1["name"],
        "secret-of-a"
    );
    assert_eq!(
        b.get(&format!("/api/integrations/{b_int}")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        a.get(&format!("/api/integrations/{b_int}")).await.0,
        StatusCode::NOT_FOUND
    );
    let status: Vec<String> = q::query(
        &env.db,
        "SELECT status FROM conflicts WHERE id = $1",
        [a_conflict.into()],
    )
    .await
    .expect("A's conflict")
    .iter()
    .map(|r| r.try_get("", "status").expect("status"))
    .collect();
    assert_eq!(status, ["open"], "B resolved A's conflict");
    assert_eq!(
        crate::util::strings(
            &env.db,
            "SELECT status FROM outbox WHERE id = $1",
            vec![a_entry.into()]
        )
        .await,
        ["failed"],
        "B retried A's push"
    );
    let (_, hook) = a.get(&format!("/api/integrations/{a_int}/webhook")).await;
    assert_eq!(hook["enabled"], true, "B changed A's webhook: {hook}");
    // Fleet-wide facts are an operator's.
    let st = b.get("/api/sync/status").await.1;
    assert!(
        st["workersAlive"].is_null() && st["queueDepth"].is_null(),
        "{st}"
    );
    assert_eq!(st["integrations"], 1, "{st}");
    assert!(op.get("/api/sync/status").await.1["queueDepth"].is_u64());
    app.stop().await;
}
