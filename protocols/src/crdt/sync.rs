//! The sans-IO sync engine: lazy push of new entries, pull on demand, and anti-entropy.
//!
//! New entries of up to [`EAGER_MAX_BYTES`] are pushed to every neighbor (but the one
//! they came from), batched over a short interval: one hop costs one link latency.
//! Larger ones are *announced* (key id and version, 16 bytes); a neighbor that lacks the
//! version asks the first announcer and gets the signed entry once, so each node
//! receives a 1.3 KB registry record about once, whatever its degree. Lost messages and
//! partitions are repaired by anti-entropy: every interval a node sends one neighbor the
//! fingerprint of its whole state (8 bytes); if they differ, the two swap their 64 bucket
//! fingerprints, announce the buckets that differ in full, and the ordinary
//! want/entries exchange moves only what is missing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::policy::Policy;
use super::state::{Entry, EntryError, Key, KeyId, Merge, MeshState, SignedEntry, Version};
use crate::{Identity, Millis, NodeId};

/// Most versions in one announcement.
pub const MAX_HAVE: usize = 2048;
/// Most entries in one reply; about 40 KB of registry records.
pub const MAX_ENTRIES: usize = 32;
/// Entries up to this size (encoded) are pushed rather than announced: the entry costs
/// little more than its announcement, and it saves two link latencies per hop.
pub const EAGER_MAX_BYTES: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// "I hold these versions": new ones, or a bucket that differed in anti-entropy.
    Have(Vec<(KeyId, Version)>),
    /// "Send me these": keys announced with a version newer than mine.
    Want(Vec<KeyId>),
    Entries(Vec<Arc<SignedEntry>>),
    /// Anti-entropy, first step: the fingerprint of my whole state.
    Root(u64),
    /// Anti-entropy: my bucket fingerprints; `reply` is set on the answer to one.
    Digest {
        buckets: Vec<u64>,
        reply: bool,
    },
}

impl SyncMessage {
    pub fn encode(&self) -> Vec<u8> {
        // Owned data into a Vec: cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<SyncMessage, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSettings {
    /// How long new versions gather before they are announced.
    pub announce_ms: u64,
    /// How often one neighbor is asked to compare fingerprints.
    pub anti_entropy_ms: u64,
    /// How long a wanted entry is awaited before asking another announcer.
    pub want_timeout_ms: u64,
    /// How often expired entries are swept.
    pub sweep_ms: u64,
    /// Neighbors a large entry is pushed to outright (the rest get an announcement):
    /// some copies too many, for one link latency per hop instead of three. Off by
    /// default: at 300 nodes, 2 cut a record's p50 from 1.6 s to 0.4 s but p99 only from
    /// 2.8 s to 2.1 s, for 1.85x the bytes (BENCHMARKS.md).
    pub large_fanout: usize,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            announce_ms: 5,
            anti_entropy_ms: 500,
            want_timeout_ms: 1_000,
            sweep_ms: 1_000,
            large_fanout: 0,
        }
    }
}

/// Checks writers' signatures. The node verifies every entry itself; the simulator
/// shares one memo among its thousand nodes, because verification is a pure function
/// of the entry's bytes and recomputing it per node only burns the host's CPU.
pub trait Verifier: Send + Sync {
    /// The entry if its signature holds (possibly a shared copy of an equal one).
    fn verify(&self, entry: Arc<SignedEntry>) -> Result<Arc<SignedEntry>, EntryError>;
}

/// Verifies every entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct DirectVerifier;

impl Verifier for DirectVerifier {
    fn verify(&self, entry: Arc<SignedEntry>) -> Result<Arc<SignedEntry>, EntryError> {
        entry.verify()?;
        Ok(entry)
    }
}

/// Verifies each distinct entry once and remembers it (for the simulator, whose nodes
/// all verify the same entries). Keyed by signature, and the remembered entry must equal
/// the new one field for field, so a valid signature glued to other content still
/// fails. Equal entries come back as one shared copy, so a thousand simulated replicas
/// of the registry hold one copy of each record.
#[derive(Default)]
pub struct MemoVerifier {
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 64], Arc<SignedEntry>>>,
}

/// Entries remembered before the memo starts over (bounds its memory).
const MEMO_LIMIT: usize = 1 << 18;

