//! The inode: its 256-byte meta section (`hammer2_inode_meta_t`) and the whole 1024-byte
//! inode (`hammer2_inode_data_t`).

use core::mem::{offset_of, size_of};

use super::bref::Blockref;
use super::consts::*;
use super::le::{get, put};
use crate::{Error, Result};

/// An inode's meta section. Plain integers and byte arrays (uuids as `[u8; 16]`), so the
/// `#[repr(C)]` layout has no padding and matches HAMMER2-FACTS §4 (asserted below).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeMeta {
    /// Format version, [`INODE_VERSION_ONE`].
    pub version: u16,
    /// Reserved.
    pub reserved02: u8,
    /// PFS sub-type (PFS roots).
    pub pfs_subtype: u8,
    /// chflags-style user flags.
    pub uflags: u32,
    /// Device major number.
    pub rmajor: u32,
    /// Device minor number.
    pub rminor: u32,
    /// Inode change time.
    pub ctime: u64,
    /// Modification time.
    pub mtime: u64,
    /// Access time.
    pub atime: u64,
    /// Birth time.
    pub btime: u64,
    /// Owner uuid (degenerate unix uid).
    pub uid: [u8; 16],
    /// Group uuid (degenerate unix gid).
    pub gid: [u8; 16],
    /// `OBJTYPE_*` (the C field `type`).
    pub objtype: u8,
    /// [`OpFlags`] bits.
    pub op_flags: u8,
    /// Capability flags.
    pub cap_flags: u16,
    /// Unix mode bits.
    pub mode: u32,
    /// Inode number.
    pub inum: u64,
    /// File size in bytes.
    pub size: u64,
    /// Hard link count.
    pub nlinks: u64,
    /// Nominal parent inode number.
    pub iparent: u64,
    /// The directory-hash key of this inode's name ([`super::dirhash()`]).
    pub name_key: u64,
    /// Length of the name in `filename` (at most [`NAME_MAX`]).
    pub name_len: u16,
    /// Copies to local media.
    pub ncopies: u8,
    /// Compression request: algorithm in the low nibble, level above.
    pub comp_algo: u8,
    /// Target object type of a hardlink pointer inode.
    pub target_type: u8,
    /// Check request: algorithm in the low nibble.
    pub check_algo: u8,
    /// Recorded number of masters (PFS roots), at most [`MAX_CLUSTER`].
    pub pfs_nmasters: u8,
    /// `PFSTYPE_*` of this node (PFS roots).
    pub pfs_type: u8,
    /// Inode number allocator (PFS roots).
    pub pfs_inum: u64,
    /// Cluster uuid (PFS roots).
    pub pfs_clid: [u8; 16],
    /// Unique uuid of this node's PFS (PFS roots).
    pub pfs_fsid: [u8; 16],
    /// Subtree quota in bytes.
    pub data_quota: u64,
    /// Reserved (seed: subtree byte count).
    pub reserved_b8: u64,
    /// Subtree quota in inodes.
    pub inode_quota: u64,
    /// Reserved (seed: subtree inode count).
    pub reserved_c8: u64,
    /// Last snapshot transaction (PFS roots).
    pub pfs_lsnap_tid: u64,
    /// Reserved.
    pub reserved_d8: u64,
    /// Decryption validator.
    pub decrypt_check: u64,
    /// Reserved.
    pub reserved_e8: [u64; 3],
}

