//! The parsed form of a scenario: one [`Step`] per command line, borrowing the source text.

use alloc::vec::Vec;

use crate::role::{NodeSet, Role, MAX_NODES};
use crate::thread::Request;

/// A node set as written; `masters`/`slaves` are resolved against the roles at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// `*`: every node.
    All,
    /// `masters`: nodes whose current role is `master`.
    Masters,
    /// `slaves`: nodes whose current role is `slave`.
    Slaves,
    /// A comma list of indices, checked against the cluster size.
    List(NodeSet),
}

/// A file's content as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// `"text"` (escapes resolved).
    Text(Vec<u8>),
    /// `bytes=<n> seed=<s>`: deterministic pseudo-random bytes (see [`super::prng`]).
    Random {
        /// Length in bytes.
        bytes: usize,
        /// The generator's seed.
        seed: u64,
    },
}

/// What a thread-state check expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadCheck {
    /// `expect frozen`: the thread acknowledged a freeze and was not unfrozen.
    Frozen,
    /// `expect running`: a thread was started, is not frozen and has not stopped.
    Running,
    /// `expect stopped`: no thread runs (never started, or STOPPED acknowledged).
    Stopped,
}

/// One `expect` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check<'a> {
    /// `expect same <a> <b>`.
    Same(usize, usize),
    /// `expect file <set> <path> <content>`.
    File(Set, &'a [u8], Content),
    /// `expect dir <set> <path>`.
    Dir(Set, &'a [u8]),
    /// `expect missing <set> <path>`.
    Missing(Set, &'a [u8]),
    /// `expect mode <set> <path> <octal>`.
    Mode(Set, &'a [u8], u32),
    /// `expect tid <set> <path> <tid>`.
    Tid(Set, &'a [u8], u64),
    /// `expect frozen|running|stopped <set>`.
    Thread(ThreadCheck, Set),
    /// `expect focus <tid>`.
    Focus(u64),
    /// `expect quorum none`.
    QuorumNone,
    /// `expect unchanged <name> <idx>`: (name, which snapshot taken (0 = the first), idx).
    Unchanged(&'a str, usize, usize),
    /// `expect status <idx> [!]<word>...`: (must be present, word).
    Status(usize, Vec<(bool, &'a str)>),
}

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd<'a> {
    /// `role <idx> <role>`.
    Role(usize, Role),
    /// `mkdir <set> <path>`.
    Mkdir(Set, &'a [u8]),
    /// `write <set> <path> <content>`.
    Write(Set, &'a [u8], Content),
    /// `rm <set> <path>`.
    Rm(Set, &'a [u8]),
    /// `chmod <set> <path> <octal>`.
    Chmod(Set, &'a [u8], u32),
    /// `link <set> <target> <path>`.
    Link(Set, &'a [u8], &'a [u8]),
    /// `start [<set>]` (`None`: every node without a running thread).
    Start(Option<Set>),
    /// `freeze|unfreeze|stop|remaster|signal <set>`.
    Thread(Request, Set),
    /// `wait synced [timeout=<dur>]`, timeout in milliseconds.
    WaitSynced(u64),
    /// `sync [<set>]` (`None`: every node).
    Sync(Option<Set>),
    /// `sleep <dur>`, in milliseconds.
    Sleep(u64),
    /// `stall <idx> <dur>|off` (milliseconds; `None` is `off`).
    Stall(usize, Option<u64>),
    /// `fail <idx> on|off`.
    Fail(usize, bool),
    /// `catchup <set> on|off`.
    Catchup(Set, bool),
    /// `snapshot <name> <idx>`.
    Snapshot(&'a str, usize),
    /// `remount <idx>`: commit the node to its volume and load it back (volumes only).
    Remount(usize),
    /// `crash <idx>`: load the node back from its volume, losing what was not committed
    /// (volumes only).
    Crash(usize),
    /// `expect ...`: a KTAP test.
    Expect(Check<'a>),
}

/// One command with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<'a> {
    /// 1-based line number.
    pub line: u32,
    /// The line as written, trimmed, without its comment (the KTAP description of a check).
    pub text: &'a str,
    /// The command.
    pub cmd: Cmd<'a>,
}

/// A whole parsed scenario.
#[derive(Debug)]
pub struct Script<'a> {
    /// The line of the `cluster` command.
    pub cluster_line: u32,
    /// The `cluster` command's `layout=` option (the seed's when absent).
    pub layout: crate::store::Layout,
    /// The `cluster` command's `volumes=on` option: each node a PFS on a volume image.
    pub volumes: bool,
    /// The roles of the `cluster` command, node 0 first.
    pub roles: heapless::Vec<Role, MAX_NODES>,
    /// Every command after `cluster`, in order.
    pub steps: Vec<Step<'a>>,
    /// How many steps are checks (the KTAP plan).
    pub checks: usize,
}
