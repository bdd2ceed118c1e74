//! `/api/integrations`: create, list, read, update (optimistic locking), delete,
//! sync settings, pause / resume and manual triggers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use entity::{ConnectorKind, integrations};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use syncfleet_worker::connectors;
use syncfleet_worker::db::{self as q, Dialect};
use syncfleet_worker::protocol::trigger::{self, Triggered};

use super::common::{self, audit, double_option, load, page_bounds, parse_id};
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, FieldProblem};
use crate::extract::{ApiJson, ApiQuery, OptionalJson};
use crate::state::AppState;
use crate::views::{IntegrationList, IntegrationView, RUN_COLUMNS, RunView, TriggerResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/integrations", post(create).get(list))
        .route(
            "/api/integrations/{id}",
            get(read).patch(update).delete(remove),
        )
        .route("/api/integrations/{id}/sync-settings", patch(sync_settings))
        .route("/api/integrations/{id}/sync", post(sync_now))
        .route("/api/integrations/{id}/pause", post(pause))
        .route("/api/integrations/{id}/resume", post(resume))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateIntegration {
    /// 1 to 200 characters, one line, not blank.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// `synthetic`, `http_json`, `csv`, `google_sheets`, `firestore` or `sql`.
    pub kind: String,
    /// Connector configuration (see the connector's schema).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: Value,
    /// Seconds between syncs; `null` or absent = manual syncs only.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub sync_interval: Option<Value>,
    #[serde(default = "yes")]
    pub sync_enabled: bool,
    /// Consecutive failures before the integration is disabled (1–100).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub max_retries: Option<i64>,
}

fn empty_object() -> Value {
    json!({})
}
fn yes() -> bool {
    true
}

/// Collects every problem of a name/kind/config/interval/maxRetries combination.
fn validate_fields(
    state: &AppState,
    name: Option<&str>,
    kind: ConnectorKind,
    config: Option<&Value>,
    interval: Option<Option<&Value>>,
    max_retries: Option<i64>,
    errors: &mut Vec<FieldProblem>,
) -> Option<i64> {
    let mut push = |field: &str, message: String| {
        errors.push(FieldProblem {
            field: field.into(),
            message,
        })
    };
    if let Some(why) = name.and_then(|n| common::name_problem(n, 200)) {
        push("name", why);
    }
    if let Some(config) = config
        && let Err(errs) = connectors::validate(kind, config)
    {
        for e in errs {
            push(&e.field, e.message);
        }
    }
    if let Some(r) = max_retries
        && !(1..=100).contains(&r)
    {
        push("maxRetries", "must be from 1 to 100".into());
    }
    match interval.map(|v| common::interval(state, v)) {
        Some(Err(msg)) => {
            push("syncInterval", msg);
            None
        }
        Some(Ok(v)) => v,
        None => None,
    }
}

/// Replaces secret fields sent back as the mask with their stored (decrypted) values.
fn unmask(
    state: &AppState,
    kind: ConnectorKind,
    id: Uuid,
    mut config: Value,
    stored: &Value,
) -> Value {
    let (Some(b), Some(obj)) = (&state.config.secret_key, config.as_object_mut()) else {
        return config;
    };
    for field in connectors::secret_fields(kind) {
        if obj.get(*field).and_then(Value::as_str) == Some(crate::views::MASK)
            && let Some(old) = stored.get(*field)
        {
            let plain = if syncfleet_worker::secrets::SecretBox::is_encrypted(old) {
                b.open(id, field, old).ok()
            } else {
                Some(old.clone())
            };
            if let Some(p) = plain {
                obj.insert((*field).to_owned(), p);
            }
        }
    }
    config
}

/// Checks every URL of a config against the SSRF guard (422 when refused) and seals its
/// secret fields for storage. `stored` is the current config on an update: a secret
/// sent back masked keeps its stored value.
async fn protect_config(
    state: &AppState,
    kind: ConnectorKind,
    id: Uuid,
    mut config: Value,
    stored: Option<&Value>,
) -> Result<Value, ApiError> {
    // Sealing works field by field: anything but an object is refused, never stored.
    if !config.is_object() {
        return Err(ApiError::field("config", "must be a JSON object"));
    }
    for url in connectors::urls(kind, &config) {
        state
            .config
            .net
            .check_url_resolving(&url)
            .await
            .map_err(|e| ApiError::field("config.url", e.to_string()))?;
    }
    let has_secret = connectors::secret_fields(kind)
        .iter()
        .any(|f| config.get(*f).is_some_and(|v| !v.is_null()));
    match &state.config.secret_key {
        Some(b) => b.seal_config(kind, id, &mut config, stored, crate::views::MASK),
        None if has_secret => {
            return Err(ApiError::field(
                "config",
                "this server has no SYNCFLEET_SECRET_KEY to store secrets with",
            ));
        }
        None => {}
    }
    Ok(config)
}

fn parse_kind(raw: &str) -> Option<ConnectorKind> {
    serde_json::from_value::<ConnectorKind>(Value::String(raw.to_owned())).ok()
}

/// Create an integration. A new enabled integration syncs at once.
#[utoipa::path(post, path = "/api/integrations", request_body = CreateIntegration, tag = "integrations",
    responses((status = 201, body = IntegrationView), (status = 422, description = "validation failed")))]
