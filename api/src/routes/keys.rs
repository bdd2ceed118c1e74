//! `/api/keys`: API key management for admins. A key is shown once, at creation;
//! only its keyed hash (HMAC-SHA256 under a server key) and its non-secret id are
//! stored.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use sea_orm::TransactionTrait;
use syncfleet_worker::audit;
use syncfleet_worker::db::{self as q, Dialect};

use crate::auth::{Admin, Caller};
use crate::db::new_key;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::extract::PathId;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/keys", get(list).post(create))
        .route("/api/keys/{id}", delete(revoke))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// 1 to 200 characters, one line, not blank.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// `admin` (all writes) or `viewer` (reads only).
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    /// The key itself: shown this once.
    pub key: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    /// The key's non-secret id, the start of the key (`sf_` and 8 hex characters), to
    /// recognise it; `null` for the bootstrap token and keys made before key ids.
    pub prefix: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

async fn workspace(state: &AppState, caller: &Caller) -> Result<Uuid, ApiError> {
    Ok(match caller.workspace_id {
        Some(ws) => ws,
        None => crate::db::default_workspace(&state.db).await?,
    })
}

/// Create an API key.
#[utoipa::path(post, path = "/api/keys", request_body = CreateKey, tag = "keys",
    responses((status = 201, body = CreatedKey), (status = 422, description = "validation failed")))]
pub async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let mut errors = Vec::new();
    if let Some(message) = super::common::name_problem(&body.name, 200) {
        errors.push(crate::error::FieldProblem {
            field: "name".into(),
            message,
        });
    }
    if !["admin", "viewer"].contains(&body.role.as_str()) {
        errors.push(crate::error::FieldProblem {
            field: "role".into(),
            message: "must be `admin` or `viewer`".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let ws = workspace(&state, &caller).await?;
    let hasher = state
        .key_hasher
        .as_ref()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no API key hasher")))?;
    let (id, (key, key_id)) = (Uuid::now_v7(), new_key());
    q::exec(
        &state.db,
        format!(
            "INSERT INTO api_keys (id, workspace_id, name, role, key_hash, key_prefix, hash_version, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, {}, {})",
            crate::keyhash::HMAC_VERSION,
            Dialect::of(&state.db).now()
        ),
        [
            id.into(),
            ws.into(),
            body.name.trim().to_owned().into(),
            body.role.clone().into(),
            hasher.hash(&key).into(),
            key_id.into(),
        ],
    )
    .await?;
    audit::record(
        &state.db,
        audit::Event {
            integration_id: None,
            workspace_id: Some(ws),
            actor: caller.actor(),
            actor_name: Some(caller.key_name.clone()),
            action: "key.create".into(),
            reason: None,
            before: None,
            after: Some(json!({ "id": id, "name": body.name, "role": body.role })),
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            id,
            name: body.name.trim().to_owned(),
            role: body.role,
            key,
        }),
    ))
}

/// List API keys (never the keys themselves).
#[utoipa::path(get, path = "/api/keys", tag = "keys", responses((status = 200, body = [KeyView])))]
pub async fn list(
    State(state): State<AppState>,
    Admin(caller): Admin,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    let (filter, values) = match caller.workspace_id {
        Some(ws) => (" WHERE workspace_id = $1", vec![sea_orm::Value::from(ws)]),
        None => ("", Vec::new()),
    };
    let rows = q::query(
        &state.db,
        format!(
            "SELECT id, name, role, key_prefix, created_at, last_used_at, revoked_at FROM api_keys{filter} ORDER BY created_at"
        ),
        values,
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(KeyView {
            id: r.try_get("", "id")?,
            name: r.try_get("", "name")?,
            role: r.try_get("", "role")?,
            prefix: Some(r.try_get::<String>("", "key_prefix")?).filter(|p| !p.is_empty()),
            created_at: r.try_get("", "created_at")?,
            last_used_at: r.try_get("", "last_used_at")?,
            revoked_at: r.try_get("", "revoked_at")?,
        });
    }
    Ok(Json(out))
}

/// Revoke an API key; it stops working at once, on every API replica.
#[utoipa::path(delete, path = "/api/keys/{id}", params(("id" = Uuid, Path)), tag = "keys",
    responses((status = 204, description = "revoked"), (status = 404, description = "not found")))]
pub async fn revoke(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let ws = workspace(&state, &caller).await?;
    let scope = if caller.workspace_id.is_some() {
        " AND workspace_id = $2"
    } else {
        ""
    };
    let mut values = vec![sea_orm::Value::from(id)];
    if caller.workspace_id.is_some() {
        values.push(ws.into());
    }
    let d = Dialect::of(&state.db);
    let txn = state.db.begin().await?;
    let r = q::exec(
        &txn,
        format!(
            "UPDATE api_keys SET revoked_at = {} WHERE id = $1 AND revoked_at IS NULL{scope}",
            d.now()
        ),
        values,
    )
    .await?;
    if r.rows_affected() == 0 {
        return Err(ApiError::NotFound("key"));
    }
    if d == Dialect::Postgres {
        // Delivered at commit to every replica's listener, which drops its cached keys.
        q::query(
            &txn,
            "SELECT pg_notify($1, '')",
            [crate::auth_cache::CHANNEL.into()],
        )
        .await?;
    }
    txn.commit().await?;
    state.auth_cache.clear();
    audit::record(
        &state.db,
        audit::Event {
            integration_id: None,
            workspace_id: Some(ws),
            actor: caller.actor(),
            actor_name: Some(caller.key_name.clone()),
            action: "key.revoke".into(),
            reason: None,
            before: None,
            after: Some(json!({ "id": id })),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
