//! The `x0tta6bl4` command: run a node, simulate a mesh, inspect a running node.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod commands;

#[derive(Debug, Parser)]
#[command(
    name = "x0tta6bl4",
    version,
    about = "Self-healing, post-quantum-secure mesh network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate a mesh of many nodes on virtual time and report what happened.
    Simulate(commands::simulate::SimulateArgs),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Simulate(args) => commands::simulate::run(args),
    }
}
