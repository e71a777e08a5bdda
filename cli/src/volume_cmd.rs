//! `ls`, `export` and `fsck`: read-only access to HAMMER2 volumes (image files or block
//! devices) through the core's volume reader.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use hammer2_synchro::media::{InodeData, OBJTYPE_DIRECTORY, OBJTYPE_REGFILE, OBJTYPE_SOFTLINK};
use hammer2_synchro::volume::fsck::{CopyState, FINDINGS_MAX, MAP_LIMIT_DEFAULT};
use hammer2_synchro::volume::{
    fsck, BlockDev, Cause, Entry, Flow, FsckOptions, FsckReport, Pfs, ReadError, Volume,
};

/// Standard output through the CLI's `Out`: a failed write ends the process with status 2,
/// never a panic (`println!` panics on a closed pipe or a full disk).
macro_rules! out {
    ($($t:tt)*) => {{
        let mut o = crate::Out::new();
        let _ = std::fmt::Write::write_fmt(&mut o, format_args!($($t)*));
        o.finish();
    }};
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($t:tt)*) => {
        out!("{}\n", format_args!($($t)*))
    };
}

/// Standard error, whose write errors are ignored: there is nowhere left to report them.
macro_rules! err {
    ($($t:tt)*) => {{
        let _ = std::io::Write::write_fmt(&mut std::io::stderr().lock(), format_args!($($t)*));
    }};
}

/// [`err!`] with a newline.
macro_rules! errln {
    ($($t:tt)*) => {
        err!("{}\n", format_args!($($t)*))
    };
}

const LS_HELP: &str = "\
hammer2-synchro ls IMAGE             list the PFSs of a HAMMER2 volume (label, type, inode count
                                     allocator)
hammer2-synchro ls IMAGE@LABEL [PATH]
                                     list a directory of PFS LABEL (default /), or show one file:
                                     TYPE MODE SIZE INUM NLINKS NAME[ -> TARGET]
IMAGE is an image file or a block device; nothing is written to it. Every block read is
checked against its check code; a damaged block is reported with its media offset.
EXIT STATUS: 0 done; 1 the volume could not be read (the fault is printed); 2 bad usage
or IMAGE could not be opened.
";

const EXPORT_HELP: &str = "\
hammer2-synchro export IMAGE@LABEL DIR
                                     copy PFS LABEL of a HAMMER2 volume into DIR (created; must
                                     not exist or be empty): directories, files, symlinks,
                                     hardlinks (one inode under several names), modes and
                                     modification times; progress on stderr
IMAGE is an image file or a block device; nothing is written to it. Every block read is
checked against its check code: the first damaged block ends the export with its fault.
EXIT STATUS: 0 done; 1 the volume could not be read or DIR not written (printed); 2 bad
usage or IMAGE could not be opened.
";

const FSCK_HELP: &str = "\
hammer2-synchro fsck IMAGE           check a HAMMER2 volume, read-only: every volume header copy
                                     (CRCs, which is in use, which are older); from the copy in
                                     use every reachable block (all PFSs: inodes, indirect
                                     blocks, data, directory entries): offset and size in
                                     range, check code, data that decompress, key order and
                                     ranges in each table; the freemap (node and leaf CRCs,
                                     every granule a reachable block uses marked allocated)
Prints the header copies, counts, and each finding with its media offset (the first
100; all are counted); progress on stderr. Space marked allocated that nothing reachable
uses is counted, not a finding: HAMMER2 frees space only in its bulkfree passes.
EXIT STATUS: 0 clean; 1 findings (a volume with no valid header copy included); 2 bad
usage, IMAGE could not be opened, or the volume is too large to check (past 8 TiB).
";

/// The `ls` / `export` / `fsck` commands, or `None` for another command.
pub fn dispatch(cmd: &str, args: &[String]) -> Option<ExitCode> {
    let (help, f): (&str, Command) = match cmd {
        "ls" => (LS_HELP, ls),
        "export" => (EXPORT_HELP, export),
        "fsck" => (FSCK_HELP, fsck_cmd),
        _ => return None,
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        out!("{help}");
        return Some(ExitCode::SUCCESS);
    }
    Some(match f(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(msg)) => {
            crate::warn(format_args!("{cmd}: {msg}"));
            err!("usage: (hammer2-synchro {cmd} --help for more)\n{help}");
            ExitCode::from(2)
        }
        Err(Fail::Open(msg)) => {
            crate::warn(format_args!("{cmd}: {msg}"));
            ExitCode::from(2)
        }
        Err(Fail::Run(msg)) => {
            crate::warn(format_args!("{cmd}: {msg}"));
            ExitCode::from(1)
        }
    })
}

