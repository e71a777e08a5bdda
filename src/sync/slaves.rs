//! `hammer2_sync_slaves` and its helpers `hammer2_sync_insert`, `_destroy`, `_replace`, with two
//! ways to scan a differing inode's children ([`ScanMode`]).
//!
//! **Original** (the seed): merge every child of ours against the per-key focus of the others,
//! so one changed entry in a directory of N costs N comparisons.
//!
//! **Pruned**: every block table is HAMMER2's radix tree of INDIRECT blocks
//! ([`crate::store::children`]): a blockset of 4 in the inode, indirect blocks of 32 or 128
//! blockrefs below, each covering a power-of-two aligned key range (`key`/`keybits`, chosen as
//! `hammer2_chain_create_indirect` does when a table overflows, collapsed again as
//! `hammer2_chain_indirect_maintenance` does when removals leave it sparse) and carrying the
//! highest modify_tid beneath and a summary of the children beneath (count and 128-bit multiset
//! hash of their key, keybits, modify_tid). The walk follows *our* tree from the lowest key:
//! each step takes a span, either one of our indirect blocks whole or a run of at most `RUN`
//! (16) of our children up to the next indirect block, and compares its summary with the
//! summary of the same key range on the nodes whose answers decide a focus (the masters; in
//! catch-up, the followed master) holding the inode, which each computes from whatever tree it
//! has (whole indirect blocks inside the range added as they are, the at most two straddling
//! its ends descended into): the trees may be shaped differently by different insert
//! histories. An equal span is skipped whole; a differing indirect block is descended into; a
//! differing run's chains are compared one by one with the same representatives' (key, keybits,
//! modify_tid: the summary's terms, so a chain equal everywhere is an equal range of its own)
//! and only its differing keys are merged, chain by chain exactly as the original does
//! (restricted to those keys; the differing keys of many runs in one merge, one request per
//! worker). Once a table's differing child is dealt with, the rest of the table is compared as
//! one range first, and skipped whole when equal. Masters whose whole tables have equal
//! summaries when the walk begins hold the same children: each span is compared with one
//! representative of each such group (its lowest index; usually one group, the masters agree),
//! read at the span. k changed children of an inode of N, in a tree of depth d, cost O(k · d)
//! spans (each level's differing block and its siblings' spans left of it) plus O(k · `RUN`)
//! local chain comparisons and O(k) merged chains; every span visited counts in
//! `SyncStats::scanned`, like every chain compared (locally or in a merge).
//!
//! Why skipping an equal span changes nothing the original scan would have changed:
//! - *Same chains.* The summary is a function of the set of (key, keybits, modify_tid) in the
//!   range only (never of the tree's shape or history), so equal summaries mean equal sets on
//!   every compared node, up to a collision of the 128-bit hash sums (two independent 64-bit
//!   mixes per leaf; the count must match too). Any change of a child (insert, delete, a new
//!   TID, new keybits) changes its own leaf term and so every summary above it: a deletion is
//!   not hidden by an unchanged maximum TID, as a bare `mirror_tid` would be on nodes whose
//!   histories diverged.
//! - *Same per-key decision.* Only masters vote (`quorum::check`), so only they are compared: a
//!   slave or cache may hold anything and decides nothing. Inside an equal range every compared
//!   master holds the same chain at each key with the same TID, and a master not holding the
//!   inode answers "absent" for every key, as it does for the inode. The inode has a focus, so
//!   at least a quorum of masters hold it at one TID; they all hold the key at TID t and no
//!   master holds anything else there, so the quorum gives the key a focus at t
//!   (`quorum::check` counts only masters, and the quorum size depends only on the roles, the
//!   same for the inode and its keys). Our chain has TID t and the same keybits too, so the
//!   original would only have compared it: no replace, no destroy, no deferral (a child inode
//!   with the focus's TID is not looked into by either mode). Where the masters disagree inside a range (no quorum, a change
//!   in flight, a master behind), their summaries differ from ours or from each other and the
//!   walk descends to the per-key merge. Summaries are read from the nodes directly, not
//!   through the scan workers' fault hooks (`stall`, `fail`): a node whose reads fail is not
//!   counted by the quorum, so the masters that decided the inode's focus without it still hold
//!   every key of an all-equal range at the same TID, and the per-key decision is unchanged.
//! - *A group's state at the walk's start is enough.* The members of a group other than its
//!   representative are compared as they were when the walk began (no read is a snapshot of the
//!   cluster in either mode: the original's workers read each node at its own pace). Until the
//!   stamp no frontend change starts anywhere (the change sequence is checked before each change
//!   of ours and before the stamp, see [`unchanged`]), so a master's children change only by its
//!   own sync, and a sync only copies a master's chain (a focus is always one). Where a quorum of
//!   masters hold t at a key, no master's sync takes anything else there (quorums intersect;
//!   catch-up only acts without one), so a member holding t then holds it still, and one its
//!   representative left behind has yet to take the focus t the representative took: the
//!   key's focus stays t. A slave representative would give no such bound: it may hold what
//!   it was written, and its moves say nothing of the masters grouped with it.
//! - *Same order of effects.* Spans are taken in key order (a cursor only moves forward, past a
//!   skipped or merged span), so changes are made in the same key order as the original; our
//!   merges may split or free our indirect blocks meanwhile, which is why the walk keeps keys,
//!   never blocks. A scan stopped by a full deferral list records the first key not compared
//!   (the end of its span + 1 when the span was finished) and the re-scan skips everything
//!   below it, as the original's resume does.
//!
//! Both modes are run on the same randomized divergent histories and must leave identical
//! trees (`sync::tests`), and the oracle and scenario suites run in both modes.

use alloc::vec::Vec;
use core::cmp::Ordering;

use super::collect::{
    inode_focus, inode_focus_scan, Collector, Focus, Follow, Inflight, Item, Ticket,
};
use super::pool::Head;
use super::{Ctx, Deferred, Done, Resume, ScanMode, MAX_DEFER};
use crate::host::LockMode;
use crate::media::{self, Blockref, KEY_MAX};
use crate::mem::try_push;
use crate::role::MAX_NODES;
use crate::store::{inode, Body, ChainStore, HeldChain, Hint, RangeSum, Sealed, Span};
use crate::{Error, Result};

