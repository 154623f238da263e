//! The crate graph's rules (ARCHITECTURE.md), checked over `cargo metadata`: a forbidden dependency
//! fails here, not in review. Dev-dependencies are free (tests compare backends against each other).

use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;

/// Each workspace crate's normal and build dependencies, by package name.
fn dependencies() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path", manifest])
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let mut graph = BTreeMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        let deps = p["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .map(|d| d["name"].as_str().expect("name").to_owned())
            .collect();
        graph.insert(p["name"].as_str().expect("name").to_owned(), deps);
    }
    graph
}

/// `krate` must not depend on any of `forbidden` (a trailing `*` matches a prefix).
fn assert_free_of(graph: &BTreeMap<String, Vec<String>>, krate: &str, forbidden: &[&str], rule: &str) {
    let deps = graph.get(krate).unwrap_or_else(|| panic!("{krate} is not in the workspace"));
    for d in deps {
        let hit = forbidden.iter().any(|f| match f.strip_suffix('*') {
            Some(prefix) => d.starts_with(prefix),
            None => d == f,
        });
        assert!(!hit, "{krate} depends on {d}, but {rule}");
    }
}

#[test]
fn the_crate_graph_keeps_its_rules() {
    let g = dependencies();
    let ml = ["candle-*", "wgpu*", "tokenizers", "safetensors"];
    assert_free_of(&g, "headscope-core", &[&ml[..], &["headscope-*"]].concat(), "core knows no tensors and no other HeadScope crate");
    assert_free_of(
        &g,
        "headscope-engine",
        &[&ml[..], &["headscope-model", "headscope-gpu", "headscope-plot", "headscope-cli", "headscope-web"]].concat(),
        "the engine layer is backend-neutral",
    );
    assert_free_of(
        &g,
        "headscope-gpu",
        &["candle-*", "headscope-model", "headscope-cli", "headscope-web"],
        "the WGSL path builds without candle",
    );
    assert_free_of(
        &g,
        "headscope-model",
        &["wgpu*", "headscope-gpu", "headscope-cli", "headscope-web", "headscope-plot"],
        "backends know no front end",
    );
    assert_free_of(
        &g,
        "headscope-plot",
        &[&ml[..], &["headscope-model", "headscope-gpu", "headscope-engine"]].concat(),
        "plots draw numbers",
    );
    assert_free_of(
        &g,
        "headscope-train",
        &["wgpu*", "headscope-gpu", "headscope-engine", "headscope-plot", "headscope-cli", "headscope-web"],
        "the trainer needs the candle backend's autograd and core's exercises, nothing of the front ends",
    );
    // The fuzz harness drives every parser of outside input, the page worker's requests included, so it
    // alone may reach a front end; nothing depends on it.
    for (krate, deps) in g.iter().filter(|(k, _)| k.as_str() != "headscope-fuzz") {
        for front_end in ["headscope-cli", "headscope-web", "headscope-fuzz"] {
            assert!(!deps.contains(&front_end.to_owned()), "{krate} depends on the front end or harness {front_end}");
        }
    }
    assert!(g.contains_key("headscope-fuzz"), "the fuzz harness is a workspace member");
}
