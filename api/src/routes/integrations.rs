//! `/api/integrations`: create, list, read, trigger and sync history.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use entity::{ConnectorKind, integrations};
use sea_orm::{ActiveEnum, EntityTrait};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use syncfleet_worker::audit;
use syncfleet_worker::connectors;
use syncfleet_worker::db::{self as q, Dialect};
use syncfleet_worker::protocol::trigger::{self, Triggered};

use crate::auth::Caller;
use crate::error::{ApiError, FieldProblem};
use crate::extract::ApiJson;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/integrations", post(create).get(list))
        .route("/api/integrations/{id}", get(read))
        .route("/api/integrations/{id}/sync", post(sync_now))
        .route("/api/integrations/{id}/sync-history", get(history))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateIntegration {
    pub name: String,
    pub kind: String,
    #[serde(default = "empty_object")]
    pub config: Value,
    /// Seconds; `null` = manual syncs only.
    #[serde(default)]
    pub sync_interval: Option<Value>,
    #[serde(default = "yes")]
    pub sync_enabled: bool,
    #[serde(default)]
    pub max_retries: Option<i64>,
}

fn empty_object() -> Value {
    json!({})
}
fn yes() -> bool {
    true
}

/// The public shape of an integration.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationView {
    id: Uuid,
    name: String,
    kind: ConnectorKind,
    config: Value,
    sync_interval: Option<i64>,
    sync_enabled: bool,
    next_sync_at: Option<chrono::DateTime<chrono::Utc>>,
    retry_count: i32,
    max_retries: i32,
    health: String,
    last_sync_at: Option<chrono::DateTime<chrono::Utc>>,
    last_success_at: Option<chrono::DateTime<chrono::Utc>>,
    last_error: Option<String>,
    version: i32,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<integrations::Model> for IntegrationView {
    fn from(m: integrations::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            kind: m.kind,
            config: m.config,
            sync_interval: m.sync_interval_secs,
            sync_enabled: m.sync_enabled,
            next_sync_at: m.next_sync_at,
            retry_count: m.retry_count,
            max_retries: m.max_retries,
            health: m.health.to_value(),
            last_sync_at: m.last_sync_at,
            last_success_at: m.last_success_at,
            last_error: m.last_error,
            version: m.version,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::BadRequest(format!("`{raw}` is not a UUID")))
}

/// Loads an integration visible to the caller (another workspace's is "not found").
async fn load(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<integrations::Model, ApiError> {
    let m = integrations::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or(ApiError::NotFound("integration"))?;
    match caller.workspace_id {
        Some(ws) if ws != m.workspace_id => Err(ApiError::NotFound("integration")),
        _ => Ok(m),
    }
}

fn validate(
    state: &AppState,
    body: &CreateIntegration,
) -> Result<(ConnectorKind, Option<i64>), ApiError> {
    let mut errors = Vec::new();
    let mut push = |field: &str, message: String| {
        errors.push(FieldProblem {
            field: field.into(),
            message,
        })
    };
    let name_len = body.name.trim().chars().count();
    if name_len == 0 || body.name.chars().count() > 200 {
        push("name", "must be 1 to 200 characters".into());
    }
    let kind = serde_json::from_value::<ConnectorKind>(Value::String(body.kind.clone())).ok();
    match kind {
        None => push("kind", format!("unknown connector `{}`", body.kind)),
        Some(k) => {
            if let Err(errs) = connectors::validate(k, &body.config) {
                for e in errs {
                    push(&e.field, e.message);
                }
            }
        }
    }
    let (min, max) = (
        state.config.min_interval_secs,
        state.config.max_interval_secs,
    );
    let interval = match &body.sync_interval {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                push(
                    "syncInterval",
                    format!("must be a whole number of seconds from {min} to {max}, or null"),
                );
                None
            }
        },
    };
    if let Some(r) = body.max_retries
        && !(1..=100).contains(&r)
    {
        push("maxRetries", "must be from 1 to 100".into());
    }
    match (errors.is_empty(), kind) {
        (true, Some(k)) => Ok((k, interval)),
        _ => Err(ApiError::Validation(errors)),
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateIntegration>,
) -> Result<(StatusCode, Json<IntegrationView>), ApiError> {
    caller.require_admin()?;
    let (kind, interval) = validate(&state, &body)?;
    let ws = match caller.workspace_id {
        Some(ws) => ws,
        None => crate::db::default_workspace(&state.db).await?,
    };
    let id = Uuid::now_v7();
    let now = Dialect::of(&state.db).now();
    // A new enabled integration is due at once: its first sync runs right away.
    let next = if body.sync_enabled { now } else { "NULL" };
    let max_retries = body
        .max_retries
        .map_or(state.config.protocol.max_retries, |r| r as i32);
    q::exec(
        &state.db,
        format!(
            "INSERT INTO integrations (id, workspace_id, name, kind, config, sync_interval_secs, sync_enabled, \
             next_sync_at, next_trigger, followup_requested, retry_count, max_retries, health, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, {next}, 'schedule', false, 0, $8, 'healthy', 1, {now}, {now})"
        ),
        [
            id.into(),
            ws.into(),
            body.name.trim().to_owned().into(),
            kind.as_str().into(),
            body.config.clone().into(),
            interval.into(),
            body.sync_enabled.into(),
            max_retries.into(),
        ],
    )
    .await?;
    audit::record(
        &state.db,
        audit::Event {
            integration_id: Some(id),
            workspace_id: Some(ws),
            actor: caller.actor(),
            action: "integration.create".into(),
            reason: None,
            before: None,
            after: Some(json!({ "name": body.name, "kind": kind.as_str(), "syncInterval": interval, "syncEnabled": body.sync_enabled })),
        },
    )
    .await?;
    state.scheduler_wake.notify_one();
    let m = load(&state, &caller, id).await?;
    Ok((StatusCode::CREATED, Json(m.into())))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    page: Option<u64>,
    page_size: Option<u64>,
    status: Option<String>,
}

