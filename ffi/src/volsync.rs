//! `sync PATH@LABEL ...` of the `volume` command file: the CLI's `sync` inside the host. Each
//! device is opened read-write through the host's block ops, its PFS loaded into a node store
//! whose file data stay on the volume, read on demand through a read-only handle of the same
//! device ([`crate::volread`]) within `--cache-mib` per volume (changed data past it are
//! committed on the way, the threads frozen meanwhile: `Converge::write_back`), the stores
//! joined into one cluster by the core's rules (`mount::join`: roles from
//! `pfs_type`, one cluster id, masters that agree), the cluster's sync threads run until every
//! node agrees with the focus (bounded by `--timeout`; the cluster shows in `status`
//! meanwhile), every thread is stopped with its acknowledgement, and every node whose tree
//! changed is committed to its volume as one copy-on-write transaction (flushed before and
//! after its header). The devices are opened by the caller (its root, working directory and
//! credentials resolve the paths); the loads and the commits run on a kernel thread of their
//! own: a fresh stack for the deepest walks. One `sync` runs at a time in the module: a second
//! one fails at once with `busy`, and a writable block device is opened exclusively, so a
//! mounted or otherwise claimed device is refused.
//!
//! `--fail-after-writes N [--tear]` is the fault option of the crash tests: the N-th block
//! write of the command fails (with `--tear`, after its first half reached the device), as a
//! machine stopping there would leave it. `--hold-ms N` is for tests too: the converged cluster
//! stays N ms longer (in `status`, the module's one sync held) before the threads stop, and
//! `--write-delay-ms N` makes every block write wait N ms first: a slow device, so a test can
//! kill a sync in the middle of a commit; `--read-delay-ms N` does so for every on-demand
//! read of file data.

use core::cell::Cell;
use core::fmt::{Display, Write};
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::time::Duration;

use alloc::boxed::Box;
use alloc::vec::Vec;
use hammer2_synchro::cluster::Cluster;
use hammer2_synchro::host::{sleep, sleep_interruptible, Host, LogLevel};
use hammer2_synchro::mem::{try_box, try_push, TryArc};
use hammer2_synchro::mount::join::Join;
use hammer2_synchro::mount::payload::DevSource;
use hammer2_synchro::mount::{self, Mounted};
use hammer2_synchro::role::MAX_NODES;
use hammer2_synchro::store::{Layout, Store};
use hammer2_synchro::thread::Request;
use hammer2_synchro::volume::{BlockDev, Cause, ReadError, Volume};
use hammer2_synchro::{Error, Result};

use crate::block::HostDev;
use crate::host::KERNEL_HOST;
use crate::volclaim::{Claim, Writer};
use crate::volread::Reader;

/// The usage of `sync`.
pub const USAGE: &str = "sync [--timeout SECS] [--cache-mib N] [--hold-ms N] \
                         [--write-delay-ms N] [--read-delay-ms N] \
                         [--fail-after-writes N [--tear]] PATH@LABEL PATH@LABEL ...";

/// How long `sync` waits for convergence unless told otherwise.
const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// The longest `--timeout` (a day): far past any convergence, and far from overflowing.
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// The longest `--hold-ms`: a test's window, not a way to keep devices claimed.
const MAX_HOLD_MS: u64 = 60_000;

/// The longest `--write-delay-ms` and `--read-delay-ms`: a test's slow device, not a
/// stalled one.
const MAX_DELAY_MS: u64 = 1_000;

/// The most `--cache-mib` a volume's cache takes when not told (and the module's memory
/// leaves room for it: [`budget`]).
const DEFAULT_CACHE_MIB: usize = 64;

/// The largest `--cache-mib` (1 TiB): far past any module's memory, far from overflowing.
const MAX_CACHE_MIB: u64 = 1 << 20;

/// How often the idle threads poll.
const POLL: Duration = Duration::from_millis(50);

/// How often the command looks at the threads for convergence. Changed data past a store's
/// budget wake it at once (the stores' pinned alarm), and its sync passes hold past twice
/// the budget ([`Store::set_pinned_limit`]) until the commit that wake-up makes.
const WATCH: Duration = Duration::from_millis(10);

/// The write fault of one command: every block write counts down `left`; the one that finds
/// it at 1 fails (torn when `tear`). `left` 0: no fault. `writes` counts the block writes
/// tried: a whole sync's count is where the crash tests find its last write. `delay`: how
/// long each block write waits first (`--write-delay-ms`).
#[derive(Default)]
struct Fault {
    left: Cell<u64>,
    tear: bool,
    writes: Cell<u64>,
    delay: Duration,
}

impl Fault {
    /// Count a write; whether it is the one to fail.
    fn hit(&self) -> bool {
        self.writes.set(self.writes.get().saturating_add(1));
        match self.left.get() {
            0 => false,
            n => {
                self.left.set(n - 1);
                n == 1
            }
        }
    }
}

/// A device of the command: the host's, with the command's write fault and its cancel flag
/// (set by the caller when it must stop: every later read or write is `Interrupted`), and
/// the read-only handle its store reads file data through on demand.
struct Dev<'a> {
    dev: HostDev,
    fault: &'a Fault,
    cancel: &'a AtomicBool,
    reader: Reader,
}

impl Dev<'_> {
    /// `Interrupted` once the caller cancelled the command.
    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Acquire) {
            return Err(Error::Interrupted);
        }
        Ok(())
    }
}

impl BlockDev for Dev<'_> {
    fn size(&self) -> u64 {
        self.dev.size()
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.check_cancel()?;
        self.dev.read_at(off, buf)
    }
    fn write_at(&self, off: u64, buf: &[u8]) -> Result<()> {
        if !self.fault.delay.is_zero() {
            // A slow device's write: a kill meanwhile cuts the commit here, mid-way.
            sleep(&KERNEL_HOST, self.fault.delay);
        }
        self.check_cancel()?;
        if self.fault.hit() {
            if self.fault.tear {
                self.dev.write_at(off, &buf[..buf.len() / 2])?;
            }
            return Err(Error::Io);
        }
        self.dev.write_at(off, buf)
    }
    /// No cancel check: a commit flushes before and after its header write, and the header's
    /// `write_at` is its one cut point. A cancel seen by the flush after the header would
    /// report the commit cut although the volume already holds it.
    fn flush(&self) -> Result<()> {
        self.dev.flush()
    }
    fn yield_point(&self) {
        self.dev.yield_point()
    }
}

/// The command's words, parsed.
struct Args<'a> {
    timeout: Duration,
    /// `--cache-mib`, in MiB, if given.
    cache_mib: Option<usize>,
    hold: Duration,
    write_delay: Duration,
    read_delay: Duration,
    fail_after: u64,
    tear: bool,
    specs: heapless::Vec<(&'a str, &'a str, &'a str), MAX_NODES>,
}

