//! `export` of PFS DATA from each real volume of `../shared/fixtures/hammer2/` gives back the
//! tree of the fixtures' MANIFEST, read from the host filesystem: types, modes, sizes, sha256,
//! symlink targets, hardlinks (same host inode); `ls` shows the PFSs; `fsck` passes them; each
//! serves as the master a fresh slave volume syncs from. Run by
//! `make fixtures-test`; `H2_FIXTURES=DIR` points elsewhere.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("H2_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/hammer2"),
    }
}

/// `hammer2-synchro export IMG@DATA OUT`, its exit status and stderr.
fn export(img: &Path, out: &Path) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_hammer2-synchro"))
        .arg("export")
        .arg(format!("{}@DATA", img.display()))
        .arg(out)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// MANIFEST lines of the tree under `root`, as the fixtures README defines them.
fn manifest(root: &Path) -> String {
    let mut rows: Vec<(String, String, Option<u64>)> = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
            let md = std::fs::symlink_metadata(&p).unwrap();
            let mode = format!("0o{:o}", md.mode() & 0o7777);
            if md.is_dir() {
                rows.push((rel.clone(), format!("d {mode} - - {rel}"), None));
                stack.push(p);
            } else if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                rows.push((
                    rel.clone(),
                    format!("l {mode} - - {rel} -> {}", t.display()),
                    None,
                ));
            } else {
                let bytes = std::fs::read(&p).unwrap();
                let hex: String = Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let line = format!("f {mode} {} {hex} {rel}", bytes.len());
                rows.push((rel, line, (md.nlink() > 1).then_some(md.ino())));
            }
        }
    }
    rows.sort();
    let mut tags: BTreeMap<u64, usize> = BTreeMap::new();
    let mut out = String::new();
    for (_, line, ino) in rows {
        out.push_str(&line);
        if let Some(ino) = ino {
            let next = tags.len() + 1;
            out.push_str(&format!(" [link{}]", tags.entry(ino).or_insert(next)));
        }
        out.push('\n');
    }
    out
}

/// Fixture `name` unpacked (sparse) into `tmp`.
fn unpack(src: &Path, name: &str, tmp: &Path) -> PathBuf {
    let img = tmp.join(format!("{name}.img"));
    let st = Command::new("zstd")
        .args(["-q", "-d", "-f", "--sparse"])
        .arg(src.join(format!("{name}.img.zst")))
        .arg("-o")
        .arg(&img)
        .status()
        .expect("zstd");
    assert!(st.success());
    img
}

#[test]
fn export_reproduces_the_manifest() {
    let src = fixtures_dir();
    let want = std::fs::read_to_string(src.join("MANIFEST")).expect("fixtures MANIFEST");
    let tmp = std::env::temp_dir().join(format!("h2-cli-export-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for name in ["t-lz4", "t-zlib", "t-none"] {
        let img = unpack(&src, name, &tmp);
        let o = Command::new(env!("CARGO_BIN_EXE_hammer2-synchro"))
            .arg("ls")
            .arg(&img)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0));
        let ls = String::from_utf8_lossy(&o.stdout);
        assert!(ls.contains("\nDATA ") && ls.contains("\nLOCAL "), "{ls}");
        let o = Command::new(env!("CARGO_BIN_EXE_hammer2-synchro"))
            .arg("fsck")
            .arg(&img)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{report}");
        assert!(
            report.contains("0 at 0x0: valid, mirror_tid 0x11, in use"),
            "{report}"
        );
        assert!(report.ends_with(": clean\n"), "{report}");
        let out = tmp.join(format!("{name}-out"));
        let (code, err) = export(&img, &out);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(manifest(&out), want, "{name}");
        // A second export into the now non-empty directory is refused.
        let (code, err) = export(&img, &out);
        assert_eq!(code, Some(1));
        assert!(err.contains("not empty"), "{err}");
        std::fs::remove_dir_all(&out).unwrap();
        std::fs::remove_file(&img).unwrap();
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// Each fixture's DATA as the master of a fresh slave volume (newfs with the fixture's cluster
/// id): after `sync` the slave exports the MANIFEST's tree (compressed blocks copied as
/// stored), is fsck-clean, and the master is not written.
#[test]
fn a_fresh_slave_syncs_from_each_fixture() {
    let src = fixtures_dir();
    let want = std::fs::read_to_string(src.join("MANIFEST")).expect("fixtures MANIFEST");
    let tmp = std::env::temp_dir().join(format!("h2-cli-syncfx-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let bin = || Command::new(env!("CARGO_BIN_EXE_hammer2-synchro"));
    for name in ["t-lz4", "t-zlib", "t-none"] {
        let img = unpack(&src, name, &tmp);
        let o = bin().arg("ls").arg(&img).output().unwrap();
        let ls = String::from_utf8_lossy(&o.stdout).into_owned();
        let clid = ls
            .lines()
            .find(|l| l.starts_with("DATA "))
            .and_then(|l| l.split(" pfs_clid ").nth(1))
            .unwrap_or_else(|| panic!("no DATA clid in {ls}"))
            .to_string();
        let master_before = std::fs::read(&img).unwrap();
        let slave = tmp.join(format!("{name}-slave.img"));
        let o = bin()
            .arg("newfs")
            .arg(&slave)
            .args(["--size", "1G", "--pfs", "DATA:slave", "--clid", &clid])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = bin()
            .arg("sync")
            .arg(format!("{}@DATA", img.display()))
            .arg(format!("{}@DATA", slave.display()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(err.contains("1 of 2 volumes written"), "{err}");
        assert!(
            std::fs::read(&img).unwrap() == master_before,
            "{name}: the master was written"
        );
        let o = bin().arg("fsck").arg(&slave).output().unwrap();
        let report = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{report}");
        let out = tmp.join(format!("{name}-slave-out"));
        let (code, err) = export(&slave, &out);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(manifest(&out), want, "{name}");
        std::fs::remove_dir_all(&out).unwrap();
        std::fs::remove_file(&img).unwrap();
        std::fs::remove_file(&slave).unwrap();
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}
