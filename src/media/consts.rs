//! On-media constants (`hammer2_disk.h`): block reference and object types, flag sets, PFS types,
//! key bounds, check and compression methods, size radixes and directory-hash masks.

use bitflags::bitflags;

/// Most nodes a cluster may have (`HAMMER2_MAXCLUSTER`); also the largest valid `pfs_nmasters`.
pub const MAX_CLUSTER: u8 = 8;

// ---- Block reference types (`HAMMER2_BREF_TYPE_*`) ----

/// An unused slot in a block table.
pub const BREF_TYPE_EMPTY: u8 = 0;
/// An inode (1024 bytes).
pub const BREF_TYPE_INODE: u8 = 1;
/// An indirect block: a table of block references.
pub const BREF_TYPE_INDIRECT: u8 = 2;
/// A file data block.
pub const BREF_TYPE_DATA: u8 = 3;
/// A directory entry (later HAMMER2; the seed keys child inodes directly).
pub const BREF_TYPE_DIRENT: u8 = 4;
/// A freemap interior node.
pub const BREF_TYPE_FREEMAP_NODE: u8 = 5;
/// A freemap leaf.
pub const BREF_TYPE_FREEMAP_LEAF: u8 = 6;
/// The freemap root (in the volume header).
pub const BREF_TYPE_FREEMAP: u8 = 254;
/// The volume root (in the volume header).
pub const BREF_TYPE_VOLUME: u8 = 255;

/// Whether `t` is one of the `BREF_TYPE_*` values.
pub const fn is_known_bref_type(t: u8) -> bool {
    matches!(
        t,
        BREF_TYPE_EMPTY
            | BREF_TYPE_INODE
            | BREF_TYPE_INDIRECT
            | BREF_TYPE_DATA
            | BREF_TYPE_DIRENT
            | BREF_TYPE_FREEMAP_NODE
            | BREF_TYPE_FREEMAP_LEAF
            | BREF_TYPE_FREEMAP
            | BREF_TYPE_VOLUME
    )
}

// ---- Object types (`HAMMER2_OBJTYPE_*`), the inode meta `objtype` field ----

/// A directory.
pub const OBJTYPE_DIRECTORY: u8 = 1;
/// A regular file.
pub const OBJTYPE_REGFILE: u8 = 2;
/// A named pipe.
pub const OBJTYPE_FIFO: u8 = 4;
/// A character device.
pub const OBJTYPE_CDEV: u8 = 5;
/// A block device.
pub const OBJTYPE_BDEV: u8 = 6;
/// A symbolic link.
pub const OBJTYPE_SOFTLINK: u8 = 7;
/// A hardlink pointer inode (seed era): names another inode by `inum`.
pub const OBJTYPE_HARDLINK: u8 = 8;
/// A socket.
pub const OBJTYPE_SOCKET: u8 = 9;
/// A whiteout entry.
pub const OBJTYPE_WHITEOUT: u8 = 10;

/// Whether `t` is one of the `OBJTYPE_*` values (0, "unknown", is not accepted on media).
pub const fn is_known_objtype(t: u8) -> bool {
    matches!(
        t,
        OBJTYPE_DIRECTORY
            | OBJTYPE_REGFILE
            | OBJTYPE_FIFO
            | OBJTYPE_CDEV
            | OBJTYPE_BDEV
            | OBJTYPE_SOFTLINK
            | OBJTYPE_HARDLINK
            | OBJTYPE_SOCKET
            | OBJTYPE_WHITEOUT
    )
}

bitflags! {
    /// Inode operational flags (`HAMMER2_OPFLAG_*`, the meta `op_flags` byte).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct OpFlags: u8 {
        /// The file's data (at most 512 bytes) live inside the inode instead of a block table.
        const DIRECTDATA = 0x01;
        /// This inode is the root of a PFS.
        const PFSROOT = 0x02;
    }
}

bitflags! {
    /// Block reference flags (`HAMMER2_BREF_FLAG_*`, the blockref `flags` byte).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct BrefFlags: u8 {
        /// The reference points at a PFS root inode.
        const PFSROOT = 0x01;
    }
}

// ---- PFS types (`HAMMER2_PFSTYPE_*`), the meta `pfs_type` field ----

/// No PFS type.
pub const PFSTYPE_NONE: u8 = 0;
/// A local cache: ignored by the quorum.
pub const PFSTYPE_CACHE: u8 = 1;
/// A slave: validated against the focus, never votes.
pub const PFSTYPE_SLAVE: u8 = 3;
/// A soft slave: soft read status.
pub const PFSTYPE_SOFT_SLAVE: u8 = 4;
/// A soft master: soft read/write status.
pub const PFSTYPE_SOFT_MASTER: u8 = 5;
/// A master: votes in the quorum.
pub const PFSTYPE_MASTER: u8 = 6;
/// The super-root of a single device.
pub const PFSTYPE_SUPROOT: u8 = 8;
/// A dummy node: ignored.
pub const PFSTYPE_DUMMY: u8 = 9;

