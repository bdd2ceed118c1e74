//! `POST /api/webhooks/{integrationId}`: webhooks from the cloud (docs/architecture.md
//! §4.19). No API key: a request is authenticated by its signature over the raw body
//! with the integration's webhook secret. In order, a request is refused when its
//! sender's address is blocked for failures (429), its body is over 1 MiB (413), the
//! integration has no webhook (404), its address is not on the allow-list (403), its
//! signature does not verify (401 `invalid_signature`) or its timestamp is stale (401
//! `stale_timestamp`); then a replay is acknowledged (200), a paused integration or a
//! disabled webhook refuses it (409), and the body is taken (202) or refused (400/422).
//! Every answer is counted on `/metrics` by outcome.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::control::webhooks::{self as ctl, Change, Received};
use crate::error::ApiError;
use crate::inbound::{self, Refused};
use crate::routes::MAX_BODY;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/webhooks/{id}", post(receive))
}

/// A webhook body (other fields are ignored).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InboundChange {
    /// `sync` (ask for a pull), `upsert` (`records`) or `delete` (`ids`).
    r#type: String,
    /// `upsert`: the records, each with its id at the integration's `idPointer`.
    #[schema(value_type = Option<Vec<Object>>)]
    records: Option<Vec<serde_json::Value>>,
    /// `delete`: the ids of the records the cloud deleted.
    ids: Option<Vec<String>>,
}

/// What an accepted webhook did.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAccepted {
    /// `sync`, `upsert` or `delete`.
    pub r#type: &'static str,
    /// The id the webhook is known by (`webhook-id`, `X-Cloud-Event-Id`, or `sig:` and
    /// its signature).
    pub webhook_id: String,
    /// `sync`: the run created, or the live run it coalesced with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coalesced: Option<bool>,
    /// The live run is running: one follow-up run starts after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub followup_requested: Option<bool>,
    /// `upsert`/`delete`: records and ids received, and what they did to the store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inserted: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchanged: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<i64>,
    /// Of those, the records that met a local change not pushed yet (settled by the
    /// integration's conflict strategy, or held for a person).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<u64>,
}

/// A webhook whose id was seen before.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookReplayed {
    /// Always `true`: acknowledged, nothing done.
    pub replayed: bool,
    pub webhook_id: String,
}

/// Receive a webhook from the cloud, signed with the integration's webhook secret.
#[utoipa::path(post, path = "/api/webhooks/{integrationId}", tag = "webhooks", security(()),
    params(("integrationId" = Uuid, Path),
        ("webhook-id" = Option<String>, Header, description = "scheme `standard`: the message id"),
        ("webhook-timestamp" = Option<i64>, Header, description = "scheme `standard`: Unix seconds"),
        ("webhook-signature" = Option<String>, Header, description = "scheme `standard`: `v1,<base64 HMAC-SHA256 of \"{id}.{timestamp}.{body}\">`, space-separated"),
        ("X-Cloud-Signature" = Option<String>, Header, description = "scheme `cloud`: `sha256=<hex HMAC-SHA256 of \"{timestamp}.{body}\">`"),
        ("X-Cloud-Timestamp" = Option<i64>, Header, description = "scheme `cloud`: Unix seconds"),
        ("X-Cloud-Event-Id" = Option<String>, Header, description = "scheme `cloud`, optional: the event's id, for replay detection")),
    request_body = InboundChange,
    responses(
        (status = 202, body = WebhookAccepted, description = "accepted: the run asked for, or the changes committed"),
        (status = 200, body = WebhookReplayed, description = "a webhook id seen before: acknowledged, nothing done"),
        (status = 401, description = "not signed with the webhook's secret as its scheme says (`invalid_signature`), or the timestamp is more than 5 minutes from the server's clock (`stale_timestamp`)"),
        (status = 403, description = "the sender's address is not on the webhook's allow-list (`forbidden_source`)"),
        (status = 404, description = "no such integration, or it has no webhook"),
        (status = 409, description = "the integration is paused or disabled, or its webhook is disabled"),
        (status = 422, description = "the body is not a webhook this integration takes (named in `errors`)"),
        (status = 429, description = "the sender's address sent too many unknown or badly signed webhooks: retry after `Retry-After` seconds"),
        (status = 503, description = "the database is busy or unavailable: retry after `Retry-After` seconds")))]
