//! Local writes to an integration's records, each committed with its outbox entry in one
//! transaction (the transactional outbox, docs/architecture.md §3.11): no write without
//! the change that will push it, no change without its write, whatever crashes when.
//! A request with an `Idempotency-Key` stores its answer in the same transaction, so a
//! retry of a committed request gets the first answer again and writes nothing.

use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait, Value};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use syncfleet_worker::connectors::RecordJson;
use syncfleet_worker::db::{self as q, Dialect};

use super::read_for_rows;
use crate::auth::Caller;
use crate::error::{ApiError, FieldProblem};
use crate::state::AppState;

/// Most operations in one batch.
pub const MAX_BATCH: usize = 1000;
/// Longest `externalId`.
const MAX_EXTERNAL_ID: usize = 512;

/// What one operation does to a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Create or replace with this data (a JSON object).
    Put(Json),
    /// Merge this JSON merge patch (RFC 7396) into the record's data.
    Patch(Json),
    Delete,
}

/// One local write.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub external_id: String,
    pub op: Op,
    /// The record version the client read (`If-Match`); a stale one is a 409.
    pub if_match: Option<i32>,
}

/// The client's idempotency key and the hash of its request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

impl Idempotency {
    /// `key` for the request `parts` (method, path, headers that change its meaning, body).
    pub fn new(key: &str, parts: &[&[u8]]) -> Result<Self, ApiError> {
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(ApiError::field(
                "Idempotency-Key",
                "must be 1 to 255 printable ASCII characters",
            ));
        }
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        Ok(Self {
            key: key.to_owned(),
            request_hash: hex::encode(h.finalize()),
        })
    }
}

/// The answer of a write: its status and body, and whether it replays a stored one.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Json,
    pub replayed: bool,
}

