//! The freemap a commit writes (HAMMER2-MEDIA §10): a leaf per GiB holding allocations,
//! filled from the granules the kept trees reach, and level-2 nodes above the leaves past
//! four of them.
//!
//! Two ways to write it. A full rebuild reads the whole current freemap (for the rotation
//! of every block) and writes every leaf. An update, when the current freemap is known to
//! be what the trees of the header copies reach, rewrites only the leaves whose granules
//! change state and the nodes above them, reading only those nodes, and keeps every other
//! blockref: HAMMER2's flush likewise copies on write only the freemap chains an allocation
//! or a free modified.
//!
//! Freemap blocks move as the kernel moves them (`hammer2_freemap_reserve`): a block of
//! level L for 1 GiB (or 256 GiB) at key K lives in K's reserved segment at 64 KiB block
//! `1 + 5 * idx + (L - 1)`, and each commit that rewrites it moves it to `idx + 1` (mod 8).
//! A block is rewritten at most once per commit, so the copy a remaining header reaches
//! (one of the last four commits) is never the one overwritten.

use alloc::vec::Vec;

use super::block::zeroed;
use super::freemap::FreemapVisit;
use super::scan::Flow;
use super::space::{extent, in_reserved, GranuleBits, LEAF_SPAN, RESERVED_SEG};
use super::txn::{read_err, Txn};
use super::BlockDev;
use crate::media::check::crc32c;
use crate::media::freemap::{
    decode_bref, FreemapCheck, BMAP_BYTES, BMAP_COUNT, BMAP_SPAN, FREEMAP_BLOCK_BYTES,
    FREEMAP_BLOCK_RADIX, GRANULES, GRANULE_BYTES, LEAF_KEYBITS, NODE_KEYBITS,
};
use crate::media::{
    enc_methods, Blockref, BREF_BYTES, BREF_TYPE_DATA, BREF_TYPE_EMPTY, BREF_TYPE_FREEMAP_LEAF,
    BREF_TYPE_FREEMAP_NODE, CHECK_FREEMAP, COMP_NONE, SET_COUNT,
};
use crate::{Error, Result};

/// Rotation sets of freemap blocks in each reserved segment.
const FREEMAP_SETS: u64 = 8;
/// Bytes a level-2 freemap node maps (256 GiB).
const NODE_SPAN: u64 = 1 << NODE_KEYBITS[0];
/// A 64 KiB slot of a reserved segment.
const SLOT: u64 = 65536;

/// The freemap written: the blockrefs for the header's freemap blockset and the granules
/// its leaves mark allocated.
pub(crate) struct Written {
    pub roots: Vec<Blockref>,
    pub used: u64,
}

/// Where a freemap block of `level` (1: leaf, 2: node) for `key` goes at rotation `idx`.
fn freemap_place(key: u64, level: u64, idx: u64) -> u64 {
    key + (1 + 5 * idx + (level - 1)) * SLOT
}

/// The rotation index of a freemap block of `level` at byte offset `off`.
fn freemap_idx(off: u64, level: u64) -> u64 {
    ((off % LEAF_SPAN) / SLOT).saturating_sub(level) / 5 % FREEMAP_SETS
}

/// Where the block of `level` for `key` goes when rewritten: the set after the one its
/// current version, `old`, is in; set 0 for a new block.
fn moved(old: Option<&Blockref>, key: u64, level: u64) -> u64 {
    let idx = old.map_or(0, |b| {
        (freemap_idx(b.data_off & !0x3F, level) + 1) % FREEMAP_SETS
    });
    freemap_place(key, level, idx)
}

/// The allocatable bytes of the volume `h` describes: `allocator_beg` rounded up and the
/// filesystem's size rounded down to 4 MiB (`hammer2_freemap_init`).
pub(crate) fn allocatable(h: &crate::media::VolumeHeader) -> Result<(u64, u64)> {
    let lo = h
        .allocator_beg
        .checked_next_multiple_of(BMAP_SPAN)
        .ok_or(Error::Invalid)?;
    let fs = h.fs_size();
    Ok((lo, fs - fs % BMAP_SPAN))
}

