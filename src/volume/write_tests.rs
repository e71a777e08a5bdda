//! Tests of the write side: newfs, commits, the allocator over the freemap, ENOSPC, header
//! rotation, and what a failed commit leaves.

use alloc::vec;
use alloc::vec::Vec;

use super::testdev::{each_crash, newfs_sparse, LogDev, SparseDev};
use super::*;
use crate::media::*;

const MIB: u64 = 1 << 20;

fn pfs_list() -> [NewPfs<'static>; 2] {
    [
        NewPfs {
            label: b"node-a",
            pfs_type: PFSTYPE_MASTER,
            clid: [7; 16],
            fsid: [1; 16],
            nmasters: 2,
        },
        NewPfs {
            label: b"DATA",
            pfs_type: PFSTYPE_SLAVE,
            clid: [8; 16],
            fsid: [2; 16],
            nmasters: 0,
        },
    ]
}

fn make(size: u64) -> SparseDev {
    newfs_sparse(size, &pfs_list())
}

fn clean(dev: &SparseDev) -> fsck::FsckReport {
    let r = fsck(dev, FsckOptions::default()).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
    r
}

fn meta(objtype: u8, inum: u64) -> InodeMeta {
    let mut m = InodeMeta::new(objtype, inum, 0o644);
    m.mtime = 1_600_000_000_123_456;
    m.nlinks = 1;
    m.comp_algo = COMP_LZ4;
    m.check_algo = CHECK_XXHASH64;
    m
}

/// Import one regular file `/f` of `len` bytes (byte i = i % 253) into DATA.
fn import_file(dev: &SparseDev, len: usize) -> crate::Result<VolumeHeader> {
    import_file_on(&Volume::open(dev).unwrap(), b"DATA", len)
}

/// Import one regular file `/f` of `len` bytes (byte i = i % 253) into PFS `label` of `vol`.
fn import_file_on<D: BlockDev>(
    vol: &Volume<D>,
    label: &[u8],
    len: usize,
) -> crate::Result<VolumeHeader> {
    let mut imp = Import::begin(vol, label)?;
    let inum = imp.new_inum().unwrap();
    let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let mut table = Vec::new();
    for (k, chunk) in bytes.chunks(DATA_BLOCK_BYTES).enumerate() {
        imp.data(&mut table, (k * DATA_BLOCK_BYTES) as u64, chunk)?;
    }
    let mut m = meta(OBJTYPE_REGFILE, inum);
    m.size = len as u64;
    imp.file(m, None, &table)?;
    let mut root = DirEntries::new();
    imp.entry(&mut root, b"f", inum, OBJTYPE_REGFILE)?;
    imp.commit(&meta(OBJTYPE_DIRECTORY, 1), &root)
}

/// The blockref of PFS `label`'s root inode in the super-root of the header in use.
fn pfs_root_bref(dev: &SparseDev, label: &[u8]) -> Blockref {
    let v = Volume::open(dev).unwrap();
    let set = v.super_root().unwrap().blockset().unwrap();
    let mut found = None;
    v.scan(&set, 0, KEY_MAX, &mut |b| {
        if v.read_inode(b)?.filename() == label {
            found = Some(*b);
        }
        Ok(Flow::Continue)
    })
    .unwrap();
    found.unwrap()
}

