//! The `firestore` connector against a local server speaking the Firestore REST v1
//! `documents` list format: pagination, every typed value kind, field masks, bearer
//! auth, watermarks, every error class and config validation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use entity::{ConnectorKind, ErrorClass};
use serde_json::{Value, json};
use syncfleet_worker::connectors::firestore::Firestore;
use syncfleet_worker::connectors::{self, ConnectorEnv, FetchContext, FetchError, Fetched};
use syncfleet_worker::net::NetPolicy;
use uuid::Uuid;

const TOKEN: &str = "ya29.a0AfB_byC-fake-oauth-token";
const PROJECT: &str = "acme-pos";
const PAGE_2_TOKEN: &str = "AFTOeJx+mVWt/Hj0X2E6cGFnZS0y==";

/// First page of `outlets/o1/employees`, shaped like a recorded response: every value
/// kind, the zero-value omissions proto3 JSON makes, and a page token that needs
/// query encoding.
const EMPLOYEES_PAGE_1: &str = r#"{
  "documents": [
    {
      "name": "projects/acme-pos/databases/(default)/documents/outlets/o1/employees/emp-001",
      "fields": {
        "displayName": { "stringValue": "Ana Souza" },
        "employeeNo": { "integerValue": "1042" },
        "hourlyRate": { "doubleValue": 18.75 },
        "active": { "booleanValue": true },
        "hiredAt": { "timestampValue": "2024-03-18T09:00:00Z" },
        "terminatedAt": { "nullValue": null },
        "address": {
          "mapValue": {
            "fields": {
              "city": { "stringValue": "Lisboa" },
              "postcode": { "stringValue": "1100-148" },
              "geo": { "geoPointValue": { "latitude": 38.7223, "longitude": -9.1393 } }
            }
          }
        },
        "roles": { "arrayValue": { "values": [ { "stringValue": "cashier" }, { "stringValue": "supervisor" } ] } },
        "outlet": { "referenceValue": "projects/acme-pos/databases/(default)/documents/outlets/o1" },
        "badgePhoto": { "bytesValue": "iVBORw0KGgoAAAANSUhEUg==" },
        "updatedAt": { "timestampValue": "2026-03-01T09:00:00Z" }
      },
      "createTime": "2024-03-18T09:00:01.204512Z",
      "updateTime": "2026-03-01T09:00:00.481920Z"
    },
    {
      "name": "projects/acme-pos/databases/(default)/documents/outlets/o1/employees/emp-002",
      "fields": {
        "displayName": { "stringValue": "Bruno Lima" },
        "employeeNo": { "integerValue": "-9007199254740993" },
        "hourlyRate": { "doubleValue": "NaN" },
        "overtimeCap": { "doubleValue": "Infinity" },
        "active": { "booleanValue": false },
        "hiredAt": { "timestampValue": "2025-11-02T14:30:00.123456Z" },
        "terminatedAt": { "nullValue": "NULL_VALUE" },
        "address": { "mapValue": {} },
        "roles": { "arrayValue": {} },
        "shifts": {
          "arrayValue": {
            "values": [
              { "mapValue": { "fields": { "day": { "stringValue": "mon" }, "hours": { "integerValue": "8" } } } },
              { "nullValue": null },
              { "arrayValue": { "values": [ { "integerValue": "1" }, { "doubleValue": 0.5 } ] } }
            ]
          }
        },
        "home": { "geoPointValue": { "longitude": -43.1729 } },
        "updatedAt": { "timestampValue": "2026-03-01T09:00:00.250Z" }
      },
      "createTime": "2025-11-02T14:30:00.999001Z",
      "updateTime": "2026-03-01T09:00:00.250113Z"
    }
  ],
  "nextPageToken": "AFTOeJx+mVWt/Hj0X2E6cGFnZS0y=="
}"#;

/// Last page: no `nextPageToken`, and a document without any fields.
const EMPLOYEES_PAGE_2: &str = r#"{
  "documents": [
    {
      "name": "projects/acme-pos/databases/(default)/documents/outlets/o1/employees/emp-003",
      "fields": {
        "displayName": { "stringValue": "Carla Mendes" },
        "employeeNo": { "integerValue": "1077" },
        "active": { "booleanValue": true },
        "updatedAt": { "timestampValue": "2026-02-27T17:45:00Z" }
      },
      "createTime": "2026-02-27T17:45:00.310000Z",
      "updateTime": "2026-02-27T17:45:00.310000Z"
    },
    {
      "name": "projects/acme-pos/databases/(default)/documents/outlets/o1/employees/emp-004",
      "createTime": "2026-02-28T08:00:00.000001Z",
      "updateTime": "2026-02-28T08:00:00.000001Z"
    }
  ]
}"#;

