//! The bounded heap kernel builds allocate from: a binary buddy allocator over the pool the host
//! reserved at load time, serialized by the host's heap lock (a spinlock taken with interrupts
//! off, so nothing but the allocator runs on its CPU while it is held). Exhaustion returns null, which the core's fallible allocation turns into
//! `Error::NoMem` (never a kernel OOM).
//!
//! Why buddies: every operation under the lock is bounded by the number of block orders, not by
//! the state of the heap. An allocation finds its free list in one step (a bit mask of the
//! non-empty lists), takes a block and splits it at most `ORDERS - 1` times; a free merges with
//! its buddy at most as often, then links the block: at most [`MAX_STEPS`] (36) steps, each O(1)
//! (doubly linked free lists, one bit per minimum block saying "a free block starts here").
//! [`Pool::measure`] counts them next to the hold times. A first-fit list allocator walks its
//! hole list instead, whose length grows with fragmentation. The price is rounding every block
//! up to a power of two.
//!
//! Large payloads (data blocks, file contents: [`BIG_BYTES`] and more) can instead come straight
//! from the kernel (`big_alloc`, Linux `kvmalloc`) up to a limit the host sets
//! ([`Pool::set_big_limit`], the module's `mem_max_kib`), so the memory the core may use grows
//! on demand past the pool, which then holds the many small structures; when the host has
//! nothing at once (or the limit is reached) the pool is the reserve. A block is given back to
//! whichever allocator its address says it came from.

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::ops;

/// The smallest block: room for a free block's header ([`Free`]).
const MIN_ORDER: u32 = 5;
/// The largest block order (1 TiB): more than any pool a host reserves.
const MAX_ORDER: u32 = 40;
/// Number of block orders, hence of free lists (at most 64: one bit each in `Buddy::nonempty`).
const ORDERS: usize = (MAX_ORDER - MIN_ORDER + 1) as usize;
/// Most steps (a block linked, unlinked, split or merged) one allocation or free makes under
/// the heap lock: the structural bound on a hold.
pub const MAX_STEPS: u32 = ORDERS as u32;
/// Allocations of at least this many bytes come from the host's `big_alloc` while a limit is set.
pub const BIG_BYTES: usize = 64 << 10;
/// Alignment `big_alloc` guarantees.
const BIG_ALIGN: usize = 4096;

/// Alignment of the first block: blocks are aligned to their size relative to it, so a layout
/// aligned to at most this much is aligned in memory too.
const BASE_ALIGN: usize = 4096;

/// The header a free block starts with.
#[repr(C)]
struct Free {
    next: usize,
    prev: usize,
    order: usize,
}

/// The allocator's state; every field is read and written under the host's heap lock.
struct Buddy {
    /// Address of the first block (0: no pool).
    base: usize,
    /// Bytes of blocks from `base`.
    len: usize,
    /// One bit per minimum block of `len`: set when a free block starts there.
    bitmap: *mut u64,
    /// Free-list heads by order (index = order - MIN_ORDER), 0 when empty.
    heads: [usize; ORDERS],
    /// Bit `k` set when `heads[k]` is not empty.
    nonempty: u64,
    /// Steps the current operation made (see [`MAX_STEPS`]).
    steps: u32,
    /// Bytes in allocated blocks.
    used: usize,
    /// Bytes the host handed over, bitmap and alignment included.
    size: usize,
}

impl Buddy {
    const fn empty() -> Buddy {
        Buddy {
            base: 0,
            len: 0,
            bitmap: ptr::null_mut(),
            heads: [0; ORDERS],
            nonempty: 0,
            steps: 0,
            used: 0,
            size: 0,
        }
    }

    fn bit(&self, addr: usize) -> (usize, u64) {
        let i = (addr - self.base) >> MIN_ORDER;
        (i / 64, 1 << (i % 64))
    }

    /// Whether a free block starts at `addr`.
    fn is_free(&self, addr: usize) -> bool {
        let (w, m) = self.bit(addr);
        // SAFETY: `addr` lies in `[base, base + len)`, so word `w` is inside the bitmap that
        // `init` sized for `len`.
        unsafe { *self.bitmap.add(w) & m != 0 }
    }

