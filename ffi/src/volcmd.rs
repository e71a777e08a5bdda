//! Volume commands on devices the host opens (`h2s_volume`): one line in, the text the CLI
//! prints for the same command out, so a kernel's output can be compared with the CLI's.
//!
//! - `fsck PATH`: check the volume read-only (the CLI's `fsck` report);
//! - `ls PATH`: its PFSs; `ls PATH@LABEL [DIR]`: a directory of PFS LABEL, or one file;
//! - `show [--blockrefs [--depth N]] PATH`: its header copies and PFSs, then the blockref tree
//!   (the CLI's `show`);
//! - `blockcheck PATH`: the conformance checks of the host's block I/O on a scratch device
//!   (writes to it, then puts the bytes back).
//!
//! - `sync [OPTIONS] PATH@LABEL ...`: the sync threads over those PFSs until converged, then
//!   a commit of every volume that changed (`crate::volsync`).
//!
//! A failure is one line `error: CMD: WHAT: WHY` and the command's `Err`.

use core::fmt::{Display, Write};

use alloc::boxed::Box;
use hammer2_synchro::volume::fsck::MAP_LIMIT_DEFAULT;
use hammer2_synchro::volume::show::{self, ShowArgs, ShowError};

use hammer2_synchro::media::volhdr::NUM_VOLHDRS;
use hammer2_synchro::mem::try_box;
use hammer2_synchro::volume::{
    fsck, read_copies, Cause, FsckOptions, HeaderCopy, ReadError, Volume,
};
use hammer2_synchro::Error;

use crate::block::{self, HostDev};
use crate::volclaim::{Claim, Writer};
use crate::volsync;

/// The usage line an unknown or malformed command gets.
const USAGE: &str = "fsck PATH | ls PATH | ls PATH@LABEL [DIR] | \
                     show [--blockrefs [--depth N]] PATH | blockcheck PATH | sync ...";

/// Run one command line (a trailing newline allowed), writing its text into `out`.
/// `Err(NoSpace)` when the output refused a write (its text is cut there).
#[inline(never)]
pub fn run(line: &[u8], out: &mut dyn Write) -> Result<(), Error> {
    let Ok(text) = core::str::from_utf8(line) else {
        let _ = writeln!(out, "error: the command is not UTF-8");
        return Err(Error::Invalid);
    };
    let mut words = text.split_ascii_whitespace();
    let cmd = words.next().unwrap_or("");
    if cmd == "show" {
        return show_cmd(words, out);
    }
    if cmd == "sync" {
        // At most 8 nodes and their options: more words are refused as usage.
        let mut all: heapless::Vec<&str, 16> = heapless::Vec::new();
        for w in words {
            if all.push(w).is_err() {
                let _ = writeln!(
                    out,
                    "error: sync: usage: too many words: {}",
                    volsync::USAGE
                );
                return Err(Error::Invalid);
            }
        }
        return volsync::run(&all, out);
    }
    let mut args: [&str; 3] = [""; 3];
    let mut n = 0;
    for w in words {
        if n == args.len() {
            n += 1;
            break;
        }
        args[n] = w;
        n += 1;
    }
    let r = match (cmd, &args[..n.min(args.len())], n) {
        ("fsck", [path], 1) => fsck_cmd(path, out),
        ("ls", [path], 1) if !path.contains('@') => ls_pfses(path, out),
        ("ls", [spec], 1) => ls_path(spec, "/", out),
        ("ls", [spec, dir], 2) => ls_path(spec, dir, out),
        ("blockcheck", [path], 1) => {
            let _claim = match Claim::take(Writer::BlockCheck) {
                Ok(c) => c,
                Err(holder) => {
                    let _ = writeln!(out, "error: blockcheck: busy: a volume {holder} is running");
                    return Err(Error::Busy);
                }
            };
            let (passed, failed) = block::conformance(path.as_bytes(), out);
            let _ = writeln!(out, "# {passed} passed, {failed} failed");
            if failed == 0 {
                Ok(())
            } else {
                Err(Error::Io)
            }
        }
        _ => {
            let _ = writeln!(out, "error: usage: {USAGE}");
            Err(Error::Invalid)
        }
    };
    r
}