const SECURED_PAGE: &str = r#"{
  "documents": [
    {
      "name": "projects/acme-pos/databases/(default)/documents/payroll/p-2026-02",
      "fields": { "total": { "doubleValue": 48211.4 } },
      "createTime": "2026-03-01T00:00:00.100000Z",
      "updateTime": "2026-03-01T00:00:00.100000Z"
    }
  ]
}"#;

/// A value type this connector does not know (a newer API), deep inside a map.
const UNKNOWN_TYPE_PAGE: &str = r#"{
  "documents": [
    {
      "name": "projects/acme-pos/databases/(default)/documents/products/sku-88",
      "fields": {
        "title": { "stringValue": "Espresso" },
        "search": { "mapValue": { "fields": { "embedding": { "vectorValue": { "values": [0.1, 0.2] } } } } }
      },
      "createTime": "2026-01-05T10:00:00Z",
      "updateTime": "2026-01-05T10:00:00Z"
    }
  ]
}"#;

const BAD_INTEGER_PAGE: &str = r#"{
  "documents": [
    {
      "name": "projects/acme-pos/databases/(default)/documents/stock/st-1",
      "fields": { "levels": { "arrayValue": { "values": [ { "integerValue": "12" }, { "integerValue": "12.5kg" } ] } } },
      "createTime": "2026-01-05T10:00:00Z",
      "updateTime": "2026-01-05T10:00:00Z"
    }
  ]
}"#;

fn google_error(code: u16, status: &str, message: &str) -> String {
    json!({ "error": { "code": code, "message": message, "status": status } }).to_string()
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: Vec<(String, String)>,
    auth: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [("content-type", "application/json; charset=UTF-8")],
        body,
    )
        .into_response()
}

/// Keeps only the top-level fields named in the mask, as Firestore does.
fn apply_mask(page: &str, mask: &[String]) -> String {
    let mut v: Value = serde_json::from_str(page).unwrap();
    if !mask.is_empty() {
        for doc in v["documents"].as_array_mut().unwrap() {
            if let Some(fields) = doc.get_mut("fields").and_then(Value::as_object_mut) {
                fields.retain(|k, _| mask.contains(k));
            }
        }
    }
    v.to_string()
}

async fn handle(State(log): State<Log>, uri: Uri, headers: HeaderMap) -> Response {
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    log.lock().unwrap().push(Seen {
        path: uri.path().to_owned(),
        query: query.clone(),
        auth: auth.clone(),
    });
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let mask: Vec<String> = query
        .iter()
        .filter(|(n, _)| n == "mask.fieldPaths")
        .map(|(_, v)| v.clone())
        .collect();
    let prefix = format!("/v1/projects/{PROJECT}/databases/(default)/documents/");
    let Some(collection) = uri.path().strip_prefix(&prefix) else {
        return json_response(
            StatusCode::NOT_FOUND,
            google_error(404, "NOT_FOUND", "Project or database not found."),
        );
    };
    match collection {
        "outlets/o1/employees" => match param("pageToken") {
            None => json_response(StatusCode::OK, apply_mask(EMPLOYEES_PAGE_1, &mask)),
            Some(PAGE_2_TOKEN) => json_response(StatusCode::OK, apply_mask(EMPLOYEES_PAGE_2, &mask)),
            Some(_) => json_response(
                StatusCode::BAD_REQUEST,
                google_error(400, "INVALID_ARGUMENT", "Invalid page token."),
            ),
        },
        "payroll" => {
            if auth.as_deref() == Some(&format!("Bearer {TOKEN}")) {
                json_response(StatusCode::OK, SECURED_PAGE.to_owned())
            } else {
                json_response(
                    StatusCode::UNAUTHORIZED,
                    google_error(
                        401,
                        "UNAUTHENTICATED",
                        "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                    ),
                )
            }
        }
        "empty" => json_response(StatusCode::OK, "{}".to_owned()),
        "busy" => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "7"), ("content-type", "application/json")],
            google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded."),
        )
            .into_response(),
        "down" => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            google_error(503, "UNAVAILABLE", "The service is currently unavailable."),
        ),
        "garbage" => (StatusCode::OK, "<html><body>Login required</body></html>").into_response(),
        "wrongshape" => json_response(
            StatusCode::OK,
            r#"{"documents": {"name": "projects/acme-pos/databases/(default)/documents/wrongshape/x"}}"#.to_owned(),
        ),
        "products" => json_response(StatusCode::OK, UNKNOWN_TYPE_PAGE.to_owned()),
        "stock" => json_response(StatusCode::OK, BAD_INTEGER_PAGE.to_owned()),
        "loop" => json_response(StatusCode::OK, r#"{"documents": [], "nextPageToken": "same"}"#.to_owned()),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            json_response(StatusCode::OK, "{}".to_owned())
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            google_error(404, "NOT_FOUND", "Collection not found."),
        ),
    }
}

