//! What a volume commit needs of a store: the journal of changed places and each chain's
//! "flushed" state, as HAMMER2's MODIFIED/UPDATE chain flags serve its flush.
//!
//! A tracked store ([`Store::settle_all`] starts the tracking) notes, with every change of a
//! chain and under the same lock as the change, the place it happened: the table (parent
//! chain) and the key of the child inserted, changed or deleted, or the PFS root itself. A
//! commit takes the first entries of the journal, writes what they name and the path above
//! them, and once its header is on the media drops exactly those entries: a change made
//! while it ran stays for the next commit, and a failed commit drops nothing.
//!
//! A chain is *flushed* when the last commit (or the load) wrote its block where its
//! header says: a commit may then patch its table on the media instead of building it.
//! A chain inserted since is not: its place on the media, if any, holds something else.
//! Rather than a flag on every chain, the arena keeps a settled generation and a chain the
//! generation it was inserted in: settling the whole store is one write under the lock.

use alloc::vec::Vec;

use super::{cache::PayVer, Arena, Body, ChainId, Store};
use crate::media::Blockref;
use crate::{Error, Result};

/// Spare journal entries kept reserved outside the arena lock, so that a change rarely
/// allocates under it.
const SPARE: usize = 64;

/// One journal entry: the child of `table` at `key` changed (inserted, modified, deleted),
/// or, with no table, the PFS root itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    /// The parent chain whose table changed; `None` for a change of the PFS root itself.
    pub table: Option<ChainId>,
    /// The key of the child in that table.
    pub key: u64,
}

impl Arena {
    /// Note a change of the child of `table` at `key`, when the store is tracked.
    pub(super) fn note(&mut self, table: Option<ChainId>, key: u64) -> Result<()> {
        let t = Touch { table, key };
        #[cfg(test)]
        if core::mem::take(&mut self.note_fails) {
            return Err(Error::NoMem);
        }
        if let Some(j) = self.journal.as_mut() {
            // A run of changes at one place is noted once; but an entry a running commit
            // took stays apart: that commit may have read the place before this change.
            if j.len() > self.taken && j.last() == Some(&t) {
                return Ok(());
            }
            j.try_reserve(1)?;
            j.push(t);
        }
        Ok(())
    }

    /// Note a change of chain `id` itself: in its parent's table, or the root's own.
    pub(super) fn note_chain(&mut self, id: ChainId) -> Result<()> {
        if self.journal.is_none() {
            return Ok(());
        }
        let c = self.get(id)?;
        let (parent, key) = (c.parent, c.bref.key);
        self.note(parent, key)
    }
}

impl Store {
    /// Make room for a few journal entries, allocated outside the arena lock (a kernel
    /// allocator may sleep; other threads spin on that lock).
    pub(super) fn journal_room(&self) -> Result<()> {
        let (len, cap) = match self.arena.read().journal.as_ref() {
            None => return Ok(()),
            Some(j) => (j.len(), j.capacity()),
        };
        if cap - len >= SPARE {
            return Ok(());
        }
        let mut v: Vec<Touch> = Vec::new();
        v.try_reserve_exact(cap.saturating_mul(2).max(len + 2 * SPARE))?;
        let mut a = self.arena.write();
        if let Some(j) = a.journal.as_mut() {
            if j.capacity() - j.len() < SPARE && v.capacity() >= j.len() + SPARE {
                v.extend_from_slice(j);
                core::mem::swap(j, &mut v);
            }
        }
        drop(a);
        // The old journal (or the unused new one) is freed outside the lock.
        drop(v);
        Ok(())
    }

    /// Mark every chain flushed and start tracking with an empty journal: the store holds
    /// what the volume holds (after a load or a reload). One write, whatever the store's
    /// size (the arena's lock spins: nothing long under it): the settled generation moves,
    /// and only a chain inserted in the current one is not flushed.
    pub fn settle_all(&self) -> Result<()> {
        let mut j = Vec::new();
        j.try_reserve_exact(SPARE)?;
        let mut a = self.arena.write();
        a.settled += 1;
        a.taken = 0;
        let old = a.journal.replace(j);
        drop(a);
        // Freed outside the lock.
        drop(old);
        Ok(())
    }

