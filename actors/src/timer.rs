//! One re-armable timer per actor, driven by a sans-IO protocol's `next_deadline`.

use ractor::{ActorRef, Message};
use x0_protocols::Millis;

use crate::clock::NodeClock;

/// Keeps at most one pending tick scheduled for the earliest deadline.
///
/// Each schedule gets a generation number; a tick from a superseded schedule carries an
/// old number and is ignored, so re-arming never needs to cancel a task.
#[derive(Debug, Default)]
pub struct Timer {
    generation: u64,
    armed_for: Option<Millis>,
}

impl Timer {
    /// Schedules `make_tick(generation)` for `deadline` unless an earlier or equal tick is
    /// already pending.
    pub fn arm<M: Message>(
        &mut self,
        myself: &ActorRef<M>,
        clock: &NodeClock,
        deadline: Option<Millis>,
        make_tick: fn(u64) -> M,
    ) {
        let Some(deadline) = deadline else { return };
        if self.armed_for.is_some_and(|at| at <= deadline) {
            return;
        }
        self.generation += 1;
        self.armed_for = Some(deadline);
        let generation = self.generation;
        myself.send_after(clock.until(deadline), move || make_tick(generation));
    }

    /// True if a tick with this generation is the current one (and disarms the timer).
    pub fn fire(&mut self, generation: u64) -> bool {
        if generation != self.generation {
            return false;
        }
        self.armed_for = None;
        true
    }
}
