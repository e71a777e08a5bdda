//! `newfs` and `import`: the commands that write HAMMER2 volumes, through the core's
//! newfs and copy-on-write transactions.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::process::ExitCode;

use hammer2_synchro::media::{
    InodeMeta, CHECK_XXHASH64, COMP_LZ4, DATA_BLOCK_BYTES, EMBEDDED_BYTES, OBJTYPE_DIRECTORY,
    OBJTYPE_REGFILE, OBJTYPE_SOFTLINK, PFSTYPE_CACHE, PFSTYPE_MASTER, PFSTYPE_SLAVE,
    PFSTYPE_SOFT_MASTER, PFSTYPE_SOFT_SLAVE,
};
use hammer2_synchro::volume::{
    newfs, DirEntries, FileDev, Flow, Import, NewPfs, NewfsOptions, Volume,
};

use crate::progress::Progress;
use crate::volume_cmd::{image_label, open_dev_rw, run, Command, Fail};

const NEWFS_HELP: &str = "\
USAGE:
    hammer2-synchro newfs IMAGE --size SIZE --pfs LABEL:ROLE [--pfs LABEL:ROLE ...]
                          [--clid UUID] [--nmasters N]

Create a HAMMER2 volume as newfs_hammer2 does (version 2, header copies at 0/2/4/6 GiB
that fit, boot and aux areas, super-root) with one PFS per --pfs (at most 4). IMAGE is
created or extended (sparse) to SIZE when it is a regular file.

OPTIONS:
    --size SIZE        bytes, or with a K, M, G or T suffix; rounded down to 8 MiB; at
                       least 32M; on a block device it may be omitted (the device's size)
    --pfs LABEL:ROLE   a PFS; ROLE: master, slave, soft-master, soft-slave or cache
    --clid UUID        the cluster id of the PFSs: give the same one to every node of a
                       cluster (default: random)
    --nmasters N       the masters of the cluster recorded in each PFS (default 0, unknown)
WARNING: below 2G + 4M a volume has a single header, rewritten in place at every commit (as
HAMMER2 does): a crash that tears that write loses the volume. Larger volumes keep the
previous header copy.

EXAMPLE:
    hammer2-synchro newfs a.img --size 4G --pfs DATA:master \
        --clid 01234567-89ab-cdef-0123-456789abcdef

EXIT STATUS: 0 done; 1 the volume could not be written; 2 bad usage or IMAGE not opened.
";

const IMPORT_HELP: &str = "\
USAGE:
    hammer2-synchro import [--replace] [--progress] DIR IMAGE@LABEL

Make PFS LABEL a copy of the host directory DIR: directories, files, symlinks, hardlinks,
permission bits, owners and times, in one copy-on-write commit. Nothing is committed until
every block is written: on any failure (no space, an unreadable file, a device error) the
volume keeps its previous state. Files other than regular files, directories and symlinks
are refused.
An import replaces the whole PFS. A PFS that already holds something (its root directory
has entries) is refused, and nothing written, unless --replace is given: an import never
destroys data by surprise. To add a tree to what a PFS holds, export it, copy the tree into
the export, and import that with --replace.

OPTIONS:
    --replace     replace what PFS LABEL holds (required when it is not empty)
    --progress    show progress on stderr even when it is not a terminal (on a terminal
                  it is shown anyway; never on stdout)

EXAMPLE:
    hammer2-synchro import /srv/data disk.img@DATA
    hammer2-synchro import --replace /srv/data disk.img@DATA

EXIT STATUS: 0 done; 1 DIR not read, the PFS not empty without --replace, or the volume
not written (printed); 2 bad usage or IMAGE not opened.
";

/// The `newfs` / `import` commands, or `None` for another command.
pub fn dispatch(cmd: &str, args: &[String]) -> Option<ExitCode> {
    let (help, f): (&str, Command) = match cmd {
        "newfs" => (NEWFS_HELP, newfs_cmd),
        "import" => (IMPORT_HELP, import_cmd),
        _ => return None,
    };
    Some(run(cmd, help, f, args))
}

fn usage(msg: impl Into<String>) -> Fail {
    Fail::Usage(msg.into())
}

/// `SIZE` with an optional K/M/G/T suffix.
fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        (i, 't' | 'T') => (&s[..i], 40),
        _ => (s, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// A UUID in its text form, stored as HAMMER2 stores them (the first three fields
/// little-endian).
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, x) in b.iter_mut().enumerate() {
        *x = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Some(b)
}

/// A random (version 4) UUID, as stored.
fn random_uuid() -> Result<[u8; 16], Fail> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Fail::Run(format!("/dev/urandom: {e}")))?;
    b[7] = (b[7] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    Ok(b)
}

