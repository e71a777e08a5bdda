//! A read-only check of a whole volume, which goes on past every fault of the media and
//! reports it with its media offset:
//! - every volume header copy that fits in the device (magic, CRCs, fields), which one is in
//!   use (the valid copy with the highest `mirror_tid`) and which are older;
//! - from the copy in use, every reachable blockref (the super-root, every PFS, inodes,
//!   indirect blocks, data, directory entries): its block inside the filesystem and
//!   aligned, its check code, key order and ranges within each table, data that decompress;
//! - the freemap: every node and leaf's CRC-32C and key ranges, and every 16 KiB granule a
//!   reachable block touches marked allocated.
//!
//! Granules marked allocated that nothing reachable uses are counted, not reported:
//! HAMMER2 frees space only in its bulkfree passes, so a healthy volume carries them
//! (`fsck_hammer2` does not compare the freemap with the tree at all).
//!
//! Memory: a block (64 KiB) per level of the walks, a bit per 16 KiB of the filesystem for
//! what is reachable (refused past [`FsckOptions::map_limit`]), and at most
//! [`FINDINGS_MAX`] findings kept (all counted).

use alloc::vec::Vec;
use core::fmt;

use super::block::zeroed;
use super::freemap::FreemapVisit;
use super::scan::Flow;
use super::{read_copies, BlockDev, Cause, HeaderCopy, ReadError, ReadResult, Volume};
use crate::media::freemap::{BmapData, Granule, BMAP_SPAN, GRANULES, GRANULE_BYTES};
use crate::media::volhdr::{copy_offset, NUM_VOLHDRS};
use crate::media::{
    Blockref, DirentHead, MediaError, BREF_TYPE_DATA, BREF_TYPE_DIRENT, BREF_TYPE_FREEMAP_LEAF,
    BREF_TYPE_FREEMAP_NODE, BREF_TYPE_INDIRECT, BREF_TYPE_INODE, DATA_BLOCK_BYTES,
};
use crate::Error;

/// Findings kept in a report's list (the count covers all of them).
pub const FINDINGS_MAX: usize = 100;

/// Bytes the reachability map may take by default: 64 MiB, enough for 8 TiB.
pub const MAP_LIMIT_DEFAULT: usize = 64 << 20;

/// Blocks visited between two calls of the progress callback.
const PROGRESS_EVERY: u64 = 4096;

/// How to run [`fsck`].
pub struct FsckOptions<'a> {
    /// The most bytes the map of reachable granules may take; a larger volume is refused
    /// with [`Cause::TooBig`] before anything is allocated.
    pub map_limit: usize,
    /// Called with the number of blocks visited so far, every few thousand blocks.
    pub progress: Option<&'a mut dyn FnMut(u64)>,
}

impl Default for FsckOptions<'_> {
    fn default() -> Self {
        FsckOptions {
            map_limit: MAP_LIMIT_DEFAULT,
            progress: None,
        }
    }
}

/// What a header copy turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    /// It does not lie wholly inside the device.
    Absent,
    /// The device read failed.
    Unreadable(Error),
    /// Read, and refused (magic, CRC or a field).
    Bad(MediaError),
    /// Valid, with this `mirror_tid`.
    Valid(u64),
}

/// What is wrong, for one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A header copy does not read; another copy (if any) is used.
    HeaderUnreadable(Error),
    /// A header copy is damaged or invalid; another copy (if any) is used.
    HeaderBad(MediaError),
    /// No header copy is valid, or the one chosen does not fit the device: nothing else
    /// could be checked.
    Unusable(Cause),
    /// A blockref or block of the tree: out of range, check code, key order, malformed,
    /// data that do not decompress.
    Tree(Cause),
    /// A blockref or block of the freemap.
    Freemap(Cause),
    /// A 16 KiB granule used by a reachable block that the freemap does not mark allocated.
    NotAllocated,
    /// A granule used by a reachable block, at or after `allocator_beg`, in 1 GiB the
    /// freemap has no leaf for.
    NoLeaf,
    /// A granule in the state HAMMER2 never writes (bits 01).
    IllegalGranule,
}

