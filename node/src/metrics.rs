//! The Prometheus recorder behind `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder on first use and returns its handle.
///
/// `metrics` has one global recorder per process, so a program that embeds two nodes gets
/// one set of series covering both. `None` if another recorder was installed first.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!("x0_discovery_beacons_sent_total", "Beacons this node sent.");
    describe_counter!(
        "x0_discovery_beacons_received_total",
        "Beacons taken from neighbors."
    );
    describe_counter!(
        "x0_discovery_beacons_ignored_total",
        "Beacons not taken, by reason."
    );
    describe_gauge!("x0_discovery_peers", "Neighbors in the discovery table.");
    describe_counter!(
        "x0_node_envelope_decode_errors_total",
        "Inbound envelopes that did not decode, by reason."
    );
    describe_counter!(
        "x0_node_envelope_rejected_total",
        "Inbound envelopes refused after decoding, by kind and reason."
    );
    describe_counter!(
        "x0_node_inbound_dropped_total",
        "Inbound envelopes dropped before an actor, by reason."
    );
    describe_counter!(
        "x0_node_actor_restarts_total",
        "Subsystem actors restarted by the supervisor."
    );
    describe_counter!(
        "x0_routing_messages_sent_total",
        "Routing updates and requests sent."
    );
    describe_counter!(
        "x0_routing_route_changes_total",
        "Changes of a selected route."
    );
    describe_gauge!("x0_routing_routes", "Destinations with a selected route.");
    describe_counter!(
        "x0_ledger_commits_total",
        "Ledger writes this node committed as leader."
    );
    metrics::describe_histogram!(
        "x0_ledger_commit_seconds",
        metrics::Unit::Seconds,
        "Time from a write reaching the leader to its commit."
    );
    describe_counter!(
        "x0_ledger_leader_changes_total",
        "Times this node saw the ledger's leader change."
    );
    describe_gauge!("x0_ledger_term", "Raft term of this node.");
    describe_gauge!(
        "x0_ledger_applied_index",
        "Highest log index applied to this node's ledger."
    );
    describe_counter!(
        "x0_ledger_rpc_sent_total",
        "Ledger RPCs this node sent over the mesh, by RPC."
    );
    describe_counter!(
        "x0_ledger_rpc_rejected_total",
        "Ledger messages refused, by reason."
    );
    describe_gauge!(
        "x0_network_connected_peers",
        "Peers with an open libp2p connection."
    );
    describe_counter!(
        "x0_network_envelopes_sent_total",
        "Envelopes handed to libp2p."
    );
    describe_counter!(
        "x0_network_envelopes_received_total",
        "Envelopes received over libp2p."
    );
    describe_counter!(
        "x0_network_send_failures_total",
        "Envelopes libp2p could not deliver, by reason."
    );
    // Counters that matter most when they are still zero are registered up front, so a
    // scrape shows 0 rather than nothing.
    metrics::counter!("x0_node_actor_restarts_total", "actor" => "discovery").absolute(0);
    metrics::counter!("x0_node_envelope_decode_errors_total", "reason" => "malformed").absolute(0);
    metrics::counter!("x0_discovery_beacons_sent_total").absolute(0);
    metrics::counter!("x0_discovery_beacons_received_total").absolute(0);
}
