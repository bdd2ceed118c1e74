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

/// Prometheus text. The run and integration gauges are read from the database (and
/// the queue depth from the queue) at scrape time, so every process — each API replica,
/// each worker, the embedded one — reports the same fleet-wide values as
/// `GET /api/sync/status` does for an operator key, whichever of them is scraped.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Both refreshes are bounded like a readiness probe: during an outage the scrape
    // answers with the last values instead of hanging on the pool.
    if let Ok(Ok(depth)) = tokio::time::timeout(PROBE_TIMEOUT, state.queue.depth()).await {
        state
            .metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
    // Three COUNTs: two over the partial indexes of live runs, one over integrations.
    match tokio::time::timeout(PROBE_TIMEOUT, crate::scheduler::refresh_gauges(&state)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not refresh the run gauges for /metrics"),
        Err(_) => tracing::warn!("the run gauges for /metrics timed out; serving the last values"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
