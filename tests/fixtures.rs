//! The volume reader on real HAMMER2 volumes: the three images of `../shared/fixtures/hammer2/`
//! (written by kusumi/makefs, which carries DragonFly's own HAMMER2 code; LZ4, zlib and
//! uncompressed data). For each: PFS `DATA` walked and printed as the fixtures' MANIFEST
//! (type, mode, size, sha256, symlink target, hardlinks), every reachable block's check code
//! verified, today's layout facts checked (docs/HAMMER2-FACTS.md, "Today's layout"), `fsck`
//! clean and naming the block of a flipped byte; then
//! damaged copies (flipped bytes, a truncated image, a wrong magic, an out-of-range
//! blockref) must give clean errors.
//!
//! Needs the fixtures, so it is its own target: `make fixtures-test` (which `.ci/run` calls
//! when the folder exists); `cargo test` without `--features fixtures` does not build it.
//! `H2_FIXTURES=DIR` points elsewhere.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hammer2_synchro::media::volhdr::seal;
use hammer2_synchro::media::MediaError;
use hammer2_synchro::media::{
    dirhash, InodeData, COMP_LZ4, COMP_NONE, COMP_ZLIB, DIRHASH_HIMASK, DIRHASH_LOMASK,
    DIRHASH_VISIBLE, OBJTYPE_DIRECTORY, OBJTYPE_REGFILE, OBJTYPE_SOFTLINK, PFSTYPE_MASTER,
    PFSTYPE_SUPROOT,
};
use hammer2_synchro::volume::{
    fsck, BlockDev, Cause, Flow, FsckOptions, Pfs, Problem, ReadError, Volume,
};
use hammer2_synchro::Error;
use sha2::{Digest, Sha256};

const IMAGES: [&str; 3] = ["t-lz4", "t-zlib", "t-none"];

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("H2_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/hammer2"),
    }
}

/// The decompressed images in a temporary directory, removed when dropped.
struct Images(PathBuf);

