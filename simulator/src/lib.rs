//! x0tta6bl4's in-process simulator.
//!
//! Thousands of nodes, each the same actor tree as a real node, on one tokio runtime whose
//! clock is paused and auto-advanced: virtual time jumps straight to the next timer or
//! delivery, so a minute of mesh life costs only the work the nodes actually do. The
//! network port is implemented by [`net::SimNetwork`] (sparse links, seeded loss and
//! delay). Every random choice derives from the scenario's seed, so a run replays exactly.

pub mod chaos;
pub mod crdt_watch;
pub mod faults;
pub mod ledger_load;
pub mod linearizability;
pub mod measure;
pub mod net;
pub mod report;
pub mod run;
pub mod scenario;
pub mod topology;

pub use net::LinkModel;
pub use report::Report;
pub use run::{Progress, SimError, run};
pub use scenario::{Scenario, ScenarioError};
pub use topology::{Topology, TopologyKind};
