//! A short-lived cache of authenticated keys, so a hot read path does not pay a
//! database round trip for the key on every request.
//!
//! Entries live `TTL`; a revocation through this process clears the cache at once, and
//! other API replicas honour it within `TTL`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Caller;

/// How long another replica may keep accepting a key revoked elsewhere.
pub const TTL: Duration = Duration::from_secs(2);
/// Bound on entries (cleared wholesale when reached).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct AuthCache {
    // A std mutex: held only for a map lookup or insert, never across `.await`.
    entries: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl AuthCache {
    pub fn get(&self, key_hash: &str) -> Option<Caller> {
        let map = self.entries.lock().ok()?;
        map.get(key_hash)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(c, _)| c.clone())
    }

    pub fn put(&self, key_hash: String, caller: Caller) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(key_hash, (caller, Instant::now()));
        }
    }

    pub fn clear(&self) {
        if let Ok(mut map) = self.entries.lock() {
            map.clear();
        }
    }
}
