//! Nodes on volumes: a PFS of a HAMMER2 volume loaded into a node store ([`load`]), and a
//! node store committed back to its volume as one copy-on-write transaction ([`commit`]).
//!
//! The store holds the PFS's chains as on media (HAMMER2-FACTS §4a): the PFS root, every
//! inode of its index, every directory's DIRENTs, every file's DATA blocks, each with its
//! key, keybits, type, methods, flags, TIDs and `data_off`; DATA blocks and long names as
//! stored (compressed data stay compressed, with their method). Indirect blocks are
//! structure only in the store (it shapes its own tables); [`Mounted`] remembers the ones on
//! media, per table, beside the store.
//!
//! A commit writes what changed and the path above it, as HAMMER2's flush does: a block of
//! the store (DATA, long name, inode) whose `data_off` names a block of the last committed
//! tree that holds these very bytes (same check code, of a method that identifies the
//! bytes: not NONE or DISABLED) is kept by reference, and so is an indirect block whose key
//! range and entries are those of the table's block last committed.
//! A sync that changes k files of a big PFS writes their blocks, their inodes and the
//! indirect blocks above them (O(k · depth)), then the PFS root, the super-root and a header.

#[cfg(feature = "std")]
pub mod image;
pub mod join;

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::host::{Host, LockMode};
use crate::media::{
    Blockref, InodeData, VolumeHeader, BREF_TYPE_DATA, BREF_TYPE_DIRENT, BREF_TYPE_INDIRECT,
    BREF_TYPE_INODE, DIRHASH_VISIBLE, EMBEDDED_BYTES, KEY_MAX,
};
use crate::mem::try_push;
use crate::store::{Body, ChainId, Layout, Store};
use crate::volume::scan::Flow;
use crate::volume::space::{SpaceCache, TreeId};
use crate::volume::txn::{block_name, checks_content};
use crate::volume::{BlockDev, Cause, IoCount, ReadError, Txn, Volume};
use crate::{Error, Result};

/// What a commit needs to know of the PFS a store was loaded from.
#[derive(Debug)]
pub struct Mounted {
    /// The PFS root's blockref in the super-root's table, as loaded.
    pub pfs_bref: Blockref,
    /// The label (`filename` of the PFS root), on the heap: a `Mounted` moves through the
    /// frames of a load, which a kernel stack holds under the load's device reads.
    label: Vec<u8>,
    /// The name ([`block_name`]: place and check code) of every DATA, long-name and inode
    /// block below the PFS root as loaded (or last committed) whose check code identifies its
    /// bytes ([`checks_content`]), sorted: the blocks a commit may keep by reference.
    blocks: Vec<(u64, u64)>,
    /// The indirect blocks of each inode's block table as loaded (or last committed), by
    /// the inode's chain, sorted by chain, key and keybits.
    tables: Vec<(TableOf, Blockref)>,
    /// [`Store::changes`] of the store as loaded (or as last committed): a store whose count
    /// moved since may hold something the volume does not.
    changes: u64,
    /// The tree `blocks` and `tables` describe: the volume header it was loaded from or
    /// last committed. A volume whose header is another was written by someone else since.
    tree: TreeId,
    /// What the trees of the volume's header copies reach, learned by the last commit (none
    /// before the first, or after a failed one): the next commit reads none of them again.
    space: Option<Box<SpaceCache>>,
    io: MountIo,
}

/// The chain whose block table an indirect block belongs to, as a sortable pair.
type TableOf = (u32, u32);

fn table_key(id: ChainId) -> TableOf {
    (id.idx, id.gen)
}

/// Blocks and bytes the device moved for a PFS: its load, and its last commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountIo {
    /// What [`load`] (or the last [`reload`]) read.
    pub load: IoCount,
    /// What the last [`commit`] read and wrote (zero before the first).
    pub commit: IoCount,
}

impl Mounted {
    /// Whether `store` may differ from what its volume holds (what was loaded or last
    /// committed): whether it changed since, by its change count (no chain is looked at).
    pub fn changed(&self, store: &Store) -> Result<bool> {
        Ok(store.changes() != self.changes)
    }

    /// The PFS's label.
    pub fn label(&self) -> &[u8] {
        &self.label
    }

