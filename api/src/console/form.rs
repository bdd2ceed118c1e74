//! Page: new integration (`/integrations/new`) and edit (`/integrations/{id}/edit`).
//! The form is generated from the connector's field list
//! (`syncfleet_worker::connectors::schema`); what is submitted goes through the API's
//! own create/update, so the messages shown next to the fields are the API's. Secret
//! fields are write-only. "Test connection" fetches once and stores nothing.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use entity::ConnectorKind;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use syncfleet_worker::connectors::schema::{self, ConfigField, FieldType};

use super::actions::{self, Tested};
use super::detail::INTERVALS;
use super::{ConsoleError, Session, layout, page};
use crate::error::ApiError;
use crate::routes::common::{load, parse_id};
use crate::routes::integrations::{CreateIntegration, UpdateIntegration, parse_kind};
use crate::state::AppState;
use crate::views::MASK;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/integrations/new", get(new_form).post(create))
        .route("/integrations/test", post(test))
        .route("/integrations/{id}/edit", get(edit_form).post(save))
}

/// What the form holds: raw texts by input name, and the errors by input name.
#[derive(Default)]
struct Draft {
    values: HashMap<String, String>,
    errors: HashMap<String, String>,
    general: Vec<String>,
}

impl Draft {
    fn get(&self, k: &str) -> &str {
        self.values.get(k).map_or("", String::as_str)
    }
    fn err(&self, k: &str) -> Option<&str> {
        self.errors.get(k).map(String::as_str)
    }
    /// Puts the API's field problems next to their inputs.
    fn absorb(&mut self, e: ApiError) -> Result<(), ApiError> {
        let ApiError::Validation(problems) = e else {
            return Err(e);
        };
        for p in problems {
            let input = match p.field.as_str() {
                "name" => Some("name".to_owned()),
                "syncInterval" => Some("interval".to_owned()),
                "maxRetries" => Some("max_retries".to_owned()),
                "kind" => Some("kind".to_owned()),
                "conflictStrategy" => Some("conflict_strategy".to_owned()),
                f => f
                    .strip_prefix("config.")
                    .map(|rest| format!("cfg.{}", rest.split(['.', '[']).next().unwrap_or(rest))),
            };
            match input {
                Some(i) if self.values.contains_key(&i) || i.starts_with("cfg.") => {
                    self.errors
                        .entry(i)
                        .and_modify(|m| {
                            m.push_str("; ");
                            m.push_str(&p.message);
                        })
                        .or_insert(p.message);
                }
                _ => self.general.push(format!("{}: {}", p.field, p.message)),
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct KindQuery {
    kind: Option<String>,
}

fn kind_or_default(raw: Option<&str>) -> ConnectorKind {
    raw.and_then(parse_kind).unwrap_or(ConnectorKind::Synthetic)
}

async fn new_form(
    State(state): State<AppState>,
    s: Session,
    Query(k): Query<KindQuery>,
) -> super::Result {
    s.caller.require_admin()?;
    let kind = kind_or_default(k.kind.as_deref());
    let mut d = Draft::default();
    d.values.insert("interval".into(), "3600".into());
    d.values.insert("enabled".into(), "on".into());
    Ok(page(render(&state, &s, kind, None, &d, None)))
}

/// Which secrets an edited integration has stored.
type Stored = HashMap<&'static str, bool>;

fn render(
    state: &AppState,
    s: &Session,
    kind: ConnectorKind,
    edit: Option<(Uuid, i32, &Stored)>,
    d: &Draft,
    tested: Option<Markup>,
) -> Markup {
    let title = if edit.is_some() {
        "Edit integration"
    } else {
        "New integration"
    };
    let action = match edit {
        Some((id, _, _)) => format!("/integrations/{id}/edit"),
        None => "/integrations/new".to_owned(),
    };
    let (min, max) = (
        state.config.min_interval_secs,
        state.config.max_interval_secs,
    );
    let body = html! {
        div.titlebar { div {
            p.crumbs { a href="/" { "Integrations" } " /" }
            h1 { (title) }
        } }
        @if !d.general.is_empty() || !d.errors.is_empty() {
            div.callout.tone-bad role="alert" {
                p { b { "Nothing was saved." } " Fix the fields marked below." }
                @for g in &d.general { p { (g) } }
            }
        }
        form.card.intform method="post" action=(action) novalidate {
            input type="hidden" name="_csrf" value=(s.csrf);
            @if let Some((id, version, _)) = edit {
                input type="hidden" name="version" value=(version);
                input type="hidden" name="edit_id" value=(id);
                input type="hidden" name="kind" value=(kind.as_str());
                p { "Connector: " b { (kind.as_str()) } " — " (schema::describe(kind)) }
            } @else {
                fieldset.kinds {
                    legend { "Connector" }
                    @for k in schema::KINDS {
                        label.kindopt {
                            input type="radio" name="kind" value=(k.as_str()) checked[*k == kind]
                                hx-get="/integrations/new" hx-target="body" hx-push-url="true" hx-include="this";
                            b { (k.as_str()) } span.muted { (schema::describe(*k)) }
                        }
                    }
                    noscript { button type="submit" formmethod="get" formaction="/integrations/new" { "Switch connector" } }
                }
            }
            (field_text("name", "Name", d, true, "A name people recognise, 1 to 200 characters.", "Orders API"))
            @if edit.is_none() {
                div.field {
                    label for="interval" { "Sync interval" }
                    select #interval name="interval" aria-invalid=[d.err("interval").map(|_| "true")] {
                        @for (secs, label) in INTERVALS {
                            option value=(secs) selected[d.get("interval") == secs.to_string()] disabled[*secs < min || *secs > max] { (label) }
                        }
                        option value="custom" selected[d.get("interval") == "custom"] { "custom (seconds)" }
                        option value="manual" selected[d.get("interval") == "manual"] { "manual syncs only" }
                    }
                    label.sub for="interval_custom" { "Custom seconds (" (min) "–" (max) ")" }
                    input #interval_custom type="number" name="interval_custom" value=(d.get("interval_custom")) min=(min) max=(max);
                    @if let Some(e) = d.err("interval") { p.field-error #err-interval { (e) } }
                }
                div.field {
                    label.check { input type="checkbox" name="enabled" value="on" checked[!d.get("enabled").is_empty()]; " Start syncing at once" }
                }
            }
            (field_text("max_retries", "Failures before disabling", d, false, "1 to 100; default 3.", "3"))
            (strategy_field(d))
            fieldset.config {
                legend { "Configuration" }
                @for f in schema::config_fields(kind) {
                    (config_field(f, d, edit.map(|(_, _, st)| st)))
                }
            }
            div.buttons {
                button.primary type="submit" { @if edit.is_some() { "Save" } @else { "Create integration" } }
                button type="button" hx-post="/integrations/test" hx-include="closest form" hx-target="#test-result" hx-swap="innerHTML" { "Test connection" }
                @if let Some((id, _, _)) = edit { a.button href=(format!("/integrations/{id}")) { "Cancel" } }
            }
            div #test-result aria-live="polite" { @if let Some(t) = tested { (t) } }
        }
    };
    layout(s, title, "/", body)
}

/// The conflict strategies the form offers (the API's `conflictStrategy`), the default
/// first.
const STRATEGIES: [(&str, &str); 4] = [
    (
        "manual",
        "manual: hold the record's push for a person (the Conflicts page)",
    ),
    (
        "cloud_wins",
        "cloud_wins: the cloud's copy replaces the local one; the local change is dropped",
    ),
    (
        "local_wins",
        "local_wins: the local copy is pushed over the cloud's",
    ),
    (
        "newest_wins",
        "newest_wins: the later change wins (a tie goes to the cloud)",
    ),
];

fn strategy_field(d: &Draft) -> Markup {
    let current = match d.get("conflict_strategy") {
        "" => "manual",
        v => v,
    };
    let err = d.err("conflict_strategy");
    html! {
        div.field {
            label for="conflict_strategy" { "Conflict strategy" }
            select #conflict_strategy name="conflict_strategy" aria-invalid=[err.map(|_| "true")] aria-describedby="help-conflict_strategy" {
                @for (v, label) in STRATEGIES { option value=(v) selected[current == v] { (label) } }
            }
            p.help #help-conflict_strategy {
                "What settles a record changed both here (a local write not pushed yet) and at the cloud. "
                "newest_wins compares the local change's time with the cloud's timestamp at "
                code { "config.push.updatedAtPointer" } "."
            }
            @if let Some(e) = err { p.field-error #err-conflict_strategy role="alert" { (e) } }
        }
    }
}

/// The strategy input as the API takes it (`None`: not sent, the API's default).
fn strategy_of(d: &Draft) -> Option<String> {
    Some(d.get("conflict_strategy").trim().to_owned()).filter(|v| !v.is_empty())
}

fn field_text(
    name: &str,
    label: &str,
    d: &Draft,
    required: bool,
    help: &str,
    example: &str,
) -> Markup {
    let err = d.err(name);
    html! {
        div.field {
            label for=(name) { (label) @if required { span.req aria-hidden="true" { " *" } } }
            input id=(name) type="text" name=(name) value=(d.get(name)) placeholder=(example) required[required]
                aria-invalid=[err.map(|_| "true")] aria-describedby=(format!("help-{name}"));
            p.help id=(format!("help-{name}")) { (help) }
            @if let Some(e) = err { p.field-error id=(format!("err-{name}")) role="alert" { (e) } }
        }
    }
}

fn config_field(f: &ConfigField, d: &Draft, stored: Option<&Stored>) -> Markup {
    let name = format!("cfg.{}", f.name);
    let err = d.err(&name);
    let value = d.get(&name);
    let set = stored.and_then(|s| s.get(f.name).copied()).unwrap_or(false);
    html! {
        div.field {
            @if f.ty == FieldType::Bool {
                label.check { input id=(name) type="checkbox" name=(name) value="true" checked[value == "true"]; " " (f.label) }
            } @else {
                label for=(name) {
                    (f.label)
                    @if f.required { span.req aria-hidden="true" { " *" } }
                    @if f.secret { " " span.secret { "secret · " @if set { "set" } @else { "not set" } } }
                }
                @match f.ty {
                    FieldType::Choice(options) => {
                        select id=(name) name=(name) aria-invalid=[err.map(|_| "true")] {
                            option value="" { "(default)" }
                            @for o in options { option value=(o) selected[value == *o] { (o) } }
                        }
                    }
                    FieldType::Json | FieldType::TextArea => {
                        textarea id=(name) name=(name) rows="3" placeholder=(if f.secret && set { "leave empty to keep the stored value" } else { f.example })
                            aria-invalid=[err.map(|_| "true")] { (value) }
                    }
                    _ => {
                        input id=(name) type=(if f.secret { "password" } else if f.ty == FieldType::Integer { "number" } else { "text" })
                            name=(name) value=(value) autocomplete="off"
                            placeholder=(if f.secret && set { "leave empty to keep the stored value" } else { f.example })
                            aria-invalid=[err.map(|_| "true")];
                    }
                }
            }
            p.help { (f.help) }
            @if let Some(e) = err { p.field-error id=(format!("err-{name}")) role="alert" { (e) } }
        }
    }
}

/// Turns the config inputs into the JSON config, or puts a type error next to the
/// input (a number that is not one, JSON that does not parse).
fn config_of(kind: ConnectorKind, d: &mut Draft, stored: Option<&Stored>) -> Value {
    let mut obj = Map::new();
    for f in schema::config_fields(kind) {
        let key = format!("cfg.{}", f.name);
        let raw = d.get(&key).trim().to_owned();
        if raw.is_empty() {
            if f.secret && stored.and_then(|s| s.get(f.name)).copied().unwrap_or(false) {
                // Write-only: an empty secret keeps the stored one (the API's mask).
                obj.insert(f.name.into(), Value::String(MASK.into()));
            } else if f.ty == FieldType::Bool && stored.is_some() {
                obj.insert(f.name.into(), Value::Bool(false));
            }
            continue;
        }
        let v = match f.ty {
            FieldType::Integer => match raw.parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => {
                    d.errors.insert(key, "must be a whole number".into());
                    continue;
                }
            },
            FieldType::Bool => Value::Bool(raw == "true"),
            FieldType::Json => match serde_json::from_str::<Value>(&raw) {
                Ok(v) => v,
                Err(e) => {
                    d.errors.insert(key, format!("must be valid JSON ({e})"));
                    continue;
                }
            },
            _ => Value::String(raw),
        };
        obj.insert(f.name.into(), v);
    }
    Value::Object(obj)
}

fn draft_of(pairs: Vec<(String, String)>) -> Draft {
    let mut d = Draft::default();
    for (k, v) in pairs {
        if k != "_csrf" {
            d.values.insert(k, v);
        }
    }
    d
}

async fn create(
    State(state): State<AppState>,
    s: Session,
    axum::Form(pairs): axum::Form<Vec<(String, String)>>,
) -> super::Result {
    let mut d = draft_of(pairs);
    let kind_raw = d.get("kind").to_owned();
    let kind = kind_or_default(Some(&kind_raw));
    let config = config_of(kind, &mut d, None);
    let interval = match d.get("interval") {
        "manual" => None,
        "custom" => match d.get("interval_custom").trim().parse::<i64>() {
            Ok(n) => Some(json!(n)),
            Err(_) => {
                d.errors.insert(
                    "interval".into(),
                    "give the custom interval as a whole number of seconds".into(),
                );
                None
            }
        },
        other => Some(other.parse::<i64>().map_or(json!(other), |n| json!(n))),
    };
    let max_retries = match d.get("max_retries").trim() {
        "" => None,
        t => match t.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                d.errors
                    .insert("max_retries".into(), "must be a whole number".into());
                None
            }
        },
    };
    let body = CreateIntegration {
        name: d.get("name").to_owned(),
        kind: kind_raw.clone(),
        config,
        sync_interval: interval,
        sync_enabled: !d.get("enabled").is_empty(),
        max_retries,
        stale_after: None,
        conflict_strategy: strategy_of(&d),
    };
    if d.errors.is_empty() {
        match actions::create(&state, &s, body).await {
            Ok(v) => return Ok(Redirect::to(&format!("/integrations/{}", v.id)).into_response()),
            Err(e) => d.absorb(e)?,
        }
    }
    let mut r = page(render(&state, &s, kind, None, &d, None));
    *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    Ok(r)
}

