//! Freshness objectives (docs/architecture.md §4.16): an integration whose `stale_at`
//! passes before a success moves it is stale. `stale_at` is a due time like
//! `next_sync_at`, indexed on the rows that have one, so detection reads only the
//! integrations that came due, never every integration.

use sea_orm::{ConnectionTrait, DbErr, TransactionSession, TransactionTrait};
use uuid::Uuid;

use super::events::{self, EventType, NewEvent};
use crate::db::{self, Dialect};

/// The SQL of an integration's next `stale_at` after a success now: `now +
/// stale_after_secs`, NULL when it has no objective.
pub fn next_stale_at(d: Dialect) -> String {
    format!(
        "CASE WHEN stale_after_secs IS NULL THEN NULL ELSE {} END",
        d.now_plus_ms("(stale_after_secs * 1000)")
    )
}

/// The objective in force for a setting: the custom value, or twice the interval plus
/// the lease (none for manual-only integrations).
pub fn objective(custom: Option<i64>, interval_secs: Option<i64>, lease_secs: i64) -> Option<i64> {
    custom.or_else(|| interval_secs.map(|i| 2 * i + lease_secs))
}

/// Marks up to `limit` integrations whose objective came due as stale and writes one
/// `integration.stale` event each, in one transaction. Rows another transaction holds
/// (a finish) are skipped: the finish may be the success that keeps them fresh.
pub async fn detect<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    let txn = db.begin().await?;
    let d = Dialect::of(&txn);
    let now = d.now();
    let rows = db::query(
        &txn,
        format!(
            "UPDATE integrations SET stale_since = {now}, stale_at = NULL, \
               unhealthy_since = COALESCE(unhealthy_since, {now}) \
             WHERE id IN (SELECT id FROM integrations WHERE stale_at <= {now} ORDER BY stale_at LIMIT {limit} {lock}) \
             AND stale_at <= {now} RETURNING id, health",
            lock = d.skip_locked_state(),
        ),
        [],
    )
    .await?;
    if rows.is_empty() {
        txn.rollback().await?;
        return Ok(Vec::new());
    }
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut e = NewEvent::new(EventType::Stale, r.try_get("", "id")?);
        e.health_before = Some(r.try_get("", "health")?);
        items.push(e);
    }
    let emitted = events::emit(&txn, &items).await?;
    txn.commit().await?;
    Ok(emitted.deliveries)
}

/// Gives every integration without a custom objective the default one for `lease_secs`
/// and a `stale_at` if it has none (at API start: the lease may have changed, and rows
/// from before objectives existed get theirs). One statement each.
pub async fn align_defaults(db: &impl ConnectionTrait, lease_secs: i64) -> Result<u64, DbErr> {
    let d = Dialect::of(db);
    let objective = format!("(2 * sync_interval_secs + {lease_secs})");
    let a = db::exec(
        db,
        format!(
            "UPDATE integrations SET stale_after_secs = {objective} WHERE NOT stale_after_custom \
             AND ((sync_interval_secs IS NULL AND stale_after_secs IS NOT NULL) \
               OR (sync_interval_secs IS NOT NULL AND (stale_after_secs IS NULL OR stale_after_secs <> {objective})))"
        ),
        [],
    )
    .await?;
    let b = db::exec(
        db,
        format!(
            "UPDATE integrations SET stale_at = {due} WHERE stale_at IS NULL AND stale_since IS NULL \
             AND stale_after_secs IS NOT NULL AND sync_enabled",
            due = d.plus_ms("COALESCE(last_success_at, created_at)", "(stale_after_secs * 1000)"),
        ),
        [],
    )
    .await?;
    Ok(a.rows_affected() + b.rows_affected())
}

/// Recomputes integration `id`'s objective (unless custom: twice the interval plus
/// `lease_secs`, none when manual-only) and its `stale_at` from its last success, inside
/// the caller's transaction, after a change of its settings. A paused integration, or
/// one already stale, has no `stale_at`.
pub async fn refresh(db: &impl ConnectionTrait, id: Uuid, lease_secs: i64) -> Result<(), DbErr> {
    let d = Dialect::of(db);
    db::exec(
        db,
        format!(
            "UPDATE integrations SET stale_after_secs = CASE WHEN stale_after_custom THEN stale_after_secs \
               WHEN sync_interval_secs IS NULL THEN NULL ELSE 2 * sync_interval_secs + {lease_secs} END WHERE id = $1"
        ),
        [id.into()],
    )
    .await?;
    db::exec(
        db,
        format!(
            "UPDATE integrations SET stale_at = CASE WHEN health = 'paused' OR stale_after_secs IS NULL \
               OR stale_since IS NOT NULL THEN NULL ELSE {due} END WHERE id = $1",
            due = d.plus_ms("COALESCE(last_success_at, created_at)", "(stale_after_secs * 1000)"),
        ),
        [id.into()],
    )
    .await?;
    Ok(())
}
