//! Break requests that reach a pass asleep in a wait.
//!
//! A pass polls its break condition at every chain operation, but it also sleeps: the collector
//! waits on its pool's push word for the scan workers' answers, and on two busy CPUs a worker
//! may not run for milliseconds. A freeze, remaster or stop signalled meanwhile only set a bit
//! in the thread's flag word, which nothing in that sleep looks at, so its acknowledgement
//! waited for the worker (the freeze latency target of BENCHMARKS.md was missed by far on the
//! wide trees).
//!
//! So every break request also *interrupts*: it bumps the slot's request counter, then, under
//! the registration lock, bumps and wakes the word the pass sleeps on, if the pass registered
//! one. The pass registers the word *before* it compares the counter with the value it read
//! before its last break poll, and sleeps only if they are equal. Either that comparison sees
//! the request's count (and the pass polls instead of sleeping), or the request comes after the
//! registration and moves the word the pass sleeps on (the host's word sleep then returns at
//! once, or is woken). The word's value must have been read before the comparison, as every
//! wait of the pool does (read the word, look for work, then sleep on the value read).
//!
//! The registration lock is held across the requester's wake (the registered word lives only
//! while the pass is inside [`sleep`]), so it must not spin: the woken pass may preempt the
//! requester on its CPU and would then spin until the end of its time slice (see "Measured while
//! designing" in BENCHMARKS.md). It is a futex-style lock on a word: contenders sleep on it
//! through the host.
//!
//! The pass polls its break condition again only when the counter moved, so a pass that gets no
//! request polls exactly as often as before: tests that count polls as steps stay deterministic.

use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use crate::host::Host;
use crate::{Error, Result};

/// A word a pass sleeps on, as an interrupt sees it: the interrupt moves it and wakes its
/// sleepers. Every flag word (`super::word::Word`) is one; the pool's push word too.
pub(crate) trait Sleeper {
    /// Sleep while the word equals `expected` (interlocked), for at most `timeout`.
    fn sleep(&self, expected: u32, timeout: Option<Duration>);
    /// Add one to the word, so that a sleeper on its old value wakes.
    fn bump(&self);
    /// Wake every sleeper on the word.
    fn wake(&self);
}

/// A registered wait: the word a pass sleeps on, for the time of the sleep.
#[derive(Clone, Copy)]
pub(crate) struct Target(*const (dyn Sleeper + 'static));

/// The state behind one thread's interrupts: its break-request counter, the registration lock
/// and the registered wait. [`HostIntr`] on hosts; the loom model has its own.
pub(crate) trait IntrState: Sync {
    /// Break requests signalled so far (wrapping).
    fn requests(&self) -> u32;
    /// Count one more break request.
    fn bump_requests(&self);
    /// The registration lock's word (0 free, 1 held, 2 held and someone may sleep on it): load.
    fn lock_load(&self) -> u32;
    /// ... compare-and-swap.
    fn lock_cas(&self, old: u32, new: u32) -> bool;
    /// ... the host's word sleep on it.
    fn lock_sleep(&self, expected: u32);
    /// ... wake its sleepers.
    fn lock_wake(&self);
    /// The registered wait. Read or written only with the registration lock held.
    fn target(&self) -> &UnsafeCell<Option<Target>>;
}

/// The registration lock's word.
struct LockWord<'a>(&'a dyn IntrState);

impl LockWord<'_> {
    fn load(&self) -> u32 {
        self.0.lock_load()
    }
    fn cas(&self, old: u32, new: u32) -> bool {
        self.0.lock_cas(old, new)
    }
    fn sleep(&self, expected: u32) {
        self.0.lock_sleep(expected);
    }
    fn wake(&self) {
        self.0.lock_wake();
    }
}

/// Take the registration lock (sleeping on its word while another holds it).
fn lock(st: &dyn IntrState) {
    let w = LockWord(st);
    if w.cas(0, 1) {
        return;
    }
    loop {
        // Mark it contended (2) while taking it, so the holder's unlock wakes us.
        let v = w.load();
        if v == 0 {
            if w.cas(0, 2) {
                return;
            }
        } else if v == 2 || w.cas(1, 2) {
            w.sleep(2);
        }
    }
}

/// Release the registration lock, waking a contender if one may sleep.
fn unlock(st: &dyn IntrState) {
    let w = LockWord(st);
    loop {
        let v = w.load();
        if w.cas(v, 0) {
            if v == 2 {
                w.wake();
            }
            return;
        }
    }
}

/// Set the registered wait, under the lock.
fn register(st: &dyn IntrState, t: Option<Target>) {
    lock(st);
    // SAFETY: the registration lock is held: nobody else reads or writes the target.
    unsafe { *st.target().get() = t };
    unlock(st);
}

/// The requester's side, once its request bit is in the flag word: count it, then move the word
/// the pass sleeps on. The order matters (see the module notes).
pub(crate) fn fire(st: &dyn IntrState) {
    st.bump_requests();
    lock(st);
    // SAFETY: the registration lock is held: nobody else reads or writes the target.
    if let Some(Target(p)) = unsafe { *st.target().get() } {
        // SAFETY: a registered word stays alive until the pass unregisters it, which takes
        // the lock held here (see `sleep`).
        let w = unsafe { &*p };
        w.bump();
        w.wake();
    }
    unlock(st);
}

