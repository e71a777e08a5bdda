//! The walk of a commit: only the places the store's journal names and the paths above them
//! (HAMMER2's flush descends only into chains flagged MODIFIED or UPDATE).
//!
//! Each table visited is the inode's table as last committed, read from the media along the
//! changed keys only and patched there: an entry replaced, removed or inserted; an insert
//! into a full block gives that block a new indirect block holding a key range of its
//! entries, as `hammer2_chain_create_indirect` does, so it costs the blocks on one path. The
//! indirect blocks touched or made are written anew, the others kept by reference unread. A
//! change no split places (an entry's range spanning its neighbours') rebuilds that one
//! table from its entries on the media and the changes. The blocks
//! a commit takes out of the tree are named from the entries it replaced or removed (a
//! removed inode: the subtree below it), so the space to free costs what changed too.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::ahead::{take_placed, Placed};
use super::{encoded, place, place_data, read_err, table_of, LOAD_PROGRESS_EVERY};
use crate::media::indkey;
use crate::media::{
    enc_methods, ind_count, key_end, Blockref, BREF_TYPE_DATA, BREF_TYPE_DIRENT, BREF_TYPE_EMPTY,
    BREF_TYPE_INDIRECT, BREF_TYPE_INODE, CHECK_DISABLED, CHECK_ISCSI32, CHECK_NONE, CHECK_XXHASH64,
    COMP_NONE, DIRHASH_VISIBLE, IND_RADIX_MIN, IND_RADIX_NOM, SET_COUNT,
};
use crate::mem::try_push;
use crate::store::cache::PayVer;
use crate::store::flush::Touch;
use crate::store::{Body, ChainId, Store};
use crate::volume::scan::Flow;
use crate::volume::txn::METHODS;
use crate::volume::{BlockDev, Cause, ReadError, Txn, Volume};
use crate::{Error, Result};

/// A place of the store: the parent chain (as a sortable pair) and the child's key.
type Place = ((u32, u32), u64);

fn pair(id: ChainId) -> (u32, u32) {
    (id.idx, id.gen)
}

/// Every place `touches` names in a chain still reachable from the PFS root, and every
/// place on the path above it, sorted, each once.
#[inline(never)]
pub(super) fn dirty_places(store: &Store, touches: &[Touch]) -> Result<Vec<Place>> {
    let host = store.host();
    let mut out: Vec<Place> = Vec::new();
    // The table whose path was pushed last: changes come in runs in one table.
    let mut last = None;
    for t in touches {
        host.relax();
        let Some(table) = t.table else { continue };
        if last == Some(table) {
            try_push(&mut out, (pair(table), t.key))?;
            continue;
        }
        let mark = out.len();
        try_push(&mut out, (pair(table), t.key))?;
        let mut cur = table;
        // A chain deleted since (or being deleted) is left with its whole subtree: the
        // deletion's own entry names its place.
        let alive = loop {
            if cur == store.root() {
                break true;
            }
            let up = match (store.parent(cur), store.bref(cur)) {
                (Ok(p), Ok(b)) => p.map(|p| (p, b.key)),
                (Err(Error::NotFound), _) | (_, Err(Error::NotFound)) => None,
                (Err(e), _) | (_, Err(e)) => return Err(e),
            };
            let Some((p, key)) = up else { break false };
            try_push(&mut out, (pair(p), key))?;
            cur = p;
        };
        match alive {
            true => last = Some(table),
            false => {
                out.truncate(mark);
                last = None;
            }
        }
    }
    crate::mem::sort_yielding(&mut out, |p| *p, &|| host.relax())?;
    out.dedup();
    Ok(out)
}

/// One block of an old table read so far: the inode's blockset (node 0), an indirect block,
/// or an indirect block a split made in this commit.
struct Node {
    /// Its INDIRECT blockref: as read from the media, or (`fresh`) the key range of the block
    /// a split made; `None` for the blockset.
    bref: Option<Blockref>,
    /// Made by a split in this commit: no block on the media yet.
    fresh: bool,
    parent: usize,
    /// Its entries, empty slots left out, sorted by key.
    entries: Vec<Blockref>,
    /// Entries the block holds at most.
    cap: usize,
    /// The nodes below it, read or made: (key, keybits, node), sorted by key.
    kids: Vec<(u64, u8, usize)>,
    /// Whether it (or a block below it) changed and must be written.
    dirty: bool,
}

impl Node {
    fn range(&self) -> (u64, u64) {
        self.bref.map_or((0, u64::MAX), |b| (b.key, b.key_end()))
    }

    fn keybits(&self) -> u8 {
        self.bref.map_or(64, |b| b.keybits)
    }

    /// Where the node below it of key `key` is, or would go, in [`Node::kids`].
    fn kid_at(&self, key: u64) -> usize {
        self.kids.partition_point(|k| k.0 < key)
    }
}

/// Where a key is in an old table.
enum Spot {
    /// Entry `.1` of node `.0` is the child at the key.
    Found(usize, usize),
    /// No entry: one would go at position `.1` of node `.0`.
    Absent(usize, usize),
    /// An entry of another key (block `.0` on the media) covers the key: the table must be
    /// rebuilt.
    Covered(u64),
}

/// A table with no indirect block is built whole when its commit inserts more than this
/// many times the entries it held (see [`Frame::table`]).
const BUILD_WHOLE_RATIO: usize = 4;

/// Tries to place one entry: a split makes room for the next (at most one split per insert,
/// see [`indkey::plan`]); the bound only guards that.
const PLACE_TRIES: usize = 4;

