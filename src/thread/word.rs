//! The flag word as the protocol sees it: atomics plus an address-keyed interlocked sleep.
//!
//! The protocol ([`super::requester`], [`super::primary`]) is written against [`Word`] so that
//! the same code runs on a host (through [`HostWord`]) and under the loom model checker.

use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use super::interrupt::{self, HostIntr, IntrState, Sleeper};
use crate::host::Host;

/// A thread's flag word and the sleep/wake primitives keyed by it.
pub(crate) trait Word {
    /// The current value.
    fn load(&self) -> u32;
    /// Replace `old` by `new` if the word still holds `old`.
    fn cas(&self, old: u32, new: u32) -> bool;
    /// Sleep while the word equals `expected` (interlocked: a wake after any store that changed
    /// the word is never lost), for at most `timeout`. Spurious returns are allowed.
    fn sleep(&self, expected: u32, timeout: Option<Duration>);
    /// Wake every sleeper on the word.
    fn wake(&self);

    /// The sync thread's idle sleep. Interlocked like [`Word::sleep`]; the loom model overrides
    /// it with the original's non-interlocked sleep to show the checker catches bug 1.
    fn idle_sleep(&self, expected: u32, timeout: Option<Duration>) {
        self.sleep(expected, timeout);
    }

    /// Add one to the word (wrapping), so that a sleeper on its old value wakes.
    fn bump(&self) {
        loop {
            let old = self.load();
            if self.cas(old, old.wrapping_add(1)) {
                return;
            }
        }
    }

    /// The interrupt state of the thread this word belongs to (`None`: its requests interrupt
    /// no wait).
    fn intr_state(&self) -> Option<&dyn IntrState> {
        None
    }

    /// Interrupt the thread's pass if it sleeps in a wait (after a break request was set).
    fn interrupt(&self) {
        if let Some(st) = self.intr_state() {
            interrupt::fire(st);
        }
    }

    /// Atomically apply `f` to the word; returns the value it replaced.
    fn update(&self, f: impl Fn(u32) -> u32) -> u32
    where
        Self: Sized,
    {
        loop {
            let old = self.load();
            if self.cas(old, f(old)) {
                return old;
            }
        }
    }
}

impl<W: Word> Sleeper for W {
    fn sleep(&self, expected: u32, timeout: Option<Duration>) {
        Word::sleep(self, expected, timeout);
    }
    fn bump(&self) {
        Word::bump(self);
    }
    fn wake(&self) {
        Word::wake(self);
    }
}

/// A flag word in memory, slept on through a [`Host`].
pub(crate) struct HostWord<'a> {
    pub(crate) word: &'a AtomicU32,
    pub(crate) host: &'a dyn Host,
    /// The interrupt state of a thread's flag word (`None` for other words).
    pub(crate) intr: Option<HostIntr<'a>>,
}

impl Word for HostWord<'_> {
    fn load(&self) -> u32 {
        self.word.load(Ordering::SeqCst)
    }
    fn cas(&self, old: u32, new: u32) -> bool {
        self.word
            .compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
    fn sleep(&self, expected: u32, timeout: Option<Duration>) {
        self.host.sleep_on_word(self.word, expected, timeout);
    }
    fn wake(&self) {
        self.host.wake_word(self.word);
    }
    fn intr_state(&self) -> Option<&dyn IntrState> {
        self.intr.as_ref().map(|i| i as &dyn IntrState)
    }
}