/// One fault of the volume: what, and where (a media byte offset; for key order faults,
/// the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// What is wrong.
    pub problem: Problem,
    /// Where.
    pub at: u64,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem {
            Problem::HeaderUnreadable(e) => write!(f, "volume header copy unreadable ({e:?})")?,
            Problem::HeaderBad(e) => write!(f, "volume header copy refused: {e}")?,
            Problem::Unusable(c) => write!(f, "no usable volume header: {c}")?,
            Problem::Tree(c) => write!(f, "tree: {c}")?,
            Problem::Freemap(c) => write!(f, "freemap: {c}")?,
            Problem::NotAllocated => f.write_str("reachable block not allocated in the freemap")?,
            Problem::NoLeaf => f.write_str("reachable block in a GiB without freemap leaf")?,
            Problem::IllegalGranule => f.write_str("freemap granule in the illegal state 01")?,
        }
        match self.problem {
            Problem::Tree(Cause::KeyOrder) | Problem::Freemap(Cause::KeyOrder) => {
                write!(f, " at key {:#x}", self.at)
            }
            _ => write!(f, " at {:#x}", self.at),
        }
    }
}

/// The findings of a check: a count of all and the first [`FINDINGS_MAX`].
#[derive(Debug, Default)]
struct Findings {
    total: u64,
    kept: Vec<Finding>,
}

impl Findings {
    fn add(&mut self, problem: Problem, at: u64) {
        self.total += 1;
        // Past the bound, or with no memory left for it, a finding is only counted.
        if self.kept.len() < FINDINGS_MAX && self.kept.try_reserve(1).is_ok() {
            self.kept.push(Finding { problem, at });
        }
    }

    fn merge(&mut self, other: Findings) {
        self.total += other.total;
        for f in other.kept {
            if self.kept.len() < FINDINGS_MAX && self.kept.try_reserve(1).is_ok() {
                self.kept.push(f);
            }
        }
    }
}

/// What [`fsck`] found.
#[derive(Debug)]
pub struct FsckReport {
    /// Each header copy, by zone.
    pub copies: [CopyState; NUM_VOLHDRS],
    /// The zone of the copy in use (`None`: no usable copy; nothing else was checked).
    pub zone: Option<usize>,
    /// Inodes reached (the super-root and PFS roots included).
    pub inodes: u64,
    /// Indirect blocks reached.
    pub indirect: u64,
    /// Data blocks reached (each reference once).
    pub data: u64,
    /// Directory entries reached.
    pub dirents: u64,
    /// Bytes of the blocks reached.
    pub reachable_bytes: u64,
    /// Freemap nodes read.
    pub freemap_nodes: u64,
    /// Freemap leaves read.
    pub freemap_leaves: u64,
    /// Granules (16 KiB) marked allocated that no reachable block uses, outside the space
    /// HAMMER2 reserves (the 4 MiB entries below `allocator_beg`, the first 4 MiB of each
    /// GiB): space a bulkfree would reclaim. Information, not a fault.
    pub unreachable_granules: u64,
    /// Findings in all.
    pub findings_total: u64,
    /// The first [`FINDINGS_MAX`] findings, by media offset.
    pub findings: Vec<Finding>,
}

impl FsckReport {
    /// No finding.
    pub fn is_clean(&self) -> bool {
        self.findings_total == 0
    }

    /// Whether the valid copy of `zone` is older than the copy in use (a normal state:
    /// HAMMER2 writes the copies in rotation).
    pub fn is_stale(&self, zone: usize) -> bool {
        let used = self.zone.and_then(|z| self.copies.get(z));
        match (self.copies.get(zone), used) {
            (Some(CopyState::Valid(t)), Some(CopyState::Valid(best))) => t < best,
            _ => false,
        }
    }
}

