//! Two nodes in one Rust program: start them through the library API, wait until each
//! sees the other, print their neighbor tables, shut them down.
//!
//! Run with `cargo run --example embedded`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use x0tta6bl4::node::Node;

#[tokio::main]
async fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("x0tta6bl4-embedded-{}", std::process::id()));
    let first = Node::builder()
        .data_dir(dir.join("first"))
        .listen("/ip4/127.0.0.1/tcp/0".parse()?)
        .spawn()
        .await
        .context("starting the first node")?;
    let bootstrap = first
        .listen_addrs()
        .await
        .into_iter()
        .next()
        .context("the first node listens somewhere")?;
    let second = Node::builder()
        .data_dir(dir.join("second"))
        .listen("/ip4/127.0.0.1/tcp/0".parse()?)
        .bootstrap(bootstrap)
        .spawn()
        .await
        .context("starting the second node")?;
    println!("first:  {}", first.id());
    println!("second: {}", second.id());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = first.neighbors().await?;
        let b = second.neighbors().await?;
        if a.iter().any(|n| n.id == second.id()) && b.iter().any(|n| n.id == first.id()) {
            for (name, table) in [("first", a), ("second", b)] {
                for n in table {
                    println!(
                        "{name} sees {} (rtt {}, loss {:.0}%)",
                        n.id,
                        n.rtt_ms.map_or("-".into(), |r| format!("{r:.1} ms")),
                        n.loss * 100.0
                    );
                }
            }
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the nodes did not find each other within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    first.shutdown().await;
    second.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("both nodes shut down cleanly");
    Ok(())
}
