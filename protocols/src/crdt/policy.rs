//! Who may write which keys, and when entries expire.
//!
//! Reserved spaces: a node writes only its own registry record; channel owners write their
//! channels' descriptors and key grants, and members their own posts (see
//! [`crate::channel`]).
//!
//! Expiry is a pure function of an entry's stamp and the mesh clock, so every node drops
//! the same entries at (nearly) the same moment and no replica can bring an expired entry
//! back: it is refused on arrival for the same reason it was dropped.

use serde::{Deserialize, Serialize};

use super::state::{EntryError, SignedEntry};
use crate::crypto::seal::E2ePublic;
use crate::{NodeId, channel};

/// The node registry: one record per node, written by that node only, under its id.
pub const REGISTRY: &str = "x0/registry";
/// Key spaces under this prefix belong to x0tta6bl4; embedding programs use any other.
pub const RESERVED_PREFIX: &str = "x0/";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// A registry record not refreshed for this long is dropped everywhere.
    pub record_expiry_ms: u64,
    /// A deleted application key is remembered (so older writes stay deleted) this long.
    pub tombstone_expiry_ms: u64,
    /// A channel message is kept (and can be read by members) this long after it was
    /// written; channels are for conversation, not storage.
    pub post_expiry_ms: u64,
    /// Entries stamped further ahead of the local clock than this are refused: a writer
    /// cannot pin a key forever with a stamp from the far future.
    pub max_clock_skew_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            record_expiry_ms: 3_600_000,
            tombstone_expiry_ms: 24 * 3_600_000,
            post_expiry_ms: 7 * 24 * 3_600_000,
            max_clock_skew_ms: 60_000,
        }
    }
}

impl Policy {
    /// Everything but the signature: cheap checks first, so a stale or disallowed entry
    /// never costs a signature verification.
    pub fn admit(&self, entry: &SignedEntry, now: u64) -> Result<(), EntryError> {
        entry.check_bounds()?;
        let e = &entry.entry;
        if e.key.space.starts_with(RESERVED_PREFIX) {
            let allowed = if e.key.space == REGISTRY {
                e.key.name == e.writer.as_bytes()
            } else {
                channel::may_write(&e.key, &e.writer).unwrap_or(false)
            };
            if !allowed {
                return Err(EntryError::NotAllowed(e.key.space.clone()));
            }
        }
        if e.stamp > now.saturating_add(self.max_clock_skew_ms) {
            return Err(EntryError::FromTheFuture);
        }
        if self.expired(entry, now) {
            return Err(EntryError::Expired);
        }
        Ok(())
    }

    pub fn expired(&self, entry: &SignedEntry, now: u64) -> bool {
        let e = &entry.entry;
        let lifetime = if e.key.space == REGISTRY {
            self.record_expiry_ms
        } else if e.value.is_none() {
            self.tombstone_expiry_ms
        } else if e.key.space == channel::CHANNEL_POSTS {
            self.post_expiry_ms
        } else {
            return false;
        };
        e.stamp.saturating_add(lifetime) < now
    }
}

/// What a node publishes about itself in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Where the node listens (multiaddrs in the node, `sim/<index>` in the simulator).
    pub addresses: Vec<String>,
    /// Its end-to-end public keys: X25519 and the ML-KEM-768 encapsulation key.
    pub e2e: E2ePublic,
    /// What it does in the mesh (`validator`, `relay`, …).
    pub roles: Vec<String>,
    /// The software it runs.
    pub software: String,
}

impl NodeRecord {
    pub fn encode(&self) -> Vec<u8> {
        // Owned data into a Vec: cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<NodeRecord, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// The registry key of `node`'s record.
pub fn record_key(node: &NodeId) -> super::Key {
    super::Key::new(REGISTRY, node.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;
    use crate::crdt::{Entry, Key};

    fn entry(identity: &Identity, key: Key, stamp: u64, value: Option<&[u8]>) -> SignedEntry {
        Entry {
            key,
            writer: identity.id(),
            stamp,
            value: value.map(<[u8]>::to_vec),
        }
        .sign(identity)
    }

    #[test]
    fn only_a_node_writes_its_own_record_and_nobody_writes_other_reserved_spaces() {
        let policy = Policy::default();
        let alice = Identity::from_seed([1; 32]);
        let bob = Identity::from_seed([2; 32]);
        let own = entry(&alice, record_key(&alice.id()), 10, Some(b"r"));
        assert_eq!(policy.admit(&own, 10), Ok(()));
        let other = entry(&bob, record_key(&alice.id()), 10, Some(b"r"));
        assert!(matches!(
            policy.admit(&other, 10),
            Err(EntryError::NotAllowed(_))
        ));
        let reserved = entry(&alice, Key::new("x0/other", b"k".to_vec()), 10, Some(b"v"));
        assert!(matches!(
            policy.admit(&reserved, 10),
            Err(EntryError::NotAllowed(_))
        ));
        let app = entry(&bob, Key::new("app", b"k".to_vec()), 10, Some(b"v"));
        assert_eq!(policy.admit(&app, 10), Ok(()));
        let channel = crate::channel::ChannelId::new(alice.id(), "c").unwrap();
        let descriptor = entry(&alice, channel.descriptor_key(), 10, Some(b"d"));
        assert_eq!(policy.admit(&descriptor, 10), Ok(()));
        let hijack = entry(&bob, channel.descriptor_key(), 10, Some(b"d"));
        assert!(policy.admit(&hijack, 10).is_err());
        let post = entry(&bob, channel.post_key(&bob.id(), 1), 10, Some(b"p"));
        assert_eq!(policy.admit(&post, 10), Ok(()));
        let as_alice = entry(&bob, channel.post_key(&alice.id(), 1), 10, Some(b"p"));
        assert!(policy.admit(&as_alice, 10).is_err());
    }

    #[test]
    fn records_and_tombstones_expire_values_do_not_and_the_future_is_refused() {
        let policy = Policy {
            record_expiry_ms: 100,
            tombstone_expiry_ms: 50,
            post_expiry_ms: 70,
            max_clock_skew_ms: 10,
        };
        let alice = Identity::from_seed([1; 32]);
        let record = entry(&alice, record_key(&alice.id()), 1_000, Some(b"r"));
        assert!(!policy.expired(&record, 1_100));
        assert!(policy.expired(&record, 1_101));
        assert_eq!(policy.admit(&record, 1_101), Err(EntryError::Expired));
        let tombstone = entry(&alice, Key::new("app", b"k".to_vec()), 1_000, None);
        assert!(policy.expired(&tombstone, 1_051));
        let value = entry(&alice, Key::new("app", b"k".to_vec()), 1_000, Some(b"v"));
        assert!(!policy.expired(&value, u64::MAX));
        let channel = crate::channel::ChannelId::new(alice.id(), "c").unwrap();
        let post = entry(&alice, channel.post_key(&alice.id(), 1), 1_000, Some(b"p"));
        assert!(!policy.expired(&post, 1_070));
        assert!(policy.expired(&post, 1_071));
        let descriptor = entry(&alice, channel.descriptor_key(), 1_000, Some(b"d"));
        assert!(!policy.expired(&descriptor, u64::MAX));
        assert_eq!(policy.admit(&value, 989), Err(EntryError::FromTheFuture));
    }
}