fn role(s: &str) -> Option<u8> {
    Some(match s {
        "master" => PFSTYPE_MASTER,
        "slave" => PFSTYPE_SLAVE,
        "soft-master" => PFSTYPE_SOFT_MASTER,
        "soft-slave" => PFSTYPE_SOFT_SLAVE,
        "cache" => PFSTYPE_CACHE,
        _ => return None,
    })
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn newfs_cmd(args: &[String]) -> Result<(), Fail> {
    let mut image = None;
    let mut size = None;
    let mut pfs: Vec<(String, u8)> = Vec::new();
    let mut clid = None;
    let mut nmasters = 0u8;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |what: &str| it.next().ok_or_else(|| usage(format!("{a} needs {what}")));
        match a.as_str() {
            "--size" => {
                let v = val("SIZE")?;
                size = Some(parse_size(v).ok_or_else(|| usage(format!("bad size '{v}'")))?);
            }
            "--pfs" => {
                let v = val("LABEL:ROLE")?;
                let (label, r) = v
                    .rsplit_once(':')
                    .filter(|(l, _)| !l.is_empty())
                    .ok_or_else(|| usage(format!("'{v}' is not LABEL:ROLE")))?;
                let t = role(r).ok_or_else(|| usage(format!("unknown role '{r}'")))?;
                pfs.push((label.to_string(), t));
            }
            "--clid" => {
                let v = val("UUID")?;
                clid = Some(parse_uuid(v).ok_or_else(|| usage(format!("bad uuid '{v}'")))?);
            }
            "--nmasters" => {
                let v = val("N")?;
                nmasters = v
                    .parse()
                    .ok()
                    .filter(|&n| n <= 8)
                    .ok_or_else(|| usage(format!("bad --nmasters '{v}' (0..8)")))?;
            }
            s if s.starts_with('-') => return Err(usage(format!("unknown option '{s}'"))),
            s if image.is_none() => image = Some(s.to_string()),
            s => return Err(usage(format!("unexpected argument '{s}'"))),
        }
    }
    let image = image.ok_or_else(|| usage("missing IMAGE"))?;
    if pfs.is_empty() {
        return Err(usage("at least one --pfs LABEL:ROLE is needed"));
    }
    if pfs.len() > 4 {
        return Err(usage("at most 4 --pfs (the super-root's own block table)"));
    }
    let is_file = std::fs::metadata(&image).map_or(true, |m| m.is_file());
    if is_file {
        let size = size.ok_or_else(|| usage("--size is needed for an image file"))?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&image)
            .map_err(|e| Fail::Open(format!("{image}: {e}")))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < size {
            f.set_len(size)
                .map_err(|e| Fail::Open(format!("{image}: {e}")))?;
        }
    }
    let dev = open_dev_rw(&image)?;
    let size = size.unwrap_or_else(|| hammer2_synchro::volume::BlockDev::size(&dev));
    let clid = match clid {
        Some(c) => c,
        None => random_uuid()?,
    };
    let mut list = Vec::new();
    for (label, t) in &pfs {
        list.push(NewPfs {
            label: label.as_bytes(),
            pfs_type: *t,
            clid,
            fsid: random_uuid()?,
            nmasters,
        });
    }
    let opts = NewfsOptions {
        size,
        fsid: random_uuid()?,
        sroot_ids: (random_uuid()?, random_uuid()?),
        pfs: &list,
        now_us: now_us(),
    };
    let h = newfs(&dev, &opts).map_err(|e| Fail::Run(format!("{image}: {e}")))?;
    outln!(
        "{image}: HAMMER2 volume of {} bytes, {} PFS(s), {} bytes allocatable",
        h.volu_size,
        list.len(),
        h.allocator_size
    );
    Ok(())
}

/// One object of the host tree, in pre-order.
struct Node {
    path: PathBuf,
    meta: std::fs::Metadata,
    inum: u64,
    /// Whether this is the first name of its inode (hardlinks after it are entries only).
    first: bool,
    /// For a directory: its entries (name, node index).
    entries: Vec<(Vec<u8>, usize)>,
}

fn objtype(m: &std::fs::Metadata) -> Option<u8> {
    let t = m.file_type();
    if t.is_dir() {
        Some(OBJTYPE_DIRECTORY)
    } else if t.is_file() {
        Some(OBJTYPE_REGFILE)
    } else if t.is_symlink() {
        Some(OBJTYPE_SOFTLINK)
    } else {
        None
    }
}

/// Microseconds since the epoch of a host time (`s` seconds, `ns` nanoseconds): 0 before the
/// epoch, saturating far in the future (a file's time is anything its owner set).
fn micros(s: i64, ns: i64) -> u64 {
    (s.max(0) as u64)
        .saturating_mul(1_000_000)
        .saturating_add((ns.max(0) as u64) / 1000)
}

