//! Manual triggers, coalesced under the one-live-run rule.

use entity::Trigger;
use sea_orm::{ConnectionTrait, DbErr, TransactionSession, TransactionTrait};
use uuid::Uuid;

use crate::db::{self, Dialect};

/// What a trigger did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triggered {
    /// A new PENDING run; push it to the queue.
    Created(Uuid),
    /// A run was already live. If it is RUNNING, one follow-up run was requested (several
    /// triggers during one run still make one follow-up); if it is PENDING, it has not
    /// fetched yet and will see fresh data, so nothing more is needed.
    Coalesced {
        run_id: Uuid,
        followup: bool,
    },
    NotFound,
    /// Another run of this integration was created for the same database instant and
    /// has already finished: the caller may simply try again.
    SameInstant,
}

/// Creates a run of `integration_id` now, bypassing its interval but never the
/// one-live-run rule.
pub async fn trigger<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    integration_id: Uuid,
    trigger: Trigger,
) -> Result<Triggered, DbErr> {
    let txn = db.begin().await?;
    // Lock the integration first (the fleet-wide lock order: integration, then run); a
    // concurrent scheduler tick skips it (SKIP LOCKED).
    let rows = super::lock_integration(&txn, integration_id, "retry_count").await?;
    let Some(row) = rows.first() else {
        txn.rollback().await?;
        return Ok(Triggered::NotFound);
    };
    let retry_count: i32 = row.try_get("", "retry_count")?;
    let t = trigger_locked(&txn, integration_id, retry_count, trigger).await;
    match t {
        Ok(t) => {
            txn.commit().await?;
            Ok(t)
        }
        Err(e) => {
            txn.rollback().await?;
            Err(e)
        }
    }
}

/// The trigger inside the caller's transaction, which already holds the integration's
/// row lock (read `retry_count` under it); the caller commits.
pub async fn trigger_locked(
    txn: &impl ConnectionTrait,
    integration_id: Uuid,
    retry_count: i32,
    trigger: Trigger,
) -> Result<Triggered, DbErr> {
    let now = Dialect::of(txn).now();
    let run_id = Uuid::now_v7();
    let inserted = db::query(
        txn,
        format!(
            "INSERT INTO live_runs (id, integration_id, status, \"trigger\", scheduled_for, attempt, enqueued_at, created_at) \
             VALUES ($1, $2, 'PENDING', $3, {now}, $4, {now}, {now}) ON CONFLICT DO NOTHING RETURNING id"
        ),
        [run_id.into(), integration_id.into(), trigger.as_str().into(), retry_count.saturating_add(1).into()],
    )
    .await?;
    if !inserted.is_empty() {
        // The live run stands in for the scheduled one; finishing it reschedules.
        db::exec(
            txn,
            "UPDATE integrations SET next_sync_at = NULL, runs_total = runs_total + 1 WHERE id = $1",
            [integration_id.into()],
        )
        .await?;
        return Ok(Triggered::Created(run_id));
    }
    let live = db::query(
        txn,
        "SELECT id, status FROM live_runs WHERE integration_id = $1",
        [integration_id.into()],
    )
    .await?;
    let Some(live) = live.first() else {
        // The insert conflicted on the slot itself (same database instant).
        return Ok(Triggered::SameInstant);
    };
    let live_id: Uuid = live.try_get("", "id")?;
    let running = live.try_get::<String>("", "status")? == "RUNNING";
    if running {
        db::exec(
            txn,
            "UPDATE integrations SET followup_requested = true WHERE id = $1",
            [integration_id.into()],
        )
        .await?;
    }
    Ok(Triggered::Coalesced {
        run_id: live_id,
        followup: running,
    })
}
