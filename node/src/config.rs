//! Node configuration: the TOML file format, its defaults and its validation.
//!
//! The file is read in two steps. First serde reads it into the *file* structs below, every
//! one of them `deny_unknown_fields`, so that a typo (`beacon_msec`) is refused instead of
//! silently leaving a default in place. Then [`NodeConfig`] is built from them and
//! validated, so that every error an operator can make is reported at start, as
//! `file: key: reason`, and never turns up later as a confusing runtime failure.
//!
//! ```toml
//! [node]
//! name = "node-a"            # optional label
//! data_dir = "data/node-a"   # required; relative to this file's directory
//! seed = 1                   # optional; seeds protocol randomness
//! [network]
//! listen = ["/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"]
//! bootstrap = ["/ip4/127.0.0.1/tcp/4001"]
//! max_peers = 64
//! discover = true            # false: links only to bootstrap peers (fixed topology)
//! [api]
//! listen = "127.0.0.1:8081"
//! [discovery]
//! beacon_ms = 1000
//! expiry_ms = 3500
//! max_neighbors = 256
//! [failure_detection]
//! enabled = true             # SWIM/Lifeguard probes; false: neighbors fail by expiry
//! silence_ms = 1150          # probe a neighbor unheard this long
//! probe_timeout_ms = 200
//! suspicion_min_ms = 300     # suspicion timeout with full confirmation ...
//! suspicion_max_ms = 900     # ... and with none
//! [security]
//! admission = "open"         # "closed": only the node ids in `trusted` may join
//! trusted = ["12D3KooW..."]
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde::Deserialize;
use x0_actors::NodeSettings;
use x0_protocols::NodeId;
use x0_protocols::discovery::DiscoveryConfig;
use x0_protocols::failure::FailureConfig;

/// Allowed range of `discovery.beacon_ms`: faster floods the links, slower makes failure
/// detection useless.
pub const BEACON_MS_RANGE: (u64, u64) = (50, 60_000);
/// Upper bound of `discovery.expiry_ms` (an hour): beyond that a dead neighbor is never
/// noticed in practice.
pub const MAX_EXPIRY_MS: u64 = 3_600_000;
/// Upper bound of `network.max_peers`: each connection costs file descriptors and memory.
pub const MAX_PEERS_LIMIT: usize = 10_000;
/// Upper bound of `discovery.max_neighbors`, the neighbor table size.
pub const MAX_NEIGHBORS_LIMIT: usize = 65_536;

/// Why a configuration was refused. Every variant's message starts with the file (or the
/// origin given to [`NodeConfig::from_toml_str`]) so that it can be printed as it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {reason}")]
    Read {
        file: String,
        /// What kind of failure it was (not found, permission denied, ...).
        kind: std::io::ErrorKind,
        /// The operating system's wording, without the `(os error N)` suffix.
        reason: String,
    },
    /// The file is not valid TOML, or has a key of the wrong type, an unknown key or a
    /// missing required key.
    #[error("{file}: {location}{message}")]
    Parse {
        file: String,
        /// `table.key: ` when it can be told, else empty.
        location: String,
        /// The TOML parser's message and the line and column it points at.
        message: String,
    },
    /// The file parses, but a value is not acceptable.
    #[error("{file}: {key}: {reason}")]
    Invalid {
        file: String,
        /// Dotted path of the key, e.g. `discovery.beacon_ms`.
        key: String,
        reason: String,
    },
}

