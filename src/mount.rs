//! Nodes on volumes: a PFS of a HAMMER2 volume loaded into a node store ([`load`]), and a
//! node store committed back to its volume as one copy-on-write transaction ([`commit`]).
//!
//! The store holds the PFS's chains as on media (HAMMER2-FACTS §4a): the PFS root, every
//! inode of its index, every directory's DIRENTs, every file's DATA blocks, each with its
//! key, keybits, type, methods, flags, TIDs and `data_off`; DATA blocks and long names as
//! stored (compressed data stay compressed, with their method). [`load_cached`] leaves the
//! DATA blocks and the inodes on the media, read on demand through [`payload::DevSource`]
//! within a byte budget ([`crate::store::cache`]). Indirect blocks are
//! structure only in the store (it shapes its own tables); the ones on the media are read
//! by a commit where it changes them.
//!
//! A commit writes what changed and the path above it, as HAMMER2's flush does: the store
//! journals the place of every change ([`crate::store::flush`]), and the commit visits only
//! those places and the inodes above them ([`flush`]), patching each table as last
//! committed. A sync that changes k files of a big PFS visits, reads and writes their
//! blocks, their inodes and the indirect blocks above them (O(k · depth)), then the PFS
//! root, the super-root and a header.

mod ahead;
mod flush;
#[cfg(feature = "std")]
pub mod image;
pub mod join;
pub mod payload;

pub use ahead::{commit_ahead, write_ahead, WriteAhead, MAX_AHEAD, PLACE_BYTES};

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::host::{Host, LockMode};
use crate::media::{
    Blockref, InodeData, VolumeHeader, BREF_TYPE_DATA, BREF_TYPE_DIRENT, BREF_TYPE_INDIRECT,
    BREF_TYPE_INODE, CHECK_ISCSI32, CHECK_XXHASH64, DIRHASH_VISIBLE, KEY_MAX,
};
use crate::mem::try_push;
use crate::store::cache::PayVer;
use crate::store::{Body, ChainId, ChainStore, Hint, Layout, PayloadSource, Store};
use crate::volume::scan::Flow;
use crate::volume::space::{SpaceCache, TreeId};
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
    /// The tree `pfs_bref` belongs to: the volume header it was loaded from or last
    /// committed. A volume whose header is another was written by someone else since.
    tree: TreeId,
    /// What the trees of the volume's header copies reach, learned by the last commit (none
    /// before the first, or after a failed one): the next commit reads none of them again.
    space: Option<Box<SpaceCache>>,
    io: MountIo,
}

/// Blocks and bytes the device moved for a PFS: its load, and its last commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountIo {
    /// What [`load`] (or the last [`reload`]) read.
    pub load: IoCount,
    /// What the last [`commit`] read and wrote (zero before the first).
    pub commit: IoCount,
    /// Places (changed children and the inodes above them) the last commit visited.
    pub visited: u64,
    /// Indirect blocks the last commit made by splitting a full block.
    pub splits: u64,
    /// Tables the last commit rebuilt whole: changes no split could place.
    pub rebuilt: u64,
    /// Tables the last commit built whole that held no indirect block before, and far
    /// fewer entries than it inserted.
    pub built: u64,
    /// DATA blocks written ahead of the last commit that it took ([`commit_ahead`]).
    pub ahead: u64,
}

impl Mounted {
    /// Whether `store` may differ from what its volume holds (what was loaded or last
    /// committed): whether its journal names a change since (no chain is looked at).
    pub fn changed(&self, store: &Store) -> Result<bool> {
        Ok(store.journal_len() != 0)
    }

    /// The PFS's label.
    pub fn label(&self) -> &[u8] {
        &self.label
    }

