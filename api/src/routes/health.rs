//! Liveness, readiness and Prometheus metrics.

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

/// 200 when the database and the queue answer; 503 naming what does not.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.db.execute_unprepared("SELECT 1").await.is_ok();
    let queue = state.queue.ping().await.is_ok();
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

/// Prometheus text. The run and integration gauges are read from the database (and
/// the queue depth from the queue) at scrape time, so every process — each API replica,
/// each worker, the embedded one — reports the same fleet-wide values as
/// `GET /api/sync/status` does for an operator key, whichever of them is scraped.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(depth) = state.queue.depth().await {
        state
            .metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
    // Three COUNTs: two over the partial indexes of live runs, one over integrations.
    if let Err(e) = crate::scheduler::refresh_gauges(&state).await {
        tracing::warn!(error = %e, "could not refresh the run gauges for /metrics");
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
