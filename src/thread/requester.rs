//! Requester operations (`hammer2_thr_signal`, `hammer2_thr_wait`, freeze/unfreeze/remaster/stop).
//!
//! Each operation sets its request bit and sleeps until the thread acknowledged that very
//! request. An acknowledgement is the thread *consuming* the request bit (which only the thread
//! clears), not the resulting state, so a requester is never left waiting for a state that a
//! concurrent request already undid (freeze vs unfreeze, remaster vs remaster).
//!
//! A request to a word without a thread (STOPPED set), or whose thread stops before it
//! acknowledges, is a successful no-op, as the original's requesters return at once when the
//! thread was never created (`if (thr->td == NULL) return;`): a stopped thread is neither
//! running nor frozen, and has nothing left to reset or to stop.

use core::time::Duration;

use super::flags::{ThreadFlags as F, BREAK_MASK};
use super::word::Word;
use crate::{Error, Result};

/// How long a requester sleeps before re-testing (the original's 60 s); the interlock makes the
/// re-test a safety net only.
const CLIENT_POLL: Duration = Duration::from_secs(60);

/// Set `req` and wake the thread if it sleeps (`hammer2_thr_signal`). `false` if no thread
/// runs on the word (STOPPED set): nothing is changed then.
pub(crate) fn signal<W: Word>(w: &W, req: F) -> bool {
    loop {
        let old = w.load();
        if old & F::STOPPED.bits() != 0 {
            return false;
        }
        let new = (old | req.bits()) & !F::WAITING.bits();
        if w.cas(old, new) {
            if old & F::WAITING.bits() != 0 {
                w.wake();
            }
            // A running pass may sleep in a wait that the flag word does not wake.
            if req.intersects(BREAK_MASK) {
                w.interrupt();
            }
            return true;
        }
    }
}

/// Claim a stopped slot for a start: STOPPED -> STOPPED|STARTING. `Error::Busy` if a thread
/// runs there (STOPPED clear) or another start owns it (STARTING set). Requesters still see
/// STOPPED, so their requests stay no-ops until the starter publishes the thread.
pub(crate) fn claim_start<W: Word>(w: &W) -> Result<()> {
    loop {
        let old = w.load();
        if old & F::STOPPED.bits() == 0 || old & F::STARTING.bits() != 0 {
            return Err(Error::Busy);
        }
        if w.cas(old, old | F::STARTING.bits()) {
            return Ok(());
        }
    }
}

/// Sleep until no start owns the word (STARTING clear), interlocked through CLIENTWAIT like
/// [`wait`]; the starter clears STARTING with an acknowledgement, which wakes us.
pub(crate) fn wait_started<W: Word>(w: &W) {
    loop {
        let old = w.load();
        if old & F::STARTING.bits() == 0 {
            return;
        }
        let new = old | F::CLIENTWAIT.bits();
        if new == old || w.cas(old, new) {
            w.sleep(new, Some(CLIENT_POLL));
        }
    }
}

/// Sleep until `done(word)` or the thread stopped; returns the word that ended the wait
/// (`hammer2_thr_wait`, interlocked through CLIENTWAIT).
pub(crate) fn wait<W: Word>(w: &W, done: impl Fn(u32) -> bool) -> u32 {
    loop {
        let old = w.load();
        if done(old) || old & F::STOPPED.bits() != 0 {
            return old;
        }
        let new = old | F::CLIENTWAIT.bits();
        // Publish CLIENTWAIT against the value just tested: if the thread changed the word in
        // between the CAS fails and we re-test; after it, the thread sees CLIENTWAIT and wakes.
        if new == old || w.cas(old, new) {
            w.sleep(new, Some(CLIENT_POLL));
        }
    }
}

/// Signal `req`, then wait until none of `pending` is set or the thread stopped. `true` when
/// the thread acknowledged, `false` when none ran or it stopped first (nothing to do then).
fn request<W: Word>(w: &W, req: F, pending: F) -> bool {
    request_observed(w, req, pending, &|| {})
}

/// [`request`], calling `signalled` once the request is in the word, before waiting (tests use
/// it to count the work done after the request became visible).
fn request_observed<W: Word>(w: &W, req: F, pending: F, signalled: &dyn Fn()) -> bool {
    if !signal(w, req) {
        return false;
    }
    signalled();
    wait(w, |v| v & pending.bits() == 0) & pending.bits() == 0
}

/// Freeze: returns once the thread consumed FREEZE, which it does by setting FROZEN. Like every
/// operation here, `false` when no thread acknowledged (none ran, or it stopped first).
pub(crate) fn freeze<W: Word>(w: &W) -> bool {
    request(w, F::FREEZE, F::FREEZE)
}

/// [`freeze`], calling `signalled` between setting FREEZE and waiting for the acknowledgement.
pub(crate) fn freeze_observed<W: Word>(w: &W, signalled: &dyn Fn()) -> bool {
    request_observed(w, F::FREEZE, F::FREEZE, signalled)
}

/// Unfreeze: returns once the thread left the frozen state.
///
/// Not in the original: a thread asleep in its frozen sleep (FROZEN and WAITING set) is taken out
/// of the frozen state here, by the same CAS that wakes it, as `kthread_unpark` does: it has
/// nothing to acknowledge (WAITING means its next step is to re-read the word), so waiting for
/// it would only add a wakeup and a context switch to every unfreeze. Otherwise (it has not gone
/// to sleep since the freeze) it consumes UNFREEZE itself, which the requester waits for.
pub(crate) fn unfreeze<W: Word>(w: &W) -> bool {
    let asleep = F::FROZEN.union(F::WAITING).bits();
    loop {
        let old = w.load();
        if old & F::STOPPED.bits() != 0 {
            return false;
        }
        if old & asleep != asleep || old & (F::FREEZE | F::UNFREEZE).bits() != 0 {
            return request(w, F::UNFREEZE, F::UNFREEZE);
        }
        // Clearing CLIENTWAIT too: the wake below reaches every waiter, and each re-tests.
        if w.cas(old, old & !(asleep | F::CLIENTWAIT.bits())) {
            w.wake();
            return true;
        }
    }
}

/// Remaster: returns once the thread consumed REMASTER and finished `SyncWork::remaster`.
// DEVIATION (bug 5): the original signals REMASTER and returns without waiting, and its reset is
// empty; here the thread runs the reset and the requester waits for it. A REMASTER signalled
// while a reset runs sets REMASTER again, so every waiter returns after a reset that began
// after its own request.
pub(crate) fn remaster<W: Word>(w: &W) -> bool {
    request(w, F::REMASTER, F::REMASTER.union(F::RESETTING))
}

/// Stop: returns once the thread published STOPPED (the loom model's stop; `Threads::stop`
/// signals STOP and joins the thread instead).
#[cfg(all(test, loom))]
pub(crate) fn stop<W: Word>(w: &W) -> bool {
    let asked = signal(w, F::STOP);
    if asked {
        wait(w, |_| false);
    }
    asked
}

/// Ask for a pass now; does not wait (a frozen thread runs it once unfrozen).
pub(crate) fn kick<W: Word>(w: &W) -> bool {
    signal(w, F::PASSREQ)
}
