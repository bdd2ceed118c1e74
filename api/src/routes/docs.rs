//! `GET /api/openapi.json` (OpenAPI 3.1, generated from the handlers and types with
//! utoipa) and `GET /api/docs`, a self-contained page that renders it (no assets
//! fetched from anywhere at build or run time).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use super::{
    conflicts, fleet, history, inbound, integrations, keys, notifications, outbox, records,
    webhooks, workspaces,
};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "syncfleet", description = "Keeps a KPI dashboard's data fresh: integrations, their sync schedule, history and records."),
    paths(
        integrations::create, integrations::list, integrations::read, integrations::update, integrations::remove,
        integrations::sync_settings, integrations::pause, integrations::resume, integrations::sync_now,
        history::history, history::records, history::audit,
        fleet::status, fleet::stats, fleet::queue, fleet::retry,
        keys::create, keys::list, keys::revoke,
        workspaces::create, workspaces::list, workspaces::read, workspaces::update, workspaces::remove,
        notifications::create, notifications::list, notifications::read, notifications::update,
        notifications::remove, notifications::rotate, notifications::test, notifications::deliveries,
        notifications::delivery, notifications::retry, notifications::events,
        records::put_record, records::patch_record, records::delete_record, records::batch,
        conflicts::list, conflicts::read, conflicts::resolve,
        outbox::list, outbox::retry,
        webhooks::create, webhooks::read, webhooks::update, webhooks::remove, webhooks::rotate,
        inbound::receive,
    ),
    components(schemas(Problem, FieldProblemSchema)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// An error (`application/problem+json`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    r#type: String,
    title: String,
    status: u16,
    detail: String,
    /// Stable machine-readable code, e.g. `validation_failed`, `version_conflict`.
    code: String,
    errors: Option<Vec<FieldProblemSchema>>,
}

/// One offending field of a 422.
#[derive(utoipa::ToSchema)]
#[schema(as = FieldProblem)]
#[allow(dead_code)]
pub struct FieldProblemSchema {
    field: String,
    message: String,
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(spec))
        .route("/api/docs", get(page))
}

async fn spec(State(state): State<AppState>) -> Json<Value> {
    Json(served_spec(
        state.config.min_interval_secs,
        state.config.max_interval_secs,
    ))
}

/// A problem+json response object.
fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

/// Characters a name may not contain (control characters).
const NAME_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// Free text: no control characters but tabs and line breaks.
const TEXT_PATTERN: &str = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$";
/// No NUL.
const NO_NUL_PATTERN: &str = "^[^\\u0000]*$";

/// The document served at `/api/openapi.json`: the generated one, completed with what
/// the extractors and the configuration decide for every operation — each error it can
/// answer (as problem+json), enums and patterns of string parameters, and the sync
/// interval bounds in force.
pub fn served_spec(min_interval: i64, max_interval: i64) -> Value {
    let mut spec = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(paths) = spec["paths"].as_object_mut() {
        for (path, ops) in paths.iter_mut() {
            let Some(ops) = ops.as_object_mut() else {
                continue;
            };
            for (method, op) in ops.iter_mut() {
                complete_operation(path, method, op);
            }
        }
    }
    for schema in ["CreateIntegration", "SyncSettings"] {
        if let Some(prop) = property(&mut spec, schema, "syncInterval") {
            prop.insert("minimum".into(), json!(min_interval));
            prop.insert("maximum".into(), json!(max_interval));
            prop.insert(
                "description".into(),
                json!(format!(
                    "Seconds between syncs, {min_interval} to {max_interval}; `null` = manual syncs only."
                )),
            );
        }
    }
    for schema in ["CreateIntegration", "UpdateIntegration", "CreateKey"] {
        if let Some(prop) = property(&mut spec, schema, "name") {
            prop.insert("pattern".into(), json!(NAME_PATTERN));
        }
    }
    // PATCH …/sync-settings needs at least one of its two settings.
    if let Some(schema) = spec
        .pointer_mut("/components/schemas/SyncSettings")
        .and_then(Value::as_object_mut)
    {
        schema.insert(
            "anyOf".into(),
            json!([{ "required": ["syncInterval"] }, { "required": ["syncEnabled"] }]),
        );
    }
    if let Some(prop) = property(&mut spec, "Reason", "reason") {
        prop.insert("pattern".into(), json!(TEXT_PATTERN));
    }
    if let Some(prop) = property(&mut spec, "CreateIntegration", "kind") {
        prop.insert("enum".into(), json!(KINDS));
    }
    if let Some(prop) = property(&mut spec, "CreateKey", "role") {
        prop.insert("enum".into(), json!(["admin", "viewer"]));
    }
    spec
}

