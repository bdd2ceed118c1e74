//! The queue contract. Payloads carry ids only and are versioned: the database holds
//! the state, the queue only says "run this now". Add `V2` beside `V1`, never change `V1`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::work::Work;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "v")]
pub enum SyncJob {
    /// A sync run.
    V1 { run_id: Uuid },
    /// A webhook delivery (docs/architecture.md §4.16).
    Delivery1 { delivery_id: Uuid },
    /// A push of a local change (docs/architecture.md §4.17).
    Push1 { push_id: Uuid },
}

impl SyncJob {
    /// The hint for item `id` of the kind `w`.
    pub fn of(w: &Work, id: Uuid) -> Self {
        if w.name == crate::notifications::DELIVERIES.name {
            Self::Delivery1 { delivery_id: id }
        } else if w.name == crate::push::PUSHES.name {
            Self::Push1 { push_id: id }
        } else {
            Self::V1 { run_id: id }
        }
    }

    pub fn id(self) -> Uuid {
        match self {
            Self::V1 { run_id } => run_id,
            Self::Delivery1 { delivery_id } => delivery_id,
            Self::Push1 { push_id } => push_id,
        }
    }

    /// Its entry in the Redis ready set: a run is its bare id (as before there were
    /// other kinds), another kind `<kind>:<id>`.
    pub fn member(self) -> String {
        match self {
            Self::V1 { run_id } => run_id.to_string(),
            Self::Delivery1 { delivery_id } => format!("d:{delivery_id}"),
            Self::Push1 { push_id } => format!("p:{push_id}"),
        }
    }

    /// The hint a ready-set entry names; `None` for an entry that names nothing.
    pub fn from_member(m: &str) -> Option<Self> {
        if let Some(id) = m.strip_prefix("d:") {
            return id
                .parse()
                .ok()
                .map(|delivery_id| Self::Delivery1 { delivery_id });
        }
        if let Some(id) = m.strip_prefix("p:") {
            return id.parse().ok().map(|push_id| Self::Push1 { push_id });
        }
        m.parse().ok().map(|run_id| Self::V1 { run_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_runs_keep_their_bare_id() {
        let id = Uuid::now_v7();
        let run = SyncJob::V1 { run_id: id };
        let delivery = SyncJob::Delivery1 { delivery_id: id };
        let push = SyncJob::Push1 { push_id: id };
        assert_eq!(run.member(), id.to_string());
        for j in [run, delivery, push] {
            assert_eq!(SyncJob::from_member(&j.member()), Some(j));
        }
        assert_eq!(SyncJob::from_member("junk"), None);
        assert_eq!(SyncJob::from_member("d:junk"), None);
    }
}
