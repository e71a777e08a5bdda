//! Nodes on volumes: a PFS of a HAMMER2 volume loaded into a node store ([`load`]), and a
//! node store committed back to its volume as one copy-on-write transaction ([`commit`]).
//!
//! The store holds the PFS's chains as on media (HAMMER2-FACTS §4a): the PFS root, every
//! inode of its index, every directory's DIRENTs, every file's DATA blocks, each with its
//! key, keybits, type, methods, flags, TIDs and `data_off`; DATA blocks and long names as
//! stored (compressed data stay compressed, with their method). Indirect blocks are
//! structure only: the store shapes its own tables, and a commit writes fresh ones.
//!
//! A commit rewrites the PFS's inodes and block tables (an inode's block holds its table, and
//! the store has no place for an on-media table that is unchanged), but keeps every DATA
//! block and long-name block whose `data_off` and check code are still the ones loaded from
//! this volume by reference: a sync that changes a few files writes their data only.

#[cfg(feature = "std")]
pub mod image;
pub mod join;

use alloc::vec::Vec;

use crate::host::{Host, LockMode};
use crate::media::check::CHECK_BYTES;
use crate::media::{
    Blockref, InodeData, VolumeHeader, BREF_TYPE_DATA, BREF_TYPE_DIRENT, BREF_TYPE_INODE,
    DIRHASH_VISIBLE, EMBEDDED_BYTES, KEY_MAX,
};
use crate::mem::try_push;
use crate::store::{compare, Body, ChainId, Layout, Store};
use crate::volume::scan::Flow;
use crate::volume::{BlockDev, Cause, ReadError, Txn, Volume};
use crate::{Error, Result};

/// What a commit needs to know of the PFS a store was loaded from.
#[derive(Debug)]
pub struct Mounted {
    /// The PFS root's blockref in the super-root's table, as loaded.
    pub pfs_bref: Blockref,
    /// The label (`filename` of the PFS root).
    label: heapless::Vec<u8, 256>,
    /// `(data_off, check)` of every DATA and long-name block loaded, sorted: the blocks a
    /// commit may keep by reference.
    blocks: Vec<(u64, [u8; CHECK_BYTES])>,
    /// [`compare::digest`] of the store as loaded (or as last committed).
    digest: u64,
}

impl Mounted {
    /// Whether `store` differs from what its volume holds (what was loaded or last committed).
    pub fn changed(&self, store: &Store) -> Result<bool> {
        Ok(compare::digest(store)? != self.digest)
    }

    /// The PFS's label.
    pub fn label(&self) -> &[u8] {
        &self.label
    }

    fn loaded(&self, b: &Blockref) -> bool {
        b.size_radix() != 0
            && self
                .blocks
                .binary_search_by(|(off, check)| (*off, check).cmp(&(b.data_off, &b.check)))
                .is_ok()
    }
}

fn read_err(e: ReadError) -> Error {
    e.into()
}

fn no_mem() -> ReadError {
    ReadError::new(Cause::NoMem, 0)
}

/// Every blockref of the table `set` (through its indirect blocks), in key order.
fn table_of<D: BlockDev>(
    vol: &Volume<D>,
    set: &[Blockref; crate::media::SET_COUNT],
) -> Result<Vec<Blockref>> {
    let mut out = Vec::new();
    vol.scan(set, 0, KEY_MAX, &mut |b| {
        try_push(&mut out, *b).map_err(|_| no_mem())?;
        Ok(Flow::Continue)
    })
    .map_err(read_err)?;
    Ok(out)
}

/// Make `ino` an inode as the store keeps it: a table-holding inode's block table lives in
/// the store's chains, so its on-media blockset is cleared (as the store's own inodes have
/// none).
fn clear_table(ino: &mut InodeData) {
    if !ino.meta.is_directdata() {
        ino.u = [0; EMBEDDED_BYTES];
    }
}

