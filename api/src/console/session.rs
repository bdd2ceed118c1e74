//! Console sessions: an API key pasted once becomes a server-side session (a random
//! token in an `HttpOnly`, `SameSite=Strict` cookie; only its SHA-256 is stored).
//! Every request checks the session together with its key, so revoking the key ends
//! its sessions at once. Every state-changing request must carry the session's CSRF
//! token (`X-CSRF-Token`, or the `_csrf` form field).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use entity::Role;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use syncfleet_worker::db::{self as q, Dialect};

use super::ConsoleError;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::keyhash;
use crate::state::AppState;

pub const COOKIE: &str = "sf_session";
/// The login form's double-submit CSRF cookie (before there is a session).
pub const LOGIN_COOKIE: &str = "sf_login";
/// `last_seen_at` is written at most this often per session.
const TOUCH_EVERY_MS: i64 = 15_000;

/// A logged-in console user: the API key's caller, and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    /// SHA-256 of the cookie token (the row's id).
    pub id: String,
    /// The live feed's cursor when this request started (live.rs).
    pub since: String,
}

impl Session {
    /// An opaque name of this session for the page's shared live stream (live-worker.js):
    /// tabs of one session share a stream, another login gets its own. Derived from the
    /// row id, never the row id itself.
    pub fn live_tag(&self) -> String {
        let d = Sha256::digest(format!("live:{}", self.id).as_bytes());
        hex::encode(&d[..8])
    }

