//! `sync IMAGE@LABEL ...` end to end: volumes made by `newfs` with one cluster id and filled
//! apart by `import`; after a sync every slave exports exactly what the master exports, every
//! volume is fsck-clean, and a second sync writes nothing. Mismatched cluster ids are refused;
//! `--watch` stops at SIGINT and commits.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
#[path = "common/tree.rs"]
mod tree;
use common::{cli, tmp};
use tree::{assert_same, export, first_diff, fsck_clean};

const CLID: &str = "01234567-89ab-cdef-0123-456789abcdef";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hammer2-synchro"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tree whose contents depend on `seed`; names overlap between seeds, so a slave filled
/// from another seed holds the same names and inode numbers with other contents.
fn make_tree(root: &Path, seed: u32, extra: &str) {
    let mut bytes = common::bytes(seed);
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("small"), bytes(6)).unwrap();
    fs::write(root.join("a/big"), bytes(3 * 65536 + 777)).unwrap();
    fs::write(root.join("a/b/mid"), bytes(600)).unwrap();
    std::os::unix::fs::symlink("../small", root.join("a/link")).unwrap();
    fs::hard_link(root.join("a/big"), root.join("hard")).unwrap();
    fs::write(root.join(format!("{}.txt", "n".repeat(100))), bytes(9)).unwrap();
    for i in 0..40 {
        fs::write(root.join(format!("a/b/f{i}")), bytes(i * 7)).unwrap();
    }
    fs::write(root.join(extra), bytes(1000)).unwrap();
    fs::set_permissions(root.join("small"), fs::Permissions::from_mode(0o600)).unwrap();
}

fn newfs(img: &Path, role: &str, clid: &str) {
    cli(&[
        "newfs",
        s(img),
        "--size",
        "1G",
        "--pfs",
        &format!("DATA:{role}"),
        "--clid",
        clid,
    ]);
}

/// The volume header copy at 0 (the only one of a 1 GiB volume): a commit rewrites it.
fn header(img: &Path) -> Vec<u8> {
    let mut b = vec![0; 65536];
    fs::File::open(img).unwrap().read_exact(&mut b).unwrap();
    b
}

#[test]
fn slaves_filled_apart_take_the_masters_tree_and_a_second_sync_writes_nothing() {
    let d = tmp("three");
    let (m, s1, s2) = (d.join("m.img"), d.join("s1.img"), d.join("s2.img"));
    newfs(&m, "master", CLID);
    newfs(&s1, "slave", CLID);
    newfs(&s2, "slave", CLID);
    make_tree(&d.join("ta"), 1, "only-master");
    make_tree(&d.join("tb"), 2, "only-slave");
    cli(&["import", s(&d.join("ta")), &format!("{}@DATA", s(&m))]);
    cli(&["import", s(&d.join("tb")), &format!("{}@DATA", s(&s1))]);
    // s2 stays as newfs left it: an empty PFS.
    let specs: Vec<String> = [&m, &s1, &s2]
        .iter()
        .map(|p| format!("{}@DATA", s(p)))
        .collect();
    let want = export(&specs[0], &d.join("out-m"));
    assert!(first_diff(&export(&specs[1], &d.join("out-s1")), &want).is_some());

    let mut args = vec!["sync"];
    args.extend(specs.iter().map(|x| x.as_str()));
    let o = cli(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("converged"), "{err}");
    assert!(err.contains("2 of 3 volumes written"), "{err}");
    for (i, img) in [&m, &s1, &s2].iter().enumerate() {
        fsck_clean(img);
        assert_same(
            &export(&specs[i], &d.join(format!("out{i}"))),
            &want,
            &specs[i],
        );
    }

    let before: Vec<Vec<u8>> = [&m, &s1, &s2].iter().map(|p| header(p)).collect();
    let o = cli(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("0 of 3 volumes written"), "{err}");
    let after: Vec<Vec<u8>> = [&m, &s1, &s2].iter().map(|p| header(p)).collect();
    assert_eq!(before, after, "a sync with nothing to do committed");
    fs::remove_dir_all(&d).unwrap();
}

/// A master volume filled from a tree of `seed` and an empty slave volume, in `d`: their
/// `IMAGE@DATA` specs and image paths.
fn master_and_slave(d: &Path, seed: u32) -> (String, String, PathBuf, PathBuf) {
    let (m, sl) = (d.join("m.img"), d.join("s.img"));
    newfs(&m, "master", CLID);
    newfs(&sl, "slave", CLID);
    let t = d.join(format!("t{seed}"));
    make_tree(&t, seed, "x");
    cli(&["import", s(&t), &format!("{}@DATA", s(&m))]);
    (format!("{}@DATA", s(&m)), format!("{}@DATA", s(&sl)), m, sl)
}

