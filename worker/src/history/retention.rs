//! Retention of finished runs (docs/architecture.md §3.9).
//!
//! A finished run is deleted when all of these hold:
//!
//! - it finished before the cut, `min(now − retention, watermark)`: it is older than the
//!   retention *and* its hour is rolled up (the aggregates have counted it);
//! - its integration has at least `keep_runs` finished runs newer than it, so an
//!   integration that syncs rarely keeps its last runs whatever their age.
//!
//! Live runs (`PENDING`, `RUNNING`) are never candidates. The pass walks the candidates
//! in id order (UUIDv7, creation order) in batches of `delete_batch`: one indexed read of
//! the batch, one read of the keep boundary of each integration it meets for the first
//! time in this pass (the id of its `keep_runs`-th newest finished run, on the
//! `(integration_id, id DESC)` index), and the deletes, each its own short statement
//! (autocommit: no transaction spans a batch). On PostgreSQL the delete skips rows
//! another transaction holds (`FOR UPDATE SKIP LOCKED`), so it never waits for a lock
//! and never takes part in a deadlock; a skipped row is taken by a later pass. Between
//! batches the pass sleeps `batch_pause`.
//!
//! Keep boundaries are remembered across passes ([`Boundaries`], held by the history
//! loop): a boundary read earlier can only be older than the true one (newer runs push
//! it forward, and nothing deletes a run above anybody's boundary), so one that is out
//! of date keeps more, never less. A boundary is read again only when it stops a
//! candidate, at most once per integration and pass; so an integration that syncs often
//! costs one read when the loop first meets it, not one per pass, while one that keeps
//! runs because of `keep_runs` costs one read per pass.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Clock, HISTORY, HistoryConfig, delta, finished, id_floor};
use crate::db::{self, Dialect};

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Runs deleted.
    pub deleted: u64,
    /// Candidate batches read.
    pub batches: u32,
    /// The cut of this pass (`None`: nothing is rolled up yet, so nothing may go).
    pub cut: Option<DateTime<Utc>>,
}

/// Keep boundaries by integration: the id of its `keep_runs`-th newest finished run when
/// it was read (`None`: it had fewer).
#[derive(Debug, Default)]
pub struct Boundaries {
    by_integration: HashMap<Uuid, Option<Uuid>>,
    keep_runs: u32,
}

/// Boundaries remembered at most (forgotten wholesale beyond, like those of deleted
/// integrations).
const MAX_BOUNDARIES: usize = 1_000_000;

/// Ids per statement reading keep boundaries or deleting.
fn chunk_size(d: Dialect) -> usize {
    match d {
        Dialect::Postgres => 5_000,
        // Shorter statements: each holds SQLite's one write lock.
        Dialect::Sqlite => 500,
    }
}

/// Deletes the finished runs that the retention and the rollup allow, in batches, until
/// none is left or `stop` is cancelled (with boundaries read afresh).
pub async fn pass(
    db: &impl ConnectionTrait,
    cfg: &HistoryConfig,
    clock: Clock,
    stop: &CancellationToken,
) -> Result<Retention, DbErr> {
    pass_with(db, cfg, clock, &mut Boundaries::default(), stop).await
}