/// Load PFS `label` of `vol` into a new store in [`Layout::Index`] on `host`.
///
/// Every block is verified as it is read; a damaged one fails the load with its error (EIO),
/// before anything is synchronized from it.
pub fn load<D: BlockDev>(
    host: &'static dyn Host,
    vol: &Volume<D>,
    label: &[u8],
) -> Result<(Store, Mounted)> {
    let (store, pfs_bref, table) = load_root(host, vol, label)?;
    let mut blocks: Vec<(u64, [u8; CHECK_BYTES])> = Vec::new();
    // Tables still to load: (the store chain, its on-media blockset).
    let mut todo: Vec<(ChainId, [Blockref; crate::media::SET_COUNT])> = Vec::new();
    if let Some(set) = table {
        try_push(&mut todo, (store.root(), set))?;
    }
    while let Some((parent, set)) = todo.pop() {
        let items = table_of(vol, &set)?;
        let g = store.lock(parent, LockMode::Exclusive)?;
        for b in items {
            host.relax();
            load_chain(vol, &store, &g, b, &mut blocks, &mut todo)?;
        }
    }
    blocks.sort_unstable();
    let digest = compare::digest(&store)?;
    let label = heapless::Vec::from_slice(label).map_err(|_| Error::TooBig)?;
    Ok((
        store,
        Mounted {
            pfs_bref,
            label,
            blocks,
            digest,
        },
    ))
}

/// The store of PFS `label` of `vol` holding its root, the root's blockref, and the root's
/// block table when it has one.
// Kept out of line with small frames (as `load_chain`): an inode copy in the frame of `load`
// would sit under every device read of the load, on a kernel's small stack.
#[inline(never)]
#[allow(clippy::type_complexity)]
fn load_root<D: BlockDev>(
    host: &'static dyn Host,
    vol: &Volume<D>,
    label: &[u8],
) -> Result<(Store, Blockref, Option<[Blockref; crate::media::SET_COUNT]>)> {
    let (pfs_bref, mut root) = vol.pfs_entry_box(label).map_err(read_err)?;
    let table = match root.meta.is_directdata() {
        true => None,
        false => Some(root.blockset()?),
    };
    clear_table(&mut root);
    let store = root_store(host, root, &pfs_bref)?;
    Ok((store, pfs_bref, table))
}

/// A store holding `root` as its PFS root, with the TIDs and methods of `pfs_bref`.
#[inline(never)]
fn root_store(
    host: &'static dyn Host,
    root: alloc::boxed::Box<InodeData>,
    pfs_bref: &Blockref,
) -> Result<Store> {
    let store = Store::with_layout(host, *root, Layout::Index)?;
    {
        let g = store.lock_root(LockMode::Exclusive);
        store.modify(&g, |b, _| {
            b.methods = pfs_bref.methods;
            b.mirror_tid = pfs_bref.mirror_tid;
            b.modify_tid = pfs_bref.modify_tid;
            Ok(())
        })?;
    }
    Ok(store)
}

/// Load the chain `b` of a table into `store` under the parent `g`: its block read, noted in
/// `blocks` when it may be kept by reference, an inode's own table queued on `todo`.
#[inline(never)]
fn load_chain<D: BlockDev>(
    vol: &Volume<D>,
    store: &Store,
    g: &crate::store::ChainGuard<'_>,
    b: Blockref,
    blocks: &mut Vec<(u64, [u8; CHECK_BYTES])>,
    todo: &mut Vec<(ChainId, [Blockref; crate::media::SET_COUNT])>,
) -> Result<()> {
    let body = match b.btype {
        BREF_TYPE_INODE => {
            let mut ino = vol.read_inode_box(&b).map_err(read_err)?;
            let table = (!ino.meta.is_directdata()).then(|| ino.blockset());
            clear_table(&mut ino);
            let id = store.insert(g, b, Body::Inode(ino))?;
            if let Some(set) = table {
                try_push(todo, (id, set?))?;
            }
            return Ok(());
        }
        BREF_TYPE_DIRENT if b.size_radix() == 0 => Body::Data(Vec::new()),
        BREF_TYPE_DIRENT | BREF_TYPE_DATA => {
            let bytes = vol.read_block(&b).map_err(read_err)?;
            try_push(blocks, (b.data_off, b.check))?;
            Body::Data(bytes)
        }
        t => return Err(read_err(ReadError::new(Cause::WrongType(t), b.data_off))),
    };
    store.insert(g, b, body)?;
    Ok(())
}

/// One inode being committed: its chain and the on-media blockrefs of its children so far.
struct Frame {
    id: ChainId,
    next: Option<Blockref>,
    children: Vec<Blockref>,
}

/// Write `payload` as `b`'s block in `txn`, keeping the TID the store gave `b` (the writer
/// stamps the transaction's; the synchronizer's modify_tid must be what HAMMER2 sees).
fn place<D: BlockDev>(txn: &mut Txn<'_, D>, b: &Blockref, payload: &[u8]) -> Result<Blockref> {
    let mut nb = txn.write_block(*b, payload)?;
    nb.modify_tid = b.modify_tid;
    Ok(nb)
}

