//! Resolving a conflict by hand (docs/architecture.md §4.18): the decision, its effect on
//! the record and its push, and the audit event, in one transaction.

use sea_orm::TransactionTrait;
use serde_json::json;
use uuid::Uuid;

use syncfleet_worker::conflicts::{self, Resolution, ResolveError};
use syncfleet_worker::db as q;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Resolves open conflict `id` (of an integration the caller sees) with `resolution`.
pub async fn resolve(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    resolution: Resolution,
    reason: Option<String>,
) -> Result<(), ApiError> {
    let rows = q::query(
        &state.db,
        "SELECT integration_id FROM conflicts WHERE id = $1",
        [id.into()],
    )
    .await?;
    let integration: Uuid = rows
        .first()
        .ok_or(ApiError::NotFound("conflict"))?
        .try_get("", "integration_id")?;
    // Another workspace's conflict is not found, like its integration.
    let m = crate::routes::common::load(state, caller, integration)
        .await
        .map_err(|_| ApiError::NotFound("conflict"))?;
    let txn = state.db.begin().await?;
    let resolved = conflicts::resolve(&txn, integration, id, &resolution, &caller.actor())
        .await
        .map_err(|e| match e {
            ResolveError::NotFound => ApiError::NotFound("conflict"),
            ResolveError::AlreadyResolved(how) => {
                ApiError::Conflict(format!("the conflict was already resolved ({how})"))
            }
            ResolveError::Db(e) => e.into(),
        })?;
    super::audit(
        &txn,
        caller,
        super::Audit {
            action: "conflict.resolve",
            integration: Some(&m),
            workspace_id: None,
            reason,
            before: None,
            after: Some(json!({
                "conflictId": id,
                "externalId": resolved.external_id,
                "resolution": resolution.as_str(),
            })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(())
}
