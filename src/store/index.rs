//! The frontend in today's HAMMER2 layout ([`Layout::Index`], HAMMER2-FACTS §4a).
//!
//! Every inode of the PFS is an INODE chain in the PFS root's block table keyed by its inode
//! number (keybits 0, below 2^63); a directory holds DIRENT chains keyed by `dirhash(name)` plus a
//! collision iterator, each naming an inode number; the PFS root's own entries share its table
//! with the index (their keys have bit 63 set). A hardlink is a second DIRENT naming the same
//! inode, counted in its `nlinks`.
//!
//! A change holds the PFS root exclusively for its whole length (every inode is its child), and
//! below it at most one chain at a time: the directory whose entries change, then the inode that
//! changes. Every changed chain, and every chain above it, is stamped with the transaction's TID.

use alloc::vec::Vec;

use super::frontend::components;
use super::{Body, ChainGuard, ChainId, Layout, Store, TableWalk};
use crate::host::LockMode;
use crate::media::{self, dirhash, Blockref, DirentHead, InodeData, InodeMeta, DIRHASH_LOMASK};
use crate::mem::{try_box, try_push};
use crate::{Error, Result};

/// Bytes of an index inode's filename: `0x` and 16 hex digits of its inode number.
const INUM_NAME_LEN: usize = 18;

/// The filename HAMMER2 gives an index inode (`hammer2_xop_setname_inum`: `"0x%016jx"`).
fn inum_name(inum: u64) -> [u8; INUM_NAME_LEN] {
    let mut s = [0u8; INUM_NAME_LEN];
    s[0] = b'0';
    s[1] = b'x';
    for (i, d) in s[2..].iter_mut().enumerate() {
        let nib = (inum >> (60 - 4 * i)) & 0xF;
        *d = b"0123456789abcdef"[nib as usize];
    }
    s
}

/// A DIRENT chain for `name` at `key`: the head in `embed`, a name of at most 64 bytes in the
/// check area (no data block), a longer one at the start of a 1 KiB data block
/// (`hammer2_xop_inode_mkdirent`).
fn dirent_chain(key: u64, head: DirentHead, name: &[u8], tid: u64) -> Result<(Blockref, Body)> {
    let (mut b, body) = if head.name_is_embedded() {
        let b = media::dirent::short_dirent(key, head.inum, head.objtype, name)
            .map_err(|_| Error::Invalid)?;
        (b, Body::Data(Vec::new()))
    } else {
        let mut b = Blockref::new(media::BREF_TYPE_DIRENT, key, 0);
        b.embed = head.encode();
        b.set_size_radix(media::RADIX_MIN);
        let mut block = Vec::new();
        block.try_reserve_exact(b.data_bytes())?;
        block.extend_from_slice(name);
        block.resize(b.data_bytes(), 0);
        (b, Body::Data(block))
    };
    b.modify_tid = tid;
    Ok((b, body))
}

/// Whether `b` is a DIRENT naming inode `inum`.
fn dirent_names(b: &Blockref, inum: u64) -> bool {
    b.btype == media::BREF_TYPE_DIRENT && DirentHead::decode(b).is_ok_and(|h| h.inum == inum)
}

impl Store {
    /// This store's layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The inode numbered `inum` in the PFS root's index ([`Layout::Index`]).
    pub fn index_inode(&self, inum: u64) -> Result<Option<ChainId>> {
        if inum & media::DIRHASH_VISIBLE != 0 {
            return Ok(None);
        }
        match self.lookup(self.root, inum, inum)? {
            Some((id, b)) if b.key == inum && b.btype == media::BREF_TYPE_INODE => Ok(Some(id)),
            _ => Ok(None),
        }
    }

    /// The DIRENT of directory `dir` named `name` and its head: the name's whole collision
    /// range is scanned comparing names (`hammer2_chain_dirent_test`). Entries whose head does
    /// not decode name nothing.
    pub fn find_dirent(
        &self,
        dir: ChainId,
        name: &[u8],
    ) -> Result<Option<(ChainId, Blockref, DirentHead)>> {
        let h = dirhash(name);
        let end = h | DIRHASH_LOMASK;
        let mut entries = TableWalk::new(dir, h, end);
        while let Some((id, b)) = entries.step(self)? {
            if let Ok(head) = DirentHead::decode(&b) {
                if usize::from(head.namlen) == name.len() && self.dirent_name_is(id, &b, name)? {
                    return Ok(Some((id, b, head)));
                }
            }
        }
        Ok(None)
    }

    /// Whether DIRENT chain `id` (header `b`) carries `name`.
    fn dirent_name_is(&self, id: ChainId, b: &Blockref, name: &[u8]) -> Result<bool> {
        let head = DirentHead::decode(b).map_err(|_| Error::Invalid)?;
        if head.name_is_embedded() {
            return Ok(head.name(b, None).ok() == Some(name));
        }
        let a = self.arena.read();
        match &a.get(id)?.body {
            Body::Data(block) => Ok(head.name(b, Some(block)).ok() == Some(name)),
            Body::Inode(_) => Ok(false),
        }
    }

