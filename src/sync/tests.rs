//! Synchronizer tests: convergence of whole clusters by repeated `sync_node` (no threads), and
//! one regression test per fixed original bug (2, 6, 7, 8, 9, 10, 12).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;
use core::pin::Pin;
use std::boxed::Box;
use std::sync::atomic::{AtomicBool, Ordering as AO};

use super::slaves::{destroy, insert, sync_slaves, FocusCopy};
use super::*;
use crate::cluster::{Cluster, FrontendOp, NodeSet, Role};
use crate::host::LockMode;
use crate::media;
use crate::media::SET_COUNT;
use crate::quorum::QuorumResult;
use crate::store::testhost::host;
use crate::store::RUN;

const M: Role = Role::Master;
const S: Role = Role::Slave;

fn cluster(roles: &[Role]) -> Pin<Box<Cluster>> {
    Cluster::new(host(), roles).unwrap()
}

fn set(ix: &[usize]) -> NodeSet {
    NodeSet(ix.iter().fold(0u8, |a, &i| a | (1 << i)))
}

fn all(c: &Cluster) -> NodeSet {
    NodeSet(((1u16 << c.len()) - 1) as u8)
}

fn mkdir(c: &Cluster, s: NodeSet, p: &str) {
    c.apply(s, FrontendOp::Mkdir(p.as_bytes())).unwrap();
}

