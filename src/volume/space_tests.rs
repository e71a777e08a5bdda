//! Tests of the space a mount learns across its commits ([`SpaceCache`]): after every step,
//! the commit begun from the cache writes the very header (block places, freemap) that the
//! same commit writes when it reads every tree ([`Txn::begin`]).
//!
//! The trees here are super-roots with extra entries: inodes (with DATA blocks below) and
//! blockrefs that share one inode block, as the PFS roots of snapshots share their subtrees.
//! Volumes of 64 MiB hold one header copy, so each commit replaces the only tree and a
//! block it drops is free at once.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::space::SpaceCache;
use super::testdev::{data_volume, inode, set, SparseDev};
use super::*;
use crate::media::freemap::{BmapData, FreemapCheck};
use crate::media::*;
use crate::mem::try_box;

const MIB: u64 = 1 << 20;

fn make() -> SparseDev {
    data_volume(64 * MIB)
}

pub(crate) type Vol<'d> = Volume<&'d SparseDev>;

/// What a step does in a transaction: from the super-root's entries, the new ones (sorted by
/// key); blocks it writes or drops go through the transaction.
type Step<'s> = &'s dyn Fn(&mut Txn<'_, &SparseDev>, Vec<Blockref>) -> crate::Result<Vec<Blockref>>;

/// The super-root's entries on `vol` and its INDIRECT blocks.
fn sroot_table(vol: &Vol<'_>) -> (Vec<Blockref>, Vec<Blockref>) {
    let table = vol.super_root().unwrap().blockset().unwrap();
    let (mut entries, mut indirect) = (Vec::new(), Vec::new());
    vol.scan_tables(&table, &mut |b| {
        match b.btype {
            BREF_TYPE_INDIRECT => indirect.push(*b),
            _ => entries.push(*b),
        }
        Ok(Flow::Continue)
    })
    .unwrap();
    (entries, indirect)
}

/// Commit `t` with a super-root holding `entries`: the old super-root and its indirect
/// blocks dropped.
fn finish(
    mut t: Txn<'_, &SparseDev>,
    entries: &[Blockref],
) -> crate::Result<(Box<VolumeHeader>, Option<Box<SpaceCache>>)> {
    let nb = new_sroot(&mut t, entries)?;
    t.commit_cached(nb)
}

/// The super-root holding `entries` written in `t`, the old one and its indirect blocks
/// dropped: its blockref.
fn new_sroot(t: &mut Txn<'_, &SparseDev>, entries: &[Blockref]) -> crate::Result<Blockref> {
    let vol = t.volume();
    let (_, indirect) = sroot_table(vol);
    let old = *vol.header().sroot();
    let mut ino = vol.super_root().unwrap();
    let table = t.table(entries)?;
    ino.set_blockset(&table);
    t.drop_block(old.data_off)?;
    for b in indirect {
        t.drop_block(b.data_off)?;
    }
    t.write_block(old, &ino.encode())
}

/// `step` committed on `dev` from `cache` and, on a copy of `dev`, by a commit that reads
/// every tree: both must write the same header. The new cache, and the places the cached
/// commit wrote.
fn both(dev: &SparseDev, cache: Box<SpaceCache>, step: Step<'_>) -> (Box<SpaceCache>, Vec<u64>) {
    let want = full_walk(dev, step);
    let vol = Volume::open(dev).unwrap();
    let mut t = Txn::begin_cached(&vol, cache).unwrap();
    let entries = step(&mut t, sroot_table(&vol).0).unwrap();
    let wrote = t.wrote.clone();
    let (h, cache) = finish(t, &entries).unwrap();
    assert!(
        h == want,
        "the cached commit's header (places, freemap) is not a full walk's: free {} vs {}",
        h.allocator_free,
        want.allocator_free
    );
    (cache.expect("a cached commit keeps its cache"), wrote)
}

/// The header `step` committed on a copy of `dev` by a commit that reads every tree writes.
fn full_walk(dev: &SparseDev, step: Step<'_>) -> Box<VolumeHeader> {
    full_walk_on(dev, step).0
}

/// [`full_walk`], with the copy it committed on.
fn full_walk_on(dev: &SparseDev, step: Step<'_>) -> (Box<VolumeHeader>, SparseDev) {
    let twin = dev.snapshot();
    let h = {
        let vol = Volume::open(&twin).unwrap();
        let mut t = Txn::begin(&vol).unwrap();
        let entries = step(&mut t, sroot_table(&vol).0).unwrap();
        finish(t, &entries).unwrap().0
    };
    (h, twin)
}

/// Commit on `dev`, reading every tree, a super-root with `paths` more entries (keys
/// 1..=paths) naming one inode block, `ino`, as snapshots share a PFS root's subtree.
fn share(dev: &SparseDev, ino: &dyn Fn(&mut Txn<'_, &SparseDev>) -> InodeData, paths: u64) {
    let vol = Volume::open(dev).unwrap();
    let mut t = Txn::begin(&vol).unwrap();
    let ino = ino(&mut t);
    let x = t.inode(0, &ino).unwrap();
    let mut entries = sroot_table(&vol).0;
    for k in 1..=paths {
        let mut s = x;
        s.key = k;
        entries.push(s);
    }
    finish(t, &sorted(entries).unwrap()).unwrap();
}

fn empty() -> Box<SpaceCache> {
    try_box(SpaceCache::default()).unwrap()
}

fn sorted(mut entries: Vec<Blockref>) -> crate::Result<Vec<Blockref>> {
    entries.sort_by_key(|b| b.key);
    assert!(entries.windows(2).all(|w| w[0].key < w[1].key));
    Ok(entries)
}

/// Write a file inode keyed `key` with two DATA blocks of bytes from `seed`; its blockref.
fn file(t: &mut Txn<'_, &SparseDev>, key: u64, seed: u8) -> crate::Result<Blockref> {
    let bytes: Vec<u8> = (0..DATA_BLOCK_BYTES)
        .map(|i| ((i as u8) ^ seed) | 1)
        .collect();
    let d0 = t.data(0, &bytes)?.unwrap();
    let d1 = t.data(DATA_BLOCK_BYTES as u64, &bytes[..3000])?.unwrap();
    let mut ino = inode(OBJTYPE_REGFILE, key, b"f");
    ino.set_blockset(&set(&[d0, d1]));
    t.inode(key, &ino)
}

/// Take the file keyed `key` out of `entries`, dropping its inode and DATA blocks.
fn remove(t: &mut Txn<'_, &SparseDev>, entries: &mut Vec<Blockref>, key: u64) -> crate::Result<()> {
    let at = entries.iter().position(|b| b.key == key).unwrap();
    let b = entries.remove(at);
    let ino = t.volume().read_inode(&b).unwrap();
    for d in ino.blockset().unwrap() {
        if d.btype == BREF_TYPE_DATA {
            t.drop_block(d.data_off)?;
        }
    }
    t.drop_block(b.data_off)
}

/// A volume with file 1, committed from an empty cache; the cache.
fn with_file() -> (SparseDev, Box<SpaceCache>) {
    let dev = make();
    let (cache, _) = both(&dev, empty(), &|t, mut e| {
        e.push(file(t, 1, 1)?);
        sorted(e)
    });
    (dev, cache)
}

/// Snapshots share subtrees, so a walk may reach one granule more than 255 times: its
/// count stays exact, and the granule comes free when the last path to it goes.
#[test]
fn a_granule_reached_more_than_255_times_comes_free_exactly() {
    let dev = make();
    // 300 paths to one inode block (written without a cache, which would count the one
    // block written once).
    share(&dev, &|_| inode(OBJTYPE_DIRECTORY, 1, b"snap"), 300);
    let shared = |e: &Blockref| (1..=300).contains(&e.key);
    // The first cached commit counts the tree: all but one path go, the granule stays used.
    let (cache, _) = both(&dev, empty(), &|t, mut entries| {
        for e in entries.iter().filter(|e| shared(e) && e.key > 1) {
            t.drop_block(e.data_off)?;
        }
        entries.retain(|e| !shared(e) || e.key == 1);
        Ok(entries)
    });
    {
        let (_, counts) = cache.counts.as_ref().unwrap();
        let vol = Volume::open(&dev).unwrap();
        let mut want = 0;
        vol.walk_all(&vol.header().sroot_blockset, &mut |r, _| {
            want += u64::from(vol.locate(r).is_ok());
            Ok(Flow::Continue)
        })
        .unwrap();
        // Every block of this tree fits one granule.
        assert_eq!(counts.total(), want);
    }
    // The last path goes: the granule comes free.
    both(&dev, cache, &|t, mut entries| {
        for e in entries.iter().filter(|e| shared(e)) {
            t.drop_block(e.data_off)?;
        }
        entries.retain(|e| !shared(e));
        Ok(entries)
    });
}

/// Wide counts are bounded ([`super::space::PAGES_MAX`] pages of 64 granules, scaled down
/// under test): a tree that needs more is not counted, and its commits read every tree, as
/// a commit without a cache does, writing the same header.
#[test]
fn a_tree_past_the_bound_of_wide_counts_is_read_at_every_commit() {
    let dev = make();
    let pages = super::space::PAGES_MAX as u64;
    // An inode naming DATA blocks in more MiB than there are pages, reached 256 times (each
    // commit below takes one path away).
    let data_in_each_mib = |t: &mut Txn<'_, &SparseDev>| {
        let data: Vec<Blockref> = (0..=pages)
            .map(|i| {
                let mut d = Blockref::new(BREF_TYPE_DATA, i * DATA_BLOCK_BYTES as u64, 0);
                d.data_off = ((40 + i) * MIB) | DATA_BLOCK_RADIX as u64;
                d
            })
            .collect();
        let mut ino = inode(OBJTYPE_REGFILE, 1, b"f");
        ino.set_blockset(&t.table(&data).unwrap());
        ino
    };
    share(&dev, &data_in_each_mib, 256);
    let step: Step<'_> = &|t, mut e| {
        let last = e.iter().rposition(|b| b.key <= 256).unwrap();
        let b = e.remove(last);
        t.drop_block(b.data_off)?;
        let key = 1000 + e.iter().filter(|b| (1000..2000).contains(&b.key)).count() as u64;
        e.push(file(t, key, 1)?);
        sorted(e)
    };
    for _ in 0..2 {
        let want = full_walk(&dev, step);
        let vol = Volume::open(&dev).unwrap();
        let mut t = Txn::begin_cached(&vol, empty()).unwrap();
        assert!(t.space.is_none(), "the counts did not fit: no cache");
        let entries = step(&mut t, sroot_table(&vol).0).unwrap();
        let (h, cache) = finish(t, &entries).unwrap();
        assert!(cache.is_none());
        assert!(
            h == want,
            "a commit past the bound writes a full walk's header"
        );
    }
}

