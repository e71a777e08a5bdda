//! Load a PFS made by newfs + import, compare it with the reader's view, commit it unchanged
//! and after changes, reload.

use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::host::testhost;
use crate::media::*;
use crate::store::compare;
use crate::volume::testdev::{newfs_sparse, SparseDev};
use crate::volume::{fsck, DirEntries, FsckOptions, Import, NewPfs};

const SIZE: u64 = 1 << 30;

fn make() -> SparseDev {
    make_sized(SIZE)
}

/// A volume of `size` bytes with PFS `DATA`, a master.
fn make_sized(size: u64) -> SparseDev {
    newfs_sparse(size, &[master(b"DATA", 7)])
}

/// PFS `label`, the only master of cluster `[id; 16]`.
fn master(label: &[u8], id: u8) -> NewPfs<'_> {
    NewPfs {
        label,
        pfs_type: PFSTYPE_MASTER,
        clid: [id; 16],
        fsid: [id - 6; 16],
        nmasters: 1,
    }
}

/// A volume big enough for a second header copy (2 GiB + 4 MiB): a commit leaves the
/// current tree reachable from the copy it does not overwrite.
const SIZE_TWO_COPIES: u64 = 4 << 30;

fn meta(objtype: u8, inum: u64) -> InodeMeta {
    let mut m = InodeMeta::new(objtype, inum, 0o644);
    m.mtime = 1_600_000_000_123_456;
    m.nlinks = 1;
    m.check_algo = CHECK_XXHASH64;
    m
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// `/small` (DIRECTDATA), `/big` (three blocks, a hole in the middle), `/d/` holding a file
/// with a 100-byte name and a hardlink to `/small`.
fn import(dev: &SparseDev) {
    import_seeded(dev, 0)
}

/// [`import`] with file contents varied by `seed`.
fn import_seeded(dev: &SparseDev, seed: u8) {
    let vol = Volume::open(dev).unwrap();
    let mut imp = Import::begin(&vol, b"DATA").unwrap();
    let small = imp.new_inum().unwrap();
    let mut m = meta(OBJTYPE_REGFILE, small);
    m.size = 5;
    m.nlinks = 2;
    imp.file(m, Some(b"hello"), &[]).unwrap();
    let big = imp.new_inum().unwrap();
    let mut table = Vec::new();
    let data = bytes(3 * DATA_BLOCK_BYTES - 100, 1 ^ seed);
    for (k, chunk) in data.chunks(DATA_BLOCK_BYTES).enumerate() {
        let chunk = if k == 1 {
            &vec![0; DATA_BLOCK_BYTES][..]
        } else {
            chunk
        };
        imp.data(&mut table, (k * DATA_BLOCK_BYTES) as u64, chunk)
            .unwrap();
    }
    let mut m = meta(OBJTYPE_REGFILE, big);
    m.size = data.len() as u64;
    imp.file(m, None, &table).unwrap();
    let long = imp.new_inum().unwrap();
    let mut m = meta(OBJTYPE_REGFILE, long);
    m.size = 700;
    let mut t = Vec::new();
    imp.data(&mut t, 0, &bytes(700, 2 ^ seed)).unwrap();
    imp.file(m, None, &t).unwrap();
    let d = imp.new_inum().unwrap();
    let mut dir = DirEntries::new();
    imp.entry(&mut dir, &[b'n'; 100], long, OBJTYPE_REGFILE)
        .unwrap();
    imp.entry(&mut dir, b"again", small, OBJTYPE_REGFILE)
        .unwrap();
    imp.dir(meta(OBJTYPE_DIRECTORY, d), &dir).unwrap();
    let mut root = DirEntries::new();
    imp.entry(&mut root, b"small", small, OBJTYPE_REGFILE)
        .unwrap();
    imp.entry(&mut root, b"big", big, OBJTYPE_REGFILE).unwrap();
    imp.entry(&mut root, b"d", d, OBJTYPE_DIRECTORY).unwrap();
    imp.commit(&meta(OBJTYPE_DIRECTORY, 1), &root).unwrap();
}

fn clean(dev: &SparseDev) {
    let r = fsck(dev, FsckOptions::default()).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
}

/// Everything the reader sees of PFS DATA: per entry, in walk order, the path, inode meta
/// and contents (directories: none).
fn reader_view(dev: &SparseDev) -> Vec<(Vec<u8>, InodeMeta, Vec<u8>)> {
    let vol = Volume::open(dev).unwrap();
    let pfs = vol.pfs(b"DATA").unwrap();
    let mut out = vec![(Vec::new(), pfs.root.meta, Vec::new())];
    let mut todo = vec![(Vec::new(), pfs.root)];
    while let Some((path, dir)) = todo.pop() {
        let mut entries = Vec::new();
        pfs.readdir(&vol, &dir, &mut |e| {
            entries.push(e.clone());
            Ok(Flow::Continue)
        })
        .unwrap();
        for e in entries {
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&e.name);
            let ino = pfs.inode(&vol, e.inum).unwrap();
            let mut data = Vec::new();
            if ino.meta.objtype == OBJTYPE_DIRECTORY {
                todo.push((p.clone(), ino));
            } else {
                pfs.read_file(&vol, &ino, &mut |b| {
                    data.extend_from_slice(b);
                    Ok(())
                })
                .unwrap();
            }
            out.push((p, ino.meta, data));
        }
    }
    out
}

/// The same walk over a store, through its DIRENTs and index.
fn store_view(store: &Store) -> Vec<(Vec<u8>, InodeMeta, Vec<u8>)> {
    let mut out = vec![(Vec::new(), store.meta(store.root()).unwrap(), Vec::new())];
    let mut todo = vec![(Vec::new(), store.root())];
    while let Some((path, dir)) = todo.pop() {
        let mut next = store.lookup(dir, DIRHASH_VISIBLE, KEY_MAX).unwrap();
        let mut ids = Vec::new();
        while let Some((id, b)) = next {
            ids.push((id, b));
            next = store.next(dir, &b, KEY_MAX).unwrap();
        }
        for (id, b) in ids {
            let head = DirentHead::decode(&b).unwrap();
            let (_, body) = store.read(id).unwrap();
            let block = match &body {
                Body::Data(d) if !d.is_empty() => Some(&d[..]),
                _ => None,
            };
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(head.name(&b, block).unwrap());
            let ino = store.index_inode(head.inum).unwrap().unwrap();
            let m = store.meta(ino).unwrap();
            let data = if m.objtype == OBJTYPE_DIRECTORY {
                todo.push((p.clone(), ino));
                Vec::new()
            } else {
                store.read_file(ino).unwrap()
            };
            out.push((p, m, data));
        }
    }
    out
}

fn load_dev(dev: &SparseDev) -> (Store, Mounted) {
    let vol = Volume::open(dev).unwrap();
    load(testhost::host(), &vol, b"DATA").unwrap()
}

fn commit_dev(dev: &SparseDev, store: &Store, m: &mut Mounted) -> VolumeHeader {
    let vol = Volume::open(dev).unwrap();
    *commit(&vol, store, m).unwrap()
}

