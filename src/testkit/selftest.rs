//! Sync-thread protocol tests, and the randomized [`stress`], that run on any host: userland
//! `cargo test` and, through the C ABI, inside the Linux module with real kthreads.
//!
//! [`run_all`] writes one KTAP subtest block (indented four spaces, with its own plan) and
//! returns `(passed, failed)`; the caller prints the parent `ok N` line. The threads run a
//! [`FakeWork`]: a pass of simulated chain operations that polls `brk` before each one, so the
//! tests can count how far a pass got after a request.

// Failures carry a fixed-capacity `Note` on purpose: reporting one must never allocate.
#![allow(clippy::result_large_err)]

use core::fmt;
use core::fmt::Write as _;
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::time::Duration;

use alloc::boxed::Box;

use crate::cluster::{Cluster, FrontendOp};
use crate::host::{self, Host, RawThread};
use crate::mem::TryArc;
use crate::role::{NodeSet, Role};
use crate::thread::{Request, SyncWork, ThreadFlags, ThreadState, Threads};
use crate::{Error, Result};

pub mod stress;

/// A test result: `Err` carries the failure message.
pub type Outcome = core::result::Result<(), Note>;

/// Bytes a [`Note`] holds.
pub const NOTE_BYTES: usize = 400;

/// A failure message of fixed capacity (a longer one is cut), so reporting a failure or
/// collecting a diagnostic never allocates: the self-tests run where allocation may fail.
pub type Note = crate::text::Text<NOTE_BYTES>;

/// A [`Note`] of `args` (cut at its capacity).
pub fn note_args(args: fmt::Arguments<'_>) -> Note {
    let mut n = Note::new();
    let _ = n.write_fmt(args);
    n
}

/// `format!` into a [`Note`]: never allocates.
macro_rules! note {
    ($($t:tt)*) => {
        $crate::testkit::selftest::note_args(format_args!($($t)*))
    };
}
pub(crate) use note;

/// A protocol test: given a host and a sink for `# ` diagnostic lines.
pub type Case = fn(&'static dyn Host, &mut dyn fmt::Write) -> Outcome;

/// Every protocol test, by name.
pub const CASES: &[(&str, Case)] = &[
    ("ops_on_idle_slot_are_noops", ops_on_idle_slot_are_noops),
    ("each_request_acknowledged", each_request_acknowledged),
    ("freeze_during_pass", freeze_during_pass),
    ("stop_while_frozen", stop_while_frozen),
    ("stop_after_pass_is_prompt", stop_after_pass_is_prompt),
    ("freeze_unfreeze_1000", freeze_unfreeze_1000),
    ("remaster_runs_reset", remaster_runs_reset),
    ("concurrent_freeze_vs_stop", concurrent_freeze_vs_stop),
    (
        "concurrent_unfreeze_vs_remaster",
        concurrent_unfreeze_vs_remaster,
    ),
    ("concurrent_stop_vs_stop", concurrent_stop_vs_stop),
    (
        "concurrent_freeze_vs_unfreeze",
        concurrent_freeze_vs_unfreeze,
    ),
    ("restart_cycles", restart_cycles),
    ("freeze_during_real_sync", freeze_during_real_sync),
    ("stress", stress::selftest_case),
];

/// Run every case of `cases` as one KTAP subtest block named `suite`; returns (passed, failed).
pub fn run_cases(
    host: &'static dyn Host,
    suite: &str,
    cases: &[(&str, Case)],
    out: &mut dyn fmt::Write,
) -> (u32, u32) {
    let (mut passed, mut failed) = (0, 0);
    let _ = writeln!(out, "    KTAP version 1");
    let _ = writeln!(out, "    # Subtest: {suite}");
    let _ = writeln!(out, "    1..{}", cases.len());
    for (n, (name, case)) in cases.iter().enumerate() {
        let mut diag = Indented {
            out,
            line_start: true,
        };
        let r = case(host, &mut diag);
        match r {
            Ok(()) => {
                passed += 1;
                let _ = writeln!(out, "    ok {} {name}", n + 1);
            }
            Err(msg) => {
                failed += 1;
                let _ = writeln!(out, "    not ok {} {name}", n + 1);
                let _ = writeln!(out, "    # {msg}");
            }
        }
    }
    (passed, failed)
}

/// Run the protocol tests ([`CASES`]); returns (passed, failed).
pub fn run_all(host: &'static dyn Host, out: &mut dyn fmt::Write) -> (u32, u32) {
    run_cases(host, "thread-protocol", CASES, out)
}

/// Prefixes each diagnostic line with the subtest indentation.
struct Indented<'a> {
    out: &'a mut dyn fmt::Write,
    line_start: bool,
}

