//! A cluster of up to 8 nodes holding one PFS, each with a role, a node store and a sync thread.
//!
//! The data side lives here (stores, roles, the TID clock, frontend changes, sync entry points,
//! checks and status); the `thread_*` methods live in `crate::thread`.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;

use crate::host::HostLock;
use crate::host::{Host, LockMode};
use crate::media;
use crate::mem::try_box;
use crate::quorum::{self, NodeAnswer, QuorumResult, Voter};
use crate::role::{NodeSet, Role, MAX_NODES};
pub use crate::store::compare::FileCmp;
use crate::store::compare::{self, Record};
use crate::store::{Layout, Store};
use crate::sync::pool::{NodeFaults, Pool};
use crate::sync::{self, SyncStats};
use crate::{Error, Result};

mod threads;
pub use threads::NodeWork;

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
    /// Create a hardlink at the second path naming the first path's inode (a pointer inode in
    /// the seed's layout, a second directory entry in today's).
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

/// One node: its store, its own view of the roles, its synchronizer counters.
pub(crate) struct Node {
    pub(crate) store: Store,
    /// The roles this node's sync passes use (refreshed on remaster).
    view: spin::Mutex<[Role; MAX_NODES]>,
    stats: spin::Mutex<SyncStats>,
    /// Serialises synchronization passes of this node (thread and `sync` command).
    sync_lock: HostLock,
    /// Catch-up mode of this node's passes (scenario `catchup`).
    catchup: AtomicBool,
    /// This node's scan workers, one per other node, idle between passes. Started with the
    /// cluster (so a sync spawns no thread: spawning may not fail on every host) and joined
    /// in `Drop`, before any store goes away. Used under `sync_lock`.
    pool: spin::Mutex<Option<Pool<'static, Store>>>,
}

/// The cluster. Always pinned in a box: sync threads hold its address until joined.
pub struct Cluster {
    _host: &'static dyn Host,
    /// One sync-thread slot per node (owned by the thread layer).
    pub(crate) threads: crate::thread::Threads,
    nodes: Vec<Node>,
    /// The current roles (`set_role`); nodes copy them into their view on `refresh_view`.
    roles: spin::Mutex<[Role; MAX_NODES]>,
    /// The PFS roots' recorded `pfs_nmasters`.
    nmasters: u8,
    /// Every node's layout.
    layout: Layout,
    /// The last TID handed out; frontend changes are serialised under `frontend`.
    tid: spin::Mutex<u64>,
    /// Odd while a change is being applied node by node (see [`sync::Peers::changes`]).
    changes: AtomicU64,
    /// Fault hooks on the reads synchronization makes of each node (scenario `stall`, `fail`).
    faults: [NodeFaults; MAX_NODES],
    frontend: HostLock,
    /// How sync passes scan a differing inode (0: pruned, 1: original).
    scan_mode: core::sync::atomic::AtomicU8,
    /// The next live cluster in [`REGISTRY`]'s list (0: none); changed only under its lock.
    reg_next: AtomicUsize,
    /// What `status` calls this cluster: a serial number, never its address (which a kernel
    /// must not show to user space).
    serial: u64,
    _pin: core::marker::PhantomPinned,
}

/// The live clusters, for [`write_all_status`]: the address of the first, each linking the next
/// through `reg_next`. Intrusive, so registering allocates nothing and a kernel host's pool is
/// empty again once the last cluster is gone.
static REGISTRY: spin::Mutex<usize> = spin::Mutex::new(0);

/// The serial number of the next cluster made.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// The PFS root inode of a new node.
fn pfs_root(role: Role, idx: usize, nmasters: u8) -> media::InodeData {
    let mut ip = media::InodeData::default();
    let m = &mut ip.meta;
    m.version = media::INODE_VERSION_ONE;
    m.objtype = media::OBJTYPE_DIRECTORY;
    m.op_flags = media::OpFlags::PFSROOT.bits();
    m.mode = 0o755;
    m.inum = 1;
    m.nlinks = 1;
    m.check_algo = media::CHECK_DEFAULT;
    m.pfs_type = role.pfs_type();
    m.pfs_nmasters = nmasters;
    m.pfs_inum = 1;
    // One cluster id for the PFS, one fsid per node: the distinguishing fields §3.6 keeps.
    m.pfs_clid = *b"hammer2-synchro\0";
    m.pfs_fsid = [idx as u8 + 1; 16];
    ip
}

impl Cluster {
    /// A cluster in the default layout ([`Layout::Index`]) with one empty PFS root per node,
    /// nodes in `roles` order (1 to 8).
    pub fn new(host: &'static dyn Host, roles: &[Role]) -> Result<Pin<Box<Cluster>>> {
        Cluster::with_layout(host, roles, Layout::default())
    }

