//! What a storage admin expects of the volume commands: progress on stderr only when stderr
//! is a terminal or `--progress` is given (stdout the same either way, a few lines a second
//! at most); `sync --watch` committing periodically while it runs; `import` refusing a PFS
//! that holds something unless `--replace`; `show` with its header copies, PFSs, blockref
//! tree and freemap; `--help` of every command with usage, options and an example.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
#[path = "common/tree.rs"]
mod tree;
use common::{cli, tmp};
use tree::{assert_same, export, fsck_clean};

const CLID: &str = "01234567-89ab-cdef-0123-456789abcdef";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hammer2-synchro"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run the CLI with `args`; it must end with exit status `code`.
fn exits(code: i32, args: &[&str]) -> Output {
    let o = bin().args(args).output().unwrap();
    assert_eq!(o.status.code(), Some(code), "{args:?}: {o:?}");
    o
}

/// Run the CLI in directory `dir` (so its output names relative paths); it must succeed.
fn cli_in(dir: &Path, args: &[&str]) -> Output {
    let o = bin().current_dir(dir).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    o
}

fn newfs(img: &Path, role: &str, size: &str) {
    cli(&[
        "newfs",
        s(img),
        "--size",
        size,
        "--pfs",
        &format!("DATA:{role}"),
        "--clid",
        CLID,
    ]);
}

/// A tree of `files` small files in a few directories, contents from `seed`.
fn make_tree(root: &Path, files: usize, seed: u32) {
    let mut bytes = common::bytes(seed);
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 7));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("f{i}")), bytes(1 + i % 300)).unwrap();
    }
    fs::write(root.join("big"), bytes(300_000)).unwrap();
    std::os::unix::fs::symlink("big", root.join("link")).unwrap();
}

/// The lines of `stderr` that start with `cmd: ` and satisfy `is_progress`.
fn progress_lines(stderr: &[u8], cmd: &str, is_progress: impl Fn(&str) -> bool) -> usize {
    text(stderr)
        .lines()
        .filter(|l| l.strip_prefix(cmd).is_some_and(|r| r.starts_with(": ")))
        .filter(|l| is_progress(l))
        .count()
}

/// At most four progress lines a second, plus the first of each phase shown at once.
fn few_per_second(lines: usize, phases: usize, since: Instant) {
    let allowed = phases + 4 * (since.elapsed().as_secs() as usize + 1);
    assert!(
        lines <= allowed,
        "{lines} progress lines, at most {allowed}"
    );
}

