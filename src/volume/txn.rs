//! A copy-on-write transaction on an open volume (HAMMER2-MEDIA §12): every block it
//! writes goes to space no valid volume header copy reaches; blocks are data, inodes,
//! long-name directory entries and indirect block tables built here; [`Txn::commit`]
//! (in [`super::commit`]) then writes the freemap and a new volume header.
//!
//! Until the header is written nothing committed changes, so a failure at any point
//! (no space, a device error) leaves the volume as it was.

use alloc::vec::Vec;

use super::block::zeroed;
use super::scan::Flow;
pub(crate) use super::space::block_name;
use super::space::{Allocator, GranuleBits, GranuleCounts, SpaceCache, TreeId};
use super::{read_copies, BlockDev, Cause, HeaderCopy, ReadError, Volume};
use crate::media::check::CHECK_BYTES;
use crate::media::volhdr::{select_best, VolumeHeader, NUM_VOLHDRS, ZONE_BYTES};
use crate::media::{
    enc_methods, Blockref, DirentHead, InodeData, MediaError, BREF_BYTES, BREF_TYPE_DATA,
    BREF_TYPE_DIRENT, BREF_TYPE_INDIRECT, BREF_TYPE_INODE, CHECK_XXHASH64, COMP_NONE,
    DATA_BLOCK_BYTES, DATA_BLOCK_RADIX, INODE_BYTES, RADIX_MIN, SET_COUNT,
};
use crate::{Error, Result};

/// Entries of the indirect blocks this writer makes (16 KiB, the kernel's default).
const IND_ENTRIES: usize = 128;
/// log2 of [`IND_ENTRIES`].
const IND_SHIFT: u32 = 7;
/// Tables open at once while building one block table: the inode's own and up to six
/// levels of indirect blocks (files up to 2^58 bytes, 2^42 inodes). Three such tables nest
/// under the volume header (super-root, PFS root, file or directory), and the reader must
/// be able to walk them: a deeper tree is refused with [`Error::TooBig`].
const BUILD_DEPTH: usize = 7;
const _: () = assert!(3 * BUILD_DEPTH < super::scan::DEPTH_MAX);

/// Methods of every blockref this writer makes: HAMMER2's default check, no compression.
pub const METHODS: u8 = enc_methods(CHECK_XXHASH64, COMP_NONE);

/// The device error of a reader fault met while preparing or committing.
pub(crate) fn read_err(e: ReadError) -> Error {
    e.into()
}

/// Fail unless the best of `copies` (as [`Volume::open`] chooses) is the header `vol`
/// holds: [`Error::Busy`] when another is newer, the device error of a copy that does not
/// read.
fn require_current<D: BlockDev>(vol: &Volume<D>, copies: &[HeaderCopy; NUM_VOLHDRS]) -> Result<()> {
    let mut valid: [Option<core::result::Result<&VolumeHeader, MediaError>>; NUM_VOLHDRS] =
        [None; NUM_VOLHDRS];
    for (slot, c) in valid.iter_mut().zip(copies) {
        match c {
            HeaderCopy::Absent => {}
            HeaderCopy::Unreadable(_, e) => return Err(*e),
            HeaderCopy::Read(r) => *slot = Some(r.as_deref().map_err(|e| *e)),
        }
    }
    match select_best(valid) {
        Ok((zone, best)) if zone == vol.zone() && best == vol.header() => Ok(()),
        _ => Err(Error::Busy),
    }
}

/// The checks every transaction begins with: the next TID, and the header copies read, the
/// best of them the one `vol` holds.
fn prologue<D: BlockDev>(vol: &Volume<D>) -> Result<(u64, [HeaderCopy; NUM_VOLHDRS])> {
    let h = vol.header();
    // Values of the media the arithmetic of a transaction relies on.
    let tid = h.mirror_tid.checked_add(1).ok_or(Error::Invalid)?;
    if h.allocator_beg > h.fs_size() {
        return Err(Error::Invalid);
    }
    let copies = read_copies(vol.dev()).map_err(read_err)?;
    for c in &copies {
        if !matches!(c, HeaderCopy::Absent) {
            vol.count_read(crate::media::volhdr::VOLUME_BYTES);
        }
    }
    require_current(vol, &copies)?;
    Ok((tid, copies))
}