    /// [`Cluster::new`] with every node in `layout`.
    pub fn with_layout(
        host: &'static dyn Host,
        roles: &[Role],
        layout: Layout,
    ) -> Result<Pin<Box<Cluster>>> {
        if roles.is_empty() || roles.len() > MAX_NODES {
            return Err(Error::Invalid);
        }
        let nmasters = roles.iter().filter(|r| **r == Role::Master).count() as u8;
        let mut stores = Vec::new();
        stores.try_reserve_exact(roles.len())?;
        for (idx, &role) in roles.iter().enumerate() {
            stores.push(Store::with_layout(
                host,
                pfs_root(role, idx, nmasters),
                layout,
            )?);
        }
        Cluster::from_stores(host, roles, stores, layout)
    }

    /// A cluster over stores made elsewhere (PFSs loaded from volumes, say), node `i` holding
    /// `stores[i]` in role `roles[i]`, every store in `layout`. The TID clock starts at the
    /// highest PFS root modify_tid, so a frontend change stamps TIDs above every node's.
    pub fn from_stores(
        host: &'static dyn Host,
        roles: &[Role],
        stores: Vec<Store>,
        layout: Layout,
    ) -> Result<Pin<Box<Cluster>>> {
        if roles.is_empty() || roles.len() > MAX_NODES || stores.len() != roles.len() {
            return Err(Error::Invalid);
        }
        let nmasters = roles.iter().filter(|r| **r == Role::Master).count() as u8;
        let mut all = [Role::Cache; MAX_NODES];
        all[..roles.len()].copy_from_slice(roles);
        let mut top_tid = 0;
        let mut nodes = Vec::new();
        nodes.try_reserve_exact(roles.len())?;
        for store in stores {
            top_tid = top_tid.max(store.bref(store.root())?.modify_tid);
            nodes.push(Node {
                store,
                view: spin::Mutex::new(all),
                stats: spin::Mutex::new(SyncStats::default()),
                sync_lock: HostLock::new(host)?,
                catchup: AtomicBool::new(false),
                pool: spin::Mutex::new(None),
            });
        }
        let c = Box::into_pin(try_box(Cluster {
            _host: host,
            threads: crate::thread::Threads::new(roles.len()),
            nodes,
            roles: spin::Mutex::new(all),
            nmasters,
            layout,
            tid: spin::Mutex::new(top_tid),
            changes: AtomicU64::new(0),
            faults: Default::default(),
            frontend: HostLock::new(host)?,
            scan_mode: core::sync::atomic::AtomicU8::new(0),
            reg_next: AtomicUsize::new(0),
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            _pin: core::marker::PhantomPinned,
        })?);
        {
            let mut head = REGISTRY.lock();
            c.reg_next.store(*head, Ordering::Relaxed);
            *head = &*c as *const Cluster as usize;
        }
        c.start_pools()?;
        Ok(c)
    }
    /// Start every node's scan workers (see `Node::pool`).
    fn start_pools(&self) -> Result<()> {
        let c = self;
        let mut stores: heapless::Vec<&Store, MAX_NODES> = heapless::Vec::new();
        for n in &c.nodes {
            stores.push(&n.store).map_err(|_| Error::Invalid)?;
        }
        for (idx, n) in c.nodes.iter().enumerate() {
            // SAFETY: the stores and fault hooks live in this pinned cluster, which does not
            // move; `Drop for Cluster` drops every pool (joining its workers) before any field
            // is released. On an error here the cluster drops the same way.
            let pool = unsafe { Pool::start_unbound(c._host, &stores, Some(&c.faults[..]), idx)? };
            *n.pool.lock() = Some(pool);
        }
        Ok(())
    }
    /// The host this cluster runs on.
    pub fn host(&self) -> &'static dyn Host {
        self._host
    }
    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    fn node(&self, idx: usize) -> Result<&Node> {
        self.nodes.get(idx).ok_or(Error::Invalid)
    }
    /// Node `idx`'s store (`Invalid` for a bad index).
    pub fn store(&self, idx: usize) -> Result<&Store> {
        Ok(&self.node(idx)?.store)
    }
    /// A node's current role (`Cache` for an index past the end).
    pub fn role(&self, idx: usize) -> Role {
        self.roles.lock().get(idx).copied().unwrap_or(Role::Cache)
    }
    /// Change a node's role; its sync thread re-reads roles on `remaster`.
    pub fn set_role(&self, idx: usize, role: Role) {
        if idx < self.nodes.len() {
            self.roles.lock()[idx] = role;
        }
    }
    /// Delay every read synchronization makes of node `idx` by `d` (None: no delay). The
    /// interpreter's and the frontend's own reads are not affected.
    pub fn set_stall(&self, idx: usize, d: Option<Duration>) {
        if let Some(f) = self.faults.get(idx).filter(|_| idx < self.nodes.len()) {
            f.set_stall(d);
        }
    }
    /// Make node `idx`'s collector never poll its break condition for a stalled wait.
    #[cfg(test)]
    pub(crate) fn no_stalled_wait_polls(&self, idx: usize) {
        if let Some(p) = self.nodes[idx].pool.lock().as_ref() {
            p.no_stalled_wait_polls();
        }
    }
    /// Make every read synchronization makes of node `idx` fail with EIO (or stop doing so).
    pub fn set_fail(&self, idx: usize, on: bool) {
        if let Some(f) = self.faults.get(idx).filter(|_| idx < self.nodes.len()) {
            f.set_fail(on);
        }
    }
    /// Catch-up mode for node `idx`'s passes: an inode with no quorum becomes, subtree and
    /// all, that of the master holding its highest TID (once every master that has not failed
    /// answered; never moving the node backwards) instead of changing nothing.
    pub fn set_catchup(&self, idx: usize, on: bool) {
        if let Some(n) = self.nodes.get(idx) {
            n.catchup.store(on, Ordering::SeqCst);
        }
    }
    /// The PFS roots' recorded master count.
    pub fn recorded_nmasters(&self) -> u8 {
        self.nmasters
    }
    /// Apply one frontend change as a new transaction to every node of `set`.
    /// On failure returns the first failing node index and its error; nodes before it in the set
    /// may already hold the change (as a real partial write would).
    ///
    /// Every node of the set is stamped with the same TID, propagated to its PFS root. So a
    /// change given to a node that was out of sync makes the TIDs of the chains it stamps equal
    /// to the in-sync nodes' while what it missed stays missing: the synchronizer, which trusts
    /// equal TIDs, no longer sees that divergence until the quorum changes those chains again
    /// without it (HAMMER2-FACTS §6, the frontend atomicity gap, in both layouts).
    pub fn apply(
        &self,
        set: NodeSet,
        op: FrontendOp<'_>,
    ) -> core::result::Result<u64, (usize, crate::Error)> {
        if let Some(bad) = set.iter().find(|&i| i >= self.nodes.len()) {
            return Err((bad, Error::Invalid));
        }
        // One change at a time, so every node sees the TIDs in the same increasing order.
        let _serial = self.frontend.hold(LockMode::Exclusive);
        let tid = {
            let mut t = self.tid.lock();
            *t += 1;
            *t
        };
        // Mark the change in flight for the synchronizers' collectors (a seqlock: odd while
        // the nodes are being changed one by one, even again once all are).
        self.changes.fetch_add(1, Ordering::SeqCst);
        let r = self
            .new_inum(op)
            .and_then(|inum| self.apply_each(set, op, tid, inum));
        self.changes.fetch_add(1, Ordering::SeqCst);
        r.map(|()| tid)
    }
    fn apply_each(
        &self,
        set: NodeSet,
        op: FrontendOp<'_>,
        tid: u64,
        inum: Option<u64>,
    ) -> core::result::Result<(), (usize, crate::Error)> {
        for idx in set.iter() {
            let s = &self.nodes[idx].store;
            let r = match op {
                FrontendOp::Mkdir(p) => s.mkdir_as(p, tid, inum),
                FrontendOp::Write(p, d) => s.write_as(p, d, tid, inum),
                FrontendOp::Rm(p) => s.rm(p, tid),
                FrontendOp::Chmod(p, m) => s.chmod(p, m, tid),
                FrontendOp::Link(t, p) => s.link(t, p, tid),
            };
            r.map_err(|e| (idx, e))?;
        }
        Ok(())
    }
    /// The inode number a change that may create an inode gives it on every node, in
    /// [`Layout::Index`]: the cluster's frontend allocates one number for all nodes, as
    /// HAMMER2's does. That is the number the path already has on a node (the first in node
    /// order) as the kind of file the change makes, so a node that missed the creation gets the
    /// same inode, as long as no node holding that number names it by other names only; else
    /// one past the highest any node handed out.
    /// None in the seed's layout (its numbers derive from the path) and for other changes.
    ///
    /// DEVIATION (test clusters): HAMMER2's frontend allocates from its PFS's counter and
    /// creates on the nodes it reaches; a scenario may give "the same" file to a node that
    /// missed its creation by a later change, which must then agree with the others, so the
    /// number a path has elsewhere is reused. Not where a node holds it under other names only
    /// (the path was removed there while a hardlink kept the inode): that inode is another
    /// file now, and naming it again would alias the two, so such a create gets a new number.
    fn new_inum(&self, op: FrontendOp<'_>) -> core::result::Result<Option<u64>, (usize, Error)> {
        let (path, objtype) = match op {
            FrontendOp::Mkdir(p) if self.layout == Layout::Index => (p, media::OBJTYPE_DIRECTORY),
            FrontendOp::Write(p, _) if self.layout == Layout::Index => (p, media::OBJTYPE_REGFILE),
            _ => return Ok(None),
        };
        let mut fresh = 0;
        for (idx, n) in self.nodes.iter().enumerate() {
            // Only the same kind of file is "the same" file: a directory made where another
            // node has a file of that name is a new inode.
            if let Some(inum) = self.path_inum(idx, path, Some(objtype))? {
                if self.named_by_path_wherever_held(inum, path)? {
                    return Ok(Some(inum));
                }
            }
            fresh = n.store.next_inum().map_err(|e| (idx, e))?.max(fresh);
        }
        Ok(Some(fresh))
    }

    /// The inode number `path` names on node `idx` (of type `objtype` if given), if any.
    fn path_inum(
        &self,
        idx: usize,
        path: &[u8],
        objtype: Option<u8>,
    ) -> core::result::Result<Option<u64>, (usize, Error)> {
        let store = &self.nodes[idx].store;
        match store.resolve(path) {
            Ok(id) => {
                let m = store.meta(id).map_err(|e| (idx, e))?;
                Ok(objtype.map_or(true, |t| t == m.objtype).then_some(m.inum))
            }
            // Not there (the change itself reports a bad path).
            Err(Error::NotFound | Error::NotDir | Error::Invalid) => Ok(None),
            Err(e) => Err((idx, e)),
        }
    }

    /// Whether no node names inode `inum` by other names only: every node whose index holds it
    /// names it by `path`, or by nothing (its synchronizer brought the inode ahead of its
    /// names, which its `nlinks` counts).
    fn named_by_path_wherever_held(
        &self,
        inum: u64,
        path: &[u8],
    ) -> core::result::Result<bool, (usize, Error)> {
        for (idx, n) in self.nodes.iter().enumerate() {
            if n.store.index_inode(inum).map_err(|e| (idx, e))?.is_some()
                && self.path_inum(idx, path, None)? != Some(inum)
                && n.store.index_is_named(inum).map_err(|e| (idx, e))?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
    /// Every node's layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// One synchronization pass of node `idx` against the others (the driver of HAMMER2-FACTS
    /// §3.7: loops while EAGAIN, syncs deferrals bottom-up). `brk` is polled at every chain
    /// operation; when it returns true the pass stops with `Error::InProgress`.
    pub fn sync_node(&self, idx: usize, brk: &dyn Fn() -> bool) -> Result<()> {
        self.sync_node_with(idx, &crate::thread::Brk::new(brk))
    }

    /// [`Cluster::sync_node`] with a sync thread's [`crate::thread::Brk`], whose break
    /// requests also wake the pass's waits.
    pub(crate) fn sync_node_with(&self, idx: usize, brk: &crate::thread::Brk<'_>) -> Result<()> {
        let node = self.node(idx)?;
        let _one = node.sync_lock.hold(LockMode::Exclusive);
        let view = *node.view.lock();
        let mut stores: heapless::Vec<&Store, MAX_NODES> = heapless::Vec::new();
        for n in &self.nodes {
            stores.push(&n.store).map_err(|_| Error::Invalid)?;
        }
        let peers = sync::Peers {
            stores: &stores,
            roles: &view[..self.nodes.len()],
            nmasters: self.nmasters,
            changes: Some(&self.changes),
            host: self._host,
            faults: Some(&self.faults[..self.nodes.len()]),
            catchup: node.catchup.load(Ordering::SeqCst),
        };
        let mut stats = SyncStats::default();
        // Uncontended: passes of this node are serialized by `sync_lock` above, and the pool is
        // only replaced before threads start and after they stopped. So the pass may sleep and
        // relax while holding it; nobody spins on it meanwhile.
        let pool = node.pool.lock();
        let r = match pool.as_ref() {
            Some(p) => sync::sync_pass_pooled(&peers, p, idx, brk, &mut stats, self.scan_mode()),
            None => Err(Error::Invalid),
        };
        drop(pool);
        stats.passes = 1;
        node.stats.lock().add(&stats);
        r
    }
    /// Choose how every later sync pass scans a differing inode (default: pruned).
    pub fn set_scan_mode(&self, mode: sync::ScanMode) {
        let v = match mode {
            sync::ScanMode::Pruned => 0,
            sync::ScanMode::Original => 1,
        };
        self.scan_mode.store(v, Ordering::SeqCst);
    }
    /// The scan mode sync passes use.
    pub fn scan_mode(&self) -> sync::ScanMode {
        match self.scan_mode.load(Ordering::SeqCst) {
            0 => sync::ScanMode::Pruned,
            _ => sync::ScanMode::Original,
        }
    }
    /// Copy the cluster's current roles into node `idx`'s own view, which its sync passes use
    /// (a sync thread does this at start and when it consumes REMASTER; `sync` before each pass).
    pub fn refresh_view(&self, idx: usize) {
        if let Some(n) = self.nodes.get(idx) {
            *n.view.lock() = *self.roles.lock();
        }
    }
    /// Node `idx`'s synchronizer counters.
    pub fn stats(&self, idx: usize) -> crate::sync::SyncStats {
        self.nodes
            .get(idx)
            .map(|n| *n.stats.lock())
            .unwrap_or_default()
    }
    /// The voters for the PFS root: every node with its current role and root modify_tid.
    fn root_voters(&self) -> heapless::Vec<Voter, MAX_NODES> {
        let roles = *self.roles.lock();
        let mut v = heapless::Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let answer = match n.store.bref(n.store.root()) {
                Ok(b) => NodeAnswer::Holds(b.modify_tid),
                Err(_) => NodeAnswer::Failed,
            };
            // Capacity is MAX_NODES and there are at most that many nodes.
            let _ = v.push(Voter {
                role: roles[i],
                answer,
            });
        }
        v
    }
    /// The voters for the PFS root as node `idx`'s synchronizer sees them: itself as it is, a
    /// node whose reads fail `Failed`, a stalled node `Pending` (its answer is not in yet),
    /// every other node's root modify_tid.
    fn root_voters_from(&self, idx: usize) -> heapless::Vec<Voter, MAX_NODES> {
        let mut v = self.root_voters();
        for (j, voter) in v.iter_mut().enumerate() {
            if j == idx {
                continue;
            }
            let f = &self.faults[j];
            if f.failing() {
                voter.answer = NodeAnswer::Failed;
            } else if f.stall_ns() > 0 {
                voter.answer = NodeAnswer::Pending;
            }
        }
        v
    }
    /// The cluster status words (`quorum::status`) as seen from node `idx`: every node's PFS
    /// root with the current roles and the recorded master count, through the fault hooks
    /// (a failed node is errored, a stalled one not answered yet; a node always sees itself).
    pub fn status(&self, idx: usize) -> quorum::StatusFlags {
        quorum::status(&self.root_voters_from(idx), self.nmasters)
    }
    /// Write a human-readable status of this cluster: nodes, roles, status words, thread flags by
    /// name, counters. Used by every host's `status`.
    pub fn write_status(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let voters = self.root_voters();
        write!(
            out,
            "cluster #{}: {} nodes, layout {}, ",
            self.serial,
            self.len(),
            self.layout.name()
        )?;
        match quorum::check(&voters, self.nmasters) {
            QuorumResult::Focus { node, tid } => write!(out, "focus tid {tid} (node {node}):")?,
            QuorumResult::None(e) => write!(out, "no focus ({e}):")?,
        }
        for w in quorum::status(&voters, self.nmasters).words() {
            write!(out, " {w}")?;
        }
        writeln!(out)?;
        // No quorum possible: the discrepancy a person must resolve.
        if let QuorumResult::None(Error::NoQuorum | Error::Deadlock) =
            quorum::check(&voters, self.nmasters)
        {
            write!(out, "  discrepancy: no quorum among the masters:")?;
            for (idx, v) in voters.iter().enumerate() {
                if let (Role::Master, NodeAnswer::Holds(t)) = (v.role, v.answer) {
                    write!(out, " node {idx} tid {t}")?;
                }
            }
            writeln!(out)?;
        }
        for (idx, n) in self.nodes.iter().enumerate() {
            let st = *n.stats.lock();
            let tid = match voters[idx].answer {
                NodeAnswer::Holds(t) => t,
                _ => 0,
            };
            writeln!(
                out,
                "  node {idx} {} tid {tid}{}: thread {:?} {}: passes {} scanned {} inserted {} \
                 destroyed {} replaced {} deferred {}",
                voters[idx].role.name(),
                if self.in_sync(idx) { " in-sync" } else { "" },
                self.thread_state(idx),
                crate::thread::flag_names(self.thread_flags(idx)),
                st.passes,
                st.scanned,
                st.inserted,
                st.destroyed,
                st.replaced,
                st.deferred
            )?;
            write!(out, "    seen from node {idx}:")?;
            for w in self.status(idx).words() {
                write!(out, " {w}")?;
            }
            let f = &self.faults[idx];
            if f.failing() {
                write!(out, " [reads fail]")?;
            }
            if f.stall_ns() > 0 {
                write!(out, " [reads stalled {} ms]", f.stall_ns() / 1_000_000)?;
            }
            if n.catchup.load(Ordering::SeqCst) {
                write!(out, " [catch-up]")?;
            }
            writeln!(out)?;
        }
        Ok(())
    }
    /// Quorum over the PFS roots of all nodes.
    pub fn focus_root(&self) -> QuorumResult {
        quorum::check(&self.root_voters(), self.nmasters)
    }
    /// Whether node `idx` agrees with the quorum focus (its PFS root's modify_tid equals it).
    pub fn in_sync(&self, idx: usize) -> bool {
        let Some(n) = self.nodes.get(idx) else {
            return false;
        };
        match (self.focus_root(), n.store.bref(n.store.root())) {
            (QuorumResult::Focus { tid, .. }, Ok(b)) => b.modify_tid == tid,
            _ => false,
        }
    }
    /// Compare node `b`'s tree with node `a`'s; write the first differences to `out`.
    pub fn compare(&self, a: usize, b: usize, out: &mut dyn fmt::Write) -> Result<bool> {
        compare::compare(self.store(a)?, self.store(b)?, b, out)
    }
    /// A digest of node `idx`'s whole tree ([`compare::digest`]): equal before and after a
    /// step when the step changed nothing there.
    pub fn digest(&self, idx: usize) -> Result<u64> {
        compare::digest(self.store(idx)?)
    }
    /// Stat the inode at `path` on node `idx`.
    pub fn stat(&self, idx: usize, path: &[u8]) -> Result<InodeStat> {
        let s = self.store(idx)?;
        let id = s.resolve(path)?;
        let m = s.meta(id)?;
        Ok(InodeStat {
            objtype: m.objtype,
            mode: m.mode,
            size: m.size,
            modify_tid: s.bref(id)?.modify_tid,
        })
    }
    /// Read a whole regular file at `path` on node `idx`.
    pub fn read_file(&self, idx: usize, path: &[u8]) -> Result<Vec<u8>> {
        let s = self.store(idx)?;
        s.read_file(s.resolve(path)?)
    }
    /// Compare the regular file at `path` on node `idx` with `want_len` expected bytes that
    /// `want` produces in order, block by block (see [`compare::compare_file`]).
    pub fn compare_file(
        &self,
        idx: usize,
        path: &[u8],
        want_len: u64,
        want: &mut dyn FnMut(&mut [u8]),
    ) -> Result<FileCmp> {
        let s = self.store(idx)?;
        compare::compare_file(s, s.resolve(path)?, want_len, want)
    }
    /// A copy of node `idx`'s whole tree, for `expect unchanged`.
    pub fn snapshot(&self, idx: usize) -> Result<Snapshot> {
        Ok(Snapshot {
            records: compare::flatten(self.store(idx)?)?,
        })
    }
}

