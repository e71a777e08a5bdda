//! A read-only reader of HAMMER2 volumes in today's on-media layout, generic over a block
//! device ([`BlockDev`]) so that any host (a file in userland, a block device in a kernel)
//! can serve it.
//!
//! - [`Volume::open`]: the best valid volume header copy (HAMMER2's choice);
//! - [`block`]: blockrefs resolved to bytes, each block's check code verified on every read;
//! - [`scan`]: key-range walks of block tables through indirect blocks, with an explicit
//!   stack of bounded depth, checking that keys nest and ascend;
//! - [`pfs`]: PFSs by label, a PFS's inode index, directory entries, file data, symlinks;
//! - [`verify`]: every reachable blockref's check code;
//! - [`freemap`]: the freemap tree, its leaves' bitmaps;
//! - [`fsck`]: a read-only check of a whole volume that goes on past faults and reports them;
//! - [`show`]: the text of `ls` and `fsck`, the same for every host;
//! - `file` (feature `std`): an image file or block device as a [`BlockDev`].
//!
//! Every fault of the media is a [`ReadError`] naming its cause and where it was met; no
//! input panics, loops forever or makes the reader allocate more than a block (64 KiB) per
//! level of its walk.

pub mod block;
pub mod commit;
#[cfg(feature = "std")]
pub mod file;
pub mod freemap;
pub mod freemap_write;
pub mod fsck;
pub mod import;
pub mod newfs;
pub mod pfs;
pub mod scan;
pub mod show;
pub mod space;
pub mod txn;
pub mod verify;

use core::fmt;

use crate::media::compress::Inflater;
use crate::media::volhdr::{copy_offset, select_best, VolumeHeader, NUM_VOLHDRS, VOLUME_BYTES};
use crate::media::MediaError;
use crate::Error;

#[cfg(feature = "std")]
pub use file::FileDev;
pub use fsck::{fsck, Finding, FsckOptions, FsckReport, Problem};
pub use import::{DirEntries, Import};
pub use newfs::{newfs, NewPfs, NewfsOptions};
pub use pfs::{check_name, BadName, Entry, Pfs, Piece};
pub use scan::Flow;
pub use txn::Txn;
pub use verify::VerifyReport;

/// Block I/O, the part of the porting surface the volume code needs from a host: fallible
/// reads and writes at byte offsets of one device the host has opened, and a flush.
///
/// Every write of the volume code goes through [`BlockDev::write_at`], and its commit
/// order relies on [`BlockDev::flush`]: blocks first, flush, then the volume header, flush.
/// A host that cannot write (a read-only image) keeps the default write and flush, which
/// refuse with [`crate::Error::ReadOnly`].
pub trait BlockDev {
    /// Bytes of the device.
    fn size(&self) -> u64;
    /// Fill `buf` with the bytes at byte offset `off` (all of them, or an error).
    fn read_at(&self, off: u64, buf: &mut [u8]) -> crate::Result<()>;
    /// Fill `buf`, empty with room for `len` bytes reserved by the caller, with the `len`
    /// bytes at byte offset `off` (all of them, or an error; [`crate::Error::Invalid`] when
    /// the room is short: nothing is allocated here). The default clears the room and fills
    /// it with [`BlockDev::read_at`]; a device that can read into memory never written (a
    /// file's `pread`) saves the clearing: a volume's DATA blocks are read through here, and
    /// clearing a block costs about as much as the device's copy of it.
    fn read_new(&self, off: u64, len: usize, buf: &mut alloc::vec::Vec<u8>) -> crate::Result<()> {
        if !buf.is_empty() || buf.capacity() < len {
            return Err(crate::Error::Invalid);
        }
        buf.resize(len, 0);
        self.read_at(off, buf)
    }
    /// Write all of `buf` at byte offset `off`, or fail. Durable only after a successful
    /// [`BlockDev::flush`]; until then a crash may keep any subset of the writes.
    fn write_at(&self, off: u64, buf: &[u8]) -> crate::Result<()> {
        let _ = (off, buf);
        Err(crate::Error::ReadOnly)
    }
    /// Make every write that returned so far durable (`fdatasync`, a device cache flush).
    fn flush(&self) -> crate::Result<()> {
        Err(crate::Error::ReadOnly)
    }
    /// A scheduling point, called once per block in the reader's long loops (a kernel host
    /// yields the CPU here; the default does nothing).
    fn yield_point(&self) {}
}

/// A device behind a reference or a shared pointer is that device: every method forwards.
macro_rules! forward_block_dev {
    ($($dev:ty),*) => {$(
        impl<T: BlockDev + ?Sized> BlockDev for $dev {
            fn size(&self) -> u64 {
                (**self).size()
            }
            fn read_at(&self, off: u64, buf: &mut [u8]) -> crate::Result<()> {
                (**self).read_at(off, buf)
            }
            fn read_new(
                &self,
                off: u64,
                len: usize,
                buf: &mut alloc::vec::Vec<u8>,
            ) -> crate::Result<()> {
                (**self).read_new(off, len, buf)
            }
            fn write_at(&self, off: u64, buf: &[u8]) -> crate::Result<()> {
                (**self).write_at(off, buf)
            }
            fn flush(&self) -> crate::Result<()> {
                (**self).flush()
            }
            fn yield_point(&self) {
                (**self).yield_point()
            }
        }
    )*};
}

