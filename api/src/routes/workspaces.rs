//! `/api/workspaces`: the workspaces of this install, for operator keys.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Operator;
use crate::control::workspaces::{self, Workspace};
use crate::error::ApiError;
use crate::extract::{ApiJson, PathId};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/workspaces", get(list).post(create))
        .route(
            "/api/workspaces/{id}",
            get(read).patch(update).delete(remove),
        )
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceBody {
    /// 1 to 200 characters, one line, not blank.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceView {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<Workspace> for WorkspaceView {
    fn from(w: Workspace) -> Self {
        Self {
            id: w.id,
            name: w.name,
            created_at: w.created_at,
        }
    }
}

fn name(body: &WorkspaceBody) -> Result<String, ApiError> {
    match super::common::name_problem(&body.name, 200) {
        Some(message) => Err(ApiError::field("name", message)),
        None => Ok(body.name.trim().to_owned()),
    }
}

/// Create a workspace (operator keys only).
#[utoipa::path(post, path = "/api/workspaces", request_body = WorkspaceBody, tag = "workspaces",
    responses((status = 201, body = WorkspaceView), (status = 403, description = "not an operator key"),
        (status = 422, description = "validation failed")))]
pub async fn create(
    State(state): State<AppState>,
    Operator(caller): Operator,
    ApiJson(body): ApiJson<WorkspaceBody>,
) -> Result<(StatusCode, Json<WorkspaceView>), ApiError> {
    let w = workspaces::create(&state, &caller, &name(&body)?).await?;
    Ok((StatusCode::CREATED, Json(w.into())))
}

/// List workspaces (operator keys only).
#[utoipa::path(get, path = "/api/workspaces", tag = "workspaces",
    responses((status = 200, body = [WorkspaceView]), (status = 403, description = "not an operator key")))]
pub async fn list(
    State(state): State<AppState>,
    Operator(_): Operator,
) -> Result<Json<Vec<WorkspaceView>>, ApiError> {
    let all = workspaces::list(&state).await?;
    Ok(Json(all.into_iter().map(Into::into).collect()))
}

/// One workspace (operator keys only).
#[utoipa::path(get, path = "/api/workspaces/{id}", params(("id" = Uuid, Path)), tag = "workspaces",
    responses((status = 200, body = WorkspaceView), (status = 403, description = "not an operator key"),
        (status = 404, description = "not found")))]
pub async fn read(
    State(state): State<AppState>,
    Operator(_): Operator,
    PathId(id): PathId,
) -> Result<Json<WorkspaceView>, ApiError> {
    Ok(Json(workspaces::get(&state, id).await?.into()))
}

/// Rename a workspace (operator keys only).
#[utoipa::path(patch, path = "/api/workspaces/{id}", params(("id" = Uuid, Path)), request_body = WorkspaceBody,
    tag = "workspaces", responses((status = 200, body = WorkspaceView), (status = 403, description = "not an operator key"),
        (status = 404, description = "not found"), (status = 422, description = "validation failed")))]
pub async fn update(
    State(state): State<AppState>,
    Operator(caller): Operator,
    PathId(id): PathId,
    ApiJson(body): ApiJson<WorkspaceBody>,
) -> Result<Json<WorkspaceView>, ApiError> {
    let w = workspaces::rename(&state, &caller, id, &name(&body)?).await?;
    Ok(Json(w.into()))
}

/// Delete an empty workspace (operator keys only); one with integrations or active keys
/// is a conflict.
#[utoipa::path(delete, path = "/api/workspaces/{id}", params(("id" = Uuid, Path)), tag = "workspaces",
    responses((status = 204, description = "deleted"), (status = 403, description = "not an operator key"),
        (status = 404, description = "not found"), (status = 409, description = "not empty")))]
pub async fn remove(
    State(state): State<AppState>,
    Operator(caller): Operator,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    workspaces::delete(&state, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
