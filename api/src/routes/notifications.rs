//! `/api/notifications`: webhook endpoints, their deliveries, and the events behind them
//! (docs/architecture.md §4.16). Writes take an admin key; reads any key of the workspace.

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

use syncfleet_worker::db as q;

use super::common::double_option;
use crate::auth::{Admin, Caller};
use crate::control::notifications::{self as ctl, EndpointFields};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, OptionalJson, PathId};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/notifications/endpoints", get(list).post(create))
        .route(
            "/api/notifications/endpoints/{id}",
            get(read).patch(update).delete(remove),
        )
        .route(
            "/api/notifications/endpoints/{id}/rotate-secret",
            post(rotate),
        )
        .route("/api/notifications/endpoints/{id}/test", post(test))
        .route("/api/notifications/deliveries", get(deliveries))
        .route("/api/notifications/deliveries/{id}", get(delivery))
        .route("/api/notifications/deliveries/{id}/retry", post(retry))
        .route("/api/notifications/events", get(events))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub url: String,
    pub description: String,
    /// Event types it receives; empty = every type except the opt-in `sync.failed`.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// `standard` (Standard Webhooks, signed) or `slack` (an incoming-webhook body).
    pub format: String,
    /// Failed deliveries in a row; the endpoint is disabled at the configured limit.
    pub consecutive_failures: i32,
    /// Why the system disabled it, if it did.
    pub disabled_reason: Option<String>,
    /// Until when the previous secret still signs (after a rotation).
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EndpointView {
    pub fn of(r: &QueryResult) -> Result<Self, ApiError> {
        let types: String = r.try_get("", "event_types")?;
        Ok(Self {
            id: r.try_get("", "id")?,
            workspace_id: r.try_get("", "workspace_id")?,
            url: r.try_get("", "url")?,
            description: r.try_get("", "description")?,
            event_types: serde_json::from_str(&types).unwrap_or_default(),
            enabled: r.try_get("", "enabled")?,
            format: r.try_get("", "format")?,
            consecutive_failures: r.try_get("", "consecutive_failures")?,
            disabled_reason: r.try_get("", "disabled_reason")?,
            previous_secret_valid_until: r.try_get("", "previous_secret_until")?,
            version: r.try_get("", "version")?,
            created_at: r.try_get("", "created_at")?,
            updated_at: r.try_get("", "updated_at")?,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// The signing secret, `whsec_…`: shown this once.
    pub secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateEndpoint {
    /// http(s) URL; checked by the SSRF guard now and at every send.
    pub url: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Event types to receive; absent or empty = every type except `sync.failed`.
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `standard` (default) or `slack`.
    #[serde(default)]
    pub format: Option<String>,
    /// Your own `whsec_…` secret (default: a new random one).
    #[serde(default)]
    pub secret: Option<String>,
}

/// Add a notification endpoint; the answer carries its secret, once.
#[utoipa::path(post, path = "/api/notifications/endpoints", request_body = CreateEndpoint, tag = "notifications",
    responses((status = 201, body = CreatedEndpoint), (status = 422, description = "validation failed")))]
pub async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(body): ApiJson<CreateEndpoint>,
) -> Result<(StatusCode, Json<CreatedEndpoint>), ApiError> {
    let ws = caller.home_workspace(&state.db).await?;
    let fields = EndpointFields {
        url: Some(body.url),
        description: body.description,
        event_types: body.event_types,
        enabled: body.enabled,
        format: body.format,
    };
    let (row, secret) = ctl::create(&state, &caller, ws, fields, body.secret).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEndpoint {
            endpoint: EndpointView::of(&row)?,
            secret,
        }),
    ))
}