impl fmt::Write for Indented<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for piece in s.split_inclusive('\n') {
            if self.line_start {
                self.out.write_str("    ")?;
            }
            self.out.write_str(piece)?;
            self.line_start = piece.ends_with('\n');
        }
        Ok(())
    }
}

/// A fake sync: each pass performs `ops` simulated chain operations of `op_us` microseconds,
/// polling `brk` before each, and counts what happened.
pub struct FakeWork {
    host: &'static dyn Host,
    /// Chain operations per pass.
    pub ops: AtomicU32,
    /// Duration of one operation in microseconds (0: none).
    pub op_us: AtomicU32,
    /// Passes that ran to the end.
    pub passes: AtomicU32,
    /// Passes that stopped because `brk` said so.
    pub interrupted: AtomicU32,
    /// Calls of [`SyncWork::remaster`].
    pub remasters: AtomicU32,
    /// Chain operations performed, over all passes.
    pub ops_done: AtomicU64,
    /// 1 while a pass runs.
    pub in_pass: AtomicU32,
}

impl FakeWork {
    /// A work of `ops` instant operations per pass.
    pub fn new(host: &'static dyn Host, ops: u32) -> Self {
        FakeWork {
            host,
            ops: AtomicU32::new(ops),
            op_us: AtomicU32::new(0),
            passes: AtomicU32::new(0),
            interrupted: AtomicU32::new(0),
            remasters: AtomicU32::new(0),
            ops_done: AtomicU64::new(0),
            in_pass: AtomicU32::new(0),
        }
    }
}

impl SyncWork for FakeWork {
    fn pass(&self, brk: &dyn Fn() -> bool) -> Result<()> {
        self.in_pass.store(1, Ordering::SeqCst);
        let ops = self.ops.load(Ordering::SeqCst);
        let op_us = self.op_us.load(Ordering::SeqCst);
        let mut r = Ok(());
        for _ in 0..ops {
            if brk() {
                self.interrupted.fetch_add(1, Ordering::SeqCst);
                r = Err(Error::InProgress);
                break;
            }
            if op_us != 0 {
                host::sleep(self.host, Duration::from_micros(op_us.into()));
            }
            self.ops_done.fetch_add(1, Ordering::SeqCst);
        }
        if r.is_ok() {
            self.passes.fetch_add(1, Ordering::SeqCst);
        }
        self.in_pass.store(0, Ordering::SeqCst);
        r
    }
    fn remaster(&self) {
        self.remasters.fetch_add(1, Ordering::SeqCst);
    }
}

/// A one-slot thread set and its work, shared with requester threads.
struct Env {
    // Declared first: dropping it stops and joins the thread before `work` goes away.
    threads: Threads,
    work: FakeWork,
}

impl Env {
    fn new(
        host: &'static dyn Host,
        ops: u32,
        idle: Duration,
    ) -> core::result::Result<TryArc<Env>, Note> {
        let env = TryArc::new(Env {
            threads: Threads::new(1),
            work: FakeWork::new(host, ops),
        })
        .map_err(|e| note!("test state: {e}"))?;
        env.threads.set_idle_poll(idle);
        Ok(env)
    }

