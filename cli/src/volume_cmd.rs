//! `ls`, `export` and `fsck`: read-only access to HAMMER2 volumes (image files or block
//! devices) through the core's volume reader.

use std::collections::{HashMap, HashSet};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use crate::progress::Progress;
use hammer2_synchro::media::{InodeData, OBJTYPE_DIRECTORY, OBJTYPE_REGFILE, OBJTYPE_SOFTLINK};
use hammer2_synchro::volume::fsck::MAP_LIMIT_DEFAULT;
use hammer2_synchro::volume::show::{self, ShowError};
use hammer2_synchro::volume::{
    check_name, fsck, read_copies, Cause, Entry, FileDev, Flow, FsckOptions, FsckReport, Pfs,
    Piece, ReadError, ReadResult, Volume,
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
USAGE:
    hammer2-synchro ls IMAGE
    hammer2-synchro ls IMAGE@LABEL [PATH]

The first form lists the PFSs of a HAMMER2 volume (label, type, inode allocator, cluster
id) after a line on the header in use. The second lists directory PATH of PFS LABEL
(default /), or shows one file, a line each: TYPE MODE SIZE INUM NLINKS NAME[ -> TARGET].
IMAGE is an image file or a block device; nothing is written to it. Every block read is
checked against its check code; a damaged block is reported with its media offset.

OPTIONS:
    -h, --help    this text

EXAMPLE:
    hammer2-synchro ls disk.img
    hammer2-synchro ls disk.img@DATA /etc

EXIT STATUS: 0 done; 1 the volume could not be read (the fault is printed); 2 bad usage
or IMAGE could not be opened.
";

const EXPORT_HELP: &str = "\
USAGE:
    hammer2-synchro export [--progress] IMAGE@LABEL DIR

Copy PFS LABEL of a HAMMER2 volume into DIR (created; it must not exist or be empty):
directories, files, symlinks, hardlinks (one inode under several names), permission bits
and modification times (of symlinks too). Holes in files stay holes in DIR.
IMAGE is an image file or a block device; nothing is written to it. Every block read is
checked against its check code: the first damaged block ends the export with its fault.
A name that is empty, . or .., holds '/', or repeats in its directory ends the export;
nothing is written through an existing name. A summary goes to stderr at the end.

OPTIONS:
    --progress    show progress on stderr even when it is not a terminal (on a terminal
                  it is shown anyway; never on stdout)

EXAMPLE:
    hammer2-synchro export disk.img@DATA /srv/restore

EXIT STATUS: 0 done; 1 the volume could not be read or DIR not written (printed); 2 bad
usage or IMAGE could not be opened.
";

const FSCK_HELP: &str = "\
USAGE:
    hammer2-synchro fsck [--progress] IMAGE

Check a HAMMER2 volume, read-only: every volume header copy (CRCs, which is in use, which
are older); from the copy in use every reachable block (all PFSs: inodes, indirect blocks,
data, directory entries): offset and size in range, check code, data that decompress, key
order and ranges in each table; the freemap (node and leaf CRCs, every granule a reachable
block uses marked allocated).
Prints the header copies, counts, and each finding with its media offset (the first 100;
all are counted). Space marked allocated that nothing reachable uses is counted, not a
finding: HAMMER2 frees space only in its bulkfree passes.

OPTIONS:
    --progress    show progress on stderr even when it is not a terminal (on a terminal
                  it is shown anyway; never on stdout)

EXAMPLE:
    hammer2-synchro fsck disk.img

EXIT STATUS: 0 clean; 1 findings (a volume with no valid header copy included); 2 bad
usage, IMAGE could not be opened, or the volume is too large to check (past 8 TiB).
";

const SHOW_HELP: &str = "\
USAGE:
    hammer2-synchro show [--blockrefs [--depth N]] [--progress] IMAGE

Show a HAMMER2 volume, read-only: the header in use (size, version, fsid, allocator), every
volume header copy (its offset, mirror_tid, whether its CRCs hold, which one is in use), and
each PFS (label, type, cluster id, PFS id, inodes in its index, or `inodes ? (why)` when
its index cannot be read: the listing goes on, the status is 1). With no usable header copy,
the table of copies says why each was refused.

OPTIONS:
    --blockrefs   then the blockref tree from the super-root, as `hammer2 show` walks it:
                  one line per blockref, indented by level (type, key/keybits, data_off,
                  mirror_tid, modify_tid), each block read and its check code verified
                  (`check ok`, or `check FAILED: ...` and nothing below it shown); a
                  device read error stops it; past the blockrefs the volume's size can
                  hold (blocks shared between tables) it is cut, with a line saying so.
                  Then, under `freemap:`, the freemap tree as `hammer2 freemap` walks it,
                  the same way (FREEMAP_NODE and FREEMAP_LEAF blockrefs, CRC-32C checked,
                  rotation set), each leaf summed up rather than its raw bitmaps (KiB
                  allocated, free, staged by bulkfree, illegal; the allocation classes in
                  use); a last line counts both trees
    --depth N     with --blockrefs: open no table more than N levels below the super-root
                  or the freemap blockset (0: the super-root and the freemap's top
                  blockrefs only; default: the whole trees)
    --progress    accepted for symmetry with the other commands (show prints no progress)
IMAGE is an image file or a block device; nothing is written to it.

EXAMPLE:
    hammer2-synchro show disk.img
    hammer2-synchro show --blockrefs --depth 2 disk.img | less

EXIT STATUS: 0 done; 1 the volume could not be read, a PFS's index could not be counted,
or a block failed its check code or the output was cut (--blockrefs); 2 bad usage or IMAGE
could not be opened.
";

/// The `ls` / `export` / `fsck` / `show` commands, or `None` for another command.
pub fn dispatch(cmd: &str, args: &[String]) -> Option<ExitCode> {
    let (help, f): (&str, Command) = match cmd {
        "ls" => (LS_HELP, ls),
        "export" => (EXPORT_HELP, export),
        "fsck" => (FSCK_HELP, fsck_cmd),
        "show" => (SHOW_HELP, show_cmd),
        _ => return None,
    };
    Some(run(cmd, help, f, args))
}

/// Run volume command `cmd` (`--help` prints `help`), mapping its failure to a status.
pub(crate) fn run(cmd: &str, help: &str, f: Command, args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        out!("{help}");
        return ExitCode::SUCCESS;
    }
    let args = crate::progress::take_flag(args);
    match f(&args) {
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
    }
}