const _: () = {
    assert!(size_of::<InodeMeta>() == INODE_META_BYTES);
    assert!(offset_of!(InodeMeta, version) == 0x00);
    assert!(offset_of!(InodeMeta, pfs_subtype) == 0x03);
    assert!(offset_of!(InodeMeta, uflags) == 0x04);
    assert!(offset_of!(InodeMeta, rmajor) == 0x08);
    assert!(offset_of!(InodeMeta, rminor) == 0x0C);
    assert!(offset_of!(InodeMeta, ctime) == 0x10);
    assert!(offset_of!(InodeMeta, mtime) == 0x18);
    assert!(offset_of!(InodeMeta, atime) == 0x20);
    assert!(offset_of!(InodeMeta, btime) == 0x28);
    assert!(offset_of!(InodeMeta, uid) == 0x30);
    assert!(offset_of!(InodeMeta, gid) == 0x40);
    assert!(offset_of!(InodeMeta, objtype) == 0x50);
    assert!(offset_of!(InodeMeta, op_flags) == 0x51);
    assert!(offset_of!(InodeMeta, cap_flags) == 0x52);
    assert!(offset_of!(InodeMeta, mode) == 0x54);
    assert!(offset_of!(InodeMeta, inum) == 0x58);
    assert!(offset_of!(InodeMeta, size) == 0x60);
    assert!(offset_of!(InodeMeta, nlinks) == 0x68);
    assert!(offset_of!(InodeMeta, iparent) == 0x70);
    assert!(offset_of!(InodeMeta, name_key) == 0x78);
    assert!(offset_of!(InodeMeta, name_len) == 0x80);
    assert!(offset_of!(InodeMeta, ncopies) == 0x82);
    assert!(offset_of!(InodeMeta, comp_algo) == 0x83);
    assert!(offset_of!(InodeMeta, target_type) == 0x84);
    assert!(offset_of!(InodeMeta, check_algo) == 0x85);
    assert!(offset_of!(InodeMeta, pfs_nmasters) == 0x86);
    assert!(offset_of!(InodeMeta, pfs_type) == 0x87);
    assert!(offset_of!(InodeMeta, pfs_inum) == 0x88);
    assert!(offset_of!(InodeMeta, pfs_clid) == 0x90);
    assert!(offset_of!(InodeMeta, pfs_fsid) == 0xA0);
    assert!(offset_of!(InodeMeta, data_quota) == 0xB0);
    assert!(offset_of!(InodeMeta, reserved_b8) == 0xB8);
    assert!(offset_of!(InodeMeta, inode_quota) == 0xC0);
    assert!(offset_of!(InodeMeta, reserved_c8) == 0xC8);
    assert!(offset_of!(InodeMeta, pfs_lsnap_tid) == 0xD0);
    assert!(offset_of!(InodeMeta, reserved_d8) == 0xD8);
    assert!(offset_of!(InodeMeta, decrypt_check) == 0xE0);
    assert!(offset_of!(InodeMeta, reserved_e8) == 0xE8);
};

impl Default for InodeMeta {
    /// A zeroed meta of version [`INODE_VERSION_ONE`], default check method, one copy.
    /// `objtype` is 0, which [`InodeMeta::validate`] rejects: set it (or use
    /// [`InodeMeta::new`]).
    fn default() -> Self {
        InodeMeta {
            version: INODE_VERSION_ONE,
            reserved02: 0,
            pfs_subtype: 0,
            uflags: 0,
            rmajor: 0,
            rminor: 0,
            ctime: 0,
            mtime: 0,
            atime: 0,
            btime: 0,
            uid: [0; 16],
            gid: [0; 16],
            objtype: 0,
            op_flags: 0,
            cap_flags: 0,
            mode: 0,
            inum: 0,
            size: 0,
            nlinks: 0,
            iparent: 0,
            name_key: 0,
            name_len: 0,
            ncopies: 1,
            comp_algo: COMP_NONE,
            target_type: 0,
            check_algo: CHECK_DEFAULT,
            pfs_nmasters: 0,
            pfs_type: PFSTYPE_NONE,
            pfs_inum: 0,
            pfs_clid: [0; 16],
            pfs_fsid: [0; 16],
            data_quota: 0,
            reserved_b8: 0,
            inode_quota: 0,
            reserved_c8: 0,
            pfs_lsnap_tid: 0,
            reserved_d8: 0,
            decrypt_check: 0,
            reserved_e8: [0; 3],
        }
    }
}

macro_rules! moff {
    ($f:ident) => {
        offset_of!(InodeMeta, $f)
    };
}

macro_rules! rd {
    ($b:expr, $t:ty, $f:ident) => {
        <$t>::from_le_bytes(get($b, moff!($f)))
    };
}

macro_rules! wr {
    ($out:expr, $s:expr, $f:ident) => {
        put($out, moff!($f), &$s.$f.to_le_bytes())
    };
}

impl InodeMeta {
    /// A meta for a new inode of `objtype` with `inum` and `mode`, otherwise [`Default`].
    pub fn new(objtype: u8, inum: u64, mode: u32) -> InodeMeta {
        InodeMeta {
            objtype,
            inum,
            mode,
            ..InodeMeta::default()
        }
    }