/// Write `error: CMD: WHAT: WHY` and give `e`.
#[inline(never)]
fn fail(out: &mut dyn Write, cmd: &str, what: &dyn Display, why: &dyn Display, e: Error) -> Error {
    let _ = writeln!(out, "error: {cmd}: {what}: {why}");
    e
}

fn open(cmd: &str, path: &str, out: &mut dyn Write) -> Result<HostDev, Error> {
    HostDev::open(path.as_bytes(), false).map_err(|e| fail(out, cmd, &path, &e, e.error()))
}

/// The error of a listing: an interrupted run says so, a full output is `NoSpace`.
fn show_fail(out: &mut dyn Write, dev: &HostDev, what: &dyn Display, e: ShowError) -> Error {
    listing_fail(out, "ls", dev, what, e)
}

/// [`show_fail`] for command `cmd`.
fn listing_fail(
    out: &mut dyn Write,
    cmd: &str,
    dev: &HostDev,
    what: &dyn Display,
    e: ShowError,
) -> Error {
    match e {
        _ if dev.interrupted() => fail(out, cmd, what, &"interrupted", Error::Interrupted),
        ShowError::Read(e) => fail(out, cmd, what, &e, e.into()),
        ShowError::Output => Error::NoSpace,
    }
}

/// The volume on `dev`, on the heap: a kernel stack is small, and the listings that follow
/// walk the tree below this frame.
#[inline(never)]
fn open_volume(dev: &HostDev) -> Result<Box<Volume<&HostDev>>, ReadError> {
    let vol = Volume::open(dev)?;
    try_box(vol).map_err(|_| ReadError::new(Cause::NoMem, 0))
}

#[inline(never)]
fn ls_pfses(path: &str, out: &mut dyn Write) -> Result<(), Error> {
    let dev = open("ls", path, out)?;
    let vol = match open_volume(&dev) {
        Ok(v) => v,
        Err(e) => return Err(show_fail(out, &dev, &path, ShowError::Read(e))),
    };
    show::ls_pfses(out, &vol).map_err(|e| show_fail(out, &dev, &path, e))
}

#[inline(never)]
fn ls_path(spec: &str, dir: &str, out: &mut dyn Write) -> Result<(), Error> {
    let Some((path, label)) = spec
        .rsplit_once('@')
        .filter(|(p, l)| !p.is_empty() && !l.is_empty())
    else {
        return Err(fail(out, "ls", &spec, &"not PATH@LABEL", Error::Invalid));
    };
    let dev = open("ls", path, out)?;
    let vol = match open_volume(&dev) {
        Ok(v) => v,
        Err(e) => return Err(show_fail(out, &dev, &path, ShowError::Read(e))),
    };
    let pfs = match vol.pfs_box(label.as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            let what = format_args!("{path}: PFS '{label}'");
            return Err(show_fail(out, &dev, &what, ShowError::Read(e)));
        }
    };
    show::ls_path(out, &vol, &pfs, dir.as_bytes())
        .map_err(|e| show_fail(out, &dev, &format_args!("{path}: {dir}"), e))
}

