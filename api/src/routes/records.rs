//! Local writes to an integration's records (docs/architecture.md §3.11): `PUT` (create
//! or replace), `PATCH` (JSON merge patch), `DELETE`, and `records:batch` (all or
//! nothing), each with optional `If-Match` and `Idempotency-Key`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Admin;
use crate::control::records::{self as ctl, Answer, Idempotency, Op, Write};
use crate::error::ApiError;
use crate::extract::{ApiJson, Scoped};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/integrations/{id}/records/{external_id}",
            put(put_record).patch(patch_record).delete(delete_record),
        )
        .route("/api/integrations/{id}/records:batch", post(batch))
}

/// `{id}` and `{external_id}` of a record route, the integration loaded for the caller's
/// workspace first (another workspace's is 404 before the body is read).
pub struct RecordPath {
    pub integration: Uuid,
    pub external_id: String,
}

impl FromRequestParts<AppState> for RecordPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = crate::auth::Caller::from_request_parts(parts, state).await?;
        let axum::extract::Path((id, external_id)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::BadRequest("the path needs an id and a record id".into()))?;
        let id = crate::routes::common::parse_id(&id)?;
        crate::routes::common::load(state, &caller, id).await?;
        Ok(Self {
            integration: id,
            external_id,
        })
    }
}

/// `If-Match: 3`, `"3"` or `W/"3"`: the record version the client read.
fn if_match(h: &HeaderMap) -> Result<Option<i32>, ApiError> {
    let Some(v) = h.get("if-match") else {
        return Ok(None);
    };
    let raw = v.to_str().unwrap_or_default().trim();
    let raw = raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"');
    raw.parse()
        .map(Some)
        .map_err(|_| ApiError::field("If-Match", "must be the record's version, a number"))
}

fn idempotency(
    h: &HeaderMap,
    method: &Method,
    path: &str,
    body: &[u8],
    if_match: Option<i32>,
) -> Result<Option<Idempotency>, ApiError> {
    let Some(v) = h.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .map_err(|_| ApiError::field("Idempotency-Key", "must be printable ASCII"))?;
    let m = if_match.map(|v| v.to_string()).unwrap_or_default();
    Idempotency::new(
        key,
        &[
            method.as_str().as_bytes(),
            path.as_bytes(),
            m.as_bytes(),
            body,
        ],
    )
    .map(Some)
}

fn answer(a: Answer) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK);
    let mut r = (status, axum::Json(a.body)).into_response();
    if a.replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

/// Create or replace a record with the body (a JSON object), pushed to the cloud through
/// the outbox. `If-Match: <version>` guards against a concurrent change (409
/// `version_conflict`); `Idempotency-Key` makes a retry answer the first answer again.
#[utoipa::path(put, path = "/api/integrations/{id}/records/{external_id}",
    params(("id" = Uuid, Path), ("external_id" = String, Path),
        ("If-Match" = Option<String>, Header, description = "the record version you read"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters")),
    request_body(content = Object, description = "the record's data"), tag = "records",
    responses((status = 200, description = "replaced"), (status = 201, description = "created"),
        (status = 409, description = "If-Match names another version"),
        (status = 422, description = "invalid data, or the key was used with another request")))]
pub async fn put_record(
    State(state): State<AppState>,
    Admin(caller): Admin,
    p: RecordPath,
    headers: HeaderMap,
    ApiJson(data): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let m = if_match(&headers)?;
    let body = data.to_string();
    let idem = idempotency(
        &headers,
        &Method::PUT,
        &format!("{}/{}", p.integration, p.external_id),
        body.as_bytes(),
        m,
    )?;
    let w = Write {
        external_id: p.external_id,
        op: Op::Put(data),
        if_match: m,
    };
    Ok(answer(
        ctl::apply(&state, &caller, p.integration, vec![w], false, idem).await?,
    ))
}

/// Merge a JSON merge patch (RFC 7396) into a record (404 if it does not exist).
#[utoipa::path(patch, path = "/api/integrations/{id}/records/{external_id}",
    params(("id" = Uuid, Path), ("external_id" = String, Path),
        ("If-Match" = Option<String>, Header, description = "the record version you read"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters")),
    request_body(content = Object, description = "a JSON merge patch"), tag = "records",
    responses((status = 200, description = "merged"), (status = 404, description = "no such record"),
        (status = 409, description = "If-Match names another version"),
        (status = 422, description = "invalid patch, or the key was used with another request")))]