fn parse<'a>(words: &[&'a str]) -> core::result::Result<Args<'a>, &'static str> {
    let mut a = Args {
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        cache_mib: None,
        hold: Duration::ZERO,
        write_delay: Duration::ZERO,
        read_delay: Duration::ZERO,
        fail_after: 0,
        tear: false,
        specs: heapless::Vec::new(),
    };
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let mut number = || -> core::result::Result<u64, &'static str> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .ok_or("an option's value is not a number > 0")
        };
        match *w {
            "--timeout" => {
                let secs = number()?;
                if secs > MAX_TIMEOUT_SECS {
                    return Err("--timeout is at most 86400 seconds");
                }
                a.timeout = Duration::from_secs(secs);
            }
            "--hold-ms" => {
                let ms = number()?;
                if ms > MAX_HOLD_MS {
                    return Err("--hold-ms is at most 60000");
                }
                a.hold = Duration::from_millis(ms);
            }
            "--cache-mib" => {
                let mib = number()?;
                if mib > MAX_CACHE_MIB {
                    return Err("--cache-mib is at most 1048576");
                }
                a.cache_mib = Some(usize::try_from(mib).map_err(|_| "--cache-mib is too large")?);
            }
            "--write-delay-ms" => {
                let ms = number()?;
                if ms > MAX_DELAY_MS {
                    return Err("--write-delay-ms is at most 1000");
                }
                a.write_delay = Duration::from_millis(ms);
            }
            "--read-delay-ms" => {
                let ms = number()?;
                if ms > MAX_DELAY_MS {
                    return Err("--read-delay-ms is at most 1000");
                }
                a.read_delay = Duration::from_millis(ms);
            }
            "--fail-after-writes" => a.fail_after = number()?,
            "--tear" => a.tear = true,
            o if o.starts_with('-') => return Err("unknown option"),
            spec => {
                let pl = spec
                    .rsplit_once('@')
                    .filter(|(p, l)| !p.is_empty() && !l.is_empty())
                    .ok_or("not PATH@LABEL")?;
                // By path: the kernel has no canonical path to compare, so two names of one
                // device (a symlink, /dev/vdc and its by-id link) are not caught here, as the
                // CLI catches them. A block device's second name is refused at its open (the
                // first one claimed it exclusively); an image file's second load sees the
                // first one's commit as a stale open and refuses it before writing.
                if a.specs.iter().any(|(_, p, _)| *p == pl.0) {
                    return Err("a device given twice: one PFS per volume");
                }
                a.specs
                    .push((spec, pl.0, pl.1))
                    .map_err(|_| "more than 8 PATH@LABEL")?;
            }
        }
    }
    if a.specs.is_empty() {
        return Err("no PATH@LABEL");
    }
    if a.tear && a.fail_after == 0 {
        return Err("--tear needs --fail-after-writes");
    }
    Ok(a)
}

/// The smallest cache budget: one DATA block of the largest size (64 KiB).
const MIN_CACHE: usize = 64 << 10;

/// The bytes of file data each of the `nodes` volumes' stores may cache, and hold changed
/// before a write-back commit: `mib` MiB if given, else [`DEFAULT_CACHE_MIB`]. `memory` is
/// what the module may allocate (0: not known, no bound). A store holds at most its budget
/// of clean data and, changed, usually about as much (a commit follows at once when it
/// passes the budget) and never more than twice as much and a block ([`arm`]): three
/// budgets. Every store's three budgets together take at most 3/8 of `memory` by default
/// (the rest is the chains' own); a given `mib` whose three budgets pass half of it is
/// refused (`None`).
fn budget(mib: Option<usize>, nodes: usize, memory: usize) -> Option<usize> {
    let held = |bytes: usize| bytes.saturating_mul(3).saturating_mul(nodes.max(1));
    match mib {
        Some(mib) => {
            let bytes = mib.checked_mul(1 << 20)?;
            (memory == 0 || held(bytes) <= memory / 2).then_some(bytes)
        }
        None if memory == 0 => Some(DEFAULT_CACHE_MIB << 20),
        None => {
            let share = memory / 8 * 3 / held(1);
            Some(share.clamp(MIN_CACHE, DEFAULT_CACHE_MIB << 20))
        }
    }
}

/// What the module may allocate: its pool and the large payloads it may take from the host
/// (`pool_kib` and `mem_max_kib`). 0 where the pool is not the allocator (a host build's
/// tests, whose heap is the process's).
fn module_memory() -> usize {
    if cfg!(target_os = "none") {
        crate::pool::POOL.usage().1
    } else {
        0
    }
}

/// One node: its name (`PATH@LABEL`), device, volume and what was loaded from it.
struct Node<'a> {
    spec: &'a str,
    dev: &'a Dev<'a>,
    vol: Box<Volume<&'a Dev<'a>>>,
    mounted: Mounted,
    /// Commits made (write-backs and the last): a commit makes `vol`'s header stale, so the
    /// next one reopens it first.
    commits: u32,
}

/// Write `error: sync: WHAT: WHY` and give `e`.
fn fail(out: &mut dyn Write, what: &dyn Display, why: &dyn Display, e: Error) -> Error {
    let _ = writeln!(out, "error: sync: {what}: {why}");
    e
}

/// Run `sync` with `words` (the words after `sync`), writing its report into `out`.
#[inline(never)]
pub fn run(words: &[&str], out: &mut dyn Write) -> Result<()> {
    let a = match parse(words) {
        Ok(a) => a,
        Err(why) => {
            return Err(fail(
                out,
                &"usage",
                &format_args!("{why}: {USAGE}"),
                Error::Invalid,
            ))
        }
    };
    let _claim = Claim::take(Writer::Sync).map_err(|holder| {
        let why = format_args!("another volume {holder} is running");
        fail(out, &"busy", &why, Error::Busy)
    })?;
    let Some(budget) = budget(a.cache_mib, a.specs.len(), module_memory()) else {
        let why = format_args!(
            "--cache-mib {}: three times that per volume (clean data, and changed data up \
             to twice that) passes half of the module's memory ({} MiB: pool_kib and mem_max_kib)",
            a.cache_mib.unwrap_or(0),
            module_memory() >> 20
        );
        return Err(fail(out, &"usage", &why, Error::Invalid));
    };
    let fault = Fault {
        left: Cell::new(a.fail_after),
        tear: a.tear,
        writes: Cell::new(0),
        delay: a.write_delay,
    };
    // Shared with the payload sources, which the stores own ('static).
    let cancel = TryArc::new(AtomicBool::new(false)).map_err(|e| fail(out, &"memory", &e, e))?;
    let mut names: heapless::Vec<&str, MAX_NODES> = heapless::Vec::new();
    for (spec, _, _) in &a.specs {
        let _ = names.push(spec);
    }
    // Declared before the nodes that borrow them: closed last, by the caller.
    let devs = open_all(&a, &fault, &cancel, out)?;
    // Moved and woken by every store whose changed data pass the budget ('static: the
    // stores' alarms own a handle).
    let alarm = TryArc::new(AtomicU32::new(0)).map_err(|e| fail(out, &"memory", &e, e))?;
    let mut loaded = None;
    on_own_thread("load", &cancel, out, &mut |out| {
        loaded = Some(load_all(&a, &devs, &names, budget, &alarm, out)?);
        Ok(())
    })?;
    let (mut nodes, stores, join) = loaded.ok_or(Error::Invalid)?;
    let cluster = Cluster::from_stores(&KERNEL_HOST, join.roles(), stores, Layout::Index)
        .map_err(|e| fail(out, &"cluster", &e, e))?;
    cluster.set_thread_idle_poll(POLL);
    let mut conv = Converge {
        cluster: cluster.as_ref(),
        nodes: &mut nodes,
        names: &names,
        cancel: &cancel,
        budget,
        alarm: &alarm,
    };
    let ran = conv
        .converge(a.timeout, out)
        .and_then(|()| hold(a.hold, conv.written(), out));
    if matches!(ran, Err(Error::Interrupted)) {
        // The threads' reads in flight fail at once rather than run on for a killed caller.
        cancel.store(true, Ordering::Release);
    }
    // Every thread stopped, each request returning once its thread acknowledged it.
    for (i, name) in names.iter().enumerate() {
        if let Err(e) = cluster.thread_request(i, Request::Stop) {
            let _ = writeln!(out, "sync: {name}: stop: {e}");
        }
    }
    ran?;
    on_own_thread("commit", &cancel, out, &mut |out| {
        commit_all(&cluster, &mut nodes, &fault, out)
    })
}

/// Open every device of `a` read-write, in the caller's context: its root, working directory
/// and credentials resolve the paths, not those of the job's kernel thread. The caller keeps
/// them to the end of the command and closes them itself: a kernel thread's close is finished
/// later, by a work item (Linux's delayed fput), and a block device's exclusive claim would
/// outlive the command for a moment, refusing the next one's open.
#[inline(never)]
fn open_all<'a>(
    a: &Args<'_>,
    fault: &'a Fault,
    cancel: &'a TryArc<AtomicBool>,
    out: &mut dyn Write,
) -> Result<heapless::Vec<Dev<'a>, MAX_NODES>> {
    let mut devs = heapless::Vec::new();
    for &(_, path, _) in &a.specs {
        let p = path.as_bytes();
        let dev = HostDev::open(p, true).map_err(|e| fail(out, &path, &e, e.error()))?;
        let reader = Reader::open(p, cancel.clone(), a.read_delay)
            .map_err(|e| fail(out, &path, &format_args!("read-only open: {e}"), e.error()))?;
        // Cannot fail: `parse` keeps at most MAX_NODES specs.
        devs.push(Dev {
            dev,
            fault,
            cancel,
            reader,
        })
        .map_err(|_| Error::Invalid)?;
    }
    Ok(devs)
}

