//! Page: one integration (`/integrations/{id}`): its state (with its freshness
//! objective, its staleness, and a Stale badge when the objective is breached),
//! settings, Sync now, Pause/Resume, a chart of recent runs, the sync history (cursor
//! pages), the audit timeline and a preview of its records. The state, chart, history
//! and audit are one live region that reloads when the integration changes.

use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use syncfleet_worker::db as q;
use syncfleet_worker::history::{self as runs_history, HISTORY, STATS_TABLE};

use super::{
    ConsoleError, Session, abs, actions, age_text, interval_text, layout, page, rel, status_icon,
    toast, tone,
};
use crate::error::ApiError;
use crate::extract::{ApiQuery, PathId, Scoped};
use crate::routes::common::{load, parse_id};
use crate::routes::history::{self, AuditQuery, HistoryQuery, RecordQuery};
use crate::routes::integrations::SyncSettings;
use crate::routes::integrations::UpdateIntegration;
use crate::state::AppState;
use crate::views::{IntegrationView, RunView};

/// The interval choices of the settings form (seconds).
pub const INTERVALS: &[(i64, &str)] = &[
    (60, "every minute"),
    (300, "every 5 minutes"),
    (900, "every 15 minutes"),
    (1800, "every 30 minutes"),
    (3600, "every hour"),
    (21_600, "every 6 hours"),
    (43_200, "every 12 hours"),
    (86_400, "every 24 hours"),
];
const HISTORY_PAGE: u64 = 20;
/// Records counted at most (the count is a range scan).
const COUNT_CAP: i64 = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/integrations/{id}", get(show))
        .route("/integrations/{id}/live", get(live))
        .route("/integrations/{id}/history", get(history_page))
        .route("/integrations/{id}/settings", post(settings))
        .route("/integrations/{id}/sync", post(sync_now))
        .route("/integrations/{id}/pause", post(pause))
        .route("/integrations/{id}/resume", post(resume))
        .route("/integrations/{id}/delete", post(delete))
}

fn id_of(raw: &str, htmx: bool) -> Result<Uuid, ConsoleError> {
    parse_id(raw).map_err(|e| ConsoleError { err: e, htmx })
}

/// The records preview's filter: `?syncState=` as the records API takes it.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DetailQuery {
    #[serde(default)]
    sync_state: Option<String>,
}

/// The sync states the records preview filters by, in the order it lists them.
const SYNC_STATES: [&str; 5] = ["pending", "pushing", "conflict", "failed", "synced"];

