//! Multi-hop delivery and self-healing on real node processes: five nodes on loopback in
//! a line 1-2-3-4-5 plus a shortcut 5-1, with Kademlia off so that these are the only
//! links. A message from 1 to 4 goes 1-5-4; SIGKILL node 5 and the next ones go 1-2-3-4.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

mod common;

use std::time::Duration;

use common::{NodeProcess, free_port, http_post, wait_for};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);

/// Sends `text` from `from` to `to`; `None` while there is no route yet.
fn send(from: &NodeProcess, to: &str, text: &str) -> Option<Value> {
    let body = serde_json::json!({ "to": to, "text": text }).to_string();
    let (status, answer) = http_post(from.api_port, "/api/v1/messages", &body).ok()?;
    (status == 202).then(|| serde_json::from_str(&answer).expect("JSON answer"))
}

/// The inbox entry with this text, if it arrived.
fn received(node: &NodeProcess, text: &str) -> Option<Value> {
    node.get("/api/v1/messages")?
        .as_array()?
        .iter()
        .find(|m| m["text"] == text)
        .cloned()
}

#[test]
fn messages_cross_several_hops_and_route_around_a_killed_relay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let fixed = "discover = false\n\n[failure_detection]\nsilence_ms = 500";
    let n1 = NodeProcess::start_with(dir.path(), "n1", ports[0], &[], fixed);
    let n2 = NodeProcess::start_with(dir.path(), "n2", ports[1], &[ports[0]], fixed);
    let n3 = NodeProcess::start_with(dir.path(), "n3", ports[2], &[ports[1]], fixed);
    let n4 = NodeProcess::start_with(dir.path(), "n4", ports[3], &[ports[2]], fixed);
    let mut n5 = NodeProcess::start_with(dir.path(), "n5", ports[4], &[ports[3], ports[0]], fixed);
    let id4 = n4.id();
    let id5 = n5.id();

    // The topology holds: 1 has exactly 2 and 5 as neighbors, not 3 or 4.
    let id2 = n2.id();
    wait_for("node 1 to see nodes 2 and 5", PATIENCE, || {
        let peers = n1.peer_ids();
        (peers.contains(&id2) && peers.contains(&id5)).then_some(())
    });
    assert!(!n1.peer_ids().contains(&id4), "1 and 4 must not be linked");

    // 1 -> 4 goes over the shortcut: 1-5-4, two hops, 5 relaying. (Until routing has
    // converged a message may take the long way; those are sent under other texts.)
    let mut attempt = 0;
    let before = wait_for("a route from 1 to 4 through 5", PATIENCE, || {
        attempt += 1;
        let text = format!("before-{attempt}");
        let sent = send(&n1, &id4, &text)?;
        (sent["next_hop"] == id5.as_str()).then_some(text)
    });
    let first = wait_for("the first message at node 4", PATIENCE, || {
        received(&n4, &before)
    });
    assert_eq!(first["hops"], 2, "{first}");
    assert_eq!(first["from"], n1.id().as_str());

    // Node 5 dies without a word; 1 must notice and reroute over 2 and 3.
    n5.kill();
    let mut attempt = 0;
    let rerouted = wait_for("a message from 1 to 4 over 2 and 3", PATIENCE, || {
        attempt += 1;
        let text = format!("after-{attempt}");
        let sent = send(&n1, &id4, &text)?;
        if sent["next_hop"] != id2.as_str() {
            return None;
        }
        // Give it a moment to cross three hops, then look.
        std::thread::sleep(Duration::from_millis(300));
        received(&n4, &text)
    });
    assert_eq!(rerouted["hops"], 3, "{rerouted}");

    // Every relay accounted for what it did.
    let status = n2.get("/api/v1/status").expect("status");
    assert!(
        status["forwarding"]["relayed"].as_u64().unwrap_or(0) >= 1,
        "{status}"
    );
    let relay = n2.get("/api/v1/relay").expect("relay report");
    assert!(
        relay["relayed_messages"].as_u64().unwrap_or(0) >= 1,
        "{relay}"
    );
    assert!(relay["relayed_bytes"].as_u64().unwrap_or(0) > 0, "{relay}");
    assert!(
        relay["connected_peers"].as_u64().unwrap_or(0) >= 1,
        "{relay}"
    );
    assert_eq!(relay["rate_limited"], 0, "{relay}");
    assert!(
        relay["rate_limit"]["bytes_per_s"].as_u64().unwrap_or(0) > 0,
        "{relay}"
    );

    // Sealed end to end over the same three hops: node 4's inbox shows it as arrived
    // encrypted (tests/e2e_tap in the simulator checks that no relay saw the text).
    let body =
        serde_json::json!({ "to": id4, "text": "sealed hello", "encrypt": true }).to_string();
    let (code, answer) = http_post(n1.api_port, "/api/v1/messages", &body).expect("sealed send");
    assert_eq!(code, 202, "{answer}");
    let sealed = wait_for("the sealed message at node 4", PATIENCE, || {
        received(&n4, "sealed hello")
    });
    assert_eq!(sealed["encrypted"], true, "{sealed}");
    assert_eq!(sealed["from"], n1.id().as_str());

    // The sender follows it: delivered on node 4's signed receipt, read once node 4's
    // application says so.
    let message_id =
        serde_json::from_str::<serde_json::Value>(&answer).unwrap()["message_id"].clone();
    let status_at_1 = || {
        n1.get("/api/v1/outbox")?
            .as_array()?
            .iter()
            .find(|m| m["message_id"] == message_id)
            .map(|m| m["status"].as_str().unwrap_or_default().to_string())
    };
    wait_for("a delivery receipt", PATIENCE, || {
        (status_at_1()? == "delivered").then_some(())
    });
    let seq = sealed["seq"].as_u64().unwrap();
    let (code, _) =
        http_post(n4.api_port, &format!("/api/v1/messages/{seq}/read"), "{}").expect("mark read");
    assert_eq!(code, 200);
    wait_for("a read receipt", PATIENCE, || {
        (status_at_1()? == "read").then_some(())
    });
    drop((n3, n4));
}
