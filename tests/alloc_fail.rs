//! Allocation failure at every allocation of a sync (userland).
//!
//! A global allocator wrapper fails the N-th allocation made by the test thread while armed
//! (armed only around the sync call). For N = 1, 2, ... until a sync makes fewer than N
//! allocations: the sync returns `Error::NoMem` (or, if it absorbed the failure, must still
//! have produced a correct result), never panics or aborts, leaks nothing once the cluster is
//! dropped, and converges once memory is back.

mod alloc_common;

// Shared support of the oracle tests; this binary uses part of it.
#[allow(dead_code)]
#[path = "oracle"]
mod oracle {
    pub mod gen;
    pub mod model;
    pub mod real;
}

use std::cell::Cell;

use hammer2_synchro::cluster::{Cluster, FrontendOp};
use hammer2_synchro::role::{NodeSet, Role};
use hammer2_synchro::store::Layout as StoreLayout;
use hammer2_synchro::Error;

use oracle::gen::Case;
use oracle::model::Op;
use oracle::real;

/// Per-thread state of the failing allocator. Const-initialised and without destructors, so
/// the allocator can use it without allocating.
struct Counters {
    /// Fail the allocation that brings this to zero; 0 = disarmed.
    countdown: Cell<u64>,
    /// An allocation was failed since the last reset.
    failed: Cell<bool>,
    /// Allocations made while armed.
    armed_allocs: Cell<u64>,
}

/// Bytes allocated minus bytes freed by every thread: a sync's scan workers free memory the
/// test thread allocated (the spawned closure, std's thread bookkeeping) and the other way
/// round, so leaks are judged on this sum, with the tests of this binary serialised by
/// [`SERIAL`] so no other test's allocations mix in.
static LIVE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Hold while a test measures leaks (a failed test does not poison the others).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    static C: Counters = const {
        Counters { countdown: Cell::new(0), failed: Cell::new(false), armed_allocs: Cell::new(0) }
    };
}

/// Whether this allocation must fail: the armed countdown of this thread reached it.
fn should_fail() -> bool {
    C.try_with(|c| {
        let n = c.countdown.get();
        if n == 0 {
            return false;
        }
        c.armed_allocs.set(c.armed_allocs.get() + 1);
        c.countdown.set(n - 1);
        if n == 1 {
            c.failed.set(true);
            return true;
        }
        false
    })
    .unwrap_or(false)
}

#[global_allocator]
static ALLOC: alloc_common::FailingAlloc = alloc_common::FailingAlloc {
    should_fail,
    live: &LIVE,
};

/// Run `f` with the `n`-th allocation of this thread failing (0: none fails); returns what
/// `f` returned, whether the failure was hit, and how many allocations were made while armed.
fn armed<R>(n: u64, f: impl FnOnce() -> R) -> (R, bool, u64) {
    C.with(|c| {
        c.failed.set(false);
        c.armed_allocs.set(0);
        c.countdown.set(if n == 0 { u64::MAX } else { n });
    });
    let r = f();
    let (failed, allocs) = C.with(|c| {
        c.countdown.set(0);
        (c.failed.get(), c.armed_allocs.get())
    });
    (r, failed, allocs)
}

/// Run a measurement again when it shows a leak: the balance is process-wide, and a test of
/// this binary outside [`SERIAL`] (the oracle module's) may allocate meanwhile. A real leak
/// shows on both runs.
fn retry_leak(mut f: impl FnMut() -> (bool, i64)) -> (bool, i64) {
    let first = f();
    if first.1 == 0 {
        return first;
    }
    f()
}

fn live() -> i64 {
    LIVE.load(std::sync::atomic::Ordering::SeqCst)
}

fn w(path: &str, bytes: usize, seed: u64) -> Op {
    Op::Write {
        path: path.as_bytes().to_vec(),
        bytes,
        seed,
    }
}

/// Three masters hold a mixed tree; node 3 (a slave) holds a different one.
fn case() -> Case {
    let (m, s, all) = (0b0111, 0b1000, 0b1111);
    let ops = vec![
        (all, Op::Mkdir(b"/a".to_vec())),
        (all, w("/a/f", 100, 1)),
        (m, Op::Mkdir(b"/a/d".to_vec())),
        (m, w("/a/d/big", 70_000, 2)),
        (m, w("/a/f", 700, 3)),
        (m, Op::Link(b"/a/f".to_vec(), b"/a/l".to_vec())),
        (m, Op::Chmod(b"/a".to_vec(), 0o700)),
        (s, Op::Mkdir(b"/x".to_vec())),
        (s, w("/x/y", 20, 4)),
        (all, Op::Mkdir(b"/z".to_vec())),
        (all, w("/z/in", 50, 5)),
        (all, Op::Mkdir(b"/z/sub".to_vec())),
        (m, Op::Rm(b"/z/in".to_vec())),
        (m, Op::Rm(b"/z/sub".to_vec())),
        (m, Op::Rm(b"/z".to_vec())),
        (m, w("/z", 30, 6)),
        (all, w("/q", 30, 7)),
        (m, Op::Rm(b"/q".to_vec())),
        (m, Op::Mkdir(b"/q".to_vec())),
        (m, w("/q/r", 40, 8)),
    ];
    let roles = vec![Role::Master, Role::Master, Role::Master, Role::Slave];
    Case::arbitrary(roles, ops)
}

