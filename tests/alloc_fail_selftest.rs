//! Allocation failure at the allocations of the self-test suites (userland), which the kernel
//! runs from debugfs `selftest`: there a failed allocation must be a clean "out of memory"
//! verdict, never a Rust panic (WARN + BUG with the run mutex held).
//!
//! A global allocator wrapper fails the N-th allocation the core makes while armed, on any
//! thread: the test thread and the threads the cases spawn through the host. Allocations that
//! std makes for its own thread bookkeeping (which a kernel host makes with its own allocator,
//! outside the pool) are exempt, as are the harness's own. For each case, N runs over the first
//! allocations and then evenly over the rest: the case returns `Ok` (it absorbed the failure)
//! or an `Err` that says "out of memory"; it never panics or aborts, and it leaks nothing.
//! `H2S_ALLOC_TRACE=1` prints each injection point (to find a case that hangs).

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use hammer2_synchro::host::{Host, LockMode, LogLevel, RawLock, RawThread, ThreadEntry};
mod alloc_common;

use hammer2_synchro::role::Role;
use hammer2_synchro::testkit::selftest::{self, stress, Case, Outcome};

/// Allocations counted while armed; the one that brings it to [`FAIL_AT`] fails.
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// The allocation to fail (0: none; `u64::MAX`: count only).
static FAIL_AT: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated minus bytes freed, by every thread.
static LIVE: AtomicI64 = AtomicI64::new(0);

thread_local! {
    /// This thread's allocations are neither counted nor failed (std's and the harness's own).
    /// Every thread starts exempt; the test thread and the core's threads opt in.
    static EXEMPT: Cell<bool> = const { Cell::new(true) };
}

fn exempt<R>(f: impl FnOnce() -> R) -> R {
    let was = EXEMPT.with(|e| e.replace(true));
    let r = f();
    EXEMPT.with(|e| e.set(was));
    r
}

/// Whether this allocation must fail: counted, not exempt, and the armed one.
fn should_fail() -> bool {
    let at = FAIL_AT.load(Ordering::SeqCst);
    if at == 0 || EXEMPT.try_with(|e| e.get()).unwrap_or(true) {
        return false;
    }
    ALLOCS.fetch_add(1, Ordering::SeqCst) + 1 == at
}

#[global_allocator]
static ALLOC: alloc_common::FailingAlloc = alloc_common::FailingAlloc {
    should_fail,
    live: &LIVE,
};

/// The userland host, with the threads it starts for the core armed like the test thread and
/// std's own spawning and joining exempt.
struct ArmedHost;

fn inner() -> &'static dyn Host {
    hammer2_synchro::userland::host()
}

impl Host for ArmedHost {
    fn sleep_on_word(&self, w: &std::sync::atomic::AtomicU32, v: u32, t: Option<Duration>) {
        inner().sleep_on_word(w, v, t)
    }
    fn wake_word(&self, w: &std::sync::atomic::AtomicU32) {
        inner().wake_word(w)
    }
    fn lock_create(&self) -> hammer2_synchro::Result<RawLock> {
        inner().lock_create()
    }
    fn lock_destroy(&self, lock: RawLock) {
        inner().lock_destroy(lock)
    }
    fn lock(&self, lock: &RawLock, mode: LockMode, depth: u8) {
        inner().lock(lock, mode, depth)
    }
    fn unlock(&self, lock: &RawLock, mode: LockMode) {
        inner().unlock(lock, mode)
    }
    fn spawn(&self, name: &str, entry: ThreadEntry) -> hammer2_synchro::Result<RawThread> {
        exempt(|| {
            let body: ThreadEntry = Box::new(move || {
                EXEMPT.with(|e| e.set(false));
                entry();
                EXEMPT.with(|e| e.set(true));
            });
            inner().spawn(name, body)
        })
    }
    fn join(&self, thread: RawThread) {
        exempt(|| inner().join(thread))
    }
    fn now_ns(&self) -> u64 {
        inner().now_ns()
    }
    fn log(&self, level: LogLevel, args: fmt::Arguments<'_>) {
        exempt(|| inner().log(level, args))
    }
    fn should_stop(&self) -> bool {
        false
    }
    fn relax(&self) {}
}

