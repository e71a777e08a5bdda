//! The reference model: each node's tree as plain nested maps, replayed from the same history
//! as the cluster in either layout, and a simulation of what synchronization must do.
//!
//! Written independently of the synchronizer and deliberately naive: no media keys, no locks,
//! no deferral list, recursion is plain. In the seed's layout every inode is a map entry of its
//! directory found by name; in today's every inode is an entry of the PFS root found by number
//! and a directory maps names to numbers (the section "Today's layout" below says what each
//! change stamps there). The simulation is the same for both: it knows only keys, leaves
//! (DATA, DIRENTs, hardlink pointers) and inodes.
//! It follows the per-key rule of HAMMER2-FACTS §2-§3: a node is synchronized against a
//! quorum of the OTHER masters, key by key; a key no quorum of them holds is destroyed locally;
//! an inode whose modify_tid equals the focus's is taken as equal without looking inside.
//! A node in catch-up mode whose root has no such quorum becomes the tree of the other master
//! with the highest root TID (lowest index on ties), unless its own root TID is as high: the
//! same merge, with that master as the only voter (SCENARIOS.md, `catchup`).

use std::collections::{BTreeMap, BTreeSet};

use hammer2_synchro::role::Role;

/// A transaction id.
pub type Tid = u64;

/// Embedded data limit of an inode (DIRECTDATA).
pub const DIRECT_MAX: usize = 512;
/// Size of a DATA chain.
pub const BLOCK: usize = 65536;

/// `HAMMER2_OBJTYPE_DIRECTORY`, as `stat` reports it.
pub const OBJ_DIR: u8 = 1;
/// `HAMMER2_OBJTYPE_REGFILE`.
pub const OBJ_FILE: u8 = 2;

/// What an inode is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory (its children are named inodes).
    Dir,
    /// A regular file; `direct` holds the bytes when they live in the inode.
    File { size: u64, direct: Option<Vec<u8>> },
    /// A hardlink pointer naming the inode at `target` (a leaf for the synchronizer).
    Link { target: Vec<u8> },
}

/// How a child is keyed under its parent: file data by offset; in the seed's layout a child
/// inode by its name; in today's layout an inode of the PFS root's index by its number and a
/// DIRENT by its name (its key is the name's hash: names the generator uses never collide, so
/// the name stands for the key).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// A DATA chain at this file offset.
    Block(u64),
    /// A directory entry (seed layout: the child inode itself).
    Name(Vec<u8>),
    /// Today's layout: an inode of the PFS root's index.
    Inum(u64),
    /// Today's layout: a DIRENT.
    Entry(Vec<u8>),
}

/// A child chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Child {
    /// An inode (directory entry).
    Inode(Inode),
    /// A DATA chain.
    Block { tid: Tid, data: Vec<u8> },
    /// Today's layout: a DIRENT naming inode `inum` of type `objtype`.
    Dirent { tid: Tid, inum: u64, objtype: u8 },
}

impl Child {
    fn tid(&self) -> Tid {
        match self {
            Child::Inode(i) => i.tid,
            Child::Block { tid, .. } | Child::Dirent { tid, .. } => *tid,
        }
    }
    /// Leaves are copied whole with the focus TID; inodes other than hardlinks are recursed.
    fn is_leaf(&self) -> bool {
        match self {
            Child::Inode(i) => matches!(i.kind, Kind::Link { .. }),
            Child::Block { .. } | Child::Dirent { .. } => true,
        }
    }
}

/// The rest of an inode's meta, which only the full comparison sees: the inode number (the
/// creating transaction; a hardlink pointer carries its target's), the parent's inode number
/// at creation, and the birth, change and modification times (transactions, here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamps {
    /// Inode number.
    pub inum: Tid,
    /// Parent directory's inode number at creation.
    pub iparent: Tid,
    /// Creation.
    pub btime: Tid,
    /// Last meta or data change.
    pub ctime: Tid,
    /// Last data change.
    pub mtime: Tid,
    /// Names counted (today's layout; 1 in the seed's).
    pub nlinks: u64,
    /// The PFS root's last inode number handed out (today's layout; 0 elsewhere).
    pub pfs_inum: u64,
}

/// The model's PFS root inode number (any value no creating transaction can take).
const ROOT_INUM: Tid = u64::MAX;

impl Stamps {
    fn new(tid: Tid, parent: Tid) -> Stamps {
        Stamps {
            inum: tid,
            iparent: parent,
            btime: tid,
            ctime: tid,
            mtime: tid,
            nlinks: 1,
            pfs_inum: 0,
        }
    }
}

