//! Link sealing heals itself: after a node restarts (its neighbors still hold sessions
//! it has forgotten) or its sessions actor crashes, new sessions form and traffic flows
//! sealed again, through the restarted node.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

use std::sync::Arc;
use std::time::Duration;

mod common;

use x0_actors::{NodeHandle, NodeSettings, SessionInfo, Subsystem};
use x0_protocols::{Identity, NodeId};

fn session_with(sessions: &[SessionInfo], peer: NodeId) -> Option<&SessionInfo> {
    sessions.iter().find(|s| s.peer == peer)
}

/// Sends from one end of the line to the other and waits for it to arrive.
async fn delivered_across(line: &common::Line, nodes: &[Arc<NodeHandle>], marker: &[u8]) -> bool {
    let _ = nodes[0].send(line.ids[2], marker.to_vec()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    line.received
        .lock()
        .unwrap()
        .iter()
        .any(|d| d.payload == marker)
}

#[test]
fn sessions_reform_after_a_restart_and_an_actor_crash() {
    common::paused_runtime().block_on(async {
        let line = common::line(3, NodeSettings::default()).await;
        let mut nodes = line.nodes.clone();
        let ids = line.ids.clone();
        tokio::time::sleep(Duration::from_secs(20)).await;
        let before = nodes[1].sessions().await.unwrap();
        for peer in [ids[0], ids[2]] {
            let s = session_with(&before, peer).expect("a session with each neighbor");
            assert!(s.frames_sent > 0 && s.frames_received > 0, "{s:?}");
        }
        assert!(delivered_across(&line, &nodes, b"before the restart").await);

        // Node 1 restarts at once, forgetting its sessions; its neighbors keep theirs
        // (the link never looked down to them) and go on sealing under them.
        nodes[1].stop();
        nodes[1] = common::start_node(
            &line.network,
            1,
            Arc::new(Identity::from_seed([2; 32])),
            NodeSettings::default(),
            [7; 32],
            Arc::new(|_: x0_actors::Delivered| {}),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        let after = nodes[1].sessions().await.unwrap();
        for peer in [ids[0], ids[2]] {
            let s = session_with(&after, peer).expect("a new session with each neighbor");
            assert!(s.frames_received > 0, "{s:?}");
        }
        assert!(delivered_across(&line, &nodes, b"after the restart").await);

        // The sessions actor of node 2 crashes and restarts without them.
        nodes[2].crash(Subsystem::Sessions, "test");
        tokio::time::sleep(Duration::from_secs(20)).await;
        let healed = nodes[2].sessions().await.unwrap();
        let s = session_with(&healed, ids[1]).expect("a session after the crash");
        assert!(s.frames_received > 0, "{s:?}");
        assert!(delivered_across(&line, &nodes, b"after the crash").await);
    });
}
