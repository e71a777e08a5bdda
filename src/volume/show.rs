//! The text of `ls`, `show` and `fsck`, written into any [`fmt::Write`], so every host (the
//! CLI, a kernel's debugfs file) prints a volume the same way and their outputs can be
//! compared.

use alloc::vec::Vec;
use core::fmt;

use super::freemap::FreemapVisit;
use super::fsck::{CopyState, FsckReport, FINDINGS_MAX};
use super::scan::DEPTH_MAX;
use super::{BlockDev, Cause, Entry, Flow, HeaderCopy, Pfs, ReadError, ReadResult, Volume};
use crate::media::dirent::DirentHead;
use crate::media::freemap::{BmapData, FREEMAP_BLOCK_BYTES, GRANULES, GRANULE_BYTES, LEAF_KEYBITS};
use crate::media::volhdr::{copy_offset, NUM_VOLHDRS};
use crate::media::{
    Blockref, InodeData, BREF_TYPE_DATA, BREF_TYPE_DIRENT, BREF_TYPE_EMPTY, BREF_TYPE_FREEMAP_LEAF,
    BREF_TYPE_FREEMAP_NODE, BREF_TYPE_INDIRECT, BREF_TYPE_INODE, OBJTYPE_DIRECTORY,
    OBJTYPE_REGFILE, OBJTYPE_SOFTLINK, PFSTYPE_CACHE, PFSTYPE_MASTER, PFSTYPE_NONE, PFSTYPE_SLAVE,
    PFSTYPE_SOFT_MASTER, PFSTYPE_SOFT_SLAVE, PFSTYPE_SUPROOT,
};

/// Bytes shown as text, each invalid UTF-8 sequence as U+FFFD (what
/// `String::from_utf8_lossy` gives, without allocating).
pub struct Lossy<'a>(pub &'a [u8]);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{FFFD}")?;
            }
        }
        Ok(())
    }
}

/// Why a listing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowError {
    /// The volume could not be read.
    Read(ReadError),
    /// The output refused a write (a full buffer): the listing stops there.
    Output,
}

impl From<ReadError> for ShowError {
    fn from(e: ReadError) -> ShowError {
        ShowError::Read(e)
    }
}

impl From<fmt::Error> for ShowError {
    fn from(_: fmt::Error) -> ShowError {
        ShowError::Output
    }
}

fn type_char(t: u8) -> char {
    match t {
        OBJTYPE_DIRECTORY => 'd',
        OBJTYPE_REGFILE => 'f',
        OBJTYPE_SOFTLINK => 'l',
        _ => '?',
    }
}

/// One `ls` line: `TYPE MODE SIZE INUM NLINKS NAME[ -> TARGET]`.
fn ls_line<D: BlockDev>(
    w: &mut dyn fmt::Write,
    vol: &Volume<D>,
    pfs: &Pfs,
    ino: &InodeData,
    name: &[u8],
) -> Result<(), ShowError> {
    let m = &ino.meta;
    // The target is read before anything is written, so a fault leaves no half line.
    let target = match m.objtype {
        OBJTYPE_SOFTLINK => Some(link_target(vol, pfs, ino)?),
        _ => None,
    };
    write!(
        w,
        "{} 0o{:04o} {:>10} {:#x} {} {}",
        type_char(m.objtype),
        m.mode & 0o7777,
        m.size,
        m.inum,
        m.nlinks,
        Lossy(name)
    )?;
    if let Some(t) = target {
        write!(w, " -> {}", Lossy(&t))?;
    }
    w.write_str("\n")?;
    Ok(())
}

/// The target of symlink `ino`. Not inlined: the formatting of its line stays off the stack
/// under the read.
#[inline(never)]
fn link_target<D: BlockDev>(vol: &Volume<D>, pfs: &Pfs, ino: &InodeData) -> ReadResult<Vec<u8>> {
    pfs.readlink(vol, ino)
}

/// A UUID as stored (the first three fields little-endian, as DragonFly's `uuid_t`), shown in
/// the text form `newfs --clid` takes: `01234567-89ab-cdef-0123-456789abcdef`.
pub struct Uuid<'a>(pub &'a [u8; 16]);

impl fmt::Display for Uuid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        for (n, &i) in order.iter().enumerate() {
            if matches!(n, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{:02x}", b[i])?;
        }
        Ok(())
    }
}

/// `ls IMAGE`: a line on the volume header in use, then one per PFS (label, type, inode
/// number allocator, cluster id), in key order.
#[inline(never)]
pub fn ls_pfses<D: BlockDev>(w: &mut dyn fmt::Write, vol: &Volume<D>) -> Result<(), ShowError> {
    let h = vol.header();
    writeln!(
        w,
        "# volume {} bytes, version {}, header copy {} (mirror_tid {:#x})",
        h.volu_size,
        h.version,
        vol.zone(),
        h.mirror_tid
    )?;
    let mut out_err = false;
    let r = vol.pfs_roots(&mut |p| {
        let line = writeln!(
            w,
            "{} pfs_type {} pfs_inum {:#x} pfs_clid {}",
            Lossy(p.filename()),
            p.meta.pfs_type,
            p.meta.pfs_inum,
            Uuid(&p.meta.pfs_clid)
        );
        out_err = line.is_err();
        Ok(if out_err { Flow::Stop } else { Flow::Continue })
    });
    r?;
    if out_err {
        return Err(ShowError::Output);
    }
    Ok(())
}

/// `ls IMAGE@LABEL PATH`: the entries of directory `path` of `pfs` sorted by name, one
/// [`ls_line`] each, or the one line of a file or symlink.
#[inline(never)]
pub fn ls_path<D: BlockDev>(
    w: &mut dyn fmt::Write,
    vol: &Volume<D>,
    pfs: &Pfs,
    path: &[u8],
) -> Result<(), ShowError> {
    let ino = pfs.resolve_box(vol, path)?;
    if ino.meta.objtype != OBJTYPE_DIRECTORY {
        let name = path
            .rsplit(|&b| b == b'/')
            .find(|c| !c.is_empty())
            .unwrap_or(path);
        return ls_line(w, vol, pfs, &ino, name);
    }
    let entries = sorted_entries(vol, pfs, &ino)?;
    for e in &entries {
        vol.dev().yield_point();
        ls_entry(w, vol, pfs, e)?;
    }
    Ok(())
}

/// The entries of directory `dir`, sorted by name. Not inlined: the directory walk's
/// temporaries leave the stack before each entry's inode is read below the listing's frame.
#[inline(never)]
fn sorted_entries<D: BlockDev>(
    vol: &Volume<D>,
    pfs: &Pfs,
    dir: &InodeData,
) -> Result<Vec<Entry>, ShowError> {
    let mut entries: Vec<Entry> = Vec::new();
    pfs.readdir(vol, dir, &mut |e| {
        entries
            .try_reserve(1)
            .map_err(|_| ReadError::new(Cause::NoMem, 0))?;
        entries.push(e.clone());
        Ok(Flow::Continue)
    })?;
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The [`ls_line`] of directory entry `e`. Not inlined: the line's formatting takes this
/// frame only while it runs, not the whole listing's (a kernel stack is small).
#[inline(never)]
fn ls_entry<D: BlockDev>(
    w: &mut dyn fmt::Write,
    vol: &Volume<D>,
    pfs: &Pfs,
    e: &Entry,
) -> Result<(), ShowError> {
    let child = pfs.inode_box(vol, e.inum)?;
    ls_line(w, vol, pfs, &child, &e.name)
}

/// The name of a PFS type (`pfs_type`), or `type N` for one this port has no name for.
struct PfsType(u8);

impl fmt::Display for PfsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            PFSTYPE_NONE => "none",
            PFSTYPE_CACHE => "cache",
            PFSTYPE_SLAVE => "slave",
            PFSTYPE_SOFT_SLAVE => "soft-slave",
            PFSTYPE_SOFT_MASTER => "soft-master",
            PFSTYPE_MASTER => "master",
            PFSTYPE_SUPROOT => "super-root",
            t => return write!(f, "type {t}"),
        })
    }
}

