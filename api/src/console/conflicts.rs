//! Page: conflicts (`/conflicts`): a local change and a cloud change of the same record
//! that the integration's strategy (`manual`) held for a person. The list (open by
//! default, resolved or all, per integration); one conflict (`/conflicts/{id}`) shows
//! both copies side by side, the top-level fields that differ highlighted, and for
//! admins Keep local, Keep cloud and Merge (an editor prefilled with the local copy plus
//! the fields only the cloud has). Resolving goes through `actions` onto the control
//! plane's own operation (`control::conflicts::resolve`, the API's
//! `POST /api/sync/conflicts/{id}/resolve`).

use std::collections::{BTreeSet, HashMap};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use syncfleet_worker::db as q;

use super::{ConsoleError, Session, abs, actions, is_htmx, layout, page, rel};
use crate::error::ApiError;
use crate::routes::common::{load, parse_id};
use crate::routes::conflicts::{
    ConflictQuery, ConflictView, list_conflicts, parse_resolution, read_conflict,
};
use crate::state::AppState;

/// Conflicts listed at most (newest first).
const SHOWN: u64 = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/conflicts", get(show))
        .route("/conflicts/list", get(list_fragment))
        .route("/conflicts/count", get(count_fragment))
        .route("/conflicts/{id}", get(detail))
        .route("/conflicts/{id}/resolve", post(resolve))
}

#[derive(Debug, Default, Deserialize)]
struct Filter {
    /// `open` (default), `resolved` or `all`.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    integration: Option<String>,
}

impl Filter {
    fn status(&self) -> &str {
        match self.status.as_deref() {
            Some("resolved") => "resolved",
            Some("all") => "all",
            _ => "open",
        }
    }

    fn integration(&self) -> Result<Option<Uuid>, ApiError> {
        match self.integration.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(raw) => parse_id(raw).map(Some),
        }
    }

    fn query(&self, status: &str, integration: Option<Uuid>) -> String {
        let mut q = format!("status={status}");
        if let Some(i) = integration {
            q.push_str(&format!("&integration={i}"));
        }
        q
    }
}

/// The open conflicts the caller sees (the navigation's count).
async fn open_count(state: &AppState, s: &Session) -> Result<i64, ApiError> {
    let (scope, values) = actions::scope(s);
    let rows = q::query(
        &state.db,
        format!(
            "SELECT COUNT(*) AS n FROM conflicts c JOIN integrations i ON i.id = c.integration_id \
             WHERE c.status = 'open'{scope}"
        ),
        values,
    )
    .await?;
    Ok(rows
        .first()
        .map(|r| r.try_get("", "n"))
        .transpose()?
        .unwrap_or(0))
}

/// The names of the caller's integrations `ids`.
async fn names(
    state: &AppState,
    s: &Session,
    ids: impl Iterator<Item = Uuid>,
) -> Result<HashMap<Uuid, String>, ApiError> {
    let ids: BTreeSet<Uuid> = ids.collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let (scope, mut values) = actions::scope(s);
    let first = values.len() + 1;
    values.extend(ids.iter().map(|id| sea_orm::Value::from(*id)));
    let rows = q::query(
        &state.db,
        format!(
            "SELECT i.id, i.name FROM integrations i WHERE i.id IN ({}){scope}",
            syncfleet_worker::work::placeholders(first, ids.len())
        ),
        values,
    )
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("", "id")?, r.try_get("", "name")?)))
        .collect()
}

fn resolution_text(r: Option<&str>) -> &'static str {
    match r {
        Some("local") => "kept local",
        Some("cloud") => "kept cloud",
        Some("merged") => "merged",
        _ => "open",
    }
}

