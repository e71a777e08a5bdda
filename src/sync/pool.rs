//! Per-node scan workers (the seed's XOP backends): for each syncing node, one host thread per
//! other node (started with the cluster, idle between passes) reads that node for the collector and feeds a bounded FIFO of [`FIFO_DEPTH`]
//! answers, so a node that stalls only delays its own FIFO and the collector can decide a key as
//! soon as a quorum of masters answered.
//!
//! Protocol (every wait is a host word sleep, so no wakeup is lost):
//! - the collector posts a request (the keys of one inode, or of a batch of inodes answered one
//!   after the other, each answer tagged with its inode's index; optional child start key) under
//!   the channel's request lock, bumping the channel's `gen` word with it, and wakes `gen` once
//!   it has posted the requests of every node ([`Pool::request_all`]); the worker reads `gen`
//!   *before* looking for a request and sleeps on that value, so a request posted meanwhile
//!   makes its sleep return at once;
//! - answers are tagged with the request's generation; a worker stops serving a request as soon
//!   as `gen` moves (a newer request) or the pool is cancelled, and the collector drops answers
//!   of older generations;
//! - a full FIFO: the worker reads the channel's `popped` word, then tries to push, and sleeps on
//!   the value read; every pop bumps and wakes `popped`. An empty FIFO: the collector reads the
//!   pool's `pushed` word before draining and sleeps on it; every push bumps and wakes `pushed`.
//! - a bump wakes its word only when a sleeper announced itself in the word's sleeper count
//!   (`pushed_sleepers`, a channel's `popped_sleepers`) before its host word sleep: most pushes
//!   and pops find nobody asleep, and a wake costs a host call (a hashed wait-queue lock in
//!   userland) that a stream of millions of answers would pay at every chain. Every bump and
//!   every count change is sequentially consistent, so either the bumping side sees the count
//!   (and wakes) or the sleeper's host sleep sees the bumped word (and returns at once).
//!
//! Fault hooks ([`Faults`]) apply here, to the reads synchronization makes of a node and to no
//! other read: a stall delays every read (sleeping in slices that watch for cancellation), a
//! failing node answers [`Msg::Failed`] (EIO), never an empty answer.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use core::time::Duration;

use crate::host::{Host, RawThread};
use crate::media::Blockref;
use crate::mem::{try_box, try_to_vec};
use crate::role::MAX_NODES;
use crate::store::{ChainStore, Hint};
use crate::thread::{Brk, HostWord};
use crate::{Error, Result};

use super::Peers;

/// The part of a chain's blockref a merge decides on: its key range and TID. The workers send
/// this, not the whole 128-byte blockref (mostly check code), so a FIFO of [`FIFO_DEPTH`]
/// answers stays small; the focus's full header is read with its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The lowest key of the range.
    pub key: u64,
    /// The range is `key ..= key + 2^keybits - 1`.
    pub keybits: u8,
    /// The chain's modify_tid.
    pub modify_tid: u64,
}

impl Head {
    /// The key range and TID of `b`.
    pub fn of(b: &Blockref) -> Head {
        Head {
            key: b.key,
            keybits: b.keybits,
            modify_tid: b.modify_tid,
        }
    }
    /// The last key of the range (as [`Blockref::key_end`]).
    pub fn key_end(&self) -> u64 {
        crate::media::key_end(self.key, self.keybits)
    }
}

/// Answers a worker may have queued ahead of the collector. The seed's XOP FIFO holds 16.
/// DEVIATION: 64 here. A first sync streams every chain of every master through these FIFOs,
/// and a worker behind a full one sleeps until the collector has drained it to [`LOW_WATER`]:
/// each such wakeup costs the collector a host wake call (a cross-CPU wakeup, its largest cost
/// after first-touching the slave's new memory). A FIFO of 64 woken at a quarter wakes a
/// streaming worker once per 48 answers, against once per 16 for a FIFO of 32 woken at half,
/// and lets it queue a 2 MiB file's inode, data blocks and end in one go. Answers are small
/// ([`Head`], not whole blockrefs): 64 of them take about 2.5 KiB per channel, reserved on the
/// heap when the pool starts, never built on a stack.
pub const FIFO_DEPTH: usize = 64;
/// Queued answers at or below which a worker waiting on a full FIFO is woken (a quarter of it:
/// the worker still has that many answers of slack to refill before the collector runs dry).
const LOW_WATER: usize = FIFO_DEPTH / 4;
/// Longest single sleep of a stalled read or a blocked wait, so cancellation is seen promptly.
const SLICE: Duration = Duration::from_millis(5);

