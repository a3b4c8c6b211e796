//! Nodes embedded in one program through the library API find each other over loopback.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

use std::time::Duration;

use x0tta6bl4::NodeId;
use x0tta6bl4::node::{Multiaddr, Node};

async fn spawn(dir: &std::path::Path, name: &str, bootstrap: Option<Multiaddr>) -> Node {
    let mut builder = Node::builder()
        .name(name)
        .data_dir(dir.join(name))
        .listen("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
        .api_listen("127.0.0.1:0".parse().expect("socket address"))
        .seed(1);
    if let Some(addr) = bootstrap {
        builder = builder.bootstrap(addr);
    }
    builder.spawn().await.expect("node starts")
}

async fn wait_until_sees(node: &Node, others: &[NodeId]) {
    for _ in 0..300 {
        let ids: Vec<NodeId> = node
            .neighbors()
            .await
            .expect("neighbors")
            .iter()
            .map(|n| n.id)
            .collect();
        if others.iter().all(|o| ids.contains(o)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{:?} never saw all of {others:?}", node.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_embedded_nodes_find_each_other_through_kademlia() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = spawn(dir.path(), "a", None).await;
    let a_addr = a
        .listen_addrs()
        .await
        .into_iter()
        .next()
        .expect("a listens");
    let b = spawn(dir.path(), "b", Some(a_addr.clone())).await;
    let c = spawn(dir.path(), "c", Some(a_addr)).await;
    // c only knows a; it must learn b from a's Kademlia table, and b must learn c.
    wait_until_sees(&a, &[b.id(), c.id()]).await;
    wait_until_sees(&b, &[a.id(), c.id()]).await;
    wait_until_sees(&c, &[a.id(), b.id()]).await;
    assert!(
        a.api_addr().is_some_and(|addr| addr.port() != 0),
        "the real API port is reported"
    );
    let status = a.status().await.expect("status");
    assert_eq!(status.id, a.id());
    assert!(status.envelopes_received > 0);
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_node_without_a_data_dir_is_refused() {
    let err = Node::builder().spawn().await.err().expect("refused");
    assert!(err.to_string().contains("data directory"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_programs_replicated_map_converges_and_can_be_watched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = spawn(dir.path(), "a", None).await;
    let a_addr = a
        .listen_addrs()
        .await
        .into_iter()
        .next()
        .expect("a listens");
    let b = spawn(dir.path(), "b", Some(a_addr)).await;
    wait_until_sees(&b, &[a.id()]).await;

    assert!(
        a.replicated_map("x0/registry").is_err(),
        "reserved spaces are refused"
    );
    let rooms_a = a.replicated_map("chat/rooms").expect("a map");
    let rooms_b = b.replicated_map("chat/rooms").expect("a map");
    let mut watch = rooms_b.watch().await.expect("watch");
    rooms_a
        .insert("lobby", b"open".to_vec())
        .await
        .expect("insert");
    let change = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("the change reaches b")
        .expect("b is running");
    assert_eq!(change.name, b"lobby");
    assert_eq!(change.value.as_deref(), Some(&b"open"[..]));
    assert_eq!(change.writer, Some(a.id()));
    assert_eq!(
        rooms_b.get("lobby").await.expect("get"),
        Some(b"open".to_vec())
    );

    // b overwrites and removes; a converges to the same map.
    rooms_b
        .insert("lobby", b"closed".to_vec())
        .await
        .expect("insert");
    rooms_b
        .insert("garden", b"open".to_vec())
        .await
        .expect("insert");
    rooms_b.remove("garden").await.expect("remove");
    let mut converged = false;
    for _ in 0..200 {
        let entries = rooms_a.entries().await.expect("entries");
        if entries.len() == 1 && entries.get(&b"lobby"[..]) == Some(&b"closed".to_vec()) {
            converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(converged, "{:?}", rooms_a.entries().await);
    // b is in a's registry (its record travels on its own, so it may come later).
    let mut listed = false;
    for _ in 0..200 {
        let registry = a.registry().await.expect("registry");
        if registry.iter().any(|r| r.id == b.id()) {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed, "b never reached a's registry");
    for node in [a, b] {
        node.shutdown().await;
    }
}