/// The pass's side: sleep on `word` while it holds `expected` (read before this call), unless a
/// break request came since the counter read `since`. Returns whether the counter moved (the
/// caller then polls its break condition).
pub(crate) fn sleep(
    st: &dyn IntrState,
    word: &dyn Sleeper,
    expected: u32,
    timeout: Option<Duration>,
    since: u32,
) -> bool {
    let ptr: *const (dyn Sleeper + '_) = word;
    // SAFETY: only the lifetime is erased; the target is unregistered below, before `word`'s
    // borrow ends, and dereferenced only under the registration lock (see `fire`).
    let t: *const (dyn Sleeper + 'static) = unsafe { core::mem::transmute(ptr) };
    // Register first, then compare: a request that the comparison misses sees the registration.
    register(st, Some(Target(t)));
    if st.requests() == since {
        word.sleep(expected, timeout);
    }
    register(st, None);
    st.requests() != since
}

/// A host thread's interrupt state, kept in its `Threads` slot.
pub(crate) struct Interrupt {
    requests: AtomicU32,
    lock: AtomicU32,
    target: UnsafeCell<Option<Target>>,
}

// SAFETY: `target` is read and written only under the registration lock (`lock`/`unlock` on the
// `lock` word); what it points to is a `Sleeper` (atomics and host calls, usable from any thread)
// kept alive by the registering pass until it unregisters under that lock.
unsafe impl Sync for Interrupt {}
// SAFETY: as for `Sync`; an `Interrupt` owns nothing tied to a thread.
unsafe impl Send for Interrupt {}

impl Interrupt {
    pub(crate) const fn new() -> Self {
        Interrupt {
            requests: AtomicU32::new(0),
            lock: AtomicU32::new(0),
            target: UnsafeCell::new(None),
        }
    }
}

/// A slot's [`Interrupt`] with the host its thread runs on (whose word sleep the lock uses).
#[derive(Clone, Copy)]
pub(crate) struct HostIntr<'a> {
    pub(crate) st: &'a Interrupt,
    pub(crate) host: &'a dyn Host,
}

impl IntrState for HostIntr<'_> {
    fn requests(&self) -> u32 {
        self.st.requests.load(Ordering::SeqCst)
    }
    fn bump_requests(&self) {
        self.st.requests.fetch_add(1, Ordering::SeqCst);
    }
    fn lock_load(&self) -> u32 {
        self.st.lock.load(Ordering::SeqCst)
    }
    fn lock_cas(&self, old: u32, new: u32) -> bool {
        self.st
            .lock
            .compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
    fn lock_sleep(&self, expected: u32) {
        self.host.sleep_on_word(&self.st.lock, expected, None);
    }
    fn lock_wake(&self) {
        self.host.wake_word(&self.st.lock);
    }
    fn target(&self) -> &UnsafeCell<Option<Target>> {
        &self.st.target
    }
}

/// What a pass polls to know it must stop, and how a request reaches it while it sleeps.
///
/// [`Brk::poll`] is the break condition (on a sync thread: a break request is pending). Waits of
/// the pass go through `Brk::sleep`: on a sync thread a break request cuts them short, and only
/// then do they poll; elsewhere (a plain `sync_node` call) they are the host's word sleep.
pub struct Brk<'a> {
    poll: &'a dyn Fn() -> bool,
    intr: Option<&'a dyn IntrState>,
    /// The request counter as read before the last poll.
    seen: Cell<u32>,
}

impl<'a> Brk<'a> {
    /// A break condition without interrupts: `poll` is asked at every chain operation only.
    pub fn new(poll: &'a dyn Fn() -> bool) -> Self {
        Brk {
            poll,
            intr: None,
            seen: Cell::new(0),
        }
    }

    /// A break condition whose requests also interrupt the pass's waits through `intr`.
    pub(crate) fn interruptible(
        poll: &'a dyn Fn() -> bool,
        intr: Option<&'a dyn IntrState>,
    ) -> Self {
        Brk {
            poll,
            intr,
            seen: Cell::new(intr.map_or(0, |i| i.requests())),
        }
    }

    /// Whether the pass must stop now.
    pub fn poll(&self) -> bool {
        // The counter before the poll: a request the poll misses moves it afterwards.
        if let Some(i) = self.intr {
            self.seen.set(i.requests());
        }
        (self.poll)()
    }

    /// Sleep on `word` (its host word sleep) while it holds `expected`, which the caller read
    /// before it last looked for work. On a sync thread a break request wakes the sleep; then
    /// the break condition is polled, and `Err(InProgress)` returned if it holds.
    pub(crate) fn sleep(
        &self,
        word: &dyn Sleeper,
        expected: u32,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let Some(i) = self.intr else {
            word.sleep(expected, timeout);
            return Ok(());
        };
        if sleep(i, word, expected, timeout, self.seen.get()) && self.poll() {
            return Err(Error::InProgress);
        }
        Ok(())
    }
}
