//! What the simulator learns while a run goes on: failure detections scored against the
//! truth, application traffic and its deliveries, and repair probes.
//!
//! Each node gets a [`SimObserver`]; it sees what the node sees (a link declared down, a
//! message delivered) and scores it against what the simulated network knows to be true
//! at that moment. The figures of the report's `failure_detection` and `routing`
//! sections are computed from here at the end.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use x0_actors::{Delivered, NodeObserver};
use x0_protocols::NodeId;
use x0_protocols::crdt::SignedEntry;

use crate::net::SimNetwork;

/// A link that has worked this long and is declared down is a false suspicion; shorter,
/// and the declaration may be the tail of a real outage that just ended.
pub const STABLE_FOR: Duration = Duration::from_secs(5);

/// Payload prefix telling the simulator's messages apart from anything else.
const TAG: &[u8; 4] = b"x0sm";

/// Encodes a simulator message id into a payload of `len` bytes (at least 12).
pub fn payload(id: u64, len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len.max(12));
    bytes.extend_from_slice(TAG);
    bytes.extend_from_slice(&id.to_le_bytes());
    bytes.resize(len.max(12), 0);
    bytes
}

fn message_id(payload: &[u8]) -> Option<u64> {
    if payload.len() < 12 || &payload[..4] != TAG {
        return None;
    }
    Some(u64::from_le_bytes(payload[4..12].try_into().ok()?))
}

/// One application message the simulator sent.
#[derive(Clone, Debug)]
pub struct SentMessage {
    pub from: u32,
    pub to: u32,
    pub sent_at: Instant,
    /// Hops on the true shortest path when sent; `None` if the pair was disconnected.
    pub shortest_hops: Option<u32>,
    /// Still connected a moment later (see [`Observations::settle`]).
    pub stayed_connected: Option<bool>,
    pub delivered_at: Option<Instant>,
    pub hops: Option<u8>,
    /// A repair probe (counted for MTTR, not for delivery).
    pub repair: Option<usize>,
}

/// A pair whose path a fault broke; probed until a message gets through again.
#[derive(Clone, Debug)]
pub struct Repair {
    pub fault_at: Instant,
    pub from: u32,
    pub to: u32,
    /// The neighbor of `from` whose failure broke the path: the crashed node, or `to`
    /// across a cut link.
    pub lost: u32,
    pub repaired_at: Option<Instant>,
    /// When `from` declared `lost` down.
    pub declared_at: Option<Instant>,
}

#[derive(Default)]
pub struct Observations {
    pub detections_ms: Vec<u64>,
    /// Outages already scored, by (observer, neighbor, outage start).
    scored: HashSet<(u32, u32, Instant)>,
    pub false_suspicions: u64,
    pub suspicions: u64,
    pub messages: Vec<SentMessage>,
    pub repairs: Vec<Repair>,
    pub stray_deliveries: u64,
    /// Present when the run has CRDT sync.
    pub crdt: Option<crate::crdt_watch::CrdtTracker>,
    /// CRDT bytes sent when the mesh's state first converged.
    pub crdt_bootstrap_bytes: u64,
}

/// Shared between the run loop and every node's observer.
#[derive(Clone, Default)]
pub struct Recorder {
    inner: Arc<Mutex<Observations>>,
}

impl Recorder {
    pub fn lock(&self) -> MutexGuard<'_, Observations> {
        // Single-threaded runtime: a poisoned lock means a panic already ended the run.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn observer(&self, index: u32, net: SimNetwork) -> Arc<dyn NodeObserver> {
        Arc::new(SimObserver {
            index,
            net,
            recorder: self.clone(),
        })
    }
}

struct SimObserver {
    index: u32,
    net: SimNetwork,
    recorder: Recorder,
}

