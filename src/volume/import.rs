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

/// The highest inode number: keys from 2^63 up in a PFS root's table are its directory
/// entries.
const INUM_MAX: u64 = (1 << 63) - 1;

/// An import in progress into one PFS.
pub struct Import<'v, D: BlockDev> {
    txn: Txn<'v, D>,
    pfs_bref: Blockref,
    root: InodeData,
    index: Vec<Blockref>,
    next_inum: u64,
}

/// The entries of one directory being built, in the order they were added.
#[derive(Debug, Default)]
pub struct DirEntries {
    entries: Vec<Blockref>,
}

impl<'v, D: BlockDev> Import<'v, D> {
    /// Begin replacing the contents of PFS `label` of `vol`. [`Error::NotFound`] when there
    /// is no such PFS; the errors of [`Txn::begin`] (among them [`Error::Busy`]: `vol` is
    /// stale, reopen it after each commit).
    pub fn begin(vol: &'v Volume<D>, label: &[u8]) -> Result<Import<'v, D>> {
        // First, so that a volume changed since it was opened is refused before its
        // header is trusted.
        let txn = Txn::begin(vol)?;
        let (pfs_bref, root) = vol.pfs_entry(label).map_err(read_err)?;
        let next_inum = root.meta.pfs_inum.saturating_add(1).max(INODE_START);
        // The PFS's own modify_tid counter goes on from its root's, when that is ahead.
        let mut txn = txn;
        txn.raise_modify_tid(pfs_bref.modify_tid.checked_add(1).ok_or(Error::Invalid)?);
        Ok(Import {
            txn,
            pfs_bref,
            root,
            index: Vec::new(),
            next_inum,
        })
    }

    /// A fresh inode number. [`Error::Invalid`] once they reach 2^63 (the PFS root's
    /// `pfs_inum` on the media may be anything): inode keys live in the lower half of the
    /// PFS root's table, directory entries in the upper.
    pub fn new_inum(&mut self) -> Result<u64> {
        let n = self.next_inum;
        if n > INUM_MAX {
            return Err(Error::Invalid);
        }
        self.next_inum = n + 1;
        Ok(n)
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

    /// Add a regular file or symlink: `meta` (its inum from [`Import::new_inum`];
    /// [`Error::Invalid`] for one outside the PFS's range) with
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
        let set = self.txn.table(&entries.keyed()?)?;
        ino.set_blockset(&set);
        self.push_inode(&ino)
    }

    /// Add an entry `name` naming `inum` of `objtype` to `dir`. Its key is
    /// `dirhash(name) + 1`, or the next free one in its collision range in the order the
    /// entries were added (`hammer2_dirent_create`); keys are given when the directory is
    /// written ([`Import::dir`], [`Import::commit`]), which fails with [`Error::NoSpace`]
    /// when a range is full.
    pub fn entry(
        &mut self,
        dir: &mut DirEntries,
        name: &[u8],
        inum: u64,
        objtype: u8,
    ) -> Result<()> {
        // The hash for now (its low bits are zero): the key comes from `DirEntries::keyed`.
        let b = self.txn.dirent(dirhash(name), inum, objtype, name)?;
        dir.entries.try_reserve(1)?;
        dir.entries.push(b);
        Ok(())
    }

    fn push_inode(&mut self, ino: &InodeData) -> Result<()> {
        if !(INODE_START..=INUM_MAX).contains(&ino.meta.inum) {
            return Err(Error::Invalid);
        }
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
        let entries = entries.keyed()?;
        let mut items = Vec::new();
        items.try_reserve_exact(self.index.len() + entries.len())?;
        items.extend_from_slice(&self.index);
        items.extend_from_slice(&entries);
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
        let pfs_bref = self.txn.write_block(fresh(self.pfs_bref), &raw)?;

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
        let mut new_sroot = self.txn.write_block(fresh(sroot_bref), &raw)?;
        // The super-root's own counter goes on, and it is as new as the newest PFS below
        // it (HAMMER2-MEDIA §4).
        let own = sroot_bref.modify_tid.checked_add(1).ok_or(Error::Invalid)?;
        new_sroot.modify_tid = brefs
            .iter()
            .map(|b| b.modify_tid)
            .fold(self.txn.tid().max(own), u64::max);
        self.txn.commit(new_sroot).map(|h| *h)
    }
}

/// `b` for a rewritten block: the advisory statistics (`embed.stats`, `leaf_count`,
/// HAMMER2-MEDIA §4) zeroed, as every blockref this writer makes has them; the old ones
/// counted a tree that is gone.
///
/// DEVIATION: the kernel keeps these up to date as children come and go; nothing reads
/// or validates them, so this writer leaves them 0 (as newfs leaves the super-root's)
/// rather than summing a whole tree per commit.
fn fresh(mut b: Blockref) -> Blockref {
    b.embed = [0; 16];
    b.leaf_count = 0;
    b
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

    /// The entries sorted by key, each given its key: its name's hash + 1, the next in the
    /// hash's collision range for each earlier entry of the same hash. Sorted once (an
    /// insertion per entry would be quadratic in a big directory).
    fn keyed(&self) -> Result<Vec<Blockref>> {
        let n = self.entries.len();
        let mut order: Vec<(u64, usize)> = Vec::new();
        order.try_reserve_exact(n)?;
        order.extend(self.entries.iter().enumerate().map(|(i, b)| (b.key, i)));
        order.sort_unstable();
        let mut out: Vec<Blockref> = Vec::new();
        out.try_reserve_exact(n)?;
        for (hash, i) in order {
            let key = match out.last() {
                Some(prev) if prev.key & !DIRHASH_LOMASK == hash => {
                    if prev.key == hash | DIRHASH_LOMASK {
                        return Err(Error::NoSpace);
                    }
                    prev.key + 1
                }
                _ => hash + 1,
            };
            let mut b = self.entries[i];
            b.key = key;
            out.push(b);
        }
        Ok(out)
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