#[test]
fn progress_is_on_stderr_only_when_asked_and_stdout_does_not_change() {
    let d = tmp("progress");
    // 2500 files: more than 4096 blockrefs for fsck, more than 1024 chains for a load.
    make_tree(&d.join("tree"), 2500, 1);
    let tree = s(&d.join("tree")).to_string();
    // Two like volumes at the same relative name, so stdout can be compared byte for byte.
    let (quiet, loud) = (d.join("quiet"), d.join("loud"));
    for dir in [&quiet, &loud] {
        fs::create_dir(dir).unwrap();
        newfs(&dir.join("m.img"), "master", "256M");
        newfs(&dir.join("s.img"), "slave", "256M");
    }

    // stderr is a pipe here, not a terminal: without --progress, no progress.
    let q = cli_in(&quiet, &["import", &tree, "m.img@DATA"]);
    let t = Instant::now();
    let l = cli_in(&loud, &["import", "--progress", &tree, "m.img@DATA"]);
    assert_eq!(text(&q.stdout), text(&l.stdout));
    let objects = |x: &str| x.contains(" objects");
    assert_eq!(progress_lines(&q.stderr, "import", objects), 0, "{q:?}");
    let n = progress_lines(&l.stderr, "import", objects);
    assert!(n >= 1, "{}", text(&l.stderr));
    few_per_second(n, 2, t);

    let is_fsck = |x: &str| x.contains("blocks checked");
    let q = cli_in(&quiet, &["fsck", "m.img"]);
    let l = cli_in(&loud, &["fsck", "m.img", "--progress"]);
    assert_eq!(text(&q.stdout), text(&l.stdout));
    assert_eq!(progress_lines(&q.stderr, "fsck", is_fsck), 0);
    assert!(progress_lines(&l.stderr, "fsck", is_fsck) >= 1, "{l:?}");

    // The running count ("N files, ") is progress; the summary ("N files (B bytes)") is not.
    let is_export = |x: &str| x.contains(" files, ");
    let q = cli_in(&quiet, &["export", "m.img@DATA", "out"]);
    let l = cli_in(&loud, &["export", "--progress", "m.img@DATA", "out"]);
    assert_eq!(text(&q.stdout), text(&l.stdout));
    assert_eq!(progress_lines(&q.stderr, "export", is_export), 0);
    assert!(progress_lines(&l.stderr, "export", is_export) >= 1, "{l:?}");
    for o in [&q, &l] {
        assert!(text(&o.stderr).contains("2501 files ("), "{o:?}");
    }

    let is_sync = |x: &str| x.starts_with("sync: loading ") || x.starts_with("sync: committing ");
    let t = Instant::now();
    let q = cli_in(&quiet, &["sync", "m.img@DATA", "s.img@DATA"]);
    let l = cli_in(&loud, &["sync", "--progress", "m.img@DATA", "s.img@DATA"]);
    assert_eq!(text(&q.stdout), text(&l.stdout));
    assert_eq!(progress_lines(&q.stderr, "sync", is_sync), 0, "{q:?}");
    let err = text(&l.stderr);
    assert!(
        err.contains("sync: loading m.img@DATA: ") && err.contains("sync: committing s.img@DATA: "),
        "{err}"
    );
    // Two loads and a commit, each showing its first line at once.
    few_per_second(progress_lines(&l.stderr, "sync", is_sync), 3, t);
    fs::remove_dir_all(&d).unwrap();
}

