//! A commit inserting into full indirect blocks splits them as `hammer2_chain_create_indirect`
//! does: the change costs the blocks on its path, and the tree keeps HAMMER2's shape rules.

use super::*;

/// `n` files `fN` in the PFS root, each one 1 KiB data block: the root's table holds their
/// inodes and their directory entries.
fn import_flat(dev: &SparseDev, n: usize) {
    let vol = Volume::open(dev).unwrap();
    let mut imp = Import::begin(&vol, b"DATA").unwrap();
    let mut root = DirEntries::new();
    for f in 0..n {
        import_file(&mut imp, &mut root, f, f as u8);
    }
    imp.commit(&meta(OBJTYPE_DIRECTORY, 1), &root).unwrap();
}

/// A volume of [`import_flat`]`(n)`, loaded; a TID past its PFS's.
fn loaded_flat(n: usize) -> (SparseDev, Store, Mounted, u64) {
    let dev = make_sized(SIZE_TWO_COPIES);
    import_flat(&dev, n);
    let (store, m) = load_dev(&dev);
    let tid = m.pfs_bref.modify_tid + 10;
    (dev, store, m, tid)
}

/// The table where `key` would be inserted in the table `set`: its range, its live entries
/// and the entries it holds at most.
fn landing(vol: &Volume<&SparseDev>, set: &[Blockref], key: u64) -> ((u64, u8), usize, usize) {
    let (mut table, mut range) = (set.to_vec(), (0, 64));
    loop {
        let cap = table.len();
        table.retain(|b| b.btype != BREF_TYPE_EMPTY);
        let below = table
            .iter()
            .find(|b| b.btype == BREF_TYPE_INDIRECT && b.key <= key && key <= b.key_end());
        match below {
            Some(b) => {
                range = (b.key, b.keybits);
                table = vol.read_table(b).unwrap();
            }
            None => return (range, table.len(), cap),
        }
    }
}