pub async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(body): ApiJson<CreateIntegration>,
) -> Result<(StatusCode, Json<IntegrationView>), ApiError> {
    let mut errors = Vec::new();
    let kind = parse_kind(&body.kind);
    if kind.is_none() {
        errors.push(FieldProblem {
            field: "kind".into(),
            message: format!("unknown connector `{}`", body.kind),
        });
    }
    let interval = validate_fields(
        &state,
        Some(&body.name),
        kind.unwrap_or(ConnectorKind::Synthetic),
        kind.map(|_| &body.config),
        Some(body.sync_interval.as_ref()),
        body.max_retries,
        &mut errors,
    );
    let Some(kind) = kind.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let ws = match caller.workspace_id {
        Some(ws) => ws,
        None => crate::db::default_workspace(&state.db).await?,
    };
    let id = Uuid::now_v7();
    let config = protect_config(&state, kind, id, body.config.clone(), None).await?;
    let now = Dialect::of(&state.db).now();
    let next = if body.sync_enabled { now } else { "NULL" };
    let max_retries = body
        .max_retries
        .map_or(state.config.protocol.max_retries, |r| r as i32);
    q::exec(
        &state.db,
        format!(
            "INSERT INTO integrations (id, workspace_id, name, kind, config, sync_interval_secs, sync_enabled, \
             next_sync_at, next_trigger, followup_requested, retry_count, max_retries, health, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, {next}, 'schedule', false, 0, $8, $9, 1, {now}, {now})"
        ),
        [
            id.into(),
            ws.into(),
            body.name.trim().to_owned().into(),
            kind.as_str().into(),
            config.into(),
            interval.into(),
            body.sync_enabled.into(),
            max_retries.into(),
            (if body.sync_enabled { "healthy" } else { "paused" }).into(),
        ],
    )
    .await?;
    let m = load(&state, &caller, id).await?;
    let view = IntegrationView::from(m.clone());
    audit(
        &state,
        &caller,
        &m,
        "integration.create",
        None,
        None,
        Some(json!(view)),
    )
    .await?;
    state.scheduler_wake.notify_one();
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1-based page number, default 1.
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u64>,
    /// 1–500, default 20.
    #[param(minimum = 1, maximum = 500)]
    pub page_size: Option<u64>,
    pub kind: Option<String>,
    pub health: Option<String>,
    pub sync_enabled: Option<bool>,
    /// Case-insensitive substring of the name.
    pub q: Option<String>,
}

/// List integrations (newest first), filtered and paginated.
#[utoipa::path(get, path = "/api/integrations", params(ListQuery), tag = "integrations",
    responses((status = 200, body = IntegrationList)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<ListQuery>,
) -> Result<Json<IntegrationList>, ApiError> {
    let (page, size) = page_bounds(p.page, p.page_size)?;
    let mut query = integrations::Entity::find()
        .order_by_desc(integrations::Column::CreatedAt)
        .order_by_desc(integrations::Column::Id);
    if let Some(ws) = caller.workspace_id {
        query = query.filter(integrations::Column::WorkspaceId.eq(ws));
    }
    if let Some(k) = &p.kind {
        let kind = parse_kind(k)
            .ok_or_else(|| ApiError::field("kind", format!("unknown connector `{k}`")))?;
        query = query.filter(integrations::Column::Kind.eq(kind));
    }
    if let Some(h) = &p.health {
        let health = serde_json::from_value::<entity::HealthState>(Value::String(h.clone()))
            .map_err(|_| ApiError::field("health", format!("unknown health `{h}`")))?;
        query = query.filter(integrations::Column::Health.eq(health));
    }
    if let Some(e) = p.sync_enabled {
        query = query.filter(integrations::Column::SyncEnabled.eq(e));
    }
    if let Some(text) = p.q.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        let pattern = format!(
            "%{}%",
            text.to_lowercase().replace('%', "\\%").replace('_', "\\_")
        );
        query = query.filter(sea_orm::sea_query::Expr::cust_with_values(
            "LOWER(name) LIKE $1 ESCAPE '\\'",
            [pattern],
        ));
    }
    let paginator = query.paginate(&state.db, size);
    let total = paginator.num_items().await?;
    let items = paginator
        .fetch_page(page - 1)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(IntegrationList {
        integrations: items,
        total,
        page,
        page_size: size,
    }))
}

