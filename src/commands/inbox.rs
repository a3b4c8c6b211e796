//! `x0tta6bl4 inbox`: print the messages a running node received.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct InboxArgs {
    /// The node's HTTP API, e.g. http://127.0.0.1:8081
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    api: String,
    /// Keep waiting for new messages and print them as they arrive (Ctrl-C stops).
    #[arg(long)]
    follow: bool,
    /// Print the raw JSON instead of one line per message.
    #[arg(long)]
    json: bool,
}

/// How long one long-poll waits on the node before asking again.
const POLL_WAIT: Duration = Duration::from_secs(25);

pub fn run(args: InboxArgs) -> Result<()> {
    let base = format!("{}/api/v1/messages", args.api.trim_end_matches('/'));
    let mut after = 0u64;
    loop {
        let url = if args.follow {
            format!("{base}?after={after}&wait_ms={}", POLL_WAIT.as_millis())
        } else {
            format!("{base}?after={after}")
        };
        let answer = super::request_json(&url, None, POLL_WAIT + Duration::from_secs(10))?;
        let Some(messages) = answer.as_array() else {
            bail!("{url} did not return a list of messages");
        };
        for message in messages {
            if args.json {
                println!("{message}");
            } else {
                println!("{}", render(message));
            }
            after = after.max(message["seq"].as_u64().unwrap_or(after));
        }
        if !args.follow {
            if messages.is_empty() && !args.json {
                println!("(no messages)");
            }
            return Ok(());
        }
    }
}

fn render(message: &Value) -> String {
    let body = match message["text"].as_str() {
        Some(text) => text.to_string(),
        None => format!(
            "<{} bytes>",
            message["hex"].as_str().map_or(0, |h| h.len() / 2)
        ),
    };
    let from = message["from"].as_str().unwrap_or("?");
    match message["channel"].as_str() {
        Some(channel) => format!("#{} from {from} in {channel}: {body}", message["seq"]),
        None => format!(
            "#{} from {from} ({} hops): {body}",
            message["seq"], message["hops"]
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_prints_as_text_and_bytes_as_a_size() {
        let text: Value = serde_json::from_str(
            r#"{"seq":3,"from":"12D3KooWA","hops":2,"text":"hi","hex":"6869"}"#,
        )
        .expect("json");
        assert_eq!(render(&text), "#3 from 12D3KooWA (2 hops): hi");
        let bytes: Value = serde_json::from_str(
            r#"{"seq":4,"from":"12D3KooWA","hops":1,"text":null,"hex":"ff00"}"#,
        )
        .expect("json");
        assert!(render(&bytes).ends_with("<2 bytes>"));
        let posted: Value = serde_json::from_str(
            r#"{"seq":5,"from":"12D3KooWA","hops":0,"channel":"12D3KooWB/ops","text":"up","hex":"7570"}"#,
        )
        .expect("json");
        assert_eq!(render(&posted), "#5 from 12D3KooWA in 12D3KooWB/ops: up");
    }
}
