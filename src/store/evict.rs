//! Clean ranges of block tables out of memory, and back (a bounded chain cache).
//!
//! A store reading payloads on demand ([`super::cache`]) still keeps every chain's header.
//! Here the headers go too: [`Store::evict`] replaces an indirect block that holds only
//! children, all of them as the media hold them, by a stub keeping its range, summary and
//! highest modify_tid (see `children::Stub`), and frees the chains beneath. A walk that
//! must see into a stub ([`children::Miss`]) has the store read the range back from the
//! table's inode block as last committed (the chain's `home`) through the payload source,
//! and install the chains as they were, under the arena lock, only if the stub is still
//! there ([`Store::fill_stub`]).
//!
//! Chains a stub stood for come back with new ids: eviction runs only where nothing holds
//! an id of this store's chains below its PFS root (every sync thread of the cluster frozen
//! or stopped, no frontend call running), as [`crate::mount::reload`] does.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::cache::{Pay, Where};
use super::children::{Children, Filled, Kept, Miss, Seen};
use super::inode::InodeSummary;
use super::{Body, Chain, ChainId, Store};
use crate::host::RawLock;
use crate::media::{self, Blockref, BREF_BYTES, SET_COUNT};
use crate::mem::try_push;
use crate::{Error, Result};

use super::cache::chain_bytes;
pub use super::cache::{CHAIN_BYTES, MIN_CHAIN_BUDGET};

/// One chain read back for a stub: its header, payload state and children (an inode's
/// table, at most a blockset's worth: only such inodes are evicted).
struct Back {
    bref: Blockref,
    body: Body,
    at: Where,
    summary: InodeSummary,
    kids: Vec<Back>,
    /// Its table is the one its stub kept, whose home is its blockref.
    home: Option<Box<Blockref>>,
}

impl Store {
    /// The memory the chains in memory take, counted as [`CHAIN_BYTES`] each (their
    /// payloads are the payload cache's, [`Store::cache_stats`]).
    pub fn chain_bytes(&self) -> usize {
        chain_bytes(self.arena.read().live)
    }

    /// [`Store::evict`] down to `bytes` of chains (as [`Store::chain_bytes`] counts them).
    ///
    /// **Precondition, as for [`Store::evict`]: no thread holds an id of a chain of this
    /// store** (every sync thread frozen or stopped, no write-ahead placing, no commit).
    pub fn evict_to(&self, bytes: usize) -> Result<usize> {
        self.evict(bytes / CHAIN_BYTES)
    }

    /// Run the walk `f` of `parent`'s table under the arena's read lock, reading back each
    /// stub it must see into, until it answers.
    pub(super) fn walk_table<T>(
        &self,
        parent: ChainId,
        mut f: impl FnMut(&super::Arena, &Chain) -> Result<Seen<T>>,
    ) -> Result<T> {
        loop {
            let miss = {
                let a = self.arena.read();
                match f(&a, a.get(parent)?)? {
                    Ok(t) => return Ok(t),
                    Err(m) => m,
                }
            };
            self.fill_stub(parent, miss)?;
        }
    }

    /// Read back every stub of `parent`'s table meeting `beg ..= end`: before a change
    /// there (an insert, a range growing). No stub appears meanwhile: stubs are made only
    /// where nothing else runs ([`Store::evict`]).
    pub(super) fn see_range(&self, parent: ChainId, beg: u64, end: u64) -> Result<()> {
        loop {
            let miss = {
                let a = self.arena.read();
                let table = &a.get(parent)?.children;
                // Most tables hold no stub: no search (and no allocation) for them.
                if !table.has_stubs() {
                    return Ok(());
                }
                match table.stub_over(beg, end)? {
                    None => return Ok(()),
                    Some(m) => m,
                }
            };
            self.fill_stub(parent, miss)?;
        }
    }

    /// Read back the stubs a chain's range would grow over, were its header `bref`.
    pub(super) fn see_growth(&self, id: ChainId, bref: &Blockref) -> Result<()> {
        let (parent, old_end) = {
            let a = self.arena.read();
            let c = a.get(id)?;
            (c.parent, c.bref.key_end())
        };
        match (parent, old_end.checked_add(1)) {
            (Some(p), Some(beg)) if bref.key_end() > old_end => {
                self.see_range(p, beg, bref.key_end())
            }
            _ => Ok(()),
        }
    }