/// Inode numbers are the keys below 2^63 of a PFS root's table; directory entries lie above.
const INUM_KEYS: u64 = (1 << 63) - 1;

/// `show IMAGE`: the volume header in use, every header copy (offset, `mirror_tid`, whether
/// its CRCs hold, which is in use), then one line per PFS: label, type, cluster id, PFS id
/// and the inodes of its index. `copies` are the header copies `vol` was opened from
/// ([`super::read_copies`]). A PFS whose index cannot be counted shows `inodes ? (why)`;
/// the first such error is returned once every PFS is listed.
#[inline(never)]
pub fn show_volume<D: BlockDev>(
    w: &mut dyn fmt::Write,
    vol: &Volume<D>,
    copies: &[HeaderCopy; NUM_VOLHDRS],
) -> Result<Option<ReadError>, ShowError> {
    let h = vol.header();
    writeln!(
        w,
        "volume: {} bytes, version {}, fsid {}, allocator {} bytes ({} free)",
        h.volu_size,
        h.version,
        Uuid(&h.fsid),
        h.allocator_size,
        h.allocator_free
    )?;
    show_copies(w, copies, Some(vol.zone()))?;
    writeln!(w, "PFSs:")?;
    let mut out_err = false;
    let mut damaged = None;
    vol.pfs_roots(&mut |root| {
        vol.dev().yield_point();
        // One damaged index block costs its PFS's count, not the rest of the listing; a
        // failing device or no memory would fail every next read too.
        let inodes = count_inodes(vol, root);
        if let Err(e) = inodes {
            if matches!(e.cause, Cause::NoMem | Cause::Device(_)) {
                return Err(e);
            }
            damaged.get_or_insert(e);
        }
        let m = &root.meta;
        out_err = write!(
            w,
            "  {} {} clid {} fsid {} inodes ",
            Lossy(root.filename()),
            PfsType(m.pfs_type),
            Uuid(&m.pfs_clid),
            Uuid(&m.pfs_fsid),
        )
        .and_then(|()| match inodes {
            Ok(n) => writeln!(w, "{n}"),
            Err(e) => writeln!(w, "? ({e})"),
        })
        .is_err();
        Ok(if out_err { Flow::Stop } else { Flow::Continue })
    })?;
    if out_err {
        return Err(ShowError::Output);
    }
    Ok(damaged)
}

/// The `header copies:` table of `show`: each copy's offset and `mirror_tid` with its CRCs
/// holding, or why it was refused; `in_use` marks the copy a volume was opened from (none
/// when no copy could be used, which is when an admin needs this table most).
pub fn show_copies(
    w: &mut dyn fmt::Write,
    copies: &[HeaderCopy; NUM_VOLHDRS],
    in_use: Option<usize>,
) -> fmt::Result {
    writeln!(w, "header copies:")?;
    for (zone, c) in copies.iter().enumerate() {
        write!(w, "  {zone} at {:#x}: ", copy_offset(zone))?;
        match c {
            HeaderCopy::Absent => writeln!(w, "not inside the device")?,
            HeaderCopy::Unreadable(_, e) => writeln!(w, "unreadable ({e:?})")?,
            HeaderCopy::Read(Err(e)) => writeln!(w, "refused: {e}")?,
            HeaderCopy::Read(Ok(c)) => writeln!(
                w,
                "mirror_tid {:#x}, CRC ok{}",
                c.mirror_tid,
                if in_use == Some(zone) { ", in use" } else { "" }
            )?,
        }
    }
    Ok(())
}

/// The inodes of PFS root `root`'s index (the INODE blockrefs keyed below 2^63).
fn count_inodes<D: BlockDev>(vol: &Volume<D>, root: &InodeData) -> ReadResult<u64> {
    if root.meta.is_directdata() {
        return Ok(0);
    }
    let set = super::scan::blockset_vec(root, 0)?;
    let mut n = 0u64;
    vol.scan_vec(set, 0, INUM_KEYS, &mut |b| {
        if b.btype == BREF_TYPE_INODE {
            n += 1;
        }
        Ok(Flow::Continue)
    })?;
    Ok(n)
}

/// The name of a blockref type as `hammer2 show` prints it.
fn bref_type(t: u8) -> &'static str {
    match t {
        BREF_TYPE_EMPTY => "empty",
        BREF_TYPE_INODE => "inode",
        BREF_TYPE_INDIRECT => "indblk",
        BREF_TYPE_DATA => "data",
        BREF_TYPE_DIRENT => "dirent",
        BREF_TYPE_FREEMAP_NODE => "freemap_node",
        BREF_TYPE_FREEMAP_LEAF => "freemap_leaf",
        _ => "unknown",
    }
}

/// What `show --blockrefs` counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeCounts {
    /// Blockrefs shown.
    pub shown: u64,
    /// Of those, blocks whose check code (or decoding) failed.
    pub bad: u64,
    /// Tables not shown because they lie deeper than the depth asked for.
    pub cut: u64,
}

/// The most blockrefs a tree on a volume of `volu_size` bytes can hold: one per 128-byte
/// slot of the volume, plus the header's super-root set. A walk showing more meets some
/// block more than once.
fn blockref_cap(volu_size: u64) -> u64 {
    volu_size / crate::media::BREF_BYTES as u64 + crate::media::SET_COUNT as u64
}

/// Say that a walk's output was cut at `cap` lines of `what`, more than a volume of
/// `volu_size` bytes can hold, at the block `at`: the error the walk ends with.
fn cut_output(w: &mut dyn fmt::Write, cap: u64, what: &str, volu_size: u64, at: u64) -> ShowError {
    let line = writeln!(
        w,
        "output cut at {cap} {what}: more than a volume of {volu_size} bytes holds (blocks \
         referenced more than once)"
    );
    match line {
        Ok(()) => ShowError::Read(ReadError::new(Cause::TooBig, at)),
        Err(e) => e.into(),
    }
}

/// The start of a blockref's line in a tree: indented two spaces a level, its type,
/// key/keybits, `data_off`, `mirror_tid` and `modify_tid`.
fn bref_head(w: &mut dyn fmt::Write, level: usize, b: &Blockref) -> fmt::Result {
    for _ in 0..level {
        w.write_str("  ")?;
    }
    write!(
        w,
        "{} key {:#018x}/{} data_off {:#018x} mirror_tid {:#x} modify_tid {:#x}",
        bref_type(b.btype),
        b.key,
        b.keybits,
        b.data_off,
        b.mirror_tid,
        b.modify_tid
    )
}

/// One open table of [`show_blockrefs`].
struct Level {
    brefs: Vec<Blockref>,
    next: usize,
}

