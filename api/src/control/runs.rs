//! Runs asked for by hand or by the cloud: sync now, the retry of a failed run, and a
//! webhook's `sync`.

use entity::{HealthState, Trigger, integrations};
use sea_orm::{DatabaseTransaction, TransactionTrait};
use serde_json::json;
use uuid::Uuid;

use syncfleet_worker::db as q;
use syncfleet_worker::protocol::trigger::{self, Triggered};

use super::{Actor, Audit, audit_as, lock};
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
    let ask = Ask {
        actor: Actor::Key(caller),
        action: "integration.trigger",
        trigger: Trigger::Manual,
        reason,
        detail: json!({ "force": force }),
    };
    run_in(state, txn, &m, ask).await
}

/// A webhook from the cloud asked for a pull: a `webhook` run of the integration `m`,
/// locked by the caller's `txn` (whose webhook receipt commits with it), coalescing
/// exactly like a manual trigger. The caller has refused a paused or disabled
/// integration.
pub async fn webhook_sync(
    state: &AppState,
    txn: DatabaseTransaction,
    m: &integrations::Model,
    webhook_id: &str,
) -> Result<Triggering, ApiError> {
    let ask = Ask {
        actor: Actor::Webhook,
        action: "integration.trigger",
        trigger: Trigger::Webhook,
        reason: None,
        detail: json!({ "trigger": "webhook", "webhookId": webhook_id }),
    };
    run_in(state, txn, m, ask).await
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
    let ask = Ask {
        actor: Actor::Key(caller),
        action: "run.retry",
        trigger: Trigger::Manual,
        reason,
        detail: json!({ "retriedRunId": run_id }),
    };
    run_in(state, txn, &m, ask).await
}

/// Who asks for a run, and what the audit trail says about it.
struct Ask<'a> {
    actor: Actor<'a>,
    action: &'static str,
    /// The run's trigger: `manual` (sync now, a retry) or `webhook`.
    trigger: Trigger,
    reason: Option<String>,
    detail: serde_json::Value,
}

/// Creates (or coalesces into) a run of the locked `m`, audits it, commits, and pushes a
/// new run to the queue.
async fn run_in(
    state: &AppState,
    txn: DatabaseTransaction,
    m: &integrations::Model,
    ask: Ask<'_>,
) -> Result<Triggering, ApiError> {
    let Ask {
        actor,
        action,
        trigger: run_trigger,
        reason,
        mut detail,
    } = ask;
    let t = match trigger::trigger_locked(&txn, m.id, m.retry_count, run_trigger).await? {
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
    audit_as(
        &txn,
        actor,
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
        tracing::warn!(error = %e, trigger = run_trigger.as_str(), "push of a manual run failed; the re-enqueuer will retry");
    }
    Ok(t)
}
