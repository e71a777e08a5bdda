//! Replace the contents of one PFS in one transaction, in today's index layout
//! (HAMMER2-FACTS §4a, HAMMER2-MEDIA §5–§8): every inode of the PFS is an INODE blockref
//! keyed by its inum in the PFS root's block table (keys below 2^63), every directory's
//! entries are DIRENT blockrefs keyed by the dirhash of their name (the PFS root's own in
//! the upper half of its table). The host hands in inodes children first (a directory's
//! entries must be known before its inode is written), then [`Import::commit`] writes the
//! new PFS root, the super-root and the volume header.

use alloc::vec::Vec;

use super::scan::Flow;
use super::txn::{read_err, Txn};
use super::{BlockDev, Volume};
use crate::media::{
    dirhash, Blockref, InodeData, InodeMeta, VolumeHeader, DATA_BLOCK_BYTES, DIRHASH_LOMASK,
    EMBEDDED_BYTES, INODE_START, KEY_MAX,
};
use crate::{Error, Result};

/// An import in progress into one PFS.
pub struct Import<'v, D: BlockDev> {
    txn: Txn<'v, D>,
    pfs_bref: Blockref,
    root: InodeData,
    index: Vec<Blockref>,
    next_inum: u64,
}

/// The entries of one directory being built, kept sorted by key.
#[derive(Debug, Default)]
pub struct DirEntries {
    entries: Vec<Blockref>,
}

impl<'v, D: BlockDev> Import<'v, D> {
    /// Begin replacing the contents of PFS `label` of `vol`. [`Error::NotFound`] when there
    /// is no such PFS.
    pub fn begin(vol: &'v Volume<D>, label: &[u8]) -> Result<Import<'v, D>> {
        let (pfs_bref, root) = vol.pfs_entry(label).map_err(read_err)?;
        let next_inum = root.meta.pfs_inum.saturating_add(1).max(INODE_START);
        Ok(Import {
            txn: Txn::begin(vol)?,
            pfs_bref,
            root,
            index: Vec::new(),
            next_inum,
        })
    }

    /// A fresh inode number.
    pub fn new_inum(&mut self) -> u64 {
        let n = self.next_inum;
        self.next_inum += 1;
        n
    }

    /// The transaction (its id, bytes written).
    pub fn txn(&self) -> &Txn<'v, D> {
        &self.txn
    }

    /// Bytes of blocks written so far.
    pub fn written(&self) -> u64 {
        self.txn.written
    }

    /// Write a file's (or symlink's) logical block at byte offset `off` (64 KiB aligned)
    /// holding `bytes` (the file's bytes there, up to 64 KiB); a block of zeros is a hole.
    /// Push the result onto the file's table.
    pub fn data(&mut self, table: &mut Vec<Blockref>, off: u64, bytes: &[u8]) -> Result<()> {
        if off % DATA_BLOCK_BYTES as u64 != 0 {
            return Err(Error::Invalid);
        }
        if let Some(b) = self.txn.data(off, bytes)? {
            table.try_reserve(1)?;
            table.push(b);
        }
        Ok(())
    }

    /// Add a regular file or symlink: `meta` (its inum from [`Import::new_inum`]) with
    /// `small` as its contents when they fit in the inode (DIRECTDATA, at most 512 bytes),
    /// else the data blocks of `table`.
    pub fn file(
        &mut self,
        meta: InodeMeta,
        small: Option<&[u8]>,
        table: &[Blockref],
    ) -> Result<()> {
        let mut ino = index_inode(meta)?;
        match small {
            Some(bytes) if bytes.len() <= EMBEDDED_BYTES => ino.set_embedded_file(bytes)?,
            Some(_) => return Err(Error::TooBig),
            None => {
                let set = self.txn.table(table)?;
                ino.set_blockset(&set);
            }
        }
        self.push_inode(&ino)
    }

    /// Add a directory (not the PFS root): `meta` and its `entries`.
    pub fn dir(&mut self, meta: InodeMeta, entries: &DirEntries) -> Result<()> {
        let mut ino = index_inode(meta)?;
        let set = self.txn.table(&entries.entries)?;
        ino.set_blockset(&set);
        self.push_inode(&ino)
    }

