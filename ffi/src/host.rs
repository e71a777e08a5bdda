//! [`KernelHost`]: the core's porting surface implemented on the host's [`H2sHostOps`] table.

use alloc::boxed::Box;
use core::ffi::c_void;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use hammer2_synchro::host::{Host, LockMode, LogLevel, RawLock, RawThread, ThreadEntry};
use hammer2_synchro::{Error, Result};

use crate::buf::Line;
use crate::ops::{self, H2sHostOps, H2sLogLevel, H2S_TIMEOUT_NONE};

/// The porting surface on a kernel (or any C host) through the installed ops table.
pub struct KernelHost;

/// The one kernel host value handed to the core.
pub static KERNEL_HOST: KernelHost = KernelHost;

/// Longest log line passed to the host; longer lines are cut (kept on the stack: kernel stacks
/// are small).
const LOG_LINE: usize = 200;

fn table() -> &'static H2sHostOps {
    match ops::get() {
        Some(t) => t,
        // Only reachable if the core runs before h2s_init or after h2s_fini, which the handle
        // table and the init checks prevent; there is no host to report to.
        None => loop {
            core::hint::spin_loop();
        },
    }
}

impl Host for KernelHost {
    fn sleep_on_word(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let ns = match timeout {
            None => H2S_TIMEOUT_NONE,
            Some(d) => u64::try_from(d.as_nanos()).unwrap_or(H2S_TIMEOUT_NONE - 1),
        };
        // SAFETY: `word` is a live atomic for the whole call; the host only reads it and uses
        // its address as the wait key.
        unsafe { (table().sleep_word)(word.as_ptr(), expected, ns) }
    }

    fn wake_word(&self, word: &AtomicU32) {
        // SAFETY: as above; the host uses the address only as a key.
        unsafe { (table().wake_word)(word.as_ptr()) }
    }

    fn lock_create(&self) -> Result<RawLock> {
        // SAFETY: plain call into the host; null means out of memory.
        let p = unsafe { (table().lock_create)() };
        if p.is_null() {
            return Err(Error::NoMem);
        }
        Ok(RawLock::from_raw(p as usize))
    }

    fn lock_destroy(&self, lock: RawLock) {
        // SAFETY: `lock` came from `lock_create` and is consumed here, exactly once.
        unsafe { (table().lock_destroy)(lock.as_raw() as *mut c_void) }
    }

    fn lock(&self, lock: &RawLock, mode: LockMode, depth: u8) {
        // SAFETY: `lock` is a live handle from `lock_create`.
        unsafe { (table().lock)(lock.as_raw() as *mut c_void, excl(mode), u32::from(depth)) }
    }

    fn unlock(&self, lock: &RawLock, mode: LockMode) {
        // SAFETY: `lock` is live and held by the caller in `mode` (trait contract).
        unsafe { (table().unlock)(lock.as_raw() as *mut c_void, excl(mode)) }
    }

    fn spawn(&self, name: &str, entry: ThreadEntry) -> Result<RawThread> {
        let boxed: Box<ThreadEntry> = hammer2_synchro::mem::try_box(entry)?;
        let arg = Box::into_raw(boxed) as *mut c_void;
        let mut th: *mut c_void = core::ptr::null_mut();
        // Counted before the body can start (and end); taken back if the spawn fails.
        BODIES.fetch_add(1, Ordering::SeqCst);
        // SAFETY: `name` is valid for the call; `arg` is handed to `h2s_thread_main` exactly once
        // on success, and stays ours on failure.
        let rc = unsafe { (table().spawn)(name.as_ptr(), name.len(), arg, &mut th) };
        if rc != 0 || th.is_null() {
            // SAFETY: the spawn failed, so nothing else owns `arg`; reclaim it.
            drop(unsafe { Box::from_raw(arg as *mut ThreadEntry) });
            BODIES.fetch_sub(1, Ordering::SeqCst);
            return Err(match rc {
                -12 => Error::NoMem,
                // Linux's kthread_create when the caller is killed while kthreadd starts it.
                -4 => Error::Interrupted,
                _ => Error::Busy,
            });
        }
        Ok(RawThread::from_raw(th as usize))
    }

