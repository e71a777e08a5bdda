//! Syntax of the scenario language: a whole file to a [`Script`], or the first error.

// Errors carry a fixed-capacity reason on purpose: reporting one must never allocate.
#![allow(clippy::result_large_err)]

use alloc::vec::Vec;

use super::ast::{Check, Cmd, Content, Script, Set, Step, ThreadCheck};
use super::lex::{self, reason, ParseError, Reason, Tok};
use super::names::SnapNames;
use crate::role::{self, NodeSet, Role, RoleList};
use crate::store::Layout;
use crate::thread::Request;

/// Longest duration accepted (`sleep`, `wait synced timeout=`, `stall`), in milliseconds.
pub const MAX_DURATION_MS: u64 = 3_600_000;
/// Largest `bytes=<n>` accepted.
pub const MAX_BYTES: usize = 16 << 20;
/// Longest path component, in bytes.
pub const MAX_NAME: usize = 255;
/// Default `wait synced` timeout, in milliseconds.
pub const DEFAULT_WAIT_MS: u64 = 10_000;

type R<T> = Result<T, Reason>;

/// Parse a whole scenario file. Nothing runs unless this succeeds.
pub fn parse(input: &[u8]) -> Result<Script<'_>, ParseError> {
    parse_with(input, &SnapNames::collect(input)?)
}

/// [`parse`] with the file's snapshot definitions already collected.
fn parse_with<'a>(input: &'a [u8], snapshots: &SnapNames<'a>) -> Result<Script<'a>, ParseError> {
    let mut script: Option<Script<'_>> = None;
    let mut last = 0u32;
    for (i, line) in lex::lines(input)?.enumerate() {
        let n = (i + 1) as u32;
        last = n;
        let err = |reason| ParseError { line: n, reason };
        let lexed = lex::lex_line(line).map_err(err)?;
        let Some((head, args)) = lexed.toks.split_first() else {
            continue;
        };
        let name = word(head, "a command").map_err(err)?;
        let Some(s) = script.as_mut() else {
            if name != "cluster" {
                return Err(err(reason!("cluster must be the first command")));
            }
            let (layout, volumes, roles) = cluster(args).map_err(err)?;
            script = Some(Script {
                cluster_line: n,
                layout,
                volumes,
                roles,
                steps: Vec::new(),
                checks: 0,
            });
            continue;
        };
        let p = Parser {
            n: s.roles.len(),
            args,
            line: n,
            snapshots,
        };
        let cmd = p.command(name).map_err(err)?;
        if matches!(cmd, Cmd::Expect(_)) {
            s.checks += 1;
        }
        let step = Step {
            line: n,
            text: lexed.text,
            cmd,
        };
        crate::mem::try_push(&mut s.steps, step).map_err(|_| err(reason!("out of memory")))?;
    }
    script.ok_or(ParseError {
        line: last.max(1),
        reason: reason!("no cluster command"),
    })
}

fn word<'a>(t: &Tok<'a>, what: &str) -> R<&'a str> {
    match t {
        Tok::Word(w) => Ok(w),
        Tok::Str(_) => Err(reason!("expected {}, got a string", what)),
    }
}