/// One integration.
#[utoipa::path(get, path = "/api/integrations/{id}", params(("id" = Uuid, Path)), tag = "integrations",
    responses((status = 200, body = IntegrationView), (status = 404, description = "not found")))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<IntegrationView>, ApiError> {
    Ok(Json(load(&state, &caller, parse_id(&id)?).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateIntegration {
    /// The `version` you read; a stale one gets 409.
    pub version: i32,
    /// 1 to 200 characters, one line, not blank.
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// 1–100.
    #[schema(minimum = 1, maximum = 100)]
    pub max_retries: Option<i64>,
}

/// Update name, config or maxRetries (optimistic locking on `version`).
#[utoipa::path(patch, path = "/api/integrations/{id}", params(("id" = Uuid, Path)), request_body = UpdateIntegration,
    tag = "integrations", responses((status = 200, body = IntegrationView), (status = 409, description = "stale version")))]
pub async fn update(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateIntegration>,
) -> Result<Json<IntegrationView>, ApiError> {
    let m = load(&state, &caller, parse_id(&id)?).await?;
    // A client echoing the config it read sends secrets masked: put the stored values
    // back before validating, so the connector sees the real shape.
    let body_config = body
        .config
        .map(|c| unmask(&state, m.kind, m.id, c, &m.config));
    let mut errors = Vec::new();
    validate_fields(
        &state,
        body.name.as_deref(),
        m.kind,
        body_config.as_ref(),
        None,
        body.max_retries,
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let before = IntegrationView::from(m.clone());
    let config = match body_config {
        Some(c) => Some(protect_config(&state, m.kind, m.id, c, Some(&m.config)).await?),
        None => None,
    };
    let now = Dialect::of(&state.db).now();
    let r = q::exec(
        &state.db,
        format!(
            "UPDATE integrations SET name = COALESCE($3, name), config = COALESCE($4, config), \
             max_retries = COALESCE($5, max_retries), version = version + 1, updated_at = {now} \
             WHERE id = $1 AND version = $2"
        ),
        [
            m.id.into(),
            body.version.into(),
            body.name.map(|n| n.trim().to_owned()).into(),
            config.into(),
            body.max_retries.map(|r| r as i32).into(),
        ],
    )
    .await?;
    if r.rows_affected() == 0 {
        return Err(ApiError::VersionConflict(m.version));
    }
    let after = load(&state, &caller, m.id).await?;
    let view = IntegrationView::from(after.clone());
    audit(
        &state,
        &caller,
        &after,
        "integration.update",
        None,
        Some(json!(before)),
        Some(json!(view)),
    )
    .await?;
    Ok(Json(view))
}

/// Delete an integration with its runs and records (the audit trail stays).
#[utoipa::path(delete, path = "/api/integrations/{id}", params(("id" = Uuid, Path)), tag = "integrations",
    responses((status = 204, description = "deleted"), (status = 404, description = "not found")))]
