//! `newfs`, `import`, `export`, `fsck` end to end: a generated host tree imported into a
//! fresh volume and exported again must come back exactly (names, types, contents, holes
//! read as zeros, symlink targets, hardlinks, permission bits, modification times), and
//! the volume must be fsck-clean; a second import replaces the first.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{cli, tmp};

/// A tree with every kind of object import handles; `seed` varies contents.
fn make_tree(root: &Path, seed: u32) {
    let mut bytes = common::bytes(seed);
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("small"), b"hello\n").unwrap();
    fs::write(root.join("exact512"), bytes(512)).unwrap();
    fs::write(root.join("a/513"), bytes(513)).unwrap();
    fs::write(root.join("a/b/big"), bytes(9 * 65536 + 12345)).unwrap();
    let mut holey = bytes(70_000);
    holey.extend(vec![0; 3 * 65536]);
    holey.extend(bytes(10));
    fs::write(root.join("a/holey"), holey).unwrap();
    fs::write(root.join("a/b/c/zeros"), vec![0; 100_000]).unwrap();
    std::os::unix::fs::symlink("../small", root.join("a/link")).unwrap();
    std::os::unix::fs::symlink("t".repeat(700), root.join("a/longlink")).unwrap();
    fs::hard_link(root.join("a/b/big"), root.join("hard")).unwrap();
    fs::write(root.join(format!("{}.txt", "n".repeat(200))), b"long name").unwrap();
    for i in 0..300 {
        fs::write(root.join(format!("a/b/f{i}")), format!("{i}\n")).unwrap();
    }
    fs::set_permissions(root.join("small"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    // Times an export cannot hit by chance: a symlink's own, set without following it.
    for (link, secs) in [("a/link", 1_000_000_000), ("a/longlink", 1_234_567_890)] {
        let st = Command::new("touch")
            .args(["-h", "-d", &format!("@{secs}")])
            .arg(root.join(link))
            .status()
            .unwrap();
        assert!(st.success());
    }
}

/// Every object under `root`: relative path → (kind, mode, mtime (of a symlink itself too),
/// contents or target, inode group for hardlinks).
fn snapshot(root: &Path) -> HashMap<PathBuf, (char, u32, i64, Vec<u8>, u64)> {
    let mut out = HashMap::new();
    let mut inodes: HashMap<u64, u64> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap()).collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let group = inodes.len() as u64;
            let group = *inodes.entry(m.ino()).or_insert(group);
            let (kind, data) = if m.is_dir() {
                stack.push(p.clone());
                ('d', Vec::new())
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                ('l', t.into_os_string().into_encoded_bytes())
            } else {
                ('f', fs::read(&p).unwrap())
            };
            let mode = if kind == 'l' { 0 } else { m.mode() & 0o7777 };
            let mtime = if kind == 'd' { 0 } else { m.mtime() };
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            out.insert(rel, (kind, mode, mtime, data, group));
        }
    }
    out
}

#[test]
fn import_then_export_reproduces_the_tree() {
    let d = tmp("rt");
    let img = d.join("img");
    let img_s = img.to_str().unwrap();
    let spec = format!("{img_s}@DATA");
    cli(&[
        "newfs",
        img_s,
        "--size",
        "256M",
        "--pfs",
        "DATA:master",
        "--pfs",
        "OTHER:slave",
    ]);
    for seed in [1, 2] {
        let src = d.join(format!("src{seed}"));
        make_tree(&src, seed);
        // The second import replaces the first: the PFS holds something by then.
        cli(&["import", "--replace", src.to_str().unwrap(), &spec]);
        let fsck = cli(&["fsck", img_s]);
        assert!(String::from_utf8_lossy(&fsck.stdout).contains("clean"));
        let out = d.join(format!("out{seed}"));
        cli(&["export", &spec, out.to_str().unwrap()]);
        assert_eq!(snapshot(&src), snapshot(&out), "seed {seed}");
    }
    let ls = cli(&["ls", img_s]);
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(
        text.contains("DATA pfs_type 6") && text.contains("OTHER pfs_type 3"),
        "{text}"
    );
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn write_commands_refuse_bad_input() {
    let d = tmp("bad");
    let img = d.join("img");
    let img_s = img.to_str().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hammer2-synchro"))
            .args(args)
            .output()
            .unwrap()
    };
    assert_eq!(
        run(&["newfs", img_s, "--size", "64M"]).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&["newfs", img_s, "--size", "64M", "--pfs", "A:boss"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&["newfs", img_s, "--size", "1M", "--pfs", "A:master"])
            .status
            .code(),
        Some(1)
    );
    cli(&["newfs", img_s, "--size", "64M", "--pfs", "A:master"]);
    let missing = format!("{img_s}@NOPE");
    assert_eq!(
        run(&["import", d.to_str().unwrap(), &missing])
            .status
            .code(),
        Some(1)
    );
    // A tree larger than the volume: ENOSPC, and the volume is as it was.
    let src = d.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("huge"), vec![7u8; 48 << 20]).unwrap();
    let spec = format!("{img_s}@A");
    let r = run(&["import", src.to_str().unwrap(), &spec]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("no space"));
    cli(&["fsck", img_s]);
    let _ = fs::remove_dir_all(&d);
}