fn write(c: &Cluster, s: NodeSet, p: &str, d: &[u8]) {
    c.apply(s, FrontendOp::Write(p.as_bytes(), d)).unwrap();
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn root_tid(c: &Cluster, i: usize) -> u64 {
    c.stat(i, b"/").unwrap().modify_tid
}

/// Sync every node until no PFS root changes (at most 8 rounds); the number of rounds run.
fn sync_all(c: &Cluster) -> usize {
    for round in 1..=8 {
        let before: Vec<u64> = (0..c.len()).map(|i| root_tid(c, i)).collect();
        for i in 0..c.len() {
            c.sync_node(i, &|| false).unwrap();
        }
        let after: Vec<u64> = (0..c.len()).map(|i| root_tid(c, i)).collect();
        if before == after {
            return round;
        }
    }
    panic!("cluster did not settle");
}

fn assert_same(c: &Cluster, a: usize, b: usize) {
    let mut s = String::new();
    assert!(
        c.compare(a, b, &mut s).unwrap(),
        "node {b} differs from node {a}:\n{s}"
    );
}

fn focus_tid(c: &Cluster) -> u64 {
    match c.focus_root() {
        QuorumResult::Focus { tid, .. } => tid,
        QuorumResult::None(e) => panic!("no focus: {e}"),
    }
}

#[test]
fn divergent_masters_and_slave_converge() {
    let c = cluster(&[M, M, M, S]);
    mkdir(&c, all(&c), "/docs");
    write(&c, all(&c), "/docs/readme", b"hello");
    write(&c, set(&[0, 1]), "/docs/readme", b"hello, world");
    write(&c, set(&[2]), "/docs/minority", b"only node 2 has this");
    c.apply(set(&[3]), FrontendOp::Chmod(b"/docs", 0o700))
        .unwrap();
    // Node 2 holds a TID nobody else has; nodes 0 and 1 agree at 3: the focus.
    assert_eq!(focus_tid(&c), 3);
    sync_all(&c);
    assert_eq!(focus_tid(&c), 3);
    for i in 1..4 {
        assert_same(&c, 0, i);
        assert!(c.in_sync(i));
    }
    assert_eq!(c.read_file(2, b"/docs/readme").unwrap(), b"hello, world");
    assert_eq!(c.stat(3, b"/docs").unwrap().mode, 0o755);
    let st = c.stats(2);
    assert!(
        st.passes >= 1 && st.replaced >= 2 && st.destroyed >= 1,
        "{st:?}"
    );
    assert!(c.stats(3).scanned >= 2);
}

#[test]
fn master_behind_the_quorum_catches_up() {
    let c = cluster(&[M, M, M]);
    mkdir(&c, all(&c), "/a");
    for i in 0..20 {
        write(
            &c,
            set(&[0, 1]),
            &format!("/a/f{i}"),
            &pattern(300 * i, i as u8),
        );
    }
    mkdir(&c, set(&[0, 1]), "/a/b");
    write(&c, set(&[0, 1]), "/a/b/deep", &pattern(100_000, 9));
    let t = focus_tid(&c);
    sync_all(&c);
    assert_eq!(root_tid(&c, 2), t);
    assert_same(&c, 0, 2);
    assert_eq!(c.read_file(2, b"/a/b/deep").unwrap(), pattern(100_000, 9));
}

#[test]
fn slave_from_empty_with_hardlinks() {
    let c = cluster(&[M, M, S]);
    mkdir(&c, set(&[0, 1]), "/d");
    write(&c, set(&[0, 1]), "/d/f", b"target");
    c.apply(set(&[0, 1]), FrontendOp::Link(b"/d/f", b"/l"))
        .unwrap();
    sync_all(&c);
    assert_same(&c, 0, 2);
    let st = c.stat(2, b"/l").unwrap();
    assert_eq!(st.objtype, media::OBJTYPE_HARDLINK);
    assert_eq!(c.read_file(2, b"/l").unwrap(), b"target");
    // A hardlink pointer is a leaf: it gets the focus TID at once, never deferred.
    assert_eq!(st.modify_tid, c.stat(0, b"/l").unwrap().modify_tid);
}

#[test]
fn chmod_only_change_is_synchronized() {
    let c = cluster(&[M, M, S]);
    write(&c, all(&c), "/f", b"x");
    c.apply(set(&[0, 1]), FrontendOp::Chmod(b"/f", 0o600))
        .unwrap();
    sync_all(&c);
    assert_eq!(c.stat(2, b"/f").unwrap().mode, 0o600);
    assert_same(&c, 0, 2);
}

/// Bug 8: sizes cross the 512-byte DIRECTDATA boundary and 64 KiB blocks both ways.
#[test]
fn bug8_resize_follows_the_focus_size() {
    let cases = [
        (100usize, 600usize),
        (600, 100),
        (512, 513),
        (513, 512),
        (70_000, 140_000),
        (140_000, 70_000),
        (200_000, 10),
        (10, 200_000),
        (66_000, 65_536),
    ];
    let c = cluster(&[M, M, S]);
    for (i, (local, focus)) in cases.iter().enumerate() {
        let p = format!("/f{i}");
        write(&c, set(&[2]), &p, &pattern(*local, i as u8));
        write(&c, set(&[0, 1]), &p, &pattern(*focus, 100 + i as u8));
    }
    sync_all(&c);
    assert_same(&c, 0, 2);
    for (i, (_, focus)) in cases.iter().enumerate() {
        let p = format!("/f{i}");
        assert_eq!(
            c.read_file(2, p.as_bytes()).unwrap(),
            pattern(*focus, 100 + i as u8),
            "{p}"
        );
    }
}

#[test]
fn bug8_copy_takes_the_focus_length() {
    let c = cluster(&[M, S]);
    write(&c, set(&[1]), "/f", &pattern(70_000, 1)); // local tail block: 8 KiB
    write(&c, set(&[0]), "/f", &pattern(131_072, 2)); // focus: two full 64 KiB blocks
    let (m, s) = (c.store(0).unwrap(), c.store(1).unwrap());
    let fid = m.resolve(b"/f").unwrap();
    let (fb, _) = m.lookup(fid, 65536, media::KEY_MAX).unwrap().unwrap();
    let sid = s.resolve(b"/f").unwrap();
    let (lid, _) = s.lookup(sid, 65536, media::KEY_MAX).unwrap().unwrap();
    let roles = [M, S];
    let stores = [m, s];
    let peers = Peers {
        stores: &stores,
        roles: &roles,
        nmasters: 1,
        changes: None,
        host: host(),
        faults: None,
        catchup: false,
    };
    let mut stats = SyncStats::default();
    let mut ctx = Ctx {
        peers: &peers,
        idx: 1,
        brk: &crate::thread::Brk::new(&|| false),
        mode: ScanMode::default(),
        stats: &mut stats,
        pool: None,
    };
    let fc = FocusCopy::read(
        &ctx,
        &collect::Focus {
            node: 0,
            id: fb,
            head: collect::Head::of(&m.bref(fb).unwrap()),
            catchup: false,
        },
    )
    .unwrap();
    let g = s.lock(sid, LockMode::Exclusive).unwrap();
    let want = fc.body.body().try_clone().unwrap();
    slaves::replace(&mut ctx, &g, lid, fc, 9).unwrap();
    drop(g);
    let (b, body) = s.read(lid).unwrap();
    assert_eq!(b.data_bytes(), 65536);
    assert_eq!(b.modify_tid, 9);
    assert_eq!(body, want, "all of the focus's bytes, no more, no less");
    b.verify_check(match &body {
        crate::store::Body::Data(d) => d,
        _ => panic!(),
    })
    .unwrap();
}

#[test]
fn directdata_data_transitions_of_one_file_over_time() {
    let c = cluster(&[M, M, S]);
    for (k, n) in [10usize, 70_000, 300, 512, 513, 0, 131_073]
        .iter()
        .enumerate()
    {
        write(&c, set(&[0, 1]), "/f", &pattern(*n, k as u8));
        sync_all(&c);
        assert_same(&c, 0, 2);
        assert_eq!(c.read_file(2, b"/f").unwrap(), pattern(*n, k as u8));
    }
}

#[test]
fn thirteen_hundred_subdirectories_into_an_empty_slave() {
    for mode in [ScanMode::Pruned, ScanMode::Original] {
        let c = cluster(&[M, M, S]);
        c.set_scan_mode(mode);
        mkdir(&c, set(&[0, 1]), "/top");
        for i in 0..1300 {
            mkdir(&c, set(&[0, 1]), &format!("/top/d{i:04}"));
        }
        write(&c, set(&[0, 1]), "/top/d0007/f", b"leaf");
        // One pass: the deferral list overflows (EAGAIN) and the driver re-scans until done.
        c.sync_node(2, &|| false).unwrap();
        assert!(c.in_sync(2));
        assert_same(&c, 0, 2);
        let st = c.stats(2);
        assert!(st.deferred >= 1302, "{st:?}");
        assert!(st.inserted >= 1302, "{st:?}");
        // The re-scan after EAGAIN continues where the scan stopped: about one comparison per
        // chain, not one per chain per batch of deferrals. The pruned walk also counts the
        // spans it visits (indirect blocks and runs of at most RUN children: about
        // 1300 / RUN plus the blocks, and the path back down to the resume key on each
        // re-scan).
        let summaries = match mode {
            ScanMode::Pruned => 300,
            ScanMode::Original => 0,
        };
        assert!(st.scanned < 2 * 1302 + 50 + summaries, "{mode:?}: {st:?}");
        assert_eq!(c.read_file(2, b"/top/d0007/f").unwrap(), b"leaf");
        // A second pass finds nothing to do.
        c.sync_node(2, &|| false).unwrap();
        assert_eq!(c.stats(2).inserted, st.inserted);
    }
}

#[test]
fn without_quorum_nothing_changes() {
    let c = cluster(&[M, M, M, S]);
    mkdir(&c, set(&[0]), "/a");
    mkdir(&c, set(&[1]), "/b");
    mkdir(&c, set(&[2]), "/c");
    write(&c, set(&[3]), "/s", b"slave");
    assert!(matches!(c.focus_root(), QuorumResult::None(_)));
    let snaps: Vec<_> = (0..4).map(|i| c.snapshot(i).unwrap()).collect();
    for i in 0..4 {
        c.sync_node(i, &|| false).unwrap();
    }
    for (i, s) in snaps.iter().enumerate() {
        let mut out = String::new();
        assert!(
            s.matches(&c, i, &mut out).unwrap(),
            "node {i} changed:\n{out}"
        );
    }
}

#[test]
fn roles_come_from_the_nodes_view() {
    let c = cluster(&[M, S, S]);
    write(&c, set(&[0]), "/f", b"one");
    write(&c, set(&[1]), "/g", b"two");
    // Node 1 becomes the only master, but node 2 has not re-read the roles: it follows node 0.
    c.set_role(0, S);
    c.set_role(1, M);
    c.sync_node(2, &|| false).unwrap();
    assert_eq!(c.read_file(2, b"/f").unwrap(), b"one");
    c.refresh_view(2);
    c.sync_node(2, &|| false).unwrap();
    assert_eq!(c.read_file(2, b"/g").unwrap(), b"two");
    assert_eq!(c.read_file(2, b"/f"), Err(Error::NotFound));
}

/// Bug 2: the break is polled at every chain operation, and a break stops the pass at once.
#[test]
fn bug2_break_is_polled_inside_scans() {
    let c = cluster(&[M, S]);
    for i in 0..50 {
        write(&c, set(&[0]), &format!("/f{i}"), b"x");
    }
    let calls = Cell::new(0u64);
    let r = c.sync_node(1, &|| {
        calls.set(calls.get() + 1);
        calls.get() > 3
    });
    assert_eq!(r, Err(Error::InProgress));
    assert_eq!(calls.get(), 4, "stopped at the first poll that asked");
    assert!(c.stats(1).scanned <= 3);
    assert!(!c.in_sync(1));
    let calls = Cell::new(0u64);
    c.sync_node(1, &|| {
        calls.set(calls.get() + 1);
        false
    })
    .unwrap();
    assert!(
        calls.get() >= c.stats(1).scanned - 3,
        "one poll per chain operation at least"
    );
    assert_same(&c, 0, 1);
}

/// Bug 6: after a destroy the scan continues from the next chain of the (valid) parent.
#[test]
fn bug6_destroy_continues_through_the_held_parent() {
    let c = cluster(&[M, S]);
    for n in ["/x1", "/x2", "/x3"] {
        write(&c, set(&[1]), n, b"extra");
    }
    let s = c.store(1).unwrap();
    let roles = [M, S];
    let stores = [c.store(0).unwrap(), s];
    let peers = Peers {
        stores: &stores,
        roles: &roles,
        nmasters: 1,
        changes: None,
        host: host(),
        faults: None,
        catchup: false,
    };
    let mut stats = SyncStats::default();
    let mut ctx = Ctx {
        peers: &peers,
        idx: 1,
        brk: &crate::thread::Brk::new(&|| false),
        mode: ScanMode::default(),
        stats: &mut stats,
        pool: None,
    };
    let g = s.lock_root(LockMode::Exclusive);
    let (first, fb) = s.lookup(s.root(), 0, media::KEY_MAX).unwrap().unwrap();
    let (second, _) = s.next(s.root(), &fb, media::KEY_MAX).unwrap().unwrap();
    let next = destroy(&mut ctx, &g, first, &fb).unwrap();
    assert_eq!(next.map(|(id, _)| id), Some(second));
    drop(g);
    assert_eq!(s.child_count(s.root()).unwrap(), 2);
    // And through a whole pass: every extra chain goes, the focus's arrive.
    write(&c, set(&[0]), "/y", b"focus");
    c.sync_node(1, &|| false).unwrap();
    assert_same(&c, 0, 1);
}

/// Bug 7: a deferred inode gone locally is NotFound (no None dereference), and with no focus at
/// the final update the inode is not stamped.
#[test]
fn bug7_missing_local_chain_and_missing_final_focus() {
    let c = cluster(&[M, M, S]);
    mkdir(&c, all(&c), "/gone");
    let s = c.store(2).unwrap();
    let stale = s.resolve(b"/gone").unwrap();
    c.apply(set(&[2]), FrontendOp::Rm(b"/gone")).unwrap();
    let roles = [M, M, S];
    let stores = [c.store(0).unwrap(), c.store(1).unwrap(), s];
    let peers = Peers {
        stores: &stores,
        roles: &roles,
        nmasters: 2,
        changes: None,
        host: host(),
        faults: None,
        catchup: false,
    };
    let mut stats = SyncStats::default();
    let mut ctx = Ctx {
        peers: &peers,
        idx: 2,
        brk: &crate::thread::Brk::new(&|| false),
        mode: ScanMode::default(),
        stats: &mut stats,
        pool: None,
    };
    let mut list = Vec::new();
    assert_eq!(
        sync_slaves(&mut ctx, stale, &mut list, false, &mut None),
        Err(Error::NotFound)
    );

    // The directory vanishes from every master while node 2 scans it.
    mkdir(&c, set(&[0, 1]), "/d");
    write(&c, set(&[0, 1]), "/d/f", b"x");
    let done = Cell::new(false);
    let seen = Cell::new(0);
    let r = c.sync_node(2, &|| {
        // /d itself still at TID 0, its child already synchronized: seen first by the driver's
        // poll after /d/f, then inside /d's re-scan, after its collector started.
        let tid = |p: &[u8]| c.stat(2, p).map(|s| s.modify_tid);
        if !done.get() && tid(b"/d") == Ok(0) && tid(b"/d/f").is_ok_and(|t| t != 0) {
            seen.set(seen.get() + 1);
        }
        if !done.get() && seen.get() == 2 {
            done.set(true);
            c.apply(set(&[0, 1]), FrontendOp::Rm(b"/d")).unwrap();
        }
        false
    });
    assert!(done.get());
    assert_eq!(r, Err(Error::InProgress));
    assert_eq!(
        c.stat(2, b"/d").unwrap().modify_tid,
        0,
        "not stamped without a focus"
    );
    sync_all(&c);
    assert_same(&c, 0, 2);
}

/// Bug 9: a failing child operation fails the inode's sync; the inode is not stamped.
#[test]
fn bug9_child_error_propagates_and_parent_is_not_stamped() {
    let c = cluster(&[M, M, S]);
    write(&c, set(&[0, 1]), "/a", b"x");
    let t = focus_tid(&c);
    let fired = Cell::new(false);
    // The focus chain of /a disappears from the focus node between the choice and the copy.
    let r = c.sync_node(2, &|| {
        if !fired.get() {
            fired.set(true);
            c.store(0).unwrap().rm(b"/a", 100).unwrap();
        }
        false
    });
    assert!(fired.get());
    assert!(r.is_err(), "the child's failure reaches the caller");
    assert_ne!(
        root_tid(&c, 2),
        t,
        "the root is never stamped over a failed child"
    );
    assert_eq!(c.stats(2).inserted, 0);
}

/// Bug 10: the inode stays locked from the check to the final update, so a frontend change
/// made meanwhile is never hidden under the focus's TID.
#[test]
fn bug10_frontend_change_during_scan_is_not_stamped_over() {
    let c = cluster(&[M, M, S]);
    mkdir(&c, set(&[0, 1]), "/a");
    write(&c, set(&[0, 1]), "/a/f", b"x");
    let cl: &Cluster = &c;
    let landed = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let spawned = Cell::new(false);
        let handle = core::cell::RefCell::new(None);
        let r = cl.sync_node(2, &|| {
            // Inside /a's scan (it was inserted with TID 0 and is being synchronized).
            if !spawned.get() && cl.stat(2, b"/a").map(|s| s.modify_tid) == Ok(0) {
                spawned.set(true);
                let landed = &landed;
                *handle.borrow_mut() = Some(sc.spawn(move || {
                    cl.apply(set(&[2]), FrontendOp::Write(b"/a/g", b"local"))
                        .unwrap();
                    landed.store(true, AO::SeqCst);
                }));
                // Give an unlocked implementation every chance to let the write in.
                let t0 = std::time::Instant::now();
                while !landed.load(AO::SeqCst)
                    && t0.elapsed() < std::time::Duration::from_millis(200)
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                assert!(
                    !landed.load(AO::SeqCst),
                    "the write got in while /a was being synced"
                );
            }
            false
        });
        // The change started during the pass: the final stamp is refused (F2) or came first.
        assert!(matches!(r, Ok(()) | Err(Error::InProgress)), "{r:?}");
        handle.into_inner().unwrap().join().unwrap();
    });
    assert!(landed.load(AO::SeqCst));
    // The write came after the stamp: the node is out of sync and the next pass repairs it.
    sync_all(&c);
    assert_same(&c, 0, 2);
}