/// The focus chain's header and payload, read from its node (a DATA payload with the check code
/// its header holds for it: the copy is the one pass over its bytes a sync makes).
pub(crate) struct FocusCopy {
    pub(crate) bref: Blockref,
    pub(crate) body: Sealed,
}

impl FocusCopy {
    /// Read `f` from its node. A focus chain that vanished since it was chosen, or no longer
    /// has the key range and TID the decision was made on, means the cluster moved on: the
    /// pass is retried (`InProgress`), nothing is concluded from it. The header may come from
    /// a batch read many syncs ago, and a chain replaced by its node's own sync keeps its id
    /// without any frontend change being counted, so the id alone does not pin the chain.
    pub(crate) fn read<S: ChainStore>(ctx: &Ctx<'_, S>, f: &Focus<S::Id>) -> Result<FocusCopy> {
        let fc = FocusCopy::read_at(ctx, f.node, f.id)?;
        if super::pool::Head::of(&fc.bref) != f.head {
            return Err(Error::InProgress);
        }
        Ok(fc)
    }

    /// [`FocusCopy::read`] of chain `id` of node `node`.
    fn read_at<S: ChainStore>(ctx: &Ctx<'_, S>, node: usize, id: S::Id) -> Result<FocusCopy> {
        let store = ctx.peers.stores.get(node).ok_or(Error::Invalid)?;
        match store.read_sealed(id) {
            Ok((bref, body)) => Ok(FocusCopy { bref, body }),
            Err(Error::NotFound) => Err(Error::InProgress),
            Err(e) => Err(e),
        }
    }

    /// An inode that is synchronized bottom-up: one with a block table of its own (see
    /// [`FocusCopy::has_table`]). Any other chain is a leaf, copied whole with its TID.
    ///
    /// DEVIATION: the seed deferred every inode but a hardlink pointer, so that "if we will
    /// recurse" the TID is stamped only once the recursion completed. An inode with DIRECTDATA
    /// has nothing to recurse into: its deferred sync scanned no children (ours, if any, are
    /// destroyed with the copy, see `replace_held`) and then copied the same focus again. Taking
    /// it as a leaf gives the same chain in one step, without a round trip to every node's
    /// worker and a second copy per small file (the bulk of a first sync of small files).
    fn defers(&self) -> bool {
        self.has_table()
    }

    /// The focus chain has a block table of its own: an inode that is neither a hardlink
    /// pointer nor DIRECTDATA. Any other chain's copy has no children.
    fn has_table(&self) -> bool {
        matches!(self.body.body(), Body::Inode(ip)
            if ip.meta.objtype != media::OBJTYPE_HARDLINK && !ip.meta.is_directdata())
    }
}

/// Compare key ranges like `hammer2_chain_cmp`: Less if `a` lies wholly before `key ..= key_end`,
/// Greater if wholly after, Equal if they overlap.
fn range_cmp(a: &Blockref, key: u64, key_end: u64) -> Ordering {
    if a.key_end() < key {
        Ordering::Less
    } else if a.key > key_end {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// Synchronize inode `ip` of our node with the focus of the nodes `follow` reads
/// (HAMMER2-FACTS §3.1-4). Child inodes needing work are pushed on `list` (LIFO); `Again` when
/// any was, or when the list is full. The inode is stamped with the focus modify_tid only when
/// its whole scan succeeded and nothing was deferred. An inode catch-up mode synchronizes to
/// its highest master has its whole subtree follow that master (the deferred children too).
/// With a `ticket`, the inode's answers come from a batch request already posted (used only if
/// the change sequence is still the one the batch was posted under).
pub(crate) fn sync_slaves<'a, S: ChainStore>(
    ctx: &mut Ctx<'a, S>,
    ip: S::Id,
    follow: Follow,
    list: &mut Vec<Deferred<S::Id>>,
    isroot: bool,
    resume: &mut Option<Resume<S::Id>>,
    ticket: Option<&Ticket>,
) -> Result<Done> {
    let me = ctx.me();
    let rec = resume.take();
    // DEVIATION (bug 7): the seed read our chain's modify_tid before checking it exists; a
    // deferred inode removed meanwhile is `NotFound` here, which the driver tolerates.
    let keys = me.key_path(ip)?;
    // F2: the cluster's change sequence before the focus is read. A change in flight now, or
    // one started before a mutation below, may have reached some nodes only: a quorum of the
    // others still at the old TID would make us undo it (a master losing a committed write).
    let seq = ctx
        .peers
        .changes
        .map(|c| c.load(core::sync::atomic::Ordering::SeqCst));
    if seq.is_some_and(|s| s % 2 == 1) {
        return Err(Error::InProgress);
    }
    // The workers go on to read the inode's children: the scan below usually starts with them.
    let ticket = ticket.filter(|t| seq.is_some() && t.seq == seq);
    let (focus, inflight) = inode_focus_scan(ctx, &keys, follow, ticket)?;
    let Some(focus) = focus else {
        // No quorum for this inode: nothing to synchronize to, nothing changes.
        return Ok(Done::NoFocus);
    };
    let sync_tid = focus.head.modify_tid;
    let first = (focus.node, focus.id);
    // DEVIATION (bug 10): the seed unlocked the inode for the scan and relocked it for the final
    // update ("XXX inode lock was lost"), so a frontend change in between could be stamped over.
    // The inode stays locked exclusively from the check until the final update.
    let g = me.lock(ip, LockMode::Exclusive)?;
    let ours = me.bref(ip)?.modify_tid;
    if ours == sync_tid {
        return Ok(Done::Equal);
    }
    // Catch-up mode never moves a node backwards; below, the subtree becomes the chosen
    // master's exactly.
    if focus.catchup && ours > sync_tid {
        return Ok(Done::NoFocus);
    }
    let follow = match focus.catchup {
        true => Follow::Master(focus.node),
        false => follow,
    };
    // Continue an interrupted scan where it stopped, if nothing it relied on changed.
    let (start, undecided) = match rec {
        Some(r) if r.ip == ip && r.sync_tid == sync_tid && r.gen == me.frontend_gen() => {
            (r.key, r.undecided)
        }
        _ => (Some(0), false),
    };

    let mut scan = Scan {
        ip,
        keys: &keys,
        sync_tid,
        list,
        needrescan: false,
        undecided,
        resume,
        seq,
        inflight: Some(inflight),
        follow,
    };
    match ctx.mode {
        ScanMode::Original => {
            if let Some(k) = start {
                merge_range(ctx, &g, &mut scan, &[(k, KEY_MAX)])?;
            }
        }
        ScanMode::Pruned => {
            if let Some(k) = start {
                pruned_walk(ctx, &g, &mut scan, k)?;
            }
        }
    }
    let (needrescan, undecided) = (scan.needrescan, scan.undecided);
    if needrescan {
        return Err(Error::Again);
    }
    if undecided {
        // Not stamped: a change was in flight on part of this inode; the next pass decides.
        return Err(Error::InProgress);
    }

    // The final update, under the same lock: the quorum's inode is copied.
    let fc = final_copy(ctx, &keys, first, follow, scan.seq, sync_tid)?;
    unchanged(ctx, scan.seq)?;
    ctx.stats.destroyed += replace_held(me, &g, fc, sync_tid, isroot)?;
    ctx.stats.replaced += 1;
    Ok(Done::Equal)
}

/// The quorum's inode for the final update of an inode whose focus was `first` (node, chain).
/// Not inlined: its temporaries stay off the stack frame the whole scan runs under.
#[inline(never)]
fn final_copy<S: ChainStore>(
    ctx: &Ctx<'_, S>,
    keys: &[u64],
    first: (usize, S::Id),
    follow: Follow,
    seq: Option<u64>,
    sync_tid: u64,
) -> Result<FocusCopy> {
    // DEVIATION (bug 10): the seed re-asked the quorum here because it had let go of the inode
    // lock. We held it throughout; when no frontend change started on any node since the focus
    // was read either (the change sequence is the same), that focus is the quorum's still and
    // is reused (read again here) instead of every node's worker being asked once more for
    // each inode synchronized.
    if ctx.peers.changes.is_some() && unchanged(ctx, seq).is_ok() {
        let fc = FocusCopy::read_at(ctx, first.0, first.1)?;
        if fc.bref.modify_tid != sync_tid {
            // The focus chain moved on since it was chosen (its node's own sync replaced it):
            // it is not the quorum's any more; nothing is stamped, the next pass decides again.
            return Err(Error::InProgress);
        }
        return Ok(fc);
    }
    // DEVIATION (bug 7): the seed passed a possibly NULL focus to the final replace; with no
    // focus now the inode is not stamped and the pass is retried.
    let focus = inode_focus(ctx, keys, follow)?.ok_or(Error::InProgress)?;
    FocusCopy::read(ctx, &focus)
}

/// The state of one inode's scan, shared by the range merges of a pruned walk.
struct Scan<'s, Id> {
    ip: Id,
    keys: &'s [u64],
    sync_tid: u64,
    list: &'s mut Vec<Deferred<Id>>,
    needrescan: bool,
    undecided: bool,
    resume: &'s mut Option<Resume<Id>>,
    /// The change sequence when the focus was read (see [`unchanged`]).
    seq: Option<u64>,
    /// The workers' reads of the inode's children from key 0, begun with the focus: taken by
    /// the first merge of a range starting there.
    inflight: Option<Inflight>,
    /// Whose answers the scan follows.
    follow: Follow,
}

