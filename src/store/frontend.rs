//! Frontend operations on one node (mkdir, write, rm, chmod, link) and path reads (stat, read).
//! This file is the seed's layout; a store in [`Layout::Index`] hands each operation to
//! [`super::index`].
//!
//! A change holds every chain from the PFS root down to the changed one exclusively (taken
//! top-down), makes the change stamped with the transaction's TID, and propagates that TID up to
//! the PFS root (seed-era modify_tid propagation), so one comparison at the root tells whether
//! anything below differs.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::inode;
use super::{Body, ChainGuard, ChainId, Layout, Store, TableWalk, Where};
use crate::host::LockMode;
use crate::media::{self, dirhash, Blockref, InodeData, InodeMeta, OpFlags, DIRHASH_LOMASK};
use crate::mem::{try_box, try_push};
use crate::{Error, Result};

/// The inode number of `name` in the directory numbered `parent`.
///
/// Derived from the path rather than allocated per node: in a real cluster the frontend allocates
/// one number for all nodes, and a scenario may create "the same" file on different nodes at
/// different transactions (a node that missed the first write gets the file from a later
/// `write *`); both must agree. For the same reason a new inode's btime is left 0.
pub fn inum_for(parent: u64, name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in parent.to_le_bytes().iter().chain(name) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Inode 1 is the PFS root; keep clear of the low numbers.
    h | (1 << 62)
}

/// Split an absolute path into its components (empty for `/`). Components are 1..=255 bytes.
pub fn components(path: &[u8]) -> Result<Vec<&[u8]>> {
    let mut v = Vec::new();
    for c in path.split(|&b| b == b'/') {
        if c.is_empty() {
            continue;
        }
        if c.len() > 255 || c == b"." || c == b".." {
            return Err(Error::Invalid);
        }
        try_push(&mut v, c)?;
    }
    Ok(v)
}

/// What a regular file's bytes become: DIRECTDATA, or 64 KiB DATA blocks.
fn data_bref(key: u64, len: usize, tid: u64) -> Blockref {
    let mut b = Blockref::new(media::BREF_TYPE_DATA, key, media::DATA_BLOCK_RADIX);
    b.vradix = media::DATA_BLOCK_RADIX;
    b.set_size_radix(inode::data_radix_for(len));
    b.modify_tid = tid;
    b
}

impl Store {
    /// The child inode of directory `dir` named `name`.
    pub fn find_name(&self, dir: ChainId, name: &[u8]) -> Result<Option<ChainId>> {
        let h = dirhash(name);
        let end = h | DIRHASH_LOMASK;
        let mut k = h;
        loop {
            // Resident inodes are compared under the lock; one on the media is read
            // outside it (the read may sleep on the device).
            self.see_range(dir, k, end)?;
            let on_media = {
                let a = self.arena.read();
                let d = a.get(dir)?;
                loop {
                    // Read back above: nothing in the range is a stub.
                    let Some((key, id)) = d
                        .children
                        .first_overlapping(k, end)
                        .map_err(|_| Error::Io)?
                    else {
                        return Ok(None);
                    };
                    let c = a.get(id)?;
                    match &c.body {
                        Body::Inode(ip) if ip.filename() == name => return Ok(Some(id)),
                        Body::Data(_) if c.pay.at == Where::OnMedia => break (key, id),
                        _ => {}
                    }
                    match key.checked_add(1) {
                        Some(n) => k = n,
                        None => return Ok(None),
                    }
                }
            };
            let (key, id) = on_media;
            if self
                .read(id)?
                .1
                .inode()
                .is_some_and(|ip| ip.filename() == name)
            {
                return Ok(Some(id));
            }
            match key.checked_add(1) {
                Some(n) => k = n,
                None => return Ok(None),
            }
        }
    }

    /// A free key for `name` in `dir`: its hash, or the next free one within the collision bits.
    fn free_name_key(&self, dir: ChainId, name: &[u8]) -> Result<u64> {
        let h = dirhash(name);
        self.see_range(dir, h, h | DIRHASH_LOMASK)?;
        let a = self.arena.read();
        let d = a.get(dir)?;
        let mut k = h;
        loop {
            // Read back above: nothing in the range is a stub.
            match d.children.first_overlapping(k, k).map_err(|_| Error::Io)? {
                None => return Ok(k),
                Some(_) if k < h | DIRHASH_LOMASK => k += 1,
                Some(_) => return Err(Error::TooBig),
            }
        }
    }

