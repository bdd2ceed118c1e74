//! Recovery: expired leases, poison runs, lost pushes and integrations without a slot.
//!
//! Runs in every API replica; each statement is a compare-and-set, so concurrent
//! reapers cannot double-apply anything.

use std::time::Duration;

use entity::ErrorClass;
use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};
use uuid::Uuid;

use super::finish::{self, Finished, Guard, RunReport};
use super::policy::{Outcome, RetryPolicy};
use super::{Fence, ids};
use crate::config::ms;
use crate::db::{self, Dialect};

/// What one reaper pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Expired runs made claimable again (push these).
    pub requeued: Vec<Uuid>,
    /// Runs failed as `worker_lost` after exhausting their claims.
    pub quarantined: u64,
    /// PENDING runs whose push is overdue (push these).
    pub repushed: Vec<Uuid>,
    /// Enabled integrations that had lost their slot and got one now.
    pub repaired: u64,
}

/// One full recovery pass.
pub async fn pass<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    retry: RetryPolicy,
    max_claims: i32,
    reenqueue_after: Duration,
    limit: u64,
) -> Result<Reaped, DbErr> {
    Ok(Reaped {
        quarantined: quarantine(db, retry, max_claims).await?,
        requeued: requeue_expired(db, max_claims).await?,
        repushed: overdue_pending(db, reenqueue_after, limit).await?,
        repaired: repair(db).await?,
    })
}

/// RUNNING runs whose lease expired and that may be claimed again become PENDING.
pub async fn requeue_expired(
    db: &impl ConnectionTrait,
    max_claims: i32,
) -> Result<Vec<Uuid>, DbErr> {
    let now = Dialect::of(db).now();
    let rows = db::query(
        db,
        format!(
            "UPDATE sync_logs SET status = 'PENDING', lease_owner = NULL, lease_until = NULL, enqueued_at = {now} \
             WHERE status = 'RUNNING' AND lease_until < {now} AND claims < $1 RETURNING id"
        ),
        [max_claims.into()],
    )
    .await?;
    ids(&rows, "id")
}

/// Expired runs that used up their claims are poison: fail them as `worker_lost`
/// through the normal (fenced) finish, so they count towards disabling.
pub async fn quarantine<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    retry: RetryPolicy,
    max_claims: i32,
) -> Result<u64, DbErr> {
    let now = Dialect::of(db).now();
    let rows = db::query(
        db,
        format!(
            "SELECT id, fence, claims, integration_id FROM sync_logs WHERE status = 'RUNNING' AND lease_until < {now} AND claims >= $1 LIMIT 100"
        ),
        [max_claims.into()],
    )
    .await?;
    let mut n = 0;
    for r in rows {
        let f = Fence {
            run_id: r.try_get("", "id")?,
            fence: r.try_get("", "fence")?,
            integration_id: r.try_get("", "integration_id")?,
        };
        let claims: i32 = r.try_get("", "claims")?;
        let report = RunReport {
            error_message: Some(format!(
                "run lost its worker {claims} time(s); quarantined as a poison run"
            )),
            ..RunReport::default()
        };
        let outcome = Outcome::Failure(ErrorClass::WorkerLost);
        if let Finished::Applied { .. } =
            finish::finish(db, retry, f, outcome, report, Guard::LeaseExpired).await?
        {
            n += 1;
        }
    }
    Ok(n)
}

/// PENDING runs not pushed for `after` (crash between commit and push, Redis flushed):
/// stamp them and return them for another push.
pub async fn overdue_pending(
    db: &impl ConnectionTrait,
    after: Duration,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    let d = Dialect::of(db);
    let rows = db::query(
        db,
        format!(
            "UPDATE sync_logs SET enqueued_at = {now} WHERE id IN (\
               SELECT id FROM sync_logs WHERE status = 'PENDING' AND (enqueued_at IS NULL OR enqueued_at < {cutoff}) \
               ORDER BY enqueued_at LIMIT {limit} {lock}) RETURNING id",
            now = d.now(),
            cutoff = d.now_plus_ms("$1"),
            lock = d.skip_locked(),
        ),
        // A literal LIMIT: see `schedule::tick`.
        [(-ms(after)).into()],
    )
    .await?;
    ids(&rows, "id")
}

/// An enabled, interval-driven integration with neither a live run nor a slot is
/// scheduled at once: no integration can fall out of the schedule.
pub async fn repair(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    let now = Dialect::of(db).now();
    let r = db::exec(
        db,
        format!(
            "UPDATE integrations SET next_sync_at = {now} WHERE sync_enabled AND next_sync_at IS NULL \
             AND sync_interval_secs IS NOT NULL AND NOT EXISTS (SELECT 1 FROM sync_logs s \
             WHERE s.integration_id = integrations.id AND s.status IN ('PENDING', 'RUNNING'))"
        ),
        [],
    )
    .await?;
    Ok(r.rows_affected())
}
