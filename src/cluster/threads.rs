//! The cluster's sync-thread operations: node `idx`'s thread runs `Cluster::sync_node(idx)`.
//! They live with the cluster, not in `crate::thread`: the thread layer only knows the
//! [`SyncWork`] it runs, never the cluster that supplies it.

use core::pin::Pin;

use super::Cluster;
use crate::thread::{Brk, Request, SyncWork, ThreadState};
use crate::Result;

/// The work of node `idx`'s sync thread: passes of `Cluster::sync_node`, resets through
/// `Cluster::refresh_view`.
pub struct NodeWork<'a> {
    /// The cluster the node belongs to.
    pub cluster: &'a Cluster,
    /// The node's index.
    pub idx: usize,
}

impl SyncWork for NodeWork<'_> {
    fn pass(&self, brk: &dyn Fn() -> bool) -> Result<()> {
        self.cluster.sync_node(self.idx, brk)
    }
    fn pass_with(&self, brk: &Brk<'_>) -> Result<()> {
        self.cluster.sync_node_with(self.idx, brk)
    }
    fn remaster(&self) {
        self.cluster.refresh_view(self.idx);
    }
}

impl Cluster {
    /// Start node `idx`'s sync thread (`Error::Busy` if one runs, `Error::Invalid` for a bad
    /// index). It reads its role view, then syncs at every signal and idle poll.
    pub fn thread_start(self: Pin<&Self>, idx: usize) -> Result<()> {
        let this: &Cluster = self.get_ref();
        let work = NodeWork { cluster: this, idx };
        // SAFETY: the cluster is pinned, so it (and its `threads` field) stays at this address
        // until it is dropped; dropping it stops and joins every thread before the cluster's
        // memory goes away (the `Threads` drop, and the cluster's own drop calls
        // `threads.stop_all()` before anything else is released).
        unsafe { this.threads.start(idx, this.host(), work) }
    }

    /// Make `req` of node `idx`'s thread; returns once it acknowledged it (see [`Request`]). A
    /// successful no-op on a node whose thread never started or has stopped (`Error::Invalid`
    /// only for a bad index), as in HAMMER2.
    pub fn thread_request(&self, idx: usize, req: Request) -> Result<()> {
        self.threads.request(idx, req)
    }

    /// What node `idx`'s thread is doing.
    pub fn thread_state(&self, idx: usize) -> ThreadState {
        self.threads.state(idx)
    }

    /// Node `idx`'s raw flag word (print it with [`crate::thread::flag_names`]).
    pub fn thread_flags(&self, idx: usize) -> u32 {
        self.threads.flags(idx)
    }

    /// Set the idle poll of every sync thread of this cluster.
    pub fn set_thread_idle_poll(&self, d: core::time::Duration) {
        self.threads.set_idle_poll(d);
    }
}