    /// The heads of every DIRENT in directory `dir`.
    pub fn dirents(&self, dir: ChainId) -> Result<Vec<DirentHead>> {
        let mut out = Vec::new();
        let mut entries = TableWalk::new(dir, 0, media::KEY_MAX);
        while let Some((_, b)) = entries.step(self)? {
            self.host.relax();
            if let Ok(head) = DirentHead::decode(&b) {
                try_push(&mut out, head)?;
            }
        }
        Ok(out)
    }

    /// Resolve `path` through DIRENTs and the index, without chain locks.
    pub(super) fn index_resolve(&self, path: &[u8]) -> Result<ChainId> {
        let mut cur = self.root;
        for c in components(path)? {
            cur = self.index_step(cur, c)?;
        }
        Ok(cur)
    }

    /// The inode named `name` in directory `dir`.
    fn index_step(&self, dir: ChainId, name: &[u8]) -> Result<ChainId> {
        if !self.is_directory(dir)? {
            return Err(Error::NotDir);
        }
        let (_, _, head) = self.find_dirent(dir, name)?.ok_or(Error::NotFound)?;
        self.index_inode(head.inum)?.ok_or(Error::NotFound)
    }

    /// The inode number this node would hand out next: one past the PFS root's `pfs_inum`, and
    /// never below [`media::INODE_START`] (`hammer2_trans_newinum`).
    pub fn next_inum(&self) -> Result<u64> {
        let last = self.meta(self.root)?.pfs_inum;
        Ok(last.saturating_add(1).max(media::INODE_START))
    }