/// Whether `t` is one of the `PFSTYPE_*` values.
pub const fn is_known_pfs_type(t: u8) -> bool {
    matches!(
        t,
        PFSTYPE_NONE
            | PFSTYPE_CACHE
            | PFSTYPE_SLAVE
            | PFSTYPE_SOFT_SLAVE
            | PFSTYPE_SOFT_MASTER
            | PFSTYPE_MASTER
            | PFSTYPE_SUPROOT
            | PFSTYPE_DUMMY
    )
}

// ---- Keys ----

/// The lowest key (`HAMMER2_KEY_MIN`).
pub const KEY_MIN: u64 = 0;
/// The highest key (`HAMMER2_KEY_MAX`).
pub const KEY_MAX: u64 = u64::MAX;

// ---- Check methods (`HAMMER2_CHECK_*`, high nibble of a blockref's `methods`) ----

/// No check code.
pub const CHECK_NONE: u8 = 0;
/// Check code disabled.
pub const CHECK_DISABLED: u8 = 1;
/// CRC-32C (iSCSI polynomial), stored as a little-endian u32 at the start of `check`.
pub const CHECK_ISCSI32: u8 = 2;
/// XXH64 with [`XXH_HAMMER2_SEED`], stored as a little-endian u64 at the start of `check`
/// (the default).
pub const CHECK_XXHASH64: u8 = 3;
/// SHA-256 truncated to 192 bits: known on media, not computed by this port.
pub const CHECK_SHA192: u8 = 4;
/// The freemap's own check area (`check.freemap`: CRC-32C, radix hint mask, free bytes);
/// only freemap blockrefs carry it.
pub const CHECK_FREEMAP: u8 = 5;
/// The check method new chains get.
pub const CHECK_DEFAULT: u8 = CHECK_XXHASH64;
/// The XXH64 seed HAMMER2 uses for its check codes ("MattDlln").
pub const XXH_HAMMER2_SEED: u64 = 0x4d61_7474_446c_6c6e;

/// Whether `m` is one of the `CHECK_*` values.
pub const fn is_known_check(m: u8) -> bool {
    m <= CHECK_SHA192
}

// ---- Compression methods (`HAMMER2_COMP_*`, low nibble of a blockref's `methods`) ----

/// No compression.
pub const COMP_NONE: u8 = 0;
/// All-zero blocks are not stored.
pub const COMP_AUTOZERO: u8 = 1;
/// LZ4.
pub const COMP_LZ4: u8 = 2;
/// zlib.
pub const COMP_ZLIB: u8 = 3;

/// Whether `m` is one of the `COMP_*` values.
pub const fn is_known_comp(m: u8) -> bool {
    m <= COMP_ZLIB
}

/// A blockref `methods` byte: check method in the high nibble, compression in the low one.
pub const fn enc_methods(check: u8, comp: u8) -> u8 {
    (check << 4) | (comp & 0x0F)
}

// ---- Sizes and radixes ----

/// The low bits of `data_off` that hold the block's size radix (`HAMMER2_OFF_MASK_RADIX`).
pub const DATA_OFF_RADIX_MASK: u64 = 0x3F;
/// The smallest allocation: 1 KiB (`HAMMER2_RADIX_MIN`).
pub const RADIX_MIN: u8 = 10;
/// The largest block: 64 KiB (`HAMMER2_RADIX_MAX`).
pub const RADIX_MAX: u8 = 16;
/// An inode's size radix (1024 bytes).
pub const INODE_RADIX: u8 = 10;
/// The size radix of a full data block (64 KiB, `HAMMER2_PBUFRADIX`).
pub const DATA_BLOCK_RADIX: u8 = 16;
/// Bytes in a full data block.
pub const DATA_BLOCK_BYTES: usize = 1 << DATA_BLOCK_RADIX;
/// Bytes of an inode on media.
pub const INODE_BYTES: usize = 1024;
/// Bytes of a blockref on media.
pub const BREF_BYTES: usize = 128;
/// Bytes of an inode's meta section.
pub const INODE_META_BYTES: usize = 256;
/// Bytes an inode can hold directly (`HAMMER2_EMBEDDED_BYTES`), with DIRECTDATA.
pub const EMBEDDED_BYTES: usize = 512;
/// Block references in an inode's block table (`HAMMER2_SET_COUNT`).
pub const SET_COUNT: usize = 4;
/// log2 of [`BREF_BYTES`] (`HAMMER2_BLOCKREF_RADIX`).
pub const BREF_RADIX: u8 = 7;
/// Size radix of the smallest indirect block, 4 KiB (`HAMMER2_IND_RADIX_MIN`): HAMMER2 gives
/// it to the first indirect block below a directory inode.
pub const IND_RADIX_MIN: u8 = 12;
/// Size radix of the nominal indirect block, 16 KiB (`HAMMER2_IND_RADIX_NOM`): below a file
/// inode, and below any indirect block.
pub const IND_RADIX_NOM: u8 = 14;
/// Size radix of the largest indirect block, 64 KiB (`HAMMER2_IND_RADIX_MAX`).
pub const IND_RADIX_MAX: u8 = 16;
/// Blockrefs in a block of size radix `radix` (an indirect block of 4 KiB: 32, 16 KiB: 128,
/// 64 KiB: 512; a blockset, 512 bytes: 4).
pub const fn ind_count(radix: u8) -> usize {
    1usize << radix.saturating_sub(BREF_RADIX)
}
/// The longest file name (`name_len` bound).
pub const NAME_MAX: usize = 255;
/// Bytes of the filename field of an inode.
pub const FILENAME_BYTES: usize = 256;
/// The inode format version this port writes and accepts (`HAMMER2_INODE_VERSION_ONE`).
pub const INODE_VERSION_ONE: u16 = 1;

