//! Live updates: one change feed per API replica, fanned out to every open console
//! over server-sent events (`GET /console/events`).
//!
//! Where changes come from:
//! - PostgreSQL: `LISTEN syncfleet_changes`. The run finish (single and batched) and
//!   every control action (`control::audit`) send `NOTIFY` inside their transaction
//!   (`syncfleet_worker::notify`), so the change is heard exactly when it commits.
//! - SQLite (embedded): control actions of this process directly, and from a poll
//!   (one indexed query each per 250 ms): finished runs (`run_history.completed_at`) and
//!   control actions from anywhere, the API and the CLI included (`audit_events.id`).
//! - Both: runs that started (PENDING → RUNNING) from a poll of `live_runs` (every
//!   500 ms on PostgreSQL): the claim sends no `NOTIFY`, which would put PostgreSQL's
//!   commit-time notify lock on the hottest path.
//!
//! A change is rendered once per replica (one query for a batch of changed
//! integrations), not once per console, so open consoles add no database load beyond
//! their page loads. Events carry ids `<epoch>-<seq>`; a reconnecting browser sends
//! `Last-Event-ID` and gets what it missed from a ring of recent events, or a
//! `resync` (reload your view) when that is not possible.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use syncfleet_worker::db::{self as q, Dialect};
use syncfleet_worker::notify::CHANNEL;

use super::{Session, overview};
use crate::state::AppState;

/// Events kept for reconnecting browsers.
const RING: usize = 4096;
/// Changes arriving within this window are rendered together.
const GATHER: Duration = Duration::from_millis(40);
/// Fleet counts are refreshed at least this often while someone watches (runs that
/// started are heard from a poll, see `poll_feed`).
const COUNTS_EVERY: Duration = Duration::from_secs(3);
/// How often an idle stream writes a comment. A closed browser connection is noticed at
/// a write (the second one after the close at the latest), so this bounds how long a
/// gone console keeps its stream.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How often an open stream re-checks its session (logout, revoked key, expiry).
const RECHECK: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct LiveEvent {
    pub seq: u64,
    /// The workspace it belongs to (`None`: counts across all workspaces).
    pub workspace: Option<Uuid>,
    /// `card`, `counts` or `resync`.
    pub name: &'static str,
    pub data: String,
}

pub struct Live {
    epoch: String,
    seq: AtomicU64,
    tx: broadcast::Sender<std::sync::Arc<LiveEvent>>,
    ring: Mutex<VecDeque<std::sync::Arc<LiveEvent>>>,
    /// Sequence numbers at or below this were never kept (no one was listening).
    gap: AtomicU64,
    local_tx: mpsc::UnboundedSender<Uuid>,
    local_rx: Mutex<Option<mpsc::UnboundedReceiver<Uuid>>>,
    /// Open streams by workspace scope (which counts to compute).
    watchers: Mutex<HashMap<Option<Uuid>, usize>>,
}

impl Default for Live {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(1024);
        let (local_tx, local_rx) = mpsc::unbounded_channel();
        Self {
            epoch: super::session::random_hex(4),
            seq: AtomicU64::new(0),
            tx,
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            gap: AtomicU64::new(0),
            local_tx,
            local_rx: Mutex::new(Some(local_rx)),
            watchers: Mutex::default(),
        }
    }
}

impl Live {
    /// An integration changed through this replica (a control action). PostgreSQL
    /// hears of it from the action's own transaction; SQLite from here.
    pub fn changed(&self, id: Uuid) {
        let _ = self.local_tx.send(id);
    }

