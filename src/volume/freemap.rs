//! The freemap tree, read side: from the volume header's freemap blockset through
//! FREEMAP_NODE blocks down to the leaves, each block's CRC-32C verified, keys checked to
//! ascend and nest as in the block tables of [`super::scan`]. A faulty block is reported to
//! the visitor and its subtree skipped, so one bad leaf does not hide the others.

use alloc::vec::Vec;

use super::block::zeroed;
use super::scan::Flow;
use super::{BlockDev, Cause, ReadError, ReadResult, Volume};
use crate::media::freemap::{
    decode_bref, verify_block, BmapData, BMAP_BYTES, BMAP_COUNT, FREEMAP_BLOCK_BYTES,
};
use crate::media::{Blockref, BREF_BYTES, BREF_TYPE_EMPTY, BREF_TYPE_FREEMAP_LEAF, KEY_MAX};

/// Out of memory, whatever the allocator's error type.
fn nomem<E>(_: E) -> ReadError {
    ReadError::new(Cause::NoMem, 0)
}

/// Tables open at once: the header's blockset and four node levels.
const DEPTH_MAX: usize = 5;

/// What the freemap walk shows its visitor.
#[derive(Debug)]
pub enum FreemapVisit<'a> {
    /// A FREEMAP_NODE block, verified (its children follow).
    Node(&'a Blockref),
    /// A FREEMAP_LEAF block, verified, with its [`BMAP_COUNT`] entries.
    Leaf(&'a Blockref, &'a [BmapData]),
    /// A fault, with the blockref it concerns when that decoded; the subtree is skipped.
    Fault(ReadError, Option<&'a Blockref>),
}

/// One open table of the walk: its raw blockref slots and the range they must lie in.
struct Level {
    slots: Vec<[u8; BREF_BYTES]>,
    next: usize,
    beg: u64,
    end: u64,
    /// The lowest key the next entry may have (`None`: nothing may follow).
    floor: Option<u64>,
    /// Children must have fewer key bits than this.
    keybits: u8,
}

impl<D: BlockDev> Volume<D> {
    /// Visit the freemap from the header in use, depth first in key order. Faults of the
    /// media go to the visitor as [`FreemapVisit::Fault`]; only running out of memory, or
    /// the visitor's own error, ends the walk with an error.
    pub fn walk_freemap(
        &self,
        f: &mut dyn FnMut(FreemapVisit<'_>) -> ReadResult<Flow>,
    ) -> ReadResult<()> {
        self.walk_freemap_levels(usize::MAX, &mut |_, v| f(v))
    }

    /// [`Self::walk_freemap`], telling the visitor each blockref's level (0: a slot of the
    /// header's freemap blockset, 1: a slot of a node's table there, ...) and opening no
    /// table below `levels`: a FREEMAP_NODE at level `levels` or deeper is visited (its block
    /// verified) but not descended into.
    pub fn walk_freemap_levels(
        &self,
        levels: usize,
        f: &mut dyn FnMut(usize, FreemapVisit<'_>) -> ReadResult<Flow>,
    ) -> ReadResult<()> {
        let mut stack: Vec<Level> = Vec::new();
        stack.try_reserve_exact(DEPTH_MAX).map_err(nomem)?;
        stack.push(Level {
            slots: crate::mem::try_to_vec(&self.header.freemap_blockset).map_err(nomem)?,
            next: 0,
            beg: 0,
            end: KEY_MAX,
            floor: Some(0),
            keybits: 64,
        });
        let mut block = zeroed(FREEMAP_BLOCK_BYTES)?;
        while let Some(level) = stack.len().checked_sub(1) {
            let Some(top) = stack.last_mut() else { break };
            let Some(raw) = top.slots.get(top.next).copied() else {
                stack.pop();
                continue;
            };
            top.next += 1;
            let b = match decode_bref(&raw) {
                Ok(b) => b,
                Err(e) => {
                    let at = u64::from_le_bytes(raw[0x20..0x28].try_into().unwrap_or([0; 8]));
                    if f(
                        level,
                        FreemapVisit::Fault(ReadError::new(Cause::Media(e), at), None),
                    )? == Flow::Stop
                    {
                        return Ok(());
                    }
                    continue;
                }
            };
            if b.btype == BREF_TYPE_EMPTY {
                continue;
            }
            let in_order = top.floor.is_some_and(|floor| b.key >= floor);
            let nested = b.key >= top.beg && b.key_end() <= top.end && b.keybits < top.keybits;
            let fault = if !in_order || !nested {
                Some(ReadError::new(Cause::KeyOrder, b.key))
            } else {
                top.floor = b.key_end().checked_add(1);
                self.read_freemap_block(&b, &mut block).err()
            };
            if let Some(e) = fault {
                if f(level, FreemapVisit::Fault(e, Some(&b)))? == Flow::Stop {
                    return Ok(());
                }
                continue;
            }
            if b.btype == BREF_TYPE_FREEMAP_LEAF {
                let mut bmaps = Vec::new();
                bmaps.try_reserve_exact(BMAP_COUNT).map_err(nomem)?;
                for chunk in block.chunks_exact(BMAP_BYTES) {
                    let m = BmapData::decode(chunk)
                        .map_err(|e| ReadError::new(Cause::Media(e), b.data_off))?;
                    bmaps.push(m);
                }
                if f(level, FreemapVisit::Leaf(&b, &bmaps))? == Flow::Stop {
                    return Ok(());
                }
                continue;
            }
            // A FREEMAP_NODE: `decode_bref` lets no other type through.
            if f(level, FreemapVisit::Node(&b))? == Flow::Stop {
                return Ok(());
            }
            if level >= levels {
                continue;
            }
            if stack.len() >= DEPTH_MAX {
                if f(
                    level,
                    FreemapVisit::Fault(ReadError::new(Cause::TooDeep, b.data_off), Some(&b)),
                )? == Flow::Stop
                {
                    return Ok(());
                }
                continue;
            }
            let mut slots = Vec::new();
            slots
                .try_reserve_exact(FREEMAP_BLOCK_BYTES / BREF_BYTES)
                .map_err(nomem)?;
            for chunk in block.chunks_exact(BREF_BYTES) {
                let mut s = [0u8; BREF_BYTES];
                s.copy_from_slice(chunk);
                slots.push(s);
            }
            stack.push(Level {
                slots,
                next: 0,
                beg: b.key,
                end: b.key_end(),
                floor: Some(b.key),
                keybits: b.keybits,
            });
        }
        Ok(())
    }

    /// Read the freemap block `bref` names into `out` (32 KiB) and verify its CRC-32C.
    pub(crate) fn read_freemap_block(&self, bref: &Blockref, out: &mut [u8]) -> ReadResult<()> {
        let (off, len) = self.locate(bref)?;
        let buf = out
            .get_mut(..len)
            .ok_or(ReadError::new(Cause::OutOfRange, bref.data_off))?;
        self.dev
            .read_at(off, buf)
            .map_err(|e| ReadError::new(Cause::Device(e), bref.data_off))?;
        self.count_read(len);
        self.dev.yield_point();
        verify_block(bref, buf).map_err(|e| ReadError::new(Cause::Media(e), bref.data_off))
    }
}