/// A node's tree as it was ([`Cluster::snapshot`]).
pub struct Snapshot {
    records: Vec<Record>,
}

impl Snapshot {
    /// Whether node `idx` of `cluster` still holds exactly this tree; differences go to `out`.
    pub fn matches(&self, cluster: &Cluster, idx: usize, out: &mut dyn fmt::Write) -> Result<bool> {
        compare::compare_snapshot(&self.records, cluster.store(idx)?, idx, out)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Unregister first, under the registry lock `write_all_status` holds while it reads.
        let me = self as *const Cluster as usize;
        {
            let mut head = REGISTRY.lock();
            let next = self.reg_next.load(Ordering::Relaxed);
            if *head == me {
                *head = next;
            } else {
                let mut p = *head;
                while p != 0 {
                    // SAFETY: every address in the list is a live pinned cluster: each unlinks
                    // itself here, under this lock, before its memory is released.
                    let c = unsafe { &*(p as *const Cluster) };
                    let n = c.reg_next.load(Ordering::Relaxed);
                    if n == me {
                        c.reg_next.store(next, Ordering::Relaxed);
                        break;
                    }
                    p = n;
                }
            }
        }
        // The threads read the stores: they go before anything else is released.
        self.threads.stop_all();
        // Then the scan workers (joined by their pools' drop).
        for n in &self.nodes {
            drop(n.pool.lock().take());
        }
    }
}