/// `InProgress` unless no frontend change started since the focus was read (`seq`). Checked
/// with our inode held exclusively before each change of ours: a frontend change of our
/// children must lock that inode first, so one starting after the check waits for us and
/// lands on top of what we wrote.
///
/// This is also how reads of the other nodes stay consistent (F1: they take no chain locks, so
/// a change could be seen half-done, e.g. a new file's inode with its TID but no data yet):
/// the change sequence is a seqlock around every frontend change, so everything read between
/// an even `seq` and an unchanged check was read with no change under way. Taking the other
/// nodes' chain locks shared instead would make a sync wait on every node's frontend.
fn unchanged<S: ChainStore>(ctx: &Ctx<'_, S>, seq: Option<u64>) -> Result<()> {
    let now = ctx
        .peers
        .changes
        .map(|c| c.load(core::sync::atomic::Ordering::SeqCst));
    if now != seq {
        return Err(Error::InProgress);
    }
    Ok(())
}

/// The lowest key from `key` on that lies in one of `ranges` (first and last key of each, in
/// key order), if any.
fn next_in(ranges: &[(u64, u64)], key: u64) -> Option<u64> {
    let i = ranges.partition_point(|&(_, e)| e < key);
    ranges.get(i).map(|&(b, _)| b.max(key))
}

/// Our next chain from `l` on whose key lies in one of `ranges` (None past the last), looked
/// up through the merge's `hint`.
fn clip_local<S: ChainStore>(
    me: &S,
    ip: S::Id,
    mut l: Option<(S::Id, Blockref)>,
    ranges: &[(u64, u64)],
    hint: &mut Hint,
) -> Result<Option<(S::Id, Blockref)>> {
    while let Some((_, b)) = &l {
        match next_in(ranges, b.key) {
            None => return Ok(None),
            Some(k) if k == b.key => break,
            // A chain reaching into the next range from below it is not the range's (as the
            // summaries, which count a chain at its key, have it); past it, or to that range.
            Some(k) if b.key_end() >= k => l = me.next_from(ip, b, KEY_MAX, hint)?,
            Some(k) => l = me.lookup_from(ip, k, KEY_MAX, hint)?,
        }
    }
    Ok(l)
}

/// The collector's next item from `it` on that lies in one of `ranges` (None past the last):
/// a focus whose key does, or an undecided range overlapping one (our chains there are kept).
fn clip_item<S: ChainStore>(
    coll: &mut Collector<'_, S>,
    mut it: Option<Item<S::Id>>,
    ranges: &[(u64, u64)],
) -> Result<Option<Item<S::Id>>> {
    while let Some(i) = &it {
        let (k, kend) = i.range();
        match (next_in(ranges, k), i) {
            (None, _) => return Ok(None),
            (Some(n), _) if n == k => break,
            (Some(n), Item::Undecided { .. }) if n <= kend => break,
            _ => it = coll.next_item()?,
        }
    }
    Ok(it)
}