/// The workspace's notification endpoints.
#[utoipa::path(get, path = "/api/notifications/endpoints", tag = "notifications",
    responses((status = 200, body = [EndpointView])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<EndpointView>>, ApiError> {
    let (scope, values) = ctl::scope(&caller, Vec::new(), 1);
    let rows = q::query(
        &state.db,
        format!(
            "SELECT {} FROM notification_endpoints WHERE 1 = 1{scope} ORDER BY created_at",
            ctl::COLUMNS
        ),
        values,
    )
    .await?;
    Ok(Json(
        rows.iter()
            .map(EndpointView::of)
            .collect::<Result<_, _>>()?,
    ))
}

/// One endpoint.
#[utoipa::path(get, path = "/api/notifications/endpoints/{id}", params(("id" = Uuid, Path)), tag = "notifications",
    responses((status = 200, body = EndpointView), (status = 404, description = "not found")))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<EndpointView>, ApiError> {
    Ok(Json(EndpointView::of(
        &ctl::read(&state.db, &caller, id).await?,
    )?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateEndpoint {
    pub url: Option<String>,
    pub description: Option<String>,
    /// `null` or `[]` = every type except `sync.failed`.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<String>>)]
    pub event_types: Option<Option<Vec<String>>>,
    /// Enabling an endpoint again clears its failure streak.
    pub enabled: Option<bool>,
    pub format: Option<String>,
}

/// Change an endpoint.
#[utoipa::path(patch, path = "/api/notifications/endpoints/{id}", params(("id" = Uuid, Path)),
    request_body = UpdateEndpoint, tag = "notifications",
    responses((status = 200, body = EndpointView), (status = 404, description = "not found"), (status = 422, description = "validation failed")))]
pub async fn update(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
    ApiJson(body): ApiJson<UpdateEndpoint>,
) -> Result<Json<EndpointView>, ApiError> {
    let fields = EndpointFields {
        url: body.url,
        description: body.description,
        event_types: body.event_types.map(Option::unwrap_or_default),
        enabled: body.enabled,
        format: body.format,
    };
    let row = ctl::update(&state, &caller, id, fields).await?;
    Ok(Json(EndpointView::of(&row)?))
}

/// Delete an endpoint and its deliveries.
#[utoipa::path(delete, path = "/api/notifications/endpoints/{id}", params(("id" = Uuid, Path)), tag = "notifications",
    responses((status = 204, description = "deleted"), (status = 404, description = "not found")))]