    fn start(&self, host: &'static dyn Host) -> Outcome {
        // SAFETY: `self` lives in a `TryArc` (a fixed address) and `threads` is declared before
        // `work`, so dropping the `Env` joins the thread before `work` is freed.
        unsafe { self.threads.start(0, host, &self.work) }.map_err(|e| note!("start: {e}"))
    }
}

/// How long [`wait_for`] waits: generous, because QEMU's TCG on busy shared cores (and a
/// KASAN debug kernel, about five times slower) made 10 s flaky; a real hang still fails.
const WAIT_FOR_NS: u64 = 120_000_000_000;

/// Wait (polling every millisecond) until `cond`, or fail after [`WAIT_FOR_NS`] with `what`.
fn wait_for(host: &dyn Host, what: &str, cond: impl Fn() -> bool) -> Outcome {
    let end = host.now_ns() + WAIT_FOR_NS;
    while !cond() {
        if host.now_ns() > end {
            return Err(note!(
                "timed out waiting for {what} ({} s)",
                WAIT_FOR_NS / 1_000_000_000
            ));
        }
        host::sleep(host, Duration::from_millis(1));
    }
    Ok(())
}

fn check(ok: bool, msg: impl FnOnce() -> Note) -> Outcome {
    if ok {
        Ok(())
    } else {
        Err(msg())
    }
}

fn expect_ok(what: &str, r: Result<()>) -> Outcome {
    r.map_err(|e| note!("{what}: {e}"))
}

fn expect_state(env: &Env, want: ThreadState) -> Outcome {
    let got = env.threads.state(0);
    check(got == want, || {
        note!(
            "state {} (flags {}), expected {}",
            got.name(),
            crate::thread::flag_names(env.threads.flags(0)),
            want.name()
        )
    })
}

/// Write a duration in nanoseconds as `N.NNN us` (integer math only).
fn write_us(out: &mut dyn fmt::Write, what: &str, ns: u64) {
    let _ = writeln!(out, "# {what}: {}.{:03} us", ns / 1000, ns % 1000);
}

/// Every request to a slot without a thread (never started, or stopped) returns at once as a
/// successful no-op, as the original's do when the thread was never created; only an index
/// beyond the slots is refused.
fn ops_on_idle_slot_are_noops(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let env = Env::new(host, 1, Duration::from_secs(60))?;
    let t = &env.threads;
    let all = |t: &Threads| {
        [
            ("freeze", t.request(0, Request::Freeze)),
            ("unfreeze", t.request(0, Request::Unfreeze)),
            ("remaster", t.request(0, Request::Remaster)),
            ("stop", t.request(0, Request::Stop)),
            ("signal", t.request(0, Request::Signal)),
        ]
    };
    for (name, r) in all(t) {
        expect_ok(name, r)?;
    }
    let r = t.request(1, Request::Freeze);
    check(r == Err(Error::Invalid), || {
        note!("freeze out of range: {r:?}")
    })?;
    expect_state(&env, ThreadState::NotStarted)?;
    env.start(host)?;
    check(env.start(host).is_err(), || note!("second start succeeded"))?;
    expect_ok("stop", t.request(0, Request::Stop))?;
    let resets = env.work.remasters.load(Ordering::SeqCst);
    for (name, r) in all(t) {
        expect_ok(name, r)?;
    }
    // Nothing reached a thread: no reset ran, and the slot is still stopped.
    check(env.work.remasters.load(Ordering::SeqCst) == resets, || {
        note!("a request to a stopped slot ran a reset")
    })?;
    expect_state(&env, ThreadState::Stopped)
}

