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
    /// Run a node from its config file until SIGINT or SIGTERM.
    Node(commands::node::NodeArgs),
    /// Start every node of a cluster file as its own process.
    Cluster(commands::cluster::ClusterArgs),
    /// Print the neighbor table of a running node.
    Peers(commands::peers::PeersArgs),
    /// Show every node's signed record (id, addresses, keys, roles) as a node's CRDT replica has it.
    Registry(commands::registry::RegistryArgs),
    /// Print the routing table of a running node.
    Routes(commands::routes::RoutesArgs),
    /// The sealed messages a node sent: created, sent, delivered, read, failed, expired.
    Outbox(commands::outbox::OutboxArgs),
    /// Send a message through a running node to any node of the mesh.
    Send(commands::send::SendArgs),
    /// Print the messages a running node received.
    Inbox(commands::inbox::InboxArgs),
    /// Create a node identity (Ed25519 + ML-KEM-768) in a directory.
    Keygen(commands::keygen::KeygenArgs),
    /// Read and write a running node's Raft ledger: status, append, entries, members.
    Ledger(commands::ledger::LedgerArgs),
    /// Channels: groups whose posts only their members can read.
    Channel(commands::channel::ChannelArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // A node's log is its operator's view; a simulation's thousand nodes would drown the
    // summary, so there only warnings show unless RUST_LOG says otherwise.
    let default_level = match cli.command {
        // openraft logs every RPC to a crashed validator as an error; faults are the
        // point of a simulation, and the report counts what they did.
        Command::Simulate(_) => "warn,openraft=off",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Simulate(args) => commands::simulate::run(args),
        Command::Node(args) => commands::node::run(args),
        Command::Cluster(args) => commands::cluster::run(args),
        Command::Peers(args) => commands::peers::run(args),
        Command::Registry(args) => commands::registry::run(args),
        Command::Keygen(args) => commands::keygen::run(args),
        Command::Routes(args) => commands::routes::run(args),
        Command::Outbox(args) => commands::outbox::run(args),
        Command::Send(args) => commands::send::run(args),
        Command::Inbox(args) => commands::inbox::run(args),
        Command::Ledger(args) => commands::ledger::run(args),
        Command::Channel(args) => commands::channel::run(args),
    }
}
