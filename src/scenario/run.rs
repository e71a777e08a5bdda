//! The interpreter: runs a parsed [`Script`] against a fresh [`Cluster`] and writes KTAP.
//!
//! Commands run in order. A command that fails at run time ends the run at its line (reported as
//! `# line N: <reason>`); the checks after it are reported `not ok ... # SKIP not run` and count
//! as failed. Checks never end the run. At the end every sync thread still running is stopped.

// Errors carry a fixed-capacity reason on purpose: reporting one must never allocate.
#![allow(clippy::result_large_err)]

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt::Write;
use core::pin::Pin;
use core::time::Duration;

use super::ast::{Check, Cmd, Content, Script, Set, ThreadCheck};
use super::ktap::{Diag, Ktap};
use super::lex::{reason, Reason};
use super::{prng, Outcome};
use crate::cluster::{Cluster, FrontendOp, Snapshot};
use crate::host::{self, Host};
use crate::media::OBJTYPE_DIRECTORY;
use crate::quorum::{QuorumResult, StatusFlags};
use crate::role::{NodeSet, Role};
use crate::thread::{Request, ThreadState};
use crate::Error;

/// How often `wait synced` looks at the nodes.
const WAIT_POLL: Duration = Duration::from_millis(5);
/// Most rounds `sync` runs before it reports that the cluster does not settle.
const MAX_SYNC_ROUNDS: usize = 64;

/// Run `script` on a new cluster on `host` with its synchronizers in scan mode `mode`, writing
/// KTAP to `out`.
pub fn execute_mode(
    host: &'static dyn Host,
    script: &Script<'_>,
    out: &mut dyn Write,
    mode: crate::sync::ScanMode,
) -> Outcome {
    let mut k = Ktap::new(out, script.checks);
    let mut stopped_at = None;
    match Cluster::with_layout(host, &script.roles, script.layout) {
        Err(e) => {
            k.diag(reason!("line {}: cluster: {}", script.cluster_line, e).as_str());
            stopped_at = Some(0);
        }
        Ok(cluster) => {
            cluster.set_scan_mode(mode);
            let mut it = Interp {
                c: cluster,
                host,
                diag: Diag::default(),
                snaps: Vec::new(),
            };
            for (i, step) in script.steps.iter().enumerate() {
                if let Cmd::Expect(check) = &step.cmd {
                    it.diag.clear();
                    let ok = it.check(check);
                    k.result(ok, step.line, step.text, it.diag.text());
                } else if let Err(r) = it.exec(&step.cmd) {
                    k.diag(reason!("line {}: {}", step.line, r).as_str());
                    stopped_at = Some(i + 1);
                    break;
                }
            }
            it.stop_all();
        }
    }
    if let Some(from) = stopped_at {
        for step in script.steps.get(from..).unwrap_or(&[]) {
            if matches!(step.cmd, Cmd::Expect(_)) {
                k.not_run(step.line, step.text);
            }
        }
    }
    let (_, failed) = k.finish();
    if stopped_at.is_some() || failed > 0 {
        Outcome::Failed
    } else {
        Outcome::Passed
    }
}

type R<T> = Result<T, Reason>;

struct Interp {
    c: Pin<Box<Cluster>>,
    host: &'static dyn Host,
    /// Snapshots taken so far, in the order of their `snapshot` lines.
    snaps: Vec<Snapshot>,
    diag: Diag,
}

/// `"1,3"` for a node set, for diagnostics.
struct Nodes(NodeSet);

impl core::fmt::Display for Nodes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (k, i) in self.0.iter().enumerate() {
            if k > 0 {
                f.write_str(",")?;
            }
            write!(f, "{i}")?;
        }
        Ok(())
    }
}

fn show(path: &[u8]) -> &str {
    // Paths come from the (UTF-8) scenario text.
    core::str::from_utf8(path).unwrap_or("?")
}

