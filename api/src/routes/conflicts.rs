//! `/api/sync/conflicts`: conflicts between local and cloud changes of a record, and
//! their resolution by hand (docs/architecture.md §4.18). Resolving takes an admin key;
//! reading any key of the workspace.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use sea_orm::QueryResult;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use syncfleet_worker::conflicts::Resolution;
use syncfleet_worker::db as q;

use crate::auth::{Admin, Caller};
use crate::control::notifications::scope;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, PathId};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/sync/conflicts", get(list))
        .route("/api/sync/conflicts/{id}", get(read))
        .route("/api/sync/conflicts/{id}/resolve", post(resolve))
}

/// A conflict: both copies of the record and how it was (or is to be) settled.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictView {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub external_id: String,
    /// `open` (held for a person) or `resolved`.
    pub status: String,
    /// Where it was found: `pull`, `push` (the cloud answered 409/412) or `webhook`.
    pub source: String,
    /// The integration's strategy when it was found.
    pub strategy: String,
    /// `local`, `cloud` or `merged`; `null` while open.
    pub resolution: Option<String>,
    /// The local copy when it was found (updated by later local writes while open);
    /// `null` if deleted locally.
    #[schema(value_type = Option<Object>)]
    pub local: Option<Value>,
    pub local_deleted: bool,
    /// The cloud's copy; `null` if deleted at the cloud or not known (`cloudKnown`).
    #[schema(value_type = Option<Object>)]
    pub cloud: Option<Value>,
    pub cloud_deleted: bool,
    /// Whether the cloud's copy is known (a 409 answer need not carry it; the next pull
    /// brings it).
    pub cloud_known: bool,
    pub cloud_version: Option<String>,
    /// Top-level fields whose values differ between the two copies.
    pub differing_fields: Vec<String>,
    pub detected_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// `system` (settled by the strategy) or the key that resolved it.
    pub resolved_by: Option<String>,
}

const COLUMNS: &str = "c.id, c.integration_id, c.external_id, c.status, c.source, c.strategy, c.resolution, \
    c.local_data, c.local_deleted, c.cloud_data, c.cloud_deleted, c.cloud_known, c.cloud_version, c.detected_at, \
    c.resolved_at, c.resolved_by";

