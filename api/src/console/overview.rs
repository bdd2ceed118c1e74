//! Page: the integrations overview (`/`). A card per integration with its health (and
//! a stale badge when its freshness objective is breached), last and next sync, records
//! and last error; fleet counts on top; filter by health (or stale) and kind, search by
//! name, pages of 50. Cards and counts update live (live.rs).

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use sea_orm::QueryResult;
use serde::Deserialize;
use uuid::Uuid;

use syncfleet_worker::connectors::schema;
use syncfleet_worker::db as q;

use super::{Session, interval_text, is_htmx, layout, page, rel, tone};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::integrations::parse_kind;
use crate::state::AppState;

const PAGE_SIZE: u64 = 50;
const HEALTHS: &[(&str, &str)] = &[
    ("healthy", "Healthy"),
    ("degraded", "Degraded"),
    ("at_risk", "At risk"),
    ("disabled", "Disabled"),
    ("paused", "Paused"),
];
/// The health filter's extra choice: integrations whose freshness objective is breached
/// (whatever their health).
const STALE: &str = "stale";

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(show))
}

/// What a card shows.
pub struct CardRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub kind: String,
    pub health: String,
    pub sync_enabled: bool,
    pub interval: Option<i64>,
    pub next_sync_at: Option<DateTime<Utc>>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// `PENDING` or `RUNNING` while a run is live.
    pub live: Option<String>,
    /// Records the last successful run fetched.
    pub held: Option<i64>,
    /// Its freshness objective is breached since.
    pub stale_since: Option<DateTime<Utc>>,
}

impl CardRow {
    fn from_row(r: &QueryResult) -> Result<Self, sea_orm::DbErr> {
        Ok(Self {
            id: r.try_get("", "id")?,
            workspace_id: r.try_get("", "workspace_id")?,
            name: r.try_get("", "name")?,
            kind: r.try_get("", "kind")?,
            health: r.try_get("", "health")?,
            sync_enabled: r.try_get("", "sync_enabled")?,
            interval: r.try_get("", "sync_interval_secs")?,
            next_sync_at: r.try_get("", "next_sync_at")?,
            last_sync_at: r.try_get("", "last_sync_at")?,
            last_error: r.try_get("", "last_error")?,
            live: r.try_get("", "live_status")?,
            held: r.try_get("", "held")?,
            stale_since: r.try_get("", "stale_since")?,
        })
    }
}

/// The card query over the rows `inner` selects (already filtered, sorted and cut to a
/// page, so the per-card lookups run for the page only): each with its live run (the
/// one-live-run index) and the record count of its last success (the status index).
fn card_select(inner: &str, order: &str) -> String {
    format!(
        "SELECT i.id, i.workspace_id, i.name, i.kind, i.health, i.sync_enabled, i.sync_interval_secs, \
         i.next_sync_at, i.last_sync_at, i.last_error, i.stale_since, \
         (SELECT s.status FROM live_runs s WHERE s.integration_id = i.id LIMIT 1) AS live_status, \
         (SELECT s.records_count FROM run_history s WHERE s.integration_id = i.id AND s.status = 'SUCCESS' ORDER BY s.id DESC LIMIT 1) AS held \
         FROM ({inner}) i{order}"
    )
}

pub fn card(c: &CardRow) -> Markup {
    let (class, label) = tone(&c.health, c.last_sync_at.is_some());
    // A breached freshness objective turns a healthy (or new) card amber.
    let card_class = if c.stale_since.is_some() && matches!(class, "ok" | "new") {
        "warn"
    } else {
        class
    };
    html! {
        article.icard.(format!("tone-{card_class}")) id=(format!("card-{}", c.id)) data-health=(c.health)
            data-stale=[c.stale_since.is_some().then_some("1")] {
            header {
                a.name href=(format!("/integrations/{}", c.id)) { (c.name) }
                span.badge.(format!("tone-{class}")) { span.dot aria-hidden="true" {} (label) }
                @if let Some(t) = c.stale_since {
                    span.badge.tone-warn.stale title=(format!("Freshness objective breached since {}", t.format("%Y-%m-%d %H:%M UTC"))) {
                        span.dot aria-hidden="true" {} "Stale"
                    }
                }
            }
            p.kind { (c.kind) " · every " (interval_text(c.interval)) }
            dl {
                div { dt { "Synced" } dd { (rel(c.last_sync_at, "never")) } }
                div { dt { "Next sync" } dd {
                    @match (c.live.as_deref(), c.sync_enabled) {
                        (Some("RUNNING"), _) => span.syncing { "syncing now" },
                        (Some(_), _) => span.syncing { "queued" },
                        (None, false) => span.muted { @if c.health == "disabled" { "disabled" } @else { "paused" } },
                        (None, true) => @if c.next_sync_at.is_some() { (rel(c.next_sync_at, "")) } @else if c.interval.is_none() { span.muted { "manual only" } } @else { span.muted { "—" } },
                    }
                } }
                div { dt { "Records" } dd title="fetched by the last successful sync" {
                    @match c.held { Some(n) => (n), None => span.muted { "—" } }
                } }
            }
            @if let Some(err) = c.last_error.as_deref().filter(|_| c.health != "healthy" && c.health != "paused") {
                p.lasterr { "Last sync failed: " (super::first_line(err, 140)) }
            }
        }
    }
}

