//! The retry / backoff / disable state machine, as pure functions.
//!
//! The finish transaction reads the integration's state, asks [`decide`] what follows
//! from the run's outcome and writes the answer. Keeping the decision pure lets a
//! property test drive it through arbitrary success/failure/crash sequences.

use std::time::Duration;

use entity::{ErrorClass, HealthState, Trigger};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Backoff and disable settings (docs/architecture.md §4.6, §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(60),
            cap: Duration::from_secs(30 * 60),
        }
    }
}

/// What the integration looks like when a run of it finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntegrationState {
    pub id: Uuid,
    pub retry_count: i32,
    pub max_retries: i32,
    pub interval_secs: Option<i64>,
    /// `false` when paused by a user or disabled by the system while the run was live.
    pub sync_enabled: bool,
    pub health: HealthState,
    /// A manual trigger arrived while the run was live.
    pub followup_requested: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(ErrorClass),
    /// The provider asked us to wait this long; not a failure.
    RateLimited {
        wait: Duration,
    },
}

/// The integration's state after the run, as offsets from the database's `now()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub retry_count: i32,
    pub sync_enabled: bool,
    pub health: HealthState,
    /// Delay from now until the next run; `None` = not scheduled.
    pub next_in: Option<Duration>,
    pub next_trigger: Trigger,
    /// The system disabled the integration: write an audit event.
    pub disabled_now: bool,
    pub success: bool,
}

/// `min(cap, base · 2^(n-1))` for the n-th consecutive failure (n ≥ 1).
pub fn backoff_base(policy: RetryPolicy, n: i32) -> Duration {
    let exp = u32::try_from(n.max(1) - 1).unwrap_or(0).min(30);
    policy.base.saturating_mul(1u32 << exp).min(policy.cap)
}

/// The backoff delay including jitter: `backoff_base(n) + j` with `0 ≤ j < backoff_base(n)/10`,
/// deterministic in `(integration, n)` so a replayed decision gives the same answer.
pub fn backoff(policy: RetryPolicy, id: Uuid, n: i32) -> Duration {
    let d = backoff_base(policy, n);
    d + spread(id, n as u64, d / 10)
}

/// Next run after a success: `interval − j`, with `0 ≤ j < min(interval/10, 60 s)` a
/// deterministic per-integration phase. Subtracting (rather than adding) the jitter keeps
/// the promise "synced at least every interval" while integrations created together drift
/// apart instead of firing in one burst forever.
pub fn next_after_success(id: Uuid, interval: Duration) -> Duration {
    let window = (interval / 10).min(Duration::from_secs(60));
    interval - spread(id, 0, window)
}

/// A deterministic value in `[0, window)` derived from the integration id and a salt.
fn spread(id: Uuid, salt: u64, window: Duration) -> Duration {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    if window_ms == 0 {
        return Duration::ZERO;
    }
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update(salt.to_le_bytes());
    let digest = h.finalize();
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&digest[..8]);
    Duration::from_millis(u64::from_le_bytes(eight) % window_ms)
}

/// Health after `retry_count` consecutive failures out of `max_retries`.
pub fn health_for(retry_count: i32, max_retries: i32) -> HealthState {
    if retry_count <= 0 {
        HealthState::Healthy
    } else if retry_count + 1 >= max_retries {
        HealthState::AtRisk
    } else {
        HealthState::Degraded
    }
}

