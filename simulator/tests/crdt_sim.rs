//! CRDT sync in the simulator: the registry reaches every node, updates reach every up
//! node through loss and churn, the state is the same everywhere again after a
//! partition heals, and a run replays exactly from its seed.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

use x0_simulator::{Scenario, run};

/// 150 nodes; a third cut off from 10 s to 20 s; crashes with restarts; application
/// writes from 5 s to the end.
const SCENARIO: &str = r#"
nodes = 150
duration = "35s"
seed = 3
topology = "random-geometric"
mean_degree = 8

[link]
latency_ms = 10
jitter_ms = 5
loss = 0.01

[crdt]
writes_per_s = 5
start = "5s"

[[faults]]
kind = "partition"
at = "10s"
fraction = 0.3
heal_after = "10s"

[[faults]]
kind = "crash"
at = "12s"
nodes = 3
restart_after = "8s"
"#;

#[test]
fn updates_and_registry_converge_through_loss_crashes_and_a_partition() {
    let scenario = Scenario::from_toml_str(SCENARIO, "crdt test").unwrap();
    let report = run(&scenario, |_| {}).expect("simulation runs");
    let crdt = report.crdt.as_ref().expect("the run has CRDT sync");
    println!("{report}");
    assert!(crdt.bootstrap_ms.is_some(), "the registry never converged");
    // Every node holds every node's record, plus the workload's keys.
    assert!(crdt.entries_per_node >= 150.0, "{}", crdt.entries_per_node);
    assert_eq!(crdt.rejected, 0);
    assert_eq!(crdt.heal_convergence_ms.len(), 1);
    assert!(
        crdt.heal_convergence_ms[0].is_some(),
        "what was written apart never reached both sides after the heal"
    );
    // 150 writes over 30 s: all but the last moment's reach every up node (or are
    // overwritten first), those written during the partition too once it heals.
    assert!(crdt.updates >= 100, "{} updates", crdt.updates);
    assert!(
        crdt.unconverged <= 5,
        "{} of {} updates never reached every up node",
        crdt.unconverged,
        crdt.updates
    );
    assert!(crdt.converged + crdt.unconverged + crdt.superseded >= crdt.updates);
}

#[test]
fn a_crdt_run_replays_exactly_from_its_seed() {
    let mut scenario = Scenario::from_toml_str(SCENARIO, "crdt test").unwrap();
    scenario.nodes = 60;
    scenario.duration = std::time::Duration::from_secs(15);
    scenario.faults.clear();
    let a = run(&scenario, |_| {}).expect("first run");
    let b = run(&scenario, |_| {}).expect("second run");
    assert_eq!(a.crdt, b.crdt);
    assert_eq!(a.bytes_sent, b.bytes_sent);
}
