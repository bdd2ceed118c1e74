//! The HTTP surface: one router per resource, merged by [`app`].

pub mod common;
pub mod conflicts;
pub mod docs;
pub mod fleet;
pub mod health;
pub mod history;
pub mod inbound;
pub mod integrations;
pub mod keys;
pub mod notifications;
pub mod outbox;
pub mod records;
pub mod webhooks;
pub mod workspaces;

use axum::Router;
use axum::extract::DefaultBodyLimit;

use crate::state::AppState;

/// Request bodies above this are refused with 413.
pub const MAX_BODY: usize = 1024 * 1024;

pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(integrations::router())
        .merge(history::router())
        .merge(fleet::router())
        .merge(keys::router())
        .merge(notifications::router())
        .merge(records::router())
        .merge(conflicts::router())
        .merge(outbox::router())
        .merge(webhooks::router())
        .merge(inbound::router())
        .merge(workspaces::router())
        .merge(docs::router())
        .merge(crate::console::router(state.clone()))
        .fallback(|| async { crate::error::ApiError::NotFound("route") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
