//! x0tta6bl4: a self-healing, post-quantum-secure mesh network.
//!
//! This crate is the front door: it re-exports the pieces an embedding program needs and
//! holds the `x0tta6bl4` command-line tool. The work happens in the member crates:
//! `x0-protocols` (sans-IO protocol logic), `x0-actors` (one actor per subsystem),
//! `x0-node` (libp2p, HTTP API, config, keys) and `x0-simulator` (thousands of nodes on
//! virtual time).

pub mod cluster;

pub use x0_actors as actors;
pub use x0_node as node;
pub use x0_protocols as protocols;
pub use x0_simulator as simulator;

pub use x0_protocols::NodeId;
