//! Measurements on a cluster of 3 masters and 1 slave: build, initial sync, resync after k
//! changed leaves, sync memory, and the sync thread's freeze and stop latency.

use std::pin::Pin;
use std::time::{Duration, Instant};

use hammer2_synchro::cluster::{Cluster, FrontendOp};
use hammer2_synchro::role::{NodeSet, Role};
use hammer2_synchro::store::Layout;
use hammer2_synchro::thread::Request;
use hammer2_synchro::userland;

use crate::alloc_count::peak_during;
use crate::shape::{content, Shape, Tree};
use crate::stats::ns;
use crate::usage::Usage;

/// The node roles: three voting masters and the slave whose sync is measured.
pub const ROLES: [Role; 4] = [Role::Master, Role::Master, Role::Master, Role::Slave];
/// The masters, where frontend changes are applied.
pub const MASTERS: NodeSet = NodeSet(0b0111);
/// The measured slave.
pub const SLAVE: usize = 3;
const SLAVE_ONLY: NodeSet = NodeSet(1 << SLAVE);
/// The layout every measured cluster uses: today's (every inode in the PFS root's index,
/// DIRENT leaves in directories).
pub const LAYOUT: Layout = Layout::Index;

/// How the synchronizer scans a differing inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// Visit only indirect blocks and runs of children whose summary differs.
    Pruned,
    /// Visit every chain of each differing inode, as the original C does.
    Original,
}

impl ScanMode {
    /// Every mode, in report order.
    pub const ALL: [ScanMode; 2] = [ScanMode::Pruned, ScanMode::Original];

    /// The report name.
    pub fn name(self) -> &'static str {
        match self {
            ScanMode::Pruned => "pruned",
            ScanMode::Original => "original",
        }
    }

    /// Put the cluster's synchronizers in this mode.
    pub fn select(self, cluster: &Cluster) -> Result<(), &'static str> {
        cluster.set_scan_mode(match self {
            ScanMode::Original => hammer2_synchro::sync::ScanMode::Original,
            ScanMode::Pruned => hammer2_synchro::sync::ScanMode::Pruned,
        });
        Ok(())
    }
}

/// Knobs of one cluster measurement.
#[derive(Debug, Clone)]
pub struct ClusterCfg {
    /// Changed-leaf counts to resync.
    pub ks: Vec<usize>,
    /// Resyncs per k and mode (the modes alternating, each run a fresh divergence of the same
    /// k leaves); the median time is reported.
    pub resync_runs: usize,
    /// Freeze latency samples to collect.
    pub freeze_samples: usize,
    /// Give up collecting freeze samples after this long.
    pub freeze_budget: Duration,
    /// Stop latency samples to collect.
    pub stop_samples: usize,
}

/// The empty slave's first sync of the whole tree.
#[derive(Debug, Clone)]
pub struct InitialSync {
    /// `sync_node` wall time.
    pub time: Duration,
    /// Chains it scanned.
    pub scanned: u64,
    /// Peak live bytes during it, above the bytes before it.
    pub peak: usize,
    /// Bytes it left allocated (the slave's copy of the tree).
    pub kept: usize,
    /// Page faults and CPU time the process took during it.
    pub usage: Option<Usage>,
}

/// Building the tree and the slave's first sync.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// Chains of the tree (directories + files).
    pub chains: usize,
    /// Nodes the tree was applied to: the 3 masters, or all 4 when the first sync is skipped.
    pub nodes: usize,
    /// Applying the whole tree to those nodes.
    pub build: Duration,
    /// The slave's first sync, or why it was not measured.
    pub initial: Result<InitialSync, String>,
}

/// One resync of the slave after `k` leaves changed on the masters.
#[derive(Debug, Clone)]
pub struct ResyncResult {
    /// Changed leaves.
    pub k: usize,
    /// Scan mode.
    pub mode: ScanMode,
    /// `sync_node` wall time (the median of the runs).
    pub time: Duration,
    /// Chains scanned (`SyncStats::scanned` delta, the median run's).
    pub scanned: u64,
    /// Peak live bytes during `sync_node`, above the bytes before it (the highest of the runs).
    pub peak: usize,
}

