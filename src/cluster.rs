//! Cluster files: which node configs `x0tta6bl4 cluster` starts together.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use x0_node::config::{ConfigError, NodeConfig};

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
}

/// A cluster file: which node configs to start together.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub node: Vec<ClusterNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    pub name: String,
    /// Node config path, relative to the cluster file.
    pub config: PathBuf,
}

impl ClusterFile {
    /// Loads the file and every node config it names, returning (name, config path)
    /// pairs; a cluster that would fail on its third node fails before the first starts.
    pub fn load(path: &Path) -> Result<Vec<(String, PathBuf)>, ClusterError> {
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
        let mut nodes = Vec::new();
        for node in file.node {
            let config = base.join(&node.config);
            NodeConfig::load(&config)?;
            nodes.push((node.name, config));
        }
        Ok(nodes)
    }
}
