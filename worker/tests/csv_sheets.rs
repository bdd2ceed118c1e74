//! The `csv` and `google_sheets` connectors against a local server serving realistic
//! fixtures: a Google "publish to web" CSV export, a `;`-separated export, and Sheets
//! API v4 `values.get` answers, with auth, skipped rows and every error class.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use entity::{ConnectorKind, ErrorClass};
use serde_json::{Value, json};
use syncfleet_worker::connectors::{self, ConnectorEnv, FetchContext, FetchError, Fetched};
use syncfleet_worker::net::NetPolicy;
use uuid::Uuid;

/// What "File > Share > Publish to web > CSV" serves: BOM, CRLF, a padded header
/// (unlabelled last column), quoted cells with commas, quotes and line breaks, TRUE /
/// FALSE, a row with a bad number (skipped) and a blank row.
const PUBLISHED_CSV: &str = "\u{feff}Order ID,Customer,Note,Amount,Qty,Paid,Order date,Updated at,\r\n\
1001,\"Smith, Jane\",\"Said \"\"hi\"\"\nand left\",12.50,2,TRUE,2026-03-01,2026-03-01T09:30:00Z,\r\n\
1002,Bob,,7,1,FALSE,2026-03-02,2026-03-02T10:00:00+01:00,\r\n\
1003,Carol,typo in qty,3.00,two,TRUE,2026-03-03,2026-03-03T11:00:00Z,\r\n\
,,,,,,,,\r\n\
1005,\"Dan \"\"D\"\" O'Neil\",\"multi\r\nline, with comma\",0.5, 10 ,true,2026-3-5,2026-03-05T12:00:00.5Z,scratch\r\n";

/// A European export: `;` separators, decimal commas (left as text), an id column and
/// a row without an id.
const SEMICOLON_CSV: &str = "sku;name;price;stock\n\
A-1;\"Widget; large\";1,50;4\n\
B-2;Gadget;2,00;0\n\
;orphan;0,10;1\n\
C-3;\"Gizmo \"\"pro\"\"\";10,00;\n";

const ALL_BAD_CSV: &str = "id,qty\n1,one\n2,two\n";
const DUPLICATE_HEADER_CSV: &str = "id,name,name\n1,a,b\n";
const UNTERMINATED_CSV: &str = "id,note\n1,\"never closed\n2,x\n";

const CSV_SECRET: &str = "csv-header-s3cret";
const API_KEY: &str = "AIzaSyD-test-key-0123456789";
const TOKEN: &str = "ya29.test-bearer-token";
const SHEET_ID: &str = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms";

/// Google's sample sheet as `values.get` returns it: trailing empty cells and rows are
/// dropped, a blank row in the middle is `[]`.
fn class_data() -> Value {
    json!({
        "range": "'Class Data'!A1:F6",
        "majorDimension": "ROWS",
        "values": [
            ["Student Name", "Gender", "Class Level", "Home State", "Major", "Extracurricular Activity"],
            ["Alexandra", "Female", "4. Senior", "CA", "English", "Drama Club"],
            ["Andrew", "Male", "1. Freshman", "SD", "Math"],
            ["Anna", "Female", "1. Freshman", "NC"],
            [],
            ["Becky", "Female", "2. Sophomore", "SD", "", "Baseball"]
        ]
    })
}

fn csv(body: &'static str) -> Response {
    ([("content-type", "text/csv; charset=utf-8")], body).into_response()
}

async fn sheets_values(
    Path((id, range)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    let bearer = h.get("authorization").and_then(|v| v.to_str().ok());
    if q.get("key").map(String::as_str) != Some(API_KEY)
        && bearer != Some(&format!("Bearer {TOKEN}"))
    {
        return (StatusCode::UNAUTHORIZED, "API key not valid").into_response();
    }
    if q.get("majorDimension").map(String::as_str) != Some("ROWS") {
        return (StatusCode::BAD_REQUEST, "majorDimension").into_response();
    }
    match (id.as_str(), range.as_str()) {
        (SHEET_ID, "Class Data!A1:F") => axum::Json(class_data()).into_response(),
        // A `/` in a sheet name must arrive inside the one path segment.
        ("slashed", "'Q3/EU'!A1:B") => {
            axum::Json(json!({ "values": [["id", "v"], ["x", "1"]] })).into_response()
        }
        ("empty", _) => axum::Json(json!({ "range": "Sheet1!A1:Z1000", "majorDimension": "ROWS" }))
            .into_response(),
        ("limited", _) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "30")],
            "Quota exceeded",
        )
            .into_response(),
        ("down", _) => (StatusCode::INTERNAL_SERVER_ERROR, "backend error").into_response(),
        ("garbage", _) => (
            [("content-type", "application/json")],
            "{\"values\": [[\"a\",",
        )
            .into_response(),
        _ => (StatusCode::BAD_REQUEST, "Unable to parse range").into_response(),
    }
}

