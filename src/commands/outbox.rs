//! `x0tta6bl4 outbox`: the sealed messages a node sent and where each one is.

use anyhow::{Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct OutboxArgs {
    /// The node's HTTP API, e.g. http://127.0.0.1:8081
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    api: String,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: OutboxArgs) -> Result<()> {
    let url = format!("{}/api/v1/outbox", super::api_base(&args.api));
    let outbox = super::get_json(&url)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outbox)?);
        return Ok(());
    }
    let Some(entries) = outbox.as_array() else {
        bail!("{url} did not return a list");
    };
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e["message_id"].to_string(),
                e["to"].as_str().unwrap_or("?").to_string(),
                e["status"].as_str().unwrap_or("?").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        super::table::render(&["MESSAGE", "TO", "STATUS", "REASON"], &rows)
    );
    Ok(())
}
