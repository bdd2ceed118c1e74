//! Finishing a run: one transaction, every write conditioned on the claim's fence.

use std::time::Duration;

use entity::{ErrorClass, HealthState, SyncStatus};
use sea_orm::{ConnectionTrait, DbErr, TransactionSession, TransactionTrait, Value};

use super::Fence;
use super::policy::{self, IntegrationState, Outcome, RetryPolicy};
use crate::config::ms;
use crate::db::{self, Dialect};
use crate::store::{self, Counts, Plan};

/// Everything a finished run reports.
#[derive(Debug, Default)]
pub struct RunReport {
    pub plan: Plan,
    /// Redacted, secret-free message of a failure.
    pub error_message: Option<String>,
    pub watermark: Option<String>,
    /// A full sync that returned no records: soft-delete every stored one (computed in
    /// the finish transaction instead of a read of all stored records per run).
    pub delete_all: bool,
}

/// What the finish transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    Applied {
        status: SyncStatus,
        disabled: bool,
        counts: Counts,
        duration_ms: i64,
    },
    /// The fence moved on: this claim is stale and wrote nothing.
    Stale,
}

/// Condition of the fenced update beyond `id`, `fence` and `status = 'RUNNING'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The worker holding the claim finishes it.
    Owner,
    /// The reaper fails a run whose lease has expired (and only then).
    LeaseExpired,
}

pub(crate) fn status_of(o: Outcome) -> SyncStatus {
    match o {
        Outcome::Success => SyncStatus::Success,
        Outcome::Failure(_) => SyncStatus::Failed,
        Outcome::RateLimited { .. } => SyncStatus::RateLimited,
    }
}

pub(crate) fn class_of(o: Outcome) -> Option<ErrorClass> {
    match o {
        Outcome::Success => None,
        Outcome::Failure(c) => Some(c),
        Outcome::RateLimited { .. } => Some(ErrorClass::RateLimited),
    }
}

/// Writes the run's outcome, its records and the integration's next state atomically.
pub async fn finish<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    retry: RetryPolicy,
    f: Fence,
    outcome: Outcome,
    report: RunReport,
    guard: Guard,
) -> Result<Finished, DbErr> {
    let d = Dialect::of(db);
    let now = d.now();
    let status = status_of(outcome);
    let counts = report.plan.counts;
    let txn = db.begin().await?;

    // 1. The integration's row first (the fleet-wide lock order is integration, then
    //    run). Gone means deleted while running: its runs went with it.
    //    The reaper skips an integration another transaction holds (a frozen worker's
    //    finish): it retries next pass instead of stalling every other recovery.
    let rows = match guard {
        Guard::Owner => super::lock_integration(&txn, f.integration_id, STATE_COLUMNS).await?,
        Guard::LeaseExpired => {
            super::try_lock_integration(&txn, f.integration_id, STATE_COLUMNS).await?
        }
    };
    let Some(i) = rows.first() else {
        txn.rollback().await?;
        return Ok(Finished::Stale);
    };
    let integration_id = f.integration_id;
    let state = state_of(integration_id, i)?;
    crate::chaos::finish_stall().await;

    // 2. The fence check, which also locks the run row until commit: after it, nobody
    //    can claim this run again before our writes are visible.
    let expired = if guard == Guard::LeaseExpired {
        format!(" AND lease_until < {now}")
    } else {
        String::new()
    };
    let sql = format!(
        "UPDATE sync_logs SET status = $3, completed_at = {now}, duration_ms = {dur}, lease_until = NULL, \
         records_count = $4, records_inserted = $5, records_updated = $6, records_unchanged = $7, \
         records_deleted = $8, error_class = $9, error_message = $10 \
         WHERE id = $1 AND fence = $2 AND status = 'RUNNING'{expired} \
         RETURNING duration_ms",
        dur = d.ms_since("started_at"),
    );
    let rows = db::query(
        &txn,
        sql,
        [
            f.run_id.into(),
            f.fence.into(),
            status.as_str().into(),
            counts.received.into(),
            counts.inserted.into(),
            counts.updated.into(),
            counts.unchanged.into(),
            counts.deleted.into(),
            class_of(outcome).map(|c| c.as_str().to_owned()).into(),
            report.error_message.clone().into(),
        ],
    )
    .await?;
    let Some(row) = rows.first() else {
        txn.rollback().await?;
        return Ok(Finished::Stale);
    };
    let mut duration_ms: i64 = row.try_get("", "duration_ms").unwrap_or(0);

    // 3. Records (only a successful run writes them).
    let mut counts = counts;
    if outcome == Outcome::Success && report.delete_all {
        let r = db::exec(
            &txn,
            format!(
                "UPDATE records SET deleted_at = {now}, synced_at = {now} WHERE integration_id = $1 AND deleted_at IS NULL"
            ),
            [integration_id.into()],
        )
        .await?;
        if r.rows_affected() > 0 {
            counts.deleted = i64::try_from(r.rows_affected()).unwrap_or(i64::MAX);
            db::exec(
                &txn,
                "UPDATE sync_logs SET records_deleted = $2 WHERE id = $1",
                [f.run_id.into(), counts.deleted.into()],
            )
            .await?;
        }
    }
    if outcome == Outcome::Success && !report.plan.is_empty() {
        store::apply(&txn, integration_id, report.plan).await?;
        // The run ends when its records are written.
        let rows = db::query(
            &txn,
            format!(
                "UPDATE sync_logs SET completed_at = {}, duration_ms = {} WHERE id = $1 RETURNING duration_ms",
                d.clock(),
                d.ms_since_clock("started_at")
            ),
            [f.run_id.into()],
        )
        .await?;
        if let Some(r) = rows.first() {
            duration_ms = r.try_get("", "duration_ms").unwrap_or(duration_ms);
        }
    }

    // 4. The integration's next state.
    let decision = policy::decide(retry, state, outcome);
    let next = match decision.next_in {
        Some(_) => d.now_plus_ms("$6"),
        None => "NULL".to_owned(),
    };
    let success_at = if decision.success {
        now
    } else {
        "last_success_at"
    };
    let watermark = if decision.success && report.watermark.is_some() {
        "$8"
    } else {
        "watermark"
    };
    let last_error = if decision.success { "NULL" } else { "$7" };
    // A success clears the integration's count of lost leases (`engine::lease`).
    let lost = if decision.success {
        ", lost_leases = 0"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE integrations SET retry_count = $2, sync_enabled = $3, health = $4, next_trigger = $5, \
         next_sync_at = {next}, followup_requested = false, last_sync_at = {now}, \
         last_success_at = {success_at}, last_error = {last_error}, watermark = {watermark}, updated_at = {now}{lost} \
         WHERE id = $1"
    );
    let next_ms = decision.next_in.map(ms).unwrap_or(0);
    let values: Vec<Value> = vec![
        integration_id.into(),
        decision.retry_count.into(),
        decision.sync_enabled.into(),
        health_str(decision.health).into(),
        decision.next_trigger.as_str().into(),
        next_ms.into(),
        report.error_message.clone().unwrap_or_default().into(),
        report.watermark.clone().into(),
    ];
    db::exec(&txn, sql, values).await?;

    // 5. A system disable is an audited control action.
    if decision.disabled_now {
        audit_disable(&txn, &state, &decision, outcome).await?;
    }
    crate::notify::changed(&txn, [integration_id]).await?;
    txn.commit().await?;
    Ok(Finished::Applied {
        status,
        disabled: decision.disabled_now,
        counts,
        duration_ms,
    })
}

