//! `hammer2-synchro-bench [--quick] [--out DIR]`: run the benchmark, write
//! `DIR/BENCHMARKS.md` and `DIR/docs/bench-resync.svg`, print one `target` line per target.

use std::path::PathBuf;
use std::process::ExitCode;

use hammer2_synchro_bench::alloc_count::{self, CountingAlloc};
use hammer2_synchro_bench::{
    bandwidth, cluster_bench, memory, report, results, run, shape, tmpfs, volume_bench,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const USAGE: &str = "\
usage: hammer2-synchro-bench [--quick] [--out DIR] [--max-files N]
       hammer2-synchro-bench --bandwidth MIB
       hammer2-synchro-bench --memory
       hammer2-synchro-bench --first-sync N
       hammer2-synchro-bench --volume N [--volume-mib MIB]

Measures, in one run: resync time and chains visited after k changed leaves in trees of
N = 10^3..10^6 files (wide and deep) on a 3-master + 1-slave cluster; the same divergence
resynced by `rsync -a --delete` on tmpfs; the empty slave's first sync of 64 KiB blocks
against memcpy; the sync's peak memory; sync-thread freeze and stop latency; nodes on
volumes (image files on tmpfs): a resync at N = 10^6, k = 10 against rsync, and a first
sync's bandwidth against cp.

  --quick    small sizes (N = 100, 1000), a few seconds; used by the smoke test
  --out DIR  write BENCHMARKS.md and docs/bench-resync.svg under DIR
             (default: the repository root, or a temp dir with --quick)
  --bandwidth MIB
             only the initial-sync bandwidth measurement, of MIB MiB in 1 MiB files (the full
             run uses 256); prints it and its target line, writes no report
  --memory   only the memory overheads: bytes per chain beyond its payload, bytes of an
             empty cluster of 1..8 nodes, bytes per scan worker; writes no report
  --first-sync N
             only the empty slave's first sync of a wide tree of N small files, and rsync's
             first copy of the same tree on tmpfs; prints both, writes no report
  --volume N only nodes on volumes (image files on tmpfs), the report's Volumes section
             (the full run takes N = 1000000): the resync of k = 10 changed files of a wide
             tree of N files, its commit's blocks read and written, against rsync; and the
             slave's first sync of MIB MiB (default 256) in 1 MiB files against cp of as many
             bytes; prints the section and its target lines, writes no report
  --max-files N  do not attempt trees of more than N files (listed as not measured)
  --kernel-results FILE
             the output of `make bench-kernel` to report kernel_round_trips from
             (default: target/bench-kernel.txt of the repository, none with --quick)

Ends with one line per target:
  target <name>: measured <value> goal <value> met|missed
Exit status: 0 when every measurement ran (targets may be missed), 1 when one failed,
2 on bad usage.";

fn main() -> ExitCode {
    // Read once, before any block is allocated (the allocator itself reads nothing).
    hammer2_synchro::userland::blocks::use_system(
        std::env::var_os("H2S_SYSTEM_BLOCKS").is_some_and(|v| v == "1"),
    );
    let mut quick = false;
    let mut out: Option<PathBuf> = None;
    let mut max_files: Option<usize> = None;
    let mut kernel_results: Option<PathBuf> = None;
    let mut bandwidth_only: Option<usize> = None;
    let mut first_sync_only: Option<usize> = None;
    let mut volume_only: Option<usize> = None;
    let mut volume_mib = run::VOLUME_BYTES >> 20;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => match args.next() {
                Some(d) => out = Some(PathBuf::from(d)),
                None => {
                    eprintln!("--out needs a directory\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--max-files" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => max_files = Some(n),
                None => {
                    eprintln!("--max-files needs a number\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--bandwidth" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => bandwidth_only = Some(n),
                _ => {
                    eprintln!("--bandwidth needs a positive number of MiB\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--memory" => return memory_alone(),
            "--first-sync" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => first_sync_only = Some(n),
                _ => {
                    eprintln!("--first-sync needs a positive number of files\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--volume" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => volume_only = Some(n),
                _ => {
                    eprintln!("--volume needs a positive number of files\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--volume-mib" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => volume_mib = n,
                _ => {
                    eprintln!("--volume-mib needs a positive number of MiB\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--kernel-results" => match args.next() {
                Some(f) => kernel_results = Some(PathBuf::from(f)),
                None => {
                    eprintln!("--kernel-results needs a file\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if !alloc_count::installed() {
        eprintln!("bench: the counting allocator is not active");
        return ExitCode::from(1);
    }
    if let Some(mib) = bandwidth_only {
        return bandwidth_alone(mib);
    }
    if let Some(n) = first_sync_only {
        return first_sync_alone(n);
    }
    if let Some(n) = volume_only {
        return volume_alone(n, volume_mib);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = out.unwrap_or_else(|| {
        if quick {
            std::env::temp_dir().join("hammer2-synchro-bench-quick")
        } else {
            repo.clone()
        }
    });
    let command = format!(
        "cargo run --release -p hammer2-synchro-bench --{}{}",
        if quick { " --quick" } else { "" },
        max_files.map_or(String::new(), |n| format!(" --max-files {n}"))
    );
    let mut cfg = run::Config::new(quick, command);
    if let Some(n) = max_files {
        cfg.max_files = n;
    }
    cfg.kernel_results = kernel_results.or_else(|| {
        let f = repo.join("target/bench-kernel.txt");
        (!quick).then_some(f)
    });
    let results = run::run(&cfg);

    let out = std::fs::create_dir_all(&out)
        .and_then(|()| out.canonicalize())
        .unwrap_or(out);
    let md = out.join("BENCHMARKS.md");
    let svg = out.join(report::PLOT);
    let written = std::fs::create_dir_all(svg.parent().unwrap_or(&out))
        .and_then(|()| std::fs::write(&svg, report::plot(&results)))
        .and_then(|()| std::fs::write(&md, report::markdown(&results)));
    let mut ok = true;
    match written {
        Ok(()) => println!("bench: wrote {} and {}", md.display(), svg.display()),
        Err(e) => {
            eprintln!(
                "bench: cannot write the report under {}: {e}",
                out.display()
            );
            ok = false;
        }
    }
    for row in &results.rows {
        match &row.cluster {
            Err(e) if !results::is_skip(e) => {
                eprintln!(
                    "bench: {} N={}: cluster failed: {e}",
                    row.shape.name(),
                    row.files
                );
                ok = false;
            }
            _ => {}
        }
    }
    if let Err(e) = &results.bandwidth {
        eprintln!("bench: bandwidth failed: {e}");
        ok = false;
    }
    for t in results.targets() {
        println!("{}", t.line());
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `--bandwidth MIB`: the initial-sync bandwidth measurement alone, as the full run makes it.
fn bandwidth_alone(mib: usize) -> ExitCode {
    let cfg = run::Config::new(false, String::new());
    match bandwidth::measure(mib << 20, cfg.bandwidth_file) {
        Ok(b) => {
            println!(
                "bench: {} MiB in {} files: sync best of 3 {:?} (first {:?}; {} chains scanned), memcpy best of 3 {:?}",
                b.bytes >> 20,
                b.files,
                b.sync,
                b.cold,
                b.scanned,
                b.memcpy
            );
            if let Some(f) = b.faults {
                println!(
                    "bench: page faults: {} in the best sync, {} in the first (its new blocks' memory), {} in the timed memcpys (pre-faulted)",
                    f.sync, f.cold, f.memcpy
                );
            }
            println!("{}", results::bandwidth_target(Some(b.ratio())).line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: bandwidth failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--first-sync N`: the slave's first sync of a wide tree of `n` files, and rsync's first copy.
fn first_sync_alone(n: usize) -> ExitCode {
    let tree = shape::Tree::new(shape::Shape::Wide, n);
    match cluster_bench::first_sync(&tree) {
        Ok((t, scanned, usage)) => {
            println!(
                "bench: first sync of {n} files: {:.3} s ({scanned} chains scanned)",
                t.as_secs_f64()
            );
            if let Some(u) = usage {
                println!(
                    "bench: it took {} page faults, CPU {:.2} s user + {:.2} s sys",
                    u.faults,
                    u.user.as_secs_f64(),
                    u.sys.as_secs_f64()
                );
            }
        }
        Err(e) => {
            eprintln!("bench: first sync failed: {e}");
            return ExitCode::from(1);
        }
    }
    let pair = tmpfs::tmpfs_base().and_then(|b| {
        let pair = tmpfs::FsPair::new(&b.path, "first-sync")?;
        pair.build(&tree)?;
        Ok((b, pair))
    });
    match pair.and_then(|(b, p)| Ok((b, p.rsync()?))) {
        Ok((_base, t)) => println!(
            "bench: rsync's first copy of {n} files: {:.3} s",
            t.as_secs_f64()
        ),
        Err(e) => println!("bench: rsync not measured: {e}"),
    }
    ExitCode::SUCCESS
}

/// `--volume N`: nodes on volumes alone, printed as the report's section.
fn volume_alone(n: usize, mib: usize) -> ExitCode {
    let base = match tmpfs::tmpfs_base() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bench: no tmpfs for the images: {e}");
            return ExitCode::from(1);
        }
    };
    println!("bench: images on {}", base.describe());
    let cfg = run::Config::new(false, String::new());
    let v = volume_bench::measure(
        &base.path,
        n,
        results::TARGET_K,
        mib << 20,
        cfg.bandwidth_file,
    );
    let mut md = String::new();
    report::volumes(&mut md, Ok(&v));
    println!("\n{md}");
    for t in results::volume_targets(Ok(&v)) {
        println!("{}", t.line());
    }
    if let Err(e) = &v.resync {
        eprintln!("bench: volume resync failed: {e}");
        return ExitCode::from(1);
    }
    if let Err(e) = &v.bandwidth {
        eprintln!("bench: volume bandwidth failed: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// `--memory`: the memory overheads alone.
fn memory_alone() -> ExitCode {
    if !alloc_count::installed() {
        eprintln!("bench: the counting allocator is not active");
        return ExitCode::from(1);
    }
    match memory::measure(run::MEMORY_FILES) {
        Ok(m) => {
            println!(
                "memory: {} B per empty file (its inode chain in the index, 1 KiB inode included, and its DIRENT chain), {} B per 64 KiB DATA chain beyond its data ({} files each)",
                m.inode_chain, m.data_chain, m.files
            );
            for (i, b) in m.cluster.iter().enumerate() {
                println!("memory: empty cluster of {} nodes: {b} B", i + 1);
            }
            match m.worker() {
                Some(w) => {
                    println!("memory: {w} B per scan worker (a cluster of n nodes runs n(n-1))")
                }
                None => println!("memory: per scan worker not measured"),
            }
            let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../qemu-tests/demo.scn");
            let live = std::fs::read(&demo)
                .map_err(|e| format!("{}: {e}", demo.display()))
                .and_then(|t| memory::scenario_live(&t));
            match live {
                Ok((median, max)) => println!(
                    "memory: qemu-tests/demo.scn (the `make run` demo) in userland: {median} B live (median of 10 ms samples), {max} B at most"
                ),
                Err(e) => {
                    eprintln!("bench: demo.scn: {e}");
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: memory failed: {e}");
            ExitCode::from(1)
        }
    }
}
