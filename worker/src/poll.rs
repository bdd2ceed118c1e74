//! A poll strategy that cannot lose its wake-up.
//!
//! apalis-core 1.0's `IntervalStrategy` (`poll_with_interval`) re-arms its timer after
//! it fires without polling the new timer, so no waker is registered for the next tick.
//! When the backend's fetch then finds nothing, nobody wakes the worker again until the
//! next heartbeat (30 s): under CPU load we saw idle workers miss new work for the whole
//! heartbeat period. This strategy drains every elapsed tick and stops only on
//! `Pending`, which by contract has registered the waker for the next one.

use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy, PollWith};
use tokio::time::{Interval, MissedTickBehavior};

pub struct Tick {
    interval: Interval,
}

impl Tick {
    pub fn new(every: Duration) -> Self {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { interval }
    }
}

impl PollStrategy for Tick {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _snapshot: &PollSnapshot) -> Poll<Option<()>> {
        let mut fired = false;
        while self.interval.poll_tick(cx).is_ready() {
            fired = true;
        }
        if fired {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

/// Wraps a backend so an idle worker polls it every `every`.
pub fn every<B>(backend: B, every: Duration) -> PollWith<B, Tick> {
    PollWith::new(backend, Tick::new(every))
}