/// One volume command: its arguments in, success or why not out.
type Command = fn(&[String]) -> Result<(), Fail>;

enum Fail {
    Usage(String),
    Open(String),
    Run(String),
}

/// An image file or block device.
struct FileDev {
    file: File,
    size: u64,
}

impl FileDev {
    fn open(path: &str) -> Result<FileDev, Fail> {
        let mut file = File::open(path).map_err(|e| Fail::Open(format!("{path}: {e}")))?;
        // A block device's metadata says 0 bytes: its size is where a seek to the end lands.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Fail::Open(format!("{path}: {e}")))?;
        Ok(FileDev { file, size })
    }
}

impl BlockDev for FileDev {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> hammer2_synchro::Result<()> {
        self.file
            .read_exact_at(buf, off)
            .map_err(|_| hammer2_synchro::Error::Io)
    }
}

fn run_err(image: &str, e: ReadError) -> Fail {
    Fail::Run(format!("{image}: {e}"))
}

/// `IMAGE@LABEL` split at its last `@`.
fn image_label(arg: &str) -> Option<(&str, &str)> {
    arg.rsplit_once('@')
        .filter(|(i, l)| !i.is_empty() && !l.is_empty())
}

fn open_pfs(arg: &str) -> Result<(Volume<FileDev>, Pfs, String), Fail> {
    let (image, label) =
        image_label(arg).ok_or_else(|| Fail::Usage(format!("'{arg}' is not IMAGE@LABEL")))?;
    let vol = Volume::open(FileDev::open(image)?).map_err(|e| run_err(image, e))?;
    let pfs = vol
        .pfs(label.as_bytes())
        .map_err(|e| Fail::Run(format!("{image}: PFS '{label}': {e}")))?;
    Ok((vol, pfs, image.to_string()))
}

fn type_char(t: u8) -> char {
    match t {
        OBJTYPE_DIRECTORY => 'd',
        OBJTYPE_REGFILE => 'f',
        OBJTYPE_SOFTLINK => 'l',
        _ => '?',
    }
}

fn ls_line(
    vol: &Volume<FileDev>,
    pfs: &Pfs,
    ino: &InodeData,
    name: &[u8],
) -> Result<String, ReadError> {
    let m = &ino.meta;
    let mut line = format!(
        "{} 0o{:04o} {:>10} {:#x} {} {}",
        type_char(m.objtype),
        m.mode & 0o7777,
        m.size,
        m.inum,
        m.nlinks,
        String::from_utf8_lossy(name)
    );
    if m.objtype == OBJTYPE_SOFTLINK {
        let target = pfs.readlink(vol, ino)?;
        line.push_str(&format!(" -> {}", String::from_utf8_lossy(&target)));
    }
    Ok(line)
}

fn ls(args: &[String]) -> Result<(), Fail> {
    match args {
        [image] if !image.contains('@') => ls_pfses(image),
        [spec] => ls_path(spec, "/"),
        [spec, path] => ls_path(spec, path),
        _ => Err(Fail::Usage("expected IMAGE, or IMAGE@LABEL [PATH]".into())),
    }
}

fn ls_pfses(image: &str) -> Result<(), Fail> {
    let vol = Volume::open(FileDev::open(image)?).map_err(|e| run_err(image, e))?;
    let h = vol.header();
    outln!(
        "# volume {} bytes, version {}, header copy {} (mirror_tid {:#x})",
        h.volu_size,
        h.version,
        vol.zone(),
        h.mirror_tid
    );
    vol.pfs_roots(&mut |p| {
        outln!(
            "{} pfs_type {} pfs_inum {:#x}",
            String::from_utf8_lossy(p.filename()),
            p.meta.pfs_type,
            p.meta.pfs_inum
        );
        Ok(Flow::Continue)
    })
    .map_err(|e| run_err(image, e))
}

