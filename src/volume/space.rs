//! Space for a commit: a bit per 16 KiB granule of the filesystem, the granules HAMMER2's
//! allocator may hand out (HAMMER2-MEDIA §10, §11), and allocations of 1..64 KiB blocks in
//! them placed as the kernel's `hammer2_bmap_alloc` places them: blocks of 16 KiB or more
//! on whole granules aligned to their size, smaller blocks packed inside one granule.
//!
//! The map starts with every granule a valid volume header copy reaches marked used, so a
//! commit never overwrites what any committed header references. A mount keeps what each
//! copy's tree reaches across its commits ([`SpaceCache`]), so that only the first commit
//! reads those trees from the device.

use alloc::vec::Vec;

use crate::media::freemap::{BMAP_SPAN, GRANULE_BYTES};
use crate::media::Blockref;
use crate::media::{RADIX_MAX, RADIX_MIN};
use crate::{Error, Result};

/// HAMMER2 reserves the first 4 MiB of every 1 GiB (headers, freemap blocks).
pub const RESERVED_SEG: u64 = 4 << 20;
/// The span of one freemap leaf and of the reservation period.
pub const LEAF_SPAN: u64 = 1 << 30;

/// A bit per granule, `used` or not, over `0..fs_size`, kept per GiB: a GiB's words are
/// allocated when a granule of it is first marked, so a map costs what the marked GiBs
/// need (8 KiB each), not the volume's size.
#[derive(Debug, Default)]
#[cfg_attr(test, derive(Clone))]
pub struct GranuleBits {
    /// Per GiB, its [`REGION_WORDS`] words once any granule of it was marked.
    regions: Vec<Option<Vec<u64>>>,
    granules: u64,
}

/// Granules per region of a [`GranuleBits`] or [`GranuleCounts`]: those of a GiB, what one
/// freemap leaf maps.
const REGION_GRANULES: u64 = LEAF_SPAN / GRANULE_BYTES;
/// Words of a region of a [`GranuleBits`].
const REGION_WORDS: u64 = REGION_GRANULES / 64;

/// A region of `len` zeros, allocated fallibly.
fn zero_region<T: Clone + Default>(len: u64) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len as usize)?;
    v.resize(len as usize, T::default());
    Ok(v)
}

impl GranuleBits {
    /// A map of `bytes` of filesystem, every granule clear. [`Error::TooBig`] when it could
    /// take more than [`MAP_LIMIT`] with every GiB marked.
    pub fn new(bytes: u64) -> Result<GranuleBits> {
        let granules = bytes.div_ceil(GRANULE_BYTES);
        let n = usize::try_from(granules.div_ceil(64)).map_err(|_| Error::TooBig)?;
        if n.saturating_mul(8) > MAP_LIMIT {
            return Err(Error::TooBig);
        }
        let r = granules.div_ceil(REGION_GRANULES) as usize;
        let mut regions = Vec::new();
        regions.try_reserve_exact(r)?;
        regions.resize_with(r, || None);
        Ok(GranuleBits { regions, granules })
    }

