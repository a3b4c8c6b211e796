//! The mesh state: signed entries, one last-writer-wins register per key.
//!
//! Every replicated datum is an [`Entry`] signed by the node that wrote it. A key holds a
//! `crdts::LWWReg` whose marker is the entry's [`Version`], so merging two states is the
//! register merge applied key by key: commutative, associative and idempotent (the
//! property tests below check it). Records of the node registry, liveness and every
//! application key space are all entries; they differ only in who may write them and when
//! they expire, which [`super::Policy`] decides.
//!
//! The state also keeps, incrementally, a fingerprint per bucket of keys. Two replicas
//! with equal bucket fingerprints hold the same versions, so anti-entropy compares 64
//! numbers instead of the whole state and then exchanges only the buckets that differ.

use std::collections::BTreeMap;
use std::sync::Arc;

use crdts::{CvRDT, LWWReg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::verify_signature;
use crate::{Identity, NodeId};

/// How many buckets anti-entropy compares. 64 fingerprints are 512 bytes on the wire; at
/// a few thousand keys a differing bucket holds a few dozen versions.
pub const BUCKETS: usize = 64;
/// Longest key-space name, in bytes.
pub const MAX_SPACE_LEN: usize = 64;
/// Longest key name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Largest value, in bytes: a registry record (with its 1,184-byte ML-KEM key) fits.
pub const MAX_VALUE_LEN: usize = 4096;

const SIGNING_CONTEXT: &[u8] = b"x0tta6bl4/crdt-entry/v1";

/// Where a value lives: a key space and a name inside it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    pub space: String,
    pub name: Vec<u8>,
}

impl Key {
    pub fn new(space: impl Into<String>, name: impl Into<Vec<u8>>) -> Key {
        Key {
            space: space.into(),
            name: name.into(),
        }
    }

    /// A short name for the key on the wire: the first 8 bytes of its SHA-256.
    pub fn id(&self) -> KeyId {
        let mut hasher = Sha256::new();
        hasher.update((self.space.len() as u32).to_le_bytes());
        hasher.update(self.space.as_bytes());
        hasher.update(&self.name);
        let digest = hasher.finalize();
        KeyId(u64::from_le_bytes(first8(&digest)))
    }
}

/// A key's short name (see [`Key::id`]).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct KeyId(pub u64);

impl KeyId {
    pub fn bucket(self) -> usize {
        (self.0 % BUCKETS as u64) as usize
    }
}

/// Orders the writes to one key: the writer's stamp (milliseconds of mesh time, kept
/// monotonic per writer), then a hash of the entry so that two different entries never
/// share a version. This is the `LWWReg` marker, which crdts requires to be unique.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Version {
    pub stamp: u64,
    pub tiebreak: u64,
}

/// One write: `value` at `key` by `writer`; `None` deletes (a tombstone, collected later).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: Key,
    pub writer: NodeId,
    pub stamp: u64,
    pub value: Option<Vec<u8>>,
}

impl Entry {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut bytes = SIGNING_CONTEXT.to_vec();
        // Our own type always serializes.
        bytes.extend(postcard::to_stdvec(self).unwrap_or_default());
        bytes
    }

    pub fn sign(self, identity: &Identity) -> SignedEntry {
        let signature = identity.sign(&self.signed_bytes());
        SignedEntry::new(self, signature)
    }
}

#[derive(Deserialize)]
struct SignedEntryWire {
    entry: Entry,
    signature_r: [u8; 32],
    signature_s: [u8; 32],
}

/// The same layout as [`SignedEntryWire`], borrowed: serializing never copies the value.
#[derive(Serialize)]
struct SignedEntryRef<'a> {
    entry: &'a Entry,
    signature_r: &'a [u8; 32],
    signature_s: &'a [u8; 32],
}

/// An entry with its writer's Ed25519 signature, as it travels and as it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "SignedEntryWire")]
pub struct SignedEntry {
    pub entry: Entry,
    pub signature: [u8; 64],
    /// Derived from the rest when built, so that the hot paths never hash or encode again.
    version: Version,
    key_id: KeyId,
    encoded_len: u32,
}