/// The inode meta of a host object: permission bits, owner in the uuid form HAMMER2 uses
/// (the id in bytes 12..16), times in microseconds.
fn host_meta(m: &std::fs::Metadata, objtype: u8, inum: u64, nlinks: u64) -> InodeMeta {
    let us = micros;
    let mut meta = InodeMeta::new(objtype, inum, m.mode() & 0o7777);
    meta.mtime = us(m.mtime(), m.mtime_nsec());
    meta.ctime = us(m.ctime(), m.ctime_nsec());
    meta.btime = meta.ctime;
    meta.uid[12..16].copy_from_slice(&m.uid().to_le_bytes());
    meta.gid[12..16].copy_from_slice(&m.gid().to_le_bytes());
    meta.nlinks = nlinks;
    meta.comp_algo = COMP_LZ4;
    meta.check_algo = CHECK_XXHASH64;
    meta
}

/// Read the host tree under `dir` into pre-order nodes with inode numbers from `next`.
fn scan_tree(
    dir: &str,
    next: &mut dyn FnMut() -> Result<u64, Fail>,
    progress: &mut Progress,
) -> Result<Vec<Node>, Fail> {
    let io = |p: &std::path::Path, e: std::io::Error| Fail::Run(format!("{}: {e}", p.display()));
    let root = PathBuf::from(dir);
    let meta = std::fs::symlink_metadata(&root).map_err(|e| io(&root, e))?;
    if !meta.is_dir() {
        return Err(Fail::Run(format!("{dir}: not a directory")));
    }
    let mut nodes = vec![Node {
        path: root,
        meta,
        inum: 1,
        first: true,
        entries: Vec::new(),
    }];
    let mut seen: HashMap<(u64, u64), u64> = HashMap::new();
    let mut i = 0;
    while i < nodes.len() {
        progress.tick(|| format!("reading {}: {} objects", dir, nodes.len()));
        if nodes[i].meta.is_dir() {
            let path = nodes[i].path.clone();
            let mut names: Vec<_> = std::fs::read_dir(&path)
                .map_err(|e| io(&path, e))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(|e| io(&path, e))?;
            names.sort();
            for name in names {
                let p = path.join(&name);
                let meta = std::fs::symlink_metadata(&p).map_err(|e| io(&p, e))?;
                if objtype(&meta).is_none() {
                    let kind = if meta.file_type().is_fifo() {
                        "a fifo"
                    } else {
                        "a device, socket or fifo"
                    };
                    return Err(Fail::Run(format!(
                        "{}: {kind} is not imported",
                        p.display()
                    )));
                }
                let (inum, first) = if meta.is_file() && meta.nlink() > 1 {
                    match seen.get(&(meta.dev(), meta.ino())) {
                        Some(&n) => (n, false),
                        None => {
                            let n = next()?;
                            seen.insert((meta.dev(), meta.ino()), n);
                            (n, true)
                        }
                    }
                } else {
                    (next()?, true)
                };
                let idx = nodes.len();
                nodes[i].entries.push((name.as_bytes().to_vec(), idx));
                nodes.push(Node {
                    path: p,
                    meta,
                    inum,
                    first,
                    entries: Vec::new(),
                });
            }
        }
        i += 1;
    }
    Ok(nodes)
}

