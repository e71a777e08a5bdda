//! Nodes on volumes: image files on tmpfs, a master PFS and a slave PFS on one volume each,
//! the library's load / sync / commit path as the CLI's `sync` runs it.
//!
//! - resync: a wide tree of N empty files imported into the master, the slave synced and
//!   committed once; then k files rewritten on the master and the slave resynced: its sync
//!   passes, the check that it changed and its commit (volume reopened), timed, with the
//!   blocks the commit read and wrote; against `rsync -a --delete` of the same tree and change.
//! - first-sync bandwidth: large files imported into the master; the slave's first sync
//!   (both PFSs loaded, synced, the slave committed) against `cp` of as many bytes between two
//!   files of the same tmpfs.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hammer2_synchro::cluster::{Cluster, FrontendOp};
use hammer2_synchro::media::{
    InodeMeta, CHECK_XXHASH64, DATA_BLOCK_BYTES, OBJTYPE_DIRECTORY, OBJTYPE_REGFILE,
    PFSTYPE_MASTER, PFSTYPE_SLAVE,
};
use hammer2_synchro::mount::payload::DevSource;
use hammer2_synchro::mount::{self, Mounted};
use hammer2_synchro::role::{NodeSet, Role};
use hammer2_synchro::store::{Layout, Store};
use hammer2_synchro::userland;
use hammer2_synchro::volume::{
    newfs, BlockDev, DirEntries, FileDev, Import, IoCount, NewPfs, NewfsOptions, Volume,
};

use crate::alloc_count;
use crate::shape::{content, Shape, Tree};
use crate::tmpfs::FsPair;
use crate::usage::Usage;

const LABEL: &[u8] = b"DATA";

fn err(what: &str) -> impl Fn(hammer2_synchro::Error) -> String + '_ {
    move |e| format!("{what}: {e:?}")
}

/// A fresh volume of `size` bytes at `path` with PFS `DATA` of `pfs_type`.
fn new_volume(path: &Path, size: u64, pfs_type: u8) -> Result<FileDev, String> {
    let dev = FileDev::create(path, size).map_err(|e| format!("{}: {e}", path.display()))?;
    let pfs = [NewPfs {
        label: LABEL,
        pfs_type,
        clid: [0x5A; 16],
        fsid: [pfs_type; 16],
        nmasters: 1,
    }];
    newfs(
        &dev,
        &NewfsOptions {
            size,
            fsid: [pfs_type ^ 1; 16],
            sroot_ids: ([0x5A; 16], [pfs_type ^ 2; 16]),
            pfs: &pfs,
            now_us: 1_700_000_000_000_000,
        },
    )
    .map_err(err("newfs"))?;
    Ok(dev)
}

fn meta(objtype: u8, inum: u64, size: u64) -> InodeMeta {
    let mut m = InodeMeta::new(objtype, inum, 0o644);
    m.mtime = 1_700_000_000_000_000;
    m.nlinks = 1;
    m.size = size;
    m.check_algo = CHECK_XXHASH64;
    m
}

/// Import into `dev`'s PFS one directory `top` holding `files`: (name, contents); contents
/// of up to 512 bytes go in the inode, longer ones in 64 KiB data blocks.
fn import(dev: &FileDev, top: &str, files: &[(String, Vec<u8>)]) -> Result<(), String> {
    let vol = Volume::open(dev).map_err(|e| format!("open: {e}"))?;
    let mut imp = Import::begin(&vol, LABEL).map_err(err("import"))?;
    let mut dir = DirEntries::new();
    for (name, data) in files {
        let inum = imp.new_inum().map_err(err("inum"))?;
        let m = meta(OBJTYPE_REGFILE, inum, data.len() as u64);
        if data.len() <= 512 {
            imp.file(m, Some(data), &[]).map_err(err("file"))?;
        } else {
            let mut table = Vec::new();
            for (i, chunk) in data.chunks(DATA_BLOCK_BYTES).enumerate() {
                imp.data(&mut table, (i * DATA_BLOCK_BYTES) as u64, chunk)
                    .map_err(err("data"))?;
            }
            imp.file(m, None, &table).map_err(err("file"))?;
        }
        imp.entry(&mut dir, name.as_bytes(), inum, OBJTYPE_REGFILE)
            .map_err(err("entry"))?;
    }
    let d = imp.new_inum().map_err(err("inum"))?;
    imp.dir(meta(OBJTYPE_DIRECTORY, d, 0), &dir)
        .map_err(err("dir"))?;
    let mut root = DirEntries::new();
    imp.entry(&mut root, top.as_bytes(), d, OBJTYPE_DIRECTORY)
        .map_err(err("entry"))?;
    imp.commit(&meta(OBJTYPE_DIRECTORY, 1, 0), &root)
        .map_err(err("commit"))?;
    Ok(())
}

