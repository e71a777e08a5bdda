//! The collector: merge the other nodes' children of one inode by key and pick a focus per key
//! with the quorum (the seed's scanall XOP started with `xop_start_except(idx)` plus
//! `hammer2_xop_collect`).
//!
//! The nodes are read by per-node workers ([`super::pool`]); each step takes the lowest key among
//! the answers so far, asks [`quorum::check`] with our own node `Excluded` and nodes not yet
//! answered `Pending`, and returns the focus's chain as soon as the quorum decides, so a stalled
//! node does not hold up a key the others can decide. A node whose read failed is `Failed`: a key
//! it could have decided, and any gap before the next answered key it could have filled, comes
//! back [`Item::Undecided`] (never "absent"), so nothing is destroyed because a node failed.
//!
//! A key fewer than a quorum of masters hold (ESRCH) is skipped as the seed's collector skips it, so our own chain there, if any, is
//! compared against the next focus and destroyed: a key only a minority holds is not part of the
//! quorum's tree. The same holds for a key masters hold without agreeing (EDEADLK).
//!
//! Except while a frontend change is in flight: the cluster applies a change node by node, so a
//! key read meanwhile may lack a quorum only because some masters have the change and others not
//! yet. Such a key (ESRCH or EDEADLK read while the cluster's change sequence was odd or moved) is
//! reported as [`Item::Undecided`]: the caller leaves its own chain alone and does not stamp the
//! inode, where the seed's skip would have destroyed it (a slave losing a directory that a change
//! under way on the masters is about to write into).
//!
//! Catch-up mode (HAMMER2-FACTS §2, "synchronize to the highest available update_tid"): an inode
//! no quorum agrees on, once every master that has not failed has answered, takes as focus the
//! master holding the highest TID (lowest index on ties), and the whole subtree under it then
//! follows that master alone ([`Follow::Master`]): a quorum of one, so every key it holds is a
//! focus, every key it lacks is skipped (destroyed), and nothing is decided before it answered.

use core::sync::atomic::Ordering;

use crate::media::KEY_MAX;
use crate::quorum::{self, NodeAnswer, QuorumResult, Voter};
use crate::role::{Role, MAX_NODES};
use crate::store::ChainStore;
use crate::thread::Brk;
use crate::{Error, Result};

use super::pool::{Ask, Head, Msg, Pool};
use super::{Ctx, Peers};

/// A focus chain: which node holds it, its id there, its header.
#[derive(Debug, Clone, Copy)]
pub struct Focus<Id> {
    /// The focus node.
    pub node: usize,
    /// The chain in the focus node's store.
    pub id: Id,
    /// Its header as read (what the merge decides on).
    pub head: Head,
    /// Chosen by catch-up mode (the highest master's TID, no quorum), not by a quorum: an inode
    /// of ours at a higher TID is left alone (a node never moves backwards), and the subtree
    /// follows [`Focus::node`] alone.
    pub catchup: bool,
}

/// One step of the merge.
#[derive(Debug, Clone, Copy)]
pub enum Item<Id> {
    /// A quorum agrees on this chain.
    Focus(Focus<Id>),
    /// Nothing can be decided for this key range now: a change was in flight, or a failed node
    /// could have decided it.
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
            Item::Focus(f) => (f.head.key, f.head.key_end()),
            Item::Undecided { key, key_end } => (*key, *key_end),
        }
    }
}

/// One node's state in a merge.
#[derive(Debug, Clone, Copy)]
enum Slot<Id> {
    /// Not asked (our own node, or an empty scan).
    Off,
    /// Asked, no answer queued yet.
    Pending,
    /// Its next chain (or its inode), not yet consumed.
    Head(Id, Head),
    /// Answered: nothing (more).
    Done,
    /// Its read failed: its answer is unknown for every key from here on.
    Failed,
}

/// Whose answers decide a focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// A quorum of the masters (in catch-up mode, an inode without one follows its highest
    /// master).
    Quorum,
    /// This master alone: the subtree of an inode catch-up mode synchronized to it.
    Master(usize),
}

impl Follow {
    /// Whether node `j` is read when node `idx` syncs: every other node for a quorum, the
    /// followed master alone otherwise.
    pub(crate) fn asks(self, j: usize, idx: usize) -> bool {
        j != idx
            && match self {
                Follow::Quorum => true,
                Follow::Master(m) => j == m,
            }
    }

