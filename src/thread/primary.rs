//! The sync thread's loop (`hammer2_primary_sync_thread`).

use core::time::Duration;

use super::flags::{ThreadFlags as F, BREAK_MASK};
use super::interrupt::Brk;
use super::word::Word;
use super::SyncWork;
use crate::Error;

/// Clear `clear` (always including CLIENTWAIT), set `set`, and wake requesters if one waited
/// (`hammer2_thr_return`).
pub(crate) fn ack<W: Word>(w: &W, set: F, clear: F) {
    let mask = clear.union(F::CLIENTWAIT).bits();
    let old = w.update(|v| (v | set.bits()) & !mask);
    if old & F::CLIENTWAIT.bits() != 0 {
        w.wake();
    }
}

/// Publish WAITING against the tested value `flags`, then sleep while the word still holds it.
/// Returns at once when the word changed since `flags` was read.
// DEVIATION (bug 1): the original's idle sleep is not interlocked, so a signal between its CAS
// and its tsleep is lost (for up to the 5 s poll). Here both sleeps are word-compare sleeps on
// the value the CAS published.
fn interlocked_idle<W: Word>(w: &W, flags: u32, timeout: Option<Duration>) {
    let waiting = flags | F::WAITING.bits();
    if w.cas(flags, waiting) {
        w.idle_sleep(waiting, timeout);
        w.update(|v| v & !F::WAITING.bits());
    }
}

/// Run the sync loop until STOP, then publish STOPPED.
///
/// `idle` gives the idle poll for each sleep (`None`: only a request wakes the thread);
/// `report` gets every pass error other than an interruption.
///
/// The word must stay valid until this function has returned: the requester that sees STOPPED
/// may reuse the slot only after it joined the thread through the host.
pub(crate) fn run<W: Word>(
    w: &W,
    work: &dyn SyncWork,
    idle: &dyn Fn() -> Option<Duration>,
    report: &dyn Fn(Error),
) {
    // The node's view of the roles is read at start, as after a REMASTER.
    work.remaster();
    loop {
        let mut flags = w.load();
        if flags & F::STOP.bits() != 0 {
            break;
        }
        if flags & F::FREEZE.bits() != 0 {
            let new = (flags & !(F::FREEZE | F::CLIENTWAIT).bits()) | F::FROZEN.bits();
            if !w.cas(flags, new) {
                continue;
            }
            if flags & F::CLIENTWAIT.bits() != 0 {
                w.wake();
            }
            flags = new;
        }
        if flags & F::UNFREEZE.bits() != 0 {
            let new = flags & !(F::UNFREEZE | F::FROZEN | F::CLIENTWAIT).bits();
            if !w.cas(flags, new) {
                continue;
            }
            if flags & F::CLIENTWAIT.bits() != 0 {
                w.wake();
            }
            flags = new;
        }
        // DEVIATION (bug 5): the original tests the live word but CASes against the snapshot and
        // resets nothing. Here the snapshot is tested, the reset really runs and is acknowledged,
        // and it is handled before the frozen sleep so a frozen thread still answers a remaster.
        if flags & F::REMASTER.bits() != 0 {
            let new = (flags & !F::REMASTER.bits()) | F::RESETTING.bits();
            if !w.cas(flags, new) {
                continue;
            }
            work.remaster();
            ack(w, F::empty(), F::RESETTING);
            continue;
        }
        if flags & F::FROZEN.bits() != 0 {
            interlocked_idle(w, flags, None);
            continue;
        }
        if flags & F::PASSREQ.bits() != 0 {
            let new = flags & !F::PASSREQ.bits();
            if !w.cas(flags, new) {
                continue;
            }
            flags = new;
        }
        // DEVIATION (bug 2): the original polls for a break only between deferred inodes; the
        // data layer polls this at every chain operation, so a request is seen within one.
        let poll = || w.load() & BREAK_MASK.bits() != 0;
        let brk = Brk::interruptible(&poll, w.intr_state());
        match work.pass_with(&brk) {
            Ok(()) | Err(Error::InProgress) => {}
            Err(e) => report(e),
        }
        // Any change to the word during the pass makes this CAS fail: loop at once.
        interlocked_idle(w, flags, idle());
    }
    // DEVIATION (bug 3): the original wakes `thr` after return(STOPPED), when the requester may
    // already have freed it. Here the wake is part of the final acknowledgement, on the word the
    // requester keeps alive until it has joined this thread; nothing is touched afterwards.
    ack(w, F::STOPPED, F::WAITING);
}
