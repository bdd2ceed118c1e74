//! What every handler and background loop shares.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use uuid::Uuid;

use sea_orm::DatabaseConnection;
use syncfleet_worker::Queue;
use syncfleet_worker::metrics::Metrics;
use tokio::sync::Notify;

use crate::config::Config;

#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub queue: Queue,
    pub metrics: Metrics,
    pub config: Arc<Config>,
    /// Wakes the scheduler early (an integration became due now).
    pub scheduler_wake: Arc<Notify>,
    /// Per-API-key request limiter (GCRA, in process).
    pub limiter: Arc<KeyLimiter>,
    pub auth_cache: Arc<crate::auth_cache::AuthCache>,
    /// Hashes API keys for lookup (`None` in a worker's side server, which serves no
    /// authenticated route).
    pub key_hasher: Option<Arc<crate::keyhash::KeyHasher>>,
    /// Budget of unknown-key requests per client address.
    pub address_guard: Arc<AddressGuard>,
    /// The web console's change feed (server-sent events).
    pub live: Arc<crate::console::live::Live>,
    /// The providers' fleet-wide limits, for fetches made here (the console's Test
    /// connection; the embedded worker shares it, so in-process buckets are one).
    pub providers: syncfleet_worker::ratelimit::Limiter,
}

impl AppState {
    /// The lease in whole seconds (at least 1): the default freshness objective is twice
    /// the interval plus it.
    pub fn lease_secs(&self) -> i64 {
        i64::try_from(self.config.protocol.lease.as_secs().max(1)).unwrap_or(60)
    }
}

/// Limits the requests with unknown keys per client address: each costs a database
/// lookup, so past the budget an address gets 429 *before* any lookup of a key it has
/// not verified recently, until its wait is over. Keys verified recently are never
/// limited by it.
pub struct AddressGuard {
    limiter: RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>,
    // std mutexes: held only for a map lookup or insert, never across `.await`.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// Hashes of keys verified recently: still looked up from a blocked address (a
    /// client sharing an address with a guesser keeps working; a guess never gets in).
    known: Mutex<HashMap<String, Instant>>,
}

/// How long a verified key stays exempt from its address's block.
const KNOWN_FOR: Duration = Duration::from_secs(3600);

/// Bound on the addresses remembered (forgotten wholesale beyond it).
const MAX_ADDRESSES: usize = 100_000;

impl AddressGuard {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(per_sec);
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_sec).allow_burst(burst)),
            blocked: Mutex::default(),
            known: Mutex::default(),
        }
    }

    /// How long a lookup of `key_hash` from `ip` must wait, if it may not be made now:
    /// the address is blocked and the key was not verified recently.
    pub fn refused(&self, ip: IpAddr, key_hash: &str) -> Option<Duration> {
        let wait = self.blocked(ip)?;
        let known = self
            .known
            .lock()
            .ok()
            .and_then(|m| m.get(key_hash).copied())
            .is_some_and(|at| at.elapsed() < KNOWN_FOR);
        (!known).then_some(wait)
    }

    /// Remembers a key that was just verified.
    pub fn verified(&self, key_hash: &str) {
        if let Ok(mut map) = self.known.lock() {
            if map.len() >= MAX_ADDRESSES {
                map.clear();
            }
            map.insert(key_hash.to_owned(), Instant::now());
        }
    }

    /// How long `ip` must still wait, if it is blocked.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let mut map = self.blocked.lock().ok()?;
        let until = *map.get(&ip)?;
        match until.checked_duration_since(Instant::now()) {
            Some(wait) if !wait.is_zero() => Some(wait),
            _ => {
                map.remove(&ip);
                None
            }
        }
    }

    /// Counts a request of `ip` with an unknown key; past the budget, blocks the
    /// address and returns how long it must wait.
    pub fn failed(&self, ip: IpAddr) -> Option<Duration> {
        if self.limiter.len() > MAX_ADDRESSES {
            self.limiter.retain_recent();
        }
        let not_until = self.limiter.check_key(&ip).err()?;
        let wait = not_until
            .wait_time_from(governor::clock::Clock::now(&DefaultClock::default()))
            .max(Duration::from_millis(1));
        if let Ok(mut map) = self.blocked.lock() {
            if map.len() >= MAX_ADDRESSES {
                map.clear();
            }
            map.insert(ip, Instant::now() + wait);
        }
        Some(wait)
    }
}

pub type KeyLimiter = RateLimiter<Uuid, DefaultKeyedStateStore<Uuid>, DefaultClock>;

pub fn key_limiter(per_sec: u32, burst: u32) -> Arc<KeyLimiter> {
    let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(per_sec);
    Arc::new(RateLimiter::keyed(
        Quota::per_second(per_sec).allow_burst(burst),
    ))
}
