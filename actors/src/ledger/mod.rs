//! The `Ledger` actor: the mesh's durable, ordered record, replicated with Raft.
//!
//! openraft owns its own tasks (DESIGN.md's one exception to sans-IO), so this actor is a
//! wrapper: it starts the `Raft` on a [`LedgerStore`], carries Raft's RPCs as routed
//! messages over the mesh (validators need not be neighbors), and serves clients. A
//! client write may arrive at any node: validators, learners and plain members alike
//! forward it to the leader and retry through leader changes, and a client-supplied
//! request id makes those retries apply at most once.
//!
//! Plain members run no Raft at all; they ask the validators. Replicas (validators and
//! learners) read their own applied state for local reads and go through the leader's
//! read index for linearizable ones.

pub mod network;
pub mod rpc;
pub mod store;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, EmptyNode, ServerState, SnapshotPolicy};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use x0_protocols::NodeId;
use x0_protocols::forwarding::Service;
use x0_protocols::ledger::{Applied, Command, Record};

use crate::supervisor::NodeMsg;
pub use rpc::MembershipChange;
use rpc::{Request, Response, Wire};
pub use store::{LedgerStore, StateView, StoreError};
use types::Raft;
pub use types::seed_election_rng;

/// How the ledger runs on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSettings {
    /// The voters the ledger starts with. Every node must be given the same set.
    pub validators: BTreeSet<NodeId>,
    /// Nodes the leader adds as non-voting replicas.
    pub learners: BTreeSet<NodeId>,
    /// Run Raft even when named in neither set, so the node can be added at run time.
    /// Plain members that never will be leave it off and only forward.
    pub replica: bool,
    /// Also openraft's timeout for one AppendEntries round trip, so it must exceed the
    /// round trip between validators, which on a mesh crosses several hops.
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Applied entries between snapshots; the log before a snapshot is purged.
    pub snapshot_every: u64,
    /// Most entries one replication message carries (1 turns batching off). Entries
    /// ride in one routed message, which has a size limit.
    pub max_payload_entries: u64,
    /// Longest wait for one Raft RPC across the mesh.
    pub rpc_timeout_ms: u64,
    /// Longest a client's write or read may take, retries through leader changes
    /// included.
    pub client_timeout_ms: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            validators: BTreeSet::new(),
            learners: BTreeSet::new(),
            replica: true,
            heartbeat_ms: 300,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_every: 5000,
            max_payload_entries: 64,
            rpc_timeout_ms: 1000,
            client_timeout_ms: 10_000,
        }
    }
}

impl LedgerSettings {
    /// Whether this node runs Raft.
    pub fn is_replica(&self, me: NodeId) -> bool {
        self.replica || self.validators.contains(&me) || self.learners.contains(&me)
    }

    fn raft_config(&self) -> Result<Config, Box<openraft::ConfigError>> {
        Config {
            cluster_name: "x0tta6bl4-ledger".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.snapshot_every.min(1000),
            max_payload_entries: self.max_payload_entries,
            snapshot_max_chunk_size: 64 * 1024,
            install_snapshot_timeout: self.rpc_timeout_ms,
            ..Config::default()
        }
        .validate()
        .map_err(Box::new)
    }
}

/// What a client of the ledger gets wrong or runs into.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LedgerError {
    #[error("invalid entry: {0}")]
    Invalid(String),
    #[error("no leader answered within {0} ms")]
    Unavailable(u64),
    #[error("refused by the leader: {0}")]
    Refused(String),
    #[error("the ledger is not running on this node")]
    Down,
}

/// Why one routed call got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no response in time")]
    Timeout,
    #[error("the ledger actor is down")]
    Down,
}