impl ConfigError {
    fn invalid(file: &str, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: file.to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

// ---- the file as written --------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node: FileNode,
    #[serde(default)]
    network: FileNetwork,
    #[serde(default)]
    api: FileApi,
    #[serde(default)]
    discovery: FileDiscovery,
    #[serde(default)]
    failure_detection: FileFailure,
    #[serde(default)]
    security: FileSecurity,
    ledger: Option<FileLedger>,
    #[serde(default)]
    crdt: FileCrdt,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCrdt {
    enabled: Option<bool>,
    record_expiry_ms: Option<u64>,
    refresh_ms: Option<u64>,
    tombstone_expiry_ms: Option<u64>,
    post_expiry_ms: Option<u64>,
    announce_ms: Option<u64>,
    anti_entropy_ms: Option<u64>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLedger {
    #[serde(default)]
    validators: Vec<String>,
    #[serde(default)]
    learners: Vec<String>,
    replica: Option<bool>,
    heartbeat_ms: Option<u64>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    snapshot_every: Option<u64>,
    max_payload_entries: Option<u64>,
    rpc_timeout_ms: Option<u64>,
    client_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSecurity {
    admission: Option<String>,
    #[serde(default)]
    trusted: Vec<String>,
    relay_bytes_per_s: Option<u64>,
    relay_window_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFailure {
    enabled: Option<bool>,
    silence_ms: Option<u64>,
    probe_timeout_ms: Option<u64>,
    suspicion_min_ms: Option<u64>,
    suspicion_max_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNode {
    name: Option<String>,
    data_dir: PathBuf,
    seed: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNetwork {
    // Strings, not `Multiaddr`: our own parse error names the key and the bad value,
    // serde's would only point at a line.
    listen: Option<Vec<String>>,
    #[serde(default)]
    bootstrap: Vec<String>,
    max_peers: Option<usize>,
    discover: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApi {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDiscovery {
    beacon_ms: Option<u64>,
    expiry_ms: Option<u64>,
    max_neighbors: Option<usize>,
}

// ---- the validated configuration -----------------------------------------------------

/// A validated node configuration.
///
/// Built by [`NodeConfig::load`] or [`NodeConfig::from_toml_str`] (which validate), or by
/// hand starting from [`NodeConfig::new`] (then call [`NodeConfig::validate`], as
/// [`crate::NodeBuilder::spawn`] does).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// A label for logs and the status API; the node's identity is its key, not this.
    pub name: Option<String>,
    /// Where the node keeps its keys. Relative paths from a file are already resolved
    /// against the file's directory.
    pub data_dir: PathBuf,
    /// Seeds the node's protocol randomness; `None` draws it from the OS at start.
    pub seed: Option<u64>,
    /// Addresses to listen on (TCP and/or QUIC); port 0 picks a free port.
    pub listen: Vec<Multiaddr>,
    /// Peers to join the mesh through; a `/p2p/<peer id>` suffix is optional.
    pub bootstrap: Vec<Multiaddr>,
    /// Connections beyond this many peers are refused and no new dials are made.
    pub max_peers: usize,
    /// Address of the HTTP API; `None` runs the node without one.
    pub api_listen: Option<SocketAddr>,
    /// Mean time between discovery beacons.
    pub beacon_ms: u64,
    /// A neighbor silent this long is dropped; must exceed `beacon_ms`.
    pub expiry_ms: u64,
    /// Neighbor table bound.
    pub max_neighbors: usize,
    /// Find peers through Kademlia; `false` keeps to the bootstrap peers.
    pub discover_peers: bool,
    /// SWIM/Lifeguard failure detection; `None` leaves neighbor failure to expiry.
    pub failure: Option<FailureConfig>,
    /// Who may complete a session with this node.
    pub admission: x0_actors::Admission,
    /// The Raft ledger; `None` (no `[ledger]` section) runs the node without one.
    pub ledger: Option<x0_actors::LedgerSettings>,
    /// Relayed bytes each neighbor may hand this node per second, over a sliding window.
    pub relay_limit: x0_protocols::ratelimit::RateLimit,
    /// CRDT sync and the node registry; `None` (`crdt.enabled = false`) runs without.
    /// Its `addresses` are filled in at start from where the node listens.
    pub crdt: Option<x0_actors::CrdtSettings>,
}

/// Default listen addresses of a node started from a file without `network.listen`.
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"];
/// Default HTTP API address of a node started from a file without `api.listen`:
/// loopback only, since the API is unauthenticated.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:8081";
/// Default `network.max_peers`.
pub const DEFAULT_MAX_PEERS: usize = 64;

impl NodeConfig {
    /// A configuration with every default and the given data directory, listening on
    /// [`DEFAULT_LISTEN`], with no bootstrap peers and no HTTP API.
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        let discovery = DiscoveryConfig::default();
        NodeConfig {
            name: None,
            data_dir: data_dir.into(),
            seed: None,
            listen: DEFAULT_LISTEN
                .iter()
                .filter_map(|a| Multiaddr::from_str(a).ok())
                .collect(),
            bootstrap: Vec::new(),
            max_peers: DEFAULT_MAX_PEERS,
            api_listen: None,
            beacon_ms: discovery.beacon_interval_ms,
            expiry_ms: discovery.expiry_ms,
            max_neighbors: discovery.max_neighbors,
            discover_peers: true,
            failure: Some(FailureConfig::default()),
            admission: x0_actors::Admission::Open,
            ledger: None,
            relay_limit: x0_protocols::ratelimit::RateLimit::default(),
            crdt: Some(x0_actors::CrdtSettings::default()),
        }
    }

    /// Reads, parses and validates a config file.
    ///
    /// Relative paths in the file (`node.data_dir`) are taken relative to the file's
    /// directory, so a config works the same whatever directory the node starts in.
    pub fn load(path: impl AsRef<Path>) -> Result<NodeConfig, ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: file.clone(),
            kind: e.kind(),
            reason: io_reason(&e),
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        Self::parse(&text, &file, Some(base))
    }

    /// Parses and validates config text; `origin` names it in error messages.
    ///
    /// A relative `node.data_dir` is left relative (to the process's working directory):
    /// there is no file to be relative to.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<NodeConfig, ConfigError> {
        Self::parse(text, origin, None)
    }

    fn parse(text: &str, origin: &str, base: Option<&Path>) -> Result<NodeConfig, ConfigError> {
        let raw: FileConfig = toml::from_str(text).map_err(|e| parse_error(origin, text, &e))?;
        let config = Self::from_file(raw, origin, base)?;
        config.validate(origin)?;
        Ok(config)
    }

    fn from_file(
        raw: FileConfig,
        origin: &str,
        base: Option<&Path>,
    ) -> Result<NodeConfig, ConfigError> {
        let mut config = NodeConfig::new(PathBuf::new());
        config.name = raw.node.name;
        config.seed = raw.node.seed;
        if raw.node.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                origin,
                "node.data_dir",
                "must not be empty",
            ));
        }
        config.data_dir = match base {
            Some(base) if raw.node.data_dir.is_relative() => base.join(&raw.node.data_dir),
            _ => raw.node.data_dir,
        };
        if let Some(listen) = raw.network.listen {
            config.listen = parse_multiaddrs(origin, "network.listen", &listen)?;
        }
        config.bootstrap = parse_multiaddrs(origin, "network.bootstrap", &raw.network.bootstrap)?;
        if let Some(max_peers) = raw.network.max_peers {
            config.max_peers = max_peers;
        }
        if let Some(discover) = raw.network.discover {
            config.discover_peers = discover;
        }
        let mut trusted = std::collections::BTreeSet::new();
        for (i, id) in raw.security.trusted.iter().enumerate() {
            let id = id.trim().parse().map_err(|e| {
                ConfigError::invalid(origin, format!("security.trusted[{i}]"), format!("{e}"))
            })?;
            trusted.insert(id);
        }
        config.admission = match raw.security.admission.as_deref().map(str::trim) {
            None | Some("open") => {
                if !trusted.is_empty() {
                    return Err(ConfigError::invalid(
                        origin,
                        "security.trusted",
                        "only applies with security.admission = \"closed\" or \"ledger\"",
                    ));
                }
                x0_actors::Admission::Open
            }
            Some("closed") => {
                if trusted.is_empty() {
                    return Err(ConfigError::invalid(
                        origin,
                        "security.trusted",
                        "a closed mesh needs at least one trusted node id",
                    ));
                }
                x0_actors::Admission::Closed(trusted)
            }
            // The ledger's validators join `trusted` in `node_settings` (they may come
            // from the command line).
            Some("ledger") => x0_actors::Admission::Ledger {
                trusted,
                members: std::collections::BTreeSet::new(),
            },
            Some(other) => {
                return Err(ConfigError::invalid(
                    origin,
                    "security.admission",
                    format!("must be \"open\", \"closed\" or \"ledger\", got {other:?}"),
                ));
            }
        };
        if let Some(l) = raw.ledger {
            let ids = |key: &str, texts: &[String]| {
                texts
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        id.trim().parse().map_err(|e| {
                            ConfigError::invalid(
                                origin,
                                format!("ledger.{key}[{i}]"),
                                format!("{e}"),
                            )
                        })
                    })
                    .collect::<Result<std::collections::BTreeSet<NodeId>, _>>()
            };
            let defaults = x0_actors::LedgerSettings::default();
            config.ledger = Some(x0_actors::LedgerSettings {
                validators: ids("validators", &l.validators)?,
                learners: ids("learners", &l.learners)?,
                replica: l.replica.unwrap_or(defaults.replica),
                heartbeat_ms: l.heartbeat_ms.unwrap_or(defaults.heartbeat_ms),
                election_timeout_min_ms: l
                    .election_timeout_min_ms
                    .unwrap_or(defaults.election_timeout_min_ms),
                election_timeout_max_ms: l
                    .election_timeout_max_ms
                    .unwrap_or(defaults.election_timeout_max_ms),
                snapshot_every: l.snapshot_every.unwrap_or(defaults.snapshot_every),
                max_payload_entries: l
                    .max_payload_entries
                    .unwrap_or(defaults.max_payload_entries),
                rpc_timeout_ms: l.rpc_timeout_ms.unwrap_or(defaults.rpc_timeout_ms),
                client_timeout_ms: l.client_timeout_ms.unwrap_or(defaults.client_timeout_ms),
            });
        }
        let c = raw.crdt;
        if c.enabled == Some(false) {
            config.crdt = None;
        } else if let Some(crdt) = &mut config.crdt {
            if let Some(v) = c.record_expiry_ms {
                // The refresh follows the expiry unless it is set too.
                crdt.set_record_expiry(v);
            }
            crdt.refresh_ms = c.refresh_ms.unwrap_or(crdt.refresh_ms);
            crdt.policy.tombstone_expiry_ms = c
                .tombstone_expiry_ms
                .unwrap_or(crdt.policy.tombstone_expiry_ms);
            crdt.policy.post_expiry_ms = c.post_expiry_ms.unwrap_or(crdt.policy.post_expiry_ms);
            crdt.sync.announce_ms = c.announce_ms.unwrap_or(crdt.sync.announce_ms);
            crdt.sync.anti_entropy_ms = c.anti_entropy_ms.unwrap_or(crdt.sync.anti_entropy_ms);
            crdt.roles = c.roles;
        }
        if let Some(v) = raw.security.relay_bytes_per_s {
            config.relay_limit.bytes_per_s = v;
        }
        if let Some(v) = raw.security.relay_window_ms {
            config.relay_limit.window_ms = v;
        }
        let f = raw.failure_detection;
        if f.enabled == Some(false) {
            config.failure = None;
        } else if let Some(failure) = &mut config.failure {
            failure.silence_ms = f.silence_ms.unwrap_or(failure.silence_ms);
            failure.probe_timeout_ms = f.probe_timeout_ms.unwrap_or(failure.probe_timeout_ms);
            failure.suspicion_min_ms = f.suspicion_min_ms.unwrap_or(failure.suspicion_min_ms);
            failure.suspicion_max_ms = f.suspicion_max_ms.unwrap_or(failure.suspicion_max_ms);
        }
        let api = raw.api.listen.as_deref().unwrap_or(DEFAULT_API_LISTEN);
        config.api_listen = Some(SocketAddr::from_str(api.trim()).map_err(|_| {
            ConfigError::invalid(
                origin,
                "api.listen",
                format!("invalid socket address {api:?}"),
            )
        })?);
        if let Some(v) = raw.discovery.beacon_ms {
            config.beacon_ms = v;
        }
        if let Some(v) = raw.discovery.expiry_ms {
            config.expiry_ms = v;
        }
        if let Some(v) = raw.discovery.max_neighbors {
            config.max_neighbors = v;
        }
        Ok(config)
    }

