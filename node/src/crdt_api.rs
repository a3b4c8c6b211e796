//! The HTTP API of CRDT sync: the node registry and application key spaces.
//!
//! Names and values travel as text; a value written as bytes by an embedding program
//! that is not UTF-8 is shown in hex instead (`value_hex`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use x0_actors::{ActorError, RegistryRecord};
use x0_protocols::crdt::{EntryError, SignedEntry};

use crate::api::{ApiState, error};

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/registry", get(registry))
        .route("/api/v1/crdt", get(status))
        .route("/api/v1/crdt/{space}", get(space))
        .route(
            "/api/v1/crdt/{space}/{name}",
            get(read).put(write).delete(delete),
        )
}

fn crdt_error(e: ActorError) -> Response {
    let status = match &e {
        ActorError::Refused(EntryError::NotAllowed(_) | EntryError::TooLarge(_)) => {
            StatusCode::BAD_REQUEST
        }
        ActorError::CrdtDisabled => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e)
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RegistryBody {
    pub count: usize,
    pub records: Vec<RegistryRecord>,
}

async fn registry(State(state): State<Arc<ApiState>>) -> Response {
    match state.node.registry().await {
        Ok(records) => Json(RegistryBody {
            count: records.len(),
            records,
        })
        .into_response(),
        Err(e) => crdt_error(e),
    }
}

async fn status(State(state): State<Arc<ApiState>>) -> Response {
    match state.node.crdt_status().await {
        Ok(status) => Json(status).into_response(),
        Err(e) => crdt_error(e),
    }
}

/// One entry of an application key space.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EntryBody {
    pub space: String,
    pub name: String,
    /// `None` for a deleted key (or a value that is not text: see `value_hex`).
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value_hex: Option<String>,
    pub deleted: bool,
    pub writer: String,
    /// The writer's stamp, in mesh milliseconds (Unix time in a real node).
    pub stamp: u64,
}

impl From<&SignedEntry> for EntryBody {
    fn from(signed: &SignedEntry) -> Self {
        let e = &signed.entry;
        let text = e
            .value
            .as_ref()
            .map(|v| String::from_utf8(v.clone()).map_err(|_| hex::encode(v)));
        EntryBody {
            space: e.key.space.clone(),
            name: String::from_utf8_lossy(&e.key.name).into_owned(),
            value: text.clone().and_then(Result::ok),
            value_hex: text.and_then(Result::err),
            deleted: e.value.is_none(),
            writer: e.writer.to_string(),
            stamp: e.stamp,
        }
    }
}

async fn space(State(state): State<Arc<ApiState>>, Path(space): Path<String>) -> Response {
    match state.node.crdt_space(&space).await {
        Ok(entries) => Json(
            entries
                .iter()
                .map(|e| EntryBody::from(e.as_ref()))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => crdt_error(e),
    }
}

async fn read(
    State(state): State<Arc<ApiState>>,
    Path((space, name)): Path<(String, String)>,
) -> Response {
    match state.node.crdt_get(&space, name.into_bytes()).await {
        Ok(Some(entry)) => Json(EntryBody::from(entry.as_ref())).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such key"),
        Err(e) => crdt_error(e),
    }
}

#[derive(Deserialize)]
struct WriteBody {
    value: String,
}

async fn write(
    State(state): State<Arc<ApiState>>,
    Path((space, name)): Path<(String, String)>,
    Json(body): Json<WriteBody>,
) -> Response {
    match state
        .node
        .crdt_put(&space, name.into_bytes(), body.value.into_bytes())
        .await
    {
        Ok(entry) => Json(EntryBody::from(entry.as_ref())).into_response(),
        Err(e) => crdt_error(e),
    }
}

async fn delete(
    State(state): State<Arc<ApiState>>,
    Path((space, name)): Path<(String, String)>,
) -> Response {
    match state.node.crdt_delete(&space, name.into_bytes()).await {
        Ok(entry) => Json(EntryBody::from(entry.as_ref())).into_response(),
        Err(e) => crdt_error(e),
    }
}
