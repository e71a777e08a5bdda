//! Create a volume as `newfs_hammer2` does today (HAMMER2-MEDIA §2, §13): the reserved
//! first 4 MiB, boot and aux areas zeroed, the super-root and one PFS root inode per label
//! in one 64 KiB block right after the aux area, `allocator_beg` just past them, no freemap
//! (a leaf is made by the first commit that allocates), and the version 2 single-volume
//! header with its CRCs in every header slot inside the volume, `mirror_tid` 16.

use alloc::vec::Vec;

use super::block::zeroed;
use super::space::{LEAF_SPAN, RESERVED_SEG};
use super::txn::read_err;
use super::BlockDev;
use crate::media::volhdr::{copy_offset, NUM_VOLHDRS, VOLUME_ALIGN, VOLUME_BYTES};
use crate::media::{
    dirhash, enc_methods, Blockref, InodeData, InodeMeta, VolumeHeader, BREF_TYPE_INODE,
    CHECK_XXHASH64, COMP_AUTOZERO, COMP_LZ4, COMP_NONE, INODE_BYTES, INODE_RADIX,
    OBJTYPE_DIRECTORY, PFSTYPE_SUPROOT, SET_COUNT,
};
use crate::media::{BrefFlags, OpFlags};
use crate::{Error, Result};

/// `mirror_tid` of everything newfs writes.
pub const NEWFS_TID: u64 = 16;
/// `pfs_inum` newfs gives a PFS root (the kernel raises the next inum to 1024 on mount).
const NEWFS_PFS_INUM: u64 = 16;
/// Copy id newfs writes in the super-root and PFS root blockrefs (`HAMMER2_COPYID_LOCAL`).
const COPYID_LOCAL: u8 = 255;
/// Boot and aux area bounds (`HAMMER2_BOOT_*_BYTES`, `HAMMER2_AUX_*_BYTES`).
const BOOT_NOM: u64 = 64 << 20;
const AUX_NOM: u64 = 256 << 20;
const AREA_MIN: u64 = 8 << 20;
/// The smallest volume created: the reserved segment, boot and aux areas, and room for
/// at least one 4 MiB freemap entry of data.
pub const NEWFS_MIN_BYTES: u64 = 32 << 20;

/// One PFS to create.
#[derive(Debug, Clone)]
pub struct NewPfs<'a> {
    /// The label (1..=255 bytes), which `IMAGE@LABEL` names.
    pub label: &'a [u8],
    /// `PFSTYPE_*` of the PFS (its role in a cluster).
    pub pfs_type: u8,
    /// Cluster id, shared by the PFSs of one cluster on different volumes.
    pub clid: [u8; 16],
    /// This PFS's own id.
    pub fsid: [u8; 16],
    /// Masters of the cluster (0: unknown, as newfs writes).
    pub nmasters: u8,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewfsOptions<'a> {
    /// Bytes of the volume (rounded down to 8 MiB; at most the device's size).
    pub size: u64,
    /// The filesystem's id.
    pub fsid: [u8; 16],
    /// The super-root's cluster id and id.
    pub sroot_ids: ([u8; 16], [u8; 16]),
    /// The PFSs, at most four (the super-root's own block table, as newfs).
    pub pfs: &'a [NewPfs<'a>],
    /// Creation time, microseconds since the epoch.
    pub now_us: u64,
}

/// A boot or aux area size (`adjust_options` of newfs): the nominal size halved while
/// above 1/20 of the volume, at least 8 MiB, rounded up to 8 MiB.
fn area_size(nom: u64, total: u64) -> u64 {
    let mut x = nom;
    while x > total / 20 {
        x >>= 1;
    }
    x.max(AREA_MIN).next_multiple_of(VOLUME_ALIGN)
}