    /// Record `bref` as the inode block chain `id`'s table was last committed in (a load or
    /// a commit says where that is), so that ranges of it can leave memory. A failed
    /// allocation records nothing: that table then stays in memory.
    pub fn set_home(&self, id: ChainId, bref: &Blockref) -> Result<()> {
        let fresh = match self.arena.read().get(id)?.home.is_some() {
            true => None,
            false => crate::mem::try_box(*bref).ok(),
        };
        let mut a = self.arena.write();
        let c = a.get_mut(id)?;
        match (&mut c.home, fresh) {
            (Some(h), _) => **h = *bref,
            (home, fresh) => *home = fresh,
        }
        Ok(())
    }

    /// The inode block chain `id`'s table was last committed in, if recorded
    /// ([`Store::set_home`]).
    pub fn home(&self, id: ChainId) -> Result<Option<Blockref>> {
        Ok(self.arena.read().get(id)?.home.as_deref().copied())
    }

    /// Take clean leaf blocks of tables out of memory until at most `keep` chains are live
    /// (or none is left to take); the chains freed. Only a store with a payload source and
    /// nothing changed since its last commit can (`Busy` otherwise: its changes are not on
    /// the media to read back).
    ///
    /// **Precondition: no thread holds an id of a chain of this store** (every sync thread
    /// frozen or stopped, no write-ahead placing, no commit): a chain freed here comes back
    /// under a new id when read back, and an id held across the eviction names no chain any
    /// more (`NotFound` where the holder expects its chain; see the module).
    pub fn evict(&self, keep: usize) -> Result<usize> {
        if !self.is_tracked() || self.journal_len() != 0 {
            return Err(Error::Busy);
        }
        self.evict_within(keep, &[])
    }

    /// [`Store::evict`] in a store being loaded (every chain as the media hold it, nothing
    /// tracked): in the tables of `horizons` (a table, the key its load is at), only ranges
    /// before that key (the load is still adding to the rest).
    pub(crate) fn evict_loading(&self, keep: usize, horizons: &[(ChainId, u64)]) -> Result<usize> {
        if self.is_tracked() {
            return Err(Error::Busy);
        }
        self.evict_within(keep, horizons)
    }

    fn evict_within(&self, keep: usize, horizons: &[(ChainId, u64)]) -> Result<usize> {
        if self.source.is_none() {
            return Err(Error::Busy);
        }
        let freed = self.evict_rounds(keep, horizons)?;
        // What could not go raises the bounds above it (see `Ring::chain_floor`); a failed
        // eviction leaves them as they were.
        let mut a = self.arena.write();
        let left = chain_bytes(a.live);
        if let Some(r) = a.ring.as_mut() {
            r.chain_floor = left;
        }
        Ok(freed)
    }

    fn evict_rounds(&self, keep: usize, horizons: &[(ChainId, u64)]) -> Result<usize> {
        let mut freed = 0;
        // Bottom up: a block holding blocks can go once they are stubs.
        loop {
            let mut round = 0;
            for (parent, range) in self.evictable_blocks()? {
                if self.arena.read().live <= keep {
                    return Ok(freed + round);
                }
                let ahead = horizons
                    .iter()
                    .any(|&(t, key)| t == parent && range.end >= key);
                if ahead {
                    continue;
                }
                self.host.relax();
                round += self.stub_out(parent, range)?;
            }
            freed += round;
            if round == 0 {
                return Ok(freed);
            }
        }
    }

    /// Every (table, leaf block) of a chain with a home, in slot order.
    fn evictable_blocks(&self) -> Result<Vec<(ChainId, Miss)>> {
        let mut out = Vec::new();
        let mut i = 0usize;
        loop {
            self.host.relax();
            let a = self.arena.read();
            let Some(slot) = a.slots.get(i) else {
                return Ok(out);
            };
            if let Some(c) = slot.chain.as_ref().filter(|c| c.home.is_some()) {
                let id = ChainId {
                    idx: i as u32,
                    gen: slot.gen,
                };
                let mut err = Ok(());
                c.children.leaf_blocks(|m, _| {
                    if err.is_ok() {
                        err = try_push(&mut out, (id, m));
                    }
                })?;
                err?;
            }
            i += 1;
        }
    }