/// The ledger as one node sees it, for `/api/v1/ledger/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerStatus {
    pub id: NodeId,
    /// validator, learner or member (a node outside Raft's membership).
    pub role: String,
    /// Raft state of the node that answered (leader, follower, candidate, learner), or
    /// `member` for a node that runs no Raft.
    pub state: String,
    /// The node whose view this is: this one, or for a plain member, the leader.
    pub answered_by: NodeId,
    pub term: u64,
    pub leader: Option<NodeId>,
    /// Highest log index known committed and applied here.
    pub commit_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: Option<u64>,
    /// Entries in the record.
    pub entries: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// True while a joint-consensus membership change is in progress.
    pub joint: bool,
    /// Times this node saw the leader change.
    pub leader_changes: u64,
    /// Snapshots this node installed from a leader since it started.
    pub snapshots_installed: u64,
    /// Nodes admitted to the mesh by `Membership` entries.
    pub members: Vec<NodeId>,
}

/// Entries read from the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadResult {
    pub records: Vec<Record>,
    /// Entries in the record at the time of the read.
    pub total: u64,
}

pub enum LedgerMsg {
    /// A routed ledger message from another node.
    Inbound {
        from: NodeId,
        payload: Vec<u8>,
    },
    /// Send a request to `to` and hand its response to `reply`.
    Call {
        to: NodeId,
        request: Request,
        reply: RpcReplyPort<Result<Response, CallError>>,
    },
    Append {
        command: Command,
        reply: RpcReplyPort<Result<Applied, LedgerError>>,
    },
    AppendMany {
        commands: Vec<Command>,
        reply: RpcReplyPort<Result<Vec<Applied>, LedgerError>>,
    },
    Read {
        from: u64,
        limit: u32,
        linearizable: bool,
        reply: RpcReplyPort<Result<ReadResult, LedgerError>>,
    },
    Status(RpcReplyPort<Result<LedgerStatus, LedgerError>>),
    ChangeMembership {
        change: MembershipChange,
        reply: RpcReplyPort<Result<LedgerStatus, LedgerError>>,
    },
    /// A client task learned who leads.
    LeaderHint(NodeId),
    /// A plain member learned the admitted members from the leader.
    Members(BTreeSet<NodeId>),
    Tick,
}

pub struct LedgerArgs {
    pub me: NodeId,
    pub settings: LedgerSettings,
    /// Where Raft keeps its log; `None` on a replica starts a fresh in-memory store.
    pub store: Option<LedgerStore>,
    pub supervisor: ActorRef<NodeMsg>,
    /// Seeds the ids this node gives writes that came without one.
    pub seed: u64,
    /// Keep the supervisor told of the admitted members (the mesh's admission follows
    /// the ledger).
    pub publish_members: bool,
}

/// Shuts openraft's tasks down with the actor, however it ends (a panic included), so a
/// restarted actor never shares its store with a stale Raft.
struct RaftGuard(Raft);

