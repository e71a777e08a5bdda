//! Snapshot names: every `snapshot` line of a file, found before the file is parsed, so that the
//! parser checks each definition and use in O(log n) comparisons.
//!
//! A scenario may take tens of thousands of snapshots; a linear lookup per line made parsing
//! quadratic. The definitions are kept in one vector sorted by (name, line): the first entry of a
//! name is its earliest definition. While the parser is at line `n`, every line before `n` parsed,
//! so a `snapshot` line before `n` found here is exactly a snapshot the parser accepted. One
//! fallible vector and an in-place sort: nothing here allocates infallibly.

// Errors carry a fixed-capacity reason on purpose: reporting one must never allocate.
#![allow(clippy::result_large_err)]

use alloc::vec::Vec;

use super::lex::{self, reason, ParseError, Tok};

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
    /// Find every line that lexes as `snapshot <name> ...` (other lines, including those that do
    /// not lex, are the parser's to judge).
    pub(super) fn collect(input: &'a [u8]) -> Result<Self, ParseError> {
        let mut defs = Vec::new();
        for (i, line) in lex::lines(input)?.enumerate() {
            // Cheap filter first: most lines are not snapshots and need not be lexed twice.
            if !line.trim_start_matches([' ', '\t']).starts_with("snapshot") {
                continue;
            }
            let Ok(lexed) = lex::lex_line(line) else {
                continue;
            };
            if let [Tok::Word("snapshot"), Tok::Word(name), ..] = lexed.toks[..] {
                let def = Def {
                    name,
                    line: (i + 1) as u32,
                    ordinal: defs.len(),
                };
                crate::mem::try_push(&mut defs, def).map_err(|_| ParseError {
                    line: (i + 1) as u32,
                    reason: reason!("out of memory"),
                })?;
            }
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
}
