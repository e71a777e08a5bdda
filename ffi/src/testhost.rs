//! A std implementation of the C ops table, so the C ABI is tested on the build machine exactly
//! as a kernel calls it (through `h2s_init` and the function-pointer table).

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use crate::ops::{H2sHostOps, H2sLogLevel, H2S_TIMEOUT_NONE};

/// One condition variable for every word: a wake broadcasts, sleepers re-test their word. Taking
/// `WORDS` before re-reading the word is the interlock that makes a wakeup impossible to lose.
static WORDS: Mutex<()> = Mutex::new(());
static WORD_CV: Condvar = Condvar::new();

std::thread_local! {
    /// A slow thread: each of its timed word sleeps lasts this long whatever wakes it (a
    /// waiter the scheduler keeps off its CPU), 0: none.
    pub static SLOW_SLEEP_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

unsafe extern "C" fn sleep_word(word: *const u32, expected: u32, timeout_ns: u64) {
    let slow = SLOW_SLEEP_MS.with(|s| s.get());
    if slow > 0 && timeout_ns != H2S_TIMEOUT_NONE {
        std::thread::sleep(Duration::from_millis(slow));
        return;
    }
    let g = WORDS.lock().unwrap();
    // SAFETY: the core passes a live `AtomicU32`'s address.
    let w = unsafe { &*(word as *const std::sync::atomic::AtomicU32) };
    if w.load(std::sync::atomic::Ordering::SeqCst) != expected {
        return;
    }
    if timeout_ns == H2S_TIMEOUT_NONE {
        drop(WORD_CV.wait(g).unwrap());
    } else {
        drop(
            WORD_CV
                .wait_timeout(g, Duration::from_nanos(timeout_ns))
                .unwrap(),
        );
    }
}

unsafe extern "C" fn wake_word(_word: *const u32) {
    let _g = WORDS.lock().unwrap();
    WORD_CV.notify_all();
}

/// (readers, writer) guarded by a mutex, with a condvar for waiters.
struct RwSim {
    state: Mutex<(u32, bool)>,
    cv: Condvar,
}

unsafe extern "C" fn lock_create() -> *mut c_void {
    Box::into_raw(Box::new(RwSim {
        state: Mutex::new((0, false)),
        cv: Condvar::new(),
    })) as *mut c_void
}

unsafe extern "C" fn lock_destroy(lock: *mut c_void) {
    // SAFETY: made by `lock_create`, destroyed once.
    let l = unsafe { Box::from_raw(lock as *mut RwSim) };
    assert_eq!(
        *l.state.lock().unwrap(),
        (0, false),
        "destroyed a held lock"
    );
}

unsafe extern "C" fn lock(lock: *mut c_void, exclusive: i32, _depth: u32) {
    // SAFETY: a live lock from `lock_create`.
    let l = unsafe { &*(lock as *const RwSim) };
    let mut s = l.state.lock().unwrap();
    if exclusive != 0 {
        while s.0 != 0 || s.1 {
            s = l.cv.wait(s).unwrap();
        }
        s.1 = true;
    } else {
        while s.1 {
            s = l.cv.wait(s).unwrap();
        }
        s.0 += 1;
    }
}

unsafe extern "C" fn unlock(lock: *mut c_void, exclusive: i32) {
    // SAFETY: a live lock from `lock_create`.
    let l = unsafe { &*(lock as *const RwSim) };
    let mut s = l.state.lock().unwrap();
    if exclusive != 0 {
        assert!(s.1, "unlocked an exclusive lock not held");
        s.1 = false;
    } else {
        assert!(s.0 > 0, "unlocked a shared lock not held");
        s.0 -= 1;
    }
    l.cv.notify_all();
}

struct SendPtr(*mut c_void);
// SAFETY: the pointer is a boxed thread body handed to exactly one thread.
unsafe impl Send for SendPtr {}

unsafe extern "C" fn spawn(
    name: *const u8,
    len: usize,
    arg: *mut c_void,
    out: *mut *mut c_void,
) -> i32 {
    // SAFETY: the core passes a valid name.
    let name =
        String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(name, len) }).into_owned();
    if name == "h2s-volsync" {
        let rc = VOLSYNC_SPAWN_ERRNO.load(Ordering::SeqCst);
        if rc != 0 {
            return -rc;
        }
    }
    if name == WATCHED_THREAD {
        WATCH.store(arg as usize, Ordering::SeqCst);
    }
    let arg = SendPtr(arg);
    let h = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let a = arg;
            // SAFETY: `arg` is the spawn argument, used once.
            unsafe { crate::api::h2s_thread_main(a.0) }
        })
        .unwrap();
    // SAFETY: the core passes a valid out pointer.
    unsafe { *out = Box::into_raw(Box::new(h)) as *mut c_void };
    0
}