impl Serialize for SignedEntry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SignedEntryRef {
            entry: &self.entry,
            signature_r: self.signature.first_chunk().unwrap_or(&[0; 32]),
            signature_s: self.signature.last_chunk().unwrap_or(&[0; 32]),
        }
        .serialize(serializer)
    }
}

impl From<SignedEntryWire> for SignedEntry {
    fn from(wire: SignedEntryWire) -> Self {
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&wire.signature_r);
        signature[32..].copy_from_slice(&wire.signature_s);
        SignedEntry::new(wire.entry, signature)
    }
}

impl SignedEntry {
    fn new(entry: Entry, signature: [u8; 64]) -> SignedEntry {
        let digest = Sha256::digest(signature);
        let version = Version {
            stamp: entry.stamp,
            tiebreak: u64::from_le_bytes(first8(&digest)),
        };
        let key_id = entry.key.id();
        let mut signed = SignedEntry {
            entry,
            signature,
            version,
            key_id,
            encoded_len: 0,
        };
        signed.encoded_len = postcard::experimental::serialized_size(&signed)
            .map(|n| n as u32)
            .unwrap_or(u32::MAX);
        signed
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn key(&self) -> &Key {
        &self.entry.key
    }

    /// The bytes the writer signed (what a shared verification cache keys on).
    pub fn signed_bytes(&self) -> Vec<u8> {
        self.entry.signed_bytes()
    }

    /// Checks the writer's signature and the size bounds.
    pub fn verify(&self) -> Result<(), EntryError> {
        self.check_bounds()?;
        if verify_signature(&self.entry.writer, &self.signed_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(EntryError::BadSignature)
        }
    }

    pub fn check_bounds(&self) -> Result<(), EntryError> {
        let entry = &self.entry;
        if entry.key.space.is_empty() || entry.key.space.len() > MAX_SPACE_LEN {
            return Err(EntryError::TooLarge("key space"));
        }
        if entry.key.name.len() > MAX_NAME_LEN {
            return Err(EntryError::TooLarge("key name"));
        }
        if entry
            .value
            .as_ref()
            .is_some_and(|v| v.len() > MAX_VALUE_LEN)
        {
            return Err(EntryError::TooLarge("value"));
        }
        Ok(())
    }

    /// Encoded size, what the entry costs on the wire and at rest.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len as usize
    }
}

/// Why an entry was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("the writer's signature does not verify")]
    BadSignature,
    #[error("{0} is too large")]
    TooLarge(&'static str),
    #[error("this writer may not write in key space {0:?}")]
    NotAllowed(String),
    #[error("the entry has expired")]
    Expired,
    #[error("the entry is stamped too far in the future")]
    FromTheFuture,
}

/// What applying an entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// The entry is newer than what the key held (or the key was empty): it is the value now.
    Newer,
    /// The key already holds this version or a newer one.
    Stale,
}

/// Every key's register and the per-bucket fingerprints.
///
/// Entries are held behind `Arc`: they are immutable once signed, so the store, the
/// outbox of a reply and (in the simulator) other nodes can share one copy.
#[derive(Clone, Debug, Default)]
pub struct MeshState {
    registers: BTreeMap<Key, LWWReg<Arc<SignedEntry>, Version>>,
    /// The same entries by bucket and key id: what anti-entropy and pulls look up.
    ids: BTreeMap<(usize, KeyId), Arc<SignedEntry>>,
    buckets: Vec<u64>,
    bytes: usize,
}

impl PartialEq for MeshState {
    fn eq(&self, other: &Self) -> bool {
        self.registers == other.registers
    }
}

impl MeshState {
    pub fn new() -> MeshState {
        MeshState {
            buckets: vec![0; BUCKETS],
            ..MeshState::default()
        }
    }

