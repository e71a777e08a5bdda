//! A memory budget for the userland host: a global allocator that counts the bytes in use and
//! fails an allocation that would pass the limit, as the kernel's pool fails once it is exhausted.
//!
//! The core turns a failed allocation into [`crate::Error::NoMem`] on every fallible path, so a
//! run over budget ends with `line N: out of memory` exactly as in the kernel. A program opts in
//! by installing [`Budget`] as its `#[global_allocator]` and calling [`set_limit`]; without a
//! limit the allocator only counts.
//!
//! The standard library allocates infallibly in a few places the host cannot avoid: starting a
//! thread, `parking_lot`'s per-thread data and wait-queue table, reading an environment variable
//! once. Failing those would abort the process, so the host runs them under [`overdraft`], which
//! lets the calling thread's allocations through the limit (they are counted all the same). They
//! are small and bounded by the number of threads a cluster runs, not by anything a scenario
//! stores.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::blocks::Blocks;

/// Bytes allocated and not yet freed, by every thread.
static IN_USE: AtomicUsize = AtomicUsize::new(0);
/// The most bytes that may be in use; `usize::MAX` means no limit.
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

thread_local! {
    /// Nesting depth of [`overdraft`] on this thread. Const-initialised and without a destructor,
    /// so the allocator can read it without allocating, at any point of a thread's life.
    static OVERDRAFT: Cell<u32> = const { Cell::new(0) };
}

/// The budgeted global allocator: the system allocator (block buffers on huge pages:
/// [`super::blocks`]), plus the count and the limit.
#[derive(Debug)]
pub struct Budget;

/// Set the most bytes the process may have allocated at once (`usize::MAX`: no limit).
///
/// Call it on the thread that will run scenarios, before it runs any: it also makes that
/// thread's one-time infallible allocations (standard output's buffer, `parking_lot`'s data)
/// while nothing can fail them yet.
pub fn set_limit(bytes: usize) {
    overdraft(|| {
        let _ = std::io::stdout();
        prime_parking();
    });
    LIMIT.store(bytes, Ordering::SeqCst);
}

/// Bytes allocated through [`Budget`] and not yet freed.
pub fn in_use() -> usize {
    IN_USE.load(Ordering::SeqCst)
}

/// Run `f` with this thread's allocations let through the limit: only for the standard
/// library's infallible allocations listed in the module documentation.
pub fn overdraft<R>(f: impl FnOnce() -> R) -> R {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            let _ = OVERDRAFT.try_with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    let _ = OVERDRAFT.try_with(|d| d.set(d.get().saturating_add(1)));
    let _leave = Leave;
    f()
}

/// Whether this thread is in an [`overdraft`] now: an allocator that fails allocations on its
/// own terms (a test's fault injector) must let these through too, or the process aborts.
pub fn overdrawn() -> bool {
    // A thread whose locals are gone is exiting: let its last allocations through.
    OVERDRAFT.try_with(|d| d.get() > 0).unwrap_or(true)
}

/// Make `parking_lot_core` create this thread's wait-queue data now: it allocates it, and grows
/// its global table, infallibly on a thread's first park.
pub(crate) fn prime_parking() {
    let key = &IN_USE as *const AtomicUsize as usize;
    // SAFETY: `validate` returns false, so nothing is queued and `park` returns at once; the
    // callbacks do not panic and do not call into parking_lot; the key is only used as a key.
    unsafe {
        parking_lot_core::park(
            key,
            || false,
            || {},
            |_, _| {},
            parking_lot_core::DEFAULT_PARK_TOKEN,
            None,
        );
    }
}

/// Count `size` more bytes in use, unless that passes the limit outside an overdraft.
fn take(size: usize) -> bool {
    let limit = LIMIT.load(Ordering::Relaxed);
    let over = overdrawn();
    let mut cur = IN_USE.load(Ordering::Relaxed);
    loop {
        let Some(next) = cur.checked_add(size) else {
            return false;
        };
        if next > limit && !over {
            return false;
        }
        match IN_USE.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

fn give_back(size: usize) {
    IN_USE.fetch_sub(size, Ordering::Relaxed);
}

/// `alloc` of `size` bytes if the budget has them, counted while it holds them.
fn counted(size: usize, alloc: impl FnOnce() -> *mut u8) -> *mut u8 {
    if !take(size) {
        return core::ptr::null_mut();
    }
    let p = alloc();
    if p.is_null() {
        give_back(size);
    }
    p
}

// SAFETY: every call forwards to `Blocks` (the system allocator, block buffers on huge
// pages) with the caller's arguments, or returns null, which `GlobalAlloc` allows for a
// failed allocation; the count is plain atomics and a const thread-local, none of which
// allocates.
unsafe impl GlobalAlloc for Budget {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        counted(layout.size(), || unsafe { Blocks.alloc(layout) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc_zeroed` requires.
        counted(layout.size(), || unsafe { Blocks.alloc_zeroed(layout) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's block, allocated by this allocator (hence `Blocks`) with `layout`.
        unsafe { Blocks.dealloc(ptr, layout) };
        give_back(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !take(new_size - old) {
            return core::ptr::null_mut();
        }
        // SAFETY: the caller's block and sizes, as `GlobalAlloc::realloc` requires.
        let p = unsafe { Blocks.realloc(ptr, layout, new_size) };
        match (p.is_null(), new_size > old) {
            // Failed: the old block stays, with its old size.
            (true, true) => give_back(new_size - old),
            (true, false) => {}
            (false, true) => {}
            (false, false) => give_back(old - new_size),
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test, since it moves the process-wide limit (the test binary's own allocator is not
    /// `Budget`, so nothing else in it is affected).
    #[test]
    fn the_limit_fails_allocations_past_it_and_overdraft_lets_them_through() {
        let l = |n| Layout::from_size_align(n, 8).unwrap();
        let base = in_use();
        set_limit(base + 1000);
        // SAFETY: blocks are freed with the layout they were allocated with.
        unsafe {
            let a = Budget.alloc(l(800));
            assert!(!a.is_null());
            assert!(Budget.alloc(l(300)).is_null(), "past the limit");
            assert!(Budget.alloc_zeroed(l(300)).is_null(), "past the limit");
            assert!(
                Budget.realloc(a, l(800), 1100).is_null(),
                "grows past the limit"
            );
            assert_eq!(in_use(), base + 800);
            let b = overdraft(|| Budget.alloc(l(300)));
            assert!(!b.is_null(), "overdraft passes the limit");
            assert_eq!(in_use(), base + 1100);
            let a = Budget.realloc(a, l(800), 100);
            assert!(!a.is_null());
            assert_eq!(in_use(), base + 400);
            Budget.dealloc(b, l(300));
            Budget.dealloc(a, l(100));
        }
        assert_eq!(in_use(), base);
        set_limit(usize::MAX);
    }
}
