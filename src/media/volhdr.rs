//! The volume header (`hammer2_volume_data_t`, 64 KiB): the fields `newfs_hammer2` and the
//! kernel's flush write, its three CRC-32C sections, and the choice among the copies at
//! 0, 2, 4 and 6 GiB.

use super::bref::Blockref;
use super::check::crc32c;
use super::consts::{BREF_BYTES, BREF_TYPE_INODE, SET_COUNT};
use super::error::{HeaderSect, MediaError};
use super::le::{get, put};

/// Bytes of one volume header (`HAMMER2_VOLUME_BYTES`).
pub const VOLUME_BYTES: usize = 65536;
/// The magic as a little-endian host reads it (`HAMMER2_VOLUME_ID_HBO`).
pub const VOLUME_ID_HBO: u64 = 0x4841_4d32_0517_2011;
/// The magic of a header written in the other byte order (`HAMMER2_VOLUME_ID_ABO`).
pub const VOLUME_ID_ABO: u64 = 0x1120_1705_324d_4148;
/// Header copies live at the start of each 2 GiB zone (`HAMMER2_ZONE_BYTES64`).
pub const ZONE_BYTES: u64 = 2 << 30;
/// Number of header copies (`HAMMER2_NUM_VOLHDRS`).
pub const NUM_VOLHDRS: usize = 4;
/// Lowest volume version the kernel accepts (`HAMMER2_VOL_VERSION_MIN`).
pub const VOL_VERSION_MIN: u32 = 1;
/// Highest volume version the kernel accepts (`HAMMER2_VOL_VERSION_WIP`).
pub const VOL_VERSION_WIP: u32 = 3;
/// Volume sizes are multiples of 8 MiB (`HAMMER2_VOLUME_ALIGN`).
pub const VOLUME_ALIGN: u64 = 8 << 20;
/// Most volumes in one filesystem (`HAMMER2_MAX_VOLUMES`).
pub const MAX_VOLUMES: usize = 64;
/// The HAMMER2 filesystem type uuid 5cbb9ad1-862d-11dc-a94d-01301bb8a9f5, as stored (DCE
/// mixed-endian: the first three fields little-endian).
pub const FSTYPE_UUID: [u8; 16] = [
    0xd1, 0x9a, 0xbb, 0x5c, 0x2d, 0x86, 0xdc, 0x11, 0xa9, 0x4d, 0x01, 0x30, 0x1b, 0xb8, 0xa9, 0xf5,
];

/// Byte offsets of the fields (`hammer2_disk.h`, HAMMER2-MEDIA §3).
mod off {
    pub const MAGIC: usize = 0x000;
    pub const BOOT_BEG: usize = 0x008;
    pub const BOOT_END: usize = 0x010;
    pub const AUX_BEG: usize = 0x018;
    pub const AUX_END: usize = 0x020;
    pub const VOLU_SIZE: usize = 0x028;
    pub const VERSION: usize = 0x030;
    pub const FLAGS: usize = 0x034;
    pub const COPYID: usize = 0x038;
    pub const FREEMAP_VERSION: usize = 0x039;
    pub const PEER_TYPE: usize = 0x03A;
    pub const VOLU_ID: usize = 0x03B;
    pub const NVOLUMES: usize = 0x03C;
    pub const FSID: usize = 0x040;
    pub const FSTYPE: usize = 0x050;
    pub const ALLOCATOR_SIZE: usize = 0x060;
    pub const ALLOCATOR_FREE: usize = 0x068;
    pub const ALLOCATOR_BEG: usize = 0x070;
    pub const MIRROR_TID: usize = 0x078;
    pub const FREEMAP_TID: usize = 0x090;
    pub const BULKFREE_TID: usize = 0x098;
    pub const TOTAL_SIZE: usize = 0x0C0;
    pub const COPYEXISTS: usize = 0x0C8;
    pub const ICRC_SECT6: usize = 0x1F8;
    pub const ICRC_SECT7: usize = 0x1FC;
    pub const SROOT_BLOCKSET: usize = 0x200;
    pub const FREEMAP_BLOCKSET: usize = 0x800;
    pub const VOLU_LOFF: usize = 0xE00;
    pub const ICRC_VOLHEADER: usize = 0xFFFC;
}

/// The CRC-covered ranges: section 0 (`icrc_sects[7]`), section 1 (`icrc_sects[6]`), whole.
const SECT0: core::ops::Range<usize> = 0x000..0x1FC;
const SECT1: core::ops::Range<usize> = 0x200..0x400;
const WHOLE: core::ops::Range<usize> = 0x0000..0xFFFC;