fn converged(c: &Cluster, paths: &[Vec<u8>]) -> Result<(), String> {
    for p in paths {
        if real::observe(c, 0, p) != real::observe(c, 3, p) {
            return Err(format!("{} differs", String::from_utf8_lossy(p)));
        }
    }
    if !real::same(c, 0, 3)? {
        return Err("compare finds a difference".into());
    }
    Ok(())
}

/// One injection: fail allocation `n` of node 3's sync. Returns whether the failure was hit,
/// and the live-byte balance of the whole iteration (cluster built and dropped inside).
fn inject(n: u64, case: &Case, paths: &[Vec<u8>]) -> (bool, i64) {
    let base = live();
    let hit;
    {
        let c = real::build(case).unwrap();
        c.refresh_view(3);
        let (r, failed, _) = armed(n, || c.sync_node(3, &|| false));
        hit = failed;
        match r {
            Err(Error::NoMem) => assert!(failed, "NoMem without an allocation failure (n = {n})"),
            Ok(()) => converged(&c, paths)
                .unwrap_or_else(|e| panic!("allocation {n} failed, sync said Ok, yet: {e}")),
            Err(e) => panic!("allocation {n} failed: sync returned {e:?}, not NoMem"),
        }
        c.sync_node(3, &|| false)
            .unwrap_or_else(|e| panic!("after failing allocation {n}, the retry: {e}"));
        converged(&c, paths)
            .unwrap_or_else(|e| panic!("after failing allocation {n}, retried: {e}"));
    }
    (hit, live() - base)
}

#[test]
fn every_allocation_of_a_sync_may_fail() {
    let _serial = serial();
    let case = case();
    let (_, paths) = case.replay();
    // The first round warms once-only allocations (host statics, lock tables).
    let (hit, _) = inject(0, &case, &paths);
    assert!(!hit);
    let (hit, leak) = retry_leak(|| inject(0, &case, &paths));
    assert!(!hit);
    assert_eq!(leak, 0, "a plain build + sync + drop leaks {leak} bytes");

    let mut n = 1;
    loop {
        let (hit, leak) = retry_leak(|| inject(n, &case, &paths));
        assert_eq!(leak, 0, "failing allocation {n} leaked {leak} bytes");
        if !hit {
            break;
        }
        n += 1;
        assert!(n < 1_000_000, "no end to the allocations of one sync");
    }
    assert!(
        n > 5,
        "a sync of the mixed tree made only {} allocations",
        n - 1
    );

    // Negative controls, in the same test so that no other test thread disturbs the counters:
    // the leak meter sees a leak, and the injector really fails an allocation.
    let base = live();
    std::mem::forget(vec![0u8; 100]);
    assert_eq!(live() - base, 100, "the leak meter missed a leak");
    let (r, failed, allocs) = armed(1, || {
        let mut v: Vec<u8> = Vec::new();
        v.try_reserve(10).is_err()
    });
    assert!(
        r && failed && allocs == 1,
        "the injector did not fail the first allocation"
    );
}

#[test]
fn every_allocation_of_a_frontend_change_may_fail() {
    let _serial = serial();
    // The same injection around the frontend: every change of the history, applied in turn.
    // A failing allocation must come back as NoMem from the node it hit, never as a panic, and
    // dropping the cluster must free everything.
    let mut case = case();
    // Removals too: a hardlinked file's first name, then a directory with everything under it.
    for p in [&b"/a/f"[..], b"/a"] {
        case.ops.push((0b0111, Op::Rm(p.to_vec()), false));
    }
    let roles = case.roles.clone();
    // Everything the test itself needs is built before arming: only the core allocates then.
    let data: Vec<Vec<u8>> = case
        .ops
        .iter()
        .map(|(_, op, _)| match op {
            Op::Write { bytes, seed, .. } => oracle::model::prng_bytes(*bytes, *seed),
            _ => Vec::new(),
        })
        .collect();
    // In both layouts: today's (an inode in the index and an entry per change) as the seed's.
    for layout in [StoreLayout::Seed, StoreLayout::Index] {
        let run = |n: u64| -> (bool, i64) {
            let base = live();
            let hit;
            {
                let c = Cluster::with_layout(real::host(), &roles, layout).unwrap();
                let (r, failed, _) = armed(n, || {
                    for ((mask, op, _), d) in case.ops.iter().zip(&data) {
                        let fop = match op {
                            Op::Mkdir(p) => FrontendOp::Mkdir(p),
                            Op::Write { path, .. } => FrontendOp::Write(path, d),
                            Op::Rm(p) => FrontendOp::Rm(p),
                            Op::Chmod(p, m) => FrontendOp::Chmod(p, *m),
                            Op::Link(t, p) => FrontendOp::Link(t, p),
                        };
                        c.apply(NodeSet(*mask), fop)?;
                    }
                    Ok(())
                });
                hit = failed;
                match r {
                    Ok(()) => assert!(!failed, "allocation {n} failed yet every change applied"),
                    Err((node, e)) => assert!(
                        failed && e == Error::NoMem,
                        "allocation {n}: node {node}: {e}"
                    ),
                }
            }
            (hit, live() - base)
        };
        run(0);
        let mut n = 1;
        loop {
            let (hit, leak) = retry_leak(|| run(n));
            assert_eq!(
                leak, 0,
                "{layout:?}: failing frontend allocation {n} leaked {leak} bytes"
            );
            if !hit {
                break;
            }
            n += 1;
            assert!(n < 1_000_000);
        }
        assert!(
            n > 20,
            "{layout:?}: the history made only {} allocations",
            n - 1
        );
    }
}
