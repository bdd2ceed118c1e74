//! Schedule settings, pause and resume.

use entity::integrations;
use sea_orm::TransactionTrait;
use serde_json::json;
use uuid::Uuid;

use syncfleet_worker::db::{self as q, Dialect};
use syncfleet_worker::notifications::{EventType, NewEvent};

use super::{Audit, audit, lock, reread};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crate::views::IntegrationView;

/// A requested change of the schedule settings.
#[derive(Debug, Default, Clone)]
pub struct NewSettings {
    /// `None` = unchanged; `Some(None)` = manual syncs only.
    pub interval: Option<Option<i64>>,
    pub enabled: Option<bool>,
    /// Optimistic-locking version the client read, if it sent one.
    pub version: Option<i32>,
}

impl NewSettings {
    pub fn enabled(on: bool) -> Self {
        Self {
            enabled: Some(on),
            ..Self::default()
        }
    }
}

/// What a settings change does to the schedule.
enum Change {
    /// Paused by the user: stop scheduling, cancel the pending run.
    Pause,
    /// Enabled again (from paused or disabled): reset failures, run now.
    Enable,
    /// Still enabled with a new interval: reschedule from the last sync.
    Reschedule,
    /// Nothing that touches the schedule.
    Keep,
}

/// Applies `new` to the caller's integration `id` as `action` (`integration.settings`,
/// `integration.pause`, `integration.resume`), with the caller's reason.
pub async fn apply(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    new: NewSettings,
    action: &str,
    reason: Option<String>,
) -> Result<integrations::Model, ApiError> {
    let txn = state.db.begin().await?;
    let m = lock(&txn, caller, id).await?;
    if new.version.is_some_and(|v| v != m.version) {
        return Err(ApiError::VersionConflict(m.version));
    }
    let d = Dialect::of(&txn);
    let now = d.now();
    let new_interval = new.interval.unwrap_or(m.sync_interval_secs);
    let change = match new.enabled {
        Some(false) if m.sync_enabled => Change::Pause,
        Some(true) if !m.sync_enabled => Change::Enable,
        _ if m.sync_enabled && new_interval != m.sync_interval_secs => Change::Reschedule,
        _ => Change::Keep,
    };
    let set = match change {
        Change::Pause => "sync_enabled = false, health = 'paused', next_sync_at = NULL".to_owned(),
        Change::Enable => format!(
            "sync_enabled = true, health = 'healthy', retry_count = 0, next_trigger = 'schedule', next_sync_at = {now}"
        ),
        // From the last sync (or now), never in the past; no slot while a run is live.
        Change::Reschedule => format!(
            "next_sync_at = CASE WHEN $2 IS NULL OR EXISTS (SELECT 1 FROM live_runs s WHERE s.integration_id = integrations.id) THEN NULL ELSE {} END",
            d.greatest(
                now,
                &d.plus_ms(&format!("COALESCE(last_sync_at, {now})"), "($2 * 1000)")
            )
        ),
        Change::Keep => "next_sync_at = next_sync_at".to_owned(),
    };
    q::exec(
        &txn,
        format!(
            "UPDATE integrations SET {set}, sync_interval_secs = $2, version = version + 1, updated_at = {now} WHERE id = $1"
        ),
        [id.into(), new_interval.into()],
    )
    .await?;
    if matches!(change, Change::Pause) {
        // The run row after the integration row: the protocol's lock order.
        syncfleet_worker::protocol::finish::cancel_pending(
            &txn,
            id,
            "cancelled: integration paused",
        )
        .await?;
    }
    syncfleet_worker::notifications::freshness::refresh(&txn, id, state.lease_secs()).await?;
    let after = reread(&txn, id).await?;
    // A user's pause or resume is an event too (§4.16), written with the change.
    let event = match change {
        Change::Pause => Some(EventType::Paused),
        Change::Enable => Some(EventType::Resumed),
        _ => None,
    };
    let mut deliveries = Vec::new();
    if let Some(t) = event {
        let mut e = NewEvent::new(t, id);
        e.health_before = Some(m.health);
        e.reason = reason.clone();
        e.actor = Some(caller.actor());
        deliveries = syncfleet_worker::notifications::events::emit(&txn, &[e])
            .await?
            .deliveries;
    }
    audit(
        &txn,
        caller,
        Audit {
            action,
            integration: Some(&after),
            workspace_id: None,
            reason,
            before: Some(json!(IntegrationView::from(m))),
            after: Some(json!(IntegrationView::from(after.clone()))),
        },
    )
    .await?;
    txn.commit().await?;
    crate::notifications::push_now(state, &deliveries).await;
    if matches!(change, Change::Enable | Change::Reschedule) {
        state.scheduler_wake.notify_one();
    }
    Ok(after)
}