/// A thread spawned under this name has its body's box watched: [`body_ended`] records whether
/// that box was already freed when the body counted itself ended.
pub const WATCHED_THREAD: &str = "h2s-watched";
/// The watched box's address (0: none).
static WATCH: AtomicUsize = AtomicUsize::new(0);
static WATCH_FREED: AtomicBool = AtomicBool::new(false);
/// Set when the watched thread's body counted itself ended: whether its box was freed by then.
pub static WATCHED_FREED_AT_END: Mutex<Option<bool>> = Mutex::new(None);

/// `System`, noting when the block at [`WATCH`] is freed. It must not allocate.
struct WatchAlloc;

// SAFETY: every call forwards to `System` with the caller's arguments; the extra work is two
// atomics.
unsafe impl std::alloc::GlobalAlloc for WatchAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if ptr as usize == WATCH.load(Ordering::SeqCst) {
            WATCH_FREED.store(true, Ordering::SeqCst);
        }
        // SAFETY: forwarded as is.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: WatchAlloc = WatchAlloc;

/// Called by a thread body's wrapper just before the body counts itself ended.
pub fn body_ended(arg: usize) {
    if arg != 0 && WATCH.load(Ordering::SeqCst) == arg {
        WATCH.store(0, Ordering::SeqCst);
        *WATCHED_FREED_AT_END.lock().unwrap() = Some(WATCH_FREED.swap(false, Ordering::SeqCst));
    }
}

/// An errno the spawn of a volume sync's job thread (`h2s-volsync`) fails with; 0: none.
pub static VOLSYNC_SPAWN_ERRNO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

unsafe extern "C" fn join(th: *mut c_void) {
    // SAFETY: made by `spawn`, joined once.
    let h = unsafe { Box::from_raw(th as *mut std::thread::JoinHandle<()>) };
    h.join().unwrap();
}

fn epoch() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

unsafe extern "C" fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

unsafe extern "C" fn log(level: H2sLogLevel, msg: *const u8, len: usize) {
    // SAFETY: the core passes a valid message.
    let m = unsafe { std::slice::from_raw_parts(msg, len) };
    eprintln!("[{:?}] {}", level, String::from_utf8_lossy(m));
}

unsafe extern "C" fn panic(msg: *const u8, len: usize) -> ! {
    // SAFETY: the core passes a valid message.
    let m = unsafe { std::slice::from_raw_parts(msg, len) };
    panic!("host panic: {}", String::from_utf8_lossy(m));
}

static HEAP_LOCK: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn heap_lock() {
    while HEAP_LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
}

unsafe extern "C" fn heap_unlock() {
    HEAP_LOCK.store(false, Ordering::Release);
}

/// What the simulated host's `should_stop` answers (a killed caller in a kernel).
pub static STOP: AtomicBool = AtomicBool::new(false);