static HOST: ArmedHost = ArmedHost;

/// The cases' `# ` lines, collected without counting.
struct Sink(String);

impl fmt::Write for Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        exempt(|| self.0.push_str(s));
        Ok(())
    }
}

/// Run `case` with allocation `at` failing (0: none, `u64::MAX`: count only); its outcome and
/// the allocations it made.
fn armed(case: Case, at: u64) -> (Outcome, u64) {
    let mut out = exempt(|| Sink(String::with_capacity(4096)));
    ALLOCS.store(0, Ordering::SeqCst);
    FAIL_AT.store(at, Ordering::SeqCst);
    EXEMPT.with(|e| e.set(false));
    let r = case(&HOST, &mut out);
    EXEMPT.with(|e| e.set(true));
    FAIL_AT.store(0, Ordering::SeqCst);
    let n = ALLOCS.load(Ordering::SeqCst);
    exempt(|| drop(out));
    (r, n)
}

/// Injection points for a case making `total` allocations: the first 24, then about 24 spread
/// evenly over the rest (the largest cases make thousands).
fn points(total: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (1..=total.min(24)).collect();
    if total > 24 {
        let step = ((total - 24) / 24).max(1);
        v.extend((25..=total).step_by(step as usize));
    }
    v
}

fn fail_everywhere(name: &str, case: Case) -> usize {
    // Warm up: lazily built process-wide tables (parking_lot's) are not leaks.
    let (r, _) = armed(case, 0);
    r.unwrap_or_else(|e| panic!("{name}: fails without injected failures: {e}"));
    let (r, total) = armed(case, u64::MAX);
    r.unwrap_or_else(|e| panic!("{name}: fails without injected failures: {e}"));
    // A case that allocates nothing (the clock, word sleeps) has nothing to fail.
    let mut failed_cleanly = 0;
    for at in points(total) {
        let live = LIVE.load(Ordering::SeqCst);
        if std::env::var_os("H2S_ALLOC_TRACE").is_some() {
            exempt(|| eprintln!("{name}: failing allocation {at} of {total}"));
        }
        let (r, _) = armed(case, at);
        if let Err(e) = &r {
            assert!(
                e.contains("out of memory"),
                "{name}: allocation {at} of {total} failed, and the case said: {e}"
            );
            failed_cleanly += 1;
        }
        let leaked = LIVE.load(Ordering::SeqCst) - live;
        assert_eq!(
            leaked, 0,
            "{name}: allocation {at} of {total} failed: {leaked} bytes leaked"
        );
    }
    failed_cleanly
}

/// The stress case, smaller (the same code as the kernel's `stress` case).
#[allow(clippy::result_large_err)] // the `Case` signature
fn small_stress(host: &'static dyn Host, out: &mut dyn fmt::Write) -> Outcome {
    const ROLES: &[Role] = &[Role::Master, Role::Master, Role::Master, Role::Slave];
    let p = stress::Params {
        roles: ROLES,
        writers: 2,
        ops_per_writer: 12,
        requesters: 1,
        requests: 8,
        timeout: Duration::from_secs(60),
        ..stress::Params::SELFTEST
    };
    stress::run(host, &p, out)
}

#[test]
fn every_self_test_ends_cleanly_when_an_allocation_fails() {
    let mut report = String::new();
    let cases = hammer2_synchro::testkit::conformance::CASES
        .iter()
        .chain(selftest::CASES.iter().filter(|(n, _)| *n != "stress"))
        .copied()
        .chain([("stress (small)", small_stress as Case)]);
    let mut nomem = 0;
    for (name, case) in cases {
        let n = fail_everywhere(name, case);
        let _ = writeln!(report, "{name}: {n} clean out-of-memory failures");
        nomem += n;
    }
    // Most injected failures reach the case's verdict; a case that absorbed every one of them
    // would not prove the error paths ran.
    assert!(nomem > 20, "{report}");
}
