//! Key-range walks of block tables: an inode's blockset (or the volume header's) and the
//! INDIRECT blocks below it, in key order, with an explicit stack of at most [`DEPTH_MAX`]
//! tables. Every table is checked as HAMMER2 lays it out (`hammer2_base_find`,
//! `hammer2_chain_create_indirect`): non-empty entries in strictly ascending, disjoint key
//! ranges, each inside the range of the blockref that led to its table. A table that breaks
//! this is [`Cause::KeyOrder`], which also stops a table that names itself from looping.

use alloc::vec::Vec;

use super::{BlockDev, Cause, ReadError, ReadResult, Volume};
use crate::media::{
    Blockref, InodeData, BREF_BYTES, BREF_TYPE_EMPTY, BREF_TYPE_INDIRECT, BREF_TYPE_INODE, KEY_MAX,
    SET_COUNT,
};

/// Most tables open at once in a walk: indirect levels, plus nested inodes in a full walk.
/// HAMMER2's smallest indirect block has 32 entries (5 key bits), so 64-bit keys need at
/// most 13 levels below an inode; a full walk adds the volume header, the super-root, a PFS
/// root and an index inode.
pub const DEPTH_MAX: usize = 24;

/// Whether a walk goes on after a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Visit the next blockref.
    Continue,
    /// End the walk (successfully).
    Stop,
}

/// Whether a walk leaves out an INDIRECT or INODE blockref and all below it, before
/// reading its block.
type Prune<'p> = &'p dyn Fn(&Blockref) -> bool;

/// What a walk visits.
#[derive(Clone, Copy)]
enum Mode<'p> {
    /// The entries of a key range other than INDIRECT ones.
    Leaves,
    /// Every entry, INDIRECT ones included, not descending into inodes.
    Tables,
    /// Every entry, descending into the tables of the inodes met, but those pruned.
    All(Option<Prune<'p>>),
}

/// One open table of a walk.
struct Level {
    brefs: Vec<Blockref>,
    next: usize,
    /// The key range of the blockref that led here.
    beg: u64,
    end: u64,
    /// The lowest key the next non-empty entry may have (`None`: the previous one ended at
    /// [`KEY_MAX`], nothing may follow).
    floor: Option<u64>,
}

impl Level {
    fn new(brefs: Vec<Blockref>, beg: u64, end: u64) -> Level {
        Level {
            brefs,
            next: 0,
            beg,
            end,
            floor: Some(beg),
        }
    }
}

/// A copy of `set` as a vector, or [`Cause::NoMem`].
fn to_vec(set: &[Blockref]) -> ReadResult<Vec<Blockref>> {
    crate::mem::try_to_vec(set).map_err(|_| ReadError::new(Cause::NoMem, 0))
}

/// The block table of `ino` (read from `at`), each entry decoded straight onto the heap
/// rather than through a 512-byte array in the caller's frame (which would stay there under
/// the walk's device reads). [`Cause::BadInode`] if an entry does not decode. Meaningless for
/// a DIRECTDATA inode.
pub(crate) fn blockset_vec(ino: &InodeData, at: u64) -> ReadResult<Vec<Blockref>> {
    let mut set = Vec::new();
    set.try_reserve_exact(SET_COUNT)
        .map_err(|_| ReadError::new(Cause::NoMem, at))?;
    for raw in ino.u.chunks_exact(BREF_BYTES) {
        set.push(Blockref::decode(raw).map_err(|_| ReadError::new(Cause::BadInode, at))?);
    }
    Ok(set)
}

impl<D: BlockDev> Volume<D> {
    /// The entries of the INDIRECT block `bref` points at, each decoded.
    pub fn read_table(&self, bref: &Blockref) -> ReadResult<Vec<Blockref>> {
        let raw = self.read_block(bref)?;
        let mut out = Vec::new();
        out.try_reserve_exact(raw.len() / BREF_BYTES)
            .map_err(|_| ReadError::new(Cause::NoMem, 0))?;
        for chunk in raw.chunks_exact(BREF_BYTES) {
            let b = Blockref::decode(chunk)
                .map_err(|_| ReadError::new(Cause::BadBlockref, bref.data_off))?;
            out.push(b);
        }
        Ok(out)
    }

    /// Visit, in key order, every blockref other than INDIRECT below `table` whose key
    /// range overlaps `lo..=hi`, descending through INDIRECT blocks.
    pub fn scan(
        &self,
        table: &[Blockref],
        lo: u64,
        hi: u64,
        f: &mut dyn FnMut(&Blockref) -> ReadResult<Flow>,
    ) -> ReadResult<()> {
        self.walk(to_vec(table)?, lo, hi, &mut |b, _| f(b), Mode::Leaves, None)
    }

    /// Visit, in key order, every blockref below `table`, INDIRECT ones included (each
    /// before the entries of its block), without descending into the inodes met.
    pub fn scan_tables(
        &self,
        table: &[Blockref],
        f: &mut dyn FnMut(&Blockref) -> ReadResult<Flow>,
    ) -> ReadResult<()> {
        self.walk(
            to_vec(table)?,
            0,
            KEY_MAX,
            &mut |b, _| f(b),
            Mode::Tables,
            None,
        )
    }

    /// [`Volume::scan`] of a table the caller already holds as a vector (no copy).
    pub(crate) fn scan_vec(
        &self,
        table: Vec<Blockref>,
        lo: u64,
        hi: u64,
        f: &mut dyn FnMut(&Blockref) -> ReadResult<Flow>,
    ) -> ReadResult<()> {
        self.walk(table, lo, hi, &mut |b, _| f(b), Mode::Leaves, None)
    }

