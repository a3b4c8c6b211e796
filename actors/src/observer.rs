//! What a node tells whoever embeds it about events as they happen.
//!
//! The node's inbox listens for deliveries; the simulator listens for everything, to
//! time failure detection and repairs against the faults it injected. Calls happen on the
//! actor's own task, so an observer must be quick and must not block.

use x0_protocols::NodeId;
use x0_protocols::crdt::SignedEntry;
use x0_protocols::forwarding::Delivered;

pub trait NodeObserver: Send + Sync + 'static {
    /// A message addressed to this node arrived intact.
    fn delivered(&self, _message: Delivered) {}
    /// Discovery took `neighbor` into the table.
    fn link_up(&self, _neighbor: NodeId) {}
    /// `neighbor` was declared unreachable (expired, or failed by the failure detector).
    fn link_down(&self, _neighbor: NodeId) {}
    /// The failure detector began to suspect `neighbor`.
    fn suspected(&self, _neighbor: NodeId) {}
    /// The CRDT replica took an entry newer than what its key held.
    fn crdt_applied(&self, _entry: &SignedEntry) {}
    /// The CRDT replica's fingerprint changed to `root`.
    fn crdt_root(&self, _root: u64) {}
}

/// Observes nothing.
pub struct NoObserver;

impl NodeObserver for NoObserver {}

/// Any closure taking deliveries is an observer of deliveries only.
impl<F: Fn(Delivered) + Send + Sync + 'static> NodeObserver for F {
    fn delivered(&self, message: Delivered) {
        self(message)
    }
}
