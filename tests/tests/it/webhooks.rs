//! Webhooks from the cloud: signed over the raw body (Standard Webhooks, and the cloud's
//! `X-Cloud-Signature`), refused when tampered, wrongly signed, stale, oversized or sent
//! from outside the allow-list — changing nothing —, acknowledged once when replayed,
//! verified by both secrets while a rotation's grace lasts, and applied as one coalesced
//! `webhook` run or through the record store and the conflict rules; every outcome
//! counted on `/metrics`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use syncfleet_worker::notifications::sign;
use tests::ApiClient;
use tests::env::{TestEnv, test_env};
use uuid::Uuid;

use crate::util::{count, eventually, strings};

const OPTS: &[(&str, &str)] = &[("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true")];

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Standard Webhooks headers for `body` signed with `secret`.
fn standard(secret: &str, id: &str, ts: i64, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            sign::signature(secret, id, ts, body.as_bytes()).expect("sign"),
        ),
    ]
}

/// The cloud scheme's headers: `sha256=<hex HMAC-SHA256 of "{ts}.{body}">` keyed with the
/// secret's text.
fn cloud(secret: &str, ts: i64, body: &str, event: Option<&str>) -> Vec<(&'static str, String)> {
    let mac = sign::hmac_sha256(secret.as_bytes(), format!("{ts}.{body}").as_bytes());
    let mut h = vec![
        ("x-cloud-signature", format!("sha256={}", hex::encode(mac))),
        ("x-cloud-timestamp", ts.to_string()),
    ];
    if let Some(e) = event {
        h.push(("x-cloud-event-id", e.to_owned()));
    }
    h
}

