//! The `.scn` scenario language (docs/SCENARIOS.md): one test language for every host.
//!
//! [`lex`] checks bounds, encoding and tokens; [`parse`] turns the whole file into a [`Script`]
//! before anything runs; the interpreter drives a [`crate::cluster::Cluster`] and [`ktap`]
//! writes the verdicts. A host only carries bytes in and KTAP text out.

use core::fmt;

use crate::host::Host;

pub mod ast;
pub mod ktap;
pub mod lex;
mod names;
pub mod parse;
pub mod prng;
mod run;
mod volumes;

pub use ast::Script;
pub use lex::ParseError;

/// How a scenario run ended; maps to the userland exit status 0/1/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every check passed and every command ran (exit 0).
    Passed,
    /// A check failed or a command failed at run time (exit 1).
    Failed,
    /// The file was rejected before anything ran (exit 2); the text holds `line N: <reason>`.
    Rejected,
}

impl Outcome {
    /// The userland exit status: 0 passed, 1 failed, 2 rejected.
    pub const fn exit_code(self) -> i32 {
        match self {
            Outcome::Passed => 0,
            Outcome::Failed => 1,
            Outcome::Rejected => 2,
        }
    }
}

/// Parse a scenario without running it.
#[allow(clippy::result_large_err)] // see `lex::Reason`: never allocates
pub fn check(text: &[u8]) -> Result<Script<'_>, ParseError> {
    parse::parse(text)
}

/// Parse and run a scenario on `host`, writing its KTAP text (or the rejection line) to `out`.
pub fn run(host: &'static dyn Host, text: &[u8], out: &mut dyn fmt::Write) -> Outcome {
    run_mode(host, text, out, crate::sync::ScanMode::default())
}

/// [`run`] with the cluster's synchronizers in scan mode `mode`.
pub fn run_mode(
    host: &'static dyn Host,
    text: &[u8],
    out: &mut dyn fmt::Write,
    mode: crate::sync::ScanMode,
) -> Outcome {
    let script = match parse::parse(text) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(out, "{e}");
            return Outcome::Rejected;
        }
    };
    run::execute_mode(host, &script, out, mode)
}
