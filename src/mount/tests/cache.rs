//! Volumes synced by stores that read DATA payloads on demand within a small budget.

use alloc::sync::Arc;

use super::*;
use crate::mount::payload::DevSource;
use crate::volume::BlockDev;

/// A [`SparseDev`] several threads may read (the sync threads, through a store's source).
pub(super) struct Shared(pub(super) spin::Mutex<SparseDev>);

impl BlockDev for Shared {
    fn size(&self) -> u64 {
        self.0.lock().size()
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.0.lock().read_at(off, buf)
    }
    fn write_at(&self, off: u64, buf: &[u8]) -> Result<()> {
        self.0.lock().write_at(off, buf)
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

pub(super) fn shared(dev: SparseDev) -> Arc<Shared> {
    Arc::new(Shared(spin::Mutex::new(dev)))
}

const BUDGET: usize = 64 << 10;

/// `files` files `/fN` of `blocks` 64 KiB blocks of noise each (`files · blocks · 64 KiB`
/// of data).
pub(super) fn import_big(dev: &SparseDev, files: usize, blocks: usize) {
    let vol = Volume::open(dev).unwrap();
    let mut imp = Import::begin(&vol, b"DATA").unwrap();
    let mut root = DirEntries::new();
    for f in 0..files {
        let inum = imp.new_inum().unwrap();
        let mut t = Vec::new();
        for k in 0..blocks {
            let block = bytes(DATA_BLOCK_BYTES, (f * blocks + k) as u8);
            imp.data(&mut t, (k * DATA_BLOCK_BYTES) as u64, &block)
                .unwrap();
        }
        let mut m = meta(OBJTYPE_REGFILE, inum);
        m.size = (blocks * DATA_BLOCK_BYTES) as u64;
        imp.file(m, None, &t).unwrap();
        let name = alloc::format!("f{f}");
        imp.entry(&mut root, name.as_bytes(), inum, OBJTYPE_REGFILE)
            .unwrap();
    }
    imp.commit(&meta(OBJTYPE_DIRECTORY, 1), &root).unwrap();
}

/// PFS DATA of `dev` loaded into a store reading payloads on demand within `budget`.
pub(super) fn load_lazy(dev: &Arc<Shared>, budget: usize) -> (Store, Mounted) {
    let vol = Volume::open(&**dev).unwrap();
    let src = Box::new(DevSource::new(Arc::clone(dev), vol.header()));
    load_cached(testhost::host(), &vol, b"DATA", src, budget, &mut |_| {}).unwrap()
}

/// A cluster of master store `ms` (node 0) and slave store `ss` (node 1).
pub(super) fn master_and_slave(ms: Store, ss: Store) -> PinnedCluster {
    use crate::role::Role;
    let roles = [Role::Master, Role::Slave];
    crate::cluster::Cluster::from_stores(testhost::host(), &roles, vec![ms, ss], Layout::Index)
        .unwrap()
}

fn commit_shared(dev: &Arc<Shared>, store: &Store, m: &mut Mounted) {
    let vol = Volume::open(&**dev).unwrap();
    commit(&vol, store, m).unwrap();
}

fn within_budget(store: &Store) -> crate::store::CacheStats {
    let st = store.cache_stats().unwrap();
    assert!(st.peak <= st.budget && st.used <= st.peak, "{st:?}");
    st
}

/// 8 MiB of data synced to an empty slave by two stores of 64 KiB of cache each: it
/// converges, the slave is fsck-clean and exports the master's tree, and neither cache ever
/// held more than its budget (the slave's, reading its tree back after the commit, evicts).
#[test]
fn a_tiny_cache_syncs_a_volume_many_times_its_size() {
    let (m, s) = (shared(make()), shared(make()));
    import_big(&m.0.lock(), 16, 8);
    let (ms, _) = load_lazy(&m, BUDGET);
    let (ss, mut sm) = load_lazy(&s, BUDGET);
    assert_eq!(within_budget(&ms).reads, 0, "a load reads no DATA block");
    let c = master_and_slave(ms, ss);
    sync_until_in_sync(&c, 1);
    let slave = c.store(1).unwrap();
    let before = within_budget(slave);
    assert!(
        before.pinned >= 8 << 20,
        "the copies wait for the commit: {before:?}"
    );
    commit_shared(&s, slave, &mut sm);
    assert_eq!(within_budget(slave).pinned, 0, "released by the commit");
    let st = within_budget(c.store(0).unwrap());
    assert!(
        st.read_bytes >= 8 << 20,
        "every block read on demand: {st:?}"
    );
    // The sync's copies of DATA blocks pass the master's cache by: 8 MiB through 64 KiB
    // evict nothing (only the inodes are cached).
    assert_eq!(st.evictions, 0, "{st:?}");
    within_budget(slave);
    clean(&s.0.lock());
    let want = reader_view(&m.0.lock());
    assert!(reader_view(&s.0.lock())[1..] == want[1..]);
    // The slave's payloads, released by its commit, read back from where it put them.
    assert!(store_view(slave)[1..] == want[1..]);
    assert!(within_budget(slave).evictions > 100);
}

/// A DATA block damaged after the load is EIO for its chain when read on demand, for the
/// file and for a sync that needs it; nothing panics, and the other files still read.
#[test]
fn a_damaged_block_read_on_demand_is_eio_for_its_chain() {
    let (m, s) = (shared(make()), shared(make()));
    import_big(&m.0.lock(), 2, 2);
    let (ms, _) = load_lazy(&m, BUDGET);
    let f0 = ms.resolve(b"/f0").unwrap();
    let (bad, b) = ms.lookup(f0, 0, 0).unwrap().unwrap();
    m.0.lock().flip((b.data_off & !0x3F) + 100);
    assert_eq!(ms.read(bad).err(), Some(Error::Io));
    assert_eq!(ms.read_file(f0).err(), Some(Error::Io));
    let st = ms.cache_stats().unwrap();
    assert!(st.read_errors >= 2 && st.last_error == b.data_off, "{st:?}");
    let good = bytes(DATA_BLOCK_BYTES, 2);
    assert_eq!(
        ms.read_file(ms.resolve(b"/f1").unwrap()).unwrap()[..DATA_BLOCK_BYTES],
        good
    );
    let (ss, _) = load_lazy(&s, BUDGET);
    let c = master_and_slave(ms, ss);
    for _ in 0..3 {
        let _ = c.sync_node(1, &|| false);
    }
    assert!(!c.in_sync(1), "a file that cannot be read is not synced");
}

/// Changes made under heavy eviction pressure stay in memory until committed: the commit
/// writes the right bytes (a reload reads them back), and afterwards they read back from
/// the media.
#[test]
fn a_changed_payload_survives_eviction_pressure_until_committed() {
    let dev = shared(make());
    import_big(&dev.0.lock(), 8, 4);
    let (store, mut m) = load_lazy(&dev, BUDGET);
    let new = |i: usize| bytes(2 * DATA_BLOCK_BYTES + 300, 0x80 ^ i as u8);
    for i in 0..4 {
        let path = alloc::format!("/f{i}");
        store
            .write(path.as_bytes(), &new(i), 1000 + i as u64)
            .unwrap();
    }
    // Every file read twice over: far more than the budget goes through the cache.
    for _ in 0..2 {
        for i in 0..8 {
            let path = alloc::format!("/f{i}");
            store
                .read_file(store.resolve(path.as_bytes()).unwrap())
                .unwrap();
        }
    }
    let st = within_budget(&store);
    assert!(st.evictions >= 30, "{st:?}");
    let f0 = store.resolve(b"/f0").unwrap();
    let (first, _) = store.lookup(f0, 0, 0).unwrap().unwrap();
    assert!(!store.is_on_media(first).unwrap(), "pinned until committed");
    commit_shared(&dev, &store, &mut m);
    assert!(store.is_on_media(first).unwrap(), "released by the commit");
    clean(&dev.0.lock());
    let view = reader_view(&dev.0.lock());
    for i in 0..8 {
        let path = alloc::format!("/f{i}");
        let (_, _, got) = view.iter().find(|(p, _, _)| p == path.as_bytes()).unwrap();
        if i < 4 {
            assert_eq!(got, &new(i), "{path}");
        }
        assert_eq!(
            &store
                .read_file(store.resolve(path.as_bytes()).unwrap())
                .unwrap(),
            got
        );
    }
    within_budget(&store);
    // A remount of the store keeps reading on demand, and holds the same tree.
    reload(&Volume::open(&*dev).unwrap(), &store, &mut m).unwrap();
    assert!(store
        .is_on_media(
            store
                .lookup(store.resolve(b"/f0").unwrap(), 0, 0)
                .unwrap()
                .unwrap()
                .0
        )
        .unwrap());
    assert!(store_view(&store) == view);
    within_budget(&store);
}

/// A payload that is not a whole block (the commit pads it to one) leaves memory after the
/// commit as a whole block does: it reads back as it was replaced, length and check code
/// included, from the padded block.
#[test]
fn a_payload_padded_by_the_commit_reads_back_unchanged() {
    let dev = shared(make());
    import_big(&dev.0.lock(), 1, 2);
    let (store, mut m) = load_lazy(&dev, BUDGET);
    let f0 = store.resolve(b"/f0").unwrap();
    let (id, b) = store.lookup(f0, 0, 0).unwrap().unwrap();
    let short = bytes(3000, 0x55);
    {
        let g = store.lock(id, crate::host::LockMode::Exclusive).unwrap();
        store.replace(&g, b, Body::Data(short.clone())).unwrap();
    }
    let before = store.read_sealed(id).unwrap();
    commit_shared(&dev, &store, &mut m);
    assert!(store.is_on_media(id).unwrap(), "released by the commit");
    assert_eq!(within_budget(&store).pinned, 0);
    let after = store.read_sealed(id).unwrap();
    assert_eq!(after.0.check, before.0.check);
    assert!(after.1.body() == before.1.body() && *after.1.body() == Body::Data(short));
    // A whole block is released as before.
    let (id1, b1) = store
        .lookup(f0, DATA_BLOCK_BYTES as u64, DATA_BLOCK_BYTES as u64)
        .unwrap()
        .unwrap();
    {
        let g = store.lock(id1, crate::host::LockMode::Exclusive).unwrap();
        store
            .replace(&g, b1, Body::Data(bytes(4096, 0x66)))
            .unwrap();
    }
    commit_shared(&dev, &store, &mut m);
    assert!(store.is_on_media(id1).unwrap());
    assert!(store.read(id1).unwrap().1 == Body::Data(bytes(4096, 0x66)));
    assert_eq!(within_budget(&store).pinned, 0);
    clean(&dev.0.lock());
    // The file's table written again around the padded block: still clean.
    {
        let g = store.lock(id1, crate::host::LockMode::Exclusive).unwrap();
        let b1 = store.bref(id1).unwrap();
        store
            .replace(&g, b1, Body::Data(bytes(4096, 0x77)))
            .unwrap();
    }
    commit_shared(&dev, &store, &mut m);
    clean(&dev.0.lock());
    assert!(store.read(id).unwrap().1 == Body::Data(bytes(3000, 0x55)));
    // Modified in place after a read back from the padded block: its bytes, changed.
    {
        let g = store.lock(id, crate::host::LockMode::Exclusive).unwrap();
        store
            .modify(&g, |_, body| {
                let Body::Data(d) = body else {
                    return Err(Error::Invalid);
                };
                assert_eq!(d.len(), 3000);
                d[0] ^= 0xff;
                Ok(())
            })
            .unwrap();
    }
    let mut want = bytes(3000, 0x55);
    want[0] ^= 0xff;
    commit_shared(&dev, &store, &mut m);
    clean(&dev.0.lock());
    // Damaged on the media, in the padding or in the payload: EIO for that chain, counted,
    // and nothing cached (it stays on the media).
    let block = store.bref(id).unwrap().data_off & !0x3F;
    for at in [3500, 10] {
        let errors = store.cache_stats().unwrap().read_errors;
        dev.0.lock().flip(block + at);
        assert_eq!(store.read(id).err(), Some(Error::Io), "{at}");
        assert_eq!(store.cache_stats().unwrap().read_errors, errors + 1);
        assert!(store.is_on_media(id).unwrap());
        dev.0.lock().flip(block + at);
    }
    assert!(store.read(id).unwrap().1 == Body::Data(want));
}

/// A frontend write of an odd size is no longer held once committed: its last block (the
/// frontend pads it to its physical size, as `hammer2_calc_physical`) is evicted under
/// pressure like the others and reads back byte for byte.
#[test]
fn an_odd_sized_write_is_evictable_after_its_commit_and_reads_back_exact() {
    let dev = shared(make());
    import_big(&dev.0.lock(), 4, 2);
    let (store, mut m) = load_lazy(&dev, BUDGET);
    let new = bytes(DATA_BLOCK_BYTES + 4465, 0x3c);
    store.write(b"/f0", &new, 1000).unwrap();
    assert!(within_budget(&store).pinned >= new.len());
    commit_shared(&dev, &store, &mut m);
    assert_eq!(within_budget(&store).pinned, 0, "released by the commit");
    let f0 = store.resolve(b"/f0").unwrap();
    assert_eq!(store.read_file(f0).unwrap(), new);
    // Pressure: every other file read; the tail block goes.
    for i in 1..4 {
        let path = alloc::format!("/f{i}");
        store
            .read_file(store.resolve(path.as_bytes()).unwrap())
            .unwrap();
    }
    let (tail, tb) = store
        .lookup(f0, DATA_BLOCK_BYTES as u64, DATA_BLOCK_BYTES as u64)
        .unwrap()
        .unwrap();
    assert!(store.is_on_media(tail).unwrap(), "evicted");
    assert_eq!(tb.data_bytes(), 8192, "padded on the media");
    assert_eq!(store.read_file(f0).unwrap(), new);
    assert!(within_budget(&store).evictions > 0);
    clean(&dev.0.lock());
    assert_eq!(reader_view(&dev.0.lock())[1].2, new);
}

/// How long a test waits for something a thread must do before it fails.
const PATIENCE: core::time::Duration = core::time::Duration::from_secs(60);

/// A slave's sync thread copying 8 MiB into a store of 64 KiB of budget and a pinned limit
/// of twice that: with nobody committing, it holds with its changed data within the limit
/// and one block (a freeze is still acknowledged at once); with a commit at each alarm it
/// converges, the changed data never past that bound, and the slave is clean and whole.
#[test]
fn a_sync_thread_holds_past_the_pinned_limit_until_a_commit() {
    use crate::thread::{Request, ThreadState};
    use core::sync::atomic::{AtomicU64, Ordering};
    let host = testhost::host();
    let bound = 2 * BUDGET + DATA_BLOCK_BYTES;
    let (m, s) = (shared(make()), shared(make()));
    import_big(&m.0.lock(), 16, 8);
    let (ms, _) = load_lazy(&m, BUDGET);
    let (mut ss, mut sm) = load_lazy(&s, BUDGET);
    let rung: &'static AtomicU64 = Box::leak(Box::default());
    ss.set_pinned_alarm(Box::new(|| {
        rung.fetch_add(1, Ordering::SeqCst);
    }));
    ss.set_pinned_limit(2 * BUDGET);
    let c = master_and_slave(ms, ss);
    c.set_thread_idle_poll(core::time::Duration::from_millis(1));
    c.as_ref().thread_start(1).unwrap();
    let slave = c.store(1).unwrap();
    let pinned = || slave.cache_stats().unwrap().pinned;
    let t0 = host.now_ns();
    let late = || host.now_ns() - t0 > PATIENCE.as_nanos() as u64;
    while !slave.past_pinned_limit() {
        assert!(!late(), "never reached the limit");
        crate::host::sleep(host, core::time::Duration::from_millis(1));
    }
    // Nobody commits: the thread holds (it would copy all 8 MiB otherwise).
    crate::host::sleep(host, core::time::Duration::from_millis(300));
    let st = slave.cache_stats().unwrap();
    assert!(st.pinned_peak <= bound, "{st:?}");
    assert!(!c.in_sync(1));
    assert_eq!(rung.load(Ordering::SeqCst), 1, "rung once, at the budget");
    c.thread_request(1, Request::Freeze).unwrap();
    assert_eq!(c.thread_state(1), ThreadState::Frozen);
    c.thread_request(1, Request::Unfreeze).unwrap();
    // Committed whenever past the budget, as a host does at the alarm.
    let mut commits = 0usize;
    while !c.in_sync(1) {
        assert!(!late(), "not converged: {:?}", slave.cache_stats());
        if pinned() > BUDGET {
            c.thread_request(1, Request::Freeze).unwrap();
            commit_shared(&s, slave, &mut sm);
            commits += 1;
            c.thread_request(1, Request::Unfreeze).unwrap();
        }
        crate::host::sleep(host, core::time::Duration::from_millis(1));
    }
    c.thread_request(1, Request::Stop).unwrap();
    commit_shared(&s, slave, &mut sm);
    let st = within_budget(slave);
    assert!(st.pinned_peak <= bound && st.pinned == 0, "{st:?}");
    assert!(commits >= (8 << 20) / bound, "{commits} commits");
    assert!(
        rung.load(Ordering::SeqCst) >= commits as u64,
        "an alarm before every commit"
    );
    clean(&s.0.lock());
    let want = reader_view(&m.0.lock());
    assert!(reader_view(&s.0.lock())[1..] == want[1..]);
}

/// Every inode of the PFS root's index (not the root itself).
fn index_inodes(store: &Store) -> Vec<ChainId> {
    let root = store.root();
    let mut out = Vec::new();
    let mut next = store.lookup(root, 0, DIRHASH_VISIBLE - 1).unwrap();
    while let Some((id, b)) = next {
        if b.btype == BREF_TYPE_INODE {
            out.push(id);
        }
        next = store.next(root, &b, DIRHASH_VISIBLE - 1).unwrap();
    }
    out
}

/// Inodes on the media, of `ids`.
fn on_media(store: &Store, ids: &[ChainId]) -> usize {
    ids.iter()
        .filter(|&&id| store.is_on_media(id).unwrap())
        .count()
}

/// A PFS of many small files synced to an empty slave by two stores whose caches hold a
/// few inodes: a load leaves every inode on the media, the sync reads them on demand within
/// the budget, the slave's commit releases the inodes it wrote and they read back from
/// their new blocks (verified by the check codes the commit gave them), also after a
/// second sync moved the blocks of the directories above a new file.
#[test]
fn many_inodes_sync_through_a_cache_of_a_few() {
    const FEW: usize = 8 << 10;
    let (m, s) = (shared(make()), shared(make()));
    import_many(&m.0.lock(), 6, 40);
    let (ms, _) = load_lazy(&m, FEW);
    let (ss, mut sm) = load_lazy(&s, FEW);
    let inodes = index_inodes(&ms);
    assert_eq!(inodes.len(), 6 + 6 * 40);
    assert_eq!(
        on_media(&ms, &inodes),
        inodes.len() - FEW / INODE_BYTES,
        "the load keeps the inodes it read that fit"
    );
    assert_eq!(within_budget(&ms).reads, 0);
    let c = master_and_slave(ms, ss);
    sync_until_in_sync(&c, 1);
    let (master, slave) = (c.store(0).unwrap(), c.store(1).unwrap());
    let st = within_budget(master);
    assert!(
        st.reads as usize >= inodes.len(),
        "inodes read on demand: {st:?}"
    );
    assert!(st.evictions > 100, "{st:?}");
    let before = within_budget(slave);
    assert!(
        before.pinned >= inodes.len() * INODE_BYTES,
        "the new inodes wait for the commit: {before:?}"
    );
    commit_shared(&s, slave, &mut sm);
    assert_eq!(within_budget(slave).pinned, 0, "released by the commit");
    let copies = index_inodes(slave);
    assert_eq!(on_media(slave, &copies), copies.len());
    clean(&s.0.lock());
    let want = reader_view(&m.0.lock());
    assert!(reader_view(&s.0.lock())[1..] == want[1..]);
    assert!(store_view(slave)[1..] == want[1..]);
    // A new file on the master: the slave's directories above it move to new blocks.
    master.write(b"/d3/new", &bytes(700, 9), 5000).unwrap();
    sync_until_in_sync(&c, 1);
    commit_shared(&s, slave, &mut sm);
    clean(&s.0.lock());
    // The master did not commit: its store is what the slave must hold.
    let want = store_view(master);
    assert_eq!(want.len(), 1 + 6 + 6 * 40 + 1);
    assert!(reader_view(&s.0.lock())[1..] == want[1..]);
    assert!(
        store_view(slave)[1..] == want[1..],
        "read back from the new blocks"
    );
    within_budget(slave);
    within_budget(master);
    assert_eq!(slave.cache_stats().unwrap().read_errors, 0);
}

/// A master volume of [`import_many`]`(dirs, files)` and a slave volume synced from it and
/// committed, both loaded again into stores reading on demand within `budget`.
fn in_sync_pair(dirs: usize, files: usize, budget: usize) -> (Store, Store) {
    let (m, s) = (shared(make()), shared(make()));
    import_many(&m.0.lock(), dirs, files);
    let (ms, _) = load_lazy(&m, budget);
    let (ss, mut sm) = load_lazy(&s, budget);
    let c = master_and_slave(ms, ss);
    sync_until_in_sync(&c, 1);
    commit_shared(&s, c.store(1).unwrap(), &mut sm);
    drop(c);
    (load_lazy(&m, budget).0, load_lazy(&s, budget).0)
}

/// Joining a slave in sync with its master compares every chain of equal TID without
/// reading a payload: two clean inodes by their resident digests, two DATA blocks by their
/// check codes. Volumes filled apart under the same TIDs are still told apart, by the same
/// resident state, as a load reading every payload tells them.
#[test]
fn a_join_of_lazy_stores_compares_clean_chains_without_reading_them() {
    const FEW: usize = 8 << 10;
    let (ms, ss) = in_sync_pair(6, 40, FEW);
    assert!(conflicts(&ss, &ms).unwrap().is_empty());
    assert_eq!(mark_foreign(&ss, &ms).unwrap(), 0);
    for st in [&ms, &ss].map(within_budget) {
        assert_eq!((st.reads, st.read_bytes), (0, 0), "{st:?}");
    }

    let (a, b) = (shared(make()), shared(make()));
    import_seeded(&a.0.lock(), 0);
    import_seeded(&b.0.lock(), 9);
    let eager = {
        let (sa, _) = load_dev(&a.0.lock());
        let (sb, _) = load_dev(&b.0.lock());
        conflicts(&sb, &sa).unwrap().len()
    };
    assert!(eager >= 2, "{eager}");
    let (sa, _) = load_lazy(&a, FEW);
    let (sb, _) = load_lazy(&b, FEW);
    assert_eq!(conflicts(&sb, &sa).unwrap().len(), eager);
    assert_eq!(within_budget(&sb).reads, 0);
}

/// A slave replacing its clean inodes by the master's changed ones (a chmod of 40 files)
/// reads none of them: read back from the media their tables are cleared, so the copies
/// start empty tables either way.
#[test]
fn a_replaced_clean_inode_is_not_read() {
    let (ms, ss) = in_sync_pair(2, 40, 8 << 10);
    for f in 0..40 {
        let path = alloc::format!("/d1/f{f}");
        ms.chmod(path.as_bytes(), 0o600, 9000 + f).unwrap();
    }
    let c = master_and_slave(ms, ss);
    sync_until_in_sync(&c, 1);
    let slave = c.store(1).unwrap();
    assert_eq!(within_budget(slave).reads, 0);
    let mode = |p: &[u8]| slave.meta(slave.resolve(p).unwrap()).unwrap().mode;
    assert_eq!(mode(b"/d1/f7") & 0o7777, 0o600);
    assert!(store_view(slave)[1..] == store_view(c.store(0).unwrap())[1..]);
}

/// A path resolves through the directories' resident bits, reading no inode on the way;
/// a file in the middle of a path is still not a directory.
#[test]
fn a_path_resolves_without_reading_its_directories() {
    let dev = shared(make());
    import_many(&dev.0.lock(), 3, 4);
    let (store, _) = load_lazy(&dev, 0);
    let f = store.resolve(b"/d2/f3").unwrap();
    assert_eq!(store.cache_stats().unwrap().reads, 0);
    assert!(store.is_on_media(f).unwrap());
    assert_eq!(store.resolve(b"/d2/f3/x").err(), Some(Error::NotDir));
    assert_eq!(store.cache_stats().unwrap().reads, 0);
}

/// A commit rewriting clean directories above a change (their tables change) reads each
/// one block once, from the volume for its old table, and writes that copy: not again
/// through the store's source. The volume reads back as changed.
#[test]
fn a_commit_reads_a_clean_inode_on_its_path_once() {
    let dev = shared(make());
    import_many(&dev.0.lock(), 3, 4);
    let (store, mut m) = load_lazy(&dev, 0);
    store.write(b"/d1/new", &bytes(700, 9), 3000).unwrap();
    store.write(b"/d2/new", &bytes(800, 7), 3001).unwrap();
    let dirs = [b"/d1", b"/d2"].map(|p| store.resolve(p).unwrap());
    assert_eq!(on_media(&store, &dirs), 2, "clean, their tables changed");
    let before = store.cache_stats().unwrap().reads;
    commit_shared(&dev, &store, &mut m);
    assert_eq!(store.cache_stats().unwrap().reads, before);
    assert_eq!(on_media(&store, &dirs), 2);
    clean(&dev.0.lock());
    let view = reader_view(&dev.0.lock());
    assert!(store_view(&store) == view, "read back as written");
    let at = |p: &[u8]| view.iter().find(|(q, _, _)| q == p).unwrap().2.clone();
    assert_eq!(
        (at(b"/d1/new"), at(b"/d2/new")),
        (bytes(700, 9), bytes(800, 7))
    );
}

/// The inodes a load reads for their tables stay in the cache as far as they fit, so the
/// first sync reads only the DATA blocks it copies.
#[test]
fn a_first_sync_reads_no_inode_the_load_kept() {
    let (m, s) = (shared(make()), shared(make()));
    import_many(&m.0.lock(), 2, 10);
    let (ms, _) = load_lazy(&m, BUDGET);
    let (ss, _) = load_lazy(&s, BUDGET);
    let inodes = index_inodes(&ms);
    assert_eq!(on_media(&ms, &inodes), 0, "all kept: {inodes:?}");
    let c = master_and_slave(ms, ss);
    sync_until_in_sync(&c, 1);
    let st = within_budget(c.store(0).unwrap());
    assert_eq!(st.reads, 20, "the files' DATA blocks alone: {st:?}");
}

/// Inodes changed (a chmod, a write) under eviction pressure stay in memory until a
/// commit, which writes them as changed; afterwards they leave memory and read back as
/// written, in this store and in a fresh load.
#[test]
fn a_changed_inode_survives_eviction_pressure_until_committed() {
    const FEW: usize = 4 << 10;
    let dev = shared(make());
    import_many(&dev.0.lock(), 4, 16);
    let (store, mut m) = load_lazy(&dev, FEW);
    store.chmod(b"/d0/f3", 0o600, 3000).unwrap();
    store.write(b"/d2/f7", &bytes(2000, 0x42), 3001).unwrap();
    let changed = [
        store.resolve(b"/d0/f3").unwrap(),
        store.resolve(b"/d2/f7").unwrap(),
    ];
    let inodes = index_inodes(&store);
    for _ in 0..2 {
        for &id in &inodes {
            store.meta(id).unwrap();
        }
    }
    let st = within_budget(&store);
    assert!(st.evictions as usize >= inodes.len(), "{st:?}");
    assert_eq!(on_media(&store, &changed), 0, "pinned until committed");
    assert!(st.pinned >= 2 * INODE_BYTES, "{st:?}");
    assert_eq!(store.meta(changed[0]).unwrap().mode, 0o600);
    assert_eq!(store.meta(changed[1]).unwrap().size, 2000);
    commit_shared(&dev, &store, &mut m);
    assert_eq!(on_media(&store, &changed), 2, "released by the commit");
    assert_eq!(within_budget(&store).pinned, 0);
    clean(&dev.0.lock());
    let view = reader_view(&dev.0.lock());
    let at = |p: &[u8]| view.iter().find(|(q, _, _)| q == p).unwrap().clone();
    assert_eq!(at(b"/d0/f3").1.mode, 0o600);
    assert_eq!(at(b"/d2/f7").2, bytes(2000, 0x42));
    assert!(store_view(&store) == view, "read back as written");
    let (fresh, _) = load_lazy(&dev, FEW);
    assert!(store_view(&fresh) == view);
    assert_eq!(store.cache_stats().unwrap().read_errors, 0);
}

/// An inode block damaged after the load is EIO for that inode when it is read on demand
/// (its meta, its payload, a sync that needs it), never a panic; the other inodes read.
#[test]
fn a_damaged_inode_read_on_demand_is_eio_for_its_chain() {
    let (m, s) = (shared(make()), shared(make()));
    import_many(&m.0.lock(), 2, 4);
    let (ms, _) = load_lazy(&m, 0);
    let d0 = ms.resolve(b"/d0").unwrap();
    let head = ms.find_dirent(d0, b"f1").unwrap().unwrap().2;
    let bad = ms.index_inode(head.inum).unwrap().unwrap();
    assert!(ms.is_on_media(bad).unwrap());
    let b = ms.bref(bad).unwrap();
    m.0.lock().flip((b.data_off & !0x3F) + 300);
    assert_eq!(ms.meta(bad).err(), Some(Error::Io));
    assert_eq!(ms.read(bad).err(), Some(Error::Io));
    let st = ms.cache_stats().unwrap();
    assert!(st.read_errors >= 2 && st.last_error == b.data_off, "{st:?}");
    let f0 = ms.resolve(b"/d0/f0").unwrap();
    assert_eq!(ms.read_file(f0).unwrap(), bytes(600, 0));
    let (ss, _) = load_lazy(&s, 0);
    let c = master_and_slave(ms, ss);
    for _ in 0..3 {
        let _ = c.sync_node(1, &|| false);
    }
    assert!(!c.in_sync(1), "an inode that cannot be read is not synced");
}
