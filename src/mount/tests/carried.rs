//! A commit keeps the check code a DATA payload carried in with its bytes (a sync's copy of
//! a focus block as it is) and hashes every other payload it writes.

use super::*;
use crate::host::LockMode;
use crate::media::check::{compute, CHECK_BYTES};
use crate::store::Sealed;

/// `/big`'s DATA chain at `key` in `store` and its header.
fn data_chain(store: &Store, key: u64) -> (ChainId, Blockref) {
    let ino = store.index_inode(INODE_START + 1).unwrap().unwrap();
    store.lookup(ino, key, key).unwrap().unwrap()
}

/// The check code `/big`'s DATA block at `key` has on the media of `dev`.
fn media_check(dev: &SparseDev, key: u64) -> [u8; CHECK_BYTES] {
    let (store, _) = load_dev(dev);
    data_chain(&store, key).1.check
}

#[test]
fn a_synced_copy_is_committed_with_the_masters_code() {
    let (m_dev, s_dev) = (make(), make());
    import(&m_dev);
    let (ms, _) = load_dev(&m_dev);
    let (ss, mut sm) = load_dev(&s_dev);
    let c = synced_stores(ms, ss);
    let slave = c.store(1).unwrap();
    // The first block is a whole 64 KiB block: its copy carries the master's code.
    let (id, _) = data_chain(slave, 0);
    let (_, sealed, _) = slave.read_versioned(id).unwrap();
    assert!(sealed.carried_check().is_some());
    commit_dev(&s_dev, slave, &mut sm);
    // The code written is the master's, and the block's own: fsck reads every block.
    clean(&s_dev);
    for key in [0, 2 * DATA_BLOCK_BYTES as u64] {
        assert_eq!(media_check(&s_dev, key), media_check(&m_dev, key));
    }
}

/// A volume of [`import`], loaded, `/big`'s first block (a whole one) replaced by `len`
/// bytes carrying a wrong check code, as a copy whose code were not its bytes' would.
fn with_wrong_carried_code(len: usize) -> (SparseDev, Store, Mounted, ChainId) {
    let dev = make();
    import(&dev);
    let (store, m) = load_dev(&dev);
    let (id, b) = data_chain(&store, 0);
    let g = store.lock(id, LockMode::Exclusive).unwrap();
    let wrong = compute(b.check_method(), b"not these bytes").unwrap();
    let body = Body::Data(bytes(len, 0x5a));
    store
        .replace_sealed(&g, b, Sealed::carrying(body, (b.check_method(), wrong)))
        .unwrap();
    drop(g);
    (dev, store, m, id)
}

/// Whether fsck finds `dev` clean.
fn is_clean(dev: &SparseDev) -> bool {
    fsck(dev, FsckOptions::default()).unwrap().is_clean()
}

#[test]
fn a_carried_code_is_kept_only_for_the_very_bytes_of_a_whole_block() {
    // Unchanged and whole: the commit trusts the code (here a wrong one, so fsck sees it).
    let (dev, store, mut m, _) = with_wrong_carried_code(DATA_BLOCK_BYTES);
    commit_dev(&dev, &store, &mut m);
    assert!(!is_clean(&dev), "the carried code was not the one written");

    // Padded to a whole block: the block is not the bytes the code was for.
    let (dev, store, mut m, _) = with_wrong_carried_code(600);
    commit_dev(&dev, &store, &mut m);
    clean(&dev);

    // Changed after the copy (a modify, as the frontend's writes): a fresh code.
    changed_then_committed(|store, g| {
        store.modify(g, |_, body| {
            if let Body::Data(d) = body {
                d[7] ^= 1;
            }
            Ok(())
        })
    });
    // Installed by a frontend write (sealed here): nothing carried.
    changed_then_committed(|store, g| {
        let b = store.bref(g.id()).unwrap();
        store.replace(g, b, Body::Data(bytes(DATA_BLOCK_BYTES, 0x33)))
    });
}

/// A copy carrying a wrong code, then changed by `change`: nothing is carried any more, and
/// its commit writes a fresh code (fsck clean).
fn changed_then_committed(
    change: impl FnOnce(&Store, &crate::store::ChainGuard<'_>) -> crate::Result<()>,
) {
    let (dev, store, mut m, id) = with_wrong_carried_code(DATA_BLOCK_BYTES);
    let g = store.lock(id, LockMode::Exclusive).unwrap();
    change(&store, &g).unwrap();
    drop(g);
    assert!(store
        .read_versioned(id)
        .unwrap()
        .1
        .carried_check()
        .is_none());
    commit_dev(&dev, &store, &mut m);
    clean(&dev);
}