    fn set_free(&mut self, addr: usize, free: bool) {
        let (w, m) = self.bit(addr);
        // SAFETY: as in `is_free`; the heap lock makes this the only access.
        unsafe {
            let p = self.bitmap.add(w);
            *p = if free { *p | m } else { *p & !m };
        }
    }

    /// Put the block of `order` at `addr` on its free list.
    fn push(&mut self, addr: usize, order: u32) {
        let k = (order - MIN_ORDER) as usize;
        let head = self.heads[k];
        // SAFETY: `addr` starts a block of at least `MIN_ORDER` bytes inside the pool that no
        // one holds (it is being freed or split off), aligned to its size; `head` is 0 or a free
        // block's header.
        unsafe {
            (addr as *mut Free).write(Free {
                next: head,
                prev: 0,
                order: order as usize,
            });
            if head != 0 {
                (*(head as *mut Free)).prev = addr;
            }
        }
        self.heads[k] = addr;
        self.nonempty |= 1 << k;
        self.set_free(addr, true);
        self.steps += 1;
    }

    /// Take the free block at `addr` (of `order`) off its list.
    fn unlink(&mut self, addr: usize, order: u32) {
        let k = (order - MIN_ORDER) as usize;
        // SAFETY: `addr` is a free block (its bit is set), so its header and its neighbours'
        // headers are valid.
        unsafe {
            let f = &*(addr as *const Free);
            if f.prev == 0 {
                self.heads[k] = f.next;
                if f.next == 0 {
                    self.nonempty &= !(1 << k);
                }
            } else {
                (*(f.prev as *mut Free)).next = f.next;
            }
            if f.next != 0 {
                (*(f.next as *mut Free)).prev = f.prev;
            }
        }
        self.set_free(addr, false);
    }

    fn alloc(&mut self, order: u32) -> *mut u8 {
        // The smallest non-empty list of at least `order`, in one step; then one unlink and at
        // most ORDERS - 1 splits (each pushes the upper half).
        let fits = self.nonempty >> (order - MIN_ORDER);
        if fits == 0 {
            return ptr::null_mut();
        }
        let mut have = order + fits.trailing_zeros();
        let addr = self.heads[(have - MIN_ORDER) as usize];
        self.unlink(addr, have);
        self.steps += 1;
        while have > order {
            have -= 1;
            self.push(addr + (1 << have), have);
        }
        self.used += 1 << order;
        addr as *mut u8
    }

    fn free(&mut self, mut addr: usize, mut order: u32) {
        self.used -= 1 << order;
        // At most ORDERS - 1 merges (each unlinks the buddy), then one push.
        while order < MAX_ORDER {
            let buddy = self.base + ((addr - self.base) ^ (1 << order));
            if buddy + (1 << order) > self.base + self.len || !self.is_free(buddy) {
                break;
            }
            // SAFETY: a free block starts at `buddy` (its bit), so its header is valid.
            if unsafe { (*(buddy as *const Free)).order } != order as usize {
                break;
            }
            self.unlink(buddy, order);
            self.steps += 1;
            addr = addr.min(buddy);
            order += 1;
        }
        self.push(addr, order);
    }
}

/// The order of the block a layout takes, or None if no block fits it.
fn order_of(layout: Layout) -> Option<u32> {
    let need = layout.size().max(layout.align()).max(1 << MIN_ORDER);
    if layout.align() > BASE_ALIGN {
        return None;
    }
    let order = need.checked_next_power_of_two()?.trailing_zeros();
    (order <= MAX_ORDER).then_some(order)
}

/// A pool allocator. The kernel build registers [`POOL`] as the global allocator.
pub struct Pool {
    heap: UnsafeCell<Buddy>,
    /// Whether to time every hold of the heap lock (see [`Pool::measure`]).
    timing: AtomicBool,
    /// The longest hold of the heap lock timed so far, in nanoseconds.
    max_hold_ns: AtomicU64,
    /// Holds timed so far, and how many of them took longer than [`HOLD_SLOW_NS`].
    holds: AtomicU64,
    slow_holds: AtomicU64,
    /// The most steps one timed hold made (see [`MAX_STEPS`]).
    max_steps: AtomicU32,
    /// Most bytes of large payloads taken from the host (0: none, everything from the pool).
    big_limit: AtomicUsize,
    /// Bytes of large payloads taken from the host and not given back.
    big_used: AtomicUsize,
}