/// A commit that fails after writing blocks leaves them in no tree: the next commit (which
/// reads every tree again, the cache gone with the failed transaction) allocates their
/// places again, and the commits after it learn the space exactly.
#[test]
fn a_failed_commit_leaves_its_blocks_free_for_the_next() {
    let (dev, cache) = with_file();
    let step: Step<'_> = &|t, mut e| {
        remove(t, &mut e, 1)?;
        e.push(file(t, 2, 2)?);
        sorted(e)
    };
    let mut k = 0;
    loop {
        let mut d = dev.snapshot();
        d.fail_write_after = Some(k);
        let failed = {
            let vol = Volume::open(&d).unwrap();
            let mut t = Txn::begin_cached(&vol, cache.clone()).unwrap();
            let wrote = core::cell::RefCell::new(Vec::new());
            step(&mut t, sroot_table(&vol).0)
                .and_then(|entries| {
                    *wrote.borrow_mut() = t.wrote.clone();
                    finish(t, &entries)
                })
                .err()
                .map(|e| (e, wrote.into_inner()))
        };
        let Some((err, failed_wrote)) = failed else {
            break;
        };
        assert_eq!(err, Error::Io, "write {k}");
        d.fail_write_after = None;
        assert_eq!(
            Volume::open(&d).unwrap().header(),
            Volume::open(&dev).unwrap().header()
        );
        let (cache, wrote) = both(&d, empty(), step);
        // The same commit again: the same places, the failed one's free again.
        assert_eq!(wrote[..failed_wrote.len()], failed_wrote[..], "write {k}");
        let (cache, _) = both(&d, cache, &|t, mut e| {
            remove(t, &mut e, 2)?;
            e.push(file(t, 3, 3)?);
            sorted(e)
        });
        both(&d, cache, &|t, mut e| {
            remove(t, &mut e, 3)?;
            Ok(e)
        });
        k += 1;
        assert!(k < 100);
    }
    assert!(
        k > 5,
        "the commit writes data, inodes, the super-root, freemap, header"
    );
}

