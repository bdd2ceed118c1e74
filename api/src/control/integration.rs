//! Creating, changing and deleting an integration.

use entity::{ConnectorKind, integrations};
use sea_orm::TransactionTrait;
use serde_json::{Value, json};
use uuid::Uuid;

use syncfleet_worker::db::{self as q, Dialect};

use super::{Audit, audit, lock, reread};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crate::views::IntegrationView;

/// A validated new integration (its config already sealed for storage).
pub struct NewIntegration {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub kind: ConnectorKind,
    pub config: Value,
    pub interval: Option<i64>,
    pub enabled: bool,
    pub max_retries: i32,
    /// A custom freshness objective, seconds (`None` = the default).
    pub stale_after: Option<i64>,
    pub conflict_strategy: String,
}

/// Creates it; a new enabled integration is due at once.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    n: NewIntegration,
) -> Result<integrations::Model, ApiError> {
    let txn = state.db.begin().await?;
    let now = Dialect::of(&txn).now();
    let next = if n.enabled { now } else { "NULL" };
    q::exec(
        &txn,
        format!(
            "INSERT INTO integrations (id, workspace_id, name, kind, config, sync_interval_secs, sync_enabled, \
             next_sync_at, next_trigger, followup_requested, retry_count, max_retries, health, version, created_at, updated_at, \
             stale_after_secs, stale_after_custom, conflict_strategy) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, {next}, 'schedule', false, 0, $8, $9, 1, {now}, {now}, $10, $11, $12)"
        ),
        [
            n.id.into(),
            n.workspace_id.into(),
            n.name.into(),
            n.kind.as_str().into(),
            n.config.into(),
            n.interval.into(),
            n.enabled.into(),
            n.max_retries.into(),
            (if n.enabled { "healthy" } else { "paused" }).into(),
            n.stale_after.into(),
            n.stale_after.is_some().into(),
            n.conflict_strategy.into(),
        ],
    )
    .await?;
    syncfleet_worker::notifications::freshness::refresh(&txn, n.id, state.lease_secs()).await?;
    let m = reread(&txn, n.id).await?;
    audit(
        &txn,
        caller,
        Audit {
            action: "integration.create",
            integration: Some(&m),
            workspace_id: None,
            reason: None,
            before: None,
            after: Some(json!(IntegrationView::from(m.clone()))),
        },
    )
    .await?;
    txn.commit().await?;
    state.scheduler_wake.notify_one();
    Ok(m)
}

/// A validated change of name, config (sealed) or `maxRetries`, against the `version`
/// the client read.
pub struct Changes {
    pub version: i32,
    pub name: Option<String>,
    pub config: Option<Value>,
    pub max_retries: Option<i32>,
    /// `Some(None)` = back to the default freshness objective.
    pub stale_after: Option<Option<i64>>,
    pub conflict_strategy: Option<String>,
    pub reason: Option<String>,
}

/// Applies `ch` to the caller's integration `id` (a stale `version` is a conflict).
pub async fn update(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    ch: Changes,
) -> Result<integrations::Model, ApiError> {
    let txn = state.db.begin().await?;
    let before = lock(&txn, caller, id).await?;
    if before.version != ch.version {
        return Err(ApiError::VersionConflict(before.version));
    }
    let now = Dialect::of(&txn).now();
    q::exec(
        &txn,
        format!(
            "UPDATE integrations SET name = COALESCE($2, name), config = COALESCE($3, config), \
             max_retries = COALESCE($4, max_retries), conflict_strategy = COALESCE($5, conflict_strategy), \
             version = version + 1, updated_at = {now} WHERE id = $1"
        ),
        [
            id.into(),
            ch.name.into(),
            ch.config.into(),
            ch.max_retries.into(),
            ch.conflict_strategy.into(),
        ],
    )
    .await?;
    if let Some(custom) = ch.stale_after {
        q::exec(
            &txn,
            "UPDATE integrations SET stale_after_secs = $2, stale_after_custom = $3 WHERE id = $1",
            [id.into(), custom.into(), custom.is_some().into()],
        )
        .await?;
        syncfleet_worker::notifications::freshness::refresh(&txn, id, state.lease_secs()).await?;
    }
    let after = reread(&txn, id).await?;
    audit(
        &txn,
        caller,
        Audit {
            action: "integration.update",
            integration: Some(&after),
            workspace_id: None,
            reason: ch.reason,
            before: Some(json!(IntegrationView::from(before))),
            after: Some(json!(IntegrationView::from(after.clone()))),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(after)
}

/// Deletes the caller's integration `id` with its runs, records and hourly aggregates;
/// the audit trail (including this deletion) stays.
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    reason: Option<String>,
) -> Result<(), ApiError> {
    let txn = state.db.begin().await?;
    let before = lock(&txn, caller, id).await?;
    audit(
        &txn,
        caller,
        Audit {
            action: "integration.delete",
            integration: Some(&before),
            workspace_id: None,
            reason,
            before: Some(json!(IntegrationView::from(before.clone()))),
            after: None,
        },
    )
    .await?;
    // The aggregates have no foreign key to cascade from (docs/architecture.md §3.9).
    q::exec(
        &txn,
        format!(
            "DELETE FROM {} WHERE integration_id = $1",
            syncfleet_worker::history::STATS_TABLE
        ),
        [id.into()],
    )
    .await?;
    q::exec(&txn, "DELETE FROM integrations WHERE id = $1", [id.into()]).await?;
    txn.commit().await?;
    Ok(())
}
