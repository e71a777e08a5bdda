//! `hammer2-synchro`: the userland command line. Runs scenario files (docs/SCENARIOS.md) on the
//! userland host and prints their KTAP results.

use std::fmt::Write as _;
use std::io::{self, Read as _, Write as _};
use std::process::ExitCode;

use hammer2_synchro::scenario::{self, lex::MAX_INPUT, Outcome};
use hammer2_synchro::userland::{blocks, budget};

// Every allocation is counted against the run's memory budget (see `budget`).
#[global_allocator]
static ALLOC: budget::Budget = budget::Budget;

/// The memory budget when `--mem-limit` is not given.
const DEFAULT_MEM_LIMIT: usize = 1 << 30;
/// The smallest `--mem-limit`: below it not even a scenario file can be read.
const MIN_MEM_LIMIT: usize = 1 << 20;

#[macro_use]
mod volume_cmd;
mod progress;
mod volume_sync;
mod volume_write;

const USAGE: &str = "\
hammer2-synchro: DragonFly BSD's HAMMER2 cluster synchronizer, driven by scenario files.

USAGE:
    hammer2-synchro run [--status MS] [--mem-limit SIZE] FILE...
                                     run each scenario on the userland host, print KTAP
    hammer2-synchro check [--mem-limit SIZE] FILE...
                                     only parse each scenario (syntax check), run nothing
    hammer2-synchro help             show this text (also -h, --help)

  Real HAMMER2 volumes (image files or block devices; `hammer2-synchro COMMAND --help`
  tells each command's options and gives an example):
    hammer2-synchro newfs IMAGE --size SIZE --pfs LABEL:ROLE ...
                                     create a volume with one PFS per LABEL (ROLE: master, slave...)
    hammer2-synchro import [--replace] DIR IMAGE@LABEL
                                     make PFS LABEL a copy of host directory DIR (one commit);
                                     a PFS that holds something needs --replace
    hammer2-synchro ls IMAGE[@LABEL] [PATH]
                                     list a volume's PFSs, or a directory of PFS LABEL
    hammer2-synchro show [--blockrefs [--depth N]] IMAGE
                                     the header copies, the PFSs, and the blockref tree
    hammer2-synchro export IMAGE@LABEL DIR
                                     copy PFS LABEL's tree into the new directory DIR
    hammer2-synchro fsck IMAGE       check headers, check codes, key order and the freemap
    hammer2-synchro sync [--watch [--commit-every SECS]] IMAGE@LABEL IMAGE@LABEL ...
                                     run the sync threads over those PFSs until they agree,
                                     commit every volume that changed
  Long work (import, export, fsck, sync) shows progress on stderr when it is a terminal,
  or with --progress.

OPTIONS:
    --status MS        print every live cluster's status (nodes, roles, TIDs, status
                       words, a no-quorum discrepancy, thread flags, counters) to stderr
                       every MS milliseconds
    --mem-limit SIZE   the most memory the run may hold at once (default 1G): bytes, or
                       with a K, M, G or T suffix (powers of 1024), at least 1M. A command
                       that needs more fails with `# line N: ... out of memory`, as in the
                       kernel when its pool is exhausted (a sync thread that runs out
                       retries later, so `wait synced` may time out instead)

A scenario (.scn) builds a cluster of up to 8 nodes, makes them diverge, drives the sync
threads and checks the result, one command per line:

    cluster master master slave        # first line: the nodes and their roles
    write * /a \"hello\"                 # every node gets /a
    write 0,1 /a \"newer\"               # nodes 0 and 1 move ahead
    start                              # a sync thread per node
    wait synced                        # until every node agrees with the quorum
    expect file * /a \"newer\"           # a check: one KTAP test per expect line

Commands: cluster role mkdir write rm chmod link start freeze unfreeze stop remaster
signal wait sync sleep snapshot expect stall fail catchup.
The full language is in docs/SCENARIOS.md; the cases in qemu-tests/cases/ are examples.

EXIT STATUS:
    0  every check passed
    1  a check failed, or a command failed at run time
    2  a file was rejected (its error is printed as `line N: <reason>`), could not be
       read or is larger than 1 MiB (read no further), the command line was wrong, or
       standard output could not be written: the run ends there, with a message on
       stderr, or quietly for a closed pipe (as in `run a.scn | head -1`)
A command that fails at run time ends the run at its line; the checks after it are
reported `not ok ... # SKIP not run` and count as failed.
With several files the worst status wins; `run` prefixes each file's output with
`# file: NAME`.

EXAMPLE:
    hammer2-synchro run qemu-tests/cases/example.scn
