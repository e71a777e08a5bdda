//! The whole bench run: every size and shape on the cluster and with rsync, the bandwidth
//! measurement, skipping sizes that would not fit in memory or time.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::bandwidth;
use crate::cluster_bench::{self, ClusterCfg, ClusterResult, ScanMode};
use crate::machine::{mem_available, Machine};
use crate::results::{Results, Row, RsyncResult, SKIPPED, TARGET_K};
use crate::shape::{Shape, Tree};
use crate::tmpfs::{rsync_version, tmpfs_base, FsPair, TmpfsBase};

/// Sizes and limits of one run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--quick` sizes (smoke test).
    pub quick: bool,
    /// File counts to measure, ascending.
    pub files: Vec<usize>,
    /// Bytes of the bandwidth tree.
    pub bandwidth_bytes: usize,
    /// File size of the bandwidth tree.
    pub bandwidth_file: usize,
    /// Most resyncs per k and mode (see [`resync_runs_for`]).
    pub max_resync_runs: usize,
    /// Freeze samples per tree.
    pub freeze_samples: usize,
    /// Time allowed to collect them.
    pub freeze_budget: Duration,
    /// Stop samples per tree.
    pub stop_samples: usize,
    /// Files per kind of the store's memory measurement.
    pub memory_files: usize,
    /// Files of the volume resync's tree.
    pub volume_files: usize,
    /// Bytes of the volume first-sync bandwidth measurement.
    pub volume_bytes: usize,
    /// Most bytes the cluster of one tree may take.
    pub mem_budget: u64,
    /// Longest a tree's cluster or rsync measurement is allowed to take (estimated).
    pub row_time_limit: Duration,
    /// The slave's first sync of a tree is skipped (the tree is applied to all nodes) when
    /// extrapolated to take longer.
    pub initial_limit: Duration,
    /// Wall time the whole run aims at; rsync runs that would overrun it are skipped.
    pub total_budget: Duration,
    /// Trees of more files are not attempted (`--max-files`).
    pub max_files: usize,
    /// The output of `make bench-kernel` to fold into the report, if any.
    pub kernel_results: Option<std::path::PathBuf>,
    /// The command line, for the report.
    pub command: String,
}

impl Config {
    /// Full sizes (`quick` false) or smoke-test sizes.
    pub fn new(quick: bool, command: String) -> Config {
        if quick {
            Config {
                quick,
                files: vec![100, 1000],
                bandwidth_bytes: 4 << 20,
                bandwidth_file: 1 << 20,
                max_resync_runs: 3,
                freeze_samples: 40,
                freeze_budget: Duration::from_secs(2),
                stop_samples: 3,
                memory_files: 256,
                volume_files: 300,
                volume_bytes: 2 << 20,
                mem_budget: 1 << 30,
                row_time_limit: Duration::from_secs(10),
                initial_limit: Duration::from_secs(5),
                total_budget: Duration::from_secs(20),
                max_files: usize::MAX,
                kernel_results: None,
                command,
            }
        } else {
            Config {
                quick,
                files: vec![1_000, 10_000, 100_000, 1_000_000],
                bandwidth_bytes: 256 << 20,
                bandwidth_file: 1 << 20,
                max_resync_runs: usize::MAX,
                freeze_samples: 300,
                freeze_budget: Duration::from_secs(10),
                stop_samples: 10,
                memory_files: MEMORY_FILES,
                volume_files: VOLUME_FILES,
                volume_bytes: VOLUME_BYTES,
                // Four copies of 10^6 files in today's layout (an inode and a DIRENT chain per
                // file, about 2.2 KiB) take about 9 GiB; still capped at 80% of the memory
                // available when the tree is built.
                mem_budget: 11 << 30,
                row_time_limit: Duration::from_secs(240),
                initial_limit: Duration::from_secs(60),
                total_budget: Duration::from_secs(1500),
                max_files: usize::MAX,
                kernel_results: None,
                command,
            }
        }
    }
}

/// Resyncs per k and mode on a tree of `files` files: the rows of a few milliseconds are
/// the median of several runs (one run there moves by tens of percent with the machine's other
/// work); past 10^4 files three, since an original scan takes up to seconds there while the
/// pruned one, which the ratio targets divide by, still takes about a millisecond.
pub fn resync_runs_for(files: usize) -> usize {
    match files {
        0..=10_000 => 15,
        _ => 3,
    }
}

/// Changed-leaf counts for `files` files: 1, 10, 100 and 1% of N, each at most N, distinct.
pub fn ks_for(files: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = [1, 10, 100, files / 100]
        .into_iter()
        .filter(|&k| k >= 1 && k <= files)
        .collect();
    ks.sort_unstable();
    ks.dedup();
    ks
}

fn date_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "an unknown date".into())
}