    /// Word `w` (zero where nothing is marked or past the end).
    fn word(&self, w: u64) -> u64 {
        match self.regions.get((w / REGION_WORDS) as usize) {
            Some(Some(r)) => r.get((w % REGION_WORDS) as usize).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// Word `w`, its region allocated if it has none; `None` past the end.
    fn word_mut(&mut self, w: u64) -> Result<Option<&mut u64>> {
        let Some(slot) = self.regions.get_mut((w / REGION_WORDS) as usize) else {
            return Ok(None);
        };
        if slot.is_none() {
            *slot = Some(zero_region(REGION_WORDS)?);
        }
        Ok(slot
            .as_mut()
            .and_then(|r| r.get_mut((w % REGION_WORDS) as usize)))
    }

    /// Whether any granule of `off..off + len` is marked (whole words, and GiBs where
    /// nothing is marked, at a time).
    pub fn any(&self, off: u64, len: u64) -> bool {
        if len == 0 {
            return false;
        }
        let first = off / GRANULE_BYTES;
        let last = (off.saturating_add(len) - 1) / GRANULE_BYTES;
        let mut g = first;
        while g <= last {
            let bare = matches!(self.regions.get((g / REGION_GRANULES) as usize), Some(None));
            if bare {
                g = (g / REGION_GRANULES + 1) * REGION_GRANULES;
                continue;
            }
            let w = self.word(g / 64);
            if g % 64 == 0 && last - g >= 63 {
                if w != 0 {
                    return true;
                }
                g += 64;
            } else {
                if w & (1 << (g % 64)) != 0 {
                    return true;
                }
                g += 1;
            }
        }
        false
    }

    /// Whether the granule holding byte `off` is marked (false past the end).
    pub fn get(&self, off: u64) -> bool {
        let g = off / GRANULE_BYTES;
        self.word(g / 64) & (1 << (g % 64)) != 0
    }

    /// Mark every granule `off..off + len` touches (clipped to the map); [`Error::NoMem`]
    /// when a GiB's words cannot be allocated.
    pub fn mark(&mut self, off: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let first = off / GRANULE_BYTES;
        let last = (off.saturating_add(len) - 1) / GRANULE_BYTES;
        for g in first..=last.min(self.granules.saturating_sub(1)) {
            if let Some(w) = self.word_mut(g / 64)? {
                *w |= 1 << (g % 64);
            }
        }
        Ok(())
    }

    /// Whether every granule of the 64-granule word holding byte `off` is marked.
    fn word_full(&self, off: u64) -> bool {
        self.word(off / WORD_SPAN) == u64::MAX
    }

    /// Bytes the map covers, rounded up to granules.
    pub fn span(&self) -> u64 {
        self.granules * GRANULE_BYTES
    }

    /// Clear the granule holding byte `off`.
    fn clear(&mut self, off: u64) {
        let g = off / GRANULE_BYTES;
        let at = (g / 64 % REGION_WORDS) as usize;
        if let Some(Some(r)) = self.regions.get_mut((g / REGION_GRANULES) as usize) {
            if let Some(w) = r.get_mut(at) {
                *w &= !(1 << (g % 64));
            }
        }
    }

    /// Mark every granule `other` marks (maps of the same span), calling `relax` every
    /// GiB; [`Error::NoMem`] when a GiB's words cannot be allocated.
    pub fn or(&mut self, other: &GranuleBits, relax: &dyn Fn()) -> Result<()> {
        for (mine, theirs) in self.regions.iter_mut().zip(&other.regions) {
            let Some(theirs) = theirs else { continue };
            relax();
            if mine.is_none() {
                *mine = Some(zero_region(REGION_WORDS)?);
            }
            if let Some(mine) = mine {
                for (w, o) in mine.iter_mut().zip(theirs) {
                    *w |= o;
                }
            }
        }
        Ok(())
    }

    /// The GiBs (their starts, ascending) of `lo..hi` (multiples of [`WORD_SPAN`]) where
    /// some granule this map marks is not marked in `now`, calling `relax` every GiB.
    pub(crate) fn gibs_lost(
        &self,
        now: &GranuleBits,
        (lo, hi): (u64, u64),
        relax: &dyn Fn(),
    ) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for (i, r) in self.regions.iter().enumerate() {
            let Some(r) = r else { continue };
            relax();
            let base = i as u64 * REGION_WORDS;
            let lost = r.iter().enumerate().any(|(j, &w)| {
                let at = (base + j as u64) * WORD_SPAN;
                at >= lo && at < hi && w & !now.word(base + j as u64) != 0
            });
            if lost {
                crate::mem::try_push(&mut out, i as u64 * LEAF_SPAN)?;
            }
        }
        Ok(out)
    }

    /// A copy of the map, allocated fallibly.
    pub fn try_clone(&self) -> Result<GranuleBits> {
        let mut regions = Vec::new();
        regions.try_reserve_exact(self.regions.len())?;
        for r in &self.regions {
            regions.push(match r {
                Some(words) => Some(crate::mem::try_to_vec(words)?),
                None => None,
            });
        }
        Ok(GranuleBits {
            regions,
            granules: self.granules,
        })
    }
}

/// The name of a block by place and check code: its `data_off` and a hash of its whole check
/// area. Two blockrefs of the same name read the same bytes from the device now (for a
/// table block, INODE or INDIRECT, the same subtree); they describe the same bytes only
/// when the transaction's `checks_content` holds.
pub(crate) fn block_name(b: &Blockref) -> (u64, u64) {
    (b.data_off, crate::media::check::xxh64(&b.check, 0))
}

/// Which tree a volume header copy names: its fsid, filesystem size, `mirror_tid` and the names (place and
/// check code, [`block_name`]) of its super-root blockset, whose check codes
/// cover the whole tree below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeId {
    fsid: [u8; 16],
    /// A header rewritten with another size (same TID and super-root) must not keep maps
    /// of the old size, which would drop blocks written past their end.
    fs_size: u64,
    mirror_tid: u64,
    sroot: [(u64, u64); crate::media::SET_COUNT],
}

