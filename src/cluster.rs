//! Cluster files: which node configs `x0tta6bl4 cluster` starts together, and which of
//! those nodes are the ledger's validators.
//!
//! ```toml
//! [[node]]
//! name = "node-a"
//! config = "node-a.toml"   # relative to the cluster file
//! validator = true         # optional: a voter of the cluster's Raft ledger
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use x0_node::config::{ConfigError, NodeConfig};
use x0_node::keystore::{self, KeystoreError};
use x0_protocols::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: node: at least one [[node]] is needed")]
    Empty { path: String },
    #[error(transparent)]
    NodeConfig(#[from] ConfigError),
    /// A node's keys could not be read or created, so its id is unknown.
    #[error("{name}: identity: {source}")]
    Identity { name: String, source: KeystoreError },
    /// Two nodes would run as one identity: each would take the other's place.
    #[error("{first} and {second} have the same identity {id} (do they share a data_dir?)")]
    SameIdentity {
        first: String,
        second: String,
        id: NodeId,
    },
}

/// A cluster file as written: which node configs to start together.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub node: Vec<ClusterNode>,
}

/// One `[[node]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    pub name: String,
    /// Node config path, relative to the cluster file.
    pub config: PathBuf,
    /// A voter of the ledger the cluster runs.
    #[serde(default)]
    pub validator: bool,
}

/// One node of a loaded cluster: its config read and validated.
#[derive(Clone, Debug)]
pub struct ClusterMember {
    pub name: String,
    /// Node config path, resolved against the cluster file's directory.
    pub path: PathBuf,
    pub config: NodeConfig,
    pub validator: bool,
}

impl ClusterFile {
    /// Loads the file and every node config it names; a cluster that would fail on its
    /// third node fails before the first starts.
    pub fn load(path: &Path) -> Result<Vec<ClusterMember>, ClusterError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Read {
            path: shown.clone(),
            source,
        })?;
        let file: ClusterFile = toml::from_str(&text).map_err(|e| ClusterError::Parse {
            path: shown.clone(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        if file.node.is_empty() {
            return Err(ClusterError::Empty { path: shown });
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut members = Vec::new();
        for node in file.node {
            let path = base.join(&node.config);
            let config = NodeConfig::load(&path)?;
            members.push(ClusterMember {
                name: node.name,
                path,
                config,
                validator: node.validator,
            });
        }
        Ok(members)
    }
}

/// Makes sure every member has an identity in its data directory (creating keys as the
/// node itself would on first start) and returns the validators' ids, in member order.
///
/// The ids must be known before any node starts: every validator has to be given the
/// same voter set, and a node's id is its key.
pub fn validator_ids(members: &[ClusterMember]) -> Result<Vec<NodeId>, ClusterError> {
    let mut seen: BTreeMap<NodeId, &str> = BTreeMap::new();
    let mut validators = Vec::new();
    for member in members {
        let identity = keystore::load_or_create(&member.config.data_dir).map_err(|source| {
            ClusterError::Identity {
                name: member.name.clone(),
                source,
            }
        })?;
        let id = identity.id();
        if let Some(first) = seen.insert(id, &member.name) {
            return Err(ClusterError::SameIdentity {
                first: first.to_string(),
                second: member.name.clone(),
                id,
            });
        }
        if member.validator {
            validators.push(id);
        }
    }
    Ok(validators)
}