/// What the previous sizes of a shape cost, to extrapolate the next one.
#[derive(Clone, Default)]
struct History {
    /// (chains, cluster bytes per chain, cluster work time without the first sync).
    cluster: Option<(usize, f64, f64)>,
    /// (chains, first-sync seconds) of every size where it was measured.
    initial: Vec<(usize, f64)>,
    /// (chains, seconds) of the last rsync side.
    rsync: Option<(usize, f64)>,
}

/// Files of the volume resync's tree in the full run (`--volume N` picks its own).
pub const VOLUME_FILES: usize = 1_000_000;
/// Bytes of the volume first-sync bandwidth measurement in the full run (and `--volume`'s
/// default).
pub const VOLUME_BYTES: usize = 256 << 20;

/// Files per kind of the store's memory measurement (`--memory`, and the full run's).
pub const MEMORY_FILES: usize = 4096;

/// Bytes of RAM one empty file or directory costs on tmpfs (inode + dentry, measured at about
/// 1 KiB here), rounded up.
const TMPFS_BYTES_PER_ENTRY: f64 = 1536.0;

/// Seconds of the first sync at `chains`, extrapolated as a power law through the last two
/// measured sizes (linear from one), with the exponent.
pub fn predict_initial(hist: &[(usize, f64)], chains: usize) -> Option<(f64, f64)> {
    let &(c2, t2) = hist.last()?;
    let alpha = match hist.len().checked_sub(2).and_then(|i| hist.get(i)) {
        Some(&(c1, t1)) if c2 > c1 && t1 > 0.0 && t2 > 0.0 => {
            ((t2 / t1).ln() / (c2 as f64 / c1 as f64).ln()).clamp(1.0, 3.0)
        }
        _ => 1.0,
    };
    Some((t2 * (chains as f64 / c2 as f64).powf(alpha), alpha))
}

fn gib(b: f64) -> f64 {
    b / f64::from(1u32 << 30)
}

fn rsync_side(base: &Path, tree: &Tree, ks: &[usize]) -> Result<RsyncResult, String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: std::io::Error| format!("{what}: {err}")
    };
    let pair = FsPair::new(base, tree.shape.name()).map_err(e("tmpfs dir"))?;
    pair.build(tree).map_err(e("writing the tree"))?;
    let initial = pair.rsync().map_err(e("rsync"))?;
    let mut resyncs = Vec::new();
    for (gen, &k) in (1u32..).zip(ks) {
        let idx = tree.spread(k);
        pair.change(tree, &idx, gen).map_err(e("changing files"))?;
        let t = pair.rsync().map_err(e("rsync"))?;
        let last = *idx.last().ok_or("no changed file")?;
        if !pair.dst_holds(tree, last, gen) {
            return Err("rsync did not copy a changed file".into());
        }
        resyncs.push((idx.len(), t));
    }
    Ok(RsyncResult { initial, resyncs })
}

/// `<shape> N=<files> (<chains> chains)`, how progress lines and skip reasons name a tree.
fn tag(shape: Shape, files: usize, chains: usize) -> String {
    format!("{} N={files} ({chains} chains)", shape.name())
}

/// Bytes a tree's cluster or rsync copies may take: the configured budget, at most 80% of the
/// memory available now.
fn mem_budget(cfg: &Config) -> f64 {
    (cfg.mem_budget as f64).min(mem_available() as f64 * 0.8)
}

impl History {
    /// Whether the first sync of a tree of `chains` is measured (`Err(why)` when the power law
    /// through the smaller trees says it would take too long), and its predicted seconds.
    fn plan_initial(&self, chains: usize, cfg: &Config) -> (Result<(), String>, f64) {
        match predict_initial(&self.initial, chains) {
            Some((t, alpha)) if t > cfg.initial_limit.as_secs_f64() => (
                Err(format!(
                    "predicted about {t:.0} s (time growing as N^{alpha:.2} between the two \
                     smaller trees), over the {} s limit",
                    cfg.initial_limit.as_secs()
                )),
                0.0,
            ),
            p => (Ok(()), p.map_or(0.0, |p| p.0)),
        }
    }

    /// Whether the cluster of a tree of `chains` fits the memory and time budgets, extrapolated
    /// from the last size measured.
    fn cluster_fits(
        &self,
        chains: usize,
        predicted_initial: f64,
        cfg: &Config,
    ) -> Result<(), String> {
        let Some((pc, bpc, work)) = self.cluster else {
            return Ok(());
        };
        let mem_budget = mem_budget(cfg);
        let scale = chains as f64 / pc as f64;
        let bytes = bpc * chains as f64 * 1.25;
        let time = work * scale + predicted_initial;
        if bytes > mem_budget {
            Err(format!(
                "the cluster would need about {:.1} GiB (4 nodes; {bpc:.0} bytes per \
                 chain measured at {pc} chains), over the {:.1} GiB budget",
                gib(bytes),
                gib(mem_budget)
            ))
        } else if time > cfg.row_time_limit.as_secs_f64() {
            Err(format!(
                "extrapolated to about {time:.0} s of cluster work, over the {} s limit \
                 per tree",
                cfg.row_time_limit.as_secs()
            ))
        } else {
            Ok(())
        }
    }