/// Bug 12: an insert that finds a chain already at the key replaces it instead of panicking.
#[test]
fn bug12_insert_over_an_existing_key_replaces() {
    let c = cluster(&[M, S]);
    write(&c, set(&[0]), "/f", b"focus");
    write(&c, set(&[1]), "/f", b"concurrent");
    let (m, s) = (c.store(0).unwrap(), c.store(1).unwrap());
    let roles = [M, S];
    let stores = [m, s];
    let peers = Peers {
        stores: &stores,
        roles: &roles,
        nmasters: 1,
        changes: None,
        host: host(),
        faults: None,
        catchup: false,
    };
    let mut stats = SyncStats::default();
    let mut ctx = Ctx {
        peers: &peers,
        idx: 1,
        brk: &crate::thread::Brk::new(&|| false),
        mode: ScanMode::default(),
        stats: &mut stats,
        pool: None,
    };
    let fid = m.resolve(b"/f").unwrap();
    let fc = FocusCopy::read(
        &ctx,
        &collect::Focus {
            node: 0,
            id: fid,
            head: collect::Head::of(&m.bref(fid).unwrap()),
            catchup: false,
        },
    )
    .unwrap();
    let g = s.lock_root(LockMode::Exclusive);
    let key = fc.bref.key;
    let (id, b) = insert(&mut ctx, &g, fc, 0).unwrap();
    drop(g);
    assert_eq!(b.key, key);
    assert_eq!(s.child_count(s.root()).unwrap(), 1);
    assert_eq!(s.read_file(id).unwrap(), b"focus");
    assert_eq!((stats.replaced, stats.inserted), (1, 0));
}

