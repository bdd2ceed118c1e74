//! The Redis side of the queue: a sorted set of run ids and the few scripts around it.
//!
//! Why not apalis-redis's storage: four of its behaviours each broke a fault test here
//! (docs/architecture.md §5.8). Its stream ends for good on any Redis error, which drops
//! the runs a worker is driving; its `fetch_next` promotes every due task in one `unpack`
//! and dies past ~8,000 (a re-enqueuer after a worker outage reaches that); its heartbeats
//! and orphan cut-offs use each worker's own clock; finished tasks stay in Redis forever.
//!
//! What this layout guarantees instead:
//! - **At most one entry per run.** `ready` is a sorted set keyed by run id, scored by the
//!   Redis clock at its first push; a push of an id already there changes nothing
//!   (`ZADD NX`), so producers may re-push on a timer and the set stays bounded by the
//!   number of PENDING runs (at most one per integration).
//! - **Bounded work per call.** A fetch pops at most `n` ids (`ZPOPMIN`); a push takes
//!   at most [`PUSH_CHUNK`] ids per script call. Nothing promotes or scans a whole set.
//! - **No acknowledgements.** A popped id is gone from Redis: the database is the truth,
//!   the claim is a compare-and-set, and a PENDING run whose entry was lost (a worker that
//!   died between pop and claim, a flushed Redis) is pushed again by the re-enqueuer.
//! - **One clock.** Scores, heartbeats and the epoch use Redis `TIME`, never a process's.
//! - **One hash slot.** Every key of a queue shares the hash tag `{prefix:queue}`, so the
//!   scripts work on Redis Cluster.
//! - **Wake-ups, not deliveries.** A push that added entries publishes on `wake`; idle
//!   fetchers subscribed to it fetch at once instead of at their next poll. The message
//!   carries nothing: a lost one costs a poll interval, never a run, so there is no hole
//!   to close on shutdown (a blocking pop would hold popped ids in a dropped future).

use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::job::SyncJob;

use super::QueueError;

/// Ids per push script call: bounded work per call whatever the caller passes.
pub const PUSH_CHUNK: usize = 500;
/// Most ids one fetch pops.
pub const FETCH_MAX: usize = 256;

/// The keys of one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    /// `{prefix:queue}`: also the namespace the rate limiter keys live under.
    pub base: String,
    ready: String,
    workers: String,
    epoch: String,
    /// The pub/sub channel pushes announce themselves on (not a key: it holds nothing).
    pub wake: String,
}

impl Keys {
    pub fn new(prefix: &str, queue: &str) -> Self {
        let base = format!("{{{prefix}:{queue}}}");
        Self {
            ready: format!("{base}:ready"),
            workers: format!("{base}:workers"),
            epoch: format!("{base}:epoch"),
            wake: format!("{base}:wake"),
            base,
        }
    }
}

/// Adds each id that has no entry yet, scored by the Redis clock (ms); returns how many.
/// KEYS[1] `ready`.
pub(crate) const PUSH_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = 0
for i = 1, #ARGV do
  added = added + redis.call('ZADD', KEYS[1], 'NX', now, ARGV[i])
end
return added
";

/// Stamps a worker process's heartbeat with the Redis clock (s) and forgets processes
/// silent for longer than ARGV[2] seconds. KEYS[1] `workers`.
pub(crate) const HEARTBEAT_LUA: &str = r"
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return now
";

/// Counts worker processes stamped within ARGV[1] seconds of the Redis clock. KEYS[1]
/// `workers`. One script rather than `TIME` then `ZCOUNT`: on Redis Cluster a keyless
/// `TIME` may be answered by another node than the one holding the set, whose clock the
/// heartbeats used (one clock, docs/architecture.md §1.1 and §5.7).
pub(crate) const ALIVE_LUA: &str = r"
local now = tonumber(redis.call('TIME')[1])
return redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]), '+inf')
";

pub async fn push(
    conn: &ConnectionManager,
    keys: &Keys,
    jobs: &[SyncJob],
) -> Result<u64, QueueError> {
    let script = redis::Script::new(PUSH_LUA);
    let mut added = 0;
    for chunk in jobs.chunks(PUSH_CHUNK) {
        let mut inv = script.prepare_invoke();
        inv.key(&keys.ready);
        for j in chunk {
            inv.arg(j.member());
        }
        let n: u64 = inv.invoke_async(&mut conn.clone()).await?;
        added += n;
    }
    if added > 0 {
        // The entries are in; a lost wake-up only costs idle fetchers a poll interval.
        let woke: Result<i64, _> = redis::cmd("PUBLISH")
            .arg(&keys.wake)
            .arg(added)
            .query_async(&mut conn.clone())
            .await;
        if let Err(e) = woke {
            tracing::debug!(error = %e, "wake-up not published; fetchers find the entries at their next poll");
        }
    }
    Ok(added)
}