/// The payload cache of each loaded PFS: the CLI's default (`sync --cache-mib 256`).
pub const CACHE_BUDGET: usize = 256 << 20;

/// The chains each loaded PFS keeps in memory near: the CLI's, a quarter of its cache.
pub const CHAIN_BUDGET: usize = CACHE_BUDGET / 4;

/// The PFS of `dev` loaded as the CLI's `sync` loads it: DATA blocks left on the volume and
/// read on demand through a cache of [`CACHE_BUDGET`], the chains in memory kept near
/// [`CHAIN_BUDGET`].
fn load(dev: &FileDev) -> Result<(Store, Mounted), String> {
    let vol = Volume::open(dev).map_err(|e| format!("open: {e}"))?;
    let own = dev.try_clone().map_err(|e| format!("dup: {e}"))?;
    let src = Box::new(DevSource::new(own, vol.header()));
    mount::load_bounded(
        userland::host(),
        &vol,
        LABEL,
        src,
        (CACHE_BUDGET, CHAIN_BUDGET),
        &mut |_| {},
    )
    .map_err(err("load"))
}

/// What the CLI's loop does when a store's chains pass their budget (its threads frozen):
/// commit the slave if it changed, and let every store's clean chains leave memory, down
/// to half the budget.
fn bound_chains(c: &Cluster, sdev: &FileDev, sm: &mut Mounted) -> Result<(), String> {
    let over = (0..c.len()).any(|i| c.store(i).is_ok_and(Store::chains_over));
    if !over {
        return Ok(());
    }
    commit_slave(c, sdev, sm)?;
    for i in 0..c.len() {
        let s = c.store(i).map_err(err("store"))?;
        s.evict_to(s.chain_budget() / 2).map_err(err("evict"))?;
    }
    Ok(())
}

/// The largest payload-cache peak of `c`'s stores, and the bytes they read on demand.
fn cache_use(c: &Cluster) -> (usize, u64) {
    (0..c.len())
        .filter_map(|i| c.store(i).ok().and_then(Store::cache_stats))
        .fold((0, 0), |(p, r), st| (p.max(st.peak), r + st.read_bytes))
}

/// A cluster of the master PFS of `mdev` (node 0) and the slave PFS of `sdev` (node 1), and
/// the slave's [`Mounted`].
fn cluster(mdev: &FileDev, sdev: &FileDev) -> Result<(Pin<Box<Cluster>>, Mounted), String> {
    let (ms, _) = load(mdev)?;
    let (ss, sm) = load(sdev)?;
    let c = Cluster::from_stores(
        userland::host(),
        &[Role::Master, Role::Slave],
        vec![ms, ss],
        Layout::Index,
    )
    .map_err(err("cluster"))?;
    Ok((c, sm))
}

/// Sync the slave (node 1) until it agrees with the master, as the CLI does: a pass held
/// because a store's chains passed their limit ends, and they leave memory before the next
/// ([`bound_chains`]).
fn sync_slave(c: &Cluster, sdev: &FileDev, sm: &mut Mounted) -> Result<(), String> {
    let mut held = 0;
    for _ in 0..16 {
        if c.in_sync(1) {
            return Ok(());
        }
        loop {
            match c.sync_node(1, &|| false) {
                Ok(()) => break,
                // Each held pass got further; a bound on them all the same.
                Err(hammer2_synchro::Error::InProgress) if held < 100_000 => held += 1,
                Err(e) => return Err(format!("sync: {e}")),
            }
            bound_chains(c, sdev, sm)?;
        }
    }
    Err("the slave never caught up".into())
}

