//! A cluster of up to 8 nodes holding one PFS, each with a role, a node store and a sync thread.
//!
//! SKELETON: the signatures below are the contract between the layers; bodies are filled in by the
//! store/sync work (data side) and the thread work (`thread_*` methods live in `crate::thread`).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::pin::Pin;

use crate::host::Host;
use crate::quorum::QuorumResult;
use crate::Result;

/// Most nodes a cluster may have (`HAMMER2_MAXCLUSTER`).
pub const MAX_NODES: usize = 8;

/// A node's role in the PFS (`HAMMER2_PFSTYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Votes in the quorum (`PFSTYPE_MASTER` 6).
    Master,
    /// Validated against the focus, never votes (`PFSTYPE_SLAVE` 3).
    Slave,
    /// Soft read/write status (`PFSTYPE_SOFT_MASTER` 5).
    SoftMaster,
    /// Soft read status (`PFSTYPE_SOFT_SLAVE` 4).
    SoftSlave,
    /// Ignored by the quorum (`PFSTYPE_CACHE` 1).
    Cache,
}

impl Role {
    /// The on-media `pfs_type` value.
    pub const fn pfs_type(self) -> u8 {
        match self {
            Role::Master => 6,
            Role::Slave => 3,
            Role::SoftMaster => 5,
            Role::SoftSlave => 4,
            Role::Cache => 1,
        }
    }
    /// The scenario-language name (`master`, `slave`, `soft_master`, `soft_slave`, `cache`).
    pub const fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Slave => "slave",
            Role::SoftMaster => "soft_master",
            Role::SoftSlave => "soft_slave",
            Role::Cache => "cache",
        }
    }
    /// Parse a scenario-language role name.
    pub fn from_name(s: &str) -> Option<Role> {
        Some(match s {
            "master" => Role::Master,
            "slave" => Role::Slave,
            "soft_master" => Role::SoftMaster,
            "soft_slave" => Role::SoftSlave,
            "cache" => Role::Cache,
            _ => return None,
        })
    }
}

/// A set of node indices (bit i = node i).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeSet(pub u8);

impl NodeSet {
    /// Iterate the indices in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_NODES).filter(move |i| self.0 & (1 << i) != 0)
    }
    /// Whether `idx` is in the set.
    pub fn contains(self, idx: usize) -> bool {
        idx < MAX_NODES && self.0 & (1 << idx) != 0
    }
}

/// One frontend change, applied as one transaction on every node of a set.
#[derive(Debug, Clone, Copy)]
pub enum FrontendOp<'a> {
    /// Create a directory; the parent must exist.
    Mkdir(&'a [u8]),
    /// Create or overwrite a regular file with these bytes.
    Write(&'a [u8], &'a [u8]),
    /// Remove a file, or a directory with everything under it.
    Rm(&'a [u8]),
    /// Change the mode bits (permission part) of an inode.
    Chmod(&'a [u8], u32),
    /// Create a hardlink pointer inode at the second path naming the first path's inode.
    Link(&'a [u8], &'a [u8]),
}

/// What `stat` reports of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeStat {
    /// `HAMMER2_OBJTYPE_*`.
    pub objtype: u8,
    /// Mode bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// The inode chain's modify_tid.
    pub modify_tid: u64,
}

/// The cluster. Always pinned in a box: sync threads hold its address until joined.
pub struct Cluster {
    _host: &'static dyn Host,
    /// One sync-thread slot per node (owned by the thread layer).
    pub(crate) threads: crate::thread::Threads,
    _pin: core::marker::PhantomPinned,
}

impl Cluster {
    /// A cluster with one empty PFS root per node, nodes in `roles` order (1 to 8).
    pub fn new(host: &'static dyn Host, roles: &[Role]) -> Result<Pin<Box<Cluster>>> {
        let _ = (host, roles);
        todo!()
    }
    /// The host this cluster runs on.
    pub fn host(&self) -> &'static dyn Host {
        self._host
    }
    /// Number of nodes.
    pub fn len(&self) -> usize {
        todo!()
    }
    /// A node's current role.
    pub fn role(&self, idx: usize) -> Role {
        let _ = idx;
        todo!()
    }
    /// Change a node's role; its sync thread re-reads roles on `remaster`.
    pub fn set_role(&self, idx: usize, role: Role) {
        let _ = (idx, role);
        todo!()
    }
    /// Apply one frontend change as a new transaction to every node of `set`.
    /// On failure returns the first failing node index and its error; nodes before it in the set
    /// may already hold the change (as a real partial write would).
    pub fn apply(
        &self,
        set: NodeSet,
        op: FrontendOp<'_>,
    ) -> core::result::Result<u64, (usize, crate::Error)> {
        let _ = (set, op);
        todo!()
    }
    /// One synchronization pass of node `idx` against the others (the driver of HAMMER2-FACTS
    /// §3.7: loops while EAGAIN, syncs deferrals bottom-up). `brk` is polled at every chain
    /// operation; when it returns true the pass stops with `Error::InProgress`.
    pub fn sync_node(&self, idx: usize, brk: &dyn Fn() -> bool) -> Result<()> {
        let _ = (idx, brk);
        todo!()
    }
    /// Copy the cluster's current roles into node `idx`'s own view, which its sync passes use
    /// (a sync thread does this at start and when it consumes REMASTER; `sync` before each pass).
    pub fn refresh_view(&self, idx: usize) {
        let _ = idx;
        todo!()
    }
    /// Node `idx`'s synchronizer counters.
    pub fn stats(&self, idx: usize) -> crate::sync::SyncStats {
        let _ = idx;
        todo!()
    }
    /// Write a human-readable status of this cluster: nodes, roles, status words, thread flags by
    /// name, counters. Used by every host's `status`.
    pub fn write_status(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let _ = out;
        todo!()
    }
    /// Quorum over the PFS roots of all nodes.
    pub fn focus_root(&self) -> QuorumResult {
        todo!()
    }
    /// Whether node `idx` agrees with the quorum focus (its PFS root's modify_tid equals it).
    pub fn in_sync(&self, idx: usize) -> bool {
        let _ = idx;
        todo!()
    }
    /// Compare node `b`'s tree with node `a`'s; write the first differences to `out`.
    pub fn compare(&self, a: usize, b: usize, out: &mut dyn fmt::Write) -> Result<bool> {
        let _ = (a, b, out);
        todo!()
    }
    /// Stat the inode at `path` on node `idx`.
    pub fn stat(&self, idx: usize, path: &[u8]) -> Result<InodeStat> {
        let _ = (idx, path);
        todo!()
    }
    /// Read a whole regular file at `path` on node `idx`.
    pub fn read_file(&self, idx: usize, path: &[u8]) -> Result<Vec<u8>> {
        let _ = (idx, path);
        todo!()
    }
}

/// Write the status of every live cluster (kernel `status` file). Clusters register themselves
/// in [`Cluster::new`] and unregister when dropped.
pub fn write_all_status(out: &mut dyn fmt::Write) -> fmt::Result {
    let _ = out;
    todo!()
}
