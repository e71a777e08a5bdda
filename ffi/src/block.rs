//! [`HostDev`]: a device the host opened (the `block_*` members of [`H2sHostOps`]) as the
//! core's [`BlockDev`], and the conformance checks of those members.

use alloc::vec::Vec;
use core::ffi::c_void;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use hammer2_synchro::volume::BlockDev;
use hammer2_synchro::{Error, Result};

use crate::ops::{self, H2sHostOps};

/// Longest path [`HostDev::open`] passes to the host (Linux's `PATH_MAX`, NUL included).
pub(crate) const PATH_MAX: usize = 4096;

const ENOENT: i32 = 2;
const EINTR: i32 = 4;
const EBUSY: i32 = 16;
pub(crate) const ENOMEM: i32 = 12;
const EISDIR: i32 = 21;
const EINVAL: i32 = 22;
const ENOSPC: i32 = 28;
const EROFS: i32 = 30;
/// Linux's in-kernel "restart the call" errnos, which a read interrupted by a signal returns.
const ERESTART_FIRST: i32 = 512;
const ERESTART_LAST: i32 = 516;

/// Why a device did not open: the host's errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError(pub i32);

impl OpenError {
    /// The core error a command gives for it.
    pub fn error(self) -> Error {
        match self.0 {
            ENOENT => Error::NotFound,
            EISDIR => Error::IsDir,
            ENOMEM => Error::NoMem,
            EBUSY => Error::Busy,
            _ => Error::Invalid,
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.0 {
            ENOENT => "no such file or directory",
            1 | 13 => "permission denied",
            ENOMEM => "out of memory",
            EISDIR => "is a directory",
            EINVAL => "not a regular file or block device",
            EROFS => "read-only file system",
            6 => "no such device",
            EBUSY => "device busy (mounted or open exclusively elsewhere)",
            20 => "a path component is not a directory",
            36 => "path too long",
            40 => "too many symbolic links",
            _ => "cannot open",
        };
        write!(f, "{what} (errno {})", self.0)
    }
}

/// The core error for an errno the host returned from a read, write or flush.
fn io_error(errno: i32) -> Error {
    match errno {
        ENOSPC => Error::NoSpace,
        ENOMEM => Error::NoMem,
        EROFS => Error::ReadOnly,
        EINTR | ERESTART_FIRST..=ERESTART_LAST => Error::Interrupted,
        _ => Error::Io,
    }
}

/// A device the host opened; closed when dropped.
pub struct HostDev {
    ops: &'static H2sHostOps,
    handle: *mut c_void,
    size: u64,
    writable: bool,
    stopped: AtomicBool,
}

// SAFETY: the handle is the host's open file, which its block ops take from any thread and
// from several at once (Linux: kernel_read/kernel_write with a position of the call's own, as
// pread; the simulated host: `FileExt::read_at`); `ops` is a static table and `stopped` an
// atomic. Its one close is `Drop`'s, when no other reference is left.
unsafe impl Send for HostDev {}
// SAFETY: as above: every method takes `&self` and only calls the host's thread-safe ops.
unsafe impl Sync for HostDev {}

impl HostDev {
    /// Open `path` through the host, read-write when `writable`. A path that is empty, holds
    /// a NUL or is longer than [`PATH_MAX`] is refused (`EINVAL`) without asking the host.
    pub fn open(path: &[u8], writable: bool) -> core::result::Result<HostDev, OpenError> {
        let ops = ops::get().ok_or(OpenError(EINVAL))?;
        if path.is_empty() || path.len() >= PATH_MAX || path.contains(&0) {
            return Err(OpenError(EINVAL));
        }
        let mut z = Vec::new();
        z.try_reserve_exact(path.len() + 1)
            .map_err(|_| OpenError(ENOMEM))?;
        z.extend_from_slice(path);
        z.push(0);
        let mut handle = core::ptr::null_mut();
        let mut size = 0u64;
        // SAFETY: `z` is `path.len()` bytes then a NUL, alive for the call; `handle` and
        // `size` are valid for a write. The table is installed (checked above) and stays so
        // until h2s_fini, which no h2s_* call overlaps.
        let rc = unsafe {
            (ops.block_open)(
                z.as_ptr(),
                path.len(),
                i32::from(writable),
                &mut handle,
                &mut size,
            )
        };
        if rc != 0 {
            return Err(OpenError(rc.saturating_neg()));
        }
        if handle.is_null() {
            return Err(OpenError(EINVAL));
        }
        Ok(HostDev {
            ops,
            handle,
            size,
            writable,
            stopped: AtomicBool::new(false),
        })
    }

