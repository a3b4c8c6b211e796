//! Carrying out a scenario's faults, churn and traffic on a running mesh.
//!
//! The run loop asks [`Chaos::next_due`] when something is next due and calls
//! [`Chaos::run_due`] then. Which node crashes, which link is cut, which pair talks is
//! drawn at that moment from seeded streams among what is up, so runs replay exactly.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::seq::IndexedRandom;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;
use x0_actors::{CrdtStore, LedgerStore, NodeArgs, NodeHandle, NodeSettings};
use x0_protocols::crdt::{MemoVerifier, Verifier};
use x0_protocols::{Identity, NodeId};

use crate::faults::{FaultKind, FaultSpec};
use crate::measure::{self, Recorder, Repair, SentMessage};
use crate::net::{LinkKey, SimNetwork, link_key};
use crate::report::FaultCounts;
use crate::run::SimError;
use crate::scenario::Scenario;

/// How often a broken pair is probed until a message gets through.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// A broken pair not repaired within this long counts as unrepaired.
pub const REPAIR_WINDOW: Duration = Duration::from_secs(30);
/// Broken pairs probed per failed node.
const PAIRS_PER_FAILURE: usize = 4;
/// A message's pair must still be connected this long after sending to count.
pub const SETTLE_AFTER: Duration = Duration::from_secs(2);

enum Action {
    Strike(usize),
    Restart(u32),
    Restore(Vec<LinkKey>),
    /// Restores a partition's crossing links (and times the CRDT state's convergence).
    Heal(Vec<LinkKey>),
    Lift(u64),
    ChurnLeave,
}

/// The mesh's nodes, startable and stoppable.
pub struct Mesh {
    pub nodes: Vec<Option<Arc<NodeHandle>>>,
    pub identities: Vec<Arc<Identity>>,
    pub ids: Vec<NodeId>,
    pub network: SimNetwork,
    pub settings: NodeSettings,
    pub recorder: Recorder,
    /// Each validator's ledger store: redb in memory, kept across the node's crashes as
    /// its disk would be.
    pub ledger_stores: Vec<Option<LedgerStore>>,
    /// Indices of the ledger's validators (empty without a ledger).
    pub validators: Vec<u32>,
    /// Each node's saved CRDT state, kept across its crashes as its disk would be.
    pub crdt_stores: Vec<CrdtStore>,
    /// Shared by every node: verifies each distinct CRDT entry once for the whole mesh.
    pub verifier: Arc<dyn Verifier>,
    /// Virtual time zero: mesh time (CRDT stamps) counts from here.
    pub epoch: Instant,
    node_rng: ChaCha8Rng,
}

impl Mesh {
    pub fn new(
        identities: Vec<Arc<Identity>>,
        network: SimNetwork,
        settings: NodeSettings,
        node_rng: ChaCha8Rng,
    ) -> Self {
        let ids = identities.iter().map(|i| i.id()).collect();
        let n = identities.len();
        Mesh {
            nodes: vec![None; identities.len()],
            identities,
            ids,
            network,
            settings,
            recorder: Recorder::default(),
            ledger_stores: vec![None; n],
            validators: Vec::new(),
            crdt_stores: (0..n).map(|_| CrdtStore::memory()).collect(),
            verifier: Arc::new(MemoVerifier::default()),
            epoch: Instant::now(),
            node_rng,
        }
    }

    /// Starts node `index`'s actor tree (again, after a crash: same identity, empty tables).
    pub async fn start(&mut self, index: u32) -> Result<(), SimError> {
        let i = index as usize;
        let mut settings = self.settings.clone();
        if let Some(crdt) = &mut settings.crdt {
            crdt.addresses = vec![format!("sim/{index}")];
            if self.validators.contains(&index) {
                crdt.roles.push("validator".into());
            }
        }
        let handle = NodeHandle::spawn(NodeArgs {
            identity: self.identities[i].clone(),
            port: self.network.port(index),
            settings,
            seed: self.node_rng.next_u64(),
            observer: self.recorder.observer(index, self.network.clone()),
            ledger_store: self.ledger_stores[i].clone(),
            crypto_seed: {
                let mut seed = [0u8; 32];
                self.node_rng.fill_bytes(&mut seed);
                seed
            },
            mesh_epoch_ms: self.epoch.elapsed().as_millis() as u64,
            crdt_store: Some(self.crdt_stores[i].clone()),
            verifier: self.verifier.clone(),
        })
        .await
        .map_err(|e| SimError::NodeStart {
            index: i,
            message: e.to_string(),
        })?;
        let handle = Arc::new(handle);
        self.network.set_up(index, true);
        self.network.attach(index, Some(handle.clone()));
        self.nodes[i] = Some(handle);
        if let Some(tracker) = &mut self.recorder.lock().crdt {
            tracker.node_up(index);
        }
        Ok(())
    }

