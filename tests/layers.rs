//! Layers point one way, and no crate's files import each other in a circle.
//!
//! Reads the source of the core (`src/`), the C ABI (`ffi/src/`) and the bench (`bench/src/`)
//! as the compiler sees their modules (following `mod` declarations, leaving out test-only items,
//! comments and literals) and fails, naming file and line:
//! - on an import from one of the core's layers into a higher one ([`CORE_LAYERS`]);
//! - on an import cycle among sibling modules of any of the three crates (a module and its own
//!   submodules may refer to each other: that is one module);
//! - when the layer diagram in docs/ARCHITECTURE.md is not the one [`CORE_LAYERS`] draws.

mod layers {
    pub mod graph;
    pub mod scan;
}

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use layers::graph::{cycles, edges, layer_violations};
use layers::scan::load_crate;

/// The core's layers, bottom up: a module may use the modules of its own layer and of the
/// layers below it, never those above.
const CORE_LAYERS: &[(&str, &[&str])] = &[
    ("errors, memory, messages", &["error", "mem", "text"]),
    ("porting surface", &["host"]),
    ("media types", &["media"]),
    ("volume reader", &["volume"]),
    ("roles, node sets", &["role"]),
    ("thread protocol", &["thread"]),
    ("quorum", &["quorum"]),
    ("node store", &["store"]),
    ("nodes on volumes", &["mount"]),
    ("synchronizer", &["sync"]),
    ("cluster", &["cluster"]),
    ("scenario interpreter", &["scenario"]),
    ("testkit", &["testkit"]),
    ("userland host", &["userland"]),
];

/// The diagram of `layers`, top layer first, as docs/ARCHITECTURE.md shows it.
fn diagram(layers: &[(&str, &[&str])]) -> String {
    let mut out = String::from("layer  what                     modules (src/)\n");
    for (i, (name, modules)) in layers.iter().enumerate().rev() {
        out.push_str(&format!(
            "{:>5}  {:<25}{}\n",
            i + 1,
            name,
            modules.join(", ")
        ));
    }
    out
}

const DIAGRAM_START: &str =
    "<!-- layer diagram: drawn from CORE_LAYERS in tests/layers.rs -->\n```text\n";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The problems of the crate whose sources are in `dir` (relative to the workspace), with
/// `root_file` its crate root; the core's layers are checked when `layers` is given.
fn problems(dir: &str, root_file: &str, layers: Option<&[(&str, &[&str])]>) -> Vec<String> {
    let base = root().join(dir);
    let read = |p: &Path| fs::read_to_string(base.join(p)).ok();
    let files = load_crate(root_file, &read);
    assert!(
        files.len() > 1,
        "{dir}/{root_file}: found no modules (was the crate moved?)"
    );
    let edges = edges(&files, dir);
    let mut out = cycles(&edges);
    if let Some(layers) = layers {
        out.extend(layer_violations(&edges, layers));
    }
    out
}