/// The fields of a volume header this port reads and writes. Reserved areas and
/// `copyinfo[]` are not kept: [`VolumeHeader::encode_into`] writes them as zeros, as newfs does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeHeader {
    /// Boot area start (root volume only).
    pub boot_beg: u64,
    /// Boot area end.
    pub boot_end: u64,
    /// Aux area start.
    pub aux_beg: u64,
    /// Aux area end.
    pub aux_end: u64,
    /// This volume's size in bytes.
    pub volu_size: u64,
    /// Format version, [`VOL_VERSION_MIN`]..=[`VOL_VERSION_WIP`].
    pub version: u32,
    /// Flags (0).
    pub flags: u32,
    /// Copy id (0).
    pub copyid: u8,
    /// Freemap version (0).
    pub freemap_version: u8,
    /// Peer type (newfs writes 3, `DMSG_PEER_HAMMER2`).
    pub peer_type: u8,
    /// Index of this volume (v2+).
    pub volu_id: u8,
    /// Volumes in the filesystem (v2+; 0 in v1).
    pub nvolumes: u8,
    /// The filesystem's uuid.
    pub fsid: [u8; 16],
    /// The filesystem type uuid, [`FSTYPE_UUID`].
    pub fstype: [u8; 16],
    /// Bytes the allocator manages.
    pub allocator_size: u64,
    /// Free bytes.
    pub allocator_free: u64,
    /// Start of freemap-managed space.
    pub allocator_beg: u64,
    /// Highest committed flush transaction.
    pub mirror_tid: u64,
    /// Transaction of the last committed freemap flush.
    pub freemap_tid: u64,
    /// Transaction of the last bulkfree.
    pub bulkfree_tid: u64,
    /// Sum of the volumes' sizes (v2+; 0 in v1).
    pub total_size: u64,
    /// `copyexists[8]` (unused, 0).
    pub copyexists: [u32; 8],
    /// The super-root blockset: entry 0 is the super-root inode.
    pub sroot_blockset: [Blockref; SET_COUNT],
    /// The freemap roots, raw: their check method (FREEMAP) is not one a reader verifies.
    pub freemap_blockset: [[u8; BREF_BYTES]; SET_COUNT],
    /// Logical byte offset of each volume (v2+; unused entries all ones; all 0 in v1).
    pub volu_loff: [u64; MAX_VOLUMES],
}

impl VolumeHeader {
    /// Decode one 64 KiB header copy. Rejected, each with its [`MediaError`]: a wrong length,
    /// a magic that is not [`VOLUME_ID_HBO`] (or the byte-swapped one), any of the three
    /// CRCs wrong (checked in the order HAMMER2 computes them: section 1, section 0, whole),
    /// an undecodable super-root blockref, and everything [`VolumeHeader::validate`] refuses.
    pub fn decode(buf: &[u8]) -> Result<VolumeHeader, MediaError> {
        if buf.len() != VOLUME_BYTES {
            return Err(MediaError::Length);
        }
        match u64::from_le_bytes(get(buf, off::MAGIC)) {
            VOLUME_ID_HBO => {}
            VOLUME_ID_ABO => return Err(MediaError::SwappedMagic),
            _ => return Err(MediaError::BadMagic),
        }
        for (sect, range, at) in crc_sections() {
            let stored = u32::from_le_bytes(get(buf, at));
            if buf.get(range).map(crc32c) != Some(stored) {
                return Err(MediaError::HeaderCrc(sect));
            }
        }
        let u64_at = |o: usize| u64::from_le_bytes(get(buf, o));
        let byte = |o: usize| get::<1>(buf, o)[0];
        let mut sroot_blockset = [Blockref::default(); SET_COUNT];
        for (i, slot) in sroot_blockset.iter_mut().enumerate() {
            let at = off::SROOT_BLOCKSET + i * BREF_BYTES;
            let raw: [u8; BREF_BYTES] = get(buf, at);
            *slot = Blockref::decode(&raw).map_err(|_| MediaError::Field("sroot_blockset"))?;
        }
        let h = VolumeHeader {
            boot_beg: u64_at(off::BOOT_BEG),
            boot_end: u64_at(off::BOOT_END),
            aux_beg: u64_at(off::AUX_BEG),
            aux_end: u64_at(off::AUX_END),
            volu_size: u64_at(off::VOLU_SIZE),
            version: u32::from_le_bytes(get(buf, off::VERSION)),
            flags: u32::from_le_bytes(get(buf, off::FLAGS)),
            copyid: byte(off::COPYID),
            freemap_version: byte(off::FREEMAP_VERSION),
            peer_type: byte(off::PEER_TYPE),
            volu_id: byte(off::VOLU_ID),
            nvolumes: byte(off::NVOLUMES),
            fsid: get(buf, off::FSID),
            fstype: get(buf, off::FSTYPE),
            allocator_size: u64_at(off::ALLOCATOR_SIZE),
            allocator_free: u64_at(off::ALLOCATOR_FREE),
            allocator_beg: u64_at(off::ALLOCATOR_BEG),
            mirror_tid: u64_at(off::MIRROR_TID),
            freemap_tid: u64_at(off::FREEMAP_TID),
            bulkfree_tid: u64_at(off::BULKFREE_TID),
            total_size: u64_at(off::TOTAL_SIZE),
            copyexists: core::array::from_fn(|i| {
                u32::from_le_bytes(get(buf, off::COPYEXISTS + 4 * i))
            }),
            sroot_blockset,
            freemap_blockset: core::array::from_fn(|i| {
                get(buf, off::FREEMAP_BLOCKSET + i * BREF_BYTES)
            }),
            volu_loff: core::array::from_fn(|i| u64_at(off::VOLU_LOFF + 8 * i)),
        };
        h.validate()?;
        Ok(h)
    }