    /// Stop tracking: a change made from now on is not journaled, and the store cannot be
    /// committed until [`Store::settle_all`] says it holds what the volume holds again.
    pub fn untrack(&self) {
        let mut a = self.arena.write();
        a.taken = 0;
        let old = a.journal.take();
        drop(a);
        // Freed outside the lock.
        drop(old);
    }

    /// Whether the store journals its changes (see [`Store::settle_all`]).
    pub fn is_tracked(&self) -> bool {
        self.arena.read().journal.is_some()
    }

    /// Entries in the journal: zero when nothing changed since the last commit (or since
    /// tracking began); always zero for an untracked store.
    pub fn journal_len(&self) -> usize {
        self.arena.read().journal.as_ref().map_or(0, |j| j.len())
    }

    /// A copy of the journal as it is now, for the one commit running: every change made so
    /// far is named in it (a change notes its place under the lock it changes the chain
    /// under), and a change made from now on gets an entry of its own after it.
    pub fn journal_snapshot(&self) -> Result<Vec<Touch>> {
        loop {
            let want = self.journal_len();
            let mut v = Vec::new();
            v.try_reserve_exact(want)?;
            let mut a = self.arena.write();
            let j = a.journal.as_deref().unwrap_or(&[]);
            if j.len() > v.capacity() {
                continue;
            }
            v.extend_from_slice(j);
            a.taken = v.len();
            return Ok(v);
        }
    }

    /// A copy of at most `max` journal entries from entry `from` on: what a writer ahead of
    /// the commit ([`crate::mount::WriteAhead`]) has not looked at yet. Entries are dropped
    /// only by a commit, so between two commits an entry keeps its position.
    pub fn journal_from(&self, from: usize, max: usize) -> Result<Vec<Touch>> {
        let mut v = Vec::new();
        loop {
            // Room for what is there now, allocated outside the lock; more may come meanwhile.
            let want = self.journal_len().saturating_sub(from).min(max);
            v.try_reserve_exact(want)?;
            let a = self.arena.read();
            let j = a.journal.as_deref().unwrap_or(&[]);
            let end = j.len().min(from.saturating_add(max));
            let part = j.get(from..end).unwrap_or(&[]);
            if part.len() > v.capacity() {
                continue;
            }
            v.extend_from_slice(part);
            return Ok(v);
        }
    }

    /// Drop the first `n` journal entries: a commit wrote what they name.
    pub fn journal_drain(&self, n: usize) {
        let mut a = self.arena.write();
        a.taken = 0;
        if let Some(j) = a.journal.as_mut() {
            j.drain(..n.min(j.len()));
        }
    }

    /// Whether chain `id`'s block is on the media where its header says (see the module).
    pub fn is_flushed(&self, id: ChainId) -> Result<bool> {
        let a = self.arena.read();
        Ok(a.get(id)?.unflushed_in != a.settled)
    }

    /// Record that a commit wrote chain `id`'s block, payload version `ver` (as
    /// [`Store::read_versioned`] gave it), as `written` (the blockref the commit wrote): the
    /// chain's header learns its `data_off` and `mirror_tid` and the chain counts as flushed.
    /// Not a change (neither journaled nor counted): the payload is the same. In a store
    /// with a payload source, a DATA payload that is still that version, and that is the
    /// very block written (a whole block, the same check code), is clean now and leaves
    /// memory ([`super::cache`]); one changed since stays pinned for the next commit, and
    /// one the commit padded to a whole block stays pinned: read back, the padded block
    /// would not be the payload the store holds.
    pub fn set_flushed(&self, id: ChainId, written: &Blockref, ver: PayVer) -> Result<()> {
        let mut a = self.arena.write();
        let c = a.get_mut(id)?;
        c.bref.data_off = written.data_off;
        c.bref.mirror_tid = written.mirror_tid;
        c.unflushed_in = 0;
        // A table with indirect blocks is read back from here once ranges of it leave
        // memory ([`super::evict`]); without room for that, it stays in memory.
        match c.home.as_deref_mut() {
            Some(h) => *h = *written,
            None if c.children.len() > crate::media::SET_COUNT => {
                c.home = crate::mem::try_box(*written).ok();
            }
            None => {}
        }
        let freed = Store::release(&mut a, id, written, ver);
        drop(a);
        // Freed outside the lock.
        drop(freed);
        Ok(())
    }

