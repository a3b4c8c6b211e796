//! `x0tta6bl4 node`: run one node from its config file until SIGINT or SIGTERM.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use x0_node::config::NodeConfig;
use x0_protocols::NodeId;

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Node config file (TOML), e.g. config/node-a.toml
    #[arg(long)]
    config: PathBuf,
    /// The ledger's validators, as node ids separated by commas. Replaces
    /// `ledger.validators` from the file, and runs the ledger with default settings when
    /// the file has no `[ledger]` section (`x0tta6bl4 cluster` passes this).
    #[arg(long, value_name = "ID,ID,...", value_delimiter = ',')]
    validators: Option<Vec<String>>,
}

pub fn run(args: NodeArgs) -> Result<()> {
    let mut config = NodeConfig::load(&args.config)?;
    if let Some(texts) = &args.validators {
        let validators = parse_validators(texts)?;
        apply_validators(&mut config, validators, &args.config.display().to_string())?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(x0_node::run_until_signal(config))
}

/// Reads `--validators`: every item a node id, none twice.
pub fn parse_validators(texts: &[String]) -> Result<BTreeSet<NodeId>> {
    let mut ids = BTreeSet::new();
    for (i, text) in texts.iter().enumerate() {
        let id: NodeId = text.trim().parse().with_context(|| {
            format!(
                "--validators: item {} ({:?}) is not a node id",
                i + 1,
                text.trim()
            )
        })?;
        if !ids.insert(id) {
            bail!("--validators: {id} is listed twice");
        }
    }
    Ok(ids)
}

/// Sets the ledger's validators on a loaded config and checks it again, so that a flag
/// that breaks the config (too many validators, a learner that is now also a validator)
/// is refused at start like a bad file would be. `origin` names the config file.
pub fn apply_validators(
    config: &mut NodeConfig,
    validators: BTreeSet<NodeId>,
    origin: &str,
) -> Result<()> {
    config
        .ledger
        .get_or_insert_with(x0_actors::LedgerSettings::default)
        .validators = validators;
    config.validate(&format!("{origin} with --validators"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte: u8) -> String {
        NodeId([byte; 32]).to_string()
    }

    fn config() -> NodeConfig {
        NodeConfig::from_toml_str("[node]\ndata_dir = \"d\"\n", "test.toml").expect("config")
    }

    #[test]
    fn a_bad_id_is_refused_naming_the_flag_and_the_item() {
        let err = parse_validators(&[id(1), "nope".into()])
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("--validators") && err.contains("item 2"),
            "{err}"
        );
    }

    #[test]
    fn a_repeated_id_is_refused() {
        let err = parse_validators(&[id(1), format!(" {}", id(1))])
            .expect_err("refused")
            .to_string();
        assert!(err.contains("listed twice"), "{err}");
    }

    #[test]
    fn validators_create_a_default_ledger_when_the_file_has_none() {
        let mut config = config();
        assert!(config.ledger.is_none());
        let ids = parse_validators(&[id(1)]).expect("parsed");
        apply_validators(&mut config, ids.clone(), "test.toml").expect("valid");
        let ledger = config.ledger.expect("a ledger");
        assert_eq!(ledger.validators, ids);
        assert_eq!(
            ledger.heartbeat_ms,
            x0_actors::LedgerSettings::default().heartbeat_ms
        );
    }

    #[test]
    fn a_flag_that_breaks_the_config_is_refused_naming_the_flag() {
        let mut config = config();
        let err = apply_validators(&mut config, BTreeSet::new(), "test.toml")
            .expect_err("no validators is no ledger")
            .to_string();
        assert!(
            err.contains("test.toml with --validators") && err.contains("ledger.validators"),
            "{err}"
        );
    }
}