/// The `cluster` line's arguments: options (`layout=seed|index`, `volumes=on|off`), then
/// the roles.
fn cluster(args: &[Tok<'_>]) -> R<(Layout, bool, RoleList)> {
    let mut layout = None;
    let mut volumes = None;
    let mut first_role = args.len();
    for (i, t) in args.iter().enumerate() {
        let Some((key, value)) = word(t, "a role").ok().and_then(|w| w.split_once('=')) else {
            first_role = i;
            break;
        };
        if key == "volumes" {
            volumes_option(&mut volumes, value)?;
            continue;
        }
        if key != "layout" {
            return Err(reason!("unknown cluster option '{}'", key));
        }
        if layout.is_some() {
            return Err(reason!("layout given twice"));
        }
        layout = Some(
            Layout::parse(value).ok_or(reason!("unknown layout '{}' (seed or index)", value))?,
        );
    }
    let roles = &args[first_role..];
    if let Some(w) = roles.iter().find_map(|t| match t {
        Tok::Word(w) if w.contains('=') => Some(*w),
        _ => None,
    }) {
        return Err(reason!("cluster option '{}' must come before the roles", w));
    }
    let volumes = volumes.unwrap_or(false);
    let layout = volumes_layout(volumes, layout)?;
    Ok((layout, volumes, cluster_roles(roles)?))
}

/// The `volumes=on|off` option, given at most once.
fn volumes_option(volumes: &mut Option<bool>, value: &str) -> R<()> {
    if volumes.is_some() {
        return Err(reason!("volumes given twice"));
    }
    *volumes = Some(match value {
        "on" => true,
        "off" => false,
        v => return Err(reason!("volumes: expected on or off, got '{}'", v)),
    });
    Ok(())
}

/// The layout of a cluster: volumes hold today's layout only.
fn volumes_layout(volumes: bool, layout: Option<Layout>) -> R<Layout> {
    match (volumes, layout) {
        (true, Some(Layout::Seed)) => Err(reason!(
            "volumes=on needs layout=index (a volume holds today's layout)"
        )),
        (true, _) => Ok(Layout::Index),
        (false, l) => Ok(l.unwrap_or_default()),
    }
}

fn cluster_roles(args: &[Tok<'_>]) -> R<RoleList> {
    // A string is no role name: it fails as one, and is reported as a string below.
    let words = args.iter().map(|t| match t {
        Tok::Word(w) => *w,
        Tok::Str(_) => "",
    });
    Role::parse_list(words).map_err(|e| match e {
        role::ParseError::UnknownRole { index, .. } => match word(&args[index], "a role") {
            Err(r) => r,
            Ok(_) => reason!("{}", e),
        },
        e => reason!("{}", e),
    })
}

fn role(t: &Tok<'_>) -> R<Role> {
    let w = word(t, "a role")?;
    Role::parse_list([w])
        .map(|r| r[0])
        .map_err(|e| reason!("{}", e))
}

/// A decimal number without sign; `what` names it in the error.
fn number(w: &str, what: &str) -> R<u64> {
    if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
        return Err(reason!("bad {} '{}'", what, w));
    }
    w.bytes()
        .try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or_else(|| reason!("bad {} '{}' (too large)", what, w))
}

fn octal(w: &str) -> R<u32> {
    // `0` alone is mode 0, as the C literal `0` is octal zero.
    let ok = w.starts_with('0') && w.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let v = if ok {
        w.bytes().try_fold(0u32, |acc, d| {
            acc.checked_mul(8)?.checked_add(u32::from(d - b'0'))
        })
    } else {
        None
    };
    match v {
        Some(v) if v <= 0o7777 => Ok(v),
        _ => Err(reason!(
            "bad mode '{}' (octal 0 to 07777, with a leading 0)",
            w
        )),
    }
}

fn duration(w: &str) -> R<u64> {
    let (digits, scale) = if let Some(d) = w.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = w.strip_suffix('s') {
        (d, 1000)
    } else {
        return Err(reason!("bad duration '{}' (write <n>ms or <n>s)", w));
    };
    let ms = number(digits, "duration")
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| reason!("bad duration '{}' (write <n>ms or <n>s)", w))?;
    if ms > MAX_DURATION_MS {
        return Err(reason!(
            "bad duration '{}' (at most {}s)",
            w,
            MAX_DURATION_MS / 1000
        ));
    }
    Ok(ms)
}

/// Check a path: absolute, components of 1..255 bytes, no `.` or `..`. `/` alone is the PFS root.
pub fn path(w: &str) -> R<&[u8]> {
    let Some(rest) = w.strip_prefix('/') else {
        return Err(reason!("bad path '{}' (must start with /)", w));
    };
    if rest.is_empty() {
        return Ok(w.as_bytes());
    }
    for c in rest.split('/') {
        if c.is_empty() {
            return Err(reason!("bad path '{}' (empty component)", w));
        }
        if c == "." || c == ".." {
            return Err(reason!("bad path '{}' ('{}' component)", w, c));
        }
        if c.len() > MAX_NAME {
            return Err(reason!(
                "bad path (component of {} bytes, at most {})",
                c.len(),
                MAX_NAME
            ));
        }
    }
    Ok(w.as_bytes())
}

struct Parser<'t, 'a> {
    /// Cluster size.
    n: usize,
    /// Arguments after the command (or check) name.
    args: &'t [Tok<'a>],
    /// This line's number.
    line: u32,
    /// The file's snapshot definitions.
    snapshots: &'t SnapNames<'a>,
}