/// [`commit_dev`], checking first that the space the mount learned is exact (same places,
/// same freemap, neither leaking nor short): the same commit on a copy of `dev`, with the
/// space cache dropped so that every tree is read again, writes the same header.
fn commit_dev_as_full_walk(
    dev: &SparseDev,
    store: &Store,
    m: &mut Mounted,
    what: &str,
) -> VolumeHeader {
    let twin = dev.snapshot();
    let mut tm = copy_of(m);
    tm.space = None;
    let (th, _) = {
        let vol = Volume::open(&twin).unwrap();
        super::commit_tree(&vol, store, &mut tm, None, &mut |_| {}).unwrap()
    };
    let h = commit_dev(dev, store, m);
    // The same header but for where the freemap's blocks sit (a cached commit moves only the
    // leaves that changed, the full rebuild every one), and the same leaves.
    use crate::volume::space_tests::{leaves, without_freemap};
    assert!(
        without_freemap(&th) == without_freemap(&h),
        "{what}: the learned space is not a full walk's"
    );
    let entries = |d: &SparseDev| {
        leaves(&Volume::open(d).unwrap())
            .into_iter()
            .map(|(b, m)| (b.key, crate::media::freemap::FreemapCheck::of(&b).avail, m))
            .collect::<Vec<_>>()
    };
    assert!(
        entries(&twin) == entries(dev),
        "{what}: the freemap's leaves are not a full walk's"
    );
    h
}

#[test]
fn load_matches_the_reader_and_an_unchanged_commit_keeps_the_tree() {
    let dev = make();
    import(&dev);
    let before = reader_view(&dev);
    let (store, mut m) = load_dev(&dev);
    assert_eq!(store_view(&store), before);
    // Every chain as on media: the TIDs the import stamped.
    let root_tid = store.bref(store.root()).unwrap().modify_tid;
    assert_eq!(root_tid, m.pfs_bref.modify_tid);
    assert!(!m.changed(&store).unwrap());

    let h = commit_dev(&dev, &store, &mut m);
    clean(&dev);
    assert_eq!(reader_view(&dev), before);
    // The data blocks stayed where they were: only inodes, tables and the freemap moved.
    let vol = Volume::open(&dev).unwrap();
    assert_eq!(vol.header().mirror_tid, h.mirror_tid);
    let (again, _) = load_dev(&dev);
    assert_eq!(
        compare::digest(&again).unwrap(),
        compare::digest(&store).unwrap()
    );
    let big = again.index_inode(INODE_START + 1).unwrap().unwrap();
    let (_, first) = again.lookup(big, 0, 0).unwrap().unwrap();
    let (_, orig) = store.lookup(big, 0, 0).unwrap().unwrap();
    assert_eq!(first.data_off, orig.data_off, "a kept block moved");
}

#[test]
fn changes_round_trip_through_a_commit() {
    let dev = make();
    import(&dev);
    let (store, mut m) = load_dev(&dev);
    let tid = m.pfs_bref.modify_tid + 5;
    store.write(b"/new", &bytes(100_000, 3), tid).unwrap();
    store.rm(b"/big", tid + 1).unwrap();
    store.mkdir(b"/d/sub", tid + 2).unwrap();
    store.write(b"/d/sub/x", b"tiny", tid + 3).unwrap();
    assert!(m.changed(&store).unwrap());
    commit_dev(&dev, &store, &mut m);
    clean(&dev);
    assert!(!m.changed(&store).unwrap());
    assert_eq!(reader_view(&dev), store_view(&store));
    let (again, m2) = load_dev(&dev);
    assert_eq!(
        compare::digest(&again).unwrap(),
        compare::digest(&store).unwrap()
    );
    assert_eq!(again.bref(again.root()).unwrap().modify_tid, tid + 3);
    assert_eq!(m2.pfs_bref.modify_tid, tid + 3);
    let vol = Volume::open(&dev).unwrap();
    let pfs = vol.pfs(b"DATA").unwrap();
    assert!(pfs.root.meta.pfs_inum >= INODE_START + 5);
}

#[test]
fn chains_that_differ_under_equal_tids_are_marked_for_the_synchronizer() {
    let (a, b) = (make(), make());
    import_seeded(&a, 0);
    import_seeded(&b, 0);
    let (sa, _) = load_dev(&a);
    let (sb, _) = load_dev(&b);
    // Filled alike: same TIDs, same contents, nothing to mark.
    assert!(conflicts(&sb, &sa).unwrap().is_empty());
    assert_eq!(mark_foreign(&sb, &sa).unwrap(), 0);

    let c = make();
    import_seeded(&c, 9);
    let (sc, _) = load_dev(&c);
    assert_eq!(
        sc.bref(sc.root()).unwrap().modify_tid,
        sa.bref(sa.root()).unwrap().modify_tid
    );
    let big = INODE_START + 1;
    let small = INODE_START;
    // `/big` and the long-named file differ, under the TIDs `sa` has for them.
    let marked = mark_foreign(&sc, &sa).unwrap();
    assert!(marked >= 3, "{marked}");
    let tid = |s: &Store, inum: u64| {
        s.bref(s.index_inode(inum).unwrap().unwrap())
            .unwrap()
            .modify_tid
    };
    assert_eq!(sc.bref(sc.root()).unwrap().modify_tid, 0);
    assert_eq!(tid(&sc, big), 0);
    let id = sc.index_inode(big).unwrap().unwrap();
    let (_, first) = sc.lookup(id, 0, 0).unwrap().unwrap();
    assert_eq!(first.modify_tid, 0, "the differing data block");
    // The same small file on both keeps its TID: nothing there to synchronize.
    assert_eq!(tid(&sc, small), tid(&sa, small));
    assert!(conflicts(&sc, &sa).unwrap().is_empty());
}

#[test]
fn a_commit_cut_at_any_write_leaves_the_old_tree_or_the_new_one() {
    let dev = make();
    import(&dev);
    let old = reader_view(&dev);
    let (store, m) = load_dev(&dev);
    store
        .write(b"/new", &bytes(70_000, 4), m.pfs_bref.modify_tid + 1)
        .unwrap();
    store.rm(b"/small", m.pfs_bref.modify_tid + 2).unwrap();
    let (seen, _, cuts) = commit_cut_at_every_write(&dev, &store, &m, &old);
    assert_eq!(seen, store_view(&store));
    assert!(cuts > 3);
}

type View = Vec<(Vec<u8>, InodeMeta, Vec<u8>)>;

/// A copy of `m`, its space cache included.
fn copy_of(m: &Mounted) -> Mounted {
    Mounted {
        pfs_bref: m.pfs_bref,
        label: m.label.clone(),
        tree: m.tree.clone(),
        space: m.space.clone(),
        io: m.io,
    }
}

/// Commit `store` (as `m` describes the volume) onto copies of `dev` whose writes fail after
/// 0, 1, 2... of them, until one commit completes. Every failed one must leave the volume
/// fsck-clean showing `old`. The completed commit's view, its [`Mounted`] and the cuts.
fn commit_cut_at_every_write(
    dev: &SparseDev,
    store: &Store,
    m: &Mounted,
    old: &View,
) -> (View, Mounted, u64) {
    for k in 0.. {
        let mut cut = SparseDev::new(dev.size());
        *cut.chunks.get_mut() = dev.chunks.borrow().clone();
        cut.fail_write_after = Some(k);
        let mut mk = copy_of(m);
        let done = {
            let vol = Volume::open(&cut).unwrap();
            commit(&vol, store, &mut mk).is_ok()
        };
        cut.fail_write_after = None;
        clean(&cut);
        let seen = reader_view(&cut);
        if done {
            return (seen, mk, k);
        }
        assert_eq!(&seen, old, "cut after {k} writes");
    }
    unreachable!()
}