pub async fn patch_record(
    State(state): State<AppState>,
    Admin(caller): Admin,
    p: RecordPath,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let m = if_match(&headers)?;
    let body = patch.to_string();
    let idem = idempotency(
        &headers,
        &Method::PATCH,
        &format!("{}/{}", p.integration, p.external_id),
        body.as_bytes(),
        m,
    )?;
    let w = Write {
        external_id: p.external_id,
        op: Op::Patch(patch),
        if_match: m,
    };
    Ok(answer(
        ctl::apply(&state, &caller, p.integration, vec![w], false, idem).await?,
    ))
}

/// Delete a record (kept soft-deleted until the cloud has it).
#[utoipa::path(delete, path = "/api/integrations/{id}/records/{external_id}",
    params(("id" = Uuid, Path), ("external_id" = String, Path),
        ("If-Match" = Option<String>, Header, description = "the record version you read"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters")),
    tag = "records",
    responses((status = 200, description = "deleted"), (status = 404, description = "no such record"),
        (status = 409, description = "If-Match names another version"),
        (status = 422, description = "the key was used with another request")))]
pub async fn delete_record(
    State(state): State<AppState>,
    Admin(caller): Admin,
    p: RecordPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let m = if_match(&headers)?;
    let idem = idempotency(
        &headers,
        &Method::DELETE,
        &format!("{}/{}", p.integration, p.external_id),
        b"",
        m,
    )?;
    let w = Write {
        external_id: p.external_id,
        op: Op::Delete,
        if_match: m,
    };
    Ok(answer(
        ctl::apply(&state, &caller, p.integration, vec![w], false, idem).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Batch {
    /// Up to 1,000 operations, applied in order, all or nothing.
    pub operations: Vec<BatchOp>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchOp {
    /// `put`, `patch` or `delete`.
    pub op: String,
    pub external_id: String,
    /// The data (`put`) or the merge patch (`patch`).
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// The record version read, as `If-Match` for one record.
    pub if_match: Option<i32>,
}

/// Apply up to 1,000 record writes in one transaction (all or nothing): `{results}` with
/// each record after its write.
#[utoipa::path(post, path = "/api/integrations/{id}/records:batch",
    params(("id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters")),
    request_body = Batch, tag = "records",
    responses((status = 200, description = "every operation applied"),
        (status = 404, description = "an operation's record does not exist"),
        (status = 409, description = "an operation's ifMatch names another version"),
        (status = 422, description = "an invalid operation, or the key was used with another request")))]
pub async fn batch(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Scoped { integration, .. }: Scoped,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let id = integration.id;
    let ApiJson(b): ApiJson<Batch> = ApiJson::from_bytes(&headers, &raw)?;
    let idem = idempotency(&headers, &Method::POST, &format!("{id}/batch"), &raw, None)?;
    let mut writes = Vec::with_capacity(b.operations.len());
    let mut errors = Vec::new();
    for (k, o) in b.operations.into_iter().enumerate() {
        let op = match (o.op.as_str(), o.data) {
            ("put", Some(d)) => Op::Put(d),
            ("patch", Some(d)) => Op::Patch(d),
            ("delete", None) => Op::Delete,
            ("put" | "patch", None) => {
                errors.push(crate::error::FieldProblem {
                    field: format!("operations[{k}].data"),
                    message: "is required".into(),
                });
                continue;
            }
            ("delete", Some(_)) => {
                errors.push(crate::error::FieldProblem {
                    field: format!("operations[{k}].data"),
                    message: "a delete takes no data".into(),
                });
                continue;
            }
            (other, _) => {
                errors.push(crate::error::FieldProblem {
                    field: format!("operations[{k}].op"),
                    message: format!("`{other}` is not put, patch or delete"),
                });
                continue;
            }
        };
        writes.push(Write {
            external_id: o.external_id,
            op,
            if_match: o.if_match,
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if writes.is_empty() {
        return Err(ApiError::field("operations", "give at least one operation"));
    }
    Ok(answer(
        ctl::apply(&state, &caller, id, writes, true, idem).await?,
    ))
}
