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
    let now = d.now();
    let rows = db::query(
        db,
        format!(
            "UPDATE sync_logs SET status = 'PENDING', lease_owner = NULL, lease_until = NULL, enqueued_at = {now} \
             WHERE id IN (SELECT id FROM sync_logs WHERE status = 'RUNNING' AND lease_until < {now} \
               AND solo_claims < $1 LIMIT {limit} {lock}) \
             AND status = 'RUNNING' AND lease_until < {now} RETURNING id, integration_id",
            lock = d.skip_locked(),
        ),
        [max_claims.into()],
    )
    .await?;
    let integrations = ids(&rows, "integration_id")?;
    if !integrations.is_empty() {
        // Its own statement, after the run rows are released (the lock order is
        // integration, then run); a row held right now misses one count, never waits.
        let list: Vec<String> = (1..=integrations.len()).map(|k| format!("${k}")).collect();
        db::exec(
            db,
            format!(
                "UPDATE integrations SET lost_leases = lost_leases + 1 WHERE id IN \
                 (SELECT id FROM integrations WHERE id IN ({}) {lock})",
                list.join(", "),
                lock = d.skip_locked(),
            ),
            integrations.into_iter().map(Into::into),
        )
        .await?;
    }
    ids(&rows, "id")
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
    let now = Dialect::of(db).now();
    let rows = db::query(
        db,
        format!(
            "SELECT id, fence, claims, integration_id FROM sync_logs WHERE status = 'RUNNING' \
             AND lease_until < {now} AND solo_claims >= $1 LIMIT {limit}"
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
                "run lost its worker {claims} time(s), {max_claims} of them running alone; quarantined as a poison run"
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

/// PENDING runs not pushed for `after` (crash between commit and push, a popped entry
/// whose worker died before claiming it): stamp them and return them for another push.
/// Pushing a run that still has its entry changes nothing, so this never grows the queue.
pub async fn overdue_pending(
    db: &impl ConnectionTrait,
    after: Duration,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    let cutoff = Dialect::of(db).now_plus_ms("$1");
    pending_pushed_before(db, &cutoff, (-ms(after)).into(), limit).await
}

/// PENDING runs last pushed before `at` (a database-clock instant the caller read when
/// the queue lost every entry at once): called until it returns fewer than `limit`.
pub async fn pushed_before(
    db: &impl ConnectionTrait,
    at: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    pending_pushed_before(db, "$1", at.into(), limit).await
}

async fn pending_pushed_before(
    db: &impl ConnectionTrait,
    cutoff: &str,
    param: sea_orm::Value,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    let d = Dialect::of(db);
    let rows = db::query(
        db,
        format!(
            "UPDATE sync_logs SET enqueued_at = {now} WHERE id IN (\
               SELECT id FROM sync_logs WHERE status = 'PENDING' AND (enqueued_at IS NULL OR enqueued_at < {cutoff}) \
               ORDER BY enqueued_at NULLS FIRST LIMIT {limit} {lock}) RETURNING id",
            now = d.now(),
            lock = d.skip_locked(),
        ),
        // A literal LIMIT: see `schedule::tick`.
        [param],
    )
    .await?;
    ids(&rows, "id")
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
             AND NOT EXISTS (SELECT 1 FROM sync_logs s WHERE s.integration_id = integrations.id \
             AND s.status IN ('PENDING', 'RUNNING')) {lock}) AND next_sync_at IS NULL",
            lock = d.skip_locked(),
        ),
        [],
    )
    .await?;
    Ok(r.rows_affected())
}