async fn show(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Query(dq): Query<DetailQuery>,
) -> super::Result {
    let id = id_of(&id, false)?;
    let m = load(&state, &s.caller, id).await?;
    let view = IntegrationView::from(m);
    let filter = dq.sync_state.filter(|f| !f.is_empty());
    // A change waiting for the cloud may be a delete: those are listed too.
    let unsynced = filter.as_deref().is_some_and(|f| f != "synced");
    let records = history::records(
        State(state.clone()),
        Scoped {
            caller: s.caller.clone(),
            integration: load(&state, &s.caller, id).await?,
        },
        ApiQuery(RecordQuery {
            page_size: Some(if filter.is_some() { 20 } else { 5 }),
            cursor: None,
            updated_since: None,
            include_deleted: unsynced,
            sync_state: filter.clone(),
        }),
    )
    .await?
    .0;
    // Records not synced, by state (the partial index on the records not `synced`).
    let mut by_state: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for r in q::query(
        &state.db,
        "SELECT sync_state, COUNT(*) AS n FROM records WHERE integration_id = $1 AND sync_state <> 'synced' \
         GROUP BY sync_state",
        [id.into()],
    )
    .await?
    {
        by_state.insert(r.try_get("", "sync_state")?, r.try_get("", "n")?);
    }
    let held: i64 = q::query(
        &state.db,
        format!(
            "SELECT COUNT(*) AS n FROM (SELECT 1 FROM records WHERE integration_id = $1 AND deleted_at IS NULL LIMIT {}) t",
            COUNT_CAP + 1
        ),
        [id.into()],
    )
    .await?
    .first()
    .map(|r| r.try_get("", "n"))
    .transpose()?
    .unwrap_or(0);
    let body = html! {
        section #detail data-id=(id) {
            div.titlebar {
                div {
                    p.crumbs { a href="/" { "Integrations" } " /" }
                    h1 { (view.name) }
                    p.muted { (view.kind) " · created " (rel(Some(view.created_at), "")) }
                }
                @if s.is_admin() {
                    div.actions {
                        a.button href=(format!("/integrations/{id}/edit")) { "Edit" }
                        form hx-post=(format!("/integrations/{id}/delete")) hx-target="#toasts" hx-swap="afterbegin"
                            hx-confirm=(format!("Delete {} with its runs and records? The audit trail stays.", view.name)) {
                            button.danger type="submit" { "Delete" }
                        }
                    }
                }
            }
            (live_region(&state, &s, id).await?)
            @if s.is_admin() { (settings_form(&state, &view)) }
            section.card #records {
                h2 { "Records" }
                p.muted {
                    @if held > COUNT_CAP { "more than " (COUNT_CAP) } @else { (held) } " records held · "
                    @match &filter { Some(f) => { (records.records.len()) " shown: " (f) ", by id" }, None => "the first few by id" }
                }
                nav.filters.syncstates aria-label="Records by sync state" {
                    a.count href=(format!("/integrations/{id}#records")) aria-current=[filter.is_none().then_some("page")] data-filter="" { "All" }
                    @for st in SYNC_STATES {
                        a.count href=(format!("/integrations/{id}?syncState={st}#records")) aria-current=[(filter.as_deref() == Some(st)).then_some("page")]
                            data-filter=(st) data-count=[by_state.get(st)] {
                            (st) @if let Some(n) = by_state.get(st) { " " b { (n) } }
                        }
                    }
                }
                @if records.records.is_empty() {
                    @match &filter {
                        Some(f) => p.empty-inline { "No records are " (f) "." },
                        None => p.empty-inline { "No records yet: they appear after the first successful sync, or with the first local write." },
                    }
                } @else {
                    table.records {
                        thead { tr { th { "id" } th { "data" } th { "sync state" } th.num { "version" } th { "synced" } th { "changed here" } } }
                        tbody {
                            @for r in &records.records {
                                tr.record data-id=(r.external_id) data-sync-state=(r.sync_state) {
                                    td.mono { (r.external_id) }
                                    td { @if r.deleted_at.is_some() { span.muted { "deleted" } } @else { code.json { (short_json(&r.data)) } } }
                                    td {
                                        (super::outbox::sync_badge(&r.sync_state))
                                        @match r.sync_state.as_str() {
                                            "conflict" => { " " a href=(format!("/conflicts?integration={id}")) { "review" } },
                                            "failed" => { " " a href="/outbox" { "outbox" } },
                                            _ => {},
                                        }
                                    }
                                    td.num { (r.version) }
                                    td { (rel(Some(r.synced_at), "")) }
                                    td { (rel(r.modified_at, "—")) }
                                }
                            }
                        }
                    }
                    p { a href=(format!("/api/integrations/{id}/records")) { "All records (JSON API, needs the key)" } }
                }
            }
            link rel="stylesheet" href=(super::assets::url("uplot.css"));
            script src=(super::assets::url("uplot.js")) defer {}
        }
    };
    Ok(page(layout(&s, &view.name, "/", body)))
}

fn short_json(v: &Value) -> String {
    let s = v.to_string();
    super::first_line(&s, 200)
}

