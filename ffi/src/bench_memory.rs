//! The store's memory per chain in the kernel (`make bench-kernel`), measured as the userland
//! bench measures it with its counting allocator (`bench/src/memory.rs`): one node in today's
//! layout, `files` empty files in one directory, then as many files of four 64 KiB blocks, and
//! the bytes each run leaves allocated. Here the meter is the pool's bytes in use, which
//! counts the pool's blocks (rounded up to a power of two) and the large payloads taken from
//! the host (`kvmalloc`) alike, plus the chain locks the host allocates outside the pool
//! (userland's count has them too, as boxed locks), so the figure is what a chain costs this
//! kernel.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use core::time::Duration;

use hammer2_synchro::cluster::{Cluster, FrontendOp};
use hammer2_synchro::host::{Host, LockMode, LogLevel, RawLock, RawThread, ThreadEntry};
use hammer2_synchro::role::{NodeSet, Role};
use hammer2_synchro::store::Layout;
use hammer2_synchro::{Error, Result};

use crate::host::KERNEL_HOST;

// Private: cbindgen would export public constants into the C header, where these generic names
// could clash with a kernel macro.
/// Bytes of one DATA block: a data chain's payload.
const BLOCK: usize = 64 << 10;
/// Blocks per file of the data run (the userland bench's count).
const BLOCKS: usize = 4;

/// What the measurement found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainMemory {
    /// Files measured per kind.
    pub files: usize,
    /// Bytes per empty file: its inode chain in the PFS root's index (the 1 KiB inode
    /// included) and its DIRENT chain in the directory.
    pub inode_chain: usize,
    /// Bytes per DATA chain beyond its 64 KiB of data.
    pub data_chain: usize,
}

impl ChainMemory {
    /// The per-chain figures from the bytes left by `files` empty files (`empty`) and by
    /// `files` files of [`BLOCKS`] blocks (`with_data`): the data run's excess over the empty
    /// run, less the payload, per data chain.
    pub fn from_runs(files: usize, empty: usize, with_data: usize) -> Self {
        let files = files.max(1);
        let data = with_data
            .saturating_sub(empty)
            .saturating_sub(files * BLOCKS * BLOCK);
        ChainMemory {
            files,
            inode_chain: empty / files,
            data_chain: data / (files * BLOCKS),
        }
    }
}

/// The kernel host, counting the locks made through it that are still live: the host
/// allocates them outside the pool, so the pool's meter does not see them.
struct LockCounting {
    inner: &'static dyn Host,
    locks: AtomicUsize,
}

/// The host the measurement's clusters run on (only they use it).
static COUNTING: LockCounting = LockCounting {
    inner: &KERNEL_HOST,
    locks: AtomicUsize::new(0),
};

impl Host for LockCounting {
    fn sleep_on_word(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        self.inner.sleep_on_word(word, expected, timeout)
    }
    fn wake_word(&self, word: &AtomicU32) {
        self.inner.wake_word(word)
    }
    fn lock_create(&self) -> Result<RawLock> {
        let l = self.inner.lock_create()?;
        self.locks.fetch_add(1, Ordering::SeqCst);
        Ok(l)
    }
    fn lock_destroy(&self, lock: RawLock) {
        self.locks.fetch_sub(1, Ordering::SeqCst);
        self.inner.lock_destroy(lock)
    }
    fn lock(&self, lock: &RawLock, mode: LockMode, depth: u8) {
        self.inner.lock(lock, mode, depth)
    }
    fn unlock(&self, lock: &RawLock, mode: LockMode) {
        self.inner.unlock(lock, mode)
    }
    fn spawn(&self, name: &str, entry: ThreadEntry) -> Result<RawThread> {
        self.inner.spawn(name, entry)
    }
    fn join(&self, thread: RawThread) {
        self.inner.join(thread)
    }
    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }
    fn log(&self, level: LogLevel, args: fmt::Arguments<'_>) {
        self.inner.log(level, args)
    }
    fn should_stop(&self) -> bool {
        self.inner.should_stop()
    }
    fn relax(&self) {
        self.inner.relax()
    }
}