fn each_request_acknowledged(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let env = Env::new(host, 5, Duration::from_secs(60))?;
    let t = &env.threads;
    env.start(host)?;
    wait_for(host, "first pass", || {
        env.work.passes.load(Ordering::SeqCst) >= 1
    })?;
    expect_state(&env, ThreadState::Running)?;
    expect_ok("freeze", t.request(0, Request::Freeze))?;
    expect_state(&env, ThreadState::Frozen)?;
    expect_ok("unfreeze", t.request(0, Request::Unfreeze))?;
    expect_state(&env, ThreadState::Running)?;
    let before = env.work.remasters.load(Ordering::SeqCst);
    expect_ok("remaster", t.request(0, Request::Remaster))?;
    let after = env.work.remasters.load(Ordering::SeqCst);
    check(after == before + 1, || {
        note!("remaster ran {} resets", after - before)
    })?;
    check(t.flags(0) & ThreadFlags::REMASTER.bits() == 0, || {
        note!("REMASTER still set after remaster")
    })?;
    // A signal runs a pass now, not after the 60 s idle poll.
    wait_for(host, "the idle sleep", || {
        t.flags(0) & ThreadFlags::WAITING.bits() != 0
    })?;
    let passes = env.work.passes.load(Ordering::SeqCst);
    expect_ok("signal", t.request(0, Request::Signal))?;
    wait_for(host, "signalled pass", || {
        env.work.passes.load(Ordering::SeqCst) > passes
    })?;
    expect_ok("stop", t.request(0, Request::Stop))?;
    expect_state(&env, ThreadState::Stopped)
}

fn freeze_during_pass(host: &'static dyn Host, out: &mut dyn fmt::Write) -> Outcome {
    let env = Env::new(host, 1_000_000, Duration::from_secs(60))?;
    env.work.op_us.store(100, Ordering::SeqCst);
    let t = &env.threads;
    env.start(host)?;
    wait_for(host, "a pass running", || {
        env.work.ops_done.load(Ordering::SeqCst) >= 10
    })?;
    // Count the operations done from the moment FREEZE is in the word: only the one in flight
    // may complete.
    let ops0 = AtomicU64::new(0);
    let t0 = host.now_ns();
    let r = t.freeze_observed(0, &|| {
        ops0.store(env.work.ops_done.load(Ordering::SeqCst), Ordering::SeqCst)
    });
    expect_ok("freeze", r)?;
    let ns = host.now_ns() - t0;
    let ops = env.work.ops_done.load(Ordering::SeqCst) - ops0.load(Ordering::SeqCst);
    write_us(out, "freeze acknowledged during a pass after", ns);
    check(ops <= 1, || {
        note!("{ops} chain operations ran after the freeze request")
    })?;
    check(env.work.interrupted.load(Ordering::SeqCst) == 1, || {
        note!("the pass was not interrupted")
    })?;
    check(env.work.in_pass.load(Ordering::SeqCst) == 0, || {
        note!("a pass still runs while frozen")
    })?;
    expect_state(&env, ThreadState::Frozen)?;
    expect_ok("stop", t.request(0, Request::Stop))
}

fn stop_while_frozen(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let env = Env::new(host, 5, Duration::from_secs(60))?;
    env.start(host)?;
    expect_ok("freeze", env.threads.request(0, Request::Freeze))?;
    expect_ok("stop", env.threads.request(0, Request::Stop))?;
    expect_state(&env, ThreadState::Stopped)
}

fn stop_after_pass_is_prompt(host: &'static dyn Host, out: &mut dyn fmt::Write) -> Outcome {
    let env = Env::new(host, 5, Duration::from_secs(60))?;
    env.start(host)?;
    wait_for(host, "a pass and the idle sleep", || {
        env.work.passes.load(Ordering::SeqCst) >= 1
            && env.threads.flags(0) & ThreadFlags::WAITING.bits() != 0
    })?;
    let t0 = host.now_ns();
    expect_ok("stop", env.threads.request(0, Request::Stop))?;
    let ns = host.now_ns() - t0;
    write_us(out, "stop acknowledged from the idle sleep after", ns);
    check(ns < 5_000_000_000, || {
        note!("stop took {} ms with a 60 s idle poll", ns / 1_000_000)
    })
}