fn read_all(dev: &SparseDev, label: &[u8], path: &[u8]) -> Vec<u8> {
    let vol = Volume::open(dev).unwrap();
    let pfs = vol.pfs(label).unwrap();
    let ino = pfs.resolve(&vol, path).unwrap();
    let mut out = Vec::new();
    pfs.read_file(&vol, &ino, &mut |b| {
        out.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn newfs_volume_is_clean_and_lists_its_pfses() {
    let dev = make(64 * MIB);
    let r = clean(&dev);
    assert_eq!(r.inodes, 3);
    let vol = Volume::open(&dev).unwrap();
    let h = vol.header();
    assert_eq!((h.version, h.mirror_tid, h.freemap_tid), (2, 16, 16));
    assert_eq!(h.boot_beg, 4 * MIB);
    assert_eq!(h.aux_end, 20 * MIB);
    assert_eq!(h.allocator_beg, 20 * MIB + 3 * 1024);
    assert_eq!(h.allocator_size, 64 * MIB - 4 * MIB - 16 * MIB);
    let mut seen = Vec::new();
    vol.pfs_roots(&mut |ino| {
        let m = &ino.meta;
        seen.push((
            ino.filename().to_vec(),
            m.pfs_type,
            m.pfs_clid,
            m.pfs_nmasters,
        ));
        assert_eq!(m.name_key, dirhash(ino.filename()));
        assert!(m.is_pfsroot());
        Ok(Flow::Continue)
    })
    .unwrap();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (b"DATA".to_vec(), PFSTYPE_SLAVE, [8; 16], 0),
            (b"node-a".to_vec(), PFSTYPE_MASTER, [7; 16], 2),
        ]
    );
    assert_eq!(vol.super_root().unwrap().meta.pfs_type, PFSTYPE_SUPROOT);

    // Damage is found: the super-root inode, then the only header copy.
    let sroot_at = h.sroot().data_off & !0x3F;
    dev.flip(sroot_at + 0x60);
    let r = fsck(&dev, FsckOptions::default()).unwrap();
    assert!(!r.is_clean());
    dev.flip(sroot_at + 0x60);
    dev.flip(0x30);
    let r = fsck(&dev, FsckOptions::default()).unwrap();
    assert_eq!(r.zone, None);
}

#[test]
fn newfs_refuses_bad_requests() {
    let dev = SparseDev::new(64 * MIB);
    let pfs = pfs_list();
    let mut o = NewfsOptions {
        size: 16 * MIB,
        fsid: [0; 16],
        sroot_ids: ([0; 16], [0; 16]),
        pfs: &pfs,
        now_us: 0,
    };
    assert_eq!(newfs(&dev, &o), Err(Error::NoSpace));
    o.size = 128 * MIB;
    assert_eq!(newfs(&dev, &o), Err(Error::TooBig));
    o.size = 64 * MIB;
    let twice = [pfs[0].clone(), pfs[0].clone()];
    o.pfs = &twice;
    assert_eq!(newfs(&dev, &o), Err(Error::Invalid));
    o.pfs = &[];
    assert_eq!(newfs(&dev, &o), Err(Error::Invalid));
    assert_eq!(dev.writes.get(), 0);
}

#[test]
fn import_writes_a_tree_the_reader_and_fsck_accept() {
    let dev = make(64 * MIB);
    let vol = Volume::open(&dev).unwrap();
    let mut imp = Import::begin(&vol, b"DATA").unwrap();
    let mut root = DirEntries::new();
    // A small file in the inode, a 10-block file (an indirect block), a file with a hole.
    let small = imp.new_inum().unwrap();
    let mut m = meta(OBJTYPE_REGFILE, small);
    m.nlinks = 2;
    imp.file(m, Some(b"hello"), &[]).unwrap();
    imp.entry(&mut root, b"small", small, OBJTYPE_REGFILE)
        .unwrap();
    let big = imp.new_inum().unwrap();
    let bytes: Vec<u8> = (0..10 * DATA_BLOCK_BYTES + 7)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut table = Vec::new();
    for (k, c) in bytes.chunks(DATA_BLOCK_BYTES).enumerate() {
        let c: Vec<u8> = if k == 3 { vec![0; c.len()] } else { c.to_vec() };
        imp.data(&mut table, (k * DATA_BLOCK_BYTES) as u64, &c)
            .unwrap();
    }
    assert_eq!(table.len(), 10);
    let mut m = meta(OBJTYPE_REGFILE, big);
    m.size = bytes.len() as u64;
    imp.file(m, None, &table).unwrap();
    imp.entry(&mut root, b"big", big, OBJTYPE_REGFILE).unwrap();
    // A directory of 300 entries (indirect blocks), one with a 100-byte name, one a
    // hardlink to `small`.
    let dir = imp.new_inum().unwrap();
    let mut d = DirEntries::new();
    for i in 0..300u32 {
        let inum = imp.new_inum().unwrap();
        let name = alloc::format!("file-{i}");
        imp.file(meta(OBJTYPE_REGFILE, inum), Some(name.as_bytes()), &[])
            .unwrap();
        imp.entry(&mut d, name.as_bytes(), inum, OBJTYPE_REGFILE)
            .unwrap();
    }
    imp.entry(&mut d, &[b'L'; 100], small, OBJTYPE_REGFILE)
        .unwrap();
    imp.dir(meta(OBJTYPE_DIRECTORY, dir), &d).unwrap();
    imp.entry(&mut root, b"sub", dir, OBJTYPE_DIRECTORY)
        .unwrap();
    let h = imp.commit(&meta(OBJTYPE_DIRECTORY, 1), &root).unwrap();
    assert_eq!((h.mirror_tid, h.freemap_tid), (17, 17));
    drop(vol);

    let r = clean(&dev);
    assert!(r.freemap_leaves == 1 && r.indirect > 2, "{r:?}");
    assert_eq!(r.unreachable_granules, 0);
    let mut want = bytes.clone();
    want[3 * DATA_BLOCK_BYTES..4 * DATA_BLOCK_BYTES].fill(0);
    assert_eq!(read_all(&dev, b"DATA", b"/big"), want);
    assert_eq!(read_all(&dev, b"DATA", b"/small"), b"hello");
    assert_eq!(read_all(&dev, b"DATA", b"/sub/file-299"), b"file-299");
    let long = [b'L'; 100];
    let mut p = b"/sub/".to_vec();
    p.extend_from_slice(&long);
    assert_eq!(read_all(&dev, b"DATA", &p), b"hello");
    let vol = Volume::open(&dev).unwrap();
    vol.verify_all().unwrap();
    let pfs = vol.pfs(b"DATA").unwrap();
    assert_eq!(pfs.root.meta.pfs_inum, dir + 300);
    let mut n = 0;
    pfs.readdir(&vol, &pfs.resolve(&vol, b"/sub").unwrap(), &mut |_| {
        n += 1;
        Ok(Flow::Continue)
    })
    .unwrap();
    assert_eq!(n, 301);
    // The other PFS is untouched.
    assert!(vol.pfs(b"node-a").is_ok());
    // The allocator_free accounting matches the freemap.
    let h = vol.header();
    assert!(h.allocator_free < h.allocator_size);
}

#[test]
fn full_volume_is_a_clean_enospc_and_freed_space_is_reused() {
    // 64 MiB: 40 MiB allocatable.
    let dev = make(64 * MIB);
    import_file(&dev, 25 << 20).unwrap();
    let before: Vec<u8> = {
        let mut b = vec![0; 65536];
        dev.read_at(0, &mut b).unwrap();
        b
    };
    // The old 25 MiB stay referenced until the commit: another 25 MiB do not fit.
    assert_eq!(import_file(&dev, 25 << 20).unwrap_err(), Error::NoSpace);
    let mut after = vec![0; 65536];
    dev.read_at(0, &mut after).unwrap();
    assert_eq!(before, after);
    clean(&dev);
    assert_eq!(read_all(&dev, b"DATA", b"/f").len(), 25 << 20);
    // A smaller tree replaces it; then the 25 MiB fit again in the space freed.
    import_file(&dev, 10 << 20).unwrap();
    clean(&dev);
    let h = import_file(&dev, 25 << 20).unwrap();
    let r = clean(&dev);
    assert_eq!(r.unreachable_granules, 0);
    assert_eq!(
        h.allocator_size - h.allocator_free,
        (25 << 20) + 5 * 16384,
        "the data, four indirect blocks of 128 data blocks, one granule of 1 KiB inodes"
    );
}

#[test]
fn commits_rotate_header_copies_and_keep_the_previous_tree() {
    let size = (2 << 30) + 64 * MIB;
    let dev = make(size);
    import_file(&dev, 100_000).unwrap();
    let vol = Volume::open(&dev).unwrap();
    assert_eq!((vol.zone(), vol.header().mirror_tid), (1, 17));
    drop(vol);
    import_file(&dev, 200_000).unwrap();
    let vol = Volume::open(&dev).unwrap();
    assert_eq!((vol.zone(), vol.header().mirror_tid), (0, 18));
    drop(vol);
    let r = clean(&dev);
    assert!(r.is_stale(1));
    // The tree of the older copy (zone 1) is intact: nothing it references was reused.
    let mut copies = read_copies(&&dev).unwrap();
    copies[0] = HeaderCopy::Absent;
    let old = Volume::from_copies(&dev, copies).unwrap();
    assert_eq!(old.header().mirror_tid, 17);
    old.verify_all().unwrap();
    let pfs = old.pfs(b"DATA").unwrap();
    let ino = pfs.resolve(&old, b"/f").unwrap();
    assert_eq!(ino.meta.size, 100_000);
    // Its freemap moved to the next rotation slot.
    let mut leaf = 0;
    Volume::open(&dev)
        .unwrap()
        .walk_freemap(&mut |v| {
            if let super::freemap::FreemapVisit::Leaf(b, _) = v {
                leaf = b.data_off & !0x3F;
            }
            Ok(Flow::Continue)
        })
        .unwrap();
    assert_eq!(leaf, 6 * 65536);
}

#[test]
fn a_failed_write_leaves_the_committed_volume() {
    let dev = make(64 * MIB);
    import_file(&dev, 300_000).unwrap();
    let base = dev.writes.get();
    // Fail at every write of the next commit in turn: the volume always opens at the
    // first commit, fsck-clean, until the header write succeeds.
    let mut k = 0;
    loop {
        let mut d = SparseDev::new(dev.size);
        *d.chunks.borrow_mut() = dev.chunks.borrow().clone();
        d.fail_write_after = Some(base + k);
        d.writes.set(base);
        match import_file(&d, 50_000) {
            Ok(_) => {
                assert_eq!(Volume::open(&d).unwrap().header().mirror_tid, 18);
                break;
            }
            Err(e) => {
                assert_eq!(e, Error::Io);
                assert_eq!(Volume::open(&d).unwrap().header().mirror_tid, 17);
                assert_eq!(read_all(&d, b"DATA", b"/f").len(), 300_000);
                clean(&d);
            }
        }
        k += 1;
        assert!(k < 100);
    }
}

#[test]
fn more_than_four_leaves_hang_under_a_level_two_node() {
    let dev = make(6 << 30);
    let vol = Volume::open(&dev).unwrap();
    let mut txn = Txn::begin(&vol).unwrap();
    // Space marked in five GiBs (as if blocks lay there): five leaves, one node above.
    for k in 0..5u64 {
        txn.keep.mark((k << 30) + 400 * MIB, 1).unwrap();
    }
    let sroot = *vol.header().sroot();
    let h = txn.commit(sroot).unwrap();
    drop(vol);
    let (mut nodes, mut leaves) = (Vec::new(), Vec::new());
    let vol = Volume::open(&dev).unwrap();
    assert_eq!(vol.header().mirror_tid, h.mirror_tid);
    vol.walk_freemap(&mut |v| {
        match v {
            super::freemap::FreemapVisit::Node(b) => nodes.push((b.key, b.keybits)),
            super::freemap::FreemapVisit::Leaf(b, _) => leaves.push(b.key),
            super::freemap::FreemapVisit::Fault(e, _) => panic!("{e}"),
        }
        Ok(Flow::Continue)
    })
    .unwrap();
    assert_eq!(nodes, vec![(0, 38)]);
    assert_eq!(leaves, (0..5u64).map(|k| k << 30).collect::<Vec<_>>());
    let r = clean(&dev);
    assert_eq!(r.unreachable_granules, 5);
    assert_eq!(h.allocator_size - h.allocator_free, 5 * 16384);
}

#[test]
fn block_tables_of_any_key_pattern_read_back_in_order() {
    let dev = make(64 * MIB);
    let vol = Volume::open(&dev).unwrap();
    let mut txn = Txn::begin(&vol).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let patterns: Vec<Vec<u64>> = vec![
        (1024..1024 + 1000).collect(),
        (0..700).map(|_| rnd() | 1 << 63).collect(),
        (0..63).map(|b| 1u64 << b).chain(5000..5300).collect(),
        (0..300)
            .map(|i| i * 3)
            .chain((0..300).map(|_| rnd()))
            .collect(),
        (0..5).collect(),
    ];
    for mut keys in patterns {
        keys.sort_unstable();
        keys.dedup();
        let items: Vec<Blockref> = keys
            .iter()
            .map(|&k| txn.dirent(k, 1024, OBJTYPE_REGFILE, b"n").unwrap())
            .collect();
        let set = txn.table(&items).unwrap();
        let mut back = Vec::new();
        vol.scan(&set, 0, KEY_MAX, &mut |b| {
            back.push(b.key);
            Ok(Flow::Continue)
        })
        .unwrap();
        assert_eq!(back, keys);
    }
    // Overlapping or unsorted entries are refused.
    let a = txn.dirent(7, 1, OBJTYPE_REGFILE, b"a").unwrap();
    let many = vec![a; 6];
    assert_eq!(txn.table(&many).unwrap_err(), Error::Invalid);
}

#[test]
fn a_read_fault_in_the_current_tree_fails_begin() {
    let dev = make(64 * MIB);
    import_file(&dev, 2 << 20).unwrap();
    // DATA's root (only the tree in use reaches it) does not read: the blocks below it
    // cannot be marked, so no transaction may begin, whatever PFS it would write.
    let data_root = pfs_root_bref(&dev, b"DATA").data_off & !0x3F;
    dev.fail_read_at.set(Some(data_root));
    let vol = Volume::open(&dev).unwrap();
    assert_eq!(Import::begin(&vol, b"node-a").err(), Some(Error::Io));
    dev.fail_read_at.set(None);
    import_file_on(&vol, b"node-a", 2 << 20).unwrap();
    drop(vol);
    clean(&dev);
    assert_eq!(read_all(&dev, b"DATA", b"/f").len(), 2 << 20);
}

#[test]
fn a_device_error_in_an_older_copy_fails_begin() {
    let dev = make(8 << 30);
    // newfs's super-root: after one commit only the older copies reach it.
    let old_sroot = Volume::open(&dev).unwrap().header().sroot().data_off & !0x3F;
    import_file(&dev, 10_000).unwrap();
    dev.fail_read_at.set(Some(old_sroot));
    assert_eq!(import_file(&dev, 10_000).err(), Some(Error::Io));
    dev.fail_read_at.set(None);
    // Damage of the media there is tolerated: the older copy's tree is reserved as far
    // as it reads.
    dev.flip(old_sroot + 100);
    import_file(&dev, 10_000).unwrap();
}

#[test]
fn a_tolerant_walk_visits_an_inode_that_does_not_read() {
    let dev = make(64 * MIB);
    import_file(&dev, 10_000).unwrap();
    let data_root = pfs_root_bref(&dev, b"DATA");
    dev.flip((data_root.data_off & !0x3F) + 100);
    let vol = Volume::open(&dev).unwrap();
    let (mut faults, mut bare) = (0, Vec::new());
    vol.walk_all_tolerant(
        &vol.header().sroot_blockset,
        &mut |b, ino| {
            if ino.is_none() && b.btype == BREF_TYPE_INODE {
                bare.push(b.data_off);
            }
            Ok(Flow::Continue)
        },
        &mut |_| {
            faults += 1;
            Ok(())
        },
    )
    .unwrap();
    assert_eq!((faults, bare), (1, vec![data_root.data_off]));
}

#[test]
fn a_volume_is_not_reused_after_its_commit() {
    let dev = make((2 << 30) + 64 * MIB);
    let vol = Volume::open(&dev).unwrap();
    import_file_on(&vol, b"DATA", 100_000).unwrap();
    // `vol` still holds the header it was opened on; a second commit through it would
    // write over the first one's slot with a tree built on the old header.
    assert_eq!(
        import_file_on(&vol, b"node-a", 100_000).err(),
        Some(Error::Busy)
    );
    // Another writer committing behind an open volume is caught the same way.
    let other = Volume::open(&dev).unwrap();
    import_file(&dev, 50_000).unwrap();
    assert_eq!(
        import_file_on(&other, b"node-a", 1).err(),
        Some(Error::Busy)
    );
    drop((vol, other));
    assert_eq!(Volume::open(&dev).unwrap().header().mirror_tid, 18);
    assert_eq!(read_all(&dev, b"DATA", b"/f").len(), 50_000);
    clean(&dev);
    import_file_on(&Volume::open(&dev).unwrap(), b"node-a", 1).unwrap();
}

#[test]
fn newfs_smaller_than_the_device_erases_the_old_header_copies() {
    let dev = make(8 << 30);
    import_file(&dev, 10_000).unwrap();
    import_file(&dev, 10_000).unwrap();
    let pfs = pfs_list();
    let opts = NewfsOptions {
        size: 1 << 30,
        fsid: [0x55; 16],
        sroot_ids: ([3; 16], [4; 16]),
        pfs: &pfs,
        now_us: 0,
    };
    newfs(&dev, &opts).unwrap();
    let v = Volume::open(&dev).unwrap();
    assert_eq!(
        (v.zone(), v.header().fsid, v.header().mirror_tid),
        (0, [0x55; 16], 16)
    );
    let copies = read_copies(&&dev).unwrap();
    assert!(copies[1..]
        .iter()
        .all(|c| matches!(c, HeaderCopy::Read(Err(_)))));
    v.verify_all().unwrap();
    drop(v);
    // The erased slots lie past the volume: fsck does not count them against it.
    let r = fsck(&dev, FsckOptions::default()).unwrap();
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    import_file(&dev, 10_000).unwrap();
    let v = Volume::open(&dev).unwrap();
    assert_eq!(
        (v.zone(), v.header().fsid, v.header().mirror_tid),
        (0, [0x55; 16], 17)
    );
}

/// Commit PFS `label`'s root (its blockref and inode) as `edit` leaves them: a volume as
/// a kernel (or damage) could leave it.
fn edit_pfs_root(dev: &SparseDev, label: &[u8], edit: &dyn Fn(&mut Blockref, &mut InodeData)) {
    let vol = Volume::open(dev).unwrap();
    let mut txn = Txn::begin(&vol).unwrap();
    let mut sroot = vol.super_root().unwrap();
    let mut brefs = Vec::new();
    vol.scan(&sroot.blockset().unwrap(), 0, KEY_MAX, &mut |b| {
        brefs.push((*b, vol.read_inode(b)?));
        Ok(Flow::Continue)
    })
    .unwrap();
    let mut table = Vec::new();
    for (mut b, mut ino) in brefs {
        if ino.filename() == label {
            edit(&mut b, &mut ino);
            let m = b.modify_tid;
            b = txn.write_block(b, &ino.encode()).unwrap();
            b.modify_tid = m;
        }
        table.push(b);
    }
    sroot.set_blockset(&txn.table(&table).unwrap());
    let b = txn
        .write_block(*vol.header().sroot(), &sroot.encode())
        .unwrap();
    txn.commit(b).unwrap();
}

/// Commit the super-root with the blockref of PFS `label`'s root given `modify_tid`, as a
/// kernel that ran that PFS's counter ahead of the volume's would leave it.
fn set_pfs_modify_tid(dev: &SparseDev, label: &[u8], modify_tid: u64) {
    edit_pfs_root(dev, label, &|b, _| b.modify_tid = modify_tid);
}

/// Rewrite every header copy of `dev` as `edit` leaves it.
fn edit_headers(dev: &SparseDev, edit: &dyn Fn(&mut VolumeHeader)) {
    for zone in 0..4 {
        edit_header(dev, zone, edit);
    }
}

/// Rewrite the header copy of `zone` (if valid) as `edit` leaves it.
fn edit_header(dev: &SparseDev, zone: usize, edit: &dyn Fn(&mut VolumeHeader)) {
    if let HeaderCopy::Read(Ok(mut h)) = read_copies(&dev).unwrap()[zone].clone() {
        edit(&mut h);
        let mut buf = vec![0; crate::media::volhdr::VOLUME_BYTES];
        h.encode_into(&mut buf).unwrap();
        dev.write_at(crate::media::volhdr::copy_offset(zone), &buf)
            .unwrap();
    }
}

#[test]
fn modify_tid_goes_on_from_the_pfs_own_counter() {
    let dev = make(64 * MIB);
    set_pfs_modify_tid(&dev, b"DATA", 0x6a);
    import_file(&dev, 100_000).unwrap();
    let vol = Volume::open(&dev).unwrap();
    assert_eq!(vol.header().mirror_tid, 18);
    let root = pfs_root_bref(&dev, b"DATA");
    assert_eq!((root.mirror_tid, root.modify_tid), (18, 0x6b));
    assert_eq!(vol.header().sroot().modify_tid, 0x6b);
    // Every block written under the PFS root carries the PFS's tid.
    let mut tids = Vec::new();
    vol.walk_all(
        &[
            root,
            Blockref::default(),
            Blockref::default(),
            Blockref::default(),
        ],
        &mut |b, _| {
            tids.push(b.modify_tid);
            Ok(Flow::Continue)
        },
    )
    .unwrap();
    assert!(
        tids.len() > 3 && tids.iter().all(|&t| t == 0x6b),
        "{tids:x?}"
    );
    // A PFS whose counter is behind the volume's gets the volume's tid.
    drop(vol);
    import_file_on(&Volume::open(&dev).unwrap(), b"node-a", 10).unwrap();
    let a = pfs_root_bref(&dev, b"node-a");
    assert_eq!((a.mirror_tid, a.modify_tid), (19, 19));
    let vol = Volume::open(&dev).unwrap();
    assert_eq!(vol.header().sroot().modify_tid, 0x6c);
    drop(vol);
    clean(&dev);
}

#[test]
fn values_of_the_media_that_would_overflow_are_refused() {
    let dev = make(64 * MIB);
    // The PFS's next inode number would reach the directory-entry half of its table.
    edit_pfs_root(&dev, b"DATA", &|_, ino| ino.meta.pfs_inum = (1 << 63) - 2);
    let vol = Volume::open(&dev).unwrap();
    let mut imp = Import::begin(&vol, b"DATA").unwrap();
    assert_eq!(imp.new_inum(), Ok((1 << 63) - 1));
    assert_eq!(imp.new_inum(), Err(Error::Invalid));
    let m = meta(OBJTYPE_REGFILE, 1 << 63);
    assert_eq!(imp.file(m, Some(b"x"), &[]), Err(Error::Invalid));
    drop(imp);
    drop(vol);
    edit_pfs_root(&dev, b"DATA", &|_, ino| ino.meta.pfs_inum = u64::MAX);
    let vol = Volume::open(&dev).unwrap();
    let mut imp = Import::begin(&vol, b"DATA").unwrap();
    assert_eq!(imp.new_inum(), Err(Error::Invalid));
    drop(imp);
    drop(vol);
    // A PFS counter at its end.
    set_pfs_modify_tid(&dev, b"DATA", u64::MAX);
    let vol = Volume::open(&dev).unwrap();
    assert_eq!(Import::begin(&vol, b"DATA").err(), Some(Error::Invalid));
    drop(vol);
    // The volume's transaction id at its end, an allocator start past the filesystem.
    let (tid, beg) = {
        let h = Volume::open(&dev).unwrap().header().clone();
        (h.mirror_tid, h.allocator_beg)
    };
    edit_headers(&dev, &|h| h.mirror_tid = u64::MAX);
    let vol = Volume::open(&dev).unwrap();
    assert_eq!(Txn::begin(&vol).err(), Some(Error::Invalid));
    drop(vol);
    for bad in [65 * MIB, u64::MAX - 5] {
        edit_headers(&dev, &|h| (h.mirror_tid, h.allocator_beg) = (tid, bad));
        let vol = Volume::open(&dev).unwrap();
        assert_eq!(Txn::begin(&vol).err(), Some(Error::Invalid));
    }
    edit_headers(&dev, &|h| h.allocator_beg = beg);
    import_file_on(&Volume::open(&dev).unwrap(), b"node-a", 10).unwrap();
}

/// Whether the only findings of `r` are refused header copies (a torn header write).
fn clean_but_torn_headers(r: &fsck::FsckReport) -> bool {
    r.findings
        .iter()
        .all(|f| matches!(f.problem, fsck::Problem::HeaderBad(_)))
}

#[test]
fn a_crash_during_a_commit_leaves_the_old_or_the_new_volume() {
    let base = make((2 << 30) + 64 * MIB);
    import_file(&base, 100_000).unwrap();
    let dev = LogDev::new(base.snapshot());
    import_file_on(&Volume::open(&dev).unwrap(), b"DATA", 30_000).unwrap();
    let log = dev.log.borrow();
    let mut seen = [0u32; 2];
    each_crash(&base, &log, &mut |d| {
        let tid = Volume::open(d).unwrap().header().mirror_tid;
        assert!(tid == 17 || tid == 18, "{tid}");
        seen[(tid - 17) as usize] += 1;
        let len = read_all(d, b"DATA", b"/f").len();
        assert_eq!(len, if tid == 17 { 100_000 } else { 30_000 });
        let r = fsck(d, FsckOptions::default()).unwrap();
        assert!(clean_but_torn_headers(&r), "{:?}", r.findings);
        import_file(d, 1000).unwrap();
        assert_eq!(Volume::open(d).unwrap().header().mirror_tid, tid + 1);
        clean(d);
    });
    assert!(seen[0] > 30 && seen[1] > 0, "{seen:?}");
}

#[test]
fn a_crash_during_newfs_leaves_no_volume_or_a_whole_one() {
    let base = SparseDev::new(64 * MIB);
    let dev = LogDev::new(base.snapshot());
    let pfs = pfs_list();
    let opts = NewfsOptions {
        size: 64 * MIB,
        fsid: [9; 16],
        sroot_ids: ([3; 16], [4; 16]),
        pfs: &pfs,
        now_us: 0,
    };
    newfs(&dev, &opts).unwrap();
    let log = dev.log.borrow();
    let mut opened = 0;
    each_crash(&base, &log, &mut |d| {
        if let Ok(v) = Volume::open(d) {
            opened += 1;
            v.verify_all().unwrap();
            drop(v);
            clean(d);
        }
    });
    assert!(opened > 0);
}

#[test]
fn five_commits_rotate_through_every_header_slot() {
    let dev = make(8 << 30);
    let mut leaves = Vec::new();
    for (i, zone) in [1, 2, 3, 0, 1].into_iter().enumerate() {
        import_file(&dev, 10_000 * (i + 1)).unwrap();
        let v = Volume::open(&dev).unwrap();
        assert_eq!((v.zone(), v.header().mirror_tid), (zone, 17 + i as u64));
        v.walk_freemap(&mut |f| {
            if let super::freemap::FreemapVisit::Leaf(b, _) = f {
                leaves.push(b.data_off & !0x3F);
            }
            Ok(Flow::Continue)
        })
        .unwrap();
        // Every copy's tree still reads whole: nothing a copy reaches was reused.
        for z in 0..4 {
            let mut copies = read_copies(&&dev).unwrap();
            for (j, c) in copies.iter_mut().enumerate() {
                if j != z {
                    *c = HeaderCopy::Absent;
                }
            }
            Volume::from_copies(&dev, copies)
                .unwrap()
                .verify_all()
                .unwrap();
        }
        clean(&dev);
    }
    // The leaf moves one rotation slot (five 64 KiB blocks) per commit.
    let step: Vec<u64> = leaves.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(step, [5 * 65536; 4]);
}

/// The freemap leaf offsets the header copy of `zone` reaches, and whether any fault.
fn leaves_of(dev: &SparseDev, zone: usize) -> (Vec<u64>, bool) {
    let mut copies = read_copies(&dev).unwrap();
    for (j, c) in copies.iter_mut().enumerate() {
        if j != zone {
            *c = HeaderCopy::Absent;
        }
    }
    let (mut leaves, mut fault) = (Vec::new(), false);
    Volume::from_copies(dev, copies)
        .unwrap()
        .walk_freemap(&mut |v| {
            match v {
                super::freemap::FreemapVisit::Leaf(b, _) => leaves.push(b.data_off & !0x3F),
                super::freemap::FreemapVisit::Fault(..) => fault = true,
                super::freemap::FreemapVisit::Node(_) => {}
            }
            Ok(Flow::Continue)
        })
        .unwrap();
    (leaves, fault)
}

#[test]
fn a_damaged_freemap_leaf_still_rotates() {
    let dev = make(8 << 30);
    import_file(&dev, 10_000).unwrap();
    import_file(&dev, 20_000).unwrap();
    assert_eq!(leaves_of(&dev, 1), (vec![65536], false));
    assert_eq!(leaves_of(&dev, 2), (vec![6 * 65536], false));
    // The leaf in use is damaged: the next one still goes to the next rotation slot, not
    // over the older copy's (zone 1) leaf.
    dev.flip(6 * 65536 + 100);
    import_file(&dev, 30_000).unwrap();
    assert_eq!(leaves_of(&dev, 3), (vec![11 * 65536], false));
    assert_eq!(leaves_of(&dev, 1), (vec![65536], false));
    // A damaged freemap blockref: where its blocks are is unknown, the commit is refused.
    edit_header(&dev, 3, &|h| h.freemap_blockset[0][0] = 0xEE);
    assert!(leaves_of(&dev, 3).1);
    assert!(import_file(&dev, 40_000).is_err());
    assert_eq!(leaves_of(&dev, 1), (vec![65536], false));
}

#[test]
fn rewritten_pfs_and_super_root_drop_their_old_statistics() {
    let dev = make(64 * MIB);
    edit_pfs_root(&dev, b"DATA", &|b, _| {
        b.embed = [7; 16];
        b.leaf_count = 9;
    });
    edit_headers(&dev, &|h| {
        h.sroot_blockset[0].embed = [5; 16];
        h.sroot_blockset[0].leaf_count = 3;
    });
    import_file(&dev, 10_000).unwrap();
    let root = pfs_root_bref(&dev, b"DATA");
    assert_eq!((root.embed, root.leaf_count), ([0; 16], 0));
    let v = Volume::open(&dev).unwrap();
    let s = v.header().sroot();
    assert_eq!((s.embed, s.leaf_count), ([0; 16], 0));
}

#[test]
fn directory_entries_are_keyed_in_the_order_they_were_added() {
    // Names with the same segments ("a", "b") differ only in the 16 bits of their
    // whole-name hash: among a few hundred, two collide.
    let names: Vec<Vec<u8>> = (0..120)
        .flat_map(|lead| {
            (1..6).map(move |mid| {
                [
                    vec![b'.'; lead],
                    b"a".to_vec(),
                    vec![b'.'; mid],
                    b"b".to_vec(),
                ]
                .concat()
            })
        })
        .collect();
    let (x, y) = (0..names.len())
        .flat_map(|i| (i + 1..names.len()).map(move |j| (i, j)))
        .find(|&(i, j)| dirhash(&names[i]) == dirhash(&names[j]))
        .unwrap();
    let (x, y) = (names[x].clone(), names[y].clone());
    let dev = make(64 * MIB);
    let vol = Volume::open(&dev).unwrap();
    let mut imp = Import::begin(&vol, b"DATA").unwrap();
    let mut root = DirEntries::new();
    let mut added = Vec::new();
    // Many entries in no particular order, the colliding pair among them (y first).
    for (i, name) in [y.clone()]
        .into_iter()
        .chain((0..300).map(|i| format!("n{}", (i * 7919) % 300).into_bytes()))
        .chain([x.clone()])
        .enumerate()
    {
        let inum = imp.new_inum().unwrap();
        imp.file(meta(OBJTYPE_REGFILE, inum), Some(&[i as u8]), &[])
            .unwrap();
        imp.entry(&mut root, &name, inum, OBJTYPE_REGFILE).unwrap();
        added.push((name, inum));
    }
    imp.commit(&meta(OBJTYPE_DIRECTORY, 1), &root).unwrap();
    drop(vol);
    clean(&dev);
    let vol = Volume::open(&dev).unwrap();
    let pfs = vol.pfs(b"DATA").unwrap();
    let mut keys = Vec::new();
    let dir = pfs.resolve(&vol, b"/").unwrap();
    pfs.readdir(&vol, &dir, &mut |e| {
        keys.push((e.key, e.name.to_vec()));
        Ok(Flow::Continue)
    })
    .unwrap();
    assert_eq!(keys.len(), added.len());
    assert!(keys.windows(2).all(|w| w[0].0 < w[1].0));
    let key = |n: &[u8]| keys.iter().find(|k| k.1 == n).unwrap().0;
    let h = dirhash(&x);
    assert_eq!((key(&y), key(&x)), (h + 1, h + 2));
    for (name, inum) in &added {
        assert_eq!(
            pfs.resolve(&vol, &[b"/", &name[..]].concat())
                .unwrap()
                .meta
                .inum,
            *inum
        );
    }
}
