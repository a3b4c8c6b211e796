//! `x0tta6bl4 ledger`: read and write a running node's Raft ledger through its HTTP API.
//!
//! Any node will do: the node carries writes and linearizable reads to the leader, so
//! these commands never need to know who leads.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use x0_protocols::NodeId;

use super::{ApiError, api_base, call};

#[derive(Debug, Args)]
pub struct LedgerArgs {
    #[command(subcommand)]
    command: LedgerCommand,
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Print the ledger's leader, term, commit index, voters and learners.
    Status(StatusArgs),
    /// Append one entry; retried through leader changes without being applied twice.
    Append(AppendArgs),
    /// Print the ledger's entries as a table.
    Entries(EntriesArgs),
    /// Change the voter set: add a learner, promote it to voter, or remove a voter.
    Members(MembersArgs),
    /// Measure committed entries per second and commit latency with concurrent clients.
    Bench(super::ledger_bench::BenchArgs),
}

/// The node to ask.
#[derive(Debug, Args)]
struct Api {
    /// The node's HTTP API, as host:port or a URL.
    #[arg(long, default_value = "127.0.0.1:8081")]
    api: String,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", api_base(&self.api))
    }
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    api: Api,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EntryType {
    App,
    Dao,
    Config,
    Membership,
}

impl EntryType {
    fn as_str(self) -> &'static str {
        match self {
            EntryType::App => "app",
            EntryType::Dao => "dao",
            EntryType::Config => "config",
            EntryType::Membership => "membership",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Change {
    Admit,
    Remove,
}

#[derive(Debug, Args)]
struct AppendArgs {
    #[command(flatten)]
    api: Api,
    /// What the entry records: an app or dao body, a config key, or a membership change.
    #[arg(long = "type", value_enum, default_value = "app")]
    kind: EntryType,
    /// The body of an app or dao entry, as text.
    #[arg(conflicts_with = "hex")]
    text: Option<String>,
    /// The body of an app or dao entry, as hex bytes.
    #[arg(long)]
    hex: Option<String>,
    /// The key of a config entry.
    #[arg(long, requires = "value")]
    key: Option<String>,
    /// The value of a config entry.
    #[arg(long, requires = "key")]
    value: Option<String>,
    /// The node a membership entry is about.
    #[arg(long, requires = "change")]
    node: Option<String>,
    /// Whether a membership entry admits or removes `--node`.
    #[arg(long, value_enum, requires = "node")]
    change: Option<Change>,
    /// Makes the append idempotent: an id the ledger already applied answers its first
    /// position instead of appending again. A random one is made when not given.
    #[arg(long)]
    request_id: Option<String>,
    /// Keep retrying this many seconds while the node is unreachable or the ledger has
    /// no leader (0: try once).
    #[arg(long, default_value_t = 30)]
    retry_secs: u64,
}

#[derive(Debug, Args)]
struct EntriesArgs {
    #[command(flatten)]
    api: Api,
    /// First position to print.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Most entries to print (the node's default is 100, its maximum 1000).
    #[arg(long, conflicts_with = "follow")]
    limit: Option<u32>,
    /// Read through the leader, so that every entry committed before the read is shown;
    /// otherwise the node answers from its own replica, which may lag.
    #[arg(long)]
    linearizable: bool,
    /// Keep polling and print new entries as they are committed (Ctrl-C stops).
    #[arg(long)]
    follow: bool,
    /// Print the raw JSON (one entry per line with --follow).
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum MemberAction {
    /// Replicate to the node without letting it vote.
    AddLearner,
    /// Make the node a voter (joint consensus; it is made a learner first if needed).
    AddVoter,
    /// Take the node's vote away; it stays a learner.
    RemoveVoter,
}

#[derive(Debug, Args)]
struct MembersArgs {
    #[command(flatten)]
    api: Api,
    #[arg(value_enum)]
    action: MemberAction,
    /// The node's id, as `keygen`, `peers` and `ledger status` print it.
    node: String,
    /// Print the raw JSON of the ledger's status after the change.
    #[arg(long)]
    json: bool,
}

pub fn run(args: LedgerArgs) -> Result<()> {
    // One runtime for the whole command: `append` retries and `entries --follow` polls
    // many times.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP client runtime")?;
    runtime.block_on(async {
        match args.command {
            LedgerCommand::Status(args) => status(args).await,
            LedgerCommand::Append(args) => append(args).await,
            LedgerCommand::Entries(args) => entries(args).await,
            LedgerCommand::Members(args) => members(args).await,
            // The benchmark's clients get a runtime of their own, on every core.
            LedgerCommand::Bench(bench) => {
                tokio::task::spawn_blocking(move || super::ledger_bench::run(bench)).await?
            }
        }
    })
}

/// Time allowed for one request that the node answers at once.
const QUICK: Duration = Duration::from_secs(10);
/// Time allowed for one write: longer than the node's default `client_timeout_ms`
/// (10 s), so that the node's own verdict normally arrives before ours.
const WRITE: Duration = Duration::from_secs(15);

async fn status(args: StatusArgs) -> Result<()> {
    let status = call(&args.api.url("/api/v1/ledger/status"), None, QUICK).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render_status(&status));
    }
    Ok(())
}

/// A status as `label: value` lines; ids in full, since they are what `members` takes.
fn render_status(s: &Value) -> String {
    let id = s["id"].as_str().unwrap_or("?");
    let role = s["role"].as_str().unwrap_or("?");
    let answered_by = s["answered_by"].as_str().unwrap_or(id);
    let mut lines: Vec<(String, String)> = vec![("node".into(), id.into())];
    if answered_by == id {
        let state = s["state"].as_str().unwrap_or("?");
        lines.push(("role".into(), format!("{role}, {state}")));
    } else {
        // A plain member runs no Raft: what follows is the leader's view.
        lines.push(("role".into(), role.into()));
        lines.push(("answered by".into(), answered_by.into()));
    }
    let leader = match s["leader"].as_str() {
        Some(l) if l == id => format!("{l} (this node)"),
        Some(l) => l.to_string(),
        None => "none (election under way?)".into(),
    };
    lines.push(("leader".into(), leader));
    lines.push(("term".into(), number(&s["term"])));
    lines.push(("commit index".into(), number(&s["commit_index"])));
    lines.push(("last log index".into(), number(&s["last_log_index"])));
    let snapshot = s["snapshot_index"]
        .as_u64()
        .map_or_else(|| "none".to_string(), |i| i.to_string());
    lines.push(("snapshot index".into(), snapshot));
    lines.push(("entries".into(), number(&s["entries"])));
    for (label, key) in [("voters", "voters"), ("learners", "learners")] {
        let ids: Vec<&str> = s[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let label = format!("{label} ({})", ids.len());
        if ids.is_empty() {
            lines.push((label.clone(), "none".into()));
        }
        for (i, member) in ids.iter().enumerate() {
            let label = if i == 0 { label.clone() } else { String::new() };
            lines.push((label, (*member).to_string()));
        }
    }
    let joint = if s["joint"].as_bool() == Some(true) {
        "yes (a voter change is in progress)"
    } else {
        "no"
    };
    lines.push(("joint".into(), joint.into()));
    lines.push(("leader changes".into(), number(&s["leader_changes"])));
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    lines
        .iter()
        .map(|(label, value)| {
            let label = if label.is_empty() {
                String::new()
            } else {
                format!("{label}:")
            };
            format!("{label:<width$} {value}\n")
        })
        .collect()
}

fn number(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "?".to_string(), |n| n.to_string())
}

async fn append(args: AppendArgs) -> Result<()> {
    let request_id = match &args.request_id {
        Some(id) => id.clone(),
        None => new_request_id()?,
    };
    let body = append_body(&args, &request_id)?;
    let url = args.api.url("/api/v1/ledger/entries");
    let answer = retrying(
        &url,
        &body,
        Duration::from_secs(args.retry_secs),
        &request_id,
    )
    .await?;
    let position = number(&answer["position"]);
    if answer["duplicate"].as_bool() == Some(true) {
        println!("position {position} (duplicate: already applied; request id {request_id})");
    } else {
        println!("appended at position {position} (request id {request_id})");
    }
    Ok(())
}

/// POSTs `body` until it is answered, retrying what may succeed later (the node is
/// unreachable, or the ledger has no leader) for up to `retry_for`. Safe only because
/// the body carries a request id: a write that was applied but whose answer was lost is
/// answered, not applied again, on the next try.
async fn retrying(url: &str, body: &Value, retry_for: Duration, request_id: &str) -> Result<Value> {
    let start = Instant::now();
    let deadline = start + retry_for;
    let mut pause = Duration::from_millis(250);
    let mut attempts = 1u32;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = WRITE.min(left).max(Duration::from_secs(1));
        let error = match call(url, Some(body), timeout).await {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        if !error.is_transient() || Instant::now() + pause >= deadline {
            let waited = start.elapsed().as_secs_f64();
            return Err(if attempts > 1 {
                anyhow::Error::new(error).context(format!(
                    "gave up after {attempts} attempts over {waited:.1} s (request id {request_id}; \
                     retrying with it later cannot apply the entry twice)"
                ))
            } else {
                error.into()
            });
        }
        eprintln!(
            "ledger append: {}; retrying in {:.1} s with request id {request_id}",
            why(&error),
            pause.as_secs_f64()
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
        attempts += 1;
    }
}

/// One line on why a request failed, causes included.
fn why(error: &ApiError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A request id no other client will choose: 128 bits from the OS.
fn new_request_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a request id (or give --request-id)")?;
    Ok(format!("cli-{}", hex::encode(bytes)))
}

/// The JSON body of an append, refusing flags that the entry type does not use (they
/// would otherwise be dropped without a word).
fn append_body(args: &AppendArgs, request_id: &str) -> Result<Value> {
    let kind = args.kind.as_str();
    let given = [
        ("TEXT", args.text.is_some()),
        ("--hex", args.hex.is_some()),
        ("--key", args.key.is_some()),
        ("--value", args.value.is_some()),
        ("--node", args.node.is_some()),
        ("--change", args.change.is_some()),
    ];
    let used: &[&str] = match args.kind {
        EntryType::App | EntryType::Dao => &["TEXT", "--hex"],
        EntryType::Config => &["--key", "--value"],
        EntryType::Membership => &["--node", "--change"],
    };
    let stray: Vec<&str> = given
        .iter()
        .filter(|(flag, is_given)| *is_given && !used.contains(flag))
        .map(|(flag, _)| *flag)
        .collect();
    if !stray.is_empty() {
        bail!(
            "{} not used by --type {kind} (it takes {})",
            stray.join(", "),
            used.join(" or ")
        );
    }
    let mut body = json!({ "type": kind, "request_id": request_id });
    match args.kind {
        EntryType::App | EntryType::Dao => match (&args.text, &args.hex) {
            (Some(text), None) => body["text"] = json!(text),
            (None, Some(hex)) => {
                hex::decode(hex.trim()).with_context(|| format!("--hex: {hex:?} is not hex"))?;
                body["hex"] = json!(hex.trim());
            }
            _ => bail!("a {kind} entry needs its TEXT or --hex"),
        },
        EntryType::Config => match (&args.key, &args.value) {
            (Some(key), Some(value)) => {
                body["key"] = json!(key);
                body["value"] = json!(value);
            }
            _ => bail!("a config entry needs --key and --value"),
        },
        EntryType::Membership => match (&args.node, args.change) {
            (Some(node), Some(change)) => {
                let id: NodeId = node
                    .trim()
                    .parse()
                    .with_context(|| format!("--node: {:?} is not a node id", node.trim()))?;
                body["node"] = json!(id.to_string());
                body["change"] = json!(match change {
                    Change::Admit => "admit",
                    Change::Remove => "remove",
                });
            }
            _ => bail!("a membership entry needs --node and --change admit|remove"),
        },
    }
    Ok(body)
}

/// Pause between polls of `entries --follow`.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

async fn entries(args: EntriesArgs) -> Result<()> {
    let base = args.api.url("/api/v1/ledger/entries");
    let consistency = if args.linearizable {
        "linearizable"
    } else {
        "local"
    };
    let limit = if args.follow {
        Some(x0_node::ledger_api::MAX_READ)
    } else {
        args.limit
    };
    let mut from = args.from.max(1);
    let mut header = !args.json;
    let mut waiting = false;
    loop {
        let mut url = format!("{base}?from={from}&consistency={consistency}");
        if let Some(limit) = limit {
            url.push_str(&format!("&limit={limit}"));
        }
        let answer = match call(&url, None, WRITE).await {
            Ok(answer) => answer,
            // A linearizable read finds no leader during an election: keep following.
            Err(e)
                if args.follow
                    && e.is_transient()
                    && !matches!(e, ApiError::Unreachable { .. }) =>
            {
                if !waiting {
                    eprintln!("ledger entries: {}; still following", why(&e));
                    waiting = true;
                }
                tokio::time::sleep(FOLLOW_EVERY).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        waiting = false;
        let Some(batch) = answer["entries"].as_array() else {
            bail!("{url} did not return entries");
        };
        if args.json && !args.follow {
            println!("{}", serde_json::to_string_pretty(&answer)?);
            return Ok(());
        }
        if header {
            println!("{}", entry_line(&HEADER.map(String::from)));
            header = false;
        }
        for entry in batch {
            if args.json {
                println!("{entry}");
            } else {
                println!("{}", entry_line(&entry_cells(entry)));
            }
            from = from.max(entry["position"].as_u64().unwrap_or(from) + 1);
        }
        if !args.follow {
            let total = answer["total"].as_u64().unwrap_or(0);
            if batch.is_empty() {
                println!("(no entries from position {from}; the ledger holds {total})");
            } else if from <= total {
                println!(
                    "({} more; --from {from} for the next ones)",
                    total + 1 - from
                );
            }
            return Ok(());
        }
        if batch.is_empty() {
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    }
}

const HEADER: [&str; 5] = ["POSITION", "TERM", "TYPE", "SUBMITTED BY", "CONTENT"];

/// One table line with fixed column widths: `--follow` prints rows as they come, so the
/// widths cannot depend on rows not yet seen.
fn entry_line(cells: &[String; 5]) -> String {
    format!(
        "{:<8}  {:<5}  {:<10}  {:<12}  {}",
        cells[0], cells[1], cells[2], cells[3], cells[4]
    )
    .trim_end()
    .to_string()
}

/// Longest content shown in a table cell; `--json` shows it all.
const MAX_CONTENT: usize = 60;

fn entry_cells(entry: &Value) -> [String; 5] {
    let text = |key: &str| entry[key].as_str().unwrap_or("?").to_string();
    let content = match entry["type"].as_str() {
        Some("app" | "dao") => match (entry["text"].as_str(), entry["hex"].as_str()) {
            (Some(text), _) => printable(text),
            (None, Some(hex)) => format!("<{} bytes> {hex}", hex.len() / 2),
            (None, None) => "?".into(),
        },
        Some("config") => format!(
            "{} = {}",
            printable(&text("key")),
            printable(&text("value"))
        ),
        Some("membership") => format!("{} {}", text("change"), text("node")),
        _ => "?".into(),
    };
    [
        number(&entry["position"]),
        number(&entry["term"]),
        text("type"),
        short_id(entry["submitted_by"].as_str().unwrap_or("?")),
        truncate(&content, MAX_CONTENT),
    ]
}

/// The tail of a node id: every id starts `12D3KooW`, so the end is what tells them
/// apart.
fn short_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 10 {
        return id.to_string();
    }
    let tail: String = chars[chars.len() - 8..].iter().collect();
    format!("..{tail}")
}

/// Text with control characters escaped, so an entry cannot break the table.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max - 3).collect();
    format!("{kept}...")
}

async fn members(args: MembersArgs) -> Result<()> {
    let node: NodeId = args
        .node
        .trim()
        .parse()
        .with_context(|| format!("{:?} is not a node id", args.node.trim()))?;
    let action = match args.action {
        MemberAction::AddLearner => "add_learner",
        MemberAction::AddVoter => "add_voter",
        MemberAction::RemoveVoter => "remove_voter",
    };
    let body = json!({ "action": action, "node": node.to_string() });
    let url = args.api.url("/api/v1/ledger/membership");
    // Longer than a write: adding a voter waits for it to catch up, then for two
    // joint-consensus commits.
    let status = call(&url, Some(&body), Duration::from_secs(60)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!("{action} {node}: done");
        print!("{}", render_status(&status));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: LedgerCommand,
    }

    fn append_args(argv: &[&str]) -> AppendArgs {
        let mut full = vec!["ledger", "append"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).expect("parses").command {
            LedgerCommand::Append(args) => args,
            other => panic!("{other:?}"),
        }
    }

    fn id(byte: u8) -> String {
        NodeId([byte; 32]).to_string()
    }

    #[test]
    fn text_is_an_app_entry_by_default() {
        let body = append_body(&append_args(&["hello"]), "r1").expect("body");
        assert_eq!(
            body,
            json!({"type": "app", "text": "hello", "request_id": "r1"})
        );
    }

    #[test]
    fn each_type_takes_its_own_flags() {
        let body = append_body(
            &append_args(&["--type", "config", "--key", "k", "--value", "v"]),
            "r",
        )
        .expect("config");
        assert_eq!(
            (body["key"].as_str(), body["value"].as_str()),
            (Some("k"), Some("v"))
        );
        let node = id(3);
        let body = append_body(
            &append_args(&[
                "--type",
                "membership",
                "--node",
                &node,
                "--change",
                "remove",
            ]),
            "r",
        )
        .expect("membership");
        assert_eq!(body["node"], json!(node));
        assert_eq!(body["change"], "remove");
        let body =
            append_body(&append_args(&["--type", "dao", "--hex", "ff00"]), "r").expect("dao");
        assert_eq!(body["hex"], "ff00");
    }

    #[test]
    fn flags_of_another_type_are_refused_by_name() {
        let err = append_body(&append_args(&["hello", "--key", "k", "--value", "v"]), "r")
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("--key, --value not used by --type app"),
            "{err}"
        );
        let err = append_body(
            &append_args(&["--type", "config", "--key", "k", "--value", "v", "x"]),
            "r",
        )
        .expect_err("refused")
        .to_string();
        assert!(err.contains("TEXT not used"), "{err}");
        let err = append_body(&append_args(&[]), "r")
            .expect_err("no body")
            .to_string();
        assert!(err.contains("TEXT or --hex"), "{err}");
        let err = append_body(&append_args(&["--hex", "xyz"]), "r")
            .expect_err("bad hex")
            .to_string();
        assert!(err.contains("--hex"), "{err}");
        let err = append_body(
            &append_args(&[
                "--type",
                "membership",
                "--node",
                "nope",
                "--change",
                "admit",
            ]),
            "r",
        )
        .expect_err("bad node")
        .to_string();
        assert!(err.contains("--node"), "{err}");
    }

    #[test]
    fn request_ids_differ() {
        let a = new_request_id().expect("id");
        let b = new_request_id().expect("id");
        assert_ne!(a, b);
        assert_eq!(a.len(), "cli-".len() + 32);
    }

    #[test]
    fn only_unreachable_and_503_are_retried() {
        let status = |code: u16| ApiError::Status {
            url: "u".into(),
            status: reqwest::StatusCode::from_u16(code).expect("code"),
            message: "m".into(),
        };
        assert!(status(503).is_transient());
        assert!(!status(400).is_transient());
        assert!(!status(409).is_transient());
        assert!(!status(404).is_transient());
    }

    #[test]
    fn entries_show_a_short_submitter_and_escaped_content() {
        let entry = json!({
            "position": 12, "term": 3, "type": "app",
            "submitted_by": "12D3KooWABCDEFGHJKLMNPQRSTUVWXYZabcdefgh",
            "text": "two\nlines", "hex": "74776f0a6c696e6573"
        });
        let line = entry_line(&entry_cells(&entry));
        assert_eq!(
            line,
            r"12        3      app         ..abcdefgh    two\nlines"
        );
        let header = entry_line(&HEADER.map(String::from));
        assert_eq!(header.find("CONTENT"), line.find("two"));
        let bytes = json!({"position": 1, "term": 1, "type": "dao", "submitted_by": "x", "text": null, "hex": "ff00"});
        assert!(entry_line(&entry_cells(&bytes)).ends_with("<2 bytes> ff00"));
        let config = json!({"position": 2, "term": 1, "type": "config", "submitted_by": "x", "key": "k", "value": "v"});
        assert!(entry_line(&entry_cells(&config)).ends_with("k = v"));
        assert_eq!(
            truncate(&"é".repeat(70), 10),
            format!("{}...", "é".repeat(7))
        );
    }

    #[test]
    fn status_names_leader_and_lists_every_voter() {
        let status = json!({
            "id": "A", "role": "validator", "state": "leader", "answered_by": "A",
            "term": 4, "leader": "A", "commit_index": 9, "last_log_index": 9,
            "snapshot_index": null, "entries": 7, "voters": ["A", "B", "C"],
            "learners": [], "joint": false, "leader_changes": 1
        });
        let text = render_status(&status);
        assert!(
            text.contains("role:") && text.contains("validator, leader"),
            "{text}"
        );
        assert!(text.contains("A (this node)"), "{text}");
        assert!(text.contains("voters (3):"), "{text}");
        assert!(text.lines().any(|l| l.trim() == "C"), "{text}");
        assert!(
            text.contains("learners (0):") && text.contains("none"),
            "{text}"
        );
        assert!(text.contains("joint:") && text.contains(" no"), "{text}");
        let member = json!({
            "id": "M", "role": "member", "state": "leader", "answered_by": "A",
            "term": 4, "leader": "A", "voters": ["A"], "learners": [], "joint": false
        });
        let text = render_status(&member);
        assert!(
            text.contains("answered by:") && !text.contains("member, leader"),
            "{text}"
        );
    }
}
