//! Per-provider concurrency caps across the fleet (`SYNCFLEET_PROVIDER_CONCURRENCY`).
//!
//! Some sources care less about the request rate than about how many exports run at
//! once. A capped provider hands out at most `cap` slots at a time. With Redis the slots
//! are a sorted set of holder tokens scored by their expiry (Redis clock): a holder
//! renews its slot like a run lease, so the slot of a killed worker frees itself when
//! its lease runs out, and acquire/renew are Lua scripts so that counting and taking are
//! one atomic step. The embedded mode has one process, so a tokio `Semaphore` per
//! provider does the same. A [`Slot`] gives itself back when dropped, whatever ended the
//! run (success, error, timeout, lost lease, panic, shutdown).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use entity::ConnectorKind;
use redis::aio::ConnectionManager;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Parses `kind=N` pairs, comma-separated (`google_sheets=4,http_json=10`).
pub fn parse_caps(text: &str) -> Result<HashMap<ConnectorKind, u32>, String> {
    let mut out = HashMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("`{part}` is not like google_sheets=4 (a kind and a cap above 0)");
        let (kind, cap) = part.split_once('=').ok_or_else(bad)?;
        let kind: ConnectorKind =
            serde_json::from_value(serde_json::Value::String(kind.trim().into()))
                .map_err(|_| bad())?;
        let cap: u32 = cap.trim().parse().map_err(|_| bad())?;
        if cap == 0 {
            return Err(bad());
        }
        out.insert(kind, cap);
    }
    Ok(out)
}

/// When a run that found no free slot comes back: around `base` (the inline wait), with
/// jitter so that runs deferred together do not all return at the same moment.
pub fn retry_when_busy(base: Duration) -> Duration {
    let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(2);
    Duration::from_millis(rand::random_range(ms / 2..=ms + ms / 2))
}

/// The slot set of `provider` under `base` (the queue's `{prefix:sync}`, so it shares the
/// queue's hash slot: docs/architecture.md §5.7).
pub(crate) fn slots_key(base: &str, provider: &str) -> String {
    format!("{base}:rl:slots:{provider}")
}

/// Drops expired holders, then takes a slot if fewer than the cap are held.
/// KEYS[1] the set; ARGV: cap, ttl ms, holder token. Returns 1 when taken.
pub(crate) const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], tonumber(last[2]) - now + 1000)
return 1
";

/// Extends a held slot. A holder still in the set has not been counted out by any
/// acquire (they purge expired holders first), so extending it is safe even past its
/// score. KEYS[1] the set; ARGV: ttl ms, holder token. Returns 0 when the slot is gone.
pub(crate) const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], tonumber(last[2]) - now + 1000)
return 1
";

/// Polling for a Redis slot starts at this interval and doubles up to `MAX_POLL`.
const FIRST_POLL: Duration = Duration::from_millis(20);
const MAX_POLL: Duration = Duration::from_millis(250);

/// Hands out provider slots; kinds without a cap are not limited.
#[derive(Clone)]
pub struct Slots {
    caps: Arc<HashMap<ConnectorKind, u32>>,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Redis {
        conn: ConnectionManager,
        prefix: String,
    },
    /// One semaphore per provider key; a std `Mutex` is fine here because it is never
    /// held across an `.await` (only to look up or insert the semaphore).
    Local(Arc<Mutex<HashMap<String, Arc<Semaphore>>>>),
}

impl Slots {
    pub fn redis(conn: ConnectionManager, prefix: &str, caps: HashMap<ConnectorKind, u32>) -> Self {
        Self {
            caps: Arc::new(caps),
            backend: Backend::Redis {
                conn,
                prefix: prefix.to_owned(),
            },
        }
    }

    pub fn local(caps: HashMap<ConnectorKind, u32>) -> Self {
        Self {
            caps: Arc::new(caps),
            backend: Backend::Local(Arc::default()),
        }
    }