/// The part of the page that follows the integration's state.
async fn live_region(state: &AppState, s: &Session, id: Uuid) -> Result<Markup, ApiError> {
    let m = load(state, &s.caller, id).await?;
    let v = IntegrationView::from(m);
    let (class, label) = tone(&v.health, v.last_sync_at.is_some());
    // A breached freshness objective turns a healthy (or new) integration amber.
    let card_class = if v.stale && matches!(class, "ok" | "new") {
        "warn"
    } else {
        class
    };
    let live_run = q::query(
        &state.db,
        "SELECT status FROM live_runs WHERE integration_id = $1 LIMIT 1",
        [id.into()],
    )
    .await?
    .first()
    .map(|r| r.try_get::<String>("", "status"))
    .transpose()?;
    let hist = history::history(
        State(state.clone()),
        s.caller.clone(),
        PathId(id),
        ApiQuery(HistoryQuery {
            page: None,
            page_size: Some(HISTORY_PAGE),
            status: None,
            trigger: None,
            from: None,
            to: None,
            cursor: None,
        }),
    )
    .await?
    .0;
    let audit = history::audit(
        State(state.clone()),
        Scoped {
            caller: s.caller.clone(),
            integration: load(state, &s.caller, id).await?,
        },
        ApiQuery(AuditQuery {
            page_size: Some(10),
            cursor: None,
        }),
    )
    .await?
    .0;
    let chart = chart_data(state, id).await?;
    Ok(html! {
        div #live hx-get=(format!("/integrations/{id}/live")) hx-trigger="sf-refresh from:body, sf-live" hx-swap="outerHTML" {
            section.card.state.(format!("tone-{card_class}")) {
                div.statehead {
                    span.badge.(format!("tone-{class}")) id="health-badge" data-health=(v.health) { span.dot aria-hidden="true" {} (label) }
                    @if v.stale {
                        span.badge.tone-warn #stale-badge title="The freshness objective is breached: no success for longer than it allows" {
                            span.dot aria-hidden="true" {} "Stale"
                        }
                    }
                    @match live_run.as_deref() {
                        Some("RUNNING") => span.syncing { "syncing now" },
                        Some(_) => span.syncing { "queued" },
                        None => {},
                    }
                    @if s.is_admin() {
                        div.actions {
                            button.primary hx-post=(format!("/integrations/{id}/sync")) hx-target="#toasts" hx-swap="afterbegin" { "Sync now" }
                            @if v.sync_enabled {
                                form.inline method="post" action=(format!("/integrations/{id}/pause")) hx-post=(format!("/integrations/{id}/pause")) hx-target="#toasts" hx-swap="afterbegin" {
                                    input type="hidden" name="_csrf" value=(s.csrf);
                                    label { span.sr { "Reason for pausing (optional)" } input type="text" name="reason" maxlength="1000" placeholder="Reason (optional)"; }
                                    button type="submit" { "Pause" }
                                }
                            } @else {
                                form.inline method="post" action=(format!("/integrations/{id}/resume")) hx-post=(format!("/integrations/{id}/resume")) hx-target="#toasts" hx-swap="afterbegin" {
                                    input type="hidden" name="_csrf" value=(s.csrf);
                                    label { span.sr { "Reason (optional)" } input type="text" name="reason" maxlength="1000" placeholder="Reason (optional)"; }
                                    button type="submit" { @if v.health == "disabled" { "Re-enable" } @else { "Resume" } }
                                }
                            }
                        }
                    }
                }
                dl.facts {
                    div { dt { "Last sync" } dd { (rel(v.last_sync_at, "never")) } }
                    div { dt { "Last success" } dd { (rel(v.last_success_at, "never")) } }
                    div { dt { "Next sync" } dd #next-sync {
                        @if live_run.is_some() { span.syncing { "after the live run" } }
                        @else if !v.sync_enabled { span.muted { "none while " (if v.health == "disabled" { "disabled" } else { "paused" }) } }
                        @else if v.next_sync_at.is_some() { (rel(v.next_sync_at, "")) " " span.muted { "(" (abs(v.next_sync_at)) ")" } }
                        @else { span.muted { "manual only" } }
                    } }
                    div { dt { "Interval" } dd #interval { (interval_text(v.sync_interval)) } }
                    div { dt { "Failures in a row" } dd { (v.retry_count) " of " (v.max_retries) } }
                    div { dt { "Freshness objective" } dd #stale-after {
                        @match v.stale_after {
                            Some(secs) => {
                                (age_text(secs))
                                @if secs >= 60 { " " span.muted title="staleAfter" { "(" (secs) " s)" } }
                            }
                            None => span.muted { "none" },
                        }
                        @if !v.stale_after_custom {
                            " " span.muted { @if v.stale_after.is_some() { "(default: twice the interval plus the lease)" } @else { "(default: none for manual syncs only)" } }
                        }
                    } }
                    div { dt { "Staleness" } dd #staleness data-seconds=(v.staleness_seconds) data-stale=[v.stale.then_some("1")] {
                        (age_text(v.staleness_seconds)) " "
                        span.muted { @if v.last_success_at.is_some() { "since the last success" } @else { "since it was created (no success yet)" } }
                        @if v.stale { br; span.tone-warn { "stale since " (rel(v.stale_since, "")) } }
                    } }
                }
                @if let Some(err) = v.last_error.as_deref().filter(|_| v.health != "healthy") {
                    p.lasterr { "Last sync failed: " (super::first_line(err, 300)) }
                }
            }
            section.card {
                h2 { "Recent runs" }
                @if chart.is_empty() {
                    p.empty-inline { "No finished runs yet." }
                } @else {
                    div #chart .chart data-chart=(serde_json::to_string(&chart).unwrap_or_default()) role="img"
                        aria-label="Duration of recent runs over time, coloured by outcome" {}
                    p.legend { span.tone-ok { "● success" } " " span.tone-bad { "● failed" } " " span.tone-warn { "● rate limited" } }
                }
            }
            (history_table(id, &hist.logs, hist.total, hist.next_cursor.as_deref(), true))
            section.card {
                h2 { "Audit trail" }
                @if audit.events.is_empty() { p.empty-inline { "No control actions yet." } }
                @else {
                    ol.timeline {
                        @for e in &audit.events {
                            li {
                                (abs(Some(e.created_at)))
                                " " b { (e.action) }
                                " by " span.mono { (e.actor) }
                                @if let Some(r) = &e.reason { " — " q.reason { (r) } }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// Points the chart shows at most.
const CHART_POINTS: usize = 200;

/// Points of the chart, oldest first: `[unix seconds, duration ms, outcome]`. The hours
/// not rolled up yet give one point per finished run (the newest 200); older hours,
/// from their aggregate, one point each at the middle of the hour: the hour's p50
/// duration, coloured by its worst outcome (failed, then rate limited, then success),
/// until the chart has 200 points (docs/architecture.md §3.9).
async fn chart_data(state: &AppState, id: Uuid) -> Result<Vec<Value>, ApiError> {
    let watermark = runs_history::watermark(&state.db).await?;
    let (bound, values): (String, Vec<sea_orm::Value>) = match watermark {
        None => (String::new(), vec![id.into()]),
        // Runs that finished in the hours not rolled up yet, created at most an hour
        // before them (so the walk of the integration's index stays short).
        Some(w) => (
            " AND id >= $2 AND completed_at >= $3".into(),
            vec![
                id.into(),
                runs_history::id_floor(w - chrono::TimeDelta::hours(1)).into(),
                w.into(),
            ],
        ),
    };
    let rows = q::query(
        &state.db,
        format!(
            "SELECT completed_at, duration_ms, status FROM {HISTORY} WHERE integration_id = $1{bound} \
             AND status IN ('SUCCESS', 'FAILED', 'RATE_LIMITED') ORDER BY id DESC LIMIT {CHART_POINTS}"
        ),
        values,
    )
    .await?;
    let mut pts = Vec::with_capacity(CHART_POINTS);
    for r in &rows {
        let t: Option<chrono::DateTime<chrono::Utc>> = r.try_get("", "completed_at")?;
        let d: Option<i64> = r.try_get("", "duration_ms")?;
        let st: String = r.try_get("", "status")?;
        if let Some(t) = t {
            pts.push(json!([
                t.timestamp_millis() as f64 / 1000.0,
                d.unwrap_or(0),
                st
            ]));
        }
    }
    if let Some(w) = watermark
        && pts.len() < CHART_POINTS
    {
        let hours = q::query(
            &state.db,
            format!(
                "SELECT hour, failed, rate_limited, duration_p50_ms FROM {STATS_TABLE} \
                 WHERE integration_id = $1 AND hour < $2 AND succeeded + failed + rate_limited > 0 \
                 ORDER BY hour DESC LIMIT {}",
                CHART_POINTS - pts.len()
            ),
            [id.into(), w.into()],
        )
        .await?;
        for r in &hours {
            let hour: chrono::DateTime<chrono::Utc> = r.try_get("", "hour")?;
            let (failed, limited): (i64, i64) =
                (r.try_get("", "failed")?, r.try_get("", "rate_limited")?);
            let d: Option<i64> = r.try_get("", "duration_p50_ms")?;
            let st = if failed > 0 {
                "FAILED"
            } else if limited > 0 {
                "RATE_LIMITED"
            } else {
                "SUCCESS"
            };
            pts.push(json!([
                (hour.timestamp() + 1800) as f64,
                d.unwrap_or(0),
                st
            ]));
        }
    }
    pts.reverse();
    Ok(pts)
}

fn history_table(
    id: Uuid,
    logs: &[RunView],
    total: u64,
    next: Option<&str>,
    first: bool,
) -> Markup {
    html! {
        section.card #history data-first=[first.then_some("1")] {
            h2 { "Sync history " span.muted { "(" (total) @if total == 1 { " run)" } @else { " runs)" } } }
            @if logs.is_empty() {
                p.empty-inline { "No runs yet. A new enabled integration syncs at once; use Sync now to run it by hand." }
            } @else {
                div.scroll {
                    table.history {
                        thead { tr {
                            th { "Status" } th { "Trigger" } th { "Scheduled" } th { "Started" } th { "Finished" }
                            th.num { "Duration" } th.num title="inserted / updated / deleted / unchanged" { "Records ins/upd/del/same" }
                            th.num { "Attempt" } th.num { "Claims" }
                        } }
                        tbody {
                            @for r in logs {
                                tr.run data-status=(r.status) data-trigger=(r.trigger) {
                                    td { (status_icon(&r.status)) }
                                    td { (r.trigger) }
                                    td { (abs(Some(r.scheduled_for))) }
                                    td { (abs(r.started_at)) }
                                    td { (abs(r.completed_at)) }
                                    td.num { @match r.duration { Some(d) => (format_ms(d)), None => "—" } }
                                    td.num { (r.records_inserted) " / " (r.records_updated) " / " (r.records_deleted) " / " (r.records_unchanged) }
                                    td.num { (r.attempt) }
                                    td.num { (r.claims) }
                                }
                                @if let Some(msg) = &r.error_message {
                                    tr.errrow { td colspan="9" {
                                        details {
                                            summary { (r.error_class.as_deref().unwrap_or("error")) ": " (super::first_line(msg, 120)) }
                                            pre { (msg) }
                                        }
                                    } }
                                }
                            }
                        }
                    }
                }
                nav.pager {
                    @if !first { a href=(format!("/integrations/{id}")) { "← Newest runs" } }
                    @if let Some(c) = next {
                        a href=(format!("/integrations/{id}/history?cursor={c}")) hx-get=(format!("/integrations/{id}/history?cursor={c}"))
                            hx-target="#history" hx-swap="outerHTML" { "Older runs →" }
                    }
                }
            }
        }
    }
}

/// Milliseconds as a short duration: "850 ms", "2.5 s", "3 min 5 s".
pub fn format_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

async fn live(State(state): State<AppState>, s: Session, Path(id): Path<String>) -> super::Result {
    let id = id_of(&id, true)?;
    Ok(page(
        live_region(&state, &s, id)
            .await
            .map_err(ConsoleError::fragment)?,
    ))
}

#[derive(Deserialize)]
struct CursorQuery {
    cursor: Option<String>,
}

async fn history_page(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(c): Query<CursorQuery>,
) -> super::Result {
    let htmx = super::is_htmx(&headers);
    let id = id_of(&id, htmx)?;
    let wrap = |e: ApiError| ConsoleError { err: e, htmx };
    let hist = history::history(
        State(state.clone()),
        s.caller.clone(),
        PathId(id),
        ApiQuery(HistoryQuery {
            page: None,
            page_size: Some(HISTORY_PAGE),
            status: None,
            trigger: None,
            from: None,
            to: None,
            cursor: c.cursor.clone(),
        }),
    )
    .await
    .map_err(wrap)?
    .0;
    let table = history_table(
        id,
        &hist.logs,
        hist.total,
        hist.next_cursor.as_deref(),
        c.cursor.is_none(),
    );
    if htmx {
        return Ok(page(table));
    }
    let m = load(&state, &s.caller, id).await?;
    Ok(page(layout(
        &s,
        &m.name,
        "/",
        html! { p.crumbs { a href="/" { "Integrations" } " / " a href=(format!("/integrations/{id}")) { (m.name) } } (table) },
    )))
}

fn settings_form(state: &AppState, v: &IntegrationView) -> Markup {
    let custom = v
        .sync_interval
        .filter(|i| !INTERVALS.iter().any(|(s, _)| s == i));
    let (min, max) = (
        state.config.min_interval_secs,
        state.config.max_interval_secs,
    );
    html! {
        section.card {
            h2 { "Settings" }
            form.settings hx-post=(format!("/integrations/{}/settings", v.id)) hx-target="#toasts" hx-swap="afterbegin" {
                input type="hidden" name="version" value=(v.version);
                div.field {
                    label for="interval" { "Sync interval" }
                    select #interval name="interval" {
                        @for (secs, label) in INTERVALS {
                            option value=(secs) selected[v.sync_interval == Some(*secs)] disabled[*secs < min || *secs > max] { (label) }
                        }
                        option value="custom" selected[custom.is_some()] { "custom (seconds)" }
                        option value="manual" selected[v.sync_interval.is_none()] { "manual syncs only" }
                    }
                    label.sub for="interval_custom" { "Custom seconds (" (min) "–" (max) ")" }
                    input #interval_custom type="number" name="interval_custom" min=(min) max=(max) value=[custom];
                }
                div.field {
                    label.check { input type="checkbox" name="enabled" value="on" checked[v.sync_enabled]; " Syncing enabled" }
                }
                div.field {
                    label for="max_retries" { "Failures before disabling" }
                    input #max_retries type="number" name="max_retries" min="1" max="100" value=(v.max_retries);
                }
                button.primary type="submit" { "Save settings" }
            }
        }
    }
}

#[derive(Deserialize)]
struct SettingsForm {
    version: i32,
    interval: String,
    #[serde(default)]
    interval_custom: String,
    #[serde(default)]
    enabled: Option<String>,
    #[serde(default)]
    max_retries: String,
}

fn refreshed(mut r: Response) -> Response {
    r.headers_mut()
        .insert("hx-trigger", HeaderValue::from_static("sf-refresh"));
    r
}

async fn settings(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Form(f): Form<SettingsForm>,
) -> super::Result {
    let id = id_of(&id, true)?;
    let fail = ConsoleError::fragment;
    let interval: Option<Value> = match f.interval.as_str() {
        "manual" => None,
        "custom" => Some(match f.interval_custom.trim().parse::<i64>() {
            Ok(n) => json!(n),
            Err(_) => {
                return Err(fail(ApiError::field(
                    "syncInterval",
                    "give the custom interval as a whole number of seconds",
                )));
            }
        }),
        other => Some(
            other
                .parse::<i64>()
                .map(|n| json!(n))
                .unwrap_or(json!(other)),
        ),
    };
    let enabled = f.enabled.is_some();
    let mut view = actions::settings(
        &state,
        &s,
        id,
        SyncSettings {
            sync_interval: Some(interval),
            sync_enabled: Some(enabled),
            version: Some(f.version),
        },
    )
    .await
    .map_err(fail)?;
    let retries = f.max_retries.trim();
    if !retries.is_empty() {
        let n: i64 = retries.parse().map_err(|_| {
            fail(ApiError::field(
                "maxRetries",
                "must be a whole number from 1 to 100",
            ))
        })?;
        if i32::try_from(n).ok() != Some(view.max_retries) {
            view = actions::update(
                &state,
                &s,
                id,
                UpdateIntegration {
                    version: view.version,
                    name: None,
                    config: None,
                    max_retries: Some(n),
                    stale_after: None,
                    conflict_strategy: None,
                },
            )
            .await
            .map_err(fail)?;
        }
    }
    let next = match (view.sync_enabled, view.next_sync_at) {
        (false, _) => html! { "Saved. Syncing is off: no next sync." },
        (true, Some(t)) => {
            html! { "Saved. Next sync " (rel(Some(t), "")) " (" (abs(Some(t))) ")." }
        }
        (true, None) if view.sync_interval.is_none() => {
            html! { "Saved. Manual syncs only: no next sync." }
        }
        (true, None) => html! { "Saved. The next sync is scheduled when the live run ends." },
    };
    Ok(refreshed(page(
        html! { div.toast.ok role="status" data-next=[view.next_sync_at.map(|t| t.to_rfc3339())] { (next) } },
    )))
}

async fn sync_now(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
) -> super::Result {
    let id = id_of(&id, true)?;
    let r = actions::sync_now(&state, &s, id)
        .await
        .map_err(ConsoleError::fragment)?;
    let text = if !r.coalesced {
        "Sync queued: a manual run starts shortly.".to_owned()
    } else if r.followup_requested {
        "A run is in progress; one follow-up run will start when it ends.".to_owned()
    } else {
        "A run is already queued; it will fetch fresh data.".to_owned()
    };
    Ok(toast(true, &text, true))
}

#[derive(Deserialize, Default)]
struct ReasonForm {
    #[serde(default)]
    reason: String,
}

fn reason_of(f: ReasonForm) -> Option<String> {
    Some(f.reason.trim().to_owned()).filter(|r| !r.is_empty())
}

async fn pause(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Form(f): Form<ReasonForm>,
) -> super::Result {
    let id = id_of(&id, true)?;
    actions::pause(&state, &s, id, reason_of(f))
        .await
        .map_err(ConsoleError::fragment)?;
    Ok(toast(
        true,
        "Paused: no more scheduled syncs until you resume.",
        true,
    ))
}

async fn resume(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Form(f): Form<ReasonForm>,
) -> super::Result {
    let id = id_of(&id, true)?;
    actions::resume(&state, &s, id, reason_of(f))
        .await
        .map_err(ConsoleError::fragment)?;
    Ok(toast(
        true,
        "Syncing again: failures reset, a run starts now.",
        true,
    ))
}

async fn delete(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
) -> super::Result {
    let id = id_of(&id, true)?;
    actions::delete(&state, &s, id)
        .await
        .map_err(ConsoleError::fragment)?;
    let mut r = toast(true, "Deleted.", false);
    r.headers_mut()
        .insert("hx-redirect", HeaderValue::from_static("/"));
    Ok(r)
}
