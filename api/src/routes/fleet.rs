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
use syncfleet_worker::history::{self, HISTORY, STATS_TABLE};

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
    /// Integrations whose freshness objective is breached.
    pub stale_count: i64,
    /// Local changes not pushed to the cloud yet, and the age of the oldest (seconds).
    pub outbox_pending: i64,
    pub outbox_oldest_pending_seconds: Option<i64>,
    /// Local changes whose push failed (retryable by hand).
    pub outbox_failed: i64,
    /// Conflicts between a local and a cloud change held for a person.
    pub open_conflicts: i64,
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
               (SELECT COUNT(*) FROM integrations i WHERE i.health = 'paused'{scope}) AS paused, \
               (SELECT COUNT(*) FROM integrations i WHERE i.stale_since IS NOT NULL{scope}) AS stale, \
               (SELECT COUNT(*) FROM outbox o JOIN integrations i ON i.id = o.integration_id \
                  WHERE o.status IN ('pending', 'pushing'){scope}) AS outbox, \
               (SELECT MAX({oage}) FROM outbox o JOIN integrations i ON i.id = o.integration_id \
                  WHERE o.status IN ('pending', 'pushing'){scope}) AS outbox_ms, \
               (SELECT COUNT(*) FROM outbox o JOIN integrations i ON i.id = o.integration_id \
                  WHERE o.status = 'failed'{scope}) AS outbox_failed, \
               (SELECT COUNT(*) FROM conflicts c JOIN integrations i ON i.id = c.integration_id \
                  WHERE c.status = 'open'{scope}) AS conflicts",
            hour_ago = d.now_plus_ms("-3600000"),
            oage = d.ms_since("o.created_at"),
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
        stale_count: r.try_get("", "stale")?,
        outbox_pending: r.try_get("", "outbox")?,
        outbox_oldest_pending_seconds: r
            .try_get::<Option<i64>>("", "outbox_ms")?
            .map(|ms| ms.max(0) / 1000),
        outbox_failed: r.try_get("", "outbox_failed")?,
        open_conflicts: r.try_get("", "conflicts")?,
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
    /// Start of the period the figures cover: the window's start, or the start of its
    /// first hour when that hour is known only from the hourly aggregates.
    pub since: DateTime<Utc>,
    /// How many finished runs the figures are computed from: every run of the rolled-up
    /// hours in the window, plus the newest 100,000 at most of the rest.
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

/// The `(round((n − 1)·p))`-th value of the sorted durations.
fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied()
}

/// [`percentile`] over the raw durations (weight 1 each) together with hourly
/// percentiles weighted by their runs: the value at position `round((W − 1)·p)` of the
/// sequence in which every hourly value stands for its runs. Exact for raw runs and
/// for one integration-hour; across hours an estimate (docs/architecture.md §3.9).
fn weighted_percentile(sorted: &[i64], hourly: &[(i64, u64)], p: f64) -> Option<i64> {
    if hourly.is_empty() {
        return percentile(sorted, p);
    }
    let mut items: Vec<(i64, u64)> = sorted.iter().map(|d| (*d, 1)).collect();
    items.extend_from_slice(hourly);
    items.sort_unstable();
    let total: u64 = items.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return None;
    }
    let target = ((total as f64 - 1.0) * p).round() as u64;
    let mut seen = 0u64;
    for (v, w) in items {
        seen += w;
        if seen > target {
            return Some(v);
        }
    }
    None
}

#[derive(Default)]
struct Acc {
    stats: KindStats,
    durations: Vec<i64>,
    /// Hourly p50, p95, p99 with the runs each stands for.
    hourly: [Vec<(i64, u64)>; 3],
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

    /// Counts of rolled-up hours.
    fn add_hours(&mut self, succeeded: u64, failed: u64, rate_limited: u64, records: i64) {
        self.stats.runs += succeeded + failed + rate_limited;
        self.stats.succeeded += succeeded;
        self.stats.failed += failed;
        self.stats.rate_limited += rate_limited;
        self.records += records;
    }

    fn add_hour_percentiles(&mut self, runs: u64, p: [Option<i64>; 3]) {
        for (list, v) in self.hourly.iter_mut().zip(p) {
            if let Some(v) = v
                && runs > 0
            {
                list.push((v, runs));
            }
        }
    }