    /// The semantic rules of `hammer2_verify_volumes` for a single-device filesystem, plus
    /// what a reader needs from the super-root blockset:
    /// - `version` in [`VOL_VERSION_MIN`]..=[`VOL_VERSION_WIP`]; `fstype` is [`FSTYPE_UUID`];
    /// - `volu_size` non-zero and a multiple of [`VOLUME_ALIGN`];
    /// - version 1: `volu_id`, `nvolumes`, `total_size` and every `volu_loff` zero;
    ///   version 2+: `nvolumes` 1..=64, `volu_id` below it, `total_size >= volu_size`,
    ///   `volu_loff[volu_id]` set and the unused entries all ones;
    /// - `sroot_blockset[0]` an INODE blockref at key 0 with data.
    pub fn validate(&self) -> Result<(), MediaError> {
        let bad = |f| Err(MediaError::Field(f));
        if !(VOL_VERSION_MIN..=VOL_VERSION_WIP).contains(&self.version) {
            return bad("version");
        }
        if self.fstype != FSTYPE_UUID {
            return bad("fstype");
        }
        if self.volu_size == 0 || self.volu_size % VOLUME_ALIGN != 0 {
            return bad("volu_size");
        }
        if self.version == 1 {
            if self.volu_id != 0 {
                return bad("volu_id");
            }
            if self.nvolumes != 0 {
                return bad("nvolumes");
            }
            if self.total_size != 0 {
                return bad("total_size");
            }
            if self.volu_loff.iter().any(|&o| o != 0) {
                return bad("volu_loff");
            }
        } else {
            let n = usize::from(self.nvolumes);
            if n == 0 || n > MAX_VOLUMES {
                return bad("nvolumes");
            }
            if self.volu_id >= self.nvolumes {
                return bad("volu_id");
            }
            if self.total_size < self.volu_size {
                return bad("total_size");
            }
            let (used, unused) = self.volu_loff.split_at(n);
            if used.contains(&u64::MAX) || unused.iter().any(|&o| o != u64::MAX) {
                return bad("volu_loff");
            }
        }
        let sroot = &self.sroot_blockset[0];
        if sroot.btype != BREF_TYPE_INODE || sroot.key != 0 || sroot.size_radix() == 0 {
            return bad("sroot_blockset");
        }
        Ok(())
    }

    /// Bytes of the logical filesystem: `volu_size` in version 1, `total_size` after.
    pub fn fs_size(&self) -> u64 {
        if self.version == 1 {
            self.volu_size
        } else {
            self.total_size
        }
    }

    /// The super-root's blockref (`sroot_blockset[0]`).
    pub fn sroot(&self) -> &Blockref {
        &self.sroot_blockset[0]
    }

