//! Page: the fleet (`/fleet`): workers, queue depth, throughput and success rate over
//! the last hour, durations by kind, scheduler lag, provider limits and pauses, and
//! the live runs. Figures come from the API's `/api/sync/*` functions.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use syncfleet_worker::db::{self as q, Dialect};

use super::{Session, abs, layout, page, rel, status_icon};
use crate::error::ApiError;
use crate::routes::fleet::{self, KindStats, StatsQuery};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/fleet", get(show))
}

/// A fleet-wide figure, which only an operator key sees.
fn opt(v: Option<u64>) -> String {
    v.map_or("—".into(), |n| n.to_string())
}

fn pct(v: Option<f64>) -> String {
    v.map_or("—".into(), |r| format!("{:.1} %", r * 100.0))
}

fn ms(v: Option<i64>) -> String {
    v.map_or("—".into(), |m| {
        if m < 1000 {
            format!("{m} ms")
        } else {
            format!("{:.1} s", m as f64 / 1000.0)
        }
    })
}

/// Scheduler lag (`started_at − scheduled_for` of scheduled first claims) over the
/// newest 2,000 runs started in the last hour: `(p50, p95)` in ms.
async fn scheduler_lag(
    state: &AppState,
    s: &Session,
) -> Result<(Option<i64>, Option<i64>), ApiError> {
    let d = Dialect::of(&state.db);
    let (scope, mut values) = super::actions::scope(s);
    values.push((-3_600_000i64).into());
    let since = d.now_plus_ms(&format!("${}", values.len()));
    let rows = q::query(
        &state.db,
        format!(
            "SELECT s.scheduled_for, s.started_at FROM run_history s JOIN integrations i ON i.id = s.integration_id \
             WHERE s.completed_at >= {since} AND s.\"trigger\" = 'schedule' AND s.claims = 1 AND s.started_at IS NOT NULL{scope} \
             ORDER BY s.completed_at DESC LIMIT 2000"
        ),
        values,
    )
    .await?;
    let mut lags: Vec<i64> = Vec::with_capacity(rows.len());
    for r in &rows {
        let a: DateTime<Utc> = r.try_get("", "scheduled_for")?;
        let b: Option<DateTime<Utc>> = r.try_get("", "started_at")?;
        if let Some(b) = b {
            lags.push((b - a).num_milliseconds().max(0));
        }
    }
    lags.sort_unstable();
    let at =
        |p: f64| (!lags.is_empty()).then(|| lags[((lags.len() as f64 - 1.0) * p).round() as usize]);
    Ok((at(0.5), at(0.95)))
}