    /// Blocks read and written by the load and by the last commit.
    pub fn io(&self) -> MountIo {
        self.io
    }

    /// Whether the table of chain `id` has indirect blocks on media.
    fn has_table(&self, id: ChainId) -> bool {
        let k = table_key(id);
        self.tables
            .get(self.tables.partition_point(|(t, _)| *t < k))
            .is_some_and(|(t, _)| *t == k)
    }

    /// The indirect block of key range `key`/`keybits` last committed in the table of chain
    /// `id`.
    fn table_block(&self, id: ChainId, key: u64, keybits: u8) -> Option<Blockref> {
        let want = (table_key(id), key, keybits);
        self.tables
            .binary_search_by(|(t, b)| (*t, b.key, b.keybits).cmp(&want))
            .ok()
            .and_then(|i| self.tables.get(i))
            .map(|(_, b)| *b)
    }

    /// Whether `b` names, by place and check code, a block of the tree last committed that
    /// holds exactly the bytes `b`'s check code was computed from.
    fn loaded(&self, b: &Blockref) -> bool {
        b.size_radix() != 0
            && checks_content(b)
            && self.blocks.binary_search(&block_name(b)).is_ok()
    }
}

/// Add `b`'s name to `names`, the blocks of the tree: those a later commit may keep by
/// reference ([`Mounted::loaded`]: only a check code that identifies the bytes does,
/// [`checks_content`]), and those whose space it frees when its tree drops them. A block
/// under check NONE or DISABLED is written by every commit.
///
/// DEVIATION: HAMMER2 rewrites such a block only when modified (and in place); the store
/// keeps no modified flags, and place and all-zero check code cannot tell new bytes from old.
fn remember(names: &mut Vec<(u64, u64)>, b: &Blockref) -> Result<()> {
    if b.size_radix() != 0 {
        try_push(names, block_name(b))?;
    }
    Ok(())
}

fn read_err(e: ReadError) -> Error {
    e.into()
}

fn no_mem() -> ReadError {
    ReadError::new(Cause::NoMem, 0)
}