/// Bytes of a block with size radix `radix`, or `None` for a radix outside
/// [`RADIX_MIN`]..=[`RADIX_MAX`].
pub const fn radix_bytes(radix: u8) -> Option<usize> {
    if radix >= RADIX_MIN && radix <= RADIX_MAX {
        Some(1usize << radix)
    } else {
        None
    }
}

/// The size radix of an allocation of `bytes` (rounded up to a power of two, at least
/// [`RADIX_MIN`]), or `None` when `bytes` is 0 or larger than 64 KiB.
pub const fn bytes_to_radix(bytes: usize) -> Option<u8> {
    if bytes == 0 || bytes > (1usize << RADIX_MAX) {
        return None;
    }
    let mut radix = RADIX_MIN;
    while (1usize << radix) < bytes {
        radix += 1;
    }
    Some(radix)
}

/// The first inode number a PFS hands out (`HAMMER2_INODE_START`); lower ones are reserved
/// (1 is the PFS root).
pub const INODE_START: u64 = 1024;

// ---- Directory hash (`HAMMER2_DIRHASH_*`) ----

/// Set in every directory-hash key: a name-hashed entry, never an artificial one.
pub const DIRHASH_VISIBLE: u64 = 0x8000_0000_0000_0000;
/// The low bits left zero by the hash, free for collision resolution by incrementing.
pub const DIRHASH_LOMASK: u64 = 0x7FFF;
/// Bit 15, always set so keys 0..=0x7FFF stay free for artificial entries (`.`, `..`).
pub const DIRHASH_FORCED: u64 = 0x8000;
/// The hashed bits of a directory key.
pub const DIRHASH_HIMASK: u64 = 0xFFFF_FFFF_FFFF_0000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_helpers() {
        assert_eq!(radix_bytes(10), Some(1024));
        assert_eq!(radix_bytes(16), Some(65536));
        assert_eq!(radix_bytes(9), None);
        assert_eq!(radix_bytes(17), None);
        assert_eq!(bytes_to_radix(1), Some(10));
        assert_eq!(bytes_to_radix(1024), Some(10));
        assert_eq!(bytes_to_radix(1025), Some(11));
        assert_eq!(bytes_to_radix(65536), Some(16));
        assert_eq!(bytes_to_radix(65537), None);
        assert_eq!(bytes_to_radix(0), None);
        assert_eq!(DATA_BLOCK_BYTES, 65536);
    }

    #[test]
    fn known_sets() {
        assert!(is_known_bref_type(BREF_TYPE_VOLUME));
        assert!(!is_known_bref_type(7));
        assert!(!is_known_bref_type(253));
        assert!(is_known_objtype(OBJTYPE_HARDLINK));
        assert!(!is_known_objtype(0));
        assert!(!is_known_objtype(3));
        assert!(!is_known_objtype(11));
        assert!(is_known_pfs_type(PFSTYPE_MASTER));
        assert!(!is_known_pfs_type(2));
        assert!(!is_known_pfs_type(7));
        assert!(is_known_check(CHECK_SHA192) && !is_known_check(5));
        assert!(is_known_comp(COMP_ZLIB) && !is_known_comp(4));
        assert_eq!(enc_methods(CHECK_XXHASH64, COMP_LZ4), 0x32);
    }
}
