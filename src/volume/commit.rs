//! The end of a transaction (HAMMER2-MEDIA §10, §12): the freemap rewritten for what the
//! new tree and the header copies that stay reach, then, after a flush, the new volume
//! header in the next slot, then a flush. The header write is the commit point.
//!
//! Freemap blocks move as the kernel moves them (`hammer2_freemap_reserve`): a block of
//! level L for 1 GiB (or 256 GiB) at key K lives in K's reserved segment at 64 KiB block
//! `1 + 5 * idx + (L - 1)`, and each commit moves it to `idx + 1` (mod 8), so no freemap
//! block a remaining header copy reaches is overwritten.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::block::zeroed;
use super::freemap::FreemapVisit;
use super::scan::Flow;
use super::space::{in_reserved, GranuleBits, SpaceCache, TreeId, LEAF_SPAN, RESERVED_SEG};
use super::txn::{read_err, seen_table, Txn};
use super::BlockDev;
use crate::media::check::crc32c;
use crate::media::freemap::{
    BMAP_BYTES, BMAP_COUNT, BMAP_SPAN, FREEMAP_BLOCK_BYTES, FREEMAP_BLOCK_RADIX, GRANULES,
    GRANULE_BYTES, LEAF_KEYBITS, NODE_KEYBITS,
};
use crate::media::volhdr::{copy_offset, VOLUME_BYTES};
use crate::media::{
    enc_methods, Blockref, VolumeHeader, BREF_BYTES, BREF_TYPE_DATA, BREF_TYPE_FREEMAP_LEAF,
    BREF_TYPE_FREEMAP_NODE, CHECK_FREEMAP, COMP_NONE, SET_COUNT,
};
use crate::mem::try_box;
use crate::{Error, Result};

/// Rotation sets of freemap blocks in each reserved segment.
const FREEMAP_SETS: u64 = 8;
/// Bytes a level-2 freemap node maps (256 GiB).
const NODE_SPAN: u64 = 1 << NODE_KEYBITS[0];
/// A 64 KiB slot of a reserved segment.
const SLOT: u64 = 65536;

/// Where a freemap block of `level` (1: leaf, 2: node) for `key` goes at rotation `idx`.
fn freemap_place(key: u64, level: u64, idx: u64) -> u64 {
    key + (1 + 5 * idx + (level - 1)) * SLOT
}

/// The rotation index of a freemap block of `level` at byte offset `off`.
fn freemap_idx(off: u64, level: u64) -> u64 {
    ((off % LEAF_SPAN) / SLOT).saturating_sub(level) / 5 % FREEMAP_SETS
}