/// Every blockref of the table `set` (through its indirect blocks), in key order; the
/// INDIRECT blockrefs met go to `indirect`.
#[inline(never)]
fn table_of<D: BlockDev>(
    vol: &Volume<D>,
    set: &[Blockref; crate::media::SET_COUNT],
    indirect: &mut Vec<Blockref>,
) -> Result<Vec<Blockref>> {
    let mut out = Vec::new();
    vol.scan_tables(set, &mut |b| {
        let to = if b.btype == BREF_TYPE_INDIRECT {
            &mut *indirect
        } else {
            &mut out
        };
        try_push(to, *b).map_err(|_| no_mem())?;
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
    load_with_progress(host, vol, label, &mut |_| {})
}

/// Chains loaded (or visited by a commit) between two calls of a progress callback.
pub const LOAD_PROGRESS_EVERY: u64 = 1024;

/// [`load`], calling `progress` with the number of chains loaded so far once at least
/// [`LOAD_PROGRESS_EVERY`] more were loaded (a host shows it while a large PFS loads). It is
/// called between two tables, with no chain of the store locked: a host that blocks in it
/// (a stopped terminal) holds nothing up.
pub fn load_with_progress<D: BlockDev>(
    host: &'static dyn Host,
    vol: &Volume<D>,
    label: &[u8],
    progress: &mut dyn FnMut(u64),
) -> Result<(Store, Mounted)> {
    let start = vol.io();
    let (store, pfs_bref, mut todo) = load_root(host, vol, label)?;
    let mut blocks: Vec<(u64, u64)> = Vec::new();
    let mut tables: Vec<(TableOf, Blockref)> = Vec::new();
    load_tables(vol, &store, &mut todo, &mut blocks, &mut tables, progress)?;
    let found = Found {
        pfs_bref,
        blocks,
        tables,
        tree: TreeId::of(vol.header()),
        load: vol.io().since(&start),
    };
    let mounted = loaded(&store, label, found)?;
    Ok((store, mounted))
}

/// What a load found on the media, for [`loaded`].
struct Found {
    pfs_bref: Blockref,
    blocks: Vec<(u64, u64)>,
    tables: Vec<(TableOf, Blockref)>,
    tree: TreeId,
    load: IoCount,
}

/// Load every table queued on `todo` (the store chain, its on-media blockset) into `store`,
/// and the tables of the inodes met, naming the blocks read in `blocks` and the indirect
/// blocks in `tables`. Out of line with small frames, as everything under its device reads.
#[inline(never)]
fn load_tables<D: BlockDev>(
    vol: &Volume<D>,
    store: &Store,
    todo: &mut Vec<(ChainId, [Blockref; crate::media::SET_COUNT])>,
    blocks: &mut Vec<(u64, u64)>,
    tables: &mut Vec<(TableOf, Blockref)>,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let host = store.host();
    let mut indirect = Vec::new();
    let mut loaded = 0u64;
    let mut reported = 0u64;
    while let Some((parent, set)) = todo.pop() {
        indirect.clear();
        let items = table_of(vol, &set, &mut indirect)?;
        for ind in &indirect {
            try_push(tables, (table_key(parent), *ind))?;
        }
        let g = store.lock(parent, LockMode::Exclusive)?;
        for b in items {
            host.relax();
            loaded += 1;
            load_chain(vol, store, &g, b, blocks, todo)?;
        }
        drop(g);
        if loaded - reported >= LOAD_PROGRESS_EVERY {
            reported = loaded;
            progress(loaded);
        }
    }
    Ok(())
}

/// The [`Mounted`] of PFS `label` loaded into `store` as `found` says: the names sorted, the
/// store's change count taken. Out of line: the sorts' frames are not under the load's
/// device reads.
#[inline(never)]
fn loaded(store: &Store, label: &[u8], found: Found) -> Result<Mounted> {
    let Found {
        pfs_bref,
        mut blocks,
        mut tables,
        tree,
        load,
    } = found;
    let host = store.host();
    let relax = || host.relax();
    crate::mem::sort_yielding(&mut blocks, |n| *n, &relax)?;
    sort_tables(&mut tables, &relax)?;
    let label = crate::mem::try_to_vec(label)?;
    Ok(Mounted {
        pfs_bref,
        label,
        blocks,
        tables,
        changes: store.changes(),
        tree,
        space: None,
        io: MountIo {
            load,
            commit: IoCount::default(),
        },
    })
}

/// The store of PFS `label` of `vol` holding its root, the root's blockref, and the tables
/// still to load: the root's, when it has one.
// Kept out of line with small frames (as `load_chain`): an inode copy in the frame of `load`
// would sit under every device read of the load, on a kernel's small stack.
#[inline(never)]
#[allow(clippy::type_complexity)]
fn load_root<D: BlockDev>(
    host: &'static dyn Host,
    vol: &Volume<D>,
    label: &[u8],
) -> Result<(
    Store,
    Blockref,
    Vec<(ChainId, [Blockref; crate::media::SET_COUNT])>,
)> {
    let (pfs_bref, mut root) = vol.pfs_entry_box(label).map_err(read_err)?;
    let mut todo = Vec::new();
    let table = match root.meta.is_directdata() {
        true => None,
        false => Some(root.blockset()?),
    };
    clear_table(&mut root);
    let store = root_store(host, root, &pfs_bref)?;
    if let Some(set) = table {
        try_push(&mut todo, (store.root(), set))?;
    }
    Ok((store, pfs_bref, todo))
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

/// Load the chain `b` of a table into `store` under the parent `g`: its block read and named
/// in `blocks`, an inode's own table queued on `todo`.
#[inline(never)]
fn load_chain<D: BlockDev>(
    vol: &Volume<D>,
    store: &Store,
    g: &crate::store::ChainGuard<'_>,
    b: Blockref,
    blocks: &mut Vec<(u64, u64)>,
    todo: &mut Vec<(ChainId, [Blockref; crate::media::SET_COUNT])>,
) -> Result<()> {
    let body = match b.btype {
        BREF_TYPE_INODE => {
            let mut ino = vol.read_inode_box(&b).map_err(read_err)?;
            remember(blocks, &b)?;
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
            remember(blocks, &b)?;
            Body::Data(bytes)
        }
        t => return Err(read_err(ReadError::new(Cause::WrongType(t), b.data_off))),
    };
    store.insert(g, b, body)?;
    Ok(())
}

/// Sort `tables` by chain, key and keybits, calling `relax` every few thousand entries.
fn sort_tables(tables: &mut Vec<(TableOf, Blockref)>, relax: &dyn Fn()) -> Result<()> {
    crate::mem::sort_yielding(tables, |(t, b)| (*t, b.key, b.keybits), relax)
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

/// `b` (a chain's header, `data_off` where the volume last had its block) with the check
/// code of `payload`, a whole block, when `on_media` says the block at that place holds
/// exactly that: the block is then kept by reference. Otherwise `payload` is written anew.
fn keep_or_place<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    b: &Blockref,
    payload: &[u8],
    on_media: impl Fn(&Blockref) -> bool,
) -> Result<Blockref> {
    let mut same = *b;
    if b.data_bytes() == payload.len() && same.set_check(payload).is_ok() && on_media(&same) {
        return Ok(same);
    }
    place(txn, b, payload)
}

/// [`keep_or_place`] for an inode, encoded onto the heap ([`encoded`]): its 1 KiB block is
/// in no frame under the device write, and this one is out of line of [`commit`]'s.
#[inline(never)]
fn keep_or_place_inode<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    b: &Blockref,
    ino: &InodeData,
    on_media: &dyn Fn(&Blockref) -> bool,
) -> Result<Blockref> {
    keep_or_place(txn, b, &encoded(ino)?[..], on_media)
}

/// Write `ino` as `b`'s block in `txn` (the transaction's TID), encoded as in
/// [`keep_or_place_inode`].
#[inline(never)]
fn write_inode<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    b: Blockref,
    ino: &InodeData,
) -> Result<Blockref> {
    txn.write_block(b, &encoded(ino)?[..])
}

/// `ino`'s on-media block, on the heap. Out of line, so the encoder's copy on the stack is
/// gone before the block is written.
#[inline(never)]
fn encoded(ino: &InodeData) -> Result<Box<[u8; crate::media::INODE_BYTES]>> {
    crate::mem::try_box(ino.encode())
}

/// Commit `store` (loaded from `vol` by [`load`], `m`) as one copy-on-write transaction:
/// blocks of the last committed tree that still hold what the store holds are kept by
/// reference (DATA, long names, inodes, indirect blocks whose entries did not change), the
/// rest written, then the PFS root, the super-root and a new volume header. Returns the
/// header written, boxed (it stays off the stack under the commit's device I/O); `m` then
/// describes the committed state.
///
/// Nothing committed changes before the header is written: on any error before it the volume
/// keeps its last commit. An error after it (out of memory while the store learns where its
/// blocks went) leaves the new commit on the volume and `m` describing it; the next commit
/// rewrites what the store did not learn, and succeeds.
pub fn commit<D: BlockDev>(
    vol: &Volume<D>,
    store: &Store,
    m: &mut Mounted,
) -> Result<Box<VolumeHeader>> {
    commit_with_progress(vol, store, m, &mut |_| {})
}

/// [`commit`], calling `progress` with the number of chains visited so far every
/// [`LOAD_PROGRESS_EVERY`] chains (a host shows it while a large PFS is written).
pub fn commit_with_progress<D: BlockDev>(
    vol: &Volume<D>,
    store: &Store,
    m: &mut Mounted,
    progress: &mut dyn FnMut(u64),
) -> Result<Box<VolumeHeader>> {
    let (h, news) = commit_tree(vol, store, m, progress)?;
    learn(store, m, news)?;
    Ok(h)
}

/// The transaction of [`commit_with_progress`], up to and with the volume header; once it
/// returns, `m` describes the tree committed (the store learns it afterwards).
fn commit_tree<D: BlockDev>(
    vol: &Volume<D>,
    store: &Store,
    m: &mut Mounted,
    progress: &mut dyn FnMut(u64),
) -> Result<(Box<VolumeHeader>, Learned)> {
    // DEVIATION: HAMMER2's flush finds what to write by the MODIFIED/UPDATE flags of its
    // chains; this store keeps no such flags, so every chain is looked at (memory only, no
    // device reads; a childless inode by its header alone) and a block is rewritten when
    // its bytes differ from the block last committed at its place, as told by its check
    // code. Where that code identifies the bytes, the blocks written are HAMMER2's: what
    // changed and its path. A block under check NONE or DISABLED is written by every commit
    // (see `remember`).
    let start = vol.io();
    let changes = store.changes();
    let mut txn = begin(vol, m)?;
    let host = store.host();
    let mut kept: Vec<(u64, u64)> = Vec::new();
    let mut tables: Vec<(TableOf, Blockref)> = Vec::new();
    let mut placed = Vec::new();
    // Chains whose block was written here, with the blockref written: the store learns
    // where and when once committed, so that the next commit finds them unchanged.
    let mut moved: Vec<(ChainId, Blockref)> = Vec::new();
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
    let mut visited = 0u64;
    while let Some(top) = stack.last_mut() {
        host.relax();
        visited += 1;
        if visited % LOAD_PROGRESS_EVERY == 0 {
            progress(visited);
        }
        let found = match top.next {
            None => store.lookup(top.id, 0, KEY_MAX)?,
            Some(prev) => store.next(top.id, &prev, KEY_MAX)?,
        };
        if let Some((cid, cb)) = found {
            top.next = Some(cb);
            match cb.btype {
                // A childless inode whose block last committed holds these very bytes (the
                // store's check code is that of the inode's encoding, and names a block of
                // that tree) is kept as it is, neither read nor encoded again.
                BREF_TYPE_INODE if m.loaded(&cb) && store.child_count(cid)? == 0 => {
                    remember(&mut kept, &cb)?;
                    try_push(&mut top.children, cb)?;
                }
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
                        remember(&mut kept, &cb)?;
                        cb
                    } else {
                        let nb = place_data(&mut txn, store, cid, &cb)?;
                        remember(&mut kept, &nb)?;
                        try_push(&mut moved, (cid, nb))?;
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
            let old = |key, keybits| m.table_block(done.id, key, keybits);
            set_table(&mut txn, &mut ino, &done, &old, &mut placed, &mut tables)?;
        } else if !done.children.is_empty() {
            return Err(Error::Invalid);
        }
        match stack.last_mut() {
            Some(parent) => {
                let nb = keep_or_place_inode(&mut txn, &b, &ino, &|x| m.loaded(x))?;
                remember(&mut kept, &nb)?;
                if nb.data_off != b.data_off || nb.mirror_tid != b.mirror_tid {
                    try_push(&mut moved, (done.id, nb))?;
                }
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
                let loaded = m.pfs_bref;
                let same = |x: &Blockref| {
                    checks_content(x) && x.data_off == loaded.data_off && x.check == loaded.check
                };
                root_bref = Some(keep_or_place_inode(&mut txn, &pb, &ino, &same)?);
            }
        }
    }
    let pfs_bref = root_bref.ok_or(Error::Invalid)?;

    let new_sroot = write_sroot(vol, &mut txn, &m.pfs_bref, &pfs_bref)?;
    sort_names(host, &mut kept, &mut tables)?;
    drop_gone(&mut txn, host, m, &pfs_bref, &kept, &tables)?;
    let (h, space) = txn.commit_cached(new_sroot)?;
    // Nothing fallible from here on: `m` must describe the tree the header now names.
    m.blocks = kept;
    m.tables = tables;
    m.pfs_bref = pfs_bref;
    follow(m, &h, space);
    m.io.commit = vol.io().since(&start);
    Ok((
        h,
        Learned {
            moved,
            root_inum,
            changes,
        },
    ))
}

/// The transaction of a commit of `m`. The space the header copies' trees reach is known
/// from the last commit, unless the volume was written by someone else since: then every
/// tree is read again, as is the current one for the first commit. Out of line: the
/// headers' names compared are not in the commit's frame.
#[inline(never)]
fn begin<'v, D: BlockDev>(vol: &'v Volume<D>, m: &mut Mounted) -> Result<Txn<'v, D>> {
    if m.tree == TreeId::of(vol.header()) {
        let cache = match m.space.take() {
            Some(c) => c,
            None => crate::mem::try_box(SpaceCache::default())?,
        };
        Txn::begin_cached(vol, cache)
    } else {
        m.space = None;
        Txn::begin(vol)
    }
}

