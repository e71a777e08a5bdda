//! Kernel-host checks beyond the portable conformance tests (`hammer2_synchro::testkit::conformance`):
//! a host lock then chain locks nested deeper than a lock validator keeps track of, joining a thread whose body
//! already returned (a kthread that exited before `kthread_stop`), pool exhaustion as a clean
//! error, and a freeze of a real sync thread in the middle of resyncing a large tree. Same KTAP subtest style as `hammer2_synchro::testkit::selftest`; the kernel runs them from
//! debugfs `selftest`.

// Failures carry a fixed-capacity `Note` on purpose: reporting one must never allocate.
#![allow(clippy::result_large_err)]

use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use hammer2_synchro::cluster::{Cluster, FrontendOp};
use hammer2_synchro::host::{self, Host, LockMode};
use hammer2_synchro::role::{NodeSet, Role};
use hammer2_synchro::testkit::selftest::{Case, Note, Outcome};
use hammer2_synchro::thread::Request;

/// Every kernel-host check, by name.
pub const CASES: &[(&str, Case)] = &[
    ("host_lock_then_deep_chain_locks", nested_locks),
    ("join_after_body_returned", join_after_return),
    ("pool_exhaustion_is_an_error", heap_exhaustion),
    ("pool_lock_hold_is_bounded", pool_hold_time),
    ("freeze_during_large_sync", freeze_during_large_sync),
];

/// How long a check waits for a thread to make progress, and the slave to converge: generous,
/// because QEMU's TCG on busy shared cores (and a KASAN debug kernel, about five times slower)
/// made 10 s flaky; a real hang still fails.
const WAIT_NS: u64 = 120_000_000_000;

fn fail(s: &str) -> Outcome {
    let mut m = Note::new();
    let _ = m.write_str(s);
    Err(m)
}

/// Chain depths [`nested_locks`] takes: past Linux's per-depth lockdep classes (32) and its
/// per-task held-lock stack (48).
const NESTED: usize = 50;

fn nested_locks(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let mut locks = Vec::new();
    if locks.try_reserve(NESTED + 1).is_err() {
        return fail("no memory");
    }
    for _ in 0..=NESTED {
        match host.lock_create() {
            Ok(l) => locks.push(l),
            Err(_) => {
                for l in locks {
                    host.lock_destroy(l);
                }
                return fail("lock_create failed");
            }
        }
    }
    let mode = |d: usize| {
        if d % 2 == 0 {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        }
    };
    // As the frontend does: a host lock, then a path of chains from the root down.
    let depth = |i: usize| {
        if i == 0 {
            host::HOST_LOCK_DEPTH
        } else {
            (i - 1) as u8
        }
    };
    for (i, l) in locks.iter().enumerate() {
        host.lock(l, mode(i), depth(i));
    }
    for (i, l) in locks.iter().enumerate().rev() {
        host.unlock(l, mode(i));
    }
    for l in locks {
        host.lock_destroy(l);
    }
    Ok(())
}

/// Runs of the thread body of [`join_after_return`]; the checks run one at a time (debugfs
/// `selftest` is serialized), so a static is enough.
static RAN: AtomicU32 = AtomicU32::new(0);

fn join_after_return(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    RAN.store(0, Ordering::SeqCst);
    let body = hammer2_synchro::mem::try_box(move || {
        RAN.fetch_add(1, Ordering::SeqCst);
        host.wake_word(&RAN);
    });
    let Ok(body) = body else {
        return fail("no memory for the thread body");
    };
    let Ok(th) = host.spawn("h2s-quick", body) else {
        return fail("spawn failed");
    };
    let t0 = host.now_ns();
    while RAN.load(Ordering::SeqCst) == 0 && host.now_ns() - t0 < WAIT_NS {
        host.sleep_on_word(&RAN, 0, Some(Duration::from_millis(100)));
    }
    // Let the thread's entry return and the thread exit before joining.
    hammer2_synchro::host::sleep(host, Duration::from_millis(20));
    host.join(th);
    match RAN.load(Ordering::SeqCst) {
        1 => Ok(()),
        0 => fail("the thread body never ran"),
        _ => fail("the thread body ran more than once"),
    }
}