/// A block written and then replaced in the same transaction, and named to `drop_block`,
/// leaves no trace: its granule is free in the commit's freemap and after the next.
#[test]
fn a_block_written_then_replaced_in_one_transaction_is_not_kept() {
    let (dev, cache) = with_file();
    let (cache, _) = both(&dev, cache, &|t, mut e| {
        // A first version of the file, replaced before the commit.
        let first = file(t, 2, 2)?;
        remove(t, &mut alloc::vec![first], 2)?;
        e.push(file(t, 2, 3)?);
        sorted(e)
    });
    let (cache, _) = both(&dev, cache, &|t, mut e| {
        remove(t, &mut e, 2)?;
        remove(t, &mut e, 1)?;
        Ok(e)
    });
    both(&dev, cache, &|t, mut e| {
        e.push(file(t, 4, 4)?);
        sorted(e)
    });
}

const GIB: u64 = 1 << 30;

/// Every leaf of the freemap `vol` reads: its blockref and entries, by key.
pub(crate) fn leaves(vol: &Vol<'_>) -> Vec<(Blockref, Vec<crate::media::freemap::BmapData>)> {
    let mut out = Vec::new();
    vol.walk_freemap(&mut |v| {
        match v {
            super::freemap::FreemapVisit::Leaf(b, m) => out.push((*b, m.to_vec())),
            super::freemap::FreemapVisit::Node(_) => {}
            super::freemap::FreemapVisit::Fault(e, _) => panic!("{e}"),
        }
        Ok(Flow::Continue)
    })
    .unwrap();
    out
}