/// The part of an inode's table as last committed that a commit read: the blocks on the
/// paths to its changed keys, and the blocks its splits made.
pub(super) struct OldTable {
    nodes: Vec<Node>,
    /// The table is a directory inode's: a split of its blockset makes a 4 KiB block.
    in_dir: bool,
    /// The `methods` of the inode's blockref: a split of its blockset takes its check.
    methods: u8,
}

fn entries_of(raw: Vec<Blockref>) -> Vec<Blockref> {
    let mut v = raw;
    v.retain(|b| b.btype != BREF_TYPE_EMPTY);
    v.sort_unstable_by_key(|b| b.key);
    v
}

impl OldTable {
    fn new(set: Option<&[Blockref; SET_COUNT]>, in_dir: bool, methods: u8) -> Result<OldTable> {
        let mut entries = Vec::new();
        entries.try_reserve_exact(SET_COUNT)?;
        if let Some(s) = set {
            entries.extend(s.iter().copied());
        }
        let mut nodes = Vec::new();
        try_push(
            &mut nodes,
            Node {
                bref: None,
                fresh: false,
                parent: 0,
                entries: entries_of(entries),
                cap: SET_COUNT,
                kids: Vec::new(),
                dirty: false,
            },
        )?;
        Ok(OldTable {
            nodes,
            in_dir,
            methods,
        })
    }

    /// The node of indirect block `b`, entry of node `n`, read when first met.
    #[inline(never)]
    fn child<D: BlockDev>(&mut self, vol: &Volume<D>, n: usize, b: Blockref) -> Result<usize> {
        let at = self.nodes[n].kid_at(b.key);
        match self.nodes[n].kids.get(at) {
            Some(&(key, keybits, k)) if key == b.key && keybits == b.keybits => return Ok(k),
            _ => {}
        }
        let raw = vol.read_table(&b).map_err(read_err)?;
        let cap = raw.len();
        let k = self.nodes.len();
        self.nodes.try_reserve(1)?;
        self.nodes[n].kids.try_reserve(1)?;
        self.nodes[n].kids.insert(at, (b.key, b.keybits, k));
        self.nodes.push(Node {
            bref: Some(b),
            fresh: false,
            parent: n,
            entries: entries_of(raw),
            cap,
            kids: Vec::new(),
            dirty: false,
        });
        Ok(k)
    }
    /// Where `key` is, reading the indirect blocks on its path.
    fn find<D: BlockDev>(&mut self, vol: &Volume<D>, key: u64) -> Result<Spot> {
        let mut n = 0;
        loop {
            vol.dev().yield_point();
            let node = &self.nodes[n];
            let e = &node.entries;
            let i = e.partition_point(|b| b.key_end() < key);
            match e.get(i).copied() {
                Some(b) if b.key <= key && b.btype == BREF_TYPE_INDIRECT => {
                    // Each level narrows the range, so the descent ends: a damaged block
                    // naming itself (or a wider range) below itself is an error, not a loop.
                    if b.keybits >= node.bref.map_or(u8::MAX, |p| p.keybits) {
                        return Err(read_err(ReadError::new(Cause::BadBlockref, b.data_off)));
                    }
                    n = self.child(vol, n, b)?;
                }
                Some(b) if b.key == key => return Ok(Spot::Found(n, i)),
                Some(b) if b.key < key => return Ok(Spot::Covered(b.data_off)),
                _ => return Ok(Spot::Absent(n, i)),
            }
        }
    }

    /// The entry at `key` as last committed.
    pub(super) fn old<D: BlockDev>(
        &mut self,
        vol: &Volume<D>,
        key: u64,
    ) -> Result<Option<Blockref>> {
        match self.find(vol, key)? {
            Spot::Found(n, i) => Ok(Some(self.nodes[n].entries[i])),
            Spot::Absent(..) => Ok(None),
            // Keys of a table as committed are each an entry's own: another entry covering
            // one is damage.
            Spot::Covered(at) => Err(read_err(ReadError::new(Cause::BadBlockref, at))),
        }
    }

    /// The number of entries the table held as last committed when they all sit in its
    /// blockset (no indirect block): then they are all in memory already.
    fn flat_len(&self) -> Option<usize> {
        let top = &self.nodes[0].entries;
        match top.iter().any(|b| b.btype == BREF_TYPE_INDIRECT) {
            true => None,
            false => Some(top.len()),
        }
    }

    fn touch(&mut self, mut n: usize) {
        loop {
            self.nodes[n].dirty = true;
            if n == 0 {
                return;
            }
            n = self.nodes[n].parent;
        }
    }

