//! `x0tta6bl4 cluster`: start a local cluster of node processes from one file.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use clap::Args;
use x0tta6bl4::cluster::ClusterFile;

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Cluster file listing node configs, e.g. config/cluster.toml
    #[arg(long)]
    config: PathBuf,
}

pub fn run(args: ClusterArgs) -> Result<()> {
    let nodes = ClusterFile::load(&args.config)?;
    let exe = std::env::current_exe().context("finding the x0tta6bl4 executable")?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for (name, config) in &nodes {
        let mut child = Command::new(&exe)
            .arg("node")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        prefix_output(name, child.stdout.take());
        prefix_output(name, child.stderr.take());
        children.push((name.clone(), child));
    }
    eprintln!(
        "cluster: {} nodes started; Ctrl-C stops them all",
        children.len()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    runtime.block_on(async {
        let mut ticker = tokio::time::interval(std::time::Duration::from_millis(500));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                Some(_) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => break,
                _ = ticker.tick() => {
                    for (name, child) in &mut children {
                        if let Ok(Some(status)) = child.try_wait() {
                            eprintln!("cluster: {name} exited ({status}); stopping the others");
                            return;
                        }
                    }
                }
            }
        }
    });
    for (name, child) in &mut children {
        terminate(child);
        let status = child
            .wait()
            .with_context(|| format!("waiting for {name}"))?;
        eprintln!("cluster: {name} stopped ({status})");
    }
    Ok(())
}

/// Asks a child to shut down gracefully (SIGTERM), as an operator's `kill` would.
#[allow(unsafe_code)]
fn terminate(child: &mut Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; `pid` is our
    // own child, not yet reaped, so it cannot name another process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

fn prefix_output(name: &str, stream: Option<impl std::io::Read + Send + 'static>) {
    let Some(stream) = stream else { return };
    let name = name.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            println!("[{name}] {line}");
        }
    });
}