/// The seed's merge scan over the children of `scan.ip` whose key lies in one of `ranges`
/// (first and last key of each, in key order, at least one): every chain of ours there
/// against the per-key focus of the others, all ranges in one request per node. `Ok(false)`
/// when the deferral list filled up (`scan.resume` then says where to continue).
fn merge_range<'a, S: ChainStore>(
    ctx: &mut Ctx<'a, S>,
    g: &S::Guard<'a>,
    scan: &mut Scan<'_, S::Id>,
    ranges: &[(u64, u64)],
) -> Result<bool> {
    let me = ctx.me();
    let ip = scan.ip;
    let (Some(&(beg, _)), Some(&(_, end))) = (ranges.first(), ranges.last()) else {
        return Ok(true);
    };
    // Any later merge must ask anew: the workers' streams are consumed by this one.
    let inflight = scan.inflight.take();
    let mut coll = Collector::new(ctx, scan.keys, scan.follow, ranges, inflight.as_ref())?;
    // Our chains are walked child after child: each step goes on from the last one's place in
    // our table (a change of ours there sends it back to a search).
    let mut hint = Hint::default();
    let first = me.lookup_from(ip, beg, KEY_MAX, &mut hint)?;
    let mut local = clip_local(me, ip, first, ranges, &mut hint)?;
    let first = coll.next_item()?;
    let mut item = clip_item(&mut coll, first, ranges)?;
    loop {
        ctx.poll()?;
        let n = match (&local, &item) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((_, lb)), Some(it)) => {
                let (k, kend) = it.range();
                match range_cmp(lb, k, kend) {
                    // Overlapping but not the same key: ours goes, the focus's comes next.
                    Ordering::Equal if lb.key != k && matches!(it, Item::Focus(_)) => {
                        Ordering::Less
                    }
                    o => o,
                }
            }
        };
        ctx.stats.scanned += 1;
        // DEVIATION (bug 9): the seed ignored every helper's error (`nerror`), so the inode could
        // be stamped over a failed child. Each error returns at once, before any stamp.
        match (n, local, item) {
            (Ordering::Less, Some((l, lb)), _) => {
                unchanged(ctx, scan.seq)?;
                let n = destroy(ctx, g, l, &lb)?;
                local = clip_local(me, ip, n, ranges, &mut hint)?;
            }
            // A change in flight: leave our chain as it is, decide nothing.
            // The range may hold several of our chains (a failed node's gap): each is kept, and
            // the item is passed once our next chain lies after it.
            (Ordering::Equal, Some((_, lb)), Some(Item::Undecided { .. })) => {
                scan.undecided = true;
                let n = me.next_from(ip, &lb, KEY_MAX, &mut hint)?;
                local = clip_local(me, ip, n, ranges, &mut hint)?;
            }
            (Ordering::Greater, _, Some(Item::Undecided { .. })) => {
                scan.undecided = true;
                let n = coll.next_item()?;
                item = clip_item(&mut coll, n, ranges)?;
            }
            (Ordering::Equal, Some((l, lb)), Some(Item::Focus(f))) => {
                let after = if differs(&lb, &f.head) {
                    take_focus(ctx, g, scan, Some((l, &lb)), &f)?
                } else {
                    lb
                };
                let n = me.next_from(ip, &after, KEY_MAX, &mut hint)?;
                local = clip_local(me, ip, n, ranges, &mut hint)?;
                let n = coll.next_item()?;
                item = clip_item(&mut coll, n, ranges)?;
            }
            (Ordering::Greater, _, Some(Item::Focus(f))) => {
                let after = take_focus(ctx, g, scan, None, &f)?;
                let n = me.next_from(ip, &after, KEY_MAX, &mut hint)?;
                local = clip_local(me, ip, n, ranges, &mut hint)?;
                let n = coll.next_item()?;
                item = clip_item(&mut coll, n, ranges)?;
            }
            _ => return Err(Error::Invalid),
        }
        if scan.needrescan && scan.list.len() >= MAX_DEFER {
            let next = |o: Option<u64>, k: u64| Some(o.map_or(k, |m: u64| m.min(k)));
            let mut key = None;
            if let Some((_, lb)) = &local {
                key = next(key, lb.key);
            }
            if let Some(it) = &item {
                key = next(key, it.range().0);
            }
            // Nothing left in these ranges: the scan goes on after them (a pruned walk has
            // more ranges to look at; the whole key space ends at KEY_MAX).
            if key.is_none() {
                key = end.checked_add(1);
            }
            *scan.resume = Some(Resume {
                ip,
                sync_tid: scan.sync_tid,
                gen: me.frontend_gen(),
                key,
                undecided: scan.undecided,
            });
            ctx.stats.rescans += 1;
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether our chain `lb`, at the focus `f`'s key, must take the focus's content: its
/// modify_tid differs (`hammer2_sync_slaves` compares nothing else), or its keybits do.
///
/// DEVIATION: the C takes an equal modify_tid for an equal chain, so a chain of ours holding
/// the focus's TID over another key range is never replaced: a narrower one (a DATA block of
/// another logical size) stays under a stamped inode for good, and a wider one meets the
/// quorum's next chain inside it as an insert over an existing chain (bug 12), which destroys
/// ours and loses the key it shared with the focus. One TID with two widths cannot come from
/// one history, but volumes filled apart give one (`mount::mark_foreign` gives the parent of
/// such a chain TID 0, not the chain, whose TID still matches). The quorum counts
/// TIDs only, as `hammer2_cluster_check` does (its check of keybits among the agreeing
/// chains only flags them); the focus is the lowest-indexed master holding the quorum's TID,
/// so every node takes that one's width. The type is not compared: the summaries by which
/// the pruned walk skips equal spans carry key, keybits and TID only, and the type of a
/// table's chains follows from its parent's kind, which the parent's own replace settles.
fn differs(lb: &Blockref, f: &Head) -> bool {
    lb.modify_tid != f.modify_tid || lb.keybits != f.keybits
}

/// Make the focus chain `f` ours: replace our chain `ours` at its key, or insert a copy where we
/// have none (`hammer2_sync_replace` / `_insert`). A child inode gets TID 0 and is deferred for
/// its own bottom-up sync; anything else takes the focus's TID. Returns the header the merge
/// continues after: for a replace ours as it was or as it is, whichever range is wider; the
/// new chain's for an insert.
fn take_focus<'a, S: ChainStore>(
    ctx: &mut Ctx<'a, S>,
    g: &S::Guard<'a>,
    scan: &mut Scan<'_, S::Id>,
    ours: Option<(S::Id, &Blockref)>,
    f: &Focus<S::Id>,
) -> Result<Blockref> {
    let fc = FocusCopy::read(ctx, f)?;
    let defer = fc.defers();
    let mtid = if defer { 0 } else { fc.bref.modify_tid };
    unchanged(ctx, scan.seq)?;
    let (c, after) = match ours {
        Some((l, lb)) => {
            replace(ctx, g, l, fc, mtid)?;
            // The merge goes on past whichever range is wider, ours before or after, as the C
            // does: `hammer2_chain_next` takes the next key from the replaced chain's new
            // keybits, so a widened chain is not met again; a narrowed one had nothing of ours
            // inside its old range. Only destroying the chains the widened one covers is a
            // DEVIATION (see `destroy_covered`).
            let nb = ctx.me().bref(l)?;
            (l, if nb.key_end() > lb.key_end() { nb } else { *lb })
        }
        None => insert(ctx, g, fc, mtid)?,
    };
    if defer {
        push_defer(ctx, scan.list, c, scan.follow)?;
        scan.needrescan = true;
    }
    Ok(after)
}