/// The top-level fields that differ between two records (all of them if either is not
/// an object).
pub fn differing(a: Option<&Value>, b: Option<&Value>) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (oa, ob) = (
        a.and_then(Value::as_object).unwrap_or(&empty),
        b.and_then(Value::as_object).unwrap_or(&empty),
    );
    let mut keys: Vec<String> = oa
        .keys()
        .chain(ob.keys())
        .filter(|k| oa.get(*k) != ob.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn view_of(r: &QueryResult) -> Result<ConflictView, ApiError> {
    let json = |c: &str| -> Result<Option<Value>, ApiError> {
        Ok(r.try_get::<Option<String>>("", c)?
            .and_then(|t| serde_json::from_str(&t).ok()))
    };
    let local = json("local_data")?;
    let cloud = json("cloud_data")?;
    Ok(ConflictView {
        id: r.try_get("", "id")?,
        integration_id: r.try_get("", "integration_id")?,
        external_id: r.try_get("", "external_id")?,
        status: r.try_get("", "status")?,
        source: r.try_get("", "source")?,
        strategy: r.try_get("", "strategy")?,
        resolution: r.try_get("", "resolution")?,
        differing_fields: differing(local.as_ref(), cloud.as_ref()),
        local,
        local_deleted: r.try_get("", "local_deleted")?,
        cloud,
        cloud_deleted: r.try_get("", "cloud_deleted")?,
        cloud_known: r.try_get("", "cloud_known")?,
        cloud_version: r.try_get("", "cloud_version")?,
        detected_at: r.try_get("", "detected_at")?,
        resolved_at: r.try_get("", "resolved_at")?,
        resolved_by: r.try_get("", "resolved_by")?,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConflictQuery {
    pub integration_id: Option<Uuid>,
    /// `open` or `resolved`.
    pub status: Option<String>,
    /// 1–500 (default 100), newest first.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// Conflicts, newest first.
#[utoipa::path(get, path = "/api/sync/conflicts", params(ConflictQuery), tag = "sync",
    responses((status = 200, body = [ConflictView]), (status = 422, description = "bad filter")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<ConflictQuery>,
) -> Result<Json<Vec<ConflictView>>, ApiError> {
    Ok(Json(list_conflicts(&state, &caller, &p).await?))
}

/// The conflicts `p` asks for (shared with the console).
pub async fn list_conflicts(
    state: &AppState,
    caller: &Caller,
    p: &ConflictQuery,
) -> Result<Vec<ConflictView>, ApiError> {
    if let Some(s) = &p.status
        && !matches!(s.as_str(), "open" | "resolved")
    {
        return Err(ApiError::field("status", "must be open or resolved"));
    }
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be from 1 to 500"));
    }
    let (mut filter, mut values) = scope(caller, Vec::new(), 1);
    if let Some(i) = p.integration_id {
        values.push(i.into());
        filter.push_str(&format!(" AND c.integration_id = ${}", values.len()));
    }
    if let Some(s) = &p.status {
        values.push(s.clone().into());
        filter.push_str(&format!(" AND c.status = ${}", values.len()));
    }
    let rows = q::query(
        &state.db,
        format!(
            "SELECT {COLUMNS} FROM conflicts c JOIN integrations i ON i.id = c.integration_id WHERE 1 = 1{filter} \
             ORDER BY c.detected_at DESC, c.id DESC LIMIT {limit}"
        ),
        values,
    )
    .await?;
    rows.iter().map(view_of).collect()
}

/// One conflict.
#[utoipa::path(get, path = "/api/sync/conflicts/{id}", params(("id" = Uuid, Path)), tag = "sync",
    responses((status = 200, body = ConflictView), (status = 404, description = "not found")))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<ConflictView>, ApiError> {
    Ok(Json(read_conflict(&state, &caller, id).await?))
}

/// Conflict `id` if the caller sees it (shared with the console).
pub async fn read_conflict(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<ConflictView, ApiError> {
    let (scope, values) = scope(caller, vec![id.into()], 2);
    let rows = q::query(
        &state.db,
        format!(
            "SELECT {COLUMNS} FROM conflicts c JOIN integrations i ON i.id = c.integration_id WHERE c.id = $1{scope}"
        ),
        values,
    )
    .await?;
    view_of(rows.first().ok_or(ApiError::NotFound("conflict"))?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolveBody {
    /// `local` (push the local copy over the cloud's version), `cloud` (keep the cloud's
    /// copy, drop the held push) or `merged` (write `data` and push it).
    pub resolution: String,
    /// The merged record, a JSON object (with `merged` only).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Resolves an open conflict (admin).
#[utoipa::path(post, path = "/api/sync/conflicts/{id}/resolve", params(("id" = Uuid, Path)), request_body = ResolveBody,
    tag = "sync", responses((status = 200, body = ConflictView), (status = 404, description = "not found"),
        (status = 409, description = "already resolved"), (status = 422, description = "bad resolution")))]
pub async fn resolve(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<(StatusCode, Json<ConflictView>), ApiError> {
    let resolution = parse_resolution(&body.resolution, body.data)?;
    crate::control::conflicts::resolve(&state, &caller, id, resolution, body.reason).await?;
    Ok((
        StatusCode::OK,
        Json(read_conflict(&state, &caller, id).await?),
    ))
}

/// A resolution from its name and, for `merged`, the merged record.
pub fn parse_resolution(name: &str, data: Option<Value>) -> Result<Resolution, ApiError> {
    match (name, data) {
        ("local", None) => Ok(Resolution::Local),
        ("cloud", None) => Ok(Resolution::Cloud),
        ("merged", Some(d)) if d.is_object() => Ok(Resolution::Merged(d)),
        ("merged", _) => Err(ApiError::field(
            "data",
            "a merged resolution needs the merged record, a JSON object",
        )),
        ("local" | "cloud", Some(_)) => Err(ApiError::field(
            "data",
            "only a merged resolution takes data",
        )),
        _ => Err(ApiError::field(
            "resolution",
            "must be local, cloud or merged",
        )),
    }
}
