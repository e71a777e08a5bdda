//! The kernel round trips measured by `make bench-kernel` (QEMU), read back from the file that
//! target leaves, so one report holds every target.

use std::fs;
use std::path::Path;

use crate::target::Target;

/// What `make bench-kernel` reported.
#[derive(Debug, Clone)]
pub struct KernelResults {
    /// The file it was read from, with its modification time.
    pub source: String,
    /// The summary lines (`# ...` lines with nanoseconds and the per-batch ratio medians, the
    /// QEMU accelerator that measured them, and the store's bytes per chain), without the `# `;
    /// the per-batch lines stay in the file only.
    pub lines: Vec<String>,
    /// Its `target kernel_...` lines and its `target chain_memory_kernel` line.
    pub targets: Vec<Target>,
}

/// The kernel bench's target on the store's bytes per chain (the others start `kernel_`).
pub const CHAIN_MEMORY: &str = "chain_memory_kernel";

impl KernelResults {
    /// The target named `name`, if the run printed it.
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }
}

/// The kernel results in `text` (the output of `qemu-tests/run --bench`), if it holds a
/// `kernel_round_trips` target line.
pub fn parse(text: &str, source: String) -> Option<KernelResults> {
    let targets: Vec<Target> = text
        .lines()
        .filter(|l| l.starts_with("target "))
        .filter_map(Target::parse)
        .filter(|t| t.name.starts_with("kernel_") || t.name == CHAIN_MEMORY)
        .collect();
    targets.iter().find(|t| t.name == "kernel_round_trips")?;
    let lines = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.starts_with("QEMU accelerator: ")
                || l.starts_with("store memory ")
                || l.contains(" ns (")
                || l.contains(" per-batch ratios ")
        })
        .map(str::to_string)
        .collect();
    Some(KernelResults {
        source,
        lines,
        targets,
    })
}

/// Read the results `make bench-kernel` left in `path`.
pub fn read(path: &Path) -> Result<KernelResults, String> {
    let text = fs::read_to_string(path)
        .map_err(|e| format!("{}: {e} (run `make bench-kernel` first)", path.display()))?;
    let when = std::process::Command::new("date")
        .arg("-u")
        .arg("-r")
        .arg(path)
        .arg("+%Y-%m-%d %H:%M:%S UTC")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "an unknown time".to_string(), |s| s.trim().to_string());
    parse(&text, format!("{} (written at {when})", path.display())).ok_or_else(|| {
        format!(
            "{}: no kernel_round_trips target line (did `make bench-kernel` fail?)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "KTAP version 1\n1..1\nok 1 - bench\n\
        # QEMU accelerator: kvm, 1 vCPU\n\
        # freeze+unfreeze of an idle sync thread: 5100 ns (mean of 1000)\n\
        # kthread_park+kthread_unpark of an idle kthread: 4800 ns (mean of 1000)\n\
        # batch 1 freeze_unfreeze: ours median 5100 p90 6000 ns, baseline median 4800 p90 5000 ns\n\
        # freeze_unfreeze ratio: median of 24 per-batch ratios 1.06x (lowest 1.01x, highest 1.10x)\n\
        # QEMU suite wall time 40s\n\
        # pool lock under fragmentation (TCG wall clock): longest hold 139471 ns (of 22957)\n\
        # QEMU accelerator: tcg -icount shift=0,sleep=off, 1 vCPU\n\
        # pool lock under fragmentation (TCG -icount): longest hold 680 ns (of 22957)\n\
        # store memory (pool bytes in use and chain locks of 64 B, 256 files per kind on one node): 2560 B per empty file (inode chain with its 1 KiB inode, and DIRENT chain), 384 B per 64 KiB DATA chain beyond its data\n\
        # target chain_memory_kernel: measured 2560B/file,384B/data-chain goal reported met\n\
        # 1 passed, 0 failed\n\
        target chain_memory_userland: measured 1B/file,1B/data-chain goal reported met\n\
        target kernel_freeze_unfreeze_vs_park_unpark: measured 1.06x goal <=1.2x met\n\
        target kernel_stop_vs_kthread_stop: measured 1.30x goal <=1.2x missed\n\
        target kernel_round_trips: measured 1.30x goal <=1.2x missed\n\
        target kernel_pool_lock_hold: measured 41250ns@kvm goal <=100000ns met\n\
        target chain_memory_kernel: measured 2560B/file,384B/data-chain goal reported met\n";

    #[test]
    fn reads_targets_and_measurements() {
        let k = parse(OUT, "f".into()).unwrap();
        // The kernel's own targets only: not the userland one a file could also hold.
        assert_eq!(k.targets.len(), 5);
        assert!(k.target("chain_memory_userland").is_none());
        let mem = k.target(CHAIN_MEMORY).unwrap();
        assert_eq!(
            (mem.measured.as_str(), mem.goal.as_str(), mem.met),
            ("2560B/file,384B/data-chain", "reported", true)
        );
        let pool = &k.targets[3];
        assert_eq!((pool.measured.as_str(), pool.met), ("41250ns@kvm", true));
        let rt = k
            .targets
            .iter()
            .find(|t| t.name == "kernel_round_trips")
            .unwrap();
        assert_eq!(rt.measured, "1.30x");
        assert_eq!(rt.goal, "<=1.2x");
        assert!(!rt.met);
        assert!(k.targets[0].met);
        assert_eq!(
            k.lines,
            vec![
                "QEMU accelerator: kvm, 1 vCPU".to_string(),
                "freeze+unfreeze of an idle sync thread: 5100 ns (mean of 1000)".into(),
                "kthread_park+kthread_unpark of an idle kthread: 4800 ns (mean of 1000)".into(),
                "freeze_unfreeze ratio: median of 24 per-batch ratios 1.06x (lowest 1.01x, highest 1.10x)"
                    .into(),
                "pool lock under fragmentation (TCG wall clock): longest hold 139471 ns (of 22957)"
                    .into(),
                "QEMU accelerator: tcg -icount shift=0,sleep=off, 1 vCPU".into(),
                "pool lock under fragmentation (TCG -icount): longest hold 680 ns (of 22957)".into(),
                "store memory (pool bytes in use and chain locks of 64 B, 256 files per kind \
                 on one node): 2560 B per empty file (inode chain with its 1 KiB inode, and DIRENT chain), 384 B per 64 \
                 KiB DATA chain beyond its data"
                    .into(),
            ]
        );
        assert_eq!(
            rt.line(),
            "target kernel_round_trips: measured 1.30x goal <=1.2x missed"
        );
    }

    #[test]
    fn rejects_output_without_the_target() {
        assert!(parse("KTAP version 1\nnot ok 1 - boot\n", "f".into()).is_none());
        assert!(Target::parse("target x: measured 1 goal 2 maybe").is_none());
        assert!(Target::parse("nothing").is_none());
        assert!(read(Path::new("/nonexistent/h2s-bench-kernel.txt")).is_err());
    }
}