fn content(c: &Content) -> Result<alloc::borrow::Cow<'_, [u8]>, Error> {
    Ok(match c {
        Content::Text(t) => alloc::borrow::Cow::Borrowed(t.as_slice()),
        Content::Random { bytes, seed } => alloc::borrow::Cow::Owned(prng::bytes(*bytes, *seed)?),
    })
}

impl Interp {
    fn nodes(&self) -> usize {
        self.c.len()
    }

    fn resolve(&self, set: Set) -> NodeSet {
        resolve_with(&self.c, set)
    }

    fn has_thread(&self, idx: usize) -> bool {
        matches!(
            self.c.thread_state(idx),
            ThreadState::Running | ThreadState::Frozen
        )
    }

    fn stop_all(&mut self) {
        for idx in 0..self.nodes() {
            if self.has_thread(idx) {
                let _ = self.c.thread_request(idx, Request::Stop);
            }
        }
    }

    fn exec(&mut self, cmd: &Cmd<'_>) -> R<()> {
        match cmd {
            Cmd::Role(i, r) => {
                self.c.set_role(*i, *r);
                Ok(())
            }
            Cmd::Mkdir(s, p) => self.apply("mkdir", *s, p, FrontendOp::Mkdir(p)),
            Cmd::Write(s, p, data) => {
                let bytes = content(data).map_err(|e| reason!("write {}: {}", show(p), e))?;
                self.apply("write", *s, p, FrontendOp::Write(p, &bytes))
            }
            Cmd::Rm(s, p) => self.apply("rm", *s, p, FrontendOp::Rm(p)),
            Cmd::Chmod(s, p, m) => self.apply("chmod", *s, p, FrontendOp::Chmod(p, *m)),
            Cmd::Link(s, t, p) => self.apply("link", *s, p, FrontendOp::Link(t, p)),
            Cmd::Start(set) => {
                let set = match set {
                    Some(s) => self.resolve(*s),
                    // Default: every node that has no thread yet (or whose thread stopped).
                    None => NodeSet(
                        (0..self.nodes())
                            .filter(|&i| !self.has_thread(i))
                            .fold(0, |acc, i| acc | 1 << i),
                    ),
                };
                for i in set.iter() {
                    self.c
                        .as_ref()
                        .thread_start(i)
                        .map_err(|e| thread_err(i, "start", e))?;
                }
                Ok(())
            }
            Cmd::Thread(req, s) => {
                for i in self.resolve(*s).iter() {
                    self.c
                        .thread_request(i, *req)
                        .map_err(|e| thread_err(i, req.name(), e))?;
                }
                Ok(())
            }
            Cmd::WaitSynced(ms) => self.wait_synced(*ms),
            Cmd::Sync(s) => self.sync(self.resolve(s.unwrap_or(Set::All))),
            Cmd::Sleep(ms) => {
                host::sleep(self.host, Duration::from_millis(*ms));
                Ok(())
            }
            Cmd::Stall(i, ms) => {
                self.node_ok(*i, "stall")?;
                self.c.set_stall(*i, ms.map(Duration::from_millis));
                Ok(())
            }
            Cmd::Fail(i, on) => {
                self.node_ok(*i, "fail")?;
                self.c.set_fail(*i, *on);
                Ok(())
            }
            Cmd::Catchup(s, on) => {
                for i in self.resolve(*s).iter() {
                    self.c.set_catchup(i, *on);
                }
                Ok(())
            }
            Cmd::Snapshot(_, i) => {
                let snap = self
                    .c
                    .snapshot(*i)
                    .map_err(|e| reason!("node {}: snapshot: {}", i, e))?;
                crate::mem::try_push(&mut self.snaps, snap).map_err(|e| reason!("snapshot: {}", e))
            }
            Cmd::Expect(_) => Ok(()),
        }
    }

    fn node_ok(&self, idx: usize, verb: &str) -> R<()> {
        if idx < self.nodes() {
            Ok(())
        } else {
            Err(reason!("{}: no node {}", verb, idx))
        }
    }