// SAFETY: every access to `heap` happens between the host's `heap_lock` and `heap_unlock`
// (see `with_heap`), which serialize all threads; the rest is atomics.
unsafe impl Sync for Pool {}

/// The pool behind the kernel build's global allocator.
#[cfg_attr(target_os = "none", global_allocator)]
pub static POOL: Pool = Pool::new();

impl Pool {
    /// An empty pool: every allocation fails until [`Pool::init`].
    pub const fn new() -> Self {
        Pool {
            heap: UnsafeCell::new(Buddy::empty()),
            timing: AtomicBool::new(false),
            max_hold_ns: AtomicU64::new(0),
            holds: AtomicU64::new(0),
            slow_holds: AtomicU64::new(0),
            max_steps: AtomicU32::new(0),
            big_limit: AtomicUsize::new(0),
            big_used: AtomicUsize::new(0),
        }
    }

    fn with_heap<R>(&self, f: impl FnOnce(&mut Buddy) -> R) -> Option<R> {
        let ops = ops::get()?;
        let timing = self.timing.load(Ordering::Relaxed);
        // SAFETY: the table's functions are valid while installed; the lock excludes every other
        // accessor of `heap` until the matching unlock, so the `&mut` is unique.
        unsafe {
            (ops.heap_lock)();
            let t0 = if timing { (ops.now_ns)() } else { 0 };
            let heap = &mut *self.heap.get();
            heap.steps = 0;
            let r = f(heap);
            if timing {
                let held = (ops.now_ns)().saturating_sub(t0);
                self.max_hold_ns.fetch_max(held, Ordering::Relaxed);
                self.max_steps.fetch_max(heap.steps, Ordering::Relaxed);
                self.holds.fetch_add(1, Ordering::Relaxed);
                if held > HOLD_SLOW_NS {
                    self.slow_holds.fetch_add(1, Ordering::Relaxed);
                }
            }
            (ops.heap_unlock)();
            Some(r)
        }
    }

    /// Hand the pool `len` bytes at `base`, aligned to anything. The blocks start on a page
    /// after the bitmap (a 256th of `len`), so up to a page more than the bitmap is not
    /// allocatable. Returns false if the pool already has memory or `len` is too small to hold
    /// any block.
    ///
    /// # Safety
    /// `base..base+len` must be writable memory used by nothing else until [`Pool::reset`].
    pub unsafe fn init(&self, base: *mut u8, len: usize) -> bool {
        // Lay the pool out and clear the bitmap before taking the lock: the hold stays short.
        let start = base as usize;
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        // The bitmap first, aligned for its words whatever the host's memory is aligned to; it
        // needs a bit per minimum block of what follows it. Then the blocks, from a page.
        let map_bytes = (len >> MIN_ORDER).div_ceil(64) * 8;
        let Some(map) = start.checked_next_multiple_of(core::mem::align_of::<u64>()) else {
            return false;
        };
        let Some(first) = map
            .checked_add(map_bytes)
            .and_then(|a| a.checked_next_multiple_of(BASE_ALIGN))
        else {
            return false;
        };
        if first >= end {
            return false;
        }
        let blocks = (end - first) & !((1 << MIN_ORDER) - 1);
        if blocks == 0 {
            return false;
        }
        // SAFETY: `map - start < 8` and `map + map_bytes <= first < end`, so the bitmap lies
        // inside the caller's memory.
        let bitmap = unsafe { base.add(map - start) };
        // SAFETY: as above.
        unsafe { ptr::write_bytes(bitmap, 0, map_bytes) };
        self.with_heap(|h| {
            if h.size != 0 {
                return false;
            }
            h.base = first;
            h.len = blocks;
            h.bitmap = bitmap.cast();
            h.heads = [0; ORDERS];
            h.nonempty = 0;
            h.used = 0;
            h.size = len;
            // The largest aligned blocks that fit, in address order: at most ORDERS of them.
            let mut off = 0;
            while off < blocks {
                let mut order = (blocks - off).ilog2().min(MAX_ORDER);
                if off != 0 {
                    order = order.min(off.trailing_zeros());
                }
                h.push(first + off, order);
                off += 1 << order;
            }
            true
        })
        .unwrap_or(false)
    }

