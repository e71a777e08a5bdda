//! Bottom-up deferral at scale, in today's layout: a PFS of about 10^6 inodes (1000 directories
//! of 1000 entries, every other one a subdirectory, the rest small files) whose every inode sits
//! in the PFS root's index, so a fresh slave's first sync defers every directory inode from the
//! root's scan (the small files are DIRECTDATA, leaves copied at once) and stops with a full
//! deferral list (the original's EAGAIN after 1000 deferrals) about five hundred times, syncing
//! each batch bottom-up before the root's scan continues. Then resyncs after changes (rewrites,
//! removed directories, new ones), once per scan mode. Every sync must converge to the master's
//! tree exactly.
//!
//! `make test` runs it in release mode (`cargo test --release --test scale`: about a minute and
//! 3.5 GB on two cores). A debug build (`cargo test`) uses 30 directories of 300 files instead,
//! still nine full lists, as 10^6 inodes would take it many minutes. `H2S_SCALE_DIRS` /
//! `H2S_SCALE_FILES` set the size.

use hammer2_synchro::cluster::{Cluster, FrontendOp};
use hammer2_synchro::role::{NodeSet, Role};
use hammer2_synchro::store::Layout;
use hammer2_synchro::sync::{ScanMode, SyncStats, MAX_DEFER};
use hammer2_synchro::userland;

/// One master holding the tree and the slave synchronized from it: the cheapest cluster whose
/// slave must copy every inode (each node holds a whole copy of the tree).
const ROLES: [Role; 2] = [Role::Master, Role::Slave];
const MASTER: NodeSet = NodeSet(0b01);
const SLAVE: usize = 1;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dir(d: usize) -> String {
    format!("/d{d:04}")
}

fn file(d: usize, f: usize) -> String {
    format!("/d{d:04}/f{f:04}")
}

/// Entry `f` of a directory is a subdirectory (deferred by the sync) when even, a file when odd.
fn is_subdir(f: usize) -> bool {
    f % 2 == 0
}

/// The inodes a sync defers in a new directory of `files` entries: it and its subdirectories.
fn deferrable(files: usize) -> usize {
    1 + (0..files).filter(|&f| is_subdir(f)).count()
}

/// A few bytes (DIRECTDATA: the file is its inode alone), different per generation.
fn content(d: usize, f: usize, gen: u32) -> Vec<u8> {
    format!("{d}/{f}@{gen}").into_bytes()
}

fn apply(c: &Cluster, op: FrontendOp<'_>) {
    c.apply(MASTER, op)
        .unwrap_or_else(|(n, e)| panic!("{op:?} on node {n}: {e}"));
}

fn mkdir_with_files(c: &Cluster, d: usize, files: usize, gen: u32) {
    apply(c, FrontendOp::Mkdir(dir(d).as_bytes()));
    for f in 0..files {
        let path = file(d, f);
        match is_subdir(f) {
            true => apply(c, FrontendOp::Mkdir(path.as_bytes())),
            false => apply(c, FrontendOp::Write(path.as_bytes(), &content(d, f, gen))),
        }
    }
}

/// One sync pass of the slave, which must converge; the counters it added.
fn sync_slave(c: &Cluster) -> SyncStats {
    let before = c.stats(SLAVE);
    c.sync_node(SLAVE, &|| false).expect("slave's sync pass");
    let after = c.stats(SLAVE);
    assert!(c.in_sync(SLAVE), "slave not in sync after its pass");
    let mut out = String::new();
    let same = c.compare(0, SLAVE, &mut out).expect("compare");
    assert!(same, "slave differs from the master:\n{out}");
    SyncStats {
        passes: after.passes - before.passes,
        scanned: after.scanned - before.scanned,
        inserted: after.inserted - before.inserted,
        destroyed: after.destroyed - before.destroyed,
        replaced: after.replaced - before.replaced,
        deferred: after.deferred - before.deferred,
        rescans: after.rescans - before.rescans,
    }
}

/// Deferred inodes, and the full-list stops they must have caused: one per `MAX_DEFER`.
fn assert_rescans(what: &str, st: &SyncStats, inodes: usize) {
    eprintln!("{what}: {st:?}");
    assert!(st.deferred >= inodes as u64, "{what}: {st:?}");
    let floor = (inodes / MAX_DEFER) as u64;
    assert!(
        st.rescans >= floor,
        "{what}: {} deferrals stopped only {} scans (at least {floor} expected)",
        st.deferred,
        st.rescans
    );
}

/// Directories and files per directory when the environment does not say.
const SIZE: (usize, usize) = if cfg!(debug_assertions) {
    (30, 300)
} else {
    (1000, 1000)
};

#[test]
fn million_inodes_sync_bottom_up_through_many_full_deferral_lists() {
    let dirs = env_or("H2S_SCALE_DIRS", SIZE.0);
    let files = env_or("H2S_SCALE_FILES", SIZE.1);
    let c = Cluster::with_layout(userland::host(), &ROLES, Layout::Index).unwrap();
    for i in 0..ROLES.len() {
        c.refresh_view(i);
    }
    for d in 0..dirs {
        mkdir_with_files(&c, d, files, 0);
    }

    // The first sync: every inode of the index is new to the slave.
    let st = sync_slave(&c);
    let inodes = dirs * (files + 1);
    assert_rescans("first sync", &st, dirs * deferrable(files));
    assert!(st.inserted >= inodes as u64, "{st:?}");
    assert_eq!(
        c.read_file(SLAVE, file(dirs / 2, (files / 2) | 1).as_bytes())
            .unwrap(),
        content(dirs / 2, (files / 2) | 1, 0)
    );

    // Resyncs in both scan modes, each after its own changes: every 200th file rewritten,
    // two directories removed with their files, two new ones.
    for (round, mode) in [ScanMode::Pruned, ScanMode::Original]
        .into_iter()
        .enumerate()
    {
        c.set_scan_mode(mode);
        let gen = round as u32 + 1;
        let mut changed = 0;
        for i in (0..dirs * files).step_by(200) {
            let (d, f) = (i / files, (i % files) | 1);
            if d >= 2 * round + 2 && f < files {
                apply(
                    &c,
                    FrontendOp::Write(file(d, f).as_bytes(), &content(d, f, gen)),
                );
            }
        }
        for d in [2 * round, 2 * round + 1] {
            apply(&c, FrontendOp::Rm(dir(d).as_bytes()));
        }
        for d in [dirs + 2 * round, dirs + 2 * round + 1] {
            mkdir_with_files(&c, d, files, gen);
            changed += deferrable(files);
        }
        let st = sync_slave(&c);
        assert_rescans(&format!("resync {mode:?}"), &st, changed);
        assert!(st.destroyed >= 2 * (files as u64 + 1), "{st:?}");
        assert_eq!(
            c.stat(SLAVE, dir(2 * round).as_bytes()).err(),
            Some(hammer2_synchro::Error::NotFound)
        );
    }
}
