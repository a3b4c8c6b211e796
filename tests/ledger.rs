//! The Raft ledger on real node processes over loopback: three validators and a plain
//! member. Writes made anywhere are committed and readable everywhere; a SIGKILLed leader
//! is replaced and, restarted from its data directory, still has every entry it had
//! committed; the voter set changes at run time; a damaged store is refused at start.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

mod common;

use std::time::Duration;

use common::{NodeProcess, free_port, http_post, keygen, run, wait_for};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);

fn ledger_section(validators: &[String]) -> String {
    let list = validators
        .iter()
        .map(|v| format!("\"{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "\n[ledger]\nvalidators = [{list}]\nheartbeat_ms = 100\nelection_timeout_min_ms = 400\n\
         election_timeout_max_ms = 800\nsnapshot_every = 20\nclient_timeout_ms = 4000\n"
    )
}

fn status(node: &NodeProcess) -> Option<Value> {
    node.get("/api/v1/ledger/status")
}

/// Appends a text entry through `node`; `None` while the ledger cannot commit it.
fn append(node: &NodeProcess, text: &str, request_id: &str) -> Option<Value> {
    append_at(node.api_port, text, request_id)
}

fn append_at(api_port: u16, text: &str, request_id: &str) -> Option<Value> {
    let body = serde_json::json!({ "text": text, "request_id": request_id }).to_string();
    let (code, answer) = http_post(api_port, "/api/v1/ledger/entries", &body).ok()?;
    (code == 201).then(|| serde_json::from_str(&answer).expect("JSON answer"))
}

fn append_eventually(node: &NodeProcess, text: &str) -> u64 {
    wait_for(&format!("{} to commit {text}", node.name), PATIENCE, || {
        append(node, text, &format!("req-{text}"))
    })["position"]
        .as_u64()
        .expect("a position")
}

/// Texts of the entries `node` holds, from position 1, as it reads them locally.
fn texts(node: &NodeProcess) -> Vec<String> {
    node.get("/api/v1/ledger/entries?from=1&limit=1000")
        .and_then(|v| v["entries"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn writes_anywhere_commit_everywhere_and_survive_a_killed_leader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let names = ["v1", "v2", "v3", "m4"];
    let ids: Vec<String> = names.iter().map(|n| keygen(dir.path(), n)).collect();
    let ledger = ledger_section(&ids[..3]);
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let mut nodes: Vec<NodeProcess> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let bootstrap: Vec<u16> = if i == 0 { vec![] } else { vec![ports[0]] };
            NodeProcess::start_with(dir.path(), name, ports[i], &bootstrap, &ledger)
        })
        .collect();

    // Every node, the plain member included, sees the same leader among the validators.
    let leader = wait_for("every node to agree on a leader", PATIENCE, || {
        let leaders: Vec<String> = nodes
            .iter()
            .filter_map(|n| status(n)?["leader"].as_str().map(String::from))
            .collect();
        (leaders.len() == nodes.len() && leaders.iter().all(|l| *l == leaders[0]))
            .then(|| leaders[0].clone())
    });
    assert!(ids[..3].contains(&leader), "the leader is a validator");
    let member_status = status(&nodes[3]).expect("member status");
    assert_eq!(member_status["role"], "member");
    assert_eq!(member_status["voters"].as_array().unwrap().len(), 3);
    let leader_index = ids.iter().position(|id| *id == leader).unwrap();

    // Writes through the plain member and through a follower are forwarded and committed.
    let follower = (0..3).find(|&i| i != leader_index).unwrap();
    for i in 0..5 {
        let via = if i % 2 == 0 { 3 } else { follower };
        assert_eq!(append_eventually(&nodes[via], &format!("e{i}")), i + 1);
    }
    // A retry with the same request id is applied once and answers the first position.
    let retry = append(&nodes[3], "e0", "req-e0").expect("retry answered");
    assert_eq!(retry["position"], 1);
    assert_eq!(retry["duplicate"], true);

    let expected: Vec<String> = (0..5).map(|i| format!("e{i}")).collect();
    for node in &nodes {
        wait_for(&format!("{} to hold e0..e4", node.name), PATIENCE, || {
            (texts(node) == expected).then_some(())
        });
    }
    let linearizable = nodes[3]
        .get("/api/v1/ledger/entries?from=4&consistency=linearizable")
        .expect("linearizable read through the leader");
    assert_eq!(linearizable["total"], 5);
    assert_eq!(linearizable["entries"][0]["text"], "e3");

    // A client streams writes through the member; SIGKILL the leader in the middle of
    // the stream. The client retries each write under its request id until it is
    // acknowledged, so every one lands exactly once, in order.
    let member_port = nodes[3].api_port;
    let writer = std::thread::spawn(move || {
        for i in 0..30 {
            let text = format!("w{i}");
            wait_for(&format!("{text} to commit"), PATIENCE, || {
                append_at(member_port, &text, &format!("req-{text}"))
            });
        }
    });
    let survivor = (0..3).find(|&i| i != leader_index).unwrap();
    wait_for("the stream to be under way", PATIENCE, || {
        (texts(&nodes[survivor]).len() >= 10).then_some(())
    });
    nodes[leader_index].kill();
    let new_leader = wait_for("a new leader", PATIENCE, || {
        let l = status(&nodes[survivor])?["leader"].as_str()?.to_string();
        (l != leader).then_some(l)
    });
    assert!(ids[..3].contains(&new_leader));
    writer.join().expect("every write of the stream committed");
    let mut all = expected.clone();
    all.extend((0..30).map(|i| format!("w{i}")));
    // Acknowledged means committed by a majority; a follower may apply the last write
    // a moment later.
    let held = wait_for("the survivor to apply the whole stream", PATIENCE, || {
        let held = texts(&nodes[survivor]);
        (held.len() >= all.len()).then_some(held)
    });
    assert_eq!(held, all, "each write exactly once, in order");

    // The old leader restarts from its data directory with everything it had committed,
    // and catches up on what it missed: the same history as everyone else.
    nodes[leader_index].restart();
    let restarted = &nodes[leader_index];
    wait_for("the restarted leader to catch up", PATIENCE, || {
        (texts(restarted) == all).then_some(())
    });

    // The voter set changes at run time: the member becomes a voter (joint consensus),
    // then a validator is removed.
    let body = serde_json::json!({ "action": "add_voter", "node": ids[3] }).to_string();
    wait_for("the member to become a voter", PATIENCE, || {
        let (code, _) =
            http_post(nodes[follower].api_port, "/api/v1/ledger/membership", &body).ok()?;
        (code == 200).then_some(())
    });
    wait_for("four voters everywhere", PATIENCE, || {
        nodes
            .iter()
            .all(|n| {
                status(n).is_some_and(|s| s["voters"].as_array().is_some_and(|v| v.len() == 4))
            })
            .then_some(())
    });
    // A node answers for itself once its own replica has the new membership (until
    // then it relays the leader's status, as a member).
    wait_for("the new voter to know it is one", PATIENCE, || {
        (status(&nodes[3])?["role"] == "validator").then_some(())
    });
    let removed = ids[follower].clone();
    let body = serde_json::json!({ "action": "remove_voter", "node": removed }).to_string();
    wait_for("a validator to be removed", PATIENCE, || {
        let (code, _) = http_post(nodes[3].api_port, "/api/v1/ledger/membership", &body).ok()?;
        (code == 200).then_some(())
    });
    let after = status(&nodes[3]).unwrap();
    let voters: Vec<&str> = after["voters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(voters.len(), 3);
    assert!(!voters.contains(&removed.as_str()));
    assert!(
        after["learners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| *l == removed.as_str())
    );
    assert_eq!(append_eventually(&nodes[follower], "after-change"), 36);
}

#[test]
fn a_damaged_ledger_store_is_refused_at_start_and_never_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let id = keygen(dir.path(), "solo");
    let mut node =
        NodeProcess::start_with(dir.path(), "solo", free_port(), &[], &ledger_section(&[id]));
    assert_eq!(append_eventually(&node, "kept"), 1);
    // A batch is proposed together and answered in order; retried, it is applied once.
    let batch = serde_json::json!({ "entries": [
        { "text": "b1", "request_id": "batch-1" },
        { "type": "config", "key": "k", "value": "v", "request_id": "batch-2" },
        { "text": "b3", "request_id": "batch-3" },
    ]})
    .to_string();
    for duplicate in [false, true] {
        let (code, answer) =
            http_post(node.api_port, "/api/v1/ledger/entries/batch", &batch).expect("batch");
        assert_eq!(code, 201, "{answer}");
        let applied: Value = serde_json::from_str(&answer).unwrap();
        let positions: Vec<u64> = applied
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["position"].as_u64().unwrap())
            .collect();
        assert_eq!(positions, vec![2, 3, 4]);
        assert!(
            applied
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["duplicate"] == duplicate)
        );
    }
    node.kill();

    let store = dir.path().join("solo-data").join("ledger.redb");
    let mut bytes = std::fs::read(&store).expect("store exists");
    let len = bytes.len();
    // One flipped byte in every page: whatever pages hold the committed trees, some are
    // hit.
    for page in (0..len).step_by(4096) {
        bytes[(page + 1000).min(len - 1)] ^= 0xA5;
    }
    std::fs::write(&store, &bytes).expect("store damaged");

    let out = run(&["node", "--config", node.config.to_str().unwrap()]);
    assert!(!out.status.success(), "a damaged store must stop the node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ledger.redb"),
        "the error names the file: {stderr}"
    );
    assert_eq!(
        std::fs::read(&store).expect("still there"),
        bytes,
        "the file is left as it was"
    );

    // Truncated: refused too.
    std::fs::write(&store, &bytes[..len / 3]).expect("store truncated");
    let out = run(&["node", "--config", node.config.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "a truncated store must stop the node"
    );
}

