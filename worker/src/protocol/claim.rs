//! Claiming runs (compare-and-set) and keeping their lease: the sync kind's side of
//! [`crate::work`]. A single claim is a batch of one.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{ConnectorKind, Trigger};
use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value};
use uuid::Uuid;

use super::{Fence, RUNS};
use crate::db::{self, Dialect};
use crate::work;

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

/// The integration columns a run reads with its claim.
const SOURCE: &str = "i.kind, i.config, i.watermark, i.lost_leases";

fn source_of(r: &QueryResult) -> Result<Option<Source>, DbErr> {
    let kind: Option<ConnectorKind> = r.try_get("", "kind")?;
    kind.map(|kind| {
        Ok(Source {
            kind,
            config: r.try_get("", "config")?,
            watermark: r.try_get("", "watermark")?,
            lost_leases: r.try_get("", "lost_leases")?,
        })
    })
    .transpose()
}

/// Claims `ids` for `owner` in one statement and reads each claimed run's integration
/// (kind, config, watermark) with it. Ids missing from the result were not claimable.
pub async fn claim_many(
    db: &impl ConnectionTrait,
    owner: &str,
    ids: &[Uuid],
    lease: Duration,
) -> Result<HashMap<Uuid, Claim>, DbErr> {
    let d = Dialect::of(db);
    let join = (
        "LEFT JOIN integrations i ON i.id = c.integration_id",
        SOURCE,
    );
    let rows = work::claim(
        db,
        &RUNS,
        ids,
        owner,
        lease,
        "\"trigger\", attempt, scheduled_for",
        Some(join),
    )
    .await?;
    // SQLite cannot join a write's result: the integrations are read after it.
    let mut sources: HashMap<Uuid, Option<Source>> = HashMap::new();
    if d == Dialect::Sqlite && !rows.is_empty() {
        let iids: Vec<Uuid> = rows
            .iter()
            .map(|r| r.try_get("", "integration_id"))
            .collect::<Result<_, _>>()?;
        let found = db::query(
            db,
            format!(
                "SELECT i.id, {SOURCE} FROM integrations i WHERE i.id IN ({})",
                work::placeholders(1, iids.len())
            ),
            iids.iter().map(|id| Value::from(*id)),
        )
        .await?;
        for r in &found {
            sources.insert(r.try_get("", "id")?, source_of(r)?);
        }
    }
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let fence = Fence::of(&r, RUNS.subject)?;
        let source = match d {
            Dialect::Postgres => source_of(&r)?,
            Dialect::Sqlite => sources.get(&fence.subject).cloned().flatten(),
        };
        out.insert(
            fence.id,
            Claim {
                fence,
                integration_id: fence.subject,
                claims: r.try_get("", "claims")?,
                trigger: r.try_get::<Trigger>("", "trigger")?,
                attempt: r.try_get("", "attempt")?,
                scheduled_for: r.try_get("", "scheduled_for")?,
                started_at: r.try_get("", "started_at")?,
                source: Some(source),
            },
        );
    }
    Ok(out)
}

/// Claims `run_id` for `owner`: a PENDING run, or a RUNNING one whose lease expired.
/// `None` means someone else holds it or it is finished: a duplicate delivery.
pub async fn claim(
    db: &impl ConnectionTrait,
    run_id: Uuid,
    owner: &str,
    lease: Duration,
) -> Result<Option<Claim>, DbErr> {
    Ok(claim_many(db, owner, &[run_id], lease)
        .await?
        .remove(&run_id))
}

/// Extends the lease of a live claim. `false` means the claim is lost (reaped, reclaimed
/// or finished elsewhere): the caller must stop and write nothing.
pub async fn renew(db: &impl ConnectionTrait, f: Fence, lease: Duration) -> Result<bool, DbErr> {
    work::renew(db, &RUNS, f, lease).await
}

/// Gives a live claim back (shutdown drain ran out): the run becomes PENDING with no
/// push time, so the re-enqueuer hands it to another worker on its next pass.
pub async fn release(db: &impl ConnectionTrait, f: Fence) -> Result<bool, DbErr> {
    work::release(db, &RUNS, f).await
}

/// Gives back a claim that stepped aside unexecuted: released, and not counted in
/// `claims` (see `work::give_back`).
pub async fn give_back(db: &impl ConnectionTrait, f: Fence) -> Result<bool, DbErr> {
    work::give_back(db, &RUNS, f).await
}

/// Counts this claim as executed alone in its process (see `engine::lease::Isolation`):
/// if the process dies now, the run is to blame. `false` means the claim is lost.
pub async fn mark_solo(db: &impl ConnectionTrait, f: Fence) -> Result<bool, DbErr> {
    work::mark_solo(db, &RUNS, f).await
}
