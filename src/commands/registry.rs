//! `x0tta6bl4 registry`: every node's signed record, as one node's CRDT replica holds it.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// The node's HTTP API, e.g. http://127.0.0.1:8081
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    api: String,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: RegistryArgs) -> Result<()> {
    let url = format!("{}/api/v1/registry", args.api.trim_end_matches('/'));
    let registry = super::get_json(&url)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&registry)?);
        return Ok(());
    }
    let Some(records) = registry["records"].as_array() else {
        bail!("{url} did not return a registry");
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    print!("{}", render_table(records, now_ms));
    Ok(())
}

/// One line per node: id, roles, first address, how old its record is and when it
/// expires, and the start of its ML-KEM key (enough to compare by eye).
fn render_table(records: &[Value], now_ms: u64) -> String {
    let header = [
        "NODE ID",
        "ROLES",
        "ADDRESS",
        "UPDATED",
        "EXPIRES IN",
        "ML-KEM KEY",
    ];
    let seconds = |ms: i128| format!("{:.0} s", ms as f64 / 1000.0);
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            let updated = record["updated_ms"].as_u64().unwrap_or(0);
            let expires = record["expires_ms"].as_u64().unwrap_or(0);
            let roles: Vec<&str> = record["roles"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key = record["mlkem_public_key"].as_str().unwrap_or("");
            vec![
                record["id"].as_str().unwrap_or("?").to_string(),
                if roles.is_empty() {
                    "-".into()
                } else {
                    roles.join(",")
                },
                record["addresses"][0].as_str().unwrap_or("-").to_string(),
                format!("{} ago", seconds(i128::from(now_ms) - i128::from(updated))),
                seconds(i128::from(expires) - i128::from(now_ms)),
                format!("{}…", key.get(..16).unwrap_or(key)),
            ]
        })
        .collect();
    let mut out = super::table::render(&header, &rows);
    out.push_str(&format!("{} nodes\n", rows.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_age_expiry_and_a_key_prefix() {
        let records: Vec<Value> = serde_json::from_str(
            r#"[{"id":"12D3KooWA","roles":["validator"],"addresses":["/ip4/127.0.0.1/tcp/4001"],
                 "updated_ms":10000,"expires_ms":70000,"mlkem_public_key":"00112233445566778899aabb"},
                {"id":"12D3KooWB","roles":[],"addresses":[],"updated_ms":12000,"expires_ms":72000,
                 "mlkem_public_key":"ff"}]"#,
        )
        .expect("json");
        let table = render_table(&records, 15_000);
        assert!(table.contains("validator"), "{table}");
        assert!(table.contains("5 s ago"), "{table}");
        assert!(table.contains("55 s"), "{table}");
        assert!(table.contains("0011223344556677…"), "{table}");
        assert!(table.ends_with("2 nodes\n"), "{table}");
    }
}
