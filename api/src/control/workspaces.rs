//! Workspaces (operator keys only): create, rename, delete, each audited.

use sea_orm::TransactionTrait;
use serde_json::json;
use uuid::Uuid;

use syncfleet_worker::db::{self as q, Dialect};

use super::{Audit, audit};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// A workspace as stored.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub id: Uuid,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

const COLUMNS: &str = "id, name, created_at";

fn from_row(r: &sea_orm::QueryResult) -> Result<Workspace, ApiError> {
    Ok(Workspace {
        id: r.try_get("", "id")?,
        name: r.try_get("", "name")?,
        created_at: r.try_get("", "created_at")?,
    })
}

pub async fn list(state: &AppState) -> Result<Vec<Workspace>, ApiError> {
    let rows = q::query(
        &state.db,
        format!("SELECT {COLUMNS} FROM workspaces ORDER BY created_at, id"),
        [],
    )
    .await?;
    rows.iter().map(from_row).collect()
}

pub async fn get(state: &AppState, id: Uuid) -> Result<Workspace, ApiError> {
    let rows = q::query(
        &state.db,
        format!("SELECT {COLUMNS} FROM workspaces WHERE id = $1"),
        [id.into()],
    )
    .await?;
    rows.first()
        .map(from_row)
        .ok_or(ApiError::NotFound("workspace"))?
}

pub async fn create(state: &AppState, caller: &Caller, name: &str) -> Result<Workspace, ApiError> {
    let txn = state.db.begin().await?;
    let rows = q::query(
        &txn,
        format!(
            "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, {}) RETURNING {COLUMNS}",
            Dialect::of(&txn).now()
        ),
        [Uuid::now_v7().into(), name.to_owned().into()],
    )
    .await?;
    let w = rows
        .first()
        .map(from_row)
        .ok_or(ApiError::NotFound("workspace"))??;
    audit(
        &txn,
        caller,
        Audit {
            action: "workspace.create",
            integration: None,
            workspace_id: Some(w.id),
            reason: None,
            before: None,
            after: Some(json!({ "id": w.id, "name": w.name })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(w)
}

pub async fn rename(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    name: &str,
) -> Result<Workspace, ApiError> {
    let txn = state.db.begin().await?;
    let before = q::query(
        &txn,
        format!("SELECT {COLUMNS} FROM workspaces WHERE id = $1"),
        [id.into()],
    )
    .await?;
    let before = before
        .first()
        .map(from_row)
        .ok_or(ApiError::NotFound("workspace"))??;
    let rows = q::query(
        &txn,
        format!("UPDATE workspaces SET name = $2 WHERE id = $1 RETURNING {COLUMNS}"),
        [id.into(), name.to_owned().into()],
    )
    .await?;
    let w = rows
        .first()
        .map(from_row)
        .ok_or(ApiError::NotFound("workspace"))??;
    audit(
        &txn,
        caller,
        Audit {
            action: "workspace.update",
            integration: None,
            workspace_id: Some(id),
            reason: None,
            before: Some(json!({ "name": before.name })),
            after: Some(json!({ "name": w.name })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(w)
}

/// Deletes an empty workspace: one that still has integrations or live keys is a
/// conflict (deleting it would orphan them or cut their access silently).
pub async fn delete(state: &AppState, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    let txn = state.db.begin().await?;
    let rows = q::query(
        &txn,
        "SELECT (SELECT COUNT(*) FROM integrations WHERE workspace_id = $1) AS i, \
                (SELECT COUNT(*) FROM api_keys WHERE workspace_id = $1 AND revoked_at IS NULL AND role <> 'operator') AS k, \
                (SELECT COUNT(*) FROM workspaces WHERE id = $1) AS w",
        [id.into()],
    )
    .await?;
    let r = rows.first().ok_or(ApiError::NotFound("workspace"))?;
    let (i, k, w): (i64, i64, i64) = (
        r.try_get("", "i")?,
        r.try_get("", "k")?,
        r.try_get("", "w")?,
    );
    if w == 0 {
        return Err(ApiError::NotFound("workspace"));
    }
    if i > 0 || k > 0 {
        return Err(ApiError::Conflict(format!(
            "the workspace still has {i} integration(s) and {k} active key(s); delete or revoke them first"
        )));
    }
    audit(
        &txn,
        caller,
        Audit {
            action: "workspace.delete",
            integration: None,
            workspace_id: Some(id),
            reason: None,
            before: Some(json!({ "id": id })),
            after: None,
        },
    )
    .await?;
    // Keys that are revoked (or operators homed here) keep their rows, unhomed.
    q::exec(
        &txn,
        "UPDATE api_keys SET workspace_id = NULL WHERE workspace_id = $1",
        [id.into()],
    )
    .await?;
    q::exec(&txn, "DELETE FROM workspaces WHERE id = $1", [id.into()]).await?;
    txn.commit().await?;
    Ok(())
}