    /// Print what the cluster of a tree of `chains` measured, and keep it for the next size.
    fn record_cluster(&mut self, tag: &str, chains: usize, c: &ClusterResult) {
        if let Ok(i) = &c.build.initial {
            println!("bench: {tag}: first sync: {:?}", i.time);
            self.initial.push((chains, i.time.as_secs_f64()));
        }
        for x in &c.resyncs {
            println!(
                "bench: {tag}: k={} {}: {:?}, {} chains scanned",
                x.k,
                x.mode.name(),
                x.time,
                x.scanned
            );
        }
        let init = c
            .build
            .initial
            .as_ref()
            .map_or(0.0, |i| i.time.as_secs_f64());
        self.cluster = Some((
            chains,
            c.cluster_bytes as f64 / chains as f64,
            (c.work_time.as_secs_f64() - init).max(0.0),
        ));
    }

    /// Why the rsync side of `row` is skipped, if it is: two copies on tmpfs over the memory
    /// budget, or more time than `left` seconds, extrapolated from the last size measured.
    fn rsync_skip(&self, row: &Row, left: f64, cfg: &Config) -> Option<String> {
        let mem_budget = mem_budget(cfg);
        // Two chains per file or directory (see `Tree::chains`), one tmpfs entry.
        let bytes = row.chains as f64 * TMPFS_BYTES_PER_ENTRY;
        let time = self.rsync.map(|(pc, t)| t * row.chains as f64 / pc as f64);
        if bytes > mem_budget {
            Some(format!(
                "two copies of the tree on tmpfs would take about {:.1} GiB of RAM, over \
                 the {:.1} GiB budget",
                gib(bytes),
                gib(mem_budget)
            ))
        } else {
            time.filter(|t| *t > left).map(|t| {
                format!(
                    "extrapolated to about {t:.0} s, more than the {left:.0} s left of \
                     the run's {} s budget",
                    cfg.total_budget.as_secs()
                )
            })
        }
    }
}

/// The cluster side of one tree: measured unless it would not fit (then `Err` with the skip
/// reason, also listed in `skipped`).
fn cluster_row(
    cfg: &Config,
    tree: &Tree,
    files: usize,
    h: &mut History,
    skipped: &mut Vec<String>,
    missing_modes: &mut Vec<(ScanMode, String)>,
) -> Result<ClusterResult, String> {
    let chains = tree.chains();
    let tag = tag(tree.shape, files, chains);
    let (initial, predicted_initial) = h.plan_initial(chains, cfg);
    if let Err(why) = h.cluster_fits(chains, predicted_initial, cfg) {
        skipped.push(format!("{tag}: cluster: {why}"));
        return Err(format!("{SKIPPED}{why}"));
    }
    println!("bench: {tag}: cluster ...");
    if let Err(why) = &initial {
        println!("bench: {tag}: first sync not measured: {why}");
    }
    let r = cluster_bench::measure(
        tree,
        &ClusterCfg {
            ks: ks_for(files),
            resync_runs: resync_runs_for(files).min(cfg.max_resync_runs),
            freeze_samples: cfg.freeze_samples,
            freeze_budget: cfg.freeze_budget,
            stop_samples: cfg.stop_samples,
        },
        initial,
        &mut |mode, why| {
            if !missing_modes.iter().any(|(m, _)| *m == mode) {
                missing_modes.push((mode, why.to_string()));
            }
        },
    );
    match &r {
        Ok(c) => h.record_cluster(&tag, chains, c),
        Err(e) => println!("bench: {tag}: cluster FAILED: {e}"),
    }
    r
}

