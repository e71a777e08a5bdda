//! The in-memory form of a chain's header and of an inode's 1024 bytes.
//!
//! Field for field this mirrors `hammer2_blockref_t` and `hammer2_inode_data_t` (HAMMER2-FACTS §4);
//! the byte layouts themselves live in [`crate::media`]. The store keeps decoded fields so the
//! synchronizer's copy rules (§3.5, §3.6) read as field assignments.

/// `HAMMER2_BREF_TYPE_INODE`.
pub const BREF_TYPE_INODE: u8 = 1;
/// `HAMMER2_BREF_TYPE_DATA`.
pub const BREF_TYPE_DATA: u8 = 3;
/// `HAMMER2_BREF_FLAG_PFSROOT`.
pub const BREF_FLAG_PFSROOT: u8 = 0x01;
/// `HAMMER2_OBJTYPE_DIRECTORY`.
pub const OBJTYPE_DIRECTORY: u8 = 1;
/// `HAMMER2_OBJTYPE_REGFILE`.
pub const OBJTYPE_REGFILE: u8 = 2;
/// `HAMMER2_OBJTYPE_HARDLINK` (seed era).
pub const OBJTYPE_HARDLINK: u8 = 8;
/// `HAMMER2_OPFLAG_DIRECTDATA`: file data lives in the inode's union.
pub const OPFLAG_DIRECTDATA: u8 = 0x01;
/// `HAMMER2_OPFLAG_PFSROOT`.
pub const OPFLAG_PFSROOT: u8 = 0x02;
/// `HAMMER2_KEY_MAX`.
pub const KEY_MAX: u64 = u64::MAX;
/// Bytes of file data embedded in an inode (`HAMMER2_EMBEDDED_BYTES`).
pub const EMBEDDED_BYTES: usize = 512;
/// Radix of a logical file block (64 KiB, `HAMMER2_PBUFRADIX`).
pub const DATA_RADIX: u8 = 16;
/// Size of a logical file block.
pub const DATA_BLOCK: usize = 1 << DATA_RADIX;
/// Smallest physical data block radix (1 KiB, `HAMMER2_RADIX_MIN`).
pub const MIN_RADIX: u8 = 10;
/// Radix of an inode's 1024 bytes.
pub const INODE_RADIX: u8 = 10;
/// Default methods byte: xxhash64 check (high nibble), no compression.
pub const DEFAULT_METHODS: u8 = 3 << 4;
/// Default inode check algorithm (`HAMMER2_CHECK_XXHASH64`).
pub const DEFAULT_CHECK_ALGO: u8 = 3;
/// Maximum length of a file name.
pub const NAME_MAX: usize = 256;

/// The blockref fields a chain carries (`hammer2_blockref_t` minus the on-media-only parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bref {
    /// `HAMMER2_BREF_TYPE_*`.
    pub btype: u8,
    /// Check algorithm (high nibble) and compression (low nibble).
    pub methods: u8,
    /// The key range covers `key ..= key + 2^keybits - 1`.
    pub keybits: u8,
    /// Logical size radix of the referenced data.
    pub vradix: u8,
    /// `HAMMER2_BREF_FLAG_*`.
    pub flags: u8,
    /// Physical size radix (low 6 bits of `data_off`): the payload is `1 << radix` bytes.
    pub radix: u8,
    /// The lowest key of the range.
    pub key: u64,
    /// Set by a flush; never compared.
    pub mirror_tid: u64,
    /// The transaction that last changed this chain or anything below it.
    pub modify_tid: u64,
}

impl Bref {
    /// The last key of this chain's range.
    pub fn key_end(&self) -> u64 {
        range_end(self.key, self.keybits)
    }
    /// Payload size in bytes.
    pub fn bytes(&self) -> usize {
        1usize << (self.radix & 63).min(20)
    }
}

/// The last key of the range `key`/`keybits`.
pub fn range_end(key: u64, keybits: u8) -> u64 {
    if keybits >= 64 {
        KEY_MAX
    } else {
        key | ((1u64 << keybits) - 1)
    }
}

/// The smallest physical radix holding `len` bytes (at least 1 KiB), as HAMMER2 sizes file tails.
pub fn data_radix_for(len: usize) -> u8 {
    let mut r = MIN_RADIX;
    while (1usize << r) < len && r < DATA_RADIX {
        r += 1;
    }
    r
}

