//! The ledger's storage on redb: Raft's log and vote, and the state machine's snapshots.
//!
//! One implementation serves both places the ledger runs. The node opens a redb file in
//! its data directory; the simulator opens redb on its in-memory backend and keeps that
//! database across a simulated crash, as a disk would be kept. So the code a simulation
//! exercises under faults is the code that runs on disk.
//!
//! Durability: redb's default commit is durable (fsync) before it returns, and every
//! write here commits before it reports success. That is what openraft needs for
//! `save_vote` and the log-append callback: a vote or an acknowledged entry that could
//! vanish in a crash would let a node vote twice or lose a committed entry.
//!
//! The state machine itself lives in memory ([`LedgerState`]) and is rebuilt at start
//! from the latest snapshot plus the committed log after it, which openraft re-applies.
//! Snapshots are written here before the log they cover is purged.

// openraft's storage traits fix the error type, and it is large; our helpers return it
// as is rather than box and unbox it at every call.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, EntryPayload, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    StorageIOError,
};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use x0_protocols::ledger::{Applied, LedgerState};

use super::types::{
    Entry, LedgerRaftConfig, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, Vote,
};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const FORMAT_KEY: &str = "format";
const FORMAT: &[u8] = b"x0tta6bl4-ledger/1";
const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";
const SNAPSHOT_KEY: &str = "snapshot";

/// Why a ledger store could not be opened. Never papered over: a store that does not
/// read back as what we wrote is refused, so an operator restores it rather than a node
/// rejoining with a silently shortened history.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not a ledger store (format marker is {found:?})")]
    WrongFormat { found: String },
    #[error("the store holds data but no format marker; refusing to guess what it is")]
    Unmarked,
    #[error("{what} does not decode: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("storage: {0}")]
    Redb(String),
}

fn redb_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Redb(e.to_string())
}

/// The snapshot as stored: its metadata and the encoded [`LedgerState`].
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// A ledger store over one redb database. Cheap to clone (the database is shared).
#[derive(Clone)]
pub struct LedgerStore {
    db: Arc<Database>,
}

impl LedgerStore {
    /// Opens the ledger's tables in `db`, creating them in an empty database, and checks
    /// that everything already there decodes: a corrupt store fails here, at start, with
    /// the part that is wrong named.
    pub fn open(db: Arc<Database>) -> Result<Self, StoreError> {
        let txn = db.begin_write().map_err(redb_err)?;
        {
            let mut meta = txn.open_table(META).map_err(redb_err)?;
            let log = txn.open_table(LOG).map_err(redb_err)?;
            let marker = meta
                .get(FORMAT_KEY)
                .map_err(redb_err)?
                .map(|v| v.value().to_vec());
            match marker {
                Some(found) if found == FORMAT => {}
                Some(found) => {
                    return Err(StoreError::WrongFormat {
                        found: String::from_utf8_lossy(&found).into_owned(),
                    });
                }
                None => {
                    if !log.is_empty().map_err(redb_err)? || !meta.is_empty().map_err(redb_err)? {
                        return Err(StoreError::Unmarked);
                    }
                    meta.insert(FORMAT_KEY, FORMAT).map_err(redb_err)?;
                }
            }
            check::<Vote>(&meta, VOTE_KEY)?;
            check::<Option<LogId>>(&meta, COMMITTED_KEY)?;
            check::<Option<LogId>>(&meta, PURGED_KEY)?;
            if let Some(bytes) = meta.get(SNAPSHOT_KEY).map_err(redb_err)? {
                let snapshot: StoredSnapshot =
                    postcard::from_bytes(bytes.value()).map_err(|e| StoreError::Corrupt {
                        what: "the snapshot".into(),
                        reason: e.to_string(),
                    })?;
                LedgerState::decode(&snapshot.data).map_err(|e| StoreError::Corrupt {
                    what: "the snapshot's state".into(),
                    reason: e.to_string(),
                })?;
            }
            let mut previous: Option<u64> = None;
            for row in log.iter().map_err(redb_err)? {
                let (index, bytes) = row.map_err(redb_err)?;
                let index = index.value();
                let entry: Entry =
                    postcard::from_bytes(bytes.value()).map_err(|e| StoreError::Corrupt {
                        what: format!("log entry {index}"),
                        reason: e.to_string(),
                    })?;
                if entry.log_id.index != index || previous.is_some_and(|p| p + 1 != index) {
                    return Err(StoreError::Corrupt {
                        what: format!("log entry {index}"),
                        reason: "out of sequence".into(),
                    });
                }
                previous = Some(index);
            }
        }
        txn.commit().map_err(redb_err)?;
        Ok(LedgerStore { db })
    }