#[test]
fn chain_locks_are_all_released_and_destroyed() {
    let h = host();
    let c = Cluster::new(h, &[M, M, S]).unwrap();
    mkdir(&c, set(&[0, 1]), "/a");
    write(&c, set(&[0, 1]), "/a/f", &pattern(200_000, 3));
    write(&c, set(&[2]), "/junk", b"j");
    sync_all(&c);
    c.apply(set(&[0, 1]), FrontendOp::Rm(b"/a")).unwrap();
    sync_all(&c);
    assert_same(&c, 0, 2);
    // Every remaining lock can be taken exclusively (none leaked held), then all are destroyed.
    for i in 0..3 {
        let s = c.store(i).unwrap();
        drop(s.lock(s.root(), LockMode::Exclusive).unwrap());
    }
    drop(c);
    assert_eq!(h.live_locks(), 0);
}

/// The seed-era TID model, kept as the contract says (one TID per change, on every node of the
/// set): a change applied to every node after they diverged stamps the lagging node with the
/// common TID too, which hides the divergence below it. Only a later change on the quorum
/// (without the lagging node) makes it visible again.
#[test]
fn common_change_after_divergence_is_masked_until_the_quorum_moves_on() {
    let c = cluster(&[M, S]);
    mkdir(&c, all(&c), "/d");
    mkdir(&c, set(&[0]), "/d/e");
    write(&c, all(&c), "/d/common", b"c");
    assert!(
        c.in_sync(1),
        "equal TIDs: the synchronizer sees nothing to do"
    );
    sync_all(&c);
    assert_eq!(c.stat(1, b"/d/e"), Err(Error::NotFound));
    write(&c, set(&[0]), "/d/common", b"c2");
    sync_all(&c);
    assert_same(&c, 0, 1);
}

