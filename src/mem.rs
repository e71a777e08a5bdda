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

/// A `T` of all-zero bytes built on the heap, never in the caller's frame (a kernel stack is
/// small), or [`Error::NoMem`].
///
/// # Safety
/// All-zero bytes must be a valid `T` (integers and arrays of them, for instance).
pub unsafe fn try_box_zeroed<T>() -> Result<Box<T>> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        // SAFETY: a zero-sized `T` has no bytes; the caller vouches that zero is valid.
        return Ok(Box::new(unsafe { core::mem::zeroed() }));
    }
    // SAFETY: the layout has a non-zero size, as `alloc_zeroed` requires.
    let ptr = unsafe { alloc::alloc::alloc_zeroed(layout) } as *mut T;
    if ptr.is_null() {
        return Err(Error::NoMem);
    }
    // SAFETY: a fresh, non-null allocation with `T`'s layout from the global allocator, as
    // `Box::from_raw` requires, initialised to zero bytes, which the caller vouches is a `T`.
    Ok(unsafe { Box::from_raw(ptr) })
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

/// Bytes below which [`extend_streaming`] copies through the cache: a streaming copy pays off
/// only over whole blocks, whose destination lines a cached copy would first read in.
const STREAM_MIN: usize = 4096;

/// Append `src` to the empty `dst`, which has room for it, writing the destination with
/// non-temporal stores where the machine has them: a cached copy reads every destination line
/// from memory before overwriting it (a third of the memory traffic of a large copy) and fills
/// the cache with bytes nobody reads soon (a payload copied into another node's store). Short
/// copies, and any other `dst`, go through `extend_from_slice`.
pub fn extend_streaming(dst: &mut Vec<u8>, src: &[u8]) {
    if dst.is_empty() && src.len() >= STREAM_MIN && dst.capacity() >= src.len() {
        let out = dst.as_mut_ptr();
        // SAFETY: `out` has room for `src.len()` bytes (capacity checked above) and is its own
        // allocation, so it overlaps no part of `src`.
        let done = unsafe { stream_prefix(out, src) };
        // SAFETY: as above for the tail `done .. src.len()`; then all `src.len()` bytes are
        // initialized and the length may cover them.
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr().add(done), out.add(done), src.len() - done);
            dst.set_len(src.len());
        }
        return;
    }
    dst.extend_from_slice(src);
}

/// Copy a prefix of `src` to `out` with non-temporal stores, fenced (`sfence`: they are ordered
/// before every later store, so whoever the bytes are handed to, under a lock whose release is
/// a later store, sees them); the prefix's length. The bytes before `out`'s first aligned
/// address go through the cache.
///
/// # Safety
/// `out` must be valid for writes of `src.len()` bytes and overlap no byte of `src`.
#[cfg(target_arch = "x86_64")]
unsafe fn stream_prefix(out: *mut u8, src: &[u8]) -> usize {
    let lead = out.align_offset(nt::ALIGN).min(src.len());
    // SAFETY: the caller's contract covers `lead <= src.len()` bytes.
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), out, lead) };
    let end = lead + (src.len() - lead) / nt::CHUNK * nt::CHUNK;
    let mut i = lead;
    while i < end {
        // SAFETY: bytes `i .. i + CHUNK` lie within `src` and within the caller's room at
        // `out` (`i + CHUNK <= end <= src.len()`); `out + i` is `ALIGN`-aligned (`lead`
        // aligned it and `i - lead` is a multiple of `CHUNK`, itself one of `ALIGN`).
        unsafe { nt::chunk(out.add(i), src.as_ptr().add(i)) };
        i += nt::CHUNK;
    }
    // SAFETY: a store fence, no memory operand.
    unsafe { nt::fence() };
    end
}

/// [`stream_prefix`] where no non-temporal store is used: nothing streamed.
///
/// # Safety
/// None needed; `unsafe` only to match the x86_64 signature.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn stream_prefix(_out: *mut u8, _src: &[u8]) -> usize {
    0
}