    /// Decode and validate 256 bytes. Rules (each failure is [`Error::Invalid`]):
    /// - exactly [`INODE_META_BYTES`] bytes; `version` is [`INODE_VERSION_ONE`];
    /// - a known `OBJTYPE_*`; only known [`OpFlags`] bits;
    /// - `name_len <= 255`; DIRECTDATA implies `size <= 512`;
    /// - known compression and check algorithms (low nibbles of `comp_algo`, `check_algo`);
    /// - a known `PFSTYPE_*`; `pfs_nmasters <= 8`.
    pub fn decode(bytes: &[u8]) -> Result<InodeMeta> {
        if bytes.len() != INODE_META_BYTES {
            return Err(Error::Invalid);
        }
        let b = bytes;
        let mut reserved_e8 = [0u64; 3];
        for (i, r) in reserved_e8.iter_mut().enumerate() {
            *r = u64::from_le_bytes(get(b, moff!(reserved_e8) + 8 * i));
        }
        let m = InodeMeta {
            version: rd!(b, u16, version),
            reserved02: rd!(b, u8, reserved02),
            pfs_subtype: rd!(b, u8, pfs_subtype),
            uflags: rd!(b, u32, uflags),
            rmajor: rd!(b, u32, rmajor),
            rminor: rd!(b, u32, rminor),
            ctime: rd!(b, u64, ctime),
            mtime: rd!(b, u64, mtime),
            atime: rd!(b, u64, atime),
            btime: rd!(b, u64, btime),
            uid: get(b, moff!(uid)),
            gid: get(b, moff!(gid)),
            objtype: rd!(b, u8, objtype),
            op_flags: rd!(b, u8, op_flags),
            cap_flags: rd!(b, u16, cap_flags),
            mode: rd!(b, u32, mode),
            inum: rd!(b, u64, inum),
            size: rd!(b, u64, size),
            nlinks: rd!(b, u64, nlinks),
            iparent: rd!(b, u64, iparent),
            name_key: rd!(b, u64, name_key),
            name_len: rd!(b, u16, name_len),
            ncopies: rd!(b, u8, ncopies),
            comp_algo: rd!(b, u8, comp_algo),
            target_type: rd!(b, u8, target_type),
            check_algo: rd!(b, u8, check_algo),
            pfs_nmasters: rd!(b, u8, pfs_nmasters),
            pfs_type: rd!(b, u8, pfs_type),
            pfs_inum: rd!(b, u64, pfs_inum),
            pfs_clid: get(b, moff!(pfs_clid)),
            pfs_fsid: get(b, moff!(pfs_fsid)),
            data_quota: rd!(b, u64, data_quota),
            reserved_b8: rd!(b, u64, reserved_b8),
            inode_quota: rd!(b, u64, inode_quota),
            reserved_c8: rd!(b, u64, reserved_c8),
            pfs_lsnap_tid: rd!(b, u64, pfs_lsnap_tid),
            reserved_d8: rd!(b, u64, reserved_d8),
            decrypt_check: rd!(b, u64, decrypt_check),
            reserved_e8,
        };
        m.validate()?;
        Ok(m)
    }

    /// The 256 on-media bytes (little-endian).
    pub fn encode(&self) -> [u8; INODE_META_BYTES] {
        let mut out = [0u8; INODE_META_BYTES];
        let o = &mut out;
        wr!(o, self, version);
        wr!(o, self, reserved02);
        wr!(o, self, pfs_subtype);
        wr!(o, self, uflags);
        wr!(o, self, rmajor);
        wr!(o, self, rminor);
        wr!(o, self, ctime);
        wr!(o, self, mtime);
        wr!(o, self, atime);
        wr!(o, self, btime);
        put(o, moff!(uid), &self.uid);
        put(o, moff!(gid), &self.gid);
        wr!(o, self, objtype);
        wr!(o, self, op_flags);
        wr!(o, self, cap_flags);
        wr!(o, self, mode);
        wr!(o, self, inum);
        wr!(o, self, size);
        wr!(o, self, nlinks);
        wr!(o, self, iparent);
        wr!(o, self, name_key);
        wr!(o, self, name_len);
        wr!(o, self, ncopies);
        wr!(o, self, comp_algo);
        wr!(o, self, target_type);
        wr!(o, self, check_algo);
        wr!(o, self, pfs_nmasters);
        wr!(o, self, pfs_type);
        wr!(o, self, pfs_inum);
        put(o, moff!(pfs_clid), &self.pfs_clid);
        put(o, moff!(pfs_fsid), &self.pfs_fsid);
        wr!(o, self, data_quota);
        wr!(o, self, reserved_b8);
        wr!(o, self, inode_quota);
        wr!(o, self, reserved_c8);
        wr!(o, self, pfs_lsnap_tid);
        wr!(o, self, reserved_d8);
        wr!(o, self, decrypt_check);
        for (i, r) in self.reserved_e8.iter().enumerate() {
            put(o, moff!(reserved_e8) + 8 * i, &r.to_le_bytes());
        }
        out
    }

