//! Everything one bench run measured, and the targets computed from it.

use std::time::Duration;

use crate::bandwidth::Bandwidth;
use crate::cluster_bench::{ClusterResult, ScanMode};
use crate::kernel::{self, KernelResults};
use crate::machine::Machine;
use crate::memory::Memory;
use crate::shape::Shape;
use crate::stats::percentile;
use crate::target::Target;
use crate::volume_bench::Volumes;

/// Prefix of the reason of a measurement left out on purpose (size or time limits), as
/// opposed to one that failed.
pub const SKIPPED: &str = "skipped: ";

/// Whether a "not measured" reason is a deliberate skip rather than a failure.
pub fn is_skip(why: &str) -> bool {
    why.starts_with(SKIPPED)
}

/// The rsync side of one tree.
#[derive(Debug, Clone)]
pub struct RsyncResult {
    /// First copy into the empty destination.
    pub initial: Duration,
    /// (changed files, time) per resync.
    pub resyncs: Vec<(usize, Duration)>,
}

/// One tree: its shape and size, and what could be measured on it.
#[derive(Debug, Clone)]
pub struct Row {
    /// Layout.
    pub shape: Shape,
    /// Files of the tree.
    pub files: usize,
    /// Chains of the tree.
    pub chains: usize,
    /// The cluster side, or why it is missing.
    pub cluster: Result<ClusterResult, String>,
    /// The rsync side, or why it is missing.
    pub rsync: Result<RsyncResult, String>,
}