    /// Write the header into a 64 KiB buffer (everything not a field zeroed) with its three
    /// CRCs computed as the kernel's flush does. [`MediaError::Length`] for another size.
    pub fn encode_into(&self, buf: &mut [u8]) -> Result<(), MediaError> {
        if buf.len() != VOLUME_BYTES {
            return Err(MediaError::Length);
        }
        buf.fill(0);
        let mut w64 = |o: usize, v: u64| put(buf, o, &v.to_le_bytes());
        w64(off::MAGIC, VOLUME_ID_HBO);
        w64(off::BOOT_BEG, self.boot_beg);
        w64(off::BOOT_END, self.boot_end);
        w64(off::AUX_BEG, self.aux_beg);
        w64(off::AUX_END, self.aux_end);
        w64(off::VOLU_SIZE, self.volu_size);
        w64(off::ALLOCATOR_SIZE, self.allocator_size);
        w64(off::ALLOCATOR_FREE, self.allocator_free);
        w64(off::ALLOCATOR_BEG, self.allocator_beg);
        w64(off::MIRROR_TID, self.mirror_tid);
        w64(off::FREEMAP_TID, self.freemap_tid);
        w64(off::BULKFREE_TID, self.bulkfree_tid);
        w64(off::TOTAL_SIZE, self.total_size);
        for (i, v) in self.volu_loff.iter().enumerate() {
            w64(off::VOLU_LOFF + 8 * i, *v);
        }
        put(buf, off::VERSION, &self.version.to_le_bytes());
        put(buf, off::FLAGS, &self.flags.to_le_bytes());
        put(buf, off::COPYID, &[self.copyid]);
        put(buf, off::FREEMAP_VERSION, &[self.freemap_version]);
        put(buf, off::PEER_TYPE, &[self.peer_type]);
        put(buf, off::VOLU_ID, &[self.volu_id]);
        put(buf, off::NVOLUMES, &[self.nvolumes]);
        put(buf, off::FSID, &self.fsid);
        put(buf, off::FSTYPE, &self.fstype);
        for (i, v) in self.copyexists.iter().enumerate() {
            put(buf, off::COPYEXISTS + 4 * i, &v.to_le_bytes());
        }
        for (i, b) in self.sroot_blockset.iter().enumerate() {
            put(buf, off::SROOT_BLOCKSET + i * BREF_BYTES, &b.encode());
        }
        for (i, raw) in self.freemap_blockset.iter().enumerate() {
            put(buf, off::FREEMAP_BLOCKSET + i * BREF_BYTES, raw);
        }
        seal(buf)
    }

    /// A header as `newfs_hammer2` writes one for a single volume of `volu_size` bytes
    /// (version 2, one volume) around `sroot`; the caller fills in the allocator fields.
    pub fn new_single(volu_size: u64, fsid: [u8; 16], sroot: Blockref, mirror_tid: u64) -> Self {
        let mut volu_loff = [u64::MAX; MAX_VOLUMES];
        volu_loff[0] = 0;
        let mut sroot_blockset = [Blockref::default(); SET_COUNT];
        sroot_blockset[0] = sroot;
        VolumeHeader {
            boot_beg: 0,
            boot_end: 0,
            aux_beg: 0,
            aux_end: 0,
            volu_size,
            version: 2,
            flags: 0,
            copyid: 0,
            freemap_version: 0,
            peer_type: 3,
            volu_id: 0,
            nvolumes: 1,
            fsid,
            fstype: FSTYPE_UUID,
            allocator_size: 0,
            allocator_free: 0,
            allocator_beg: 0,
            mirror_tid,
            freemap_tid: mirror_tid,
            bulkfree_tid: 0,
            total_size: volu_size,
            copyexists: [0; 8],
            sroot_blockset,
            freemap_blockset: [[0; BREF_BYTES]; SET_COUNT],
            volu_loff,
        }
    }
}

/// Compute and store the three CRCs of a raw 64 KiB header, in the order HAMMER2's flush does
/// (section 1 first: section 0 covers the slot holding its CRC).
/// [`MediaError::Length`] for another size.
pub fn seal(buf: &mut [u8]) -> Result<(), MediaError> {
    if buf.len() != VOLUME_BYTES {
        return Err(MediaError::Length);
    }
    for (_, range, at) in crc_sections() {
        let crc = buf.get(range).map(crc32c).unwrap_or(0);
        put(buf, at, &crc.to_le_bytes());
    }
    Ok(())
}

