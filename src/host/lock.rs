//! [`HostLock`]: a host lock the core owns for its own state (not a chain lock), on the same
//! primitive as chain locks, so a kernel host supplies one lock type for both.

use super::{Host, LockMode, RawLock, HOST_LOCK_DEPTH};
use crate::Result;

/// A host lock owned by the core (not a chain lock), destroyed on drop.
pub struct HostLock {
    host: &'static dyn Host,
    raw: Option<RawLock>,
}

/// A held [`HostLock`]; released on drop.
#[must_use = "the lock is released when the guard is dropped"]
pub struct HostLockGuard<'a> {
    lock: &'a HostLock,
    mode: LockMode,
}

impl HostLock {
    /// Create one on `host`.
    pub fn new(host: &'static dyn Host) -> Result<HostLock> {
        Ok(HostLock {
            host,
            raw: Some(host.lock_create()?),
        })
    }
    /// Acquire it (may sleep).
    pub fn hold(&self, mode: LockMode) -> HostLockGuard<'_> {
        if let Some(r) = &self.raw {
            self.host.lock(r, mode, HOST_LOCK_DEPTH);
        }
        HostLockGuard { lock: self, mode }
    }
}

impl Drop for HostLockGuard<'_> {
    fn drop(&mut self) {
        if let Some(r) = &self.lock.raw {
            self.lock.host.unlock(r, self.mode);
        }
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        if let Some(r) = self.raw.take() {
            self.host.lock_destroy(r);
        }
    }
}
