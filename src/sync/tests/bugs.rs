//! One regression test per fixed bug of the original (HAMMER2-FACTS §6), each failing on the
//! original behaviour.

use super::*;

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
    let peers = peers(&stores, &roles, 1);
    let brk = crate::thread::Brk::new(&|| false);
    let mut stats = SyncStats::default();
    let mut ctx = ctx(&peers, 1, &brk, &mut stats);
    let fc = FocusCopy::read(
        &ctx,
        &collect::Focus {
            node: 0,
            id: fb,
            head: pool::Head::of(&m.bref(fb).unwrap()),
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
    let peers = peers(&stores, &roles, 1);
    let brk = crate::thread::Brk::new(&|| false);
    let mut stats = SyncStats::default();
    let mut ctx = ctx(&peers, 1, &brk, &mut stats);
    let before = s.child_count(s.root()).unwrap();
    let g = s.lock_root(LockMode::Exclusive);
    let (first, fb) = s.lookup(s.root(), 0, media::KEY_MAX).unwrap().unwrap();
    let (second, _) = s.next(s.root(), &fb, media::KEY_MAX).unwrap().unwrap();
    let next = destroy(&mut ctx, &g, first, &fb).unwrap();
    assert_eq!(next.map(|(id, _)| id), Some(second));
    drop(g);
    assert_eq!(s.child_count(s.root()).unwrap(), before - 1);
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
    let peers = peers(&stores, &roles, 2);
    let brk = crate::thread::Brk::new(&|| false);
    let mut stats = SyncStats::default();
    let mut ctx = ctx(&peers, 2, &brk, &mut stats);
    let mut list = Vec::new();
    assert_eq!(
        sync_slaves(
            &mut ctx,
            stale,
            Follow::Quorum,
            &mut list,
            false,
            &mut None,
            None
        ),
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
    // Too big for DIRECTDATA: /a has a data block, so its inode is deferred and synchronized
    // with its child (a DIRECTDATA inode is a leaf, copied whole at once, and the removal below
    // could come after that copy was done).
    write(&c, set(&[0, 1]), "/a", &pattern(600, 1));
    let t = focus_tid(&c);
    let fired = Cell::new(false);
    // The focus chain of /a disappears between the choice and the copy. Both masters lose it:
    // either may be the focus (the first to answer among equal TIDs).
    let r = c.sync_node(2, &|| {
        if !fired.get() {
            fired.set(true);
            for n in [0, 1] {
                c.store(n).unwrap().rm(b"/a", 100).unwrap();
            }
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
    let peers = peers(&stores, &roles, 1);
    let brk = crate::thread::Brk::new(&|| false);
    let mut stats = SyncStats::default();
    let mut ctx = ctx(&peers, 1, &brk, &mut stats);
    let fid = m.resolve(b"/f").unwrap();
    let fc = FocusCopy::read(
        &ctx,
        &collect::Focus {
            node: 0,
            id: fid,
            head: pool::Head::of(&m.bref(fid).unwrap()),
            catchup: false,
        },
    )
    .unwrap();
    let before = s.child_count(s.root()).unwrap();
    let g = s.lock_root(LockMode::Exclusive);
    let key = fc.bref.key;
    let (id, b) = insert(&mut ctx, &g, fc, 0).unwrap();
    drop(g);
    assert_eq!(b.key, key);
    assert_eq!(
        s.child_count(s.root()).unwrap(),
        before,
        "replaced in place"
    );
    assert_eq!(s.read_file(id).unwrap(), b"focus");
    assert_eq!((stats.replaced, stats.inserted), (1, 0));
}

/// On every node: a directory `/d` with a file and a subdirectory holding a file of two data
/// blocks, and a file `/big` of four data blocks: chains with children for a leaf to replace.
fn trees_with_children(c: &Cluster) {
    mkdir(c, all(c), "/d");
    write(c, all(c), "/d/a", b"a");
    mkdir(c, all(c), "/d/sub");
    write(c, all(c), "/d/sub/deep", &pattern(70_000, 1));
    write(c, all(c), "/big", &pattern(200_000, 2));
}

/// Bug 13: a hardlink pointer (a leaf: never deferred, so never scanned) that takes the place of
/// a directory with entries, a directory with a subdirectory, or a file of several data blocks
/// must not keep their children hidden under it. In both scan modes, the slave ends with exactly
/// the masters' chains, and the pointer itself has no child.
#[test]
fn bug13_pointer_replacing_a_tree_keeps_no_children() {
    for mode in [ScanMode::Pruned, ScanMode::Original] {
        let c = cluster(&[M, M, S]);
        c.set_scan_mode(mode);
        trees_with_children(&c);
        write(&c, all(&c), "/target", b"t");
        for p in ["/d", "/big"] {
            c.apply(set(&[0, 1]), FrontendOp::Rm(p.as_bytes())).unwrap();
            c.apply(set(&[0, 1]), FrontendOp::Link(b"/target", p.as_bytes()))
                .unwrap();
        }
        sync_all(&c);
        assert_same(&c, 0, 2);
        let (m, s) = (c.store(0).unwrap(), c.store(2).unwrap());
        assert_eq!(s.chain_count(), m.chain_count(), "{mode:?}");
        for p in ["/d", "/big"] {
            let id = s.resolve(p.as_bytes()).unwrap();
            assert_eq!(s.child_count(id).unwrap(), 0, "{mode:?} {p}");
            assert_eq!(c.read_file(2, p.as_bytes()).unwrap(), b"t");
        }
    }
}

/// A DIRECTDATA focus over a local table (a directory, a file with data blocks) and a table
/// over a local DIRECTDATA inode, both scan modes: equal trees, no chain left behind.
#[test]
fn directdata_replaces_tables_and_tables_replace_directdata() {
    for mode in [ScanMode::Pruned, ScanMode::Original] {
        let c = cluster(&[M, M, S]);
        c.set_scan_mode(mode);
        trees_with_children(&c);
        write(&c, all(&c), "/s", b"small");
        write(&c, all(&c), "/t", b"tiny");
        assert_same(&c, 0, 2);
        c.apply(set(&[0, 1]), FrontendOp::Rm(b"/d")).unwrap();
        write(&c, set(&[0, 1]), "/d", b"now a file");
        write(&c, set(&[0, 1]), "/big", b"shrunk");
        c.apply(set(&[0, 1]), FrontendOp::Rm(b"/s")).unwrap();
        mkdir(&c, set(&[0, 1]), "/s");
        write(&c, set(&[0, 1]), "/s/x", b"x");
        write(&c, set(&[0, 1]), "/t", &pattern(100_000, 3));
        sync_all(&c);
        assert_same(&c, 0, 2);
        let (m, s) = (c.store(0).unwrap(), c.store(2).unwrap());
        assert_eq!(s.chain_count(), m.chain_count(), "{mode:?}");
        for p in ["/d", "/big"] {
            let id = s.resolve(p.as_bytes()).unwrap();
            assert_eq!(s.child_count(id).unwrap(), 0, "{mode:?} {p}");
        }
        assert_eq!(c.read_file(2, b"/d").unwrap(), b"now a file");
        assert_eq!(c.read_file(2, b"/t").unwrap(), pattern(100_000, 3));
    }
}
