//! `x0tta6bl4 keygen`: create a node identity ahead of its first start.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to write `identity.ed25519` and `identity.mlkem768` into (a node's
    /// `data_dir`). Existing keys are never overwritten.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: KeygenArgs) -> Result<()> {
    let identity = x0_node::keystore::write_new(&args.out)?;
    println!("node id: {}", identity.id());
    println!("keys written to {} (mode 0600)", args.out.display());
    Ok(())
}