/// The pruned scan (see the module docs): walk our block table from key `start` by spans
/// (an indirect block whole, or a run of at most `RUN` children), compare each span's summary
/// with the same key range's summary on one representative of each group of masters holding
/// the inode whose whole tables were equal when the walk began ([`representatives`]), skip
/// equal spans, descend into a differing indirect block and merge a differing run chain by
/// chain. `Ok(false)` when the deferral list filled up.
///
/// Only a cursor (every key below it is done) and the stack of ranges known to differ that
/// hold it are kept: our merges may split, collapse or free indirect blocks, so the walk
/// re-descends from the blockset at each step (O(depth)) instead of holding on to blocks. A
/// range known to differ is never compared again; the stack's ranges are nested, aligned, and
/// shrink by at least one keybit per level, so it never holds more than 66 of them.
///
/// A differing run is not merged whole: its chains are compared key by key with the
/// representatives' ([`diff_run`], read from the nodes directly as the summaries are), and only
/// the keys that differ are merged. A merge asks every worker anew (a wakeup and a round trip
/// each), so the differing keys of many runs are gathered (up to [`MAX_RANGES`] key ranges)
/// and merged together, one request per worker naming them all. Where every run differs but
/// few of its chains do, the walk thus costs a summary per span and a local comparison per
/// chain, and the per-key merge with its round trips only for the chains that differ.
fn pruned_walk<'a, S: ChainStore>(
    ctx: &mut Ctx<'a, S>,
    g: &S::Guard<'a>,
    scan: &mut Scan<'_, S::Id>,
    start: u64,
) -> Result<bool> {
    let me = ctx.me();
    let n = ctx.peers.stores.len().min(MAX_NODES);
    // The inode on every node whose answers decide a focus (the masters; in catch-up, the
    // followed master) that holds it. Any other node cannot change a per-key decision: a slave
    // or cache never votes, and a master without the inode answers Absent for every key, as
    // it does for the inode (see the module docs). So only these are compared.
    let mut others: [Option<S::Id>; MAX_NODES] = [None; MAX_NODES];
    for (j, o) in others.iter_mut().enumerate().take(n) {
        if scan.follow.votes(j, ctx.idx, ctx.peers.roles) {
            *o = ctx.peers.stores[j].resolve_keys(scan.keys)?;
        }
    }
    // The inode vanished from a node mid-walk: the cluster is moving, so nothing is skipped
    // any more (every span is merged, as the original scan would; its collector copes). The
    // followed master without the inode is such a move.
    let mut vanished =
        matches!(scan.follow, Follow::Master(m) if others.get(m).is_some_and(|o| o.is_none()));
    // Each span is compared with one master per group of equal tables, the others as they
    // were now, right after the inode's focus was read (see the module docs for why that is
    // enough); a frontend change meanwhile is caught before the stamp (`unchanged`).
    let reps = representatives(ctx, &others, n)?;
    let mut open: Vec<(u64, u64)> = Vec::new();
    open.try_reserve(MAX_OPEN)?;
    let mut cursor = start;
    // The differing key ranges not merged yet, in key order.
    let mut pending: Vec<(u64, u64)> = Vec::new();
    // The last run compared differed.
    let mut run_differed = false;
    // A table's differing child was just dealt with: the rest of the table is compared whole
    // first. With few changes it is usually equal (one comparison instead of one per span
    // left in it); otherwise the walk goes on span by span, one comparison the poorer.
    let mut rest_due = false;
    loop {
        while open.last().is_some_and(|&(_, e)| e < cursor) {
            open.pop();
            rest_due = true;
        }
        ctx.poll()?;
        let top = open.last().copied();
        let rest = core::mem::take(&mut rest_due) && !vanished;
        let span = if rest {
            let end = top.map_or(KEY_MAX, |(_, e)| e);
            Span {
                beg: cursor,
                end,
                sum: me.key_sum(scan.ip, cursor, end)?,
                indirect: false,
            }
        } else {
            me.span(scan.ip, cursor, top)?
        };
        // One indirect block, one run of children, or the rest of a table, visited.
        ctx.stats.scanned += 1;
        let mut same = !vanished;
        for (j, o) in others.iter_mut().enumerate().take(n) {
            if !same {
                break;
            }
            if reps & (1 << j) == 0 {
                continue;
            }
            if let Some(p) = o {
                #[cfg(test)]
                test_hook::SPAN_SUMS.with(|c| c[j].set(c[j].get() + 1));
                match ctx.peers.stores[j].key_sum(*p, span.beg, span.end) {
                    Ok(s) => same = s == span.sum,
                    Err(Error::NotFound) => (*o, vanished, same) = (None, true, false),
                    Err(e) => return Err(e),
                }
            }
        }
        if rest && !same {
            continue;
        }
        if !same && span.indirect {
            if open.len() >= MAX_OPEN {
                return Err(Error::Invalid);
            }
            try_push(&mut open, (span.beg, span.end))?;
            continue;
        }
        if !same {
            // Room for every range one run can add.
            if pending.len() + RUN_RANGES > MAX_RANGES {
                if !merge_range(ctx, g, scan, &pending)? {
                    return Ok(false);
                }
                pending.clear();
            }
            let mark = (pending.len(), pending.last().copied());
            let whole = vanished || diff_run(ctx, scan.ip, &others, reps, &span, &mut pending)?;
            if whole {
                // The cluster is moving: the run is merged whole, as the original would.
                vanished = true;
                rewind(&mut pending, mark);
                add_range(&mut pending, (span.beg, span.end))?;
            }
            // Not where run after run differs: the rest would differ too.
            rest_due = !run_differed;
        }
        if !span.indirect && !rest {
            run_differed = !same;
        }
        let last = span.end.checked_add(1);
        if last.is_none() && !pending.is_empty() && !merge_range(ctx, g, scan, &pending)? {
            return Ok(false);
        }
        match last {
            Some(k) => cursor = k,
            None => break,
        }
    }
    Ok(true)
}

