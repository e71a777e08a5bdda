//! The scan pool and collector: workers, requests, stalls, failures and interrupts.

use super::*;

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
        got = p.recv(1, gen, 0);
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

/// A first sync of many small files asks the workers for the deferred inodes in batches: far
/// fewer requests than one per node per inode (one each, before batching), and every file
/// arrives intact. The files are just too big for DIRECTDATA: one data block each, so each
/// file's inode has a block table and is deferred (a DIRECTDATA inode is a leaf).
#[test]
fn deferred_inodes_are_asked_in_batches() {
    let c = cluster(&[M, M, M, S]);
    let masters = set(&[0, 1, 2]);
    mkdir(&c, masters, "/d");
    let files: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("/d/f{i}"), pattern(600 + i % 50, i as u8)))
        .collect();
    for (p, d) in &files {
        write(&c, masters, p, d);
    }
    let before = pool::test_hook::POSTED.with(|n| n.get());
    c.sync_node(3, &|| false).unwrap();
    let posted = pool::test_hook::POSTED.with(|n| n.get()) - before;
    assert!(c.in_sync(3));
    let inodes = files.len() as u64 + 2;
    assert!(
        posted * 8 <= 3 * inodes,
        "{posted} requests for {inodes} inode syncs on 3 other nodes"
    );
    for (p, d) in &files {
        assert_eq!(&c.read_file(3, p.as_bytes()).unwrap(), d);
    }
    assert_same(&c, 0, 3);
}

/// A batch only saves wakeups: when it cannot be posted (no memory for its copy) every
/// inode is still synchronized by its own request and the pass succeeds.
#[test]
fn a_failed_batch_does_not_fail_the_pass() {
    let c = cluster(&[M, M, M, S]);
    let masters = set(&[0, 1, 2]);
    mkdir(&c, masters, "/d");
    let files: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("/d/f{i}"), pattern(20 + i, i as u8)))
        .collect();
    for (p, d) in &files {
        write(&c, masters, p, d);
    }
    pool::test_hook::FAIL_MANY.with(|f| f.set(true));
    let r = c.sync_node(3, &|| false);
    pool::test_hook::FAIL_MANY.with(|f| f.set(false));
    r.unwrap();
    assert!(c.in_sync(3));
    for (p, d) in &files {
        assert_eq!(&c.read_file(3, p.as_bytes()).unwrap(), d);
    }
}

/// Post the batch `paths`, with children, to node 1's worker alone; its generation.
fn ask_node_1(p: &pool::Pool<'_, Store>, paths: &pool::Paths) -> u32 {
    let mut gen = 0;
    p.request_all(
        [1].into_iter(),
        pool::Ask::Many(paths),
        Some(&[(0, crate::media::KEY_MAX)]),
        |_, g| gen = g,
    )
    .unwrap();
    gen
}

/// A pool over `stores` (node 0 syncing) whose node-1 worker the test hooks count, with
/// [`pool::test_hook::COUNTING`] held for as long as the guard returned lives: tests running
/// beside it count their own.
fn pool_counting_node_1<'a>(
    stores: &'a [&'a Store; 2],
) -> (std::sync::MutexGuard<'static, ()>, pool::Pool<'a, Store>) {
    let counting = pool::test_hook::COUNTING
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    pool::test_hook::READS.store(0, core::sync::atomic::Ordering::SeqCst);
    pool::test_hook::FULL_WAITS.store(0, core::sync::atomic::Ordering::SeqCst);
    pool::test_hook::COUNT_STORE.store(
        stores[1] as *const Store as usize,
        core::sync::atomic::Ordering::SeqCst,
    );
    // SAFETY: the pool borrows `stores` for 'a, so the stores outlive it.
    let p = unsafe { pool::Pool::start_unbound(crate::userland::host(), stores, None, 0) }.unwrap();
    (counting, p)
}

/// Node 1's next answer about inode `item` of request `gen`, waiting for it (bounded).
fn answer_of_node_1(
    p: &pool::Pool<'_, Store>,
    gen: u32,
    item: u32,
) -> pool::Msg<crate::store::ChainId> {
    let t = std::time::Instant::now();
    loop {
        let seen = p.pushed();
        if let Some(m) = p.recv(1, gen, item) {
            return m;
        }
        assert!(t.elapsed().as_secs() < 20, "no answer for inode {item}");
        p.wait(seen, &Brk::new(&|| false)).unwrap();
    }
}

