//! `sync`: the cluster's sync threads over PFSs on HAMMER2 volumes. Each `IMAGE@LABEL` is
//! loaded into a node store ([`hammer2_synchro::mount`]) in the role its `pfs_type` names;
//! the threads run until every node agrees with the quorum's focus (or, with `--watch`,
//! until Ctrl-C), are stopped with their acknowledgement, and every node whose tree changed
//! is committed to its volume.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hammer2_synchro::cluster::Cluster;
use hammer2_synchro::mount::join::{Join, JoinError};
use hammer2_synchro::mount::payload::DevSource;
use hammer2_synchro::mount::{self, Mounted, WriteAhead};
use hammer2_synchro::store::{CacheStats, Layout, Store};
use hammer2_synchro::thread::{Request, ThreadState};
use hammer2_synchro::volume::{FileDev, Volume};
use std::sync::Arc;

use crate::progress::Progress;
use crate::volume_cmd::{image_label, open_dev_rw, run, Command, Fail};

const SYNC_HELP: &str = "\
USAGE:
    hammer2-synchro sync [--timeout SECS] [--cache-mib N] [--progress] IMAGE@LABEL IMAGE@LABEL ...
    hammer2-synchro sync --watch [--commit-every SECS] IMAGE@LABEL IMAGE@LABEL ...

Run the cluster's sync threads over these PFSs (one per volume, at most 8) until every node
agrees with the masters' quorum, then commit every volume that changed.
Each node's role is its PFS's pfs_type (master, slave, soft-master, soft-slave, cache); the
PFSs must share one cluster id (newfs --clid). A volume is written only if its PFS changed,
as one copy-on-write commit (nothing committed changes before its new volume header is
written). A commit keeps in place every block that did not change: data blocks, inodes and
indirect blocks alike; it writes the changed files' blocks and inodes, the indirect blocks
above them, the PFS root, the super-root and a volume header. Each load, the convergence
and each commit are reported on stderr; a commit's line reads

    sync: IMAGE@LABEL: committed, mirror_tid TID (SECS, W blocks / KiB written, R blocks / KiB read)