fn freeze_unfreeze_1000(host: &'static dyn Host, out: &mut dyn fmt::Write) -> Outcome {
    let env = Env::new(host, 20, Duration::from_millis(1))?;
    env.start(host)?;
    let t0 = host.now_ns();
    for i in 0..1000 {
        expect_ok("freeze", env.threads.request(0, Request::Freeze))
            .map_err(|e| note!("cycle {i}: {e}"))?;
        if env.threads.state(0) != ThreadState::Frozen {
            return Err(note!("cycle {i}: not frozen after freeze"));
        }
        expect_ok("unfreeze", env.threads.request(0, Request::Unfreeze))
            .map_err(|e| note!("cycle {i}: {e}"))?;
    }
    write_us(
        out,
        "mean freeze+unfreeze round trip",
        (host.now_ns() - t0) / 1000,
    );
    expect_state(&env, ThreadState::Running)?;
    expect_ok("stop", env.threads.request(0, Request::Stop))
}

fn remaster_runs_reset(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let env = Env::new(host, 5, Duration::from_secs(60))?;
    env.start(host)?;
    wait_for(host, "the reset at start", || {
        env.work.remasters.load(Ordering::SeqCst) >= 1
    })?;
    let r0 = env.work.remasters.load(Ordering::SeqCst);
    check(r0 == 1, || note!("{r0} resets at start, expected 1"))?;
    for _ in 0..10 {
        expect_ok("remaster", env.threads.request(0, Request::Remaster))?;
    }
    let r = env.work.remasters.load(Ordering::SeqCst);
    check(r == 11, || note!("{} resets for 10 remasters", r - 1))?;
    // A frozen thread answers a remaster and stays frozen.
    expect_ok("freeze", env.threads.request(0, Request::Freeze))?;
    expect_ok(
        "remaster while frozen",
        env.threads.request(0, Request::Remaster),
    )?;
    expect_state(&env, ThreadState::Frozen)?;
    check(env.work.remasters.load(Ordering::SeqCst) == 12, || {
        note!("no reset while frozen")
    })?;
    expect_ok("stop", env.threads.request(0, Request::Stop))
}

/// The outcome of a requester thread: 0 pending, 1 ok, else 2 + errno.
fn code(r: Result<()>) -> u32 {
    match r {
        Ok(()) => 1,
        Err(e) => 2 + e.errno() as u32,
    }
}

/// Race `a` and `b` from two host threads released together; returns their result codes.
fn race(
    host: &'static dyn Host,
    env: &TryArc<Env>,
    a: Request,
    b: Request,
) -> core::result::Result<[u32; 2], Note> {
    let gate = TryArc::new(AtomicU32::new(0)).map_err(|e| note!("race state: {e}"))?;
    let results = TryArc::new([AtomicU32::new(0), AtomicU32::new(0)])
        .map_err(|e| note!("race state: {e}"))?;
    let mut handles: [Option<RawThread>; 2] = [None, None];
    for (i, op) in [a, b].into_iter().enumerate() {
        let (env, g, results) = (env.clone(), gate.clone(), results.clone());
        let entry = crate::mem::try_box(move || {
            g.fetch_add(1, Ordering::SeqCst);
            host.wake_word(&g);
            // Sleep, never spin: on a kernel without involuntary preemption a spinning kthread
            // keeps its CPU (and the RCU grace periods spawning the other requester may need)
            // for good; the debug kernel showed it as a soft lockup.
            loop {
                let v = g.load(Ordering::SeqCst);
                if v >= 2 {
                    break;
                }
                host.sleep_on_word(&g, v, Some(Duration::from_millis(1)));
            }
            results[i].store(code(env.threads.request(0, op)), Ordering::SeqCst);
        });
        match entry.and_then(|e| host.spawn("h2s-requester", e)) {
            Ok(h) => handles[i] = Some(h),
            Err(e) => {
                // Release the first requester so it can be joined (it waits for the second).
                gate.fetch_add(1, Ordering::SeqCst);
                host.wake_word(&gate);
                for h in handles.iter_mut().filter_map(Option::take) {
                    host.join(h);
                }
                return Err(note!("spawn: {e}"));
            }
        }
    }
    for h in handles.iter_mut().filter_map(Option::take) {
        host.join(h);
    }
    Ok([
        results[0].load(Ordering::SeqCst),
        results[1].load(Ordering::SeqCst),
    ])
}

