//! The ledger under load: clients append and read through random live nodes while the
//! scenario's faults strike, every operation is recorded with its virtual call and return
//! times, and at the end the history goes through the linearizability checker.
//!
//! An append that times out or whose node crashes has an unknown outcome: it may still
//! commit later, and the checker treats it so. A final linearizable read of the whole
//! record closes the history, so an acknowledged entry that went missing shows up as a
//! violation rather than passing unnoticed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use x0_actors::{LedgerSettings, NodeHandle};
use x0_protocols::NodeId;
use x0_protocols::ledger::{Command, EntryKind, Record};

use crate::chaos::Mesh;
use crate::linearizability::{self, Op, Operation, Outcome, Verdict};
use crate::measure;
use crate::scenario::LedgerSection;

/// Largest read the workload makes; a read that fills it is not the whole tail and is
/// left out of the history.
const READ_LIMIT: u32 = 100_000;
/// Tries of the closing read, a second apart plus the client timeout each.
const CLOSING_READ_ATTEMPTS: usize = 10;
/// Reads start this far behind the last acknowledged position, to see recent appends.
const READ_TAIL: u64 = 16;

/// The `ledger` section of the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerReport {
    pub validators: usize,
    /// Appends acknowledged as committed.
    pub commits: u64,
    /// Appends whose client gave up or lost its node (they may or may not have committed).
    pub writes_unknown: u64,
    pub reads: u64,
    /// Reads that failed (no leader reachable in time); not part of the history.
    pub reads_failed: u64,
    pub commit_latency_ms_p50: Option<f64>,
    pub commit_latency_ms_p99: Option<f64>,
    /// Most leader changes any validator saw.
    pub leader_changes: u64,
    /// Entries in the record at the end, by a linearizable read.
    pub final_entries: Option<u64>,
    /// Validators up at the end whose replica holds exactly `final_entries` entries.
    pub validators_in_sync: usize,
    /// Snapshots validators installed from a leader (each one a replica that fell
    /// behind the purged log and was caught up whole).
    pub snapshots_installed: u64,
    pub linearizable: bool,
    /// The checker's verdict in words (which operations could not be ordered, if any).
    pub verdict: String,
}

/// The settings every simulated node gets: validators drawn from the run's seed, every
/// other node a plain member that forwards.
pub fn settings(section: &LedgerSection, ids: &[NodeId], rng: &mut ChaCha8Rng) -> LedgerSettings {
    let count = section.validators.min(ids.len());
    let validators = rand::seq::index::sample(rng, ids.len(), count)
        .into_iter()
        .map(|i| ids[i])
        .collect();
    LedgerSettings {
        validators,
        replica: false,
        snapshot_every: section.snapshot_every,
        heartbeat_ms: section.heartbeat_ms,
        election_timeout_min_ms: section.election_timeout_min_ms,
        election_timeout_max_ms: section.election_timeout_max_ms,
        client_timeout_ms: section.client_timeout_ms,
        ..LedgerSettings::default()
    }
}

pub struct LedgerLoad {
    start: Instant,
    write_interval: Option<Duration>,
    read_interval: Option<Duration>,
    next_write: Duration,
    next_read: Duration,
    rng: ChaCha8Rng,
    next_value: u64,
    next_client: u32,
    history: Arc<Mutex<Vec<Operation>>>,
    /// Highest position acknowledged so far, to aim reads at the tail.
    acked: Arc<Mutex<u64>>,
    reads_failed: Arc<Mutex<u64>>,
    tasks: Vec<JoinHandle<()>>,
}

fn interval(rate: f64) -> Option<Duration> {
    (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate))
}

