//! The benchmark trees, described once and built both on a cluster and as real files.
//!
//! - wide: every file in one directory `w/` (the case the original scan is worst at: one changed
//!   file makes it compare every entry of the directory);
//! - deep: directories nested with fan-out 10 under `d/`, files at the bottom level.
//!
//! The cluster is in today's HAMMER2 layout: every inode, file or directory, sits in the PFS
//! root's index keyed by its inode number, and each name is a DIRENT leaf in its directory. So
//! either shape is a flat index of all its inodes plus directories of DIRENTs: wide has one
//! directory of N entries, deep many directories of 10 entries. Files hold a few bytes
//! (DIRECTDATA in the inode), so each file is two chains (its inode and its entry), as is each
//! directory.

use hammer2_synchro::media::dirhash;

/// The tree layouts measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// All files in one directory.
    Wide,
    /// Fan-out 10 directories, files at the deepest level.
    Deep,
}

impl Shape {
    /// Both shapes, in report order.
    pub const ALL: [Shape; 2] = [Shape::Wide, Shape::Deep];

    /// The report name.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Wide => "wide",
            Shape::Deep => "deep",
        }
    }

    /// The top directory holding the whole tree.
    pub fn top(self) -> &'static str {
        match self {
            Shape::Wide => "w",
            Shape::Deep => "d",
        }
    }
}

/// Fan-out of the deep shape.
const FANOUT: usize = 10;

/// One tree: directories (parents before children) and files, as paths relative to the root.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The layout.
    pub shape: Shape,
    /// Directory paths, each after its parent; the first is the top directory.
    pub dirs: Vec<String>,
    /// File paths in build order.
    pub files: Vec<String>,
}

/// Decimal digits needed so that `FANOUT^levels >= n` (at least 2: one directory level).
fn deep_levels(n: usize) -> usize {
    let mut levels = 1;
    let mut cap = FANOUT;
    while cap < n {
        cap = cap.saturating_mul(FANOUT);
        levels += 1;
    }
    levels.max(2)
}

impl Tree {
    /// A tree of `files` files in `shape`.
    pub fn new(shape: Shape, files: usize) -> Tree {
        let top = shape.top().to_string();
        match shape {
            Shape::Wide => {
                let mut names: Vec<String> = (0..files).map(|i| format!("f{i:07}")).collect();
                // Build in directory-hash order, so a store keeping entries sorted by key
                // appends instead of shifting (setup cost only; the measured syncs don't
                // depend on the order).
                names.sort_by_key(|n| dirhash(n.as_bytes()));
                let files = names.into_iter().map(|n| format!("{top}/{n}")).collect();
                Tree {
                    shape,
                    dirs: vec![top],
                    files,
                }
            }
            Shape::Deep => {
                let levels = deep_levels(files);
                let mut dirs = vec![top.clone()];
                let mut paths = Vec::with_capacity(files);
                let mut prev: Vec<u8> = Vec::new();
                for i in 0..files {
                    let digits: Vec<u8> = format!("{i:0levels$}").into_bytes();
                    let mut path = top.clone();
                    for (lvl, d) in digits[..levels - 1].iter().enumerate() {
                        path.push_str("/a");
                        path.push(*d as char);
                        if prev.get(..=lvl) != digits.get(..=lvl) {
                            dirs.push(path.clone());
                        }
                    }
                    path.push_str("/f");
                    path.push(digits[levels - 1] as char);
                    paths.push(path);
                    prev = digits;
                }
                Tree {
                    shape,
                    dirs,
                    files: paths,
                }
            }
        }
    }

    /// Chains the tree adds under the PFS root: an inode in the index and a DIRENT in its
    /// parent for every directory and file.
    pub fn chains(&self) -> usize {
        2 * (self.dirs.len() + self.files.len())
    }

    /// `k` file indices spread evenly over the tree (all distinct; `k` is capped at the file
    /// count).
    pub fn spread(&self, k: usize) -> Vec<usize> {
        let n = self.files.len();
        let k = k.min(n);
        (0..k).map(|j| j * n / k).collect()
    }
}

/// The content of file `i` at generation `gen`: a few bytes whose length changes with every
/// generation, so that rsync's size+mtime quick check always sees a change.
pub fn content(i: usize, gen: u32) -> Vec<u8> {
    let mut v = format!("{i}:{gen}:").into_bytes();
    v.resize(v.len() + 16 + (gen % 7) as usize, b'x');
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn wide_has_one_dir_and_unique_files() {
        let t = Tree::new(Shape::Wide, 1000);
        assert_eq!(t.dirs, vec!["w".to_string()]);
        assert_eq!(t.files.len(), 1000);
        assert_eq!(t.chains(), 2002);
        let set: HashSet<_> = t.files.iter().collect();
        assert_eq!(set.len(), 1000);
        assert!(t.files.iter().all(|f| f.starts_with("w/f")));
    }

    #[test]
    fn deep_parents_come_first_and_fanout_is_ten() {
        let t = Tree::new(Shape::Deep, 1000);
        assert_eq!(t.files.len(), 1000);
        // 1 top + 10 + 100 directories.
        assert_eq!(t.dirs.len(), 111);
        let mut seen = HashSet::new();
        for d in &t.dirs {
            if let Some((parent, _)) = d.rsplit_once('/') {
                assert!(seen.contains(parent), "{d} before its parent");
            }
            assert!(seen.insert(d.as_str()), "{d} twice");
        }
        for f in &t.files {
            let (parent, _) = f.rsplit_once('/').unwrap();
            assert!(seen.contains(parent), "{f} has no directory");
        }
        assert_eq!(t.files[0], "d/a0/a0/f0");
        assert_eq!(t.files[999], "d/a9/a9/f9");
        // Small trees still have one directory level.
        let small = Tree::new(Shape::Deep, 5);
        assert_eq!(small.dirs, vec!["d".to_string(), "d/a0".to_string()]);
    }

    #[test]
    fn spread_is_distinct_and_capped() {
        let t = Tree::new(Shape::Wide, 100);
        let s = t.spread(10);
        assert_eq!(s, vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
        assert_eq!(t.spread(1000).len(), 100);
        let all: HashSet<_> = t.spread(100).into_iter().collect();
        assert_eq!(all.len(), 100);
    }

    #[test]
    fn content_length_changes_every_generation() {
        for g in 0..20 {
            assert_ne!(content(5, g).len(), content(5, g + 1).len());
        }
    }
}
