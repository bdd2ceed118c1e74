//! `/api/sync/*`: the fleet as ops see it — status, stats, the live queue, and
//! re-running a failed run.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use syncfleet_worker::db::{self as q, Dialect};

use super::integrations::{Reason, reason, trigger_result};
use crate::auth::{Admin, Caller};
use crate::control;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::extract::{OptionalJson, PathId};
use crate::state::AppState;
use crate::views::{RUN_COLUMNS, RunView, TriggerResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/sync/status", get(status))
        .route("/api/sync/stats", get(stats))
        .route("/api/sync/queue", get(queue))
        .route("/api/sync/retry/{log_id}", post(retry))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    /// Queue workers that sent a heartbeat recently (operator keys only: a fleet-wide fact).
    pub workers_alive: Option<u64>,
    /// Hints waiting in the queue (operator keys only: a fleet-wide fact).
    pub queue_depth: Option<u64>,
    pub runs_pending: i64,
    pub runs_running: i64,
    pub failed_last_hour: i64,
    pub integrations: i64,
    pub disabled_integrations: i64,
    pub paused_integrations: i64,
    pub last_successful_sync: Option<DateTime<Utc>>,
}

/// Fleet status: workers, queue, live runs, recent failures.
#[utoipa::path(get, path = "/api/sync/status", tag = "fleet", responses((status = 200, body = FleetStatus)))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<FleetStatus>, ApiError> {
    let d = Dialect::of(&state.db);
    let (scope, values) = workspace_scope(&caller, "i");
    let rows = q::query(
        &state.db,
        format!(
            "SELECT \
               (SELECT COUNT(*) FROM live_runs s JOIN integrations i ON i.id = s.integration_id WHERE s.status = 'PENDING'{scope}) AS pending, \
               (SELECT COUNT(*) FROM live_runs s JOIN integrations i ON i.id = s.integration_id WHERE s.status = 'RUNNING'{scope}) AS running, \
               (SELECT COUNT(*) FROM run_history s JOIN integrations i ON i.id = s.integration_id WHERE s.status = 'FAILED' \
                  AND s.completed_at >= {hour_ago}{scope}) AS failed, \
               (SELECT COUNT(*) FROM integrations i WHERE 1 = 1{scope}) AS total, \
               (SELECT COUNT(*) FROM integrations i WHERE i.health = 'disabled'{scope}) AS disabled, \
               (SELECT COUNT(*) FROM integrations i WHERE i.health = 'paused'{scope}) AS paused",
            hour_ago = d.now_plus_ms("-3600000"),
        ),
        values.clone(),
    )
    .await?;
    let r = rows
        .first()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("status query returned nothing")))?;
    let last = q::query(
        &state.db,
        format!(
            "SELECT i.last_success_at FROM integrations i WHERE i.last_success_at IS NOT NULL{scope} \
             ORDER BY i.last_success_at DESC LIMIT 1"
        ),
        values,
    )
    .await?;
    let last_successful_sync: Option<DateTime<Utc>> = last
        .first()
        .map(|r| r.try_get("", "last_success_at"))
        .transpose()?;
    // Fleet-wide facts are an operator's; a workspace key sees its own workspace only.
    let fleet = caller.workspace_id.is_none();
    let (workers_alive, queue_depth) = if fleet {
        (
            Some(
                state
                    .queue
                    .workers_alive()
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?,
            ),
            Some(
                state
                    .queue
                    .depth()
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?,
            ),
        )
    } else {
        (None, None)
    };
    Ok(Json(FleetStatus {
        workers_alive,
        queue_depth,
        runs_pending: r.try_get("", "pending")?,
        runs_running: r.try_get("", "running")?,
        failed_last_hour: r.try_get("", "failed")?,
        integrations: r.try_get("", "total")?,
        disabled_integrations: r.try_get("", "disabled")?,
        paused_integrations: r.try_get("", "paused")?,
        last_successful_sync,
    }))
}