fn import_cmd(args: &[String]) -> Result<(), Fail> {
    let mut replace = false;
    let mut pos = Vec::new();
    for a in args {
        match a.as_str() {
            "--replace" => replace = true,
            o if o.starts_with('-') && o.len() > 1 => {
                return Err(usage(format!("unknown option '{o}'")))
            }
            p => pos.push(p),
        }
    }
    let [dir, spec] = pos[..] else {
        return Err(usage("expected [--replace] DIR IMAGE@LABEL"));
    };
    let (image, label) =
        image_label(spec).ok_or_else(|| usage(format!("'{spec}' is not IMAGE@LABEL")))?;
    let vol = Volume::open(open_dev_rw(image)?).map_err(|e| Fail::Run(format!("{image}: {e}")))?;
    let verr = |e: hammer2_synchro::Error| Fail::Run(format!("{image}: {e}"));
    let no_pfs = |e: hammer2_synchro::Error| match e {
        hammer2_synchro::Error::NotFound => Fail::Run(format!("{image}: no PFS '{label}'")),
        e => verr(e),
    };
    if !replace && has_content(&vol, label).map_err(no_pfs)? {
        return Err(Fail::Run(format!(
            "{image}@{label} is not empty: an import replaces the whole PFS, so it is refused \
             unless --replace is given (to add a tree to what is there, export the PFS, copy \
             the tree into the export, and import that with --replace)"
        )));
    }
    let mut imp = Import::begin(&vol, label.as_bytes()).map_err(no_pfs)?;
    let mut next = || imp.new_inum().map_err(verr);
    let mut progress = Progress::new("import");
    let nodes = scan_tree(dir, &mut next, &mut progress)?;
    // Links of each inode inside the tree (hardlinks outside it do not count).
    let mut links: HashMap<u64, u64> = HashMap::new();
    for n in &nodes {
        *links.entry(n.inum).or_default() += 1;
    }
    let io = |p: &std::path::Path, e: std::io::Error| Fail::Run(format!("{}: {e}", p.display()));
    let total = nodes.len();
    let mut buf = vec![0u8; DATA_BLOCK_BYTES];
    let mut root_entries = DirEntries::new();
    for (done, n) in nodes.iter().enumerate().rev() {
        let t = objtype(&n.meta).unwrap_or(OBJTYPE_REGFILE);
        let meta = host_meta(&n.meta, t, n.inum, links.get(&n.inum).copied().unwrap_or(1));
        if t == OBJTYPE_DIRECTORY {
            let mut entries = DirEntries::new();
            for (name, child) in &n.entries {
                let c = &nodes[*child];
                let ct = objtype(&c.meta).unwrap_or(OBJTYPE_REGFILE);
                imp.entry(&mut entries, name, c.inum, ct).map_err(verr)?;
            }
            let mut meta = meta;
            meta.nlinks = 1;
            if n.inum == 1 {
                root_entries = entries;
            } else {
                imp.dir(meta, &entries).map_err(verr)?;
            }
        } else if n.first {
            let mut data = |imp: &mut Import<'_, FileDev>,
                            buf: &mut [u8],
                            src: &mut dyn Read|
             -> Result<(Vec<u8>, u64, Vec<_>), Fail> {
                let mut table = Vec::new();
                let mut small = Vec::new();
                let mut off = 0u64;
                loop {
                    let got = read_full(src, buf).map_err(|e| io(&n.path, e))?;
                    if got == 0 {
                        break;
                    }
                    if off == 0 && got <= EMBEDDED_BYTES {
                        small.extend_from_slice(&buf[..got]);
                    } else {
                        if !small.is_empty() {
                            small.clear();
                        }
                        imp.data(&mut table, off, &buf[..got]).map_err(verr)?;
                        // A large file shows its progress while it is written.
                        progress.tick(|| {
                            format!(
                                "{} of {total} objects, {} bytes of blocks written",
                                total - done,
                                imp.written()
                            )
                        });
                    }
                    off += got as u64;
                    if got < buf.len() {
                        break;
                    }
                }
                Ok((small, off, table))
            };
            let (small, size, table) = if t == OBJTYPE_SOFTLINK {
                let target = std::fs::read_link(&n.path).map_err(|e| io(&n.path, e))?;
                let bytes = target.as_os_str().as_bytes().to_vec();
                data(&mut imp, &mut buf, &mut bytes.as_slice())?
            } else {
                let mut f = File::open(&n.path).map_err(|e| io(&n.path, e))?;
                data(&mut imp, &mut buf, &mut f)?
            };
            let mut meta = meta;
            meta.size = size;
            let inline = size as usize <= EMBEDDED_BYTES;
            imp.file(meta, inline.then_some(&small[..]), &table)
                .map_err(verr)?;
        }
        progress.tick(|| {
            format!(
                "{} of {total} objects, {} bytes of blocks written",
                total - done,
                imp.written()
            )
        });
    }
    let root = &nodes[0];
    let root_meta = host_meta(&root.meta, OBJTYPE_DIRECTORY, 1, 1);
    let written = imp.written();
    progress.phase(|| format!("{total} of {total} objects, committing"));
    let h = imp.commit(&root_meta, &root_entries).map_err(verr)?;
    drop(progress);
    outln!(
        "{image}@{label}: {total} objects, {written} bytes of blocks written, mirror_tid {:#x}",
        h.mirror_tid
    );
    Ok(())
}

/// Whether PFS `label` of `vol` has anything in its root directory.
fn has_content(vol: &Volume<FileDev>, label: &str) -> hammer2_synchro::Result<bool> {
    let pfs = vol.pfs(label.as_bytes())?;
    let mut any = false;
    pfs.readdir(vol, &pfs.root, &mut |_| {
        any = true;
        Ok(Flow::Stop)
    })?;
    Ok(any)
}

/// Read until `buf` is full or the end of `src`; the bytes read.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::micros;

    #[test]
    fn host_times_convert_without_overflow() {
        assert_eq!(micros(1_600_000_000, 123_456_789), 1_600_000_000_123_456);
        assert_eq!(micros(-5, 7), 0);
        assert_eq!(micros(i64::MAX, 999_999_999), u64::MAX);
        assert_eq!(micros(i64::MAX / 1_000_000 * 3, 0), u64::MAX);
    }
}
