//! Input the API must refuse with a clear problem+json answer before anything is
//! stored: connector configs (bounds, shape, secrets), strings, bodies and queries.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::ApiClient;
use tests::env::test_env;

use crate::util::count;

/// POSTs `body` and checks a 422 that names `field`; returns the problem.
async fn refused(c: &ApiClient, path: &str, body: &Value, field: &str) -> Value {
    let (s, v) = c.post(path, body).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {v}");
    assert_eq!(v["code"], "validation_failed", "{v}");
    let errors = v["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        errors
            .iter()
            .any(|e| e["field"].as_str().is_some_and(|f| f == field)),
        "{field} not named: {v}"
    );
    v
}

/// Size and count options are bounded at save: a config that would make a worker
/// allocate what a source announces is never stored.
#[tokio::test]
async fn size_options_are_bounded_at_save() {
    let Some(env) = test_env().await else { return };
    let app = env
        .spawn_app(&[("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true")])
        .await;
    let c = &app.client;
    let huge = 1_000_000_000_000_000_000u64;
    for (kind, config, field) in [
        (
            "http_json",
            json!({ "url": "http://127.0.0.1:9/x", "recordsPointer": "/items", "idPointer": "/id", "maxResponseBytes": huge }),
            "config.maxResponseBytes",
        ),
        (
            "http_json",
            json!({ "url": "http://127.0.0.1:9/x", "recordsPointer": "/items", "idPointer": "/id", "maxPages": huge }),
            "config.maxPages",
        ),
        (
            "csv",
            json!({ "url": "http://127.0.0.1:9/x.csv", "maxResponseBytes": huge }),
            "config.maxResponseBytes",
        ),
        (
            "synthetic",
            json!({ "retryAfterMs": huge }),
            "config.retryAfterMs",
        ),
    ] {
        refused(
            c,
            "/api/integrations",
            &json!({ "name": "big", "kind": kind, "config": config }),
            field,
        )
        .await;
    }
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM integrations", vec![]).await,
        0
    );
    app.stop().await;
}

/// A config must be a JSON object: serde would read a struct from an array, and the
/// secret inside it would skip sealing and masking.
#[tokio::test]
async fn configs_must_be_objects_whatever_the_kind() {
    let Some(env) = test_env().await else { return };
    let app = env
        .spawn_app(&[("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true")])
        .await;
    let c = &app.client;
    const SECRET: &str = "S3cretInAnArray";
    let auth = json!({ "type": "bearer", "token": SECRET });
    for (kind, config) in [
        (
            "http_json",
            json!(["http://127.0.0.1:9/x", "GET", {}, auth, "/data", "/id"]),
        ),
        (
            "csv",
            json!(["http://127.0.0.1:9/x.csv", null, null, {}, { "Authorization": SECRET }]),
        ),
        ("google_sheets", json!(["sheet-1", "A1:B2", SECRET])),
        ("synthetic", json!([5])),
        ("firestore", json!(["p", "c"])),
        (
            "sql",
            json!([format!("postgres://u:{SECRET}@127.0.0.1/db")]),
        ),
        ("http_json", json!("http://127.0.0.1:9/x")),
        (
            "http_json",
            json!({ "url": "http://127.0.0.1:9/x", "recordsPointer": "/d", "idPointer": "/id",
                    "auth": ["bearer", SECRET] }),
        ),
        (
            "http_json",
            json!({ "url": "http://127.0.0.1:9/x", "recordsPointer": "/d", "idPointer": "/id",
                    "pagination": ["nextLink", "/next"] }),
        ),
    ] {
        let body = json!({ "name": "arr", "kind": kind, "config": config });
        let (s, v) = c.post("/api/integrations", &body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {v}");
        assert_eq!(v["code"], "validation_failed", "{v}");
        assert!(
            v["errors"].as_array().is_some_and(|e| e
                .iter()
                .any(|e| e["field"].as_str().is_some_and(|f| f.starts_with("config")))),
            "{v}"
        );
        assert!(!v.to_string().contains(SECRET), "secret quoted back: {v}");
    }
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM integrations", vec![]).await,
        0,
        "an array config was stored"
    );
    app.stop().await;
}

