//! Timing CRDT convergence: when every live node holds an update, and when every live
//! node holds the same state again after a partition heals.
//!
//! Nodes report each entry they merge and each change of their state's fingerprint
//! (see [`x0_actors::NodeObserver`]); this module scores those reports against which
//! nodes are up. An update has converged when every node that was up when it was
//! written, and still is, holds it. A node that was down then catches up by
//! anti-entropy when it returns (it keeps its saved state, as a disk would), but an
//! update is not held back waiting for a node that was away for half a minute.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use x0_protocols::crdt::{KeyId, SignedEntry, Version};

use crate::measure;

/// One partition heal: the updates not yet everywhere when it healed, and when the last
/// of them got everywhere.
pub struct Heal {
    pub at: Instant,
    waiting: BTreeSet<(KeyId, Version)>,
    pub converged_at: Option<Instant>,
}

struct Pending {
    written_at: Instant,
    /// Up when it was written and ever since: the nodes it must reach.
    eligible: Vec<bool>,
    needed: usize,
    have: Vec<bool>,
    have_up: usize,
    /// When the last node it reached got it.
    last_arrival: Instant,
    /// Its convergence time is already counted (it reached every node it could); it
    /// stays tracked until it is everywhere, for the partition heal figures.
    sampled: bool,
}

/// The state of one run's CRDT measurements.
pub struct CrdtTracker {
    up: Vec<bool>,
    up_count: usize,
    /// Updates not yet on every up node, tracked once the mesh first converged.
    pending: BTreeMap<(KeyId, Version), Pending>,
    done: BTreeSet<(KeyId, Version)>,
    latest: HashMap<KeyId, Version>,
    pub convergence_ms: Vec<u64>,
    pub updates: u64,
    pub superseded: u64,
    /// Updates that reached every node they could, others being cut off at the time.
    pub cut_off: u64,
    roots: Vec<Option<u64>>,
    root_counts: HashMap<u64, usize>,
    start: Instant,
    /// When every up node first held the same state (the initial registry exchange).
    pub bootstrap_at: Option<Instant>,
    /// Partition heals, and when everything written before each had reached every up
    /// node.
    pub heals: Vec<Heal>,
}

impl CrdtTracker {
    pub fn new(nodes: usize, start: Instant) -> CrdtTracker {
        CrdtTracker {
            up: vec![false; nodes],
            up_count: 0,
            pending: BTreeMap::new(),
            done: BTreeSet::new(),
            latest: HashMap::new(),
            convergence_ms: Vec::new(),
            updates: 0,
            superseded: 0,
            cut_off: 0,
            roots: vec![None; nodes],
            root_counts: HashMap::new(),
            start,
            bootstrap_at: None,
            heals: Vec::new(),
        }
    }

    pub fn node_up(&mut self, index: u32) {
        let i = index as usize;
        if std::mem::replace(&mut self.up[i], true) {
            return;
        }
        self.up_count += 1;
        if let Some(root) = self.roots[i] {
            *self.root_counts.entry(root).or_default() += 1;
        }
        self.check_roots();
    }