    fn finish(mut self) -> KindStats {
        self.durations.sort_unstable();
        let finished = self.stats.succeeded + self.stats.failed;
        self.stats.success_rate =
            (finished > 0).then(|| self.stats.succeeded as f64 / finished as f64);
        self.stats.duration_p50_ms = weighted_percentile(&self.durations, &self.hourly[0], 0.50);
        self.stats.duration_p95_ms = weighted_percentile(&self.durations, &self.hourly[1], 0.95);
        self.stats.duration_p99_ms = weighted_percentile(&self.durations, &self.hourly[2], 0.99);
        self.stats.records_per_run =
            (self.stats.runs > 0).then(|| self.records as f64 / self.stats.runs as f64);
        self.stats
    }
}

/// Most raw runs, and most hourly rows for the percentiles, one stats answer reads.
const SAMPLE: u64 = 100_000;

/// Where a window's figures come from (docs/architecture.md §3.9): hours before the
/// rollup watermark from the hourly aggregates, the rest from the raw runs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sources {
    /// The start of the period covered.
    since: DateTime<Utc>,
    /// Rolled-up hours `[from, to)` read from `run_stats_hourly`.
    hours: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Raw `completed_at` ranges `[from, to)` (`None`: up to now), newest first.
    raw: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
}

/// `since` is the window's start, `kept_since` the instant after which every finished
/// run is still stored whatever the rollup (now − the retention).
fn sources(
    since: DateTime<Utc>,
    rolled_up_to: Option<DateTime<Utc>>,
    kept_since: DateTime<Utc>,
) -> Sources {
    let raw_only = Sources {
        since,
        hours: None,
        raw: vec![(since, None)],
    };
    let Some(w) = rolled_up_to.filter(|w| since < *w) else {
        return raw_only;
    };
    let first = history::floor_hour(since);
    if first == since {
        return Sources {
            since,
            hours: Some((since, w)),
            raw: vec![(w, None)],
        };
    }
    let next = first + chrono::TimeDelta::hours(1);
    if since >= kept_since {
        // The window's partial first hour is still stored raw: read it from the rows,
        // so the window starts where it was asked to.
        if next >= w {
            return raw_only;
        }
        return Sources {
            since,
            hours: Some((next, w)),
            raw: vec![(w, None), (since, Some(next))],
        };
    }
    // Its rows may be gone: the whole first hour, from its aggregate.
    Sources {
        since: first,
        hours: Some((first, w)),
        raw: vec![(w, None)],
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
    let now = history::db_now(&state.db).await?;
    let since = now - chrono::TimeDelta::seconds(window);
    let retention = chrono::TimeDelta::from_std(state.config.history.retention)
        .unwrap_or(chrono::TimeDelta::MAX);
    let plan = sources(
        since,
        history::watermark(&state.db).await?,
        now.checked_sub_signed(retention)
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
    );
    let mut overall = Acc::default();
    let mut by_kind: BTreeMap<String, Acc> = BTreeMap::new();
    let mut sampled = 0u64;
    let (scope, scope_values) = workspace_scope(&caller, "i");
    for (from, to) in &plan.raw {
        let left = SAMPLE - sampled;
        if left == 0 {
            break;
        }
        let mut values = scope_values.clone();
        values.push((*from).into());
        let mut range = format!("s.completed_at >= ${}", values.len());
        if let Some(to) = to {
            values.push((*to).into());
            range.push_str(&format!(" AND s.completed_at < ${}", values.len()));
        }
        let rows = q::query(
            &state.db,
            format!(
                "SELECT i.kind, s.status, s.duration_ms, s.records_count FROM {HISTORY} s JOIN integrations i ON i.id = s.integration_id \
                 WHERE {range} AND s.status IN ('SUCCESS', 'FAILED', 'RATE_LIMITED'){scope} \
                 ORDER BY s.completed_at DESC LIMIT {left}"
            ),
            values,
        )
        .await?;
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
        sampled += rows.len() as u64;
    }
    if let Some((from, to)) = plan.hours {
        let mut values = scope_values.clone();
        values.push(from.into());
        values.push(to.into());
        let (a, b) = (values.len() - 1, values.len());
        let hours = format!("a.hour >= ${a} AND a.hour < ${b}");
        // Every rolled-up hour of the window counts…
        let rows = q::query(
            &state.db,
            format!(
                "SELECT i.kind, CAST(SUM(a.succeeded) AS BIGINT) AS succeeded, CAST(SUM(a.failed) AS BIGINT) AS failed, \
                   CAST(SUM(a.rate_limited) AS BIGINT) AS rate_limited, CAST(SUM(a.records) AS BIGINT) AS records \
                 FROM {STATS_TABLE} a JOIN integrations i ON i.id = a.integration_id \
                 WHERE {hours}{scope} GROUP BY i.kind"
            ),
            values.clone(),
        )
        .await?;
        let count = |r: &sea_orm::QueryResult, c: &str| -> Result<u64, ApiError> {
            Ok(u64::try_from(r.try_get::<i64>("", c)?).unwrap_or(0))
        };
        for r in &rows {
            let kind: String = r.try_get("", "kind")?;
            let (ok, failed, limited) = (
                count(r, "succeeded")?,
                count(r, "failed")?,
                count(r, "rate_limited")?,
            );
            let records: i64 = r.try_get("", "records")?;
            overall.add_hours(ok, failed, limited, records);
            by_kind
                .entry(kind)
                .or_default()
                .add_hours(ok, failed, limited, records);
            sampled += ok + failed + limited;
        }
        // …and the percentiles come from the newest hourly rows.
        let rows = q::query(
            &state.db,
            format!(
                "SELECT i.kind, a.succeeded + a.failed + a.rate_limited AS n, \
                   a.duration_p50_ms, a.duration_p95_ms, a.duration_p99_ms \
                 FROM {STATS_TABLE} a JOIN integrations i ON i.id = a.integration_id \
                 WHERE {hours} AND a.duration_p50_ms IS NOT NULL{scope} \
                 ORDER BY a.hour DESC LIMIT {SAMPLE}"
            ),
            values,
        )
        .await?;
        for r in &rows {
            let kind: String = r.try_get("", "kind")?;
            let n = count(r, "n")?;
            let p = [
                r.try_get("", "duration_p50_ms")?,
                r.try_get("", "duration_p95_ms")?,
                r.try_get("", "duration_p99_ms")?,
            ];
            overall.add_hour_percentiles(n, p);
            by_kind.entry(kind).or_default().add_hour_percentiles(n, p);
        }
    }
    Ok(Json(FleetStats {
        window_secs: window,
        since: plan.since,
        sampled_runs: sampled,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn a_window_reads_rolled_up_hours_from_the_aggregates() {
        let w = Some(t("2026-12-02T10:00:00Z"));
        let long_ago = t("2026-11-01T00:00:00Z");
        // Nothing rolled up, or the window starts after the watermark: all raw.
        for wm in [None, w] {
            let since = t("2026-12-02T10:05:00Z");
            assert_eq!(
                sources(since, wm, long_ago),
                Sources {
                    since,
                    hours: None,
                    raw: vec![(since, None)]
                }
            );
        }
        // An aligned start: aggregates up to the watermark, raw after it.
        let since = t("2026-12-01T10:00:00Z");
        assert_eq!(
            sources(since, w, long_ago),
            Sources {
                since,
                hours: Some((since, t("2026-12-02T10:00:00Z"))),
                raw: vec![(t("2026-12-02T10:00:00Z"), None)]
            }
        );
        // A partial first hour still stored raw: read from the rows.
        let since = t("2026-12-01T09:20:00Z");
        assert_eq!(
            sources(since, w, long_ago),
            Sources {
                since,
                hours: Some((t("2026-12-01T10:00:00Z"), t("2026-12-02T10:00:00Z"))),
                raw: vec![
                    (t("2026-12-02T10:00:00Z"), None),
                    (since, Some(t("2026-12-01T10:00:00Z")))
                ]
            }
        );
        // The partial first hour is the one before the watermark: all raw.
        let since = t("2026-12-02T09:20:00Z");
        assert_eq!(sources(since, w, long_ago).hours, None);
        // Past the retention, the partial hour's rows may be gone: its whole aggregate.
        let since = t("2026-12-01T09:20:00Z");
        assert_eq!(
            sources(since, w, t("2026-12-02T09:00:00Z")),
            Sources {
                since: t("2026-12-01T09:00:00Z"),
                hours: Some((t("2026-12-01T09:00:00Z"), t("2026-12-02T10:00:00Z"))),
                raw: vec![(t("2026-12-02T10:00:00Z"), None)]
            }
        );
    }

    #[test]
    fn hourly_percentiles_stand_for_their_runs() {
        // Unit weights: the same as the raw percentile.
        let raw = [10, 20, 30, 40, 50];
        assert_eq!(weighted_percentile(&raw, &[], 0.5), Some(30));
        assert_eq!(
            weighted_percentile(&[10, 20], &[(30, 1), (40, 1), (50, 1)], 0.5),
            Some(30)
        );
        // An hour of 98 runs at 100 ms outweighs two raw runs.
        assert_eq!(weighted_percentile(&[5, 900], &[(100, 98)], 0.5), Some(100));
        assert_eq!(weighted_percentile(&[5, 900], &[(100, 98)], 1.0), Some(900));
        assert_eq!(weighted_percentile(&[], &[], 0.5), None);
    }
}