/// An inode: its modify_tid, its mode (None: the default a fresh inode gets), what it is, and
/// its children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    /// modify_tid.
    pub tid: Tid,
    /// Mode set by chmod, or None for the creation default.
    pub mode: Option<u32>,
    /// Meta only the full comparison sees.
    pub stamps: Stamps,
    /// Type and type-specific meta.
    pub kind: Kind,
    /// Directory entries or DATA chains.
    pub children: BTreeMap<Key, Child>,
}

impl Inode {
    /// An empty PFS root.
    pub fn root() -> Inode {
        let stamps = Stamps {
            inum: ROOT_INUM,
            iparent: 0,
            btime: 0,
            ctime: 0,
            mtime: 0,
            nlinks: 1,
            pfs_inum: 0,
        };
        Inode {
            tid: 0,
            mode: None,
            stamps,
            kind: Kind::Dir,
            children: BTreeMap::new(),
        }
    }

    /// The inode at `path` (absolute, `/` is the root, which `self` must be): in the seed's
    /// layout by the names of child inodes, in today's by the DIRENT naming an inode of the
    /// root's index.
    pub fn get(&self, path: &[u8]) -> Option<&Inode> {
        let mut cur = self;
        for c in components(path) {
            cur = self.child_named(cur, c)?;
        }
        Some(cur)
    }

    /// The inode `dir` (under root `self`) names `name`, in either layout.
    fn child_named<'a>(&'a self, dir: &'a Inode, name: &[u8]) -> Option<&'a Inode> {
        if dir.kind != Kind::Dir {
            return None;
        }
        match dir.children.get(&Key::Name(name.to_vec())) {
            Some(Child::Inode(i)) => Some(i),
            _ => match dir.children.get(&Key::Entry(name.to_vec())) {
                Some(Child::Dirent { inum, .. }) => match self.children.get(&Key::Inum(*inum)) {
                    Some(Child::Inode(i)) => Some(i),
                    _ => None,
                },
                _ => None,
            },
        }
    }

    /// The bytes `read_file` must return for a regular file.
    pub fn content(&self) -> Option<Vec<u8>> {
        let Kind::File { size, direct } = &self.kind else {
            return None;
        };
        if let Some(d) = direct {
            return Some(d.clone());
        }
        let mut out = vec![0u8; *size as usize];
        for (k, c) in &self.children {
            if let (Key::Block(off), Child::Block { data, .. }) = (k, c) {
                let off = *off as usize;
                if off < out.len() {
                    let n = data.len().min(out.len() - off);
                    out[off..off + n].copy_from_slice(&data[..n]);
                }
            }
        }
        Some(out)
    }

    /// Every path under (and including) this root, with the inode (a hardlinked inode under
    /// each of its names).
    pub fn walk(&self) -> Vec<(Vec<u8>, &Inode)> {
        let mut out = Vec::new();
        let mut stack = vec![(b"/".to_vec(), self)];
        while let Some((p, i)) = stack.pop() {
            for k in i.children.keys() {
                let (Key::Name(n) | Key::Entry(n)) = k else {
                    continue;
                };
                // Names never nest deeper than the generator's paths: a bound, not a guess.
                if let Some(ci) = self.child_named(i, n).filter(|_| p.len() < 64) {
                    stack.push((join(&p, n), ci));
                }
            }
            out.push((p, i));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The components of an absolute path.
pub fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// `parent + "/" + name`.
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Split an absolute non-root path into (parent, name).
pub fn split(path: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let i = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
    let parent = if i == 0 {
        b"/".to_vec()
    } else {
        path[..i].to_vec()
    };
    (parent, path[i + 1..].to_vec())
}

/// One frontend change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `mkdir`.
    Mkdir(Vec<u8>),
    /// `write path bytes=n seed=s`.
    Write {
        path: Vec<u8>,
        bytes: usize,
        seed: u64,
    },
    /// `rm`.
    Rm(Vec<u8>),
    /// `chmod`.
    Chmod(Vec<u8>, u32),
    /// `link target path`.
    Link(Vec<u8>, Vec<u8>),
}

impl Op {
    /// The path the op creates or changes.
    pub fn path(&self) -> &[u8] {
        match self {
            Op::Mkdir(p) | Op::Rm(p) | Op::Chmod(p, _) => p,
            Op::Write { path, .. } => path,
            Op::Link(_, p) => p,
        }
    }
}

/// The deterministic content of `bytes=<n> seed=<s>` (SCENARIOS.md; xorshift64*), written
/// here from its specification so the model does not borrow the interpreter's code.
pub fn prng_bytes(n: usize, seed: u64) -> Vec<u8> {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut x = seed ^ GOLDEN;
    if x == 0 {
        x = GOLDEN;
    }
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let w = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        let take = (n - v.len()).min(8);
        v.extend_from_slice(&w[..take]);
    }
    v
}

/// Why a change cannot apply on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Parent missing or not a directory, or the path is missing.
    Missing,
    /// The path exists as something that does not fit the change.
    Conflict,
}

