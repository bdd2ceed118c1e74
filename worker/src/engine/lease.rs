//! What keeps a claim honest while it executes, whatever its kind of work: its lease
//! renewal, its release when its future is dropped, and the isolation of runs that have
//! lost a worker before.
//!
//! All three live and die with the run's own future. The renewal is a branch of the same
//! `select!` as the work (never a detached task), so a run whose future is dropped — a
//! rebuilt queue worker, a bounded shutdown — stops renewing at once and its lease expires
//! as the protocol expects; the [`InFlight`] guard then gives the claim back right away.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::protocol::Fence;
use crate::work::{self, Work};

/// Runs `work` while renewing `f`'s lease every `lease / 3`; `None` when the lease was
/// lost first (reaped, reclaimed or finished elsewhere): the caller writes nothing.
pub async fn with_lease<T>(
    db: &DatabaseConnection,
    w: &'static Work,
    f: Fence,
    lease: Duration,
    body: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        t = body => Some(t),
        () = renew_until_lost(db, w, f, lease) => None,
    }
}

async fn renew_until_lost(db: &DatabaseConnection, w: &'static Work, f: Fence, lease: Duration) {
    renew_all_until_lost(db, w, vec![f], lease).await;
}

/// Runs `body` while renewing the leases of `fences` (claims executed together, like a
/// batch of pushes sent in one request); `None` when every one of them was lost first.
/// A claim lost while others hold is dropped from the renewal; its finish is fenced, so
/// it writes nothing.
pub async fn with_leases<T>(
    db: &DatabaseConnection,
    w: &'static Work,
    fences: Vec<Fence>,
    lease: Duration,
    body: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        t = body => Some(t),
        () = renew_all_until_lost(db, w, fences, lease) => None,
    }
}

async fn renew_all_until_lost(
    db: &DatabaseConnection,
    w: &'static Work,
    mut fences: Vec<Fence>,
    lease: Duration,
) {
    let every = (lease / 3).max(Duration::from_millis(10));
    while !fences.is_empty() {
        tokio::time::sleep(every).await;
        match work::renew_many(db, w, &fences, lease).await {
            Ok(held) => fences = held,
            // A transient database error: keep trying until the leases run out.
            Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
        }
    }
}

/// The claims this process is executing (of every kind), shared with the guards that
/// release them.
pub type Tracked = Arc<Mutex<HashSet<(&'static Work, Fence)>>>;

/// Tracks one claim while it executes. Dropped before [`InFlight::done`] — the run's
/// future was dropped mid-flight — it releases the claim to PENDING (fenced: a claim that
/// finished or moved on is left alone) and only then forgets it, so a bounded shutdown's
/// `release_all` still sees it.
pub struct InFlight {
    db: DatabaseConnection,
    tracked: Tracked,
    work: &'static Work,
    fence: Fence,
    armed: bool,
}

impl InFlight {
    pub fn new(
        db: &DatabaseConnection,
        tracked: &Tracked,
        work: &'static Work,
        fence: Fence,
    ) -> Self {
        if let Ok(mut set) = tracked.lock() {
            set.insert((work, fence));
        }
        Self {
            db: db.clone(),
            tracked: tracked.clone(),
            work,
            fence,
            armed: true,
        }
    }

    /// The run reached an end (finished, stale, or left for the reaper on a database error).
    pub fn done(mut self) {
        self.armed = false;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let (tracked, w, fence) = (self.tracked.clone(), self.work, self.fence);
        let forget = move || {
            if let Ok(mut set) = tracked.lock() {
                set.remove(&(w, fence));
            }
        };
        if !self.armed {
            forget();
            return;
        }
        let db = self.db.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    match work::release(&db, w, fence).await {
                        Ok(true) => tracing::warn!(work = w.name, id = %fence.id, "claim dropped mid-flight; released to PENDING"),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(work = w.name, id = %fence.id, error = %e, "release of a dropped claim failed; the reaper will recover it"),
                    }
                    forget();
                });
            }
            // No runtime left (process exit): the lease expires and the reaper recovers it.
            Err(_) => forget(),
        }
    }
}

