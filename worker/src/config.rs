//! The time constants and limits of the run protocol.
//!
//! Every one of them is configurable (docs/architecture.md §9) so that tests and
//! benchmarks can compress time; the defaults are the production values.

use std::time::Duration;

use crate::protocol::policy::RetryPolicy;

#[derive(Debug, Clone)]
pub struct ProtocolConfig {
    /// Longest sleep of the scheduler between ticks (it wakes earlier for the next due run).
    pub scheduler_tick: Duration,
    /// Most runs one scheduler tick creates.
    pub max_runs_per_tick: u64,
    /// Queue depth above which the scheduler stops creating runs until workers catch up.
    pub max_queue_depth: u64,
    /// A claimed run's lease; renewed every `lease / 3` while it runs.
    pub lease: Duration,
    /// How often expired leases are reaped.
    pub reaper_period: Duration,
    /// PENDING runs whose last push is older than this are pushed again.
    pub reenqueue_after: Duration,
    pub retry: RetryPolicy,
    /// Default `max_retries` of a new integration.
    pub max_retries: i32,
    /// A run claimed this many times without finishing is failed as `worker_lost`.
    pub max_claims: i32,
    /// Runs one worker process executes at once.
    pub worker_concurrency: usize,
    /// Longest a run may take before it fails as `timeout`.
    pub run_timeout: Duration,
    /// Bounded drain on shutdown: in-flight runs still going after this are released.
    pub shutdown_grace: Duration,
    /// How often an idle worker asks the queue for work.
    pub poll_interval: Duration,
    /// Completed queue entries older than this are removed from the queue backend.
    pub queue_retention: Duration,
    /// Webhook deliveries (docs/architecture.md §4.16).
    pub notify: NotifyConfig,
}

/// How webhook deliveries are attempted and retried.
#[derive(Debug, Clone, Copy)]
pub struct NotifyConfig {
    /// One attempt's HTTP timeout (`SYNCFLEET_NOTIFY_TIMEOUT_MS`).
    pub timeout: Duration,
    /// A delivery is retried until this long after its event (`SYNCFLEET_NOTIFY_RETRY_WINDOW`).
    pub retry_window: Duration,
    /// Backoff between attempts (`SYNCFLEET_NOTIFY_BACKOFF_BASE_MS`, `…_CAP_MS`), the
    /// run protocol's policy with its jitter.
    pub backoff: RetryPolicy,
    /// An endpoint is disabled after this many consecutive failed deliveries
    /// (`SYNCFLEET_NOTIFY_DISABLE_AFTER`).
    pub disable_after: i32,
    /// How often the delivery pump pushes due deliveries and looks for breached
    /// freshness objectives (`SYNCFLEET_NOTIFY_PUMP_MS`).
    pub pump_period: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retry_window: Duration::from_secs(24 * 3600),
            backoff: RetryPolicy {
                base: Duration::from_secs(5),
                cap: Duration::from_secs(3600),
            },
            disable_after: 10,
            pump_period: Duration::from_millis(250),
        }
    }
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self {
            scheduler_tick: Duration::from_millis(1000),
            max_runs_per_tick: 1000,
            max_queue_depth: 5000,
            lease: Duration::from_millis(60_000),
            reaper_period: Duration::from_millis(10_000),
            reenqueue_after: Duration::from_millis(120_000),
            retry: RetryPolicy::default(),
            max_retries: 3,
            max_claims: 3,
            worker_concurrency: 16,
            run_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(20),
            poll_interval: Duration::from_millis(20),
            queue_retention: Duration::from_secs(3600),
            notify: NotifyConfig::default(),
        }
    }
}

/// Milliseconds as the `i64` the SQL binds expect.
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