/// Whether `op` can apply on `tree` (the model's own validity rule, used by the generator).
pub fn check(tree: &Inode, op: &Op) -> Result<(), Refused> {
    let parent_dir = |p: &[u8]| -> Result<(), Refused> {
        let (par, _) = split(p);
        match tree.get(&par) {
            Some(i) if i.kind == Kind::Dir => Ok(()),
            _ => Err(Refused::Missing),
        }
    };
    match op {
        Op::Mkdir(p) => {
            parent_dir(p)?;
            if tree.get(p).is_some() {
                return Err(Refused::Conflict);
            }
        }
        Op::Write { path, .. } => {
            parent_dir(path)?;
            match tree.get(path).map(|i| &i.kind) {
                None | Some(Kind::File { .. }) => {}
                Some(_) => return Err(Refused::Conflict),
            }
        }
        Op::Rm(p) => {
            if components(p).next().is_none() || tree.get(p).is_none() {
                return Err(Refused::Missing);
            }
        }
        Op::Chmod(p, _) => match tree.get(p).map(|i| &i.kind) {
            None => return Err(Refused::Missing),
            Some(Kind::Link { .. }) => return Err(Refused::Conflict),
            Some(_) if components(p).next().is_none() => return Err(Refused::Conflict),
            Some(_) => {}
        },
        Op::Link(target, p) => {
            parent_dir(p)?;
            match tree.get(target).map(|i| &i.kind) {
                Some(Kind::File { .. }) => {}
                _ => return Err(Refused::Missing),
            }
            if tree.get(p).is_some() {
                return Err(Refused::Conflict);
            }
        }
    }
    Ok(())
}

/// The inode at `path`, mutably, stamping every inode on the way (root included) with `tid`:
/// a frontend change propagates modify_tid up to the PFS root.
fn get_stamped<'a>(tree: &'a mut Inode, path: &[u8], tid: Tid) -> &'a mut Inode {
    let mut cur = tree;
    cur.tid = tid;
    for c in components(path) {
        cur = match cur.children.get_mut(&Key::Name(c.to_vec())) {
            Some(Child::Inode(i)) => i,
            _ => panic!("model: path {} missing", String::from_utf8_lossy(path)),
        };
        cur.tid = tid;
    }
    cur
}

/// A fresh file body for `data`, stamped `tid`.
fn file_body(data: &[u8], tid: Tid) -> (Kind, BTreeMap<Key, Child>) {
    let mut children = BTreeMap::new();
    if data.len() <= DIRECT_MAX {
        return (
            Kind::File {
                size: data.len() as u64,
                direct: Some(data.to_vec()),
            },
            children,
        );
    }
    for (i, chunk) in data.chunks(BLOCK).enumerate() {
        children.insert(
            Key::Block((i * BLOCK) as u64),
            Child::Block {
                tid,
                data: chunk.to_vec(),
            },
        );
    }
    (
        Kind::File {
            size: data.len() as u64,
            direct: None,
        },
        children,
    )
}