/// The list: a live region that reloads after every action and when an integration of
/// the workspace changes.
async fn list(state: &AppState, s: &Session, f: &Filter) -> Result<Markup, ApiError> {
    let status = f.status();
    let integration = f.integration()?;
    let rows = list_conflicts(
        state,
        &s.caller,
        &ConflictQuery {
            integration_id: integration,
            status: (status != "all").then(|| status.to_owned()),
            limit: Some(SHOWN),
        },
    )
    .await?;
    let names = names(state, s, rows.iter().map(|c| c.integration_id)).await?;
    let only = match integration {
        Some(i) => Some(load(state, &s.caller, i).await?.name),
        None => None,
    };
    let url = format!("/conflicts/list?{}", f.query(status, integration));
    Ok(html! {
        div #conflicts hx-get=(url) hx-trigger="sf-refresh from:body, sf-live" hx-swap="outerHTML" data-status=(status) {
            nav.filters aria-label="Which conflicts" {
                @for (st, label) in [("open", "Open"), ("resolved", "Resolved"), ("all", "All")] {
                    a.count href=(format!("/conflicts?{}", f.query(st, integration))) aria-current=[(st == status).then_some("page")] data-filter=(st) { (label) }
                }
                @if let Some(name) = &only {
                    span.muted { "of " b { (name) } " · " a href=(format!("/conflicts?status={status}")) { "every integration" } }
                }
            }
            @if rows.is_empty() {
                div.empty {
                    h2 { @match status { "open" => "No open conflicts", "resolved" => "No resolved conflicts", _ => "No conflicts" } }
                    p { "A conflict is a record changed here and at the cloud before the two agreed again. Integrations whose conflict strategy is manual hold such a record's push and list it here until someone keeps the local copy, keeps the cloud's, or merges them." }
                }
            } @else {
                div.card.scroll {
                    table.conflicts {
                        thead { tr {
                            th { "Integration" } th { "Record" } th { "Found by" } th { "Detected" } th { "Fields that differ" }
                            th { "Status" }
                            th { span.sr { "Review" } }
                        } }
                        tbody {
                            @for c in &rows {
                                tr.conflict id=(format!("conflict-{}", c.id)) data-id=(c.id) data-status=(c.status) data-record=(c.external_id)
                                    data-resolution=[c.resolution.as_deref()] {
                                    td { a href=(format!("/integrations/{}", c.integration_id)) {
                                        @match names.get(&c.integration_id) { Some(n) => (n), None => (c.integration_id) }
                                    } }
                                    td.mono { (c.external_id) }
                                    td { (c.source) }
                                    td { (rel(Some(c.detected_at), "")) }
                                    td { @if c.differing_fields.is_empty() { span.muted { "—" } } @else {
                                        (super::first_line(&c.differing_fields.join(", "), 80))
                                    } }
                                    td {
                                        @if c.status == "open" { span.badge.tone-warn { span.dot aria-hidden="true" {} "open" } }
                                        @else {
                                            span.badge.tone-ok { span.dot aria-hidden="true" {} (resolution_text(c.resolution.as_deref())) }
                                            " " span.muted { "by " (c.resolved_by.as_deref().unwrap_or("?")) " " (rel(c.resolved_at, "")) }
                                        }
                                    }
                                    td { a href=(format!("/conflicts/{}", c.id)) { @if c.status == "open" && s.is_admin() { "Resolve →" } @else { "View →" } } }
                                }
                            }
                        }
                    }
                }
                @if rows.len() as u64 == SHOWN { p.muted { "The newest " (SHOWN) "." } }
            }
        }
    })
}

async fn show(State(state): State<AppState>, s: Session, Query(f): Query<Filter>) -> super::Result {
    let body = html! {
        div.titlebar { div {
            h1 { "Conflicts" }
            p.muted { "Records changed both here and at the cloud, held for a person by the manual conflict strategy." }
        } }
        (list(&state, &s, &f).await?)
    };
    Ok(page(layout(&s, "Conflicts", "/conflicts", body)))
}

async fn list_fragment(
    State(state): State<AppState>,
    s: Session,
    Query(f): Query<Filter>,
) -> super::Result {
    Ok(page(
        list(&state, &s, &f).await.map_err(ConsoleError::fragment)?,
    ))
}

/// The navigation's open count (reloaded with the page's live regions).
async fn count_fragment(State(state): State<AppState>, s: Session) -> super::Result {
    let n = open_count(&state, &s)
        .await
        .map_err(ConsoleError::fragment)?;
    Ok(page(super::nav_count("/conflicts", n, false)))
}

/// One top-level value as compact JSON (strings quoted, so `"1"` and `1` differ).
fn cell(v: Option<&Value>) -> Markup {
    match v {
        Some(v) => html! { code.json { (super::first_line(&v.to_string(), 2000)) } },
        None => html! { span.muted.absent { "absent" } },
    }
}