impl<'a> Parser<'_, 'a> {
    fn arity(&self, name: &str, usage: &str, min: usize, max: usize) -> R<()> {
        let got = self.args.len();
        if got < min || got > max {
            let want = if got < min { min } else { max };
            let s = if want == 1 { "" } else { "s" };
            let kind = if min == max {
                ""
            } else if got < min {
                "at least "
            } else {
                "at most "
            };
            return Err(reason!(
                "{}: expected {}{} argument{}, got {} (usage: {})",
                name,
                kind,
                want,
                s,
                got,
                usage
            ));
        }
        Ok(())
    }

    fn w(&self, i: usize, what: &str) -> R<&'a str> {
        match self.args.get(i) {
            Some(t) => word(t, what),
            None => Err(reason!("missing {}", what)),
        }
    }

    /// `remount <idx>` / `crash <idx>`.
    fn reload(&self, name: &str) -> R<Cmd<'a>> {
        if name == "remount" {
            self.arity(name, "remount <idx>", 1, 1)?;
            Ok(Cmd::Remount(self.idx(0)?))
        } else {
            self.arity(name, "crash <idx>", 1, 1)?;
            Ok(Cmd::Crash(self.idx(0)?))
        }
    }

    fn idx(&self, i: usize) -> R<usize> {
        let w = self.w(i, "a node index")?;
        NodeSet::parse_index(w, self.n).map_err(|e| reason!("{}", e))
    }

    fn set(&self, i: usize) -> R<Set> {
        let w = self.w(i, "a node set")?;
        Ok(match w {
            "*" => Set::All,
            "masters" => Set::Masters,
            "slaves" => Set::Slaves,
            _ => Set::List(NodeSet::parse(w, self.n).map_err(|e| reason!("{}", e))?),
        })
    }

    fn path(&self, i: usize) -> R<&'a [u8]> {
        path(self.w(i, "a path")?)
    }

    /// A path that names something a change creates or removes: not the PFS root.
    fn leaf_path(&self, i: usize) -> R<&'a [u8]> {
        let p = self.path(i)?;
        if p == b"/" {
            return Err(reason!(
                "bad path '/' (the PFS root cannot be created or removed)"
            ));
        }
        Ok(p)
    }

    fn on_off(&self, i: usize) -> R<bool> {
        match self.w(i, "on or off")? {
            "on" => Ok(true),
            "off" => Ok(false),
            w => Err(reason!("expected on or off, got '{}'", w)),
        }
    }

    /// Content at argument `i`: one string, or `bytes=<n> seed=<s>` (two words).
    fn content(&self, i: usize, name: &str, usage: &str) -> R<Content> {
        match self.args.get(i) {
            Some(Tok::Str(s)) => {
                self.arity(name, usage, i + 1, i + 1)?;
                let mut v = Vec::new();
                v.try_reserve_exact(s.len())
                    .map_err(|_| reason!("out of memory"))?;
                v.extend_from_slice(s);
                Ok(Content::Text(v))
            }
            Some(Tok::Word(_)) => {
                self.arity(name, usage, i + 2, i + 2)?;
                let b = self.w(i, "bytes=<n>")?;
                let s = self.w(i + 1, "seed=<s>")?;
                let (Some(b), Some(s)) = (b.strip_prefix("bytes="), s.strip_prefix("seed=")) else {
                    return Err(reason!("expected \"<text>\" or bytes=<n> seed=<s>"));
                };
                let bytes = number(b, "byte count")?;
                if bytes > MAX_BYTES as u64 {
                    return Err(reason!("bytes={} too large (at most {})", bytes, MAX_BYTES));
                }
                let seed = number(s, "seed")?;
                Ok(Content::Random {
                    bytes: bytes as usize,
                    seed,
                })
            }
            None => Err(reason!("{}: missing content (usage: {})", name, usage)),
        }
    }

    fn opt_set(&self, name: &str, usage: &str) -> R<Option<Set>> {
        self.arity(name, usage, 0, 1)?;
        if self.args.is_empty() {
            Ok(None)
        } else {
            self.set(0).map(Some)
        }
    }

    fn command(&self, name: &str) -> R<Cmd<'a>> {
        if let Some(req) = Request::parse(name) {
            self.arity(name, "<set>", 1, 1)?;
            return Ok(Cmd::Thread(req, self.set(0)?));
        }
        Ok(match name {
            "cluster" => return Err(reason!("cluster may appear only once")),
            "role" => {
                self.arity(name, "role <idx> <role>", 2, 2)?;
                Cmd::Role(self.idx(0)?, role(&self.args[1])?)
            }
            "mkdir" => {
                self.arity(name, "mkdir <set> <path>", 2, 2)?;
                Cmd::Mkdir(self.set(0)?, self.leaf_path(1)?)
            }
            "write" => {
                let usage = "write <set> <path> \"<text>\" | bytes=<n> seed=<s>";
                self.arity(name, usage, 3, 4)?;
                Cmd::Write(
                    self.set(0)?,
                    self.leaf_path(1)?,
                    self.content(2, name, usage)?,
                )
            }
            "rm" => {
                self.arity(name, "rm <set> <path>", 2, 2)?;
                Cmd::Rm(self.set(0)?, self.leaf_path(1)?)
            }
            "chmod" => {
                self.arity(name, "chmod <set> <path> <octal>", 3, 3)?;
                Cmd::Chmod(self.set(0)?, self.path(1)?, octal(self.w(2, "a mode")?)?)
            }
            "link" => {
                self.arity(name, "link <set> <target> <path>", 3, 3)?;
                Cmd::Link(self.set(0)?, self.leaf_path(1)?, self.leaf_path(2)?)
            }
            "start" => Cmd::Start(self.opt_set(name, "start [<set>]")?),
            "wait" => {
                let usage = "wait synced [timeout=<dur>]";
                self.arity(name, usage, 1, 2)?;
                if self.w(0, "synced")? != "synced" {
                    return Err(reason!("wait: expected 'synced' (usage: {})", usage));
                }
                match self.args.get(1) {
                    None => Cmd::WaitSynced(DEFAULT_WAIT_MS),
                    Some(_) => match self.w(1, "timeout=<dur>")?.strip_prefix("timeout=") {
                        Some(d) => Cmd::WaitSynced(duration(d)?),
                        None => {
                            return Err(reason!("wait: expected timeout=<dur> (usage: {})", usage))
                        }
                    },
                }
            }
            "sync" => Cmd::Sync(self.opt_set(name, "sync [<set>]")?),
            "sleep" => {
                self.arity(name, "sleep <dur>", 1, 1)?;
                Cmd::Sleep(duration(self.w(0, "a duration")?)?)
            }
            "stall" => {
                self.arity(name, "stall <idx> <dur>|off", 2, 2)?;
                let i = self.idx(0)?;
                match self.w(1, "a duration or off")? {
                    "off" => Cmd::Stall(i, None),
                    d => Cmd::Stall(i, Some(duration(d)?)),
                }
            }
            "fail" => {
                self.arity(name, "fail <idx> on|off", 2, 2)?;
                Cmd::Fail(self.idx(0)?, self.on_off(1)?)
            }
            "catchup" => {
                self.arity(name, "catchup <set> on|off", 2, 2)?;
                Cmd::Catchup(self.set(0)?, self.on_off(1)?)
            }
            "snapshot" => {
                self.arity(name, "snapshot <name> <idx>", 2, 2)?;
                let n = self.w(0, "a snapshot name")?;
                if self.snapshots.defined_before(n, self.line).is_some() {
                    return Err(reason!("snapshot '{}' already defined", n));
                }
                Cmd::Snapshot(n, self.idx(1)?)
            }
            "remount" | "crash" => self.reload(name)?,
            "expect" => Cmd::Expect(self.check()?),
            _ => return Err(reason!("unknown command '{}'", name)),
        })
    }

    fn check(&self) -> R<Check<'a>> {
        let Some((head, rest)) = self.args.split_first() else {
            return Err(reason!("expect: missing check (same, file, dir, missing, mode, tid, frozen, running, stopped, focus, quorum, unchanged, status)"));
        };
        let name = word(head, "a check name")?;
        let p = Parser {
            n: self.n,
            args: rest,
            line: self.line,
            snapshots: self.snapshots,
        };
        let thread = |c: ThreadCheck, name: &str| -> R<Check<'a>> {
            p.arity(name, "<set>", 1, 1)?;
            Ok(Check::Thread(c, p.set(0)?))
        };
        Ok(match name {
            "same" => {
                p.arity("expect same", "expect same <a> <b>", 2, 2)?;
                Check::Same(p.idx(0)?, p.idx(1)?)
            }
            "file" => {
                let usage = "expect file <set> <path> \"<text>\" | bytes=<n> seed=<s>";
                p.arity("expect file", usage, 3, 4)?;
                Check::File(p.set(0)?, p.path(1)?, p.content(2, "expect file", usage)?)
            }
            "dir" => {
                p.arity("expect dir", "expect dir <set> <path>", 2, 2)?;
                Check::Dir(p.set(0)?, p.path(1)?)
            }
            "missing" => {
                p.arity("expect missing", "expect missing <set> <path>", 2, 2)?;
                Check::Missing(p.set(0)?, p.leaf_path(1)?)
            }
            "mode" => {
                p.arity("expect mode", "expect mode <set> <path> <octal>", 3, 3)?;
                Check::Mode(p.set(0)?, p.path(1)?, octal(p.w(2, "a mode")?)?)
            }
            "tid" => {
                p.arity("expect tid", "expect tid <set> <path> <tid>", 3, 3)?;
                Check::Tid(p.set(0)?, p.path(1)?, number(p.w(2, "a tid")?, "tid")?)
            }
            "frozen" => thread(ThreadCheck::Frozen, "expect frozen")?,
            "running" => thread(ThreadCheck::Running, "expect running")?,
            "stopped" => thread(ThreadCheck::Stopped, "expect stopped")?,
            "focus" => {
                p.arity("expect focus", "expect focus <tid>", 1, 1)?;
                Check::Focus(number(p.w(0, "a tid")?, "tid")?)
            }
            "quorum" => {
                p.arity("expect quorum", "expect quorum none", 1, 1)?;
                if p.w(0, "none")? != "none" {
                    return Err(reason!("expect quorum: expected 'none'"));
                }
                Check::QuorumNone
            }
            "unchanged" => {
                p.arity("expect unchanged", "expect unchanged <name> <idx>", 2, 2)?;
                let n = p.w(0, "a snapshot name")?;
                let Some(taken) = self.snapshots.defined_before(n, self.line) else {
                    return Err(reason!(
                        "unknown snapshot '{}' (take it first with snapshot)",
                        n
                    ));
                };
                Check::Unchanged(n, taken, p.idx(1)?)
            }
            "status" => {
                p.arity(
                    "expect status",
                    "expect status <idx> [!]<word>...",
                    2,
                    usize::MAX,
                )?;
                let i = p.idx(0)?;
                let mut words = Vec::new();
                for k in 1..rest.len() {
                    let w = p.w(k, "a status word")?;
                    let (present, bare) = match w.strip_prefix('!') {
                        Some(b) => (false, b),
                        None => (true, w),
                    };
                    if crate::quorum::word_from_name(bare).is_none() {
                        return Err(reason!("unknown status word '{}'", bare));
                    }
                    crate::mem::try_push(&mut words, (present, bare))
                        .map_err(|_| reason!("out of memory"))?;
                }
                Check::Status(i, words)
            }
            _ => return Err(reason!("unknown check '{}'", name)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Script<'_> {
        match parse(text.as_bytes()) {
            Ok(s) => s,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn err(text: &str) -> (u32, alloc::string::String) {
        let e = parse(text.as_bytes()).expect_err(text);
        (e.line, alloc::string::String::from(e.reason.as_str()))
    }

    #[test]
    fn cluster_layout_option() {
        let s = ok("cluster layout=index master slave\n");
        assert_eq!(s.layout, Layout::Index);
        assert_eq!(s.roles[..], [Role::Master, Role::Slave]);
        assert_eq!(ok("cluster layout=seed master\n").layout, Layout::Seed);
        assert_eq!(ok("cluster master\n").layout, Layout::Index);
    }

    #[test]
    fn cluster_volumes_option_and_reload_commands() {
        let s = ok("cluster volumes=on master slave\nremount 1\ncrash 0\n");
        assert!(s.volumes);
        assert_eq!(s.layout, Layout::Index);
        assert_eq!(s.steps[0].cmd, Cmd::Remount(1));
        assert_eq!(s.steps[1].cmd, Cmd::Crash(0));
        let s = ok("cluster layout=index volumes=off master\n");
        assert!(!s.volumes);
        assert!(!ok("cluster master\n").volumes);
        assert_err(
            "cluster volumes=on layout=seed master\n",
            1,
            "volumes=on needs layout=index",
        );
        assert_err(
            "cluster volumes=yes master\n",
            1,
            "volumes: expected on or off",
        );
        assert_err(
            "cluster volumes=on volumes=on master\n",
            1,
            "volumes given twice",
        );
        assert_err(
            "cluster volumes=on master\nremount 1\n",
            2,
            "bad node index 1",
        );
        assert_err("cluster volumes=on master\ncrash\n", 2, "crash");
    }

    fn assert_err(text: &str, line: u32, prefix: &str) {
        let (l, r) = err(text);
        assert_eq!(l, line, "{text:?}: {r}");
        assert!(
            r.starts_with(prefix),
            "{text:?}: got {r:?}, want prefix {prefix:?}"
        );
    }

    #[test]
    fn the_spec_example_parses() {
        let s = ok(include_str!("../../qemu-tests/cases/example.scn"));
        assert_eq!(
            s.roles.as_slice(),
            [Role::Master, Role::Master, Role::Master, Role::Slave]
        );
        assert_eq!(s.checks, 7);
        let first = s
            .steps
            .iter()
            .find(|s| matches!(s.cmd, Cmd::Expect(_)))
            .unwrap();
        assert_eq!(first.text, "expect focus 3");
    }

    #[test]
    fn commands_parse_to_their_meaning() {
        let s = ok("# c\n\ncluster master slave cache\nwrite 0,2 /a/b bytes=70000 seed=9 # x\n\
                    chmod masters / 0750\nlink slaves /a /b\nstart\nfreeze *\nwait synced timeout=250ms\n\
                    sleep 2s\nstall 1 off\nfail 2 on\ncatchup * off\nsnapshot s 1\nexpect unchanged s 2\n\
                    expect status 0 quorum/rw !soft/ro\nexpect tid 1 / 18446744073709551615\nsync 1\n");
        let cmds: Vec<&Cmd<'_>> = s.steps.iter().map(|s| &s.cmd).collect();
        assert_eq!(s.steps[0].line, 4);
        assert_eq!(
            *cmds[0],
            Cmd::Write(
                Set::List(NodeSet(5)),
                b"/a/b",
                Content::Random {
                    bytes: 70000,
                    seed: 9
                }
            )
        );
        assert_eq!(*cmds[1], Cmd::Chmod(Set::Masters, b"/", 0o750));
        assert_eq!(*cmds[2], Cmd::Link(Set::Slaves, b"/a", b"/b"));
        assert_eq!(*cmds[3], Cmd::Start(None));
        assert_eq!(*cmds[4], Cmd::Thread(Request::Freeze, Set::All));
        assert_eq!(*cmds[5], Cmd::WaitSynced(250));
        assert_eq!(*cmds[6], Cmd::Sleep(2000));
        assert_eq!(*cmds[7], Cmd::Stall(1, None));
        assert_eq!(*cmds[8], Cmd::Fail(2, true));
        assert_eq!(*cmds[9], Cmd::Catchup(Set::All, false));
        assert_eq!(*cmds[10], Cmd::Snapshot("s", 1));
        assert_eq!(*cmds[11], Cmd::Expect(Check::Unchanged("s", 0, 2)));
        assert_eq!(
            *cmds[12],
            Cmd::Expect(Check::Status(
                0,
                alloc::vec![(true, "quorum/rw"), (false, "soft/ro")]
            ))
        );
        assert_eq!(
            *cmds[13],
            Cmd::Expect(Check::Tid(Set::List(NodeSet(2)), b"/", u64::MAX))
        );
        assert_eq!(*cmds[14], Cmd::Sync(Some(Set::List(NodeSet(2)))));
        assert_eq!(s.checks, 3);
    }

    #[test]
    fn structure_errors() {
        assert_err("mkdir * /a\n", 1, "cluster must be the first command");
        assert_err(
            "cluster master\ncluster master\n",
            2,
            "cluster may appear only once",
        );
        assert_err("# nothing\n\n", 2, "no cluster command");
        assert_err("", 1, "no cluster command");
        assert_err("cluster\n", 1, "cluster needs 1 to 8 roles, got 0");
        assert_err(
            "cluster master master master master master master master master master",
            1,
            "cluster needs 1 to 8 roles, got 9",
        );
        assert_err("cluster master boss", 1, "unknown role 'boss'");
        assert_err(
            "cluster layout=tree master",
            1,
            "unknown layout 'tree' (seed or index)",
        );
        assert_err(
            "cluster layout=index layout=seed master",
            1,
            "layout given twice",
        );
        assert_err(
            "cluster colour=red master",
            1,
            "unknown cluster option 'colour'",
        );
        assert_err(
            "cluster master layout=index",
            1,
            "cluster option 'layout=index' must come before the roles",
        );
        assert_err(
            "cluster layout=index\n",
            1,
            "cluster needs 1 to 8 roles, got 0",
        );
        assert_err("cluster master\nfoo 1\n", 2, "unknown command 'foo'");
        assert_err(
            "cluster master\n\"mkdir\" * /a\n",
            2,
            "expected a command, got a string",
        );
        assert_err("cluster master\nexpect bogus\n", 2, "unknown check 'bogus'");
        assert_err("cluster master\nexpect\n", 2, "expect: missing check");
    }

    #[test]
    fn argument_errors() {
        let c = "cluster master master slave master\n";
        let e = |body: &str| err(&alloc::format!("{c}{body}\n"));
        assert_eq!(
            e("mkdir *").1,
            "mkdir: expected 2 arguments, got 1 (usage: mkdir <set> <path>)"
        );
        assert_eq!(e("expect same 0").0, 2);
        assert!(e("expect same 0")
            .1
            .starts_with("expect same: expected 2 arguments, got 1"));
        assert!(e("start 1 2")
            .1
            .starts_with("start: expected at most 1 argument, got 2"));
        assert_eq!(e("mkdir 9 /a").1, "bad node index 9 (cluster has 4 nodes)");
        assert_eq!(
            e("expect same 0 4").1,
            "bad node index 4 (cluster has 4 nodes)"
        );
        assert!(e("mkdir 0,,1 /a").1.starts_with("bad node set"));
        assert!(e("mkdir -1 /a").1.starts_with("bad node index '-1'"));
        assert!(e("mkdir 99999999999999999999 /a").1.contains("too large"));
        assert!(e("mkdir * a").1.starts_with("bad path 'a'"));
        assert!(e("mkdir * /a//b").1.starts_with("bad path '/a//b' (empty"));
        assert!(e("mkdir * /a/").1.starts_with("bad path"));
        assert!(e("mkdir * /a/../b")
            .1
            .starts_with("bad path '/a/../b' ('..'"));
        assert!(e("mkdir * /./b").1.starts_with("bad path"));
        assert!(e("mkdir * /").1.starts_with("bad path '/' (the PFS root"));
        assert!(e(&alloc::format!("mkdir * /{}", "n".repeat(256)))
            .1
            .starts_with("bad path (component of 256"));
        assert!(
            ok(&alloc::format!("{c}mkdir * /{}", "n".repeat(255)))
                .steps
                .len()
                == 1
        );
        assert!(e("chmod * /a 755").1.starts_with("bad mode '755'"));
        assert!(e("chmod * /a 7").1.starts_with("bad mode '7'"));
        // `0` alone is mode 0, like `00`.
        for zero in ["0", "00"] {
            let text = alloc::format!("{c}chmod * /a {zero}");
            assert_eq!(ok(&text).steps[0].cmd, Cmd::Chmod(Set::All, b"/a", 0));
        }
        assert!(e("chmod * /a 0789").1.starts_with("bad mode"));
        assert!(e("chmod * /a 010000").1.starts_with("bad mode"));
        assert!(e("sleep 5").1.starts_with("bad duration '5'"));
        assert!(e("sleep xs").1.starts_with("bad duration 'xs'"));
        assert!(e("sleep 3601s")
            .1
            .starts_with("bad duration '3601s' (at most 3600s)"));
        assert!(e("sleep 18446744073709551615s")
            .1
            .starts_with("bad duration"));
        assert!(e("wait")
            .1
            .starts_with("wait: expected at least 1 argument"));
        assert!(e("wait done").1.starts_with("wait: expected 'synced'"));
        assert!(e("wait synced 5s")
            .1
            .starts_with("wait: expected timeout=<dur>"));
        assert!(e("write * /a")
            .1
            .starts_with("write: expected at least 3 arguments"));
        assert!(e("write * /a \"x\" \"y\"")
            .1
            .starts_with("write: expected 3 arguments, got 4"));
        assert!(e("write * /a bytes=1")
            .1
            .starts_with("write: expected 4 arguments, got 3"));
        assert!(e("write * /a seed=1 bytes=1")
            .1
            .starts_with("expected \"<text>\" or bytes"));
        assert!(e("write * /a bytes=99999999 seed=1")
            .1
            .starts_with("bytes=99999999 too large"));
        assert!(e("write * /a bytes=x seed=1")
            .1
            .starts_with("bad byte count 'x'"));
        assert!(e("write * \"/a\" \"x\"")
            .1
            .starts_with("expected a path, got a string"));
        assert!(e("fail 0 maybe")
            .1
            .starts_with("expected on or off, got 'maybe'"));
        assert!(e("role 0 king").1.starts_with("unknown role 'king'"));
        assert!(e("expect quorum some")
            .1
            .starts_with("expect quorum: expected 'none'"));
        assert!(e("expect unchanged s 0")
            .1
            .starts_with("unknown snapshot 's'"));
        assert!(e("snapshot s 0\nsnapshot s 1")
            .1
            .starts_with("snapshot 's' already defined"));
        assert!(e("expect status 0 happy")
            .1
            .starts_with("unknown status word 'happy'"));
        assert!(e("expect status 0")
            .1
            .starts_with("expect status: expected at least 2 arguments"));
        assert!(e("expect tid * /a x").1.starts_with("bad tid 'x'"));
        assert!(e("expect missing * /").1.starts_with("bad path '/'"));
    }

    #[test]
    fn snapshot_names_take_logarithmic_comparisons() {
        // Every name defined, then every name used: a linear lookup would make about n^2 / 2
        // comparisons here (2 * 10^8), a sorted one at most 2n * (log2(n) + 1).
        use core::fmt::Write;
        let n = 20_000usize;
        let mut text = alloc::string::String::from("cluster master slave\n");
        for i in 0..n {
            writeln!(text, "snapshot s{i} {}", i % 2).unwrap();
        }
        for i in (0..n).rev() {
            writeln!(text, "expect unchanged s{i} 1").unwrap();
        }
        let names = SnapNames::collect(text.as_bytes()).unwrap();
        let s = parse_with(text.as_bytes(), &names).unwrap();
        assert_eq!(s.checks, n);
        assert_eq!(
            s.steps[n].cmd,
            Cmd::Expect(Check::Unchanged("s19999", n - 1, 1))
        );
        assert_eq!(
            s.steps[2 * n - 1].cmd,
            Cmd::Expect(Check::Unchanged("s0", 0, 1))
        );
        let per_lookup = usize::BITS - n.leading_zeros() + 1; // log2(n) + 2, rounded up
        let compares = names.compares.get();
        assert!(
            compares <= 2 * n * per_lookup as usize,
            "{compares} comparisons for {n} snapshots"
        );
    }

    #[test]
    fn lexical_errors_carry_their_line() {
        assert_err(
            "cluster master\nwrite * /a \"abc\n",
            2,
            "unterminated string",
        );
        assert_err("cluster master\n\nwrite * /a \"\\q\"\n", 3, "bad escape");
        let mut bad =
            alloc::vec::Vec::from(&b"cluster master\nmkdir * /a\nmkdir * /\xc3\x28\n"[..]);
        assert_eq!(parse(&bad).unwrap_err().line, 3);
        bad.truncate(0);
        assert_eq!(parse(&bad).unwrap_err().line, 1);
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: mutate a valid file byte by byte and parse every variant.
        let base = include_bytes!("../../qemu-tests/cases/example.scn");
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..3000 {
            let mut v = base.to_vec();
            for _ in 0..4 {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
                let at = (r >> 32) as usize % v.len();
                v[at] = r as u8;
            }
            let _ = parse(&v);
        }
    }
}
