//! The exported C functions (`h2s_*`), as declared in `include/hammer2_synchro.h`.
//!
//! Conventions for every function here:
//! - errors are negative Linux errnos (`-EINVAL` for a null pointer where memory is required, an
//!   unknown or stale handle, or a bad argument; `-ENOMEM` when the pool is exhausted);
//! - a `(pointer, length)` pair may have a null pointer only when the length is 0;
//! - output buffers stay owned by the caller and are written only within `cap` bytes; text written
//!   there is not NUL-terminated, and the byte count is reported separately;
//! - except for `h2s_init` and `h2s_fini` (which nothing may run alongside), every function may be
//!   called concurrently from several threads, from process context only (they may sleep and
//!   allocate), never with a spinlock held or from interrupt context, and only between a
//!   successful `h2s_init` and `h2s_fini`.

use alloc::boxed::Box;
use core::ffi::c_void;
use core::fmt::{self, Write as _};

use hammer2_synchro::scenario::{self, Outcome};
use hammer2_synchro::Error;

use crate::buf::OutBuf;
use crate::cmd::{self, ThreadOp};
use crate::handles;
use crate::host::{run_thread, KERNEL_HOST};
use crate::ops::{self, H2sHostOps};
use crate::pool::POOL;

/// Largest scenario text [`h2s_run_scenario`] accepts, in bytes: the language's own bound, so
/// every host gives a file the same verdict.
pub const H2S_SCENARIO_MAX: usize = 1024 * 1024;
const _: () = assert!(H2S_SCENARIO_MAX == scenario::lex::MAX_INPUT);
/// Longest command [`h2s_ctl`] accepts, in bytes; also the capacity a host needs for any of its
/// answers.
pub const H2S_CTL_MAX: usize = 4096;
/// Smallest pool [`h2s_init`] accepts, in bytes.
pub const H2S_POOL_MIN: usize = 64 * 1024;
/// Most steps one pool allocation or free makes under the heap lock
/// ([`h2s_bench_pool_hold`]'s bound).
pub const H2S_POOL_MAX_STEPS: u32 = 36;
// Spelled out above for cbindgen, which cannot follow the path.
const _: () = assert!(H2S_POOL_MAX_STEPS == crate::pool::MAX_STEPS);

/// [`h2s_run_scenario`]: every check passed.
pub const H2S_OUTCOME_PASSED: i32 = 0;
/// [`h2s_run_scenario`]: a check or a command failed.
pub const H2S_OUTCOME_FAILED: i32 = 1;
/// [`h2s_run_scenario`]: the file was rejected before anything ran.
pub const H2S_OUTCOME_REJECTED: i32 = 2;

const EINVAL: i32 = 22;
const EBUSY: i32 = 16;
const ENOSPC: i32 = 28;

fn neg(e: Error) -> i32 {
    -e.errno()
}

/// A byte slice from C, or `None` for a null pointer with a non-zero length.
///
/// # Safety
/// A non-null `p` must be valid for reads of `len` bytes for `'a`.
unsafe fn in_slice<'a>(p: *const u8, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and valid for `len` bytes per this function's contract.
    Some(unsafe { core::slice::from_raw_parts(p, len) })
}

/// A writable byte slice from C, or `None` for a null pointer with a non-zero capacity.
///
/// # Safety
/// A non-null `p` must be valid for writes of `cap` bytes for `'a` and not otherwise accessed.
unsafe fn out_slice<'a>(p: *mut u8, cap: usize) -> Option<&'a mut [u8]> {
    if cap == 0 {
        return Some(&mut []);
    }
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, valid and exclusive for `cap` bytes per this function's contract.
    Some(unsafe { core::slice::from_raw_parts_mut(p, cap) })
}

/// Store `v` through `p` if `p` is not null.
///
/// # Safety
/// A non-null `p` must be valid for a write of `T`.
unsafe fn put<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: per this function's contract.
        unsafe { p.write(v) };
    }
}

/// Start the library: install the host's primitives and give the core's heap its pool.
///
/// `ops` must point to a table whose every member is set, valid and unchanged until
/// [`h2s_fini`] returns (a `static const` table). `pool` is `len` bytes of writable memory the
/// library owns until `h2s_fini` returns; the host frees it afterwards.
///
/// Returns 0, `-EINVAL` (null `ops` or `pool`, or `len` below [`H2S_POOL_MIN`]), or `-EBUSY`
/// (already started). Context: process context, once at load, before any other `h2s_*` call.
///
/// # Safety
/// As described above.
#[no_mangle]
pub unsafe extern "C" fn h2s_init(ops: *const H2sHostOps, pool: *mut c_void, len: usize) -> i32 {
    if pool.is_null() || len < H2S_POOL_MIN {
        return -EINVAL;
    }
    // SAFETY: a non-null `ops` points to a table valid and unchanged until `h2s_fini` returns
    // (this function's contract, above).
    let Some(table) = (unsafe { ops.as_ref() }) else {
        return -EINVAL;
    };
    if ops::get().is_some() {
        return -EBUSY;
    }
    ops::install(Some(table));
    // SAFETY: `pool` is `len` writable bytes the library owns until `h2s_fini` returns (this
    // function's contract, above).
    if !unsafe { POOL.init(pool.cast(), len) } {
        ops::install(None);
        return -EBUSY;
    }
    0
}