/// Everything measured on one tree.
#[derive(Debug, Clone)]
pub struct ClusterResult {
    /// Build and first sync.
    pub build: BuildResult,
    /// Resyncs of the modes the core implements.
    pub resyncs: Vec<ResyncResult>,
    /// Freeze acknowledgement latencies (ns) while the slave's thread syncs.
    pub freeze_ns: Vec<u64>,
    /// Stop latencies (ns) right after a pass.
    pub stop_ns: Vec<u64>,
    /// Live bytes of the whole cluster (4 copies of the tree) after the first sync.
    pub cluster_bytes: usize,
    /// Wall time of the size-dependent work: build, syncs and the final compare (the latency
    /// phases have fixed budgets).
    pub work_time: Duration,
}

type Res<T> = Result<T, String>;

fn apply(c: &Cluster, set: NodeSet, op: FrontendOp<'_>) -> Res<()> {
    c.apply(set, op)
        .map(|_| ())
        .map_err(|(node, e)| format!("apply {op:?} failed on node {node}: {e}"))
}

/// A cluster with the bench roles in today's HAMMER2 layout ([`LAYOUT`]), every node's role
/// view read.
pub fn new_cluster() -> Res<Pin<Box<Cluster>>> {
    let c = Cluster::with_layout(userland::host(), &ROLES, LAYOUT)
        .map_err(|e| format!("Cluster::with_layout: {e}"))?;
    for i in 0..ROLES.len() {
        c.refresh_view(i);
    }
    Ok(c)
}

/// A timed sync: (time, chains scanned, peak bytes above before).
type Timed = (Duration, u64, usize);

/// One timed `sync_node` of the slave: (time, chains scanned, peak bytes above before).
pub fn timed_sync(c: &Cluster) -> Res<Timed> {
    let before = c.stats(SLAVE).scanned;
    let (peak, (dt, r)) = peak_during(|| {
        let t = Instant::now();
        let r = c.sync_node(SLAVE, &|| false);
        (t.elapsed(), r)
    });
    r.map_err(|e| format!("sync_node: {e}"))?;
    if !c.in_sync(SLAVE) {
        return Err("the slave is not in sync after sync_node".into());
    }
    Ok((dt, c.stats(SLAVE).scanned - before, peak))
}

fn build(c: &Cluster, tree: &Tree, set: NodeSet) -> Res<Duration> {
    let t = Instant::now();
    for d in &tree.dirs {
        apply(c, set, FrontendOp::Mkdir(d.as_bytes()))?;
    }
    for (i, f) in tree.files.iter().enumerate() {
        apply(c, set, FrontendOp::Write(f.as_bytes(), &content(i, 0)))?;
    }
    Ok(t.elapsed())
}

/// Wait until `cond` holds, polling; an error after `limit`.
fn wait_until(limit: Duration, what: &str, cond: impl Fn() -> bool) -> Res<()> {
    let t = Instant::now();
    while !cond() {
        if t.elapsed() > limit {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    Ok(())
}

fn thread_err(op: &str) -> impl Fn(hammer2_synchro::Error) -> String + '_ {
    move |e| format!("thread_{op}: {e}")
}

/// Stop latency: start the slave's thread, wait for its first pass to end, time its stop request.
fn stop_latency(c: Pin<&Cluster>, samples: usize) -> Res<Vec<u64>> {
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let p0 = c.stats(SLAVE).passes;
        c.thread_start(SLAVE).map_err(thread_err("start"))?;
        wait_until(Duration::from_secs(120), "the first pass", || {
            c.stats(SLAVE).passes > p0
        })?;
        let t = Instant::now();
        c.thread_request(SLAVE, Request::Stop)
            .map_err(thread_err("stop"))?;
        out.push(ns(t.elapsed()));
    }
    Ok(out)
}