/// The leaves (their keys, ascending) whose granules change state when the freemap of
/// `lost | keep`, less the blocks `wrote`, becomes the freemap of `keep`: the leaves of the
/// blocks written that `keep` holds, and those of the granules of `lost` that `keep` no
/// longer marks. `bounds`: the allocatable bytes (nothing else has freemap bits).
pub(crate) fn changed_leaves(
    wrote: &[u64],
    keep: &GranuleBits,
    lost: Option<&GranuleBits>,
    bounds: (u64, u64),
    relax: &dyn Fn(),
) -> Result<Vec<u64>> {
    let mut out = match lost {
        Some(lost) => lost.gibs_lost(keep, bounds, relax)?,
        None => Vec::new(),
    };
    for (i, d) in wrote.iter().enumerate() {
        if i % crate::mem::SORT_CHUNK == 0 {
            relax();
        }
        // A block written and dropped again was free before and is free after.
        if let Some((off, _)) = extent(*d).filter(|(o, l)| keep.any(*o, *l)) {
            crate::mem::try_push(&mut out, off - off % LEAF_SPAN)?;
        }
    }
    crate::mem::sort_yielding(&mut out, |k| *k, relax)?;
    out.dedup();
    Ok(out)
}

impl<D: BlockDev> Txn<'_, D> {
    /// The freemap of `keep` rebuilt in full: every leaf written (one for each GiB that had
    /// one or now holds allocations, as `hammer2_freemap_alloc` makes them on a GiB's first
    /// allocation), with the nodes above them. The whole current freemap is read for the
    /// rotation of its blocks: a leaf that does not read still has its place; a damaged node
    /// hides its children's, and a blockref that does not decode its own: the rotation cannot
    /// be known, so the commit is refused rather than placing the new block where an older
    /// copy's may be.
    pub(crate) fn freemap_full(&mut self, keep: &GranuleBits) -> Result<Written> {
        let vol = self.vol;
        let mut old: Vec<Blockref> = Vec::new();
        vol.walk_freemap(&mut |v| {
            let b = match v {
                FreemapVisit::Node(b) | FreemapVisit::Leaf(b, _) => b,
                FreemapVisit::Fault(_, Some(b)) if b.btype == BREF_TYPE_FREEMAP_LEAF => b,
                FreemapVisit::Fault(e, _) => return Err(e),
            };
            crate::mem::try_push(&mut old, *b)
                .map_err(|_| super::ReadError::new(super::Cause::NoMem, 0))?;
            Ok(Flow::Continue)
        })
        .map_err(read_err)?;
        let find = |btype: u8, key: u64| old.iter().find(|b| b.btype == btype && b.key == key);
        let fs = vol.header().fs_size();
        let mut block = zeroed(FREEMAP_BLOCK_BYTES).map_err(read_err)?;
        let mut leaves: Vec<Blockref> = Vec::new();
        let mut used = 0u64;
        let mut gib = 0u64;
        while gib < fs {
            let prev = find(BREF_TYPE_FREEMAP_LEAF, gib);
            if let Some((b, n)) = self.write_leaf(keep, gib, prev, &mut block)? {
                used += n;
                crate::mem::try_push(&mut leaves, b)?;
            }
            vol.dev().yield_point();
            gib += LEAF_SPAN;
        }
        let roots = if leaves.len() <= SET_COUNT {
            leaves
        } else {
            self.nodes_over(&leaves, &mut block, &|key| {
                find(BREF_TYPE_FREEMAP_NODE, key).copied()
            })?
        };
        too_wide(&roots)?;
        Ok(Written { roots, used })
    }

    /// The current freemap, which marks `used` granules and is exactly what `keep` marks
    /// outside the leaves `changed` (ascending), brought to `keep`: those leaves rewritten
    /// (a GiB without a leaf gets one once it holds allocations), the nodes above them read
    /// and rewritten, every other blockref kept. `None` when the current freemap is not of
    /// the shape this writer gives it (leaves, or level-2 nodes, in the header): it is then
    /// rebuilt in full.
    pub(crate) fn freemap_update(
        &mut self,
        keep: &GranuleBits,
        changed: &[u64],
        used: u64,
    ) -> Result<Option<Written>> {
        let vol = self.vol;
        let mut roots: Vec<Blockref> = Vec::new();
        for raw in &vol.header().freemap_blockset {
            let b = decode_bref(raw)?;
            if b.btype != BREF_TYPE_EMPTY {
                crate::mem::try_push(&mut roots, b)?;
            }
        }
        let all = |t: u8| roots.iter().all(|b| b.btype == t);
        let mut used = Used(used);
        let mut block = zeroed(FREEMAP_BLOCK_BYTES).map_err(read_err)?;
        if all(BREF_TYPE_FREEMAP_LEAF) {
            for &gib in changed {
                let at = roots.binary_search_by_key(&gib, |b| b.key);
                let prev = at.ok().map(|i| roots[i]);
                let Some((b, n)) = self.write_leaf(keep, gib, prev.as_ref(), &mut block)? else {
                    continue;
                };
                used.replace(prev.as_ref(), &b, n)?;
                match at {
                    Ok(i) => roots[i] = b,
                    Err(i) => {
                        roots.try_reserve(1)?;
                        roots.insert(i, b);
                    }
                }
            }
            if roots.len() > SET_COUNT {
                // The fifth leaf: level-2 nodes over them all, new.
                roots = self.nodes_over(&roots, &mut block, &|_| None)?;
            }
        } else if all(BREF_TYPE_FREEMAP_NODE) && roots.iter().all(|b| b.keybits == NODE_KEYBITS[0])
        {
            let mut node = zeroed(FREEMAP_BLOCK_BYTES).map_err(read_err)?;
            let mut i = 0;
            while i < changed.len() {
                let key = changed[i] - changed[i] % NODE_SPAN;
                let at = roots.binary_search_by_key(&key, |b| b.key);
                let prev = at.ok().map(|i| roots[i]);
                match &prev {
                    Some(p) => vol.read_freemap_block(p, &mut node).map_err(read_err)?,
                    None => node.fill(0),
                }
                let mut touched = false;
                while i < changed.len() && changed[i] - changed[i] % NODE_SPAN == key {
                    let gib = changed[i];
                    i += 1;
                    let old_leaf = slot(&node, key, gib)?;
                    let Some((b, n)) = self.write_leaf(keep, gib, old_leaf.as_ref(), &mut block)?
                    else {
                        continue;
                    };
                    used.replace(old_leaf.as_ref(), &b, n)?;
                    put_slot(&mut node, key, &b)?;
                    touched = true;
                }
                if !touched {
                    continue;
                }
                let b = self.write_node(key, &node, prev.as_ref())?;
                match at {
                    Ok(j) => roots[j] = b,
                    Err(j) => {
                        roots.try_reserve(1)?;
                        roots.insert(j, b);
                    }
                }
            }
        } else {
            return Ok(None);
        }
        too_wide(&roots)?;
        Ok(Some(Written {
            roots,
            used: used.0,
        }))
    }

    /// Level-2 nodes over `leaves` (ascending; each node maps 256 GiB), written in the set
    /// after that of `old(key)`, the current node of that key; their blockrefs.
    fn nodes_over(
        &mut self,
        leaves: &[Blockref],
        block: &mut [u8],
        old: &dyn Fn(u64) -> Option<Blockref>,
    ) -> Result<Vec<Blockref>> {
        let mut nodes = Vec::new();
        let mut i = 0;
        while i < leaves.len() {
            let key = leaves[i].key - leaves[i].key % NODE_SPAN;
            block.fill(0);
            while i < leaves.len() && leaves[i].key - leaves[i].key % NODE_SPAN == key {
                put_slot(block, key, &leaves[i])?;
                i += 1;
            }
            let b = self.write_node(key, block, old(key).as_ref())?;
            crate::mem::try_push(&mut nodes, b)?;
        }
        Ok(nodes)
    }

    /// Write the leaf of `keep` for the GiB at `gib`, in the set after `old`'s (the current
    /// leaf, if any): its blockref and the granules it marks allocated. `None`, nothing
    /// written, for a GiB without a leaf that holds no allocations.
    fn write_leaf(
        &mut self,
        keep: &GranuleBits,
        gib: u64,
        old: Option<&Blockref>,
        block: &mut [u8],
    ) -> Result<Option<(Blockref, u64)>> {
        let (lo_all, hi) = allocatable(self.vol.header())?;
        let lo = lo_all.max(gib + RESERVED_SEG);
        let hi = hi.min(gib + LEAF_SPAN);
        if old.is_none() && !keep.any(lo, hi.saturating_sub(lo)) {
            return Ok(None);
        }
        let dev = self.vol.dev();
        let (n, avail) = fill_leaf(block, keep, gib, lo, hi, &|| dev.yield_point());
        let off = moved(old, gib, 1);
        let mut b = freemap_bref(BREF_TYPE_FREEMAP_LEAF, gib, LEAF_KEYBITS, off, block);
        b.check[8..16].copy_from_slice(&avail.to_le_bytes());
        b.mirror_tid = self.tid;
        b.modify_tid = self.tid;
        self.vol.write_at(off, block)?;
        Ok(Some((b, n)))
    }

    /// Write the level-2 node `block` for `key`, in the set after `old`'s: its blockref,
    /// whose `avail` sums its leaves'.
    fn write_node(&mut self, key: u64, block: &[u8], old: Option<&Blockref>) -> Result<Blockref> {
        let avail = block
            .chunks_exact(BREF_BYTES)
            .filter(|s| s[0] != BREF_TYPE_EMPTY)
            .map(|s| u64::from_le_bytes(s[0x48..0x50].try_into().unwrap_or([0; 8])))
            .fold(0u64, u64::saturating_add);
        let off = moved(old, key, 2);
        let mut b = freemap_bref(BREF_TYPE_FREEMAP_NODE, key, NODE_KEYBITS[0], off, block);
        b.check[8..16].copy_from_slice(&avail.to_le_bytes());
        b.mirror_tid = self.tid;
        b.modify_tid = self.tid;
        self.vol.write_at(off, block)?;
        Ok(b)
    }
}