fn ls_path(spec: &str, path: &str) -> Result<(), Fail> {
    let (vol, pfs, image) = open_pfs(spec)?;
    let err = |e| Fail::Run(format!("{image}: {path}: {e}"));
    let ino = pfs.resolve(&vol, path.as_bytes()).map_err(err)?;
    if ino.meta.objtype != OBJTYPE_DIRECTORY {
        let name = path.rsplit('/').find(|c| !c.is_empty()).unwrap_or(path);
        outln!(
            "{}",
            ls_line(&vol, &pfs, &ino, name.as_bytes()).map_err(err)?
        );
        return Ok(());
    }
    let mut entries: Vec<Entry> = Vec::new();
    pfs.readdir(&vol, &ino, &mut |e| {
        entries.push(e.clone());
        Ok(Flow::Continue)
    })
    .map_err(err)?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    for e in entries {
        let child = pfs.inode(&vol, e.inum).map_err(err)?;
        outln!("{}", ls_line(&vol, &pfs, &child, &e.name).map_err(err)?);
    }
    Ok(())
}

/// What `export` wrote, for its progress line.
#[derive(Default)]
struct Counts {
    dirs: u64,
    files: u64,
    links: u64,
    hardlinks: u64,
    bytes: u64,
}

fn mtime(ino: &InodeData) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(ino.meta.mtime)
}

fn export(args: &[String]) -> Result<(), Fail> {
    let [spec, dir] = args else {
        return Err(Fail::Usage("expected IMAGE@LABEL DIR".into()));
    };
    let (vol, pfs, image) = open_pfs(spec)?;
    let root = PathBuf::from(dir);
    let io = |p: &Path, e: std::io::Error| Fail::Run(format!("{}: {e}", p.display()));
    if root.exists() {
        let mut it = std::fs::read_dir(&root).map_err(|e| io(&root, e))?;
        if it.next().is_some() {
            return Err(Fail::Run(format!("{dir}: not empty")));
        }
    } else {
        std::fs::create_dir(&root).map_err(|e| io(&root, e))?;
    }
    let rd = |e: ReadError| Fail::Run(format!("{image}: {e}"));
    let mut counts = Counts::default();
    // The first path written for each inode with several names: later names hardlink it.
    let mut first_name: HashMap<u64, PathBuf> = HashMap::new();
    // Directories with their mtimes, set last (writing into a directory changes its mtime).
    let mut dirs: Vec<(PathBuf, SystemTime, u32)> = vec![(root.clone(), mtime(&pfs.root), 0o755)];
    let mut stack = vec![(root.clone(), pfs.root)];
    while let Some((path, dir)) = stack.pop() {
        let mut entries: Vec<Entry> = Vec::new();
        pfs.readdir(&vol, &dir, &mut |e| {
            entries.push(e.clone());
            Ok(Flow::Continue)
        })
        .map_err(rd)?;
        for e in entries {
            let name = std::str::from_utf8(&e.name)
                .map_err(|_| Fail::Run(format!("{}: a name that is not UTF-8", path.display())))?;
            if name == "." || name == ".." || name.contains('/') {
                return Err(Fail::Run(format!("{}: bad name '{name}'", path.display())));
            }
            let target = path.join(name);
            let ino = pfs.inode(&vol, e.inum).map_err(rd)?;
            let m = &ino.meta;
            match m.objtype {
                OBJTYPE_DIRECTORY => {
                    std::fs::create_dir(&target).map_err(|err| io(&target, err))?;
                    dirs.push((target.clone(), mtime(&ino), m.mode & 0o7777));
                    stack.push((target, ino));
                    counts.dirs += 1;
                }
                OBJTYPE_REGFILE => {
                    if let Some(first) = first_name.get(&m.inum) {
                        std::fs::hard_link(first, &target).map_err(|err| io(&target, err))?;
                        counts.hardlinks += 1;
                        continue;
                    }
                    let mut f = File::create(&target).map_err(|err| io(&target, err))?;
                    let mut werr = None;
                    pfs.read_file(&vol, &ino, &mut |piece| {
                        if let Err(err) = f.write_all(piece) {
                            werr = Some(err);
                            return Err(ReadError::new(
                                hammer2_synchro::volume::Cause::Device(hammer2_synchro::Error::Io),
                                0,
                            ));
                        }
                        Ok(())
                    })
                    .map_err(|e| match werr.take() {
                        Some(err) => io(&target, err),
                        None => rd(e),
                    })?;
                    let perm = std::fs::Permissions::from_mode(m.mode & 0o7777);
                    f.set_permissions(perm).map_err(|err| io(&target, err))?;
                    f.set_modified(mtime(&ino))
                        .map_err(|err| io(&target, err))?;
                    if m.nlinks > 1 {
                        first_name.insert(m.inum, target);
                    }
                    counts.files += 1;
                    counts.bytes += m.size;
                }
                OBJTYPE_SOFTLINK => {
                    let link = pfs.readlink(&vol, &ino).map_err(rd)?;
                    let link = std::ffi::OsStr::from_bytes(&link);
                    std::os::unix::fs::symlink(link, &target).map_err(|err| io(&target, err))?;
                    counts.links += 1;
                }
                t => {
                    errln!(
                        "hammer2-synchro: export: {}: type {t} skipped",
                        target.display()
                    );
                }
            }
            if (counts.files + counts.dirs) % 1000 == 0 {
                err!("\rexport: {} files, {} bytes", counts.files, counts.bytes);
            }
        }
    }
    for (path, time, mode) in dirs.iter().rev() {
        let d = File::open(path).map_err(|err| io(path, err))?;
        d.set_modified(*time).map_err(|err| io(path, err))?;
        if path != &root {
            let perm = std::fs::Permissions::from_mode(*mode);
            std::fs::set_permissions(path, perm).map_err(|err| io(path, err))?;
        }
    }
    errln!(
        "\rexport: {} directories, {} files ({} bytes), {} hardlinks, {} symlinks",
        counts.dirs,
        counts.files,
        counts.bytes,
        counts.hardlinks,
        counts.links
    );
    Ok(())
}