/// Checks the shape of `writes` (ids, data objects, batch size), naming each problem.
pub fn validate(writes: &[Write]) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if writes.len() > MAX_BATCH {
        errors.push(FieldProblem {
            field: "operations".into(),
            message: format!("at most {MAX_BATCH} operations"),
        });
    }
    for (k, w) in writes.iter().enumerate() {
        let at = |f: &str| {
            if writes.len() > 1 {
                format!("operations[{k}].{f}")
            } else {
                f.to_owned()
            }
        };
        if w.external_id.is_empty()
            || w.external_id.len() > MAX_EXTERNAL_ID
            || w.external_id.chars().any(char::is_control)
        {
            errors.push(FieldProblem {
                field: at("externalId"),
                message: format!("1 to {MAX_EXTERNAL_ID} bytes, no control characters"),
            });
        }
        if let Op::Put(d) | Op::Patch(d) = &w.op
            && !d.is_object()
        {
            errors.push(FieldProblem {
                field: at("data"),
                message: "must be a JSON object".into(),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// How many times a write whose rows stayed busy past the lock timeout is run again
/// before the client is told to retry (503 with `Retry-After`).
const BUSY_ATTEMPTS: u32 = 3;

/// The shortest a local write waits for its integration's lock. The pool's own
/// `lock_timeout` is a quarter of the run lease, so that a worker never waits past its
/// lease; a write holds no lease and waits, holding nothing, for the writes queued
/// before it (writes to one integration are serialised, docs/architecture.md §11).
const WRITE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Applies `writes` to integration `id`'s records, all or nothing, with their outbox
/// entries; `batch` answers `{results: […]}` instead of the one record. A write that
/// met a row locked past the lock timeout (a scheduler tick or a push finish holding it
/// on a loaded database) was rolled back whole, so it is run again a few times first.
pub async fn apply(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    writes: Vec<Write>,
    batch: bool,
    idem: Option<Idempotency>,
) -> Result<Answer, ApiError> {
    validate(&writes)?;
    let mut attempt = 1;
    loop {
        match apply_once(state, caller, id, &writes, batch, idem.as_ref()).await {
            Err(ApiError::Busy) if attempt < BUSY_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

async fn apply_once(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    writes: &[Write],
    batch: bool,
    idem: Option<&Idempotency>,
) -> Result<Answer, ApiError> {
    let txn = state.db.begin().await?;
    if Dialect::of(&txn) == Dialect::Postgres {
        let wait = crate::db::session_timeouts(state.config.protocol.lease)
            .0
            .max(WRITE_LOCK_WAIT.as_millis());
        q::exec(&txn, format!("SET LOCAL lock_timeout = {wait}"), []).await?;
    }
    // The integration is read, not locked: the writers of one integration run side by
    // side, each holding only its key's row and its records' rows (in key order), and a
    // pull's finish upserts only records whose local copy is `synced`, so a write that
    // commits first wins (docs/architecture.md §11 item 36).
    let m = read_for_rows(&txn, caller, id).await?;
    if let Some(i) = idem
        && let Some(answer) = claim_key(&txn, m.workspace_id, i).await?
    {
        txn.rollback().await?;
        return Ok(answer);
    }
    let actor = caller.actor();
    // The records in key order (a stable sort: one record's operations keep theirs), so
    // two batches over the same records lock them in one order instead of deadlocking;
    // the answers go back in the request's order.
    let mut order: Vec<usize> = (0..writes.len()).collect();
    order.sort_by(|a, b| writes[*a].external_id.cmp(&writes[*b].external_id));
    let mut results = vec![Json::Null; writes.len()];
    let mut created_any = false;
    for i in order {
        let (view, created) = write_one(&txn, id, &writes[i], &actor).await?;
        created_any |= created;
        results[i] = view;
    }
    let (status, body) = if batch {
        (200, json!({ "results": results }))
    } else {
        (
            if created_any { 201 } else { 200 },
            results.pop().unwrap_or(Json::Null),
        )
    };
    if let Some(i) = idem {
        q::exec(
            &txn,
            "UPDATE idempotency_keys SET status = $3, body = $4 WHERE workspace_id = $1 AND key = $2",
            [
                m.workspace_id.into(),
                i.key.clone().into(),
                i32::from(status).into(),
                body.to_string().into(),
            ],
        )
        .await?;
    }
    txn.commit().await?;
    Ok(Answer {
        status,
        body,
        replayed: false,
    })
}

/// Takes `i.key` for this request, or returns the answer it already has. The insert of a
/// key that a request still in flight inserted waits for that request's transaction
/// (the key's unique index): committed, its answer is read here; rolled back, the key
/// is this request's.
async fn claim_key(
    txn: &DatabaseTransaction,
    workspace: Uuid,
    i: &Idempotency,
) -> Result<Option<Answer>, ApiError> {
    let d = Dialect::of(txn);
    let inserted = q::exec(
        txn,
        format!(
            "INSERT INTO idempotency_keys (workspace_id, key, request_hash, status, body, created_at) \
             VALUES ($1, $2, $3, 0, '', {}) ON CONFLICT DO NOTHING",
            d.now()
        ),
        [
            workspace.into(),
            i.key.clone().into(),
            i.request_hash.clone().into(),
        ],
    )
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(None);
    }
    let rows = q::query(
        txn,
        "SELECT request_hash, status, body FROM idempotency_keys WHERE workspace_id = $1 AND key = $2",
        [workspace.into(), i.key.clone().into()],
    )
    .await?;
    let r = rows
        .first()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("idempotency key vanished")))?;
    let hash: String = r.try_get("", "request_hash")?;
    if hash != i.request_hash {
        return Err(ApiError::IdempotencyKeyReused);
    }
    let status: i32 = r.try_get("", "status")?;
    let body: String = r.try_get("", "body")?;
    Ok(Some(Answer {
        status: u16::try_from(status).unwrap_or(200),
        body: serde_json::from_str(&body).unwrap_or(Json::Null),
        replayed: true,
    }))
}

/// The record columns a view reads.
const COLUMNS: &str = "external_id, data, version, deleted_at, synced_at, sync_state, cloud_version, \
    cloud_id, modified_at, modified_by";

/// One write and its outbox entry; returns the record's view and whether it was created.
async fn write_one(
    txn: &DatabaseTransaction,
    integration: Uuid,
    w: &Write,
    actor: &str,
) -> Result<(Json, bool), ApiError> {
    let d = Dialect::of(txn);
    let now = d.now();
    let lock = match d {
        Dialect::Postgres => " FOR UPDATE",
        Dialect::Sqlite => "",
    };
    let rows = q::query(
        txn,
        format!(
            "SELECT data, version, deleted_at IS NOT NULL AS deleted, cloud_version, sync_state FROM records \
             WHERE integration_id = $1 AND external_id = $2{lock}"
        ),
        [integration.into(), w.external_id.clone().into()],
    )
    .await?;
    let current = rows.first();
    let live = current.filter(|r| !r.try_get::<bool>("", "deleted").unwrap_or(true));
    let version: Option<i32> = current.map(|r| r.try_get("", "version")).transpose()?;
    if let Some(expected) = w.if_match
        && (live.is_none() || version != Some(expected))
    {
        return Err(ApiError::RecordVersionConflict(live.and(version)));
    }
    let base: Option<String> = current
        .map(|r| r.try_get("", "cloud_version"))
        .transpose()?
        .flatten();
    let (operation, data) = match &w.op {
        Op::Put(d) => ("upsert", Some(d.clone())),
        Op::Patch(p) => {
            let Some(r) = live else {
                return Err(ApiError::NotFound("record"));
            };
            let mut data: Json = r.try_get("", "data")?;
            merge_patch(&mut data, p);
            ("upsert", Some(data))
        }
        Op::Delete => {
            if live.is_none() {
                return Err(ApiError::NotFound("record"));
            }
            ("delete", None)
        }
    };
    let mut created = live.is_none() && operation == "upsert";
    // A record held by an open conflict stays held: the change is kept (and shown as the
    // conflict's local copy) until a person resolves it.
    let held = current
        .map(|r| r.try_get::<String>("", "sync_state"))
        .transpose()?
        .is_some_and(|s| s == "conflict");
    let state = if held { "conflict" } else { "pending" };
    // The written row comes back from the write itself (`RETURNING`).
    let rows = match &data {
        Some(data) => {
            let rec = RecordJson::new(data);
            q::query(
                txn,
                format!(
                    "INSERT INTO records (integration_id, external_id, data, content_hash, version, deleted_at, synced_at, \
                       sync_state, modified_at, modified_by) \
                     VALUES ($1, $2, {json}, $4, 1, NULL, {now}, $6, {now}, $5) \
                     ON CONFLICT (integration_id, external_id) DO UPDATE SET data = excluded.data, \
                       content_hash = excluded.content_hash, version = records.version + 1, deleted_at = NULL, \
                       synced_at = excluded.synced_at, sync_state = excluded.sync_state, modified_at = excluded.modified_at, \
                       modified_by = excluded.modified_by RETURNING {COLUMNS}",
                    json = d.json_from_text("$3"),
                ),
                [
                    integration.into(),
                    w.external_id.clone().into(),
                    rec.as_str().to_owned().into(),
                    rec.content_hash_hex().into(),
                    actor.to_owned().into(),
                    state.into(),
                ],
            )
            .await?
        }
        None => q::query(
            txn,
            format!(
                "UPDATE records SET deleted_at = {now}, synced_at = {now}, version = version + 1, \
                       sync_state = $4, modified_at = {now}, modified_by = $3 \
                     WHERE integration_id = $1 AND external_id = $2 RETURNING {COLUMNS}"
            ),
            [
                integration.into(),
                w.external_id.clone().into(),
                actor.to_owned().into(),
                state.into(),
            ],
        )
        .await?,
    };
    let r = rows
        .first()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the written record vanished")))?;
    let new_version: i32 = r.try_get("", "version")?;
    // A record nobody had yet may have been created by a concurrent write between the
    // read and the upsert (which then waited for it and updated its row).
    if current.is_none() {
        created &= new_version == 1;
    }
    let entry = Uuid::now_v7();
    q::exec(
        txn,
        format!(
            "INSERT INTO outbox (id, integration_id, external_id, operation, data, record_version, base_cloud_version, \
               status, attempts, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $9, 0, $8, {now})"
        ),
        [
            entry.into(),
            integration.into(),
            w.external_id.clone().into(),
            operation.into(),
            data.as_ref().map(|d| d.to_string()).into(),
            new_version.into(),
            base.into(),
            actor.to_owned().into(),
            (if held { "conflict" } else { "pending" }).into(),
        ],
    )
    .await?;
    if held {
        let text = data.as_ref().map(|d| RecordJson::new(d).into_string());
        syncfleet_worker::conflicts::local_changed(
            txn,
            integration,
            &w.external_id,
            text.as_deref(),
        )
        .await?;
    } else {
        syncfleet_worker::push::enqueue(txn, integration, &w.external_id, entry).await?;
    }
    Ok((view_of(r)?, created))
}

/// A record as the API shows it.
pub fn view_of(r: &sea_orm::QueryResult) -> Result<Json, ApiError> {
    let ts = |c: &str| -> Result<Option<String>, ApiError> {
        Ok(r.try_get::<Option<chrono::DateTime<chrono::Utc>>>("", c)?
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
    };
    Ok(json!({
        "externalId": r.try_get::<String>("", "external_id")?,
        "data": r.try_get::<Json>("", "data")?,
        "version": r.try_get::<i32>("", "version")?,
        "deletedAt": ts("deleted_at")?,
        "syncedAt": ts("synced_at")?,
        "syncState": r.try_get::<String>("", "sync_state")?,
        "cloudVersion": r.try_get::<Option<String>>("", "cloud_version")?,
        "cloudId": r.try_get::<Option<String>>("", "cloud_id")?,
        "modifiedAt": ts("modified_at")?,
        "modifiedBy": r.try_get::<Option<String>>("", "modified_by")?,
    }))
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Json, patch: &Json) {
    let Json::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Json::Object(serde_json::Map::new());
    }
    if let Json::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Json::Null), v);
            }
        }
    }
}

