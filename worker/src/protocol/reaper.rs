//! Recovery: expired leases, poison runs, lost pushes and integrations without a slot.
//! See docs/architecture.md §4.8.
//!
//! Runs in every API replica; each statement is a compare-and-set, so concurrent
//! reapers cannot double-apply anything. No step waits for a row lock: rows another
//! transaction holds (a worker frozen inside its finish) are skipped and picked up by a
//! later pass, so one stalled writer delays nobody else's recovery. The steps are
//! independent: one that fails does not keep the others from running.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::ErrorClass;
use sea_orm::{ConnectionTrait, DbErr, TransactionTrait, Value};
use uuid::Uuid;

use super::finish::{self, FinishReq, Finished, RunReport};
use super::policy::{Outcome, RetryPolicy};
use super::{Guard, RUNS};
use crate::db::{self, Dialect};
use crate::work;

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

/// One full recovery pass. A step that fails is logged and the others still run.
pub async fn pass<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    retry: RetryPolicy,
    max_claims: i32,
    reenqueue_after: Duration,
    limit: u64,
) -> Reaped {
    fn or_log<T: Default>(step: &str, r: Result<T, DbErr>) -> T {
        r.unwrap_or_else(|e| {
            tracing::warn!(step, error = %e, "recovery step failed; the next pass retries");
            T::default()
        })
    }
    Reaped {
        quarantined: or_log("quarantine", quarantine(db, retry, max_claims, limit).await),
        requeued: or_log("requeue", requeue_expired(db, max_claims, limit).await),
        repushed: or_log(
            "re-enqueue",
            overdue_pending(db, reenqueue_after, limit).await,
        ),
        repaired: or_log("repair", repair(db).await),
    }
}

/// RUNNING runs whose lease expired and that are not poison become PENDING; each one's
/// integration counts a lost lease (`integrations.lost_leases`, see
/// `engine::lease::Isolation`).
pub async fn requeue_expired(
    db: &impl ConnectionTrait,
    max_claims: i32,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    let d = Dialect::of(db);
    let requeued = work::requeue_expired(db, &RUNS, max_claims, limit).await?;
    if !requeued.is_empty() {
        // Its own statement, after the run rows are released (the lock order is
        // integration, then run); a row held right now misses one count, never waits.
        let list = work::placeholders(1, requeued.len());
        db::exec(
            db,
            format!(
                "UPDATE integrations SET lost_leases = lost_leases + 1 WHERE id IN \
                 (SELECT id FROM integrations WHERE id IN ({list}) {lock})",
                lock = d.skip_locked_state(),
            ),
            requeued.iter().map(|(_, i)| Value::from(*i)),
        )
        .await?;
    }
    Ok(requeued.into_iter().map(|(id, _)| id).collect())
}

/// Expired runs that lost their worker `max_claims` times while running alone are poison:
/// fail them as `worker_lost` through the normal (fenced) finish, so they count towards
/// disabling. A healthy run that only shared a process with a crash is never one.
pub async fn quarantine<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    retry: RetryPolicy,
    max_claims: i32,
    limit: u64,
) -> Result<u64, DbErr> {
    let poison = work::poisoned(db, &RUNS, max_claims, limit).await?;
    let reqs: Vec<FinishReq> = poison
        .into_iter()
        .map(|(fence, claims)| FinishReq {
            fence,
            outcome: Outcome::Failure(ErrorClass::WorkerLost),
            report: RunReport {
                error_message: Some(format!(
                    "run lost its worker {claims} time(s), {max_claims} of them running alone; quarantined as a poison run"
                )),
                ..RunReport::default()
            },
        })
        .collect();
    let done = finish::finish_guarded(db, retry, &reqs, Guard::LeaseExpired).await?;
    Ok(done
        .iter()
        .filter(|f| matches!(f, Finished::Applied { .. }))
        .count() as u64)
}

/// PENDING runs not pushed for `after` (crash between commit and push, a popped entry
/// whose worker died before claiming it): stamp them and return them for another push.
/// Pushing a run that still has its entry changes nothing, so this never grows the queue.
pub async fn overdue_pending(
    db: &impl ConnectionTrait,
    after: Duration,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    work::overdue(db, &RUNS, after, limit).await
}

/// PENDING runs last pushed before `at` (a database-clock instant the caller read when
/// the queue lost every entry at once): called until it returns fewer than `limit`.
pub async fn pushed_before(
    db: &impl ConnectionTrait,
    at: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    work::pushed_before(db, &RUNS, "$1", at.into(), limit).await
}

/// The database's clock now.
pub async fn db_now(db: &impl ConnectionTrait) -> Result<DateTime<Utc>, DbErr> {
    let rows = db::query(db, format!("SELECT {} AS t", Dialect::of(db).now()), []).await?;
    match rows.first() {
        Some(r) => r.try_get("", "t"),
        None => Err(DbErr::Custom("the clock query returned no row".into())),
    }
}

/// An enabled, interval-driven integration with neither a live run nor a slot is
/// scheduled at once: no integration can fall out of the schedule.
pub async fn repair(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    let d = Dialect::of(db);
    let now = d.now();
    let r = db::exec(
        db,
        format!(
            "UPDATE integrations SET next_sync_at = {now} WHERE id IN (SELECT id FROM integrations \
             WHERE sync_enabled AND next_sync_at IS NULL AND sync_interval_secs IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM live_runs s WHERE s.integration_id = integrations.id) {lock}) AND next_sync_at IS NULL",
            lock = d.skip_locked_state(),
        ),
        [],
    )
    .await?;
    Ok(r.rows_affected())
}
