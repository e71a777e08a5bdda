//! Everything one bench run measured, and the targets computed from it.

use std::time::Duration;

use crate::bandwidth::Bandwidth;
use crate::cluster_bench::{ClusterResult, ScanMode};
use crate::kernel::KernelResults;
use crate::machine::Machine;
use crate::shape::Shape;
use crate::stats::percentile;
use crate::target::Target;

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
}

/// The k at which the speed targets are defined.
pub const TARGET_K: usize = 10;
/// The N (files) at which the speed targets are defined.
pub const TARGET_N: usize = 1_000_000;
/// Freeze acknowledgement p99 goal.
pub const FREEZE_P99_GOAL_NS: u64 = 1_000_000;
/// Sync memory goal.
pub const SYNC_MEM_GOAL: usize = 4 << 20;
/// Speed-up goal of the pruned scan.
pub const SPEEDUP_GOAL: f64 = 1000.0;
/// Initial sync goal, as a fraction of memcpy bandwidth.
pub const BANDWIDTH_GOAL: f64 = 0.5;

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

    /// The highest resync peak memory over all trees, modes and k.
    pub fn worst_sync_peak(&self) -> Option<usize> {
        self.rows
            .iter()
            .filter_map(|r| r.cluster.as_ref().ok())
            .flat_map(|c| c.resyncs.iter().map(|s| s.peak))
            .max()
    }

    /// The targets, in a fixed order (the report's and the smoke test's).
    pub fn targets(&self) -> Vec<Target> {
        let mut t = vec![
            self.speedup("pruned_vs_original", |r| {
                r.resync(ScanMode::Original, TARGET_K)
            }),
            self.speedup("pruned_vs_rsync", |r| r.rsync_at(TARGET_K)),
        ];
        let p99 = self.worst_freeze_p99();
        t.push(Target {
            name: "freeze_ack_p99".into(),
            measured: p99.map_or("not-measured".into(), |v| format!("{v}ns")),
            goal: format!("<={FREEZE_P99_GOAL_NS}ns"),
            met: p99.is_some_and(|v| v <= FREEZE_P99_GOAL_NS),
        });
        let mem = self.worst_sync_peak();
        t.push(Target {
            name: "sync_memory".into(),
            measured: mem.map_or("not-measured".into(), |v| format!("{v}B")),
            goal: format!("<={SYNC_MEM_GOAL}B"),
            met: mem.is_some_and(|v| v <= SYNC_MEM_GOAL),
        });
        t.push(bandwidth_target(
            self.bandwidth.as_ref().ok().map(Bandwidth::ratio),
        ));
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
        }
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
                "freeze_ack_p99",
                "sync_memory",
                "initial_sync_bandwidth",
                "kernel_round_trips"
            ]
        );
        assert_eq!(
            t[0].line(),
            "target pruned_vs_original: measured not-implemented goal >=1000x missed"
        );
        // The worst p99 over both trees is the 2 ms outlier of the small one.
        assert_eq!(
            t[2].line(),
            "target freeze_ack_p99: measured 2000000ns goal <=1000000ns missed"
        );
        assert_eq!(t[3].measured, format!("{}B", 5 << 20));
        assert!(!t[3].met);
        assert_eq!(t[4].measured, "not-measured");
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
        r.rows[0].cluster = Ok(c);
        r.missing_modes.clear();
        let t = r.targets();
        assert_eq!(t[0].measured, "3000.0x@N=1000000,k=10");
        assert!(t[0].met);
        assert_eq!(t[1].measured, "50000.0x@N=1000000,k=10");
        assert!(t[1].met);
        assert!(t[2].met && t[3].met);
        assert!(!t[5].met);
        r.kernel = Ok(crate::kernel::parse(
            "target kernel_round_trips: measured 1.10x goal <=1.2x met\n",
            "f".into(),
        )
        .unwrap());
        let t = r.targets();
        assert_eq!(
            t[5].line(),
            "target kernel_round_trips: measured 1.10x goal <=1.2x met"
        );
    }
}
