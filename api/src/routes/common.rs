//! Helpers shared by the resource routers: ids, scoping, pagination, audit.

use entity::integrations;
use sea_orm::EntityTrait;
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Largest page any list endpoint serves.
pub const MAX_PAGE_SIZE: u64 = 500;

pub fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::BadRequest(format!("`{raw}` is not a UUID")))
}

/// Loads an integration visible to the caller; another workspace's is "not found".
pub async fn load(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<integrations::Model, ApiError> {
    let m = integrations::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or(ApiError::NotFound("integration"))?;
    match caller.workspace_id {
        Some(ws) if ws != m.workspace_id => Err(ApiError::NotFound("integration")),
        _ => Ok(m),
    }
}

/// Validates `page` (1-based) and `pageSize`.
pub fn page_bounds(page: Option<u64>, page_size: Option<u64>) -> Result<(u64, u64), ApiError> {
    let size = page_size.unwrap_or(20);
    if !(1..=MAX_PAGE_SIZE).contains(&size) {
        return Err(ApiError::field(
            "pageSize",
            format!("must be from 1 to {MAX_PAGE_SIZE}"),
        ));
    }
    let page = page.unwrap_or(1);
    if page == 0 || page > 1_000_000 {
        return Err(ApiError::field("page", "must be from 1 to 1000000"));
    }
    Ok((page, size))
}

/// Why `s` is not a name (1 to `max` characters, not blank, on one line, without
/// control characters), if it is not.
pub fn name_problem(s: &str, max: usize) -> Option<String> {
    if s.trim().is_empty() || s.chars().count() > max {
        Some(format!("must be 1 to {max} characters"))
    } else if s.chars().any(char::is_control) {
        Some("must be one line without control characters".into())
    } else {
        None
    }
}

/// Whether free text (a reason) is free of control characters other than tabs and
/// line breaks.
pub fn free_text_ok(s: &str) -> bool {
    !s.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// Validates a sync interval given as JSON: a whole number of seconds within the
/// configured bounds, or `null` (manual syncs only).
pub fn interval(state: &AppState, v: Option<&serde_json::Value>) -> Result<Option<i64>, String> {
    let (min, max) = (
        state.config.min_interval_secs,
        state.config.max_interval_secs,
    );
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "must be a whole number of seconds from {min} to {max}, or null"
            )),
        },
    }
}