/// Cards of the given integrations (for the live feed): `(workspace, id, html)`.
pub async fn cards_by_id(
    state: &AppState,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, Uuid, String)>, ApiError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let marks = (1..=chunk.len())
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = q::query(
            &state.db,
            card_select(
                &format!("SELECT * FROM integrations WHERE id IN ({marks})"),
                "",
            ),
            chunk.iter().map(|id| sea_orm::Value::from(*id)),
        )
        .await?;
        for r in &rows {
            let c = CardRow::from_row(r)?;
            out.push((c.workspace_id, c.id, card(&c).into_string()));
        }
    }
    Ok(out)
}

/// The fleet counts on top of the overview, from the API's `/api/sync/status`.
pub async fn counts(state: &AppState, caller: &Caller) -> Result<Markup, ApiError> {
    let st = crate::routes::fleet::status(State(state.clone()), caller.clone())
        .await?
        .0;
    Ok(html! {
        div #counts .counts role="status" aria-label="Fleet counts" {
            a.count href="/fleet" { b { (st.runs_running) } " running" }
            a.count href="/fleet" { b { (st.runs_pending) } " pending" }
            a.count.(if st.failed_last_hour > 0 { "tone-bad" } else { "" }) href="/failures" { b { (st.failed_last_hour) } " failed in the last hour" }
            a.count.(if st.disabled_integrations > 0 { "tone-bad" } else { "" }) href="/?health=disabled" { b { (st.disabled_integrations) } " disabled" }
            a.count href="/?health=paused" { b { (st.paused_integrations) } " paused" }
            a.count.stale href="/?health=stale" title="Freshness objective breached" {
                @if st.stale_count > 0 { span.tone-warn { b { (st.stale_count) } " stale" } } @else { b { (st.stale_count) } " stale" }
            }
            span.count.muted { b { (st.integrations) } @if st.integrations == 1 { " integration" } @else { " integrations" } }
        }
    })
}

/// The counts of a workspace scope, for the live feed.
pub async fn counts_html(state: &AppState, scope: Option<Uuid>) -> Result<String, ApiError> {
    let caller = Caller {
        key_id: Uuid::nil(),
        key_name: "console".into(),
        workspace_id: scope,
        role: entity::Role::Viewer,
    };
    Ok(counts(state, &caller).await?.into_string())
}

#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    health: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    q: String,
    page: Option<u64>,
}

impl Filters {
    fn query(&self, page: u64) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("health", &self.health),
            ("kind", &self.kind),
            ("q", &self.q),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        if page > 1 {
            s.append_pair("page", &page.to_string());
        }
        let q = s.finish();
        if q.is_empty() {
            "/".into()
        } else {
            format!("/?{q}")
        }
    }
    fn any(&self) -> bool {
        !(self.health.is_empty() && self.kind.is_empty() && self.q.trim().is_empty())
    }
}

