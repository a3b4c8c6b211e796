//! The HTTP API: health, readiness, Prometheus metrics, status, peers, routes and
//! messages; the ledger's part is in [`crate::ledger_api`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use x0_actors::e2e::Outgoing;
use x0_actors::{ActorError, ForwardingStats, NodeHandle, SendError};
use x0_protocols::NodeId;
use x0_protocols::e2e::ContentKind;

use crate::inbox::{Inbox, InboxMessage};
use crate::p2p;

/// What the handlers need; shared by all requests.
pub(crate) struct ApiState {
    pub node: Arc<NodeHandle>,
    pub inbox: Arc<Inbox>,
    pub name: Option<String>,
    pub swarm: p2p::SwarmControl,
    pub needs_peers: bool,
    pub api_addr: SocketAddr,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

pub(crate) fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/peers", get(peers))
        .route("/api/v1/routes", get(routes))
        .route("/api/v1/relay", get(relay))
        .route("/api/v1/messages", get(messages).post(send))
        .route("/api/v1/messages/stream", get(stream_messages))
        .route(
            "/api/v1/messages/{seq}/read",
            axum::routing::post(mark_read),
        )
        .route("/api/v1/outbox", get(outbox))
        .merge(crate::ledger_api::routes())
        .merge(crate::crdt_api::routes())
        .merge(crate::channel_api::routes())
        .with_state(state)
}

pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    match state.node.neighbors().await {
        Ok(n) if !n.is_empty() || !state.needs_peers => (StatusCode::OK, "ready").into_response(),
        Ok(_) => (StatusCode::SERVICE_UNAVAILABLE, "no neighbors yet").into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [("content-type", "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "another metrics recorder owns this process",
        ),
    }
}

#[derive(Serialize)]
struct StatusBody {
    id: String,
    name: Option<String>,
    version: &'static str,
    uptime_ms: u64,
    neighbors: usize,
    actor_restarts: u64,
    envelopes_received: u64,
    envelope_decode_errors: u64,
    inbound_dropped: u64,
    forwarding: ForwardingStats,
    listen_addrs: Vec<String>,
    api: String,
}