/// [`place`] for an inode.
fn place_inode<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    b: &Blockref,
    ino: &InodeData,
) -> Result<Blockref> {
    let mut nb = write_inode(txn, *b, ino)?;
    nb.modify_tid = b.modify_tid;
    Ok(nb)
}

/// Write `ino` as `b`'s block in `txn`. Encoded here, so its 1 KiB block sits in this frame
/// only while it is written, not in the frame of [`commit`] under every write.
#[inline(never)]
fn write_inode<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    b: Blockref,
    ino: &InodeData,
) -> Result<Blockref> {
    txn.write_block(b, &ino.encode())
}

/// Commit `store` (loaded from `vol` by [`load`], `m`) as one copy-on-write transaction:
/// every inode and block table written afresh, DATA and long-name blocks loaded from this
/// volume and unchanged kept where they are, the rest written; then the PFS root, the
/// super-root and a new volume header. Returns the header written; `m` then describes the
/// committed state.
///
/// Nothing committed changes before the header is written: on any error the volume keeps its
/// last commit.
pub fn commit<D: BlockDev>(
    vol: &Volume<D>,
    store: &Store,
    m: &mut Mounted,
) -> Result<VolumeHeader> {
    // DEVIATION: HAMMER2's flush writes only modified chains and the paths above them; this
    // store keeps no on-media block tables, so every inode and table of the PFS is written
    // again (data and long-name blocks, the bulk of a PFS, are kept by reference). A store
    // that keeps on-media tables (see docs/ARCHITECTURE.md) would write dirty paths only.
    let mut txn = Txn::begin(vol)?;
    let host = store.host();
    let mut kept: Vec<(u64, [u8; CHECK_BYTES])> = Vec::new();
    // Chains whose block was written here, and where: the store learns it once committed.
    let mut moved: Vec<(ChainId, u64)> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    try_push(
        &mut stack,
        Frame {
            id: store.root(),
            next: None,
            children: Vec::new(),
        },
    )?;
    let mut root_bref = None;
    let mut root_inum = 0;
    while let Some(top) = stack.last_mut() {
        host.relax();
        let found = match top.next {
            None => store.lookup(top.id, 0, KEY_MAX)?,
            Some(prev) => store.next(top.id, &prev, KEY_MAX)?,
        };
        if let Some((cid, cb)) = found {
            top.next = Some(cb);
            match cb.btype {
                BREF_TYPE_INODE => {
                    try_push(
                        &mut stack,
                        Frame {
                            id: cid,
                            next: None,
                            children: Vec::new(),
                        },
                    )?;
                }
                BREF_TYPE_DIRENT | BREF_TYPE_DATA => {
                    let nb = if cb.size_radix() == 0 {
                        cb
                    } else if m.loaded(&cb) {
                        try_push(&mut kept, (cb.data_off, cb.check))?;
                        cb
                    } else {
                        let (_, body) = store.read(cid)?;
                        let Body::Data(bytes) = body else {
                            return Err(Error::Invalid);
                        };
                        let nb = place(&mut txn, &cb, &bytes)?;
                        try_push(&mut kept, (nb.data_off, nb.check))?;
                        try_push(&mut moved, (cid, nb.data_off))?;
                        nb
                    };
                    try_push(&mut top.children, nb)?;
                }
                _ => return Err(Error::Invalid),
            }
            continue;
        }
        // Every child placed: write this inode with its table.
        let Some(done) = stack.pop() else { break };
        let (b, body) = store.read(done.id)?;
        let Body::Inode(mut ino) = body else {
            return Err(Error::Invalid);
        };
        if !ino.meta.is_directdata() {
            let set = txn.table(&done.children)?;
            ino.set_blockset(&set);
        } else if !done.children.is_empty() {
            return Err(Error::Invalid);
        }
        match stack.last_mut() {
            Some(parent) => {
                let nb = place_inode(&mut txn, &b, &ino)?;
                try_push(&mut parent.children, nb)?;
            }
            None => {
                // The PFS root: keyed in the super-root as loaded, its inode allocator past
                // every inode number its index holds.
                let top_inum = done
                    .children
                    .iter()
                    .filter(|c| c.key & DIRHASH_VISIBLE == 0)
                    .map(|c| c.key)
                    .max()
                    .unwrap_or(0);
                ino.meta.pfs_inum = ino.meta.pfs_inum.max(top_inum);
                root_inum = ino.meta.pfs_inum;
                let mut pb = m.pfs_bref;
                pb.modify_tid = b.modify_tid;
                pb.methods = b.methods;
                root_bref = Some(place_inode(&mut txn, &pb, &ino)?);
            }
        }
    }
    let pfs_bref = root_bref.ok_or(Error::Invalid)?;

    // The super-root's table, this PFS's entry replaced.
    let sroot_bref = *vol.header().sroot();
    let mut sroot = vol.read_inode_box(&sroot_bref).map_err(read_err)?;
    let mut brefs = table_of(vol, &sroot.blockset()?)?;
    let slot = brefs
        .iter_mut()
        .find(|b| b.key == m.pfs_bref.key && b.data_off == m.pfs_bref.data_off)
        .ok_or(Error::NotFound)?;
    *slot = pfs_bref;
    let sset = txn.table(&brefs)?;
    sroot.set_blockset(&sset);
    let new_sroot = write_inode(&mut txn, sroot_bref, &sroot)?;
    let h = txn.commit(new_sroot)?;
    // The store learns what the media now say: the inode allocator, where blocks went.
    let g = store.lock_root(LockMode::Exclusive);
    store.modify(&g, |_, body| {
        if let Body::Inode(ino) = body {
            ino.meta.pfs_inum = root_inum;
        }
        Ok(())
    })?;
    drop(g);
    for (id, off) in moved {
        host.relax();
        let g = store.lock(id, LockMode::Exclusive)?;
        store.modify(&g, |b, _| {
            b.data_off = off;
            Ok(())
        })?;
    }
    kept.sort_unstable();
    kept.dedup();
    m.blocks = kept;
    m.pfs_bref = pfs_bref;
    m.digest = compare::digest(store)?;
    Ok(h)
}

