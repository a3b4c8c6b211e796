//! The supervisor restarts a crashed child, counts it, and keeps routing to the new one.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use x0_actors::{
    Inbound, NetworkPort, NodeArgs, NodeHandle, NodeSettings, PortError, Subsystem, Topic,
};
use x0_protocols::discovery::Beacon;
use x0_protocols::{Envelope, Identity, Kind, NodeId};

/// A port that records what the node broadcasts.
#[derive(Default)]
struct RecordingPort {
    broadcasts: Mutex<Vec<Envelope>>,
}

impl RecordingPort {
    fn beacons_sent(&self) -> usize {
        self.broadcasts.lock().map(|b| b.len()).unwrap_or(0)
    }
}

impl NetworkPort for RecordingPort {
    fn send(&self, _to: NodeId, _envelope: &Envelope) {}

    fn broadcast(&self, _topic: &Topic, envelope: &Envelope) {
        if let Ok(mut b) = self.broadcasts.lock() {
            b.push(envelope.clone());
        }
    }

    fn request(
        &self,
        to: NodeId,
        _: &Envelope,
        _: Duration,
    ) -> BoxFuture<'static, Result<Envelope, PortError>> {
        futures::future::ready(Err(PortError::Unreachable(to))).boxed()
    }
}

async fn spawn_node(port: Arc<RecordingPort>) -> NodeHandle {
    NodeHandle::spawn(NodeArgs {
        identity: Arc::new(Identity::from_seed([1; 32])),
        port,
        settings: NodeSettings::default(),
        seed: 1,
        observer: Arc::new(x0_actors::NoObserver),
        crypto_seed: [7; 32],
        ledger_store: None,
        mesh_epoch_ms: 0,
        crdt_store: None,
        verifier: Arc::new(x0_protocols::crdt::DirectVerifier),
    })
    .await
    .expect("node starts")
}

fn beacon_from(identity: &Identity, seq: u32) -> Inbound {
    let envelope = Envelope::seal_message(
        identity,
        Kind::Beacon,
        &Beacon {
            seq,
            echoes: vec![],
        },
    );
    Inbound {
        link_peer: identity.id(),
        bytes: Bytes::from(envelope.encode()),
        reply: None,
    }
}

#[tokio::test(start_paused = true)]
async fn crashed_discovery_is_restarted_and_counted() {
    let port = Arc::new(RecordingPort::default());
    let node = spawn_node(port.clone()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = port.beacons_sent();
    assert!(
        before >= 4,
        "a node beacons about once a second, sent {before}"
    );
    assert_eq!(node.status().await.expect("status").actor_restarts, 0);

    node.crash(Subsystem::Discovery, "test");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = node.status().await.expect("status after crash");
    assert_eq!(status.actor_restarts, 1);

    // The new child works: it beacons and takes inbound beacons.
    let peer = Identity::from_seed([2; 32]);
    node.deliver(beacon_from(&peer, 0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let neighbors = node.neighbors().await.expect("neighbors");
    assert_eq!(
        neighbors.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![peer.id()]
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        port.beacons_sent() >= before + 4,
        "restarted discovery keeps beaconing"
    );
    assert!(node.is_running());
    node.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_child_that_keeps_crashing_takes_the_node_down() {
    let port = Arc::new(RecordingPort::default());
    let node = spawn_node(port).await;
    for i in 0..=NodeSettings::default().max_restarts {
        node.crash(Subsystem::Discovery, format!("crash {i}"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!node.is_running(), "a restart loop must escalate, not spin");
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_counted_and_never_kills_the_node() {
    let port = Arc::new(RecordingPort::default());
    let node = spawn_node(port).await;
    let peer = Identity::from_seed([3; 32]);
    let liar = Identity::from_seed([4; 32]);
    // Garbage bytes.
    node.deliver(Inbound {
        link_peer: peer.id(),
        bytes: Bytes::from_static(b"\x01\xff\xff\xff garbage"),
        reply: None,
    });
    // A valid beacon relayed by someone else: it would fake an adjacency.
    let mut relayed = beacon_from(&peer, 0);
    relayed.link_peer = liar.id();
    node.deliver(relayed);
    // A beacon whose signature does not match its claimed sender.
    let mut forged = Envelope::seal_message(
        &liar,
        Kind::Beacon,
        &Beacon {
            seq: 0,
            echoes: vec![],
        },
    );
    forged.from = peer.id();
    node.deliver(Inbound {
        link_peer: peer.id(),
        bytes: Bytes::from(forged.encode()),
        reply: None,
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = node.status().await.expect("status");
    assert_eq!(status.envelope_decode_errors, 1);
    assert_eq!(
        status.inbound_dropped, 2,
        "the relayed and the forged beacon"
    );
    assert!(
        node.neighbors().await.expect("neighbors").is_empty(),
        "no forged neighbor"
    );
    assert_eq!(status.actor_restarts, 0);
    node.shutdown().await;
}
