//! The per-inode synchronizer (`hammer2_sync_slaves`).

/// Per-node synchronizer counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// Completed or interrupted passes.
    pub passes: u64,
    /// Chains compared.
    pub scanned: u64,
    /// Chains inserted.
    pub inserted: u64,
    /// Chains destroyed.
    pub destroyed: u64,
    /// Chains replaced.
    pub replaced: u64,
    /// Inodes deferred for bottom-up sync.
    pub deferred: u64,
}
