//! Turns tokio time into protocol time.

use x0_protocols::Millis;

/// Milliseconds since the node started, on tokio's clock.
///
/// tokio's clock, never `std::time`: under the simulator it is paused and auto-advanced,
/// which is what makes a thousand nodes' timers run in virtual time.
#[derive(Clone, Copy, Debug)]
pub struct NodeClock {
    epoch: tokio::time::Instant,
}

impl NodeClock {
    pub fn start() -> Self {
        NodeClock {
            epoch: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Millis {
        Millis(self.epoch.elapsed().as_millis() as u64)
    }

    /// How long from now until `at` (zero if it has passed).
    pub fn until(&self, at: Millis) -> std::time::Duration {
        std::time::Duration::from_millis(at.since(self.now()))
    }
}