/// Frontend changes on the masters while every other node synchronizes concurrently from its
/// own thread (real host locks): no deadlock, and once quiet everyone converges.
#[test]
fn concurrent_frontend_and_sync_threads_converge() {
    let c = Cluster::new(crate::userland::host(), &[M, M, M, S, S]).unwrap();
    let cl: &Cluster = &c;
    let stop = AtomicBool::new(false);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    std::thread::scope(|sc| {
        for idx in 2..5 {
            let stop = &stop;
            sc.spawn(move || {
                while !stop.load(AO::SeqCst) {
                    match cl.sync_node(idx, &|| stop.load(AO::SeqCst)) {
                        Ok(()) | Err(Error::InProgress) => {}
                        Err(e) => panic!("node {idx}: {e}"),
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            });
        }
        let masters = set(&[0, 1]);
        for d in 0..4 {
            mkdir(cl, masters, &format!("/d{d}"));
        }
        let mut applied = 0;
        for i in 0..300u64 {
            let d = format!("/d{}", rnd(4));
            let f = format!("{d}/f{}", rnd(6));
            let op_path;
            let data;
            let op = match rnd(6) {
                0 => FrontendOp::Mkdir(d.as_bytes()),
                1 | 2 => {
                    data = pattern([10, 600, 70_000][rnd(3) as usize], i as u8);
                    op_path = f;
                    FrontendOp::Write(op_path.as_bytes(), &data)
                }
                3 => FrontendOp::Chmod(f.as_bytes(), 0o600 + rnd(0o100) as u32),
                4 => FrontendOp::Rm(if rnd(5) == 0 {
                    d.as_bytes()
                } else {
                    f.as_bytes()
                }),
                _ => FrontendOp::Link(f.as_bytes(), b"/link"),
            };
            if cl.apply(masters, op).is_ok() {
                applied += 1;
            }
        }
        stop.store(true, AO::SeqCst);
        assert!(applied >= 100, "only {applied} changes applied");
    });
    assert!((2..5).all(|i| c.stats(i).passes > 3));
    sync_all(&c);
    for i in 1..5 {
        assert_same(&c, 0, i);
        assert!(c.in_sync(i), "node {i}");
    }
}

/// A key without a quorum is skipped as the seed skips it (our copy destroyed), except when it
/// was read while a frontend change was in flight: then our copy is left alone and the inode is
/// not stamped (the next pass decides).
#[test]
fn key_without_quorum_during_a_change_in_flight_is_left_alone() {
    let c = cluster(&[M, M, S]);
    mkdir(&c, all(&c), "/d");
    write(&c, all(&c), "/d/k", b"x");
    write(&c, set(&[2]), "/d/other", b"slave only");
    // Node 0 has a change to /d/k that node 1 has not (as in the middle of applying it).
    let s0 = c.store(0).unwrap();
    let k = s0.resolve(b"/d/k").unwrap();
    let g = s0.lock(k, LockMode::Exclusive).unwrap();
    s0.set_modify_tid(&g, 99).unwrap();
    drop(g);
    let roles = [M, M, S];
    let stores = [s0, c.store(1).unwrap(), c.store(2).unwrap()];
    let in_flight = std::sync::atomic::AtomicU64::new(7);
    for (changes, kept) in [(Some(&in_flight), true), (None, false)] {
        let peers = Peers {
            stores: &stores,
            roles: &roles,
            nmasters: 2,
            changes,
            host: host(),
            faults: None,
            catchup: false,
        };
        let mut stats = SyncStats::default();
        let r = sync_pass(&peers, 2, &|| false, &mut stats);
        if kept {
            // F2: while a change is in flight the pass changes nothing at all (a quorum of
            // nodes the change has not reached yet must not undo it where it has).
            assert_eq!(r, Err(Error::InProgress));
            assert_eq!(c.read_file(2, b"/d/other").unwrap(), b"slave only");
            assert_eq!(c.read_file(2, b"/d/k").unwrap(), b"x", "our copy is kept");
            assert_ne!(c.stat(2, b"/d").unwrap().modify_tid, 2, "not stamped");
        } else {
            r.unwrap();
            assert_eq!(c.read_file(2, b"/d/other"), Err(Error::NotFound));
            assert_eq!(c.stat(2, b"/d/k"), Err(Error::NotFound), "the seed's skip");
            assert_eq!(c.stat(2, b"/d").unwrap().modify_tid, 2);
        }
    }
}

/// Frontend changes applied node by node to the masters, then to every node, while every node
/// synchronizes from its own thread: a slave never loses a directory to a half-applied change
/// (the frontend's writes into it always find it).
#[test]
fn changes_in_flight_on_the_masters_never_destroy_slave_data() {
    for _round in 0..10 {
        let c = Cluster::new(crate::userland::host(), &[M, M, S, S]).unwrap();
        let cl: &Cluster = &c;
        let stop = AtomicBool::new(false);
        mkdir(cl, all(cl), "/race");
        std::thread::scope(|sc| {
            for idx in 0..4 {
                let stop = &stop;
                sc.spawn(move || {
                    while !stop.load(AO::SeqCst) {
                        let _ = cl.sync_node(idx, &|| stop.load(AO::SeqCst));
                    }
                });
            }
            for k in 0..40 {
                let p = format!("/race/n{k}");
                let v = format!("v{k}");
                let r1 = cl.apply(set(&[0, 1]), FrontendOp::Write(p.as_bytes(), v.as_bytes()));
                let r2 = cl.apply(all(cl), FrontendOp::Write(p.as_bytes(), v.as_bytes()));
                if r1.is_err() || r2.is_err() {
                    stop.store(true, AO::SeqCst);
                    panic!("{p}: {r1:?} {r2:?}");
                }
            }
            stop.store(true, AO::SeqCst);
        });
        sync_all(&c);
        for i in 1..4 {
            assert_same(&c, 0, i);
        }
    }
}

/// A frontend change on our node between an interrupted scan and its re-scan (here: to an entry
/// the scan already brought up to date) drops the resume point: the re-scan starts over and the
/// change is not stamped over.
#[test]
fn resume_is_dropped_when_our_node_changes_meanwhile() {
    // /top and its entries fill the deferral list exactly: the interrupted scan has nothing
    // left after its resume point, so a resumed scan would stamp /top at once.
    const N: usize = MAX_DEFER - 1;
    let c = cluster(&[M, M, S]);
    mkdir(&c, set(&[0, 1]), "/top");
    for i in 0..N {
        mkdir(&c, set(&[0, 1]), &format!("/top/d{i:04}"));
    }
    let cl: &Cluster = &c;
    let done = Cell::new(false);
    let calls = Cell::new(0u32);
    let r = cl.sync_node(2, &|| {
        calls.set(calls.get() + 1);
        // Once /top's first batch has been synchronized, while /top waits to be re-scanned.
        if done.get() || calls.get() % 64 != 0 || cl.stat(2, b"/top").map(|s| s.modify_tid) != Ok(0)
        {
            return false;
        }
        let synced = (0..N).find(|i| {
            let p = format!("/top/d{i:04}");
            cl.stat(2, p.as_bytes()).ok().map(|s| s.modify_tid)
                == cl.stat(0, p.as_bytes()).ok().map(|s| s.modify_tid)
        });
        if let Some(i) = synced {
            done.set(true);
            let p = format!("/top/d{i:04}/junk");
            cl.apply(set(&[2]), FrontendOp::Write(p.as_bytes(), b"slave only"))
                .unwrap();
        }
        false
    });
    r.unwrap();
    assert!(done.get(), "the change was made mid-pass");
    if c.in_sync(2) {
        assert_same(&c, 0, 2);
    }
    sync_all(&c);
    assert_same(&c, 0, 2);
}

/// A small deterministic generator for the mode-equivalence histories.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One random history step on the nodes of `mask` (errors, e.g. a missing parent on some
/// node, are part of the history: both clusters get exactly the same calls).
fn random_op(c: &Cluster, r: &mut Lcg, mask: NodeSet, wide: usize) {
    let dir = ["/w", "/d", "/d/e"][r.next(3) as usize];
    let name = format!("{dir}/f{}", r.next(wide as u64));
    let _ = match r.next(8) {
        0 => c.apply(mask, FrontendOp::Mkdir(dir.as_bytes())),
        1 | 2 => c.apply(mask, FrontendOp::Rm(name.as_bytes())),
        3 => c.apply(
            mask,
            FrontendOp::Chmod(name.as_bytes(), 0o600 + r.next(64) as u32),
        ),
        4 => c.apply(mask, FrontendOp::Mkdir(name.as_bytes())),
        _ => {
            let len = [0, 100, 600, 70_000][r.next(4) as usize];
            let d = pattern(len, r.next(250) as u8);
            c.apply(mask, FrontendOp::Write(name.as_bytes(), &d))
        }
    };
}

#[test]
fn pruned_and_original_scans_give_identical_trees() {
    let roles = [M, M, M, S, M];
    let mut synced = 0;
    let mut total = [0u64; 2];
    for case in 0..12u64 {
        let mut r = Lcg(case * 7919 + 1);
        let wide = [40usize, 300, 1200][(case % 3) as usize];
        let pruned = cluster(&roles);
        let original = cluster(&roles);
        original.set_scan_mode(ScanMode::Original);
        assert_eq!(
            pruned.scan_mode(),
            ScanMode::Pruned,
            "pruned is the default"
        );
        for c in [&pruned, &original] {
            let full = all(c);
            for d in ["/w", "/d", "/d/e"] {
                mkdir(c, full, d);
            }
            // A common base wide enough for the radix to split two levels deep.
            for i in 0..wide {
                let d = pattern(i % 7 * 100, i as u8);
                write(c, full, &format!("/w/f{i}"), &d);
            }
        }
        // Divergent histories on random node subsets, identical on both clusters.
        let steps = 40 + r.next(80);
        let mut ops = Vec::new();
        for _ in 0..steps {
            // Mostly a quorum of the masters, so most histories have a focus to sync to.
            let mut mask = 0u8;
            for b in 0..5 {
                if r.next(5) != 0 {
                    mask |= 1 << b;
                }
            }
            let mask = NodeSet(mask.max(1));
            ops.push((mask, r.0));
        }
        for c in [&pruned, &original] {
            for &(mask, seed) in &ops {
                random_op(c, &mut Lcg(seed), mask, wide);
            }
            // Last, one change on three of the four masters: their roots agree, a quorum.
            write(c, set(&[0, 1, 2]), "/last", b"q");
        }
        let mut stats = [SyncStats::default(); 2];
        for round in 0..4 {
            for i in 0..roles.len() {
                for (k, c) in [&pruned, &original].iter().enumerate() {
                    let before = c.stats(i).scanned;
                    let _ = c.sync_node(i, &|| false);
                    stats[k].scanned += c.stats(i).scanned - before;
                }
                let a = pruned.store(i).unwrap();
                let b = original.store(i).unwrap();
                let mut s = String::new();
                assert!(
                    crate::store::compare::compare(b, a, i, &mut s).unwrap(),
                    "case {case} round {round}: node {i} differs between the modes:\n{s}"
                );
            }
        }
        if stats[1].scanned > 0 {
            synced += 1;
        }
        total[0] += stats[0].scanned;
        total[1] += stats[1].scanned;
    }
    // Over the whole set (small directories cost the pruned scan a few summaries more).
    assert!(total[0] < total[1], "pruned scanned {total:?}");
    assert!(
        synced >= 10,
        "only {synced} of 12 histories had anything to sync"
    );
}

#[test]
fn pruned_scan_visits_in_proportion_to_the_change() {
    let c = cluster(&[M, M, M, S]);
    let full = all(&c);
    mkdir(&c, full, "/w");
    let n: usize = std::env::var("H2S_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    for i in 0..n {
        write(&c, full, &format!("/w/f{i:07}"), b"x");
    }
    for (mode, most) in [(ScanMode::Pruned, 300), (ScanMode::Original, u64::MAX)] {
        c.set_scan_mode(mode);
        let which = std::env::var("H2S_F").unwrap_or("/w/f0001234".into());
        write(&c, set(&[0, 1, 2]), &which, b"changed");
        let before = c.stats(3).scanned;
        c.sync_node(3, &|| false).unwrap();
        let scanned = c.stats(3).scanned - before;
        assert_eq!(c.read_file(3, which.as_bytes()).unwrap(), b"changed");
        assert_same(&c, 0, 3);
        match mode {
            // Root, /w's summary levels down to f1234's bucket, and the inode itself.
            ScanMode::Pruned => assert!(scanned <= most, "pruned visited {scanned}"),
            ScanMode::Original => assert!(scanned > 3000, "original visited {scanned}"),
        }
    }
}

/// The INDIRECT blockrefs of `path`'s block table on node `i`: (depth, key, keybits).
fn indirect_shape(c: &Cluster, i: usize, path: &str) -> Vec<(u8, u64, u8)> {
    let st = c.store(i).unwrap();
    let id = st.resolve(path.as_bytes()).unwrap();
    st.block_table(id)
        .unwrap()
        .iter()
        .filter(|t| t.bref.btype == media::BREF_TYPE_INDIRECT)
        .map(|t| (t.depth, t.bref.key, t.bref.keybits))
        .collect()
}

#[test]
fn pruned_scan_over_differently_shaped_indirect_trees() {
    const N: usize = 10_000;
    let c = cluster(&[M, M, M, S]);
    mkdir(&c, all(&c), "/w");
    // The masters insert in name order (hash order: random keys), the slave gets everything
    // from its first sync in key order: same children, differently shaped trees.
    for i in 0..N {
        write(&c, set(&[0, 1, 2]), &format!("/w/f{i:07}"), b"x");
    }
    c.sync_node(3, &|| false).unwrap();
    assert_same(&c, 0, 3);
    let (ours, theirs) = (indirect_shape(&c, 3, "/w"), indirect_shape(&c, 0, "/w"));
    assert_ne!(ours, theirs, "insert order shapes the trees");
    let levels = 1 + ours.iter().chain(&theirs).map(|t| t.0).max().unwrap() as u64;
    // One change, k = 1: each level's spans of the path to it (at most a blockset's 4 plus
    // the runs around them, or one indirect block's differing span and its neighbours), one
    // run merged, the PFS root above. Far below N, which the original scan visits.
    let bound = 4 * levels * (SET_COUNT + RUN) as u64;
    for mode in [ScanMode::Pruned, ScanMode::Original] {
        c.set_scan_mode(mode);
        let f = format!(
            "/w/f{:07}",
            if mode == ScanMode::Pruned { 1234 } else { 777 }
        );
        write(&c, set(&[0, 1, 2]), &f, b"changed");
        let before = c.stats(3).scanned;
        c.sync_node(3, &|| false).unwrap();
        let scanned = c.stats(3).scanned - before;
        assert_same(&c, 0, 3);
        match mode {
            ScanMode::Pruned => assert!(scanned <= bound, "{scanned} > {bound} ({levels} levels)"),
            ScanMode::Original => assert!(scanned > bound, "original visited {scanned}"),
        }
    }
}

#[test]
fn pruned_resume_after_a_full_deferral_list_goes_on_past_the_range() {
    // Exactly MAX_DEFER changed directories end where a top-level range of /w ends, so the
    // deferral list fills on the last key of a merged range; one more changed directory lies
    // in a later range. The resumed scan must go on to it.
    let mut names: Vec<(u64, String)> = (0..2600)
        .map(|i| {
            let n = format!("d{i}");
            (media::dirhash(n.as_bytes()), n)
        })
        .collect();
    names.sort();
    let top = |k: u64| k >> 56;
    let p = (MAX_DEFER - 1..names.len() - 1)
        .find(|&p| top(names[p].0) != top(names[p + 1].0))
        .unwrap();
    // The list already holds /w itself when /w's scan defers its children.
    let mut changed: Vec<&str> = names[p + 2 - MAX_DEFER..=p]
        .iter()
        .map(|(_, n)| n.as_str())
        .collect();
    changed.push(&names[names.len() - 1].1);
    for mode in [ScanMode::Pruned, ScanMode::Original] {
        let c = cluster(&[M, M, M, S]);
        c.set_scan_mode(mode);
        let full = all(&c);
        mkdir(&c, full, "/w");
        for (_, n) in &names {
            mkdir(&c, full, &format!("/w/{n}"));
        }
        for n in &changed {
            write(&c, set(&[0, 1, 2]), &format!("/w/{n}/f"), b"new");
        }
        c.sync_node(3, &|| false).unwrap();
        assert_same(&c, 0, 3);
        // /w, each changed directory and its new file.
        assert_eq!(
            c.stats(3).deferred,
            1 + 2 * changed.len() as u64,
            "{mode:?}"
        );
    }
}

#[test]
fn pool_drop_never_strands_an_idle_worker() {
    // An idle worker between its `gen` and `cancel` reads while the pool is dropped (the test
    // hook holds it there until the drop has cancelled and bumped `gen`) must still leave: with
    // `cancel` read first, it slept on the bumped `gen` forever and the drop's join hung.
    let c: &'static Pin<Box<Cluster>> = Box::leak(Box::new(cluster(&[M, M])));
    let stores: &'static [&'static Store] =
        Box::leak(Box::new([c.store(0).unwrap(), c.store(1).unwrap()]));
    pool::test_hook::STORE.store(stores[1] as *const Store as usize, AO::SeqCst);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: the stores are leaked, so they outlive the pool.
        let p = unsafe { pool::Pool::start_unbound(host(), stores, None, 0) }.unwrap();
        // Let the worker reach its idle loop (a slow start only makes the test less sharp).
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(p);
        tx.send(()).unwrap();
    });
    let joined = rx.recv_timeout(std::time::Duration::from_secs(20));
    pool::test_hook::STORE.store(0, AO::SeqCst);
    assert!(joined.is_ok(), "dropping the pool hung on an idle worker");
}

