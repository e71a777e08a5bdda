//! The synchronizer: `hammer2_sync_slaves` and the driver of `hammer2_primary_sync_thread`
//! (HAMMER2-FACTS §3), written against the [`ChainStore`] interface of the nodes of a cluster.
//!
//! - [`collect`]: the per-key focus over the other nodes (the scanall XOP + collector);
//! - [`slaves`]: the per-inode merge scan with insert / destroy / replace;
//! - [`sync_pass`] (here): one pass, with the bottom-up deferral list and the EAGAIN re-scan.

pub mod collect;
pub mod pool;
pub mod slaves;

use alloc::vec::Vec;

use crate::host::Host;
use crate::mem::try_push;
use crate::role::Role;
use crate::store::{ChainStore, Store};
use crate::thread::Brk;
use crate::{Error, Result};

/// Per-node synchronizer counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// Completed or interrupted passes.
    pub passes: u64,
    /// Chains compared.
    pub scanned: u64,
    /// Chains inserted.
    pub inserted: u64,
    /// Chains destroyed.
    pub destroyed: u64,
    /// Chains replaced.
    pub replaced: u64,
    /// Inodes deferred for bottom-up sync.
    pub deferred: u64,
    /// Scans stopped because the deferral list was full (the original's EAGAIN after 1000
    /// deferrals), each continued by a re-scan once the list was synced.
    pub rescans: u64,
}

impl SyncStats {
    /// Add `o`'s counts to these.
    pub fn add(&mut self, o: &SyncStats) {
        self.passes += o.passes;
        self.scanned += o.scanned;
        self.inserted += o.inserted;
        self.destroyed += o.destroyed;
        self.replaced += o.replaced;
        self.deferred += o.deferred;
        self.rescans += o.rescans;
    }
}

/// How a differing inode's children are scanned; both give identical trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScanMode {
    /// Compare key-range summaries and descend only where they differ: resyncing k
    /// changed children of an inode of N visits O(k · log N) indirect blocks, runs and chains.
    #[default]
    Pruned,
    /// Visit every chain of each differing inode, as the seed does.
    Original,
}

/// Most inodes a scan defers before it stops and asks for a re-scan (EAGAIN).
pub const MAX_DEFER: usize = 1000;

/// The nodes a pass reads: every node's store, the roles as the syncing node sees them, and
/// the recorded master count. Generic over the [`ChainStore`] (the in-memory [`Store`] by
/// default).
pub struct Peers<'a, S: ChainStore = Store> {
    /// Every node's store, by index.
    pub stores: &'a [&'a S],
    /// Every node's role in the syncing node's view, by index.
    pub roles: &'a [Role],
    /// The PFS roots' recorded `pfs_nmasters`.
    pub nmasters: u8,
    /// The cluster's change sequence: odd while a frontend change is being applied node by node,
    /// bumped at its start and end (a seqlock). A key without a quorum read while it is odd or
    /// moving may just be a change in flight, and is left undecided instead of destroyed.
    pub changes: Option<&'a core::sync::atomic::AtomicU64>,
    /// The host the pass's scan workers run on.
    pub host: &'static dyn Host,
    /// Per-node fault hooks for the reads synchronization makes (None: no faults).
    pub faults: Option<&'a [pool::NodeFaults]>,
    /// Catch-up mode of the syncing node: an inode with no quorum becomes, subtree and all,
    /// that of the master holding its highest TID once every master that has not failed
    /// answered, instead of changing nothing (an inode of ours at a higher TID is kept).
    pub catchup: bool,
}

/// One pass's context: who we are, what to poll, what to count.
pub(crate) struct Ctx<'a, S: ChainStore = Store> {
    pub(crate) peers: &'a Peers<'a, S>,
    pub(crate) idx: usize,
    pub(crate) brk: &'a Brk<'a>,
    pub(crate) stats: &'a mut SyncStats,
    pub(crate) mode: ScanMode,
    /// The pass's scan workers (None only in tests of single helpers).
    pub(crate) pool: Option<&'a pool::Pool<'a, S>>,
}