/// One volume command: its arguments in, success or why not out.
pub(crate) type Command = fn(&[String]) -> Result<(), Fail>;

/// Why a volume command failed: bad usage (status 2), IMAGE not opened (2), the work
/// itself (1).
pub(crate) enum Fail {
    Usage(String),
    Open(String),
    Run(String),
}

/// Open the image file or block device `path` read-only.
pub(crate) fn open_dev(path: &str) -> Result<FileDev, Fail> {
    FileDev::open(Path::new(path)).map_err(|e| Fail::Open(format!("{path}: {e}")))
}

/// Open the image file or block device `path` for reading and writing, locked against
/// another writer of this CLI (`flock`, exclusive, for as long as it is open): two writers
/// would each commit into space the other's commit took. A filesystem without locks is
/// written unlocked.
pub(crate) fn open_dev_rw(path: &str) -> Result<FileDev, Fail> {
    let dev = FileDev::open_rw(Path::new(path)).map_err(|e| Fail::Open(format!("{path}: {e}")))?;
    // SAFETY: flock(2) on a descriptor the device holds open; it touches no memory.
    if unsafe { libc::flock(dev.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(Fail::Open(format!(
                "{path}: in use by another writer (a sync or an import holds it)"
            )));
        }
    }
    Ok(dev)
}

fn run_err(image: &str, e: ReadError) -> Fail {
    Fail::Run(format!("{image}: {e}"))
}

/// `IMAGE@LABEL` split at its last `@`.
pub(crate) fn image_label(arg: &str) -> Option<(&str, &str)> {
    arg.rsplit_once('@')
        .filter(|(i, l)| !i.is_empty() && !l.is_empty())
}