/// Append the key range `r` to the ranges of `pending` (in key order, `r` after them all),
/// joined with the last one when they touch.
fn add_range(pending: &mut Vec<(u64, u64)>, r: (u64, u64)) -> Result<()> {
    // A merge's ranges must be in key order and disjoint (see `next_in`).
    debug_assert!(
        r.0 <= r.1 && !pending.last().is_some_and(|l| l.1 >= r.0),
        "range {r:?} not after {:?}",
        pending.last()
    );
    if let Some(last) = pending.last_mut() {
        if last.1.checked_add(1) == Some(r.0) {
            last.1 = r.1;
            return Ok(());
        }
    }
    try_push(pending, r)
}

/// Take `pending` back to what it was when it held `mark.0` ranges, the last of them
/// `mark.1`: [`add_range`] may have extended that one since, and a range added after the
/// rewind must not overlap it.
fn rewind(pending: &mut Vec<(u64, u64)>, mark: (usize, Option<(u64, u64)>)) {
    pending.truncate(mark.0);
    if let (Some(l), Some(saved)) = (pending.last_mut(), mark.1) {
        *l = saved;
    }
}

/// The next chain of `parent` on `store` whose key lies in `from ..= end` (a chain reaching
/// into it from below is not the range's, as for the summaries), as the head a merge decides
/// on; looked up through `hint`, the walk's place in that table.
fn head_in<S: ChainStore>(
    store: &S,
    parent: S::Id,
    from: Option<u64>,
    end: u64,
    hint: &mut Hint,
) -> Result<Option<Head>> {
    let Some(from) = from.filter(|&k| k <= end) else {
        return Ok(None);
    };
    let mut cur = store.lookup_from(parent, from, end, hint)?;
    while let Some((_, b)) = cur {
        if b.key >= from {
            return Ok(Some(Head::of(&b)));
        }
        cur = store.next_from(parent, &b, end, hint)?;
    }
    Ok(None)
}