/// Freeze latency while the slave's thread runs a long sync, which this loop freezes and
/// unfreezes. The sync is made long, while the thread is frozen, by:
/// - wide: a chmod of the top directory on the masters, so every pass of the original scan
///   compares every entry of that directory (a whole-tree scan);
/// - deep: a frontend `rm` of the top directory on the slave alone, so the thread rebuilds the
///   whole tree from the masters.
///
/// (Removing the wide directory instead would measure the store's delete of a huge
/// directory, not the sync.) A sample counts only if the pass the freeze interrupted scanned
/// chains and the slave was still out of sync when frozen.
fn freeze_latency(c: Pin<&Cluster>, shape: Shape, cfg: &ClusterCfg) -> Res<Vec<u64>> {
    let mut out = Vec::with_capacity(cfg.freeze_samples);
    c.thread_start(SLAVE).map_err(thread_err("start"))?;
    let top = shape.top().as_bytes();
    let flips = core::cell::Cell::new(0u32);
    let diverge = || -> Res<u64> {
        c.thread_request(SLAVE, Request::Freeze)
            .map_err(thread_err("freeze"))?;
        match shape {
            Shape::Wide => {
                flips.set(flips.get() + 1);
                let mode = if flips.get() % 2 == 1 { 0o750 } else { 0o755 };
                apply(&c, MASTERS, FrontendOp::Chmod(top, mode))?;
            }
            Shape::Deep => apply(&c, SLAVE_ONLY, FrontendOp::Rm(top))?,
        }
        let scanned = c.stats(SLAVE).scanned;
        c.thread_request(SLAVE, Request::Unfreeze)
            .map_err(thread_err("unfreeze"))?;
        Ok(scanned)
    };
    let result = (|| -> Res<()> {
        let mut mark = diverge()?;
        // The pause between an unfreeze and the next freeze: halved whenever the whole resync
        // finished inside it (small trees), so freezes land inside passes.
        let mut gap = Duration::from_micros(200);
        let t0 = Instant::now();
        while out.len() < cfg.freeze_samples && t0.elapsed() < cfg.freeze_budget {
            std::thread::sleep(gap);
            if c.in_sync(SLAVE) {
                gap = (gap / 2).max(Duration::from_micros(5));
                mark = diverge()?;
                continue;
            }
            let t = Instant::now();
            c.thread_request(SLAVE, Request::Freeze)
                .map_err(thread_err("freeze"))?;
            let dt = ns(t.elapsed());
            // Counters are added when a pass ends, here the pass the freeze interrupted.
            let scanned = c.stats(SLAVE).scanned;
            if scanned > mark && !c.in_sync(SLAVE) {
                out.push(dt);
            }
            mark = scanned;
            c.thread_request(SLAVE, Request::Unfreeze)
                .map_err(thread_err("unfreeze"))?;
        }
        Ok(())
    })();
    let stopped = c
        .thread_request(SLAVE, Request::Stop)
        .map_err(thread_err("stop"));
    result?;
    stopped?;
    Ok(out)
}

/// The empty slave's first sync of `tree`, built on the masters of a fresh cluster: its time,
/// the chains it scanned, and the page faults and CPU time it took.
pub fn first_sync(tree: &Tree) -> Res<(Duration, u64, Option<Usage>)> {
    let c = new_cluster()?;
    build(&c, tree, MASTERS)?;
    let before = Usage::now();
    let (time, scanned, _) = timed_sync(&c)?;
    Ok((time, scanned, Usage::since(before)))
}

