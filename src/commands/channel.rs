//! `x0tta6bl4 channel`: groups whose posts only their members can read.
//!
//! A channel is named `<owner node id>/<name>`; where a bare name is unambiguous among
//! the node's channels, it is enough.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct ChannelArgs {
    /// The node's HTTP API, e.g. http://127.0.0.1:8081
    #[arg(long, default_value = "http://127.0.0.1:8081", global = true)]
    api: String,
    /// Print the raw JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ChannelCommand,
}

#[derive(Debug, Subcommand)]
enum ChannelCommand {
    /// Create a channel owned by this node, for the given members (and this node).
    Create {
        name: String,
        /// A member's node id; repeat for each member.
        #[arg(long = "member")]
        members: Vec<String>,
    },
    /// The channels this node is a member of.
    List,
    /// Post text, or a small file (up to 3 KiB), to a channel.
    Post {
        channel: String,
        #[arg(long, conflicts_with = "text")]
        file: Option<PathBuf>,
        #[arg(required_unless_present = "file")]
        text: Option<String>,
    },
    /// Every post of a channel this node can read, oldest first.
    Read { channel: String },
    /// Replace a channel's members (owner only). The channel gets a new key, so removed
    /// members cannot read later posts.
    Members {
        channel: String,
        /// The new member list (this node stays a member).
        members: Vec<String>,
    },
    /// Delete a channel (owner only).
    Delete { channel: String },
}

pub fn run(args: ChannelArgs) -> Result<()> {
    let base = format!("{}/api/v1/channels", super::api_base(&args.api));
    let answer = match args.command {
        ChannelCommand::Create { name, members } => {
            let created = super::post_json(&base, &json!({ "name": name, "members": members }))?;
            if !args.json {
                println!(
                    "created {} with {} members (key epoch {})",
                    created["id"].as_str().unwrap_or("?"),
                    created["members"].as_array().map_or(0, Vec::len),
                    created["epoch"]
                );
                return Ok(());
            }
            created
        }
        ChannelCommand::List => {
            let channels = super::get_json(&base)?;
            if !args.json {
                print!("{}", render_channels(&channels));
                return Ok(());
            }
            channels
        }
        ChannelCommand::Post {
            channel,
            file,
            text,
        } => {
            let url = format!("{base}/{}/messages", resolve(&base, &channel)?);
            let body = match (file, text) {
                (Some(path), _) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let mime = super::send::mime_of(&path);
                    json!({
                        "hex": hex::encode(bytes),
                        "kind": super::send::kind_of(mime),
                        "mime": mime,
                        "name": path.file_name().map(|n| n.to_string_lossy().into_owned()),
                    })
                }
                (None, Some(text)) => json!({ "text": text }),
                (None, None) => bail!("give the text to post or --file"),
            };
            let posted = super::post_json(&url, &body)?;
            if !args.json {
                println!(
                    "posted {} to {}",
                    posted["post_id"],
                    posted["channel"].as_str().unwrap_or("?")
                );
                return Ok(());
            }
            posted
        }
        ChannelCommand::Read { channel } => {
            let url = format!("{base}/{}/messages", resolve(&base, &channel)?);
            let posts = super::get_json(&url)?;
            if !args.json {
                print!("{}", render_posts(&posts));
                return Ok(());
            }
            posts
        }
        ChannelCommand::Members { channel, members } => {
            let url = format!("{base}/{}/members", resolve(&base, &channel)?);
            let body = json!({ "members": members });
            let changed = super::request_with(Method::PUT, &url, Some(&body), TIMEOUT)?;
            if !args.json {
                println!(
                    "{} now has {} members under key epoch {}",
                    changed["id"].as_str().unwrap_or("?"),
                    changed["members"].as_array().map_or(0, Vec::len),
                    changed["epoch"]
                );
                return Ok(());
            }
            changed
        }
        ChannelCommand::Delete { channel } => {
            let id = resolve(&base, &channel)?;
            super::request_with(Method::DELETE, &format!("{base}/{id}"), None, TIMEOUT)?;
            println!("deleted {id}");
            return Ok(());
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// `<owner>/<name>` as given, or the one channel of the node called `name`.
fn resolve(base: &str, channel: &str) -> Result<String> {
    if channel.contains('/') {
        return Ok(channel.to_string());
    }
    let channels = super::get_json(base)?;
    pick(&channels, channel)
}

fn pick(channels: &Value, name: &str) -> Result<String> {
    let matching: Vec<&str> = channels
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"].as_str() == Some(name))
        .filter_map(|c| c["id"].as_str())
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.to_string()),
        [] => bail!("this node is in no channel called {name:?} (see `x0tta6bl4 channel list`)"),
        _ => bail!(
            "several channels are called {name:?}; give one as <owner>/<name>: {}",
            matching.join(", ")
        ),
    }
}

fn render_channels(channels: &Value) -> String {
    let rows: Vec<Vec<String>> = channels
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                c["name"].as_str().unwrap_or("?").to_string(),
                c["owner"].as_str().unwrap_or("?").to_string(),
                c["members"].as_array().map_or(0, Vec::len).to_string(),
                c["epoch"].to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "(no channels)\n".into();
    }
    super::table::render(&["NAME", "OWNER", "MEMBERS", "KEY EPOCH"], &rows)
}

fn render_posts(posts: &Value) -> String {
    let lines: Vec<String> = posts
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let body = match (p["kind"].as_str(), p["text"].as_str()) {
                (Some("text" | "notice"), Some(text)) => text.to_string(),
                (kind, _) => format!(
                    "<{} {}, {} bytes>",
                    kind.unwrap_or("file"),
                    p["name"].as_str().unwrap_or("unnamed"),
                    p["size"]
                ),
            };
            format!("{}: {body}\n", p["from"].as_str().unwrap_or("?"))
        })
        .collect();
    if lines.is_empty() {
        return "(no posts)\n".into();
    }
    lines.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_resolves_only_when_unambiguous() {
        let channels: Value = serde_json::from_str(
            r#"[{"id":"A/ops","name":"ops"},{"id":"B/ops","name":"ops"},{"id":"A/dev","name":"dev"}]"#,
        )
        .expect("json");
        assert_eq!(pick(&channels, "dev").unwrap(), "A/dev");
        assert!(
            pick(&channels, "ops")
                .unwrap_err()
                .to_string()
                .contains("A/ops, B/ops")
        );
        assert!(pick(&channels, "none").is_err());
    }

    #[test]
    fn posts_print_text_and_describe_files() {
        let posts: Value = serde_json::from_str(
            r#"[{"from":"A","kind":"text","text":"hi","size":2},
                {"from":"B","kind":"image","name":"p.png","text":null,"size":300}]"#,
        )
        .expect("json");
        assert_eq!(render_posts(&posts), "A: hi\nB: <image p.png, 300 bytes>\n");
        assert_eq!(render_posts(&json!([])), "(no posts)\n");
    }
}
