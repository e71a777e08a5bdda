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
use hammer2_synchro::mount::{self, Mounted};
use hammer2_synchro::store::{Layout, Store};
use hammer2_synchro::thread::Request;
use hammer2_synchro::volume::Volume;

use crate::volume_cmd::{image_label, run, Command, Fail, FileDev};

const SYNC_HELP: &str = "\
hammer2-synchro sync [--watch] [--timeout SECS] IMAGE@LABEL IMAGE@LABEL ...
                                     run the cluster's sync threads over these PFSs (one per
                                     volume, at most 8) until every node agrees with the
                                     masters' quorum, then commit every volume that changed
Each node's role is its PFS's pfs_type (master, slave, soft-master, soft-slave, cache); the
PFSs must share one cluster id (newfs --clid). Progress on stderr. A volume is written only
if its PFS changed, as one copy-on-write commit (nothing committed changes before its new
volume header is written); data blocks it already holds are kept in place.
--watch: keep the threads running, with a status line every second, until Ctrl-C; then
every thread is stopped (each acknowledges) and every changed volume committed.
--timeout: give up (status 1, nothing committed) when not converged after SECS (default
600; not with --watch).
EXIT STATUS: 0 converged (or stopped by Ctrl-C) and committed; 1 a volume could not be
read or written, the nodes did not converge, or the PFSs are not one cluster; 2 bad usage
or an IMAGE could not be opened.
";

/// The `sync` command, or `None` for another command.
pub fn dispatch(cmd: &str, args: &[String]) -> Option<ExitCode> {
    let f: Command = match cmd {
        "sync" => sync_cmd,
        _ => return None,
    };
    Some(run(cmd, SYNC_HELP, f, args))
}

/// Set by SIGINT (`--watch` ends at Ctrl-C).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// How often the threads poll when idle, and the command looks at them.
const POLL: Duration = Duration::from_millis(50);

/// One node: its spec, volume and what was loaded from it.
struct Node {
    spec: String,
    vol: Option<Volume<FileDev>>,
    mounted: Mounted,
}

struct Args {
    watch: bool,
    timeout: Duration,
    specs: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args, Fail> {
    let mut a = Args {
        watch: false,
        timeout: Duration::from_secs(600),
        specs: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "--watch" => a.watch = true,
            "--timeout" => {
                let v = it
                    .next()
                    .ok_or(Fail::Usage("--timeout needs SECS".into()))?;
                let s: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| Fail::Usage(format!("--timeout: '{v}' is not SECS > 0")))?;
                a.timeout = Duration::from_secs(s);
            }
            o if o.starts_with('-') => return Err(Fail::Usage(format!("unknown option '{o}'"))),
            spec => a.specs.push(spec.to_string()),
        }
    }
    if a.specs.is_empty() || a.specs.len() > hammer2_synchro::role::MAX_NODES {
        return Err(Fail::Usage("expected 1 to 8 IMAGE@LABEL".into()));
    }
    Ok(a)
}