/// Kills a child running `--watch` when dropped (a failed assertion must not leave it
/// running) or after two minutes (a `--watch` that never prints what the test waits for fails
/// the test rather than hanging it), unless [`Watchdog::reaped`] said it was waited for.
struct Watchdog {
    pid: u32,
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn new(pid: u32) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(120));
            kill_unless_reaped(pid, &flag);
        });
        Watchdog { pid, done }
    }

    fn reaped(&self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

fn kill_unless_reaped(pid: u32, done: &AtomicBool) {
    if !done.swap(true, Ordering::SeqCst) {
        // SAFETY: a plain kill(2) of the test's own child, not yet waited for.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        kill_unless_reaped(self.pid, &self.done);
    }
}

/// Start the CLI with `args`, its stderr piped, under a [`Watchdog`].
fn spawn_watched(args: &[&str]) -> (std::process::Child, std::process::ChildStderr, Watchdog) {
    let mut child = bin().args(args).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let dog = Watchdog::new(child.id());
    (child, stderr, dog)
}

/// Read `child`'s stderr into `seen` until it holds `want`.
fn read_until(stderr: &mut impl Read, seen: &mut String, want: &str) {
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "ended before '{want}': {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Read `child`'s stderr into `seen` until it holds `want` after the first `mark`.
fn read_until_after(stderr: &mut impl Read, seen: &mut String, mark: &str, want: &str) {
    let mut buf = [0u8; 4096];
    loop {
        let at = seen.find(mark).map(|i| i + mark.len());
        if at.is_some_and(|i| seen[i..].contains(want)) {
            return;
        }
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "ended before '{want}' after '{mark}': {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// The mirror_tid (`0x...`) of the first commit of `spec` reported in `log`.
fn committed_tid(log: &str, spec: &str) -> String {
    let mark = format!("sync: {spec}: committed, mirror_tid ");
    let at = log
        .find(&mark)
        .unwrap_or_else(|| panic!("no commit of {spec}: {log}"));
    let tid = &log[at + mark.len()..];
    tid[..tid.find(' ').unwrap()].to_string()
}

#[test]
fn watch_commits_every_few_seconds_while_it_runs() {
    let d = tmp("every");
    let (m, sl) = (d.join("m.img"), d.join("s.img"));
    newfs(&m, "master", "1G");
    newfs(&sl, "slave", "1G");
    make_tree(&d.join("t"), 40, 2);
    cli(&["import", s(&d.join("t")), &format!("{}@DATA", s(&m))]);
    let (ms, ss) = (format!("{}@DATA", s(&m)), format!("{}@DATA", s(&sl)));
    let (mut child, mut stderr, dog) =
        spawn_watched(&["sync", "--watch", "--commit-every", "1", &ms, &ss]);
    let mut seen = String::new();
    // The live status line names each node's role and thread state.
    read_until(&mut stderr, &mut seen, "slave running in sync");
    read_until(&mut stderr, &mut seen, "converged");
    // 40 files converge long before the first commit is due, so the first periodic commit
    // comes after convergence and writes the whole tree to the slave's volume (and leaves the
    // master's, which did not change).
    let at = seen.find("converged").unwrap();
    assert!(!seen[..at].contains("periodic commit"), "{seen}");
    let mut after = seen.split_off(at);
    read_until(&mut stderr, &mut after, "periodic commit: ");
    read_until_after(&mut stderr, &mut after, "periodic commit: ", "\n");
    assert!(
        after.contains("sync: periodic commit: 1 of 2 volumes written\n"),
        "{after}"
    );
    let tid = committed_tid(&after, &ss);
    // The status line then shows the mirror_tid the slave's volume was committed at.
    let mut later = String::new();
    read_until(
        &mut stderr,
        &mut later,
        &format!("{ss} slave running in sync committed {tid} "),
    );
    seen.push_str(&after);
    seen.push_str(&later);
    assert!(child.try_wait().unwrap().is_none(), "--watch ended: {seen}");
    // Still running: the slave's volume already holds the master's tree, fsck-clean.
    let o = cli(&["fsck", s(&sl)]);
    assert!(text(&o.stdout).ends_with(": clean\n"));
    cli(&["export", &ms, s(&d.join("om"))]);
    cli(&["export", &ss, s(&d.join("os"))]);
    for f in ["big", "link", "d3/f10", "d4/f39"] {
        let (a, b) = (d.join("om").join(f), d.join("os").join(f));
        assert_eq!(
            fs::symlink_metadata(&a).unwrap().len(),
            fs::symlink_metadata(&b).unwrap().len()
        );
        if !fs::symlink_metadata(&a).unwrap().is_symlink() {
            assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "{f}");
        }
    }
    // SIGTERM (a service manager's stop) ends it as Ctrl-C does.
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    stderr.read_to_string(&mut seen).unwrap();
    let st = child.wait().unwrap();
    dog.reaped();
    assert!(st.success(), "{seen}");
    // Everything was committed already: nothing is left for the end.
    assert!(
        seen.contains("sync: done: 0 of 2 volumes written\n"),
        "{seen}"
    );

    let o = exits(2, &["sync", "--commit-every", "5", &ms, &ss]);
    assert!(text(&o.stderr).contains("--commit-every is for --watch"));
    fs::remove_dir_all(&d).unwrap();
}

/// SIGKILL our own child `child` (a crash: nothing after it runs).
fn crash(child: &mut std::process::Child) {
    // SAFETY: a plain kill(2) of our own child, not yet waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    child.wait().unwrap();
}

#[test]
fn a_crash_after_a_periodic_commit_mid_sync_leaves_a_volume_a_plain_sync_finishes() {
    let d = tmp("midsync");
    let (m, sl) = (d.join("m.img"), d.join("s.img"));
    newfs(&m, "master", "1G");
    newfs(&sl, "slave", "1G");
    // One large directory, every read of it stalled: its sync takes many times
    // --commit-every 0.05 however fast the machine.
    let t = d.join("t");
    fs::create_dir(&t).unwrap();
    let mut bytes = common::bytes(7);
    for i in 0..MIDSYNC_FILES {
        fs::write(t.join(format!("f{i}")), bytes(1 + i % 100)).unwrap();
    }
    let (ms, ss) = (format!("{}@DATA", s(&m)), format!("{}@DATA", s(&sl)));
    cli(&["import", s(&t), &ms]);
    let (mut child, mut stderr, dog) = spawn_watched(&[
        "sync",
        "--watch",
        "--commit-every",
        "0.05",
        "--stall-reads-us",
        "300",
        &ms,
        &ss,
    ]);
    let mut seen = String::new();
    // The first commit that wrote part of the slave's tree (an earlier one may have found
    // nothing synced yet).
    read_until(
        &mut stderr,
        &mut seen,
        "periodic commit: 1 of 2 volumes written",
    );
    crash(&mut child);
    dog.reaped();
    assert!(!seen.contains("converged"), "converged first: {seen}");
    // The volume holds a consistent part of the tree (what was synced up to that commit).
    fsck_clean(&sl);
    // A plain sync takes it from there: it loads more than newfs's empty root.
    let o = cli(&["sync", &ms, &ss]);
    let err = text(&o.stderr);
    let mark = format!("sync: loaded {ss} as slave: ");
    let chains = &err[err.find(&mark).unwrap() + mark.len()..];
    let chains: usize = chains[..chains.find(' ').unwrap()].parse().unwrap();
    assert!(chains > 1, "{err}");
    assert!(err.contains("sync: done: 1 of 2 volumes written"), "{err}");
    fsck_clean(&sl);
    assert_same(
        &export(&ss, &d.join("os")),
        &export(&ms, &d.join("om")),
        &ss,
    );
    fs::remove_dir_all(&d).unwrap();
}

/// Files of the directory that takes a few seconds to sync.
const MIDSYNC_FILES: usize = 4000;

/// The bytes of file `p`.
fn bytes_of(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap()
}

#[test]
fn import_into_a_pfs_with_content_needs_replace() {
    let d = tmp("replace");
    let img = d.join("m.img");
    newfs(&img, "master", "256M");
    let spec = format!("{}@DATA", s(&img));
    // An empty PFS (as newfs leaves it) takes an import without --replace.
    make_tree(&d.join("one"), 5, 3);
    cli(&["import", s(&d.join("one")), &spec]);
    fs::create_dir(d.join("two")).unwrap();
    fs::write(d.join("two/other"), b"other").unwrap();

    let before = bytes_of(&img);
    let o = exits(1, &["import", s(&d.join("two")), &spec]);
    let err = text(&o.stderr);
    assert!(
        err.contains("is not empty") && err.contains("--replace"),
        "{err}"
    );
    assert!(
        bytes_of(&img) == before,
        "a refused import wrote to the volume"
    );
    cli(&["export", &spec, s(&d.join("out1"))]);
    assert_eq!(bytes_of(&d.join("out1/big")), bytes_of(&d.join("one/big")));

    cli(&["import", "--replace", s(&d.join("two")), &spec]);
    cli(&["export", &spec, s(&d.join("out2"))]);
    let names: Vec<_> = fs::read_dir(d.join("out2"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["other"]);
    assert_eq!(bytes_of(&d.join("out2/other")), b"other");
    exits(2, &["import", "--merge", s(&d.join("two")), &spec]);
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn show_prints_header_copies_pfses_and_the_blockref_tree() {
    let d = tmp("show");
    let img = d.join("v.img");
    // Past 2 GiB + 64 KiB: two header copies.
    cli(&[
        "newfs",
        s(&img),
        "--size",
        "3G",
        "--pfs",
        "DATA:master",
        "--pfs",
        "B:slave",
        "--clid",
        CLID,
    ]);
    make_tree(&d.join("t"), 3, 4);
    cli(&["import", s(&d.join("t")), &format!("{}@DATA", s(&img))]);
    let out = text(&cli(&["show", s(&img)]).stdout);
    assert!(out.contains("header copies:"), "{out}");
    // The import's commit went to the second copy; the first keeps newfs's.
    assert!(out.contains("  0 at 0x0: mirror_tid 0x"), "{out}");
    assert!(out.contains("  1 at 0x80000000: mirror_tid 0x"), "{out}");
    assert_eq!(out.matches("CRC ok").count(), 2, "{out}");
    assert_eq!(out.matches(", in use").count(), 1, "{out}");
    assert!(
        out.contains("  2 at 0x100000000: not inside the device"),
        "{out}"
    );
    // DATA: 3 directories of files d0..d2, 3 files, big, link = 8 inodes besides its root.
    assert!(
        out.contains(&format!("  DATA master clid {CLID} fsid ")) && out.contains(" inodes 8\n"),
        "{out}"
    );
    assert!(out.contains(&format!("  B slave clid {CLID}")) && out.contains(" inodes 0\n"));

    let tree = text(&cli(&["show", "--blockrefs", s(&img)]).stdout);
    assert!(tree.contains("\ninode key 0x0000000000000000/0 "), "{tree}");
    assert!(tree.contains("\"SUPROOT\""), "{tree}");
    assert!(
        tree.contains("\n  inode key ") && tree.contains("\"DATA\""),
        "{tree}"
    );
    for kind in ["data key ", "dirent key ", "inode key "] {
        assert!(tree.contains(kind), "{kind}: {tree}");
    }
    assert!(!tree.contains("FAILED"), "{tree}");
    assert!(
        tree.contains(" 0 failed their check, 0 tables below --depth"),
        "{tree}"
    );
    // Then the freemap: the import's blocks all lie in GiB 0, so one leaf, at rotation set 0
    // (the volume's first commit), allocated space of data class.
    let (_, freemap) = tree.split_once("\nfreemap:\n").expect("a freemap heading");
    let leaf = freemap.lines().next().unwrap();
    assert!(
        leaf.starts_with("freemap_leaf key 0x0000000000000000/30 data_off 0x000000000001000f ")
            && leaf.contains(" check ok rotation 0: allocated ")
            && leaf.ends_with("; classes data/16"),
        "{tree}"
    );
    assert_eq!(freemap.lines().count(), 2, "{tree}");
    assert!(tree.contains(" blockrefs, 1 freemap blockrefs, "), "{tree}");
    let shallow = text(&cli(&["show", "--blockrefs", "--depth", "1", s(&img)]).stdout);
    let blocks = |t: &str| {
        let (tree, _) = t.split_once("\nfreemap:\n").unwrap();
        tree.lines().filter(|l| l.contains(" key 0x")).count()
    };
    assert_eq!(blocks(&shallow), 3, "{shallow}");
    assert!(blocks(&tree) > 10);
    assert!(
        shallow.contains("1 tables below --depth not shown") && shallow.contains(leaf),
        "{shallow}"
    );

    // Damage the big file's first data block: show finds it and says so.
    let line = tree
        .lines()
        .find(|l| l.trim_start().starts_with("data key 0x0000000000000000/16"))
        .unwrap();
    let off = line.split("data_off 0x").nth(1).unwrap();
    let off = u64::from_str_radix(&off[..16], 16).unwrap() & !0x3f;
    let damage = |at: u64| {
        let mut f = fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(b"damage").unwrap();
    };
    damage(off + 100);
    let o = exits(1, &["show", "--blockrefs", s(&img)]);
    let out = text(&o.stdout);
    assert!(
        out.contains("check FAILED: ") && out.contains(" 1 failed their check"),
        "{out}"
    );
    assert!(text(&o.stderr).contains("1 blocks failed their check code"));
    // And the freemap leaf: it fails too, and the line counting both trees says so.
    damage(0x10000 + 300);
    let o = exits(1, &["show", "--blockrefs", s(&img)]);
    let out = text(&o.stdout);
    assert!(
        out.contains("\nfreemap:\nfreemap_leaf key 0x0000000000000000/30 ")
            && out.contains(" check FAILED: check code mismatch (at 0x1000f)\n")
            && out.contains(", 1 freemap blockrefs, 2 failed their check"),
        "{out}"
    );
    assert!(text(&o.stderr).contains("2 blocks failed their check code"));
    for bad in [
        &["show"][..],
        &["show", "--depth", "2", "x"],
        &["show", "--blockrefs", "--depth", "x", "y"],
    ] {
        exits(2, bad);
    }
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn every_command_has_help_with_usage_options_and_an_example() {
    for cmd in [
        "run", "check", "newfs", "import", "ls", "show", "export", "fsck", "sync",
    ] {
        for flag in ["--help", "-h"] {
            let o = bin().args([cmd, flag]).output().unwrap();
            assert_eq!(o.status.code(), Some(0), "{cmd} {flag}");
            let t = text(&o.stdout);
            for part in [
                "USAGE:",
                "OPTIONS:",
                "EXAMPLE:",
                "EXIT STATUS",
                &format!("hammer2-synchro {cmd} "),
            ] {
                assert!(t.contains(part), "{cmd} {flag}: no '{part}' in\n{t}");
            }
        }
    }
    // Long work tells of --progress.
    for cmd in ["import", "export", "fsck", "sync"] {
        let t = text(&bin().args([cmd, "--help"]).output().unwrap().stdout);
        assert!(t.contains("--progress"), "{cmd}");
    }
}

/// A pseudo-terminal: its controlling side and the terminal a child writes to.
fn pty() -> (fs::File, fs::File) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc calls on descriptors this function owns; `name` is NUL-terminated
    // by ptsname_r on success (checked), and each descriptor is handed to exactly one File.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(m >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 256];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let s = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        assert!(s >= 0, "open the terminal");
        (fs::File::from_raw_fd(m), fs::File::from_raw_fd(s))
    }
}

#[test]
fn on_a_terminal_progress_is_shown_unasked_and_rewritten_in_place() {
    let d = tmp("tty");
    make_tree(&d.join("t"), 20, 5);
    let img = d.join("m.img");
    newfs(&img, "master", "256M");
    let (mut master, term) = pty();
    let o = bin()
        .args(["import", s(&d.join("t")), &format!("{}@DATA", s(&img))])
        .stderr(Stdio::from(term))
        .output()
        .unwrap();
    assert!(o.status.success());
    // Only the result on stdout, as without a terminal.
    assert!(text(&o.stdout).contains("@DATA: 30 objects, "), "{o:?}");
    let mut shown = Vec::new();
    let mut buf = [0u8; 4096];
    // Every copy of the terminal's descriptor is closed: the rest of its output, then EIO.
    while let Ok(n @ 1..) = master.read(&mut buf) {
        shown.extend_from_slice(&buf[..n]);
    }
    let shown = text(&shown);
    // Back to the line's start, the text, cleared to its end; the line ended at the end.
    assert!(
        shown.contains("\rimport: ") && shown.contains("\x1b[K"),
        "{shown:?}"
    );
    assert!(shown.ends_with('\n'), "{shown:?}");
    fs::remove_dir_all(&d).unwrap();
}

/// Make `term` a terminal of `cols` columns.
fn set_width(term: &fs::File, cols: u16) {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize {
        ws_row: 24,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ only reads the `winsize` the pointer points at.
    assert_eq!(
        unsafe { libc::ioctl(term.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        0
    );
}

#[test]
fn the_live_status_line_is_cut_to_the_terminal_width() {
    let d = tmp("width");
    let (m, sl) = (d.join("m.img"), d.join("s.img"));
    newfs(&m, "master", "256M");
    newfs(&sl, "slave", "256M");
    let (ms, ss) = (format!("{}@DATA", s(&m)), format!("{}@DATA", s(&sl)));
    let (mut master, term) = pty();
    set_width(&term, 80);
    let mut child = bin()
        .args(["sync", "--watch", "--commit-every", "1", &ms, &ss])
        .stderr(Stdio::from(term))
        .spawn()
        .unwrap();
    let dog = Watchdog::new(child.id());
    let mut seen = String::new();
    // A status line shown after a periodic commit (a line of its own before it).
    read_until(&mut master, &mut seen, "periodic commit: ");
    read_until_after(&mut master, &mut seen, "periodic commit: ", "\rsync: ");
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let mut buf = [0u8; 4096];
    // The child's end of the terminal closes when it exits: the rest, then EIO.
    while let Ok(n @ 1..) = master.read(&mut buf) {
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let st = child.wait().unwrap();
    dog.reaped();
    assert!(st.success(), "{seen:?}");
    // Every rewritten line (back to the row's start, text, cleared to its end) fits in the
    // row, the last column left free; the status lines would need about 180.
    let shown: Vec<&str> = seen
        .split('\r')
        .filter_map(|l| l.split_once("\x1b[K").map(|(t, _)| t))
        .filter(|t| t.starts_with("sync: "))
        .collect();
    assert!(shown.iter().any(|t| t.contains(" | ")), "{seen:?}");
    for t in shown {
        assert!(
            t.chars().count() <= 79,
            "{} columns: {t:?}",
            t.chars().count()
        );
    }
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_volume_that_cannot_be_written_does_not_stop_the_other_commits() {
    let d = tmp("enospc");
    let (m, small, sl) = (d.join("m.img"), d.join("small.img"), d.join("s.img"));
    newfs(&m, "master", "256M");
    // 12 MiB allocatable: the master's 14 MB file does not fit.
    newfs(&small, "slave", "32M");
    newfs(&sl, "slave", "256M");
    fs::create_dir(d.join("t")).unwrap();
    fs::write(d.join("t/big"), common::bytes(8)(14_000_000)).unwrap();
    let spec = |p: &Path| format!("{}@DATA", s(p));
    let (ms, smalls, ss) = (spec(&m), spec(&small), spec(&sl));
    cli(&["import", s(&d.join("t")), &ms]);

    // The full volume is reported and keeps its last commit; the other slave is written.
    let o = exits(1, &["sync", &ms, &smalls, &ss]);
    let err = text(&o.stderr);
    for want in [
        format!("sync: {smalls}: commit: no space left"),
        format!("sync: {ss}: committed, "),
        "sync: done: 1 of 3 volumes written".to_string(),
        "1 volumes could not be written".to_string(),
    ] {
        assert!(err.contains(&want), "no '{want}' in {err}");
    }
    fsck_clean(&small);
    fsck_clean(&sl);
    assert_same(
        &export(&ss, &d.join("os")),
        &export(&ms, &d.join("om")),
        &ss,
    );

    // --watch reports it at every periodic commit and goes on; status 1 at the end.
    let (mut child, mut stderr, dog) =
        spawn_watched(&["sync", "--watch", "--commit-every", "1", &ms, &smalls, &ss]);
    let mut seen = String::new();
    let failed = "sync: periodic commit: 0 of 3 volumes written, 1 failed";
    read_until(&mut stderr, &mut seen, failed);
    read_until_after(&mut stderr, &mut seen, failed, failed);
    assert!(child.try_wait().unwrap().is_none(), "--watch ended: {seen}");
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    stderr.read_to_string(&mut seen).unwrap();
    let st = child.wait().unwrap();
    dog.reaped();
    assert_eq!(st.code(), Some(1), "{seen}");
    assert!(seen.contains("1 volumes could not be written"), "{seen}");
    fsck_clean(&small);
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn import_always_shows_that_it_is_committing() {
    let d = tmp("phase");
    let img = d.join("m.img");
    newfs(&img, "master", "256M");
    fs::create_dir(d.join("t")).unwrap();
    fs::write(d.join("t/one"), b"one").unwrap();
    // Over in far less than the rate limit's quarter second: only a new phase is shown.
    let o = cli(&[
        "import",
        "--progress",
        s(&d.join("t")),
        &format!("{}@DATA", s(&img)),
    ]);
    let err = text(&o.stderr);
    assert!(
        err.contains("import: 2 of 2 objects, committing\n"),
        "{err}"
    );
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn show_of_a_volume_without_a_valid_header_still_shows_the_copies() {
    let d = tmp("nohdr");
    let img = d.join("v.img");
    newfs(&img, "master", "256M");
    // The only header copy's magic cleared: no copy can be used.
    let mut f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all(&[0; 8]).unwrap();
    drop(f);
    let o = exits(1, &["show", s(&img)]);
    let out = text(&o.stdout);
    assert!(
        out.starts_with("header copies:\n  0 at 0x0: refused: "),
        "{out}"
    );
    assert!(
        out.contains("  1 at 0x80000000: not inside the device\n"),
        "{out}"
    );
    assert!(text(&o.stderr).contains(s(&img)), "{o:?}");
    fs::remove_dir_all(&d).unwrap();
}
