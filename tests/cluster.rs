//! A loopback cluster of real `x0tta6bl4 node` processes, exercised over the HTTP API.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

mod common;

use std::time::Duration;

use common::{NodeProcess, wait_for};

const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn three_processes_discover_each_other_and_expire_a_killed_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = NodeProcess::start(dir.path(), "a", None);
    let b = NodeProcess::start(dir.path(), "b", Some(a.p2p_port));
    let mut c = NodeProcess::start(dir.path(), "c", Some(a.p2p_port));
    let ids = [a.id(), b.id(), c.id()];

    for (i, node) in [&a, &b, &c].into_iter().enumerate() {
        let others: Vec<&String> = ids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, id)| id)
            .collect();
        wait_for(
            &format!("{} to list both other nodes", node.name),
            PATIENCE,
            || {
                let peers = node.peer_ids();
                others.iter().all(|id| peers.contains(id)).then_some(())
            },
        );
    }
    // b and c only know a at start: each found the other through Kademlia.

    let (status, metrics) = common::http_get(a.api_port, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("x0_discovery_beacons_sent_total"),
        "{metrics}"
    );
    assert!(metrics.contains("x0_discovery_beacons_received_total"));

    // With everyone a neighbor, every route is the direct link.
    for (i, node) in [&a, &b, &c].into_iter().enumerate() {
        wait_for(
            &format!("{} to route to both others", node.name),
            PATIENCE,
            || {
                let routes = node.get("/api/v1/routes")?;
                let direct = routes
                    .as_array()?
                    .iter()
                    .filter(|r| r["destination"] == r["next_hop"])
                    .count();
                (direct == 2).then_some(())
            },
        );
        let api = format!("http://127.0.0.1:{}", node.api_port);
        let out = common::run(&["routes", "--api", &api]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let table = String::from_utf8_lossy(&out.stdout);
        for (j, id) in ids.iter().enumerate() {
            if i != j {
                assert!(table.contains(id.as_str()), "{table}");
            }
        }
    }

    c.kill();
    for node in [&a, &b] {
        wait_for(
            &format!("{} to expire the killed node", node.name),
            PATIENCE,
            || (!node.peer_ids().contains(&ids[2])).then_some(()),
        );
        assert!(
            node.peer_ids().len() == 1,
            "{} still knows the live node",
            node.name
        );
    }
}

#[test]
fn a_node_keeps_its_identity_across_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut a = NodeProcess::start(dir.path(), "a", None);
    let first = a.id();
    a.kill();
    a.restart();
    assert_eq!(a.id(), first);
    assert!(first.starts_with("12D3KooW"), "{first}");
}

#[test]
fn the_peers_command_prints_a_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = NodeProcess::start(dir.path(), "a", None);
    let b = NodeProcess::start(dir.path(), "b", Some(a.p2p_port));
    let b_id = b.id();
    wait_for("a to see b", PATIENCE, || {
        a.peer_ids().contains(&b_id).then_some(())
    });
    let api = format!("http://127.0.0.1:{}", a.api_port);
    let out = common::run(&["peers", "--api", &api]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("PEER ID"), "{text}");
    assert!(lines.iter().any(|l| l.starts_with(&b_id)), "{text}");
}

#[test]
fn peers_against_a_dead_api_says_what_is_wrong() {
    let port = common::free_port();
    let out = common::run(&["peers", "--api", &format!("http://127.0.0.1:{port}")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach"), "{err}");
}
