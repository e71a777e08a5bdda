//! Trees compared as a user sees them: an export of one PFS against another's (shared by the
//! tests that sync, included with `#[path]` so a test binary that does not compare trees does
//! not carry it unused).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::cli;

/// Every object of a tree by path: (kind, mode, mtime, contents or target, hardlink group).
pub type Tree = BTreeMap<PathBuf, (char, u32, i64, Vec<u8>, Option<usize>)>;

/// Every object under `root`: path → (kind, mode, mtime, contents or target, hardlink group).
pub fn snapshot(root: &Path) -> Tree {
    let mut out = BTreeMap::new();
    let mut groups: BTreeMap<u64, usize> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            all.push(p);
        }
    }
    all.sort();
    for p in all {
        let m = fs::symlink_metadata(&p).unwrap();
        let (kind, body) = if m.is_dir() {
            ('d', Vec::new())
        } else if m.file_type().is_symlink() {
            (
                'l',
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else {
            ('f', fs::read(&p).unwrap())
        };
        let next = groups.len();
        let group = (kind == 'f' && m.nlink() > 1).then(|| *groups.entry(m.ino()).or_insert(next));
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        // `export` does not set a symlink's own time (it would follow the link).
        let mtime = if kind == 'l' { 0 } else { m.mtime() };
        out.insert(rel, (kind, m.mode() & 0o7777, mtime, body, group));
    }
    out
}

/// The first path where two trees differ, and how (None: equal).
pub fn first_diff(a: &Tree, b: &Tree) -> Option<String> {
    for (p, x) in a {
        match b.get(p) {
            None => return Some(format!("{} only in the first", p.display())),
            Some(y) if y != x => {
                return Some(format!(
                    "{}: kind/mode/mtime/len/group {:?} vs {:?}",
                    p.display(),
                    (x.0, x.1, x.2, x.3.len(), x.4),
                    (y.0, y.1, y.2, y.3.len(), y.4)
                ))
            }
            _ => {}
        }
    }
    b.keys()
        .find(|p| !a.contains_key(*p))
        .map(|p| format!("{} only in the second", p.display()))
}

/// Panic with the first difference of `a` and `b`, `what` naming them.
pub fn assert_same(a: &Tree, b: &Tree, what: &str) {
    if let Some(d) = first_diff(a, b) {
        panic!("{what}: {d}");
    }
}

/// Export PFS `spec` into `dir` (replacing it) and snapshot it.
pub fn export(spec: &str, dir: &Path) -> Tree {
    let _ = fs::remove_dir_all(dir);
    cli(&["export", spec, dir.to_str().unwrap()]);
    snapshot(dir)
}

/// `fsck` must find `img` clean.
pub fn fsck_clean(img: &Path) {
    let o = cli(&["fsck", img.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(report.ends_with(": clean\n"), "{report}");
}
