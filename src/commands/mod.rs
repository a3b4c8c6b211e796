//! One module per subcommand.

pub mod cluster;
pub mod inbox;
pub mod keygen;
pub mod node;
pub mod peers;
pub mod routes;
pub mod send;
pub mod simulate;
pub mod table;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// GETs `url` from a node's HTTP API and parses the JSON body, with errors that say
/// which node could not be reached and why.
pub fn get_json(url: &str) -> Result<Value> {
    request_json(url, None, Duration::from_secs(10))
}

/// POSTs `body` as JSON to a node's HTTP API and parses the JSON answer.
pub fn post_json(url: &str, body: &Value) -> Result<Value> {
    request_json(url, Some(body), Duration::from_secs(10))
}

/// One request to a node's HTTP API: a GET, or a POST when there is a body.
pub fn request_json(url: &str, body: Option<&Value>, timeout: Duration) -> Result<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP client runtime")?;
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let request = match body {
            Some(body) => client.post(url).json(body),
            None => client.get(url),
        };
        let response = request.timeout(timeout).send().await.with_context(|| {
            format!("cannot reach {url} (is the node running, and is --api right?)")
        })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("reading the answer from {url}"))?;
        if !status.is_success() {
            bail!("{url} answered {status}: {}", body.trim());
        }
        serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))
    })
}