/// The schema of property `field` of component `schema`, if both exist (looked up
/// without inserting anything, unlike indexing a `Value` mutably).
fn property<'a>(
    spec: &'a mut Value,
    schema: &str,
    field: &str,
) -> Option<&'a mut serde_json::Map<String, Value>> {
    spec.pointer_mut(&format!("/components/schemas/{schema}/properties/{field}"))
        .and_then(Value::as_object_mut)
}

/// `window`: a number and a unit, at most 30 days in any unit.
const WINDOW_PATTERN: &str = "^(?:(?:[1-9]|[12][0-9]|30)d|(?:[1-9][0-9]?|[1-6][0-9]{2}|7[01][0-9]|720)h|\
(?:[1-9][0-9]{0,3}|[1-3][0-9]{4}|4[0-2][0-9]{3}|43[01][0-9]{2}|43200)m|\
(?:[1-9][0-9]{0,5}|1[0-9]{6}|2[0-4][0-9]{5}|25[0-8][0-9]{4}|259[01][0-9]{3}|2592000)s)$";

const KINDS: [&str; 6] = [
    "synthetic",
    "http_json",
    "csv",
    "google_sheets",
    "firestore",
    "sql",
];

/// Adds the answers every operation shares (see [`served_spec`]).
fn complete_operation(path: &str, method: &str, op: &mut Value) {
    let has_path_param = path.contains('{');
    let has_body = op["requestBody"].is_object();
    // These take an optional body (an empty one means the defaults).
    if ["/pause", "/resume", "/sync"]
        .iter()
        .any(|s| path.ends_with(s))
        && let Some(body) = op.get_mut("requestBody").and_then(Value::as_object_mut)
    {
        body.insert("required".into(), json!(false));
    }
    let mut has_query = false;
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params.iter_mut() {
            if p["in"] != "query" {
                continue;
            }
            has_query = true;
            let name = p["name"].as_str().unwrap_or("").to_owned();
            let Some(schema) = p.get_mut("schema").and_then(Value::as_object_mut) else {
                continue;
            };
            let is_plain_string =
                schema.get("type").is_some_and(|t| t == "string") && !schema.contains_key("format");
            let (key, value) = match name.as_str() {
                "kind" => ("enum", json!(KINDS)),
                "health" => (
                    "enum",
                    json!(["healthy", "degraded", "at_risk", "disabled", "paused"]),
                ),
                // The conflicts' and the outbox's own statuses; elsewhere a run's.
                "status" if path.starts_with("/api/sync/conflicts") => {
                    ("enum", json!(["open", "resolved"]))
                }
                "status" if path.starts_with("/api/sync/outbox") => {
                    ("enum", json!(outbox::STATUSES))
                }
                "status" => {
                    let lower = [
                        "pending",
                        "running",
                        "success",
                        "failed",
                        "rate_limited",
                        "cancelled",
                    ];
                    let all: Vec<String> = lower
                        .iter()
                        .map(|s| (*s).to_owned())
                        .chain(lower.iter().map(|s| s.to_uppercase()))
                        .collect();
                    ("enum", json!(all))
                }
                "trigger" => ("enum", json!(["schedule", "manual", "retry", "webhook"])),
                "window" => ("pattern", json!(WINDOW_PATTERN)),
                _ if is_plain_string => ("pattern", json!(NO_NUL_PATTERN)),
                _ => continue,
            };
            schema.insert(key.into(), value);
        }
    }
    // The webhook receiver takes no API key: its signature authenticates it, and its
    // 401 and 403 are its own (documented by the handler).
    let public = path.starts_with("/api/webhooks/");
    let admin_only = !public && (method != "get" || path.starts_with("/api/keys"));
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    let mut add = |code: &str, description: &str| {
        match responses.get_mut(code) {
            Some(existing) => {
                // A handler-specific description stays; the body is always a problem.
                if existing.get("content").is_none() {
                    existing["content"] = problem("")["content"].clone();
                }
                if let Some(d) = existing["description"].as_str()
                    && !d.contains(description)
                {
                    let merged = format!("{d}; {description}");
                    existing["description"] = json!(merged);
                }
            }
            None => {
                responses.insert(code.to_owned(), problem(description));
            }
        }
    };
    if !public {
        add("401", "no API key, or an unknown or revoked one");
    }
    if admin_only {
        add("403", "a viewer key may not do this");
    }
    if has_path_param {
        add("400", "the id in the path is not a UUID");
        add("404", "no such resource in the key's workspace");
    }
    if has_body {
        add("400", "the body is not one JSON document");
        add("413", "the body exceeds 1 MiB");
        if !public {
            add("415", "the body is not sent as application/json");
        }
        add(
            "422",
            "a field of the body is invalid (each one is listed in `errors`)",
        );
    }
    if has_query {
        add("422", "a query parameter is invalid (named in `errors`)");
    }
    add("429", "rate limited: retry after `Retry-After` seconds");
    add(
        "500",
        "internal error (logged; the answer carries no detail)",
    );
    // Every error a handler documents itself (404, 409) is a problem too.
    for (code, r) in responses.iter_mut() {
        if (code.starts_with('4') || code.starts_with('5')) && r.get("content").is_none() {
            r["content"] = problem("")["content"].clone();
        }
    }
    if let Some(r) = responses.get_mut("429") {
        r["headers"] =
            json!({ "Retry-After": { "schema": { "type": "integer" }, "description": "seconds" } });
    }
    if let Some(r) = responses.get_mut("401")
        && !public
    {
        r["headers"] = json!({ "WWW-Authenticate": { "schema": { "type": "string" } } });
    }
}