/// Stop the library: destroy every remaining cluster (stopping and joining its threads), then
/// release the pool and the ops table. The bytes still allocated (pool blocks and large
/// payloads from `big_alloc`) after every cluster was destroyed (a leak: 0 when everything was
/// freed) are stored through `leaked` (may be null). Returns how many clusters it had to destroy (0 or more), or `-EINVAL` if the library
/// was not started.
///
/// Context: process context, once at unload, after every other `h2s_*` call has returned and
/// none can start (e.g. after the debugfs files are removed). May sleep while threads stop, and
/// waits for any thread body still running (one its owner never stopped) rather than free the
/// pool under it; the host must then still wait for those threads to exit before unloading
/// its code (Linux: the completion each signals last, `h2s_host_exit`).
///
/// # Safety
/// `leaked` must be valid for a write when not null.
#[no_mangle]
pub unsafe extern "C" fn h2s_fini(leaked: *mut usize) -> i32 {
    if ops::get().is_none() {
        return -EINVAL;
    }
    let n = handles::destroy_all();
    // Every thread's owner is gone now; one still running (a leak) must end before the pool
    // and the ops table go.
    crate::host::wait_for_thread_bodies();
    let (used, _) = POOL.usage();
    // SAFETY: `leaked` is null or valid for a write (`# Safety` of `h2s_fini`); `put` skips null.
    unsafe { put(leaked, used) };
    POOL.reset();
    ops::install(None);
    n as i32
}

/// Let large payloads (64 KiB and more) come straight from the host's `big_alloc`, up to `bytes`
/// in all, so the core's memory grows on demand past the pool (0: never, everything from the
/// pool). Returns 0, or `-EINVAL` if the library was not started. Context: process context,
/// right after [`h2s_init`].
#[no_mangle]
pub extern "C" fn h2s_set_memory_limit(bytes: usize) -> i32 {
    if ops::get().is_none() {
        return -EINVAL;
    }
    POOL.set_big_limit(bytes);
    0
}

/// Time every hold of the pool's heap lock under fragmentation (`Pool::hold_workload`): the
/// longest hold in nanoseconds, the holds timed, how many took over 100 us and the most steps
/// one hold made (at most [`H2S_POOL_MAX_STEPS`]), stored through the pointers (each may be
/// null). Returns 0, `-EINVAL` (library not started) or `-ENOMEM`.
/// Context: process context; nothing else should allocate meanwhile (the bench runs alone).
///
/// # Safety
/// Non-null pointers must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn h2s_bench_pool_hold(
    max_ns: *mut u64,
    holds: *mut u64,
    slow: *mut u64,
    max_steps: *mut u32,
) -> i32 {
    if ops::get().is_none() {
        return -EINVAL;
    }
    let Ok(run) = POOL.hold_workload() else {
        return neg(Error::NoMem);
    };
    // SAFETY: the caller's contract: `max_ns`, `holds`, `slow` and `max_steps` are each null
    // or valid for a write, which is what `put` needs.
    unsafe {
        put(max_ns, run.times.max_ns);
        put(holds, run.times.holds);
        put(slow, run.times.slow);
        put(max_steps, run.times.max_steps);
    }
    0
}

/// Bytes of the pool in use and its size, stored through `used` and `size` (either may be null).
/// Returns 0, or `-EINVAL` if the library was not started. Never sleeps.
///
/// # Safety
/// Non-null pointers must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn h2s_pool_usage(used: *mut usize, size: *mut usize) -> i32 {
    if ops::get().is_none() {
        return -EINVAL;
    }
    let (u, s) = POOL.usage();
    // SAFETY: `used` and `size` are null or valid for a write (`# Safety` of `h2s_pool_usage`).
    unsafe {
        put(used, u);
        put(size, s);
    }
    0
}

/// Create a cluster with one empty PFS per node; `roles` is `len` bytes of role names
/// (`master`, `slave`, `soft_master`, `soft_slave`, `cache`) separated by white space, 1 to 8
/// of them, optionally preceded by the nodes' layout: `layout=index` (today's HAMMER2: an
/// inode index under the PFS root, directory entries, the default) or `layout=seed` (the seed
/// era's embedded child inodes), e.g. `layout=seed master slave`. On success stores the new
/// cluster's handle through `handle` and returns 0. The cluster lives until
/// [`h2s_cluster_destroy`] or [`h2s_fini`].
///
/// Errors: `-EINVAL` (null pointer, unknown role or layout, no or too many roles), `-ENOMEM`,
/// `-EBUSY` (too many clusters). Context: process context; may sleep.
///
/// # Safety
/// `roles` must be valid for `len` bytes; `handle` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn h2s_cluster_create(roles: *const u8, len: usize, handle: *mut u32) -> i32 {
    // SAFETY: `roles` is valid for `len` bytes (`# Safety` of `h2s_cluster_create`).
    let Some(text) = (unsafe { in_slice(roles, len) }) else {
        return -EINVAL;
    };
    if handle.is_null() || ops::get().is_none() {
        return -EINVAL;
    }
    match cmd::create(text) {
        Ok(h) => {
            // SAFETY: `handle` was checked non-null and is valid for a write (`# Safety`).
            unsafe { put(handle, h) };
            0
        }
        Err(e) => neg(e),
    }
}

