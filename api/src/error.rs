//! One error type for every handler, rendered as `application/problem+json`.
//!
//! Policy: a client error says exactly what is wrong, with a stable `code`; a server
//! error (5xx) is logged once here with its cause and answers only "internal error".
//! Database constraint violations are conflicts (409), never 500s.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

#[derive(Debug, Clone, Serialize)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("this API key may not do that")]
    Forbidden,
    /// A webhook from the cloud that is not signed with its integration's webhook
    /// secret the way its scheme says (what is wrong, never the expected signature).
    #[error("{0}")]
    BadSignature(String),
    /// A signed webhook whose timestamp is this many seconds from the database clock
    /// (positive: ahead of it), more than the tolerance.
    #[error(
        "the webhook's timestamp is {} s {} the server's clock (at most 300 s either way); \
         send it again with a fresh timestamp",
        .0.unsigned_abs(),
        if *.0 > 0 { "ahead of" } else { "behind" }
    )]
    StaleTimestamp(i64),
    /// A webhook sent from an address outside its integration's allow-list.
    #[error("webhooks of this integration are not accepted from this address")]
    ForbiddenSource,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the integration changed since version {0} was read; reload and retry")]
    VersionConflict(i32),
    /// A local write's `If-Match` names another version than the record's (`None`: the
    /// record does not exist).
    #[error("{}", match .0 { Some(v) => format!("the record is at version {v}; reload it and retry"), None => "the record does not exist".to_owned() })]
    RecordVersionConflict(Option<i32>),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("rate limit exceeded; retry in {0} s")]
    RateLimited(u64),
    #[error("request body exceeds 1 MiB")]
    PayloadTooLarge,
    #[error("the request body must be JSON, sent with `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("validation failed")]
    Validation(Vec<FieldProblem>),
    #[error("the database is unavailable; retry shortly")]
    DatabaseUnavailable,
    /// A row this request needs stayed locked past the session's `lock_timeout`; the
    /// transaction was rolled back, so the request is safe to run again.
    #[error("a row this request needs is busy; retry shortly")]
    Busy,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        if lock_timed_out(&e) {
            tracing::warn!(error = %e, "row lock wait timed out");
            return Self::Busy;
        }
        if is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            return Self::DatabaseUnavailable;
        }
        let text = e.to_string();
        if text.contains("UNIQUE") || text.contains("unique") || text.contains("duplicate key") {
            return Self::Conflict("the resource conflicts with an existing one".into());
        }
        Self::Internal(e.into())
    }
}

fn sqlx_of(e: &sea_orm::DbErr) -> Option<&sea_orm::sqlx::Error> {
    use sea_orm::{DbErr, RuntimeErr};
    match e {
        DbErr::Conn(RuntimeErr::SqlxError(s))
        | DbErr::Exec(RuntimeErr::SqlxError(s))
        | DbErr::Query(RuntimeErr::SqlxError(s)) => Some(s.as_ref()),
        _ => None,
    }
}

use syncfleet_worker::db::lock_timed_out;

/// A database error that says the database cannot be reached now (pool timeout, refused
/// or dropped connection), not that the request was wrong.
fn is_unavailable(e: &sea_orm::DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    if matches!(e, sea_orm::DbErr::ConnectionAcquire(_)) || lock_timed_out(e) {
        return true;
    }
    let Some(sqlx) = sqlx_of(e) else {
        return false;
    };
    match sqlx {
        Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::WorkerCrashed => true,
        // The server ended the session (its idle-in-transaction timeout, a shutdown or a
        // restart) or lost the connection: the transaction was rolled back whole, so the
        // request is safe to run again.
        Sqlx::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "25P03" | "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldProblem {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", "Bad request"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::BadSignature(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                "Invalid signature",
            ),
            Self::StaleTimestamp(_) => (
                StatusCode::UNAUTHORIZED,
                "stale_timestamp",
                "Stale timestamp",
            ),
            Self::ForbiddenSource => (
                StatusCode::FORBIDDEN,
                "forbidden_source",
                "Forbidden source",
            ),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::VersionConflict(_) | Self::RecordVersionConflict(_) => {
                (StatusCode::CONFLICT, "version_conflict", "Version conflict")
            }
            Self::IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
            ),
            Self::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            Self::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "Validation failed",
            ),
            Self::DatabaseUnavailable | Self::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "Service unavailable",
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A database outage that reached here through `anyhow` is still an outage.
        let s = match self {
            Self::Internal(e)
                if e.downcast_ref::<sea_orm::DbErr>()
                    .is_some_and(is_unavailable) =>
            {
                tracing::warn!(error = %e, "database unavailable");
                Self::DatabaseUnavailable
            }
            other => other,
        };
        let (status, code, title) = s.parts();
        if let Self::Internal(e) = &s {
            tracing::error!(error = ?e, "request failed");
        }
        let mut body = json!({
            "type": format!("https://syncfleet.dev/problems/{code}"),
            "title": title,
            "status": status.as_u16(),
            "detail": s.to_string(),
            "code": code,
        });
        if let Self::Validation(errors) = &s {
            body["errors"] = json!(errors);
        }
        let mut resp = (status, Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Self::RateLimited(secs) = &s
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if matches!(s, Self::DatabaseUnavailable | Self::Busy) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // Only the API key's refusal names a scheme: a webhook's is its signature.
        if matches!(s, Self::Unauthorized) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
