//! The served OpenAPI document describes every answer an endpoint really gives and
//! every bound it enforces: each operation is probed with the requests a client (or a
//! tool like schemathesis) sends, and each status it answers must be documented there.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::env::test_env;
use uuid::Uuid;

use crate::util::eventually;

struct Probe<'a> {
    base: &'a str,
    key: &'a str,
}

impl Probe<'_> {
    async fn send(
        &self,
        method: &Method,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> StatusCode {
        let http = reqwest::Client::new();
        let mut req = http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(k) = key.or(Some(self.key)).filter(|k| !k.is_empty()) {
            req = req.bearer_auth(k);
        }
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct).body(b.to_owned());
        }
        req.send().await.expect("request").status()
    }
}

fn documented(op: &Value) -> Vec<String> {
    op["responses"]
        .as_object()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

fn assert_documented(op: &Value, what: &str, status: StatusCode) {
    let codes = documented(op);
    assert!(
        codes.iter().any(|c| c == status.as_str()),
        "{what} answered {status}, which its spec does not document ({codes:?})"
    );
    if status.as_u16() >= 400 {
        let resp = &op["responses"][status.as_str()];
        assert!(
            resp["content"]["application/problem+json"]["schema"].is_object(),
            "{what}: {status} is not documented as problem+json: {resp}"
        );
    }
}

fn param<'a>(spec: &'a Value, path: &str, name: &str) -> &'a Value {
    spec["paths"][path]["get"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("{path}: no parameter {name}"))
}