/// An open transaction: the volume, its allocator and the transaction id it writes.
pub struct Txn<'v, D: BlockDev> {
    pub(crate) vol: &'v Volume<D>,
    pub(crate) alloc: Allocator,
    /// Granules reachable from the header copies this commit does not overwrite.
    pub(crate) keep: GranuleBits,
    /// The header slot the commit writes.
    pub(crate) next_zone: usize,
    pub(crate) tid: u64,
    /// `modify_tid` of the blocks it writes: [`Txn::tid`] unless raised for a PFS whose
    /// own counter runs ahead of the volume's.
    modify_tid: u64,
    buf: Vec<u8>,
    /// Names of the current tree's table blocks (see [`block_name`]), sorted, when that tree
    /// stays reachable from a header copy after this commit (its blocks are then all in
    /// [`Txn::keep`]); empty otherwise.
    pub(crate) seen: Vec<(u64, u64)>,
    /// Bytes of blocks written so far.
    pub(crate) written: u64,
    /// What the header copies' trees reach, when the transaction began from a mount's
    /// cache ([`Txn::begin_cached`]); the commit then learns the new tree's space from
    /// [`Txn::wrote`] and [`Txn::dropped`] instead of reading it back.
    pub(crate) space: Option<alloc::boxed::Box<SpaceCache>>,
    /// `data_off` of every block written, while [`Txn::space`] is kept.
    pub(crate) wrote: Vec<u64>,
    /// `data_off` of every block of the current tree the new tree no longer holds, each once
    /// ([`Txn::drop_block`]).
    pub(crate) dropped: Vec<u64>,
}

/// The header slot after `zone` for a volume of `volu_size` bytes: the next zone, back to 0
/// after the last, and 0 when the next zone's reserved area does not fit
/// (`hammer2_xop_inode_flush`).
pub fn next_zone(zone: usize, volu_size: u64) -> usize {
    let j = (zone + 1) % NUM_VOLHDRS;
    if j as u64 * ZONE_BYTES + (4 << 20) > volu_size {
        0
    } else {
        j
    }
}

impl<'v, D: BlockDev> Txn<'v, D> {
    /// Begin a transaction on `vol`: mark every block any valid header copy reaches as in
    /// use, and take the next transaction id. The tree of the header in use must read
    /// without a fault; an older copy's tree may be damaged (its blocks stay reserved as
    /// far as they can be read), but a device error anywhere fails the begin, as does a
    /// header copy that does not read.
    ///
    /// [`Error::Busy`] when the best header copy on the device is no longer the one `vol`
    /// was opened on (a commit since, through `vol` or another writer): reopen the volume.
    #[inline(never)]
    pub fn begin(vol: &'v Volume<D>) -> Result<Txn<'v, D>> {
        let (tid, copies) = prologue(vol)?;
        let h = vol.header();
        let fs = h.fs_size();
        let mut used = GranuleBits::new(fs)?;
        let mut keep = GranuleBits::new(fs)?;
        let next = next_zone(vol.zone(), h.volu_size);
        let mut used_sets: Vec<[Blockref; SET_COUNT]> = Vec::new();
        let mut keep_sets: Vec<[Blockref; SET_COUNT]> = Vec::new();
        used_sets.try_reserve_exact(NUM_VOLHDRS)?;
        keep_sets.try_reserve_exact(NUM_VOLHDRS)?;
        // The current tree's table blocks. When that tree stays (its header copy is not the
        // one this commit overwrites) it is marked in both maps, and an older copy's or the
        // new tree's subtree that is the same block need not be read again: with commits
        // that keep unchanged subtrees, the trees of the copies share most of their blocks.
        let current_stays = next != vol.zone();
        let mut seen: Vec<(u64, u64)> = Vec::new();
        // The copy in use first, so that its tree is walked strictly even when an older
        // copy holds the same one.
        for zone in (0..NUM_VOLHDRS).map(|i| (vol.zone() + i) % NUM_VOLHDRS) {
            let HeaderCopy::Read(Ok(ch)) = &copies[zone] else {
                continue;
            };
            if ch.fsid != h.fsid {
                continue;
            }
            // Identical trees (newfs writes the same header everywhere) are walked once.
            let set = ch.sroot_blockset;
            let to_used = !used_sets.contains(&set);
            let to_keep = zone != next && !keep_sets.contains(&set);
            if to_used {
                used_sets.push(set);
            }
            if to_keep {
                keep_sets.push(set);
            }
            let current = zone == vol.zone();
            let tables = if !current_stays {
                Tables::Walk
            } else if current {
                Tables::Record(&mut seen)
            } else {
                Tables::Skip(&seen)
            };
            let marks = Marks {
                a: to_used.then_some(&mut used),
                b: to_keep.then_some(&mut keep),
                counts: None,
            };
            mark_tree(vol, &set, marks, current, tables)?;
            if current {
                let dev = vol.dev();
                crate::mem::sort_yielding(&mut seen, |n| *n, &|| dev.yield_point())?;
            }
        }
        if !current_stays {
            seen = Vec::new();
        }
        Txn::new(vol, used, keep, tid, seen, None)
    }

    /// A transaction on `used` (the allocator's map) and `keep`, writing header slot
    /// after the current one with TID `tid`.
    fn new(
        vol: &'v Volume<D>,
        used: GranuleBits,
        keep: GranuleBits,
        tid: u64,
        seen: Vec<(u64, u64)>,
        space: Option<alloc::boxed::Box<SpaceCache>>,
    ) -> Result<Txn<'v, D>> {
        let h = vol.header();
        let alloc = Allocator::new(used, h.allocator_beg, h.fs_size())?;
        Ok(Txn {
            vol,
            alloc,
            keep,
            next_zone: next_zone(vol.zone(), h.volu_size),
            tid,
            modify_tid: tid,
            buf: zeroed(DATA_BLOCK_BYTES).map_err(read_err)?,
            seen,
            written: 0,
            space,
            wrote: Vec::new(),
            dropped: Vec::new(),
        })
    }

