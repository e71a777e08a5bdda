//! A store's payload source on a volume's device: DATA and inode blocks read on demand by
//! blockref, check code verified, as the load would have read them ([`super::load_cached`]).

use crate::media::Blockref;
use crate::media::VolumeHeader;
use crate::store::PayloadSource;
use crate::volume::{block::read_stored, BlockDev};
use crate::Result;

/// Reads blocks of one volume from a device handle: the store's readers are the sync
/// threads, several at once, while the volume itself belongs to its mount; the handle may
/// be shared with the volume (the CLI gives both one `Arc<FileDev>`), as `BlockDev` reads
/// at an offset and never moves a file position.
pub struct DevSource<D> {
    dev: D,
    fs_size: u64,
}

impl<D: BlockDev + Send + Sync> DevSource<D> {
    /// A source reading from `dev`, the device of the volume whose header is `header`.
    pub fn new(dev: D, header: &VolumeHeader) -> DevSource<D> {
        DevSource {
            dev,
            fs_size: header.fs_size(),
        }
    }
}

impl<D: BlockDev + Send + Sync> PayloadSource for DevSource<D> {
    fn read(&self, bref: &Blockref) -> Result<alloc::vec::Vec<u8>> {
        Ok(read_stored(&self.dev, self.fs_size, bref)?)
    }
}
