//! A short-lived cache of authenticated keys, so a hot read path does not pay a
//! database round trip for the key on every request.
//!
//! Revocation must not wait for entries to expire, on any replica:
//! - the replica that revokes clears its cache at once;
//! - on PostgreSQL the revocation also sends `NOTIFY` (in its transaction), and every
//!   replica [`listen`]s and clears its cache when the notification arrives — within
//!   milliseconds of the commit;
//! - a replica whose notification connection is down (or not up yet) caches nothing:
//!   every request looks its key up, so it sees a revocation on the next request;
//! - a lookup that raced with a revocation is not cached (a generation counter).
//!
//! `TTL` only bounds how long an entry lives otherwise.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;

/// How long a verified key stays cached.
pub const TTL: Duration = Duration::from_secs(2);
/// Bound on entries (cleared wholesale when reached).
const MAX_ENTRIES: usize = 10_000;
/// The PostgreSQL channel revocations are notified on.
pub const CHANNEL: &str = "syncfleet_api_keys";

pub struct AuthCache {
    // A std mutex: held only for a map lookup or insert, never across `.await`.
    entries: Mutex<HashMap<String, (Caller, Instant)>>,
    /// Whether revocations elsewhere reach this cache (always, in one process on
    /// SQLite; on PostgreSQL while the notification listener is connected).
    trusted: AtomicBool,
    /// Bumped by every clear: a lookup that started before one is not cached.
    generation: AtomicU64,
}

impl Default for AuthCache {
    fn default() -> Self {
        Self::new(true)
    }
}

impl AuthCache {
    /// `trusted`: whether entries may be served before a listener says so.
    pub fn new(trusted: bool) -> Self {
        Self {
            entries: Mutex::default(),
            trusted: AtomicBool::new(trusted),
            generation: AtomicU64::new(0),
        }
    }

    /// The generation to pass to [`AuthCache::put`] after a lookup started now.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn get(&self, key_hash: &str) -> Option<Caller> {
        if !self.trusted.load(Ordering::SeqCst) {
            return None;
        }
        let map = self.entries.lock().ok()?;
        map.get(key_hash)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(c, _)| c.clone())
    }

    /// Caches a key looked up while the cache was at `generation`; nothing is cached
    /// if a revocation cleared it since (the lookup may predate the revocation).
    pub fn put(&self, key_hash: String, caller: Caller, generation: u64) {
        if !self.trusted.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(mut map) = self.entries.lock() {
            if self.generation.load(Ordering::SeqCst) != generation {
                return;
            }
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(key_hash, (caller, Instant::now()));
        }
    }

    pub fn clear(&self) {
        if let Ok(mut map) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            map.clear();
        } else {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn set_trusted(&self, on: bool) {
        self.clear();
        self.trusted.store(on, Ordering::SeqCst);
    }
}

/// Keeps `cache` in step with revocations made by any replica (PostgreSQL only), until
/// `shutdown`. While it is not listening the cache serves nothing.
pub async fn listen(cache: Arc<AuthCache>, db: DatabaseConnection, shutdown: CancellationToken) {
    use sea_orm::sqlx::postgres::PgListener;
    let pool = db.get_postgres_connection_pool().clone();
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        cache.set_trusted(false);
        let connected = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            r = connected => match r {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for API key revocations; keys are not cached");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        backoff = Duration::from_millis(100);
        cache.set_trusted(true);
        loop {
            tokio::select! {
                r = listener.try_recv() => match r {
                    Ok(Some(_)) => cache.clear(),
                    // Reconnected: notifications of the gap are lost.
                    Ok(None) => cache.clear(),
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the API key revocation listener; keys are not cached until it is back");
                        break;
                    }
                },
                () = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use entity::Role;
    use uuid::Uuid;

    use super::*;

    fn caller() -> Caller {
        Caller {
            key_id: Uuid::now_v7(),
            key_name: "test".into(),
            workspace_id: None,
            role: Role::Viewer,
        }
    }

    #[test]
    fn a_lookup_that_raced_a_revocation_is_not_cached() {
        let c = AuthCache::new(true);
        let g = c.generation();
        c.clear(); // a revocation while the lookup ran
        c.put("h".into(), caller(), g);
        assert!(c.get("h").is_none());
        let g = c.generation();
        c.put("h".into(), caller(), g);
        assert!(c.get("h").is_some());
        // An untrusted cache serves nothing.
        let u = AuthCache::new(false);
        u.put("h".into(), caller(), u.generation());
        assert!(u.get("h").is_none());
    }
}
