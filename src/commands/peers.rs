//! `x0tta6bl4 peers`: ask a running node for its neighbor table and print it.

use anyhow::{Result, bail};
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct PeersArgs {
    /// The node's HTTP API, e.g. http://127.0.0.1:8081
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    api: String,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PeersArgs) -> Result<()> {
    let url = format!("{}/api/v1/peers", args.api.trim_end_matches('/'));
    let peers = super::get_json(&url)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&peers)?);
        return Ok(());
    }
    let Some(rows) = peers.as_array() else {
        bail!("{url} did not return a list of peers");
    };
    print!("{}", render_table(rows));
    Ok(())
}

/// Formats peers as an aligned text table, one line per peer.
fn render_table(rows: &[Value]) -> String {
    let header = ["PEER ID", "RTT", "LOSS", "LAST SEEN", "LINK", "ADDRESS"];
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|peer| {
            let rtt = peer["rtt_ms"]
                .as_f64()
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.1} ms"));
            let loss = peer["loss"]
                .as_f64()
                .map_or_else(|| "-".to_string(), |l| format!("{:.1}%", l * 100.0));
            let seen = peer["last_seen_ms_ago"].as_u64().map_or_else(
                || "-".to_string(),
                |ms| format!("{:.1} s ago", ms as f64 / 1000.0),
            );
            let link = match peer["bidirectional"].as_bool() {
                Some(true) => "both ways",
                Some(false) => "one way",
                None => "-",
            };
            vec![
                peer["id"].as_str().unwrap_or("?").to_string(),
                rtt,
                loss,
                seen,
                link.to_string(),
                peer["address"].as_str().unwrap_or("-").to_string(),
            ]
        })
        .collect();
    let mut out = super::table::render(&header, &rows);
    if rows.is_empty() {
        out.push_str("(no peers yet)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_shows_units() {
        let rows: Vec<Value> = serde_json::from_str(
            r#"[{"id":"12D3KooWA","rtt_ms":1.25,"loss":0.05,"last_seen_ms_ago":300,"bidirectional":true},
                {"id":"12D3KooWLonger","rtt_ms":null,"loss":0.0,"last_seen_ms_ago":1200,"bidirectional":false,"address":"/ip4/127.0.0.1/tcp/4002"}]"#,
        )
        .expect("json");
        let table = render_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("PEER ID"));
        assert!(
            lines[1].contains("1.2 ms")
                && lines[1].contains("5.0%")
                && lines[1].contains("0.3 s ago")
        );
        assert!(lines[2].contains("one way") && lines[2].contains("/ip4/127.0.0.1/tcp/4002"));
        let rtt_col = lines[0].find("RTT").expect("rtt header");
        assert_eq!(lines[1].find("1.2 ms"), Some(rtt_col));
    }

    #[test]
    fn empty_table_says_so() {
        assert!(render_table(&[]).contains("no peers yet"));
    }
}
