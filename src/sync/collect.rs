//! The collector: merge the other nodes' children of one inode by key and pick a focus per key
//! with the quorum (the seed's scanall XOP started with `xop_start_except(idx)` plus
//! `hammer2_xop_collect`).
//!
//! Each step takes the lowest key among the nodes' next children, asks [`quorum::check`] with our
//! own node `Excluded`, and returns the focus's chain. A key fewer than a quorum of masters hold
//! (ESRCH) is skipped as the seed's collector skips it, so our own chain there, if any, is
//! compared against the next focus and destroyed: a key only a minority holds is not part of the
//! quorum's tree. The same holds for a key masters hold without agreeing (EDEADLK).
//!
//! Except while a frontend change is in flight: the cluster applies a change node by node, so a
//! key read meanwhile may lack a quorum only because some masters have the change and others not
//! yet. Such a key (ESRCH or EDEADLK read while the cluster's change sequence was odd or moved) is
//! reported as [`Item::Undecided`]: the caller leaves its own chain alone and does not stamp the
//! inode, where the seed's skip would have destroyed it (a slave losing a directory that a change
//! under way on the masters is about to write into).

use core::sync::atomic::Ordering;

use crate::cluster::MAX_NODES;
use crate::media::{Blockref, KEY_MAX};
use crate::quorum::{self, NodeAnswer, QuorumResult, Voter};
use crate::store::ChainStore;
use crate::{Error, Result};

use super::Peers;

/// A focus chain: which node holds it, its id there, its header.
#[derive(Debug, Clone, Copy)]
pub struct Focus<Id> {
    /// The focus node.
    pub node: usize,
    /// The chain in the focus node's store.
    pub id: Id,
    /// Its header as read.
    pub bref: Blockref,
}

/// The answer of every node for the inode at `keys` (the ipcluster XOP): our node `Excluded`.
pub fn inode_focus<S: ChainStore>(
    peers: &Peers<'_, S>,
    idx: usize,
    keys: &[u64],
) -> Result<Option<Focus<S::Id>>> {
    let mut voters = [Voter {
        role: crate::cluster::Role::Cache,
        answer: NodeAnswer::Absent,
    }; MAX_NODES];
    let mut found: [Option<(S::Id, Blockref)>; MAX_NODES] = [None; MAX_NODES];
    let n = peers.stores.len().min(MAX_NODES);
    for j in 0..n {
        voters[j].role = peers.roles[j];
        if j == idx {
            voters[j].answer = NodeAnswer::Excluded;
            continue;
        }
        let s = peers.stores[j];
        if let Some(id) = s.resolve_keys(keys)? {
            let b = s.bref(id)?;
            voters[j].answer = NodeAnswer::Holds(b.modify_tid);
            found[j] = Some((id, b));
        }
    }
    Ok(match quorum::check(&voters[..n], peers.nmasters) {
        QuorumResult::Focus { node, .. } => found[node].map(|(id, bref)| Focus { node, id, bref }),
        QuorumResult::None(_) => None,
    })
}

/// One step of the merge.
#[derive(Debug, Clone, Copy)]
pub enum Item<Id> {
    /// A quorum agrees on this chain.
    Focus(Focus<Id>),
    /// No quorum for this key range while a change was in flight: nothing can be decided now.
    Undecided {
        /// First key of the range.
        key: u64,
        /// Last key of the range.
        key_end: u64,
    },
}

impl<Id> Item<Id> {
    /// The key range as a blockref-like (key, keybits-independent end) pair.
    pub fn range(&self) -> (u64, u64) {
        match self {
            Item::Focus(f) => (f.bref.key, f.bref.key_end()),
            Item::Undecided { key, key_end } => (*key, *key_end),
        }
    }
}

/// The merge over the other nodes' children of one inode.
pub struct Collector<'a, S: ChainStore> {
    peers: &'a Peers<'a, S>,
    idx: usize,
    brk: &'a dyn Fn() -> bool,
    /// Per node: the inode there (None: the node does not hold it, or is us).
    parent: [Option<S::Id>; MAX_NODES],
    /// Per node: the next key to look from (None: that node's scan is done).
    cursor: [Option<u64>; MAX_NODES],
}

