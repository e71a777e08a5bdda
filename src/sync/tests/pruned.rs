//! The pruned scan against the original: identical trees, visits in proportion to the change,
//! differently shaped indirect trees, resumes.

use super::*;

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
    // in a later range. The resumed scan must go on to it. Seed layout: there /w's entries,
    // keyed by name hash, are the directories the scan of /w defers.
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
        let c = seed_cluster(&[M, M, M, S]);
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
        // /w and each changed directory (its new file, a DIRECTDATA inode, is a leaf).
        assert_eq!(c.stats(3).deferred, 1 + changed.len() as u64, "{mode:?}");
    }
}

/// Where every run of the PFS root's index differs (every fourth small file rewritten), the
/// pruned walk merges the differing runs together: about one request per worker, as the
/// original scan, not one per run of RUN children (each a wakeup and a round trip).
#[test]
fn dense_changes_are_merged_in_one_request_per_worker() {
    let c = wide_dir_in_sync();
    for i in (0..400).step_by(4) {
        write(&c, set(&[0, 1]), &format!("/w/f{i}"), b"new");
    }
    let before = pool::test_hook::POSTED.with(|n| n.get());
    c.sync_node(2, &|| false).unwrap();
    let posted = pool::test_hook::POSTED.with(|n| n.get()) - before;
    assert_same(&c, 0, 2);
    // The root's inode with its children from key 0, and at most one more merge, per master.
    assert!(
        posted <= 2 * 2,
        "{posted} requests for 100 changes in 25 runs"
    );
}

/// Where every run of the PFS root's index differs in a few of its chains (every fourth small
/// file rewritten), only those chains go through the per-key merge: the equal ones between
/// them are compared with the master's directly, never read by its worker one by one.
#[test]
fn equal_chains_of_differing_runs_are_not_merged() {
    let c = wide_dir_in_sync();
    for i in (0..400).step_by(4) {
        write(&c, set(&[0, 1]), &format!("/w/f{i}"), b"new");
    }
    let reads = reads_of_node_0(&c, || c.sync_node(2, &|| false).unwrap());
    assert_same(&c, 0, 2);
    // The 100 changed inodes, the root's and a FIFO of the children its request read ahead
    // (and some slack for reads racing the next request); merging whole runs reads every one
    // of the index's 400 files.
    assert!(
        reads < 100 + 2 + pool::FIFO_DEPTH + pool::FIFO_DEPTH / 2,
        "master 0's worker read {reads} chains for 100 changes"
    );
}

/// Counts master 0's worker's reads while it is counted, and stops counting when dropped
/// (also when the test fails), so the tests beside it count their own.
struct CountingNode0<'a> {
    _lock: std::sync::MutexGuard<'a, ()>,
}

impl Drop for CountingNode0<'_> {
    fn drop(&mut self) {
        pool::test_hook::COUNT_STORE.store(0, AO::SeqCst);
    }
}

/// The chains master 0's worker reads while `f` runs.
fn reads_of_node_0(c: &Cluster, f: impl FnOnce()) -> usize {
    let _counting = CountingNode0 {
        _lock: pool::test_hook::COUNTING
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    };
    pool::test_hook::READS.store(0, AO::SeqCst);
    let s0 = c.store(0).unwrap();
    pool::test_hook::COUNT_STORE.store(s0 as *const Store as usize, AO::SeqCst);
    f();
    pool::test_hook::READS.load(AO::SeqCst)
}

/// A merge of several key ranges that starts at key 0 (a file's first data block and a few
/// far ones changed) asks the workers for those ranges: taking over the reads begun with the
/// file's focus, which run to the table's end, would stream every block in between.
#[test]
fn a_scattered_merge_from_key_0_reads_its_ranges_only() {
    const BLOCKS: usize = 5 * pool::FIFO_DEPTH;
    let c = cluster(&[M, M, S]);
    c.set_scan_mode(ScanMode::Pruned);
    write(
        &c,
        all(&c),
        "/f",
        &pattern(BLOCKS * media::DATA_BLOCK_BYTES, 3),
    );
    assert!(c.in_sync(2));
    // The same blocks moved on on both masters, as a frontend change of those blocks only
    // (which the whole-file `write` cannot make) leaves them.
    for n in [0, 1] {
        let s = c.store(n).unwrap();
        let f = s.resolve(b"/f").unwrap();
        for blk in [0, BLOCKS / 2, BLOCKS - 1] {
            let key = (blk as u64) << media::DATA_BLOCK_RADIX;
            let b = s.child_at(f, key).unwrap().expect("data block");
            let g = s.lock(b, LockMode::Exclusive).unwrap();
            s.set_modify_tid(&g, 1000).unwrap();
        }
        for id in [f, s.root()] {
            let g = s.lock(id, LockMode::Exclusive).unwrap();
            s.set_modify_tid(&g, 1000).unwrap();
        }
    }
    let reads = reads_of_node_0(&c, || c.sync_node(2, &|| false).unwrap());
    assert_same(&c, 0, 2);
    // The 3 blocks, the inodes and a FIFO of the blocks the file's focus read ahead (and some
    // slack for reads racing the merge's request), not every block between the first and last.
    assert!(
        reads < 3 + 4 + pool::FIFO_DEPTH + pool::FIFO_DEPTH / 2,
        "master 0's worker read {reads} chains for 3 changed blocks of {BLOCKS}"
    );
}