/// Deletes idempotency keys older than `older_than` (the history pass); returns how many.
pub async fn prune_keys(
    db: &impl ConnectionTrait,
    older_than: std::time::Duration,
) -> Result<u64, sea_orm::DbErr> {
    let d = Dialect::of(db);
    let r = q::exec(
        db,
        format!(
            "DELETE FROM idempotency_keys WHERE created_at < {}",
            d.now_plus_ms("$1")
        ),
        [Value::from(-syncfleet_worker::config::ms(older_than))],
    )
    .await?;
    Ok(r.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut t = json!({ "a": "b", "c": { "d": "e", "f": "g" } });
        merge_patch(&mut t, &json!({ "a": "z", "c": { "f": null } }));
        assert_eq!(t, json!({ "a": "z", "c": { "d": "e" } }));
        let mut t = json!({ "a": [1, 2] });
        merge_patch(&mut t, &json!({ "a": [3], "n": 1 }));
        assert_eq!(t, json!({ "a": [3], "n": 1 }));
    }

    #[test]
    fn keys_hash_their_request() {
        let a = Idempotency::new("k-1", &[b"PUT", b"/x", b"{}"]).unwrap_or_else(|_| unreachable!());
        let b =
            Idempotency::new("k-1", &[b"PUT", b"/x", b"{ }"]).unwrap_or_else(|_| unreachable!());
        assert_ne!(a.request_hash, b.request_hash);
        assert!(Idempotency::new("", &[]).is_err());
        assert!(Idempotency::new("sp ace", &[]).is_err());
    }

    #[test]
    fn batches_are_bounded_and_named() {
        let w = |id: &str, op: Op| Write {
            external_id: id.into(),
            op,
            if_match: None,
        };
        assert!(validate(&[w("a", Op::Put(json!({})))]).is_ok());
        let Err(ApiError::Validation(e)) = validate(&[w("", Op::Put(json!([])))]) else {
            unreachable!()
        };
        assert_eq!(e.len(), 2);
        let many: Vec<Write> = (0..=MAX_BATCH)
            .map(|k| w(&k.to_string(), Op::Delete))
            .collect();
        assert!(validate(&many).is_err());
    }
}
