//! The ledger's replicated state machine: what a committed entry means.
//!
//! Raft (openraft, in the `Ledger` actor) decides the order of commands; this module
//! decides what applying them does, and nothing else. It must be deterministic, since every
//! validator applies the same commands in the same order and must reach the same state:
//! no clock, no randomness, no hash-ordered maps.
//!
//! The state is the *record*: every accepted entry with its 1-based position, readable
//! from any position on. Beside it, derived views (current members, configuration in force)
//! and the idempotency table that makes a client's retry of the same request id a no-op
//! that returns the original position.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// Longest client request id accepted.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Largest opaque body of one entry. Raft ships entries in batches inside one routed
/// message, so entries stay small; large blobs belong elsewhere, referenced by hash.
pub const MAX_ENTRY_BYTES: usize = 2048;
/// Request ids remembered for deduplication, oldest forgotten first. A client retrying
/// within this many later writes gets its original answer.
pub const DEDUP_WINDOW: usize = 65_536;

/// What an entry says. Typed where the mesh itself reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A node admitted to or removed from the mesh's membership.
    Membership { node: NodeId, change: MemberChange },
    /// A DAO proposal or ballot, encoded by the DAO subsystem.
    Dao { body: Vec<u8> },
    /// A configuration value put in force mesh-wide.
    Config { key: String, value: String },
    /// Opaque bytes of an embedding program.
    App { body: Vec<u8> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    Admit,
    Remove,
}

/// A client's write, as Raft replicates it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The node that accepted the write from its client.
    pub submitted_by: NodeId,
    /// Client-chosen id that makes retries idempotent; `None` for fire-once writes.
    pub request_id: Option<String>,
    pub entry: EntryKind,
}

/// One entry of the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// 1-based position in the record.
    pub position: u64,
    /// Raft log index and term it was committed at.
    pub log_index: u64,
    pub term: u64,
    pub submitted_by: NodeId,
    pub request_id: Option<String>,
    pub entry: EntryKind,
}

/// What applying a command returned to its client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Applied {
    /// Position of the entry in the record (0 for Raft's own entries).
    pub position: u64,
    /// True when the request id had been applied before: nothing was added, `position`
    /// is the original one.
    pub duplicate: bool,
}

/// Why a command is refused before it is proposed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("request id of {0} bytes exceeds the limit of {MAX_REQUEST_ID_BYTES}")]
    RequestIdTooLong(usize),
    #[error("request id is empty")]
    EmptyRequestId,
    #[error("entry of {0} bytes exceeds the limit of {MAX_ENTRY_BYTES}")]
    EntryTooLarge(usize),
    #[error("config key is empty")]
    EmptyConfigKey,
}

impl Command {
    /// Checks limits, so nothing oversized reaches the replicated log.
    pub fn validate(&self) -> Result<(), CommandError> {
        if let Some(id) = &self.request_id {
            if id.is_empty() {
                return Err(CommandError::EmptyRequestId);
            }
            if id.len() > MAX_REQUEST_ID_BYTES {
                return Err(CommandError::RequestIdTooLong(id.len()));
            }
        }
        let size = match &self.entry {
            EntryKind::Membership { .. } => 0,
            EntryKind::Dao { body } | EntryKind::App { body } => body.len(),
            EntryKind::Config { key, value } => {
                if key.is_empty() {
                    return Err(CommandError::EmptyConfigKey);
                }
                key.len() + value.len()
            }
        };
        if size > MAX_ENTRY_BYTES {
            return Err(CommandError::EntryTooLarge(size));
        }
        Ok(())
    }
}

/// The applied state. Serializable whole: that is the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    records: Vec<Record>,
    members: BTreeSet<NodeId>,
    config: BTreeMap<String, String>,
    /// Request id → position, with insertion order to forget the oldest.
    dedup: BTreeMap<String, u64>,
    dedup_order: VecDeque<String>,
}

impl LedgerState {
    /// Applies a committed command at Raft `(log_index, term)`.
    pub fn apply(&mut self, log_index: u64, term: u64, command: Command) -> Applied {
        if let Some(id) = &command.request_id
            && let Some(&position) = self.dedup.get(id)
        {
            return Applied {
                position,
                duplicate: true,
            };
        }
        let position = self.records.len() as u64 + 1;
        match &command.entry {
            EntryKind::Membership { node, change } => match change {
                MemberChange::Admit => {
                    self.members.insert(*node);
                }
                MemberChange::Remove => {
                    self.members.remove(node);
                }
            },
            EntryKind::Config { key, value } => {
                self.config.insert(key.clone(), value.clone());
            }
            EntryKind::Dao { .. } | EntryKind::App { .. } => {}
        }
        if let Some(id) = &command.request_id {
            self.dedup.insert(id.clone(), position);
            self.dedup_order.push_back(id.clone());
            if self.dedup_order.len() > DEDUP_WINDOW
                && let Some(old) = self.dedup_order.pop_front()
            {
                self.dedup.remove(&old);
            }
        }
        self.records.push(Record {
            position,
            log_index,
            term,
            submitted_by: command.submitted_by,
            request_id: command.request_id,
            entry: command.entry,
        });
        Applied {
            position,
            duplicate: false,
        }
    }