    /// Check the rules listed at [`InodeMeta::decode`].
    pub fn validate(&self) -> Result<()> {
        let ok = self.version == INODE_VERSION_ONE
            && is_known_objtype(self.objtype)
            && OpFlags::from_bits(self.op_flags).is_some()
            && usize::from(self.name_len) <= NAME_MAX
            && (!self.is_directdata() || self.size <= EMBEDDED_BYTES as u64)
            && is_known_comp(self.comp_algo & 0x0F)
            && is_known_check(self.check_algo & 0x0F)
            && is_known_pfs_type(self.pfs_type)
            && self.pfs_nmasters <= MAX_CLUSTER;
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid)
        }
    }

    /// The operational flags as a set (unknown bits dropped).
    pub const fn opflags(&self) -> OpFlags {
        OpFlags::from_bits_truncate(self.op_flags)
    }

    /// Whether the file's data live inside the inode (DIRECTDATA).
    pub const fn is_directdata(&self) -> bool {
        self.op_flags & OpFlags::DIRECTDATA.bits() != 0
    }

    /// Whether this inode is a PFS root.
    pub const fn is_pfsroot(&self) -> bool {
        self.op_flags & OpFlags::PFSROOT.bits() != 0
    }
}

/// A whole inode: meta, name, and either a block table or embedded data.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeData {
    /// The meta section.
    pub meta: InodeMeta,
    /// The name, `meta.name_len` bytes, not NUL-terminated; the rest is zero by convention.
    pub filename: [u8; FILENAME_BYTES],
    /// The union: a block table of [`SET_COUNT`] blockrefs, or [`EMBEDDED_BYTES`] of data when
    /// the meta has DIRECTDATA. Use [`InodeData::blockset`] / [`InodeData::embedded`].
    pub u: [u8; EMBEDDED_BYTES],
}

const _: () = {
    assert!(size_of::<InodeData>() == INODE_BYTES);
    assert!(offset_of!(InodeData, meta) == 0x000);
    assert!(offset_of!(InodeData, filename) == 0x100);
    assert!(offset_of!(InodeData, u) == 0x200);
    assert!(SET_COUNT * BREF_BYTES == EMBEDDED_BYTES);
};

impl Default for InodeData {
    /// Default meta, empty name, empty block table (all EMPTY blockrefs are zero bytes).
    fn default() -> Self {
        InodeData {
            meta: InodeMeta::default(),
            filename: [0; FILENAME_BYTES],
            u: [0; EMBEDDED_BYTES],
        }
    }
}

impl InodeData {
    /// An inode of zero bytes on the heap (no 1 KiB value passes through the caller's frame),
    /// or [`Error::NoMem`]: to fill in place.
    pub fn try_zeroed_box() -> Result<alloc::boxed::Box<InodeData>> {
        // SAFETY: every field of `InodeData` and `InodeMeta` is an integer or an array of
        // integers, `repr(C)` without padding (the layout asserts above): zero bytes are one.
        unsafe { crate::mem::try_box_zeroed() }
    }

    /// A new inode with `meta` and `name` (sets `name_len`); [`Error::Invalid`] if the name is
    /// longer than [`NAME_MAX`].
    pub fn new(meta: InodeMeta, name: &[u8]) -> Result<InodeData> {
        let mut d = InodeData {
            meta,
            ..InodeData::default()
        };
        d.set_filename(name)?;
        Ok(d)
    }