    /// Add an entry `name` naming `inum` of `objtype` to `dir`: key `dirhash(name) + 1`, or
    /// the next free one in its collision range (`hammer2_dirent_create`);
    /// [`Error::NoSpace`] when that range is full.
    pub fn entry(
        &mut self,
        dir: &mut DirEntries,
        name: &[u8],
        inum: u64,
        objtype: u8,
    ) -> Result<()> {
        let hash = dirhash(name);
        let mut key = hash + 1;
        let mut at = dir.entries.partition_point(|b| b.key < key);
        while dir.entries.get(at).is_some_and(|b| b.key == key) {
            if key == hash | DIRHASH_LOMASK {
                return Err(Error::NoSpace);
            }
            key += 1;
            at += 1;
        }
        let b = self.txn.dirent(key, inum, objtype, name)?;
        dir.entries.try_reserve(1)?;
        dir.entries.insert(at, b);
        Ok(())
    }

    fn push_inode(&mut self, ino: &InodeData) -> Result<()> {
        let b = self.txn.inode(ino.meta.inum, ino)?;
        self.index.try_reserve(1)?;
        self.index.push(b);
        Ok(())
    }

    /// Finish: the PFS root gets `root_meta`'s mode, owner and times, the index of every
    /// inode added and `entries` as its own directory; then the super-root and the volume
    /// header are written. Returns the committed header.
    pub fn commit(mut self, root_meta: &InodeMeta, entries: &DirEntries) -> Result<VolumeHeader> {
        let vol = self.txn.volume();
        self.index.sort_unstable_by_key(|b| b.key);
        if self.index.windows(2).any(|w| w[0].key == w[1].key) {
            return Err(Error::Exists);
        }
        let mut items = Vec::new();
        items.try_reserve_exact(self.index.len() + entries.entries.len())?;
        items.extend_from_slice(&self.index);
        items.extend_from_slice(&entries.entries);
        let set = self.txn.table(&items)?;

        let mut root = self.root;
        let m = &mut root.meta;
        m.mode = root_meta.mode;
        m.uid = root_meta.uid;
        m.gid = root_meta.gid;
        m.ctime = root_meta.ctime;
        m.mtime = root_meta.mtime;
        m.btime = root_meta.btime;
        m.uflags = root_meta.uflags;
        let last = self.index.last().map_or(0, |b| b.key);
        m.pfs_inum = m.pfs_inum.max(last);
        m.size = 0;
        m.op_flags &= !crate::media::OpFlags::DIRECTDATA.bits();
        root.set_blockset(&set);
        let raw = root.encode();
        let pfs_bref = self.txn.write_block(self.pfs_bref, &raw)?;

        // The super-root's entries, this PFS's replaced.
        let sroot_bref = *vol.header().sroot();
        let mut sroot = vol.super_root().map_err(read_err)?;
        let mut brefs = Vec::new();
        vol.scan(&sroot.blockset()?, 0, KEY_MAX, &mut |b| {
            brefs
                .try_reserve(1)
                .map_err(|_| super::ReadError::new(super::Cause::NoMem, 0))?;
            brefs.push(*b);
            Ok(Flow::Continue)
        })
        .map_err(read_err)?;
        let slot = brefs
            .iter_mut()
            .find(|b| b.key == pfs_bref.key && b.data_off == self.pfs_bref.data_off)
            .ok_or(Error::NotFound)?;
        *slot = pfs_bref;
        let sset = self.txn.table(&brefs)?;
        sroot.set_blockset(&sset);
        let raw = sroot.encode();
        let new_sroot = self.txn.write_block(sroot_bref, &raw)?;
        self.txn.commit(new_sroot)
    }
}

/// An index inode for `meta`: named by its inum in hex as the kernel names them
/// (`hammer2_xop_setname_inum`), `name_key` its inum.
fn index_inode(mut meta: InodeMeta) -> Result<InodeData> {
    meta.name_key = meta.inum;
    let mut name = [0u8; 18];
    name[0] = b'0';
    name[1] = b'x';
    for (i, c) in name[2..].iter_mut().enumerate() {
        let nib = (meta.inum >> (60 - 4 * i)) & 0xF;
        *c = b"0123456789abcdef"[nib as usize];
    }
    InodeData::new(meta, &name)
}

impl DirEntries {
    /// No entries yet.
    pub fn new() -> DirEntries {
        DirEntries::default()
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
