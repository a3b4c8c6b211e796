//! Simulator scenarios run as tests: the report is asserted, never the wall time.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

use std::time::Duration;

use x0_simulator::{Report, Scenario, TopologyKind, run};

fn scenario(nodes: usize, seconds: u64, seed: u64, topology: TopologyKind) -> Scenario {
    let mut s = Scenario::default_scenario();
    s.nodes = nodes;
    s.duration = Duration::from_secs(seconds);
    s.seed = seed;
    s.topology = topology;
    s
}

fn simulate(s: &Scenario) -> Report {
    run(s, |_| {}).expect("simulation runs")
}

#[test]
fn two_hundred_nodes_discover_exactly_their_neighbors() {
    let s = scenario(200, 20, 7, TopologyKind::RandomGeometric);
    let report = simulate(&s);
    assert_eq!(report.nodes, 200);
    assert_eq!(report.discovery.nodes_with_all_neighbors, 200, "{report}");
    assert_eq!(report.discovery.phantom_neighbors, 0);
    assert!((report.discovery.mean_neighbors - report.discovery.true_mean_degree).abs() < 1e-9);
    assert!(report.envelopes_delivered > 0);
    assert!(report.envelopes_sent >= report.envelopes_delivered + report.envelopes_dropped);
    assert_eq!(report.virtual_seconds, 20.0);
}

#[test]
fn every_topology_converges() {
    for topology in TopologyKind::ALL {
        let report = simulate(&scenario(60, 10, 3, topology));
        assert_eq!(
            report.discovery.nodes_with_all_neighbors, 60,
            "{topology}: {report}"
        );
    }
}

#[test]
fn same_seed_same_report_other_seed_other_report() {
    let s = scenario(120, 15, 42, TopologyKind::RandomGeometric);
    let first = simulate(&s).without_machine_figures();
    let second = simulate(&s).without_machine_figures();
    assert_eq!(first, second);
    let other =
        simulate(&scenario(120, 15, 43, TopologyKind::RandomGeometric)).without_machine_figures();
    assert_ne!(first, other);
}

#[test]
fn loss_shows_up_in_the_measurements() {
    let mut s = scenario(50, 30, 9, TopologyKind::Grid);
    s.link.loss = 0.2;
    let report = simulate(&s);
    let measured = report.discovery.mean_loss;
    assert!(
        (0.1..0.3).contains(&measured),
        "20% configured loss measured as {measured}"
    );
    let rtt = report.discovery.mean_rtt_ms.expect("rtt measured");
    // Two one-way trips of 10 ms latency plus 0..5 ms jitter each.
    assert!((20.0..=32.0).contains(&rtt), "rtt {rtt}");
}

#[test]
fn the_report_serializes_with_the_documented_fields() {
    let report = simulate(&scenario(20, 5, 1, TopologyKind::Full));
    let json = serde_json::to_value(&report).expect("serializes");
    for key in [
        "nodes",
        "seed",
        "topology",
        "virtual_seconds",
        "wall_seconds",
        "envelopes_sent",
        "envelopes_delivered",
        "envelopes_dropped",
        "peak_rss_bytes",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert!(json["discovery"]["nodes_with_all_neighbors"].is_u64());
    assert!(json["discovery"]["mean_neighbors"].is_f64());
    assert_eq!(json["topology"], "full");
}

#[test]
fn with_routing_every_pair_gets_a_loop_free_route() {
    let mut s = scenario(80, 20, 5, TopologyKind::RandomGeometric);
    s.routing.enabled = true;
    let report = simulate(&s);
    let routing = report.routing.clone().expect("routing measured");
    assert_eq!(routing.loops_detected, 0);
    assert_eq!(routing.broken_chains, 0);
    assert!((routing.pairs_with_route - 1.0).abs() < 1e-9, "{report}");
}
