//! Initial sync of an empty slave holding 64 KiB data blocks, against a plain memcpy of the same
//! bytes (the physical limit of copying them once).

use std::time::{Duration, Instant};

use hammer2_synchro::cluster::FrontendOp;

use crate::cluster_bench::{new_cluster, timed_sync, MASTERS, SLAVE};
use crate::usage::Usage;

/// HAMMER2's data block size.
pub const BLOCK: usize = 64 * 1024;

/// The bandwidth measurement.
#[derive(Debug, Clone)]
pub struct Bandwidth {
    /// File bytes the slave copied.
    pub bytes: usize,
    /// Files (each `file_bytes` long, whole 64 KiB blocks).
    pub files: usize,
    /// Best of three first syncs of an empty slave, each on a new cluster.
    pub sync: Duration,
    /// The first of those three (the process's allocator had not held that much memory yet).
    pub cold: Duration,
    /// Chains the best sync scanned.
    pub scanned: u64,
    /// Best of three memcpys of `bytes` into a pre-faulted buffer.
    pub memcpy: Duration,
    /// Page faults the process took during the best sync, during the first (cold) one, and
    /// during the three timed memcpys (none expected: their buffer is written before). None
    /// where the counter cannot be read.
    pub faults: Option<Faults>,
}

/// Page faults counted during the timed parts of [`measure`].
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// During the best sync.
    pub sync: u64,
    /// During the cold (first) sync.
    pub cold: u64,
    /// During the three timed memcpys.
    pub memcpy: u64,
}

impl Bandwidth {
    /// Sync bandwidth as a fraction of memcpy bandwidth.
    pub fn ratio(&self) -> f64 {
        self.ratio_of(self.sync)
    }
    /// [`Bandwidth::ratio`] of the cold (first) sync.
    pub fn cold_ratio(&self) -> f64 {
        self.ratio_of(self.cold)
    }
    fn ratio_of(&self, sync: Duration) -> f64 {
        self.memcpy.as_secs_f64() / sync.as_secs_f64().max(1e-12)
    }
}

/// Bytes that do not repeat (xorshift64), so no layer can share or skip them.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (len - v.len()).min(8);
        v.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    v
}

/// Best-of-three time to copy `src` into a pre-faulted buffer of its size, and the page faults
/// taken during the three timed copies.
pub fn memcpy_time(src: &[u8]) -> (Duration, Option<u64>) {
    let mut dst = vec![1u8; src.len()];
    let mut best = Duration::MAX;
    let before = minor_faults();
    for _ in 0..3 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(src));
        std::hint::black_box(&mut dst);
        best = best.min(t.elapsed());
    }
    (best, fault_delta(before))
}

/// Minor page faults this process took so far (every first touch of an anonymous page is
/// one), None where they cannot be read.
pub fn minor_faults() -> Option<u64> {
    Usage::now().map(|u| u.faults)
}

fn fault_delta(before: Option<u64>) -> Option<u64> {
    Some(minor_faults()?.saturating_sub(before?))
}

/// One empty slave's first sync of `data` (files of `file_bytes` on the masters of a new
/// cluster), checked: its time, chains scanned and page faults.
fn one_sync(data: &[u8], file_bytes: usize) -> Result<(Duration, u64, Option<u64>), String> {
    let files = data.len() / file_bytes;
    let c = new_cluster()?;
    c.apply(MASTERS, FrontendOp::Mkdir(b"b"))
        .map_err(|(n, e)| format!("mkdir on node {n}: {e}"))?;
    let path = |i: usize| format!("b/f{i:05}");
    for (i, chunk) in data.chunks(file_bytes).enumerate() {
        c.apply(MASTERS, FrontendOp::Write(path(i).as_bytes(), chunk))
            .map_err(|(n, e)| format!("write on node {n}: {e}"))?;
    }
    let before = minor_faults();
    let (sync, scanned, _) = timed_sync(&c)?;
    let faults = fault_delta(before);
    for i in [0, files / 2, files - 1] {
        let got = c
            .read_file(SLAVE, path(i).as_bytes())
            .map_err(|e| format!("read_file: {e}"))?;
        if got != data[i * file_bytes..(i + 1) * file_bytes] {
            return Err(format!("{}: the slave's copy differs", path(i)));
        }
    }
    Ok((sync, scanned, faults))
}

/// Write `total` bytes as files of `file_bytes` on the masters, time the empty slave's first
/// sync (best of three, each on a new cluster, as the memcpy is best of three), check it, and
/// time memcpy of the same bytes.
pub fn measure(total: usize, file_bytes: usize) -> Result<Bandwidth, String> {
    let files = total.div_ceil(file_bytes).max(1);
    let data = noise(files * file_bytes, 0x9E37_79B9_7F4A_7C15);
    let cold = one_sync(&data, file_bytes)?;
    let mut best = cold;
    for _ in 1..3 {
        let run = one_sync(&data, file_bytes)?;
        if run.0 < best.0 {
            best = run;
        }
    }
    let (memcpy, memcpy_faults) = memcpy_time(&data);
    let faults = match (best.2, cold.2, memcpy_faults) {
        (Some(sync), Some(cold), Some(memcpy)) => Some(Faults { sync, cold, memcpy }),
        _ => None,
    };
    Ok(Bandwidth {
        bytes: data.len(),
        files,
        sync: best.0,
        cold: cold.0,
        scanned: best.1,
        memcpy,
        faults,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_long_and_varied() {
        let a = noise(100_000, 1);
        assert_eq!(a.len(), 100_000);
        assert_ne!(a[..BLOCK / 2], a[BLOCK / 2..BLOCK]);
        assert_ne!(noise(64, 1), noise(64, 2));
    }

    #[test]
    fn memcpy_time_is_positive() {
        assert!(memcpy_time(&noise(1 << 20, 3)).0 > Duration::ZERO);
    }

    #[test]
    fn first_touch_of_fresh_pages_counts_as_faults() {
        let Some(before) = minor_faults() else {
            panic!("/proc/self/stat has no minflt field");
        };
        // 16 MiB: allocated by mmap, every page touched for the first time (at least 8 faults
        // even where transparent huge pages back it). Less than a quarter of what the
        // process-wide allocation counter's test allocates beside it.
        let v = std::hint::black_box(vec![1u8; 16 << 20]);
        let after = minor_faults().unwrap();
        assert!(after - before >= 8, "{before} -> {after}");
        drop(v);
    }
}