/// The rsync side of one tree: measured unless rsync or tmpfs is missing or it would not fit
/// (then `Err` with the reason; a skip is also listed in `skipped`).
fn rsync_row(
    cfg: &Config,
    row: &Row,
    h: &mut History,
    tools: (&Result<String, String>, &Result<TmpfsBase, String>),
    left: f64,
    skipped: &mut Vec<String>,
) -> Result<RsyncResult, String> {
    let tag = tag(row.shape, row.files, row.chains);
    let rs = match tools {
        (Ok(_), Ok(base)) => match h.rsync_skip(row, left, cfg) {
            Some(why) => {
                skipped.push(format!("{tag}: rsync: {why}"));
                Err(format!("{SKIPPED}{why}"))
            }
            None => {
                println!("bench: {tag}: rsync ...");
                let tree = Tree::new(row.shape, row.files);
                let t = Instant::now();
                let r = rsync_side(&base.path, &tree, &ks_for(row.files));
                if r.is_ok() {
                    h.rsync = Some((row.chains, t.elapsed().as_secs_f64()));
                }
                r
            }
        },
        (Err(e), _) | (_, Err(e)) => Err(e.clone()),
    };
    match &rs {
        Ok(x) => {
            for (k, d) in &x.resyncs {
                println!("bench: {tag}: k={k} rsync: {d:?}");
            }
        }
        Err(e) => println!("bench: {tag}: rsync not measured: {e}"),
    }
    rs
}

/// Run everything, printing progress to stdout.
pub fn run(cfg: &Config) -> Results {
    let t_all = Instant::now();
    let machine = Machine::probe();
    let rsync =
        rsync_version().ok_or_else(|| "rsync not found (apt-get install rsync)".to_string());
    let tmpfs = tmpfs_base().map_err(|e| e.to_string());
    let tmpfs_desc = tmpfs.as_ref().map(|t| t.describe()).map_err(Clone::clone);
    let mut missing_modes: Vec<(ScanMode, String)> = Vec::new();
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let mut hist: [History; 2] = Default::default();

    for &files in &cfg.files {
        for (si, shape) in Shape::ALL.into_iter().enumerate() {
            let tree = Tree::new(shape, files);
            let chains = tree.chains();
            if files > cfg.max_files {
                let tag = tag(shape, files, chains);
                skipped.push(format!("{tag}: above --max-files {}", cfg.max_files));
                continue;
            }
            let cluster = cluster_row(
                cfg,
                &tree,
                files,
                &mut hist[si],
                &mut skipped,
                &mut missing_modes,
            );
            rows.push(Row {
                shape,
                files,
                chains,
                cluster,
                rsync: Err("not run".into()),
            });
        }
    }
    println!("bench: initial-sync bandwidth ...");
    let bandwidth = bandwidth::measure(cfg.bandwidth_bytes, cfg.bandwidth_file);
    println!("bench: store memory per chain ...");
    let memory = crate::memory::measure(cfg.memory_files);
    let volumes = match &tmpfs {
        Ok(base) => Ok(crate::volume_bench::measure(
            &base.path,
            cfg.volume_files,
            TARGET_K,
            cfg.volume_bytes,
            cfg.bandwidth_file,
        )),
        Err(e) => Err(format!("no tmpfs for the images: {e}")),
    };

    // rsync last: it is the comparison, so it gets what is left of the time budget.
    for row in &mut rows {
        let si = Shape::ALL.iter().position(|s| *s == row.shape).unwrap_or(0);
        let left = cfg.total_budget.as_secs_f64() - t_all.elapsed().as_secs_f64();
        row.rsync = rsync_row(
            cfg,
            row,
            &mut hist[si],
            (&rsync, &tmpfs),
            left,
            &mut skipped,
        );
    }
    Results {
        machine,
        quick: cfg.quick,
        command: cfg.command.clone(),
        date: date_utc(),
        rsync,
        tmpfs: tmpfs_desc,
        rows,
        missing_modes,
        bandwidth,
        skipped,
        total: t_all.elapsed(),
        load_end: crate::machine::loadavg(),
        kernel: cfg.kernel_results.as_deref().map_or_else(
            || Err("no kernel results file given".to_string()),
            crate::kernel::read,
        ),
        memory,
        volumes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_are_distinct_and_bounded() {
        assert_eq!(ks_for(1_000_000), vec![1, 10, 100, 10_000]);
        assert_eq!(ks_for(1000), vec![1, 10, 100]);
        assert_eq!(ks_for(100), vec![1, 10, 100]);
        assert_eq!(ks_for(50), vec![1, 10]);
    }

    #[test]
    fn initial_sync_prediction_follows_the_measured_growth() {
        assert_eq!(predict_initial(&[], 10), None);
        // One point: linear.
        let (t, a) = predict_initial(&[(100, 1.0)], 1000).unwrap();
        assert!((t - 10.0).abs() < 1e-9 && a == 1.0);
        // Quadratic growth between the last two points.
        let (t, a) = predict_initial(&[(10, 9.0), (100, 0.01), (1000, 1.0)], 10_000).unwrap();
        assert!((a - 2.0).abs() < 1e-9, "{a}");
        assert!((t - 100.0).abs() < 1e-6, "{t}");
        // Sub-linear measurements are not extrapolated below linear.
        let (_, a) = predict_initial(&[(100, 1.0), (1000, 2.0)], 10_000).unwrap();
        assert_eq!(a, 1.0);
    }
}