    /// Lock the PFS root exclusively and find the directory holding `path`'s last component.
    /// Returns the root's guard, the directory and the last component (None for `/`).
    fn index_parent<'p>(
        &self,
        path: &'p [u8],
    ) -> Result<(ChainGuard<'_>, ChainId, Option<&'p [u8]>)> {
        let comps = components(path)?;
        let root = self.lock_root(LockMode::Exclusive);
        let mut dir = self.root;
        let last = match comps.split_last() {
            Some((last, dirs)) => {
                for c in dirs {
                    dir = self.index_step(dir, c)?;
                }
                if !self.is_directory(dir)? {
                    return Err(Error::NotDir);
                }
                Some(*last)
            }
            None => None,
        };
        // Under the root's lock: whoever locks a chain after us sees the new generation.
        self.gen.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
        Ok((root, dir, last))
    }

    /// Run `f` on directory `dir` held exclusively (the root's guard itself when `dir` is the
    /// root), then stamp `dir` with `tid`.
    fn in_dir<R>(
        &self,
        root: &ChainGuard<'_>,
        dir: ChainId,
        tid: u64,
        f: impl FnOnce(&ChainGuard<'_>) -> Result<R>,
    ) -> Result<R> {
        if dir == root.id() {
            let r = f(root)?;
            self.set_modify_tid(root, tid)?;
            return Ok(r);
        }
        let g = self.lock_child(root, dir, LockMode::Exclusive)?;
        let r = f(&g)?;
        self.set_modify_tid(&g, tid)?;
        Ok(r)
    }

    /// The key `name` gets in `dir`, as `hammer2_dirent_create` picks it: from the name's hash,
    /// step over the entries of its collision range while they sit at consecutive keys; the
    /// first gap is the key, and a run that reaches the range's last entry steps once more (so
    /// a fresh name gets `hash + 1`, and a name whose `hash + 1` is taken gets `hash`). `TooBig`
    /// (HAMMER2's ENOSPC) past the collision bits.
    fn free_dirent_key(&self, dir: ChainId, name: &[u8]) -> Result<u64> {
        let h = dirhash(name);
        let end = h | DIRHASH_LOMASK;
        let mut k = h;
        let mut entries = TableWalk::new(dir, h, end);
        loop {
            match entries.step(self)? {
                Some((_, b)) if b.key == k => {
                    k = k.checked_add(1).ok_or(Error::TooBig)?;
                }
                Some(_) => break,
                None => {
                    k = k.checked_add(1).ok_or(Error::TooBig)?;
                    break;
                }
            }
        }
        if (h ^ k) & !DIRHASH_LOMASK != 0 {
            return Err(Error::TooBig);
        }
        Ok(k)
    }

    /// Add the entry `name` -> (`inum`, `objtype`) to `dir`, stamped `tid`. The caller looked
    /// the name up without `dir`'s lock (only the root's is held), and a synchronizer holding
    /// `dir` inserts entries under that lock alone, so the name is looked up again here: an
    /// entry that arrived meanwhile naming `inum` is the one wanted when `same_ok` (a create
    /// racing the entry's copy from the focus), else the name is taken (`Exists`).
    fn add_dirent(
        &self,
        root: &ChainGuard<'_>,
        dir: ChainId,
        name: &[u8],
        (inum, objtype): (u64, u8),
        same_ok: bool,
        tid: u64,
    ) -> Result<()> {
        let head = DirentHead {
            inum,
            namlen: u16::try_from(name.len()).map_err(|_| Error::Invalid)?,
            objtype,
        };
        self.in_dir(root, dir, tid, |dg| {
            if let Some((_, _, h)) = self.find_dirent(dir, name)? {
                return match same_ok && h.inum == inum {
                    true => Ok(()),
                    false => Err(Error::Exists),
                };
            }
            let key = self.free_dirent_key(dir, name)?;
            let (bref, body) = dirent_chain(key, head, name, tid)?;
            self.insert(dg, bref, body).map(|_| ())
        })
    }

    /// Create index inode `inum` of type `objtype` whose nominal parent is `dir`, and record
    /// `inum` as handed out in the PFS root's `pfs_inum` (`hammer2_inode_create_normal`).
    fn new_index_inode(
        &self,
        root: &ChainGuard<'_>,
        dir: ChainId,
        objtype: u8,
        mode: u32,
        inum: u64,
        tid: u64,
    ) -> Result<ChainId> {
        if !(media::INODE_START..media::DIRHASH_VISIBLE).contains(&inum) {
            return Err(Error::Invalid);
        }
        if self.index_inode(inum)?.is_some() {
            return Err(Error::Exists);
        }
        let mut ip = try_box(InodeData::default())?;
        ip.meta = InodeMeta {
            version: media::INODE_VERSION_ONE,
            objtype,
            mode,
            inum,
            nlinks: 1,
            iparent: self.meta(dir)?.inum,
            name_key: inum,
            name_len: INUM_NAME_LEN as u16,
            comp_algo: 0,
            check_algo: media::CHECK_DEFAULT,
            ctime: tid,
            mtime: tid,
            ..InodeMeta::default()
        };
        ip.filename[..INUM_NAME_LEN].copy_from_slice(&inum_name(inum));
        let mut bref = Blockref::new(media::BREF_TYPE_INODE, inum, 0);
        bref.set_size_radix(media::INODE_RADIX);
        bref.modify_tid = tid;
        let id = self.insert(root, bref, Body::Inode(ip))?;
        self.modify(root, |_, body| {
            let Body::Inode(rp) = body else {
                return Err(Error::Invalid);
            };
            rp.meta.pfs_inum = rp.meta.pfs_inum.max(inum);
            Ok(())
        })?;
        Ok(id)
    }

    /// Whether any DIRENT of this PFS names inode `inum`: a walk of the whole namespace (one
    /// scheduling point per chain), for the rare create whose inode some node already holds.
    pub fn index_is_named(&self, inum: u64) -> Result<bool> {
        Ok(self.count_names(inum, 1)? > 0)
    }

    /// How many DIRENTs of this PFS name inode `inum`, counted up to `limit`: the PFS root's
    /// entries and those of every directory in the index. A walk of the whole namespace (one
    /// scheduling point per chain), for the rare create that finds its inode already indexed.
    /// Without the root's lock (the cluster frontend's question) a synchronizer may free a
    /// directory mid-walk: its entries count as gone.
    fn count_names(&self, inum: u64, limit: u64) -> Result<u64> {
        let mut count = 0;
        let mut index = TableWalk::new(self.root, 0, media::KEY_MAX);
        while let Some((id, b)) = index.step(self)? {
            if count >= limit {
                break;
            }
            self.host.relax();
            if dirent_names(&b, inum) {
                count += 1;
            } else if b.btype == media::BREF_TYPE_INODE {
                match self.dir_entries_naming(id, inum) {
                    Ok(n) => count += n,
                    Err(Error::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(count)
    }

    /// How many entries of index inode `id` name `inum` (none unless it is a directory).
    fn dir_entries_naming(&self, id: ChainId, inum: u64) -> Result<u64> {
        if !self.is_directory(id)? {
            return Ok(0);
        }
        let mut count = 0;
        let mut entries = TableWalk::new(id, 0, media::KEY_MAX);
        while let Some((_, e)) = entries.step(self)? {
            self.host.relax();
            count += u64::from(dirent_names(&e, inum));
        }
        Ok(count)
    }

    /// Create inode `inum` and its entry `name` in `dir`; the inode goes again if the entry
    /// cannot be made, so a failure leaves nothing behind.
    ///
    /// DEVIATION (test clusters): an inode `inum` of type `objtype` already in the index is
    /// named, not created again, when its `nlinks` counts more names than entries of this node
    /// hold. HAMMER2's create reports EEXIST on such a node and its collector decides by the
    /// other nodes' answers; a test cluster applies a change to each node of a set, and a
    /// node's synchronizer inserts an inode into the index before the entries naming it (the
    /// index comes first in the PFS root's table, an entry when its directory is
    /// synchronized), so a change racing it finds the inode without this name. The inode came
    /// from the focus, whose `nlinks` counts the name already. An inode whose every counted
    /// name is here already is another file: naming it again would leave `nlinks` one short
    /// (a later `rm` of one name would destroy an inode still named), so that is `Exists`.
    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        root: &ChainGuard<'_>,
        dir: ChainId,
        name: &[u8],
        objtype: u8,
        mode: u32,
        inum: u64,
        tid: u64,
    ) -> Result<ChainId> {
        if let Some(id) = self.index_inode(inum)? {
            let m = self.meta(id)?;
            if m.objtype != objtype {
                return Err(Error::Exists);
            }
            // An entry `name` the synchronizer made since the caller's lookup is this name.
            let named_here =
                matches!(self.find_dirent(dir, name)?, Some((_, _, h)) if h.inum == inum);
            if !named_here && self.count_names(inum, m.nlinks)? >= m.nlinks {
                return Err(Error::Exists);
            }
            self.add_dirent(root, dir, name, (inum, objtype), true, tid)?;
            return Ok(id);
        }
        let id = self.new_index_inode(root, dir, objtype, mode, inum, tid)?;
        if let Err(e) = self.add_dirent(root, dir, name, (inum, objtype), true, tid) {
            let g = self.lock_child(root, id, LockMode::Exclusive)?;
            self.delete(root, g)?;
            return Err(e);
        }
        Ok(id)
    }

    /// [`Store::mkdir`] in this layout; `inum` as for [`Store::mkdir_as`].
    pub(super) fn index_mkdir(&self, path: &[u8], tid: u64, inum: Option<u64>) -> Result<()> {
        let (root, dir, last) = self.index_parent(path)?;
        let name = last.ok_or(Error::Exists)?;
        if self.find_dirent(dir, name)?.is_some() {
            return Err(Error::Exists);
        }
        let inum = match inum {
            Some(n) => n,
            None => self.next_inum()?,
        };
        self.create(&root, dir, name, media::OBJTYPE_DIRECTORY, 0o755, inum, tid)?;
        self.set_modify_tid(&root, tid)
    }

    /// [`Store::write`] in this layout; `inum` as for [`Store::write_as`].
    pub(super) fn index_write(
        &self,
        path: &[u8],
        data: &[u8],
        tid: u64,
        inum: Option<u64>,
    ) -> Result<()> {
        let (root, dir, last) = self.index_parent(path)?;
        let name = last.ok_or(Error::IsDir)?;
        let id = match self.find_dirent(dir, name)? {
            Some((_, _, head)) => {
                let found = self.index_inode(head.inum)?;
                let objtype = match found {
                    Some(id) => self.meta(id)?.objtype,
                    None => head.objtype,
                };
                match (found, objtype) {
                    (Some(id), media::OBJTYPE_REGFILE) => id,
                    // DEVIATION (test clusters): an entry naming an inode the index lacks is a
                    // synchronizer's pass half done (an entry comes with its directory's
                    // turn, the inode with the index's, in either order). The write makes the
                    // inode under the entry's number, as `create` names an inode that came
                    // first; the synchronizer then takes it as a key already present.
                    (None, media::OBJTYPE_REGFILE) => self.new_index_inode(
                        &root,
                        dir,
                        media::OBJTYPE_REGFILE,
                        0o644,
                        head.inum,
                        tid,
                    )?,
                    (_, media::OBJTYPE_DIRECTORY) => return Err(Error::IsDir),
                    _ => return Err(Error::Invalid),
                }
            }
            None => {
                let inum = match inum {
                    Some(n) => n,
                    None => self.next_inum()?,
                };
                self.create(&root, dir, name, media::OBJTYPE_REGFILE, 0o644, inum, tid)?
            }
        };
        let g = self.lock_child(&root, id, LockMode::Exclusive)?;
        self.set_file_data(&g, data, tid)?;
        self.set_modify_tid(&g, tid)?;
        drop(g);
        self.set_modify_tid(&root, tid)
    }

    /// [`Store::rm`] in this layout: the entry goes, and its inode loses a link; an inode that
    /// loses its last one is destroyed, a directory with every entry under it (an explicit
    /// stack of inode numbers, no recursion).
    pub(super) fn index_rm(&self, path: &[u8], tid: u64) -> Result<()> {
        let (root, dir, last) = self.index_parent(path)?;
        let name = last.ok_or(Error::Invalid)?;
        let (entry, _, head) = self.find_dirent(dir, name)?.ok_or(Error::NotFound)?;
        // Room for the first inode before anything changes, so a lack of memory for it leaves
        // the entry in place.
        let mut unlinked = Vec::new();
        unlinked.try_reserve(8)?;
        self.in_dir(&root, dir, tid, |dg| {
            let eg = self.lock_child(dg, entry, LockMode::Exclusive)?;
            self.delete(dg, eg).map(|_| ())
        })?;
        try_push(&mut unlinked, head.inum)?;
        while let Some(inum) = unlinked.pop() {
            self.host.relax();
            // An entry naming no inode (a node mid-convergence) unlinks nothing.
            let Some(id) = self.index_inode(inum)? else {
                continue;
            };
            let g = self.lock_child(&root, id, LockMode::Exclusive)?;
            let m = self.meta(id)?;
            if m.nlinks > 1 {
                self.modify(&g, |_, body| {
                    let Body::Inode(ip) = body else {
                        return Err(Error::Invalid);
                    };
                    ip.meta.nlinks -= 1;
                    ip.meta.ctime = tid;
                    Ok(())
                })?;
                self.set_modify_tid(&g, tid)?;
                continue;
            }
            if m.objtype == media::OBJTYPE_DIRECTORY {
                for h in self.dirents(id)? {
                    try_push(&mut unlinked, h.inum)?;
                }
            }
            self.delete(&root, g)?;
        }
        self.set_modify_tid(&root, tid)
    }

    /// [`Store::chmod`] in this layout.
    pub(super) fn index_chmod(&self, path: &[u8], mode: u32, tid: u64) -> Result<()> {
        let (root, dir, last) = self.index_parent(path)?;
        let set = |_: &mut Blockref, body: &mut Body| {
            let Body::Inode(ip) = body else {
                return Err(Error::Invalid);
            };
            ip.meta.mode = mode & 0o7777;
            ip.meta.ctime = tid;
            Ok(())
        };
        if let Some(name) = last {
            let id = self.index_step(dir, name)?;
            let g = self.lock_child(&root, id, LockMode::Exclusive)?;
            self.modify(&g, set)?;
            self.set_modify_tid(&g, tid)?;
        } else {
            self.modify(&root, set)?;
        }
        self.set_modify_tid(&root, tid)
    }

    /// [`Store::link`] in this layout: a second entry naming `target`'s inode, whose `nlinks`
    /// grows by one (`hammer2_vop_nlink`). A directory cannot be linked (`IsDir`).
    pub(super) fn index_link(&self, target: &[u8], path: &[u8], tid: u64) -> Result<()> {
        let (root, dir, last) = self.index_parent(path)?;
        let name = last.ok_or(Error::Exists)?;
        let t = self.index_resolve(target)?;
        let tm = self.meta(t)?;
        if tm.objtype == media::OBJTYPE_DIRECTORY {
            return Err(Error::IsDir);
        }
        if self.find_dirent(dir, name)?.is_some() {
            return Err(Error::Exists);
        }
        self.add_dirent(&root, dir, name, (tm.inum, tm.objtype), false, tid)?;
        let g = self.lock_child(&root, t, LockMode::Exclusive)?;
        self.modify(&g, |_, body| {
            let Body::Inode(ip) = body else {
                return Err(Error::Invalid);
            };
            ip.meta.nlinks = ip.meta.nlinks.saturating_add(1);
            ip.meta.ctime = tid;
            Ok(())
        })?;
        self.set_modify_tid(&g, tid)?;
        drop(g);
        self.set_modify_tid(&root, tid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::for_test(Layout::Index)
    }

    #[test]
    fn walks_over_directory_entries_relax_per_entry() {
        let h = crate::host::testhost::host();
        let mut root = InodeData::default();
        root.meta.objtype = media::OBJTYPE_DIRECTORY;
        root.meta.inum = 1;
        let s = Store::with_layout(h, root, Layout::Index).unwrap();
        s.mkdir(b"/d", 1).unwrap();
        for i in 0..60u32 {
            s.write(std::format!("/d/f{i}").as_bytes(), b"x", 2)
                .unwrap();
        }
        let d = s.resolve(b"/d").unwrap();
        let before = h.relaxed();
        assert_eq!(s.dirents(d).unwrap().len(), 60);
        assert!(
            h.relaxed() - before >= 60,
            "a walk over 60 entries never relaxed"
        );
        let before = h.relaxed();
        s.rm(b"/d", 3).unwrap();
        assert_eq!(s.resolve(b"/d/f1"), Err(Error::NotFound));
        assert!(
            h.relaxed() - before >= 61,
            "removing 61 inodes relaxed less often"
        );
    }

    /// The DIRENT of `dir` named `name`: its header and decoded head.
    fn entry(s: &Store, dir: ChainId, name: &[u8]) -> (Blockref, DirentHead) {
        let (_, b, h) = s.find_dirent(dir, name).unwrap().unwrap();
        (b, h)
    }

    #[test]
    fn writes_the_index_and_dirents() {
        let s = store();
        let root = s.root();
        s.mkdir(b"/a", 1).unwrap();
        s.write(b"/a/f", b"hello", 2).unwrap();
        s.write(b"/big", &[7u8; 70_000], 3).unwrap();
        // The index: every inode in the root's table, key = inum, keybits 0.
        let index: Vec<(u64, u8, u8)> = s
            .block_table(root)
            .unwrap()
            .iter()
            .filter(|t| t.child.is_some() && t.bref.key < media::DIRHASH_VISIBLE)
            .map(|t| (t.bref.key, t.bref.keybits, t.bref.btype))
            .collect();
        let inode = media::BREF_TYPE_INODE;
        assert_eq!(
            index,
            [(1024, 0, inode), (1025, 0, inode), (1026, 0, inode)]
        );
        assert_eq!(s.meta(root).unwrap().pfs_inum, 1026);
        // The root's own entries share its table: key = dirhash + 1, head, name in the check area.
        let (ab, ah) = entry(&s, root, b"a");
        assert_eq!(ab.btype, media::BREF_TYPE_DIRENT);
        assert_eq!((ab.key, ab.keybits), (dirhash(b"a") + 1, 0));
        assert_eq!(
            (ah.inum, ah.namlen, ah.objtype),
            (1024, 1, media::OBJTYPE_DIRECTORY)
        );
        assert_eq!((ab.size_radix(), &ab.check[..2]), (0, &b"a\0"[..]));
        let a = s.index_inode(1024).unwrap().unwrap();
        let (fb, fh) = entry(&s, a, b"f");
        assert_eq!((fh.inum, fh.objtype), (1025, media::OBJTYPE_REGFILE));
        assert_eq!(
            s.child_count(a).unwrap(),
            1,
            "a directory holds its entries only"
        );
        // Inode meta as HAMMER2 writes it in this layout.
        let f = s.resolve(b"/a/f").unwrap();
        assert_eq!(s.parent(f).unwrap(), Some(root));
        let (_, body) = s.read(f).unwrap();
        let ip = body.inode().unwrap();
        let m = ip.meta;
        assert_eq!(
            (m.inum, m.iparent, m.name_key, m.nlinks),
            (1025, 1024, 1025, 1)
        );
        assert_eq!(ip.filename(), b"0x0000000000000401");
        assert_eq!(s.meta(a).unwrap().iparent, 1);
        assert_eq!(s.read_file(f).unwrap(), b"hello");
        assert_eq!(
            s.read_file(s.resolve(b"/big").unwrap()).unwrap(),
            [7u8; 70_000]
        );
        // modify_tid: the entry and its directory at the creation, the inode at each write.
        assert_eq!(fb.modify_tid, 2);
        assert_eq!(s.bref(a).unwrap().modify_tid, 2);
        s.write(b"/a/f", b"again", 4).unwrap();
        assert_eq!(s.bref(f).unwrap().modify_tid, 4);
        assert_eq!(s.bref(root).unwrap().modify_tid, 4);
        assert_eq!(
            s.bref(a).unwrap().modify_tid,
            2,
            "the directory did not change"
        );
        assert_eq!(entry(&s, a, b"f").0.modify_tid, 2);
        assert_eq!(entry(&s, root, b"a").0.modify_tid, 1);
        s.chmod(b"/a", 0o700, 5).unwrap();
        assert_eq!(s.meta(a).unwrap().mode, 0o700);
        assert_eq!(s.bref(a).unwrap().modify_tid, 5);
        // Errors.
        assert_eq!(s.mkdir(b"/a", 6), Err(Error::Exists));
        assert_eq!(s.write(b"/a", b"x", 6), Err(Error::IsDir));
        assert_eq!(s.mkdir(b"/a/f/g", 6), Err(Error::NotDir));
        assert_eq!(s.mkdir(b"/x/y", 6), Err(Error::NotFound));
        assert_eq!(s.rm(b"/nope", 6), Err(Error::NotFound));
        assert_eq!(s.rm(b"/", 6), Err(Error::Invalid));
        assert_eq!(
            s.bref(root).unwrap().modify_tid,
            5,
            "a refused change stamps nothing"
        );
    }

    #[test]
    fn no_indirect_block_spans_the_index_and_the_entries() {
        let s = store();
        for i in 0..300u64 {
            s.write(alloc::format!("/f{i}").as_bytes(), b"x", i + 1)
                .unwrap();
        }
        let table = s.block_table(s.root()).unwrap();
        let ind: Vec<&super::super::TableRef> = table
            .iter()
            .filter(|t| t.bref.btype == media::BREF_TYPE_INDIRECT)
            .collect();
        assert!(ind.len() >= 2, "the table grew indirect blocks");
        for t in ind {
            let (beg, end) = (t.bref.key, t.bref.key_end());
            assert_eq!(
                beg & media::DIRHASH_VISIBLE,
                end & media::DIRHASH_VISIBLE,
                "{beg:#x}..{end:#x} spans both halves"
            );
        }
        for i in 0..300u64 {
            let f = s.resolve(alloc::format!("/f{i}").as_bytes()).unwrap();
            assert_eq!(s.meta(f).unwrap().inum, 1024 + i);
        }
    }

    #[test]
    fn hardlinks_are_entries_counted_in_nlinks() {
        let s = store();
        s.write(b"/f", b"data", 1).unwrap();
        s.mkdir(b"/d", 2).unwrap();
        s.link(b"/f", b"/d/g", 3).unwrap();
        let f = s.resolve(b"/f").unwrap();
        assert_eq!(s.resolve(b"/d/g").unwrap(), f, "both names show one inode");
        assert_eq!(s.meta(f).unwrap().nlinks, 2);
        assert_eq!(s.bref(f).unwrap().modify_tid, 3);
        let (gb, gh) = entry(&s, s.resolve(b"/d").unwrap(), b"g");
        assert_eq!(
            (gh.inum, gh.objtype, gb.modify_tid),
            (1024, media::OBJTYPE_REGFILE, 3)
        );
        s.chmod(b"/d/g", 0o600, 4).unwrap();
        assert_eq!(s.meta(s.resolve(b"/f").unwrap()).unwrap().mode, 0o600);
        s.write(b"/d/g", b"new", 5).unwrap();
        assert_eq!(s.read_file(f).unwrap(), b"new");
        assert_eq!(s.link(b"/d", b"/e", 6), Err(Error::IsDir));
        assert_eq!(s.link(b"/f", b"/d/g", 6), Err(Error::Exists));
        assert_eq!(s.link(b"/zz", b"/l", 6), Err(Error::NotFound));
        // The first name goes: the inode stays with one link.
        s.rm(b"/f", 7).unwrap();
        assert_eq!(s.resolve(b"/f"), Err(Error::NotFound));
        assert_eq!(s.meta(f).unwrap().nlinks, 1);
        assert_eq!(s.bref(f).unwrap().modify_tid, 7);
        assert_eq!(s.read_file(s.resolve(b"/d/g").unwrap()).unwrap(), b"new");
        // The last one goes with its directory: nothing is left but the root.
        s.rm(b"/d", 8).unwrap();
        assert_eq!(s.bref(f), Err(Error::NotFound));
        assert_eq!(s.chain_count(), 1);
    }

    #[test]
    fn a_change_names_an_inode_the_index_already_has() {
        let s = store();
        // What a synchronizer leaves mid-pass: inode 1030 in the index, no entry naming it yet.
        {
            let root = s.lock_root(LockMode::Exclusive);
            s.new_index_inode(&root, s.root(), media::OBJTYPE_REGFILE, 0o644, 1030, 2)
                .unwrap();
        }
        let before = s.chain_count();
        s.write_as(b"/f", b"mine", 3, Some(1030)).unwrap();
        let f = s.resolve(b"/f").unwrap();
        assert_eq!(s.meta(f).unwrap().inum, 1030);
        assert_eq!(s.meta(f).unwrap().nlinks, 1, "the name was counted already");
        assert_eq!(s.read_file(f).unwrap(), b"mine");
        assert_eq!(s.chain_count(), before + 1, "one new chain: the entry");
        // Another type under that number is still a clash, and leaves nothing behind.
        assert_eq!(s.mkdir_as(b"/d", 4, Some(1030)), Err(Error::Exists));
        assert_eq!(s.resolve(b"/d"), Err(Error::NotFound));
        assert_eq!(s.chain_count(), before + 1);
        // Every name `nlinks` counts is here: another name would go uncounted, so it is refused.
        s.mkdir(b"/d", 5).unwrap();
        let before = s.chain_count();
        assert_eq!(s.write_as(b"/d/g", b"x", 6, Some(1030)), Err(Error::Exists));
        assert_eq!(s.resolve(b"/d/g"), Err(Error::NotFound));
        assert_eq!(s.chain_count(), before);
        assert_eq!(s.read_file(f).unwrap(), b"mine");
    }

    /// A hardlinked inode the synchronizer brought (`nlinks` 2) while only one of its names is
    /// here yet: a change naming it again is the other, counted name.
    #[test]
    fn a_change_names_a_hardlinked_inode_by_its_missing_name() {
        let s = store();
        s.mkdir(b"/d", 1).unwrap();
        s.write(b"/d/l", b"both", 2).unwrap();
        let l = s.resolve(b"/d/l").unwrap();
        let inum = s.meta(l).unwrap().inum;
        {
            let root = s.lock_root(LockMode::Exclusive);
            let g = s.lock_child(&root, l, LockMode::Exclusive).unwrap();
            s.modify(&g, |_, body| {
                let Body::Inode(ip) = body else {
                    return Err(Error::Invalid);
                };
                ip.meta.nlinks = 2;
                Ok(())
            })
            .unwrap();
        }
        s.write_as(b"/b", b"new", 3, Some(inum)).unwrap();
        assert_eq!(s.resolve(b"/b").unwrap(), l, "one inode under both names");
        assert_eq!(s.meta(l).unwrap().nlinks, 2);
        assert_eq!(s.read_file(l).unwrap(), b"new");
        assert_eq!(s.write_as(b"/c", b"x", 4, Some(inum)), Err(Error::Exists));
    }

    /// An entry a synchronizer inserted before the inode it names: a write makes that inode.
    #[test]
    fn a_write_through_an_entry_whose_inode_has_not_arrived_makes_it() {
        let s = store();
        s.mkdir(b"/d", 1).unwrap();
        let d = s.resolve(b"/d").unwrap();
        {
            let root = s.lock_root(LockMode::Exclusive);
            s.add_dirent(&root, d, b"f", (1030, media::OBJTYPE_REGFILE), false, 2)
                .unwrap();
            s.add_dirent(&root, d, b"e", (1031, media::OBJTYPE_DIRECTORY), false, 2)
                .unwrap();
        }
        s.write(b"/d/f", b"here", 3).unwrap();
        let f = s.resolve(b"/d/f").unwrap();
        let m = s.meta(f).unwrap();
        assert_eq!(
            (m.inum, m.nlinks, m.objtype),
            (1030, 1, media::OBJTYPE_REGFILE)
        );
        assert_eq!(s.read_file(f).unwrap(), b"here");
        assert_eq!(s.dirents(d).unwrap().len(), 2, "no second entry f");
        assert_eq!(s.write(b"/d/e", b"x", 4), Err(Error::IsDir));
    }

    /// A create whose unlocked lookup missed an entry that a synchronizer inserted before the
    /// create took the directory's lock: the entry is not made a second time.
    #[test]
    fn a_create_finds_the_entry_that_arrived_after_its_lookup() {
        let s = store();
        s.mkdir(b"/d", 1).unwrap();
        s.write(b"/d/f", b"focus", 2).unwrap();
        let d = s.resolve(b"/d").unwrap();
        let inum = s.meta(s.resolve(b"/d/f").unwrap()).unwrap().inum;
        let before = s.chain_count();
        {
            let root = s.lock_root(LockMode::Exclusive);
            s.create(&root, d, b"f", media::OBJTYPE_REGFILE, 0o644, inum, 3)
                .unwrap();
            // Another inode under that name is a clash, and leaves nothing behind.
            let other = inum + 1;
            let r = s.create(&root, d, b"f", media::OBJTYPE_REGFILE, 0o644, other, 3);
            assert_eq!(r.err(), Some(Error::Exists));
        }
        assert_eq!(s.dirents(d).unwrap().len(), 1, "one entry named f");
        assert_eq!(s.chain_count(), before);
        assert_eq!(s.read_file(s.resolve(b"/d/f").unwrap()).unwrap(), b"focus");
    }

    #[test]
    fn rm_of_a_tree_destroys_what_only_it_names() {
        let s = store();
        s.mkdir(b"/a", 1).unwrap();
        s.mkdir(b"/a/b", 2).unwrap();
        s.write(b"/a/b/c", &[1u8; 100_000], 3).unwrap();
        s.write(b"/a/x", b"x", 4).unwrap();
        s.link(b"/a/x", b"/a/b/x2", 5).unwrap();
        s.link(b"/a/b/c", b"/keep", 6).unwrap();
        s.rm(b"/a", 7).unwrap();
        // Left: the root, /keep's entry and its inode with its two data blocks.
        assert_eq!(s.chain_count(), 5);
        let k = s.resolve(b"/keep").unwrap();
        assert_eq!(s.meta(k).unwrap().nlinks, 1);
        assert_eq!(s.read_file(k).unwrap(), [1u8; 100_000]);
        assert_eq!(
            s.index_inode(1027).unwrap(),
            None,
            "x and its second name are gone"
        );
        assert_eq!(s.bref(s.root()).unwrap().modify_tid, 7);
    }

    #[test]
    fn long_names_sit_in_a_data_block_and_collisions_take_hammer2s_key() {
        let s = store();
        let short = [b's'; 64];
        let long = [b'l'; 65];
        s.write(&[b"/", &short[..]].concat(), b"1", 1).unwrap();
        s.write(&[b"/", &long[..]].concat(), b"2", 2).unwrap();
        let (sb, sh) = entry(&s, s.root(), &short);
        assert_eq!((sh.namlen, sb.size_radix(), sb.check), (64, 0, short));
        let (lid, lb, lh) = s.find_dirent(s.root(), &long).unwrap().unwrap();
        assert_eq!((lh.namlen, lb.data_bytes()), (65, 1024));
        let Body::Data(block) = s.read(lid).unwrap().1 else {
            panic!("a long name's entry has a data block");
        };
        assert_eq!(block[..65], long);
        lb.verify_check(&block).unwrap();
        // Other names' entries in a collision range, as a hash collision would place them.
        let occupy = |key: u64, tid: u64| {
            let g = s.lock_root(LockMode::Exclusive);
            let head = DirentHead {
                inum: 5000,
                namlen: 5,
                objtype: media::OBJTYPE_REGFILE,
            };
            let (b, body) = dirent_chain(key, head, b"other", tid).unwrap();
            s.insert(&g, b, body).unwrap();
        };
        // HAMMER2's scan stops at the first gap: here the hash itself.
        let h = dirhash(b"n");
        occupy(h + 1, 3);
        s.mkdir(b"/n", 4).unwrap();
        assert_eq!(entry(&s, s.root(), b"n").0.key, h);
        // A run from the hash to the range's last entry: one past the run's end, then one more.
        let h2 = dirhash(b"n2");
        occupy(h2, 5);
        occupy(h2 + 1, 6);
        s.mkdir(b"/n2", 7).unwrap();
        assert_eq!(entry(&s, s.root(), b"n2").0.key, h2 + 3);
        assert_eq!(
            s.meta(s.resolve(b"/n").unwrap()).unwrap().objtype,
            media::OBJTYPE_DIRECTORY
        );
    }
}