    /// Whether node `j`'s answers can decide a focus when node `idx` syncs: a master it asks
    /// (for one master, that master, whatever its role: it alone decides).
    pub(crate) fn votes(self, j: usize, idx: usize, roles: &[Role]) -> bool {
        self.asks(j, idx)
            && match self {
                Follow::Quorum => roles.get(j) == Some(&Role::Master),
                Follow::Master(_) => true,
            }
    }
}

/// The roles and master count a [`Follow`] decides with: the syncing node's view for a quorum;
/// for one master, that master alone as the only master of a cluster of one, so
/// [`quorum::check`] waits for it, takes every key it holds and skips every key it lacks.
struct Electorate {
    roles: [Role; MAX_NODES],
    nmasters: u8,
}

impl Electorate {
    fn of<S: ChainStore>(peers: &Peers<'_, S>, follow: Follow) -> Electorate {
        let mut roles = [Role::Cache; MAX_NODES];
        match follow {
            Follow::Quorum => {
                for (r, p) in roles.iter_mut().zip(peers.roles) {
                    *r = *p;
                }
                Electorate {
                    roles,
                    nmasters: peers.nmasters,
                }
            }
            Follow::Master(m) => {
                if let Some(r) = roles.get_mut(m) {
                    *r = Role::Master;
                }
                Electorate { roles, nmasters: 1 }
            }
        }
    }
}

/// The voters over `slots`: for `key` (a head holds it only at that key), or for the gap before
/// every head (`None`: no answered node holds anything there).
fn voters<Id>(roles: &[Role], slots: &[Slot<Id>], key: Option<u64>) -> [Voter; MAX_NODES] {
    let mut v = [Voter {
        role: Role::Cache,
        answer: NodeAnswer::Absent,
    }; MAX_NODES];
    for (j, (v, s)) in v.iter_mut().zip(slots).enumerate() {
        v.role = roles.get(j).copied().unwrap_or(Role::Cache);
        v.answer = match s {
            // Not asked: our own node, whose chains are what the merge checks against the
            // focus and never a vote for it, in a key's decision and a gap's alike (and,
            // when one master is followed, every other node).
            Slot::Off => NodeAnswer::Excluded,
            Slot::Pending => NodeAnswer::Pending,
            Slot::Head(_, b) if key == Some(b.key) => NodeAnswer::Holds(b.modify_tid),
            Slot::Head(..) | Slot::Done => NodeAnswer::Absent,
            Slot::Failed => NodeAnswer::Failed,
        };
    }
    v
}

/// With no quorum, catch-up mode's choice: the highest TID a master holds (lowest index first).
fn highest_master(voters: &[Voter]) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (j, v) in voters.iter().enumerate() {
        if let (Role::Master, NodeAnswer::Holds(t)) = (v.role, v.answer) {
            if best.map_or(true, |(_, b)| t > b) {
                best = Some((j, t));
            }
        }
    }
    best.map(|(j, _)| j)
}

/// Whether a master among `slots` has not answered yet.
fn masters_pending<Id>(roles: &[Role], slots: &[Slot<Id>]) -> bool {
    slots
        .iter()
        .zip(roles)
        .any(|(s, r)| matches!(s, Slot::Pending) && *r == Role::Master)
}

/// How long the collector waits without any answer before it polls `brk` while waiting.
const WAIT_BRK_NS: u64 = 50_000_000;
/// How long a node may give no answer before it counts as stalled without a stall hook.
const LATE_NS: u64 = 1_000_000_000;

/// Whether a focus on `node` should wait for a lower-indexed master still reading: nodes that
/// diverged under equal TIDs make the focus node matter, and the lowest-indexed holder is the
/// deterministic choice. A node stalled by its hook, or silent for [`LATE_NS`], is not waited
/// for (the stall tolerance). The clock (`now`) is read only while waiting already: most
/// decisions, one per key, wait for nothing.
fn wait_for_lower<Id, S: ChainStore>(
    peers: &Peers<'_, S>,
    roles: &[Role],
    slots: &[Slot<Id>],
    node: usize,
    idle_since: Option<u64>,
    now: impl FnOnce() -> u64,
) -> bool {
    if idle_since.is_some_and(|t| now().saturating_sub(t) >= LATE_NS) {
        return false;
    }
    (0..node.min(slots.len())).any(|j| {
        matches!(slots[j], Slot::Pending)
            && roles.get(j) == Some(&Role::Master)
            && !peers
                .faults
                .and_then(|f| f.get(j))
                .is_some_and(|f| f.stall_ns() > 0)
    })
}