impl NodeObserver for SimObserver {
    fn delivered(&self, message: Delivered) {
        let mut obs = self.recorder.lock();
        let Some(id) = message_id(&message.payload) else {
            obs.stray_deliveries += 1;
            return;
        };
        let now = Instant::now();
        let Some(sent) = obs.messages.get_mut(id as usize) else {
            obs.stray_deliveries += 1;
            return;
        };
        if sent.to != self.index || sent.delivered_at.is_some() {
            obs.stray_deliveries += 1;
            return;
        }
        sent.delivered_at = Some(now);
        sent.hops = Some(message.hops);
        if let Some(repair) = sent.repair
            && let Some(r) = obs.repairs.get_mut(repair)
            && r.repaired_at.is_none()
        {
            r.repaired_at = Some(now);
        }
    }

    fn link_down(&self, neighbor: NodeId) {
        let Some(other) = self.net.index_of(&neighbor) else {
            return;
        };
        let truth = self.net.link_truth(self.index, other);
        let now = Instant::now();
        let mut obs = self.recorder.lock();
        for r in obs.repairs.iter_mut().filter(|r| {
            r.from == self.index && r.lost == other && r.declared_at.is_none() && r.fault_at <= now
        }) {
            r.declared_at = Some(now);
        }
        if truth.alive {
            if now.duration_since(truth.since) >= STABLE_FOR {
                obs.false_suspicions += 1;
            }
        } else if obs.scored.insert((self.index, other, truth.since)) {
            obs.detections_ms
                .push(now.duration_since(truth.since).as_millis() as u64);
        }
    }

    fn suspected(&self, _neighbor: NodeId) {
        self.recorder.lock().suspicions += 1;
    }

    fn crdt_applied(&self, entry: &SignedEntry) {
        if let Some(tracker) = &mut self.recorder.lock().crdt {
            tracker.applied(self.index, entry, Instant::now());
        }
    }

    fn crdt_root(&self, root: u64) {
        let mut obs = self.recorder.lock();
        let Some(tracker) = &mut obs.crdt else {
            return;
        };
        let before = tracker.bootstrap_at;
        tracker.root(self.index, root);
        if before.is_none() && tracker.bootstrap_at.is_some() {
            obs.crdt_bootstrap_bytes =
                self.net.stats().bytes_by_kind[x0_protocols::Kind::Crdt.code() as usize];
        }
    }
}

impl Observations {
    /// Marks messages sent at least `after` ago as having stayed connected or not, given
    /// the live graph now; returns how many it settled.
    pub fn settle(&mut self, now: Instant, after: Duration, live: &[Vec<u32>]) -> usize {
        let mut settled = 0;
        let mut component: Option<Vec<u32>> = None;
        for m in self.messages.iter_mut().rev() {
            if now.duration_since(m.sent_at) < after {
                continue;
            }
            if m.stayed_connected.is_some() {
                // Older ones were settled by earlier calls.
                break;
            }
            let labels = component.get_or_insert_with(|| components(live));
            m.stayed_connected =
                Some(m.shortest_hops.is_some() && labels[m.from as usize] == labels[m.to as usize]);
            settled += 1;
        }
        settled
    }
}

/// Hop distance from `from` to `to` over `live` links (breadth-first).
pub fn hops_between(live: &[Vec<u32>], from: u32, to: u32) -> Option<u32> {
    if from == to {
        return Some(0);
    }
    let mut distance = vec![u32::MAX; live.len()];
    distance[from as usize] = 0;
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        let d = distance[at as usize];
        for &next in &live[at as usize] {
            if distance[next as usize] == u32::MAX {
                if next == to {
                    return Some(d + 1);
                }
                distance[next as usize] = d + 1;
                queue.push_back(next);
            }
        }
    }
    None
}

/// Connected-component label of every node.
pub fn components(live: &[Vec<u32>]) -> Vec<u32> {
    let mut label = vec![u32::MAX; live.len()];
    for start in 0..live.len() {
        if label[start] != u32::MAX {
            continue;
        }
        label[start] = start as u32;
        let mut queue = VecDeque::from([start as u32]);
        while let Some(at) = queue.pop_front() {
            for &next in &live[at as usize] {
                if label[next as usize] == u32::MAX {
                    label[next as usize] = start as u32;
                    queue.push_back(next);
                }
            }
        }
    }
    label
}

