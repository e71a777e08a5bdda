//! Lexical layer of the scenario language: input bounds, UTF-8, lines, tokens, strings.
//!
//! Nothing here allocates infallibly: reasons are fixed-capacity strings and string tokens are
//! built with `try_reserve`.

// Errors carry a fixed-capacity reason on purpose: reporting one must never allocate.
#![allow(clippy::result_large_err)]

use alloc::vec::Vec;
use core::fmt;

/// Largest scenario file accepted, in bytes.
pub const MAX_INPUT: usize = 1 << 20;
/// Most lines a scenario file may have.
pub const MAX_LINES: usize = 100_000;

/// Why a file was rejected: a short fixed-capacity text (longer texts are cut, never a panic).
pub type Reason = crate::text::Text<200>;

/// Build a [`Reason`] with `format!`-style arguments.
macro_rules! reason {
    ($($arg:tt)*) => {
        $crate::scenario::lex::reason_args(format_args!($($arg)*))
    };
}
pub(crate) use reason;

/// The [`Reason`] of `args`. Not inlined: built in place at every message site, the reasons
/// and their formatting made the parser's and the interpreter's frames several KiB (a kernel
/// stack is small).
#[inline(never)]
pub fn reason_args(args: fmt::Arguments<'_>) -> Reason {
    let mut r = Reason::default();
    let _ = fmt::Write::write_fmt(&mut r, args);
    r
}

/// A rejected file: the 1-based line and why. Displays as `line N: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: u32,
    /// What is wrong.
    pub reason: Reason,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// One token of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok<'a> {
    /// A bare word (anything up to a space, a tab, `#` or the end of the line).
    Word(&'a str),
    /// A `"..."` string, escapes resolved (may hold any bytes through `\xHH`).
    Str(Vec<u8>),
}

/// One lexed line.
#[derive(Debug)]
pub struct Lexed<'a> {
    /// The tokens, in order.
    pub toks: Vec<Tok<'a>>,
    /// The line as written, without its comment, trimmed of spaces and tabs.
    pub text: &'a str,
}

/// The rejection of a file of `len` bytes for its size alone, if it is too big: what a host that
/// counted a file's bytes without keeping them all reports, the same as for the whole file.
pub fn check_size(len: usize) -> Result<(), ParseError> {
    if len > MAX_INPUT {
        return Err(ParseError {
            line: 1,
            reason: reason!("file too big ({} bytes, at most {})", len, MAX_INPUT),
        });
    }
    Ok(())
}

/// Check the bounds and the encoding of a whole file and return its lines (1-based numbering is
/// the caller's: the i-th item is line i + 1). A trailing `\r` is dropped from every line.
pub fn lines(input: &[u8]) -> Result<impl Iterator<Item = &str>, ParseError> {
    check_size(input.len())?;
    let text = match core::str::from_utf8(input) {
        Ok(t) => t,
        Err(e) => {
            let before = input.get(..e.valid_up_to()).unwrap_or(&[]);
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            return Err(ParseError {
                line: line as u32,
                reason: reason!("invalid UTF-8"),
            });
        }
    };
    // A final newline ends the last line; it does not start another.
    let text = text.strip_suffix('\n').unwrap_or(text);
    let nlines = text.split('\n').count();
    if nlines > MAX_LINES {
        return Err(ParseError {
            line: (MAX_LINES + 1) as u32,
            reason: reason!("too many lines (at most {})", MAX_LINES),
        });
    }
    Ok(text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)))
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push(v: &mut Vec<u8>, b: u8) -> Result<(), Reason> {
    crate::mem::try_push(v, b).map_err(|_| reason!("out of memory"))
}

