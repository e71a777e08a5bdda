//! DATA blocks written ahead of a commit, while the sync runs ([`crate::mount::ahead`]).

use super::cache::{import_big, load_lazy, master_and_slave, shared, Shared};
use super::*;
use crate::mount::{commit_ahead, write_ahead};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

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

/// [`pair`] with the slave synced, not committed.
fn synced(files: usize, blocks: usize) -> (Arc<Shared>, Arc<Shared>, PinnedCluster, Mounted) {
    let (m, s, c, sm) = pair(files, blocks);
    sync_until_in_sync(&c, 1);
    (m, s, c, sm)
}

/// Place every journal entry there is.
fn place_all(wa: &mut crate::mount::WriteAhead<'_, &Shared>, step: usize) {
    while wa.place(step).unwrap() > 0 {}
}

/// Place `step` entries at a time until none is left (`None`) or a place fails.
fn place_until_error(wa: &mut crate::mount::WriteAhead<'_, &Shared>, step: usize) -> Option<Error> {
    loop {
        match wa.place(step) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(e),
        }
    }
}

/// A first sync whose DATA blocks are written ahead while the sync passes run on another
/// thread: the commit takes every one of them and writes no DATA block itself, and the
/// slave holds the master's tree, fsck-clean with no space lost.
#[test]
fn a_first_sync_written_ahead_commits_the_masters_tree() {
    let (m, s, c, mut sm) = pair(8, 4);
    let vol = Volume::open(&*s).unwrap();
    let slave = c.store(1).unwrap();
    let mut wa = write_ahead(&vol, slave, &mut sm);
    // The volume is the writer's alone (a `Volume` stays on one thread): the sync runs on
    // another.
    let done = AtomicBool::new(false);
    std::thread::scope(|t| {
        let sync = t.spawn(|| {
            sync_until_in_sync(&c, 1);
            done.store(true, Ordering::Release);
        });
        while !done.load(Ordering::Acquire) {
            if wa.place(16).unwrap() == 0 {
                std::thread::yield_now();
            }
        }
        sync.join().unwrap();
        place_all(&mut wa, 16);
    });
    assert_eq!(wa.written(), (32, 32 * DATA_BLOCK_BYTES as u64));
    let (sm, r) = commit_ahead(wa, &mut |_| {});
    r.unwrap();
    assert_eq!(sm.io().ahead, 32, "every block written ahead taken");
    let io = sm.io().commit;
    assert!(
        io.bytes_written < 32 * DATA_BLOCK_BYTES as u64 / 4,
        "the commit wrote its tables and header only: {io:?}"
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
    commit(&Volume::open(&*s).unwrap(), slave, sm).unwrap();
    exact(&s.0.lock());
}

/// Blocks written ahead for chains changed or deleted since are not in the tree committed:
/// those chains are written as they are now, and the blocks written ahead go back to free
/// space, with the mount's space cache and without one (a volume written by someone else
/// since the mount's last commit: every tree is read again).
#[test]
fn blocks_of_chains_changed_since_go_back_to_free_space() {
    for cached in [true, false] {
        let (_m, s, c, mut sm) = synced(4, 2);
        let slave = c.store(1).unwrap();
        let vol = Volume::open(&*s).unwrap();
        if !cached {
            let mut h = vol.header().clone();
            h.mirror_tid += 1000;
            sm.tree = crate::volume::space::TreeId::of(&h);
        }
        let mut wa = write_ahead(&vol, slave, &mut sm);
        place_all(&mut wa, 3);
        assert_eq!(wa.written().0, 8);
        let new = bytes(DATA_BLOCK_BYTES + 5, 0x33);
        slave.write(b"/f1", &new, 6000).unwrap();
        slave.rm(b"/f2", 6001).unwrap();
        let (sm, r) = commit_ahead(wa, &mut |_| {});
        r.unwrap();
        assert_eq!(sm.io().ahead, 4, "f0's and f3's blocks taken");
        exact(&s.0.lock());
        let view = reader_view(&s.0.lock());
        let (_, _, got) = view.iter().find(|(p, _, _)| p == b"/f1").unwrap();
        assert_eq!(got, &new);
        assert!(!view.iter().any(|(p, _, _)| p == b"/f2"));
        assert!(store_view(slave)[1..] == view[1..]);
    }
}

/// A chain rewritten between the places: each version is written ahead, the commit takes
/// the last, and the others come free.
#[test]
fn a_chain_rewritten_many_times_commits_its_last_version() {
    let (_m, s, c, mut sm) = synced(2, 1);
    let slave = c.store(1).unwrap();
    let vol = Volume::open(&*s).unwrap();
    let mut wa = write_ahead(&vol, slave, &mut sm);
    place_all(&mut wa, 64);
    for k in 0..20u8 {
        slave
            .write(b"/f0", &bytes(DATA_BLOCK_BYTES, k), 6000 + u64::from(k))
            .unwrap();
        place_all(&mut wa, 64);
    }
    assert!(wa.written().0 > 20);
    let (_, r) = commit_ahead(wa, &mut |_| {});
    r.unwrap();
    exact(&s.0.lock());
    let view = reader_view(&s.0.lock());
    let (_, _, got) = view.iter().find(|(p, _, _)| p == b"/f0").unwrap();
    assert_eq!(got, &bytes(DATA_BLOCK_BYTES, 19));
}

/// Writers changing the very chains being placed, on another thread: the commit holds the
/// last version of each, exact.
#[test]
fn changes_racing_the_writes_ahead_commit_their_last_version() {
    let len = |k: u64| match k % 3 {
        0 => 2 * DATA_BLOCK_BYTES,
        _ => DATA_BLOCK_BYTES + 100,
    };
    for round in 0..10u64 {
        let (_m, s, c, mut sm) = synced(2, 2);
        let slave = c.store(1).unwrap();
        let vol = Volume::open(&*s).unwrap();
        let mut wa = write_ahead(&vol, slave, &mut sm);
        let done = AtomicBool::new(false);
        std::thread::scope(|t| {
            let w = t.spawn(|| {
                for k in 0..60u64 {
                    let f: &[u8] = if k % 2 == 0 { b"/f0" } else { b"/f1" };
                    slave
                        .write(f, &bytes(len(k), (k + round) as u8), 9000 + k)
                        .unwrap();
                }
                done.store(true, Ordering::Release);
            });
            while !done.load(Ordering::Acquire) {
                if wa.place(2).unwrap() == 0 {
                    std::thread::yield_now();
                }
            }
            w.join().unwrap();
        });
        let (_, r) = commit_ahead(wa, &mut |_| {});
        r.unwrap();
        exact(&s.0.lock());
        let view = reader_view(&s.0.lock());
        assert!(store_view(slave)[1..] == view[1..], "round {round}");
        for (f, k) in [(&b"/f0"[..], 58), (&b"/f1"[..], 59)] {
            let (_, _, got) = view.iter().find(|(p, _, _)| p == f).unwrap();
            assert_eq!(got, &bytes(len(k), (k + round) as u8), "round {round}");
        }
    }
}

/// Given up without a commit (dropped, or abandoned after a failed write), a write-ahead
/// loses nothing: the volume keeps its last commit, abandoned it gives the mount back the
/// space its transaction learned, and a commit as usual writes everything, with no space
/// lost to the blocks written.
#[test]
fn a_write_ahead_given_up_leaves_the_last_commit() {
    let (m, s, c, mut sm) = synced(4, 2);
    let slave = c.store(1).unwrap();
    let vol = Volume::open(&*s).unwrap();
    let before = reader_view(&s.0.lock());
    let mut wa = write_ahead(&vol, slave, &mut sm);
    place_all(&mut wa, 64);
    assert_eq!(wa.written().0, 8);
    drop(wa);
    assert!(reader_view(&s.0.lock()) == before, "nothing committed");
    exact(&s.0.lock());
    assert!(sm.space.is_none(), "taken by the write-ahead dropped");
    // A device write failing in the middle of the writes ahead.
    let mut wa = write_ahead(&vol, slave, &mut sm);
    let w = s.0.lock().writes.get();
    s.0.lock().fail_write_after = Some(w + 3);
    let failed = place_until_error(&mut wa, 1);
    s.0.lock().fail_write_after = None;
    assert_eq!(failed, Some(Error::Io));
    let sm = wa.abandon();
    assert!(sm.space.is_some(), "given back");
    assert!(reader_view(&s.0.lock()) == before);
    commit(&vol, slave, sm).unwrap();
    assert_eq!(sm.io().ahead, 0);
    exact(&s.0.lock());
    assert!(reader_view(&s.0.lock())[1..] == reader_view(&m.0.lock())[1..]);
}

/// A commit in a write-ahead's transaction failing at each of its writes: the volume keeps
/// its last commit, and a commit as usual after it writes everything, exact.
#[test]
fn a_failed_commit_ahead_leaves_the_last_commit_and_the_next_writes_all() {
    let mut failed = 0;
    for k in [0u64, 1, 2, 4, 6, 8, 12] {
        let (m, s, c, mut sm) = pair(4, 2);
        let slave = c.store(1).unwrap();
        sync_until_in_sync(&c, 1);
        let before = reader_view(&s.0.lock());
        let vol = Volume::open(&*s).unwrap();
        let mut wa = write_ahead(&vol, slave, &mut sm);
        place_all(&mut wa, 64);
        slave.write(b"/f1", &bytes(777, 1), 7000).unwrap();
        let w = s.0.lock().writes.get();
        s.0.lock().fail_write_after = Some(w + k);
        let (sm, r) = commit_ahead(wa, &mut |_| {});
        s.0.lock().fail_write_after = None;
        if r.is_ok() {
            continue;
        }
        failed += 1;
        assert!(reader_view(&s.0.lock()) == before, "k={k}");
        exact(&s.0.lock());
        commit(&Volume::open(&*s).unwrap(), slave, sm).unwrap();
        exact(&s.0.lock());
        let mut want = reader_view(&m.0.lock());
        let got = reader_view(&s.0.lock());
        want.retain(|(p, _, _)| p != b"/f1");
        assert!(got
            .iter()
            .any(|(p, _, b)| p == b"/f1" && b == &bytes(777, 1)));
        assert_eq!(got.len(), want.len() + 1);
    }
    assert!(failed >= 4, "{failed}");
}

/// Another writer commits the volume while a write-ahead's transaction is open: the next
/// writes ahead and the commit in it fail `Busy` (nothing more written), the other
/// writer's commit stays whole, and a plain commit on the stale volume is refused too.
#[test]
fn another_writers_commit_during_a_write_ahead_is_refused() {
    let (_m, s, c, mut sm) = synced(4, 2);
    let slave = c.store(1).unwrap();
    let vol = Volume::open(&*s).unwrap();
    let mut wa = write_ahead(&vol, slave, &mut sm);
    place_all(&mut wa, 64);
    assert_eq!(wa.written().0, 8);
    {
        let (other, mut om) = load_lazy(&s, BUDGET);
        other
            .write(b"/ext", &bytes(3 * DATA_BLOCK_BYTES, 0x5a), 50_000)
            .unwrap();
        commit(&Volume::open(&*s).unwrap(), &other, &mut om).unwrap();
    }
    let theirs = reader_view(&s.0.lock());
    assert!(theirs.iter().any(|(p, _, _)| p == b"/ext"));
    slave
        .write(b"/f3", &bytes(2 * DATA_BLOCK_BYTES, 7), 60_000)
        .unwrap();
    let writes = s.0.lock().writes.get();
    assert_eq!(wa.place(64), Err(Error::Busy));
    assert_eq!(s.0.lock().writes.get(), writes, "nothing written");
    let (sm, r) = commit_ahead(wa, &mut |_| {});
    assert_eq!(r.map(|h| h.mirror_tid), Err(Error::Busy));
    assert_eq!(s.0.lock().writes.get(), writes, "nothing written");
    assert_eq!(
        commit(&vol, slave, sm).map(|h| h.mirror_tid),
        Err(Error::Busy)
    );
    exact(&s.0.lock());
    assert!(reader_view(&s.0.lock()) == theirs);
}

/// A volume with room for the tree but not for every version written ahead: the writes
/// ahead and then the commit in their transaction fail with no space, and a plain commit
/// after them (the CLI's fallback) writes everything, the blocks written ahead free again.
#[test]
fn no_space_with_the_blocks_written_ahead_falls_back_to_a_plain_commit() {
    let s = shared(make_sized(48 << 20));
    let (store, mut sm) = load_lazy(&s, 64 << 20);
    let vol = Volume::open(&*s).unwrap();
    let mut wa = write_ahead(&vol, &store, &mut sm);
    let len = 64 * DATA_BLOCK_BYTES;
    let mut k = 0u8;
    let err = loop {
        store
            .write(b"/big", &bytes(len, k), 1000 + u64::from(k))
            .unwrap();
        if let Some(e) = place_until_error(&mut wa, 64) {
            break e;
        }
        k += 1;
        assert!(k < 100);
    };
    assert_eq!(err, Error::NoSpace);
    let (m, r) = commit_ahead(wa, &mut |_| {});
    assert_eq!(r.map(|h| h.mirror_tid), Err(Error::NoSpace));
    commit(&Volume::open(&*s).unwrap(), &store, m).unwrap();
    exact(&s.0.lock());
    let view = reader_view(&s.0.lock());
    let (_, _, got) = view.iter().find(|(p, _, _)| p == b"/big").unwrap();
    assert!(got == &bytes(len, k));
}

/// One call writes at most [`crate::mount::PLACE_BYTES`], and looks at no entry past them.
#[test]
fn one_place_writes_a_bounded_batch() {
    let (_m, s, c, mut sm) = synced(2, 64);
    let slave = c.store(1).unwrap();
    let vol = Volume::open(&*s).unwrap();
    let mut wa = write_ahead(&vol, slave, &mut sm);
    let per_call = (crate::mount::PLACE_BYTES / DATA_BLOCK_BYTES as u64) as usize;
    assert!(wa.place(1 << 20).unwrap() > 0);
    assert_eq!(wa.written().0, per_call);
    place_all(&mut wa, 1 << 20);
    assert_eq!(wa.written().0, 128);
    let (sm, r) = commit_ahead(wa, &mut |_| {});
    r.unwrap();
    assert_eq!(sm.io().ahead, 128);
    exact(&s.0.lock());
}