/// The columns of an integration the policy decides from (as `lock_integration` reads them).
pub(crate) const STATE_COLUMNS: &str =
    "retry_count, max_retries, sync_interval_secs, sync_enabled, health, followup_requested";

/// An integration's state from a row holding [`STATE_COLUMNS`].
pub(crate) fn state_of(
    id: uuid::Uuid,
    i: &sea_orm::QueryResult,
) -> Result<IntegrationState, DbErr> {
    Ok(IntegrationState {
        id,
        retry_count: i.try_get("", "retry_count")?,
        max_retries: i.try_get("", "max_retries")?,
        interval_secs: i.try_get("", "sync_interval_secs")?,
        sync_enabled: i.try_get("", "sync_enabled")?,
        health: i.try_get::<HealthState>("", "health")?,
        followup_requested: i.try_get("", "followup_requested")?,
    })
}

/// The audit event of a system disable.
pub(crate) async fn audit_disable(
    txn: &impl ConnectionTrait,
    state: &IntegrationState,
    decision: &policy::Decision,
    outcome: Outcome,
) -> Result<(), DbErr> {
    let reason = format!(
        "disabled after {} consecutive failure(s); last error class {}",
        decision.retry_count,
        class_of(outcome).map(ErrorClass::as_str).unwrap_or("none")
    );
    crate::audit::record(
        txn,
        crate::audit::Event {
            integration_id: Some(state.id),
            workspace_id: None,
            actor: "system".into(),
            actor_name: None,
            action: "integration.disable".into(),
            reason: Some(reason),
            before: Some(serde_json::json!({ "syncEnabled": true, "retryCount": state.retry_count })),
            after: Some(serde_json::json!({ "syncEnabled": false, "health": "disabled", "retryCount": decision.retry_count })),
        },
    )
    .await
}

pub(crate) fn health_str(h: HealthState) -> &'static str {
    match h {
        HealthState::Healthy => "healthy",
        HealthState::Degraded => "degraded",
        HealthState::AtRisk => "at_risk",
        HealthState::Disabled => "disabled",
        HealthState::Paused => "paused",
    }
}

/// The wait a `rate_limited` outcome asks for, bounded so a hostile header cannot park an
/// integration for years.
pub fn bounded_wait(retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or(Duration::from_secs(60))
        .clamp(Duration::from_millis(1), Duration::from_secs(24 * 3600))
}