impl Drop for RaftGuard {
    fn drop(&mut self) {
        let raft = self.0.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}

pub struct LedgerActorState {
    me: NodeId,
    settings: LedgerSettings,
    raft: Option<RaftGuard>,
    view: Option<StateView>,
    supervisor: ActorRef<NodeMsg>,
    pending: BTreeMap<
        u64,
        (
            RpcReplyPort<Result<Response, CallError>>,
            tokio::time::Instant,
        ),
    >,
    next_call: u64,
    leader_hint: Option<NodeId>,
    last_leader: Option<NodeId>,
    leader_changes: u64,
    /// Requests from other nodes being served right now.
    serving: Arc<AtomicUsize>,
    request_prefix: String,
    next_request: u64,
    published_members: Option<BTreeSet<NodeId>>,
    publish: bool,
    ticks: u64,
}

/// Most requests from peers served at once; beyond it new ones are dropped (and the
/// sender retries), so a flood cannot pile up tasks.
const MAX_SERVING: usize = 512;
const TICK: Duration = Duration::from_millis(200);
/// A plain member polls the leader for admitted members every this many ticks.
const MEMBERS_POLL_TICKS: u64 = 10;

pub struct LedgerActor;

impl Actor for LedgerActor {
    type Msg = LedgerMsg;
    type State = LedgerActorState;
    type Arguments = LedgerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: LedgerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (raft, view) = if args.settings.is_replica(args.me) {
            let store = match args.store {
                Some(store) => store,
                None => LedgerStore::open(Arc::new(
                    redb::Database::builder()
                        .create_with_backend(redb::backends::InMemoryBackend::new())?,
                ))?,
            };
            let config = Arc::new(args.settings.raft_config()?);
            let (state_machine, view) = store.state_machine()?;
            let network = network::Network {
                actor: myself.clone(),
                timeout: Duration::from_millis(args.settings.rpc_timeout_ms),
            };
            let raft =
                Raft::new(args.me, config, network, store.log_store(), state_machine).await?;
            if args.settings.validators.contains(&args.me) && !raft.is_initialized().await? {
                // Every validator proposes the same initial voters; all but the first
                // to act are told it is already done, which is fine.
                if let Err(e) = raft.initialize(args.settings.validators.clone()).await {
                    tracing::debug!(error = %e, "ledger already initialized elsewhere");
                }
            }
            (Some(RaftGuard(raft)), Some(view))
        } else {
            (None, None)
        };
        myself.send_interval(TICK, || LedgerMsg::Tick);
        Ok(LedgerActorState {
            me: args.me,
            settings: args.settings,
            raft,
            view,
            supervisor: args.supervisor,
            pending: BTreeMap::new(),
            next_call: args.seed.rotate_left(21),
            leader_hint: None,
            last_leader: None,
            leader_changes: 0,
            serving: Arc::new(AtomicUsize::new(0)),
            request_prefix: format!("{}-{:016x}", args.me.short(), args.seed),
            next_request: 0,
            published_members: None,
            publish: args.publish_members,
            ticks: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            LedgerMsg::Inbound { from, payload } => state.inbound(from, &payload),
            LedgerMsg::Call { to, request, reply } => state.call(to, request, reply),
            LedgerMsg::Append { command, reply } => {
                let mut commands = [command];
                if let Err(e) = state.prepare(&mut commands) {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                let [command] = commands;
                answer_at_leader(
                    state.client(&myself),
                    move || Request::Write(command.clone()),
                    |response| match response {
                        Response::Written(applied) => Ok(applied),
                        other => Err(other),
                    },
                    reply,
                );
            }
            LedgerMsg::AppendMany {
                mut commands,
                reply,
            } => {
                if let Err(e) = state.prepare(&mut commands) {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                answer_at_leader(
                    state.client(&myself),
                    move || Request::WriteMany(commands.clone()),
                    |response| match response {
                        Response::WrittenMany(applied) => Ok(applied),
                        other => Err(other),
                    },
                    reply,
                );
            }
            LedgerMsg::Read {
                from,
                limit,
                linearizable,
                reply,
            } => {
                if !linearizable
                    && state.in_membership()
                    && let Some(view) = &state.view
                {
                    let result = view.read(|m| ReadResult {
                        records: m.state.read(from, limit as usize).to_vec(),
                        total: m.state.len(),
                    });
                    let _ = reply.send(Ok(result));
                    return Ok(());
                }
                answer_at_leader(
                    state.client(&myself),
                    move || Request::Read { from, limit },
                    |response| match response {
                        Response::Records { records, total } => Ok(ReadResult { records, total }),
                        other => Err(other),
                    },
                    reply,
                );
            }
            LedgerMsg::Status(reply) => {
                if let (Some(raft), Some(view)) = (&state.raft, &state.view)
                    && state.in_membership()
                {
                    let _ = reply.send(Ok(status(&raft.0, view, state.leader_changes)));
                    return Ok(());
                }
                let me = state.me;
                answer_at_leader(
                    state.client(&myself),
                    || Request::Status,
                    move |response| match response {
                        Response::Status(status) => Ok(LedgerStatus {
                            id: me,
                            role: "member".into(),
                            ..*status
                        }),
                        other => Err(other),
                    },
                    reply,
                );
            }
            LedgerMsg::ChangeMembership { change, reply } => answer_at_leader(
                state.client(&myself),
                move || Request::ChangeMembership(change.clone()),
                |response| match response {
                    Response::Status(status) => Ok(*status),
                    other => Err(other),
                },
                reply,
            ),
            LedgerMsg::LeaderHint(leader) => state.leader_hint = Some(leader),
            LedgerMsg::Members(members) => state.publish_members(members),
            LedgerMsg::Tick => {
                state.tick();
                state.refresh_members(&myself);
            }
        }
        Ok(())
    }
}

/// Runs a client request at the leader on a task of its own and answers `reply` with
/// what `extract` takes from the response (any other response is a refusal).
fn answer_at_leader<T: Send + 'static>(
    client: Client,
    request: impl Fn() -> Request + Send + 'static,
    extract: impl FnOnce(Response) -> Result<T, Response> + Send + 'static,
    reply: RpcReplyPort<Result<T, LedgerError>>,
) {
    tokio::spawn(async move {
        let result = client.at_leader(request).await.and_then(|response| {
            extract(response).map_err(|other| LedgerError::Refused(format!("{other:?}")))
        });
        let _ = reply.send(result);
    });
}

impl LedgerActorState {
    /// Checks client commands and gives an id to those without one: our own retries
    /// must be idempotent too.
    fn prepare(&mut self, commands: &mut [Command]) -> Result<(), LedgerError> {
        if let Some(e) = commands.iter().find_map(|c| c.validate().err()) {
            return Err(LedgerError::Invalid(e.to_string()));
        }
        for command in commands.iter_mut().filter(|c| c.request_id.is_none()) {
            self.next_request += 1;
            command.request_id = Some(format!("{}-{}", self.request_prefix, self.next_request));
        }
        Ok(())
    }

