//! Checks of the host's primitives as the core sees them (through [`Host`]): word sleep without
//! lost wakeups, lock exclusion and sharing, nested chain locks, thread spawn/join, the clock and
//! the bounded heap. They run on any host; the kernel exposes them as debugfs `hostcheck`.
//!
//! Shared state lives in statics (no allocation needed to share it with threads), so the checks
//! must not run concurrently: [`run_all`] serializes them.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use hammer2_synchro::host::{Host, LockMode, ThreadEntry};

type Check = fn(&'static dyn Host) -> core::result::Result<(), &'static str>;

const CHECKS: &[(&str, Check)] = &[
    (
        "clock advances across a timed word sleep",
        clock_and_timeout,
    ),
    (
        "word sleep returns at once on a changed word",
        sleep_changed_word,
    ),
    ("no lost wakeup over 300 handoffs", wake_handoffs),
    ("exclusive lock excludes", exclusive_excludes),
    ("shared lock is shared", shared_is_shared),
    ("parent then child chain locks", nested_locks),
    ("join after the thread already returned", join_after_return),
    ("heap exhaustion is an error, not a crash", heap_exhaustion),
];

/// A thread body, allocated fallibly (a failed allocation is a failed check, not a crash).
fn boxed(f: impl FnOnce() + Send + 'static) -> core::result::Result<ThreadEntry, &'static str> {
    Ok(hammer2_synchro::mem::try_box(f).map_err(|_| "no memory for a thread body")?)
}

const WAIT: Duration = Duration::from_secs(10);
static GATE: spin::Mutex<()> = spin::Mutex::new(());

/// Run every check on `host`, writing KTAP to `out`; returns `(passed, failed)`.
pub fn run_all(host: &'static dyn Host, out: &mut dyn fmt::Write) -> (u32, u32) {
    let _serial = loop {
        if let Some(g) = GATE.try_lock() {
            break g;
        }
        hammer2_synchro::host::sleep(host, Duration::from_millis(1));
    };
    let (mut passed, mut failed) = (0, 0);
    let _ = writeln!(out, "KTAP version 1");
    let _ = writeln!(out, "1..{}", CHECKS.len());
    for (i, (name, check)) in CHECKS.iter().enumerate() {
        match check(host) {
            Ok(()) => {
                passed += 1;
                let _ = writeln!(out, "ok {} hostcheck: {}", i + 1, name);
            }
            Err(why) => {
                failed += 1;
                let _ = writeln!(out, "not ok {} hostcheck: {}", i + 1, name);
                let _ = writeln!(out, "# {}", why);
            }
        }
    }
    let _ = writeln!(out, "# {} passed, {} failed", passed, failed);
    (passed, failed)
}

fn clock_and_timeout(host: &'static dyn Host) -> core::result::Result<(), &'static str> {
    let word = AtomicU32::new(0);
    let t0 = host.now_ns();
    while host.now_ns() - t0 < 5_000_000 {
        host.sleep_on_word(&word, 0, Some(Duration::from_millis(5)));
    }
    let t1 = host.now_ns();
    if t1 < t0 + 5_000_000 {
        return Err("clock went backwards or sleep returned early forever");
    }
    Ok(())
}

fn sleep_changed_word(host: &'static dyn Host) -> core::result::Result<(), &'static str> {
    let word = AtomicU32::new(1);
    let t0 = host.now_ns();
    // Would sleep 10 s if the host did not re-test the word after queueing.
    host.sleep_on_word(&word, 0, Some(WAIT));
    if host.now_ns() - t0 > 2_000_000_000 {
        return Err("slept although the word differed from `expected`");
    }
    Ok(())
}

static HANDOFF: AtomicU32 = AtomicU32::new(0);
static HANDOFF_LATE: AtomicU32 = AtomicU32::new(0);
const HANDOFFS: u32 = 300;

fn wake_handoffs(host: &'static dyn Host) -> core::result::Result<(), &'static str> {
    HANDOFF.store(0, Ordering::SeqCst);
    HANDOFF_LATE.store(0, Ordering::SeqCst);
    // Ping-pong: the thread waits for odd values and answers with the next even one; the caller
    // does the reverse. A lost wakeup shows as a 10 s timeout.
    let th = host
        .spawn(
            "h2s-hc-pong",
            boxed(move || {
                for i in 0..HANDOFFS {
                    let want = 2 * i + 1;
                    wait_for(host, &HANDOFF, want);
                    HANDOFF.store(want + 1, Ordering::SeqCst);
                    host.wake_word(&HANDOFF);
                }
            })?,
        )
        .map_err(|_| "spawn failed")?;
    for i in 0..HANDOFFS {
        HANDOFF.store(2 * i + 1, Ordering::SeqCst);
        host.wake_word(&HANDOFF);
        wait_for(host, &HANDOFF, 2 * i + 2);
    }
    host.join(th);
    if HANDOFF_LATE.load(Ordering::SeqCst) != 0 {
        return Err("a wakeup was lost (a sleeper timed out)");
    }
    Ok(())
}

/// Sleep until `w` reaches `want`; counts a 10 s timeout in `HANDOFF_LATE` and gives up.
fn wait_for(host: &dyn Host, w: &AtomicU32, want: u32) {
    let t0 = host.now_ns();
    loop {
        let v = w.load(Ordering::SeqCst);
        if v >= want {
            return;
        }
        if host.now_ns() - t0 > WAIT.as_nanos() as u64 {
            HANDOFF_LATE.fetch_add(1, Ordering::SeqCst);
            return;
        }
        host.sleep_on_word(w, v, Some(WAIT));
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
static LOCK_RAW: AtomicU32 = AtomicU32::new(0);
static PEERS: AtomicU32 = AtomicU32::new(0);

fn exclusive_excludes(host: &'static dyn Host) -> core::result::Result<(), &'static str> {
    const N: u32 = 2000;
    let lock = host.lock_create().map_err(|_| "lock_create failed")?;
    COUNTER.store(0, Ordering::SeqCst);
    let raw = lock.as_raw();
    let work = move || {
        let l = hammer2_synchro::host::RawLock::from_raw(raw);
        for _ in 0..N {
            host.lock(&l, LockMode::Exclusive, 0);
            // A non-atomic read-modify-write: only exclusion keeps every increment.
            let v = COUNTER.load(Ordering::Relaxed);
            core::hint::spin_loop();
            COUNTER.store(v + 1, Ordering::Relaxed);
            host.unlock(&l, LockMode::Exclusive);
        }
        core::mem::forget(l);
    };
    let th = host
        .spawn("h2s-hc-excl", boxed(work)?)
        .map_err(|_| "spawn failed")?;
    work();
    host.join(th);
    host.lock_destroy(lock);
    match COUNTER.load(Ordering::SeqCst) {
        v if v == 2 * N => Ok(()),
        _ => Err("increments were lost under the exclusive lock"),
    }
}

fn shared_is_shared(host: &'static dyn Host) -> core::result::Result<(), &'static str> {
    let lock = host.lock_create().map_err(|_| "lock_create failed")?;
    LOCK_RAW.store(0, Ordering::SeqCst);
    PEERS.store(0, Ordering::SeqCst);
    let raw = lock.as_raw();
    // Both holders must be inside the shared section at once, or each times out waiting.
    let work = move || {
        let l = hammer2_synchro::host::RawLock::from_raw(raw);
        host.lock(&l, LockMode::Shared, 0);
        PEERS.fetch_add(1, Ordering::SeqCst);
        host.wake_word(&PEERS);
        let t0 = host.now_ns();
        loop {
            let v = PEERS.load(Ordering::SeqCst);
            if v >= 2 {
                break;
            }
            if host.now_ns() - t0 > WAIT.as_nanos() as u64 {
                LOCK_RAW.store(1, Ordering::SeqCst);
                break;
            }
            host.sleep_on_word(&PEERS, v, Some(Duration::from_millis(100)));
        }
        host.unlock(&l, LockMode::Shared);
        core::mem::forget(l);
    };
    let th = host
        .spawn("h2s-hc-shared", boxed(work)?)
        .map_err(|_| "spawn failed")?;
    work();
    host.join(th);
    host.lock_destroy(lock);
    if LOCK_RAW.load(Ordering::SeqCst) != 0 {
        return Err("two shared holders could not hold the lock at once");
    }
    Ok(())
}

fn nested_locks(host: &'static dyn Host) -> core::result::Result<(), &'static str> {
    let mut locks = Vec::new();
    locks.try_reserve(12).map_err(|_| "no memory")?;
    for _ in 0..12 {
        locks.push(host.lock_create().map_err(|_| "lock_create failed")?);
    }
    // Root to leaf, deeper than a lock validator's subclass limit (hosts clamp the depth).
    for (d, l) in locks.iter().enumerate() {
        host.lock(
            l,
            if d % 2 == 0 {
                LockMode::Exclusive
            } else {
                LockMode::Shared
            },
            d as u8,
        );
    }
    for (d, l) in locks.iter().enumerate().rev() {
        host.unlock(
            l,
            if d % 2 == 0 {
                LockMode::Exclusive
            } else {
                LockMode::Shared
            },
        );
    }
    for l in locks {
        host.lock_destroy(l);
    }
    Ok(())
}

static RAN: AtomicU32 = AtomicU32::new(0);

fn join_after_return(host: &'static dyn Host) -> core::result::Result<(), &'static str> {
    RAN.store(0, Ordering::SeqCst);
    let th = host
        .spawn(
            "h2s-hc-quick",
            boxed(move || {
                RAN.fetch_add(1, Ordering::SeqCst);
                host.wake_word(&RAN);
            })?,
        )
        .map_err(|_| "spawn failed")?;
    let t0 = host.now_ns();
    while RAN.load(Ordering::SeqCst) == 0 && host.now_ns() - t0 < WAIT.as_nanos() as u64 {
        host.sleep_on_word(&RAN, 0, Some(Duration::from_millis(100)));
    }
    // Let the thread's entry return and the thread exit before joining.
    hammer2_synchro::host::sleep(host, Duration::from_millis(20));
    host.join(th);
    match RAN.load(Ordering::SeqCst) {
        1 => Ok(()),
        0 => Err("the thread body never ran"),
        _ => Err("the thread body ran more than once"),
    }
}

fn heap_exhaustion(_host: &'static dyn Host) -> core::result::Result<(), &'static str> {
    let mut v: Vec<u8> = Vec::new();
    // Far beyond any pool and any test machine's memory.
    if v.try_reserve(1 << 46).is_ok() {
        return Err("a 64 TiB reservation succeeded");
    }
    v.try_reserve(4096)
        .map_err(|_| "a small reservation failed after the big one")?;
    Ok(())
}
