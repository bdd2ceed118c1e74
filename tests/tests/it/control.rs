//! Control actions are one transaction each with their audit event: when the audit
//! row cannot be written, the change is not made either, and every event names the key
//! (id and name) and carries the caller's reason.

use reqwest::StatusCode;
use serde_json::{Value, json};
use syncfleet_worker::db as q;
use tests::env::test_env;
use uuid::Uuid;

use crate::util::count;

/// Makes every audit insert fail while `audit_fail` holds a row.
async fn break_audit(db: &sea_orm::DatabaseConnection, on: bool) {
    for sql in [
        "CREATE TABLE IF NOT EXISTS audit_fail (x int)",
        "CREATE OR REPLACE FUNCTION audit_fail_fn() RETURNS trigger AS $$ BEGIN \
         IF EXISTS (SELECT 1 FROM audit_fail) THEN RAISE EXCEPTION 'audit broken by the test'; END IF; \
         RETURN NEW; END $$ LANGUAGE plpgsql",
        "DROP TRIGGER IF EXISTS audit_fail_tr ON audit_events",
        "CREATE TRIGGER audit_fail_tr BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_fail_fn()",
        "DELETE FROM audit_fail",
    ] {
        q::exec(db, sql, []).await.expect("audit trigger");
    }
    if on {
        q::exec(db, "INSERT INTO audit_fail VALUES (1)", [])
            .await
            .expect("break audit");
    }
}

/// `(sync_enabled, health, version, sync_interval_secs, name)` of an integration.
async fn row(db: &sea_orm::DatabaseConnection, id: Uuid) -> Value {
    let r = q::query(
        db,
        "SELECT sync_enabled, health, version, sync_interval_secs, name FROM integrations WHERE id = $1",
        [id.into()],
    )
    .await
    .expect("row");
    match r.first() {
        None => Value::Null,
        Some(r) => json!([
            r.try_get::<bool>("", "sync_enabled").unwrap(),
            r.try_get::<String>("", "health").unwrap(),
            r.try_get::<i32>("", "version").unwrap(),
            r.try_get::<Option<i64>>("", "sync_interval_secs").unwrap(),
            r.try_get::<String>("", "name").unwrap(),
        ]),
    }
}

async fn send(
    c: &tests::ApiClient,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> StatusCode {
    c.http
        .request(method, format!("{}{path}", c.base))
        .bearer_auth(&c.key)
        .json(&body)
        .send()
        .await
        .expect("request")
        .status()
}

/// With the audit trail failing, no control action changes anything: the change and
/// its audit event commit together or not at all.
#[tokio::test]
async fn a_control_action_without_its_audit_event_changes_nothing() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("its integrations are due at once and no worker runs them");
    let app = env.spawn_app(&[]).await;
    let c = &app.client;
    let id = c.create("ctl", "synthetic", json!({}), Some(60)).await;
    let paused = c
        .create("ctl-paused", "synthetic", json!({}), Some(60))
        .await;
    assert_eq!(
        c.post(&format!("/api/integrations/{paused}/pause"), &json!({}))
            .await
            .0,
        StatusCode::OK
    );
    let failed_run = Uuid::now_v7();
    q::exec(
        &env.db,
        "INSERT INTO run_history (id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, fence, created_at, completed_at) \
         VALUES ($1, $2, 'FAILED', 'schedule', now() - interval '1 hour', 1, 1, 1, now(), now())",
        [failed_run.into(), paused.into()],
    )
    .await
    .expect("failed run");
    let runs = |db: sea_orm::DatabaseConnection| async move {
        count(&db, "SELECT COUNT(*) FROM sync_logs", vec![]).await
    };
    let (before, before_paused, runs_before) = (
        row(&env.db, id).await,
        row(&env.db, paused).await,
        runs(env.db.clone()).await,
    );
    let integrations = count(&env.db, "SELECT COUNT(*) FROM integrations", vec![]).await;
    break_audit(&env.db, true).await;
    use reqwest::Method;
    let actions = [
        (
            Method::POST,
            "/api/integrations".to_owned(),
            json!({ "name": "new", "kind": "synthetic", "config": {}, "syncInterval": 60 }),
        ),
        (
            Method::PATCH,
            format!("/api/integrations/{id}"),
            json!({ "version": before[2], "name": "renamed" }),
        ),
        (
            Method::PATCH,
            format!("/api/integrations/{id}/sync-settings"),
            json!({ "syncInterval": 120 }),
        ),
        (
            Method::POST,
            format!("/api/integrations/{id}/pause"),
            json!({ "reason": "r" }),
        ),
        (
            Method::POST,
            format!("/api/integrations/{paused}/resume"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/integrations/{paused}/sync"),
            json!({ "force": true }),
        ),
        (
            Method::POST,
            format!("/api/sync/retry/{failed_run}"),
            json!({}),
        ),
        (Method::DELETE, format!("/api/integrations/{id}"), json!({})),
    ];
    for (method, path, body) in actions {
        let status = send(c, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{method} {path}");
    }
    assert_eq!(
        row(&env.db, id).await,
        before,
        "a change landed without its audit event"
    );
    assert_eq!(row(&env.db, paused).await, before_paused);
    assert_eq!(
        runs(env.db.clone()).await,
        runs_before,
        "a run was created without its audit event"
    );
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM integrations", vec![]).await,
        integrations
    );
    break_audit(&env.db, false).await;
    app.stop().await;
}

/// Every audit event names the key that acted (id and name) and keeps the reason the
/// caller gave, on every action that takes one, `POST …/sync` included.
#[tokio::test]
async fn audit_events_name_the_key_and_keep_the_reason() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("its integration is due at once and no worker runs it");
    let app = env.spawn_app(&[]).await;
    let c = &app.client;
    let id = c.create("why", "synthetic", json!({}), Some(60)).await;
    for (path, reason) in [
        ("sync", "refresh before the board meeting"),
        ("pause", "source maintenance"),
        ("resume", "maintenance over"),
    ] {
        let (s, v) = c
            .post(
                &format!("/api/integrations/{id}/{path}"),
                &json!({ "reason": reason }),
            )
            .await;
        assert!(s.is_success(), "{path}: {s} {v}");
    }
    let (s, v) = c.get(&format!("/api/integrations/{id}/audit")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let events = v["events"].as_array().cloned().unwrap_or_default();
    let by_action = |a: &str| {
        events
            .iter()
            .find(|e| e["action"] == a)
            .cloned()
            .unwrap_or_else(|| panic!("no {a} event in {events:?}"))
    };
    for (action, reason) in [
        ("integration.trigger", "refresh before the board meeting"),
        ("integration.pause", "source maintenance"),
        ("integration.resume", "maintenance over"),
    ] {
        let e = by_action(action);
        assert_eq!(e["reason"], reason, "{e}");
        assert!(
            e["actor"].as_str().is_some_and(|a| a.starts_with("key:")),
            "{e}"
        );
        assert!(
            e["actorName"].as_str().is_some_and(|n| !n.is_empty()),
            "{e}"
        );
    }
    assert!(by_action("integration.create")["actorName"].is_string());
    app.stop().await;
}