#[test]
fn a_damaged_block_fails_the_load_with_eio() {
    let dev = make();
    import(&dev);
    let (store, _) = load_dev(&dev);
    let big = store.index_inode(INODE_START + 1).unwrap().unwrap();
    let (_, b) = store.lookup(big, 0, 0).unwrap().unwrap();
    dev.flip((b.data_off & !0x3F) + 100);
    let vol = Volume::open(&dev).unwrap();
    assert_eq!(load(testhost::host(), &vol, b"DATA").err(), Some(Error::Io));
    assert_eq!(
        load(testhost::host(), &vol, b"NOPE").err(),
        Some(Error::NotFound)
    );
}

/// Sync node `idx` of `c` until it agrees with the focus (a few passes at most).
fn sync_until_in_sync(c: &crate::cluster::Cluster, idx: usize) {
    for _ in 0..8 {
        if c.in_sync(idx) {
            return;
        }
        c.sync_node(idx, &|| false).unwrap();
    }
    assert!(c.in_sync(idx), "node {idx} never caught up");
}

type PinnedCluster = core::pin::Pin<alloc::boxed::Box<crate::cluster::Cluster>>;

/// A cluster of the master PFS of `m_dev` (node 0) and the slave PFS of `s_dev` (node 1),
/// the slave synced and committed; the master's and the slave's [`Mounted`].
fn synced_cluster(m_dev: &SparseDev, s_dev: &SparseDev) -> (PinnedCluster, Mounted, Mounted) {
    let (ms, mm) = load_dev(m_dev);
    let (ss, mut sm) = load_dev(s_dev);
    let c = synced_stores(ms, ss);
    commit_dev(s_dev, c.store(1).unwrap(), &mut sm);
    (c, mm, sm)
}

/// A cluster of the master store `ms` (node 0) and the slave store `ss` (node 1), the slave
/// synced, not committed.
fn synced_stores(ms: Store, ss: Store) -> PinnedCluster {
    use crate::role::Role;
    let c = crate::cluster::Cluster::from_stores(
        testhost::host(),
        &[Role::Master, Role::Slave],
        vec![ms, ss],
        Layout::Index,
    )
    .unwrap();
    sync_until_in_sync(&c, 1);
    c
}

#[test]
fn a_cluster_on_volumes_survives_remount_and_crash() {
    use crate::cluster::FrontendOp;
    use crate::role::NodeSet;
    let (m_dev, s_dev) = (make(), make());
    import(&m_dev);
    let (c, mut mm, mut sm) = synced_cluster(&m_dev, &s_dev);
    let slave = c.store(1).unwrap();
    let synced = compare::digest(slave).unwrap();
    clean(&s_dev);
    // Below the PFS roots (whose pfs_type and fsid are each node's own) the trees agree.
    assert!(reader_view(&s_dev)[1..] == reader_view(&m_dev)[1..]);

    // Remount: what was committed comes back as it was.
    reload(&Volume::open(&s_dev).unwrap(), slave, &mut sm).unwrap();
    assert_eq!(compare::digest(slave).unwrap(), synced);
    assert!(c.in_sync(1));
    assert!(!sm.changed(slave).unwrap());

    // A change reaches the slave, which crashes before committing: it is back where it was,
    // behind, and catches up again.
    c.apply(
        NodeSet(1),
        FrontendOp::Write(b"/later", b"after the commit"),
    )
    .unwrap();
    sync_until_in_sync(&c, 1);
    assert_eq!(
        slave.read_file(slave.resolve(b"/later").unwrap()).unwrap(),
        b"after the commit"
    );
    reload(&Volume::open(&s_dev).unwrap(), slave, &mut sm).unwrap();
    assert_eq!(compare::digest(slave).unwrap(), synced);
    assert!(!c.in_sync(1));
    assert!(slave.resolve(b"/later").is_err());
    sync_until_in_sync(&c, 1);
    commit_dev(&s_dev, slave, &mut sm);
    commit_dev(&m_dev, c.store(0).unwrap(), &mut mm);
    clean(&s_dev);
    clean(&m_dev);
    assert!(reader_view(&s_dev)[1..] == reader_view(&m_dev)[1..]);
}

/// File `fN` (`n`) in `dir`: 600 bytes varied by `seed` in one 1 KiB data block.
fn import_file<D: crate::volume::BlockDev>(
    imp: &mut Import<'_, D>,
    dir: &mut DirEntries,
    n: usize,
    seed: u8,
) {
    let inum = imp.new_inum().unwrap();
    let mut m = meta(OBJTYPE_REGFILE, inum);
    m.size = 600;
    let mut t = Vec::new();
    imp.data(&mut t, 0, &bytes(600, seed)).unwrap();
    imp.file(m, None, &t).unwrap();
    let name = alloc::format!("f{n}");
    imp.entry(dir, name.as_bytes(), inum, OBJTYPE_REGFILE)
        .unwrap();
}

/// `dirs` directories `/dN` of `files` files `fM` each, every file one 1 KiB data block
/// (600 bytes varied by its number).
fn import_many(dev: &SparseDev, dirs: usize, files: usize) {
    let vol = Volume::open(dev).unwrap();
    let mut imp = Import::begin(&vol, b"DATA").unwrap();
    let mut root = DirEntries::new();
    for d in 0..dirs {
        let mut dir = DirEntries::new();
        for f in 0..files {
            import_file(&mut imp, &mut dir, f, (d * files + f) as u8);
        }
        let inum = imp.new_inum().unwrap();
        imp.dir(meta(OBJTYPE_DIRECTORY, inum), &dir).unwrap();
        let name = alloc::format!("d{d}");
        imp.entry(&mut root, name.as_bytes(), inum, OBJTYPE_DIRECTORY)
            .unwrap();
    }
    imp.commit(&meta(OBJTYPE_DIRECTORY, 1), &root).unwrap();
}

/// Table blocks (inodes and indirect blocks) of the volume's tree: what a full walk reads.
fn table_blocks(dev: &SparseDev) -> u64 {
    let vol = Volume::open(dev).unwrap();
    let mut n = 0;
    let set = vol.header().sroot_blockset;
    vol.walk_all(&set, &mut |b, _| {
        if matches!(b.btype, BREF_TYPE_INODE | BREF_TYPE_INDIRECT) {
            n += 1;
        }
        Ok(crate::volume::Flow::Continue)
    })
    .unwrap();
    n + 1
}

/// Levels of block tables from the PFS root down to a file's data block: the deepest
/// INDIRECT nesting of the root's index, then the file's inode, then its data block.
fn depth_to_data(dev: &SparseDev) -> u64 {
    let vol = Volume::open(dev).unwrap();
    let pfs = vol.pfs(b"DATA").unwrap();
    let mut deepest = 0;
    let mut todo = vec![(pfs.root.blockset().unwrap().to_vec(), 0u64)];
    while let Some((table, d)) = todo.pop() {
        deepest = deepest.max(d);
        for b in table.iter().filter(|b| b.btype == BREF_TYPE_INDIRECT) {
            todo.push((vol.read_table(b).unwrap(), d + 1));
        }
    }
    deepest + 2
}

