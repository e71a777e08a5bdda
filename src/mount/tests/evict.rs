//! Clean ranges of a volume-backed store's tables out of memory and read back on demand.

use alloc::sync::Arc;

use super::*;
use crate::mount::payload::DevSource;

use super::cache::{master_and_slave, shared, Shared};

fn load_lazy(dev: &Arc<Shared>) -> (Store, Mounted) {
    super::cache::load_lazy(dev, 64 << 10)
}

#[test]
fn evicted_ranges_read_back_as_they_were() {
    let dev = shared(make());
    import_many(&dev.0.lock(), 4, 300);
    let (store, mut m) = load_lazy(&dev);
    let want = store_view(&store);
    let live = store.chain_count();
    assert!(live > 2400, "{live}");
    let freed = store.evict(100).unwrap();
    let left = store.chain_count();
    assert_eq!(left + freed, live);
    assert!(left <= 100, "{left} of {live} left");
    // Every walk reads back what it needs: the store shows the same tree.
    assert!(store_view(&store) == want);
    assert_eq!(store.chain_count(), live, "all read back");
    // Out again, then changed: a new file, committed, and out again.
    store.evict(0).unwrap();
    assert!(store.chain_count() < 10, "{}", store.chain_count());
    store.write(b"/d2/new", &bytes(700, 9), 5000).unwrap();
    {
        let vol = Volume::open(&*dev).unwrap();
        commit(&vol, &store, &mut m).unwrap();
    }
    store.evict(0).unwrap();
    assert!(store.chain_count() < 10, "{}", store.chain_count());
    let want = store_view(&store);
    assert_eq!(want.len(), 1 + 4 + 4 * 300 + 1);
    clean(&dev.0.lock());
    assert!(reader_view(&dev.0.lock()) == want);
    assert_eq!(store.cache_stats().unwrap().read_errors, 0);
}

/// Walks on several threads that meet the same stubs at once all see the whole tree, and
/// each range is installed once (a second reader of a stub being filled retries).
#[test]
fn threads_reading_back_one_range_at_once_see_the_same_tree() {
    let dev = shared(make());
    import_many(&dev.0.lock(), 2, 300);
    let (store, _) = load_lazy(&dev);
    let want = store_view(&store);
    let live = store.chain_count();
    for _ in 0..4 {
        store.evict(0).unwrap();
        assert!(store.chain_count() < 10);
        std::thread::scope(|s| {
            let walks: Vec<_> = (0..3).map(|_| s.spawn(|| store_view(&store))).collect();
            for w in walks {
                assert!(w.join().unwrap() == want);
            }
        });
        assert_eq!(store.chain_count(), live, "each range read back once");
    }
    assert_eq!(store.cache_stats().unwrap().read_errors, 0);
}

#[test]
fn a_store_with_changes_keeps_its_chains() {
    let dev = shared(make());
    import_many(&dev.0.lock(), 2, 100);
    let (store, _) = load_lazy(&dev);
    store.write(b"/d1/new", &bytes(70, 1), 5000).unwrap();
    assert_eq!(store.evict(0), Err(Error::Busy));
}