    /// Put `new` at `key` (`None`: remove it), splitting a full block on its way as HAMMER2
    /// does; false when it cannot be placed so (see [`OldTable::split`]; the caller then
    /// rebuilds the table, whatever this one holds by then).
    fn apply<D: BlockDev>(
        &mut self,
        vol: &Volume<D>,
        key: u64,
        new: Option<Blockref>,
    ) -> Result<bool> {
        for _ in 0..PLACE_TRIES {
            match (self.find(vol, key)?, new) {
                (Spot::Covered(_), _) => return Ok(false),
                (Spot::Found(n, i), Some(b))
                    if b.key_end() == self.nodes[n].entries[i].key_end() =>
                {
                    self.nodes[n].entries[i] = b;
                    self.touch(n);
                    return Ok(true);
                }
                (Spot::Found(n, i), _) => {
                    // Removed, or replaced by one of another range: that one goes in as an
                    // insert, on the next try.
                    self.nodes[n].entries.remove(i);
                    self.touch(n);
                    if new.is_none() {
                        return Ok(true);
                    }
                }
                (Spot::Absent(..), None) => return Ok(true),
                (Spot::Absent(n, i), Some(b)) => {
                    let node = &self.nodes[n];
                    let (lo, hi) = node.range();
                    // A range wider than the gap it lands in (a block grown over its
                    // neighbours' keys) is placed by no split.
                    let clear = b.key >= lo
                        && b.key_end() <= hi
                        && (i == 0 || node.entries[i - 1].key_end() < b.key)
                        && node.entries.get(i).map_or(true, |x| x.key > b.key_end());
                    if !clear {
                        return Ok(false);
                    }
                    if node.entries.len() < node.cap {
                        self.nodes[n].entries.try_reserve(1)?;
                        self.nodes[n].entries.insert(i, b);
                        self.touch(n);
                        return Ok(true);
                    }
                    if !self.split(n, &b)? {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Give the full node `n` a new indirect block for the entry `b` about to be inserted,
    /// as `hammer2_chain_create_indirect` does: its size (4 KiB right below a directory
    /// inode, 16 KiB below any other inode or indirect block, never fewer entries than `n`)
    /// and key range ([`indkey::plan`]: `hammer2_chain_indkey_dir` for inodes and directory
    /// entries, `hammer2_chain_indkey_file` for data blocks), the entries of `n` in that range
    /// moved into it (the blocks below them kept as they are), its blockref in their place.
    /// False when no range makes room.
    #[inline(never)]
    fn split(&mut self, n: usize, b: &Blockref) -> Result<bool> {
        if !matches!(b.btype, BREF_TYPE_DATA | BREF_TYPE_DIRENT | BREF_TYPE_INODE) {
            // HAMMER2 makes indirect blocks for these types only.
            return Ok(false);
        }
        let node = &self.nodes[n];
        let radix = match n == 0 && self.in_dir {
            true => IND_RADIX_MIN,
            false => IND_RADIX_NOM,
        };
        let ncount = ind_count(radix).max(node.cap);
        let methods = indirect_methods(node.bref.map_or(self.methods, |p| p.methods));
        let table = indkey::Table {
            keybits: node.keybits(),
            cap: node.cap,
        };
        let child = indkey::Child {
            key: b.key,
            keybits: b.keybits,
            btype: b.btype,
        };
        let Some(plan) = indkey::plan(&node.entries, table, &child, ncount) else {
            return Ok(false);
        };
        let end = key_end(plan.key, plan.keybits);
        let moving = {
            let a = node.entries.partition_point(|e| e.key < plan.key);
            a..node.entries.partition_point(|e| e.key <= end)
        };
        let kids = node.kid_at(plan.key)..node.kids.partition_point(|k| k.0 <= end);
        // Everything allocated before anything changes.
        let mut entries = Vec::new();
        entries.try_reserve_exact(ncount)?;
        entries.extend_from_slice(&node.entries[moving.clone()]);
        let mut below = Vec::new();
        below.try_reserve_exact(kids.len())?;
        below.extend_from_slice(&node.kids[kids.clone()]);
        self.nodes[n].entries.try_reserve(1)?;
        self.nodes[n].kids.try_reserve(1)?;
        self.nodes.try_reserve(1)?;
        let k = self.nodes.len();
        for &(_, _, kid) in &below {
            self.nodes[kid].parent = k;
        }
        let mut ib = Blockref::new(BREF_TYPE_INDIRECT, plan.key, plan.keybits);
        ib.methods = methods;
        self.nodes.push(Node {
            bref: Some(ib),
            fresh: true,
            parent: n,
            entries,
            cap: ncount,
            kids: below,
            dirty: false,
        });
        let node = &mut self.nodes[n];
        node.entries.splice(moving, core::iter::once(ib));
        node.kids
            .splice(kids, core::iter::once((plan.key, plan.keybits, k)));
        self.touch(k);
        Ok(true)
    }

    /// Write every indirect block that changed or a split made (an emptied one leaves its
    /// parent), naming the old ones in `gone`, and put the table's new blockset in `set`;
    /// the number of blocks splits made that were written (not emptied meanwhile).
    fn finish<D: BlockDev>(
        mut self,
        txn: &mut Txn<'_, D>,
        gone: &mut Vec<u64>,
        set: &mut [Blockref],
    ) -> Result<u64> {
        let mut made = 0;
        // The deepest first: a block's entries are final once the blocks below it are
        // written. (A split moves nodes read earlier below a node made later.)
        let mut order: Vec<(usize, usize)> = Vec::new();
        for n in 1..self.nodes.len() {
            if !self.nodes[n].dirty {
                continue;
            }
            let (mut p, mut depth) = (n, 0usize);
            while p != 0 {
                p = self.nodes[p].parent;
                depth += 1;
                // Each level narrows the range.
                if depth > 64 {
                    return Err(Error::Invalid);
                }
            }
            try_push(&mut order, (depth, n))?;
        }
        let relax = || txn.volume().dev().yield_point();
        crate::mem::sort_yielding(&mut order, |&(d, n)| (usize::MAX - d, n), &relax)?;
        for (_, n) in order {
            txn.volume().dev().yield_point();
            let node = &self.nodes[n];
            let old = node.bref.ok_or(Error::Invalid)?;
            if !node.fresh {
                try_push(gone, old.data_off)?;
            }
            let new = match node.entries.is_empty() {
                true => None,
                false => Some(write_indirect(txn, &old, &node.entries, node.cap)?),
            };
            made += u64::from(node.fresh && new.is_some());
            let p = node.parent;
            let pe = &mut self.nodes[p].entries;
            let i = pe.partition_point(|b| b.key < old.key);
            match pe.get(i) {
                Some(b)
                    if b.btype == BREF_TYPE_INDIRECT
                        && b.key == old.key
                        && b.keybits == old.keybits => {}
                _ => return Err(Error::Invalid),
            }
            match new {
                Some(b) => pe[i] = b,
                None => {
                    pe.remove(i);
                }
            }
        }
        let top = &self.nodes[0].entries;
        if top.len() > set.len() {
            return Err(Error::Invalid);
        }
        set[..top.len()].copy_from_slice(top);
        Ok(made)
    }
}

/// Write the INDIRECT block of `old`'s key range holding `entries`, in a block of `cap`
/// entries as before, with `old`'s check method.
#[inline(never)]
fn write_indirect<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    old: &Blockref,
    entries: &[Blockref],
    cap: usize,
) -> Result<Blockref> {
    let raw = crate::volume::txn::indirect_bytes(entries, cap)?;
    let mut b = Blockref::new(BREF_TYPE_INDIRECT, old.key, old.keybits);
    b.methods = indirect_methods(old.methods);
    txn.write_indirect(b, &raw, entries)
}

/// The `methods` of an indirect block below a blockref of `parent` methods: its check
/// method, uncompressed, as `hammer2_chain_create_indirect` sets them.
fn indirect_methods(parent: u8) -> u8 {
    match parent >> 4 {
        c @ (CHECK_NONE | CHECK_DISABLED | CHECK_ISCSI32 | CHECK_XXHASH64) => {
            enc_methods(c, COMP_NONE)
        }
        // DEVIATION: a check this port cannot compute (SHA192, unknown) gives HAMMER2's
        // default instead: the block must be written.
        _ => METHODS,
    }
}

/// The table rebuilt whole: every entry of the old table (`set`) with `changes` (sorted by
/// key) applied, the old indirect blocks that hold the same entries kept, the others named
/// in `gone`.
#[inline(never)]
fn rebuild<D: BlockDev>(
    vol: &Volume<D>,
    txn: &mut Txn<'_, D>,
    set: Option<&[Blockref; SET_COUNT]>,
    changes: &[(u64, Option<Blockref>)],
    gone: &mut Vec<u64>,
    out: &mut [Blockref],
) -> Result<()> {
    let mut ind = Vec::new();
    let old = match set {
        Some(s) => table_of(vol, s, &mut ind)?,
        None => Vec::new(),
    };
    let mut items = Vec::new();
    items.try_reserve_exact(old.len() + changes.len())?;
    let (mut i, mut j) = (0, 0);
    loop {
        vol.dev().yield_point();
        let (o, c) = (old.get(i), changes.get(j));
        match (o, c) {
            (None, None) => break,
            (Some(o), Some((k, _))) if o.key < *k => {
                items.push(*o);
                i += 1;
            }
            (Some(o), None) => {
                items.push(*o);
                i += 1;
            }
            (o, Some((k, new))) => {
                if o.is_some_and(|o| o.key == *k) {
                    i += 1;
                }
                if let Some(b) = new {
                    items.push(*b);
                }
                j += 1;
            }
        }
    }
    let relax = || vol.dev().yield_point();
    crate::mem::sort_yielding(&mut ind, |b| (b.key, b.keybits), &relax)?;
    let keep = |key: u64, keybits: u8| {
        ind.binary_search_by(|b| (b.key, b.keybits).cmp(&(key, keybits)))
            .ok()
            .map(|i| ind[i])
    };
    let mut placed = Vec::new();
    out.copy_from_slice(&txn.table_keeping(&items, &keep, Some(&mut placed))?);
    let mut kept: Vec<u64> = Vec::new();
    kept.try_reserve_exact(placed.len())?;
    kept.extend(placed.iter().map(|b| b.data_off));
    crate::mem::sort_yielding(&mut kept, |x| *x, &relax)?;
    for (k, b) in ind.iter().enumerate() {
        if k % crate::mem::SORT_CHUNK == 0 {
            relax();
        }
        if kept.binary_search(&b.data_off).is_err() {
            try_push(gone, b.data_off)?;
        }
    }
    Ok(())
}

/// Name in `gone` the block of `old`, an entry taken out of a table, and with `whole` the
/// blocks of the table below it when it is an inode (a removed or replaced subtree).
#[inline(never)]
fn drop_old<D: BlockDev>(
    vol: &Volume<D>,
    old: &Blockref,
    whole: bool,
    gone: &mut Vec<u64>,
) -> Result<()> {
    if old.size_radix() == 0 {
        return Ok(());
    }
    try_push(gone, old.data_off)?;
    if !whole || old.btype != BREF_TYPE_INODE {
        return Ok(());
    }
    let Some(set) = old_set(vol, old)? else {
        return Ok(());
    };
    let mut err = Ok(());
    vol.walk_all(&set[..], &mut |b, _| {
        if b.size_radix() != 0 {
            if let Err(e) = try_push(gone, b.data_off) {
                err = Err(e);
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    })
    .map_err(read_err)?;
    err
}

/// Name in `gone` every block of the old table `set` but the entries at the keys of
/// `changes` (named when they were replaced or removed).
#[inline(never)]
fn drop_rest<D: BlockDev>(
    vol: &Volume<D>,
    set: &[Blockref; SET_COUNT],
    changes: &[(u64, Option<Blockref>)],
    gone: &mut Vec<u64>,
) -> Result<()> {
    let mut ind = Vec::new();
    let leaves = table_of(vol, set, &mut ind)?;
    for b in &ind {
        try_push(gone, b.data_off)?;
    }
    for (k, b) in leaves.iter().enumerate() {
        if k % crate::mem::SORT_CHUNK == 0 {
            vol.dev().yield_point();
        }
        if changes.binary_search_by_key(&b.key, |c| c.0).is_err() {
            drop_old(vol, b, true, gone)?;
        }
    }
    Ok(())
}

/// One inode on the commit's path. Small, and built in place on the heap: frames of the
/// walk sit under its device reads and writes, on a kernel's small stack.
struct Frame {
    id: ChainId,
    /// Its dirty places: `places[next..end]`.
    next: usize,
    end: usize,
    /// Its table as last committed, when it is its own (a chain flushed at its place).
    set: Option<Box<[Blockref; SET_COUNT]>>,
    table: OldTable,
    /// The new entries at its changed keys (`None`: removed), in key order.
    changes: Vec<(u64, Option<Blockref>)>,
    /// The child inode being committed: its key, its entry as last committed, and whether
    /// that entry is its own block.
    pending: Option<Box<(u64, Option<Blockref>, bool)>>,
    /// Its payload as the store keeps it (table cleared) and the payload version, when the
    /// block last committed was read for [`Frame::set`] while the store kept the payload
    /// there: what [`finish`] writes unless the payload changed since.
    kept: Option<(Box<crate::media::InodeData>, PayVer)>,
}

/// The blockset of the inode block `b` last committed, on the heap (`None` for an inode
/// that keeps its data in itself).
#[inline(never)]
fn old_set<D: BlockDev>(
    vol: &Volume<D>,
    b: &Blockref,
) -> Result<Option<Box<[Blockref; SET_COUNT]>>> {
    let ino = vol.read_inode_box(b).map_err(read_err)?;
    boxed_set(&ino)
}

/// Its table as last committed and, when the store's payload of inode `id` is that very
/// block (`b`), the payload as the store keeps it with its version: one read of the block
/// for both, not one for the table and one through the store's source ([`Frame::kept`]).
type OldInode = (
    Option<Box<[Blockref; SET_COUNT]>>,
    Option<(Box<crate::media::InodeData>, PayVer)>,
);

/// [`OldInode`] of the inode block `b` last committed (a `None` table for an inode that keeps
/// its data in itself).
#[inline(never)]
fn old_inode<D: BlockDev>(
    vol: &Volume<D>,
    store: &Store,
    id: ChainId,
    b: &Blockref,
) -> Result<OldInode> {
    let at = store.on_media_at(id)?;
    let mut ino = vol.read_inode_box(b).map_err(read_err)?;
    let set = boxed_set(&ino)?;
    let kept = match at {
        Some((sb, ver)) if sb.data_off == b.data_off => {
            crate::store::inode::clear_table(&mut ino);
            Some((ino, ver))
        }
        _ => None,
    };
    Ok((set, kept))
}

/// `ino`'s blockset on the heap. Out of line: the set is in no frame under a device read.
#[inline(never)]
fn boxed_set(ino: &crate::media::InodeData) -> Result<Option<Box<[Blockref; SET_COUNT]>>> {
    match ino.meta.is_directdata() {
        true => Ok(None),
        false => Ok(Some(crate::mem::try_box(ino.blockset()?)?)),
    }
}

impl Frame {
    /// Push on `stack` the frame of inode `id`, whose block as last committed is `old` when
    /// it is its own.
    #[inline(never)]
    fn push<D: BlockDev>(
        stack: &mut Vec<Frame>,
        vol: &Volume<D>,
        (store, places): (&Store, &[Place]),
        id: ChainId,
        old: Option<&Blockref>,
    ) -> Result<()> {
        let in_dir = store.is_directory(id)?;
        let methods = store.bref(id)?.methods;
        let (set, kept) = match old {
            Some(b) => old_inode(vol, store, id, b)?,
            None => (None, None),
        };
        let me = pair(id);
        let next = places.partition_point(|p| p.0 < me);
        let end = places.partition_point(|p| p.0 <= me);
        stack.try_reserve(1)?;
        stack.push(Frame {
            id,
            next,
            end,
            table: OldTable::new(set.as_deref(), in_dir, methods)?,
            set,
            changes: Vec::new(),
            pending: None,
            kept,
        });
        Ok(())
    }

    /// [`Frame::table`] on the heap ([`SET_COUNT`] entries).
    #[inline(never)]
    fn boxed_table<D: BlockDev>(
        self,
        vol: &Volume<D>,
        txn: &mut Txn<'_, D>,
        gone: &mut Vec<u64>,
        shaped: &mut Shaped,
    ) -> Result<Vec<Blockref>> {
        // Made on the heap, never in a frame: it is filled under device writes.
        let mut set = Vec::new();
        set.try_reserve_exact(SET_COUNT)?;
        set.resize(SET_COUNT, Blockref::default());
        self.table(vol, txn, gone, shaped, &mut set)?;
        Ok(set)
    }

    /// The new blockset of this inode's table: the old one patched, or rebuilt.
    #[inline(never)]
    fn table<D: BlockDev>(
        mut self,
        vol: &Volume<D>,
        txn: &mut Txn<'_, D>,
        gone: &mut Vec<u64>,
        shaped: &mut Shaped,
        out: &mut [Blockref],
    ) -> Result<()> {
        let inserts = self.changes.iter().filter(|c| c.1.is_some()).count();
        let flat = self.table.flat_len();
        if flat.is_some_and(|old| inserts > SET_COUNT.max(BUILD_WHOLE_RATIO * old)) {
            // DEVIATION: HAMMER2 fills a table insert by insert, splitting full blocks as it
            // goes. A table that held no indirect block and receives many times the entries
            // it held (a new inode's, a directory of a few files, a new PFS's index at its
            // first sync) is built here whole from its entries: there is nothing on the media
            // to keep or read, and its blocks come out full, so the tree is shallower and
            // every later commit's paths shorter than a run of splits would leave them (a
            // split never fills the blocks it leaves behind). Fewer inserts keep HAMMER2's
            // shape: they make a split or two either way.
            shaped.built += 1;
            return rebuild(vol, txn, self.set.as_deref(), &self.changes, gone, out);
        }
        for (k, new) in &self.changes {
            if !self.table.apply(vol, *k, *new)? {
                // The fallback, for what no split places: an entry whose range covers
                // another key or spans its neighbours' (a block grown over them), a full
                // table no key range divides. The table is rebuilt from its entries on the
                // media, keeping the indirect blocks whose entries did not change; what
                // `apply` did is dropped (nothing was written).
                shaped.rebuilt += 1;
                return rebuild(vol, txn, self.set.as_deref(), &self.changes, gone, out);
            }
        }
        shaped.splits += self.table.finish(txn, gone, out)?;
        Ok(())
    }
}

/// What the walk of a commit made: the PFS root's new blockref and inode allocator, the
/// chains written, the blocks taken out of the tree, the places visited.
pub(super) struct Walked {
    pub pfs_bref: Blockref,
    pub root_inum: u64,
    pub moved: Vec<(ChainId, Blockref, PayVer)>,
    pub gone: Vec<u64>,
    pub visited: u64,
    pub shaped: Shaped,
}

/// How the tables a commit wrote got their shape.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Shaped {
    /// Indirect blocks made by splitting a full block.
    pub splits: u64,
    /// Tables rebuilt whole ([`rebuild`]): changes no split placed.
    pub rebuilt: u64,
    /// Tables built whole that held no indirect block and far fewer entries than inserted.
    pub built: u64,
}

/// What the walk carries from step to step, on the heap.
struct Walk<'a> {
    store: &'a Store,
    places: &'a [Place],
    stack: Vec<Frame>,
    moved: Vec<(ChainId, Blockref, PayVer)>,
    gone: Vec<u64>,
    shaped: Shaped,
    /// The buffer each DATA block is copied into to be written (see `place_data`).
    scratch: Vec<u8>,
    /// DATA blocks written ahead of the commit, sorted by chain ([`super::ahead`]).
    ahead: &'a mut [Placed],
}

/// Write, in `txn`, the chains at `places` and the inodes above them, from the PFS root
/// whose block as last committed is `pfs_old`; a DATA chain with a block written `ahead`
/// for its header and payload version takes that block.
#[inline(never)]
pub(super) fn walk<D: BlockDev>(
    vol: &Volume<D>,
    txn: &mut Txn<'_, D>,
    (store, places): (&Store, &[Place]),
    ahead: &mut [Placed],
    pfs_old: &Blockref,
    progress: &mut dyn FnMut(u64),
) -> Result<Walked> {
    // DEVIATION: HAMMER2 finds what to flush by the MODIFIED/UPDATE flags of its chains,
    // indirect blocks included, all in memory. The store keeps no chains for the media's
    // indirect blocks (it shapes its own tables), so the flags are a journal of changed
    // places, and the blocks last committed on their paths are read back to be patched.
    // An insert into a full block splits it as HAMMER2 does (`OldTable::split`), but when
    // the commit writes the table (the changes of a table in key order), not when the chain
    // is created: the table's shape follows the commit's order of inserts, not the
    // frontend's. Only what no split places rebuilds its table (`Frame::table`).
    let mut w = crate::mem::try_box(Walk {
        store,
        places,
        stack: Vec::new(),
        moved: Vec::new(),
        gone: Vec::new(),
        shaped: Shaped::default(),
        scratch: Vec::new(),
        ahead,
    })?;
    Frame::push(
        &mut w.stack,
        vol,
        (store, places),
        store.root(),
        Some(pfs_old),
    )?;
    let mut visited = 0u64;
    loop {
        store.host().relax();
        visited += 1;
        if visited % LOAD_PROGRESS_EVERY == 0 {
            progress(visited);
        }
        if step(vol, txn, &mut w)? {
            continue;
        }
        if let Some((pfs_bref, root_inum)) = finish(vol, txn, &mut w, pfs_old)? {
            progress(visited);
            let Walk {
                moved,
                gone,
                shaped,
                ..
            } = *w;
            return Ok(Walked {
                pfs_bref,
                root_inum,
                moved,
                gone,
                visited,
                shaped,
            });
        }
    }
}

/// Commit the next changed place of the inode on top of the walk's stack: false when it has
/// none left.
#[inline(never)]
fn step<D: BlockDev>(vol: &Volume<D>, txn: &mut Txn<'_, D>, w: &mut Walk<'_>) -> Result<bool> {
    let (store, places) = (w.store, w.places);
    let top = w.stack.last_mut().ok_or(Error::Invalid)?;
    if top.next >= top.end {
        return Ok(false);
    }
    let key = places[top.next].1;
    top.next += 1;
    let old = top.table.old(vol, key)?;
    let Some(cid) = store.child_at(top.id, key)? else {
        if let Some(o) = &old {
            drop_old(vol, o, true, &mut w.gone)?;
        }
        try_push(&mut top.changes, (key, None))?;
        return Ok(true);
    };
    let cb = store.bref(cid)?;
    if cb.btype == BREF_TYPE_INODE {
        // Its own block last committed: its table is patched; otherwise (a chain put at
        // this key since) whatever was there leaves the tree whole.
        let own = match &old {
            Some(o) if o.btype == BREF_TYPE_INODE && store.is_flushed(cid)? => Some(*o),
            _ => None,
        };
        top.pending = Some(crate::mem::try_box((key, old, own.is_some()))?);
        Frame::push(&mut w.stack, vol, (store, places), cid, own.as_ref())?;
        return Ok(true);
    }
    let nb = match cb.size_radix() {
        0 => cb,
        _ => {
            let (nb, ver) = match take_placed(w.ahead, store, cid)? {
                Some(written) => written,
                None => place_data(txn, store, cid, &mut w.scratch)?,
            };
            try_push(&mut w.moved, (cid, nb, ver))?;
            nb
        }
    };
    if let Some(o) = &old {
        drop_old(vol, o, true, &mut w.gone)?;
    }
    try_push(&mut top.changes, (key, Some(nb)))?;
    Ok(true)
}

/// Inode `id` of `store`: its header, its payload on the heap and the payload's version.
/// Out of line: the copy's frame is not under the commit's device writes.
#[inline(never)]
fn read_inode(
    store: &Store,
    id: ChainId,
) -> Result<(Blockref, Box<crate::media::InodeData>, PayVer)> {
    let (b, sealed, ver) = store.read_versioned(id)?;
    match sealed.into_body() {
        Body::Inode(ino) => Ok((b, ino, ver)),
        Body::Data(_) => Err(Error::Invalid),
    }
}

/// Write the inode on top of the walk's stack, every changed child placed, with its table,
/// and pop it; for the PFS root, its new blockref and inode allocator.
#[inline(never)]
fn finish<D: BlockDev>(
    vol: &Volume<D>,
    txn: &mut Txn<'_, D>,
    w: &mut Walk<'_>,
    pfs_old: &Blockref,
) -> Result<Option<(Blockref, u64)>> {
    let mut done = w.stack.pop().ok_or(Error::Invalid)?;
    let id = done.id;
    let (b, mut ino, ver) = match done.kept.take() {
        // Still on the media at the version read: the payload is the block read for its table.
        Some((ino, kv)) => match w.store.on_media_at(id)? {
            Some((b, ver)) if ver == kv => (b, ino, ver),
            _ => read_inode(w.store, id)?,
        },
        None => read_inode(w.store, id)?,
    };
    let top_inum = done
        .changes
        .iter()
        .filter(|(k, new)| new.is_some() && k & DIRHASH_VISIBLE == 0)
        .map(|(k, _)| *k)
        .max()
        .unwrap_or(0);
    if !ino.meta.is_directdata() {
        let set = done.boxed_table(vol, txn, &mut w.gone, &mut w.shaped)?;
        let set: &[Blockref; SET_COUNT] = set[..].try_into().map_err(|_| Error::Invalid)?;
        ino.set_blockset(set);
    } else if done.changes.iter().any(|(_, new)| new.is_some()) {
        return Err(Error::Invalid);
    } else if let Some(set) = &done.set {
        // An inode that keeps its data in itself now: its old table leaves the tree.
        drop_rest(vol, set, &done.changes, &mut w.gone)?;
    }
    place_inode(txn, w, (id, &b, ver), &mut ino, top_inum, pfs_old)
}

/// Write inode `ino` (chain `child`, header `b`) just popped off the walk's stack, and give it to its
/// parent; for the PFS root, its new blockref and inode allocator. Out of line: the
/// headers here are in no frame under the table's device writes.
#[inline(never)]
fn place_inode<D: BlockDev>(
    txn: &mut Txn<'_, D>,
    w: &mut Walk<'_>,
    (child, b, ver): (ChainId, &Blockref, PayVer),
    ino: &mut crate::media::InodeData,
    top_inum: u64,
    pfs_old: &Blockref,
) -> Result<Option<(Blockref, u64)>> {
    let vol = txn.volume();
    let Some(parent) = w.stack.last_mut() else {
        // The PFS root: keyed in the super-root as loaded, its inode allocator past every
        // inode number its index was given.
        ino.meta.pfs_inum = ino.meta.pfs_inum.max(top_inum);
        let root_inum = ino.meta.pfs_inum;
        let mut pb = *pfs_old;
        pb.modify_tid = b.modify_tid;
        pb.methods = b.methods;
        let pfs_bref = place(txn, &pb, &encoded(ino)?[..])?;
        try_push(&mut w.gone, pfs_old.data_off)?;
        return Ok(Some((pfs_bref, root_inum)));
    };
    let nb = place(txn, b, &encoded(ino)?[..])?;
    try_push(&mut w.moved, (child, nb, ver))?;
    let pending = parent.pending.take().ok_or(Error::Invalid)?;
    let (key, old, own) = *pending;
    if let Some(o) = &old {
        drop_old(vol, o, !own, &mut w.gone)?;
    }
    try_push(&mut parent.changes, (key, Some(nb)))?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{BREF_TYPE_DATA, PFSTYPE_MASTER};
    use crate::volume::testdev::newfs_sparse;
    use crate::volume::txn::indirect_bytes;
    use crate::volume::NewPfs;

    fn one_pfs() -> crate::volume::testdev::SparseDev {
        let pfs = NewPfs {
            label: b"DATA",
            pfs_type: PFSTYPE_MASTER,
            clid: [7; 16],
            fsid: [1; 16],
            nmasters: 1,
        };
        newfs_sparse(1 << 30, &[pfs])
    }

    /// An indirect block whose entry names an indirect block of its own key range (as a
    /// damaged block naming itself would, read again and again) fails the walk: each level
    /// must narrow the range. So does an entry covering another's key.
    #[test]
    fn a_damaged_old_table_is_a_read_error() {
        let dev = one_pfs();
        let vol = Volume::open(&dev).unwrap();
        let mut txn = Txn::begin(&vol).unwrap();
        let mut d = Blockref::new(BREF_TYPE_DATA, 0x400, 10);
        d.methods = METHODS;
        let d = txn.write_block(d, &[5; 1024]).unwrap();
        let ind = |txn: &mut Txn<'_, _>, e: Blockref| {
            let raw = indirect_bytes(&[e], 128).unwrap();
            let mut b = Blockref::new(BREF_TYPE_INDIRECT, 0, 16);
            b.methods = METHODS;
            txn.write_indirect(b, &raw, &[e]).unwrap()
        };
        let inner = ind(&mut txn, d);
        let outer = ind(&mut txn, inner);
        let mut set = [Blockref::default(); SET_COUNT];
        set[0] = outer;
        let mut t = OldTable::new(Some(&set), false, METHODS).unwrap();
        assert_eq!(t.old(&vol, 0x400).err(), Some(Error::Io));
        // Narrowing levels are read through.
        set[0] = inner;
        let mut t = OldTable::new(Some(&set), false, METHODS).unwrap();
        assert_eq!(
            t.old(&vol, 0x400).unwrap().map(|b| b.data_off),
            Some(d.data_off)
        );
        // An entry of another key covering the key: damage too, not "no entry".
        let mut wide = d;
        wide.key = 0;
        wide.keybits = 16;
        set[0] = wide;
        let mut t = OldTable::new(Some(&set), false, METHODS).unwrap();
        assert_eq!(t.old(&vol, 0x400).err(), Some(Error::Io));
    }

    /// A file's full blockset of four 64 KiB data blocks (their blocks never read here).
    fn full_file_set() -> [Blockref; SET_COUNT] {
        core::array::from_fn(|i| {
            let mut d = Blockref::new(BREF_TYPE_DATA, (i as u64) << 16, 16);
            d.methods = METHODS;
            d
        })
    }

    fn fifth() -> Blockref {
        let mut d = Blockref::new(BREF_TYPE_DATA, 4 << 16, 16);
        d.methods = METHODS;
        d
    }

    /// The block a split of a table whose inode's blockref has `methods` makes takes the
    /// inode's check method, uncompressed, as `hammer2_chain_create_indirect` does (a check
    /// this port cannot compute: the default), and reads back under it.
    #[test]
    fn a_split_block_takes_its_parents_check_method() {
        use crate::media::{CHECK_SHA192, COMP_ZLIB};
        let dev = one_pfs();
        let vol = Volume::open(&dev).unwrap();
        let mut txn = Txn::begin(&vol).unwrap();
        let cases = [
            (enc_methods(CHECK_ISCSI32, COMP_ZLIB), CHECK_ISCSI32),
            (enc_methods(CHECK_NONE, COMP_NONE), CHECK_NONE),
            (METHODS, CHECK_XXHASH64),
            (enc_methods(CHECK_SHA192, COMP_NONE), CHECK_XXHASH64),
        ];
        for (parent, check) in cases {
            let mut t = OldTable::new(Some(&full_file_set()), false, parent).unwrap();
            assert!(t.apply(&vol, 4 << 16, Some(fifth())).unwrap());
            let (mut out, mut gone) = ([Blockref::default(); SET_COUNT], Vec::new());
            assert_eq!(t.finish(&mut txn, &mut gone, &mut out).unwrap(), 1);
            let ind: Vec<_> = out
                .iter()
                .filter(|b| b.btype == BREF_TYPE_INDIRECT)
                .collect();
            assert_eq!(ind.len(), 1, "{out:?}");
            assert_eq!(ind[0].methods, enc_methods(check, COMP_NONE), "{parent:#x}");
            assert!(vol.read_table(ind[0]).is_ok());
        }
    }

    /// A block a split made and the same commit emptied again is never written, and is not
    /// counted as a split.
    #[test]
    fn a_split_block_emptied_again_is_not_counted() {
        let dev = one_pfs();
        let vol = Volume::open(&dev).unwrap();
        let mut txn = Txn::begin(&vol).unwrap();
        let mut t = OldTable::new(Some(&full_file_set()), false, METHODS).unwrap();
        assert!(t.apply(&vol, 4 << 16, Some(fifth())).unwrap());
        let fresh: Vec<u64> = t
            .nodes
            .iter()
            .filter(|n| n.fresh)
            .flat_map(|n| n.entries.iter().map(|b| b.key))
            .collect();
        assert!(!fresh.is_empty());
        for key in fresh {
            assert!(t.apply(&vol, key, None).unwrap());
        }
        let (mut out, mut gone) = ([Blockref::default(); SET_COUNT], Vec::new());
        let written = txn.written;
        assert_eq!(t.finish(&mut txn, &mut gone, &mut out).unwrap(), 0);
        assert_eq!(txn.written, written);
        assert!(out.iter().all(|b| b.btype != BREF_TYPE_INDIRECT), "{out:?}");
    }
}