/// The granules a freemap marks allocated, as its leaves are replaced.
struct Used(u64);

impl Used {
    /// Leaf `old` (none: a GiB without a leaf, nothing allocated) replaced by `new`, which
    /// marks `n` granules. Both cover the same bytes, so the granules `old` marked follow
    /// from its `avail` and `new`'s.
    fn replace(&mut self, old: Option<&Blockref>, new: &Blockref, n: u64) -> Result<()> {
        let was = match old {
            Some(o) => {
                let span = FreemapCheck::of(new).avail + n * GRANULE_BYTES;
                span.checked_sub(FreemapCheck::of(o).avail)
                    .ok_or(Error::Invalid)?
                    / GRANULE_BYTES
            }
            None => 0,
        };
        self.0 = self.0.checked_sub(was).ok_or(Error::Invalid)? + n;
        Ok(())
    }
}

/// DEVIATION: freemaps above the second level (volumes using more than four 256 GiB
/// ranges) are not written; the commit is refused before any header.
fn too_wide(roots: &[Blockref]) -> Result<()> {
    if roots.len() > SET_COUNT {
        return Err(Error::TooBig);
    }
    Ok(())
}

/// The slot of the node `block` for `key` that maps the GiB at `gib`: `None` when empty,
/// [`Error::Invalid`] when it holds anything but that GiB's leaf.
fn slot(block: &[u8], key: u64, gib: u64) -> Result<Option<Blockref>> {
    let at = ((gib - key) / LEAF_SPAN) as usize * BREF_BYTES;
    let raw = block.get(at..at + BREF_BYTES).ok_or(Error::Invalid)?;
    let b = decode_bref(raw)?;
    match b.btype {
        BREF_TYPE_EMPTY => Ok(None),
        BREF_TYPE_FREEMAP_LEAF if b.key == gib => Ok(Some(b)),
        _ => Err(Error::Invalid),
    }
}