    /// The log half, for openraft.
    pub fn log_store(&self) -> LogStore {
        LogStore {
            db: self.db.clone(),
        }
    }

    /// The state-machine half, for openraft, with the latest snapshot loaded. The
    /// returned view is how the node reads the record without going through Raft.
    pub fn state_machine(&self) -> Result<(StateMachine, StateView), StoreError> {
        let txn = self.db.begin_read().map_err(redb_err)?;
        let meta = txn.open_table(META).map_err(redb_err)?;
        let snapshot: Option<StoredSnapshot> =
            read_value(&meta, SNAPSHOT_KEY).map_err(|e| StoreError::Corrupt {
                what: "the snapshot".into(),
                reason: e.to_string(),
            })?;
        let machine = match &snapshot {
            Some(s) => Machine {
                state: LedgerState::decode(&s.data).map_err(|e| StoreError::Corrupt {
                    what: "the snapshot's state".into(),
                    reason: e.to_string(),
                })?,
                last_applied: s.meta.last_log_id,
                membership: s.meta.last_membership.clone(),
                snapshots_installed: 0,
            },
            None => Machine::default(),
        };
        let view = StateView(Arc::new(RwLock::new(machine)));
        Ok((
            StateMachine {
                db: self.db.clone(),
                view: view.clone(),
                snapshot_serial: 0,
            },
            view,
        ))
    }
}

fn check<T: for<'de> Deserialize<'de>>(
    table: &redb::Table<&str, &[u8]>,
    key: &str,
) -> Result<(), StoreError> {
    read_value::<T>(table, key)
        .map(|_| ())
        .map_err(|e| StoreError::Corrupt {
            what: format!("the stored {key}"),
            reason: e.to_string(),
        })
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Redb(String),
    #[error("{0}")]
    Decode(#[from] postcard::Error),
}

fn read_value<T: for<'de> Deserialize<'de>>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, ReadError> {
    match table.get(key).map_err(|e| ReadError::Redb(e.to_string()))? {
        Some(bytes) => Ok(Some(postcard::from_bytes(bytes.value())?)),
        None => Ok(None),
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain owned data into a Vec: cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

fn io_read(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read(AnyError::error(e.to_string())).into()
}

fn io_write(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write(AnyError::error(e.to_string())).into()
}

/// Raft's log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    fn get_meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let txn = self.db.begin_read().map_err(io_read)?;
        let meta = txn.open_table(META).map_err(io_read)?;
        read_value(&meta, key).map_err(io_read)
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: redb::Durability,
    ) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(io_write)?;
        txn.set_durability(durability).map_err(io_write)?;
        {
            let mut meta = txn.open_table(META).map_err(io_write)?;
            meta.insert(key, encode(value).as_slice())
                .map_err(io_write)?;
        }
        txn.commit().map_err(io_write)
    }
}