/// Non-temporal stores on userland x86_64: 16 bytes at a time (SSE2, which that target always
/// has).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod nt {
    use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};

    /// Alignment the stores need at the destination.
    pub const ALIGN: usize = 16;
    /// Bytes per [`chunk`].
    pub const CHUNK: usize = 64;

    /// Copy `CHUNK` bytes from `s` (any alignment) to `d`.
    ///
    /// # Safety
    /// Both valid for `CHUNK` bytes, not overlapping; `d` aligned to `ALIGN`.
    pub unsafe fn chunk(d: *mut u8, s: *const u8) {
        let (d, s) = (d.cast::<__m128i>(), s.cast::<__m128i>());
        // SAFETY: the caller's contract: four 16-byte loads (unaligned) and four aligned
        // 16-byte stores within the two ranges.
        unsafe {
            let (a, b) = (_mm_loadu_si128(s), _mm_loadu_si128(s.add(1)));
            let (c, e) = (_mm_loadu_si128(s.add(2)), _mm_loadu_si128(s.add(3)));
            _mm_stream_si128(d, a);
            _mm_stream_si128(d.add(1), b);
            _mm_stream_si128(d.add(2), c);
            _mm_stream_si128(d.add(3), e);
        }
    }

    /// Order the streamed stores before every later store.
    ///
    /// # Safety
    /// None beyond SSE2 being present, which this module's `cfg` guarantees.
    pub unsafe fn fence() {
        // SAFETY: SSE2 is a target feature here; the fence touches no memory operand.
        unsafe { _mm_sfence() }
    }
}

/// Non-temporal stores on x86_64 without SSE (the kernel's soft-float target): `movnti` is a
/// general-register instruction, which kernel code may use without saving vector state (as
/// Linux's own cache-bypassing copies do), 8 bytes at a time.
#[cfg(all(target_arch = "x86_64", not(target_feature = "sse2")))]
mod nt {
    /// Alignment the stores want at the destination.
    pub const ALIGN: usize = 8;
    /// Bytes per [`chunk`].
    pub const CHUNK: usize = 32;

    /// Copy `CHUNK` bytes from `s` (any alignment) to `d`.
    ///
    /// # Safety
    /// Both valid for `CHUNK` bytes, not overlapping; `d` aligned to `ALIGN`.
    pub unsafe fn chunk(d: *mut u8, s: *const u8) {
        let s = s.cast::<u64>();
        // SAFETY: the caller's contract: four unaligned 8-byte loads within `s`'s range; each
        // `movnti` writes only the 8 bytes its operand names within `d`'s, and touches no
        // flags or stack.
        unsafe {
            core::arch::asm!(
                "movnti [{d}], {a}",
                "movnti [{d} + 8], {b}",
                "movnti [{d} + 16], {c}",
                "movnti [{d} + 24], {e}",
                d = in(reg) d,
                a = in(reg) s.read_unaligned(),
                b = in(reg) s.add(1).read_unaligned(),
                c = in(reg) s.add(2).read_unaligned(),
                e = in(reg) s.add(3).read_unaligned(),
                options(nostack, preserves_flags),
            );
        }
    }

    /// Order the streamed stores before every later store.
    ///
    /// # Safety
    /// None: `sfence` exists on every x86_64.
    pub unsafe fn fence() {
        // SAFETY: a store fence, no memory operand.
        unsafe { core::arch::asm!("sfence", options(nostack, preserves_flags)) }
    }
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

    /// A streaming copy holds exactly the source's bytes, whatever its length and alignment
    /// (streamed prefix, aligned lead, tail), and a short or non-empty destination is
    /// extended as `extend_from_slice` would.
    #[test]
    fn streaming_copies_are_exact() {
        let src: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for len in [
            0,
            1,
            63,
            STREAM_MIN - 1,
            STREAM_MIN,
            STREAM_MIN + 1,
            65_536,
            65_599,
        ] {
            for from in [0, 1, 3, 8, 17] {
                let part = &src[from..from + len];
                let mut dst = Vec::new();
                dst.try_reserve_exact(len).unwrap();
                extend_streaming(&mut dst, part);
                assert_eq!(dst, part, "{len} bytes from {from}");
            }
        }
        let mut dst = alloc::vec![9u8; 3];
        dst.reserve(STREAM_MIN);
        extend_streaming(&mut dst, &src[..STREAM_MIN]);
        assert_eq!(dst[..3], [9, 9, 9]);
        assert_eq!(dst[3..], src[..STREAM_MIN]);
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