/// Runs that lost a worker before run alone in their process.
///
/// A run whose lease expired under it may be the one that killed its worker, or may only
/// have shared that worker with it. Every run of a crashed process is lost once, so one
/// loss proves nothing; a run lost twice ("suspect": `lost_leases ≥ 2`) is rare unless it
/// is the culprit, and takes this lock exclusively: nothing else runs beside it in this
/// process, and if the process dies now the run alone is to blame — which is when it
/// counts towards its quarantine (`solo_claims`, see
/// [`crate::protocol::claim::mark_solo`]). Released runs (a drain, a dropped future) lost
/// nothing and are not suspects. Ordinary runs share the lock; a run claimed while a
/// suspect waits for or holds the process (one claimed in the same batch) steps aside
/// instead of waiting (see [`Isolation::enter`]).
/// While a suspect waits for or holds the process, the process takes no new runs: its
/// fetcher pops nothing and a hint that arrives anyway goes back to the queue unclaimed
/// (see `runner`), so no other run is claimed into a process that may be about to die
/// with the suspect.
#[derive(Default)]
pub struct Isolation {
    lock: RwLock<()>,
    suspects: Arc<AtomicUsize>,
}

pub enum Isolated<'a> {
    Shared(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    Alone(
        #[allow(dead_code)] RwLockWriteGuard<'a, ()>,
        #[allow(dead_code)] Suspect,
    ),
}

/// Counts one suspect waiting for or holding the process while it lives.
pub struct Suspect(Arc<AtomicUsize>);

impl Drop for Suspect {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Isolation {
    /// Enters the process for one claimed run; `None` means a suspect already waits for
    /// or holds it, and the caller must step aside: give its claim back unexecuted (and
    /// uncounted, see [`crate::protocol::claim::give_back`]), so it cannot die with the
    /// suspect. Waiting instead would queue the run behind the suspect (the lock is fair)
    /// and, if the suspect kills the process, lose it with it: a lost lease, a rerun, and
    /// a step towards being a suspect itself. One suspect at a time: a second one steps
    /// aside too, else the first could take it down and make it look guilty.
    pub async fn enter(&self, suspect: bool) -> Option<Isolated<'_>> {
        if suspect {
            self.suspects
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .ok()?;
            let counted = Suspect(self.suspects.clone());
            Some(Isolated::Alone(self.lock.write().await, counted))
        } else {
            // Fails exactly while a writer (a suspect) holds or waits for the lock.
            self.lock.try_read().ok().map(Isolated::Shared)
        }
    }

    /// Suspects waiting for or holding this process (the fetcher stops while any do).
    pub fn suspects(&self) -> Arc<AtomicUsize> {
        self.suspects.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    fn is_none(i: Option<Isolated<'_>>) -> bool {
        i.is_none()
    }

    /// A run claimed while a suspect waits for or holds the process steps aside instead
    /// of queueing behind it, a second suspect too; once the suspect is done, runs enter
    /// again, suspects included.
    #[tokio::test]
    async fn runs_beside_a_suspect_step_aside_instead_of_waiting() {
        let iso = Isolation::default();
        let running = iso.enter(false).await.expect("an ordinary run enters");
        let also = iso
            .enter(false)
            .await
            .expect("ordinary runs share the process");
        // The suspect waits for the two runs already executing.
        let waiting = iso.enter(true);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut waiting)
                .await
                .is_err(),
            "the suspect waits for the runs already executing"
        );
        assert_eq!(iso.suspects().load(Ordering::Relaxed), 1);
        assert!(is_none(iso.enter(false).await), "a new run steps aside");
        assert!(
            is_none(iso.enter(true).await),
            "a second suspect steps aside"
        );
        drop((running, also));
        let alone = waiting.await.expect("the suspect gets the process");
        assert!(matches!(alone, Isolated::Alone(..)));
        assert!(is_none(iso.enter(false).await), "nothing runs beside it");
        drop(alone);
        assert_eq!(iso.suspects().load(Ordering::Relaxed), 0);
        assert!(
            iso.enter(false).await.is_some(),
            "the process is open again"
        );
        assert!(
            iso.enter(true).await.is_some(),
            "and takes the next suspect"
        );
    }
}