/// Per-node fault hooks for the reads synchronization makes (scenario `stall` and `fail`).
#[derive(Default)]
pub struct NodeFaults {
    stall_ns: AtomicU64,
    fail: AtomicBool,
}

impl NodeFaults {
    /// Delay every read by `d` (`None`: no delay).
    pub fn set_stall(&self, d: Option<Duration>) {
        let ns = d.map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64);
        self.stall_ns.store(ns, Ordering::SeqCst);
    }
    /// Make every read fail with EIO (or stop doing so).
    pub fn set_fail(&self, on: bool) {
        self.fail.store(on, Ordering::SeqCst);
    }
    /// The current read delay in nanoseconds.
    pub fn stall_ns(&self) -> u64 {
        self.stall_ns.load(Ordering::SeqCst)
    }
    /// Whether reads fail.
    pub fn failing(&self) -> bool {
        self.fail.load(Ordering::SeqCst)
    }
}

/// One answer of a worker.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Msg<Id> {
    /// The requested inode on this node (None: the node does not hold it).
    Inode(Option<(Id, Head)>),
    /// The next child of the inode, in key order.
    Child(Id, Head),
    /// No more children.
    End,
    /// A read failed (EIO or any error but "gone"): the node's answer is unknown.
    Failed,
}

/// The inodes of one request, by key path, in the order they are answered: each path is
/// stored as its length followed by its keys, so a batch of many inodes is one allocation.
#[derive(Default)]
pub(crate) struct Paths {
    enc: Vec<u64>,
}

impl Paths {
    /// Append the inode at `keys`.
    pub(crate) fn push(&mut self, keys: &[u64]) -> Result<()> {
        self.enc.try_reserve(keys.len() + 1)?;
        self.enc.push(keys.len() as u64);
        self.enc.extend_from_slice(keys);
        Ok(())
    }
    /// Forget every inode (keeping the allocation).
    pub(crate) fn clear(&mut self) {
        self.enc.clear();
    }
}

/// Each inode's key path in an encoded [`Paths`] (an inconsistent tail ends it).
fn each_path(enc: &[u64]) -> impl Iterator<Item = &[u64]> {
    let mut rest = enc;
    core::iter::from_fn(move || {
        let (&n, tail) = rest.split_first()?;
        let n = usize::try_from(n).ok().filter(|&n| n <= tail.len())?;
        let (keys, after) = tail.split_at(n);
        rest = after;
        Some(keys)
    })
}

/// What a request asks for: one inode, or several answered one after the other.
#[derive(Clone, Copy)]
pub(crate) enum Ask<'a> {
    /// The inode at these keys.
    One(&'a [u64]),
    /// Every inode of a batch.
    Many(&'a Paths),
}

struct Req {
    gen: u32,
    /// The inodes asked for, encoded as in [`Paths`], then the key ranges of the children to
    /// read after each inode (first and last key of each, in key order) from `split` on: one
    /// allocation per request.
    enc: Vec<u64>,
    /// Where the ranges begin in `enc`.
    split: usize,
    /// Whether children are read at all (in no range: none).
    children: bool,
}

struct Chan<Id> {
    /// Generation of the latest request (the worker sleeps on it while idle).
    gen: AtomicU32,
    req: spin::Mutex<Option<Req>>,
    /// Answers, tagged with their request's generation and the inode's index in it.
    /// Never holds more than [`FIFO_DEPTH`] answers: its capacity is reserved when the pool
    /// starts, so a push never allocates.
    q: spin::Mutex<VecDeque<(u32, u32, Msg<Id>)>>,
    /// Bumped at every pop (a worker waiting on a full FIFO sleeps on it).
    popped: AtomicU32,
    /// Non-zero while the worker is about to sleep or sleeps on `popped` (see the module docs).
    popped_sleepers: AtomicU32,
    /// The lowest inode of the latest request the collector may still ask about: it asks in
    /// order, so once it asked for a later inode the worker stops reading the earlier one's
    /// children (whose answers would only be dropped, each read costing a stalled node's delay).
    want: AtomicU32,
}

struct Shared<Id> {
    /// Non-zero: every worker returns.
    cancel: AtomicU32,
    /// Bumped at every push (the collector sleeps on it).
    pushed: AtomicU32,
    /// Non-zero while the collector is about to sleep or sleeps on `pushed`.
    pushed_sleepers: AtomicU32,
    /// One channel per node of the cluster (not per possible node: each holds a FIFO of
    /// [`FIFO_DEPTH`] answers). A `Vec` filled one channel at a time: building them as one
    /// value would put them all on the stack before the move to the heap, ~18 KiB for eight
    /// nodes: more than a whole kernel stack (it overflowed one).
    chans: Vec<Chan<Id>>,
}

/// The workers of one sync pass, one per node but the syncing one; all joined on drop.
pub(crate) struct Pool<'a, S: ChainStore> {
    host: &'static dyn Host,
    sh: Box<Shared<S::Id>>,
    threads: [Option<RawThread>; MAX_NODES],
    _borrow: PhantomData<&'a S>,
}