/// A slave synced from a master of `dirs` × `files` files, committed once; the cluster.
fn synced_pair(dirs: usize, files: usize) -> (SparseDev, SparseDev, PinnedCluster, Mounted) {
    let (m_dev, s_dev) = (make_sized(SIZE_TWO_COPIES), make_sized(SIZE_TWO_COPIES));
    import_many(&m_dev, dirs, files);
    let (c, _, sm) = synced_cluster(&m_dev, &s_dev);
    (m_dev, s_dev, c, sm)
}

/// Change `k` files on the master (node 0) to contents of generation `gen` and sync the
/// slave in memory.
fn change_files(c: &crate::cluster::Cluster, dirs: usize, k: usize, gen: u8) {
    use crate::cluster::FrontendOp;
    use crate::role::NodeSet;
    for i in 0..k {
        let path = alloc::format!("/d{}/f{}", (i * 7) % dirs, i);
        c.apply(
            NodeSet(1),
            FrontendOp::Write(path.as_bytes(), &bytes(900, i as u8 ^ gen)),
        )
        .unwrap();
    }
    sync_until_in_sync(c, 1);
}

#[test]
fn a_small_sync_commits_only_what_changed_and_its_path() {
    let (dirs, files, k) = (100, 100, 10u64);
    let (m_dev, s_dev, c, mut sm) = synced_pair(dirs, files);
    let first = sm.io().commit;
    assert!(first.blocks_written > (dirs * files) as u64, "{first:?}");
    let depth = depth_to_data(&s_dev);
    assert!(depth >= 4, "the index has indirect blocks: {depth}");

    let tables = table_blocks(&s_dev);
    change_files(&c, dirs, k as usize, 1);
    let slave = c.store(1).unwrap();
    assert!(sm.changed(slave).unwrap());
    commit_dev(&s_dev, slave, &mut sm);
    let io = sm.io().commit;
    // Reads: the header copies, the super-root and the freemap, and the blocks last
    // committed on the changed paths (inodes and indirect blocks, read to be patched). The
    // space the trees of the header copies reach was learned by the first commit and is
    // not read again, nor is any table off those paths.
    let visited = sm.io().visited;
    assert!(
        visited <= 2 * k * depth,
        "{visited} places visited, depth {depth}"
    );
    assert!(
        io.blocks_read <= 12 + 2 * k * depth,
        "{io:?}, {tables} table blocks a walk would read"
    );
    // Each changed file: its data block, its inode and the index's indirect blocks above
    // it; then the PFS root, the super-root, a freemap leaf and the volume header. Twice
    // that covers it; a commit rewriting every inode writes over 10^4 blocks.
    assert!(io.blocks_written <= 2 * k * depth, "{io:?}, depth {depth}");
    assert!(io.blocks_written >= 2 * k, "{io:?}");
    assert!(
        io.bytes_written < first.bytes_written / 50,
        "{io:?} vs {first:?}"
    );
    clean(&s_dev);
    assert!(reader_view(&s_dev)[1..] == store_view(c.store(0).unwrap())[1..]);
    assert!(reader_view(&s_dev)[1..] != reader_view(&m_dev)[1..]);
    // Another pass with nothing changed writes the path above nothing: root and header.
    let (again, _) = load_dev(&s_dev);
    assert_eq!(
        compare::digest(&again).unwrap(),
        compare::digest(slave).unwrap()
    );
    commit_dev(&s_dev, slave, &mut sm);
    assert!(sm.io().commit.blocks_written <= 6, "{:?}", sm.io().commit);
    clean(&s_dev);

    // After a remount the committed structure is known again: the next small sync is as small.
    reload(&Volume::open(&s_dev).unwrap(), slave, &mut sm).unwrap();
    change_files(&c, dirs, k as usize, 2);
    commit_dev(&s_dev, slave, &mut sm);
    let io = sm.io().commit;
    assert!(io.blocks_written <= 2 * k * depth, "{io:?}, depth {depth}");
    clean(&s_dev);
    assert!(reader_view(&s_dev)[1..] == store_view(c.store(0).unwrap())[1..]);
}

#[test]
fn an_incremental_commit_cut_at_any_write_leaves_the_old_tree_or_the_new_one() {
    let (dirs, files) = (6, 100);
    let (_m_dev, s_dev, c, sm) = synced_pair(dirs, files);
    let old = reader_view(&s_dev);
    change_files(&c, dirs, 3, 1);
    let slave = c.store(1).unwrap();
    let (seen, mk, cuts) = commit_cut_at_every_write(&s_dev, slave, &sm, &old);
    assert_eq!(seen[1..], store_view(slave)[1..]);
    // A commit that writes every inode would take over 600 cuts to get here.
    assert!(mk.io().commit.blocks_written < 40, "{:?}", mk.io());
    assert!(cuts > 5);
}

/// Commit `/big` (or its first DATA block, if `data`) under check NONE, then `change` its
/// body in place, its header as it is (as the synchronizer installs a master's header whose
/// block was overwritten in place, or any same-size change), and commit again: the new
/// bytes must reach the media.
fn change_under_check_none_is_written(data: bool, change: impl FnOnce(&mut Body)) {
    let dev = make();
    import(&dev);
    let (store, mut m) = load_dev(&dev);
    let big = store.index_inode(INODE_START + 1).unwrap().unwrap();
    let id = if data {
        store.lookup(big, 0, 0).unwrap().unwrap().0
    } else {
        big
    };
    let modify = |f: &mut dyn FnMut(&mut Blockref, &mut Body)| {
        let g = store.lock(id, LockMode::Exclusive).unwrap();
        store
            .modify(&g, |b, body| {
                f(b, body);
                Ok(())
            })
            .unwrap();
    };
    // As `hammer2 setcheck none` makes new blocks.
    modify(&mut |b, _| b.methods = enc_methods(CHECK_NONE, COMP_NONE));
    commit_dev(&dev, &store, &mut m);
    clean(&dev);
    let mut change = Some(change);
    modify(&mut |_, body| change.take().unwrap()(body));
    assert!(m.changed(&store).unwrap());
    commit_dev(&dev, &store, &mut m);
    clean(&dev);
    assert_eq!(
        reader_view(&dev),
        store_view(&store),
        "the change was not written"
    );
}

/// A DATA block under check NONE whose bytes change in place is written: place and an
/// all-zero check area do not say the bytes on media are still these.
#[test]
fn a_changed_data_block_under_check_none_is_written() {
    change_under_check_none_is_written(true, |body| {
        let Body::Data(d) = body else { panic!() };
        for x in d.iter_mut() {
            *x ^= 0x5a;
        }
    });
}

/// The same for an inode whose blockref carries check NONE.
#[test]
fn a_changed_inode_under_check_none_is_written() {
    change_under_check_none_is_written(false, |body| {
        let Body::Inode(ip) = body else { panic!() };
        ip.meta.mode = 0o600;
        ip.meta.mtime += 1;
    });
}