const OK: u32 = 1;

fn concurrent_freeze_vs_stop(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let env = Env::new(host, 50, Duration::from_millis(1))?;
    for i in 0..50 {
        env.start(host)?;
        let [f, s] = race(host, &env, Request::Freeze, Request::Stop)?;
        // The freeze was acknowledged, or came after the stop (a no-op): both succeed.
        check(s == OK && f == OK, || {
            note!("round {i}: freeze {f}, stop {s}")
        })?;
        expect_state(&env, ThreadState::Stopped)?;
    }
    Ok(())
}

fn concurrent_unfreeze_vs_remaster(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let env = Env::new(host, 50, Duration::from_millis(1))?;
    env.start(host)?;
    for i in 0..50 {
        expect_ok("freeze", env.threads.request(0, Request::Freeze))?;
        let r0 = env.work.remasters.load(Ordering::SeqCst);
        let [u, r] = race(host, &env, Request::Unfreeze, Request::Remaster)?;
        check(u == OK && r == OK, || {
            note!("round {i}: unfreeze {u}, remaster {r}")
        })?;
        check(env.work.remasters.load(Ordering::SeqCst) > r0, || {
            note!("round {i}: no reset ran")
        })?;
        expect_state(&env, ThreadState::Running)?;
    }
    expect_ok("stop", env.threads.request(0, Request::Stop))
}

fn concurrent_stop_vs_stop(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let env = Env::new(host, 50, Duration::from_millis(1))?;
    for i in 0..50 {
        env.start(host)?;
        let [a, b] = race(host, &env, Request::Stop, Request::Stop)?;
        // Both were running when asked, or one came after the other finished (a no-op).
        check(a == OK && b == OK, || {
            note!("round {i}: stop {a}, stop {b}")
        })?;
        expect_state(&env, ThreadState::Stopped)?;
    }
    Ok(())
}

fn concurrent_freeze_vs_unfreeze(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let env = Env::new(host, 50, Duration::from_millis(1))?;
    env.start(host)?;
    for i in 0..50 {
        let [f, u] = race(host, &env, Request::Freeze, Request::Unfreeze)?;
        check(f == OK && u == OK, || {
            note!("round {i}: freeze {f}, unfreeze {u}")
        })?;
        // Either order is a valid outcome; settle it and go on.
        expect_ok("unfreeze", env.threads.request(0, Request::Unfreeze))?;
        expect_state(&env, ThreadState::Running)?;
    }
    expect_ok("stop", env.threads.request(0, Request::Stop))
}

fn restart_cycles(host: &'static dyn Host, _out: &mut dyn fmt::Write) -> Outcome {
    let env = Env::new(host, 5, Duration::from_secs(60))?;
    for i in 0..20 {
        let passes = env.work.passes.load(Ordering::SeqCst);
        env.start(host)?;
        // The word of a restarted thread is clean: no FROZEN left from the last life.
        let state = env.threads.state(0);
        check(state == ThreadState::Running, || {
            note!("cycle {i}: restarted as {}", state.name())
        })?;
        wait_for(host, "a pass after restart", || {
            env.work.passes.load(Ordering::SeqCst) > passes
        })?;
        // Stop it frozen, so the old word holds FROZEN|STOPPED for the next start to clear.
        expect_ok("freeze", env.threads.request(0, Request::Freeze))?;
        expect_ok("stop", env.threads.request(0, Request::Stop))?;
        check(
            env.threads.flags(0) & ThreadFlags::FROZEN.bits() != 0,
            || note!("FROZEN lost at stop"),
        )?;
    }
    Ok(())
}