/// Wait for the workers after a round that decided nothing. `brk` is polled only when a break
/// request interrupts the wait (a sync thread's, see [`Brk`]) or once no answer came for
/// [`WAIT_BRK_NS`] (a stalled node; the only way a plain `brk` closure is asked during a wait):
/// a pass without requests or stalls polls `brk` as often as it always did, so its number of
/// polls stays the same from run to run.
fn wait_more<S: ChainStore>(
    pool: &Pool<'_, S>,
    seen: u32,
    brk: &Brk<'_>,
    idle_since: &mut Option<u64>,
) -> Result<()> {
    if pool.wait(seen, brk)? {
        *idle_since = None;
        return Ok(());
    }
    let now = pool.now_ns();
    let since = *idle_since.get_or_insert(now);
    if now.saturating_sub(since) >= WAIT_BRK_NS && pool.stalled_wait_polls() && brk.poll() {
        return Err(Error::InProgress);
    }
    Ok(())
}

/// The requests an [`inode_focus_scan`] leaves running: each node's generation and what it
/// answered so far. The workers go on reading the inode's children from key 0, so a
/// [`Collector`] starting there takes them over ([`Collector::adopt`]) instead of asking again.
/// Kept small (a few bytes per node, no blockref): it lives on the syncing thread's stack, which
/// in the kernel is a few KiB deep at most.
#[derive(Clone, Copy)]
pub(crate) struct Inflight {
    gens: [u32; MAX_NODES],
    /// The inode's index in its requests (a batch's; 0 for a request of its own).
    item: u32,
    /// Per node, the state its children's scan starts in: `Off` (not asked), `Pending` (the
    /// children follow), `Done` (no such inode there) or `Failed`.
    start: [Start; MAX_NODES],
}

/// A node's state at the start of an adopted children's scan (see [`Inflight`]).
#[derive(Clone, Copy)]
enum Start {
    Off,
    Pending,
    Done,
    Failed,
}

/// An inode's focus (None: no quorum), with the reads of its children under way.
pub(crate) type FocusScan<Id> = (Option<Focus<Id>>, Inflight);

/// One inode of a batch request already posted to the workers (the driver asks for the next
/// deferred inodes at once, so a worker's wakeup serves many of them): whose requests, and the
/// inode's index in them.
#[derive(Clone, Copy, Default)]
pub(crate) struct Ticket {
    /// Per node, the generation of its batch request.
    pub(crate) gens: [u32; MAX_NODES],
    /// The nodes asked (a bit per node).
    pub(crate) asked: u32,
    /// The inode's index in the batch.
    pub(crate) item: u32,
    /// The cluster's change sequence when the batch was posted: its answers are only used by
    /// a sync that read the same (see `slaves::unchanged`: everything it relies on must have
    /// been read with no change under way).
    pub(crate) seq: Option<u64>,
}

/// The answer of every node `follow` asks for the inode at `keys` (the ipcluster XOP): our
/// node `Excluded`, nodes still reading `Pending`, failed reads `Failed`; decided as soon as the
/// quorum can be. With catch-up on and no quorum, once every master that has not failed has
/// answered, the master holding the highest TID is the focus ([`Focus::catchup`]).
pub(crate) fn inode_focus<S: ChainStore>(
    ctx: &Ctx<'_, S>,
    keys: &[u64],
    follow: Follow,
) -> Result<Option<Focus<S::Id>>> {
    focus_of(ctx, keys, follow, None, None).map(|(f, _)| f)
}

/// [`inode_focus`], with the workers asked for the inode's children from key 0 as well: the
/// returned [`Inflight`] lets the scan that usually follows start with them queued, which
/// saves every worker a request, a wakeup and a reply per inode synchronized. With a
/// `ticket` whose requests are all still current, the inode's answers are taken from that batch
/// (which asked for the children from key 0 too) and nothing is posted.
pub(crate) fn inode_focus_scan<S: ChainStore>(
    ctx: &Ctx<'_, S>,
    keys: &[u64],
    follow: Follow,
    ticket: Option<&Ticket>,
) -> Result<FocusScan<S::Id>> {
    focus_of(ctx, keys, follow, Some(0), ticket)
}

