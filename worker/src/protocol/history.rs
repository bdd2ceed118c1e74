//! A run's history row, written once when it ends (finish, quarantine, cancel) into the
//! append-only `run_history` table, from its live row (docs/architecture.md §3.3).

use chrono::{DateTime, Utc};
use entity::{ErrorClass, SyncStatus};
use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value};
use uuid::Uuid;

use crate::db::{self, Dialect};
use crate::store::Counts;

/// How a run ended.
pub(crate) struct Ended<'a> {
    /// Its live row, as [`crate::work::take`] returned it.
    pub live: &'a QueryResult,
    pub status: SyncStatus,
    pub counts: Counts,
    pub error_class: Option<ErrorClass>,
    pub error_message: Option<String>,
    /// It wrote records: it ends when they are written (the clock at the insert), not
    /// when its finish began (the transaction's time, which its next slot counts from).
    pub wrote: bool,
}

/// Rows per statement (21 binds each).
const CHUNK: usize = 200;

/// Writes the history rows of `ended` runs; `duration_ms` runs from each one's
/// `started_at` to its `completed_at` (see [`Ended::wrote`]). Returns each run's `duration_ms`, in order.
pub(crate) async fn insert(
    txn: &impl ConnectionTrait,
    ended: &[Ended<'_>],
) -> Result<Vec<i64>, DbErr> {
    let d = Dialect::of(txn);
    if d == Dialect::Postgres {
        return insert_pg(txn, ended).await;
    }
    let ts = |p: usize| match d {
        Dialect::Postgres => format!("CAST(${p} AS timestamptz)"),
        Dialect::Sqlite => format!("${p}"),
    };
    let mut durations = Vec::with_capacity(ended.len());
    for chunk in ended.chunks(CHUNK) {
        const N: usize = 19;
        let mut tuples = Vec::with_capacity(chunk.len());
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * N);
        for (k, e) in chunk.iter().enumerate() {
            let p = k * N;
            let started: Option<DateTime<Utc>> = e.live.try_get("", "started_at")?;
            let started_sql = ts(p + 11);
            let (end, duration) = match (started, e.wrote) {
                (None, _) => (d.now(), "NULL".to_owned()),
                (Some(_), true) => (d.clock(), d.ms_since_clock(&started_sql)),
                (Some(_), false) => (d.now(), d.ms_since(&started_sql)),
            };
            let ph = |r: std::ops::RangeInclusive<usize>| {
                r.map(|i| format!("${}", p + i))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            tuples.push(format!(
                "({}, {started_sql}, {end}, {duration}, {})",
                ph(1..=10),
                ph(12..=19)
            ));
            let c = e.counts;
            values.extend([
                e.live.try_get::<Uuid>("", "id")?.into(),
                e.live.try_get::<Uuid>("", "integration_id")?.into(),
                e.status.as_str().into(),
                e.live.try_get::<String>("", "trigger")?.into(),
                e.live.try_get::<DateTime<Utc>>("", "scheduled_for")?.into(),
                e.live.try_get::<i32>("", "attempt")?.into(),
                e.live.try_get::<i32>("", "claims")?.into(),
                e.live.try_get::<i32>("", "solo_claims")?.into(),
                e.live.try_get::<i64>("", "fence")?.into(),
                e.live.try_get::<DateTime<Utc>>("", "created_at")?.into(),
                started.into(),
                c.received.into(),
                c.inserted.into(),
                c.updated.into(),
                c.unchanged.into(),
                c.deleted.into(),
                e.error_class.map(|c| c.as_str().to_owned()).into(),
                e.error_message.clone().into(),
                e.live.try_get::<Option<String>>("", "worker_id")?.into(),
            ]);
        }
        let rows = db::query(
            txn,
            format!(
                "INSERT INTO run_history (id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, \
                   solo_claims, fence, created_at, started_at, completed_at, duration_ms, records_count, \
                   records_inserted, records_updated, records_unchanged, records_deleted, error_class, \
                   error_message, worker_id) VALUES {} RETURNING id, duration_ms",
                tuples.join(", ")
            ),
            values,
        )
        .await?;
        // RETURNING follows the VALUES order on both databases, but match by id anyway.
        let by_id: std::collections::HashMap<Uuid, i64> = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<Uuid>("", "id")?,
                    r.try_get::<Option<i64>>("", "duration_ms")?.unwrap_or(0),
                ))
            })
            .collect::<Result<_, DbErr>>()?;
        for e in chunk {
            let id: Uuid = e.live.try_get("", "id")?;
            durations.push(by_id.get(&id).copied().unwrap_or(0));
        }
    }
    Ok(durations)
}