/// In a run that differs on the masters, the slave's own chains that are extra, missing or
/// different next to equal ones are still found and dealt with by the merge.
#[test]
fn a_slaves_own_differences_in_a_differing_run_are_merged() {
    let c = wide_dir_in_sync();
    let slave = set(&[2]);
    write(&c, slave, "/w/f5", b"slave's own");
    c.apply(slave, FrontendOp::Rm(b"/w/f6")).unwrap();
    write(&c, slave, "/w/extra", b"only here");
    write(&c, set(&[0, 1]), "/w/f7", b"new");
    c.sync_node(2, &|| false).unwrap();
    assert_same(&c, 0, 2);
    assert_eq!(c.read_file(2, b"/w/f5").unwrap(), b"old");
    assert_eq!(c.read_file(2, b"/w/f6").unwrap(), b"old");
    assert_eq!(c.read_file(2, b"/w/f7").unwrap(), b"new");
    assert!(c.read_file(2, b"/w/extra").is_err());
}

/// Two masters and a slave in the pruned scan mode, every node holding `/w` with 400 small
/// files.
fn wide_dir_in_sync() -> Pin<Box<Cluster>> {
    let c = cluster(&[M, M, S]);
    c.set_scan_mode(ScanMode::Pruned);
    let full = all(&c);
    mkdir(&c, full, "/w");
    for i in 0..400 {
        write(&c, full, &format!("/w/f{i}"), b"old");
    }
    assert!(c.in_sync(2));
    c
}

/// A frontend change on the masters lands mid-walk, between differing runs that are
/// merged together or apart; a pass that reports success must leave the slave equal.
#[test]
fn a_frontend_change_between_merged_runs_never_leaves_a_wrong_pass() {
    for (spacing, victim, at) in [
        (40, 20, 1),
        (40, 20, 3),
        (70, 100, 2),
        (70, 35, 4),
        (40, 300, 2),
        (40, 300, 6),
    ] {
        let c = wide_dir_in_sync();
        for i in (0..400).step_by(spacing) {
            write(&c, set(&[0, 1]), &format!("/w/f{i}"), b"new");
        }
        let calls = Cell::new(0);
        let r = c.sync_node(2, &|| {
            calls.set(calls.get() + 1);
            if calls.get() == at {
                c.apply(
                    set(&[0, 1]),
                    FrontendOp::Write(format!("/w/f{victim}").as_bytes(), b"raced"),
                )
                .unwrap();
            }
            false
        });
        assert!(
            calls.get() >= at,
            "{spacing} {victim} {at}: hook not reached"
        );
        if r.is_ok() && c.in_sync(2) {
            assert_same(&c, 0, 2);
        }
        sync_all(&c);
        assert_same(&c, 0, 2);
        assert_eq!(
            c.read_file(2, format!("/w/f{victim}").as_bytes()).unwrap(),
            b"raced"
        );
    }
}

/// Once a table's differing child is merged, the rest of the table is compared whole: a change
/// near the lowest key costs the path down to it and one comparison per level on the way out,
/// not every span to the right of the path.
#[test]
fn pruned_scan_compares_the_rest_of_a_table_whole() {
    let c = cluster(&[M, M, M, S]);
    let full = all(&c);
    mkdir(&c, full, "/w");
    for i in 0..3000 {
        write(&c, full, &format!("/w/f{i:07}"), b"x");
    }
    c.set_scan_mode(ScanMode::Pruned);
    // The first file made: the lowest inode number of the index but /w's.
    write(&c, set(&[0, 1, 2]), "/w/f0000000", b"changed");
    let before = c.stats(3).scanned;
    c.sync_node(3, &|| false).unwrap();
    let scanned = c.stats(3).scanned - before;
    assert_eq!(c.read_file(3, b"/w/f0000000").unwrap(), b"changed");
    assert_same(&c, 0, 3);
    // 23 spans here; 33 when every span right of the path is compared on its own.
    assert!(scanned <= 26, "pruned visited {scanned}");
}