/// Where the children's scan of each node starts once the inode's focus is decided.
fn inflight_of<Id>(gens: [u32; MAX_NODES], item: u32, slots: &[Slot<Id>; MAX_NODES]) -> Inflight {
    let mut start = [Start::Off; MAX_NODES];
    for (st, s) in start.iter_mut().zip(slots) {
        *st = match s {
            Slot::Off => Start::Off,
            // The inode's answer was taken (or is still to come, and the scan skips it):
            // the node's children follow.
            Slot::Head(..) | Slot::Pending => Start::Pending,
            Slot::Done => Start::Done,
            Slot::Failed => Start::Failed,
        };
    }
    Inflight { gens, item, start }
}

fn focus_of<S: ChainStore>(
    ctx: &Ctx<'_, S>,
    keys: &[u64],
    follow: Follow,
    children: Option<u64>,
    ticket: Option<&Ticket>,
) -> Result<FocusScan<S::Id>> {
    let (peers, idx) = (ctx.peers, ctx.idx);
    let pool = ctx.pool.ok_or(Error::Invalid)?;
    let n = peers.stores.len().min(MAX_NODES);
    let voting = Electorate::of(peers, follow);
    let roles = &voting.roles[..n];
    let mut slots = [Slot::Off; MAX_NODES];
    let mut gens = [0u32; MAX_NODES];
    let mut item = 0;
    let asked = |j: usize| follow.asks(j, idx);
    match ticket {
        Some(t)
            if (0..n)
                .filter(|&j| asked(j))
                .all(|j| t.asked & (1 << j) != 0 && pool.current(j, t.gens[j])) =>
        {
            for j in (0..n).filter(|&j| asked(j)) {
                gens[j] = t.gens[j];
                slots[j] = Slot::Pending;
            }
            item = t.item;
        }
        _ => pool.request_all(
            (0..n).filter(|&j| asked(j)),
            Ask::One(keys),
            children.map(|k| [(k, KEY_MAX)]).as_ref().map(|r| &r[..]),
            |j, g| {
                gens[j] = g;
                slots[j] = Slot::Pending;
            },
        )?,
    }
    let mut idle_since = None;
    loop {
        let seen = pool.pushed();
        for (j, slot) in slots.iter_mut().enumerate().take(n) {
            if let Slot::Pending = slot {
                match pool.recv(j, gens[j], item) {
                    Some(Msg::Inode(Some((id, b)))) => *slot = Slot::Head(id, b),
                    Some(Msg::Inode(None)) | Some(Msg::End) => *slot = Slot::Done,
                    Some(Msg::Failed) => *slot = Slot::Failed,
                    Some(Msg::Child(..)) | None => {}
                }
            }
        }
        let mut v = voters(roles, &slots[..n], None);
        for (v, s) in v.iter_mut().zip(&slots) {
            if let Slot::Head(_, b) = s {
                v.answer = NodeAnswer::Holds(b.modify_tid);
            }
        }
        let pick = |node: usize, catchup: bool| match slots.get(node) {
            Some(Slot::Head(id, head)) => Ok((
                Some(Focus {
                    node,
                    id: *id,
                    head: *head,
                    catchup,
                }),
                inflight_of(gens, item, &slots),
            )),
            _ => Err(Error::Invalid),
        };
        let catchup = peers.catchup && follow == Follow::Quorum;
        let decision = match quorum::check(&v[..n], voting.nmasters) {
            // Failed masters could decide it together with masters still reading: as for a
            // gap, it is undecided only once those answered (their TIDs may rule it out).
            QuorumResult::None(Error::Io) if masters_pending(roles, &slots[..n]) => {
                QuorumResult::None(Error::InProgress)
            }
            r => r,
        };
        match decision {
            QuorumResult::Focus { node, .. }
                if wait_for_lower(peers, roles, &slots[..n], node, idle_since, || {
                    pool.now_ns()
                }) =>
            {
                wait_more(pool, seen, ctx.brk, &mut idle_since)?
            }
            QuorumResult::Focus { node, .. } => return pick(node, false),
            QuorumResult::None(Error::InProgress) => {
                wait_more(pool, seen, ctx.brk, &mut idle_since)?
            }
            // DEVIATION: the seed's collector only skips an inode without a quorum; its comment
            // says a node may "synchronize to the highest available update_tid" instead, which
            // catch-up mode does (HAMMER2-FACTS §2). It decides only once every master that has
            // not failed answered: one still reading may hold a higher TID than any answer so
            // far, and a stall must only delay the outcome, never change it.
            QuorumResult::None(Error::NoQuorum) | QuorumResult::None(Error::Deadlock)
                if catchup && masters_pending(roles, &slots[..n]) =>
            {
                wait_more(pool, seen, ctx.brk, &mut idle_since)?
            }
            QuorumResult::None(Error::NoQuorum) | QuorumResult::None(Error::Deadlock)
                if catchup =>
            {
                return match highest_master(&v[..n]) {
                    Some(node) => pick(node, true),
                    None => Ok((None, inflight_of(gens, item, &slots))),
                };
            }
            QuorumResult::None(_) => return Ok((None, inflight_of(gens, item, &slots))),
        }
    }
}