    /// Forget the pool's memory (the host frees it afterwards); later allocations fail.
    pub fn reset(&self) {
        self.with_heap(|h| *h = Buddy::empty());
    }

    /// `(bytes in use, bytes available)`: the pool's (whole blocks, sizes rounded up to a power
    /// of two) plus the large payloads taken from the host, and the pool's size plus the limit
    /// on those.
    pub fn usage(&self) -> (usize, usize) {
        let (used, size) = self.with_heap(|h| (h.used, h.size)).unwrap_or((0, 0));
        let big = self.big_used.load(Ordering::SeqCst);
        let limit = self.big_limit.load(Ordering::SeqCst);
        (used + big, size + limit)
    }

    /// Take payloads of [`BIG_BYTES`] or more from the host's `big_alloc`, up to `bytes` in all
    /// (0: never; every allocation from the pool).
    pub fn set_big_limit(&self, bytes: usize) {
        self.big_limit.store(bytes, Ordering::SeqCst);
    }

    /// A large payload from the host, within the limit; null if over it or refused.
    fn alloc_big(&self, size: usize) -> *mut u8 {
        let Some(ops) = ops::get() else {
            return ptr::null_mut();
        };
        let limit = self.big_limit.load(Ordering::SeqCst);
        // Reserve first, so concurrent allocations cannot together pass the limit.
        let prev = self.big_used.fetch_add(size, Ordering::SeqCst);
        if prev.saturating_add(size) > limit {
            self.big_used.fetch_sub(size, Ordering::SeqCst);
            return ptr::null_mut();
        }
        // SAFETY: plain call into the host from process context, no lock held.
        let p = unsafe { (ops.big_alloc)(size) }.cast::<u8>();
        if p.is_null() || p as usize % BIG_ALIGN != 0 {
            if !p.is_null() {
                // SAFETY: `p` came from `big_alloc`; a host that broke its alignment promise
                // gets it back unused.
                unsafe { (ops.big_free)(p.cast::<c_void>()) };
            }
            self.big_used.fetch_sub(size, Ordering::SeqCst);
            return ptr::null_mut();
        }
        p
    }

    /// Time every hold of the heap lock from now on (`on`), or stop; returns what was timed
    /// since the last call, and starts over.
    pub fn measure(&self, on: bool) -> HoldTimes {
        self.timing.store(on, Ordering::SeqCst);
        HoldTimes {
            max_ns: self.max_hold_ns.swap(0, Ordering::SeqCst),
            holds: self.holds.swap(0, Ordering::SeqCst),
            slow: self.slow_holds.swap(0, Ordering::SeqCst),
            max_steps: self.max_steps.swap(0, Ordering::SeqCst),
        }
    }
}

/// A hold of the heap lock longer than this (100 us) counts as slow in [`HoldTimes`].
pub const HOLD_SLOW_NS: u64 = 100_000;

/// The heap lock's hold times over a measurement ([`Pool::measure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldTimes {
    /// The longest hold, in nanoseconds (it includes any interrupt taken while holding, and,
    /// in a virtual machine, the time its CPU was not running).
    pub max_ns: u64,
    /// Holds timed.
    pub holds: u64,
    /// Holds longer than [`HOLD_SLOW_NS`].
    pub slow: u64,
    /// The most steps one hold made: at most [`MAX_STEPS`] whatever the clock says.
    pub max_steps: u32,
}

/// Blocks [`Pool::hold_workload`] keeps live at once.
const HOLD_LIVE: usize = 2048;
/// Allocations and frees [`Pool::hold_workload`] times after fragmenting the pool.
const HOLD_OPS: u32 = 20_000;

/// What [`Pool::hold_workload`] measured.
#[derive(Debug, Clone, Copy)]
pub struct HoldRun {
    /// The heap lock's hold times.
    pub times: HoldTimes,
    /// Allocations and frees made.
    pub ops: u32,
    /// Allocations refused (pool full).
    pub refused: u32,
}

