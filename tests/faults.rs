//! Fault injection at every step of a sync.
//!
//! A mixed tree (directories, DIRECTDATA files, DATA files, hardlinks; inserts, destroys,
//! replaces, type changes, deferrals) is synchronized onto a diverged node, and the sync is
//! interrupted at chain operation i, for every i: through `sync_node`'s `brk` directly, and
//! through real sync threads receiving freeze, stop or remaster requests exactly at step i.
//! After each interruption the invariant must hold on the syncing node: an inode's modify_tid
//! equals the focus's only if its whole subtree equals the focus's. Then the sync resumes and
//! the node must converge.

// Shared support of the oracle tests; this binary uses part of it.
#[allow(dead_code)]
#[path = "oracle"]
mod oracle {
    pub mod gen;
    pub mod model;
    pub mod real;
}

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hammer2_synchro::cluster::Cluster;
use hammer2_synchro::host::{Host, LockMode, LogLevel, RawLock, RawThread, ThreadEntry};
use hammer2_synchro::role::Role;
use hammer2_synchro::thread::{Request, SyncWork, ThreadFlags, Threads};
use hammer2_synchro::Error;

use oracle::gen::Case;
use oracle::model::Op;
use oracle::real::{self, Seen};

const SLAVE: usize = 3;

fn w(path: &str, bytes: usize, seed: u64) -> Op {
    Op::Write {
        path: path.as_bytes().to_vec(),
        bytes,
        seed,
    }
}
fn mk(path: &str) -> Op {
    Op::Mkdir(path.as_bytes().to_vec())
}

/// Masters 0-2 agree; node 3 (a slave) diverged: it missed changes, holds changes of its own,
/// and has a directory where the masters have a file and the reverse.
fn mixed_case(role3: Role) -> Case {
    let all = 0b1111;
    let m = 0b0111;
    let s = 0b1000;
    let ops = vec![
        (all, mk("/a")),
        (all, mk("/a/b")),
        (all, mk("/a/b/c")),
        (all, w("/a/small", 40, 1)),
        (all, w("/a/b/big", 70_000, 2)),
        (all, w("/a/edge", 513, 3)),
        (all, Op::Link(b"/a/small".to_vec(), b"/a/l".to_vec())),
        (all, w("/a/b/c/keep", 300, 4)),
        (m, w("/a/small", 512, 5)),
        (m, mk("/d")),
        (m, w("/d/x", 2000, 6)),
        (m, mk("/d/e")),
        (m, w("/d/e/y", 9, 7)),
        (m, Op::Chmod(b"/a/b".to_vec(), 0o700)),
        (m, Op::Rm(b"/a/edge".to_vec())),
        (m, Op::Link(b"/d/x".to_vec(), b"/d/l".to_vec())),
        (m, w("/a/b/big", 140_000, 8)),
        (m, mk("/t")),
        (m, w("/t/in", 20, 9)),
        (m, w("/u", 600, 10)),
        (s, mk("/junk")),
        (s, w("/junk/j", 100, 11)),
        (s, w("/a/b/c/s", 100, 12)),
        (s, w("/t", 30, 13)),
        (s, mk("/u")),
        (s, mk("/u/v")),
        (s, Op::Chmod(b"/a/small".to_vec(), 0o600)),
    ];
    let mut roles = vec![Role::Master; 3];
    roles.push(role3);
    Case::arbitrary(roles, ops)
}

/// The invariant on node `idx` against the focus node `f`: for every path whose inode TID
/// equals the focus's, every path below it looks the same on both. Paths are read top-down
/// and a subtree only after its root, so this is sound while a thread is still syncing.
fn invariant(c: &Cluster, f: usize, idx: usize, paths: &[Vec<u8>]) -> Result<(), String> {
    for p in paths {
        let (Seen::Inode { tid: a, .. }, Seen::Inode { tid: b, .. }) =
            (real::observe(c, idx, p), real::observe(c, f, p))
        else {
            continue;
        };
        if a != b {
            continue;
        }
        for q in paths.iter().filter(|q| below(p, q)) {
            let (x, y) = (real::observe(c, idx, q), real::observe(c, f, q));
            if x != y {
                return Err(format!(
                    "{} has the focus TID {a} but {} differs: {x:?} vs focus {y:?}",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(q)
                ));
            }
        }
    }
    Ok(())
}