    /// Checks every value; `origin` names the source in the error.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                origin,
                "node.data_dir",
                "must not be empty",
            ));
        }
        if let Some(name) = &self.name
            && name.trim().is_empty()
        {
            return Err(ConfigError::invalid(
                origin,
                "node.name",
                "must not be empty when given",
            ));
        }
        if self.listen.is_empty() {
            return Err(ConfigError::invalid(
                origin,
                "network.listen",
                "at least one address is needed",
            ));
        }
        for (i, addr) in self.listen.iter().enumerate() {
            check_transport(addr)
                .map_err(|r| ConfigError::invalid(origin, format!("network.listen[{i}]"), r))?;
            if addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
                return Err(ConfigError::invalid(
                    origin,
                    format!("network.listen[{i}]"),
                    format!("{addr} ends in /p2p/: a listen address names no peer"),
                ));
            }
        }
        for (i, addr) in self.bootstrap.iter().enumerate() {
            check_transport(addr)
                .map_err(|r| ConfigError::invalid(origin, format!("network.bootstrap[{i}]"), r))?;
        }
        in_range(
            origin,
            "network.max_peers",
            self.max_peers,
            1,
            MAX_PEERS_LIMIT,
        )?;
        let (lo, hi) = BEACON_MS_RANGE;
        in_range(origin, "discovery.beacon_ms", self.beacon_ms, lo, hi)?;
        if self.expiry_ms <= self.beacon_ms || self.expiry_ms > MAX_EXPIRY_MS {
            return Err(ConfigError::invalid(
                origin,
                "discovery.expiry_ms",
                format!(
                    "must be greater than discovery.beacon_ms ({}) and at most {MAX_EXPIRY_MS}, got {}",
                    self.beacon_ms, self.expiry_ms
                ),
            ));
        }
        in_range(
            origin,
            "discovery.max_neighbors",
            self.max_neighbors,
            1,
            MAX_NEIGHBORS_LIMIT,
        )?;
        if let Some(ledger) = &self.ledger {
            validate_ledger(origin, ledger)?;
        }
        if let Some(crdt) = &self.crdt {
            validate_crdt(origin, crdt)?;
        }
        if matches!(self.admission, x0_actors::Admission::Ledger { .. }) && self.ledger.is_none() {
            return Err(ConfigError::invalid(
                origin,
                "security.admission",
                "\"ledger\" needs a [ledger] section: its validators are admitted from the start, everyone else by membership entries",
            ));
        }
        in_range(
            origin,
            "security.relay_bytes_per_s",
            self.relay_limit.bytes_per_s,
            1024,
            10_000_000_000,
        )?;
        in_range(
            origin,
            "security.relay_window_ms",
            self.relay_limit.window_ms,
            100,
            60_000,
        )?;
        if let Some(f) = &self.failure {
            in_range(
                origin,
                "failure_detection.silence_ms",
                f.silence_ms,
                10,
                MAX_EXPIRY_MS,
            )?;
            in_range(
                origin,
                "failure_detection.probe_timeout_ms",
                f.probe_timeout_ms,
                1,
                60_000,
            )?;
            in_range(
                origin,
                "failure_detection.suspicion_min_ms",
                f.suspicion_min_ms,
                1,
                MAX_EXPIRY_MS,
            )?;
            if f.suspicion_max_ms < f.suspicion_min_ms || f.suspicion_max_ms > MAX_EXPIRY_MS {
                return Err(ConfigError::invalid(
                    origin,
                    "failure_detection.suspicion_max_ms",
                    format!(
                        "must be at least failure_detection.suspicion_min_ms ({}) and at most {MAX_EXPIRY_MS}, got {}",
                        f.suspicion_min_ms, f.suspicion_max_ms
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The actor tree's settings for this configuration: everything the file does not
    /// set (routing timers, queue bounds, restart limits) keeps the actors' defaults.
    pub fn node_settings(&self) -> NodeSettings {
        let defaults = NodeSettings::default();
        NodeSettings {
            discovery: DiscoveryConfig {
                beacon_interval_ms: self.beacon_ms,
                jitter: defaults.discovery.jitter,
                expiry_ms: self.expiry_ms,
                max_neighbors: self.max_neighbors,
            },
            failure: self.failure.clone(),
            admission: match (&self.admission, &self.ledger) {
                // Validators and learners must reach each other before the ledger can
                // admit anyone: they are trusted from the start.
                (x0_actors::Admission::Ledger { trusted, members }, Some(ledger)) => {
                    let mut trusted = trusted.clone();
                    trusted.extend(ledger.validators.iter().copied());
                    trusted.extend(ledger.learners.iter().copied());
                    x0_actors::Admission::Ledger {
                        trusted,
                        members: members.clone(),
                    }
                }
                (other, _) => other.clone(),
            },
            ledger: self.ledger.clone(),
            relay_limit: self.relay_limit.clone(),
            crdt: self.crdt.clone(),
            ..defaults
        }
    }
}

fn validate_crdt(origin: &str, c: &x0_actors::CrdtSettings) -> Result<(), ConfigError> {
    in_range(
        origin,
        "crdt.record_expiry_ms",
        c.policy.record_expiry_ms,
        1_000,
        30 * 86_400_000,
    )?;
    if c.refresh_ms < 100 || c.refresh_ms >= c.policy.record_expiry_ms {
        return Err(ConfigError::invalid(
            origin,
            "crdt.refresh_ms",
            format!(
                "must be at least 100 and below crdt.record_expiry_ms ({}), got {}",
                c.policy.record_expiry_ms, c.refresh_ms
            ),
        ));
    }
    in_range(
        origin,
        "crdt.tombstone_expiry_ms",
        c.policy.tombstone_expiry_ms,
        1_000,
        365 * 86_400_000,
    )?;
    in_range(
        origin,
        "crdt.post_expiry_ms",
        c.policy.post_expiry_ms,
        1_000,
        365 * 86_400_000,
    )?;
    in_range(origin, "crdt.announce_ms", c.sync.announce_ms, 1, 10_000)?;
    in_range(
        origin,
        "crdt.anti_entropy_ms",
        c.sync.anti_entropy_ms,
        50,
        600_000,
    )?;
    Ok(())
}

/// Most validators a ledger may name: Raft's quorum traffic grows with every voter.
const MAX_VALIDATORS: usize = 9;

fn validate_ledger(origin: &str, l: &x0_actors::LedgerSettings) -> Result<(), ConfigError> {
    if l.validators.is_empty() || l.validators.len() > MAX_VALIDATORS {
        return Err(ConfigError::invalid(
            origin,
            "ledger.validators",
            format!(
                "must name between 1 and {MAX_VALIDATORS} node ids (3 or 5 tolerate 1 or 2 failures), got {}",
                l.validators.len()
            ),
        ));
    }
    if let Some(both) = l.learners.intersection(&l.validators).next() {
        return Err(ConfigError::invalid(
            origin,
            "ledger.learners",
            format!("{both} is also a validator"),
        ));
    }
    in_range(origin, "ledger.heartbeat_ms", l.heartbeat_ms, 10, 10_000)?;
    if l.election_timeout_min_ms <= l.heartbeat_ms {
        return Err(ConfigError::invalid(
            origin,
            "ledger.election_timeout_min_ms",
            format!(
                "must exceed ledger.heartbeat_ms ({}), got {}",
                l.heartbeat_ms, l.election_timeout_min_ms
            ),
        ));
    }
    if l.election_timeout_max_ms <= l.election_timeout_min_ms || l.election_timeout_max_ms > 60_000
    {
        return Err(ConfigError::invalid(
            origin,
            "ledger.election_timeout_max_ms",
            format!(
                "must exceed ledger.election_timeout_min_ms ({}) and be at most 60000, got {}",
                l.election_timeout_min_ms, l.election_timeout_max_ms
            ),
        ));
    }
    in_range(
        origin,
        "ledger.snapshot_every",
        l.snapshot_every,
        10,
        10_000_000,
    )?;
    // Entries of up to 2 KB each must fit one routed message (256 KB).
    in_range(
        origin,
        "ledger.max_payload_entries",
        l.max_payload_entries,
        1,
        100,
    )?;
    in_range(
        origin,
        "ledger.rpc_timeout_ms",
        l.rpc_timeout_ms,
        10,
        60_000,
    )?;
    in_range(
        origin,
        "ledger.client_timeout_ms",
        l.client_timeout_ms,
        100,
        600_000,
    )?;
    Ok(())
}

fn in_range<T: PartialOrd + fmt::Display>(
    origin: &str,
    key: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    if value < lo || value > hi {
        return Err(ConfigError::invalid(
            origin,
            key,
            format!("must be between {lo} and {hi}, got {value}"),
        ));
    }
    Ok(())
}

fn parse_multiaddrs(
    origin: &str,
    key: &str,
    texts: &[String],
) -> Result<Vec<Multiaddr>, ConfigError> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            Multiaddr::from_str(text.trim()).map_err(|e| {
                ConfigError::invalid(
                    origin,
                    format!("{key}[{i}]"),
                    format!("invalid multiaddr {text:?}: {e}"),
                )
            })
        })
        .collect()
}

/// The node speaks TCP and QUIC over IPv4/IPv6 (or DNS names when dialing); anything
/// else would fail at start with a less helpful transport error.
fn check_transport(addr: &Multiaddr) -> Result<(), String> {
    let mut parts = addr.iter();
    let host_ok = matches!(
        parts.next(),
        Some(
            Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_)
        )
    );
    let transport_ok = match parts.next() {
        Some(Protocol::Tcp(_)) => true,
        Some(Protocol::Udp(_)) => matches!(parts.next(), Some(Protocol::QuicV1)),
        _ => false,
    };
    if host_ok && transport_ok {
        Ok(())
    } else {
        Err(format!(
            "unsupported address {addr}: expected /ip4|ip6/<host>/tcp/<port> or /ip4|ip6/<host>/udp/<port>/quic-v1"
        ))
    }
}

