//! The local record store: content-hash change detection and batched, fenced writes.
//!
//! The diff against what is stored is computed before the finish transaction (a read
//! of `(external_id, content_hash)` for the integration); the writes happen inside the
//! finish transaction, after the run's fence was checked and its row locked, so a
//! zombie worker's records never land. Unchanged rows are not touched at all.

use std::collections::{HashMap, HashSet};

use sea_orm::{ConnectionTrait, DbErr, Value};
use uuid::Uuid;

use crate::conflicts::{self, Cloud, Local, Met, Source};
use crate::connectors::SourceRecord;
use crate::db::{self, Dialect};

/// Rows per multi-row statement (4 binds each: well under every driver's limit).
const CHUNK: usize = 500;

/// Stored rows read per query: the driver buffers a whole result set, so reading a
/// large integration in one statement would hold every row twice (driver rows and map).
const READ_CHUNK: usize = 10_000;

/// What a run did to the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub received: i64,
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub deleted: i64,
}

/// The writes one run will make.
#[derive(Debug, Default)]
pub struct Plan {
    /// Sorted by id, one per id.
    upserts: Vec<SourceRecord>,
    deletes: Vec<String>,
    pub counts: Counts,
}

impl Plan {
    /// Rows this plan writes.
    pub fn writes(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }
}

/// A stored row as change detection sees it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// `None` if the stored hash is not one this code wrote (then the row is rewritten).
    hash: Option<[u8; 32]>,
    deleted: bool,
}

/// `(external_id → hash, deleted)` of every stored row of the integration, read in
/// id-ordered chunks so that only one chunk of driver rows is alive at a time.
async fn stored(db: &impl ConnectionTrait, integration_id: Uuid) -> Result<StoredRows, DbErr> {
    let mut stored = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let cols =
            "SELECT external_id, content_hash, deleted_at IS NOT NULL AS deleted FROM records";
        let rows =
            match after.take() {
                None => db::query(
                    db,
                    format!(
                        "{cols} WHERE integration_id = $1 ORDER BY external_id LIMIT {READ_CHUNK}"
                    ),
                    [integration_id.into()],
                )
                .await?,
                Some(last) => {
                    db::query(
                        db,
                        format!(
                            "{cols} WHERE integration_id = $1 AND external_id > $2 \
                         ORDER BY external_id LIMIT {READ_CHUNK}"
                        ),
                        [integration_id.into(), last.into()],
                    )
                    .await?
                }
            };
        let full_chunk = rows.len() == READ_CHUNK;
        stored.reserve(rows.len());
        for r in rows {
            let (id, row) = stored_row(&r)?;
            if full_chunk {
                after = Some(id.clone());
            }
            stored.insert(id, row);
        }
        if !full_chunk {
            return Ok(stored);
        }
    }
}

/// What is stored of one integration: `external_id → (hash, deleted)`.
pub type StoredRows = HashMap<String, Stored>;

/// Most rows one batched read ([`stored_many`]) may return.
const MANY_CAP: usize = 50_000;

/// The stored rows of several integrations in one statement (the change detection of
/// many small runs, grouped like their claims and finishes). A single integration is
/// read in chunks; a batch whose rows exceed [`MANY_CAP`] fails, so its caller reads
/// each integration on its own (the group batcher does, `work::batcher`).
pub async fn stored_many(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
) -> Result<Vec<StoredRows>, DbErr> {
    if let [one] = ids {
        return Ok(vec![stored(db, *one).await?]);
    }
    let mut unique: Vec<Uuid> = ids.to_vec();
    unique.sort();
    unique.dedup();
    let cols = "SELECT integration_id, external_id, content_hash, deleted_at IS NOT NULL AS deleted FROM records";
    let limit = MANY_CAP + 1;
    let rows = match Dialect::of(db) {
        // One statement text whatever the batch size (see `work::pg_array`).
        Dialect::Postgres => {
            db::query(
                db,
                format!("{cols} WHERE integration_id = ANY($1::text::uuid[]) LIMIT {limit}"),
                [Value::from(crate::work::pg_array(&unique))],
            )
            .await?
        }
        Dialect::Sqlite => {
            let list: Vec<String> = (1..=unique.len()).map(|i| format!("${i}")).collect();
            db::query(
                db,
                format!(
                    "{cols} WHERE integration_id IN ({}) LIMIT {limit}",
                    list.join(", ")
                ),
                unique.iter().map(|id| Value::from(*id)),
            )
            .await?
        }
    };
    if rows.len() > MANY_CAP {
        return Err(DbErr::Custom(format!(
            "{} integrations hold more than {MANY_CAP} records together",
            unique.len()
        )));
    }
    let mut by: HashMap<Uuid, StoredRows> = HashMap::with_capacity(unique.len());
    for r in rows {
        let (id, row) = stored_row(&r)?;
        by.entry(r.try_get("", "integration_id")?)
            .or_default()
            .insert(id, row);
    }
    Ok(ids
        .iter()
        .map(|id| by.get(id).cloned().unwrap_or_default())
        .collect())
}