/// A copy of `dev`'s contents.
fn clone_dev(dev: &SparseDev) -> SparseDev {
    let c = SparseDev::new(dev.size());
    *c.chunks.borrow_mut() = dev.chunks.borrow().clone();
    c
}

/// Many incremental commits of mixed changes on a volume with two header copies: after each,
/// the new tree is what the store holds and fsck-clean, and the copy left behind (what a cut
/// before the header would have given) still reads the previous tree.
#[test]
fn incremental_commits_leave_the_older_header_copy_whole() {
    use crate::volume::BlockDev;
    use alloc::format;
    let dev = make_sized(SIZE_TWO_COPIES);
    import_many(&dev, 4, 60);
    let (store, mut m) = load_dev(&dev);
    let mut tid = m.pfs_bref.modify_tid + 10;
    let mut rng = 0x1234_5678u64;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) as usize
    };
    let mut gone: Vec<Vec<u8>> = Vec::new();
    for round in 0..14 {
        for _ in 0..6 {
            tid += 1;
            let path = alloc::format!("/d{}/f{}", next() % 4, next() % 60).into_bytes();
            match next() % 5 {
                0 | 1 => {
                    // Same size, other bytes.
                    let seed = next() as u8;
                    let _ = store.write(&path, &bytes(600, seed), tid);
                }
                2 => {
                    let len = [10, 600, 5000, 70_000][next() % 4];
                    let _ = store.write(&path, &bytes(len, next() as u8), tid);
                }
                3 => {
                    if store.rm(&path, tid).is_ok() {
                        gone.push(path);
                    }
                }
                _ => {
                    // Recreate a removed file under its old name (same directory key).
                    if let Some(p) = gone.pop() {
                        let _ = store.write(&p, &bytes(600, round as u8), tid);
                    }
                }
            }
        }
        let prev = reader_view(&dev);
        commit_dev(&dev, &store, &mut m);
        clean(&dev);
        assert!(
            reader_view(&dev)[1..] == store_view(&store)[1..],
            "round {round}"
        );
        // The newest copy gone: the other must still be the previous commit, whole.
        let old = clone_dev(&dev);
        let zone = Volume::open(&dev).unwrap().zone();
        old.write_at(crate::media::volhdr::copy_offset(zone), &vec![0u8; 65536])
            .unwrap();
        assert_ne!(Volume::open(&old).unwrap().zone(), zone);
        let r = fsck(&old, FsckOptions::default()).unwrap();
        assert!(
            r.findings
                .iter()
                .all(|f| format!("{:?}", f.problem).starts_with("HeaderBad")),
            "round {round}: {:?}",
            r.findings
        );
        assert!(
            reader_view(&old)[1..] == prev[1..],
            "round {round}: older copy"
        );
        if round % 5 == 4 {
            reload(&Volume::open(&dev).unwrap(), &store, &mut m).unwrap();
        }
    }
}

/// Commits cut after k writes on the device itself, then the same store and [`Mounted`] go
/// on committing (the cut commit's blocks are free again and get reused).
#[test]
fn commits_after_cut_commits_reuse_their_space_safely() {
    let mut dev = make_sized(SIZE_TWO_COPIES);
    import_many(&dev, 4, 60);
    let (store, mut m) = load_dev(&dev);
    let mut tid = m.pfs_bref.modify_tid + 10;
    for round in 0..8u8 {
        for i in 0..5 {
            tid += 1;
            let path = alloc::format!("/d{}/f{}", (i + round as usize) % 4, i * 7 + round as usize);
            store
                .write(path.as_bytes(), &bytes(600, round ^ i as u8), tid)
                .unwrap();
        }
        for k in [1u64, 3, 6, 9, 12] {
            dev.fail_write_after = Some(dev.writes.get() + k);
            let r = {
                let vol = Volume::open(&dev).unwrap();
                commit(&vol, &store, &mut m)
            };
            dev.fail_write_after = None;
            if r.is_ok() {
                break;
            }
            clean(&dev);
        }
        // Something else changes before the real commit: the cut commit's blocks get reused.
        tid += 1;
        store.write(b"/d0/extra", &bytes(5000, round), tid).unwrap();
        commit_dev(&dev, &store, &mut m);
        clean(&dev);
        assert!(
            reader_view(&dev)[1..] == store_view(&store)[1..],
            "round {round}"
        );
        let (again, _) = load_dev(&dev);
        assert_eq!(
            compare::digest(&again).unwrap(),
            compare::digest(&store).unwrap()
        );
    }
}

/// A slave on a one-copy volume, synced and committed many times over (writes of the same
/// size, removals, re-creations under the old name, hardlinks, chmods), remounted now and
/// then; both nodes commit; after each round both volumes are clean and agree.
#[test]
fn synced_commits_on_one_copy_volumes_stay_clean_and_agree() {
    use crate::cluster::FrontendOp;
    use crate::role::NodeSet;
    let (m_dev, s_dev) = (make(), make());
    import_many(&m_dev, 3, 40);
    let (c, mut mm, mut sm) = synced_cluster(&m_dev, &s_dev);
    let mut rng = 0x9e37_79b9u64;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) as usize
    };
    let mut gone: Vec<alloc::string::String> = Vec::new();
    for round in 0..10u8 {
        for _ in 0..6 {
            let path = alloc::format!("/d{}/f{}", next() % 3, next() % 40);
            let op = next() % 6;
            let data = bytes(600, next() as u8);
            let _: core::result::Result<(), (usize, Error)> = match op {
                0 | 1 => c
                    .apply(NodeSet(1), FrontendOp::Write(path.as_bytes(), &data))
                    .map(|_| ()),
                2 => {
                    let r = c
                        .apply(NodeSet(1), FrontendOp::Rm(path.as_bytes()))
                        .map(|_| ());
                    if r.is_ok() {
                        gone.push(path.clone());
                    }
                    r
                }
                3 => match gone.pop() {
                    Some(p) => c
                        .apply(NodeSet(1), FrontendOp::Write(p.as_bytes(), &data))
                        .map(|_| ()),
                    None => Ok(()),
                },
                4 => c
                    .apply(NodeSet(1), FrontendOp::Chmod(path.as_bytes(), 0o600))
                    .map(|_| ()),
                _ => {
                    let to = alloc::format!("/d{}/l{}", next() % 3, round);
                    c.apply(NodeSet(1), FrontendOp::Link(path.as_bytes(), to.as_bytes()))
                        .map(|_| ())
                }
            };
        }
        sync_until_in_sync(&c, 1);
        commit_dev(&s_dev, c.store(1).unwrap(), &mut sm);
        commit_dev(&m_dev, c.store(0).unwrap(), &mut mm);
        clean(&s_dev);
        clean(&m_dev);
        assert!(
            reader_view(&s_dev)[1..] == reader_view(&m_dev)[1..],
            "round {round}"
        );
        assert!(reader_view(&s_dev)[1..] == store_view(c.store(1).unwrap())[1..]);
        if round % 3 == 2 {
            reload(&Volume::open(&s_dev).unwrap(), c.store(1).unwrap(), &mut sm).unwrap();
            assert!(c.in_sync(1), "round {round}");
        }
    }
}