/// Destroy a cluster: wait for calls running on it, stop and join its threads, free it. The
/// handle is invalid afterwards. Returns 0, or `-EINVAL` for an unknown or stale handle.
/// Context: process context; may sleep until the threads stopped.
#[no_mangle]
pub extern "C" fn h2s_cluster_destroy(handle: u32) -> i32 {
    if ops::get().is_none() {
        return -EINVAL;
    }
    match handles::destroy(handle) {
        Ok(()) => 0,
        Err(e) => neg(e),
    }
}

/// Parse and run one scenario (docs/SCENARIOS.md) of `len` bytes at `text`, writing its KTAP
/// text (or, for a rejected file, the `line N: <reason>` text) into `out` (capacity `cap`). The
/// byte count written is stored through `written` and the outcome (`H2S_OUTCOME_*`) through
/// `outcome`; either may be null. The scenario's cluster and threads exist only during the call.
///
/// Returns 0 when the scenario ran (passed or failed: see `outcome` and the KTAP text),
/// `-EINVAL` when it was rejected (the reason is in `out`) or for a null pointer, `-E2BIG` when
/// `len` exceeds [`H2S_SCENARIO_MAX`] (nothing ran), `-ENOSPC` when the text did not fit in `cap`
/// (`out` holds its first `cap` bytes; the outcome is still stored).
///
/// Context: process context; sleeps for as long as the scenario runs (its `sleep` and `wait`
/// commands, thread acknowledgements).
///
/// # Safety
/// `text` valid for `len` bytes; `out` valid and exclusive for `cap` bytes; `written` and
/// `outcome` valid for a write when not null.
#[no_mangle]
pub unsafe extern "C" fn h2s_run_scenario(
    text: *const u8,
    len: usize,
    out: *mut u8,
    cap: usize,
    written: *mut usize,
    outcome: *mut i32,
) -> i32 {
    // SAFETY: `text` is valid for `len` bytes and `out` valid and exclusive for `cap` bytes
    // (`# Safety` of `h2s_run_scenario`).
    let (text, out) = match unsafe { input_output(text, len, out, cap, H2S_SCENARIO_MAX) } {
        Ok(a) => a,
        Err(rc) => return rc,
    };
    let mut w = OutBuf::new(out);
    let res = scenario::run(&KERNEL_HOST, text, &mut w);
    let code = match res {
        Outcome::Passed => H2S_OUTCOME_PASSED,
        Outcome::Failed => H2S_OUTCOME_FAILED,
        Outcome::Rejected => H2S_OUTCOME_REJECTED,
    };
    // SAFETY: `written` and `outcome` are null or valid for a write (`# Safety`).
    unsafe {
        put(written, w.len());
        put(outcome, code);
    }
    if w.overflowed() {
        -ENOSPC
    } else if res == Outcome::Rejected {
        -EINVAL
    } else {
        0
    }
}

/// Write the rejection a scenario file of `len` bytes gets for its size, for a host that counted
/// the bytes of an over-long file without keeping them: the same `line 1: file too big ...` text
/// [`h2s_run_scenario`] (and every other host) gives for the whole file. The byte count goes to
/// `written` (may be null).
///
/// Returns `-EINVAL` with the reason in `out` when `len` exceeds [`H2S_SCENARIO_MAX`], 0 with
/// nothing written when it does not, `-EINVAL` for a null `out` with a non-zero `cap`, or
/// `-ENOSPC` (the text cut at `cap`). Context: any; never sleeps.
///
/// # Safety
/// `out` valid and exclusive for `cap` bytes; `written` valid for a write when not null.
#[no_mangle]
pub unsafe extern "C" fn h2s_scenario_too_big(
    len: usize,
    out: *mut u8,
    cap: usize,
    written: *mut usize,
) -> i32 {
    // SAFETY: `out` is valid and exclusive for `cap` bytes (this function's contract).
    let Some(out) = (unsafe { out_slice(out, cap) }) else {
        return -EINVAL;
    };
    let mut w = OutBuf::new(out);
    let rejected = match scenario::lex::check_size(len) {
        Ok(()) => Ok(()),
        Err(e) => Err(writeln!(w, "{e}")),
    };
    // SAFETY: `written` is valid for a write when not null (this function's contract).
    unsafe { put(written, w.len()) };
    match rejected {
        Ok(()) => 0,
        Err(_) if w.overflowed() => -ENOSPC,
        Err(_) => -EINVAL,
    }
}