/// Apply `op` as transaction `tid`. The caller checked it with [`check`].
pub fn apply(tree: &mut Inode, op: &Op, tid: Tid) {
    assert!(
        check(tree, op).is_ok(),
        "model: applying an invalid op {op:?}"
    );
    match op {
        Op::Mkdir(p) => {
            let (par, name) = split(p);
            let parent = get_stamped(tree, &par, tid);
            let stamps = Stamps::new(tid, parent.stamps.inum);
            let d = Inode {
                tid,
                mode: None,
                stamps,
                kind: Kind::Dir,
                children: BTreeMap::new(),
            };
            parent.children.insert(Key::Name(name), Child::Inode(d));
        }
        Op::Write { path, bytes, seed } => {
            let (kind, children) = file_body(&prng_bytes(*bytes, *seed), tid);
            let (par, name) = split(path);
            let parent = get_stamped(tree, &par, tid);
            let (mode, stamps) = match parent.children.get(&Key::Name(name.clone())) {
                Some(Child::Inode(old)) => (
                    old.mode,
                    Stamps {
                        ctime: tid,
                        mtime: tid,
                        ..old.stamps
                    },
                ),
                _ => (None, Stamps::new(tid, parent.stamps.inum)),
            };
            let f = Inode {
                tid,
                mode,
                stamps,
                kind,
                children,
            };
            parent.children.insert(Key::Name(name), Child::Inode(f));
        }
        Op::Rm(p) => {
            let (par, name) = split(p);
            get_stamped(tree, &par, tid)
                .children
                .remove(&Key::Name(name));
        }
        Op::Chmod(p, mode) => {
            let i = get_stamped(tree, p, tid);
            i.mode = Some(*mode);
            i.stamps.ctime = tid;
        }
        Op::Link(target, p) => {
            let target_inum = tree.get(target).map(|t| t.stamps.inum).unwrap_or(0);
            let (par, name) = split(p);
            let parent = get_stamped(tree, &par, tid);
            let l = Inode {
                tid,
                mode: None,
                stamps: Stamps {
                    inum: target_inum,
                    ..Stamps::new(tid, parent.stamps.inum)
                },
                kind: Kind::Link {
                    target: target.clone(),
                },
                children: BTreeMap::new(),
            };
            parent.children.insert(Key::Name(name), Child::Inode(l));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Today's layout (`Layout::Index`): the PFS root holds every inode under `Key::Inum` and its own
// entries under `Key::Entry`; a directory holds entries only, a file its DATA chains. What a
// change stamps follows HAMMER2-FACTS §4a and §6: the inode it changes, for a new or removed
// name also the entry and its directory, and the PFS root; nothing else on the way.

/// The PFS root's inode number in today's layout (the `iparent` of what it names).
pub const INDEX_ROOT_INUM: u64 = 1;
/// The first inode number a PFS hands out.
pub const INODE_START: u64 = 1024;
/// Permission bits of a fresh directory and file in today's layout (`mkdir`, `write`).
pub const INDEX_DIR_MODE: u32 = 0o755;
/// See [`INDEX_DIR_MODE`].
pub const INDEX_FILE_MODE: u32 = 0o644;

/// The inode number `path` names on `tree` (today's layout): Some(None) for the root,
/// Some(Some(n)) for an inode of the index, None when the path does not resolve.
fn index_resolve(tree: &Inode, path: &[u8]) -> Option<Option<u64>> {
    let mut at: Option<u64> = None;
    for c in components(path) {
        let dir = match at {
            None => tree,
            Some(n) => index_inode(tree, n)?,
        };
        if dir.kind != Kind::Dir {
            return None;
        }
        let Some(Child::Dirent { inum, .. }) = dir.children.get(&Key::Entry(c.to_vec())) else {
            return None;
        };
        index_inode(tree, *inum)?;
        at = Some(*inum);
    }
    Some(at)
}

/// Whether an entry of `tree` (the PFS root's or a directory's of the index) names `inum`.
fn index_is_named(tree: &Inode, inum: u64) -> bool {
    let names = |d: &Inode| {
        d.children
            .values()
            .any(|c| matches!(c, Child::Dirent { inum: n, .. } if *n == inum))
    };
    names(tree)
        || tree.children.values().any(|c| match c {
            Child::Inode(i) => i.kind == Kind::Dir && names(i),
            _ => false,
        })
}

/// Inode `inum` of the index of `tree`.
fn index_inode(tree: &Inode, inum: u64) -> Option<&Inode> {
    match tree.children.get(&Key::Inum(inum)) {
        Some(Child::Inode(i)) => Some(i),
        _ => None,
    }
}

/// Inode `inum` of the index (the root itself for None), mutably; the change was checked.
fn index_inode_mut(tree: &mut Inode, inum: Option<u64>) -> &mut Inode {
    let Some(n) = inum else { return tree };
    match tree.children.get_mut(&Key::Inum(n)) {
        Some(Child::Inode(i)) => i,
        _ => panic!("model: inode {n} missing from the index"),
    }
}

/// The inode number the cluster's frontend gives `op` when it may create an inode (mkdir,
/// write): the number the path has on the first node (in index order) that holds it as the same
/// kind of file, provided no node whose index holds that number names it by other names only;
/// else one past the highest number any node handed out (`Cluster::apply`).
pub fn frontend_inum(trees: &[Inode], op: &Op) -> Option<u64> {
    let (path, dir) = match op {
        Op::Mkdir(p) => (p, true),
        Op::Write { path, .. } => (path, false),
        _ => return None,
    };
    let named_wherever_held = |n: u64| {
        trees.iter().all(|t| {
            index_inode(t, n).is_none()
                || index_resolve(t, path) == Some(Some(n))
                || !index_is_named(t, n)
        })
    };
    for t in trees {
        if let Some(Some(n)) = index_resolve(t, path) {
            if index_inode(t, n).is_some_and(|i| (i.kind == Kind::Dir) == dir)
                && named_wherever_held(n)
            {
                return Some(n);
            }
        }
    }
    trees
        .iter()
        .map(|t| (t.stamps.pfs_inum + 1).max(INODE_START))
        .max()
}

/// Add the entry `name` -> `inum` to directory `dir` (None: the root), stamping both `tid`.
fn add_entry(tree: &mut Inode, dir: Option<u64>, name: &[u8], inum: u64, objtype: u8, tid: Tid) {
    let d = index_inode_mut(tree, dir);
    d.children.insert(
        Key::Entry(name.to_vec()),
        Child::Dirent { tid, inum, objtype },
    );
    d.tid = tid;
}

/// Create inode `inum` named `name` in `dir`. A history's changes all come before any sync, so
/// every inode of a node's index is named there, and the frontend hands a create a number no
/// node holds under other names ([`frontend_inum`]): the index never holds `inum` here (the
/// store's create names such an inode only when a synchronizer brought it ahead of its name).
fn create(tree: &mut Inode, dir: Option<u64>, name: &[u8], is_dir: bool, inum: u64, tid: Tid) {
    assert!(
        index_inode(tree, inum).is_none(),
        "model: a create given inode {inum}, which the index holds"
    );
    let objtype = if is_dir { OBJ_DIR } else { OBJ_FILE };
    let iparent = match dir {
        None => INDEX_ROOT_INUM,
        Some(n) => n,
    };
    let kind = if is_dir {
        Kind::Dir
    } else {
        Kind::File {
            size: 0,
            direct: None,
        }
    };
    let stamps = Stamps {
        btime: 0,
        ..Stamps::new(tid, iparent)
    };
    let stamps = Stamps { inum, ..stamps };
    let ino = Inode {
        tid,
        mode: None,
        stamps,
        kind,
        children: BTreeMap::new(),
    };
    tree.children.insert(Key::Inum(inum), Child::Inode(ino));
    tree.stamps.pfs_inum = tree.stamps.pfs_inum.max(inum);
    add_entry(tree, dir, name, inum, objtype, tid);
}

/// Apply `op` as transaction `tid` in today's layout, `inum` as [`frontend_inum`] gives it.
/// The caller checked the change with [`check`] (on the seed-layout replay of the same history:
/// a change valid there is valid here).
pub fn apply_index(tree: &mut Inode, op: &Op, tid: Tid, inum: Option<u64>) {
    let parent_of = |tree: &Inode, p: &[u8]| -> (Option<u64>, Vec<u8>) {
        let (par, name) = split(p);
        let dir = index_resolve(tree, &par).expect("model: parent directory missing");
        (dir, name)
    };
    let entry = |tree: &Inode, dir: Option<u64>, name: &[u8]| -> Option<u64> {
        let d = match dir {
            None => tree,
            Some(n) => index_inode(tree, n)?,
        };
        match d.children.get(&Key::Entry(name.to_vec())) {
            Some(Child::Dirent { inum, .. }) => Some(*inum),
            _ => None,
        }
    };
    match op {
        Op::Mkdir(p) => {
            let (dir, name) = parent_of(tree, p);
            create(
                tree,
                dir,
                &name,
                true,
                inum.expect("mkdir has a number"),
                tid,
            );
        }
        Op::Write { path, bytes, seed } => {
            let (dir, name) = parent_of(tree, path);
            let n = match entry(tree, dir, &name) {
                Some(n) => n,
                None => {
                    let n = inum.expect("write has a number");
                    create(tree, dir, &name, false, n, tid);
                    n
                }
            };
            let (kind, children) = file_body(&prng_bytes(*bytes, *seed), tid);
            let f = index_inode_mut(tree, Some(n));
            f.kind = kind;
            f.children = children;
            f.stamps.ctime = tid;
            f.stamps.mtime = tid;
            f.tid = tid;
        }
        Op::Rm(p) => {
            let (dir, name) = parent_of(tree, p);
            let first = entry(tree, dir, &name).expect("model: rm of a missing name");
            let d = index_inode_mut(tree, dir);
            d.children.remove(&Key::Entry(name));
            d.tid = tid;
            let mut unlinked = vec![first];
            while let Some(n) = unlinked.pop() {
                let Some(Child::Inode(i)) = tree.children.get_mut(&Key::Inum(n)) else {
                    continue;
                };
                if i.stamps.nlinks > 1 {
                    i.stamps.nlinks -= 1;
                    i.stamps.ctime = tid;
                    i.tid = tid;
                    continue;
                }
                for c in i.children.values() {
                    if let Child::Dirent { inum, .. } = c {
                        unlinked.push(*inum);
                    }
                }
                tree.children.remove(&Key::Inum(n));
            }
        }
        Op::Chmod(p, mode) => {
            let n = index_resolve(tree, p).expect("model: chmod of a missing path");
            let i = index_inode_mut(tree, n);
            i.mode = Some(mode & 0o7777);
            i.stamps.ctime = tid;
            i.tid = tid;
        }
        Op::Link(target, p) => {
            let t = index_resolve(tree, target)
                .flatten()
                .expect("model: link to a missing target");
            let (dir, name) = parent_of(tree, p);
            add_entry(tree, dir, &name, t, OBJ_FILE, tid);
            let i = index_inode_mut(tree, Some(t));
            i.stamps.nlinks += 1;
            i.stamps.ctime = tid;
            i.tid = tid;
        }
    }
    tree.tid = tid;
}

/// A 64-bit FNV-1a digest, to print data compactly.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One line per chain of a tree in today's layout, in the words `real::chain_lines` reads the
/// store with: where it is (`/` the PFS root, `#n` index inode n, `/name` or `#n/name` an entry,
/// `#n@off` a DATA chain), its type, modify_tid and everything else it holds.
pub fn chain_lines(tree: &Inode) -> Vec<String> {
    let mut out = vec![
        root_line(tree.tid, tree.mode.unwrap_or(INDEX_DIR_MODE)),
        pfs_inum_line(tree.stamps.pfs_inum),
    ];
    lines_below(tree, "", &mut out);
    for (k, c) in &tree.children {
        if let (Key::Inum(n), Child::Inode(i)) = (k, c) {
            let (objtype, mode, size, direct) = match &i.kind {
                Kind::Dir => (OBJ_DIR, INDEX_DIR_MODE, 0, None),
                Kind::File { size, direct } => {
                    (OBJ_FILE, INDEX_FILE_MODE, *size, direct.as_deref())
                }
                Kind::Link { .. } => panic!("model: a hardlink pointer in today's layout"),
            };
            let s = &i.stamps;
            out.push(inode_line(
                *n,
                i.tid,
                objtype,
                i.mode.unwrap_or(mode),
                [s.inum, s.nlinks, s.iparent, s.ctime, s.mtime, size],
                direct,
            ));
            lines_below(i, &format!("#{n}"), &mut out);
        }
    }
    out.sort();
    out
}

/// The entry and DATA lines of `ino`'s children, `at` naming `ino`.
fn lines_below(ino: &Inode, at: &str, out: &mut Vec<String>) {
    for (k, c) in &ino.children {
        match (k, c) {
            (Key::Entry(name), Child::Dirent { tid, inum, objtype }) => {
                out.push(dirent_line(at, name, *tid, *inum, *objtype));
            }
            (Key::Block(off), Child::Block { tid, data }) => {
                // Stored as the smallest power of two of at least 1 KiB that holds it, padded
                // with zeros (HAMMER2-FACTS §4a, "What the writer follows").
                let mut stored = data.clone();
                stored.resize(data.len().next_power_of_two().max(1024), 0);
                out.push(data_line(at, *off, *tid, &stored));
            }
            _ => {}
        }
    }
}

/// The PFS root's line of [`chain_lines`].
pub fn root_line(tid: Tid, mode: u32) -> String {
    format!("/ root tid {tid} mode {mode:o}")
}

/// The PFS root's `pfs_inum`, a line of its own: [`chain_lines`] differences on this line only
/// are not differences `compare` sees (the PFS root's identity is not synchronized).
pub fn pfs_inum_line(pfs_inum: u64) -> String {
    format!("/ pfs_inum {pfs_inum}")
}

/// An index inode's line of [`chain_lines`]; `m` is inum, nlinks, iparent, ctime, mtime, size.
pub fn inode_line(
    n: u64,
    tid: Tid,
    objtype: u8,
    mode: u32,
    m: [u64; 6],
    direct: Option<&[u8]>,
) -> String {
    let d = match direct {
        Some(d) => format!("direct {}:{:016x}", d.len(), fnv(d)),
        None => "no direct data".into(),
    };
    let [inum, nlinks, iparent, ctime, mtime, size] = m;
    format!(
        "#{n} inode tid {tid} type {objtype} mode {mode:o} inum {inum} nlinks {nlinks} \
         iparent {iparent} ctime {ctime} mtime {mtime} size {size} {d}"
    )
}

/// A DIRENT's line of [`chain_lines`].
pub fn dirent_line(at: &str, name: &[u8], tid: Tid, inum: u64, objtype: u8) -> String {
    let name = String::from_utf8_lossy(name);
    format!("{at}/{name} dirent tid {tid} inum {inum} type {objtype}")
}

/// A DATA chain's line of [`chain_lines`], with its stored bytes.
pub fn data_line(at: &str, off: u64, tid: Tid, data: &[u8]) -> String {
    format!(
        "{at}@{off} data tid {tid} {}:{:016x}",
        data.len(),
        fnv(data)
    )
}

/// Whether equal TIDs mean equal contents between `a` and `b` at every chain both hold (in
/// either layout): where they do not, synchronization rightly takes an equal TID as equal without
/// looking inside, and which of several such versions a focus picks decides the result.
pub fn tids_honest(a: &Inode, b: &Inode) -> bool {
    honest_below(a, &same_root_identity(a, b))
}

/// `b` with `a`'s PFS root identity (the meta synchronization leaves alone): equal to `a` when
/// what `compare` sees is equal.
pub fn same_root_identity(a: &Inode, b: &Inode) -> Inode {
    Inode {
        stamps: a.stamps,
        ..b.clone()
    }
}

fn honest_below(a: &Inode, b: &Inode) -> bool {
    if a.tid == b.tid {
        return a == b;
    }
    a.children
        .iter()
        .all(|(k, ca)| match (ca, b.children.get(k)) {
            (Child::Inode(x), Some(Child::Inode(y))) => honest_below(x, y),
            (x, Some(y)) => x.tid() != y.tid() || x == y,
            (_, None) => true,
        })
}

/// The quorum rule, as plainly as it can be said: only masters vote; `nq` = masters/2 + 1;
/// the highest TID that at least `nq` voting masters hold wins, else the next lower one, ...
/// The focus is the lowest-indexed master holding the winning TID.
/// `votes` are (node index, role, tid) of the nodes that hold the key.
pub fn quorum(nmasters: usize, votes: &[(usize, Role, Tid)]) -> Option<(usize, Tid)> {
    let nq = nmasters / 2 + 1;
    let tids: BTreeSet<Tid> = votes
        .iter()
        .filter(|v| v.1 == Role::Master)
        .map(|v| v.2)
        .collect();
    for &t in tids.iter().rev() {
        let agree: Vec<usize> = votes
            .iter()
            .filter(|v| v.1 == Role::Master && v.2 == t)
            .map(|v| v.0)
            .collect();
        if agree.len() >= nq {
            return agree.iter().min().map(|&n| (n, t));
        }
    }
    None
}

/// A rule deciding the focus for one key from the votes of the other nodes. The real one is
/// [`quorum`]; negative controls pass deliberately wrong ones.
pub type Rule = fn(nmasters: usize, votes: &[(usize, Role, Tid)]) -> Option<(usize, Tid)>;

/// A whole cluster in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    /// Roles by node index.
    pub roles: Vec<Role>,
    /// The master count recorded in the PFS roots when the cluster was made.
    pub recorded: usize,
    /// Trees by node index.
    pub trees: Vec<Inode>,
    /// Catch-up mode by node index.
    pub catchup: Vec<bool>,
}

impl World {
    /// `roles.len()` empty nodes.
    pub fn new(roles: &[Role]) -> World {
        World {
            roles: roles.to_vec(),
            recorded: roles.iter().filter(|r| **r == Role::Master).count(),
            trees: vec![Inode::root(); roles.len()],
            catchup: vec![false; roles.len()],
        }
    }

    /// The master count the quorum uses: the larger of the recorded and the visible one.
    pub fn nmasters(&self) -> usize {
        let visible = self.roles.iter().filter(|r| **r == Role::Master).count();
        visible.max(self.recorded)
    }

    /// The quorum over every node's PFS root (what `focus_root` must say).
    pub fn focus_root(&self) -> Option<(usize, Tid)> {
        let votes: Vec<_> = self
            .trees
            .iter()
            .enumerate()
            .map(|(i, t)| (i, self.roles[i], t.tid))
            .collect();
        quorum(self.nmasters(), &votes)
    }

    /// One synchronization pass of node `idx` under `rule`.
    pub fn sync_node(&mut self, idx: usize, rule: Rule) {
        let nm = self.nmasters();
        let others: Vec<(usize, Role, &Inode)> = (0..self.trees.len())
            .filter(|&j| j != idx)
            .map(|j| (j, self.roles[j], &self.trees[j]))
            .collect();
        let votes: Vec<_> = others.iter().map(|&(j, r, t)| (j, r, t.tid)).collect();
        let Some((fnode, ftid)) = rule(nm, &votes) else {
            self.catch_up(idx, rule);
            return;
        };
        if self.trees[idx].tid == ftid {
            return;
        }
        let focus = self.trees[fnode].clone();
        let versions: Vec<(usize, Role, Inode)> =
            others.iter().map(|&(j, r, t)| (j, r, t.clone())).collect();
        let vrefs: Vec<(usize, Role, &Inode)> =
            versions.iter().map(|(j, r, t)| (*j, *r, t)).collect();
        sync_inode(&mut self.trees[idx], &focus, ftid, &vrefs, nm, rule, true);
    }

    /// With no quorum at the root: a node in catch-up mode takes the whole tree of the other
    /// master holding the highest root TID (lowest index on ties), unless its own is as high.
    fn catch_up(&mut self, idx: usize, rule: Rule) {
        if !self.catchup[idx] {
            return;
        }
        let Some(m) = self.highest_master(idx) else {
            return;
        };
        let (mtid, focus) = (self.trees[m].tid, self.trees[m].clone());
        if self.trees[idx].tid >= mtid {
            return;
        }
        let only = [(m, Role::Master, &focus)];
        sync_inode(&mut self.trees[idx], &focus, mtid, &only, 1, rule, true);
    }

    /// The master other than `idx` holding the highest root TID, the lowest index on ties.
    pub fn highest_master(&self, idx: usize) -> Option<usize> {
        (0..self.trees.len())
            .filter(|&j| j != idx && self.roles[j] == Role::Master)
            .max_by_key(|&j| (self.trees[j].tid, std::cmp::Reverse(j)))
    }

    /// Rounds of `sync_node` over every node in index order until a round changes nothing
    /// (at most `max_rounds`); returns the state after each round and whether the last round
    /// changed nothing.
    pub fn sync_all(&mut self, rule: Rule, max_rounds: usize) -> (Vec<World>, bool) {
        let mut rounds = Vec::new();
        for _ in 0..max_rounds {
            let before = self.clone();
            for idx in 0..self.trees.len() {
                self.sync_node(idx, rule);
            }
            rounds.push(self.clone());
            if *self == before {
                return (rounds, true);
            }
        }
        (rounds, false)
    }
}

/// Synchronize `local` (an inode that is not a leaf) against the other nodes' `versions` of the
/// same inode, then stamp it with `sync_tid` and the focus's meta.
fn sync_inode(
    local: &mut Inode,
    focus: &Inode,
    sync_tid: Tid,
    versions: &[(usize, Role, &Inode)],
    nm: usize,
    rule: Rule,
    is_root: bool,
) {
    let mut keys: BTreeSet<Key> = local.children.keys().cloned().collect();
    for (_, _, v) in versions {
        if !matches!(v.kind, Kind::Link { .. }) {
            keys.extend(v.children.keys().cloned());
        }
    }
    // A focus whose data sits in the inode (DIRECTDATA) has no block table: there is nothing
    // under it to vote on, whatever other versions hold, and the copy keeps nothing below it
    // (HAMMER2-FACTS §6, bug 13's fix).
    if matches!(
        focus.kind,
        Kind::File {
            direct: Some(_),
            ..
        }
    ) {
        keys.clear();
        local.children.clear();
    }
    for k in keys {
        let holders: Vec<(usize, Role, &Child)> = versions
            .iter()
            .filter(|(_, _, v)| !matches!(v.kind, Kind::Link { .. }))
            .filter_map(|(j, r, v)| v.children.get(&k).map(|c| (*j, *r, c)))
            .collect();
        let votes: Vec<_> = holders.iter().map(|(j, r, c)| (*j, *r, c.tid())).collect();
        let Some((fnode, ftid)) = rule(nm, &votes) else {
            local.children.remove(&k);
            continue;
        };
        let fchild = holders
            .iter()
            .find(|h| h.0 == fnode)
            .map(|h| h.2)
            .expect("focus holds the key");
        let same = local.children.get(&k).map(|c| c.tid()) == Some(ftid);
        if same {
            continue;
        }
        if fchild.is_leaf() {
            local.children.insert(k, fchild.clone());
            continue;
        }
        let Child::Inode(fi) = fchild else {
            unreachable!()
        };
        // Insert or replace the inode with compatible content and TID 0, then recurse.
        let kept = match local.children.remove(&k) {
            Some(Child::Inode(old)) if !matches!(old.kind, Kind::Link { .. }) => old.children,
            _ => BTreeMap::new(),
        };
        let mut child = Inode {
            tid: 0,
            mode: fi.mode,
            stamps: fi.stamps,
            kind: fi.kind.clone(),
            children: kept,
        };
        let sub: Vec<(usize, Role, &Inode)> = holders
            .iter()
            .filter_map(|(j, r, c)| match c {
                Child::Inode(i) => Some((*j, *r, i)),
                Child::Block { .. } | Child::Dirent { .. } => None,
            })
            .collect();
        // Other nodes that do not hold the key still answer the scan of the child (with
        // nothing), so `sub` lists only holders: the same votes.
        sync_inode(&mut child, fi, ftid, &sub, nm, rule, false);
        local.children.insert(k, Child::Inode(child));
    }
    local.tid = sync_tid;
    local.mode = focus.mode;
    if !is_root {
        local.kind = focus.kind.clone();
        local.stamps = focus.stamps;
    }
}