    /// Merges one entry that has already been verified and allowed by the policy.
    pub fn apply(&mut self, entry: Arc<SignedEntry>) -> Merge {
        let version = entry.version();
        let id = entry.key_id();
        match self.registers.get_mut(entry.key()) {
            Some(register) if register.marker >= version => Merge::Stale,
            Some(register) => {
                let (old_version, old_len) = (register.marker, register.val.encoded_len());
                let new_len = entry.encoded_len();
                // The register's own merge, so the state is exactly crdts' LWW semantics.
                self.ids.insert((id.bucket(), id), entry.clone());
                register.merge(LWWReg {
                    val: entry,
                    marker: version,
                });
                self.unaccount(id, old_version, old_len);
                self.account(id, version, new_len);
                Merge::Newer
            }
            None => {
                self.account(id, version, entry.encoded_len());
                self.ids.insert((id.bucket(), id), entry.clone());
                self.registers.insert(
                    entry.key().clone(),
                    LWWReg {
                        val: entry,
                        marker: version,
                    },
                );
                Merge::Newer
            }
        }
    }

    /// State-based merge of a whole replica (what the property tests and restore use).
    pub fn merge(&mut self, other: &MeshState) {
        for register in other.registers.values() {
            self.apply(register.val.clone());
        }
    }

    /// Drops a key (expiry and garbage collection; never a replicated delete).
    pub fn remove(&mut self, key: &Key) -> Option<Arc<SignedEntry>> {
        let register = self.registers.remove(key)?;
        let id = register.val.key_id();
        self.ids.remove(&(id.bucket(), id));
        self.unaccount(id, register.marker, register.val.encoded_len());
        Some(register.val)
    }

    pub fn get(&self, key: &Key) -> Option<&Arc<SignedEntry>> {
        self.registers.get(key).map(|r| &r.val)
    }

    pub fn get_by_id(&self, id: KeyId) -> Option<&Arc<SignedEntry>> {
        self.ids.get(&(id.bucket(), id))
    }

    pub fn version_of(&self, id: KeyId) -> Option<Version> {
        self.get_by_id(id).map(|e| e.version())
    }

    pub fn entries(&self) -> impl Iterator<Item = &Arc<SignedEntry>> {
        self.registers.values().map(|r| &r.val)
    }

    /// Entries of one key space, in key order.
    pub fn space<'a>(&'a self, space: &'a str) -> impl Iterator<Item = &'a Arc<SignedEntry>> + 'a {
        let start = Key::new(space, Vec::new());
        self.registers
            .range(start..)
            .take_while(move |(key, _)| key.space == space)
            .map(|(_, r)| &r.val)
    }

    /// Entries of one key space whose names start with `prefix`, in key order.
    pub fn prefixed<'a>(
        &'a self,
        space: &'a str,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = &'a Arc<SignedEntry>> + 'a {
        let start = Key::new(space, prefix.to_vec());
        self.registers
            .range(start..)
            .take_while(move |(key, _)| key.space == space && key.name.starts_with(prefix))
            .map(|(_, r)| &r.val)
    }

    pub fn len(&self) -> usize {
        self.registers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.registers.is_empty()
    }

    /// Encoded bytes of every entry held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn bucket_fingerprints(&self) -> &[u64] {
        &self.buckets
    }

    /// One number for the whole state: equal roots mean (but for a 2^-64 chance) equal
    /// states.
    pub fn root(&self) -> u64 {
        let mut hasher = Sha256::new();
        for bucket in &self.buckets {
            hasher.update(bucket.to_le_bytes());
        }
        u64::from_le_bytes(first8(&hasher.finalize()))
    }

    /// The versions held in one bucket.
    pub fn bucket_versions(&self, bucket: usize) -> Vec<(KeyId, Version)> {
        self.ids
            .range((bucket, KeyId(0))..=(bucket, KeyId(u64::MAX)))
            .map(|((_, id), entry)| (*id, entry.version()))
            .collect()
    }

    fn account(&mut self, id: KeyId, version: Version, bytes: usize) {
        self.buckets[id.bucket()] ^= fingerprint(id, version);
        self.bytes += bytes;
    }

    fn unaccount(&mut self, id: KeyId, version: Version, bytes: usize) {
        self.buckets[id.bucket()] ^= fingerprint(id, version);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// A version's contribution to its bucket's fingerprint. XOR makes the bucket
/// fingerprint order-independent and updatable in O(1).
fn fingerprint(id: KeyId, version: Version) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(id.0.to_le_bytes());
    hasher.update(version.stamp.to_le_bytes());
    hasher.update(version.tiebreak.to_le_bytes());
    u64::from_le_bytes(first8(&hasher.finalize()))
}