W: device writes of that commit (new blocks, freemap, header); R: device reads it made: the
blocks last committed on the paths it changes, and, to find the space in use, in the first
commit after a load the trees that every valid volume header copy reaches (they grow with
the volume's metadata); later commits of the same run read only the freemap they rewrite.
Data blocks read on demand (by the sync, or by a commit copying one) are not in R: each
volume's are in its data cache line at the end (blocks / KiB read on demand).

OPTIONS:
    --timeout SECS       give up (status 1, nothing more committed) when not converged after
                         SECS (default 600; not with --watch)
    --watch              keep the threads running, with a live status line on stderr every
                         second (per node: role, thread state, in sync or syncing, the
                         mirror_tid of its volume's last commit, its last modify TID,
                         passes), until Ctrl-C (or SIGTERM); then every thread is stopped
                         (each acknowledges) and every changed volume committed
    --commit-every SECS  with --watch: also commit every changed volume every SECS seconds
                         (default 30), the threads frozen meanwhile, so a crash loses at
                         most that much. A volume that cannot be written (full, I/O error)
                         is reported and keeps its last commit; the others are written, the
                         watch goes on and tries it again at the next commit; the exit
                         status is then 1
    --cache-mib N        cache at most N MiB (N >= 1, default 256) of each volume's clean
                         file data and inodes: a load reads every inode, directory entry
                         and chain header but keeps only the entries and headers, leaving
                         data blocks and inodes on the volume; they are read (check code
                         verified) when the sync compares or copies them, and cached
                         within N MiB per volume (CLOCK: a block read again is kept over
                         one read once). The entries and headers themselves are kept near
                         N/4 MiB per volume (at least 1.6 MiB): clean ranges of a volume's
                         tables leave memory, while it loads and at each commit, and are
                         read back from the volume when the sync needs them; a volume's
                         sync holds once any volume's pass twice that, until the commit
                         that lets them go. What a sync changed is not in those N MiB: it
                         stays in memory until committed, and once a volume holds more
                         than N MiB of it, every changed volume is committed (threads
                         frozen meanwhile, as --commit-every does), so a volume larger
                         than memory syncs. A volume's sync holds once it has more than
                         2N MiB of it, until that commit: changed data stay within 2N MiB
                         and one data block (64 KiB) per volume. A data
                         block that cannot be read (a device error, or damaged: its check
                         code fails) is reported when a read of it fails (volume, offset
                         and size of the block) and counted in the status line; the files
                         that need it cannot sync, so the sync does not converge and ends
                         at --timeout (status 1) naming the failed reads
    --progress           show progress on stderr even when it is not a terminal (on a
                         terminal it is shown anyway; never on stdout)
    --stall-reads-us N   for tests: delay every read the sync threads make of a node by N
                         microseconds (at most 1000000), so a sync lasts long enough to be
                         watched or cut

SECS is a number of seconds, maybe with a fraction (0.5).

EXAMPLE:
    hammer2-synchro sync a.img@DATA b.img@DATA c.img@DATA
    hammer2-synchro sync --watch --commit-every 10 a.img@DATA b.img@DATA

EXIT STATUS: 0 converged (or stopped by Ctrl-C) and committed; 1 a volume could not be
read or written (at any commit; every other volume is still committed), the nodes did not
converge, or the PFSs are not one cluster; 2 bad usage or an IMAGE could not be opened.
";

/// The `sync` command, or `None` for another command.
pub fn dispatch(cmd: &str, args: &[String]) -> Option<ExitCode> {
    let f: Command = match cmd {
        "sync" => sync_cmd,
        _ => return None,
    };
    Some(run(cmd, SYNC_HELP, f, args))
}

/// Set by SIGINT or SIGTERM (`--watch` ends at Ctrl-C, or when a service manager stops it).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// How often the threads poll when idle, and the command looks at them.
const POLL: Duration = Duration::from_millis(50);

/// One node: its spec and what the loop reports of it. Its volume and mount are kept apart
/// (`volumes`, `mounts` in `sync_cmd`): a node's write-ahead borrows its volume while the
/// loop reports on the nodes.
struct Node {
    spec: String,
    /// The mirror_tid of the volume's last committed header.
    committed: u64,
    /// The failed data reads last reported: their count and the last block's `data_off`.
    read_errors_said: (u64, u64),
}

struct Args {
    watch: bool,
    timeout: Duration,
    commit_every: Duration,
    stall: Option<Duration>,
    /// Bytes of clean file data each volume's store may cache.
    cache: usize,
    specs: Vec<String>,
}

/// The default `--cache-mib`.
const CACHE_MIB: usize = 256;

/// The bytes of chains in memory each volume's store keeps near, for `--cache-mib` of
/// `cache` bytes (a store raises it to its least, [`Store::set_chain_budget`]).
fn chain_budget(cache: usize) -> usize {
    cache / 4
}

/// The default `--commit-every` of `--watch`.
const COMMIT_EVERY: Duration = Duration::from_secs(30);

/// `SECS` of option `opt`: a number of seconds above 0, maybe with a fraction (`0.5`).
fn secs(opt: &str, v: Option<&String>) -> Result<Duration, Fail> {
    let v = v.ok_or_else(|| Fail::Usage(format!("{opt} needs SECS")))?;
    v.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Fail::Usage(format!("{opt}: '{v}' is not SECS > 0")))
}

fn parse(args: &[String]) -> Result<Args, Fail> {
    let mut a = Args {
        watch: false,
        timeout: Duration::from_secs(600),
        commit_every: COMMIT_EVERY,
        stall: None,
        cache: CACHE_MIB << 20,
        specs: Vec::new(),
    };
    let mut it = args.iter();
    let mut every_given = false;
    while let Some(w) = it.next() {
        match w.as_str() {
            "--watch" => a.watch = true,
            "--timeout" => a.timeout = secs(w, it.next())?,
            "--commit-every" => {
                a.commit_every = secs(w, it.next())?;
                every_given = true;
            }
            "--cache-mib" => {
                let v = it.next();
                a.cache = v
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|&n| n > 0)
                    .and_then(|n| n.checked_mul(1 << 20))
                    .ok_or_else(|| {
                        Fail::Usage(format!(
                            "--cache-mib: '{}' is not a number of MiB >= 1",
                            v.map_or("", |v| v.as_str())
                        ))
                    })?;
            }
            "--stall-reads-us" => {
                let v = it.next();
                let us = v
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|&n| n <= 1_000_000)
                    .ok_or_else(|| {
                        Fail::Usage(format!(
                            "--stall-reads-us: '{}' is not N in 0..=1000000",
                            v.map_or("", |v| v.as_str())
                        ))
                    })?;
                a.stall = (us > 0).then(|| Duration::from_micros(us));
            }
            o if o.starts_with('-') => return Err(Fail::Usage(format!("unknown option '{o}'"))),
            spec => a.specs.push(spec.to_string()),
        }
    }
    if every_given && !a.watch {
        return Err(Fail::Usage("--commit-every is for --watch".into()));
    }
    if a.specs.is_empty() || a.specs.len() > hammer2_synchro::role::MAX_NODES {
        return Err(Fail::Usage("expected 1 to 8 IMAGE@LABEL".into()));
    }
    Ok(a)
}