    /// Whether Raft replicates to this node. A replica outside the membership (one that
    /// may be added later) has nothing to say yet and asks the leader instead.
    fn in_membership(&self) -> bool {
        self.view.as_ref().is_some_and(|view| {
            view.read(|m| m.membership.membership().get_node(&self.me).is_some())
        })
    }

    fn send(&self, to: NodeId, wire: &Wire) {
        let _ = self.supervisor.cast(NodeMsg::Send {
            destination: to,
            service: Service::Ledger,
            payload: wire.encode(),
            reply: None,
        });
    }

    fn call(
        &mut self,
        to: NodeId,
        request: Request,
        reply: RpcReplyPort<Result<Response, CallError>>,
    ) {
        let call = self.next_call;
        self.next_call = self.next_call.wrapping_add(1);
        metrics::counter!("x0_ledger_rpc_sent_total", "rpc" => request.name()).increment(1);
        self.send(to, &Wire::Request { call, request });
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.settings.client_timeout_ms);
        self.pending.insert(call, (reply, deadline));
    }

    fn inbound(&mut self, from: NodeId, payload: &[u8]) {
        let wire = match Wire::decode(payload) {
            Ok(wire) => wire,
            Err(_) => {
                metrics::counter!("x0_ledger_rpc_rejected_total", "reason" => "decode")
                    .increment(1);
                return;
            }
        };
        match wire {
            Wire::Response { call, response } => {
                if let Some((reply, _)) = self.pending.remove(&call) {
                    let _ = reply.send(Ok(response));
                }
            }
            Wire::Request { call, request } => {
                if self.serving.load(Ordering::Relaxed) >= MAX_SERVING {
                    metrics::counter!("x0_ledger_rpc_rejected_total", "reason" => "overloaded")
                        .increment(1);
                    return;
                }
                self.serving.fetch_add(1, Ordering::Relaxed);
                let serving = self.serving.clone();
                let raft = self.raft.as_ref().map(|r| r.0.clone());
                let view = self.view.clone();
                let leader_changes = self.leader_changes;
                let supervisor = self.supervisor.clone();
                tokio::spawn(async move {
                    let response =
                        serve(raft.as_ref(), view.as_ref(), leader_changes, request).await;
                    serving.fetch_sub(1, Ordering::Relaxed);
                    let _ = supervisor.cast(NodeMsg::Send {
                        destination: from,
                        service: Service::Ledger,
                        payload: Wire::Response { call, response }.encode(),
                        reply: None,
                    });
                });
            }
        }
    }