    fn apply(&self, verb: &str, s: Set, path: &[u8], op: FrontendOp<'_>) -> R<()> {
        let set = self.resolve(s);
        if set.0 == 0 {
            return Ok(());
        }
        self.c
            .apply(set, op)
            .map(|_| ())
            .map_err(|(node, e)| reason!("node {}: {} {}: {}", node, verb, show(path), e))
    }

    fn wait_synced(&self, ms: u64) -> R<()> {
        let deadline = self
            .host
            .now_ns()
            .saturating_add(ms.saturating_mul(1_000_000));
        loop {
            let mut behind = NodeSet(0);
            for i in 0..self.nodes() {
                if self.c.thread_state(i) == ThreadState::Running && !self.c.in_sync(i) {
                    behind.0 |= 1 << i;
                }
            }
            if behind.0 == 0 {
                return Ok(());
            }
            if self.host.now_ns() >= deadline {
                let mut r = reason!(
                    "wait synced: timed out after {}ms; not in sync: node {}",
                    ms,
                    Nodes(behind)
                );
                let _ = match self.c.focus_root() {
                    QuorumResult::Focus { node, tid } => {
                        write!(r, " (focus: node {node} at tid {tid})")
                    }
                    QuorumResult::None(e) => write!(r, " (no focus: {e})"),
                };
                return Err(r);
            }
            host::sleep(self.host, WAIT_POLL);
        }
    }

    /// What `sync` watches to see whether a round changed anything: the state of each node's
    /// tree (TIDs and content), never the synchronizer's counters, which also count work
    /// redone to the same result (a child replaced again while a failed node leaves a key
    /// under it undecided).
    fn fingerprint(&self, set: NodeSet) -> R<Vec<u64>> {
        let mut v = Vec::new();
        for i in set.iter() {
            let d = self
                .c
                .digest(i)
                .map_err(|e| reason!("node {}: sync: {}", i, e))?;
            crate::mem::try_push(&mut v, d).map_err(|e| reason!("sync: {}", e))?;
        }
        Ok(v)
    }

    /// Deterministic synchronization on this thread: every node of `set`, in index order, until
    /// a whole round leaves every tree of `set` as it was.
    fn sync(&self, set: NodeSet) -> R<()> {
        for _ in 0..MAX_SYNC_ROUNDS {
            let before = self.fingerprint(set)?;
            for i in set.iter() {
                self.c.refresh_view(i);
                match self.c.sync_node(i, &|| false) {
                    // No quorum: nothing may change; that is the expected outcome, not a failure.
                    // Undecided (a failed node could have decided a key): the same.
                    Ok(())
                    | Err(Error::NoQuorum)
                    | Err(Error::Deadlock)
                    | Err(Error::InProgress) => {}
                    Err(e) => return Err(reason!("node {}: sync: {}", i, e)),
                }
            }
            if self.fingerprint(set)? == before {
                return Ok(());
            }
        }
        Err(reason!(
            "sync: still changing after {} rounds",
            MAX_SYNC_ROUNDS
        ))
    }

    /// Run one check, writing what differs to `self.diag`.
    fn check(&mut self, check: &Check<'_>) -> bool {
        let d = &mut self.diag;
        let c = &self.c;
        match check {
            Check::Same(a, b) => expect_same(c, d, a, b),
            Check::File(s, p, want) => expect_file(c, d, s, p, want),
            Check::Dir(s, p) => expect_dir(c, d, s, p),
            Check::Mode(s, p, m) => expect_mode(c, d, s, p, m),
            Check::Tid(s, p, t) => expect_tid(c, d, s, p, t),
            Check::Missing(s, p) => expect_missing(c, d, s, p),
            Check::Thread(want, s) => expect_thread(c, d, want, s),
            Check::Focus(t) => expect_focus(c, d, t),
            Check::QuorumNone => expect_quorum_none(c, d),
            Check::Unchanged(name, taken, i) => expect_unchanged(c, d, &self.snaps, name, taken, i),
            Check::Status(i, words) => expect_status(c, d, i, words),
        }
    }
}