async fn serve() -> (String, Log) {
    let log: Log = Arc::default();
    let app = Router::new().fallback(handle).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), log)
}

fn env() -> ConnectorEnv {
    ConnectorEnv {
        net: NetPolicy {
            allow_private: true,
            allowed: vec![],
        },
    }
}

fn ctx(watermark: Option<&str>) -> FetchContext {
    FetchContext {
        integration_id: Uuid::now_v7(),
        run_id: Uuid::now_v7(),
        attempt: 1,
        previous_runs: 0,
        watermark: watermark.map(str::to_owned),
        gate: None,
    }
}

fn cfg(base: &str, collection: &str) -> Value {
    json!({ "projectId": PROJECT, "collection": collection, "baseUrl": base })
}

async fn fetch(config: Value) -> Result<Fetched, FetchError> {
    let c = connectors::build(ConnectorKind::Firestore, &config, &env()).expect("valid config");
    c.fetch(&ctx(None)).await
}

fn values<'a>(seen: &'a Seen, name: &str) -> Vec<&'a str> {
    seen.query
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test]
async fn two_pages_decode_every_value_kind() {
    let (base, log) = serve().await;
    let mut config = cfg(&base, "outlets/o1/employees");
    config["pageSize"] = json!(2);
    config["watermarkField"] = json!("updatedAt");
    let f = fetch(config).await.unwrap();

    let ids: Vec<&str> = f.records.iter().map(|r| r.external_id.as_str()).collect();
    assert_eq!(ids, ["emp-001", "emp-002", "emp-003", "emp-004"]);
    assert!(f.full, "a list is the whole collection");
    assert_eq!(
        f.records[0].data,
        json!({
            "displayName": "Ana Souza",
            "employeeNo": 1042,
            "hourlyRate": 18.75,
            "active": true,
            "hiredAt": "2024-03-18T09:00:00Z",
            "terminatedAt": null,
            "address": {
                "city": "Lisboa",
                "postcode": "1100-148",
                "geo": { "latitude": 38.7223, "longitude": -9.1393 }
            },
            "roles": ["cashier", "supervisor"],
            "outlet": "projects/acme-pos/databases/(default)/documents/outlets/o1",
            "badgePhoto": "iVBORw0KGgoAAAANSUhEUg==",
            "updatedAt": "2026-03-01T09:00:00Z",
            "_updateTime": "2026-03-01T09:00:00.481920Z"
        })
    );
    assert_eq!(
        f.records[1].data,
        json!({
            "displayName": "Bruno Lima",
            "employeeNo": -9_007_199_254_740_993_i64,
            "hourlyRate": null,
            "overtimeCap": null,
            "active": false,
            "hiredAt": "2025-11-02T14:30:00.123456Z",
            "terminatedAt": null,
            "address": {},
            "roles": [],
            "shifts": [ { "day": "mon", "hours": 8 }, null, [1, 0.5] ],
            "home": { "latitude": 0.0, "longitude": -43.1729 },
            "updatedAt": "2026-03-01T09:00:00.250Z",
            "_updateTime": "2026-03-01T09:00:00.250113Z"
        })
    );
    assert_eq!(
        f.records[1].data.to_value().unwrap()["employeeNo"].as_i64(),
        Some(-9_007_199_254_740_993)
    );
    assert_eq!(
        f.records[2].data,
        json!({
            "displayName": "Carla Mendes",
            "employeeNo": 1077,
            "active": true,
            "updatedAt": "2026-02-27T17:45:00Z",
            "_updateTime": "2026-02-27T17:45:00.310000Z"
        })
    );
    assert_eq!(
        f.records[3].data,
        json!({ "_updateTime": "2026-02-28T08:00:00.000001Z" })
    );
    // As text "…:00Z" > "…:00.250Z"; as instants the fraction is later.
    assert_eq!(f.watermark.as_deref(), Some("2026-03-01T09:00:00.250Z"));

    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert_eq!(
            s.path,
            "/v1/projects/acme-pos/databases/(default)/documents/outlets/o1/employees"
        );
        assert_eq!(values(s, "pageSize"), ["2"]);
        assert!(values(s, "mask.fieldPaths").is_empty());
        assert_eq!(s.auth, None, "no token configured, no header");
    }
    assert!(values(&seen[0], "pageToken").is_empty());
    assert_eq!(values(&seen[1], "pageToken"), [PAGE_2_TOKEN]);
}

