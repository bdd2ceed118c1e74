//! The `http_json` connector against a local server speaking JSON: pagination (next
//! link, cursor, page numbers), auth, incremental watermark, and every error class.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use entity::{ConnectorKind, ErrorClass};
use serde_json::{Value, json};
use syncfleet_worker::connectors::{self, ConnectorEnv, FetchContext};
use syncfleet_worker::net::NetPolicy;
use syncfleet_worker::ratelimit::{Limiter, RequestGate, parse_limits};
use uuid::Uuid;

const TOKEN: &str = "s3cret-token";

fn item(i: u64) -> Value {
    json!({ "id": i, "name": format!("sale {i}"), "total": i * 10, "updatedAt": format!("2026-11-{:02}T00:00:00Z", 1 + i % 28) })
}

async fn serve() -> String {
    let app = Router::new()
        .route(
            "/sales",
            get(|h: HeaderMap, Query(q): Query<std::collections::HashMap<String, String>>| async move {
                if h.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
                    return (StatusCode::UNAUTHORIZED, "no").into_response();
                }
                let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                let items: Vec<Value> = ((page - 1) * 3 + 1..=(page * 3).min(7)).map(item).collect();
                let next = if page * 3 < 7 { json!(format!("/sales?page={}", page + 1)) } else { Value::Null };
                axum::Json(json!({ "data": { "items": items }, "links": { "next": next } })).into_response()
            }),
        )
        .route(
            "/cursor",
            get(|Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let at: u64 = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
                let items: Vec<Value> = (at + 1..=(at + 4).min(10)).map(item).collect();
                let next = if at + 4 < 10 { json!((at + 4).to_string()) } else { Value::Null };
                axum::Json(json!({ "results": items, "meta": { "next_cursor": next } }))
            }),
        )
        .route(
            "/pages",
            get(|Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let page: u64 = q.get("p").and_then(|p| p.parse().ok()).unwrap_or(0);
                let items: Vec<Value> = if page < 3 { (page * 2 + 1..=page * 2 + 2).map(item).collect() } else { vec![] };
                axum::Json(json!(items))
            }),
        )
        .route(
            "/since",
            get(|Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let since = q.get("updated_since").cloned().unwrap_or_default();
                let items: Vec<Value> =
                    (1..=5).map(item).filter(|i| i["updatedAt"].as_str().unwrap() > since.as_str()).collect();
                axum::Json(json!({ "items": items }))
            }),
        )
        .route("/fail", get(|| async { (StatusCode::BAD_GATEWAY, "upstream down") }))
        .route(
            "/limited",
            get(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down") }),
        )
        .route("/garbage", get(|| async { "<html>not json</html>" }))
        .route("/noarray", get(|| async { axum::Json(json!({ "items": "nope" })) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                axum::Json(json!({ "items": [] }))
            }),
        )
        .route("/huge", get(|| async { axum::Json(json!({ "items": vec![item(1); 5000] })) }));
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

async fn fetch(
    config: Value,
    watermark: Option<&str>,
) -> Result<connectors::Fetched, connectors::FetchError> {
    let c = connectors::build(ConnectorKind::HttpJson, &config, &env()).expect("valid config");
    c.fetch(&ctx(watermark)).await
}

#[tokio::test]
async fn next_link_pagination_with_bearer_auth() {
    let base = serve().await;
    let cfg = json!({
        "url": format!("{base}/sales"), "recordsPointer": "/data/items", "idPointer": "/id",
        "auth": { "type": "bearer", "token": TOKEN }, "pagination": { "type": "nextLink", "pointer": "/links/next" }
    });
    let f = fetch(cfg.clone(), None).await.unwrap();
    assert_eq!(f.records.len(), 7);
    assert_eq!(f.records[6].external_id, "7");
    assert_eq!(f.records[6].data, item(7));
    assert!(f.full);
    let mut wrong = cfg;
    wrong["auth"]["token"] = json!("nope");
    let e = fetch(wrong, None).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(
        !e.message.contains("nope") && !e.message.contains(TOKEN),
        "secret in error: {}",
        e.message
    );
}

#[tokio::test]
async fn cursor_and_page_number_pagination() {
    let base = serve().await;
    let f = fetch(
        json!({ "url": format!("{base}/cursor"), "recordsPointer": "/results", "idPointer": "/id",
                "pagination": { "type": "cursor", "pointer": "/meta/next_cursor", "param": "cursor" } }),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        f.records
            .iter()
            .map(|r| r.external_id.as_str())
            .collect::<Vec<_>>(),
        (1..=10).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    let f = fetch(
        json!({ "url": format!("{base}/pages"), "recordsPointer": "", "idPointer": "/id",
                "pagination": { "type": "page", "param": "p", "start": 0 } }),
        None,
    )
    .await
    .unwrap();
    assert_eq!(f.records.len(), 6);
}

#[tokio::test]
async fn incremental_mode_sends_the_watermark_and_returns_the_new_one() {
    let base = serve().await;
    let cfg = json!({ "url": format!("{base}/since"), "recordsPointer": "/items", "idPointer": "/id",
                      "sinceParam": "updated_since", "watermarkPointer": "/updatedAt" });
    let first = fetch(cfg.clone(), None).await.unwrap();
    assert_eq!(first.records.len(), 5);
    assert!(first.full, "a first incremental run has the whole data set");
    assert_eq!(first.watermark.as_deref(), Some("2026-11-06T00:00:00Z"));
    let next = fetch(cfg, Some("2026-11-04T00:00:00Z")).await.unwrap();
    assert_eq!(next.records.len(), 2);
    assert!(!next.full, "incremental runs never delete");
}

#[tokio::test]
async fn each_failure_has_its_class() {
    let base = serve().await;
    let cfg = |path: &str| json!({ "url": format!("{base}{path}"), "recordsPointer": "/items", "idPointer": "/id", "timeoutMs": 300 });
    assert_eq!(
        fetch(cfg("/fail"), None).await.unwrap_err().class,
        ErrorClass::Transient
    );
    let limited = fetch(cfg("/limited"), None).await.unwrap_err();
    assert_eq!(
        (limited.class, limited.retry_after),
        (ErrorClass::RateLimited, Some(Duration::from_secs(7)))
    );
    let garbage = fetch(cfg("/garbage"), None).await.unwrap_err();
    assert_eq!(garbage.class, ErrorClass::SourceData);
    assert!(
        garbage.message.contains("is not JSON"),
        "{}",
        garbage.message
    );
    assert_eq!(
        fetch(cfg("/noarray"), None).await.unwrap_err().class,
        ErrorClass::SourceData
    );
    assert_eq!(
        fetch(cfg("/slow"), None).await.unwrap_err().class,
        ErrorClass::Timeout
    );
    assert_eq!(
        fetch(cfg("/missing"), None).await.unwrap_err().class,
        ErrorClass::Config
    );
    let mut small = cfg("/huge");
    small["maxResponseBytes"] = json!(10_000);
    let e = fetch(small, None).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::SourceData);
    assert!(e.message.contains("exceeds"), "{}", e.message);
}

#[tokio::test]
async fn bad_configs_list_every_field() {
    let errs = connectors::validate(
        ConnectorKind::HttpJson,
        &json!({ "url": "ftp://x", "recordsPointer": "items", "idPointer": "id", "method": "PUT", "timeoutMs": 1 }),
    )
    .unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    for f in [
        "config.url",
        "config.method",
        "config.recordsPointer",
        "config.idPointer",
        "config.timeoutMs",
    ] {
        assert!(fields.contains(&f), "{f} not reported: {fields:?}");
    }
    assert!(connectors::validate(ConnectorKind::HttpJson, &json!({ "url": "https://x" })).is_err());
}

#[tokio::test]
async fn the_guard_refuses_loopback_without_connecting() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let guarded = ConnectorEnv::default();
    for url in [
        format!("http://127.0.0.1:{port}/x"),
        format!("http://localhost:{port}/x"),
        format!("http://[::ffff:127.0.0.1]:{port}/x"),
    ] {
        let c = connectors::build(
            ConnectorKind::HttpJson,
            &json!({ "url": url, "recordsPointer": "", "idPointer": "/id" }),
            &guarded,
        )
        .unwrap();
        let e = c.fetch(&ctx(None)).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Config, "{url}: {}", e.message);
        assert!(e.message.contains("refused"), "{url}: {}", e.message);
    }
    // Nothing ever connected.
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "the guard let a connection through");
    // A redirect to a forbidden address is refused too.
    let allowed_only_2 = ConnectorEnv {
        net: NetPolicy::parse(Some("127.0.0.2/32")).unwrap(),
    };
    let redirector = Router::new().route(
        "/r",
        get(move || async move {
            (
                StatusCode::FOUND,
                [("location", format!("http://127.0.0.1:{port}/x"))],
                "",
            )
        }),
    );
    let l2 = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let a2 = l2.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l2, redirector).await });
    let c = connectors::build(
        ConnectorKind::HttpJson,
        &json!({ "url": format!("http://{a2}/r"), "recordsPointer": "", "idPointer": "/id" }),
        &allowed_only_2,
    )
    .unwrap();
    let e = c.fetch(&ctx(None)).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Config, "{}", e.message);
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "the redirect reached a forbidden address"
    );
}