/// A bit per granule of the filesystem: which ones reachable blocks use.
struct GranuleMap {
    words: Vec<u64>,
}

impl GranuleMap {
    /// A map of `bytes` of filesystem, refused ([`Cause::TooBig`] at `bytes`) when it would
    /// take more than `limit` bytes, [`Cause::NoMem`] when the allocation fails.
    fn new(bytes: u64, limit: usize) -> ReadResult<GranuleMap> {
        let words = bytes.div_ceil(GRANULE_BYTES).div_ceil(64);
        let too_big = ReadError::new(Cause::TooBig, bytes);
        let n = usize::try_from(words).map_err(|_| too_big)?;
        match n.checked_mul(8) {
            Some(b) if b <= limit => {}
            _ => return Err(too_big),
        }
        let mut v = Vec::new();
        v.try_reserve_exact(n)
            .map_err(|_| ReadError::new(Cause::NoMem, bytes))?;
        v.resize(n, 0);
        Ok(GranuleMap { words: v })
    }

    fn index(off: u64) -> (usize, u64) {
        let g = off / GRANULE_BYTES;
        ((g / 64) as usize, 1u64 << (g % 64))
    }

    /// Mark the granules of `off..off + len` (silently clipped to the map).
    fn mark(&mut self, off: u64, len: usize) {
        let last = off.saturating_add(len as u64).saturating_sub(1);
        let mut g = off - off % GRANULE_BYTES;
        while g <= last {
            let (w, bit) = Self::index(g);
            if let Some(word) = self.words.get_mut(w) {
                *word |= bit;
            }
            g += GRANULE_BYTES;
        }
    }

    /// Whether the granule at `off` is marked; it is cleared.
    fn take(&mut self, off: u64) -> bool {
        let (w, bit) = Self::index(off);
        match self.words.get_mut(w) {
            Some(word) => {
                let was = *word & bit != 0;
                *word &= !bit;
                was
            }
            None => false,
        }
    }

    /// Clear the granules of `off..=last` (clipped to the map), with a scheduling point
    /// every 64 Ki granules: a faulty freemap node can cover the whole volume.
    fn clear(&mut self, off: u64, last: u64, yield_point: &dyn Fn()) {
        let bits = (self.words.len() as u64).saturating_mul(64);
        let end = (last / GRANULE_BYTES).min(bits.saturating_sub(1));
        let mut g = off / GRANULE_BYTES;
        while g <= end && g < bits {
            self.take(g * GRANULE_BYTES);
            if g % 65536 == 0 {
                yield_point();
            }
            g += 1;
        }
    }
}

/// Check the volume on `dev` (nothing is written). Errors only for what stops the check
/// itself: [`Cause::TooBig`] (the reachability map would exceed the limit; `at` is the
/// filesystem's size), [`Cause::NoMem`]. Every fault of the media is a finding.
///
/// Where the volume ends by its newest valid header copy (`volu_size`); the whole device when
/// no copy is valid, so every damaged slot is reported.
fn volume_end(copies: &[HeaderCopy; NUM_VOLHDRS]) -> u64 {
    copies
        .iter()
        .filter_map(|c| match c {
            HeaderCopy::Read(Ok(h)) => Some(h),
            _ => None,
        })
        .max_by_key(|h| h.mirror_tid)
        .map_or(u64::MAX, |h| h.volu_size)
}