/// Make `m` follow the header `h` a commit wrote, with the space cache of its tree. Out of
/// line, as [`begin`].
#[inline(never)]
fn follow(m: &mut Mounted, h: &VolumeHeader, space: Option<Box<SpaceCache>>) {
    m.tree = TreeId::of(h);
    m.space = space;
}

/// Write `cid`'s DATA or long-name block, `cb` its header, in `txn`; its blockref written.
/// Out of line, as everything under a commit's device writes.
#[inline(never)]
fn place_data<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    store: &Store,
    cid: ChainId,
    cb: &Blockref,
) -> Result<Blockref> {
    let (_, body) = store.read(cid)?;
    let Body::Data(bytes) = body else {
        return Err(Error::Invalid);
    };
    place(txn, cb, &bytes)
}

/// Give `ino` (the inode of `done`) the block table of `done`'s children, keeping by
/// reference the indirect blocks `old` names that did not change; every indirect block of
/// the table is added to `tables` (`placed` is scratch). Out of line: the table's blockset
/// and the table writer's frames are not under the rest of the commit.
#[inline(never)]
fn set_table<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    ino: &mut InodeData,
    done: &Frame,
    old: &dyn Fn(u64, u8) -> Option<Blockref>,
    placed: &mut Vec<Blockref>,
    tables: &mut Vec<(TableOf, Blockref)>,
) -> Result<()> {
    placed.clear();
    let set = txn.table_keeping(&done.children, old, Some(placed))?;
    for ind in placed.iter() {
        try_push(tables, (table_key(done.id), *ind))?;
    }
    ino.set_blockset(&set);
    Ok(())
}

