//! The bounded heap kernel builds allocate from: a `linked_list_allocator` over the pool the
//! host reserved at load time, serialized by the host's heap lock. Exhaustion returns null, which
//! the core's fallible allocation turns into `Error::NoMem` (never a kernel OOM).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};

use linked_list_allocator::Heap;

use crate::ops;

/// A pool allocator. The kernel build registers [`POOL`] as the global allocator.
pub struct Pool {
    heap: UnsafeCell<Heap>,
}

// SAFETY: every access to `heap` happens between the host's `heap_lock` and `heap_unlock`
// (see `with_heap`), which serialize all threads.
unsafe impl Sync for Pool {}

/// The pool behind the kernel build's global allocator.
#[cfg_attr(target_os = "none", global_allocator)]
pub static POOL: Pool = Pool::new();

impl Pool {
    /// An empty pool: every allocation fails until [`Pool::init`].
    pub const fn new() -> Self {
        Pool {
            heap: UnsafeCell::new(Heap::empty()),
        }
    }

    fn with_heap<R>(&self, f: impl FnOnce(&mut Heap) -> R) -> Option<R> {
        let ops = ops::get()?;
        // SAFETY: the table's functions are valid while installed; the lock excludes every other
        // accessor of `heap` until the matching unlock, so the `&mut` is unique.
        unsafe {
            (ops.heap_lock)();
            let r = f(&mut *self.heap.get());
            (ops.heap_unlock)();
            Some(r)
        }
    }

    /// Hand the pool `len` bytes at `base`. Returns false if the pool already has memory.
    ///
    /// # Safety
    /// `base..base+len` must be writable memory used by nothing else until [`Pool::reset`].
    pub unsafe fn init(&self, base: *mut u8, len: usize) -> bool {
        self.with_heap(|h| {
            if h.size() != 0 {
                return false;
            }
            // SAFETY: forwarded from this function's contract.
            unsafe { h.init(base, len) };
            true
        })
        .unwrap_or(false)
    }

    /// Forget the pool's memory (the host frees it afterwards); later allocations fail.
    pub fn reset(&self) {
        self.with_heap(|h| *h = Heap::empty());
    }

    /// `(bytes in use, pool size)`.
    pub fn usage(&self) -> (usize, usize) {
        self.with_heap(|h| (h.used(), h.size())).unwrap_or((0, 0))
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: allocations come from the pool's disjoint free list; null is returned on exhaustion
// (or before init), as `GlobalAlloc` allows; `dealloc` gets back exactly what `alloc` gave.
unsafe impl GlobalAlloc for Pool {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.with_heap(|h| {
            h.allocate_first_fit(layout)
                .map_or(ptr::null_mut(), |p| p.as_ptr())
        })
        .unwrap_or(ptr::null_mut())
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if let Some(nn) = NonNull::new(p) {
            // SAFETY: `p` came from `alloc` on this pool with this layout (GlobalAlloc contract).
            self.with_heap(|h| unsafe { h.deallocate(nn, layout) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_is_null_and_memory_comes_back() {
        crate::testhost::ensure_init();
        let pool = Pool::new();
        let mut mem = vec![0u8; 4096];
        // SAFETY: `mem` outlives every use of `pool` below and nothing else touches it.
        assert!(unsafe { pool.init(mem.as_mut_ptr(), mem.len()) });
        // SAFETY: as above; a second init must be refused.
        assert!(!unsafe { pool.init(mem.as_mut_ptr(), mem.len()) });
        let l = Layout::from_size_align(512, 8).unwrap();
        let mut got = vec![];
        loop {
            // SAFETY: non-zero layout.
            let p = unsafe { pool.alloc(l) };
            if p.is_null() {
                break;
            }
            got.push(p);
        }
        assert!(
            (6..=8).contains(&got.len()),
            "{} blocks from 4 KiB",
            got.len()
        );
        assert!(pool.usage().0 >= got.len() * 512);
        for p in got.drain(..) {
            // SAFETY: each pointer came from `alloc` with `l`.
            unsafe { pool.dealloc(p, l) };
        }
        assert_eq!(pool.usage().0, 0);
        // SAFETY: non-zero layout.
        let p = unsafe { pool.alloc(l) };
        assert!(!p.is_null());
        // SAFETY: from `alloc` with `l`.
        unsafe { pool.dealloc(p, l) };
        pool.reset();
        assert_eq!(pool.usage(), (0, 0));
        // SAFETY: non-zero layout; an empty pool returns null.
        assert!(unsafe { pool.alloc(l) }.is_null());
    }
}