/// Whether `q` is strictly below `p`.
fn below(p: &[u8], q: &[u8]) -> bool {
    q.len() > p.len() && q.starts_with(p) && (p == b"/" || q[p.len()] == b'/')
}

/// Node `idx` converged: it looks like the focus node in every path and `compare` agrees.
fn converged(c: &Cluster, f: usize, idx: usize, paths: &[Vec<u8>]) -> Result<(), String> {
    for p in paths {
        let (x, y) = (real::observe(c, idx, p), real::observe(c, f, p));
        if x != y {
            return Err(format!(
                "{}: {x:?} vs focus {y:?}",
                String::from_utf8_lossy(p)
            ));
        }
    }
    if !real::same(c, f, idx)? {
        return Err("compare finds a difference".into());
    }
    Ok(())
}

fn setup(role3: Role) -> (std::pin::Pin<Box<Cluster>>, Vec<Vec<u8>>, Vec<Seen>) {
    let case = mixed_case(role3);
    let (_, paths) = case.replay();
    let c = real::build(&case).unwrap();
    let masters = masters_view(&c, &paths);
    (c, paths, masters)
}

fn masters_view(c: &Cluster, paths: &[Vec<u8>]) -> Vec<Seen> {
    (0..3)
        .flat_map(|i| paths.iter().map(move |p| real::observe(c, i, p)))
        .collect()
}

/// Steps of an uninterrupted sync of node 3.
fn total_steps(role3: Role) -> usize {
    let (c, paths, _) = setup(role3);
    let n = AtomicUsize::new(0);
    c.refresh_view(SLAVE);
    c.sync_node(SLAVE, &|| {
        n.fetch_add(1, Ordering::Relaxed);
        false
    })
    .unwrap();
    converged(&c, 0, SLAVE, &paths).unwrap();
    n.into_inner()
}

fn brk_at_every_step(role3: Role) {
    let total = total_steps(role3);
    assert!(
        total > 20,
        "a sync of the mixed tree polls brk only {total} times"
    );
    for i in 0..total {
        let (c, paths, masters) = setup(role3);
        let n = AtomicUsize::new(0);
        c.refresh_view(SLAVE);
        let r = c.sync_node(SLAVE, &|| n.fetch_add(1, Ordering::Relaxed) == i);
        assert_eq!(
            r,
            Err(Error::InProgress),
            "step {i}: a break must end the pass with InProgress"
        );
        invariant(&c, 0, SLAVE, &paths)
            .unwrap_or_else(|e| panic!("break at step {i} of {total}: {e}"));
        assert!(
            masters_view(&c, &paths) == masters,
            "step {i}: the masters changed"
        );
        c.sync_node(SLAVE, &|| false)
            .unwrap_or_else(|e| panic!("resume after step {i}: {e}"));
        converged(&c, 0, SLAVE, &paths)
            .unwrap_or_else(|e| panic!("after a break at step {i}, resumed: {e}"));
    }
}

#[test]
fn break_at_every_step_slave() {
    brk_at_every_step(Role::Slave);
}

#[test]
fn break_at_every_step_lagging_master() {
    // A fourth master that diverged is rolled back to the quorum of the other three.
    brk_at_every_step(Role::Master);
}

#[test]
fn repeated_breaks_make_progress() {
    // Interrupt every pass after k more steps, k growing: the node still converges, and the
    // invariant holds after every pass.
    let (c, paths, _) = setup(Role::Slave);
    c.refresh_view(SLAVE);
    for k in 1.. {
        let n = AtomicUsize::new(0);
        match c.sync_node(SLAVE, &|| n.fetch_add(1, Ordering::Relaxed) >= k * 4) {
            Ok(()) => break,
            Err(Error::InProgress) => invariant(&c, 0, SLAVE, &paths).unwrap(),
            Err(e) => panic!("pass {k}: {e}"),
        }
        assert!(k < 1000, "no convergence");
    }
    converged(&c, 0, SLAVE, &paths).unwrap();
}