/// A batch request is answered inode by inode in order, each answer tagged with its inode's
/// index: asking for a later inode drops what is left of the earlier ones, and an inode the
/// node lacks is answered "none" without ending the batch.
#[test]
fn batch_answers_come_in_order_per_inode() {
    let c = cluster(&[M, M]);
    write(&c, set(&[0, 1]), "/a", &pattern(3 * 65_536, 1));
    write(&c, set(&[0, 1]), "/b", &pattern(100, 2));
    let s1 = c.store(1).unwrap();
    let key_of = |p: &[u8]| s1.key_path(s1.resolve(p).unwrap()).unwrap();
    let (a, b) = (key_of(b"/a"), key_of(b"/b"));
    let mut paths = pool::Paths::default();
    for k in [&a[..], &[u64::MAX - 1][..], &b[..]] {
        paths.push(k).unwrap();
    }
    let stores = [c.store(0).unwrap(), s1];
    // SAFETY: the stores outlive the pool (dropped at the end of this function, before `c`).
    let p =
        unsafe { pool::Pool::start_unbound(crate::userland::host(), &stores, None, 0) }.unwrap();
    let gen = ask_node_1(&p, &paths);
    let next = |item: u32| answer_of_node_1(&p, gen, item);
    // Inode 0 (/a): itself, then its first data block; the rest of its blocks are dropped.
    assert!(matches!(next(0), pool::Msg::Inode(Some(_))));
    assert!(matches!(next(0), pool::Msg::Child(..)));
    // Inode 1: not on that node.
    assert!(matches!(next(1), pool::Msg::Inode(None)));
    // Inode 2 (/b): itself, then the end of its children.
    let m = next(2);
    let pool::Msg::Inode(Some((_, h))) = m else {
        panic!("inode 2: {m:?}");
    };
    assert_eq!(h.key, *b.last().unwrap());
    loop {
        match next(2) {
            pool::Msg::Child(..) => {}
            pool::Msg::End => break,
            m => panic!("inode 2: {m:?}"),
        }
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

/// A freeze reaches a sync thread whose collector sleeps waiting for a stalled master.
/// With two masters both must answer, so the slave's collector waits for node 1, whose reads
/// take 2 s. Its stalled-wait poll (the safety net that polls `brk` after 50 ms without an
/// answer) is turned off, so only the request itself can wake the wait: before the requests
/// interrupted it, the freeze was acknowledged only once the stall ended.
#[test]
fn freeze_interrupts_a_collector_waiting_for_a_stalled_master() {
    use crate::thread::Request;
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
    c.thread_request(2, Request::Freeze).unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "freeze acknowledged after {took:?}, not before the stall ended"
    );
    assert!(!c.in_sync(2), "synchronized although node 1 was stalled");
    c.set_stall(1, None);
    c.thread_request(2, Request::Unfreeze).unwrap();
    let t = Instant::now();
    while !c.in_sync(2) {
        assert!(t.elapsed() < Duration::from_secs(20), "never synchronized");
        std::thread::sleep(Duration::from_millis(5));
    }
    c.thread_request(2, Request::Stop).unwrap();
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

/// Files /f0../f3 on both masters of `[M, M, S]`, each with `blocks` data blocks, and their
/// paths in the order the slave's deferred syncs take them (the list is LIFO: the highest key
/// first).
fn four_files(blocks: usize) -> (Pin<Box<Cluster>>, Vec<String>) {
    let c = cluster(&[M, M, S]);
    let mut order = Vec::new();
    for i in 0..4u8 {
        let p = format!("/f{i}");
        write(&c, set(&[0, 1]), &p, &pattern(blocks * 65_536, i));
        let s = c.store(0).unwrap();
        order.push((s.bref(s.resolve(p.as_bytes()).unwrap()).unwrap().key, p));
    }
    order.sort();
    let order = order.into_iter().rev().map(|(_, p)| p).collect();
    (c, order)
}

/// On node `n`: the first file of `order` stamped, the second still waiting for its own sync
/// (inserted at TID 0).
fn first_done_second_waiting(c: &Cluster, n: usize, order: &[String]) -> bool {
    let tid = |p: &str| c.stat(n, p.as_bytes()).map(|s| s.modify_tid);
    tid(&order[0]).is_ok_and(|t| t != 0) && tid(&order[1]) == Ok(0)
}

/// A frontend change between the posting of a batch and an inode's own sync keeps that sync
/// from using the batch's answers (read before the change): it asks anew, synchronizes the
/// new contents and the pass goes on past it.
#[test]
fn a_frontend_change_after_a_batch_is_posted_is_not_missed() {
    let (c, order) = four_files(2);
    let second = order[1].as_bytes();
    let new = pattern(3 * 65_536, 77);
    let posted_at = Cell::new(None);
    let _ = c.sync_node(2, &|| {
        if posted_at.get().is_none() && first_done_second_waiting(&c, 2, &order) {
            posted_at.set(Some(pool::test_hook::POSTED.with(|n| n.get())));
            c.apply(set(&[0, 1]), FrontendOp::Write(second, &new))
                .unwrap();
        }
        false
    });
    let at = posted_at
        .get()
        .expect("the batch's first file was seen stamped");
    assert!(
        pool::test_hook::POSTED.with(|n| n.get()) > at,
        "the second file was asked anew"
    );
    assert_eq!(c.read_file(2, second).unwrap(), new);
    assert_eq!(
        c.stat(2, second).unwrap().modify_tid,
        c.stat(0, second).unwrap().modify_tid,
        "the second file synchronized in the same pass"
    );
}

/// A batch's answer for a chain is only used while that chain still has the header answered:
/// a data block whose TID moved on afterwards with no frontend change (its node's own sync,
/// here done by hand) is not decided on; the pass is retried.
#[test]
fn a_focus_read_ahead_that_moved_on_is_not_taken() {
    let (c, order) = four_files(3);
    let second = order[1].as_bytes();
    let moved = Cell::new(false);
    let r = c.sync_node(2, &|| {
        if !moved.get() && first_done_second_waiting(&c, 2, &order) {
            moved.set(true);
            // Let the workers read the rest of the batch first.
            std::thread::sleep(core::time::Duration::from_millis(200));
            for n in [0, 1] {
                let s = c.store(n).unwrap();
                let f = s.resolve(second).unwrap();
                let b = s.child_at(f, 0).unwrap().expect("first data block");
                let t = s.bref(b).unwrap().modify_tid;
                let g = s.lock(b, LockMode::Exclusive).unwrap();
                s.set_modify_tid(&g, t + 1000).unwrap();
            }
        }
        false
    });
    assert!(moved.get(), "the batch's first file was seen stamped");
    assert_eq!(r, Err(Error::InProgress));
    assert_eq!(
        c.stat(2, second).unwrap().modify_tid,
        0,
        "the second file not stamped"
    );
}

/// Once the collector asks about a batch's next inode, the worker stops reading the children
/// of the one before (an inode decided Equal at once, say): they would only be dropped, and
/// on a stalled node each read costs the stall.
#[test]
fn worker_stops_reading_an_inode_no_longer_wanted() {
    let c = two_masters_with_300_files_in_d();
    write(&c, set(&[0, 1]), "/b", b"y");
    let s1 = c.store(1).unwrap();
    let mut paths = pool::Paths::default();
    for p in [&b"/d"[..], b"/b"] {
        paths
            .push(&s1.key_path(s1.resolve(p).unwrap()).unwrap())
            .unwrap();
    }
    let stores = [c.store(0).unwrap(), s1];
    let (_counting, p) = pool_counting_node_1(&stores);
    let gen = ask_node_1(&p, &paths);
    let next = |item: u32| answer_of_node_1(&p, gen, item);
    // /d answered; the collector goes straight on to /b, as after an Equal decision.
    assert!(matches!(next(0), pool::Msg::Inode(Some(_))));
    assert!(matches!(next(1), pool::Msg::Inode(Some(_))));
    assert!(matches!(next(1), pool::Msg::End));
    let reads = pool::test_hook::READS.load(core::sync::atomic::Ordering::SeqCst);
    pool::test_hook::COUNT_STORE.store(0, core::sync::atomic::Ordering::SeqCst);
    drop(p);
    // At most a full FIFO of /d's children (and whatever was read while the collector got
    // there), not all 300 of them.
    assert!(reads < 100, "{reads} reads for /d, /b and /b's end");
}

/// A worker streaming a long table to a collector slower than itself waits for room in its
/// full FIFO only once per three quarters of a FIFO taken: it is woken at the low-water mark,
/// not at every pop nor at half (each wait costs the collector a cross-CPU wakeup, a first
/// sync's largest cost after its page faults).
#[test]
fn a_streaming_worker_waits_once_per_three_quarters_of_a_fifo() {
    let c = two_masters_with_300_files_in_d();
    let s1 = c.store(1).unwrap();
    let mut paths = pool::Paths::default();
    paths
        .push(&s1.key_path(s1.resolve(b"/d").unwrap()).unwrap())
        .unwrap();
    let stores = [c.store(0).unwrap(), s1];
    let (_counting, p) = pool_counting_node_1(&stores);
    let gen = ask_node_1(&p, &paths);
    let mut children = 0;
    loop {
        // Slower than the worker, so it refills its FIFO between wakeups, but fast enough to
        // drain one well within the worker's sleep slice (5 ms), which would end a wait early.
        let t = std::time::Instant::now();
        while t.elapsed() < core::time::Duration::from_micros(20) {
            core::hint::spin_loop();
        }
        match answer_of_node_1(&p, gen, 0) {
            pool::Msg::Inode(_) => {}
            pool::Msg::Child(..) => children += 1,
            pool::Msg::End => break,
            m => panic!("unexpected answer {m:?}"),
        }
    }
    let waits = pool::test_hook::FULL_WAITS.load(core::sync::atomic::Ordering::SeqCst);
    pool::test_hook::COUNT_STORE.store(0, core::sync::atomic::Ordering::SeqCst);
    drop(p);
    assert_eq!(children, 300);
    // 302 answers: a FIFO of 64 filled, then a wait per 48 taken: 5 waits (a FIFO of 32 woken
    // at half waits 17 times), with room for a few a descheduled collector ends early.
    assert!(
        (1..=9).contains(&waits),
        "{waits} waits for room in a FIFO of {} for 302 answers",
        pool::FIFO_DEPTH
    );
}

/// A request for part of an inode's children is answered with those children and `End`: the
/// worker reads nothing past the range's last key (a short merge of a pruned walk would
/// otherwise have every worker fill its FIFO with children nobody takes).
#[test]
fn worker_reads_a_requested_key_range_only() {
    let c = two_masters_with_300_files_in_d();
    let s1 = c.store(1).unwrap();
    let d = s1.resolve(b"/d").unwrap();
    let mut keys = Vec::new();
    let mut at = s1.lookup(d, 0, crate::media::KEY_MAX).unwrap();
    while let Some((_, b)) = at {
        keys.push(b.key);
        at = s1.next(d, &b, crate::media::KEY_MAX).unwrap();
    }
    assert_eq!(keys.len(), 300);
    let (beg, end) = (keys[100], keys[104]);
    let stores = [c.store(0).unwrap(), s1];
    // SAFETY: the stores outlive the pool (dropped at the end of this function, before `c`).
    let p =
        unsafe { pool::Pool::start_unbound(crate::userland::host(), &stores, None, 0) }.unwrap();
    let gen = p
        .request(1, &s1.key_path(d).unwrap(), Some((beg, end)))
        .unwrap();
    assert!(matches!(
        answer_of_node_1(&p, gen, 0),
        pool::Msg::Inode(Some(_))
    ));
    for &k in &keys[100..=104] {
        match answer_of_node_1(&p, gen, 0) {
            pool::Msg::Child(_, h) => assert_eq!(h.key, k),
            m => panic!("child {k:#x} expected, got {m:?}"),
        }
    }
    // Not the next child: the worker ends at the range's last key.
    let after = answer_of_node_1(&p, gen, 0);
    assert!(matches!(after, pool::Msg::End), "{after:?} after the range");
}

/// Two masters holding a directory `/d` of 300 small files.
fn two_masters_with_300_files_in_d() -> Pin<Box<Cluster>> {
    let c = cluster(&[M, M]);
    mkdir(&c, set(&[0, 1]), "/d");
    for i in 0..300 {
        write(&c, set(&[0, 1]), &format!("/d/f{i}"), b"x");
    }
    c
}
