//! The API side of notifications and pushes (docs/architecture.md §4.16, §4.17): the pump
//! that queues due deliveries and pushes, and pushing the deliveries a request created
//! without waiting for it.

use syncfleet_worker::notifications::{self, DELIVERIES};
use syncfleet_worker::push::PUSHES;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::AppState;

/// Pushes deliveries this process just committed (best effort: the pump pushes whatever
/// is still unpushed).
pub async fn push_now(state: &AppState, deliveries: &[Uuid]) {
    if deliveries.is_empty() {
        return;
    }
    // Stamped pushed first, so the pump does not push them a second time.
    let stamped = stamp(state, deliveries).await;
    if let Err(e) = state.queue.push_work(&DELIVERIES, &stamped).await {
        tracing::debug!(error = %e, "deliveries not pushed; the pump will");
    }
}

async fn stamp(state: &AppState, ids: &[Uuid]) -> Vec<Uuid> {
    use syncfleet_worker::db::{self as q, Dialect};
    let d = Dialect::of(&state.db);
    let list = syncfleet_worker::work::placeholders(1, ids.len());
    let rows = q::query(
        &state.db,
        format!(
            "UPDATE live_deliveries SET enqueued_at = {now} WHERE id IN ({list}) AND status = 'PENDING' \
             AND enqueued_at IS NULL AND (due_at IS NULL OR due_at <= {now}) RETURNING id",
            now = d.now()
        ),
        ids.iter().map(|id| sea_orm::Value::from(*id)),
    )
    .await;
    match rows {
        Ok(rows) => rows
            .iter()
            .filter_map(|r| r.try_get("", "id").ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Every `SYNCFLEET_NOTIFY_PUMP_MS`: breached freshness objectives become
/// `integration.stale` events, and due deliveries (new ones, retries whose backoff
/// ended) are pushed. Leaderless like the scheduler: each statement claims its rows.
pub async fn run_pump(state: AppState, shutdown: CancellationToken) {
    let period = state.config.protocol.notify.pump_period;
    let limit = state.config.protocol.max_runs_per_tick;
    loop {
        let full = match notifications::pump(&state.db, limit).await {
            Ok((due, stale)) => {
                if stale > 0 {
                    tracing::info!(integrations = stale, "freshness objectives breached");
                }
                let n = due.len();
                if !due.is_empty()
                    && let Err(e) = state.queue.push_work(&DELIVERIES, &due).await
                {
                    // Stamped but not pushed: the re-enqueuer pushes them after its timeout.
                    tracing::warn!(error = %e, deliveries = n, "push of due deliveries failed; the re-enqueuer will retry");
                }
                // Pushes of local changes that are due (new, or retrying after a backoff).
                let pushes =
                    match syncfleet_worker::work::due_unpushed(&state.db, &PUSHES, limit).await {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(error = %e, "reading due pushes failed");
                            Vec::new()
                        }
                    };
                if !pushes.is_empty()
                    && let Err(e) = state.queue.push_work(&PUSHES, &pushes).await
                {
                    tracing::warn!(error = %e, pushes = pushes.len(), "queueing due pushes failed; the re-enqueuer will retry");
                }
                n as u64 >= limit || pushes.len() as u64 >= limit
            }
            Err(e) => {
                tracing::warn!(error = %e, "delivery pump pass failed");
                false
            }
        };
        if full {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
