//! The queue worker: apalis `WorkerBuilder` (concurrency limit, tracing, panic catching) around [`Engine::execute`], supervised.
//!
//! apalis-redis ends a worker's stream for good on any Redis error (a restart, a
//! failover) and refuses a worker name reused within a heartbeat. So the supervisor
//! rebuilds the worker under a fresh unique name, with capped backoff, until shutdown.
//! The handler returns `Ok` for every outcome: an `Err` would make apalis-redis retry
//! the task up to 25 times behind the run protocol's back.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data, WorkerBuilder, WorkerBuilderExt, WorkerContext};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::Engine;
use crate::job::SyncJob;
use crate::queue::Queue;

/// The handler: claim and run; business outcomes are written, never returned.
async fn handle(
    job: SyncJob,
    engine: Data<Arc<Engine>>,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    let SyncJob::V1 { run_id } = job;
    // Panics are caught here rather than with apalis' `catch_panic()` layer: that layer's
    // handler type is a higher-ranked fn pointer that makes the worker future fail the
    // `Send` bound of `tokio::spawn`. A panicking run stays RUNNING until its lease
    // expires; the reaper re-queues it and quarantines it after `max_claims`.
    match AssertUnwindSafe(engine.execute(run_id, worker.name()))
        .catch_unwind()
        .await
    {
        Ok(Ok(())) => {}
        // The run stays PENDING/RUNNING; the reaper and re-enqueuer recover it.
        Ok(Err(e)) => {
            tracing::warn!(sync_log.id = %run_id, error = %e, "run aborted by a database error")
        }
        Err(_) => {
            tracing::error!(sync_log.id = %run_id, "run panicked; the reaper will recover it")
        }
    }
    Ok(())
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
    ($backend:expr, $name:expr, $engine:expr, $shutdown:expr) => {{
        let worker = WorkerBuilder::new($name)
            .backend($backend)
            .enable_tracing()
            .concurrency($engine.cfg.worker_concurrency)
            .data($engine.clone())
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
    let mut restart: u32 = 0;
    let mut delay = Duration::from_millis(100);
    loop {
        let name = worker_name(&process, restart);
        let began = std::time::Instant::now();
        let poll = engine.cfg.poll_interval;
        let fut = async {
            match &queue {
                Queue::Redis { storage, .. } => run_one!(
                    crate::poll::every(storage.clone(), poll),
                    name.clone(),
                    engine,
                    shutdown
                ),
                Queue::Sqlite { storage, .. } => run_one!(
                    crate::poll::every(storage.clone(), poll),
                    name.clone(),
                    engine,
                    shutdown
                ),
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