impl<'a, S> Pool<'a, S>
where
    S: ChainStore + 'static,
    S::Id: Send + 'static,
{
    /// Start a worker for every node of `peers` but `idx`.
    pub(crate) fn start(peers: &'a Peers<'a, S>, idx: usize) -> Result<Pool<'a, S>> {
        // SAFETY: the pool borrows the peers (their stores and fault hooks) for 'a, so they
        // outlive it, and its `Drop` joins every worker.
        unsafe { Pool::start_unbound(peers.host, peers.stores, peers.faults, idx) }
    }

    /// Start a worker for every node of `stores` but `idx`, the pool bound to no borrow.
    ///
    /// # Safety
    /// Every store of `stores` and every hook of `faults` must stay alive and in place until
    /// the returned pool is dropped (its `Drop` joins the workers that read them).
    pub(crate) unsafe fn start_unbound<'b>(
        host: &'static dyn Host,
        stores: &[&S],
        faults: Option<&[NodeFaults]>,
        idx: usize,
    ) -> Result<Pool<'b, S>> {
        let nodes = stores.len().min(MAX_NODES);
        let mut chans = Vec::new();
        chans.try_reserve_exact(nodes)?;
        for _ in 0..nodes {
            let mut q = VecDeque::new();
            q.try_reserve_exact(FIFO_DEPTH)?;
            chans.push(Chan {
                gen: AtomicU32::new(0),
                req: spin::Mutex::new(None),
                q: spin::Mutex::new(q),
                popped: AtomicU32::new(0),
                popped_sleepers: AtomicU32::new(0),
                want: AtomicU32::new(0),
            });
        }
        let sh = try_box(Shared {
            cancel: AtomicU32::new(0),
            pushed: AtomicU32::new(0),
            pushed_sleepers: AtomicU32::new(0),
            chans,
        })?;
        let mut pool = Pool {
            host,
            sh,
            threads: [const { None }; MAX_NODES],
            _borrow: PhantomData,
        };
        for (j, store) in stores.iter().enumerate().take(MAX_NODES) {
            if j == idx {
                continue;
            }
            let sh = &*pool.sh as *const Shared<S::Id> as usize;
            let store = *store as *const S as usize;
            let faults = faults
                .and_then(|f| f.get(j))
                .map_or(0, |f| f as *const NodeFaults as usize);
            let entry = try_box(move || {
                // SAFETY: the shared state is owned by the pool, and the store and fault hooks
                // outlive it (this function's contract); the pool's `Drop` cancels and joins
                // every worker before any of them goes away. `S::Id: Send` and `S: Sync` make
                // the cross-thread use sound; everything shared is atomics or spin locks.
                let (sh, store, faults) = unsafe {
                    (
                        &*(sh as *const Shared<S::Id>),
                        &*(store as *const S),
                        (faults != 0).then(|| &*(faults as *const NodeFaults)),
                    )
                };
                worker(host, sh, j, store, faults);
            })?;
            // A failed spawn drops `pool`, which joins the workers already started.
            pool.threads[j] = Some(host.spawn("h2s-scan", entry)?);
        }
        Ok(pool)
    }
}