impl<'a, S: ChainStore> Collector<'a, S> {
    /// Start a scan of the children of the inode at `keys` on every node but `idx`, from key
    /// `start` (None: an empty scan); `brk` is polled at every key it looks at (skipped keys
    /// included).
    pub fn new(
        peers: &'a Peers<'a, S>,
        idx: usize,
        keys: &[u64],
        brk: &'a dyn Fn() -> bool,
        start: Option<u64>,
    ) -> Result<Collector<'a, S>> {
        let mut c = Collector {
            peers,
            idx,
            brk,
            parent: [None; MAX_NODES],
            cursor: [None; MAX_NODES],
        };
        for j in 0..peers.stores.len().min(MAX_NODES) {
            if j != idx {
                c.parent[j] = peers.stores[j].resolve_keys(keys)?;
                c.cursor[j] = start;
            }
        }
        Ok(c)
    }

    /// The next key's focus (or that it is undecided), or None when every node's scan is done.
    pub fn next_item(&mut self) -> Result<Option<Item<S::Id>>> {
        let n = self.peers.stores.len().min(MAX_NODES);
        loop {
            if (self.brk)() {
                return Err(Error::InProgress);
            }
            let seq = self.peers.changes.map(|c| c.load(Ordering::SeqCst));
            let mut heads: [Option<(S::Id, Blockref)>; MAX_NODES] = [None; MAX_NODES];
            let mut lowest: Option<u64> = None;
            for (j, head) in heads.iter_mut().enumerate().take(n) {
                let (Some(p), Some(c)) = (self.parent[j], self.cursor[j]) else {
                    continue;
                };
                // A node whose inode vanished mid-scan has nothing more to offer.
                match self.peers.stores[j].lookup(p, c, KEY_MAX) {
                    Ok(h) => *head = h,
                    Err(Error::NotFound) => self.cursor[j] = None,
                    Err(e) => return Err(e),
                }
                if let Some((_, b)) = head {
                    lowest = Some(lowest.map_or(b.key, |l: u64| l.min(b.key)));
                }
            }
            let Some(key) = lowest else {
                return Ok(None);
            };
            let mut voters = [Voter {
                role: crate::cluster::Role::Cache,
                answer: NodeAnswer::Absent,
            }; MAX_NODES];
            let mut key_end = key;
            for (j, (v, head)) in voters.iter_mut().zip(heads.iter()).enumerate().take(n) {
                v.role = self.peers.roles[j];
                v.answer = match head {
                    _ if j == self.idx => NodeAnswer::Excluded,
                    Some((_, b)) if b.key == key => NodeAnswer::Holds(b.modify_tid),
                    _ => NodeAnswer::Absent,
                };
                // Every node positioned at this key moves past it.
                if let Some((_, b)) = head {
                    if b.key == key {
                        self.cursor[j] = b.key_end().checked_add(1);
                        key_end = key_end.max(b.key_end());
                    }
                }
            }
            match quorum::check(&voters[..n], self.peers.nmasters) {
                QuorumResult::Focus { node, .. } => {
                    if let Some((id, bref)) = heads[node] {
                        return Ok(Some(Item::Focus(Focus { node, id, bref })));
                    }
                    return Err(Error::Invalid);
                }
                // ESRCH / EDEADLK: no quorum for this key. Skip it, unless a change was in
                // flight while we read it.
                QuorumResult::None(Error::NoQuorum) | QuorumResult::None(Error::Deadlock) => {
                    let now = self.peers.changes.map(|c| c.load(Ordering::SeqCst));
                    if seq.is_some_and(|s| s % 2 == 1) || now != seq {
                        return Ok(Some(Item::Undecided { key, key_end }));
                    }
                }
                QuorumResult::None(e) => return Err(e),
            }
        }
    }
}