#[test]
fn a_mesh_closed_by_the_ledger_admits_a_node_once_an_entry_admits_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let names = ["v1", "v2", "v3", "newcomer"];
    let ids: Vec<String> = names.iter().map(|n| keygen(dir.path(), n)).collect();
    let closed = format!(
        "{}\n[security]\nadmission = \"ledger\"\n",
        ledger_section(&ids[..3])
    );
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let nodes: Vec<NodeProcess> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let bootstrap: Vec<u16> = if i == 0 { vec![] } else { vec![ports[0]] };
            NodeProcess::start_with(dir.path(), name, ports[i], &bootstrap, &closed)
        })
        .collect();
    let newcomer = &ids[3];
    let has_session_with = |node: &NodeProcess, peer: &str| {
        node.get("/api/v1/peers")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|p| p["id"] == peer && !p["session"].is_null())
    };
    // The validators find each other; the newcomer is refused.
    wait_for("the validators to elect a leader", PATIENCE, || {
        status(&nodes[0])?["leader"].as_str().map(|_| ())
    });
    wait_for("v1 to refuse the newcomer", PATIENCE, || {
        let (_, metrics) = common::http_get(nodes[0].api_port, "/metrics").ok()?;
        metrics
            .lines()
            .any(|l| l.starts_with("x0_admission_refused_total") && !l.ends_with(" 0"))
            .then_some(())
    });
    assert!(!has_session_with(&nodes[0], newcomer));

    // A membership entry admits it; every validator follows the ledger.
    let body = serde_json::json!({ "type": "membership", "node": newcomer, "change": "admit" })
        .to_string();
    wait_for("the admission to commit", PATIENCE, || {
        let (code, _) = http_post(nodes[1].api_port, "/api/v1/ledger/entries", &body).ok()?;
        (code == 201).then_some(())
    });
    wait_for("v1 to hold a session with the newcomer", PATIENCE, || {
        has_session_with(&nodes[0], newcomer).then_some(())
    });
    // Its first ledger query may still be on its way to the leader when the session
    // comes up, so the newcomer is given time to hear back.
    wait_for("the newcomer to read itself admitted", PATIENCE, || {
        let members = status(&nodes[3])?["members"].clone();
        members
            .as_array()?
            .iter()
            .any(|m| m == newcomer.as_str())
            .then_some(())
    });
}