    /// Whether chain `c` is as the media hold it and comes back as it is: a payload on the
    /// media or cached (one the commit padded, pinned, would not), not lent; an inode's
    /// table at most a blockset of such chains.
    fn leaves_intact(a: &super::Arena, c: &Chain) -> bool {
        let own = match c.bref.btype {
            media::BREF_TYPE_DATA | media::BREF_TYPE_INODE => {
                c.pay.at != Where::Pinned && !a.is_lent(&c.body)
            }
            media::BREF_TYPE_DIRENT => true,
            _ => false,
        };
        if !own {
            return false;
        }
        if c.children.is_bare() {
            return true;
        }
        if c.bref.btype != media::BREF_TYPE_INODE {
            return false;
        }
        // Its blockset's children must be as the media hold them (they are read back with
        // it); its stubs go with the stub, as they are. An indirect block in memory keeps it.
        let Some(mut kids) = c.children.root_leaves() else {
            return false;
        };
        if c.children.has_stubs() && c.home.is_none() {
            return false;
        }
        let ok = kids.all(|id| {
            a.get(id).is_ok_and(|k| {
                k.children.is_bare()
                    && k.bref.btype != media::BREF_TYPE_INODE
                    && Store::leaves_intact(a, k)
            })
        });
        ok
    }

    /// Stub out leaf block `range` of `parent`'s table if every chain beneath is intact;
    /// the chains freed.
    fn stub_out(&self, parent: ChainId, range: Miss) -> Result<usize> {
        let mut ids = Vec::new();
        let mut locks = Vec::new();
        let mut bodies = Vec::new();
        {
            let mut a = self.arena.write();
            let mut leaves = Vec::new();
            match a.get(parent)?.children.block_leaves(range, &mut leaves) {
                Err(Error::NotFound) => return Ok(0),
                r => r?,
            }
            for &id in &leaves {
                if !Store::leaves_intact(&a, a.get(id)?) {
                    return Ok(0);
                }
            }
            // Every id freed, grandchildren included (the blockset children of a table kept
            // with the stub too), and room for what they leave, before anything changes.
            let mut n = leaves.len();
            for &id in &leaves {
                n += a.get(id)?.children.len();
            }
            a.free.try_reserve(n)?;
            ids.try_reserve(n)?;
            locks.try_reserve(n)?;
            bodies.try_reserve(n)?;
            for &id in &leaves {
                let mut err = Ok(());
                a.get(id)?.children.visit(|_, v| {
                    if let super::children::Visit::Child(k) = v {
                        // Reserved above: the children of every leaf are counted.
                        if err.is_ok() {
                            err = try_push(&mut ids, k);
                        }
                    }
                })?;
                err?;
                try_push(&mut ids, id)?;
            }
            let mut gone = Vec::new();
            gone.try_reserve(leaves.len())?;
            let mut kept = Vec::new();
            let n_kept = leaves
                .iter()
                .filter(|&&id| a.get(id).is_ok_and(|c| c.children.has_stubs()))
                .count();
            kept.try_reserve_exact(n_kept)?;
            // The blockset children of each kept table, out of it (freed with the rest, read
            // back with it), kept here to put back should the stub not be made.
            let mut dropped: Vec<Vec<Filled>> = Vec::new();
            dropped.try_reserve_exact(n_kept)?;
            for _ in 0..n_kept {
                let mut d = Vec::new();
                d.try_reserve_exact(SET_COUNT)?;
                dropped.push(d);
            }
            let mut room = dropped.iter_mut();
            for &id in &leaves {
                let c = a.get_mut(id)?;
                if c.children.has_stubs() {
                    let d = room.next().ok_or(Error::Invalid)?;
                    let lost = c.children.drop_root_leaves(d);
                    kept.push((id, c.bref.key, core::mem::take(&mut c.children), lost));
                }
            }
            let mut tables: Vec<Kept> = Vec::new();
            let taken = tables.try_reserve_exact(kept.len()).map_err(Error::from);
            let r = taken.and_then(|()| {
                tables.extend(
                    kept.iter_mut()
                        .map(|(_, k, t, lost)| (*k, core::mem::take(t), *lost)),
                );
                a.get_mut(parent)?
                    .children
                    .stub_out(range, &mut gone, &mut tables)
            });
            if let Err(e) = r {
                // Nothing moved: the tables go back to their chains, whole.
                for ((_, _, t, _), (_, back, _)) in kept.iter_mut().zip(tables.drain(..)) {
                    *t = back;
                }
                for ((id, _, mut t, _), d) in kept.into_iter().zip(dropped.iter_mut()) {
                    t.put_back_root_leaves(d);
                    if let Ok(c) = a.get_mut(id) {
                        c.children = t;
                    }
                }
                return Err(e);
            }
            // Nothing fails from here on: the chains are unreachable already.
            for &id in &ids {
                // Only a chain gone fails here; its slot is left as it is.
                let _ = a.uncount(id);
                let slot = a.slots.get_mut(id.idx as usize).ok_or(Error::Invalid)?;
                let Some(c) = slot.chain.take() else {
                    continue;
                };
                slot.gen = slot.gen.wrapping_add(1);
                locks.push(c.lock);
                bodies.push(c.body);
                a.free.push(id.idx);
                a.live -= 1;
            }
        }
        for raw in locks {
            self.host.lock_destroy(RawLock::from_raw(raw));
        }
        drop(bodies);
        Ok(ids.len())
    }