    fn publish(&self, workspace: Option<Uuid>, name: &'static str, data: String) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let ev = std::sync::Arc::new(LiveEvent {
            seq,
            workspace,
            name,
            data,
        });
        if name == "card"
            && let Ok(mut ring) = self.ring.lock()
        {
            if ring.len() == RING {
                ring.pop_front();
            }
            ring.push_back(ev.clone());
        }
        let _ = self.tx.send(ev);
    }

    /// Where the feed is now: a page rendered after this connects with
    /// `?since=<cursor>` and gets every change since, even one that happened between the
    /// render and the stream's start.
    pub fn cursor(&self) -> String {
        format!("{}-{}", self.epoch, self.seq.load(Ordering::SeqCst))
    }

    fn watching(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    fn scopes(&self) -> Vec<Option<Uuid>> {
        self.watchers
            .lock()
            .map(|w| w.keys().copied().collect())
            .unwrap_or_default()
    }

    fn watch(&self, scope: Option<Uuid>, delta: isize) {
        if let Ok(mut w) = self.watchers.lock() {
            let n = w.entry(scope).or_insert(0);
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                w.remove(&scope);
            }
        }
    }

    /// Events after `last` for `scope`, or `None` when they cannot all be replayed.
    fn replay(&self, last: &str, scope: Option<Uuid>) -> Option<Vec<std::sync::Arc<LiveEvent>>> {
        let (epoch, seq) = last.split_once('-')?;
        let seq: u64 = seq.parse().ok()?;
        if epoch != self.epoch || seq < self.gap.load(Ordering::SeqCst) {
            return None;
        }
        let ring = self.ring.lock().ok()?;
        let oldest = ring.front().map_or(u64::MAX, |e| e.seq);
        let newest = self.seq.load(Ordering::SeqCst);
        if seq < newest && oldest > seq + 1 {
            return None;
        }
        Some(
            ring.iter()
                .filter(|e| e.seq > seq && visible(e, scope))
                .cloned()
                .collect(),
        )
    }
}

fn visible(e: &LiveEvent, scope: Option<Uuid>) -> bool {
    match scope {
        None => true,
        Some(ws) => e.workspace == Some(ws),
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/console/events", get(events))
}

/// Unregisters a stream's scope when the stream is dropped.
struct Watch {
    live: std::sync::Arc<Live>,
    scope: Option<Uuid>,
    open: prometheus::IntGauge,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.live.watch(self.scope, -1);
        self.open.dec();
    }
}

#[derive(serde::Deserialize)]
struct Since {
    since: Option<String>,
}

async fn events(
    State(state): State<AppState>,
    s: Session,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<Since>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let live = state.live.clone();
    let scope = s.caller.workspace_id;
    let mut rx = live.tx.subscribe();
    live.watch(scope, 1);
    state.metrics.console_streams.inc();
    let watch = Watch {
        live: live.clone(),
        scope,
        open: state.metrics.console_streams.clone(),
    };
    // A reconnect names the last event it saw; a first connect, the page's cursor.
    let backlog = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(q.since)
        .map(|last| live.replay(&last, scope));
    let token = super::session::cookie(&headers, super::session::COOKIE).unwrap_or_default();
    let stream = async_stream::stream! {
        let _watch = watch;
        let id = |e: &LiveEvent| format!("{}-{}", live.epoch, e.seq);
        match backlog {
            Some(Some(events)) => {
                for e in events {
                    yield Ok(Event::default().id(id(&e)).event(e.name).data(e.data.clone()));
                }
            }
            Some(None) => {
                let seq = live.seq.load(Ordering::SeqCst);
                yield Ok(Event::default().id(format!("{}-{seq}", live.epoch)).event("resync").data("{}"));
            }
            None => {
                let seq = live.seq.load(Ordering::SeqCst);
                yield Ok(Event::default().id(format!("{}-{seq}", live.epoch)).event("hello").data("{}"));
            }
        }
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Ok(e) => {
                        if visible(&e, scope) {
                            yield Ok(Event::default().id(id(&e)).event(e.name).data(e.data.clone()));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let seq = live.seq.load(Ordering::SeqCst);
                        yield Ok(Event::default().id(format!("{}-{seq}", live.epoch)).event("resync").data("{}"));
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = recheck.tick() => {
                    if !matches!(super::session::lookup(&state, &token).await, Ok(Some(_))) {
                        yield Ok(Event::default().event("logout").data("{}"));
                        break;
                    }
                }
            }
        }
    };
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// The change feed of this replica, until `shutdown`.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let Some(mut local) = state.live.local_rx.lock().ok().and_then(|mut r| r.take()) else {
        return;
    };
    let (remote_tx, mut remote) = mpsc::unbounded_channel::<Option<Uuid>>();
    let pg = Dialect::of(&state.db) == Dialect::Postgres;
    if pg
        && let Some(url) = state
            .config
            .database_url
            .as_ref()
            .map(|u| u.expose().to_owned())
    {
        tokio::spawn(listen(url, remote_tx.clone(), shutdown.clone()));
    }
    tokio::spawn(poll_feed(state.clone(), remote_tx, shutdown.clone(), pg));
    let mut last_counts = Instant::now();
    let mut counts_due = true;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let mut ids: HashSet<Uuid> = HashSet::new();
        let mut resync = false;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(id) = local.recv() => if !pg { ids.insert(id); },
            Some(msg) = remote.recv() => match msg { Some(id) => { ids.insert(id); } None => resync = true },
            _ = tick.tick() => {}
        }
        if !ids.is_empty() {
            // Gather what else arrives in the next moment: one render for a burst.
            let until = tokio::time::Instant::now() + GATHER;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    Some(id) = local.recv() => if !pg { ids.insert(id); },
                    Some(msg) = remote.recv() => match msg { Some(id) => { ids.insert(id); } None => resync = true },
                }
            }
        }
        if !state.live.watching() {
            // Nobody is listening: nothing to render; reconnecting browsers resync.
            if !ids.is_empty() || resync {
                let seq = state.live.seq.fetch_add(1, Ordering::SeqCst) + 1;
                state.live.gap.store(seq, Ordering::SeqCst);
            }
            continue;
        }
        if resync {
            state.live.publish(None, "resync", "{}".into());
        }
        if !ids.is_empty() {
            let ids: Vec<Uuid> = ids.into_iter().collect();
            match overview::cards_by_id(&state, &ids).await {
                Ok(cards) => {
                    for (ws, id, html) in cards {
                        let data = serde_json::json!({ "id": id, "html": html }).to_string();
                        state.live.publish(Some(ws), "card", data);
                    }
                    counts_due = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "console: rendering changed integrations failed")
                }
            }
        }
        let since = last_counts.elapsed();
        if (counts_due && since >= Duration::from_millis(500)) || since >= COUNTS_EVERY {
            last_counts = Instant::now();
            counts_due = false;
            for scope in state.live.scopes() {
                match overview::counts_html(&state, scope).await {
                    Ok(html) => {
                        let data = serde_json::json!({ "html": html }).to_string();
                        state.live.publish(scope, "counts", data);
                    }
                    Err(e) => tracing::warn!(error = %e, "console: fleet counts failed"),
                }
            }
        }
    }
}