#[test]
fn request_taken_early_is_still_answered() {
    // A worker awake in its loop (the hook wakes it) takes a request as soon as it is
    // published. With `gen` stored only after the request lock was released, the worker saw
    // the request as stale, dropped it, then slept on the new `gen` with nothing left to
    // serve: the collector waited for an answer that never came (a sync pass hung).
    let c = cluster(&[M, M]);
    let stores = [c.store(0).unwrap(), c.store(1).unwrap()];
    // The userland host: its sleeps return on a wake, like a kernel's (the test host polls).
    // SAFETY: the stores outlive the pool (dropped at the end of this function, before `c`).
    let p =
        unsafe { pool::Pool::start_unbound(crate::userland::host(), &stores, None, 0) }.unwrap();
    // Let the worker reach its idle sleep (a slow start only makes the test less sharp).
    std::thread::sleep(std::time::Duration::from_millis(100));
    p.hold_publish();
    let gen = p.request(1, &[], None);
    pool::test_hook::HOLD_PUBLISH.store(0, AO::SeqCst);
    let gen = gen.unwrap();
    let t = std::time::Instant::now();
    let mut got = None;
    while got.is_none() && t.elapsed().as_secs() < 20 {
        let seen = p.pushed();
        got = p.recv(1, gen);
        if got.is_none() {
            p.wait(seen, &Brk::new(&|| false)).unwrap();
        }
    }
    assert!(
        matches!(got, Some(pool::Msg::Inode(Some(_)))),
        "the worker dropped a request it took early: {got:?}"
    );
}