/// A change of a chain's blockref only (its modify_tid; bytes unchanged) reaches the media,
/// through the parents of a kept block.
#[test]
fn a_tid_only_change_reaches_the_media() {
    let dev = make_sized(SIZE_TWO_COPIES);
    import_many(&dev, 4, 60);
    let (store, mut m) = load_dev(&dev);
    let f = store.resolve(b"/d2/f17").unwrap();
    let data = store.lookup(f, 0, KEY_MAX).unwrap().unwrap().0;
    for (id, tid) in [(f, 0x7777_0000u64), (data, 0x6666_0000)] {
        let g = store.lock(id, LockMode::Exclusive).unwrap();
        store.set_modify_tid(&g, tid).unwrap();
    }
    commit_dev(&dev, &store, &mut m);
    clean(&dev);
    let w = m.io().commit.blocks_written;
    let (again, _) = load_dev(&dev);
    let f2 = again.resolve(b"/d2/f17").unwrap();
    assert_eq!(again.bref(f2).unwrap().modify_tid, 0x7777_0000, "{w}");
    let d2 = again.lookup(f2, 0, KEY_MAX).unwrap().unwrap().1;
    assert_eq!(d2.modify_tid, 0x6666_0000);
    assert_eq!(
        compare::digest(&again).unwrap(),
        compare::digest(&store).unwrap()
    );
}

/// A device that counts its scheduling points.
struct Yields<'a> {
    dev: &'a SparseDev,
    count: core::cell::Cell<usize>,
}

impl crate::volume::BlockDev for Yields<'_> {
    fn size(&self) -> u64 {
        self.dev.size()
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.dev.read_at(off, buf)
    }
    fn write_at(&self, off: u64, buf: &[u8]) -> Result<()> {
        self.dev.write_at(off, buf)
    }
    fn flush(&self) -> Result<()> {
        self.dev.flush()
    }
    fn yield_point(&self) {
        self.count.set(self.count.get() + 1);
    }
}

/// A block table built again unchanged keeps every indirect block and writes nothing, yet
/// reaches a scheduling point as it goes (a kernel thread must not hold the CPU over a
/// table of 10^6 entries).
#[test]
fn an_unchanged_block_table_yields_while_it_is_built() {
    let sparse = make();
    let dev = Yields {
        dev: &sparse,
        count: core::cell::Cell::new(0),
    };
    let vol = Volume::open(&dev).unwrap();
    let mut txn = Txn::begin(&vol).unwrap();
    let items: Vec<Blockref> = (0..8192u64)
        .map(|i| {
            let mut b = Blockref::new(BREF_TYPE_DATA, i << 16, 16);
            b.data_off = ((64 << 20) + (i << 16)) | 16;
            b
        })
        .collect();
    let mut placed = Vec::new();
    txn.table_keeping(&items, &|_, _| None, Some(&mut placed))
        .unwrap();
    assert!(placed.len() >= 64);
    let find = |key, keybits| {
        placed
            .iter()
            .find(|b: &&Blockref| b.key == key && b.keybits == keybits)
            .copied()
    };
    let (written, before) = (txn.written, dev.count.get());
    let mut again = Vec::new();
    txn.table_keeping(&items, &find, Some(&mut again)).unwrap();
    assert_eq!(again, placed, "every indirect block kept");
    assert_eq!(txn.written, written, "nothing written");
    assert!(
        dev.count.get() - before >= items.len(),
        "{} scheduling points",
        dev.count.get() - before
    );
}

/// A commit that fails on a device write (before its header) leaves every change in the
/// journal: the next commit, on a device that works, writes them all.
#[test]
fn a_failed_commit_leaves_its_changes_to_the_next() {
    let dev = make_sized(SIZE_TWO_COPIES);
    import_many(&dev, 2, 20);
    let (store, mut m) = load_dev(&dev);
    let old = reader_view(&dev);
    let mut tid = m.pfs_bref.modify_tid + 10;
    for round in 0..3u8 {
        tid += 1;
        store.write(b"/d0/f3", &bytes(600, round), tid).unwrap();
        store.write(b"/d1/f7", &bytes(70_000, round), tid).unwrap();
        let _ = store.rm(b"/d1/f9", tid);
        let n = alloc::format!("/d0/new{round}");
        store.write(n.as_bytes(), &bytes(3000, round), tid).unwrap();
        let mut failing = dev.snapshot();
        failing.fail_write_after = Some(2 + u64::from(round));
        {
            let vol = Volume::open(&failing).unwrap();
            assert!(commit(&vol, &store, &mut m).is_err(), "round {round}");
        }
        assert!(m.changed(&store).unwrap(), "round {round}");
        if round == 0 {
            assert_eq!(reader_view(&dev), old);
        }
        commit_dev(&dev, &store, &mut m);
        clean(&dev);
        assert_eq!(reader_view(&dev), store_view(&store), "round {round}");
        assert!(!m.changed(&store).unwrap());
    }
}

#[test]
fn load_progress_is_reported_with_no_chain_locked() {
    let dev = make();
    // Two directories of 700 files: more than LOAD_PROGRESS_EVERY chains in each table.
    import_many(&dev, 2, 700);
    let vol = Volume::open(&dev).unwrap();
    let mut calls = Vec::new();
    let (store, _) = load_with_progress(testhost::host(), &vol, b"DATA", &mut |n| {
        calls.push((n, testhost::held_here()));
    })
    .unwrap();
    assert!(
        !calls.is_empty(),
        "no progress over {} chains",
        store.chain_count()
    );
    for (n, held) in calls {
        assert_eq!(
            held, 0,
            "progress at {n} chains called with {held} locks held"
        );
    }
}

/// A volume of 8 GiB: four header copies in rotation.
const SIZE_FOUR_COPIES: u64 = 8 << 30;

/// `dev` with every header copy but `zone` erased: the volume as that copy names it.
fn only_copy(dev: &SparseDev, zone: usize) -> SparseDev {
    let one = dev.snapshot();
    let zeros = vec![0u8; crate::media::volhdr::VOLUME_BYTES];
    for z in (0..crate::media::volhdr::NUM_VOLHDRS).filter(|&z| z != zone) {
        one.write_at(crate::media::volhdr::copy_offset(z), &zeros)
            .unwrap();
    }
    one
}