impl<'a, S: ChainStore> Ctx<'a, S> {
    /// Our own store.
    pub(crate) fn me(&self) -> &'a S {
        self.peers.stores[self.idx]
    }
    /// `Err(InProgress)` when a thread request asks the pass to stop.
    pub(crate) fn poll(&self) -> Result<()> {
        // DEVIATION (bug 2): the seed polled only between deferred inodes; this is called at
        // every chain operation of a scan, so a freeze is acknowledged within one operation.
        // Every chain operation is also a scheduling point: a pass over a large tree must not
        // hold its CPU for the whole pass.
        self.peers.host.relax();
        // DEVIATION (not in the original, whose changed buffers the kernel's buffer cache
        // bounds): a node holding more changed data than its host allows ends the pass here,
        // between two chain operations, as a break does; its thread idles until a freeze and
        // the commit it brackets release the data (see `Store::set_pinned_limit`).
        // DEVIATION (not in the original, whose chains HAMMER2's own chain cache drops and
        // reads back): so does any node whose chains in memory are past their limit, even
        // another's (this pass reads that node's chains back): its host evicts them while
        // every thread is frozen (see `Store::set_chain_budget`).
        if self.brk.poll()
            || self.me().past_pinned_limit()
            || self.peers.stores.iter().any(|s| s.past_chain_limit())
        {
            Err(Error::InProgress)
        } else {
            Ok(())
        }
    }
}

/// Where an inode's scan stopped when the deferral list filled up (EAGAIN), so its re-scan can
/// continue there instead of comparing every chain before it again (which made a directory of
/// n new entries cost n²/1000 comparisons). Valid only for the same inode, the same focus TID
/// (the focus's subtree is the same) and no frontend change on our node since (our chains before
/// the key are as the scan left them); a deferred child that ends without reaching the focus
/// drops every record, so its parent compares it again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resume<Id> {
    pub(crate) ip: Id,
    pub(crate) sync_tid: u64,
    pub(crate) gen: u64,
    /// The first key not yet compared (None: nothing left).
    pub(crate) key: Option<u64>,
    /// A key was left undecided before `key`.
    pub(crate) undecided: bool,
}

/// What a successful [`slaves::sync_slaves`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    /// The inode holds the focus's TID (it was stamped, or already did).
    Equal,
    /// No quorum for this inode: nothing was changed.
    NoFocus,
}

/// One entry of the deferral list.
pub(crate) struct Deferred<Id> {
    pub(crate) ip: Id,
    /// Whose answers its sync follows (the parent's: a catch-up subtree stays with its master).
    pub(crate) follow: collect::Follow,
    pub(crate) resume: Option<Resume<Id>>,
}

/// One synchronization pass of node `idx` (HAMMER2-FACTS §3.7): sync the PFS root; while it
/// answers EAGAIN, sync the deferred inodes bottom-up (LIFO, an entry popped only once its own
/// sync added no new deferral), then the root again. On a break or an error the leftover
/// deferrals are dropped and the error (`InProgress` for a break) returned.
///
/// Starts scan workers for this pass alone and joins them before it returns; the cluster's sync
/// threads keep one set per node instead ([`sync_pass_pooled`]).
pub fn sync_pass<S>(
    peers: &Peers<'_, S>,
    idx: usize,
    brk: &dyn Fn() -> bool,
    stats: &mut SyncStats,
    mode: ScanMode,
) -> Result<()>
where
    S: ChainStore + 'static,
    S::Id: Send + 'static,
{
    // The workers are joined when `pool` drops, before this returns (whatever the outcome).
    let pool = pool::Pool::start(peers, idx)?;
    sync_pass_pooled(peers, &pool, idx, &Brk::new(brk), stats, mode)
}