/// How long the caller of [`on_own_thread`] sleeps between two looks at its own `should_stop`.
const JOIN_SLICE: Duration = Duration::from_millis(20);

/// Run `job` on a kernel thread of its own and wait for it to end. A load and a commit walk a
/// PFS's tree and read or write at the bottom of it (under which the kernel's page cache,
/// write-back and block layer run): on a fresh stack they have the whole of it, rather than
/// what the debugfs read and this command's frames leave. The job sees no signal of the
/// caller: the caller waits in bounded word sleeps (not an uninterruptible join, which a long
/// commit would hold past the hung-task detector's limit), and once it must stop it sets
/// `cancel`, which the job's devices turn into `Interrupted` at their next read or write (a
/// commit cut before its header keeps the last one; one whose header is written is committed
/// and reported so); it then waits for the job to end, which is soon.
#[inline(never)]
fn on_own_thread(
    what: &str,
    cancel: &AtomicBool,
    out: &mut dyn Write,
    job: &mut (dyn FnMut(&mut dyn Write) -> Result<()> + '_),
) -> Result<()> {
    let host: &dyn Host = &KERNEL_HOST;
    // A caller killed already: its spawn would fail anyway (Linux's kthread_create gives
    // EINTR to a killed caller), or start a job only to cancel it.
    if host.should_stop() {
        return Err(thread_failed(out, Error::Interrupted));
    }
    let mut result = Err(Error::Invalid);
    let done = AtomicU32::new(0);
    let mut call = || {
        let _done = Done { word: &done, host };
        result = job(&mut *out);
    };
    let call: *mut (dyn FnMut() + '_) = &mut call;
    // SAFETY: only the lifetime is erased: `call` (and all it borrows: `result`, `done`, the
    // job, `out`) outlives the thread, which is joined below before this frame ends, on every
    // path past the spawn; nothing else touches `result`, `out` or the job meanwhile: this
    // thread only reads `done` (atomic) and stores to `cancel` (atomic) until the join, whose
    // completion orders the job's writes before our read of `result`. When the spawn fails,
    // the job never ran and `out` is ours again.
    let call: *mut (dyn FnMut() + 'static) = unsafe { core::mem::transmute(call) };
    let ptr = JobPtr(call);
    let entry = try_box(move || {
        let ptr = ptr;
        // SAFETY: see above: the job is alive and ours alone until the join.
        unsafe { (*ptr.0)() }
    })
    .map_err(|e| thread_failed(out, e))?;
    let th = host
        .spawn("h2s-volsync", entry)
        .map_err(|e| thread_failed(out, e))?;
    let mut cancelled_at = None;
    let mut warned = false;
    while done.load(Ordering::Acquire) == 0 {
        let now = host.now_ns();
        match cancelled_at {
            None if host.should_stop() => {
                cancel.store(true, Ordering::Release);
                cancelled_at = Some(now);
            }
            Some(t) if !warned && now.saturating_sub(t) >= STUCK_WARN_NS => {
                // A job cut at its next block I/O that completes: one that does not is stuck
                // in the device, and the killed caller with it; say which.
                warned = true;
                host.log(
                    LogLevel::Warn,
                    format_args!(
                        "volume sync: the {what} thread still runs {} s after its caller was \
                         killed (waiting for its block I/O)",
                        STUCK_WARN_NS / 1_000_000_000
                    ),
                );
            }
            _ => {}
        }
        host.sleep_on_word(&done, 0, Some(JOIN_SLICE));
    }
    host.join(th);
    result
}

/// How long a cancelled job may still run before the host log names it (once).
const STUCK_WARN_NS: u64 = 10_000_000_000;

/// Write `error: sync: thread: WHY; nothing committed` for a job that never ran, and give `e`.
fn thread_failed(out: &mut dyn Write, e: Error) -> Error {
    fail(out, &"thread", &format_args!("{e}; nothing committed"), e)
}

/// Sets a job's `done` word and wakes its caller when dropped: also when the job unwinds, so
/// the caller never waits for a job that ended without a result.
struct Done<'a> {
    word: &'a AtomicU32,
    host: &'a dyn Host,
}

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.word.store(1, Ordering::Release);
        self.host.wake_word(self.word);
    }
}