/// Commits that learn the space from the last one (reading no tree again) free what their
/// tree drops only once no header copy reaches it: after each of many commits with churn
/// (files written, rewritten and removed, so that freed space is reused at once), the
/// volume as each valid header copy names it is fsck-clean and holds the tree committed
/// under that copy's mirror_tid.
#[test]
fn space_learned_across_commits_keeps_every_header_copy_whole() {
    let dev = make_sized(SIZE_FOUR_COPIES);
    import_many(&dev, 3, 40);
    let (store, mut m) = load_dev(&dev);
    let mut tid = m.pfs_bref.modify_tid + 10;
    let mut views: Vec<(u64, View)> = Vec::new();
    for round in 0..12u8 {
        for i in 0..6u8 {
            tid += 1;
            let f = alloc::format!("/d{}/f{}", i % 3, (round as usize * 5 + i as usize) % 40);
            match (round + i) % 3 {
                0 => store
                    .write(f.as_bytes(), &bytes(900, round ^ i), tid)
                    .unwrap(),
                1 => store
                    .write(f.as_bytes(), &bytes(70_000, round), tid)
                    .unwrap(),
                _ => {
                    let _ = store.rm(f.as_bytes(), tid);
                }
            }
        }
        let new = alloc::format!("/n{round}");
        store
            .write(new.as_bytes(), &bytes(20_000, round), tid)
            .unwrap();
        if round >= 2 {
            let old = alloc::format!("/n{}", round - 2);
            store.rm(old.as_bytes(), tid).unwrap();
        }
        let h = commit_dev_as_full_walk(&dev, &store, &mut m, &alloc::format!("round {round}"));
        if round > 0 {
            // The header copies, the super-root, the freemap, and the blocks last
            // committed on the changed paths: no tree is read again.
            assert!(
                m.io().commit.blocks_read <= 12 + m.io().visited,
                "round {round}: {:?}",
                m.io()
            );
        }
        views.push((h.mirror_tid, store_view(&store)));
        clean(&dev);
        assert_eq!(reader_view(&dev), store_view(&store), "round {round}");
        let mut valid = 0;
        for zone in 0..crate::media::volhdr::NUM_VOLHDRS {
            let one = only_copy(&dev, zone);
            let Ok(vol) = Volume::open(&one) else {
                continue;
            };
            let tid = vol.header().mirror_tid;
            drop(vol);
            let Some((_, view)) = views.iter().find(|(t, _)| *t == tid) else {
                continue;
            };
            valid += 1;
            // Clean but for the copies erased here.
            let r = fsck(&one, FsckOptions::default()).unwrap();
            assert!(
                r.findings.iter().all(|f| matches!(
                    f.problem,
                    crate::volume::Problem::HeaderBad(MediaError::BadMagic)
                ) && f.at != crate::media::volhdr::copy_offset(zone)),
                "round {round}, copy {zone}: {:?}",
                r.findings
            );
            assert_eq!(&reader_view(&one), view, "round {round}, copy {zone}");
        }
        assert_eq!(valid, (round as usize + 1).min(4), "round {round}");
    }
}