async fn serve() -> String {
    let app = Router::new()
        .route("/pub.csv", get(|| async { csv(PUBLISHED_CSV) }))
        .route(
            "/export.csv",
            get(|h: HeaderMap| async move {
                if h.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(CSV_SECRET) {
                    return (StatusCode::FORBIDDEN, "no").into_response();
                }
                csv(SEMICOLON_CSV)
            }),
        )
        .route("/all-bad.csv", get(|| async { csv(ALL_BAD_CSV) }))
        .route("/dup.csv", get(|| async { csv(DUPLICATE_HEADER_CSV) }))
        .route("/unterminated.csv", get(|| async { csv(UNTERMINATED_CSV) }))
        .route("/header-only.csv", get(|| async { csv("a,b\r\n") }))
        .route(
            "/latin1.csv",
            get(|| async { (StatusCode::OK, vec![b'a', b'\n', 0xe9, b'\n']) }),
        )
        .route("/v4/spreadsheets/{id}/values/{range}", get(sheets_values));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn env() -> ConnectorEnv {
    ConnectorEnv {
        net: NetPolicy {
            allow_private: true,
            allowed: vec![],
        },
    }
}

fn ctx() -> FetchContext {
    FetchContext {
        integration_id: Uuid::now_v7(),
        run_id: Uuid::now_v7(),
        attempt: 1,
        previous_runs: 0,
        watermark: None,
        gate: None,
    }
}

async fn fetch(kind: ConnectorKind, config: Value) -> Result<Fetched, FetchError> {
    let c = connectors::build(kind, &config, &env()).expect("valid config");
    c.fetch(&ctx()).await
}

fn ids(f: &Fetched) -> Vec<&str> {
    f.records.iter().map(|r| r.external_id.as_str()).collect()
}

fn fields(errs: &[connectors::FieldError]) -> Vec<&str> {
    errs.iter().map(|e| e.field.as_str()).collect()
}

#[tokio::test]
async fn csv_reads_a_published_google_sheet_with_types() {
    let base = serve().await;
    let f = fetch(
        ConnectorKind::Csv,
        json!({
            "url": format!("{base}/pub.csv?output=csv"),
            "columns": { "Amount": "number", "Qty": "integer", "Paid": "bool",
                         "Order date": "date", "Updated at": "datetime" }
        }),
    )
    .await
    .unwrap();
    assert!(f.full);
    // Row 3 (bad Qty) is skipped, row 4 is blank; ids stay the row positions.
    assert_eq!(ids(&f), ["1", "2", "5"]);
    assert_eq!(
        f.records[0].data,
        json!({ "Order ID": "1001", "Customer": "Smith, Jane", "Note": "Said \"hi\"\nand left",
                "Amount": 12.5, "Qty": 2, "Paid": true, "Order date": "2026-03-01",
                "Updated at": "2026-03-01T09:30:00Z", "google_row_id": 1 })
    );
    assert_eq!(f.records[1].data.to_value().unwrap()["Note"], Value::Null);
    assert_eq!(f.records[1].data.to_value().unwrap()["Amount"], json!(7));
    assert_eq!(
        f.records[1].data.to_value().unwrap()["Updated at"],
        json!("2026-03-02T10:00:00+01:00")
    );
    let dan = &f.records[2].data.to_value().unwrap();
    assert_eq!(dan["Customer"], json!("Dan \"D\" O'Neil"));
    assert_eq!(dan["Note"], json!("multi\r\nline, with comma"));
    assert_eq!(
        (&dan["Qty"], &dan["Order date"], &dan["google_row_id"]),
        (&json!(10), &json!("2026-03-05"), &json!(5))
    );
    // The unlabelled last column is not a field.
    assert_eq!(dan.as_object().unwrap().len(), 9);
}

#[tokio::test]
async fn csv_with_semicolons_an_id_column_and_request_headers() {
    let base = serve().await;
    let cfg = json!({
        "url": format!("{base}/export.csv"), "delimiter": ";", "idColumn": "sku",
        "columns": { "stock": "integer" }, "headers": { "X-Api-Key": CSV_SECRET }
    });
    let f = fetch(ConnectorKind::Csv, cfg.clone()).await.unwrap();
    // The row without a sku is skipped.
    assert_eq!(ids(&f), ["A-1", "B-2", "C-3"]);
    assert_eq!(
        f.records[0].data,
        json!({ "sku": "A-1", "name": "Widget; large", "price": "1,50", "stock": 4 })
    );
    assert_eq!(
        f.records[2].data.to_value().unwrap()["name"],
        json!("Gizmo \"pro\"")
    );
    assert_eq!(f.records[2].data.to_value().unwrap()["stock"], Value::Null);
    assert!(
        f.records[0]
            .data
            .to_value()
            .unwrap()
            .get("google_row_id")
            .is_none()
    );

    let mut wrong = cfg;
    wrong["headers"]["X-Api-Key"] = json!("guess");
    let e = fetch(ConnectorKind::Csv, wrong).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(!e.message.contains("guess"), "{}", e.message);
}

#[tokio::test]
async fn csv_source_problems_are_source_data_errors() {
    let base = serve().await;
    let cfg = |path: &str| json!({ "url": format!("{base}{path}") });
    let mut all_bad = cfg("/all-bad.csv");
    all_bad["columns"] = json!({ "qty": "integer" });
    let e = fetch(ConnectorKind::Csv, all_bad).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::SourceData);
    assert!(
        e.message.contains("all 2 data rows") && e.message.contains("`qty` is not an integer"),
        "{}",
        e.message
    );
    let e = fetch(ConnectorKind::Csv, cfg("/dup.csv"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::SourceData);
    assert!(
        e.message.contains("duplicate column `name`"),
        "{}",
        e.message
    );
    let mut no_id = cfg("/pub.csv");
    no_id["idColumn"] = json!("Invoice");
    let e = fetch(ConnectorKind::Csv, no_id).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::SourceData);
    assert!(e.message.contains("`Invoice`"), "{}", e.message);
    let mut missing_typed = cfg("/pub.csv");
    missing_typed["columns"] = json!({ "Total": "number" });
    let e = fetch(ConnectorKind::Csv, missing_typed).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::SourceData);
    for path in ["/unterminated.csv", "/latin1.csv"] {
        let e = fetch(ConnectorKind::Csv, cfg(path)).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::SourceData, "{path}: {}", e.message);
    }
    let header_only = fetch(ConnectorKind::Csv, cfg("/header-only.csv"))
        .await
        .unwrap();
    assert!(header_only.records.is_empty() && header_only.full);
    assert_eq!(
        fetch(ConnectorKind::Csv, cfg("/missing.csv"))
            .await
            .unwrap_err()
            .class,
        ErrorClass::Config
    );
}

