//! CRDT sync: mesh-wide state that converges without a leader.
//!
//! [`state`] holds the data (signed entries in `crdts` LWW registers), [`policy`] says who
//! may write what and when it expires, and [`sync`] spreads it: announcements, pulls and
//! anti-entropy over the node's links.

pub mod policy;
pub mod state;
pub mod sync;

pub use policy::{NodeRecord, Policy, REGISTRY, RESERVED_PREFIX, record_key};
pub use state::{
    BUCKETS, Entry, EntryError, Key, KeyId, MAX_NAME_LEN, MAX_SPACE_LEN, MAX_VALUE_LEN, Merge,
    MeshState, SignedEntry, Version,
};
pub use sync::{
    CrdtSync, DirectVerifier, MemoVerifier, Output, SyncMessage, SyncSettings, SyncStats, Verifier,
};