/// DEVIATION: `fsck_hammer2` walks the tree of every valid header copy; this walks only the
/// copy in use (the one a mount takes) and reports the others by state and `mirror_tid`:
/// after copy-on-write, blocks an older copy names may since have been freed and reused, so
/// faults found through them would not be faults of the volume.
pub fn fsck<D: BlockDev>(dev: D, mut opts: FsckOptions<'_>) -> ReadResult<FsckReport> {
    let copies = read_copies(&dev)?;
    let mut found = Findings::default();
    let mut states = [CopyState::Absent; NUM_VOLHDRS];
    let end = volume_end(&copies);
    for (i, (c, s)) in copies.iter().zip(states.iter_mut()).enumerate() {
        *s = match c {
            HeaderCopy::Absent => CopyState::Absent,
            // A slot of the device past the volume is not part of it (newfs on a larger device
            // zeroes those slots): not a finding.
            _ if copy_offset(i) >= end => CopyState::Absent,
            HeaderCopy::Unreadable(at, e) => {
                found.add(Problem::HeaderUnreadable(*e), *at);
                CopyState::Unreadable(*e)
            }
            HeaderCopy::Read(Err(e)) => {
                found.add(Problem::HeaderBad(*e), copy_offset(i));
                CopyState::Bad(*e)
            }
            HeaderCopy::Read(Ok(h)) => CopyState::Valid(h.mirror_tid),
        };
    }
    let mut report = FsckReport {
        copies: states,
        zone: None,
        inodes: 0,
        indirect: 0,
        data: 0,
        dirents: 0,
        reachable_bytes: 0,
        freemap_nodes: 0,
        freemap_leaves: 0,
        unreachable_granules: 0,
        findings_total: 0,
        findings: Vec::new(),
    };
    match Volume::from_copies(dev, copies) {
        Ok(vol) => {
            report.zone = Some(vol.zone());
            let mut map = GranuleMap::new(vol.header.fs_size(), opts.map_limit)?;
            check_tree(&vol, &mut map, &mut report, &mut found, &mut opts)?;
            check_freemap(&vol, &mut map, &mut report, &mut found)?;
        }
        Err(e) if e.cause == Cause::NoMem => return Err(e),
        Err(e) => found.add(Problem::Unusable(e.cause), e.at),
    }
    report.findings_total = found.total;
    report.findings = found.kept;
    // By offset, keeping the order of equal ones (header copy before "no usable header"):
    // an insertion sort, as the library's stable sort allocates, and there are at most
    // FINDINGS_MAX.
    let v = &mut report.findings;
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && v[j - 1].at > v[j].at {
            v.swap(j - 1, j);
            j -= 1;
        }
    }
    Ok(report)
}

/// Walk the tree from the header in use, counting, marking what is reachable and checking
/// every block.
fn check_tree<D: BlockDev>(
    vol: &Volume<D>,
    map: &mut GranuleMap,
    r: &mut FsckReport,
    found: &mut Findings,
    opts: &mut FsckOptions<'_>,
) -> ReadResult<()> {
    let mut buf = zeroed(DATA_BLOCK_BYTES)?;
    let mut faults = Findings::default();
    let mut visited = 0u64;
    // Borrowed: a copy would keep 512 bytes in this frame under the whole walk.
    let set = &vol.header.sroot_blockset;
    let mut visit = |b: &Blockref, _: Option<&_>| -> ReadResult<Flow> {
        visited += 1;
        if visited % PROGRESS_EVERY == 0 {
            if let Some(p) = opts.progress.as_mut() {
                p(visited);
            }
        }
        // Marks the block reachable, or records why it is out of range.
        let mut reach = |found: &mut Findings| match vol.locate(b) {
            Ok((off, len)) => {
                map.mark(off, len);
                r.reachable_bytes += len as u64;
                true
            }
            Err(e) => {
                found.add(Problem::Tree(e.cause), e.at);
                false
            }
        };
        let media = |e: ReadError| e.cause != Cause::NoMem;
        match b.btype {
            BREF_TYPE_INODE => {
                r.inodes += 1;
                reach(found);
            }
            BREF_TYPE_INDIRECT => {
                r.indirect += 1;
                // A block out of range is the walk's fault to report, when it reads it.
                if vol.locate(b).is_ok() {
                    reach(found);
                }
            }
            BREF_TYPE_DATA => {
                r.data += 1;
                if b.size_radix() != 0 && reach(found) {
                    match vol.read_data(b, &mut buf) {
                        Err(e) if media(e) => found.add(Problem::Tree(e.cause), e.at),
                        res => res?,
                    }
                }
            }
            BREF_TYPE_DIRENT => {
                r.dirents += 1;
                match DirentHead::decode(b) {
                    Err(e) => found.add(Problem::Tree(Cause::Media(e)), b.data_off),
                    Ok(head) if !head.name_is_embedded() && reach(found) => {
                        match vol.read_block(b) {
                            Err(e) if media(e) => found.add(Problem::Tree(e.cause), e.at),
                            res => drop(res?),
                        }
                    }
                    Ok(_) => {}
                }
            }
            t => found.add(Problem::Tree(Cause::WrongType(t)), b.data_off),
        }
        Ok(Flow::Continue)
    };
    vol.walk_all_tolerant(set, &mut visit, &mut |e| {
        if e.cause == Cause::NoMem {
            return Err(e);
        }
        faults.add(Problem::Tree(e.cause), e.at);
        Ok(())
    })?;
    found.merge(faults);
    Ok(())
}

