//! Clean ranges of a volume-backed store's tables out of memory and read back on demand.

use alloc::sync::Arc;

use super::*;
use crate::mount::payload::DevSource;
use crate::volume::BlockDev;

/// A [`SparseDev`] several threads may read.
struct Shared(spin::Mutex<SparseDev>);

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

fn shared(dev: SparseDev) -> Arc<Shared> {
    Arc::new(Shared(spin::Mutex::new(dev)))
}

fn load_lazy(dev: &Arc<Shared>) -> (Store, Mounted) {
    let vol = Volume::open(&**dev).unwrap();
    let src = Box::new(DevSource::new(Arc::clone(dev), vol.header()));
    load_cached(testhost::host(), &vol, b"DATA", src, 64 << 10, &mut |_| {}).unwrap()
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
    let budget = 500 * crate::store::evict::CHAIN_BYTES;
    let (store, _) = load_bounded_dev(&dev, budget);
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