    /// A slot for `provider`, waiting up to `wait` for one to free up; `Ok(None)` when
    /// none did. A Redis slot is held for `lease` and renewed every `lease / 3` until the
    /// [`Slot`] is dropped.
    pub async fn acquire(
        &self,
        kind: ConnectorKind,
        provider: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Slot>, redis::RedisError> {
        let Some(&cap) = self.caps.get(&kind) else {
            return Ok(Some(Slot(Held::Free)));
        };
        match &self.backend {
            Backend::Local(sems) => {
                let sem = {
                    let Ok(mut map) = sems.lock() else {
                        return Ok(Some(Slot(Held::Free)));
                    };
                    map.entry(provider.to_owned())
                        .or_insert_with(|| {
                            Arc::new(Semaphore::new(usize::try_from(cap).unwrap_or(1)))
                        })
                        .clone()
                };
                Ok(tokio::time::timeout(wait, sem.acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|p| Slot(Held::Local(p))))
            }
            Backend::Redis { conn, prefix } => {
                let key = slots_key(prefix, provider);
                let token = uuid::Uuid::new_v4().simple().to_string();
                let ttl_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
                let deadline = Instant::now() + wait;
                let mut poll = FIRST_POLL;
                loop {
                    let mut c = conn.clone();
                    let taken: i64 = redis::Script::new(ACQUIRE)
                        .key(&key)
                        .arg(cap)
                        .arg(ttl_ms)
                        .arg(&token)
                        .invoke_async(&mut c)
                        .await?;
                    if taken == 1 {
                        let renewer = tokio::spawn(renew_loop(
                            conn.clone(),
                            key.clone(),
                            token.clone(),
                            lease,
                        ));
                        return Ok(Some(Slot(Held::Redis {
                            conn: conn.clone(),
                            key,
                            token,
                            renewer,
                        })));
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    tokio::time::sleep(poll.min(left)).await;
                    poll = (poll * 2).min(MAX_POLL);
                }
            }
        }
    }
}

/// Keeps a Redis slot alive at the cadence of the run lease.
async fn renew_loop(conn: ConnectionManager, key: String, token: String, lease: Duration) {
    let every = (lease / 3).max(Duration::from_millis(10));
    let ttl_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
    loop {
        tokio::time::sleep(every).await;
        let mut c = conn.clone();
        let kept: Result<i64, _> = redis::Script::new(RENEW)
            .key(&key)
            .arg(ttl_ms)
            .arg(&token)
            .invoke_async(&mut c)
            .await;
        match kept {
            Ok(1) => {}
            // Expired (the process stalled past its lease): the run goes on, but the cap
            // may be exceeded by one until it ends. Not worth cancelling a fetch for.
            Ok(_) => {
                tracing::warn!("provider concurrency slot expired while held");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "provider concurrency slot renewal failed"),
        }
    }
}

/// A held provider slot; dropping it gives the slot back.
pub struct Slot(Held);

enum Held {
    /// The kind has no cap.
    Free,
    Local(#[allow(dead_code)] OwnedSemaphorePermit),
    Redis {
        conn: ConnectionManager,
        key: String,
        token: String,
        renewer: tokio::task::JoinHandle<()>,
    },
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Held::Redis {
            conn,
            key,
            token,
            renewer,
        } = &mut self.0
        else {
            return;
        };
        renewer.abort();
        // `Drop` cannot await: the release is one short spawned command (at most one per
        // run). Without a runtime (process exit), or if the command fails, the slot
        // expires with its lease instead.
        let (mut c, key, token) = (conn.clone(), std::mem::take(key), std::mem::take(token));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let released: Result<i64, _> = redis::cmd("ZREM")
                    .arg(&key)
                    .arg(&token)
                    .query_async(&mut c)
                    .await;
                if let Err(e) = released {
                    tracing::warn!(error = %e, "provider concurrency slot release failed; it expires with its lease");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_caps() {
        let c = parse_caps("google_sheets=4, http_json=10").unwrap();
        assert_eq!(c[&ConnectorKind::GoogleSheets], 4);
        assert_eq!(c[&ConnectorKind::HttpJson], 10);
        assert!(parse_caps("").unwrap().is_empty());
        for bad in [
            "ftp=1",
            "http_json=0",
            "http_json",
            "http_json=-1",
            "http_json=x",
        ] {
            assert!(parse_caps(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn local_slots_cap_and_free_on_drop() {
        let slots = Slots::local(parse_caps("http_json=2").unwrap());
        let (k, lease, short) = (
            ConnectorKind::HttpJson,
            Duration::from_secs(10),
            Duration::from_millis(20),
        );
        let a = slots.acquire(k, "p", lease, short).await.unwrap();
        let b = slots.acquire(k, "p", lease, short).await.unwrap();
        assert!(a.is_some() && b.is_some());
        assert!(slots.acquire(k, "p", lease, short).await.unwrap().is_none());
        assert!(
            slots
                .acquire(k, "other", lease, short)
                .await
                .unwrap()
                .is_some(),
            "another provider has its own slots"
        );
        assert!(
            slots
                .acquire(ConnectorKind::Csv, "p", lease, short)
                .await
                .unwrap()
                .is_some(),
            "an uncapped kind"
        );
        drop(a);
        assert!(slots.acquire(k, "p", lease, short).await.unwrap().is_some());
    }
}
