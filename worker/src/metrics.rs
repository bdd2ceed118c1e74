//! Prometheus metrics of the run protocol, in one registry per process.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Finished runs by status, connector kind and trigger.
    pub runs: IntCounterVec,
    pub run_duration: HistogramVec,
    pub records_synced: IntCounterVec,
    /// `scheduled_for → started_at` of first claims.
    pub scheduler_lag: Histogram,
    pub runs_scheduled: IntCounter,
    pub retries_scheduled: IntCounter,
    pub integrations_disabled: IntCounter,
    pub duplicate_deliveries: IntCounter,
    pub stale_finishes: IntCounter,
    pub reaped_runs: IntCounter,
    pub quarantined_runs: IntCounter,
    pub repushed_runs: IntCounter,
    /// Reclaimed runs executed alone in their process.
    pub isolated_runs: IntCounter,
    /// Claims given back unexecuted because a suspect had the process (§4.13).
    pub stepped_aside: IntCounter,
    pub worker_restarts: IntCounter,
    pub rate_limit_waits: IntCounter,
    /// Runs deferred because every concurrency slot of their provider was busy.
    pub provider_slot_deferrals: IntCounter,
    pub queue_depth: IntGauge,
    pub runs_pending: IntGauge,
    pub runs_running: IntGauge,
    pub disabled_integrations: IntGauge,
    /// Finished runs deleted by the history retention.
    pub history_deleted_runs: IntCounter,
    /// Hours rolled up into `run_stats_hourly`.
    pub history_rolled_up_hours: IntCounter,
    /// The rollup watermark, unix seconds (0 until the first rollup).
    pub history_watermark: IntGauge,
    /// Open console event streams of this API process.
    pub console_streams: IntGauge,
    /// Webhook delivery attempts by outcome (`delivered`, `retrying`, `failed`, `stale`).
    pub deliveries: IntCounterVec,
    /// Integrations whose freshness objective is breached.
    pub stale_integrations: IntGauge,
    /// The largest time since the last success among enabled integrations with an
    /// objective (one series, whatever the fleet's size).
    pub max_staleness: IntGauge,
    pub deliveries_pending: IntGauge,
    /// Age of the oldest pending delivery, seconds.
    pub oldest_pending_delivery: IntGauge,
    /// Push attempts by outcome (`pushed`, `retrying`, `conflict`, `failed`, `stale`).
    pub pushes: IntCounterVec,
    /// Outbox entries not pushed yet, and the age of the oldest.
    pub outbox_pending: IntGauge,
    pub outbox_oldest_pending: IntGauge,
    /// Outbox entries whose push failed (retryable by hand).
    pub outbox_failed: IntGauge,
    /// Conflicts held for a person.
    pub open_conflicts: IntGauge,
    /// Webhooks received from the cloud by outcome ([`INBOUND_WEBHOOK_OUTCOMES`]).
    pub inbound_webhooks: IntCounterVec,
}