/// Lex one line into tokens; `#` outside a string starts a comment.
pub fn lex_line(line: &str) -> Result<Lexed<'_>, Reason> {
    let b = line.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let mut end = b.len();
    loop {
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        if b[i] == b'#' {
            end = i;
            break;
        }
        let tok = if b[i] == b'"' {
            i += 1;
            let mut s = Vec::new();
            loop {
                let Some(&c) = b.get(i) else {
                    return Err(reason!("unterminated string"));
                };
                i += 1;
                match c {
                    b'"' => break,
                    b'\\' => {
                        let Some(&e) = b.get(i) else {
                            return Err(reason!("unterminated string"));
                        };
                        i += 1;
                        let v = match e {
                            b'"' => b'"',
                            b'\\' => b'\\',
                            b'n' => b'\n',
                            b't' => b'\t',
                            b'x' => {
                                let hi = b.get(i).copied().and_then(hex);
                                let lo = b.get(i + 1).copied().and_then(hex);
                                match (hi, lo) {
                                    (Some(h), Some(l)) => {
                                        i += 2;
                                        h << 4 | l
                                    }
                                    _ => {
                                        return Err(reason!("bad escape: \\x needs two hex digits"))
                                    }
                                }
                            }
                            _ => {
                                // `e` may start a multi-byte character: report the character.
                                let c = line
                                    .get(i - 1..)
                                    .and_then(|r| r.chars().next())
                                    .unwrap_or('?');
                                return Err(reason!("bad escape '\\{}'", c.escape_debug()));
                            }
                        };
                        push(&mut s, v)?;
                    }
                    c if c < 0x20 && c != b'\t' || c == 0x7f => {
                        return Err(reason!(
                            "control character 0x{:02x} in a string (write \\x{:02x})",
                            c,
                            c
                        ))
                    }
                    c => push(&mut s, c)?,
                }
            }
            if i < b.len() && !is_blank(b[i]) && b[i] != b'#' {
                return Err(reason!("expected a space after a string"));
            }
            Tok::Str(s)
        } else {
            let start = i;
            while i < b.len() && !is_blank(b[i]) && b[i] != b'#' {
                let c = b[i];
                if c == b'"' {
                    return Err(reason!("unexpected '\"' inside a word"));
                }
                if c < 0x20 || c == 0x7f {
                    return Err(reason!("unexpected control character 0x{:02x}", c));
                }
                i += 1;
            }
            // Splits happen only at ASCII bytes, so both ends are character boundaries.
            Tok::Word(line.get(start..i).unwrap_or(""))
        };
        crate::mem::try_push(&mut toks, tok).map_err(|_| reason!("out of memory"))?;
    }
    let text = line
        .get(..end)
        .unwrap_or("")
        .trim_matches(|c| c == ' ' || c == '\t');
    Ok(Lexed { toks, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Tok<'_>> {
        lex_line(line).unwrap().toks
    }

    #[test]
    fn words_strings_and_comments() {
        let l = lex_line("  write 0,1\t/a \"x y\" # c \"q\"").unwrap();
        assert_eq!(
            l.toks,
            [
                Tok::Word("write"),
                Tok::Word("0,1"),
                Tok::Word("/a"),
                Tok::Str(b"x y".to_vec())
            ]
        );
        assert_eq!(l.text, "write 0,1\t/a \"x y\"");
        assert_eq!(words("# only a comment"), []);
        assert_eq!(words("a#b"), [Tok::Word("a")]);
        assert_eq!(words("\"#\""), [Tok::Str(b"#".to_vec())]);
    }

    #[test]
    fn escapes() {
        assert_eq!(
            words(r#""\"\\\n\t\x41\xff""#),
            [Tok::Str(b"\"\\\n\tA\xff".to_vec())]
        );
        assert_eq!(
            lex_line(r#""\q""#).unwrap_err().as_str(),
            "bad escape '\\q'"
        );
        assert!(lex_line(r#""\x4""#)
            .unwrap_err()
            .as_str()
            .starts_with("bad escape"));
        assert_eq!(
            lex_line(r#""\é""#).unwrap_err().as_str(),
            "bad escape '\\é'"
        );
    }

    #[test]
    fn lexical_errors() {
        assert_eq!(
            lex_line("\"abc").unwrap_err().as_str(),
            "unterminated string"
        );
        assert_eq!(
            lex_line("\"abc\\").unwrap_err().as_str(),
            "unterminated string"
        );
        assert_eq!(
            lex_line("\"a\"b").unwrap_err().as_str(),
            "expected a space after a string"
        );
        assert!(lex_line("a\"b\"")
            .unwrap_err()
            .as_str()
            .starts_with("unexpected '\"'"));
        assert!(lex_line("a\x01")
            .unwrap_err()
            .as_str()
            .starts_with("unexpected control"));
        assert!(lex_line("\"\x02\"")
            .unwrap_err()
            .as_str()
            .starts_with("control character"));
    }

    #[test]
    fn file_bounds_and_encoding() {
        let e = lines(b"a\nb\n\xff\n").err().unwrap();
        assert_eq!((e.line, e.reason.as_str()), (3, "invalid UTF-8"));
        let big = alloc::vec![b' '; MAX_INPUT + 1];
        assert!(lines(&big)
            .err()
            .unwrap()
            .reason
            .as_str()
            .starts_with("file too big"));
        let many = alloc::vec![b'\n'; MAX_LINES + 1];
        assert!(lines(&many[..MAX_LINES]).is_ok());
        let e = lines(&many).err().unwrap();
        assert_eq!(e.line, MAX_LINES as u32 + 1);
        let ls: Vec<&str> = lines(b"a\r\nb").unwrap().collect();
        assert_eq!(ls, ["a", "b"]);
    }

    #[test]
    fn reason_truncates() {
        let r = reason!("{}", "x".repeat(1000));
        assert_eq!(r.as_str().len(), 200);
    }
}