    /// Visit every blockref below `table`, INDIRECT ones included, descending into the
    /// block tables of the inodes met too (the visitor gets each inode decoded, read once).
    pub fn walk_all(
        &self,
        table: &[Blockref],
        f: &mut dyn FnMut(&Blockref, Option<&InodeData>) -> ReadResult<Flow>,
    ) -> ReadResult<()> {
        self.walk(to_vec(table)?, 0, KEY_MAX, f, Mode::All(None), None)
    }

    /// [`Volume::walk_all`] that leaves out, unread and unvisited, every INDIRECT or INODE
    /// blockref `prune` names and everything below it (a subtree a caller has already
    /// walked).
    pub fn walk_all_pruned(
        &self,
        table: &[Blockref],
        prune: &dyn Fn(&Blockref) -> bool,
        f: &mut dyn FnMut(&Blockref, Option<&InodeData>) -> ReadResult<Flow>,
        fault: Option<&mut dyn FnMut(ReadError) -> ReadResult<()>>,
    ) -> ReadResult<()> {
        self.walk(to_vec(table)?, 0, KEY_MAX, f, Mode::All(Some(prune)), fault)
    }

    /// [`Volume::walk_all`] that goes on past faults of the media: each goes to `fault`
    /// (which may end the walk by returning an error) and the subtree it concerns is
    /// skipped: an entry out of key order, a table, inode or blockset that does not read.
    /// An inode that does not read is still visited, with `None` for its contents.
    pub fn walk_all_tolerant(
        &self,
        table: &[Blockref],
        f: &mut dyn FnMut(&Blockref, Option<&InodeData>) -> ReadResult<Flow>,
        fault: &mut dyn FnMut(ReadError) -> ReadResult<()>,
    ) -> ReadResult<()> {
        self.walk(to_vec(table)?, 0, KEY_MAX, f, Mode::All(None), Some(fault))
    }

    fn walk(
        &self,
        table: Vec<Blockref>,
        lo: u64,
        hi: u64,
        f: &mut dyn FnMut(&Blockref, Option<&InodeData>) -> ReadResult<Flow>,
        mode: Mode<'_>,
        mut tolerate: Option<&mut dyn FnMut(ReadError) -> ReadResult<()>>,
    ) -> ReadResult<()> {
        let (all, prune) = match mode {
            Mode::All(p) => (true, p),
            _ => (false, None),
        };
        let mut fault = |e: ReadError| match tolerate.as_mut() {
            Some(g) => g(e),
            None => Err(e),
        };
        let mut stack: Vec<Level> = Vec::new();
        stack
            .try_reserve_exact(DEPTH_MAX)
            .map_err(|_| ReadError::new(Cause::NoMem, 0))?;
        stack.push(Level::new(table, 0, KEY_MAX));
        while let Some(top) = stack.last_mut() {
            let Some(b) = top.brefs.get(top.next).copied() else {
                stack.pop();
                continue;
            };
            top.next += 1;
            if b.btype == BREF_TYPE_EMPTY {
                continue;
            }
            let in_order = top.floor.is_some_and(|floor| b.key >= floor);
            if !in_order || b.key < top.beg || b.key_end() > top.end {
                fault(ReadError::new(Cause::KeyOrder, b.key))?;
                continue;
            }
            top.floor = b.key_end().checked_add(1);
            if matches!(b.btype, BREF_TYPE_INDIRECT | BREF_TYPE_INODE)
                && prune.is_some_and(|p| p(&b))
            {
                continue;
            }
            if !all && b.key > hi {
                // The rest of this table lies above the range.
                top.next = top.brefs.len();
                continue;
            }
            if !all && !b.overlaps(lo, hi) {
                continue;
            }
            let child = match b.btype {
                BREF_TYPE_INDIRECT => {
                    if !matches!(mode, Mode::Leaves) && f(&b, None)? == Flow::Stop {
                        return Ok(());
                    }
                    match self.read_table(&b) {
                        Ok(t) => Some(Level::new(t, b.key, b.key_end())),
                        Err(e) => {
                            fault(e)?;
                            None
                        }
                    }
                }
                BREF_TYPE_INODE if all => {
                    // Boxed: this frame lies under every read of the walk.
                    let ino = match self.read_inode_box(&b) {
                        Ok(ino) => ino,
                        Err(e) => {
                            fault(e)?;
                            // Still visited, undecoded: its block is referenced all the
                            // same (a writer must not reuse it).
                            if f(&b, None)? == Flow::Stop {
                                return Ok(());
                            }
                            continue;
                        }
                    };
                    if f(&b, Some(&ino))? == Flow::Stop {
                        return Ok(());
                    }
                    if ino.meta.is_directdata() {
                        None
                    } else {
                        match blockset_vec(&ino, b.data_off) {
                            Ok(set) => Some(Level::new(set, 0, KEY_MAX)),
                            Err(e) if e.cause == Cause::NoMem => return Err(e),
                            Err(e) => {
                                fault(e)?;
                                None
                            }
                        }
                    }
                }
                _ => {
                    if f(&b, None)? == Flow::Stop {
                        return Ok(());
                    }
                    None
                }
            };
            if let Some(level) = child {
                if stack.len() >= DEPTH_MAX {
                    fault(ReadError::new(Cause::TooDeep, b.data_off))?;
                    continue;
                }
                stack.push(level);
            }
        }
        Ok(())
    }
}
