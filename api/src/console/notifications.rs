//! Page: notifications (`/notifications`): the workspace's webhook endpoints, a form to
//! add one (its signing secret shown once), per endpoint Enable/Disable, Rotate secret
//! (the new one shown once), Send test and Delete; and the recent deliveries, with
//! Retry for failed ones. Every write goes through `actions` onto the control plane's own operation
//! (`control::notifications`: the API's validation, scoping and audit event), after
//! the API's role check. Viewers see the same page without forms or buttons.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use uuid::Uuid;

use syncfleet_worker::notifications::EventType;

use super::detail::format_ms;
use super::{
    ConsoleError, Session, abs, actions, error_toast, first_line, is_htmx, layout, page, rel, toast,
};
use crate::control::notifications::{self as ctl, EndpointFields};
use crate::error::ApiError;
use crate::routes::common::parse_id;
use crate::routes::notifications::{self as api, DeliveryQuery, DeliveryView, EndpointView};
use crate::state::AppState;

/// Deliveries the page lists (newest first).
const DELIVERIES_SHOWN: u64 = 50;
/// Seconds the previous secret keeps signing after a rotation (the API's default).
const ROTATE_GRACE_SECS: i64 = 86_400;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/notifications", get(show))
        .route(
            "/notifications/endpoints",
            get(endpoints_fragment).post(create),
        )
        .route("/notifications/deliveries", get(deliveries_fragment))
        .route("/notifications/endpoints/{id}/enable", post(enable))
        .route("/notifications/endpoints/{id}/disable", post(disable))
        .route("/notifications/endpoints/{id}/rotate", post(rotate))
        .route("/notifications/endpoints/{id}/test", post(test))
        .route("/notifications/endpoints/{id}/delete", post(delete))
        .route("/notifications/deliveries/{id}/retry", post(retry))
}

/// The event types a person can subscribe to (every one but `test`), in the API's order.
fn subscribable() -> impl Iterator<Item = EventType> {
    EventType::ALL.into_iter().filter(|t| *t != EventType::Test)
}

fn describe(t: EventType) -> &'static str {
    match t {
        EventType::SyncFailed => "every failed run (opt-in: only if ticked)",
        EventType::AtRisk => "one failure away from being disabled",
        EventType::Disabled => "disabled by the system",
        EventType::Stale => "its freshness objective is breached",
        EventType::Recovered => "the first success after failures, a disable or a breach",
        EventType::Paused => "paused by someone",
        EventType::Resumed => "resumed by someone",
        EventType::Test => "sent by hand to check an endpoint",
        EventType::ConflictDetected => "a local and a cloud change of a record wait for a person",
    }
}

/// What the add form holds, and the API's problems with it by input.
#[derive(Default)]
struct Draft {
    url: String,
    description: String,
    format: String,
    types: Vec<String>,
    errors: HashMap<&'static str, String>,
    general: Vec<String>,
}

impl Draft {
    fn of(pairs: Vec<(String, String)>) -> Self {
        let mut d = Self::default();
        for (k, v) in pairs {
            match k.as_str() {
                "url" => d.url = v,
                "description" => d.description = v,
                "format" => d.format = v,
                "types" => d.types.push(v),
                _ => {}
            }
        }
        d
    }

    fn err(&self, input: &str) -> Option<&str> {
        self.errors.get(input).map(String::as_str)
    }

    /// Puts the API's field problems next to their inputs.
    fn absorb(&mut self, problems: Vec<crate::error::FieldProblem>) {
        for p in problems {
            let input = match p.field.as_str() {
                "url" => Some("url"),
                "description" => Some("description"),
                "format" => Some("format"),
                "eventTypes" => Some("types"),
                _ => None,
            };
            match input {
                Some(i) => {
                    self.errors
                        .entry(i)
                        .and_modify(|m| {
                            m.push_str("; ");
                            m.push_str(&p.message);
                        })
                        .or_insert(p.message);
                }
                None => self.general.push(format!("{}: {}", p.field, p.message)),
            }
        }
    }
}

async fn endpoints_of(state: &AppState, s: &Session) -> Result<Vec<EndpointView>, ApiError> {
    Ok(api::list(State(state.clone()), s.caller.clone()).await?.0)
}

async fn show(State(state): State<AppState>, s: Session) -> super::Result {
    Ok(page(render(&state, &s, &Draft::default(), None).await?))
}