impl Images {
    /// Unpack into a directory of its own for test `tag` (tests run in parallel).
    fn unpack(tag: &str) -> Images {
        let src = fixtures_dir();
        assert!(
            src.join("MANIFEST").is_file(),
            "no fixtures at {} (set H2_FIXTURES)",
            src.display()
        );
        let dir = std::env::temp_dir().join(format!("h2-fixtures-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in IMAGES {
            let out = dir.join(format!("{name}.img"));
            let st = Command::new("zstd")
                .args(["-q", "-d", "-f", "--sparse"])
                .arg(src.join(format!("{name}.img.zst")))
                .arg("-o")
                .arg(&out)
                .status()
                .expect("zstd (apt-get install zstd)");
            assert!(st.success(), "zstd failed on {name}");
        }
        Images(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.img"))
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An image file as a block device, optionally damaged on the fly (a copy that never
/// touches the file): `flips` xor bytes at offsets, `size` truncates.
struct FileDev {
    file: File,
    size: u64,
    flips: Vec<(u64, u8)>,
}

impl FileDev {
    fn open(path: &Path) -> FileDev {
        let file = File::open(path).unwrap();
        let size = file.metadata().unwrap().len();
        FileDev {
            file,
            size,
            flips: Vec::new(),
        }
    }
}

impl BlockDev for FileDev {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> hammer2_synchro::Result<()> {
        let end = off.checked_add(buf.len() as u64).ok_or(Error::Io)?;
        if end > self.size {
            return Err(Error::Io);
        }
        self.file.read_exact_at(buf, off).map_err(|_| Error::Io)?;
        for &(at, x) in &self.flips {
            if (off..end).contains(&at) {
                buf[(at - off) as usize] ^= x;
            }
        }
        Ok(())
    }
}

fn sha256(pfs: &Pfs, vol: &Volume<FileDev>, ino: &InodeData) -> (u64, String) {
    let mut h = Sha256::new();
    let mut n = 0u64;
    pfs.read_file(vol, ino, &mut |p| {
        h.update(p);
        n += p.len() as u64;
        Ok(())
    })
    .unwrap();
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    (n, hex)
}

/// PFS `DATA` printed as MANIFEST lines, checking the layout facts on the way.
fn manifest_of(vol: &Volume<FileDev>) -> String {
    let pfs = vol.pfs(b"DATA").unwrap();
    // (path, line without the link tag, inum of a file)
    let mut rows: Vec<(String, String, Option<u64>)> = Vec::new();
    let mut names_of: BTreeMap<u64, usize> = BTreeMap::new();
    let mut parents: Vec<(u64, u64, u64)> = Vec::new();
    let mut stack = vec![(String::new(), pfs.root)];
    while let Some((dir_path, dir)) = stack.pop() {
        let mut entries = Vec::new();
        pfs.readdir(vol, &dir, &mut |e| {
            entries.push(e.clone());
            Ok(Flow::Continue)
        })
        .unwrap();
        for e in entries {
            let name = String::from_utf8(e.name.to_vec()).unwrap();
            // Keys: dirhash of the name with bit 63 set, a non-zero collision iterator.
            assert_eq!(e.key & DIRHASH_HIMASK, dirhash(&e.name) & DIRHASH_HIMASK);
            assert_ne!(e.key & DIRHASH_VISIBLE, 0);
            assert_ne!(
                e.key & DIRHASH_LOMASK,
                0,
                "{name}: kernel-made keys end in 8001+"
            );
            let ino = pfs.inode(vol, e.inum).unwrap();
            let m = &ino.meta;
            assert_eq!(m.objtype, e.objtype, "{name}: dirent type = inode type");
            // Index inodes: name_key = inum, filename "0x%016x" of it, iparent = the dir.
            assert_eq!(m.inum, e.inum);
            assert_eq!(m.name_key, m.inum, "{name}: name_key");
            assert_eq!(ino.filename(), format!("0x{:016x}", m.inum).as_bytes());
            // iparent names the directory of one name (the first); a hardlink's other
            // names sit elsewhere.
            if m.nlinks == 1 {
                assert_eq!(m.iparent, dir.meta.inum, "{name}: iparent");
            } else {
                parents.push((m.inum, m.iparent, dir.meta.inum));
            }
            assert!(m.inum >= 1024 && m.inum < pfs.root.meta.pfs_inum);
            let path = format!("{dir_path}/{name}");
            let mode = format!("0o{:o}", m.mode & 0o7777);
            match m.objtype {
                OBJTYPE_DIRECTORY => {
                    assert_eq!((m.nlinks, m.size), (1, 0), "{path}");
                    rows.push((path.clone(), format!("d {mode} - - {path}"), None));
                    stack.push((path, ino));
                }
                OBJTYPE_REGFILE => {
                    assert_eq!(m.is_directdata(), m.size <= 512, "{path}: DIRECTDATA");
                    let (n, hex) = sha256(&pfs, vol, &ino);
                    assert_eq!(n, m.size);
                    *names_of.entry(m.inum).or_default() += 1;
                    let line = format!("f {mode} {} {hex} {path}", m.size);
                    rows.push((path, line, Some(m.inum)));
                }
                OBJTYPE_SOFTLINK => {
                    let target = pfs.readlink(vol, &ino).unwrap();
                    let target = String::from_utf8(target).unwrap();
                    let line = format!("l {mode} - - {path} -> {target}");
                    rows.push((path, line, None));
                }
                t => panic!("{path}: unexpected type {t}"),
            }
        }
    }
    rows.sort();
    for &(inum, iparent, _) in &parents {
        let dirs: Vec<u64> = parents
            .iter()
            .filter(|p| p.0 == inum)
            .map(|p| p.2)
            .collect();
        assert!(
            dirs.contains(&iparent),
            "{inum:#x}: iparent {iparent} not among {dirs:?}"
        );
    }
    // Hardlinks: one inode under several names, counted in nlinks, tagged in path order.
    let mut tags: BTreeMap<u64, usize> = BTreeMap::new();
    let mut out = String::new();
    for (_, line, inum) in &rows {
        out.push_str(line);
        if let Some(inum) = inum {
            let names = names_of[inum];
            let nlinks = pfs.inode(vol, *inum).unwrap().meta.nlinks;
            assert_eq!(nlinks, names as u64, "{line}: nlinks = names");
            if names > 1 {
                let next = tags.len() + 1;
                let tag = *tags.entry(*inum).or_insert(next);
                out.push_str(&format!(" [link{tag}]"));
            }
        }
        out.push('\n');
    }
    out
}

#[test]
fn fixtures() {
    let images = Images::unpack("manifest");
    let want = std::fs::read_to_string(fixtures_dir().join("MANIFEST")).unwrap();
    for name in IMAGES {
        let vol = Volume::open(FileDev::open(&images.path(name))).unwrap();
        let h = vol.header();
        // One 2 GiB volume: only the copy at 0 fits.
        assert_eq!(
            (vol.zone(), h.volu_size, h.nvolumes),
            (0, 2 << 30, 1),
            "{name}"
        );
        let sroot = vol.super_root().unwrap();
        assert_eq!(sroot.meta.pfs_type, PFSTYPE_SUPROOT);
        assert_eq!((sroot.meta.inum, sroot.filename()), (0, &b"SUPROOT"[..]));
        let mut labels = Vec::new();
        vol.pfs_roots(&mut |p| {
            assert!(p.meta.is_pfsroot());
            assert_eq!(p.meta.pfs_type, PFSTYPE_MASTER);
            assert_eq!(p.meta.name_key, dirhash(p.filename()));
            labels.push(String::from_utf8(p.filename().to_vec()).unwrap());
            Ok(Flow::Continue)
        })
        .unwrap();
        labels.sort();
        assert_eq!(labels, ["DATA", "LOCAL"], "{name}");
        // Each image's data blocks use its compression; an all-zero block is a hole where
        // compression is on (HAMMER2 stores none), written out where it is off.
        let pfs = vol.pfs(b"DATA").unwrap();
        let methods = |path: &[u8]| {
            let ino = pfs.resolve(&vol, path).unwrap();
            let mut m = Vec::new();
            let set = ino.blockset().unwrap();
            vol.scan(&set, 0, u64::MAX, &mut |b| {
                m.push(b.comp_method());
                Ok(Flow::Continue)
            })
            .unwrap();
            m
        };
        let text = methods(b"docs/compressible.txt");
        let zeros = methods(b"docs/zeros-128k");
        println!("{name}: compressible.txt {text:?}, zeros-128k {zeros:?}");
        let want_comp = match name {
            "t-lz4" => COMP_LZ4,
            "t-zlib" => COMP_ZLIB,
            _ => COMP_NONE,
        };
        assert_eq!(text.len(), 36, "{name}: 2,320,000 bytes in 64 KiB blocks");
        assert!(text.iter().all(|&m| m == want_comp), "{name}: {text:?}");
        if want_comp == COMP_NONE {
            assert_eq!(zeros, [COMP_NONE, COMP_NONE], "{name}");
        } else {
            assert!(zeros.is_empty(), "{name}: {zeros:?}");
        }
        let got = manifest_of(&vol);
        assert_eq!(got, want, "{name}: MANIFEST");
        let r = vol.verify_all().unwrap();
        println!("{name}: {r:?}");
        assert!(r.indirect > 0 && r.data > 0, "{name}: {r:?}");
        // Names of 65 and 200 bytes sit in data blocks; 64 bytes in the check area.
        assert_eq!(r.name_blocks, 2, "{name}: {r:?}");
        assert_eq!(r.dirents, want.lines().count() as u64, "{name}: {r:?}");
    }
}

#[test]
fn fsck_passes_the_images_and_names_damage() {
    let images = Images::unpack("fsck");
    for name in IMAGES {
        let path = images.path(name);
        let r = fsck(FileDev::open(&path), FsckOptions::default()).unwrap();
        assert!(r.is_clean(), "{name}: {:?}", r.findings);
        assert_eq!(r.zone, Some(0), "{name}");
        assert_eq!(r.freemap_leaves, 1, "{name}");
        let v = Volume::open(FileDev::open(&path))
            .unwrap()
            .verify_all()
            .unwrap();
        let counts = (r.inodes, r.indirect, r.data, r.dirents);
        assert_eq!(counts, (v.inodes, v.indirect, v.data, v.dirents), "{name}");
    }
    let path = images.path("t-lz4");
    let vol = Volume::open(FileDev::open(&path)).unwrap();
    let blocks = reachable_blocks(&vol);
    let leaf = hammer2_synchro::media::freemap::decode_bref(&vol.header().freemap_blockset[0])
        .unwrap()
        .data_off;
    drop(vol);
    let damaged = |at: u64| {
        let mut dev = FileDev::open(&path);
        dev.flips.push((at, 0x10));
        fsck(dev, FsckOptions::default()).unwrap()
    };
    // A flipped byte in a block: one finding, naming it.
    let (off, len) = blocks[blocks.len() / 2];
    let r = damaged(off + len as u64 / 2);
    assert_eq!(r.findings_total, 1, "{:?}", r.findings);
    let f = r.findings[0];
    assert_eq!(
        f.problem,
        Problem::Tree(Cause::Media(MediaError::CheckMismatch))
    );
    assert_eq!(f.at & !0x3F, off);
    // In the freemap leaf.
    let r = damaged((leaf & !0x3F) + 100);
    let crc = Problem::Freemap(Cause::Media(MediaError::CheckMismatch));
    assert_eq!(
        r.findings
            .iter()
            .map(|f| (f.problem, f.at))
            .collect::<Vec<_>>(),
        [(crc, leaf)]
    );
    // In the only header copy: nothing else can be checked.
    let r = damaged(0x30);
    assert_eq!((r.zone, r.findings_total), (None, 2));
}

/// Offsets of every block reachable in `vol` (from a full walk).
fn reachable_blocks(vol: &Volume<FileDev>) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    let set = vol.header().sroot_blockset;
    out.push(vol.locate(&set[0]).unwrap());
    vol.walk_all(&set, &mut |b, _| {
        if b.size_radix() != 0 {
            out.push(vol.locate(b)?);
        }
        Ok(Flow::Continue)
    })
    .unwrap();
    out.sort();
    out.dedup();
    out
}

fn cause(r: Result<impl Sized, ReadError>) -> Cause {
    match r {
        Ok(_) => panic!("damage not detected"),
        Err(e) => e.cause,
    }
}

#[test]
fn corrupt_media() {
    let images = Images::unpack("corrupt");
    let path = images.path("t-lz4");
    let vol = Volume::open(FileDev::open(&path)).unwrap();
    let blocks = reachable_blocks(&vol);
    assert!(blocks.len() > 100);
    drop(vol);

    // Flipped bytes in reachable blocks: the walk reports that block, never panics.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in 0..blocks.len().min(400) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (off, len) = blocks[(x as usize) % blocks.len()];
        let at = off + (x >> 20) % len as u64;
        let mut dev = FileDev::open(&path);
        dev.flips.push((at, 1 << (i % 8)));
        let vol = Volume::open(dev).unwrap();
        let e = vol
            .verify_all()
            .expect_err("a flipped byte must be detected");
        assert_eq!(
            e.cause,
            Cause::Media(hammer2_synchro::media::MediaError::CheckMismatch)
        );
        assert_eq!(e.at & !0x3F, off, "the damaged block is the one reported");
        assert_eq!(Error::from(e), Error::Io);
    }

    // Wrong magic: no valid header.
    let mut dev = FileDev::open(&path);
    dev.flips.push((3, 0xFF));
    assert_eq!(
        cause(Volume::open(dev)),
        Cause::Media(hammer2_synchro::media::MediaError::BadMagic)
    );
    // A flipped byte in the header: its CRC.
    let mut dev = FileDev::open(&path);
    dev.flips.push((0x78, 1));
    assert!(matches!(
        cause(Volume::open(dev)),
        Cause::Media(hammer2_synchro::media::MediaError::HeaderCrc(_))
    ));
    // Truncated: the header says 2 GiB, the device holds less.
    for size in [1u64 << 30, 100 << 20, 65536, 1000] {
        let mut dev = FileDev::open(&path);
        dev.size = size;
        assert!(Volume::open(dev).is_err(), "{size}");
    }
    let mut hdr = vec![0u8; 65536];
    File::open(&path)
        .unwrap()
        .read_exact_at(&mut hdr, 0)
        .unwrap();
    // An out-of-range blockref: the super-root moved past the end of the volume, the
    // header re-sealed so that only the blockref is wrong.
    let sroot_off = 0x200 + 0x20;
    let mut bad = hdr.clone();
    bad[sroot_off..sroot_off + 8].copy_from_slice(&((3u64 << 30) | 10).to_le_bytes());
    seal(&mut bad).unwrap();
    let dev = PatchedHeader(FileDev::open(&path), bad);
    let vol = Volume::open(dev).unwrap();
    assert_eq!(cause(vol.super_root()), Cause::OutOfRange);
    assert_eq!(cause(vol.verify_all()), Cause::OutOfRange);
    assert_eq!(cause(vol.pfs(b"DATA")), Cause::OutOfRange);
    // Inside the volume's first 64 KiB (the header), and off 1 KiB alignment.
    for off in [0x400u64 | 10, 0x880_4200 | 10] {
        let mut bad = hdr.clone();
        bad[sroot_off..sroot_off + 8].copy_from_slice(&off.to_le_bytes());
        seal(&mut bad).unwrap();
        let vol = Volume::open(PatchedHeader(FileDev::open(&path), bad)).unwrap();
        assert_eq!(cause(vol.super_root()), Cause::OutOfRange, "{off:#x}");
    }
}

/// A device whose first 64 KiB are replaced.
struct PatchedHeader(FileDev, Vec<u8>);

impl BlockDev for PatchedHeader {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> hammer2_synchro::Result<()> {
        self.0.read_at(off, buf)?;
        let n = self.1.len() as u64;
        if off < n {
            let k = ((n - off) as usize).min(buf.len());
            buf[..k].copy_from_slice(&self.1[off as usize..off as usize + k]);
        }
        Ok(())
    }
}