fn sync_cmd(args: &[String]) -> Result<(), Fail> {
    let a = parse(args)?;
    let host = hammer2_synchro::userland::host();
    let mut nodes = Vec::new();
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
        let vol = Volume::open(FileDev::open_rw(image)?)
            .map_err(|e| Fail::Run(format!("{image}: {e}")))?;
        let t0 = Instant::now();
        let (store, mounted) = mount::load(host, &vol, label.as_bytes())
            .map_err(|e| Fail::Run(format!("{spec}: load: {e}")))?;
        let role = join.add(&store).map_err(|e| join_fail(&e, &a.specs))?;
        errln!(
            "sync: loaded {spec} as {}: {} chains, root tid {:#x} ({:.1}s)",
            role.name(),
            store.chain_count(),
            mounted.pfs_bref.modify_tid,
            t0.elapsed().as_secs_f64()
        );
        stores.push(store);
        nodes.push(Node {
            spec: spec.clone(),
            vol: Some(vol),
            mounted,
        });
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
    if a.watch {
        // SAFETY: `on_sigint` only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
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
    let mut converged_at = None;
    loop {
        let behind: Vec<usize> = (0..cluster.len())
            .filter(|&i| !cluster.in_sync(i))
            .collect();
        if behind.is_empty() && converged_at.is_none() {
            converged_at = Some(t0.elapsed());
            errln!("sync: converged in {:.1}s", t0.elapsed().as_secs_f64());
        } else if !behind.is_empty() {
            converged_at = None;
        }
        if !a.watch && converged_at.is_some() {
            break;
        }
        if a.watch && INTERRUPTED.load(Ordering::SeqCst) {
            errln!("sync: interrupted: stopping the sync threads");
            break;
        }
        if !a.watch && t0.elapsed() > a.timeout {
            stop_all(&cluster, &nodes);
            let names: Vec<&str> = behind.iter().map(|&i| nodes[i].spec.as_str()).collect();
            return Err(Fail::Run(format!(
                "not converged after {}s (behind: {}); nothing committed",
                a.timeout.as_secs(),
                names.join(", ")
            )));
        }
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            status(&cluster, &nodes, &behind, t0.elapsed());
        }
        std::thread::sleep(POLL);
    }
    stop_all(&cluster, &nodes);
    let mut committed = 0;
    for (i, n) in nodes.iter_mut().enumerate() {
        let store = cluster
            .store(i)
            .map_err(|e| Fail::Run(format!("{}: {e}", n.spec)))?;
        let changed = n
            .mounted
            .changed(store)
            .map_err(|e| Fail::Run(format!("{}: {e}", n.spec)))?;
        if !changed {
            errln!("sync: {}: unchanged, not written", n.spec);
            continue;
        }
        let vol = n.vol.take().ok_or(Fail::Run("volume gone".into()))?;
        let t = Instant::now();
        let h = mount::commit(&vol, store, &mut n.mounted).map_err(|e| {
            Fail::Run(format!(
                "{}: commit: {e} (the volume keeps its last commit)",
                n.spec
            ))
        })?;
        errln!(
            "sync: {}: committed, mirror_tid {:#x} ({:.1}s)",
            n.spec,
            h.mirror_tid,
            t.elapsed().as_secs_f64()
        );
        committed += 1;
    }
    errln!("sync: done: {committed} of {} volumes written", nodes.len());
    Ok(())
}

/// The CLI's failure for a [`JoinError`], each node named by its `IMAGE@LABEL` (nodes join in
/// the order of `specs`).
fn join_fail(e: &JoinError, specs: &[String]) -> Fail {
    let names: Vec<&str> = specs.iter().map(String::as_str).collect();
    Fail::Run(e.named(&names).to_string())
}

/// Stop every node's thread; each request returns once the thread acknowledged it.
fn stop_all(cluster: &Cluster, nodes: &[Node]) {
    for (i, n) in nodes.iter().enumerate() {
        if let Err(e) = cluster.thread_request(i, Request::Stop) {
            errln!("sync: {}: stop: {e}", n.spec);
        }
    }
}

/// One status line: per node its role, root TID and whether it agrees with the focus.
fn status(cluster: &Cluster, nodes: &[Node], behind: &[usize], at: Duration) {
    let mut line = format!("sync: {:>6.1}s", at.as_secs_f64());
    for (i, n) in nodes.iter().enumerate() {
        let tid = cluster
            .store(i)
            .and_then(|s| s.bref(s.root()))
            .map(|b| b.modify_tid)
            .unwrap_or(0);
        let st = cluster.stats(i);
        line.push_str(&format!(
            " | {} {} tid {tid:#x} {} passes {}",
            n.spec,
            cluster.role(i).name(),
            if behind.contains(&i) {
                "syncing"
            } else {
                "in sync"
            },
            st.passes
        ));
    }
    errln!("{line}");
}