#[tokio::test]
async fn the_watermark_never_moves_backwards() {
    let (base, _) = serve().await;
    let mut config = cfg(&base, "outlets/o1/employees");
    config["watermarkField"] = json!("updatedAt");
    let c = connectors::build(ConnectorKind::Firestore, &config, &env()).unwrap();
    let later = "2026-04-01T00:00:00Z";
    let f = c.fetch(&ctx(Some(later))).await.unwrap();
    assert_eq!(f.watermark.as_deref(), Some(later));
    assert!(f.full);
    // Without a watermark field there is none.
    let f = fetch(cfg(&base, "outlets/o1/employees")).await.unwrap();
    assert_eq!(f.watermark, None);
}

#[tokio::test]
async fn field_mask_is_sent_as_repeated_params() {
    let (base, log) = serve().await;
    let mut config = cfg(&base, "outlets/o1/employees");
    config["fieldMask"] = json!(["displayName", "active"]);
    config["watermarkField"] = json!("updatedAt");
    let f = fetch(config).await.unwrap();

    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        // The watermark field is added so the mask cannot hide it.
        assert_eq!(
            values(s, "mask.fieldPaths"),
            ["displayName", "active", "updatedAt"]
        );
        assert_eq!(values(s, "pageSize"), ["300"], "the default page size");
    }
    // The server applied the mask it received: only those fields came back.
    assert_eq!(
        f.records[0].data,
        json!({
            "displayName": "Ana Souza",
            "active": true,
            "updatedAt": "2026-03-01T09:00:00Z",
            "_updateTime": "2026-03-01T09:00:00.481920Z"
        })
    );
    assert_eq!(
        f.records[3].data,
        json!({ "_updateTime": "2026-02-28T08:00:00.000001Z" })
    );
    assert_eq!(f.watermark.as_deref(), Some("2026-03-01T09:00:00.250Z"));
}

#[tokio::test]
async fn bearer_token_is_sent_and_a_wrong_one_is_auth() {
    let (base, log) = serve().await;
    let mut config = cfg(&base, "payroll");
    config["token"] = json!(TOKEN);
    let f = fetch(config.clone()).await.unwrap();
    assert_eq!(f.records.len(), 1);
    assert_eq!(f.records[0].external_id, "p-2026-02");
    assert_eq!(
        f.records[0].data.to_value().unwrap()["total"],
        json!(48211.4)
    );
    assert_eq!(
        log.lock().unwrap()[0].auth.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    let wrong = "ya29.wrong-token-value";
    config["token"] = json!(wrong);
    let e = fetch(config.clone()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth, "{}", e.message);
    assert!(
        !e.message.contains(wrong) && !e.message.contains(TOKEN),
        "secret in error: {}",
        e.message
    );

    config.as_object_mut().unwrap().remove("token");
    let e = fetch(config).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth, "{}", e.message);

    // Debug output of a configured connector hides the token too.
    let mut config = cfg(&base, "payroll");
    config["token"] = json!(TOKEN);
    let c = Firestore::from_config(&config, None).unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains(TOKEN), "{dbg}");
}

#[tokio::test]
async fn empty_collection_is_a_full_empty_fetch() {
    let (base, _) = serve().await;
    let mut config = cfg(&base, "empty");
    config["watermarkField"] = json!("updatedAt");
    let f = fetch(config).await.unwrap();
    assert_eq!(
        f,
        Fetched {
            records: vec![],
            full: true,
            watermark: None
        }
    );
}

#[tokio::test]
async fn rate_limited_carries_retry_after() {
    let (base, _) = serve().await;
    let e = fetch(cfg(&base, "busy")).await.unwrap_err();
    assert_eq!(
        (e.class, e.retry_after),
        (ErrorClass::RateLimited, Some(Duration::from_secs(7)))
    );
}

#[tokio::test]
async fn unavailable_is_transient_and_other_statuses_have_their_class() {
    let (base, _) = serve().await;
    assert_eq!(
        fetch(cfg(&base, "down")).await.unwrap_err().class,
        ErrorClass::Transient
    );
    // Unknown collection or project: a configuration problem.
    assert_eq!(
        fetch(cfg(&base, "nowhere")).await.unwrap_err().class,
        ErrorClass::Config
    );
    let mut other_project = cfg(&base, "outlets/o1/employees");
    other_project["projectId"] = json!("someone-else");
    assert_eq!(
        fetch(other_project).await.unwrap_err().class,
        ErrorClass::Config
    );
    let mut slow = cfg(&base, "slow");
    slow["timeoutMs"] = json!(300);
    assert_eq!(fetch(slow).await.unwrap_err().class, ErrorClass::Timeout);
}

