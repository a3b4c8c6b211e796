//! Running a scenario: build the mesh, spawn every node's actor tree, let virtual time pass,
//! then measure.

use std::sync::Arc;
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use x0_actors::{NodeArgs, NodeHandle, NodeSettings};
use x0_protocols::{Identity, NodeId};

use crate::net::SimNetwork;
use crate::report::{DiscoveryReport, Report, RoutingReport, peak_rss_bytes};
use crate::scenario::Scenario;
use crate::topology::Topology;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("could not build the simulation runtime: {0}")]
    Runtime(std::io::Error),
    #[error("node {index} failed to start: {message}")]
    NodeStart { index: usize, message: String },
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
    let settings = NodeSettings {
        discovery: scenario.discovery_config(),
        routing: scenario.routing_config(),
        ..NodeSettings::default()
    };
    let mut node_rng = seeds.stream();
    let mut nodes = Vec::with_capacity(scenario.nodes);
    for (index, identity) in identities.into_iter().enumerate() {
        let handle = NodeHandle::spawn(NodeArgs {
            identity,
            port: network.port(index as u32),
            settings: settings.clone(),
            seed: node_rng.next_u64(),
        })
        .await
        .map_err(|e| SimError::NodeStart {
            index,
            message: e.to_string(),
        })?;
        let handle = Arc::new(handle);
        network.attach(index as u32, Some(handle.clone()));
        nodes.push(handle);
    }
    let pump = tokio::spawn(network.clone().pump());

    let start = tokio::time::Instant::now();
    let total = scenario.duration;
    let mut elapsed = Duration::ZERO;
    while elapsed < total {
        let step = (total - elapsed).min(Duration::from_secs(1));
        tokio::time::sleep_until(start + elapsed + step).await;
        elapsed += step;
        progress(Progress {
            virtual_elapsed: elapsed,
            virtual_total: total,
        });
    }
    let virtual_seconds = start.elapsed().as_secs_f64();

    let discovery = measure_discovery(&nodes, &topology, &ids).await?;
    let routing = match scenario.routing.enabled {
        true => Some(measure_routing(&nodes, &ids).await?),
        false => None,
    };
    let mut actor_restarts = 0;
    let mut decode_errors = 0;
    for (index, node) in nodes.iter().enumerate() {
        let status = node.status().await.map_err(|e| SimError::NodeQuery {
            index,
            message: e.to_string(),
        })?;
        actor_restarts += status.actor_restarts;
        decode_errors += status.envelope_decode_errors;
    }
    let traffic = network.stats();
    pump.abort();
    for (index, node) in nodes.into_iter().enumerate() {
        network.attach(index as u32, None);
        if let Ok(node) = Arc::try_unwrap(node) {
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
        peak_rss_bytes: None,
        peak_rss_bytes_per_node: None,
    })
}

/// Compares every node's neighbor table with the true topology.
async fn measure_discovery(
    nodes: &[Arc<NodeHandle>],
    topology: &Topology,
    ids: &[NodeId],
) -> Result<DiscoveryReport, SimError> {
    let mut exact = 0;
    let mut entries = 0usize;
    let mut phantom = 0usize;
    let mut rtt_sum = 0.0;
    let mut rtt_count = 0usize;
    let mut loss_sum = 0.0;
    for (index, node) in nodes.iter().enumerate() {
        let table = node.neighbors().await.map_err(|e| SimError::NodeQuery {
            index,
            message: e.to_string(),
        })?;
        let mut seen: Vec<NodeId> = table.iter().map(|n| n.id).collect();
        seen.sort();
        let mut truth: Vec<NodeId> = topology.adjacency[index]
            .iter()
            .map(|&j| ids[j as usize])
            .collect();
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
        mean_neighbors: entries as f64 / nodes.len().max(1) as f64,
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
        total_routes += routes.len();
        let mut table: Vec<(u32, u32)> = routes
            .iter()
            .filter_map(|r| Some((*index.get(&r.destination)?, *index.get(&r.next_hop)?)))
            .collect();
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
    })
}
