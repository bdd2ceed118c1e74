//! Typed health events, written in the transaction of the state change that causes them
//! and fanned out there to the workspace's endpoints as deliveries (docs/architecture.md
//! §4.16). A crash can therefore neither lose an event nor invent one: the event, its
//! deliveries and their live rows commit with the change or not at all.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, Utc};
use entity::{ErrorClass, HealthState};
use sea_orm::{ConnectionTrait, DbErr, Value};
use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::db::{self, Dialect};
use crate::work::placeholders;

/// Longest error excerpt an event carries.
pub const ERROR_EXCERPT: usize = 500;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A run failed (opt-in: an endpoint receives it only if it names it).
    SyncFailed,
    /// One failure away from being disabled (once per failure streak).
    AtRisk,
    /// The system disabled the integration.
    Disabled,
    /// The freshness objective is breached (once per breach).
    Stale,
    /// The first success after a failure streak, a disable or a breach.
    Recovered,
    Paused,
    Resumed,
    /// Sent by hand to check an endpoint.
    Test,
    /// A local and a cloud change of one record met and wait for a person.
    ConflictDetected,
}

impl EventType {
    pub const ALL: [EventType; 9] = [
        Self::SyncFailed,
        Self::AtRisk,
        Self::Disabled,
        Self::Stale,
        Self::Recovered,
        Self::Paused,
        Self::Resumed,
        Self::Test,
        Self::ConflictDetected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SyncFailed => "sync.failed",
            Self::AtRisk => "integration.at_risk",
            Self::Disabled => "integration.disabled",
            Self::Stale => "integration.stale",
            Self::Recovered => "integration.recovered",
            Self::Paused => "integration.paused",
            Self::Resumed => "integration.resumed",
            Self::Test => "test",
            Self::ConflictDetected => "conflict.detected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Sent to an endpoint that subscribed to no types in particular.
    pub fn by_default(self) -> bool {
        !matches!(self, Self::SyncFailed | Self::Test)
    }
}

/// Whether an endpoint subscribed to `event_types` (a JSON array of type names; empty =
/// every type sent by default) receives `t`.
pub fn subscribed(event_types: &[String], t: EventType) -> bool {
    if event_types.is_empty() {
        t.by_default()
    } else {
        event_types.iter().any(|s| s == t.as_str())
    }
}

/// One event about an integration, before it is written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: EventType,
    pub integration_id: Uuid,
    pub run_id: Option<Uuid>,
    pub health_before: Option<HealthState>,
    pub error_class: Option<ErrorClass>,
    /// Already redacted (a run's stored error message is secret-free).
    pub error: Option<String>,
    /// Why: a disable's cause (`max_retries`, `auth`, `config`, `poison_run`), a user's
    /// pause or resume reason.
    pub reason: Option<String>,
    /// Who acted (`key:<id>`), for user actions.
    pub actor: Option<String>,
    /// What an event type adds to `data` (a conflict's id and record).
    pub extra: Option<Json>,
}

impl NewEvent {
    pub fn new(event_type: EventType, integration_id: Uuid) -> Self {
        Self {
            event_type,
            integration_id,
            run_id: None,
            health_before: None,
            error_class: None,
            error: None,
            reason: None,
            actor: None,
            extra: None,
        }
    }
}

static PUBLIC_URL: OnceLock<String> = OnceLock::new();

/// The console's public address (`SYNCFLEET_PUBLIC_URL`): events link to the
/// integration's page there. Set once at process start.
pub fn set_public_url(url: &str) {
    let _ = PUBLIC_URL.set(url.trim_end_matches('/').to_owned());
}

/// What [`emit`] wrote.
#[derive(Debug, Default, Clone)]
pub struct Emitted {
    pub events: Vec<Uuid>,
    /// Deliveries created (their live rows are PENDING, due now and not pushed: the
    /// delivery pump pushes them; a caller holding the queue may push them at once).
    pub deliveries: Vec<Uuid>,
}

