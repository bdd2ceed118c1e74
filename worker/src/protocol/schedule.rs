//! The scheduler's tick: due integrations → PENDING runs, in one transaction.
//!
//! Leaderless: every API replica runs it. On PostgreSQL `FOR UPDATE SKIP LOCKED` hands
//! each concurrent tick a disjoint set of integrations; the one-live-run index of
//! `live_runs` makes a double schedule impossible even if that were bypassed. The caller pushes the returned run ids after the commit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::Trigger;
use sea_orm::{ConnectionTrait, DbErr, TransactionSession, TransactionTrait, Value};
use uuid::Uuid;

use super::ids;
use crate::db::{self, Dialect};

/// Claims up to `limit` due integrations and creates their PENDING runs.
pub async fn tick<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let d = Dialect::of(db);
    let now = d.now();
    let txn = db.begin().await?;
    // PostgreSQL: one statement claims the due integrations (`SKIP LOCKED` hands
    // concurrent schedulers disjoint rows), clears their slot and counts the run.
    // Whether an integration already has a live run is left to the one-live-run unique
    // index at the insert below: a filter on `live_runs` here is planned from the table's
    // statistics, and stale ones made it scan every live run once per due integration
    // (a second per tick at 50,000 due). SQLite: a no-op write takes the database's
    // write lock up front, so the transaction never upgrades a stale read snapshot; the
    // slot is cleared after the insert.
    let sql = match d {
        Dialect::Postgres => format!(
            "UPDATE integrations AS u SET next_sync_at = NULL, runs_total = u.runs_total + 1 \
             FROM (SELECT i.id, i.next_sync_at AS slot FROM integrations i \
                   WHERE i.sync_enabled AND i.next_sync_at IS NOT NULL AND i.next_sync_at <= {now} \
                   ORDER BY i.next_sync_at LIMIT {limit} FOR NO KEY UPDATE SKIP LOCKED) AS d \
             WHERE u.id = d.id \
             RETURNING u.id, d.slot AS next_sync_at, u.next_trigger, u.retry_count"
        ),
        Dialect::Sqlite => format!(
            "UPDATE integrations SET updated_at = updated_at WHERE id IN (\
               SELECT i.id FROM integrations i \
               WHERE i.sync_enabled AND i.next_sync_at IS NOT NULL AND i.next_sync_at <= {now} \
               AND NOT EXISTS (SELECT 1 FROM live_runs s WHERE s.integration_id = i.id) \
               ORDER BY i.next_sync_at LIMIT {limit}) \
             RETURNING id, next_sync_at, next_trigger, retry_count"
        ),
    };
    // The limit is a literal, not a parameter: PostgreSQL's generic plan for a
    // parameterised LIMIT sorts every due row.
    let due = db::query(&txn, sql, []).await?;
    if due.is_empty() {
        txn.rollback().await?;
        return Ok(Vec::new());
    }
    let mut values: Vec<Value> = Vec::with_capacity(due.len() * 5);
    let mut tuples = Vec::with_capacity(due.len());
    let mut claimed = Vec::with_capacity(due.len());
    for (n, r) in due.iter().enumerate() {
        let id: Uuid = r.try_get("", "id")?;
        let slot: DateTime<Utc> = r.try_get("", "next_sync_at")?;
        let trigger: Trigger = r.try_get("", "next_trigger")?;
        let retry_count: i32 = r.try_get("", "retry_count")?;
        claimed.push(id);
        let p = n * 5;
        tuples.push(format!(
            "(${}, ${}, 'PENDING', ${}, ${}, ${}, {now}, {now})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5
        ));
        values.extend([
            Uuid::now_v7().into(),
            id.into(),
            trigger.as_str().into(),
            slot.into(),
            retry_count.saturating_add(1).into(),
        ]);
    }
    let inserted = db::query(
        &txn,
        format!(
            "INSERT INTO live_runs (id, integration_id, status, \"trigger\", scheduled_for, attempt, enqueued_at, created_at) \
             VALUES {} ON CONFLICT DO NOTHING RETURNING id, integration_id",
            tuples.join(", ")
        ),
        values,
    )
    .await?;
    // A claimed integration whose insert hit a conflict (it has a live run) gets no run: the live run's finish sets its next slot, and
    // the reaper's repair pass gives an integration left without one a fresh one.
    let created = ids(&inserted, "integration_id")?;
    match d {
        Dialect::Postgres => {
            if created.len() < claimed.len() {
                let made: std::collections::HashSet<Uuid> = created.into_iter().collect();
                let skipped: Vec<Uuid> = claimed
                    .into_iter()
                    .filter(|id| !made.contains(id))
                    .collect();
                let ph: Vec<String> = (1..=skipped.len()).map(|i| format!("${i}")).collect();
                db::exec(
                    &txn,
                    format!(
                        "UPDATE integrations SET runs_total = runs_total - 1 WHERE id IN ({})",
                        ph.join(", ")
                    ),
                    skipped.into_iter().map(Value::from),
                )
                .await?;
            }
        }
        Dialect::Sqlite => {
            let n = claimed.len();
            let claimed_ph: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
            let created_ph: Vec<String> = (n + 1..=n + created.len())
                .map(|i| format!("${i}"))
                .collect();
            let counted = if created.is_empty() {
                String::new()
            } else {
                format!(
                    ", runs_total = runs_total + CASE WHEN id IN ({}) THEN 1 ELSE 0 END",
                    created_ph.join(", ")
                )
            };
            db::exec(
                &txn,
                format!(
                    "UPDATE integrations SET next_sync_at = NULL{counted} WHERE id IN ({})",
                    claimed_ph.join(", ")
                ),
                claimed.into_iter().chain(created).map(Value::from),
            )
            .await?;
        }
    }
    txn.commit().await?;
    ids(&inserted, "id")
}

/// How long until the earliest enabled integration falls due (zero if one is overdue),
/// by the database clock; `None` when nothing is scheduled.
pub async fn next_due_in(db: &impl ConnectionTrait) -> Result<Option<Duration>, DbErr> {
    let d = Dialect::of(db);
    let rows = db::query(
        db,
        format!(
            "SELECT {} AS ms FROM integrations WHERE sync_enabled AND next_sync_at IS NOT NULL \
             ORDER BY next_sync_at LIMIT 1",
            d.ms_since("next_sync_at")
        ),
        [],
    )
    .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let since: i64 = r.try_get("", "ms")?;
    Ok(Some(Duration::from_millis(
        u64::try_from(since.saturating_neg()).unwrap_or(0),
    )))
}
