//! Small helpers shared by the test modules.

use std::future::Future;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Value};
use syncfleet_worker::db as q;

/// Polls `check` until it returns `Some` or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn count(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> i64 {
    let r = q::query(db, sql, values).await.expect(sql);
    r.first()
        .map(|r| r.try_get_by_index::<i64>(0).expect("count"))
        .unwrap_or(0)
}

/// The first column of every row, as strings.
pub async fn strings(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Vec<String> {
    let r = q::query(db, sql, values).await.expect(sql);
    r.iter()
        .map(|r| r.try_get_by_index::<String>(0).expect("string"))
        .collect()
}

/// One unlabelled sample of `/metrics` at `base`.
pub async fn gauge(base: &str, name: &str) -> i64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not on {base}/metrics:\n{text}"))
}
