//! `x0tta6bl4 node`: run one node from its config file until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use x0_node::config::NodeConfig;

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Node config file (TOML), e.g. config/node-a.toml
    #[arg(long)]
    config: PathBuf,
}

pub fn run(args: NodeArgs) -> Result<()> {
    let config = NodeConfig::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(x0_node::run_until_signal(config))
}
