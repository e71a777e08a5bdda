//! PFSs and their namespace in today's layout (HAMMER2-FACTS "Today's layout"):
//! - the super-root's table holds one INODE per PFS, keyed by the dirhash of its label;
//! - a PFS root's table holds the inode index (every inode of the PFS keyed by its inum, bit
//!   63 clear) and the root directory's own DIRENTs (bit 63 set);
//! - any other directory's table holds only DIRENTs, keyed by the dirhash of the name plus
//!   a collision iterator in the low 15 bits, naming an inum found in the index;
//! - file data: DIRECTDATA in the inode, or 64 KiB logical DATA blocks keyed by file offset
//!   (holes read as zeros).

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::block::zeroed;
use super::scan::{blockset_vec, Flow};
use super::{BlockDev, Cause, ReadError, ReadResult, Volume};
use crate::media::{
    dirhash, Blockref, DirentHead, InodeData, BREF_TYPE_DATA, BREF_TYPE_DIRENT, BREF_TYPE_INODE,
    DATA_BLOCK_BYTES, DATA_BLOCK_RADIX, DIRHASH_LOMASK, DIRHASH_VISIBLE, KEY_MAX, NAME_MAX,
    OBJTYPE_DIRECTORY, OBJTYPE_REGFILE, OBJTYPE_SOFTLINK,
};

/// The longest symlink target [`Pfs::readlink`] returns (`PATH_MAX`).
pub const SYMLINK_MAX: usize = 4096;

/// A PFS of an open volume: its root inode.
#[derive(Debug, Clone)]
pub struct Pfs {
    /// The PFS root inode (a directory with PFSROOT set).
    pub root: InodeData,
}

/// A directory entry as read from media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name (1..=255 bytes).
    pub name: heapless::Vec<u8, NAME_MAX>,
    /// The inode number it names.
    pub inum: u64,
    /// The `OBJTYPE_*` of the target, as the entry records it.
    pub objtype: u8,
    /// The entry's key in its directory (dirhash of the name plus collision iterator).
    pub key: u64,
}

/// A piece of a file's contents as [`Pfs::read_pieces`] hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// These bytes come next.
    Data(&'a [u8]),
    /// This many zero bytes come next: no block is stored for them.
    Hole(u64),
}

/// Why a directory entry's name cannot be used as one component of a host path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadName {
    /// The name is empty.
    Empty,
    /// The name is `.` or `..`.
    Dot,
    /// The name contains `/`: it would name a path below another directory.
    Slash,
    /// The name contains a NUL byte, which no host path can hold.
    Nul,
}

impl core::fmt::Display for BadName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            BadName::Empty => "empty name",
            BadName::Dot => "name is . or ..",
            BadName::Slash => "name contains '/'",
            BadName::Nul => "name contains a NUL byte",
        })
    }
}

/// Whether `name` is safe as a single path component: HAMMER2 itself never stores such
/// names, but an image is untrusted input and a writer joining them onto a host directory
/// would otherwise be led outside it.
pub fn check_name(name: &[u8]) -> Result<(), BadName> {
    match name {
        [] => Err(BadName::Empty),
        b"." | b".." => Err(BadName::Dot),
        _ if name.contains(&b'/') => Err(BadName::Slash),
        _ if name.contains(&0) => Err(BadName::Nul),
        _ => Ok(()),
    }
}

fn name_vec(name: &[u8], at: u64) -> ReadResult<heapless::Vec<u8, NAME_MAX>> {
    heapless::Vec::from_slice(name).map_err(|_| ReadError::new(Cause::TooBig, at))
}

/// The blockset of a non-DIRECTDATA inode, on the heap: the scans that follow read the
/// device under the caller's frame (a kernel stack is small).
fn table(ino: &InodeData, at: u64) -> ReadResult<Vec<Blockref>> {
    if ino.meta.is_directdata() {
        return Err(ReadError::new(Cause::NotDir, at));
    }
    blockset_vec(ino, at)
}

/// The PFS of root inode `root`, on the heap. Not inlined: the copy it makes on the way is
/// off the stack before any further read.
#[inline(never)]
fn pfs_of(root: Box<InodeData>) -> ReadResult<Box<Pfs>> {
    boxed(Pfs { root: *root })
}