impl Verifier for MemoVerifier {
    fn verify(&self, entry: Arc<SignedEntry>) -> Result<Arc<SignedEntry>, EntryError> {
        let known = self
            .verified
            .lock()
            .ok()
            .and_then(|memo| memo.get(&entry.signature).cloned());
        if let Some(known) = known
            && *known == *entry
        {
            return Ok(known);
        }
        entry.verify()?;
        if let Ok(mut memo) = self.verified.lock() {
            if memo.len() >= MEMO_LIMIT {
                memo.clear();
            }
            memo.insert(entry.signature, entry.clone());
        }
        Ok(entry)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Send(NodeId, SyncMessage),
    /// An entry newer than what the key held was merged (ours or a peer's).
    Applied(Arc<SignedEntry>),
    /// An entry reached its expiry and was dropped.
    Expired(Key),
    /// A peer sent an entry that was refused.
    Rejected {
        from: NodeId,
        error: EntryError,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStats {
    pub applied: u64,
    pub rejected: u64,
    pub expired: u64,
    /// Entries received that the key already held (the cost of crossing announcements).
    pub duplicates: u64,
    pub anti_entropy_rounds: u64,
}

#[derive(Default)]
struct Outgoing {
    have: BTreeMap<KeyId, Version>,
    push: BTreeMap<KeyId, Arc<SignedEntry>>,
}

struct Wanted {
    version: Version,
    deadline: Millis,
    /// Other neighbors that announced it, asked in turn if the first does not answer.
    alternates: Vec<NodeId>,
    /// Neighbors already asked. Like the alternates, they hold the entry, so it is not
    /// announced back to them once it arrives: in a wave of announcements that halves
    /// the announcements sent.
    asked: Vec<NodeId>,
}

/// Announcers remembered per wanted entry.
const MAX_ANNOUNCERS: usize = 8;

/// One node's replica and its conversation with its neighbors.
pub struct CrdtSync {
    me: NodeId,
    policy: Policy,
    settings: SyncSettings,
    state: MeshState,
    neighbors: BTreeSet<NodeId>,
    /// Versions to announce and small entries to push at the next flush, per neighbor.
    pending: BTreeMap<NodeId, Outgoing>,
    wanted: BTreeMap<KeyId, Wanted>,
    next_flush: Option<Millis>,
    next_anti_entropy: Millis,
    next_sweep: Millis,
    /// The highest stamp this node has written, so its stamps only grow.
    last_stamp: u64,
    /// Mesh time = the driver's `now` + this offset (wall-clock milliseconds at the
    /// driver's epoch in the node; the virtual start time in the simulator).
    epoch_ms: u64,
    rng: ChaCha8Rng,
    outputs: VecDeque<Output>,
    stats: SyncStats,
}

impl CrdtSync {
    pub fn new(
        me: NodeId,
        policy: Policy,
        settings: SyncSettings,
        epoch_ms: u64,
        seed: u64,
    ) -> CrdtSync {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Spread the first anti-entropy round so a mesh started at once does not pulse.
        let first = rng.random_range(0..settings.anti_entropy_ms.max(1));
        CrdtSync {
            me,
            policy,
            settings,
            state: MeshState::new(),
            neighbors: BTreeSet::new(),
            pending: BTreeMap::new(),
            wanted: BTreeMap::new(),
            next_flush: None,
            next_anti_entropy: Millis(first),
            next_sweep: Millis(settings.sweep_ms),
            last_stamp: 0,
            epoch_ms,
            rng,
            outputs: VecDeque::new(),
            stats: SyncStats::default(),
        }
    }

    pub fn state(&self) -> &MeshState {
        &self.state
    }

    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Mesh time (milliseconds) at driver time `now`: what stamps and expiry use.
    pub fn mesh_time(&self, now: Millis) -> u64 {
        self.epoch_ms.saturating_add(now.0)
    }

    /// Loads entries saved before a restart. They are checked like a peer's, since a
    /// file can be damaged or edited; returns how many were refused.
    pub fn restore(
        &mut self,
        now: Millis,
        entries: Vec<SignedEntry>,
        verifier: &dyn Verifier,
    ) -> usize {
        let mesh_now = self.mesh_time(now);
        let mut refused = 0;
        for entry in entries {
            let checked = self
                .policy
                .admit(&entry, mesh_now)
                .and_then(|()| verifier.verify(Arc::new(entry)));
            let Ok(entry) = checked else {
                refused += 1;
                continue;
            };
            if entry.entry.writer == self.me {
                self.last_stamp = self.last_stamp.max(entry.entry.stamp);
            }
            self.state.apply(entry);
        }
        refused
    }

    /// Writes `value` (or deletes, with `None`) at `key` as this node.
    pub fn write(
        &mut self,
        now: Millis,
        identity: &Identity,
        key: Key,
        value: Option<Vec<u8>>,
    ) -> Result<Arc<SignedEntry>, EntryError> {
        let mesh_now = self.mesh_time(now);
        let stamp = mesh_now.max(self.last_stamp + 1);
        let entry = Entry {
            key,
            writer: self.me,
            stamp,
            value,
        }
        .sign(identity);
        self.policy.admit(&entry, mesh_now)?;
        let entry = Arc::new(entry);
        self.last_stamp = stamp;
        self.state.apply(entry.clone());
        self.stats.applied += 1;
        self.announce(now, &entry, &[]);
        self.outputs.push_back(Output::Applied(entry.clone()));
        Ok(entry)
    }

    pub fn link_up(&mut self, peer: NodeId) {
        if !self.neighbors.insert(peer) {
            return;
        }
        // Compare at once, so a joining node catches up without waiting a round. One
        // side starts, so the comparison does not run twice.
        if self.me < peer {
            let root = self.state.root();
            self.send(peer, SyncMessage::Root(root));
        }
    }

    pub fn link_down(&mut self, peer: NodeId) {
        self.neighbors.remove(&peer);
        self.pending.remove(&peer);
    }

    pub fn neighbors(&self) -> impl Iterator<Item = &NodeId> {
        self.neighbors.iter()
    }

    pub fn handle_message(
        &mut self,
        now: Millis,
        from: NodeId,
        message: SyncMessage,
        verifier: &dyn Verifier,
    ) {
        match message {
            SyncMessage::Have(versions) => self.on_have(now, from, versions),
            SyncMessage::Want(ids) => self.on_want(from, ids),
            SyncMessage::Entries(entries) => {
                for entry in entries {
                    self.on_entry(now, from, entry, verifier);
                }
            }
            SyncMessage::Root(root) => {
                if root != self.state.root() {
                    self.send_digest(from, false);
                }
            }
            SyncMessage::Digest { buckets, reply } => self.on_digest(from, buckets, reply),
        }
    }

    fn on_have(&mut self, now: Millis, from: NodeId, versions: Vec<(KeyId, Version)>) {
        let mut want = Vec::new();
        for (id, version) in versions.into_iter().take(MAX_HAVE) {
            if self
                .state
                .version_of(id)
                .is_some_and(|mine| mine >= version)
            {
                continue;
            }
            match self.wanted.get_mut(&id) {
                Some(w) if w.version >= version && w.deadline > now => {
                    if !w.alternates.contains(&from)
                        && !w.asked.contains(&from)
                        && w.alternates.len() < MAX_ANNOUNCERS
                    {
                        w.alternates.push(from);
                    }
                }
                _ => {
                    self.wanted.insert(
                        id,
                        Wanted {
                            version,
                            deadline: now.plus(self.settings.want_timeout_ms),
                            alternates: Vec::new(),
                            asked: vec![from],
                        },
                    );
                    want.push(id);
                }
            }
        }
        for chunk in want.chunks(MAX_HAVE) {
            self.send(from, SyncMessage::Want(chunk.to_vec()));
        }
    }

    fn on_want(&mut self, from: NodeId, ids: Vec<KeyId>) {
        let entries: Vec<Arc<SignedEntry>> = ids
            .into_iter()
            .take(MAX_HAVE)
            .filter_map(|id| self.state.get_by_id(id).cloned())
            .collect();
        for chunk in entries.chunks(MAX_ENTRIES) {
            self.send(from, SyncMessage::Entries(chunk.to_vec()));
        }
    }

    fn on_entry(
        &mut self,
        now: Millis,
        from: NodeId,
        entry: Arc<SignedEntry>,
        verifier: &dyn Verifier,
    ) {
        let id = entry.key_id();
        let version = entry.version();
        if self
            .state
            .version_of(id)
            .is_some_and(|mine| mine >= version)
        {
            self.stats.duplicates += 1;
            return;
        }
        let checked = self
            .policy
            .admit(&entry, self.mesh_time(now))
            .and_then(|()| verifier.verify(entry));
        let entry = match checked {
            Ok(entry) => entry,
            Err(error) => {
                self.stats.rejected += 1;
                self.outputs.push_back(Output::Rejected { from, error });
                return;
            }
        };
        let mut holders = vec![from];
        if self.wanted.get(&id).is_some_and(|w| w.version <= version)
            && let Some(wanted) = self.wanted.remove(&id)
        {
            holders.extend(wanted.asked);
            holders.extend(wanted.alternates);
        }
        if self.state.apply(entry.clone()) == Merge::Newer {
            self.stats.applied += 1;
            self.announce(now, &entry, &holders);
            self.outputs.push_back(Output::Applied(entry));
        }
    }

    fn on_digest(&mut self, from: NodeId, buckets: Vec<u64>, reply: bool) {
        let mine = self.state.bucket_fingerprints();
        if buckets.len() != mine.len() {
            return;
        }
        let differing: Vec<usize> = (0..mine.len())
            .filter(|b| buckets[*b] != mine[*b])
            .collect();
        if differing.is_empty() {
            return;
        }
        let versions: Vec<(KeyId, Version)> = differing
            .into_iter()
            .flat_map(|b| self.state.bucket_versions(b))
            .collect();
        for chunk in versions.chunks(MAX_HAVE) {
            self.send(from, SyncMessage::Have(chunk.to_vec()));
        }
        if !reply {
            self.send_digest(from, true);
        }
    }

    /// Queues `entry` (small) or its version (large) for every neighbor not known to
    /// hold it already.
    fn announce(&mut self, now: Millis, entry: &Arc<SignedEntry>, holders: &[NodeId]) {
        let id = entry.key_id();
        let small = entry.encoded_len() <= EAGER_MAX_BYTES;
        // The few neighbors a large entry goes to outright; none unless configured, so
        // the common case draws nothing and allocates nothing here.
        let mut pushed_large = Vec::new();
        if !small && self.settings.large_fanout > 0 {
            let targets: Vec<NodeId> = self
                .neighbors
                .iter()
                .filter(|n| !holders.contains(n))
                .copied()
                .collect();
            pushed_large = targets
                .choose_multiple(&mut self.rng, self.settings.large_fanout)
                .copied()
                .collect();
        }
        for neighbor in self.neighbors.iter().filter(|n| !holders.contains(n)) {
            let outgoing = self.pending.entry(*neighbor).or_default();
            if small || pushed_large.contains(neighbor) {
                outgoing.push.insert(id, entry.clone());
            } else {
                outgoing.have.insert(id, entry.version());
            }
        }
        if self.next_flush.is_none() && !self.pending.is_empty() {
            self.next_flush = Some(now.plus(self.settings.announce_ms));
        }
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        if self.next_flush.is_some_and(|at| at <= now) {
            self.next_flush = None;
            for (neighbor, outgoing) in std::mem::take(&mut self.pending) {
                let versions: Vec<_> = outgoing.have.into_iter().collect();
                for chunk in versions.chunks(MAX_HAVE) {
                    self.send(neighbor, SyncMessage::Have(chunk.to_vec()));
                }
                let entries: Vec<_> = outgoing.push.into_values().collect();
                for chunk in entries.chunks(MAX_ENTRIES) {
                    self.send(neighbor, SyncMessage::Entries(chunk.to_vec()));
                }
            }
        }
        self.retry_wanted(now);
        if self.next_anti_entropy <= now {
            self.next_anti_entropy = now.plus(self.settings.anti_entropy_ms);
            if !self.neighbors.is_empty() {
                let pick = self.rng.random_range(0..self.neighbors.len());
                if let Some(peer) = self.neighbors.iter().nth(pick).copied() {
                    self.stats.anti_entropy_rounds += 1;
                    let root = self.state.root();
                    self.send(peer, SyncMessage::Root(root));
                }
            }
        }
        if self.next_sweep <= now {
            self.next_sweep = now.plus(self.settings.sweep_ms);
            self.sweep(now);
        }
    }

    fn retry_wanted(&mut self, now: Millis) {
        let due: Vec<KeyId> = self
            .wanted
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(wanted) = self.wanted.get_mut(&id) else {
                continue;
            };
            match wanted.alternates.pop() {
                Some(peer) if self.neighbors.contains(&peer) => {
                    wanted.deadline = now.plus(self.settings.want_timeout_ms);
                    wanted.asked.push(peer);
                    self.send(peer, SyncMessage::Want(vec![id]));
                }
                Some(_) => wanted.deadline = now,
                None => {
                    // Anti-entropy will find it if it still matters.
                    self.wanted.remove(&id);
                }
            }
        }
    }

    fn sweep(&mut self, now: Millis) {
        let mesh_now = self.mesh_time(now);
        let expired: Vec<Key> = self
            .state
            .entries()
            .filter(|e| self.policy.expired(e, mesh_now))
            .map(|e| e.key().clone())
            .collect();
        for key in expired {
            self.state.remove(&key);
            self.stats.expired += 1;
            self.outputs.push_back(Output::Expired(key));
        }
    }

    fn send_digest(&mut self, peer: NodeId, reply: bool) {
        let buckets = self.state.bucket_fingerprints().to_vec();
        self.send(peer, SyncMessage::Digest { buckets, reply });
    }

    fn send(&mut self, to: NodeId, message: SyncMessage) {
        self.outputs.push_back(Output::Send(to, message));
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn next_deadline(&self) -> Millis {
        let mut next = self.next_anti_entropy.min(self.next_sweep);
        if let Some(flush) = self.next_flush {
            next = next.min(flush);
        }
        if let Some(earliest) = self.wanted.values().map(|w| w.deadline).min() {
            next = next.min(earliest);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A tiny network of engines driven in lock step: every queued message is delivered
    /// (or dropped, when `lose` says so) before time advances.
    struct Mesh {
        identities: Vec<Identity>,
        nodes: Vec<CrdtSync>,
        links: Vec<(usize, usize)>,
        now: Millis,
    }

    impl Mesh {
        fn new(n: usize, links: Vec<(usize, usize)>) -> Mesh {
            let identities: Vec<Identity> = (0..n)
                .map(|i| Identity::from_seed([i as u8 + 1; 32]))
                .collect();
            let nodes = identities
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    CrdtSync::new(
                        id.id(),
                        Policy::default(),
                        SyncSettings::default(),
                        0,
                        i as u64,
                    )
                })
                .collect();
            let mut mesh = Mesh {
                identities,
                nodes,
                links: Vec::new(),
                now: Millis(0),
            };
            for (a, b) in links {
                mesh.connect(a, b);
            }
            mesh
        }

        fn connect(&mut self, a: usize, b: usize) {
            let (ia, ib) = (self.identities[a].id(), self.identities[b].id());
            self.nodes[a].link_up(ib);
            self.nodes[b].link_up(ia);
            self.links.push((a, b));
        }

        fn index(&self, id: NodeId) -> usize {
            self.identities
                .iter()
                .position(|i| i.id() == id)
                .unwrap_or(0)
        }

        /// Delivers everything queued; `lose(k)` drops the k-th message.
        fn pump(&mut self, lose: &mut dyn FnMut(u64) -> bool) {
            let mut k = 0u64;
            loop {
                let mut moved = false;
                for i in 0..self.nodes.len() {
                    while let Some(output) = self.nodes[i].poll_output() {
                        if let Output::Send(to, message) = output {
                            moved = true;
                            k += 1;
                            // Round-trip the wire encoding, as the network would.
                            let message = SyncMessage::decode(&message.encode()).unwrap();
                            if lose(k) {
                                continue;
                            }
                            let from = self.identities[i].id();
                            let j = self.index(to);
                            self.nodes[j].handle_message(self.now, from, message, &DirectVerifier);
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
        }

        fn advance(&mut self, ms: u64, lose: &mut dyn FnMut(u64) -> bool) {
            let end = self.now.plus(ms);
            while self.now < end {
                let next = self
                    .nodes
                    .iter()
                    .map(CrdtSync::next_deadline)
                    .min()
                    .unwrap();
                self.now = next.max(self.now.plus(1)).min(end);
                for node in &mut self.nodes {
                    node.handle_timeout(self.now);
                }
                self.pump(lose);
            }
        }

        fn roots(&self) -> BTreeSet<u64> {
            self.nodes.iter().map(|n| n.state().root()).collect()
        }
    }

    #[test]
    fn an_entry_reaches_every_node_of_a_line_and_each_node_fetches_it_once() {
        let mut mesh = Mesh::new(5, vec![(0, 1), (1, 2), (2, 3), (3, 4), (0, 4)]);
        let key = Key::new("app", b"k".to_vec());
        let identity = &mesh.identities[0];
        mesh.nodes[0]
            .write(Millis(0), identity, key.clone(), Some(b"v".to_vec()))
            .unwrap();
        mesh.advance(200, &mut |_| false);
        for node in &mesh.nodes {
            assert_eq!(
                node.state().get(&key).and_then(|e| e.entry.value.clone()),
                Some(b"v".to_vec())
            );
            assert_eq!(node.stats().rejected, 0);
        }
        // Each node took it once, however many neighbors offered it.
        let applied: u64 = mesh.nodes.iter().map(|n| n.stats().applied).sum();
        assert_eq!(applied, 5);
    }

    #[test]
    fn a_large_entry_is_announced_and_each_node_pulls_it_once() {
        let mut mesh = Mesh::new(5, vec![(0, 1), (1, 2), (2, 3), (3, 4), (0, 4), (1, 3)]);
        // Announcements only, no eager copies.
        for node in &mut mesh.nodes {
            node.settings.large_fanout = 0;
        }
        let key = Key::new("app", b"big".to_vec());
        let identity = &mesh.identities[0];
        let value = vec![7u8; 1_000];
        mesh.nodes[0]
            .write(Millis(0), identity, key.clone(), Some(value.clone()))
            .unwrap();
        mesh.advance(300, &mut |_| false);
        let sent: Vec<SyncStats> = mesh.nodes.iter().map(CrdtSync::stats).collect();
        for node in &mesh.nodes {
            assert_eq!(
                node.state().get(&key).and_then(|e| e.entry.value.clone()),
                Some(value.clone())
            );
        }
        // Announced along every link, but no node was sent the entry twice.
        assert!(sent.iter().all(|s| s.duplicates == 0), "{sent:?}");
    }

    #[test]
    fn a_forged_entry_is_rejected_and_not_passed_on() {
        let mut mesh = Mesh::new(3, vec![(0, 1), (1, 2)]);
        let victim = mesh.identities[2].id();
        let forged = Entry {
            key: crate::crdt::record_key(&victim),
            writer: victim,
            stamp: 1,
            value: Some(b"lies".to_vec()),
        }
        .sign(&mesh.identities[0]);
        let from = mesh.identities[0].id();
        mesh.nodes[1].handle_message(
            Millis(0),
            from,
            SyncMessage::Entries(vec![Arc::new(forged)]),
            &DirectVerifier,
        );
        assert_eq!(mesh.nodes[1].stats().rejected, 1);
        assert!(mesh.nodes[1].state().is_empty());
        mesh.advance(3_000, &mut |_| false);
        assert!(mesh.nodes[2].state().is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any subset of writes, delivered with any pattern of losses, converges once
        /// the links are reliable again and anti-entropy has run.
        #[test]
        fn lossy_gossip_then_anti_entropy_converges(
            writes in prop::collection::vec((0usize..5, 0u8..6, prop::option::of(0u8..4)), 1..20),
            losses in prop::collection::btree_set(1u64..400, 0..120),
            extra in prop::collection::vec((0usize..5, 0usize..5), 0..4),
        ) {
            let mut links = vec![(0, 1), (1, 2), (2, 3), (3, 4)];
            links.extend(extra.into_iter().filter(|(a, b)| a != b));
            let mut mesh = Mesh::new(5, links);
            let mut lose = |k: u64| losses.contains(&k);
            for (i, (node, key, value)) in writes.iter().enumerate() {
                let identity = Identity::from_seed([*node as u8 + 1; 32]);
                let now = mesh.now;
                mesh.nodes[*node]
                    .write(now, &identity, Key::new("app", vec![*key]), value.map(|v| vec![v]))
                    .unwrap();
                if i % 3 == 0 {
                    mesh.advance(30, &mut lose);
                }
            }
            mesh.advance(200, &mut lose);
            // Reliable from here: anti-entropy repairs whatever was lost.
            mesh.advance(20_000, &mut |_| false);
            prop_assert_eq!(mesh.roots().len(), 1);
            let states: Vec<&MeshState> = mesh.nodes.iter().map(CrdtSync::state).collect();
            for state in &states[1..] {
                prop_assert_eq!(*state, states[0]);
            }
        }
    }

    #[test]
    fn the_memo_verifier_remembers_only_exact_entries() {
        let alice = Identity::from_seed([1; 32]);
        let good = Entry {
            key: Key::new("app", b"k".to_vec()),
            writer: alice.id(),
            stamp: 1,
            value: Some(b"v".to_vec()),
        }
        .sign(&alice);
        let memo = MemoVerifier::default();
        let first = memo.verify(Arc::new(good.clone())).unwrap();
        let again = memo.verify(Arc::new(good.clone())).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "equal entries share one copy");
        let mut glued = good.clone();
        glued.entry.value = Some(b"other".to_vec());
        assert_eq!(memo.verify(Arc::new(glued)), Err(EntryError::BadSignature));
    }

    #[test]
    fn a_partition_heals_by_anti_entropy_alone() {
        let mut mesh = Mesh::new(4, vec![(0, 1), (2, 3)]);
        for i in 0..4 {
            let identity = Identity::from_seed([i as u8 + 1; 32]);
            mesh.nodes[i]
                .write(
                    Millis(0),
                    &identity,
                    Key::new("app", vec![i as u8]),
                    Some(vec![1]),
                )
                .unwrap();
        }
        mesh.advance(2_000, &mut |_| false);
        assert_eq!(mesh.roots().len(), 2);
        mesh.connect(1, 2);
        mesh.advance(3_000, &mut |_| false);
        assert_eq!(mesh.roots().len(), 1);
        assert_eq!(mesh.nodes[0].state().len(), 4);
    }

    #[test]
    fn expired_records_are_dropped_everywhere_and_not_fetched_again() {
        let policy = Policy {
            record_expiry_ms: 5_000,
            ..Policy::default()
        };
        let mut mesh = Mesh::new(3, vec![(0, 1), (1, 2)]);
        for node in &mut mesh.nodes {
            node.policy = policy;
        }
        let writer = Identity::from_seed([1; 32]);
        mesh.nodes[0]
            .write(
                Millis(0),
                &writer,
                crate::crdt::record_key(&writer.id()),
                Some(vec![1]),
            )
            .unwrap();
        mesh.advance(1_000, &mut |_| false);
        assert!(mesh.nodes.iter().all(|n| n.state().len() == 1));
        mesh.advance(6_000, &mut |_| false);
        assert!(mesh.nodes.iter().all(|n| n.state().is_empty()));
        assert!(mesh.nodes.iter().all(|n| n.stats().expired == 1));
    }

    #[test]
    fn values_older_than_every_expiry_still_reach_a_node_that_joins_late() {
        // Application values never expire, however old: an announcement cannot tell a
        // value from a record or tombstone, so age alone must not stop a fetch.
        let policy = Policy {
            record_expiry_ms: 100,
            tombstone_expiry_ms: 200,
            ..Policy::default()
        };
        let mut mesh = Mesh::new(2, vec![]);
        for node in &mut mesh.nodes {
            node.policy = policy;
        }
        let key = Key::new("app", b"old".to_vec());
        mesh.nodes[0]
            .write(
                Millis(0),
                &mesh.identities[0],
                key.clone(),
                Some(b"v".to_vec()),
            )
            .unwrap();
        mesh.advance(1_000, &mut |_| false);
        mesh.connect(0, 1);
        mesh.advance(3_000, &mut |_| false);
        assert!(mesh.nodes[1].state().get(&key).is_some());
    }
}
