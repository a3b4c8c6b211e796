//! CRDT sync on a loopback cluster of real node processes: the registry fills within
//! seconds, application keys replicate, a node that leaves for good expires
//! everywhere, and the state survives a restart from the data directory.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

mod common;

use std::time::Duration;

use common::{NodeProcess, free_port, http_request, wait_for};

const PATIENCE: Duration = Duration::from_secs(30);
/// Short expiry and refresh, so that a departed node is gone within the test.
const CRDT: &str = "\n[crdt]\nrecord_expiry_ms = 4000\nrefresh_ms = 1000\n";

fn registry_ids(node: &NodeProcess) -> Option<Vec<String>> {
    let registry = node.get("/api/v1/registry")?;
    Some(
        registry["records"]
            .as_array()?
            .iter()
            .filter_map(|r| r["id"].as_str().map(String::from))
            .collect(),
    )
}

fn value_at(node: &NodeProcess, path: &str) -> Option<serde_json::Value> {
    node.get(path)
}

#[test]
fn the_registry_fills_keys_replicate_departed_nodes_expire_and_state_survives_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<NodeProcess> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let bootstrap: Vec<u16> = if i == 0 { vec![] } else { vec![ports[0]] };
            NodeProcess::start_with(dir.path(), name, ports[i], &bootstrap, CRDT)
        })
        .collect();
    let mut ids: Vec<String> = nodes.iter().map(NodeProcess::id).collect();
    ids.sort();

    // Every node's signed record, with its ML-KEM key, reaches every node.
    for node in &nodes {
        wait_for("every record everywhere", PATIENCE, || {
            let mut seen = registry_ids(node)?;
            seen.sort();
            (seen == ids).then_some(())
        });
    }
    let registry = nodes[2].get("/api/v1/registry").unwrap();
    for record in registry["records"].as_array().unwrap() {
        // 1,184 bytes of ML-KEM-768 encapsulation key, in hex.
        assert_eq!(record["mlkem_public_key"].as_str().unwrap().len(), 2 * 1184);
        assert!(
            record["addresses"][0]
                .as_str()
                .unwrap()
                .starts_with("/ip4/127.0.0.1/tcp/"),
            "{record}"
        );
        assert!(record["expires_ms"].as_u64() > record["updated_ms"].as_u64());
    }

    // Prometheus sees the replica.
    let (_, metrics) = common::http_get(nodes[0].api_port, "/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("x0_crdt_entries ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // The CLI prints the same registry as a table.
    let api = format!("http://127.0.0.1:{}", nodes[1].api_port);
    let out = common::run(&["registry", "--api", &api]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(table.contains("3 nodes"), "{table}");
    assert!(ids.iter().all(|id| table.contains(id.as_str())), "{table}");

    // An application key written at one node is read at every other, and so is its
    // deletion.
    let (code, body) = http_request(
        nodes[0].api_port,
        "PUT",
        "/api/v1/crdt/app/color",
        Some(r#"{"value":"blue"}"#),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    wait_for("the write to reach c", PATIENCE, || {
        let entry = value_at(&nodes[2], "/api/v1/crdt/app/color")?;
        (entry["value"] == "blue").then_some(())
    });
    let (code, _) =
        http_request(nodes[1].api_port, "DELETE", "/api/v1/crdt/app/color", None).unwrap();
    assert_eq!(code, 200);
    wait_for("the deletion to reach a", PATIENCE, || {
        let entry = value_at(&nodes[0], "/api/v1/crdt/app/color")?;
        (entry["deleted"] == true).then_some(())
    });
    // Reserved key spaces are refused.
    let (code, _) = http_request(
        nodes[0].api_port,
        "PUT",
        "/api/v1/crdt/x0%2Fregistry/forged",
        Some(r#"{"value":"x"}"#),
    )
    .unwrap();
    assert_eq!(code, 400);

    // c leaves for good: its record expires everywhere after record_expiry_ms.
    let c_id = nodes[2].id();
    nodes[2].kill();
    for node in &nodes[..2] {
        wait_for("c's record to expire", PATIENCE, || {
            let seen = registry_ids(node)?;
            (seen.len() == 2 && !seen.contains(&c_id)).then_some(())
        });
    }

    // Everyone stops; a alone comes back and still holds what it saved (state is
    // written at most every 2 s, so give the last change time to land).
    std::thread::sleep(Duration::from_millis(2500));
    for node in &mut nodes {
        node.kill();
    }
    nodes[0].restart();
    let entry = value_at(&nodes[0], "/api/v1/crdt/app/color").expect("restored from disk");
    assert_eq!(entry["deleted"], true);
    let status = nodes[0].get("/api/v1/crdt").unwrap();
    assert!(status["records"].as_u64().unwrap() >= 1, "{status}");
}