/// Inode meta-data (`hammer2_inode_meta_t`, 256 bytes on media).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)] // field names are those of hammer2_disk.h, see HAMMER2-FACTS §4
pub struct Meta {
    pub version: u16,
    pub pfs_subtype: u8,
    pub uflags: u32,
    pub rmajor: u32,
    pub rminor: u32,
    pub ctime: u64,
    pub mtime: u64,
    pub atime: u64,
    pub btime: u64,
    pub uid: [u8; 16],
    pub gid: [u8; 16],
    pub otype: u8,
    pub op_flags: u8,
    pub cap_flags: u16,
    pub mode: u32,
    pub inum: u64,
    pub size: u64,
    pub nlinks: u64,
    pub iparent: u64,
    pub name_key: u64,
    pub name_len: u16,
    pub ncopies: u8,
    pub comp_algo: u8,
    pub target_type: u8,
    pub check_algo: u8,
    pub pfs_nmasters: u8,
    pub pfs_type: u8,
    pub pfs_inum: u64,
    pub pfs_clid: [u8; 16],
    pub pfs_fsid: [u8; 16],
    pub data_quota: u64,
    pub inode_quota: u64,
    pub pfs_lsnap_tid: u64,
    pub decrypt_check: u64,
}

impl Meta {
    /// Whether the file data is embedded in the inode.
    pub fn directdata(&self) -> bool {
        self.op_flags & OPFLAG_DIRECTDATA != 0
    }

    /// The fields a PFS root takes from the focus (HAMMER2-FACTS §3.6): not btime, not the PFS
    /// identity; `pfs_lsnap_tid` only ever rises.
    pub fn copy_pfsroot_fields(&mut self, focus: &Meta) {
        self.uflags = focus.uflags;
        self.rmajor = focus.rmajor;
        self.rminor = focus.rminor;
        self.ctime = focus.ctime;
        self.mtime = focus.mtime;
        self.atime = focus.atime;
        self.uid = focus.uid;
        self.gid = focus.gid;
        self.mode = focus.mode;
        self.ncopies = focus.ncopies;
        self.comp_algo = focus.comp_algo;
        self.check_algo = focus.check_algo;
        self.data_quota = focus.data_quota;
        self.inode_quota = focus.inode_quota;
        self.pfs_lsnap_tid = self.pfs_lsnap_tid.max(focus.pfs_lsnap_tid);
    }

    /// Whether the fields [`Meta::copy_pfsroot_fields`] copies (except the snapshot TID) agree.
    pub fn pfsroot_fields_eq(&self, o: &Meta) -> bool {
        let mut a = *self;
        a.copy_pfsroot_fields(o);
        a.pfs_lsnap_tid = self.pfs_lsnap_tid;
        a == *self
    }
}

/// An inode's 1024 bytes: meta, file name, and the union (block table or embedded data).
///
/// The block table itself is the chain's children in the store, so the union is kept here only
/// as the 512 embedded bytes of a DIRECTDATA inode (zero otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeData {
    /// Meta-data.
    pub meta: Meta,
    /// File name, `meta.name_len` bytes used.
    pub filename: [u8; NAME_MAX],
    /// Embedded file data (DIRECTDATA) or zeros.
    pub direct: [u8; EMBEDDED_BYTES],
}

impl Default for InodeData {
    fn default() -> Self {
        InodeData {
            meta: Meta::default(),
            filename: [0; NAME_MAX],
            direct: [0; EMBEDDED_BYTES],
        }
    }
}

impl InodeData {
    /// The file name bytes.
    pub fn name(&self) -> &[u8] {
        let n = (self.meta.name_len as usize).min(NAME_MAX);
        &self.filename[..n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_radix() {
        assert_eq!(range_end(0x10000, 16), 0x1ffff);
        assert_eq!(range_end(5, 0), 5);
        assert_eq!(range_end(0, 64), KEY_MAX);
        assert_eq!(data_radix_for(1), 10);
        assert_eq!(data_radix_for(1025), 11);
        assert_eq!(data_radix_for(65536), 16);
        assert_eq!(data_radix_for(1 << 20), 16);
    }

    #[test]
    fn pfsroot_rule_copies_only_its_fields() {
        let mut local = Meta {
            pfs_type: 3,
            btime: 7,
            pfs_lsnap_tid: 9,
            ..Meta::default()
        };
        let focus = Meta {
            pfs_type: 6,
            btime: 1,
            mode: 0o700,
            mtime: 4,
            pfs_lsnap_tid: 5,
            ..Meta::default()
        };
        assert!(!local.pfsroot_fields_eq(&focus));
        local.copy_pfsroot_fields(&focus);
        assert_eq!((local.pfs_type, local.btime, local.mode, local.mtime), (3, 7, 0o700, 4));
        assert_eq!(local.pfs_lsnap_tid, 9, "the snapshot TID never goes down");
        assert!(local.pfsroot_fields_eq(&focus));
    }
}
