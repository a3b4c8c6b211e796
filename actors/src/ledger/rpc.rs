//! What ledger nodes say to each other, routed over the mesh.
//!
//! Validators are rarely neighbors in a large mesh, so the ledger's RPCs travel as routed
//! messages of the [`Service::Ledger`](x0_protocols::forwarding::Service) service, signed by
//! their origin like any other; a call id pairs a response with its request.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use x0_protocols::NodeId;
use x0_protocols::ledger::{Applied, Command, Record};

use super::types::LedgerRaftConfig;

/// One routed ledger message.
#[derive(Debug, Serialize, Deserialize)]
pub enum Wire {
    Request { call: u64, request: Request },
    Response { call: u64, response: Response },
}

impl Wire {
    pub fn encode(&self) -> Vec<u8> {
        // Owned data into a Vec: cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// A change of the Raft voter set, carried out at the leader with openraft's joint
/// consensus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Start replicating to a node without giving it a vote.
    AddLearner(NodeId),
    /// Give a node a vote (it is caught up as a learner first).
    AddVoter(NodeId),
    /// Take a vote away; the node stays a learner.
    RemoveVoter(NodeId),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<LedgerRaftConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<LedgerRaftConfig>),
    /// A client write, to be proposed by the leader.
    Write(Command),
    /// Client writes proposed together, so they share log flushes and replication
    /// rounds; answered in order.
    WriteMany(Vec<Command>),
    /// A linearizable read at the leader.
    Read {
        from: u64,
        limit: u32,
    },
    Status,
    ChangeMembership(MembershipChange),
}

impl Request {
    /// A stable name, for metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Request::AppendEntries(_) => "append_entries",
            Request::Vote(_) => "vote",
            Request::InstallSnapshot(_) => "install_snapshot",
            Request::Write(_) => "write",
            Request::WriteMany(_) => "write_many",
            Request::Read { .. } => "read",
            Request::Status => "status",
            Request::ChangeMembership(_) => "change_membership",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(AppendEntriesResponse<NodeId>),
    Vote(VoteResponse<NodeId>),
    InstallSnapshot(InstallSnapshotResponse<NodeId>),
    Written(Applied),
    WrittenMany(Vec<Applied>),
    Records {
        records: Vec<Record>,
        total: u64,
    },
    Status(Box<super::LedgerStatus>),
    /// Not the leader; here is who is, if known.
    NotLeader {
        leader: Option<NodeId>,
    },
    /// The request reached Raft and Raft refused it.
    Refused(String),
}
