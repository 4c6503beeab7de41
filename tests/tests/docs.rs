//! The documents against the code they describe.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use tally_tests::repo_root;

/// Each workspace crate's dependencies on other workspace crates, as cargo reads the manifests:
/// (normal and build, dev-only).
type Edges = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>;

fn cargo_edges() -> Edges {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{output:?}");
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata is JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().expect("a name").to_owned())
        .collect();
    let mut edges = Edges::new();
    for package in packages {
        let (mut normal, mut dev) = (BTreeSet::new(), BTreeSet::new());
        for dependency in package["dependencies"].as_array().expect("dependencies") {
            let name = dependency["name"].as_str().expect("a name").to_owned();
            if !names.contains(&name) {
                continue;
            }
            if dependency["kind"].as_str() == Some("dev") {
                dev.insert(name);
            } else {
                normal.insert(name);
            }
        }
        let dev = &dev - &normal;
        edges.insert(package["name"].as_str().unwrap().to_owned(), (normal, dev));
    }
    edges
}

/// The crate graph as ARCHITECTURE.md draws it: `a ──> b, c,` with continuation lines, a
/// `(dev: d, e)` line for dev-only edges, and `a, b (no workspace edges)`.
fn drawn_edges() -> Edges {
    let text = std::fs::read_to_string(repo_root().join("ARCHITECTURE.md")).unwrap();
    let start = text
        .find("Crate graph")
        .expect("ARCHITECTURE.md has a crate graph");
    let block = &text[start..];
    let block = &block[block.find("```\n").unwrap() + 4..];
    let block = &block[..block.find("```").unwrap()];
    let list = |s: &str| -> BTreeSet<String> {
        s.split(',')
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect()
    };
    let mut edges = Edges::new();
    let mut current: Option<String> = None;
    for line in block.lines() {
        let trimmed = line.trim();
        if let Some(isolated) = trimmed.strip_suffix("(no workspace edges)") {
            for name in list(isolated) {
                edges.entry(name).or_default();
            }
        } else if let Some(dev) = trimmed.strip_prefix("(dev:") {
            let name = current.as_ref().expect("a dev line follows its crate");
            edges.get_mut(name).unwrap().1 = list(dev.trim_end_matches(')'));
        } else if let Some((from, to)) = trimmed.split_once('>') {
            let from = from.trim_end_matches(['─', ' ']).trim();
            let from = from
                .strip_suffix("(binary)")
                .unwrap_or(from)
                .trim()
                .to_owned();
            edges.entry(from.clone()).or_default().0 = list(to);
            current = Some(from);
        } else if !trimmed.is_empty() {
            let name = current.as_ref().expect("a continuation follows its crate");
            edges.get_mut(name).unwrap().0.extend(list(trimmed));
        }
    }
    edges
}

// Goal: the crate graph in ARCHITECTURE.md draws every edge between workspace crates, and no
// edge that is not there, so a reader can trust it.
// Method: read the workspace's manifests with `cargo metadata --no-deps` and the drawing from
// the file; compare crate by crate, normal and dev-only edges apart.
#[test]
fn the_crate_graph_drawn_is_cargo_s() {
    let cargo = cargo_edges();
    let drawn = drawn_edges();
    let mut wrong = Vec::new();
    for name in cargo.keys().chain(drawn.keys()).collect::<BTreeSet<_>>() {
        let (have, shown) = (cargo.get(name), drawn.get(name));
        if have != shown {
            wrong.push(format!(
                "{name}: cargo says {have:?}, ARCHITECTURE.md draws {shown:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
