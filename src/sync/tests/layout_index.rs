//! Convergence of clusters in today's layout ([`Layout::Index`]): DIRENTs are leaves like DATA,
//! the inodes of the PFS root's index are synchronized bottom-up like any inode. Each test runs
//! with both scan modes.

use super::*;
use crate::store::Layout;

fn index_cluster(roles: &[Role], mode: ScanMode) -> Pin<Box<Cluster>> {
    let c = Cluster::with_layout(host(), roles, Layout::Index).unwrap();
    c.set_scan_mode(mode);
    c
}

fn link(c: &Cluster, s: NodeSet, t: &str, p: &str) {
    c.apply(s, FrontendOp::Link(t.as_bytes(), p.as_bytes()))
        .unwrap();
}

fn rm(c: &Cluster, s: NodeSet, p: &str) {
    c.apply(s, FrontendOp::Rm(p.as_bytes())).unwrap();
}

fn nlinks(c: &Cluster, i: usize, p: &str) -> u64 {
    let s = c.store(i).unwrap();
    s.meta(s.resolve(p.as_bytes()).unwrap()).unwrap().nlinks
}

const MODES: [ScanMode; 2] = [ScanMode::Pruned, ScanMode::Original];

#[test]
fn divergent_masters_and_slave_converge_with_hardlinks() {
    for mode in MODES {
        let c = index_cluster(&[M, M, M, S], mode);
        mkdir(&c, all(&c), "/docs");
        write(&c, all(&c), "/docs/readme", b"hello");
        let long = format!("/docs/{}", "n".repeat(100));
        write(&c, set(&[0, 1]), &long, &pattern(70_000, 3));
        write(&c, set(&[0, 1]), "/docs/readme", b"hello, world");
        link(&c, set(&[0, 1]), "/docs/readme", "/readme2");
        write(&c, set(&[2]), "/docs/minority", b"only node 2 has this");
        link(&c, set(&[2]), "/docs/readme", "/minority-link");
        sync_all(&c);
        for i in 1..4 {
            assert_same(&c, 0, i);
        }
        for i in 0..4 {
            assert_eq!(c.read_file(i, b"/readme2").unwrap(), b"hello, world");
            assert_eq!(c.read_file(i, long.as_bytes()).unwrap(), pattern(70_000, 3));
            assert_eq!(nlinks(&c, i, "/docs/readme"), 2, "{mode:?} node {i}");
            assert_eq!(c.stat(i, b"/minority-link").err(), Some(Error::NotFound));
            assert_eq!(c.stat(i, b"/docs/minority").err(), Some(Error::NotFound));
        }
        let s = c.store(3).unwrap();
        assert_eq!(
            s.resolve(b"/readme2").unwrap(),
            s.resolve(b"/docs/readme").unwrap(),
            "one inode under both names on the slave"
        );
    }
}

#[test]
fn rm_of_a_tree_and_of_one_name_reach_every_node() {
    for mode in MODES {
        let c = index_cluster(&[M, M, S], mode);
        mkdir(&c, all(&c), "/a");
        mkdir(&c, all(&c), "/a/b");
        write(&c, all(&c), "/a/b/f", &pattern(200_000, 1));
        write(&c, all(&c), "/keep", b"k");
        link(&c, all(&c), "/a/b/f", "/f2");
        link(&c, all(&c), "/keep", "/a/k2");
        rm(&c, set(&[0, 1]), "/a");
        rm(&c, set(&[0, 1]), "/keep");
        let slave_chains = c.store(2).unwrap().chain_count();
        sync_all(&c);
        assert_same(&c, 0, 2);
        assert!(c.store(2).unwrap().chain_count() < slave_chains);
        assert_eq!(c.read_file(2, b"/f2").unwrap(), pattern(200_000, 1));
        assert_eq!(nlinks(&c, 2, "/f2"), 1);
        assert_eq!(c.stat(2, b"/a").err(), Some(Error::NotFound));
        assert_eq!(c.stat(2, b"/keep").err(), Some(Error::NotFound));
    }
}

#[test]
fn a_node_that_missed_a_creation_gets_the_same_inode_number() {
    let c = index_cluster(&[M, M, M], ScanMode::Pruned);
    write(&c, set(&[0, 1]), "/f", b"one");
    write(&c, all(&c), "/f", b"two");
    mkdir(&c, set(&[2]), "/d");
    mkdir(&c, set(&[0, 1]), "/d");
    let inum = |i: usize, p: &[u8]| {
        let s = c.store(i).unwrap();
        s.meta(s.resolve(p).unwrap()).unwrap().inum
    };
    for i in 0..3 {
        assert_eq!(inum(i, b"/f"), 1024);
        assert_eq!(inum(i, b"/d"), 1025);
    }
    sync_all(&c);
    assert_same(&c, 0, 2);
}
