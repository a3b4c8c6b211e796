//! Seeded topology generators, producing a sparse adjacency list (never an n×n matrix).

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyKind {
    /// Nodes scattered on a unit square, linked when within radio range; isolated pieces
    /// are bridged to their nearest node so the mesh is connected.
    RandomGeometric,
    /// A square-ish grid, 4-neighborhood.
    Grid,
    /// Barabási–Albert preferential attachment (2 links per new node): a few hubs.
    ScaleFree,
    /// Everyone linked to everyone. O(n²) links: for small runs only.
    Full,
}

impl TopologyKind {
    pub const ALL: [TopologyKind; 4] = [
        TopologyKind::RandomGeometric,
        TopologyKind::Grid,
        TopologyKind::ScaleFree,
        TopologyKind::Full,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TopologyKind::RandomGeometric => "random-geometric",
            TopologyKind::Grid => "grid",
            TopologyKind::ScaleFree => "scale-free",
            TopologyKind::Full => "full",
        }
    }
}

impl fmt::Display for TopologyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TopologyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TopologyKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = TopologyKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown topology {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// Who is linked to whom. `adjacency[i]` is sorted and never contains `i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub kind: TopologyKind,
    pub adjacency: Vec<Vec<u32>>,
}

impl Topology {
    pub fn generate(
        kind: TopologyKind,
        nodes: usize,
        mean_degree: f64,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let mut builder = Builder::new(nodes);
        match kind {
            TopologyKind::RandomGeometric => random_geometric(&mut builder, mean_degree, rng),
            TopologyKind::Grid => grid(&mut builder),
            TopologyKind::ScaleFree => scale_free(&mut builder, rng),
            TopologyKind::Full => full(&mut builder),
        }
        Topology {
            kind,
            adjacency: builder.finish(),
        }
    }

    pub fn nodes(&self) -> usize {
        self.adjacency.len()
    }

    /// Number of undirected links.
    pub fn links(&self) -> usize {
        self.adjacency.iter().map(Vec::len).sum::<usize>() / 2
    }

    pub fn mean_degree(&self) -> f64 {
        if self.adjacency.is_empty() {
            return 0.0;
        }
        self.adjacency.iter().map(Vec::len).sum::<usize>() as f64 / self.adjacency.len() as f64
    }

    pub fn is_connected(&self) -> bool {
        components(&self.adjacency).len() <= 1
    }
}

struct Builder {
    adjacency: Vec<Vec<u32>>,
}

impl Builder {
    fn new(nodes: usize) -> Self {
        Builder {
            adjacency: vec![Vec::new(); nodes],
        }
    }

    fn link(&mut self, a: usize, b: usize) {
        if a != b {
            self.adjacency[a].push(b as u32);
            self.adjacency[b].push(a as u32);
        }
    }

    fn finish(mut self) -> Vec<Vec<u32>> {
        for list in &mut self.adjacency {
            list.sort_unstable();
            list.dedup();
        }
        self.adjacency
    }
}

fn random_geometric(builder: &mut Builder, mean_degree: f64, rng: &mut ChaCha8Rng) {
    let n = builder.adjacency.len();
    if n < 2 {
        return;
    }
    let points: Vec<(f64, f64)> = (0..n)
        .map(|_| (rng.random::<f64>(), rng.random::<f64>()))
        .collect();
    // Expected degree of a point in a unit square is about n·π·r²; solve for r.
    let radius = (mean_degree / (std::f64::consts::PI * n as f64))
        .sqrt()
        .min(1.5);
    let cells = ((1.0 / radius).floor() as usize).clamp(1, 4096);
    let cell_of = |p: (f64, f64)| {
        let cx = ((p.0 * cells as f64) as usize).min(cells - 1);
        let cy = ((p.1 * cells as f64) as usize).min(cells - 1);
        (cx, cy)
    };
    let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); cells * cells];
    for (i, p) in points.iter().enumerate() {
        let (cx, cy) = cell_of(*p);
        buckets[cy * cells + cx].push(i);
    }
    let dist2 = |a: usize, b: usize| {
        let (dx, dy) = (points[a].0 - points[b].0, points[a].1 - points[b].1);
        dx * dx + dy * dy
    };
    for (i, p) in points.iter().enumerate() {
        let (cx, cy) = cell_of(*p);
        for ny in cy.saturating_sub(1)..=(cy + 1).min(cells - 1) {
            for nx in cx.saturating_sub(1)..=(cx + 1).min(cells - 1) {
                for &j in &buckets[ny * cells + nx] {
                    if j > i && dist2(i, j) <= radius * radius {
                        builder.link(i, j);
                    }
                }
            }
        }
    }
    // Bridge every smaller piece to its nearest node outside it, as an operator would
    // place a relay: a simulation of an unreachable island measures nothing useful.
    loop {
        let parts = components(&builder.adjacency);
        if parts.len() <= 1 {
            break;
        }
        let mut part_of = vec![0usize; n];
        for (p, members) in parts.iter().enumerate() {
            for &m in members {
                part_of[m] = p;
            }
        }
        let smallest = parts
            .iter()
            .enumerate()
            .min_by_key(|(_, m)| m.len())
            .map(|(p, _)| p)
            .unwrap_or(0);
        let mut best: Option<(f64, usize, usize)> = None;
        for &a in &parts[smallest] {
            for (b, &part) in part_of.iter().enumerate() {
                if part != smallest {
                    let d = dist2(a, b);
                    if best.is_none_or(|(bd, _, _)| d < bd) {
                        best = Some((d, a, b));
                    }
                }
            }
        }
        if let Some((_, a, b)) = best {
            builder.link(a, b);
        }
    }
}

