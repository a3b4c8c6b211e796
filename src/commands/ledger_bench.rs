//! `x0tta6bl4 ledger bench`: committed entries per second and commit latency, measured
//! from the outside by concurrent clients appending through nodes' HTTP APIs.
//!
//! Each client appends one entry at a time and waits for it to be committed; many
//! clients at once let the leader batch their entries into shared log flushes and
//! replication rounds, one client does not. The figures include the HTTP hop, as a real
//! client's would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Node APIs to send through (host:port), comma-separated; clients spread over them.
    #[arg(long, value_delimiter = ',', required = true)]
    api: Vec<String>,
    /// Concurrent clients, each with one write in flight.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// How long to measure, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Bytes of each entry's body.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Entries per request (POST /api/v1/ledger/entries/batch when above 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

struct Totals {
    committed: AtomicU64,
    failed: AtomicU64,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.clients == 0 || args.seconds == 0 {
        bail!("--clients and --seconds must be at least 1");
    }
    if args.batch == 0 || args.batch > 256 {
        bail!("--batch must be between 1 and 256");
    }
    if args.size == 0 || args.size > x0_protocols::ledger::MAX_ENTRY_BYTES {
        bail!(
            "--size must be between 1 and {} bytes",
            x0_protocols::ledger::MAX_ENTRY_BYTES
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the benchmark runtime")?;
    runtime.block_on(bench(args))
}

async fn bench(args: BenchArgs) -> Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()
        .context("building the HTTP client")?;
    let urls: Vec<String> = args
        .api
        .iter()
        .map(|a| {
            let path = if args.batch > 1 {
                "entries/batch"
            } else {
                "entries"
            };
            format!("{}/api/v1/ledger/{path}", super::api_base(a))
        })
        .collect();
    // One write first: fails fast with a clear message when no ledger answers.
    let probe = client
        .post(&urls[0])
        .json(&if args.batch > 1 {
            json!({ "entries": [{ "text": "bench-probe" }] })
        } else {
            json!({ "text": "bench-probe" })
        })
        .send()
        .await
        .with_context(|| format!("cannot reach {}", urls[0]))?;
    if probe.status() != reqwest::StatusCode::CREATED {
        bail!(
            "{} answered {}: {}",
            urls[0],
            probe.status(),
            probe.text().await.unwrap_or_default()
        );
    }
    let body = "x".repeat(args.size);
    let stop = Arc::new(AtomicBool::new(false));
    let totals = Arc::new(Totals {
        committed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let run_id = std::process::id();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let batch = args.batch;
    for c in 0..args.clients {
        let (client, url, body) = (client.clone(), urls[c % urls.len()].clone(), body.clone());
        let (stop, totals) = (stop.clone(), totals.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let entry = |k: usize| {
                    json!({ "text": body, "request_id": format!("bench-{run_id}-{c}-{n}-{k}") })
                };
                let request = if batch > 1 {
                    json!({ "entries": (0..batch).map(entry).collect::<Vec<_>>() })
                } else {
                    entry(0)
                };
                let t = Instant::now();
                match client.post(&url).json(&request).send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                        latencies_us.push(t.elapsed().as_micros() as u64);
                        totals.committed.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                    _ => {
                        totals.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies_us
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |q: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() - 1) as f64 * q).round() as usize;
        latencies[i] as f64 / 1000.0
    };
    let committed = totals.committed.load(Ordering::Relaxed);
    let failed = totals.failed.load(Ordering::Relaxed);
    let rate = committed as f64 / elapsed;
    if args.json {
        println!(
            "{}",
            json!({
                "clients": args.clients,
                "batch": args.batch,
                "seconds": elapsed,
                "committed": committed,
                "failed": failed,
                "entries_per_s": rate,
                "latency_ms_p50": pct(0.5),
                "latency_ms_p99": pct(0.99),
            })
        );
    } else {
        println!(
            "{committed} entries committed in {elapsed:.1} s by {} clients, {} per request: \
             {rate:.0} entries/s; commit latency p50 {:.2} ms, p99 {:.2} ms; {failed} failed requests",
            args.clients,
            args.batch,
            pct(0.5),
            pct(0.99)
        );
    }
    Ok(())
}
