//! The simulated ledger under crashes (leaders among them), a partition and loss: every
//! seed's recorded history must be linearizable, with nothing acknowledged lost (the
//! closing read of the whole record is part of the history).
//!
//! CI runs a few seeds; the full sweep is
//! `X0_LEDGER_SEEDS=500 cargo test --release -p x0-simulator --test ledger_sim -- --nocapture`.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

use x0_simulator::{Scenario, run};

const SCENARIO: &str = include_str!("../../config/scenarios/ledger-faults.toml");

fn seeds() -> u64 {
    std::env::var("X0_LEDGER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

#[test]
fn histories_stay_linearizable_through_crashes_and_partitions() {
    let mut leader_changes = 0;
    let mut commits = 0;
    for seed in 1..=seeds() {
        let mut scenario = Scenario::from_toml_str(SCENARIO, "ledger-faults.toml").unwrap();
        scenario.seed = seed;
        let report = run(&scenario, |_| {}).expect("simulation runs");
        let ledger = report.ledger.as_ref().expect("the run has a ledger");
        println!(
            "seed {seed}: {} commits, {} unknown, {} reads, {} leader changes, {}",
            ledger.commits,
            ledger.writes_unknown,
            ledger.reads,
            ledger.leader_changes,
            ledger.verdict
        );
        assert!(ledger.linearizable, "seed {seed}: {}", ledger.verdict);
        assert!(
            ledger.commits > 0,
            "seed {seed}: nothing committed\n{report}"
        );
        assert!(
            ledger.final_entries.is_some_and(|n| n >= ledger.commits),
            "seed {seed}: the closing read must see every acknowledged entry\n{report}"
        );
        leader_changes += ledger.leader_changes;
        commits += ledger.commits;
    }
    // The faults did hit leaders: more leader changes than the first elections alone.
    assert!(leader_changes > seeds(), "{leader_changes} leader changes");
    assert!(commits > 0);
}

#[test]
fn a_ledger_run_replays_exactly_from_its_seed() {
    let mut scenario = Scenario::from_toml_str(SCENARIO, "ledger-faults.toml").unwrap();
    scenario.seed = 11;
    scenario.duration = std::time::Duration::from_secs(25);
    scenario.faults.retain(|f| f.at < scenario.duration);
    let a = run(&scenario, |_| {}).expect("first run");
    let b = run(&scenario, |_| {}).expect("second run");
    assert_eq!(a.ledger, b.ledger);
    assert_eq!(a.without_machine_figures(), b.without_machine_figures());
}

#[test]
fn a_replica_down_through_many_snapshots_is_caught_up_by_one() {
    let mut scenario = Scenario::from_toml_str(SCENARIO, "ledger-faults.toml").unwrap();
    scenario.seed = 5;
    scenario.duration = std::time::Duration::from_secs(45);
    // One validator is away from 10 s to 35 s while ~250 entries commit; with a snapshot
    // every 50, the log it would need is purged long before it returns.
    scenario.faults = toml::from_str::<Faults>(
        "[[faults]]\nkind = \"crash\"\nvalidators = true\nat = \"10s\"\nrestart_after = \"25s\"\n",
    )
    .unwrap()
    .faults;
    let report = run(&scenario, |_| {}).expect("simulation runs");
    let ledger = report.ledger.as_ref().expect("the run has a ledger");
    assert!(ledger.linearizable, "{}", ledger.verdict);
    assert!(ledger.snapshots_installed >= 1, "{report}\n{ledger:?}");
    assert_eq!(ledger.validators_in_sync, 5, "{ledger:?}");
}

#[derive(serde::Deserialize)]
struct Faults {
    faults: Vec<x0_simulator::faults::FaultSpec>,
}