#[tokio::test]
async fn csv_config_errors_list_every_field() {
    let errs = connectors::validate(
        ConnectorKind::Csv,
        &json!({
            "url": "file:///etc/passwd", "delimiter": ";;", "idColumn": " ",
            "columns": { "a": "money", "b": "date" }, "headers": { "bad header": "x" },
            "timeoutMs": 5, "maxResponseBytes": 0
        }),
    )
    .unwrap_err();
    let got = fields(&errs);
    for f in [
        "config.url",
        "config.delimiter",
        "config.idColumn",
        "config.columns",
        "config.headers",
        "config.timeoutMs",
        "config.maxResponseBytes",
    ] {
        assert!(got.contains(&f), "{f} not reported: {got:?}");
    }
    assert!(
        errs.iter()
            .any(|e| e.message.contains("`a`") && e.message.contains("money"))
    );
    for bad_delim in ["\"", "\n", "é", ""] {
        let errs = connectors::validate(
            ConnectorKind::Csv,
            &json!({ "url": "https://x.test/a.csv", "delimiter": bad_delim }),
        )
        .unwrap_err();
        assert_eq!(fields(&errs), ["config.delimiter"], "{bad_delim:?}");
    }
    assert!(
        connectors::validate(
            ConnectorKind::Csv,
            &json!({ "url": "https://x.test/a.csv", "sheet": 1 })
        )
        .is_err()
    );
    let tab = json!({ "url": "https://x.test/a.tsv", "delimiter": "\t" });
    assert!(connectors::validate(ConnectorKind::Csv, &tab).is_ok());
    assert_eq!(
        connectors::urls(ConnectorKind::Csv, &tab),
        [url::Url::parse("https://x.test/a.tsv").unwrap()]
    );
}