/// The merge editor's first draft: the local copy plus the fields only the cloud has
/// (the local copy wins where both have a field); the cloud's copy if the record was
/// deleted here.
pub fn merge_draft(c: &ConflictView) -> Value {
    let empty = Map::new();
    let local = c.local.as_ref().and_then(Value::as_object);
    let cloud = c
        .cloud
        .as_ref()
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut merged = local.cloned().unwrap_or_default();
    if local.is_none() || c.local_deleted {
        merged = cloud.clone();
    } else {
        for (k, v) in cloud {
            merged.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Value::Object(merged)
}

/// The merge editor's text as the merged record, or why it is not one.
fn merged_of(text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("The merged record is not valid JSON ({e}); nothing was written."))?;
    let kind = match &v {
        Value::Object(_) => return Ok(v),
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    };
    Err(format!(
        "The merged record must be a JSON object ({{ … }}), not {kind}; nothing was written."
    ))
}

/// What the merge editor holds after a refused attempt: the text and the problem.
struct Draft {
    text: String,
    error: String,
}

/// The part of the conflict page that changes when it is resolved.
fn section(s: &Session, c: &ConflictView, draft: Option<&Draft>) -> Markup {
    let empty = Map::new();
    let local = c
        .local
        .as_ref()
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let cloud = c
        .cloud
        .as_ref()
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let fields: BTreeSet<&String> = local.keys().chain(cloud.keys()).collect();
    let differing: BTreeSet<&str> = c.differing_fields.iter().map(String::as_str).collect();
    let open = c.status == "open";
    let merged_text = match draft {
        Some(d) => d.text.clone(),
        None => serde_json::to_string_pretty(&merge_draft(c)).unwrap_or_default(),
    };
    let rows = merged_text.lines().count().clamp(4, 30) + 1;
    let resolve_url = format!("/conflicts/{}/resolve", c.id);
    html! {
        section #conflict data-id=(c.id) data-status=(c.status) data-resolution=[c.resolution.as_deref()] {
            @if !open {
                div.callout.tone-ok role="status" #resolved {
                    p { b { "Resolved: " (resolution_text(c.resolution.as_deref())) "." }
                        " By " span.mono { (c.resolved_by.as_deref().unwrap_or("?")) } " " (rel(c.resolved_at, "")) " (" (abs(c.resolved_at)) ")." }
                    p.muted { @match c.resolution.as_deref() {
                        Some("local") => "The local copy stays and is pushed over the cloud's version.",
                        Some("cloud") => "The cloud's copy replaced the local one; the held push was dropped.",
                        Some("merged") => "The merged record was written here and is pushed over the cloud's version.",
                        _ => "",
                    } }
                }
            }
            section.card {
                h2 { "Both copies " span.muted { "(as they were when it was " @if open { "found; later local writes show here" } @else { "resolved" } ")" } }
                @if c.local_deleted || c.cloud_deleted || !c.cloud_known {
                    ul.notes {
                        @if c.local_deleted { li { "The record was " b { "deleted here" } "." } }
                        @if c.cloud_deleted { li { "The record was " b { "deleted at the cloud" } "." } }
                        @if !c.cloud_known { li { "The cloud refused the push without sending its copy: the next pull brings it. Keep cloud takes whatever that pull brings." } }
                    }
                }
                div.scroll {
                    table.compare {
                        thead { tr { th { "Field" } th { "Local copy" } th { "Cloud copy" } } }
                        tbody {
                            @if fields.is_empty() {
                                tr { td colspan="3" { span.muted { "Neither copy has fields." } } }
                            }
                            @for f in &fields {
                                @let diff = differing.contains(f.as_str());
                                tr.cmp.diff[diff] data-field=(f) data-differs=(if diff { "1" } else { "0" }) {
                                    td.mono { (f) @if diff { " " span.differs title="The two copies differ here" { "≠" } } }
                                    td.local { (cell(local.get(*f))) }
                                    td.cloud { (cell(cloud.get(*f))) }
                                }
                            }
                        }
                    }
                }
                p.legend { span.swatch.diff aria-hidden="true" {} " highlighted: the " (differing.len()) " top-level field" @if differing.len() != 1 { "s" } " that differ" }
                details {
                    summary { "Both copies as JSON" }
                    div.sidebyside {
                        div { h3 { "Local" } pre.local-json { @match &c.local { Some(v) => (serde_json::to_string_pretty(v).unwrap_or_default()), None => "(none)" } } }
                        div { h3 { "Cloud" } pre.cloud-json { @match &c.cloud { Some(v) => (serde_json::to_string_pretty(v).unwrap_or_default()), None => "(none)" } } }
                    }
                }
            }
            @if open && s.is_admin() {
                section.card #resolve {
                    h2 { "Resolve" }
                    div.actions.resolve-actions {
                        form method="post" action=(resolve_url) hx-post=(resolve_url) hx-target="#conflict" hx-swap="outerHTML"
                            hx-confirm="Keep the local copy? It is pushed over the cloud's version." {
                            input type="hidden" name="_csrf" value=(s.csrf);
                            input type="hidden" name="resolution" value="local";
                            button.primary #keep-local type="submit" { "Keep local" }
                        }
                        form method="post" action=(resolve_url) hx-post=(resolve_url) hx-target="#conflict" hx-swap="outerHTML"
                            hx-confirm="Keep the cloud's copy? The local change is dropped." {
                            input type="hidden" name="_csrf" value=(s.csrf);
                            input type="hidden" name="resolution" value="cloud";
                            button #keep-cloud type="submit" { "Keep cloud" }
                        }
                    }
                    form #merge-form method="post" action=(resolve_url) hx-post=(resolve_url) hx-target="#conflict" hx-swap="outerHTML" novalidate {
                        input type="hidden" name="_csrf" value=(s.csrf);
                        input type="hidden" name="resolution" value="merged";
                        div.field.wide {
                            label for="merged" { "Merged record (a JSON object)" }
                            textarea #merged name="data" rows=(rows) spellcheck="false" aria-describedby="help-merged"
                                aria-invalid=[draft.map(|_| "true")] { (merged_text) }
                            p.help #help-merged { "Prefilled with the local copy plus the fields only the cloud has. Edit it, then Merge: it is written here and pushed over the cloud's version." }
                            @if let Some(d) = draft { p.field-error #err-merged role="alert" { (d.error) } }
                        }
                        button #merge type="submit" { "Merge" }
                    }
                }
            }
        }
    }
}