impl TreeId {
    /// The tree header `h` names.
    pub fn of(h: &crate::media::VolumeHeader) -> TreeId {
        TreeId {
            fsid: h.fsid,
            fs_size: h.fs_size(),
            mirror_tid: h.mirror_tid,
            sroot: h.sroot_blockset.map(|b| block_name(&b)),
        }
    }

    /// Whether both name the same super-root blockset.
    pub(crate) fn same_sroot(&self, other: &TreeId) -> bool {
        self.sroot == other.sroot
    }
}

/// Blocks of one tree per granule, exact: a walk counts a block once per path that reaches
/// it, and a granule comes free when its count drops to zero. A byte per granule holds
/// counts below [`WIDE`]; a granule more blocks reach (up to 16 blocks of 1 KiB fit one, but
/// the subtrees of snapshots, and deduplicated blocks, are reached once per path) keeps its
/// count in a page of wide counts, one page per 64 granules that need one. Memory: a byte
/// per granule of each GiB the tree reaches (allocated when first counted); once any count goes wide, 4 bytes per 64 granules for the page index and
/// 256 bytes per page, at most [`PAGES_MAX`] pages ([`Error::TooBig`] past them).
#[cfg_attr(test, derive(Clone))]
pub struct GranuleCounts {
    /// Per GiB, a byte per granule once any granule of it was counted.
    counts: Vec<Option<Vec<u8>>>,
    granules: u64,
    /// Per 64 granules, 1 + the index of their page in `pages`, or 0 when they have none;
    /// empty while no count is wide.
    page_of: Vec<u32>,
    pages: Vec<[u32; PAGE]>,
}

/// A byte count of this value says the granule's count is in its page of wide counts.
const WIDE: u8 = u8::MAX;
/// Granules per page of wide counts.
const PAGE: usize = 64;
/// The most pages of wide counts one [`GranuleCounts`] holds: 16 MiB of them.
#[cfg(not(test))]
const PAGES_MAX: usize = MAP_LIMIT / 4 / core::mem::size_of::<[u32; PAGE]>();
/// Tests reach the bound with a small tree.
#[cfg(test)]
pub(crate) const PAGES_MAX: usize = 16;

impl GranuleCounts {
    /// Counts of `bytes` of filesystem, all zero; [`Error::TooBig`] past [`MAP_LIMIT`].
    pub fn new(bytes: u64) -> Result<GranuleCounts> {
        let n = usize::try_from(bytes.div_ceil(GRANULE_BYTES)).map_err(|_| Error::TooBig)?;
        if n > MAP_LIMIT {
            return Err(Error::TooBig);
        }
        let r = (n as u64).div_ceil(REGION_GRANULES) as usize;
        let mut counts = Vec::new();
        counts.try_reserve_exact(r)?;
        counts.resize_with(r, || None);
        Ok(GranuleCounts {
            counts,
            granules: n as u64,
            page_of: Vec::new(),
            pages: Vec::new(),
        })
    }

    /// Count one block more in every granule of `off..off + len`. [`Error::TooBig`] when a
    /// count would need a page past [`PAGES_MAX`] or pass `u32::MAX`, [`Error::NoMem`]: the
    /// counts are then no longer exact and must be dropped.
    pub fn add(&mut self, off: u64, len: u64) -> Result<()> {
        for g in granules(off, len) {
            if g >= self.granules {
                continue;
            }
            let c = self.byte(g);
            let next = match c {
                WIDE => self.get(g).checked_add(1).ok_or(Error::TooBig)?,
                _ => u64::from(c) + 1,
            };
            self.set(g, next)?;
        }
        Ok(())
    }