/// A header with its freemap blockset (placement) and CRCs left out.
pub(crate) fn without_freemap(h: &VolumeHeader) -> VolumeHeader {
    let mut h = h.clone();
    h.freemap_blockset = [[0; BREF_BYTES]; SET_COUNT];
    h
}

/// `step` committed on `dev` from `cache` (the freemap updated leaf by leaf once the cache
/// knows it) and on a copy by a commit that reads every tree and rebuilds the freemap: the
/// same header but for the freemap's placement, the same leaves; each leaf whose entries
/// did not change kept its block, each that changed moved to its next set; `fsck` finds
/// nothing. The new cache, and the device writes and reads of the cached commit's end
/// (freemap and header).
fn both_leaves(
    dev: &SparseDev,
    cache: Box<SpaceCache>,
    step: Step<'_>,
) -> (Box<SpaceCache>, IoCount) {
    let (want, twin) = full_walk_on(dev, step);
    let before = leaves(&Volume::open(dev).unwrap());
    let (h, cache, io) = cached_commit(dev, cache, step);
    assert!(
        without_freemap(&h) == without_freemap(&want),
        "free {} vs {}",
        h.allocator_free,
        want.allocator_free
    );
    let got = leaves(&Volume::open(dev).unwrap());
    let full = leaves(&Volume::open(&twin).unwrap());
    let entries = |l: &[(Blockref, Vec<BmapData>)]| {
        l.iter()
            .map(|(b, m)| (b.key, FreemapCheck::of(b).avail, m.clone()))
            .collect::<Vec<_>>()
    };
    assert!(
        entries(&got) == entries(&full),
        "the leaves are a full rebuild's"
    );
    for (b, m) in &got {
        match before.iter().find(|(o, _)| o.key == b.key) {
            Some((o, om)) if om == m => assert_eq!(o.data_off, b.data_off, "{:#x} kept", b.key),
            Some((o, _)) => assert_ne!(o.data_off, b.data_off, "{:#x} moved", b.key),
            None => {}
        }
    }
    let r = fsck(dev, FsckOptions::default()).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
    (cache.expect("a cached commit keeps its cache"), io)
}

/// `step` committed on `dev` from `cache`: the header, the new cache and the device writes
/// and reads of the commit's end (freemap and header).
fn cached_commit(
    dev: &SparseDev,
    cache: Box<SpaceCache>,
    step: Step<'_>,
) -> (Box<VolumeHeader>, Option<Box<SpaceCache>>, IoCount) {
    let vol = Volume::open(dev).unwrap();
    let mut t = Txn::begin_cached(&vol, cache).unwrap();
    let entries = step(&mut t, sroot_table(&vol).0).unwrap();
    let nb = new_sroot(&mut t, &entries).unwrap();
    let io = vol.io();
    let (h, cache) = t.commit_cached(nb).unwrap();
    (h, cache, vol.io().since(&io))
}