/// The span summaries each node's was compared with since the last call (and reset them).
fn span_sums() -> [u64; 4] {
    crate::sync::slaves::test_hook::SPAN_SUMS.with(|c| core::array::from_fn(|j| c[j].replace(0)))
}

/// Spans are compared with one master of each group of equal tables: a group whose
/// representative is not the first still has its difference found, grouping cuts the
/// comparisons, and a slave (whose answers decide nothing) never decides a skip.
#[test]
fn pruned_walk_compares_one_master_per_group_and_never_a_slave() {
    let c = cluster(&[M, M, M, S]);
    c.set_scan_mode(ScanMode::Pruned);
    mkdir(&c, all(&c), "/w");
    for i in 0..400 {
        write(&c, all(&c), &format!("/w/f{i}"), b"old");
    }
    // Masters 1 and 2, a quorum, change f7: the masters split into {0} and {1, 2}. Node 0 is
    // the first representative and equals the slave everywhere but in /w's and the root's TIDs.
    write(&c, set(&[1, 2]), "/w/f7", b"new");
    span_sums();
    c.sync_node(3, &|| false).unwrap();
    let sums = span_sums();
    assert_eq!(c.read_file(3, b"/w/f7").unwrap(), b"new", "{sums:?}");
    assert_same(&c, 1, 3);
    assert!(sums[0] > 0 && sums[1] > 0, "both groups compared: {sums:?}");
    assert_eq!(sums[2], 0, "node 2 is in node 1's group: {sums:?}");
    // A slave-only change, which no master follows, and a quorum's change the masters agree
    // on that node 0 lacks: node 0 syncs, its others being masters 1 and 2 (one group) and
    // the slave, whose table now differs from theirs.
    write(&c, set(&[3]), "/w/g", b"slave only");
    write(&c, set(&[1, 2]), "/w/f9", b"new");
    c.sync_node(0, &|| false).unwrap();
    let sums = span_sums();
    assert_eq!(c.read_file(0, b"/w/f9").unwrap(), b"new", "{sums:?}");
    assert!(
        c.read_file(0, b"/w/g").is_err(),
        "a slave's change is no focus"
    );
    assert_same(&c, 0, 1);
    assert!(sums[1] > 0, "{sums:?}");
    assert_eq!(sums[2], 0, "node 2 is in node 1's group: {sums:?}");
    assert_eq!(sums[3], 0, "a slave decided a skip: {sums:?}");
}

/// Chains of different keybits overlapping across nodes in a differing run (ours one chain of
/// 16 keys where the masters have two single keys in it, or the other way round, ours then
/// lying on both sides of a span boundary as the filler before them shifts it), merged in
/// one batch with a later differing key or, after 240 or 241 isolated differing keys, in a
/// batch of their own or with those: both scans converge to the masters' chains, the
/// slave's own chains the masters' wide one covers destroyed.
#[test]
fn overlapping_chains_of_different_keybits_merge_as_the_original() {
    for wide_on_slave in [true, false] {
        let mut one_batch = [0; RUN];
        for prefix in [0, 240, 241] {
            for filler in 0..RUN as u64 {
                let case = (wide_on_slave, prefix, filler);
                let mut got = Vec::new();
                let mut posted = 0;
                for mode in [ScanMode::Pruned, ScanMode::Original] {
                    let c = overlap_cluster(mode, prefix, filler, wide_on_slave);
                    let before = pool::test_hook::POSTED.with(|n| n.get());
                    let r = c.sync_node(2, &|| false);
                    if mode == ScanMode::Pruned {
                        posted = pool::test_hook::POSTED.with(|n| n.get()) - before;
                    }
                    assert!(r.is_ok(), "{case:?} {mode:?}: {r:?}");
                    assert_eq!(data_chains(&c, 2), data_chains(&c, 0), "{case:?} {mode:?}");
                    assert_same(&c, 0, 2);
                    got.push(data_chains(&c, 2));
                }
                assert_eq!(got[0], got[1], "{case:?}");
                if prefix == 0 {
                    one_batch[filler as usize] = posted;
                } else {
                    // A merge more: the differing keys did not fit one batch.
                    let one = one_batch[filler as usize];
                    assert!(
                        posted > one,
                        "{case:?}: {posted} requests, {one} in one batch"
                    );
                }
            }
        }
    }
}

