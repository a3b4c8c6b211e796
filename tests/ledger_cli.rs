//! The `ledger` commands and `node --validators` on real processes: an append retried
//! with the same request id is applied once, entries and status read back, errors carry
//! the API's message, and `cluster` turns `validator = true` into a running
//! three-validator ledger.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{NodeProcess, free_port, http_get, keygen, run, wait_for};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Runs a command that must succeed and returns its stdout.
fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn append_is_idempotent_and_reads_back_through_the_cli() {
    let dir = tempfile::tempdir().expect("temp dir");
    let id = keygen(dir.path(), "solo");
    let ledger = format!(
        "\n[ledger]\nvalidators = [\"{id}\"]\nheartbeat_ms = 100\n\
         election_timeout_min_ms = 400\nelection_timeout_max_ms = 800\n"
    );
    let node = NodeProcess::start_with(dir.path(), "solo", free_port(), &[], &ledger);
    // host:port, as the README shows; a URL works too.
    let api = format!("127.0.0.1:{}", node.api_port);

    // The CLI retries while the single validator elects itself.
    let first = ok(&[
        "ledger",
        "append",
        "--api",
        &api,
        "--request-id",
        "greeting-1",
        "hello",
    ]);
    assert_eq!(
        first.trim(),
        "appended at position 1 (request id greeting-1)",
        "{first}"
    );
    let again = ok(&[
        "ledger",
        "append",
        "--api",
        &api,
        "--request-id",
        "greeting-1",
        "hello",
    ]);
    assert_eq!(
        again.trim(),
        "position 1 (duplicate: already applied; request id greeting-1)",
        "{again}"
    );
    // Without --request-id the CLI makes one, so a second append is a new entry.
    let second = ok(&["ledger", "append", "--api", &api, "world"]);
    assert!(
        second.starts_with("appended at position 2 (request id cli-"),
        "{second}"
    );
    ok(&[
        "ledger",
        "append",
        "--api",
        &format!("http://{api}"),
        "--type",
        "config",
        "--key",
        "motd",
        "--value",
        "hi",
    ]);

    let table = ok(&["ledger", "entries", "--api", &api]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("POSITION") && lines[0].contains("CONTENT"),
        "{table}"
    );
    assert!(
        lines[1].starts_with('1') && lines[1].ends_with("hello"),
        "{table}"
    );
    assert!(
        lines[2].starts_with('2') && lines[2].ends_with("world"),
        "{table}"
    );
    assert!(
        lines[3].contains("config") && lines[3].ends_with("motd = hi"),
        "{table}"
    );
    assert_eq!(lines.len(), 4, "{table}");
    let short = format!("..{}", &id[id.len() - 8..]);
    assert!(
        lines[1].contains(&short),
        "submitter shown by its tail: {table}"
    );

    let tail = ok(&[
        "ledger",
        "entries",
        "--api",
        &api,
        "--from",
        "2",
        "--limit",
        "1",
        "--linearizable",
    ]);
    assert!(tail.contains("world") && !tail.contains("hello"), "{tail}");
    assert!(tail.contains("1 more; --from 3"), "{tail}");

    let status = ok(&["ledger", "status", "--api", &api]);
    assert!(status.contains("validator, leader"), "{status}");
    assert!(status.contains(&format!("{id} (this node)")), "{status}");
    assert!(status.contains("voters (1):"), "{status}");
    let json: Value = serde_json::from_str(&ok(&["ledger", "status", "--api", &api, "--json"]))
        .expect("--json prints JSON");
    assert_eq!(json["entries"], 3);
    assert_eq!(json["state"], "leader");

    // A refusal shows the API's message (not its JSON) and fails, without retrying.
    let out = run(&[
        "ledger", "append", "--api", &api, "--type", "config", "--key", "", "--value", "v",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("400") && err.contains("invalid entry: config key is empty"),
        "{err}"
    );
    assert!(!err.contains("retrying") && !err.contains("{\""), "{err}");
    let out = run(&["ledger", "members", "--api", &api, "add-voter", "not-an-id"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a node id"), "{}", stderr(&out));
}

#[test]
fn errors_show_the_api_message_and_unreachable_appends_retry_then_give_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = NodeProcess::start(dir.path(), "plain", None);
    let api = format!("127.0.0.1:{}", node.api_port);
    let out = run(&["ledger", "status", "--api", &api]);
    assert!(
        !out.status.success(),
        "a node without a ledger has no status"
    );
    let err = stderr(&out);
    assert!(
        err.contains("the ledger is not running on this node") && !err.contains("{\""),
        "the API's message, not its JSON: {err}"
    );

    let dead = format!("127.0.0.1:{}", free_port());
    let start = Instant::now();
    let out = run(&[
        "ledger",
        "append",
        "--api",
        &dead,
        "--retry-secs",
        "2",
        "--request-id",
        "r-1",
        "x",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("retrying") && err.contains("r-1"),
        "retries are shown: {err}"
    );
    assert!(
        err.contains("gave up after") && err.contains("cannot reach"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(20), "bounded retries");
}

#[test]
fn node_refuses_a_bad_validators_flag_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("n.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = \"d\"\n[network]\nlisten = [\"/ip4/127.0.0.1/tcp/{}\"]\n\
             [api]\nlisten = \"127.0.0.1:{}\"\n",
            free_port(),
            free_port()
        ),
    )
    .expect("config written");
    let config = config.to_str().unwrap();
    let out = run(&["node", "--config", config, "--validators", "12D3KooWnope"]);
    assert!(!out.status.success(), "a bad id must stop the node");
    let err = stderr(&out);
    assert!(
        err.contains("--validators") && err.contains("12D3KooWnope"),
        "{err}"
    );

    // Ten ids pass the parser but not the config's limit: the message says which flag.
    let ids: Vec<String> = (0..10)
        .map(|i| keygen(dir.path(), &format!("k{i}")))
        .collect();
    let out = run(&["node", "--config", config, "--validators", &ids.join(",")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("with --validators") && err.contains("ledger.validators"),
        "{err}"
    );
}

/// A `cluster` process, stopped with SIGTERM (which stops its nodes) however the test
/// ends.
struct ClusterProcess(Child);

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cluster_with_validator_nodes_runs_a_three_validator_ledger() {
    let dir = tempfile::tempdir().expect("temp dir");
    let names = ["c1", "c2", "c3", "c4"];
    let p2p: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let apis: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let mut cluster = String::new();
    for (i, name) in names.iter().enumerate() {
        let bootstrap = if i == 0 {
            String::new()
        } else {
            format!("\"/ip4/127.0.0.1/tcp/{}\"", p2p[0])
        };
        std::fs::write(
            dir.path().join(format!("{name}.toml")),
            format!(
                "[node]\nname = \"{name}\"\ndata_dir = \"{name}-data\"\n\n\
                 [network]\nlisten = [\"/ip4/127.0.0.1/tcp/{}\"]\nbootstrap = [{bootstrap}]\n\n\
                 [api]\nlisten = \"127.0.0.1:{}\"\n\n\
                 [discovery]\nbeacon_ms = 300\nexpiry_ms = 1500\n",
                p2p[i], apis[i]
            ),
        )
        .expect("node config written");
        // c4 is a plain member: it follows the ledger without a vote.
        let validator = i < 3;
        cluster.push_str(&format!(
            "[[node]]\nname = \"{name}\"\nconfig = \"{name}.toml\"\nvalidator = {validator}\n\n"
        ));
    }
    let cluster_file = dir.path().join("cluster.toml");
    std::fs::write(&cluster_file, cluster).expect("cluster file written");

    let mut cluster = ClusterProcess(
        Command::new(common::binary())
            .args(["cluster", "--config", cluster_file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cluster starts"),
    );

    // The identities `cluster` made before starting the nodes are the validators.
    let expected: Vec<String> = names[..3]
        .iter()
        .map(|n| {
            let data = dir.path().join(format!("{n}-data"));
            wait_for("the identity to exist", PATIENCE, || {
                x0_node::keystore::load(&data).ok()
            })
            .id()
            .to_string()
        })
        .collect();
    let status = |port: u16| -> Option<Value> {
        let (code, body) = http_get(port, "/api/v1/ledger/status").ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    };
    let leader = wait_for("every node to agree on a leader", PATIENCE, || {
        let leaders: Vec<String> = apis
            .iter()
            .filter_map(|&p| status(p)?["leader"].as_str().map(String::from))
            .collect();
        (leaders.len() == apis.len() && leaders.iter().all(|l| *l == leaders[0]))
            .then(|| leaders[0].clone())
    });
    assert!(
        expected.contains(&leader),
        "{leader} is one of {expected:?}"
    );
    let mut voters: Vec<String> = status(apis[0]).unwrap()["voters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    voters.sort();
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(voters, sorted);
    assert_eq!(status(apis[3]).unwrap()["role"], "member");

    // Written through the plain member, read back from a validator.
    let member_api = format!("127.0.0.1:{}", apis[3]);
    let out = ok(&["ledger", "append", "--api", &member_api, "from the member"]);
    assert!(out.starts_with("appended at position 1"), "{out}");
    let validator_api = format!("127.0.0.1:{}", apis[1]);
    let table = ok(&[
        "ledger",
        "entries",
        "--api",
        &validator_api,
        "--linearizable",
    ]);
    assert!(table.contains("from the member"), "{table}");
    let text = ok(&["ledger", "status", "--api", &validator_api]);
    assert!(text.contains("voters (3):"), "{text}");

    // SIGKILL the leader's process: `cluster` keeps the others running, and they elect
    // a new leader.
    let leader_index = expected.iter().position(|id| *id == leader).unwrap();
    let leader_config = dir.path().join(format!("{}.toml", names[leader_index]));
    let pid = node_pid(&leader_config).expect("the leader's process");
    let killed = Command::new("kill").args(["-KILL", &pid]).status();
    assert!(killed.is_ok_and(|s| s.success()));
    let survivor = apis[(leader_index + 1) % 3];
    let new_leader = wait_for("a new leader", PATIENCE, || {
        let l = status(survivor)?["leader"].as_str()?.to_string();
        (l != leader).then_some(l)
    });
    assert!(expected.contains(&new_leader));
    assert!(
        cluster.0.try_wait().expect("cluster status").is_none(),
        "cluster keeps running after a node is killed"
    );
    let out = ok(&["ledger", "append", "--api", &member_api, "after the kill"]);
    assert!(out.starts_with("appended at position 2"), "{out}");
}

/// The pid of the `node` process started with `config`, found in /proc (the test did not
/// start it: `cluster` did).
fn node_pid(config: &Path) -> Option<String> {
    let wanted = config.to_str()?;
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let entry = entry.ok()?;
        let pid = entry.file_name().to_str()?.to_string();
        pid.parse::<u32>().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        (args.iter().any(|a| a == "node") && args.iter().any(|a| a == wanted)).then_some(pid)
    })
}