fn open_pfs(arg: &str) -> Result<(Volume<FileDev>, Pfs, String), Fail> {
    let (image, label) =
        image_label(arg).ok_or_else(|| Fail::Usage(format!("'{arg}' is not IMAGE@LABEL")))?;
    let vol = Volume::open(open_dev(image)?).map_err(|e| run_err(image, e))?;
    let pfs = vol
        .pfs(label.as_bytes())
        .map_err(|e| Fail::Run(format!("{image}: PFS '{label}': {e}")))?;
    Ok((vol, pfs, image.to_string()))
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
    let vol = Volume::open(open_dev(image)?).map_err(|e| run_err(image, e))?;
    let mut o = crate::Out::new();
    let r = show::ls_pfses(&mut o, &vol);
    o.finish();
    r.map_err(|e| show_err(image, e))
}

fn ls_path(spec: &str, path: &str) -> Result<(), Fail> {
    let (vol, pfs, image) = open_pfs(spec)?;
    let mut o = crate::Out::new();
    let r = show::ls_path(&mut o, &vol, &pfs, path.as_bytes());
    o.finish();
    r.map_err(|e| show_err(&format!("{image}: {path}"), e))
}

fn show_cmd(args: &[String]) -> Result<(), Fail> {
    let a = show::ShowArgs::parse(args.iter().map(String::as_str))
        .map_err(|e| Fail::Usage(e.to_string()))?;
    let image = a.image;
    let dev = open_dev(image)?;
    let copies = read_copies(&dev).map_err(|e| run_err(image, e))?;
    let vol = match Volume::from_copies(dev, copies.clone()) {
        Ok(v) => v,
        Err(e) => {
            // No copy to open: the table of copies says why each was refused.
            let mut o = crate::Out::new();
            let _ = show::show_copies(&mut o, &copies, None);
            o.finish();
            return Err(run_err(image, e));
        }
    };
    let mut o = crate::Out::new();
    let r = show::show(&mut o, &vol, &copies, a.blockrefs);
    o.finish();
    match r.map_err(|e| show_err(image, e))? {
        Some(c) if c.bad() > 0 => Err(Fail::Run(format!(
            "{image}: {} blocks failed their check code",
            c.bad()
        ))),
        _ => Ok(()),
    }
}

/// A listing's failure; `Out` never refuses a write (it ends the process instead).
fn show_err(what: &str, e: ShowError) -> Fail {
    match e {
        ShowError::Read(e) => Fail::Run(format!("{what}: {e}")),
        ShowError::Output => Fail::Run(format!("{what}: output failed")),
    }
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
    let mut progress = Progress::new("export");
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
        check_entries(&path, &entries)?;
        for e in entries {
            // check_entries refused any name that is not UTF-8.
            let name = String::from_utf8_lossy(&e.name);
            let target = path.join(&*name);
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
                    let mut read = |sink: &mut dyn FnMut(Piece<'_>) -> ReadResult<()>| {
                        pfs.read_pieces(&vol, &ino, sink)
                    };
                    let meta = FileMeta {
                        size: m.size,
                        mode: m.mode & 0o7777,
                        mtime: mtime(&ino),
                    };
                    let before = counts.bytes;
                    let mut tick = |done: u64| {
                        progress.tick(|| {
                            format!(
                                "{} directories, {} files, {} bytes",
                                counts.dirs,
                                counts.files,
                                before + done
                            )
                        })
                    };
                    write_file(&target, &meta, &mut read, &mut tick).map_err(|e| match e {
                        WriteFail::Io(err) => io(&target, err),
                        WriteFail::Read(e) => rd(e),
                    })?;
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
                    set_link_mtime(&target, mtime(&ino)).map_err(|err| io(&target, err))?;
                    counts.links += 1;
                }
                t => {
                    errln!(
                        "hammer2-synchro: export: {}: type {t} skipped",
                        target.display()
                    );
                }
            }
            progress.tick(|| {
                format!(
                    "{} directories, {} files, {} bytes",
                    counts.dirs, counts.files, counts.bytes
                )
            });
        }
    }
    for (path, time, mode) in dirs.iter().rev() {
        // Every directory here was made by create_dir, which no later entry can replace,
        // but the handle is opened without following a link all the same: the times and
        // modes must land on the directory itself, never on what a link names.
        let d = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
            .open(path)
            .map_err(|err| io(path, err))?;
        d.set_modified(*time).map_err(|err| io(path, err))?;
        if path != &root {
            let perm = std::fs::Permissions::from_mode(*mode);
            d.set_permissions(perm).map_err(|err| io(path, err))?;
        }
    }
    drop(progress);
    errln!(
        "export: {} directories, {} files ({} bytes), {} hardlinks, {} symlinks",
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
    let dev = open_dev(image)?;
    let mut shown = Progress::new("fsck");
    let mut progress = |blocks: u64| shown.tick(|| format!("{blocks} blocks checked"));
    let opts = FsckOptions {
        map_limit: MAP_LIMIT_DEFAULT,
        progress: Some(&mut progress),
    };
    let report = fsck(dev, opts);
    drop(shown);
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
    let mut o = crate::Out::new();
    let _ = show::write_fsck(&mut o, image, r);
    o.finish();
}