forward_block_dev!(&T, alloc::sync::Arc<T>);

/// Why a read of the volume failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A structure's bytes are malformed or damaged.
    Media(MediaError),
    /// The device read failed.
    Device(Error),
    /// A blockref whose block lies outside the volume, in its first 64 KiB, across a 64 KiB
    /// boundary, off 1 KiB alignment, or has an invalid size radix.
    OutOfRange,
    /// A blockref that does not decode.
    BadBlockref,
    /// An inode that does not decode.
    BadInode,
    /// A blockref of a type that does not belong where it was found.
    WrongType(u8),
    /// Block table keys out of order or outside their parent's range.
    KeyOrder,
    /// Block tables nested deeper than [`scan::DEPTH_MAX`].
    TooDeep,
    /// An inode found under one inode number that carries another.
    InumMismatch,
    /// No such PFS, inode or name.
    NotFound,
    /// A directory was needed.
    NotDir,
    /// A file or symlink was needed.
    NotFile,
    /// Something larger than the reader's bound (a symlink target, say).
    TooBig,
    /// Allocation failed.
    NoMem,
}

/// A read failure: its cause and the media byte offset (or key) where it was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadError {
    /// What went wrong.
    pub cause: Cause,
    /// Where: the block's `data_off` (or a byte offset of the device, or the key looked up).
    pub at: u64,
}

impl ReadError {
    /// A failure of `cause` at `at`.
    pub const fn new(cause: Cause, at: u64) -> ReadError {
        ReadError { cause, at }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Cause::Media(e) => write!(f, "{e}")?,
            Cause::Device(e) => write!(f, "device read failed: {e:?}")?,
            Cause::OutOfRange => f.write_str("block reference out of range")?,
            Cause::BadBlockref => f.write_str("malformed block reference")?,
            Cause::BadInode => f.write_str("malformed inode")?,
            Cause::WrongType(t) => write!(f, "unexpected block reference type {t}")?,
            Cause::KeyOrder => f.write_str("block table keys out of order or range")?,
            Cause::TooDeep => f.write_str("block tables nested too deep")?,
            Cause::InumMismatch => f.write_str("inode number does not match its key")?,
            Cause::NotFound => f.write_str("not found")?,
            Cause::NotDir => f.write_str("not a directory")?,
            Cause::NotFile => f.write_str("not a file or symlink")?,
            Cause::TooBig => f.write_str("too big")?,
            Cause::NoMem => f.write_str("out of memory")?,
        }
        Ok(())
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at {:#x})", self.cause, self.at)
    }
}

impl From<ReadError> for Error {
    /// The errno a kernel host returns: damage is EIO, as HAMMER2 reports a bad block.
    fn from(e: ReadError) -> Error {
        match e.cause {
            Cause::Media(m) => m.into(),
            Cause::Device(d) => d,
            Cause::NotFound => Error::NotFound,
            Cause::NotDir => Error::NotDir,
            Cause::NotFile => Error::IsDir,
            Cause::TooBig => Error::TooBig,
            Cause::NoMem => Error::NoMem,
            Cause::OutOfRange
            | Cause::BadBlockref
            | Cause::BadInode
            | Cause::WrongType(_)
            | Cause::KeyOrder
            | Cause::TooDeep
            | Cause::InumMismatch => Error::Io,
        }
    }
}

/// The outcome of reading one volume header copy.
#[derive(Debug, Clone)]
pub enum HeaderCopy {
    /// The copy does not lie wholly inside the device.
    Absent,
    /// The device read at this byte offset failed.
    Unreadable(u64, Error),
    /// Read and decoded: the header (boxed: four copies would take 7 KiB of a kernel
    /// stack), or what is wrong with it.
    Read(Result<alloc::boxed::Box<VolumeHeader>, MediaError>),
}

/// Read and decode every header copy (at 0, 2, 4, 6 GiB) of `dev`; only running out of
/// memory is an error.
pub fn read_copies<D: BlockDev>(dev: &D) -> ReadResult<[HeaderCopy; NUM_VOLHDRS]> {
    let size = dev.size();
    let mut buf = block::zeroed(VOLUME_BYTES)?;
    let mut copies = [
        HeaderCopy::Absent,
        HeaderCopy::Absent,
        HeaderCopy::Absent,
        HeaderCopy::Absent,
    ];
    for (i, slot) in copies.iter_mut().enumerate() {
        let at = copy_offset(i);
        if at.saturating_add(VOLUME_BYTES as u64) > size {
            break;
        }
        *slot = match dev.read_at(at, &mut buf) {
            Ok(()) => HeaderCopy::Read(decode_copy(&buf, at)?),
            Err(e) => HeaderCopy::Unreadable(at, e),
        };
    }
    Ok(copies)
}

