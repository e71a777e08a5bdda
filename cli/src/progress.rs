//! Progress of long work on standard error: shown when stderr is a terminal, or when the
//! command was given `--progress`; at most a few lines a second; never on standard output,
//! so what a command prints there is the same with or without it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by `--progress` (taken off the arguments before a command parses them).
static FORCED: AtomicBool = AtomicBool::new(false);

/// The least time between two progress lines: at most four a second.
const EVERY: Duration = Duration::from_millis(250);

/// Remove every `--progress` from `args`, remembering that it was given.
pub(crate) fn take_flag(args: &[String]) -> Vec<String> {
    let (flag, rest): (Vec<&String>, Vec<&String>) = args.iter().partition(|a| *a == "--progress");
    if !flag.is_empty() {
        FORCED.store(true, Ordering::SeqCst);
    }
    rest.into_iter().cloned().collect()
}

/// A progress line that is rewritten in place on a terminal, or a line per update otherwise
/// (a log file read later wants whole lines, not carriage returns).
pub(crate) struct Progress {
    what: &'static str,
    on: bool,
    tty: bool,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    /// Progress of `what` (the command's name, the start of each line).
    pub(crate) fn new(what: &'static str) -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress {
            what,
            on: tty || FORCED.load(Ordering::SeqCst),
            tty,
            last: None,
            shown: false,
        }
    }

    /// Progress shown whatever stderr is (a live status the command was asked for).
    pub(crate) fn always(what: &'static str) -> Progress {
        Progress {
            on: true,
            ..Progress::new(what)
        }
    }

    /// End a terminal's line, so that a message printed next starts on its own line (the
    /// next update starts a new one).
    pub(crate) fn end_line(&mut self) {
        if self.tty && self.shown {
            let _ = std::io::stderr().lock().write_all(b"\n");
        }
        self.shown = false;
    }

    /// Show the line `text` makes, unless one was shown less than [`EVERY`] ago (the first is
    /// shown at once). `text` is only called when the line is shown.
    pub(crate) fn tick(&mut self, text: impl FnOnce() -> String) {
        if !self.on || self.last.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        self.put(&text());
    }

    /// Show the first line of a new phase of the work at once, whenever the last line was
    /// shown (the phase a command is in must never be hidden by the rate limit).
    pub(crate) fn phase(&mut self, text: impl FnOnce() -> String) {
        self.last = None;
        self.tick(text);
    }

    fn put(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        // On a terminal the line is rewritten: back to its start, then cleared to its end.
        // `\r` only goes back to the start of the last row, so a line wider than the terminal
        // would leave its first rows behind at every update: it is cut to the width.
        let r = if self.tty {
            let full = format!("{}: {line}", self.what);
            let shown = match terminal_columns() {
                Some(cols) => cut(&full, cols.saturating_sub(1)),
                None => &full,
            };
            write!(err, "\r{shown}\x1b[K")
        } else {
            writeln!(err, "{}: {line}", self.what)
        };
        let _ = r.and_then(|()| err.flush());
        self.shown = true;
    }
}

/// The width of the terminal on stderr, when it has one.
fn terminal_columns() -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes a `winsize` through the pointer, which points at one.
    let r = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

/// The first `n` characters of `s` (the last column is left free: writing it makes some
/// terminals wrap).
fn cut(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(at, _)| &s[..at])
}

impl Drop for Progress {
    /// A terminal's line is ended (drop the progress before printing what follows it).
    fn drop(&mut self) {
        self.end_line();
    }
}