/// The `q`-quantile (0..=1) of `samples` by nearest rank; `None` when empty.
pub fn quantile(samples: &[u64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64)
}

/// Pairs of `victim`'s live neighbors whose only common neighbor is `victim`: their
/// shortest path ran through it, so its failure forces a detour. At most `limit`.
pub fn pairs_through(live: &[Vec<u32>], victim: u32, limit: usize) -> Vec<(u32, u32)> {
    let neighbors = &live[victim as usize];
    let mut pairs = Vec::new();
    for (i, &a) in neighbors.iter().enumerate() {
        for &b in &neighbors[i + 1..] {
            if pairs.len() >= limit {
                return pairs;
            }
            let a_links: HashSet<u32> = live[a as usize].iter().copied().collect();
            if a_links.contains(&b) {
                continue;
            }
            let common = live[b as usize]
                .iter()
                .filter(|n| a_links.contains(n))
                .count();
            if common == 1 {
                pairs.push((a, b));
            }
        }
    }
    pairs
}

/// Repairs whose first delivery came before their sender declared the failure.
pub fn repaired_before_declared(repairs: &[Repair]) -> usize {
    repairs
        .iter()
        .filter(|r| {
            r.repaired_at
                .is_some_and(|at| r.declared_at.is_none_or(|declared| at < declared))
        })
        .count()
}

/// Per-(fault, pair) repair times in milliseconds, and how many never repaired.
pub fn repair_times(repairs: &[Repair]) -> (Vec<u64>, usize) {
    let mut times = Vec::new();
    let mut unrepaired = 0;
    for r in repairs {
        match r.repaired_at {
            Some(at) => times.push(at.duration_since(r.fault_at).as_millis() as u64),
            None => unrepaired += 1,
        }
    }
    (times, unrepaired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u32) -> Vec<Vec<u32>> {
        (0..n)
            .map(|i| {
                let mut v = Vec::new();
                if i > 0 {
                    v.push(i - 1);
                }
                if i + 1 < n {
                    v.push(i + 1);
                }
                v
            })
            .collect()
    }

    #[test]
    fn payload_ids_round_trip_and_strangers_are_ignored() {
        assert_eq!(message_id(&payload(42, 64)), Some(42));
        assert_eq!(payload(1, 3).len(), 12);
        assert_eq!(message_id(b"hello world, not ours"), None);
    }

    #[test]
    fn shortest_paths_and_components() {
        let mut g = line(5);
        assert_eq!(hops_between(&g, 0, 4), Some(4));
        g[2].clear();
        g[1].retain(|&n| n != 2);
        g[3].retain(|&n| n != 2);
        assert_eq!(hops_between(&g, 0, 4), None);
        let c = components(&g);
        assert_eq!(c[0], c[1]);
        assert_ne!(c[0], c[4]);
    }

    #[test]
    fn pairs_through_a_hub_need_it() {
        // A star around 0 plus a side link 1-2: (1, 2) has a direct link, (1, 3) and
        // (2, 3) meet only at 0.
        let g = vec![vec![1, 2, 3], vec![0, 2], vec![0, 1], vec![0]];
        assert_eq!(pairs_through(&g, 0, 10), vec![(1, 3), (2, 3)]);
    }

    #[test]
    fn a_repair_counts_as_before_the_declaration_only_if_it_came_first() {
        let t0 = Instant::now();
        let at = |ms: u64| Some(t0 + Duration::from_millis(ms));
        let repair = |repaired_at, declared_at| Repair {
            fault_at: t0,
            from: 1,
            to: 2,
            lost: 3,
            repaired_at,
            declared_at,
        };
        let repairs = [
            repair(at(900), at(1500)),
            repair(at(1600), at(1500)),
            repair(at(700), None),
            repair(None, at(1500)),
        ];
        assert_eq!(repaired_before_declared(&repairs), 2);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&s, 0.5), Some(50.0));
        assert_eq!(quantile(&s, 0.99), Some(99.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