    /// [`Txn::begin`] with what a mount learned of the volume's space at its last commit
    /// (`cache`, empty at first): the tree of a header copy still on the device as it was
    /// learned is not read again, any other copy's tree is read and learned (the current
    /// one's with its blocks counted per granule). The caller must then name every block
    /// of the current tree its new tree drops ([`Txn::drop_block`]), and gets the cache of
    /// the new tree back from [`Txn::commit_cached`]. On any error the cache is gone: the
    /// next transaction reads every tree again.
    ///
    /// Every block the transaction writes must end in the new tree once, or be named to
    /// [`Txn::drop_block`] (a block written, then replaced before the commit).
    ///
    /// Falls back to [`Txn::begin`] (a cache of nothing) when the counts would not fit in
    /// [`super::space::MAP_LIMIT`], or their wide counts in their own bound.
    #[inline(never)]
    pub fn begin_cached(
        vol: &'v Volume<D>,
        mut cache: alloc::boxed::Box<SpaceCache>,
    ) -> Result<Txn<'v, D>> {
        let (tid, copies) = prologue(vol)?;
        let h = vol.header();
        let fs = h.fs_size();
        let cur = vol.zone();
        let next = next_zone(cur, h.volu_size);
        // Forget what no longer matches the device.
        for (zone, c) in copies.iter().enumerate() {
            let id = match c {
                HeaderCopy::Read(Ok(ch)) if ch.fsid == h.fsid => Some(TreeId::of(ch)),
                _ => None,
            };
            if cache.zones[zone].as_ref().map(|(t, _)| t) != id.as_ref() {
                cache.zones[zone] = None;
                // What the freemap was built from has changed: it is rebuilt in full.
                cache.freemap = None;
            }
        }
        if !cache.counts_zone(cur) {
            cache.counts = None;
        }
        // The current tree first (strictly, counted), then the others.
        for zone in (0..NUM_VOLHDRS).map(|i| (cur + i) % NUM_VOLHDRS) {
            let HeaderCopy::Read(Ok(ch)) = &copies[zone] else {
                continue;
            };
            if ch.fsid != h.fsid || (cache.zones[zone].is_some() && zone != cur) {
                continue;
            }
            let current = zone == cur;
            if current && cache.counts.is_some() {
                continue;
            }
            let id = TreeId::of(ch);
            cache.freemap = None;
            // Identical trees (newfs writes the same header everywhere) are walked once.
            let twin = cache
                .zones
                .iter()
                .flatten()
                .find(|(t, _)| t.same_sroot(&id));
            let bits = match (twin, current) {
                (Some((_, b)), false) => b.try_clone()?,
                _ => {
                    let mut bits = GranuleBits::new(fs)?;
                    let mut counts = match current {
                        true => match GranuleCounts::new(fs) {
                            Ok(c) => Some(c),
                            Err(Error::TooBig) => return Txn::begin(vol),
                            Err(e) => return Err(e),
                        },
                        false => None,
                    };
                    let marks = Marks {
                        a: Some(&mut bits),
                        b: None,
                        counts: counts.as_mut(),
                    };
                    match mark_tree(vol, &ch.sroot_blockset, marks, current, Tables::Walk) {
                        // Counts past their bound: the tree is read at every commit.
                        Err(Error::TooBig) if counts.is_some() => return Txn::begin(vol),
                        r => r?,
                    }
                    if let Some(c) = counts {
                        cache.counts = Some((zone, c));
                    }
                    bits
                }
            };
            cache.zones[zone] = Some((id, bits));
        }
        let mut used = GranuleBits::new(fs)?;
        let mut keep = GranuleBits::new(fs)?;
        let relax = || vol.dev().yield_point();
        for (zone, z) in cache.zones.iter().enumerate() {
            if let Some((_, bits)) = z {
                used.or(bits, &relax)?;
                if zone != next {
                    keep.or(bits, &relax)?;
                }
            }
        }
        Txn::new(vol, used, keep, tid, Vec::new(), Some(cache))
    }

    /// Name a block (its `data_off`) of the current tree that the new tree no longer holds,
    /// for a transaction begun with [`Txn::begin_cached`] (otherwise nothing is kept): once
    /// for each time the current tree reaches it that the new tree does not (once, for a
    /// block one path reaches; a block a snapshot shares stays counted for the snapshot).
    /// A block this transaction wrote that the new tree does not hold is named here too,
    /// once. Its granules are freed once no header copy that stays reaches them.
    pub fn drop_block(&mut self, data_off: u64) -> Result<()> {
        if self.space.is_some() {
            crate::mem::try_push(&mut self.dropped, data_off)?;
        }
        Ok(())
    }

    /// [`Error::Busy`] unless the best header copy on the device is still the one the
    /// transaction's volume was opened on (as at its begin): a transaction held open while
    /// another writer could commit (a write-ahead) checks before it writes more, so that it
    /// never writes into space another commit took.
    pub fn still_current(&self) -> Result<()> {
        let copies = read_copies(self.vol.dev()).map_err(read_err)?;
        for c in &copies {
            if !matches!(c, HeaderCopy::Absent) {
                self.vol.count_read(crate::media::volhdr::VOLUME_BYTES);
            }
        }
        require_current(self.vol, &copies)
    }

    /// The transaction id this commit writes (`mirror_tid` of every new blockref).
    pub fn tid(&self) -> u64 {
        self.tid
    }

    /// The `modify_tid` of the blocks written from now on: `tid` if that is higher than
    /// [`Txn::tid`]. A kernel-written PFS runs its own modify_tid counter, possibly far
    /// ahead of the volume's `mirror_tid`, and its blocks must never go back in it.
    pub fn raise_modify_tid(&mut self, tid: u64) {
        self.modify_tid = self.modify_tid.max(tid);
    }

    /// The volume.
    pub fn volume(&self) -> &'v Volume<D> {
        self.vol
    }

    /// Write `payload` (at most 64 KiB) as the block of `b`: a new place of the smallest
    /// size of 1 KiB or more that holds it, the rest zeroed, its check code, this
    /// transaction's TIDs.
    pub fn write_block(&mut self, b: Blockref, payload: &[u8]) -> Result<Blockref> {
        self.write_block_known(b, payload, None)
    }

    /// [`Txn::write_block`] where `known`, if given, is the check code of `payload` by `b`'s
    /// check method: kept instead of hashing the block again when the block is `payload`
    /// itself (a whole block, not padded); a padded block gets its code computed.
    pub fn write_block_known(
        &mut self,
        mut b: Blockref,
        payload: &[u8],
        known: Option<&[u8; CHECK_BYTES]>,
    ) -> Result<Blockref> {
        if payload.len() > DATA_BLOCK_BYTES {
            return Err(Error::TooBig);
        }
        let size = payload.len().max(1 << RADIX_MIN).next_power_of_two();
        let radix = size.trailing_zeros() as u8;
        let dev = self.vol.dev();
        let off = self.alloc.alloc(size as u64, &|| dev.yield_point())?;
        // A payload that fills its block (every whole DATA block) is written from where it
        // is; a shorter one is padded with zeros in the transaction's buffer.
        let block = if payload.len() == size {
            payload
        } else {
            let (head, tail) = self
                .buf
                .get_mut(..size)
                .ok_or(Error::TooBig)?
                .split_at_mut(payload.len());
            head.copy_from_slice(payload);
            tail.fill(0);
            self.buf.get(..size).ok_or(Error::TooBig)?
        };
        b.data_off = off | u64::from(radix);
        match known {
            Some(code) if payload.len() == size => b.check = *code,
            _ => b.set_check(block)?,
        }
        b.mirror_tid = self.tid;
        b.modify_tid = self.modify_tid;
        if self.space.is_some() {
            self.wrote.try_reserve(1)?;
        }
        self.vol.write_at(off, block)?;
        // Only a block whose blockref the caller gets: a failed write is in no tree.
        if self.space.is_some() {
            self.wrote.push(b.data_off);
        }
        self.vol.dev().yield_point();
        self.written += size as u64;
        Ok(b)
    }

    /// The DATA blockref of a file's logical block at `key` (64 KiB aligned) holding
    /// `bytes`, stored raw; `None` for a block of zeros, which HAMMER2 leaves as a hole.
    pub fn data(&mut self, key: u64, bytes: &[u8]) -> Result<Option<Blockref>> {
        if bytes.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        let mut b = Blockref::new(BREF_TYPE_DATA, key, DATA_BLOCK_RADIX);
        b.methods = METHODS;
        self.write_block(b, bytes).map(Some)
    }

    /// Write inode `ino` and return its INODE blockref at `key`.
    pub fn inode(&mut self, key: u64, ino: &InodeData) -> Result<Blockref> {
        let mut b = Blockref::new(BREF_TYPE_INODE, key, 0);
        b.methods = METHODS;
        let raw: [u8; INODE_BYTES] = ino.encode();
        self.write_block(b, &raw)
    }

    /// A DIRENT blockref at `key` for `name` naming `inum` of `objtype`: a name of up to
    /// 64 bytes in the blockref, a longer one in a 1 KiB block.
    pub fn dirent(&mut self, key: u64, inum: u64, objtype: u8, name: &[u8]) -> Result<Blockref> {
        if name.is_empty() || name.len() > crate::media::NAME_MAX {
            return Err(Error::Invalid);
        }
        let mut b = match crate::media::dirent::short_dirent(key, inum, objtype, name) {
            Ok(b) => b,
            Err(_) => {
                let mut b = Blockref::new(BREF_TYPE_DIRENT, key, 0);
                b.methods = METHODS;
                b.embed = DirentHead {
                    inum,
                    namlen: name.len() as u16,
                    objtype,
                }
                .encode();
                return self.write_block(b, name);
            }
        };
        b.mirror_tid = self.tid;
        b.modify_tid = self.modify_tid;
        Ok(b)
    }

    /// The 4-entry block table of `items` (sorted by key, disjoint ranges): the items
    /// themselves when they fit, otherwise a tree of 16 KiB INDIRECT blocks, each covering
    /// the tightest aligned key range of the entries below it (so ranges nest and never
    /// overlap, and an indirect block never spans both halves of a PFS root's key space).
    pub fn table(&mut self, items: &[Blockref]) -> Result<[Blockref; SET_COUNT]> {
        self.table_keeping(items, &|_, _| None, None)
    }

    /// [`Txn::table`] that keeps by reference each indirect block `old(key, keybits)` names
    /// (the table's indirect block of that key range as last committed) that holds exactly
    /// the entries of its place in the new tree, as HAMMER2's flush leaves a
    /// clean indirect block alone: only the indirect blocks above changed entries are
    /// written. The table's shape follows from its keys alone, so a table whose keys did not
    /// change finds every unchanged block again. Every indirect block of the new table, kept
    /// or written, goes to `placed`.
    pub fn table_keeping(
        &mut self,
        items: &[Blockref],
        old: &dyn Fn(u64, u8) -> Option<Blockref>,
        mut placed: Option<&mut Vec<Blockref>>,
    ) -> Result<[Blockref; SET_COUNT]> {
        let mut set = [Blockref::default(); SET_COUNT];
        if items.len() <= SET_COUNT {
            set[..items.len()].copy_from_slice(items);
            return Ok(set);
        }
        let dev = self.vol.dev();
        let relax = || dev.yield_point();
        for (k, w) in items.windows(2).enumerate() {
            if w[0].key_end() >= w[1].key {
                return Err(Error::Invalid);
            }
            if k % crate::mem::SORT_CHUNK == 0 {
                relax();
            }
        }
        let mut stack: Vec<Frame> = Vec::new();
        stack.try_reserve_exact(BUILD_DEPTH)?;
        let mut root = Frame::new(0, items.len(), 0, 64, 2)?;
        root.sub = split_bits(items, 1 << 2, &relax);
        stack.push(root);
        loop {
            // A scheduling point per entry placed or frame begun or finished: an unchanged
            // table of 10^6 entries keeps every block and writes nothing, so no write yields.
            relax();
            let Some(top) = stack.last_mut() else {
                return Err(Error::Invalid);
            };
            if top.next >= top.end {
                let done = stack.pop().ok_or(Error::Invalid)?;
                let Some(parent) = stack.last_mut() else {
                    for (slot, b) in set.iter_mut().zip(&done.children) {
                        *slot = *b;
                    }
                    return Ok(set);
                };
                let b = self.indirect(&done, old)?;
                if let Some(p) = placed.as_deref_mut() {
                    crate::mem::try_push(p, b)?;
                }
                parent.children.push(b);
                continue;
            }
            let i = top.next;
            if top.end - top.beg <= top.cap() {
                top.children.push(items[i]);
                top.next += 1;
                continue;
            }
            let sub = top.sub;
            let id = |b: &Blockref| if sub >= 64 { 0 } else { b.key >> sub };
            let mut j = i + 1;
            while j < top.end && id(&items[j]) == id(&items[i]) {
                j += 1;
                if (j - i) % crate::mem::SORT_CHUNK == 0 {
                    relax();
                }
            }
            top.next = j;
            if j - i == 1 {
                top.children.push(items[i]);
                continue;
            }
            if stack.len() >= BUILD_DEPTH {
                return Err(Error::TooBig);
            }
            let diff = items[i].key ^ items[j - 1].key_end();
            let kb = (64 - diff.leading_zeros()) as u8;
            let key = if kb >= 64 {
                0
            } else {
                items[i].key & !((1u64 << kb) - 1)
            };
            let mut f = Frame::new(i, j, key, kb, IND_SHIFT)?;
            f.sub = split_bits(&items[i..j], IND_ENTRIES, &relax);
            stack.push(f);
        }
    }

    /// The INDIRECT block of a finished frame: the block `old` names for its key range if it
    /// holds these very bytes (same size, method and check code), or a new one written.
    fn indirect(
        &mut self,
        f: &Frame,
        old: &dyn Fn(u64, u8) -> Option<Blockref>,
    ) -> Result<Blockref> {
        let raw = indirect_bytes(&f.children, IND_ENTRIES)?;
        let mut b = Blockref::new(BREF_TYPE_INDIRECT, f.key, f.keybits);
        b.methods = METHODS;
        if let Some(o) = old(f.key, f.keybits) {
            let mut same = b;
            same.data_off = o.data_off;
            if o.btype == BREF_TYPE_INDIRECT
                && o.methods == METHODS
                && o.data_bytes() == raw.len()
                && same.set_check(&raw).is_ok()
                && same.check == o.check
            {
                return Ok(o);
            }
        }
        self.write_indirect(b, &raw, &f.children)
    }

    /// Write `raw`, the bytes of INDIRECT block `b` holding `entries`: its modify_tid is
    /// at least each entry's (a parent's modify_tid covers its children's).
    pub fn write_indirect(
        &mut self,
        b: Blockref,
        raw: &[u8],
        entries: &[Blockref],
    ) -> Result<Blockref> {
        // DEVIATION: HAMMER2 keeps a leaf count and statistics of the subtree in an indirect
        // blockref; they stay zero here: fsck ignores them and the kernel reads them as
        // hints only, so a block without them is still a valid one.
        let mut nb = self.write_block(b, raw)?;
        // The check code covers the payload only: the header's TID may still rise.
        nb.modify_tid = entries
            .iter()
            .fold(nb.modify_tid, |t, e| t.max(e.modify_tid));
        Ok(nb)
    }
}

