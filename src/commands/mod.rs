//! One module per subcommand.

pub mod cluster;
pub mod keygen;
pub mod node;
pub mod peers;
pub mod simulate;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// GETs `url` from a node's HTTP API and parses the JSON body, with errors that say
/// which node could not be reached and why.
pub fn get_json(url: &str) -> Result<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP client runtime")?;
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(url)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .with_context(|| {
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