/// `show [--blockrefs [--depth N]] PATH`: the CLI's text; a block that failed its check code
/// makes it end with an error line (the CLI says so on stderr and exits 1).
#[inline(never)]
fn show_cmd<'a>(args: impl Iterator<Item = &'a str>, out: &mut dyn Write) -> Result<(), Error> {
    let a = match ShowArgs::parse(args) {
        Ok(a) => a,
        Err(e) => return Err(fail(out, "show", &"usage", &e, Error::Invalid)),
    };
    let path = a.image;
    let dev = open("show", path, out)?;
    let copies = match read_copies(&dev) {
        Ok(c) => c,
        Err(e) => return Err(listing_fail(out, "show", &dev, &path, ShowError::Read(e))),
    };
    let vol = match open_from_copies(&dev, &copies) {
        Ok(v) => v,
        Err(e) => {
            // No copy to open: the table of copies says why each was refused, as in the CLI.
            let _ = show::show_copies(out, &copies, None);
            return Err(listing_fail(out, "show", &dev, &path, ShowError::Read(e)));
        }
    };
    match show::show(out, &vol, &copies, a.blockrefs) {
        Ok(Some(c)) if c.bad() > 0 => {
            let why = format_args!("{} blocks failed their check code", c.bad());
            Err(fail(out, "show", &path, &why, Error::Io))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(listing_fail(out, "show", &dev, &path, e)),
    }
}

/// The volume of header `copies` (read from `dev`), on the heap as [`open_volume`]'s; the
/// copies stay for `show` to print, so the volume gets its own (the headers copied into new
/// boxes, fallibly).
#[inline(never)]
fn open_from_copies<'d>(
    dev: &'d HostDev,
    copies: &[HeaderCopy; NUM_VOLHDRS],
) -> Result<Box<Volume<&'d HostDev>>, ReadError> {
    let no_mem = |_| ReadError::new(Cause::NoMem, 0);
    let mut own = [const { HeaderCopy::Absent }; NUM_VOLHDRS];
    for (o, c) in own.iter_mut().zip(copies) {
        *o = match c {
            HeaderCopy::Read(Ok(h)) => {
                HeaderCopy::Read(Ok(try_box((**h).clone()).map_err(no_mem)?))
            }
            HeaderCopy::Read(Err(e)) => HeaderCopy::Read(Err(*e)),
            HeaderCopy::Unreadable(at, e) => HeaderCopy::Unreadable(*at, *e),
            HeaderCopy::Absent => HeaderCopy::Absent,
        };
    }
    let vol = Volume::from_copies(dev, own)?;
    try_box(vol).map_err(no_mem)
}

#[inline(never)]
fn fsck_cmd(path: &str, out: &mut dyn Write) -> Result<(), Error> {
    let dev = open("fsck", path, out)?;
    let opts = FsckOptions {
        map_limit: MAP_LIMIT_DEFAULT,
        progress: None,
    };
    let report = fsck(&dev, opts);
    if dev.interrupted() {
        return Err(fail(out, "fsck", &path, &"interrupted", Error::Interrupted));
    }
    let r = match report {
        Ok(r) => r,
        Err(e) if e.cause == Cause::TooBig => {
            let why = TooLarge(e.at);
            return Err(fail(out, "fsck", &path, &why, Error::TooBig));
        }
        Err(e) => return Err(fail(out, "fsck", &path, &e, e.into())),
    };
    show::write_fsck(out, path, &r).map_err(|_| Error::NoSpace)
}

/// A filesystem whose map of reachable blocks would pass fsck's limit.
struct TooLarge(u64);