/// What the sync thread of [`sync_ahead`] tells the writer after each pass.
enum Pass {
    /// The slave agrees with the master.
    Done,
    /// A pass held: a store's chains passed their limit.
    Held,
    Failed(String),
}

/// [`sync_slave`] and the slave's commit, the slave's new DATA blocks written ahead of the
/// commit while the passes run: the passes on a thread of their own, the writes on this one
/// (the volume stays on it). A held pass waits for the commit and the eviction, as in
/// [`bound_chains`]. Returns when the slave agreed with the master, and the last commit's
/// blocks.
fn sync_ahead(
    c: &Cluster,
    sdev: &FileDev,
    sm: &mut Mounted,
) -> Result<(Duration, IoCount), String> {
    let store = c.store(1).map_err(err("store"))?;
    let t = Instant::now();
    std::thread::scope(|s| {
        // Made in the scope: a return from it drops the writer's ends, which ends the thread.
        let (to_writer, passes) = std::sync::mpsc::channel::<Pass>();
        let (to_sync, goes) = std::sync::mpsc::channel::<()>();
        s.spawn(move || {
            let mut held = 0;
            for _ in 0..16 {
                if c.in_sync(1) {
                    let _ = to_writer.send(Pass::Done);
                    return;
                }
                loop {
                    match c.sync_node(1, &|| false) {
                        Ok(()) => break,
                        Err(hammer2_synchro::Error::InProgress) if held < 100_000 => {
                            held += 1;
                            if to_writer.send(Pass::Held).is_err() || goes.recv().is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = to_writer.send(Pass::Failed(format!("sync: {e}")));
                            return;
                        }
                    }
                }
            }
            let _ = to_writer.send(Pass::Failed("the slave never caught up".into()));
        });
        loop {
            let vol = Volume::open(sdev).map_err(|e| format!("open: {e}"))?;
            let mut ahead = Some(mount::write_ahead(&vol, store, &mut *sm));
            let pass = loop {
                match passes.try_recv() {
                    Ok(p) => break p,
                    Err(std::sync::mpsc::TryRecvError::Empty) => {
                        let looked = match ahead.as_mut().map(|a| a.place(256)) {
                            Some(Ok(n)) => n,
                            // Given up: the commit writes the blocks, as the CLI's does.
                            Some(Err(_)) => {
                                ahead.take().map(mount::WriteAhead::abandon);
                                0
                            }
                            None => 0,
                        };
                        if looked == 0 {
                            std::thread::sleep(Duration::from_micros(50));
                        }
                    }
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        return Err("the sync thread ended".to_string())
                    }
                }
            };
            let synced = t.elapsed();
            let changed = store.journal_len() != 0;
            match ahead {
                Some(wa) if changed => {
                    let (m, r) = mount::commit_ahead(wa, &mut |_| {});
                    match r {
                        // A full volume: the blocks written ahead are free again.
                        Err(hammer2_synchro::Error::NoSpace) => {
                            mount::commit(&vol, store, m).map_err(err("commit"))?;
                        }
                        r => {
                            r.map_err(err("commit"))?;
                        }
                    }
                }
                Some(wa) => {
                    wa.abandon();
                }
                None if changed => {
                    mount::commit(&vol, store, sm).map_err(err("commit"))?;
                }
                None => {}
            }
            match pass {
                Pass::Done => return Ok((synced, sm.io().commit)),
                Pass::Failed(e) => return Err(e),
                Pass::Held => {
                    for i in 0..c.len() {
                        let s = c.store(i).map_err(err("store"))?;
                        s.evict_to(s.chain_budget() / 2).map_err(err("evict"))?;
                    }
                    to_sync
                        .send(())
                        .map_err(|_| "the sync thread ended".to_string())?;
                }
            }
        }
    })
}

/// Time spent in a device's calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct DevTimes {
    /// In reads.
    pub read: Duration,
    /// In writes.
    pub write: Duration,
    /// In flushes (`fdatasync`).
    pub flush: Duration,
}

