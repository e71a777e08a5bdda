//! Conformance tests of a host's primitives (the porting surface, [`crate::host::Host`]).
//!
//! A new host runs [`run_all`] before anything else: word-sleep races (a wake after a store is
//! never lost, the timeout is honoured), shared/exclusive lock exclusion, spawn/join and the
//! clock. Same KTAP subtest style as [`crate::testkit::selftest`]. Timeouts are generous (seconds) and
//! only bound a broken host; a conforming one never reaches them.

// Failures carry a fixed-capacity `Note` on purpose: reporting one must never allocate.
#![allow(clippy::result_large_err)]

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::time::Duration;

use crate::host::{self, Host, LockMode, RawLock, RawThread, ThreadEntry};
use crate::mem::{try_box, TryArc};
use crate::testkit::selftest::{note, run_cases, Case, Note, Outcome};

/// Every conformance test, by name.
pub const CASES: &[(&str, Case)] = &[
    ("clock_is_monotonic", clock_is_monotonic),
    (
        "sleep_returns_if_word_differs",
        sleep_returns_if_word_differs,
    ),
    ("sleep_timeout_honoured", sleep_timeout_honoured),
    ("wake_reaches_sleeper", wake_reaches_sleeper),
    ("no_lost_wakeup_ping_pong", no_lost_wakeup_ping_pong),
    ("exclusive_lock_excludes", exclusive_lock_excludes),
    ("shared_lock_is_shared", shared_lock_is_shared),
    ("exclusive_waits_for_shared", exclusive_waits_for_shared),
    ("spawn_join_many", spawn_join_many),
];

/// Run the conformance tests on `host`; returns (passed, failed).
pub fn run_all(host: &'static dyn Host, out: &mut dyn fmt::Write) -> (u32, u32) {
    run_cases(host, "host-conformance", CASES, out)
}

const SEC: u64 = 1_000_000_000;

fn fail(msg: Note) -> Outcome {
    Err(msg)
}

/// Most threads [`spawn_all`] starts.
const MAX_SPAWN: usize = 16;

/// Spawn `n` (at most [`MAX_SPAWN`]) threads running `f(i)`, then join them all (also when a
/// spawn fails).
fn spawn_all(
    host: &'static dyn Host,
    n: usize,
    f: impl Fn(usize) -> crate::Result<ThreadEntry>,
) -> Outcome {
    let mut handles: heapless::Vec<RawThread, MAX_SPAWN> = heapless::Vec::new();
    let mut err = None;
    for i in 0..n.min(MAX_SPAWN) {
        match f(i).and_then(|entry| host.spawn("h2s-conformance", entry)) {
            Ok(t) => {
                // Cannot fail: at most MAX_SPAWN threads.
                let _ = handles.push(t);
            }
            Err(e) => {
                err = Some(note!("spawn {i}: {e}"));
                break;
            }
        }
    }
    for t in handles {
        host.join(t);
    }
    err.map_or(Ok(()), Err)
}

fn boxed(f: impl FnOnce() + Send + 'static) -> crate::Result<ThreadEntry> {
    Ok(try_box(f)?)
}

/// A value for test threads to share; out of memory is a failure to report.
fn shared<T>(v: T) -> core::result::Result<TryArc<T>, Note> {
    TryArc::new(v).map_err(|e| note!("shared state: {e}"))
}

fn clock_is_monotonic(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let mut last = host.now_ns();
    for _ in 0..10_000 {
        let now = host.now_ns();
        if now < last {
            return fail(note!("clock went back from {last} to {now}"));
        }
        last = now;
    }
    let t0 = host.now_ns();
    host::sleep(host, Duration::from_millis(10));
    let d = host.now_ns() - t0;
    if d < 10_000_000 {
        return fail(note!("a 10 ms sleep advanced the clock by {d} ns"));
    }
    Ok(())
}

fn sleep_returns_if_word_differs(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    returns_if_word_differs(host, Duration::from_secs(5))
}