/// The job of [`on_own_thread`], handed to its thread.
struct JobPtr(*mut (dyn FnMut() + 'static));

// SAFETY: the job runs on one thread only: the caller of `on_own_thread` touches nothing of it
// (only the atomics `done` and `cancel`) until the join.
unsafe impl Send for JobPtr {}

/// Load every node of `a` from its device in `devs` and join them into one cluster's nodes.
#[inline(never)]
fn load_all<'a>(
    a: &Args<'a>,
    devs: &'a [Dev<'a>],
    names: &[&'a str],
    budget: usize,
    alarm: &TryArc<AtomicU32>,
    out: &mut dyn Write,
) -> Result<(Vec<Node<'a>>, Vec<Store>, Join)> {
    let mut nodes: Vec<Node<'_>> = Vec::new();
    let mut stores: Vec<Store> = Vec::new();
    let mut join = Join::new();
    for (&(spec, path, label), dev) in a.specs.iter().zip(devs) {
        let mut node = load(dev, path, label, spec, budget, out)?;
        arm(&mut node.1, alarm, budget).map_err(|e| fail(out, &spec, &"memory", e))?;
        let role = join
            .add(&node.1)
            .map_err(|e| fail(out, &"cluster", &e.named(names), Error::Invalid))?;
        let _ = writeln!(
            out,
            "sync: loaded {spec} as {}: {} chains, root tid {:#x}",
            role.name(),
            node.1.chain_count(),
            node.0.mounted.pfs_bref.modify_tid
        );
        try_push(&mut nodes, node.0)?;
        try_push(&mut stores, node.1)?;
    }
    reconcile(&join, &stores, names, out)?;
    Ok((nodes, stores, join))
}

/// [`Join::reconcile`] with its notes and refusal written to `out`; out of line, so its
/// walks' frames are not under every device read of the loads.
#[inline(never)]
fn reconcile(join: &Join, stores: &[Store], names: &[&str], out: &mut dyn Write) -> Result<()> {
    join.reconcile(stores, &mut |i, j, n| {
        let _ = writeln!(
            out,
            "sync: {}: {n} chains differ from {} under the same TID: taken from the masters",
            names[i], names[j]
        );
    })
    .map_err(|e| fail(out, &"cluster", &e.named(names), Error::Invalid))
}

/// Commit every node whose tree changed, once every thread has stopped, and report what
/// each node's data cache did.
#[inline(never)]
fn commit_all(
    cluster: &Cluster,
    nodes: &mut [Node<'_>],
    fault: &Fault,
    out: &mut dyn Write,
) -> Result<()> {
    commit_changed(cluster, nodes, true, out)?;
    for (i, n) in nodes.iter().enumerate() {
        if let Some(st) = cluster.store(i)?.cache_stats() {
            let _ = writeln!(
                out,
                "sync: {}: data cache: budget {} KiB, peak {} KiB, {} blocks / {} KiB read on \
                 demand, {} evictions, changed data held at most {} KiB",
                n.spec,
                st.budget / 1024,
                st.peak / 1024,
                st.reads,
                st.read_bytes / 1024,
                st.evictions,
                st.pinned_peak / 1024
            );
        }
    }
    let written = nodes.iter().filter(|n| n.commits > 0).count();
    let _ = writeln!(out, "sync: {} block writes", fault.writes.get());
    let _ = writeln!(
        out,
        "sync: done: {written} of {} volumes written",
        nodes.len()
    );
    Ok(())
}

/// Commit every node whose tree changed since its volume's last commit; the first failure
/// ends it (that volume keeps its last commit). `last`: the end of the sync, where every
/// node never written is named so.
fn commit_changed(
    cluster: &Cluster,
    nodes: &mut [Node<'_>],
    last: bool,
    out: &mut dyn Write,
) -> Result<()> {
    for (i, n) in nodes.iter_mut().enumerate() {
        let store = cluster.store(i)?;
        if !n.mounted.changed(store)? {
            if last && n.commits == 0 {
                let _ = writeln!(out, "sync: {}: unchanged, not written", n.spec);
            }
            continue;
        }
        if n.commits > 0 {
            n.vol = open_volume(n.dev).map_err(|e| {
                let why = format_args!("reopen after its commit: {e}");
                fail(out, &n.spec, &why, e.into())
            })?;
        }
        let tid = commit(&n.vol, store, &mut n.mounted).map_err(|e| {
            let why = format_args!("commit: {e} (the volume keeps its last commit)");
            fail(out, &n.spec, &why, e)
        })?;
        n.commits = n.commits.saturating_add(1);
        let _ = writeln!(out, "sync: {}: committed, mirror_tid {tid:#x}", n.spec);
    }
    Ok(())
}

/// Make `store` bump and wake `alarm` when its changed data pass `budget`, and hold its
/// sync passes past twice that until a commit: the command's waiter commits at once, and a
/// thread adds at most one chain's payload past the limit (whatever the waiter's delay).
/// The alarm runs in whichever thread changed the store, under its spin lock: it only
/// stores and wakes (`wake_word` neither sleeps nor allocates).
fn arm(store: &mut Store, alarm: &TryArc<AtomicU32>, budget: usize) -> Result<()> {
    let word = alarm.clone();
    store.set_pinned_alarm(try_box(move || {
        word.fetch_add(1, Ordering::Release);
        KERNEL_HOST.wake_word(&word);
    })?);
    store.set_pinned_limit(budget.saturating_mul(2));
    Ok(())
}

/// Open the volume on `dev` (the device `path`) and load PFS `label` of it.
#[inline(never)]
fn load<'a>(
    dev: &'a Dev<'a>,
    path: &str,
    label: &str,
    spec: &'a str,
    budget: usize,
    out: &mut dyn Write,
) -> Result<(Node<'a>, Store)> {
    let vol = open_volume(dev).map_err(|e| fail(out, &path, &e, e.into()))?;
    let (store, mounted) = load_pfs(&vol, dev, label, budget)
        .map_err(|e| fail(out, &spec, &format_args!("load: {e}"), e))?;
    let node = Node {
        spec,
        dev,
        vol,
        mounted,
        commits: 0,
    };
    Ok((node, store))
}

/// The volume on `dev`, on the heap: kernel stacks are small, and the load and the commit
/// walk the tree below the frames that hold it.
#[inline(never)]
fn open_volume<'a>(dev: &'a Dev<'a>) -> core::result::Result<Box<Volume<&'a Dev<'a>>>, ReadError> {
    let vol = Volume::open(dev)?;
    try_box(vol).map_err(|_| ReadError::new(Cause::NoMem, 0))
}

/// [`mount::load_bounded`] in a frame of its own: file data stay on the volume, read on
/// demand through `dev`'s read-only handle, at most `budget` bytes of them cached, and the
/// chains in memory kept near a quarter of that ([`Store::set_chain_budget`]).
#[inline(never)]
fn load_pfs(
    vol: &Volume<&Dev<'_>>,
    dev: &Dev<'_>,
    label: &str,
    budget: usize,
) -> Result<(Store, Mounted)> {
    let source = try_box(DevSource::new(dev.reader.clone(), vol.header()))?;
    mount::load_bounded(
        &KERNEL_HOST,
        vol,
        label.as_bytes(),
        source,
        (budget, budget / 4),
        &mut |_| {},
    )
}

/// [`mount::commit`] in a frame of its own: the mirror_tid committed.
#[inline(never)]
fn commit(vol: &Volume<&Dev<'_>>, store: &Store, m: &mut Mounted) -> Result<u64> {
    mount::commit(vol, store, m).map(|h| h.mirror_tid)
}

/// The converging cluster and what a write-back commit needs.
struct Converge<'c, 'a> {
    cluster: Pin<&'c Cluster>,
    nodes: &'c mut [Node<'a>],
    names: &'c [&'a str],
    cancel: &'c AtomicBool,
    /// Each store's data cache budget: a store holding more changed data is written back.
    budget: usize,
    /// Moved by a store whose changed data passed the budget ([`arm`]).
    alarm: &'c AtomicU32,
}

impl Converge<'_, '_> {
    /// Start every node's thread and wait until every node agrees with the focus: `Ok` then,
    /// `TimedOut` past `timeout`, `Interrupted` when the host says the caller must stop.
    /// Meanwhile a store holding more changed data than its budget has every changed node
    /// committed ([`Self::write_back`]).
    #[inline(never)]
    fn converge(&mut self, timeout: Duration, out: &mut dyn Write) -> Result<()> {
        let cluster = self.cluster;
        for (i, name) in self.names.iter().enumerate() {
            cluster
                .thread_start(i)
                .map_err(|e| fail(out, name, &format_args!("thread: {e}"), e))?;
        }
        let host: &dyn Host = &KERNEL_HOST;
        let t0 = host.now_ns();
        loop {
            // Read before the stores are looked at: an alarm after it ends the sleep below.
            let seen = self.alarm.load(Ordering::Acquire);
            let behind = (0..cluster.len()).filter(|&i| !cluster.in_sync(i)).count();
            let ms = host.now_ns().saturating_sub(t0) / 1_000_000;
            if behind == 0 {
                let _ = writeln!(out, "sync: converged in {ms} ms");
                return Ok(());
            }
            if ms > timeout.as_millis() as u64 {
                let why = format_args!(
                    "not converged after {} s ({behind} nodes behind); nothing more committed",
                    timeout.as_secs()
                );
                return Err(fail(out, &"cluster", &why, Error::TimedOut));
            }
            if self.over_budget() || self.chains_over() {
                self.write_back(out)?;
            }
            if host.should_stop() {
                return Err(interrupted(self.written(), out));
            }
            host.sleep_on_word(self.alarm, seen, Some(WATCH));
        }
    }

    /// Whether a write-back committed a volume.
    fn written(&self) -> bool {
        self.nodes.iter().any(|n| n.commits > 0)
    }

    /// Whether some store holds more changed (pinned, uncommitted) data than the budget.
    fn over_budget(&self) -> bool {
        (0..self.cluster.len()).any(|i| {
            self.cluster
                .store(i)
                .ok()
                .and_then(Store::cache_stats)
                .is_some_and(|st| st.pinned > self.budget)
        })
    }

    /// Whether some store holds more chains in memory than its chain budget.
    fn chains_over(&self) -> bool {
        (0..self.cluster.len()).any(|i| self.cluster.store(i).is_ok_and(Store::chains_over))
    }

    /// Commit every changed node with every thread frozen (a pass must not change a tree
    /// while it is written out), on a thread of its own as the last commit, and let the
    /// clean chains of a store past its chain budget leave memory (no thread may hold a
    /// chain's id meanwhile: one read back gets a new one); then let the threads go on: a commit releases the changed data it wrote, so a volume larger than
    /// the module's memory syncs. A failed commit ends the sync (the threads are stopped
    /// by the caller); the volumes committed before keep what they were given.
    #[inline(never)]
    fn write_back(&mut self, out: &mut dyn Write) -> Result<()> {
        let cluster = self.cluster;
        let what = match self.over_budget() {
            true => "sync: changed data past the cache budget: committing every changed volume",
            false => "sync: chains past the cache budget: letting clean ones leave memory",
        };
        let _ = writeln!(out, "{what}");
        let mut frozen = 0;
        let mut r = Ok(());
        for (i, name) in self.names.iter().enumerate() {
            if let Err(e) = cluster.thread_request(i, Request::Freeze) {
                r = Err(fail(out, name, &format_args!("freeze: {e}"), e));
                break;
            }
            frozen += 1;
        }
        if r.is_ok() {
            let nodes = &mut *self.nodes;
            r = on_own_thread("commit", self.cancel, out, &mut |out| {
                commit_changed(&cluster, nodes, false, out)?;
                evict_all(&cluster, out);
                Ok(())
            });
        }
        for (i, name) in self.names.iter().enumerate().take(frozen) {
            if let Err(e) = cluster.thread_request(i, Request::Unfreeze) {
                let _ = writeln!(out, "sync: {name}: unfreeze: {e}");
            }
        }
        r
    }
}

