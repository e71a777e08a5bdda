//! Driving a real cluster from a case, and reading it back through the public API only
//! (`stat`, `read_file`, `compare`, `focus_root`), to set it against the model.

use std::fmt::Write;
use std::pin::Pin;
use std::sync::OnceLock;

use hammer2_synchro::cluster::{Cluster, FrontendOp, InodeStat};
use hammer2_synchro::media::{self, DirentHead};
use hammer2_synchro::quorum::QuorumResult;
use hammer2_synchro::role::{NodeSet, Role};
use hammer2_synchro::store::{Body, Layout};
use hammer2_synchro::Error;

use super::gen::Case;
use super::model::{self, prng_bytes, Inode, Kind, Op, World};

/// The userland host.
pub fn host() -> &'static dyn hammer2_synchro::host::Host {
    hammer2_synchro::userland::host()
}

/// What a path looks like on a node through the public API.
#[derive(Clone, PartialEq, Eq)]
pub enum Seen {
    /// `stat` failed (the path does not exist).
    Missing,
    /// The inode: type, permission bits, size (files only, else 0), modify_tid, and the bytes
    /// of a regular file.
    Inode {
        objtype: u8,
        perm: u32,
        size: u64,
        tid: u64,
        data: Option<Vec<u8>>,
    },
}

/// The permission bits of a fresh directory, file and hardlink pointer, and the objtype `stat`
/// reports for a hardlink pointer, learned once from a one-node cluster in the seed's layout
/// (the model's).
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    /// A fresh directory's permission bits.
    pub dir: u32,
    /// A fresh file's permission bits.
    pub file: u32,
    link: u32,
    link_objtype: u8,
}

/// The defaults (see [`Defaults`]).
pub fn defaults() -> Defaults {
    static D: OnceLock<Defaults> = OnceLock::new();
    *D.get_or_init(|| {
        let c = Cluster::with_layout(host(), &[Role::Master], Layout::Seed).expect("probe cluster");
        let one = NodeSet(1);
        c.apply(one, FrontendOp::Mkdir(b"/d")).expect("probe mkdir");
        c.apply(one, FrontendOp::Write(b"/f", b"x"))
            .expect("probe write");
        c.apply(one, FrontendOp::Link(b"/f", b"/l"))
            .expect("probe link");
        let st = |p: &[u8]| c.stat(0, p).expect("probe stat");
        Defaults {
            dir: st(b"/d").mode & 0o7777,
            file: st(b"/f").mode & 0o7777,
            link: st(b"/l").mode & 0o7777,
            link_objtype: st(b"/l").objtype,
        }
    })
}

/// Apply `op` to the nodes of `mask`; the TID the cluster assigned.
pub fn apply(c: &Cluster, mask: u8, op: &Op) -> Result<u64, String> {
    let data;
    let fop = match op {
        Op::Mkdir(p) => FrontendOp::Mkdir(p),
        Op::Write { path, bytes, seed } => {
            data = prng_bytes(*bytes, *seed);
            FrontendOp::Write(path, &data)
        }
        Op::Rm(p) => FrontendOp::Rm(p),
        Op::Chmod(p, m) => FrontendOp::Chmod(p, *m),
        Op::Link(t, p) => FrontendOp::Link(t, p),
    };
    c.apply(NodeSet(mask), fop)
        .map_err(|(n, e)| format!("apply {op:?} failed on node {n}: {e}"))
}

/// A cluster in the default layout holding `case`'s history. The model's TIDs are 1, 2, ...:
/// the cluster must agree.
pub fn build(case: &Case) -> Result<Pin<Box<Cluster>>, String> {
    build_on(host(), case)
}

/// [`build`] on a given host.
pub fn build_on(
    host: &'static dyn hammer2_synchro::host::Host,
    case: &Case,
) -> Result<Pin<Box<Cluster>>, String> {
    build_in(host, case, Layout::default())
}

/// [`build`] in the seed's layout, the one the model's TIDs and hardlink pointers describe.
pub fn build_seed(case: &Case) -> Result<Pin<Box<Cluster>>, String> {
    build_in(host(), case, Layout::Seed)
}

/// [`build`] in the case's own layout ([`Case::layout`]), the one its model replay describes.
pub fn build_model(case: &Case) -> Result<Pin<Box<Cluster>>, String> {
    build_in(host(), case, case.layout)
}

