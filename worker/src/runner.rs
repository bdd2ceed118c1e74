//! The queue worker: apalis `WorkerBuilder` (concurrency limit, tracing, panic catching) around [`Engine::execute`], supervised.
//!
//! On Redis the worker pulls from our own backend ([`crate::queue::backend`]), whose
//! stream rides out Redis errors, so a Redis restart no longer ends the worker. The
//! supervisor stays for whatever else may end a worker (the embedded apalis-sqlite
//! stream ends on a database error): it rebuilds the worker under a fresh unique name,
//! with capped backoff, until shutdown. Runs a rebuilt worker was driving are not
//! abandoned: each releases its claim when its future is dropped (see `engine`).
//! The handler returns `Ok` for every outcome: a queue backend must never retry a run
//! behind the run protocol's back.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data, WorkerBuilder, WorkerBuilderExt, WorkerContext};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::{Engine, Executed};
use crate::job::SyncJob;
use crate::queue::Queue;
use crate::queue::backend::{RedisBackend, Source};

/// How long a handler whose run failed on a database error waits before it hands the
/// run's hint back to the queue.
const PUSH_BACK_AFTER: Duration = Duration::from_secs(1);

/// The handler: claim and run; business outcomes are written, never returned.
async fn handle(
    job: SyncJob,
    engine: Data<Arc<Engine>>,
    queue: Data<Queue>,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    let _busy = engine.busy_guard();
    // A suspect has this process to itself: leave the work for another worker, unclaimed.
    if engine.isolating() {
        hand_back(&engine, &queue, job).await;
        return Ok(());
    }
    // Panics are caught here rather than with apalis' `catch_panic()` layer: that layer's
    // handler type is a higher-ranked fn pointer that makes the worker future fail the
    // `Send` bound of `tokio::spawn`. A panic inside a run's execution is caught by the
    // engine and fails that run as `internal` under its fence; one that escapes to here
    // (claim or finish) drops the claim's future, whose guard releases the claim to
    // PENDING at once (see `engine::lease::InFlight`).
    let executed = match job {
        SyncJob::V1 { run_id } => {
            AssertUnwindSafe(engine.execute(run_id, worker.name()))
                .catch_unwind()
                .await
        }
        SyncJob::Delivery1 { delivery_id } => {
            AssertUnwindSafe(engine.deliver(delivery_id, worker.name()))
                .catch_unwind()
                .await
        }
        SyncJob::Push1 { push_id } => {
            AssertUnwindSafe(engine.push(push_id, worker.name(), &queue))
                .catch_unwind()
                .await
        }
    };
    match executed {
        Ok(Ok(Executed::Ran)) => {}
        // Claimed in a batch while a suspect took this process, and given back.
        Ok(Ok(Executed::SteppedAside)) => hand_back(&engine, &queue, job).await,
        // The item stays PENDING/RUNNING for the reaper and re-enqueuer. Its hint was
        // consumed, so hand it back now rather than after the re-enqueue timeout (a
        // duplicate is a no-op claim). A pause first keeps a database that fails at once
        // (refused logins, DNS) from turning this into a loop.
        Ok(Err(e)) => {
            tracing::warn!(id = %job.id(), error = %e, "work aborted by a database error; hint pushed back");
            tokio::time::sleep(PUSH_BACK_AFTER).await;
            if let Err(e) = queue.push_jobs(&[job]).await {
                tracing::debug!(error = %e, "could not push the hint back; the re-enqueuer will");
            }
        }
        Err(_) => {
            tracing::error!(id = %job.id(), "work panicked outside its execution; its claim was released")
        }
    }
    Ok(())
}

/// Hands an unclaimed hint back to the queue, for another worker. Not at once: the
/// embedded queue would hand it straight back to this process.
async fn hand_back(engine: &Engine, queue: &Queue, job: SyncJob) {
    tokio::time::sleep(engine.cfg.poll_interval).await;
    if let Err(e) = queue.push_jobs(&[job]).await {
        tracing::debug!(error = %e, "could not hand a hint back; the re-enqueuer will");
    }
}

/// A name unique to this process start and restart.
pub fn worker_name(process: &str, restart: u32) -> String {
    format!("{process}-r{restart}")
}

/// A unique id for this process start.
pub fn process_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    )
}

