//! The rules of DESIGN.md that keep the three ways of running a node honest, checked on
//! the source: protocols and actors never read the wall clock or draw unseeded randomness,
//! and dependencies point one way.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn protocols_and_actors_use_no_wall_clock_or_unseeded_randomness() {
    let forbidden = [
        "std::time::Instant",
        "SystemTime",
        "thread_rng",
        "rand::rng(",
        "OsRng",
        "getrandom",
        "Instant::now()",
    ];
    for krate in ["protocols", "actors"] {
        for file in rust_files(&root().join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for pattern in forbidden {
                    // tokio's Instant is the allowed clock: it is the simulator's virtual one.
                    // `fn thread_rng()` is openraft's runtime hook, which the ledger
                    // implements with a seeded generator (actors/src/ledger/types.rs).
                    let allowed = code.contains("tokio::time::Instant")
                        || code.contains("fn thread_rng() -> Self::ThreadLocalRng");
                    if code.contains(pattern) && !allowed {
                        panic!("{}:{}: `{pattern}` in {krate}", file.display(), n + 1);
                    }
                }
            }
        }
    }
}

#[test]
fn dependencies_point_one_way() {
    let manifest = |krate: &str| {
        std::fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap_or_default()
    };
    let protocols = manifest("protocols");
    for banned in [
        "tokio",
        "libp2p",
        "ractor",
        "x0-actors",
        "x0-node",
        "x0-simulator",
    ] {
        assert!(
            !protocols.contains(banned),
            "protocols must not depend on {banned}"
        );
    }
    let actors = manifest("actors");
    for banned in ["libp2p", "x0-node", "x0-simulator"] {
        assert!(
            !actors.contains(banned),
            "actors must not depend on {banned}"
        );
    }
    let simulator = manifest("simulator");
    assert!(
        !simulator.contains("x0-node"),
        "the simulator must not depend on the node"
    );
}
