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
use super::volumes::{self, Volumes};
use super::{prng, Outcome};
use crate::cluster::{Cluster, FileCmp, FrontendOp, Snapshot};
use crate::host::{self, Host, LogLevel};
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
    let made = if script.volumes {
        volumes::cluster(host, &script.roles)
    } else {
        Cluster::with_layout(host, &script.roles, script.layout)
            .map(|c| (c, Volumes::default()))
            .map_err(|e| reason!("cluster: {}", e))
    };
    match made {
        Err(e) => {
            k.diag(reason!("line {}: {}", script.cluster_line, e).as_str());
            stopped_at = Some(0);
        }
        Ok((cluster, vols)) => {
            cluster.set_scan_mode(mode);
            let mut it = Interp {
                c: cluster,
                vols,
                host,
                diag: Diag::default(),
                snaps: Vec::new(),
            };
            for (i, step) in script.steps.iter().enumerate() {
                // Between commands, and inside the long ones, a killed caller ends the run here.
                let r = if host.should_stop() {
                    Err(reason!("{}", Error::Interrupted))
                } else if let Cmd::Expect(check) = &step.cmd {
                    it.diag.clear();
                    it.check(check).map(|ok| {
                        k.result(ok, step.line, step.text, it.diag.text());
                    })
                } else {
                    it.exec(&step.cmd)
                };
                if let Err(r) = r {
                    let line = reason!("line {}: {}", step.line, r);
                    if host.should_stop() {
                        // Whoever reads the KTAP is gone: say it where a person can see it.
                        host.log(LogLevel::Info, format_args!("run {}", line.as_str()));
                    }
                    k.diag(line.as_str());
                    // A check cut short is reported as not run, with the checks after it.
                    stopped_at = Some(i);
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
    /// Each node's volume, for a cluster on volumes.
    vols: Volumes,
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

/// The expected bytes of a [`Content`], produced in order in pieces of any size (so a check
/// never holds a whole expected file).
enum Want<'c> {
    Text(&'c [u8]),
    Random(prng::Bytes),
}

impl<'c> Want<'c> {
    /// `c`'s length and its bytes from the start.
    fn of(c: &'c Content) -> (u64, Want<'c>) {
        match c {
            Content::Text(t) => (t.len() as u64, Want::Text(t.as_slice())),
            Content::Random { bytes, seed } => {
                (*bytes as u64, Want::Random(prng::Bytes::new(*seed)))
            }
        }
    }

    /// Fill `out` with the next bytes (zeros past the end).
    fn fill(&mut self, out: &mut [u8]) {
        match self {
            Want::Text(rest) => {
                let (now, later) = rest.split_at(out.len().min(rest.len()));
                out[..now.len()].copy_from_slice(now);
                out[now.len()..].fill(0);
                *rest = later;
            }
            Want::Random(r) => r.fill(out),
        }
    }
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
            Cmd::Sleep(ms) => host::sleep_interruptible(self.host, Duration::from_millis(*ms))
                .map_err(|e| reason!("{}", e)),
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
            Cmd::Remount(i) | Cmd::Crash(i) => {
                self.node_ok(*i, "remount")?;
                volumes::reload(&self.c, &mut self.vols, *i, matches!(cmd, Cmd::Remount(_)))
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
            host::sleep_interruptible(self.host, WAIT_POLL).map_err(|e| reason!("{}", e))?;
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
                let stop = || self.host.should_stop();
                if stop() {
                    return Err(reason!("{}", Error::Interrupted));
                }
                match self.c.sync_node(i, &stop) {
                    // No quorum: nothing may change; that is the expected outcome, not a failure.
                    // Undecided (a failed node could have decided a key): the same.
                    // Stopped by `stop`: checked at the next node or round.
                    Ok(())
                    | Err(Error::NoQuorum)
                    | Err(Error::Deadlock)
                    | Err(Error::InProgress) => {}
                    Err(e) => return Err(reason!("node {}: sync: {}", i, e)),
                }
            }
            if self.host.should_stop() {
                return Err(reason!("{}", Error::Interrupted));
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

    /// Run one check, writing what differs to `self.diag`. Fails only when the run was told to
    /// stop ([`Error::Interrupted`]): the check then has no verdict.
    fn check(&mut self, check: &Check<'_>) -> R<bool> {
        let d = &mut self.diag;
        let c = &self.c;
        Ok(match check {
            Check::Same(a, b) => expect_same(c, d, a, b)?,
            Check::File(s, p, want) => expect_file(c, d, s, p, want)?,
            Check::Dir(s, p) => expect_dir(c, d, s, p),
            Check::Mode(s, p, m) => expect_mode(c, d, s, p, m),
            Check::Tid(s, p, t) => expect_tid(c, d, s, p, t),
            Check::Missing(s, p) => expect_missing(c, d, s, p),
            Check::Thread(want, s) => expect_thread(c, d, want, s),
            Check::Focus(t) => expect_focus(c, d, t),
            Check::QuorumNone => expect_quorum_none(c, d),
            Check::Unchanged(name, taken, i) => {
                expect_unchanged(c, d, &self.snaps, name, taken, i)?
            }
            Check::Status(i, words) => expect_status(c, d, i, words),
        })
    }
}

/// `expect same <a> <b>`: the two nodes hold the same tree.
/// `Err` only when the run was told to stop.
fn expect_same(c: &Cluster, d: &mut Diag, a: &usize, b: &usize) -> R<bool> {
    match c.compare(*a, *b, d) {
        Ok(same) => Ok(same),
        Err(Error::Interrupted) => Err(reason!("{}", Error::Interrupted)),
        Err(e) => {
            let _ = writeln!(d, "compare {a} {b}: {e}");
            Ok(false)
        }
    }
}

/// `expect file`: the file has this content on every node of the set, compared block by block
/// (never a copy of the file). `Err` only when the run was told to stop.
fn expect_file(c: &Cluster, d: &mut Diag, s: &Set, p: &[u8], want: &Content) -> R<bool> {
    let mut ok = true;
    for i in resolve_with(c, *s).iter() {
        let (len, mut w) = Want::of(want);
        match c.compare_file(i, p, len, &mut |out| w.fill(out)) {
            Ok(FileCmp::Same) => {}
            Ok(FileCmp::DiffersAt(at)) => {
                ok = false;
                let _ = writeln!(d, "node {i}: {}: content differs at byte {at}", show(p));
            }
            Ok(FileCmp::Size(got)) => {
                ok = false;
                let _ = writeln!(d, "node {i}: {}: size {got}, expected {len}", show(p));
            }
            Err(Error::Interrupted) => return Err(reason!("{}", Error::Interrupted)),
            Err(e) => {
                ok = false;
                let _ = writeln!(d, "node {i}: {}: {e}", show(p));
            }
        }
    }
    Ok(ok)
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
) -> R<bool> {
    // The parser saw the snapshot command earlier in the file, so it ran.
    let Some(snap) = snaps.get(*taken) else {
        let _ = writeln!(d, "snapshot '{name}' was not taken");
        return Ok(false);
    };
    match snap.matches(c, *i, d) {
        Ok(same) => Ok(same),
        Err(Error::Interrupted) => Err(reason!("{}", Error::Interrupted)),
        Err(e) => {
            let _ = writeln!(d, "node {i}: {e}");
            Ok(false)
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

#[cfg(test)]
mod tests {
    use crate::host::testhost::host;
    use crate::scenario::{run, Outcome};
    use alloc::string::String;
    use std::time::{Duration, Instant};

    /// Run `text` on a host that says "stop" from its `after`-th poll on; the output, and how
    /// long the run took. Every chain lock must be gone afterwards (everything freed).
    fn run_stopped(text: &str, after: usize) -> (Outcome, String, Duration) {
        let h = host();
        h.stop_after(after);
        let t0 = Instant::now();
        let mut out = String::new();
        let o = run(h, text.as_bytes(), &mut out);
        let took = t0.elapsed();
        assert_eq!(h.live_locks(), 0, "locks left after an interrupted run");
        (o, out, took)
    }

    #[test]
    fn a_stop_request_ends_a_long_sleep_at_its_line() {
        let (o, out, took) = run_stopped(
            "cluster master master\nwrite * /a \"x\"\nexpect same 0 1\nsleep 3600s\nexpect same 0 1\n",
            12,
        );
        assert_eq!(o, Outcome::Failed, "{out}");
        assert!(out.contains("ok 1 "), "{out}");
        assert!(out.contains("# line 4: interrupted"), "{out}");
        assert!(out.contains("not ok 2 "), "{out}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }

    #[test]
    fn a_stop_request_ends_a_sync_against_a_stalled_master() {
        let (o, out, took) = run_stopped(
            "cluster master master slave\nwrite 0,1 /a \"one\"\nstall 1 3600s\nsync\nexpect same 0 2\n",
            // The checks between commands, then polls inside the sync.
            6,
        );
        assert_eq!(o, Outcome::Failed, "{out}");
        assert!(out.contains("# line 4: interrupted"), "{out}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }

    #[test]
    fn a_stop_request_ends_a_check_and_reports_it_not_run() {
        // Polled once per command, then within the comparison of the third line.
        let (o, out, _) = run_stopped(
            "cluster master master\nwrite * /a \"x\"\nexpect same 0 1\nexpect file * /a \"x\"\n",
            3,
        );
        assert_eq!(o, Outcome::Failed, "{out}");
        assert!(out.contains("# line 3: interrupted"), "{out}");
        assert!(out.contains("not ok 1 "), "{out}");
        assert!(out.contains("not ok 2 "), "{out}");
    }

    #[test]
    fn no_stop_request_runs_to_the_end() {
        let (o, out, _) = run_stopped(
            "cluster master master\nwrite * /a \"x\"\nexpect same 0 1\nsleep 10ms\nexpect file * /a \"x\"\n",
            usize::MAX,
        );
        assert_eq!(o, Outcome::Passed, "{out}");
    }
}
