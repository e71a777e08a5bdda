//! The `.scn` scenario language (docs/SCENARIOS.md). SKELETON: signatures are the contract.

use core::fmt;

use crate::host::Host;

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

/// Parse and run a scenario on `host`, writing its KTAP text (or the rejection line) to `out`.
pub fn run(host: &'static dyn Host, text: &[u8], out: &mut dyn fmt::Write) -> Outcome {
    let _ = (host, text, out);
    todo!()
}