/// `value` on the heap, or [`Cause::NoMem`].
fn boxed<T>(value: T) -> ReadResult<Box<T>> {
    crate::mem::try_box(value).map_err(|_| ReadError::new(Cause::NoMem, 0))
}

impl<D: BlockDev> Volume<D> {
    /// The super-root inode (`sroot_blockset[0]` of the header in use).
    pub fn super_root(&self) -> ReadResult<InodeData> {
        self.read_inode(self.header.sroot())
    }

    /// The super-root's block table. Not inlined: the super-root inode is gone from the
    /// stack before the scans of its table read the device.
    #[inline(never)]
    fn sroot_table(&self) -> ReadResult<Vec<Blockref>> {
        let sroot = self.read_inode_box(self.header.sroot())?;
        table(&sroot, self.header.sroot().data_off)
    }

    /// Every PFS root under the super-root, in key order.
    pub fn pfs_roots(&self, f: &mut dyn FnMut(&InodeData) -> ReadResult<Flow>) -> ReadResult<()> {
        let set = self.sroot_table()?;
        self.scan_vec(set, 0, KEY_MAX, &mut |b| {
            if b.btype != BREF_TYPE_INODE {
                return Err(ReadError::new(Cause::WrongType(b.btype), b.data_off));
            }
            f(&*self.read_inode_box(b)?)
        })
    }

    /// The PFS labelled `label`: scan the super-root's keys `dirhash(label)` up to the end of
    /// its collision range for an INODE whose name is `label` (`hammer2_vfs_mount`).
    pub fn pfs(&self, label: &[u8]) -> ReadResult<Pfs> {
        self.pfs_root(label).map(|(_, root)| Pfs { root: *root })
    }

    /// [`Volume::pfs`] with the PFS root's blockref in the super-root's table (what a writer
    /// replaces).
    pub fn pfs_entry(&self, label: &[u8]) -> ReadResult<(Blockref, InodeData)> {
        self.pfs_root(label).map(|(b, root)| (b, *root))
    }

    /// [`Volume::pfs_entry`] with the root inode on the heap: what a caller that goes on
    /// reading should hold.
    pub fn pfs_entry_box(&self, label: &[u8]) -> ReadResult<(Blockref, Box<InodeData>)> {
        self.pfs_root(label)
    }

    /// [`Volume::pfs`] onto the heap: what a caller that goes on reading should hold.
    pub fn pfs_box(&self, label: &[u8]) -> ReadResult<Box<Pfs>> {
        let (_, root) = self.pfs_root(label)?;
        pfs_of(root)
    }

    /// [`Volume::pfs_entry`] with the root inode on the heap. Not inlined: its scan reads the
    /// device below a small frame.
    #[inline(never)]
    fn pfs_root(&self, label: &[u8]) -> ReadResult<(Blockref, Box<InodeData>)> {
        let set = self.sroot_table()?;
        let lo = dirhash(label);
        let mut found = None;
        self.scan_vec(set, lo, lo | DIRHASH_LOMASK, &mut |b| {
            if b.btype != BREF_TYPE_INODE {
                return Err(ReadError::new(Cause::WrongType(b.btype), b.data_off));
            }
            let ino = self.read_inode_box(b)?;
            if ino.filename() == label {
                found = Some((*b, ino));
                return Ok(Flow::Stop);
            }
            Ok(Flow::Continue)
        })?;
        let (b, root) = found.ok_or(ReadError::new(Cause::NotFound, lo))?;
        if root.meta.objtype != OBJTYPE_DIRECTORY {
            return Err(ReadError::new(Cause::NotDir, lo));
        }
        Ok((b, root))
    }
}

impl Pfs {
    /// The inode numbered `inum`: the PFS root itself, or the INODE keyed `inum` in the
    /// root's index ([`Cause::InumMismatch`] if the inode there carries another number).
    pub fn inode<D: BlockDev>(&self, vol: &Volume<D>, inum: u64) -> ReadResult<InodeData> {
        self.inode_box(vol, inum).map(|ino| *ino)
    }

