//! Kernel-host checks beyond the portable conformance tests (`hammer2_synchro::conformance`):
//! chain locks nested deeper than a lock validator's subclass range, joining a thread whose body
//! already returned (a kthread that exited before `kthread_stop`), and pool exhaustion as a clean
//! error. Same KTAP subtest style as `hammer2_synchro::selftest`; the kernel runs them from
//! debugfs `selftest`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use hammer2_synchro::host::{Host, LockMode};
use hammer2_synchro::selftest::{Case, Outcome};

/// Every kernel-host check, by name.
pub const CASES: &[(&str, Case)] = &[
    ("nested_chain_locks_deeper_than_subclasses", nested_locks),
    ("join_after_body_returned", join_after_return),
    ("pool_exhaustion_is_an_error", heap_exhaustion),
];

const WAIT_NS: u64 = 10_000_000_000;

fn fail(s: &str) -> Outcome {
    let mut m = String::new();
    m.try_reserve(s.len()).map_err(|_| String::new())?;
    m.push_str(s);
    Err(m)
}

fn nested_locks(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let mut locks = Vec::new();
    if locks.try_reserve(12).is_err() {
        return fail("no memory");
    }
    for _ in 0..12 {
        match host.lock_create() {
            Ok(l) => locks.push(l),
            Err(_) => return fail("lock_create failed"),
        }
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
