//! A small hand-built mesh on the simulated network, for tests that need to look at
//! individual nodes and links.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use x0_actors::{Delivered, NodeArgs, NodeHandle, NodeSettings};
use x0_protocols::{Identity, NodeId};
use x0_simulator::LinkModel;
use x0_simulator::net::SimNetwork;

pub struct Line {
    pub network: SimNetwork,
    pub nodes: Vec<Arc<NodeHandle>>,
    pub ids: Vec<NodeId>,
    /// Everything delivered to any node's application.
    pub received: Arc<Mutex<Vec<Delivered>>>,
}

/// Nodes 0 - 1 - ... - (n-1) in a line, all with `settings`; call inside a paused runtime.
pub async fn line(n: usize, settings: NodeSettings) -> Line {
    let adjacency: Vec<Vec<u32>> = (0..n as u32)
        .map(|i| {
            let mut links = Vec::new();
            if i > 0 {
                links.push(i - 1);
            }
            if i + 1 < n as u32 {
                links.push(i + 1);
            }
            links
        })
        .collect();
    let identities: Vec<Arc<Identity>> = (0..n as u8)
        .map(|i| Arc::new(Identity::from_seed([i + 1; 32])))
        .collect();
    let ids: Vec<NodeId> = identities.iter().map(|i| i.id()).collect();
    let network = SimNetwork::new(
        adjacency,
        ids.clone(),
        LinkModel::default(),
        ChaCha8Rng::seed_from_u64(1),
    );
    let received: Arc<Mutex<Vec<Delivered>>> = Arc::default();
    let mut nodes = Vec::new();
    for (i, identity) in identities.iter().enumerate() {
        let inbox = received.clone();
        let handle = start_node(
            &network,
            i as u32,
            identity.clone(),
            settings.clone(),
            [i as u8 + 100; 32],
            Arc::new(move |d: Delivered| inbox.lock().unwrap().push(d)),
        )
        .await;
        nodes.push(handle);
    }
    tokio::spawn(network.clone().pump());
    Line {
        network,
        nodes,
        ids,
        received,
    }
}

/// Starts a node at `index` of `network` (again, after a restart) and attaches it.
pub async fn start_node(
    network: &SimNetwork,
    index: u32,
    identity: Arc<Identity>,
    settings: NodeSettings,
    crypto_seed: [u8; 32],
    observer: Arc<dyn x0_actors::NodeObserver>,
) -> Arc<NodeHandle> {
    let handle = Arc::new(
        NodeHandle::spawn(NodeArgs {
            identity,
            port: network.port(index),
            settings,
            seed: u64::from(index),
            observer,
            crypto_seed,
            ledger_store: None,
            mesh_epoch_ms: 0,
            crdt_store: None,
            verifier: Arc::new(x0_protocols::crdt::DirectVerifier),
        })
        .await
        .unwrap(),
    );
    network.attach(index, Some(handle.clone()));
    handle
}

/// A current-thread runtime on a paused clock, as the simulator runs.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}
