//! Page: the outbox (`/outbox`): local changes on their way to the cloud. Counts of
//! pending, pushing, failed and held changes and the age of the oldest pending one;
//! the failed pushes with their error and Retry (admins); the counts per integration
//! (and per workspace for an operator key). Retry goes through `actions` onto the
//! control plane's own operation (`control::outbox::retry`, the API's
//! `POST /api/sync/outbox/{id}/retry`). A workspace key sees its workspace only.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use maud::{Markup, html};
use uuid::Uuid;

use syncfleet_worker::db::{self as q, Dialect};

use super::{ConsoleError, Session, actions, age_text, first_line, layout, page, rel, toast};
use crate::control::outbox::RetryStatus;
use crate::error::ApiError;
use crate::routes::common::parse_id;
use crate::routes::outbox::{OutboxQuery, list_entries};
use crate::state::AppState;

/// Failed pushes listed at most (newest first).
const FAILED_SHOWN: u64 = 100;
/// Integrations listed at most in the per-integration table.
const INTEGRATIONS_SHOWN: usize = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/outbox", get(show))
        .route("/outbox/list", get(list_fragment))
        .route("/outbox/{id}/retry", post(retry))
}

/// Outbox counts of one integration, or of everything the caller sees.
#[derive(Debug, Default, Clone)]
struct Counts {
    /// Waiting for their push (not in flight).
    pending: i64,
    /// A push in flight.
    pushing: i64,
    failed: i64,
    /// Held by an open conflict.
    held: i64,
    /// Age of the oldest change not pushed yet, seconds.
    oldest_secs: Option<i64>,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.pending += o.pending;
        self.pushing += o.pushing;
        self.failed += o.failed;
        self.held += o.held;
        self.oldest_secs = self.oldest_secs.max(o.oldest_secs);
    }
}

struct PerIntegration {
    id: Uuid,
    name: String,
    workspace: String,
    counts: Counts,
}

/// `AND <alias>.workspace_id = $1` for a workspace key.
fn scope(s: &Session, alias: &str) -> (String, Vec<sea_orm::Value>) {
    match s.caller.workspace_id {
        Some(ws) => (format!(" AND {alias}.workspace_id = $1"), vec![ws.into()]),
        None => (String::new(), Vec::new()),
    }
}

fn counts_of(r: &sea_orm::QueryResult) -> Result<Counts, ApiError> {
    let waiting: i64 = r.try_get::<Option<i64>>("", "waiting")?.unwrap_or(0);
    let pushing: i64 = r.try_get::<Option<i64>>("", "pushing")?.unwrap_or(0);
    Ok(Counts {
        pending: (waiting - pushing).max(0),
        pushing: pushing.min(waiting),
        failed: r.try_get::<Option<i64>>("", "failed")?.unwrap_or(0),
        held: r.try_get::<Option<i64>>("", "held")?.unwrap_or(0),
        oldest_secs: r
            .try_get::<Option<i64>>("", "oldest_ms")?
            .map(|ms| ms.max(0) / 1000),
    })
}

/// The per-integration counts (one statement) and the totals over everything the caller
/// sees (another, so the totals hold past the integrations listed).
async fn counts(state: &AppState, s: &Session) -> Result<(Counts, Vec<PerIntegration>), ApiError> {
    let d = Dialect::of(&state.db);
    let age = d.ms_since("o.created_at");
    let (scope_i, values) = scope(s, "i");
    let aggregate = format!(
        "SUM(CASE WHEN o.status IN ('pending', 'pushing') THEN 1 ELSE 0 END) AS waiting, \
         SUM(CASE WHEN o.status = 'failed' THEN 1 ELSE 0 END) AS failed, \
         SUM(CASE WHEN o.status = 'conflict' THEN 1 ELSE 0 END) AS held, \
         MAX(CASE WHEN o.status IN ('pending', 'pushing') THEN {age} END) AS oldest_ms"
    );
    let live = "outbox o JOIN integrations i ON i.id = o.integration_id \
                WHERE o.status IN ('pending', 'pushing', 'failed', 'conflict')";
    let total = q::query(
        &state.db,
        format!(
            "SELECT {aggregate}, \
               (SELECT COUNT(*) FROM live_pushes p JOIN integrations i ON i.id = p.integration_id \
                WHERE p.status = 'RUNNING'{scope_i}) AS pushing \
             FROM {live}{scope_i}"
        ),
        values.clone(),
    )
    .await?;
    let total = total
        .first()
        .map(counts_of)
        .transpose()?
        .unwrap_or_default();
    let rows = q::query(
        &state.db,
        format!(
            "SELECT x.*, i.name, w.name AS workspace, \
               (SELECT COUNT(*) FROM live_pushes p WHERE p.integration_id = i.id AND p.status = 'RUNNING') AS pushing \
             FROM (SELECT o.integration_id, {aggregate} FROM {live}{scope_i} GROUP BY o.integration_id) x \
             JOIN integrations i ON i.id = x.integration_id JOIN workspaces w ON w.id = i.workspace_id \
             ORDER BY i.name, i.id LIMIT {INTEGRATIONS_SHOWN}"
        ),
        values,
    )
    .await?;
    let mut per = Vec::with_capacity(rows.len());
    for r in &rows {
        per.push(PerIntegration {
            id: r.try_get("", "integration_id")?,
            name: r.try_get("", "name")?,
            workspace: r.try_get("", "workspace")?,
            counts: counts_of(r)?,
        });
    }
    Ok((total, per))
}