/// The input text and output buffer of a call: `-EINVAL` for a null pointer or a library not
/// started, `-E2BIG` for input over `max` bytes.
///
/// # Safety
/// A non-null `input` valid for `len` bytes and a non-null `out` valid and exclusive for `cap`
/// bytes, for `'a`.
unsafe fn input_output<'a>(
    input: *const u8,
    len: usize,
    out: *mut u8,
    cap: usize,
    max: usize,
) -> Result<(&'a [u8], &'a mut [u8]), i32> {
    // SAFETY: forwarded from this function's contract.
    let (Some(input), Some(out)) = (unsafe { in_slice(input, len) }, unsafe {
        out_slice(out, cap)
    }) else {
        return Err(-EINVAL);
    };
    if ops::get().is_none() {
        return Err(-EINVAL);
    }
    if input.len() > max {
        return Err(neg(Error::TooBig));
    }
    Ok((input, out))
}

/// Run a one-line text command (`h2s_ctl`, `h2s_volume`): `-EINVAL` for a null pointer or a
/// library not started, `-E2BIG` for a command over `max` (nothing runs); else the answer in
/// `out`, its length through `written`, and the command's `-errno`, or `-ENOSPC` when the
/// answer was cut.
///
/// # Safety
/// `cmd` valid for `len` bytes; `out` valid and exclusive for `cap` bytes; `written` valid for
/// a write when not null.
unsafe fn text_command(
    cmd: *const u8,
    len: usize,
    out: *mut u8,
    cap: usize,
    written: *mut usize,
    max: usize,
    run: fn(&[u8], &mut dyn fmt::Write) -> Result<(), Error>,
) -> i32 {
    // SAFETY: forwarded from this function's contract.
    let (cmd, out) = match unsafe { input_output(cmd, len, out, cap, max) } {
        Ok(a) => a,
        Err(rc) => return rc,
    };
    let mut w = OutBuf::new(out);
    let r = run(cmd, &mut w);
    // SAFETY: `written` is null or valid for a write (this function's contract).
    unsafe { put(written, w.len()) };
    match r {
        Err(e) => neg(e),
        Ok(()) if w.overflowed() => -ENOSPC,
        Ok(()) => 0,
    }
}

/// Finish a text export: store the count and map overflow to `-ENOSPC`.
///
/// # Safety
/// `written` valid for a write when not null.
unsafe fn finish_text(w: &OutBuf<'_>, r: fmt::Result, written: *mut usize) -> i32 {
    // SAFETY: `written` is null or valid for a write (this function's `# Safety`).
    unsafe { put(written, w.len()) };
    if w.overflowed() {
        -ENOSPC
    } else if r.is_err() {
        -EINVAL
    } else {
        0
    }
}

/// Write the status of the library and of every live cluster (nodes, roles, status words,
/// threads with their flags by name, counters) into `out`; the byte count goes to `written`.
/// Returns 0, `-EINVAL` (null pointer with non-zero `cap`), or `-ENOSPC` (cut at `cap`).
/// Context: process context; takes chain and table locks briefly.
///
/// # Safety
/// `out` valid and exclusive for `cap` bytes; `written` valid for a write when not null.
#[no_mangle]
pub unsafe extern "C" fn h2s_status(out: *mut u8, cap: usize, written: *mut usize) -> i32 {
    // SAFETY: `out` is valid and exclusive for `cap` bytes (`# Safety` of `h2s_status`).
    let Some(out) = (unsafe { out_slice(out, cap) }) else {
        return -EINVAL;
    };
    if ops::get().is_none() {
        return -EINVAL;
    }
    let mut w = OutBuf::new(out);
    let r = cmd::write_status(&mut w);
    // SAFETY: `written` is null or valid for a write (`# Safety` of `h2s_status`).
    unsafe { finish_text(&w, r, written) }
}

/// Run the self-tests with real host threads: the host-conformance tests of the porting
/// surface (word-sleep races, lock exclusion, spawn/join, clock), the kernel-host checks (a host
/// lock then chain locks nested deeper than lockdep tracks, join after the body returned, pool
/// exhaustion) and the sync-thread protocol tests (freeze during a pass, stop while frozen,
/// prompt stop, 1,000 freeze/unfreeze cycles, concurrent requesters, and the randomized stress of
/// writer and requester threads against every node's sync thread). Writes KTAP into `out`; the
/// leaf counts go to `passed`/`failed`, the byte count to `written` (each may be null).
///
/// Returns 0 (see the counts), `-EINVAL` (null pointer), or `-ENOSPC` (text cut at `cap`).
/// Context: process context; sleeps and spawns threads for some seconds. The caller must not
/// run two self-test calls at once (the kernel-host checks share statics).
///
/// # Safety
/// `out` valid and exclusive for `cap` bytes; the other pointers valid for a write when not null.
#[no_mangle]
pub unsafe extern "C" fn h2s_selftest(
    out: *mut u8,
    cap: usize,
    written: *mut usize,
    passed: *mut u32,
    failed: *mut u32,
) -> i32 {
    // SAFETY: the caller's contract is `run_suites`'.
    unsafe { run_suites(cmd::SUITES, out, cap, written, passed, failed) }
}