/// A hand-built data chain of /f: (key, keybits, modify_tid).
pub(super) type Chain = (u64, u8, u64);

/// Two masters and a slave whose /f holds, beside its first data block, the hand-built data
/// chains `masters` (on both masters) and `ours` (on the slave), each (key, keybits,
/// modify_tid); /f and the PFS root stamped 100 on the masters, 90 on the slave.
fn chains_cluster(mode: ScanMode, masters: &[Chain], ours: &[Chain]) -> Pin<Box<Cluster>> {
    nodes_cluster(mode, &[(M, masters, 100), (M, masters, 100), (S, ours, 90)])
}

/// A cluster of `nodes`, each (role, /f's hand-built data chains beside its first data block,
/// the TID /f and the PFS root are stamped with); the chains as for [`chains_cluster`].
pub(super) fn nodes_cluster(mode: ScanMode, nodes: &[(Role, &[Chain], u64)]) -> Pin<Box<Cluster>> {
    let roles: Vec<Role> = nodes.iter().map(|n| n.0).collect();
    let c = cluster(&roles);
    c.set_scan_mode(mode);
    write(&c, all(&c), "/f", &pattern(media::DATA_BLOCK_BYTES, 1));
    for (n, &(_, chains, tid)) in nodes.iter().enumerate() {
        let s = c.store(n).unwrap();
        let f = s.resolve(b"/f").unwrap();
        let g = s.lock(f, LockMode::Exclusive).unwrap();
        for &(key, keybits, tid) in chains {
            let mut b = media::Blockref::new(media::BREF_TYPE_DATA, key, keybits);
            b.set_size_radix(10);
            b.modify_tid = tid;
            s.insert(&g, b, crate::store::Body::Data(vec![tid as u8; 1024]))
                .unwrap();
        }
        s.set_modify_tid(&g, tid).unwrap();
        drop(g);
        let g = s.lock(s.root(), LockMode::Exclusive).unwrap();
        s.set_modify_tid(&g, tid).unwrap();
    }
    c
}

/// Sync the slave of a [`chains_cluster`] once: it must end with the masters' chains, and
/// as many chains in all as a master.
fn assert_converges(c: &Cluster, case: &str) {
    assert_node_converges(c, 2, case);
}

/// Sync node `i` once: it must end with node 0's chains (a master of the quorum), and as many
/// chains in all.
pub(super) fn assert_node_converges(c: &Cluster, i: usize, case: &str) {
    let r = c.sync_node(i, &|| false);
    assert!(r.is_ok(), "{case}, node {i}: {r:?}");
    assert_eq!(data_chains(c, i), data_chains(c, 0), "{case}, node {i}");
    assert_same(c, 0, i);
    let count = |i: usize| c.store(i).unwrap().chain_count();
    assert_eq!(count(i), count(0), "{case}, node {i}: chains left over");
}