    /// Tells the supervisor who the ledger has admitted, when that changes (what
    /// `security.admission = "ledger"` follows).
    fn publish_members(&mut self, members: BTreeSet<NodeId>) {
        if self.published_members.as_ref() != Some(&members) {
            self.published_members = Some(members.clone());
            let _ = self.supervisor.cast(NodeMsg::LedgerMembers(members));
        }
    }

    fn refresh_members(&mut self, myself: &ActorRef<LedgerMsg>) {
        if !self.publish {
            return;
        }
        self.ticks += 1;
        if let Some(view) = &self.view
            && self.in_membership()
        {
            let members = view.read(|m| m.state.members().clone());
            self.publish_members(members);
            return;
        }
        // A node that keeps no replica asks the leader now and then.
        if self.ticks.is_multiple_of(MEMBERS_POLL_TICKS) {
            let client = self.client(myself);
            let actor = myself.clone();
            tokio::spawn(async move {
                if let Ok(Response::Status(status)) = client.at_leader(|| Request::Status).await {
                    let _ = actor.cast(LedgerMsg::Members(status.members.into_iter().collect()));
                }
            });
        }
    }

    fn tick(&mut self) {
        let now = tokio::time::Instant::now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(call, _)| *call)
            .collect();
        for call in expired {
            if let Some((reply, _)) = self.pending.remove(&call) {
                let _ = reply.send(Err(CallError::Timeout));
            }
        }
        let Some(raft) = &self.raft else { return };
        let metrics = raft.0.metrics().borrow().clone();
        if metrics.current_leader.is_some() && metrics.current_leader != self.last_leader {
            self.leader_changes += 1;
            metrics::counter!("x0_ledger_leader_changes_total").increment(1);
        }
        self.last_leader = metrics.current_leader;
        if let Some(leader) = metrics.current_leader {
            self.leader_hint = Some(leader);
        }
        metrics::gauge!("x0_ledger_term").set(metrics.current_term as f64);
        metrics::gauge!("x0_ledger_applied_index")
            .set(metrics.last_applied.map_or(0, |l| l.index) as f64);
        if metrics.state == ServerState::Leader {
            // Configured learners the membership lacks: add them (not blocking, so a
            // slow one does not hold up the others). Membership changes are
            // one-at-a-time in Raft, so this simply retries on later ticks.
            let known: BTreeSet<NodeId> = metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect();
            if let Some(&learner) = self.settings.learners.difference(&known).next() {
                let raft = raft.0.clone();
                tokio::spawn(async move {
                    let _ = raft.add_learner(learner, EmptyNode {}, false).await;
                });
            }
        }
    }

    fn client(&self, myself: &ActorRef<LedgerMsg>) -> Client {
        Client {
            me: self.me,
            raft: self.raft.as_ref().map(|r| r.0.clone()),
            view: self.view.clone(),
            actor: myself.clone(),
            validators: self.settings.validators.iter().copied().collect(),
            hint: self.leader_hint,
            rpc_timeout: Duration::from_millis(self.settings.rpc_timeout_ms),
            client_timeout: Duration::from_millis(self.settings.client_timeout_ms),
            leader_changes: self.leader_changes,
        }
    }
}

