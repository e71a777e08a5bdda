//! The collector's stepping past a focus, its undecided path beside a failed master, and the
//! merge's comparison of a chain holding the focus's TID (both scan modes).

use super::pruned::{
    assert_node_converges, data_chains, nodes_cluster, stale_master_cluster, Chain,
};
use super::*;

const B: u64 = 1 << 20;

/// Makes node `node`'s worker fail every read of /f's children that starts at key `from` or
/// later (the inode itself and earlier reads still succeed) for as long as it lives.
struct FailChildren;

impl FailChildren {
    fn of(c: &Cluster, node: usize, from: u64) -> FailChildren {
        let s = c.store(node).unwrap();
        let keys = s.key_path(s.resolve(b"/f").unwrap()).unwrap();
        let addr = s as *const Store as usize;
        *pool::test_hook::FAIL_CHILDREN
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((addr, keys, from));
        FailChildren
    }
}

impl Drop for FailChildren {
    fn drop(&mut self) {
        *pool::test_hook::FAIL_CHILDREN
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Serializes the tests that set [`pool::test_hook::FAIL_CHILDREN`] (one hook at a time).
static ONE_HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A master of the focus's quorum whose reads fail right after it answered the focus (a wide
/// chain) does not make the keys a stale master holds inside that range undecided: its
/// answer holds nothing else there (a table's ranges are disjoint), so no quorum can form
/// there whatever it would answer next. The slave converges in one pass and is stamped.
/// Stepping on from the focus's key + 1, as the C's collector does, would take the failed
/// master for a possible holder of the stale key and leave the inode unstamped (in the
/// original scan: the pruned one merges the differing range alone, so that master reads
/// nothing past it and never fails; it must converge all the same).
#[test]
fn a_master_failing_after_a_wide_focus_leaves_the_range_decided() {
    let _one = ONE_HOOK.lock().unwrap_or_else(|e| e.into_inner());
    for mode in [ScanMode::Original, ScanMode::Pruned] {
        let c = stale_master_cluster(mode, &[(B, 4, 50)], &[(B + 5, 0, 30)], &[(B + 5, 0, 30)]);
        let _fail = FailChildren::of(&c, 1, B + 1);
        assert_node_converges(&c, 3, &format!("{mode:?}"));
    }
}

/// A failed master beside a stale master whose wide chain covers the keys the live masters
/// hold: no quorum can be proven there (the live master and the failed one could make one),
/// so the slave's chains in that range are kept, nothing is destroyed, neither /f nor the
/// PFS root is stamped and the pass reports it incomplete. Once the master reads again the
/// slave converges to the quorum.
#[test]
fn a_failed_master_beside_a_stale_wide_chain_leaves_the_slave_undecided() {
    let _one = ONE_HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let masters = [(B, 0, 50), (B + 5, 0, 50)];
    let ours = [(B, 0, 30), (B + 5, 0, 30)];
    for mode in [ScanMode::Original, ScanMode::Pruned] {
        let c = stale_master_cluster(mode, &masters, &[(B, 4, 30)], &ours);
        let before = data_chains(&c, 3);
        let destroyed = c.stats(3).destroyed;
        {
            // Every read past /f's first data block (key 0) fails.
            let _fail = FailChildren::of(&c, 1, 1);
            assert_eq!(
                c.sync_node(3, &|| false),
                Err(Error::InProgress),
                "{mode:?}"
            );
        }
        assert_eq!(
            data_chains(&c, 3),
            before,
            "{mode:?}: the slave's chains are kept"
        );
        assert_eq!(c.stats(3).destroyed, destroyed, "{mode:?}");
        assert_ne!(c.stat(3, b"/f").unwrap().modify_tid, 100, "{mode:?}");
        assert_ne!(root_tid(&c, 3), 100, "{mode:?}");
        assert!(!c.in_sync(3), "{mode:?}");
        assert_node_converges(&c, 3, &format!("{mode:?}, master back"));
    }
}

/// A chain of the slave holding the focus's TID over another key range (narrower or wider
/// than the masters') takes the focus's, in both scan modes: the merge compares keybits too.
/// Comparing TIDs only, the narrower one stayed under a stamped inode, and the wider one was
/// dropped for the masters' chain inside it, losing the key it shared with the focus.
#[test]
fn a_chain_with_the_focus_tid_and_other_keybits_is_replaced() {
    let cases: [(&str, &[Chain], &[Chain]); 3] = [
        ("ours narrower", &[(B, 4, 50)], &[(B, 0, 50)]),
        (
            "ours narrower, another of ours inside",
            &[(B, 4, 50)],
            &[(B, 0, 50), (B + 5, 0, 30)],
        ),
        ("ours wider", &[(B, 0, 50), (B + 5, 0, 50)], &[(B, 4, 50)]),
    ];
    for (name, masters, ours) in cases {
        for mode in [ScanMode::Original, ScanMode::Pruned] {
            let c = nodes_cluster(mode, &[(M, masters, 100), (M, masters, 100), (S, ours, 90)]);
            assert_node_converges(&c, 2, &format!("{name}, {mode:?}"));
        }
    }
}