async fn page() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>syncfleet API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
main{max-width:1000px;margin:0 auto;padding:20px}
.op{background:#fff;border:1px solid #dde1e7;border-radius:8px;margin:10px 0}
.op summary{cursor:pointer;padding:10px 14px;display:flex;gap:12px;align-items:center}
.m{font:600 12px monospace;padding:3px 8px;border-radius:4px;color:#fff;min-width:52px;text-align:center}
.get{background:#2f7fd1}.post{background:#2e9b5f}.patch{background:#c88a12}.delete{background:#c43d3d}
.path{font-family:monospace}.sum{color:#5b6372}
.body{padding:0 14px 12px;border-top:1px solid #eef0f3}
pre{background:#f1f3f6;padding:10px;border-radius:6px;overflow:auto;font-size:12px}
h2{margin-top:28px}
</style></head><body>
<header><h1>syncfleet API</h1><div>Authenticate with <code>Authorization: Bearer &lt;key&gt;</code>. Raw spec: <a style="color:#9cf" href="/api/openapi.json">/api/openapi.json</a></div></header>
<main id="root">Loading…</main>
<script>
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
fetch("/api/openapi.json").then(r => r.json()).then(spec => {
  const byTag = {};
  for (const [path, ops] of Object.entries(spec.paths || {}))
    for (const [method, op] of Object.entries(ops)) (byTag[(op.tags||["other"])[0]] ||= []).push({path, method, op});
  let html = `<p>${esc(spec.info.description)}</p>`;
  for (const [tag, ops] of Object.entries(byTag)) {
    html += `<h2>${esc(tag)}</h2>`;
    for (const {path, method, op} of ops) {
      const params = (op.parameters||[]).map(p => `<li><code>${esc(p.name)}</code> (${esc(p.in)}${p.required?", required":""}) ${esc(p.description)}</li>`).join("");
      const body = op.requestBody ? `<h4>Request body</h4><pre>${esc(JSON.stringify(op.requestBody.content, null, 2))}</pre>` : "";
      const resp = Object.entries(op.responses||{}).map(([c, r]) => `<li><b>${esc(c)}</b> ${esc(r.description)}</li>`).join("");
      html += `<details class="op"><summary><span class="m ${method}">${method.toUpperCase()}</span><span class="path">${esc(path)}</span><span class="sum">${esc(op.summary||"")}</span></summary>
        <div class="body"><p>${esc(op.description||"")}</p>${params?`<h4>Parameters</h4><ul>${params}</ul>`:""}${body}<h4>Responses</h4><ul>${resp}</ul></div></details>`;
    }
  }
  html += `<h2>Schemas</h2><pre>${esc(JSON.stringify(spec.components.schemas, null, 2))}</pre>`;
  document.getElementById("root").innerHTML = html;
}).catch(e => { document.getElementById("root").textContent = "Could not load the spec: " + e; });
</script></body></html>"#;
