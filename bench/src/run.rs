//! The whole bench run: every size and shape on the cluster and with rsync, the bandwidth
//! measurement, skipping sizes that would not fit in memory or time.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::bandwidth;
use crate::cluster_bench::{self, ClusterCfg, ScanMode};
use crate::machine::{mem_available, Machine};
use crate::results::{Results, Row, RsyncResult};
use crate::shape::{Shape, Tree};
use crate::tmpfs::{rsync_version, tmpfs_base, FsPair};

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
    /// Freeze samples per tree.
    pub freeze_samples: usize,
    /// Time allowed to collect them.
    pub freeze_budget: Duration,
    /// Stop samples per tree.
    pub stop_samples: usize,
    /// Most bytes the cluster of one tree may take.
    pub mem_budget: u64,
    /// Longest a tree's cluster or rsync measurement is allowed to take (estimated).
    pub row_time_limit: Duration,
    /// Trees of more files are not attempted (`--max-files`).
    pub max_files: usize,
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
                freeze_samples: 40,
                freeze_budget: Duration::from_secs(2),
                stop_samples: 3,
                mem_budget: 1 << 30,
                row_time_limit: Duration::from_secs(10),
                max_files: usize::MAX,
                command,
            }
        } else {
            Config {
                quick,
                files: vec![1_000, 10_000, 100_000, 1_000_000],
                bandwidth_bytes: 256 << 20,
                bandwidth_file: 1 << 20,
                freeze_samples: 300,
                freeze_budget: Duration::from_secs(10),
                stop_samples: 10,
                mem_budget: 8 << 30,
                row_time_limit: Duration::from_secs(240),
                max_files: usize::MAX,
                command,
            }
        }
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

/// What the previous size of a shape cost, to extrapolate the next one.
#[derive(Clone, Copy)]
struct Cost {
    chains: usize,
    bytes_per_chain: f64,
    cluster_time: Duration,
    rsync_time: Option<Duration>,
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

/// Run everything, printing progress to stdout.
pub fn run(cfg: &Config) -> Results {
    let t_all = Instant::now();
    let machine = Machine::probe();
    let rsync =
        rsync_version().ok_or_else(|| "rsync not found (apt-get install rsync)".to_string());
    let tmpfs = tmpfs_base().map_err(|e| e.to_string());
    let mut missing_modes: Vec<(ScanMode, String)> = Vec::new();
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let mut last: [Option<Cost>; 2] = [None, None];

    for &files in &cfg.files {
        for (si, shape) in Shape::ALL.into_iter().enumerate() {
            let tree = Tree::new(shape, files);
            let chains = tree.chains();
            let ks = ks_for(files);
            let tag = format!("{} N={files} ({chains} chains)", shape.name());
            if files > cfg.max_files {
                skipped.push(format!("{tag}: above --max-files {}", cfg.max_files));
                continue;
            }
            // Extrapolate from the previous size of this shape.
            if let Some(prev) = last[si] {
                let scale = chains as f64 / prev.chains as f64;
                let bytes = prev.bytes_per_chain * chains as f64 * 1.25;
                let budget = (cfg.mem_budget as f64).min(mem_available() as f64 * 0.8);
                let time = prev.cluster_time.as_secs_f64() * scale;
                if bytes > budget {
                    skipped.push(format!(
                        "{tag}: the cluster would need about {:.1} GiB (4 nodes; {:.0} bytes per \
                         chain per cluster measured at N={}), over the {:.1} GiB budget",
                        bytes / f64::from(1u32 << 30),
                        prev.bytes_per_chain,
                        prev.chains,
                        budget / f64::from(1u32 << 30)
                    ));
                    continue;
                }
                if time > cfg.row_time_limit.as_secs_f64() {
                    skipped.push(format!(
                        "{tag}: extrapolated to about {time:.0} s of cluster work (from {:.1} s \
                         at {} chains), over the {} s limit per tree",
                        prev.cluster_time.as_secs_f64(),
                        prev.chains,
                        cfg.row_time_limit.as_secs()
                    ));
                    continue;
                }
            }
            println!("bench: {tag}: cluster ...");
            let cluster = cluster_bench::measure(
                &tree,
                &ClusterCfg {
                    ks: ks.clone(),
                    freeze_samples: cfg.freeze_samples,
                    freeze_budget: cfg.freeze_budget,
                    stop_samples: cfg.stop_samples,
                },
                &mut |mode, why| {
                    if !missing_modes.iter().any(|(m, _)| *m == mode) {
                        missing_modes.push((mode, why.to_string()));
                    }
                },
            );
            match &cluster {
                Ok(c) => {
                    for x in &c.resyncs {
                        println!(
                            "bench: {tag}: k={} {}: {:?}, {} chains scanned",
                            x.k,
                            x.mode.name(),
                            x.time,
                            x.scanned
                        );
                    }
                }
                Err(e) => println!("bench: {tag}: cluster FAILED: {e}"),
            }
            println!("bench: {tag}: rsync ...");
            let t = Instant::now();
            let rs = match (&rsync, &tmpfs) {
                (Ok(_), Ok(base)) => {
                    let time_ok = last[si].and_then(|p| p.rsync_time).is_none_or(|pt| {
                        let scale = chains as f64 / last[si].map_or(1, |p| p.chains) as f64;
                        pt.as_secs_f64() * scale <= cfg.row_time_limit.as_secs_f64()
                    });
                    if time_ok {
                        rsync_side(Path::new(base), &tree, &ks)
                    } else {
                        Err("extrapolated rsync time over the limit per tree".into())
                    }
                }
                (Err(e), _) | (_, Err(e)) => Err(e.clone()),
            };
            let rsync_time = rs.is_ok().then(|| t.elapsed());
            match &rs {
                Ok(x) => {
                    for (k, d) in &x.resyncs {
                        println!("bench: {tag}: k={k} rsync: {d:?}");
                    }
                }
                Err(e) => println!("bench: {tag}: rsync not measured: {e}"),
            }
            if let Ok(c) = &cluster {
                last[si] = Some(Cost {
                    chains,
                    bytes_per_chain: c.cluster_bytes as f64 / chains as f64,
                    cluster_time: c.work_time,
                    rsync_time,
                });
            }
            rows.push(Row {
                shape,
                files,
                chains,
                cluster,
                rsync: rs,
            });
        }
    }
    println!("bench: initial-sync bandwidth ...");
    let bandwidth = bandwidth::measure(cfg.bandwidth_bytes, cfg.bandwidth_file);
    Results {
        machine,
        quick: cfg.quick,
        command: cfg.command.clone(),
        date: date_utc(),
        rsync,
        tmpfs: tmpfs.map(|p| p.display().to_string()),
        rows,
        missing_modes,
        bandwidth,
        skipped,
        total: t_all.elapsed(),
        load_end: crate::machine::loadavg(),
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
}
