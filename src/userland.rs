//! The userland host: std threads, `parking_lot_core` word sleep, `parking_lot` chain locks.
//!
//! Logging goes to stderr only when the environment variable `H2S_LOG` is set, so tests stay
//! quiet.

use core::fmt;
use core::sync::atomic::{fence, AtomicU32, Ordering};
use core::time::Duration;
use std::io::Write as _;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::lock_api::RawRwLock as _;
use parking_lot_core::{DEFAULT_PARK_TOKEN, DEFAULT_UNPARK_TOKEN};

use crate::host::{Host, LockMode, LogLevel, RawLock, RawThread, ThreadEntry};
use crate::mem::try_box;
use crate::{Error, Result};

pub mod blocks;
pub mod budget;

/// The userland [`Host`]. Stateless: use the shared instance from [`host`].
#[derive(Debug, Default)]
pub struct UserlandHost;

static HOST: UserlandHost = UserlandHost;

/// The process-wide userland host.
pub fn host() -> &'static dyn Host {
    &HOST
}

fn lock_ref(lock: &RawLock) -> &parking_lot::RawRwLock {
    // SAFETY: a `RawLock` of this host holds a pointer from `Box::into_raw` in `lock_create`,
    // valid until `lock_destroy` consumes the handle, which it cannot while `lock` is borrowed.
    unsafe { &*(lock.as_raw() as *const parking_lot::RawRwLock) }
}

impl Host for UserlandHost {
    fn sleep_on_word(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let key = word as *const AtomicU32 as usize;
        let deadline = timeout.and_then(|d| Instant::now().checked_add(d));
        // `park` runs `validate` with the address's queue locked and queues us only if it holds;
        // `unpark_all` takes the same queue lock, so a wake after a store that changed the word
        // either precedes our validation (which then sees the new value) or finds us queued.
        // SAFETY: the callbacks do not panic and do not call into parking_lot; the key is an
        // address we only use as a key.
        unsafe {
            parking_lot_core::park(
                key,
                || word.load(Ordering::SeqCst) == expected,
                || {},
                |_, _| {},
                DEFAULT_PARK_TOKEN,
                deadline,
            );
        }
    }

    fn wake_word(&self, word: &AtomicU32) {
        fence(Ordering::SeqCst);
        // SAFETY: `unpark_all` only uses the address as a key.
        unsafe {
            parking_lot_core::unpark_all(word as *const AtomicU32 as usize, DEFAULT_UNPARK_TOKEN);
        }
    }

    fn lock_create(&self) -> Result<RawLock> {
        let lock = try_box(<parking_lot::RawRwLock as parking_lot::lock_api::RawRwLock>::INIT)?;
        Ok(RawLock::from_raw(Box::into_raw(lock) as usize))
    }

    fn lock_destroy(&self, lock: RawLock) {
        // SAFETY: the handle came from `lock_create` (a leaked box) and is consumed here once.
        drop(unsafe { Box::from_raw(lock.as_raw() as *mut parking_lot::RawRwLock) });
    }

    fn lock(&self, lock: &RawLock, mode: LockMode, _depth: u8) {
        match mode {
            LockMode::Shared => lock_ref(lock).lock_shared(),
            LockMode::Exclusive => lock_ref(lock).lock_exclusive(),
        }
    }

    fn unlock(&self, lock: &RawLock, mode: LockMode) {
        // SAFETY: the `Host::unlock` contract: the caller holds `lock` in `mode`.
        unsafe {
            match mode {
                LockMode::Shared => lock_ref(lock).unlock_shared(),
                LockMode::Exclusive => lock_ref(lock).unlock_exclusive(),
            }
        }
    }

    fn spawn(&self, name: &str, entry: ThreadEntry) -> Result<RawThread> {
        // The handle's box first: once the thread runs, nothing may fail, or the caller would
        // free what the thread uses while it still runs.
        let mut slot: Box<Option<JoinHandle<()>>> = try_box(None)?;
        // Starting a thread allocates infallibly inside std and parking_lot: see `budget`.
        let handle = budget::overdraft(|| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    budget::overdraft(budget::prime_parking);
                    entry()
                })
        })
        .map_err(|_| Error::NoMem)?;
        *slot = Some(handle);
        Ok(RawThread::from_raw(Box::into_raw(slot) as usize))
    }

    fn join(&self, thread: RawThread) {
        // SAFETY: the handle came from `spawn` (a leaked box) and is consumed here once.
        let slot = unsafe { Box::from_raw(thread.as_raw() as *mut Option<JoinHandle<()>>) };
        if let Some(Err(panic)) = slot.map(JoinHandle::join) {
            // A panicking core thread is a bug: let the joiner (a test) fail with it.
            std::panic::resume_unwind(panic);
        }
    }

    fn now_ns(&self) -> u64 {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let ns = EPOCH.get_or_init(Instant::now).elapsed().as_nanos();
        ns.min(u64::MAX as u128) as u64
    }

    fn log(&self, level: LogLevel, args: fmt::Arguments<'_>) {
        static ON: OnceLock<bool> = OnceLock::new();
        if *ON.get_or_init(|| budget::overdraft(|| std::env::var_os("H2S_LOG").is_some())) {
            // Nowhere to report a failed write of a log line.
            let _ = writeln!(std::io::stderr(), "hammer2-synchro {level:?}: {args}");
        }
    }

    /// A process has no "this run is being killed" state: a signal ends the process itself.
    fn should_stop(&self) -> bool {
        false
    }

    /// Threads are preempted by the OS scheduler; nothing to do.
    fn relax(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn word_sleep_returns_when_word_differs_and_times_out() {
        let h = host();
        let w = AtomicU32::new(1);
        h.sleep_on_word(&w, 0, None); // differs: returns at once
        let t0 = h.now_ns();
        h.sleep_on_word(&w, 1, Some(Duration::from_millis(20)));
        assert!(h.now_ns() - t0 >= 20_000_000);
    }

    #[test]
    fn wake_reaches_sleeper() {
        let h = host();
        static W: AtomicU32 = AtomicU32::new(0);
        let t = h
            .spawn(
                "sleeper",
                Box::new(|| {
                    while W.load(Ordering::SeqCst) == 0 {
                        host().sleep_on_word(&W, 0, None);
                    }
                }),
            )
            .unwrap();
        crate::host::sleep(h, Duration::from_millis(10));
        W.store(1, Ordering::SeqCst);
        h.wake_word(&W);
        h.join(t);
    }

    #[test]
    fn locks_exclude() {
        let h = host();
        let l = Arc::new(h.lock_create().unwrap());
        h.lock(&l, LockMode::Shared, 0);
        h.lock(&l, LockMode::Shared, 0);
        assert!(!lock_ref(&l).try_lock_exclusive());
        h.unlock(&l, LockMode::Shared);
        h.unlock(&l, LockMode::Shared);
        h.lock(&l, LockMode::Exclusive, 0);
        assert!(!lock_ref(&l).try_lock_shared());
        h.unlock(&l, LockMode::Exclusive);
        let l = Arc::try_unwrap(l).unwrap();
        h.lock_destroy(l);
    }

    #[test]
    fn spawn_names_and_joins() {
        let h = host();
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let t = h
            .spawn(
                "h2s-test",
                Box::new(move || {
                    assert_eq!(std::thread::current().name(), Some("h2s-test"));
                    r.store(true, Ordering::SeqCst);
                }),
            )
            .unwrap();
        h.join(t);
        assert!(ran.load(Ordering::SeqCst));
    }
}