/// Every DATA chain of `path` on node `i` holds bytes its check code verifies; the bytes.
fn verified_file(c: &Cluster, i: usize, path: &str) -> Vec<u8> {
    let s = c.store(i).unwrap();
    let f = s.resolve(path.as_bytes()).unwrap();
    let mut key = 0;
    let mut blocks = 0;
    while let Some((d, b)) = s.lookup(f, key, media::KEY_MAX).unwrap() {
        let (b2, body) = s.read(d).unwrap();
        assert_eq!(b, b2);
        match body {
            crate::store::Body::Data(bytes) => {
                b.verify_check(&bytes).unwrap();
                assert_ne!(
                    b.check,
                    [0; media::check::CHECK_BYTES],
                    "a check code was set"
                );
            }
            crate::store::Body::Inode(_) => panic!("{path}: an inode among its data blocks"),
        }
        blocks += 1;
        match b.key_end().checked_add(1) {
            Some(k) => key = k,
            None => break,
        }
    }
    assert!(blocks > 0, "{path} has data blocks");
    s.read_file(f).unwrap()
}

/// Files of whole and partial 64 KiB blocks on the masters of `c` (all but node `slave`).
fn data_files(c: &Cluster, slave: usize) -> Vec<(String, Vec<u8>)> {
    let masters = NodeSet(all(c).0 & !(1 << slave));
    mkdir(c, masters, "/d");
    let files: Vec<(String, Vec<u8>)> = [65_536, 3 * 65_536 + 100, 16 * 65_536, 700]
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("/d/f{i}"), pattern(n, i as u8 + 1)))
        .collect();
    for (p, d) in &files {
        write(c, masters, p, d);
    }
    files
}

/// The empty slave's first sync copies every data block intact, its check code verified, while
/// one master's reads stall and another's fail: the collector takes the children the workers
/// read along with each inode, and a stalled or failed node's part of that stream must not
/// lose, reorder or duplicate a block.
#[test]
fn initial_sync_copies_data_blocks_intact_under_stalls_and_failures() {
    for (stalled, failing) in [
        (None, None),
        (Some(0), None),
        (None, Some(1)),
        (Some(2), Some(0)),
    ] {
        let c = cluster(&[M, M, M, S]);
        let files = data_files(&c, 3);
        if let Some(j) = stalled {
            c.set_stall(j, Some(core::time::Duration::from_micros(300)));
        }
        if let Some(j) = failing {
            c.set_fail(j, true);
        }
        for _ in 0..4 {
            if c.sync_node(3, &|| false).is_ok() && c.in_sync(3) {
                break;
            }
        }
        assert!(c.in_sync(3), "stalled {stalled:?} failing {failing:?}");
        for (p, d) in &files {
            assert_eq!(
                &verified_file(&c, 3, p),
                d,
                "{p}: stalled {stalled:?} failing {failing:?}"
            );
        }
        assert_same(&c, 0, 3);
    }
}

