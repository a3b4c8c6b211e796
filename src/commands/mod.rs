//! One module per subcommand.

pub mod channel;
pub mod cluster;
pub mod inbox;
pub mod keygen;
pub mod ledger;
pub mod ledger_bench;
pub mod node;
pub mod outbox;
pub mod peers;
pub mod registry;
pub mod routes;
pub mod send;
pub mod simulate;
pub mod table;

use std::time::Duration;

use anyhow::{Context, Result};
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
    let method = match body {
        Some(_) => reqwest::Method::POST,
        None => reqwest::Method::GET,
    };
    request_with(method, url, body, timeout)
}

/// One request with any method; an empty answer (`204 No Content`) is `null`.
pub fn request_with(
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP client runtime")?;
    Ok(runtime.block_on(call_with(method, url, body, timeout))?)
}

/// Why a request to a node's API failed, split so that a caller can tell a failure worth
/// retrying (unreachable, timed out, 503) from a refusal.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No connection, or it broke: nothing listens there, or the node went down.
    #[error("cannot reach {url} (is the node running, and is --api right?)")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Connected, but the answer took longer than the timeout.
    #[error("no answer from {url} within {:.1} s", timeout.as_secs_f64())]
    Timeout { url: String, timeout: Duration },
    /// An answer that is not a success; `message` is the API's `{"error": ...}` text when
    /// it sent one.
    #[error("{url} answered {status}: {message}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("{url} did not answer JSON: {reason}")]
    NotJson { url: String, reason: String },
}

impl ApiError {
    /// Whether the same request may succeed later: the node is down or restarting, or
    /// its ledger has no leader yet.
    pub fn is_transient(&self) -> bool {
        match self {
            // A URL that cannot even be built will not get better.
            ApiError::Unreachable { source, .. } => !source.is_builder(),
            ApiError::Timeout { .. } => true,
            ApiError::Status { status, .. } => *status == reqwest::StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotJson { .. } => false,
        }
    }
}

/// One request on an existing runtime; see [`request_json`].
pub async fn call(url: &str, body: Option<&Value>, timeout: Duration) -> Result<Value, ApiError> {
    let method = match body {
        Some(_) => reqwest::Method::POST,
        None => reqwest::Method::GET,
    };
    call_with(method, url, body, timeout).await
}

async fn call_with(
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value, ApiError> {
    let request = reqwest::Client::new().request(method, url);
    let request = match body {
        Some(body) => request.json(body),
        None => request,
    };
    let unreachable = |source: reqwest::Error| {
        if source.is_timeout() {
            ApiError::Timeout {
                url: url.to_string(),
                timeout,
            }
        } else {
            ApiError::Unreachable {
                url: url.to_string(),
                source,
            }
        }
    };
    let response = request.timeout(timeout).send().await.map_err(unreachable)?;
    let status = response.status();
    let text = response.text().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(ApiError::Status {
            url: url.to_string(),
            status,
            message: error_message(&text),
        });
    }
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| ApiError::NotJson {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

/// The `error` field of an API error body, or the body itself when it has none.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| body.trim().to_string())
}

/// The base URL of a node's API given as `host:port` or as a URL, without a trailing `/`.
pub fn api_base(api: &str) -> String {
    let api = api.trim().trim_end_matches('/');
    if api.contains("://") {
        api.to_string()
    } else {
        format!("http://{api}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_takes_host_port_or_a_url() {
        assert_eq!(api_base("127.0.0.1:8081"), "http://127.0.0.1:8081");
        assert_eq!(api_base("http://127.0.0.1:8081/"), "http://127.0.0.1:8081");
        assert_eq!(
            api_base("https://node.example:443"),
            "https://node.example:443"
        );
    }

    #[test]
    fn the_error_field_is_the_message() {
        assert_eq!(error_message(r#"{"error":"no leader"}"#), "no leader");
        assert_eq!(error_message(" plain text \n"), "plain text");
    }
}
