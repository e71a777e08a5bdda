//! `hammer2-synchro`: the userland command line. Runs scenario files (docs/SCENARIOS.md) on the
//! userland host and prints their KTAP results.

use std::process::ExitCode;

use hammer2_synchro::scenario::{self, Outcome};

mod volume_cmd;

const USAGE: &str = "\
hammer2-synchro: DragonFly BSD's HAMMER2 cluster synchronizer, driven by scenario files.

USAGE:
    hammer2-synchro run [--status MS] FILE...
                                     run each scenario on the userland host, print KTAP;
                                     with --status, print every live cluster's status (nodes,
                                     roles, TIDs, status words, a no-quorum discrepancy, thread
                                     flags, counters) to stderr every MS milliseconds
    hammer2-synchro check FILE...    only parse each scenario (syntax check), run nothing
    hammer2-synchro help             show this text (also -h, --help)

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
       read, or the command line was wrong
A command that fails at run time ends the run at its line; the checks after it are
reported `not ok ... # SKIP not run` and count as failed.
With several files the worst status wins; `run` prefixes each file's output with
`# file: NAME`.

EXAMPLE:
    hammer2-synchro run qemu-tests/cases/example.scn
";

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("hammer2-synchro: {msg}");
    eprintln!("usage: hammer2-synchro run|check FILE...   (hammer2-synchro --help for more)");
    ExitCode::from(2)
}

/// Read `path`; on failure report it and give exit status 2.
fn read(path: &str) -> Result<Vec<u8>, u8> {
    std::fs::read(path).map_err(|e| {
        eprintln!("hammer2-synchro: {path}: {e}");
        2
    })
}

/// KTAP goes to stdout as it is produced, so a long run shows progress.
struct Stdout;

impl std::fmt::Write for Stdout {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        use std::io::Write;
        std::io::stdout()
            .write_all(s.as_bytes())
            .map_err(|_| std::fmt::Error)
    }
}

fn run(path: &str, several: bool) -> u8 {
    if several {
        println!("# file: {path}");
    }
    let text = match read(path) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let outcome = scenario::run(hammer2_synchro::userland::host(), &text, &mut Stdout);
    if outcome == Outcome::Rejected {
        eprintln!("hammer2-synchro: {path}: rejected");
    }
    outcome.exit_code() as u8
}

fn check(path: &str, _several: bool) -> u8 {
    let text = match read(path) {
        Ok(t) => t,
        Err(code) => return code,
    };
    match scenario::check(&text) {
        Ok(s) => {
            println!(
                "{path}: ok ({} commands, {} checks)",
                s.steps.len() + 1,
                s.checks
            );
            0
        }
        Err(e) => {
            println!("{path}: {e}");
            2
        }
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
                let mut s = String::new();
                if hammer2_synchro::cluster::write_all_status(&mut s).is_ok() {
                    for line in s.lines() {
                        eprintln!("status: {line}");
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, mut files)) = args.split_first() else {
        return usage_error("missing command");
    };
    if let Some(code) = volume_cmd::dispatch(cmd, files) {
        return code;
    }
    let mut status_every = None;
    if cmd == "run" && files.first().map(String::as_str) == Some("--status") {
        let ms = files.get(1).and_then(|v| v.parse::<u64>().ok());
        match ms {
            Some(ms) if (1..=3_600_000).contains(&ms) => {
                status_every = Some(std::time::Duration::from_millis(ms))
            }
            _ => return usage_error("run: --status takes milliseconds, 1 to 3600000"),
        }
        files = &files[2..];
    }
    let each: fn(&str, bool) -> u8 = match cmd.as_str() {
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "run" => run,
        "check" => check,
        other => return usage_error(&format!("unknown command '{other}'")),
    };
    if files.is_empty() {
        return usage_error(&format!("{cmd}: no FILE given"));
    }
    if let Some(opt) = files.iter().find(|f| f.starts_with('-') && f.len() > 1) {
        return usage_error(&format!("{cmd}: unknown option '{opt}'"));
    }
    let several = files.len() > 1;
    let printer = status_every.map(StatusPrinter::start);
    let worst = files.iter().map(|f| each(f, several)).max().unwrap_or(0);
    drop(printer);
    ExitCode::from(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_outcomes() {
        assert_eq!(Outcome::Passed.exit_code(), 0);
        assert_eq!(Outcome::Failed.exit_code(), 1);
        assert_eq!(Outcome::Rejected.exit_code(), 2);
    }
}
