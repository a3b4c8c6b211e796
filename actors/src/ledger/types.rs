//! openraft's type configuration for the ledger, and a runtime whose randomness is seeded.

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand08::SeedableRng;
use rand08::rngs::SmallRng;
use x0_protocols::NodeId;
use x0_protocols::ledger::{Applied, Command};

openraft::declare_raft_types!(
    /// The ledger's Raft: commands in, positions out, nodes addressed by their mesh id
    /// (the mesh routes to them, so Raft needs no address of its own).
    pub LedgerRaftConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::EmptyNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = SeededRuntime,
);

pub type Raft = openraft::Raft<LedgerRaftConfig>;
pub type Entry = openraft::Entry<LedgerRaftConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::EmptyNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::EmptyNode>;
pub type Snapshot = openraft::Snapshot<LedgerRaftConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

/// Seeds threads that draw election timeouts before anyone seeded them directly.
static BASE_SEED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The stream election timeouts are drawn from. A real node seeds it from OS
    /// randomness, the simulator from the run's seed, so a simulated election replays
    /// exactly and real nodes do not all time out in step.
    static ELECTION_RNG: RefCell<Option<SmallRng>> = const { RefCell::new(None) };
}

/// Seeds the randomness openraft draws (election timeouts): this thread's stream now,
/// and the streams of threads that have not drawn yet.
pub fn seed_election_rng(seed: u64) {
    BASE_SEED.store(seed, Ordering::Relaxed);
    ELECTION_RNG.with(|rng| *rng.borrow_mut() = Some(SmallRng::seed_from_u64(seed)));
}

/// Tokio, exactly as openraft's own runtime, except that `thread_rng` comes from a seeded
/// per-thread stream: openraft's default draws from `rand::thread_rng()`, which would make
/// simulated elections differ from run to run of the same seed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeededRuntime;

impl AsyncRuntime for SeededRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;
    type OneshotSender<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <TokioRuntime as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        // A fresh generator forked from the thread's stream: openraft takes it by value.
        ELECTION_RNG.with(|rng| {
            let mut rng = rng.borrow_mut();
            let parent = rng.get_or_insert_with(|| {
                SmallRng::seed_from_u64(
                    BASE_SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed),
                )
            });
            SmallRng::from_rng(parent).unwrap_or_else(|_| SmallRng::seed_from_u64(0))
        })
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        TokioRuntime::oneshot()
    }
}