impl core::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "a {} byte filesystem needs a map of reachable blocks over fsck's {} MiB limit",
            self.0,
            MAP_LIMIT_DEFAULT >> 20
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testhost::BLOCK_SERIAL as SERIAL;
    use crate::testhost::{
        newfs_image, volume_cmd, ResetKnobs, BLOCK_CHUNK, BLOCK_OPEN, STOPPED, STOP_HERE,
        WRITE_HOOK,
    };
    use hammer2_synchro::media::PFSTYPE_MASTER;
    use hammer2_synchro::volume::NewPfs;
    use std::sync::atomic::Ordering;

    fn scratch(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("h2s-ffi-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    /// A 48 MiB volume with PFSs `a` and `b`, made through the host's block ops.
    fn volume(name: &str) -> String {
        let pfs = |label: &'static [u8], n: u8| NewPfs {
            label,
            pfs_type: PFSTYPE_MASTER,
            clid: [7; 16],
            fsid: [n; 16],
            nmasters: 1,
        };
        newfs_image(&scratch(name), &[pfs(b"a", 1), pfs(b"b", 2)])
    }

    fn vol(cmd: &str) -> (i32, String) {
        volume_cmd(cmd, 1 << 16)
    }

    /// Each of `cmds` fails with EINVAL and a text starting with `prefix`.
    fn refused(cmds: &[&str], prefix: &str) {
        for bad in cmds {
            let (rc, text) = vol(bad);
            assert_eq!(rc, -22, "{bad:?}: {text}");
            assert!(text.starts_with(prefix), "{bad:?}: {text}");
        }
    }

    #[test]
    fn fsck_and_ls_of_a_fresh_volume() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let img = volume("fresh");
        let (rc, text) = vol(&format!("fsck {img}\n"));
        assert_eq!(rc, 0, "{text}");
        assert!(
            text.starts_with("volume header copies:\n  0 at 0x0: valid"),
            "{text}"
        );
        assert!(text.contains("in use"), "{text}");
        assert!(text.ends_with(&format!("{img}: clean\n")), "{text}");
        let (rc, text) = vol(&format!("ls {img}"));
        assert_eq!(rc, 0, "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("# volume 50331648 bytes"), "{text}");
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("a pfs_type 6 ") || lines[2].starts_with("a pfs_type 6 "));
        let (rc, text) = vol(&format!("ls {img}@b /"));
        assert_eq!((rc, text.as_str()), (0, ""));
        let (rc, text) = vol(&format!("ls {img}@zz"));
        assert_eq!(rc, -2, "{text}");
        assert!(
            text.starts_with(&format!("error: ls: {img}: PFS 'zz': not found (at ")),
            "{text}"
        );
        std::fs::remove_file(&img).unwrap();
        assert_eq!(BLOCK_OPEN.load(Ordering::SeqCst), 0, "a device left open");
    }

    /// What the CLI prints for `show` (the library's text over the userland file device).
    fn cli_show(img: &str, blockrefs: Option<usize>) -> String {
        use hammer2_synchro::volume::FileDev;
        let dev = FileDev::open(std::path::Path::new(img)).unwrap();
        let copies = read_copies(&dev).unwrap();
        let vol = Volume::from_copies(dev, copies.clone()).unwrap();
        let mut text = String::new();
        show::show(&mut text, &vol, &copies, blockrefs).unwrap();
        text
    }

    #[test]
    fn show_prints_what_the_cli_prints() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let img = volume("show");
        let (rc, text) = vol(&format!("show {img}"));
        assert_eq!(rc, 0, "{text}");
        assert!(text.starts_with("volume: 50331648 bytes"), "{text}");
        assert_eq!(text, cli_show(&img, None));
        let (rc, text) = vol(&format!("show --blockrefs {img}"));
        assert_eq!(rc, 0, "{text}");
        assert!(text.contains("\nblockrefs:\ninode key "), "{text}");
        assert_eq!(text, cli_show(&img, Some(usize::MAX)));
        let (rc, text) = vol(&format!("show --blockrefs --depth 0 {img}"));
        assert_eq!(rc, 0, "{text}");
        assert!(text.contains(" tables below --depth not shown; "), "{text}");
        assert!(
            !text.contains(" 0 tables below --depth not shown"),
            "{text}"
        );
        assert_eq!(text, cli_show(&img, Some(0)));
        // A full buffer cuts the tree; bad arguments are usage errors.
        let (rc, cut) = volume_cmd(&format!("show --blockrefs {img}"), 600);
        assert_eq!((rc, cut.len()), (-28, 600));
        refused(
            &[
                "show",
                "show --depth 1 x",
                "show --blockrefs --depth x y",
                "show -q x",
                "show a b",
            ],
            "error: show: usage: ",
        );
        let (rc, text) = vol("show /nonexistent/x.img");
        assert_eq!(rc, -2, "{text}");
        std::fs::remove_file(&img).unwrap();
        assert_eq!(BLOCK_OPEN.load(Ordering::SeqCst), 0, "a device left open");
    }

    /// Import into PFS `a` of `img` one file `f` of a 64 KiB data block; the block's offset.
    fn import_file(img: &str) -> u64 {
        use hammer2_synchro::media::OBJTYPE_REGFILE;
        use hammer2_synchro::media::{InodeMeta, CHECK_XXHASH64, OBJTYPE_DIRECTORY};
        use hammer2_synchro::volume::{DirEntries, Import};
        let meta = |objtype, inum, size| {
            let mut m = InodeMeta::new(objtype, inum, 0o644);
            m.nlinks = 1;
            m.size = size;
            m.check_algo = CHECK_XXHASH64;
            m
        };
        let dev = HostDev::open(img.as_bytes(), true).unwrap();
        let vol = Volume::open(&dev).unwrap();
        let mut imp = Import::begin(&vol, b"a").unwrap();
        let inum = imp.new_inum().unwrap();
        let mut table = Vec::new();
        imp.data(&mut table, 0, &[0x77u8; 65536]).unwrap();
        imp.file(meta(OBJTYPE_REGFILE, inum, 65536), None, &table)
            .unwrap();
        let mut root = DirEntries::new();
        imp.entry(&mut root, b"f", inum, OBJTYPE_REGFILE).unwrap();
        imp.commit(&meta(OBJTYPE_DIRECTORY, 1, 0), &root).unwrap();
        table[0].data_off & !0x3f
    }

    #[test]
    fn show_of_a_damaged_block_ends_with_an_error_line() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let img = volume("show-bad");
        let off = import_file(&img);
        let (rc, text) = vol(&format!("show --blockrefs {img}"));
        assert_eq!(rc, 0, "{text}");
        assert_eq!(text, cli_show(&img, Some(usize::MAX)));
        let f = std::fs::File::options().write(true).open(&img).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[0x78], off + 100).unwrap();
        let (rc, text) = vol(&format!("show --blockrefs {img}"));
        assert_eq!(rc, -5, "{text}");
        let failed: Vec<&str> = text.lines().filter(|l| l.contains("FAILED")).collect();
        assert_eq!(failed.len(), 1, "{text}");
        assert!(failed[0].trim_start().starts_with("data key "), "{text}");
        assert!(
            text.ends_with(&format!(
                "error: show: {img}: 1 blocks failed their check code\n"
            )),
            "{text}"
        );
        std::fs::remove_file(&img).unwrap();
        assert_eq!(BLOCK_OPEN.load(Ordering::SeqCst), 0, "a device left open");
    }

    #[test]
    fn transfers_in_pieces_give_the_same_text() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let img = volume("pieces");
        let whole = vol(&format!("fsck {img}"));
        BLOCK_CHUNK.store(1000, Ordering::SeqCst);
        let pieces = vol(&format!("fsck {img}"));
        BLOCK_CHUNK.store(0, Ordering::SeqCst);
        assert_eq!(whole, pieces);
        assert_eq!(whole.0, 0);
        std::fs::remove_file(&img).unwrap();
    }

    #[test]
    fn bad_input_is_an_error_line() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir();
        let dir = dir.to_str().unwrap();
        let (rc, text) = vol("fsck /nonexistent/x.img");
        assert_eq!(rc, -2);
        assert_eq!(
            text,
            "error: fsck: /nonexistent/x.img: no such file or directory (errno 2)\n"
        );
        let (rc, text) = vol(&format!("ls {dir}@a"));
        assert_eq!(rc, -21, "{text}");
        assert!(text.ends_with("is a directory (errno 21)\n"), "{text}");
        // A file that is no volume, and one cut short: clean errors, no device left open.
        let zeros = scratch("zeros");
        std::fs::write(&zeros, vec![0u8; 1 << 20]).unwrap();
        let (rc, text) = vol(&format!("ls {}", zeros.display()));
        assert_eq!(rc, -22, "{text}");
        assert!(
            text.contains(": bad volume header magic (at 0x0)"),
            "{text}"
        );
        // `show` first tells why each header copy was refused, as the CLI does.
        let (rc, text) = vol(&format!("show {}", zeros.display()));
        assert_eq!(rc, -22, "{text}");
        assert!(
            text.starts_with("header copies:\n  0 at 0x0: refused: bad volume header magic\n"),
            "{text}"
        );
        assert!(
            text.ends_with(": bad volume header magic (at 0x0)\n"),
            "{text}"
        );
        let img = volume("cut");
        std::fs::File::options()
            .write(true)
            .open(&img)
            .unwrap()
            .set_len(20 << 20)
            .unwrap();
        let (rc, text) = vol(&format!("ls {img}@a"));
        assert_eq!(rc, -22, "{text}");
        assert!(text.contains(": invalid field `volu_size`"), "{text}");
        refused(
            &[
                "",
                "fsck",
                "fsck a b",
                "ls a b c d",
                "sync x",
                "ls @a",
                "ls x@",
            ],
            "error: ",
        );
        assert_eq!(volume_cmd("\u{ff}", 100).0, -22);
        let long = "x".repeat(crate::api::H2S_VOLUME_CMD_MAX + 1);
        assert_eq!(vol(&long), (-7, String::new()));
        std::fs::remove_file(&zeros).unwrap();
        std::fs::remove_file(&img).unwrap();
        assert_eq!(BLOCK_OPEN.load(Ordering::SeqCst), 0, "a device left open");
    }

    #[test]
    fn a_killed_caller_and_a_full_buffer_stop_the_command() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let img = volume("stop");
        STOP_HERE.with(|s| s.set(true));
        let (rc, text) = vol(&format!("fsck {img}"));
        STOP_HERE.with(|s| s.set(false));
        assert_eq!(
            (rc, text),
            (-4, format!("error: fsck: {img}: interrupted\n"))
        );
        let (rc, text) = volume_cmd(&format!("fsck {img}"), 30);
        assert_eq!((rc, text.len()), (-28, 30));
        std::fs::remove_file(&img).unwrap();
    }

    #[test]
    fn blockcheck_passes_on_the_test_host() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let img = scratch("blockcheck");
        std::fs::write(&img, vec![0x5au8; 256 << 10]).unwrap();
        BLOCK_CHUNK.store(4096, Ordering::SeqCst);
        let (rc, text) = vol(&format!("blockcheck {}", img.display()));
        BLOCK_CHUNK.store(0, Ordering::SeqCst);
        assert_eq!(rc, 0, "{text}");
        assert!(text.ends_with("# 6 passed, 0 failed\n"), "{text}");
        assert_eq!(
            std::fs::read(&img).unwrap(),
            vec![0x5au8; 256 << 10],
            "not restored"
        );
        // Too small a device is a failed check, not a crash.
        std::fs::write(&img, [0u8; 1000]).unwrap();
        let (rc, text) = vol(&format!("blockcheck {}", img.display()));
        assert_eq!(rc, -5, "{text}");
        assert!(text.contains("not ok size_reported"), "{text}");
        std::fs::remove_file(&img).unwrap();
    }

    #[test]
    fn blockcheck_killed_mid_write_puts_the_bytes_back() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let img = scratch("blockcheck-kill");
        std::fs::write(&img, vec![0x5au8; 256 << 10]).unwrap();
        let _reset = ResetKnobs;
        // The pattern's first 4 KiB reach the device (the host's second write: the first is
        // the read-only handle's, refused), then the caller is killed: its next transfer is
        // refused, the check fails, and the saved bytes go back all the same.
        BLOCK_CHUNK.store(4096, Ordering::SeqCst);
        let me = std::thread::current().id();
        let mut writes = 0;
        *WRITE_HOOK.lock().unwrap() = Some(Box::new(move || {
            writes += 1;
            if writes == 2 {
                *STOPPED.lock().unwrap() = Some(me);
            }
        }));
        let (rc, text) = vol(&format!("blockcheck {}", img.display()));
        assert_eq!(rc, -5, "{text}");
        assert!(
            text.contains("not ok write_flush_reopen_read: write failed"),
            "{text}"
        );
        assert!(
            std::fs::read(&img).unwrap() == vec![0x5au8; 256 << 10],
            "not restored: {text}"
        );
        std::fs::remove_file(&img).unwrap();
    }

    #[test]
    fn blockcheck_is_busy_while_a_volume_writer_runs() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let img = scratch("blockcheck-busy");
        std::fs::write(&img, vec![0x5au8; 256 << 10]).unwrap();
        let held = Claim::take(Writer::Sync).unwrap();
        let (rc, text) = vol(&format!("blockcheck {}", img.display()));
        drop(held);
        assert_eq!(
            (rc, text.as_str()),
            (-16, "error: blockcheck: busy: a volume sync is running\n")
        );
        assert!(std::fs::read(&img).unwrap() == vec![0x5au8; 256 << 10]);
        let (rc, text) = vol(&format!("blockcheck {}", img.display()));
        assert_eq!(rc, 0, "{text}");
        std::fs::remove_file(&img).unwrap();
    }
}