fn sync_cmd(args: &[String]) -> Result<(), Fail> {
    let a = parse(args)?;
    let host = hammer2_synchro::userland::host();
    // Memory of freed data blocks kept for the next ones: no more than a volume's cache (in
    // whole 2 MiB regions, at least one).
    hammer2_synchro::userland::blocks::set_retain(a.cache);
    let mut nodes = Vec::new();
    let mut volumes: Vec<Vol> = Vec::new();
    let mut mounts: Vec<Mounted> = Vec::new();
    let mut stores: Vec<Store> = Vec::new();
    let mut join = Join::new();
    let mut images = HashSet::new();
    for spec in &a.specs {
        let (image, label) =
            image_label(spec).ok_or_else(|| Fail::Usage(format!("'{spec}' is not IMAGE@LABEL")))?;
        let canon =
            std::fs::canonicalize(image).map_err(|e| Fail::Open(format!("{image}: {e}")))?;
        if !images.insert(canon) {
            return Err(Fail::Usage(format!(
                "{image} given twice: one PFS per volume (each node commits its own volume)"
            )));
        }
        let dev = Arc::new(open_dev_rw(image)?);
        let vol = Volume::open(Arc::clone(&dev)).map_err(|e| Fail::Run(format!("{image}: {e}")))?;
        let t0 = Instant::now();
        let mut progress = Progress::new("sync");
        // File data is read on demand (by the sync threads) through the volume's device,
        // shared: its reads are positioned (pread), so they never disturb the volume's.
        let source = Box::new(DevSource::new(dev, vol.header()));
        let budgets = (a.cache, chain_budget(a.cache));
        let (mut store, mounted) =
            mount::load_bounded(host, &vol, label.as_bytes(), source, budgets, &mut |n| {
                progress.tick(|| format!("loading {spec}: {n} chains"))
            })
            .map_err(|e| Fail::Run(format!("{spec}: load: {e}")))?;
        // Changed data past the budget wakes the loop below at once (it commits then); past
        // twice the budget the node's sync passes hold until that commit.
        let main = std::thread::current();
        store.set_pinned_alarm(Box::new(move || main.unpark()));
        store.set_pinned_limit(a.cache.saturating_mul(2));
        drop(progress);
        let role = join.add(&store).map_err(|e| join_fail(&e, &a.specs))?;
        errln!(
            "sync: loaded {spec} as {}: {} chains in memory, root tid {:#x} ({:.1}s)",
            role.name(),
            store.chain_count(),
            mounted.pfs_bref.modify_tid,
            t0.elapsed().as_secs_f64()
        );
        stores.push(store);
        nodes.push(Node {
            read_errors_said: (0, 0),
            spec: spec.clone(),
            committed: vol.header().mirror_tid,
        });
        volumes.push(Some(vol));
        mounts.push(mounted);
    }
    join.reconcile(&stores, &mut |i, j, n| {
        errln!(
            "sync: {}: {n} chains differ from {} under the same TID: taken from the masters",
            nodes[i].spec,
            nodes[j].spec
        );
    })
    .map_err(|e| join_fail(&e, &a.specs))?;
    let cluster = Cluster::from_stores(host, join.roles(), stores, Layout::Index)
        .map_err(|e| Fail::Run(format!("cluster: {e}")))?;
    cluster.set_thread_idle_poll(POLL);
    for i in 0..cluster.len() {
        cluster.set_stall(i, a.stall);
    }
    if a.watch {
        // SAFETY: `on_stop_signal` only stores to an atomic, which is async-signal-safe.
        unsafe {
            let handler = on_stop_signal as *const () as libc::sighandler_t;
            libc::signal(libc::SIGINT, handler);
            libc::signal(libc::SIGTERM, handler);
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        cluster
            .as_ref()
            .thread_start(i)
            .map_err(|e| Fail::Run(format!("{}: thread: {e}", n.spec)))?;
    }
    let t0 = Instant::now();
    let mut last = Instant::now();
    let mut last_commit = Instant::now();
    let mut converged_at = None;
    // Volumes a periodic commit could not write (each tried again at the next commit).
    let mut failed_commits = 0;
    // Commits made because changed data passed the cache budget, those that failed, and
    // when the last one failed or wrote nothing.
    let mut writebacks = 0;
    let mut failed_writebacks = 0;
    let mut idle_writeback: Option<Instant> = None;
    // The status once a second: the live status line of --watch, else progress.
    let mut progress = if a.watch {
        Progress::always("sync")
    } else {
        Progress::new("sync")
    };
    // Each turn of this loop runs the threads until something is to be committed, with
    // each changed node's new DATA blocks written ahead of its commit meanwhile (see
    // `write_ahead`), then commits in the transactions those writes opened.
    let c = loop {
        let mut slots: Vec<Slot<'_>> = mounts.iter_mut().map(Slot::Idle).collect();
        let why = loop {
            let behind: Vec<usize> = (0..cluster.len())
                .filter(|&i| !cluster.in_sync(i))
                .collect();
            if behind.is_empty() && converged_at.is_none() {
                converged_at = Some(t0.elapsed());
                progress.end_line();
                errln!("sync: converged in {:.1}s", t0.elapsed().as_secs_f64());
            } else if !behind.is_empty() {
                converged_at = None;
            }
            if !a.watch && converged_at.is_some() {
                break Why::Done;
            }
            if a.watch && INTERRUPTED.load(Ordering::SeqCst) {
                progress.end_line();
                errln!("sync: interrupted: stopping the sync threads");
                break Why::Done;
            }
            if !a.watch && t0.elapsed() > a.timeout {
                drop(progress);
                stop_all(&cluster, &nodes);
                report_caches(&cluster, &nodes);
                let names: Vec<&str> = behind.iter().map(|&i| nodes[i].spec.as_str()).collect();
                return Err(Fail::Run(format!(
                    "not converged after {}s (behind: {}){}; {}",
                    a.timeout.as_secs_f64(),
                    names.join(", "),
                    unreadable(&cluster, &nodes),
                    match writebacks {
                        0 => "nothing committed".to_string(),
                        n => format!("nothing more committed (after {n} write-back commits)"),
                    }
                )));
            }
            if say_read_errors(&cluster, &mut nodes) {
                progress.end_line();
            }
            let gap = idle_writeback.is_none_or(|t| t.elapsed() >= WRITEBACK_GAP);
            let data_over = gap && over_budget(&cluster, a.cache);
            // Chains leave memory only once what changed is committed: every changed volume
            // is.
            if data_over || (gap && chains_over(&cluster)) {
                break Why::Writeback { data_over };
            }
            if a.watch && last_commit.elapsed() >= a.commit_every {
                break Why::Periodic;
            }
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                progress.tick(|| status(&cluster, &nodes, &behind, t0.elapsed()));
            }
            if !write_ahead(&cluster, &nodes, &volumes, &mut slots) {
                // Woken early by a store whose changed data passed the budget.
                std::thread::park_timeout(POLL);
            }
        };
        progress.end_line();
        let c = match why {
            Why::Done => {
                drop(progress);
                stop_all(&cluster, &nodes);
                break commit_changed(&cluster, &mut nodes, &volumes, slots, true);
            }
            Why::Writeback { data_over } => {
                match data_over {
                    true => errln!(
                        "sync: changed data past the cache budget: committing every changed \
                         volume"
                    ),
                    false => errln!(
                        "sync: chains past the cache budget: committing every changed volume, \
                         clean chains leave memory"
                    ),
                }
                let c = commit_frozen(&cluster, &mut nodes, &volumes, slots)?;
                if c.failed > 0 {
                    errln!(
                        "sync: write-back: {} of {} volumes written, {} failed (each keeps its \
                         last commit; tried again later)",
                        c.written,
                        nodes.len(),
                        c.failed
                    );
                }
                failed_writebacks += c.failed;
                writebacks += 1;
                // Not retried at once when it failed or found nothing to write.
                idle_writeback = (c.failed > 0 || c.written == 0).then(Instant::now);
                c
            }
            Why::Periodic => {
                let c = commit_frozen(&cluster, &mut nodes, &volumes, slots)?;
                if c.failed > 0 {
                    errln!(
                        "sync: periodic commit: {} of {} volumes written, {} failed (each keeps \
                         its last commit; tried again at the next commit)",
                        c.written,
                        nodes.len(),
                        c.failed
                    );
                } else {
                    errln!(
                        "sync: periodic commit: {} of {} volumes written",
                        c.written,
                        nodes.len()
                    );
                }
                failed_commits += c.failed;
                last_commit = Instant::now();
                c
            }
        };
        reopen(&mut volumes, &nodes, &c.committed);
    };
    report_caches(&cluster, &nodes);
    errln!(
        "sync: done: {} of {} volumes written",
        c.written,
        nodes.len()
    );
    if c.failed > 0 {
        return Err(Fail::Run(format!(
            "{} volumes could not be written (see above): each keeps its last commit",
            c.failed
        )));
    }
    if failed_commits + failed_writebacks > 0 {
        let mut what = Vec::new();
        if failed_commits > 0 {
            what.push(format!("{failed_commits} periodic volume commits"));
        }
        if failed_writebacks > 0 {
            what.push(format!("{failed_writebacks} write-back volume commits"));
        }
        return Err(Fail::Run(format!(
            "{} failed (see above); the last commit wrote every changed volume",
            what.join(" and ")
        )));
    }
    Ok(())
}

