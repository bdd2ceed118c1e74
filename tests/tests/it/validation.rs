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
