//! `/api/sync/outbox`: the local changes waiting for the cloud, held by a conflict, or
//! whose push failed (docs/architecture.md §3.11, §4.17), and the hand retry of a failed
//! one. Reading takes any key of the workspace; retrying an admin key.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use sea_orm::QueryResult;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use syncfleet_worker::db as q;

use crate::auth::{Admin, Caller};
use crate::error::ApiError;
use crate::extract::{ApiQuery, PathId};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/sync/outbox", get(list))
        .route("/api/sync/outbox/{id}/retry", post(retry))
}

/// The statuses an outbox entry can have.
pub const STATUSES: [&str; 5] = ["pending", "failed", "conflict", "pushed", "superseded"];

/// One local change and how its push went.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntryView {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub external_id: String,
    /// `upsert` or `delete`.
    pub operation: String,
    /// `pending` (waits for its push, or is being pushed: `inFlight`), `failed` (the
    /// cloud refused it: retry by hand), `conflict` (held by an open conflict), `pushed`
    /// or `superseded` (a newer change of the record replaced it).
    pub status: String,
    /// Whether a push of this entry is running now.
    pub in_flight: bool,
    /// Push attempts so far.
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    /// The record's version this change wrote.
    pub record_version: i32,
    /// The cloud version the change was based on (sent as `If-Match`).
    pub base_cloud_version: Option<String>,
    /// The record's sync state now (`null` if the record is gone).
    pub record_sync_state: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The key that made the change (`key:<id>`).
    pub created_by: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "o.id, o.integration_id, o.external_id, o.operation, o.status, o.attempts, o.last_status_code, \
    o.last_error, o.record_version, o.base_cloud_version, o.created_at, o.created_by, o.finished_at, \
    r.sync_state AS record_sync_state, \
    CASE WHEN EXISTS (SELECT 1 FROM live_pushes p WHERE p.outbox_id = o.id AND p.status = 'RUNNING') THEN 1 ELSE 0 END AS in_flight";

fn view_of(r: &QueryResult) -> Result<OutboxEntryView, ApiError> {
    Ok(OutboxEntryView {
        id: r.try_get("", "id")?,
        integration_id: r.try_get("", "integration_id")?,
        external_id: r.try_get("", "external_id")?,
        operation: r.try_get("", "operation")?,
        status: r.try_get("", "status")?,
        in_flight: r.try_get::<i32>("", "in_flight")? == 1,
        attempts: r.try_get("", "attempts")?,
        last_status_code: r.try_get("", "last_status_code")?,
        last_error: r.try_get("", "last_error")?,
        record_version: r.try_get("", "record_version")?,
        base_cloud_version: r.try_get("", "base_cloud_version")?,
        record_sync_state: r.try_get("", "record_sync_state")?,
        created_at: r.try_get("", "created_at")?,
        created_by: r.try_get("", "created_by")?,
        finished_at: r.try_get("", "finished_at")?,
    })
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    pub integration_id: Option<Uuid>,
    /// `pending`, `failed`, `conflict`, `pushed` or `superseded`; absent = every entry
    /// not pushed yet (`pending`, `failed`, `conflict`).
    pub status: Option<String>,
    /// 1–500 (default 100), newest first.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// Outbox entries, newest first.
#[utoipa::path(get, path = "/api/sync/outbox", params(OutboxQuery), tag = "sync",
    responses((status = 200, body = [OutboxEntryView]), (status = 422, description = "bad filter")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<OutboxQuery>,
) -> Result<Json<Vec<OutboxEntryView>>, ApiError> {
    Ok(Json(list_entries(&state, &caller, &p).await?))
}

/// The entries `p` asks for (shared with the console).
pub async fn list_entries(
    state: &AppState,
    caller: &Caller,
    p: &OutboxQuery,
) -> Result<Vec<OutboxEntryView>, ApiError> {
    if let Some(s) = &p.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::field(
            "status",
            "must be pending, failed, conflict, pushed or superseded",
        ));
    }
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be from 1 to 500"));
    }
    let mut filter = String::new();
    let mut values: Vec<sea_orm::Value> = Vec::new();
    if let Some(ws) = caller.workspace_id {
        values.push(ws.into());
        filter.push_str(&format!(" AND i.workspace_id = ${}", values.len()));
    }
    if let Some(i) = p.integration_id {
        values.push(i.into());
        filter.push_str(&format!(" AND o.integration_id = ${}", values.len()));
    }
    match &p.status {
        Some(s) => {
            values.push(s.clone().into());
            filter.push_str(&format!(" AND o.status = ${}", values.len()));
        }
        None => filter.push_str(" AND o.status IN ('pending', 'failed', 'conflict')"),
    }
    let rows = q::query(
        &state.db,
        format!(
            "SELECT {COLUMNS} FROM outbox o JOIN integrations i ON i.id = o.integration_id \
             LEFT JOIN records r ON r.integration_id = o.integration_id AND r.external_id = o.external_id \
             WHERE 1 = 1{filter} ORDER BY o.created_at DESC, o.id DESC LIMIT {limit}"
        ),
        values,
    )
    .await?;
    rows.iter().map(view_of).collect()
}

/// Entry `id` if the caller sees it (shared with the console).
pub async fn read_entry(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<OutboxEntryView, ApiError> {
    let mut values: Vec<sea_orm::Value> = vec![id.into()];
    let mut scope = String::new();
    if let Some(ws) = caller.workspace_id {
        values.push(ws.into());
        scope.push_str(" AND i.workspace_id = $2");
    }
    let rows = q::query(
        &state.db,
        format!(
            "SELECT {COLUMNS} FROM outbox o JOIN integrations i ON i.id = o.integration_id \
             LEFT JOIN records r ON r.integration_id = o.integration_id AND r.external_id = o.external_id \
             WHERE o.id = $1{scope}"
        ),
        values,
    )
    .await?;
    view_of(rows.first().ok_or(ApiError::NotFound("outbox entry"))?)
}

/// Retries a failed push (admin): the entry is the record's push again, its attempts
/// counted from zero. If the record has moved on since (a newer change, or a conflict
/// settled it), the entry is closed as `superseded` instead and nothing stale is pushed.
/// Audited as `outbox.retry`.
#[utoipa::path(post, path = "/api/sync/outbox/{id}/retry", params(("id" = Uuid, Path)), tag = "sync",
    responses((status = 200, body = OutboxEntryView, description = "pending again, or superseded"),
        (status = 404, description = "not found"),
        (status = 409, description = "not failed, or the record is held by an open conflict or being pushed")))]
pub async fn retry(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
) -> Result<Json<OutboxEntryView>, ApiError> {
    crate::control::outbox::retry(&state, &caller, id).await?;
    Ok(Json(read_entry(&state, &caller, id).await?))
}