/// `No such file or directory (os error 2)` without the suffix: the kind is what matters
/// to an operator, the errno is noise.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Turns a TOML error into `file: table.key: message (line L, column C)`.
fn parse_error(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return ConfigError::Parse {
            file: origin.to_string(),
            location: String::new(),
            message,
        };
    };
    let (line, column) = line_column(text, span.start);
    let location = key_at(text, span.start)
        .map(|k| format!("{k}: "))
        .unwrap_or_default();
    ConfigError::Parse {
        file: origin.to_string(),
        location,
        message: format!("{message} (line {line}, column {column})"),
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

/// Best-effort dotted key for the byte `offset` of a TOML document: the table header
/// above it and the key on its line (or the nearest key above, for multi-line arrays).
/// Only used to make messages more helpful; the line and column are always given too.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let mut key: Option<String> = None;
    let mut table: Option<String> = None;
    // Walk backwards from the error's line to the table header.
    for line in text[..line_end].lines().rev() {
        let line = strip_comment(line).trim();
        if let Some(header) = table_header(line) {
            table = Some(header);
            break;
        }
        if key.is_none()
            && let Some((left, _)) = line.split_once('=')
        {
            let left = left.trim().trim_matches(|c| c == '"' || c == '\'');
            if !left.is_empty()
                && left
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                key = Some(left.to_string());
            }
        }
    }
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (Some(t), None) => Some(t),
        (None, Some(k)) => Some(k),
        (None, None) => None,
    }
}

