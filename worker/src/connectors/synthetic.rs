//! The `synthetic` connector: deterministic records with configurable size, latency and
//! failure pattern. It drives the demo, the tests and the benchmarks, so it must behave
//! exactly as configured and cost nothing beyond what it is asked to simulate.

use std::time::Duration;

use async_trait::async_trait;
use entity::ErrorClass;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Connector, FetchContext, FetchError, Fetched, FieldError, SourceRecord};

/// Largest `records` a synthetic run may produce.
const MAX_RECORDS: u64 = 1_000_000;
/// Longest simulated latency.
const MAX_LATENCY_MS: u64 = 600_000;
/// Most failing first runs.
const MAX_FAIL_FIRST: u64 = 1_000_000;
/// Longest simulated `Retry-After` (one day).
const MAX_RETRY_AFTER_MS: u64 = 86_400_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    #[serde(default = "default_records")]
    records: u64,
    #[serde(default)]
    latency_ms: u64,
    /// Fail the first k runs of the integration (counted over all its runs).
    #[serde(default)]
    fail_first: u64,
    #[serde(default)]
    fail_always: bool,
    #[serde(default = "default_error_class")]
    error_class: String,
    /// For `rate_limited` failures: the provider's requested wait.
    #[serde(default = "default_retry_after")]
    retry_after_ms: u64,
    /// Abort the whole worker process while running (simulates a run that kills its
    /// worker: OOM, segfault in a driver). Used by the poison-run test.
    #[serde(default)]
    crash_process: bool,
    /// Panic while running (simulates a bug in a connector).
    #[serde(default)]
    panic: bool,
}

fn default_records() -> u64 {
    10
}
fn default_error_class() -> String {
    "transient".into()
}
fn default_retry_after() -> u64 {
    1000
}

/// A connector that makes up its data.
#[derive(Debug, Clone)]
pub struct Synthetic {
    records: u64,
    latency: Duration,
    fail_first: u64,
    fail_always: bool,
    error_class: ErrorClass,
    retry_after: Duration,
    crash_process: bool,
    panic: bool,
}

impl Synthetic {
    pub fn from_config(config: &Value) -> Result<Self, Vec<FieldError>> {
        let c: Config = serde_json::from_value(config.clone())
            .map_err(|e| vec![FieldError::new("config", e.to_string())])?;
        let mut errors = Vec::new();
        if c.records > MAX_RECORDS {
            errors.push(FieldError::new(
                "config.records",
                format!("must be at most {MAX_RECORDS}"),
            ));
        }
        if c.latency_ms > MAX_LATENCY_MS {
            errors.push(FieldError::new(
                "config.latencyMs",
                format!("must be at most {MAX_LATENCY_MS}"),
            ));
        }
        if c.fail_first > MAX_FAIL_FIRST {
            errors.push(FieldError::new(
                "config.failFirst",
                format!("must be at most {MAX_FAIL_FIRST}"),
            ));
        }
        if c.retry_after_ms > MAX_RETRY_AFTER_MS {
            errors.push(FieldError::new(
                "config.retryAfterMs",
                format!("must be at most {MAX_RETRY_AFTER_MS}"),
            ));
        }
        let error_class = match ErrorClass::parse(&c.error_class) {
            Some(ErrorClass::WorkerLost | ErrorClass::Internal) | None => {
                errors.push(FieldError::new(
                    "config.errorClass",
                    "must be one of transient, rate_limited, auth, config, source_data, timeout",
                ));
                ErrorClass::Transient
            }
            Some(class) => class,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            records: c.records,
            latency: Duration::from_millis(c.latency_ms),
            fail_first: c.fail_first,
            fail_always: c.fail_always,
            error_class,
            retry_after: Duration::from_millis(c.retry_after_ms),
            crash_process: c.crash_process,
            panic: c.panic,
        })
    }
}

#[async_trait]
impl Connector for Synthetic {
    fn wants_run_count(&self) -> bool {
        self.fail_first > 0
    }

    async fn fetch(&self, ctx: &FetchContext) -> Result<Fetched, FetchError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.panic {
            panic!("synthetic connector configured to panic");
        }
        if self.crash_process {
            tracing::error!(integration.id = %ctx.integration_id, "synthetic connector configured to crash its worker process");
            std::process::abort();
        }
        let prior = u64::try_from(ctx.previous_runs).unwrap_or(0);
        if self.fail_always || prior < self.fail_first {
            let mut err = FetchError::new(
                self.error_class,
                format!("synthetic failure (run {} of the integration)", prior + 1),
            );
            if self.error_class == ErrorClass::RateLimited {
                err.retry_after = Some(self.retry_after);
            }
            return Err(err);
        }
        let records = (0..self.records)
            .map(|i| {
                SourceRecord::new(
                    format!("syn-{i}"),
                    &json!({ "id": i, "name": format!("item {i}"), "value": i * 7 % 100 }),
                )
            })
            .collect();
        Ok(Fetched {
            records,
            full: true,
            watermark: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_fields_and_bad_classes() {
        assert!(Synthetic::from_config(&json!({ "nope": 1 })).is_err());
        let errs = Synthetic::from_config(&json!({ "errorClass": "bogus", "records": 5_000_000 }))
            .err()
            .unwrap_or_default();
        assert_eq!(errs.len(), 2);
    }
}