/// [`h2s_selftest`]'s body for any list of suites.
///
/// # Safety
/// As [`h2s_selftest`].
unsafe fn run_suites(
    suites: &[(&str, &[(&str, hammer2_synchro::testkit::selftest::Case)])],
    out: *mut u8,
    cap: usize,
    written: *mut usize,
    passed: *mut u32,
    failed: *mut u32,
) -> i32 {
    // SAFETY: `out` is valid and exclusive for `cap` bytes (`# Safety` of `h2s_selftest`).
    let Some(out) = (unsafe { out_slice(out, cap) }) else {
        return -EINVAL;
    };
    if ops::get().is_none() {
        return -EINVAL;
    }
    let mut w = OutBuf::new(out);
    let (p, f) = cmd::run_selftests(suites, &mut w);
    // SAFETY: `passed`, `failed` and `written` are null or valid for a write (`# Safety`).
    unsafe {
        put(passed, p);
        put(failed, f);
        finish_text(&w, Ok(()), written)
    }
}

/// The reproducer of a thread left running: a stress run (writers and requesters that never
/// finish) times out after 1 s, and one writer ignores every request for 20 s, so the run
/// reports the hang (`not ok`, its expected verdict) and returns after its two 5 s grace
/// periods with that writer still running, unjoined. The writer ends on its own and frees the
/// run's cluster; unloading meanwhile waits for it. Output and counts as [`h2s_selftest`].
///
/// Returns 0, `-EINVAL` (null pointer) or `-ENOSPC`. Context: process context; sleeps about
/// 11 s. Never concurrently with [`h2s_selftest`].
///
/// # Safety
/// As [`h2s_selftest`].
#[no_mangle]
pub unsafe extern "C" fn h2s_selftest_hang(
    out: *mut u8,
    cap: usize,
    written: *mut usize,
    passed: *mut u32,
    failed: *mut u32,
) -> i32 {
    // SAFETY: the caller's contract is `run_suites`'.
    unsafe { run_suites(cmd::HANG_SUITES, out, cap, written, passed, failed) }
}

/// Apply a thread operation to node `node` of cluster `handle`: `op` 0 starts the node's sync
/// thread, 1 freezes it, 2 unfreezes it, 3 remasters it (re-read the roles), 4 stops it and
/// 5 signals it (a pass now). Requests return only once the thread acknowledged them, except
/// the signal; a request to a thread that never started or has stopped returns 0 at once and
/// changes nothing.
///
/// Errors: `-EINVAL` (unknown or stale handle, node out of range, unknown op), `-EBUSY` (start
/// while running), other core errors as `-errno` (e.g. `-ENOMEM` when a start cannot spawn).
/// Context: process context; sleeps until the acknowledgement. Concurrent operations on the same
/// thread are allowed (the protocol serializes them); the cluster cannot be destroyed meanwhile.
#[no_mangle]
pub extern "C" fn h2s_thread_op(handle: u32, node: u32, op: u32) -> i32 {
    if ops::get().is_none() {
        return -EINVAL;
    }
    let Some(op) = ThreadOp::from_raw(op) else {
        return -EINVAL;
    };
    let u = match handles::get(handle) {
        Ok(u) => u,
        Err(e) => return neg(e),
    };
    match cmd::thread_op(&u, node as usize, op) {
        Ok(()) => 0,
        Err(e) => neg(e),
    }
}

/// The test console: run one control command (`len` bytes at `cmd`, one line) on the clusters
/// that live across calls, writing its answer into `out`; the byte count goes to `written`.
/// Not the scenario language (see [`h2s_run_scenario`]). Commands (see `crate::ctl`):
/// `create <role>...` (answers `handle <h>`), `destroy <h>`,
/// `start|freeze|unfreeze|remaster|stop|signal <h> <set>`, `mkdir <h> <set> <path>`,
/// `write <h> <set> <path> <bytes>`, `idle <h> <ms>`, `status <h>`, `list`; a `<set>` is `*` or
/// a comma list of node indices.
///
/// Returns 0, `-EINVAL` (null pointer, malformed command, bad handle or node), `-E2BIG` (`len`
/// over [`H2S_CTL_MAX`]: nothing ran), `-ENOSPC` (answer cut), or the failing operation's
/// `-errno` (the answer names it). Context: process context;
/// may sleep (thread acknowledgements, cluster teardown).
///
/// # Safety
/// `cmd` valid for `len` bytes; `out` valid and exclusive for `cap` bytes; `written` valid for a
/// write when not null.
#[no_mangle]
pub unsafe extern "C" fn h2s_ctl(
    cmd: *const u8,
    len: usize,
    out: *mut u8,
    cap: usize,
    written: *mut usize,
) -> i32 {
    // SAFETY: forwarded from `# Safety` of `h2s_ctl`.
    unsafe { text_command(cmd, len, out, cap, written, H2S_CTL_MAX, crate::ctl::run) }
}

/// Longest volume command [`h2s_volume`] accepts, in bytes (a command word and paths).
pub const H2S_VOLUME_CMD_MAX: usize = 8192;