";

/// A message on standard error. A failed write there has nowhere to be reported, and must not
/// panic as `eprintln!` does.
fn warn(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "hammer2-synchro: {args}");
}

fn usage_error(msg: std::fmt::Arguments<'_>) -> ExitCode {
    warn(msg);
    warn(format_args!(
        "usage: hammer2-synchro run|check [OPTIONS] FILE...   (hammer2-synchro --help for more)"
    ));
    ExitCode::from(2)
}

/// Standard output: KTAP and reports. `println!` panics when a write fails (a closed pipe, a
/// full disk); a failed write here ends the process with status 2 instead, at once: the rest of
/// the output could not be delivered, so the rest of the run would be wasted.
struct Out(io::StdoutLock<'static>);

impl Out {
    fn new() -> Self {
        Out(io::stdout().lock())
    }

    /// Flush what is buffered.
    fn finish(mut self) {
        if let Err(e) = self.0.flush() {
            output_failed(e);
        }
    }
}

/// KTAP goes out line by line as it is produced, so a long run shows progress.
impl std::fmt::Write for Out {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        match self.0.write_all(s.as_bytes()) {
            Ok(()) => Ok(()),
            Err(e) => output_failed(e),
        }
    }
}

/// End the process with status 2 after a failed write to standard output: with a message,
/// unless the reader went away (a closed pipe, as in `run a.scn | head -1`), which ends quietly
/// as a tool killed by SIGPIPE does. Nothing needs tearing down: the process's exit ends its
/// sync threads and frees their memory.
fn output_failed(e: io::Error) -> ! {
    if e.kind() != io::ErrorKind::BrokenPipe {
        warn(format_args!("standard output: {e}"));
    }
    std::process::exit(2)
}

/// Read `path`, at most one byte more than the largest scenario (so `/dev/zero` or a huge file
/// costs no more than that), into memory taken fallibly from the budget; on failure report it
/// and give exit status 2.
fn read(path: &str) -> Result<Vec<u8>, u8> {
    let fail = |why: &dyn std::fmt::Display| {
        warn(format_args!("{path}: {why}"));
        2
    };
    let mut file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    loop {
        let want = chunk.len().min(MAX_INPUT + 1 - buf.len());
        let n = match file.read(&mut chunk[..want]) {
            Ok(0) => return Ok(buf),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(&e)),
        };
        if buf.len() + n > MAX_INPUT {
            return Err(fail(&format_args!(
                "too big (more than {MAX_INPUT} bytes, the scenario limit)"
            )));
        }
        buf.try_reserve(n).map_err(|_| fail(&"out of memory"))?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn run(path: &str, several: bool, out: &mut Out) -> u8 {
    if several {
        let _ = writeln!(out, "# file: {path}");
    }
    let text = match read(path) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let outcome = scenario::run(hammer2_synchro::userland::host(), &text, out);
    if outcome == Outcome::Rejected {
        warn(format_args!("{path}: rejected"));
    }
    outcome.exit_code() as u8
}

fn check(path: &str, _several: bool, out: &mut Out) -> u8 {
    let text = match read(path) {
        Ok(t) => t,
        Err(code) => return code,
    };
    match scenario::check(&text) {
        Ok(s) => {
            let _ = writeln!(
                out,
                "{path}: ok ({} commands, {} checks)",
                s.steps.len() + 1,
                s.checks
            );
            0
        }
        Err(e) => {
            let _ = writeln!(out, "{path}: {e}");
            2
        }
    }
}

/// A string that grows fallibly: out of budget, the text is dropped instead of aborting.
struct Fallible(String);

impl std::fmt::Write for Fallible {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.try_reserve(s.len()).map_err(|_| std::fmt::Error)?;
        self.0.push_str(s);
        Ok(())
    }
}

/// Prints every live cluster's status to stderr every `every` until dropped: the userland
/// counterpart of the kernel's debugfs `status` file.
struct StatusPrinter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StatusPrinter {
    fn start(every: std::time::Duration) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            use std::sync::atomic::Ordering;
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(every);
                // Formatted first, so stderr is not written under the cluster registry's lock.
                let mut s = Fallible(String::new());
                if hammer2_synchro::cluster::write_all_status(&mut s).is_ok() {
                    let mut err = io::stderr().lock();
                    for line in s.0.lines() {
                        let _ = writeln!(err, "status: {line}");
                    }
                }
            }
        });
        StatusPrinter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StatusPrinter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parse a memory size: a number of bytes with an optional binary suffix K, M, G or T.