impl<S: ChainStore> Pool<'_, S> {
    /// Ask node `j`'s worker for the inode at `keys` and, with `start`, its children whose key
    /// lies in that range (first and last key). Earlier requests to `j` are abandoned. Returns
    /// the request's generation.
    #[cfg(test)]
    pub(crate) fn request(&self, j: usize, keys: &[u64], start: Option<(u64, u64)>) -> Result<u32> {
        let range = start.map(|r| [r]);
        let gen = self.post(j, Ask::One(keys), range.as_ref().map(|r| &r[..]))?;
        self.wake(j);
        Ok(gen)
    }

    /// [`Pool::request`] to every node in `nodes`, for one inode or a batch ([`Ask`]: a batch's
    /// inodes are answered in order, each as a request of its own would be, its answers tagged
    /// with its index), with each inode's children in the key ranges `children` (first and
    /// last key of each, in key order: a merge of scattered differing keys asks for them all
    /// at once); `each` gets each node and its request's generation. Every request is posted
    /// before any worker is woken: a worker woken at once could take the poster's CPU and serve
    /// its whole request before the next node is even asked, where the workers of all nodes
    /// should read at the same time.
    pub(crate) fn request_all(
        &self,
        nodes: impl Iterator<Item = usize>,
        ask: Ask<'_>,
        children: Option<&[(u64, u64)]>,
        mut each: impl FnMut(usize, u32),
    ) -> Result<()> {
        let mut posted = 0u32;
        let mut r = Ok(());
        for j in nodes {
            match self.post(j, ask, children) {
                Ok(gen) => {
                    each(j, gen);
                    posted |= 1 << j;
                }
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        // Woken even on an error: a posted request is never left to a sleeping worker.
        for j in (0..MAX_NODES).filter(|j| posted & (1 << j) != 0) {
            self.wake(j);
        }
        r
    }

    /// Publish a request to node `j`'s worker without waking it (see [`Pool::wake`]).
    fn post(&self, j: usize, ask: Ask<'_>, children: Option<&[(u64, u64)]>) -> Result<u32> {
        let ch = self.sh.chans.get(j).ok_or(Error::Invalid)?;
        if !matches!(self.threads.get(j), Some(Some(_))) {
            return Err(Error::Invalid);
        }
        #[cfg(test)]
        test_hook::POSTED.with(|n| n.set(n.get() + 1));
        let gen = ch.gen.load(Ordering::SeqCst).wrapping_add(1);
        let ranges = children.unwrap_or(&[]);
        let mut enc = match ask {
            Ask::One(keys) => {
                let mut p = Paths::default();
                p.enc.try_reserve_exact(keys.len() + 1 + 2 * ranges.len())?;
                p.push(keys)?;
                p.enc
            }
            Ask::Many(p) => {
                #[cfg(test)]
                if test_hook::FAIL_MANY.with(|f| f.get()) {
                    return Err(Error::NoMem);
                }
                try_to_vec(&p.enc)?
            }
        };
        let split = enc.len();
        enc.try_reserve_exact(2 * ranges.len())?;
        for &(b, e) in ranges {
            enc.extend_from_slice(&[b, e]);
        }
        // Old answers would only be dropped: make room before the new request is visible (a
        // clear after it could drop the new request's first answers).
        ch.q.lock().clear();
        // Before the request is visible: its worker must not see the last request's mark.
        ch.want.store(0, Ordering::SeqCst);
        {
            // Publish `gen` under the request lock, with the request: a worker that takes the
            // request (under this lock) then sees it current. Storing `gen` after the unlock
            // let a worker awake in its loop take the request while `gen` still held the old
            // value, find it stale (`live()` false), drop it unanswered, and then sleep on
            // the new `gen` with no request left: the collector waited for that node forever.
            let mut slot = ch.req.lock();
            *slot = Some(Req {
                gen,
                enc,
                split,
                children: children.is_some(),
            });
            ch.gen.store(gen, Ordering::SeqCst);
        }
        #[cfg(test)]
        test_hook::after_publish(self.host, &self.sh, ch);
        Ok(gen)
    }

    /// Wake node `j`'s worker for the request [`Pool::post`] published: idle, it sleeps on
    /// `gen`; blocked on a full FIFO of an older request, on `popped`.
    fn wake(&self, j: usize) {
        if let Some(ch) = self.sh.chans.get(j) {
            self.host.wake_word(&ch.gen);
            ch.popped.fetch_add(1, Ordering::SeqCst);
            self.host.wake_word(&ch.popped);
        }
    }

    /// Whether `gen` is still node `j`'s latest request (its answers are still coming).
    pub(crate) fn current(&self, j: usize, gen: u32) -> bool {
        self.sh
            .chans
            .get(j)
            .is_some_and(|ch| ch.gen.load(Ordering::SeqCst) == gen)
    }

    /// The next answer of node `j` about inode `item` of request `gen`, if one is queued.
    /// Answers of older requests, and of the request's earlier inodes, are dropped.
    pub(crate) fn recv(&self, j: usize, gen: u32, item: u32) -> Option<Msg<S::Id>> {
        let ch = self.sh.chans.get(j)?;
        // The collector posts and receives on one thread, so `gen` cannot be replaced meanwhile.
        // Only this side raises `want` (a new request resets it, also from this side): a load
        // spares the worker's line a write at every answer taken.
        let raised = ch.gen.load(Ordering::SeqCst) == gen
            && ch.want.load(Ordering::SeqCst) < item
            && ch.want.fetch_max(item, Ordering::SeqCst) < item;
        let mut got = None;
        let mut any = false;
        let low = {
            let mut q = ch.q.lock();
            while let Some(&(g, i, m)) = q.front() {
                if g == gen && i > item {
                    // The worker answers a batch's inodes in order, each at least once, so
                    // this cannot be; were it so, the node's answer is unknown, never "none".
                    got = Some(Msg::Failed);
                    break;
                }
                q.pop_front();
                any = true;
                if g == gen && i == item {
                    got = Some(m);
                    break;
                }
            }
            q.len() <= LOW_WATER
        };
        // A worker blocked on the full FIFO is woken once it is down to the low-water mark, not
        // at every pop: it then queues several answers per wakeup instead of one (otherwise a
        // long scan costs every worker a sleep and a wakeup per chain the collector consumes).
        // It cannot be left asleep: it read `popped` before finding the FIFO full, and this
        // bump comes once the collector has consumed down to the mark; a collector that stops
        // consuming posts a new request or parks the pool, which bump `popped` too (and the
        // worker's sleep is bounded by `SLICE` regardless).
        // A worker blocked on the full FIFO while reading an inode no longer wanted must learn
        // it now, not only once the FIFO drains.
        if (any && low) || raised {
            ch.popped.fetch_add(1, Ordering::SeqCst);
            if ch.popped_sleepers.load(Ordering::SeqCst) != 0 {
                self.host.wake_word(&ch.popped);
            }
        }
        got
    }

    /// Abandon every request (end of a pass): workers stop reading and go idle.
    pub(crate) fn park_all(&self) {
        for ch in &self.sh.chans {
            *ch.req.lock() = None;
            ch.gen.fetch_add(1, Ordering::SeqCst);
            self.host.wake_word(&ch.gen);
            self.host.wake_word(&ch.popped);
        }
    }

    /// Make [`test_hook::after_publish`] hold this pool's requests.
    #[cfg(test)]
    pub(crate) fn hold_publish(&self) {
        test_hook::HOLD_PUBLISH.store(&*self.sh as *const Shared<S::Id> as usize, Ordering::SeqCst);
    }

    /// Make this pool's collector never poll `brk` for a stalled wait (see
    /// [`Pool::stalled_wait_polls`]), so a test sees whether a request interrupts the wait.
    #[cfg(test)]
    pub(crate) fn no_stalled_wait_polls(&self) {
        test_hook::NO_STALLED_WAIT_POLLS
            .store(&*self.sh as *const Shared<S::Id> as usize, Ordering::SeqCst);
    }

    /// Whether the collector polls `brk` after waiting long without an answer (always, but in
    /// the test of [`Pool::no_stalled_wait_polls`]).
    pub(crate) fn stalled_wait_polls(&self) -> bool {
        #[cfg(test)]
        if test_hook::NO_STALLED_WAIT_POLLS.load(Ordering::SeqCst)
            == &*self.sh as *const Shared<S::Id> as usize
        {
            return false;
        }
        true
    }

    /// The host's monotonic clock.
    pub(crate) fn now_ns(&self) -> u64 {
        self.host.now_ns()
    }

    /// The push counter, read before draining the FIFOs (the value to [`Pool::wait`] on).
    pub(crate) fn pushed(&self) -> u32 {
        self.sh.pushed.load(Ordering::SeqCst)
    }

    /// Sleep until some worker pushed since `seen` was read, or one slice passed, or (on a sync
    /// thread) a break request came: then `Err(InProgress)` if `brk` holds. Returns whether
    /// anything was pushed.
    pub(crate) fn wait(&self, seen: u32, brk: &Brk<'_>) -> Result<bool> {
        let word = HostWord {
            word: &self.sh.pushed,
            host: self.host,
            intr: None,
        };
        // Announced before the sleep compares `pushed` with `seen` (see the module docs).
        self.sh.pushed_sleepers.fetch_add(1, Ordering::SeqCst);
        let r = brk.sleep(&word, seen, Some(SLICE * 2));
        self.sh.pushed_sleepers.fetch_sub(1, Ordering::SeqCst);
        r?;
        Ok(self.pushed() != seen)
    }
}

impl<S: ChainStore> Drop for Pool<'_, S> {
    fn drop(&mut self) {
        self.sh.cancel.store(1, Ordering::SeqCst);
        self.host.wake_word(&self.sh.cancel);
        // Moving `gen` makes an idle worker's sleep (on `gen`) return even if it had read the
        // word before `cancel` was set.
        self.park_all();
        for t in self.threads.iter_mut() {
            if let Some(t) = t.take() {
                self.host.join(t);
            }
        }
    }
}

