//! The HTTP API: health, readiness, Prometheus metrics, status and peers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use x0_actors::NodeHandle;

use crate::p2p;

/// What the handlers need; shared by all requests.
pub(crate) struct ApiState {
    pub node: Arc<NodeHandle>,
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
        .with_state(state)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
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
        listen_addrs,
        api: format!("http://{}", state.api_addr),
    })
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
}

async fn peers(State(state): State<Arc<ApiState>>) -> Response {
    let neighbors = match state.node.neighbors().await {
        Ok(n) => n,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let addresses = state.swarm.peer_addrs().await;
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
        })
        .collect();
    Json(body).into_response()
}
