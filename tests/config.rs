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