impl RaftLogReader<LedgerRaftConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let txn = self.db.begin_read().map_err(io_read)?;
        let log = txn.open_table(LOG).map_err(io_read)?;
        let start = match range.start_bound() {
            Bound::Included(&i) => Bound::Included(i),
            Bound::Excluded(&i) => Bound::Excluded(i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(i),
            Bound::Excluded(&i) => Bound::Excluded(i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for row in log.range::<u64>((start, end)).map_err(io_read)? {
            let (_, bytes) = row.map_err(io_read)?;
            entries.push(postcard::from_bytes(bytes.value()).map_err(io_read)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<LedgerRaftConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<LedgerRaftConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(PURGED_KEY)?.flatten();
        let txn = self.db.begin_read().map_err(io_read)?;
        let log = txn.open_table(LOG).map_err(io_read)?;
        let last = match log.last().map_err(io_read)? {
            Some((_, bytes)) => {
                let entry: Entry = postcard::from_bytes(bytes.value()).map_err(io_read)?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(VOTE_KEY, vote, redb::Durability::Immediate)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(VOTE_KEY)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed on its own: a commit point lost in a crash is only older, which is
        // safe (it is re-learned from the leader), and this saves an fsync per round.
        // The next durable write (a log append or a vote) carries it to disk.
        self.put_meta(COMMITTED_KEY, &committed, redb::Durability::None)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<LedgerRaftConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let txn = self.db.begin_write().map_err(io_write)?;
        {
            let mut log = txn.open_table(LOG).map_err(io_write)?;
            for entry in entries {
                log.insert(entry.log_id.index, encode(&entry).as_slice())
                    .map_err(io_write)?;
            }
        }
        // Durable before the callback: openraft counts this entry toward a quorum as
        // soon as we report it flushed.
        let result = txn
            .commit()
            .map_err(|e| std::io::Error::other(e.to_string()));
        let failed = result.as_ref().err().map(|e| e.to_string());
        callback.log_io_completed(result);
        match failed {
            Some(e) => Err(io_write(e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(io_write)?;
        {
            let mut log = txn.open_table(LOG).map_err(io_write)?;
            log.retain_in(log_id.index.., |_, _| false)
                .map_err(io_write)?;
        }
        txn.commit().map_err(io_write)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(io_write)?;
        {
            let mut meta = txn.open_table(META).map_err(io_write)?;
            meta.insert(PURGED_KEY, encode(&Some(log_id)).as_slice())
                .map_err(io_write)?;
            let mut log = txn.open_table(LOG).map_err(io_write)?;
            log.retain_in(..=log_id.index, |_, _| false)
                .map_err(io_write)?;
        }
        txn.commit().map_err(io_write)
    }
}

/// The applied state, its last applied log id and membership.
#[derive(Debug, Default)]
pub struct Machine {
    pub state: LedgerState,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Snapshots received from a leader since start (a replica too far behind for the
    /// log to catch it up).
    pub snapshots_installed: u64,
}

/// A read-only window on the applied state, for reads that need not go through Raft.
///
/// Shared with the state machine that openraft drives: a view, not a mailbox, so the
/// node can serve `GET /ledger/entries` while Raft applies.
#[derive(Clone, Debug, Default)]
pub struct StateView(Arc<RwLock<Machine>>);

impl StateView {
    pub fn read<T>(&self, f: impl FnOnce(&Machine) -> T) -> T {
        match self.0.read() {
            Ok(guard) => f(&guard),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn write<T>(&self, f: impl FnOnce(&mut Machine) -> T) -> T {
        match self.0.write() {
            Ok(mut guard) => f(&mut guard),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

pub struct StateMachine {
    db: Arc<Database>,
    view: StateView,
    snapshot_serial: u64,
}

impl RaftSnapshotBuilder<LedgerRaftConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (data, last_log_id, membership) = self
            .view
            .read(|m| (m.state.encode(), m.last_applied, m.membership.clone()));
        self.snapshot_serial += 1;
        let snapshot_id = match last_log_id {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.index, self.snapshot_serial
            ),
            None => format!("empty-{}", self.snapshot_serial),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership: membership,
            snapshot_id,
        };
        store_snapshot(&self.db, &meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

fn store_snapshot(db: &Database, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
    let stored = StoredSnapshot {
        meta: meta.clone(),
        data: data.to_vec(),
    };
    let txn = db.begin_write().map_err(io_write)?;
    {
        let mut table = txn.open_table(META).map_err(io_write)?;
        table
            .insert(SNAPSHOT_KEY, encode(&stored).as_slice())
            .map_err(io_write)?;
    }
    txn.commit().map_err(io_write)
}

impl RaftStateMachine<LedgerRaftConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok(self.view.read(|m| (m.last_applied, m.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        Ok(self.view.write(|m| {
            entries
                .into_iter()
                .map(|entry| {
                    m.last_applied = Some(entry.log_id);
                    match entry.payload {
                        EntryPayload::Blank => Applied::default(),
                        EntryPayload::Normal(command) => {
                            m.state
                                .apply(entry.log_id.index, entry.log_id.leader_id.term, command)
                        }
                        EntryPayload::Membership(membership) => {
                            m.membership = StoredMembership::new(Some(entry.log_id), membership);
                            Applied::default()
                        }
                    }
                })
                .collect()
        }))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachine {
            db: self.db.clone(),
            view: self.view.clone(),
            snapshot_serial: self.snapshot_serial + 1_000_000,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state = LedgerState::decode(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::error(e.to_string()),
            ))
        })?;
        store_snapshot(&self.db, meta, &data)?;
        self.view.write(|m| {
            m.state = state;
            m.last_applied = meta.last_log_id;
            m.membership = meta.last_membership.clone();
            m.snapshots_installed += 1;
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let txn = self.db.begin_read().map_err(io_read)?;
        let table = txn.open_table(META).map_err(io_read)?;
        let stored: Option<StoredSnapshot> = read_value(&table, SNAPSHOT_KEY).map_err(io_read)?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use openraft::{CommittedLeaderId, Vote as RaftVote};
    use redb::backends::InMemoryBackend;
    use x0_protocols::NodeId;

    fn memory_db() -> Arc<Database> {
        Arc::new(
            Database::builder()
                .create_with_backend(InMemoryBackend::new())
                .unwrap(),
        )
    }

    fn put(db: &Database, table: TableDefinition<&str, &[u8]>, key: &str, value: &[u8]) {
        let txn = db.begin_write().unwrap();
        txn.open_table(table).unwrap().insert(key, value).unwrap();
        txn.commit().unwrap();
    }

    #[tokio::test]
    async fn vote_and_commit_point_survive_reopening() {
        let db = memory_db();
        let store = LedgerStore::open(db.clone()).unwrap();
        let mut log = store.log_store();
        let vote = RaftVote::new(3, NodeId([1; 32]));
        log.save_vote(&vote).await.unwrap();
        let committed = LogId::new(CommittedLeaderId::new(3, NodeId([1; 32])), 7);
        log.save_committed(Some(committed)).await.unwrap();
        drop(log);
        let mut reopened = LedgerStore::open(db).unwrap().log_store();
        assert_eq!(reopened.read_vote().await.unwrap(), Some(vote));
        assert_eq!(reopened.read_committed().await.unwrap(), Some(committed));
    }

    #[test]
    fn a_database_of_something_else_is_refused() {
        let db = memory_db();
        put(&db, META, "vote", b"not ours");
        assert!(matches!(LedgerStore::open(db), Err(StoreError::Unmarked)));

        let db = memory_db();
        put(&db, META, FORMAT_KEY, b"someone-else/9");
        assert!(matches!(
            LedgerStore::open(db),
            Err(StoreError::WrongFormat { .. })
        ));
    }

    #[test]
    fn undecodable_records_are_refused_with_what_is_wrong() {
        let db = memory_db();
        LedgerStore::open(db.clone()).unwrap();
        put(&db, META, VOTE_KEY, &[0xff; 3]);
        match LedgerStore::open(db) {
            Err(StoreError::Corrupt { what, .. }) => assert!(what.contains("vote"), "{what}"),
            other => panic!("expected a corrupt vote, got {:?}", other.err()),
        }

        let db = memory_db();
        LedgerStore::open(db.clone()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(LOG)
            .unwrap()
            .insert(5, [1u8, 2, 3].as_slice())
            .unwrap();
        txn.commit().unwrap();
        match LedgerStore::open(db) {
            Err(StoreError::Corrupt { what, .. }) => assert_eq!(what, "log entry 5"),
            other => panic!("expected a corrupt entry, got {:?}", other.err()),
        }
    }
}
