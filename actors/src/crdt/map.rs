//! A replicated map for embedding programs: one application key space, seen as a map of
//! byte strings that converges on every node (last writer wins per key).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::broadcast;
use x0_protocols::crdt::{EntryError, MAX_SPACE_LEN, RESERVED_PREFIX};

use super::Change;
use crate::{ActorError, NodeHandle};

/// A handle on one key space. Cheap to clone; every clone sees the same replica.
#[derive(Clone)]
pub struct ReplicatedMap {
    node: Arc<NodeHandle>,
    space: String,
}

/// One change to a map, from this node or merged from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapChange {
    pub name: Vec<u8>,
    /// The new value; `None` when the key was removed (or its removal expired).
    pub value: Option<Vec<u8>>,
    /// Who wrote it; `None` when the change is an expiry, which nobody wrote.
    pub writer: Option<x0_protocols::NodeId>,
}

impl ReplicatedMap {
    /// The map of key space `space`: any name not starting with `x0/` (those belong to
    /// the node) and at most 64 bytes long.
    pub fn new(node: Arc<NodeHandle>, space: impl Into<String>) -> Result<Self, ActorError> {
        let space = space.into();
        if space.is_empty() || space.len() > MAX_SPACE_LEN {
            return Err(EntryError::TooLarge("key space").into());
        }
        if space.starts_with(RESERVED_PREFIX) {
            return Err(EntryError::NotAllowed(space).into());
        }
        Ok(ReplicatedMap { node, space })
    }

    pub fn space(&self) -> &str {
        &self.space
    }

    pub async fn insert(&self, name: impl Into<Vec<u8>>, value: Vec<u8>) -> Result<(), ActorError> {
        self.node.crdt_put(&self.space, name, value).await.map(drop)
    }

    pub async fn remove(&self, name: impl Into<Vec<u8>>) -> Result<(), ActorError> {
        self.node.crdt_delete(&self.space, name).await.map(drop)
    }

    pub async fn get(&self, name: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>, ActorError> {
        Ok(self
            .node
            .crdt_get(&self.space, name)
            .await?
            .and_then(|e| e.entry.value.clone()))
    }

    /// The live keys and values in this replica.
    pub async fn entries(&self) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, ActorError> {
        Ok(self
            .node
            .crdt_space(&self.space)
            .await?
            .iter()
            .filter_map(|e| Some((e.entry.key.name.clone(), e.entry.value.clone()?)))
            .collect())
    }

    /// Changes to this map from now on.
    pub async fn watch(&self) -> Result<MapWatch, ActorError> {
        Ok(MapWatch {
            changes: self.node.crdt_watch().await?,
            space: self.space.clone(),
        })
    }
}

/// Changes to one map, as they happen.
pub struct MapWatch {
    changes: broadcast::Receiver<Change>,
    space: String,
}

impl MapWatch {
    /// The next change, or `None` once the node has stopped. A watcher that falls far
    /// behind skips what it missed; [`ReplicatedMap::entries`] reads the present.
    pub async fn next(&mut self) -> Option<MapChange> {
        loop {
            match self.changes.recv().await {
                Ok(Change::Written(entry)) if entry.key().space == self.space => {
                    return Some(MapChange {
                        name: entry.entry.key.name.clone(),
                        value: entry.entry.value.clone(),
                        writer: Some(entry.entry.writer),
                    });
                }
                Ok(Change::Expired(key)) if key.space == self.space => {
                    return Some(MapChange {
                        name: key.name,
                        value: None,
                        writer: None,
                    });
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
