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
