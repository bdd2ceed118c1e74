//! `GET /api/openapi.json` (OpenAPI 3.1, generated from the handlers and types with
//! utoipa) and `GET /api/docs`, a self-contained page that renders it (no assets
//! fetched from anywhere at build or run time).

use axum::Json;
use axum::Router;
use axum::response::Html;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use super::{fleet, history, integrations, keys};
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

async fn spec() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
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