/// The bytes of an INDIRECT block of `cap` entries holding `entries` (the rest empty);
/// [`Error::Invalid`] when they do not fit, rather than a block missing some.
pub fn indirect_bytes(entries: &[Blockref], cap: usize) -> Result<Vec<u8>> {
    if entries.len() > cap {
        return Err(Error::Invalid);
    }
    let mut raw = Vec::new();
    raw.try_reserve_exact(cap * BREF_BYTES)?;
    raw.resize(cap * BREF_BYTES, 0);
    for (chunk, b) in raw.chunks_exact_mut(BREF_BYTES).zip(entries) {
        chunk.copy_from_slice(&b.encode());
    }
    Ok(raw)
}

/// One table being built: items `beg..end`, the next one to place, the key range.
struct Frame {
    beg: usize,
    end: usize,
    next: usize,
    key: u64,
    keybits: u8,
    /// log2 of the entries of this table (2 for a blockset, 7 for an indirect block).
    shift: u8,
    /// Entries whose keys agree above this bit go into one child.
    sub: u8,
    children: Vec<Blockref>,
}

impl Frame {
    fn new(beg: usize, end: usize, key: u64, keybits: u8, shift: u32) -> Result<Frame> {
        let mut children = Vec::new();
        children.try_reserve_exact(1 << shift)?;
        Ok(Frame {
            beg,
            end,
            next: beg,
            key,
            keybits,
            shift: shift as u8,
            sub: 64,
            children,
        })
    }