/// Writes `items` and their deliveries inside the caller's transaction, which already
/// wrote the state change they describe (so the integration rows read here are the
/// state after it).
pub async fn emit(txn: &impl ConnectionTrait, items: &[NewEvent]) -> Result<Emitted, DbErr> {
    let mut out = Emitted::default();
    if items.is_empty() {
        return Ok(out);
    }
    let d = Dialect::of(txn);
    let mut ids: Vec<Uuid> = items.iter().map(|e| e.integration_id).collect();
    ids.sort();
    ids.dedup();
    let rows = db::query(
        txn,
        format!(
            "SELECT id, workspace_id, name, kind, health, retry_count, max_retries, next_sync_at, \
               last_success_at, stale_after_secs, stale_since, {age} AS age_ms, {now} AS now \
             FROM integrations WHERE id IN ({list})",
            age = d.ms_since("COALESCE(last_success_at, created_at)"),
            now = d.now(),
            list = placeholders(1, ids.len()),
        ),
        ids.iter().map(|id| Value::from(*id)),
    )
    .await?;
    let mut subjects: HashMap<Uuid, (Uuid, DateTime<Utc>, Json)> = HashMap::new();
    for r in &rows {
        let id: Uuid = r.try_get("", "id")?;
        let ws: Uuid = r.try_get("", "workspace_id")?;
        let now: DateTime<Utc> = r.try_get("", "now")?;
        let health: HealthState = r.try_get("", "health")?;
        let kind: entity::ConnectorKind = r.try_get("", "kind")?;
        let ts = |c: &str| -> Result<Option<String>, DbErr> {
            Ok(r.try_get::<Option<DateTime<Utc>>>("", c)?.map(rfc3339))
        };
        let age_ms: i64 = r.try_get("", "age_ms")?;
        let mut data = json!({
            "integrationId": id,
            "integrationName": r.try_get::<String>("", "name")?,
            "kind": kind.as_str(),
            "health": crate::protocol::finish::health_str(health),
            "retryCount": r.try_get::<i32>("", "retry_count")?,
            "maxRetries": r.try_get::<i32>("", "max_retries")?,
            "nextSyncAt": ts("next_sync_at")?,
            "lastSuccessAt": ts("last_success_at")?,
            "staleAfterSeconds": r.try_get::<Option<i64>>("", "stale_after_secs")?,
            "stale": r.try_get::<Option<DateTime<Utc>>>("", "stale_since")?.is_some(),
            "stalenessSeconds": age_ms.max(0) / 1000,
        });
        if let Some(base) = PUBLIC_URL.get() {
            data["consoleUrl"] = json!(format!("{base}/integrations/{id}"));
        }
        subjects.insert(id, (ws, now, data));
    }

    // The events (an integration deleted meanwhile has none).
    let mut written: Vec<Written> = Vec::new();
    for e in items {
        let Some((ws, now, base)) = subjects.get(&e.integration_id) else {
            continue;
        };
        let id = Uuid::now_v7();
        let mut data = base.clone();
        data["healthBefore"] = json!(e.health_before.map(crate::protocol::finish::health_str));
        data["healthAfter"] = data["health"].clone();
        if e.event_type == EventType::Stale {
            data["healthAfter"] = json!("stale");
        }
        data["runId"] = json!(e.run_id);
        data["errorClass"] = json!(e.error_class.map(ErrorClass::as_str));
        data["error"] = json!(e.error.as_deref().map(excerpt));
        data["reason"] = json!(e.reason);
        if let Some(a) = &e.actor {
            data["actor"] = json!(a);
        }
        if let Some(Json::Object(extra)) = &e.extra {
            for (k, v) in extra {
                data[k] = v.clone();
            }
        }
        let body = json!({
            "id": id,
            "type": e.event_type.as_str(),
            "timestamp": rfc3339(*now),
            "workspaceId": ws,
            "data": data,
        });
        written.push(Written {
            id,
            workspace: *ws,
            integration: e.integration_id,
            event_type: e.event_type,
            now: *now,
            body: body.to_string(),
        });
    }
    insert_events(txn, &written).await?;
    out.events = written.iter().map(|w| w.id).collect();

    // Fan-out to the workspaces' enabled endpoints that take each type.
    let mut workspaces: Vec<Uuid> = written.iter().map(|w| w.workspace).collect();
    workspaces.sort();
    workspaces.dedup();
    let endpoints = enabled_endpoints(txn, &workspaces).await?;
    let mut targets: Vec<(Uuid, Uuid, Uuid, EventType, DateTime<Utc>)> = Vec::new();
    for w in &written {
        for (endpoint, ews, types) in &endpoints {
            if *ews == w.workspace && subscribed(types, w.event_type) {
                targets.push((w.id, *endpoint, w.workspace, w.event_type, w.now));
            }
        }
    }
    out.deliveries = create_deliveries(txn, &targets).await?;
    Ok(out)
}

/// Queues one delivery of `event` to `endpoint` (a test event, a hand-made retry of an
/// event whose delivery is gone), inside the caller's transaction.
pub async fn deliver_to(
    txn: &impl ConnectionTrait,
    event: Uuid,
    endpoint: Uuid,
    workspace: Uuid,
    t: EventType,
) -> Result<Uuid, DbErr> {
    let now = crate::protocol::reaper::db_now(txn).await?;
    let ids = create_deliveries(txn, &[(event, endpoint, workspace, t, now)]).await?;
    ids.into_iter()
        .next()
        .ok_or_else(|| DbErr::Custom("no delivery created".into()))
}

/// Writes an event that concerns no integration (a `test` event), returning its id.
pub async fn write_workspace_event(
    txn: &impl ConnectionTrait,
    workspace: Uuid,
    t: EventType,
    data: Json,
) -> Result<Uuid, DbErr> {
    let now = crate::protocol::reaper::db_now(txn).await?;
    let id = Uuid::now_v7();
    let body = json!({
        "id": id,
        "type": t.as_str(),
        "timestamp": rfc3339(now),
        "workspaceId": workspace,
        "data": data,
    });
    db::exec(
        txn,
        "INSERT INTO events (id, workspace_id, event_type, integration_id, body, created_at) \
         VALUES ($1, $2, $3, NULL, $4, $5)",
        [
            id.into(),
            workspace.into(),
            t.as_str().into(),
            body.to_string().into(),
            now.into(),
        ],
    )
    .await?;
    Ok(id)
}