impl<D: BlockDev> Txn<'_, D> {
    /// Commit with `sroot` as the new super-root blockref: write the freemap and the volume
    /// header (HAMMER2-MEDIA §12), flushing the device before and after the header. Returns
    /// the header written (boxed: it would otherwise sit in the caller's frame under every
    /// device read and write of the commit, on a kernel's small stack). On any error nothing
    /// committed has changed.
    pub fn commit(self, sroot: Blockref) -> Result<Box<VolumeHeader>> {
        self.commit_cached(sroot).map(|(h, _)| h)
    }

    /// [`Txn::commit`], returning with the header the space cache of the new tree when the
    /// transaction began with [`Txn::begin_cached`] and that cache counted the current tree.
    pub fn commit_cached(
        mut self,
        sroot: Blockref,
    ) -> Result<(Box<VolumeHeader>, Option<Box<SpaceCache>>)> {
        let vol = self.vol;
        let old = vol.header();
        let mut set = old.sroot_blockset;
        set[0] = sroot;
        // With a space cache, the new tree's space is the current tree's with the blocks
        // written added and those dropped removed: nothing is read back.
        let relax = || vol.dev().yield_point();
        let new_reach = match self.space.as_mut() {
            Some(space) => space.advance(vol.zone(), &self.wrote, &self.dropped, &relax)?,
            None => None,
        };
        // DEVIATION: the freemap is rebuilt from what the new tree and the header copies that
        // stay reach, so space nothing reaches any more is free at once (HAMMER2 leaves it
        // allocated until two bulkfree passes): only this writer has the volume open, and
        // the allocator already keeps away from every valid copy's blocks.
        // What the new tree reaches, added to what the remaining copies reach.
        let keep = &mut self.keep;
        match &new_reach {
            Some(reach) => keep.or(reach, &relax),
            None => read_back(vol, &set, &self.seen, keep)?,
        }

        // The current freemap's blocks, for their rotation. A block that does not read
        // still has its place; a damaged node hides its children's, and a blockref that
        // does not decode its own: the rotation cannot be known, so the commit is refused
        // rather than placing the new block where an older copy's may be.
        let mut old_blocks: Vec<(u8, u64, u64)> = Vec::new();
        vol.walk_freemap(&mut |v| {
            let b = match v {
                FreemapVisit::Node(b) | FreemapVisit::Leaf(b, _) => b,
                FreemapVisit::Fault(_, Some(b)) if b.btype == BREF_TYPE_FREEMAP_LEAF => b,
                FreemapVisit::Fault(e, _) => return Err(e),
            };
            old_blocks
                .try_reserve(1)
                .map_err(|_| super::ReadError::new(super::Cause::NoMem, 0))?;
            old_blocks.push((b.btype, b.key, b.data_off & !0x3F));
            Ok(Flow::Continue)
        })
        .map_err(read_err)?;
        let rotated = |btype: u8, key: u64, level: u64| {
            let idx = old_blocks
                .iter()
                .find(|(t, k, _)| *t == btype && *k == key)
                .map_or(0, |(_, _, off)| {
                    (freemap_idx(*off, level) + 1) % FREEMAP_SETS
                });
            freemap_place(key, level, idx)
        };

        let fs = old.fs_size();
        let lo_all = old
            .allocator_beg
            .checked_next_multiple_of(BMAP_SPAN)
            .ok_or(Error::Invalid)?;
        let hi = fs - fs % BMAP_SPAN;
        let mut block = zeroed(FREEMAP_BLOCK_BYTES).map_err(read_err)?;
        let mut leaves: Vec<Blockref> = Vec::new();
        let mut used_granules = 0u64;
        let mut gib = 0u64;
        while gib < fs {
            let lo = lo_all.max(gib + RESERVED_SEG);
            let hi_g = hi.min(gib + LEAF_SPAN);
            let had_leaf = old_blocks
                .iter()
                .any(|(t, k, _)| *t == BREF_TYPE_FREEMAP_LEAF && *k == gib);
            // A leaf for every GiB that had one or now holds allocations (new leaves are
            // made on a GiB's first allocation, as `hammer2_freemap_alloc` makes them).
            if had_leaf || keep.any(lo, hi_g.saturating_sub(lo)) {
                let (n, avail) =
                    fill_leaf(&mut block, keep, gib, lo, hi_g, &|| vol.dev().yield_point());
                used_granules += n;
                let off = rotated(BREF_TYPE_FREEMAP_LEAF, gib, 1);
                let mut b = freemap_bref(BREF_TYPE_FREEMAP_LEAF, gib, LEAF_KEYBITS, off, &block);
                b.check[8..16].copy_from_slice(&avail.to_le_bytes());
                b.mirror_tid = self.tid;
                b.modify_tid = self.tid;
                vol.write_at(off, &block)?;
                leaves.try_reserve(1)?;
                leaves.push(b);
            }
            vol.dev().yield_point();
            gib += LEAF_SPAN;
        }
        let roots = if leaves.len() <= SET_COUNT {
            leaves
        } else {
            self.freemap_nodes(&leaves, &mut block, &rotated)?
        };
        if roots.len() > SET_COUNT {
            // DEVIATION: freemaps above the second level (volumes using more than four
            // 256 GiB ranges) are not written; the commit is refused before any header.
            return Err(Error::TooBig);
        }
        let (h, hbuf) = new_header(old, self.tid, &set, &roots, used_granules)?;
        vol.dev().flush()?;
        vol.write_at(copy_offset(self.next_zone), &hbuf)?;
        vol.dev().flush()?;
        let space = match (self.space.take(), new_reach) {
            (Some(mut space), Some(reach)) => {
                // The counts count the new tree now; the slot written holds it.
                if let Some((z, _)) = space.counts.as_mut() {
                    *z = self.next_zone;
                }
                space.zones[self.next_zone] = Some((TreeId::of(&h), reach));
                Some(space)
            }
            _ => None,
        };
        Ok((h, space))
    }

    /// Level-2 nodes over `leaves` (each node maps 256 GiB), written; their blockrefs.
    fn freemap_nodes(
        &mut self,
        leaves: &[Blockref],
        block: &mut [u8],
        rotated: &dyn Fn(u8, u64, u64) -> u64,
    ) -> Result<Vec<Blockref>> {
        let mut nodes = Vec::new();
        let mut i = 0;
        while i < leaves.len() {
            let key = leaves[i].key - leaves[i].key % NODE_SPAN;
            block.fill(0);
            let mut avail = 0u64;
            while i < leaves.len() && leaves[i].key - leaves[i].key % NODE_SPAN == key {
                let slot = ((leaves[i].key - key) / LEAF_SPAN) as usize;
                let at = slot * BREF_BYTES;
                block
                    .get_mut(at..at + BREF_BYTES)
                    .ok_or(Error::Invalid)?
                    .copy_from_slice(&leaves[i].encode());
                avail += u64::from_le_bytes(leaves[i].check[8..16].try_into().unwrap_or([0; 8]));
                i += 1;
            }
            let off = rotated(BREF_TYPE_FREEMAP_NODE, key, 2);
            let mut b = freemap_bref(BREF_TYPE_FREEMAP_NODE, key, NODE_KEYBITS[0], off, block);
            b.check[8..16].copy_from_slice(&avail.to_le_bytes());
            b.mirror_tid = self.tid;
            b.modify_tid = self.tid;
            self.vol.write_at(off, block)?;
            nodes.try_reserve(1)?;
            nodes.push(b);
        }
        Ok(nodes)
    }
}