/// The header copy in `buf` (read from `at`), decoded onto the heap. Not inlined, and called
/// after the device read returned: the decoder's temporaries (several KiB) then never sit on
/// a kernel stack under the host's I/O path.
#[inline(never)]
fn decode_copy(
    buf: &[u8],
    at: u64,
) -> ReadResult<Result<alloc::boxed::Box<VolumeHeader>, MediaError>> {
    Ok(match VolumeHeader::decode(buf) {
        Ok(h) => Ok(crate::mem::try_box(h).map_err(|_| ReadError::new(Cause::NoMem, at))?),
        Err(e) => Err(e),
    })
}

/// Shorthand for the reader's results.
pub type ReadResult<T> = core::result::Result<T, ReadError>;

/// Blocks and bytes a volume has read and written since it was opened (every device read of
/// a block or header copy, every block and header write).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCount {
    /// Device reads.
    pub blocks_read: u64,
    /// Bytes of those reads.
    pub bytes_read: u64,
    /// Device writes.
    pub blocks_written: u64,
    /// Bytes of those writes.
    pub bytes_written: u64,
}

impl IoCount {
    /// What was counted after `earlier` (a reading of the same volume).
    pub fn since(&self, earlier: &IoCount) -> IoCount {
        IoCount {
            blocks_read: self.blocks_read.saturating_sub(earlier.blocks_read),
            bytes_read: self.bytes_read.saturating_sub(earlier.bytes_read),
            blocks_written: self.blocks_written.saturating_sub(earlier.blocks_written),
            bytes_written: self.bytes_written.saturating_sub(earlier.bytes_written),
        }
    }
}

/// An open volume: the device, the header copy in use, and the reader's scratch state.
pub struct Volume<D: BlockDev> {
    dev: D,
    /// Boxed: 1.7 KiB that a kernel stack would otherwise carry in every frame holding a
    /// volume by value.
    header: alloc::boxed::Box<VolumeHeader>,
    zone: usize,
    inflater: core::cell::RefCell<Inflater>,
    io: core::cell::Cell<IoCount>,
}

impl<D: BlockDev> fmt::Debug for Volume<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Volume")
            .field("zone", &self.zone)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl<D: BlockDev> Volume<D> {
    /// Open `dev`: read every header copy at 0, 2, 4, 6 GiB that lies wholly inside the
    /// device, keep the valid one with the highest `mirror_tid` (the lowest zone on a tie),
    /// and check that the filesystem it describes fits in the device. With no valid copy, the
    /// error of the lowest zone's copy.
    pub fn open(dev: D) -> ReadResult<Volume<D>> {
        let copies = read_copies(&dev)?;
        Volume::from_copies(dev, copies)
    }

    /// [`Volume::open`] on header copies already read by [`read_copies`].
    pub fn from_copies(dev: D, copies: [HeaderCopy; NUM_VOLHDRS]) -> ReadResult<Volume<D>> {
        let size = dev.size();
        let mut dev_err = None;
        let copies = copies.map(|c| match c {
            HeaderCopy::Absent => None,
            HeaderCopy::Unreadable(at, e) => {
                dev_err.get_or_insert(ReadError::new(Cause::Device(e), at));
                None
            }
            HeaderCopy::Read(r) => Some(r),
        });
        let (zone, header) = match select_best(copies) {
            Ok(best) => best,
            Err(e) => return Err(dev_err.unwrap_or(ReadError::new(Cause::Media(e), 0))),
        };
        if header.fs_size() > size || header.volu_size > size {
            return Err(ReadError::new(
                Cause::Media(MediaError::Field("volu_size")),
                copy_offset(zone),
            ));
        }
        let inflater = Inflater::new().map_err(|_| ReadError::new(Cause::NoMem, 0))?;
        Ok(Volume {
            dev,
            header,
            zone,
            inflater: core::cell::RefCell::new(inflater),
            io: core::cell::Cell::new(IoCount::default()),
        })
    }

    /// The header copy in use.
    pub fn header(&self) -> &VolumeHeader {
        &self.header
    }

    /// The zone (0..=3) of the header copy in use.
    pub fn zone(&self) -> usize {
        self.zone
    }

    /// Blocks and bytes read and written through this volume so far.
    pub fn io(&self) -> IoCount {
        self.io.get()
    }

    /// Count a device read of `bytes`.
    pub(crate) fn count_read(&self, bytes: usize) {
        let mut c = self.io.get();
        c.blocks_read += 1;
        c.bytes_read += bytes as u64;
        self.io.set(c);
    }

    /// Write `buf` at `off` on the device, counted.
    pub(crate) fn write_at(&self, off: u64, buf: &[u8]) -> crate::Result<()> {
        self.dev.write_at(off, buf)?;
        let mut c = self.io.get();
        c.blocks_written += 1;
        c.bytes_written += buf.len() as u64;
        self.io.set(c);
        Ok(())
    }

    /// The device.
    pub fn dev(&self) -> &D {
        &self.dev
    }

    /// Close the volume, handing back its device (to reopen it after a commit, say).
    pub fn into_dev(self) -> D {
        self.dev
    }
}

#[cfg(test)]
pub(crate) mod space_tests;
#[cfg(test)]
pub(crate) mod testdev;
#[cfg(test)]
mod write_tests;