    /// Number of entries in the record.
    pub fn len(&self) -> u64 {
        self.records.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Entries from 1-based position `from` on, at most `limit` of them.
    pub fn read(&self, from: u64, limit: usize) -> &[Record] {
        let start = (from.max(1) - 1).min(self.len()) as usize;
        let end = start.saturating_add(limit).min(self.records.len());
        &self.records[start..end]
    }

    pub fn members(&self) -> &BTreeSet<NodeId> {
        &self.members
    }

    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain owned data into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn app(request_id: Option<&str>, byte: u8) -> Command {
        Command {
            submitted_by: NodeId([1; 32]),
            request_id: request_id.map(str::to_string),
            entry: EntryKind::App { body: vec![byte] },
        }
    }

    #[test]
    fn positions_count_from_one_and_reads_start_anywhere() {
        let mut state = LedgerState::default();
        for i in 0..5 {
            assert_eq!(state.apply(10 + i, 1, app(None, i as u8)).position, i + 1);
        }
        let read: Vec<u64> = state.read(3, 10).iter().map(|r| r.position).collect();
        assert_eq!(read, vec![3, 4, 5]);
        assert!(state.read(6, 10).is_empty());
        assert_eq!(state.read(0, 2).len(), 2, "position 0 reads from the start");
    }

    #[test]
    fn a_retried_request_id_is_applied_once_and_answers_the_first_position() {
        let mut state = LedgerState::default();
        state.apply(1, 1, app(None, 0));
        let first = state.apply(2, 1, app(Some("r-1"), 1));
        let retry = state.apply(3, 2, app(Some("r-1"), 1));
        assert_eq!(first.position, 2);
        assert_eq!(
            retry,
            Applied {
                position: 2,
                duplicate: true
            }
        );
        assert_eq!(state.len(), 2);
    }

    #[test]
    fn membership_and_config_entries_update_their_views() {
        let mut state = LedgerState::default();
        let node = NodeId([9; 32]);
        let cmd = |entry| Command {
            submitted_by: node,
            request_id: None,
            entry,
        };
        state.apply(
            1,
            1,
            cmd(EntryKind::Membership {
                node,
                change: MemberChange::Admit,
            }),
        );
        state.apply(
            2,
            1,
            cmd(EntryKind::Config {
                key: "beacon_ms".into(),
                value: "500".into(),
            }),
        );
        assert!(state.members().contains(&node));
        assert_eq!(state.config()["beacon_ms"], "500");
        state.apply(
            3,
            1,
            cmd(EntryKind::Membership {
                node,
                change: MemberChange::Remove,
            }),
        );
        assert!(!state.members().contains(&node));
    }

    #[test]
    fn oversized_or_empty_fields_are_refused() {
        let mut big = app(None, 0);
        big.entry = EntryKind::App {
            body: vec![0; MAX_ENTRY_BYTES + 1],
        };
        assert_eq!(
            big.validate(),
            Err(CommandError::EntryTooLarge(MAX_ENTRY_BYTES + 1))
        );
        assert_eq!(
            app(Some(""), 0).validate(),
            Err(CommandError::EmptyRequestId)
        );
        let long = "x".repeat(MAX_REQUEST_ID_BYTES + 1);
        assert!(matches!(
            app(Some(&long), 0).validate(),
            Err(CommandError::RequestIdTooLong(_))
        ));
    }

    proptest! {
        /// Validators that apply the same commands reach the same state, and the state
        /// survives its own snapshot encoding: what a restarted or lagging node relies on.
        #[test]
        fn replay_and_snapshot_round_trip_agree(ops in prop::collection::vec((0u8..4, 0u8..6), 0..60)) {
            let commands: Vec<Command> = ops.iter().map(|&(kind, id)| {
                let request_id = (kind == 0).then(|| format!("req-{id}"));
                let entry = match kind {
                    1 => EntryKind::Config { key: format!("k{id}"), value: format!("{kind}") },
                    2 => EntryKind::Membership { node: NodeId([id; 32]), change: if id % 2 == 0 { MemberChange::Admit } else { MemberChange::Remove } },
                    _ => EntryKind::App { body: vec![id] },
                };
                Command { submitted_by: NodeId([0; 32]), request_id, entry }
            }).collect();
            let mut a = LedgerState::default();
            let mut b = LedgerState::default();
            for (i, c) in commands.iter().enumerate() {
                let ra = a.apply(i as u64 + 1, 1, c.clone());
                let rb = b.apply(i as u64 + 1, 1, c.clone());
                prop_assert_eq!(ra, rb);
            }
            prop_assert_eq!(&a, &b);
            let restored = LedgerState::decode(&a.encode()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&restored, &a);
            // Positions are dense: 1..=len, in order.
            for (i, r) in a.read(1, usize::MAX).iter().enumerate() {
                prop_assert_eq!(r.position, i as u64 + 1);
            }
        }
    }
}
