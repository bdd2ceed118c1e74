//! Schema migrations. Every migration runs on PostgreSQL and SQLite, with `up` and `down`.
//!
//! Run them with `syncfleet migrate` (or the compose `migrate` service); the production
//! roles refuse to start on an unmigrated database, only the embedded mode migrates itself.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_workspaces;
mod m20261122_000002_create_integrations;
mod m20261122_000003_create_sync_logs;
mod m20261122_000004_create_records;
mod m20261122_000005_create_audit_events;
mod m20261122_000006_create_api_keys;
mod m20261122_000007_history_indexes;
mod m20261122_000008_runs_total;
mod m20261122_000009_drop_started_history_index;
mod m20261202_000010_solo_claims;
mod m20261202_000011_audit_actor_name;
mod m20261202_000012_keyed_api_key_hashes;
mod m20261202_000013_operator_role;
mod m20261202_000014_console;
mod m20261202_000015_live_runs;
mod m20261202_000016_run_stats_hourly;
mod m20261202_000017_notifications;
mod m20261202_000018_outbox;
mod m20261202_000019_conflicts;
mod m20261203_000020_webhooks;
mod m20261204_000021_outbox_pending_by_record;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_workspaces::Migration),
            Box::new(m20261122_000002_create_integrations::Migration),
            Box::new(m20261122_000003_create_sync_logs::Migration),
            Box::new(m20261122_000004_create_records::Migration),
            Box::new(m20261122_000005_create_audit_events::Migration),
            Box::new(m20261122_000006_create_api_keys::Migration),
            Box::new(m20261122_000007_history_indexes::Migration),
            Box::new(m20261122_000008_runs_total::Migration),
            Box::new(m20261122_000009_drop_started_history_index::Migration),
            Box::new(m20261202_000010_solo_claims::Migration),
            Box::new(m20261202_000011_audit_actor_name::Migration),
            Box::new(m20261202_000012_keyed_api_key_hashes::Migration),
            Box::new(m20261202_000013_operator_role::Migration),
            Box::new(m20261202_000014_console::Migration),
            Box::new(m20261202_000015_live_runs::Migration),
            Box::new(m20261202_000016_run_stats_hourly::Migration),
            Box::new(m20261202_000017_notifications::Migration),
            Box::new(m20261202_000018_outbox::Migration),
            Box::new(m20261202_000019_conflicts::Migration),
            Box::new(m20261203_000020_webhooks::Migration),
            Box::new(m20261204_000021_outbox_pending_by_record::Migration),
        ]
    }
}