/// Run one volume command on devices the host opens through its `block_*` members (`len`
/// bytes at `cmd`, one line): `fsck PATH`, `ls PATH`, `ls PATH@LABEL [DIR]`,
/// `show [--blockrefs [--depth N]] PATH` print what the CLI prints for them; `blockcheck
/// PATH` checks the host's block I/O on a scratch device (it writes to it and puts the bytes
/// back); `sync [OPTIONS] PATH@LABEL ...` runs the sync threads over those PFSs until they
/// converge and commits every volume that changed (see `crate::volsync` for its options). `sync` and `blockcheck` write one at a
/// time: while one runs, another is `-EBUSY` at once. The text goes into `out`, the byte
/// count to `written`; a failure ends the text with a line `error: CMD: WHAT: WHY`.
///
/// Returns 0 when the command ran (`fsck` findings are in the text, not an error),
/// `-EINVAL` (null pointer, malformed command), `-E2BIG` (`len` over
/// [`H2S_VOLUME_CMD_MAX`]: nothing ran), `-ENOSPC` (the text was cut at `cap` and the
/// command stopped there, `written == cap`; or, with a shorter text, a `sync` found a volume
/// full), `-EINTR` (the host's `should_stop` ended it), or the failure's
/// `-errno` (`-ENOENT`, `-EISDIR`, `-EIO` for a damaged or foreign volume, ...).
/// Context: process context; sleeps for as long as the device reads take, calling `relax`
/// at every block.
///
/// # Safety
/// `cmd` valid for `len` bytes; `out` valid and exclusive for `cap` bytes; `written` valid for
/// a write when not null.
#[no_mangle]
pub unsafe extern "C" fn h2s_volume(
    cmd: *const u8,
    len: usize,
    out: *mut u8,
    cap: usize,
    written: *mut usize,
) -> i32 {
    // SAFETY: forwarded from `# Safety` of `h2s_volume`.
    unsafe {
        text_command(
            cmd,
            len,
            out,
            cap,
            written,
            H2S_VOLUME_CMD_MAX,
            crate::volcmd::run,
        )
    }
}

/// Open a bench session (`make bench-kernel`): a one-master cluster whose sync thread is started
/// and idle. The C side then times [`h2s_bench_freeze_unfreeze`], [`h2s_bench_stop`] and
/// [`h2s_bench_start`] calls on it one at a time, and frees it with [`h2s_bench_close`].
///
/// Returns 0 with `*session` set, `-EINVAL` (null pointer), `-ENOMEM`, or the failing
/// operation's `-errno`. Context: process context; sleeps (until the thread is idle).
///
/// # Safety
/// `session` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn h2s_bench_open(session: *mut *mut c_void) -> i32 {
    if session.is_null() || ops::get().is_none() {
        return -EINVAL;
    }
    let s = match crate::bench::BenchSession::open(&KERNEL_HOST)
        .and_then(hammer2_synchro::mem::try_box)
    {
        Ok(s) => s,
        Err(e) => return neg(e),
    };
    // SAFETY: `session` was checked non-null and is valid for a write (`# Safety`).
    unsafe { session.write(Box::into_raw(s) as *mut c_void) };
    0
}

/// Run `op` on the session behind a pointer from [`h2s_bench_open`]: 0, its `-errno`, or
/// `-EINVAL` for a null session.
///
/// # Safety
/// `s` is null or a live session from [`h2s_bench_open`].
unsafe fn on_session(
    s: *mut c_void,
    op: impl FnOnce(&crate::bench::BenchSession) -> hammer2_synchro::Result<()>,
) -> i32 {
    // SAFETY: per this function's contract.
    match unsafe { (s as *const crate::bench::BenchSession).as_ref() } {
        Some(s) => op(s).map_or_else(neg, |()| 0),
        None => -EINVAL,
    }
}

/// One freeze + unfreeze round trip of the session's idle sync thread, each acknowledged.
///
/// Returns 0, `-EINVAL` (null session, or its thread is stopped), or the failing operation's
/// `-errno`. Context: process context; sleeps.
///
/// # Safety
/// `s` is null or a session from [`h2s_bench_open`] not yet closed.
#[no_mangle]
pub unsafe extern "C" fn h2s_bench_freeze_unfreeze(s: *mut c_void) -> i32 {
    // SAFETY: per this function's contract.
    unsafe { on_session(s, |s| s.freeze_unfreeze()) }
}

/// Stop the session's sync thread and join it.
///
/// Returns 0, `-EINVAL` (null session, or no thread runs). Context: process context; sleeps.
///
/// # Safety
/// `s` is null or a session from [`h2s_bench_open`] not yet closed.
#[no_mangle]
pub unsafe extern "C" fn h2s_bench_stop(s: *mut c_void) -> i32 {
    // SAFETY: per this function's contract.
    unsafe { on_session(s, |s| s.stop()) }
}

/// Start the session's sync thread again after [`h2s_bench_stop`] and wait until it is idle.
///
/// Returns 0, `-EINVAL` (null session), `-EBUSY` (a thread runs), or the failing operation's
/// `-errno`. Context: process context; sleeps (a few ms).
///
/// # Safety
/// `s` is null or a session from [`h2s_bench_open`] not yet closed.
#[no_mangle]
pub unsafe extern "C" fn h2s_bench_start(s: *mut c_void) -> i32 {
    // SAFETY: per this function's contract.
    unsafe { on_session(s, |s| s.start()) }
}