impl Row {
    /// The resync time of `mode` at `k` changed leaves, if measured.
    pub fn resync(&self, mode: ScanMode, k: usize) -> Option<Duration> {
        let c = self.cluster.as_ref().ok()?;
        c.resyncs
            .iter()
            .find(|r| r.mode == mode && r.k == k)
            .map(|r| r.time)
    }
    /// The rsync time at `k` changed files, if measured.
    pub fn rsync_at(&self, k: usize) -> Option<Duration> {
        let r = self.rsync.as_ref().ok()?;
        r.resyncs.iter().find(|(kk, _)| *kk == k).map(|(_, t)| *t)
    }
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Results {
    /// Where it ran.
    pub machine: Machine,
    /// `--quick` sizes.
    pub quick: bool,
    /// The command line that produced this.
    pub command: String,
    /// UTC date and time of the run.
    pub date: String,
    /// rsync's version line, or why rsync is missing.
    pub rsync: Result<String, String>,
    /// The tmpfs directory used.
    pub tmpfs: Result<String, String>,
    /// Every tree, by size then shape.
    pub rows: Vec<Row>,
    /// Scan modes the core does not implement, with the reason.
    pub missing_modes: Vec<(ScanMode, String)>,
    /// The bandwidth measurement.
    pub bandwidth: Result<Bandwidth, String>,
    /// Sizes that were not attempted, with the reason.
    pub skipped: Vec<String>,
    /// Wall time of the whole run.
    pub total: Duration,
    /// Load averages when the run ended.
    pub load_end: String,
    /// What `make bench-kernel` reported, or why there is nothing.
    pub kernel: Result<KernelResults, String>,
    /// The store's memory per chain in userland (`--memory`'s measurement).
    pub memory: Result<Memory, String>,
    /// Nodes on volumes (image files on tmpfs), or why they were not measured.
    pub volumes: Result<Volumes, String>,
}

/// The k at which the speed targets are defined.
pub const TARGET_K: usize = 10;
/// The N (files) at which the speed targets are defined.
pub const TARGET_N: usize = 1_000_000;
/// Freeze acknowledgement p99 goal.
pub const FREEZE_P99_GOAL_NS: u64 = 1_000_000;
/// Sync memory goal, at any k.
pub const SYNC_MEM_GOAL: usize = 4 << 20;
/// Sync memory goal at k = [`TARGET_K`].
pub const SYNC_MEM_K_GOAL: usize = 64 << 10;
/// The first sync's speed-up goal over rsync's first copy.
pub const INITIAL_VS_RSYNC_GOAL: f64 = 2.0;
/// Speed-up goal of the pruned scan.
pub const SPEEDUP_GOAL: f64 = 1000.0;
/// Initial sync goal, as a fraction of memcpy bandwidth.
pub const BANDWIDTH_GOAL: f64 = 0.5;

/// Speed-up goal of a volume resync over rsync.
pub const VOLUME_RESYNC_GOAL: f64 = 1000.0;
/// A volume's first-sync goal, as a fraction of cp's bandwidth.
pub const VOLUME_BANDWIDTH_GOAL: f64 = 0.5;

/// The volume targets: `volume_resync_vs_rsync` and `volume_first_sync_bandwidth`.
pub fn volume_targets(v: Result<&Volumes, &String>) -> [Target; 3] {
    let r = v.ok().and_then(|v| v.resync.as_ref().ok());
    let x = r.and_then(|r| r.ratio());
    let b = v
        .ok()
        .and_then(|v| v.bandwidth.as_ref().ok())
        .map(|b| b.ratio());
    [
        Target {
            name: "volume_resync_vs_rsync".into(),
            measured: match (r, x) {
                (Some(r), Some(x)) => format!("{x:.1}x@N={},k={}", r.files, r.k),
                _ => "not-measured".into(),
            },
            goal: format!(">={VOLUME_RESYNC_GOAL:.0}x"),
            met: x.is_some_and(|x| x >= VOLUME_RESYNC_GOAL),
        },
        Target {
            name: "volume_first_sync_bandwidth".into(),
            measured: b.map_or("not-measured".into(), |b| format!("{:.1}%", b * 100.0)),
            goal: format!(">={:.0}%", VOLUME_BANDWIDTH_GOAL * 100.0),
            met: b.is_some_and(|b| b >= VOLUME_BANDWIDTH_GOAL),
        },
        // The chain cache's memory is everything a mounted store holds: met only when the
        // cluster of both stores, after the first sync, stayed within their two budgets
        // (each the payload cache's and the chains'). The payload cache's peak is shown, not
        // judged: the cache never installs past its budget, so `payload-peak <= budget`
        // could not fail. The first sync's peak is shown too: changed data wait in memory
        // for a commit outside the budget, up to twice it (the pinned limit).
        Target {
            name: "volume_cache_within_budget".into(),
            measured: r.map_or("not-measured".into(), |r| {
                format!(
                    "payload-peak={}B,stores={}B,first-sync-peak={}B,budget=2x({}+{})B@N={}",
                    r.cache_peak,
                    r.cluster_bytes,
                    r.first_peak,
                    r.cache_budget,
                    r.chain_budget,
                    r.files
                )
            }),
            goal: "stores<=budget".into(),
            met: r.is_some_and(|r| {
                r.cluster_bytes <= (r.cache_budget + r.chain_budget).saturating_mul(2)
            }),
        },
    ]
}

/// The `initial_sync_bandwidth` target for a measured sync / memcpy ratio.
pub fn bandwidth_target(ratio: Option<f64>) -> Target {
    Target {
        name: "initial_sync_bandwidth".into(),
        measured: ratio.map_or("not-measured".into(), |v| format!("{:.1}%", v * 100.0)),
        goal: format!(">={:.0}%", BANDWIDTH_GOAL * 100.0),
        met: ratio.is_some_and(|v| v >= BANDWIDTH_GOAL),
    }
}

impl Results {
    /// The wide row the speed targets use: N = 10^6 if measured, else the largest measured.
    pub fn target_row(&self) -> Option<&Row> {
        let measured = |r: &&Row| r.shape == Shape::Wide && r.cluster.is_ok();
        self.rows
            .iter()
            .filter(measured)
            .find(|r| r.files == TARGET_N)
            .or_else(|| self.rows.iter().filter(measured).max_by_key(|r| r.files))
    }

    fn mode_missing(&self, mode: ScanMode) -> bool {
        self.missing_modes.iter().any(|(m, _)| *m == mode)
    }