pub async fn remove(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let m = load(&state, &caller, parse_id(&id)?).await?;
    let before = IntegrationView::from(m.clone());
    q::exec(
        &state.db,
        "DELETE FROM integrations WHERE id = $1",
        [m.id.into()],
    )
    .await?;
    audit(
        &state,
        &caller,
        &m,
        "integration.delete",
        None,
        Some(json!(before)),
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncSettings {
    /// Seconds; `null` = manual syncs only; absent = unchanged.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub sync_interval: Option<Option<Value>>,
    pub sync_enabled: Option<bool>,
    /// Optional optimistic-locking version.
    pub version: Option<i32>,
}

/// What a settings change does to the schedule.
enum Change {
    /// Paused by the user: stop scheduling, cancel the pending run.
    Pause,
    /// Enabled again (from paused or disabled): reset failures, run now.
    Enable,
    /// Still enabled with a new interval: reschedule from the last sync.
    Reschedule,
    /// Nothing that touches the schedule.
    Keep,
}

/// A requested change of the schedule settings.
struct NewSettings {
    /// `None` = unchanged; `Some(None)` = manual syncs only.
    interval: Option<Option<i64>>,
    enabled: Option<bool>,
    /// Optimistic-locking version the client read, if it sent one.
    version: Option<i32>,
}

async fn apply_settings(
    state: &AppState,
    caller: &Caller,
    m: &integrations::Model,
    new: NewSettings,
    action: &str,
    reason: Option<String>,
) -> Result<IntegrationView, ApiError> {
    let d = Dialect::of(&state.db);
    let now = d.now();
    let NewSettings {
        interval,
        enabled,
        version,
    } = new;
    let new_interval = interval.unwrap_or(m.sync_interval_secs);
    let change = match enabled {
        Some(false) if m.sync_enabled => Change::Pause,
        Some(true) if !m.sync_enabled => Change::Enable,
        _ if m.sync_enabled && new_interval != m.sync_interval_secs => Change::Reschedule,
        _ => Change::Keep,
    };
    let (set, cancel) = match change {
        Change::Pause => (
            "sync_enabled = false, health = 'paused', next_sync_at = NULL".to_owned(),
            true,
        ),
        Change::Enable => (
            format!(
                "sync_enabled = true, health = 'healthy', retry_count = 0, next_trigger = 'schedule', next_sync_at = {now}"
            ),
            false,
        ),
        Change::Reschedule => (
            // From the last sync (or now), never in the past; no slot while a run is live.
            format!(
                "next_sync_at = CASE WHEN $3 IS NULL OR EXISTS (SELECT 1 FROM sync_logs s WHERE s.integration_id = integrations.id \
                 AND s.status IN ('PENDING', 'RUNNING')) THEN NULL ELSE {} END",
                d.greatest(
                    now,
                    &d.plus_ms(&format!("COALESCE(last_sync_at, {now})"), "($3 * 1000)")
                )
            ),
            false,
        ),
        Change::Keep => ("next_sync_at = next_sync_at".to_owned(), false),
    };
    let r = q::exec(
        &state.db,
        format!(
            "UPDATE integrations SET {set}, sync_interval_secs = $3, version = version + 1, updated_at = {now} \
             WHERE id = $1 AND version = $2"
        ),
        [m.id.into(), version.unwrap_or(m.version).into(), new_interval.into()],
    )
    .await?;
    if r.rows_affected() == 0 {
        return Err(ApiError::VersionConflict(m.version));
    }
    if cancel {
        q::exec(
            &state.db,
            format!(
                "UPDATE sync_logs SET status = 'CANCELLED', completed_at = {now}, error_message = 'cancelled: integration paused' \
                 WHERE integration_id = $1 AND status = 'PENDING'"
            ),
            [m.id.into()],
        )
        .await?;
    }
    let after = load(state, caller, m.id).await?;
    let view = IntegrationView::from(after.clone());
    let before = IntegrationView::from(m.clone());
    audit(
        state,
        caller,
        &after,
        action,
        reason,
        Some(json!(before)),
        Some(json!(view)),
    )
    .await?;
    if matches!(change, Change::Enable | Change::Reschedule) {
        state.scheduler_wake.notify_one();
    }
    Ok(view)
}

/// Change the interval or enable/disable syncing; returns the recomputed `nextSyncAt`.
/// Enabling a disabled integration resets `retryCount` and schedules a run now.
#[utoipa::path(patch, path = "/api/integrations/{id}/sync-settings", params(("id" = Uuid, Path)),
    request_body = SyncSettings, tag = "integrations",
    responses((status = 200, body = IntegrationView), (status = 409, description = "stale version")))]
pub async fn sync_settings(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SyncSettings>,
) -> Result<Json<IntegrationView>, ApiError> {
    let m = load(&state, &caller, parse_id(&id)?).await?;
    let interval = match &body.sync_interval {
        None => None,
        Some(v) => Some(
            common::interval(&state, v.as_ref())
                .map_err(|msg| ApiError::field("syncInterval", msg))?,
        ),
    };
    if interval.is_none() && body.sync_enabled.is_none() {
        return Err(ApiError::field(
            "body",
            "give syncInterval and/or syncEnabled",
        ));
    }
    let view = apply_settings(
        &state,
        &caller,
        &m,
        NewSettings {
            interval,
            enabled: body.sync_enabled,
            version: body.version,
        },
        "integration.settings",
        None,
    )
    .await?;
    Ok(Json(view))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reason {
    /// Why (kept in the audit trail), up to 1000 characters.
    #[schema(max_length = 1000)]
    pub reason: Option<String>,
}

fn reason(OptionalJson(body): OptionalJson<Reason>) -> Result<Option<String>, ApiError> {
    let r = body.reason;
    if r.as_ref().is_some_and(|r| r.chars().count() > 1000) {
        return Err(ApiError::field("reason", "must be at most 1000 characters"));
    }
    if r.as_deref().is_some_and(|r| !common::free_text_ok(r)) {
        return Err(ApiError::field(
            "reason",
            "must not contain control characters other than tabs and line breaks",
        ));
    }
    Ok(r)
}

/// Pause syncing (a user action, distinct from a system disable).
#[utoipa::path(post, path = "/api/integrations/{id}/pause", params(("id" = Uuid, Path)), request_body(content = Reason),
    tag = "integrations", responses((status = 200, body = IntegrationView)))]