fn load_bounded_dev(dev: &Arc<Shared>, chains: usize) -> (Store, Mounted) {
    let vol = Volume::open(&**dev).unwrap();
    let src = Box::new(DevSource::new(Arc::clone(dev), vol.header()));
    load_bounded(
        testhost::host(),
        &vol,
        b"DATA",
        src,
        (64 << 10, chains),
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn a_bounded_load_keeps_its_chains_near_the_budget_and_reads_the_rest_back() {
    let dev = shared(make());
    import_many(&dev.0.lock(), 3, 2000);
    let (full, _) = load_lazy(&dev);
    let live = full.chain_count();
    let want = store_view(&full);
    drop(full);
    // The least budget: 4096 chains, a quarter of the tree.
    let budget = crate::store::evict::MIN_CHAIN_BUDGET;
    assert!(live > 4 * 4096, "{live}");
    let (store, _) = load_bounded_dev(&dev, budget / 2);
    assert_eq!(store.chain_budget(), budget, "raised to the least");
    assert!(
        store.chain_bytes() <= budget,
        "{} chains of {live} left, budget {budget} B",
        store.chain_count()
    );
    assert!(store_view(&store) == want);
    assert_eq!(store.chain_count(), live);
    // A commit's eviction brings it back within its budget.
    store.evict_to(budget).unwrap();
    assert!(store.chain_bytes() <= budget);
}

/// Sync node 1 as a host bounding its chains does: each time a pass ends (converged, or held
/// because a store's chains passed their limit), commit each node that changed (`vols`: each
/// node's device and mount) and evict both stores to half `budget`. The passes made, and the
/// most chains held at once.
fn sync_bounded(
    c: &crate::cluster::Cluster,
    vols: &mut [(&Arc<Shared>, &mut Mounted); 2],
    budget: usize,
) -> (usize, usize) {
    let (mut passes, mut most) = (0, 0);
    while !c.in_sync(1) {
        passes += 1;
        assert!(passes < 400, "no progress");
        let r = c.sync_node(1, &|| false);
        match r {
            Ok(()) | Err(Error::InProgress) => {}
            Err(e) => panic!("{e:?}"),
        }
        let (ms, ss) = (c.store(0).unwrap(), c.store(1).unwrap());
        most = most.max(ms.chain_count() + ss.chain_count());
        for (i, (dev, m)) in vols.iter_mut().enumerate() {
            let store = c.store(i).unwrap();
            if m.changed(store).unwrap() {
                let vol = Volume::open(&***dev).unwrap();
                commit(&vol, store, m).unwrap();
            }
            store.evict_to(budget / 2).unwrap();
        }
    }
    (passes, most)
}

#[test]
fn bounded_stores_sync_a_tree_many_times_their_budget() {
    let (m, s) = (shared(make()), shared(make()));
    import_many(&m.0.lock(), 4, 3000);
    let budget = crate::store::evict::MIN_CHAIN_BUDGET;
    let chains = budget / crate::store::evict::CHAIN_BYTES;
    let (ms, mut mm) = load_bounded_dev(&m, budget);
    let (ss, mut sm) = load_bounded_dev(&s, budget);
    let c = master_and_slave(ms, ss);
    let (passes, most) = sync_bounded(&c, &mut [(&m, &mut mm), (&s, &mut sm)], budget);
    let (master, slave) = (c.store(0).unwrap(), c.store(1).unwrap());
    assert!(passes > 3, "the passes held at the limit: {passes}");
    // Each store at most twice its budget, plus what one chain operation adds.
    assert!(most < 2 * (2 * chains + 1000), "{most} chains at once");
    clean(&s.0.lock());
    let want = reader_view(&m.0.lock());
    assert!(reader_view(&s.0.lock())[1..] == want[1..]);
    // A change on the master resyncs reading back only what it needs.
    master.write(b"/d1/new", &bytes(300, 3), 7000).unwrap();
    let before = (
        master.cache_stats().unwrap().reads,
        slave.cache_stats().unwrap().reads,
    );
    let (_, most) = sync_bounded(&c, &mut [(&m, &mut mm), (&s, &mut sm)], budget);
    let after = (
        master.cache_stats().unwrap().reads,
        slave.cache_stats().unwrap().reads,
    );
    assert!(most < 2 * (2 * chains + 1000), "{most} chains at once");
    // The stubs on the path to the change, not the tree: a small part of what the first
    // sync read.
    assert!(
        (after.0 - before.0) * 50 < before.0 && (after.1 - before.1) * 5 < before.0,
        "blocks read back: {before:?} -> {after:?}"
    );
    clean(&s.0.lock());
    clean(&m.0.lock());
    assert!(reader_view(&s.0.lock())[1..] == reader_view(&m.0.lock())[1..]);
}

/// Directories of a few entries (a blockset of children beside a stub) leave memory with
/// their tables and come back whole: a tree of many small directories is bounded too.
#[test]
fn small_directories_leave_memory_and_come_back_whole() {
    let dev = shared(make());
    import_many(&dev.0.lock(), 800, 6);
    let (full, _) = load_lazy(&dev);
    let (live, want) = (full.chain_count(), store_view(&full));
    drop(full);
    let budget = crate::store::evict::MIN_CHAIN_BUDGET;
    let (store, _) = load_bounded_dev(&dev, budget);
    store.evict_to(budget / 2).unwrap();
    assert!(live > 2 * 4096, "{live}");
    assert!(
        store.chain_bytes() <= budget / 2 && !store.past_chain_limit() && !store.chains_over(),
        "{} chains of {live} left",
        store.chain_count()
    );
    assert!(store_view(&store) == want);
    assert_eq!(store.chain_count(), live);
}