/// Every outcome of a webhook received from the cloud (docs/architecture.md §4.19):
/// each is exported from the start, at 0, so a rate of refusals can be alerted on.
pub const INBOUND_WEBHOOK_OUTCOMES: [&str; 11] = [
    "accepted",
    "replayed",
    "invalid_signature",
    "stale",
    "forbidden_source",
    "too_large",
    "not_found",
    "conflict",
    "invalid_body",
    "rate_limited",
    "error",
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("syncfleet".into()), None).unwrap_or_default();
        let buckets = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ];
        let m = Self {
            runs: IntCounterVec::new(
                Opts::new("runs_total", "Finished runs"),
                &["status", "kind", "trigger"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            run_duration: HistogramVec::new(
                HistogramOpts::new("run_duration_seconds", "Run duration").buckets(buckets.clone()),
                &["kind"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            records_synced: IntCounterVec::new(
                Opts::new("records_synced_total", "Records received"),
                &["kind"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            scheduler_lag: Histogram::with_opts(
                HistogramOpts::new("scheduler_lag_seconds", "scheduled_for to started_at")
                    .buckets(buckets),
            )
            .unwrap_or_else(|_| unreachable_metric()),
            runs_scheduled: counter("runs_scheduled_total", "Runs created by the scheduler"),
            retries_scheduled: counter(
                "retries_scheduled_total",
                "Failed runs that scheduled a retry",
            ),
            integrations_disabled: counter(
                "integrations_disabled_total",
                "Integrations disabled by the system",
            ),
            duplicate_deliveries: counter(
                "duplicate_deliveries_total",
                "Deliveries whose claim found nothing",
            ),
            stale_finishes: counter("stale_finishes_total", "Finishes rejected by the fence"),
            reaped_runs: counter("reaped_runs_total", "Expired leases made claimable again"),
            quarantined_runs: counter(
                "quarantined_runs_total",
                "Poison runs failed as worker_lost",
            ),
            repushed_runs: counter("repushed_runs_total", "PENDING runs pushed again"),
            isolated_runs: counter(
                "isolated_runs_total",
                "Reclaimed runs executed alone in their process",
            ),
            stepped_aside: counter(
                "stepped_aside_runs_total",
                "Claims given back unexecuted because a suspect had the process",
            ),
            worker_restarts: counter(
                "worker_restarts_total",
                "Queue worker restarts after a backend error",
            ),
            rate_limit_waits: counter(
                "rate_limit_waits_total",
                "Requests that waited for a provider's rate limit",
            ),
            provider_slot_deferrals: counter(
                "provider_slot_deferrals_total",
                "Runs deferred because every concurrency slot of their provider was busy",
            ),
            queue_depth: gauge("queue_depth", "Tasks waiting in the queue"),
            runs_pending: gauge("runs_pending", "PENDING runs"),
            runs_running: gauge("runs_running", "RUNNING runs"),
            disabled_integrations: gauge(
                "disabled_integrations",
                "Integrations disabled by the system",
            ),
            history_deleted_runs: counter(
                "history_deleted_runs_total",
                "Finished runs deleted by the history retention",
            ),
            history_rolled_up_hours: counter(
                "history_rolled_up_hours_total",
                "Hours rolled up into the hourly run aggregates",
            ),
            history_watermark: gauge(
                "history_rollup_watermark_seconds",
                "Start of the first hour not rolled up yet (unix seconds)",
            ),
            console_streams: gauge(
                "console_streams",
                "Open web console event streams (this API process)",
            ),
            deliveries: IntCounterVec::new(
                Opts::new(
                    "notification_attempts_total",
                    "Webhook delivery attempts by outcome",
                ),
                &["outcome"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            stale_integrations: gauge(
                "stale_integrations",
                "Integrations whose freshness objective is breached",
            ),
            max_staleness: gauge(
                "integration_staleness_max_seconds",
                "Largest time since the last success among enabled integrations with a freshness objective",
            ),
            deliveries_pending: gauge(
                "notification_deliveries_pending",
                "Webhook deliveries not finished yet",
            ),
            oldest_pending_delivery: gauge(
                "notification_oldest_pending_seconds",
                "Age of the oldest pending webhook delivery",
            ),
            pushes: IntCounterVec::new(
                Opts::new("push_attempts_total", "Pushes of local changes by outcome"),
                &["outcome"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            outbox_pending: gauge("outbox_pending", "Local changes not pushed yet"),
            outbox_oldest_pending: gauge(
                "outbox_oldest_pending_seconds",
                "Age of the oldest local change not pushed yet",
            ),
            outbox_failed: gauge("outbox_failed", "Local changes whose push failed"),
            open_conflicts: gauge(
                "open_conflicts",
                "Conflicts between local and cloud changes held for a person",
            ),
            inbound_webhooks: IntCounterVec::new(
                Opts::new(
                    "inbound_webhooks_total",
                    "Webhooks received from the cloud by outcome",
                ),
                &["outcome"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.runs.clone()),
            Box::new(m.run_duration.clone()),
            Box::new(m.records_synced.clone()),
            Box::new(m.scheduler_lag.clone()),
            Box::new(m.runs_scheduled.clone()),
            Box::new(m.retries_scheduled.clone()),
            Box::new(m.integrations_disabled.clone()),
            Box::new(m.duplicate_deliveries.clone()),
            Box::new(m.stale_finishes.clone()),
            Box::new(m.reaped_runs.clone()),
            Box::new(m.quarantined_runs.clone()),
            Box::new(m.repushed_runs.clone()),
            Box::new(m.isolated_runs.clone()),
            Box::new(m.stepped_aside.clone()),
            Box::new(m.worker_restarts.clone()),
            Box::new(m.rate_limit_waits.clone()),
            Box::new(m.provider_slot_deferrals.clone()),
            Box::new(m.queue_depth.clone()),
            Box::new(m.runs_pending.clone()),
            Box::new(m.runs_running.clone()),
            Box::new(m.disabled_integrations.clone()),
            Box::new(m.history_deleted_runs.clone()),
            Box::new(m.history_rolled_up_hours.clone()),
            Box::new(m.history_watermark.clone()),
            Box::new(m.console_streams.clone()),
            Box::new(m.deliveries.clone()),
            Box::new(m.stale_integrations.clone()),
            Box::new(m.max_staleness.clone()),
            Box::new(m.deliveries_pending.clone()),
            Box::new(m.oldest_pending_delivery.clone()),
            Box::new(m.pushes.clone()),
            Box::new(m.outbox_pending.clone()),
            Box::new(m.outbox_oldest_pending.clone()),
            Box::new(m.outbox_failed.clone()),
            Box::new(m.open_conflicts.clone()),
            Box::new(m.inbound_webhooks.clone()),
        ];
        for outcome in INBOUND_WEBHOOK_OUTCOMES {
            m.inbound_webhooks.with_label_values(&[outcome]);
        }
        for c in collectors {
            // Names are unique constants; a failure here would be a programming error
            // caught by the first test, so it is logged rather than panicking.
            if let Err(e) = m.registry.register(c) {
                tracing::error!(error = %e, "metric registration failed");
            }
        }
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric())
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric())
}

#[allow(clippy::panic)]
fn unreachable_metric<T>() -> T {
    // Only reachable with an invalid constant metric name.
    panic!("invalid metric definition")
}