    fn speedup(&self, name: &str, other: impl Fn(&Row) -> Option<Duration>) -> Target {
        let goal = format!(">={SPEEDUP_GOAL:.0}x");
        let row = self.target_row();
        let at = row.map_or(String::new(), |r| format!("@N={},k={TARGET_K}", r.files));
        let pruned = row.and_then(|r| r.resync(ScanMode::Pruned, TARGET_K));
        let base = row.and_then(&other);
        let (measured, met) = match (pruned, base) {
            (Some(p), Some(b)) => {
                let x = b.as_secs_f64() / p.as_secs_f64().max(1e-12);
                (format!("{x:.1}x{at}"), x >= SPEEDUP_GOAL)
            }
            _ if self.mode_missing(ScanMode::Pruned) => ("not-implemented".to_string(), false),
            _ => ("not-measured".to_string(), false),
        };
        Target {
            name: name.to_string(),
            measured,
            goal,
            met,
        }
    }

    /// The highest freeze p99 over all trees, with its row.
    pub fn worst_freeze_p99(&self) -> Option<u64> {
        self.rows
            .iter()
            .filter_map(|r| r.cluster.as_ref().ok())
            .filter_map(|c| percentile(&c.freeze_ns, 99))
            .max()
    }

    /// The highest resync peak memory over all trees and modes, at `k` (every k: None).
    pub fn worst_sync_peak(&self, k: Option<usize>) -> Option<usize> {
        self.rows
            .iter()
            .filter_map(|r| r.cluster.as_ref().ok())
            .flat_map(|c| c.resyncs.iter())
            .filter(|s| k.is_none_or(|k| s.k == k))
            .map(|s| s.peak)
            .max()
    }

