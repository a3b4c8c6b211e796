//! Every shipped config file loads; bad ones are refused with the file, key and reason.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use x0_node::config::NodeConfig;
use x0_simulator::Scenario;
use x0tta6bl4::cluster::ClusterFile;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn every_file_under_config_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let files = files_under(&root);
    assert!(
        files.len() >= 5,
        "expected node, cluster and scenario files, found {files:?}"
    );
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert!(
            name.ends_with(".toml"),
            "unexpected non-TOML file {}",
            file.display()
        );
        if file.parent().is_some_and(|p| p.ends_with("scenarios")) {
            Scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
        } else if name.starts_with("cluster") {
            ClusterFile::load(&file).unwrap_or_else(|e| panic!("{e}"));
        } else {
            NodeConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Starts `node --config` on `text` and returns what it printed on failure.
fn refused(text: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("written");
    let out = common::run(&["node", "--config", path.to_str().expect("utf-8 path")]);
    assert!(!out.status.success(), "a bad config must be refused");
    String::from_utf8_lossy(&out.stderr).to_string()
}

const GOOD: &str = "[node]\ndata_dir = \"d\"\n[network]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n[api]\nlisten = \"127.0.0.1:0\"\n";

#[test]
fn unknown_key_is_named() {
    let err = refused(&format!("{GOOD}\n[discovery]\nbeacon_msec = 100\n"));
    assert!(
        err.contains("bad.toml") && err.contains("beacon_msec"),
        "{err}"
    );
}

#[test]
fn bad_port_is_named() {
    let err = refused(&GOOD.replace("127.0.0.1:0", "127.0.0.1:99999"));
    assert!(
        err.contains("bad.toml") && err.contains("api.listen"),
        "{err}"
    );
}

#[test]
fn out_of_range_value_is_named_with_the_reason() {
    let err = refused(&format!("{GOOD}\n[discovery]\nbeacon_ms = 0\n"));
    assert!(
        err.contains("bad.toml") && err.contains("discovery.beacon_ms") && err.contains("got 0"),
        "{err}"
    );
}

#[test]
fn missing_file_is_named() {
    let out = common::run(&["node", "--config", "/nonexistent/x0/node.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/x0/node.toml"), "{err}");
}

#[test]
fn keygen_writes_private_keys_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("keys");
    let out = common::run(&["keygen", "--out", out_dir.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("12D3KooW"),
        "keygen prints the new id: {printed}"
    );
    for name in ["identity.ed25519", "identity.mlkem768"] {
        let mode = std::fs::metadata(out_dir.join(name))
            .expect(name)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} mode {mode:o}");
    }
    let again = common::run(&["keygen", "--out", out_dir.to_str().expect("utf-8")]);
    assert!(
        !again.status.success(),
        "keygen must not overwrite an identity"
    );
}

#[test]
fn simulate_refuses_impossible_arguments() {
    let out = common::run(&["simulate", "--nodes", "0", "--duration", "1s", "-q"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nodes: must be between 1"), "{err}");
    let out = common::run(&["simulate", "--duration", "ten", "-q"]);
    assert!(!out.status.success());
}

#[test]
fn simulate_runs_crdt_sync_unless_told_not_to() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = |extra: &[&str]| {
        let path = dir.path().join("report.json");
        let path_text = path.to_str().expect("a UTF-8 path");
        let mut args = vec![
            "simulate",
            "--nodes",
            "20",
            "--duration",
            "8s",
            "-q",
            "--report",
            path_text,
        ];
        args.extend_from_slice(extra);
        let out = common::run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&path).expect("report written");
        serde_json::from_str::<serde_json::Value>(&text).expect("JSON report")
    };
    let with = report(&[]);
    assert!(
        with["crdt"]["bootstrap_ms"].as_u64().is_some(),
        "{}",
        with["crdt"]
    );
    assert_eq!(with["crdt"]["entries_per_node"].as_f64(), Some(20.0));
    let without = report(&["--no-crdt"]);
    assert!(without["crdt"].is_null(), "{}", without["crdt"]);
}

/// Writes a cluster file `text` next to two node configs, `a.toml` and `b.toml`.
fn cluster_dir(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["a", "b"] {
        std::fs::write(
            dir.path().join(format!("{name}.toml")),
            GOOD.replace("\"d\"", &format!("\"{name}-data\"")),
        )
        .expect("node config written");
    }
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, text).expect("cluster file written");
    (dir, path)
}

#[test]
fn cluster_files_take_validator_and_refuse_unknown_keys() {
    let (dir, path) = cluster_dir(
        "[[node]]\nname = \"a\"\nconfig = \"a.toml\"\nvalidator = true\n\n\
         [[node]]\nname = \"b\"\nconfig = \"b.toml\"\n",
    );
    let members = ClusterFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let flags: Vec<(&str, bool)> = members
        .iter()
        .map(|m| (m.name.as_str(), m.validator))
        .collect();
    assert_eq!(flags, [("a", true), ("b", false)]);
    assert_eq!(members[0].config.data_dir, dir.path().join("a-data"));

    // Every node gets an identity; only the validators' ids are returned.
    let ids = x0tta6bl4::cluster::validator_ids(&members).unwrap_or_else(|e| panic!("{e}"));
    let a = x0_node::keystore::load(&dir.path().join("a-data")).expect("a's identity");
    assert!(x0_node::keystore::load(&dir.path().join("b-data")).is_ok());
    assert_eq!(ids, [a.id()]);
    // Made once: asking again reads the same keys.
    assert_eq!(
        x0tta6bl4::cluster::validator_ids(&members).expect("ids"),
        ids
    );

    let (_dir, path) =
        cluster_dir("[[node]]\nname = \"a\"\nconfig = \"a.toml\"\nvalidatr = true\n");
    let err = ClusterFile::load(&path)
        .expect_err("a typo is refused")
        .to_string();
    assert!(
        err.contains("cluster.toml") && err.contains("validatr"),
        "{err}"
    );
    let (_dir, path) =
        cluster_dir("[[node]]\nname = \"a\"\nconfig = \"a.toml\"\nvalidator = \"yes\"\n");
    let err = ClusterFile::load(&path)
        .expect_err("not a bool")
        .to_string();
    assert!(err.contains("validator"), "{err}");
}

#[test]
fn two_cluster_nodes_sharing_an_identity_are_refused() {
    let (_dir, path) = cluster_dir(
        "[[node]]\nname = \"a\"\nconfig = \"a.toml\"\nvalidator = true\n\n\
         [[node]]\nname = \"a2\"\nconfig = \"a.toml\"\nvalidator = true\n",
    );
    let members = ClusterFile::load(&path).expect("loads");
    let err = x0tta6bl4::cluster::validator_ids(&members)
        .expect_err("same data_dir, same id")
        .to_string();
    assert!(err.contains("a and a2 have the same identity"), "{err}");
}

#[test]
fn the_shipped_cluster_runs_a_three_validator_ledger() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cluster.toml");
    let members = ClusterFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let validators: Vec<&str> = members
        .iter()
        .filter(|m| m.validator)
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(validators, ["node-a", "node-b", "node-c"]);
}