/// A server of `pages` pages (next links) that notes when each request arrives.
async fn paged_server(pages: u64) -> (String, Arc<Mutex<Vec<Instant>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = Router::new().route(
        "/paged",
        get(
            move |Query(q): Query<std::collections::HashMap<String, String>>| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(Instant::now());
                    let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                    let next = if page < pages {
                        json!(format!("/paged?page={}", page + 1))
                    } else {
                        Value::Null
                    };
                    axum::Json(json!({ "items": [item(page)], "next": next }))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/paged"), seen)
}

/// A gate for `limits`, with the run's first token reserved as the engine does.
async fn gated_ctx(limits: &str, budget: Duration) -> FetchContext {
    let limiter = Limiter::local(parse_limits(limits).unwrap());
    let waits = prometheus::IntCounter::new("waits", "waits").unwrap();
    let gate = RequestGate::new(
        limiter,
        ConnectorKind::HttpJson,
        "http_json:test".into(),
        budget,
        waits,
    );
    gate.reserve(budget).await.unwrap();
    FetchContext {
        gate: Some(gate),
        ..ctx(None)
    }
}

fn paged_config(url: &str) -> Value {
    json!({ "url": url, "recordsPointer": "/items", "idPointer": "/id",
            "pagination": { "type": "nextLink", "pointer": "/next" } })
}

/// The provider's limit holds per request, not per run: six pages at 2/s (burst 1)
/// are spaced at least 500 ms apart.
#[tokio::test]
async fn a_paginated_run_takes_a_token_per_request() {
    let (url, seen) = paged_server(6).await;
    let c = connectors::build(ConnectorKind::HttpJson, &paged_config(&url), &env()).unwrap();
    let f = c
        .fetch(&gated_ctx("http_json=2/1s:1", Duration::from_secs(2)).await)
        .await
        .unwrap();
    assert_eq!(f.records.len(), 6);
    let at = seen.lock().unwrap().clone();
    assert_eq!(at.len(), 6);
    let span = at[5] - at[0];
    // Observed: at most limit * window + burst requests in any window from a request.
    for (i, start) in at.iter().enumerate() {
        for (j, t) in at.iter().enumerate().skip(i + 1) {
            let window = (*t - *start).as_secs_f64() + 0.05;
            let allowed = (2.0 * window).floor() as usize + 1;
            assert!(
                j - i < allowed,
                "{} requests within {window:.3} s exceed 2/s + burst 1",
                j - i + 1
            );
        }
    }
    eprintln!(
        "paginated run: 6 requests in {:.2} s ({:.2}/s after the first; limit 2/s + burst 1)",
        span.as_secs_f64(),
        5.0 / span.as_secs_f64()
    );
    assert!(span >= Duration::from_millis(2400), "{span:?}");
    // Without a gate the same run is not spaced at all.
    let (url, seen) = paged_server(6).await;
    let c = connectors::build(ConnectorKind::HttpJson, &paged_config(&url), &env()).unwrap();
    c.fetch(&ctx(None)).await.unwrap();
    let at = seen.lock().unwrap().clone();
    assert!(at[5] - at[0] < Duration::from_millis(1000));
}

/// A request that would wait past the budget ends the run as rate limited, with the
/// wait as `retry_after`; the reserved first token is used, not drawn twice.
#[tokio::test]
async fn a_request_past_the_wait_budget_is_rate_limited() {
    let (url, seen) = paged_server(3).await;
    let c = connectors::build(ConnectorKind::HttpJson, &paged_config(&url), &env()).unwrap();
    let e = c
        .fetch(&gated_ctx("http_json=1/10s:1", Duration::from_millis(200)).await)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::RateLimited, "{}", e.message);
    let wait = e.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(8) && wait <= Duration::from_secs(10),
        "{wait:?}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the first page went out"
    );
}