/// `show IMAGE --blockrefs`: the blockref tree from the volume header's super-root, one line
/// per non-empty blockref, indented two spaces a level: type, key/keybits, `data_off`,
/// `mirror_tid`, `modify_tid`, and whether its block passed its check code (a block that
/// does not is not descended into); an inode also shows its name, a directory entry the
/// inode it names. Tables more than `depth` levels below the super-root are not opened
/// (counted in [`TreeCounts::cut`]). An explicit stack of at most [`DEPTH_MAX`] tables, so
/// the walk's stack use is bounded whatever the volume holds; its output too: past the
/// blockrefs the volume's size can hold, a line says the output was cut and the walk fails
/// (`TooBig`).
#[inline(never)]
pub fn show_blockrefs<D: BlockDev>(
    w: &mut dyn fmt::Write,
    vol: &Volume<D>,
    depth: usize,
) -> Result<TreeCounts, ShowError> {
    let no_mem = || ShowError::Read(ReadError::new(Cause::NoMem, 0));
    let mut counts = TreeCounts::default();
    let cap = blockref_cap(vol.header().volu_size);
    let mut stack: Vec<Level> = Vec::new();
    stack.try_reserve_exact(DEPTH_MAX).map_err(|_| no_mem())?;
    let root = crate::mem::try_to_vec(&vol.header().sroot_blockset).map_err(|_| no_mem())?;
    stack.push(Level {
        brefs: root,
        next: 0,
    });
    while let Some(top) = stack.last_mut() {
        let Some(b) = top.brefs.get(top.next).copied() else {
            stack.pop();
            continue;
        };
        top.next += 1;
        if b.btype == BREF_TYPE_EMPTY {
            continue;
        }
        vol.dev().yield_point();
        if counts.shown >= cap {
            // Blocks shared between tables (a crafted volume) would be shown again under
            // every table naming them: up to 512^depth lines.
            return Err(cut_output(
                w,
                cap,
                "blockrefs",
                vol.header().volu_size,
                b.data_off,
            ));
        }
        let level = stack.len() - 1;
        counts.shown += 1;
        bref_head(w, level, &b)?;
        match open_block(vol, &b) {
            // The device failing (or the read interrupted) says nothing of the block, and the
            // next reads would fail alike: the walk stops, as when memory runs out.
            Err(e) if matches!(e.cause, Cause::NoMem | Cause::Device(_)) => {
                return Err(ShowError::Read(e))
            }
            Err(e) => {
                counts.bad += 1;
                writeln!(w, " check FAILED: {e}")?;
            }
            Ok(Opened::Leaf) => writeln!(w, " check ok")?,
            Ok(Opened::Dirent(inum)) => writeln!(w, " check ok -> inode {inum:#x}")?,
            Ok(Opened::Table(name, brefs)) => {
                match name {
                    Some((inum, name)) => {
                        writeln!(w, " check ok \"{}\" inum {inum:#x}", Lossy(&name))?
                    }
                    None => writeln!(w, " check ok")?,
                }
                if brefs.iter().all(|c| c.btype == BREF_TYPE_EMPTY) {
                    continue;
                }
                if level + 1 > depth {
                    counts.cut += 1;
                } else if stack.len() >= DEPTH_MAX {
                    return Err(ShowError::Read(ReadError::new(Cause::TooDeep, b.data_off)));
                } else {
                    stack.push(Level { brefs, next: 0 });
                }
            }
        }
    }
    Ok(counts)
}

/// What the freemap part of `show --blockrefs` counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FreemapCounts {
    /// Freemap blockrefs shown; of those, the ones that failed their check (CRC-32C, key
    /// order, a blockref that does not decode); FREEMAP_NODE tables not opened because they
    /// lie deeper than the depth asked for.
    pub blocks: TreeCounts,
    /// 16 KiB granules marked allocated in the leaves shown.
    pub allocated: u64,
    /// Granules a first bulkfree pass staged (possibly free) in the leaves shown.
    pub staged: u64,
}

/// The most freemap blocks a volume of `volu_size` bytes can hold (32 KiB each), plus the
/// header's freemap set. A walk showing more meets some block more than once.
fn freemap_cap(volu_size: u64) -> u64 {
    volu_size / FREEMAP_BLOCK_BYTES as u64 + crate::media::SET_COUNT as u64
}

/// A 64 KiB slot of a reserved segment; a freemap block takes one (HAMMER2-MEDIA §10).
const FREEMAP_SLOT: u64 = 64 << 10;
/// Slots of a reserved segment holding freemap blocks: eight rotation sets of five, from
/// slot 1.
const FREEMAP_SLOTS: core::ops::Range<u64> = 1..41;

/// The rotation set (0..8) of the freemap block at `data_off`, as `hammer2 freemap` prints it;
/// `None` outside the freemap slots of a reserved segment.
fn rotation(data_off: u64) -> Option<u64> {
    let slot = (data_off & !0x3F) % (1 << LEAF_KEYBITS) / FREEMAP_SLOT;
    FREEMAP_SLOTS.contains(&slot).then(|| (slot - 1) / 5)
}

/// KiB of `n` granules.
fn granule_kib(n: u64) -> u64 {
    n * (GRANULE_BYTES >> 10)
}

/// Allocation classes a leaf's line names; more are counted.
const CLASSES_SHOWN: usize = 6;

/// A freemap leaf's bitmaps, summed.
struct LeafSummary {
    /// Granules per state, indexed by their two bits: free, illegal, staged, allocated.
    granules: [u64; 4],
    /// The distinct non-zero classes of its entries, in entry order (the first
    /// [`CLASSES_SHOWN`]).
    classes: [u16; CLASSES_SHOWN],
    /// How many distinct non-zero classes there are.
    n_classes: usize,
}

impl LeafSummary {
    fn of(bmaps: &[BmapData]) -> LeafSummary {
        const LOW_BITS: u64 = 0x5555_5555_5555_5555;
        let mut s = LeafSummary {
            granules: [0; 4],
            classes: [0; CLASSES_SHOWN],
            n_classes: 0,
        };
        for (i, m) in bmaps.iter().enumerate() {
            for q in m.bitmapq {
                let (hi, lo) = ((q >> 1) & LOW_BITS, q & LOW_BITS);
                s.granules[1] += u64::from((lo & !hi).count_ones());
                s.granules[2] += u64::from((hi & !lo).count_ones());
                s.granules[3] += u64::from((hi & lo).count_ones());
            }
            let seen = bmaps[..i].iter().any(|p| p.class == m.class);
            if m.class != 0 && !seen {
                if let Some(c) = s.classes.get_mut(s.n_classes) {
                    *c = m.class;
                }
                s.n_classes += 1;
            }
        }
        let total = (bmaps.len() * GRANULES) as u64;
        s.granules[0] = total - s.granules[1..].iter().sum::<u64>();
        s
    }
}

impl fmt::Display for LeafSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kib = granule_kib;
        let [free, illegal, staged, allocated] = self.granules;
        write!(
            f,
            "allocated {} KiB, free {} KiB, staged {} KiB, illegal {} KiB; ",
            kib(allocated),
            kib(free),
            kib(staged),
            kib(illegal)
        )?;
        if self.n_classes == 0 {
            return f.write_str("no classes");
        }
        f.write_str("classes")?;
        for c in self.classes.iter().take(self.n_classes) {
            write!(f, " {}/{}", bref_type((c >> 8) as u8), c & 0xFF)?;
        }
        if self.n_classes > CLASSES_SHOWN {
            write!(f, " (+{} more)", self.n_classes - CLASSES_SHOWN)?;
        }
        Ok(())
    }
}

