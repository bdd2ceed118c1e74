//! Hourly aggregates of finished runs (docs/architecture.md §3.9).
//!
//! One row of `run_stats_hourly` per integration and hour with finished runs, bucketed
//! by `completed_at`: counts by outcome, records, and the exact duration percentiles of
//! that integration's runs in that hour. The watermark (`run_stats_watermark`) is the
//! start of the first hour not rolled up yet; it only moves forward, one hour at a time,
//! in the transaction that writes that hour's rows. An hour is rolled up once it is
//! complete by the given clock (its end plus the grace); the retention deletes only
//! rows of hours before the watermark, so an hour's figures are always taken from all
//! of its rows.
//!
//! Two API replicas racing cannot double count: the rows are upserted with absolute
//! figures (a re-run writes the same values), and the watermark moves by
//! compare-and-set. On PostgreSQL the pass also holds the watermark row
//! (`FOR UPDATE SKIP LOCKED`) while it computes, so a second replica skips instead of
//! computing the same hour; on SQLite the hour is computed outside any write
//! transaction (a read does not block the writers) and written in a short one.

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, QueryResult, TransactionTrait, Value};
use uuid::Uuid;

use super::{Clock, HISTORY, HistoryConfig, STATS_TABLE, WATERMARK_TABLE, delta, finished};
use crate::db::{self, Dialect};

/// One integration's finished runs in one hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourStats {
    pub integration_id: Uuid,
    pub hour: DateTime<Utc>,
    pub runs: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub rate_limited: i64,
    pub cancelled: i64,
    pub records: i64,
    /// Nearest-rank percentiles (`percentile_disc`) of the runs' `duration_ms`; `None`
    /// when no run of the hour has a duration (only cancelled runs).
    pub duration_p50_ms: Option<i64>,
    pub duration_p95_ms: Option<i64>,
    pub duration_p99_ms: Option<i64>,
    pub duration_max_ms: Option<i64>,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollup {
    /// Hours whose rows were written.
    pub hours: u32,
    /// Aggregate rows written.
    pub rows: u64,
    /// The watermark after the pass.
    pub rolled_up_to: Option<DateTime<Utc>>,
    /// Another replica held the watermark (PostgreSQL) or moved it first.
    pub busy: bool,
}

enum Step {
    /// An hour was written (rows), the watermark moved past it.
    Rolled(u64, DateTime<Utc>),
    /// Nothing left before the target; the watermark is here.
    Done(Option<DateTime<Utc>>),
    Busy,
}

