//! The store's arena lock, with flags beside it that say, without taking the lock, whether
//! the pinned bytes are past the pinned limit ([`super::Store::past_pinned_limit`], asked at
//! every chain operation of a sync pass) and the chains in memory past theirs
//! ([`super::Store::past_chain_limit`]). Only a write lock changes the pinned bytes or the
//! limit, so the flag is set again as each write lock is released, still under it.

use core::sync::atomic::{AtomicBool, Ordering};

use super::Arena;

/// A reader-writer spin lock over a store's [`Arena`], keeping the pinned-limit flag.
pub(super) struct ArenaLock {
    lock: spin::RwLock<Arena>,
    past_limit: AtomicBool,
    past_chains: AtomicBool,
}

/// A held write lock: derefs to the arena; sets the flag as it is released.
pub(super) struct ArenaWrite<'a> {
    guard: spin::RwLockWriteGuard<'a, Arena>,
    past_limit: &'a AtomicBool,
    past_chains: &'a AtomicBool,
}

impl ArenaLock {
    pub(super) fn new(a: Arena) -> ArenaLock {
        ArenaLock {
            past_limit: AtomicBool::new(a.past_pinned_limit()),
            past_chains: AtomicBool::new(a.past_chain_limit()),
            lock: spin::RwLock::new(a),
        }
    }

    /// Lock shared.
    pub(super) fn read(&self) -> spin::RwLockReadGuard<'_, Arena> {
        self.lock.read()
    }

    /// Lock exclusively.
    pub(super) fn write(&self) -> ArenaWrite<'_> {
        ArenaWrite {
            guard: self.lock.write(),
            past_limit: &self.past_limit,
            past_chains: &self.past_chains,
        }
    }

    /// The arena, to a caller that owns the store: the flag is set again when `f` returns.
    pub(super) fn with_mut<R>(&mut self, f: impl FnOnce(&mut Arena) -> R) -> R {
        let a = self.lock.get_mut();
        let r = f(a);
        *self.past_limit.get_mut() = a.past_pinned_limit();
        *self.past_chains.get_mut() = a.past_chain_limit();
        r
    }

    /// Whether the pinned bytes were past the limit when the last write lock was released.
    /// Relaxed: a pass that reads it late ends at its next chain operation instead.
    pub(super) fn past_pinned_limit(&self) -> bool {
        self.past_limit.load(Ordering::Relaxed)
    }

    /// Whether the chains in memory were past their limit when the last write lock was
    /// released.
    pub(super) fn past_chain_limit(&self) -> bool {
        self.past_chains.load(Ordering::Relaxed)
    }
}

impl core::ops::Deref for ArenaWrite<'_> {
    type Target = Arena;
    fn deref(&self) -> &Arena {
        &self.guard
    }
}

impl core::ops::DerefMut for ArenaWrite<'_> {
    fn deref_mut(&mut self) -> &mut Arena {
        &mut self.guard
    }
}

impl Drop for ArenaWrite<'_> {
    fn drop(&mut self) {
        // Before the guard (a field) releases the lock: no writer changes the bytes between.
        self.past_limit
            .store(self.guard.past_pinned_limit(), Ordering::Relaxed);
        self.past_chains
            .store(self.guard.past_chain_limit(), Ordering::Relaxed);
    }
}