fn stored_row(r: &sea_orm::QueryResult) -> Result<(String, Stored), DbErr> {
    let id: String = r.try_get("", "external_id")?;
    let hash: String = r.try_get("", "content_hash")?;
    Ok((
        id,
        Stored {
            hash: hex::decode(hash)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok()),
            deleted: r.try_get("", "deleted")?,
        },
    ))
}

/// Compares the fetched records with the stored ones.
pub async fn plan(
    db: &impl ConnectionTrait,
    integration_id: Uuid,
    fetched: Vec<SourceRecord>,
    full: bool,
) -> Result<Plan, DbErr> {
    let stored = stored(db, integration_id).await?;
    Ok(diff(stored, fetched, full))
}

/// The plan of writes that turns `stored` into `fetched` (a full sync also deletes what
/// was not fetched).
pub fn diff(mut stored: StoredRows, mut fetched: Vec<SourceRecord>, full: bool) -> Plan {
    let mut counts = Counts {
        received: i64::try_from(fetched.len()).unwrap_or(i64::MAX),
        ..Counts::default()
    };
    // Last occurrence of an id wins; one statement must not touch a row twice. Reversed
    // first, the stable sort puts the last occurrence first among equal ids, and
    // `dedup_by` keeps the first. The id order also keeps lock acquisition deterministic
    // between concurrent writers.
    fetched.reverse();
    fetched.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    fetched.dedup_by(|a, b| a.external_id == b.external_id);
    // The changed records stay in place as the upserts; each stored row that was
    // fetched is taken out of `stored`, so what is left there was not fetched.
    fetched.retain(|rec| match stored.remove(&rec.external_id) {
        Some(s) if !s.deleted && s.hash.as_ref() == Some(rec.data.content_hash()) => {
            counts.unchanged += 1;
            false
        }
        Some(_) => {
            counts.updated += 1;
            true
        }
        None => {
            counts.inserted += 1;
            true
        }
    });
    fetched.shrink_to_fit();
    let mut deletes = Vec::new();
    if full {
        deletes = stored
            .into_iter()
            .filter(|(_, s)| !s.deleted)
            .map(|(id, _)| id)
            .collect();
        deletes.sort();
        counts.deleted = i64::try_from(deletes.len()).unwrap_or(i64::MAX);
    }
    Plan {
        upserts: fetched,
        deletes,
        counts,
    }
}

/// The plan of changes the cloud sent in a webhook (docs/architecture.md §4.19):
/// `upserts` are compared with what is stored as a pull's records are, `deletes` are the
/// stored live records among those ids, and nothing else is deleted (a webhook is not a
/// full sync). Only the stored rows of those ids are read. Call it inside the
/// transaction that holds the integration's row, then [`apply_many`] the plan.
pub async fn plan_changes(
    db: &impl ConnectionTrait,
    integration_id: Uuid,
    upserts: Vec<SourceRecord>,
    deletes: Vec<String>,
) -> Result<Plan, DbErr> {
    let mut ids: Vec<&str> = upserts
        .iter()
        .map(|r| r.external_id.as_str())
        .chain(deletes.iter().map(String::as_str))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut stored = StoredRows::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let rows = db::query(
            db,
            format!(
                "SELECT external_id, content_hash, deleted_at IS NOT NULL AS deleted FROM records \
                 WHERE integration_id = $1 AND external_id IN ({})",
                crate::work::placeholders(2, chunk.len())
            ),
            std::iter::once(Value::from(integration_id))
                .chain(chunk.iter().map(|e| Value::from((*e).to_owned()))),
        )
        .await?;
        for r in &rows {
            let (id, row) = stored_row(r)?;
            stored.insert(id, row);
        }
    }
    // An id both upserted and deleted is upserted: the record the cloud sent stands.
    let upserted: HashSet<&str> = upserts.iter().map(|r| r.external_id.as_str()).collect();
    let mut gone: Vec<String> = deletes
        .iter()
        .filter(|e| !upserted.contains(e.as_str()))
        .filter(|e| stored.get(*e).is_some_and(|s| !s.deleted))
        .cloned()
        .collect();
    gone.sort();
    gone.dedup();
    let received = i64::try_from(deletes.len()).unwrap_or(i64::MAX);
    let mut plan = diff(stored, upserts, false);
    plan.counts.received = plan.counts.received.saturating_add(received);
    plan.counts.deleted = i64::try_from(gone.len()).unwrap_or(i64::MAX);
    plan.deletes = gone;
    Ok(plan)
}