/// A device whose calls are timed: where a slow commit spent its time.
struct Timed<'a> {
    dev: &'a FileDev,
    times: std::cell::Cell<DevTimes>,
}

impl Timed<'_> {
    fn time<T>(&self, f: impl FnOnce() -> T, slot: fn(&mut DevTimes) -> &mut Duration) -> T {
        let t = Instant::now();
        let r = f();
        let mut times = self.times.get();
        *slot(&mut times) += t.elapsed();
        self.times.set(times);
        r
    }
}

impl BlockDev for Timed<'_> {
    fn size(&self) -> u64 {
        self.dev.size()
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> hammer2_synchro::Result<()> {
        self.time(|| self.dev.read_at(off, buf), |t| &mut t.read)
    }
    fn write_at(&self, off: u64, buf: &[u8]) -> hammer2_synchro::Result<()> {
        self.time(|| self.dev.write_at(off, buf), |t| &mut t.write)
    }
    fn flush(&self) -> hammer2_synchro::Result<()> {
        self.time(|| self.dev.flush(), |t| &mut t.flush)
    }
}

/// Where one commit of the slave spent its time.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitTimes {
    /// The check that the store changed since the last commit.
    pub changed: Duration,
    /// The commit, the volume opened included (nothing when nothing changed).
    pub commit: Duration,
    /// Its device calls.
    pub dev: DevTimes,
}

/// Commit the slave if it changed; the blocks the commit read and wrote, and its times.
fn commit_slave(
    c: &Cluster,
    dev: &FileDev,
    m: &mut Mounted,
) -> Result<(IoCount, CommitTimes), String> {
    let store = c.store(1).map_err(err("store"))?;
    let t = Instant::now();
    let changed = m.changed(store).map_err(err("changed"))?;
    let mut times = CommitTimes {
        changed: t.elapsed(),
        ..CommitTimes::default()
    };
    if !changed {
        return Ok((IoCount::default(), times));
    }
    let timed = Timed {
        dev,
        times: Default::default(),
    };
    let t = Instant::now();
    let vol = Volume::open(&timed).map_err(|e| format!("open: {e}"))?;
    mount::commit(&vol, store, m).map_err(err("commit"))?;
    times.commit = t.elapsed();
    times.dev = timed.times.get();
    Ok((m.io().commit, times))
}

/// One resync round, in the order run: where its time went.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// The whole round: sync passes, change check, commit.
    pub total: Duration,
    /// The sync passes.
    pub sync: Duration,
    /// Chains the sync passes scanned (the same work every round).
    pub scanned: u64,
    /// The change check and the commit.
    pub commit: CommitTimes,
    /// What the process took from the kernel meanwhile (minor faults: fresh memory).
    pub usage: Option<Usage>,
    /// rsync of the same change, run right before (None when rsync is not measured).
    pub rsync: Option<Duration>,
}

