//! The module graph of a crate and the two rules on it: no import cycle among sibling modules,
//! and (for the core) no import from a lower layer into a higher one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::scan::{ModFile, ModPath};

/// One resolved reference: from a module to a module, where it is written.
#[derive(Debug, Clone)]
pub struct Edge {
    /// The module it is written in.
    pub from: ModPath,
    /// The module it names.
    pub to: ModPath,
    /// The file it is written in, with the crate's source directory.
    pub file: PathBuf,
    /// 1-based line.
    pub line: u32,
}

impl Edge {
    /// `file:line`.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// `a::b`, or `crate` for the root.
pub fn name(p: &[String]) -> String {
    if p.is_empty() {
        "crate".into()
    } else {
        p.join("::")
    }
}

/// Every reference of `files` resolved to the module it names (the longest module prefix of
/// its path; a root `pub use` is followed to where it comes from). `dir` prefixes file names.
pub fn edges(files: &[ModFile], dir: &str) -> Vec<Edge> {
    let modules: Vec<&ModPath> = files.iter().map(|f| &f.path).collect();
    let root = files.iter().find(|f| f.path.is_empty());
    let resolve = |path: &ModPath| -> ModPath {
        let mut path = path.clone();
        if let (Some(root), Some(first)) = (root, path.first()) {
            if !modules.iter().any(|m| m.first() == Some(first)) {
                if let Some(target) = root.reexports.get(first) {
                    path.splice(0..1, target.iter().cloned());
                }
            }
        }
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains(&p))
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for f in files {
        for r in &f.refs {
            out.push(Edge {
                from: r.from.clone(),
                to: resolve(&r.path),
                file: PathBuf::from(dir).join(&f.file),
                line: r.line,
            });
        }
    }
    out
}

/// The edge between the two sibling modules that contain its ends, under their common parent:
/// `(parent, from sibling, to sibling)`. `None` when one end contains the other: a module and
/// its own submodules may refer to each other (a parent re-exporting a child, a child using
/// its parent's types); that is one module, not two layers.
pub fn lift(e: &Edge) -> Option<(ModPath, String, String)> {
    let common = e.from.iter().zip(&e.to).take_while(|(a, b)| a == b).count();
    if common == e.from.len() || common == e.to.len() {
        return None;
    }
    Some((
        e.from[..common].to_vec(),
        e.from[common].clone(),
        e.to[common].clone(),
    ))
}

/// The import cycles among sibling modules, each as a message naming the modules in order and
/// the file and line of one reference per step.
pub fn cycles(edges: &[Edge]) -> Vec<String> {
    // parent -> from -> to -> first edge
    let mut g: BTreeMap<ModPath, BTreeMap<String, BTreeMap<String, &Edge>>> = BTreeMap::new();
    for e in edges {
        if let Some((parent, a, b)) = lift(e) {
            g.entry(parent)
                .or_default()
                .entry(a)
                .or_default()
                .entry(b)
                .or_insert(e);
        }
    }
    let mut found = Vec::new();
    for (parent, adj) in &g {
        // Depth-first search with colours; a grey target closes a cycle.
        let mut colour: BTreeMap<&str, u8> = BTreeMap::new();
        for start in adj.keys() {
            let mut stack: Vec<&str> = Vec::new();
            visit(start, adj, &mut colour, &mut stack, &mut |cycle| {
                let mut steps = Vec::new();
                for w in cycle.windows(2) {
                    let e = adj[w[0]][w[1]];
                    steps.push(format!("{} -> {} ({})", w[0], w[1], e.at()));
                }
                found.push(format!(
                    "import cycle among the modules of {}: {}",
                    name(parent),
                    steps.join(", ")
                ));
            });
        }
    }
    found
}

fn visit<'a>(
    n: &'a str,
    adj: &'a BTreeMap<String, BTreeMap<String, &Edge>>,
    colour: &mut BTreeMap<&'a str, u8>,
    stack: &mut Vec<&'a str>,
    report: &mut dyn FnMut(Vec<&'a str>),
) {
    match colour.get(n) {
        Some(2) => return,
        Some(1) => {
            let from = stack.iter().position(|s| *s == n).unwrap_or(0);
            let mut cycle = stack[from..].to_vec();
            cycle.push(n);
            report(cycle);
            return;
        }
        _ => {}
    }
    colour.insert(n, 1);
    stack.push(n);
    for m in adj.get(n).into_iter().flat_map(|m| m.keys()) {
        visit(m, adj, colour, stack, report);
    }
    stack.pop();
    colour.insert(n, 2);
}

/// The violations of `layers` (bottom up: a name and its top-level modules) among `edges`: a
/// reference from a lower layer into a higher one, and a top-level module in no layer.
pub fn layer_violations(edges: &[Edge], layers: &[(&str, &[&str])]) -> Vec<String> {
    let layer_of = |m: &str| layers.iter().position(|(_, ms)| ms.contains(&m));
    let mut out = Vec::new();
    let mut unplaced = Vec::new();
    for e in edges {
        let Some((parent, a, b)) = lift(e) else {
            continue;
        };
        if !parent.is_empty() {
            continue;
        }
        for m in [&a, &b] {
            if layer_of(m).is_none() && !unplaced.contains(m) {
                unplaced.push(m.clone());
                out.push(format!(
                    "{}: module `{m}` is in no layer: add it to the layer table in tests/layers.rs \
                     (and the diagram in docs/ARCHITECTURE.md)",
                    e.at()
                ));
            }
        }
        if let (Some(la), Some(lb)) = (layer_of(&a), layer_of(&b)) {
            if la < lb {
                out.push(format!(
                    "{}: `{}` ({}, layer {}) imports `{}` ({}, layer {}): layers point down only",
                    e.at(),
                    name(&e.from),
                    layers[la].0,
                    la + 1,
                    name(&e.to),
                    layers[lb].0,
                    lb + 1
                ));
            }
        }
    }
    out
}