/// Most not-`synced` records one batched scan ([`unsynced`]) returns; beyond it the
/// records a plan touches are probed one chunk at a time instead.
const UNSYNCED_CAP: usize = 50_000;

/// `(integration, external_id)` of the records of `ids` whose local copy is not
/// `synced` (a local change waits, is pushing, failed or is held), through the partial
/// index on them: nearly always none. `None` = more than [`UNSYNCED_CAP`].
async fn unsynced(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
) -> Result<Option<HashSet<(Uuid, String)>>, DbErr> {
    let limit = UNSYNCED_CAP + 1;
    let rows = match Dialect::of(db) {
        Dialect::Postgres => {
            db::query(
                db,
                format!(
                    "SELECT integration_id, external_id FROM records WHERE integration_id = ANY($1::text::uuid[]) \
                     AND sync_state <> 'synced' LIMIT {limit}"
                ),
                [Value::from(crate::work::pg_array(ids))],
            )
            .await?
        }
        Dialect::Sqlite => {
            db::query(
                db,
                format!(
                    "SELECT integration_id, external_id FROM records WHERE integration_id IN ({}) \
                     AND sync_state <> 'synced' LIMIT {limit}",
                    crate::work::placeholders(1, ids.len())
                ),
                ids.iter().map(|id| Value::from(*id)),
            )
            .await?
        }
    };
    if rows.len() > UNSYNCED_CAP {
        return Ok(None);
    }
    let mut out = HashSet::with_capacity(rows.len());
    for r in rows {
        out.insert((
            r.try_get("", "integration_id")?,
            r.try_get("", "external_id")?,
        ));
    }
    Ok(Some(out))
}

