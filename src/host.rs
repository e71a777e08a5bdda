//! The porting surface: everything the core needs from the kernel (or process) hosting it.
//!
//! A host implements [`Host`] once, as a `'static` value, and hands `&'static dyn Host` to
//! [`crate::cluster::Cluster::new`]. Memory is not part of this trait: the core allocates through
//! Rust's global allocator, which a kernel host backs with a bounded pool, and every allocation on
//! a data path is fallible (see [`crate::mem`]), so an exhausted pool is an `Error::NoMem`.

use alloc::boxed::Box;
use core::fmt;
use core::sync::atomic::AtomicU32;
use core::time::Duration;

use crate::{Error, Result};

mod lock;
#[cfg(test)]
pub(crate) mod testhost;
pub use lock::{HostLock, HostLockGuard};

/// Shared or exclusive chain-lock mode (`HAMMER2_RESOLVE_SHARED` or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once; no modification.
    Shared,
    /// One holder; may modify.
    Exclusive,
}

/// Log severity, mapped by the host onto its own (printk levels, `log` crate, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Something is wrong and a person should look.
    Error,
    /// Unexpected but handled.
    Warn,
    /// Normal progress worth a line.
    Info,
    /// Detail for debugging.
    Debug,
}

/// An opaque host lock handle (Linux: a pointer to an `rw_semaphore`).
///
/// Created by [`Host::lock_create`], released exactly once by [`Host::lock_destroy`].
#[derive(Debug, PartialEq, Eq)]
pub struct RawLock(usize);

impl RawLock {
    /// Wrap a host value (pointer or index). Only the host that made it may interpret it.
    pub const fn from_raw(v: usize) -> Self {
        RawLock(v)
    }
    /// The host value given to [`RawLock::from_raw`].
    pub const fn as_raw(&self) -> usize {
        self.0
    }
}

/// An opaque host thread handle (Linux: a pinned `task_struct`).
///
/// Returned by [`Host::spawn`], consumed exactly once by [`Host::join`].
#[derive(Debug, PartialEq, Eq)]
pub struct RawThread(usize);

impl RawThread {
    /// Wrap a host value (pointer or index). Only the host that made it may interpret it.
    pub const fn from_raw(v: usize) -> Self {
        RawThread(v)
    }
    /// The host value given to [`RawThread::from_raw`].
    pub const fn as_raw(&self) -> usize {
        self.0
    }
}

/// The `depth` the core's own host locks (not chains: the frontend serialiser, a node's
/// sync-pass lock) are taken with. They are taken before any chain lock and never inside one
/// another; no chain has this depth, so a lock validator can give them a class of their own.
pub const HOST_LOCK_DEPTH: u8 = u8::MAX;

/// The deepest `depth` a chain lock is taken with: chains further below the PFS root pass this
/// too (a validator classing locks by depth must treat it as "this deep or deeper").
pub const CHAIN_DEPTH_MAX: u8 = HOST_LOCK_DEPTH - 1;

/// The body of a spawned thread.
pub type ThreadEntry = Box<dyn FnOnce() + Send + 'static>;

/// What a kernel must provide. Every method may be called from any core thread concurrently.
///
/// Contexts: every method may sleep except [`Host::wake_word`], [`Host::now_ns`] and
/// [`Host::log`], which must be callable with chain locks held and must not sleep.
pub trait Host: Send + Sync {
    /// Sleep while `*word == expected`, for at most `timeout` (`None`: no limit).
    ///
    /// The no-lost-wakeup contract (DragonFly `tsleep_interlock` + `tsleep(PINTERLOCKED)`):
    /// the host first queues the caller on `word`'s address, *then* re-reads the word; if it no
    /// longer equals `expected` it returns at once. A [`Host::wake_word`] that follows any store to
    /// the word therefore either is seen by that re-read or finds the caller queued. Spurious
    /// returns are allowed: callers always re-test their condition.
    fn sleep_on_word(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>);

    /// Wake every thread sleeping on `word`. Issues a full barrier before looking for sleepers,
    /// so a store to the word made before this call is visible to the woken threads.
    fn wake_word(&self, word: &AtomicU32);

    /// Create a sleepable shared/exclusive lock (a chain lock).
    fn lock_create(&self) -> Result<RawLock>;

    /// Destroy a lock made by [`Host::lock_create`]. It must be unlocked.
    fn lock_destroy(&self, lock: RawLock);

    /// Acquire `lock` in `mode`, sleeping as long as needed. `depth` is the chain's depth below
    /// the PFS root, capped at [`CHAIN_DEPTH_MAX`]; hosts with lock validators class locks by it
    /// (a parent is always locked before its child), others ignore it. Locks that are not chains
    /// pass [`HOST_LOCK_DEPTH`].
    fn lock(&self, lock: &RawLock, mode: LockMode, depth: u8);

    /// Release a lock held in `mode` by the caller.
    fn unlock(&self, lock: &RawLock, mode: LockMode);

    /// Start a thread named `name` running `entry`. The thread runs until `entry` returns.
    fn spawn(&self, name: &str, entry: ThreadEntry) -> Result<RawThread>;

    /// Wait until the thread's `entry` has returned, then release the handle.
    fn join(&self, thread: RawThread);

    /// A monotonic clock in nanoseconds.
    fn now_ns(&self) -> u64;

    /// Write one log line.
    fn log(&self, level: LogLevel, args: fmt::Arguments<'_>);

    /// Whether the run the calling thread serves must end now: its caller is gone or being
    /// killed (Linux: `fatal_signal_pending(current)`). Polled by interruptible work (scenario
    /// commands, their sleeps and waits, long walks), never by sync threads, whose sleeps are
    /// not interruptible. Must not sleep; callable with chain locks held.
    fn should_stop(&self) -> bool;

    /// A scheduling point: let other tasks run if the calling thread has run long enough
    /// (Linux: `cond_resched()`). Called at a bounded interval in every loop over chains, so
    /// no loop can hold a CPU unboundedly. May sleep: the caller holds no spin lock (chain
    /// locks, which are sleepable, may be held).
    fn relax(&self);
}

/// Longest single sleep of [`sleep_interruptible`]: how late a stop request may be seen.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Sleep for `d` on the host, ending early with [`Error::Interrupted`] once
/// [`Host::should_stop`] says so (polled at least every [`STOP_POLL`]).
pub fn sleep_interruptible(host: &dyn Host, d: Duration) -> Result<()> {
    let end = host
        .now_ns()
        .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64);
    loop {
        if host.should_stop() {
            return Err(Error::Interrupted);
        }
        let now = host.now_ns();
        if now >= end {
            return Ok(());
        }
        sleep(host, Duration::from_nanos(end - now).min(STOP_POLL));
    }
}

/// Sleep for `d` on the host (a word sleep nobody wakes).
pub fn sleep(host: &dyn Host, d: Duration) {
    let word = AtomicU32::new(0);
    let end = host
        .now_ns()
        .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64);
    loop {
        let now = host.now_ns();
        if now >= end {
            return;
        }
        host.sleep_on_word(&word, 0, Some(Duration::from_nanos(end - now)));
    }
}