    /// Raise the PFS root inode allocator to `pfs_inum` (a commit's), not as a change
    /// (neither journaled nor counted): the value is the one the media hold. Never lowered:
    /// an inode created while the commit ran took a number past the commit's.
    pub fn settle_pfs_inum(&self, pfs_inum: u64) -> Result<()> {
        let mut a = self.arena.write();
        let root = self.root;
        let c = a.get_mut(root)?;
        let Body::Inode(ino) = &mut c.body else {
            return Err(Error::Invalid);
        };
        if ino.meta.pfs_inum < pfs_inum {
            ino.meta.pfs_inum = pfs_inum;
            let mut bref = c.bref;
            c.body.seal(&mut bref)?;
            c.bref = bref;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::testhost::host;
    use crate::host::LockMode;
    use crate::media::{self, InodeData};

    fn data_bref(key: u64) -> Blockref {
        let mut b = Blockref::new(media::BREF_TYPE_DATA, key, 16);
        b.set_size_radix(10);
        b
    }

    /// Every kind of change names its place; learning where a commit put a chain does not;
    /// a drain keeps what came after the entries drained.
    #[test]
    fn every_change_names_its_place_and_a_drain_keeps_later_ones() {
        let s = Store::new(host(), InodeData::default()).unwrap();
        let g = s.lock_root(LockMode::Exclusive);
        let id = s
            .insert(&g, data_bref(0), Body::Data(alloc::vec![1; 1024]))
            .unwrap();
        assert_eq!(s.journal_len(), 0, "untracked until settled");
        s.settle_all().unwrap();
        assert!(s.is_flushed(id).unwrap());
        let at = |key| Touch {
            table: Some(s.root()),
            key,
        };
        let c = s.lock_child(&g, id, LockMode::Exclusive).unwrap();
        s.replace(&c, data_bref(0), Body::Data(alloc::vec![2; 1024]))
            .unwrap();
        s.modify(&c, |_, _| Ok(())).unwrap();
        s.set_modify_tid(&c, 9).unwrap();
        let mut w = data_bref(0);
        (w.data_off, w.mirror_tid) = (0x4000a, 3);
        s.set_flushed(id, &w, 0).unwrap();
        s.settle_pfs_inum(77).unwrap();
        let n = s.journal_snapshot().unwrap();
        assert_eq!(n, [at(0)], "a run of changes at one place is noted once");
        // Taken by a commit: a change now is noted apart.
        s.modify(&c, |_, _| Ok(())).unwrap();
        s.delete(&g, c).unwrap();
        let other = s
            .insert(&g, data_bref(1 << 16), Body::Data(alloc::vec![3; 1024]))
            .unwrap();
        assert!(!s.is_flushed(other).unwrap());
        s.modify(&g, |_, _| Ok(())).unwrap();
        s.journal_drain(n.len());
        let rest = s.journal_snapshot().unwrap();
        let root_own = Touch {
            table: None,
            key: 0,
        };
        assert_eq!(rest, [at(0), at(1 << 16), root_own]);
        s.untrack();
        s.modify(&g, |_, _| Ok(())).unwrap();
        assert!(!s.is_tracked());
        assert_eq!(s.journal_len(), 0);
        s.settle_all().unwrap();
        assert!(
            s.is_flushed(other).unwrap(),
            "a settle flushes what was inserted before it"
        );
        assert_eq!(s.journal_len(), 0);
    }
}