#[tokio::test]
async fn sheets_with_an_api_key_reads_short_rows_as_nulls() {
    let base = serve().await;
    let cfg = json!({ "spreadsheetId": SHEET_ID, "range": "Class Data!A1:F", "apiKey": API_KEY, "baseUrl": base });
    let f = fetch(ConnectorKind::GoogleSheets, cfg.clone())
        .await
        .unwrap();
    assert!(f.full);
    // The blank row 4 is not a record, but keeps its number.
    assert_eq!(ids(&f), ["1", "2", "3", "5"]);
    assert_eq!(
        f.records[1].data,
        json!({ "Student Name": "Andrew", "Gender": "Male", "Class Level": "1. Freshman",
                "Home State": "SD", "Major": "Math", "Extracurricular Activity": null,
                "google_row_id": 2 })
    );
    assert_eq!(f.records[2].data.to_value().unwrap()["Major"], Value::Null);
    assert_eq!(f.records[3].data.to_value().unwrap()["Major"], Value::Null);
    assert_eq!(
        f.records[3].data.to_value().unwrap()["google_row_id"],
        json!(5)
    );

    let mut wrong = cfg;
    wrong["apiKey"] = json!("AIza-wrong-key");
    let e = fetch(ConnectorKind::GoogleSheets, wrong).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(
        !e.message.contains("AIza-wrong-key") && !e.message.contains("key="),
        "key in error: {}",
        e.message
    );
}

#[tokio::test]
async fn sheets_with_a_bearer_token_and_an_id_column() {
    let base = serve().await;
    let f = fetch(
        ConnectorKind::GoogleSheets,
        json!({ "spreadsheetId": SHEET_ID, "range": "Class Data!A1:F", "token": TOKEN,
                "baseUrl": base, "idColumn": "Student Name" }),
    )
    .await
    .unwrap();
    assert_eq!(ids(&f), ["Alexandra", "Andrew", "Anna", "Becky"]);
    assert!(
        f.records[0]
            .data
            .to_value()
            .unwrap()
            .get("google_row_id")
            .is_none()
    );
    // Sheet names with `/` and quotes travel as one encoded path segment.
    let f = fetch(
        ConnectorKind::GoogleSheets,
        json!({ "spreadsheetId": "slashed", "range": "'Q3/EU'!A1:B", "token": TOKEN,
                "baseUrl": base, "idColumn": "id" }),
    )
    .await
    .unwrap();
    assert_eq!(f.records[0].data, json!({ "id": "x", "v": "1" }));
    let e = fetch(
        ConnectorKind::GoogleSheets,
        json!({ "spreadsheetId": SHEET_ID, "range": "Class Data!A1:F", "token": "ya29.expired", "baseUrl": base }),
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(!e.message.contains("ya29"), "{}", e.message);
}

#[tokio::test]
async fn sheets_empty_sheet_has_no_records() {
    let base = serve().await;
    let f = fetch(
        ConnectorKind::GoogleSheets,
        json!({ "spreadsheetId": "empty", "range": "Sheet1", "apiKey": API_KEY, "baseUrl": base }),
    )
    .await
    .unwrap();
    assert!(f.records.is_empty() && f.full);
}

#[tokio::test]
async fn sheets_failures_have_their_class_and_no_secret() {
    let base = serve().await;
    let cfg = |id: &str| json!({ "spreadsheetId": id, "range": "Sheet1!A:Z", "apiKey": API_KEY, "baseUrl": base });
    let limited = fetch(ConnectorKind::GoogleSheets, cfg("limited"))
        .await
        .unwrap_err();
    assert_eq!(
        (limited.class, limited.retry_after),
        (ErrorClass::RateLimited, Some(Duration::from_secs(30)))
    );
    let mut errors = vec![limited];
    for (id, class) in [
        ("down", ErrorClass::Transient),
        ("garbage", ErrorClass::SourceData),
        ("bad-range", ErrorClass::Config),
    ] {
        let e = fetch(ConnectorKind::GoogleSheets, cfg(id))
            .await
            .unwrap_err();
        assert_eq!(e.class, class, "{id}: {}", e.message);
        errors.push(e);
    }
    // Nothing listens here: a transport error, whose text could quote the whole URL.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut unreachable = cfg(SHEET_ID);
    unreachable["baseUrl"] = json!(dead);
    let e = fetch(ConnectorKind::GoogleSheets, unreachable)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient, "{}", e.message);
    errors.push(e);
    for e in errors {
        assert!(!e.message.contains(API_KEY), "key in error: {}", e.message);
    }
}