    /// Decode and validate 1024 bytes: the meta per [`InodeMeta::decode`]; without DIRECTDATA
    /// each of the four block table entries per [`Blockref::decode`]; with DIRECTDATA the
    /// embedded bytes are taken as they are. Any failure is [`Error::Invalid`].
    pub fn decode(bytes: &[u8]) -> Result<InodeData> {
        if bytes.len() != INODE_BYTES {
            return Err(Error::Invalid);
        }
        let meta = InodeMeta::decode(bytes.get(..INODE_META_BYTES).ok_or(Error::Invalid)?)?;
        let d = InodeData {
            meta,
            filename: get(bytes, offset_of!(InodeData, filename)),
            u: get(bytes, offset_of!(InodeData, u)),
        };
        if !d.meta.is_directdata() {
            d.blockset()?;
        }
        Ok(d)
    }

    /// The 1024 on-media bytes.
    pub fn encode(&self) -> [u8; INODE_BYTES] {
        let mut out = [0u8; INODE_BYTES];
        put(&mut out, offset_of!(InodeData, meta), &self.meta.encode());
        put(&mut out, offset_of!(InodeData, filename), &self.filename);
        put(&mut out, offset_of!(InodeData, u), &self.u);
        out
    }

    /// The name (`name_len` bytes of `filename`, clamped to the field).
    pub fn filename(&self) -> &[u8] {
        let n = usize::from(self.meta.name_len).min(NAME_MAX);
        self.filename.get(..n).unwrap_or(&[])
    }

    /// Set the name and `name_len`, zeroing the rest; [`Error::Invalid`] if longer than
    /// [`NAME_MAX`].
    pub fn set_filename(&mut self, name: &[u8]) -> Result<()> {
        if name.len() > NAME_MAX {
            return Err(Error::Invalid);
        }
        self.filename = [0; FILENAME_BYTES];
        put(&mut self.filename, 0, name);
        self.meta.name_len = name.len() as u16;
        Ok(())
    }

    /// The block table, each entry validated ([`Error::Invalid`] if any is bad). Meaningless
    /// for a DIRECTDATA inode.
    pub fn blockset(&self) -> Result<[Blockref; SET_COUNT]> {
        let mut set = [Blockref::default(); SET_COUNT];
        for (slot, raw) in set.iter_mut().zip(self.u.chunks_exact(BREF_BYTES)) {
            *slot = Blockref::decode(raw)?;
        }
        Ok(set)
    }

    /// Store a block table in the union (clears nothing in the meta: the caller keeps
    /// DIRECTDATA off for a block table).
    pub fn set_blockset(&mut self, set: &[Blockref; SET_COUNT]) {
        for (raw, b) in self.u.chunks_exact_mut(BREF_BYTES).zip(set) {
            raw.copy_from_slice(&b.encode());
        }
    }

    /// The union as embedded data (all 512 bytes; the file's bytes are the first
    /// `meta.size`).
    pub fn embedded(&self) -> &[u8; EMBEDDED_BYTES] {
        &self.u
    }

    /// The union as embedded data, writable.
    pub fn embedded_mut(&mut self) -> &mut [u8; EMBEDDED_BYTES] {
        &mut self.u
    }

    /// The embedded file bytes (`meta.size`, clamped to 512).
    pub fn embedded_file(&self) -> &[u8] {
        let n = usize::try_from(self.meta.size)
            .unwrap_or(EMBEDDED_BYTES)
            .min(EMBEDDED_BYTES);
        self.u.get(..n).unwrap_or(&[])
    }

