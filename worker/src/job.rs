//! The queue contract. Payloads carry ids only and are versioned: the database holds
//! the state, the queue only says "run this now". Add `V2` beside `V1`, never change `V1`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "v")]
pub enum SyncJob {
    V1 { run_id: Uuid },
}