/// Walk the freemap: its blocks' CRCs and keys, then each leaf against the map of what is
/// reachable; what is reachable outside every leaf last.
fn check_freemap<D: BlockDev>(
    vol: &Volume<D>,
    map: &mut GranuleMap,
    r: &mut FsckReport,
    found: &mut Findings,
) -> ReadResult<()> {
    let fs_size = vol.header.fs_size();
    let beg = vol.header.allocator_beg;
    vol.walk_freemap(&mut |v| {
        match v {
            FreemapVisit::Node(_) => r.freemap_nodes += 1,
            FreemapVisit::Leaf(b, bmaps) => {
                r.freemap_leaves += 1;
                check_leaf(vol, b.key, bmaps, fs_size, beg, map, r, found);
            }
            FreemapVisit::Fault(e, b) => {
                found.add(Problem::Freemap(e.cause), e.at);
                // What the bad block maps is unknown, not missing: no NoLeaf for it.
                if let Some(b) = b.filter(|b| {
                    b.btype == BREF_TYPE_FREEMAP_LEAF || b.btype == BREF_TYPE_FREEMAP_NODE
                }) {
                    map.clear(b.key, b.key_end(), &|| vol.dev.yield_point());
                }
            }
        }
        Ok(Flow::Continue)
    })?;
    for (w, word) in map.words.iter().enumerate() {
        if w % 1024 == 0 {
            vol.dev.yield_point();
        }
        let mut bits = *word;
        while bits != 0 {
            let g = w as u64 * 64 + u64::from(bits.trailing_zeros());
            bits &= bits - 1;
            let off = g * GRANULE_BYTES;
            // DEVIATION: stricter than the kernel, whose recovery pass may mark blocks newer
            // than `freemap_tid` on a read-write mount; a volume that relies on it is reported.
            if off >= beg {
                found.add(Problem::NoLeaf, off);
            }
        }
    }
    Ok(())
}

