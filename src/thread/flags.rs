//! The per-thread flag word (`HAMMER2_THREAD_*`), with the original values (HAMMER2-FACTS §1).

use core::fmt;

bitflags::bitflags! {
    /// One 32-bit word per sync thread: requests from requesters, acknowledgements from the thread.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ThreadFlags: u32 {
        /// Unmount request (`HAMMER2_THREAD_UNMOUNTING`).
        const UNMOUNTING = 0x0001;
        /// The thread belongs to a device, not a PFS (`HAMMER2_THREAD_DEV`).
        const DEV = 0x0002;
        /// The thread is in its idle or frozen sleep: a signaller must wake it.
        const WAITING = 0x0004;
        /// Request: reset sync state (the set of masters changed).
        const REMASTER = 0x0008;
        /// Request: exit.
        const STOP = 0x0010;
        /// Request: go idle and stay idle.
        const FREEZE = 0x0020;
        /// Acknowledgement: the thread is frozen.
        const FROZEN = 0x0040;
        /// XOP work is queued (XOP worker threads).
        const XOPQ = 0x0080;
        /// Acknowledgement: the thread has exited (also the state of a slot with no thread).
        const STOPPED = 0x0100;
        /// Request: leave the frozen state.
        const UNFREEZE = 0x0200;
        /// A requester sleeps waiting for an acknowledgement.
        const CLIENTWAIT = 0x0400;
        /// Not in the original: the thread took a REMASTER request and is running
        /// `SyncWork::remaster`; cleared when the reset is done (the remaster acknowledgement).
        const RESETTING = 0x0800;
        /// Not in the original: request for a synchronization pass now (`signal`). A pass
        /// consumes it before it starts, so a signal during a pass causes one more pass.
        const PASSREQ = 0x1000;
        /// Not in the original: a `Threads::start` owns the slot (claimed from STOPPED) and has
        /// not finished creating its thread. It lets start sleep without holding the slot's
        /// spin lock; stoppers wait for it to clear before they look for the thread's handle.
        const STARTING = 0x2000;
    }
}

/// The requests that wake a sleeping thread (`HAMMER2_THREAD_WAKEUP_MASK`).
pub const WAKEUP_MASK: ThreadFlags = ThreadFlags::UNMOUNTING
    .union(ThreadFlags::REMASTER)
    .union(ThreadFlags::STOP)
    .union(ThreadFlags::FREEZE)
    .union(ThreadFlags::XOPQ);

/// The requests that make a running pass bail out at its next chain operation.
pub const BREAK_MASK: ThreadFlags = ThreadFlags::STOP
    .union(ThreadFlags::REMASTER)
    .union(ThreadFlags::FREEZE);

/// Displays a raw flag word by name: `FROZEN|WAITING`, `-` for none, unknown bits in hex.
#[derive(Debug, Clone, Copy)]
pub struct FlagNames(u32);

/// The set flags of `word` by name, for status output and test messages.
pub fn flag_names(word: u32) -> FlagNames {
    FlagNames(word)
}

impl fmt::Display for FlagNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = ThreadFlags::from_bits_truncate(self.0);
        let unknown = self.0 & !ThreadFlags::all().bits();
        let mut first = true;
        for (name, _) in flags.iter_names() {
            if !first {
                f.write_str("|")?;
            }
            f.write_str(name)?;
            first = false;
        }
        if unknown != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{unknown:#x}")?;
            first = false;
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn original_values() {
        assert_eq!(ThreadFlags::WAITING.bits(), 0x4);
        assert_eq!(ThreadFlags::STOPPED.bits(), 0x100);
        assert_eq!(ThreadFlags::CLIENTWAIT.bits(), 0x400);
        assert_eq!(WAKEUP_MASK.bits(), 0x1 | 0x8 | 0x10 | 0x20 | 0x80);
    }

    #[test]
    fn names() {
        assert_eq!(format!("{}", flag_names(0x44)), "WAITING|FROZEN");
        assert_eq!(format!("{}", flag_names(0)), "-");
        assert_eq!(
            format!("{}", flag_names(0x100 | 0x8000_0000)),
            "STOPPED|0x80000000"
        );
    }
}
