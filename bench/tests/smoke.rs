//! Smoke test: a `--quick` run of the bench binary produces the report, the plot and one
//! well-formed `target` line per target, with positive measurements.

use std::path::PathBuf;
use std::process::Command;

const TARGETS: [&str; 15] = [
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
    "kernel_round_trips",
];

/// `target <name>: measured <value> goal <value> met|missed` -> (name, value, goal, met).
fn parse_target(line: &str) -> (String, String, String, bool) {
    let rest = line.strip_prefix("target ").expect("target prefix");
    let (name, rest) = rest.split_once(": measured ").expect("measured");
    let (value, rest) = rest.split_once(" goal ").expect("goal");
    let (goal, verdict) = rest.rsplit_once(' ').expect("verdict");
    assert!(verdict == "met" || verdict == "missed", "{line}");
    (name.into(), value.into(), goal.into(), verdict == "met")
}

fn number(value: &str, unit: &str) -> f64 {
    value
        .strip_suffix(unit)
        .unwrap_or_else(|| panic!("{value} lacks {unit}"))
        .parse()
        .unwrap_or_else(|_| panic!("{value} is not a number"))
}

/// Run the bench with `args`; its standard output (it must succeed) and its target lines.
fn run_bench(args: &[&std::ffi::OsStr]) -> (String, Vec<(String, String, String, bool)>) {
    let run = Command::new(env!("CARGO_BIN_EXE_hammer2-synchro-bench"))
        .args(args)
        .output()
        .expect("run the bench");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench failed\n{stdout}\n{stderr}");
    let targets = stdout
        .lines()
        .filter(|l| l.starts_with("target "))
        .map(parse_target)
        .collect();
    (stdout, targets)
}

#[test]
fn quick_run_reports_every_target_with_positive_numbers() {
    let out = std::env::temp_dir().join(format!("h2s-bench-smoke-{}", std::process::id()));
    let (stdout, targets) = run_bench(&["--quick".as_ref(), "--out".as_ref(), out.as_os_str()]);
    let names: Vec<&str> = targets.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, TARGETS, "{stdout}");
    // The run's last lines are the targets.
    assert!(stdout
        .trim_end()
        .lines()
        .last()
        .unwrap()
        .starts_with("target kernel_round_trips"));

    let value = |name: &str| &targets.iter().find(|t| t.0 == name).unwrap().1;
    assert!(number(value("freeze_ack_p99"), "ns") > 0.0);
    assert!(number(value("sync_memory"), "B") > 0.0);
    assert!(number(value("sync_memory_k10"), "B") > 0.0);
    for name in [
        "pruned_not_slower_wide",
        "pruned_not_slower_deep",
        "initial_sync_vs_rsync",
    ] {
        let v = value(name);
        assert!(
            number(v.split('@').next().unwrap(), "x") > 0.0,
            "{name}: {v}"
        );
    }
    assert!(value("chain_memory_userland").ends_with("B/data-chain"));
    // Measured (a number, not "not-measured"); an unoptimised build's ratio rounds to 0.0%.
    assert!(number(value("initial_sync_bandwidth"), "%") >= 0.0);
    // Not implemented or not measured is never reported as met.
    for (name, value, _, met) in &targets {
        if value.starts_with("not-") {
            assert!(!met, "{name} met without a measurement");
        }
    }

    // Every resync of both shapes scanned chains and took time.
    let resyncs: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" original: "))
        .collect();
    for shape in ["wide", "deep"] {
        assert!(
            resyncs.iter().filter(|l| l.contains(shape)).count() >= 4,
            "{shape}: {stdout}"
        );
    }
    for l in &resyncs {
        let scanned: u64 = l
            .rsplit_once(", ")
            .and_then(|(_, s)| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no scanned count in {l}"));
        assert!(scanned > 0, "{l}");
        assert!(!l.contains(" original: 0ns"), "{l}");
    }
    assert!(
        stdout.lines().filter(|l| l.contains(" rsync: ")).count() >= 4,
        "{stdout}"
    );

    let md = std::fs::read_to_string(out.join("BENCHMARKS.md")).expect("BENCHMARKS.md");
    for (name, ..) in &targets {
        assert!(md.contains(&format!("target {name}: measured")), "{name}");
    }
    for section in [
        "## Machine",
        "## Resync",
        "## Initial sync bandwidth",
        "## Thread-control latency",
        "## Store memory",
        "## Volumes (image files on tmpfs)",
    ] {
        assert!(md.contains(section), "{section}");
    }
    let svg_path: PathBuf = out.join("docs/bench-resync.svg");
    let svg = std::fs::read_to_string(&svg_path).expect("plot");
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bandwidth_alone_prints_its_measurement_and_target() {
    let run = Command::new(env!("CARGO_BIN_EXE_hammer2-synchro-bench"))
        .args(["--bandwidth", "4"])
        .output()
        .expect("run the bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}");
    assert!(stdout.contains("4 MiB in 4 files"), "{stdout}");
    let last = stdout.trim_end().lines().last().unwrap();
    let (name, value, goal, _) = parse_target(last);
    assert_eq!(
        (name.as_str(), goal.as_str()),
        ("initial_sync_bandwidth", ">=50%")
    );
    // A debug build's ratio may round to 0.0%: only its form is checked here.
    assert!(number(&value, "%") >= 0.0, "{last}");
}

#[test]
fn volume_run_reports_blocks_and_its_targets() {
    let args = ["--volume", "300", "--volume-mib", "2"].map(std::ffi::OsStr::new);
    let (stdout, targets) = run_bench(&args);
    // The section's resync row: | N | k | first | its commit wrote | resync | wrote | read | ...
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("| 300 | 10 | "))
        .unwrap_or_else(|| panic!("no resync row:\n{stdout}"))
        .split('|')
        .map(str::trim)
        .collect();
    let blocks = |cell: &str| -> u64 {
        cell.split(" / ")
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no block count in {cell:?}: {row:?}"))
    };
    // The first commit writes every inode; the one after 10 changed files writes a few dozen
    // blocks, not the 300 files' inodes, and reads no tree (the mount keeps the space in use
    // since its first commit); a load reads the whole tree.
    assert!(blocks(row[4]) >= 300, "{row:?}");
    assert!((10..100).contains(&blocks(row[6])), "{row:?}");
    assert!(blocks(row[7]) < 30, "{row:?}");
    assert!(blocks(row[8]) >= 300, "{row:?}");
    assert!(stdout.contains("Memory at N = 300: the cluster of both PFSs "));
    assert!(stdout.contains("; payload cache: peak "));
    let names: Vec<&str> = targets.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "volume_resync_vs_rsync",
            "volume_first_sync_bandwidth",
            "volume_cache_within_budget"
        ]
    );
    assert!(targets[2].1.ends_with("@N=300"), "{stdout}");
    assert!(targets[0].1.ends_with("@N=300,k=10"), "{stdout}");
    assert!(number(&targets[1].1, "%") > 0.0, "{stdout}");
}