fn tile(id: &str, n: i64, label: &str, tone: Option<&str>) -> Markup {
    html! {
        div.tile.(tone.unwrap_or("")) id=(id) data-count=(n) { b { (n) } span { (label) } }
    }
}

fn age_cell(secs: Option<i64>) -> Markup {
    match secs {
        Some(s) => html! { (age_text(s)) },
        None => html! { span.muted { "—" } },
    }
}

/// The page's live region: it reloads after every action of the page, when an
/// integration of the workspace changes, and every 10 s while changes wait.
async fn region(state: &AppState, s: &Session) -> Result<Markup, ApiError> {
    let (total, per) = counts(state, s).await?;
    let failed = list_entries(
        state,
        &s.caller,
        &OutboxQuery {
            status: Some("failed".into()),
            limit: Some(FAILED_SHOWN),
            ..OutboxQuery::default()
        },
    )
    .await?;
    let names: HashMap<Uuid, &str> = per.iter().map(|p| (p.id, p.name.as_str())).collect();
    let operator = s.caller.workspace_id.is_none();
    let mut by_workspace: BTreeMap<&str, Counts> = BTreeMap::new();
    for p in &per {
        by_workspace
            .entry(p.workspace.as_str())
            .or_default()
            .add(&p.counts);
    }
    let waiting = total.pending + total.pushing > 0;
    let trigger = if waiting {
        "sf-refresh from:body, sf-live, every 10s"
    } else {
        "sf-refresh from:body, sf-live"
    };
    Ok(html! {
        div #outbox hx-get="/outbox/list" hx-trigger=(trigger) hx-swap="outerHTML" {
            div.tiles {
                (tile("outbox-pending", total.pending, "pending: waiting for their push", None))
                (tile("outbox-pushing", total.pushing, "pushing now", None))
                (tile("outbox-failed", total.failed, "failed: retry by hand", (total.failed > 0).then_some("tone-bad")))
                (tile("outbox-held", total.held, "held by an open conflict", (total.held > 0).then_some("tone-warn")))
                div.tile #outbox-oldest data-seconds=[total.oldest_secs] {
                    b { (age_cell(total.oldest_secs)) }
                    span { "oldest pending change" }
                }
            }
            @if total.held > 0 {
                p { a href="/conflicts" { "Review the open conflicts" } " to release the held changes." }
            }
            section.card #failed-pushes {
                h2 { "Failed pushes" }
                @if failed.is_empty() {
                    p.empty-inline { "No failed pushes. A change the cloud refuses (a 4xx other than 409, 412 and 429) shows up here with the cloud's answer." }
                } @else {
                    p.muted { "The cloud refused these changes. Fix the cause (the push target, its credentials, the data), then Retry: the change is pushed again, or closed if the record has moved on since." }
                    div.scroll {
                        table.failed-pushes {
                            thead { tr {
                                th { "Integration" } th { "Record" } th { "Operation" } th { "Error" } th.num { "Attempts" }
                                th { "Failed" } th { "Record now" }
                                @if s.is_admin() { th { span.sr { "Actions" } } }
                            } }
                            tbody {
                                @for e in &failed {
                                    tr.failed-push id=(format!("outbox-entry-{}", e.id)) data-id=(e.id) data-record=(e.external_id) {
                                        td { a href=(format!("/integrations/{}", e.integration_id)) {
                                            @match names.get(&e.integration_id) { Some(n) => (n), None => (e.integration_id) }
                                        } }
                                        td.mono { (e.external_id) }
                                        td { (e.operation) }
                                        td.errcell {
                                            @if let Some(c) = e.last_status_code { code.errclass { (c) } " " }
                                            @match &e.last_error {
                                                Some(err) => span title=(err) { (first_line(err, 200)) },
                                                None => span.muted { "no error recorded" },
                                            }
                                        }
                                        td.num { (e.attempts) }
                                        td { (rel(e.finished_at.or(Some(e.created_at)), "")) }
                                        td { @match &e.record_sync_state {
                                            Some(st) => (sync_badge(st)),
                                            None => span.muted { "gone" },
                                        } }
                                        @if s.is_admin() {
                                            td { button data-action="retry" hx-post=(format!("/outbox/{}/retry", e.id)) hx-target="#toasts" hx-swap="afterbegin" { "Retry" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section.card #outbox-integrations {
                h2 { "By integration" }
                @if per.is_empty() {
                    p.empty-inline { "Nothing waits in the outbox: every local change has reached the cloud." }
                } @else {
                    @if operator && by_workspace.len() > 1 {
                        table.outbox-workspaces {
                            thead { tr { th { "Workspace" } th.num { "Pending" } th.num { "Pushing" } th.num { "Failed" } th.num { "Held" } th { "Oldest pending" } } }
                            tbody {
                                @for (ws, c) in &by_workspace {
                                    tr { td { (ws) } td.num { (c.pending) } td.num { (c.pushing) } td.num { (c.failed) } td.num { (c.held) } td { (age_cell(c.oldest_secs)) } }
                                }
                            }
                        }
                    }
                    div.scroll {
                        table.outbox-integrations {
                            thead { tr {
                                th { "Integration" }
                                @if operator { th { "Workspace" } }
                                th.num { "Pending" } th.num { "Pushing" } th.num { "Failed" } th.num { "Held" } th { "Oldest pending" }
                            } }
                            tbody {
                                @for p in &per {
                                    tr.outbox-integration id=(format!("outbox-int-{}", p.id)) data-id=(p.id)
                                        data-pending=(p.counts.pending) data-pushing=(p.counts.pushing)
                                        data-failed=(p.counts.failed) data-held=(p.counts.held) {
                                        td { a href=(format!("/integrations/{}", p.id)) { (p.name) } }
                                        @if operator { td { (p.workspace) } }
                                        td.num { (p.counts.pending) }
                                        td.num { (p.counts.pushing) }
                                        td.num { (p.counts.failed) }
                                        td.num { (p.counts.held) }
                                        td { (age_cell(p.counts.oldest_secs)) }
                                    }
                                }
                            }
                        }
                    }
                    @if per.len() == INTEGRATIONS_SHOWN {
                        p.muted { "The first " (INTEGRATIONS_SHOWN) " integrations by name; the totals above count them all." }
                    }
                }
            }
        }
    })
}

/// A record's sync state as a small badge.
pub fn sync_badge(state: &str) -> Markup {
    let tone = match state {
        "synced" => "tone-ok",
        "pending" | "pushing" => "tone-new",
        "conflict" => "tone-warn",
        "failed" => "tone-bad",
        _ => "tone-off",
    };
    html! { span.badge.syncstate.(tone) data-sync-state=(state) { span.dot aria-hidden="true" {} (state) } }
}

async fn show(State(state): State<AppState>, s: Session) -> super::Result {
    let body = html! {
        div.titlebar { div {
            h1 { "Outbox" }
            p.muted { "Local changes (writes through the records API) on their way to the cloud, pushed in per-record order." }
        } }
        (region(&state, &s).await?)
    };
    Ok(page(layout(&s, "Outbox", "/outbox", body)))
}

async fn list_fragment(State(state): State<AppState>, s: Session) -> super::Result {
    Ok(page(
        region(&state, &s).await.map_err(ConsoleError::fragment)?,
    ))
}

/// Retry a failed push (`POST /api/sync/outbox/{id}/retry`).
async fn retry(State(state): State<AppState>, s: Session, Path(id): Path<String>) -> super::Result {
    let id = parse_id(&id).map_err(ConsoleError::fragment)?;
    let r = actions::outbox_retry(&state, &s, id)
        .await
        .map_err(ConsoleError::fragment)?;
    let text = match r.status {
        RetryStatus::Pending => format!(
            "Retry queued: the change to {} is pending again and is pushed shortly.",
            r.external_id
        ),
        RetryStatus::Superseded => format!(
            "{} has moved on since this change failed (a newer change, or a conflict settled it): the entry is closed and nothing stale was pushed.",
            r.external_id
        ),
    };
    Ok(toast(true, &text, true))
}