#[tokio::test]
async fn malformed_payload_is_source_data() {
    let (base, _) = serve().await;
    for collection in ["garbage", "wrongshape", "loop"] {
        let e = fetch(cfg(&base, collection)).await.unwrap_err();
        assert_eq!(
            e.class,
            ErrorClass::SourceData,
            "{collection}: {}",
            e.message
        );
    }
}

#[tokio::test]
async fn unknown_value_type_is_source_data_naming_the_field() {
    let (base, _) = serve().await;
    let e = fetch(cfg(&base, "products")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::SourceData);
    assert!(e.message.contains("products/sku-88"), "{}", e.message);
    assert!(e.message.contains("search.embedding"), "{}", e.message);
    assert!(e.message.contains("vectorValue"), "{}", e.message);

    let e = fetch(cfg(&base, "stock")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::SourceData);
    assert!(e.message.contains("levels[1]"), "{}", e.message);
    assert!(e.message.contains("integerValue"), "{}", e.message);
}

#[tokio::test]
async fn config_validation_lists_every_bad_field() {
    let errs = connectors::validate(
        ConnectorKind::Firestore,
        &json!({
            "projectId": "Acme_POS",
            "collection": "outlets/o1",
            "pageSize": 0,
            "colection": "employees",
            "timeoutMs": 5,
            "databaseId": "Default",
            "fieldMask": [],
            "baseUrl": "ftp://firestore.example",
            "token": 424242
        }),
    )
    .unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    for f in [
        "config.projectId",
        "config.collection",
        "config.pageSize",
        "config.colection",
        "config.timeoutMs",
        "config.databaseId",
        "config.fieldMask",
        "config.baseUrl",
        "config.token",
    ] {
        assert!(fields.contains(&f), "{f} not reported: {errs:?}");
    }
    assert!(
        errs.iter().all(|e| !e.message.contains("424242")),
        "secret echoed: {errs:?}"
    );

    let errs = connectors::validate(ConnectorKind::Firestore, &json!({})).unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["config.projectId", "config.collection"]);

    for bad in [
        "/employees",
        "employees/",
        "outlets//employees",
        "outlets/../employees",
    ] {
        let errs = connectors::validate(
            ConnectorKind::Firestore,
            &json!({ "projectId": PROJECT, "collection": bad }),
        )
        .unwrap_err();
        assert_eq!(errs[0].field, "config.collection", "{bad}");
    }
    let errs = connectors::validate(
        ConnectorKind::Firestore,
        &json!({ "projectId": PROJECT, "collection": "employees", "token": "has space" }),
    )
    .unwrap_err();
    assert_eq!(errs[0].field, "config.token");
    assert!(!errs[0].message.contains("has space"));
    assert!(connectors::validate(ConnectorKind::Firestore, &json!("employees")).is_err());

    // A minimal config is valid and points at Google with the default database.
    let ok = json!({ "projectId": PROJECT, "collection": "outlets/o1/employees" });
    connectors::validate(ConnectorKind::Firestore, &ok).unwrap();
    assert_eq!(
        connectors::urls(ConnectorKind::Firestore, &ok)
            .iter()
            .map(url::Url::as_str)
            .collect::<Vec<_>>(),
        [
            "https://firestore.googleapis.com/v1/projects/acme-pos/databases/(default)/documents/outlets/o1/employees"
        ]
    );
    let named = json!({ "projectId": PROJECT, "collection": "e", "databaseId": "eu-db", "baseUrl": "http://emulator:8080/" });
    assert_eq!(
        connectors::urls(ConnectorKind::Firestore, &named)[0].as_str(),
        "http://emulator:8080/v1/projects/acme-pos/databases/eu-db/documents/e"
    );
}

#[tokio::test]
async fn the_guard_refuses_loopback_without_permission() {
    let (base, log) = serve().await;
    let c = connectors::build(
        ConnectorKind::Firestore,
        &cfg(&base, "outlets/o1/employees"),
        &ConnectorEnv::default(),
    )
    .unwrap();
    let e = c.fetch(&ctx(None)).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Config, "{}", e.message);
    assert!(e.message.contains("refused"), "{}", e.message);
    assert!(
        log.lock().unwrap().is_empty(),
        "the guard let a request through"
    );
}
