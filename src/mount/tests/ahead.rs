//! DATA blocks written ahead of a commit, while the sync runs ([`crate::mount::ahead`]).

use super::cache::{import_big, load_lazy, master_and_slave, shared, Shared};
use super::*;
use crate::mount::{commit_ahead, write_ahead};
use alloc::sync::Arc;

const BUDGET: usize = 1 << 20;

/// fsck finds nothing, and the freemap marks exactly what the trees reach: a block written
/// ahead and left out of the tree would stay allocated and unreachable.
fn exact(dev: &SparseDev) {
    let r = fsck(dev, FsckOptions::default()).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
    assert_eq!(r.unreachable_granules, 0, "space leaked");
}

/// The master of `files` files of `blocks` blocks, an empty slave, both loaded.
fn pair(files: usize, blocks: usize) -> (Arc<Shared>, Arc<Shared>, PinnedCluster, Mounted) {
    let (m, s) = (shared(make()), shared(make()));
    import_big(&m.0.lock(), files, blocks);
    let (ms, _) = load_lazy(&m, BUDGET);
    let (ss, sm) = load_lazy(&s, BUDGET);
    (m, s, master_and_slave(ms, ss), sm)
}

/// A first sync whose DATA blocks are written ahead, on another thread while the sync passes
/// run: the commit takes them unwritten, and the slave holds the master's tree, fsck-clean
/// with no space lost.
#[test]
fn a_first_sync_written_ahead_commits_the_masters_tree() {
    let (m, s, c, mut sm) = pair(8, 4);
    let vol = Volume::open(&*s).unwrap();
    let mut wa = write_ahead(&vol, &mut sm).unwrap();
    let slave = c.store(1).unwrap();
    // The volume is the writer's alone (a `Volume` stays on one thread): the sync runs on
    // another.
    let done = core::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|t| {
        let sync = t.spawn(|| {
            sync_until_in_sync(&c, 1);
            done.store(true, core::sync::atomic::Ordering::Release);
        });
        while !done.load(core::sync::atomic::Ordering::Acquire) {
            if wa.place(slave, 16).unwrap() == 0 {
                std::thread::yield_now();
            }
        }
        sync.join().unwrap();
        while wa.place(slave, 16).unwrap() > 0 {}
    });
    assert_eq!(wa.written(), (32, 32 * DATA_BLOCK_BYTES as u64));
    commit_ahead(&vol, slave, &mut sm, wa, &mut |_| {}).unwrap();
    let io = sm.io().commit;
    assert!(
        io.blocks_written < 32,
        "the commit wrote no DATA block again: {io:?}"
    );
    exact(&s.0.lock());
    let want = reader_view(&m.0.lock());
    assert!(reader_view(&s.0.lock())[1..] == want[1..]);
    assert!(store_view(slave)[1..] == want[1..]);
    assert_eq!(
        slave.cache_stats().unwrap().pinned,
        0,
        "released by the commit"
    );
    // The next commit starts from the space this one learned.
    slave.write(b"/f0", &bytes(300, 9), 6000).unwrap();
    commit(&Volume::open(&*s).unwrap(), slave, &mut sm).unwrap();
    exact(&s.0.lock());
}

/// Blocks written ahead for chains changed or deleted since are not in the tree committed:
/// those chains are written as they are now, and the blocks written ahead go back to free
/// space.
#[test]
fn blocks_of_chains_changed_since_go_back_to_free_space() {
    let (_m, s, c, mut sm) = pair(4, 2);
    sync_until_in_sync(&c, 1);
    let slave = c.store(1).unwrap();
    let vol = Volume::open(&*s).unwrap();
    let mut wa = write_ahead(&vol, &mut sm).unwrap();
    while wa.place(slave, 3).unwrap() > 0 {}
    assert_eq!(wa.written().0, 8);
    let new = bytes(DATA_BLOCK_BYTES + 5, 0x33);
    slave.write(b"/f1", &new, 6000).unwrap();
    slave.rm(b"/f2", 6001).unwrap();
    commit_ahead(&vol, slave, &mut sm, wa, &mut |_| {}).unwrap();
    exact(&s.0.lock());
    let view = reader_view(&s.0.lock());
    let (_, _, got) = view.iter().find(|(p, _, _)| p == b"/f1").unwrap();
    assert_eq!(got, &new);
    assert!(!view.iter().any(|(p, _, _)| p == b"/f2"));
    assert!(store_view(slave)[1..] == view[1..]);
}

/// Dropped or abandoned without a commit, a write-ahead loses nothing: the volume keeps its last commit,
/// and a commit as usual writes everything, with no space lost to the blocks written.
#[test]
fn a_write_ahead_dropped_leaves_the_last_commit() {
    let (m, s, c, mut sm) = pair(4, 2);
    sync_until_in_sync(&c, 1);
    let slave = c.store(1).unwrap();
    let vol = Volume::open(&*s).unwrap();
    let before = reader_view(&s.0.lock());
    let mut wa = write_ahead(&vol, &mut sm).unwrap();
    while wa.place(slave, 64).unwrap() > 0 {}
    assert_eq!(wa.written().0, 8);
    drop(wa);
    assert!(reader_view(&s.0.lock()) == before, "nothing committed");
    exact(&s.0.lock());
    // Abandoned, it gives the mount back the space its transaction learned.
    assert!(sm.space.is_none(), "taken by the write-ahead dropped");
    let mut wa = write_ahead(&vol, &mut sm).unwrap();
    while wa.place(slave, 64).unwrap() > 0 {}
    wa.abandon(&mut sm);
    assert!(sm.space.is_some());
    commit(&vol, slave, &mut sm).unwrap();
    exact(&s.0.lock());
    assert!(reader_view(&s.0.lock())[1..] == reader_view(&m.0.lock())[1..]);
}
