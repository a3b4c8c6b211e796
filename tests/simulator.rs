//! Simulator scenarios run as tests: the report is asserted, never the wall time.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

use std::time::Duration;

use x0_simulator::{Report, Scenario, TopologyKind, run};

/// The default scenario without routing (and so without the ledger): these tests are
/// about discovery and the report; the ones about routing turn it back on.
fn scenario(nodes: usize, seconds: u64, seed: u64, topology: TopologyKind) -> Scenario {
    let mut s = Scenario::default_scenario();
    s.routing.enabled = false;
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
    // Every link carries a hybrid post-quantum session, at both ends.
    assert_eq!(
        report.sessions.established, report.sessions.expected,
        "{report}"
    );
    assert!(report.sessions.expected > 0);
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
fn the_default_scenario_routes_and_keeps_the_ledger() {
    let s = Scenario::default_scenario();
    assert!(s.routing.enabled);
    assert!(s.ledger_enabled());
}

#[test]
fn overhead_under_load_is_counted_from_when_the_load_starts() {
    let mut s = scenario(30, 12, 3, TopologyKind::RandomGeometric);
    s.routing.enabled = true;
    let idle = simulate(&s);
    assert_eq!(idle.overhead.under_load, None, "no load, no window");
    s.traffic = Some(x0_simulator::scenario::TrafficSection {
        rate_per_s: 5.0,
        start: Duration::from_secs(6),
        payload_bytes: 64,
    });
    let loaded = simulate(&s);
    let window = loaded.overhead.under_load.clone().expect("a load window");
    assert_eq!(window.from_s, 6.0);
    // The window leaves out the start, where every routing table is sent whole.
    let routing = |rates: &std::collections::BTreeMap<String, f64>| {
        rates.get("routing").copied().unwrap_or(0.0)
    };
    assert!(
        routing(&window.bytes_per_node_per_s_by_kind)
            < routing(&loaded.overhead.bytes_per_node_per_s_by_kind),
        "{loaded}"
    );
    // Messages are counted with their bytes: a beacon is a sealed frame of tens of bytes
    // (every node sends them, loaded or not).
    let beacons = |rates: &std::collections::BTreeMap<String, f64>| {
        rates.get("beacon").copied().unwrap_or(0.0)
    };
    let messages = beacons(&window.messages_per_node_per_s_by_kind);
    assert!(messages > 0.0, "{loaded}");
    let mean_bytes = beacons(&window.bytes_per_node_per_s_by_kind) / messages;
    assert!(
        (30.0..200.0).contains(&mean_bytes),
        "{mean_bytes} B per beacon"
    );
}

#[test]
fn with_routing_every_pair_gets_a_loop_free_route() {
    // Two full-dump intervals: a triggered update lost to the 1% link loss is repaired
    // by the next periodic dump at the latest.
    let mut s = scenario(80, 40, 5, TopologyKind::RandomGeometric);
    s.routing.enabled = true;
    let report = simulate(&s);
    let routing = report.routing.clone().expect("routing measured");
    assert_eq!(routing.loops_detected, 0);
    assert_eq!(routing.broken_chains, 0);
    assert!((routing.pairs_with_route - 1.0).abs() < 1e-9, "{report}");
}

/// Crashes with restarts, flapping links and traffic throughout: routing must stay
/// loop-free, every path a failure broke must carry a message again, and what is sent
/// between connected pairs must mostly arrive. Correctness only; timings are measured by
/// the benchmarks, not asserted here.
#[test]
fn the_mesh_heals_around_crashes_and_cut_links() {
    let text = r#"
        nodes = 60
        duration = "70s"
        seed = 11
        topology = "random-geometric"
        [routing]
        enabled = true
        [[faults]]
        kind = "crash"
        at = "20s"
        every = "10s"
        until = "40s"
        nodes = 2
        restart_after = "12s"
        [[faults]]
        kind = "link-cut"
        at = "25s"
        every = "10s"
        until = "45s"
        links = 3
        restore_after = "8s"
        [traffic]
        rate_per_s = 20
        start = "15s"
    "#;
    let s = Scenario::from_toml_str(text, "heal test").expect("scenario parses");
    let report = simulate(&s);
    let routing = report.routing.as_ref().expect("routing report");
    assert_eq!(report.faults.crashes, 6, "{report}");
    assert_eq!(report.faults.restarts, 6, "{report}");
    assert!(report.faults.link_cuts > 0, "{report}");
    assert_eq!(routing.loops_detected, 0, "{report}");
    assert_eq!(routing.hop_limit_drops, 0, "{report}");
    assert!(routing.repairs_measured > 0, "{report}");
    assert_eq!(
        routing.unrepaired, 0,
        "every broken path repaired: {report}"
    );
    assert!(report.failure_detection.detections > 0, "{report}");
    // Routing steers around a suspected node: most paths carry messages again before
    // the failure is declared. (Without the steering about half do, through loop-free
    // alternates and around cut links.)
    assert!(
        4 * routing.repaired_before_declared >= 3 * routing.repairs_measured,
        "{report}"
    );
    assert!(routing.messages_between_connected > 0);
    // Messages that reach the hop before a failure wait there for the repair and then
    // go on; those a node held when it crashed are lost. Far most must arrive.
    assert!(
        routing.delivery_ratio.expect("traffic measured") > 0.8,
        "{report}"
    );
    assert!(routing.relays_parked > 0, "{report}");
    assert!(
        (1..=routing.relays_parked).contains(&routing.relays_resumed),
        "parked relays went on after the repair: {report}"
    );
    assert!(routing.mean_path_stretch.expect("deliveries") >= 1.0);
    // After the last restore the mesh is whole again and every live pair has a route.
    assert!(routing.pairs_with_route > 0.99, "{report}");
}

#[test]
fn faulted_runs_replay_exactly() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/scenarios/link-flaps.toml"
    ))
    .expect("scenario file");
    let mut s = Scenario::from_toml_str(&text, "link-flaps").expect("parses");
    s.nodes = 40;
    s.duration = Duration::from_secs(45);
    let a = simulate(&s);
    let b = simulate(&s);
    assert_eq!(a.without_machine_figures(), b.without_machine_figures());
    assert!(a.faults.link_cuts > 0 && a.faults.crashes > 0);
}