fn table_header(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(inner);
    Some(inner.trim().to_string())
}

fn strip_comment(line: &str) -> &str {
    // Good enough for locating keys: a `#` inside a quoted value only shortens the line
    // we look at, it never invents a key.
    line.split_once('#').map_or(line, |(code, _)| code)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
name = "node-a"
data_dir = "data/node-a"
seed = 7

[network]
listen = ["/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"]
bootstrap = ["/ip4/127.0.0.1/tcp/4002"]
max_peers = 10

[api]
listen = "127.0.0.1:8081"

[discovery]
beacon_ms = 500
expiry_ms = 2000
max_neighbors = 32
"#;

    fn err(text: &str) -> String {
        match NodeConfig::from_toml_str(text, "config/node.toml") {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_full_file_loads_with_every_value() {
        let c = NodeConfig::from_toml_str(GOOD, "good.toml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.name.as_deref(), Some("node-a"));
        assert_eq!(c.data_dir, PathBuf::from("data/node-a"));
        assert_eq!(c.seed, Some(7));
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.bootstrap.len(), 1);
        assert_eq!(c.max_peers, 10);
        assert_eq!(c.api_listen, SocketAddr::from_str("127.0.0.1:8081").ok());
        let s = c.node_settings();
        assert_eq!(s.discovery.beacon_interval_ms, 500);
        assert_eq!(s.discovery.expiry_ms, 2000);
        assert_eq!(s.discovery.max_neighbors, 32);
    }

    #[test]
    fn channel_posts_expire_as_configured_and_within_range() {
        let c = NodeConfig::from_toml_str(
            &format!("{GOOD}\n[crdt]\npost_expiry_ms = 60000\n"),
            "good.toml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let crdt = c.node_settings().crdt.expect("CRDT sync on by default");
        assert_eq!(crdt.policy.post_expiry_ms, 60_000);
        let e = err(&format!("{GOOD}\n[crdt]\npost_expiry_ms = 5\n"));
        assert!(
            e.contains("crdt.post_expiry_ms: must be between 1000"),
            "{e}"
        );
    }

    #[test]
    fn security_admission_is_checked() {
        let id = x0_protocols::Identity::from_seed([1; 32]).id().to_string();
        let closed = format!("{GOOD}\n[security]\nadmission = \"closed\"\ntrusted = [\"{id}\"]\n");
        let c = NodeConfig::from_toml_str(&closed, "c.toml").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(c.node_settings().admission, x0_actors::Admission::Closed(t) if t.len() == 1)
        );
        let e = err(&format!("{GOOD}\n[security]\nadmission = \"closed\"\n"));
        assert!(e.starts_with("config/node.toml: security.trusted: "), "{e}");
        let e = err(&format!("{GOOD}\n[security]\nadmission = \"ajar\"\n"));
        assert!(
            e.starts_with("config/node.toml: security.admission: "),
            "{e}"
        );
        let e = err(&format!(
            "{GOOD}\n[security]\nadmission = \"closed\"\ntrusted = [\"nope\"]\n"
        ));
        assert!(
            e.starts_with("config/node.toml: security.trusted[0]: "),
            "{e}"
        );
    }

    #[test]
    fn only_data_dir_is_required() {
        let c = NodeConfig::from_toml_str("[node]\ndata_dir = \"d\"\n", "min.toml")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.listen.len(), 2);
        assert!(c.bootstrap.is_empty());
        assert_eq!(c.beacon_ms, 1000);
        assert!(c.api_listen.is_some());
        let no_node = err("[network]\nlisten = []\n");
        assert!(
            no_node.starts_with("config/node.toml: ") && no_node.contains("missing field `node`"),
            "{no_node}"
        );
        let missing = err("[node]\nname = \"x\"\n");
        assert!(
            missing.starts_with("config/node.toml: node: missing field `data_dir`"),
            "{missing}"
        );
    }

    #[test]
    fn unknown_key_is_named_with_file_and_table() {
        let e = err(&format!("{GOOD}bogus = 1\n"));
        assert!(e.starts_with("config/node.toml: discovery.bogus: "), "{e}");
        assert!(e.contains("unknown field `bogus`"), "{e}");
        assert!(e.contains("line 19"), "{e}");
        let e = err(&format!("{GOOD}[bogus]\nx = 1\n"));
        assert!(e.contains("unknown field `bogus`"), "{e}");
    }

    #[test]
    fn bad_port_is_named() {
        let e = err(&GOOD.replace("127.0.0.1:8081", "127.0.0.1:99999"));
        assert_eq!(
            e,
            "config/node.toml: api.listen: invalid socket address \"127.0.0.1:99999\""
        );
    }

    #[test]
    fn out_of_range_values_say_the_range_and_the_value() {
        let e = err(&GOOD.replace("beacon_ms = 500", "beacon_ms = 0"));
        assert_eq!(
            e,
            "config/node.toml: discovery.beacon_ms: must be between 50 and 60000, got 0"
        );
        let e = err(&GOOD.replace("expiry_ms = 2000", "expiry_ms = 500"));
        assert!(
            e.starts_with("config/node.toml: discovery.expiry_ms: must be greater"),
            "{e}"
        );
        let e = err(&GOOD.replace("max_peers = 10", "max_peers = 0"));
        assert!(
            e.starts_with("config/node.toml: network.max_peers: must be between 1"),
            "{e}"
        );
    }

    #[test]
    fn bad_addresses_are_named_by_index() {
        let e = err(&GOOD.replace("/ip4/127.0.0.1/tcp/4002", "/ip4/127.0.0.1/tcp/x"));
        assert!(
            e.starts_with("config/node.toml: network.bootstrap[0]: invalid multiaddr"),
            "{e}"
        );
        let e = err(&GOOD.replace("/ip4/127.0.0.1/udp/4001/quic-v1", "/ip4/127.0.0.1/udp/4001"));
        assert!(
            e.starts_with("config/node.toml: network.listen[1]: unsupported address"),
            "{e}"
        );
        let e = err(&GOOD.replace(
            "listen = [\"/ip4/127.0.0.1/tcp/4001\", \"/ip4/127.0.0.1/udp/4001/quic-v1\"]",
            "listen = []",
        ));
        assert!(e.contains("network.listen: at least one address"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = err(&GOOD.replace("max_peers = 10", "max_peers = \"ten\""));
        assert!(
            e.starts_with("config/node.toml: network.max_peers: "),
            "{e}"
        );
    }

    #[test]
    fn missing_file_says_so_with_the_path() {
        let e = NodeConfig::load("config/definitely-missing.toml")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("config/definitely-missing.toml: cannot read: No such file or directory")
        );
    }

    #[test]
    fn relative_data_dir_is_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("n.toml");
        std::fs::write(&path, "[node]\ndata_dir = \"../data/n\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let c = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.data_dir, dir.path().join("../data/n"));
    }
}