    /// Read back stub `miss` of `parent`'s table from the table's home and put its chains in
    /// its place; nothing changes if the stub is gone meanwhile (someone else read it back).
    /// `Io` if the media do not hold what the stub stood for.
    pub(super) fn fill_stub(&self, parent: ChainId, miss: Miss) -> Result<()> {
        let mut inner = Vec::new();
        let mut kept = Vec::new();
        let (home, depth) = {
            let a = self.arena.read();
            let p = a.get(parent)?;
            if p.children.stub_over(miss.key, miss.end)? != Some(miss) {
                return Ok(());
            }
            p.children.stub_inner(miss, &mut inner, &mut kept)?;
            (*p.home.as_deref().ok_or(Error::Io)?, p.depth)
        };
        let entries = self.read_range(&home, miss.key, miss.end)?;
        let mut back = Vec::new();
        back.try_reserve(entries.len())?;
        for b in entries {
            self.host.relax();
            // What the stubs it held stand for stays on the media.
            if inner.iter().any(|m| m.key <= b.key && b.key <= m.end) {
                continue;
            }
            let gaps = kept.iter().find(|(k, _)| *k == b.key).map(|(_, g)| &g[..]);
            back.push(self.read_back(b, gaps)?);
        }
        self.install_back(parent, depth, miss, back)
    }

    /// The blockrefs of the table whose inode block is `home` with keys in `beg ..= end`,
    /// in key order (indirect blocks descended, only those overlapping the range read).
    /// Out of line, with no inode in its frame: it runs under a walk on a kernel stack.
    #[inline(never)]
    fn read_range(&self, home: &Blockref, beg: u64, end: u64) -> Result<Vec<Blockref>> {
        let bytes = self.fetch(home)?;
        let meta = bytes.get(..media::INODE_META_BYTES).ok_or(Error::Io)?;
        let meta = media::InodeMeta::decode(meta).map_err(|_| Error::Io)?;
        if meta.is_directdata() || bytes.len() != media::INODE_BYTES {
            return Err(Error::Io);
        }
        // The blockset, at the end of the inode, last first (so they come off in key order).
        let set_at = media::INODE_META_BYTES + media::FILENAME_BYTES;
        let mut todo: Vec<Blockref> = Vec::new();
        Store::push_brefs(&mut todo, bytes.get(set_at..).ok_or(Error::Io)?, SET_COUNT)?;
        let mut out = Vec::new();
        while let Some(b) = todo.pop() {
            self.host.relax();
            if b.btype == media::BREF_TYPE_EMPTY || b.key_end() < beg || b.key > end {
                continue;
            }
            if b.btype != media::BREF_TYPE_INDIRECT {
                if b.key < beg || b.key_end() > end {
                    // A child straddling the stub's range: not what a stub stood for.
                    return Err(Error::Io);
                }
                try_push(&mut out, b)?;
                continue;
            }
            let block = self.fetch(&b)?;
            Store::push_brefs(&mut todo, &block, block.len() / BREF_BYTES)?;
        }
        Ok(out)
    }

    /// Push the first `n` blockrefs of `raw` on `todo`, last first.
    fn push_brefs(todo: &mut Vec<Blockref>, raw: &[u8], n: usize) -> Result<()> {
        todo.try_reserve(n)?;
        for i in (0..n).rev() {
            let one = raw
                .get(i * BREF_BYTES..(i + 1) * BREF_BYTES)
                .ok_or(Error::Io)?;
            todo.push(Blockref::decode(one).map_err(|_| Error::Io)?);
        }
        Ok(())
    }