/// Let the clean chains of every store past its chain budget leave memory, down to half of
/// it (every thread frozen). A store with changes its commit could not write keeps them.
fn evict_all(cluster: &Cluster, out: &mut dyn Write) {
    for i in 0..cluster.len() {
        let Ok(store) = cluster.store(i) else {
            continue;
        };
        if !store.chains_over() {
            continue;
        }
        match store.evict_to(store.chain_budget() / 2) {
            Ok(_) | Err(Error::Busy) => {}
            Err(e) => {
                let _ = writeln!(out, "sync: node {i}: chains could not leave memory: {e}");
            }
        }
    }
}

/// Keep the converged cluster running for `d` (`--hold-ms`): `Interrupted` when the host says
/// the caller must stop meanwhile (`written`: whether a write-back committed a volume).
fn hold(d: Duration, written: bool, out: &mut dyn Write) -> Result<()> {
    if d.is_zero() {
        return Ok(());
    }
    sleep_interruptible(&KERNEL_HOST, d).map_err(|_| interrupted(written, out))?;
    let _ = writeln!(out, "sync: held {} ms", d.as_millis());
    Ok(())
}

/// The error of a `sync` stopped before its last commit; `written`: whether a write-back
/// committed a volume before.
fn interrupted(written: bool, out: &mut dyn Write) -> Error {
    let why = match written {
        true => "interrupted; nothing more committed",
        false => "interrupted; nothing committed",
    };
    fail(out, &"cluster", &why, Error::Interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testhost::{
        newfs_image, volume_cmd, ResetKnobs, BLOCK_CLOSED_ELSEWHERE, BLOCK_OPEN, BLOCK_SERIAL,
        SLOW_SLEEP_MS, STOPPED, STOP_HERE, VOLSYNC_SPAWN_ERRNO, WRITE_HOOK,
    };
    use hammer2_synchro::cluster::FrontendOp;
    use hammer2_synchro::media::{PFSTYPE_MASTER, PFSTYPE_SLAVE};
    use hammer2_synchro::role::{NodeSet, Role};
    use hammer2_synchro::volume::NewPfs;
    use std::string::String;
    use std::sync::atomic::Ordering;

    const CLID: [u8; 16] = [7; 16];

    /// A 48 MiB volume with PFS `DATA` of `pfs_type` in cluster `clid`.
    fn volume(name: &str, pfs_type: u8, clid: [u8; 16]) -> String {
        let p = std::env::temp_dir().join(format!("h2s-ksync-{}-{name}", std::process::id()));
        let list = [NewPfs {
            label: b"DATA",
            pfs_type,
            clid,
            fsid: [name.len() as u8; 16],
            nmasters: 1,
        }];
        newfs_image(&p, &list)
    }

    /// Remove the images; no device may be left open.
    fn remove(imgs: &[&str]) {
        for img in imgs {
            std::fs::remove_file(img).unwrap();
        }
        assert_eq!(BLOCK_OPEN.load(Ordering::SeqCst), 0, "a device left open");
        assert_eq!(
            BLOCK_CLOSED_ELSEWHERE.load(Ordering::SeqCst),
            0,
            "a device closed on the job's thread"
        );
    }

    /// Files written into PFS `DATA` of `path` and committed.
    fn fill(path: &str) {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        apply_and_commit(
            path,
            [
                FrontendOp::Mkdir(b"/d"),
                FrontendOp::Write(b"/d/big", &big),
                FrontendOp::Write(b"/small", b"hello"),
            ],
        );
    }

    /// `ops` applied to PFS `DATA` of `path` and committed.
    fn apply_and_commit<'a>(path: &str, ops: impl IntoIterator<Item = FrontendOp<'a>>) {
        let dev = HostDev::open(path.as_bytes(), true).unwrap();
        let vol = Volume::open(&dev).unwrap();
        let (store, mut m) = mount::load(&KERNEL_HOST, &vol, b"DATA").unwrap();
        let c = Cluster::from_stores(&KERNEL_HOST, &[Role::Master], vec![store], Layout::Index)
            .unwrap();
        for op in ops {
            c.apply(NodeSet(1), op).unwrap();
        }
        mount::commit(&vol, c.store(0).unwrap(), &mut m).unwrap();
    }

    fn vol(cmd: &str) -> (i32, String) {
        volume_cmd(cmd, 1 << 16)
    }

    /// Bytes of the file [`fill_big`] writes: 8 MiB, many times the 1 MiB of the smallest
    /// `--cache-mib`.
    const BIG: usize = 8 << 20;

    /// The bytes of [`fill_big`]'s file: no two 64 KiB blocks alike.
    fn big_bytes() -> Vec<u8> {
        (0..BIG as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// File `/big` of [`BIG`] bytes written into PFS `DATA` of `path` and committed.
    fn fill_big(path: &str) {
        apply_and_commit(path, [FrontendOp::Write(b"/big", &big_bytes())]);
    }

    /// File `path` of PFS `DATA` of `img`, read back through a fresh load.
    fn file_of(img: &str, path: &[u8]) -> Vec<u8> {
        let dev = HostDev::open(img.as_bytes(), false).unwrap();
        let vol = Volume::open(&dev).unwrap();
        let (store, _) = mount::load(&KERNEL_HOST, &vol, b"DATA").unwrap();
        let c =
            Cluster::from_stores(&KERNEL_HOST, &[Role::Slave], vec![store], Layout::Index).unwrap();
        c.read_file(0, path).unwrap()
    }

    /// The numbers of `img`'s data cache line in `text`: (budget, peak, blocks read,
    /// evictions, changed data held at most), in KiB but for the counts.
    fn cache_line(text: &str, img: &str) -> [u64; 5] {
        let head = format!("sync: {img}@DATA: data cache: budget ");
        let line = text.lines().find(|l| l.starts_with(&head)).expect(text);
        let nums: Vec<u64> = line[head.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(|w| w.parse().unwrap())
            .collect();
        // budget, peak, blocks, KiB read, evictions, changed
        [nums[0], nums[1], nums[2], nums[4], nums[5]]
    }

    fn assert_clean(img: &str) {
        let (rc, text) = vol(&format!("fsck {img}"));
        assert!(
            rc == 0 && text.ends_with(&format!("{img}: clean\n")),
            "{text}"
        );
    }

    /// The listing of `/` and `/d` of PFS DATA of `img` (what a synced slave must show).
    fn tree(img: &str) -> String {
        let a = vol(&format!("ls {img}@DATA /")).1;
        a + &vol(&format!("ls {img}@DATA /d")).1
    }

    /// A sync cut at its `n`-th write ended with `got` (its rc and text): `want` (the rc, and
    /// the failure the text ends with), and slave `s` still lists `old`.
    fn assert_cut(s: &str, got: (i32, &str), want: (i32, &str), old: &str, n: u64) {
        let (rc, text) = got;
        assert_eq!(rc, want.0, "{n}: {text}");
        let end = format!("{} (the volume keeps its last commit)\n", want.1);
        assert!(text.ends_with(&end), "{n}: {text}");
        assert_eq!(tree(s), old, "{n}: a cut commit changed the tree");
    }

    /// Slave `s` is fsck-clean, a new sync from master `m` brings it the master's tree,
    /// fsck-clean; then it is removed.
    fn assert_resyncs(m: &str, s: String, n: u64) {
        assert_clean(&s);
        let (rc, text) = vol(&format!("sync {m}@DATA {s}@DATA"));
        assert_eq!(rc, 0, "{n}: {text}");
        assert_eq!(tree(&s), tree(m), "{n}");
        assert_clean(&s);
        std::fs::remove_file(s).unwrap();
    }

    /// The listing of an empty slave `name`'s PFS DATA (what a cut sync must leave in it).
    fn empty_tree(name: &str) -> String {
        let s = volume(name, PFSTYPE_SLAVE, CLID);
        let t = tree(&s);
        std::fs::remove_file(s).unwrap();
        t
    }

    #[test]
    fn sync_brings_the_slaves_to_the_master_and_a_second_sync_writes_nothing() {
        let _g = BLOCK_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (m, s1, s2) = (
            volume("m", PFSTYPE_MASTER, CLID),
            volume("s1", PFSTYPE_SLAVE, CLID),
            volume("s2", PFSTYPE_SLAVE, CLID),
        );
        fill(&m);
        assert!(tree(&m).contains("big"), "{}", tree(&m));
        assert_ne!(tree(&s1), tree(&m));
        let (rc, text) = vol(&format!("sync --timeout 60 {m}@DATA {s1}@DATA {s2}@DATA"));
        assert_eq!(rc, 0, "{text}");
        assert!(text.contains("sync: converged in "), "{text}");
        assert!(
            text.contains(&format!("sync: {m}@DATA: unchanged, not written")),
            "{text}"
        );
        assert!(
            text.ends_with("sync: done: 2 of 3 volumes written\n"),
            "{text}"
        );
        for img in [&m, &s1, &s2] {
            assert_clean(img);
            assert_eq!(tree(img), tree(&m), "{img}");
        }
        let (rc, text) = vol(&format!("sync {m}@DATA {s1}@DATA {s2}@DATA"));
        assert_eq!(rc, 0, "{text}");
        assert!(
            text.ends_with("sync: done: 0 of 3 volumes written\n"),
            "{text}"
        );
        remove(&[&m, &s1, &s2]);
    }

    #[test]
    fn bad_input_is_an_error_line_and_writes_nothing() {
        let _g = BLOCK_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (m, s, other) = (
            volume("bm", PFSTYPE_MASTER, CLID),
            volume("bs", PFSTYPE_SLAVE, CLID),
            volume("bo", PFSTYPE_SLAVE, [9; 16]),
        );
        fill(&m);
        let before = std::fs::read(&s).unwrap();
        let clid = format!(
            "error: sync: cluster: {other}@DATA: cluster id 09090909-0909-0909-0909-090909090909 \
             differs from {m}@DATA's 07070707-0707-0707-0707-070707070707: not one cluster \
             (make the nodes with one newfs --clid)\n"
        );
        let cases = [
            (format!("sync {m}@DATA {other}@DATA"), -22, clid.as_str()),
            (
                format!("sync {s}@DATA"),
                -22,
                "error: sync: cluster: no master among the PFSs: nothing to sync from\n",
            ),
            (
                format!("sync {m}@DATA {s}@NOPE"),
                -2,
                "@NOPE: load: not found\n",
            ),
            (
                format!("sync {m}@DATA /nonexistent@DATA"),
                -2,
                "error: sync: /nonexistent: no such file or directory (errno 2)\n",
            ),
            (
                format!("sync {m}@DATA {m}@DATA"),
                -22,
                "error: sync: usage: a device given twice",
            ),
            (
                format!("sync {m}"),
                -22,
                "error: sync: usage: not PATH@LABEL",
            ),
            ("sync".into(), -22, "error: sync: usage: no PATH@LABEL"),
            (
                format!("sync --tear {m}@DATA"),
                -22,
                "error: sync: usage: --tear needs",
            ),
            (
                format!("sync --timeout 0 {m}@DATA"),
                -22,
                "error: sync: usage: an option",
            ),
            (
                format!("sync --timeout 86401 {m}@DATA"),
                -22,
                "error: sync: usage: --timeout is at most 86400 seconds",
            ),
            (
                format!("sync --timeout 18446744073709551615 {m}@DATA"),
                -22,
                "error: sync: usage: --timeout is at most",
            ),
            (
                format!("sync --hold-ms 60001 {m}@DATA"),
                -22,
                "error: sync: usage: --hold-ms is at most 60000",
            ),
            (
                format!("sync --cache-mib 0 {m}@DATA"),
                -22,
                "error: sync: usage: an option's value is not a number > 0",
            ),
            (
                format!("sync --cache-mib 2M {m}@DATA"),
                -22,
                "error: sync: usage: an option's value is not a number > 0",
            ),
            (
                format!("sync --cache-mib 1048577 {m}@DATA"),
                -22,
                "error: sync: usage: --cache-mib is at most 1048576",
            ),
            (
                format!("sync --read-delay-ms 1001 {m}@DATA"),
                -22,
                "error: sync: usage: --read-delay-ms is at most 1000",
            ),
            (
                format!("sync --bogus {m}@DATA"),
                -22,
                "error: sync: usage: unknown option",
            ),
            (
                format!("sync {}", "a@b ".repeat(17)),
                -22,
                "error: sync: usage: too many words",
            ),
        ];
        for (cmd, want_rc, want) in &cases {
            let (rc, text) = vol(cmd);
            assert_eq!(rc, *want_rc, "{cmd}: {text}");
            assert!(
                text.ends_with(want) || text.starts_with(want),
                "{cmd}: {text}"
            );
            assert!(!text.contains("committed"), "{cmd}: {text}");
        }
        assert!(
            std::fs::read(&s).unwrap() == before,
            "a refused sync wrote the slave"
        );
        remove(&[&m, &s, &other]);
    }

    #[test]
    fn a_sync_cut_at_a_write_leaves_the_old_tree_or_the_new_and_a_new_sync_completes() {
        let _g = BLOCK_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let m = volume("cm", PFSTYPE_MASTER, CLID);
        fill(&m);
        let empty = empty_tree("cs");
        // The writes of a whole sync into an empty slave: the last one is the header's (not
        // torn here: a 48 MiB volume has one header copy; the QEMU suite tears it on two).
        let w = writes_of_a_sync(&m, "cs");
        assert!(w > 9, "{w} block writes");
        let cuts = [
            (1, false),
            (2, true),
            (5, false),
            (w - 1, true),
            (w, false),
            (w + 1, false),
        ];
        for (n, tear) in cuts {
            let s = volume("cs", PFSTYPE_SLAVE, CLID);
            let flag = if tear { " --tear" } else { "" };
            let (rc, text) = vol(&format!(
                "sync --fail-after-writes {n}{flag} {m}@DATA {s}@DATA"
            ));
            // Every write up to the header's cuts the commit; past it, nothing fails.
            if n > w {
                assert_eq!(rc, 0, "{n}: {text}");
                assert!(text.contains("1 of 2 volumes written"), "{n}: {text}");
                assert_eq!(tree(&s), tree(&m), "{n}");
            } else {
                assert_cut(&s, (rc, &text), (-5, "i/o error"), &empty, n);
            }
            assert_resyncs(&m, s, n);
        }
        std::fs::remove_file(m).unwrap();
    }

    #[test]
    fn a_second_sync_while_one_runs_is_busy_at_once() {
        let _g = BLOCK_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let empty = empty_tree("us2");
        let (m, s1, s2) = (
            volume("um", PFSTYPE_MASTER, CLID),
            volume("us1", PFSTYPE_SLAVE, CLID),
            volume("us2", PFSTYPE_SLAVE, CLID),
        );
        fill(&m);
        let _reset = ResetKnobs;
        // The first sync's first write waits until the second sync has been refused; its
        // later writes go straight on.
        let (committing, refused) = (
            std::sync::mpsc::channel::<()>(),
            std::sync::mpsc::channel::<()>(),
        );
        let mut first_write = Some((committing.0, refused.1));
        *WRITE_HOOK.lock().unwrap() = Some(Box::new(move || {
            if let Some((tell, wait)) = first_write.take() {
                let _ = tell.send(());
                let _ = wait.recv_timeout(std::time::Duration::from_secs(10));
            }
        }));
        let first = format!("sync {m}@DATA {s1}@DATA");
        let t = std::thread::spawn(move || vol(&first));
        committing.1.recv().unwrap();
        let (rc, text) = vol(&format!("sync {m}@DATA {s1}@DATA {s2}@DATA"));
        refused.0.send(()).unwrap();
        let (rc1, text1) = t.join().unwrap();
        assert_eq!(
            (rc, text.as_str()),
            (-16, "error: sync: busy: another volume sync is running\n")
        );
        assert_eq!(rc1, 0, "{text1}");
        assert!(text1.ends_with("1 of 2 volumes written\n"), "{text1}");
        for img in [&m, &s1, &s2] {
            assert_clean(img);
        }
        assert_eq!(tree(&s1), tree(&m));
        assert_eq!(tree(&s2), empty, "the refused sync wrote");
        // The lock is released: a sync runs again.
        let (rc, text) = vol(&format!("sync {m}@DATA {s2}@DATA"));
        assert_eq!(rc, 0, "{text}");
        remove(&[&m, &s1, &s2]);
    }

    /// Run `cmd` on a thread of its own whose `n`-th block write (on the job's thread) kills
    /// that thread, as a kill of the reader would, and then takes its time: the caller must
    /// notice and cancel the rest. The write itself completes.
    fn run_killed_at_write(cmd: String, n: u64) -> (i32, String) {
        let t = std::thread::spawn(move || {
            let _reset = ResetKnobs;
            let caller = std::thread::current().id();
            let mut left = n;
            *WRITE_HOOK.lock().unwrap() = Some(Box::new(move || {
                left = left.saturating_sub(1);
                if left == 0 && STOPPED.lock().unwrap().replace(caller).is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
            }));
            vol(&cmd)
        });
        t.join().unwrap()
    }

    /// The block writes of a whole sync from master `m` into an empty slave `name`: the last
    /// one is the header's.
    fn writes_of_a_sync(m: &str, name: &str) -> u64 {
        let s = volume(name, PFSTYPE_SLAVE, CLID);
        let (rc, text) = vol(&format!("sync {m}@DATA {s}@DATA"));
        assert_eq!(rc, 0, "{text}");
        std::fs::remove_file(s).unwrap();
        let line = text
            .lines()
            .find(|l| l.ends_with(" block writes"))
            .expect(&text);
        line["sync: ".len()..line.len() - " block writes".len()]
            .parse::<u64>()
            .expect(&text)
    }

    #[test]
    fn a_caller_stopped_mid_commit_cuts_it_before_its_header_or_not_at_all() {
        let _g = BLOCK_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let m = volume("km", PFSTYPE_MASTER, CLID);
        fill(&m);
        let empty = empty_tree("ks");
        let w = writes_of_a_sync(&m, "ks");
        // Killed at a write before the header's, the commit is cut at the next write; killed
        // at the header's, it is on the device: the sync reports it committed.
        for n in [1u64, 2, 5, w - 1, w] {
            let s = volume("ks", PFSTYPE_SLAVE, CLID);
            let (rc, text) = run_killed_at_write(format!("sync {m}@DATA {s}@DATA"), n);
            if rc == 0 {
                assert!(text.ends_with("1 of 2 volumes written\n"), "{n}: {text}");
                assert_eq!(
                    tree(&s),
                    tree(&m),
                    "{n}: reported committed, not on the slave"
                );
            } else {
                assert_cut(&s, (rc, &text), (-4, "commit: interrupted"), &empty, n);
            }
            assert!(
                n == w || rc != 0,
                "{n}: a kill before the header did not cut"
            );
            assert_resyncs(&m, s, n);
        }
        remove(&[&m]);
    }

    #[test]
    fn a_caller_killed_before_its_job_starts_is_interrupted_and_writes_nothing() {
        let _g = BLOCK_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (m, s) = (
            volume("im", PFSTYPE_MASTER, CLID),
            volume("is", PFSTYPE_SLAVE, CLID),
        );
        fill(&m);
        let before = std::fs::read(&s).unwrap();
        let want = "error: sync: thread: interrupted; nothing committed\n";
        // Killed before the load's spawn: no job starts.
        let cmd = format!("sync {m}@DATA {s}@DATA");
        let got = std::thread::spawn(move || {
            STOP_HERE.with(|h| h.set(true));
            vol(&cmd)
        })
        .join()
        .unwrap();
        assert_eq!((got.0, got.1.as_str()), (-4, want));
        // Killed while the kernel starts the job thread: its spawn fails with EINTR.
        let _reset = ResetKnobs;
        VOLSYNC_SPAWN_ERRNO.store(4, Ordering::SeqCst);
        let (rc, text) = vol(&format!("sync {m}@DATA {s}@DATA"));
        assert_eq!((rc, text.as_str()), (-4, want));
        assert!(std::fs::read(&s).unwrap() == before, "a killed sync wrote");
        remove(&[&m, &s]);
    }

    #[test]
    fn write_delay_slows_every_block_write() {
        let _g = BLOCK_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let m = volume("dm", PFSTYPE_MASTER, CLID);
        fill(&m);
        let w = writes_of_a_sync(&m, "ds");
        let s = volume("ds", PFSTYPE_SLAVE, CLID);
        let t0 = std::time::Instant::now();
        let (rc, text) = vol(&format!("sync --write-delay-ms 20 {m}@DATA {s}@DATA"));
        assert_eq!(rc, 0, "{text}");
        assert!(
            t0.elapsed() >= std::time::Duration::from_millis(20 * w),
            "{w} writes in {:?}",
            t0.elapsed()
        );
        assert_eq!(tree(&s), tree(&m));
        let (rc, text) = vol(&format!("sync --write-delay-ms 1001 {m}@DATA"));
        assert_eq!(rc, -22, "{text}");
        assert!(
            text.starts_with("error: sync: usage: --write-delay-ms is at most 1000"),
            "{text}"
        );
        remove(&[&m, &s]);
    }

    #[test]
    fn hold_keeps_the_converged_cluster_before_the_commit() {
        let _g = BLOCK_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (m, s) = (
            volume("hm", PFSTYPE_MASTER, CLID),
            volume("hs", PFSTYPE_SLAVE, CLID),
        );
        fill(&m);
        let t0 = std::time::Instant::now();
        let (rc, text) = vol(&format!("sync --hold-ms 300 {m}@DATA {s}@DATA"));
        assert_eq!(rc, 0, "{text}");
        assert!(
            t0.elapsed() >= std::time::Duration::from_millis(300),
            "{text}"
        );
        let held = text.find("sync: held 300 ms\n").expect(&text);
        assert!(
            text.find("sync: converged in ").expect(&text) < held,
            "{text}"
        );
        assert!(text[held..].contains("committed, mirror_tid"), "{text}");
        assert_eq!(tree(&s), tree(&m));
        remove(&[&m, &s]);
    }

    #[test]
    fn a_tiny_cache_syncs_a_volume_many_times_larger_within_its_budget() {
        let _g = BLOCK_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (m, s) = (
            volume("tm", PFSTYPE_MASTER, CLID),
            volume("ts", PFSTYPE_SLAVE, CLID),
        );
        fill_big(&m);
        // Slow on-demand reads: the sync lasts long enough for the command to see the
        // slave's changed data pass the budget several times.
        let (rc, text) = vol(&format!(
            "sync --cache-mib 1 --read-delay-ms 5 {m}@DATA {s}@DATA"
        ));
        assert_eq!(rc, 0, "{text}");
        assert!(
            text.ends_with("sync: done: 1 of 2 volumes written\n"),
            "{text}"
        );
        let writebacks = text
            .matches("changed data past the cache budget: committing every changed volume")
            .count();
        assert!(writebacks >= 2, "{writebacks} write-backs: {text}");
        let [budget, peak, reads, evictions, _] = cache_line(&text, &m);
        assert_eq!(budget, 1024, "{text}");
        assert!(peak <= budget, "{text}");
        // Every one of the master's 128 blocks read, once at least.
        assert!(reads >= (BIG >> 16) as u64, "{text}");
        // The sync's copies of DATA blocks pass the master's cache by: nothing is evicted.
        assert_eq!(evictions, 0, "{text}");
        let [_, _, _, _, held] = cache_line(&text, &s);
        assert!(held <= HELD_MAX_KIB, "changed data held {held} KiB: {text}");
        assert_clean(&s);
        let root = |img: &str| vol(&format!("ls {img}@DATA /")).1;
        assert_eq!(root(&s), root(&m));
        assert!(
            file_of(&s, b"/big") == big_bytes(),
            "the slave's data differ"
        );
        remove(&[&m, &s]);
    }

    /// A tree of more chains than the least chain budget (4096) syncs through it: the
    /// command lets clean chains leave memory between passes, threads frozen, and the slave
    /// lists the master's tree, fsck-clean.
    #[test]
    fn a_tree_past_the_chain_budget_syncs_through_it() {
        let _g = BLOCK_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (m, s) = (
            volume("cm", PFSTYPE_MASTER, CLID),
            volume("cs", PFSTYPE_SLAVE, CLID),
        );
        let names: Vec<Vec<u8>> = (0..3000).map(|i| format!("/d/f{i}").into_bytes()).collect();
        let ops = core::iter::once(FrontendOp::Mkdir(b"/d"))
            .chain(names.iter().map(|n| FrontendOp::Write(n, b"x")));
        apply_and_commit(&m, ops);
        let (rc, text) = vol(&format!("sync --cache-mib 1 {m}@DATA {s}@DATA"));
        assert_eq!(rc, 0, "{text}");
        assert!(
            text.contains("chains past the cache budget")
                || text.contains("changed data past the cache budget"),
            "no eviction on the way: {text}"
        );
        assert!(
            text.ends_with("sync: done: 1 of 2 volumes written\n"),
            "{text}"
        );
        assert_clean(&s);
        assert_eq!(tree(&s), tree(&m));
        remove(&[&m, &s]);
    }

    /// The most changed data a store of 1 MiB of budget holds: twice the budget and one
    /// block ([`arm`]), in KiB.
    const HELD_MAX_KIB: u64 = 2 * 1024 + 64;

    /// The bound holds whatever the waiter's delay: with the command's thread slow to wake
    /// (300 ms per look, an alarm or not), the slave's thread copying 8 MiB at full speed
    /// holds past 2 MiB of changed data until the write-back.
    #[test]
    fn changed_data_stay_bounded_when_the_waiter_is_slow() {
        let _g = BLOCK_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (m, s) = (
            volume("wm", PFSTYPE_MASTER, CLID),
            volume("ws", PFSTYPE_SLAVE, CLID),
        );
        fill_big(&m);
        let cmd = format!("sync --cache-mib 1 {m}@DATA {s}@DATA");
        let (rc, text) = std::thread::spawn(move || {
            SLOW_SLEEP_MS.with(|d| d.set(300));
            vol(&cmd)
        })
        .join()
        .unwrap();
        assert_eq!(rc, 0, "{text}");
        assert!(
            text.ends_with("sync: done: 1 of 2 volumes written\n"),
            "{text}"
        );
        let [_, _, _, _, held] = cache_line(&text, &s);
        assert!(held <= HELD_MAX_KIB, "changed data held {held} KiB: {text}");
        assert!(held > 1024, "the budget was passed: {text}");
        assert_clean(&s);
        assert!(
            file_of(&s, b"/big") == big_bytes(),
            "the slave's data differ"
        );
        remove(&[&m, &s]);
    }

    /// A store armed by [`arm`] bumps and wakes the alarm word once its changed data pass the
    /// budget, and holds its sync passes past twice the budget.
    #[test]
    fn an_armed_store_rings_at_the_budget_and_holds_past_twice_it() {
        use hammer2_synchro::media::{self, Blockref, InodeData};
        use hammer2_synchro::store::{Body, PayloadSource};
        struct NoMedia;
        impl PayloadSource for NoMedia {
            fn read(&self, _: &Blockref) -> Result<Vec<u8>> {
                Err(Error::Io)
            }
        }
        crate::testhost::ensure_init();
        let mut store = Store::new(&KERNEL_HOST, InodeData::default()).unwrap();
        store.set_payload_source(Box::new(NoMedia), 2048);
        let alarm = TryArc::new(AtomicU32::new(0)).unwrap();
        arm(&mut store, &alarm, 2048).unwrap();
        let root = store.lock_root(hammer2_synchro::host::LockMode::Exclusive);
        let mut rung = Vec::new();
        for i in 0..5u64 {
            let mut b = Blockref::new(media::BREF_TYPE_DATA, i << 16, 16);
            b.set_size_radix(10);
            store.insert(&root, b, Body::Data(vec![1; 1024])).unwrap();
            rung.push((alarm.load(Ordering::SeqCst), store.past_pinned_limit()));
        }
        // 1 and 2 KiB: within; 3 KiB: past the budget (rung once); 5 KiB: past the limit.
        let want = [(0, false), (0, false), (1, false), (1, false), (1, true)];
        assert_eq!(rung, want);
    }

    #[test]
    fn a_sync_killed_during_on_demand_reads_ends_promptly_and_writes_nothing() {
        let _g = BLOCK_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let empty = empty_tree("ps");
        let (m, s) = (
            volume("pm", PFSTYPE_MASTER, CLID),
            volume("ps", PFSTYPE_SLAVE, CLID),
        );
        fill_big(&m);
        let before = std::fs::read(&s).unwrap();
        let _reset = ResetKnobs;
        // Each on-demand read takes 300 ms: the whole file would take 40 s.
        let cmd = format!("sync --cache-mib 1 --read-delay-ms 300 {m}@DATA {s}@DATA");
        let (id_tx, id_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            id_tx.send(std::thread::current().id()).unwrap();
            vol(&cmd)
        });
        let caller = id_rx.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        let killed = std::time::Instant::now();
        *STOPPED.lock().unwrap() = Some(caller);
        let (rc, text) = t.join().unwrap();
        let took = killed.elapsed();
        assert_eq!(
            (rc, text.as_str().lines().last()),
            (
                -4,
                Some("error: sync: cluster: interrupted; nothing committed")
            ),
            "{text}"
        );
        // At most the read each thread was in, and a poll.
        assert!(
            took < std::time::Duration::from_millis(600),
            "{took:?} after the kill"
        );
        assert!(std::fs::read(&s).unwrap() == before, "a killed sync wrote");
        assert_eq!(tree(&s), empty);
        remove(&[&m, &s]);
    }

    #[test]
    fn the_cache_budget_is_bounded_by_the_module_memory() {
        const MIB: usize = 1 << 20;
        // Not known (a host build's tests): the default, and any value given.
        assert_eq!(budget(None, 3, 0), Some(DEFAULT_CACHE_MIB * MIB));
        assert_eq!(budget(Some(4096), 3, 0), Some(4096 * MIB));
        // The default takes 3/8 of the memory for every store's three budgets (clean,
        // and changed up to twice that).
        assert_eq!(budget(None, 2, 32 * MIB), Some(2 * MIB));
        assert_eq!(budget(None, 2, 48 * MIB), Some(3 * MIB));
        assert_eq!(budget(None, 2, 8 << 30), Some(DEFAULT_CACHE_MIB * MIB));
        assert_eq!(budget(None, 8, MIB), Some(MIN_CACHE));
        // A value whose three budgets per store pass half of it is refused.
        assert_eq!(budget(Some(2), 2, 24 * MIB), Some(2 * MIB));
        assert_eq!(budget(Some(3), 2, 32 * MIB), None);
        assert_eq!(budget(Some(4), 2, 48 * MIB), Some(4 * MIB));
        assert_eq!(budget(Some(5), 2, 48 * MIB), None);
        assert_eq!(budget(Some(usize::MAX), 1, 0), None);
    }
}