/// Decides the integration's next state from a finished run.
pub fn decide(policy: RetryPolicy, s: IntegrationState, outcome: Outcome) -> Decision {
    // A user's pause (or an earlier disable) wins over whatever the run says about scheduling.
    let keep_control_state = !s.sync_enabled;
    let scheduled = |d: Decision| -> Decision {
        if keep_control_state {
            Decision {
                next_in: None,
                sync_enabled: false,
                health: s.health,
                ..d
            }
        } else {
            d
        }
    };
    let followup = s.followup_requested && s.sync_enabled;
    match outcome {
        Outcome::Success => {
            let next_in = if followup {
                Some(Duration::ZERO)
            } else {
                s.interval_secs
                    .map(|secs| next_after_success(s.id, secs_to_duration(secs)))
            };
            scheduled(Decision {
                retry_count: 0,
                sync_enabled: true,
                health: HealthState::Healthy,
                next_in,
                next_trigger: if followup {
                    Trigger::Manual
                } else {
                    Trigger::Schedule
                },
                disabled_now: false,
                success: true,
            })
        }
        Outcome::RateLimited { wait } => scheduled(Decision {
            retry_count: s.retry_count,
            sync_enabled: true,
            health: s.health,
            next_in: Some(wait),
            next_trigger: if s.retry_count > 0 {
                Trigger::Retry
            } else {
                Trigger::Schedule
            },
            disabled_now: false,
            success: false,
        }),
        Outcome::Failure(class) => {
            let retry_count = s.retry_count.saturating_add(1);
            let fatal = matches!(class, ErrorClass::Config | ErrorClass::Auth);
            if fatal || retry_count >= s.max_retries {
                return Decision {
                    retry_count,
                    sync_enabled: false,
                    health: if keep_control_state && s.health == HealthState::Paused {
                        HealthState::Paused
                    } else {
                        HealthState::Disabled
                    },
                    next_in: None,
                    next_trigger: Trigger::Schedule,
                    disabled_now: s.sync_enabled,
                    success: false,
                };
            }
            scheduled(Decision {
                retry_count,
                sync_enabled: true,
                health: health_for(retry_count, s.max_retries),
                next_in: Some(backoff(policy, s.id, retry_count)),
                next_trigger: Trigger::Retry,
                disabled_now: false,
                success: false,
            })
        }
    }
}

fn secs_to_duration(secs: i64) -> Duration {
    Duration::from_secs(u64::try_from(secs.max(1)).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(retry_count: i32) -> IntegrationState {
        IntegrationState {
            id: Uuid::nil(),
            retry_count,
            max_retries: 3,
            interval_secs: Some(300),
            sync_enabled: true,
            health: HealthState::Healthy,
            followup_requested: false,
        }
    }

    #[test]
    fn default_backoff_is_one_two_four_minutes() {
        let p = RetryPolicy::default();
        assert_eq!(backoff_base(p, 1), Duration::from_secs(60));
        assert_eq!(backoff_base(p, 2), Duration::from_secs(120));
        assert_eq!(backoff_base(p, 3), Duration::from_secs(240));
        assert_eq!(backoff_base(p, 30), Duration::from_secs(1800));
    }

    #[test]
    fn third_failure_disables() {
        let p = RetryPolicy::default();
        let d = decide(p, state(2), Outcome::Failure(ErrorClass::Transient));
        assert!(!d.sync_enabled);
        assert!(d.disabled_now);
        assert_eq!(d.health, HealthState::Disabled);
        assert_eq!(d.next_in, None);
    }

    #[test]
    fn auth_and_config_disable_at_once() {
        for class in [ErrorClass::Auth, ErrorClass::Config] {
            let d = decide(RetryPolicy::default(), state(0), Outcome::Failure(class));
            assert!(d.disabled_now, "{class:?}");
        }
    }

    #[test]
    fn rate_limited_does_not_count() {
        let wait = Duration::from_secs(7);
        let d = decide(
            RetryPolicy::default(),
            state(1),
            Outcome::RateLimited { wait },
        );
        assert_eq!(d.retry_count, 1);
        assert_eq!(d.next_in, Some(wait));
        assert!(d.sync_enabled);
    }

    #[test]
    fn paused_integration_is_not_rescheduled() {
        let mut s = state(0);
        s.sync_enabled = false;
        s.health = HealthState::Paused;
        let d = decide(RetryPolicy::default(), s, Outcome::Success);
        assert_eq!(d.next_in, None);
        assert_eq!(d.health, HealthState::Paused);
        assert!(!d.sync_enabled);
    }
}