/// Replace everything `store` holds by what PFS `m.label()` of `vol` holds now (its last
/// commit): a node's remount, or, when the store's changes were never committed, its crash.
/// The PFS is loaded into a scratch store first, so a damaged volume fails here with `store`
/// untouched; then, under the PFS root's exclusive lock, the old chains are deleted and the
/// loaded ones copied in. The store stays at its address (sync threads and scan pools keep
/// their references), but a pass reading it meanwhile would see a tree half replaced: every
/// thread of the cluster must be frozen or stopped around the call.
pub fn reload<D: BlockDev>(vol: &Volume<D>, store: &Store, m: &mut Mounted) -> Result<()> {
    let host = store.host();
    let label = m.label.clone();
    let (fresh, fm) = load(host, vol, &label)?;
    let root = store.lock_root(LockMode::Exclusive);
    while let Some((c, _)) = store.lookup(store.root(), 0, KEY_MAX)? {
        host.relax();
        let g = store.lock_child(&root, c, LockMode::Exclusive)?;
        store.delete(&root, g)?;
    }
    let (rb, rbody) = fresh.read(fresh.root())?;
    store.replace(&root, rb, rbody)?;
    // Pre-order copy: a stack of (chain of `fresh`, its copy's guard in `store`); the next
    // child of each is found from the last one copied.
    let mut stack = Vec::new();
    try_push(&mut stack, (fresh.root(), None::<Blockref>, None))?;
    while let Some((from, prev, _)) = stack.last() {
        host.relax();
        let (from, prev) = (*from, *prev);
        let next = match prev {
            None => fresh.lookup(from, 0, KEY_MAX)?,
            Some(p) => fresh.next(from, &p, KEY_MAX)?,
        };
        let Some((child, cb)) = next else {
            stack.pop();
            continue;
        };
        if let Some(top) = stack.last_mut() {
            top.1 = Some(cb);
        }
        let (b, body) = fresh.read(child)?;
        let parent = match stack.last().and_then(|t| t.2.as_ref()) {
            Some(g) => g,
            None => &root,
        };
        let id = store.insert(parent, b, body)?;
        if fresh.lookup(child, 0, KEY_MAX)?.is_some() {
            let g = store.lock_child(parent, id, LockMode::Exclusive)?;
            try_push(&mut stack, (child, None, Some(g)))?;
        }
    }
    drop(root);
    *m = fm;
    // The digest and the kept blocks are the fresh load's: the same tree, in `store` now.
    m.digest = compare::digest(store)?;
    Ok(())
}

