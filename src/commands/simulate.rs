//! `x0tta6bl4 simulate`: run a scenario in the simulator and report.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use x0_simulator::scenario::parse_duration;
use x0_simulator::{Scenario, TopologyKind};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Scenario file (TOML); without it the embedded default (1000 nodes, 60 s) runs.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Number of nodes.
    #[arg(long)]
    nodes: Option<usize>,
    /// Virtual time to simulate, e.g. 60s, 500ms, 2m.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Seed for every random choice of the run.
    #[arg(long)]
    seed: Option<u64>,
    /// random-geometric, grid, scale-free or full.
    #[arg(long)]
    topology: Option<TopologyKind>,
    /// Per-envelope loss probability on every link, 0 to 1.
    #[arg(long)]
    loss: Option<f64>,
    /// One-way link latency in milliseconds.
    #[arg(long)]
    latency_ms: Option<f64>,
    /// Run the routing actor in every node (the default scenario does; for scenario
    /// files that leave it out).
    #[arg(long, conflicts_with = "no_routing")]
    routing: bool,
    /// Run without routing, and so without the ledger: discovery, sessions and CRDT
    /// sync only.
    #[arg(long)]
    no_routing: bool,
    /// Validators of the simulated Raft ledger, drawn from the seed (default 5). The
    /// ledger runs whenever routing does.
    #[arg(long)]
    validators: Option<usize>,
    /// Run without the ledger.
    #[arg(long)]
    no_ledger: bool,
    /// Run without CRDT sync (no registry: much faster at 1000 nodes, see BENCHMARKS.md).
    #[arg(long)]
    no_crdt: bool,
    /// Write the full report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: SimulateArgs) -> Result<()> {
    let scenario = scenario_from(&args)?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(scenario.duration.as_secs().max(1));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} virtual s  {msg}",
            )
            .context("progress bar template")?,
        );
        bar.set_message(format!("{} nodes", scenario.nodes));
        bar
    };
    eprintln!(
        "simulating {} nodes, {} topology, {:?} of virtual time, seed {}",
        scenario.nodes, scenario.topology, scenario.duration, scenario.seed
    );
    let report = x0_simulator::run(&scenario, |p| bar.set_position(p.virtual_elapsed.as_secs()))?;
    bar.finish_and_clear();
    // The report file first: a reader that closes stdout early must not cost it.
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
        // Written aside and renamed, so a crash never leaves half a report behind.
        let partial = path.with_extension("json.tmp");
        std::fs::write(&partial, json + "\n")
            .and_then(|()| std::fs::rename(&partial, path))
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    let mut summary = format!("{report}\n");
    if let Some(path) = &args.report {
        summary.push_str(&format!("report written to {}\n", path.display()));
    }
    match out.write_all(summary.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("printing the summary")
        }
        _ => Ok(()),
    }
}

fn scenario_from(args: &SimulateArgs) -> Result<Scenario> {
    let (mut scenario, origin) = match &args.scenario {
        Some(path) => (Scenario::load(path)?, path.display().to_string()),
        None => (Scenario::default_scenario(), "command line".to_string()),
    };
    if let Some(nodes) = args.nodes {
        scenario.nodes = nodes;
    }
    if let Some(duration) = args.duration {
        scenario.duration = duration;
    }
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    if let Some(topology) = args.topology {
        scenario.topology = topology;
    }
    if let Some(loss) = args.loss {
        scenario.link.loss = loss;
    }
    if let Some(latency) = args.latency_ms {
        scenario.link.latency_ms = latency;
    }
    if args.routing {
        scenario.routing.enabled = true;
    }
    if args.no_routing {
        scenario.routing.enabled = false;
    }
    if let Some(validators) = args.validators {
        scenario.ledger.validators = validators;
    }
    if args.no_ledger {
        scenario.ledger.enabled = Some(false);
    }
    if args.no_crdt {
        scenario.crdt.enabled = false;
    }
    scenario.validate(&format!("{origin} (with command-line overrides)"))?;
    Ok(scenario)
}
