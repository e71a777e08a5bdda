//! The memory overheads `--memory` reports, measured here alone in their own process (the
//! counting allocator is process-wide), with bounds that catch a regression: a chain costing
//! more than a few hundred bytes beyond its payload, or a scan worker's FIFO growing.

use hammer2_synchro_bench::alloc_count::{installed, CountingAlloc};
use hammer2_synchro_bench::memory;

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

#[test]
fn chain_and_worker_overheads_stay_small() {
    assert!(installed());
    let m = memory::measure(256).expect("measure");
    // An empty file: its 1 KiB inode, a header and a slot in the PFS root's index, and its
    // DIRENT chain (a header and a slot, no data block) in the directory.
    assert!(
        (1024..3072).contains(&m.inode_chain),
        "{} B per inode chain",
        m.inode_chain
    );
    // A DATA chain: header, slot and its file's block-table entry, not another block.
    assert!(m.data_chain < 1024, "{} B per DATA chain", m.data_chain);
    // Each cluster of one more node costs more: its store, its pool, more workers.
    assert!(m.cluster.windows(2).all(|w| w[1] > w[0]), "{:?}", m.cluster);
    // One FIFO of 16 blockrefs and a thread handle per worker; pools sized to the cluster, so
    // one node costs no FIFOs for nodes that do not exist.
    let w = m.worker().expect("worker");
    assert!((1024..4096).contains(&w), "{w} B per worker");
    assert!(m.cluster[0] < 16 * 1024, "{} B for one node", m.cluster[0]);
}