/// Runs one client request at the leader, wherever that is, within the client timeout.
struct Client {
    me: NodeId,
    raft: Option<Raft>,
    view: Option<StateView>,
    actor: ActorRef<LedgerMsg>,
    validators: Vec<NodeId>,
    hint: Option<NodeId>,
    rpc_timeout: Duration,
    client_timeout: Duration,
    leader_changes: u64,
}

impl Client {
    async fn at_leader(&self, request: impl Fn() -> Request) -> Result<Response, LedgerError> {
        let deadline = tokio::time::Instant::now() + self.client_timeout;
        let local_leader = match &self.raft {
            Some(raft) => raft.metrics().borrow().current_leader,
            None => None,
        };
        let mut target = local_leader.or(self.hint);
        let mut next_validator = 0usize;
        let mut backoff = Duration::from_millis(50);
        loop {
            let to = match target {
                Some(to) => to,
                None if self.raft.is_some() => self.me,
                None if self.validators.is_empty() => return Err(LedgerError::Down),
                None => {
                    next_validator += 1;
                    self.validators[next_validator % self.validators.len()]
                }
            };
            let response = if to == self.me {
                Ok(serve(
                    self.raft.as_ref(),
                    self.view.as_ref(),
                    self.leader_changes,
                    request(),
                )
                .await)
            } else {
                network::call(&self.actor, to, request(), self.rpc_timeout).await
            };
            match response {
                Ok(Response::NotLeader {
                    leader: Some(leader),
                }) if leader != to => {
                    target = Some(leader);
                    let _ = self.actor.cast(LedgerMsg::LeaderHint(leader));
                    continue;
                }
                Ok(Response::NotLeader { .. }) | Err(_) => {
                    // Nobody leads yet, or the one we asked is gone: ask the next
                    // validator after a pause.
                    target = None;
                    if self.raft.is_some() && to == self.me && !self.validators.is_empty() {
                        next_validator += 1;
                        target = Some(self.validators[next_validator % self.validators.len()]);
                    }
                }
                Ok(Response::Refused(reason)) => return Err(LedgerError::Refused(reason)),
                Ok(response) => return Ok(response),
            }
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(LedgerError::Unavailable(
                    self.client_timeout.as_millis() as u64
                ));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(800));
        }
    }
}