/// Why the loop of `sync_cmd` stops running the threads for a while.
enum Why {
    /// Converged (or interrupted): stop every thread and commit.
    Done,
    /// A node's changed data (`data_over`) or chains passed the budget: commit, and let
    /// clean chains leave memory.
    Writeback { data_over: bool },
    /// `--watch`'s periodic commit.
    Periodic,
}

/// A node's mount during one turn of the loop.
enum Slot<'a> {
    /// Its store has not changed this turn.
    Idle(&'a mut Mounted),
    /// Taken by the write-ahead of its next commit (boxed: a transaction is large).
    Ahead(Box<WriteAhead<'a, Arc<FileDev>>>),
    /// Its write-ahead failed this turn: the commit writes the blocks.
    Off(&'a mut Mounted),
    /// While a slot changes.
    Gone,
}

/// A node's volume: none after a reopen failed.
type Vol = Option<Volume<Arc<FileDev>>>;

/// Journal entries of a node looked at per turn of the loop (and at most
/// [`mount::PLACE_BYTES`] written), so the loop still reports and commits on time.
const AHEAD_STEP: usize = 256;

/// Write the new DATA blocks of every changed node ahead of its commit
/// ([`mount::write_ahead`]): a first sync's commit is then its tables and header, and the
/// volume's writes run while the threads read and verify. A node's write-ahead takes its
/// mount once its store changed; one whose writes fail is given up until the next commit
/// (which writes the blocks). Whether any node had something new to look at.
fn write_ahead<'a>(
    cluster: &'a Cluster,
    nodes: &[Node],
    volumes: &'a [Vol],
    slots: &mut [Slot<'a>],
) -> bool {
    let mut busy = false;
    for (i, (n, slot)) in nodes.iter().zip(slots.iter_mut()).enumerate() {
        let (Ok(store), Some(Some(vol))) = (cluster.store(i), volumes.get(i)) else {
            continue;
        };
        if let Slot::Idle(m) = slot {
            if !m.changed(store).unwrap_or(false) {
                continue;
            }
            if let Slot::Idle(m) = std::mem::replace(slot, Slot::Gone) {
                *slot = Slot::Ahead(Box::new(mount::write_ahead(vol, store, m)));
            }
        }
        let Slot::Ahead(wa) = slot else {
            continue;
        };
        match wa.place(AHEAD_STEP) {
            Ok(looked) => busy |= looked > 0,
            Err(e) => {
                errln!(
                    "sync: {}: writing data ahead of the commit failed: {e} (the commit \
                     writes them)",
                    n.spec
                );
                if let Slot::Ahead(wa) = std::mem::replace(slot, Slot::Gone) {
                    *slot = Slot::Off(wa.abandon());
                }
            }
        }
    }
    busy
}

/// Reopen the volume of each node in `committed` (a commit makes the open header stale);
/// one that does not reopen is reported, and its next commit fails.
fn reopen(volumes: &mut [Vol], nodes: &[Node], committed: &[usize]) {
    for &i in committed {
        let (Some(slot), Some(n)) = (volumes.get_mut(i), nodes.get(i)) else {
            continue;
        };
        if let Some(vol) = slot.take() {
            match Volume::open(vol.into_dev()) {
                Ok(v) => *slot = Some(v),
                Err(e) => errln!("sync: {}: reopen after commit: {e}", n.spec),
            }
        }
    }
}

/// What a commit of every changed node did.
struct Commits {
    /// Volumes written.
    written: usize,
    /// Volumes that could not be written (each reported; it keeps its last commit).
    failed: usize,
    /// The nodes committed (their volumes to reopen).
    committed: Vec<usize>,
}

/// Commit every changed node with every running thread frozen (a pass must not change a
/// tree while it is written out), unfrozen after. Only a thread that cannot be frozen is an
/// error (then every thread is stopped); a volume that cannot be written is counted.
fn commit_frozen(
    cluster: &Cluster,
    nodes: &mut [Node],
    volumes: &[Vol],
    slots: Vec<Slot<'_>>,
) -> Result<Commits, Fail> {
    let specs: Vec<String> = nodes.iter().map(|n| n.spec.clone()).collect();
    let mut commits = None;
    let mut slots = Some(slots);
    frozen(cluster, &specs, &mut || {
        if let Some(slots) = slots.take() {
            commits = Some(commit_changed(cluster, nodes, volumes, slots, false));
        }
        evict_all(cluster, nodes);
    })?;
    commits.ok_or_else(|| Fail::Run("sync: the commit did not run".into()))
}

/// Run `f` with every running thread frozen, unfrozen after. Only a thread that cannot be
/// frozen is an error (then every thread is stopped, and `f` does not run).
fn frozen(cluster: &Cluster, specs: &[String], f: &mut dyn FnMut()) -> Result<(), Fail> {
    let mut held = Vec::new();
    let mut r = Ok(());
    for (i, spec) in specs.iter().enumerate() {
        if cluster.thread_state(i) != ThreadState::Running {
            continue;
        }
        match cluster.thread_request(i, Request::Freeze) {
            Ok(_) => held.push(i),
            Err(e) => {
                r = Err(Fail::Run(format!("{spec}: freeze: {e}")));
                break;
            }
        }
    }
    if r.is_ok() {
        f();
    }
    for i in held {
        if let Err(e) = cluster.thread_request(i, Request::Unfreeze) {
            errln!("sync: {}: unfreeze: {e}", specs[i]);
        }
    }
    if r.is_err() {
        stop_specs(cluster, specs);
    }
    r
}

/// Commit every node whose tree differs from its volume's, each in the transaction of its
/// write-ahead if it has one. Every node is tried: one that cannot be written (its volume
/// full, an I/O error) is reported and the others are still committed. `say_unchanged`:
/// name each node left alone (at the end; a periodic commit stays quiet about them).
fn commit_changed(
    cluster: &Cluster,
    nodes: &mut [Node],
    volumes: &[Vol],
    slots: Vec<Slot<'_>>,
    say_unchanged: bool,
) -> Commits {
    let mut c = Commits {
        written: 0,
        failed: 0,
        committed: Vec::new(),
    };
    let each = nodes.iter_mut().zip(volumes).zip(slots);
    for (i, ((n, vol), slot)) in each.enumerate() {
        match commit_node(cluster, i, n, vol.as_ref(), slot, say_unchanged) {
            Ok(true) => {
                c.written += 1;
                c.committed.push(i);
            }
            Ok(false) => {}
            Err(e) => {
                errln!("sync: {e}");
                c.failed += 1;
            }
        }
    }
    c
}

/// Commit node `i` if its tree changed, in its write-ahead's transaction if `slot` holds
/// one: whether it was written.
fn commit_node(
    cluster: &Cluster,
    i: usize,
    n: &mut Node,
    vol: Option<&Volume<Arc<FileDev>>>,
    slot: Slot<'_>,
    say_unchanged: bool,
) -> Result<bool, String> {
    let spec = &n.spec;
    let store = cluster.store(i).map_err(|e| format!("{spec}: {e}"))?;
    let (m, ahead) = match slot {
        Slot::Idle(m) | Slot::Off(m) => (Some(m), None),
        Slot::Ahead(wa) => (None, Some(wa)),
        Slot::Gone => return Err(format!("{spec}: not committed: its mount was lost")),
    };
    let changed = match (&m, &ahead) {
        (Some(m), _) => m.changed(store),
        (_, Some(wa)) => wa.mounted().changed(store),
        _ => Ok(false),
    };
    if !changed.map_err(|e| format!("{spec}: {e}"))? {
        if let Some(wa) = ahead {
            wa.abandon();
        }
        if say_unchanged {
            errln!("sync: {spec}: unchanged, not written");
        }
        return Ok(false);
    }
    let vol =
        vol.ok_or_else(|| format!("{spec}: not committed: its volume could not be reopened"))?;
    let t = Instant::now();
    let mut progress = Progress::new("sync");
    let mut tick = |k| progress.tick(|| format!("committing {spec}: {k} chains"));
    let (m, ahead, r) = match (m, ahead) {
        (_, Some(wa)) => {
            let written = wa.written();
            let (m, r) = mount::commit_ahead(*wa, &mut tick);
            let r = match r {
                // The blocks written ahead held space a commit as usual may not need: they
                // are free again.
                Err(hammer2_synchro::Error::NoSpace) => {
                    errln!(
                        "sync: {spec}: no space with the data written ahead: committing \
                         without them"
                    );
                    mount::commit_with_progress(vol, store, m, &mut tick)
                }
                r => r,
            };
            (m, Some(written), r)
        }
        (Some(m), None) => {
            let r = mount::commit_with_progress(vol, store, m, &mut tick);
            (m, None, r)
        }
        (None, None) => return Err(format!("{spec}: not committed: its mount was lost")),
    };
    let h = r.map_err(|e| format!("{spec}: commit: {e} (the volume keeps its last commit)"))?;
    drop(progress);
    let io = m.io();
    errln!(
        "sync: {}: committed, mirror_tid {:#x} ({:.1}s, {} blocks / {} KiB written, {} blocks / {} KiB read{})",
        spec,
        h.mirror_tid,
        t.elapsed().as_secs_f64(),
        io.commit.blocks_written,
        io.commit.bytes_written / 1024,
        io.commit.blocks_read,
        io.commit.bytes_read / 1024,
        match ahead {
            Some((k, bytes)) if k > 0 => format!(
                "; before it, {k} data blocks / {} KiB written ahead, {} of them taken",
                bytes / 1024,
                io.ahead
            ),
            _ => String::new(),
        }
    );
    n.committed = h.mirror_tid;
    Ok(true)
}

/// The least time after a write-back commit that failed, or wrote nothing, before the next
/// (a volume that cannot be written, or changed data no commit can release, is not
/// committed again in a loop).
const WRITEBACK_GAP: Duration = Duration::from_secs(1);

/// Whether some node holds more changed data than `budget` (pinned until its commit).
fn over_budget(cluster: &Cluster, budget: usize) -> bool {
    (0..cluster.len()).any(|i| {
        cluster
            .store(i)
            .ok()
            .and_then(Store::cache_stats)
            .is_some_and(|st| st.pinned > budget)
    })
}

/// Whether some node holds more chains in memory than its chain budget.
fn chains_over(cluster: &Cluster) -> bool {
    (0..cluster.len()).any(|i| cluster.store(i).is_ok_and(Store::chains_over))
}

/// Let the clean chains of every node past its chain budget leave memory, down to half of
/// it, with every thread frozen or stopped (a chain read back gets a new id). A node with
/// changes no commit could write keeps its chains (`Busy`).
fn evict_all(cluster: &Cluster, nodes: &[Node]) {
    for (i, n) in nodes.iter().enumerate() {
        let Ok(store) = cluster.store(i) else {
            continue;
        };
        if !store.chains_over() {
            continue;
        }
        match store.evict_to(store.chain_budget() / 2) {
            Ok(_) | Err(hammer2_synchro::Error::Busy) => {}
            Err(e) => errln!("sync: {}: chains could not leave memory: {e}", n.spec),
        }
    }
}

/// One line per node: what its payload cache held at most, of its budget, and read.
fn report_caches(cluster: &Cluster, nodes: &[Node]) {
    for (i, n) in nodes.iter().enumerate() {
        if let Some(st) = cluster.store(i).ok().and_then(Store::cache_stats) {
            if st.read_errors > 0 {
                errln!("sync: {}: {}", n.spec, failed_reads(&st));
            }
            errln!(
                "sync: {}: data cache: peak {} KiB of {} KiB, {} blocks / {} KiB read on demand, \
                 changed data held at most {} KiB",
                n.spec,
                st.peak / 1024,
                st.budget / 1024,
                st.reads,
                st.read_bytes / 1024,
                st.pinned_peak / 1024
            );
        }
    }
}

/// The failed data reads of a store's cache `st`: how many, and the last one's block.
fn failed_reads(st: &CacheStats) -> String {
    let (off, radix) = (st.last_error & !0x3f, st.last_error & 0x3f);
    format!(
        "{} data block reads failed (I/O error or damaged block), the last of the block at \
         offset {off:#x} ({} bytes)",
        st.read_errors,
        1u64 << radix
    )
}

/// Report each node's failed data reads once the block last failing changes: whether a
/// line was printed.
fn say_read_errors(cluster: &Cluster, nodes: &mut [Node]) -> bool {
    let mut said = false;
    for (i, n) in nodes.iter_mut().enumerate() {
        let Some(st) = cluster.store(i).ok().and_then(Store::cache_stats) else {
            continue;
        };
        if st.read_errors > n.read_errors_said.0 && st.last_error != n.read_errors_said.1 {
            errln!(
                "sync: {}: {}: the files that need it cannot sync",
                n.spec,
                failed_reads(&st)
            );
            n.read_errors_said = (st.read_errors, st.last_error);
            said = true;
        }
    }
    said
}

/// The nodes whose data reads failed, for the timeout's message ("" when none).
fn unreadable(cluster: &Cluster, nodes: &[Node]) -> String {
    let mut s = String::new();
    for (i, n) in nodes.iter().enumerate() {
        if let Some(st) = cluster.store(i).ok().and_then(Store::cache_stats) {
            if st.read_errors > 0 {
                s.push_str(&format!("; {}: {}", n.spec, failed_reads(&st)));
            }
        }
    }
    s
}

/// The CLI's failure for a [`JoinError`], each node named by its `IMAGE@LABEL` (nodes join in
/// the order of `specs`).
fn join_fail(e: &JoinError, specs: &[String]) -> Fail {
    let names: Vec<&str> = specs.iter().map(String::as_str).collect();
    Fail::Run(e.named(&names).to_string())
}

/// Stop every node's thread; each request returns once the thread acknowledged it.
fn stop_all(cluster: &Cluster, nodes: &[Node]) {
    let specs: Vec<String> = nodes.iter().map(|n| n.spec.clone()).collect();
    stop_specs(cluster, &specs);
}

/// [`stop_all`] of the nodes named `specs`.
fn stop_specs(cluster: &Cluster, specs: &[String]) {
    for (i, spec) in specs.iter().enumerate() {
        if let Err(e) = cluster.thread_request(i, Request::Stop) {
            errln!("sync: {spec}: stop: {e}");
        }
    }
}

/// One status line: per node its role, thread state, whether it agrees with the focus, the
/// mirror_tid its volume was last committed at, the TID its root was last modified at, and
/// its passes.
fn status(cluster: &Cluster, nodes: &[Node], behind: &[usize], at: Duration) -> String {
    let mut line = format!("{:>6.1}s", at.as_secs_f64());
    for (i, n) in nodes.iter().enumerate() {
        let modified = cluster
            .store(i)
            .and_then(|s| s.bref(s.root()))
            .map_or(0, |b| b.modify_tid);
        let st = cluster.stats(i);
        let errors = cluster
            .store(i)
            .ok()
            .and_then(Store::cache_stats)
            .map_or(0, |c| c.read_errors);
        line.push_str(&format!(
            " | {} {} {} {} committed {:#x} tid {modified:#x} passes {}{}",
            n.spec,
            cluster.role(i).name(),
            cluster.thread_state(i).name(),
            if behind.contains(&i) {
                "syncing"
            } else {
                "in sync"
            },
            n.committed,
            st.passes,
            if errors > 0 {
                format!(" read errors {errors}")
            } else {
                String::new()
            }
        ));
    }
    line
}
