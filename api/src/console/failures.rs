//! Page: failures (`/failures`): failing, at-risk and disabled integrations, newest
//! failure first, with the last error's class and message. Retry one run, retry all,
//! re-enable, clear (acknowledge: hidden until it fails again). Below them, stale
//! integrations (freshness objective breached, longest first), with Sync now.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use uuid::Uuid;

use syncfleet_worker::db as q;

use super::{ConsoleError, Session, actions, age_text, layout, page, rel, toast, tone};
use crate::error::ApiError;
use crate::routes::common::parse_id;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/failures", get(show))
        .route("/failures/list", get(list_fragment))
        .route("/failures/retry-all", post(retry_all))
        .route("/failures/retry/{log_id}", post(retry_one))
        .route("/failures/{id}/re-enable", post(re_enable))
        .route("/failures/{id}/clear", post(clear))
        .route("/failures/{id}/sync", post(sync_now))
}

struct Failing {
    id: Uuid,
    name: String,
    kind: String,
    health: String,
    retry_count: i32,
    max_retries: i32,
    last_sync_at: Option<DateTime<Utc>>,
    log_id: Option<Uuid>,
    error_class: Option<String>,
    error_message: Option<String>,
    stale_since: Option<DateTime<Utc>>,
}

/// An integration whose freshness objective is breached.
struct Stale {
    id: Uuid,
    name: String,
    kind: String,
    health: String,
    stale_after: Option<i64>,
    stale_since: DateTime<Utc>,
    last_success_at: Option<DateTime<Utc>>,
    /// Seconds since the last success (or creation), as the API counts it.
    staleness: i64,
}

async fn stale(state: &AppState, s: &Session) -> Result<Vec<Stale>, ApiError> {
    let (scope, values) = actions::scope(s);
    let rows = q::query(
        &state.db,
        format!(
            "SELECT i.id, i.name, i.kind, i.health, i.stale_after_secs, i.stale_since, i.last_success_at, i.created_at \
             FROM integrations i WHERE i.stale_since IS NOT NULL{scope} ORDER BY i.stale_since, i.id LIMIT 500"
        ),
        values,
    )
    .await?;
    let now = Utc::now();
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let last_success_at: Option<DateTime<Utc>> = r.try_get("", "last_success_at")?;
        let created_at: DateTime<Utc> = r.try_get("", "created_at")?;
        out.push(Stale {
            id: r.try_get("", "id")?,
            name: r.try_get("", "name")?,
            kind: r.try_get("", "kind")?,
            health: r.try_get("", "health")?,
            stale_after: r.try_get("", "stale_after_secs")?,
            stale_since: r.try_get("", "stale_since")?,
            last_success_at,
            staleness: (now - last_success_at.unwrap_or(created_at))
                .num_seconds()
                .max(0),
        });
    }
    Ok(out)
}

async fn failing(state: &AppState, s: &Session) -> Result<Vec<Failing>, ApiError> {
    let (scope, values) = actions::scope(s);
    let rows = q::query(
        &state.db,
        format!(
            "SELECT i.id, i.name, i.kind, i.health, i.retry_count, i.max_retries, i.last_sync_at, i.last_error, i.stale_since, \
               l.id AS log_id, l.error_class, l.error_message \
             FROM integrations i \
             LEFT JOIN run_history l ON l.id = (SELECT f.id FROM run_history f WHERE f.integration_id = i.id \
               AND f.status = 'FAILED' ORDER BY f.id DESC LIMIT 1) \
             WHERE i.health IN ('degraded', 'at_risk', 'disabled'){scope} \
               AND NOT EXISTS (SELECT 1 FROM audit_events a WHERE a.integration_id = i.id AND a.action = '{ack}' \
                 AND (i.last_sync_at IS NULL OR a.created_at >= i.last_sync_at)) \
             ORDER BY i.last_sync_at DESC LIMIT 500",
            ack = actions::ACKNOWLEDGE,
        ),
        values,
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let last_error: Option<String> = r.try_get("", "last_error")?;
        out.push(Failing {
            id: r.try_get("", "id")?,
            name: r.try_get("", "name")?,
            kind: r.try_get("", "kind")?,
            health: r.try_get("", "health")?,
            retry_count: r.try_get("", "retry_count")?,
            max_retries: r.try_get("", "max_retries")?,
            last_sync_at: r.try_get("", "last_sync_at")?,
            log_id: r.try_get("", "log_id")?,
            error_class: r.try_get("", "error_class")?,
            error_message: r
                .try_get::<Option<String>>("", "error_message")?
                .or(last_error),
            stale_since: r.try_get("", "stale_since")?,
        });
    }
    Ok(out)
}

