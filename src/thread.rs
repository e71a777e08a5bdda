//! The sync-thread protocol. SKELETON: signatures are the contract; bodies to be completed.

use crate::Result;

/// The work one sync thread does per pass (the cluster wires `Cluster::sync_node` in).
pub trait SyncWork: Sync {
    /// One synchronization pass. `brk` is polled at every chain operation; when it returns true
    /// the pass must return `Err(Error::InProgress)` promptly.
    fn pass(&self, brk: &dyn Fn() -> bool) -> Result<()>;
    /// Reset sync state after a REMASTER request: re-read the cluster roles into this node's view.
    fn remaster(&self);
}

/// The per-node thread slots a cluster owns (one per node).
pub struct Threads {}

impl Threads {
    /// Slots for `n` nodes, no thread started.
    pub fn new(n: usize) -> Self {
        let _ = n;
        Threads {}
    }
}
