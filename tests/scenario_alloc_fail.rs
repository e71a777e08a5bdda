//! Allocation failure at every allocation of a scenario run on the interpreter's thread: parse,
//! frontend changes, snapshots, synchronisation and every kind of check.
//!
//! An infallible allocation anywhere on that path would abort this test binary; each must end in
//! a clean result instead: a complete KTAP document whose failures say `out of memory` (or a
//! rejection `line N: out of memory` when parsing ran out), exactly what a host whose memory is
//! exhausted reports, and nothing leaks. The scenario uses `sync`, not sync threads, so every allocation is this
//! thread's and the N-th is the same one on every run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};

use hammer2_synchro::scenario::{self, Outcome};

thread_local! {
    /// Fail the allocation that brings this to zero; 0 = disarmed. Const and without a
    /// destructor, so the allocator can use it without allocating.
    static COUNTDOWN: Cell<u64> = const { Cell::new(0) };
    /// An allocation was failed since the run was armed.
    static FAILED: Cell<bool> = const { Cell::new(false) };
}

/// Bytes allocated minus bytes freed, by every thread (sync threads and scan workers free what
/// the interpreter allocated and the other way round): a run must leave it where it found it.
static LIVE: AtomicI64 = AtomicI64::new(0);

fn account(delta: i64) {
    LIVE.fetch_add(delta, Ordering::SeqCst);
}

struct FailNth;

fn should_fail() -> bool {
    // What the userland host cannot make fallible (std's thread start) never fails in the CLI.
    if hammer2_synchro::userland::budget::overdrawn() {
        return false;
    }
    COUNTDOWN
        .try_with(|c| match c.get() {
            0 => false,
            1 => {
                c.set(0);
                let _ = FAILED.try_with(|f| f.set(true));
                true
            }
            n => {
                c.set(n - 1);
                false
            }
        })
        .unwrap_or(false)
}

/// `alloc` unless this allocation must fail; `delta` bytes counted if it succeeds.
fn attempt(delta: i64, alloc: impl FnOnce() -> *mut u8) -> *mut u8 {
    if should_fail() {
        return std::ptr::null_mut();
    }
    let p = alloc();
    if !p.is_null() {
        account(delta);
    }
    p
}

// SAFETY: every call forwards to `System` with the caller's arguments, or returns null (which
// `GlobalAlloc` allows for a failed allocation); the counters are atomics and const
// thread-locals.
unsafe impl GlobalAlloc for FailNth {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        attempt(layout.size() as i64, || unsafe { System.alloc(layout) })
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        attempt(layout.size() as i64, || unsafe {
            System.alloc_zeroed(layout)
        })
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as i64));
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let delta = new_size as i64 - layout.size() as i64;
        // SAFETY: forwarded as is.
        attempt(delta, || unsafe { System.realloc(ptr, layout, new_size) })
    }
}

#[global_allocator]
static ALLOC: FailNth = FailNth;

const SCENARIO: &str = r#"cluster master master master slave
mkdir * /d
write * /d/readme "hello"
write 0,1 /d/big bytes=70000 seed=3
mkdir 0,1 /d/e
write 0,1 /d/e/f bytes=5000 seed=4
link 0,1 /d/readme /d/hl
chmod 0,1 /d/readme 0600
snapshot s0 0
sync
expect focus 7
expect same 0 3
expect file * /d/big bytes=70000 seed=3
expect dir 3 /d/e
expect mode 3 /d/readme 0600
expect tid 3 /d/readme 7
expect status 3 quorum/rw
snapshot s3 3
write 0,1,2 /d/new "later"
rm 0,1,2 /d/e
expect unchanged s3 3
role 3 master
expect focus 9
role 3 slave
sync 3
expect missing 3 /d/e
expect file 3 /d/new "later"
expect same 1 3
expect unchanged s0 0
"#;

/// Run the scenario with this thread's `n`-th allocation failing (0: none); return the outcome,
/// the KTAP text and whether the failure was hit. Panics if the run leaks.
fn run(n: u64) -> (Outcome, String, bool) {
    // The output sink must not be what fails: give it room first.
    let mut out = String::with_capacity(1 << 20);
    let base = LIVE.load(Ordering::SeqCst);
    FAILED.with(|f| f.set(false));
    COUNTDOWN.with(|c| c.set(n));
    let outcome = scenario::run(
        hammer2_synchro::userland::host(),
        SCENARIO.as_bytes(),
        &mut out,
    );
    COUNTDOWN.with(|c| c.set(0));
    let leak = LIVE.load(Ordering::SeqCst) - base;
    assert_eq!(leak, 0, "failing allocation {n} leaked {leak} bytes");
    (outcome, out, FAILED.with(|f| f.get()))
}

#[test]
fn every_allocation_of_a_scenario_run_may_fail() {
    // The first run warms what the process keeps once made (the host's statics, parking_lot's
    // table); from then on a run leaves the balance where it found it.
    let mut warm = String::with_capacity(1 << 20);
    scenario::run(
        hammer2_synchro::userland::host(),
        SCENARIO.as_bytes(),
        &mut warm,
    );
    let (outcome, clean, hit) = run(0);
    assert!(!hit);
    // The last check fails on purpose (node 0 moved on since s0): diagnostics are exercised.
    assert_eq!(outcome, Outcome::Failed, "{clean}");
    assert!(clean.ends_with("# 12 passed, 1 failed\n"), "{clean}");
    let head = "KTAP version 1\n1..13\n";
    assert!(clean.starts_with(head), "{clean}");

    let mut n = 1;
    loop {
        let (outcome, out, hit) = run(n);
        if !hit {
            assert_eq!(
                out, clean,
                "allocation {n} was never made, yet the run differs"
            );
            break;
        }
        match outcome {
            Outcome::Rejected => assert!(
                out.starts_with("line ") && out.ends_with(": out of memory\n"),
                "allocation {n}: rejected with {out:?}"
            ),
            _ => {
                assert!(
                    out.starts_with(head) && out.contains(" passed, "),
                    "allocation {n}: incomplete KTAP:\n{out}"
                );
                // The failure was absorbed, or it shows as out of memory.
                assert!(
                    out == clean || out.contains("out of memory"),
                    "allocation {n} failed, yet the run differs without saying so:\n{out}"
                );
            }
        }
        n += 1;
        assert!(n < 1_000_000, "no end to the allocations of one run");
    }
    assert!(n > 100, "a whole run made only {} allocations", n - 1);
}