    /// Whether an I/O was refused because the caller's run must end (`should_stop`).
    pub fn interrupted(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// `Interrupted` once the host says the run must end, so a long walk over a device ends
    /// at its next block.
    fn check_stop(&self) -> Result<()> {
        // SAFETY: plain call into the host; it only looks at the calling task.
        if self.stopped.load(Ordering::Relaxed) || unsafe { (self.ops.should_stop)() } != 0 {
            self.stopped.store(true, Ordering::Relaxed);
            return Err(Error::Interrupted);
        }
        Ok(())
    }

    /// `off..off + len` lies inside the device.
    fn in_range(&self, off: u64, len: usize) -> Result<()> {
        match off.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::Io),
        }
    }

    /// One host read of up to `buf.len()` bytes at `off`: the bytes read, or the errno.
    pub(crate) fn raw_read(&self, off: u64, buf: &mut [u8]) -> i64 {
        // SAFETY: `handle` is open until drop; `buf` is valid and exclusive for its length.
        unsafe { (self.ops.block_read)(self.handle, off, buf.as_mut_ptr(), buf.len()) }
    }

    /// One host write of up to `buf.len()` bytes at `off`: the bytes written, or the errno.
    pub(crate) fn raw_write(&self, off: u64, buf: &[u8]) -> i64 {
        // SAFETY: `handle` is open until drop; `buf` is valid for its length.
        unsafe { (self.ops.block_write)(self.handle, off, buf.as_ptr(), buf.len()) }
    }

    /// Repeat `op` on what is left of `len` bytes at `off` until all are done. A transfer of
    /// 0 bytes (or more than asked) is `Io`, an errno its [`io_error`].
    fn all(&self, off: u64, len: usize, op: &mut dyn FnMut(u64, usize) -> i64) -> Result<()> {
        self.all_of(off, len, true, op)
    }

    /// [`Self::all`], looking at `should_stop` between two transfers only when `stoppable`.
    fn all_of(
        &self,
        off: u64,
        len: usize,
        stoppable: bool,
        op: &mut dyn FnMut(u64, usize) -> i64,
    ) -> Result<()> {
        self.in_range(off, len)?;
        let mut done = 0usize;
        while done < len {
            if stoppable {
                self.check_stop()?;
            }
            let n = op(off + done as u64, done);
            if n < 0 {
                return Err(io_error(i32::try_from(-n).unwrap_or(i32::MAX)));
            }
            match usize::try_from(n) {
                Ok(n) if n > 0 && n <= len - done => done += n,
                _ => return Err(Error::Io),
            }
        }
        Ok(())
    }
}

impl HostDev {
    /// Write all of `buf` at `off` even when the caller must stop: bytes a check overwrote
    /// are put back however it ends. Bounded by `buf`, which is small.
    fn write_back(&self, off: u64, buf: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        self.all_of(off, buf.len(), false, &mut |at, done| {
            self.raw_write(at, &buf[done..])
        })
    }
}

impl BlockDev for HostDev {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        self.all(off, len, &mut |at, done| {
            self.raw_read(at, &mut buf[done..])
        })
    }

    fn write_at(&self, off: u64, buf: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        self.all(off, buf.len(), &mut |at, done| {
            self.raw_write(at, &buf[done..])
        })
    }

    fn flush(&self) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        // SAFETY: `handle` is open until drop.
        match unsafe { (self.ops.block_flush)(self.handle) } {
            0 => Ok(()),
            rc => Err(io_error(rc.saturating_neg())),
        }
    }

    fn yield_point(&self) {
        // SAFETY: plain call into the host; the volume code holds no spinning lock here.
        unsafe { (self.ops.relax)() }
    }
}

impl Drop for HostDev {
    fn drop(&mut self) {
        // SAFETY: the handle came from `block_open` and is closed exactly once, here.
        unsafe { (self.ops.block_close)(self.handle) }
    }
}

/// Bytes of the scratch region [`conformance`] writes: more than one 64 KiB device buffer,
/// at an offset on no alignment, so it crosses page and buffer boundaries.
const SCRATCH_OFF: u64 = 4097;
const SCRATCH_LEN: usize = 70_001;