    /// The lowest original / pruned ratio over every tree of `shape` and every k, with where.
    pub fn worst_pruned_ratio(&self, shape: Shape) -> Option<(f64, usize, usize)> {
        self.rows
            .iter()
            .filter(|r| r.shape == shape)
            .filter_map(|r| Some((r, r.cluster.as_ref().ok()?)))
            .flat_map(|(r, c)| {
                c.resyncs.iter().filter_map(move |s| {
                    let o = r.resync(ScanMode::Original, s.k)?;
                    let p = r.resync(ScanMode::Pruned, s.k)?;
                    (s.mode == ScanMode::Pruned)
                        .then(|| (o.as_secs_f64() / p.as_secs_f64().max(1e-12), r.files, s.k))
                })
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    fn pruned_not_slower(&self, shape: Shape) -> Target {
        let worst = self.worst_pruned_ratio(shape);
        Target {
            name: format!("pruned_not_slower_{}", shape.name()),
            measured: worst.map_or("not-measured".into(), |(x, n, k)| {
                format!("{x:.2}x@N={n},k={k}")
            }),
            goal: ">=1.00x".into(),
            met: worst.is_some_and(|(x, ..)| x >= 1.0),
        }
    }

    /// rsync's first copy over the slave's first sync, on the target row.
    fn initial_vs_rsync(&self) -> Target {
        let row = self.target_row();
        let sync = row.and_then(|r| r.cluster.as_ref().ok()?.build.initial.as_ref().ok());
        let rsync = row.and_then(|r| r.rsync.as_ref().ok());
        let x = match (sync, rsync) {
            (Some(s), Some(r)) => Some(r.initial.as_secs_f64() / s.time.as_secs_f64().max(1e-12)),
            _ => None,
        };
        let at = row.map_or(String::new(), |r| format!("@N={}", r.files));
        Target {
            name: "initial_sync_vs_rsync".into(),
            measured: x.map_or("not-measured".into(), |x| format!("{x:.2}x{at}")),
            goal: format!(">={INITIAL_VS_RSYNC_GOAL:.1}x"),
            met: x.is_some_and(|x| x >= INITIAL_VS_RSYNC_GOAL),
        }
    }

    fn sync_memory(&self, name: &str, k: Option<usize>, goal: usize) -> Target {
        let mem = self.worst_sync_peak(k);
        Target {
            name: name.into(),
            measured: mem.map_or("not-measured".into(), |v| format!("{v}B")),
            goal: format!("<={goal}B"),
            met: mem.is_some_and(|v| v <= goal),
        }
    }

    /// The store's bytes per chain: userland's from the counting allocator, the kernel pool's
    /// from `make bench-kernel`'s output.
    fn chain_memory(&self) -> [Target; 2] {
        let m = self.memory.as_ref().ok();
        [
            Target {
                name: "chain_memory_userland".into(),
                measured: m.map_or("not-measured".into(), |m| {
                    format!("{}B/file,{}B/data-chain", m.inode_chain, m.data_chain)
                }),
                goal: "reported".into(),
                met: m.is_some(),
            },
            self.kernel
                .as_ref()
                .ok()
                .and_then(|k| k.target(kernel::CHAIN_MEMORY).cloned())
                .unwrap_or_else(|| Target {
                    name: kernel::CHAIN_MEMORY.into(),
                    measured: "not-measured".into(),
                    goal: "reported".into(),
                    met: false,
                }),
        ]
    }

    /// The targets, in a fixed order (the report's and the smoke test's).
    pub fn targets(&self) -> Vec<Target> {
        let mut t = vec![
            self.speedup("pruned_vs_original", |r| {
                r.resync(ScanMode::Original, TARGET_K)
            }),
            self.speedup("pruned_vs_rsync", |r| r.rsync_at(TARGET_K)),
            self.pruned_not_slower(Shape::Wide),
            self.pruned_not_slower(Shape::Deep),
            self.initial_vs_rsync(),
        ];
        let p99 = self.worst_freeze_p99();
        t.push(Target {
            name: "freeze_ack_p99".into(),
            measured: p99.map_or("not-measured".into(), |v| format!("{v}ns")),
            goal: format!("<={FREEZE_P99_GOAL_NS}ns"),
            met: p99.is_some_and(|v| v <= FREEZE_P99_GOAL_NS),
        });
        t.push(self.sync_memory("sync_memory", None, SYNC_MEM_GOAL));
        t.push(self.sync_memory("sync_memory_k10", Some(TARGET_K), SYNC_MEM_K_GOAL));
        t.push(bandwidth_target(
            self.bandwidth.as_ref().ok().map(Bandwidth::ratio),
        ));
        t.extend(self.chain_memory());
        t.extend(volume_targets(self.volumes.as_ref()));
        let kernel = self.kernel.as_ref().ok().and_then(|k| {
            k.targets
                .iter()
                .find(|t| t.name == "kernel_round_trips")
                .cloned()
        });
        t.push(kernel.unwrap_or_else(|| Target {
            name: "kernel_round_trips".into(),
            measured: "not-measured".into(),
            goal: "<=1.2x".into(),
            met: false,
        }));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_bench::{BuildResult, ResyncResult};

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn row(files: usize, orig_k10: Duration, freeze: Vec<u64>, peak: usize) -> Row {
        Row {
            shape: Shape::Wide,
            files,
            chains: files + 1,
            cluster: Ok(ClusterResult {
                build: BuildResult {
                    chains: files + 1,
                    nodes: 3,
                    build: ms(1),
                    initial: Err("skipped".into()),
                },
                resyncs: vec![ResyncResult {
                    k: TARGET_K,
                    mode: ScanMode::Original,
                    time: orig_k10,
                    scanned: 5,
                    peak,
                }],
                freeze_ns: freeze,
                stop_ns: vec![1],
                cluster_bytes: 1,
                work_time: ms(1),
            }),
            rsync: Ok(RsyncResult {
                initial: ms(1),
                resyncs: vec![(TARGET_K, ms(50))],
            }),
        }
    }

    fn results(rows: Vec<Row>) -> Results {
        Results {
            machine: Machine::probe(),
            quick: true,
            command: "x".into(),
            date: "d".into(),
            rsync: Ok("rsync".into()),
            tmpfs: Ok("/dev/shm".into()),
            rows,
            missing_modes: vec![(ScanMode::Pruned, "not implemented".into())],
            bandwidth: Err("skipped".into()),
            skipped: vec![],
            total: ms(1),
            load_end: "0 0 0".into(),
            kernel: Err("none".into()),
            memory: Err("not run".into()),
            volumes: Err("not run".into()),
        }
    }

    fn find<'t>(t: &'t [Target], name: &str) -> &'t Target {
        t.iter().find(|t| t.name == name).expect(name)
    }

    #[test]
    fn targets_follow_the_measurements() {
        let r = results(vec![
            row(1000, ms(2), vec![10, 20, 2_000_000], 100),
            row(10_000, ms(9), vec![500; 200], 5 << 20),
        ]);
        assert_eq!(r.target_row().map(|r| r.files), Some(10_000));
        let t = r.targets();
        let names: Vec<_> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "pruned_vs_original",
                "pruned_vs_rsync",
                "pruned_not_slower_wide",
                "pruned_not_slower_deep",
                "initial_sync_vs_rsync",
                "freeze_ack_p99",
                "sync_memory",
                "sync_memory_k10",
                "initial_sync_bandwidth",
                "chain_memory_userland",
                "chain_memory_kernel",
                "volume_resync_vs_rsync",
                "volume_first_sync_bandwidth",
                "volume_cache_within_budget",
                "kernel_round_trips"
            ]
        );
        assert_eq!(
            t[0].line(),
            "target pruned_vs_original: measured not-implemented goal >=1000x missed"
        );
        // The worst p99 over both trees is the 2 ms outlier of the small one.
        assert_eq!(
            find(&t, "freeze_ack_p99").line(),
            "target freeze_ack_p99: measured 2000000ns goal <=1000000ns missed"
        );
        assert_eq!(find(&t, "sync_memory").measured, format!("{}B", 5 << 20));
        assert_eq!(find(&t, "sync_memory_k10").goal, "<=65536B");
        assert_eq!(find(&t, "initial_sync_bandwidth").measured, "not-measured");
        assert_eq!(find(&t, "initial_sync_vs_rsync").measured, "not-measured");
        assert_eq!(find(&t, "pruned_not_slower_wide").measured, "not-measured");
        assert_eq!(find(&t, "chain_memory_kernel").measured, "not-measured");
        assert!(t.iter().all(|t| !t.met));
    }

