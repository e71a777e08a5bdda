//! The chain-store interface the synchronizer is written against.
//!
//! [`super::Store`] (the in-memory node) implements it; a real HAMMER2 node would implement the
//! same calls over its chains: key-range lookup, lock coupling, insert / replace / delete, and a
//! generation that moves whenever the frontend changes the node.

use alloc::vec::Vec;

use super::children::{Hint, Span, RUN};
use super::{Body, RangeSum, Sealed};
use crate::host::LockMode;
use crate::media::{Blockref, KEY_MAX};
use crate::Result;

/// A walk of one table: `parent`'s children overlapping a key range, in key order, each step a
/// [`ChainStore::lookup_from`] from the end of the last child returned + 1, so a store keeping
/// the hint steps to the next child instead of searching from the top. Each step answers what
/// [`ChainStore::next`] would: a child changed or gone since the last step sends the store
/// back to a search, never to another answer.
#[derive(Debug, Clone, Copy)]
pub struct TableWalk<Id> {
    parent: Id,
    /// The key the next step looks from (None: the walk is over).
    from: Option<u64>,
    end: u64,
    hint: Hint,
}

impl<Id: Copy> TableWalk<Id> {
    /// A walk of `parent`'s children overlapping `beg ..= end`.
    pub fn new(parent: Id, beg: u64, end: u64) -> Self {
        TableWalk {
            parent,
            from: Some(beg),
            end,
            hint: Hint::default(),
        }
    }

    /// The next child (the first at the first step), None once the range is exhausted.
    pub fn step<S>(&mut self, s: &S) -> Result<Option<(Id, Blockref)>>
    where
        S: ChainStore<Id = Id> + ?Sized,
    {
        let Some(beg) = self.from.filter(|&k| k <= self.end) else {
            return Ok(None);
        };
        let found = s.lookup_from(self.parent, beg, self.end, &mut self.hint)?;
        self.from = found.and_then(|(_, b)| b.key_end().checked_add(1));
        Ok(found)
    }

    /// Lookups of this walk that searched from the top instead of stepping.
    #[cfg(test)]
    pub(crate) fn searches(&self) -> u32 {
        self.hint.misses()
    }
}

/// A held chain lock (released when dropped).
pub trait HeldChain<Id> {
    /// The locked chain.
    fn id(&self) -> Id;
}

/// What the synchronizer needs from a node.
///
/// Locking rules every implementation keeps: a chain is locked only while its parent is held
/// (top-down), a chain is freed only while it and its parent are held exclusively, and reads
/// ([`ChainStore::bref`], [`ChainStore::read`], [`ChainStore::lookup`], ...) need no chain lock,
/// so a node never waits on another node's locks.
pub trait ChainStore: Sync {
    /// A chain's handle in this store.
    type Id: Copy + Eq + core::fmt::Debug;
    /// A held chain lock.
    type Guard<'a>: HeldChain<Self::Id>
    where
        Self: 'a;