    /// [`Pfs::inode`] onto the heap: what a caller that goes on reading the volume with the
    /// inode at hand should use (a kernel stack is small).
    pub fn inode_box<D: BlockDev>(&self, vol: &Volume<D>, inum: u64) -> ReadResult<Box<InodeData>> {
        if inum == self.root.meta.inum {
            return boxed(self.root);
        }
        if inum & DIRHASH_VISIBLE != 0 {
            return Err(ReadError::new(Cause::NotFound, inum));
        }
        let set = table(&self.root, inum)?;
        let mut found = None;
        vol.scan_vec(set, inum, inum, &mut |b| {
            if b.btype != BREF_TYPE_INODE || b.key != inum {
                return Err(ReadError::new(Cause::WrongType(b.btype), b.data_off));
            }
            let ino = vol.read_inode_box(b)?;
            if ino.meta.inum != inum {
                return Err(ReadError::new(Cause::InumMismatch, b.data_off));
            }
            found = Some(ino);
            Ok(Flow::Stop)
        })?;
        found.ok_or(ReadError::new(Cause::NotFound, inum))
    }

    /// Every entry of directory `dir`, in key order: its DIRENTs (the name from the check
    /// area or its verified data block) and, as HAMMER2's readdir also accepts, INODE
    /// blockrefs of the older layout (named by the inode's filename).
    pub fn readdir<D: BlockDev>(
        &self,
        vol: &Volume<D>,
        dir: &InodeData,
        f: &mut dyn FnMut(&Entry) -> ReadResult<Flow>,
    ) -> ReadResult<()> {
        self.dir_range(vol, dir, DIRHASH_VISIBLE, KEY_MAX, f)
    }

    /// The entry named `name` in directory `dir`, looked up in its collision range
    /// `dirhash(name) ..= dirhash(name) | 0x7FFF` (never assuming the first key).
    pub fn lookup<D: BlockDev>(
        &self,
        vol: &Volume<D>,
        dir: &InodeData,
        name: &[u8],
    ) -> ReadResult<Entry> {
        let lo = dirhash(name);
        let mut found = None;
        self.dir_range(vol, dir, lo, lo | DIRHASH_LOMASK, &mut |e| {
            if e.name == name {
                found = Some(e.clone());
                return Ok(Flow::Stop);
            }
            Ok(Flow::Continue)
        })?;
        found.ok_or(ReadError::new(Cause::NotFound, lo))
    }

    /// The inode at `path` (components separated by `/`, empty ones ignored) from the root.
    pub fn resolve<D: BlockDev>(&self, vol: &Volume<D>, path: &[u8]) -> ReadResult<InodeData> {
        self.resolve_box(vol, path).map(|ino| *ino)
    }

