//! What to simulate: a scenario file (TOML) plus command-line overrides.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use x0_protocols::discovery::DiscoveryConfig;
use x0_protocols::failure::FailureConfig;
use x0_protocols::routing::RoutingConfig;

use crate::faults::{ChurnSpec, FaultSpec};
use crate::net::LinkModel;
use crate::topology::TopologyKind;

/// The scenario compiled into the binary: what `simulate` runs with no `--scenario`.
pub const DEFAULT_SCENARIO: &str = include_str!("../../config/scenarios/default.toml");

/// Largest run accepted; beyond this one machine's memory is the limit, not the code.
pub const MAX_NODES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{origin}: cannot read: {source}")]
    Read {
        origin: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        origin: String,
        key: String,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub nodes: usize,
    #[serde(deserialize_with = "duration_from_str")]
    pub duration: Duration,
    pub seed: u64,
    pub topology: TopologyKind,
    /// Target mean degree for `random-geometric`.
    #[serde(default = "default_mean_degree")]
    pub mean_degree: f64,
    #[serde(default)]
    pub link: LinkModel,
    #[serde(default)]
    pub discovery: DiscoverySection,
    #[serde(default)]
    pub routing: RoutingSection,
    #[serde(default)]
    pub failure_detection: FailureSection,
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    pub churn: Option<ChurnSpec>,
    pub traffic: Option<TrafficSection>,
    #[serde(default)]
    pub ledger: LedgerSection,
    #[serde(default)]
    pub crdt: CrdtSection,
    #[serde(default)]
    pub security: SecuritySection,
}

/// `[security]`: whether links are sealed in the nodes' post-quantum sessions (on, as
/// in a real node; `seal_links = false` measures what sealing costs).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    pub seal_links: bool,
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection { seal_links: true }
    }
}

/// `[crdt]`: CRDT sync (the node registry, and a workload of application writes at
/// random live nodes to time convergence). On unless `enabled = false`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrdtSection {
    pub enabled: bool,
    /// Application writes per second over the whole mesh (to 100 keys).
    pub writes_per_s: f64,
    /// When the write workload begins.
    #[serde(deserialize_with = "duration_from_str")]
    pub start: Duration,
    pub record_expiry_ms: u64,
    /// `None`: a third of `record_expiry_ms`.
    pub refresh_ms: Option<u64>,
    pub announce_ms: u64,
    pub anti_entropy_ms: u64,
    /// Neighbors a registry record is pushed to outright (see `SyncSettings`).
    pub large_fanout: usize,
}

impl Default for CrdtSection {
    fn default() -> Self {
        let settings = x0_actors::CrdtSettings::default();
        CrdtSection {
            enabled: true,
            writes_per_s: 2.0,
            start: Duration::from_secs(20),
            record_expiry_ms: settings.policy.record_expiry_ms,
            refresh_ms: None,
            announce_ms: settings.sync.announce_ms,
            anti_entropy_ms: settings.sync.anti_entropy_ms,
            large_fanout: settings.sync.large_fanout,
        }
    }
}

/// `[ledger]`: the Raft ledger among validators drawn from the seed, with a workload of
/// clients appending and reading through random live nodes. On whenever routing is (its
/// RPCs cross several hops), unless `enabled = false`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSection {
    /// `None`: follow `[routing] enabled`.
    pub enabled: Option<bool>,
    pub validators: usize,
    /// Appends per second over the whole mesh.
    pub writes_per_s: f64,
    /// Linearizable reads per second over the whole mesh.
    pub reads_per_s: f64,
    /// When the workload begins (give routing and the first election time).
    #[serde(deserialize_with = "duration_from_str")]
    pub start: Duration,
    /// A client gives up on an operation after this long (its outcome is then unknown).
    pub client_timeout_ms: u64,
    /// Applied entries between Raft snapshots.
    pub snapshot_every: u64,
    /// Raft heartbeat, which is also openraft's AppendEntries timeout: it must exceed
    /// the multi-hop round trip between validators (a few hundred ms in a big mesh).
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl Default for LedgerSection {
    fn default() -> Self {
        LedgerSection {
            enabled: None,
            validators: 5,
            writes_per_s: 5.0,
            reads_per_s: 5.0,
            start: Duration::from_secs(15),
            client_timeout_ms: 5000,
            snapshot_every: 200,
            heartbeat_ms: 500,
            election_timeout_min_ms: 1500,
            election_timeout_max_ms: 3000,
        }
    }
}