fn fsck_cmd(args: &[String]) -> Result<(), Fail> {
    let [image] = args else {
        return Err(Fail::Usage("expected IMAGE".into()));
    };
    let dev = FileDev::open(image)?;
    let mut shown = false;
    let mut progress = |blocks: u64| {
        err!("\rfsck: {blocks} blocks checked");
        shown = true;
    };
    let opts = FsckOptions {
        map_limit: MAP_LIMIT_DEFAULT,
        progress: Some(&mut progress),
    };
    let report = fsck(dev, opts);
    if shown {
        errln!("");
    }
    let r = match report {
        Ok(r) => r,
        Err(e) if e.cause == Cause::TooBig => {
            return Err(Fail::Open(format!(
                "{image}: a {} byte filesystem needs a map of reachable blocks over fsck's \
                 {} MiB limit",
                e.at,
                MAP_LIMIT_DEFAULT >> 20
            )))
        }
        Err(e) => return Err(Fail::Open(format!("{image}: {e}"))),
    };
    print_fsck(image, &r);
    if r.is_clean() {
        Ok(())
    } else {
        Err(Fail::Run(format!("{image}: {} findings", r.findings_total)))
    }
}

fn print_fsck(image: &str, r: &FsckReport) {
    outln!("volume header copies:");
    for (zone, c) in r.copies.iter().enumerate() {
        let at = hammer2_synchro::media::volhdr::copy_offset(zone);
        let state = match c {
            CopyState::Absent => "not inside the device".to_string(),
            CopyState::Unreadable(e) => format!("unreadable ({e:?})"),
            CopyState::Bad(e) => format!("refused: {e}"),
            CopyState::Valid(tid) if r.zone == Some(zone) => {
                format!("valid, mirror_tid {tid:#x}, in use")
            }
            CopyState::Valid(tid) if r.is_stale(zone) => {
                format!("valid, mirror_tid {tid:#x}, older than the copy in use")
            }
            CopyState::Valid(tid) => format!("valid, mirror_tid {tid:#x}"),
        };
        outln!("  {zone} at {at:#x}: {state}");
    }
    if r.zone.is_some() {
        outln!(
            "reachable: {} inodes, {} indirect blocks, {} data blocks, {} directory entries, \
             {} bytes",
            r.inodes,
            r.indirect,
            r.data,
            r.dirents,
            r.reachable_bytes
        );
        outln!(
            "freemap: {} nodes, {} leaves; {} KiB allocated but unreachable (a bulkfree \
             reclaims it)",
            r.freemap_nodes,
            r.freemap_leaves,
            r.unreachable_granules * 16
        );
    }
    for f in &r.findings {
        outln!("FINDING {f}");
    }
    if r.findings_total > FINDINGS_MAX as u64 {
        outln!(
            "... and {} more findings",
            r.findings_total - FINDINGS_MAX as u64
        );
    }
    if r.is_clean() {
        outln!("{image}: clean");
    } else {
        outln!("{image}: {} findings", r.findings_total);
    }
}