    /// The count of granule `g` (zero past the end).
    fn get(&self, g: u64) -> u64 {
        match self.byte(g) {
            WIDE => self.wide(g).map_or(0, |p| u64::from(p[g as usize % PAGE])),
            c => u64::from(c),
        }
    }

    /// The byte of granule `g` (zero where nothing was counted or past the end).
    fn byte(&self, g: u64) -> u8 {
        match self.counts.get((g / REGION_GRANULES) as usize) {
            Some(Some(r)) => r.get((g % REGION_GRANULES) as usize).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// Set the byte of granule `g` (in range), its region allocated if it has none and `c`
    /// is not zero.
    fn set_byte(&mut self, g: u64, c: u8) -> Result<()> {
        let Some(slot) = self.counts.get_mut((g / REGION_GRANULES) as usize) else {
            return Ok(());
        };
        if slot.is_none() {
            if c == 0 {
                return Ok(());
            }
            *slot = Some(zero_region(REGION_GRANULES)?);
        }
        if let Some(b) = slot
            .as_mut()
            .and_then(|r| r.get_mut((g % REGION_GRANULES) as usize))
        {
            *b = c;
        }
        Ok(())
    }

    /// The page of wide counts of granule `g`, if it has one.
    fn wide(&self, g: u64) -> Option<&[u32; PAGE]> {
        let p = *self.page_of.get((g / PAGE as u64) as usize)?;
        self.pages.get((p as usize).checked_sub(1)?)
    }

    /// Set the count of granule `g` (in range) to `n`: in its byte below [`WIDE`], otherwise
    /// in its page, made (zeroed) if it has none.
    fn set(&mut self, g: u64, n: u64) -> Result<()> {
        let i = g as usize;
        let (chunk, at) = (i / PAGE, i % PAGE);
        let was_wide = self.byte(g) == WIDE;
        if let Some(narrow) = u8::try_from(n).ok().filter(|&c| c < WIDE) {
            if was_wide {
                // Its page is left to the other granules of the chunk.
                if let Some(p) = self.page_of.get(chunk).copied() {
                    if let Some(page) = self.pages.get_mut((p as usize).wrapping_sub(1)) {
                        page[at] = 0;
                    }
                }
            }
            return self.set_byte(g, narrow);
        }
        let n = u32::try_from(n).map_err(|_| Error::TooBig)?;
        if self.page_of.is_empty() {
            let chunks = (self.granules as usize).div_ceil(PAGE);
            self.page_of.try_reserve_exact(chunks)?;
            self.page_of.resize(chunks, 0);
        }
        let p = self.page_of.get_mut(chunk).ok_or(Error::Invalid)?;
        if *p == 0 {
            if self.pages.len() >= PAGES_MAX {
                return Err(Error::TooBig);
            }
            if self.pages.len() == self.pages.capacity() {
                // Doubling, but never past the bound.
                let more = self.pages.len().max(4).min(PAGES_MAX - self.pages.len());
                self.pages.try_reserve_exact(more)?;
            }
            self.pages.push([0; PAGE]);
            // At most PAGES_MAX, far below u32::MAX.
            *p = self.pages.len() as u32;
        }
        let page = self.pages.get_mut(*p as usize - 1).ok_or(Error::Invalid)?;
        page[at] = n;
        self.set_byte(g, WIDE)
    }

    /// The sum of every granule's count.
    #[cfg(test)]
    pub fn total(&self) -> u64 {
        (0..self.granules).map(|g| self.get(g)).sum()
    }

    /// Count one block less in every granule of `off..off + len`, clearing in `bits` each
    /// granule left with none. A granule already at zero stays there.
    fn remove(&mut self, off: u64, len: u64, bits: &mut GranuleBits) {
        for g in granules(off, len) {
            if g >= self.granules {
                continue;
            }
            let left = self.get(g).saturating_sub(1);
            // Lowering a count never allocates: a count that fits no byte has its page.
            if self.set(g, left).is_ok() && left == 0 {
                bits.clear(g * GRANULE_BYTES);
            }
        }
    }
}

/// The granules `off..off + len` touches.
fn granules(off: u64, len: u64) -> core::ops::Range<u64> {
    if len == 0 {
        return 0..0;
    }
    off / GRANULE_BYTES..(off.saturating_add(len) - 1) / GRANULE_BYTES + 1
}

/// The block `data_off` (place and size radix) names: its byte offset and length; `None`
/// for a radix that names no block.
pub fn extent(data_off: u64) -> Option<(u64, u64)> {
    let radix = (data_off & 0x3F) as u32;
    if !(RADIX_MIN as u32..=RADIX_MAX as u32).contains(&radix) {
        return None;
    }
    Some((data_off & !0x3F, 1 << radix))
}

/// What the tree of each volume header copy reaches, kept by a mount across its commits so
/// that a commit need not read those trees again: the granules each copy's tree reaches
/// (with the copy it was learned from), and, for the tree of the current copy, its blocks
/// per granule, so that a commit can tell which granules its new tree no longer uses.
///
/// A copy is trusted only while the device holds the very copy it was learned from
/// ([`TreeId`]); anything else is read again ([`super::Txn::begin_cached`]).
#[derive(Default)]
#[cfg_attr(test, derive(Clone))]
pub struct SpaceCache {
    pub(crate) zones: [Option<(TreeId, GranuleBits)>; crate::media::volhdr::NUM_VOLHDRS],
    /// The zone whose tree `counts` counts, and the counts.
    pub(crate) counts: Option<(usize, GranuleCounts)>,
    /// The header whose freemap is exactly what the trees of `zones` reach (this cache's
    /// last commit wrote it so), with the granules that freemap marks allocated: the next
    /// commit rewrites only the leaves whose granules change state.
    pub(crate) freemap: Option<(TreeId, u64)>,
}

impl core::fmt::Debug for SpaceCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let known: usize = self.zones.iter().filter(|z| z.is_some()).count();
        f.debug_struct("SpaceCache")
            .field("zones_known", &known)
            .field("counted", &self.counts.as_ref().map(|(z, _)| *z))
            .field("freemap_known", &self.freemap.is_some())
            .finish()
    }
}