/// `show IMAGE --blockrefs`, its second part: the freemap tree from the volume header's
/// freemap blockset, indented as [`show_blockrefs`]: one line per FREEMAP_NODE or
/// FREEMAP_LEAF blockref (type, key/keybits, `data_off`, TIDs), its block's CRC-32C and
/// place in the tree verified (`check FAILED: ...`: nothing below it is shown, the walk goes
/// on), its rotation set, and for a leaf a summary of its bitmaps (bytes per granule state,
/// the allocation classes in use), not the bitmaps. A node more than `depth` levels below
/// the blockset is not opened (counted in [`TreeCounts::cut`]). A device read error stops
/// the walk; past the freemap blocks the volume's size can hold, a line says the output was
/// cut and the walk fails (`TooBig`).
#[inline(never)]
pub fn show_freemap<D: BlockDev>(
    w: &mut dyn fmt::Write,
    vol: &Volume<D>,
    depth: usize,
) -> Result<FreemapCounts, ShowError> {
    let mut counts = FreemapCounts::default();
    let volu_size = vol.header().volu_size;
    let cap = freemap_cap(volu_size);
    let mut stopped = None;
    vol.walk_freemap_levels(depth, &mut |level, v| {
        let line = match v {
            // As in the blockref tree: a failing device or no memory says nothing of the
            // block, and the next reads would fail alike.
            FreemapVisit::Fault(e, _) if matches!(e.cause, Cause::NoMem | Cause::Device(_)) => {
                return Err(e)
            }
            _ if counts.blocks.shown >= cap => {
                let at = match v {
                    FreemapVisit::Node(b) | FreemapVisit::Leaf(b, _) => b.data_off,
                    FreemapVisit::Fault(_, Some(b)) => b.data_off,
                    FreemapVisit::Fault(e, None) => e.at,
                };
                Err(cut_output(w, cap, "freemap blockrefs", volu_size, at))
            }
            v => freemap_line(w, level, &v, depth, &mut counts),
        };
        Ok(match line {
            Ok(()) => Flow::Continue,
            Err(e) => {
                stopped = Some(e);
                Flow::Stop
            }
        })
    })?;
    match stopped {
        Some(e) => Err(e),
        None => Ok(counts),
    }
}

/// The line of one freemap visit, counted into `counts`.
fn freemap_line(
    w: &mut dyn fmt::Write,
    level: usize,
    v: &FreemapVisit<'_>,
    depth: usize,
    counts: &mut FreemapCounts,
) -> Result<(), ShowError> {
    counts.blocks.shown += 1;
    let b = match v {
        FreemapVisit::Fault(e, None) => {
            counts.blocks.bad += 1;
            for _ in 0..level {
                w.write_str("  ")?;
            }
            writeln!(w, "freemap blockref check FAILED: {e}")?;
            return Ok(());
        }
        FreemapVisit::Fault(e, Some(b)) => {
            counts.blocks.bad += 1;
            bref_head(w, level, b)?;
            writeln!(w, " check FAILED: {e}")?;
            return Ok(());
        }
        FreemapVisit::Node(b) | FreemapVisit::Leaf(b, _) => b,
    };
    bref_head(w, level, b)?;
    w.write_str(" check ok")?;
    match rotation(b.data_off) {
        Some(r) => write!(w, " rotation {r}")?,
        None => w.write_str(" outside the freemap slots")?,
    }
    match v {
        FreemapVisit::Leaf(_, bmaps) => {
            let sum = LeafSummary::of(bmaps);
            counts.allocated += sum.granules[3];
            counts.staged += sum.granules[2];
            writeln!(w, ": {sum}")?;
        }
        _ => {
            if level >= depth {
                counts.blocks.cut += 1;
            }
            w.write_str("\n")?;
        }
    }
    Ok(())
}

/// The arguments of `show`: `[--blockrefs [--depth N]] IMAGE`, the same for every host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShowArgs<'a> {
    /// The image file or device.
    pub image: &'a str,
    /// With `--blockrefs`: the deepest table level shown (`usize::MAX` without `--depth`).
    pub blockrefs: Option<usize>,
}

/// Why `show`'s arguments were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowUsage<'a> {
    /// `--depth` without a value.
    DepthMissing,
    /// `--depth` with a value that is not a number.
    DepthNotNumber(&'a str),
    /// `--depth` without `--blockrefs`.
    DepthWithoutBlockrefs,
    /// An option `show` does not know.
    UnknownOption(&'a str),
    /// A second image.
    Unexpected(&'a str),
    /// No image.
    NoImage,
}

impl fmt::Display for ShowUsage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShowUsage::DepthMissing => f.write_str("--depth needs N"),
            ShowUsage::DepthNotNumber(v) => write!(f, "--depth: '{v}' is not a number"),
            ShowUsage::DepthWithoutBlockrefs => f.write_str("--depth is for --blockrefs"),
            ShowUsage::UnknownOption(o) => write!(f, "unknown option '{o}'"),
            ShowUsage::Unexpected(a) => write!(f, "unexpected argument '{a}'"),
            ShowUsage::NoImage => f.write_str("expected IMAGE"),
        }
    }
}

impl<'a> ShowArgs<'a> {
    /// Parse `show`'s arguments (the words after the command).
    pub fn parse(args: impl IntoIterator<Item = &'a str>) -> Result<ShowArgs<'a>, ShowUsage<'a>> {
        let mut blockrefs = false;
        let mut depth = None;
        let mut image = None;
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            match a {
                "--blockrefs" => blockrefs = true,
                "--depth" => {
                    let v = it.next().ok_or(ShowUsage::DepthMissing)?;
                    depth = Some(v.parse().map_err(|_| ShowUsage::DepthNotNumber(v))?);
                }
                o if o.starts_with('-') && o.len() > 1 => return Err(ShowUsage::UnknownOption(o)),
                i if image.is_none() => image = Some(i),
                i => return Err(ShowUsage::Unexpected(i)),
            }
        }
        let image = image.ok_or(ShowUsage::NoImage)?;
        if depth.is_some() && !blockrefs {
            return Err(ShowUsage::DepthWithoutBlockrefs);
        }
        Ok(ShowArgs {
            image,
            blockrefs: blockrefs.then(|| depth.unwrap_or(usize::MAX)),
        })
    }
}

/// What `show --blockrefs` counted: the blockref tree and the freemap.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShowCounts {
    /// The blockref tree from the super-root ([`show_blockrefs`]).
    pub tree: TreeCounts,
    /// The freemap tree ([`show_freemap`]).
    pub freemap: FreemapCounts,
}

impl ShowCounts {
    /// Blocks of either tree that failed their check.
    pub fn bad(&self) -> u64 {
        self.tree.bad + self.freemap.blocks.bad
    }
}

