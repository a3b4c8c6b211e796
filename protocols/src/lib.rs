//! Pure protocol logic of x0tta6bl4.
//!
//! Everything in this crate is sans-IO: state machines take inputs (a message, the current
//! [`Millis`]) and return outputs; they never sleep, read sockets, read the wall clock or draw
//! unseeded randomness. That is what lets the same code run under libp2p, in the simulator
//! and in unit tests, and what makes a simulator run replayable from its seed.

pub mod channel;
pub mod crdt;
pub mod crypto;
pub mod discovery;
pub mod e2e;
pub mod envelope;
pub mod failure;
pub mod forwarding;
pub mod id;
pub mod identity;
pub mod ledger;
pub mod ratelimit;
pub mod routing;
pub mod time;
mod wire_bytes;

pub use envelope::{Envelope, EnvelopeError, Kind};
pub use id::{NodeId, NodeIdError, ShortId};
pub use identity::{Identity, IdentityError};
pub use time::Millis;