    /// [`Pfs::resolve`] onto the heap: no inode of the walk sits on the stack under its reads.
    pub fn resolve_box<D: BlockDev>(
        &self,
        vol: &Volume<D>,
        path: &[u8],
    ) -> ReadResult<Box<InodeData>> {
        let mut ino = boxed(self.root)?;
        for comp in path.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
            let inum = self.lookup(vol, &ino, comp)?.inum;
            ino = self.inode_box(vol, inum)?;
        }
        Ok(ino)
    }

    fn dir_range<D: BlockDev>(
        &self,
        vol: &Volume<D>,
        dir: &InodeData,
        lo: u64,
        hi: u64,
        f: &mut dyn FnMut(&Entry) -> ReadResult<Flow>,
    ) -> ReadResult<()> {
        if dir.meta.objtype != OBJTYPE_DIRECTORY {
            return Err(ReadError::new(Cause::NotDir, dir.meta.inum));
        }
        let set = table(dir, dir.meta.inum)?;
        vol.scan_vec(set, lo, hi, &mut |b| {
            let e = match b.btype {
                BREF_TYPE_DIRENT => {
                    let media = |e| ReadError::new(Cause::Media(e), b.data_off);
                    let head = DirentHead::decode(b).map_err(media)?;
                    let block = if head.name_is_embedded() {
                        None
                    } else {
                        Some(vol.read_block(b)?)
                    };
                    Entry {
                        name: name_vec(head.name(b, block.as_deref()).map_err(media)?, b.key)?,
                        inum: head.inum,
                        objtype: head.objtype,
                        key: b.key,
                    }
                }
                BREF_TYPE_INODE => {
                    let ino = vol.read_inode_box(b)?;
                    Entry {
                        name: name_vec(ino.filename(), b.key)?,
                        inum: ino.meta.inum,
                        objtype: ino.meta.objtype,
                        key: b.key,
                    }
                }
                t => return Err(ReadError::new(Cause::WrongType(t), b.data_off)),
            };
            f(&e)
        })
    }

    /// The contents of file or symlink `ino`, exactly `meta.size` bytes, handed to `sink` in
    /// order in pieces of at most 64 KiB: DIRECTDATA bytes, or each 64 KiB logical block
    /// (DATA blocks decompressed and verified; missing blocks and bytes past a short block
    /// are zeros, as HAMMER2 reads holes).
    pub fn read_file<D: BlockDev>(
        &self,
        vol: &Volume<D>,
        ino: &InodeData,
        sink: &mut dyn FnMut(&[u8]) -> ReadResult<()>,
    ) -> ReadResult<()> {
        let mut zero = None;
        self.read_pieces(vol, ino, &mut |piece| match piece {
            Piece::Data(bytes) => sink(bytes),
            Piece::Hole(mut len) => {
                // Allocated on the first hole only: most files have none.
                let buf = match zero.take() {
                    Some(buf) => buf,
                    None => zeroed(DATA_BLOCK_BYTES)?,
                };
                while len > 0 {
                    let n = len.min(buf.len() as u64) as usize;
                    sink(buf.get(..n).unwrap_or(&[]))?;
                    len -= n as u64;
                    vol.dev.yield_point();
                }
                zero = Some(buf);
                Ok(())
            }
        })
    }

    /// [`Pfs::read_file`] with each missing block run reported as one [`Piece::Hole`] instead
    /// of its zeros, so that a caller writing the file out can leave it sparse: a hole costs
    /// nothing however large `meta.size` claims it is. The pieces cover exactly `meta.size`
    /// bytes in order; bytes past a short block still come as data.
    pub fn read_pieces<D: BlockDev>(
        &self,
        vol: &Volume<D>,
        ino: &InodeData,
        sink: &mut dyn FnMut(Piece<'_>) -> ReadResult<()>,
    ) -> ReadResult<()> {
        let t = ino.meta.objtype;
        if t != OBJTYPE_REGFILE && t != OBJTYPE_SOFTLINK {
            return Err(ReadError::new(Cause::NotFile, ino.meta.inum));
        }
        if ino.meta.is_directdata() {
            return sink(Piece::Data(ino.embedded_file()));
        }
        let size = ino.meta.size;
        if size == 0 {
            return Ok(());
        }
        let set = table(ino, ino.meta.inum)?;
        let mut buf = zeroed(DATA_BLOCK_BYTES)?;
        let mut pos = 0u64;
        vol.scan_vec(set, 0, size - 1, &mut |b| {
            // HAMMER2 gives every file block a 64 KiB logical range (`hammer2_calc_logical`);
            // another width would make the hole accounting below ambiguous, so it is refused.
            if b.btype != BREF_TYPE_DATA || b.keybits != DATA_BLOCK_RADIX {
                return Err(ReadError::new(Cause::WrongType(b.btype), b.data_off));
            }
            if pos < b.key {
                sink(Piece::Hole(b.key - pos))?;
            }
            vol.read_data(b, &mut buf)?;
            let n = (size - b.key).min(DATA_BLOCK_BYTES as u64) as usize;
            sink(Piece::Data(buf.get(..n).unwrap_or(&[])))?;
            pos = b.key + n as u64;
            Ok(Flow::Continue)
        })?;
        if pos < size {
            sink(Piece::Hole(size - pos))?;
        }
        Ok(())
    }

    /// The target of symlink `ino` ([`Cause::TooBig`] beyond [`SYMLINK_MAX`] bytes).
    pub fn readlink<D: BlockDev>(&self, vol: &Volume<D>, ino: &InodeData) -> ReadResult<Vec<u8>> {
        if ino.meta.objtype != OBJTYPE_SOFTLINK {
            return Err(ReadError::new(Cause::NotFile, ino.meta.inum));
        }
        if ino.meta.size > SYMLINK_MAX as u64 {
            return Err(ReadError::new(Cause::TooBig, ino.meta.inum));
        }
        let mut out = Vec::new();
        self.read_file(vol, ino, &mut |piece| {
            out.try_reserve(piece.len())
                .map_err(|_| ReadError::new(Cause::NoMem, 0))?;
            out.extend_from_slice(piece);
            Ok(())
        })?;
        Ok(out)
    }
}
