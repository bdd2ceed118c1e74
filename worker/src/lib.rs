//! syncfleet's worker side: the queue contract, connectors, the run protocol and the
//! queue worker that executes it.
//!
//! The database is the source of truth for schedules, runs and retries; the queue only
//! delivers hints. See `protocol` for the rules every state change follows.

pub mod audit;
pub mod chaos;
pub mod config;
pub mod conflicts;
pub mod connectors;
pub mod db;
pub mod engine;
pub mod history;
pub mod job;
pub mod metrics;
pub mod net;
pub mod notifications;
pub mod notify;
pub mod poll;
pub mod protocol;
pub mod push;
pub mod queue;
pub mod ratelimit;
pub mod runner;
pub mod secrets;
pub mod store;
pub mod work;

pub use config::ProtocolConfig;
pub use engine::Engine;
pub use job::SyncJob;
pub use queue::Queue;
