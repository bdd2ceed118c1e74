//! `/api/integrations`: create, list, read, update (optimistic locking), delete,
//! sync settings, pause / resume and manual triggers.

use axum::extract::State;
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
use syncfleet_worker::db as q;

use super::common::{self, double_option, load, page_bounds};
use crate::auth::{Admin, Caller};
use crate::control::{self, settings::NewSettings};
use crate::error::{ApiError, FieldProblem};
use crate::extract::{ApiJson, ApiQuery, OptionalJson, PathId, Scoped};
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
    /// Freshness objective, seconds (the shortest interval allowed to 1 year): stale
    /// when no sync succeeded for this long. Absent or `null` = twice the interval plus
    /// the lease (none for manual-only integrations).
    #[serde(default)]
    #[schema(maximum = 31536000)]
    pub stale_after: Option<i64>,
    /// What settles a conflict between a local change not pushed yet and a cloud change
    /// of the same record: `cloud_wins`, `local_wins`, `newest_wins` or `manual`
    /// (default: held for a person).
    #[serde(default)]
    pub conflict_strategy: Option<String>,
}

fn strategy_problem(v: Option<&str>, errors: &mut Vec<FieldProblem>) {
    if let Some(v) = v
        && syncfleet_worker::conflicts::Strategy::parse(v).is_none()
    {
        errors.push(FieldProblem {
            field: "conflictStrategy".into(),
            message: "must be cloud_wins, local_wins, newest_wins or manual".into(),
        });
    }
}

/// The longest objective, seconds (a year); the shortest is the shortest interval.
const MAX_STALE_AFTER: i64 = 31_536_000;

fn stale_after_problem(state: &AppState, v: Option<i64>, errors: &mut Vec<FieldProblem>) {
    let min = state.config.min_interval_secs;
    if let Some(v) = v
        && !(min..=MAX_STALE_AFTER).contains(&v)
    {
        errors.push(FieldProblem {
            field: "staleAfter".into(),
            message: format!("must be from {min} to {MAX_STALE_AFTER} seconds"),
        });
    }
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
pub(crate) fn unmask(
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
pub(crate) async fn protect_config(
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

pub(crate) fn parse_kind(raw: &str) -> Option<ConnectorKind> {
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
    let view = create_integration(&state, &caller, body).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The body of [`create`] after the role check, shared with the web console.
pub(crate) async fn create_integration(
    state: &AppState,
    caller: &Caller,
    body: CreateIntegration,
) -> Result<IntegrationView, ApiError> {
    let (state, caller) = (state.clone(), caller.clone());
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
    stale_after_problem(&state, body.stale_after, &mut errors);
    strategy_problem(body.conflict_strategy.as_deref(), &mut errors);
    let Some(kind) = kind.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let ws = caller.home_workspace(&state.db).await?;
    let id = Uuid::now_v7();
    let config = protect_config(&state, kind, id, body.config.clone(), None).await?;
    let max_retries = body
        .max_retries
        .map_or(state.config.protocol.max_retries, |r| r as i32);
    let m = control::integration::create(
        &state,
        &caller,
        control::integration::NewIntegration {
            id,
            workspace_id: ws,
            name: body.name.trim().to_owned(),
            kind,
            config,
            interval,
            enabled: body.sync_enabled,
            max_retries,
            stale_after: body.stale_after,
            conflict_strategy: body.conflict_strategy.unwrap_or_else(|| "manual".into()),
        },
    )
    .await?;
    Ok(IntegrationView::from(m))
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
pub async fn read(Scoped { integration, .. }: Scoped) -> Json<IntegrationView> {
    Json(integration.into())
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
    /// Freshness objective, seconds (the shortest interval to 1 year); `null` = back to the default
    /// (twice the interval plus the lease); absent = unchanged.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub stale_after: Option<Option<i64>>,
    /// `cloud_wins`, `local_wins`, `newest_wins` or `manual`; absent = unchanged.
    #[serde(default)]
    pub conflict_strategy: Option<String>,
}

/// Update name, config, maxRetries or staleAfter (optimistic locking on `version`).
#[utoipa::path(patch, path = "/api/integrations/{id}", params(("id" = Uuid, Path)), request_body = UpdateIntegration,
    tag = "integrations", responses((status = 200, body = IntegrationView), (status = 409, description = "stale version")))]
pub async fn update(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
    ApiJson(body): ApiJson<UpdateIntegration>,
) -> Result<Json<IntegrationView>, ApiError> {
    Ok(Json(update_integration(&state, &caller, id, body).await?))
}

/// The body of [`update`] after the role check, shared with the web console.
pub(crate) async fn update_integration(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    body: UpdateIntegration,
) -> Result<IntegrationView, ApiError> {
    let (state, caller) = (state.clone(), caller.clone());
    let m = load(&state, &caller, id).await?;
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
    stale_after_problem(&state, body.stale_after.flatten(), &mut errors);
    strategy_problem(body.conflict_strategy.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let config = match body_config {
        Some(c) => Some(protect_config(&state, m.kind, m.id, c, Some(&m.config)).await?),
        None => None,
    };
    let changes = control::integration::Changes {
        version: body.version,
        name: body.name.map(|n| n.trim().to_owned()),
        config,
        max_retries: body.max_retries.map(|r| r as i32),
        stale_after: body.stale_after,
        conflict_strategy: body.conflict_strategy,
        reason: None,
    };
    let after = control::integration::update(&state, &caller, m.id, changes).await?;
    Ok(IntegrationView::from(after))
}

/// Delete an integration with its runs and records (the audit trail stays).
#[utoipa::path(delete, path = "/api/integrations/{id}", params(("id" = Uuid, Path)), tag = "integrations",
    responses((status = 204, description = "deleted"), (status = 404, description = "not found")))]
pub async fn remove(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    control::integration::delete(&state, &caller, id, None).await?;
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

/// Change the interval or enable/disable syncing; returns the recomputed `nextSyncAt`.
/// Enabling a disabled integration resets `retryCount` and schedules a run now.
#[utoipa::path(patch, path = "/api/integrations/{id}/sync-settings", params(("id" = Uuid, Path)),
    request_body = SyncSettings, tag = "integrations",
    responses((status = 200, body = IntegrationView), (status = 409, description = "stale version")))]
pub async fn sync_settings(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
    ApiJson(body): ApiJson<SyncSettings>,
) -> Result<Json<IntegrationView>, ApiError> {
    Ok(Json(change_sync_settings(&state, &caller, id, body).await?))
}

/// The body of [`sync_settings`] after the role check, shared with the web console.
pub(crate) async fn change_sync_settings(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    body: SyncSettings,
) -> Result<IntegrationView, ApiError> {
    let (state, caller) = (state.clone(), caller.clone());
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
    let new = NewSettings {
        interval,
        enabled: body.sync_enabled,
        version: body.version,
    };
    let after =
        control::settings::apply(&state, &caller, id, new, "integration.settings", None).await?;
    Ok(after.into())
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reason {
    /// Why (kept in the audit trail), up to 1000 characters.
    #[schema(max_length = 1000)]
    pub reason: Option<String>,
}

/// The caller's optional reason, validated (kept in the audit trail).
pub fn reason(r: Option<String>) -> Result<Option<String>, ApiError> {
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
    PathId(id): PathId,
    OptionalJson(body): OptionalJson<Reason>,
) -> Result<Json<IntegrationView>, ApiError> {
    let (new, why) = (NewSettings::enabled(false), reason(body.reason)?);
    let after =
        control::settings::apply(&state, &caller, id, new, "integration.pause", why).await?;
    Ok(Json(after.into()))
}

/// Resume a paused or disabled integration: failures reset, a run now.
#[utoipa::path(post, path = "/api/integrations/{id}/resume", params(("id" = Uuid, Path)), request_body(content = Reason),
    tag = "integrations", responses((status = 200, body = IntegrationView)))]