    /// The PFS root inode.
    fn root(&self) -> Self::Id;
    /// A chain's header (`NotFound` for a chain that is gone).
    fn bref(&self, id: Self::Id) -> Result<Blockref>;
    /// A copy of a chain's header and payload. A store that reads payloads from its media on
    /// demand fails here with `Io` when that read fails or finds the block damaged.
    fn read(&self, id: Self::Id) -> Result<(Blockref, Body)>;
    /// [`ChainStore::read`] for a copy to install elsewhere: a store may compute the payload's
    /// check code while copying it, so installing the copy needs no second pass over its bytes.
    /// The default computes nothing ahead.
    fn read_sealed(&self, id: Self::Id) -> Result<(Blockref, Sealed)> {
        let (bref, body) = self.read(id)?;
        Ok((bref, Sealed::new(body)))
    }
    /// Whether chain `id`'s payload is on the media, not in memory: a [`ChainStore::read`]
    /// of it would read the media, and an inode would come back with its block table cleared
    /// (unless DIRECTDATA). The default keeps every payload in memory.
    fn payload_on_media(&self, _id: Self::Id) -> Result<bool> {
        Ok(false)
    }
    /// The first child of `parent` whose key range overlaps `beg ..= end`.
    fn lookup(&self, parent: Self::Id, beg: u64, end: u64) -> Result<Option<(Self::Id, Blockref)>>;
    /// [`ChainStore::lookup`] in a walk of one table, child after child: a store may keep in
    /// `hint` where the walk stood to step from there. The default searches every time.
    fn lookup_from(
        &self,
        parent: Self::Id,
        beg: u64,
        end: u64,
        hint: &mut Hint,
    ) -> Result<Option<(Self::Id, Blockref)>> {
        let _ = hint;
        self.lookup(parent, beg, end)
    }
    /// The child after `prev` within `..= end` (a lookup from the end of `prev`'s range + 1).
    fn next(
        &self,
        parent: Self::Id,
        prev: &Blockref,
        end: u64,
    ) -> Result<Option<(Self::Id, Blockref)>> {
        match prev.key_end().checked_add(1) {
            Some(k) if k <= end => self.lookup(parent, k, end),
            _ => Ok(None),
        }
    }
    /// [`ChainStore::next`] in a walk of one table, child after child: a lookup from the end of
    /// `prev`'s range + 1 through [`ChainStore::lookup_from`], so a store keeping `hint` steps
    /// to the next child instead of searching from the top.
    fn next_from(
        &self,
        parent: Self::Id,
        prev: &Blockref,
        end: u64,
        hint: &mut Hint,
    ) -> Result<Option<(Self::Id, Blockref)>> {
        match prev.key_end().checked_add(1) {
            Some(k) if k <= end => self.lookup_from(parent, k, end, hint),
            _ => Ok(None),
        }
    }
    /// The keys from the PFS root down to `id`.
    fn key_path(&self, id: Self::Id) -> Result<Vec<u64>>;
    /// The chain reached from the PFS root by following `keys`.
    fn resolve_keys(&self, keys: &[u64]) -> Result<Option<Self::Id>>;
    /// Lock any chain by coupling down from the PFS root.
    fn lock(&self, id: Self::Id, mode: LockMode) -> Result<Self::Guard<'_>>;
    /// Lock `child` of the chain `parent` holds.
    fn lock_child<'a>(
        &'a self,
        parent: &Self::Guard<'a>,
        child: Self::Id,
        mode: LockMode,
    ) -> Result<Self::Guard<'a>>;
    /// Create a child of the chain `parent` holds exclusively (check code computed here).
    fn insert(&self, parent: &Self::Guard<'_>, bref: Blockref, body: Body) -> Result<Self::Id>;
    /// [`ChainStore::insert`] of a payload whose check code may be computed already.
    fn insert_sealed(
        &self,
        parent: &Self::Guard<'_>,
        bref: Blockref,
        body: Sealed,
    ) -> Result<Self::Id> {
        self.insert(parent, bref, body.into_body())
    }
    /// Give the chain `g` holds exclusively a new header and payload (same key).
    fn replace(&self, g: &Self::Guard<'_>, bref: Blockref, body: Body) -> Result<()>;
    /// [`ChainStore::replace`] with a payload whose check code may be computed already.
    fn replace_sealed(&self, g: &Self::Guard<'_>, bref: Blockref, body: Sealed) -> Result<()> {
        self.replace(g, bref, body.into_body())
    }
    /// Delete `child` and everything under it (both it and `parent` held exclusively).
    fn delete<'a>(&'a self, parent: &Self::Guard<'a>, child: Self::Guard<'a>) -> Result<usize>;
    /// Moves whenever a frontend change locks a path of this node, before it changes anything.
    fn frontend_gen(&self) -> u64;
    /// Whether this node holds more changed data than its host lets a sync pass add to
    /// before a commit: a pass ends at its next chain operation then. The default: never.
    fn past_pinned_limit(&self) -> bool {
        false
    }
    /// Whether this node's chains in memory are past their limit (see
    /// [`super::Store::set_chain_budget`]): every node's passes hold until its host evicts.
    fn past_chain_limit(&self) -> bool {
        false
    }
    /// The summary of `parent`'s children whose key lies in `beg ..= end`: count and multiset
    /// hash of (key, keybits, modify_tid), independent of how the store lays its block table
    /// out. The default visits every child in the range; a store with summaries on its
    /// indirect blocks answers by adding whole blocks and descending only at the range's ends.
    fn key_sum(&self, parent: Self::Id, beg: u64, end: u64) -> Result<RangeSum> {
        let mut s = RangeSum::default();
        let mut hint = Hint::default();
        let mut cur = self.lookup_from(parent, beg, end, &mut hint)?;
        while let Some((_, b)) = cur {
            if b.key >= beg {
                s.add(&RangeSum::leaf(b.key, b.keybits, b.modify_tid));
            }
            cur = self.next_from(parent, &b, end, &mut hint)?;
        }
        Ok(s)
    }
    /// The next step of a pruned walk over `parent`'s block table from key `from` (see
    /// [`super::children::Children::span`]; `open`: the innermost range known to differ). The
    /// default, for a store without indirect blocks, is a run of at most [`RUN`] children.
    fn span(&self, parent: Self::Id, from: u64, open: Option<(u64, u64)>) -> Result<Span> {
        let _ = open;
        let mut sum = RangeSum::default();
        let mut hint = Hint::default();
        let mut cur = self.lookup_from(parent, from, KEY_MAX, &mut hint)?;
        let mut run = 0;
        while let Some((_, b)) = cur {
            if b.key >= from {
                if run == RUN {
                    return Ok(Span {
                        beg: from,
                        end: b.key - 1,
                        sum,
                        indirect: false,
                    });
                }
                sum.add(&RangeSum::leaf(b.key, b.keybits, b.modify_tid));
                run += 1;
            }
            cur = self.next_from(parent, &b, KEY_MAX, &mut hint)?;
        }
        Ok(Span {
            beg: from,
            end: KEY_MAX,
            sum,
            indirect: false,
        })
    }
}