/// Providers paused fleet-wide after a 429, with the time left (Redis only).
async fn pauses(state: &AppState) -> Vec<(String, i64)> {
    let Some(url) = state.config.redis_url.as_ref() else {
        return Vec::new();
    };
    // The same key names the limiter writes (docs/architecture.md §5.7).
    let base = syncfleet_worker::queue::Keys::new(
        &state.config.redis_prefix,
        syncfleet_worker::queue::QUEUE,
    )
    .base;
    let prefix = syncfleet_worker::ratelimit::pause_key_prefix(&base);
    let work = async {
        let client = redis::Client::open(url.expose()).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        for _ in 0..20 {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut c)
                .await
                .ok()?;
            for k in keys {
                let ttl: i64 = redis::cmd("PTTL")
                    .arg(&k)
                    .query_async(&mut c)
                    .await
                    .unwrap_or(-2);
                if ttl > 0 {
                    out.push((k.trim_start_matches(&prefix).to_owned(), ttl));
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Some(out)
    };
    tokio::time::timeout(Duration::from_secs(1), work)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn kind_row(name: &str, k: &KindStats) -> Markup {
    html! {
        tr {
            th scope="row" { (name) }
            td.num { (k.runs) }
            td.num { (pct(k.success_rate)) }
            td.num { (ms(k.duration_p50_ms)) }
            td.num { (ms(k.duration_p95_ms)) }
            td.num { (k.failed) }
            td.num { (k.rate_limited) }
        }
    }
}

async fn show(State(state): State<AppState>, s: Session) -> super::Result {
    let status = fleet::status(State(state.clone()), s.caller.clone())
        .await?
        .0;
    let stats = fleet::stats(
        State(state.clone()),
        s.caller.clone(),
        crate::extract::ApiQuery(StatsQuery {
            window: Some("1h".into()),
        }),
    )
    .await?
    .0;
    let queue = fleet::queue(State(state.clone()), s.caller.clone())
        .await?
        .0;
    let (lag50, lag95) = scheduler_lag(&state, &s).await?;
    let paused = pauses(&state).await;
    let runs_per_min = stats.overall.runs as f64 / 60.0;
    let body = html! {
        div.titlebar { h1 { "Fleet" } }
        div.tiles {
            div.tile title="fleet-wide: shown to operator keys" { b { (opt(status.workers_alive)) } span { "workers alive" } }
            div.tile title="fleet-wide: shown to operator keys" { b { (opt(status.queue_depth)) } span { "hints in the queue" } }
            div.tile { b { (status.runs_running) } span { "running" } }
            div.tile { b { (status.runs_pending) } span { "pending" } }
            div.tile { b { (format!("{runs_per_min:.1}")) } span { "runs / min (last hour)" } }
            div.tile { b { (pct(stats.overall.success_rate)) } span { "success rate (last hour)" } }
            div.tile { b { (ms(lag50)) } span { "scheduler lag p50" } }
            div.tile { b { (ms(lag95)) } span { "scheduler lag p95" } }
        }
        @if status.workers_alive == Some(0) {
            div.callout.tone-warn role="status" { p { b { "No worker is alive." } " Runs stay pending until one starts (" code { "syncfleet worker" } ")." } }
        }
        section.card {
            h2 { "By kind, last hour" }
            @if stats.by_kind.is_empty() {
                p.empty-inline { "No runs finished in the last hour." }
            } @else {
                table.bykind {
                    thead { tr { th { "kind" } th.num { "runs" } th.num { "success" } th.num { "p50" } th.num { "p95" } th.num { "failed" } th.num { "rate limited" } } }
                    tbody {
                        @for (k, v) in &stats.by_kind { (kind_row(k, v)) }
                        (kind_row("all", &stats.overall))
                    }
                }
            }
        }
        section.card {
            h2 { "Provider limits" }
            @if state.config.rate_limits.is_empty() && state.config.provider_concurrency.is_empty() {
                p.muted { "No per-provider limits are configured (" code { "SYNCFLEET_RATE_LIMITS" } ", " code { "SYNCFLEET_PROVIDER_CONCURRENCY" } "). A source's 429 still pauses its provider." }
            } @else {
                ul {
                    @for (k, l) in &state.config.rate_limits {
                        li { b { (k.as_str()) } ": " (l.requests) " requests per " (l.per.as_secs_f64()) " s, burst " (l.burst) }
                    }
                    @for (k, n) in &state.config.provider_concurrency {
                        li { b { (k.as_str()) } ": at most " (n) " runs at once per provider" }
                    }
                }
            }
            @if paused.is_empty() {
                p.muted { "No provider is paused by a rate limit now." }
            } @else {
                table {
                    thead { tr { th { "paused provider" } th.num { "resumes in" } } }
                    tbody { @for (p, ttl) in &paused { tr { td.mono { (p) } td.num { (ms(Some(*ttl))) } } } }
                }
            }
        }
        section.card {
            h2 { "Live runs" }
            @if queue.running.is_empty() && queue.pending.is_empty() {
                p.empty-inline { "Nothing is running or waiting. Runs appear here when integrations fall due or someone presses Sync now." }
            } @else {
                table.queue {
                    thead { tr { th { "status" } th { "integration" } th { "trigger" } th { "scheduled" } th { "started" } th { "worker" } th { "lease until" } } }
                    tbody {
                        @for r in queue.running.iter().chain(queue.pending.iter()) {
                            tr {
                                td { (status_icon(&r.run.status)) }
                                td { a href=(format!("/integrations/{}", r.run.integration_id)) { (r.integration_name) } }
                                td { (r.run.trigger) }
                                td { (rel(Some(r.run.scheduled_for), "")) }
                                td { (abs(r.run.started_at)) }
                                td.mono { (r.lease_owner.as_deref().unwrap_or("—")) }
                                td { (abs(r.lease_until)) }
                            }
                        }
                    }
                }
            }
        }
        p.muted { "Last successful sync: " (rel(status.last_successful_sync, "none yet")) ". Figures from " code { "/api/sync/status" } ", " code { "/api/sync/stats?window=1h" } " and " code { "/api/sync/queue" } "." }
    };
    Ok(page(layout(&s, "Fleet", "/fleet", body)))
}