/// Mark in `keep` what the tree below `set` reaches, reading back only the subtrees that are
/// not the current tree's table blocks named in `seen` (those are in `keep` already).
fn read_back<D: BlockDev>(
    vol: &super::Volume<D>,
    set: &[Blockref; SET_COUNT],
    seen: &[(u64, u64)],
    keep: &mut GranuleBits,
) -> Result<()> {
    for b in set {
        if let Ok((off, len)) = vol.locate(b) {
            keep.mark(off, len as u64);
        }
    }
    let prune = |b: &Blockref| seen_table(seen, b);
    vol.walk_all_pruned(
        set,
        &prune,
        &mut |b, _| {
            if b.size_radix() != 0 {
                let (off, len) = vol.locate(b)?;
                keep.mark(off, len as u64);
            }
            Ok(Flow::Continue)
        },
        None,
    )
    .map_err(read_err)
}

/// The header `old` becomes at commit `tid` (super-root `set`, freemap `roots`, `used`
/// granules allocated), on the heap, and its encoding. Out of line: the header's copies and
/// temporaries are gone from the stack before the device writes it.
#[inline(never)]
fn new_header(
    old: &VolumeHeader,
    tid: u64,
    set: &[Blockref; SET_COUNT],
    roots: &[Blockref],
    used: u64,
) -> Result<(Box<VolumeHeader>, Vec<u8>)> {
    let mut h = try_box(old.clone())?;
    h.mirror_tid = tid;
    h.freemap_tid = tid;
    h.sroot_blockset = *set;
    h.freemap_blockset = [[0u8; BREF_BYTES]; SET_COUNT];
    for (raw, b) in h.freemap_blockset.iter_mut().zip(roots) {
        *raw = b.encode();
    }
    h.allocator_free = h.allocator_size.saturating_sub(used * GRANULE_BYTES);
    let mut hbuf = zeroed(VOLUME_BYTES).map_err(read_err)?;
    h.encode_into(&mut hbuf).map_err(Error::from)?;
    Ok((h, hbuf))
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
    keep: &super::space::GranuleBits,
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