/// `LISTEN` on a connection of its own; reconnects, and asks every console to resync
/// after a gap (notifications sent while disconnected are lost).
async fn listen(url: String, tx: mpsc::UnboundedSender<Option<Uuid>>, shutdown: CancellationToken) {
    use sea_orm::sqlx::postgres::PgListener;
    let mut backoff = Duration::from_millis(200);
    loop {
        let connected = async {
            let mut l = PgListener::connect(&url).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(l)
        };
        let mut l = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connected => match r {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "console: LISTEN failed; retrying");
                    tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(backoff) => {} }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        };
        backoff = Duration::from_millis(200);
        let _ = tx.send(None);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                n = l.try_recv() => match n {
                    Ok(Some(n)) => {
                        if let Ok(id) = Uuid::parse_str(n.payload()) {
                            let _ = tx.send(Some(id));
                        }
                    }
                    // The connection dropped and was re-established: something may be lost.
                    Ok(None) => { let _ = tx.send(None); }
                    Err(e) => {
                        tracing::warn!(error = %e, "console: LISTEN connection lost");
                        break;
                    }
                }
            }
        }
    }
}

/// How often the feed looks for runs that started (both dialects) and, on SQLite, for
/// finished runs and control actions.
fn poll_every(pg: bool) -> Duration {
    Duration::from_millis(if pg { 500 } else { 250 })
}

/// Runs read per poll at most; past that the counts still move, cards wait for their finish.
const POLL_LIMIT: u64 = 1000;

