//! The run history at scale (docs/architecture.md §3.9): hourly aggregates that outlive
//! the raw rows ([`rollup`]) and the retention that deletes old finished runs once their
//! hour is rolled up ([`retention`]). Both run in the API role's history loop
//! (`api/src/scheduler.rs`), leaderless like the rest of the maintenance.
//!
//! Every statement here names the table of finished runs through [`HISTORY`], and
//! filters finished statuses itself ([`finished`]), so the same code works whether that
//! table also holds live runs or not.

pub mod retention;
pub mod rollup;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DbErr};
use uuid::Uuid;

use crate::db::{self, Dialect};

/// The table that holds finished runs (docs/architecture.md §3.3).
pub const HISTORY: &str = "run_history";

/// The hourly aggregates (migration 16).
pub const STATS_TABLE: &str = "run_stats_hourly";

/// The one-row table holding the rollup watermark (migration 16).
pub const WATERMARK_TABLE: &str = "run_stats_watermark";

/// `<alias>.status NOT IN ('PENDING', 'RUNNING')` (no alias: the bare column).
pub fn finished(alias: &str) -> String {
    if alias.is_empty() {
        "status NOT IN ('PENDING', 'RUNNING')".into()
    } else {
        format!("{alias}.status NOT IN ('PENDING', 'RUNNING')")
    }
}

/// Retention and rollup settings (`SYNCFLEET_HISTORY_*`, docs/architecture.md §9).
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// Finished runs older than this may be deleted (once their hour is rolled up).
    pub retention: Duration,
    /// Finished runs every integration keeps whatever their age (at least 1).
    pub keep_runs: u32,
    /// How often the history loop runs (rollup, then retention).
    pub period: Duration,
    /// Candidate rows per retention batch (one short statement or a few).
    pub delete_batch: u32,
    /// Pause between two retention batches, so the deletes leave room for the hot path.
    pub batch_pause: Duration,
    /// An hour is complete, and rolled up, this long after it ended: a finish commits
    /// shortly after it stamps `completed_at`, never this much later.
    pub rollup_grace: Duration,
    /// Most hours one pass rolls up (a backlog, e.g. after the upgrade, spreads over
    /// passes).
    pub max_hours_per_pass: u32,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 86_400),
            keep_runs: 100,
            period: Duration::from_secs(60),
            delete_batch: 5_000,
            batch_pause: Duration::from_millis(50),
            rollup_grace: Duration::from_secs(300),
            max_hours_per_pass: 24,
        }
    }
}

/// Which clock decides what is complete and what is old: the database's in production;
/// a given instant in tests and benchmarks that compress time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Database,
    At(DateTime<Utc>),
}

impl Clock {
    pub async fn now(self, db: &impl ConnectionTrait) -> Result<DateTime<Utc>, DbErr> {
        match self {
            Self::At(t) => Ok(t),
            Self::Database => db_now(db).await,
        }
    }
}

/// The database's current time.
pub async fn db_now(db: &impl ConnectionTrait) -> Result<DateTime<Utc>, DbErr> {
    let d = Dialect::of(db);
    let rows = db::query(db, format!("SELECT {} AS now", d.now()), []).await?;
    rows.first()
        .ok_or_else(|| DbErr::Custom("the clock query returned nothing".into()))?
        .try_get("", "now")
}

/// The rollup watermark: every hour before it is rolled up (`None`: none yet).
pub async fn watermark(db: &impl ConnectionTrait) -> Result<Option<DateTime<Utc>>, DbErr> {
    let rows = db::query(
        db,
        format!("SELECT rolled_up_to FROM {WATERMARK_TABLE} WHERE id = 1"),
        [],
    )
    .await?;
    match rows.first() {
        Some(r) => r.try_get("", "rolled_up_to"),
        None => Ok(None),
    }
}

/// The start of the hour `t` falls in.
pub fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(3600), 0).unwrap_or(t)
}

/// The end of the hour `t` falls in (the next hour's start; `t` itself if aligned).
pub fn ceil_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let f = floor_hour(t);
    if f == t { t } else { f + TimeDelta::hours(1) }
}

/// The smallest UUIDv7 stamped at `t`: run ids below it were created before `t` (by
/// the creating process's clock). Ids compare bytewise on both databases.
pub fn id_floor(t: DateTime<Utc>) -> Uuid {
    let ms = u128::try_from(t.timestamp_millis().max(0)).unwrap_or(0) & ((1u128 << 48) - 1);
    Uuid::from_u128(ms << 80)
}

pub(crate) fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn hours_round_both_ways() {
        assert_eq!(
            floor_hour(t("2026-12-02T10:59:59.999Z")),
            t("2026-12-02T10:00:00Z")
        );
        assert_eq!(
            ceil_hour(t("2026-12-02T10:00:00.001Z")),
            t("2026-12-02T11:00:00Z")
        );
        assert_eq!(
            ceil_hour(t("2026-12-02T10:00:00Z")),
            t("2026-12-02T10:00:00Z")
        );
    }

    #[test]
    fn id_floor_orders_like_uuidv7() {
        let at = t("2026-12-02T10:00:00Z");
        let before = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            at.timestamp() as u64 - 1,
            999_000_000,
        ));
        let after = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            at.timestamp() as u64,
            0,
        ));
        assert!(before < id_floor(at));
        assert!(id_floor(at) <= after);
        assert_eq!(id_floor(at).as_bytes()[..6], after.as_bytes()[..6]);
    }
}