pub async fn remove(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    ctl::delete(&state, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rotate {
    /// Seconds the previous secret keeps signing beside the new one (0 to 7 days;
    /// default 24 h).
    pub grace_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedSecret {
    /// The new secret, shown this once.
    pub secret: String,
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
}

/// Rotate an endpoint's signing secret.
#[utoipa::path(post, path = "/api/notifications/endpoints/{id}/rotate-secret", params(("id" = Uuid, Path)),
    request_body = Rotate, tag = "notifications", responses((status = 200, body = RotatedSecret)))]
pub async fn rotate(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
    OptionalJson(body): OptionalJson<Option<Rotate>>,
) -> Result<Json<RotatedSecret>, ApiError> {
    let grace = body.and_then(|b| b.grace_seconds).unwrap_or(86_400);
    if !(0..=7 * 86_400).contains(&grace) {
        return Err(ApiError::field("graceSeconds", "must be from 0 to 604800"));
    }
    let secret = ctl::rotate(&state, &caller, id, grace).await?;
    let row = ctl::read(&state.db, &caller, id).await?;
    Ok(Json(RotatedSecret {
        secret,
        previous_secret_valid_until: row.try_get("", "previous_secret_until")?,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestSent {
    pub event_id: Uuid,
    pub delivery_id: Uuid,
}

/// Send a `test` event to an endpoint.
#[utoipa::path(post, path = "/api/notifications/endpoints/{id}/test", params(("id" = Uuid, Path)), tag = "notifications",
    responses((status = 202, body = TestSent), (status = 404, description = "not found")))]
pub async fn test(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
) -> Result<(StatusCode, Json<TestSent>), ApiError> {
    let (event_id, delivery_id) = ctl::test(&state, &caller, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestSent {
            event_id,
            delivery_id,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    pub endpoint_id: Option<Uuid>,
    /// `pending`, `succeeded` or `failed`.
    pub status: Option<String>,
    pub event_id: Option<Uuid>,
    /// 1–500 (default 100), newest first.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: i32,
    /// The last attempt's HTTP status, if it got one.
    pub last_status_code: Option<i32>,
    /// The last attempt's latency, ms.
    pub last_latency_ms: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Every attempt, oldest first (on `GET …/deliveries/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<AttemptView>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub attempt: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub latency_ms: Option<i64>,
    pub error: Option<String>,
    /// `delivered`, `retry` or `failed`.
    pub outcome: String,
}

const DELIVERY_COLUMNS: &str = "id, endpoint_id, event_id, event_type, status, attempts, last_status_code, \
    last_latency_ms, last_error, next_attempt_at, created_at, finished_at";

fn delivery_of(r: &QueryResult) -> Result<DeliveryView, ApiError> {
    Ok(DeliveryView {
        id: r.try_get("", "id")?,
        endpoint_id: r.try_get("", "endpoint_id")?,
        event_id: r.try_get("", "event_id")?,
        event_type: r.try_get("", "event_type")?,
        status: r.try_get("", "status")?,
        attempts: r.try_get("", "attempts")?,
        last_status_code: r.try_get("", "last_status_code")?,
        last_latency_ms: r.try_get("", "last_latency_ms")?,
        last_error: r.try_get("", "last_error")?,
        next_attempt_at: r.try_get("", "next_attempt_at")?,
        created_at: r.try_get("", "created_at")?,
        finished_at: r.try_get("", "finished_at")?,
        attempt_log: None,
    })
}

/// Deliveries, newest first.
#[utoipa::path(get, path = "/api/notifications/deliveries", params(DeliveryQuery), tag = "notifications",
    responses((status = 200, body = [DeliveryView])))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<DeliveryQuery>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    Ok(Json(list_deliveries(&state, &caller, &p).await?))
}

/// The deliveries `p` asks for (shared with the console).
pub async fn list_deliveries(
    state: &AppState,
    caller: &Caller,
    p: &DeliveryQuery,
) -> Result<Vec<DeliveryView>, ApiError> {
    if let Some(s) = &p.status
        && !matches!(s.as_str(), "pending" | "succeeded" | "failed")
    {
        return Err(ApiError::field(
            "status",
            "must be pending, succeeded or failed",
        ));
    }
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be from 1 to 500"));
    }
    let (mut filter, mut values) = ctl::scope(caller, Vec::new(), 1);
    let mut add = |col: &str, v: sea_orm::Value| {
        values.push(v);
        filter.push_str(&format!(" AND {col} = ${}", values.len()));
    };
    if let Some(e) = p.endpoint_id {
        add("endpoint_id", e.into());
    }
    if let Some(s) = &p.status {
        add("status", s.clone().into());
    }
    if let Some(e) = p.event_id {
        add("event_id", e.into());
    }
    let rows = q::query(
        &state.db,
        format!(
            "SELECT {DELIVERY_COLUMNS} FROM notification_deliveries WHERE 1 = 1{filter} \
             ORDER BY created_at DESC, id DESC LIMIT {limit}"
        ),
        values,
    )
    .await?;
    rows.iter().map(delivery_of).collect()
}

/// One delivery with its attempts.
#[utoipa::path(get, path = "/api/notifications/deliveries/{id}", params(("id" = Uuid, Path)), tag = "notifications",
    responses((status = 200, body = DeliveryView), (status = 404, description = "not found")))]
pub async fn delivery(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<DeliveryView>, ApiError> {
    let (scope, values) = ctl::scope(&caller, vec![id.into()], 2);
    let rows = q::query(
        &state.db,
        format!("SELECT {DELIVERY_COLUMNS} FROM notification_deliveries WHERE id = $1{scope}"),
        values,
    )
    .await?;
    let mut view = delivery_of(rows.first().ok_or(ApiError::NotFound("delivery"))?)?;
    let attempts = q::query(
        &state.db,
        "SELECT attempt, started_at, finished_at, status_code, latency_ms, error, outcome \
         FROM delivery_attempts WHERE delivery_id = $1 ORDER BY finished_at, attempt",
        [id.into()],
    )
    .await?;
    view.attempt_log = Some(
        attempts
            .iter()
            .map(|r| {
                Ok(AttemptView {
                    attempt: r.try_get("", "attempt")?,
                    started_at: r.try_get("", "started_at")?,
                    finished_at: r.try_get("", "finished_at")?,
                    status_code: r.try_get("", "status_code")?,
                    latency_ms: r.try_get("", "latency_ms")?,
                    error: r.try_get("", "error")?,
                    outcome: r.try_get("", "outcome")?,
                })
            })
            .collect::<Result<_, ApiError>>()?,
    );
    Ok(Json(view))
}

/// Retry a finished delivery now, with a fresh retry window.
#[utoipa::path(post, path = "/api/notifications/deliveries/{id}/retry", params(("id" = Uuid, Path)), tag = "notifications",
    responses((status = 202, description = "pending again"), (status = 409, description = "still pending")))]
pub async fn retry(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    ctl::retry(&state, &caller, id).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    pub integration_id: Option<Uuid>,
    /// An event type, e.g. `integration.disabled`.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// 1–500 (default 100), newest first.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// Events, newest first: each as delivered (`id`, `type`, `timestamp`, `workspaceId`, `data`).
#[utoipa::path(get, path = "/api/notifications/events", params(EventQuery), tag = "notifications",
    responses((status = 200, body = [Object])))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<EventQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be from 1 to 500"));
    }
    if let Some(t) = &p.event_type
        && syncfleet_worker::notifications::EventType::parse(t).is_none()
    {
        return Err(ApiError::field("type", format!("unknown event type `{t}`")));
    }
    let (mut filter, mut values) = ctl::scope(&caller, Vec::new(), 1);
    if let Some(i) = p.integration_id {
        values.push(i.into());
        filter.push_str(&format!(" AND integration_id = ${}", values.len()));
    }
    if let Some(t) = p.event_type {
        values.push(t.into());
        filter.push_str(&format!(" AND event_type = ${}", values.len()));
    }
    let rows = q::query(
        &state.db,
        format!("SELECT body FROM events WHERE 1 = 1{filter} ORDER BY created_at DESC, id DESC LIMIT {limit}"),
        values,
    )
    .await?;
    Ok(Json(
        rows.iter()
            .filter_map(|r| r.try_get::<String>("", "body").ok())
            .filter_map(|b| serde_json::from_str(&b).ok())
            .collect(),
    ))
}