fn heap_exhaustion(_host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let mut v: Vec<u8> = Vec::new();
    // Far beyond any pool and any test machine's memory.
    if v.try_reserve(1 << 46).is_ok() {
        return fail("a 64 TiB reservation succeeded");
    }
    if v.try_reserve(4096).is_err() {
        return fail("a small reservation failed after the big one");
    }
    Ok(())
}

/// The pool's heap lock is held for a bounded time under fragmentation
/// ([`crate::pool::Pool::hold_workload`]); the longest hold is reported as measured, the
/// verdict is [`hold_verdict`]'s.
fn pool_hold_time(_host: &'static dyn Host, out: &mut dyn fmt::Write) -> Outcome {
    let Ok(run) = crate::pool::POOL.hold_workload() else {
        return fail("no memory for the block table");
    };
    let t = run.times;
    let _ = writeln!(
        out,
        "# pool lock: {} holds over {} allocations and frees of 32 B to 128 KiB under \
         fragmentation ({} refused): longest {} ns, {} over {} ns; at most {} steps in one \
         (bound {})",
        t.holds,
        run.ops,
        run.refused,
        t.max_ns,
        t.slow,
        crate::pool::HOLD_SLOW_NS,
        t.max_steps,
        crate::pool::MAX_STEPS
    );
    hold_verdict(&run)
}

/// No hold may make more than [`crate::pool::MAX_STEPS`] steps (the structural bound, exact on
/// any host). At most one hold in 100 may pass [`crate::pool::HOLD_SLOW_NS`]: interrupts are off
/// while the kernel holds the lock, but on a loaded host (QEMU's TCG, or a test process) the
/// clock also counts the time the CPU was taken away, which no allocator can bound. A run that timed no hold, or
/// whose every allocation was refused (a refusal is a short walk of the free lists, and
/// nothing is then freed), measured nothing of the bound and fails.
fn hold_verdict(run: &crate::pool::HoldRun) -> Outcome {
    let t = run.times;
    if t.holds == 0 {
        return fail("no pool lock hold was timed");
    }
    // Frees only follow successful allocations, so `refused == ops` means every operation
    // was a refused allocation.
    if run.refused >= run.ops {
        let mut m = Note::new();
        let _ = write!(m, "all {} pool allocations were refused", run.refused);
        return Err(m);
    }
    if t.max_steps > crate::pool::MAX_STEPS {
        let mut m = Note::new();
        let _ = write!(
            m,
            "a pool lock hold made {} steps, over the bound of {}",
            t.max_steps,
            crate::pool::MAX_STEPS
        );
        return Err(m);
    }
    if t.slow.saturating_mul(100) > t.holds {
        let mut m = Note::new();
        let _ = write!(
            m,
            "{} of {} pool lock holds over {} ns",
            t.slow,
            t.holds,
            crate::pool::HOLD_SLOW_NS
        );
        return Err(m);
    }
    Ok(())
}

/// Directories the masters hold and the slave lacks in [`freeze_during_large_sync`].
const LARGE_DIRS: u32 = 4000;