/// A node's real synchronization as thread work, counting its chain operations (the `brk` polls
/// that let the pass go on). Owns the cluster, so the test's thread can borrow it. At chain
/// operation number `park_at` the pass parks until `gate` is set, so a test can make a request
/// while a pass is provably under way.
struct CountingSync {
    cluster: Pin<Box<Cluster>>,
    idx: usize,
    host: &'static dyn Host,
    ops: AtomicU64,
    park_at: u64,
    parked: AtomicU32,
    gate: AtomicU32,
    /// Non-zero once a pass ran out of memory: waiting for the pass to get anywhere is then
    /// pointless, and the verdict is that error.
    nomem: AtomicU32,
}

impl CountingSync {
    /// `Err` if a pass ran out of memory.
    fn check_memory(&self) -> Outcome {
        check(self.nomem.load(Ordering::SeqCst) == 0, || {
            note!("sync pass: {}", Error::NoMem)
        })
    }

    /// [`wait_for`] `cond`, or for a pass to run out of memory.
    fn wait_for(&self, what: &str, cond: impl Fn() -> bool) -> Outcome {
        wait_for(self.host, what, || {
            self.nomem.load(Ordering::SeqCst) != 0 || cond()
        })?;
        self.check_memory()
    }
}

impl SyncWork for CountingSync {
    fn pass(&self, brk: &dyn Fn() -> bool) -> Result<()> {
        let r = self.cluster.sync_node(self.idx, &|| {
            if self.ops.load(Ordering::SeqCst) == self.park_at {
                self.parked.store(1, Ordering::SeqCst);
                while self.gate.load(Ordering::SeqCst) == 0 {
                    self.host
                        .sleep_on_word(&self.gate, 0, Some(Duration::from_secs(1)));
                }
            }
            let stop = brk();
            if !stop {
                self.ops.fetch_add(1, Ordering::SeqCst);
            }
            stop
        });
        if r == Err(Error::NoMem) {
            self.nomem.store(1, Ordering::SeqCst);
        }
        r
    }
    fn remaster(&self) {
        self.cluster.refresh_view(self.idx);
    }
}

struct SyncEnv {
    // Declared first: dropping it joins the thread before the cluster goes away.
    threads: Threads,
    work: CountingSync,
}

/// Directories and files per directory of the tree a real sync copies.
const TREE_DIRS: usize = 64;
const TREE_FILES: usize = 16;

fn tree_path(buf: &mut heapless::String<32>, d: usize, f: Option<usize>) -> &[u8] {
    buf.clear();
    let _ = match f {
        Some(f) => write!(buf, "/d{d}/f{f}"),
        None => write!(buf, "/d{d}"),
    };
    buf.as_bytes()
}

/// Create the tree on the nodes of `set`.
fn build_tree(c: &Cluster, set: NodeSet) -> Outcome {
    let mut p = heapless::String::new();
    for d in 0..TREE_DIRS {
        c.apply(set, FrontendOp::Mkdir(tree_path(&mut p, d, None)))
            .map_err(|(n, e)| note!("mkdir on node {n}: {e}"))?;
        for f in 0..TREE_FILES {
            let data = [b'a' + (f % 26) as u8; 40];
            c.apply(set, FrontendOp::Write(tree_path(&mut p, d, Some(f)), &data))
                .map_err(|(n, e)| note!("write on node {n}: {e}"))?;
        }
    }
    Ok(())
}

/// The state of [`freeze_during_real_sync`]: a master with the tree, an empty slave, the
/// slave's counting sync thread (not started). Not inlined: the cluster is built and moved to
/// the heap in a frame that is gone before the sync runs (a kernel stack is small).
#[inline(never)]
fn real_sync_env(host: &'static dyn Host) -> core::result::Result<TryArc<SyncEnv>, Note> {
    let cluster =
        Cluster::new(host, &[Role::Master, Role::Slave]).map_err(|e| note!("cluster: {e}"))?;
    build_tree(&cluster, NodeSet(1))?;
    TryArc::new(SyncEnv {
        threads: Threads::new(1),
        work: CountingSync {
            cluster,
            idx: 1,
            host,
            ops: AtomicU64::new(0),
            park_at: 300,
            parked: AtomicU32::new(0),
            gate: AtomicU32::new(0),
            nomem: AtomicU32::new(0),
        },
    })
    .map_err(|e| note!("test state: {e}"))
}