fn first8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn writers() -> Vec<Identity> {
        (1..=3u8).map(|i| Identity::from_seed([i; 32])).collect()
    }

    /// Entries over a few keys and writers, so that registers collide often.
    fn entries() -> impl Strategy<Value = Vec<SignedEntry>> {
        prop::collection::vec(
            (0usize..3, 0u8..4, 0u64..6, prop::option::of(0u8..3)),
            0..12,
        )
        .prop_map(|raw| {
            let writers = writers();
            raw.into_iter()
                .map(|(writer, key, stamp, value)| {
                    let identity = &writers[writer];
                    Entry {
                        key: Key::new("app", vec![key]),
                        writer: identity.id(),
                        stamp,
                        value: value.map(|v| vec![v]),
                    }
                    .sign(identity)
                })
                .collect()
        })
    }

    fn state_of(entries: &[SignedEntry]) -> MeshState {
        let mut state = MeshState::new();
        for entry in entries {
            state.apply(Arc::new(entry.clone()));
        }
        state
    }

    fn merged(a: &MeshState, b: &MeshState) -> MeshState {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in entries(), b in entries()) {
            let (a, b) = (state_of(&a), state_of(&b));
            let (ab, ba) = (merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(ab.root(), ba.root());
            prop_assert_eq!(ab, ba);
        }

        #[test]
        fn merge_is_associative(a in entries(), b in entries(), c in entries()) {
            let (a, b, c) = (state_of(&a), state_of(&b), state_of(&c));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in entries()) {
            let a = state_of(&a);
            let aa = merged(&a, &a);
            prop_assert_eq!(aa.root(), a.root());
            prop_assert_eq!(aa, a);
        }

        #[test]
        fn any_order_of_the_same_entries_gives_the_same_state(
            entries in entries(), seed in any::<u64>()
        ) {
            use rand::seq::SliceRandom;
            use rand::SeedableRng;
            let mut shuffled = entries.clone();
            shuffled.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            let (a, b) = (state_of(&entries), state_of(&shuffled));
            prop_assert_eq!(a.bucket_fingerprints(), b.bucket_fingerprints());
            prop_assert_eq!(a.bytes(), b.bytes());
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn a_forged_or_altered_entry_does_not_verify() {
        let [alice, mallory, ..] = &writers()[..] else {
            panic!("three writers");
        };
        let good = Entry {
            key: Key::new("app", b"k".to_vec()),
            writer: alice.id(),
            stamp: 1,
            value: Some(b"v".to_vec()),
        }
        .sign(alice);
        assert_eq!(good.verify(), Ok(()));
        let mut altered = good.clone();
        altered.entry.value = Some(b"w".to_vec());
        assert_eq!(altered.verify(), Err(EntryError::BadSignature));
        let forged = Entry {
            writer: alice.id(),
            ..good.entry.clone()
        }
        .sign(mallory);
        assert_eq!(forged.verify(), Err(EntryError::BadSignature));
    }

    #[test]
    fn the_newer_version_wins_and_removal_restores_the_fingerprints() {
        let alice = &writers()[0];
        let write = |stamp, value: &[u8]| {
            Entry {
                key: Key::new("app", b"k".to_vec()),
                writer: alice.id(),
                stamp,
                value: Some(value.to_vec()),
            }
            .sign(alice)
        };
        let mut state = MeshState::new();
        let empty_root = state.root();
        assert_eq!(state.apply(Arc::new(write(2, b"two"))), Merge::Newer);
        assert_eq!(state.apply(Arc::new(write(1, b"one"))), Merge::Stale);
        assert_eq!(state.apply(Arc::new(write(2, b"two"))), Merge::Stale);
        assert_eq!(state.apply(Arc::new(write(3, b"three"))), Merge::Newer);
        let key = Key::new("app", b"k".to_vec());
        assert_eq!(
            state.get(&key).and_then(|e| e.entry.value.clone()),
            Some(b"three".to_vec())
        );
        assert_eq!(state.bucket_versions(key.id().bucket()).len(), 1);
        state.remove(&key);
        assert_eq!(state.root(), empty_root);
        assert_eq!(state.bytes(), 0);
    }
}