/// A worker: serve node `j`'s requests until the pool is cancelled.
fn worker<S: ChainStore>(
    host: &dyn Host,
    sh: &Shared<S::Id>,
    j: usize,
    store: &S,
    faults: Option<&NodeFaults>,
) {
    let ch = &sh.chans[j];
    loop {
        // Read the generation before looking: a request posted after the look bumps it, and
        // the sleep below returns at once. Read it before `cancel` too: the pool's `Drop` sets
        // `cancel` and then bumps `gen`, so either this read is older than the bump (the sleep
        // returns at once) or the `cancel` load below sees the cancellation. Checking `cancel`
        // first left a window in which a worker could miss both, sleep on the bumped `gen`
        // forever, and hang the join in `Drop` (found by the oracle sweep: seed 1 of
        // oracle_cluster_matches_model stuck dropping a cluster).
        let seen = ch.gen.load(Ordering::SeqCst);
        #[cfg(test)]
        test_hook::between_reads(sh, store);
        if sh.cancel.load(Ordering::SeqCst) != 0 {
            return;
        }
        let req = ch.req.lock().take();
        match req {
            Some(r) => {
                let (paths, ranges) = r.enc.split_at(r.split.min(r.enc.len()));
                Serve {
                    host,
                    sh,
                    ch,
                    store,
                    faults,
                    gen: r.gen,
                    item: 0,
                }
                .run(paths, r.children.then_some(ranges))
            }
            None => host.sleep_on_word(&ch.gen, seen, None),
        }
    }
}