/// Compare one leaf (mapping the GiB at `key`) with the reachable map, clearing the map's
/// bits of that GiB as it goes.
#[allow(clippy::too_many_arguments)]
fn check_leaf<D: BlockDev>(
    vol: &Volume<D>,
    key: u64,
    bmaps: &[BmapData],
    fs_size: u64,
    beg: u64,
    map: &mut GranuleMap,
    r: &mut FsckReport,
    found: &mut Findings,
) {
    // HAMMER2 marks whole entries below `allocator_beg` allocated (`hammer2_freemap_init`
    // rounds it up to an entry), whatever of them is used.
    let lokey = beg.div_ceil(BMAP_SPAN).saturating_mul(BMAP_SPAN);
    for (n, m) in bmaps.iter().enumerate() {
        vol.dev.yield_point();
        let Some(base) = key.checked_add(n as u64 * BMAP_SPAN) else {
            return;
        };
        for g in 0..GRANULES {
            let off = base + g as u64 * GRANULE_BYTES;
            if off >= fs_size {
                return;
            }
            let reachable = map.take(off);
            match m.granule(g) {
                Granule::Allocated => {
                    if !reachable && n != 0 && off >= lokey {
                        r.unreachable_granules += 1;
                    }
                }
                Granule::Illegal => found.add(Problem::IllegalGranule, off),
                Granule::Free | Granule::Staged => {}
            }
            if reachable && m.granule(g) != Granule::Allocated {
                found.add(Problem::NotAllocated, off);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::super::testdev::{
        add_freemap, each_damaged, edit_header, sample, sample_with, MemDev, LEAF_AT,
    };
    use super::*;
    use crate::media::volhdr::{VolumeHeader, VOLUME_BYTES};

    fn dev(img: Vec<u8>) -> MemDev {
        MemDev {
            bytes: img,
            fail_at: None,
            high: None,
        }
    }

    fn check(img: Vec<u8>) -> FsckReport {
        fsck(dev(img), FsckOptions::default()).unwrap()
    }

    /// The sample with its freemap.
    fn healthy() -> (Vec<u8>, super::super::testdev::Layout) {
        let (mut img, l) = sample();
        add_freemap(&mut img, &|_| ());
        (img, l)
    }

    fn problems(r: &FsckReport) -> Vec<(Problem, u64)> {
        r.findings.iter().map(|f| (f.problem, f.at)).collect()
    }

    /// Set the two bits of the granule at `off` (inside GiB 0) in a raw leaf.
    fn set_granule(leaf: &mut [u8], off: u64, bits: u64) {
        let (n, g) = (
            (off / BMAP_SPAN) as usize,
            ((off % BMAP_SPAN) / GRANULE_BYTES) as usize,
        );
        let at = n * 128 + 0x40 + (g / 32) * 8;
        let mut w = u64::from_le_bytes(leaf[at..at + 8].try_into().unwrap());
        w = (w & !(3 << ((g % 32) * 2))) | (bits << ((g % 32) * 2));
        leaf[at..at + 8].copy_from_slice(&w.to_le_bytes());
    }

    #[test]
    fn healthy_volume_is_clean() {
        let (img, _) = healthy();
        let mut ticks = 0;
        let mut progress = |_| ticks += 1;
        let opts = FsckOptions {
            progress: Some(&mut progress),
            ..FsckOptions::default()
        };
        let r = fsck(dev(img), opts).unwrap();
        assert!(r.is_clean(), "{:?}", r.findings);
        assert_eq!(r.zone, Some(0));
        assert_eq!(r.copies[0], CopyState::Valid(0x11));
        assert_eq!(r.copies[1], CopyState::Absent);
        let counts = (r.inodes, r.indirect, r.data, r.dirents);
        assert_eq!(counts, (5, 2, 2, 4));
        assert_eq!((r.freemap_nodes, r.freemap_leaves), (0, 1));
        assert_eq!(r.unreachable_granules, 0);
        assert!(r.reachable_bytes > 5 * 1024);
        assert_eq!(ticks, 0, "a small volume reports no progress");
    }

    #[test]
    fn flipped_data_byte_is_named_and_the_walk_goes_on() {
        let (mut img, l) = healthy();
        img[l.file_data0 as usize + 9] ^= 0x20;
        let r = check(img);
        assert_eq!(r.findings_total, 1);
        let f = r.findings[0];
        assert_eq!(
            f.problem,
            Problem::Tree(Cause::Media(MediaError::CheckMismatch))
        );
        assert_eq!(f.at & !0x3F, l.file_data0);
        // Everything else was still checked.
        assert_eq!((r.inodes, r.data, r.dirents), (5, 2, 4));
        // A damaged inode: its subtree is skipped, the rest is walked.
        let (mut img, l) = healthy();
        img[l.pfs_root as usize + 300] ^= 1;
        let r = check(img);
        assert_eq!(
            problems(&r),
            [(
                Problem::Tree(Cause::Media(MediaError::CheckMismatch)),
                l.pfs_root | 10
            )]
        );
        // Reached: the super-root and the damaged PFS root (its block counted in use).
        assert_eq!(r.inodes, 2);
    }

    #[test]
    fn reachable_block_marked_free_is_a_finding() {
        let (mut img, l) = sample();
        add_freemap(&mut img, &|leaf| set_granule(leaf, l.file_data0, 0));
        let r = check(img);
        let granule = l.file_data0 - l.file_data0 % GRANULE_BYTES;
        assert_eq!(problems(&r), [(Problem::NotAllocated, granule)]);
    }

    #[test]
    fn illegal_and_unreachable_granules() {
        let (mut img, _) = sample();
        add_freemap(&mut img, &|leaf| {
            set_granule(leaf, BMAP_SPAN, 1);
            set_granule(leaf, BMAP_SPAN + GRANULE_BYTES, 3);
            set_granule(leaf, BMAP_SPAN + 2 * GRANULE_BYTES, 2);
        });
        let r = check(img);
        assert_eq!(problems(&r), [(Problem::IllegalGranule, BMAP_SPAN)]);
        // Allocated but unused is information only, and 10 (staged) is neither.
        assert_eq!(r.unreachable_granules, 1);
        // An `allocator_beg` inside entry 1: the kernel marks all of entry 1 allocated,
        // which is not unreachable space.
        let (mut img, _) = sample();
        add_freemap(&mut img, &|leaf| leaf[128 + 0x40..256].fill(0xFF));
        edit_header(&mut img, &|h| h.allocator_beg = BMAP_SPAN + 0x4c00);
        let r = check(img);
        assert!(r.is_clean(), "{:?}", r.findings);
        assert_eq!(r.unreachable_granules, 0);
    }

    #[test]
    fn freemap_damage() {
        // A leaf whose bytes do not match its CRC: reported, and what it maps is not also
        // reported block by block.
        let (mut img, _) = healthy();
        img[LEAF_AT as usize + 5000] ^= 1;
        let r = check(img);
        let crc = Problem::Freemap(Cause::Media(MediaError::CheckMismatch));
        assert_eq!(problems(&r), [(crc, LEAF_AT | 15)]);
        // A leaf blockref that is not one.
        let (mut img, _) = healthy();
        edit_header(&mut img, &|h| h.freemap_blockset[0][3] = 29);
        let r = check(img);
        // What it maps is unknown: the reachable blocks are reported as without a leaf.
        let no_leaf = r.findings.iter().filter(|f| f.problem == Problem::NoLeaf);
        assert_eq!(r.findings_total, 1 + no_leaf.count() as u64);
        assert_eq!(
            r.findings[0].problem,
            Problem::Freemap(Cause::Media(MediaError::Field("freemap blockref")))
        );
        // Two leaves for the same GiB.
        let (mut img, _) = healthy();
        edit_header(&mut img, &|h| h.freemap_blockset[1] = h.freemap_blockset[0]);
        let r = check(img);
        assert_eq!(problems(&r), [(Problem::Freemap(Cause::KeyOrder), 0)]);
    }

    #[test]
    fn no_leaf_above_allocator_beg() {
        // No freemap, every block at or after allocator_beg (0): each granule is a finding.
        let (img, _) = sample();
        let r = check(img);
        assert!(r.findings_total > 0);
        assert!(r.findings.iter().all(|f| f.problem == Problem::NoLeaf));
        // newfs's way: no freemap, every block below allocator_beg.
        let (mut img, _) = sample();
        edit_header(&mut img, &|h| h.allocator_beg = 4 << 20);
        assert!(check(img).is_clean());
    }

    #[test]
    fn header_copies() {
        // A 4 GiB device: copy 1 newer than copy 0.
        let (mut img, _) = healthy();
        let size = 4u64 << 30;
        edit_header(&mut img, &|h| {
            h.volu_size = size;
            h.total_size = size;
        });
        let mut h = VolumeHeader::decode(&img[..VOLUME_BYTES]).unwrap();
        h.mirror_tid = 0x20;
        let mut zone1 = vec![0u8; VOLUME_BYTES];
        h.encode_into(&mut zone1).unwrap();
        let big = |img: &Vec<u8>| MemDev {
            bytes: img.clone(),
            fail_at: None,
            high: Some((size, zone1.clone())),
        };
        let r = fsck(big(&img), FsckOptions::default()).unwrap();
        assert!(r.is_clean(), "{:?}", r.findings);
        assert_eq!(r.zone, Some(1));
        assert!(r.is_stale(0) && !r.is_stale(1) && !r.is_stale(2));
        assert_eq!(r.copies[2], CopyState::Absent);
        // Copy 0 damaged: reported; copy 1 used.
        img[0x100] ^= 1;
        let r = fsck(big(&img), FsckOptions::default()).unwrap();
        assert_eq!(r.zone, Some(1));
        let bad = Problem::HeaderBad(MediaError::HeaderCrc(
            crate::media::error::HeaderSect::Sect0,
        ));
        assert_eq!(problems(&r), [(bad, 0)]);
        assert_eq!(r.inodes, 5);
        // No copy valid: nothing else is checked.
        let (mut img, _) = healthy();
        img[0] ^= 1;
        let r = check(img);
        assert_eq!(r.zone, None);
        assert_eq!(r.copies[0], CopyState::Bad(MediaError::BadMagic));
        assert_eq!(r.findings_total, 2);
        assert_eq!(
            r.findings[1].problem,
            Problem::Unusable(Cause::Media(MediaError::BadMagic))
        );
        // A device that fails reading copy 0.
        let (img, _) = healthy();
        let mut d = dev(img);
        d.fail_at = Some(0);
        let r = fsck(d, FsckOptions::default()).unwrap();
        assert_eq!(r.copies[0], CopyState::Unreadable(Error::Io));
        assert_eq!(r.zone, None);
    }

    #[test]
    fn key_order_fault_is_reported_and_skipped() {
        // The file's two DATA blockrefs swapped.
        let (mut img, _) = sample_with(&|t, _| {
            let (a, b) = t.split_at_mut(128);
            a.swap_with_slice(&mut b[..128]);
        });
        add_freemap(&mut img, &|_| ());
        let r = check(img);
        assert_eq!(problems(&r), [(Problem::Tree(Cause::KeyOrder), 0)]);
        assert_eq!((r.inodes, r.data), (5, 1));
    }

    #[test]
    fn map_limit_refuses_big_volumes() {
        let (img, _) = healthy();
        let opts = FsckOptions {
            map_limit: 8,
            progress: None,
        };
        let e = fsck(dev(img), opts).unwrap_err();
        assert_eq!((e.cause, e.at), (Cause::TooBig, 8 << 20));
    }

    #[test]
    fn findings_are_bounded() {
        // Every entry of the leaf illegal: thousands of findings, a hundred kept.
        let (mut img, _) = sample();
        add_freemap(&mut img, &|leaf| {
            for e in leaf.chunks_exact_mut(128) {
                e[0x40..].fill(0x55);
            }
        });
        let r = check(img);
        assert_eq!(r.findings.len(), FINDINGS_MAX);
        // Two entries of 256 granules (the volume's 8 MiB), plus the reachable granules.
        assert!(r.findings_total > 2 * GRANULES as u64);
    }

    #[test]
    fn random_damage_never_panics() {
        let (img, _) = healthy();
        let pick = |x: u64| match x % 3 {
            0 => (x >> 8) as usize % 4096,
            1 => LEAF_AT as usize + (x >> 8) as usize % 32768,
            _ => (1 << 20) + (x >> 8) as usize % 65536,
        };
        each_damaged(&img, 200, 0x2545_F491_4F6C_DD1D, &pick, &mut |bad| {
            let _ = fsck(dev(bad), FsckOptions::default());
        });
    }
}
