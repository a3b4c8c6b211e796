//! `x0tta6bl4 cluster`: start a local cluster of node processes from one file.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::{Context, Result};
use clap::Args;
use x0tta6bl4::cluster::{ClusterFile, ClusterMember, validator_ids};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Cluster file listing node configs, e.g. config/cluster.toml
    #[arg(long)]
    config: PathBuf,
}

/// One node process of the cluster.
struct Started {
    name: String,
    child: Child,
    /// How to start it again by hand, for the operator who killed it.
    command_line: String,
    /// Set once the process has been reaped: its pid may then name another process.
    exited: Option<ExitStatus>,
}

pub fn run(args: ClusterArgs) -> Result<()> {
    let members = ClusterFile::load(&args.config)?;
    let validators = ledger_validators(&members)?;
    let exe = std::env::current_exe().context("finding the x0tta6bl4 executable")?;
    let mut children: Vec<Started> = Vec::new();
    for member in &members {
        let mut node_args = vec![
            "node".to_string(),
            "--config".to_string(),
            member.path.display().to_string(),
        ];
        if let Some(ids) = &validators {
            node_args.extend(["--validators".to_string(), ids.clone()]);
        }
        let mut child = Command::new(&exe)
            .args(&node_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", member.name))?;
        prefix_output(&member.name, child.stdout.take());
        prefix_output(&member.name, child.stderr.take());
        children.push(Started {
            name: member.name.clone(),
            child,
            command_line: format!("{} {}", exe.display(), node_args.join(" ")),
            exited: None,
        });
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
                    if !watch(&mut children) {
                        return;
                    }
                }
            }
        }
    });
    for started in &mut children {
        let status = match started.exited {
            Some(status) => status,
            None => {
                terminate(&mut started.child);
                started
                    .child
                    .wait()
                    .with_context(|| format!("waiting for {}", started.name))?
            }
        };
        eprintln!("cluster: {} stopped ({status})", started.name);
    }
    Ok(())
}

/// Reaps the nodes that exited; false when the cluster should stop.
///
/// A node that fails on its own (a non-zero exit: a bad config, a port in use, a damaged
/// store) stops the whole cluster, so a half-started cluster is not mistaken for a whole
/// one. A node stopped by a signal or shut down cleanly was stopped on purpose, most
/// likely to watch the others heal (a new ledger leader, new routes), so they keep
/// running.
fn watch(children: &mut [Started]) -> bool {
    for started in children.iter_mut().filter(|s| s.exited.is_none()) {
        let Ok(Some(status)) = started.child.try_wait() else {
            continue;
        };
        started.exited = Some(status);
        if status.code().is_some_and(|code| code != 0) {
            eprintln!(
                "cluster: {} failed ({status}); stopping the others",
                started.name
            );
            return false;
        }
        eprintln!(
            "cluster: {} stopped ({status}); the others keep running. To start it again:\n  {}",
            started.name, started.command_line
        );
    }
    children.iter().any(|s| s.exited.is_none())
}

/// The `--validators` value every node gets when the file marks any node `validator =
/// true`: each node's identity is made (or read) first, since a validator is named by
/// its id and every node must be given the same set. Each node's config is checked with
/// the set before any node starts.
fn ledger_validators(members: &[ClusterMember]) -> Result<Option<String>> {
    if !members.iter().any(|m| m.validator) {
        return Ok(None);
    }
    let ids = validator_ids(members)?;
    for member in members {
        let mut config = member.config.clone();
        super::node::apply_validators(
            &mut config,
            ids.iter().copied().collect(),
            &member.path.display().to_string(),
        )?;
    }
    let names: Vec<String> = members
        .iter()
        .filter(|m| m.validator)
        .zip(&ids)
        .map(|(m, id)| format!("{} ({id})", m.name))
        .collect();
    eprintln!("cluster: ledger validators: {}", names.join(", "));
    Ok(Some(
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    ))
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