/// Rows per multi-row insert (well below every driver's bind limit).
const CHUNK: usize = 200;

async fn insert_events(txn: &impl ConnectionTrait, written: &[Written]) -> Result<(), DbErr> {
    for chunk in written.chunks(CHUNK) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 6);
        let mut tuples = Vec::with_capacity(chunk.len());
        for (k, w) in chunk.iter().enumerate() {
            tuples.push(format!("({})", placeholders(k * 6 + 1, 6)));
            values.extend([
                Value::from(w.id),
                Value::from(w.workspace),
                Value::from(w.event_type.as_str()),
                Value::from(w.integration),
                Value::from(w.body.clone()),
                Value::from(w.now),
            ]);
        }
        db::exec(
            txn,
            format!(
                "INSERT INTO events (id, workspace_id, event_type, integration_id, body, created_at) VALUES {}",
                tuples.join(", ")
            ),
            values,
        )
        .await?;
    }
    Ok(())
}

/// An event as written.
struct Written {
    id: Uuid,
    workspace: Uuid,
    integration: Uuid,
    event_type: EventType,
    now: DateTime<Utc>,
    body: String,
}

/// `(endpoint, workspace, event types)` of the enabled endpoints of `workspaces`.
async fn enabled_endpoints(
    txn: &impl ConnectionTrait,
    workspaces: &[Uuid],
) -> Result<Vec<(Uuid, Uuid, Vec<String>)>, DbErr> {
    if workspaces.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db::query(
        txn,
        format!(
            "SELECT id, workspace_id, event_types FROM notification_endpoints \
             WHERE enabled AND workspace_id IN ({})",
            placeholders(1, workspaces.len())
        ),
        workspaces.iter().map(|w| Value::from(*w)),
    )
    .await?;
    rows.iter()
        .map(|r| {
            let types: String = r.try_get("", "event_types")?;
            Ok((
                r.try_get("", "id")?,
                r.try_get("", "workspace_id")?,
                serde_json::from_str(&types).unwrap_or_default(),
            ))
        })
        .collect()
}

/// Creates each `(event, endpoint, workspace, type, now)` delivery and its live row
/// (PENDING, due now, not pushed).
async fn create_deliveries(
    txn: &impl ConnectionTrait,
    targets: &[(Uuid, Uuid, Uuid, EventType, DateTime<Utc>)],
) -> Result<Vec<Uuid>, DbErr> {
    let mut ids = Vec::with_capacity(targets.len());
    for chunk in targets.chunks(CHUNK) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 6);
        let mut live: Vec<Value> = Vec::with_capacity(chunk.len() * 3);
        let mut tuples = Vec::with_capacity(chunk.len());
        let mut live_tuples = Vec::with_capacity(chunk.len());
        for (k, (event, endpoint, ws, t, now)) in chunk.iter().enumerate() {
            let id = Uuid::now_v7();
            ids.push(id);
            tuples.push(format!(
                "({}, 'pending', 0, {})",
                placeholders(k * 6 + 1, 5),
                format_args!("${}", k * 6 + 6)
            ));
            values.extend([
                Value::from(id),
                Value::from(*ws),
                Value::from(*endpoint),
                Value::from(*event),
                Value::from(t.as_str()),
                Value::from(*now),
            ]);
            live_tuples.push(format!(
                "({}, 'PENDING', ${})",
                placeholders(k * 3 + 1, 2),
                k * 3 + 3
            ));
            live.extend([Value::from(id), Value::from(*endpoint), Value::from(*now)]);
        }
        db::exec(
            txn,
            format!(
                "INSERT INTO notification_deliveries (id, workspace_id, endpoint_id, event_id, event_type, status, attempts, created_at) \
                 VALUES {}",
                tuples.join(", ")
            ),
            values,
        )
        .await?;
        db::exec(
            txn,
            format!(
                "INSERT INTO live_deliveries (id, endpoint_id, status, due_at) VALUES {}",
                live_tuples.join(", ")
            ),
            live,
        )
        .await?;
    }
    Ok(ids)
}

/// At most [`ERROR_EXCERPT`] characters.
pub fn excerpt(s: &str) -> String {
    match s.char_indices().nth(ERROR_EXCERPT) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_failed_and_test_are_opt_in() {
        assert!(subscribed(&[], EventType::Disabled));
        assert!(!subscribed(&[], EventType::SyncFailed));
        assert!(!subscribed(&[], EventType::Test));
        assert!(subscribed(&["sync.failed".into()], EventType::SyncFailed));
        assert!(!subscribed(&["sync.failed".into()], EventType::Disabled));
    }

    #[test]
    fn types_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("nope"), None);
    }

    #[test]
    fn excerpts_are_cut_on_a_character() {
        let long = "é".repeat(600);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), ERROR_EXCERPT + 1);
        assert_eq!(excerpt("short"), "short");
    }
}