/// Write the status of every live cluster (kernel `status` file). Clusters register themselves
/// in [`Cluster::new`] and unregister when dropped.
pub fn write_all_status(out: &mut dyn fmt::Write) -> fmt::Result {
    let head = REGISTRY.lock();
    if *head == 0 {
        writeln!(out, "no clusters")?;
    }
    let mut p = *head;
    while p != 0 {
        // SAFETY: `p` is a pinned cluster registered by `Cluster::new`; its `Drop` unlinks it
        // under this same lock before any of its memory is released, so while we hold the lock
        // it is alive and does not move. Only shared access is made.
        let c = unsafe { &*(p as *const Cluster) };
        c.write_status(out)?;
        p = c.reg_next.load(Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::testhost::host;
    use alloc::string::String;

    #[test]
    fn apply_stat_read_compare_snapshot_status() {
        let c = Cluster::new(host(), &[Role::Master, Role::Master, Role::Slave]).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.focus_root(), QuorumResult::Focus { node: 0, tid: 0 });
        assert_eq!(c.apply(NodeSet(0b011), FrontendOp::Mkdir(b"/d")), Ok(1));
        assert_eq!(
            c.apply(NodeSet(0b111), FrontendOp::Write(b"/d/f", b"x")),
            Err((2, Error::NotFound))
        );
        assert_eq!(
            c.apply(NodeSet(0b1000), FrontendOp::Mkdir(b"/e")),
            Err((3, Error::Invalid))
        );
        let st = c.stat(1, b"/d/f").unwrap();
        assert_eq!(
            (st.objtype, st.size, st.mode, st.modify_tid),
            (media::OBJTYPE_REGFILE, 1, 0o644, 2)
        );
        assert_eq!(c.read_file(0, b"/d/f").unwrap(), b"x");
        assert_eq!(c.stat(2, b"/d"), Err(Error::NotFound));
        assert_eq!(c.focus_root(), QuorumResult::Focus { node: 0, tid: 2 });
        assert!(c.in_sync(0) && !c.in_sync(2));
        let mut out = String::new();
        assert!(c.compare(0, 1, &mut out).unwrap(), "{out}");
        assert!(!c.compare(0, 2, &mut out).unwrap());
        // Today's layout names an index inode by a path that names it.
        assert!(out.contains("node 2: /d: missing"), "{out}");

        let snap = c.snapshot(2).unwrap();
        let mut out = String::new();
        assert!(snap.matches(&c, 2, &mut out).unwrap());
        c.apply(NodeSet(0b100), FrontendOp::Mkdir(b"/s")).unwrap();
        assert!(!snap.matches(&c, 2, &mut out).unwrap());
        assert!(out.contains("node 2: /s: unexpected"), "{out}");

        c.set_role(2, Role::Master);
        assert_eq!(c.role(2), Role::Master);
        let mut out = String::new();
        c.write_status(&mut out).unwrap();
        assert!(
            out.contains("node 2 master tid 3: thread NotStarted"),
            "{out}"
        );
        assert!(out.contains("node 0 master tid 2 in-sync"), "{out}");
        assert!(out.contains("quorum/rw"), "{out}");
        assert!(c.status(0).has_word("quorum/rw"));
        assert!(!c.status(0).has_word("masters-all-good"));
        let mut all = String::new();
        write_all_status(&mut all).unwrap();
        let name = alloc::format!("cluster #{}: 3 nodes, layout index,", c.serial);
        assert!(all.contains(&name), "{all}");
        let addr = alloc::format!("{:p}", &*c);
        assert!(!all.contains(&addr[2..]), "no cluster address in {all}");
        drop(c);
        let mut all = String::new();
        write_all_status(&mut all).unwrap();
        assert!(!all.contains(&name), "a dropped cluster unregisters");
    }

    #[test]
    fn a_new_inode_reuses_a_number_only_for_the_same_kind_of_file() {
        let c = Cluster::new(host(), &[Role::Master, Role::Master]).unwrap();
        let (all, one) = (NodeSet(0b11), NodeSet(0b10));
        c.apply(all, FrontendOp::Write(b"/a", b"f")).unwrap();
        c.apply(all, FrontendOp::Link(b"/a", b"/b")).unwrap();
        c.apply(one, FrontendOp::Rm(b"/a")).unwrap();
        // Node 0's /a is a file (inode 1024, also node 1's /b): a directory /a on node 1 is a
        // new inode, not a clash with /b's.
        c.apply(one, FrontendOp::Mkdir(b"/a")).unwrap();
        let inum = |i: usize, p: &[u8]| {
            let s = &c.nodes[i].store;
            s.meta(s.resolve(p).unwrap()).unwrap().inum
        };
        assert_eq!(c.stat(1, b"/a").unwrap().objtype, media::OBJTYPE_DIRECTORY);
        assert_eq!(
            (inum(0, b"/a"), inum(1, b"/b"), inum(1, b"/a")),
            (1024, 1024, 1025)
        );
        // A file of that name again is not node 0's /a: node 1 still holds that inode as /b,
        // another file there now. Reusing its number would name it /a too with `nlinks` 1.
        c.apply(one, FrontendOp::Rm(b"/a")).unwrap();
        c.apply(one, FrontendOp::Write(b"/a", b"g")).unwrap();
        assert_eq!((inum(1, b"/a"), inum(1, b"/b")), (1026, 1024));
        let nlinks = |p: &[u8]| {
            let s = &c.nodes[1].store;
            s.meta(s.resolve(p).unwrap()).unwrap().nlinks
        };
        assert_eq!((nlinks(b"/a"), nlinks(b"/b")), (1, 1));
        assert_eq!(c.read_file(1, b"/b").unwrap(), b"f");
        // Each name's inode outlives the other's removal.
        c.apply(one, FrontendOp::Rm(b"/b")).unwrap();
        assert_eq!(c.read_file(1, b"/a").unwrap(), b"g");
        // A node that missed the write still gets the same new inode, number and all.
        c.apply(NodeSet(0b01), FrontendOp::Rm(b"/a")).unwrap();
        c.apply(all, FrontendOp::Write(b"/a", b"h")).unwrap();
        assert_eq!((inum(0, b"/a"), inum(1, b"/a")), (1026, 1026));
    }

    /// A node whose synchronizer brought an inode ahead of every name of it (mid-pass): a
    /// create of a path that names it elsewhere still gets its number, and names it there.
    #[test]
    fn a_create_names_an_inode_a_node_holds_unnamed() {
        let c = Cluster::new(host(), &[Role::Master, Role::Master]).unwrap();
        c.apply(NodeSet(0b01), FrontendOp::Write(b"/b", b"x"))
            .unwrap();
        let s = &c.nodes[1].store;
        {
            let root = s.lock_root(LockMode::Exclusive);
            let mut ip = try_box(media::InodeData::default()).unwrap();
            ip.meta.objtype = media::OBJTYPE_REGFILE;
            ip.meta.inum = 1024;
            ip.meta.nlinks = 1;
            let mut bref = media::Blockref::new(media::BREF_TYPE_INODE, 1024, 0);
            bref.set_size_radix(media::INODE_RADIX);
            s.insert(&root, bref, crate::store::Body::Inode(ip))
                .unwrap();
        }
        c.apply(NodeSet(0b10), FrontendOp::Write(b"/b", b"y"))
            .unwrap();
        let b = s.resolve(b"/b").unwrap();
        assert_eq!(
            (s.meta(b).unwrap().inum, s.meta(b).unwrap().nlinks),
            (1024, 1)
        );
        assert_eq!(s.read_file(b).unwrap(), b"y");
    }

    /// The hardlink case: `/l` names `/b`'s inode, `/b` is removed on two nodes and written
    /// again there while the third still has the old `/b`. The new `/b` is a new inode; the
    /// old one stays `/l`'s alone, and removing `/l` leaves `/b` whole.
    #[test]
    fn a_file_written_again_beside_its_old_hardlink_is_a_new_inode() {
        let c = Cluster::new(host(), &[Role::Master, Role::Master, Role::Master]).unwrap();
        let (all, two) = (NodeSet(0b111), NodeSet(0b011));
        c.apply(all, FrontendOp::Write(b"/b", b"old")).unwrap();
        c.apply(all, FrontendOp::Link(b"/b", b"/l")).unwrap();
        c.apply(two, FrontendOp::Rm(b"/b")).unwrap();
        c.apply(two, FrontendOp::Write(b"/b", b"new")).unwrap();
        for i in 0..2 {
            let s = &c.nodes[i].store;
            let (b, l) = (s.resolve(b"/b").unwrap(), s.resolve(b"/l").unwrap());
            assert_ne!(b, l, "node {i}: /b aliases /l");
            assert_eq!(s.meta(l).unwrap().nlinks, 1, "node {i}");
            assert_eq!(s.read_file(l).unwrap(), b"old", "node {i}");
        }
        c.apply(two, FrontendOp::Rm(b"/l")).unwrap();
        for i in 0..2 {
            assert_eq!(c.read_file(i, b"/b").unwrap(), b"new", "node {i}");
        }
    }

    #[test]
    fn status_lists_the_discrepancy_and_each_nodes_view() {
        let c = Cluster::new(host(), &[Role::Master, Role::Master, Role::Slave]).unwrap();
        c.apply(NodeSet(0b111), FrontendOp::Mkdir(b"/d")).unwrap();
        let mut out = String::new();
        c.write_status(&mut out).unwrap();
        assert!(!out.contains("discrepancy"), "{out}");
        c.set_fail(1, true);
        c.set_catchup(2, true);
        let mut out = String::new();
        c.write_status(&mut out).unwrap();
        assert!(out.contains("node 1 master tid 1"), "{out}");
        assert!(
            out.contains("seen from node 1: masters-all-good slaves-all-good quorum/rw")
                && out.contains("[reads fail]"),
            "{out}"
        );
        assert!(
            out.contains("seen from node 0: out-of-sync-masters out-of-sync-slaves"),
            "{out}"
        );
        assert!(out.contains("[catch-up]"), "{out}");
        c.set_fail(1, false);
        c.apply(NodeSet(0b001), FrontendOp::Mkdir(b"/x")).unwrap();
        c.apply(NodeSet(0b010), FrontendOp::Mkdir(b"/y")).unwrap();
        let mut out = String::new();
        c.write_status(&mut out).unwrap();
        assert!(
            out.contains("discrepancy: no quorum among the masters: node 0 tid 2 node 1 tid 3"),
            "{out}"
        );
    }
}