/// [`build`] on a given host in `layout`.
pub fn build_in(
    host: &'static dyn hammer2_synchro::host::Host,
    case: &Case,
    layout: Layout,
) -> Result<Pin<Box<Cluster>>, String> {
    let c = Cluster::with_layout(host, &case.roles, layout)
        .map_err(|e| format!("Cluster::with_layout: {e}"))?;
    for (i, (mask, op, _)) in case.ops.iter().enumerate() {
        let tid = apply(&c, *mask, op)?;
        if tid != i as u64 + 1 {
            return Err(format!(
                "change {} got TID {tid}, expected {}",
                i + 1,
                i + 1
            ));
        }
    }
    if let Some(roles) = &case.new_roles {
        for (i, r) in roles.iter().enumerate() {
            c.set_role(i, *r);
        }
    }
    for i in (0..case.roles.len()).filter(|i| case.catchup & (1 << i) != 0) {
        c.set_catchup(i, true);
    }
    for &(i, ms) in &case.stalls {
        c.set_stall(i, Some(std::time::Duration::from_millis(ms)));
    }
    Ok(c)
}

/// Read `path` on node `idx`.
pub fn observe(c: &Cluster, idx: usize, path: &[u8]) -> Seen {
    match c.stat(idx, path) {
        Err(_) => Seen::Missing,
        Ok(InodeStat {
            objtype,
            mode,
            size,
            modify_tid,
        }) => {
            let file = objtype == super::model::OBJ_FILE;
            let data = if file {
                Some(
                    c.read_file(idx, path)
                        .unwrap_or_else(|e| format!("read_file error: {e}").into_bytes()),
                )
            } else {
                None
            };
            Seen::Inode {
                objtype,
                perm: mode & 0o7777,
                size: if file { size } else { 0 },
                tid: modify_tid,
                data,
            }
        }
    }
}

/// What the model says `path` must look like.
pub fn expect(ino: Option<&Inode>) -> Seen {
    let d = defaults();
    let Some(i) = ino else { return Seen::Missing };
    let (objtype, perm, size, data) = match &i.kind {
        Kind::Dir => (super::model::OBJ_DIR, d.dir, 0, None),
        Kind::File { size, .. } => (super::model::OBJ_FILE, d.file, *size, i.content()),
        Kind::Link { .. } => (d.link_objtype, d.link, 0, None),
    };
    Seen::Inode {
        objtype,
        perm: i.mode.unwrap_or(perm),
        size,
        tid: i.tid,
        data,
    }
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&short(self))
    }
}

fn short(s: &Seen) -> String {
    match s {
        Seen::Missing => "missing".into(),
        Seen::Inode {
            objtype,
            perm,
            size,
            tid,
            data,
        } => {
            let d = data
                .as_ref()
                .map(|d| format!(" data[{}]={:02x?}..", d.len(), &d[..d.len().min(8)]))
                .unwrap_or_default();
            format!("type {objtype} mode {perm:04o} size {size} tid {tid}{d}")
        }
    }
}

/// Every node of `c` against the model world `w`, path by path; the differences, if any.
pub fn diff(c: &Cluster, w: &World, paths: &[Vec<u8>]) -> Result<(), String> {
    let mut out = String::new();
    for (i, t) in w.trees.iter().enumerate() {
        for p in paths {
            let want = expect(t.get(p));
            let got = observe(c, i, p);
            if want != got {
                let _ = writeln!(
                    out,
                    "node {i} {}: got {}, model {}",
                    String::from_utf8_lossy(p),
                    short(&got),
                    short(&want)
                );
            }
        }
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(out)
    }
}

/// Everything of every node, for "nothing changed" checks.
pub fn snapshot(c: &Cluster, n: usize, paths: &[Vec<u8>]) -> Vec<Seen> {
    (0..n)
        .flat_map(|i| paths.iter().map(move |p| observe(c, i, p)))
        .collect()
}

/// One deterministic round: refresh and sync every node in index order.
pub fn sync_round(c: &Cluster, n: usize) -> Result<(), String> {
    for i in 0..n {
        c.refresh_view(i);
        match c.sync_node(i, &|| false) {
            Ok(()) | Err(Error::NoQuorum) | Err(Error::Deadlock) => {}
            Err(e) => return Err(format!("sync_node({i}): {e}")),
        }
    }
    Ok(())
}