/// Random commits on a volume of four header copies and 272 GiB (two level-2 nodes once
/// leaves lie past 256 GiB), each writing files in a GiB chosen at random or removing
/// them: after each, the freemap updated leaf by leaf is the full rebuild's, and `fsck`
/// passes.
#[test]
fn the_freemap_updated_leaf_by_leaf_is_a_full_rebuild_after_random_commits() {
    let dev = data_volume(272 * GIB);
    let mut cache = empty();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut next_key = 1u64;
    let mut keys: Vec<u64> = Vec::new();
    let (mut updates, mut kept_leaves) = (0, 0);
    for round in 0..30 {
        let op = rnd() % 4;
        let at = (rnd() % 272) * GIB + (4 + rnd() % 1000) * MIB;
        let (add, victim) = match op {
            0 => (1 + rnd() % 3, None),
            1 | 2 if !keys.is_empty() => {
                let v = keys.remove((rnd() % keys.len() as u64) as usize);
                (u64::from(op == 2), Some(v))
            }
            _ => (0, None),
        };
        let new: Vec<u64> = (0..add).map(|i| next_key + i).collect();
        next_key += add;
        keys.extend(&new);
        let step: Step<'_> = &|t, mut e| {
            t.alloc.start_at(at);
            if let Some(v) = victim {
                remove(t, &mut e, v)?;
            }
            for &k in &new {
                e.push(file(t, k, k as u8)?);
            }
            sorted(e)
        };
        let before = leaves(&Volume::open(&dev).unwrap()).len();
        let (c, io) = both_leaves(&dev, cache, step);
        cache = c;
        if round > 0 {
            updates += 1;
            // Only changed leaves (at most two GiBs: the new files' and the removed one's,
            // plus GiB 0 where the super-root moves) and their nodes, and the header.
            assert!(io.blocks_written <= 1 + 3 * 2, "round {round}: {io:?}");
            assert!(io.blocks_read <= 3, "round {round}: {io:?}");
            kept_leaves += before.saturating_sub(io.blocks_written as usize);
        }
    }
    let vol = Volume::open(&dev).unwrap();
    let roots: Vec<u8> = vol.header().freemap_blockset.iter().map(|r| r[0]).collect();
    assert_eq!(roots[..2], [BREF_TYPE_FREEMAP_NODE; 2], "two level-2 nodes");
    assert!(updates > 20 && kept_leaves > 60, "{updates} {kept_leaves}");
}

/// A commit of ten new files on a 1 TiB volume whose tree reaches 200 GiBs (four level-2
/// nodes): updated leaf by leaf, its end writes the one leaf and node that changed and the
/// header and reads that node alone; the full rebuild it replaces (the same commit from a
/// cache that does not know the freemap) reads and writes every leaf.
#[test]
fn a_small_commit_on_a_big_volume_writes_only_what_changed() {
    let dev = data_volume(1 << 40);
    // A block in each of 200 GiBs (named, never written: a tree walk reads no data).
    share(
        &dev,
        &|t| {
            let data: Vec<Blockref> = (0..200u64)
                .map(|i| {
                    let mut d = Blockref::new(BREF_TYPE_DATA, i * DATA_BLOCK_BYTES as u64, 0);
                    d.data_off = ((i * 5 + 1) * GIB + 8 * MIB) | DATA_BLOCK_RADIX as u64;
                    // Zeros, under no check code: fsck reads them.
                    d.methods = enc_methods(CHECK_NONE, COMP_NONE);
                    d
                })
                .collect();
            let mut ino = inode(OBJTYPE_REGFILE, 1, b"f");
            ino.set_blockset(&t.table(&data).unwrap());
            ino
        },
        1,
    );
    let (cache, _) = both(&dev, empty(), &|t, mut e| {
        e.push(file(t, 100, 1)?);
        sorted(e)
    });
    let ten: Step<'_> = &|t, mut e| {
        for k in 200..210 {
            e.push(file(t, k, k as u8)?);
        }
        sorted(e)
    };
    let mut unknown = cache.clone();
    unknown.freemap = None;
    let twin = dev.snapshot();
    let (_, update) = both_leaves(&dev, cache, ten);
    let (h, _, full) = cached_commit(&twin, unknown, ten);
    assert_eq!(
        h.allocator_free,
        Volume::open(&dev).unwrap().header().allocator_free
    );
    assert_eq!(
        (update.blocks_written, update.blocks_read),
        (3, 1),
        "{update:?}"
    );
    assert!(
        full.blocks_written > 200 && full.blocks_read > 200,
        "{full:?}"
    );
}