/// `expect same <a> <b>`: the two nodes hold the same tree.
fn expect_same(c: &Cluster, d: &mut Diag, a: &usize, b: &usize) -> bool {
    match c.compare(*a, *b, d) {
        Ok(same) => same,
        Err(e) => {
            let _ = writeln!(d, "compare {a} {b}: {e}");
            false
        }
    }
}

/// `expect file`: the file has this content on every node of the set.
fn expect_file(c: &Cluster, d: &mut Diag, s: &Set, p: &[u8], want: &Content) -> bool {
    let want = match content(want) {
        Ok(w) => w,
        Err(e) => {
            let _ = writeln!(d, "{e}");
            return false;
        }
    };
    let mut ok = true;
    for i in resolve_with(c, *s).iter() {
        match c.read_file(i, p) {
            Ok(got) if got[..] == want[..] => {}
            Ok(got) => {
                ok = false;
                match got.iter().zip(want.iter()).position(|(x, y)| x != y) {
                    Some(at) => writeln!(d, "node {i}: {}: content differs at byte {at}", show(p)),
                    None => writeln!(
                        d,
                        "node {i}: {}: size {}, expected {}",
                        show(p),
                        got.len(),
                        want.len()
                    ),
                }
                .unwrap_or(());
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(d, "node {i}: {}: {e}", show(p));
            }
        }
    }
    ok
}

/// `expect dir`: the path is a directory on every node of the set.
fn expect_dir(c: &Cluster, d: &mut Diag, s: &Set, p: &[u8]) -> bool {
    each_stat(c, d, *s, p, |st| {
        (st.objtype == OBJTYPE_DIRECTORY)
            .then_some(())
            .ok_or(reason!("not a directory (type {})", st.objtype))
    })
}

/// `expect mode`: the path has this mode on every node of the set.
fn expect_mode(c: &Cluster, d: &mut Diag, s: &Set, p: &[u8], m: &u32) -> bool {
    each_stat(c, d, *s, p, |st| {
        (st.mode & 0o7777 == *m).then_some(()).ok_or(reason!(
            "mode {:04o}, expected {:04o}",
            st.mode & 0o7777,
            m
        ))
    })
}

/// `expect tid`: the path has this modify_tid on every node of the set.
fn expect_tid(c: &Cluster, d: &mut Diag, s: &Set, p: &[u8], t: &u64) -> bool {
    each_stat(c, d, *s, p, |st| {
        (st.modify_tid == *t)
            .then_some(())
            .ok_or(reason!("tid {}, expected {}", st.modify_tid, t))
    })
}

/// `expect missing`: the path is absent on every node of the set.
fn expect_missing(c: &Cluster, d: &mut Diag, s: &Set, p: &[u8]) -> bool {
    let mut ok = true;
    for i in resolve_with(c, *s).iter() {
        match c.stat(i, p) {
            Err(Error::NotFound) | Err(Error::NotDir) => {}
            Ok(st) => {
                ok = false;
                let _ = writeln!(
                    d,
                    "node {i}: {}: exists (type {}, tid {})",
                    show(p),
                    st.objtype,
                    st.modify_tid
                );
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(d, "node {i}: {}: {e}", show(p));
            }
        }
    }
    ok
}

/// `expect frozen|running|stopped`: every thread of the set is in that state.
fn expect_thread(c: &Cluster, d: &mut Diag, want: &ThreadCheck, s: &Set) -> bool {
    let mut ok = true;
    for i in resolve_with(c, *s).iter() {
        let st = c.thread_state(i);
        let good = match want {
            ThreadCheck::Frozen => st == ThreadState::Frozen,
            ThreadCheck::Running => st == ThreadState::Running,
            ThreadCheck::Stopped => {
                matches!(st, ThreadState::Stopped | ThreadState::NotStarted)
            }
        };
        if !good {
            ok = false;
            let _ = writeln!(d, "node {i}: thread is {}", st.name());
        }
    }
    ok
}

