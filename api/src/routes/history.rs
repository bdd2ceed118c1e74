//! The read paths of one integration: sync history, synced records, audit trail.
//! All keyset-paginated so deep pages cost the same as the first.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use sea_orm::Value;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use syncfleet_worker::db as q;

use super::common::page_bounds;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiQuery, PathId, Scoped};
use crate::state::AppState;
use crate::views::{
    AuditPage, AuditView, RUN_COLUMNS, RecordPage, RecordView, RunView, SyncHistory,
};

/// `total` counts at most this many rows.
const TOTAL_CAP: i64 = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/integrations/{id}/sync-history", get(history))
        .route("/api/integrations/{id}/records", get(records))
        .route("/api/integrations/{id}/audit", get(audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// 1-based page number, default 1.
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u64>,
    /// 1–500, default 20.
    #[param(minimum = 1, maximum = 500)]
    pub page_size: Option<u64>,
    /// `pending`, `running`, `success`, `failed`, `rate_limited`, `cancelled` (any case).
    pub status: Option<String>,
    /// `schedule`, `manual`, `retry`, `webhook`.
    pub trigger: Option<String>,
    /// Runs created at or after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Runs created before this instant (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// `nextCursor` of the previous page (then `page` is ignored).
    #[param(format = Uuid)]
    pub cursor: Option<String>,
}

const STATUSES: &[&str] = &[
    "PENDING",
    "RUNNING",
    "SUCCESS",
    "FAILED",
    "RATE_LIMITED",
    "CANCELLED",
];
const TRIGGERS: &[&str] = &["schedule", "manual", "retry", "webhook"];

/// Sync history, newest first.
#[utoipa::path(get, path = "/api/integrations/{id}/sync-history", params(("id" = Uuid, Path), HistoryQuery),
    tag = "history", responses((status = 200, body = SyncHistory)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    ApiQuery(p): ApiQuery<HistoryQuery>,
) -> Result<Json<SyncHistory>, ApiError> {
    let (page, size) = page_bounds(p.page, p.page_size)?;
    let mut filter = String::from("integration_id = $1");
    let mut values: Vec<Value> = vec![id.into()];
    fn bind(filter: &mut String, values: &mut Vec<Value>, sql: &str, v: Value) {
        values.push(v);
        filter.push_str(&sql.replace('?', &format!("${}", values.len())));
    }
    if let Some(s) = &p.status {
        let up = s.to_ascii_uppercase();
        if !STATUSES.contains(&up.as_str()) {
            return Err(ApiError::field("status", format!("unknown status `{s}`")));
        }
        bind(&mut filter, &mut values, " AND status = ?", up.into());
    }
    if let Some(t) = &p.trigger {
        let low = t.to_ascii_lowercase();
        if !TRIGGERS.contains(&low.as_str()) {
            return Err(ApiError::field("trigger", format!("unknown trigger `{t}`")));
        }
        bind(&mut filter, &mut values, " AND \"trigger\" = ?", low.into());
    }
    if let Some(from) = p.from {
        bind(
            &mut filter,
            &mut values,
            " AND created_at >= ?",
            from.into(),
        );
    }
    if let Some(to) = p.to {
        bind(&mut filter, &mut values, " AND created_at < ?", to.into());
    }
    let unfiltered = values.len() == 1;
    let count_filter = filter.clone();
    let count_values = values.clone();
    let offset = match &p.cursor {
        Some(c) => {
            let cursor = Uuid::parse_str(c)
                .map_err(|_| ApiError::field("cursor", "not a cursor from nextCursor"))?;
            bind(&mut filter, &mut values, " AND id < ?", cursor.into());
            0
        }
        None => (page - 1) * size,
    };
    // One round trip for the integration (scope, total) and the page. Ids are UUIDv7:
    // their order is creation order, so `id DESC` is newest first and the
    // (integration_id[, status], id DESC) indexes serve every page as a range scan.
    let rows = q::query(
        &state.db,
        format!(
            "SELECT i.workspace_id AS scope_ws, i.runs_total AS scope_total, s.* FROM integrations i \
             LEFT JOIN (SELECT {RUN_COLUMNS} FROM sync_logs WHERE {filter} ORDER BY id DESC LIMIT {size} OFFSET {offset}) s \
             ON 1 = 1 WHERE i.id = $1 ORDER BY s.id DESC"
        ),
        values,
    )
    .await?;
    let Some(first) = rows.first() else {
        return Err(ApiError::NotFound("integration"));
    };
    let ws: Uuid = first.try_get("", "scope_ws")?;
    if caller.workspace_id.is_some_and(|own| own != ws) {
        return Err(ApiError::NotFound("integration"));
    }
    let runs_total: i64 = first.try_get("", "scope_total")?;
    let mut logs = Vec::with_capacity(rows.len());
    for r in &rows {
        if r.try_get::<Option<Uuid>>("", "id")?.is_some() {
            logs.push(RunView::from_row(r)?);
        }
    }
    let (total, total_is_exact) = if unfiltered {
        // Maintained where runs are created: exact and free.
        (u64::try_from(runs_total).unwrap_or(0), true)
    } else {
        // A filtered total counts at most TOTAL_CAP rows, so it never costs a full count.
        let rows = q::query(
            &state.db,
            format!("SELECT COUNT(*) AS n FROM (SELECT 1 FROM sync_logs WHERE {count_filter} LIMIT {}) t", TOTAL_CAP + 1),
            count_values,
        )
        .await?;
        let counted: i64 = rows
            .first()
            .map(|r| r.try_get("", "n"))
            .transpose()?
            .unwrap_or(0);
        (
            u64::try_from(counted.min(TOTAL_CAP)).unwrap_or(0),
            counted <= TOTAL_CAP,
        )
    };
    let next_cursor = (logs.len() as u64 == size)
        .then(|| logs.last().map(|l| l.id.to_string()))
        .flatten();
    Ok(Json(SyncHistory {
        logs,
        total,
        total_is_exact,
        page,
        page_size: size,
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordQuery {
    /// 1–500, default 20.
    #[param(minimum = 1, maximum = 500)]
    pub page_size: Option<u64>,
    pub cursor: Option<String>,
    /// Only records changed at or after this instant (RFC 3339).
    pub updated_since: Option<DateTime<Utc>>,
    /// Include soft-deleted records (default false).
    #[serde(default)]
    pub include_deleted: bool,
    /// Only records in this sync state: `synced`, `pending`, `pushing`, `conflict` or `failed`.
    pub sync_state: Option<String>,
}

/// The synced records: the fast local read path that replaces calling the source.
#[utoipa::path(get, path = "/api/integrations/{id}/records", params(("id" = Uuid, Path), RecordQuery),
    tag = "history", responses((status = 200, body = RecordPage)))]
pub async fn records(
    State(state): State<AppState>,
    Scoped { integration: m, .. }: Scoped,
    ApiQuery(p): ApiQuery<RecordQuery>,
) -> Result<Json<RecordPage>, ApiError> {
    let (_, size) = page_bounds(None, p.page_size)?;
    let mut sql = String::from(
        "SELECT external_id, data, version, deleted_at, synced_at, sync_state, cloud_version, cloud_id, \
         modified_at, modified_by FROM records WHERE integration_id = $1",
    );
    let mut values: Vec<Value> = vec![m.id.into()];
    if !p.include_deleted {
        sql.push_str(" AND deleted_at IS NULL");
    }
    if let Some(st) = p.sync_state {
        if !matches!(
            st.as_str(),
            "synced" | "pending" | "pushing" | "conflict" | "failed"
        ) {
            return Err(ApiError::field(
                "syncState",
                "must be synced, pending, pushing, conflict or failed",
            ));
        }
        values.push(st.into());
        sql.push_str(&format!(" AND sync_state = ${}", values.len()));
    }
    if let Some(since) = p.updated_since {
        values.push(since.into());
        sql.push_str(&format!(" AND synced_at >= ${}", values.len()));
    }
    if let Some(c) = p.cursor {
        values.push(c.into());
        sql.push_str(&format!(" AND external_id > ${}", values.len()));
    }
    sql.push_str(&format!(" ORDER BY external_id LIMIT {size}"));
    let rows = q::query(&state.db, sql, values).await?;
    let mut records = Vec::with_capacity(rows.len());
    for r in &rows {
        records.push(RecordView {
            external_id: r.try_get("", "external_id")?,
            data: r.try_get("", "data")?,
            version: r.try_get("", "version")?,
            deleted_at: r.try_get("", "deleted_at")?,
            synced_at: r.try_get("", "synced_at")?,
            sync_state: r.try_get("", "sync_state")?,
            cloud_version: r.try_get("", "cloud_version")?,
            cloud_id: r.try_get("", "cloud_id")?,
            modified_at: r.try_get("", "modified_at")?,
            modified_by: r.try_get("", "modified_by")?,
        });
    }
    let next_cursor = (records.len() as u64 == size)
        .then(|| records.last().map(|r| r.external_id.clone()))
        .flatten();
    Ok(Json(RecordPage {
        records,
        page_size: size,
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// 1–500, default 20.
    #[param(minimum = 1, maximum = 500)]
    pub page_size: Option<u64>,
    /// `nextCursor` of the previous page.
    #[param(format = Uuid)]
    pub cursor: Option<String>,
}

/// The audit trail of one integration, newest first.
#[utoipa::path(get, path = "/api/integrations/{id}/audit", params(("id" = Uuid, Path), AuditQuery),
    tag = "history", responses((status = 200, body = AuditPage)))]
pub async fn audit(
    State(state): State<AppState>,
    Scoped { integration: m, .. }: Scoped,
    ApiQuery(p): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let (_, size) = page_bounds(None, p.page_size)?;
    let mut sql = String::from(
        "SELECT id, integration_id, actor, actor_name, action, reason, \"before\", \"after\", created_at FROM audit_events WHERE integration_id = $1",
    );
    let mut values: Vec<Value> = vec![m.id.into()];
    if let Some(c) = p.cursor {
        let cursor = Uuid::parse_str(&c)
            .map_err(|_| ApiError::field("cursor", "not a cursor from nextCursor"))?;
        values.push(cursor.into());
        sql.push_str(" AND id < $2");
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {size}"));
    let rows = q::query(&state.db, sql, values).await?;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        events.push(AuditView {
            id: r.try_get("", "id")?,
            integration_id: r.try_get("", "integration_id")?,
            actor: r.try_get("", "actor")?,
            actor_name: r.try_get("", "actor_name")?,
            action: r.try_get("", "action")?,
            reason: r.try_get("", "reason")?,
            before: r.try_get("", "before")?,
            after: r.try_get("", "after")?,
            created_at: r.try_get("", "created_at")?,
        });
    }
    let next_cursor = (events.len() as u64 == size)
        .then(|| events.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        events,
        page_size: size,
        next_cursor,
    }))
}
