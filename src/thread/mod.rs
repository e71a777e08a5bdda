//! The sync-thread protocol: the `HAMMER2_THREAD_*` flag word, the requester operations and the
//! primary sync loop, on any [`Host`].
//!
//! - [`flags`]: the flag word and its names;
//! - [`Request`]: freeze / unfreeze / remaster / stop / signal, and `requester`, their protocol,
//!   each acknowledged;
//! - `primary`: the thread's loop;

pub mod flags;
mod interrupt;
mod primary;
mod request;
mod requester;
mod word;

use core::fmt::Write as _;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::time::Duration;

use alloc::boxed::Box;

use crate::host::{Host, LogLevel, RawThread, ThreadEntry};
use crate::role::MAX_NODES;
use crate::{Error, Result};

pub use flags::{flag_names, FlagNames, ThreadFlags};
pub use interrupt::Brk;
use interrupt::{HostIntr, Interrupt};
pub use request::Request;
pub(crate) use word::HostWord;

/// The work one sync thread does per pass (the cluster wires `Cluster::sync_node` in).
pub trait SyncWork: Sync {
    /// One synchronization pass. `brk` is polled at every chain operation; when it returns true
    /// the pass must return `Err(Error::InProgress)` promptly.
    fn pass(&self, brk: &dyn Fn() -> bool) -> Result<()>;
    /// [`SyncWork::pass`] as the sync thread runs it: `brk` also lets a break request cut the
    /// pass's waits short (see [`Brk`]). The default polls `brk` at the pass's chain operations
    /// only.
    fn pass_with(&self, brk: &Brk<'_>) -> Result<()> {
        self.pass(&|| brk.poll())
    }
    /// Reset sync state after a REMASTER request: re-read the cluster roles into this node's view.
    /// The thread also calls it once when it starts.
    fn remaster(&self);
}

impl<T: SyncWork + ?Sized> SyncWork for &T {
    fn pass(&self, brk: &dyn Fn() -> bool) -> Result<()> {
        (**self).pass(brk)
    }
    fn pass_with(&self, brk: &Brk<'_>) -> Result<()> {
        (**self).pass_with(brk)
    }
    fn remaster(&self) {
        (**self).remaster()
    }
}

/// What a slot's thread is doing, as seen from its flag word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadState {
    /// No thread was ever started on the slot (or the index is out of range).
    NotStarted,
    /// Running passes or idle between them.
    Running,
    /// Acknowledged a freeze and not unfrozen since.
    Frozen,
    /// Exited after a stop.
    Stopped,
}

impl ThreadState {
    /// The scenario-language name (`not-started`, `running`, `frozen`, `stopped`).
    pub const fn name(self) -> &'static str {
        match self {
            ThreadState::NotStarted => "not-started",
            ThreadState::Running => "running",
            ThreadState::Frozen => "frozen",
            ThreadState::Stopped => "stopped",
        }
    }
}

/// Default idle poll between passes (the original's `hz * 5`).
pub const DEFAULT_IDLE_POLL: Duration = Duration::from_secs(5);

/// The host and thread handle of a slot, changed only by start/stop/join.
struct Ctl {
    host: Option<&'static dyn Host>,
    handle: Option<RawThread>,
}

/// One thread slot: its flag word and the handle of the thread running on it.
struct Slot {
    flags: AtomicU32,
    ctl: spin::Mutex<Ctl>,
    /// How break requests reach the thread's pass while it sleeps in a wait.
    intr: Interrupt,
}

impl Slot {
    /// The slot's flag word as the protocol sees it, on `host`, with its interrupts.
    fn word<'a>(&'a self, host: &'a dyn Host) -> HostWord<'a> {
        HostWord {
            word: &self.flags,
            host,
            intr: Some(HostIntr {
                st: &self.intr,
                host,
            }),
        }
    }
}

