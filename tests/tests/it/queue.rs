//! The Redis queue's own guarantees: at most one entry per run, bounded fetches, keys
//! under the deployment's prefix, and detection of a Redis that lost its data.

use std::time::Duration;

use syncfleet_worker::Queue;
use syncfleet_worker::queue::redis as rq;
use tests::env::{skip_or_fail, test_env};
use tests::procs::RedisServer;
use uuid::Uuid;

use crate::util::eventually;

async fn queue(env: &tests::env::TestEnv) -> Queue {
    Queue::redis(&env.redis_url, &env.prefix, Duration::from_secs(5))
        .await
        .expect("queue")
}

fn parts(q: &Queue) -> (redis::aio::ConnectionManager, rq::Keys) {
    match q {
        Queue::Redis { conn, keys, .. } => (conn.clone(), keys.clone()),
        Queue::Sqlite { .. } => unreachable!("a Redis queue"),
    }
}

/// Deletes every key of the test's queue, as a Redis restart or `FLUSHALL` would.
async fn flush_queue(env: &tests::env::TestEnv) {
    let mut r = env.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{}:sync}}:*", env.prefix))
        .query_async(&mut r)
        .await
        .expect("keys");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut r)
        .await
        .expect("flush");
}

/// Pushing a run again while its entry waits changes nothing: a re-enqueuer on a timer
/// cannot grow the queue (the wedge after a long worker outage).
#[tokio::test]
async fn a_run_has_at_most_one_queue_entry() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("it queues ids of runs that do not exist");
    let q = queue(&env).await;
    let ids: Vec<Uuid> = (0..1200).map(|_| Uuid::now_v7()).collect();
    for _ in 0..10 {
        q.push(&ids).await.expect("push");
    }
    assert_eq!(q.depth().await.expect("depth"), 1200);
    // A fetch is bounded, oldest first; a fetched entry is gone.
    let (conn, keys) = parts(&q);
    let first = rq::fetch(&conn, &keys, 100).await.expect("fetch");
    assert_eq!(first.len(), 100);
    assert!(
        rq::fetch(&conn, &keys, 1_000_000)
            .await
            .expect("fetch")
            .len()
            <= rq::FETCH_MAX
    );
    // A run whose entry was consumed can be pushed again.
    q.push_jobs(&first).await.expect("push");
    assert!(q.depth().await.expect("depth") >= 100);
}

/// Every key the queue writes lives under the deployment's prefix, in one hash slot
/// (checked on a private server, where any other key would be ours).
#[tokio::test]
async fn queue_keys_stay_under_the_prefix() {
    let Some(mut env) = test_env().await else {
        return;
    };
    let Some(server) = RedisServer::start() else {
        skip_or_fail("redis-server (binary)");
        return;
    };
    env.redis_url = server.url();
    let q = queue(&env).await;
    q.push(&[Uuid::now_v7()]).await.expect("push");
    q.heartbeat("proc-1").await.expect("heartbeat");
    q.entries_restored().await.expect("epoch");
    let mut r = env.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut r)
        .await
        .expect("keys");
    assert_eq!(keys.len(), 3, "{keys:?}");
    let tag = format!("{{{}:sync}}:", env.prefix);
    assert!(keys.iter().all(|k| k.starts_with(&tag)), "{keys:?}");
    let outside: i64 = redis::cmd("EXISTS")
        .arg("core:apalis:queues:list")
        .query_async(&mut r)
        .await
        .expect("exists");
    assert_eq!(outside, 0, "a key outside the prefix was written");
    assert_eq!(q.workers_alive().await.expect("alive"), 1);
}

/// The epoch marker tells a pass that Redis came back empty.
#[tokio::test]
async fn an_emptied_queue_is_detected() {
    let Some(env) = test_env().await else { return };
    let q = queue(&env).await;
    assert!(
        q.lost_entries().await.expect("epoch"),
        "a new queue has no marker yet"
    );
    assert!(
        q.lost_entries().await.expect("epoch"),
        "still lost until restored"
    );
    q.entries_restored().await.expect("restored");
    assert!(!q.lost_entries().await.expect("epoch"));
    flush_queue(&env).await;
    assert!(q.lost_entries().await.expect("epoch"));
}

/// Entries lost with Redis (a flush, a restart) come back within a maintenance pass,
/// not after the re-enqueue timeout.
#[tokio::test]
async fn a_flushed_queue_is_refilled_at_once() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("its runs wait in the queue: no worker runs in this test");
    // Re-enqueue timeout far beyond the test: only the epoch path can refill in time.
    let app = env
        .spawn_app(&[("SYNCFLEET_REENQUEUE_AFTER_MS", "600000")])
        .await;
    for i in 0..20 {
        app.client
            .create(&format!("f{i}"), "synthetic", serde_json::json!({}), None)
            .await;
    }
    let q = queue(&env).await;
    eventually(Duration::from_secs(10), "20 runs queued", || async {
        (q.depth().await.ok()? == 20).then_some(())
    })
    .await;
    flush_queue(&env).await;
    let flushed = std::time::Instant::now();
    eventually(Duration::from_secs(3), "the queue refilled", || async {
        (q.depth().await.ok()? == 20).then_some(())
    })
    .await;
    eprintln!(
        "flushed queue refilled in {} ms",
        flushed.elapsed().as_millis()
    );
    app.stop().await;
}

/// A push wakes idle fetchers at once: with a 10 s poll interval, a run pushed while the
/// worker idles still starts within a moment (the poll is only the fallback).
#[tokio::test]
async fn a_push_wakes_an_idle_worker() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let slow_poll = [("SYNCFLEET_POLL_INTERVAL_MS", "10000")];
    let (wtoken, worker) = env.spawn_worker(&slow_poll);
    let id = app
        .client
        .create(
            "woken",
            "synthetic",
            serde_json::json!({"records": 1}),
            None,
        )
        .await;
    // The first run: by a fetch, woken or not.
    eventually(Duration::from_secs(15), "the first run", || async {
        (!app.client.history(id).await.is_empty()
            && app.client.history(id).await[0]["status"] == "SUCCESS")
            .then_some(())
    })
    .await;
    // Now the worker idles in a 10 s wait; a manual run must not wait for it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = std::time::Instant::now();
    app.client.trigger(id).await;
    eventually(
        Duration::from_secs(5),
        "the manual run, well before the poll",
        || async {
            let h = app.client.history(id).await;
            (h.len() >= 2 && h.iter().all(|r| r["status"] == "SUCCESS")).then_some(())
        },
    )
    .await;
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "woken after {:?}",
        began.elapsed()
    );
    wtoken.cancel();
    let _ = worker.await;
    app.stop().await;
}
