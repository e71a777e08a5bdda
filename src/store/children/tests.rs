//! The block table against HAMMER2's rules: unit cases for each rule (sizes, key ranges with
//! and without expansion, the sparse-file fallback, collapsing), and property runs that build
//! and mutate random tables (directory-style hashed and dense keys, file-style data blocks)
//! checking every indirect block's invariants after every step against a model.

use super::*;
use std::collections::BTreeMap;

const DIR: Creating = Creating {
    btype: media::BREF_TYPE_INODE,
    in_dir: true,
};
const FILE: Creating = Creating {
    btype: media::BREF_TYPE_DATA,
    in_dir: false,
};

fn id(i: u32) -> ChainId {
    ChainId { idx: i, gen: 0 }
}

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 11
    }
}

/// Check every structural rule of the table; returns (children, indirect blocks, depth).
/// `in_dir`: the table is a directory's (4 KiB blocks may appear), else a file's (16 KiB only).
fn check(c: &Children, in_dir: bool) -> (usize, usize, usize) {
    assert_eq!(c.root.radix, SET_RADIX);
    assert_eq!(c.root.cap(), media::SET_COUNT);
    let (mut leaves, mut inds, mut deepest) = (0, 0, 0);
    let mut stack = vec![(&c.root, 0usize)];
    while let Some((n, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        assert!(n.slots.len() <= n.cap(), "fan-out at depth {depth}");
        if depth > 0 {
            assert!(!n.slots.is_empty(), "empty indirect block");
            let sizes: &[u8] = if in_dir {
                &[IND_RADIX_MIN, IND_RADIX_NOM]
            } else {
                &[IND_RADIX_NOM]
            };
            assert!(sizes.contains(&n.radix), "size radix {}", n.radix);
        }
        assert!(aligned(n.key, n.keybits));
        let (mut sum, mut tid, mut prev_end) = (RangeSum::default(), 0, None);
        for s in &n.slots {
            // Sorted, non-overlapping, nested in this block's range.
            assert!(prev_end.map_or(true, |p: u64| s.key() > p));
            prev_end = Some(s.end());
            assert!(s.key() >= n.key && s.end() <= n.end());
            sum.add(&s.sum());
            tid = tid.max(s.tid());
            match s {
                Slot::Leaf(e) => {
                    assert!(aligned(e.key, e.keybits));
                    assert_eq!(e.end, key_end(e.key, e.keybits));
                    leaves += 1;
                }
                Slot::Ind(m) => {
                    inds += 1;
                    assert_eq!((m.key, m.end), (m.node.key, m.node.end()), "cached range");
                    assert!(m.keybits < n.keybits, "keybits shrink going down");
                    stack.push((&**m, depth + 1));
                }
                Slot::Stub(t) => {
                    assert!(aligned(t.key, t.info.keybits));
                    assert_eq!(t.end, key_end(t.key, t.info.keybits), "cached range");
                    assert!(t.info.keybits < n.keybits, "keybits shrink going down");
                    assert!(t.info.sum.count > 0, "a stub is never empty");
                }
            }
        }
        assert_eq!(sum, n.sum, "summary equals its recomputation");
        assert!(n.tid >= tid, "modify_tid covers every child's");
    }
    assert_eq!(leaves, c.len());
    (leaves, inds, deepest)
}

/// No indirect block on the path to `key` is left as one HAMMER2's maintenance collapses.
fn maintained(c: &Children, key: u64) {
    let mut node = &c.root;
    while let Some(n) = node.covering(node.find(key), key, key) {
        assert!(!collapses(node, n), "a sparse block on {key:x}'s path");
        node = n;
    }
}

/// The indirect blocks: (depth, key, keybits, size radix, blockrefs).
fn shape(c: &Children) -> Vec<(usize, u64, u8, u8, usize)> {
    let mut out = Vec::new();
    let mut stack = vec![(&c.root, 0usize)];
    while let Some((n, depth)) = stack.pop() {
        for s in n.slots.iter().rev() {
            if let Slot::Ind(m) = s {
                out.push((depth, m.key, m.keybits, m.radix, m.slots.len()));
                stack.push((&**m, depth + 1));
            }
        }
    }
    out.sort();
    out
}

fn model_sum(m: &BTreeMap<u64, (u8, u64)>, beg: u64, end: u64) -> RangeSum {
    let mut s = RangeSum::default();
    for (&k, &(kb, t)) in m.range(beg..=end) {
        s.add(&RangeSum::leaf(k, kb, t));
    }
    s
}

#[test]
fn the_blockset_is_four_blockrefs() {
    assert_eq!(media::ind_count(SET_RADIX), media::SET_COUNT);
    assert_eq!(media::ind_count(IND_RADIX_MIN), 32);
    assert_eq!(media::ind_count(IND_RADIX_NOM), 128);
    assert_eq!(media::ind_count(media::IND_RADIX_MAX), 512);
}

#[test]
fn overlap_lookup_and_order() {
    let mut c = Children::default();
    c.insert(0x20000, 16, 1, id(2), FILE).unwrap();
    c.insert(0, 16, 1, id(0), FILE).unwrap();
    c.insert(0x10000, 16, 1, id(1), FILE).unwrap();
    assert_eq!(
        c.insert(0x10005, 0, 1, id(9), FILE),
        Err(Error::Exists.into())
    );
    assert_eq!(
        c.insert(0x10005, 4, 1, id(9), FILE),
        Err(Error::Invalid.into())
    );
    assert_eq!(c.first_overlapping(0, u64::MAX).unwrap(), Some((0, id(0))));
    assert_eq!(
        c.first_overlapping(0x1ffff, u64::MAX).unwrap(),
        Some((0x10000, id(1)))
    );
    assert_eq!(
        c.first_overlapping(0x20000, 0x20000).unwrap(),
        Some((0x20000, id(2)))
    );
    assert_eq!(c.first_overlapping(0x30000, u64::MAX).unwrap(), None);
    assert_eq!(c.remove(0x10000), Some(id(1)));
    assert_eq!(c.first_overlapping(0x10000, 0x1ffff).unwrap(), None);
    assert_eq!(c.len(), 2);
    assert_eq!(c.first_resident(), Some(id(0)));
    assert_eq!(c.update(0, 20, 1, FILE), Err(Error::Exists.into()));
    c.update(0, 8, 1, FILE).unwrap();
    assert_eq!(c.first_overlapping(0x100, 0x100).unwrap(), None);
    assert_eq!(c.first_overlapping(0xff, 0x100).unwrap(), Some((0, id(0))));
    check(&c, false);
}

#[test]
fn dense_directory_keys_expand_to_fill_a_4k_block() {
    // Inode numbers 0..=3 fill the blockset; the fifth: the covering range of 4 and 0..=3 is
    // 3 keybits, half of it 2 (holding all four), expanded to 5 keybits (32 keys, as many as
    // the 4 KiB block below a directory holds), so the block takes everything, 4 included.
    let mut c = Children::default();
    for i in 0..5u64 {
        c.insert(i, 0, i, id(i as u32), DIR).unwrap();
    }
    assert_eq!(shape(&c), vec![(0, 0, 5, IND_RADIX_MIN, 5)]);
    assert_eq!(check(&c, true), (5, 1, 1));
    // It fills up to its 32 keys; the next ones go beside it.
    for i in 5..40u64 {
        c.insert(i, 0, i, id(i as u32), DIR).unwrap();
    }
    let s = shape(&c);
    assert_eq!(s[0], (0, 0, 5, IND_RADIX_MIN, 32));
    check(&c, true);
    // The blockset's summary and TID cover everything.
    let mut b = Vec::new();
    c.visit(|d, v| {
        if let Visit::Indirect(r) = v {
            b.push((d, r));
        }
    })
    .unwrap();
    let (d, r) = b[0];
    assert_eq!(
        (d, r.key, r.keybits, r.size_radix()),
        (0, 0, 5, IND_RADIX_MIN)
    );
    assert_eq!((r.modify_tid, r.leaf_count), (31, 32));
    assert_eq!(RangeSum::from_bref(&r), c.key_sum(0, 31).unwrap());
}

#[test]
fn hashed_directory_keys_take_the_fuller_half() {
    // Four hashed keys, two in each half of the key space; the fifth (in the low half): the
    // covering range is the whole space, its halves hold two each, the tie keeps the low one.
    let mut c = Children::default();
    for (i, k) in [0x1u64, 0x5, 0x9, 0xd].into_iter().enumerate() {
        c.insert(k << 60, 0, 1, id(i as u32), DIR).unwrap();
    }
    c.insert(0x3 << 60, 0, 1, id(9), DIR).unwrap();
    assert_eq!(shape(&c), vec![(0, 0, 63, IND_RADIX_MIN, 3)]);
    assert_eq!(check(&c, true), (5, 1, 1));
    // Without the tie the fuller half wins, even when the new key is not in it: it goes into
    // the blockset beside the new block.
    let mut c = Children::default();
    for (i, k) in [0x9u64, 0xa, 0xb, 0x1].into_iter().enumerate() {
        c.insert(k << 60, 0, 1, id(i as u32), DIR).unwrap();
    }
    c.insert(0x2 << 60, 0, 1, id(9), DIR).unwrap();
    assert_eq!(shape(&c), vec![(0, 0x8 << 60, 63, IND_RADIX_MIN, 3)]);
    assert_eq!(check(&c, true), (5, 1, 1));
}

#[test]
fn below_an_indirect_block_the_blocks_are_16k() {
    let (mut rnd, mut c) = (rng(99), Children::default());
    for i in 0..3000u32 {
        let _ = c.insert(mix(rnd()), 0, 1, id(i), DIR);
        check(&c, true);
        let s = shape(&c);
        // The first block made inside another: 16 KiB, inside a 4 KiB one right below the
        // directory's blockset.
        if let Some(inner) = s.iter().find(|t| t.0 == 1) {
            let outer = s
                .iter()
                .find(|t| t.0 == 0 && t.1 <= inner.1 && inner.1 >> t.2 == t.1 >> t.2);
            assert_eq!(outer.map(|t| t.3), Some(IND_RADIX_MIN), "{s:?}");
            assert_eq!(inner.3, IND_RADIX_NOM, "{s:?}");
            break;
        }
        assert!(s.iter().all(|t| t.3 == IND_RADIX_MIN), "{s:?}");
        assert!(i < 2999, "no block inside another");
    }
    assert_eq!(split_radix(&c.root, 0, DIR), IND_RADIX_MIN);
    assert_eq!(split_radix(&c.root, 0, FILE), IND_RADIX_NOM);
    // A file's blocks are 16 KiB right below the inode too.
    let mut c = Children::default();
    for i in 0..1000u64 {
        c.insert(i << 16, 16, 1, id(i as u32), FILE).unwrap();
    }
    assert!(shape(&c).iter().all(|t| t.3 == IND_RADIX_NOM));
    check(&c, false);
}

#[test]
fn file_blocks_get_the_range_of_128_blocks() {
    // hammer2_chain_indkey_file: 64 KiB blocks 0..=3 fill the blockset; the fifth: a block of
    // 128 blockrefs around the smallest, lowest one covers 128 blocks (keybits 16 + 7).
    let mut c = Children::default();
    for i in 0..5u64 {
        c.insert(i << 16, 16, i, id(i as u32), FILE).unwrap();
    }
    assert_eq!(shape(&c), vec![(0, 0, 23, IND_RADIX_NOM, 5)]);
    // Filled sequentially, block 128 starts the next range beside it.
    for i in 5..129u64 {
        c.insert(i << 16, 16, i, id(i as u32), FILE).unwrap();
    }
    assert_eq!(shape(&c), vec![(0, 0, 23, IND_RADIX_NOM, 128)]);
    assert_eq!(check(&c, false), (129, 1, 1));
    // A sparse file: the range around block 0 holds no other block, so the directory rule
    // makes room instead (see plan_split): the lower half of the covering range moves.
    let mut c = Children::default();
    for i in 0..5u64 {
        c.insert(i << 40, 16, 1, id(i as u32), FILE).unwrap();
    }
    assert_eq!(shape(&c), vec![(0, 0, 42, IND_RADIX_NOM, 4)]);
    assert_eq!(check(&c, false), (5, 1, 1));
}

#[test]
fn the_collapse_rule_and_its_hysteresis() {
    let node = |radix: u8, n: usize| Node {
        key: 0,
        keybits: 40,
        radix,
        tid: 0,
        sum: RangeSum::default(),
        slots: (0..n as u64)
            .map(|k| {
                Slot::Leaf(Entry {
                    key: k,
                    end: k,
                    id: id(0),
                    keybits: 0,
                    tid: 0,
                })
            })
            .collect(),
    };
    let (p, c) = (IND_RADIX_NOM, IND_RADIX_NOM);
    // Fits in place of its own blockref, and at most 3/4 full (96 of 128).
    assert!(collapses(&node(p, 33), &node(c, 96)));
    assert!(!collapses(&node(p, 34), &node(c, 96)), "does not fit");
    assert!(!collapses(&node(p, 1), &node(c, 97)), "more than 3/4 full");
    // The blockset takes a 4 KiB block's four blockrefs when it holds only that block.
    assert!(collapses(&node(SET_RADIX, 1), &node(IND_RADIX_MIN, 4)));
    assert!(!collapses(&node(SET_RADIX, 2), &node(IND_RADIX_MIN, 4)));
}

#[test]
fn removals_collapse_sparse_blocks_into_their_parents() {
    let mut c = Children::default();
    for i in 0..5u64 {
        c.insert(i, 0, 1, id(i as u32), DIR).unwrap();
    }
    assert_eq!(check(&c, true), (5, 1, 1));
    // Four left in a block the blockset's four slots can take: it is collapsed.
    c.remove(4).unwrap();
    assert_eq!(check(&c, true), (4, 0, 0));
    assert_eq!(c.first_overlapping(0, u64::MAX).unwrap(), Some((0, id(0))));
    // A deep table emptied down to a few: no sparse block is left on any removed key's path.
    // A block no removal went through stays (HAMMER2 maintains only the blocks it flushes):
    // one more removal beside the last few collapses everything into the blockset.
    let mut rnd = rng(5);
    let mut keys: Vec<u64> = (0..5000).map(|_| mix(rnd())).collect();
    keys.sort();
    keys.dedup();
    let mut c = Children::default();
    for (i, &k) in keys.iter().enumerate() {
        c.insert(k, 0, 1, id(i as u32), DIR).unwrap();
    }
    let (_, before, depth) = check(&c, true);
    assert!(depth >= 2 && before > 40, "{before} blocks, depth {depth}");
    for &k in keys[3..].iter().rev() {
        c.remove(k).unwrap();
        maintained(&c, k);
    }
    assert_eq!(check(&c, true), (3, 0, 0));
}

#[test]
fn a_child_outgrowing_its_indirect_block_moves_up() {
    let mut c = Children::default();
    for k in 0..600u64 {
        c.insert(k, 0, 1, id(k as u32), DIR).unwrap();
    }
    c.insert(1 << 40, 0, 1, id(999), DIR).unwrap();
    for k in 200..600u64 {
        c.remove(k).unwrap();
    }
    for k in (1..200u64).rev() {
        c.update(0, 0, k, DIR).unwrap();
        c.remove(k).unwrap();
        if k == 40 {
            let (_, _, depth) = check(&c, true);
            assert!(depth >= 1, "key 0 sits in an indirect block");
        }
    }
    // Only 0 and 1 << 40 are left, collapsed into the blockset on the way.
    assert_eq!(check(&c, true), (2, 0, 0));
    let mut c2 = Children::default();
    for k in 0..40u64 {
        c2.insert(k, 0, 1, id(k as u32), DIR).unwrap();
    }
    c2.insert(1 << 40, 0, 1, id(999), DIR).unwrap();
    for k in 1..20u64 {
        c2.remove(k).unwrap();
    }
    assert!(
        check(&c2, true).2 >= 1,
        "key 0 sits in a small indirect block"
    );
    // Widening key 0 over 12 keybits needs keys 20..40 gone; then it leaves its block.
    assert_eq!(c2.update(0, 12, 5, DIR), Err(Error::Exists.into()));
    for k in 20..40u64 {
        c2.remove(k).unwrap();
    }
    c2.update(0, 12, 5, DIR).unwrap();
    assert_eq!(check(&c2, true), (2, 0, 0));
    assert_eq!(c2.first_overlapping(4095, 4095).unwrap(), Some((0, id(0))));
    assert_eq!(c2.key_sum(0, 10).unwrap(), RangeSum::leaf(0, 12, 5));
    assert_eq!(c2.update(0, 41, 5, DIR), Err(Error::Exists.into()));
}

/// A random history of inserts, removals and replaces (new TID, sometimes new keybits) on one
/// table against a model, with every invariant checked after every step.
fn property(seed: u64, how: Creating, steps: u32, key: impl Fn(u64) -> (u64, u8)) {
    let mut rnd = rng(seed);
    let mut c = Children::default();
    let mut model: BTreeMap<u64, (u8, u64)> = BTreeMap::new();
    let mut tid = 0u64;
    let (mut most, mut deepest, mut splits_seen) = (0, 0, 0);
    for i in 0..steps {
        let r = rnd();
        let (k, kb) = key(r);
        // Phases: grow, then shrink, then grow again, so collapses and re-splits both happen.
        let grow = (i / (steps / 4).max(1)) % 2 == 0;
        match (r >> 40) % 10 {
            0..=3 if !grow => {
                let got = c.remove(k);
                assert_eq!(got.is_some(), model.remove(&k).is_some());
                if got.is_some() {
                    maintained(&c, k);
                }
            }
            0 => {
                let got = c.remove(k);
                assert_eq!(got.is_some(), model.remove(&k).is_some());
                if got.is_some() {
                    maintained(&c, k);
                }
            }
            4 | 5 => {
                // A replace: a new TID, and now and then a new size.
                tid += 1;
                let nkb = match (r >> 50) % 4 {
                    0 => kb.saturating_add(2),
                    1 => kb.saturating_sub(1),
                    _ => kb,
                };
                let want = match model.get(&k) {
                    _ if !aligned(k, nkb) => Err(Error::Invalid),
                    None => Err(Error::NotFound),
                    Some(_) => {
                        let end = key_end(k, nkb);
                        match model.range(k + 1..).next() {
                            Some((&n, _)) if n <= end => Err(Error::Exists),
                            _ => Ok(()),
                        }
                    }
                };
                assert_eq!(
                    c.update(k, nkb, tid, how),
                    want.map_err(TabErr::from),
                    "{k:x}/{nkb}"
                );
                if want.is_ok() {
                    model.insert(k, (nkb, tid));
                }
            }
            _ => {
                tid += 1;
                let end = key_end(k, kb);
                let free = model
                    .range(..=end)
                    .next_back()
                    .map_or(true, |(&p, &(pkb, _))| key_end(p, pkb) < k);
                assert_eq!(c.insert(k, kb, tid, id(i), how).is_ok(), free);
                if free {
                    model.insert(k, (kb, tid));
                }
            }
        }
        let (n, inds, depth) = check(&c, how.in_dir);
        assert_eq!(n, model.len());
        most = most.max(n);
        deepest = deepest.max(depth);
        splits_seen = splits_seen.max(inds);
        if i % 64 == 0 {
            for _ in 0..8 {
                let (a, b) = (key(rnd()).0, key(rnd()).0);
                let (a, b) = (a.min(b), a.max(b));
                assert_eq!(c.key_sum(a, b).unwrap(), model_sum(&model, a, b));
            }
        }
    }
    assert!(
        most > 500 && deepest >= 2 && splits_seen > 10,
        "the history was too tame: {most} children, depth {deepest}, {splits_seen} blocks"
    );
    // A walk by "first overlapping from the last end + 1" sees exactly the model.
    let mut k = 0;
    let mut seen = Vec::new();
    while let Some((key, _)) = c.first_overlapping(k, u64::MAX).unwrap() {
        seen.push(key);
        match key_end(key, model[&key].0).checked_add(1) {
            Some(n) => k = n,
            None => break,
        }
    }
    assert_eq!(seen, model.keys().copied().collect::<Vec<_>>());
    // Emptied, no indirect block is left behind.
    for k in model.keys() {
        c.remove(*k).unwrap();
    }
    assert_eq!(check(&c, how.in_dir), (0, 0, 0));
}

#[test]
fn random_directories_keep_every_invariant() {
    for seed in [1, 2, 3] {
        // Hashed names (directory entries) mixed with dense inode numbers; a few aligned to
        // 16 keys so replaces can widen them.
        property(seed, DIR, 6000, |r| match r % 4 {
            0 => ((r >> 8) % 1500, 0),
            1 => (((r >> 8) % 300) << 4, 0),
            _ => (mix(r % 2500) & !0xf, 0),
        });
    }
}

#[test]
fn random_files_keep_every_invariant() {
    for seed in [4, 5, 6] {
        // 64 KiB data blocks, mostly dense, some far apart (sparse files).
        property(seed, FILE, 6000, |r| match r % 8 {
            0 => (((r >> 8) % 64) << 40, 16),
            _ => (((r >> 8) % 3000) << 17, 16),
        });
    }
}

#[test]
fn shape_follows_history_summaries_do_not() {
    let mut rnd = rng(7);
    let keys: Vec<(u64, u64)> = (0..20_000)
        .map(|_| (rnd() << 15 | 0x8000_0000_0000_0000, rnd() % 100))
        .collect();
    let (mut a, mut b) = (Children::default(), Children::default());
    for (i, &(k, t)) in keys.iter().enumerate() {
        let _ = a.insert(k, 0, t, id(i as u32), DIR);
    }
    for (i, &(k, t)) in keys.iter().enumerate().rev() {
        let _ = b.insert(k, 0, t, id(i as u32), DIR);
    }
    assert_ne!(
        shape(&a),
        shape(&b),
        "different insert orders, different trees"
    );
    check(&a, true);
    check(&b, true);
    for _ in 0..500 {
        let (x, y) = (rnd() << 15, rnd() << 15);
        let (x, y) = (x.min(y), x.max(y));
        assert_eq!(a.key_sum(x, y).unwrap(), b.key_sum(x, y).unwrap());
    }
    // Every indirect block of one tree summarizes the same as that range of the other.
    a.visit(|_, x| {
        if let Visit::Indirect(r) = x {
            let s = RangeSum::from_bref(&r);
            assert_eq!(s, b.key_sum(r.key, r.key_end()).unwrap());
        }
    })
    .unwrap();
}

#[test]
fn spans_partition_the_key_space() {
    let mut rnd = rng(3);
    let mut c = Children::default();
    let mut model = BTreeMap::new();
    for i in 0..5_000u32 {
        let k = rnd() << 20;
        if c.insert(k, 0, 1, id(i), DIR).is_ok() {
            model.insert(k, (0u8, 1u64));
        }
    }
    // With nothing known to differ, the walk sees indirect blocks whole.
    let (mut from, mut total, mut steps) = (0u64, RangeSum::default(), 0);
    loop {
        let s = c.span(from, None).unwrap();
        assert_eq!(s.beg, from);
        assert_eq!(s.sum, model_sum(&model, s.beg, s.end));
        total.add(&s.sum);
        steps += 1;
        match s.end.checked_add(1) {
            Some(n) => from = n,
            None => break,
        }
    }
    assert_eq!(total, c.root.sum);
    assert!(steps <= 4 * (RUN + 1), "{steps}");
    // Known to differ, the root's first block is descended into.
    let first = c.span(0, None).unwrap();
    assert!(first.indirect);
    let inner = c.span(0, Some((first.beg, first.end))).unwrap();
    assert!(inner.end < first.end);
}

#[test]
fn inserts_whose_ranges_cover_or_straddle_indirect_blocks() {
    for seed in [11, 12, 13, 14] {
        // Dense keys with large aligned ranges mixed in: inserts whose range covers or
        // straddles indirect blocks.
        property(seed, DIR, 6000, |r| {
            let kb = match r % 5 {
                0 => ((r >> 20) % 12) as u8,
                _ => 0,
            };
            let k = ((r >> 8) % 4000) & !((1u64 << kb) - 1);
            (k, kb)
        });
    }
}

/// Where the child at `key` ends (the walk's next `beg` is one past it).
fn end_of(c: &Children, key: u64) -> u64 {
    c.locate(key).map(|(_, _, e)| e.end).unwrap()
}

#[test]
fn hinted_walks_return_what_a_search_returns_and_step_without_one() {
    let mut r = crate::scenario::prng::Stream::new(11);
    let mut c = Children::default();
    let key = |w: u64| match w % 3 {
        0 => (w >> 8) % 4000,
        _ => mix(w % 6000) & !0xf,
    };
    let (mut tid, mut n) = (0u64, 0u32);
    let mut insert = |c: &mut Children, k: u64, tid: &mut u64| {
        *tid += 1;
        n += 1;
        let _ = c.insert(k, 0, *tid, id(n), DIR);
    };
    for _ in 0..3000 {
        let w = r.next_u64();
        insert(&mut c, key(w), &mut tid);
    }
    assert!(check(&c, true).2 >= 2, "too shallow to test a path");
    // A walk with nothing changing searches once, at its first step.
    let mut hint = Hint::default();
    let (mut beg, mut walked) = (0, 0);
    while let Some((k, _)) = c
        .first_overlapping_hinted(beg, u64::MAX, &mut hint)
        .unwrap()
    {
        walked += 1;
        beg = end_of(&c, k) + 1;
    }
    assert_eq!((walked, hint.misses), (c.len(), 1));
    // Walks interleaved with inserts, removes and widening replaces (splits and collapses),
    // growing then shrinking the table: every step answers as a fresh search does.
    let (mut beg, mut steps, mut changes, mut restarts) = (0u64, 0u32, 0u32, 0u32);
    let mut hint = Hint::default();
    for i in 0..40_000u32 {
        let w = r.next_u64();
        let grow = (i / 5000) % 2 == 0;
        match w % 8 {
            0 | 1 if grow => insert(&mut c, key(w >> 3), &mut tid),
            0 | 1 => {
                let k = c
                    .first_overlapping(key(w >> 3), u64::MAX)
                    .unwrap()
                    .map(|(k, _)| k);
                if let Some(k) = k {
                    c.remove(k);
                }
            }
            2 => {
                tid += 1;
                let k = key(w >> 3);
                let _ = c.update(k, [0, 4, 0][(w >> 40) as usize % 3], tid, DIR);
            }
            _ => {
                steps += 1;
                let want = c.first_overlapping(beg, u64::MAX).unwrap();
                assert_eq!(
                    c.first_overlapping_hinted(beg, u64::MAX, &mut hint)
                        .unwrap(),
                    want
                );
                match want {
                    Some((k, _)) => beg = end_of(&c, k).wrapping_add(1),
                    None => {
                        restarts += 1;
                        beg = 0;
                    }
                }
                continue;
            }
        }
        changes += 1;
        check(&c, true);
    }
    hint.assert_walk(steps, changes, restarts);
}

/// Every child of the table, walking through stubs by reading them back with `fill` from
/// `all` (the children as built): (key, id) in key order, and the stubs met.
fn walk_filling(c: &mut Children, all: &BTreeMap<u64, u32>) -> (Vec<(u64, ChainId)>, usize) {
    let (mut out, mut filled, mut k) = (Vec::new(), 0, 0u64);
    loop {
        match c.first_overlapping(k, u64::MAX) {
            Ok(Some((key, id))) => {
                out.push((key, id));
                k = key + 1;
            }
            Ok(None) => return (out, filled),
            Err(m) => {
                let back: Vec<_> = all
                    .range(m.key..=m.end)
                    .map(|(&k, &i)| (k, 0, u64::from(i % 7), id(i)))
                    .collect();
                c.fill(m, &back, &[]).unwrap();
                filled += 1;
            }
        }
    }
}

#[test]
fn a_block_taken_out_of_memory_answers_sums_and_spans_and_misses_for_children() {
    let mut c = Children::default();
    let mut all = BTreeMap::new();
    let mut r = rng(11);
    for i in 0..3000u32 {
        let k = r() & !0xff;
        if c.insert(k, 0, u64::from(i % 7), id(i), DIR).is_ok() {
            all.insert(k, i);
        }
    }
    let (before, _) = walk_filling(&mut c, &all);
    let total = c.key_sum(0, u64::MAX).unwrap();
    let mut blocks = Vec::new();
    c.leaf_blocks(|m, n| blocks.push((m, n))).unwrap();
    assert!(blocks.len() > 10, "{} leaf blocks", blocks.len());
    let spans: Vec<_> = blocks
        .iter()
        .map(|(m, _)| c.span(m.key, None).unwrap())
        .collect();
    let sums: Vec<_> = blocks
        .iter()
        .map(|(m, _)| c.key_sum(m.key, m.end).unwrap())
        .collect();
    // Every other block out: stubs sit between resident blocks.
    let mut freed = Vec::new();
    for (m, n) in blocks.iter().step_by(2) {
        let at = freed.len();
        c.stub_out(*m, &mut freed, &mut Vec::new()).unwrap();
        assert_eq!(freed.len() - at, *n);
        assert!(freed[at..]
            .iter()
            .all(|f| all.range(m.key..=m.end).any(|(_, &i)| id(i) == *f)));
    }
    let (resident, _, _) = check(&c, true);
    assert_eq!(resident + freed.len(), all.len());
    assert_eq!(
        c.key_sum(0, u64::MAX).unwrap(),
        total,
        "stubs keep their sums"
    );
    for (i, (((m, _), span), sum)) in blocks.iter().zip(&spans).zip(&sums).enumerate().step_by(2) {
        assert_eq!(
            c.span(m.key, None).unwrap(),
            *span,
            "a stub spans as its block did"
        );
        assert_eq!(c.key_sum(m.key, m.end).unwrap(), *sum);
        // Anything that must see a child inside it is a miss for exactly that stub.
        assert_eq!(c.first_overlapping(m.key, m.end), Err(*m));
        assert_eq!(c.span(m.key + 1, None), Err(*m));
        assert_eq!(c.span(m.key, Some((m.key, m.end))), Err(*m));
        assert_eq!(c.key_sum(m.key + 1, m.end), Err(TabErr::Miss(*m)));
        assert_eq!(
            c.insert(m.key + 1, 0, 1, id(99_999), DIR),
            Err(TabErr::Miss(*m))
        );
        assert_eq!(c.stub_over(m.key, m.key).unwrap(), Some(*m));
        // What lies wholly before it (from the resident block before it) is answered
        // without it.
        if let Some((b, _)) = i.checked_sub(1).map(|j| blocks[j]) {
            let found = c.first_overlapping(b.key, m.key - 1).unwrap();
            assert_eq!(
                found.map(|(k, _)| k),
                all.range(b.key..).next().map(|(&k, _)| k)
            );
            let between = c.first_overlapping(b.end + 1, m.key - 1).unwrap();
            let want = all
                .range(b.end + 1..m.key)
                .next()
                .map(|(&k, &i)| (k, id(i)));
            assert_eq!(between, want);
        }
    }
    assert_eq!(
        c.first_resident(),
        before.iter().map(|&(_, i)| i).find(|i| !freed.contains(i))
    );
    // A hinted walk stops at a stub just as a search does.
    let mut hint = Hint::default();
    let mut k = 0;
    let first_stub = blocks[0].0;
    loop {
        match c.first_overlapping_hinted(k, u64::MAX, &mut hint) {
            Ok(Some((key, _))) => k = key + 1,
            Ok(None) => panic!("walked past a stub"),
            Err(m) => {
                assert_eq!(m, first_stub);
                break;
            }
        }
    }
    // Read back, the table holds what it held.
    let (after, filled) = walk_filling(&mut c, &all);
    assert_eq!(filled, blocks.len().div_ceil(2));
    assert_eq!(after, before);
    check(&c, true);
    assert_eq!(c.len(), all.len());
}

#[test]
fn a_stub_is_filled_only_with_the_children_it_summarized() {
    let mut c = Children::default();
    let mut all = BTreeMap::new();
    for i in 0..200u32 {
        let k = u64::from(i) << 8;
        c.insert(k, 0, u64::from(i % 7), id(i), DIR).unwrap();
        all.insert(k, i);
    }
    let mut blocks = Vec::new();
    c.leaf_blocks(|m, _| blocks.push(m)).unwrap();
    let m = blocks[0];
    let mut freed = Vec::new();
    c.stub_out(m, &mut freed, &mut Vec::new()).unwrap();
    let good: Vec<_> = all
        .range(m.key..=m.end)
        .map(|(&k, &i)| (k, 0u8, u64::from(i % 7), id(i)))
        .collect();
    let mut missing = good.clone();
    missing.pop();
    let mut newer = good.clone();
    newer[0].2 += 1;
    let mut outside = good.clone();
    outside.last_mut().unwrap().0 = m.end + 1;
    let mut unsorted = good.clone();
    unsorted.swap(0, 1);
    for bad in [&missing, &newer, &outside, &unsorted] {
        assert_eq!(c.fill(m, bad, &[]).err(), Some(Error::Invalid));
        assert_eq!(c.first_overlapping(m.key, m.end), Err(m), "still a stub");
    }
    let other = Miss {
        key: m.key,
        end: m.end - 1,
    };
    assert_eq!(c.fill(other, &good, &[]).err(), Some(Error::NotFound));
    assert_eq!(
        c.stub_out(m, &mut freed, &mut Vec::new()),
        Err(Error::NotFound),
        "already out"
    );
    c.fill(m, &good, &[]).unwrap();
    check(&c, true);
    assert_eq!(c.len(), all.len());
}
