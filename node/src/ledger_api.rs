//! The ledger's HTTP API: status, entries (append and read) and voter-set changes.
//!
//! Any node answers: a write or a linearizable read made at a follower or at a plain
//! member is carried to the leader by the ledger actor, so clients need not know who
//! leads.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use x0_actors::{LedgerError, LedgerStatus, MembershipChange};
use x0_protocols::NodeId;
use x0_protocols::ledger::{Command, EntryKind, MemberChange, Record};

use crate::api::{ApiState, error};

/// Most entries one read returns.
pub const MAX_READ: u32 = 1000;

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/ledger/status", get(status))
        .route("/api/v1/ledger/entries", get(read).post(append))
        .route("/api/v1/ledger/entries/batch", post(append_batch))
        .route("/api/v1/ledger/membership", post(change_membership))
}

fn ledger_error(e: LedgerError) -> Response {
    let status = match e {
        LedgerError::Invalid(_) => StatusCode::BAD_REQUEST,
        LedgerError::Refused(_) => StatusCode::CONFLICT,
        LedgerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        LedgerError::Down => StatusCode::NOT_FOUND,
    };
    error(status, e)
}

/// The status as JSON, node ids as text.
#[derive(Serialize, Deserialize)]
pub struct StatusBody {
    pub id: String,
    pub role: String,
    pub state: String,
    pub answered_by: String,
    pub term: u64,
    pub leader: Option<String>,
    pub commit_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: Option<u64>,
    pub entries: u64,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    pub joint: bool,
    pub leader_changes: u64,
    pub snapshots_installed: u64,
    /// Nodes admitted by membership entries.
    pub members: Vec<String>,
}

impl From<LedgerStatus> for StatusBody {
    fn from(s: LedgerStatus) -> Self {
        let ids = |v: Vec<NodeId>| v.iter().map(ToString::to_string).collect();
        StatusBody {
            id: s.id.to_string(),
            role: s.role,
            state: s.state,
            answered_by: s.answered_by.to_string(),
            term: s.term,
            leader: s.leader.map(|l| l.to_string()),
            commit_index: s.commit_index,
            last_log_index: s.last_log_index,
            snapshot_index: s.snapshot_index,
            entries: s.entries,
            voters: ids(s.voters),
            learners: ids(s.learners),
            joint: s.joint,
            leader_changes: s.leader_changes,
            snapshots_installed: s.snapshots_installed,
            members: ids(s.members),
        }
    }
}

async fn status(State(state): State<Arc<ApiState>>) -> Response {
    match state.node.ledger_status().await {
        Ok(s) => Json(StatusBody::from(s)).into_response(),
        Err(e) => ledger_error(e),
    }
}

/// `POST /api/v1/ledger/entries`: one entry of a given type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendBody {
    /// app (default), dao, config or membership.
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    /// Body of app and dao entries, as text or hex.
    pub text: Option<String>,
    pub hex: Option<String>,
    /// Config entries.
    pub key: Option<String>,
    pub value: Option<String>,
    /// Membership entries: the node and admit or remove.
    pub node: Option<String>,
    pub change: Option<String>,
    /// Makes retries idempotent: an id already applied returns its first position.
    pub request_id: Option<String>,
}

fn default_type() -> String {
    "app".into()
}

fn body_bytes(body: &AppendBody) -> Result<Vec<u8>, String> {
    match (&body.text, &body.hex) {
        (Some(text), None) => Ok(text.clone().into_bytes()),
        (None, Some(hex)) => hex::decode(hex.trim()).map_err(|e| format!("hex: {e}")),
        _ => Err(format!(
            "a {} entry needs exactly one of \"text\" and \"hex\"",
            body.kind
        )),
    }
}

fn entry_of(body: &AppendBody) -> Result<EntryKind, String> {
    match body.kind.as_str() {
        "app" => Ok(EntryKind::App {
            body: body_bytes(body)?,
        }),
        "dao" => Ok(EntryKind::Dao {
            body: body_bytes(body)?,
        }),
        "config" => match (&body.key, &body.value) {
            (Some(key), Some(value)) => Ok(EntryKind::Config {
                key: key.clone(),
                value: value.clone(),
            }),
            _ => Err("a config entry needs \"key\" and \"value\"".into()),
        },
        "membership" => {
            let node = body
                .node
                .as_deref()
                .ok_or("a membership entry needs \"node\"")?
                .parse()
                .map_err(|e| format!("node: {e}"))?;
            let change = match body.change.as_deref() {
                Some("admit") => MemberChange::Admit,
                Some("remove") => MemberChange::Remove,
                other => {
                    return Err(format!(
                        "change: must be \"admit\" or \"remove\", got {other:?}"
                    ));
                }
            };
            Ok(EntryKind::Membership { node, change })
        }
        other => Err(format!(
            "type: must be app, dao, config or membership, got {other:?}"
        )),
    }
}

async fn append(State(state): State<Arc<ApiState>>, Json(body): Json<AppendBody>) -> Response {
    let entry = match entry_of(&body) {
        Ok(entry) => entry,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let command = Command {
        submitted_by: state.node.id(),
        request_id: body.request_id,
        entry,
    };
    match state.node.ledger_append(command).await {
        Ok(applied) => (
            StatusCode::CREATED,
            Json(serde_json::json!({
                "position": applied.position,
                "duplicate": applied.duplicate,
            })),
        )
            .into_response(),
        Err(e) => ledger_error(e),
    }
}

/// Most entries one batch carries, and their total body bytes: the batch crosses the
/// mesh to the leader as one routed message.
pub const MAX_BATCH: usize = 256;
pub const MAX_BATCH_BYTES: usize = 128 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    entries: Vec<AppendBody>,
}