    /// Make this a DIRECTDATA inode holding `data`: sets DIRECTDATA and `size`, zeroes the
    /// rest of the union. [`Error::TooBig`] beyond [`EMBEDDED_BYTES`].
    pub fn set_embedded_file(&mut self, data: &[u8]) -> Result<()> {
        if data.len() > EMBEDDED_BYTES {
            return Err(Error::TooBig);
        }
        self.u = [0; EMBEDDED_BYTES];
        put(&mut self.u, 0, data);
        self.meta.op_flags |= OpFlags::DIRECTDATA.bits();
        self.meta.size = data.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zeroed_box_is_an_inode_of_zero_bytes() {
        let ino = InodeData::try_zeroed_box().unwrap();
        assert!(ino.encode().iter().all(|&b| b == 0));
        assert_eq!(ino.filename(), b"");
    }

    fn meta() -> InodeMeta {
        let mut m = InodeMeta::new(OBJTYPE_REGFILE, 42, 0o100644);
        m.pfs_subtype = 3;
        m.uflags = 0x0102_0304;
        m.rmajor = 5;
        m.rminor = 6;
        m.ctime = 10;
        m.mtime = 11;
        m.atime = 12;
        m.btime = 13;
        m.uid = [0xA1; 16];
        m.gid = [0xB2; 16];
        m.cap_flags = 0x0708;
        m.size = 100;
        m.nlinks = 1;
        m.iparent = 1;
        m.name_key = 0x8000_0001_0000_8000;
        m.target_type = OBJTYPE_DIRECTORY;
        m.pfs_nmasters = 3;
        m.pfs_type = PFSTYPE_MASTER;
        m.pfs_inum = 0x99;
        m.pfs_clid = [0xC3; 16];
        m.pfs_fsid = [0xD4; 16];
        m.data_quota = 0x1000;
        m.reserved_b8 = 0x2000;
        m.inode_quota = 0x3000;
        m.reserved_c8 = 0x4000;
        m.pfs_lsnap_tid = 0x5000;
        m.reserved_d8 = 0x6000;
        m.decrypt_check = 0x7000;
        m.reserved_e8 = [1, 2, 3];
        m
    }

    #[test]
    fn meta_round_trip_and_offsets() {
        let m = meta();
        let e = m.encode();
        assert_eq!(e[0x00..0x02], [1, 0]);
        assert_eq!(e[0x03], 3);
        assert_eq!(e[0x04..0x08], 0x0102_0304u32.to_le_bytes());
        assert_eq!(e[0x08], 5);
        assert_eq!(e[0x0C], 6);
        assert_eq!(e[0x10], 10);
        assert_eq!(e[0x18], 11);
        assert_eq!(e[0x20], 12);
        assert_eq!(e[0x28], 13);
        assert_eq!(e[0x30], 0xA1);
        assert_eq!(e[0x40], 0xB2);
        assert_eq!(e[0x50], OBJTYPE_REGFILE);
        assert_eq!(e[0x51], 0);
        assert_eq!(e[0x52..0x54], [0x08, 0x07]);
        assert_eq!(e[0x54..0x58], 0o100644u32.to_le_bytes());
        assert_eq!(e[0x58], 42);
        assert_eq!(e[0x60], 100);
        assert_eq!(e[0x68], 1);
        assert_eq!(e[0x70], 1);
        assert_eq!(e[0x78..0x80], m.name_key.to_le_bytes());
        assert_eq!(e[0x82], 1);
        assert_eq!(e[0x83], COMP_NONE);
        assert_eq!(e[0x84], OBJTYPE_DIRECTORY);
        assert_eq!(e[0x85], CHECK_XXHASH64);
        assert_eq!(e[0x86], 3);
        assert_eq!(e[0x87], PFSTYPE_MASTER);
        assert_eq!(e[0x88], 0x99);
        assert_eq!(e[0x90], 0xC3);
        assert_eq!(e[0xA0], 0xD4);
        assert_eq!(e[0xB0..0xB2], [0x00, 0x10]);
        assert_eq!(e[0xC0..0xC2], [0x00, 0x30]);
        assert_eq!(e[0xD0..0xD2], [0x00, 0x50]);
        assert_eq!(e[0xE0..0xE2], [0x00, 0x70]);
        assert_eq!(e[0xE8], 1);
        assert_eq!(e[0xF8], 3);
        assert_eq!(InodeMeta::decode(&e), Ok(m));
    }

    fn meta_rejects(mutate: impl Fn(&mut InodeMeta)) {
        let mut m = meta();
        mutate(&mut m);
        assert_eq!(m.validate(), Err(Error::Invalid));
        assert_eq!(InodeMeta::decode(&m.encode()), Err(Error::Invalid));
    }

    #[test]
    fn meta_validation_errors() {
        let e = meta().encode();
        assert_eq!(InodeMeta::decode(&e[..255]), Err(Error::Invalid));
        assert_eq!(InodeMeta::decode(&[0u8; 257]), Err(Error::Invalid));
        meta_rejects(|m| m.version = 0);
        meta_rejects(|m| m.version = 2);
        meta_rejects(|m| m.objtype = 0);
        meta_rejects(|m| m.objtype = 3);
        meta_rejects(|m| m.objtype = 200);
        meta_rejects(|m| m.op_flags = 0x04);
        meta_rejects(|m| m.name_len = 256);
        meta_rejects(|m| {
            m.op_flags = OpFlags::DIRECTDATA.bits();
            m.size = 513;
        });
        meta_rejects(|m| m.comp_algo = 0x04);
        meta_rejects(|m| m.check_algo = 0x05);
        meta_rejects(|m| m.pfs_type = 2);
        meta_rejects(|m| m.pfs_nmasters = 9);
        // Boundaries that are accepted.
        let mut ok = meta();
        ok.name_len = 255;
        ok.op_flags = (OpFlags::DIRECTDATA | OpFlags::PFSROOT).bits();
        ok.size = 512;
        ok.comp_algo = 0x93; // level 9, zlib
        ok.pfs_nmasters = 8;
        assert_eq!(InodeMeta::decode(&ok.encode()), Ok(ok));
        assert!(ok.is_directdata() && ok.is_pfsroot());
        assert_eq!(ok.opflags(), OpFlags::DIRECTDATA | OpFlags::PFSROOT);
    }

    #[test]
    fn inode_blockset_round_trip() {
        let mut d = InodeData::new(InodeMeta::new(OBJTYPE_DIRECTORY, 7, 0o40755), b"dir").unwrap();
        let mut set = [Blockref::default(); SET_COUNT];
        set[0] = Blockref::new(BREF_TYPE_INODE, 0x8000_0000_0000_8000, 0);
        set[0].set_size_radix(INODE_RADIX);
        set[3] = Blockref::new(BREF_TYPE_INDIRECT, 0, 62);
        d.set_blockset(&set);
        let e = d.encode();
        assert_eq!(e[0x100..0x103], *b"dir");
        assert_eq!(e[0x80], 3);
        assert_eq!(e[0x200], BREF_TYPE_INODE);
        assert_eq!(e[0x200 + 3 * 128], BREF_TYPE_INDIRECT);
        let back = InodeData::decode(&e).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.blockset().unwrap(), set);
        assert_eq!(back.filename(), b"dir");
        assert_eq!(InodeData::decode(&e[..1023]), Err(Error::Invalid));
        // A bad blockref inside the table is caught.
        let mut bad = e;
        bad[0x200 + 128] = 7;
        assert_eq!(InodeData::decode(&bad), Err(Error::Invalid));
        // A bad meta is caught.
        let mut bad = e;
        bad[0x50] = 0;
        assert_eq!(InodeData::decode(&bad), Err(Error::Invalid));
    }