/// Put `leaf` in its slot of the node `block` for `key`.
fn put_slot(block: &mut [u8], key: u64, leaf: &Blockref) -> Result<()> {
    let at = ((leaf.key - key) / LEAF_SPAN) as usize * BREF_BYTES;
    block
        .get_mut(at..at + BREF_BYTES)
        .ok_or(Error::Invalid)?
        .copy_from_slice(&leaf.encode());
    Ok(())
}

/// A freemap blockref for the 32 KiB `block` at `off`: CRC-32C, every radix possibly
/// free (`bigmask` all ones, as the kernel sets it), `avail` left for the caller.
fn freemap_bref(btype: u8, key: u64, keybits: u8, off: u64, block: &[u8]) -> Blockref {
    let mut b = Blockref::new(btype, key, keybits);
    b.methods = enc_methods(CHECK_FREEMAP, COMP_NONE);
    b.data_off = off | u64::from(FREEMAP_BLOCK_RADIX);
    b.check[..4].copy_from_slice(&crc32c(block).to_le_bytes());
    b.check[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    b
}

/// Fill the leaf for the GiB at `base` (`hammer2_freemap_init` then the allocations): the
/// 4 MiB entries below `lo` or from `hi` on all allocated with nothing available, the
/// others with a granule allocated for each granule `keep` marks. Returns the granules so
/// allocated and the free bytes of the leaf.
fn fill_leaf(
    block: &mut [u8],
    keep: &GranuleBits,
    base: u64,
    lo: u64,
    hi: u64,
    yield_point: &dyn Fn(),
) -> (u64, u64) {
    block.fill(0);
    let mut used = 0u64;
    let mut free = 0u64;
    for (n, e) in block
        .chunks_exact_mut(BMAP_BYTES)
        .enumerate()
        .take(BMAP_COUNT)
    {
        let at = base + n as u64 * BMAP_SPAN;
        let mut bitmap = [0u64; 8];
        let (linear, avail, class);
        if at < lo || at >= hi || in_reserved(at) {
            bitmap = [u64::MAX; 8];
            linear = BMAP_SPAN as i32;
            avail = 0u32;
            class = 0u16;
        } else {
            let mut count = 0u32;
            let mut last = 0usize;
            for g in 0..GRANULES {
                if keep.get(at + g as u64 * GRANULE_BYTES) {
                    bitmap[g / 32] |= 3 << ((g % 32) * 2);
                    count += 1;
                    last = g + 1;
                }
            }
            used += u64::from(count);
            // A 16 KiB aligned `linear` sends the next small allocation to a fresh
            // granule, never into one this writer packed.
            linear = (last as u64 * GRANULE_BYTES) as i32;
            avail = (BMAP_SPAN - u64::from(count) * GRANULE_BYTES) as u32;
            class = if count > 0 {
                (u16::from(BREF_TYPE_DATA) << 8) | 16
            } else {
                0
            };
        }
        free += u64::from(avail);
        e[0..4].copy_from_slice(&linear.to_le_bytes());
        e[4..6].copy_from_slice(&class.to_le_bytes());
        e[0x1C..0x20].copy_from_slice(&avail.to_le_bytes());
        for (i, w) in bitmap.iter().enumerate() {
            e[0x40 + 8 * i..0x48 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        yield_point();
    }
    (used, free)
}