fn page_bounds(p: &Page) -> Result<(u64, u64), ApiError> {
    let page = p.page.unwrap_or(1).max(1);
    let size = p.page_size.unwrap_or(20);
    if !(1..=500).contains(&size) {
        return Err(ApiError::field("pageSize", "must be from 1 to 500"));
    }
    Ok((page, size))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (page, size) = page_bounds(&p)?;
    use sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter, QueryOrder};
    let mut query = integrations::Entity::find().order_by_desc(integrations::Column::CreatedAt);
    if let Some(ws) = caller.workspace_id {
        query = query.filter(integrations::Column::WorkspaceId.eq(ws));
    }
    let paginator = query.paginate(&state.db, size);
    let total = paginator.num_items().await?;
    let items: Vec<IntegrationView> = paginator
        .fetch_page(page - 1)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(
        json!({ "integrations": items, "total": total, "page": page, "pageSize": size }),
    ))
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<IntegrationView>, ApiError> {
    let m = load(&state, &caller, parse_id(&id)?).await?;
    Ok(Json(m.into()))
}

async fn sync_now(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_admin()?;
    let m = load(&state, &caller, parse_id(&id)?).await?;
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
    audit::record(
        &state.db,
        audit::Event {
            integration_id: Some(m.id),
            workspace_id: Some(m.workspace_id),
            actor: caller.actor(),
            action: "integration.trigger".into(),
            reason: None,
            before: None,
            after: Some(json!({ "runId": run_id, "coalesced": coalesced })),
        },
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "runId": run_id, "coalesced": coalesced, "followupRequested": followup })),
    ))
}

async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let m = load(&state, &caller, parse_id(&id)?).await?;
    let (page, size) = page_bounds(&p)?;
    let status = match p.status.as_deref() {
        None => None,
        Some(s) => {
            let up = s.to_ascii_uppercase();
            if ![
                "PENDING",
                "RUNNING",
                "SUCCESS",
                "FAILED",
                "RATE_LIMITED",
                "CANCELLED",
            ]
            .contains(&up.as_str())
            {
                return Err(ApiError::field("status", format!("unknown status `{s}`")));
            }
            Some(up)
        }
    };
    let filter = if status.is_some() {
        " AND status = $2"
    } else {
        ""
    };
    let mut values: Vec<sea_orm::Value> = vec![m.id.into()];
    if let Some(s) = status {
        values.push(s.into());
    }
    let n = values.len();
    let rows = q::query(
        &state.db,
        format!(
            "SELECT id, status, \"trigger\", scheduled_for, started_at, completed_at, duration_ms, records_count, \
             records_inserted, records_updated, records_unchanged, records_deleted, error_class, error_message, \
             attempt, claims, worker_id FROM sync_logs WHERE integration_id = $1{filter} \
             ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        ),
        values.iter().cloned().chain([(size as i64).into(), (((page - 1) * size) as i64).into()]),
    )
    .await?;
    let mut logs = Vec::with_capacity(rows.len());
    for r in rows {
        logs.push(json!({
            "id": r.try_get::<Uuid>("", "id")?,
            "status": r.try_get::<String>("", "status")?,
            "trigger": r.try_get::<String>("", "trigger")?,
            "scheduledFor": r.try_get::<chrono::DateTime<chrono::Utc>>("", "scheduled_for")?,
            "startedAt": r.try_get::<Option<chrono::DateTime<chrono::Utc>>>("", "started_at")?,
            "completedAt": r.try_get::<Option<chrono::DateTime<chrono::Utc>>>("", "completed_at")?,
            "duration": r.try_get::<Option<i64>>("", "duration_ms")?,
            "recordsCount": r.try_get::<i64>("", "records_count")?,
            "recordsInserted": r.try_get::<i64>("", "records_inserted")?,
            "recordsUpdated": r.try_get::<i64>("", "records_updated")?,
            "recordsUnchanged": r.try_get::<i64>("", "records_unchanged")?,
            "recordsDeleted": r.try_get::<i64>("", "records_deleted")?,
            "errorClass": r.try_get::<Option<String>>("", "error_class")?,
            "errorMessage": r.try_get::<Option<String>>("", "error_message")?,
            "attempt": r.try_get::<i32>("", "attempt")?,
            "claims": r.try_get::<i32>("", "claims")?,
            "workerId": r.try_get::<Option<String>>("", "worker_id")?,
        }));
    }
    let total_rows = q::query(
        &state.db,
        format!("SELECT COUNT(*) AS n FROM sync_logs WHERE integration_id = $1{filter}"),
        values,
    )
    .await?;
    let total: i64 = total_rows
        .first()
        .map(|r| r.try_get("", "n"))
        .transpose()?
        .unwrap_or(0);
    Ok(Json(
        json!({ "logs": logs, "total": total, "page": page, "pageSize": size }),
    ))
}