/// Synchronizing an inode asks each other node's worker once: its children come with the
/// inode's own answer, and the final update reuses the focus when nothing changed meanwhile
/// (the seed asked three times: the inode, its children, the inode again).
#[test]
fn one_request_per_node_per_synchronized_inode() {
    let c = cluster(&[M, M, M, S]);
    let files = data_files(&c, 3);
    let before = pool::test_hook::POSTED.with(|n| n.get());
    c.sync_node(3, &|| false).unwrap();
    let posted = pool::test_hook::POSTED.with(|n| n.get()) - before;
    assert!(c.in_sync(3));
    // Inodes synchronized: the root and /d (each twice: before and after their deferred
    // children) and every file; three other nodes each.
    let inodes = files.len() as u64 + 4;
    assert!(
        posted <= 3 * inodes,
        "{posted} requests for {inodes} inode syncs on 3 other nodes"
    );
    for (p, d) in &files {
        assert_eq!(&verified_file(&c, 3, p), d);
    }
}

/// The final update reuses the focus read at the start only while that chain still holds the
/// TID it was chosen at: when it moved on without a frontend change (its node's own sync, here
/// done by hand), nothing is stamped and the pass is retried.
#[test]
fn final_update_refuses_a_focus_that_moved_on() {
    let c = cluster(&[M, M, S]);
    write(&c, set(&[0, 1]), "/f", &pattern(3 * 65_536, 9));
    let tid = c.stat(0, b"/f").unwrap().modify_tid;
    let moved = Cell::new(false);
    let r = c.sync_node(2, &|| {
        // Inside /f's own scan: inserted with TID 0, its first data block copied.
        let s2 = c.store(2).unwrap();
        let copying = s2
            .resolve(b"/f")
            .and_then(|f| Ok(s2.bref(f)?.modify_tid == 0 && s2.child_count(f)? > 0));
        if !moved.get() && copying == Ok(true) {
            moved.set(true);
            let s = c.store(0).unwrap();
            let g = s
                .lock(s.resolve(b"/f").unwrap(), LockMode::Exclusive)
                .unwrap();
            s.set_modify_tid(&g, tid + 1000).unwrap();
        }
        false
    });
    assert!(moved.get(), "the scan of /f was seen");
    assert_eq!(r, Err(Error::InProgress));
    assert_ne!(
        c.stat(2, b"/f").unwrap().modify_tid,
        tid,
        "/f was stamped from a stale focus"
    );
}

/// Issue 5: a freeze reaches a sync thread whose collector sleeps waiting for a stalled master.
/// With two masters both must answer, so the slave's collector waits for node 1, whose reads
/// take 2 s. Its stalled-wait poll (the safety net that polls `brk` after 50 ms without an
/// answer) is turned off, so only the request itself can wake the wait: before the requests
/// interrupted it, the freeze was acknowledged only once the stall ended.
#[test]
fn freeze_interrupts_a_collector_waiting_for_a_stalled_master() {
    use std::time::{Duration, Instant};
    // The userland host: its word sleeps block until woken (the test host's poll).
    let c = Cluster::new(crate::userland::host(), &[M, M, S]).unwrap();
    write(&c, set(&[0, 1]), "/a", b"x");
    c.set_stall(1, Some(Duration::from_secs(2)));
    c.no_stalled_wait_polls(2);
    c.as_ref().thread_start(2).unwrap();
    // Let the pass reach the wait (a freeze before it would be seen by a chain-operation poll).
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    c.thread_freeze(2).unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "freeze acknowledged after {took:?}, not before the stall ended"
    );
    assert!(!c.in_sync(2), "synchronized although node 1 was stalled");
    c.set_stall(1, None);
    c.thread_unfreeze(2).unwrap();
    let t = Instant::now();
    while !c.in_sync(2) {
        assert!(t.elapsed() < Duration::from_secs(20), "never synchronized");
        std::thread::sleep(Duration::from_millis(5));
    }
    c.thread_stop(2).unwrap();
    assert_same(&c, 0, 2);
}

/// With one master failing and another slow to answer, a key range the fast master skips is
/// undecided only until the slow one answered: the collector waits for it instead of giving up
/// on the gap (which left every inode unstamped for as long as the slow master stayed slower,
/// so the sync never converged while a master was down).
#[test]
fn a_gap_is_undecided_only_once_the_slow_masters_answered() {
    let c = cluster(&[M, M, M, S]);
    let masters = set(&[0, 1, 2]);
    mkdir(&c, masters, "/d");
    for i in 0..8 {
        write(&c, masters, &format!("/d/f{i}"), &pattern(1000, i as u8));
    }
    c.set_fail(0, true);
    c.set_stall(2, Some(core::time::Duration::from_millis(2)));
    // One pass, no retry: the slave's tree equals the two live masters' and is stamped.
    assert_eq!(c.sync_node(3, &|| false), Ok(()));
    assert!(c.in_sync(3));
    assert_same(&c, 1, 3);
}

/// Long loops are scheduling points: a sync pass over a tree, the frontend's `rm` of that tree
/// and a comparison of two nodes each call the host's `relax` at least once per chain.
#[test]
fn sync_rm_and_compare_relax_once_per_chain() {
    let h = host();
    let c = Cluster::new(h, &[Role::Master, Role::Slave]).unwrap();
    let n = 200;
    c.apply(NodeSet(1), FrontendOp::Mkdir(b"/d")).unwrap();
    for i in 0..n {
        let p = format!("/d/f{i}");
        c.apply(NodeSet(1), FrontendOp::Write(p.as_bytes(), b"x"))
            .unwrap();
    }
    c.refresh_view(1);
    let before = h.relaxed();
    c.sync_node(1, &|| false).unwrap();
    assert!(
        h.relaxed() - before >= n,
        "a sync of {n} chains relaxed {} times",
        h.relaxed() - before
    );
    let before = h.relaxed();
    assert!(c.compare(0, 1, &mut String::new()).unwrap());
    assert!(h.relaxed() - before >= 2 * n);
    let before = h.relaxed();
    c.apply(NodeSet(3), FrontendOp::Rm(b"/d")).unwrap();
    assert!(h.relaxed() - before >= 2 * n, "rm of 2x{n} chains");
}
