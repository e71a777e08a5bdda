//! What the in-memory store and the scan workers cost in memory, measured with the counting
//! allocator: bytes per chain beyond its payload, and bytes per node's scan pool (the workers
//! and their FIFOs). The same core code runs in the kernel module, whose pool holds exactly
//! these allocations (its chain locks and thread structs are the host's, not the pool's).

use hammer2_synchro::cluster::{Cluster, FrontendOp};
use hammer2_synchro::role::{NodeSet, Role};
use hammer2_synchro::userland;

use crate::alloc_count::live;
use crate::bandwidth::BLOCK;
use crate::cluster_bench::LAYOUT;

/// The measurements.
#[derive(Debug, Clone)]
pub struct Memory {
    /// Files measured per kind.
    pub files: usize,
    /// Bytes per empty file: its inode chain in the PFS root's index (the 1 KiB inode
    /// included) and its DIRENT chain in the directory.
    pub inode_chain: usize,
    /// Bytes per DATA chain beyond its 64 KiB of data.
    pub data_chain: usize,
    /// Live bytes of an empty cluster of `i + 1` nodes (every node's store and scan pool).
    pub cluster: Vec<usize>,
}

impl Memory {
    /// Bytes one more node adds to a cluster of `n - 1` (`n` in 2..=8).
    pub fn node_step(&self, n: usize) -> Option<usize> {
        let a = *self.cluster.get(n.checked_sub(2)?)?;
        Some(self.cluster.get(n - 1)?.saturating_sub(a))
    }

    /// Bytes per scan worker: a cluster of n nodes runs n·(n-1) workers, so the second
    /// difference of the cluster sizes is twice a worker's cost (averaged over n = 3..=8).
    pub fn worker(&self) -> Option<usize> {
        let steps: Vec<usize> = (2..=8).filter_map(|n| self.node_step(n)).collect();
        let d: Vec<i64> = steps
            .windows(2)
            .map(|w| w[1] as i64 - w[0] as i64)
            .collect();
        (!d.is_empty()).then(|| (d.iter().sum::<i64>() / d.len() as i64 / 2).max(0) as usize)
    }
}

fn cluster(n: usize) -> Result<std::pin::Pin<Box<Cluster>>, String> {
    let roles = vec![Role::Master; n];
    Cluster::with_layout(userland::host(), &roles, LAYOUT)
        .map_err(|e| format!("Cluster::with_layout({n}): {e}"))
}

/// Live bytes `f` leaves allocated.
fn kept<T>(f: impl FnOnce() -> Result<T, String>) -> Result<(T, usize), String> {
    let before = live();
    let t = f()?;
    Ok((t, live().saturating_sub(before)))
}

/// Bytes per chain after `files` files of `blocks` 64 KiB blocks on one node of a cluster.
fn per_file(files: usize, blocks: usize) -> Result<usize, String> {
    let c = cluster(1)?;
    let data = vec![0x5Au8; blocks * BLOCK];
    let one = NodeSet(1);
    c.apply(one, FrontendOp::Mkdir(b"d"))
        .map_err(|(_, e)| format!("mkdir: {e}"))?;
    let ((), bytes) = kept(|| {
        for i in 0..files {
            let path = format!("d/f{i:06}");
            c.apply(one, FrontendOp::Write(path.as_bytes(), &data))
                .map_err(|(_, e)| format!("write: {e}"))?;
        }
        Ok(())
    })?;
    Ok(bytes)
}

/// Live bytes over a run of scenario `text` (the `make run` demonstration): sampled every
/// 10 ms, (median, largest sample). The median is the steady state of a scenario that mostly
/// waits for its sync threads; checks such as `expect same` briefly add copies of two trees.
pub fn scenario_live(text: &[u8]) -> Result<(usize, usize), String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let base = live();
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let sampler = std::thread::spawn(move || {
        let mut v = Vec::new();
        while !flag.load(Ordering::SeqCst) {
            v.push(live().saturating_sub(base));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        v
    });
    let mut out = String::new();
    let outcome = hammer2_synchro::scenario::run(userland::host(), text, &mut out);
    done.store(true, Ordering::SeqCst);
    let mut v = sampler
        .join()
        .map_err(|_| "the sampler panicked".to_string())?;
    if outcome != hammer2_synchro::scenario::Outcome::Passed {
        return Err(format!("the scenario did not pass: {outcome:?}\n{out}"));
    }
    v.sort_unstable();
    Ok((
        v.get(v.len() / 2).copied().unwrap_or(0),
        v.last().copied().unwrap_or(0),
    ))
}

/// Measure with `files` files per kind (the bench allocates nothing else meanwhile).
pub fn measure(files: usize) -> Result<Memory, String> {
    let files = files.max(1);
    let empty = per_file(files, 0)?;
    let with_data = per_file(files, 4)?;
    let data = with_data
        .saturating_sub(empty)
        .saturating_sub(files * 4 * BLOCK);
    // Warm-up: the thread library's lazily grown tables (parking_lot's hash table of parked
    // threads, never shrunk) are sized for the most threads once, not charged to one size.
    drop(cluster(8)?);
    let mut sizes = Vec::new();
    for n in 1..=8 {
        let (c, bytes) = kept(|| {
            let c = cluster(n)?;
            // The workers start asynchronously: let them reach their idle sleep first.
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(c)
        })?;
        drop(c);
        sizes.push(bytes);
    }
    Ok(Memory {
        files,
        inode_chain: empty / files,
        data_chain: data / (files * 4),
        cluster: sizes,
    })
}
