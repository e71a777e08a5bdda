//! The same trees as real files on tmpfs, resynchronized with `rsync -a --delete`: what a user
//! would pick instead of a cluster synchronizer.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::shape::{content, Tree};

/// Where tmpfs mounts are listed.
const MOUNTS: &str = "/proc/mounts";

/// The tmpfs mount points of this machine.
pub fn tmpfs_mounts() -> Vec<PathBuf> {
    let text = fs::read_to_string(MOUNTS).unwrap_or_default();
    parse_tmpfs_mounts(&text)
}

fn parse_tmpfs_mounts(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, mnt, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "tmpfs").then(|| PathBuf::from(mnt))
        })
        .collect()
}

/// Options of the private tmpfs: room for two copies of 10^6 empty files and their
/// directories, whatever else uses the shared one.
const PRIVATE_OPTS: &str = "size=12g,nr_inodes=4m,mode=0700";

/// A tmpfs directory to work in; a private mount is unmounted on drop.
pub struct TmpfsBase {
    /// The directory.
    pub path: PathBuf,
    /// Whether this process mounted it.
    mounted: bool,
}

impl TmpfsBase {
    /// What the report says about it.
    pub fn describe(&self) -> String {
        if self.mounted {
            format!(
                "private tmpfs mounted at {} ({PRIVATE_OPTS})",
                self.path.display()
            )
        } else {
            format!("{} (shared tmpfs)", self.path.display())
        }
    }
}

impl Drop for TmpfsBase {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.path).status();
            let _ = fs::remove_dir(&self.path);
        }
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            line.split_whitespace().nth(1).map(|u| u == "0")
        })
        .unwrap_or(false)
}

/// A tmpfs to work in: as root, a private tmpfs mounted under the temp dir (so other users of
/// `/dev/shm` cannot exhaust its inodes mid-run); otherwise `/dev/shm` when it is tmpfs.
pub fn tmpfs_base() -> io::Result<TmpfsBase> {
    if is_root() {
        let dir = std::env::temp_dir().join(format!("h2s-bench-tmpfs-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", PRIVATE_OPTS, "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|st| st.success());
        if ok {
            return Ok(TmpfsBase {
                path: dir,
                mounted: true,
            });
        }
        let _ = fs::remove_dir(&dir);
    }
    let shm = PathBuf::from("/dev/shm");
    if tmpfs_mounts().contains(&shm) {
        return Ok(TmpfsBase {
            path: shm,
            mounted: false,
        });
    }
    Err(io::Error::other(
        "no tmpfs: cannot mount one (not root) and /dev/shm is not tmpfs",
    ))
}

/// rsync's version line, or `None` when it cannot run.
pub fn rsync_version() -> Option<String> {
    let out = Command::new("rsync").arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_string())
}

/// A source and a destination tree on tmpfs; removed on drop.
pub struct FsPair {
    root: PathBuf,
    /// The tree rsync reads.
    pub src: PathBuf,
    /// The tree rsync writes.
    pub dst: PathBuf,
}

impl FsPair {
    /// Fresh empty `src` and `dst` under a new directory of `base`.
    pub fn new(base: &Path, tag: &str) -> io::Result<FsPair> {
        let root = base.join(format!("h2s-bench-{}-{tag}", std::process::id()));
        if root.exists() {
            fs::remove_dir_all(&root)?;
        }
        let src = root.join("src");
        let dst = root.join("dst");
        fs::create_dir_all(&src)?;
        fs::create_dir_all(&dst)?;
        Ok(FsPair { root, src, dst })
    }

    /// Write `tree` under `src`, every file empty.
    ///
    /// Empty, because a non-empty file costs a whole page of RAM on tmpfs, and two copies of
    /// 10^6 files would not fit; rsync's cost for an unchanged file is one stat either way.
    /// Changed files get generation >= 1 contents, never empty, so their size changes.
    pub fn build(&self, tree: &Tree) -> io::Result<()> {
        for d in &tree.dirs {
            fs::create_dir(self.src.join(d))?;
        }
        for f in &tree.files {
            fs::File::create(self.src.join(f))?;
        }
        Ok(())
    }

    /// Rewrite the files `idx` of `tree` in `src` with generation `gen` (>= 1).
    pub fn change(&self, tree: &Tree, idx: &[usize], gen: u32) -> io::Result<()> {
        if gen == 0 {
            return Err(io::Error::other("generation 0 is the empty original"));
        }
        for &i in idx {
            let f = tree
                .files
                .get(i)
                .ok_or_else(|| io::Error::other("file index out of range"))?;
            fs::write(self.src.join(f), content(i, gen))?;
        }
        Ok(())
    }

    /// Time one `rsync -a --delete src/ dst/`; an error if rsync fails.
    pub fn rsync(&self) -> io::Result<Duration> {
        let mut s = self.src.clone().into_os_string();
        s.push("/");
        let mut d = self.dst.clone().into_os_string();
        d.push("/");
        let t = Instant::now();
        let st = Command::new("rsync")
            .arg("-a")
            .arg("--delete")
            .arg(&s)
            .arg(&d)
            .stdin(Stdio::null())
            .status()?;
        let dt = t.elapsed();
        if st.success() {
            Ok(dt)
        } else {
            Err(io::Error::other(format!("rsync failed: {st}")))
        }
    }

    /// Whether file `i` of `tree` in `dst` holds generation `gen` (generation 0: empty).
    pub fn dst_holds(&self, tree: &Tree, i: usize, gen: u32) -> bool {
        let want = if gen == 0 {
            Vec::new()
        } else {
            content(i, gen)
        };
        tree.files
            .get(i)
            .and_then(|f| fs::read(self.dst.join(f)).ok())
            .is_some_and(|b| b == want)
    }
}

impl Drop for FsPair {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Shape;

    #[test]
    fn parses_tmpfs_lines_only() {
        let text = "proc /proc proc rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n/dev/vda / ext4 rw 0 0\n";
        assert_eq!(parse_tmpfs_mounts(text), vec![PathBuf::from("/dev/shm")]);
        assert!(parse_tmpfs_mounts("garbage\n\n").is_empty());
    }

    #[test]
    fn rsync_propagates_a_change() {
        let Some(_) = rsync_version() else {
            panic!("rsync is required (apt-get install rsync)");
        };
        let base = tmpfs_base().expect("tmpfs");
        assert!(tmpfs_mounts().contains(&base.path), "{}", base.describe());
        let pair = FsPair::new(&base.path, "unit").unwrap();
        let tree = Tree::new(Shape::Deep, 30);
        pair.build(&tree).unwrap();
        pair.rsync().unwrap();
        assert!(pair.dst_holds(&tree, 7, 0));
        assert!(pair.change(&tree, &[7], 0).is_err());
        pair.change(&tree, &[7], 1).unwrap();
        assert!(!pair.dst_holds(&tree, 7, 1));
        pair.rsync().unwrap();
        assert!(pair.dst_holds(&tree, 7, 1));
        let root = pair.root.clone();
        drop(pair);
        assert!(!root.exists());
        let (path, mounted) = (base.path.clone(), base.mounted);
        drop(base);
        assert_eq!(tmpfs_mounts().contains(&path), !mounted);
    }
}
