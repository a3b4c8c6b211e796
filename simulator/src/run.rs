//! Running a scenario: build the mesh, spawn every node's actor tree, let virtual time pass,
//! then measure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use x0_actors::{NodeHandle, NodeSettings};
use x0_protocols::{Identity, NodeId};

use crate::chaos::{Chaos, Mesh, REPAIR_WINDOW};
use crate::crdt_watch::{CrdtFigures, CrdtLoad, CrdtReport, CrdtTracker};
use crate::ledger_load::{self, LedgerLoad};
use crate::measure;
use crate::net::{SimNetwork, TrafficStats};
use crate::report::{
    DiscoveryReport, FailureDetectionReport, OverheadReport, Report, RoutingReport, SessionsReport,
    WindowOverhead, peak_rss_bytes,
};
use crate::scenario::Scenario;
use crate::topology::Topology;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("could not build the simulation runtime: {0}")]
    Runtime(std::io::Error),
    #[error("node {index} failed to start: {message}")]
    NodeStart { index: usize, message: String },
    #[error("ledger store: {0}")]
    Ledger(String),
    #[error("node {index} did not answer at the end of the run: {message}")]
    NodeQuery { index: usize, message: String },
}

/// Where a run is, for progress display.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub virtual_elapsed: Duration,
    pub virtual_total: Duration,
}

/// Independent random streams for each part of the run, all derived from the one seed, so
/// that adding a draw in one part does not shift the others.
struct Seeds {
    master: ChaCha8Rng,
}