/// The root focus the cluster reports, as the model states it.
pub fn focus_root(c: &Cluster) -> Option<(usize, u64)> {
    match c.focus_root() {
        QuorumResult::Focus { node, tid } => Some((node, tid)),
        QuorumResult::None(_) => None,
    }
}

/// Whether `compare(a, b)` finds the two nodes equal (the full-fidelity comparison, which sees
/// what `stat` cannot: hardlink targets, DATA chain layout, meta).
pub fn same(c: &Cluster, a: usize, b: usize) -> Result<bool, String> {
    let mut s = String::new();
    c.compare(a, b, &mut s)
        .map_err(|e| format!("compare({a}, {b}): {e}"))
}

/// One line per chain of node `idx` (today's layout), as [`model::chain_lines`] words them, read
/// through the store's lookups.
pub fn chain_lines(c: &Cluster, idx: usize) -> Result<Vec<String>, String> {
    let e = |e: Error| format!("node {idx}: reading the store: {e}");
    let s = c.store(idx).map_err(e)?;
    let root = s.root();
    let rm = s.meta(root).map_err(e)?;
    let mut out = vec![
        model::root_line(s.bref(root).map_err(e)?.modify_tid, rm.mode & 0o7777),
        model::pfs_inum_line(rm.pfs_inum),
    ];
    // The PFS root's children, then each index inode's (no deeper level exists here).
    let mut todo = vec![(root, String::new())];
    while let Some((parent, at)) = todo.pop() {
        let mut next = s.lookup(parent, 0, media::KEY_MAX).map_err(e)?;
        while let Some((id, b)) = next {
            let (_, body) = s.read(id).map_err(e)?;
            match (b.btype, &body) {
                (media::BREF_TYPE_INODE, Body::Inode(ip)) if parent == root => {
                    let m = &ip.meta;
                    let direct = m
                        .is_directdata()
                        .then(|| &ip.u[..(m.size as usize).min(ip.u.len())]);
                    out.push(model::inode_line(
                        b.key,
                        b.modify_tid,
                        m.objtype,
                        m.mode & 0o7777,
                        [m.inum, m.nlinks, m.iparent, m.ctime, m.mtime, m.size],
                        direct,
                    ));
                    todo.push((id, format!("#{}", b.key)));
                }
                (media::BREF_TYPE_DIRENT, _) => {
                    let h = DirentHead::decode(&b).map_err(|x| format!("node {idx}: {x:?}"))?;
                    let n = usize::from(h.namlen);
                    let name = match &body {
                        Body::Data(d) if !h.name_is_embedded() => d.get(..n).unwrap_or(d),
                        _ => &b.check[..n.min(b.check.len())],
                    };
                    out.push(model::dirent_line(
                        &at,
                        name,
                        b.modify_tid,
                        h.inum,
                        h.objtype,
                    ));
                }
                (media::BREF_TYPE_DATA, Body::Data(d)) => {
                    out.push(model::data_line(&at, b.key, b.modify_tid, d));
                }
                (t, _) => out.push(format!("{at} key {:#x}: unexpected chain type {t}", b.key)),
            }
            next = s.next(parent, &b, media::KEY_MAX).map_err(e)?;
        }
    }
    out.sort();
    Ok(out)
}

/// Every node of `c` against the model world `w` (today's layout), chain by chain: the chains
/// a node holds and the model does not (`+`), and the reverse (`-`).
pub fn diff_chains(c: &Cluster, w: &World) -> Result<(), String> {
    let mut out = String::new();
    for (i, t) in w.trees.iter().enumerate() {
        let want = model::chain_lines(t);
        let got = chain_lines(c, i)?;
        if want != got {
            let _ = writeln!(out, "node {i} ({}):", w.roles[i].name());
            for l in got.iter().filter(|l| !want.contains(l)).take(8) {
                let _ = writeln!(out, "  + {l}");
            }
            for l in want.iter().filter(|l| !got.contains(l)).take(8) {
                let _ = writeln!(out, "  - {l}");
            }
        }
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(out)
    }
}