/// `d/fNNNNNN`: the userland bench's file names, so the directory entries are as long.
fn file_name(i: usize) -> [u8; 9] {
    let mut n = *b"d/f000000";
    let mut v = i;
    for b in n[3..].iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
    n
}

/// Bytes `live` counts more after `files` files of `blocks` blocks were written on a fresh
/// one-node cluster (its directory made before counting starts).
fn per_file(files: usize, blocks: usize, live: &dyn Fn() -> usize) -> Result<usize> {
    let host = &COUNTING;
    let c = Cluster::with_layout(host, &[Role::Master], Layout::Index)?;
    let mut data = Vec::new();
    data.try_reserve_exact(blocks * BLOCK)?;
    data.resize(blocks * BLOCK, 0x5Au8);
    let one = NodeSet(1);
    c.apply(one, FrontendOp::Mkdir(b"d")).map_err(|(_, e)| e)?;
    let before = live();
    for i in 0..files {
        c.apply(one, FrontendOp::Write(&file_name(i), &data))
            .map_err(|(_, e)| e)?;
        host.relax();
    }
    Ok(live().saturating_sub(before))
}

/// Measure with `files` files per kind (at least 1) on the kernel host. `pool` gives the pool's
/// bytes allocated now, and each live chain lock counts `lock_bytes` on top; the caller makes
/// sure nothing else allocates meanwhile.
pub fn measure(files: usize, lock_bytes: usize, pool: &dyn Fn() -> usize) -> Result<ChainMemory> {
    let files = files.max(1);
    if files > 999_999 {
        return Err(Error::Invalid);
    }
    let live = || {
        let locks = COUNTING.locks.load(Ordering::SeqCst);
        pool().saturating_add(locks.saturating_mul(lock_bytes))
    };
    let empty = per_file(files, 0, &live)?;
    let with_data = per_file(files, BLOCKS, &live)?;
    Ok(ChainMemory::from_runs(files, empty, with_data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    #[test]
    fn per_chain_arithmetic() {
        // 10 empty files left 20,000 B; 10 files of 4 blocks left that, their 2.5 MiB of data
        // and 12,000 B more: 500 B per data chain.
        let with_data = 20_000 + 10 * BLOCKS * BLOCK + 40 * 300;
        let m = ChainMemory::from_runs(10, 20_000, with_data);
        assert_eq!((m.files, m.inode_chain, m.data_chain), (10, 2_000, 300));
        // A meter that saw less than the payload gives 0, never a wrapped figure.
        assert_eq!(ChainMemory::from_runs(10, 20_000, 30_000).data_chain, 0);
        assert_eq!(ChainMemory::from_runs(0, 0, 0).files, 1);
    }

    #[test]
    fn names_match_the_userland_bench() {
        assert_eq!(&file_name(0), b"d/f000000");
        assert_eq!(&file_name(123_456), b"d/f123456");
    }

    #[test]
    fn runs_on_the_test_host_and_counts_the_chain_locks() {
        crate::testhost::ensure_init();
        // A scripted pool meter, read before and after each run (whatever the writes
        // allocated): 1 MiB in each run, plus the payload in the data run; 100 B per live lock.
        let reads = [0, 1 << 20, 0, (1 << 20) + 3 * BLOCKS * BLOCK];
        let calls = Cell::new(0usize);
        let pool = || {
            let v = reads.get(calls.get()).copied().unwrap_or(0);
            calls.set(calls.get() + 1);
            v
        };
        let m = measure(3, 100, &pool).unwrap();
        assert_eq!(calls.get(), 4);
        // Each empty file adds two chains (inode and DIRENT), each data block one, every
        // chain with its lock.
        assert_eq!(m.inode_chain, ((1 << 20) + 3 * 2 * 100) / 3);
        // The data run's 1 MiB and the empty-file chains cancel out: the 12 data chains'
        // locks are left.
        assert_eq!(m.data_chain, 100);
        // Every cluster's locks are gone with it.
        assert_eq!(COUNTING.locks.load(Ordering::SeqCst), 0);
        assert_eq!(measure(1_000_000, 100, &pool), Err(Error::Invalid));
    }
}