/// [`sync_pass`] with scan workers started beforehand (the cluster keeps one set per node, so a
/// pass spawns no thread), and a sync thread's [`Brk`]. Every request is abandoned before this
/// returns.
pub(crate) fn sync_pass_pooled<S: ChainStore>(
    peers: &Peers<'_, S>,
    pool: &pool::Pool<'_, S>,
    idx: usize,
    brk: &Brk<'_>,
    stats: &mut SyncStats,
    mode: ScanMode,
) -> Result<()> {
    if idx >= peers.stores.len() || peers.roles.len() != peers.stores.len() {
        return Err(Error::Invalid);
    }
    let r = pass(peers, pool, idx, brk, stats, mode);
    pool.park_all();
    r
}

/// The pass itself, on checked arguments.
fn pass<S: ChainStore>(
    peers: &Peers<'_, S>,
    pool: &pool::Pool<'_, S>,
    idx: usize,
    brk: &Brk<'_>,
    stats: &mut SyncStats,
    mode: ScanMode,
) -> Result<()> {
    let mut ctx = Ctx {
        peers,
        idx,
        brk,
        stats,
        mode,
        pool: Some(pool),
    };
    // A node held past its pinned limit (see `Ctx::poll`) ends the pass before the root's
    // scan asks every node for its children: its thread polls again at every idle tick.
    if ctx.me().past_pinned_limit() || ctx.peers.stores.iter().any(|s| s.past_chain_limit()) {
        return Err(Error::InProgress);
    }
    let root = ctx.me().root();
    let mut list: Vec<Deferred<S::Id>> = Vec::new();
    let mut root_resume = None;
    let mut batch = Batch::new();
    loop {
        match slaves::sync_slaves(
            &mut ctx,
            root,
            collect::Follow::Quorum,
            &mut list,
            true,
            &mut root_resume,
            None,
        ) {
            Err(Error::Again) => {}
            r => return r.map(|_| ()),
        }
        while let Some(top) = list.last() {
            let (ip, follow) = (top.ip, top.follow);
            let ticket = batch.ticket(&ctx, pool, &list)?;
            let mut resume = list.last_mut().and_then(|t| t.resume.take());
            let before = list.len();
            let r = slaves::sync_slaves(
                &mut ctx,
                ip,
                follow,
                &mut list,
                false,
                &mut resume,
                ticket.as_ref(),
            );
            if let Some(e) = list.get_mut(before - 1) {
                e.resume = resume;
            }
            match r {
                Ok(Done::Equal) | Err(Error::Again) => {}
                // No focus, or (ENOENT) the inode went away meanwhile: the parent's re-scan
                // must look at it again, so no scan resumes past it.
                Ok(Done::NoFocus) | Err(Error::NotFound) => {
                    root_resume = None;
                    list.iter_mut().for_each(|d| d.resume = None);
                }
                Err(e) => return Err(e),
            }
            ctx.poll()?;
            if list.len() == before {
                list.pop();
            }
        }
    }
}

/// Most deferred inodes one batch request asks for.
const BATCH_MAX: usize = 64;

/// The deferred inodes at the top of the list, asked of every worker in one request: a worker
/// woken once answers them one after the other (stopping only for a full FIFO), so syncing a
/// list of small inodes no longer costs every worker a wakeup per inode, nor the collector a
/// sleep on each. The list is LIFO, so the batch names the entries from the top down; it
/// serves them as long as they come in that order (a sync that defers more inodes puts others
/// on top) and nobody asked the workers anything else (a sync that asks for a range of its own
/// or for its final update abandons the batch).
///
/// DEVIATION: the seed's sync started one XOP per deferred inode, so its backends read an
/// inode only once the previous one was done; here the workers read the next inodes of the
/// list ahead. Nothing decides on them before their own sync: it takes their answers only
/// when the cluster's change sequence is still the one the batch was posted under, so they
/// were read with no frontend change under way, as its own request's would have been.
struct Batch<Id> {
    paths: pool::Paths,
    /// Our inodes, in the order asked.
    ids: Vec<Id>,
    /// The entry of `ids` the next sync takes.
    next: usize,
    follow: collect::Follow,
    ticket: collect::Ticket,
    /// How many inodes the next batch asks for: doubled after a batch served every inode it
    /// asked for, cut to twice the number served after one abandoned early, so inodes whose
    /// syncs ask anew (a batch read ahead for nothing) cost at most about as much again.
    size: usize,
}