fn stored_secrets(kind: ConnectorKind, config: &Value) -> Stored {
    syncfleet_worker::connectors::secret_fields(kind)
        .iter()
        .map(|f| (*f, config.get(*f).is_some_and(|v| !v.is_null())))
        .collect()
}

async fn edit_form(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
) -> super::Result {
    s.caller.require_admin()?;
    let m = load(&state, &s.caller, parse_id(&id)?).await?;
    let stored = stored_secrets(m.kind, &m.config);
    let mut d = Draft::default();
    d.values.insert("name".into(), m.name.clone());
    d.values
        .insert("max_retries".into(), m.max_retries.to_string());
    d.values
        .insert("conflict_strategy".into(), m.conflict_strategy.clone());
    for f in schema::config_fields(m.kind) {
        if f.secret {
            continue;
        }
        if let Some(v) = m.config.get(f.name).filter(|v| !v.is_null()) {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                other => other.to_string(),
            };
            d.values.insert(format!("cfg.{}", f.name), text);
        }
    }
    Ok(page(render(
        &state,
        &s,
        m.kind,
        Some((m.id, m.version, &stored)),
        &d,
        None,
    )))
}

async fn save(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    axum::Form(pairs): axum::Form<Vec<(String, String)>>,
) -> super::Result {
    let m = load(&state, &s.caller, parse_id(&id)?).await?;
    let stored = stored_secrets(m.kind, &m.config);
    let mut d = draft_of(pairs);
    let config = config_of(m.kind, &mut d, Some(&stored));
    let version: i32 = d.get("version").parse().unwrap_or(m.version);
    let max_retries = match d.get("max_retries").trim() {
        "" => None,
        t => match t.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                d.errors
                    .insert("max_retries".into(), "must be a whole number".into());
                None
            }
        },
    };
    if d.errors.is_empty() {
        let body = UpdateIntegration {
            version,
            name: Some(d.get("name").to_owned()),
            config: Some(config),
            max_retries,
            stale_after: None,
            conflict_strategy: strategy_of(&d),
        };
        match actions::update(&state, &s, m.id, body).await {
            Ok(v) => return Ok(Redirect::to(&format!("/integrations/{}", v.id)).into_response()),
            Err(ApiError::VersionConflict(_)) => d
                .general
                .push("Someone changed this integration since you opened the form; reload it and try again.".into()),
            Err(e) => d.absorb(e)?,
        }
    }
    let mut r = page(render(
        &state,
        &s,
        m.kind,
        Some((m.id, version, &stored)),
        &d,
        None,
    ));
    *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    Ok(r)
}