/// `show [--blockrefs [--depth N]] IMAGE` whole: [`show_volume`], then with `blockrefs` (the
/// depth, [`ShowArgs::blockrefs`]) a `blockrefs:` line and [`show_blockrefs`], a `freemap:`
/// line and [`show_freemap`], and a line of their counts. What the walks counted, if they
/// ran; an error once everything is shown when a PFS's inodes could not be counted.
pub fn show<D: BlockDev>(
    w: &mut dyn fmt::Write,
    vol: &Volume<D>,
    copies: &[HeaderCopy; NUM_VOLHDRS],
    blockrefs: Option<usize>,
) -> Result<Option<ShowCounts>, ShowError> {
    let damaged = show_volume(w, vol, copies)?;
    let counts = match blockrefs {
        None => None,
        Some(depth) => {
            w.write_str("blockrefs:\n")?;
            let tree = show_blockrefs(w, vol, depth)?;
            w.write_str("freemap:\n")?;
            let freemap = show_freemap(w, vol, depth)?;
            let c = ShowCounts { tree, freemap };
            let kib = granule_kib;
            writeln!(
                w,
                "{} blockrefs, {} freemap blockrefs, {} failed their check, {} tables below \
                 --depth not shown; {} KiB allocated, {} KiB staged in the freemap leaves shown",
                tree.shown,
                freemap.blocks.shown,
                c.bad(),
                tree.cut + freemap.blocks.cut,
                kib(freemap.allocated),
                kib(freemap.staged)
            )?;
            Some(c)
        }
    };
    // Everything was shown; the PFS index that could not be counted fails the command.
    match damaged {
        Some(e) => Err(ShowError::Read(e)),
        None => Ok(counts),
    }
}

/// A block of the tree, read and verified.
enum Opened {
    /// Data, an empty dirent or a DIRECTDATA inode's: nothing below.
    Leaf,
    /// A directory entry naming this inode.
    Dirent(u64),
    /// An inode (its inum and name) or an indirect block, with its table.
    Table(Option<(u64, Vec<u8>)>, Vec<Blockref>),
}

/// Read `b`'s block (its check code verified) and what lies below it. Not inlined: the
/// decoded inode leaves the stack before the next line is formatted.
#[inline(never)]
fn open_block<D: BlockDev>(vol: &Volume<D>, b: &Blockref) -> ReadResult<Opened> {
    let no_mem = |_| ReadError::new(Cause::NoMem, 0);
    match b.btype {
        BREF_TYPE_INODE => {
            let ino = vol.read_inode_box(b)?;
            let name = crate::mem::try_to_vec(ino.filename()).map_err(no_mem)?;
            let inum = ino.meta.inum;
            if ino.meta.is_directdata() {
                return Ok(Opened::Table(Some((inum, name)), Vec::new()));
            }
            let set = super::scan::blockset_vec(&ino, b.data_off)?;
            Ok(Opened::Table(Some((inum, name)), set))
        }
        BREF_TYPE_INDIRECT => Ok(Opened::Table(None, vol.read_table(b)?)),
        BREF_TYPE_DIRENT => {
            if b.size_radix() != 0 {
                vol.read_block(b)?;
            }
            let head =
                DirentHead::decode(b).map_err(|e| ReadError::new(Cause::Media(e), b.data_off))?;
            Ok(Opened::Dirent(head.inum))
        }
        _ => {
            if b.size_radix() != 0 {
                vol.read_block(b)?;
            }
            Ok(Opened::Leaf)
        }
    }
}

