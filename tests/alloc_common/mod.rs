//! The failing global allocator of the allocation-failure tests: `System`, except that an
//! allocation the test's `should_fail` picks returns null, and every byte is counted in `live`
//! so a test can tell a leak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

/// `System` with injected failures and a live-bytes count.
pub struct FailingAlloc {
    /// Whether the allocation being made must fail (called for every allocation; it must not
    /// allocate).
    pub should_fail: fn() -> bool,
    /// Bytes allocated minus bytes freed, by every thread.
    pub live: &'static AtomicI64,
}

impl FailingAlloc {
    fn account(&self, delta: i64) {
        self.live.fetch_add(delta, Ordering::SeqCst);
    }
}

// SAFETY: every call forwards to `System` with the caller's arguments, or returns null (which
// `GlobalAlloc` allows for a failed allocation); the counters are atomics and whatever
// `should_fail` reads, which must not allocate.
unsafe impl GlobalAlloc for FailingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if (self.should_fail)() {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            self.account(layout.size() as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if (self.should_fail)() {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.account(layout.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.account(-(layout.size() as i64));
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if (self.should_fail)() {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            self.account(new_size as i64 - layout.size() as i64);
        }
        p
    }
}
