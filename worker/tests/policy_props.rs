//! Property test of the retry / backoff / disable state machine over random
//! success / failure / rate-limit / crash sequences.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use entity::{ErrorClass, HealthState};
use proptest::prelude::*;
use syncfleet_worker::protocol::policy::{
    IntegrationState, Outcome, RetryPolicy, backoff_base, decide,
};
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Event {
    Success,
    Fail(ErrorClass),
    RateLimited(u64),
    /// A worker died mid-run and the run was reclaimed: no decision is taken for it.
    CrashReclaimed,
    /// The run exhausted its claims: it fails as `worker_lost`.
    Poison,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => Just(Event::Success),
        4 => Just(Event::Fail(ErrorClass::Transient)),
        1 => Just(Event::Fail(ErrorClass::Timeout)),
        1 => Just(Event::Fail(ErrorClass::SourceData)),
        1 => Just(Event::Fail(ErrorClass::Auth)),
        1 => Just(Event::Fail(ErrorClass::Config)),
        2 => (1u64..600_000).prop_map(Event::RateLimited),
        2 => Just(Event::CrashReclaimed),
        1 => Just(Event::Poison),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn retry_state_machine_holds_its_invariants(
        events in prop::collection::vec(event(), 1..60),
        max_retries in 1i32..6,
        interval_secs in prop::option::of(1i64..100_000),
        base_ms in 1u64..120_000,
        cap_factor in 1u32..64,
        seed in any::<u128>(),
    ) {
        let policy = RetryPolicy { base: Duration::from_millis(base_ms), cap: Duration::from_millis(base_ms) * cap_factor };
        let mut s = IntegrationState {
            id: Uuid::from_u128(seed),
            retry_count: 0,
            max_retries,
            interval_secs,
            sync_enabled: true,
            health: HealthState::Healthy,
            followup_requested: false,
        };
        // Milliseconds since the start, by the database clock.
        let mut now: u128 = 0;
        let mut next_sync_at: Option<u128> = Some(0);
        let mut consecutive_failures = 0i32;
        for ev in events {
            if !s.sync_enabled {
                // Disabled: nothing runs any more.
                break;
            }
            // The run starts at (or after) its slot.
            if let Some(n) = next_sync_at {
                now = now.max(n);
            }
            let outcome = match ev {
                Event::CrashReclaimed => continue,
                Event::Success => Outcome::Success,
                Event::Fail(c) => Outcome::Failure(c),
                Event::Poison => Outcome::Failure(ErrorClass::WorkerLost),
                Event::RateLimited(ms) => Outcome::RateLimited { wait: Duration::from_millis(ms) },
            };
            now += 7; // the run takes a little time
            let d = decide(policy, s, outcome);
            match outcome {
                Outcome::Success => {
                    consecutive_failures = 0;
                    prop_assert_eq!(d.retry_count, 0);
                    prop_assert_eq!(d.health, HealthState::Healthy);
                    match interval_secs {
                        None => prop_assert_eq!(d.next_in, None),
                        Some(i) => {
                            let iv = Duration::from_secs(i as u64);
                            let next = d.next_in.expect("scheduled");
                            let lo = iv - (iv / 10).min(Duration::from_secs(60));
                            prop_assert!(next <= iv && next >= lo, "success delay {:?} outside [{:?}, {:?}]", next, lo, iv);
                        }
                    }
                }
                Outcome::RateLimited { wait } => {
                    prop_assert_eq!(d.retry_count, s.retry_count, "rate limiting counted as a failure");
                    prop_assert_eq!(d.next_in, Some(wait));
                    prop_assert!(d.sync_enabled);
                }
                Outcome::Failure(class) => {
                    consecutive_failures += 1;
                    prop_assert_eq!(d.retry_count, consecutive_failures);
                    let fatal = matches!(class, ErrorClass::Auth | ErrorClass::Config);
                    if fatal || d.retry_count >= max_retries {
                        prop_assert!(!d.sync_enabled && d.disabled_now);
                        prop_assert_eq!(d.health, HealthState::Disabled);
                        prop_assert_eq!(d.next_in, None);
                    } else {
                        prop_assert!(d.sync_enabled);
                        let b = backoff_base(policy, d.retry_count);
                        let next = d.next_in.expect("retry scheduled");
                        prop_assert!(next >= b && next <= b + b / 10, "backoff {:?} outside [{:?}, {:?}]", next, b, b + b / 10);
                        prop_assert!(b <= policy.cap);
                    }
                }
            }
            // Attempts never exceed the maximum; disabled exactly at it (or on a fatal class).
            prop_assert!(d.retry_count <= max_retries);
            if d.retry_count == max_retries {
                prop_assert!(!d.sync_enabled);
            }
            // next_sync_at never moves backwards.
            let new_next = d.next_in.map(|x| now + x.as_millis());
            if let (Some(old), Some(new)) = (next_sync_at, new_next) {
                prop_assert!(new >= old, "next_sync_at moved backwards: {} -> {}", old, new);
            }
            if new_next.is_some() {
                next_sync_at = new_next;
            }
            s.retry_count = d.retry_count;
            s.sync_enabled = d.sync_enabled;
            s.health = d.health;
        }
    }
}
