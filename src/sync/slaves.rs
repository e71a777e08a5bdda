//! `hammer2_sync_slaves` and its helpers `hammer2_sync_insert`, `_destroy`, `_replace`.

use alloc::vec::Vec;
use core::cmp::Ordering;

use super::collect::{inode_focus, Collector, Focus, Item};
use super::{Ctx, Deferred, Done, Resume, MAX_DEFER};
use crate::host::LockMode;
use crate::media::{self, Blockref, KEY_MAX};
use crate::mem::try_push;
use crate::store::{inode, Body, ChainStore, HeldChain};
use crate::{Error, Result};

/// The focus chain's header and payload, read from its node.
pub(crate) struct FocusCopy {
    pub(crate) bref: Blockref,
    pub(crate) body: Body,
}

impl FocusCopy {
    /// Read `f` from its node. A focus chain that vanished since it was chosen means the cluster
    /// moved on: the pass is retried (`InProgress`), nothing is concluded from it.
    pub(crate) fn read<S: ChainStore>(ctx: &Ctx<'_, S>, f: &Focus<S::Id>) -> Result<FocusCopy> {
        match ctx.peers.stores[f.node].read(f.id) {
            Ok((bref, body)) => Ok(FocusCopy { bref, body }),
            Err(Error::NotFound) => Err(Error::InProgress),
            Err(e) => Err(e),
        }
    }

    /// An inode that is synchronized bottom-up: any inode but a hardlink pointer (a leaf).
    fn defers(&self) -> bool {
        matches!(&self.body, Body::Inode(ip) if ip.meta.objtype != media::OBJTYPE_HARDLINK)
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

/// Synchronize inode `ip` of our node with the focus of the other nodes (HAMMER2-FACTS §3.1-4).
/// Child inodes needing work are pushed on `list` (LIFO); `Again` when any was, or when the list
/// is full. The inode is stamped with the focus modify_tid only when its whole scan succeeded
/// and nothing was deferred.
pub(crate) fn sync_slaves<'a, S: ChainStore>(
    ctx: &mut Ctx<'a, S>,
    ip: S::Id,
    list: &mut Vec<Deferred<S::Id>>,
    isroot: bool,
    resume: &mut Option<Resume<S::Id>>,
) -> Result<Done> {
    let me = ctx.me();
    let rec = resume.take();
    // DEVIATION (bug 7): the seed read our chain's modify_tid before checking it exists; a
    // deferred inode removed meanwhile is `NotFound` here, which the driver tolerates.
    let keys = me.key_path(ip)?;
    let pool = ctx.pool.ok_or(Error::Invalid)?;
    let Some(focus) = inode_focus(pool, ctx.peers, ctx.idx, &keys, ctx.brk)? else {
        // No quorum for this inode: nothing to synchronize to, nothing changes.
        return Ok(Done::NoFocus);
    };
    let sync_tid = focus.bref.modify_tid;
    // DEVIATION (bug 10): the seed unlocked the inode for the scan and relocked it for the final
    // update ("XXX inode lock was lost"), so a frontend change in between could be stamped over.
    // The inode stays locked exclusively from the check until the final update.
    let g = me.lock(ip, LockMode::Exclusive)?;
    let ours = me.bref(ip)?.modify_tid;
    if ours == sync_tid {
        return Ok(Done::Equal);
    }
    // Catch-up mode never moves a node backwards.
    if focus.catchup && ours > sync_tid {
        return Ok(Done::NoFocus);
    }
    // Continue an interrupted scan where it stopped, if nothing it relied on changed.
    let (start, mut undecided) = match rec {
        Some(r) if r.ip == ip && r.sync_tid == sync_tid && r.gen == me.frontend_gen() => {
            (r.key, r.undecided)
        }
        _ => (Some(0), false),
    };

    let mut coll = Collector::new(pool, ctx.peers, ctx.idx, &keys, ctx.brk, start)?;
    let mut local = match start {
        Some(k) => me.lookup(ip, k, KEY_MAX)?,
        None => None,
    };
    let mut item = coll.next_item()?;
    let mut needrescan = false;
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
                local = destroy(ctx, &g, l, &lb)?;
            }
            // A change in flight or a failed node: leave our chains in the range as they are
            // (the range may hold several), decide nothing.
            (Ordering::Equal, Some((_, lb)), Some(Item::Undecided { .. })) => {
                undecided = true;
                local = me.next(ip, &lb, KEY_MAX)?;
            }
            (Ordering::Greater, _, Some(Item::Undecided { .. })) => {
                undecided = true;
                item = coll.next_item()?;
            }
            (Ordering::Equal, Some((l, lb)), Some(Item::Focus(f))) => {
                // Catch-up keeps a copy of ours that is ahead of the highest master.
                let ahead = f.catchup && lb.modify_tid > f.bref.modify_tid;
                if lb.modify_tid != f.bref.modify_tid && !ahead {
                    let fc = FocusCopy::read(ctx, &f)?;
                    let defer = fc.defers();
                    let mtid = if defer { 0 } else { fc.bref.modify_tid };
                    replace(ctx, &g, l, fc, mtid)?;
                    if defer {
                        push_defer(ctx, list, l)?;
                        needrescan = true;
                    }
                }
                local = me.next(ip, &lb, KEY_MAX)?;
                item = coll.next_item()?;
            }
            (Ordering::Greater, _, Some(Item::Focus(f))) => {
                let fc = FocusCopy::read(ctx, &f)?;
                let defer = fc.defers();
                let mtid = if defer { 0 } else { fc.bref.modify_tid };
                let (c, cb) = insert(ctx, &g, fc, mtid)?;
                if defer {
                    push_defer(ctx, list, c)?;
                    needrescan = true;
                }
                local = me.next(ip, &cb, KEY_MAX)?;
                item = coll.next_item()?;
            }
            _ => return Err(Error::Invalid),
        }
        if needrescan && list.len() >= MAX_DEFER {
            let next = |o: Option<u64>, k: u64| Some(o.map_or(k, |m: u64| m.min(k)));
            let mut key = None;
            if let Some((_, lb)) = &local {
                key = next(key, lb.key);
            }
            if let Some(it) = &item {
                key = next(key, it.range().0);
            }
            *resume = Some(Resume {
                ip,
                sync_tid,
                gen: me.frontend_gen(),
                key,
                undecided,
            });
            break;
        }
    }
    if needrescan {
        return Err(Error::Again);
    }
    if undecided {
        // Not stamped: a change was in flight on part of this inode; the next pass decides.
        return Err(Error::InProgress);
    }

    // The final update, under the same lock: re-ask the quorum and copy its inode.
    // DEVIATION (bug 7): the seed passed a possibly NULL focus to the final replace; with no
    // focus now the inode is not stamped and the pass is retried.
    let focus = inode_focus(pool, ctx.peers, ctx.idx, &keys, ctx.brk)?.ok_or(Error::InProgress)?;
    let fc = FocusCopy::read(ctx, &focus)?;
    replace_held(me, &g, fc, sync_tid, isroot)?;
    ctx.stats.replaced += 1;
    Ok(Done::Equal)
}