/// A volume written by someone else between two commits (another PFS imported) makes the
/// next commit read every tree again: what the other writer placed is not overwritten.
#[test]
fn a_volume_written_by_another_between_commits_is_read_again() {
    let dev = newfs_sparse(SIZE_FOUR_COPIES, &[master(b"DATA", 7), master(b"OTHER", 8)]);
    import_many(&dev, 2, 20);
    let (store, mut m) = load_dev(&dev);
    let mut tid = m.pfs_bref.modify_tid + 10;
    let mut commit_one = |round: u8| {
        tid += 1;
        store.write(b"/d0/f1", &bytes(70_000, round), tid).unwrap();
        commit_dev(&dev, &store, &mut m);
        m.io().commit
    };
    commit_one(0);
    assert!(commit_one(1).blocks_read <= 12);
    // Another writer: a file imported into OTHER.
    let other = |dev: &SparseDev| {
        let vol = Volume::open(dev).unwrap();
        let pfs = vol.pfs(b"OTHER").unwrap();
        let ino = pfs.inode(&vol, INODE_START).unwrap();
        let mut data = Vec::new();
        pfs.read_file(&vol, &ino, &mut |b| {
            data.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        data
    };
    {
        let vol = Volume::open(&dev).unwrap();
        let mut imp = Import::begin(&vol, b"OTHER").unwrap();
        let inum = imp.new_inum().unwrap();
        let mut fm = meta(OBJTYPE_REGFILE, inum);
        fm.size = 3 * DATA_BLOCK_BYTES as u64;
        let mut t = Vec::new();
        for k in 0..3u64 {
            imp.data(
                &mut t,
                k * DATA_BLOCK_BYTES as u64,
                &bytes(DATA_BLOCK_BYTES, 40 + k as u8),
            )
            .unwrap();
        }
        imp.file(fm, None, &t).unwrap();
        let mut root = DirEntries::new();
        imp.entry(&mut root, b"o", inum, OBJTYPE_REGFILE).unwrap();
        imp.commit(&meta(OBJTYPE_DIRECTORY, 1), &root).unwrap();
    }
    let theirs = other(&dev);
    assert_eq!(theirs.len(), 3 * DATA_BLOCK_BYTES);
    let io = commit_one(2);
    assert!(io.blocks_read > 12, "the trees were not read again: {io:?}");
    for round in 3..8 {
        commit_one(round);
        clean(&dev);
        assert_eq!(other(&dev), theirs, "round {round}");
        assert_eq!(reader_view(&dev), store_view(&store), "round {round}");
    }
}

/// A change made while a commit runs (after it passed the chain) is not on the volume: the
/// store still counts as changed once the commit is done, and the next commit writes it.
#[test]
fn a_change_made_during_a_commit_is_committed_by_the_next() {
    let dev = make();
    import(&dev);
    let (store, mut m) = load_dev(&dev);
    let tid = m.pfs_bref.modify_tid + 1;
    store.write(b"/x", &bytes(900, 1), tid).unwrap();
    {
        let vol = Volume::open(&dev).unwrap();
        // The walk is done (its last progress report) but nothing is committed yet.
        let mut during = |_| store.write(b"/y", &bytes(900, 2), tid + 1).unwrap();
        commit_with_progress(&vol, &store, &mut m, &mut during).unwrap();
    }
    assert!(m.changed(&store).unwrap(), "/y is not on the volume yet");
    assert_ne!(reader_view(&dev), store_view(&store));
    // The commit's inode allocator (from before /y) must not hand /y's number out again.
    let y = store.meta(store.resolve(b"/y").unwrap()).unwrap().inum;
    assert!(store.meta(store.root()).unwrap().pfs_inum >= y);
    store.rm(b"/y", tid + 2).unwrap();
    store.write(b"/z", &bytes(900, 3), tid + 3).unwrap();
    assert_ne!(store.meta(store.resolve(b"/z").unwrap()).unwrap().inum, y);
    commit_dev(&dev, &store, &mut m);
    assert!(!m.changed(&store).unwrap());
    assert_eq!(reader_view(&dev), store_view(&store));
}

/// Every INDIRECT block of the PFS's tree carries a modify_tid at least its entries'.
fn tids_cover_children(dev: &SparseDev, m: &Mounted) {
    let vol = Volume::open(dev).unwrap();
    let set = vol.read_inode_box(&m.pfs_bref).unwrap().blockset().unwrap();
    let mut seen = 0;
    vol.walk_all(&set[..], &mut |b, _| {
        if b.btype == BREF_TYPE_INDIRECT {
            seen += 1;
            for e in vol
                .read_table(b)?
                .iter()
                .filter(|e| e.btype != BREF_TYPE_EMPTY)
            {
                assert!(b.modify_tid >= e.modify_tid, "{b:?} over {e:?}");
            }
        }
        Ok(crate::volume::scan::Flow::Continue)
    })
    .unwrap();
    assert!(seen > 0, "no indirect block");
}

/// After a commit of random changes: the space it learned is a full walk's
/// ([`commit_dev_as_full_walk`]), the volume is clean, nothing is left to commit, a fresh
/// load holds what the store holds, and the inode allocator is past every inode.
fn churn_check(dev: &SparseDev, store: &Store, m: &mut Mounted, what: &str) {
    commit_dev_as_full_walk(dev, store, m, what);
    clean(dev);
    assert!(!m.changed(store).unwrap(), "{what}: left to commit");
    let (again, _) = load_dev(dev);
    let digest = compare::digest(store).unwrap();
    assert_eq!(compare::digest(&again).unwrap(), digest, "{what}: reload");
    tids_cover_children(dev, m);
    let top = store_view(store).iter().map(|e| e.1.inum).max().unwrap();
    let pfs_inum = store.meta(store.root()).unwrap().pfs_inum;
    assert!(
        pfs_inum >= top,
        "{what}: pfs_inum {pfs_inum:#x} < inum {top:#x}"
    );
}

/// Rounds of random changes over a directory big enough for indirect blocks, which fill and
/// empty, and a few others: after each commit see [`churn_check`].
#[test]
fn random_churn_commits_reload_to_the_same_store() {
    use crate::scenario::prng::Stream;
    let dev = make_sized(SIZE_TWO_COPIES);
    import_many(&dev, 2, 20);
    let (store, mut m) = load_dev(&dev);
    let mut tid = m.pfs_bref.modify_tid + 10;
    store.mkdir(b"/big", tid).unwrap();
    for i in 0..400 {
        let p = alloc::format!("/big/f{i}");
        store
            .write(p.as_bytes(), &bytes(100, i as u8), tid)
            .unwrap();
    }
    churn_check(&dev, &store, &mut m, "filled");
    let mut rng = Stream::new(0x5eed);
    // Inline data, one block, indirect blocks of data.
    const SIZES: [usize; 4] = [50, 900, 70_000, 600_000];
    let mut done = 0;
    for round in 0..10 {
        // Rounds empty the big directory's blocks, then fill them again.
        let emptying = round % 4 < 2;
        // Sweeps empty whole indirect blocks: most of the directory, then all of it.
        if round == 3 || round == 6 {
            for k in (0..500).filter(|k| round == 6 || k % 5 != 0) {
                let f = alloc::format!("/big/f{k}");
                match store.rm(f.as_bytes(), tid) {
                    Ok(()) | Err(Error::NotFound) => {}
                    Err(e) => panic!("sweep: {e:?}"),
                }
            }
        }
        for _ in 0..150 {
            tid += 1;
            let r = rng.next_u64();
            let k = (r >> 8) % 500;
            let f = alloc::format!("/big/f{k}");
            let sub = alloc::format!("/big/s{}", k % 8);
            let res = match (r % 16, emptying) {
                (0..=13, true) | (0..=1, false) => store.rm(f.as_bytes(), tid),
                (0..=6, _) => {
                    // The large sizes are rarer: a 600 KB write is slow in a debug build.
                    let size =
                        SIZES[usize::from((r >> 20) % 8 == 0) * 2 + ((r >> 24) % 2) as usize];
                    store.write(f.as_bytes(), &bytes(size, r as u8), tid)
                }
                (7..=8, _) => {
                    let d = alloc::format!("/d{}/f{}", k % 2, k % 20);
                    store.write(d.as_bytes(), &bytes(SIZES[(k % 2) as usize], r as u8), tid)
                }
                (9, _) => store.mkdir(sub.as_bytes(), tid),
                (10, _) => {
                    let x = alloc::format!("{sub}/x{}", k % 5);
                    store.write(x.as_bytes(), &bytes(900, r as u8), tid)
                }
                (11, _) => store.rm(sub.as_bytes(), tid),
                (12..=13, _) => store.chmod(f.as_bytes(), 0o600 | (r >> 32) as u32 & 0o77, tid),
                _ => {
                    let l = alloc::format!("/d0/l{k}");
                    store.link(f.as_bytes(), l.as_bytes(), tid)
                }
            };
            match res {
                Ok(()) => done += 1,
                Err(Error::NotFound | Error::Exists) => {}
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        churn_check(&dev, &store, &mut m, &alloc::format!("round {round}"));
    }
    assert!(done > 600, "only {done} changes made");
}

#[test]
fn an_untracked_store_is_not_committed() {
    let dev = make();
    import(&dev);
    let (store, mut m) = load_dev(&dev);
    store.untrack();
    let tid = m.pfs_bref.modify_tid + 1;
    store.write(b"/x", &bytes(900, 1), tid).unwrap();
    let before = reader_view(&dev);
    let vol = Volume::open(&dev).unwrap();
    assert_eq!(commit(&vol, &store, &mut m).err(), Some(Error::Invalid));
    drop(vol);
    assert_eq!(reader_view(&dev), before, "nothing written");
    // A store settled again (a reload) commits as usual.
    let vol = Volume::open(&dev).unwrap();
    reload(&vol, &store, &mut m).unwrap();
    drop(vol);
    store.write(b"/x", &bytes(900, 1), tid).unwrap();
    commit_dev(&dev, &store, &mut m);
    assert_eq!(reader_view(&dev), store_view(&store));
}

/// A thread writes and removes files without pause while commits run. A commit that finds
/// a chain it meant to write gone fails (`NotFound`) and leaves the volume at its last
/// commit; none waits for the writer to stop (a journal copy that keeps missing a growing
/// journal would spin here), and once the writer stops a commit writes everything: nothing
/// a change made meanwhile is lost.
#[test]
fn commits_racing_changes_lose_none() {
    use core::sync::atomic::{AtomicBool, Ordering};
    let dev = make_sized(SIZE_TWO_COPIES);
    import_many(&dev, 3, 40);
    let (store, mut m) = load_dev(&dev);
    let tid0 = m.pfs_bref.modify_tid + 10;
    let stop = AtomicBool::new(false);
    let last_tid = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut rng = crate::scenario::prng::Stream::new(0x1234);
            let mut tid = tid0;
            while !stop.load(Ordering::SeqCst) {
                let r = rng.next_u64() as usize;
                tid += 1;
                let p = alloc::format!("/d{}/g{}", r % 3, (r >> 4) % 200);
                let _ = match (r >> 12) % 4 {
                    0 => store.rm(p.as_bytes(), tid),
                    1 => store.write(p.as_bytes(), &bytes(70_000, r as u8), tid),
                    _ => store.write(p.as_bytes(), &bytes(600 + r % 400, r as u8), tid),
                };
                std::thread::yield_now();
            }
            tid
        });
        let mut failed = Vec::new();
        for round in 0..12 {
            let vol = Volume::open(&dev).unwrap();
            match commit(&vol, &store, &mut m) {
                Ok(_) | Err(Error::NotFound) => {}
                Err(e) => failed.push((round, e)),
            }
            clean(&dev);
        }
        stop.store(true, Ordering::SeqCst);
        let tid = writer.join().unwrap();
        assert_eq!(
            failed,
            Vec::new(),
            "commits failed otherwise (round, error)"
        );
        tid
    });
    assert!(last_tid > tid0, "the writer made no change");
    commit_dev(&dev, &store, &mut m);
    clean(&dev);
    assert!(!m.changed(&store).unwrap());
    assert_eq!(reader_view(&dev), store_view(&store));
    let (again, _) = load_dev(&dev);
    assert_eq!(
        compare::digest(&again).unwrap(),
        compare::digest(&store).unwrap()
    );
}

mod ahead;
mod cache;
mod carried;
mod evict;
mod foreign;
mod split;