/// A directory for this run's images under `base`, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(base: &Path, tag: &str) -> Result<Scratch, String> {
        let p = base.join(format!("h2s-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One volume resync.
#[derive(Debug, Clone)]
pub struct VolumeResync {
    /// Files in the tree.
    pub files: usize,
    /// Files changed.
    pub k: usize,
    /// The slave's first sync and commit.
    pub first: Duration,
    /// What that commit read and wrote.
    pub first_io: IoCount,
    /// The resync: sync passes, the changed check, the commit; the median of [`ROUNDS`].
    pub resync: Duration,
    /// The fastest and the slowest of those rounds.
    pub resync_range: (Duration, Duration),
    /// Every round, in the order run.
    pub rounds: Vec<Round>,
    /// What the median round's commit read and wrote.
    pub io: IoCount,
    /// What a load of the slave's PFS read after the resync (the whole tree of N files).
    pub load_io: IoCount,
    /// Bytes the cluster of both loaded PFSs holds after the first sync (counting allocator).
    pub cluster_bytes: usize,
    /// The most bytes held during the loads, the first sync and its commit.
    pub first_peak: usize,
    /// Peak bytes above that during the resync and its commit.
    pub peak: usize,
    /// The largest payload-cache peak of the two stores over the whole run.
    pub cache_peak: usize,
    /// Each store's payload-cache budget.
    pub cache_budget: usize,
    /// Each store's chain budget.
    pub chain_budget: usize,
    /// Bytes both stores read on demand over the whole run.
    pub cache_read: u64,
    /// rsync of the same change, the median of its rounds (run alternately with the
    /// resync's), or why it was not measured.
    pub rsync: Result<Duration, String>,
}

impl VolumeResync {
    /// rsync's time over the resync's.
    pub fn ratio(&self) -> Option<f64> {
        let r = self.rsync.as_ref().ok()?;
        Some(r.as_secs_f64() / self.resync.as_secs_f64().max(1e-9))
    }
}

/// Resyncs timed per measurement (the median is reported).
pub const ROUNDS: u32 = 5;

/// Resync of `k` changed files in a wide tree of `n` files on image files under `base` (a
/// tmpfs), [`ROUNDS`] times, and rsync of the same change under `base` too.
pub fn resync(base: &Path, n: usize, k: usize) -> Result<VolumeResync, String> {
    let tree = Tree::new(Shape::Wide, n);
    let top = tree.dirs.first().cloned().unwrap_or_default();
    let dir = Scratch::new(base, "volume-resync")?;
    // 1 KiB per inode, twice for the copy-on-write commits, and room for the freemap.
    let size = (4u64 << 30) + (n as u64) * 8192;
    let mdev = new_volume(&dir.0.join("master.img"), size, PFSTYPE_MASTER)?;
    let sdev = new_volume(&dir.0.join("slave.img"), size, PFSTYPE_SLAVE)?;
    let files: Vec<(String, Vec<u8>)> = tree
        .files
        .iter()
        .map(|p| (p.rsplit('/').next().unwrap_or(p).to_string(), Vec::new()))
        .collect();
    import(&mdev, &top, &files)?;
    drop(files);
    let live0 = alloc_count::live();
    let ((c, mut sm), first_io, first, first_peak) = {
        let (first_peak, r) = alloc_count::peak_during(|| -> Result<_, String> {
            let t = Instant::now();
            let (c, mut sm) = cluster(&mdev, &sdev)?;
            sync_slave(&c, &sdev, &mut sm)?;
            let (first_io, _) = commit_slave(&c, &sdev, &mut sm)?;
            let first = t.elapsed();
            // The commit lets what passed the budget leave memory, as the CLI's does.
            bound_chains(&c, &sdev, &mut sm)?;
            Ok(((c, sm), first_io, first))
        });
        let (cs, io, first) = r?;
        (cs, io, first, first_peak)
    };
    let cluster_bytes = alloc_count::live().saturating_sub(live0);

    let idx = tree.spread(k);
    // rsync's side: the same tree as real files on the same tmpfs, its first copy made.
    let pair = (|| -> std::io::Result<FsPair> {
        let pair = FsPair::new(base, "volume-rsync")?;
        pair.build(&tree)?;
        pair.rsync()?;
        Ok(pair)
    })()
    .map_err(|e| format!("rsync: {e}"));
    // Each round rewrites the same k files with new bytes: one resync is a few milliseconds,
    // which one scheduling delay on a shared machine can multiply. rsync of the same change
    // runs right before each resync, so both sides meet the same machine state, round by
    // round, and both are the median of their rounds.
    let mut rounds = Vec::new();
    let mut rsyncs = Vec::new();
    for round in 1..=ROUNDS {
        let rsync = pair.as_ref().ok().map(|p| {
            p.change(&tree, &idx, round)
                .and_then(|()| p.rsync())
                .map_err(|e| format!("rsync: {e}"))
        });
        let rsync = match rsync {
            Some(r) => Some(r?),
            None => None,
        };
        rsyncs.extend(rsync);
        for &i in &idx {
            let path = format!("/{}", tree.files[i]);
            c.apply(
                NodeSet(1),
                FrontendOp::Write(path.as_bytes(), &content(i, round)),
            )
            .map_err(|(node, e)| format!("write on node {node}: {e:?}"))?;
        }
        let scanned = c.stats(1).scanned;
        let before = Usage::now();
        let t = Instant::now();
        let (peak, io) = alloc_count::peak_during(|| {
            sync_slave(&c, &sdev, &mut sm)?;
            let synced = t.elapsed();
            commit_slave(&c, &sdev, &mut sm).map(|(io, times)| (io, synced, times))
        });
        let total = t.elapsed();
        let usage = Usage::since(before);
        let (io, sync, commit) = io?;
        let round = Round {
            total,
            sync,
            scanned: c.stats(1).scanned - scanned,
            commit,
            usage,
            rsync,
        };
        rounds.push((round, io, peak));
    }
    let in_order: Vec<Round> = rounds.iter().map(|r| r.0).collect();
    rounds.sort_by_key(|r| r.0.total);
    let (resync, io) = (rounds[rounds.len() / 2].0.total, rounds[rounds.len() / 2].1);
    let resync_range = (rounds[0].0.total, rounds[rounds.len() - 1].0.total);
    let peak = rounds.iter().map(|r| r.2).max().unwrap_or(0);
    let (cache_peak, cache_read) = cache_use(&c);
    drop(c);
    // The slave's volume holds the change.
    let (check, m) = load(&sdev)?;
    let last = idx.last().copied().unwrap_or(0);
    let id = check
        .resolve(format!("/{}", tree.files[last]).as_bytes())
        .map_err(err("resolve"))?;
    if check.read_file(id).map_err(err("read"))? != content(last, ROUNDS) {
        return Err("the slave's volume does not hold the change".into());
    }
    drop(check);
    drop(dir);
    let rsync = pair.and_then(|p| {
        if !p.dst_holds(&tree, last, ROUNDS) {
            return Err("rsync did not copy a changed file".into());
        }
        rsyncs.sort();
        rsyncs
            .get(rsyncs.len() / 2)
            .copied()
            .ok_or_else(|| "rsync: no round".to_string())
    });
    Ok(VolumeResync {
        files: n,
        k,
        first,
        first_io,
        resync,
        resync_range,
        rounds: in_order,
        io,
        load_io: m.io().load,
        cluster_bytes,
        first_peak,
        peak,
        cache_peak,
        cache_budget: CACHE_BUDGET,
        chain_budget: CHAIN_BUDGET,
        cache_read,
        rsync,
    })
}

/// One first-sync bandwidth measurement.
#[derive(Debug, Clone)]
pub struct VolumeBandwidth {
    /// Bytes of file data.
    pub bytes: u64,
    /// Files holding them.
    pub files: usize,
    /// The slave's first sync: both PFSs loaded, synced, the slave committed.
    pub sync: Duration,
    /// Its phases: the loads, the sync passes (the DATA blocks written ahead meanwhile),
    /// the commit.
    pub phases: [Duration; 3],
    /// What the process took from the kernel meanwhile.
    pub usage: Option<Usage>,
    /// `cp` of as many bytes between two files of the same filesystem.
    pub cp: Duration,
}

/// First sync of `total` bytes in files of `file_bytes` on image files under `base`.
pub fn first_sync_bandwidth(
    base: &Path,
    total: usize,
    file_bytes: usize,
) -> Result<VolumeBandwidth, String> {
    let dir = Scratch::new(base, "volume-bandwidth")?;
    let size = (4u64 << 30) + 3 * total as u64;
    let mdev = new_volume(&dir.0.join("master.img"), size, PFSTYPE_MASTER)?;
    let sdev = new_volume(&dir.0.join("slave.img"), size, PFSTYPE_SLAVE)?;
    let count = total.div_ceil(file_bytes).max(1);
    let files: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| {
            let data = crate::bandwidth::noise(file_bytes, i as u64 + 1);
            (format!("f{i:05}"), data)
        })
        .collect();
    import(&mdev, "big", &files)?;
    drop(files);
    let before = Usage::now();
    let t = Instant::now();
    let (c, mut sm) = cluster(&mdev, &sdev)?;
    let loaded = t.elapsed();
    let (synced, _) = sync_ahead(&c, &sdev, &mut sm)?;
    let synced = loaded + synced;
    let sync = t.elapsed();
    let usage = Usage::since(before);
    drop(c);

    let src = dir.0.join("cp-src");
    let dst = dir.0.join("cp-dst");
    std::fs::write(&src, crate::bandwidth::noise(count * file_bytes, 7))
        .map_err(|e| format!("{}: {e}", src.display()))?;
    let t = Instant::now();
    let st = Command::new("cp")
        .arg(&src)
        .arg(&dst)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    let cp = t.elapsed();
    if !st.success() {
        return Err(format!("cp failed: {st}"));
    }
    Ok(VolumeBandwidth {
        bytes: (count * file_bytes) as u64,
        files: count,
        sync,
        phases: [loaded, synced - loaded, sync - synced],
        usage,
        cp,
    })
}

impl VolumeBandwidth {
    /// The sync's bandwidth as a fraction of cp's.
    pub fn ratio(&self) -> f64 {
        self.cp.as_secs_f64() / self.sync.as_secs_f64().max(1e-9)
    }
}

/// Everything measured on volumes in one run.
#[derive(Debug, Clone)]
pub struct Volumes {
    /// The resync, or why it failed.
    pub resync: Result<VolumeResync, String>,
    /// The first-sync bandwidth, or why it failed.
    pub bandwidth: Result<VolumeBandwidth, String>,
    /// Wall time of both, images made and rsync included.
    pub time: Duration,
}

/// The resync of `k` of `n` files and the first sync of `bytes` in files of `file_bytes`,
/// on image files under `base` (a tmpfs), printing each result as it comes.
pub fn measure(base: &Path, n: usize, k: usize, bytes: usize, file_bytes: usize) -> Volumes {
    let t = Instant::now();
    println!("bench: volume resync N={n} k={k} ...");
    let resync = resync(base, n, k);
    match &resync {
        Ok(r) => println!(
            "bench: volume resync N={n} k={k}: {:?} (commit wrote {} blocks / {} KiB, read {} \
             blocks / {} KiB), rsync {}",
            r.resync,
            r.io.blocks_written,
            r.io.bytes_written / 1024,
            r.io.blocks_read,
            r.io.bytes_read / 1024,
            r.rsync
                .as_ref()
                .map_or_else(|e| e.clone(), |d| format!("{d:?}"))
        ),
        Err(e) => println!("bench: volume resync FAILED: {e}"),
    }
    if let Ok(r) = &resync {
        println!("bench: {}", rounds(&r.rounds));
    }
    println!("bench: volume first-sync bandwidth ...");
    let bandwidth = first_sync_bandwidth(base, bytes, file_bytes);
    match &bandwidth {
        Ok(b) => println!(
            "bench: volume first sync of {} MiB: {:?} (load {:?}, sync {:?}, commit {:?}; {:?}), \
             cp {:?}",
            b.bytes >> 20,
            b.sync,
            b.phases[0],
            b.phases[1],
            b.phases[2],
            b.usage,
            b.cp
        ),
        Err(e) => println!("bench: volume bandwidth FAILED: {e}"),
    }
    Volumes {
        resync,
        bandwidth,
        time: t.elapsed(),
    }
}

/// The resync's rounds in the order run, each with where its time went: a slow round says
/// whether the sync passes, the change check or the commit's device calls were slow, and
/// whether it touched fresh memory (minor page faults).
pub fn rounds(rounds: &[Round]) -> String {
    let secs = |d: Duration| crate::stats::fmt_secs(d.as_secs_f64());
    let each: Vec<String> = rounds
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let c = &r.commit;
            format!(
                "{}: {} (sync {} scanning {} chains, changed {}, commit {}: device read {}, \
                 write {}, flush {}; {} faults; rsync {})",
                i + 1,
                secs(r.total),
                secs(r.sync),
                r.scanned,
                secs(c.changed),
                secs(c.commit),
                secs(c.dev.read),
                secs(c.dev.write),
                secs(c.dev.flush),
                r.usage.map_or("?".into(), |u| u.faults.to_string()),
                r.rsync.map_or("–".into(), secs),
            )
        })
        .collect();
    format!("Resync rounds in the order run: {}.", each.join("; "))
}