    #[test]
    fn inode_directdata_round_trip() {
        let mut d = InodeData::new(InodeMeta::new(OBJTYPE_REGFILE, 8, 0o100644), b"f").unwrap();
        d.set_embedded_file(b"hello, world").unwrap();
        assert!(d.meta.is_directdata());
        assert_eq!(d.meta.size, 12);
        assert_eq!(d.embedded_file(), b"hello, world");
        // Embedded bytes need not be valid blockrefs.
        d.embedded_mut()[200] = 0xFF;
        let back = InodeData::decode(&d.encode()).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.embedded()[200], 0xFF);
        assert_eq!(d.set_embedded_file(&[0u8; 513]), Err(Error::TooBig));
        let full = [7u8; 512];
        d.set_embedded_file(&full).unwrap();
        assert_eq!(d.embedded_file(), &full[..]);
    }

    #[test]
    fn filename_rules() {
        let m = InodeMeta::new(OBJTYPE_REGFILE, 1, 0);
        assert_eq!(InodeData::new(m, &[b'x'; 256]), Err(Error::Invalid));
        let mut d = InodeData::new(m, &[b'x'; 255]).unwrap();
        assert_eq!(d.filename().len(), 255);
        d.set_filename(b"ab").unwrap();
        assert_eq!(d.filename(), b"ab");
        assert!(d.filename[2..].iter().all(|&b| b == 0));
        // A hostile name_len is clamped, never an out-of-range slice.
        d.meta.name_len = 0xFFFF;
        assert_eq!(d.filename().len(), 255);
        d.meta.size = u64::MAX;
        assert_eq!(d.embedded_file().len(), 512);
    }
}
