//! Group commit of the run lifecycle: the claims of many runs in one statement, the
//! finishes of many runs in one transaction (docs/architecture.md §4.7), through the
//! generic [`crate::work::batcher`].
//!
//! The change detection of small records-bearing runs reads their stored rows in one
//! statement too (`store::stored_many`).
//!
//! Nothing of the protocol is weakened: a batch is the same compare-and-set and the same
//! fenced finish as a single run (which is a batch of one, [`claim_many`] and
//! [`finish_many`]); only the round trips are shared.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use sea_orm::{DatabaseConnection, DbErr};
use uuid::Uuid;

use super::claim::Claim;
pub use super::claim::claim_many;
use super::finish::Finished;
pub use super::finish::{FinishReq, finish_many};
use super::policy::RetryPolicy;
use crate::store::{self, StoredRows};
pub use crate::work::MAX_BATCH;
use crate::work::batcher::{BatchFn, Batcher as Group};

/// Loops per batcher: one can be in the database while the next batch gathers.
const LOOPS: usize = 2;

/// Claims and finishes of one worker process, grouped.
pub struct Batcher {
    claims: Group<(Uuid, String), Option<Claim>>,
    /// The stored rows of small runs' integrations, for their change detection.
    reads: Group<Uuid, StoredRows>,
    finishes: Group<FinishReq, Finished>,
}

impl Batcher {
    pub fn start(db: DatabaseConnection, retry: RetryPolicy, lease: Duration) -> Arc<Self> {
        let cdb = db.clone();
        let rdb = db.clone();
        let reads: BatchFn<Uuid, StoredRows> = Arc::new(move |ids| {
            let db = rdb.clone();
            async move { store::stored_many(&db, ids).await }.boxed()
        });
        let claims: BatchFn<(Uuid, String), Option<Claim>> = Arc::new(move |items| {
            let db = cdb.clone();
            async move { claim_batch(&db, items, lease).await }.boxed()
        });
        let finishes: BatchFn<FinishReq, Finished> = Arc::new(move |reqs| {
            let db = db.clone();
            async move { finish_many(&db, retry, reqs).await }.boxed()
        });
        Arc::new(Self {
            claims: Group::start("claim", LOOPS, claims),
            reads: Group::start("record read", LOOPS, reads),
            finishes: Group::start("finish", LOOPS, finishes),
        })
    }

    pub async fn claim(&self, run_id: Uuid, owner: &str) -> Result<Option<Claim>, DbErr> {
        self.claims.submit((run_id, owner.to_owned())).await
    }

    /// What is stored of an integration, read together with other runs' reads.
    pub async fn stored(&self, integration_id: Uuid) -> Result<StoredRows, DbErr> {
        self.reads.submit(integration_id).await
    }

    pub async fn finish(&self, req: FinishReq) -> Result<Finished, DbErr> {
        self.finishes.submit(req).await
    }
}

/// One claim statement per owner (a worker restarted under a new name may overlap).
async fn claim_batch(
    db: &DatabaseConnection,
    items: &[(Uuid, String)],
    lease: Duration,
) -> Result<Vec<Option<Claim>>, DbErr> {
    let mut by_owner: HashMap<&str, Vec<Uuid>> = HashMap::new();
    for (id, owner) in items {
        by_owner.entry(owner.as_str()).or_default().push(*id);
    }
    let mut claimed: HashMap<(Uuid, &str), Claim> = HashMap::with_capacity(items.len());
    for (owner, ids) in by_owner {
        for (id, c) in claim_many(db, owner, &ids, lease).await? {
            claimed.insert((id, owner), c);
        }
    }
    Ok(items
        .iter()
        .map(|(id, owner)| claimed.remove(&(*id, owner.as_str())))
        .collect())
}
