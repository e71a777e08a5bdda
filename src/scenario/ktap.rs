//! The KTAP writer: `KTAP version 1`, a plan, one result per check, `# ` diagnostics and the
//! final `# P passed, F failed` line.
//!
//! Checks that never ran because a command failed first are written as
//! `not ok K line L: <text> # SKIP not run` and count as failed, so the plan always matches.
//!
//! A description is a check's line as written, so it may hold `#`, which starts a directive in
//! KTAP (a check whose text holds `# SKIP` would read as skipped): descriptions are written with
//! `#` as `\#` and `\` as `\\`, as the TAP14 escaping rules that KTAP follows require.

use core::fmt::{self, Write};

/// Most diagnostic bytes kept per check (a large tree comparison may find many differences).
pub const MAX_DIAG: usize = 4096;

/// Writes one KTAP document to `out`. Output errors (a full kernel buffer) are ignored here: the
/// host sees the truncated text.
pub struct Ktap<'o> {
    out: &'o mut dyn Write,
    next: usize,
    passed: usize,
    failed: usize,
}

impl<'o> Ktap<'o> {
    /// Start a document with `plan` checks.
    pub fn new(out: &'o mut dyn Write, plan: usize) -> Self {
        let _ = write!(out, "KTAP version 1\n1..{plan}\n");
        Ktap {
            out,
            next: 1,
            passed: 0,
            failed: 0,
        }
    }

    /// Report the next check; `diag` holds its diagnostic lines (each written as `# <line>`).
    pub fn result(&mut self, ok: bool, line: u32, text: &str, diag: &str) {
        let k = self.next;
        self.next += 1;
        if ok {
            self.passed += 1;
            let _ = writeln!(self.out, "ok {k} line {line}: {}", Escaped(text));
        } else {
            self.failed += 1;
            let _ = writeln!(self.out, "not ok {k} line {line}: {}", Escaped(text));
        }
        self.diag(diag);
    }

    /// Report the next check as not run (counted as failed).
    pub fn not_run(&mut self, line: u32, text: &str) {
        let k = self.next;
        self.next += 1;
        self.failed += 1;
        let _ = writeln!(
            self.out,
            "not ok {k} line {line}: {} # SKIP not run",
            Escaped(text)
        );
    }

    /// Write diagnostic lines, each prefixed `# `.
    pub fn diag(&mut self, text: &str) {
        for l in text.lines() {
            let _ = writeln!(self.out, "# {l}");
        }
    }

    /// Whether any check failed so far.
    pub fn any_failed(&self) -> bool {
        self.failed > 0
    }

    /// Write the summary line and return (passed, failed).
    pub fn finish(self) -> (usize, usize) {
        let _ = writeln!(self.out, "# {} passed, {} failed", self.passed, self.failed);
        (self.passed, self.failed)
    }
}

/// A test description with KTAP's directive marker `#` and the escape character `\` escaped.
struct Escaped<'t>(&'t str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['#', '\\']) {
            let (plain, tail) = rest.split_at(at);
            f.write_str(plain)?;
            f.write_str("\\")?;
            // `at` is the index of a one-byte character, so both splits are on boundaries.
            let (special, after) = tail.split_at(1);
            f.write_str(special)?;
            rest = after;
        }
        f.write_str(rest)
    }
}

/// A bounded text buffer for one check's diagnostics: keeps the first [`MAX_DIAG`] bytes and
/// notes that the rest was cut. An allocation failure cuts the text the same way, and the note
/// says so: a check that ran out of memory is never reported without a reason.
#[derive(Default)]
pub struct Diag {
    buf: alloc::string::String,
    /// The note for the end of the text, once something was cut.
    cut: Option<&'static str>,
}

const CUT: &str = "\n... (cut)";
const CUT_NOMEM: &str = "\n... (cut: out of memory)";

impl Diag {
    /// The text so far (with a final note if something was cut).
    pub fn text(&mut self) -> &str {
        if let Some(note) = self.cut.take() {
            if self.buf.try_reserve(note.len()).is_err() {
                // Make room within the memory already held: the note matters more than the
                // text's last bytes. Without even that, the note alone.
                let Some(room) = self.buf.capacity().checked_sub(note.len()) else {
                    self.buf.clear();
                    return note.trim_start();
                };
                let mut keep = room.min(self.buf.len());
                while !self.buf.is_char_boundary(keep) {
                    keep -= 1;
                }
                self.buf.truncate(keep);
            }
            self.buf.push_str(note);
        }
        &self.buf
    }