/// `[traffic]`: application messages between random pairs of nodes, to measure delivery.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSection {
    /// Messages per second, over the whole mesh.
    pub rate_per_s: f64,
    /// When sending begins (give routing time to converge first).
    #[serde(
        default = "default_traffic_start",
        deserialize_with = "duration_from_str"
    )]
    pub start: Duration,
    #[serde(default = "default_payload_bytes")]
    pub payload_bytes: usize,
}

fn default_traffic_start() -> Duration {
    Duration::from_secs(20)
}

fn default_payload_bytes() -> usize {
    64
}

/// Largest traffic payload: enough to model application messages, small enough that a
/// typo does not turn a benchmark into a bandwidth test.
pub const MAX_TRAFFIC_PAYLOAD: usize = 64 * 1024;

/// Routing in the simulation. Off by default for now: at 1000 nodes its full-table
/// updates cost more than the 10x-real-time budget allows (see BENCHMARKS.md).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    pub enabled: bool,
}

/// `[failure_detection]`: SWIM/Lifeguard probing of quiet neighbors (on by default).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailureSection {
    pub enabled: bool,
    pub silence_ms: u64,
    pub probe_timeout_ms: u64,
    pub suspicion_min_ms: u64,
    pub suspicion_max_ms: u64,
}

impl Default for FailureSection {
    fn default() -> Self {
        let f = FailureConfig::default();
        FailureSection {
            enabled: true,
            silence_ms: f.silence_ms,
            probe_timeout_ms: f.probe_timeout_ms,
            suspicion_min_ms: f.suspicion_min_ms,
            suspicion_max_ms: f.suspicion_max_ms,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySection {
    pub beacon_ms: u64,
    pub expiry_ms: u64,
}

impl Default for DiscoverySection {
    fn default() -> Self {
        let d = DiscoveryConfig::default();
        DiscoverySection {
            beacon_ms: d.beacon_interval_ms,
            expiry_ms: d.expiry_ms,
        }
    }
}

fn default_mean_degree() -> f64 {
    8.0
}

fn duration_from_str<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Parses `250ms`, `60s`, `2m`, `1h` (a whole number and a unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (write e.g. 60s, 500ms, 2m)"))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let ms = match unit {
        "ms" => Some(value),
        "s" => value.checked_mul(1000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

impl Scenario {
    pub fn default_scenario() -> Scenario {
        // The embedded file is tested to parse; failing here is a build defect.
        Scenario::from_toml_str(DEFAULT_SCENARIO, "<embedded default scenario>")
            .unwrap_or_else(|e| panic!("embedded default scenario is invalid: {e}"))
    }

    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            origin: origin.clone(),
            source,
        })?;
        Scenario::from_toml_str(&text, &origin)
    }

    pub fn from_toml_str(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        scenario.validate(origin)?;
        Ok(scenario)
    }

    /// Refuses values no run can make sense of, naming the key.
    pub fn validate(&self, origin: &str) -> Result<(), ScenarioError> {
        let invalid = |key: &str, reason: String| ScenarioError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            reason,
        };
        if !(1..=MAX_NODES).contains(&self.nodes) {
            return Err(invalid(
                "nodes",
                format!("must be between 1 and {MAX_NODES}, got {}", self.nodes),
            ));
        }
        if self.duration.is_zero() {
            return Err(invalid("duration", "must be longer than 0".into()));
        }
        if !(self.mean_degree.is_finite() && self.mean_degree > 0.0) {
            return Err(invalid(
                "mean_degree",
                format!("must be positive, got {}", self.mean_degree),
            ));
        }
        if !(0.0..=1.0).contains(&self.link.loss) {
            return Err(invalid(
                "link.loss",
                format!("must be between 0 and 1, got {}", self.link.loss),
            ));
        }
        if !(self.link.latency_ms.is_finite() && self.link.latency_ms >= 0.0) {
            return Err(invalid(
                "link.latency_ms",
                format!("must be 0 or more, got {}", self.link.latency_ms),
            ));
        }
        if !(self.link.jitter_ms.is_finite() && self.link.jitter_ms >= 0.0) {
            return Err(invalid(
                "link.jitter_ms",
                format!("must be 0 or more, got {}", self.link.jitter_ms),
            ));
        }
        if !(50..=60_000).contains(&self.discovery.beacon_ms) {
            return Err(invalid(
                "discovery.beacon_ms",
                format!(
                    "must be between 50 and 60000, got {}",
                    self.discovery.beacon_ms
                ),
            ));
        }
        if self.discovery.expiry_ms <= self.discovery.beacon_ms {
            return Err(invalid(
                "discovery.expiry_ms",
                format!(
                    "must be longer than discovery.beacon_ms ({}), got {}",
                    self.discovery.beacon_ms, self.discovery.expiry_ms
                ),
            ));
        }
        let f = &self.failure_detection;
        if f.silence_ms == 0 || f.probe_timeout_ms == 0 || f.suspicion_min_ms == 0 {
            return Err(invalid(
                "failure_detection",
                "silence_ms, probe_timeout_ms and suspicion_min_ms must be more than 0".into(),
            ));
        }
        if f.suspicion_max_ms < f.suspicion_min_ms {
            return Err(invalid(
                "failure_detection.suspicion_max_ms",
                format!(
                    "must be at least suspicion_min_ms ({}), got {}",
                    f.suspicion_min_ms, f.suspicion_max_ms
                ),
            ));
        }
        for (i, fault) in self.faults.iter().enumerate() {
            fault
                .validate(self.nodes, self.duration)
                .map_err(|(key, reason)| invalid(&format!("faults[{i}].{key}"), reason))?;
        }
        if let Some(churn) = &self.churn {
            churn
                .validate()
                .map_err(|(key, reason)| invalid(key, reason))?;
        }
        if let Some(traffic) = &self.traffic {
            if !(traffic.rate_per_s.is_finite()
                && traffic.rate_per_s > 0.0
                && traffic.rate_per_s <= 100_000.0)
            {
                return Err(invalid(
                    "traffic.rate_per_s",
                    format!(
                        "must be more than 0 and at most 100000, got {}",
                        traffic.rate_per_s
                    ),
                ));
            }
            if !(1..=MAX_TRAFFIC_PAYLOAD).contains(&traffic.payload_bytes) {
                return Err(invalid(
                    "traffic.payload_bytes",
                    format!(
                        "must be between 1 and {MAX_TRAFFIC_PAYLOAD}, got {}",
                        traffic.payload_bytes
                    ),
                ));
            }
        }
        let l = &self.ledger;
        if !(1..=9).contains(&l.validators) {
            return Err(invalid(
                "ledger.validators",
                format!("must be between 1 and 9, got {}", l.validators),
            ));
        }
        for (key, rate) in [
            ("ledger.writes_per_s", l.writes_per_s),
            ("ledger.reads_per_s", l.reads_per_s),
        ] {
            if !(rate.is_finite() && (0.0..=10_000.0).contains(&rate)) {
                return Err(invalid(
                    key,
                    format!("must be between 0 and 10000, got {rate}"),
                ));
            }
        }
        if !(100..=600_000).contains(&l.client_timeout_ms) {
            return Err(invalid(
                "ledger.client_timeout_ms",
                format!(
                    "must be between 100 and 600000, got {}",
                    l.client_timeout_ms
                ),
            ));
        }
        if !(10..=10_000_000).contains(&l.snapshot_every) {
            return Err(invalid(
                "ledger.snapshot_every",
                format!("must be between 10 and 10000000, got {}", l.snapshot_every),
            ));
        }
        if !(10..=10_000).contains(&l.heartbeat_ms)
            || l.election_timeout_min_ms <= l.heartbeat_ms
            || l.election_timeout_max_ms <= l.election_timeout_min_ms
        {
            return Err(invalid(
                "ledger.heartbeat_ms",
                format!(
                    "need 10 <= heartbeat_ms ({}) < election_timeout_min_ms ({}) < election_timeout_max_ms ({})",
                    l.heartbeat_ms, l.election_timeout_min_ms, l.election_timeout_max_ms
                ),
            ));
        }
        let c = &self.crdt;
        if !(c.writes_per_s.is_finite() && (0.0..=10_000.0).contains(&c.writes_per_s)) {
            return Err(invalid(
                "crdt.writes_per_s",
                format!("must be between 0 and 10000, got {}", c.writes_per_s),
            ));
        }
        if !(1_000..=30 * 86_400_000).contains(&c.record_expiry_ms) {
            return Err(invalid(
                "crdt.record_expiry_ms",
                format!(
                    "must be between 1000 and 2592000000, got {}",
                    c.record_expiry_ms
                ),
            ));
        }
        if let Some(refresh) = c.refresh_ms
            && !(100..c.record_expiry_ms).contains(&refresh)
        {
            return Err(invalid(
                "crdt.refresh_ms",
                format!(
                    "must be at least 100 and below crdt.record_expiry_ms ({}), got {refresh}",
                    c.record_expiry_ms
                ),
            ));
        }
        if !(1..=10_000).contains(&c.announce_ms) {
            return Err(invalid(
                "crdt.announce_ms",
                format!("must be between 1 and 10000, got {}", c.announce_ms),
            ));
        }
        if c.large_fanout > 64 {
            return Err(invalid(
                "crdt.large_fanout",
                format!("must be at most 64, got {}", c.large_fanout),
            ));
        }
        if !(50..=600_000).contains(&c.anti_entropy_ms) {
            return Err(invalid(
                "crdt.anti_entropy_ms",
                format!("must be between 50 and 600000, got {}", c.anti_entropy_ms),
            ));
        }
        if l.enabled == Some(true) && !self.routing.enabled {
            return Err(invalid(
                "ledger",
                "needs routing (validators talk across several hops): set [routing] enabled = true (or pass --routing)".into(),
            ));
        }
        let needs_routing = self.traffic.is_some();
        if needs_routing && !self.routing.enabled {
            return Err(invalid(
                "traffic",
                "needs routing: set [routing] enabled = true (or pass --routing)".into(),
            ));
        }
        Ok(())
    }

    /// Whether this run has a ledger.
    pub fn ledger_enabled(&self) -> bool {
        self.ledger.enabled.unwrap_or(self.routing.enabled) && self.routing.enabled
    }

    pub fn crdt_settings(&self) -> Option<x0_actors::CrdtSettings> {
        let c = &self.crdt;
        c.enabled.then(|| {
            let mut settings = x0_actors::CrdtSettings::default();
            settings.set_record_expiry(c.record_expiry_ms);
            settings.refresh_ms = c.refresh_ms.unwrap_or(settings.refresh_ms);
            settings.sync.announce_ms = c.announce_ms;
            settings.sync.anti_entropy_ms = c.anti_entropy_ms;
            settings.sync.large_fanout = c.large_fanout;
            settings
        })
    }

    /// When the run's load begins: its traffic, churn or first fault.
    pub fn load_start(&self) -> Option<Duration> {
        let traffic = self.traffic.as_ref().map(|t| t.start);
        let churn = self.churn.as_ref().map(|c| c.start);
        let faults = self.faults.iter().map(|f| f.at);
        [traffic, churn].into_iter().flatten().chain(faults).min()
    }

    pub fn routing_config(&self) -> Option<RoutingConfig> {
        self.routing.enabled.then(RoutingConfig::default)
    }

    pub fn failure_config(&self) -> Option<FailureConfig> {
        let f = &self.failure_detection;
        f.enabled.then(|| FailureConfig {
            silence_ms: f.silence_ms,
            probe_timeout_ms: f.probe_timeout_ms,
            suspicion_min_ms: f.suspicion_min_ms,
            suspicion_max_ms: f.suspicion_max_ms,
            ..FailureConfig::default()
        })
    }

    pub fn discovery_config(&self) -> DiscoveryConfig {
        DiscoveryConfig {
            beacon_interval_ms: self.discovery.beacon_ms,
            expiry_ms: self.discovery.expiry_ms,
            ..DiscoveryConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let s = Scenario::default_scenario();
        assert_eq!(s.nodes, 1000);
        assert_eq!(s.topology, TopologyKind::RandomGeometric);
    }

    #[test]
    fn durations_parse_and_bad_ones_say_why() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("60").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let base = DEFAULT_SCENARIO;
        let cases = [
            ("nodes = 1000", "nodes = 0", "nodes"),
            ("loss = 0.01", "loss = 1.5", "link.loss"),
            ("beacon_ms = 1000", "beacon_ms = 0", "discovery.beacon_ms"),
        ];
        for (from, to, key) in cases {
            assert!(base.contains(from), "default scenario lacks {from:?}");
            let err = Scenario::from_toml_str(&base.replace(from, to), "s.toml")
                .expect_err("must be refused")
                .to_string();
            assert!(err.starts_with(&format!("s.toml: {key}: ")), "{err}");
        }
        let err = Scenario::from_toml_str(&format!("{base}\nbogus = 1\n"), "s.toml")
            .expect_err("unknown key refused")
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