pub async fn resume(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
    OptionalJson(body): OptionalJson<Reason>,
) -> Result<Json<IntegrationView>, ApiError> {
    let (new, why) = (NewSettings::enabled(true), reason(body.reason)?);
    let after =
        control::settings::apply(&state, &caller, id, new, "integration.resume", why).await?;
    Ok(Json(after.into()))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncRequest {
    /// Run even if the integration is paused or disabled.
    #[serde(default)]
    pub force: bool,
    /// Why (kept in the audit trail), up to 1000 characters.
    #[schema(max_length = 1000)]
    pub reason: Option<String>,
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

/// What a manual trigger answers: the run (new or the live one it coalesced into).
pub async fn trigger_result(
    state: &AppState,
    t: control::runs::Triggering,
) -> Result<TriggerResult, ApiError> {
    Ok(TriggerResult {
        run: run_view(state, t.run_id).await?,
        coalesced: t.coalesced,
        followup_requested: t.followup,
    })
}

/// Sync now. Bypasses the interval, never the one-live-run rule: while a run is pending
/// or running, triggers coalesce into at most one follow-up run.
#[utoipa::path(post, path = "/api/integrations/{id}/sync", params(("id" = Uuid, Path)), request_body(content = SyncRequest),
    tag = "integrations", responses((status = 202, body = TriggerResult), (status = 409, description = "paused or disabled")))]
pub async fn sync_now(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(id): PathId,
    OptionalJson(body): OptionalJson<SyncRequest>,
) -> Result<(StatusCode, Json<TriggerResult>), ApiError> {
    let why = reason(body.reason)?;
    let t = control::runs::sync_now(&state, &caller, id, body.force, why).await?;
    Ok((StatusCode::ACCEPTED, Json(trigger_result(&state, t).await?)))
}