/// The per-node thread slots a cluster owns (one per node).
///
/// A slot without a thread has STOPPED set in its word, so every request on it (freeze,
/// unfreeze, remaster, stop, signal) is a successful no-op instead of a wait, as in the
/// original; only an index beyond the slots is `Error::Invalid`.
pub struct Threads {
    slots: [Slot; MAX_NODES],
    len: usize,
    idle_poll_ns: AtomicU64,
}

/// The raw pointers a spawned thread needs, sent to it.
struct Launch<W> {
    threads: *const Threads,
    idx: usize,
    host: &'static dyn Host,
    work: W,
}

// SAFETY: `threads` points to a `Sync` value that `Threads::start`'s contract keeps alive and in
// place until the thread is joined; `W: Send` is required of the work itself.
unsafe impl<W: Send> Send for Launch<W> {}

impl<W: SyncWork> Launch<W> {
    fn run(self) {
        // SAFETY: `Threads::start`'s contract: the `Threads` stays at this address until this
        // thread has been joined, which happens only after this function returned.
        let threads = unsafe { &*self.threads };
        let slot = &threads.slots[self.idx];
        let w = slot.word(self.host);
        let host = self.host;
        let idx = self.idx;
        primary::run(&w, &self.work, &|| Some(threads.idle_poll()), &|e| {
            host.log(
                LogLevel::Warn,
                format_args!("sync thread {idx}: pass failed: {e}"),
            )
        });
    }
}

