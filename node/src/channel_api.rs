//! The HTTP API of channels: named groups whose posts only their members can read.
//!
//! A channel is addressed as `/api/v1/channels/{owner}/{name}`. Posts read here are
//! decrypted by this node; they also arrive in the inbox (`GET /api/v1/messages`, and its
//! live stream) with a `channel` field, as soon as this node can read them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use x0_actors::{ActorError, ChannelInfo, ChannelMessage};
use x0_protocols::NodeId;
use x0_protocols::channel::{ChannelError, ChannelId};
use x0_protocols::e2e::ContentKind;

use crate::api::{ApiState, Refusal, body_bytes, error, outgoing};

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/channels", get(list).post(create))
        .route("/api/v1/channels/{owner}/{name}", get(show).delete(delete))
        .route("/api/v1/channels/{owner}/{name}/members", put(set_members))
        .route(
            "/api/v1/channels/{owner}/{name}/messages",
            get(read).post(post),
        )
}

fn channel_error(e: ActorError) -> Response {
    let status = match &e {
        ActorError::Channel(c) => match c {
            ChannelError::InvalidName(_)
            | ChannelError::InvalidId(_)
            | ChannelError::TooManyMembers(_)
            | ChannelError::UnknownMember(_)
            | ChannelError::Refused(_) => StatusCode::BAD_REQUEST,
            ChannelError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ChannelError::UnknownChannel(_) => StatusCode::NOT_FOUND,
            ChannelError::Exists(_) => StatusCode::CONFLICT,
            ChannelError::NotOwner | ChannelError::NotMember(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
        ActorError::CrdtDisabled => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e)
}

fn parse_members(members: &[String]) -> Result<Vec<NodeId>, Refusal> {
    members
        .iter()
        .map(|m| {
            m.parse()
                .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("member {m:?}: {e}")))
        })
        .collect()
}

/// The channel `{owner}/{name}` of a path.
fn channel_id(owner: &str, name: &str) -> Result<ChannelId, Refusal> {
    format!("{owner}/{name}")
        .parse()
        .map_err(|e: ChannelError| Refusal(StatusCode::BAD_REQUEST, e.to_string()))
}

/// A channel this node owns, for the calls only its owner may make.
fn own_channel(state: &ApiState, owner: &str, name: &str) -> Result<String, Refusal> {
    let id = channel_id(owner, name)?;
    if id.owner != state.node.id() {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            ChannelError::NotOwner.to_string(),
        ));
    }
    Ok(id.name)
}

async fn list(State(state): State<Arc<ApiState>>) -> Response {
    match state.node.channels().await {
        Ok(channels) => Json(channels).into_response(),
        Err(e) => channel_error(e),
    }
}

async fn show(
    State(state): State<Arc<ApiState>>,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    let id = match channel_id(&owner, &name) {
        Ok(id) => id.to_string(),
        Err(refusal) => return refusal.into_response(),
    };
    match state.node.channels().await {
        Ok(channels) => match channels.into_iter().find(|c: &ChannelInfo| c.id == id) {
            Some(channel) => Json(channel).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                format!("{id}: no such channel, or this node is not a member"),
            ),
        },
        Err(e) => channel_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    /// Node ids; this node is always a member.
    #[serde(default)]
    members: Vec<String>,
}

async fn create(State(state): State<Arc<ApiState>>, Json(body): Json<CreateBody>) -> Response {
    let members = match parse_members(&body.members) {
        Ok(m) => m,
        Err(refusal) => return refusal.into_response(),
    };
    match state.node.channel_create(&body.name, members).await {
        Ok(channel) => (StatusCode::CREATED, Json(channel)).into_response(),
        Err(e) => channel_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersBody {
    members: Vec<String>,
}

async fn set_members(
    State(state): State<Arc<ApiState>>,
    Path((owner, name)): Path<(String, String)>,
    Json(body): Json<MembersBody>,
) -> Response {
    let name = match own_channel(&state, &owner, &name) {
        Ok(name) => name,
        Err(refusal) => return refusal.into_response(),
    };
    let members = match parse_members(&body.members) {
        Ok(m) => m,
        Err(refusal) => return refusal.into_response(),
    };
    match state.node.channel_set_members(&name, members).await {
        Ok(channel) => Json(channel).into_response(),
        Err(e) => channel_error(e),
    }
}

async fn delete(
    State(state): State<Arc<ApiState>>,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    let name = match own_channel(&state, &owner, &name) {
        Ok(name) => name,
        Err(refusal) => return refusal.into_response(),
    };
    match state.node.channel_delete(&name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => channel_error(e),
    }
}

/// One post, as the API shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PostBody {
    pub channel: String,
    pub from: String,
    pub post_id: u64,
    /// When the writer posted it (Unix milliseconds).
    pub sent_ms: u64,
    pub epoch: u64,
    pub kind: ContentKind,
    pub name: Option<String>,
    pub mime: Option<String>,
    pub size: u64,
    pub sha256: String,
    /// The body as text when it is UTF-8.
    pub text: Option<String>,
    pub hex: String,
}

impl From<ChannelMessage> for PostBody {
    fn from(m: ChannelMessage) -> Self {
        PostBody {
            channel: m.channel,
            from: m.from.to_string(),
            post_id: m.post_id,
            sent_ms: m.sent_ms,
            epoch: m.epoch,
            kind: m.content.kind,
            name: m.content.name,
            mime: m.content.mime,
            size: m.content.size,
            sha256: hex::encode(m.content.sha256),
            hex: hex::encode(&m.body),
            text: String::from_utf8(m.body).ok(),
        }
    }
}

async fn read(
    State(state): State<Arc<ApiState>>,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    let id = match channel_id(&owner, &name) {
        Ok(id) => id,
        Err(refusal) => return refusal.into_response(),
    };
    match state.node.channel_read(id).await {
        Ok(posts) => {
            Json(posts.into_iter().map(PostBody::from).collect::<Vec<_>>()).into_response()
        }
        Err(e) => channel_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPost {
    text: Option<String>,
    hex: Option<String>,
    /// text (default), file, image, audio, video or notice.
    kind: Option<String>,
    name: Option<String>,
    mime: Option<String>,
}

async fn post(
    State(state): State<Arc<ApiState>>,
    Path((owner, name)): Path<(String, String)>,
    Json(body): Json<NewPost>,
) -> Response {
    let id = match channel_id(&owner, &name) {
        Ok(id) => id,
        Err(refusal) => return refusal.into_response(),
    };
    let bytes = match body_bytes(body.text, body.hex) {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal.into_response(),
    };
    let content = match outgoing(body.kind.as_deref(), body.name, body.mime) {
        Ok(content) => content,
        Err(refusal) => return refusal.into_response(),
    };
    match state.node.channel_post(id, content, bytes).await {
        Ok(posted) => (StatusCode::CREATED, Json(PostBody::from(posted))).into_response(),
        Err(e) => channel_error(e),
    }
}