/// Answers one request with this node's Raft (or says it runs none).
async fn serve(
    raft: Option<&Raft>,
    view: Option<&StateView>,
    leader_changes: u64,
    request: Request,
) -> Response {
    let (Some(raft), Some(view)) = (raft, view) else {
        return Response::NotLeader { leader: None };
    };
    let started = tokio::time::Instant::now();
    match request {
        Request::AppendEntries(rpc) => match raft.append_entries(rpc).await {
            Ok(r) => Response::AppendEntries(r),
            Err(e) => Response::Refused(e.to_string()),
        },
        Request::Vote(rpc) => match raft.vote(rpc).await {
            Ok(r) => Response::Vote(r),
            Err(e) => Response::Refused(e.to_string()),
        },
        Request::InstallSnapshot(rpc) => match raft.install_snapshot(rpc).await {
            Ok(r) => Response::InstallSnapshot(r),
            Err(e) => Response::Refused(e.to_string()),
        },
        Request::Write(command) => match raft.client_write(command).await {
            Ok(r) => {
                metrics::counter!("x0_ledger_commits_total").increment(1);
                metrics::histogram!("x0_ledger_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                Response::Written(r.data)
            }
            Err(e) => write_error(e),
        },
        Request::WriteMany(commands) => {
            // All proposed before any is awaited: they ride the same flushes and rounds.
            let mut pending = Vec::with_capacity(commands.len());
            for command in commands {
                match raft.client_write_ff(command).await {
                    Ok(rx) => pending.push(rx),
                    Err(e) => return Response::Refused(e.to_string()),
                }
            }
            let mut applied = Vec::with_capacity(pending.len());
            for rx in pending {
                match rx.await {
                    Ok(Ok(r)) => applied.push(r.data),
                    Ok(Err(ClientWriteError::ForwardToLeader(f))) => {
                        return Response::NotLeader {
                            leader: f.leader_id,
                        };
                    }
                    Ok(Err(e)) => return Response::Refused(e.to_string()),
                    Err(_) => return Response::Refused("the leader stopped".into()),
                }
            }
            metrics::counter!("x0_ledger_commits_total").increment(applied.len() as u64);
            metrics::histogram!("x0_ledger_commit_seconds").record(started.elapsed().as_secs_f64());
            Response::WrittenMany(applied)
        }
        Request::Read { from, limit } => match raft.ensure_linearizable().await {
            Ok(_) => view.read(|m| Response::Records {
                records: m.state.read(from, limit as usize).to_vec(),
                total: m.state.len(),
            }),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Response::NotLeader {
                    leader: f.leader_id,
                }
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Response::NotLeader { leader: None }
            }
            Err(e) => Response::Refused(e.to_string()),
        },
        Request::Status => {
            let metrics = raft.metrics().borrow().clone();
            if metrics
                .membership_config
                .membership()
                .get_node(&metrics.id)
                .is_none()
            {
                // A replica Raft has not been told about speaks for nobody.
                return Response::NotLeader {
                    leader: metrics.current_leader,
                };
            }
            Response::Status(Box::new(status(raft, view, leader_changes)))
        }
        Request::ChangeMembership(change) => {
            let result = match change {
                MembershipChange::AddLearner(id) => {
                    raft.add_learner(id, EmptyNode {}, false).await.map(|_| ())
                }
                MembershipChange::AddVoter(id) => {
                    let known = raft
                        .metrics()
                        .borrow()
                        .membership_config
                        .membership()
                        .get_node(&id)
                        .is_some();
                    let caught_up = if known {
                        Ok(())
                    } else {
                        raft.add_learner(id, EmptyNode {}, true).await.map(|_| ())
                    };
                    match caught_up {
                        Ok(()) => raft
                            .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                            .await
                            .map(|_| ()),
                        Err(e) => Err(e),
                    }
                }
                MembershipChange::RemoveVoter(id) => raft
                    .change_membership(ChangeMembers::RemoveVoters([id].into()), true)
                    .await
                    .map(|_| ()),
            };
            match result {
                Ok(()) => Response::Status(Box::new(status(raft, view, leader_changes))),
                Err(e) => write_error(e),
            }
        }
    }
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, EmptyNode>>) -> Response {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Response::NotLeader {
            leader: f.leader_id,
        },
        other => Response::Refused(other.to_string()),
    }
}

fn status(raft: &Raft, view: &StateView, leader_changes: u64) -> LedgerStatus {
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners: Vec<NodeId> = membership.learner_ids().collect();
    let role = if voters.contains(&metrics.id) {
        "validator"
    } else if learners.contains(&metrics.id) {
        "learner"
    } else {
        "member"
    };
    let state = match metrics.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    // One look at the applied state, so the three figures agree with each other.
    let (entries, snapshots_installed, members) = view.read(|m| {
        (
            m.state.len(),
            m.snapshots_installed,
            m.state.members().iter().copied().collect(),
        )
    });
    LedgerStatus {
        id: metrics.id,
        role: role.into(),
        state: state.into(),
        answered_by: metrics.id,
        term: metrics.current_term,
        leader: metrics.current_leader,
        commit_index: metrics.last_applied.map_or(0, |l| l.index),
        last_log_index: metrics.last_log_index.unwrap_or(0),
        snapshot_index: metrics.snapshot.map(|l| l.index),
        entries,
        snapshots_installed,
        members,
        voters: voters.into_iter().collect(),
        learners,
        joint: membership.get_joint_config().len() > 1,
        leader_changes,
    }
}
