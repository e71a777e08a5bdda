//! A case as a `.scn` scenario (docs/SCENARIOS.md): the history, a deterministic `sync`, and
//! the model's expectations, ready to drop into `qemu-tests/cases/`.

use std::fmt::Write;

use hammer2_synchro::store::Layout;

use super::gen::Case;
use super::model::{prng_bytes, Kind, Op, World};

fn set(mask: u8, n: usize) -> String {
    if u32::from(mask) == (1u32 << n) - 1 {
        return "*".into();
    }
    (0..n)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn p(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Content as the scenario language can say it: `bytes=<n> seed=<s>` when some write of the
/// history produced exactly these bytes, a quoted string when short, else nothing.
fn content(case: &Case, data: &[u8]) -> Option<String> {
    for (_, op, _) in &case.ops {
        if let Op::Write { bytes, seed, .. } = op {
            if *bytes == data.len() && prng_bytes(*bytes, *seed) == data {
                return Some(format!("bytes={bytes} seed={seed}"));
            }
        }
    }
    if data.len() <= 64 {
        let mut s = String::from("\"");
        for &b in data {
            let _ = write!(s, "\\x{b:02x}");
        }
        s.push('"');
        return Some(s);
    }
    None
}

/// The history and `sync` of `case`, then the expectations `world` holds for every node and
/// every path in `paths` (`world` = the model after sync).
pub fn render(case: &Case, world: &World, paths: &[Vec<u8>], note: &str) -> String {
    let n = case.roles.len();
    let mut s = String::new();
    for line in note.lines() {
        let _ = writeln!(s, "# {line}");
    }
    let roles: Vec<&str> = case.roles.iter().map(|r| r.name()).collect();
    // The layout the model replayed the case in.
    let layout = match case.layout {
        Layout::Seed => "layout=seed ",
        Layout::Index => "",
    };
    let _ = writeln!(s, "cluster {layout}{}", roles.join(" "));
    for (mask, op, committed) in &case.ops {
        let st = set(*mask, n);
        let c = if *committed { "    # committed" } else { "" };
        let _ = match op {
            Op::Mkdir(x) => writeln!(s, "mkdir {st} {}{c}", p(x)),
            Op::Write { path, bytes, seed } => {
                writeln!(s, "write {st} {} bytes={bytes} seed={seed}{c}", p(path))
            }
            Op::Rm(x) => writeln!(s, "rm {st} {}{c}", p(x)),
            Op::Chmod(x, m) => writeln!(s, "chmod {st} {} {m:04o}{c}", p(x)),
            Op::Link(t, x) => writeln!(s, "link {st} {} {}{c}", p(t), p(x)),
        };
    }
    if let Some(roles) = &case.new_roles {
        for (i, r) in roles.iter().enumerate() {
            let _ = writeln!(s, "role {i} {}", r.name());
        }
    }
    if case.catchup != 0 {
        let _ = writeln!(s, "catchup {} on", set(case.catchup, n));
    }
    for (i, ms) in &case.stalls {
        let _ = writeln!(s, "stall {i} {ms}ms");
    }
    match world.focus_root() {
        Some((_, t)) => {
            let _ = writeln!(s, "expect focus {t}");
        }
        None => {
            let _ = writeln!(s, "expect quorum none");
        }
    }
    let _ = writeln!(s, "sync");
    for i in 0..n {
        for path in paths {
            match world.trees[i].get(path) {
                None => {
                    let _ = writeln!(s, "expect missing {i} {}", p(path));
                }
                Some(ino) => {
                    match &ino.kind {
                        Kind::Dir if path.as_slice() != b"/" => {
                            let _ = writeln!(s, "expect dir {i} {}", p(path));
                        }
                        Kind::File { .. } => {
                            if let Some(c) = content(case, &ino.content().unwrap_or_default()) {
                                let _ = writeln!(s, "expect file {i} {} {c}", p(path));
                            }
                        }
                        _ => {}
                    }
                    if let Some(m) = ino.mode {
                        let _ = writeln!(s, "expect mode {i} {} {m:04o}", p(path));
                    }
                    let _ = writeln!(s, "expect tid {i} {} {}", p(path), ino.tid);
                }
            }
        }
    }
    s
}
