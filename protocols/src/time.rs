//! Protocol time: milliseconds since an epoch chosen by whoever drives the protocol.

use serde::{Deserialize, Serialize};

/// A point in protocol time, in milliseconds since the driver's epoch.
///
/// Protocols never read a clock; the driver (an actor on tokio time, the simulator's
/// virtual clock, a unit test) passes `now` in. Only differences between two `Millis` from
/// the same driver mean anything.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Millis(pub u64);

impl Millis {
    pub const ZERO: Millis = Millis(0);

    /// `self + ms`, saturating instead of wrapping.
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