/// A master's chain of wider keybits covering several of ours (the first at its key, the
/// others inside its range) replaces them all, and ours wider than several of the masters'
/// is narrowed and the others inserted, in both scan modes: where the covered chains are two
/// single keys, span several runs of the pruned walk, or several of our indirect blocks
/// (with equal chains on both sides, so the walk skips spans around them).
#[test]
fn a_wide_chain_covering_several_of_ours_converges_in_both_modes() {
    const B: u64 = 1 << 20;
    let keys = |beg: u64, n: u64, tid: u64| (beg..beg + n).map(move |k| (k, 0u8, tid));
    // Equal chains before and after the covered range.
    let around: Vec<_> = keys(B - 64, 64, 30).chain(keys(B + 1024, 64, 30)).collect();
    let with = |v: Vec<(u64, u8, u64)>| around.iter().copied().chain(v).collect::<Vec<_>>();
    let cases: [(&str, Vec<_>, Vec<_>); 5] = [
        (
            "two keys",
            with(vec![(B + 16, 1, 50)]),
            with(keys(B + 16, 2, 30).collect()),
        ),
        (
            "reverse: ours wide",
            with(keys(B + 16, 2, 50).collect()),
            with(vec![(B + 16, 1, 40)]),
        ),
        (
            "ours at the wide key and inside",
            with(vec![(B, 4, 50)]),
            with(vec![(B, 0, 30), (B + 5, 0, 30), (B + 15, 0, 30)]),
        ),
        (
            "several runs",
            with(vec![(B, 6, 50)]),
            with(keys(B, 40, 30).collect()),
        ),
        (
            "several indirect blocks",
            with(vec![(B, 10, 50)]),
            with(keys(B, 300, 30).chain(keys(B + 700, 100, 30)).collect()),
        ),
    ];
    for (name, masters, ours) in &cases {
        for mode in [ScanMode::Pruned, ScanMode::Original] {
            let c = chains_cluster(mode, masters, ours);
            assert_converges(&c, &format!("{name}, {mode:?}"));
        }
        // A third master disagreeing as the slave does: the quorum is the other two.
        assert_stale_master_case(&format!("{name}, stale master"), masters, ours, ours);
    }
    // The slave's chains the wide one covers really lie in several indirect blocks.
    let c = chains_cluster(ScanMode::Pruned, &cases[4].1, &cases[4].2);
    let s = c.store(2).unwrap();
    let f = s.resolve(b"/f").unwrap();
    let blocks = s
        .block_table(f)
        .unwrap()
        .iter()
        .filter(|t| {
            let b = &t.bref;
            b.btype == media::BREF_TYPE_INDIRECT && b.key >= B && b.key_end() < B + 1024
        })
        .count();
    assert!(
        blocks >= 2,
        "{blocks} indirect blocks inside the covered range"
    );
}

/// Three masters and a slave: `masters` on masters 0 and 1 (the quorum, /f stamped 100), the
/// disagreeing `stale` on master 2 and `ours` on the slave (both stamped 90); chains as for
/// [`chains_cluster`].
pub(super) fn stale_master_cluster(
    mode: ScanMode,
    masters: &[Chain],
    stale: &[Chain],
    ours: &[Chain],
) -> Pin<Box<Cluster>> {
    nodes_cluster(
        mode,
        &[
            (M, masters, 100),
            (M, masters, 100),
            (M, stale, 90),
            (S, ours, 90),
        ],
    )
}

/// In both scan modes, a sync of the slave of a [`stale_master_cluster`] leaves it with the
/// quorum's chains, whatever the stale master's chains cover; then so does the stale master's.
fn assert_stale_master_case(case: &str, masters: &[Chain], stale: &[Chain], ours: &[Chain]) {
    for mode in [ScanMode::Pruned, ScanMode::Original] {
        let c = stale_master_cluster(mode, masters, stale, ours);
        let case = format!("{case}, {mode:?}");
        assert_node_converges(&c, 3, &case);
        assert_node_converges(&c, 2, &case);
    }
}

/// A stale master's chain wider than the quorum's at the same key does not hide the quorum's
/// chains inside its range: the merge goes on from the next key, not from the end of the widest
/// chain any node holds there (the slave kept B and lost B + 5: its chain destroyed as extra,
/// the quorum's never inserted, the inode stamped all the same).
#[test]
fn a_stale_masters_wide_chain_hides_no_quorum_key_inside_it() {
    const B: u64 = 1 << 20;
    assert_stale_master_case(
        "stale wide chain at the focus key",
        &[(B, 0, 50), (B + 5, 0, 50)],
        &[(B, 4, 30)],
        &[(B, 0, 30), (B + 5, 0, 30)],
    );
}

/// The covering cases around a stale master (both modes): its wide chain starting where the
/// quorum has nothing; ours with nothing at the focus key, only chains inside its range; a
/// wide focus followed by a narrow differing one, the stale master holding a key inside the
/// wide one; ours wide inside a wider focus; ours wide over two narrower focus chains.
#[test]
fn covering_chains_around_a_stale_master_converge_in_both_modes() {
    const B: u64 = 1 << 20;
    let cases: [(&str, &[_], &[_], &[_]); 6] = [
        (
            "stale wide chain where the quorum has nothing",
            &[(B + 5, 0, 50)],
            &[(B, 4, 30)],
            &[(B, 0, 30), (B + 5, 0, 30)],
        ),
        (
            "ours only inside the focus's range",
            &[(B, 4, 50)],
            &[(B + 3, 0, 30), (B + 9, 0, 30)],
            &[(B + 3, 0, 30), (B + 9, 0, 30)],
        ),
        (
            "wide focus, then a narrow differing one",
            &[(B, 4, 50), (B + 16, 0, 50)],
            &[(B + 5, 0, 30), (B + 16, 0, 30)],
            &[(B, 4, 30), (B + 16, 0, 30)],
        ),
        (
            "ours wide inside a wider focus",
            &[(B, 6, 50)],
            &[(B + 16, 4, 30)],
            &[(B, 4, 30), (B + 16, 4, 30), (B + 32, 2, 30)],
        ),
        (
            "ours wide over two narrower focus chains",
            &[(B, 0, 50), (B + 8, 0, 50)],
            &[(B + 8, 2, 30)],
            &[(B, 4, 30)],
        ),
        (
            "stale wide over the focus key and beyond it",
            &[(B + 2, 0, 50), (B + 40, 0, 50)],
            &[(B, 5, 30)],
            &[(B, 5, 30), (B + 40, 0, 30)],
        ),
    ];
    for (name, masters, stale, ours) in cases {
        assert_stale_master_case(name, masters, stale, ours);
    }
}

