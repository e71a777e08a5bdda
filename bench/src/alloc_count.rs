//! A counting global allocator: live bytes and their high-water mark, so the bench can measure
//! the peak memory of one `sync_node` call (peak live bytes during the call minus live before).
//!
//! The counters are process-wide; the bench measures while no other thread allocates.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hammer2_synchro::userland::blocks::Blocks;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static SEEN: AtomicBool = AtomicBool::new(false);

/// The CLI's allocator (the system's, block buffers on huge pages) with byte counters.
/// Install it in a binary with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
pub struct CountingAlloc;

fn grow(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrink(by: usize) {
    LIVE.fetch_sub(by, Ordering::Relaxed);
}

// SAFETY: every method forwards to `Blocks` (the system allocator, block buffers on huge
// pages, as the CLI's) with the caller's arguments unchanged, so `Blocks`'s guarantees hold;
// the counters are only bookkeeping on the side.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded under the caller's `GlobalAlloc::alloc` contract.
        let p = unsafe { Blocks.alloc(layout) };
        if !p.is_null() {
            SEEN.store(true, Ordering::Relaxed);
            grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded under the caller's `GlobalAlloc::alloc_zeroed` contract.
        let p = unsafe { Blocks.alloc_zeroed(layout) };
        if !p.is_null() {
            SEEN.store(true, Ordering::Relaxed);
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded under the caller's `GlobalAlloc::dealloc` contract.
        unsafe { Blocks.dealloc(ptr, layout) };
        shrink(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded under the caller's `GlobalAlloc::realloc` contract.
        let p = unsafe { Blocks.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                shrink(layout.size() - new_size);
            }
        }
        p
    }
}

/// Whether a [`CountingAlloc`] is the global allocator of this process (it has counted at
/// least one allocation). Without it every measurement here reads zero.
pub fn installed() -> bool {
    let probe = std::hint::black_box(vec![0u8; 64]);
    drop(probe);
    SEEN.load(Ordering::Relaxed)
}

/// Bytes currently allocated.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Start a new peak window at the current live bytes; returns them.
pub fn reset_peak() -> usize {
    let now = live();
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// Highest live bytes since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Peak live bytes while `f` ran, above the live bytes before it, and `f`'s result.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = reset_peak();
    let r = f();
    (peak().saturating_sub(before), r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static A: CountingAlloc = CountingAlloc;

    #[test]
    fn counts_allocations_and_reallocations_in_the_peak_window() {
        assert!(installed());
        const BIG: usize = 64 << 20;
        // Other tests allocate concurrently, but far less than BIG.
        let (peak, len) = peak_during(|| {
            let v = std::hint::black_box(vec![7u8; BIG]);
            v.len()
        });
        assert_eq!(len, BIG);
        assert!(peak >= BIG / 2, "peak {peak}");
        let (peak, ()) = peak_during(|| ());
        assert!(peak < BIG / 2, "peak {peak} without allocating");
        // Growth through realloc counts too. (One test: the peak window is process-wide.)
        let (peak, ()) = peak_during(|| {
            let mut v: Vec<u8> = Vec::with_capacity(16);
            v.resize(BIG, 1);
            std::hint::black_box(&v);
        });
        assert!(peak >= BIG / 2, "peak {peak}");
    }
}