/// The whole conflict page.
async fn render(
    state: &AppState,
    s: &Session,
    c: &ConflictView,
    draft: Option<&Draft>,
) -> Result<Markup, ApiError> {
    let m = load(state, &s.caller, c.integration_id).await?;
    let body = html! {
        div.titlebar { div {
            p.crumbs { a href="/conflicts" { "Conflicts" } " /" }
            h1 { "Record " span.mono { (c.external_id) } }
            p.muted {
                a href=(format!("/integrations/{}", m.id)) { (m.name) } " · found by a " (c.source)
                " · strategy " code { (c.strategy) } " · detected " (rel(Some(c.detected_at), ""))
                @if let Some(v) = &c.cloud_version { " · cloud version " code { (v) } }
            }
        } }
        (section(s, c, draft))
    };
    Ok(layout(
        s,
        &format!("Conflict {}", c.external_id),
        "/conflicts",
        body,
    ))
}

async fn detail(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
) -> super::Result {
    let id = parse_id(&id)?;
    let c = read_conflict(&state, &s.caller, id).await?;
    Ok(page(render(&state, &s, &c, None).await?))
}

/// Keep local, Keep cloud or Merge (`POST /api/sync/conflicts/{id}/resolve`). A merged
/// record that is not a JSON object is refused here with its reason next to the editor,
/// and nothing is written.
async fn resolve(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Form(pairs): axum::Form<Vec<(String, String)>>,
) -> super::Result {
    let htmx = is_htmx(&headers);
    let fail = |e: ApiError| -> super::Result {
        if htmx {
            Ok(super::error_toast(e))
        } else {
            Err(ConsoleError::page(e))
        }
    };
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(e) => return fail(e),
    };
    // Scoped: another workspace's conflict is not found.
    let c = match read_conflict(&state, &s.caller, id).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = s.caller.require_admin() {
        return fail(e);
    }
    let field = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let name = field("resolution");
    let text = field("data");
    let data = if name == "merged" {
        match merged_of(text) {
            Ok(v) => Some(v),
            Err(error) => {
                let draft = Draft {
                    text: text.to_owned(),
                    error,
                };
                return refused(&state, &s, &c, &draft, htmx).await;
            }
        }
    } else {
        None
    };
    let resolution = match parse_resolution(name, data) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if let Err(e) = actions::conflict_resolve(&state, &s, id, c.integration_id, resolution).await {
        return fail(e);
    }
    if !htmx {
        return Ok(Redirect::to(&format!("/conflicts/{id}")).into_response());
    }
    let c = read_conflict(&state, &s.caller, id)
        .await
        .map_err(ConsoleError::fragment)?;
    let mut r = page(section(&s, &c, None));
    r.headers_mut()
        .insert("hx-trigger", HeaderValue::from_static("sf-refresh"));
    Ok(r)
}

/// The conflict again with the refused merge draft and its problem (422).
async fn refused(
    state: &AppState,
    s: &Session,
    c: &ConflictView,
    draft: &Draft,
    htmx: bool,
) -> super::Result {
    let mut r = if htmx {
        page(section(s, c, Some(draft)))
    } else {
        page(render(state, s, c, Some(draft)).await?)
    };
    *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    Ok(r)
}
