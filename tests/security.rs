//! Hybrid post-quantum sessions and closed admission on real node processes.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

mod common;

use std::time::Duration;

use common::{NodeProcess, free_port, http_get, run, wait_for};

const PATIENCE: Duration = Duration::from_secs(60);

/// `x0tta6bl4 keygen` into `dir`, returning the node id it prints.
fn keygen(dir: &std::path::Path) -> String {
    let out = run(&["keygen", "--out", dir.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.lines()
        .find_map(|l| l.strip_prefix("node id: "))
        .expect("keygen prints the id")
        .trim()
        .to_string()
}

#[test]
fn trusted_nodes_hold_pq_sessions_and_a_stranger_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|name| keygen(&dir.path().join(format!("{name}-data"))))
        .collect();
    let closed = format!(
        "\n[security]\nadmission = \"closed\"\ntrusted = [\"{}\", \"{}\"]",
        ids[0], ids[1]
    );
    let pa = free_port();
    let a = NodeProcess::start_with(dir.path(), "a", pa, &[], &closed);
    let b = NodeProcess::start_with(dir.path(), "b", free_port(), &[pa], &closed);
    // c is not on the list; it runs an open node and knocks on a's door.
    let c = NodeProcess::start_with(dir.path(), "c", free_port(), &[pa], "");
    assert_eq!(a.id(), ids[0]);

    // a and b: neighbors with an established hybrid session on both sides, which their
    // link's traffic travels in.
    for (node, other) in [(&a, &ids[1]), (&b, &ids[0])] {
        let session = wait_for(
            &format!("{} to hold a session", node.name),
            PATIENCE,
            || {
                let peers = node.get("/api/v1/peers")?;
                let peer = peers
                    .as_array()?
                    .iter()
                    .find(|p| p["id"] == other.as_str())?
                    .clone();
                // Up, and carrying the link's traffic both ways.
                let session = &peer["session"];
                (session["frames_sent"].as_u64()? > 0 && session["frames_received"].as_u64()? > 0)
                    .then_some(session.clone())
            },
        );
        assert_eq!(session["suite"], "x25519+mlkem768/chacha20poly1305");
    }

    // c is refused at the handshake: counted, and never a neighbor of a.
    wait_for("a to count a refused handshake", PATIENCE, || {
        let (_, metrics) = http_get(a.api_port, "/metrics").ok()?;
        metrics
            .lines()
            .find(|l| l.starts_with("x0_admission_refused_total"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .filter(|n| *n >= 1.0)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !a.peer_ids().contains(&ids[2]),
        "a must not take c as a neighbor"
    );
    drop(c);
}