fn since(start: Instant) -> u64 {
    Instant::now().duration_since(start).as_millis() as u64
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The workload's value carried by an entry, if it is one of ours.
fn value_of(record: &Record) -> Option<u64> {
    match &record.entry {
        EntryKind::App { body } => Some(u64::from_le_bytes(body.as_slice().try_into().ok()?)),
        _ => None,
    }
}

impl LedgerLoad {
    pub fn new(section: &LedgerSection, start: Instant, rng: ChaCha8Rng) -> Self {
        LedgerLoad {
            start,
            write_interval: interval(section.writes_per_s),
            read_interval: interval(section.reads_per_s),
            next_write: section.start,
            next_read: section.start,
            rng,
            next_value: 1,
            next_client: 0,
            history: Arc::new(Mutex::new(Vec::new())),
            acked: Arc::new(Mutex::new(0)),
            reads_failed: Arc::new(Mutex::new(0)),
            tasks: Vec::new(),
        }
    }

    pub fn next_due(&self) -> Option<Duration> {
        [
            self.write_interval.map(|_| self.next_write),
            self.read_interval.map(|_| self.next_read),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Starts the operations due by now, each through a random live node.
    pub fn run_due(&mut self, mesh: &Mesh) {
        let now = Instant::now().duration_since(self.start);
        let up = mesh.up_nodes();
        if up.is_empty() {
            return;
        }
        while let Some(every) = self.write_interval
            && self.next_write <= now
        {
            self.next_write += every;
            let node = self.pick(mesh, &up);
            self.append(node);
        }
        while let Some(every) = self.read_interval
            && self.next_read <= now
        {
            self.next_read += every;
            let node = self.pick(mesh, &up);
            self.read(node);
        }
        self.tasks.retain(|t| !t.is_finished());
    }

    fn pick(&mut self, mesh: &Mesh, up: &[u32]) -> Option<Arc<NodeHandle>> {
        let index = up[self.rng.random_range(0..up.len())];
        mesh.nodes[index as usize].clone()
    }

    fn client(&mut self) -> u32 {
        self.next_client += 1;
        self.next_client
    }

    fn append(&mut self, node: Option<Arc<NodeHandle>>) {
        let Some(node) = node else { return };
        let value = self.next_value;
        self.next_value += 1;
        let client = self.client();
        let (start, history, acked) = (self.start, self.history.clone(), self.acked.clone());
        self.tasks.push(tokio::spawn(async move {
            let call = since(start);
            let command = Command {
                submitted_by: node.id(),
                request_id: Some(format!("sim-{value}")),
                entry: EntryKind::App {
                    body: value.to_le_bytes().to_vec(),
                },
            };
            let result = node.ledger_append(command).await;
            let ret = since(start);
            let (ret, outcome) = match result {
                Ok(applied) => {
                    let mut high = lock(&acked);
                    *high = (*high).max(applied.position);
                    (
                        Some(ret),
                        Outcome::Appended {
                            position: applied.position,
                        },
                    )
                }
                Err(_) => (None, Outcome::Unknown),
            };
            lock(&history).push(Operation {
                client,
                call,
                ret,
                op: Op::Append { value },
                outcome,
            });
        }));
    }

    fn read(&mut self, node: Option<Arc<NodeHandle>>) {
        let Some(node) = node else { return };
        let client = self.client();
        let from = lock(&self.acked).saturating_sub(READ_TAIL).max(1);
        let (start, history, failed) =
            (self.start, self.history.clone(), self.reads_failed.clone());
        self.tasks.push(tokio::spawn(async move {
            let call = since(start);
            let result = node.ledger_read(from, READ_LIMIT, true).await;
            let ret = since(start);
            match result {
                Ok(read) if read.records.len() < READ_LIMIT as usize => {
                    lock(&history).push(Operation {
                        client,
                        call,
                        ret: Some(ret),
                        op: Op::Read { from },
                        outcome: Outcome::Read {
                            values: read.records.iter().filter_map(value_of).collect(),
                        },
                    });
                }
                _ => *lock(&failed) += 1,
            }
        }));
    }

    /// Waits for operations in flight, reads the whole record once more through a
    /// validator, checks the history and scores the run.
    pub async fn finish(mut self, mesh: &Mesh, validators: &[NodeId]) -> LedgerReport {
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        let live_validators: Vec<Arc<NodeHandle>> = mesh
            .nodes
            .iter()
            .flatten()
            .filter(|n| validators.contains(&n.id()))
            .cloned()
            .collect();
        let mut leader_changes = 0;
        let mut snapshots_installed = 0;
        for v in &live_validators {
            if let Ok(status) = v.ledger_status().await {
                leader_changes = leader_changes.max(status.leader_changes);
                snapshots_installed += status.snapshots_installed;
            }
        }
        // The closing read: everything acknowledged must be in it. A fault near the end
        // may leave the ledger mid-election, so it is retried for a while: the point is
        // what the ledger holds once it recovers.
        let mut final_entries = None;
        for attempt in 0..CLOSING_READ_ATTEMPTS {
            let Some(node) = live_validators.get(attempt % live_validators.len().max(1)) else {
                break;
            };
            let call = since(self.start);
            if let Ok(read) = node.ledger_read(1, READ_LIMIT, true).await {
                final_entries = Some(read.total);
                lock(&self.history).push(Operation {
                    client: 0,
                    call,
                    ret: Some(since(self.start)),
                    op: Op::Read { from: 1 },
                    outcome: Outcome::Read {
                        values: read.records.iter().filter_map(value_of).collect(),
                    },
                });
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Replicas catch up within a few heartbeats of the closing read.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut validators_in_sync = 0;
        for v in &live_validators {
            if let Ok(status) = v.ledger_status().await
                && Some(status.entries) == final_entries
            {
                validators_in_sync += 1;
            }
        }
        let history = std::mem::take(&mut *lock(&self.history));
        let mut latencies = Vec::new();
        let mut report = LedgerReport {
            validators: validators.len(),
            leader_changes,
            final_entries,
            validators_in_sync,
            snapshots_installed,
            reads_failed: *lock(&self.reads_failed),
            ..LedgerReport::default()
        };
        for op in &history {
            match (&op.op, &op.outcome, op.ret) {
                (Op::Append { .. }, Outcome::Appended { .. }, Some(ret)) => {
                    report.commits += 1;
                    latencies.push(ret.saturating_sub(op.call));
                }
                (Op::Append { .. }, _, _) => report.writes_unknown += 1,
                (Op::Read { .. }, _, _) => report.reads += 1,
            }
        }
        report.commit_latency_ms_p50 = measure::quantile(&latencies, 0.5);
        report.commit_latency_ms_p99 = measure::quantile(&latencies, 0.99);
        let verdict = linearizability::check(&history);
        report.linearizable = verdict.is_linearizable();
        report.verdict = match verdict {
            Verdict::Linearizable => "linearizable".into(),
            Verdict::Violation(why) => format!("violation: {why}"),
            Verdict::TooComplex => "not decided: search budget exhausted".into(),
            Verdict::Malformed(why) => format!("malformed history: {why}"),
        };
        report
    }
}
