//! Claiming a run (compare-and-set) and keeping its lease.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{ConnectorKind, Trigger};
use sea_orm::{ConnectionTrait, DbErr};
use uuid::Uuid;

use super::Fence;
use crate::config::ms;
use crate::db::{self, Dialect};

/// A successful claim.
#[derive(Debug, Clone)]
pub struct Claim {
    pub fence: Fence,
    pub integration_id: Uuid,
    /// Times this run has been claimed, this claim included.
    pub claims: i32,
    pub trigger: Trigger,
    pub attempt: i32,
    pub scheduled_for: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    /// The integration as read together with the claim: `None` = not read (the caller
    /// reads it), `Some(None)` = the integration is gone.
    pub source: Option<Option<Source>>,
}

/// What a run needs of its integration.
#[derive(Debug, Clone)]
pub struct Source {
    pub kind: ConnectorKind,
    pub config: serde_json::Value,
    pub watermark: Option<String>,
    /// `integrations.lost_leases`: its runs' lost leases since its last success.
    pub lost_leases: i32,
}

/// The claim's compare-and-set over the runs selected by `target`: a PENDING run, or a
/// RUNNING one whose lease expired, becomes RUNNING for `owner` with the next fence.
/// `owner` and `lease_ms` are placeholders. Shared by the single and the batched claim.
pub(crate) fn claim_sql(d: Dialect, target: &str, owner: &str, lease_ms: &str) -> String {
    let now = d.now();
    format!(
        "UPDATE sync_logs SET status = 'RUNNING', claims = claims + 1, fence = fence + 1, \
         lease_owner = {owner}, worker_id = {owner}, lease_until = {until}, started_at = COALESCE(started_at, {now}) \
         WHERE {target} AND (status = 'PENDING' OR (status = 'RUNNING' AND lease_until < {now})) \
         RETURNING id, integration_id, fence, claims, \"trigger\", attempt, scheduled_for, started_at",
        until = d.now_plus_ms(lease_ms),
    )
}

/// Claims `run_id` for `owner`: a PENDING run, or a RUNNING one whose lease expired.
/// `None` means someone else holds it or it is finished: a duplicate delivery.
pub async fn claim(
    db: &impl ConnectionTrait,
    run_id: Uuid,
    owner: &str,
    lease: Duration,
) -> Result<Option<Claim>, DbErr> {
    let sql = claim_sql(Dialect::of(db), "id = $1", "$2", "$3");
    let rows = db::query(db, sql, [run_id.into(), owner.into(), ms(lease).into()]).await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    Ok(Some(Claim {
        fence: Fence {
            run_id,
            fence: r.try_get("", "fence")?,
            integration_id: r.try_get("", "integration_id")?,
        },
        integration_id: r.try_get("", "integration_id")?,
        claims: r.try_get("", "claims")?,
        trigger: r.try_get("", "trigger")?,
        attempt: r.try_get("", "attempt")?,
        scheduled_for: r.try_get("", "scheduled_for")?,
        started_at: r.try_get("", "started_at")?,
        source: None,
    }))
}

/// Extends the lease of a live claim. `false` means the claim is lost (reaped, reclaimed
/// or finished elsewhere): the caller must stop and write nothing.
pub async fn renew(db: &impl ConnectionTrait, f: Fence, lease: Duration) -> Result<bool, DbErr> {
    let d = Dialect::of(db);
    let sql = format!(
        "UPDATE sync_logs SET lease_until = {} WHERE id = $1 AND fence = $2 AND status = 'RUNNING'",
        d.now_plus_ms("$3")
    );
    let r = db::exec(db, sql, [f.run_id.into(), f.fence.into(), ms(lease).into()]).await?;
    Ok(r.rows_affected() == 1)
}

/// Gives a live claim back (shutdown drain ran out): the run becomes PENDING with no
/// push time, so the re-enqueuer hands it to another worker on its next pass.
pub async fn release(db: &impl ConnectionTrait, f: Fence) -> Result<bool, DbErr> {
    let r = db::exec(
        db,
        "UPDATE sync_logs SET status = 'PENDING', lease_owner = NULL, lease_until = NULL, enqueued_at = NULL \
         WHERE id = $1 AND fence = $2 AND status = 'RUNNING'",
        [f.run_id.into(), f.fence.into()],
    )
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Counts this claim as executed alone in its process (see `engine::lease::Isolation`):
/// if the process dies now, the run is to blame. `false` means the claim is lost.
pub async fn mark_solo(db: &impl ConnectionTrait, f: Fence) -> Result<bool, DbErr> {
    let r = db::exec(
        db,
        "UPDATE sync_logs SET solo_claims = solo_claims + 1 WHERE id = $1 AND fence = $2 AND status = 'RUNNING'",
        [f.run_id.into(), f.fence.into()],
    )
    .await?;
    Ok(r.rows_affected() == 1)
}