async fn list(state: &AppState, s: &Session, f: &Filters) -> Result<Markup, ApiError> {
    let mut filter = String::from(" WHERE 1 = 1");
    let mut values: Vec<sea_orm::Value> = Vec::new();
    let mut bind = |filter: &mut String, sql: &str, v: sea_orm::Value| {
        values.push(v);
        filter.push_str(&sql.replace('?', &format!("${}", values.len())));
    };
    if let Some(ws) = s.caller.workspace_id {
        bind(&mut filter, " AND i.workspace_id = ?", ws.into());
    }
    if f.health == STALE {
        filter.push_str(" AND i.stale_since IS NOT NULL");
    } else if !f.health.is_empty() {
        if !HEALTHS.iter().any(|(h, _)| *h == f.health) {
            return Err(ApiError::field(
                "health",
                format!("unknown health `{}`", f.health),
            ));
        }
        bind(&mut filter, " AND i.health = ?", f.health.clone().into());
    }
    if !f.kind.is_empty() {
        let kind = parse_kind(&f.kind)
            .ok_or_else(|| ApiError::field("kind", format!("unknown connector `{}`", f.kind)))?;
        bind(&mut filter, " AND i.kind = ?", kind.as_str().into());
    }
    let text = f.q.trim();
    if !text.is_empty() {
        // The API's search: a case-insensitive substring of the name.
        let pattern = format!(
            "%{}%",
            text.to_lowercase().replace('%', "\\%").replace('_', "\\_")
        );
        bind(
            &mut filter,
            " AND LOWER(i.name) LIKE ? ESCAPE '\\'",
            pattern.into(),
        );
    }
    let page_no = f.page.unwrap_or(1).clamp(1, 1_000_000);
    let total: i64 = q::query(
        &state.db,
        format!("SELECT COUNT(*) AS n FROM integrations i{filter}"),
        values.clone(),
    )
    .await?
    .first()
    .map(|r| r.try_get("", "n"))
    .transpose()?
    .unwrap_or(0);
    let rows = q::query(
        &state.db,
        card_select(
            &format!(
                "SELECT * FROM integrations i{filter} ORDER BY LOWER(i.name), i.id LIMIT {PAGE_SIZE} OFFSET {}",
                (page_no - 1) * PAGE_SIZE
            ),
            " ORDER BY LOWER(i.name), i.id",
        ),
        values,
    )
    .await?;
    let cards = rows
        .iter()
        .map(CardRow::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let pages = (total as u64).div_ceil(PAGE_SIZE).max(1);
    Ok(html! {
        div #list {
            @if cards.is_empty() {
                div.empty {
                    @if f.any() {
                        h2 { "Nothing matches these filters" }
                        p { "Try another name, or " a href="/" { "show every integration" } "." }
                    } @else if s.is_admin() {
                        h2 { "No integrations yet" }
                        p { "An integration is a data source that syncs on a schedule. Start with a synthetic one to see a sync happen, then connect a real API, CSV, sheet or database." }
                        p { a.button.primary href="/integrations/new" { "Create your first integration" } }
                    } @else {
                        h2 { "No integrations yet" }
                        p { "Your key is read-only. Ask an admin to create an integration; it will appear here as soon as it exists." }
                    }
                }
            } @else {
                p.summary.muted { (total) " integration" @if total != 1 { "s" } @if pages > 1 { " · page " (page_no) " of " (pages) } }
                div.grid { @for c in &cards { (card(c)) } }
                @if pages > 1 {
                    nav.pager aria-label="Pages" {
                        @if page_no > 1 {
                            a href=(f.query(page_no - 1)) hx-get=(f.query(page_no - 1)) hx-target="#list" hx-swap="outerHTML" hx-push-url="true" rel="prev" { "← Previous" }
                        }
                        span.muted { "Page " (page_no) " of " (pages) }
                        @if page_no < pages {
                            a href=(f.query(page_no + 1)) hx-get=(f.query(page_no + 1)) hx-target="#list" hx-swap="outerHTML" hx-push-url="true" rel="next" { "Next →" }
                        }
                    }
                }
            }
        }
    })
}

async fn show(
    State(state): State<AppState>,
    s: Session,
    headers: HeaderMap,
    Query(f): Query<Filters>,
) -> super::Result {
    if is_htmx(&headers) && headers.get("hx-target").is_some_and(|t| t == "list") {
        return Ok(page(
            list(&state, &s, &f)
                .await
                .map_err(super::ConsoleError::fragment)?,
        ));
    }
    let body = html! {
        div.titlebar {
            h1 { "Integrations" }
            @if s.is_admin() { a.button.primary href="/integrations/new" { "New integration" } }
        }
        (counts(&state, &s.caller).await?)
        form.filters method="get" action="/" hx-get="/" hx-target="#list" hx-swap="outerHTML" hx-push-url="true"
            hx-trigger="input changed delay:300ms from:#q, change, submit" role="search" {
            label { span.sr { "Search by name" } input #q type="search" name="q" value=(f.q) placeholder="Search by name…" autocomplete="off"; }
            label { span.sr { "Health" }
                select name="health" {
                    option value="" { "Any health" }
                    @for (h, label) in HEALTHS { option value=(h) selected[f.health == *h] { (label) } }
                    option value=(STALE) selected[f.health == STALE] { "Stale (objective breached)" }
                }
            }
            label { span.sr { "Kind" }
                select name="kind" {
                    option value="" { "Any kind" }
                    @for k in schema::KINDS { option value=(k.as_str()) selected[f.kind == k.as_str()] { (k.as_str()) } }
                }
            }
            noscript { button type="submit" { "Filter" } }
        }
        (list(&state, &s, &f).await?)
    };
    Ok(page(layout(&s, "Integrations", "/", body)))
}
