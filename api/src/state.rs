//! What every handler and background loop shares.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use syncfleet_worker::Queue;
use syncfleet_worker::metrics::Metrics;
use tokio::sync::Notify;

use crate::config::Config;

#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub queue: Queue,
    pub metrics: Metrics,
    pub config: Arc<Config>,
    /// Wakes the scheduler early (an integration became due now).
    pub scheduler_wake: Arc<Notify>,
}