fn grid(builder: &mut Builder) {
    let n = builder.adjacency.len();
    let width = (n as f64).sqrt().ceil().max(1.0) as usize;
    for i in 0..n {
        if (i + 1) % width != 0 && i + 1 < n {
            builder.link(i, i + 1);
        }
        if i + width < n {
            builder.link(i, i + width);
        }
    }
}

fn scale_free(builder: &mut Builder, rng: &mut ChaCha8Rng) {
    const LINKS_PER_NODE: usize = 2;
    let n = builder.adjacency.len();
    let seed_nodes = (LINKS_PER_NODE + 1).min(n);
    // Every link end appears once here, so a uniform pick is a degree-proportional pick.
    let mut ends: Vec<usize> = Vec::new();
    for a in 0..seed_nodes {
        for b in (a + 1)..seed_nodes {
            builder.link(a, b);
            ends.extend([a, b]);
        }
    }
    for new in seed_nodes..n {
        let mut chosen: Vec<usize> = Vec::with_capacity(LINKS_PER_NODE);
        while chosen.len() < LINKS_PER_NODE.min(new) {
            let candidate = ends[rng.random_range(0..ends.len())];
            if !chosen.contains(&candidate) {
                chosen.push(candidate);
            }
        }
        for old in chosen {
            builder.link(new, old);
            ends.extend([new, old]);
        }
    }
}

fn full(builder: &mut Builder) {
    let n = builder.adjacency.len();
    for a in 0..n {
        for b in (a + 1)..n {
            builder.link(a, b);
        }
    }
}

/// Connected components, each as a list of node indices.
fn components(adjacency: &[Vec<u32>]) -> Vec<Vec<usize>> {
    let mut seen = vec![false; adjacency.len()];
    let mut parts = Vec::new();
    for start in 0..adjacency.len() {
        if seen[start] {
            continue;
        }
        seen[start] = true;
        let mut part = vec![start];
        let mut queue = VecDeque::from([start]);
        while let Some(at) = queue.pop_front() {
            for &next in &adjacency[at] {
                let next = next as usize;
                if !seen[next] {
                    seen[next] = true;
                    part.push(next);
                    queue.push_back(next);
                }
            }
        }
        parts.push(part);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn make(kind: TopologyKind, n: usize, seed: u64) -> Topology {
        Topology::generate(kind, n, 8.0, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    #[test]
    fn every_kind_is_symmetric_connected_and_loop_free() {
        for kind in TopologyKind::ALL {
            for n in [1, 2, 3, 10, 57, 300] {
                let t = make(kind, n, 11);
                assert_eq!(t.nodes(), n);
                assert!(t.is_connected(), "{kind} with {n} nodes is not connected");
                for (i, list) in t.adjacency.iter().enumerate() {
                    assert!(!list.contains(&(i as u32)), "{kind}: self link at {i}");
                    for &j in list {
                        assert!(
                            t.adjacency[j as usize].contains(&(i as u32)),
                            "{kind}: {i}->{j} one-way"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn same_seed_same_topology() {
        for kind in TopologyKind::ALL {
            assert_eq!(make(kind, 200, 5), make(kind, 200, 5));
        }
        assert_ne!(
            make(TopologyKind::RandomGeometric, 200, 5),
            make(TopologyKind::RandomGeometric, 200, 6)
        );
    }

    #[test]
    fn shapes_have_their_expected_degrees() {
        let rgg = make(TopologyKind::RandomGeometric, 2000, 1);
        assert!(
            (5.0..10.0).contains(&rgg.mean_degree()),
            "{}",
            rgg.mean_degree()
        );
        let grid = make(TopologyKind::Grid, 100, 1);
        assert_eq!(grid.links(), 2 * 10 * 9);
        let sf = make(TopologyKind::ScaleFree, 1000, 1);
        let max = sf.adjacency.iter().map(Vec::len).max().unwrap_or(0);
        assert!(max > 30, "a scale-free graph has hubs, max degree {max}");
        assert_eq!(make(TopologyKind::Full, 20, 1).links(), 190);
    }

    #[test]
    fn names_parse_back() {
        for kind in TopologyKind::ALL {
            assert_eq!(kind.name().parse::<TopologyKind>(), Ok(kind));
        }
        assert!("mesh".parse::<TopologyKind>().is_err());
    }
}
