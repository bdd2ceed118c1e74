//! Group commit: requests of one process queue up and a few loops each take whatever
//! waits (up to [`super::MAX_BATCH`]) into one call. A batch waits for nothing: it holds
//! what queued while the previous one was in the database, so a quiet worker sees no
//! added latency and a busy one amortises one commit over many items.

use std::sync::Arc;

use futures::future::BoxFuture;
use sea_orm::DbErr;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::MAX_BATCH;

/// Runs one batch: one result per request, in order.
pub type BatchFn<I, O> =
    Arc<dyn for<'a> Fn(&'a [I]) -> BoxFuture<'a, Result<Vec<O>, DbErr>> + Send + Sync>;

type Reply<O> = oneshot::Sender<Result<O, String>>;
type Rx<I, O> = Arc<Mutex<mpsc::UnboundedReceiver<(I, Reply<O>)>>>;

/// A queue of requests drained in batches by `loops` tasks.
pub struct Batcher<I, O> {
    name: &'static str,
    tx: mpsc::UnboundedSender<(I, Reply<O>)>,
}

impl<I: Send + Sync + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts `loops` tasks (one can be in the database while the next batch gathers).
    /// When a batch fails, each of its requests is retried as a batch of one, so one bad
    /// request (or a deadlock with a concurrent writer) fails nobody else.
    pub fn start(name: &'static str, loops: usize, run: BatchFn<I, O>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx: Rx<I, O> = Arc::new(Mutex::new(rx));
        for _ in 0..loops.max(1) {
            tokio::spawn(drain(name, rx.clone(), run.clone()));
        }
        Self { name, tx }
    }

    /// Queues one request and waits for its result.
    pub async fn submit(&self, item: I) -> Result<O, DbErr> {
        let stopped = || DbErr::Custom(format!("{} batcher stopped", self.name));
        let (tx, rx) = oneshot::channel();
        self.tx.send((item, tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?.map_err(DbErr::Custom)
    }
}

/// Takes one request (waiting), then whatever else is queued, up to `MAX_BATCH`.
async fn gather<T>(rx: &Mutex<mpsc::UnboundedReceiver<T>>) -> Option<Vec<T>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(x) => batch.push(x),
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn drain<I: Send + Sync, O: Send>(name: &'static str, rx: Rx<I, O>, run: BatchFn<I, O>) {
    while let Some(batch) = gather(&rx).await {
        let (items, replies): (Vec<I>, Vec<Reply<O>>) = batch.into_iter().unzip();
        match run(&items).await {
            Ok(results) if results.len() == items.len() => {
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            Ok(results) => {
                let msg = format!(
                    "{name} batch returned {} results for {} requests",
                    results.len(),
                    items.len()
                );
                for reply in replies {
                    let _ = reply.send(Err(msg.clone()));
                }
            }
            Err(e) if items.len() == 1 => {
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
            Err(e) => {
                tracing::debug!(batcher = name, error = %e, items = items.len(), "batch failed; retrying one by one");
                for (item, reply) in items.iter().zip(replies) {
                    let r = run(std::slice::from_ref(item))
                        .await
                        .and_then(|mut v| {
                            v.pop().ok_or_else(|| {
                                DbErr::Custom(format!("{name} batch of one returned nothing"))
                            })
                        })
                        .map_err(|e| e.to_string());
                    let _ = reply.send(r);
                }
            }
        }
    }
}