/// Request headers are secret for every HTTP connector (they carry credentials as
/// often as not), and a URL with `user:password@` is refused.
#[tokio::test]
async fn headers_are_secret_and_urls_carry_no_credentials() {
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    const CANARY: &str = "hdr-canary-5e1f07b2";
    let Some(env) = test_env().await else { return };
    let allow = [("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true")];
    let app = env.spawn_app(&allow).await;
    let (stop, worker) = env.spawn_worker(&allow);
    let c = &app.client;
    let source = axum::Router::new().route(
        "/orders",
        axum::routing::get(|h: HeaderMap| async move {
            let ok = h.get("authorization").and_then(|v| v.to_str().ok())
                == Some(&format!("Bearer {CANARY}"));
            if ok {
                axum::Json(json!({ "orders": [{ "id": 1 }] })).into_response()
            } else {
                axum::http::StatusCode::UNAUTHORIZED.into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, source).await });
    let id = c
        .create(
            "hdr",
            "http_json",
            json!({ "url": format!("{base}/orders"), "recordsPointer": "/orders", "idPointer": "/id",
                    "headers": { "Authorization": format!("Bearer {CANARY}"), "X-Trace": "1" } }),
            None,
        )
        .await;
    crate::util::eventually(
        std::time::Duration::from_secs(10),
        "a successful run",
        || async {
            let h = c.history(id).await;
            h.first().filter(|r| r["status"] == "SUCCESS").map(|_| ())
        },
    )
    .await;
    let (_, view) = c.get(&format!("/api/integrations/{id}")).await;
    assert_eq!(view["config"]["headers"], "********", "{view}");
    for path in [
        "/api/integrations".to_owned(),
        format!("/api/integrations/{id}"),
        format!("/api/integrations/{id}/audit"),
    ] {
        assert!(
            !c.get(&path).await.1.to_string().contains(CANARY),
            "header value in {path}"
        );
    }
    for table in ["integrations", "audit_events"] {
        let rows = crate::util::strings(
            &env.db,
            &format!("SELECT CAST(t.* AS TEXT) FROM {table} t"),
            vec![],
        )
        .await;
        assert!(
            rows.iter().all(|r| !r.contains(CANARY)),
            "header value in {table}"
        );
    }
    // Credentials in a URL are refused (and not quoted back).
    for (kind, config) in [
        (
            "http_json",
            json!({ "url": format!("http://user:{CANARY}@127.0.0.1:9/x"), "recordsPointer": "/d", "idPointer": "/id" }),
        ),
        (
            "csv",
            json!({ "url": format!("http://user:{CANARY}@127.0.0.1:9/x.csv") }),
        ),
        (
            "csv",
            json!({ "url": format!("http://{CANARY}@127.0.0.1:9/x.csv") }),
        ),
        (
            "google_sheets",
            json!({ "spreadsheetId": "s", "range": "A1:B2", "apiKey": "k", "baseUrl": format!("http://u:{CANARY}@127.0.0.1:9") }),
        ),
    ] {
        let field = if kind == "google_sheets" {
            "config.baseUrl"
        } else {
            "config.url"
        };
        let v = refused(
            c,
            "/api/integrations",
            &json!({ "name": "creds", "kind": kind, "config": config }),
            field,
        )
        .await;
        assert!(
            !v.to_string().contains(CANARY),
            "credential quoted back: {v}"
        );
    }
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// NUL (PostgreSQL cannot store it in text or JSONB) and control characters where they
/// make no sense are refused with 422 before anything is written.
async fn nul_and_control_characters_are_refused(c: &ApiClient) {
    let id = c.create("plain", "synthetic", json!({}), None).await;
    let pause = format!("/api/integrations/{id}/pause");
    refused(c, &pause, &json!({ "reason": "r\u{0}" }), "reason").await;
    let (_, v) = c.get(&format!("/api/integrations/{id}")).await;
    assert_eq!(
        (v["health"].as_str(), v["version"].as_i64()),
        (Some("healthy"), Some(1)),
        "a refused pause changed the integration: {v}"
    );
    let (_, audit) = c.get(&format!("/api/integrations/{id}/audit")).await;
    assert_eq!(audit["events"].as_array().map(Vec::len), Some(1), "{audit}");
    let create = "/api/integrations";
    refused(
        c,
        create,
        &json!({ "name": "a\u{0}", "kind": "synthetic" }),
        "name",
    )
    .await;
    refused(
        c,
        create,
        &json!({ "name": "bell\u{7}", "kind": "synthetic" }),
        "name",
    )
    .await;
    refused(
        c,
        create,
        &json!({ "name": "line\nbreak", "kind": "synthetic" }),
        "name",
    )
    .await;
    refused(
        c,
        create,
        &json!({ "name": "n", "kind": "csv", "config": { "url": "https://example.com/x.csv", "idColumn": "id\u{0}" } }),
        "config.idColumn",
    )
    .await;
    refused(
        c,
        create,
        &json!({ "name": "n", "kind": "csv", "config": { "url": "https://example.com/x.csv", "columns": { "a\u{0}b": "string" } } }),
        "config.columns",
    )
    .await;
    refused(
        c,
        "/api/keys",
        &json!({ "name": "k\u{0}", "role": "viewer" }),
        "name",
    )
    .await;
    refused(
        c,
        "/api/keys",
        &json!({ "name": "k\u{1b}[2J", "role": "viewer" }),
        "name",
    )
    .await;
    let (s, v) = c.get("/api/integrations?q=%00").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["code"], "validation_failed", "{v}");
    // Free text keeps its line breaks and tabs.
    let (s, v) = c
        .post(&pause, &json!({ "reason": "two\nlines\tand a tab" }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = c.get("/api/integrations").await;
    assert_eq!(v["total"], 1, "a refused create wrote: {v}");
}

#[tokio::test]
async fn nul_and_control_characters_are_refused_on_postgres() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("new enabled integrations are due at once and no worker runs them");
    let app = env.spawn_app(&[]).await;
    nul_and_control_characters_are_refused(&app.client).await;
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM api_keys", vec![]).await,
        1,
        "a refused key was stored"
    );
    app.stop().await;
}

#[tokio::test]
async fn nul_and_control_characters_are_refused_on_sqlite() {
    let app = tests::embedded::spawn_standalone(&[]).await;
    nul_and_control_characters_are_refused(&app.client).await;
    app.stop().await;
}

/// A secret field of the wrong type or shape is named with what it should be, never
/// quoted back.
#[tokio::test]
async fn wrongly_typed_secrets_are_not_quoted_back() {
    let Some(env) = test_env().await else { return };
    let app = env
        .spawn_app(&[("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true")])
        .await;
    let c = &app.client;
    const S: &str = "987654321";
    const T: &str = "Sx9-secret-variant";
    let http = |extra: Value| {
        let mut cfg =
            json!({ "url": "http://127.0.0.1:9/x", "recordsPointer": "/d", "idPointer": "/id" });
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        cfg
    };
    for (kind, config, field) in [
        (
            "http_json",
            http(json!({ "auth": { "type": "bearer", "token": 987_654_321 } })),
            "config.auth",
        ),
        (
            "http_json",
            http(json!({ "auth": { "type": T, "token": "x" } })),
            "config.auth",
        ),
        (
            "http_json",
            http(json!({ "auth": { "type": "basic", "username": "u", "password": 987_654_321 } })),
            "config.auth",
        ),
        (
            "http_json",
            http(json!({ "auth": format!("Bearer {T}") })),
            "config.auth",
        ),
        (
            "http_json",
            http(json!({ "headers": { "Authorization": 987_654_321 } })),
            "config.headers",
        ),
        (
            "http_json",
            http(json!({ "headers": format!("Authorization: {T}") })),
            "config.headers",
        ),
        (
            "csv",
            json!({ "url": "http://127.0.0.1:9/x.csv", "headers": { "Authorization": 987_654_321 } }),
            "config.headers",
        ),
        (
            "csv",
            json!({ "url": "http://127.0.0.1:9/x.csv", "headers": format!("Bearer {T}") }),
            "config.headers",
        ),
        (
            "csv",
            json!({ "url": "http://127.0.0.1:9/x.csv", "headers": [T] }),
            "config.headers",
        ),
        (
            "google_sheets",
            json!({ "spreadsheetId": "s", "range": "A:B", "apiKey": 987_654_321 }),
            "config.apiKey",
        ),
        (
            "firestore",
            json!({ "projectId": "p", "collection": "c", "token": 987_654_321 }),
            "config.token",
        ),
        (
            "sql",
            json!({ "url": 987_654_321, "query": "SELECT 1", "idColumn": "id" }),
            "config.url",
        ),
    ] {
        let v = refused(
            c,
            "/api/integrations",
            &json!({ "name": "typed", "kind": kind, "config": config }),
            field,
        )
        .await;
        let text = v.to_string();
        assert!(
            !text.contains(S) && !text.contains(T),
            "a secret quoted back: {v}"
        );
    }
    app.stop().await;
}

/// Sends `body` with `content_type` (none when `None`) as `key`.
async fn send(
    c: &ApiClient,
    method: reqwest::Method,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (StatusCode, Value, Option<String>) {
    let mut req = c
        .http
        .request(method, format!("{}{path}", c.base))
        .bearer_auth(&c.key)
        .body(body.to_owned());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.send().await.expect("request");
    let s = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (s, r.json().await.unwrap_or(Value::Null), ct)
}

fn assert_problem(s: StatusCode, v: &Value, ct: Option<&str>, status: u16, code: &str) {
    assert_eq!(s.as_u16(), status, "{v}");
    assert_eq!(ct, Some("application/problem+json"), "{v}");
    assert_eq!(
        (v["status"].as_u64(), v["code"].as_str()),
        (Some(u64::from(status)), Some(code)),
        "{v}"
    );
}

/// Queries, content types, trailing data, duplicate keys, roles before bodies, and
/// window overflow: each refused with problem+json and the right status.
#[tokio::test]
async fn malformed_requests_get_problem_answers() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("new enabled integrations are due at once and no worker runs them");
    let app = env.spawn_app(&[]).await;
    let c = &app.client;
    let id = c.create("x", "synthetic", json!({}), None).await;
    use reqwest::Method as M;
    // Query strings: 422 problem+json naming the parameter, on every endpoint.
    for (path, field) in [
        ("/api/integrations?pageSize=-1".to_owned(), "pageSize"),
        ("/api/integrations?page=x".to_owned(), "page"),
        (
            "/api/integrations?syncEnabled=maybe".to_owned(),
            "syncEnabled",
        ),
        (
            format!("/api/integrations/{id}/sync-history?pageSize=-1"),
            "pageSize",
        ),
        (
            format!("/api/integrations/{id}/records?includeDeleted=2"),
            "includeDeleted",
        ),
        (
            format!("/api/integrations/{id}/audit?pageSize=1.5"),
            "pageSize",
        ),
        ("/api/integrations?page=1&page=2".to_owned(), "page"),
    ] {
        let (s, v, ct) = send(c, M::GET, &path, None, "").await;
        assert_problem(s, &v, ct.as_deref(), 422, "validation_failed");
        assert!(
            v["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["field"] == field)),
            "{path}: {v}"
        );
    }
    let (s, v, ct) = send(c, M::GET, "/api/integrations?colour=red", None, "").await;
    assert_problem(s, &v, ct.as_deref(), 422, "validation_failed");
    // A window that overflows is refused, not wrapped into another window.
    for w in [
        "144115188075855873d",
        "9223372036854775807s",
        "106751991167301d",
    ] {
        let (s, v, ct) = send(c, M::GET, &format!("/api/sync/stats?window={w}"), None, "").await;
        assert_problem(s, &v, ct.as_deref(), 422, "validation_failed");
    }
    // Bodies: a JSON content type is required.
    let body = r#"{"name":"a","kind":"synthetic"}"#;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let (s, v, got) = send(c, M::POST, "/api/integrations", ct, body).await;
        assert_problem(s, &v, got.as_deref(), 415, "unsupported_media_type");
    }
    let (s, v, _) = send(
        c,
        M::POST,
        "/api/integrations",
        Some("application/json; charset=utf-8"),
        body,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // An optional body may be empty without a content type, but not sent as text.
    let pause = format!("/api/integrations/{id}/pause");
    let (s, v, got) = send(c, M::POST, &pause, Some("text/plain"), r#"{"reason":"r"}"#).await;
    assert_problem(s, &v, got.as_deref(), 415, "unsupported_media_type");
    // Trailing data and duplicate keys.
    for bad in [
        format!("{body} x"),
        format!("{body}{body}"),
        format!("{body},"),
    ] {
        let (s, v, got) = send(
            c,
            M::POST,
            "/api/integrations",
            Some("application/json"),
            &bad,
        )
        .await;
        assert_problem(s, &v, got.as_deref(), 400, "bad_request");
    }
    let dup = r#"{"name":"a","kind":"synthetic","name":"b"}"#;
    let (s, v, got) = send(
        c,
        M::POST,
        "/api/integrations",
        Some("application/json"),
        dup,
    )
    .await;
    assert_problem(s, &v, got.as_deref(), 422, "validation_failed");
    assert_eq!(v["errors"][0]["field"], "name", "{v}");
    let dup = r#"{"name":"a","kind":"synthetic","config":{"records":1,"records":2}}"#;
    let (s, v, _) = send(
        c,
        M::POST,
        "/api/integrations",
        Some("application/json"),
        dup,
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["errors"][0]["field"].as_str()),
        (422, Some("config.records")),
        "{v}"
    );
    // A viewer is refused before its body is read.
    let (_, k) = c
        .post("/api/keys", &json!({ "name": "v", "role": "viewer" }))
        .await;
    let viewer = ApiClient::new(&app.url, k["key"].as_str().unwrap());
    for (method, path, ct, body) in [
        (
            M::POST,
            "/api/integrations".to_owned(),
            Some("application/json"),
            "{not json",
        ),
        (
            M::POST,
            "/api/integrations".to_owned(),
            Some("text/plain"),
            "x",
        ),
        (
            M::PATCH,
            format!("/api/integrations/{id}"),
            Some("application/json"),
            "[1,",
        ),
        (M::POST, "/api/keys".to_owned(), None, "{}"),
        (
            M::POST,
            format!("/api/integrations/{id}/sync"),
            Some("application/json"),
            "nope",
        ),
    ] {
        let (s, v, got) = send(&viewer, method, &path, ct, body).await;
        assert_problem(s, &v, got.as_deref(), 403, "forbidden");
    }
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM integrations", vec![]).await,
        2
    );
    app.stop().await;
}
