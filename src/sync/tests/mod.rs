//! Synchronizer tests: convergence of whole clusters by repeated `sync_node` (no threads), one
//! regression test per fixed original bug, the pruned scan against the original, and the scan
//! pool. Shared helpers live here; each file is one of those sections.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;
use core::pin::Pin;
use std::boxed::Box;
use std::sync::atomic::{AtomicBool, Ordering as AO};

use super::collect::Follow;
use super::slaves::{destroy, insert, sync_slaves, FocusCopy};
use super::*;
use crate::cluster::{Cluster, FrontendOp};
use crate::host::testhost::host;
use crate::host::LockMode;
use crate::media;
use crate::media::SET_COUNT;
use crate::quorum::QuorumResult;
use crate::role::{NodeSet, Role};
use crate::store::RUN;

const M: Role = Role::Master;
const S: Role = Role::Slave;

fn cluster(roles: &[Role]) -> Pin<Box<Cluster>> {
    Cluster::new(host(), roles).unwrap()
}

/// A cluster in the seed's layout, for tests that need its shape: a directory's children
/// (and so the synchronizer's deferrals) keyed by name hash under the directory itself.
fn seed_cluster(roles: &[Role]) -> Pin<Box<Cluster>> {
    Cluster::with_layout(host(), roles, crate::store::Layout::Seed).unwrap()
}

fn set(ix: &[usize]) -> NodeSet {
    NodeSet(ix.iter().fold(0u8, |a, &i| a | (1 << i)))
}

fn all(c: &Cluster) -> NodeSet {
    NodeSet(((1u16 << c.len()) - 1) as u8)
}

fn mkdir(c: &Cluster, s: NodeSet, p: &str) {
    c.apply(s, FrontendOp::Mkdir(p.as_bytes())).unwrap();
}

fn write(c: &Cluster, s: NodeSet, p: &str, d: &[u8]) {
    c.apply(s, FrontendOp::Write(p.as_bytes(), d)).unwrap();
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn root_tid(c: &Cluster, i: usize) -> u64 {
    c.stat(i, b"/").unwrap().modify_tid
}

/// Sync every node until no PFS root changes (at most 8 rounds); the number of rounds run.
fn sync_all(c: &Cluster) -> usize {
    for round in 1..=8 {
        let before: Vec<u64> = (0..c.len()).map(|i| root_tid(c, i)).collect();
        for i in 0..c.len() {
            c.sync_node(i, &|| false).unwrap();
        }
        let after: Vec<u64> = (0..c.len()).map(|i| root_tid(c, i)).collect();
        if before == after {
            return round;
        }
    }
    panic!("cluster did not settle");
}

fn assert_same(c: &Cluster, a: usize, b: usize) {
    let mut s = String::new();
    assert!(
        c.compare(a, b, &mut s).unwrap(),
        "node {b} differs from node {a}:\n{s}"
    );
}

/// The peers of a pass on the test host: no change in flight, no faults, no catch-up.
fn peers<'a>(stores: &'a [&'a Store], roles: &'a [Role], nmasters: u8) -> Peers<'a> {
    Peers {
        stores,
        roles,
        nmasters,
        changes: None,
        host: host(),
        faults: None,
        catchup: false,
    }
}

/// The context of a single helper's test on node `idx`: never interrupted, default scan mode,
/// no scan workers.
fn ctx<'a>(
    peers: &'a Peers<'a>,
    idx: usize,
    brk: &'a crate::thread::Brk<'a>,
    stats: &'a mut SyncStats,
) -> Ctx<'a> {
    Ctx {
        peers,
        idx,
        brk,
        mode: ScanMode::default(),
        stats,
        pool: None,
    }
}

fn focus_tid(c: &Cluster) -> u64 {
    match c.focus_root() {
        QuorumResult::Focus { tid, .. } => tid,
        QuorumResult::None(e) => panic!("no focus: {e}"),
    }
}

mod bugs;
mod collector;
mod convergence;
mod layout_index;
mod pruned;
mod scan_pool;