/// The CRC sections in the order HAMMER2 computes them: (which, covered bytes, CRC offset).
fn crc_sections() -> [(HeaderSect, core::ops::Range<usize>, usize); 3] {
    [
        (HeaderSect::Sect1, SECT1, off::ICRC_SECT6),
        (HeaderSect::Sect0, SECT0, off::ICRC_SECT7),
        (HeaderSect::Whole, WHOLE, off::ICRC_VOLHEADER),
    ]
}

/// Byte offset of header copy `i` (`i * 2 GiB`).
pub const fn copy_offset(i: usize) -> u64 {
    i as u64 * ZONE_BYTES
}

/// The copy to use among decoded ones, as `hammer2_read_volume_header` picks it: the valid
/// copy with the highest `mirror_tid`, the lowest zone on a tie. `copies[i]` is the outcome
/// of copy `i` (`None`: not inside the device). Returns the zone and the header, or the
/// error of the lowest zone when no copy is valid ([`MediaError::Length`] if none was read).
/// `H` is the header or a box of it.
pub fn select_best<H: core::borrow::Borrow<VolumeHeader>>(
    copies: [Option<Result<H, MediaError>>; NUM_VOLHDRS],
) -> Result<(usize, H), MediaError> {
    let mut best: Option<(usize, H)> = None;
    let mut first_err = None;
    for (zone, c) in copies.into_iter().enumerate() {
        match c {
            Some(Ok(h)) if !matches!(&best, Some((_, b)) if b.borrow().mirror_tid >= h.borrow().mirror_tid) =>
            {
                best = Some((zone, h));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    best.ok_or(first_err.unwrap_or(MediaError::Length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::consts::{enc_methods, CHECK_XXHASH64, COMP_AUTOZERO, INODE_RADIX};
    use alloc::vec;

    fn sample() -> VolumeHeader {
        let mut sroot = Blockref::new(BREF_TYPE_INODE, 0, 0);
        sroot.methods = enc_methods(CHECK_XXHASH64, COMP_AUTOZERO);
        sroot.data_off = 0x880_4000 | u64::from(INODE_RADIX);
        sroot.mirror_tid = 0x11;
        let mut h = VolumeHeader::new_single(2 << 30, [7; 16], sroot, 0x11);
        h.boot_beg = 0x40_0000;
        h.boot_end = 0x440_0000;
        h.aux_beg = 0x440_0000;
        h.aux_end = 0x840_0000;
        h.allocator_size = 0x7780_0000;
        h.allocator_free = 0x777d_c000;
        h.allocator_beg = 0x840_0c00;
        h.freemap_blockset[0][0] = 6;
        h
    }

    fn encoded(h: &VolumeHeader) -> alloc::vec::Vec<u8> {
        let mut buf = vec![0u8; VOLUME_BYTES];
        h.encode_into(&mut buf).unwrap();
        buf
    }

    #[test]
    fn round_trip_and_layout() {
        let h = sample();
        let buf = encoded(&h);
        assert_eq!(buf[..8], [0x11, 0x20, 0x17, 0x05, 0x32, 0x4d, 0x41, 0x48]);
        assert_eq!(buf[0x28..0x30], (2u64 << 30).to_le_bytes());
        assert_eq!(buf[0x3A], 3);
        assert_eq!(buf[0x50..0x60], FSTYPE_UUID);
        assert_eq!(buf[0x200], BREF_TYPE_INODE);
        assert_eq!(buf[0x800], 6);
        assert_eq!(buf[0xE08..0xE10], [0xFF; 8]);
        assert_eq!(
            u32::from_le_bytes(buf[0x1F8..0x1FC].try_into().unwrap()),
            crc32c(&buf[0x200..0x400])
        );
        assert_eq!(
            u32::from_le_bytes(buf[0x1FC..0x200].try_into().unwrap()),
            crc32c(&buf[..0x1FC])
        );
        assert_eq!(
            u32::from_le_bytes(buf[0xFFFC..].try_into().unwrap()),
            crc32c(&buf[..0xFFFC])
        );
        assert_eq!(VolumeHeader::decode(&buf), Ok(h.clone()));
        assert_eq!(h.fs_size(), 2 << 30);
    }

    #[test]
    fn magic_crc_and_length_errors() {
        let buf = encoded(&sample());
        assert_eq!(VolumeHeader::decode(&buf[1..]), Err(MediaError::Length));
        let mut b = buf.clone();
        b[..8].copy_from_slice(&VOLUME_ID_ABO.to_le_bytes());
        assert_eq!(VolumeHeader::decode(&b), Err(MediaError::SwappedMagic));
        b[0] ^= 0xFF;
        assert_eq!(VolumeHeader::decode(&b), Err(MediaError::BadMagic));
        let expect = [
            (0x40, HeaderSect::Sect0),
            (0x1F8, HeaderSect::Sect1),
            (0x210, HeaderSect::Sect1),
            (0x900, HeaderSect::Whole),
            (0xFFFC, HeaderSect::Whole),
        ];
        for (at, sect) in expect {
            let mut b = buf.clone();
            b[at] ^= 1;
            assert_eq!(
                VolumeHeader::decode(&b),
                Err(MediaError::HeaderCrc(sect)),
                "{at:#x}"
            );
        }
    }

    fn field_rejects(name: &'static str, mutate: impl Fn(&mut VolumeHeader)) {
        let mut h = sample();
        mutate(&mut h);
        let mut buf = encoded(&h);
        seal(&mut buf).unwrap();
        assert_eq!(VolumeHeader::decode(&buf), Err(MediaError::Field(name)));
    }

    #[test]
    fn every_field_rule() {
        field_rejects("version", |h| h.version = 0);
        field_rejects("version", |h| h.version = 4);
        field_rejects("fstype", |h| h.fstype[0] ^= 1);
        field_rejects("volu_size", |h| h.volu_size = 0);
        field_rejects("volu_size", |h| h.volu_size += 4096);
        field_rejects("nvolumes", |h| h.nvolumes = 0);
        field_rejects("nvolumes", |h| h.nvolumes = 65);
        field_rejects("volu_id", |h| h.volu_id = 1);
        field_rejects("total_size", |h| h.total_size = 1);
        field_rejects("volu_loff", |h| h.volu_loff[0] = u64::MAX);
        field_rejects("volu_loff", |h| h.volu_loff[5] = 0);
        field_rejects("sroot_blockset", |h| h.sroot_blockset[0].key = 1);
        field_rejects("sroot_blockset", |h| h.sroot_blockset[0].data_off = 0);
        field_rejects("sroot_blockset", |h| {
            h.sroot_blockset[0] = Blockref::default()
        });
        // Version 1 wants every multi-volume field zero.
        let v1 = |h: &mut VolumeHeader| {
            h.version = 1;
            h.nvolumes = 0;
            h.total_size = 0;
            h.volu_loff = [0; MAX_VOLUMES];
        };
        let mut h = sample();
        v1(&mut h);
        assert_eq!(VolumeHeader::decode(&encoded(&h)), Ok(h.clone()));
        assert_eq!(h.fs_size(), h.volu_size);
        field_rejects("nvolumes", |h| {
            v1(h);
            h.nvolumes = 1;
        });
        field_rejects("total_size", |h| {
            v1(h);
            h.total_size = 1;
        });
        field_rejects("volu_loff", |h| {
            v1(h);
            h.volu_loff[3] = 1;
        });
        field_rejects("volu_id", |h| {
            v1(h);
            h.volu_id = 1;
        });
        // An undecodable blockref in the super-root blockset.
        let mut buf = encoded(&sample());
        buf[0x200 + 128] = 7;
        seal(&mut buf).unwrap();
        assert_eq!(
            VolumeHeader::decode(&buf),
            Err(MediaError::Field("sroot_blockset"))
        );
    }

    #[test]
    fn best_copy_selection() {
        let at = |tid| {
            let mut h = sample();
            h.mirror_tid = tid;
            Some(Ok(h))
        };
        let (zone, h) = select_best([at(5), at(9), at(9), None]).unwrap();
        assert_eq!(
            (zone, h.mirror_tid),
            (1, 9),
            "highest tid, lowest zone on a tie"
        );
        let (zone, _) = select_best([Some(Err(MediaError::BadMagic)), at(1), None, None]).unwrap();
        assert_eq!(zone, 1, "an invalid zone 0 is skipped");
        assert_eq!(
            select_best::<VolumeHeader>([
                None,
                Some(Err(MediaError::HeaderCrc(HeaderSect::Whole))),
                Some(Err(MediaError::BadMagic)),
                None
            ]),
            Err(MediaError::HeaderCrc(HeaderSect::Whole))
        );
        assert_eq!(
            select_best::<VolumeHeader>([None, None, None, None]),
            Err(MediaError::Length)
        );
        assert_eq!(copy_offset(3), 6 << 30);
    }
}