    /// The chain of blockref `b` as a load makes it: a DATA block left on the media, a
    /// DIRENT with its name, an inode left on the media with its summary, and its table, or,
    /// when the stub kept that table (`kept`: the key ranges of its blockset no stub of it
    /// covers), the children that left it.
    #[inline(never)]
    fn read_back(&self, b: Blockref, kept: Option<&[(u64, u64)]>) -> Result<Back> {
        let mut back = Back {
            bref: b,
            body: Body::Data(Vec::new()),
            at: Where::OnMedia,
            summary: InodeSummary::default(),
            kids: Vec::new(),
            home: None,
        };
        match b.btype {
            media::BREF_TYPE_DATA if b.size_radix() != 0 => {}
            media::BREF_TYPE_DIRENT => {
                back.at = Where::Pinned;
                if b.size_radix() != 0 {
                    back.body = Body::Data(self.fetch(&b)?);
                }
            }
            media::BREF_TYPE_INODE => {
                // On the heap, table cleared: no inode in this frame (a kernel stack).
                let Body::Inode(ino) = super::cache::decode(&b, self.fetch(&b)?)? else {
                    return Err(Error::Io);
                };
                back.summary = InodeSummary::of(&ino);
                let directdata = ino.meta.is_directdata();
                drop(ino);
                if let Some(gaps) = kept {
                    back.home = Some(crate::mem::try_box(b)?);
                    for &(beg, end) in gaps {
                        for k in self.read_range(&b, beg, end)? {
                            if k.btype == media::BREF_TYPE_INODE || back.kids.len() == SET_COUNT {
                                return Err(Error::Io);
                            }
                            try_push(&mut back.kids, self.read_back(k, None)?)?;
                        }
                    }
                } else if !directdata {
                    let table = self.read_range(&b, 0, u64::MAX)?;
                    // Only an inode with at most a blockset of children leaves memory.
                    if table.len() > SET_COUNT {
                        return Err(Error::Io);
                    }
                    for k in table {
                        if k.btype == media::BREF_TYPE_INODE {
                            return Err(Error::Io);
                        }
                        try_push(&mut back.kids, self.read_back(k, None)?)?;
                    }
                }
            }
            _ => return Err(Error::Io),
        }
        Ok(back)
    }

    /// Put the chains read back for stub `miss` of `parent` (at lock depth `depth`) in its
    /// place: every allocation made first, then one change under the arena lock.
    fn install_back(&self, parent: ChainId, depth: u8, miss: Miss, back: Vec<Back>) -> Result<()> {
        let total: usize = back.iter().map(|b| 1 + b.kids.len()).sum();
        let mut locks = Vec::new();
        locks.try_reserve(total)?;
        for _ in 0..total {
            match self.host.lock_create() {
                Ok(l) => locks.push(l.as_raw()),
                Err(e) => {
                    for raw in locks {
                        self.host.lock_destroy(RawLock::from_raw(raw));
                    }
                    return Err(e);
                }
            }
        }
        let r = self.install_locked(parent, depth, miss, back, &mut locks);
        // Locks not given to a chain (all of them on a failure).
        for raw in locks {
            self.host.lock_destroy(RawLock::from_raw(raw));
        }
        r
    }

    fn install_locked(
        &self,
        parent: ChainId,
        depth: u8,
        miss: Miss,
        back: Vec<Back>,
        locks: &mut Vec<usize>,
    ) -> Result<()> {
        let total = locks.len();
        let mut a = self.free_slots(total)?;
        let mut ids = Vec::new();
        ids.try_reserve(total)?;
        for _ in 0..total {
            let idx = a.free.pop().ok_or(Error::Invalid)?;
            let gen = a.slots.get(idx as usize).ok_or(Error::Invalid)?.gen;
            ids.push(ChainId { idx, gen });
        }
        let built = Store::build(&mut a, (parent, depth, miss), back, &ids);
        let made = match built {
            Ok(made) => made,
            Err(e) => {
                // Room for these was there before they were taken.
                a.free.extend(ids.iter().map(|id| id.idx));
                // The stub (or its table) is gone: another walk read it back meanwhile, and
                // the caller's walk, tried again, sees its chains.
                let gone = match a.get(parent) {
                    Ok(p) => p.children.stub_over(miss.key, miss.end)? != Some(miss),
                    Err(_) => true,
                };
                return match e {
                    Error::NotFound if gone => Ok(()),
                    Error::NotFound => Err(Error::Io),
                    e => Err(e),
                };
            }
        };
        // Nothing fails from here on.
        let before = a.live;
        for (id, mut b, children, up, d) in made {
            let lock = locks.pop().unwrap_or(0);
            let home = b.home.take();
            a.pay_seq = a.pay_seq.wrapping_add(1);
            let ver = a.pay_seq;
            let pay = match b.at {
                Where::OnMedia => Pay::on_media(ver),
                _ => Pay::pinned(ver),
            };
            if let Some(slot) = a.slots.get_mut(id.idx as usize) {
                slot.chain = Some(Chain {
                    bref: b.bref,
                    body: b.body,
                    children,
                    parent: Some(up),
                    depth: d.min(crate::host::CHAIN_DEPTH_MAX),
                    lock,
                    unflushed_in: 0,
                    pay,
                    dir: b.summary.dir,
                    digest: b.summary.digest,
                    carried: false,
                    home,
                });
                a.live += 1;
            }
        }
        a.chains_grew(before);
        Ok(())
    }

