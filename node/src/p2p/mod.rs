//! The libp2p side of a node: one swarm task, driven by commands, implementing the
//! actors' network port.
//!
//! TCP and QUIC with Noise and Yamux; identify and Kademlia (server mode) find peers from
//! the bootstrap addresses; request-response carries envelopes between connected peers;
//! gossipsub is subscribed and ready for the subsystems that gossip.

mod codec;
mod port;
mod swarm;

pub use port::Libp2pPort;
pub use swarm::{SwarmConfig, SwarmControl, SwarmError, SwarmHandle, spawn_swarm};

use libp2p::PeerId;
use x0_protocols::NodeId;

/// libp2p's id for a node; the two are the same Ed25519 key.
pub fn peer_id_of(node: &NodeId) -> Option<PeerId> {
    PeerId::from_bytes(&node.to_peer_id_bytes()).ok()
}

/// The node id of a libp2p peer, if it is an Ed25519 peer (ours all are).
pub fn node_id_of(peer: &PeerId) -> Option<NodeId> {
    NodeId::from_peer_id_bytes(&peer.to_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0_protocols::Identity;

    #[test]
    fn node_ids_and_peer_ids_are_the_same_key() {
        let identity = Identity::from_seed([7; 32]);
        let mut secret = *identity.ed25519_secret();
        let keypair =
            libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).expect("valid key");
        let peer = keypair.public().to_peer_id();
        assert_eq!(peer.to_string(), identity.id().to_string());
        assert_eq!(node_id_of(&peer), Some(identity.id()));
        assert_eq!(peer_id_of(&identity.id()), Some(peer));
    }
}