/// `POST /api/v1/ledger/entries/batch`: several entries proposed together, so they share
/// log flushes and replication rounds; answered in order.
async fn append_batch(
    State(state): State<Arc<ApiState>>,
    Json(batch): Json<BatchBody>,
) -> Response {
    if batch.entries.is_empty() || batch.entries.len() > MAX_BATCH {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "entries: between 1 and {MAX_BATCH}, got {}",
                batch.entries.len()
            ),
        );
    }
    let mut commands = Vec::with_capacity(batch.entries.len());
    let mut bytes = 0;
    for (i, body) in batch.entries.into_iter().enumerate() {
        let entry = match entry_of(&body) {
            Ok(entry) => entry,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("entries[{i}]: {e}")),
        };
        bytes += match &entry {
            EntryKind::App { body } | EntryKind::Dao { body } => body.len(),
            EntryKind::Config { key, value } => key.len() + value.len(),
            EntryKind::Membership { .. } => 32,
        };
        commands.push(Command {
            submitted_by: state.node.id(),
            request_id: body.request_id,
            entry,
        });
    }
    if bytes > MAX_BATCH_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a batch carries at most {MAX_BATCH_BYTES} bytes of entries, got {bytes}"),
        );
    }
    match state.node.ledger_append_many(commands).await {
        Ok(applied) => (
            StatusCode::CREATED,
            Json(
                applied
                    .iter()
                    .map(
                        |a| serde_json::json!({ "position": a.position, "duplicate": a.duplicate }),
                    )
                    .collect::<Vec<_>>(),
            ),
        )
            .into_response(),
        Err(e) => ledger_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    #[serde(default = "first")]
    from: u64,
    limit: Option<u32>,
    /// `local` (default: this node's replica) or `linearizable` (through the leader).
    consistency: Option<String>,
}

fn first() -> u64 {
    1
}

/// One entry of the record as JSON.
#[derive(Serialize, Deserialize)]
pub struct EntryBody {
    pub position: u64,
    pub log_index: u64,
    pub term: u64,
    pub submitted_by: String,
    pub request_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    /// App and dao bodies: as text when UTF-8, and always as hex.
    pub text: Option<String>,
    pub hex: Option<String>,
    pub key: Option<String>,
    pub value: Option<String>,
    pub node: Option<String>,
    pub change: Option<String>,
}

impl From<Record> for EntryBody {
    fn from(r: Record) -> Self {
        let mut body = EntryBody {
            position: r.position,
            log_index: r.log_index,
            term: r.term,
            submitted_by: r.submitted_by.to_string(),
            request_id: r.request_id,
            kind: match r.entry {
                EntryKind::App { .. } => "app",
                EntryKind::Dao { .. } => "dao",
                EntryKind::Config { .. } => "config",
                EntryKind::Membership { .. } => "membership",
            }
            .into(),
            text: None,
            hex: None,
            key: None,
            value: None,
            node: None,
            change: None,
        };
        match r.entry {
            EntryKind::App { body: bytes } | EntryKind::Dao { body: bytes } => {
                body.hex = Some(hex::encode(&bytes));
                body.text = String::from_utf8(bytes).ok();
            }
            EntryKind::Config { ref key, ref value } => {
                body.key = Some(key.clone());
                body.value = Some(value.clone());
            }
            EntryKind::Membership { node, change } => {
                body.node = Some(node.to_string());
                body.change = Some(
                    match change {
                        MemberChange::Admit => "admit",
                        MemberChange::Remove => "remove",
                    }
                    .into(),
                );
            }
        }
        body
    }
}

/// `GET /api/v1/ledger/entries` answer.
#[derive(Serialize, Deserialize)]
pub struct EntriesBody {
    /// Entries in the record when it was read.
    pub total: u64,
    pub entries: Vec<EntryBody>,
}

async fn read(State(state): State<Arc<ApiState>>, Query(query): Query<ReadQuery>) -> Response {
    let linearizable = match query.consistency.as_deref() {
        None | Some("local") => false,
        Some("linearizable") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("consistency: must be local or linearizable, got {other:?}"),
            );
        }
    };
    let limit = query.limit.unwrap_or(100).min(MAX_READ);
    match state
        .node
        .ledger_read(query.from, limit, linearizable)
        .await
    {
        Ok(result) => Json(EntriesBody {
            total: result.total,
            entries: result.records.into_iter().map(EntryBody::from).collect(),
        })
        .into_response(),
        Err(e) => ledger_error(e),
    }
}

/// `POST /api/v1/ledger/membership`: `{"action": "add_learner"|"add_voter"|"remove_voter",
/// "node": "<id>"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembershipBody {
    action: String,
    node: String,
}

async fn change_membership(
    State(state): State<Arc<ApiState>>,
    Json(body): Json<MembershipBody>,
) -> Response {
    let node: NodeId = match body.node.parse() {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("node: {e}")),
    };
    let change = match body.action.as_str() {
        "add_learner" => MembershipChange::AddLearner(node),
        "add_voter" => MembershipChange::AddVoter(node),
        "remove_voter" => MembershipChange::RemoveVoter(node),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("action: must be add_learner, add_voter or remove_voter, got {other:?}"),
            );
        }
    };
    match state.node.ledger_change(change).await {
        Ok(s) => Json(StatusBody::from(s)).into_response(),
        Err(e) => ledger_error(e),
    }
}