/// The whole page; `created` is a just-added endpoint's `(url, secret)`.
async fn render(
    state: &AppState,
    s: &Session,
    d: &Draft,
    created: Option<(&str, &str)>,
) -> Result<Markup, ApiError> {
    let endpoints = endpoints_of(state, s).await?;
    let body = html! {
        div.titlebar { div {
            h1 { "Notifications" }
            p.muted { "Webhooks for this workspace's health events: failures, disables, breached freshness objectives, recoveries, pauses. Each delivery is signed (Standard Webhooks) and retried with backoff." }
        } }
        section.card {
            h2 { "Endpoints" }
            div #secret-slot aria-live="polite" {}
            (endpoints_table(s, &endpoints))
        }
        section.card {
            h2 { "Recent deliveries" }
            (deliveries_table(state, s, &endpoints).await?)
        }
        @if s.is_admin() { (add_section(s, d, created)) }
    };
    Ok(layout(s, "Notifications", "/notifications", body))
}

fn event_list(types: &[String]) -> Markup {
    html! {
        @if types.is_empty() {
            span.muted { "all but sync.failed" }
        } @else {
            @for (n, t) in types.iter().enumerate() {
                @if n > 0 { ", " }
                code { (t) }
            }
        }
    }
}

/// The endpoints: a live region that reloads after every action of the page.
fn endpoints_table(s: &Session, endpoints: &[EndpointView]) -> Markup {
    html! {
        div #endpoints hx-get="/notifications/endpoints" hx-trigger="sf-refresh from:body" hx-swap="outerHTML" {
            @if endpoints.is_empty() {
                p.empty-inline {
                    "No endpoints yet. "
                    @if s.is_admin() { "Add one below to hear of failures, disables and stale data as they happen." }
                    @else { "Your key is read-only: ask an admin to add one." }
                }
            } @else {
                div.scroll {
                    table.endpoints {
                        thead { tr {
                            th { "URL" } th { "Format" } th { "Events" } th { "State" }
                            th.num title="failed deliveries in a row" { "Failures in a row" }
                            @if s.is_admin() { th { span.sr { "Actions" } } }
                        } }
                        tbody {
                            @for e in endpoints {
                                tr.endpoint id=(format!("endpoint-{}", e.id)) data-id=(e.id) data-enabled=(e.enabled) {
                                    td {
                                        span.mono.url { (e.url) }
                                        @if !e.description.is_empty() { br; span.muted { (e.description) } }
                                        @if let Some(t) = e.previous_secret_valid_until {
                                            br; span.muted.grace { "previous secret still signs, ends " (rel(Some(t), "")) }
                                        }
                                    }
                                    td { (e.format) }
                                    td { (event_list(&e.event_types)) }
                                    td {
                                        @if e.enabled {
                                            span.badge.tone-ok { span.dot aria-hidden="true" {} "Enabled" }
                                        } @else {
                                            span.badge.(if e.disabled_reason.is_some() { "tone-bad" } else { "tone-off" }) { span.dot aria-hidden="true" {} "Disabled" }
                                            @if let Some(r) = &e.disabled_reason { br; span.muted.reason { (first_line(r, 200)) } }
                                        }
                                    }
                                    td.num { (e.consecutive_failures) }
                                    @if s.is_admin() {
                                        td { div.actions {
                                            button data-action="test" hx-post=(format!("/notifications/endpoints/{}/test", e.id)) hx-target="#toasts" hx-swap="afterbegin" { "Send test" }
                                            @if e.enabled {
                                                button data-action="disable" hx-post=(format!("/notifications/endpoints/{}/disable", e.id)) hx-target="#toasts" hx-swap="afterbegin" { "Disable" }
                                            } @else {
                                                button data-action="enable" hx-post=(format!("/notifications/endpoints/{}/enable", e.id)) hx-target="#toasts" hx-swap="afterbegin" { "Enable" }
                                            }
                                            button data-action="rotate" hx-post=(format!("/notifications/endpoints/{}/rotate", e.id)) hx-target="#secret-slot" hx-swap="innerHTML show:#secret-slot:top"
                                                title="A new signing secret; the old one keeps signing beside it for 24 h" { "Rotate secret" }
                                            button.danger data-action="delete" hx-post=(format!("/notifications/endpoints/{}/delete", e.id)) hx-target="#toasts" hx-swap="afterbegin"
                                                hx-confirm=(format!("Delete the endpoint {} and its deliveries? The audit trail stays.", e.url)) { "Delete" }
                                        } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A secret shown this once.
fn secret_box(headline: &str, url: &str, secret: &str, note: &str) -> Markup {
    html! {
        div.callout.tone-warn.secret-once role="status" {
            p { b { (headline) } " Copy the signing secret now: it is not shown again." }
            p.muted { "Endpoint " span.mono { (url) } }
            pre.secret-value aria-label="Signing secret" { (secret) }
            p.help { (note) }
        }
    }
}

/// The add form (admins only); `created` shows the new endpoint's secret above it.
fn add_section(s: &Session, d: &Draft, created: Option<(&str, &str)>) -> Markup {
    let field_err = |name: &str| {
        d.err(name)
            .map(|e| html! { p.field-error id=(format!("err-{name}")) role="alert" { (e) } })
    };
    html! {
        section.card #add-endpoint {
            h2 { "Add an endpoint" }
            @if let Some((url, secret)) = created {
                (secret_box("Endpoint added.", url, secret,
                    "Receivers check each delivery's webhook-signature header with it (Standard Webhooks). Lost it? Rotate the secret."))
            }
            @if !d.general.is_empty() || !d.errors.is_empty() {
                div.callout.tone-bad role="alert" {
                    p { b { "Nothing was saved." } " Fix the fields marked below." }
                    @for g in &d.general { p { (g) } }
                }
            }
            form.endpointform method="post" action="/notifications/endpoints" hx-post="/notifications/endpoints"
                hx-target="#add-endpoint" hx-swap="outerHTML show:#add-endpoint:top" novalidate {
                input type="hidden" name="_csrf" value=(s.csrf);
                div.field {
                    label for="ep-url" { "URL" span.req aria-hidden="true" { " *" } }
                    input #ep-url type="url" name="url" value=(d.url) placeholder="https://hooks.example.com/syncfleet" required
                        autocomplete="off" aria-invalid=[d.err("url").map(|_| "true")] aria-describedby="help-url";
                    p.help #help-url { "http or https. Checked now and at every send: private and local addresses are refused unless the deployment allows them." }
                    @if let Some(e) = field_err("url") { (e) }
                }
                div.field {
                    label for="ep-description" { "Description" }
                    input #ep-description type="text" name="description" value=(d.description) maxlength="500"
                        placeholder="On-call channel" aria-invalid=[d.err("description").map(|_| "true")];
                    @if let Some(e) = field_err("description") { (e) }
                }
                div.field {
                    label for="ep-format" { "Format" }
                    select #ep-format name="format" aria-invalid=[d.err("format").map(|_| "true")] {
                        option value="standard" selected[d.format != "slack"] { "standard: signed JSON (Standard Webhooks)" }
                        option value="slack" selected[d.format == "slack"] { "slack: a Slack incoming-webhook message" }
                    }
                    @if let Some(e) = field_err("format") { (e) }
                }
                fieldset.events {
                    legend { "Events" }
                    p.help { "None ticked: every event except sync.failed, which is opt-in." }
                    @for t in subscribable() {
                        label.check {
                            input type="checkbox" name="types" value=(t.as_str()) checked[d.types.iter().any(|x| x == t.as_str())];
                            " " code { (t.as_str()) } " " span.muted { "— " (describe(t)) }
                        }
                        br;
                    }
                    @if let Some(e) = field_err("types") { (e) }
                }
                div.buttons {
                    button.primary type="submit" { "Add endpoint" }
                }
            }
        }
    }
}

fn delivery_status(d: &DeliveryView) -> Markup {
    let (class, glyph, label) = match d.status.as_str() {
        "succeeded" => ("ok", "✓", "Succeeded"),
        "failed" => ("bad", "✕", "Failed"),
        "pending" => ("run", "…", "Pending"),
        _ => ("off", "?", "Unknown"),
    };
    html! {
        span.status.(class) title=(label) { span aria-hidden="true" { (glyph) } " " (label) }
        @if d.status == "pending" && d.attempts > 0 && d.next_attempt_at.is_some() {
            br; span.muted { "next try " (rel(d.next_attempt_at, "")) }
        }
    }
}

/// The recent deliveries: a live region that reloads after every action of the page,
/// and every 2 s while a delivery is pending (every 15 s while it waits out a long
/// backoff).
async fn deliveries_table(
    state: &AppState,
    s: &Session,
    endpoints: &[EndpointView],
) -> Result<Markup, ApiError> {
    let list = api::list_deliveries(
        state,
        &s.caller,
        &DeliveryQuery {
            endpoint_id: None,
            status: None,
            event_id: None,
            limit: Some(DELIVERIES_SHOWN),
        },
    )
    .await?;
    let urls: HashMap<Uuid, &str> = endpoints.iter().map(|e| (e.id, e.url.as_str())).collect();
    // Followed closely while a delivery is about to be attempted, loosely while one
    // waits out a long backoff.
    let soon = chrono::Utc::now() + chrono::TimeDelta::seconds(30);
    let pending = list.iter().any(|d| d.status == "pending");
    let imminent = list
        .iter()
        .any(|d| d.status == "pending" && d.next_attempt_at.is_none_or(|t| t <= soon));
    let trigger = if imminent {
        "sf-refresh from:body, every 2s"
    } else if pending {
        "sf-refresh from:body, every 15s"
    } else {
        "sf-refresh from:body"
    };
    Ok(html! {
        div #deliveries hx-get="/notifications/deliveries" hx-trigger=(trigger) hx-swap="outerHTML" data-pending=[pending.then_some("1")] {
            @if list.is_empty() {
                p.empty-inline { "No deliveries yet. Events are delivered to the endpoints that receive them; Send test sends one now." }
            } @else {
                p.muted { "The last " (DELIVERIES_SHOWN) " at most, newest first." }
                div.scroll {
                    table.deliveries {
                        thead { tr {
                            th { "Event" } th { "Endpoint" } th { "Status" } th.num { "Attempts" } th.num { "Last code" }
                            th.num { "Latency" } th { "Error" } th { "Created" }
                            @if s.is_admin() { th { span.sr { "Actions" } } }
                        } }
                        tbody {
                            @for d in &list {
                                tr.delivery id=(format!("delivery-{}", d.id)) data-status=(d.status) data-event=(d.event_type) data-endpoint=(d.endpoint_id) {
                                    td { code { (d.event_type) } }
                                    td.mono { @match urls.get(&d.endpoint_id) { Some(u) => (u), None => (d.endpoint_id) } }
                                    td { (delivery_status(d)) }
                                    td.num { (d.attempts) }
                                    td.num { @match d.last_status_code { Some(c) => (c), None => span.muted { "—" } } }
                                    td.num { @match d.last_latency_ms { Some(ms) => (format_ms(ms)), None => span.muted { "—" } } }
                                    td { @match &d.last_error {
                                        Some(e) => span title=(e) { (first_line(e, 120)) },
                                        None => span.muted { "—" },
                                    } }
                                    td { (rel(Some(d.created_at), "")) }
                                    @if s.is_admin() {
                                        td { @if d.status == "failed" {
                                            button data-action="retry" hx-post=(format!("/notifications/deliveries/{}/retry", d.id)) hx-target="#toasts" hx-swap="afterbegin" { "Retry" }
                                        } }
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

async fn endpoints_fragment(State(state): State<AppState>, s: Session) -> super::Result {
    let endpoints = endpoints_of(&state, &s)
        .await
        .map_err(ConsoleError::fragment)?;
    Ok(page(endpoints_table(&s, &endpoints)))
}

async fn deliveries_fragment(State(state): State<AppState>, s: Session) -> super::Result {
    let fragment = async {
        let endpoints = endpoints_of(&state, &s).await?;
        deliveries_table(&state, &s, &endpoints).await
    };
    Ok(page(fragment.await.map_err(ConsoleError::fragment)?))
}

/// The answer to an htmx action that refreshes the page's live regions.
fn refreshed(mut r: Response) -> Response {
    r.headers_mut()
        .insert("hx-trigger", HeaderValue::from_static("sf-refresh"));
    r
}

/// Add an endpoint (`POST /api/notifications/endpoints`): the form again with the
/// secret shown once above it, or with the API's messages next to the fields.
async fn create(
    State(state): State<AppState>,
    s: Session,
    headers: HeaderMap,
    axum::Form(pairs): axum::Form<Vec<(String, String)>>,
) -> super::Result {
    let htmx = is_htmx(&headers);
    let mut d = Draft::of(pairs);
    let added = async {
        let ws = s.caller.home_workspace(&state.db).await?;
        let fields = EndpointFields {
            url: Some(d.url.trim().to_owned()),
            description: Some(d.description.trim().to_owned()),
            event_types: Some(d.types.clone()),
            enabled: Some(true),
            format: Some(if d.format.is_empty() {
                "standard".to_owned()
            } else {
                d.format.clone()
            }),
        };
        let (row, secret) = actions::endpoint_create(&state, &s, ws, fields).await?;
        Ok::<_, ApiError>((EndpointView::of(&row)?, secret))
    }
    .await;
    match added {
        Ok((view, secret)) => {
            let created = Some((view.url.as_str(), secret.as_str()));
            let fresh = Draft::default();
            if htmx {
                Ok(refreshed(page(add_section(&s, &fresh, created))))
            } else {
                Ok(page(render(&state, &s, &fresh, created).await?))
            }
        }
        Err(ApiError::Validation(problems)) => {
            d.absorb(problems);
            let mut r = if htmx {
                page(add_section(&s, &d, None))
            } else {
                page(render(&state, &s, &d, None).await?)
            };
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(r)
        }
        Err(e) if htmx => Ok(error_toast(e)),
        Err(e) => Err(ConsoleError::page(e)),
    }
}

fn endpoint_id(raw: &str) -> Result<Uuid, ConsoleError> {
    parse_id(raw).map_err(ConsoleError::fragment)
}

async fn set_enabled(state: &AppState, s: &Session, raw: &str, on: bool) -> super::Result {
    let id = endpoint_id(raw)?;
    let changed = async {
        let fields = EndpointFields {
            enabled: Some(on),
            ..EndpointFields::default()
        };
        let row = actions::endpoint_update(state, s, id, fields).await?;
        EndpointView::of(&row)
    }
    .await
    .map_err(ConsoleError::fragment)?;
    let text = if on {
        format!(
            "Enabled {}: its failure streak is reset, and new events are delivered to it.",
            changed.url
        )
    } else {
        format!(
            "Disabled {}: it receives no events until it is enabled again.",
            changed.url
        )
    };
    Ok(toast(true, &text, true))
}

async fn enable(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
) -> super::Result {
    set_enabled(&state, &s, &id, true).await
}

async fn disable(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
) -> super::Result {
    set_enabled(&state, &s, &id, false).await
}

/// Rotate the secret (`POST …/rotate-secret`, the API's default grace): the new secret,
/// shown once, into the page's secret slot.
async fn rotate(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
) -> super::Result {
    let rotated = async {
        let id = parse_id(&id)?;
        let secret = actions::endpoint_rotate(&state, &s, id, ROTATE_GRACE_SECS).await?;
        let row = ctl::read(&state.db, &s.caller, id).await?;
        Ok::<_, ApiError>((EndpointView::of(&row)?, secret))
    }
    .await;
    let (view, secret) = match rotated {
        Ok(r) => r,
        Err(e) => return Ok(error_toast(e)),
    };
    let note = match view.previous_secret_valid_until {
        Some(t) => {
            html! { "The previous secret keeps signing beside it until " (abs(Some(t))) ": move your receiver to the new one before then." }
        }
        None => html! { "The previous secret no longer signs." },
    };
    Ok(refreshed(page(html! {
        div.callout.tone-warn.secret-once.rotated role="status" data-endpoint=(view.id) {
            p { b { "Secret rotated." } " Copy the new signing secret now: it is not shown again." }
            p.muted { "Endpoint " span.mono { (view.url) } }
            pre.secret-value aria-label="New signing secret" { (secret) }
            p.help { (note) }
        }
    })))
}

/// Send a `test` event to the endpoint (`POST …/test`).
async fn test(State(state): State<AppState>, s: Session, Path(id): Path<String>) -> super::Result {
    let id = endpoint_id(&id)?;
    let url = async {
        actions::endpoint_test(&state, &s, id).await?;
        let row = ctl::read(&state.db, &s.caller, id).await?;
        Ok::<_, ApiError>(row.try_get::<String>("", "url")?)
    }
    .await
    .map_err(ConsoleError::fragment)?;
    Ok(toast(
        true,
        &format!("Test sent to {url}: its delivery is listed below."),
        true,
    ))
}

/// Delete the endpoint with its deliveries (`DELETE …/endpoints/{id}`).
async fn delete(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
) -> super::Result {
    let id = endpoint_id(&id)?;
    async { actions::endpoint_delete(&state, &s, id).await }
        .await
        .map_err(ConsoleError::fragment)?;
    Ok(toast(true, "Endpoint deleted with its deliveries.", true))
}

/// Retry a failed delivery now (`POST …/deliveries/{id}/retry`).
async fn retry(State(state): State<AppState>, s: Session, Path(id): Path<String>) -> super::Result {
    let id = endpoint_id(&id)?;
    async { actions::delivery_retry(&state, &s, id).await }
        .await
        .map_err(ConsoleError::fragment)?;
    Ok(toast(
        true,
        "Retry queued: the delivery is pending again.",
        true,
    ))
}