/// Build `tree` on a fresh cluster and measure everything of [`ClusterResult`].
///
/// With `initial` set the tree goes to the masters and the empty slave's first sync is
/// measured; otherwise (`Err(why)`) the tree is applied to all four nodes as the same
/// transactions, so the slave starts in sync, and `why` is reported instead.
/// `on_mode_missing` is told once per mode the core lacks.
pub fn measure(
    tree: &Tree,
    cfg: &ClusterCfg,
    initial: Result<(), String>,
    on_mode_missing: &mut dyn FnMut(ScanMode, &'static str),
) -> Res<ClusterResult> {
    let t_work = Instant::now();
    let live_start = crate::alloc_count::live();
    let c = new_cluster()?;
    let all = NodeSet(MASTERS.0 | SLAVE_ONLY.0);
    let (set, nodes) = if initial.is_ok() {
        (MASTERS, 3)
    } else {
        (all, 4)
    };
    let build_time = build(&c, tree, set)?;
    let initial = match initial {
        Ok(()) => {
            let live0 = crate::alloc_count::live();
            let before = Usage::now();
            let (time, scanned, peak) = timed_sync(&c)?;
            let usage = Usage::since(before);
            // A root TID equal to the focus's is not proof the tree came across: compare the
            // whole slave with a master (skipped above 400k chains, 10^5 files, where it would
            // cost more memory than the trees themselves).
            if tree.chains() <= 400_000 {
                let mut why = String::new();
                if !c
                    .compare(0, SLAVE, &mut why)
                    .map_err(|e| format!("compare: {e}"))?
                {
                    return Err(format!(
                        "first sync: the slave differs from a master:\n{why}"
                    ));
                }
            }
            Ok(InitialSync {
                time,
                scanned,
                peak,
                kept: crate::alloc_count::live().saturating_sub(live0),
                usage,
            })
        }
        Err(why) => {
            if !c.in_sync(SLAVE) {
                return Err("the slave is not in sync after the same transactions".into());
            }
            Err(why)
        }
    };
    let cluster_bytes = crate::alloc_count::live().saturating_sub(live_start);
    let build = BuildResult {
        chains: tree.chains(),
        nodes,
        build: build_time,
        initial,
    };

    let mut resyncs = Vec::new();
    let mut gen = 0u32;
    for &k in &cfg.ks {
        let idx = tree.spread(k);
        // Per mode: (time, scanned, peak) of each run.
        let mut runs: Vec<(ScanMode, Vec<Timed>)> = Vec::new();
        for mode in ScanMode::ALL {
            match mode.select(&c) {
                Ok(()) => runs.push((mode, Vec::new())),
                Err(why) => on_mode_missing(mode, why),
            }
        }
        let modes = runs.len();
        for run in 0..modes * cfg.resync_runs.max(1) {
            let (mode, got) = &mut runs[run % modes];
            mode.select(&c)
                .map_err(|why| format!("{}: {why}", mode.name()))?;
            gen += 1;
            for &i in &idx {
                apply(
                    &c,
                    MASTERS,
                    FrontendOp::Write(tree.files[i].as_bytes(), &content(i, gen)),
                )?;
            }
            let timed = timed_sync(&c)?;
            // Every changed leaf came across (outside the timed sync).
            for &i in &idx {
                let got = c
                    .read_file(SLAVE, tree.files[i].as_bytes())
                    .map_err(|e| format!("read_file: {e}"))?;
                if got != content(i, gen) {
                    return Err(format!(
                        "{} ({}): the slave did not get the change",
                        tree.files[i],
                        mode.name()
                    ));
                }
            }
            got.push(timed);
        }
        for (mode, mut got) in runs {
            got.sort_by_key(|r| r.0);
            let (Some(first), Some(last)) = (got.first(), got.last()) else {
                continue;
            };
            let (time, scanned, _) = got[got.len() / 2];
            println!(
                "bench: {} N={} k={} {} resync: median {:.3} ms of {} runs ({:.3} .. {:.3} ms)",
                tree.shape.name(),
                tree.files.len(),
                idx.len(),
                mode.name(),
                time.as_secs_f64() * 1e3,
                got.len(),
                first.0.as_secs_f64() * 1e3,
                last.0.as_secs_f64() * 1e3,
            );
            resyncs.push(ResyncResult {
                k: idx.len(),
                mode,
                time,
                scanned,
                peak: got.iter().map(|r| r.2).max().unwrap_or(0),
            });
        }
    }
    let mut diff = String::new();
    if !c
        .compare(0, SLAVE, &mut diff)
        .map_err(|e| format!("compare: {e}"))?
    {
        return Err(format!("the slave differs from master 0: {diff}"));
    }
    let work_time = t_work.elapsed();

    let stop_ns = stop_latency(c.as_ref(), cfg.stop_samples)?;
    let freeze_ns = freeze_latency(c.as_ref(), tree.shape, cfg)?;
    Ok(ClusterResult {
        build,
        resyncs,
        freeze_ns,
        stop_ns,
        cluster_bytes,
        work_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_chains_are_what_the_layout_stores() {
        for shape in Shape::ALL {
            let tree = Tree::new(shape, 300);
            let c = new_cluster().unwrap();
            let empty = c.store(0).unwrap().chain_count();
            build(&c, &tree, MASTERS).unwrap();
            let added = c.store(0).unwrap().chain_count() - empty;
            assert_eq!(added, tree.chains(), "{}", shape.name());
        }
    }
}