/// Refuse the entries of directory `dir` that could not each be written as a new name
/// directly in it: an image is untrusted, and a name such as `..` or `a/b`, or a name met
/// twice (a symlink `x` and then a file `x` would write through the link), would lead the
/// export outside DIR.
fn check_entries(dir: &Path, entries: &[Entry]) -> Result<(), Fail> {
    let mut seen: HashSet<&[u8]> = HashSet::new();
    for e in entries {
        let shown = e.name.escape_ascii();
        let bad = |why: &dyn std::fmt::Display| {
            Fail::Run(format!("{}: entry '{shown}': {why}", dir.display()))
        };
        check_name(&e.name).map_err(|why| bad(&why))?;
        if std::str::from_utf8(&e.name).is_err() {
            return Err(bad(&"name is not UTF-8"));
        }
        if !seen.insert(&e.name) {
            return Err(bad(&"name appears twice in the directory"));
        }
    }
    Ok(())
}

/// Set the modification time of symlink `path` itself (never of what it names): std has no
/// call for it, so `utimensat` with `AT_SYMLINK_NOFOLLOW`; the access time is left alone.
fn set_link_mtime(path: &Path, time: SystemTime) -> std::io::Result<()> {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: libc::time_t::try_from(since.as_secs())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?,
            tv_nsec: since.subsec_nanos().into(),
        },
    ];
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and `times` is the array
    // of two timespecs utimensat reads; neither is kept after it returns.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What [`write_file`] sets on the file it creates.
struct FileMeta {
    size: u64,
    mode: u32,
    mtime: SystemTime,
}

/// A file's contents as [`Pfs::read_pieces`] hands them to a sink.
type ReadPieces<'a> = dyn FnMut(&mut dyn FnMut(Piece<'_>) -> ReadResult<()>) -> ReadResult<()> + 'a;

/// Why [`write_file`] stopped.
enum WriteFail {
    Io(std::io::Error),
    Read(ReadError),
}