impl Threads {
    /// Slots for `n` nodes (at most [`MAX_NODES`]), no thread started.
    pub fn new(n: usize) -> Self {
        Threads {
            slots: core::array::from_fn(|_| Slot {
                flags: AtomicU32::new(ThreadFlags::STOPPED.bits()),
                ctl: spin::Mutex::new(Ctl {
                    host: None,
                    handle: None,
                }),
                intr: Interrupt::new(),
            }),
            len: n.min(MAX_NODES),
            idle_poll_ns: AtomicU64::new(DEFAULT_IDLE_POLL.as_nanos() as u64),
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Set the idle poll: how long a thread sleeps between passes when nothing wakes it. Running
    /// threads use the new value from their next idle sleep.
    pub fn set_idle_poll(&self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        self.idle_poll_ns.store(ns, Ordering::Relaxed);
    }

    /// The idle poll in force.
    pub fn idle_poll(&self) -> Duration {
        Duration::from_nanos(self.idle_poll_ns.load(Ordering::Relaxed))
    }

    fn slot(&self, idx: usize) -> Result<&Slot> {
        if idx < self.len {
            Ok(&self.slots[idx])
        } else {
            Err(Error::Invalid)
        }
    }

    /// The word of a slot that has (had) a thread, with the host it runs on; `None` for a slot
    /// that never had one (`Error::Invalid` for a bad index).
    fn word(&self, idx: usize) -> Result<Option<HostWord<'_>>> {
        let slot = self.slot(idx)?;
        let host = slot.ctl.lock().host;
        Ok(host.map(|h| slot.word(h)))
    }

    /// Start a sync thread on slot `idx` running `work`, with a fresh flag word.
    ///
    /// `Error::Busy` if a thread runs there, `Error::Invalid` for a bad index, `Error::NoMem` or
    /// the host's error if the thread cannot be created.
    ///
    /// # Safety
    /// `self` must stay at its address, and everything `work` borrows must stay valid, until the
    /// thread is joined: by [`Request::Stop`] or [`Threads::stop_all`], by a later `start` on the
    /// slot, or by dropping `self` (which stops and joins every thread first).
    pub unsafe fn start<W: SyncWork + Send>(
        &self,
        idx: usize,
        host: &'static dyn Host,
        work: W,
    ) -> Result<()> {
        let slot = self.slot(idx)?;
        let claim = slot.word(host);
        // DEVIATION (not in the original, which holds no spin lock here): `ctl` is a pure spin
        // lock, so it is never held across the host's join or spawn (both sleep); on one CPU
        // without preemption a requester spinning on it would never let the holder run. The
        // STARTING bit owns the slot instead, and `ctl` is only taken for short copies.
        requester::claim_start(&claim)?;
        // A thread that published STOPPED but was not joined yet: it only has its final wake
        // left, so this join is short. Nobody else takes a handle while STARTING is set and
        // STOPPED was already published by that thread.
        let old = {
            let mut ctl = slot.ctl.lock();
            (ctl.handle.take(), ctl.host)
        };
        if let (Some(t), Some(h)) = old {
            h.join(t);
        }
        match self.launch(slot, idx, host, work) {
            Ok(t) => {
                slot.ctl.lock().handle = Some(t);
                // The handle is in place: stoppers waiting for it may look now.
                primary::ack(&claim, ThreadFlags::empty(), ThreadFlags::STARTING);
                Ok(())
            }
            Err(e) => {
                // Requesters that raced with this start see STOPPED and give up.
                primary::ack(&claim, ThreadFlags::STOPPED, ThreadFlags::STARTING);
                Err(e)
            }
        }
    }

    /// Reset the claimed slot's word and spawn its thread (the slot is owned through STARTING).
    fn launch<W: SyncWork + Send>(
        &self,
        slot: &Slot,
        idx: usize,
        host: &'static dyn Host,
        work: W,
    ) -> Result<RawThread> {
        let launch = Launch {
            threads: self as *const Threads,
            idx,
            host,
            work,
        };
        let entry: Box<dyn FnOnce() + Send + '_> = crate::mem::try_box(move || launch.run())?;
        // SAFETY: only the lifetime is changed. The caller of `start` guarantees that what the
        // closure borrows (`self` and `work`'s borrows) outlives the thread, which is joined
        // before either may go away (see `start`'s contract).
        let entry: ThreadEntry = unsafe { core::mem::transmute(entry) };
        slot.ctl.lock().host = Some(host);
        // DEVIATION (bug 4): the original clears only STOP/STOPPED/FREEZE/FROZEN when it
        // (re)creates a thread; stale request bits then leak into the new thread. Reset it all,
        // keeping only STARTING (the claim) until the handle is stored.
        slot.flags
            .store(ThreadFlags::STARTING.bits(), Ordering::SeqCst);
        let mut name = heapless::String::<16>::new();
        // Cannot fail: "h2sync/" plus at most one digit fits.
        let _ = write!(name, "h2sync/{idx}");
        host.spawn(&name, entry)
    }

    /// Make `req` of slot `idx`'s thread; returns once the thread acknowledged it (see
    /// [`Request`]). A successful no-op if no thread runs there or it stopped meanwhile
    /// (`Error::Invalid` only for a bad index).
    pub fn request(&self, idx: usize, req: Request) -> Result<()> {
        match req {
            Request::Freeze => self.on_word(idx, |w| requester::freeze(w)),
            Request::Unfreeze => self.on_word(idx, |w| requester::unfreeze(w)),
            Request::Remaster => self.on_word(idx, |w| requester::remaster(w)),
            Request::Stop => self.stop(idx),
            Request::Signal => self.on_word(idx, |w| requester::kick(w)),
        }
    }

    /// Run requester operation `op` on slot `idx`'s word. Its answer (whether a thread
    /// acknowledged) is not needed: a request to a slot without a thread, or whose thread
    /// stopped first, is a successful no-op.
    fn on_word(&self, idx: usize, op: impl FnOnce(&HostWord<'_>) -> bool) -> Result<()> {
        if let Some(w) = self.word(idx)? {
            op(&w);
        }
        Ok(())
    }

    /// [`Request::Freeze`], calling `signalled` once FREEZE is set, before the wait.
    pub(crate) fn freeze_observed(&self, idx: usize, signalled: &dyn Fn()) -> Result<()> {
        self.on_word(idx, |w| requester::freeze_observed(w, signalled))
    }

    /// [`Request::Stop`]: returns once the thread has exited and been joined. A no-op if no
    /// thread runs there.
    fn stop(&self, idx: usize) -> Result<()> {
        let Some(w) = self.word(idx)? else {
            return Ok(());
        };
        if !requester::signal(&w, ThreadFlags::STOP) {
            return Ok(());
        }
        // The start that made the thread may not have stored its handle yet: sleep until it has
        // (never spin on `ctl` while the starter sleeps in the host's spawn).
        requester::wait_started(&w);
        // Join at once: the host's join waits for the thread's exit, which follows its STOPPED
        // acknowledgement, so waiting for that first would only add a wakeup (as `kthread_stop`
        // does not). Without the handle (another stopper or a later start is joining it) wait
        // for STOPPED instead.
        match self.take_handle(idx, ThreadFlags::STOP.union(ThreadFlags::STOPPED)) {
            Some((t, h)) => h.join(t),
            None => {
                requester::wait(&w, |_| false);
                self.join(idx);
            }
        }
        Ok(())
    }

    /// Take slot `idx`'s handle if its word has one of `ended` set (the thread was asked to stop
    /// or has stopped, so joining it returns). Under `ctl` for a copy only.
    fn take_handle(
        &self,
        idx: usize,
        ended: ThreadFlags,
    ) -> Option<(RawThread, &'static dyn Host)> {
        let slot = self.slot(idx).ok()?;
        let mut ctl = slot.ctl.lock();
        if slot.flags.load(Ordering::SeqCst) & ended.bits() == 0 {
            return None;
        }
        let host = ctl.host?;
        Some((ctl.handle.take()?, host))
    }

    /// Join slot `idx`'s thread if it stopped and nobody joined it yet.
    fn join(&self, idx: usize) {
        if let Some((t, h)) = self.take_handle(idx, ThreadFlags::STOPPED) {
            h.join(t);
        }
    }

    /// Stop every running thread (all asked first, so they wind down together) and join them.
    ///
    /// Takes `&mut self` so that no [`Threads::start`] can run meanwhile: a start that claimed a
    /// slot between the STOP requests and the waits below would give it a fresh word, and the
    /// wait for its STOPPED would never end. Requesters sharing `&self` stop slots one by one
    /// with [`Request::Stop`].
    pub fn stop_all(&mut self) {
        for idx in 0..self.len {
            if let Ok(Some(w)) = self.word(idx) {
                requester::signal(&w, ThreadFlags::STOP);
            }
        }
        for idx in 0..self.len {
            if let Ok(Some(w)) = self.word(idx) {
                requester::wait(&w, |_| false);
            }
            self.join(idx);
        }
    }

    /// The raw flag word of slot `idx` (0 for a bad index).
    pub fn flags(&self, idx: usize) -> u32 {
        self.slot(idx)
            .map(|s| s.flags.load(Ordering::SeqCst))
            .unwrap_or(0)
    }

    /// What slot `idx`'s thread is doing.
    pub fn state(&self, idx: usize) -> ThreadState {
        let Ok(slot) = self.slot(idx) else {
            return ThreadState::NotStarted;
        };
        let v = slot.flags.load(Ordering::SeqCst);
        if v & ThreadFlags::STOPPED.bits() != 0 {
            if slot.ctl.lock().host.is_some() {
                ThreadState::Stopped
            } else {
                ThreadState::NotStarted
            }
        } else if v & ThreadFlags::FROZEN.bits() != 0 {
            ThreadState::Frozen
        } else {
            ThreadState::Running
        }
    }
}

// Requesters on any thread share one `Threads`.
const _: () = {
    const fn assert_sync<T: Sync>() {}
    assert_sync::<Threads>();
};

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests;

#[cfg(all(test, loom))]
mod loom;
