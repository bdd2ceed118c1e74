//! `/api/integrations/{id}/webhook`: an integration's webhook from the cloud — where the
//! cloud sends, how it signs, from where (docs/architecture.md §4.19). Writes take an
//! admin key; reads any key of the workspace. The secret is in the answers of create and
//! rotate only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use sea_orm::QueryResult;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::common::double_option;
use crate::auth::{Admin, Caller};
use crate::control::webhooks::{self as ctl, Fields};
use crate::error::ApiError;
use crate::extract::{ApiJson, OptionalJson, PathId};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/integrations/{id}/webhook",
            get(read).post(create).patch(update).delete(remove),
        )
        .route("/api/integrations/{id}/webhook/rotate-secret", post(rotate))
}

/// An integration's webhook from the cloud (never its secret).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub integration_id: Uuid,
    /// Where the cloud sends its webhooks (`POST`): the full URL when
    /// `SYNCFLEET_PUBLIC_URL` is set, else the path.
    pub url: String,
    /// `standard` (Standard Webhooks: `webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`) or `cloud` (`X-Cloud-Signature: sha256=…`, `X-Cloud-Timestamp`).
    pub scheme: String,
    /// A disabled webhook's requests are refused with 409.
    pub enabled: bool,
    /// Networks and addresses that may send; `null` = any.
    pub allowed_sources: Option<Vec<String>>,
    /// When the current secret was set.
    pub secret_set_at: DateTime<Utc>,
    /// Whether the secret it replaced still verifies (a rotation's grace).
    pub previous_secret_valid: bool,
    /// Until when it does.
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookView {
    pub fn of(state: &AppState, r: &QueryResult) -> Result<Self, ApiError> {
        let id: Uuid = r.try_get("", "integration_id")?;
        let path = format!("/api/webhooks/{id}");
        let url = match &state.config.public_url {
            Some(u) => format!("{}{path}", u.as_str().trim_end_matches('/')),
            None => path,
        };
        let allowed: Option<String> = r.try_get("", "allowed_sources")?;
        let previous_valid: bool = r.try_get("", "previous_valid")?;
        Ok(Self {
            integration_id: id,
            url,
            scheme: r.try_get("", "scheme")?,
            enabled: r.try_get("", "enabled")?,
            allowed_sources: allowed.and_then(|a| serde_json::from_str(&a).ok()),
            secret_set_at: r.try_get("", "secret_set_at")?,
            previous_secret_valid: previous_valid,
            previous_secret_valid_until: if previous_valid {
                r.try_get("", "previous_secret_until")?
            } else {
                None
            },
            created_at: r.try_get("", "created_at")?,
            updated_at: r.try_get("", "updated_at")?,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// The signing secret, `whsec_…`: shown this once. Give it to the cloud.
    pub secret: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWebhook {
    /// `standard` (default) or `cloud`.
    #[serde(default)]
    pub scheme: Option<String>,
    /// Networks (`203.0.113.0/24`) or addresses that may send, 1 to 100; absent or
    /// `null` = any.
    #[serde(default)]
    pub allowed_sources: Option<Vec<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The cloud's own secret, `whsec_` + the base64 of at least 24 bytes (default: a
    /// new random one).
    #[serde(default)]
    pub secret: Option<String>,
}

/// Give an integration a webhook; the answer carries its secret, once.
#[utoipa::path(post, path = "/api/integrations/{id}/webhook", params(("id" = Uuid, Path)),
    request_body = CreateWebhook, tag = "webhooks",
    responses((status = 201, body = CreatedWebhook), (status = 404, description = "no such integration"),
        (status = 409, description = "the integration has a webhook already")))]
pub async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let fields = Fields {
        scheme: body.scheme,
        allowed_sources: body.allowed_sources.map(Some),
        enabled: body.enabled,
    };
    let (row, secret) = ctl::create(&state, &caller, id, fields, body.secret).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            webhook: WebhookView::of(&state, &row)?,
            secret,
        }),
    ))
}

/// An integration's webhook.
#[utoipa::path(get, path = "/api/integrations/{id}/webhook", params(("id" = Uuid, Path)), tag = "webhooks",
    responses((status = 200, body = WebhookView), (status = 404, description = "no such integration, or it has no webhook")))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<WebhookView>, ApiError> {
    let row = ctl::read(&state, &caller, id).await?;
    Ok(Json(WebhookView::of(&state, &row)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateWebhook {
    pub scheme: Option<String>,
    /// `null` = any address may send.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_sources: Option<Option<Vec<String>>>,
    pub enabled: Option<bool>,
}

/// Change an integration's webhook.
#[utoipa::path(patch, path = "/api/integrations/{id}/webhook", params(("id" = Uuid, Path)),
    request_body = UpdateWebhook, tag = "webhooks",
    responses((status = 200, body = WebhookView), (status = 404, description = "no such integration, or it has no webhook")))]
pub async fn update(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> Result<Json<WebhookView>, ApiError> {
    let fields = Fields {
        scheme: body.scheme,
        allowed_sources: body.allowed_sources,
        enabled: body.enabled,
    };
    let row = ctl::update(&state, &caller, id, fields).await?;
    Ok(Json(WebhookView::of(&state, &row)?))
}

/// Remove an integration's webhook: the cloud's webhooks are 404 from then on.
#[utoipa::path(delete, path = "/api/integrations/{id}/webhook", params(("id" = Uuid, Path)), tag = "webhooks",
    responses((status = 204, description = "removed"), (status = 404, description = "no such integration, or it has no webhook")))]
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
pub struct RotateWebhookSecret {
    /// Seconds the current secret keeps verifying beside the new one (0 to 604800;
    /// default 86400).
    pub grace_seconds: Option<i64>,
    /// The cloud's own new secret (default: a new random one).
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedWebhookSecret {
    /// The new secret, shown this once.
    pub secret: String,
    /// Until when the secret it replaced still verifies (`null`: it no longer does).
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
}

/// Rotate an integration's webhook secret.
#[utoipa::path(post, path = "/api/integrations/{id}/webhook/rotate-secret", params(("id" = Uuid, Path)),
    request_body = RotateWebhookSecret, tag = "webhooks",
    responses((status = 200, body = RotatedWebhookSecret), (status = 404, description = "no such integration, or it has no webhook")))]
pub async fn rotate(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
    OptionalJson(body): OptionalJson<RotateWebhookSecret>,
) -> Result<Json<RotatedWebhookSecret>, ApiError> {
    let grace = body.grace_seconds.unwrap_or(86_400);
    let (secret, row) = ctl::rotate(&state, &caller, id, grace, body.secret).await?;
    Ok(Json(RotatedWebhookSecret {
        secret,
        previous_secret_valid_until: WebhookView::of(&state, &row)?.previous_secret_valid_until,
    }))
}