/// Add to `pending` the key ranges of the differing run `span` whose chains differ: a key is
/// equal, and not merged, where our chain and every representative's ([`representatives`];
/// no other node decides a skip, see the module docs) have the same key, keybits and
/// modify_tid, which is the walk's equality (that of the summaries) on the range of that
/// one chain; anything else (a chain missing or extra anywhere, another TID or keybits, and
/// whatever overlaps it) is a differing range. After [`RUN_RANGES`] differing ranges the rest
/// of the run is one (merging equal chains changes nothing). Returns true when a
/// representative's inode vanished (the run is then merged whole, whatever was added). Not inlined: its heads
/// stay off the stack frame the walk's merges run under.
#[inline(never)]
fn diff_run<S: ChainStore>(
    ctx: &mut Ctx<'_, S>,
    ip: S::Id,
    others: &[Option<S::Id>; MAX_NODES],
    reps: u8,
    span: &Span,
    pending: &mut Vec<(u64, u64)>,
) -> Result<bool> {
    let (beg, end) = (span.beg, span.end);
    let n = ctx.peers.stores.len().min(MAX_NODES);
    let me = ctx.me();
    // Our chain and each compared representative's, at the lowest key not yet compared.
    let mut heads: [Option<Head>; MAX_NODES] = [None; MAX_NODES];
    // Each node's table is walked child after child, each step from the last one's place.
    let mut hints = [Hint::default(); MAX_NODES];
    let mut compared = 1u32 << ctx.idx;
    let read = |j: usize, from: Option<u64>, hint: &mut Hint| -> Result<Option<Head>> {
        match others[j] {
            _ if j == ctx.idx => head_in(me, ip, from, end, hint),
            Some(p) => head_in(ctx.peers.stores[j], p, from, end, hint),
            None => Ok(None),
        }
    };
    for j in 0..n {
        if j != ctx.idx && (reps & (1 << j) == 0 || others[j].is_none()) {
            continue;
        }
        compared |= 1 << j;
        match read(j, Some(beg), &mut hints[j]) {
            Ok(h) => heads[j] = h,
            Err(Error::NotFound) if j != ctx.idx => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    let nodes = || (0..n).filter(move |j| compared & (1 << j) != 0);
    let mut added = 0;
    loop {
        ctx.peers.host.relax();
        let Some(key) = nodes().filter_map(|j| heads[j].map(|h| h.key)).min() else {
            break;
        };
        let first = heads[ctx.idx];
        let equal = first.is_some_and(|h| nodes().all(|j| heads[j] == Some(h)));
        let mut last = key;
        let mut moved = true;
        // Past the chains at `key` and, for a differing key, every chain overlapping what is
        // merged so far.
        while moved {
            moved = false;
            for j in nodes() {
                let Some(h) = heads[j] else { continue };
                if h.key == key || (!equal && h.key <= last) {
                    last = last.max(h.key_end());
                    ctx.stats.scanned += u64::from(j == ctx.idx);
                    heads[j] = match read(j, h.key_end().checked_add(1), &mut hints[j]) {
                        Err(Error::NotFound) if j != ctx.idx => return Ok(true),
                        r => r?,
                    };
                    moved = !equal;
                }
            }
        }
        if equal {
            continue;
        }
        if added == RUN_RANGES - 1 {
            // The rest of the run whole.
            add_range(pending, (key, end))?;
            return Ok(false);
        }
        add_range(pending, (key, last.min(end)))?;
        added += 1;
    }
    Ok(false)
}

/// The nodes of `others` each span of a pruned walk is compared with, as a bitmask (bit `j`
/// for node `j`): the lowest-indexed node of each group whose whole tables have equal
/// summaries when the walk begins (a node whose inode vanished counts as an empty table, which
/// answers the same for every key). Not inlined: the summaries stay off the stack frame the
/// walk's merges run under.
#[inline(never)]
fn representatives<S: ChainStore>(
    ctx: &Ctx<'_, S>,
    others: &[Option<S::Id>; MAX_NODES],
    n: usize,
) -> Result<u8> {
    const _: () = assert!(MAX_NODES <= 8, "one bit per node in a u8");
    let mut whole = [RangeSum::default(); MAX_NODES];
    let mut reps = 0u8;
    for (j, o) in others.iter().enumerate().take(n) {
        let Some(p) = o else { continue };
        match ctx.peers.stores[j].key_sum(*p, 0, KEY_MAX) {
            Ok(x) => whole[j] = x,
            Err(Error::NotFound) => {}
            Err(e) => return Err(e),
        }
        if !(0..j).any(|i| reps & (1 << i) != 0 && whole[i] == whole[j]) {
            reps |= 1 << j;
        }
    }
    Ok(reps)
}

/// Differing key ranges one run adds to a pruned walk's merge at most (see [`diff_run`]).
const RUN_RANGES: usize = crate::store::RUN;

/// Differing key ranges a pruned walk gathers before it merges them (one request per worker
/// for them all): at most 4 KiB, held only as far as they are used.
const MAX_RANGES: usize = 16 * RUN_RANGES;

/// Ranges known to differ on a pruned walk's stack, at most: one per keybits value.
const MAX_OPEN: usize = 66;

fn push_defer<S: ChainStore>(
    ctx: &mut Ctx<'_, S>,
    list: &mut Vec<Deferred<S::Id>>,
    c: S::Id,
    follow: Follow,
) -> Result<()> {
    try_push(
        list,
        Deferred {
            ip: c,
            follow,
            resume: None,
        },
    )?;
    ctx.stats.deferred += 1;
    Ok(())
}

/// The payload and header our chain gets from the focus (HAMMER2-FACTS §3.5): type, methods,
/// keybits, vradix, flags and size from the focus, modify_tid `mtid`. An inode without
/// DIRECTDATA takes meta and name only and keeps our block table (our children), cleared when
/// ours was not an inode or was DIRECTDATA or the focus is a hardlink pointer; DATA, or an
/// inode with DIRECTDATA, takes all bytes.
/// The PFS root takes only the §3.6 fields. The store recomputes the check code of an inode
/// whose bytes change here; DATA, and an inode with DIRECTDATA, keep the focus's (same bytes,
/// same method).
fn copy_from_focus(
    local: Option<(&Blockref, Option<&media::InodeData>)>,
    fc: FocusCopy,
    mtid: u64,
    isroot: bool,
) -> Result<(Blockref, Sealed)> {
    let has_table = fc.has_table();
    let FocusCopy { bref: fb, body } = fc;
    let mut b = match local {
        Some((lb, _)) => *lb,
        None => Blockref::new(fb.btype, fb.key, fb.keybits),
    };
    b.btype = fb.btype;
    b.methods = fb.methods;
    b.keybits = fb.keybits;
    b.vradix = fb.vradix;
    b.flags = fb.flags;
    // DEVIATION (bug 8): the seed resized by our own size, then copied the focus's bytes with our
    // length (over-read or truncation). The size is the focus's, and so is the copied length.
    b.set_size_radix(fb.size_radix());
    b.modify_tid = mtid;
    // DEVIATION (today's layout): the seed knew INODE and DATA chains only (any other type
    // asserted). A DIRENT is a leaf like DATA whose head sits in `embed`; its name, when it has
    // no data block, in the check area, which the sealed copy carries (see `Body::seal`).
    // Today's DragonFly copies both the same way (`hammer2_sync_insert`, `hammer2_sync_replace`).
    if fb.btype == media::BREF_TYPE_DIRENT {
        b.embed = fb.embed;
    }
    // The focus's copy is ours to keep: its bytes become our payload without another copy.
    let body = match body.body() {
        // DATA, or an inode with DIRECTDATA: all bytes, unchanged, with the check code read
        // with them (its node sealed them).
        Body::Data(_) => body,
        Body::Inode(ip) if !isroot && ip.meta.is_directdata() => body,
        Body::Inode(_) => {
            let Body::Inode(mut ip) = body.into_body() else {
                return Err(Error::Invalid);
            };
            match local {
                Some((_, Some(lip))) if isroot => {
                    let focus_meta = ip.meta;
                    *ip = *lip;
                    inode::copy_pfsroot_fields(&mut ip.meta, &focus_meta);
                }
                _ if isroot => return Err(Error::Invalid),
                // Meta and name only; keep our block table...
                Some((lb, Some(lip)))
                    if has_table
                        && lb.btype == media::BREF_TYPE_INODE
                        && !lip.meta.is_directdata() =>
                {
                    ip.u = lip.u
                }
                // ...or start an empty one where ours was not an inode or was DIRECTDATA, or
                // where the focus has none (bug 13: see `replace_held`). A DIRECTDATA focus was
                // taken whole above.
                _ => ip.u = [0; media::EMBEDDED_BYTES],
            }
            Sealed::new(Body::Inode(ip))
        }
    };
    Ok((b, body))
}

/// Replace our chain `l` (a child of the inode `parent` holds) with the focus's content.
pub(crate) fn replace<'a, S: ChainStore>(
    ctx: &mut Ctx<'a, S>,
    parent: &S::Guard<'a>,
    l: S::Id,
    fc: FocusCopy,
    mtid: u64,
) -> Result<()> {
    let me = ctx.me();
    destroy_covered(ctx, parent, l, &fc.bref)?;
    let cg = me.lock_child(parent, l, LockMode::Exclusive)?;
    ctx.stats.destroyed += replace_held(me, &cg, fc, mtid, false)?;
    ctx.stats.replaced += 1;
    Ok(())
}

/// Destroy, in key order, every chain of ours under the inode `parent` holds that lies in the
/// focus's range `fb`, other than `keep` (the chain the focus replaces), each with everything
/// under it.
///
/// DEVIATION: the C's `hammer2_sync_replace` widens our chain in place
/// (`chain->bref.keybits = focus->bref.keybits` after `hammer2_chain_modify`), which neither
/// re-sorts the chain in its parent's RB tree nor looks at its neighbours: where the focus's
/// wider range covers other chains of ours, the parent's tree is left holding overlapping
/// chains, which its comparator (`hammer2_chain_cmp`) counts as one and calls a software
/// error, and the flush would write overlapping blockrefs into a block table whose lookups
/// assume disjoint ranges. This store refuses the overlap (`Exists`), so the slave would never
/// converge. The covered chains are destroyed first, as `hammer2_sync_destroy` destroys an
/// extra chain, so our table ends as the focus's.
fn destroy_covered<'a, S: ChainStore>(
    ctx: &mut Ctx<'a, S>,
    parent: &S::Guard<'a>,
    keep: S::Id,
    fb: &Blockref,
) -> Result<()> {
    let me = ctx.me();
    let end = fb.key_end();
    let mut from = fb.key;
    while let Some((c, cb)) = me.lookup(parent.id(), from, end)? {
        ctx.poll()?;
        if c != keep {
            let cg = me.lock_child(parent, c, LockMode::Exclusive)?;
            me.delete(parent, cg)?;
            ctx.stats.destroyed += 1;
        }
        match cb.key_end().checked_add(1) {
            Some(k) if k <= end => from = k,
            _ => break,
        }
    }
    Ok(())
}

