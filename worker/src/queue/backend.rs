//! The Redis queue as an apalis backend: the stream a queue worker pulls run ids from.
//!
//! The stream never ends and never fails. A Redis error is logged once, retried with a
//! capped backoff, and the worker keeps going: the runs it is executing talk only to the
//! database, so they finish (fenced, as always) while Redis is away, and fetching resumes
//! when it is back. (apalis-redis's stream ended on the first error, the worker was rebuilt,
//! and the runs it had been driving were dropped mid-flight.)
//!
//! A fetch pops at most as many ids as the worker has free slots, so ids are not held in a
//! busy process while another one idles. An idle fetcher waits for a push's wake-up (Redis
//! pub/sub) or its poll interval, whichever comes first.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::{RandomId, TaskId};
use apalis_core::worker::context::WorkerContext;
use futures::stream::{self, BoxStream, StreamExt};
use redis::aio::ConnectionManager;
use tower::layer::util::Identity;

use super::redis::{self as rq, Keys};
use crate::job::SyncJob;

/// Where a worker's stream fetches from, and how much it may take.
#[derive(Clone)]
pub struct Source {
    pub conn: ConnectionManager,
    pub keys: Keys,
    /// Handler calls in flight in this worker (see [`crate::Engine::busy`]).
    pub busy: Arc<AtomicUsize>,
    /// Suspects waiting for or holding this process: while any do, fetch nothing (see
    /// [`crate::Engine::suspects`]).
    pub suspects: Arc<AtomicUsize>,
    pub concurrency: usize,
    /// Sleep between fetches that found nothing, unless woken first.
    pub poll: Duration,
    /// Rung when a push added entries ([`super::redis::wakeups`]).
    pub wake: Arc<tokio::sync::Notify>,
}

/// The apalis backend of the Redis queue. Pushes go through [`super::Queue::push`].
pub struct RedisBackend {
    stream: BoxStream<'static, Task<SyncJob>>,
}

impl RedisBackend {
    pub fn new(source: Source) -> Self {
        Self {
            stream: stream_of(source),
        }
    }
}

impl Backend for RedisBackend {
    type Task = Task<SyncJob>;
    type Error = Infallible;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Task<SyncJob>, Infallible>>> {
        self.stream.poll_next_unpin(cx).map(|t| t.map(Ok))
    }

    /// Nothing to flush: ids it popped but the worker never started stay PENDING in the
    /// database, and the re-enqueuer pushes them again.
    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for RedisBackend {
    type Args = SyncJob;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &() {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Identity {
        Identity::new()
    }
}

struct State {
    src: Source,
    buf: VecDeque<SyncJob>,
    /// `Some(delay)` while Redis is unreachable.
    failing: Option<Duration>,
}

fn stream_of(src: Source) -> BoxStream<'static, Task<SyncJob>> {
    let st = State {
        src,
        buf: VecDeque::new(),
        failing: None,
    };
    stream::unfold(st, |mut st| async move {
        loop {
            if let Some(job) = st.buf.pop_front() {
                // The task id is the item's id: it names the run (or delivery) in apalis' spans.
                let task = TaskBuilder::new(job)
                    .task_id(TaskId::from_string(job.id().to_string()))
                    .build();
                return Some((task, st));
            }
            if st.src.suspects.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(st.src.poll).await;
                continue;
            }
            let free = st
                .src
                .concurrency
                .saturating_sub(st.src.busy.load(Ordering::Relaxed))
                .max(1);
            match rq::fetch(&st.src.conn, &st.src.keys, free).await {
                Ok(ids) => {
                    if st.failing.take().is_some() {
                        tracing::info!("queue reachable again; fetching resumes");
                    }
                    if ids.is_empty() {
                        // A push wakes this at once; the poll is the fallback.
                        tokio::select! {
                            () = tokio::time::sleep(st.src.poll) => {}
                            () = st.src.wake.notified() => {}
                        }
                    } else {
                        st.buf.extend(ids);
                    }
                }
                Err(e) => {
                    let delay = match st.failing {
                        None => {
                            tracing::warn!(error = %e, "queue unreachable; runs in flight carry on, fetching resumes when it is back");
                            Duration::from_millis(100)
                        }
                        Some(d) => (d * 2).min(Duration::from_secs(2)),
                    };
                    st.failing = Some(delay);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    })
    .boxed()
}
