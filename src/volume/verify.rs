//! Check every block reachable from the header in use: inodes, indirect blocks, data blocks
//! (decompressed too) and long-name dirent blocks, each against its blockref's check code.

use super::block::zeroed;
use super::scan::Flow;
use super::{BlockDev, Cause, ReadError, ReadResult, Volume};
use crate::media::{
    DirentHead, BREF_TYPE_DATA, BREF_TYPE_DIRENT, BREF_TYPE_INDIRECT, BREF_TYPE_INODE,
    DATA_BLOCK_BYTES,
};

/// What [`Volume::verify_all`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Inodes read (the super-root and PFS roots included).
    pub inodes: u64,
    /// Indirect blocks read.
    pub indirect: u64,
    /// Data blocks read and decoded (shared blocks once per reference).
    pub data: u64,
    /// Directory entries seen.
    pub dirents: u64,
    /// Of those, entries whose name is in a data block (read and verified).
    pub name_blocks: u64,
}

impl<D: BlockDev> Volume<D> {
    /// Read every block reachable from the header in use, verifying each check code and
    /// decoding each data block; the first fault ends the walk with its error.
    pub fn verify_all(&self) -> ReadResult<VerifyReport> {
        let mut r = VerifyReport::default();
        let mut buf = zeroed(DATA_BLOCK_BYTES)?;
        let set = self.header.sroot_blockset;
        self.walk_all(&set, &mut |b, _inode| {
            match b.btype {
                BREF_TYPE_INODE => r.inodes += 1,
                BREF_TYPE_INDIRECT => r.indirect += 1,
                BREF_TYPE_DATA => {
                    self.read_data(b, &mut buf)?;
                    r.data += 1;
                }
                BREF_TYPE_DIRENT => {
                    let head = DirentHead::decode(b)
                        .map_err(|e| ReadError::new(Cause::Media(e), b.data_off))?;
                    if !head.name_is_embedded() {
                        self.read_block(b)?;
                        r.name_blocks += 1;
                    }
                    r.dirents += 1;
                }
                t => return Err(ReadError::new(Cause::WrongType(t), b.data_off)),
            }
            Ok(Flow::Continue)
        })?;
        Ok(r)
    }
}
