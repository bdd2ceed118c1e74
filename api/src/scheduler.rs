//! The background loops of an API replica: the scheduler, the maintenance pass
//! (lost-queue check, reaper, re-enqueuer, repair, queue hygiene) and the slower history
//! pass (hourly rollup, then retention). Leaderless: every replica runs all three; the
//! SQL makes concurrent passes safe.

use std::time::Duration;

use syncfleet_worker::db as q;
use syncfleet_worker::history::{Clock, retention, rollup};
use syncfleet_worker::protocol::{reaper, schedule};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often a scheduler held back by a deep queue looks at it again.
const BACKPRESSURE_RECHECK: Duration = Duration::from_millis(25);

/// Creates due runs and pushes them, waking for the earliest due time.
pub async fn run_scheduler(state: AppState, shutdown: CancellationToken) {
    let cfg = state.config.protocol.clone();
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let sleep = match scheduler_pass(&state).await {
            Ok(Some(full)) if full => Duration::ZERO,
            // Backpressure: look again shortly rather than spin on an overdue slot.
            Ok(None) => BACKPRESSURE_RECHECK.min(cfg.scheduler_tick),
            Ok(Some(_)) => {
                backoff = Duration::from_millis(100);
                match schedule::next_due_in(&state.db).await {
                    Ok(Some(d)) => d.min(cfg.scheduler_tick),
                    Ok(None) => cfg.scheduler_tick,
                    Err(e) => {
                        tracing::warn!(error = %e, "scheduler could not read the next due time");
                        cfg.scheduler_tick
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduler tick failed");
                backoff = (backoff * 2).min(cfg.scheduler_tick.max(Duration::from_millis(100)));
                backoff
            }
        };
        tracing::trace!(sleep_ms = sleep.as_millis() as u64, "scheduler sleeping");
        if sleep.is_zero() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = state.scheduler_wake.notified() => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// One tick. `Some(true)` = the tick was full (more may be due right now); `None` = held
/// back by queue depth.
async fn scheduler_pass(state: &AppState) -> anyhow::Result<Option<bool>> {
    let cfg = &state.config.protocol;
    let depth = state.queue.depth().await?;
    state
        .metrics
        .queue_depth
        .set(i64::try_from(depth).unwrap_or(i64::MAX));
    if depth >= cfg.max_queue_depth {
        // Backpressure: leave due integrations due until the workers catch up.
        return Ok(None);
    }
    let limit = cfg.max_runs_per_tick.min(cfg.max_queue_depth - depth);
    tracing::trace!(depth, "scheduler read the queue depth");
    let ids = schedule::tick(&state.db, limit).await?;
    tracing::trace!(scheduled = ids.len(), depth, "scheduler tick");
    if ids.is_empty() {
        return Ok(Some(false));
    }
    state.metrics.runs_scheduled.inc_by(ids.len() as u64);
    if let Err(e) = state.queue.push(&ids).await {
        // Committed but not pushed: the re-enqueuer pushes them after its timeout.
        tracing::warn!(error = %e, runs = ids.len(), "push after schedule failed; the re-enqueuer will retry");
    }
    Ok(Some(ids.len() as u64 >= limit))
}

/// Lost-queue check, reaper, re-enqueuer, repair and queue hygiene, every reaper period.
pub async fn run_maintenance(state: AppState, shutdown: CancellationToken) {
    let cfg = state.config.protocol.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(cfg.reaper_period) => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = maintenance_pass(&state).await {
            tracing::warn!(error = %e, "maintenance pass failed");
        }
    }
}

async fn maintenance_pass(state: &AppState) -> anyhow::Result<()> {
    let cfg = &state.config.protocol;
    // Redis came back empty (restart, flush, failover to an empty replica): every entry
    // it held is gone, so every PENDING run is pushed again now rather than after the
    // re-enqueue timeout. Pushing is idempotent, so a false alarm costs one pass.
    let lost = match state.queue.lost_entries().await {
        Ok(lost) => lost,
        Err(e) => {
            tracing::warn!(error = %e, "queue unreachable; recovery pushes wait for it");
            false
        }
    };
    if lost {
        // Failing here must not cost the rest of the pass; the marker stays unset until
        // every PENDING run is pushed, so the next pass goes on where this one stopped.
        match repush_all_pending(state).await {
            // Held back by the depth bound.
            Ok((n, false)) => tracing::warn!(
                runs = n,
                "the queue had lost its entries; PENDING runs pushed again up to the depth bound"
            ),
            Ok((n, true)) => {
                tracing::warn!(
                    runs = n,
                    "the queue had lost its entries; every PENDING run pushed again"
                );
                if let Err(e) = state.queue.entries_restored().await {
                    tracing::warn!(error = %e, "could not mark the queue restored; the next pass pushes again");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "pushing every PENDING run again failed; the next pass retries")
            }
        }
    }
    let r = reaper::pass(
        &state.db,
        cfg.retry,
        cfg.max_claims,
        cfg.reenqueue_after,
        cfg.max_runs_per_tick,
    )
    .await;
    state.metrics.reaped_runs.inc_by(r.requeued.len() as u64);
    state.metrics.quarantined_runs.inc_by(r.quarantined);
    state.metrics.repushed_runs.inc_by(r.repushed.len() as u64);
    if !r.requeued.is_empty() || !r.repushed.is_empty() || r.quarantined > 0 || r.repaired > 0 {
        tracing::info!(
            requeued = r.requeued.len(),
            repushed = r.repushed.len(),
            quarantined = r.quarantined,
            repaired = r.repaired,
            "recovery pass"
        );
    }
    let mut push = r.requeued;
    push.extend(r.repushed);
    if !push.is_empty() {
        // Every producer respects the depth bound. A run held back here keeps its fresh
        // `enqueued_at`, so the re-enqueuer offers it again after its timeout.
        let depth = state.queue.depth().await?;
        let room = usize::try_from(cfg.max_queue_depth.saturating_sub(depth)).unwrap_or(0);
        push.truncate(room);
        state.queue.push(&push).await?;
    }
    if r.repaired > 0 {
        state.scheduler_wake.notify_one();
    }
    // Pushes of local changes: the same steps again (§4.17).
    match syncfleet_worker::push::recover(
        &state.db,
        cfg.max_claims,
        cfg.reenqueue_after,
        cfg.max_runs_per_tick,
    )
    .await
    {
        Ok(p) if !p.is_empty() => {
            tracing::info!(pushes = p.len(), "push recovery pass");
            state
                .queue
                .push_work(&syncfleet_worker::push::PUSHES, &p)
                .await?;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "push recovery failed; the next pass retries"),
    }
    // Deliveries: the same recovery steps of the same mechanism (§4.16).
    let dr = syncfleet_worker::notifications::recover(
        &state.db,
        &cfg.notify,
        cfg.max_claims,
        cfg.reenqueue_after,
        cfg.max_runs_per_tick,
    )
    .await;
    if !dr.push.is_empty() || dr.quarantined > 0 {
        tracing::info!(
            requeued = dr.requeued,
            pushed = dr.push.len(),
            quarantined = dr.quarantined,
            "delivery recovery pass"
        );
        state
            .queue
            .push_work(&syncfleet_worker::notifications::DELIVERIES, &dr.push)
            .await?;
    }
    // Queue hygiene every pass: only the embedded queue keeps finished entries (one
    // DELETE of those older than the retention); the Redis queue has none.
    let removed = state.queue.cleanup(cfg.queue_retention).await?;
    if removed > 0 {
        tracing::debug!(removed, "queue cleanup");
    }
    Ok(())
}

/// The history pass every `SYNCFLEET_HISTORY_PERIOD_MS` (docs/architecture.md §3.9): roll
/// up the complete hours, then delete the finished runs the retention and the rollup
/// allow. Its own loop, so a long rollup or a large delete never delays the recovery
/// steps of the maintenance pass.
pub async fn run_history(state: AppState, shutdown: CancellationToken) {
    let cfg = state.config.history.clone();
    let mut keep = retention::Boundaries::default();
    loop {
        tokio::select! {
            () = tokio::time::sleep(cfg.period) => {}
            () = shutdown.cancelled() => return,
        }
        history_pass(&state, &mut keep, &shutdown).await;
    }
}

/// One history pass; each step logs its own failure and the next pass retries.
async fn history_pass(
    state: &AppState,
    keep: &mut retention::Boundaries,
    shutdown: &CancellationToken,
) {
    let cfg = &state.config.history;
    match rollup::pass(&state.db, cfg, Clock::Database).await {
        Ok(r) => {
            state
                .metrics
                .history_rolled_up_hours
                .inc_by(u64::from(r.hours));
            if let Some(w) = r.rolled_up_to {
                state.metrics.history_watermark.set(w.timestamp());
            }
            if r.hours > 0 {
                tracing::info!(
                    hours = r.hours,
                    rows = r.rows,
                    rolled_up_to = ?r.rolled_up_to,
                    "history rolled up"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "history rollup failed; the next pass retries"),
    }
    if shutdown.is_cancelled() {
        return;
    }
    match retention::pass_with(&state.db, cfg, Clock::Database, keep, shutdown).await {
        Ok(r) => {
            state.metrics.history_deleted_runs.inc_by(r.deleted);
            if r.deleted > 0 {
                tracing::info!(
                    deleted = r.deleted,
                    batches = r.batches,
                    cut = ?r.cut,
                    "history retention"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "history retention failed; the next pass retries"),
    }
    // Events and their finished deliveries follow the same retention (§3.10).
    let mut pruned = 0;
    loop {
        match syncfleet_worker::notifications::prune(&state.db, cfg.retention, 1000).await {
            Ok(n) => {
                pruned += n;
                if n < 1000 || shutdown.is_cancelled() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "event retention failed; the next pass retries");
                break;
            }
        }
    }
    if pruned > 0 {
        tracing::info!(events = pruned, "event retention");
    }
    // Pushed and superseded outbox entries follow the history retention (§3.11); the
    // ones still to push, and the failed and conflicting ones, stay.
    match q::exec(
        &state.db,
        format!(
            "DELETE FROM outbox WHERE status IN ('pushed', 'superseded') AND finished_at < {}",
            q::Dialect::of(&state.db).now_plus_ms("$1")
        ),
        [sea_orm::Value::from(-syncfleet_worker::config::ms(
            cfg.retention,
        ))],
    )
    .await
    {
        Ok(r) if r.rows_affected() > 0 => {
            tracing::info!(entries = r.rows_affected(), "outbox retention")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "outbox retention failed; the next pass retries"),
    }
    // Webhook receipts are kept for their window (§4.19): past it, a replay's
    // timestamp is long stale.
    match crate::control::webhooks::prune_receipts(&state.db, state.config.webhook_receipt_window)
        .await
    {
        Ok(n) if n > 0 => tracing::debug!(receipts = n, "webhook receipts expired"),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "webhook receipt retention failed; the next pass retries")
        }
    }
    // Idempotency keys are kept for their window (§3.11).
    match crate::control::records::prune_keys(&state.db, state.config.idempotency_window).await {
        Ok(n) if n > 0 => tracing::debug!(keys = n, "idempotency keys expired"),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "idempotency key retention failed; the next pass retries")
        }
    }
}

/// Pushes every PENDING run last pushed before now, in chunks, up to the depth bound;
/// `(pushed, complete)`.
async fn repush_all_pending(state: &AppState) -> anyhow::Result<(usize, bool)> {
    let cfg = &state.config.protocol;
    let since = reaper::db_now(&state.db).await?;
    let mut total = 0;
    loop {
        let room = cfg
            .max_queue_depth
            .saturating_sub(state.queue.depth().await?);
        let limit = room.min(cfg.max_runs_per_tick);
        if limit == 0 {
            return Ok((total, false));
        }
        let ids = reaper::pushed_before(&state.db, since, limit).await?;
        state.queue.push(&ids).await?;
        total += ids.len();
        if (ids.len() as u64) < limit {
            return Ok((total, true));
        }
    }
}

/// Run and integration gauges from the database; returns `(pending, running)`.
pub async fn refresh_gauges(state: &AppState) -> anyhow::Result<(u64, u64)> {
    let rows = q::query(
        &state.db,
        format!(
            "SELECT (SELECT COUNT(*) FROM live_runs WHERE status = 'PENDING') AS pending, \
                (SELECT COUNT(*) FROM live_runs WHERE status = 'RUNNING') AS running, \
                (SELECT COUNT(*) FROM integrations WHERE health = 'disabled') AS disabled, \
                (SELECT COUNT(*) FROM integrations WHERE stale_since IS NOT NULL) AS stale, \
                (SELECT MAX({age}) FROM integrations WHERE sync_enabled AND stale_after_secs IS NOT NULL) AS max_age_ms, \
                (SELECT COUNT(*) FROM notification_deliveries WHERE status = 'pending') AS deliveries, \
                (SELECT MAX({dage}) FROM notification_deliveries WHERE status = 'pending') AS oldest_ms, \
                (SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'pushing')) AS outbox, \
                (SELECT MAX({dage}) FROM outbox WHERE status IN ('pending', 'pushing')) AS outbox_ms, \
                (SELECT COUNT(*) FROM outbox WHERE status = 'failed') AS outbox_failed, \
                (SELECT COUNT(*) FROM conflicts WHERE status = 'open') AS conflicts",
            age = q::Dialect::of(&state.db).ms_since("COALESCE(last_success_at, created_at)"),
            dage = q::Dialect::of(&state.db).ms_since("created_at"),
        ),
        [],
    )
    .await?;
    let Some(r) = rows.first() else {
        return Ok((0, 0));
    };
    let (pending, running): (i64, i64) = (r.try_get("", "pending")?, r.try_get("", "running")?);
    state.metrics.runs_pending.set(pending);
    state.metrics.runs_running.set(running);
    state
        .metrics
        .disabled_integrations
        .set(r.try_get("", "disabled")?);
    let m = &state.metrics;
    m.stale_integrations.set(r.try_get("", "stale")?);
    let secs = |c: &str| -> anyhow::Result<i64> {
        Ok(r.try_get::<Option<i64>>("", c)?.unwrap_or(0).max(0) / 1000)
    };
    m.max_staleness.set(secs("max_age_ms")?);
    m.deliveries_pending.set(r.try_get("", "deliveries")?);
    m.oldest_pending_delivery.set(secs("oldest_ms")?);
    m.outbox_pending.set(r.try_get("", "outbox")?);
    m.outbox_oldest_pending.set(secs("outbox_ms")?);
    m.outbox_failed.set(r.try_get("", "outbox_failed")?);
    m.open_conflicts.set(r.try_get("", "conflicts")?);
    Ok((
        u64::try_from(pending).unwrap_or(0),
        u64::try_from(running).unwrap_or(0),
    ))
}