async fn send(
    base: &str,
    integration: Uuid,
    body: &str,
    headers: &[(&'static str, String)],
) -> (StatusCode, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{base}/api/webhooks/{integration}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let resp = r.send().await.expect("webhook");
    let s = resp.status();
    (s, resp.json().await.unwrap_or(Value::Null))
}

async fn call(c: &ApiClient, m: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut r = c
        .http
        .request(m, format!("{}{path}", c.base))
        .bearer_auth(&c.key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let s = resp.status();
    (s, resp.json().await.unwrap_or(Value::Null))
}

/// `syncfleet_inbound_webhooks_total{outcome=…}` on `base`'s `/metrics`.
async fn outcome(base: &str, name: &str) -> i64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let series = format!("syncfleet_inbound_webhooks_total{{outcome=\"{name}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not on /metrics:\n{text}"))
}

/// An enabled, manual-only http_json integration whose records' ids are at `/id`, once
/// its first run (due at once, run by no worker) exists: nothing else creates runs.
async fn pos(env: &TestEnv, c: &ApiClient, strategy: &str) -> Uuid {
    let (s, v) = c
        .post(
            "/api/integrations",
            &json!({
                "name": format!("outlet ({strategy})"), "kind": "http_json", "syncInterval": null,
                "conflictStrategy": strategy,
                "config": { "url": "http://127.0.0.1:9/items", "recordsPointer": "/items", "idPointer": "/id" }
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id: Uuid = v["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
    eventually(Duration::from_secs(10), "the first run", || async {
        let n = count(
            &env.db,
            "SELECT COUNT(*) FROM live_runs WHERE integration_id = $1",
            vec![id.into()],
        )
        .await;
        (n == 1).then_some(())
    })
    .await;
    id
}

/// Gives `id` a webhook; returns its secret.
async fn hook(c: &ApiClient, id: Uuid, body: Value) -> String {
    let (s, v) = c
        .post(&format!("/api/integrations/{id}/webhook"), &body)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let secret = v["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{v}");
    secret
}

/// Everything a webhook could change: records, receipts, conflicts, runs, audit events,
/// outbox entries.
async fn snapshot(env: &TestEnv, id: Uuid) -> Vec<String> {
    let mut out = strings(
        &env.db,
        "SELECT external_id || ':' || version || ':' || content_hash || ':' || (deleted_at IS NULL) || ':' || sync_state \
         FROM records WHERE integration_id = $1 ORDER BY external_id",
        vec![id.into()],
    )
    .await;
    for (what, sql) in [
        (
            "receipts",
            "SELECT COUNT(*) FROM webhook_receipts WHERE integration_id = $1",
        ),
        (
            "conflicts",
            "SELECT COUNT(*) FROM conflicts WHERE integration_id = $1",
        ),
        (
            "runs",
            "SELECT COUNT(*) FROM sync_logs WHERE integration_id = $1",
        ),
        (
            "audit",
            "SELECT COUNT(*) FROM audit_events WHERE integration_id = $1",
        ),
        (
            "outbox",
            "SELECT COUNT(*) FROM outbox WHERE integration_id = $1",
        ),
    ] {
        out.push(format!(
            "{what}={}",
            count(&env.db, sql, vec![id.into()]).await
        ));
    }
    out
}

async fn record(c: &ApiClient, id: Uuid, external_id: &str) -> Value {
    let (s, v) = c
        .get(&format!(
            "/api/integrations/{id}/records?includeDeleted=true&pageSize=500"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["records"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["externalId"] == external_id).cloned())
        .unwrap_or(Value::Null)
}

/// Both schemes verify and apply; a tampered body, a wrong secret, no signature, a
/// timestamp 400 s behind or ahead, an oversized body and a replayed id change nothing;
/// every outcome is counted.
#[tokio::test]
async fn signed_webhooks_apply_and_refused_ones_change_nothing() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("the integration is due at once and no worker runs it");
    let app = env.spawn_app(OPTS).await;
    let (c, base) = (&app.client, app.url.as_str());
    let id = pos(&env, c, "manual").await;
    let body = json!({ "type": "upsert", "records": [{ "id": "r1", "total": 10 }] }).to_string();
    let t = now();

    // No webhook yet, or no such integration: 404 alike.
    let any = sign::new_secret();
    let (s, v) = send(base, id, &body, &standard(&any, "m0", t, &body)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{v}"
    );
    let (s, _) = send(base, Uuid::now_v7(), &body, &standard(&any, "m0", t, &body)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let secret = hook(c, id, json!({})).await;
    let (s, v) = c.get(&format!("/api/integrations/{id}/webhook")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["scheme"], "standard");
    assert_eq!(v["url"], format!("/api/webhooks/{id}"));
    assert!(
        v.get("secret").is_none() && !v.to_string().contains(&secret),
        "{v}"
    );

    // A valid Standard Webhooks request.
    let signed = standard(&secret, "msg-1", t, &body);
    let (s, v) = send(base, id, &body, &signed).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        (v["type"].as_str(), v["inserted"].as_i64()),
        (Some("upsert"), Some(1)),
        "{v}"
    );
    let r1 = record(c, id, "r1").await;
    assert_eq!(
        (r1["data"]["total"].as_i64(), r1["syncState"].as_str()),
        (Some(10), Some("synced")),
        "{r1}"
    );
    let before = snapshot(&env, id).await;

    // Refused, one way after another.
    let tampered = body.replace("10", "11");
    let (s, v) = send(base, id, &tampered, &signed).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_signature")),
        "{v}"
    );
    let (s, v) = send(
        base,
        id,
        &body,
        &standard(&sign::new_secret(), "msg-2", t, &body),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_signature")),
        "{v}"
    );
    let (s, v) = send(base, id, &body, &[]).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_signature")),
        "{v}"
    );
    for (msg, ts) in [("msg-old", now() - 400), ("msg-future", now() + 400)] {
        let (s, v) = send(base, id, &body, &standard(&secret, msg, ts, &body)).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("stale_timestamp")),
            "{msg}: {v}"
        );
    }
    let huge =
        json!({ "type": "upsert", "records": [{ "id": "big", "pad": "x".repeat(1024 * 1024) }] })
            .to_string();
    let (s, v) = send(base, id, &huge, &standard(&secret, "msg-huge", t, &huge)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")),
        "{v}"
    );
    // A replay: acknowledged, nothing applied twice.
    let (s, v) = send(base, id, &body, &signed).await;
    assert_eq!((s, &v["replayed"]), (StatusCode::OK, &json!(true)), "{v}");
    assert_eq!(
        snapshot(&env, id).await,
        before,
        "a refused or replayed webhook changed something"
    );

    // The cloud's scheme.
    let (s, v) = call(
        c,
        Method::PATCH,
        &format!("/api/integrations/{id}/webhook"),
        Some(json!({ "scheme": "cloud" })),
    )
    .await;
    assert_eq!(
        (s, v["scheme"].as_str()),
        (StatusCode::OK, Some("cloud")),
        "{v}"
    );
    let (s, _) = send(base, id, &body, &standard(&secret, "msg-3", now(), &body)).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a Standard Webhooks request to a cloud-scheme webhook"
    );
    let del = json!({ "type": "delete", "ids": ["r1", "never-seen"] }).to_string();
    let (s, v) = send(base, id, &del, &cloud(&secret, now(), &del, Some("evt-1"))).await;
    assert_eq!(
        (s, v["deleted"].as_i64(), v["webhookId"].as_str()),
        (StatusCode::ACCEPTED, Some(1), Some("evt-1")),
        "{v}"
    );
    assert!(record(c, id, "r1").await["deletedAt"].is_string());
    // The same event again, signed afresh: a replay by its event id.
    let (s, v) = send(
        base,
        id,
        &del,
        &cloud(&secret, now() + 1, &del, Some("evt-1")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Without an event id, the identical request is a replay by its signature.
    let up = json!({ "type": "upsert", "records": [{ "id": 7, "total": 1 }] }).to_string();
    let headers = cloud(&secret, now(), &up, None);
    let (s, v) = send(base, id, &up, &headers).await;
    assert_eq!(
        (s, v["inserted"].as_i64()),
        (StatusCode::ACCEPTED, Some(1)),
        "{v}"
    );
    let (s, _) = send(base, id, &up, &headers).await;
    assert_eq!(s, StatusCode::OK);
    let tampered = up.replace("1}", "2}");
    let (s, _) = send(base, id, &tampered, &headers).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A verified body that is not a webhook: 422, and its id is not used up.
    let bad = json!({ "type": "upsert", "records": [{ "total": 3 }] }).to_string();
    let (s, v) = send(
        base,
        id,
        &bad,
        &cloud(&secret, now(), &bad, Some("evt-bad")),
    )
    .await;
    assert_eq!(
        (s, v["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("records[0]")),
        "{v}"
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM webhook_receipts WHERE webhook_id = 'evt-bad'",
            vec![]
        )
        .await,
        0
    );

    for (name, n) in [
        ("accepted", 3),
        ("replayed", 3),
        ("invalid_signature", 5),
        ("stale", 2),
        ("too_large", 1),
        ("not_found", 2),
        ("invalid_body", 1),
        ("forbidden_source", 0),
    ] {
        assert_eq!(outcome(base, name).await, n, "outcome {name}");
    }

    // Receipts outlive the window, then the retention deletes them.
    q_exec(
        &env,
        "UPDATE webhook_receipts SET received_at = now() - interval '2 days' WHERE webhook_id = 'msg-1'",
    )
    .await;
    let pruned =
        syncfleet_api::control::webhooks::prune_receipts(&env.db, Duration::from_secs(86_400))
            .await
            .expect("prune");
    assert_eq!(pruned, 1);
    app.stop().await;
}

async fn q_exec(env: &TestEnv, sql: &str) {
    syncfleet_worker::db::exec(&env.db, sql, [])
        .await
        .expect(sql);
}

/// After a rotation both secrets verify until the grace ends, then only the new one;
/// the secret is never shown again; viewers read, only admins change; every change is
/// audited; a deleted webhook is 404.
#[tokio::test]
async fn a_rotated_secret_verifies_beside_the_new_one_until_its_grace_ends() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("the integration is due at once and no worker runs it");
    let app = env.spawn_app(OPTS).await;
    let (c, base) = (&app.client, app.url.as_str());
    let id = pos(&env, c, "manual").await;
    let path = format!("/api/integrations/{id}/webhook");
    let old = hook(c, id, json!({ "scheme": "standard" })).await;
    let (s, v) = c.post(&path, &json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "a second webhook: {v}");
    let body = json!({ "type": "delete", "ids": ["nothing"] }).to_string();
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("msg-{n}")
    };

    let (s, v) = c
        .post(
            &format!("{path}/rotate-secret"),
            &json!({ "graceSeconds": 2 }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let new = v["secret"].as_str().expect("secret").to_owned();
    assert!(v["previousSecretValidUntil"].is_string(), "{v}");
    let (_, v) = c.get(&path).await;
    assert_eq!(v["previousSecretValid"], true, "{v}");
    assert!(!v.to_string().contains(&new) && !v.to_string().contains(&old));
    for secret in [&old, &new] {
        let (s, v) = send(base, id, &body, &standard(secret, &next(), now(), &body)).await;
        assert_eq!(s, StatusCode::ACCEPTED, "during the grace: {v}");
    }
    eventually(Duration::from_secs(10), "the old secret refused", || {
        let msg = next();
        let (old, body) = (old.clone(), body.clone());
        async move {
            let (s, _) = send(base, id, &body, &standard(&old, &msg, now(), &body)).await;
            (s == StatusCode::UNAUTHORIZED).then_some(())
        }
    })
    .await;
    let (s, _) = send(base, id, &body, &standard(&new, &next(), now(), &body)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (_, v) = c.get(&path).await;
    assert_eq!(
        (&v["previousSecretValid"], &v["previousSecretValidUntil"]),
        (&json!(false), &Value::Null),
        "{v}"
    );

    // No grace: the replaced secret stops at once. Bounds are checked.
    let (s, v) = c
        .post(
            &format!("{path}/rotate-secret"),
            &json!({ "graceSeconds": 0 }),
        )
        .await;
    assert_eq!(
        (s, &v["previousSecretValidUntil"]),
        (StatusCode::OK, &Value::Null),
        "{v}"
    );
    let newest = v["secret"].as_str().expect("secret").to_owned();
    let (s, _) = send(base, id, &body, &standard(&new, &next(), now(), &body)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = send(base, id, &body, &standard(&newest, &next(), now(), &body)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, v) = c
        .post(
            &format!("{path}/rotate-secret"),
            &json!({ "graceSeconds": 604_801 }),
        )
        .await;
    assert_eq!(
        (s, v["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("graceSeconds")),
        "{v}"
    );
    let (s, _) = c
        .post(
            &format!("{path}/rotate-secret"),
            &json!({ "secret": "whsec_c2hvcnQ=" }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "a secret of 5 bytes");

    // Viewers read; only admins change.
    let (_, k) = c
        .post("/api/keys", &json!({ "name": "dash", "role": "viewer" }))
        .await;
    let viewer = ApiClient::new(base, k["key"].as_str().expect("key"));
    assert_eq!(viewer.get(&path).await.0, StatusCode::OK);
    for (m, p, b) in [
        (Method::POST, path.clone(), Some(json!({}))),
        (
            Method::PATCH,
            path.clone(),
            Some(json!({ "enabled": false })),
        ),
        (Method::DELETE, path.clone(), None),
        (
            Method::POST,
            format!("{path}/rotate-secret"),
            Some(json!({})),
        ),
    ] {
        assert_eq!(
            call(&viewer, m.clone(), &p, b).await.0,
            StatusCode::FORBIDDEN,
            "{m} {p}"
        );
    }
    let (s, v) = call(
        c,
        Method::PATCH,
        &path,
        Some(json!({ "allowedSources": ["nowhere"] })),
    )
    .await;
    assert_eq!(
        (s, v["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("allowedSources[0]")),
        "{v}"
    );

    // A disabled webhook is refused (409) and its id is not used up.
    let (s, _) = call(c, Method::PATCH, &path, Some(json!({ "enabled": false }))).await;
    assert_eq!(s, StatusCode::OK);
    let held = standard(&newest, "while-disabled", now(), &body);
    let (s, v) = send(base, id, &body, &held).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "{v}"
    );
    let (s, _) = call(c, Method::PATCH, &path, Some(json!({ "enabled": true }))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = send(base, id, &body, &held).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");

    let (s, _) = call(c, Method::DELETE, &path, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(c.get(&path).await.0, StatusCode::NOT_FOUND);
    let (s, _) = send(base, id, &body, &standard(&newest, &next(), now(), &body)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let actions = strings(
        &env.db,
        "SELECT action FROM audit_events WHERE integration_id = $1 AND action LIKE 'inbound_webhook.%' ORDER BY created_at, id",
        vec![id.into()],
    )
    .await;
    assert_eq!(
        actions,
        [
            "inbound_webhook.create",
            "inbound_webhook.rotate_secret",
            "inbound_webhook.rotate_secret",
            "inbound_webhook.update",
            "inbound_webhook.update",
            "inbound_webhook.delete",
        ]
    );
    let trail = strings(
        &env.db,
        "SELECT COALESCE(CAST(\"before\" AS TEXT), '') || COALESCE(CAST(\"after\" AS TEXT), '') FROM audit_events \
         WHERE integration_id = $1",
        vec![id.into()],
    )
    .await
    .join(" ");
    for secret in [&old, &new, &newest] {
        assert!(
            !trail.contains(secret.as_str()),
            "a secret in the audit trail"
        );
    }
    app.stop().await;
}

/// The allow-list is checked against the TCP peer; `X-Forwarded-For` counts only when
/// the peer is a configured trusted proxy, and then its nearest untrusted hop.
#[tokio::test]
async fn the_allow_list_reads_forwarded_addresses_only_behind_a_trusted_proxy() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("the integration is due at once and no worker runs it");
    let app = env.spawn_app(OPTS).await;
    let (c, base) = (&app.client, app.url.as_str());
    let id = pos(&env, c, "manual").await;
    let path = format!("/api/integrations/{id}/webhook");
    let secret = hook(c, id, json!({ "allowedSources": ["10.0.0.0/8"] })).await;
    let body = json!({ "type": "delete", "ids": ["x"] }).to_string();
    let signed = |msg: &str| standard(&secret, msg, now(), &body);

    let (s, v) = send(base, id, &body, &signed("a1")).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden_source")),
        "{v}"
    );
    let mut spoofed = signed("a2");
    spoofed.push(("x-forwarded-for", "10.1.2.3".into()));
    let (s, _) = send(base, id, &body, &spoofed).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "X-Forwarded-For from an untrusted peer"
    );
    let (s, v) = call(
        c,
        Method::PATCH,
        &path,
        Some(json!({ "allowedSources": ["127.0.0.1"] })),
    )
    .await;
    assert_eq!(v["allowedSources"], json!(["127.0.0.1/32"]), "{s} {v}");
    let (s, _) = send(base, id, &body, &signed("a3")).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = call(
        c,
        Method::PATCH,
        &path,
        Some(json!({ "allowedSources": ["10.0.0.0/8"] })),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(outcome(base, "forbidden_source").await, 2);
    app.stop().await;

    // Behind a trusted proxy (this test's client is at 127.0.0.1).
    let app = env
        .spawn_app(&[OPTS[0], ("SYNCFLEET_TRUSTED_PROXIES", "127.0.0.1/32")])
        .await;
    let base = app.url.as_str();
    for (k, (xff, want)) in [
        (Some("10.9.8.7"), StatusCode::ACCEPTED),
        (Some("10.9.8.7, 192.168.1.1"), StatusCode::FORBIDDEN),
        (Some("192.168.1.1, 10.9.8.7"), StatusCode::ACCEPTED),
        (Some("not-an-address"), StatusCode::FORBIDDEN),
        (None, StatusCode::FORBIDDEN),
    ]
    .into_iter()
    .enumerate()
    {
        let mut h = signed(&format!("b-{k}"));
        if let Some(x) = xff {
            h.push(("x-forwarded-for", x.into()));
        }
        let (s, v) = send(base, id, &body, &h).await;
        assert_eq!(s, want, "X-Forwarded-For {xff:?}: {v}");
    }
    app.stop().await;
}

/// `{"type":"sync"}` asks for a pull: two webhooks make one `webhook` run (the second
/// coalesces), which a worker runs; a paused integration refuses them with 409 and
/// creates nothing.
#[tokio::test]
async fn sync_webhooks_coalesce_into_one_webhook_run() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let (c, base) = (&app.client, app.url.as_str());
    let id = c.create("sales", "synthetic", json!({}), None).await;
    let (stop, worker) = env.spawn_worker(&[]);
    eventually(Duration::from_secs(15), "the first run", || async {
        c.history(id)
            .await
            .first()
            .filter(|r| r["status"] == "SUCCESS")
            .map(|_| ())
    })
    .await;
    stop.cancel();
    let _ = worker.await;
    let secret = hook(c, id, json!({})).await;
    let body = json!({ "type": "sync" }).to_string();

    let (s, first) = send(base, id, &body, &standard(&secret, "sync-1", now(), &body)).await;
    assert_eq!(
        (s, &first["coalesced"]),
        (StatusCode::ACCEPTED, &json!(false)),
        "{first}"
    );
    let (s, second) = send(base, id, &body, &standard(&secret, "sync-2", now(), &body)).await;
    assert_eq!(
        (s, &second["coalesced"]),
        (StatusCode::ACCEPTED, &json!(true)),
        "{second}"
    );
    assert_eq!(first["runId"], second["runId"]);
    assert_eq!(
        strings(
            &env.db,
            "SELECT \"trigger\" FROM live_runs WHERE integration_id = $1",
            vec![id.into()]
        )
        .await,
        ["webhook"]
    );
    let (s, _) = send(base, id, &body, &standard(&secret, "sync-1", now(), &body)).await;
    assert_eq!(s, StatusCode::OK, "a replay");
    assert_eq!(
        strings(
            &env.db,
            "SELECT actor FROM audit_events WHERE integration_id = $1 AND action = 'integration.trigger'",
            vec![id.into()],
        )
        .await,
        ["webhook", "webhook"]
    );

    let (stop, worker) = env.spawn_worker(&[]);
    let run = first["runId"].as_str().expect("run id").to_owned();
    eventually(
        Duration::from_secs(15),
        "the webhook run finished",
        || async {
            c.history(id)
                .await
                .into_iter()
                .find(|r| r["id"] == run.as_str() && r["status"] == "SUCCESS")
                .map(|r| assert_eq!(r["trigger"], "webhook", "{r}"))
        },
    )
    .await;
    stop.cancel();
    let _ = worker.await;
    assert_eq!(c.history(id).await.len(), 2, "one run for two webhooks");

    let (s, _) = c
        .post(&format!("/api/integrations/{id}/pause"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = send(base, id, &body, &standard(&secret, "sync-3", now(), &body)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "{v}"
    );
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM live_runs", vec![]).await,
        0
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM webhook_receipts WHERE webhook_id = 'sync-3'",
            vec![]
        )
        .await,
        0,
        "a refused webhook's id is not used up"
    );
    assert_eq!(
        (
            outcome(base, "accepted").await,
            outcome(base, "conflict").await
        ),
        (2, 1)
    );
    app.stop().await;
}

/// A webhook's changes go through the record store and the conflict rules as a pull's:
/// a record with a local change not pushed yet opens a conflict (source `webhook`) under
/// `manual` and keeps its local copy, or takes the cloud's under `cloud_wins`; records
/// the body does not name are left alone; only explicit deletes delete.
#[tokio::test]
async fn webhook_changes_meet_the_conflict_rules() {
    let Some(env) = test_env().await else { return };
    env.leaves_work(
        "the integrations are due at once, and local changes wait for pushes, with no worker",
    );
    let app = env.spawn_app(OPTS).await;
    let (c, base) = (&app.client, app.url.as_str());
    let upsert = |records: Value| json!({ "type": "upsert", "records": records }).to_string();
    let mut n = 0;
    for strategy in ["manual", "cloud_wins"] {
        let id = pos(&env, c, strategy).await;
        let secret = hook(c, id, json!({})).await;
        let mut post = async |body: String| {
            n += 1;
            send(
                base,
                id,
                &body,
                &standard(&secret, &format!("m-{n}"), now(), &body),
            )
            .await
        };
        let (s, v) = post(upsert(
            json!([{ "id": "r1", "n": 1 }, { "id": "r2", "n": 1 }]),
        ))
        .await;
        assert_eq!(
            (s, v["inserted"].as_i64()),
            (StatusCode::ACCEPTED, Some(2)),
            "{v}"
        );
        // A local change of r1, not pushed (no push target).
        let (s, v) = call(
            c,
            Method::PUT,
            &format!("/api/integrations/{id}/records/r1"),
            Some(json!({ "id": "r1", "n": 2 })),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        // The cloud changed r1 too, and sends r3; r2 is not in the body.
        let (s, v) = post(upsert(
            json!([{ "id": "r1", "n": 3 }, { "id": "r3", "n": 1 }]),
        ))
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(
            (v["inserted"].as_i64(), v["conflicts"].as_u64()),
            (Some(1), Some(1)),
            "{strategy}: {v}"
        );
        let r1 = record(c, id, "r1").await;
        let conflicts = strings(
            &env.db,
            "SELECT source || ':' || status FROM conflicts WHERE integration_id = $1",
            vec![id.into()],
        )
        .await;
        let outbox = strings(
            &env.db,
            "SELECT status FROM outbox WHERE integration_id = $1",
            vec![id.into()],
        )
        .await;
        match strategy {
            "manual" => {
                assert_eq!(conflicts, ["webhook:open"]);
                assert_eq!(
                    (r1["data"]["n"].as_i64(), r1["syncState"].as_str()),
                    (Some(2), Some("conflict")),
                    "{r1}"
                );
                assert_eq!(outbox, ["conflict"]);
            }
            _ => {
                assert_eq!(conflicts, ["webhook:resolved"]);
                assert_eq!(
                    (r1["data"]["n"].as_i64(), r1["syncState"].as_str()),
                    (Some(3), Some("synced")),
                    "{r1}"
                );
                assert_eq!(outbox, ["superseded"]);
            }
        }
        assert_eq!(
            record(c, id, "r2").await["deletedAt"],
            Value::Null,
            "an upsert deleted r2"
        );
        assert_eq!(record(c, id, "r3").await["data"]["n"], 1);
        let (s, v) =
            post(json!({ "type": "delete", "ids": ["r2", "r2", "gone"] }).to_string()).await;
        assert_eq!(
            (s, v["deleted"].as_i64(), v["received"].as_i64()),
            (StatusCode::ACCEPTED, Some(1), Some(3)),
            "{v}"
        );
        assert!(record(c, id, "r2").await["deletedAt"].is_string());
        assert_eq!(
            count(
                &env.db,
                "SELECT COUNT(*) FROM records WHERE integration_id = $1 AND deleted_at IS NULL",
                vec![id.into()]
            )
            .await,
            2,
            "r1 and r3 stay"
        );
    }
    // A kind without an idPointer takes deletes only.
    let synth = c.create("plain", "synthetic", json!({}), None).await;
    let secret = hook(c, synth, json!({})).await;
    let body = upsert(json!([{ "id": "a" }]));
    let (s, v) = send(base, synth, &body, &standard(&secret, "s-1", now(), &body)).await;
    assert_eq!(
        (s, v["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("records")),
        "{v}"
    );
    app.stop().await;
}

/// `rotate-key` re-seals webhook secrets with the rest: the webhook verifies under the
/// new key, and the stored secret does not open with the old one; so do the signing
/// secrets of notification endpoints.
#[tokio::test]
async fn webhook_secrets_follow_a_key_rotation() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("the integration is due at once and no worker runs it");
    let app = env.spawn_app(OPTS).await;
    let id = pos(&env, &app.client, "manual").await;
    let secret = hook(&app.client, id, json!({})).await;
    let (s, v) = app
        .client
        .post(
            "/api/notifications/endpoints",
            &json!({ "url": "http://127.0.0.1:9/hook", "description": "ops" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let endpoint: Uuid = v["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
    let endpoint_secret = v["secret"].as_str().expect("secret").to_owned();
    app.stop().await;
    let new_key = syncfleet_worker::secrets::SecretBox::generate();
    syncfleet_api::app::run_rotate_key(env.config(&[]), &new_key)
        .await
        .expect("rotate");
    let stored = strings(&env.db, "SELECT secret FROM inbound_webhooks", vec![]).await;
    let old =
        syncfleet_worker::secrets::SecretBox::parse(tests::env::TEST_SECRET_KEY).expect("key");
    assert!(!stored[0].contains(&secret));
    assert!(syncfleet_api::control::webhooks::open(Some(&old), id, &stored[0]).is_err());
    let sealed = strings(&env.db, "SELECT secret FROM notification_endpoints", vec![]).await;
    let opened = |b: &syncfleet_worker::secrets::SecretBox| {
        serde_json::from_str(&sealed[0])
            .ok()
            .and_then(|v| b.open(endpoint, "secret", &v).ok())
    };
    let new = syncfleet_worker::secrets::SecretBox::parse(&new_key).expect("new key");
    assert_eq!(opened(&new), Some(json!(endpoint_secret)), "resealed");
    assert_eq!(opened(&old), None, "not under the old key");
    let app = env
        .spawn_app(&[OPTS[0], ("SYNCFLEET_SECRET_KEY", new_key.as_str())])
        .await;
    let body = json!({ "type": "delete", "ids": ["x"] }).to_string();
    let (s, v) = send(&app.url, id, &body, &standard(&secret, "k-1", now(), &body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    app.stop().await;
}

/// A source serving one record, `r0`, to the embedded mode's pulls.
async fn source() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/items", listener.local_addr().expect("addr"));
    let app = axum::Router::new()
        .fallback(|| async { axum::Json(json!({ "items": [{ "id": "r0", "n": 0 }] })) });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// The same on SQLite (the embedded mode, its worker included): a rotation's two
/// secrets, an upsert and its replay, a conflict with a local change, a stale
/// timestamp, and a `sync` run.
#[tokio::test]
async fn webhooks_work_in_the_embedded_mode() {
    let app = tests::embedded::spawn_standalone(OPTS).await;
    let (c, base) = (&app.client, app.url.as_str());
    let (s, v) = c
        .post(
            "/api/integrations",
            &json!({ "name": "till", "kind": "http_json", "syncInterval": null,
                     "config": { "url": source().await, "recordsPointer": "/items", "idPointer": "/id" } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id: Uuid = v["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
    eventually(Duration::from_secs(15), "the first pull", || async {
        c.history(id)
            .await
            .first()
            .filter(|r| r["status"] == "SUCCESS")
            .map(|_| ())
    })
    .await;
    let old = hook(c, id, json!({})).await;
    let path = format!("/api/integrations/{id}/webhook");
    let (s, v) = c
        .post(
            &format!("{path}/rotate-secret"),
            &json!({ "graceSeconds": 60 }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let new = v["secret"].as_str().expect("secret").to_owned();
    assert_eq!(c.get(&path).await.1["previousSecretValid"], true);

    let body = json!({ "type": "upsert", "records": [{ "id": "r1", "n": 1 }] }).to_string();
    let signed = standard(&old, "e-1", now(), &body);
    let (s, v) = send(base, id, &body, &signed).await;
    assert_eq!(
        (s, v["inserted"].as_i64()),
        (StatusCode::ACCEPTED, Some(1)),
        "{v}"
    );
    let (s, _) = send(base, id, &body, &signed).await;
    assert_eq!(s, StatusCode::OK, "a replay");
    let (s, v) = send(base, id, &body, &standard(&new, "e-2", now() - 400, &body)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("stale_timestamp")),
        "{v}"
    );

    let (s, v) = call(
        c,
        Method::PUT,
        &format!("/api/integrations/{id}/records/r0"),
        Some(json!({ "id": "r0", "n": 5 })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let body = json!({ "type": "upsert", "records": [{ "id": "r0", "n": 9 }] }).to_string();
    let (s, v) = send(base, id, &body, &standard(&new, "e-3", now(), &body)).await;
    assert_eq!(
        (s, v["conflicts"].as_u64()),
        (StatusCode::ACCEPTED, Some(1)),
        "{v}"
    );
    let (_, v) = c.get("/api/sync/conflicts").await;
    assert_eq!(v[0]["source"], "webhook", "{v}");

    let body = json!({ "type": "sync" }).to_string();
    let (s, v) = send(base, id, &body, &standard(&new, "e-4", now(), &body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let run = v["runId"].as_str().expect("run").to_owned();
    eventually(Duration::from_secs(15), "the webhook run", || async {
        c.history(id)
            .await
            .into_iter()
            .find(|r| {
                r["id"] == run.as_str() && r["status"] == "SUCCESS" && r["trigger"] == "webhook"
            })
            .map(|_| ())
    })
    .await;
    app.stop().await;
}

/// Unknown integrations and bad signatures spend the sender address's budget for
/// failures (the one unknown API keys spend): past it every webhook from there gets 429
/// until the wait is over.
#[tokio::test]
async fn an_address_sending_bad_signatures_is_slowed_down() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("the integration is due at once and no worker runs it");
    let app = env
        .spawn_app(&[
            OPTS[0],
            ("SYNCFLEET_AUTH_FAILURES_PER_SEC", "1"),
            ("SYNCFLEET_AUTH_FAILURES_BURST", "2"),
        ])
        .await;
    let (c, base) = (&app.client, app.url.as_str());
    let id = pos(&env, c, "manual").await;
    let secret = hook(c, id, json!({})).await;
    let body = json!({ "type": "delete", "ids": ["x"] }).to_string();
    let wrong = sign::new_secret();
    let mut got = Vec::new();
    for k in 0..3 {
        got.push(
            send(
                base,
                id,
                &body,
                &standard(&wrong, &format!("w-{k}"), now(), &body),
            )
            .await
            .0,
        );
    }
    assert_eq!(
        got,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let (s, v) = send(base, id, &body, &standard(&secret, "ok-1", now(), &body)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")),
        "{v}"
    );
    eventually(Duration::from_secs(5), "the wait over", || {
        let body = body.clone();
        let secret = secret.clone();
        async move {
            let (s, _) = send(base, id, &body, &standard(&secret, "ok-2", now(), &body)).await;
            (s == StatusCode::ACCEPTED).then_some(())
        }
    })
    .await;
    // The third bad one, the good one, and the tries while waiting.
    assert!(outcome(base, "rate_limited").await >= 2);
    app.stop().await;
}