impl Seeds {
    fn new(seed: u64) -> Self {
        Seeds {
            master: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn stream(&mut self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.master.next_u64())
    }
}

/// Runs `scenario` to the end on a paused tokio clock and returns its report.
///
/// `progress` is called once per virtual second.
pub fn run(scenario: &Scenario, mut progress: impl FnMut(Progress)) -> Result<Report, SimError> {
    let wall = std::time::Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(SimError::Runtime)?;
    let mut report = runtime.block_on(simulate(scenario, &mut progress))?;
    drop(runtime);
    report.wall_seconds = wall.elapsed().as_secs_f64();
    report.speedup = report.virtual_seconds / report.wall_seconds.max(1e-9);
    report.peak_rss_bytes = peak_rss_bytes();
    report.peak_rss_bytes_per_node = report.peak_rss_bytes.map(|b| b / scenario.nodes as u64);
    Ok(report)
}

async fn simulate(
    scenario: &Scenario,
    progress: &mut impl FnMut(Progress),
) -> Result<Report, SimError> {
    let mut seeds = Seeds::new(scenario.seed);
    let topology = Topology::generate(
        scenario.topology,
        scenario.nodes,
        scenario.mean_degree,
        &mut seeds.stream(),
    );
    let mut identity_rng = seeds.stream();
    let identities: Vec<Arc<Identity>> = (0..scenario.nodes)
        .map(|_| {
            let mut seed = [0u8; 32];
            identity_rng.fill_bytes(&mut seed);
            Arc::new(Identity::from_seed(seed))
        })
        .collect();
    let ids: Vec<NodeId> = identities.iter().map(|i| i.id()).collect();
    let network = SimNetwork::new(
        topology.adjacency.clone(),
        ids.clone(),
        scenario.link.clone(),
        seeds.stream(),
    );
    // The ledger draws from its own stream, so turning it on or off leaves every other
    // part of the run as it was.
    let mut ledger_rng = ChaCha8Rng::seed_from_u64(scenario.seed ^ 0x1ED6_E5EE_D000_0001);
    let ledger = scenario
        .ledger_enabled()
        .then(|| ledger_load::settings(&scenario.ledger, &ids, &mut ledger_rng));
    x0_actors::ledger::seed_election_rng(ledger_rng.next_u64());
    let settings = NodeSettings {
        discovery: scenario.discovery_config(),
        failure: scenario.failure_config(),
        routing: scenario.routing_config(),
        ledger: ledger.clone(),
        crdt: scenario.crdt_settings(),
        seal_links: scenario.security.seal_links,
        ..NodeSettings::default()
    };
    let mut mesh = Mesh::new(identities, network.clone(), settings, seeds.stream());
    if scenario.crdt.enabled {
        mesh.recorder.lock().crdt = Some(CrdtTracker::new(scenario.nodes, mesh.epoch));
    }
    if let Some(ledger) = &ledger {
        for (i, id) in ids.iter().enumerate() {
            if ledger.validators.contains(id) {
                mesh.ledger_stores[i] = Some(memory_store()?);
                mesh.validators.push(i as u32);
            }
        }
    }
    for index in 0..scenario.nodes as u32 {
        mesh.start(index).await?;
    }
    let pump = tokio::spawn(network.clone().pump());

    let start = tokio::time::Instant::now();
    let mut chaos = Chaos::new(scenario, start, seeds.stream(), seeds.stream());
    let mut load = ledger
        .is_some()
        .then(|| LedgerLoad::new(&scenario.ledger, start, ledger_rng.clone()));
    // Its own stream too, for the same reason as the ledger's.
    let mut crdt_load = scenario.crdt.enabled.then(|| {
        CrdtLoad::new(
            &scenario.crdt,
            start,
            ChaCha8Rng::seed_from_u64(scenario.seed ^ 0xC4D7_5EED_0000_0002),
        )
    });
    let total = scenario.duration;
    let load_start = scenario.load_start().filter(|at| *at < total);
    let mut at_load_start: Option<(Duration, TrafficStats)> = None;
    let mut next_second = Duration::from_secs(1).min(total);
    loop {
        let due = [
            chaos.next_due(),
            load.as_ref().and_then(LedgerLoad::next_due),
            crdt_load.as_ref().and_then(CrdtLoad::next_due),
        ]
        .into_iter()
        .flatten()
        .fold(next_second, Duration::min);
        tokio::time::sleep_until(start + due).await;
        chaos.run_due(&mut mesh).await?;
        if let Some(load) = &mut load {
            load.run_due(&mesh);
        }
        if let Some(crdt_load) = &mut crdt_load {
            crdt_load.run_due(&mesh);
        }
        if due >= next_second {
            if at_load_start.is_none() && load_start.is_some_and(|at| next_second > at) {
                at_load_start = Some((next_second - Duration::from_secs(1), network.stats()));
            }
            chaos.settle(&mesh);
            progress(Progress {
                virtual_elapsed: next_second,
                virtual_total: total,
            });
            if next_second >= total {
                break;
            }
            next_second = (next_second + Duration::from_secs(1)).min(total);
        }
    }
    let virtual_seconds = start.elapsed().as_secs_f64();

    let live: Vec<Arc<NodeHandle>> = mesh.nodes.iter().flatten().cloned().collect();
    let live_ids: Vec<NodeId> = mesh.up_nodes().iter().map(|&i| ids[i as usize]).collect();
    let discovery = measure_discovery(&mesh, &topology, &ids).await?;
    let mut actor_restarts = 0;
    let mut decode_errors = 0;
    let mut hop_limit_drops = 0;
    let (mut relays_parked, mut relays_resumed) = (0, 0);
    for (index, node) in live.iter().enumerate() {
        let status = node.status().await.map_err(|e| SimError::NodeQuery {
            index,
            message: e.to_string(),
        })?;
        actor_restarts += status.actor_restarts;
        decode_errors += status.envelope_decode_errors;
        relays_parked += status.forwarding.parked;
        relays_resumed += status.forwarding.resumed;
        hop_limit_drops += status
            .forwarding
            .dropped
            .get("hop_limit")
            .copied()
            .unwrap_or(0);
    }
    let mut sessions = SessionsReport {
        suite: x0_protocols::crypto::SUITE.to_string(),
        expected: mesh.network.live_adjacency().iter().map(Vec::len).sum(),
        ..SessionsReport::default()
    };
    for (index, node) in live.iter().enumerate() {
        sessions.established += node
            .sessions()
            .await
            .map_err(|e| SimError::NodeQuery {
                index,
                message: e.to_string(),
            })?
            .len();
    }
    let routing = match scenario.routing.enabled {
        true => {
            let mut routing = measure_routing(&live, &live_ids).await?;
            routing.hop_limit_drops = hop_limit_drops;
            routing.relays_parked = relays_parked;
            routing.relays_resumed = relays_resumed;
            score_traffic(&mut routing, &mesh, start + total);
            Some(routing)
        }
        false => None,
    };
    let traffic = network.stats();
    let failure_detection = {
        let obs = mesh.recorder.lock();
        let node_hours = scenario.nodes as f64 * virtual_seconds / 3600.0;
        FailureDetectionReport {
            detections: obs.detections_ms.len(),
            expected_detections: chaos.expected_detections,
            mttd_ms_p50: measure::quantile(&obs.detections_ms, 0.5),
            mttd_ms_p99: measure::quantile(&obs.detections_ms, 0.99),
            false_suspicions: obs.false_suspicions,
            false_suspicion_rate: obs.false_suspicions as f64 / node_hours.max(1e-9) * 1000.0,
            suspicions: obs.suspicions,
        }
    };
    let nodes = scenario.nodes as f64;
    let whole = overhead_rates(&traffic, nodes, virtual_seconds);
    let under_load = at_load_start.map(|(from, then)| {
        let from_s = from.as_secs_f64();
        let window = overhead_rates(&traffic.since(&then), nodes, virtual_seconds - from_s);
        WindowOverhead {
            from_s,
            control_bytes_per_node_per_s: window.control_bytes,
            bytes_per_node_per_s_by_kind: window.bytes_by_kind,
            messages_per_node_per_s_by_kind: window.messages_by_kind,
        }
    });
    let overhead = OverheadReport {
        control_bytes_per_node_per_s: whole.control_bytes,
        bytes_per_node_per_s_by_kind: whole.bytes_by_kind,
        messages_per_node_per_s_by_kind: whole.messages_by_kind,
        data_bytes: traffic.data_bytes_sent,
        under_load,
    };
    let ledger = match (load, &ledger) {
        (Some(load), Some(settings)) => {
            let validators: Vec<NodeId> = settings.validators.iter().copied().collect();
            Some(load.finish(&mesh, &validators).await)
        }
        _ => None,
    };
    let crdt = measure_crdt(&mesh, &live, virtual_seconds, &traffic).await?;
    pump.abort();
    drop(live);
    for index in 0..scenario.nodes as u32 {
        network.attach(index, None);
        if let Some(node) = mesh.nodes[index as usize].take()
            && let Ok(node) = Arc::try_unwrap(node)
        {
            node.shutdown().await;
        }
    }
    Ok(Report {
        nodes: scenario.nodes,
        seed: scenario.seed,
        topology: scenario.topology.to_string(),
        links: topology.links(),
        virtual_seconds,
        wall_seconds: 0.0,
        speedup: 0.0,
        envelopes_sent: traffic.envelopes_sent,
        envelopes_delivered: traffic.envelopes_delivered,
        envelopes_dropped: traffic.envelopes_dropped,
        bytes_sent: traffic.bytes_sent,
        actor_restarts,
        envelope_decode_errors: decode_errors,
        discovery,
        routing,
        failure_detection,
        faults: chaos.counts.clone(),
        overhead,
        sessions,
        ledger,
        crdt,
        peak_rss_bytes: None,
        peak_rss_bytes_per_node: None,
    })
}

/// The report's `crdt` section, when the run has CRDT sync: the tracker's timings and
/// every live node's state.
async fn measure_crdt(
    mesh: &Mesh,
    live: &[Arc<NodeHandle>],
    virtual_seconds: f64,
    traffic: &TrafficStats,
) -> Result<Option<CrdtReport>, SimError> {
    if mesh.recorder.lock().crdt.is_none() {
        return Ok(None);
    }
    let (mut state_bytes, mut entries, mut rejected) = (0usize, 0usize, 0u64);
    for (index, node) in live.iter().enumerate() {
        let status = node.crdt_status().await.map_err(|e| SimError::NodeQuery {
            index,
            message: e.to_string(),
        })?;
        state_bytes += status.state_bytes;
        entries += status.entries;
        rejected += status.sync.rejected;
    }
    let obs = mesh.recorder.lock();
    let live_count = live.len().max(1) as f64;
    let figures = CrdtFigures {
        nodes: mesh.nodes.len(),
        virtual_seconds,
        crdt_bytes: traffic.bytes_by_kind[x0_protocols::Kind::Crdt.code() as usize],
        bootstrap_bytes: obs.crdt_bootstrap_bytes,
        state_bytes_per_node: state_bytes as f64 / live_count,
        entries_per_node: entries as f64 / live_count,
        rejected,
    };
    Ok(obs.crdt.as_ref().map(|tracker| tracker.report(figures)))
}

/// A fresh ledger store on redb's in-memory backend: the same storage code as a real
/// node's, without a disk.
fn memory_store() -> Result<x0_actors::LedgerStore, SimError> {
    let db = redb::Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .map_err(|e| SimError::Ledger(e.to_string()))?;
    x0_actors::LedgerStore::open(Arc::new(db)).map_err(|e| SimError::Ledger(e.to_string()))
}

/// Fills the routing report's traffic figures: delivery between pairs that stayed
/// connected, path stretch, and repair times.
fn score_traffic(routing: &mut RoutingReport, mesh: &Mesh, end: tokio::time::Instant) {
    /// Messages sent this close to the end may still be in flight.
    const IN_FLIGHT: Duration = Duration::from_secs(5);
    let obs = mesh.recorder.lock();
    let mut stretch_sum = 0.0;
    let mut stretch_count = 0usize;
    for m in obs.messages.iter().filter(|m| m.repair.is_none()) {
        routing.messages_sent += 1;
        if m.stayed_connected != Some(true) || end.duration_since(m.sent_at) < IN_FLIGHT {
            continue;
        }
        routing.messages_between_connected += 1;
        if m.delivered_at.is_some() {
            routing.messages_delivered += 1;
            if let (Some(hops), Some(shortest)) = (m.hops, m.shortest_hops)
                && shortest > 0
            {
                stretch_sum += f64::from(hops) / f64::from(shortest);
                stretch_count += 1;
            }
        }
    }
    routing.delivery_ratio = (routing.messages_between_connected > 0)
        .then(|| routing.messages_delivered as f64 / routing.messages_between_connected as f64);
    routing.mean_path_stretch = (stretch_count > 0).then(|| stretch_sum / stretch_count as f64);
    // Repairs whose window has not closed by the end are left out unless repaired.
    let closed: Vec<_> = obs
        .repairs
        .iter()
        .filter(|r| r.repaired_at.is_some() || end.duration_since(r.fault_at) >= REPAIR_WINDOW)
        .cloned()
        .collect();
    let (times, unrepaired) = measure::repair_times(&closed);
    routing.mttr_ms_p50 = measure::quantile(&times, 0.5);
    routing.mttr_ms_p99 = measure::quantile(&times, 0.99);
    routing.repairs_measured = times.len();
    routing.unrepaired = unrepaired;
    routing.repaired_before_declared = measure::repaired_before_declared(&closed);
}

/// Compares every node's neighbor table with the true topology.
async fn measure_discovery(
    mesh: &Mesh,
    topology: &Topology,
    ids: &[NodeId],
) -> Result<DiscoveryReport, SimError> {
    let live = mesh.network.live_adjacency();
    let up = mesh.up_nodes();
    let mut exact = 0;
    let mut entries = 0usize;
    let mut phantom = 0usize;
    let mut rtt_sum = 0.0;
    let mut rtt_count = 0usize;
    let mut loss_sum = 0.0;
    for &index in &up {
        let index = index as usize;
        let Some(node) = &mesh.nodes[index] else {
            continue;
        };
        let table = node.neighbors().await.map_err(|e| SimError::NodeQuery {
            index,
            message: e.to_string(),
        })?;
        let mut seen: Vec<NodeId> = table.iter().map(|n| n.id).collect();
        seen.sort();
        // The truth is the links that work at the end (all of them, without faults).
        let mut truth: Vec<NodeId> = live[index].iter().map(|&j| ids[j as usize]).collect();
        truth.sort();
        if seen == truth {
            exact += 1;
        }
        phantom += seen
            .iter()
            .filter(|id| truth.binary_search(id).is_err())
            .count();
        entries += table.len();
        for n in &table {
            loss_sum += n.loss;
            if let Some(rtt) = n.rtt_ms {
                rtt_sum += rtt;
                rtt_count += 1;
            }
        }
    }
    Ok(DiscoveryReport {
        nodes_with_all_neighbors: exact,
        mean_neighbors: entries as f64 / up.len().max(1) as f64,
        true_mean_degree: topology.mean_degree(),
        phantom_neighbors: phantom,
        mean_rtt_ms: (rtt_count > 0).then(|| rtt_sum / rtt_count as f64),
        mean_loss: if entries > 0 {
            loss_sum / entries as f64
        } else {
            0.0
        },
    })
}

/// Walks every node's next-hop chain toward every destination.
async fn measure_routing(
    nodes: &[Arc<NodeHandle>],
    ids: &[NodeId],
) -> Result<RoutingReport, SimError> {
    let n = nodes.len();
    let index: std::collections::HashMap<NodeId, u32> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i as u32))
        .collect();
    // next[a] holds (destination, next hop) sorted by destination.
    let mut next: Vec<Vec<(u32, u32)>> = Vec::with_capacity(n);
    let mut total_routes = 0usize;
    for (i, node) in nodes.iter().enumerate() {
        let routes = node.routes().await.map_err(|e| SimError::NodeQuery {
            index: i,
            message: e.to_string(),
        })?;
        // Routes to nodes that are down at the end (churn) are not counted: they are
        // stale entries waiting to expire, not reachability.
        let mut table: Vec<(u32, u32)> = routes
            .iter()
            .filter_map(|r| Some((*index.get(&r.destination)?, *index.get(&r.next_hop)?)))
            .collect();
        total_routes += table.len();
        table.sort_unstable();
        next.push(table);
    }
    let hop = |from: usize, to: u32| -> Option<u32> {
        next[from]
            .binary_search_by_key(&to, |(d, _)| *d)
            .ok()
            .map(|k| next[from][k].1)
    };
    let mut loops = 0;
    let mut broken = 0;
    // Per destination, mark each node once: 0 unvisited, 1 on the current walk, 2 settled.
    let mut mark = vec![0u8; n];
    for d in 0..n as u32 {
        mark.iter_mut().for_each(|m| *m = 0);
        mark[d as usize] = 2;
        for start in 0..n {
            if mark[start] != 0 || hop(start, d).is_none() {
                continue;
            }
            let mut path = vec![start];
            mark[start] = 1;
            let mut at = start;
            loop {
                match hop(at, d) {
                    None => {
                        broken += 1;
                        break;
                    }
                    Some(h) => {
                        let h = h as usize;
                        match mark[h] {
                            1 => {
                                loops += 1;
                                break;
                            }
                            2 => break,
                            _ => {
                                mark[h] = 1;
                                path.push(h);
                                at = h;
                            }
                        }
                    }
                }
            }
            for p in path {
                mark[p] = 2;
            }
        }
    }
    let pairs = (n * n.saturating_sub(1)).max(1) as f64;
    Ok(RoutingReport {
        pairs_with_route: total_routes as f64 / pairs,
        loops_detected: loops,
        broken_chains: broken,
        mean_routes: total_routes as f64 / n.max(1) as f64,
        ..RoutingReport::default()
    })
}

/// Control bytes (everything but relayed data), and bytes and messages by envelope
/// kind, per node and virtual second.
fn overhead_rates(traffic: &TrafficStats, nodes: f64, seconds: f64) -> Rates {
    let per_node_s = |count: u64| count as f64 / nodes / seconds.max(1e-9);
    let by_kind = |counts: &[u64]| -> BTreeMap<String, f64> {
        counts
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(code, count)| {
                let kind = x0_protocols::Kind::from_code(code as u16)
                    .map_or("other", |k| k.name())
                    .to_string();
                (kind, per_node_s(*count))
            })
            .collect()
    };
    Rates {
        control_bytes: per_node_s(traffic.bytes_sent - traffic.data_bytes_sent),
        bytes_by_kind: by_kind(&traffic.bytes_by_kind),
        messages_by_kind: by_kind(&traffic.messages_by_kind),
    }
}

/// What [`overhead_rates`] finds.
struct Rates {
    control_bytes: f64,
    bytes_by_kind: BTreeMap<String, f64>,
    messages_by_kind: BTreeMap<String, f64>,
}