/// What one look at the answers gives the merge.
enum Step<Id> {
    /// Nothing can be decided before more answers come.
    Wait,
    /// The merge's next result (None: the scan is done).
    Yield(Option<Item<Id>>),
    /// Nothing at this key: look at the next one.
    Skip,
}

/// The merge over the other nodes' children of one inode.
pub struct Collector<'a, S: ChainStore> {
    pool: &'a Pool<'a, S>,
    peers: &'a Peers<'a, S>,
    brk: &'a Brk<'a>,
    /// Who decides: the roles and master count of the [`Follow`] the merge was started with.
    voting: Electorate,
    /// The nodes of the cluster (at most [`MAX_NODES`]).
    n: usize,
    /// Per node: the generation of its request.
    gens: [u32; MAX_NODES],
    /// The inode's index in those requests (a batch's; 0 for a request of its own).
    item: u32,
    slots: [Slot<S::Id>; MAX_NODES],
    /// The first key not yet decided (None: the scan is done).
    pos: Option<u64>,
    /// Since when the current wait got no answer.
    idle_since: Option<u64>,
}

impl<'a, S: ChainStore> Collector<'a, S> {
    /// Start a scan of the children of the inode at `keys` on the nodes `follow` asks (see
    /// [`Follow::asks`]) in the key ranges `ranges` (first and last key of each, in key order;
    /// none: an empty scan): a caller takes nothing outside them, and the workers asked anew
    /// read nothing outside them either; `ctx.brk` is polled at every key it looks at (skipped
    /// keys included), and while it waits when a break request interrupts the wait or a node
    /// stalls. A scan of one range from key 0 continues the requests `inflight` names, if they
    /// are still current, instead of asking again: those read to the table's end, so past the
    /// range each worker goes on until its FIFO is full or its next request replaces the read
    /// (at most [`super::pool::FIFO_DEPTH`] answers wasted, against a request and a round trip
    /// saved). Several ranges are always asked anew: the reads taken over would stream every
    /// chain between them.
    pub(crate) fn new(
        ctx: &Ctx<'a, S>,
        keys: &[u64],
        follow: Follow,
        ranges: &[(u64, u64)],
        inflight: Option<&Inflight>,
    ) -> Result<Collector<'a, S>> {
        let (peers, idx) = (ctx.peers, ctx.idx);
        let start = ranges.first().map(|&(b, _)| b);
        let mut c = Collector {
            pool: ctx.pool.ok_or(Error::Invalid)?,
            peers,
            brk: ctx.brk,
            voting: Electorate::of(peers, follow),
            n: peers.stores.len().min(MAX_NODES),
            gens: [0; MAX_NODES],
            item: 0,
            slots: [Slot::Off; MAX_NODES],
            pos: start,
            idle_since: None,
        };
        let adopted =
            matches!(ranges, [(0, _)]) && inflight.is_some_and(|f| c.adopt(f, follow, idx));
        if start.is_some() && !adopted {
            let nodes = (0..c.n).filter(|&j| follow.asks(j, idx));
            let pool = c.pool;
            pool.request_all(nodes, Ask::One(keys), Some(ranges), |j, g| {
                c.gens[j] = g;
                c.slots[j] = Slot::Pending;
            })?;
        }
        Ok(c)
    }

    /// Continue the requests an [`inode_focus_scan`] left running (a scan of the inode's
    /// children from key 0, the inode's own answers already taken) for the nodes `follow`
    /// asks; false, changing nothing, when one of their workers was asked something else
    /// since (its answers are gone). In place: a collector is too big to be copied around on a
    /// kernel stack.
    fn adopt(&mut self, inflight: &Inflight, follow: Follow, idx: usize) -> bool {
        let taken = |j: usize, st: &Start| follow.asks(j, idx) && !matches!(st, Start::Off);
        let stale =
            |(j, st): (usize, &Start)| taken(j, st) && !self.pool.current(j, inflight.gens[j]);
        if inflight.start.iter().enumerate().any(stale) {
            return false;
        }
        for (j, (s, st)) in self.slots.iter_mut().zip(&inflight.start).enumerate() {
            *s = match st {
                _ if !taken(j, st) => Slot::Off,
                Start::Off => Slot::Off,
                Start::Pending => Slot::Pending,
                Start::Done => Slot::Done,
                Start::Failed => Slot::Failed,
            };
        }
        self.gens = inflight.gens;
        self.item = inflight.item;
        true
    }

    /// Take the queued answers of every node that has no head yet.
    fn fill(&mut self) {
        for j in 0..self.n {
            while let Slot::Pending = self.slots[j] {
                let Some(m) = self.pool.recv(j, self.gens[j], self.item) else {
                    break;
                };
                self.slots[j] = match m {
                    Msg::Inode(Some(_)) => Slot::Pending,
                    Msg::Inode(None) | Msg::End => Slot::Done,
                    Msg::Failed => Slot::Failed,
                    // Decided without this node while it was late: already behind us.
                    Msg::Child(_, b) if self.pos.is_some_and(|p| b.key < p) => Slot::Pending,
                    Msg::Child(id, b) => Slot::Head(id, b),
                };
            }
        }
    }

    /// Consume every head whose key is at most `last` (every key up to it is decided); the
    /// scan goes on from `last + 1`.
    ///
    /// After an undecided or skipped key K, `last` is K, as `hammer2_xop_collect` goes on
    /// (`collect_key = lokey + 1`): a node's chain wider than the others' at K says nothing
    /// about the keys inside its range, where a quorum may hold chains of its own.
    ///
    /// DEVIATION: after a focus, `last` is the end of the focus's range, not K. No key inside
    /// it can have a quorum: the masters of the focus's quorum hold nothing else there (a
    /// table's ranges are disjoint), and the other masters, pending and failed ones included,
    /// are fewer than a quorum. So the C's collector skips each such key (ESRCH, EDEADLK), and
    /// stepping to K + 1 here gives the same outcome except in one case: a master of the
    /// focus's quorum whose read fails after it answered the focus is `Failed`, counted as a
    /// possible holder of every key after its last answer, so a key another node holds inside
    /// the range would come back undecided (`Io`) and the inode would stay unstamped, though
    /// that master's answer at K shows it holds nothing there. (A key read inside the range
    /// while a change was in flight is undecided at K + 1 and passed over here, with the same
    /// outcome: `unchanged` refuses every later change of ours and the stamp.) The merge, too,
    /// goes on past the focus's range (see `take_focus`).
    fn advance(&mut self, last: u64) {
        for s in self.slots.iter_mut() {
            if matches!(s, Slot::Head(_, b) if b.key <= last) {
                *s = Slot::Pending;
            }
        }
        self.pos = last.checked_add(1);
    }

    /// The cluster's change sequence now (None: the cluster keeps none).
    fn change_seq(&self) -> Option<u64> {
        self.peers.changes.map(|c| c.load(Ordering::SeqCst))
    }

    /// The next key's focus (or that it is undecided), or None when every node's scan is done.
    pub fn next_item(&mut self) -> Result<Option<Item<S::Id>>> {
        // Polled once per key looked at (waits poll on their own, see `wait_more`), so the
        // number of polls does not depend on how fast the workers answer.
        let mut waited = false;
        loop {
            self.peers.host.relax();
            if !waited && self.brk.poll() {
                return Err(Error::InProgress);
            }
            let Some(pos) = self.pos else {
                return Ok(None);
            };
            let seq = self.change_seq();
            let seen = self.pool.pushed();
            self.fill();
            waited = false;
            match self.step(pos, seq)? {
                Step::Wait => {
                    wait_more(self.pool, seen, self.brk, &mut self.idle_since)?;
                    waited = true;
                }
                Step::Yield(it) => return Ok(it),
                Step::Skip => {}
            }
        }
    }

    /// One look at the answers from `pos` on: first the gap before the lowest head, then the
    /// lowest head's key.
    fn step(&mut self, pos: u64, seq: Option<u64>) -> Result<Step<S::Id>> {
        let lowest = self.slots[..self.n]
            .iter()
            .filter_map(|s| match s {
                Slot::Head(_, b) => Some(b.key),
                _ => None,
            })
            .min();
        match (self.gap(), lowest) {
            (gap, None) => Ok(self.last_gap(pos, gap)),
            (QuorumResult::None(Error::InProgress), Some(key)) if pos < key => Ok(Step::Wait),
            (QuorumResult::None(Error::Io), Some(key)) if pos < key => {
                self.pos = Some(key);
                Ok(Step::Yield(Some(Item::Undecided {
                    key: pos,
                    key_end: key - 1,
                })))
            }
            (_, Some(key)) => self.decide(key, seq),
        }
    }

    /// Whether the nodes not answered yet (pending, failed) could hold a quorum's key before
    /// every head. A gap that failed masters could decide together with masters still reading
    /// is only undecided once those answered: their next key may well lie past the gap.
    fn gap(&self) -> QuorumResult {
        let n = self.n;
        let roles = &self.voting.roles[..n];
        match quorum::check(
            &voters(roles, &self.slots[..n], None)[..n],
            self.voting.nmasters,
        ) {
            QuorumResult::None(Error::Io) if masters_pending(roles, &self.slots[..n]) => {
                QuorumResult::None(Error::InProgress)
            }
            g => g,
        }
    }

    /// No head left: wait for the nodes still reading, leave the rest undecided when a failed
    /// node could hold something there, or end the scan.
    fn last_gap(&mut self, pos: u64, gap: QuorumResult) -> Step<S::Id> {
        match gap {
            QuorumResult::None(Error::InProgress) => Step::Wait,
            QuorumResult::None(Error::Io) => {
                self.pos = None;
                Step::Yield(Some(Item::Undecided {
                    key: pos,
                    key_end: KEY_MAX,
                }))
            }
            _ => {
                self.pos = None;
                Step::Yield(None)
            }
        }
    }

    /// The quorum's decision at `key`, the lowest head (`seq`: the change sequence before the
    /// answers were taken).
    fn decide(&mut self, key: u64, seq: Option<u64>) -> Result<Step<S::Id>> {
        let n = self.n;
        let roles = &self.voting.roles[..n];
        let v = voters(roles, &self.slots[..n], Some(key));
        match quorum::check(&v[..n], self.voting.nmasters) {
            QuorumResult::Focus { node, .. }
                if wait_for_lower(
                    self.peers,
                    roles,
                    &self.slots[..n],
                    node,
                    self.idle_since,
                    || self.pool.now_ns(),
                ) =>
            {
                Ok(Step::Wait)
            }
            QuorumResult::Focus { node, .. } => {
                let Some(Slot::Head(id, head)) = self.slots.get(node).copied() else {
                    return Err(Error::Invalid);
                };
                self.advance(head.key_end());
                Ok(Step::Yield(Some(Item::Focus(Focus {
                    node,
                    id,
                    head,
                    catchup: false,
                }))))
            }
            // Masters not answered yet could decide it.
            QuorumResult::None(Error::InProgress) => Ok(Step::Wait),
            // A failed master could have decided it.
            QuorumResult::None(Error::Io) => {
                self.advance(key);
                Ok(Step::Yield(Some(Item::Undecided { key, key_end: key })))
            }
            // ESRCH / EDEADLK: no quorum for this key. Skip it, unless a change was in flight
            // while we read it.
            QuorumResult::None(Error::NoQuorum) | QuorumResult::None(Error::Deadlock) => {
                let moved = self.change_seq() != seq;
                self.advance(key);
                if seq.is_some_and(|s| s % 2 == 1) || moved {
                    return Ok(Step::Yield(Some(Item::Undecided { key, key_end: key })));
                }
                Ok(Step::Skip)
            }
            QuorumResult::None(e) => Err(e),
        }
    }
}
