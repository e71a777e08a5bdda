//! Volumes filled apart where one file's DATA chain has the master's modify_tid but another
//! width on the slave: what the join marks, and what makes the sync converge there.

use super::*;

/// File `/f` alone in the PFS root: `len` bytes varied by `seed` in one DATA block at key 0
/// whose blockref says `keybits` (64 KiB as the import writes it; HAMMER2 writes a small file's
/// block with its smaller logical size, e.g. 1 KiB for 600 bytes).
fn import_one(dev: &SparseDev, len: usize, seed: u8, keybits: u8) {
    let vol = Volume::open(dev).unwrap();
    let mut imp = Import::begin(&vol, b"DATA").unwrap();
    let inum = imp.new_inum().unwrap();
    let mut t = Vec::new();
    imp.data(&mut t, 0, &bytes(len, seed)).unwrap();
    t[0].keybits = keybits;
    let mut m = meta(OBJTYPE_REGFILE, inum);
    m.size = len as u64;
    imp.file(m, None, &t).unwrap();
    let mut root = DirEntries::new();
    imp.entry(&mut root, b"f", inum, OBJTYPE_REGFILE).unwrap();
    imp.commit(&meta(OBJTYPE_DIRECTORY, 1), &root).unwrap();
}

#[test]
fn a_data_chain_of_the_masters_tid_but_another_width_is_replaced() {
    let (m_dev, s_dev) = (make(), make());
    import_one(&m_dev, 3000, 1, DATA_BLOCK_RADIX);
    import_one(&s_dev, 600, 2, 10);
    clean(&s_dev);
    let (ms, _) = load_dev(&m_dev);
    let (ss, mut sm) = load_dev(&s_dev);
    let inum = INODE_START;
    let data = |s: &Store| {
        let ino = s.index_inode(inum).unwrap().unwrap();
        s.lookup(ino, 0, 0).unwrap().unwrap().1
    };
    let (md, sd) = (data(&ms), data(&ss));
    assert_eq!(
        (md.modify_tid, md.keybits),
        (sd.modify_tid, DATA_BLOCK_RADIX)
    );
    assert_eq!(sd.keybits, 10);

    // The join marks the inode (its meta and its children's widths differ), not the DATA
    // chain, whose TID still matches the master's: the merge's keybits check must see it.
    assert!(mark_foreign(&ss, &ms).unwrap() > 0);
    let ino = ss.index_inode(inum).unwrap().unwrap();
    assert_eq!(ss.bref(ino).unwrap().modify_tid, 0);
    assert_eq!(data(&ss).modify_tid, md.modify_tid);

    let c = synced_stores(ms, ss);
    let slave = c.store(1).unwrap();
    assert_eq!(data(slave).keybits, DATA_BLOCK_RADIX);
    commit_dev(&s_dev, slave, &mut sm);
    clean(&s_dev);
    // Below the PFS roots (whose pfs_type and fsid are each node's own) the trees agree.
    assert!(reader_view(&s_dev)[1..] == reader_view(&m_dev)[1..]);
    let view = reader_view(&s_dev);
    assert_eq!(view[1].2, bytes(3000, 1));
}