    #[test]
    fn targets_met_when_under_goal() {
        let mut r = results(vec![row(TARGET_N, ms(3), vec![500; 100], 1000)]);
        let mut c = r.rows[0].cluster.clone().unwrap();
        c.resyncs.push(ResyncResult {
            k: TARGET_K,
            mode: ScanMode::Pruned,
            time: Duration::from_nanos(1000),
            scanned: 1,
            peak: 10,
        });
        c.build.initial = Ok(crate::cluster_bench::InitialSync {
            time: ms(1000),
            scanned: 1,
            peak: 1,
            kept: 1,
            usage: None,
        });
        r.rows[0].cluster = Ok(c);
        r.rows[0].rsync = Ok(RsyncResult {
            initial: ms(2500),
            resyncs: vec![(TARGET_K, ms(50))],
        });
        r.missing_modes.clear();
        let t = r.targets();
        assert_eq!(t[0].measured, "3000.0x@N=1000000,k=10");
        assert!(t[0].met);
        assert_eq!(t[1].measured, "50000.0x@N=1000000,k=10");
        assert!(t[1].met);
        let w = find(&t, "pruned_not_slower_wide");
        assert_eq!(w.measured, "3000.00x@N=1000000,k=10");
        assert!(w.met);
        let i = find(&t, "initial_sync_vs_rsync");
        assert_eq!(i.measured, "2.50x@N=1000000");
        assert!(i.met);
        assert!(find(&t, "freeze_ack_p99").met && find(&t, "sync_memory").met);
        assert!(find(&t, "sync_memory_k10").met);
        assert!(!find(&t, "kernel_round_trips").met);
        r.kernel = Ok(crate::kernel::parse(
            "target kernel_round_trips: measured 1.10x goal <=1.2x met\n",
            "f".into(),
        )
        .unwrap());
        let t = r.targets();
        assert_eq!(
            t.last().unwrap().line(),
            "target kernel_round_trips: measured 1.10x goal <=1.2x met"
        );
        // A kernel run without the store-memory line leaves that target unmeasured.
        assert!(!find(&t, "chain_memory_kernel").met);
        r.kernel = Ok(crate::kernel::parse(
            "target kernel_round_trips: measured 1.10x goal <=1.2x met\n\
             target chain_memory_kernel: measured 2560B/file,384B/data-chain goal reported met\n",
            "f".into(),
        )
        .unwrap());
        assert_eq!(
            find(&r.targets(), "chain_memory_kernel").line(),
            "target chain_memory_kernel: measured 2560B/file,384B/data-chain goal reported met"
        );
    }