/// A source whose records carry the watermark values given in the `marks` query
/// parameter (comma-separated, JSON each), one record per value.
async fn marks_server() -> String {
    let app = Router::new().route(
        "/marks",
        get(
            |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let marks: Vec<Value> = q
                    .get("marks")
                    .map(|m| {
                        m.split(',')
                            .map(|v| serde_json::from_str(v).unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                let items: Vec<Value> = marks
                    .into_iter()
                    .enumerate()
                    .map(|(i, m)| json!({ "id": i, "mark": m }))
                    .collect();
                axum::Json(json!({ "items": items }))
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn marks_config(base: &str, marks: &str) -> Value {
    let mut url = url::Url::parse(&format!("{base}/marks")).unwrap();
    url.query_pairs_mut().append_pair("marks", marks);
    json!({ "url": url.as_str(), "recordsPointer": "/items", "idPointer": "/id",
            "sinceParam": "since", "watermarkPointer": "/mark" })
}

async fn mark_after(
    base: &str,
    marks: &str,
    last: Option<&str>,
) -> Result<Option<String>, connectors::FetchError> {
    fetch(marks_config(base, marks), last)
        .await
        .map(|f| f.watermark)
}

/// Watermarks compare in their own type: numbers as numbers (exactly, integers and
/// decimals alike), RFC 3339 timestamps as instants, anything else as text; a change of
/// type fails the run instead of resetting or freezing the watermark.
#[tokio::test]
async fn watermarks_compare_in_their_own_type() {
    let base = marks_server().await;
    // Integers: "9" > "10" as text; 12 is the largest.
    let twelve = (1..=12)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        mark_after(&base, &twelve, None).await.unwrap().as_deref(),
        Some("12")
    );
    // The stored watermark gained a digit: it must still advance.
    assert_eq!(
        mark_after(&base, "10,11", Some("9"))
            .await
            .unwrap()
            .as_deref(),
        Some("11")
    );
    assert_eq!(
        mark_after(&base, "3,4", Some("10"))
            .await
            .unwrap()
            .as_deref(),
        Some("10"),
        "moved backwards"
    );
    // Numeric strings are numbers too.
    assert_eq!(
        mark_after(&base, r#""9","10""#, None)
            .await
            .unwrap()
            .as_deref(),
        Some("10")
    );
    // Decimals, exactly (beyond f64), and mixed with integers.
    assert_eq!(
        mark_after(&base, "1.5,1.25,-3", None)
            .await
            .unwrap()
            .as_deref(),
        Some("1.5")
    );
    assert_eq!(
        mark_after(
            &base,
            r#""10000000000000000001","10000000000000000000.5""#,
            None
        )
        .await
        .unwrap()
        .as_deref(),
        Some("10000000000000000001")
    );
    assert_eq!(
        mark_after(&base, r#"2,"1e1""#, Some("9.99"))
            .await
            .unwrap()
            .as_deref(),
        Some("1e1")
    );
    // Timestamps as instants: 10:00+02:00 is 08:00Z, before 09:00Z.
    assert_eq!(
        mark_after(
            &base,
            r#""2026-01-01T10:00:00+02:00","2026-01-01T09:00:00Z""#,
            None
        )
        .await
        .unwrap()
        .as_deref(),
        Some("2026-01-01T09:00:00Z")
    );
    assert_eq!(
        mark_after(
            &base,
            r#""2026-01-01T00:00:00.5Z""#,
            Some("2026-01-01T00:00:00Z")
        )
        .await
        .unwrap()
        .as_deref(),
        Some("2026-01-01T00:00:00.5Z")
    );
    // Text as text.
    assert_eq!(
        mark_after(&base, r#""b","abc""#, None)
            .await
            .unwrap()
            .as_deref(),
        Some("b")
    );
    // A type change between runs, or within one, fails the run as source_data.
    for (marks, last) in [
        ("5", Some("2026-01-01T00:00:00Z")),
        (r#""2026-01-02T00:00:00Z""#, Some("17")),
        (r#""v2""#, Some("17")),
        (r#"1,"2026-01-02T00:00:00Z""#, None),
    ] {
        let e = mark_after(&base, marks, last).await.unwrap_err();
        assert_eq!(
            e.class,
            ErrorClass::SourceData,
            "{marks} after {last:?}: {}",
            e.message
        );
        assert!(e.message.contains("watermark"), "{}", e.message);
    }
}

/// A server that announces an enormous `Content-Length`, sends one byte and then holds
/// the connection open.
async fn announcing_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                          content-length: 1000000000000000\r\n\r\n{",
                    )
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    format!("http://{addr}")
}

/// Every size and count option is bounded when the config is saved, and a response
/// that announces more than `maxResponseBytes` fails at once: nothing is reserved from
/// what a source announces.
#[tokio::test]
async fn sizes_are_bounded_and_announced_lengths_never_reserved() {
    let base = "http://example.com/x";
    let cfg = |extra: Value| {
        let mut c = json!({ "url": base, "recordsPointer": "/items", "idPointer": "/id" });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    for (extra, field) in [
        (
            json!({ "maxResponseBytes": 1_000_000_000_000_000_000u64 }),
            "config.maxResponseBytes",
        ),
        (json!({ "maxResponseBytes": 0 }), "config.maxResponseBytes"),
        (
            json!({ "maxPages": 1_000_000_000_000u64 }),
            "config.maxPages",
        ),
        (json!({ "maxPages": 0 }), "config.maxPages"),
        (
            json!({ "pagination": { "type": "page", "param": "p", "start": u64::MAX } }),
            "config.pagination",
        ),
        (
            json!({ "pagination": { "type": "page", "param": "p", "size": 1_000_000_000u64, "sizeParam": "n" } }),
            "config.pagination",
        ),
    ] {
        let errs = connectors::validate(ConnectorKind::HttpJson, &cfg(extra.clone()))
            .expect_err(&format!("{extra} accepted"));
        assert!(errs.iter().any(|e| e.field == field), "{extra}: {errs:?}");
    }
    let csv = json!({ "url": base, "maxResponseBytes": 1_000_000_000_000_000_000u64 });
    let errs = connectors::validate(ConnectorKind::Csv, &csv).unwrap_err();
    assert!(
        errs.iter().any(|e| e.field == "config.maxResponseBytes"),
        "{errs:?}"
    );
    for extra in [
        json!({ "retryAfterMs": u64::MAX }),
        json!({ "failFirst": u64::MAX }),
    ] {
        assert!(
            connectors::validate(ConnectorKind::Synthetic, &extra).is_err(),
            "synthetic {extra} accepted"
        );
    }
    let mask: Vec<String> = (0..1000).map(|i| format!("f{i}")).collect();
    assert!(
        connectors::validate(
            ConnectorKind::Firestore,
            &json!({ "projectId": "p", "collection": "c", "fieldMask": mask })
        )
        .is_err(),
        "a 1000-path field mask accepted"
    );
    // The largest allowed limit against a source announcing a petabyte: refused at
    // once, from the headers, without waiting for (or reserving) the body.
    let source = announcing_server().await;
    let began = Instant::now();
    let e = fetch(
        json!({ "url": format!("{source}/x"), "recordsPointer": "/items", "idPointer": "/id",
                "maxResponseBytes": 1000, "timeoutMs": 5000 }),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::SourceData, "{}", e.message);
    assert!(e.message.contains("1000 bytes"), "{}", e.message);
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "waited for the body"
    );
}