impl SpaceCache {
    /// Whether the tree of the current copy, `zone`, is counted.
    pub fn counts_zone(&self, zone: usize) -> bool {
        self.counts.as_ref().is_some_and(|(z, _)| *z == zone) && self.zones[zone].is_some()
    }

    /// The granules the tree after a commit reaches: the current tree's (`zone`), with the
    /// blocks `wrote` added and the blocks `dropped` removed (each block the current tree
    /// reaches as many times as the new one reaches it less; a block written and left out of
    /// the new tree is dropped too, and both cancel). The counts then count the new tree.
    /// `None` when the current tree is not counted. The blocks written lie in granules no
    /// tree of the cache reaches (the allocator keeps off them), at most 16 per granule, so
    /// adding them never needs a wide count; after an error (out of memory) the counts are
    /// no longer exact and the cache must be dropped, as it is with the failed commit.
    pub(crate) fn advance(
        &mut self,
        zone: usize,
        wrote: &[u64],
        dropped: &[u64],
        relax: &dyn Fn(),
    ) -> Result<Option<GranuleBits>> {
        let Some((_, counts)) = self.counts.as_mut().filter(|(z, _)| *z == zone) else {
            return Ok(None);
        };
        let Some((_, cur)) = &self.zones[zone] else {
            return Ok(None);
        };
        let mut bits = cur.try_clone()?;
        for (i, d) in wrote.iter().enumerate() {
            if i % crate::mem::SORT_CHUNK == 0 {
                relax();
            }
            if let Some((off, len)) = extent(*d) {
                counts.add(off, len)?;
                bits.mark(off, len)?;
            }
        }
        for (i, d) in dropped.iter().enumerate() {
            if i % crate::mem::SORT_CHUNK == 0 {
                relax();
            }
            if let Some((off, len)) = extent(*d) {
                counts.remove(off, len, &mut bits);
            }
        }
        Ok(Some(bits))
    }
}

/// Bytes of the granules one word of a [`GranuleBits`] covers (1 MiB), a multiple of every
/// block size.
const WORD_SPAN: u64 = 64 * GRANULE_BYTES;

/// Candidate places the allocator looks at between two scheduling points.
const YIELD_EVERY: u32 = 4096;

