//! Liveness, readiness and Prometheus metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use sea_orm::ConnectionTrait;
use serde_json::json;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Longest a readiness probe waits for each dependency (they are asked at once).
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// 200 when the database and the queue answer; 503 naming what does not. Answers within
/// [`PROBE_TIMEOUT`] whatever is down, so a load balancer sees an answer, not a timeout.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (db, queue) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, state.db.execute_unprepared("SELECT 1")),
        tokio::time::timeout(PROBE_TIMEOUT, state.queue.ping()),
    );
    let db = matches!(db, Ok(Ok(_)));
    let queue = matches!(queue, Ok(Ok(())));
    let status = if db && queue {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(json!({ "status": word(db && queue), "database": word(db), "queue": word(queue) })),
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(depth) = state.queue.depth().await {
        state
            .metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