/// [`pass`] with the keep boundaries of earlier passes.
pub async fn pass_with(
    db: &impl ConnectionTrait,
    cfg: &HistoryConfig,
    clock: Clock,
    keep: &mut Boundaries,
    stop: &CancellationToken,
) -> Result<Retention, DbErr> {
    if keep.keep_runs != cfg.keep_runs || keep.by_integration.len() > MAX_BOUNDARIES {
        *keep = Boundaries {
            by_integration: HashMap::new(),
            keep_runs: cfg.keep_runs,
        };
    }
    let now = clock.now(db).await?;
    let Some(wm) = super::watermark(db).await? else {
        return Ok(Retention::default());
    };
    let cut = (now - delta(cfg.retention)).min(wm);
    let mut out = Retention {
        cut: Some(cut),
        ..Retention::default()
    };
    let d = Dialect::of(db);
    let batch = cfg.delete_batch.max(1);
    // Run ids stamped at or after the cut were created after it and cannot have
    // finished before it: an upper bound for the id-ordered walk.
    let id_bound = id_floor(cut);
    // Integrations whose boundary this pass has read.
    let mut fresh: HashSet<Uuid> = HashSet::new();
    let mut cursor: Option<Uuid> = None;
    loop {
        let mut values: Vec<Value> = vec![id_bound.into(), cut.into()];
        let after = match cursor {
            Some(c) => {
                values.push(c.into());
                " AND id > $3"
            }
            None => "",
        };
        let rows = db::query(
            db,
            format!(
                "SELECT id, integration_id FROM {HISTORY} \
                 WHERE id < $1{after} AND completed_at < $2 AND {} ORDER BY id LIMIT {batch}",
                finished("")
            ),
            values,
        )
        .await?;
        out.batches += 1;
        let mut candidates = Vec::with_capacity(rows.len());
        for r in &rows {
            candidates.push((
                r.try_get::<Uuid>("", "id")?,
                r.try_get::<Uuid>("", "integration_id")?,
            ));
        }
        let allows = |keep: &Boundaries, id: &Uuid, i: &Uuid| {
            keep.by_integration
                .get(i)
                .copied()
                .flatten()
                .is_some_and(|k| *id < k)
        };
        // Boundaries that stop a candidate and were not read in this pass: read again.
        let mut stale: Vec<Uuid> = candidates
            .iter()
            .filter(|(id, i)| !fresh.contains(i) && !allows(keep, id, i))
            .map(|(_, i)| *i)
            .collect();
        stale.sort_unstable();
        stale.dedup();
        for chunk in stale.chunks(chunk_size(d)) {
            boundaries(db, chunk, cfg.keep_runs, &mut keep.by_integration).await?;
        }
        fresh.extend(stale);
        let doomed: Vec<Uuid> = candidates
            .iter()
            .filter(|(id, i)| allows(keep, id, i))
            .map(|(id, _)| *id)
            .collect();
        for chunk in doomed.chunks(chunk_size(d)) {
            out.deleted += delete(db, chunk, cut).await?;
        }
        if (candidates.len() as u64) < u64::from(batch) || stop.is_cancelled() {
            return Ok(out);
        }
        cursor = candidates.last().map(|(id, _)| *id);
        tokio::select! {
            () = tokio::time::sleep(cfg.batch_pause) => {}
            () = stop.cancelled() => return Ok(out),
        }
    }
}

/// Reads the keep boundary of each integration: the id of its `keep`-th newest finished
/// run (`None`: it has fewer, so none of its runs may go). Integrations that no longer
/// exist get none (their runs go with them).
async fn boundaries(
    db: &impl ConnectionTrait,
    integrations: &[Uuid],
    keep: u32,
    out: &mut HashMap<Uuid, Option<Uuid>>,
) -> Result<(), DbErr> {
    let offset = keep.max(1) - 1;
    let list = (1..=integrations.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = db::query(
        db,
        format!(
            "SELECT i.id, (SELECT n.id FROM {HISTORY} n WHERE n.integration_id = i.id AND {} \
               ORDER BY n.id DESC LIMIT 1 OFFSET {offset}) AS keep_from \
             FROM integrations i WHERE i.id IN ({list})",
            finished("n")
        ),
        integrations.iter().map(|i| Value::from(*i)),
    )
    .await?;
    for i in integrations {
        out.insert(*i, None);
    }
    for r in &rows {
        out.insert(r.try_get("", "id")?, r.try_get("", "keep_from")?);
    }
    Ok(())
}

/// Deletes these runs if they are (still) finished before the cut; returns how many went.
async fn delete(db: &impl ConnectionTrait, ids: &[Uuid], cut: DateTime<Utc>) -> Result<u64, DbErr> {
    let d = Dialect::of(db);
    let list = (2..ids.len() + 2)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let fin = finished("");
    let sql = match d {
        Dialect::Postgres => format!(
            "DELETE FROM {HISTORY} WHERE id IN (SELECT id FROM {HISTORY} \
               WHERE id IN ({list}) AND completed_at < $1 AND {fin} FOR UPDATE SKIP LOCKED)"
        ),
        Dialect::Sqlite => {
            format!("DELETE FROM {HISTORY} WHERE id IN ({list}) AND completed_at < $1 AND {fin}")
        }
    };
    let mut values: Vec<Value> = Vec::with_capacity(ids.len() + 1);
    values.push(cut.into());
    values.extend(ids.iter().map(|i| Value::from(*i)));
    Ok(db::exec(db, sql, values).await?.rows_affected())
}