#[test]
fn negative_control_invariant_checker_catches_hidden_divergence() {
    // /a on node 3 gets the masters' TID through a change the masters made later, while it
    // misses an earlier one under /a: the TID says "in sync", the subtree disagrees.
    let case = Case::arbitrary(
        vec![Role::Master, Role::Master, Role::Master, Role::Slave],
        vec![
            (0b1111, mk("/a")),
            (0b0111, mk("/a/x")),
            (0b1111, mk("/a/y")),
        ],
    );
    let (_, paths) = case.replay();
    let c = real::build(&case).unwrap();
    let err = invariant(&c, 0, SLAVE, &paths).unwrap_err();
    assert!(err.contains("/a/x"), "{err}");
}

#[test]
fn negative_control_unresumed_sync_does_not_converge() {
    let (c, paths, _) = setup(Role::Slave);
    c.refresh_view(SLAVE);
    let n = AtomicUsize::new(0);
    assert_eq!(
        c.sync_node(SLAVE, &|| n.fetch_add(1, Ordering::Relaxed) == 10),
        Err(Error::InProgress)
    );
    assert!(converged(&c, 0, SLAVE, &paths).is_err());
}

// ---------------------------------------------------------------------------------------------
// Real threads: the request arrives exactly at step i.

/// Node `idx`'s sync pass, with step `at` of the next pass held until a requester has posted
/// its request (the thread's own break check then sees it at that very step).
struct Gated<'a> {
    cluster: &'a Cluster,
    threads: &'a Threads,
    idx: usize,
    at: usize,
    armed: AtomicBool,
    reached: AtomicBool,
    step: AtomicUsize,
}

impl SyncWork for Gated<'_> {
    fn pass(&self, brk: &dyn Fn() -> bool) -> hammer2_synchro::Result<()> {
        self.step.store(0, Ordering::SeqCst);
        self.cluster.sync_node(self.idx, &|| {
            let s = self.step.fetch_add(1, Ordering::SeqCst);
            if s == self.at && self.armed.swap(false, Ordering::SeqCst) {
                self.reached.store(true, Ordering::SeqCst);
                let req = (ThreadFlags::FREEZE | ThreadFlags::STOP | ThreadFlags::REMASTER).bits();
                let t0 = Instant::now();
                while self.threads.flags(self.idx) & req == 0 {
                    assert!(
                        t0.elapsed() < Duration::from_secs(30),
                        "request never arrived"
                    );
                    std::thread::yield_now();
                }
            }
            brk()
        })
    }
    fn remaster(&self) {
        self.cluster.refresh_view(self.idx);
    }
}

/// Stops and joins every thread of a slot set when dropped.
struct StopAll<'a>(&'a Threads);