/// Write the super-root of `vol` in `txn` with its entry of the PFS loaded as `loaded`
/// replaced by `pfs_bref`; the super-root's new blockref. Its indirect blocks are written
/// afresh: the super-root is on every commit's path.
#[inline(never)]
fn write_sroot<D: BlockDev>(
    vol: &Volume<D>,
    txn: &mut Txn<'_, D>,
    loaded: &Blockref,
    pfs_bref: &Blockref,
) -> Result<Blockref> {
    let sroot_bref = *vol.header().sroot();
    let mut sroot = vol.read_inode_box(&sroot_bref).map_err(read_err)?;
    let mut sroot_indirect = Vec::new();
    let mut brefs = table_of(vol, &sroot.blockset()?, &mut sroot_indirect)?;
    let slot = brefs
        .iter_mut()
        .find(|b| b.key == loaded.key && b.data_off == loaded.data_off)
        .ok_or(Error::NotFound)?;
    *slot = *pfs_bref;
    let sset = txn.table(&brefs)?;
    sroot.set_blockset(&sset);
    // The old super-root and its indirect blocks leave the tree.
    txn.drop_block(sroot_bref.data_off)?;
    for ind in &sroot_indirect {
        txn.drop_block(ind.data_off)?;
    }
    write_inode(txn, sroot_bref, &sroot)
}