    fn cap(&self) -> usize {
        1 << self.shift
    }
}

/// The bit `sub` (at least every item's key bits) by which `items` are grouped
/// (`key >> sub`) into the children of one table: at most `cap` groups, and among those
/// the coarsest grouping whose groups still fit `cap` entries each, so tables are as full
/// as they can be (128 consecutive inodes, or 128 data blocks of a file, per indirect
/// block, as the kernel's). `relax` is called every [`crate::mem::SORT_CHUNK`] items looked
/// at.
fn split_bits(items: &[Blockref], cap: usize, relax: &dyn Fn()) -> u8 {
    let id = |b: &Blockref, sub: u8| if sub >= 64 { 0 } else { b.key >> sub };
    // Groups and the largest group at `sub`, in one pass over the sorted items.
    let stats = |sub: u8| {
        let (mut groups, mut largest, mut run) = (1usize, 1usize, 1usize);
        for (k, w) in items.windows(2).enumerate() {
            if k % crate::mem::SORT_CHUNK == 0 {
                relax();
            }
            if id(&w[0], sub) == id(&w[1], sub) {
                run += 1;
            } else {
                groups += 1;
                run = 1;
            }
            largest = largest.max(run);
        }
        (groups, largest)
    };
    // The finest `sub` with at most `cap` groups (groups only merge as `sub` grows).
    let mut lo = items.iter().map(|b| b.keybits).max().unwrap_or(0);
    let mut hi = 64u8;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if stats(mid).0 <= cap {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    // Then the coarsest whose largest group still fits a table.
    let (mut best, mut top) = (lo, 64u8);
    if stats(lo).1 <= cap {
        while best < top {
            let mid = best + (top - best).div_ceil(2);
            if stats(mid).1 <= cap {
                best = mid;
            } else {
                top = mid - 1;
            }
        }
    }
    best
}

/// What a tree walk does with the tables of the current tree ([`Txn::seen`]).
enum Tables<'s> {
    /// Neither records nor skips any.
    Walk,
    /// Records each table block it reaches.
    Record(&'s mut Vec<(u64, u64)>),
    /// Skips the subtree below each table block named here (sorted): it is marked already.
    Skip(&'s [(u64, u64)]),
}

/// Whether `b` is a table block named in `seen` (sorted).
pub(crate) fn seen_table(seen: &[(u64, u64)], b: &Blockref) -> bool {
    seen.binary_search(&block_name(b)).is_ok()
}

/// The maps a tree walk marks: two granule maps and a count of blocks per granule, each
/// optional.
struct Marks<'m> {
    a: Option<&'m mut GranuleBits>,
    b: Option<&'m mut GranuleBits>,
    counts: Option<&'m mut GranuleCounts>,
}

/// Mark every block the tree below `set` reaches in `marks`.
/// A `strict` walk fails on any fault; otherwise faults of the media (damage, key order)
/// are skipped with the subtree they concern, but a device error or running out of memory
/// still fails: the blocks below might be in use and would go unmarked.
fn mark_tree<D: BlockDev>(
    vol: &Volume<D>,
    set: &[Blockref; SET_COUNT],
    marks: Marks<'_>,
    strict: bool,
    tables: Tables<'_>,
) -> Result<()> {
    let Marks {
        mut a,
        mut b,
        mut counts,
    } = marks;
    if a.is_none() && b.is_none() && counts.is_none() {
        return Ok(());
    }
    let (mut record, skip) = match tables {
        Tables::Walk => (None, None),
        Tables::Record(r) => (Some(r), None),
        Tables::Skip(s) => (None, Some(s)),
    };
    // A blockref that does not locate reaches no space (the walk reports it when it
    // has to read it).
    let prune = |r: &Blockref| skip.is_some_and(|s| seen_table(s, r));
    let mut mark = |r: &Blockref, count: bool| -> Result<()> {
        if let Ok((off, len)) = vol.locate(r) {
            for m in [a.as_deref_mut(), b.as_deref_mut()].into_iter().flatten() {
                m.mark(off, len as u64)?;
            }
            if let Some(c) = counts.as_deref_mut().filter(|_| count) {
                c.add(off, len as u64)?;
            }
        }
        Ok(())
    };
    // The walk visits (and so counts) every root it does not prune: a root is counted here
    // only when pruned, or its granule would count it twice and never come free.
    for r in set {
        mark(r, prune(r))?;
    }
    let mut visit = |r: &Blockref, _: Option<&InodeData>| {
        mark(r, true).map_err(|e| {
            let cause = match e {
                Error::NoMem => Cause::NoMem,
                _ => Cause::TooBig,
            };
            ReadError::new(cause, r.data_off)
        })?;
        if let Some(rec) = record.as_deref_mut() {
            if matches!(r.btype, BREF_TYPE_INODE | BREF_TYPE_INDIRECT) {
                crate::mem::try_push(rec, block_name(r))
                    .map_err(|_| ReadError::new(Cause::NoMem, r.data_off))?;
            }
        }
        Ok(Flow::Continue)
    };
    let mut tolerate = |e: ReadError| match e.cause {
        Cause::Device(_) | Cause::NoMem => Err(e),
        _ => Ok(()),
    };
    let fault: Option<&mut dyn FnMut(ReadError) -> super::ReadResult<()>> =
        if strict { None } else { Some(&mut tolerate) };
    vol.walk_all_pruned(set, &prune, &mut visit, fault)
        .map_err(read_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::freemap::GRANULE_BYTES;
    use crate::volume::newfs::NewPfs;
    use crate::volume::testdev::newfs_sparse;

    /// A granule comes free only when its count drops to zero: a block counted twice (the
    /// roots of the blockset, say) would keep its granule used for as long as the mount lives.
    #[test]
    fn a_tree_counts_each_block_once() {
        let pfs = [NewPfs {
            label: b"DATA",
            pfs_type: crate::media::PFSTYPE_MASTER,
            clid: [7; 16],
            fsid: [1; 16],
            nmasters: 1,
        }];
        let vol = Volume::open(newfs_sparse(64 << 20, &pfs)).unwrap();
        let set = vol.header().sroot_blockset;
        let fs = vol.header().fs_size();
        let mut counts = GranuleCounts::new(fs).unwrap();
        let mut bits = GranuleBits::new(fs).unwrap();
        let marks = Marks {
            a: Some(&mut bits),
            b: None,
            counts: Some(&mut counts),
        };
        mark_tree(&vol, &set, marks, true, Tables::Walk).unwrap();
        let mut want = 0u64;
        vol.walk_all(&set, &mut |r, _| {
            if let Ok((off, len)) = vol.locate(r) {
                want += (off + len as u64 - 1) / GRANULE_BYTES - off / GRANULE_BYTES + 1;
            }
            Ok(Flow::Continue)
        })
        .unwrap();
        assert!(want >= 2, "the super-root and the PFS root at least");
        assert_eq!(counts.total(), want);
    }

    /// An indirect block's bytes hold every entry given or none: more entries than slots
    /// is an error, not a block silently missing the last ones.
    #[test]
    fn indirect_bytes_refuses_more_entries_than_slots() {
        let e: Vec<Blockref> = (0..5u64)
            .map(|k| Blockref::new(BREF_TYPE_DATA, k << 16, 16))
            .collect();
        assert_eq!(indirect_bytes(&e, 4).err(), Some(Error::Invalid));
        let raw = indirect_bytes(&e[..4], 4).unwrap();
        assert_eq!(raw.len(), 4 * BREF_BYTES);
        for (chunk, b) in raw.chunks_exact(BREF_BYTES).zip(&e) {
            assert_eq!(chunk, &b.encode()[..]);
        }
        let raw = indirect_bytes(&e[..2], 4).unwrap();
        assert!(raw[2 * BREF_BYTES..].iter().all(|&x| x == 0));
    }
}