fn parse_size(v: &str) -> Option<usize> {
    let (digits, shift) = match v.as_bytes().last()?.to_ascii_uppercase() {
        b'K' => (&v[..v.len() - 1], 10),
        b'M' => (&v[..v.len() - 1], 20),
        b'G' => (&v[..v.len() - 1], 30),
        b'T' => (&v[..v.len() - 1], 40),
        _ => (v, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = digits.parse().ok()?;
    n.checked_mul(1usize.checked_shl(shift)?)
        .filter(|&b| b >= MIN_MEM_LIMIT)
}

/// What the options before the files asked for.
struct Options {
    status_every: Option<std::time::Duration>,
    mem_limit: usize,
}

/// Parse the options of `cmd` at the start of `args`; return them and the files after them.
fn options<'a>(cmd: &str, mut args: &'a [String]) -> Result<(Options, &'a [String]), ExitCode> {
    let mut o = Options {
        status_every: None,
        mem_limit: DEFAULT_MEM_LIMIT,
    };
    while let Some(opt) = args.first().filter(|a| a.starts_with('-') && a.len() > 1) {
        let value = args.get(1).map(String::as_str);
        match (cmd, opt.as_str()) {
            ("run", "--status") => match value.and_then(|v| v.parse::<u64>().ok()) {
                Some(ms) if (1..=3_600_000).contains(&ms) => {
                    o.status_every = Some(std::time::Duration::from_millis(ms))
                }
                _ => {
                    return Err(usage_error(format_args!(
                        "run: --status takes milliseconds, 1 to 3600000"
                    )))
                }
            },
            ("run" | "check", "--mem-limit") => match value.and_then(parse_size) {
                Some(bytes) => o.mem_limit = bytes,
                None => {
                    return Err(usage_error(format_args!(
                        "{cmd}: --mem-limit takes a size of at least 1M, like 512M or 2G"
                    )))
                }
            },
            _ => return Err(usage_error(format_args!("{cmd}: unknown option '{opt}'"))),
        }
        args = &args[2..];
    }
    Ok((o, args))
}

fn main() -> ExitCode {
    // Read once, before any block is allocated (the allocator itself reads nothing).
    blocks::use_system(std::env::var_os("H2S_SYSTEM_BLOCKS").is_some_and(|v| v == "1"));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        return usage_error(format_args!("missing command"));
    };
    if let Some(code) = volume_cmd::dispatch(cmd, rest) {
        return code;
    }
    if let Some(code) = volume_write::dispatch(cmd, rest) {
        return code;
    }
    if let Some(code) = volume_sync::dispatch(cmd, rest) {
        return code;
    }
    let each: fn(&str, bool, &mut Out) -> u8 = match cmd.as_str() {
        "help" | "-h" | "--help" => {
            let mut out = Out::new();
            let _ = out.write_str(USAGE);
            out.finish();
            return ExitCode::SUCCESS;
        }
        "run" | "check" if rest.iter().any(|a| a == "--help" || a == "-h") => {
            let mut out = Out::new();
            let _ = out.write_str(USAGE);
            out.finish();
            return ExitCode::SUCCESS;
        }
        "run" => run,
        "check" => check,
        other => return usage_error(format_args!("unknown command '{other}'")),
    };
    let (opts, files) = match options(cmd, rest) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if files.is_empty() {
        return usage_error(format_args!("{cmd}: no FILE given"));
    }
    if let Some(opt) = files.iter().find(|f| f.starts_with('-') && f.len() > 1) {
        return usage_error(format_args!("{cmd}: unknown option '{opt}'"));
    }
    budget::set_limit(opts.mem_limit);
    // Freed data blocks' memory kept for reuse is outside the count: a quarter of the limit.
    blocks::set_retain((opts.mem_limit / 4).min(blocks::RETAIN));
    let several = files.len() > 1;
    let printer = opts
        .status_every
        .map(|every| budget::overdraft(|| StatusPrinter::start(every)));
    let mut out = Out::new();
    let worst = files
        .iter()
        .map(|f| each(f, several, &mut out))
        .max()
        .unwrap_or(0);
    out.finish();
    drop(printer);
    ExitCode::from(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1024K"), Some(1 << 20));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        for bad in [
            "",
            "G",
            "1.5G",
            "-1M",
            "1X",
            "1023K",
            "0",
            "99999999999999999999",
            "9999999999T",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn exit_codes_match_outcomes() {
        assert_eq!(Outcome::Passed.exit_code(), 0);
        assert_eq!(Outcome::Failed.exit_code(), 1);
        assert_eq!(Outcome::Rejected.exit_code(), 2);
    }
}