/// Whether chains `a` of `ours` and `b` of `theirs`, at the same place, hold the same thing
/// (headers' kind and payload; a PFS root only its shared fields, as the synchronizer copies).
fn same_chain(ours: &Store, a: ChainId, theirs: &Store, b: ChainId) -> Result<bool> {
    let (ab, abody) = ours.read(a)?;
    let (bb, bbody) = theirs.read(b)?;
    let head = |x: &Blockref| {
        let name = (x.btype == BREF_TYPE_DIRENT && x.size_radix() == 0).then_some(x.check);
        (x.btype, x.keybits, x.methods, x.size_radix(), x.embed, name)
    };
    if head(&ab) != head(&bb) {
        return Ok(false);
    }
    Ok(match (&abody, &bbody) {
        (Body::Inode(x), Body::Inode(y)) if a == ours.root() => {
            crate::store::inode::pfsroot_fields_eq(&x.meta, &y.meta)
        }
        (Body::Inode(x), Body::Inode(y)) => x.encode() == y.encode(),
        (Body::Data(x), Body::Data(y)) => x == y,
        _ => false,
    })
}

/// Give every chain of `ours` that differs from `master` under an equal modify_tid (and every
/// chain above it) modify_tid 0, the TID of a chain not yet synchronized, so the synchronizer
/// looks at it. Returns how many chains were marked.
///
/// DEVIATION: HAMMER2 compares modify_tids only (`hammer2_sync_slaves`): within one cluster
/// TIDs come from the nodes' shared history, so an equal TID means an equal chain. Volumes
/// made and filled apart (newfs + import on each) count their transactions from the same start,
/// so equal TIDs name different contents there; a node that is not a master is made to take
/// the masters' version where it differs, which is what syncing it from them means.
pub fn mark_foreign(ours: &Store, master: &Store) -> Result<usize> {
    let host = ours.host();
    let marks = conflicts(ours, master)?;
    // Each mark and the chains above it (their TIDs hid it from the synchronizer too).
    let mut marked = 0;
    for id in marks {
        let mut cur = Some(id);
        while let Some(c) = cur {
            host.relax();
            let g = ours.lock(c, LockMode::Exclusive)?;
            if ours.bref(c)?.modify_tid != 0 {
                ours.set_modify_tid(&g, 0)?;
                marked += 1;
            }
            drop(g);
            cur = ours.parent(c)?;
        }
    }
    Ok(marked)
}

/// The chains of `ours` whose content, or whose set of children, differs from the chain at
/// the same place in `other` while both carry the same modify_tid: differences the
/// synchronizer cannot see. Empty when the two trees agree wherever their TIDs do.
pub fn conflicts(ours: &Store, other: &Store) -> Result<Vec<ChainId>> {
    let (master, host) = (other, ours.host());
    let mut marks: Vec<ChainId> = Vec::new();
    let mut todo: Vec<(ChainId, ChainId)> = Vec::new();
    try_push(&mut todo, (ours.root(), master.root()))?;
    while let Some((a, b)) = todo.pop() {
        host.relax();
        let (ab, bb) = (ours.bref(a)?, master.bref(b)?);
        if ab.modify_tid == bb.modify_tid && !same_chain(ours, a, master, b)? {
            try_push(&mut marks, a)?;
        }
        // Children merged by key: one on one side only, or of another shape, marks `a`.
        let mut x = ours.lookup(a, 0, KEY_MAX)?;
        let mut y = master.lookup(b, 0, KEY_MAX)?;
        let mut differs = false;
        loop {
            match (x, y) {
                (None, None) => break,
                (Some((cx, xb)), Some((cy, yb))) if xb.key == yb.key => {
                    if xb.keybits == yb.keybits && xb.btype == yb.btype {
                        try_push(&mut todo, (cx, cy))?;
                    } else {
                        differs = true;
                    }
                    x = ours.next(a, &xb, KEY_MAX)?;
                    y = master.next(b, &yb, KEY_MAX)?;
                }
                (Some((_, xb)), Some((_, yb))) if xb.key < yb.key => {
                    differs = true;
                    x = ours.next(a, &xb, KEY_MAX)?;
                }
                (Some(_), Some((_, yb))) => {
                    differs = true;
                    y = master.next(b, &yb, KEY_MAX)?;
                }
                (Some((_, xb)), None) => {
                    differs = true;
                    x = ours.next(a, &xb, KEY_MAX)?;
                }
                (None, Some((_, yb))) => {
                    differs = true;
                    y = master.next(b, &yb, KEY_MAX)?;
                }
            }
        }
        if differs && ab.modify_tid == bb.modify_tid {
            try_push(&mut marks, a)?;
        }
    }
    Ok(marks)
}

#[cfg(test)]
mod tests;