#[tokio::test]
async fn sheets_config_errors_list_every_field() {
    let errs = connectors::validate(
        ConnectorKind::GoogleSheets,
        &json!({ "spreadsheetId": "not/an id", "range": " ", "apiKey": API_KEY, "token": TOKEN,
                 "baseUrl": "ftp://sheets.test", "idColumn": "", "timeoutMs": 700000 }),
    )
    .unwrap_err();
    let got = fields(&errs);
    for f in [
        "config.spreadsheetId",
        "config.range",
        "config.token",
        "config.baseUrl",
        "config.idColumn",
        "config.timeoutMs",
    ] {
        assert!(got.contains(&f), "{f} not reported: {got:?}");
    }
    let errs = connectors::validate(
        ConnectorKind::GoogleSheets,
        &json!({ "spreadsheetId": SHEET_ID, "range": "A:B" }),
    )
    .unwrap_err();
    assert_eq!(fields(&errs), ["config.apiKey"]);
    // A secret of the wrong type is reported without echoing it.
    let errs = connectors::validate(
        ConnectorKind::GoogleSheets,
        &json!({ "spreadsheetId": SHEET_ID, "range": "A:B", "apiKey": 987_654_321 }),
    )
    .unwrap_err();
    assert_eq!(fields(&errs), ["config.apiKey"]);
    assert!(errs.iter().all(|e| !e.message.contains("987654321")));

    let ok = json!({ "spreadsheetId": SHEET_ID, "range": "A:B", "token": TOKEN });
    assert!(connectors::validate(ConnectorKind::GoogleSheets, &ok).is_ok());
    assert_eq!(
        connectors::urls(ConnectorKind::GoogleSheets, &ok),
        [url::Url::parse("https://sheets.googleapis.com").unwrap()]
    );
}

/// A short secret is not "redacted" out of ordinary words (which would reveal it and
/// its length), and a long one takes its whole word with it.
#[tokio::test]
async fn redaction_reveals_neither_a_short_secret_nor_its_length() {
    let c = |key: &str| {
        connectors::build(
            ConnectorKind::GoogleSheets,
            // localhost resolves to loopback, which the default policy refuses.
            &json!({ "spreadsheetId": SHEET_ID, "range": "A:B", "apiKey": key, "baseUrl": "http://localhost:9" }),
            &ConnectorEnv::default(),
        )
        .expect("valid config")
    };
    let e = c("k").fetch(&ctx()).await.unwrap_err();
    assert!(
        e.message.contains("loopback") && !e.message.contains("redacted"),
        "{}",
        e.message
    );
    // A key that is a whole word of the message goes whole.
    let e = c("loopback").fetch(&ctx()).await.unwrap_err();
    assert!(!e.message.contains("loopback"), "{}", e.message);
    assert!(!e.message.contains("[redacted]]"), "{}", e.message);
}