    /// The arena, write-locked, with at least `n` free slots.
    fn free_slots(&self, n: usize) -> Result<super::arena_lock::ArenaWrite<'_>> {
        loop {
            let mut a = self.arena.write();
            if a.free.len() >= n {
                return Ok(a);
            }
            if a.slots.wanted().is_none() {
                // Room in the slab: a new empty slot joins the free list.
                a.free.try_reserve(1)?;
                let i = a.push_empty_slot()?;
                a.free.push(i);
                continue;
            }
            drop(a);
            self.grow_slots()?;
        }
    }

    /// The chains to install for `back` under `parent` (at lock depth `depth`) in stub
    /// `miss`, on the slots `ids`, with the stub filled: (id, chain read back, its table, its
    /// parent, its lock depth). Nothing changed on an error.
    #[allow(clippy::type_complexity)]
    fn build(
        a: &mut super::Arena,
        (parent, depth, miss): (ChainId, u8, Miss),
        back: Vec<Back>,
        ids: &[ChainId],
    ) -> Result<Vec<(ChainId, Back, Children, ChainId, u8)>> {
        let mut made = Vec::new();
        made.try_reserve(ids.len())?;
        let mut entries = Vec::new();
        entries.try_reserve(back.len())?;
        // The children of kept tables, by their inode's key: they go back in with the stub.
        let mut puts: Vec<(u64, Vec<Filled>)> = Vec::new();
        let mut ids = ids.iter().copied();
        for mut b in back {
            let id = ids.next().ok_or(Error::Invalid)?;
            let kids = core::mem::take(&mut b.kids);
            let mut table = Children::default();
            let mut put = Vec::new();
            for k in kids {
                let kid = ids.next().ok_or(Error::Invalid)?;
                let (key, keybits, tid) = (k.bref.key, k.bref.keybits, k.bref.modify_tid);
                match b.home.is_some() {
                    true => try_push(&mut put, (key, keybits, tid, kid))?,
                    false => {
                        let how = super::children::Creating {
                            btype: k.bref.btype,
                            in_dir: b.summary.dir,
                        };
                        table
                            .insert(key, keybits, tid, kid, how)
                            .map_err(Error::from)?;
                    }
                }
                made.push((kid, k, Children::default(), id, depth.saturating_add(2)));
            }
            if b.home.is_some() {
                try_push(&mut puts, (b.bref.key, put))?;
            }
            entries.push((b.bref.key, b.bref.keybits, b.bref.modify_tid, id));
            made.push((id, b, table, parent, depth.saturating_add(1)));
        }
        let mut kids: Vec<(u64, &[Filled])> = Vec::new();
        kids.try_reserve_exact(puts.len())?;
        kids.extend(puts.iter().map(|(k, p)| (*k, &p[..])));
        // The media must hold exactly what the stub stood for.
        let kept = a
            .get_mut(parent)?
            .children
            .fill(miss, &entries, &kids)
            .map_err(|e| match e {
                Error::Invalid => Error::Io,
                e => e,
            })?;
        // Nothing fails from here on: the kept tables go back to their chains.
        for (key, table, _) in kept {
            let found = made
                .iter_mut()
                .find(|m| m.3 == parent && m.1.bref.key == key);
            if let Some(m) = found {
                m.2 = table;
            }
        }
        Ok(made)
    }
}