/// What the database tells only by being read: runs that went PENDING → RUNNING (a
/// claim announces nothing: a `NOTIFY` there would put PostgreSQL's commit-time notify
/// lock on the hottest path, docs/architecture.md §12.3) and, on SQLite, which has no
/// `NOTIFY`, finished runs and control actions from any process (the API, the CLI).
/// One query of each per period for the whole replica, only while a console watches.
async fn poll_feed(
    state: AppState,
    tx: mpsc::UnboundedSender<Option<Uuid>>,
    shutdown: CancellationToken,
    pg: bool,
) {
    let d = Dialect::of(&state.db);
    let every = poll_every(pg);
    // Runs seen starting in the previous poll (id, fence): a claim stays in the window of
    // a few consecutive polls and is announced once.
    let mut started: HashSet<(Uuid, i64)> = HashSet::new();
    let mut finished_since: Option<String> = None;
    let mut audit_after: Option<Uuid> = None;
    let window_ms = i64::try_from(every.as_millis() * 3).unwrap_or(1500);
    let started_sql = format!(
        "SELECT id, integration_id, fence FROM live_runs \
         WHERE status = 'RUNNING' AND started_at > {} LIMIT {POLL_LIMIT}",
        d.now_plus_ms("$1")
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if !state.live.watching() {
            started.clear();
            finished_since = None;
            audit_after = None;
            continue;
        }
        match q::query(&state.db, started_sql.as_str(), [(-window_ms).into()]).await {
            Ok(rows) => {
                let mut now = HashSet::with_capacity(rows.len());
                for r in &rows {
                    let (Ok(id), Ok(integration), Ok(fence)) = (
                        r.try_get::<Uuid>("", "id"),
                        r.try_get::<Uuid>("", "integration_id"),
                        r.try_get::<i64>("", "fence"),
                    ) else {
                        continue;
                    };
                    if !started.contains(&(id, fence)) {
                        let _ = tx.send(Some(integration));
                    }
                    now.insert((id, fence));
                }
                started = now;
            }
            Err(e) => tracing::warn!(error = %e, "console: polling started runs failed"),
        }
        if pg {
            continue;
        }
        finished_since = poll_finished(&state, &tx, finished_since).await;
        audit_after = poll_audit(&state, &tx, audit_after).await;
    }
}

/// SQLite: integrations whose runs finished since the cursor (the newest `completed_at`
/// seen; `None` starts from now).
async fn poll_finished(
    state: &AppState,
    tx: &mpsc::UnboundedSender<Option<Uuid>>,
    since: Option<String>,
) -> Option<String> {
    let d = Dialect::of(&state.db);
    let rows = match &since {
        None => q::query(&state.db, format!("SELECT {} AS t", d.now()), []).await,
        Some(s) => {
            q::query(
                &state.db,
                format!(
                    "SELECT integration_id, CAST(completed_at AS TEXT) AS t FROM run_history \
                     WHERE completed_at > $1 ORDER BY completed_at LIMIT {POLL_LIMIT}"
                ),
                [s.clone().into()],
            )
            .await
        }
    };
    let mut cursor = since;
    match rows {
        Ok(rows) => {
            for r in &rows {
                if let Ok(id) = r.try_get::<Uuid>("", "integration_id") {
                    let _ = tx.send(Some(id));
                }
                if let Ok(t) = r.try_get::<String>("", "t") {
                    cursor = Some(t);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "console: polling finished runs failed"),
    }
    cursor
}

/// SQLite: integrations changed by a control action since the cursor (the newest audit
/// event id seen; ids are time-ordered UUIDv7; `None` starts from the newest event).
async fn poll_audit(
    state: &AppState,
    tx: &mpsc::UnboundedSender<Option<Uuid>>,
    after: Option<Uuid>,
) -> Option<Uuid> {
    let Some(after) = after else {
        let newest = q::query(&state.db, "SELECT max(id) AS id FROM audit_events", []).await;
        return match newest {
            Ok(rows) => Some(
                rows.first()
                    .and_then(|r| r.try_get::<Option<Uuid>>("", "id").ok().flatten())
                    .unwrap_or(Uuid::nil()),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "console: polling control actions failed");
                None
            }
        };
    };
    let rows = q::query(
        &state.db,
        format!(
            "SELECT id, integration_id FROM audit_events WHERE id > $1 ORDER BY id LIMIT {POLL_LIMIT}"
        ),
        [after.into()],
    )
    .await;
    let mut cursor = after;
    match rows {
        Ok(rows) => {
            for r in &rows {
                if let Ok(Some(id)) = r.try_get::<Option<Uuid>>("", "integration_id") {
                    let _ = tx.send(Some(id));
                }
                if let Ok(id) = r.try_get::<Uuid>("", "id") {
                    cursor = id;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "console: polling control actions failed"),
    }
    Some(cursor)
}