    /// Resolve `path` without chain locks (checks and remote reads).
    pub fn resolve(&self, path: &[u8]) -> Result<ChainId> {
        if self.layout == Layout::Index {
            return self.index_resolve(path);
        }
        let mut cur = self.root;
        for c in components(path)? {
            if self.meta(cur)?.objtype != media::OBJTYPE_DIRECTORY {
                return Err(Error::NotDir);
            }
            cur = self.find_name(cur, c)?.ok_or(Error::NotFound)?;
        }
        Ok(cur)
    }

    /// Lock the directory chain of `path`'s parent and everything above it exclusively.
    /// Returns the held guards (root first) and the last component (None for `/`).
    fn lock_parent_path<'p>(
        &self,
        path: &'p [u8],
    ) -> Result<(Vec<ChainGuard<'_>>, Option<&'p [u8]>)> {
        let comps = components(path)?;
        let mut guards = Vec::new();
        guards.try_reserve(comps.len() + 1)?;
        guards.push(self.lock_root(LockMode::Exclusive));
        let Some((last, dirs)) = comps.split_last() else {
            self.gen.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
            return Ok((guards, None));
        };
        for c in dirs {
            let top = guards.last().ok_or(Error::Invalid)?;
            let child = self.find_name(top.id(), c)?.ok_or(Error::NotFound)?;
            if self.meta(child)?.objtype != media::OBJTYPE_DIRECTORY {
                return Err(Error::NotDir);
            }
            let g = self.lock_child(top, child, LockMode::Exclusive)?;
            guards.push(g);
        }
        // Under the path's locks: whoever locks a chain of it after us sees the new generation.
        self.gen.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
        Ok((guards, Some(last)))
    }

    /// Stamp `tid` on every held chain (the changed one and all its ancestors).
    fn propagate(&self, guards: &[ChainGuard<'_>], tid: u64) -> Result<()> {
        for g in guards {
            self.set_modify_tid(g, tid)?;
        }
        Ok(())
    }

    fn new_inode(
        &self,
        dir: &ChainGuard<'_>,
        name: &[u8],
        otype: u8,
        mode: u32,
        tid: u64,
    ) -> Result<(Blockref, Box<InodeData>)> {
        let key = self.free_name_key(dir.id(), name)?;
        let dmeta = self.meta(dir.id())?;
        let mut ip = try_box(InodeData::default())?;
        ip.meta = InodeMeta {
            version: media::INODE_VERSION_ONE,
            objtype: otype,
            mode,
            inum: inum_for(dmeta.inum, name),
            nlinks: 1,
            iparent: dmeta.inum,
            name_key: key,
            name_len: name.len() as u16,
            comp_algo: 0,
            check_algo: media::CHECK_DEFAULT,
            ctime: tid,
            mtime: tid,
            ..InodeMeta::default()
        };
        ip.filename[..name.len()].copy_from_slice(name);
        let mut bref = Blockref::new(media::BREF_TYPE_INODE, key, 0);
        bref.set_size_radix(media::INODE_RADIX);
        bref.modify_tid = tid;
        Ok((bref, ip))
    }

    /// Create directory `path`; its parent must exist.
    pub fn mkdir(&self, path: &[u8], tid: u64) -> Result<()> {
        self.mkdir_as(path, tid, None)
    }

    /// [`Store::mkdir`] giving the new inode number `inum` in [`Layout::Index`] (the cluster's
    /// frontend allocates one number for all nodes; None: this node's next, see
    /// [`Store::next_inum`]). The seed's layout derives it from the path ([`inum_for`]).
    pub fn mkdir_as(&self, path: &[u8], tid: u64, inum: Option<u64>) -> Result<()> {
        if self.layout == Layout::Index {
            return self.index_mkdir(path, tid, inum);
        }
        let (mut guards, last) = self.lock_parent_path(path)?;
        let name = last.ok_or(Error::Exists)?;
        let dir = guards.last().ok_or(Error::Invalid)?;
        if self.find_name(dir.id(), name)?.is_some() {
            return Err(Error::Exists);
        }
        let (bref, ip) = self.new_inode(dir, name, media::OBJTYPE_DIRECTORY, 0o755, tid)?;
        let id = self.insert(dir, bref, Body::Inode(ip))?;
        let g = self.lock_child(dir, id, LockMode::Exclusive)?;
        try_push(&mut guards, g)?;
        self.propagate(&guards, tid)
    }

    /// Create or overwrite regular file `path` with `data`.
    pub fn write(&self, path: &[u8], data: &[u8], tid: u64) -> Result<()> {
        self.write_as(path, data, tid, None)
    }

    /// [`Store::write`] giving a new inode number `inum` (as for [`Store::mkdir_as`]).
    pub fn write_as(&self, path: &[u8], data: &[u8], tid: u64, inum: Option<u64>) -> Result<()> {
        if self.layout == Layout::Index {
            return self.index_write(path, data, tid, inum);
        }
        let (mut guards, last) = self.lock_parent_path(path)?;
        // Room for the file's guard, so nothing can fail between its data and `propagate`.
        guards.try_reserve(1)?;
        let name = last.ok_or(Error::IsDir)?;
        let dir = guards.last().ok_or(Error::Invalid)?;
        let (id, created) = match self.find_name(dir.id(), name)? {
            Some(id) => {
                match self.meta(id)?.objtype {
                    media::OBJTYPE_REGFILE => {}
                    media::OBJTYPE_DIRECTORY => return Err(Error::IsDir),
                    _ => return Err(Error::Invalid),
                }
                (id, false)
            }
            None => {
                let (bref, ip) = self.new_inode(dir, name, media::OBJTYPE_REGFILE, 0o644, tid)?;
                (self.insert(dir, bref, Body::Inode(ip))?, true)
            }
        };
        let g = self.lock_child(dir, id, LockMode::Exclusive)?;
        if let Err(e) = self.set_file_data(&g, data, tid) {
            // A new file left without its data would carry the change's TID, so the
            // synchronizer would take it for the complete file other nodes hold: take it out.
            if created {
                let _ = self.delete(dir, g);
            }
            return Err(e);
        }
        guards.push(g);
        self.propagate(&guards, tid)
    }

    /// Replace the whole content of the file `g` holds.
    pub(super) fn set_file_data(&self, g: &ChainGuard<'_>, data: &[u8], tid: u64) -> Result<()> {
        let direct = data.len() <= media::EMBEDDED_BYTES;
        let nblocks = if direct {
            0
        } else {
            data.len().div_ceil(media::DATA_BLOCK_BYTES)
        };
        // Blocks past the new end go first (all of them when the data becomes DIRECTDATA).
        let first_gone = (nblocks as u64) << media::DATA_BLOCK_RADIX;
        while let Some((id, _)) = self.lookup(g.id(), first_gone, media::KEY_MAX)? {
            let c = self.lock_child(g, id, LockMode::Exclusive)?;
            self.delete(g, c)?;
        }
        for (i, chunk) in data
            .chunks(media::DATA_BLOCK_BYTES)
            .enumerate()
            .take(nblocks)
        {
            self.host.relax();
            let key = (i as u64) << media::DATA_BLOCK_RADIX;
            let bref = data_bref(key, chunk.len(), tid);
            let mut bytes = Vec::new();
            bytes.try_reserve_exact(bref.data_bytes())?;
            bytes.extend_from_slice(chunk);
            bytes.resize(bref.data_bytes(), 0);
            match self.child_at(g.id(), key)? {
                Some(id) => {
                    let c = self.lock_child(g, id, LockMode::Exclusive)?;
                    self.replace(&c, bref, Body::Data(bytes))?;
                }
                None => {
                    self.insert(g, bref, Body::Data(bytes))?;
                }
            }
        }
        self.modify(g, |_, body| {
            let Body::Inode(ip) = body else {
                return Err(Error::Invalid);
            };
            ip.u = [0; media::EMBEDDED_BYTES];
            if direct {
                ip.meta.op_flags |= OpFlags::DIRECTDATA.bits();
                ip.u[..data.len()].copy_from_slice(data);
            } else {
                ip.meta.op_flags &= !OpFlags::DIRECTDATA.bits();
            }
            ip.meta.size = data.len() as u64;
            ip.meta.mtime = tid;
            ip.meta.ctime = tid;
            Ok(())
        })
    }

    /// Remove `path` and everything under it (in [`Layout::Index`]: its entry, and its inode
    /// with its last entry).
    pub fn rm(&self, path: &[u8], tid: u64) -> Result<()> {
        if self.layout == Layout::Index {
            return self.index_rm(path, tid);
        }
        let (guards, last) = self.lock_parent_path(path)?;
        let name = last.ok_or(Error::Invalid)?;
        let dir = guards.last().ok_or(Error::Invalid)?;
        let id = self.find_name(dir.id(), name)?.ok_or(Error::NotFound)?;
        let g = self.lock_child(dir, id, LockMode::Exclusive)?;
        self.delete(dir, g)?;
        self.propagate(&guards, tid)
    }

    /// Set the permission bits of `path`.
    pub fn chmod(&self, path: &[u8], mode: u32, tid: u64) -> Result<()> {
        if self.layout == Layout::Index {
            return self.index_chmod(path, mode, tid);
        }
        let (mut guards, last) = self.lock_parent_path(path)?;
        if let Some(name) = last {
            let dir = guards.last().ok_or(Error::Invalid)?;
            let id = self.find_name(dir.id(), name)?.ok_or(Error::NotFound)?;
            let g = self.lock_child(dir, id, LockMode::Exclusive)?;
            try_push(&mut guards, g)?;
        }
        let g = guards.last().ok_or(Error::Invalid)?;
        self.modify(g, |_, body| {
            let Body::Inode(ip) = body else {
                return Err(Error::Invalid);
            };
            ip.meta.mode = mode & 0o7777;
            ip.meta.ctime = tid;
            Ok(())
        })?;
        self.propagate(&guards, tid)
    }

    /// Create a hardlink at `path` naming `target`'s inode: a pointer inode in the seed's layout,
    /// a second entry in [`Layout::Index`].
    pub fn link(&self, target: &[u8], path: &[u8], tid: u64) -> Result<()> {
        if self.layout == Layout::Index {
            return self.index_link(target, path, tid);
        }
        let tmeta = self.meta(self.resolve(target)?)?;
        let (mut guards, last) = self.lock_parent_path(path)?;
        let name = last.ok_or(Error::Exists)?;
        let dir = guards.last().ok_or(Error::Invalid)?;
        if self.find_name(dir.id(), name)?.is_some() {
            return Err(Error::Exists);
        }
        let (bref, mut ip) = self.new_inode(dir, name, media::OBJTYPE_HARDLINK, 0, tid)?;
        // A pointer carries the target's inode number and type, nothing else.
        let (inum, ttype) = if tmeta.objtype == media::OBJTYPE_HARDLINK {
            (tmeta.inum, tmeta.target_type)
        } else {
            (tmeta.inum, tmeta.objtype)
        };
        ip.meta.inum = inum;
        ip.meta.target_type = ttype;
        let id = self.insert(dir, bref, Body::Inode(ip))?;
        let g = self.lock_child(dir, id, LockMode::Exclusive)?;
        try_push(&mut guards, g)?;
        self.propagate(&guards, tid)
    }

    /// The inode a hardlink pointer names (searched by inode number), or `id` itself.
    pub fn follow(&self, id: ChainId) -> Result<ChainId> {
        let m = self.meta(id)?;
        if m.objtype != media::OBJTYPE_HARDLINK {
            return Ok(id);
        }
        let mut stack = Vec::new();
        try_push(&mut stack, self.root)?;
        while let Some(cur) = stack.pop() {
            self.host.relax();
            let cm = self.meta(cur)?;
            if cm.objtype == m.target_type && cm.inum == m.inum {
                return Ok(cur);
            }
            if cm.objtype != media::OBJTYPE_DIRECTORY {
                continue;
            }
            let mut children = TableWalk::new(cur, 0, media::KEY_MAX);
            while let Some((c, _)) = children.step(self)? {
                try_push(&mut stack, c)?;
            }
        }
        Err(Error::NotFound)
    }

    /// The whole content of regular file `id` (a hardlink pointer is followed).
    pub fn read_file(&self, id: ChainId) -> Result<Vec<u8>> {
        let id = self.follow(id)?;
        let m = self.meta(id)?;
        match m.objtype {
            media::OBJTYPE_REGFILE => {}
            media::OBJTYPE_DIRECTORY => return Err(Error::IsDir),
            _ => return Err(Error::Invalid),
        }
        let size = usize::try_from(m.size).map_err(|_| Error::TooBig)?;
        let mut out = Vec::new();
        out.try_reserve_exact(size)?;
        if m.is_directdata() {
            let (_, body) = self.read(id)?;
            let ip = body.inode().ok_or(Error::Invalid)?;
            out.extend_from_slice(&ip.u[..size.min(media::EMBEDDED_BYTES)]);
            out.resize(size, 0);
            return Ok(out);
        }
        let mut blocks = TableWalk::new(id, 0, media::KEY_MAX);
        while let Some((c, b)) = blocks.step(self)? {
            let off = usize::try_from(b.key).map_err(|_| Error::TooBig)?;
            if off >= size {
                break;
            }
            // Holes (missing blocks) read as zeros.
            out.resize(off.max(out.len()), 0);
            if let (_, Body::Data(d)) = self.read(c)? {
                let n = d.len().min(size - off);
                out.truncate(off);
                out.extend_from_slice(&d[..n]);
            }
            self.host.relax();
        }
        out.resize(size, 0);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::for_test(Layout::Seed)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn ops_and_errors() {
        let s = store();
        s.mkdir(b"/a", 1).unwrap();
        assert_eq!(s.mkdir(b"/a", 2), Err(Error::Exists));
        assert_eq!(s.mkdir(b"/x/y", 2), Err(Error::NotFound));
        s.write(b"/a/f", b"hello", 2).unwrap();
        assert_eq!(s.mkdir(b"/a/f/g", 3), Err(Error::NotDir));
        assert_eq!(s.write(b"/a", b"x", 3), Err(Error::IsDir));
        assert_eq!(s.rm(b"/nope", 3), Err(Error::NotFound));
        assert_eq!(s.bref(s.root()).unwrap().modify_tid, 2);
        let f = s.resolve(b"/a/f").unwrap();
        assert_eq!(s.read_file(f).unwrap(), b"hello");
        assert_eq!(s.bref(s.resolve(b"/a").unwrap()).unwrap().modify_tid, 2);
        s.chmod(b"/a/f", 0o100600, 3).unwrap();
        assert_eq!(s.meta(f).unwrap().mode, 0o600);
        assert_eq!(s.bref(s.root()).unwrap().modify_tid, 3);
        s.link(b"/a/f", b"/l", 4).unwrap();
        let l = s.resolve(b"/l").unwrap();
        assert_eq!(s.meta(l).unwrap().objtype, media::OBJTYPE_HARDLINK);
        assert_eq!(s.read_file(l).unwrap(), b"hello");
        assert_eq!(s.link(b"/zz", b"/l2", 5), Err(Error::NotFound));
        assert_eq!(s.write(b"/l", b"x", 5), Err(Error::Invalid));
        assert_eq!(s.read_file(s.root()), Err(Error::IsDir));
        s.rm(b"/a", 5).unwrap();
        assert_eq!(s.resolve(b"/a/f"), Err(Error::NotFound));
        assert_eq!(s.read_file(l), Err(Error::NotFound));
        assert_eq!(s.chain_count(), 2);
        assert_eq!(s.bref(s.root()).unwrap().modify_tid, 5);
        assert_eq!(s.rm(b"/", 6), Err(Error::Invalid));
        assert_eq!(components(b"/a/../b"), Err(Error::Invalid));
    }

    #[test]
    fn directdata_and_blocks_transitions() {
        let s = store();
        for (tid, n) in [
            (1u64, 100usize),
            (2, 70_000),
            (3, 512),
            (4, 513),
            (5, 200_000),
            (6, 65_536),
            (7, 0),
        ] {
            let data = pattern(n);
            s.write(b"/f", &data, tid).unwrap();
            let f = s.resolve(b"/f").unwrap();
            assert_eq!(s.read_file(f).unwrap(), data, "size {n}");
            let m = s.meta(f).unwrap();
            assert_eq!(m.is_directdata(), n <= 512);
            let blocks = if n <= 512 { 0 } else { n.div_ceil(65536) };
            assert_eq!(s.child_count(f).unwrap(), blocks, "size {n}");
            // Every chain carries the check code of its payload, as after a flush.
            for id in [
                Some(f),
                s.lookup(f, 0, media::KEY_MAX).unwrap().map(|(c, _)| c),
            ]
            .into_iter()
            .flatten()
            {
                let (b, body) = s.read(id).unwrap();
                match body {
                    Body::Inode(ip) => b.verify_check(&ip.encode()).unwrap(),
                    Body::Data(d) => b.verify_check(&d).unwrap(),
                }
            }
            if n == 70_000 {
                let (_, b) = s.lookup(f, 65536, media::KEY_MAX).unwrap().unwrap();
                assert_eq!(
                    b.data_bytes(),
                    8192,
                    "a file tail gets the smallest power of two"
                );
            }
        }
    }

    #[test]
    fn name_hash_collisions_use_the_low_bits() {
        let s = store();
        let h = dirhash(b"n");
        {
            // Occupy the name's own hash slot with another entry.
            let g = s.lock_root(LockMode::Exclusive);
            let (mut bref, mut ip) = s
                .new_inode(&g, b"other", media::OBJTYPE_REGFILE, 0, 1)
                .unwrap();
            bref.key = h;
            ip.meta.name_key = h;
            s.insert(&g, bref, Body::Inode(ip)).unwrap();
        }
        s.mkdir(b"/n", 2).unwrap();
        let n = s.resolve(b"/n").unwrap();
        assert_eq!(s.bref(n).unwrap().key, h + 1);
        assert_eq!(s.meta(n).unwrap().objtype, media::OBJTYPE_DIRECTORY);
    }
}