    pub fn node_down(&mut self, index: u32, now: Instant) {
        let i = index as usize;
        if !std::mem::replace(&mut self.up[i], false) {
            return;
        }
        self.up_count -= 1;
        for pending in self.pending.values_mut() {
            if std::mem::replace(&mut pending.eligible[i], false) {
                pending.needed -= 1;
                if pending.have[i] {
                    pending.have_up -= 1;
                }
            }
        }
        if let Some(root) = self.roots[i] {
            self.uncount_root(root);
        }
        // The node that lacked an update may be the one that left.
        let converged: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| p.have_up >= p.needed)
            .map(|(k, _)| *k)
            .collect();
        for key in converged {
            self.converge(key, now);
        }
        self.check_roots();
    }

    pub fn applied(&mut self, index: u32, entry: &SignedEntry, now: Instant) {
        let i = index as usize;
        let key = (entry.key().id(), entry.version());
        if self.bootstrap_at.is_none() || self.done.contains(&key) {
            return;
        }
        if !self.pending.contains_key(&key) {
            if let Some(latest) = self.latest.get(&key.0).copied() {
                if latest > key.1 {
                    return;
                }
                if let Some(old) = self.pending.remove(&(key.0, latest)) {
                    if !old.sampled {
                        self.superseded += 1;
                    }
                    self.settle_heals(&(key.0, latest), now);
                }
            }
            self.latest.insert(key.0, key.1);
            self.updates += 1;
            self.pending.insert(
                key,
                Pending {
                    written_at: now,
                    eligible: self.up.clone(),
                    needed: self.up_count,
                    have: vec![false; self.up.len()],
                    have_up: 0,
                    last_arrival: now,
                    sampled: false,
                },
            );
        }
        let Some(pending) = self.pending.get_mut(&key) else {
            return;
        };
        if !std::mem::replace(&mut pending.have[i], true) && pending.eligible[i] {
            pending.have_up += 1;
            pending.last_arrival = now;
        }
        if pending.have_up >= pending.needed {
            self.converge(key, now);
        }
    }

    pub fn root(&mut self, index: u32, root: u64) {
        let i = index as usize;
        if let Some(old) = self.roots[i].replace(root)
            && self.up[i]
        {
            self.uncount_root(old);
        }
        if self.up[i] {
            *self.root_counts.entry(root).or_default() += 1;
        }
        self.check_roots();
    }

    /// A partition healed: from now, time how long until every update written so far
    /// (on either side) is on every up node. Updates keep flowing meanwhile, so "the
    /// same state everywhere" may never hold at one instant; this is what it means.
    /// Counts as converged the updates that have reached every node they can reach: the
    /// nodes still lacking one sit in parts of the live graph (`component` labels) where
    /// no node holds it, cut off by churn or a partition. Its time is when the last
    /// reachable node got it; the rest catch up by anti-entropy once joined again, which
    /// is what `heal_convergence_ms` times for partitions.
    pub fn settle_unreachable(&mut self, component: &[u32]) {
        let reached_all: Vec<(KeyId, Version)> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.sampled)
            .filter(|(_, p)| {
                let holding: BTreeSet<u32> = (0..p.have.len())
                    .filter(|&i| p.have[i] && self.up[i])
                    .map(|i| component[i])
                    .collect();
                (0..p.have.len())
                    .filter(|&i| p.eligible[i] && !p.have[i])
                    .all(|i| !holding.contains(&component[i]))
            })
            .map(|(key, _)| *key)
            .collect();
        for key in reached_all {
            if let Some(p) = self.pending.get_mut(&key) {
                p.sampled = true;
                self.cut_off += 1;
                self.convergence_ms
                    .push(p.last_arrival.duration_since(p.written_at).as_millis() as u64);
            }
        }
    }

    pub fn heal_started(&mut self, now: Instant) {
        let waiting: BTreeSet<_> = self.pending.keys().copied().collect();
        let converged_at = waiting.is_empty().then_some(now);
        self.heals.push(Heal {
            at: now,
            waiting,
            converged_at,
        });
    }

    fn converge(&mut self, key: (KeyId, Version), now: Instant) {
        if let Some(pending) = self.pending.remove(&key) {
            if !pending.sampled {
                self.convergence_ms
                    .push(now.duration_since(pending.written_at).as_millis() as u64);
            }
            self.done.insert(key);
        }
        self.settle_heals(&key, now);
    }

    /// `key` is everywhere, or will never need to be (superseded).
    fn settle_heals(&mut self, key: &(KeyId, Version), now: Instant) {
        for heal in &mut self.heals {
            if heal.waiting.remove(key) && heal.waiting.is_empty() && heal.converged_at.is_none() {
                heal.converged_at = Some(now);
            }
        }
    }

    fn uncount_root(&mut self, root: u64) {
        if let Some(count) = self.root_counts.get_mut(&root) {
            *count -= 1;
            if *count == 0 {
                self.root_counts.remove(&root);
            }
        }
    }

    fn check_roots(&mut self) {
        let same = self.up_count > 0
            && self.root_counts.len() == 1
            && self.root_counts.values().all(|c| *c == self.up_count);
        if !same {
            return;
        }
        let now = Instant::now();
        if self.bootstrap_at.is_none() && now > self.start {
            self.bootstrap_at = Some(now);
        }
    }

    /// The report's `crdt` section. `crdt_bytes` is every byte of CRDT traffic sent and
    /// `bootstrap_bytes` those sent until the first convergence.
    pub fn report(&self, figures: CrdtFigures) -> CrdtReport {
        let CrdtFigures {
            nodes,
            virtual_seconds,
            crdt_bytes,
            bootstrap_bytes,
            state_bytes_per_node,
            entries_per_node,
            rejected,
        } = figures;
        let bootstrap_s = self
            .bootstrap_at
            .map(|at| at.duration_since(self.start).as_secs_f64());
        let steady_s = virtual_seconds - bootstrap_s.unwrap_or(virtual_seconds);
        let steady_bytes = crdt_bytes.saturating_sub(bootstrap_bytes);
        let converged = self.convergence_ms.len() as u64;
        let heals: Vec<Option<u64>> = self
            .heals
            .iter()
            .map(|heal| {
                heal.converged_at
                    .map(|d| d.duration_since(heal.at).as_millis() as u64)
            })
            .collect();
        CrdtReport {
            bootstrap_ms: bootstrap_s.map(|s| (s * 1000.0) as u64),
            bootstrap_bytes_per_node: bootstrap_bytes as f64 / nodes.max(1) as f64,
            updates: self.updates,
            converged,
            unconverged: self.pending.values().filter(|p| !p.sampled).count() as u64,
            superseded: self.superseded,
            cut_off: self.cut_off,
            convergence_ms_p50: measure::quantile(&self.convergence_ms, 0.5),
            convergence_ms_p99: measure::quantile(&self.convergence_ms, 0.99),
            heal_convergence_ms: heals.clone(),
            heal_convergence_ms_max: heals.iter().flatten().max().copied(),
            bytes_per_node_per_s: if steady_s > 0.0 {
                steady_bytes as f64 / nodes.max(1) as f64 / steady_s
            } else {
                0.0
            },
            bytes_per_converged_update: (converged > 0).then(|| steady_bytes / converged),
            full_state_bytes_per_update: (state_bytes_per_node * nodes as f64) as u64,
            state_bytes_per_node,
            entries_per_node,
            rejected,
        }
    }
}