/// Close a session: stop its thread if it runs and free the cluster.
///
/// Context: process context; sleeps.
///
/// # Safety
/// `s` is null or a session from [`h2s_bench_open`]; it is invalid afterwards.
#[no_mangle]
pub unsafe extern "C" fn h2s_bench_close(s: *mut c_void) {
    if !s.is_null() {
        // SAFETY: per this function's contract: made by `Box::into_raw` in `h2s_bench_open`.
        drop(unsafe { Box::from_raw(s as *mut crate::bench::BenchSession) });
    }
}

/// The store's bytes per chain (`crate::bench_memory`): the pool's bytes in use plus
/// `lock_bytes` per live chain lock (which the host allocates outside the pool), over `files`
/// empty files, then `files` files of four 64 KiB blocks, each on a fresh one-node cluster;
/// stores the bytes per empty file (inode and DIRENT chains) and per DATA chain beyond its data
/// through the pointers (each may be null). Returns 0, `-EINVAL` (library not started, or `files` over 999,999),
/// `-ENOMEM`, or the failing write's `-errno`. Context: process context; sleeps; nothing else
/// may allocate meanwhile (the bench runs alone), since the meter is the whole pool's usage.
///
/// # Safety
/// Non-null pointers must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn h2s_bench_chain_memory(
    files: u32,
    lock_bytes: u32,
    inode_chain: *mut u64,
    data_chain: *mut u64,
) -> i32 {
    if ops::get().is_none() {
        return -EINVAL;
    }
    let pool = || POOL.usage().0;
    match crate::bench_memory::measure(files as usize, lock_bytes as usize, &pool) {
        // SAFETY: the caller's contract: each pointer is null or valid for a write.
        Ok(m) => unsafe {
            put(inode_chain, m.inode_chain as u64);
            put(data_chain, m.data_chain as u64);
            0
        },
        Err(e) => neg(e),
    }
}