fn push_defer<S: ChainStore>(
    ctx: &mut Ctx<'_, S>,
    list: &mut Vec<Deferred<S::Id>>,
    c: S::Id,
) -> Result<()> {
    try_push(
        list,
        Deferred {
            ip: c,
            resume: None,
        },
    )?;
    ctx.stats.deferred += 1;
    Ok(())
}

/// The payload and header our chain gets from the focus (HAMMER2-FACTS §3.5): type, methods,
/// keybits, vradix, flags and size from the focus, modify_tid `mtid`. An inode without
/// DIRECTDATA takes meta and name only and keeps our block table (our children), cleared when
/// ours was not an inode or was DIRECTDATA; DATA, or an inode with DIRECTDATA, takes all bytes.
/// The PFS root takes only the §3.6 fields. The store recomputes the check code.
fn copy_from_focus(
    local: Option<(&Blockref, Option<&media::InodeData>)>,
    fc: FocusCopy,
    mtid: u64,
    isroot: bool,
) -> Result<(Blockref, Body)> {
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
    // The focus's copy is ours to keep: its bytes become our payload without another copy.
    let body = match body {
        Body::Inode(mut ip) => {
            match local {
                Some((_, Some(lip))) if isroot => {
                    let focus_meta = ip.meta;
                    *ip = *lip;
                    inode::copy_pfsroot_fields(&mut ip.meta, &focus_meta);
                }
                _ if isroot => return Err(Error::Invalid),
                // Meta and name only; keep our block table...
                Some((lb, Some(lip)))
                    if !ip.meta.is_directdata()
                        && lb.btype == media::BREF_TYPE_INODE
                        && !lip.meta.is_directdata() =>
                {
                    ip.u = lip.u
                }
                // ...or start an empty one where ours was not an inode or was DIRECTDATA.
                _ if !ip.meta.is_directdata() => ip.u = [0; media::EMBEDDED_BYTES],
                // DIRECTDATA: all 1024 bytes.
                _ => {}
            }
            Body::Inode(ip)
        }
        Body::Data(d) => Body::Data(d),
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
    let cg = me.lock_child(parent, l, LockMode::Exclusive)?;
    replace_held(me, &cg, fc, mtid, false)?;
    ctx.stats.replaced += 1;
    Ok(())
}

/// Replace the chain `g` holds exclusively with the focus's content (`hammer2_sync_replace`).
fn replace_held<S: ChainStore>(
    me: &S,
    g: &S::Guard<'_>,
    fc: FocusCopy,
    mtid: u64,
    isroot: bool,
) -> Result<()> {
    // Built outside the arena lock (it allocates); nobody else changes the chain: we hold it.
    // Only an inode's payload is needed (a DATA chain's is overwritten whole).
    let lb = me.bref(g.id())?;
    let lip = match lb.btype {
        media::BREF_TYPE_INODE => match me.read(g.id())?.1 {
            Body::Inode(ip) => Some(ip),
            Body::Data(_) => None,
        },
        _ => None,
    };
    let (nb, nbody) = copy_from_focus(Some((&lb, lip.as_deref())), fc, mtid, isroot)?;
    me.replace(g, nb, nbody)
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
    let c = me.insert(parent, b, body)?;
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