fn assert_clean(problems: Vec<String>) {
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn core_layers_point_down_and_have_no_cycle() {
    assert_clean(problems("src", "lib.rs", Some(CORE_LAYERS)));
}

#[test]
fn ffi_files_import_no_cycle() {
    assert_clean(problems("ffi/src", "lib.rs", None));
}

#[test]
fn bench_files_import_no_cycle() {
    assert_clean(problems("bench/src", "lib.rs", None));
}

#[test]
fn every_core_module_is_in_a_layer() {
    let base = root().join("src");
    let read = |p: &Path| fs::read_to_string(base.join(p)).ok();
    let files = load_crate("lib.rs", &read);
    for f in files.iter().filter(|f| f.path.len() == 1) {
        let m = f.path[0].as_str();
        assert!(
            CORE_LAYERS.iter().any(|(_, ms)| ms.contains(&m)),
            "src/{}: module `{m}` is in no layer of CORE_LAYERS (tests/layers.rs)",
            f.file.display()
        );
    }
}

#[test]
fn architecture_doc_draws_the_table() {
    let doc = fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let want = diagram(CORE_LAYERS);
    let Some(start) = doc.find(DIAGRAM_START) else {
        panic!("docs/ARCHITECTURE.md: no layer diagram; put this there:\n{DIAGRAM_START}{want}```");
    };
    let body = &doc[start + DIAGRAM_START.len()..];
    let got = &body[..body.find("```").unwrap_or(body.len())];
    assert_eq!(
        got, want,
        "docs/ARCHITECTURE.md: the layer diagram is not CORE_LAYERS'; it should read:\n{want}"
    );
}

/// A crate held in memory: file name -> text.
fn synthetic(files: &[(&str, &str)]) -> BTreeMap<PathBuf, String> {
    files
        .iter()
        .map(|(p, s)| (PathBuf::from(p), s.to_string()))
        .collect()
}

fn synthetic_problems(files: &[(&str, &str)], layers: &[(&str, &[&str])]) -> Vec<String> {
    let files = synthetic(files);
    let read = |p: &Path| files.get(p).cloned();
    let loaded = load_crate("lib.rs", &read);
    let edges = edges(&loaded, "src");
    let mut out = cycles(&edges);
    out.extend(layer_violations(&edges, layers));
    out
}

const TWO: &[(&str, &[&str])] = &[("porting surface", &["host"]), ("thread", &["thread"])];

#[test]
fn checker_catches_an_upward_import() {
    let p = synthetic_problems(
        &[
            ("lib.rs", "pub mod host;\npub mod thread;\n"),
            ("host.rs", "//! The host.\n\nuse crate::thread::Threads;\n"),
            ("thread/mod.rs", "mod word;\nuse crate::host::Host;\n"),
            ("thread/word.rs", "use super::super::host::Host;\n"),
        ],
        TWO,
    );
    assert!(
        p.iter().any(|m| m.starts_with(
            "src/host.rs:3: `host` (porting surface, layer 1) imports `thread` (thread, layer 2)"
        )),
        "{p:#?}"
    );
    assert!(
        p.iter().any(|m| m.starts_with("import cycle among the modules of crate: host -> thread (src/host.rs:3), thread -> host (src/thread/mod.rs:2)")),
        "{p:#?}"
    );
}

#[test]
fn checker_sees_groups_inline_paths_and_reexports() {
    for (host_rs, line) in [
        ("use crate::{error::E, thread::{self, Threads}};", 1),
        ("fn f() {\n    let _ = crate::thread::start();\n}", 2),
        ("use crate::Threads;", 1),
        ("pub(crate) use super::thread;", 1),
    ] {
        let p = synthetic_problems(
            &[
                (
                    "lib.rs",
                    "mod error;\npub mod host;\npub mod thread;\npub use thread::Threads;\n",
                ),
                ("error.rs", ""),
                ("host.rs", host_rs),
                ("thread.rs", ""),
            ],
            &[("base", &["error", "host"]), ("thread", &["thread"])],
        );
        let want = format!("src/host.rs:{line}: `host` (base, layer 1) imports `thread`");
        assert!(p.iter().any(|m| m.starts_with(&want)), "{host_rs}: {p:#?}");
    }
}

#[test]
fn checker_ignores_tests_comments_strings_and_own_submodules() {
    let p = synthetic_problems(
        &[
            ("lib.rs", "pub mod host;\npub mod thread;\n#[cfg(test)]\nmod testkit;\n"),
            (
                "host.rs",
                "//! See [`crate::thread`].\nmod lock;\nuse lock::L;\nconst S: &str = \"crate::thread\";\n\
                 #[cfg(test)]\nmod tests {\n    use crate::thread::X;\n}\n\
                 #[cfg(all(test, loom))]\nfn model() { crate::thread::y(); }\n",
            ),
            ("host/lock.rs", "use super::*;\nuse crate::host::Other;\n"),
            ("thread.rs", "use crate::host::lock::L;\n"),
            ("testkit.rs", "use crate::thread::T;\n"),
        ],
        TWO,
    );
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn checker_reports_unplaced_modules() {
    let p = synthetic_problems(
        &[
            ("lib.rs", "mod host;\nmod extra;\n"),
            ("host.rs", ""),
            ("extra.rs", "use crate::host::H;\n"),
        ],
        TWO,
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("src/extra.rs:1: module `extra` is in no layer")),
        "{p:#?}"
    );
}