/// Rolls up every complete hour after the watermark (at most
/// `cfg.max_hours_per_pass`), oldest first.
pub async fn pass(
    db: &DatabaseConnection,
    cfg: &HistoryConfig,
    clock: Clock,
) -> Result<Rollup, DbErr> {
    let now = clock.now(db).await?;
    let target = super::floor_hour(now - delta(cfg.rollup_grace));
    let mut out = Rollup::default();
    while out.hours < cfg.max_hours_per_pass {
        match step(db, target).await? {
            Step::Rolled(rows, to) => {
                out.hours += 1;
                out.rows += rows;
                out.rolled_up_to = Some(to);
            }
            Step::Done(to) => {
                out.rolled_up_to = to;
                return Ok(out);
            }
            Step::Busy => {
                out.busy = true;
                out.rolled_up_to = super::watermark(db).await?;
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// One hour (or the jump over hours without runs), in one transaction.
async fn step(db: &DatabaseConnection, target: DateTime<Utc>) -> Result<Step, DbErr> {
    let d = Dialect::of(db);
    if d == Dialect::Postgres {
        let txn = db.begin().await?;
        let rows = db::query(
            &txn,
            format!(
                "SELECT rolled_up_to FROM {WATERMARK_TABLE} WHERE id = 1 FOR UPDATE SKIP LOCKED"
            ),
            [],
        )
        .await?;
        // Early returns end the transaction here, not when it is dropped: a dropped
        // transaction's rollback is deferred, and its row lock would make the next pass
        // (of this process, at once) see the watermark busy.
        let Some(r) = rows.first() else {
            txn.rollback().await?;
            return Ok(Step::Busy);
        };
        let wm: Option<DateTime<Utc>> = r.try_get("", "rolled_up_to")?;
        if wm.is_some_and(|w| w >= target) {
            txn.rollback().await?;
            return Ok(Step::Done(wm));
        }
        let step = match next_hour(&txn, wm, target).await? {
            None => {
                advance(&txn, wm, target).await?;
                Step::Done(Some(target))
            }
            Some(hour) => {
                let stats = compute(&txn, hour).await?;
                upsert(&txn, &stats).await?;
                let to = hour + TimeDelta::hours(1);
                advance(&txn, wm, to).await?;
                Step::Rolled(stats.len() as u64, to)
            }
        };
        txn.commit().await?;
        Ok(step)
    } else {
        let wm = super::watermark(db).await?;
        if wm.is_some_and(|w| w >= target) {
            return Ok(Step::Done(wm));
        }
        match next_hour(db, wm, target).await? {
            None => {
                let txn = db.begin().await?;
                if !advance(&txn, wm, target).await? {
                    txn.rollback().await?;
                    return Ok(Step::Busy);
                }
                txn.commit().await?;
                Ok(Step::Done(Some(target)))
            }
            Some(hour) => {
                // Computed before the write transaction: reading takes no lock.
                let stats = compute(db, hour).await?;
                let to = hour + TimeDelta::hours(1);
                let txn = db.begin().await?;
                if !advance(&txn, wm, to).await? {
                    txn.rollback().await?;
                    return Ok(Step::Busy);
                }
                upsert(&txn, &stats).await?;
                txn.commit().await?;
                Ok(Step::Rolled(stats.len() as u64, to))
            }
        }
    }
}

/// The hour to roll up next: the first hour at or after the watermark that has a
/// finished run, if it is before `target` (hours without runs are skipped).
async fn next_hour(
    db: &impl ConnectionTrait,
    wm: Option<DateTime<Utc>>,
    target: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    let (cond, values): (&str, Vec<Value>) = match wm {
        Some(w) => ("completed_at >= $1", vec![w.into()]),
        None => ("completed_at IS NOT NULL", vec![]),
    };
    let rows = db::query(
        db,
        format!(
            "SELECT completed_at FROM {HISTORY} WHERE {cond} AND {} ORDER BY completed_at LIMIT 1",
            finished("")
        ),
        values,
    )
    .await?;
    let first: Option<DateTime<Utc>> = match rows.first() {
        Some(r) => r.try_get("", "completed_at")?,
        None => None,
    };
    Ok(first
        .map(super::floor_hour)
        .filter(|h| *h < target)
        .map(|h| wm.map_or(h, |w| h.max(w))))
}

/// Moves the watermark from `from` to `to` (compare-and-set); `false` if it had moved.
async fn advance(
    txn: &impl ConnectionTrait,
    from: Option<DateTime<Utc>>,
    to: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let d = Dialect::of(txn);
    let same = match d {
        Dialect::Postgres => "IS NOT DISTINCT FROM",
        Dialect::Sqlite => "IS",
    };
    let from_value: Value = from.into();
    let done = db::exec(
        txn,
        format!(
            "UPDATE {WATERMARK_TABLE} SET rolled_up_to = $1, updated_at = {now} \
             WHERE id = 1 AND rolled_up_to {same} $2",
            now = d.now()
        ),
        [to.into(), from_value],
    )
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The figures of `hour` from the raw rows (read only).
pub async fn compute(
    db: &impl ConnectionTrait,
    hour: DateTime<Utc>,
) -> Result<Vec<HourStats>, DbErr> {
    let d = Dialect::of(db);
    let fin = finished("");
    let counts = "COUNT(*) AS runs, \
         SUM(CASE WHEN status = 'SUCCESS' THEN 1 ELSE 0 END) AS succeeded, \
         SUM(CASE WHEN status = 'FAILED' THEN 1 ELSE 0 END) AS failed, \
         SUM(CASE WHEN status = 'RATE_LIMITED' THEN 1 ELSE 0 END) AS rate_limited, \
         SUM(CASE WHEN status = 'CANCELLED' THEN 1 ELSE 0 END) AS cancelled, \
         CAST(COALESCE(SUM(records_count), 0) AS BIGINT) AS records";
    let range = "completed_at >= $1 AND completed_at < $2";
    let sql = match d {
        Dialect::Postgres => format!(
            "SELECT integration_id, {counts}, \
               CAST(percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms) AS BIGINT) AS p50, \
               CAST(percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms) AS BIGINT) AS p95, \
               CAST(percentile_disc(0.99) WITHIN GROUP (ORDER BY duration_ms) AS BIGINT) AS p99, \
               MAX(duration_ms) AS max_ms \
             FROM {HISTORY} WHERE {range} AND {fin} GROUP BY integration_id"
        ),
        // The same nearest-rank percentiles as `percentile_disc`: the value at 1-based
        // rank ceil(p·n) of the integration's durations in the hour, with integer
        // arithmetic for the ceiling ((k·n + 99) / 100 for p = k %).
        Dialect::Sqlite => format!(
            "WITH d AS (\
               SELECT integration_id, duration_ms, \
                 ROW_NUMBER() OVER (PARTITION BY integration_id ORDER BY duration_ms) AS rn, \
                 COUNT(*) OVER (PARTITION BY integration_id) AS n \
               FROM {HISTORY} WHERE {range} AND {fin} AND duration_ms IS NOT NULL), \
             p AS (\
               SELECT integration_id, \
                 MAX(CASE WHEN rn = (50 * n + 99) / 100 THEN duration_ms END) AS p50, \
                 MAX(CASE WHEN rn = (95 * n + 99) / 100 THEN duration_ms END) AS p95, \
                 MAX(CASE WHEN rn = (99 * n + 99) / 100 THEN duration_ms END) AS p99, \
                 MAX(duration_ms) AS max_ms \
               FROM d GROUP BY integration_id), \
             c AS (SELECT integration_id, {counts} FROM {HISTORY} WHERE {range} AND {fin} GROUP BY integration_id) \
             SELECT c.*, p.p50, p.p95, p.p99, p.max_ms FROM c LEFT JOIN p ON p.integration_id = c.integration_id"
        ),
    };
    let rows = db::query(db, sql, [hour.into(), (hour + TimeDelta::hours(1)).into()]).await?;
    rows.iter().map(|r| from_row(r, hour)).collect()
}

fn from_row(r: &QueryResult, hour: DateTime<Utc>) -> Result<HourStats, DbErr> {
    Ok(HourStats {
        integration_id: r.try_get("", "integration_id")?,
        hour,
        runs: r.try_get("", "runs")?,
        succeeded: r.try_get("", "succeeded")?,
        failed: r.try_get("", "failed")?,
        rate_limited: r.try_get("", "rate_limited")?,
        cancelled: r.try_get("", "cancelled")?,
        records: r.try_get("", "records")?,
        duration_p50_ms: r.try_get("", "p50")?,
        duration_p95_ms: r.try_get("", "p95")?,
        duration_p99_ms: r.try_get("", "p99")?,
        duration_max_ms: r.try_get("", "max_ms")?,
    })
}

/// Aggregate rows per statement (12 binds each).
const UPSERT_CHUNK: usize = 500;

/// Writes the rows with their absolute figures: a re-run of an hour writes the same.
async fn upsert(txn: &impl ConnectionTrait, stats: &[HourStats]) -> Result<(), DbErr> {
    for chunk in stats.chunks(UPSERT_CHUNK) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 12);
        let mut tuples = Vec::with_capacity(chunk.len());
        for s in chunk {
            let base = values.len();
            tuples.push(format!(
                "({})",
                (1..=12)
                    .map(|i| format!("${}", base + i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            values.extend([
                s.integration_id.into(),
                s.hour.into(),
                s.runs.into(),
                s.succeeded.into(),
                s.failed.into(),
                s.rate_limited.into(),
                s.cancelled.into(),
                s.records.into(),
                s.duration_p50_ms.into(),
                s.duration_p95_ms.into(),
                s.duration_p99_ms.into(),
                s.duration_max_ms.into(),
            ]);
        }
        db::exec(
            txn,
            format!(
                "INSERT INTO {STATS_TABLE} (integration_id, hour, runs, succeeded, failed, rate_limited, \
                   cancelled, records, duration_p50_ms, duration_p95_ms, duration_p99_ms, duration_max_ms) \
                 VALUES {} \
                 ON CONFLICT (integration_id, hour) DO UPDATE SET runs = excluded.runs, \
                   succeeded = excluded.succeeded, failed = excluded.failed, \
                   rate_limited = excluded.rate_limited, cancelled = excluded.cancelled, \
                   records = excluded.records, duration_p50_ms = excluded.duration_p50_ms, \
                   duration_p95_ms = excluded.duration_p95_ms, duration_p99_ms = excluded.duration_p99_ms, \
                   duration_max_ms = excluded.duration_max_ms",
                tuples.join(", ")
            ),
            values,
        )
        .await?;
    }
    Ok(())
}