async fn status(State(state): State<Arc<ApiState>>) -> Response {
    let status = match state.node.status().await {
        Ok(s) => s,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let listen_addrs = state
        .swarm
        .listen_addrs()
        .await
        .iter()
        .map(ToString::to_string)
        .collect();
    Json(StatusBody {
        id: status.id.to_string(),
        name: state.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_ms: status.uptime_ms,
        neighbors: status.neighbors,
        actor_restarts: status.actor_restarts,
        envelopes_received: status.envelopes_received,
        envelope_decode_errors: status.envelope_decode_errors,
        inbound_dropped: status.inbound_dropped,
        forwarding: status.forwarding,
        listen_addrs,
        api: format!("http://{}", state.api_addr),
    })
    .into_response()
}

/// `GET /api/v1/outbox`: every sealed message this node sent and its status.
async fn outbox(State(state): State<Arc<ApiState>>) -> Response {
    match state.node.outbox().await {
        Ok(entries) => Json(
            entries
                .into_iter()
                .map(|e| {
                    json!({
                        "message_id": e.message_id,
                        "to": e.destination.to_string(),
                        "status": e.status,
                        "reason": e.reason,
                        "created_ms": e.created_ms,
                        "updated_ms": e.updated_ms,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// `POST /api/v1/messages/{seq}/read`: the application read this inbox message; a
/// sealed one's sender gets a signed read receipt.
async fn mark_read(
    State(state): State<Arc<ApiState>>,
    axum::extract::Path(seq): axum::extract::Path<u64>,
) -> Response {
    let Some(message) = state
        .inbox
        .after(seq.saturating_sub(1))
        .into_iter()
        .find(|m| m.seq == seq)
    else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no message {seq} in the inbox"),
        );
    };
    if !message.encrypted {
        return error(
            StatusCode::CONFLICT,
            "only sealed messages carry read receipts",
        );
    }
    state.node.mark_read(message.from, message.id);
    Json(json!({ "seq": seq, "receipt": "read" })).into_response()
}

/// `GET /api/v1/relay`: what this node did for others.
async fn relay(State(state): State<Arc<ApiState>>) -> Response {
    let status = match state.node.status().await {
        Ok(s) => s,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let peers = state.swarm.peer_addrs().await;
    Json(json!({
        "uptime_ms": status.uptime_ms,
        "connected_peers": peers.len(),
        "neighbors": status.neighbors,
        "relayed_messages": status.forwarding.relayed,
        "relayed_bytes": status.forwarding.relayed_bytes,
        "parked": status.forwarding.parked,
        "resumed": status.forwarding.resumed,
        "originated": status.forwarding.originated,
        "delivered": status.forwarding.delivered,
        "dropped": status.forwarding.dropped,
        "rate_limited": status.rate_limited,
        "rate_limit": {
            "bytes_per_s": status.relay_limit.bytes_per_s,
            "window_ms": status.relay_limit.window_ms,
        },
    }))
    .into_response()
}

#[derive(Serialize)]
struct PeerBody {
    id: String,
    rtt_ms: Option<f64>,
    loss: f64,
    bidirectional: bool,
    last_seen_ms_ago: u64,
    known_for_ms: u64,
    beacons_received: u64,
    address: Option<String>,
    /// The post-quantum session with this neighbor, once established.
    session: Option<SessionBody>,
}

#[derive(Serialize)]
struct SessionBody {
    suite: String,
    age_ms: u64,
    initiator: bool,
    /// Envelopes sealed to the peer, and opened from it, under the session: the link's
    /// traffic that a recording of it would not reveal, even to a quantum computer.
    frames_sent: u64,
    frames_received: u64,
}

async fn peers(State(state): State<Arc<ApiState>>) -> Response {
    let neighbors = match state.node.neighbors().await {
        Ok(n) => n,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let addresses = state.swarm.peer_addrs().await;
    let mut sessions: std::collections::BTreeMap<NodeId, SessionBody> = state
        .node
        .sessions()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            (
                s.peer,
                SessionBody {
                    suite: s.suite,
                    age_ms: s.age_ms,
                    initiator: s.initiator,
                    frames_sent: s.frames_sent,
                    frames_received: s.frames_received,
                },
            )
        })
        .collect();
    let body: Vec<PeerBody> = neighbors
        .into_iter()
        .map(|n| PeerBody {
            id: n.id.to_string(),
            rtt_ms: n.rtt_ms,
            loss: n.loss,
            bidirectional: n.bidirectional,
            last_seen_ms_ago: n.last_seen_ms_ago,
            known_for_ms: n.known_for_ms,
            beacons_received: n.beacons_received,
            address: p2p::peer_id_of(&n.id)
                .and_then(|p| addresses.get(&p))
                .map(ToString::to_string),
            session: sessions.remove(&n.id),
        })
        .collect();
    Json(body).into_response()
}

#[derive(Serialize)]
struct RouteBody {
    destination: String,
    next_hop: String,
    metric: u16,
    seqno: u32,
    age_ms: u64,
}

async fn routes(State(state): State<Arc<ApiState>>) -> Response {
    match state.node.routes().await {
        Ok(routes) => Json(
            routes
                .into_iter()
                .map(|r| RouteBody {
                    destination: r.destination.to_string(),
                    next_hop: r.next_hop.to_string(),
                    metric: r.metric,
                    seqno: r.seqno,
                    age_ms: r.age_ms,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// `POST /api/v1/messages` body: text or hex-encoded bytes, to a node id.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    to: String,
    text: Option<String>,
    hex: Option<String>,
    /// Seal the message to the destination's end-to-end keys: relays carry it but
    /// cannot read or alter it.
    #[serde(default)]
    encrypt: bool,
    /// Sealed messages: how long it may take to be delivered before its status turns
    /// to expired (default 60 s).
    ttl_ms: Option<u64>,
    /// Sealed messages: text (default), file, image, audio, video or notice.
    kind: Option<String>,
    /// Sealed files and media: the file name and MIME type.
    name: Option<String>,
    mime: Option<String>,
}

fn content_kind(name: &str) -> Option<ContentKind> {
    Some(match name {
        "text" => ContentKind::Text,
        "file" => ContentKind::File,
        "image" => ContentKind::Image,
        "audio" => ContentKind::Audio,
        "video" => ContentKind::Video,
        "notice" => ContentKind::Notice,
        _ => return None,
    })
}

/// A request refused before it reached the node: the status and why. (Small, unlike a
/// `Response`, so helpers can return it in a `Result`.)
pub(crate) struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// The bytes of a message given as `text` or as `hex`: exactly one of the two.
pub(crate) fn body_bytes(text: Option<String>, hex: Option<String>) -> Result<Vec<u8>, Refusal> {
    match (text, hex) {
        (Some(text), None) => Ok(text.into_bytes()),
        (None, Some(hex)) => hex::decode(hex.trim())
            .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("hex: {e}"))),
        _ => Err(Refusal(
            StatusCode::BAD_REQUEST,
            "give exactly one of \"text\" and \"hex\"".into(),
        )),
    }
}

/// What a sealed message or channel post is: its kind (text unless said), and a file's
/// name and MIME type.
pub(crate) fn outgoing(
    kind: Option<&str>,
    name: Option<String>,
    mime: Option<String>,
) -> Result<Outgoing, Refusal> {
    let kind = match kind.map(content_kind) {
        None => ContentKind::Text,
        Some(Some(kind)) => kind,
        Some(None) => {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "kind: must be text, file, image, audio, video or notice".into(),
            ));
        }
    };
    Ok(Outgoing { kind, name, mime })
}

async fn send(State(state): State<Arc<ApiState>>, Json(body): Json<SendBody>) -> Response {
    let destination: NodeId = match body.to.parse() {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("to: {e}")),
    };
    let payload = match body_bytes(body.text, body.hex) {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal.into_response(),
    };
    if !body.encrypt && (body.kind.is_some() || body.name.is_some() || body.mime.is_some()) {
        return error(
            StatusCode::BAD_REQUEST,
            "kind, name and mime describe sealed messages: add \"encrypt\": true",
        );
    }
    if body.encrypt {
        let content = match outgoing(body.kind.as_deref(), body.name, body.mime) {
            Ok(content) => content,
            Err(refusal) => return refusal.into_response(),
        };
        return match state
            .node
            .send_sealed(destination, payload, content, body.ttl_ms)
            .await
        {
            Ok(message_id) => (
                StatusCode::ACCEPTED,
                Json(json!({
                    "message_id": message_id,
                    "destination": destination.to_string(),
                    "encrypted": true,
                    "status": "created",
                })),
            )
                .into_response(),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        };
    }
    match state.node.send(destination, payload).await {
        Ok(sent) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "id": sent.id,
                "destination": sent.destination.to_string(),
                "next_hop": sent.next_hop.to_string(),
            })),
        )
            .into_response(),
        Err(ActorError::Send(e @ SendError::NoRoute(_))) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, e)
        }
        Err(ActorError::Send(e @ SendError::TooLarge(_))) => {
            error(StatusCode::PAYLOAD_TOO_LARGE, e)
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    /// Only messages with a higher sequence number.
    #[serde(default)]
    after: u64,
    /// Wait up to this long for one to arrive (long polling), at most 60 s.
    wait_ms: Option<u64>,
}

#[derive(Serialize)]
struct MessageBody {
    seq: u64,
    from: String,
    id: u64,
    hops: u8,
    received_at_unix_ms: u64,
    encrypted: bool,
    /// Sealed messages: text, file, image, audio, video or notice, with a file's name,
    /// MIME type, size and SHA-256 (checked on arrival).
    kind: Option<ContentKind>,
    name: Option<String>,
    mime: Option<String>,
    size: Option<u64>,
    sha256: Option<String>,
    /// Posted to this channel (`<owner>/<name>`) rather than sent to this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<String>,
    /// The payload as text when it is UTF-8.
    text: Option<String>,
    hex: String,
}

impl From<InboxMessage> for MessageBody {
    fn from(m: InboxMessage) -> Self {
        MessageBody {
            seq: m.seq,
            from: m.from.to_string(),
            id: m.id,
            hops: m.hops,
            received_at_unix_ms: m.received_at_unix_ms,
            encrypted: m.encrypted,
            kind: m.content.as_ref().map(|c| c.kind),
            name: m.content.as_ref().and_then(|c| c.name.clone()),
            mime: m.content.as_ref().and_then(|c| c.mime.clone()),
            size: m.content.as_ref().map(|c| c.size),
            sha256: m.content.as_ref().map(|c| hex::encode(c.sha256)),
            channel: m.channel,
            hex: hex::encode(&m.payload),
            text: String::from_utf8(m.payload).ok(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    /// Start after this sequence number (0: everything the inbox still holds).
    #[serde(default)]
    after: u64,
}

/// `GET /api/v1/messages/stream`: the inbox as server-sent events, one `message` event
/// per arrival (its `id` the sequence number), held open until the client leaves.
async fn stream_messages(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<StreamQuery>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;

    let inbox = state.inbox.clone();
    let batches = futures::stream::unfold((inbox, query.after), |(inbox, after)| async move {
        let batch = inbox.wait_after(after).await;
        let last = batch.last().map_or(after, |m| m.seq);
        Some((batch, (inbox, last)))
    });
    let events = batches.flat_map(futures::stream::iter).map(|m| {
        let seq = m.seq;
        Event::default()
            .event("message")
            .id(seq.to_string())
            .json_data(MessageBody::from(m))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn messages(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<MessagesQuery>,
) -> Response {
    let mut found = state.inbox.after(query.after);
    if found.is_empty()
        && let Some(wait) = query.wait_ms
    {
        let wait = std::time::Duration::from_millis(wait.min(60_000));
        if let Ok(arrived) = tokio::time::timeout(wait, state.inbox.wait_after(query.after)).await {
            found = arrived;
        }
    }
    Json(found.into_iter().map(MessageBody::from).collect::<Vec<_>>()).into_response()
}