/// Applies the plans of many runs (one per integration) in shared statements: the
/// upserts of all of them in chunks, sorted by `(integration_id, external_id)` so
/// concurrent writers lock rows in one order. Call only inside the finish transaction,
/// after the fence check (or, for a webhook's changes, with the integration's row
/// locked).
///
/// A record whose local copy has a change the cloud has not taken is never overwritten
/// here: it is locked and handed to the integration's conflict rules
/// (`conflicts::meet`), and every other upsert is guarded by `sync_state = 'synced'`, so
/// a local write that commits between the scan and the upsert wins the race (the next
/// pull meets it as a conflict).
pub async fn apply_many(
    db: &impl ConnectionTrait,
    plans: &[(Uuid, &Plan)],
    source: Source,
) -> Result<Met, DbErr> {
    let mut met = Met::default();
    if plans.is_empty() {
        return Ok(met);
    }
    let d = Dialect::of(db);
    let now = d.now();
    let mut sorted: Vec<&(Uuid, &Plan)> = plans.iter().collect();
    sorted.sort_by_key(|(id, _)| *id);
    let ids: Vec<Uuid> = sorted.iter().map(|(id, _)| *id).collect();
    let rules = conflicts::rules_of(db, &ids).await?;

    // The records with local changes among those the plans touch, locked.
    let scan = unsynced(db, &ids).await?;
    let mut locals: HashMap<Uuid, Vec<Local>> = HashMap::new();
    for (id, plan) in &sorted {
        let touched: Vec<&str> = plan
            .upserts
            .iter()
            .map(|r| r.external_id.as_str())
            .chain(plan.deletes.iter().map(String::as_str))
            .filter(|e| match &scan {
                Some(s) => s.contains(&(*id, (*e).to_owned())),
                None => true,
            })
            .collect();
        if !touched.is_empty() {
            let l = conflicts::locals(db, *id, &touched).await?;
            if !l.is_empty() {
                locals.insert(*id, l);
            }
        }
    }
    let held = |id: &Uuid, e: &str| {
        locals
            .get(id)
            .is_some_and(|l| l.iter().any(|x| x.external_id == e))
    };

    let mut rows: Vec<(Uuid, &SourceRecord, Option<String>)> = Vec::new();
    for (id, plan) in &sorted {
        let pointer = rules.get(id).and_then(|r| r.version_pointer.as_ref());
        for r in &plan.upserts {
            if held(id, &r.external_id) {
                continue;
            }
            // The cloud's version, where the integration says where it is.
            let version = pointer.and_then(|_| rules.get(id)?.cloud_of(&r.data).version);
            rows.push((*id, r, version));
        }
    }
    for chunk in rows.chunks(CHUNK) {
        let mut sql = String::from(
            "INSERT INTO records (integration_id, external_id, data, content_hash, version, deleted_at, synced_at, \
             agreed_hash, cloud_version) VALUES ",
        );
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 5);
        for (i, (id, rec, version)) in chunk.iter().enumerate() {
            let p = 1 + i * 5;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${p}, ${}, {}, ${h}, 1, NULL, {now}, ${h}, ${})",
                p + 1,
                d.json_from_text(&format!("${}", p + 2)),
                p + 4,
                h = p + 3,
            ));
            values.push((*id).into());
            values.push(rec.external_id.clone().into());
            values.push(rec.data.as_str().to_owned().into());
            values.push(rec.data.content_hash_hex().into());
            values.push(version.clone().into());
        }
        sql.push_str(
            " ON CONFLICT (integration_id, external_id) DO UPDATE SET data = excluded.data, \
             content_hash = excluded.content_hash, version = records.version + 1, deleted_at = NULL, \
             synced_at = excluded.synced_at, agreed_hash = excluded.agreed_hash, cloud_version = excluded.cloud_version \
             WHERE records.sync_state = 'synced'",
        );
        db::exec(db, sql, values).await?;
    }
    for (id, plan) in &sorted {
        let deletes: Vec<&String> = plan.deletes.iter().filter(|e| !held(id, e)).collect();
        for chunk in deletes.chunks(CHUNK) {
            let sql = format!(
                "UPDATE records SET deleted_at = {now}, synced_at = {now}, agreed_hash = NULL, cloud_version = NULL \
                 WHERE integration_id = $1 AND deleted_at IS NULL AND sync_state = 'synced' AND external_id IN ({})",
                crate::work::placeholders(2, chunk.len())
            );
            let mut values: Vec<Value> = vec![(*id).into()];
            values.extend(chunk.iter().map(|id| Value::from((*id).clone())));
            db::exec(db, sql, values).await?;
        }
    }

    // The conflicts, settled by each integration's rules.
    for (id, plan) in &sorted {
        let (Some(l), Some(r)) = (locals.get(id), rules.get(id)) else {
            continue;
        };
        let mut incoming =
            conflicts::clouds_of(r, plan.upserts.iter().filter(|x| held(id, &x.external_id)));
        for e in &plan.deletes {
            if held(id, e) {
                incoming.insert(e.as_str(), Cloud::deleted());
            }
        }
        let m = conflicts::meet(db, *id, r, l, &incoming, source).await?;
        met.conflicts += m.conflicts;
        met.opened += m.opened;
    }
    Ok(met)
}

/// Soft-deletes every stored record of the integrations `ids` (full syncs that returned
/// nothing); returns how many each lost. A record with a local change the cloud has not
/// taken is kept: its push settles it with the cloud.
pub async fn delete_all(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, i64>, DbErr> {
    let mut deleted = HashMap::new();
    if ids.is_empty() {
        return Ok(deleted);
    }
    let now = Dialect::of(db).now();
    let list: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let rows = db::query(
        db,
        format!(
            "UPDATE records SET deleted_at = {now}, synced_at = {now}, agreed_hash = NULL, cloud_version = NULL \
             WHERE deleted_at IS NULL AND sync_state = 'synced' AND integration_id IN ({}) RETURNING integration_id",
            list.join(", ")
        ),
        ids.iter().map(|id| Value::from(*id)),
    )
    .await?;
    for r in rows {
        *deleted.entry(r.try_get("", "integration_id")?).or_default() += 1;
    }
    Ok(deleted)
}
