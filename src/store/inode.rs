//! Store-side helpers over the media types: file block sizing, the PFS-root field rule and
//! the inode as the store keeps it (its table cleared).

use crate::media::{
    bytes_to_radix, check, InodeData, InodeMeta, EMBEDDED_BYTES, OBJTYPE_DIRECTORY, RADIX_MAX,
};

/// What a store keeps of an inode whose body is on the media: whether it is a directory
/// (the shape of its table depends on it, read under the store's lock) and a digest of the
/// body as the store keeps it (table cleared), by which two clean inodes of different
/// volumes are compared without reading either: their check codes cover their block tables
/// too, which differ wherever the volumes put the same blocks apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InodeSummary {
    /// Whether the inode is a directory.
    pub dir: bool,
    /// XXH64 of its meta, name and embedded data (the latter only when it has them).
    pub digest: u64,
}

impl InodeSummary {
    /// The summary of `ino`, its table cleared or not (a table is not digested).
    pub fn of(ino: &InodeData) -> InodeSummary {
        let meta = ino.meta.encode();
        let mut digest = check::xxh64(&meta, 0);
        digest = check::xxh64(&ino.filename, digest);
        if ino.meta.is_directdata() {
            digest = check::xxh64(&ino.u, digest);
        }
        InodeSummary {
            dir: ino.meta.objtype == OBJTYPE_DIRECTORY,
            digest,
        }
    }
}

/// Make `ino` an inode as the store keeps it: a table-holding inode's block table lives in
/// the store's chains (a commit writes the table it builds from them), so its on-media
/// blockset is cleared, as the store's own inodes have none. An inode keeping its data in
/// itself (DIRECTDATA) is kept whole.
pub fn clear_table(ino: &mut InodeData) {
    if !ino.meta.is_directdata() {
        ino.u = [0; EMBEDDED_BYTES];
    }
}

/// The physical radix of a file block holding `len` bytes: the smallest power of two of at
/// least 1 KiB, as HAMMER2 sizes a file's tail block (64 KiB for a full block).
pub fn data_radix_for(len: usize) -> u8 {
    bytes_to_radix(len.max(1)).unwrap_or(RADIX_MAX)
}

/// Copy the fields a PFS root takes from the focus (HAMMER2-FACTS §3.6): not btime, not the
/// PFS identity (type, fsid, ...); `pfs_lsnap_tid` only ever rises.
pub fn copy_pfsroot_fields(local: &mut InodeMeta, focus: &InodeMeta) {
    local.uflags = focus.uflags;
    local.rmajor = focus.rmajor;
    local.rminor = focus.rminor;
    local.ctime = focus.ctime;
    local.mtime = focus.mtime;
    local.atime = focus.atime;
    local.uid = focus.uid;
    local.gid = focus.gid;
    local.mode = focus.mode;
    local.ncopies = focus.ncopies;
    local.comp_algo = focus.comp_algo;
    local.check_algo = focus.check_algo;
    local.data_quota = focus.data_quota;
    local.inode_quota = focus.inode_quota;
    local.pfs_lsnap_tid = local.pfs_lsnap_tid.max(focus.pfs_lsnap_tid);
}

/// Whether the fields [`copy_pfsroot_fields`] copies (the snapshot TID aside) agree.
pub fn pfsroot_fields_eq(a: &InodeMeta, b: &InodeMeta) -> bool {
    let mut c = *a;
    copy_pfsroot_fields(&mut c, b);
    c.pfs_lsnap_tid = a.pfs_lsnap_tid;
    c == *a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_for_tails() {
        assert_eq!(data_radix_for(0), 10);
        assert_eq!(data_radix_for(1), 10);
        assert_eq!(data_radix_for(1025), 11);
        assert_eq!(data_radix_for(65536), 16);
    }

    #[test]
    fn pfsroot_rule_copies_only_its_fields() {
        let mut local = InodeMeta {
            pfs_type: 3,
            btime: 7,
            pfs_lsnap_tid: 9,
            ..InodeMeta::default()
        };
        let focus = InodeMeta {
            pfs_type: 6,
            btime: 1,
            mode: 0o700,
            mtime: 4,
            pfs_lsnap_tid: 5,
            ..InodeMeta::default()
        };
        assert!(!pfsroot_fields_eq(&local, &focus));
        copy_pfsroot_fields(&mut local, &focus);
        assert_eq!(
            (local.pfs_type, local.btime, local.mode, local.mtime),
            (3, 7, 0o700, 4)
        );
        assert_eq!(local.pfs_lsnap_tid, 9, "the snapshot TID never goes down");
        assert!(pfsroot_fields_eq(&local, &focus));
    }
}