/// `AND i.workspace_id = $1` for a workspace key, nothing for an operator key.
fn workspace_scope(caller: &Caller, alias: &str) -> (String, Vec<sea_orm::Value>) {
    match caller.workspace_id {
        Some(ws) => (format!(" AND {alias}.workspace_id = $1"), vec![ws.into()]),
        None => (String::new(), Vec::new()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// `15m`, `1h`, `24h` (default), `7d`: a number and a unit (`s`, `m`, `h`, `d`), at most 30 days.
    pub window: Option<String>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KindStats {
    pub runs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub rate_limited: u64,
    /// Succeeded / (succeeded + failed); `null` without finished runs.
    pub success_rate: Option<f64>,
    pub duration_p50_ms: Option<i64>,
    pub duration_p95_ms: Option<i64>,
    pub duration_p99_ms: Option<i64>,
    pub records_per_run: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetStats {
    pub window_secs: i64,
    /// How many runs the figures are computed from (the newest 100,000 at most).
    pub sampled_runs: u64,
    pub overall: KindStats,
    pub by_kind: BTreeMap<String, KindStats>,
}

fn parse_window(raw: Option<&str>) -> Result<i64, ApiError> {
    let raw = raw.unwrap_or("24h").trim();
    let bad = || {
        ApiError::field(
            "window",
            format!("`{raw}` is not a window like 15m, 1h, 24h or 7d (at most 30d)"),
        )
    };
    let split = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = raw.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit_secs: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    // Checked: a huge count must be refused, not wrapped into a small window.
    let secs = n.checked_mul(unit_secs).ok_or_else(bad)?;
    if secs <= 0 || secs > 30 * 86_400 {
        return Err(bad());
    }
    Ok(secs)
}

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied()
}

#[derive(Default)]
struct Acc {
    stats: KindStats,
    durations: Vec<i64>,
    records: i64,
}

impl Acc {
    fn add(&mut self, status: &str, duration: Option<i64>, records: i64) {
        self.stats.runs += 1;
        match status {
            "SUCCESS" => self.stats.succeeded += 1,
            "FAILED" => self.stats.failed += 1,
            _ => self.stats.rate_limited += 1,
        }
        if let Some(d) = duration {
            self.durations.push(d);
        }
        self.records += records;
    }

    fn finish(mut self) -> KindStats {
        self.durations.sort_unstable();
        let finished = self.stats.succeeded + self.stats.failed;
        self.stats.success_rate =
            (finished > 0).then(|| self.stats.succeeded as f64 / finished as f64);
        self.stats.duration_p50_ms = percentile(&self.durations, 0.50);
        self.stats.duration_p95_ms = percentile(&self.durations, 0.95);
        self.stats.duration_p99_ms = percentile(&self.durations, 0.99);
        self.stats.records_per_run =
            (self.stats.runs > 0).then(|| self.records as f64 / self.stats.runs as f64);
        self.stats
    }
}

/// Success rate, run-duration percentiles and records per run over a window, by kind.
#[utoipa::path(get, path = "/api/sync/stats", params(StatsQuery), tag = "fleet", responses((status = 200, body = FleetStats)))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<StatsQuery>,
) -> Result<Json<FleetStats>, ApiError> {
    let window = parse_window(p.window.as_deref())?;
    let d = Dialect::of(&state.db);
    let (scope, mut values) = workspace_scope(&caller, "i");
    values.push((-window * 1000).into());
    let since = d.now_plus_ms(&format!("${}", values.len()));
    let rows = q::query(
        &state.db,
        format!(
            "SELECT i.kind, s.status, s.duration_ms, s.records_count FROM sync_logs s JOIN integrations i ON i.id = s.integration_id \
             WHERE s.completed_at >= {since} AND s.status IN ('SUCCESS', 'FAILED', 'RATE_LIMITED'){scope} \
             ORDER BY s.completed_at DESC LIMIT 100000"
        ),
        values,
    )
    .await?;
    let mut overall = Acc::default();
    let mut by_kind: BTreeMap<String, Acc> = BTreeMap::new();
    for r in &rows {
        let kind: String = r.try_get("", "kind")?;
        let status: String = r.try_get("", "status")?;
        let duration: Option<i64> = r.try_get("", "duration_ms")?;
        let records: i64 = r.try_get("", "records_count")?;
        overall.add(&status, duration, records);
        by_kind
            .entry(kind)
            .or_default()
            .add(&status, duration, records);
    }
    Ok(Json(FleetStats {
        window_secs: window,
        sampled_runs: rows.len() as u64,
        overall: overall.finish(),
        by_kind: by_kind.into_iter().map(|(k, a)| (k, a.finish())).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuedRun {
    #[serde(flatten)]
    pub run: RunView,
    pub integration_name: String,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    pub pending: Vec<QueuedRun>,
    pub running: Vec<QueuedRun>,
}

/// The live runs: pending (oldest first) and running, at most 500 of each.
#[utoipa::path(get, path = "/api/sync/queue", tag = "fleet", responses((status = 200, body = QueueView)))]
pub async fn queue(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<QueueView>, ApiError> {
    let (scope, values) = workspace_scope(&caller, "i");
    let cols = RUN_COLUMNS
        .split(", ")
        .map(|c| format!("s.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = Vec::new();
    for status in ["PENDING", "RUNNING"] {
        let rows = q::query(
            &state.db,
            format!(
                "SELECT {cols}, i.name AS integration_name, s.lease_owner, s.lease_until FROM live_sync_logs s \
                 JOIN integrations i ON i.id = s.integration_id WHERE s.status = '{status}'{scope} \
                 ORDER BY s.created_at LIMIT 500"
            ),
            values.clone(),
        )
        .await?;
        let mut runs = Vec::with_capacity(rows.len());
        for r in &rows {
            runs.push(QueuedRun {
                run: RunView::from_row(r)?,
                integration_name: r.try_get("", "integration_name")?,
                lease_owner: r.try_get("", "lease_owner")?,
                lease_until: r.try_get("", "lease_until")?,
            });
        }
        out.push(runs);
    }
    let running = out.pop().unwrap_or_default();
    let pending = out.pop().unwrap_or_default();
    Ok(Json(QueueView { pending, running }))
}

/// Re-run a failed run now (a manual run of its integration, even if the failures
/// disabled it).
#[utoipa::path(post, path = "/api/sync/retry/{logId}", params(("logId" = Uuid, Path)), tag = "fleet",
    responses((status = 202, body = TriggerResult), (status = 409, description = "the run did not fail")))]
pub async fn retry(
    State(state): State<AppState>,
    Admin(caller): Admin,
    PathId(log_id): PathId,
    OptionalJson(body): OptionalJson<Reason>,
) -> Result<(StatusCode, Json<TriggerResult>), ApiError> {
    let why = reason(body.reason)?;
    let t = control::runs::retry(&state, &caller, log_id, why).await?;
    Ok((StatusCode::ACCEPTED, Json(trigger_result(&state, t).await?)))
}