/// 100 sleeps on a word that differs from `expected`: each must return well before `timeout`.
fn returns_if_word_differs(host: &'static dyn Host, timeout: Duration) -> Outcome {
    let w = AtomicU32::new(7);
    let limit = timeout.as_nanos() as u64 / 2;
    for _ in 0..100 {
        let t0 = host.now_ns();
        host.sleep_on_word(&w, 6, Some(timeout));
        let d = host.now_ns() - t0;
        if d >= limit {
            return fail(note!(
                "sleeping on a word that differs took {} ms",
                d / 1_000_000
            ));
        }
    }
    Ok(())
}

fn sleep_timeout_honoured(host: &'static dyn Host, out: &mut dyn fmt::Write) -> Outcome {
    let w = AtomicU32::new(0);
    let t0 = host.now_ns();
    // Spurious returns are allowed: sleep until the deadline passed.
    let end = t0 + 20_000_000;
    let mut sleeps = 0;
    while host.now_ns() < end {
        host.sleep_on_word(&w, 0, Some(Duration::from_millis(20)));
        sleeps += 1;
        if host.now_ns() - t0 > 5 * SEC {
            return fail(note!("a 20 ms sleep took over 5 s"));
        }
    }
    let _ = writeln!(out, "# 20 ms timeout: {sleeps} sleep(s)");
    Ok(())
}

fn wake_reaches_sleeper(host: &'static dyn Host, out: &mut dyn fmt::Write) -> Outcome {
    let w = shared(AtomicU32::new(0))?;
    let woke_after = shared(AtomicU64::new(0))?;
    let (w2, woke2) = (w.clone(), woke_after.clone());
    let t = boxed(move || {
        let t0 = host.now_ns();
        while w2.load(Ordering::SeqCst) == 0 {
            host.sleep_on_word(&w2, 0, Some(Duration::from_secs(10)));
        }
        woke2.store(host.now_ns() - t0, Ordering::SeqCst);
    })
    .and_then(|entry| host.spawn("h2s-conformance", entry))
    .map_err(|e| note!("spawn: {e}"))?;
    host::sleep(host, Duration::from_millis(20));
    w.store(1, Ordering::SeqCst);
    host.wake_word(&w);
    host.join(t);
    let ns = woke_after.load(Ordering::SeqCst);
    let _ = writeln!(out, "# sleeper returned after {} us", ns / 1000);
    if ns >= 5 * SEC {
        return fail(note!("the wake did not reach the sleeper (it timed out)"));
    }
    Ok(())
}

fn no_lost_wakeup_ping_pong(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    ping_pong(host, Duration::from_secs(5))
}

