//! Queue hygiene: finished tasks leave Redis after the retention window; a task that
//! can still run keeps its payload.

use std::time::Duration;

use serde_json::json;
use tests::env::test_env;
use uuid::Uuid;

use crate::util::eventually;

#[tokio::test]
async fn cleanup_removes_finished_tasks_only() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let (stop, worker) = env.spawn_worker(&[]);
    for i in 0..5 {
        app.client
            .create(&format!("h{i}"), "synthetic", json!({}), None)
            .await;
    }
    let mut r = env.redis().await;
    let done_key = format!("{}:sync:done", env.prefix);
    eventually(Duration::from_secs(10), "five tasks done", || {
        let mut r = r.clone();
        let key = done_key.clone();
        async move {
            let n: i64 = redis::cmd("SCARD")
                .arg(&key)
                .query_async(&mut r)
                .await
                .ok()?;
            (n == 5).then_some(())
        }
    })
    .await;
    stop.cancel();
    let _ = worker.await;
    // A task nobody has fetched yet (no worker runs now).
    let queue = syncfleet_worker::Queue::redis(&env.redis_url, &env.prefix, Duration::from_secs(5))
        .await
        .expect("queue");
    queue.push(&[Uuid::now_v7()]).await.expect("push");
    // Retention not reached: nothing goes.
    assert_eq!(
        queue
            .cleanup(Duration::from_secs(3600))
            .await
            .expect("cleanup"),
        0
    );
    let removed = queue.cleanup(Duration::ZERO).await.expect("cleanup");
    assert_eq!(removed, 5);
    let done: i64 = redis::cmd("SCARD")
        .arg(&done_key)
        .query_async(&mut r)
        .await
        .expect("scard");
    assert_eq!(done, 0);
    let data: i64 = redis::cmd("HLEN")
        .arg(format!("{}:sync:data", env.prefix))
        .query_async(&mut r)
        .await
        .expect("hlen");
    assert_eq!(data, 1, "the pending task's payload must survive");
    let metas: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:sync:meta:*", env.prefix))
        .query_async(&mut r)
        .await
        .expect("keys");
    assert_eq!(metas.len(), 1, "{metas:?}");
    app.stop().await;
}

/// A finished set larger than one pass's budget is worked through across passes: each
/// pass resumes the scan where the last one stopped instead of revisiting the young
/// entries at the start of the set forever.
#[tokio::test]
async fn cleanup_works_through_a_large_backlog_across_passes() {
    let Some(env) = test_env().await else { return };
    let queue = syncfleet_worker::Queue::redis(&env.redis_url, &env.prefix, Duration::from_secs(5))
        .await
        .expect("queue");
    let mut r = env.redis().await;
    let now: Vec<String> = redis::cmd("TIME").query_async(&mut r).await.expect("time");
    let now: i64 = now[0].parse().expect("secs");
    let done_key = format!("{}:sync:done", env.prefix);
    // 150,000 finished entries, one in five old enough to go (one pass scans ~100,000).
    let (total, old_every) = (150_000usize, 5usize);
    for chunk in (0..total).collect::<Vec<_>>().chunks(5_000) {
        let mut p = redis::pipe();
        for &i in chunk {
            let id = format!("t{i:06}");
            let done_at = if i % old_every == 0 {
                now - 10_000
            } else {
                now
            };
            p.cmd("SADD").arg(&done_key).arg(&id).ignore();
            p.cmd("HSET")
                .arg(format!("{}:sync:meta:{id}", env.prefix))
                .arg("done_at")
                .arg(done_at)
                .ignore();
        }
        let () = p.query_async(&mut r).await.expect("seed");
    }
    let retention = Duration::from_secs(3600);
    let mut removed = 0;
    for _ in 0..3 {
        removed += queue.cleanup(retention).await.expect("cleanup");
    }
    assert_eq!(removed as usize, total / old_every, "every old entry goes");
    let left: i64 = redis::cmd("SCARD")
        .arg(&done_key)
        .query_async(&mut r)
        .await
        .expect("scard");
    assert_eq!(
        left as usize,
        total - total / old_every,
        "young entries stay"
    );
}
