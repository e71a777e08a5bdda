//! The on-demand reader of a `volume sync` node's file data: a read-only handle of its own on
//! the node's device, shared by the node's store (its payload source, read by the sync
//! threads, several at once) and the command, which keeps a reference to the end so that the
//! handle is closed by the caller, not by whichever kernel thread drops the store last.
//!
//! A handle of its own rather than the command's: the command's device counts and fails its
//! writes for the crash tests (state of one thread, not shareable) and belongs to the job
//! thread of a load or commit, while these reads come from every sync thread at any time. A
//! read-only open is no claim, so it succeeds beside the command's exclusive read-write one,
//! and both see one page cache: what a commit wrote through the other is what this reads.

use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use hammer2_synchro::host::sleep;
use hammer2_synchro::mem::TryArc;
use hammer2_synchro::volume::BlockDev;
use hammer2_synchro::{Error, Result};

use crate::block::{HostDev, OpenError};
use crate::host::KERNEL_HOST;

/// A node's read-only handle, with the command's cancel flag and the test option's delay.
pub struct ReadDev {
    dev: HostDev,
    cancel: TryArc<AtomicBool>,
    delay: Duration,
}

/// A shared [`ReadDev`]: what a store's payload source reads through, and what the command
/// keeps until its end.
#[derive(Clone)]
pub struct Reader(TryArc<ReadDev>);

impl Reader {
    /// Open `path` read-only in the caller's context. Every read fails with `Interrupted`
    /// once `cancel` is set; each first waits `delay` (a slow device for the tests).
    pub fn open(
        path: &[u8],
        cancel: TryArc<AtomicBool>,
        delay: Duration,
    ) -> core::result::Result<Reader, OpenError> {
        let dev = HostDev::open(path, false)?;
        let shared = TryArc::new(ReadDev { dev, cancel, delay });
        shared
            .map(Reader)
            .map_err(|_| OpenError(crate::block::ENOMEM))
    }

    fn check_cancel(&self) -> Result<()> {
        match self.0.cancel.load(Ordering::Acquire) {
            true => Err(Error::Interrupted),
            false => Ok(()),
        }
    }
}

impl BlockDev for Reader {
    fn size(&self) -> u64 {
        self.0.dev.size()
    }
    /// A cancelled command's read fails before it reaches the device, and after the delay:
    /// a sync thread in the middle of its reads gives up at the next one.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.check_cancel()?;
        if !self.0.delay.is_zero() {
            sleep(&KERNEL_HOST, self.0.delay);
            self.check_cancel()?;
        }
        self.0.dev.read_at(off, buf)
    }
    fn yield_point(&self) {
        self.0.dev.yield_point()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testhost::{ensure_init, BLOCK_SERIAL};
    use std::time::{Duration, Instant};

    /// A read waiting out its delay when the command is cancelled fails instead of reading,
    /// and every later read fails at once.
    #[test]
    fn a_cancelled_commands_reads_fail_promptly() {
        let _g = BLOCK_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        ensure_init();
        let p = std::env::temp_dir().join(format!("h2s-volread-{}", std::process::id()));
        std::fs::write(&p, [0x5a; 8192]).unwrap();
        let cancel = TryArc::new(AtomicBool::new(false)).unwrap();
        let path = p.to_str().unwrap().as_bytes();
        let r = Reader::open(path, cancel.clone(), Duration::from_millis(300)).unwrap();
        let mut buf = [0u8; 4096];
        r.read_at(4096, &mut buf).unwrap();
        assert_eq!(buf, [0x5a; 4096]);
        let other = r.clone();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            other.read_at(0, &mut buf)
        });
        std::thread::sleep(Duration::from_millis(100));
        cancel.store(true, Ordering::Release);
        assert_eq!(t.join().unwrap(), Err(Error::Interrupted));
        let t0 = Instant::now();
        assert_eq!(r.read_at(0, &mut buf), Err(Error::Interrupted));
        assert!(
            t0.elapsed() < Duration::from_millis(100),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(r.write_at(0, &buf), Err(Error::ReadOnly));
        drop(r);
        std::fs::remove_file(p).unwrap();
    }
}
