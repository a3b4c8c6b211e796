//! Node identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The identity of a node: its Ed25519 public key.
///
/// It is written exactly like the libp2p `PeerId` of the same key (base58btc of the
/// identity multihash of the protobuf-encoded public key, `12D3KooW…`), so that operators
/// see one id in logs, the HTTP API, the CLI and libp2p's own tooling. The encoding is done
/// here, without libp2p, because `protocols` must not depend on the transport.
/// `Default` is the all-zero id, which no Ed25519 key maps to in practice; it exists because
/// openraft requires node ids to have a default.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

/// The first 6 bytes of a node id: how compact messages name a node (routing updates,
/// seqno requests, beacon echoes) where every byte is repeated thousands of times a
/// second. At 1000 nodes under churn a routing advert is mostly its destination's short
/// id, and 6 bytes instead of 8 took 11% off the routing traffic.
///
/// Ids are public keys, so two nodes share a short id by accident with probability
/// 2⁻⁴⁸ per pair: one chance in 500 million for a 1000-node mesh, one in 56,000 at
/// 100,000 nodes. Making one on purpose takes about 2⁴⁸ key generations, and gains
/// nothing a lying router does not have anyway: where a short id is taken to mean a
/// node, that node's own messages are what speak for it, a node that wanted to capture
/// another's routes could as well advertise a low metric for it, and end-to-end
/// signatures and sealing are what protect content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShortId(pub [u8; SHORT_ID_BYTES]);

/// Bytes in a [`ShortId`].
pub const SHORT_ID_BYTES: usize = 6;

impl ShortId {
    pub fn of(id: &NodeId) -> ShortId {
        let mut short = [0u8; SHORT_ID_BYTES];
        short.copy_from_slice(&id.0[..SHORT_ID_BYTES]);
        ShortId(short)
    }

    pub fn as_u64(self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes[..SHORT_ID_BYTES].copy_from_slice(&self.0);
        u64::from_le_bytes(bytes)
    }
}

/// Multihash `identity` code, length 36, then protobuf `PublicKey { type: Ed25519, data: 32 bytes }`.
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    #[error("not base58: {0}")]
    NotBase58(String),
    #[error("not an Ed25519 peer id (expected a `12D3KooW…` id of 38 bytes)")]
    NotEd25519,
}

impl NodeId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The bytes of the libp2p `PeerId` for this key (an identity multihash).
    pub fn to_peer_id_bytes(&self) -> [u8; 38] {
        let mut out = [0u8; 38];
        out[..6].copy_from_slice(&PEER_ID_PREFIX);
        out[6..].copy_from_slice(&self.0);
        out
    }

    /// Parses the bytes of a libp2p `PeerId` that wraps an Ed25519 key.
    pub fn from_peer_id_bytes(bytes: &[u8]) -> Result<Self, NodeIdError> {
        if bytes.len() != 38 || bytes[..6] != PEER_ID_PREFIX {
            return Err(NodeIdError::NotEd25519);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[6..]);
        Ok(NodeId(key))
    }

    /// The last characters of the id: enough to tell nodes apart in a table.
    pub fn short(&self) -> String {
        let full = self.to_string();
        full[full.len().saturating_sub(8)..].to_string()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.to_peer_id_bytes()).into_string())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = bs58::decode(s.trim())
            .into_vec()
            .map_err(|e| NodeIdError::NotBase58(e.to_string()))?;
        NodeId::from_peer_id_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn display_looks_like_a_libp2p_ed25519_peer_id() {
        let id = NodeId([7u8; 32]);
        assert!(id.to_string().starts_with("12D3KooW"), "{id}");
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(matches!(
            "not-base58-0OIl".parse::<NodeId>(),
            Err(NodeIdError::NotBase58(_))
        ));
        assert_eq!("abc".parse::<NodeId>(), Err(NodeIdError::NotEd25519));
    }

    proptest! {
        #[test]
        fn parse_inverts_display(key in any::<[u8; 32]>()) {
            let id = NodeId(key);
            prop_assert_eq!(id.to_string().parse::<NodeId>(), Ok(id));
        }
    }
}