/// Test connection: the config inputs of the form, fetched once, nothing stored.
async fn test(
    State(state): State<AppState>,
    s: Session,
    axum::Form(pairs): axum::Form<Vec<(String, String)>>,
) -> super::Result {
    let mut d = draft_of(pairs);
    let kind = kind_or_default(Some(d.get("kind")));
    let edit_id = d
        .values
        .get("edit_id")
        .and_then(|v| Uuid::parse_str(v).ok());
    let stored = match edit_id {
        Some(id) => {
            let m = load(&state, &s.caller, id)
                .await
                .map_err(ConsoleError::fragment)?;
            Some(stored_secrets(m.kind, &m.config))
        }
        None => None,
    };
    let config = config_of(kind, &mut d, stored.as_ref());
    if !d.errors.is_empty() {
        return Ok(page(html! {
            div.callout.tone-bad role="alert" {
                p { b { "Not tested:" } }
                @for (k, v) in &d.errors { p { (k.trim_start_matches("cfg.")) ": " (v) } }
            }
        }));
    }
    let result = actions::test_connection(&state, &s, kind, config, edit_id).await;
    Ok(page(match result {
        Ok(Tested::Fetched { count, sample }) => html! {
            div.callout.tone-ok role="status" {
                p { b { "Connected." } " Fetched " (count) " record" @if count != 1 { "s" } "; nothing was stored." }
                @if !sample.is_empty() {
                    table.records {
                        thead { tr { th { "id" } th { "data" } } }
                        tbody { @for (id, data) in &sample { tr { td.mono { (id) } td { code.json { (super::first_line(&data.to_string(), 200)) } } } } }
                    }
                }
            }
        },
        Ok(Tested::Failed { class, message }) => html! {
            div.callout.tone-bad role="alert" {
                p { b { "The source answered with an error" } " (class " code { (class) } ")." }
                p { (message) }
            }
        },
        Ok(Tested::Deferred { message }) => html! {
            div.callout.tone-warn role="status" {
                p { b { "Not tested: the provider's limits hold it back." } " The fleet paces this provider; nothing was fetched. Try again shortly." }
                p { (message) }
            }
        },
        Err(ApiError::Validation(problems)) => html! {
            div.callout.tone-bad role="alert" {
                p { b { "Not tested: the configuration is not valid." } }
                @for p in &problems { p { (p.field) ": " (p.message) } }
            }
        },
        Err(e) => return Err(ConsoleError::fragment(e)),
    }))
}