impl Pool {
    /// Time every hold of the heap lock under fragmentation: allocations and frees of a random
    /// mix of sizes (32 bytes to 128 KiB: the core's small structures and data blocks), after
    /// half of a first batch of 2,048 was freed at random, then 20,000 more steps freeing and
    /// allocating at random. Everything is given back at the end. `Error::NoMem` if the
    /// block table could not be allocated.
    pub fn hold_workload(&self) -> hammer2_synchro::Result<HoldRun> {
        let mut live: Vec<(*mut u8, Layout)> = Vec::new();
        live.try_reserve_exact(HOLD_LIVE)?;
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let layout = |r: u64| {
            let size = match r % 16 {
                0 => 65_536,
                1 => 1 + (r >> 8) as usize % (128 << 10),
                _ => 32 + (r >> 8) as usize % 2048,
            };
            Layout::from_size_align(size, 8).unwrap_or(Layout::new::<u64>())
        };
        self.measure(true);
        let mut ops = 0u32;
        let mut failed = 0u32;
        for step in 0..HOLD_LIVE as u32 + HOLD_OPS {
            let r = next();
            // First fill the table, then free and allocate at random slots.
            let slot = if step < HOLD_LIVE as u32 || live.is_empty() {
                None
            } else {
                Some((r >> 32) as usize % live.len())
            };
            if let Some(i) = slot {
                let (p, l) = live.swap_remove(i);
                // SAFETY: `p` came from `alloc` with `l` below.
                unsafe { self.dealloc(p, l) };
                ops += 1;
                if step % 2 == 0 {
                    continue;
                }
            }
            let l = layout(r);
            // SAFETY: a non-zero layout.
            let p = unsafe { self.alloc(l) };
            ops += 1;
            if p.is_null() {
                failed += 1;
            } else if live.len() < HOLD_LIVE {
                live.push((p, l));
            } else {
                // SAFETY: just allocated with `l`.
                unsafe { self.dealloc(p, l) };
            }
            if step as usize == HOLD_LIVE {
                // Free half of the first batch at random: holes everywhere.
                let mut i = 0;
                while i < live.len() {
                    if next() % 2 == 0 {
                        let (p, l) = live.swap_remove(i);
                        // SAFETY: from `alloc` with `l`.
                        unsafe { self.dealloc(p, l) };
                        ops += 1;
                    } else {
                        i += 1;
                    }
                }
            }
        }
        for (p, l) in live.drain(..) {
            // SAFETY: from `alloc` with `l`.
            unsafe { self.dealloc(p, l) };
        }
        Ok(HoldRun {
            times: self.measure(false),
            ops,
            refused: failed,
        })
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: blocks come from the pool's disjoint free lists, each at least as large and as aligned
// as its layout (`order_of`); null is returned on exhaustion (or before init), as `GlobalAlloc`
// allows; `dealloc` gets back exactly what `alloc` gave, with the same layout, hence order.
unsafe impl GlobalAlloc for Pool {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= BIG_BYTES
            && layout.align() <= BIG_ALIGN
            && self.big_limit.load(Ordering::Relaxed) != 0
        {
            let p = self.alloc_big(layout.size());
            if !p.is_null() {
                return p;
            }
            // Over the limit, or the host had nothing at once: the pool is the reserve.
        }
        let Some(order) = order_of(layout) else {
            return ptr::null_mut();
        };
        self.with_heap(|h| {
            if h.size == 0 {
                return ptr::null_mut();
            }
            h.alloc(order)
        })
        .unwrap_or(ptr::null_mut())
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if p.is_null() {
            return;
        }
        let order = order_of(layout);
        // The pool's blocks lie inside it; anything else came from `big_alloc`. After a reset
        // (no pool) nothing can be told apart any more, so every free is ignored: a stale pool
        // pointer must never reach `big_free`, and a large payload still live then is only
        // leaked (no core code runs after a reset).
        let mine = self
            .with_heap(|h| {
                let a = p as usize;
                let inside = h.base != 0 && a >= h.base && a < h.base + h.len;
                if let (true, Some(order)) = (inside, order) {
                    h.free(a, order);
                }
                inside || h.base == 0
            })
            .unwrap_or(true);
        if !mine && layout.size() >= BIG_BYTES {
            if let Some(ops) = ops::get() {
                // SAFETY: `p` is not the pool's and is this large, so `alloc_big` made it.
                unsafe { (ops.big_free)(p.cast::<c_void>()) };
                self.big_used.fetch_sub(layout.size(), Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_of(mem: &mut [u8]) -> Pool {
        crate::testhost::ensure_init();
        let pool = Pool::new();
        // SAFETY: `mem` outlives every use of `pool` in the tests and nothing else touches it.
        assert!(unsafe { pool.init(mem.as_mut_ptr(), mem.len()) });
        pool
    }

    /// `len` bytes of `buf` starting `offset` bytes past a page boundary.
    fn at_offset(buf: &mut Vec<u8>, len: usize, offset: usize) -> &mut [u8] {
        buf.resize(len + 2 * BASE_ALIGN, 0);
        let skip = (offset + BASE_ALIGN - buf.as_ptr() as usize % BASE_ALIGN) % BASE_ALIGN;
        &mut buf[skip..skip + len]
    }

    /// Takes every 512-byte block of a fresh `pool` over `mem` (each aligned and inside the
    /// blocks, never over the bitmap), gives them back, and checks that they merged back into
    /// the initial blocks. Returns how many there were.
    fn exhaust_and_give_back(pool: &Pool, mem: &[u8]) -> usize {
        let (start, end) = (mem.as_ptr() as usize, mem.as_ptr() as usize + mem.len());
        let (first, blocks, map, initial) = {
            // SAFETY: no other thread uses this pool.
            let h = unsafe { &*pool.heap.get() };
            (h.base, h.len, h.bitmap as usize, h.heads)
        };
        let map_end = map + (mem.len() >> MIN_ORDER).div_ceil(64) * 8;
        assert!(start <= map && map_end <= first && first + blocks <= end);
        assert_eq!(map % 8, 0, "the bitmap's words are aligned");
        assert_eq!(first % BASE_ALIGN, 0);
        assert!(
            mem.len() - blocks < map_end - start + BASE_ALIGN + (1 << MIN_ORDER),
            "{blocks} bytes of blocks from {}",
            mem.len()
        );
        let l = Layout::from_size_align(512, 8).unwrap();
        let mut got = vec![];
        loop {
            // SAFETY: non-zero layout.
            let p = unsafe { pool.alloc(l) };
            if p.is_null() {
                break;
            }
            assert_eq!(p as usize % 512, 0, "blocks are aligned to their size");
            assert!(p as usize >= first && p as usize + 512 <= first + blocks);
            got.push(p);
        }
        // Every 512 bytes of the blocks.
        assert_eq!(got.len(), blocks / 512);
        assert_eq!(pool.usage().0, got.len() * 512);
        let n = got.len();
        for p in got.drain(..) {
            // SAFETY: each pointer came from `alloc` with `l`.
            unsafe { pool.dealloc(p, l) };
        }
        assert_eq!(pool.usage().0, 0);
        // SAFETY: no other thread uses this pool.
        let heads = unsafe { &*pool.heap.get() }.heads;
        assert_eq!(heads, initial, "freed blocks did not merge back");
        n
    }

    #[test]
    fn exhaustion_is_null_and_memory_comes_back() {
        // Page-aligned, as the kernel's `vmalloc`ed pool: 64 KiB less the page the bitmap
        // starts the blocks after.
        let mut buf = vec![];
        let mem = at_offset(&mut buf, 64 << 10, 0);
        let pool = pool_of(mem);
        // SAFETY: as in `pool_of`; a second init must be refused.
        assert!(!unsafe { pool.init(mem.as_mut_ptr(), mem.len()) });
        assert_eq!(exhaust_and_give_back(&pool, mem), (60 << 10) / 512);
        // Everything merged back: the largest block is allocatable again.
        let big = Layout::from_size_align(32 << 10, 8).unwrap();
        // SAFETY: non-zero layout.
        let p = unsafe { pool.alloc(big) };
        assert!(!p.is_null(), "freed blocks did not merge back");
        // SAFETY: from `alloc` with `big`.
        unsafe { pool.dealloc(p, big) };
        pool.reset();
        assert_eq!(pool.usage(), (0, 0));
        let l = Layout::from_size_align(512, 8).unwrap();
        // SAFETY: non-zero layout; an empty pool returns null.
        assert!(unsafe { pool.alloc(l) }.is_null());
    }

    /// The host's memory may start anywhere: at every offset from a page the bitmap is
    /// aligned for its words, the blocks lie past it, and they lose at most a page.
    #[test]
    fn pools_at_every_offset_from_a_page_work() {
        let mut buf = vec![];
        for offset in 0..BASE_ALIGN {
            let mem = at_offset(&mut buf, 64 << 10, offset);
            exhaust_and_give_back(&pool_of(mem), mem);
        }
    }

    /// Random sizes and frees never hand out overlapping blocks, and freeing everything merges
    /// the pool back to its initial blocks.
    #[test]
    fn random_use_keeps_blocks_disjoint_and_merges_back() {
        let mut mem = vec![0u8; 1 << 20];
        let pool = pool_of(&mut mem);
        // SAFETY: no other thread uses this pool.
        let initial = unsafe { &*pool.heap.get() }.heads;
        let mut live: Vec<(usize, Layout)> = vec![];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 3 != 0 || live.is_empty() {
                let size = 1 + (x >> 8) as usize % if x % 7 == 0 { 70_000 } else { 600 };
                let l = Layout::from_size_align(size, 1 << ((x >> 40) % 4)).unwrap();
                // SAFETY: non-zero layout.
                let p = unsafe { pool.alloc(l) };
                if p.is_null() {
                    continue;
                }
                assert_eq!(p as usize % l.align(), 0);
                // SAFETY: the block holds at least `size` bytes; writing it catches overlaps
                // below (each block is filled with its own tag).
                unsafe { ptr::write_bytes(p, (step % 251) as u8, size) };
                live.push((p as usize, l));
            } else {
                let (p, l) = live.swap_remove((x >> 20) as usize % live.len());
                // SAFETY: from `alloc` with `l`.
                unsafe { pool.dealloc(p as *mut u8, l) };
            }
            if step % 1000 == 0 {
                let mut spans: Vec<(usize, usize)> = live
                    .iter()
                    .map(|&(p, l)| (p, p + (1usize << order_of(l).unwrap())))
                    .collect();
                spans.sort();
                assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "blocks overlap");
            }
        }
        for (p, l) in live.drain(..) {
            // SAFETY: from `alloc` with `l`.
            unsafe { pool.dealloc(p as *mut u8, l) };
        }
        assert_eq!(pool.usage().0, 0);
        // SAFETY: no other thread uses this pool.
        let h = unsafe { &*pool.heap.get() };
        assert_eq!(
            h.heads, initial,
            "the pool did not merge back to its initial blocks"
        );
    }

    /// Steps per operation are bounded by the number of orders, whatever the fragmentation:
    /// a minimum block carved from the largest one takes every split, and its free every merge.
    #[test]
    fn steps_per_operation_are_bounded_by_the_orders() {
        let mut mem = vec![0u8; 1 << 20];
        let pool = pool_of(&mut mem);
        // SAFETY: no other thread uses this pool.
        let top = 63 - unsafe { &*pool.heap.get() }.nonempty.leading_zeros() + MIN_ORDER;
        // Take every block but the largest, so the next small allocation must split it.
        let mut rest = vec![];
        loop {
            // SAFETY: no other thread uses this pool.
            let h = unsafe { &*pool.heap.get() };
            let below = h.nonempty & !(1u64 << (top - MIN_ORDER));
            if below == 0 {
                break;
            }
            let o = below.trailing_zeros() + MIN_ORDER;
            let l = Layout::from_size_align(1 << o, 8).unwrap();
            // SAFETY: non-zero layout; a block of that order is free.
            let p = unsafe { pool.alloc(l) };
            assert!(!p.is_null());
            rest.push((p, l));
        }
        let small = Layout::from_size_align(1, 1).unwrap();
        pool.measure(true);
        // SAFETY: non-zero layout.
        let p = unsafe { pool.alloc(small) };
        assert!(!p.is_null());
        let t = pool.measure(true);
        assert_eq!((t.holds, t.max_steps), (1, 1 + top - MIN_ORDER), "splits");
        // SAFETY: from `alloc` with `small`.
        unsafe { pool.dealloc(p, small) };
        let t = pool.measure(true);
        assert_eq!((t.holds, t.max_steps), (1, top - MIN_ORDER + 1), "merges");
        for (p, l) in rest.drain(..) {
            // SAFETY: from `alloc` with `l`.
            unsafe { pool.dealloc(p, l) };
        }
        let run = pool.hold_workload().unwrap();
        assert!(run.times.holds > 20_000, "{:?}", run.times);
        assert!(
            (2..=MAX_STEPS).contains(&run.times.max_steps),
            "{:?}",
            run.times
        );
        assert_eq!(pool.usage().0, 0);
    }

    #[test]
    fn large_payloads_come_from_the_host_within_the_limit() {
        // Its largest block is 128 KiB: a 200 KiB payload never fits it.
        let mut mem = vec![0u8; 256 << 10];
        let pool = pool_of(&mut mem);
        let big = Layout::from_size_align(200 << 10, 8).unwrap();
        // No limit: from the pool, which is too small.
        // SAFETY: non-zero layout.
        assert!(unsafe { pool.alloc(big) }.is_null());
        pool.set_big_limit(450 << 10);
        let before = crate::testhost::BIG_LIVE.load(Ordering::SeqCst);
        // SAFETY: non-zero layouts; each pointer goes back with its layout below.
        let (a, b) = unsafe { (pool.alloc(big), pool.alloc(big)) };
        assert!(!a.is_null() && !b.is_null());
        assert_eq!(a as usize % BIG_ALIGN, 0);
        assert_eq!(pool.usage().0, 400 << 10);
        // SAFETY: as above; over the limit, and too big for the pool it falls back to.
        assert!(unsafe { pool.alloc(big) }.is_null(), "the limit was passed");
        let mid = Layout::from_size_align(64 << 10, 8).unwrap();
        // SAFETY: non-zero layout. Over the limit, but the pool has room: it comes from there.
        let m = unsafe { pool.alloc(mid) };
        assert!(!m.is_null() && (m as usize) >= mem.as_ptr() as usize);
        assert!((m as usize) < mem.as_ptr() as usize + mem.len());
        // SAFETY: from `alloc` with `mid`.
        unsafe { pool.dealloc(m, mid) };
        let small = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: non-zero layout.
        let s = unsafe { pool.alloc(small) };
        assert!(!s.is_null() && (s as usize) >= mem.as_ptr() as usize);
        // SAFETY: each from `alloc` with its layout.
        unsafe {
            pool.dealloc(a, big);
            pool.dealloc(b, big);
            pool.dealloc(s, small);
        }
        assert_eq!(pool.usage().0, 0);
        assert_eq!(crate::testhost::BIG_LIVE.load(Ordering::SeqCst), before);
    }

    #[test]
    fn frees_after_a_reset_are_ignored() {
        let mut mem = vec![0u8; 256 << 10];
        let pool = pool_of(&mut mem);
        let mid = Layout::from_size_align(64 << 10, 8).unwrap();
        // SAFETY: non-zero layout; no big limit, so it is a pool block.
        let m = unsafe { pool.alloc(mid) };
        assert!(!m.is_null());
        pool.reset();
        // A large pool block freed after the reset must not be taken for a `big_alloc` one
        // (`big_free` of pool memory, and the large-payload count driven below zero).
        // SAFETY: from `alloc` with `mid`; the pool no longer owns it, which is the point.
        unsafe { pool.dealloc(m, mid) };
        assert_eq!(pool.usage(), (0, 0));
    }

    #[test]
    fn layouts_map_to_orders() {
        let o = |s, a| order_of(Layout::from_size_align(s, a).unwrap());
        assert_eq!(o(1, 1), Some(MIN_ORDER));
        assert_eq!(o(33, 1), Some(6));
        assert_eq!(o(64 << 10, 8), Some(16));
        assert_eq!(o(8, 256), Some(8));
        assert_eq!(o(8, 8192), None);
    }
}