/// Every INDIRECT block of the PFS's tables (the root's and every inode's below it), checked
/// against HAMMER2's rules on the way: a power-of-two aligned range narrowing its parent's
/// range and inside it, its entries sorted with disjoint ranges. Each with the inode number
/// owning its table and whether it sits right below a directory inode's blockset.
fn indirect_blocks(dev: &SparseDev) -> Vec<(u64, Blockref, bool)> {
    let vol = Volume::open(dev).unwrap();
    let pfs = vol.pfs(b"DATA").unwrap();
    let mut out = Vec::new();
    let root = pfs.root.blockset().unwrap().to_vec();
    let mut todo = vec![(pfs.root.meta.inum, root, (0u64, 64u8), true)];
    while let Some((owner, table, (key, keybits), top_of_dir)) = todo.pop() {
        let live: Vec<_> = table
            .into_iter()
            .filter(|b| b.btype != BREF_TYPE_EMPTY)
            .collect();
        for w in live.windows(2) {
            assert!(w[0].key_end() < w[1].key, "{:?} then {:?}", w[0], w[1]);
        }
        for b in live {
            assert!(
                b.key >= key && b.key_end() <= key_end(key, keybits),
                "{b:?}"
            );
            match b.btype {
                BREF_TYPE_INDIRECT => {
                    assert!(b.keybits < keybits, "{b:?} in ({key:#x}, {keybits})");
                    assert_eq!(
                        b.key & crate::media::indkey::low_mask(b.keybits),
                        0,
                        "{b:?}"
                    );
                    out.push((owner, b, top_of_dir));
                    todo.push((
                        owner,
                        vol.read_table(&b).unwrap(),
                        (b.key, b.keybits),
                        false,
                    ));
                }
                BREF_TYPE_INODE => {
                    let ino = vol.read_inode_box(&b).unwrap();
                    if !ino.meta.is_directdata() {
                        let set = ino.blockset().unwrap().to_vec();
                        let dir = ino.meta.objtype == OBJTYPE_DIRECTORY;
                        todo.push((ino.meta.inum, set, (0, 64), dir));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Names that go into the directory entry table of the PFS root where `probe`'s does,
/// until that table is full, and then one more.
fn names_filling(dev: &SparseDev, probe: &str) -> (Vec<alloc::string::String>, (u64, u8)) {
    let vol = Volume::open(dev).unwrap();
    let pfs = vol.pfs(b"DATA").unwrap();
    let set = pfs.root.blockset().unwrap();
    let (range, len, cap) = landing(&vol, &set[..], dirhash(probe.as_bytes()));
    assert!(range.1 < 64 && len > cap / 3, "{range:?} {len}/{cap}");
    let names: Vec<_> = (0..)
        .map(|i| alloc::format!("{probe}{i}"))
        .filter(|n| landing(&vol, &set[..], dirhash(n.as_bytes())).0 == range)
        .take(cap - len + 1)
        .collect();
    (names, range)
}

/// One new file whose directory entry lands in a full indirect block of a PFS root holding
/// 10^4 inodes and 10^4 entries: the commit splits that block (one new 16 KiB block below
/// it, as `hammer2_chain_create_indirect` makes), reads and writes the blocks on its path
/// only, and the volume is clean and reloads to the store. Rebuilding the root's table
/// instead reads every one of its indirect blocks.
#[test]
fn an_insert_into_a_full_block_splits_it_and_costs_its_path() {
    let (dev, store, mut m, mut tid) = loaded_flat(10_000);
    let (names, full) = names_filling(&dev, "new");
    let (last, fill) = names.split_last().unwrap();
    // Filled to the brim, the space of the volume learned.
    for n in fill {
        tid += 1;
        let p = alloc::format!("/{n}");
        store.write(p.as_bytes(), &bytes(100, 1), tid).unwrap();
    }
    commit_dev(&dev, &store, &mut m);
    assert_eq!(m.io().rebuilt, 0, "{:?}", m.io());
    let vol = Volume::open(&dev).unwrap();
    let set = vol.pfs(b"DATA").unwrap().root.blockset().unwrap();
    let (range, len, cap) = landing(&vol, &set[..], dirhash(last.as_bytes()));
    assert_eq!((range, len), (full, cap), "the block is full");
    let before = indirect_blocks(&dev);
    // Levels of tables from the volume header to the full block: the super-root, the PFS
    // root, and the indirect blocks above it and itself.
    let depth = 2 + before
        .iter()
        .filter(|(o, b, _)| *o == 1 && b.key <= full.0 && key_end(full.0, full.1) <= b.key_end())
        .count() as u64;
    assert!(depth >= 4, "{depth}");

    tid += 1;
    store
        .write(alloc::format!("/{last}").as_bytes(), &bytes(100, 2), tid)
        .unwrap();
    commit_dev(&dev, &store, &mut m);
    let io = m.io();
    assert_eq!((io.splits, io.rebuilt), (1, 0), "{io:?}");
    // Reads: the header copies, and the blocks last committed on the two changed paths (the
    // entry's and the inode's); writes: those paths again, the new block, the file's inode
    // and data, a freemap leaf and the header. The root's table has over 200 indirect blocks.
    assert!(io.visited <= 2 * depth, "{io:?}, depth {depth}");
    assert!(
        io.commit.blocks_read <= 4 + 2 * depth,
        "{io:?}, depth {depth}"
    );
    assert!(
        io.commit.blocks_written <= 6 + 2 * depth,
        "{io:?}, depth {depth}"
    );
    assert!(before.len() > 200, "{} indirect blocks", before.len());
    clean(&dev);
    let (again, _) = load_dev(&dev);
    assert_eq!(
        compare::digest(&again).unwrap(),
        compare::digest(&store).unwrap()
    );
    // One new block, in the root's table, inside the full one (which stays), 16 KiB as any
    // block below an indirect block; `indirect_blocks` checked the rules of every range.
    let after = indirect_blocks(&dev);
    let ranges = |v: &[(u64, Blockref, bool)]| -> alloc::collections::BTreeSet<_> {
        v.iter().map(|(o, b, _)| (*o, b.key, b.keybits)).collect()
    };
    let (old, new) = (ranges(&before), ranges(&after));
    let made: Vec<_> = new.difference(&old).collect();
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(old.is_subset(&new));
    let &&(owner, key, keybits) = made.first().unwrap();
    assert_eq!(owner, 1);
    assert!(keybits < full.1 && key >= full.0 && key_end(key, keybits) <= key_end(full.0, full.1));
    let b = after
        .iter()
        .find(|(_, b, _)| (b.key, b.keybits) == (key, keybits))
        .unwrap()
        .1;
    assert_eq!(b.data_bytes(), 16 << 10, "{b:?}");
}

/// Rounds of inserts (and some removals) that land in full blocks again and again: in the
/// PFS root (2000 inodes and entries imported), in a directory grown from one entry (4 KiB
/// blocks right below its inode, 16 KiB below those) and in a file's table of data blocks
/// (`hammer2_chain_indkey_file`'s range). Every commit splits rather than rebuilds, reads
/// O(changes · depth) blocks, is clean, reloads to the store, and every block's range keeps
/// HAMMER2's rules. A table that held nothing is built whole.
#[test]
fn inserts_into_full_blocks_split_commit_after_commit() {
    use crate::scenario::prng::Stream;
    let (dev, store, mut m, mut tid) = loaded_flat(2000);
    store.mkdir(b"/grow", tid).unwrap();
    // Four 64 KiB blocks: the file's blockset is full.
    store.write(b"/grow/big", &bytes(4 << 16, 9), tid).unwrap();
    // A new directory of 40 entries: its table, empty before, is built whole.
    store.mkdir(b"/fresh", tid).unwrap();
    for i in 0..40 {
        let p = alloc::format!("/fresh/e{i}");
        store.write(p.as_bytes(), &bytes(50, 3), tid).unwrap();
    }
    churn_check(&dev, &store, &mut m, "mkdir");
    assert_eq!((m.io().built, m.io().rebuilt), (1, 0), "{:?}", m.io());
    let inum = |p: &[u8]| store.meta(store.resolve(p).unwrap()).unwrap().inum;
    let (big, grow) = (inum(b"/grow/big"), inum(b"/grow"));
    let mut rng = Stream::new(0x5b1e);
    let (mut splits, mut made) = (0, 0);
    for round in 0..8u64 {
        let mut changes = 0;
        for i in 0..60 {
            tid += 1;
            let r = rng.next_u64();
            let res = match (i, r % 8) {
                (0, _) => {
                    // 64 KiB blocks past the full blockset: the file rule's split.
                    let size = (5 + 2 * round as usize) << 16;
                    store.write(b"/grow/big", &bytes(size, round as u8), tid)
                }
                (_, 0) => store.rm(alloc::format!("/f{}", (r >> 8) % 2000).as_bytes(), tid),
                (_, 1..=3) => store.write(alloc::format!("/n{r:x}").as_bytes(), &bytes(50, 1), tid),
                _ => store.write(
                    alloc::format!("/grow/g{r:x}").as_bytes(),
                    &bytes(50, 2),
                    tid,
                ),
            };
            match res {
                Ok(()) => changes += 1,
                Err(Error::NotFound) => {}
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        let what = alloc::format!("round {round}");
        churn_check(&dev, &store, &mut m, &what);
        let io = m.io();
        assert_eq!((io.rebuilt, io.built), (0, 0), "{what}: {io:?}");
        splits += io.splits;
        // Each change: its entry's path and its inode's (or data block's), a few levels each.
        assert!(
            io.commit.blocks_read <= 8 + 8 * changes,
            "{what}: {changes} changes, {io:?}"
        );
        let blocks = indirect_blocks(&dev);
        made = blocks.len();
        // Every block of the directory came from a split: 4 KiB made right below its inode
        // (and moved down by later splits there as they are), 16 KiB made below those.
        for (_, b, top) in blocks.iter().filter(|(o, ..)| *o == grow) {
            let sizes: &[usize] = if *top {
                &[4 << 10]
            } else {
                &[4 << 10, 16 << 10]
            };
            assert!(sizes.contains(&b.data_bytes()), "{what}: {b:?}");
        }
        let grown = blocks.iter().filter(|(o, ..)| *o == grow);
        assert!(round < 2 || grown.clone().any(|(_, b, _)| b.data_bytes() == 16 << 10));
        assert!(grown.clone().any(|(_, _, top)| *top));
        // hammer2_chain_indkey_file: the file's blocks went into a 16 KiB block whose range
        // is 128 blocks from the lowest.
        if round == 0 {
            let file: Vec<_> = blocks.iter().filter(|(o, ..)| *o == big).collect();
            assert_eq!(file.len(), 1, "{file:?}");
            assert_eq!((file[0].1.key, file[0].1.keybits), (0, 16 + 7));
            assert_eq!(file[0].1.data_bytes(), 16 << 10);
        }
    }
    assert!(splits >= 16, "{splits} splits");
    assert!(made > 30, "{made} indirect blocks");
}