pub async fn receive(State(state): State<AppState>, req: Request) -> Response {
    let (outcome, response) = match answer(&state, req).await {
        Ok((outcome, response)) => (outcome, response),
        Err(Refusal { outcome, error }) => (outcome, error.into_response()),
    };
    state
        .metrics
        .inbound_webhooks
        .with_label_values(&[outcome])
        .inc();
    response
}

/// A refused webhook and its outcome on `/metrics`.
struct Refusal {
    outcome: &'static str,
    error: ApiError,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        let outcome = match &error {
            ApiError::BadSignature(_) => "invalid_signature",
            ApiError::StaleTimestamp(_) => "stale",
            ApiError::ForbiddenSource => "forbidden_source",
            ApiError::PayloadTooLarge => "too_large",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::BadRequest(_) | ApiError::Validation(_) => "invalid_body",
            ApiError::RateLimited(_) => "rate_limited",
            _ => "error",
        };
        Self { outcome, error }
    }
}

/// Whole seconds for `Retry-After`, at least 1.
fn wait_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

async fn answer(state: &AppState, req: Request) -> Result<(&'static str, Response), Refusal> {
    let (mut parts, body) = req.into_parts();
    let id = match Path::<String>::from_request_parts(&mut parts, state).await {
        Ok(Path(raw)) => crate::routes::common::parse_id(&raw),
        Err(_) => Err(ApiError::BadRequest("the path needs one id".into())),
    }
    .map_err(|error| Refusal {
        outcome: "not_found",
        error,
    })?;
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let address = inbound::client_address(peer, &parts.headers, &state.config.trusted_proxies);
    if let Some(wait) = address.and_then(|a| state.address_guard.blocked(a)) {
        return Err(ApiError::RateLimited(wait_secs(wait)).into());
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::PayloadTooLarge.into());
    }
    let Some(receiver) = ctl::receiver(state, id).await? else {
        return Err(failed(state, address, ApiError::NotFound("webhook")));
    };
    if !inbound::allowed(receiver.allowed.as_deref(), address) {
        return Err(ApiError::ForbiddenSource.into());
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let verified = match inbound::verify(
        receiver.scheme,
        &receiver.secrets,
        &parts.headers,
        &bytes,
        receiver.now,
    ) {
        Ok(v) => v,
        Err(Refused::Signature(why)) => {
            return Err(failed(state, address, ApiError::BadSignature(why)));
        }
        Err(Refused::Stale(off)) => return Err(ApiError::StaleTimestamp(off).into()),
    };
    let change = Change::parse(&bytes)?;
    let kind = match &change {
        Change::Sync => "sync",
        Change::Upsert(_) => "upsert",
        Change::Delete(_) => "delete",
    };
    let mut done = WebhookAccepted {
        r#type: kind,
        webhook_id: verified.id.clone(),
        ..WebhookAccepted::default()
    };
    match ctl::receive(state, id, &verified, change).await? {
        Received::Replayed => Ok((
            "replayed",
            (
                StatusCode::OK,
                Json(WebhookReplayed {
                    replayed: true,
                    webhook_id: verified.id,
                }),
            )
                .into_response(),
        )),
        Received::Triggered(t) => {
            done.run_id = Some(t.run_id);
            done.coalesced = Some(t.coalesced);
            done.followup_requested = Some(t.followup);
            Ok((
                "accepted",
                (StatusCode::ACCEPTED, Json(done)).into_response(),
            ))
        }
        Received::Applied(c, met) => {
            done.received = Some(c.received);
            done.inserted = Some(c.inserted);
            done.updated = Some(c.updated);
            done.unchanged = Some(c.unchanged);
            done.deleted = Some(c.deleted);
            done.conflicts = Some(met.conflicts);
            Ok((
                "accepted",
                (StatusCode::ACCEPTED, Json(done)).into_response(),
            ))
        }
    }
}

/// A request that cost a lookup without proving anything (an unknown integration, a
/// bad signature) counts against its address's budget, the one unknown API keys spend
/// (`SYNCFLEET_AUTH_FAILURES_*`); past it the answer is 429.
fn failed(state: &AppState, address: Option<IpAddr>, error: ApiError) -> Refusal {
    match address.and_then(|a| state.address_guard.failed(a)) {
        Some(wait) => ApiError::RateLimited(wait_secs(wait)).into(),
        None => error.into(),
    }
}