    fn join(&self, thread: RawThread) {
        // SAFETY: the handle came from `spawn` and is consumed here, exactly once.
        unsafe { (table().join)(thread.as_raw() as *mut c_void) }
    }

    fn now_ns(&self) -> u64 {
        // SAFETY: plain call into the host.
        unsafe { (table().now_ns)() }
    }

    fn log(&self, level: LogLevel, args: fmt::Arguments<'_>) {
        let mut line = Line::<LOG_LINE>::new();
        let _ = line.write_fmt(args);
        let lvl = match level {
            LogLevel::Error => H2sLogLevel::Error,
            LogLevel::Warn => H2sLogLevel::Warn,
            LogLevel::Info => H2sLogLevel::Info,
            LogLevel::Debug => H2sLogLevel::Debug,
        };
        let b = line.as_bytes();
        // SAFETY: `b` is valid for the call.
        unsafe { (table().log)(lvl, b.as_ptr(), b.len()) }
    }

    fn should_stop(&self) -> bool {
        // SAFETY: plain call into the host; it only looks at the calling task.
        unsafe { (table().should_stop)() != 0 }
    }

    fn relax(&self) {
        // SAFETY: plain call into the host; the trait contract says no spin lock is held.
        unsafe { (table().relax)() }
    }
}

fn excl(mode: LockMode) -> i32 {
    match mode {
        LockMode::Exclusive => 1,
        LockMode::Shared => 0,
    }
}

/// Run a thread body handed over by [`KernelHost::spawn`].
///
/// # Safety
/// `arg` must be the pointer `spawn` passed to the host, used exactly once.
pub(crate) unsafe fn run_thread(arg: *mut c_void) {
    // Moved out of its box in this statement, which frees the box at once: a box kept to the
    // end of the function would be freed after the count below drops, when `h2s_fini` may
    // already be measuring (a leak reported at unload) or resetting the pool.
    // SAFETY: per this function's contract `arg` is a leaked `Box<ThreadEntry>` nobody else owns.
    let entry: ThreadEntry = *unsafe { Box::from_raw(arg as *mut ThreadEntry) };
    // Consumes the body's own box: freed when the call returns.
    entry();
    // The table is read before the count drops: once it reads 0, `h2s_fini` may uninstall the
    // table (`table()` would then spin for ever), while the `h2s_ops` it points to is static
    // and outlives the host's wait for this thread's exit.
    let ops = table();
    #[cfg(test)]
    crate::testhost::body_ended(arg as usize);
    // Last: the body and everything it owned are gone.
    if BODIES.fetch_sub(1, Ordering::SeqCst) == 1 {
        // SAFETY: `ops` is the installed table (static, see above); `BODIES` is a live static.
        unsafe { (ops.wake_word)(BODIES.as_ptr()) };
    }
}

/// Thread bodies handed to the host and not yet returned: core code that may still run.
static BODIES: AtomicU32 = AtomicU32::new(0);

/// Wait until every thread body started through [`KernelHost::spawn`] has returned, logging
/// once if any is still running (a thread its owner never stopped: nothing may be freed under
/// it, so unload waits). Returns how many were running when called.
pub(crate) fn wait_for_thread_bodies() -> u32 {
    let first = BODIES.load(Ordering::SeqCst);
    if first != 0 {
        KERNEL_HOST.log(
            LogLevel::Warn,
            format_args!("waiting for {first} thread(s) no cluster owns before unloading"),
        );
    }
    loop {
        let n = BODIES.load(Ordering::SeqCst);
        if n == 0 {
            return first;
        }
        KERNEL_HOST.sleep_on_word(&BODIES, n, Some(Duration::from_secs(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testhost::{ensure_init, WATCHED_FREED_AT_END, WATCHED_THREAD};

    #[test]
    fn a_thread_body_frees_its_box_before_it_counts_as_ended() {
        ensure_init();
        // Unload measures the pool once the count reads 0: a box freed after that is
        // reported as leaked, or freed into a pool already reset.
        let h = KERNEL_HOST
            .spawn(WATCHED_THREAD, Box::new(|| {}))
            .expect("spawn");
        KERNEL_HOST.join(h);
        assert_eq!(*WATCHED_FREED_AT_END.lock().unwrap(), Some(true));
    }
}
