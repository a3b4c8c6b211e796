//! Helpers for tests that run real `x0tta6bl4` processes on 127.0.0.1.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where [`free_port`] looks: below Linux's ephemeral range (32768–60999), so that no
/// outgoing connection (a node dialing a peer) can take the port between this test
/// choosing it and the node binding it, as happened with ports the OS handed out.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port free a moment ago, handed out once per test process: the process id picks
/// where a test binary starts, a counter moves on from there.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(PORTS.end - PORTS.start);
    let start = (std::process::id() * 397) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = PORTS.start + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {} and {}", PORTS.start, PORTS.end);
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_x0tta6bl4")
}

/// Runs the binary to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .output()
        .expect("x0tta6bl4 runs")
}

/// A plain HTTP/1.1 GET; returns (status, body). Enough for our own API, no client crate.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_request(port, "GET", path, None)
}

/// A plain HTTP/1.1 POST of a JSON body; returns (status, body).
pub fn http_post(port: u16, path: &str, json: &str) -> std::io::Result<(u16, String)> {
    http_request(port, "POST", path, Some(json))
}

pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    match json {
        Some(body) => write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?,
        None => write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?,
    }
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Chunked bodies (axum streams some): keep only the chunk data lines.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Ok((status, body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size_line, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `limit` naming `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node process that is killed when the test ends, however it ends.
pub struct NodeProcess {
    pub name: String,
    pub api_port: u16,
    pub p2p_port: u16,
    pub config: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    /// Writes a config for a node on free ports under `dir` and starts it.
    pub fn start(dir: &Path, name: &str, bootstrap: Option<u16>) -> NodeProcess {
        Self::start_with(dir, name, free_port(), bootstrap.as_slice(), "")
    }

    /// Like [`NodeProcess::start`] on a given p2p port, with several bootstrap peers and
    /// extra `[network]` lines (e.g. `discover = false`).
    pub fn start_with(
        dir: &Path,
        name: &str,
        p2p_port: u16,
        bootstrap: &[u16],
        network_extra: &str,
    ) -> NodeProcess {
        let api_port = free_port();
        let bootstrap = format!(
            "[{}]",
            bootstrap
                .iter()
                .map(|p| format!("\"/ip4/127.0.0.1/tcp/{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[node]\nname = \"{name}\"\ndata_dir = \"{name}-data\"\n\n\
                 [network]\nlisten = [\"/ip4/127.0.0.1/tcp/{p2p_port}\"]\nbootstrap = {bootstrap}\n{network_extra}\n\n\
                 [api]\nlisten = \"127.0.0.1:{api_port}\"\n\n\
                 [discovery]\nbeacon_ms = 300\nexpiry_ms = 1500\n"
            ),
        )
        .expect("config written");
        let mut node = NodeProcess {
            name: name.to_string(),
            api_port,
            p2p_port,
            config,
            child: None,
        };
        node.restart();
        node
    }

    /// Starts the node process again from its config. Its log goes to `<name>.log` next
    /// to the config (appended across restarts), for when a test fails.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.with_extension("log"))
            .expect("node log opens");
        let child = Command::new(binary())
            .arg("node")
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("node process starts");
        self.child = Some(child);
        let port = self.api_port;
        wait_for(
            &format!("{} to answer /health", self.name),
            Duration::from_secs(30),
            || http_get(port, "/health").ok().filter(|(s, _)| *s == 200),
        );
    }

    pub fn get(&self, path: &str) -> Option<serde_json::Value> {
        let (status, body) = http_get(self.api_port, path).ok()?;
        if status != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    pub fn id(&self) -> String {
        let status = wait_for("status", Duration::from_secs(10), || {
            self.get("/api/v1/status")
        });
        status["id"].as_str().expect("status has an id").to_string()
    }

    /// Ids listed at /api/v1/peers.
    pub fn peer_ids(&self) -> Vec<String> {
        self.get("/api/v1/peers")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p["id"].as_str().map(String::from))
            .collect()
    }

    /// SIGKILL: no goodbye, as in a crash or a pulled cable.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates a node's keys under `dir/<name>-data` ahead of its start, as an operator does
/// to write a validator list, and returns its id.
pub fn keygen(dir: &Path, name: &str) -> String {
    let data = dir.join(format!("{name}-data"));
    let out = run(&["keygen", "--out", data.to_str().expect("a UTF-8 path")]);
    assert!(out.status.success(), "keygen: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("node id: "))
        .expect("keygen prints the id")
        .trim()
        .to_string()
}
