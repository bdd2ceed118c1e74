//! What every handler and background loop shares.

use std::num::NonZeroU32;
use std::sync::Arc;

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
}

pub type KeyLimiter = RateLimiter<Uuid, DefaultKeyedStateStore<Uuid>, DefaultClock>;

pub fn key_limiter(per_sec: u32, burst: u32) -> Arc<KeyLimiter> {
    let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(per_sec);
    Arc::new(RateLimiter::keyed(
        Quota::per_second(per_sec).allow_burst(burst),
    ))
}