/// Two threads hand a token back and forth 2000 times through one word, each sleeping on the
/// value it saw. The peer changes the word right after it, so a sleep that runs into `timeout`
/// is a lost wakeup (a wake between the sleeper's test and its sleep that did not count).
fn ping_pong(host: &'static dyn Host, timeout: Duration) -> Outcome {
    const ROUNDS: u32 = 2000;
    let w = shared(AtomicU32::new(0))?;
    let lost = shared(AtomicU32::new(0))?;
    let (w2, lost2) = (w.clone(), lost.clone());
    let timeout_ns = timeout.as_nanos() as u64;
    spawn_all(host, 2, move |me| {
        let (w, lost) = (w2.clone(), lost2.clone());
        boxed(move || {
            // Thread 0 moves even values to odd, thread 1 odd to even.
            loop {
                let v = w.load(Ordering::SeqCst);
                if v >= 2 * ROUNDS || lost.load(Ordering::SeqCst) != 0 {
                    // Done, or failed: let the peer see it and stop too.
                    w.store(2 * ROUNDS, Ordering::SeqCst);
                    host.wake_word(&w);
                    return;
                }
                if v % 2 == me as u32 {
                    w.store(v + 1, Ordering::SeqCst);
                    host.wake_word(&w);
                    continue;
                }
                let t0 = host.now_ns();
                host.sleep_on_word(&w, v, Some(timeout));
                if host.now_ns() - t0 >= timeout_ns {
                    lost.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    })?;
    let n = lost.load(Ordering::SeqCst);
    if n != 0 {
        return fail(note!("a wakeup was lost within {ROUNDS} round trips"));
    }
    Ok(())
}

/// A host lock shared by test threads, destroyed with the last reference.
struct Lock {
    host: &'static dyn Host,
    raw: Option<RawLock>,
}

impl Lock {
    fn new(host: &'static dyn Host) -> core::result::Result<TryArc<Lock>, Note> {
        let raw = host.lock_create().map_err(|e| note!("lock_create: {e}"))?;
        shared(Lock {
            host,
            raw: Some(raw),
        })
    }
    fn lock(&self, mode: LockMode) {
        if let Some(l) = &self.raw {
            self.host.lock(l, mode, 1);
        }
    }
    fn unlock(&self, mode: LockMode) {
        if let Some(l) = &self.raw {
            self.host.unlock(l, mode);
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(l) = self.raw.take() {
            self.host.lock_destroy(l);
        }
    }
}

/// Four threads do non-atomic read-modify-writes under the exclusive lock: none may be lost.
fn exclusive_lock_excludes(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    const THREADS: usize = 4;
    const ITERS: u32 = 2000;
    let lock = Lock::new(host)?;
    let counter = shared(AtomicU32::new(0))?;
    let inside = shared(AtomicU32::new(0))?;
    let overlaps = shared(AtomicU32::new(0))?;
    spawn_all(host, THREADS, |_| {
        let (lock, counter, inside, overlaps) = (
            lock.clone(),
            counter.clone(),
            inside.clone(),
            overlaps.clone(),
        );
        boxed(move || {
            for _ in 0..ITERS {
                lock.lock(LockMode::Exclusive);
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                let v = counter.load(Ordering::Relaxed);
                core::hint::spin_loop();
                counter.store(v + 1, Ordering::Relaxed);
                inside.fetch_sub(1, Ordering::SeqCst);
                lock.unlock(LockMode::Exclusive);
            }
        })
    })?;
    let total = counter.load(Ordering::SeqCst);
    let o = overlaps.load(Ordering::SeqCst);
    if total != THREADS as u32 * ITERS || o != 0 {
        return fail(note!(
            "exclusive holders overlapped {o} times; counter {total} of {}",
            THREADS as u32 * ITERS
        ));
    }
    Ok(())
}

/// Two threads each take the lock shared and wait until the other holds it too.
fn shared_lock_is_shared(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let lock = Lock::new(host)?;
    let holding = shared(AtomicU32::new(0))?;
    let met = shared(AtomicU32::new(0))?;
    spawn_all(host, 2, |_| {
        let (lock, holding, met) = (lock.clone(), holding.clone(), met.clone());
        boxed(move || {
            lock.lock(LockMode::Shared);
            holding.fetch_add(1, Ordering::SeqCst);
            let end = host.now_ns() + 5 * SEC;
            while holding.load(Ordering::SeqCst) < 2 && host.now_ns() < end {
                host::sleep(host, Duration::from_millis(1));
            }
            if holding.load(Ordering::SeqCst) == 2 {
                met.fetch_add(1, Ordering::SeqCst);
            }
            lock.unlock(LockMode::Shared);
        })
    })?;
    if met.load(Ordering::SeqCst) != 2 {
        return fail(note!("two shared holders could not hold the lock at once"));
    }
    Ok(())
}

/// While readers hold the lock shared, a writer waits; while the writer holds it, readers wait.
fn exclusive_waits_for_shared(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let lock = Lock::new(host)?;
    // 1: the main thread holds it shared; 2: released; the writer records what it saw.
    let phase = shared(AtomicU32::new(0))?;
    let seen = shared(AtomicU32::new(0))?;
    lock.lock(LockMode::Shared);
    phase.store(1, Ordering::SeqCst);
    let (l2, p2, s2) = (lock.clone(), phase.clone(), seen.clone());
    let writer = boxed(move || {
        l2.lock(LockMode::Exclusive);
        s2.store(p2.load(Ordering::SeqCst), Ordering::SeqCst);
        p2.store(3, Ordering::SeqCst);
        host::sleep(host, Duration::from_millis(20));
        p2.store(4, Ordering::SeqCst);
        l2.unlock(LockMode::Exclusive);
    })
    .and_then(|entry| host.spawn("h2s-conformance", entry))
    .map_err(|e| note!("spawn: {e}"));
    let writer = match writer {
        Ok(t) => t,
        Err(e) => {
            lock.unlock(LockMode::Shared);
            return Err(e);
        }
    };
    host::sleep(host, Duration::from_millis(20));
    phase.store(2, Ordering::SeqCst);
    lock.unlock(LockMode::Shared);
    // Wait for the writer to be inside, then take it shared: we must see it gone.
    let end = host.now_ns() + 5 * SEC;
    while phase.load(Ordering::SeqCst) < 3 && host.now_ns() < end {
        host::sleep(host, Duration::from_millis(1));
    }
    lock.lock(LockMode::Shared);
    let after = phase.load(Ordering::SeqCst);
    lock.unlock(LockMode::Shared);
    host.join(writer);
    let w = seen.load(Ordering::SeqCst);
    if w != 2 {
        return fail(note!(
            "the writer got in while a reader held the lock (phase {w})"
        ));
    }
    if after != 4 {
        return fail(note!(
            "a reader got in while the writer held the lock (phase {after})"
        ));
    }
    Ok(())
}

/// Sixteen threads, each finishing after a short sleep; join returns only after each ended.
fn spawn_join_many(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    const N: usize = 16;
    let done = shared(AtomicU32::new(0))?;
    let d = done.clone();
    spawn_all(host, N, move |i| {
        let d = d.clone();
        boxed(move || {
            host::sleep(host, Duration::from_millis(1 + i as u64 % 4));
            d.fetch_add(1, Ordering::SeqCst);
        })
    })?;
    let n = done.load(Ordering::SeqCst);
    if n != N as u32 {
        return fail(note!("join returned with {n} of {N} threads finished"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    #[test]
    fn userland_host_conforms() {
        let mut out = String::new();
        let (p, f) = run_all(crate::userland::host(), &mut out);
        assert_eq!(f, 0, "{out}");
        assert_eq!(p as usize, CASES.len(), "{out}");
        assert!(out.contains("# Subtest: host-conformance"), "{out}");
    }

    /// A host whose word sleep ignores the word (the original's non-interlocked tsleep): it
    /// sleeps until woken or timed out, so a wake that comes before it sleeps is lost.
    struct NoInterlock;

    impl Host for NoInterlock {
        fn sleep_on_word(&self, word: &AtomicU32, _expected: u32, timeout: Option<Duration>) {
            // The window between the caller's test and the sleep, widened.
            std::thread::sleep(Duration::from_micros(50));
            let current = word.load(Ordering::SeqCst);
            crate::userland::host().sleep_on_word(word, current, timeout);
        }
        fn wake_word(&self, word: &AtomicU32) {
            crate::userland::host().wake_word(word)
        }
        fn lock_create(&self) -> crate::Result<RawLock> {
            crate::userland::host().lock_create()
        }
        fn lock_destroy(&self, lock: RawLock) {
            crate::userland::host().lock_destroy(lock)
        }
        fn lock(&self, lock: &RawLock, mode: LockMode, depth: u8) {
            crate::userland::host().lock(lock, mode, depth)
        }
        fn unlock(&self, lock: &RawLock, mode: LockMode) {
            crate::userland::host().unlock(lock, mode)
        }
        fn spawn(&self, name: &str, entry: crate::host::ThreadEntry) -> crate::Result<RawThread> {
            crate::userland::host().spawn(name, entry)
        }
        fn join(&self, thread: RawThread) {
            crate::userland::host().join(thread)
        }
        fn now_ns(&self) -> u64 {
            crate::userland::host().now_ns()
        }
        fn log(&self, level: crate::host::LogLevel, args: fmt::Arguments<'_>) {
            crate::userland::host().log(level, args)
        }
        fn should_stop(&self) -> bool {
            false
        }
        fn relax(&self) {}
    }

    static BROKEN: NoInterlock = NoInterlock;

    #[test]
    fn negative_control_non_interlocked_sleep_is_caught() {
        let r = returns_if_word_differs(&BROKEN, Duration::from_millis(100));
        assert!(r.is_err(), "a sleep that ignores the word passed");
        let r = ping_pong(&BROKEN, Duration::from_millis(100));
        assert!(r.is_err(), "a lost wakeup went unnoticed");
    }
}
