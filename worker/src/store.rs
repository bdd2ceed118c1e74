//! The local record store: content-hash change detection and batched, fenced writes.
//!
//! The diff against what is stored is computed before the finish transaction (a read
//! of `(external_id, content_hash)` for the integration); the writes happen inside the
//! finish transaction, after the run's fence was checked and its row locked, so a
//! zombie worker's records never land. Unchanged rows are not touched at all.

use std::collections::{HashMap, HashSet};

use sea_orm::{ConnectionTrait, DbErr, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::connectors::SourceRecord;
use crate::db::{self, Dialect};

/// Rows per multi-row statement (4 binds each: well under every driver's limit).
const CHUNK: usize = 500;

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
    upserts: Vec<(String, serde_json::Value, String)>,
    deletes: Vec<String>,
    pub counts: Counts,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }
}

/// Hex SHA-256 of the canonical JSON (serde_json orders object keys).
pub fn content_hash(data: &serde_json::Value) -> String {
    hex_digest(&Sha256::digest(data.to_string().as_bytes()))
}

fn hex_digest(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Compares the fetched records with the stored ones.
pub async fn plan(
    db: &impl ConnectionTrait,
    integration_id: Uuid,
    fetched: Vec<SourceRecord>,
    full: bool,
) -> Result<Plan, DbErr> {
    let rows = db::query(
        db,
        "SELECT external_id, content_hash, deleted_at IS NOT NULL AS deleted FROM records WHERE integration_id = $1",
        [integration_id.into()],
    )
    .await?;
    let mut stored: HashMap<String, (String, bool)> = HashMap::with_capacity(rows.len());
    for r in rows {
        stored.insert(
            r.try_get("", "external_id")?,
            (r.try_get("", "content_hash")?, r.try_get("", "deleted")?),
        );
    }
    let mut counts = Counts {
        received: i64::try_from(fetched.len()).unwrap_or(i64::MAX),
        ..Counts::default()
    };
    // Last occurrence of an id wins; one statement must not touch a row twice.
    let mut latest: HashMap<String, serde_json::Value> = HashMap::with_capacity(fetched.len());
    for rec in fetched {
        latest.insert(rec.external_id, rec.data);
    }
    let mut upserts = Vec::new();
    let mut seen = HashSet::with_capacity(latest.len());
    for (id, data) in latest {
        let hash = content_hash(&data);
        match stored.get(&id) {
            Some((h, false)) if *h == hash => counts.unchanged += 1,
            Some(_) => {
                counts.updated += 1;
                upserts.push((id.clone(), data, hash));
            }
            None => {
                counts.inserted += 1;
                upserts.push((id.clone(), data, hash));
            }
        }
        seen.insert(id);
    }
    let mut deletes = Vec::new();
    if full {
        deletes = stored
            .into_iter()
            .filter(|(id, (_, deleted))| !deleted && !seen.contains(id))
            .map(|(id, _)| id)
            .collect();
        counts.deleted = i64::try_from(deletes.len()).unwrap_or(i64::MAX);
    }
    // A stable order keeps lock acquisition deterministic between concurrent writers.
    upserts.sort_by(|a, b| a.0.cmp(&b.0));
    deletes.sort();
    Ok(Plan {
        upserts,
        deletes,
        counts,
    })
}

/// Applies a plan. Call only inside the finish transaction, after the fence check.
pub async fn apply(
    db: &impl ConnectionTrait,
    integration_id: Uuid,
    plan: Plan,
) -> Result<(), DbErr> {
    let d = Dialect::of(db);
    let now = d.now();
    for chunk in plan.upserts.chunks(CHUNK) {
        let mut sql = String::from(
            "INSERT INTO records (integration_id, external_id, data, content_hash, version, deleted_at, synced_at) VALUES ",
        );
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 3 + 1);
        values.push(integration_id.into());
        for (i, (id, data, hash)) in chunk.iter().enumerate() {
            let p = 2 + i * 3;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "($1, ${}, ${}, ${}, 1, NULL, {now})",
                p,
                p + 1,
                p + 2
            ));
            values.push(id.clone().into());
            values.push(data.clone().into());
            values.push(hash.clone().into());
        }
        sql.push_str(
            " ON CONFLICT (integration_id, external_id) DO UPDATE SET data = excluded.data, \
             content_hash = excluded.content_hash, version = records.version + 1, deleted_at = NULL, \
             synced_at = excluded.synced_at",
        );
        db::exec(db, sql, values).await?;
    }
    for chunk in plan.deletes.chunks(CHUNK) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "UPDATE records SET deleted_at = {now}, synced_at = {now} \
             WHERE integration_id = $1 AND deleted_at IS NULL AND external_id IN ({})",
            placeholders.join(",")
        );
        let mut values: Vec<Value> = vec![integration_id.into()];
        values.extend(chunk.iter().map(|id| Value::from(id.clone())));
        db::exec(db, sql, values).await?;
    }
    Ok(())
}
