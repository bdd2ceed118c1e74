//! Manual runs: sync now, and the retry of a failed run.

use entity::{HealthState, Trigger, integrations};
use sea_orm::{DatabaseTransaction, TransactionTrait};
use serde_json::json;
use uuid::Uuid;

use syncfleet_worker::db as q;
use syncfleet_worker::protocol::trigger::{self, Triggered};

use super::{Audit, audit, lock};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// What a manual trigger did.
#[derive(Debug, Clone, Copy)]
pub struct Triggering {
    pub run_id: Uuid,
    /// A run was already live; no new one was created.
    pub coalesced: bool,
    /// The live run is RUNNING: one follow-up run will start after it.
    pub followup: bool,
}

/// Sync now: bypasses the interval, never the one-live-run rule. A paused or disabled
/// integration runs only with `force`.
pub async fn sync_now(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    force: bool,
    reason: Option<String>,
) -> Result<Triggering, ApiError> {
    let txn = state.db.begin().await?;
    let m = lock(&txn, caller, id).await?;
    if !m.sync_enabled && !force {
        return Err(ApiError::Conflict(format!(
            "the integration is {}; send {{\"force\": true}} to run it anyway",
            if m.health == HealthState::Disabled {
                "disabled"
            } else {
                "paused"
            }
        )));
    }
    let detail = json!({ "force": force });
    run_in(
        state,
        txn,
        caller,
        &m,
        "integration.trigger",
        reason,
        detail,
    )
    .await
}

/// Re-runs a FAILED run now: a manual run of its integration, even if its failures
/// disabled it. Another workspace's run is "not found".
pub async fn retry(
    state: &AppState,
    caller: &Caller,
    run_id: Uuid,
    reason: Option<String>,
) -> Result<Triggering, ApiError> {
    let rows = q::query(
        &state.db,
        "SELECT integration_id FROM sync_logs WHERE id = $1",
        [run_id.into()],
    )
    .await?;
    let row = rows.first().ok_or(ApiError::NotFound("run"))?;
    let integration_id: Uuid = row.try_get("", "integration_id")?;
    let txn = state.db.begin().await?;
    let m = match lock(&txn, caller, integration_id).await {
        Err(ApiError::NotFound(_)) => return Err(ApiError::NotFound("run")),
        other => other?,
    };
    // The run's status, read under the integration's lock (no finish can interleave).
    let rows = q::query(
        &txn,
        "SELECT status FROM sync_logs WHERE id = $1",
        [run_id.into()],
    )
    .await?;
    let status: String = rows
        .first()
        .ok_or(ApiError::NotFound("run"))?
        .try_get("", "status")?;
    if status != "FAILED" {
        return Err(ApiError::Conflict(format!(
            "only a FAILED run can be retried; this one is {status}"
        )));
    }
    let detail = json!({ "retriedRunId": run_id });
    run_in(state, txn, caller, &m, "run.retry", reason, detail).await
}

/// Creates (or coalesces into) a manual run of the locked `m`, audits it, commits, and
/// pushes a new run to the queue.
async fn run_in(
    state: &AppState,
    txn: DatabaseTransaction,
    caller: &Caller,
    m: &integrations::Model,
    action: &str,
    reason: Option<String>,
    mut detail: serde_json::Value,
) -> Result<Triggering, ApiError> {
    let t = match trigger::trigger_locked(&txn, m.id, m.retry_count, Trigger::Manual).await? {
        Triggered::Created(run_id) => Triggering {
            run_id,
            coalesced: false,
            followup: false,
        },
        Triggered::Coalesced { run_id, followup } => Triggering {
            run_id,
            coalesced: true,
            followup,
        },
        Triggered::NotFound => return Err(ApiError::NotFound("integration")),
        Triggered::SameInstant => {
            return Err(ApiError::Conflict(
                "another run of this integration started in the same instant; retry".into(),
            ));
        }
    };
    detail["runId"] = json!(t.run_id);
    detail["coalesced"] = json!(t.coalesced);
    audit(
        &txn,
        caller,
        Audit {
            action,
            integration: Some(m),
            workspace_id: None,
            reason,
            before: None,
            after: Some(detail),
        },
    )
    .await?;
    txn.commit().await?;
    if !t.coalesced
        && let Err(e) = state.queue.push(&[t.run_id]).await
    {
        tracing::warn!(error = %e, "push of a manual run failed; the re-enqueuer will retry");
    }
    Ok(t)
}