#[tokio::test]
async fn the_spec_documents_every_answer_and_every_bound() {
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
    // Bounds are in the spec, so a request valid by the spec is not refused.
    for (path, name, min, max) in [
        ("/api/integrations", "page", 1, 1_000_000),
        ("/api/integrations", "pageSize", 1, 500),
        ("/api/integrations/{id}/sync-history", "page", 1, 1_000_000),
        ("/api/integrations/{id}/sync-history", "pageSize", 1, 500),
        ("/api/integrations/{id}/records", "pageSize", 1, 500),
        ("/api/integrations/{id}/audit", "pageSize", 1, 500),
    ] {
        let schema = &param(&spec, path, name)["schema"];
        assert_eq!(
            (schema["minimum"].as_i64(), schema["maximum"].as_i64()),
            (Some(min), Some(max)),
            "{path} {name}: {schema}"
        );
    }
    // The window pattern admits exactly the windows the endpoint accepts (≤ 30 days).
    let window = jsonschema::validator_for(&param(&spec, "/api/sync/stats", "window")["schema"])
        .expect("window schema");
    for ok in [
        "1s", "15m", "24h", "30d", "720h", "43200m", "2592000s", "999999s",
    ] {
        assert!(window.is_valid(&json!(ok)), "{ok} refused by the spec");
    }
    for bad in [
        "0d",
        "31d",
        "721h",
        "43201m",
        "2592001s",
        "1w",
        "h",
        "144115188075855873d",
    ] {
        assert!(!window.is_valid(&json!(bad)), "{bad} allowed by the spec");
    }
    let create = &spec["components"]["schemas"]["CreateIntegration"]["properties"];
    assert_eq!(create["name"]["maxLength"], 200, "{create}");
    assert_eq!(create["name"]["minLength"], 1, "{create}");
    assert_eq!(create["maxRetries"]["minimum"], 1, "{create}");
    assert_eq!(create["maxRetries"]["maximum"], 100, "{create}");
    // The tests' interval bounds (min 1 s), read from the configuration.
    assert_eq!(create["syncInterval"]["minimum"], 1, "{create}");
    assert_eq!(create["syncInterval"]["maximum"], 2_592_000, "{create}");
    assert!(
        create["kind"]["enum"]
            .as_array()
            .is_some_and(|k| k.len() == 6),
        "{create}"
    );

    // Real things to point at: an integration with a finished run, a viewer key.
    let id = c.create("probe", "synthetic", json!({}), None).await;
    let run = eventually(
        std::time::Duration::from_secs(10),
        "a finished run",
        || async {
            let h = c.history(id).await;
            h.first()
                .filter(|r| r["status"] == "SUCCESS")
                .and_then(|r| r["id"].as_str().map(str::to_owned))
        },
    )
    .await;
    let (_, k) = c
        .post("/api/keys", &json!({ "name": "v", "role": "viewer" }))
        .await;
    let viewer = k["key"].as_str().unwrap().to_owned();
    let probe = Probe {
        base: &app.url,
        key: &c.key,
    };
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(1_100_000));
    let mut probed = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let concrete = |value: &str| {
                path.replace("{id}", value)
                    .replace("{logId}", value)
                    .replace("{integrationId}", value)
            };
            let real = path
                .replace("{id}", &id.to_string())
                .replace("{logId}", &run)
                .replace("{integrationId}", &id.to_string());
            let has_body = op["requestBody"].is_object();
            let body = has_body.then_some(("application/json", "{}"));
            let what = |w: &str| format!("{method} {path} ({w})");
            // No key.
            let s = probe.send(&m, &real, Some(""), body).await;
            assert_documented(op, &what("no key"), s);
            // A viewer.
            let s = probe.send(&m, &real, Some(&viewer), body).await;
            assert_documented(op, &what("viewer"), s);
            if path.contains('{') {
                let s = probe.send(&m, &concrete("not-a-uuid"), None, body).await;
                assert_documented(op, &what("bad id"), s);
                let s = probe
                    .send(&m, &concrete(&Uuid::now_v7().to_string()), None, body)
                    .await;
                assert_documented(op, &what("unknown id"), s);
            }
            if has_body {
                for (w, b) in [
                    ("wrong content type", ("text/plain", "{}")),
                    ("malformed", ("application/json", "{")),
                    ("unknown field", ("application/json", r#"{"surprise":1}"#)),
                    ("too large", ("application/json", huge.as_str())),
                ] {
                    let s = probe.send(&m, &real, None, Some(b)).await;
                    assert_documented(op, &what(w), s);
                }
            }
            let query: Vec<&Value> = op["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter(|p| p["in"] == "query").collect())
                .unwrap_or_default();
            if !query.is_empty() {
                let s = probe
                    .send(&m, &format!("{real}?surprise=1"), None, None)
                    .await;
                assert_documented(op, &what("unknown parameter"), s);
            }
            for p in query {
                let name = p["name"].as_str().unwrap();
                if let Some(min) = p["schema"]["minimum"].as_i64() {
                    let at = probe
                        .send(&m, &format!("{real}?{name}={min}"), None, None)
                        .await;
                    assert_eq!(at, StatusCode::OK, "{} at its minimum", what(name));
                    let below = probe
                        .send(&m, &format!("{real}?{name}={}", min - 1), None, None)
                        .await;
                    assert_documented(op, &what(&format!("{name} below its minimum")), below);
                }
                if let Some(max) = p["schema"]["maximum"].as_i64() {
                    let at = probe
                        .send(&m, &format!("{real}?{name}={max}"), None, None)
                        .await;
                    assert_eq!(at, StatusCode::OK, "{} at its maximum", what(name));
                    let above = probe
                        .send(&m, &format!("{real}?{name}={}", max + 1), None, None)
                        .await;
                    assert_documented(op, &what(&format!("{name} above its maximum")), above);
                }
            }
            // Every authenticated operation may be rate limited.
            assert!(
                documented(op).iter().any(|c| c == "429"),
                "{method} {path}: no 429"
            );
            probed += 1;
        }
    }
    assert!(probed >= 19, "only {probed} operations in the spec");
    // The conflicts the endpoints really answer.
    let paused = c.create("paused", "synthetic", json!({}), None).await;
    let (s, _) = c
        .post(&format!("/api/integrations/{paused}/pause"), &json!({}))
        .await;
    assert_eq!(s, 200);
    let sync_op = &spec["paths"]["/api/integrations/{id}/sync"]["post"];
    let s = probe
        .send(
            &Method::POST,
            &format!("/api/integrations/{paused}/sync"),
            None,
            Some(("application/json", "{}")),
        )
        .await;
    assert_documented(sync_op, "sync of a paused integration", s);
    for (path, body) in [
        ("/api/integrations/{id}", r#"{"version": 99, "name": "n"}"#),
        (
            "/api/integrations/{id}/sync-settings",
            r#"{"version": 99, "syncEnabled": true}"#,
        ),
    ] {
        let op = &spec["paths"][path]["patch"];
        let s = probe
            .send(
                &Method::PATCH,
                &path.replace("{id}", &id.to_string()),
                None,
                Some(("application/json", body)),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "PATCH {path} with a stale version");
        assert_documented(op, &format!("PATCH {path} with a stale version"), s);
    }
    let retry = &spec["paths"]["/api/sync/retry/{logId}"]["post"];
    let s = probe
        .send(&Method::POST, &format!("/api/sync/retry/{run}"), None, None)
        .await;
    assert_documented(retry, "retry of a successful run", s);
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}