/// Name to `txn` every block of the PFS of the tree last committed (`m`) that the new tree
/// (PFS root `pfs_bref`, `kept`, sorted, and `tables`) no longer holds, each once.
#[inline(never)]
fn drop_gone<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    host: &dyn Host,
    m: &Mounted,
    pfs_bref: &Blockref,
    kept: &[(u64, u64)],
    tables: &[(TableOf, Blockref)],
) -> Result<()> {
    if block_name(pfs_bref) != block_name(&m.pfs_bref) {
        txn.drop_block(m.pfs_bref.data_off)?;
    }
    let relax = || host.relax();
    let names = |t: &[(TableOf, Blockref)]| -> Result<Vec<(u64, u64)>> {
        let mut v = Vec::new();
        v.try_reserve_exact(t.len())?;
        v.extend(t.iter().map(|(_, b)| block_name(b)));
        crate::mem::sort_yielding(&mut v, |n| *n, &relax)?;
        Ok(v)
    };
    let (old_tables, new_tables) = (names(&m.tables)?, names(tables)?);
    for (old, new) in [(&m.blocks[..], kept), (&old_tables[..], &new_tables[..])] {
        let mut j = 0;
        let mut last = None;
        for (i, n) in old.iter().enumerate() {
            if i % crate::mem::SORT_CHUNK == 0 {
                relax();
            }
            if last == Some(*n) {
                continue;
            }
            last = Some(*n);
            while new.get(j).is_some_and(|x| x < n) {
                j += 1;
            }
            if new.get(j) != Some(n) {
                txn.drop_block(n.0)?;
            }
        }
    }
    Ok(())
}