struct Serve<'w, S: ChainStore> {
    host: &'w dyn Host,
    sh: &'w Shared<S::Id>,
    ch: &'w Chan<S::Id>,
    store: &'w S,
    faults: Option<&'w NodeFaults>,
    gen: u32,
    /// The index of the inode being answered in the request.
    item: u32,
}

impl<S: ChainStore> Serve<'_, S> {
    /// The request is still wanted: not cancelled, no newer request.
    fn request_live(&self) -> bool {
        self.sh.cancel.load(Ordering::SeqCst) == 0 && self.ch.gen.load(Ordering::SeqCst) == self.gen
    }

    /// The current inode is still wanted: its request is, and the collector has not asked
    /// about a later inode yet.
    fn live(&self) -> bool {
        self.request_live() && self.ch.want.load(Ordering::SeqCst) <= self.item
    }

    /// One read of the node through the fault hooks; None when no longer wanted.
    fn read<T>(&self, f: impl FnOnce() -> Result<T>) -> Option<Result<T>> {
        if let Some(fl) = self.faults {
            let stall = fl.stall_ns();
            if stall > 0 {
                let end = self.host.now_ns().saturating_add(stall);
                loop {
                    if !self.live() {
                        return None;
                    }
                    let now = self.host.now_ns();
                    if now >= end {
                        break;
                    }
                    let left = Duration::from_nanos(end - now).min(SLICE);
                    self.host.sleep_on_word(&self.sh.cancel, 0, Some(left));
                }
            }
            if fl.failing() {
                return Some(Err(Error::Io));
            }
        }
        if !self.live() {
            return None;
        }
        #[cfg(test)]
        test_hook::count_read(self.store);
        Some(f())
    }

    /// Queue one answer, waiting while the FIFO is full; false when no longer wanted.
    fn push(&self, m: Msg<S::Id>) -> bool {
        #[cfg(test)]
        let mut waited = false;
        loop {
            if !self.live() {
                return false;
            }
            let seen = self.ch.popped.load(Ordering::SeqCst);
            let queued = {
                let mut q = self.ch.q.lock();
                // Bounded by the FIFO's depth, so `push_back` stays within the reserved
                // capacity and never allocates.
                let room = q.len() < FIFO_DEPTH;
                if room {
                    q.push_back((self.gen, self.item, m));
                }
                room
            };
            if queued {
                self.sh.pushed.fetch_add(1, Ordering::SeqCst);
                if self.sh.pushed_sleepers.load(Ordering::SeqCst) != 0 {
                    self.host.wake_word(&self.sh.pushed);
                }
                return true;
            }
            #[cfg(test)]
            if !core::mem::replace(&mut waited, true) {
                test_hook::count_full_wait(self.store);
            }
            // Announced before the sleep compares `popped` with `seen` (see the module docs).
            self.ch.popped_sleepers.fetch_add(1, Ordering::SeqCst);
            self.host.sleep_on_word(&self.ch.popped, seen, Some(SLICE));
            self.ch.popped_sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Answer every inode of the request in turn (one wakeup serves them all: the worker goes
    /// on to the next while the collector works on the previous, stopping only for a full
    /// FIFO or a newer request).
    fn run(mut self, paths: &[u64], ranges: Option<&[u64]>) {
        for keys in each_path(paths) {
            if !self.request_live() {
                return;
            }
            // An inode below the mark is skipped unread (`one` stops at its first read).
            self.one(keys, ranges);
            self.item = self.item.wrapping_add(1);
            self.host.relax();
        }
    }

    /// Answer one inode: `Inode`, then with `ranges` (first and last key of each, flattened,
    /// in key order) its children in those key ranges and `End` (or `Failed`). A merge of part
    /// of the key space asks for that part only, so the workers read nothing between or past
    /// its ranges instead of filling their FIFOs with children nobody takes.
    fn one(&self, keys: &[u64], ranges: Option<&[u64]>) {
        let inode = self.read(|| match self.store.resolve_keys(keys)? {
            Some(id) => Ok(Some((id, Head::of(&self.store.bref(id)?)))),
            None => Ok(None),
        });
        let parent = match inode {
            None => return,
            Some(Ok(p)) => p,
            // Gone meanwhile: the node does not hold it.
            Some(Err(Error::NotFound)) => None,
            Some(Err(_)) => {
                self.push(Msg::Failed);
                return;
            }
        };
        if !self.push(Msg::Inode(parent)) {
            return;
        }
        let (Some(ranges), Some((pid, _))) = (ranges, parent) else {
            return;
        };
        // The first key not answered yet: a child reaching into the next range is sent once.
        let mut floor = Some(0u64);
        let mut hint = Hint::default();
        for r in ranges.chunks_exact(2) {
            let Some(from) = floor else { break };
            let (mut cursor, last) = (r[0].max(from), r[1]);
            while cursor <= last {
                #[cfg(test)]
                if test_hook::children_fail(self.store, keys, cursor) {
                    self.push(Msg::Failed);
                    return;
                }
                match self.read(|| self.store.lookup_from(pid, cursor, last, &mut hint)) {
                    None => return,
                    Some(Ok(Some((id, b)))) => {
                        if !self.push(Msg::Child(id, Head::of(&b))) {
                            return;
                        }
                        floor = b.key_end().checked_add(1);
                        match floor {
                            Some(k) => cursor = k,
                            None => break,
                        }
                    }
                    // Past the range.
                    Some(Ok(None)) => break,
                    // The inode vanished mid-scan: nothing more to offer.
                    Some(Err(Error::NotFound)) => {
                        self.push(Msg::End);
                        return;
                    }
                    Some(Err(_)) => {
                        self.push(Msg::Failed);
                        return;
                    }
                }
            }
            self.host.relax();
        }
        self.push(Msg::End);
    }
}

/// A test-only pause in an idle worker between its two reads, to hold the window open.
#[cfg(test)]
pub(crate) mod test_hook {
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicUsize, Ordering};

    use super::Shared;

    /// The address of the store whose worker pauses (0: none), so tests running beside the
    /// one that sets it are not slowed.
    pub(crate) static STORE: AtomicUsize = AtomicUsize::new(0);

    /// The address of the pool state whose requests [`after_publish`] holds (0: none).
    pub(crate) static HOLD_PUBLISH: AtomicUsize = AtomicUsize::new(0);

    /// Reads failing part way through an inode's children: the store (by address), the
    /// inode's key path, and the key from which on a read starting there fails.
    pub(crate) static FAIL_CHILDREN: std::sync::Mutex<Option<(usize, Vec<u64>, u64)>> =
        std::sync::Mutex::new(None);

    /// Whether `store`'s worker fails reading the children of the inode at `keys` from
    /// `cursor` on ([`FAIL_CHILDREN`]).
    pub(super) fn children_fail<S>(store: &S, keys: &[u64], cursor: u64) -> bool {
        let hook = FAIL_CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
        hook.as_ref().is_some_and(|(s, k, from)| {
            *s == store as *const S as usize && k[..] == *keys && cursor >= *from
        })
    }

    std::thread_local! {
        /// Requests posted by this thread (a sync pass posts from the thread running it).
        pub(crate) static POSTED: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
        /// Batch requests posted by this thread fail as if out of memory.
        pub(crate) static FAIL_MANY: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
    }

    /// The address of the store whose worker's reads [`READS`] counts (0: none).
    pub(crate) static COUNT_STORE: AtomicUsize = AtomicUsize::new(0);
    /// Reads made by the worker of [`COUNT_STORE`].
    pub(crate) static READS: AtomicUsize = AtomicUsize::new(0);
    /// Held by a test while it counts [`READS`], so tests running beside it count their own.
    pub(crate) static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Count a read of `store`'s worker when it is the one counted.
    pub(super) fn count_read<S>(store: &S) {
        if COUNT_STORE.load(Ordering::SeqCst) == store as *const S as usize {
            READS.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Answers the worker of [`COUNT_STORE`] had to wait to queue (its FIFO was full).
    pub(crate) static FULL_WAITS: AtomicUsize = AtomicUsize::new(0);

    /// Count a wait of `store`'s worker for room in its FIFO when it is the one counted.
    pub(super) fn count_full_wait<S>(store: &S) {
        if COUNT_STORE.load(Ordering::SeqCst) == store as *const S as usize {
            FULL_WAITS.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The address of the pool state whose collector never polls `brk` for a stalled wait.
    pub(crate) static NO_STALLED_WAIT_POLLS: AtomicUsize = AtomicUsize::new(0);

    /// After a request is published and before its wakeup: wake the channel's worker early (a
    /// spurious return the host contract allows, standing for a worker just back from serving
    /// an earlier request) and wait, bounded, until it took the request.
    pub(super) fn after_publish<Id>(
        host: &dyn crate::host::Host,
        sh: &Shared<Id>,
        ch: &super::Chan<Id>,
    ) {
        if HOLD_PUBLISH.load(Ordering::SeqCst) != sh as *const Shared<Id> as usize {
            return;
        }
        let t = std::time::Instant::now();
        while ch.req.lock().is_some() && t.elapsed().as_secs() < 2 {
            host.wake_word(&ch.gen);
            std::thread::sleep(core::time::Duration::from_millis(1));
        }
        // Let the worker act on what it took before the wakeup.
        std::thread::sleep(core::time::Duration::from_millis(50));
    }

    /// Hold the worker of `STORE` until its pool is cancelled, and a while longer so that the
    /// cancelling `Drop` has bumped every `gen` too.
    pub(super) fn between_reads<Id, S>(sh: &Shared<Id>, store: &S) {
        if STORE.load(Ordering::SeqCst) != store as *const S as usize {
            return;
        }
        let t = std::time::Instant::now();
        while sh.cancel.load(Ordering::SeqCst) == 0 && t.elapsed().as_secs() < 2 {
            std::thread::sleep(core::time::Duration::from_millis(1));
        }
        std::thread::sleep(core::time::Duration::from_millis(50));
    }
}
