//! `x0tta6bl4 routes`: print a running node's routing table.

use anyhow::{Result, bail};
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// The node's HTTP API, e.g. http://127.0.0.1:8081
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    api: String,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: RoutesArgs) -> Result<()> {
    let url = format!("{}/api/v1/routes", args.api.trim_end_matches('/'));
    let routes = super::get_json(&url)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&routes)?);
        return Ok(());
    }
    let Some(rows) = routes.as_array() else {
        bail!("{url} did not return a list of routes");
    };
    print!("{}", render_table(rows));
    Ok(())
}

fn render_table(rows: &[Value]) -> String {
    let header = ["DESTINATION", "NEXT HOP", "METRIC", "AGE"];
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r["destination"].as_str().unwrap_or("?").to_string(),
                r["next_hop"].as_str().unwrap_or("?").to_string(),
                r["metric"].as_u64().map_or("-".into(), |m| m.to_string()),
                r["age_ms"]
                    .as_u64()
                    .map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
            ]
        })
        .collect();
    let mut out = super::table::render(&header, &rows);
    if rows.is_empty() {
        out.push_str("(no routes yet)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_print_with_units() {
        let rows: Vec<Value> = serde_json::from_str(
            r#"[{"destination":"12D3KooWA","next_hop":"12D3KooWB","metric":514,"seqno":0,"age_ms":2500}]"#,
        )
        .expect("json");
        let table = render_table(&rows);
        assert!(table.starts_with("DESTINATION"));
        assert!(table.contains("12D3KooWB") && table.contains("514") && table.contains("2.5 s"));
    }
}