/// Sort a commit's block names (duplicates dropped) and indirect blocks, as [`Mounted`]
/// keeps them. Out of line of the commit's frame.
#[inline(never)]
fn sort_names(
    host: &dyn Host,
    kept: &mut Vec<(u64, u64)>,
    tables: &mut Vec<(TableOf, Blockref)>,
) -> Result<()> {
    let relax = || host.relax();
    crate::mem::sort_yielding(kept, |n| *n, &relax)?;
    kept.dedup();
    sort_tables(tables, &relax)
}

/// What the store learns from a commit: where the chains whose blocks were written went, and
/// the PFS root's inode allocator.
struct Learned {
    moved: Vec<(ChainId, Blockref)>,
    root_inum: u64,
    /// The store's change count when the commit began to look at it.
    changes: u64,
}

/// Tell `store` what the media now say after a commit, then take its change count into `m`
/// if nothing but this changed the store since the commit began to look at it; otherwise a
/// change may have come after the commit passed its place, and the store counts as changed.
///
/// A failure here (out of memory) leaves some chains with the place and TID of their old
/// block; `m` already describes the new tree, in which those old blocks are not kept, so the
/// next commit writes them again, and `m`'s old count makes the store count as changed.
#[inline(never)]
fn learn(store: &Store, m: &mut Mounted, news: Learned) -> Result<()> {
    // The changes made here: the root's, and one per chain moved.
    let ours = 1 + news.moved.len() as u64;
    let g = store.lock_root(LockMode::Exclusive);
    store.modify(&g, |_, body| {
        if let Body::Inode(ino) = body {
            ino.meta.pfs_inum = news.root_inum;
        }
        Ok(())
    })?;
    drop(g);
    for (id, nb) in news.moved {
        store.host().relax();
        let g = store.lock(id, LockMode::Exclusive)?;
        store.modify(&g, |b, _| {
            b.data_off = nb.data_off;
            b.mirror_tid = nb.mirror_tid;
            Ok(())
        })?;
    }
    let now = store.changes();
    m.changes = match now == news.changes.wrapping_add(ours) {
        true => now,
        false => news.changes,
    };
    Ok(())
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
    let label = crate::mem::try_to_vec(&m.label)?;
    let (fresh, fm) = load(host, vol, &label)?;
    let root = store.lock_root(LockMode::Exclusive);
    while let Some((c, _)) = store.lookup(store.root(), 0, KEY_MAX)? {
        host.relax();
        let g = store.lock_child(&root, c, LockMode::Exclusive)?;
        store.delete(&root, g)?;
    }
    let (rb, rbody) = fresh.read(fresh.root())?;
    store.replace(&root, rb, rbody)?;
    // Which chain of `store` each table of `fresh` with indirect blocks became.
    let mut copies: Vec<(TableOf, TableOf)> = Vec::new();
    try_push(
        &mut copies,
        (table_key(fresh.root()), table_key(store.root())),
    )?;
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
        if fm.has_table(child) {
            try_push(&mut copies, (table_key(child), table_key(id)))?;
        }
        if fresh.lookup(child, 0, KEY_MAX)?.is_some() {
            let g = store.lock_child(parent, id, LockMode::Exclusive)?;
            try_push(&mut stack, (child, None, Some(g)))?;
        }
    }
    drop(root);
    *m = fm;
    // The kept blocks are the fresh load's, the same tree in `store` now; its tables are
    // named by the chains of `store`.
    let relax = || host.relax();
    crate::mem::sort_yielding(&mut copies, |c| *c, &relax)?;
    for (k, (t, _)) in m.tables.iter_mut().enumerate() {
        if k % crate::mem::SORT_CHUNK == 0 {
            relax();
        }
        let i = copies
            .binary_search_by_key(&*t, |(from, _)| *from)
            .map_err(|_| Error::Invalid)?;
        *t = copies[i].1;
    }
    sort_tables(&mut m.tables, &relax)?;
    m.changes = store.changes();
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