std::thread_local! {
    /// What `should_stop` answers on this thread only, so a test can end its own run
    /// without stopping the tests running beside it.
    pub static STOP_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A thread whose `should_stop` says yes (set from another thread, as a kill would be).
pub static STOPPED: std::sync::Mutex<Option<std::thread::ThreadId>> = std::sync::Mutex::new(None);

/// Called before every block write: a test's way to act at a given point of a command.
pub static WRITE_HOOK: std::sync::Mutex<Option<Box<dyn FnMut() + Send>>> =
    std::sync::Mutex::new(None);

unsafe extern "C" fn should_stop() -> i32 {
    let me = std::thread::current().id();
    let stopped = *STOPPED.lock().unwrap_or_else(|e| e.into_inner()) == Some(me);
    i32::from(STOP.load(Ordering::SeqCst) || STOP_HERE.with(|s| s.get()) || stopped)
}

/// Calls of the simulated host's `relax`.
pub static RELAXED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

unsafe extern "C" fn relax() {
    RELAXED.fetch_add(1, Ordering::SeqCst);
}

/// Resets the test knobs a test may set ([`WRITE_HOOK`], [`STOPPED`], [`BLOCK_CHUNK`],
/// [`VOLSYNC_SPAWN_ERRNO`]) when dropped: a failed assert must not leave them set for the
/// tests after it.
pub struct ResetKnobs;

impl Drop for ResetKnobs {
    fn drop(&mut self) {
        *WRITE_HOOK.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *STOPPED.lock().unwrap_or_else(|e| e.into_inner()) = None;
        BLOCK_CHUNK.store(0, Ordering::SeqCst);
        VOLSYNC_SPAWN_ERRNO.store(0, Ordering::SeqCst);
    }
}

/// Bytes the simulated host's `big_alloc` handed out and `big_free` did not take back yet.
pub static BIG_LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Size prefix `big_alloc` keeps in front of each block (a page, to keep the block aligned).
const BIG_HEAD: usize = 4096;

unsafe extern "C" fn big_alloc(size: usize) -> *mut c_void {
    let Ok(l) = std::alloc::Layout::from_size_align(size + BIG_HEAD, 4096) else {
        return std::ptr::null_mut();
    };
    // SAFETY: a non-zero layout; the size is stored in the head to rebuild it in `big_free`.
    unsafe {
        let p = std::alloc::alloc(l);
        if p.is_null() {
            return std::ptr::null_mut();
        }
        (p as *mut usize).write(size);
        BIG_LIVE.fetch_add(size, Ordering::SeqCst);
        p.add(BIG_HEAD).cast()
    }
}

unsafe extern "C" fn big_free(p: *mut c_void) {
    // SAFETY: `p` came from `big_alloc`, so the head before it holds the size.
    unsafe {
        let head = (p as *mut u8).sub(BIG_HEAD);
        let size = (head as *const usize).read();
        BIG_LIVE.fetch_sub(size, Ordering::SeqCst);
        std::alloc::dealloc(
            head,
            std::alloc::Layout::from_size_align_unchecked(size + BIG_HEAD, 4096),
        );
    }
}

/// Most bytes one `block_read`/`block_write` of the simulated host moves (0: no bound), so
/// tests see the core finish a transfer the host did in pieces.
pub static BLOCK_CHUNK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An open device of the simulated host.
struct TestDev {
    file: std::fs::File,
    /// The thread that opened it: the core must close it there too.
    opened_on: std::thread::ThreadId,
}

fn errno_of(e: &std::io::Error) -> i32 {
    -e.raw_os_error().unwrap_or(5)
}

unsafe extern "C" fn block_open(
    path: *const u8,
    len: usize,
    writable: i32,
    dev: *mut *mut c_void,
    size: *mut u64,
) -> i32 {
    use std::io::Seek;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    /// Linux's O_EXCL.
    const O_EXCL: i32 = 0o200;
    // SAFETY: the core passes `len` bytes followed by a NUL.
    let bytes = unsafe { std::slice::from_raw_parts(path, len + 1) };
    assert_eq!(bytes[len], 0, "path not NUL-terminated");
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(&bytes[..len]));
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return errno_of(&e),
    };
    if meta.is_dir() {
        return -21;
    }
    if !meta.is_file() && !meta.file_type().is_block_device() {
        return -22;
    }
    // As the kernel host: a writable block device is claimed exclusively (O_EXCL, no O_CREAT).
    let excl = if writable != 0 && meta.file_type().is_block_device() {
        O_EXCL
    } else {
        0
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(writable != 0)
        .custom_flags(excl)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) => return errno_of(&e),
    };
    let end = match file.seek(std::io::SeekFrom::End(0)) {
        Ok(n) => n,
        Err(e) => return errno_of(&e),
    };
    // SAFETY: the core passes pointers valid for a write.
    unsafe {
        *size = end;
        *dev = Box::into_raw(Box::new(TestDev {
            file,
            opened_on: std::thread::current().id(),
        }))
        .cast();
    }
    BLOCK_OPEN.fetch_add(1, Ordering::SeqCst);
    0
}

/// `len` cut to [`BLOCK_CHUNK`].
fn chunk(len: usize) -> usize {
    match BLOCK_CHUNK.load(Ordering::SeqCst) {
        0 => len,
        c => len.min(c),
    }
}

unsafe extern "C" fn block_read(dev: *mut c_void, off: u64, buf: *mut u8, len: usize) -> i64 {
    use std::os::unix::fs::FileExt;
    // SAFETY: a live handle from `block_open`; `buf` valid for `len` bytes.
    let (d, buf) = unsafe {
        (
            &*(dev as *const TestDev),
            std::slice::from_raw_parts_mut(buf, len),
        )
    };
    match d.file.read_at(&mut buf[..chunk(len)], off) {
        Ok(n) => n as i64,
        Err(e) => i64::from(errno_of(&e)),
    }
}