/// Create `target` (which must not exist: an existing name, a symlink above all, is an
/// error rather than something to write through), fill it from `read`, leaving holes as
/// holes, and set its mode and mtime through the handle. `tick` gets the bytes of the file
/// done after each piece (progress through a large file).
fn write_file(
    target: &Path,
    meta: &FileMeta,
    read: &mut ReadPieces<'_>,
    tick: &mut dyn FnMut(u64),
) -> Result<(), WriteFail> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(WriteFail::Io)?;
    let mut werr = None;
    let mut done = 0u64;
    read(&mut |piece| {
        let len = match piece {
            Piece::Data(bytes) => bytes.len() as u64,
            Piece::Hole(len) => len,
        };
        let r = match piece {
            Piece::Data(bytes) => f.write_all(bytes),
            // A hole is skipped: the file stays sparse, however large the image says it is.
            Piece::Hole(len) => i64::try_from(len)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::FileTooLarge))
                .and_then(|len| f.seek(SeekFrom::Current(len)).map(|_| ())),
        };
        done = done.saturating_add(len);
        tick(done);
        r.map_err(|err| {
            werr = Some(err);
            ReadError::new(Cause::Device(hammer2_synchro::Error::Io), 0)
        })
    })
    .map_err(|e| match werr.take() {
        Some(err) => WriteFail::Io(err),
        None => WriteFail::Read(e),
    })?;
    // A trailing hole moved the offset but wrote nothing: the length makes it part of the file.
    f.set_len(meta.size).map_err(WriteFail::Io)?;
    let perm = std::fs::Permissions::from_mode(meta.mode);
    f.set_permissions(perm).map_err(WriteFail::Io)?;
    f.set_modified(meta.mtime).map_err(WriteFail::Io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("h2s-export-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    fn meta(size: u64) -> FileMeta {
        FileMeta {
            size,
            mode: 0o600,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        }
    }

    fn entry(name: &[u8]) -> Entry {
        Entry {
            name: name.try_into().unwrap(),
            inum: 2,
            objtype: OBJTYPE_REGFILE,
            key: 0,
        }
    }

    fn refused(dir: &Path, names: &[&[u8]]) -> Option<String> {
        let entries: Vec<Entry> = names.iter().map(|n| entry(n)).collect();
        match check_entries(dir, &entries) {
            Ok(()) => None,
            Err(Fail::Run(msg)) => Some(msg),
            Err(_) => panic!("not a run failure"),
        }
    }

    #[test]
    fn a_file_never_writes_through_an_existing_symlink() {
        let dir = scratch("symlink");
        let outside = dir.join("outside");
        std::fs::write(&outside, b"precious").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = dir.join("out");
        std::fs::create_dir(&out).unwrap();
        // What an image's symlink `x -> ../outside` leaves behind before its file `x`.
        std::os::unix::fs::symlink("../outside", out.join("x")).unwrap();
        let mut read =
            |sink: &mut dyn FnMut(Piece<'_>) -> ReadResult<()>| sink(Piece::Data(b"overwritten"));
        match write_file(&out.join("x"), &meta(11), &mut read, &mut |_| {}) {
            Err(WriteFail::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists),
            _ => panic!("wrote through the symlink"),
        }
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
        let m = std::fs::metadata(&outside).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o644, "mode set through the link");
        assert_ne!(m.mtime(), 1_000_000, "mtime set through the link");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_that_leave_the_directory_or_repeat_are_refused() {
        let dir = Path::new("/x/d");
        assert_eq!(refused(dir, &[b"a", b"b", b"a.b"]), None);
        let dup = refused(dir, &[b"x", b"y", b"x"]).unwrap();
        assert!(
            dup.contains("/x/d: entry 'x'") && dup.contains("twice"),
            "{dup}"
        );
        for (name, why) in [
            (&b".."[..], ". or .."),
            (b".", ". or .."),
            (b"", "empty"),
            (b"a/b", "'/'"),
            (b"\xff", "UTF-8"),
        ] {
            let msg = refused(dir, &[b"ok", name]).unwrap();
            assert!(msg.contains(why), "{msg}");
        }
    }

    #[test]
    fn a_huge_hole_is_left_sparse() {
        let dir = scratch("sparse");
        let path = dir.join("f");
        let size = 1u64 << 40;
        let mut read = |sink: &mut dyn FnMut(Piece<'_>) -> ReadResult<()>| {
            sink(Piece::Data(b"head"))?;
            sink(Piece::Hole(1 << 20))?;
            sink(Piece::Data(b"mid"))?;
            sink(Piece::Hole(size - (1 << 20) - 7))
        };
        let start = std::time::Instant::now();
        assert!(write_file(&path, &meta(size), &mut read, &mut |_| {}).is_ok());
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "holes were written out"
        );
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.len(), size);
        // A few blocks for the data, none for the terabyte of hole.
        assert!(
            m.blocks() * 512 < 1 << 20,
            "{} blocks allocated",
            m.blocks()
        );
        assert_eq!(m.mode() & 0o7777, 0o600);
        assert_eq!(m.mtime(), 1_000_000);
        let mut f = std::fs::File::open(&path).unwrap();
        let mut buf = [9u8; 8];
        std::io::Read::read_exact(&mut f, &mut buf[..4]).unwrap();
        assert_eq!(&buf[..4], b"head");
        f.seek(SeekFrom::Start(4 + (1 << 20))).unwrap();
        std::io::Read::read_exact(&mut f, &mut buf[..3]).unwrap();
        assert_eq!(&buf[..3], b"mid");
        f.seek(SeekFrom::Start(100)).unwrap();
        std::io::Read::read_exact(&mut f, &mut buf).unwrap();
        assert_eq!(buf, [0; 8]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