impl Drop for StopAll<'_> {
    fn drop(&mut self) {
        // `Threads::stop_all` needs `&mut`; the thread borrows `threads` here, so stop each slot.
        for i in 0..self.0.len() {
            let _ = self.0.request(i, Request::Stop);
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Req {
    Freeze,
    Stop,
    Remaster,
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn thread_request_at(req: Req, at: usize) {
    let (c, paths, _) = setup(Role::Slave);
    let threads = Threads::new(4);
    threads.set_idle_poll(Duration::from_millis(20));
    let gated = Gated {
        cluster: &c,
        threads: &threads,
        idx: SLAVE,
        at,
        armed: AtomicBool::new(true),
        reached: AtomicBool::new(false),
        step: AtomicUsize::new(0),
    };
    let _guard = StopAll(&threads);
    // SAFETY: `threads` and `gated` live on this stack frame until the end of the function, and
    // `_guard`, dropped before both (also when a check panics), stops and joins the thread.
    unsafe { threads.start(SLAVE, real::host(), &gated).unwrap() };
    wait_until("step reached", || gated.reached.load(Ordering::SeqCst));
    match req {
        Req::Freeze => {
            threads.request(SLAVE, Request::Freeze).unwrap();
            invariant(&c, 0, SLAVE, &paths).unwrap_or_else(|e| panic!("frozen at step {at}: {e}"));
            threads.request(SLAVE, Request::Unfreeze).unwrap();
            threads.request(SLAVE, Request::Signal).unwrap();
        }
        Req::Stop => {
            threads.request(SLAVE, Request::Stop).unwrap();
            invariant(&c, 0, SLAVE, &paths).unwrap_or_else(|e| panic!("stopped at step {at}: {e}"));
            // SAFETY: as above.
            unsafe { threads.start(SLAVE, real::host(), &gated).unwrap() };
        }
        Req::Remaster => {
            threads.request(SLAVE, Request::Remaster).unwrap();
            // The thread goes on syncing: the top-down reading keeps this sound.
            invariant(&c, 0, SLAVE, &paths)
                .unwrap_or_else(|e| panic!("remastered at step {at}: {e}"));
            threads.request(SLAVE, Request::Signal).unwrap();
        }
    }
    wait_until("node 3 in sync", || c.in_sync(SLAVE));
    threads.request(SLAVE, Request::Stop).unwrap();
    converged(&c, 0, SLAVE, &paths).unwrap_or_else(|e| panic!("{req:?} at step {at}: {e}"));
}

fn thread_requests(req: Req) {
    let total = total_steps(Role::Slave);
    let stride = (total / 40).max(1);
    for at in (0..total).step_by(stride) {
        thread_request_at(req, at);
    }
}

#[test]
fn thread_freeze_at_steps() {
    thread_requests(Req::Freeze);
}

#[test]
fn thread_stop_at_steps() {
    thread_requests(Req::Stop);
}

#[test]
fn thread_remaster_at_steps() {
    thread_requests(Req::Remaster);
}

#[test]
fn all_threads_with_random_requests_converge() {
    // Every node's thread runs while requests hit random nodes at random moments; once every
    // thread is unfrozen the cluster converges.
    let (c, paths, _) = setup(Role::Slave);
    c.set_thread_idle_poll(Duration::from_millis(10));
    for i in 0..4 {
        c.as_ref().thread_start(i).unwrap();
    }
    let mut x: u64 = 0x9E37_79B9;
    for _ in 0..60 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let node = (x % 4) as usize;
        match (x >> 8) % 5 {
            0 => c.thread_request(node, Request::Freeze).unwrap(),
            1 => c.thread_request(node, Request::Unfreeze).unwrap(),
            2 => c.thread_request(node, Request::Remaster).unwrap(),
            3 => {
                c.thread_request(node, Request::Stop).unwrap();
                c.as_ref().thread_start(node).unwrap();
            }
            _ => c.thread_request(node, Request::Signal).unwrap(),
        }
        std::thread::sleep(Duration::from_micros((x >> 16) % 2000));
    }
    for i in 0..4 {
        c.thread_request(i, Request::Unfreeze).unwrap();
        c.thread_request(i, Request::Signal).unwrap();
    }
    wait_until("every node in sync", || (0..4).all(|i| c.in_sync(i)));
    for i in 0..4 {
        c.thread_request(i, Request::Stop).unwrap();
    }
    converged(&c, 0, SLAVE, &paths).unwrap();
}

// ---------------------------------------------------------------------------------------------
// I/O errors: a host whose chain-lock creation fails at the k-th call while armed, which the
// store meets whenever the sync creates a chain (insert). Until the core grows an I/O fault
// hook on node reads, this is the injection point the public API offers.

struct FailingHost {
    inner: fn() -> &'static dyn Host,
    /// Fail the call that brings this to zero; 0 = disarmed.
    countdown: AtomicU64,
    hit: AtomicBool,
    calls: AtomicU64,
}

static FAILING: FailingHost = FailingHost {
    inner: hammer2_synchro::userland::host,
    countdown: AtomicU64::new(0),
    hit: AtomicBool::new(false),
    calls: AtomicU64::new(0),
};

impl FailingHost {
    fn arm(&self, n: u64) {
        self.hit.store(false, Ordering::SeqCst);
        self.calls.store(0, Ordering::SeqCst);
        self.countdown.store(n, Ordering::SeqCst);
    }
    /// Disarm; whether the failure was hit, and the calls made while armed.
    fn disarm(&self) -> (bool, u64) {
        self.countdown.store(0, Ordering::SeqCst);
        (
            self.hit.load(Ordering::SeqCst),
            self.calls.load(Ordering::SeqCst),
        )
    }
}

impl Host for FailingHost {
    fn sleep_on_word(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        (self.inner)().sleep_on_word(word, expected, timeout)
    }
    fn wake_word(&self, word: &AtomicU32) {
        (self.inner)().wake_word(word)
    }
    fn lock_create(&self) -> hammer2_synchro::Result<RawLock> {
        let n = self.countdown.load(Ordering::SeqCst);
        if n != 0 {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.countdown.store(n - 1, Ordering::SeqCst);
            if n == 1 {
                self.hit.store(true, Ordering::SeqCst);
                return Err(Error::Io);
            }
        }
        (self.inner)().lock_create()
    }
    fn lock_destroy(&self, lock: RawLock) {
        (self.inner)().lock_destroy(lock)
    }
    fn lock(&self, lock: &RawLock, mode: LockMode, depth: u8) {
        (self.inner)().lock(lock, mode, depth)
    }
    fn unlock(&self, lock: &RawLock, mode: LockMode) {
        (self.inner)().unlock(lock, mode)
    }
    fn spawn(&self, name: &str, entry: ThreadEntry) -> hammer2_synchro::Result<RawThread> {
        (self.inner)().spawn(name, entry)
    }
    fn join(&self, thread: RawThread) {
        (self.inner)().join(thread)
    }
    fn now_ns(&self) -> u64 {
        (self.inner)().now_ns()
    }
    fn log(&self, level: LogLevel, args: std::fmt::Arguments<'_>) {
        (self.inner)().log(level, args)
    }
    fn should_stop(&self) -> bool {
        (self.inner)().should_stop()
    }
    fn relax(&self) {
        (self.inner)().relax()
    }
}

#[test]
fn io_error_at_every_chain_creation() {
    // Only this test uses FAILING, so its counters are not shared.
    let case = mixed_case(Role::Slave);
    let (_, paths) = case.replay();
    let count = {
        let c = real::build_on(&FAILING, &case).unwrap();
        c.refresh_view(SLAVE);
        FAILING.arm(u64::MAX);
        let r = c.sync_node(SLAVE, &|| false);
        let (_, calls) = FAILING.disarm();
        r.unwrap();
        calls
    };
    assert!(count > 5, "the sync created only {count} chains");
    for k in 1..=count {
        let c = real::build_on(&FAILING, &case).unwrap();
        let masters = masters_view(&c, &paths);
        c.refresh_view(SLAVE);
        FAILING.arm(k);
        let r = c.sync_node(SLAVE, &|| false);
        let (hit, _) = FAILING.disarm();
        assert!(hit, "failure {k} of {count} not reached");
        assert_eq!(
            r,
            Err(Error::Io),
            "failing chain creation {k}: the error must reach the caller"
        );
        assert!(
            !c.in_sync(SLAVE),
            "failing chain creation {k}: the root was stamped over a failure"
        );
        invariant(&c, 0, SLAVE, &paths)
            .unwrap_or_else(|e| panic!("I/O error at creation {k}: {e}"));
        assert!(
            masters_view(&c, &paths) == masters,
            "creation {k}: the masters changed"
        );
        c.sync_node(SLAVE, &|| false)
            .unwrap_or_else(|e| panic!("resume after I/O error {k}: {e}"));
        converged(&c, 0, SLAVE, &paths)
            .unwrap_or_else(|e| panic!("after I/O error {k}, resumed: {e}"));
    }
}
