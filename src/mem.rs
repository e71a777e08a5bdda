//! Fallible allocation helpers: no allocation on a data path may abort on exhaustion; and a
//! sort of large vectors that reaches scheduling points.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicUsize, Ordering};

use crate::{Error, Result};

/// `Box::new` that returns [`Error::NoMem`] instead of aborting.
pub fn try_box<T>(value: T) -> Result<Box<T>> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(Box::new(value));
    }
    // SAFETY: the layout has a non-zero size, as `alloc` requires.
    let ptr = unsafe { alloc::alloc::alloc(layout) } as *mut T;
    if ptr.is_null() {
        return Err(Error::NoMem);
    }
    // SAFETY: `ptr` is a fresh, non-null allocation with `T`'s layout from the global allocator,
    // which is exactly what `Box::from_raw` requires; `write` initialises it first.
    unsafe {
        ptr.write(value);
        Ok(Box::from_raw(ptr))
    }
}

/// `Vec::push` that returns [`Error::NoMem`] instead of aborting.
pub fn try_push<T>(v: &mut Vec<T>, value: T) -> Result<()> {
    v.try_reserve(1)?;
    v.push(value);
    Ok(())
}

/// `len` zero bytes in a new vector, or [`Error::NoMem`]. Zeroed by the allocator, which
/// skips memory it knows is zero already (pages fresh from the system): a read buffer is
/// then written once, by the read, not twice.
pub fn try_zeroed(len: usize) -> Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let layout = Layout::array::<u8>(len).map_err(|_| Error::NoMem)?;
    // SAFETY: the layout has a non-zero size, as `alloc_zeroed` requires.
    let ptr = unsafe { alloc::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(Error::NoMem);
    }
    // SAFETY: `ptr` is a fresh allocation of the global allocator with the layout of `len`
    // bytes (alignment 1), every one of them initialised to zero by `alloc_zeroed`: a
    // vector of length and capacity `len` over it owns exactly that allocation.
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// A copy of `src` in a new vector, or [`Error::NoMem`].
pub fn try_to_vec<T: Clone>(src: &[T]) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(src.len())?;
    v.extend_from_slice(src);
    Ok(v)
}

/// A shared value with a reference count, as `Arc`, but whose allocation is fallible
/// (`Arc::try_new` is not stable): for state that host threads share.
pub struct TryArc<T> {
    ptr: NonNull<ArcInner<T>>,
}

struct ArcInner<T> {
    count: AtomicUsize,
    value: T,
}

// SAFETY: as `Arc`: the value is shared between threads (needs `Sync`) and dropped by whichever
// holder is last (needs `Send`); the count is atomic.
unsafe impl<T: Send + Sync> Send for TryArc<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for TryArc<T> {}

impl<T> TryArc<T> {
    /// A new shared value, or [`Error::NoMem`].
    pub fn new(value: T) -> Result<TryArc<T>> {
        let b = try_box(ArcInner {
            count: AtomicUsize::new(1),
            value,
        })?;
        Ok(TryArc {
            ptr: NonNull::from(Box::leak(b)),
        })
    }

    fn inner(&self) -> &ArcInner<T> {
        // SAFETY: the allocation lives while any handle (this one included) does.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Clone for TryArc<T> {
    fn clone(&self) -> Self {
        // Relaxed, as `Arc`: a new handle comes from an existing one, which keeps it alive.
        self.inner().count.fetch_add(1, Ordering::Relaxed);
        TryArc { ptr: self.ptr }
    }
}

impl<T> core::ops::Deref for TryArc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner().value
    }
}

impl<T> Drop for TryArc<T> {
    fn drop(&mut self) {
        if self.inner().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other holder's use of the value happens before the free (as `Arc`).
        fence(Ordering::Acquire);
        // SAFETY: the count reached zero, so this was the last handle; the pointer came from
        // `Box::leak` in `new`.
        drop(unsafe { Box::from_raw(self.ptr.as_ptr()) });
    }
}

/// Elements [`sort_yielding`] sorts or merges between two calls of its `relax`.
pub const SORT_CHUNK: usize = 4096;