    /// Stops node `index` as a crash would: no goodbye, its links just go silent.
    pub fn crash(&mut self, index: u32) {
        self.network.attach(index, None);
        self.network.set_up(index, false);
        if let Some(node) = self.nodes[index as usize].take() {
            node.stop();
        }
        if let Some(tracker) = &mut self.recorder.lock().crdt {
            tracker.node_down(index, Instant::now());
        }
    }

    pub fn up_nodes(&self) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|&i| self.nodes[i as usize].is_some())
            .collect()
    }
}

pub struct Chaos {
    start: Instant,
    timeline: BTreeMap<(Duration, u64), Action>,
    next_order: u64,
    faults: Vec<FaultSpec>,
    rng: ChaCha8Rng,
    traffic_rng: ChaCha8Rng,
    churn: Option<(Duration, Duration)>,
    traffic: Option<(Duration, usize)>,
    next_traffic: Option<Duration>,
    next_probe: Option<Duration>,
    probing: bool,
    /// Nodes away because of churn, so churn does not pick them again.
    away: HashSet<u32>,
    live_cache: Option<Vec<Vec<u32>>>,
    pub counts: FaultCounts,
    pub expected_detections: usize,
}

impl Chaos {
    pub fn new(
        scenario: &Scenario,
        start: Instant,
        rng: ChaCha8Rng,
        traffic_rng: ChaCha8Rng,
    ) -> Self {
        let mut chaos = Chaos {
            start,
            timeline: BTreeMap::new(),
            next_order: 0,
            faults: scenario.faults.clone(),
            rng,
            traffic_rng,
            churn: None,
            traffic: None,
            next_traffic: None,
            next_probe: None,
            probing: scenario.routing.enabled,
            away: HashSet::new(),
            live_cache: None,
            counts: FaultCounts::default(),
            expected_detections: 0,
        };
        for (i, fault) in scenario.faults.iter().enumerate() {
            for at in fault.strikes(scenario.duration) {
                chaos.schedule(at, Action::Strike(i));
            }
        }
        if let Some(churn) = &scenario.churn {
            chaos.churn = Some((churn.interval(scenario.nodes), churn.downtime));
            chaos.schedule(churn.start, Action::ChurnLeave);
        }
        if let Some(traffic) = &scenario.traffic {
            let interval = Duration::from_secs_f64(1.0 / traffic.rate_per_s);
            chaos.traffic = Some((interval, traffic.payload_bytes));
            chaos.next_traffic = Some(traffic.start);
        }
        chaos
    }

    fn schedule(&mut self, at: Duration, action: Action) {
        self.timeline.insert((at, self.next_order), action);
        self.next_order += 1;
    }

    fn elapsed(&self) -> Duration {
        Instant::now().duration_since(self.start)
    }