impl<Id: Copy + PartialEq> Batch<Id> {
    fn new() -> Batch<Id> {
        Batch {
            paths: pool::Paths::default(),
            ids: Vec::new(),
            next: 0,
            follow: collect::Follow::Quorum,
            ticket: collect::Ticket::default(),
            size: 2,
        }
    }

    /// The ticket of the list's top entry: from the current batch when it names that entry
    /// next and is still wholly current, else from a new batch of the top entries (None when
    /// no batch fits: an entry resuming a scan, fewer than two entries, no change sequence).
    fn ticket<S: ChainStore<Id = Id>>(
        &mut self,
        ctx: &Ctx<'_, S>,
        pool: &pool::Pool<'_, S>,
        list: &[Deferred<Id>],
    ) -> Result<Option<collect::Ticket>> {
        // Without a change sequence every final update asks its inode again (see
        // `slaves::final_copy`), which would abandon every batch after its first inode.
        let Some(changes) = ctx.peers.changes else {
            return Ok(None);
        };
        let seq = changes.load(core::sync::atomic::Ordering::SeqCst);
        let Some(top) = list.last() else {
            return Ok(None);
        };
        if top.resume.is_some() || seq % 2 == 1 {
            return Ok(None);
        }
        let live = |b: &Self| {
            (0..crate::role::MAX_NODES)
                .filter(|&j| b.ticket.asked & (1 << j) != 0)
                .all(|j| pool.current(j, b.ticket.gens[j]))
        };
        if self.ids.get(self.next) == Some(&top.ip)
            && self.follow == top.follow
            && self.ticket.seq == Some(seq)
            && live(self)
        {
            return Ok(Some(self.take()));
        }
        if !self.ids.is_empty() {
            self.size = match self.next < self.ids.len() {
                true => self.next * 2,
                false => self.size * 2,
            }
            .clamp(2, BATCH_MAX);
        }
        self.paths.clear();
        self.ids.clear();
        self.next = 0;
        // The batch only saves wakeups: no failure building or posting it may fail the pass.
        // Any error (gone, EIO, no memory) ends the batch before that entry, whose own sync
        // meets and reports it; reserving `ids` first keeps it as long as `paths`.
        if self.ids.try_reserve(self.size).is_err() {
            return Ok(None);
        }
        let me = ctx.me();
        for e in list.iter().rev().take(self.size) {
            if e.resume.is_some() || e.follow != top.follow {
                break;
            }
            ctx.peers.host.relax();
            let Ok(keys) = me.key_path(e.ip) else { break };
            if self.paths.push(&keys).is_err() || try_push(&mut self.ids, e.ip).is_err() {
                break;
            }
        }
        if self.ids.len() < 2 {
            self.ids.clear();
            return Ok(None);
        }
        let n = ctx.peers.stores.len().min(crate::role::MAX_NODES);
        let (follow, idx) = (top.follow, ctx.idx);
        let mut ticket = collect::Ticket {
            seq: Some(seq),
            ..Default::default()
        };
        let r = pool.request_all(
            (0..n).filter(|&j| follow.asks(j, idx)),
            pool::Ask::Many(&self.paths),
            Some(&[(0, crate::media::KEY_MAX)]),
            |j, g| {
                ticket.gens[j] = g;
                ticket.asked |= 1 << j;
            },
        );
        self.ticket = ticket;
        self.follow = follow;
        if r.is_err() {
            // The top entry's own request asks again and reports what fails.
            self.ids.clear();
            return Ok(None);
        }
        Ok(Some(self.take()))
    }

    /// The ticket of the batch's next inode.
    fn take(&mut self) -> collect::Ticket {
        let mut t = self.ticket;
        t.item = self.next as u32;
        self.next += 1;
        t
    }
}

#[cfg(test)]
mod tests;