    pub fn is_admin(&self) -> bool {
        matches!(self.caller.role, Role::Admin | Role::Operator)
    }
    pub fn role_name(&self) -> &'static str {
        match self.caller.role {
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time comparison of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Secure` behind https.
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age_secs: u64) -> String {
    let secure = state
        .config
        .public_url
        .as_ref()
        .is_some_and(|u| u.scheme() == "https");
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Logs in with an API key: a new session, or `None` for an unknown or revoked key.
pub async fn create(state: &AppState, key: &str) -> Result<Option<(String, Session)>, ApiError> {
    let Some(hasher) = &state.key_hasher else {
        return Ok(None);
    };
    let key = key.trim();
    // The API's lookup (auth.rs): the keyed hash, or a legacy one not yet rehashed.
    let rows = q::query(
        &state.db,
        format!(
            "SELECT id, name, workspace_id, role FROM api_keys WHERE revoked_at IS NULL \
             AND ((key_hash = $1 AND hash_version = {}) OR (key_hash = $2 AND hash_version = {}))",
            keyhash::HMAC_VERSION,
            keyhash::LEGACY_VERSION
        ),
        [hasher.hash(key).into(), keyhash::legacy_hash(key).into()],
    )
    .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let caller = caller_of(r)?;
    let d = Dialect::of(&state.db);
    // Expired sessions go when someone logs in (cheap, and keeps the table small).
    let idle_ms = -(state.config.console_idle_timeout.as_millis() as i64);
    q::exec(
        &state.db,
        format!(
            "DELETE FROM console_sessions WHERE expires_at < {now} OR last_seen_at < {idle}",
            now = d.now(),
            idle = d.now_plus_ms("$1")
        ),
        [idle_ms.into()],
    )
    .await?;
    let token = random_hex(32);
    let csrf = random_hex(32);
    let id = digest(&token);
    let lifetime_ms = state.config.console_session_lifetime.as_millis() as i64;
    q::exec(
        &state.db,
        format!(
            "INSERT INTO console_sessions (id, key_id, csrf_token, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, {now}, {now}, {exp})",
            now = d.now(),
            exp = d.now_plus_ms("$4")
        ),
        [
            id.clone().into(),
            caller.key_id.into(),
            csrf.clone().into(),
            lifetime_ms.into(),
        ],
    )
    .await?;
    Ok(Some((
        token,
        Session {
            caller,
            csrf,
            id,
            since: state.live.cursor(),
        },
    )))
}

/// The caller of a key row (`id, name, workspace_id, role`), as the API builds it: an
/// operator spans every workspace.
fn caller_of(r: &sea_orm::QueryResult) -> Result<Caller, sea_orm::DbErr> {
    let role: Role = r.try_get("", "role")?;
    let key_id: Uuid = r.try_get("", "id")?;
    Ok(Caller {
        key_id,
        key_name: r.try_get("", "name")?,
        workspace_id: match role {
            Role::Operator => None,
            _ => r.try_get("", "workspace_id")?,
        },
        role,
    })
}

/// Ends a session (logout).
pub async fn end(state: &AppState, id: &str) -> Result<(), ApiError> {
    q::exec(
        &state.db,
        "DELETE FROM console_sessions WHERE id = $1",
        [id.to_owned().into()],
    )
    .await?;
    Ok(())
}

/// The session of a cookie token, if it is alive and its key is not revoked.
pub async fn lookup(state: &AppState, token: &str) -> Result<Option<Session>, ApiError> {
    let d = Dialect::of(&state.db);
    let id = digest(token);
    let idle_ms = -(state.config.console_idle_timeout.as_millis() as i64);
    let rows = q::query(
        &state.db,
        format!(
            "SELECT s.key_id AS id, k.name, s.csrf_token, k.workspace_id, k.role, \
               CASE WHEN s.last_seen_at < {touch} THEN 1 ELSE 0 END AS stale \
             FROM console_sessions s JOIN api_keys k ON k.id = s.key_id \
             WHERE s.id = $1 AND k.revoked_at IS NULL AND s.expires_at > {now} AND s.last_seen_at > {idle}",
            now = d.now(),
            idle = d.now_plus_ms("$2"),
            touch = d.now_plus_ms("$3"),
        ),
        [id.clone().into(), idle_ms.into(), (-TOUCH_EVERY_MS).into()],
    )
    .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let stale: i32 = r.try_get("", "stale")?;
    if stale == 1 {
        q::exec(
            &state.db,
            format!(
                "UPDATE console_sessions SET last_seen_at = {} WHERE id = $1",
                d.now()
            ),
            [id.clone().into()],
        )
        .await?;
    }
    Ok(Some(Session {
        caller: caller_of(r)?,
        csrf: r.try_get("", "csrf_token")?,
        id,
        since: state.live.cursor(),
    }))
}

/// Resolves the session of every console request, refuses state-changing requests
/// without the right CSRF token, and applies the key's rate limit.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let htmx = super::is_htmx(req.headers());
    let fail = |err: ApiError| ConsoleError { err, htmx }.into_response();
    let session = match cookie(req.headers(), COOKIE) {
        Some(token) => match lookup(&state, &token).await {
            Ok(s) => s,
            Err(e) => return fail(e),
        },
        None => None,
    };
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let (parts, body) = req.into_parts();
    let mut req = if unsafe_method && parts.uri.path() != "/login" {
        let Some(s) = &session else {
            return fail(ApiError::Unauthorized);
        };
        // The token comes in a header (htmx) or, for a plain form, in `_csrf`.
        let header = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Ok(bytes) = axum::body::to_bytes(body, crate::routes::MAX_BODY).await else {
            return fail(ApiError::PayloadTooLarge);
        };
        let field = form_field(&bytes, "_csrf");
        let ok = header
            .or(field)
            .is_some_and(|t| same(t.as_str(), s.csrf.as_str()));
        if !ok {
            return csrf_refused(htmx);
        }
        Request::from_parts(parts, axum::body::Body::from(bytes))
    } else {
        Request::from_parts(parts, body)
    };
    if let Some(s) = session {
        if let Err(not_until) = state.limiter.check_key(&s.caller.key_id) {
            let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
            return fail(ApiError::RateLimited(
                not_until.wait_time_from(now).as_secs().max(1),
            ));
        }
        req.extensions_mut().insert(s);
    }
    next.run(req).await
}

fn csrf_refused(htmx: bool) -> Response {
    let mut r = if htmx {
        super::toast(
            false,
            "Refused: the request did not carry this session's CSRF token. Reload the page.",
            false,
        )
    } else {
        super::page(super::bare(
            "Refused",
            maud::html! { section.card.narrow { h1 { "Refused" } p role="alert" { "The request did not carry this session's CSRF token." } p { a href="/" { "Reload the console" } } } },
        ))
    };
    *r.status_mut() = axum::http::StatusCode::FORBIDDEN;
    r
}

/// One field of an `application/x-www-form-urlencoded` body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(ConsoleError {
                err: ApiError::Unauthorized,
                htmx: super::is_htmx(&parts.headers),
            })
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Session>().cloned())
    }
}