/// The body of every thread the library asks the host to spawn: the host's thread function
/// calls this exactly once with the `arg` it got from `spawn`, then returns.
///
/// # Safety
/// `arg` must be the value passed to the host's `spawn`, used exactly once.
#[no_mangle]
pub unsafe extern "C" fn h2s_thread_main(arg: *mut c_void) {
    // SAFETY: forwarded from this function's contract.
    unsafe { run_thread(arg) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testhost::{ensure_init, OPS};
    use core::ptr::{null, null_mut};
    use hammer2_synchro::thread::Request;

    #[test]
    fn init_rejects_bad_arguments_and_double_init() {
        ensure_init();
        let mut mem = [0u8; 16];
        // SAFETY: every call below is rejected before it touches the pointers.
        unsafe {
            assert_eq!(
                h2s_init(null(), mem.as_mut_ptr().cast(), H2S_POOL_MIN),
                -EINVAL
            );
            assert_eq!(h2s_init(&OPS, null_mut(), H2S_POOL_MIN), -EINVAL);
            assert_eq!(h2s_init(&OPS, mem.as_mut_ptr().cast(), mem.len()), -EINVAL);
            assert_eq!(
                h2s_init(&OPS, mem.as_mut_ptr().cast(), H2S_POOL_MIN),
                -EBUSY
            );
        }
    }

    #[test]
    fn bad_handles_are_errors() {
        ensure_init();
        for h in [0, 1, 0xff, 33, 0x100 | 1, u32::MAX] {
            assert_eq!(h2s_cluster_destroy(h), -EINVAL, "handle {h:#x}");
        }
    }

    #[test]
    fn cluster_create_validates_before_building() {
        ensure_init();
        let mut h = 0u32;
        // SAFETY: pointers are valid or the call is rejected before using them.
        unsafe {
            assert_eq!(h2s_cluster_create(null(), 5, &mut h), -EINVAL);
            assert_eq!(
                h2s_cluster_create(b"master".as_ptr(), 6, null_mut()),
                -EINVAL
            );
            for bad in [
                &b""[..],
                b"  \n",
                b"master wizard",
                b"master master master master master master master master master",
                b"\xff",
            ] {
                assert_eq!(
                    h2s_cluster_create(bad.as_ptr(), bad.len(), &mut h),
                    -EINVAL,
                    "{bad:?}"
                );
            }
        }
    }

    #[test]
    fn run_scenario_checks_pointers_and_size_first() {
        ensure_init();
        let mut out = [0u8; 8];
        let (mut n, mut o) = (0usize, -1i32);
        let big = vec![b'#'; H2S_SCENARIO_MAX + 1];
        // SAFETY: pointers are valid or the call is rejected before using them.
        unsafe {
            assert_eq!(
                h2s_run_scenario(null(), 3, out.as_mut_ptr(), 8, &mut n, &mut o),
                -EINVAL
            );
            assert_eq!(
                h2s_run_scenario(b"x".as_ptr(), 1, null_mut(), 8, &mut n, &mut o),
                -EINVAL
            );
            assert_eq!(
                h2s_run_scenario(big.as_ptr(), big.len(), out.as_mut_ptr(), 8, &mut n, &mut o),
                -7
            );
        }
        assert_eq!(o, -1, "nothing ran");
    }

    #[test]
    fn too_big_gives_the_verdict_of_the_whole_file() {
        ensure_init();
        let counted = |len: usize| {
            let mut out = [0u8; 256];
            let mut n = 0usize;
            // SAFETY: valid buffer and out pointer.
            let rc = unsafe { h2s_scenario_too_big(len, out.as_mut_ptr(), out.len(), &mut n) };
            (rc, String::from_utf8(out[..n].to_vec()).unwrap())
        };
        let big = vec![b'#'; H2S_SCENARIO_MAX + 5];
        let mut whole = String::new();
        let _ = scenario::run(&KERNEL_HOST, &big, &mut whole);
        assert_eq!(
            whole,
            "line 1: file too big (1048581 bytes, at most 1048576)\n"
        );
        assert_eq!(counted(big.len()), (-EINVAL, whole));
        assert_eq!(counted(H2S_SCENARIO_MAX), (0, String::new()));
        // SAFETY: a null output with no capacity, then one with capacity (refused).
        unsafe {
            assert_eq!(
                h2s_scenario_too_big(1 << 30, null_mut(), 0, null_mut()),
                -ENOSPC
            );
            assert_eq!(
                h2s_scenario_too_big(1 << 30, null_mut(), 8, null_mut()),
                -EINVAL
            );
        }
    }

    #[test]
    fn selftest_reports_every_suite_as_ktap() {
        ensure_init();
        let mut out = vec![0u8; 64 * 1024];
        let (mut n, mut p, mut f) = (0usize, 0u32, 0u32);
        // SAFETY: valid buffers and out pointers.
        let rc = unsafe { h2s_selftest(out.as_mut_ptr(), out.len(), &mut n, &mut p, &mut f) };
        let text = std::str::from_utf8(&out[..n]).unwrap();
        assert_eq!(rc, 0, "{text}");
        // The suites' own verdicts are asserted by their crates (the thread-protocol timings
        // are not this test's business); here: every case counted, the KTAP well formed.
        let total: usize = cmd::SUITES.iter().map(|s| s.1.len()).sum();
        assert_eq!((p + f) as usize, total, "{text}");
        assert!(text.starts_with("KTAP version 1\n1..3\n"), "{text}");
        for (i, (name, _)) in cmd::SUITES.iter().enumerate() {
            assert!(text.contains(&format!("ok {} {}\n", i + 1, name)), "{text}");
        }
        assert!(text.contains("\nok 2 kernel-host\n"), "{text}");
        assert!(text.contains("# pool lock: "), "{text}");
        assert!(
            text.ends_with(&format!("# {p} passed, {f} failed\n")),
            "{text}"
        );
        // Too small a buffer is reported, not overrun.
        let mut small = [0u8; 10];
        // SAFETY: valid buffer and out pointers.
        let rc = unsafe { h2s_selftest(small.as_mut_ptr(), small.len(), &mut n, &mut p, &mut f) };
        assert_eq!((rc, n), (-ENOSPC, 10));
    }

    #[test]
    fn thread_op_rejects_bad_handles_and_ops() {
        ensure_init();
        assert_eq!(h2s_thread_op(0, 0, Request::Freeze.raw()), -EINVAL);
        assert_eq!(h2s_thread_op(0x1234, 0, Request::Stop.raw()), -EINVAL);
        assert_eq!(h2s_thread_op(1, 0, 99), -EINVAL);
    }

    #[test]
    fn thread_requests_without_a_thread_are_noops() {
        ensure_init();
        let roles = b"master slave";
        let mut h = 0u32;
        // SAFETY: a valid role list and out pointer.
        assert_eq!(
            unsafe { h2s_cluster_create(roles.as_ptr(), roles.len(), &mut h) },
            0
        );
        // Never started, then started and stopped: every request succeeds and does nothing.
        for op in Request::ALL {
            assert_eq!(h2s_thread_op(h, 1, op.raw()), 0, "{op:?} before start");
        }
        assert_eq!(h2s_thread_op(h, 1, 0), 0, "start");
        assert_eq!(h2s_thread_op(h, 1, Request::Stop.raw()), 0);
        for op in Request::ALL {
            assert_eq!(h2s_thread_op(h, 1, op.raw()), 0, "{op:?} after stop");
        }
        let u = handles::get(h).unwrap();
        assert_eq!(
            u.cluster().thread_state(1),
            hammer2_synchro::thread::ThreadState::Stopped
        );
        drop(u);
        // A node beyond the cluster is still refused.
        assert_eq!(h2s_thread_op(h, 2, Request::Freeze.raw()), -EINVAL);
        assert_eq!(h2s_cluster_destroy(h), 0);
    }

    #[test]
    fn pool_usage_reports_the_pool() {
        ensure_init();
        let (mut u, mut s) = (usize::MAX, 0usize);
        // SAFETY: valid out pointers.
        assert_eq!(unsafe { h2s_pool_usage(&mut u, &mut s) }, 0);
        assert_eq!(s, 1 << 20);
        assert!(u <= s);
    }
}