#[test]
fn a_change_on_the_master_reaches_the_slave() {
    let d = tmp("change");
    let (ms, ss, _, sl) = master_and_slave(&d, 3);
    cli(&["sync", &ms, &ss]);
    // The master moves on (a new import replaces its tree), the slave follows.
    make_tree(&d.join("t2"), 4, "y");
    fs::remove_file(d.join("t2/a/b/f3")).unwrap();
    cli(&["import", "--replace", s(&d.join("t2")), &ms]);
    cli(&["sync", &ss, &ms]);
    fsck_clean(&sl);
    assert_same(
        &export(&ss, &d.join("o-s")),
        &export(&ms, &d.join("o-m")),
        &ss,
    );
    fs::remove_dir_all(&d).unwrap();
}

/// The `(peak KiB, budget KiB, KiB read on demand, changed KiB held at most)` of `spec`'s
/// data cache line.
fn cache_line(err: &str, spec: &str) -> (u64, u64, u64, u64) {
    let line = err
        .lines()
        .find(|l| l.starts_with(&format!("sync: {spec}: data cache: ")))
        .unwrap_or_else(|| panic!("no cache line for {spec}: {err}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    // ... peak P KiB of B KiB, R blocks / K KiB read on demand, changed data held at most H KiB
    let k = n.len();
    (n[k - 5], n[k - 4], n[k - 2], n[k - 1])
}

/// 6 MiB of file data synced with a data cache of 1 MiB per volume: every block is read on
/// demand, neither cache holds more than 1 MiB, the slave's changed data is written back
/// whenever it passes 1 MiB and never passes 2 MiB and a block (its sync holds there until
/// the write-back), its data blocks are written ahead of each commit, and the slave exports
/// the master's tree.
#[test]
fn a_sync_with_a_small_cache_reads_data_on_demand_within_it() {
    let d = tmp("cache");
    let (ms, ss, m, sl) = master_and_slave(&d, 8);
    let t = d.join("big");
    fs::create_dir_all(&t).unwrap();
    fs::write(t.join("six"), common::bytes(9)(6 << 20)).unwrap();
    cli(&["import", "--replace", s(&t), &ms]);
    // Reads slowed down, so the sync lasts long enough for the write-backs to be seen.
    let o = cli(&[
        "sync",
        "--cache-mib",
        "1",
        "--stall-reads-us",
        "5000",
        &ms,
        &ss,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    let (peak, budget, read, _) = cache_line(&err, &ms);
    assert_eq!(budget, 1024, "{err}");
    assert!(peak <= budget && read >= 6 << 10, "{err}");
    let (peak, _, _, held) = cache_line(&err, &ss);
    assert!(peak <= budget, "{err}");
    assert!(
        err.contains("changed data past the cache budget: committing"),
        "{err}"
    );
    assert!(
        held <= (2 << 10) + 64,
        "the 6 MiB were written back on the way: {err}"
    );
    // The slave's data went to its volume while the passes ran, ahead of each commit.
    assert!(
        err.contains("data blocks / ") && err.contains("written ahead"),
        "{err}"
    );
    fsck_clean(&sl);
    fsck_clean(&m);
    assert_same(
        &export(&ss, &d.join("o-s")),
        &export(&ms, &d.join("o-m")),
        &ss,
    );
    let o = bin()
        .args(["sync", "--cache-mib", "lots", &ms, &ss])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    fs::remove_dir_all(&d).unwrap();
}

/// A byte flipped in a data block of the master: the sync cannot converge, and says why:
/// the failed reads, the volume and the block, in the timeout's message and in the cache
/// report (not only in a debug log). `--cache-mib 0` is a usage error.
#[test]
fn a_damaged_data_block_is_named_when_the_sync_gives_up() {
    let d = tmp("eio");
    let (ms, ss, m, _) = master_and_slave(&d, 5);
    let tree = String::from_utf8(cli(&["show", "--blockrefs", s(&m)]).stdout).unwrap();
    let line = tree
        .lines()
        .find(|l| l.trim_start().starts_with("data key "))
        .unwrap_or_else(|| panic!("no data block: {tree}"));
    let off = line.split("data_off 0x").nth(1).unwrap();
    let off = u64::from_str_radix(&off[..16], 16).unwrap() & !0x3f;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&m).unwrap();
        f.seek(SeekFrom::Start(off + 10)).unwrap();
        f.write_all(b"flipped").unwrap();
    }
    let o = bin()
        .args(["sync", "--timeout", "2", &ms, &ss])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let named = format!("data block reads failed (I/O error or damaged block), the last of the block at offset {off:#x}");
    let last = err.lines().last().unwrap();
    assert!(
        last.contains("not converged")
            && last.contains(&format!("{ms}: "))
            && last.contains(&named),
        "{err}"
    );
    assert!(
        err.contains(&format!("sync: {ms}: "))
            && err.contains("the files that need it cannot sync"),
        "{err}"
    );
    assert!(err.contains(&format!("sync: {ms}: data cache: ")), "{err}");
    let o = bin()
        .args(["sync", "--cache-mib", "0", &ms, &ss])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    fs::remove_dir_all(&d).unwrap();
}

/// `sync A@DATA B@DATA`, which must fail with status 1: its stderr.
fn sync_fails(a: &Path, b: &Path) -> String {
    let o = bin()
        .args(["sync", &format!("{}@DATA", s(a)), &format!("{}@DATA", s(b))])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    err
}

#[test]
fn nodes_of_other_clusters_are_refused() {
    let d = tmp("clid");
    let (m, sl) = (d.join("m.img"), d.join("s.img"));
    newfs(&m, "master", CLID);
    newfs(&sl, "slave", "fedcba98-7654-3210-fedc-ba9876543210");
    let before = header(&sl);
    let err = sync_fails(&m, &sl);
    assert!(err.contains("cluster id") && err.contains(CLID), "{err}");
    assert_eq!(header(&sl), before);
    // Two masters filled apart under the same TIDs: no quorum can order them.
    let m2 = d.join("m2.img");
    newfs(&m2, "master", CLID);
    make_tree(&d.join("t1"), 6, "p");
    make_tree(&d.join("t2"), 7, "q");
    cli(&["import", s(&d.join("t1")), &format!("{}@DATA", s(&m))]);
    cli(&["import", s(&d.join("t2")), &format!("{}@DATA", s(&m2))]);
    let err = sync_fails(&m, &m2);
    assert!(err.contains("different trees under the same TIDs"), "{err}");
    // The same volume twice, and no IMAGE@LABEL, are usage errors.
    let spec = format!("{}@DATA", s(&m));
    let o = bin().args(["sync", &spec, &spec]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = bin().args(["sync"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = bin().args(["sync", "--help"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--watch"));
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn watch_runs_until_sigint_then_stops_and_commits() {
    let d = tmp("watch");
    let (ms, ss, _, sl) = master_and_slave(&d, 5);
    let mut child = bin()
        .args(["sync", "--watch", &ms, &ss])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Read until converged and one status line, then interrupt.
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !(seen.contains("converged") && seen.contains("in sync")) {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "sync --watch ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "--watch did not keep running"
    );
    // Another writer of the slave's volume meanwhile is refused (it would commit into
    // space the sync's next commit takes); a reader is not.
    let t = d.join("other");
    fs::create_dir_all(&t).unwrap();
    let o = bin()
        .args(["import", "--replace", s(&t), &ss])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("in use by another writer"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    export(&ss, &d.join("o-during"));
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    stderr.read_to_string(&mut seen).unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "{seen}");
    assert!(
        seen.contains("interrupted") && seen.contains("1 of 2 volumes written"),
        "{seen}"
    );
    fsck_clean(&sl);
    assert_same(
        &export(&ss, &d.join("o-s")),
        &export(&ms, &d.join("o-m")),
        &ss,
    );
    fs::remove_dir_all(&d).unwrap();
}

/// A slave too small for the master's data: writing ahead runs out of space, the commit
/// then falls back to a plain one, which fails too; the sync says so and exits 1, and the
/// slave keeps its last commit, fsck-clean.
#[test]
fn a_slave_too_small_keeps_its_last_commit() {
    let d = tmp("full");
    let (m, sl) = (d.join("m.img"), d.join("s.img"));
    newfs(&m, "master", CLID);
    cli(&[
        "newfs",
        s(&sl),
        "--size",
        "64M",
        "--pfs",
        "DATA:slave",
        "--clid",
        CLID,
    ]);
    let t = d.join("t");
    fs::create_dir_all(&t).unwrap();
    for i in 0..3 {
        fs::write(t.join(format!("f{i}")), common::bytes(i + 1)(30 << 20)).unwrap();
    }
    let (ms, ss) = (format!("{}@DATA", s(&m)), format!("{}@DATA", s(&sl)));
    cli(&["import", s(&t), &ms]);
    let before = header(&sl);
    let o = bin()
        .args(["sync", "--timeout", "60", &ms, &ss])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no space"), "{err}");
    assert_eq!(before, header(&sl), "{err}");
    fsck_clean(&sl);
    fs::remove_dir_all(&d).unwrap();
}