/// PostgreSQL: every row in one JSON parameter, so the statement's text (and its cached
/// plan) is the same whatever the batch size (see `work::pg_array`).
async fn insert_pg(txn: &impl ConnectionTrait, ended: &[Ended<'_>]) -> Result<Vec<i64>, DbErr> {
    let mut rows = Vec::with_capacity(ended.len());
    for e in ended {
        let c = e.counts;
        rows.push(serde_json::json!({
            "id": e.live.try_get::<Uuid>("", "id")?,
            "integration_id": e.live.try_get::<Uuid>("", "integration_id")?,
            "status": e.status.as_str(),
            "trigger": e.live.try_get::<String>("", "trigger")?,
            "scheduled_for": e.live.try_get::<DateTime<Utc>>("", "scheduled_for")?,
            "attempt": e.live.try_get::<i32>("", "attempt")?,
            "claims": e.live.try_get::<i32>("", "claims")?,
            "solo_claims": e.live.try_get::<i32>("", "solo_claims")?,
            "fence": e.live.try_get::<i64>("", "fence")?,
            "created_at": e.live.try_get::<DateTime<Utc>>("", "created_at")?,
            "started_at": e.live.try_get::<Option<DateTime<Utc>>>("", "started_at")?,
            "wrote": e.wrote,
            "rc": c.received,
            "ri": c.inserted,
            "ru": c.updated,
            "rn": c.unchanged,
            "rd": c.deleted,
            "ec": e.error_class.map(|c| c.as_str()),
            "em": e.error_message,
            "worker_id": e.live.try_get::<Option<String>>("", "worker_id")?,
        }));
    }
    let sql = "INSERT INTO run_history (id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, \
           solo_claims, fence, created_at, started_at, completed_at, duration_ms, records_count, \
           records_inserted, records_updated, records_unchanged, records_deleted, error_class, \
           error_message, worker_id) \
         SELECT v.id, v.integration_id, v.status, v.\"trigger\", v.scheduled_for, v.attempt, v.claims, \
           v.solo_claims, v.fence, v.created_at, v.started_at, \
           CASE WHEN v.wrote THEN clock_timestamp() ELSE now() END, \
           CAST(EXTRACT(EPOCH FROM ((CASE WHEN v.wrote THEN clock_timestamp() ELSE now() END) - v.started_at)) * 1000 AS BIGINT), \
           v.rc, v.ri, v.ru, v.rn, v.rd, v.ec, v.em, v.worker_id \
         FROM jsonb_to_recordset($1::text::jsonb) AS v(id uuid, integration_id uuid, status text, \"trigger\" text, \
           scheduled_for timestamptz, attempt int, claims int, solo_claims int, fence bigint, created_at timestamptz, \
           started_at timestamptz, wrote boolean, rc bigint, ri bigint, ru bigint, rn bigint, rd bigint, ec text, \
           em text, worker_id text) \
         RETURNING id, duration_ms";
    let returned = db::query(
        txn,
        sql,
        [Value::from(serde_json::Value::Array(rows).to_string())],
    )
    .await?;
    let by_id: std::collections::HashMap<Uuid, i64> = returned
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<Uuid>("", "id")?,
                r.try_get::<Option<i64>>("", "duration_ms")?.unwrap_or(0),
            ))
        })
        .collect::<Result<_, DbErr>>()?;
    ended
        .iter()
        .map(|e| {
            Ok(by_id
                .get(&e.live.try_get::<Uuid>("", "id")?)
                .copied()
                .unwrap_or(0))
        })
        .collect()
}