/// Removes the waiting entries of `jobs` from the ready set (see `Queue::forget`).
pub async fn forget(
    conn: &ConnectionManager,
    keys: &Keys,
    jobs: &[SyncJob],
) -> Result<(), QueueError> {
    for chunk in jobs.chunks(PUSH_CHUNK) {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(&keys.ready);
        for j in chunk {
            cmd.arg(j.member());
        }
        let _: i64 = cmd.query_async(&mut conn.clone()).await?;
    }
    Ok(())
}

/// Wakes this process's idle fetcher whenever a push adds entries (`notify_one`, so a
/// wake-up that arrives while it is busy makes its next idle wait return at once). The
/// subscription lives on a connection of its own, reconnects with a capped backoff, and
/// ends once the returned handle is dropped.
pub fn wakeups(client: redis::Client, keys: &Keys) -> std::sync::Arc<tokio::sync::Notify> {
    use futures::StreamExt;
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let weak = std::sync::Arc::downgrade(&wake);
    let channel = keys.wake.clone();
    tokio::spawn(async move {
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            let subscribed = async {
                let mut ps = client.get_async_pubsub().await?;
                ps.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            match subscribed.await {
                Ok(ps) => {
                    backoff = std::time::Duration::from_millis(100);
                    let mut messages = ps.into_on_message();
                    loop {
                        match tokio::time::timeout(
                            std::time::Duration::from_secs(1),
                            messages.next(),
                        )
                        .await
                        {
                            Ok(Some(_)) => match weak.upgrade() {
                                Some(w) => w.notify_one(),
                                None => return,
                            },
                            // The connection ended: subscribe again.
                            Ok(None) => break,
                            // Quiet: only check that someone still listens.
                            Err(_) if weak.strong_count() == 0 => return,
                            Err(_) => {}
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "wake-up subscription failed; polling meanwhile")
                }
            }
            if weak.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
        }
    });
    wake
}

/// Pops up to `n` hints, oldest first. Entries that name nothing are dropped.
pub async fn fetch(
    conn: &ConnectionManager,
    keys: &Keys,
    n: usize,
) -> Result<Vec<SyncJob>, QueueError> {
    let popped: Vec<(String, f64)> = redis::cmd("ZPOPMIN")
        .arg(&keys.ready)
        .arg(n.clamp(1, FETCH_MAX))
        .query_async(&mut conn.clone())
        .await?;
    Ok(popped
        .into_iter()
        .filter_map(|(m, _)| match SyncJob::from_member(&m) {
            Some(j) => Some(j),
            None => {
                tracing::warn!(entry = %m, "dropping a queue entry that names no work");
                None
            }
        })
        .collect())
}

pub async fn depth(conn: &ConnectionManager, keys: &Keys) -> Result<u64, QueueError> {
    Ok(redis::cmd("ZCARD")
        .arg(&keys.ready)
        .query_async(&mut conn.clone())
        .await?)
}

pub async fn heartbeat(
    conn: &ConnectionManager,
    keys: &Keys,
    process: &str,
    forget_after_secs: u64,
) -> Result<(), QueueError> {
    let _: i64 = redis::Script::new(HEARTBEAT_LUA)
        .key(&keys.workers)
        .arg(process)
        .arg(forget_after_secs)
        .invoke_async(&mut conn.clone())
        .await?;
    Ok(())
}

/// Worker processes whose heartbeat is at most `within_secs` old by the Redis clock.
pub async fn workers_alive(
    conn: &ConnectionManager,
    keys: &Keys,
    within_secs: u64,
) -> Result<u64, QueueError> {
    Ok(redis::Script::new(ALIVE_LUA)
        .key(&keys.workers)
        .arg(within_secs)
        .invoke_async(&mut conn.clone())
        .await?)
}

/// `true` while the epoch marker is missing: Redis is new, was restarted empty or
/// flushed, so every entry it held is gone and every PENDING run must be pushed again.
pub async fn epoch_missing(conn: &ConnectionManager, keys: &Keys) -> Result<bool, QueueError> {
    let n: i64 = redis::cmd("EXISTS")
        .arg(&keys.epoch)
        .query_async(&mut conn.clone())
        .await?;
    Ok(n == 0)
}

/// Sets the epoch marker once every PENDING run has been pushed again.
pub async fn set_epoch(conn: &ConnectionManager, keys: &Keys) -> Result<(), QueueError> {
    let _: () = redis::cmd("SET")
        .arg(&keys.epoch)
        .arg(Uuid::new_v4().to_string())
        .query_async(&mut conn.clone())
        .await?;
    Ok(())
}

pub async fn ping(conn: &ConnectionManager) -> Result<(), QueueError> {
    let _: String = redis::cmd("PING").query_async(&mut conn.clone()).await?;
    Ok(())
}

/// Redis Cluster: every key a script or command of one deployment touches must hash to
/// one slot, and every script must receive its keys through `KEYS` (docs/architecture.md
/// §5.7). The slot is computed here as Redis Cluster does (CRC16/XMODEM of the hash tag,
/// mod 16384), since the `redis` crate's own slot function comes with its `cluster`
/// feature, which this build does not enable.
#[cfg(test)]
mod cluster_slots {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::BTreeSet;

    use entity::ConnectorKind;

    use super::{ALIVE_LUA, HEARTBEAT_LUA, Keys, PUSH_LUA};
    use crate::queue::QUEUE;
    use crate::ratelimit::{self, slots};

    /// CRC16/XMODEM (polynomial 0x1021, initial value 0, no reflection).
    fn crc16(data: &[u8]) -> u16 {
        let mut crc: u16 = 0;
        for &b in data {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    /// The cluster slot of a key: only what lies between the first `{` and the first `}`
    /// after it is hashed, if that is not empty; otherwise the whole key.
    fn slot(key: &str) -> u16 {
        let k = key.as_bytes();
        let tag = k.iter().position(|&c| c == b'{').and_then(|open| {
            let rest = &k[open + 1..];
            rest.iter()
                .position(|&c| c == b'}')
                .filter(|&len| len > 0)
                .map(|len| &rest[..len])
        });
        crc16(tag.unwrap_or(k)) % 16384
    }

    #[test]
    fn the_slot_function_matches_redis_cluster() {
        // The check value of CRC16/XMODEM and slots `CLUSTER KEYSLOT` answers.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("bar"), 5061);
        // The hash-tag rules of the cluster specification.
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(slot("foo{{bar}}zap"), crc16(b"{bar") % 16384);
        assert_eq!(slot("foo{bar}{zap}"), slot("bar"));
    }

    /// Realistic provider keys (`<kind>:<16 hex>`, docs/architecture.md §6.2).
    fn providers() -> Vec<String> {
        let urls = |u: &str| vec![url::Url::parse(u).unwrap_or_else(|e| panic!("{u}: {e}"))];
        vec![
            ratelimit::provider_key(
                ConnectorKind::HttpJson,
                &serde_json::json!({"url": "https://api.example.com/kpi", "headers": {"authorization": "Bearer a"}}),
                &urls("https://api.example.com/kpi"),
            ),
            ratelimit::provider_key(
                ConnectorKind::GoogleSheets,
                &serde_json::json!({"apiKey": "k-123"}),
                &urls("https://sheets.googleapis.com/v4/spreadsheets/x"),
            ),
            ratelimit::provider_key(ConnectorKind::Synthetic, &serde_json::json!({}), &[]),
        ]
    }

    /// Every script, with the keys its caller passes as `KEYS`, built by the same
    /// functions the code calls.
    fn scripts(prefix: &str) -> Vec<(&'static str, &'static str, Vec<String>)> {
        let keys = Keys::new(prefix, QUEUE);
        let mut out = vec![
            ("push", PUSH_LUA, vec![keys.ready.clone()]),
            ("heartbeat", HEARTBEAT_LUA, vec![keys.workers.clone()]),
            ("workers alive", ALIVE_LUA, vec![keys.workers.clone()]),
        ];
        for p in providers() {
            out.push((
                "gcra",
                ratelimit::GCRA,
                vec![
                    ratelimit::tat_key(&keys.base, &p),
                    ratelimit::pause_key(&keys.base, &p),
                ],
            ));
            out.push((
                "slot acquire",
                slots::ACQUIRE,
                vec![slots::slots_key(&keys.base, &p)],
            ));
            out.push((
                "slot renew",
                slots::RENEW,
                vec![slots::slots_key(&keys.base, &p)],
            ));
        }
        out
    }

    /// Every key one deployment (one prefix) uses, scripts and plain commands alike.
    fn all_keys(prefix: &str) -> Vec<String> {
        let keys = Keys::new(prefix, QUEUE);
        let mut out = vec![keys.ready.clone(), keys.workers.clone(), keys.epoch.clone()];
        for p in providers() {
            out.push(ratelimit::tat_key(&keys.base, &p));
            out.push(ratelimit::pause_key(&keys.base, &p));
            out.push(slots::slots_key(&keys.base, &p));
        }
        // What the console scans for paused providers.
        out.push(format!("{}*", ratelimit::pause_key_prefix(&keys.base)));
        out
    }

    #[test]
    fn every_key_of_a_deployment_shares_one_slot() {
        // Prefixes are letters, digits, `-`, `_` and `.` (the configuration refuses
        // anything else), so no prefix can close or open a hash tag of its own.
        for prefix in ["syncfleet", "tenant-b", "eu_west.1", "x"] {
            let keys = all_keys(prefix);
            let tag = format!("{{{prefix}:{QUEUE}}}");
            let slots: BTreeSet<u16> = keys.iter().map(|k| slot(k)).collect();
            assert_eq!(slots.len(), 1, "{prefix}: {keys:?} hash to {slots:?}");
            assert!(
                keys.iter().all(|k| k.starts_with(&format!("{tag}:"))),
                "{keys:?}"
            );
            assert_eq!(slots.first().copied(), Some(slot(&tag)));
            for (name, _, script_keys) in scripts(prefix) {
                let s: BTreeSet<u16> = script_keys.iter().map(|k| slot(k)).collect();
                assert_eq!(s.len(), 1, "{name}: {script_keys:?} span slots {s:?}");
            }
        }
    }

    #[test]
    fn deployments_with_other_prefixes_may_live_on_other_slots() {
        assert_ne!(
            slot(&Keys::new("syncfleet", QUEUE).ready),
            slot(&Keys::new("tenant-b", QUEUE).ready)
        );
        // Numbered prefixes get distinct slots, but not spread ones: CRC16 is linear, so
        // names that differ in a trailing digit land close together (`syncfleet-0` …
        // `syncfleet-15` all fall in slots 23–3874, the first shard of an evenly split
        // three-shard cluster). Which shard holds a slot is the cluster's slot map:
        // choose prefixes by their slot, or move the slots (docs/scale.md §5).
        let spread: BTreeSet<u16> = (0..16)
            .map(|n| slot(&Keys::new(&format!("syncfleet-{n}"), QUEUE).ready))
            .collect();
        assert_eq!(spread.len(), 16, "{spread:?}");
    }

    /// Commands a script calls that take no key.
    const KEYLESS: [&str; 1] = ["TIME"];

    #[test]
    fn scripts_take_every_key_through_keys() {
        for (name, lua, keys) in scripts("syncfleet") {
            let mut used = BTreeSet::new();
            let mut calls = 0;
            for (at, _) in lua.match_indices("redis.call(") {
                calls += 1;
                let args = &lua[at + "redis.call(".len()..];
                let quoted = args.strip_prefix('\'').unwrap_or_else(|| {
                    panic!("{name}: a command that is not a literal: {args:.40}")
                });
                let (command, rest) = quoted
                    .split_once('\'')
                    .unwrap_or_else(|| panic!("{name}: unterminated command: {args:.40}"));
                let command = command.to_ascii_uppercase();
                if KEYLESS.contains(&command.as_str()) {
                    continue;
                }
                let rest = rest
                    .trim_start()
                    .strip_prefix(',')
                    .unwrap_or_else(|| panic!("{name}: `{command}` is called without a key"));
                // The first argument of every keyed command is KEYS[n], never a name
                // the script builds: Redis Cluster routes a script by its KEYS only.
                let first = rest.trim_start();
                let n = first
                    .strip_prefix("KEYS[")
                    .and_then(|r| r.split(']').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or_else(|| {
                        panic!("{name}: `{command}` is not given a KEYS entry: {first:.40}")
                    });
                used.insert(n);
            }
            assert!(calls > 0, "{name}: no redis.call found");
            assert_eq!(
                used,
                (1..=keys.len()).collect::<BTreeSet<_>>(),
                "{name}: the script's KEYS and the keys its caller passes differ"
            );
            // Whatever else the script reads comes from ARGV (values, never key names).
            assert!(
                !lua.contains(".."),
                "{name}: the script concatenates strings"
            );
        }
    }
}