/// The most bytes one granule map may take: 64 MiB, a bit per 16 KiB of 8 TiB (the bound
/// `fsck` uses too). A transaction holds two.
pub const MAP_LIMIT: usize = super::fsck::MAP_LIMIT_DEFAULT;

/// Whether `off` lies in the reserved 4 MiB at the start of a GiB.
pub const fn in_reserved(off: u64) -> bool {
    off % LEAF_SPAN < RESERVED_SEG
}

/// Hands out blocks in granules no committed header reaches.
#[derive(Debug)]
pub struct Allocator {
    used: GranuleBits,
    hi: u64,
    cursor: u64,
    /// Where the free space may begin: `allocator_beg` rounded up to 4 MiB, raised past
    /// whatever a search found all taken (granules are never freed).
    floor: u64,
    /// Sub-granule packing: the next free byte and the end of the granule it is in.
    small: Option<(u64, u64)>,
}

impl Allocator {
    /// An allocator over `[allocator_beg rounded up to 4 MiB, fs_size rounded down to
    /// 4 MiB)` (what a freemap leaf leaves allocatable, `hammer2_freemap_init`), with the
    /// granules of `used` taken. [`Error::Invalid`] when `allocator_beg` lies past
    /// `fs_size`.
    pub fn new(used: GranuleBits, allocator_beg: u64, fs_size: u64) -> Result<Allocator> {
        if allocator_beg > fs_size {
            return Err(Error::Invalid);
        }
        let lo = allocator_beg
            .checked_next_multiple_of(BMAP_SPAN)
            .ok_or(Error::Invalid)?;
        let hi = (fs_size - fs_size % BMAP_SPAN).min(used.span());
        Ok(Allocator {
            used,
            hi,
            cursor: lo,
            floor: lo,
            small: None,
        })
    }

    /// Look for free space from `off` on first (tests place blocks in chosen GiBs so).
    #[cfg(test)]
    pub(crate) fn start_at(&mut self, off: u64) {
        self.cursor = off;
    }

    /// A block of `bytes` (a power of two, 1..=64 KiB): its byte offset. [`Error::NoSpace`]
    /// when no free place is left, [`Error::Invalid`] for another size. A search over a
    /// big, full volume is long: `yield_point` is called every few thousand places looked
    /// at.
    pub fn alloc(&mut self, bytes: u64, yield_point: &dyn Fn()) -> Result<u64> {
        if !bytes.is_power_of_two() || !(1u64 << RADIX_MIN..=1u64 << RADIX_MAX).contains(&bytes) {
            return Err(Error::Invalid);
        }
        if bytes < GRANULE_BYTES {
            if let Some((next, end)) = self.small {
                let at = next.next_multiple_of(bytes);
                if at + bytes <= end {
                    self.small = Some((at + bytes, end));
                    return Ok(at);
                }
            }
            let g = self.granules(GRANULE_BYTES, yield_point)?;
            self.small = Some((g + bytes, g + GRANULE_BYTES));
            return Ok(g);
        }
        self.granules(bytes, yield_point)
    }

