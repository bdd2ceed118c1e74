//! API keys: create and revoke, each with its audit event in the same transaction.

use entity::Role;
use sea_orm::ActiveEnum;
use sea_orm::TransactionTrait;
use serde_json::json;
use uuid::Uuid;

use syncfleet_worker::db::{self as q, Dialect};

use super::{Audit, audit};
use crate::auth::Caller;
use crate::db::new_key;
use crate::error::ApiError;
use crate::state::AppState;

/// A new key: its row id and the key itself (shown once).
pub struct NewKey {
    pub id: Uuid,
    pub key: String,
}

/// Creates a key named `name` with `role` in `workspace`.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    workspace: Uuid,
    name: &str,
    role: Role,
) -> Result<NewKey, ApiError> {
    let hasher = state
        .key_hasher
        .as_ref()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no API key hasher")))?;
    let (id, (key, key_id)) = (Uuid::now_v7(), new_key());
    let role = role.to_value();
    let txn = state.db.begin().await?;
    let exists = q::query(
        &txn,
        "SELECT 1 AS x FROM workspaces WHERE id = $1",
        [workspace.into()],
    )
    .await?;
    if exists.is_empty() {
        return Err(ApiError::field("workspaceId", "no such workspace"));
    }
    q::exec(
        &txn,
        format!(
            "INSERT INTO api_keys (id, workspace_id, name, role, key_hash, key_prefix, hash_version, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, {}, {})",
            crate::keyhash::HMAC_VERSION,
            Dialect::of(&txn).now()
        ),
        [
            id.into(),
            workspace.into(),
            name.to_owned().into(),
            role.clone().into(),
            hasher.hash(&key).into(),
            key_id.into(),
        ],
    )
    .await?;
    audit(
        &txn,
        caller,
        Audit {
            action: "key.create",
            integration: None,
            workspace_id: Some(workspace),
            reason: None,
            before: None,
            after: Some(json!({ "id": id, "name": name, "role": role })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(NewKey { id, key })
}

/// Revokes key `id` (one of the caller's workspace unless the caller is an operator);
/// every API replica stops accepting it at once.
pub async fn revoke(state: &AppState, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    let d = Dialect::of(&state.db);
    let txn = state.db.begin().await?;
    let mut values = vec![sea_orm::Value::from(id)];
    let scope = match caller.workspace_id {
        Some(ws) => {
            values.push(ws.into());
            // An operator key is revoked by an operator, not by the workspace it is homed in.
            " AND workspace_id = $2 AND role <> 'operator'"
        }
        None => "",
    };
    let rows = q::query(
        &txn,
        format!(
            "UPDATE api_keys SET revoked_at = {} WHERE id = $1 AND revoked_at IS NULL{scope} RETURNING workspace_id, name",
            d.now()
        ),
        values,
    )
    .await?;
    let row = rows.first().ok_or(ApiError::NotFound("key"))?;
    let workspace: Option<Uuid> = row.try_get("", "workspace_id")?;
    let name: String = row.try_get("", "name")?;
    if d == Dialect::Postgres {
        // Delivered at commit to every replica's listener, which drops its cached keys.
        q::query(
            &txn,
            "SELECT pg_notify($1, '')",
            [crate::auth_cache::CHANNEL.into()],
        )
        .await?;
    }
    audit(
        &txn,
        caller,
        Audit {
            action: "key.revoke",
            integration: None,
            workspace_id: workspace,
            reason: None,
            before: None,
            after: Some(json!({ "id": id, "name": name })),
        },
    )
    .await?;
    txn.commit().await?;
    state.auth_cache.clear();
    Ok(())
}
