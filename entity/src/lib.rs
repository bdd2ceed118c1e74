//! sea-orm entities and the domain enums they store.
//!
//! This crate holds the shape of the data and nothing else: the run protocol that
//! changes these rows lives in `syncfleet-worker`, the HTTP surface in `syncfleet-api`.
//! Enums are stored as short strings so that PostgreSQL and SQLite hold the same
//! values and raw protocol SQL can compare them literally (`status = 'RUNNING'`).

pub mod api_keys;
pub mod audit_events;
pub mod enums;
pub mod integrations;
pub mod records;
pub mod sync_logs;
pub mod workspaces;

pub use enums::{ConnectorKind, ErrorClass, HealthState, Role, SyncStatus, Trigger};