    /// When something is next due, as time since the start of the run.
    pub fn next_due(&self) -> Option<Duration> {
        [
            self.timeline.keys().next().map(|(at, _)| *at),
            self.next_traffic,
            self.next_probe,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Carries out everything due by now.
    pub async fn run_due(&mut self, mesh: &mut Mesh) -> Result<(), SimError> {
        let now = self.elapsed();
        while let Some(entry) = self.timeline.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let action = entry.remove();
            self.act(mesh, action, now).await?;
        }
        if let Some(at) = self.next_traffic
            && at <= now
            && let Some((interval, payload_bytes)) = self.traffic
        {
            self.send_traffic(mesh, payload_bytes);
            self.next_traffic = Some(at + interval);
        }
        if let Some(at) = self.next_probe
            && at <= now
        {
            self.probe(mesh);
        }
        Ok(())
    }

    /// Marks messages old enough as having stayed connected or not.
    pub fn settle(&mut self, mesh: &Mesh) {
        let live = self.live(mesh).clone();
        let mut obs = mesh.recorder.lock();
        obs.settle(Instant::now(), SETTLE_AFTER, &live);
        if let Some(tracker) = &mut obs.crdt {
            tracker.settle_unreachable(&measure::components(&live));
        }
    }

    fn live(&mut self, mesh: &Mesh) -> &Vec<Vec<u32>> {
        self.live_cache
            .get_or_insert_with(|| mesh.network.live_adjacency())
    }

    fn changed(&mut self) {
        self.live_cache = None;
    }

    async fn act(
        &mut self,
        mesh: &mut Mesh,
        action: Action,
        now: Duration,
    ) -> Result<(), SimError> {
        match action {
            Action::Strike(i) => {
                let fault = self.faults[i].clone();
                self.strike(mesh, &fault, now);
            }
            Action::Restart(index) => {
                if mesh.nodes[index as usize].is_none() {
                    mesh.start(index).await?;
                    self.away.remove(&index);
                    self.counts.restarts += 1;
                    self.changed();
                }
            }
            Action::Restore(links) => {
                for link in links {
                    mesh.network.restore(link);
                }
                self.changed();
            }
            Action::Heal(links) => {
                for link in links {
                    mesh.network.restore(link);
                }
                if let Some(tracker) = &mut mesh.recorder.lock().crdt {
                    tracker.heal_started(Instant::now());
                }
                self.changed();
            }
            Action::Lift(id) => mesh.network.lift(id),
            Action::ChurnLeave => {
                if let Some((interval, downtime)) = self.churn {
                    let candidates: Vec<u32> = mesh
                        .up_nodes()
                        .into_iter()
                        .filter(|i| !self.away.contains(i))
                        .collect();
                    if candidates.len() > 1
                        && let Some(&victim) = candidates.choose(&mut self.rng)
                    {
                        self.crash(mesh, victim);
                        self.away.insert(victim);
                        self.counts.churn_departures += 1;
                        self.schedule(now + downtime, Action::Restart(victim));
                    }
                    self.schedule(now + interval, Action::ChurnLeave);
                }
            }
        }
        Ok(())
    }

    fn strike(&mut self, mesh: &mut Mesh, fault: &FaultSpec, now: Duration) {
        match fault.kind {
            FaultKind::Crash => {
                let mut up = mesh.up_nodes();
                if fault.validators == Some(true) {
                    up.retain(|i| mesh.validators.contains(i));
                }
                for _ in 0..fault.nodes.unwrap_or(1) {
                    if up.len() <= 1 {
                        break;
                    }
                    let victim = up.swap_remove(self.rng.random_range(0..up.len()));
                    self.crash(mesh, victim);
                    if let Some(after) = fault.restart_after {
                        self.schedule(now + after, Action::Restart(victim));
                    }
                }
            }
            FaultKind::LinkCut => {
                let live = self.live(mesh).clone();
                let mut links: Vec<LinkKey> = live_links(&live);
                let mut cut = Vec::new();
                for _ in 0..fault.links.unwrap_or(1) {
                    if links.is_empty() {
                        break;
                    }
                    let link = links.swap_remove(self.rng.random_range(0..links.len()));
                    mesh.network.cut(link);
                    cut.push(link);
                }
                self.counts.link_cuts += cut.len() as u64;
                self.expected_detections += 2 * cut.len();
                self.changed();
                let after = self.live(mesh).clone();
                for &(a, b) in &cut {
                    self.watch_repair(mesh, &after, a, b, b);
                }
                if let Some(after) = fault.restore_after {
                    self.schedule(now + after, Action::Restore(cut));
                }
            }
            FaultKind::Partition => {
                let live = self.live(mesh).clone();
                let side = self.region(mesh, &live, fault.fraction.unwrap_or(0.5));
                let crossing: Vec<LinkKey> = live_links(&live)
                    .into_iter()
                    .filter(|(a, b)| side.contains(a) != side.contains(b))
                    .collect();
                for &link in &crossing {
                    mesh.network.cut(link);
                }
                self.counts.partitions += 1;
                self.expected_detections += 2 * crossing.len();
                self.changed();
                if let Some(after) = fault.heal_after {
                    self.schedule(now + after, Action::Heal(crossing));
                }
            }
            FaultKind::LossBurst | FaultKind::LatencySpike => {
                let links = match fault.fraction {
                    Some(f) if f < 1.0 => {
                        let all = live_links(self.live(mesh));
                        let count = ((all.len() as f64) * f).ceil() as usize;
                        Some(
                            all.choose_multiple(&mut self.rng, count)
                                .copied()
                                .collect::<HashSet<_>>(),
                        )
                    }
                    _ => None,
                };
                let id = if fault.kind == FaultKind::LossBurst {
                    self.counts.loss_bursts += 1;
                    mesh.network.impair(links, fault.loss.unwrap_or(0.0), 0.0)
                } else {
                    self.counts.latency_spikes += 1;
                    mesh.network
                        .impair(links, 0.0, fault.extra_ms.unwrap_or(0.0))
                };
                let lasts = fault.duration.unwrap_or(Duration::ZERO);
                self.schedule(now + lasts, Action::Lift(id));
            }
        }
    }

    /// Crashes a node, noting what its failure should make others detect and which
    /// paths through it to watch for repair.
    fn crash(&mut self, mesh: &mut Mesh, victim: u32) {
        let before = self.live(mesh).clone();
        self.expected_detections += before[victim as usize].len();
        mesh.crash(victim);
        self.counts.crashes += 1;
        self.changed();
        let after = self.live(mesh).clone();
        for (a, b) in measure::pairs_through(&before, victim, PAIRS_PER_FAILURE) {
            self.watch_repair(mesh, &after, a, b, victim);
        }
    }

    /// Starts probing a pair whose path just broke when `from` lost its neighbor `lost`,
    /// if the pair is still connected at all.
    fn watch_repair(&mut self, mesh: &Mesh, live: &[Vec<u32>], from: u32, to: u32, lost: u32) {
        if !self.probing || measure::hops_between(live, from, to).is_none() {
            return;
        }
        mesh.recorder.lock().repairs.push(Repair {
            fault_at: Instant::now(),
            from,
            to,
            lost,
            repaired_at: None,
            declared_at: None,
        });
        if self.next_probe.is_none() {
            self.next_probe = Some(self.elapsed());
        }
    }

    /// A connected region of about `fraction` of the up nodes, grown breadth-first from
    /// a random node: one side of a partition, as a radio shadow or a cut cable would make.
    fn region(&mut self, mesh: &Mesh, live: &[Vec<u32>], fraction: f64) -> HashSet<u32> {
        let up = mesh.up_nodes();
        let target = ((up.len() as f64) * fraction).round().max(1.0) as usize;
        let mut side = HashSet::new();
        let Some(&seed) = up.choose(&mut self.rng) else {
            return side;
        };
        let mut queue = VecDeque::from([seed]);
        side.insert(seed);
        while let Some(at) = queue.pop_front() {
            for &next in &live[at as usize] {
                if side.len() >= target {
                    return side;
                }
                if side.insert(next) {
                    queue.push_back(next);
                }
            }
        }
        side
    }

    fn send_traffic(&mut self, mesh: &mut Mesh, payload_bytes: usize) {
        let up = mesh.up_nodes();
        if up.len() < 2 {
            return;
        }
        let from = up[self.traffic_rng.random_range(0..up.len())];
        let mut to = from;
        while to == from {
            to = up[self.traffic_rng.random_range(0..up.len())];
        }
        let shortest = measure::hops_between(self.live(mesh), from, to);
        send(mesh, from, to, shortest, None, payload_bytes);
    }

    fn probe(&mut self, mesh: &mut Mesh) {
        let now = Instant::now();
        let open: Vec<(usize, u32, u32)> = {
            let obs = mesh.recorder.lock();
            obs.repairs
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r.repaired_at.is_none() && now.duration_since(r.fault_at) < REPAIR_WINDOW
                })
                .map(|(i, r)| (i, r.from, r.to))
                .collect()
        };
        for (repair, from, to) in &open {
            if mesh.nodes[*from as usize].is_some() {
                send(mesh, *from, *to, None, Some(*repair), 16);
            }
        }
        self.next_probe = (!open.is_empty()).then(|| self.elapsed() + PROBE_INTERVAL);
    }
}

/// Sends one simulator message from `from` to `to` and records it.
fn send(
    mesh: &Mesh,
    from: u32,
    to: u32,
    shortest_hops: Option<u32>,
    repair: Option<usize>,
    payload_bytes: usize,
) {
    let Some(node) = &mesh.nodes[from as usize] else {
        return;
    };
    let id = {
        let mut obs = mesh.recorder.lock();
        obs.messages.push(SentMessage {
            from,
            to,
            sent_at: Instant::now(),
            shortest_hops,
            stayed_connected: None,
            delivered_at: None,
            hops: None,
            repair,
        });
        obs.messages.len() as u64 - 1
    };
    node.send_nowait(mesh.ids[to as usize], measure::payload(id, payload_bytes));
}

fn live_links(live: &[Vec<u32>]) -> Vec<LinkKey> {
    let mut links = Vec::new();
    for (a, neighbors) in live.iter().enumerate() {
        for &b in neighbors {
            if (a as u32) < b {
                links.push(link_key(a as u32, b));
            }
        }
    }
    links
}