macro_rules! run_one {
    ($backend:expr, $queue:expr, $name:expr, $engine:expr, $shutdown:expr) => {{
        let worker = WorkerBuilder::new($name)
            .backend($backend)
            .enable_tracing()
            .concurrency($engine.cfg.worker_concurrency)
            .data($engine.clone())
            .data($queue)
            .build(handle);
        let token = $shutdown.clone();
        worker
            .run_until(async move {
                token.cancelled().await;
                Ok::<(), std::io::Error>(())
            })
            .await
    }};
}

/// Runs queue workers until `shutdown`, restarting after backend errors. In-flight runs
/// get `shutdown_grace` to finish; what is still running then is released.
pub async fn run(engine: Arc<Engine>, queue: Queue, shutdown: CancellationToken) {
    let process = process_name();
    tracing::info!(worker.process = %process, concurrency = engine.cfg.worker_concurrency, "worker starting");
    // The heartbeat is a branch of this future, not a detached task: it lives exactly as
    // long as the workers it vouches for.
    let beat = heartbeat(queue.clone(), process.clone(), shutdown.clone());
    let work = supervise(engine, queue, process, shutdown);
    tokio::pin!(work);
    tokio::select! {
        () = &mut work => return,
        // Ends only at shutdown; the drain goes on.
        () = beat => {}
    }
    work.await;
}

/// This process's liveness in the queue, stamped by the queue's clock (never ours).
async fn heartbeat(queue: Queue, process: String, shutdown: CancellationToken) {
    let every = match &queue {
        Queue::Redis { heartbeat, .. } => *heartbeat,
        Queue::Sqlite { .. } => return shutdown.cancelled().await,
    };
    loop {
        if let Err(e) = queue.heartbeat(&process).await {
            tracing::debug!(error = %e, "heartbeat failed; retrying next period");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn supervise(
    engine: Arc<Engine>,
    queue: Queue,
    process: String,
    shutdown: CancellationToken,
) {
    let mut restart: u32 = 0;
    let mut delay = Duration::from_millis(100);
    loop {
        let name = worker_name(&process, restart);
        let began = std::time::Instant::now();
        let poll = engine.cfg.poll_interval;
        // Everything the worker future needs is moved into it: borrowing the queue across
        // its awaits trips rustc's higher-ranked `Send` check on the backend's closures.
        let fut = {
            let (engine, shutdown, name) = (engine.clone(), shutdown.clone(), name.clone());
            let queue = queue.clone();
            async move {
                match queue.clone() {
                    Queue::Redis {
                        conn, client, keys, ..
                    } => {
                        let wake = crate::queue::redis::wakeups(client, &keys);
                        let backend = RedisBackend::new(Source {
                            conn,
                            wake,
                            keys,
                            busy: engine.busy(),
                            suspects: engine.suspects(),
                            concurrency: engine.cfg.worker_concurrency,
                            poll,
                        });
                        run_one!(backend, queue, name, engine, shutdown)
                    }
                    Queue::Sqlite { storage, .. } => {
                        let backend = crate::poll::every(storage, poll);
                        run_one!(backend, queue, name, engine, shutdown)
                    }
                }
            }
        };
        let drained = async {
            shutdown.cancelled().await;
            tokio::time::sleep(engine.cfg.shutdown_grace).await;
        };
        let result = tokio::select! {
            r = fut => r,
            () = drained => {
                let n = engine.release_all().await;
                tracing::warn!(released = n, "shutdown grace ran out; released in-flight runs");
                return;
            }
        };
        if shutdown.is_cancelled() {
            tracing::info!(worker.name = %name, "worker stopped");
            return;
        }
        restart += 1;
        engine.metrics.worker_restarts.inc();
        match result {
            Ok(()) => tracing::warn!(worker.name = %name, "worker stream ended; restarting"),
            Err(e) => {
                tracing::warn!(worker.name = %name, error = %e, retry_in_ms = delay.as_millis() as u64, "worker stopped by a queue error; restarting under a new name")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
        // A worker that ran a while before failing starts over with a short delay.
        delay = if began.elapsed() > Duration::from_secs(30) {
            Duration::from_millis(100)
        } else {
            (delay * 2).min(Duration::from_secs(5))
        };
    }
}