    /// Blocks read and written by the load and by the last commit.
    pub fn io(&self) -> MountIo {
        self.io
    }
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
/// called with no chain of the store locked: a host that blocks in it (a stopped terminal)
/// holds nothing up.
pub fn load_with_progress<D: BlockDev>(
    host: &'static dyn Host,
    vol: &Volume<D>,
    label: &[u8],
    progress: &mut dyn FnMut(u64),
) -> Result<(Store, Mounted)> {
    load_with(host, vol, label, Payloads::Resident, progress)
}

/// [`load_with_progress`] into a store that keeps DATA payloads and inodes on the media and
/// reads them on demand through `source`, at most `budget` bytes of them cached
/// ([`crate::store::cache`]; [`payload::DevSource`] reads them from the volume's device).
/// Only chain headers, inodes and DIRENTs are read by the load, and the inodes are left on
/// the media too once their tables are known: a damaged DATA block, or an inode damaged
/// after the load, is met, as EIO for its chain, when it is read.
pub fn load_cached<D: BlockDev>(
    host: &'static dyn Host,
    vol: &Volume<D>,
    label: &[u8],
    source: Box<dyn PayloadSource>,
    budget: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<(Store, Mounted)> {
    load_with(
        host,
        vol,
        label,
        Payloads::Source(source, budget, 0),
        progress,
    )
}

/// [`load_cached`] that also keeps the chains in memory near `chain_budget` bytes (as
/// [`Store::chain_bytes`] counts them), while it loads and after
/// ([`Store::set_chain_budget`]): completed clean ranges of the tables leave memory and are
/// read back from the volume when a walk needs them ([`crate::store::evict`]). The host
/// evicts ([`Store::evict_to`]) where it commits, every sync thread frozen, whenever the
/// pinned alarm rings.
pub fn load_bounded<D: BlockDev>(
    host: &'static dyn Host,
    vol: &Volume<D>,
    label: &[u8],
    source: Box<dyn PayloadSource>,
    (budget, chain_budget): (usize, usize),
    progress: &mut dyn FnMut(u64),
) -> Result<(Store, Mounted)> {
    let payloads = Payloads::Source(source, budget, chain_budget);
    load_with(host, vol, label, payloads, progress)
}

/// Where a load puts DATA payloads.
enum Payloads {
    /// Read into the store.
    Resident,
    /// Left on the media, read through a source within a budget; the chains in memory
    /// kept near the second (0: all kept).
    Source(Box<dyn PayloadSource>, usize, usize),
    /// Left on the media with no source: a scratch store whose chains are only copied
    /// into a store that has one ([`reload`]).
    Headers,
}

fn load_with<D: BlockDev>(
    host: &'static dyn Host,
    vol: &Volume<D>,
    label: &[u8],
    payloads: Payloads,
    progress: &mut dyn FnMut(u64),
) -> Result<(Store, Mounted)> {
    let start = vol.io();
    let (mut store, pfs_bref, mut todo) = load_root(host, vol, label)?;
    let (lazy, chain_budget) = match payloads {
        Payloads::Resident => (false, 0),
        Payloads::Source(source, budget, chains) => {
            store.set_payload_source(source, budget);
            store.set_chain_budget(chains);
            (true, store.chain_budget())
        }
        Payloads::Headers => (true, 0),
    };
    let mut ld = Loading {
        lazy,
        chain_budget,
        nested: false,
        loaded: 0,
        reported: 0,
        top_inum: 0,
        progress,
    };
    let top_inum = load_tables(vol, &store, &mut todo, &mut ld)?;
    let found = Found {
        pfs_bref,
        top_inum,
        tree: TreeId::of(vol.header()),
        load: vol.io().since(&start),
    };
    let mounted = loaded(&store, label, found)?;
    Ok((store, mounted))
}

/// What a load found on the media, for [`loaded`].
struct Found {
    pfs_bref: Blockref,
    /// The highest inode number of the PFS's index.
    top_inum: u64,
    tree: TreeId,
    load: IoCount,
}

/// A table still to load: its chain, its blockset on the media, and the inode block holding it.
type Table = (ChainId, [Blockref; crate::media::SET_COUNT], Blockref);

/// Chains a load inserts between two looks at the chains' memory.
const LOAD_EVICT_EVERY: u64 = 1024;

/// A load's progress and its bound on the chains in memory.
struct Loading<'p> {
    lazy: bool,
    /// Keep the chains in memory near this many bytes, evicting completed ranges (0: keep
    /// every chain).
    chain_budget: usize,
    /// An inode was met outside the PFS root's table: its table waits on the queue, so no
    /// chain may leave memory until the load ends.
    nested: bool,
    loaded: u64,
    reported: u64,
    top_inum: u64,
    progress: &'p mut dyn FnMut(u64),
}

/// Load every table queued on `todo` (the store chain, its on-media blockset) into `store`,
/// and the tables of the inodes met; the highest inode number of the PFS root's table.
/// `lazy`: DATA blocks are left on the media. Out of line with small frames, as everything
/// under its device reads.
#[inline(never)]
fn load_tables<D: BlockDev>(
    vol: &Volume<D>,
    store: &Store,
    todo: &mut Vec<Table>,
    ld: &mut Loading<'_>,
) -> Result<u64> {
    while let Some((parent, set, home)) = todo.pop() {
        load_table(vol, store, (parent, &set, &home), todo, ld, None)?;
    }
    // Every table complete: all of it may leave memory.
    bound(store, ld, &[None, None])?;
    Ok(ld.top_inum)
}

/// Load the table `t` (of chain `t.0`) into `store`, streaming its blockrefs in key order,
/// the chain held exclusively but while the progress callback runs. An inode's own table is
/// loaded right after the inode (depth first: everything before the scan's place is then
/// complete, and may leave memory, see [`Store::evict`]), unless `t` is itself such a table
/// (`outer`: the table above, with the key it is at), whose inodes are queued.
#[inline(never)]
fn load_table<D: BlockDev>(
    vol: &Volume<D>,
    store: &Store,
    (parent, set, home): (ChainId, &[Blockref; crate::media::SET_COUNT], &Blockref),
    todo: &mut Vec<Table>,
    ld: &mut Loading<'_>,
    outer: Option<(ChainId, u64)>,
) -> Result<()> {
    let host = store.host();
    let mut held = Some(store.lock(parent, LockMode::Exclusive)?);
    let mut count = 0usize;
    let mut fail = None;
    let scanned = vol.scan_tables(set, &mut |b| {
        host.relax();
        // The indirect blocks are the store's own to shape.
        if b.btype == BREF_TYPE_INDIRECT {
            return Ok(Flow::Continue);
        }
        let step = (|| -> Result<()> {
            ld.loaded += 1;
            count += 1;
            if count == crate::media::SET_COUNT + 1 {
                // Where its clean ranges are read back from, once they may leave memory.
                store.set_home(parent, home)?;
            }
            if parent == store.root() && b.key & DIRHASH_VISIBLE == 0 {
                ld.top_inum = ld.top_inum.max(b.key);
            }
            if held.is_none() {
                held = Some(store.lock(parent, LockMode::Exclusive)?);
            }
            let g = held.as_ref().ok_or(Error::Invalid)?;
            let mark = todo.len();
            if ld.lazy && b.btype == BREF_TYPE_DATA && b.size_radix() != 0 {
                store.insert_on_media(g, *b)?;
            } else {
                load_chain(vol, store, g, (*b, ld.lazy), todo)?;
            }
            if todo.len() > mark {
                match outer {
                    None => {
                        // On the heap: this frame is under the nested table's device reads.
                        let t = crate::mem::try_box(todo.pop().ok_or(Error::Invalid)?)?;
                        // Its chain is locked from the root down: this one goes first.
                        held = None;
                        let inner = (t.0, &t.1, &t.2);
                        load_table(vol, store, inner, todo, ld, Some((parent, b.key)))?;
                    }
                    Some(_) => ld.nested = true,
                }
            }
            if ld.loaded % LOAD_EVICT_EVERY == 0 {
                bound(store, ld, &[Some((parent, b.key)), outer])?;
            }
            if ld.loaded - ld.reported >= LOAD_PROGRESS_EVERY {
                ld.reported = ld.loaded;
                // No chain locked while a host shows it (it may block in a stopped
                // terminal); the tables above this one are not held either.
                held = None;
                (ld.progress)(ld.loaded);
            }
            Ok(())
        })();
        match step {
            Ok(()) => Ok(Flow::Continue),
            Err(e) => {
                fail = Some(e);
                Ok(Flow::Stop)
            }
        }
    });
    if let Some(e) = fail {
        return Err(e);
    }
    scanned.map_err(read_err)
}

/// Evict completed ranges while the load's chains are past its budget: in the tables being
/// loaded (`at`: each with the key its scan is at), only what lies before that key.
fn bound(store: &Store, ld: &Loading<'_>, at: &[Option<(ChainId, u64)>; 2]) -> Result<()> {
    if ld.chain_budget == 0 || ld.nested || store.chain_bytes() <= ld.chain_budget {
        return Ok(());
    }
    let mut horizons = [(store.root(), 0u64); 2];
    let mut n = 0;
    for (id, key) in at.iter().flatten() {
        horizons[n] = (*id, *key);
        n += 1;
    }
    let keep = ld.chain_budget / 2 / crate::store::evict::CHAIN_BYTES;
    store.evict_loading(keep, &horizons[..n])?;
    Ok(())
}

/// The [`Mounted`] of PFS `label` loaded into `store` as `found` says: the PFS root's inode
/// allocator past every inode of its index, every chain flushed and the journal started.
/// Out of line: not under the load's device reads.
#[inline(never)]
fn loaded(store: &Store, label: &[u8], found: Found) -> Result<Mounted> {
    let Found {
        pfs_bref,
        top_inum,
        tree,
        load,
    } = found;
    if store.meta(store.root())?.pfs_inum < top_inum {
        store.settle_pfs_inum(top_inum)?;
    }
    store.settle_all()?;
    let label = crate::mem::try_to_vec(label)?;
    Ok(Mounted {
        pfs_bref,
        label,
        tree,
        space: None,
        io: MountIo {
            load,
            ..MountIo::default()
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
) -> Result<(Store, Blockref, Vec<Table>)> {
    let (pfs_bref, mut root) = vol.pfs_entry_box(label).map_err(read_err)?;
    let mut todo = Vec::new();
    let table = match root.meta.is_directdata() {
        true => None,
        false => Some(root.blockset()?),
    };
    crate::store::inode::clear_table(&mut root);
    let store = root_store(host, root, &pfs_bref)?;
    if let Some(set) = table {
        try_push(&mut todo, (store.root(), set, pfs_bref))?;
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

/// Load the chain `b` of a table into `store` under the parent `g`: its block read, an
/// inode's own table queued on `todo`. `lazy`: an inode is left on the media once its
/// table is known, with its header as read (its check code the block's), the store keeping
/// only whether it is a directory.
#[inline(never)]
fn load_chain<D: BlockDev>(
    vol: &Volume<D>,
    store: &Store,
    g: &crate::store::ChainGuard<'_>,
    (b, lazy): (Blockref, bool),
    todo: &mut Vec<Table>,
) -> Result<()> {
    let body = match b.btype {
        BREF_TYPE_INODE => {
            let mut ino = vol.read_inode_box(&b).map_err(read_err)?;
            let table = (!ino.meta.is_directdata()).then(|| ino.blockset());
            let id = if lazy {
                let summary = crate::store::inode::InodeSummary::of(&ino);
                let id = store.insert_inode_on_media(g, b, summary)?;
                crate::store::inode::clear_table(&mut ino);
                store.offer(id, &b, Body::Inode(ino));
                id
            } else {
                crate::store::inode::clear_table(&mut ino);
                store.insert(g, b, Body::Inode(ino))?
            };
            if let Some(set) = table {
                try_push(todo, (id, set?, b))?;
            }
            return Ok(());
        }
        BREF_TYPE_DIRENT if b.size_radix() == 0 => Body::Data(Vec::new()),
        BREF_TYPE_DIRENT | BREF_TYPE_DATA => {
            let bytes = vol.read_block(&b).map_err(read_err)?;
            Body::Data(bytes)
        }
        t => return Err(read_err(ReadError::new(Cause::WrongType(t), b.data_off))),
    };
    store.insert(g, b, body)?;
    Ok(())
}

/// Write `payload` as `b`'s block in `txn`, keeping the TID the store gave `b` (the writer
/// stamps the transaction's; the synchronizer's modify_tid must be what HAMMER2 sees).
fn place<D: BlockDev>(txn: &mut Txn<'_, D>, b: &Blockref, payload: &[u8]) -> Result<Blockref> {
    place_known(txn, b, payload, None)
}

/// [`place`] with `payload`'s check code by `b`'s method, if known ([`Txn::write_block_known`]).
fn place_known<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    b: &Blockref,
    payload: &[u8],
    known: Option<&[u8; crate::media::check::CHECK_BYTES]>,
) -> Result<Blockref> {
    let mut nb = txn.write_block_known(*b, payload, known)?;
    nb.modify_tid = b.modify_tid;
    Ok(nb)
}

/// Write `ino` as `b`'s block in `txn` (the transaction's TID), encoded as in
/// [`encoded`].
#[inline(never)]
fn write_inode<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    b: Blockref,
    ino: &InodeData,
) -> Result<Blockref> {
    txn.write_block(b, &encoded(ino)?[..])
}

/// `ino`'s on-media block, on the heap (its 1 KiB is in no frame under the device write).
/// Out of line, so the encoder's copy on the stack is gone before the block is written.
#[inline(never)]
fn encoded(ino: &InodeData) -> Result<Box<[u8; crate::media::INODE_BYTES]>> {
    crate::mem::try_box(ino.encode())
}

/// Commit `store` (loaded from `vol` by [`load`], `m`) as one copy-on-write transaction:
/// the chains the store's journal names as changed since the last commit, and the inodes
/// and indirect blocks above them, are written (everything else is kept by reference,
/// unvisited), then the PFS root, the super-root and a new volume header. Returns the
/// header written, boxed (it stays off the stack under the commit's device I/O); `m` then
/// describes the committed state.
///
/// Nothing committed changes before the header is written: on any error before it the volume
/// keeps its last commit and the journal keeps every change, for the next commit. A change
/// made while a commit runs stays in the journal for the next one, even when this one saw it;
/// a commit that finds a chain it meant to write deleted meanwhile fails with `NotFound`
/// (the CLI freezes its sync threads around a commit and the module stops them first, so only
/// a racing frontend meets it).
pub fn commit<D: BlockDev>(
    vol: &Volume<D>,
    store: &Store,
    m: &mut Mounted,
) -> Result<Box<VolumeHeader>> {
    commit_with_progress(vol, store, m, &mut |_| {})
}

/// [`commit`], calling `progress` with the number of places visited so far every
/// [`LOAD_PROGRESS_EVERY`] of them, and once more when the walk is done, before anything
/// is committed (a host shows it while a large change is written). No chain of the store is
/// locked meanwhile.
pub fn commit_with_progress<D: BlockDev>(
    vol: &Volume<D>,
    store: &Store,
    m: &mut Mounted,
    progress: &mut dyn FnMut(u64),
) -> Result<Box<VolumeHeader>> {
    commit_in(vol, store, m, None, progress)
}

/// [`commit_with_progress`], in a transaction a write-ahead opened, with the DATA blocks it
/// wrote (see [`ahead`]).
fn commit_in<'v, D: BlockDev>(
    vol: &'v Volume<D>,
    store: &Store,
    m: &mut Mounted,
    ahead: Option<(Txn<'v, D>, Vec<ahead::Placed>)>,
    progress: &mut dyn FnMut(u64),
) -> Result<Box<VolumeHeader>> {
    let (h, news) = commit_tree(vol, store, m, ahead, progress)?;
    // The header names the tree with every change the journal had when the commit began.
    store.journal_drain(news.touched);
    learn(store, news);
    // The PFS root's table is read back from its new block.
    store.set_home(store.root(), &m.pfs_bref)?;
    Ok(h)
}

/// The transaction of [`commit_with_progress`], up to and with the volume header; once it
/// returns, `m` describes the tree committed (the journal entries it wrote are dropped and
/// the store learns where its chains went afterwards: neither can fail).
fn commit_tree<'v, D: BlockDev>(
    vol: &'v Volume<D>,
    store: &Store,
    m: &mut Mounted,
    ahead: Option<(Txn<'v, D>, Vec<ahead::Placed>)>,
    progress: &mut dyn FnMut(u64),
) -> Result<(Box<VolumeHeader>, Learned)> {
    // An untracked store names none of its changes: committing it would write the root alone.
    if !store.is_tracked() {
        return Err(Error::Invalid);
    }
    let start = vol.io();
    // The journal as it is now: a change after this is in the next commit's (a change the
    // walk sees anyway is written twice, never lost).
    let touches = store.journal_snapshot()?;
    let places = flush::dirty_places(store, &touches)?;
    let (mut txn, mut placed) = match ahead {
        // Begun a while ago: another writer may have committed since.
        Some((txn, placed)) => {
            txn.still_current()?;
            (txn, placed)
        }
        None => (begin(vol, m)?, Vec::new()),
    };
    let relax = || store.host().relax();
    crate::mem::sort_yielding(&mut placed, |p| (p.id.idx, p.id.gen, p.ver), &relax)?;
    let w = flush::walk(
        vol,
        &mut txn,
        (store, &places),
        &mut placed,
        &m.pfs_bref,
        progress,
    )?;
    let new_sroot = write_sroot(vol, &mut txn, &m.pfs_bref, &w.pfs_bref)?;
    // A block written ahead for a chain changed or deleted since is in no tree: its space
    // goes back, as a block the new tree no longer holds.
    let unused = placed.iter().filter(|p| !p.used).map(|p| &p.now.data_off);
    for (i, off) in w.gone.iter().chain(unused).enumerate() {
        if i % crate::mem::SORT_CHUNK == 0 {
            relax();
        }
        txn.drop_block(*off)?;
    }
    let (h, space) = txn.commit_cached(new_sroot)?;
    // Nothing fallible from here on: `m` must describe the tree the header now names.
    m.pfs_bref = w.pfs_bref;
    follow(m, &h, space);
    m.io.commit = vol.io().since(&start);
    m.io.visited = w.visited;
    m.io.ahead = placed.iter().filter(|p| p.used).count() as u64;
    (m.io.splits, m.io.rebuilt, m.io.built) = (w.shaped.splits, w.shaped.rebuilt, w.shaped.built);
    Ok((
        h,
        Learned {
            moved: w.moved,
            root_inum: w.root_inum,
            touched: touches.len(),
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

/// Write `cid`'s DATA or long-name block in `txn` (a payload left on the media is read
/// back first); its blockref written and the payload version written. Out of line, as
/// everything under a commit's device writes.
#[inline(never)]
fn place_data<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    store: &Store,
    cid: ChainId,
    scratch: &mut Vec<u8>,
) -> Result<(Blockref, PayVer)> {
    // A changed payload in memory is written from where it is, lent for the write: no copy.
    // The walk holds no chain lock and waits for nobody while the loan is out.
    if let Some((cb, loan, carried, ver)) = store.lend_data(cid)? {
        return Ok((place_carried(txn, &cb, loan.bytes(), carried)?, ver));
    }
    let (cb, sealed, ver) = store.read_versioned_into(cid, core::mem::take(scratch))?;
    let carried = sealed.carried_check();
    let Body::Data(bytes) = sealed.into_body() else {
        return Err(Error::Invalid);
    };
    let nb = place_carried(txn, &cb, &bytes, carried)?;
    // The next block is copied into this buffer: no fresh memory, and it is in the cache.
    *scratch = bytes;
    Ok((nb, ver))
}

/// [`place_known`] with the check code `payload` came in with, when `b`'s method is its.
///
/// DEVIATION (not a bug fix): HAMMER2 computes a block's check code when it flushes it
/// (`hammer2_chain_setcheck`). A payload that came in as a sealed copy of a focus block and
/// is unchanged since (read under one lock with its code and version) is written as those
/// very bytes: the code carried with them, which their read verified, is theirs, so it is
/// kept, not hashed again (the block is padded, or of another method: hashed).
fn place_carried<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    b: &Blockref,
    payload: &[u8],
    carried: Option<(u8, [u8; crate::media::check::CHECK_BYTES])>,
) -> Result<Blockref> {
    let known = carried.filter(|(method, _)| *method == b.check_method());
    place_known(txn, b, payload, known.as_ref().map(|(_, code)| code))
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

/// What the store learns from a commit: where the chains whose blocks were written went, and
/// the PFS root's inode allocator.
struct Learned {
    moved: Vec<(ChainId, Blockref, PayVer)>,
    root_inum: u64,
    /// The journal entries the commit wrote: the first ones.
    touched: usize,
}

/// Tell `store` what the media now say after a commit: where the chains written went (they
/// count as flushed), and the PFS root's inode allocator (raised only: an inode created while the
/// commit ran has a number past it). Neither is a change of the store.
/// A chain deleted since is skipped (its deletion is journaled).
fn learn(store: &Store, news: Learned) {
    // Only a chain gone (or a root that is no inode) fails here; nothing is left to learn.
    let _ = store.settle_pfs_inum(news.root_inum);
    for (i, (id, nb, ver)) in news.moved.into_iter().enumerate() {
        if i % crate::mem::SORT_CHUNK == 0 {
            store.host().relax();
        }
        let _ = store.set_flushed(id, &nb, ver);
    }
}

/// Replace everything `store` holds by what PFS `m.label()` of `vol` holds now (its last
/// commit): a node's remount, or, when the store's changes were never committed, its crash.
/// The PFS is loaded into a scratch store first, so a damaged volume fails here with `store`
/// untouched (in a store reading payloads on demand, only damaged metadata: a DATA block
/// is not read here, and a damaged one is EIO for its chain when it is read); then, under
/// the PFS root's exclusive lock, the old chains are deleted and the loaded ones copied in. The store stays at its address (sync threads and scan pools keep
/// their references), but a pass reading it meanwhile would see a tree half replaced: every
/// thread of the cluster must be frozen or stopped around the call.
pub fn reload<D: BlockDev>(vol: &Volume<D>, store: &Store, m: &mut Mounted) -> Result<()> {
    let host = store.host();
    let label = crate::mem::try_to_vec(&m.label)?;
    // A store reading payloads on demand gets its DATA chains as on the media, unread.
    let payloads = match store.has_payload_source() {
        true => Payloads::Headers,
        false => Payloads::Resident,
    };
    let (fresh, fm) = load_with(host, vol, &label, payloads, &mut |_| {})?;
    // The copy is no change to commit: untracked until settled below (a failure from here
    // on leaves a store no commit takes).
    store.untrack();
    let root = store.lock_root(LockMode::Exclusive);
    while let Some((c, _)) = store.lookup(store.root(), 0, KEY_MAX)? {
        host.relax();
        let g = store.lock_child(&root, c, LockMode::Exclusive)?;
        store.delete(&root, g)?;
    }
    let (rb, rbody) = fresh.read(fresh.root())?;
    store.replace(&root, rb, rbody)?;
    // Pre-order copy: a stack of (chain of `fresh`, the last child copied, its copy's guard in
    // `store`, the walk's place in its table); the next child of each is found by stepping on
    // from the last one copied (`fresh` does not change: every step steps).
    let mut stack = Vec::new();
    try_push(
        &mut stack,
        (fresh.root(), None::<Blockref>, None, Hint::default()),
    )?;
    while let Some(top) = stack.last_mut() {
        host.relax();
        let next = match top.1 {
            None => fresh.lookup_from(top.0, 0, KEY_MAX, &mut top.3)?,
            Some(p) => fresh.next_from(top.0, &p, KEY_MAX, &mut top.3)?,
        };
        let Some((child, cb)) = next else {
            stack.pop();
            continue;
        };
        top.1 = Some(cb);
        let parent = match stack.last().and_then(|t| t.2.as_ref()) {
            Some(g) => g,
            None => &root,
        };
        let id = match fresh.is_on_media(child)? {
            true if cb.btype == BREF_TYPE_INODE => {
                let summary = fresh.inode_summary(child)?.ok_or(Error::Invalid)?;
                store.insert_inode_on_media(parent, cb, summary)?
            }
            true => store.insert_on_media(parent, cb)?,
            false => {
                let (b, body) = fresh.read(child)?;
                store.insert(parent, b, body)?
            }
        };
        if let Some(h) = fresh.home(child)? {
            store.set_home(id, &h)?;
        }
        if fresh.lookup(child, 0, KEY_MAX)?.is_some() {
            let g = store.lock_child(parent, id, LockMode::Exclusive)?;
            try_push(&mut stack, (child, None, Some(g), Hint::default()))?;
        }
    }
    drop(root);
    if let Some(h) = fresh.home(fresh.root())? {
        store.set_home(store.root(), &h)?;
    }
    *m = fm;
    // `store` holds the tree the volume holds: every chain flushed, nothing journaled.
    store.settle_all()?;
    Ok(())
}

/// Whether chains `a` of `ours` and `b` of `theirs`, at the same place, hold the same thing
/// (headers' kind and payload; a PFS root only its shared fields, as the synchronizer copies).
/// A payload on the media is compared without reading it where the stores' resident state
/// answers ([`same_unread`]).
fn same_chain(ours: &Store, a: ChainId, theirs: &Store, b: ChainId) -> Result<bool> {
    let (ab, bb) = (ours.bref(a)?, theirs.bref(b)?);
    let head = |x: &Blockref| {
        let name = (x.btype == BREF_TYPE_DIRENT && x.size_radix() == 0).then_some(x.check);
        (x.btype, x.keybits, x.methods, x.size_radix(), x.embed, name)
    };
    if head(&ab) != head(&bb) {
        return Ok(false);
    }
    let root = a == ours.root();
    if !root {
        if let Some(same) = same_unread(ours, (a, &ab), theirs, (b, &bb))? {
            return Ok(same);
        }
    }
    let (_, abody) = ours.read(a)?;
    let (_, bbody) = theirs.read(b)?;
    Ok(match (&abody, &bbody) {
        (Body::Inode(x), Body::Inode(y)) if root => {
            crate::store::inode::pfsroot_fields_eq(&x.meta, &y.meta)
        }
        // Field by field: the same as their bytes (integers, no padding), without two
        // encoded copies in the frame.
        (Body::Inode(x), Body::Inode(y)) => x == y,
        (Body::Data(x), Body::Data(y)) => x == y,
        _ => false,
    })
}

/// [`same_chain`] for chains (not PFS roots) of equal headers, at least one with its payload
/// on the media, answered from what the stores keep in memory: two inodes by their
/// summaries' digests (their check codes cover their block tables too, which differ between
/// volumes holding the same files at other offsets); two DATA blocks on the media by their
/// check codes, which cover the blocks as stored, as [`same_chain`] compares them. `None`
/// when only the payloads can answer (both in memory, or a check method carrying no code).
///
/// DEVIATION (not a bug fix): equal digests or check codes count as equal payloads without
/// reading them, so a join does not read every block of both volumes at each start. Two
/// different payloads under one code pass here as equal, left unmarked: what HAMMER2 does for
/// every chain of equal modify_tid.
#[inline(never)]
fn same_unread(
    ours: &Store,
    (a, ab): (ChainId, &Blockref),
    theirs: &Store,
    (b, bb): (ChainId, &Blockref),
) -> Result<Option<bool>> {
    let (ma, mb) = (ours.is_on_media(a)?, theirs.is_on_media(b)?);
    if !ma && !mb {
        return Ok(None);
    }
    if ab.btype == BREF_TYPE_INODE {
        return Ok(match (ours.inode_summary(a)?, theirs.inode_summary(b)?) {
            (Some(x), Some(y)) => Some(x == y),
            _ => None,
        });
    }
    let coded = matches!(ab.check_method(), CHECK_XXHASH64 | CHECK_ISCSI32);
    Ok((ab.btype == BREF_TYPE_DATA && ma && mb && coded).then_some(ab.check == bb.check))
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
        // Children merged by key: one on one side only, or of another shape, marks `a`. Each
        // table is walked child after child, each step from the last one's place.
        let (mut hx, mut hy) = (Hint::default(), Hint::default());
        let mut x = ours.lookup_from(a, 0, KEY_MAX, &mut hx)?;
        let mut y = master.lookup_from(b, 0, KEY_MAX, &mut hy)?;
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
                    x = ours.next_from(a, &xb, KEY_MAX, &mut hx)?;
                    y = master.next_from(b, &yb, KEY_MAX, &mut hy)?;
                }
                (Some((_, xb)), Some((_, yb))) if xb.key < yb.key => {
                    differs = true;
                    x = ours.next_from(a, &xb, KEY_MAX, &mut hx)?;
                }
                (Some(_), Some((_, yb))) => {
                    differs = true;
                    y = master.next_from(b, &yb, KEY_MAX, &mut hy)?;
                }
                (Some((_, xb)), None) => {
                    differs = true;
                    x = ours.next_from(a, &xb, KEY_MAX, &mut hx)?;
                }
                (None, Some((_, yb))) => {
                    differs = true;
                    y = master.next_from(b, &yb, KEY_MAX, &mut hy)?;
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
