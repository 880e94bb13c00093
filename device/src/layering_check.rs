//! The crate's layers (docs/architecture.md, "Layers"), checked against
//! the code: every `use crate::…`, `crate::…` and `super::…` path outside
//! test modules must point to a module of the same layer or a lower one,
//! and the modules of one layer must not import each other in a circle.
//! A new module must be given its layer here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules (or submodules, where they sit apart from their
/// parent) by layer, highest first. A module not listed takes the layer of
/// its closest listed ancestor.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "management and I/O",
        &["server", "control", "agent", "restart", "keeper"],
    ),
    ("the card", &["card"]),
    ("the data path", &["datapath"]),
    ("functions", &["function"]),
    (
        "function parts, switching, tables, policies",
        &[
            "queue",
            "switch",
            "vxlan",
            "offload::request",
            "fault",
            "rate",
            "uplink",
            "capture",
        ],
    ),
    ("rings", &["ring"]),
    (
        "registers, guest memory, wire formats",
        &[
            "pci", "regs", "doorbell", "state", "dma", "protocol", "offload", "checksum",
        ],
    ),
    ("domain types and logging", &["model", "clientlog"]),
];

/// Modules that are no part of vnicd's layers: tests' and fuzzers' helpers
/// (they play the client's part and may use anything) and this check.
const OUTSIDE: &[&str] = &[
    "test_utils",
    "layout_check",
    "layering_check",
    "restart::crash_points",
];

fn layer_of(module: &str) -> Option<usize> {
    let mut m = module;
    loop {
        for (i, (_, mods)) in LAYERS.iter().enumerate() {
            if mods.contains(&m) {
                return Some(i);
            }
        }
        m = &m[..m.rfind("::")?];
    }
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                source_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b/mod.rs` → `a::b`, `a/c.rs` → `a::c`, `lib.rs` → "".
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts.join("::")
}

/// The text without comments and without `#[cfg(test)] mod … { … }`.
fn without_tests(text: &str) -> String {
    let text: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ")
            || trimmed.starts_with("pub mod ")
            || trimmed.starts_with("pub(crate) mod ");
        let brace = after.find('{');
        let semi = after.find(';');
        if !is_mod || brace.is_none() || semi.is_some_and(|s| s < brace.unwrap_or(0)) {
            out.push_str(&rest[..at + "#[cfg(test)]".len()]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..at]);
        let body = &after[brace.unwrap_or(0)..];
        let mut depth = 0usize;
        let mut end = body.len();
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e` (no blanks).
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else {
        return vec![path.to_string()];
    };
    let (prefix, inner) = (&path[..open], &path[open + 1..path.len() - 1]);
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(p).into_iter().map(move |e| format!("{prefix}{e}")))
        .collect()
}

/// Every `crate::…` and `super::…` path in `text` (use lists expanded),
/// relative to the crate root.
fn paths(text: &str, module: &str) -> Vec<String> {
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    let rooted = |p: &str| -> Option<String> {
        let p = p.split(" as ").next().unwrap_or(p);
        if let Some(rest) = p.strip_prefix("crate::") {
            Some(rest.to_string())
        } else {
            let rest = p.strip_prefix("super::")?;
            Some(if parent.is_empty() {
                rest.to_string()
            } else {
                format!("{parent}::{rest}")
            })
        }
    };
    let mut out = Vec::new();
    // Use declarations, braces and all.
    for stmt in text.split(';') {
        let Some(at) = stmt.find("use ") else {
            continue;
        };
        let body: String = stmt[at + 4..]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let compact = body
            .replace(", ", ",")
            .replace(" {", "{")
            .replace("{ ", "{");
        for p in expand(&compact) {
            out.extend(rooted(p.trim()));
        }
    }
    // Paths in the code.
    for prefix in ["crate::", "super::"] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                out.extend(rooted(tail[..end].trim_end_matches(':')));
            }
            rest = &tail[prefix.len()..];
        }
    }
    out
}

/// The longest known module that is a prefix of `path`.
fn resolve<'a>(modules: &'a BTreeSet<String>, path: &str) -> Option<&'a str> {
    let mut p = path;
    loop {
        if let Some(m) = modules.get(p) {
            return Some(m);
        }
        p = &p[..p.rfind("::")?];
    }
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let me = module_of(&src, file);
        let text = without_tests(&std::fs::read_to_string(file).expect("read source"));
        let mut deps = BTreeSet::new();
        for path in paths(&text, &me) {
            let Some(to) = resolve(&modules, &path) else {
                continue;
            };
            // A module's own parents and itself are not dependencies.
            if to.is_empty() || to == me || me.starts_with(&format!("{to}::")) {
                continue;
            }
            deps.insert(to.to_string());
        }
        graph.insert(me, deps);
    }
    graph
}

fn outside(module: &str) -> bool {
    module.is_empty() || OUTSIDE.contains(&module)
}

#[test]
fn every_module_has_a_layer_and_imports_only_downwards() {
    let graph = import_graph();
    let mut wrong = Vec::new();
    for (from, deps) in &graph {
        if outside(from) {
            continue;
        }
        let Some(lf) = layer_of(from) else {
            wrong.push(format!("{from} has no layer (LAYERS in layering_check.rs)"));
            continue;
        };
        for to in deps {
            if outside(to) {
                wrong.push(format!("{from} -> {to}: outside vnicd's layers"));
                continue;
            }
            let lt = layer_of(to).unwrap_or(usize::MAX);
            if lt < lf {
                wrong.push(format!(
                    "{from} ({}) -> {to} ({}): upward",
                    LAYERS[lf].0,
                    LAYERS.get(lt).map_or("no layer", |l| l.0)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn no_import_circle() {
    let graph = import_graph();
    // Depth-first search for a back edge, outside modules left out.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for to in graph.get(m).into_iter().flatten() {
            if outside(to) {
                continue;
            }
            match state.get(to.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == to).unwrap_or(0);
                    let mut circle = stack[at..].to_vec();
                    circle.push(to.clone());
                    return Some(circle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(to, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys().filter(|m| !outside(m)) {
        if !state.contains_key(m.as_str()) {
            let circle = visit(m, &graph, &mut state, &mut Vec::new());
            assert!(
                circle.is_none(),
                "import circle: {}",
                circle.unwrap_or_default().join(" -> ")
            );
        }
    }
}

#[test]
fn the_check_sees_imports() {
    let graph = import_graph();
    let card = &graph["card"];
    assert!(
        card.contains("datapath") && card.contains("function"),
        "{card:?}"
    );
    assert!(graph["datapath::fast"].contains("function"));
    assert!(
        graph["function::traffic"].contains("queue"),
        "super:: and crate:: paths"
    );
    assert!(!graph["datapath"].contains("card"), "test modules left out");
}