/// Sort `v` by `key` (not stable), calling `relax` after every [`SORT_CHUNK`] elements
/// sorted or merged: a kernel thread sorting 10^6 entries must reach a scheduling point
/// long before the sort ends, which `sort_unstable` never offers. Chunks are sorted in
/// place, then merged pairwise through a scratch vector of `v.len()` elements
/// ([`Error::NoMem`], `v` unchanged, if it cannot be had).
pub fn sort_yielding<T: Copy, K: Ord>(
    v: &mut Vec<T>,
    key: impl Fn(&T) -> K,
    relax: &dyn Fn(),
) -> Result<()> {
    let n = v.len();
    if n <= SORT_CHUNK {
        v.sort_unstable_by_key(&key);
        return Ok(());
    }
    let mut dst: Vec<T> = Vec::new();
    dst.try_reserve_exact(n)?;
    for c in v.chunks_mut(SORT_CHUNK) {
        c.sort_unstable_by_key(&key);
        relax();
    }
    let mut src = core::mem::take(v);
    let mut width = SORT_CHUNK;
    while width < n {
        dst.clear();
        for pair in src.chunks(2 * width) {
            let (a, b) = pair.split_at(width.min(pair.len()));
            let (mut i, mut j) = (0, 0);
            while i < a.len() || j < b.len() {
                // Both vectors hold `n` elements' room: these pushes never allocate.
                if j >= b.len() || (i < a.len() && key(&a[i]) <= key(&b[j])) {
                    dst.push(a[i]);
                    i += 1;
                } else {
                    dst.push(b[j]);
                    j += 1;
                }
                if dst.len() % SORT_CHUNK == 0 {
                    relax();
                }
            }
        }
        core::mem::swap(&mut src, &mut dst);
        width *= 2;
    }
    *v = src;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_work() {
        assert_eq!(*try_box(7u32).unwrap(), 7);
        let mut v = Vec::new();
        try_push(&mut v, 1).unwrap();
        assert_eq!(try_to_vec(&v).unwrap(), [1]);
        assert_eq!(*try_box(()).unwrap(), ());
        for len in [0, 1, 65536] {
            let z = try_zeroed(len).unwrap();
            assert_eq!((z.len(), z.capacity()), (len, len));
            assert!(z.iter().all(|&b| b == 0));
        }
        // Memory freed dirty and allocated again still reads as zeros.
        drop(alloc::vec![0xA5u8; 65536]);
        assert!(try_zeroed(65536).unwrap().iter().all(|&b| b == 0));
    }

    #[test]
    fn try_arc_shares_and_drops_once() {
        struct Count<'a>(&'a AtomicUsize);
        impl Drop for Count<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dropped = AtomicUsize::new(0);
        let a = TryArc::new(Count(&dropped)).unwrap();
        let b = a.clone();
        drop(a);
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        assert!(core::ptr::eq(b.0, &dropped));
        drop(b);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }
    #[test]
    fn sort_yielding_sorts_and_relaxes_every_chunk() {
        use core::cell::Cell;
        for n in [
            0usize,
            5,
            SORT_CHUNK,
            SORT_CHUNK + 1,
            3 * SORT_CHUNK + 17,
            100_000,
        ] {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut v: Vec<(u64, u32)> = (0..n)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 1000, i as u32)
                })
                .collect();
            let mut want = v.clone();
            want.sort_unstable_by_key(|e| e.0);
            let calls = Cell::new(0usize);
            sort_yielding(&mut v, |e| e.0, &|| calls.set(calls.get() + 1)).unwrap();
            let keys = |v: &[(u64, u32)]| v.iter().map(|e| e.0).collect::<Vec<_>>();
            assert_eq!(keys(&v), keys(&want), "{n}");
            // Every element is there once.
            let mut ids: Vec<u32> = v.iter().map(|e| e.1).collect();
            ids.sort_unstable();
            assert!(ids.iter().copied().eq(0..n as u32));
            if n > SORT_CHUNK {
                // One call per chunk sorted, one per chunk merged in each pass.
                let passes = n.div_ceil(SORT_CHUNK).next_power_of_two().trailing_zeros();
                assert!(
                    calls.get() >= (n / SORT_CHUNK) * (1 + passes as usize),
                    "{n}"
                );
            }
        }
    }
}
