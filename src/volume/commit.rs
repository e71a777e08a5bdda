//! The end of a transaction (HAMMER2-MEDIA §10, §12): the freemap written for what the
//! new tree and the header copies that stay reach ([`super::freemap_write`]), then, after
//! a flush, the new volume header in the next slot, then a flush. The header write is the
//! commit point.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::block::zeroed;
use super::freemap_write::{allocatable, changed_leaves, Written};
use super::scan::Flow;
use super::space::{GranuleBits, SpaceCache, TreeId};
use super::txn::{read_err, seen_table, Txn};
use super::BlockDev;
use crate::media::freemap::GRANULE_BYTES;
use crate::media::volhdr::{copy_offset, VOLUME_BYTES};
use crate::media::{Blockref, VolumeHeader, BREF_BYTES, SET_COUNT};
use crate::mem::try_box;
use crate::{Error, Result};

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
        // DEVIATION: the freemap marks what the new tree and the header copies that stay
        // reach, so space nothing reaches any more is free at once (HAMMER2 leaves it
        // allocated until two bulkfree passes): only this writer has the volume open, and
        // the allocator already keeps away from every valid copy's blocks.
        // What the new tree reaches, added to what the remaining copies reach.
        let mut keep = core::mem::take(&mut self.keep);
        match &new_reach {
            Some(reach) => keep.or(reach, &relax)?,
            None => read_back(vol, &set, &self.seen, &mut keep)?,
        }
        // The current freemap is what the trees of the header copies reach when this cache's
        // last commit wrote it and no copy changed since: only the leaves whose granules
        // change state are written, those of the blocks written and those of the granules
        // the overwritten copy's tree alone reached and the new tree does not.
        let basis = self
            .space
            .as_ref()
            .and_then(|s| s.freemap.as_ref())
            .filter(|(id, _)| *id == TreeId::of(old))
            .map(|(_, used)| *used);
        let mut update = None;
        if let (Some(used), Some(space), Some(_)) = (basis, self.space.as_ref(), &new_reach) {
            let lost = space.zones[self.next_zone].as_ref().map(|(_, b)| b);
            let changed = changed_leaves(&self.wrote, &keep, lost, allocatable(old)?, &relax)?;
            update = match self.freemap_update(&keep, &changed, used) {
                // A freemap this writer cannot patch (a node slot or a leaf count it does not
                // read as its own) is rebuilt whole: the rebuild writes each block at the same
                // rotation place, from the same current header, over what the update wrote.
                Err(Error::Invalid) => None,
                r => r?,
            };
        }
        let Written { roots, used } = match update {
            Some(w) => w,
            None => self.freemap_full(&keep)?,
        };
        let (h, hbuf) = new_header(old, self.tid, &set, &roots, used)?;
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
                space.freemap = Some((TreeId::of(&h), used));
                Some(space)
            }
            _ => None,
        };
        Ok((h, space))
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
            keep.mark(off, len as u64)?;
        }
    }
    let prune = |b: &Blockref| seen_table(seen, b);
    vol.walk_all_pruned(
        set,
        &prune,
        &mut |b, _| {
            if b.size_radix() != 0 {
                let (off, len) = vol.locate(b)?;
                keep.mark(off, len as u64)
                    .map_err(|_| super::ReadError::new(super::Cause::NoMem, b.data_off))?;
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
