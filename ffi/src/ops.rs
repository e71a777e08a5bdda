//! The table of primitives a kernel host provides (the imports of this library).

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};

/// `timeout_ns` value of [`H2sHostOps::sleep_word`] meaning "no time limit".
pub const H2S_TIMEOUT_NONE: u64 = 0xffff_ffff_ffff_ffff;

/// `depth` value of [`H2sHostOps::lock`] for the core's own locks (the frontend serialiser, a
/// node's sync-pass lock), which are not chains: no chain has this depth (deeper chains pass
/// `H2S_HOST_LOCK_DEPTH - 1`), so a lock validator can give them a class of their own.
pub const H2S_HOST_LOCK_DEPTH: u32 = 255;
const _: () = assert!(H2S_HOST_LOCK_DEPTH == hammer2_synchro::host::HOST_LOCK_DEPTH as u32);

/// Log levels passed to [`H2sHostOps::log`] (Linux: `KERN_ERR`, `KERN_WARNING`, `KERN_INFO`,
/// `KERN_DEBUG`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2sLogLevel {
    /// Something is wrong and a person should look.
    Error = 0,
    /// Unexpected but handled.
    Warn = 1,
    /// Normal progress.
    Info = 2,
    /// Debugging detail.
    Debug = 3,
}

/// The primitives a kernel provides, as C function pointers. Every member must be non-null.
/// The table must stay valid and unchanged from [`crate::api::h2s_init`] until
/// [`crate::api::h2s_fini`] returns.
///
/// Contexts: `wake_word`, `now_ns`, `log`, `heap_lock`, `heap_unlock` and `should_stop` are
/// called with chain locks held and must not sleep; every other member is called from process
/// context and may sleep (`relax` and the `block_*` members with no spinlock held).
#[repr(C)]
pub struct H2sHostOps {
    /// Sleep while `*word == expected`, for at most `timeout_ns` ([`H2S_TIMEOUT_NONE`]: no limit).
    /// The caller must be queued on `word`'s address *before* the word is re-read, so a
    /// `wake_word` that follows any store to the word cannot be lost. Spurious returns are allowed.
    pub sleep_word: unsafe extern "C" fn(word: *const u32, expected: u32, timeout_ns: u64),
    /// Full memory barrier, then wake every thread sleeping on `word`. Must not sleep.
    pub wake_word: unsafe extern "C" fn(word: *const u32),
    /// Create a sleepable shared/exclusive lock. Returns null when out of memory.
    pub lock_create: unsafe extern "C" fn() -> *mut c_void,
    /// Destroy an unlocked lock made by `lock_create`.
    pub lock_destroy: unsafe extern "C" fn(lock: *mut c_void),
    /// Acquire `lock`, exclusive when `exclusive != 0`, else shared. `depth` is the chain's
    /// depth below the PFS root, at most `H2S_HOST_LOCK_DEPTH - 1` (deeper chains pass that), or
    /// [`H2S_HOST_LOCK_DEPTH`] for the core's own locks: a host with a lock validator can class
    /// locks by it (a parent is always locked before its child), others ignore it.
    pub lock: unsafe extern "C" fn(lock: *mut c_void, exclusive: i32, depth: u32),
    /// Release `lock` held by the caller in the given mode.
    pub unlock: unsafe extern "C" fn(lock: *mut c_void, exclusive: i32),
    /// Start a thread named by the `name_len` bytes at `name` (not NUL-terminated) that calls
    /// [`crate::api::h2s_thread_main`]`(arg)` exactly once. On success stores an opaque handle
    /// in `*thread` and returns 0; on failure returns a negative errno and must not call
    /// `h2s_thread_main`.
    pub spawn: unsafe extern "C" fn(
        name: *const u8,
        name_len: usize,
        arg: *mut c_void,
        thread: *mut *mut c_void,
    ) -> i32,
    /// Wait until the thread's `h2s_thread_main` returned, then release the handle.
    pub join: unsafe extern "C" fn(thread: *mut c_void),
    /// Monotonic clock in nanoseconds. Must not sleep.
    pub now_ns: unsafe extern "C" fn() -> u64,
    /// Write one log line of `len` bytes (not NUL-terminated, no newline). Must not sleep.
    pub log: unsafe extern "C" fn(level: H2sLogLevel, msg: *const u8, len: usize),
    /// Report a fatal core bug (`len` bytes of message) and never return.
    pub panic: unsafe extern "C" fn(msg: *const u8, len: usize) -> !,
    /// Take the lock that serializes the pool allocator (a spinlock: allocation never sleeps;
    /// the Linux host also turns interrupts off, so a hold is the allocator's bounded work).
    pub heap_lock: unsafe extern "C" fn(),
    /// Release the pool allocator's lock.
    pub heap_unlock: unsafe extern "C" fn(),
    /// Non-zero when the calling task's run must end now (Linux: a fatal signal is pending).
    /// Must not sleep.
    pub should_stop: unsafe extern "C" fn() -> i32,
    /// Allocate `size` bytes (at least 64 KiB) for a large payload straight from the kernel,
    /// aligned to 4096 bytes, or return null (the core then falls back to its pool). Called
    /// wherever the core allocates, its own spinning locks possibly held: must not sleep up to
    /// a few MiB (Linux: `kmalloc(GFP_NOWAIT)` up to `KMALLOC_MAX_SIZE`). Larger requests may
    /// sleep (Linux: `vmalloc`): the core makes them with no spinning lock held (file contents,
    /// and its large tables, which it grows outside their locks). Never called with the heap
    /// lock.
    pub big_alloc: unsafe extern "C" fn(size: usize) -> *mut c_void,
    /// Free what `big_alloc` returned. Process context.
    pub big_free: unsafe extern "C" fn(p: *mut c_void),
    /// A scheduling point (Linux: `cond_resched()`). Called from process context with no
    /// spinlock held; may sleep.
    pub relax: unsafe extern "C" fn(),
    /// Open the image file or block device at `path` (`path_len` bytes, then a NUL; no NUL
    /// inside), for reading and writing when `writable != 0`, else read-only. On success
    /// stores an opaque handle through `dev` and the device's size in bytes through `size`,
    /// and returns 0; otherwise a negative errno (`-ENOENT`, `-EACCES`, `-EROFS`, ...;
    /// `-EISDIR` for a directory, `-EINVAL` for anything that is neither a regular file nor a
    /// block device) and stores nothing. A writable block device should be claimed
    /// exclusively (Linux: `O_EXCL`), so a mounted one is refused (`-EBUSY`). Called in the
    /// context of the task that runs the command (its root, working directory and credentials
    /// resolve `path`), never on a thread the core spawned. Process context; may sleep.
    pub block_open: unsafe extern "C" fn(
        path: *const u8,
        path_len: usize,
        writable: i32,
        dev: *mut *mut c_void,
        size: *mut u64,
    ) -> i32,
    /// Read up to `len` bytes at byte offset `off` of `dev` into `buf` (no alignment of
    /// either). Returns the bytes read, which may be fewer than `len` (the core asks again for
    /// the rest; 0 only past the end), or a negative errno. The core never asks past the size
    /// `block_open` reported. Process context; may sleep.
    pub block_read:
        unsafe extern "C" fn(dev: *mut c_void, off: u64, buf: *mut u8, len: usize) -> i64,
    /// Write up to `len` bytes from `buf` at byte offset `off` of a device opened writable;
    /// same return convention as `block_read` (`-ENOSPC` when the device is full). Not
    /// durable until `block_flush`. Process context; may sleep.
    pub block_write:
        unsafe extern "C" fn(dev: *mut c_void, off: u64, buf: *const u8, len: usize) -> i64,
    /// Make every write to `dev` that returned durable (Linux: `vfs_fsync`, which flushes a
    /// device's write cache). 0 or a negative errno. Process context; may sleep.
    pub block_flush: unsafe extern "C" fn(dev: *mut c_void) -> i32,
    /// Close `dev`; the handle is invalid afterwards. Called exactly once per handle.
    /// Process context; may sleep.
    pub block_close: unsafe extern "C" fn(dev: *mut c_void),
}

static OPS: AtomicPtr<H2sHostOps> = AtomicPtr::new(core::ptr::null_mut());

/// Install the host's table (by [`crate::api::h2s_init`]); `None` uninstalls it.
pub(crate) fn install(ops: Option<&'static H2sHostOps>) {
    let p = ops.map_or(core::ptr::null_mut(), |o| {
        o as *const H2sHostOps as *mut H2sHostOps
    });
    OPS.store(p, Ordering::Release);
}

/// The installed table, if any.
pub fn get() -> Option<&'static H2sHostOps> {
    let p = OPS.load(Ordering::Acquire);
    // SAFETY: `install` only stores pointers derived from a `&'static H2sHostOps`, and the
    // init contract keeps the table valid until fini uninstalls it.
    unsafe { p.cast_const().as_ref() }
}
