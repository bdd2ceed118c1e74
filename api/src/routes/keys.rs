//! `/api/keys`: API key management for admins. A key is shown once, at creation;
//! only its keyed hash (HMAC-SHA256 under a server key) and its non-secret id are
//! stored.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use entity::Role;
use syncfleet_worker::db as q;

use crate::auth::Admin;
use crate::control;
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKey {
    /// 1 to 200 characters, one line, not blank.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// `admin` (all writes) or `viewer` (reads only) in one workspace; an operator key
    /// may also create `operator` keys (span every workspace).
    pub role: String,
    /// The workspace of the new key (operator callers only; default: the caller's own,
    /// or for an operator the install's first workspace).
    pub workspace_id: Option<Uuid>,
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
    let operator = caller.role == Role::Operator;
    let role = match body.role.as_str() {
        "admin" => Some(Role::Admin),
        "viewer" => Some(Role::Viewer),
        "operator" if operator => Some(Role::Operator),
        _ => None,
    };
    if role.is_none() {
        errors.push(crate::error::FieldProblem {
            field: "role".into(),
            message: if operator {
                "must be `admin`, `viewer` or `operator`"
            } else {
                "must be `admin` or `viewer`"
            }
            .into(),
        });
    }
    if body.workspace_id.is_some() && !operator {
        errors.push(crate::error::FieldProblem {
            field: "workspaceId".into(),
            message: "only an operator key chooses the workspace of a new key".into(),
        });
    }
    let (Some(role), true) = (role, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let ws = match body.workspace_id {
        Some(ws) => ws,
        None => caller.home_workspace(&state.db).await?,
    };
    let name = body.name.trim().to_owned();
    let k = control::keys::create(&state, &caller, ws, &name, role).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            id: k.id,
            name,
            role: body.role,
            key: k.key,
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
        // Operator keys homed in a workspace are not that workspace's to see.
        Some(ws) => (
            " WHERE workspace_id = $1 AND role <> 'operator'",
            vec![sea_orm::Value::from(ws)],
        ),
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
    control::keys::revoke(&state, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
