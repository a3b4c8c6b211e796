//! openraft's network, implemented over the ledger actor's routed calls.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{EmptyNode, RaftNetwork, RaftNetworkFactory};
use ractor::ActorRef;
use x0_protocols::NodeId;

use super::rpc::{Request, Response};
use super::types::LedgerRaftConfig;
use super::{CallError, LedgerMsg};

/// Makes a client per peer; each one sends through the ledger actor.
pub struct Network {
    pub(super) actor: ActorRef<LedgerMsg>,
    pub(super) timeout: Duration,
}

impl RaftNetworkFactory<LedgerRaftConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, _node: &EmptyNode) -> PeerClient {
        PeerClient {
            target,
            actor: self.actor.clone(),
            timeout: self.timeout,
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    actor: ActorRef<LedgerMsg>,
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, EmptyNode, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn call<E: std::error::Error>(
        &self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<NodeId, EmptyNode, RaftError<NodeId, E>>> {
        let timeout = self.timeout.min(option.hard_ttl());
        match call(&self.actor, self.target, request, timeout).await {
            Ok(Response::Refused(reason)) => {
                Err(RPCError::Network(NetworkError::new(&Failure(reason))))
            }
            Ok(response) => Ok(response),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }
}

/// One routed request and its response, through the ledger actor.
pub(super) async fn call(
    actor: &ActorRef<LedgerMsg>,
    to: NodeId,
    request: Request,
    timeout: Duration,
) -> Result<Response, CallError> {
    match actor
        .call(
            |reply| LedgerMsg::Call { to, request, reply },
            Some(timeout),
        )
        .await
    {
        Ok(ractor::rpc::CallResult::Success(result)) => result,
        Ok(ractor::rpc::CallResult::Timeout) => Err(CallError::Timeout),
        Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(CallError::Down),
    }
}

fn unexpected<E: std::error::Error>(
    response: Response,
) -> RPCError<NodeId, EmptyNode, RaftError<NodeId, E>> {
    let what = match response {
        Response::NotLeader { .. } => "the peer runs no Raft".to_string(),
        other => format!("unexpected response {other:?}"),
    };
    RPCError::Network(NetworkError::new(&Failure(what)))
}

impl RaftNetwork<LedgerRaftConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<LedgerRaftConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.call(Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<LedgerRaftConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.call(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(Request::Vote(rpc), &option).await? {
            Response::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }
}
