//! Faults a scenario injects, as written in its TOML, and their validation.
//!
//! A scenario lists `[[faults]]` tables, each with a `kind` and the time it strikes
//! (`at`), optionally repeating (`every`) until `until`, plus a `[churn]` table for nodes
//! leaving and rejoining at a steady rate. Which node or link a fault hits is drawn at the
//! moment it strikes from the run's seeded RNG, among what is up then, so a fault never
//! "crashes" a node that is already down and every run replays exactly.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::scenario::parse_duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Nodes stop (their actors are shut down); with `restart_after` they come back with
    /// the same identity and empty tables.
    Crash,
    /// Links stop carrying anything, in both directions; `restore_after` brings them back.
    LinkCut,
    /// The mesh splits into two sides, `fraction` of the nodes (a connected region) on
    /// one; `heal_after` joins them again.
    Partition,
    /// Extra loss on `fraction` of the links for `duration`.
    LossBurst,
    /// Extra one-way latency on `fraction` of the links for `duration`.
    LatencySpike,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::LinkCut => "link-cut",
            FaultKind::Partition => "partition",
            FaultKind::LossBurst => "loss-burst",
            FaultKind::LatencySpike => "latency-spike",
        }
    }
}

/// One `[[faults]]` table. Fields that do not apply to its kind are refused.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub kind: FaultKind,
    #[serde(deserialize_with = "duration")]
    pub at: Duration,
    /// Strike again every this long, until `until` or the end of the run.
    #[serde(default, deserialize_with = "optional_duration")]
    pub every: Option<Duration>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub until: Option<Duration>,
    /// crash: how many nodes.
    pub nodes: Option<usize>,
    /// crash: pick among the ledger's validators only (to crash leaders often).
    pub validators: Option<bool>,
    /// link-cut: how many links.
    pub links: Option<usize>,
    /// partition: share of nodes on the smaller side; loss-burst, latency-spike: share of
    /// links affected (default all).
    pub fraction: Option<f64>,
    /// crash: come back after this long.
    #[serde(default, deserialize_with = "optional_duration")]
    pub restart_after: Option<Duration>,
    /// link-cut: restore after this long.
    #[serde(default, deserialize_with = "optional_duration")]
    pub restore_after: Option<Duration>,
    /// partition: heal after this long.
    #[serde(default, deserialize_with = "optional_duration")]
    pub heal_after: Option<Duration>,
    /// loss-burst, latency-spike: how long it lasts.
    #[serde(default, deserialize_with = "optional_duration")]
    pub duration: Option<Duration>,
    /// loss-burst: the extra loss probability.
    pub loss: Option<f64>,
    /// latency-spike: the extra one-way latency.
    pub extra_ms: Option<f64>,
}

/// `[churn]`: a steady rate of nodes leaving and coming back.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChurnSpec {
    /// Share of all nodes that leave per minute (0.1 = 10% per minute).
    pub rate_per_minute: f64,
    /// How long a node that left stays away before it rejoins.
    #[serde(deserialize_with = "duration")]
    pub downtime: Duration,
    /// When churn begins (give the mesh time to form first).
    #[serde(default = "default_start", deserialize_with = "duration")]
    pub start: Duration,
}