    #[test]
    fn volume_targets_follow_the_measurements() {
        use crate::volume_bench::{VolumeBandwidth, VolumeResync};
        use hammer2_synchro::volume::IoCount;
        let resync = |resync: Duration, rsync: Result<Duration, String>| VolumeResync {
            files: 1000,
            k: TARGET_K,
            first: ms(1),
            first_io: IoCount::default(),
            resync,
            resync_range: (resync, resync),
            rounds: Vec::new(),
            io: IoCount::default(),
            load_io: IoCount::default(),
            cluster_bytes: 1,
            first_peak: 1,
            peak: 1,
            cache_peak: 1,
            cache_budget: 2,
            chain_budget: 1,
            cache_read: 0,
            rsync,
        };
        let bandwidth = |sync: u64, cp: u64| VolumeBandwidth {
            bytes: 1 << 20,
            files: 1,
            sync: ms(sync),
            phases: [ms(0), ms(0), ms(sync)],
            usage: None,
            cp: ms(cp),
        };
        let mut v = Volumes {
            resync: Ok(resync(Duration::from_micros(100), Ok(ms(200)))),
            bandwidth: Ok(bandwidth(100, 60)),
            time: ms(1),
        };
        let [r, b, c] = volume_targets(Ok(&v));
        assert_eq!(
            c.line(),
            "target volume_cache_within_budget: measured \
             payload-peak=1B,stores=1B,first-sync-peak=1B,budget=2x(2+1)B@N=1000 goal \
             stores<=budget met"
        );
        assert_eq!(
            r.line(),
            "target volume_resync_vs_rsync: measured 2000.0x@N=1000,k=10 goal >=1000x met"
        );
        assert_eq!(
            b.line(),
            "target volume_first_sync_bandwidth: measured 60.0% goal >=50% met"
        );
        v.resync = Ok(resync(ms(1), Ok(ms(200))));
        v.bandwidth = Ok(bandwidth(100, 40));
        let [r, b, c] = volume_targets(Ok(&v));
        assert_eq!(r.measured, "200.0x@N=1000,k=10");
        assert!(!r.met && !b.met && c.met);
        // Stores beyond their budgets miss it, whatever the payload cache did.
        if let Ok(x) = v.resync.as_mut() {
            x.cluster_bytes = 7;
        }
        assert!(!volume_targets(Ok(&v))[2].met);
        // Without rsync, or without volumes at all, nothing is met.
        v.resync = Ok(resync(ms(1), Err("rsync: not found".into())));
        v.bandwidth = Err("boom".into());
        let [r, b, _] = volume_targets(Ok(&v));
        assert_eq!((r.measured.as_str(), r.met), ("not-measured", false));
        assert_eq!((b.measured.as_str(), b.met), ("not-measured", false));
        let none = Err("no tmpfs".to_string());
        assert!(volume_targets(none.as_ref()).iter().all(|t| !t.met));
    }

    #[test]
    fn pruned_not_slower_takes_the_worst_ratio() {
        let mut r = results(vec![row(1000, ms(3), vec![1], 1)]);
        let mut c = r.rows[0].cluster.clone().unwrap();
        for (k, orig, pruned) in [(1, 2, 1), (TARGET_K, 3, 4)] {
            c.resyncs.retain(|s| s.k != k);
            for (mode, time) in [(ScanMode::Original, orig), (ScanMode::Pruned, pruned)] {
                c.resyncs.push(ResyncResult {
                    k,
                    mode,
                    time: ms(time),
                    scanned: 1,
                    peak: 1,
                });
            }
        }
        r.rows[0].cluster = Ok(c);
        let t = find(&r.targets(), "pruned_not_slower_wide").clone();
        assert_eq!(t.measured, "0.75x@N=1000,k=10");
        assert!(!t.met);
    }
}