/// `/dNNNN` for `i` (at most 9999).
fn dir_name(i: u32, buf: &mut [u8; 6]) -> &[u8] {
    buf[0] = b'/';
    buf[1] = b'd';
    let mut v = i;
    for k in (2..6).rev() {
        buf[k] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    &buf[..]
}

fn freeze_during_large_sync(host: &'static dyn Host, out: &mut dyn fmt::Write) -> Outcome {
    let Ok(c) = Cluster::new(host, &[Role::Master, Role::Master, Role::Slave]) else {
        return fail("cluster creation failed");
    };
    let mut buf = [0u8; 6];
    for i in 0..LARGE_DIRS {
        if c.apply(NodeSet(0b011), FrontendOp::Mkdir(dir_name(i, &mut buf)))
            .is_err()
        {
            return fail("mkdir on the masters failed");
        }
    }
    if c.as_ref().thread_start(2).is_err() {
        return fail("starting the slave's sync thread failed");
    }
    // Wait for the sync to be under way: the first directory has reached the slave.
    let t0 = host.now_ns();
    while c.stat(2, b"/d0000").is_err() && host.now_ns() - t0 < WAIT_NS {
        host::sleep(host, Duration::from_micros(200));
    }
    let f0 = host.now_ns();
    if c.thread_request(2, Request::Freeze).is_err() {
        return fail("freeze failed");
    }
    let latency = host.now_ns() - f0;
    let mid = !c.in_sync(2);
    let s1 = c.stats(2);
    host::sleep(host, Duration::from_millis(100));
    let s2 = c.stats(2);
    let still = c.in_sync(2) != mid;
    let _ = writeln!(
        out,
        "# freeze of a {}-directory resync acknowledged after {} us ({})",
        LARGE_DIRS,
        latency / 1000,
        if mid {
            "mid-sync"
        } else {
            "the sync had already finished"
        }
    );
    let frozen_ok = s1.scanned == s2.scanned && s1.inserted == s2.inserted && still;
    if c.thread_request(2, Request::Unfreeze).is_err() {
        return fail("unfreeze failed");
    }
    let u0 = host.now_ns();
    while !c.in_sync(2) && host.now_ns() - u0 < WAIT_NS {
        let _ = c.thread_request(2, Request::Signal);
        host::sleep(host, Duration::from_millis(10));
    }
    let synced = c.in_sync(2);
    if !synced {
        let s = c.stats(2);
        let _ = writeln!(
            out,
            "# after {} ms: thread {}, {} passes, {} scanned, {} inserted (frozen at {} passes)",
            (host.now_ns() - u0) / 1_000_000,
            hammer2_synchro::thread::flag_names(c.thread_flags(2)),
            s.passes,
            s.scanned,
            s.inserted,
            s2.passes
        );
    }
    let stopped = c.thread_request(2, Request::Stop).is_ok();
    if latency > 2_000_000_000 {
        return fail("the freeze took over 2 s to be acknowledged");
    }
    if !frozen_ok {
        return fail("the slave kept syncing while frozen");
    }
    if !synced {
        return fail("the slave did not converge within 120 s of the unfreeze");
    }
    if !stopped {
        return fail("stop failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{HoldRun, HoldTimes};

    fn run(holds: u64, slow: u64, ops: u32, refused: u32) -> HoldRun {
        HoldRun {
            times: HoldTimes {
                max_ns: 1_000,
                holds,
                slow,
                max_steps: 3,
            },
            ops,
            refused,
        }
    }

    #[test]
    fn hold_verdict_needs_holds_that_measured_something() {
        assert!(hold_verdict(&run(1_000, 10, 1_000, 500)).is_ok());
        // One slow hold in 100 is allowed, more is not.
        assert!(hold_verdict(&run(1_000, 11, 1_000, 0)).is_err());
        // Nothing timed: trivially short holds prove nothing.
        assert!(hold_verdict(&run(0, 0, 1_000, 0)).is_err());
        // Every allocation refused (no frees followed): only refusals were timed.
        assert!(hold_verdict(&run(1_000, 0, 1_000, 1_000)).is_err());
        assert!(hold_verdict(&run(1_000, 0, 0, 0)).is_err());
        // A hold over the structural step bound fails whatever the clock said.
        let mut r = run(1_000, 0, 1_000, 0);
        r.times.max_steps = crate::pool::MAX_STEPS + 1;
        assert!(hold_verdict(&r).is_err());
        r.times.max_steps = crate::pool::MAX_STEPS;
        assert!(hold_verdict(&r).is_ok());
    }
}