async fn list(state: &AppState, s: &Session) -> Result<Markup, ApiError> {
    let rows = failing(state, s).await?;
    let stale = stale(state, s).await?;
    Ok(html! {
        div #failures hx-get="/failures/list" hx-trigger="sf-refresh from:body, sf-live" hx-swap="outerHTML" {
            @if rows.is_empty() && stale.is_empty() {
                div.empty {
                    h2 { "Nothing is failing" }
                    p { "Integrations that fail, are one failure from being disabled, or were disabled show up here with their last error. Cleared ones come back if they fail again. Stale ones (no success for longer than their freshness objective) are listed too." }
                }
            } @else if rows.is_empty() {
                p.empty-inline { "Nothing is failing." }
            } @else {
                @if s.is_admin() {
                    div.bulk {
                        button.primary hx-post="/failures/retry-all" hx-target="#toasts" hx-swap="afterbegin"
                            hx-confirm="Retry the last failed run of every integration listed?" { "Retry all failed" }
                        span.muted { (rows.len()) " integration" @if rows.len() != 1 { "s" } }
                    }
                }
                ul.failures {
                    @for f in &rows {
                        @let (class, label) = tone(&f.health, true);
                        li.card.(format!("tone-{class}")) id=(format!("failure-{}", f.id)) data-id=(f.id) {
                            header {
                                a.name href=(format!("/integrations/{}", f.id)) { (f.name) }
                                span.badge.(format!("tone-{class}")) { span.dot aria-hidden="true" {} (label) }
                                @if f.stale_since.is_some() { span.badge.tone-warn.stale { span.dot aria-hidden="true" {} "Stale" } }
                                span.muted { (f.kind) " · " (f.retry_count) " of " (f.max_retries) " failures · last run " (rel(f.last_sync_at, "never")) }
                            }
                            p.lasterr {
                                @if let Some(c) = &f.error_class { code.errclass { (c) } " " }
                                (super::first_line(f.error_message.as_deref().unwrap_or("no error message"), 300))
                            }
                            @if s.is_admin() {
                                div.actions {
                                    @if let Some(log) = f.log_id {
                                        button hx-post=(format!("/failures/retry/{log}")) hx-target="#toasts" hx-swap="afterbegin" { "Retry" }
                                    }
                                    @if f.health == "disabled" {
                                        button hx-post=(format!("/failures/{}/re-enable", f.id)) hx-target="#toasts" hx-swap="afterbegin" { "Re-enable" }
                                    }
                                    button.link hx-post=(format!("/failures/{}/clear", f.id)) hx-target="#toasts" hx-swap="afterbegin" { "Clear" }
                                }
                            }
                        }
                    }
                }
            }
            @if !stale.is_empty() {
                section #stale {
                    h2 { "Stale " span.muted { "(" (stale.len()) " past their freshness objective)" } }
                    ul.failures {
                        @for st in &stale {
                            @let (class, label) = tone(&st.health, true);
                            li.card.tone-warn id=(format!("stale-{}", st.id)) data-id=(st.id) {
                                header {
                                    a.name href=(format!("/integrations/{}", st.id)) { (st.name) }
                                    span.badge.tone-warn { span.dot aria-hidden="true" {} "Stale" }
                                    @if st.health != "healthy" { span.badge.(format!("tone-{class}")) { span.dot aria-hidden="true" {} (label) } }
                                    span.muted {
                                        (st.kind) " · objective "
                                        @match st.stale_after { Some(secs) => (age_text(secs)), None => "none" }
                                        " · last success " (rel(st.last_success_at, "never"))
                                    }
                                }
                                p {
                                    "Stale since " (rel(Some(st.stale_since), "")) ": "
                                    b { (age_text(st.staleness)) } " without a successful sync."
                                }
                                @if s.is_admin() {
                                    div.actions {
                                        button hx-post=(format!("/failures/{}/sync", st.id)) hx-target="#toasts" hx-swap="afterbegin" { "Sync now" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

async fn show(State(state): State<AppState>, s: Session) -> super::Result {
    let body = html! {
        div.titlebar { h1 { "Failures" } }
        (list(&state, &s).await?)
    };
    Ok(page(layout(&s, "Failures", "/failures", body)))
}

async fn list_fragment(State(state): State<AppState>, s: Session) -> super::Result {
    Ok(page(
        list(&state, &s).await.map_err(ConsoleError::fragment)?,
    ))
}

async fn retry_all(State(state): State<AppState>, s: Session) -> super::Result {
    let r = actions::retry_all_failed(&state, &s)
        .await
        .map_err(ConsoleError::fragment)?;
    let text = match (r.done, r.failed) {
        (0, 0) => "Nothing to retry.".to_owned(),
        (n, 0) => format!("Retried {n} run{}.", if n == 1 { "" } else { "s" }),
        (n, f) => format!(
            "Retried {n} run{}; {f} could not be retried.",
            if n == 1 { "" } else { "s" }
        ),
    };
    Ok(toast(r.failed == 0, &text, true))
}

async fn retry_one(
    State(state): State<AppState>,
    s: Session,
    Path(log_id): Path<String>,
) -> super::Result {
    let log_id = parse_id(&log_id).map_err(ConsoleError::fragment)?;
    let r = actions::retry(&state, &s, log_id)
        .await
        .map_err(ConsoleError::fragment)?;
    let text = if r.coalesced {
        "A run is already queued or running for this integration."
    } else {
        "Retry queued: a manual run starts shortly."
    };
    Ok(toast(true, text, true))
}

async fn re_enable(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
) -> super::Result {
    let id = parse_id(&id).map_err(ConsoleError::fragment)?;
    let reason = None;
    actions::resume(&state, &s, id, reason)
        .await
        .map_err(ConsoleError::fragment)?;
    Ok(toast(
        true,
        "Re-enabled: failures reset, a run starts now.",
        true,
    ))
}

async fn sync_now(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
) -> super::Result {
    let id = parse_id(&id).map_err(ConsoleError::fragment)?;
    let r = actions::sync_now(&state, &s, id)
        .await
        .map_err(ConsoleError::fragment)?;
    let text = if r.coalesced {
        "A run is already queued or running for this integration."
    } else {
        "Sync queued: a manual run starts shortly."
    };
    Ok(toast(true, text, true))
}

async fn clear(State(state): State<AppState>, s: Session, Path(id): Path<String>) -> super::Result {
    let id = parse_id(&id).map_err(ConsoleError::fragment)?;
    let reason = None;
    actions::acknowledge(&state, &s, id, reason)
        .await
        .map_err(ConsoleError::fragment)?;
    Ok(toast(
        true,
        "Cleared: hidden here until it fails again.",
        true,
    ))
}
