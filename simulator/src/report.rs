//! The simulation report: what a run measured, as JSON and as a short summary.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub nodes: usize,
    pub seed: u64,
    pub topology: String,
    pub links: usize,
    pub virtual_seconds: f64,
    /// Wall-clock time of the run, set-up and tear-down included.
    pub wall_seconds: f64,
    /// `virtual_seconds / wall_seconds`.
    pub speedup: f64,
    pub envelopes_sent: u64,
    pub envelopes_delivered: u64,
    pub envelopes_dropped: u64,
    pub bytes_sent: u64,
    pub actor_restarts: u64,
    pub envelope_decode_errors: u64,
    pub discovery: DiscoveryReport,
    /// Present when the scenario enables routing.
    pub routing: Option<RoutingReport>,
    /// How fast and how accurately nodes noticed failed links and neighbors.
    pub failure_detection: FailureDetectionReport,
    pub faults: FaultCounts,
    pub overhead: OverheadReport,
    pub sessions: SessionsReport,
    /// Present when the run has a ledger.
    pub ledger: Option<crate::ledger_load::LedgerReport>,
    /// Present when the run has CRDT sync.
    pub crdt: Option<crate::crdt_watch::CrdtReport>,
    /// Peak resident memory of the whole process (Linux `VmHWM`); `None` elsewhere.
    pub peak_rss_bytes: Option<u64>,
    pub peak_rss_bytes_per_node: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryReport {
    /// Nodes whose neighbor table at the end equals their true set of links.
    pub nodes_with_all_neighbors: usize,
    /// Mean size of the neighbor tables at the end.
    pub mean_neighbors: f64,
    /// Mean degree of the true topology, to compare against.
    pub true_mean_degree: f64,
    /// Table entries that are not real links (should be zero).
    pub phantom_neighbors: usize,
    /// Mean smoothed RTT over all table entries that have one.
    pub mean_rtt_ms: Option<f64>,
    /// Mean measured loss over all table entries.
    pub mean_loss: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingReport {
    /// Fraction of ordered node pairs (a, b) where a has a route to b at the end.
    pub pairs_with_route: f64,
    /// Next-hop chains at the end that revisit a node (must be zero).
    pub loops_detected: usize,
    /// Next-hop chains at the end that dead-end before their destination.
    pub broken_chains: usize,
    /// Mean number of routes per node.
    pub mean_routes: f64,
    /// Time from a failure to the first message delivered between a pair whose path it
    /// broke (probed every 50 ms), over all such pairs.
    pub mttr_ms_p50: Option<f64>,
    pub mttr_ms_p99: Option<f64>,
    pub repairs_measured: usize,
    /// Broken pairs still without a delivery 30 s after their failure.
    pub unrepaired: usize,
    /// Repaired pairs whose first delivery came before the pair's sender declared the
    /// failed node (or the far end of the cut link) down: routing steered around it
    /// while it was only suspected.
    #[serde(default)]
    pub repaired_before_declared: usize,
    /// Application messages sent by the traffic generator.
    pub messages_sent: u64,
    /// Of those, between pairs connected when sent and still connected 2 s later (and
    /// sent at least 5 s before the end).
    pub messages_between_connected: u64,
    pub messages_delivered: u64,
    /// `messages_delivered / messages_between_connected`.
    pub delivery_ratio: Option<f64>,
    /// Mean of hops taken over hops on the true shortest path, for delivered messages.
    pub mean_path_stretch: Option<f64>,
    /// Messages dropped for running out of hops (what a transient loop would cause).
    pub hop_limit_drops: u64,
    /// Relays (messages and repair probes) that found no route at some hop and waited
    /// there for the repair, and those of them that went on once it came.
    pub relays_parked: u64,
    pub relays_resumed: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FailureDetectionReport {
    /// A node declaring a neighbor down after a real failure (crash, cut, partition).
    pub detections: usize,
    /// Declarations the injected failures called for.
    pub expected_detections: usize,
    /// Time from failure to declaration.
    pub mttd_ms_p50: Option<f64>,
    pub mttd_ms_p99: Option<f64>,
    /// Links declared down that were up (and had been for 5 s).
    pub false_suspicions: u64,
    /// False suspicions per 1000 node-hours of virtual time.
    pub false_suspicion_rate: f64,
    /// Neighbors that fell under suspicion, false or not.
    pub suspicions: u64,
}

/// Hybrid post-quantum sessions with neighbors at the end of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionsReport {
    /// Sessions held, counted at both ends of each link.
    pub established: usize,
    /// Twice the number of working links: what full coverage would be.
    pub expected: usize,
    pub suite: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultCounts {
    pub crashes: u64,
    pub restarts: u64,
    pub link_cuts: u64,
    pub partitions: u64,
    pub loss_bursts: u64,
    pub latency_spikes: u64,
    pub churn_departures: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OverheadReport {
    /// Everything but application data on the wire, per node and virtual second.
    pub control_bytes_per_node_per_s: f64,
    /// The same, by envelope kind (beacon, routing, probe, ...).
    pub bytes_per_node_per_s_by_kind: std::collections::BTreeMap<String, f64>,
    /// Messages sent per node and virtual second, by kind. Each costs its framing and
    /// seal (about 24 bytes) whatever it carries.
    #[serde(default)]
    pub messages_per_node_per_s_by_kind: std::collections::BTreeMap<String, f64>,
    pub data_bytes: u64,
    /// The same rates counted only from when the scenario's load begins (its traffic,
    /// churn or first fault), once the mesh has formed: what the mesh costs to keep
    /// running rather than to start. `None` when the scenario has no load.
    pub under_load: Option<WindowOverhead>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowOverhead {
    /// Virtual seconds into the run at which counting starts.
    pub from_s: f64,
    pub control_bytes_per_node_per_s: f64,
    pub bytes_per_node_per_s_by_kind: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    pub messages_per_node_per_s_by_kind: std::collections::BTreeMap<String, f64>,
}

impl Report {
    /// The report with every field that depends on the machine rather than the seed
    /// zeroed, for comparing two runs.
    pub fn without_machine_figures(&self) -> Report {
        Report {
            wall_seconds: 0.0,
            speedup: 0.0,
            peak_rss_bytes: None,
            peak_rss_bytes_per_node: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.discovery;
        writeln!(
            f,
            "simulated {} nodes ({}, {} links, seed {}) for {:.1} s of virtual time in {:.2} s of wall time ({:.1}x real time)",
            self.nodes,
            self.topology,
            self.links,
            self.seed,
            self.virtual_seconds,
            self.wall_seconds,
            self.speedup
        )?;
        writeln!(
            f,
            "envelopes: {} sent, {} delivered, {} dropped ({:.1} MB on the wire)",
            self.envelopes_sent,
            self.envelopes_delivered,
            self.envelopes_dropped,
            self.bytes_sent as f64 / 1e6
        )?;
        writeln!(
            f,
            "discovery: {}/{} nodes know exactly their neighbors; mean table size {:.2} (true degree {:.2}); {} phantom entries",
            d.nodes_with_all_neighbors,
            self.nodes,
            d.mean_neighbors,
            d.true_mean_degree,
            d.phantom_neighbors
        )?;
        if let Some(r) = &self.routing {
            writeln!(
                f,
                "routing: {:.2}% of node pairs have a route; {} loops, {} broken chains; {:.1} routes per node",
                r.pairs_with_route * 100.0,
                r.loops_detected,
                r.broken_chains,
                r.mean_routes
            )?;
            if r.messages_sent > 0 {
                writeln!(
                    f,
                    "traffic: {} of {} messages between connected pairs delivered ({}); path stretch {}; {} hop-limit drops; {} relays waited for a repair, {} went on",
                    r.messages_delivered,
                    r.messages_between_connected,
                    percent(r.delivery_ratio),
                    r.mean_path_stretch
                        .map_or("-".into(), |s| format!("{s:.2}")),
                    r.hop_limit_drops,
                    r.relays_parked,
                    r.relays_resumed
                )?;
            }
            if r.repairs_measured > 0 || r.unrepaired > 0 {
                writeln!(
                    f,
                    "repair: MTTR p50 {} p99 {} over {} broken paths ({} before the failure was declared); {} not repaired within 30 s",
                    ms(r.mttr_ms_p50),
                    ms(r.mttr_ms_p99),
                    r.repairs_measured,
                    r.repaired_before_declared,
                    r.unrepaired
                )?;
            }
        }
        writeln!(
            f,
            "sessions: {}/{} link ends hold a {} session",
            self.sessions.established, self.sessions.expected, self.sessions.suite
        )?;
        if let Some(l) = &self.ledger {
            writeln!(
                f,
                "ledger: {} validators; {} commits ({} unknown), commit latency p50 {} p99 {}; {} reads; {} leader changes; {}",
                l.validators,
                l.commits,
                l.writes_unknown,
                ms(l.commit_latency_ms_p50),
                ms(l.commit_latency_ms_p99),
                l.reads,
                l.leader_changes,
                l.verdict
            )?;
        }
        if let Some(c) = &self.crdt {
            writeln!(
                f,
                "crdt: registry converged in {} ({:.0} KB/node); {}/{} updates reached every node ({} overwritten first), p50 {} p99 {}; {:.0} B/node/s after; state {:.0} KB/node",
                ms(c.bootstrap_ms.map(|v| v as f64)),
                c.bootstrap_bytes_per_node / 1000.0,
                c.converged,
                c.updates,
                c.superseded,
                ms(c.convergence_ms_p50),
                ms(c.convergence_ms_p99),
                c.bytes_per_node_per_s,
                c.state_bytes_per_node / 1000.0,
            )?;
            if !c.heal_convergence_ms.is_empty() {
                let heals: Vec<String> = c
                    .heal_convergence_ms
                    .iter()
                    .map(|h| ms(h.map(|v| v as f64)))
                    .collect();
                writeln!(
                    f,
                    "crdt: converged after partition heals in {}",
                    heals.join(", ")
                )?;
            }
        }
        let fd = &self.failure_detection;
        if fd.expected_detections > 0 || fd.false_suspicions > 0 || fd.suspicions > 0 {
            writeln!(
                f,
                "failure detection: {}/{} detected, MTTD p50 {} p99 {}; {} suspicions, {} false ({:.2} per 1000 node-hours)",
                fd.detections,
                fd.expected_detections,
                ms(fd.mttd_ms_p50),
                ms(fd.mttd_ms_p99),
                fd.suspicions,
                fd.false_suspicions,
                fd.false_suspicion_rate
            )?;
        }
        let fc = &self.faults;
        if fc != &FaultCounts::default() {
            writeln!(
                f,
                "faults injected: {} crashes ({} churn), {} restarts, {} link cuts, {} partitions, {} loss bursts, {} latency spikes",
                fc.crashes,
                fc.churn_departures,
                fc.restarts,
                fc.link_cuts,
                fc.partitions,
                fc.loss_bursts,
                fc.latency_spikes
            )?;
        }
        writeln!(
            f,
            "overhead: {:.0} control bytes per node per second ({})",
            self.overhead.control_bytes_per_node_per_s,
            by_kind(
                &self.overhead.bytes_per_node_per_s_by_kind,
                &self.overhead.messages_per_node_per_s_by_kind
            )
        )?;
        if let Some(window) = &self.overhead.under_load {
            writeln!(
                f,
                "overhead under load (from {:.0} s): {:.0} control bytes per node per second ({})",
                window.from_s,
                window.control_bytes_per_node_per_s,
                by_kind(
                    &window.bytes_per_node_per_s_by_kind,
                    &window.messages_per_node_per_s_by_kind
                )
            )?;
        }
        if let Some(rtt) = d.mean_rtt_ms {
            writeln!(
                f,
                "links: mean RTT {rtt:.1} ms, mean loss {:.2}%",
                d.mean_loss * 100.0
            )?;
        }
        if self.actor_restarts > 0 || self.envelope_decode_errors > 0 {
            writeln!(
                f,
                "faults: {} actor restarts, {} undecodable envelopes",
                self.actor_restarts, self.envelope_decode_errors
            )?;
        }
        match (self.peak_rss_bytes, self.peak_rss_bytes_per_node) {
            (Some(total), Some(per_node)) => write!(
                f,
                "memory: peak RSS {:.1} MB ({:.1} KB per node)",
                total as f64 / 1e6,
                per_node as f64 / 1e3
            ),
            _ => write!(f, "memory: peak RSS not available on this platform"),
        }
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.0} ms"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
}

/// Peak resident set size of this process, from `/proc/self/status`.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// "beacon 3035 (9.1 msg), crdt 1200 (2.0 msg), …": bytes and, where counted, messages
/// per node and second of the control kinds only (relays are data).
fn by_kind(
    bytes: &std::collections::BTreeMap<String, f64>,
    messages: &std::collections::BTreeMap<String, f64>,
) -> String {
    bytes
        .iter()
        .filter(|(kind, _)| kind.as_str() != "relay")
        .map(|(kind, b)| match messages.get(kind) {
            Some(m) => format!("{kind} {b:.0} ({m:.1} msg)"),
            None => format!("{kind} {b:.0}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