/// Check the host's `block_*` members on `path`, a scratch device or image of at least
/// 128 KiB: open errors, size, a write read back through a fresh open, end-of-device reads,
/// and that a read-only handle refuses writes. The bytes it overwrites are put back. One
/// `ok`/`not ok` line per check; returns (passed, failed).
#[inline(never)]
pub fn conformance(path: &[u8], out: &mut dyn Write) -> (u32, u32) {
    let mut tally = (0u32, 0u32);
    let mut report = |name: &str, r: core::result::Result<(), &'static str>| {
        let _ = match r {
            Ok(()) => {
                tally.0 += 1;
                writeln!(out, "ok {name}")
            }
            Err(why) => {
                tally.1 += 1;
                writeln!(out, "not ok {name}: {why}")
            }
        };
    };
    report(
        "open_missing_is_enoent",
        open_refused(b"/nonexistent/h2s-none", ENOENT),
    );
    report("open_directory_is_eisdir", open_refused(b"/", EISDIR));
    let size = HostDev::open(path, false).map(|d| d.size);
    report(
        "size_reported",
        match size {
            Ok(s) if s >= (128 << 10) => Ok(()),
            Ok(_) => Err("device smaller than 128 KiB"),
            Err(_) => Err("open read-only failed"),
        },
    );
    let Ok(size) = size else {
        return tally;
    };
    report("read_only_refuses_writes", read_only_refuses(path));
    report("write_flush_reopen_read", write_read_back(path));
    report("read_at_end", read_at_end(path, size));
    tally
}

fn open_refused(path: &[u8], errno: i32) -> core::result::Result<(), &'static str> {
    match HostDev::open(path, false) {
        Err(OpenError(e)) if e == errno => Ok(()),
        Err(_) => Err("wrong errno"),
        Ok(_) => Err("opened"),
    }
}

fn read_only_refuses(path: &[u8]) -> core::result::Result<(), &'static str> {
    let d = HostDev::open(path, false).map_err(|_| "open failed")?;
    if d.raw_write(SCRATCH_OFF, &[0u8; 512]) >= 0 {
        return Err("a read-only handle accepted a write");
    }
    Ok(())
}

fn scratch(fill: u8) -> core::result::Result<Vec<u8>, &'static str> {
    let mut v = Vec::new();
    v.try_reserve_exact(SCRATCH_LEN).map_err(|_| "no memory")?;
    v.resize(SCRATCH_LEN, fill);
    Ok(v)
}

fn write_read_back(path: &[u8]) -> core::result::Result<(), &'static str> {
    let mut saved = scratch(0)?;
    let mut pattern = scratch(0)?;
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    }
    // The restore goes through this handle too, not a reopen: a host may finish a close later
    // (Linux: at the caller's return to user space), and until then a block device's
    // exclusive claim refuses a new read-write open. A read-only open is no claim.
    let d = HostDev::open(path, true).map_err(|_| "open read-write failed")?;
    d.read_at(SCRATCH_OFF, &mut saved)
        .map_err(|_| "read failed")?;
    // From the pattern's first write on, every path puts the saved bytes back: a write or
    // flush that fails may have written part of it, and a killed caller's too.
    let verdict = d
        .write_at(SCRATCH_OFF, &pattern)
        .map_err(|_| "write failed")
        .and_then(|()| d.flush().map_err(|_| "flush failed"))
        .and_then(|()| {
            let mut back = scratch(0xa5)?;
            HostDev::open(path, false)
                .map_err(|_| "reopen failed")?
                .read_at(SCRATCH_OFF, &mut back)
                .map_err(|_| "read back failed")?;
            match back == pattern {
                true => Ok(()),
                false => Err("read back other bytes than written"),
            }
        });
    d.write_back(SCRATCH_OFF, &saved)
        .map_err(|_| "restore failed")?;
    // A flush never looks at `should_stop`.
    d.flush().map_err(|_| "flush of the restore failed")?;
    verdict
}

fn read_at_end(path: &[u8], size: u64) -> core::result::Result<(), &'static str> {
    let d = HostDev::open(path, false).map_err(|_| "open failed")?;
    let mut tail = [0u8; 100];
    d.read_at(size - 100, &mut tail)
        .map_err(|_| "the last bytes do not read")?;
    if d.raw_read(size, &mut tail) != 0 {
        return Err("a read at the end did not return 0");
    }
    if d.read_at(size - 50, &mut tail).is_ok() {
        return Err("a read across the end succeeded");
    }
    Ok(())
}