/// The report of `fsck IMAGE`: each header copy's state, the counts, the findings kept,
/// and a last line `IMAGE: clean` or `IMAGE: N findings`.
pub fn write_fsck(w: &mut dyn fmt::Write, image: &str, r: &FsckReport) -> fmt::Result {
    writeln!(w, "volume header copies:")?;
    for (zone, c) in r.copies.iter().enumerate() {
        write!(w, "  {zone} at {:#x}: ", copy_offset(zone))?;
        match c {
            CopyState::Absent => writeln!(w, "not inside the device")?,
            CopyState::Unreadable(e) => writeln!(w, "unreadable ({e:?})")?,
            CopyState::Bad(e) => writeln!(w, "refused: {e}")?,
            CopyState::Valid(tid) if r.zone == Some(zone) => {
                writeln!(w, "valid, mirror_tid {tid:#x}, in use")?
            }
            CopyState::Valid(tid) if r.is_stale(zone) => {
                writeln!(w, "valid, mirror_tid {tid:#x}, older than the copy in use")?
            }
            CopyState::Valid(tid) => writeln!(w, "valid, mirror_tid {tid:#x}")?,
        }
    }
    if r.zone.is_some() {
        writeln!(
            w,
            "reachable: {} inodes, {} indirect blocks, {} data blocks, {} directory entries, \
             {} bytes",
            r.inodes, r.indirect, r.data, r.dirents, r.reachable_bytes
        )?;
        writeln!(
            w,
            "freemap: {} nodes, {} leaves; {} KiB allocated but unreachable (a bulkfree \
             reclaims it)",
            r.freemap_nodes,
            r.freemap_leaves,
            r.unreachable_granules * 16
        )?;
    }
    for f in &r.findings {
        writeln!(w, "FINDING {f}")?;
    }
    if r.findings_total > FINDINGS_MAX as u64 {
        writeln!(
            w,
            "... and {} more findings",
            r.findings_total - FINDINGS_MAX as u64
        )?;
    }
    if r.is_clean() {
        writeln!(w, "{image}: clean")
    } else {
        writeln!(w, "{image}: {} findings", r.findings_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    #[test]
    fn lossy_matches_std() {
        for b in [&b"plain"[..], b"a\xffb", b"\xe2\x82", b"x\xe2\x82\xacy\xc0"] {
            let mut s = String::new();
            fmt::Write::write_fmt(&mut s, format_args!("{}", Lossy(b))).unwrap();
            assert_eq!(s, String::from_utf8_lossy(b), "{b:?}");
        }
    }

    /// An output that takes `room` bytes and refuses the rest.
    struct Small {
        room: usize,
        text: String,
    }

    impl fmt::Write for Small {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            if s.len() > self.room {
                return Err(fmt::Error);
            }
            self.room -= s.len();
            self.text.push_str(s);
            Ok(())
        }
    }

    #[test]
    fn a_full_output_stops_the_listing() {
        let (img, _) = super::super::testdev::sample();
        let vol = super::super::testdev::open(img).unwrap();
        let mut all = String::new();
        ls_pfses(&mut all, &vol).unwrap();
        assert!(all.lines().count() >= 2, "{all}");
        let mut small = Small {
            room: all.find('\n').unwrap() + 3,
            text: String::new(),
        };
        assert_eq!(ls_pfses(&mut small, &vol), Err(ShowError::Output));
        assert!(all.starts_with(&small.text));
    }

    /// `show_blockrefs` of the sample volume into a string, with its counts.
    fn tree(img: Vec<u8>, depth: usize) -> (String, TreeCounts) {
        let vol = super::super::testdev::open(img).unwrap();
        let mut out = String::new();
        let c = show_blockrefs(&mut out, &vol, depth).unwrap();
        (out, c)
    }

    #[test]
    fn the_blockref_tree_is_indented_checked_and_bounded() {
        let (img, layout) = super::super::testdev::sample();
        let (all, c) = tree(img.clone(), usize::MAX);
        // SUPROOT; DATA; /file's inode, its indirect block and two data blocks; /link;
        // /sub and its long-named dirent; the root's dirent table and its three entries.
        assert_eq!(
            c,
            TreeCounts {
                shown: 13,
                bad: 0,
                cut: 0
            },
            "{all}"
        );
        let lines: Vec<&str> = all.lines().collect();
        assert!(
            lines[0].starts_with("inode key 0x0000000000000000/0 "),
            "{all}"
        );
        assert!(lines[0].ends_with("check ok \"SUPROOT\" inum 0x0"), "{all}");
        assert!(lines[1].starts_with("  inode ") && lines[1].contains("\"DATA\""));
        assert_eq!(all.matches("\n        data key ").count(), 2, "{all}");
        assert_eq!(all.matches("dirent key ").count(), 4, "{all}");
        assert_eq!(all.matches(" -> inode 0x400").count(), 2, "{all}");

        let (top, c) = tree(img.clone(), 1);
        assert_eq!(
            c,
            TreeCounts {
                shown: 2,
                bad: 0,
                cut: 1
            },
            "{top}"
        );
        assert!(all.starts_with(&top));

        // A flipped byte in /file's first data block: that block fails, the rest is shown.
        let mut bad = img;
        bad[layout.file_data0 as usize + 10] ^= 0xFF;
        let (out, c) = tree(bad, usize::MAX);
        assert_eq!(
            c,
            TreeCounts {
                shown: 13,
                bad: 1,
                cut: 0
            },
            "{out}"
        );
        let failed: Vec<&str> = out.lines().filter(|l| l.contains("FAILED")).collect();
        assert_eq!(failed.len(), 1, "{out}");
        assert!(failed[0]
            .trim_start()
            .starts_with("data key 0x0000000000000000/16"));
    }

    #[test]
    fn a_device_error_stops_the_walk() {
        let (img, layout) = super::super::testdev::sample();
        let vol = Volume::open(super::super::testdev::MemDev {
            bytes: img,
            fail_at: Some(layout.file_data0),
            high: None,
        })
        .unwrap();
        let mut out = String::new();
        let r = show_blockrefs(&mut out, &vol, usize::MAX);
        assert!(
            matches!(r, Err(ShowError::Read(e)) if matches!(e.cause, Cause::Device(_))),
            "{r:?}: {out}"
        );
        assert!(!out.contains("FAILED"), "{out}");
    }

    #[test]
    fn blocks_shared_between_tables_cut_the_output() {
        use super::super::testdev::{inode, set, Builder};
        // 512 entries naming one table of 512 short directory entries: 2^18 lines if every
        // entry were shown, 8 MiB holds 2^16 blockrefs.
        let mut bld = Builder::new(8 << 20);
        let leaves: Vec<Blockref> = (0..512u64)
            .map(|i| crate::media::dirent::short_dirent(i, 0x400, OBJTYPE_REGFILE, b"x").unwrap())
            .collect();
        let shared = bld.table(0, 16, 16, &leaves);
        let top = bld.table(0, 32, 16, &[shared; 512]);
        let mut sroot = inode(OBJTYPE_DIRECTORY, 0, b"SUPROOT");
        sroot.meta.pfs_type = PFSTYPE_SUPROOT;
        sroot.set_blockset(&set(&[top]));
        let sroot_b = bld.inode(0, &sroot);
        bld.header(0, sroot_b, 0x11);
        let vol = super::super::testdev::open(bld.img).unwrap();
        let mut out = String::new();
        let r = show_blockrefs(&mut out, &vol, usize::MAX);
        assert!(
            matches!(r, Err(ShowError::Read(e)) if e.cause == Cause::TooBig),
            "{r:?}"
        );
        let cap = blockref_cap(8 << 20);
        assert_eq!(out.lines().count() as u64, cap + 1);
        assert!(
            out.lines()
                .last()
                .unwrap()
                .starts_with(&alloc::format!("output cut at {cap} blockrefs: ")),
            "{}",
            out.lines().last().unwrap()
        );
    }

    /// A volume whose PFS `DATA` keeps its two inodes under an indirect block (at the offset
    /// returned), beside the sample's `B`, an empty PFS.
    fn indexed_volume() -> (Vec<u8>, u64) {
        use super::super::testdev::{inode, set, Builder};
        let mut bld = Builder::new(8 << 20);
        let a = bld.inode(0x400, &inode(OBJTYPE_REGFILE, 0x400, b"a"));
        let b = bld.inode(0x401, &inode(OBJTYPE_REGFILE, 0x401, b"b"));
        let ind = bld.table(0x400, 10, 12, &[a, b]);
        let mut root = inode(OBJTYPE_DIRECTORY, 1, b"DATA");
        root.meta.op_flags = crate::media::OpFlags::PFSROOT.bits();
        root.meta.pfs_type = PFSTYPE_MASTER;
        root.set_blockset(&set(&[ind]));
        let root_b = bld.inode(crate::media::dirhash(b"DATA"), &root);
        let mut other = inode(OBJTYPE_DIRECTORY, 1, b"B");
        other.meta.op_flags = crate::media::OpFlags::PFSROOT.bits();
        other.meta.pfs_type = PFSTYPE_SLAVE;
        other.meta.op_flags |= crate::media::OpFlags::DIRECTDATA.bits();
        let other_b = bld.inode(crate::media::dirhash(b"B"), &other);
        let mut pair = [root_b, other_b];
        pair.sort_by_key(|b| b.key);
        let mut sroot = inode(OBJTYPE_DIRECTORY, 0, b"SUPROOT");
        sroot.meta.pfs_type = PFSTYPE_SUPROOT;
        sroot.set_blockset(&set(&pair));
        let sroot_b = bld.inode(0, &sroot);
        bld.header(0, sroot_b, 0x11);
        (bld.img, ind.data_off & !0x3F)
    }

    #[test]
    fn a_damaged_index_block_costs_its_count_not_the_listing() {
        let (mut img, ind) = indexed_volume();
        let listing = |img: Vec<u8>| {
            let vol = super::super::testdev::open(img).unwrap();
            let copies = super::super::read_copies(vol.dev()).unwrap();
            let mut out = String::new();
            let r = show(&mut out, &vol, &copies, Some(usize::MAX));
            (out, r)
        };
        let (out, r) = listing(img.clone());
        assert!(r.is_ok(), "{r:?}: {out}");
        assert!(
            out.contains("\n  DATA master ") && out.contains(" inodes 2\n"),
            "{out}"
        );
        img[ind as usize + 3] ^= 0xFF;
        let (out, r) = listing(img);
        // The damaged PFS says why it has no count; the other PFS and the tree still show.
        assert!(out.contains(" inodes ? ("), "{out}");
        assert!(
            out.contains("\n  B slave ") && out.contains(" inodes 0\n"),
            "{out}"
        );
        assert!(
            out.contains("blockrefs:\n") && out.contains(" 1 failed their check"),
            "{out}"
        );
        assert!(matches!(r, Err(ShowError::Read(_))), "{r:?}");
    }

    /// The sample volume and the header copies it was opened from.
    fn sample_with_copies() -> (
        Volume<super::super::testdev::MemDev>,
        [HeaderCopy; NUM_VOLHDRS],
    ) {
        let (img, _) = super::super::testdev::sample();
        let vol = super::super::testdev::open(img).unwrap();
        let copies = super::super::read_copies(vol.dev()).unwrap();
        (vol, copies)
    }

    #[test]
    fn the_volume_shows_its_header_copies_and_pfses() {
        let (vol, copies) = sample_with_copies();
        let mut out = String::new();
        show_volume(&mut out, &vol, &copies).unwrap();
        assert!(
            out.contains("  0 at 0x0: mirror_tid 0x11, CRC ok, in use\n"),
            "{out}"
        );
        assert!(
            out.contains("  1 at 0x80000000: not inside the device\n"),
            "{out}"
        );
        assert!(
            out.contains("\n  DATA master clid ") && out.ends_with(" inodes 3\n"),
            "{out}"
        );
        let mut small = Small {
            room: out.len() - 5,
            text: String::new(),
        };
        assert_eq!(
            show_volume(&mut small, &vol, &copies),
            Err(ShowError::Output)
        );
        assert!(out.starts_with(&small.text));
    }

    #[test]
    fn show_args_parse_as_the_cli_documents_them() {
        let p = |a: &'static str| ShowArgs::parse(a.split_ascii_whitespace());
        let ok = |image, blockrefs| Ok(ShowArgs { image, blockrefs });
        assert_eq!(p("x.img"), ok("x.img", None));
        assert_eq!(p("--blockrefs x.img"), ok("x.img", Some(usize::MAX)));
        assert_eq!(p("x.img --blockrefs --depth 2"), ok("x.img", Some(2)));
        assert_eq!(p(""), Err(ShowUsage::NoImage));
        assert_eq!(p("--depth 2 x"), Err(ShowUsage::DepthWithoutBlockrefs));
        assert_eq!(p("--blockrefs x --depth"), Err(ShowUsage::DepthMissing));
        assert_eq!(
            p("--blockrefs --depth -1 x"),
            Err(ShowUsage::DepthNotNumber("-1"))
        );
        assert_eq!(p("-v x"), Err(ShowUsage::UnknownOption("-v")));
        assert_eq!(p("x y"), Err(ShowUsage::Unexpected("y")));
        assert_eq!(
            ShowUsage::DepthNotNumber("z").to_string(),
            "--depth: 'z' is not a number"
        );
    }

    #[test]
    fn show_with_blockrefs_ends_with_their_counts() {
        let (vol, copies) = sample_with_copies();
        let mut head = String::new();
        assert_eq!(show(&mut head, &vol, &copies, None), Ok(None));
        let mut out = String::new();
        let c = show(&mut out, &vol, &copies, Some(1)).unwrap().unwrap();
        assert!(c.tree.shown > 0 && c.tree.cut > 0, "{c:?}");
        let rest = out.strip_prefix(head.as_str()).expect("the volume first");
        assert!(rest.starts_with("blockrefs:\n"), "{out}");
        // The sample has no freemap: its heading, then nothing under it.
        assert!(
            rest.ends_with(&alloc::format!(
                "\nfreemap:\n{} blockrefs, 0 freemap blockrefs, 0 failed their check, {} tables \
                 below --depth not shown; 0 KiB allocated, 0 KiB staged in the freemap leaves \
                 shown\n",
                c.tree.shown,
                c.tree.cut
            )),
            "{out}"
        );
    }

    /// `show --blockrefs` of `vol` into a string, with what it returned.
    fn show_all<D: BlockDev>(
        vol: &Volume<D>,
        depth: usize,
    ) -> (String, Result<Option<ShowCounts>, ShowError>) {
        let copies = super::super::read_copies(vol.dev()).unwrap();
        let mut out = String::new();
        let r = show(&mut out, vol, &copies, Some(depth));
        (out, r)
    }

    /// The lines of `out` under its `freemap:` heading, closing line excluded.
    fn freemap_lines(out: &str) -> Vec<&str> {
        let (_, rest) = out.split_once("\nfreemap:\n").expect("a freemap heading");
        let mut lines: Vec<&str> = rest.lines().collect();
        lines.pop();
        lines
    }

    #[test]
    fn the_freemap_follows_the_tree_each_leaf_summed() {
        use super::super::testdev::{add_freemap, edit_header, LEAF_AT};
        let (mut img, _) = super::super::testdev::sample();
        // The sample's leaf: every entry allocated but entry 1. There, granule 0 staged and
        // granule 1 allocated, class data/16; entries 2 and 3 of class inode/16.
        add_freemap(&mut img, &|leaf| {
            leaf[128 + 0x40] = 0b1110;
            leaf[128 + 4..128 + 6].copy_from_slice(&0x0310u16.to_le_bytes());
            leaf[256 + 4..256 + 6].copy_from_slice(&0x0110u16.to_le_bytes());
            leaf[384 + 4..384 + 6].copy_from_slice(&0x0110u16.to_le_bytes());
        });
        // A second slot that is no freemap blockref.
        edit_header(&mut img, &|h| {
            let mut b = Blockref::new(BREF_TYPE_INDIRECT, 1 << 30, 30);
            b.data_off = 0x20000 | 15;
            h.freemap_blockset[1] = b.encode();
        });
        let vol = super::super::testdev::open(img.clone()).unwrap();
        let (out, r) = show_all(&vol, usize::MAX);
        let c = r.unwrap().unwrap();
        let leaf = alloc::format!(
            "freemap_leaf key 0x0000000000000000/30 data_off {:#018x} mirror_tid 0x0 \
             modify_tid 0x0 check ok rotation 0: allocated {} KiB, free {} KiB, staged 16 KiB, \
             illegal 0 KiB; classes data/16 inode/16",
            LEAF_AT | 15,
            (255 * 256 + 1) * 16,
            254 * 16
        );
        assert_eq!(
            freemap_lines(&out),
            [
                leaf.as_str(),
                "freemap blockref check FAILED: invalid field `freemap blockref` (at \
                 0x2000f)"
            ],
            "{out}"
        );
        assert_eq!(c.tree.shown, 13);
        assert_eq!((c.freemap.blocks.shown, c.freemap.blocks.bad), (2, 1));
        assert_eq!(c.bad(), 1);
        assert!(
            out.ends_with(&alloc::format!(
                "\n13 blockrefs, 2 freemap blockrefs, 1 failed their check, 0 tables below \
                 --depth not shown; {} KiB allocated, 16 KiB staged in the freemap leaves shown\n",
                (255 * 256 + 1) * 16
            )),
            "{out}"
        );

        // A flipped byte in the leaf: its CRC fails, nothing of its bitmaps is counted.
        img[LEAF_AT as usize + 1000] ^= 1;
        let vol = super::super::testdev::open(img).unwrap();
        let (out, r) = show_all(&vol, usize::MAX);
        let c = r.unwrap().unwrap();
        let lines = freemap_lines(&out);
        assert!(
            lines[0].starts_with("freemap_leaf key 0x0000000000000000/30 ")
                && lines[0].ends_with(" check FAILED: check code mismatch (at 0x1000f)"),
            "{out}"
        );
        assert_eq!((c.freemap.allocated, c.bad()), (0, 2));
    }

    /// Import `/f`, `len` bytes in 64 KiB blocks, into PFS `DATA` of the volume on `dev`.
    fn import_f(dev: &super::super::testdev::SparseDev, len: usize) {
        use super::super::{DirEntries, Import};
        use crate::media::{InodeMeta, DATA_BLOCK_BYTES};
        let vol = Volume::open(dev).unwrap();
        let mut imp = Import::begin(&vol, b"DATA").unwrap();
        let inum = imp.new_inum().unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut table = Vec::new();
        for (k, chunk) in bytes.chunks(DATA_BLOCK_BYTES).enumerate() {
            imp.data(&mut table, (k * DATA_BLOCK_BYTES) as u64, chunk)
                .unwrap();
        }
        let mut m = InodeMeta::new(OBJTYPE_REGFILE, inum, 0o644);
        m.size = len as u64;
        imp.file(m, None, &table).unwrap();
        let mut root = DirEntries::new();
        imp.entry(&mut root, b"f", inum, OBJTYPE_REGFILE).unwrap();
        imp.commit(&InodeMeta::new(OBJTYPE_DIRECTORY, 1, 0o755), &root)
            .unwrap();
    }

    use super::super::testdev::data_volume;

    #[test]
    fn a_volume_made_by_newfs_and_import_shows_its_freemap_leaf() {
        use crate::media::freemap::Granule;
        let dev = data_volume(64 << 20);
        // newfs writes no freemap.
        let (out, _) = show_all(&Volume::open(&dev).unwrap(), usize::MAX);
        assert_eq!(freemap_lines(&out), [] as [&str; 0], "{out}");
        for (round, at) in [(0, 0x1000f), (1, 0x6000f)] {
            import_f(&dev, 200_000 + round);
            let vol = Volume::open(&dev).unwrap();
            // The granules allocated, counted one by one.
            let mut allocated = 0;
            vol.walk_freemap(&mut |v| {
                if let FreemapVisit::Leaf(_, bmaps) = v {
                    for m in bmaps {
                        allocated += (0..GRANULES)
                            .filter(|&g| m.granule(g) == Granule::Allocated)
                            .count() as u64;
                    }
                }
                Ok(Flow::Continue)
            })
            .unwrap();
            let (out, r) = show_all(&vol, usize::MAX);
            let c = r.unwrap().unwrap();
            let lines = freemap_lines(&out);
            assert_eq!(lines.len(), 1, "{out}");
            // The leaf moves one rotation set a commit.
            let head =
                alloc::format!("freemap_leaf key 0x0000000000000000/30 data_off {at:#018x} ");
            assert!(lines[0].starts_with(&head), "{out}");
            let tail = alloc::format!(
                " check ok rotation {round}: allocated {} KiB, free {} KiB, staged 0 KiB, \
                 illegal 0 KiB; classes data/16",
                allocated * 16,
                (65536 - allocated) * 16
            );
            assert!(lines[0].ends_with(&tail), "{out}");
            assert_eq!(c.freemap.allocated, allocated);
            assert!(c.tree.shown > 4 && c.bad() == 0, "{c:?}");
        }
    }

    #[test]
    fn leaves_under_a_node_are_indented_cut_at_a_depth_and_checked_one_by_one() {
        let dev = data_volume(6 << 30);
        let vol = Volume::open(&dev).unwrap();
        let mut txn = super::super::Txn::begin(&vol).unwrap();
        // Space marked in five GiBs: five leaves, one node above them.
        for k in 0..5u64 {
            txn.keep.mark((k << 30) + (400 << 20), 1).unwrap();
        }
        txn.commit(*vol.header().sroot()).unwrap();
        let vol = Volume::open(&dev).unwrap();
        let (out, r) = show_all(&vol, usize::MAX);
        let c = r.unwrap().unwrap();
        let lines = freemap_lines(&out);
        assert_eq!(lines.len(), 6, "{out}");
        assert!(
            lines[0].starts_with("freemap_node key 0x0000000000000000/38 ")
                && lines[0].ends_with(" check ok rotation 0"),
            "{out}"
        );
        for (k, l) in lines[1..].iter().enumerate() {
            let head = alloc::format!("  freemap_leaf key {:#018x}/30 ", (k as u64) << 30);
            assert!(l.starts_with(&head) && l.contains(" check ok "), "{out}");
        }
        assert_eq!(
            c.freemap.blocks,
            TreeCounts {
                shown: 6,
                bad: 0,
                cut: 0
            }
        );

        // Depth 0: the node, not its table; the tree above is cut at the same depth.
        let (top, r) = show_all(&vol, 0);
        let c = r.unwrap().unwrap();
        assert_eq!(freemap_lines(&top), lines[..1], "{top}");
        assert_eq!((c.freemap.blocks.cut, c.tree.cut), (1, 1), "{top}");
        assert!(top.contains(" 2 tables below --depth not shown; 0 KiB allocated"));

        // Leaf 2 damaged: it fails, the leaves after it are still shown.
        let mut leaf2 = 0;
        vol.walk_freemap(&mut |v| {
            if let FreemapVisit::Leaf(b, _) = v {
                if b.key == 2 << 30 {
                    leaf2 = b.data_off & !0x3F;
                }
            }
            Ok(Flow::Continue)
        })
        .unwrap();
        dev.flip(leaf2 + 4000);
        let vol = Volume::open(&dev).unwrap();
        let (bad, r) = show_all(&vol, usize::MAX);
        let c = r.unwrap().unwrap();
        let bad_lines = freemap_lines(&bad);
        assert_eq!(bad_lines.len(), 6, "{bad}");
        for (i, (l, good)) in bad_lines.iter().zip(&lines).enumerate() {
            if i == 3 {
                assert!(
                    l.starts_with("  freemap_leaf key 0x0000000080000000/30 ")
                        && l.contains(" check FAILED: check code mismatch"),
                    "{bad}"
                );
            } else {
                assert_eq!(l, good);
            }
        }
        assert_eq!(
            c.freemap.blocks,
            TreeCounts {
                shown: 6,
                bad: 1,
                cut: 0
            }
        );
        assert!(bad.contains(" 1 failed their check"), "{bad}");
    }

    #[test]
    fn freemap_blocks_shared_between_nodes_cut_the_output() {
        use super::super::testdev::{add_freemap, edit_header};
        use crate::media::freemap::{decode_bref, NODE_KEYBITS};
        use crate::media::{enc_methods, VolumeHeader, CHECK_FREEMAP, COMP_NONE};
        let (mut img, _) = super::super::testdev::sample();
        add_freemap(&mut img, &|_| ());
        let h = VolumeHeader::decode(&img[..crate::media::volhdr::VOLUME_BYTES]).unwrap();
        let leaf = decode_bref(&h.freemap_blockset[0]).unwrap();
        // Two nodes of 256 leaves each, every leaf the same block: 514 blockrefs, where an
        // 8 MiB volume holds 260 freemap blocks.
        let mut nodes = [Blockref::default(); 2];
        for (n, node) in nodes.iter_mut().enumerate() {
            let base = (n as u64) << NODE_KEYBITS[0];
            let mut table = Vec::new();
            for k in 0..256u64 {
                let mut b = leaf;
                b.key = base + (k << LEAF_KEYBITS);
                table.extend_from_slice(&b.encode());
            }
            let at = 0x20000 + n * 0x50000;
            img[at..at + FREEMAP_BLOCK_BYTES].copy_from_slice(&table);
            *node = Blockref::new(BREF_TYPE_FREEMAP_NODE, base, NODE_KEYBITS[0]);
            node.methods = enc_methods(CHECK_FREEMAP, COMP_NONE);
            node.data_off = at as u64 | 15;
            node.check[..4].copy_from_slice(&crate::media::check::crc32c(&table).to_le_bytes());
        }
        edit_header(&mut img, &|h| {
            h.freemap_blockset[0] = nodes[0].encode();
            h.freemap_blockset[1] = nodes[1].encode();
        });
        let vol = super::super::testdev::open(img).unwrap();
        let (out, r) = show_all(&vol, usize::MAX);
        assert!(
            matches!(r, Err(ShowError::Read(e)) if e.cause == Cause::TooBig),
            "{r:?}"
        );
        let cap = freemap_cap(8 << 20);
        assert_eq!(cap, 260);
        let (_, rest) = out.split_once("\nfreemap:\n").unwrap();
        assert_eq!(rest.lines().count() as u64, cap + 1);
        assert!(
            rest.lines().last().unwrap().starts_with(
                "output cut at 260 freemap blockrefs: more than a volume of 8388608 bytes holds"
            ),
            "{out}"
        );
    }
}