    /// `bytes` (a multiple of a granule) of free granules aligned to `bytes`, scanning from
    /// the cursor to the end and then once from the floor; words of 64 taken granules are
    /// skipped whole.
    fn granules(&mut self, bytes: u64, yield_point: &dyn Fn()) -> Result<u64> {
        let start = self.cursor.max(self.floor).next_multiple_of(bytes);
        let mut at = start;
        let mut wrapped = false;
        let mut looked = 0u32;
        loop {
            looked = looked.wrapping_add(1);
            if looked % YIELD_EVERY == 0 {
                yield_point();
            }
            if at + bytes > self.hi {
                if wrapped {
                    return Err(Error::NoSpace);
                }
                wrapped = true;
                at = self.floor.next_multiple_of(bytes);
            }
            if wrapped && at >= start {
                return Err(Error::NoSpace);
            }
            let skip_to = if in_reserved(at) {
                Some(at - at % LEAF_SPAN + RESERVED_SEG)
            } else if self.used.word_full(at) {
                Some(at - at % WORD_SPAN + WORD_SPAN)
            } else {
                None
            };
            if let Some(next) = skip_to {
                // Blocks are never freed: what the floor passes stays taken.
                if at == self.floor {
                    self.floor = next;
                }
                at = next;
                continue;
            }
            let free = (0..bytes / GRANULE_BYTES).all(|i| !self.used.get(at + i * GRANULE_BYTES));
            if free {
                self.used.mark(at, bytes)?;
                self.cursor = at + bytes;
                return Ok(at);
            }
            at += bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_blocks_as_hammer2_does() {
        let size = 2u64 << 30;
        let mut used = GranuleBits::new(size).unwrap();
        used.mark(0x880_0000, 1).unwrap();
        let mut a = Allocator::new(used, 0x840_0c00, size).unwrap();
        // Below allocator_beg rounded up to 4 MiB nothing is handed out; a taken granule is
        // skipped.
        assert_eq!(a.alloc(1024, &|| {}).unwrap(), 0x880_4000);
        assert_eq!(a.alloc(1024, &|| {}).unwrap(), 0x880_4400);
        assert_eq!(a.alloc(4096, &|| {}).unwrap(), 0x880_5000);
        // 64 KiB blocks are aligned to 64 KiB, on whole granules.
        assert_eq!(a.alloc(65536, &|| {}).unwrap(), 0x881_0000);
        assert_eq!(a.alloc(8192, &|| {}).unwrap(), 0x880_6000);
        assert_eq!(a.alloc(8192, &|| {}).unwrap(), 0x882_0000);
        assert_eq!(a.alloc(3000, &|| {}), Err(Error::Invalid));
        assert_eq!(a.alloc(128 << 10, &|| {}), Err(Error::Invalid));
    }

    #[test]
    fn counts_past_a_byte_stay_exact_and_bounded() {
        let mut c = GranuleCounts::new(64 << 20).unwrap();
        let mut bits = GranuleBits::new(64 << 20).unwrap();
        let g = 0x12_0000;
        // Sixteen 1 KiB blocks of a granule, each reached by twenty paths, and a 64 KiB
        // block over it and the next three granules.
        for i in 0..16 * 20 {
            c.add(g + (i % 16) * 1024, 1024).unwrap();
        }
        c.add(g, 65536).unwrap();
        bits.mark(g, 65536).unwrap();
        assert_eq!((c.get(g / GRANULE_BYTES), c.total()), (321, 324));
        for _ in 0..320 {
            c.remove(g + 5 * 1024, 1024, &mut bits);
        }
        assert_eq!(c.get(g / GRANULE_BYTES), 1);
        assert!(bits.get(g));
        c.remove(g, 65536, &mut bits);
        assert!(!bits.any(g, 65536));
        assert_eq!(c.total(), 0);
        // Back to a byte, the count goes wide again.
        for _ in 0..300 {
            c.add(g, 1).unwrap();
        }
        assert_eq!(c.total(), 300);

        // Pages of wide counts are bounded: one more is refused, as is a count past u32.
        let chunk = PAGE as u64 * GRANULE_BYTES;
        let mut c = GranuleCounts::new((PAGES_MAX as u64 + 1) * chunk).unwrap();
        for p in 0..PAGES_MAX as u64 {
            c.set(p * PAGE as u64, u64::from(WIDE)).unwrap();
        }
        assert_eq!(c.get(0), u64::from(WIDE));
        assert!(c.pages.capacity() <= PAGES_MAX);
        c.add(0, 1).unwrap();
        assert_eq!(c.add(PAGES_MAX as u64 * chunk, 1), Ok(()));
        c.set(PAGES_MAX as u64 * PAGE as u64, u64::from(WIDE) - 1)
            .unwrap();
        assert_eq!(c.add(PAGES_MAX as u64 * chunk, 1), Err(Error::TooBig));
        c.set(0, u64::from(u32::MAX)).unwrap();
        assert_eq!(c.add(0, 1), Err(Error::TooBig));
    }

    /// The maps of a big volume cost what the GiBs they mark need, not the volume's size.
    #[test]
    fn maps_allocate_only_the_gibs_they_mark() {
        let gib = LEAF_SPAN;
        let size = 4u64 << 40;
        let live = |m: &GranuleBits| m.regions.iter().flatten().count();
        let mut m = GranuleBits::new(size).unwrap();
        assert_eq!(live(&m), 0);
        m.mark(3 * gib + 0x12_3456, 70_000).unwrap();
        m.mark(4000 * gib, 1).unwrap();
        assert_eq!(live(&m), 2);
        assert!(m.any(0, size) && !m.any(4 * gib, 3990 * gib));
        assert!(m.get(3 * gib + 0x12_0000) && m.get(3 * gib + 0x13_0000));
        assert!(!m.get(3 * gib + 0x14_0000));
        let mut both = GranuleBits::new(size).unwrap();
        both.or(&m.try_clone().unwrap(), &|| {}).unwrap();
        assert_eq!(live(&both), 2);
        let empty = GranuleBits::new(size).unwrap();
        assert_eq!(
            m.gibs_lost(&empty, (0, size), &|| {}).unwrap(),
            [3 * gib, 4000 * gib]
        );
        assert_eq!(both.gibs_lost(&m, (0, size), &|| {}).unwrap(), []);
        // Reading a GiB never allocates it.
        m.clear(100 * gib);
        assert!(!m.word_full(100 * gib));
        assert_eq!(live(&m), 2);

        let mut c = GranuleCounts::new(1 << 40).unwrap();
        let mut bits = GranuleBits::new(1 << 40).unwrap();
        c.add(5 * gib, 65536).unwrap();
        c.add(900 * gib + 1024, 1024).unwrap();
        c.remove(7 * gib, 1024, &mut bits);
        assert_eq!(c.counts.iter().flatten().count(), 2);
        assert_eq!(
            (
                c.get(5 * gib / GRANULE_BYTES),
                c.get(7 * gib / GRANULE_BYTES)
            ),
            (1, 0)
        );
    }

    #[test]
    fn any_and_limits() {
        let mut m = GranuleBits::new(1 << 30).unwrap();
        assert!(!m.any(0, 1 << 30));
        m.mark(0x12_3456, 1).unwrap();
        assert!(m.any(0, 1 << 30));
        assert!(m.any(0x12_0000, 0x4000));
        assert!(!m.any(0x12_4000, 1 << 29));
        assert!(!m.any(0, 0x12_0000));
        assert_eq!(GranuleBits::new(16 << 40).unwrap_err(), Error::TooBig);
    }

    #[test]
    fn skips_reserved_segments_and_runs_out_cleanly() {
        // 1 GiB + 8 MiB: the second GiB's first 4 MiB are reserved, 4 MiB after them free.
        let size = (1 << 30) + (8 << 20);
        let used = GranuleBits::new(size).unwrap();
        let mut a = Allocator::new(used, (1 << 30) - (4 << 20), size).unwrap();
        let mut got = Vec::new();
        while let Ok(off) = a.alloc(65536, &|| {}) {
            got.push(off);
        }
        assert_eq!(got.len(), 128);
        assert!(got.iter().all(|&o| !in_reserved(o)));
        assert_eq!(got[64], (1 << 30) + (4 << 20));
        assert_eq!(a.alloc(1024, &|| {}), Err(Error::NoSpace));
    }

    #[test]
    fn a_long_search_skips_full_words_and_yields() {
        // 64 GiB, every granule taken but the last 64 KiB of the last GiB.
        let size = 64u64 << 30;
        let mut used = GranuleBits::new(size).unwrap();
        used.mark(0, size - 65536).unwrap();
        let mut a = Allocator::new(used, 0, size).unwrap();
        let yields = core::cell::Cell::new(0u32);
        let y = || yields.set(yields.get() + 1);
        assert_eq!(a.alloc(16384, &y).unwrap(), size - 65536);
        // Each 1 MiB word is one step: about 65536 of them, a yield every 4096.
        assert!((8..=32).contains(&yields.get()), "{}", yields.get());
        // The search that wraps starts past what is known taken.
        yields.set(0);
        assert_eq!(a.alloc(32768, &y).unwrap(), size - 32768);
        assert_eq!(a.alloc(16384, &y).unwrap(), size - 49152);
        assert_eq!(a.alloc(16384, &y), Err(Error::NoSpace));
        assert_eq!(a.alloc(1024, &y), Err(Error::NoSpace));
        assert!(yields.get() <= 20, "{}", yields.get());
    }
}