fn default_start() -> Duration {
    Duration::from_secs(20)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A fault's problem, as `(key, reason)`; the caller adds the file and the index.
type Problem = (&'static str, String);

impl FaultSpec {
    /// Checks that the fields present are the ones this kind uses, and their values.
    pub fn validate(&self, nodes: usize, run: Duration) -> Result<(), Problem> {
        let allowed: &[&str] = match self.kind {
            FaultKind::Crash => &["nodes", "restart_after", "validators"],
            FaultKind::LinkCut => &["links", "restore_after"],
            FaultKind::Partition => &["fraction", "heal_after"],
            FaultKind::LossBurst => &["fraction", "duration", "loss"],
            FaultKind::LatencySpike => &["fraction", "duration", "extra_ms"],
        };
        let present = [
            ("nodes", self.nodes.is_some()),
            ("validators", self.validators.is_some()),
            ("links", self.links.is_some()),
            ("fraction", self.fraction.is_some()),
            ("restart_after", self.restart_after.is_some()),
            ("restore_after", self.restore_after.is_some()),
            ("heal_after", self.heal_after.is_some()),
            ("duration", self.duration.is_some()),
            ("loss", self.loss.is_some()),
            ("extra_ms", self.extra_ms.is_some()),
        ];
        for (key, is_set) in present {
            if is_set && !allowed.contains(&key) {
                return Err((
                    "kind",
                    format!("{key} does not apply to a {} fault", self.kind.name()),
                ));
            }
        }
        if self.at >= run {
            return Err((
                "at",
                format!("{:?} is not before the end of the run ({run:?})", self.at),
            ));
        }
        if let Some(every) = self.every
            && every.is_zero()
        {
            return Err(("every", "must be longer than 0".into()));
        }
        if let Some(until) = self.until
            && until < self.at
        {
            return Err(("until", "must not be before at".into()));
        }
        match self.kind {
            FaultKind::Crash => {
                let count = self.nodes.unwrap_or(1);
                if count == 0 || count >= nodes {
                    return Err((
                        "nodes",
                        format!(
                            "must be between 1 and {} (fewer than all nodes), got {count}",
                            nodes.saturating_sub(1)
                        ),
                    ));
                }
            }
            FaultKind::LinkCut => {
                if self.links == Some(0) {
                    return Err(("links", "must be at least 1".into()));
                }
            }
            FaultKind::Partition => {
                let fraction = self
                    .fraction
                    .ok_or(("fraction", "is required".to_string()))?;
                if !(fraction > 0.0 && fraction <= 0.5) {
                    return Err((
                        "fraction",
                        format!(
                            "the smaller side must hold more than 0 and at most 0.5 of the nodes, got {fraction}"
                        ),
                    ));
                }
            }
            FaultKind::LossBurst | FaultKind::LatencySpike => {
                if self.duration.is_none_or(|d| d.is_zero()) {
                    return Err(("duration", "is required and must be longer than 0".into()));
                }
                if let Some(fraction) = self.fraction
                    && !(fraction > 0.0 && fraction <= 1.0)
                {
                    return Err((
                        "fraction",
                        format!("must be more than 0 and at most 1, got {fraction}"),
                    ));
                }
                if self.kind == FaultKind::LossBurst {
                    let loss = self.loss.ok_or(("loss", "is required".to_string()))?;
                    if !(loss > 0.0 && loss <= 1.0) {
                        return Err((
                            "loss",
                            format!("must be more than 0 and at most 1, got {loss}"),
                        ));
                    }
                } else {
                    let extra = self
                        .extra_ms
                        .ok_or(("extra_ms", "is required".to_string()))?;
                    if !(extra.is_finite() && extra > 0.0) {
                        return Err(("extra_ms", format!("must be positive, got {extra}")));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every time this fault strikes within a run of length `run`.
    pub fn strikes(&self, run: Duration) -> Vec<Duration> {
        let end = self.until.map_or(run, |u| u.min(run));
        match self.every {
            None => vec![self.at],
            Some(every) => {
                let mut times = Vec::new();
                let mut at = self.at;
                while at <= end && at < run {
                    times.push(at);
                    at += every;
                }
                times
            }
        }
    }
}

impl ChurnSpec {
    pub fn validate(&self) -> Result<(), Problem> {
        if !(self.rate_per_minute.is_finite()
            && self.rate_per_minute > 0.0
            && self.rate_per_minute <= 1.0)
        {
            return Err((
                "churn.rate_per_minute",
                format!(
                    "must be more than 0 and at most 1 (a share of the nodes), got {}",
                    self.rate_per_minute
                ),
            ));
        }
        if self.downtime.is_zero() {
            return Err(("churn.downtime", "must be longer than 0".into()));
        }
        Ok(())
    }

    /// Time between two departures in a mesh of `nodes`.
    pub fn interval(&self, nodes: usize) -> Duration {
        let per_minute = self.rate_per_minute * nodes as f64;
        Duration::from_secs_f64(60.0 / per_minute.max(1e-9))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FaultSpec {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn repeating_faults_strike_until_their_end() {
        let f =
            parse("kind = \"link-cut\"\nat = \"10s\"\nevery = \"5s\"\nuntil = \"20s\"\nlinks = 2");
        let secs: Vec<u64> = f
            .strikes(Duration::from_secs(60))
            .iter()
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(secs, vec![10, 15, 20]);
        let once = parse("kind = \"crash\"\nat = \"10s\"");
        assert_eq!(
            once.strikes(Duration::from_secs(60)),
            vec![Duration::from_secs(10)]
        );
    }

    #[test]
    fn fields_of_another_kind_and_impossible_values_are_refused() {
        let run = Duration::from_secs(60);
        let wrong_field = parse("kind = \"crash\"\nat = \"10s\"\nloss = 0.5");
        assert!(
            wrong_field
                .validate(100, run)
                .unwrap_err()
                .1
                .contains("loss does not apply")
        );
        let too_late = parse("kind = \"crash\"\nat = \"90s\"");
        assert_eq!(too_late.validate(100, run).unwrap_err().0, "at");
        let all_nodes = parse("kind = \"crash\"\nat = \"10s\"\nnodes = 100");
        assert_eq!(all_nodes.validate(100, run).unwrap_err().0, "nodes");
        let half_plus = parse("kind = \"partition\"\nat = \"10s\"\nfraction = 0.7");
        assert_eq!(half_plus.validate(100, run).unwrap_err().0, "fraction");
        let no_loss = parse("kind = \"loss-burst\"\nat = \"10s\"\nduration = \"5s\"");
        assert_eq!(no_loss.validate(100, run).unwrap_err().0, "loss");
        let ok = parse("kind = \"latency-spike\"\nat = \"10s\"\nduration = \"5s\"\nextra_ms = 200");
        assert_eq!(ok.validate(100, run), Ok(()));
        assert!(toml::from_str::<FaultSpec>("kind = \"meteor\"\nat = \"1s\"").is_err());
        assert!(toml::from_str::<FaultSpec>("kind = \"crash\"\nat = \"1s\"\nbogus = 1").is_err());
    }

    #[test]
    fn churn_rate_sets_the_departure_interval() {
        let churn: ChurnSpec =
            toml::from_str("rate_per_minute = 0.1\ndowntime = \"30s\"").expect("parses");
        assert_eq!(churn.validate(), Ok(()));
        assert_eq!(churn.interval(1000), Duration::from_millis(600));
        let bad: ChurnSpec =
            toml::from_str("rate_per_minute = 2.0\ndowntime = \"30s\"").expect("parses");
        assert_eq!(bad.validate().unwrap_err().0, "churn.rate_per_minute");
    }
}