    /// Forget everything written.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.cut = None;
    }
}

impl Write for Diag {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut.is_some() {
            // Once cut, nothing more: later text would read as if it followed on.
            return Ok(());
        }
        if self.buf.len() + s.len() > MAX_DIAG {
            self.cut = Some(CUT);
            // Room for what fits; without it, less is kept.
            let _ = self
                .buf
                .try_reserve(MAX_DIAG.saturating_sub(self.buf.len()));
        } else if self.buf.try_reserve(s.len()).is_err() {
            self.cut = Some(CUT_NOMEM);
        } else {
            self.buf.push_str(s);
            return Ok(());
        }
        // Keep what fits of `s`, up to a character boundary.
        let mut fit = MAX_DIAG
            .saturating_sub(self.buf.len())
            .min(self.buf.capacity() - self.buf.len())
            .min(s.len());
        while !s.is_char_boundary(fit) {
            fit -= 1;
        }
        self.buf.push_str(&s[..fit]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    #[test]
    fn document_shape() {
        let mut s = String::new();
        let mut k = Ktap::new(&mut s, 3);
        k.result(true, 12, "expect same 0 3", "");
        k.result(
            false,
            13,
            "expect file 3 /a \"x\"",
            "node 3: /a: content differs at byte 0\n",
        );
        assert!(k.any_failed());
        k.not_run(14, "expect frozen 3");
        assert_eq!(k.finish(), (1, 2));
        assert_eq!(
            s,
            "KTAP version 1\n1..3\nok 1 line 12: expect same 0 3\n\
             not ok 2 line 13: expect file 3 /a \"x\"\n# node 3: /a: content differs at byte 0\n\
             not ok 3 line 14: expect frozen 3 # SKIP not run\n# 1 passed, 2 failed\n"
        );
    }

    #[test]
    fn descriptions_escape_the_directive_marker() {
        let mut s = String::new();
        let mut k = Ktap::new(&mut s, 3);
        k.result(false, 3, "expect file 0 /a \"x # SKIP\"", "");
        k.result(true, 4, "expect file 0 /b \"a\\\\#b\"", "");
        k.not_run(5, "expect file 0 /c \"# TODO\"");
        k.finish();
        assert_eq!(
            s,
            "KTAP version 1\n1..3\n\
             not ok 1 line 3: expect file 0 /a \"x \\# SKIP\"\n\
             ok 2 line 4: expect file 0 /b \"a\\\\\\\\\\#b\"\n\
             not ok 3 line 5: expect file 0 /c \"\\# TODO\" # SKIP not run\n\
             # 1 passed, 2 failed\n"
        );
        // No unescaped `#` is left before the directive: a KTAP reader sees no SKIP or TODO.
        for l in s.lines().filter(|l| l.contains("ok ")) {
            let cut = l.find(" # SKIP not run").unwrap_or(l.len());
            let desc = &l[..cut];
            let bytes = desc.as_bytes();
            for (i, _) in desc.match_indices('#') {
                let slashes = bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count();
                assert!(slashes % 2 == 1, "unescaped # in {l}");
            }
        }
    }

    #[test]
    fn empty_plan_and_bounded_diag() {
        let mut s = String::new();
        let k = Ktap::new(&mut s, 0);
        assert_eq!(k.finish(), (0, 0));
        assert_eq!(s, "KTAP version 1\n1..0\n# 0 passed, 0 failed\n");
        let mut d = Diag::default();
        for _ in 0..10_000 {
            let _ = write!(d, "x");
        }
        let t = d.text();
        assert!(t.ends_with("x\n... (cut)"));
        assert!(t.len() < MAX_DIAG + 20);
        d.clear();
        assert_eq!(d.text(), "");
        // Cut in the middle of a character: the text stays UTF-8, nothing follows the cut.
        let _ = write!(d, "{}", "é".repeat(MAX_DIAG));
        let _ = write!(d, "more");
        let t = d.text();
        assert!(t.ends_with("é\n... (cut)") && !t.contains("more"), "{t}");
    }
}
