//! Snapshot names: every `snapshot` line of a file, found before the file is parsed, so that the
//! parser checks each definition and use in O(log n) comparisons.
//!
//! A scenario may take tens of thousands of snapshots; a linear lookup per line made parsing
//! quadratic. The definitions are kept in one vector sorted by (name, line): the first entry of a
//! name is its earliest definition. While the parser is at line `n`, every line before `n` parsed,
//! so a `snapshot` line before `n` found here is exactly a snapshot the parser accepted. One
//! fallible vector and an in-place sort: nothing here allocates infallibly, and nothing but that
//! vector allocates at all (an allocation that fails here but not in the parser must not make a
//! snapshot go missing).

// Errors carry a fixed-capacity reason on purpose: reporting one must never allocate.
#![allow(clippy::result_large_err)]

use alloc::vec::Vec;

use super::lex::{self, reason, ParseError};

/// One `snapshot <name> ...` line.
struct Def<'a> {
    name: &'a str,
    line: u32,
    /// How many `snapshot` lines come before this one: its index among the snapshots taken.
    ordinal: usize,
}

/// The snapshot definitions of one file.
pub(super) struct SnapNames<'a> {
    /// Sorted by (name, line).
    defs: Vec<Def<'a>>,
    /// Name comparisons made by lookups, for the test that parsing is not quadratic.
    #[cfg(test)]
    pub(super) compares: core::cell::Cell<usize>,
}

impl<'a> SnapNames<'a> {
    /// Find every line that reads `snapshot <name> ...` (whether the rest is right is the
    /// parser's to judge: a wrong line ends the parse there, so its entry is never consulted).
    pub(super) fn collect(input: &'a [u8]) -> Result<Self, ParseError> {
        let mut defs = Vec::new();
        for (i, line) in lex::lines(input)?.enumerate() {
            let Some(name) = snapshot_name(line) else {
                continue;
            };
            let line = (i + 1) as u32;
            let def = Def {
                name,
                line,
                ordinal: defs.len(),
            };
            crate::mem::try_push(&mut defs, def).map_err(|_| ParseError {
                line,
                reason: reason!("out of memory"),
            })?;
        }
        defs.sort_unstable_by(|a, b| a.name.cmp(b.name).then(a.line.cmp(&b.line)));
        Ok(SnapNames {
            defs,
            #[cfg(test)]
            compares: core::cell::Cell::new(0),
        })
    }

    /// The ordinal of the snapshot `name` defined on a line before `line`, if any.
    pub(super) fn defined_before(&self, name: &str, line: u32) -> Option<usize> {
        let at = self.defs.partition_point(|d| {
            #[cfg(test)]
            self.compares.set(self.compares.get() + 1);
            d.name < name
        });
        self.defs
            .get(at)
            .filter(|d| d.name == name && d.line < line)
            .map(|d| d.ordinal)
    }
}

/// The first two words of `line` if they are `snapshot <name>`: split as the lexer splits words
/// (at blanks and `#`), without its allocations, which could fail where the parser's do not.
fn snapshot_name(line: &str) -> Option<&str> {
    const ENDS: [char; 3] = [' ', '\t', '#'];
    let rest = line.trim_start_matches([' ', '\t']);
    let head = rest.find(ENDS).unwrap_or(rest.len());
    if &rest[..head] != "snapshot" {
        return None;
    }
    let after = rest[head..].trim_start_matches([' ', '\t']);
    if after.is_empty() || after.starts_with(['#', '"']) {
        return None;
    }
    Some(&after[..after.find(ENDS).unwrap_or(after.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_earliest_definition_before_a_line() {
        let text = b"cluster master slave\nsnapshot b 0\n  snapshot a 1 # x\nsnapshot\n\
                     snapshot \"q\" 0\nsnapshots c 0\nsnapshot a 0\n";
        let n = SnapNames::collect(text).unwrap();
        assert_eq!(n.defined_before("b", 2), None);
        assert_eq!(n.defined_before("b", 3), Some(0));
        assert_eq!(n.defined_before("a", 4), Some(1));
        assert_eq!(n.defined_before("a", 100), Some(1));
        assert_eq!(n.defined_before("c", 100), None);
        assert_eq!(n.defined_before("q", 100), None);
        assert_eq!(n.defined_before("zz", 100), None);
    }

    #[test]
    fn the_parser_agrees_with_a_linear_list_on_random_files() {
        use crate::scenario::ast::{Check, Cmd};
        use crate::scenario::parse::parse;
        use alloc::string::String;
        use core::fmt::Write;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut outcomes = [0; 2];
        for _ in 0..1000 {
            let mut text = String::from("cluster master slave\n");
            // The model: names taken so far, in order; the first line a linear list rejects.
            let mut taken: Vec<String> = Vec::new();
            let mut want: Vec<Option<usize>> = Vec::new();
            let mut first_bad = None;
            for line in 2..16u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let names = ["a", "b", "c", "d", "e", "f"];
                let name = names[(x % 6) as usize];
                match (x >> 8) % 4 {
                    0 => {
                        // Mostly a new name; sometimes one already taken.
                        let name = if (x >> 16) % 8 == 0 {
                            name
                        } else {
                            names[taken.len() % 6]
                        };
                        let known = taken.iter().position(|t| t == name);
                        writeln!(text, "snapshot {name} 0 # {name}").unwrap();
                        if known.is_some() {
                            first_bad = first_bad.or(Some(line));
                        }
                        taken.push(name.into());
                    }
                    1 => {
                        writeln!(text, "  # snapshot {name} 0").unwrap();
                    }
                    _ => {
                        // Mostly a name taken before; sometimes any name.
                        let name = match taken.len() {
                            0 => name,
                            n if (x >> 20) % 8 != 0 => taken[(x >> 24) as usize % n].as_str(),
                            _ => name,
                        };
                        let known = taken.iter().position(|t| t == name);
                        writeln!(text, "expect unchanged {name} 1").unwrap();
                        if known.is_none() {
                            first_bad = first_bad.or(Some(line));
                        }
                        want.push(known);
                    }
                }
            }
            match (parse(text.as_bytes()), first_bad) {
                (Err(e), Some(line)) => {
                    assert_eq!(e.line, line, "{text}");
                    outcomes[0] += 1;
                }
                (Ok(s), None) => {
                    outcomes[1] += 1;
                    let got: Vec<Option<usize>> = s
                        .steps
                        .iter()
                        .filter_map(|st| match st.cmd {
                            Cmd::Expect(Check::Unchanged(_, k, _)) => Some(Some(k)),
                            _ => None,
                        })
                        .collect();
                    assert_eq!(got, want, "{text}");
                }
                (got, want) => panic!("parse gave {got:?}, a linear list {want:?}:\n{text}"),
            }
        }
        assert!(outcomes[0] > 100 && outcomes[1] > 100, "{outcomes:?}");
    }
}