pub async fn pause(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    body: OptionalJson<Reason>,
) -> Result<Json<IntegrationView>, ApiError> {
    set_enabled(&state, &caller, &id, body, false, "integration.pause").await
}

/// Resume a paused or disabled integration: failures reset, a run now.
#[utoipa::path(post, path = "/api/integrations/{id}/resume", params(("id" = Uuid, Path)), request_body(content = Reason),
    tag = "integrations", responses((status = 200, body = IntegrationView)))]
pub async fn resume(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    body: OptionalJson<Reason>,
) -> Result<Json<IntegrationView>, ApiError> {
    set_enabled(&state, &caller, &id, body, true, "integration.resume").await
}

/// Pause or resume, with the caller's optional reason in the audit trail.
async fn set_enabled(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: OptionalJson<Reason>,
    enabled: bool,
    action: &str,
) -> Result<Json<IntegrationView>, ApiError> {
    caller.require_admin()?;
    let reason = reason(body)?;
    let m = load(state, caller, parse_id(id)?).await?;
    let new = NewSettings {
        interval: None,
        enabled: Some(enabled),
        version: None,
    };
    Ok(Json(
        apply_settings(state, caller, &m, new, action, reason).await?,
    ))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncRequest {
    /// Run even if the integration is paused or disabled.
    #[serde(default)]
    pub force: bool,
}

/// Loads one run.
pub async fn run_view(state: &AppState, run_id: Uuid) -> Result<RunView, ApiError> {
    let rows = q::query(
        &state.db,
        format!("SELECT {RUN_COLUMNS} FROM sync_logs WHERE id = $1"),
        [run_id.into()],
    )
    .await?;
    let row = rows.first().ok_or(ApiError::NotFound("run"))?;
    Ok(RunView::from_row(row)?)
}

/// Triggers a manual run of `m` and pushes it.
pub async fn trigger_run(
    state: &AppState,
    caller: &Caller,
    m: &integrations::Model,
    force: bool,
    action: &str,
) -> Result<TriggerResult, ApiError> {
    if !m.sync_enabled && !force {
        return Err(ApiError::Conflict(format!(
            "the integration is {}; send {{\"force\": true}} to run it anyway",
            if m.health == entity::HealthState::Disabled {
                "disabled"
            } else {
                "paused"
            }
        )));
    }
    let result = trigger::trigger(&state.db, m.id, entity::Trigger::Manual).await?;
    let (run_id, coalesced, followup) = match result {
        Triggered::Created(run) => {
            if let Err(e) = state.queue.push(&[run]).await {
                tracing::warn!(error = %e, "push of a manual run failed; the re-enqueuer will retry");
            }
            (run, false, false)
        }
        Triggered::Coalesced { run_id, followup } => (run_id, true, followup),
        Triggered::NotFound => return Err(ApiError::NotFound("integration")),
    };
    audit(
        state,
        caller,
        m,
        action,
        None,
        None,
        Some(json!({ "runId": run_id, "coalesced": coalesced, "force": force })),
    )
    .await?;
    Ok(TriggerResult {
        run: run_view(state, run_id).await?,
        coalesced,
        followup_requested: followup,
    })
}

/// Sync now. Bypasses the interval, never the one-live-run rule: while a run is pending
/// or running, triggers coalesce into at most one follow-up run.
#[utoipa::path(post, path = "/api/integrations/{id}/sync", params(("id" = Uuid, Path)), request_body(content = SyncRequest),
    tag = "integrations", responses((status = 202, body = TriggerResult), (status = 409, description = "paused or disabled")))]
pub async fn sync_now(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<SyncRequest>,
) -> Result<(StatusCode, Json<TriggerResult>), ApiError> {
    let force = body.force;
    let m = load(&state, &caller, parse_id(&id)?).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(trigger_run(&state, &caller, &m, force, "integration.trigger").await?),
    ))
}
