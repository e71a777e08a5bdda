//! The benchmark of hammer2-synchro: resync cost against tree size N and changed leaves
//! k (per scan mode), the same divergence resynced by rsync on tmpfs, initial-sync bandwidth
//! against memcpy, the sync's peak memory, and sync-thread freeze/stop latency. One run writes
//! `BENCHMARKS.md`, the plot, and one `target ...` line per target.
#![deny(missing_docs)]

pub mod alloc_count;
pub mod bandwidth;
pub mod cluster_bench;
pub mod kernel;
pub mod machine;
pub mod memory;
pub mod report;
pub mod results;
pub mod run;
pub mod shape;
pub mod stats;
pub mod svg;
pub mod target;
pub mod tmpfs;
pub mod usage;
pub mod volume_bench;