/// Replace the chain `g` holds exclusively with the focus's content (`hammer2_sync_replace`).
/// Returns how many children of ours it destroyed (bug 13).
fn replace_held<'a, S: ChainStore>(
    me: &'a S,
    g: &S::Guard<'a>,
    fc: FocusCopy,
    mtid: u64,
    isroot: bool,
) -> Result<u64> {
    let lb = me.bref(g.id())?;
    // DEVIATION (bug 13): the seed replaced only the inode body, so a hardlink pointer (a leaf,
    // never deferred, so never scanned) that took the place of a directory or a file with data
    // blocks kept their children hidden under it for good. Where the focus has no block table
    // of its own, ours goes before the copy, in the same locked step as a destroy.
    let mut destroyed = 0;
    if !isroot && lb.btype == media::BREF_TYPE_INODE && !fc.has_table() {
        while let Some((c, _)) = me.lookup(g.id(), 0, KEY_MAX)? {
            let cg = me.lock_child(g, c, LockMode::Exclusive)?;
            me.delete(g, cg)?;
            destroyed += 1;
        }
    }
    // Built outside the arena lock (it allocates); nobody else changes the chain: we hold it.
    // Only an inode's payload is needed (a DATA chain's is overwritten whole), and only for
    // what it keeps of ours: not read from the media, where its table comes back cleared, so
    // the copy starts an empty table either way (the PFS root is always in memory).
    let lip = match lb.btype {
        media::BREF_TYPE_INODE if !isroot && me.payload_on_media(g.id())? => None,
        media::BREF_TYPE_INODE => match me.read(g.id())?.1 {
            Body::Inode(ip) => Some(ip),
            Body::Data(_) => None,
        },
        _ => None,
    };
    let (nb, nbody) = copy_from_focus(Some((&lb, lip.as_deref())), fc, mtid, isroot)?;
    me.replace_sealed(g, nb, nbody)?;
    Ok(destroyed)
}

/// Create our missing copy of the focus chain under the inode `parent` holds
/// (`hammer2_sync_insert`). Returns the new chain and its header.
pub(crate) fn insert<'a, S: ChainStore>(
    ctx: &mut Ctx<'a, S>,
    parent: &S::Guard<'a>,
    fc: FocusCopy,
    mtid: u64,
) -> Result<(S::Id, Blockref)> {
    let me = ctx.me();
    // DEVIATION (bug 12): the seed asserted that nothing was at the key after relocking the
    // parent, so a concurrent insert panicked. A chain found there is replaced instead (and one
    // merely overlapping the range is destroyed first).
    while let Some((c, cb)) = me.lookup(parent.id(), fc.bref.key, fc.bref.key_end())? {
        if cb.key == fc.bref.key {
            replace(ctx, parent, c, fc, mtid)?;
            return Ok((c, me.bref(c)?));
        }
        let cg = me.lock_child(parent, c, LockMode::Exclusive)?;
        me.delete(parent, cg)?;
        ctx.stats.destroyed += 1;
    }
    let (b, body) = copy_from_focus(None, fc, mtid, false)?;
    let c = me.insert_sealed(parent, b, body)?;
    ctx.stats.inserted += 1;
    Ok((c, b))
}

/// Destroy our chain `l` (and everything under it), a child of the inode `parent` holds
/// (`hammer2_sync_destroy`); returns our next chain after it.
pub(crate) fn destroy<'a, S: ChainStore>(
    ctx: &mut Ctx<'a, S>,
    parent: &S::Guard<'a>,
    l: S::Id,
    lb: &Blockref,
) -> Result<Option<(S::Id, Blockref)>> {
    let me = ctx.me();
    let cg = me.lock_child(parent, l, LockMode::Exclusive)?;
    me.delete(parent, cg)?;
    ctx.stats.destroyed += 1;
    // DEVIATION (bug 6): the seed re-looked-up through an uninitialised local `parent`; the
    // next chain is looked up through the inode we hold.
    match lb.key_end().checked_add(1) {
        Some(k) => me.lookup(parent.id(), k, KEY_MAX),
        None => Ok(None),
    }
}

/// Counters of the summary reads the pruned walk makes, for tests.
#[cfg(test)]
pub(crate) mod test_hook {
    use core::cell::Cell;

    use crate::role::MAX_NODES;

    std::thread_local! {
        /// Per node: the span summaries a walk run by this thread compared with that node's.
        pub(crate) static SPAN_SUMS: [Cell<u64>; MAX_NODES] =
            const { [const { Cell::new(0) }; MAX_NODES] };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run merged whole after [`diff_run`] extended the last pending range (it touched the
    /// run's first differing keys) replaces those keys: the ranges stay in key order and
    /// disjoint.
    #[test]
    fn a_run_merged_whole_after_its_ranges_were_added_stays_disjoint() {
        let mut pending = Vec::new();
        add_range(&mut pending, (0, 9)).unwrap();
        let mark = (pending.len(), pending.last().copied());
        // The run 10..=50's differing keys: 10..=20 joins (0, 9), then 30..=40.
        add_range(&mut pending, (10, 20)).unwrap();
        add_range(&mut pending, (30, 40)).unwrap();
        assert_eq!(pending, [(0, 20), (30, 40)]);
        rewind(&mut pending, mark);
        add_range(&mut pending, (10, 50)).unwrap();
        assert_eq!(pending, [(0, 50)]);
    }
}