/// `expect focus <tid>`: a quorum agrees on the PFS root at that TID.
fn expect_focus(c: &Cluster, d: &mut Diag, t: &u64) -> bool {
    match c.focus_root() {
        QuorumResult::Focus { tid, .. } if tid == *t => true,
        QuorumResult::Focus { node, tid } => {
            let _ = writeln!(d, "focus is tid {tid} (node {node})");
            false
        }
        QuorumResult::None(e) => {
            let _ = writeln!(d, "no focus: {e}");
            false
        }
    }
}

/// `expect quorum none`: no quorum agrees on the PFS root.
fn expect_quorum_none(c: &Cluster, d: &mut Diag) -> bool {
    match c.focus_root() {
        QuorumResult::None(_) => true,
        QuorumResult::Focus { node, tid } => {
            let _ = writeln!(d, "a quorum agrees on tid {tid} (focus node {node})");
            false
        }
    }
}

/// `expect unchanged <name> <idx>`: the node still matches the snapshot (`taken`: its
/// ordinal among the snapshots the run took).
fn expect_unchanged(
    c: &Cluster,
    d: &mut Diag,
    snaps: &[Snapshot],
    name: &&str,
    taken: &usize,
    i: &usize,
) -> bool {
    // The parser saw the snapshot command earlier in the file, so it ran.
    let Some(snap) = snaps.get(*taken) else {
        let _ = writeln!(d, "snapshot '{name}' was not taken");
        return false;
    };
    match snap.matches(c, *i, d) {
        Ok(same) => same,
        Err(e) => {
            let _ = writeln!(d, "node {i}: {e}");
            false
        }
    }
}

/// `expect status`: each word is present (or, with `!`, absent) on the node.
fn expect_status(c: &Cluster, d: &mut Diag, i: &usize, words: &[(bool, &str)]) -> bool {
    let have = c.status(*i);
    let mut ok = true;
    for (present, w) in words {
        if have.has_word(w) != *present {
            ok = false;
            let what = if *present { "missing" } else { "present" };
            let _ = writeln!(
                d,
                "node {i}: status word {w} {what} (status:{})",
                Words(have)
            );
        }
    }
    ok
}

/// The status words of `have`, space-separated, for diagnostics.
struct Words(StatusFlags);

impl core::fmt::Display for Words {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for w in self.0.words() {
            write!(f, " {w}")?;
        }
        Ok(())
    }
}

fn resolve_with(c: &Cluster, s: Set) -> NodeSet {
    let mut out = NodeSet(0);
    for i in 0..c.len() {
        let inside = match s {
            Set::All => true,
            Set::Masters => c.role(i) == Role::Master,
            Set::Slaves => c.role(i) == Role::Slave,
            Set::List(l) => l.contains(i),
        };
        if inside {
            out.0 |= 1 << i;
        }
    }
    out
}

/// Stat `path` on every node of `s` and apply `test`; report each failure.
fn each_stat(
    c: &Cluster,
    d: &mut Diag,
    s: Set,
    p: &[u8],
    test: impl Fn(&crate::cluster::InodeStat) -> R<()>,
) -> bool {
    let mut ok = true;
    for i in resolve_with(c, s).iter() {
        let r = c
            .stat(i, p)
            .map_err(|e| reason!("{}", e))
            .and_then(|st| test(&st));
        if let Err(r) = r {
            ok = false;
            let _ = writeln!(d, "node {i}: {}: {r}", show(p));
        }
    }
    ok
}

fn thread_err(i: usize, op: &str, e: Error) -> Reason {
    match e {
        Error::Busy => reason!("node {}: {}: a sync thread already runs", i, op),
        e => reason!("node {}: {}: {}", i, op, e),
    }
}
