//! A minimal std host for this crate's unit tests: real shared/exclusive locks and a count of
//! live locks, so tests can prove every chain lock is destroyed.

use std::boxed::Box;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use std::vec::Vec;

use crate::host::{Host, LockMode, LogLevel, RawLock, RawThread, ThreadEntry};
use crate::Result;

type Lock = Arc<(Mutex<i64>, Condvar)>;

std::thread_local! {
    /// Locks the current thread holds (a guard is taken and given back by one thread).
    static HELD: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

/// Locks of this host the calling thread holds now.
pub(crate) fn held_here() -> usize {
    HELD.with(|h| h.get())
}

pub(crate) struct TestHost {
    locks: Mutex<Vec<Option<Lock>>>,
    threads: Mutex<Vec<Option<std::thread::JoinHandle<()>>>>,
    live: AtomicUsize,
    /// Calls of `should_stop` left before it answers true (`usize::MAX`: never).
    stop_after: AtomicUsize,
    relaxed: AtomicUsize,
}

impl TestHost {
    fn get(&self, l: &RawLock) -> Lock {
        self.locks.lock().unwrap()[l.as_raw()]
            .clone()
            .expect("live lock")
    }
}

impl Host for TestHost {
    fn sleep_on_word(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let end = timeout.map(|t| Instant::now() + t);
        while word.load(Ordering::SeqCst) == expected {
            if end.is_some_and(|e| Instant::now() >= e) {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    fn wake_word(&self, _word: &AtomicU32) {}
    fn lock_create(&self) -> Result<RawLock> {
        let mut v = self.locks.lock().unwrap();
        v.push(Some(Arc::new((Mutex::new(0), Condvar::new()))));
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(RawLock::from_raw(v.len() - 1))
    }
    fn lock_destroy(&self, lock: RawLock) {
        let l = self.locks.lock().unwrap()[lock.as_raw()]
            .take()
            .expect("destroyed twice");
        assert_eq!(*l.0.lock().unwrap(), 0, "destroying a held lock");
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
    fn lock(&self, lock: &RawLock, mode: LockMode, _depth: u8) {
        let l = self.get(lock);
        let mut s = l.0.lock().unwrap();
        match mode {
            LockMode::Shared => {
                while *s < 0 {
                    s = l.1.wait(s).unwrap();
                }
                *s += 1;
            }
            LockMode::Exclusive => {
                while *s != 0 {
                    s = l.1.wait(s).unwrap();
                }
                *s = -1;
            }
        }
        HELD.with(|h| h.set(h.get() + 1));
    }
    fn unlock(&self, lock: &RawLock, mode: LockMode) {
        let l = self.get(lock);
        let mut s = l.0.lock().unwrap();
        match mode {
            LockMode::Shared => {
                assert!(*s > 0);
                *s -= 1
            }
            LockMode::Exclusive => {
                assert_eq!(*s, -1);
                *s = 0
            }
        }
        l.1.notify_all();
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
    }
    fn spawn(&self, _name: &str, entry: ThreadEntry) -> Result<RawThread> {
        let h = std::thread::spawn(entry);
        let mut v = self.threads.lock().unwrap();
        v.push(Some(h));
        Ok(RawThread::from_raw(v.len() - 1))
    }
    fn join(&self, thread: RawThread) {
        let h = self.threads.lock().unwrap()[thread.as_raw()].take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }
    fn now_ns(&self) -> u64 {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
    fn log(&self, _level: LogLevel, _args: core::fmt::Arguments<'_>) {}
    fn should_stop(&self) -> bool {
        let n = self.stop_after.load(Ordering::SeqCst);
        if n == usize::MAX {
            return false;
        }
        if n > 0 {
            self.stop_after.store(n - 1, Ordering::SeqCst);
        }
        n == 0
    }
    fn relax(&self) {
        self.relaxed.fetch_add(1, Ordering::SeqCst);
    }
}

impl TestHost {
    /// Make [`Host::should_stop`] answer true from its `n`-th next call on (`usize::MAX`: never).
    pub(crate) fn stop_after(&self, n: usize) {
        self.stop_after.store(n, Ordering::SeqCst);
    }

    /// Calls of [`Host::relax`] so far.
    pub(crate) fn relaxed(&self) -> usize {
        self.relaxed.load(Ordering::SeqCst)
    }

    /// Threads spawned and not yet joined on this host.
    pub(crate) fn live_threads(&self) -> usize {
        self.threads
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.is_some())
            .count()
    }

    /// Locks created and not yet destroyed on this host.
    pub(crate) fn live_locks(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

/// A fresh host for one test (leaked: tests are short-lived), so lock counts are per test.
pub(crate) fn host() -> &'static TestHost {
    Box::leak(Box::new(TestHost {
        locks: Mutex::new(Vec::new()),
        threads: Mutex::new(Vec::new()),
        live: AtomicUsize::new(0),
        stop_after: AtomicUsize::new(usize::MAX),
        relaxed: AtomicUsize::new(0),
    }))
}