/// Nodes 0 and 1 of `c` hold the same tree. Not inlined: its note (and the compare's
/// temporaries) take a frame only while it runs.
#[inline(never)]
fn same_trees(c: &Cluster) -> Outcome {
    let mut diff = Note::new();
    let same = c
        .compare(0, 1, &mut diff)
        .map_err(|e| note!("compare: {e}"))?;
    check(same, || note!("trees differ after sync: {diff}"))
}

/// Freeze a slave's thread while it copies a tree of about a thousand inodes from the master:
/// acknowledged within one chain operation, nothing moves while frozen, the pass polled `brk`
/// at every chain it scanned, and the sync completes after the unfreeze.
fn freeze_during_real_sync(host: &'static dyn Host, out: &mut dyn fmt::Write) -> Outcome {
    let env = real_sync_env(host)?;
    env.threads.set_idle_poll(Duration::from_secs(60));
    let c = &env.work.cluster;
    let ops = &env.work.ops;
    // SAFETY: `env` lives in a `TryArc` (a fixed address) and `threads` is declared before
    // `work`, so dropping the `SyncEnv` joins the thread before the cluster is freed.
    unsafe { env.threads.start(0, host, &env.work) }.map_err(|e| note!("start: {e}"))?;
    // The pass parks itself at its 300th chain operation (see `CountingSync`), so the freeze
    // provably arrives in the middle of a pass; the request releases it.
    env.work
        .wait_for("the pass at its 300th chain operation", || {
            env.work.parked.load(Ordering::SeqCst) != 0
        })?;
    let at_signal = AtomicU64::new(0);
    let t0 = host.now_ns();
    let r = env.threads.freeze_observed(0, &|| {
        at_signal.store(ops.load(Ordering::SeqCst), Ordering::SeqCst);
        env.work.gate.store(1, Ordering::SeqCst);
        host.wake_word(&env.work.gate);
    });
    expect_ok("freeze", r)?;
    let ns = host.now_ns() - t0;
    let after = ops.load(Ordering::SeqCst) - at_signal.load(Ordering::SeqCst);
    write_us(out, "freeze acknowledged during a real sync after", ns);
    check(after == 0, || {
        note!("{after} chain operations ran after the freeze request")
    })?;
    let frozen_at = ops.load(Ordering::SeqCst);
    host::sleep(host, Duration::from_millis(20));
    check(ops.load(Ordering::SeqCst) == frozen_at, || {
        note!("chain operations while frozen")
    })?;
    check(!c.in_sync(1), || note!("in sync although frozen mid-pass"))?;
    expect_ok("unfreeze", env.threads.request(0, Request::Unfreeze))?;
    env.work.wait_for("the slave in sync", || c.in_sync(1))?;
    same_trees(c)?;
    let scanned = c.stats(1).scanned;
    let polled = ops.load(Ordering::SeqCst);
    let _ = writeln!(out, "# {scanned} chains scanned, brk polled {polled} times");
    check(polled >= scanned, || {
        note!("brk polled {polled} times for {scanned} chains scanned")
    })?;
    expect_ok("stop", env.threads.request(0, Request::Stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_all_passes_on_userland() {
        let mut out = String::new();
        let (p, f) = run_all(crate::userland::host(), &mut out);
        assert_eq!(f, 0, "{out}");
        assert_eq!(p as usize, CASES.len(), "{out}");
        assert!(
            out.contains("    1..") && out.contains("# freeze acknowledged"),
            "{out}"
        );
    }
}