/// What the run loop measures at the end, for [`CrdtTracker::report`].
pub struct CrdtFigures {
    pub nodes: usize,
    pub virtual_seconds: f64,
    pub crdt_bytes: u64,
    pub bootstrap_bytes: u64,
    pub state_bytes_per_node: f64,
    pub entries_per_node: f64,
    pub rejected: u64,
}

/// The report's `crdt` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrdtReport {
    /// From the start until every up node held the same state (every registry record).
    pub bootstrap_ms: Option<u64>,
    /// CRDT bytes sent per node until then.
    pub bootstrap_bytes_per_node: f64,
    /// Updates written after the bootstrap, and how many reached every up node.
    pub updates: u64,
    pub converged: u64,
    pub unconverged: u64,
    /// Overwritten by a newer version before reaching everyone (not counted either way).
    pub superseded: u64,
    /// Of the converged: reached every node it could while some nodes that were up
    /// when it was written were cut off from every holder (isolated by churn, or across
    /// a partition); they get it when joined again.
    pub cut_off: u64,
    /// From an update's write to the moment every node up then (and since) held it.
    pub convergence_ms_p50: Option<f64>,
    pub convergence_ms_p99: Option<f64>,
    /// For each partition heal, how long until everything written before it (on both
    /// sides) was on every up node.
    pub heal_convergence_ms: Vec<Option<u64>>,
    pub heal_convergence_ms_max: Option<u64>,
    /// CRDT traffic after the bootstrap.
    pub bytes_per_node_per_s: f64,
    /// CRDT bytes sent after the bootstrap per converged update, next to what shipping
    /// every node the whole state once would cost.
    pub bytes_per_converged_update: Option<u64>,
    pub full_state_bytes_per_update: u64,
    /// Encoded entries held, mean over the up nodes at the end.
    pub state_bytes_per_node: f64,
    pub entries_per_node: f64,
    /// Entries refused (bad signature, not allowed, expired), over all nodes.
    pub rejected: u64,
}

/// Keys the write workload spreads its writes over.
const WORKLOAD_KEYS: u64 = 100;

/// Application writes at random up nodes, at a steady rate, to time convergence.
pub struct CrdtLoad {
    start: Instant,
    interval: Option<std::time::Duration>,
    next: std::time::Duration,
    rng: rand_chacha::ChaCha8Rng,
    written: u64,
}

impl CrdtLoad {
    pub fn new(
        section: &crate::scenario::CrdtSection,
        start: Instant,
        rng: rand_chacha::ChaCha8Rng,
    ) -> Self {
        CrdtLoad {
            start,
            interval: (section.writes_per_s > 0.0)
                .then(|| std::time::Duration::from_secs_f64(1.0 / section.writes_per_s)),
            next: section.start,
            rng,
            written: 0,
        }
    }

    pub fn next_due(&self) -> Option<std::time::Duration> {
        self.interval.map(|_| self.next)
    }

    /// Starts the writes due by now; each runs on its own task (a write waits for its
    /// node's actor, and the run loop must not).
    pub fn run_due(&mut self, mesh: &crate::chaos::Mesh) {
        use rand::Rng;
        use rand::seq::IndexedRandom;
        let Some(interval) = self.interval else {
            return;
        };
        let now = self.start.elapsed();
        while self.next <= now {
            self.next += interval;
            let up = mesh.up_nodes();
            let Some(&index) = up.choose(&mut self.rng) else {
                continue;
            };
            let Some(node) = mesh.nodes[index as usize].clone() else {
                continue;
            };
            let key = self.rng.random_range(0..WORKLOAD_KEYS);
            self.written += 1;
            let value = self.written.to_le_bytes().repeat(4);
            tokio::spawn(async move {
                let _ = node
                    .crdt_put("sim", format!("k{key}").into_bytes(), value)
                    .await;
            });
        }
    }
}