/// Create the volume on `dev`.
///
/// DEVIATION: only the PFSs asked for are made; newfs_hammer2 always adds one labelled
/// "LOCAL". A node of a cluster is one PFS, and the labels are the caller's to choose.
/// `pfs_clid` is the caller's too (one per cluster, where newfs draws one per PFS). [`Error::Invalid`] for no PFS, more than four, an empty,
/// over-long or repeated label, or labels colliding in their hash; [`Error::TooBig`] when
/// the size exceeds the device; [`Error::NoSpace`] below [`NEWFS_MIN_BYTES`].
pub fn newfs<D: BlockDev>(dev: &D, opts: &NewfsOptions<'_>) -> Result<VolumeHeader> {
    let size = opts.size - opts.size % VOLUME_ALIGN;
    if opts.size > dev.size() {
        return Err(Error::TooBig);
    }
    if size < NEWFS_MIN_BYTES {
        return Err(Error::NoSpace);
    }
    let n = opts.pfs.len();
    if n == 0 || n > SET_COUNT {
        return Err(Error::Invalid);
    }
    for (i, p) in opts.pfs.iter().enumerate() {
        let bad = p.label.is_empty()
            || p.label.len() > crate::media::NAME_MAX
            || opts.pfs[..i]
                .iter()
                .any(|q| q.label == p.label || dirhash(q.label) == dirhash(p.label));
        if bad {
            return Err(Error::Invalid);
        }
    }
    let boot = area_size(BOOT_NOM, size);
    let aux = area_size(AUX_NOM, size);
    let reserved = size.div_ceil(LEAF_SPAN) * RESERVED_SEG;
    let allocator_size = size
        .checked_sub(reserved + boot + aux)
        .ok_or(Error::NoSpace)?;
    let boot_beg = RESERVED_SEG;
    let aux_beg = boot_beg + boot;
    let inode_base = aux_beg + aux;
    let allocator_beg = inode_base + (n as u64 + 1) * INODE_BYTES as u64;
    if allocator_beg.next_multiple_of(4 << 20) >= size {
        return Err(Error::NoSpace);
    }

    // Zero the reserved segment, boot and aux areas, and the last 64 KiB.
    let zero = zeroed(VOLUME_BYTES).map_err(read_err)?;
    let mut at = 0;
    while at < inode_base {
        dev.write_at(at, &zero)?;
        dev.yield_point();
        at += VOLUME_BYTES as u64;
    }
    dev.write_at(size - VOLUME_BYTES as u64, &zero)?;

    // The inode block: super-root at +0, PFS roots after it.
    let mut block = zeroed(VOLUME_BYTES).map_err(read_err)?;
    let mut pfs_brefs: Vec<Blockref> = Vec::new();
    pfs_brefs.try_reserve_exact(n)?;
    for (i, p) in opts.pfs.iter().enumerate() {
        let mut m = InodeMeta::new(OBJTYPE_DIRECTORY, 1, 0o755);
        m.ctime = opts.now_us;
        m.mtime = opts.now_us;
        m.btime = opts.now_us;
        m.nlinks = 1;
        m.name_key = dirhash(p.label);
        let boot_label = p.label.eq_ignore_ascii_case(b"BOOT");
        m.comp_algo = if boot_label { COMP_AUTOZERO } else { COMP_LZ4 };
        m.check_algo = CHECK_XXHASH64;
        m.pfs_clid = p.clid;
        m.pfs_fsid = p.fsid;
        m.pfs_type = p.pfs_type;
        m.pfs_nmasters = p.nmasters;
        m.op_flags |= OpFlags::PFSROOT.bits();
        m.pfs_inum = NEWFS_PFS_INUM;
        let ino = InodeData::new(m, p.label)?;
        let off = inode_base + (i as u64 + 1) * INODE_BYTES as u64;
        let mut b = put_inode(&mut block, inode_base, off, &ino)?;
        b.key = dirhash(p.label);
        b.flags = BrefFlags::PFSROOT.bits();
        b.methods = enc_methods(CHECK_XXHASH64, COMP_NONE);
        pfs_brefs.push(b);
    }
    pfs_brefs.sort_unstable_by_key(|b| b.key);
    let mut set = [Blockref::default(); SET_COUNT];
    set[..n].copy_from_slice(&pfs_brefs);
    let mut m = InodeMeta::new(OBJTYPE_DIRECTORY, 0, 0o700);
    m.ctime = opts.now_us;
    m.mtime = opts.now_us;
    m.btime = opts.now_us;
    m.nlinks = 2;
    m.comp_algo = COMP_AUTOZERO;
    m.check_algo = CHECK_XXHASH64;
    m.pfs_clid = opts.sroot_ids.0;
    m.pfs_fsid = opts.sroot_ids.1;
    m.pfs_type = PFSTYPE_SUPROOT;
    let mut sroot_ino = InodeData::new(m, b"SUPROOT")?;
    sroot_ino.set_blockset(&set);
    let mut sroot = put_inode(&mut block, inode_base, inode_base, &sroot_ino)?;
    sroot.methods = enc_methods(CHECK_XXHASH64, COMP_AUTOZERO);
    dev.write_at(inode_base, &block)?;

    let mut h = VolumeHeader::new_single(size, opts.fsid, sroot, NEWFS_TID);
    h.boot_beg = boot_beg;
    h.boot_end = aux_beg;
    h.aux_beg = aux_beg;
    h.aux_end = inode_base;
    h.allocator_size = allocator_size;
    h.allocator_free = allocator_size;
    h.allocator_beg = allocator_beg;
    h.mirror_tid = NEWFS_TID;
    h.freemap_tid = NEWFS_TID;
    h.total_size = size;
    let mut hbuf = zeroed(VOLUME_BYTES).map_err(read_err)?;
    h.encode_into(&mut hbuf)?;
    // The blocks first, then the headers, as a commit orders them: a crash must not
    // leave a header pointing at an inode block that never reached the media.
    dev.flush()?;
    // Header slots of the device past the new volume are zeroed: a copy left there by an
    // earlier filesystem would otherwise win at open (its mirror_tid is likely higher).
    for zone in 0..NUM_VOLHDRS {
        let at = copy_offset(zone);
        if at + VOLUME_BYTES as u64 > dev.size() {
            break;
        }
        let bytes = if at + VOLUME_BYTES as u64 <= size {
            &hbuf
        } else {
            &zero
        };
        dev.write_at(at, bytes)?;
    }
    dev.flush()?;
    Ok(h)
}

/// Put `ino` into the 64 KiB inode `block` (based at `base`) at byte offset `off` and return
/// its blockref as newfs makes them: copy id local, `vradix` 10, `mirror_tid` 16.
fn put_inode(block: &mut [u8], base: u64, off: u64, ino: &InodeData) -> Result<Blockref> {
    let raw = ino.encode();
    let at = usize::try_from(off - base).map_err(|_| Error::Invalid)?;
    block
        .get_mut(at..at + INODE_BYTES)
        .ok_or(Error::Invalid)?
        .copy_from_slice(&raw);
    let mut b = Blockref::new(BREF_TYPE_INODE, 0, 0);
    b.copyid = COPYID_LOCAL;
    b.vradix = INODE_RADIX;
    b.mirror_tid = NEWFS_TID;
    b.data_off = off | u64::from(INODE_RADIX);
    b.set_check(&raw)?;
    Ok(b)
}