/// A covered chain of ours that is an inode goes with everything under it.
#[test]
fn a_covered_inode_of_ours_goes_with_its_subtree() {
    const B: u64 = 1 << 20;
    for mode in [ScanMode::Pruned, ScanMode::Original] {
        let c = chains_cluster(mode, &[(B, 1, 50)], &[(B, 0, 30)]);
        // Our B + 1: an inode holding a data chain, under /f.
        let s = c.store(2).unwrap();
        let f = s.resolve(b"/f").unwrap();
        let g = s.lock(f, LockMode::Exclusive).unwrap();
        let meta = media::InodeMeta::new(media::OBJTYPE_REGFILE, 77, 0o644);
        let ip = media::InodeData::new(meta, b"covered").unwrap();
        let mut b = media::Blockref::new(media::BREF_TYPE_INODE, B + 1, 0);
        b.modify_tid = 30;
        let i = s
            .insert(&g, b, crate::store::Body::Inode(Box::new(ip)))
            .unwrap();
        let ig = s.lock_child(&g, i, LockMode::Exclusive).unwrap();
        let mut d = media::Blockref::new(media::BREF_TYPE_DATA, 0, 0);
        d.set_size_radix(10);
        d.modify_tid = 30;
        s.insert(&ig, d, crate::store::Body::Data(vec![3; 1024]))
            .unwrap();
        drop(ig);
        drop(g);
        let before = c.stats(2).destroyed;
        assert_converges(&c, &format!("{mode:?}"));
        assert!(c.stats(2).destroyed > before, "{mode:?}");
    }
}

/// /f's data chains on node `i`: (key, keybits, modify_tid).
pub(super) fn data_chains(c: &Cluster, i: usize) -> Vec<(u64, u8, u64)> {
    let s = c.store(i).unwrap();
    let f = s.resolve(b"/f").unwrap();
    let mut v = Vec::new();
    let mut cur = s.lookup(f, 0, media::KEY_MAX).unwrap();
    while let Some((_, b)) = cur {
        v.push((b.key, b.keybits, b.modify_tid));
        cur = s.next(f, &b, media::KEY_MAX).unwrap();
    }
    v
}

/// Two masters and a slave whose /f holds hand-built data chains: `prefix` isolated keys
/// differing (between equal ones), `filler` equal keys, then at K+16 the overlap (the slave's
/// one chain of keybits 4 against the masters' keys K+16 and K+20, or the other way round
/// when not `wide_on_slave`), then a run's worth of equal keys and a last differing one.
fn overlap_cluster(
    mode: ScanMode,
    prefix: u64,
    filler: u64,
    wide_on_slave: bool,
) -> Pin<Box<Cluster>> {
    const BASE: u64 = 1 << 20;
    let k = (BASE + 2 * prefix + 2 * RUN as u64).next_multiple_of(32);
    let chains = |slave: bool| {
        let mut chains = Vec::new();
        for i in 0..2 * prefix {
            let differs = i % 2 == 0;
            chains.push((BASE + i, 0, if differs && !slave { 50 } else { 30 }));
        }
        for i in 0..filler {
            chains.push((k - 1 - i, 0, 30));
        }
        if slave == wide_on_slave {
            chains.push((k + 16, 4, 40));
        } else {
            chains.push((k + 16, 0, 50));
            chains.push((k + 20, 0, 50));
        }
        for i in 0..RUN as u64 {
            chains.push((k + 32 + i, 0, 30));
        }
        chains.push((k + 64, 0, if slave { 30 } else { 50 }));
        chains
    };
    chains_cluster(mode, &chains(false), &chains(true))
}