unsafe extern "C" fn block_write(dev: *mut c_void, off: u64, buf: *const u8, len: usize) -> i64 {
    use std::os::unix::fs::FileExt;
    if let Some(hook) = WRITE_HOOK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
    {
        hook();
    }
    // SAFETY: a live handle from `block_open`; `buf` valid for `len` bytes.
    let (d, buf) = unsafe {
        (
            &*(dev as *const TestDev),
            std::slice::from_raw_parts(buf, len),
        )
    };
    match d.file.write_at(&buf[..chunk(len)], off) {
        Ok(n) => n as i64,
        Err(e) => i64::from(errno_of(&e)),
    }
}

unsafe extern "C" fn block_flush(dev: *mut c_void) -> i32 {
    // SAFETY: a live handle from `block_open`.
    let d = unsafe { &*(dev as *const TestDev) };
    match d.file.sync_data() {
        Ok(()) => 0,
        Err(e) => errno_of(&e),
    }
}

/// Handles of the simulated host's devices not closed yet.
pub static BLOCK_OPEN: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

/// Handles closed on another thread than the one that opened them (a kernel host's close on
/// a thread the core spawned completes late: see PORTING.md, "Block I/O").
pub static BLOCK_CLOSED_ELSEWHERE: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Tests that count [`BLOCK_OPEN`] or set [`BLOCK_CHUNK`] (process-wide) take turns on this.
pub static BLOCK_SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A 48 MiB image file `path` made a volume with the PFSs of `pfs` through the host's block
/// ops; returns its path as a string.
pub fn newfs_image(path: &std::path::Path, pfs: &[hammer2_synchro::volume::NewPfs<'_>]) -> String {
    use hammer2_synchro::volume::{newfs, BlockDev, NewfsOptions};
    ensure_init();
    std::fs::File::create(path)
        .unwrap()
        .set_len(48 << 20)
        .unwrap();
    let s = path.to_str().unwrap().to_string();
    let dev = crate::block::HostDev::open(s.as_bytes(), true).unwrap();
    let opts = NewfsOptions {
        size: dev.size(),
        fsid: [3; 16],
        sroot_ids: ([4; 16], [5; 16]),
        pfs,
        now_us: 1_700_000_000_000_000,
    };
    newfs(&dev, &opts).unwrap();
    s
}

/// `h2s_volume` on `cmd` with `cap` bytes of output: (rc, text).
pub fn volume_cmd(cmd: &str, cap: usize) -> (i32, String) {
    ensure_init();
    let mut out = std::vec![0u8; cap];
    let mut n = 0usize;
    // SAFETY: valid buffers and out pointer.
    let rc =
        unsafe { crate::api::h2s_volume(cmd.as_ptr(), cmd.len(), out.as_mut_ptr(), cap, &mut n) };
    (rc, String::from_utf8(out[..n].to_vec()).unwrap())
}

unsafe extern "C" fn block_close(dev: *mut c_void) {
    // SAFETY: made by `block_open`, closed once.
    let d = unsafe { Box::from_raw(dev as *mut TestDev) };
    if d.opened_on != std::thread::current().id() {
        BLOCK_CLOSED_ELSEWHERE.fetch_add(1, Ordering::SeqCst);
    }
    drop(d);
    BLOCK_OPEN.fetch_sub(1, Ordering::SeqCst);
}

/// The simulated host's table.
pub static OPS: H2sHostOps = H2sHostOps {
    sleep_word,
    wake_word,
    lock_create,
    lock_destroy,
    lock,
    unlock,
    spawn,
    join,
    now_ns,
    log,
    panic,
    heap_lock,
    heap_unlock,
    big_alloc,
    big_free,
    should_stop,
    relax,
    block_open,
    block_read,
    block_write,
    block_flush,
    block_close,
};

/// Start the library once for the whole test process, with a pool from the std heap.
pub fn ensure_init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let pool: &'static mut [u8] = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
        // SAFETY: `OPS` is static and complete; the pool is leaked, so valid forever.
        let rc = unsafe { crate::api::h2s_init(&OPS, pool.as_mut_ptr().cast(), pool.len()) };
        assert_eq!(rc, 0);
    });
}
