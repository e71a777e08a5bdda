//! The C API's test console (`h2s_ctl`, debugfs `ctl`): commands on clusters that outlive a
//! single call, what a person or the QEMU suite uses to leave threads running or frozen across
//! calls, e.g. to prove that module unload stops them. Not the scenario language (no checks, no
//! KTAP; see docs/SCENARIOS.md), but it shares that language's words: roles, node sets and thread
//! requests parse through the same core functions. One command per call, words separated by
//! white space:
//!
//! ```text
//! create [layout=index|seed] <role>...  -> "handle <h>" (default layout: index)
//! destroy <h>
//! start|freeze|unfreeze|remaster|stop|signal <h> <node>|*
//! idle <h> <ms>                    idle poll of every sync thread of the cluster
//! mkdir <h> <set> <path>           frontend change on the nodes of <set> (`*` or `0,2`)
//! write <h> <set> <path> <bytes>   a file of <bytes> deterministic bytes
//! status <h>
//! list                             every handle
//! ```
//!
//! A thread request to a node whose thread never started or has stopped succeeds and does
//! nothing (see `h2s_thread_op`).

use alloc::vec::Vec;
use core::fmt::Write;
use core::time::Duration;

use hammer2_synchro::cluster::FrontendOp;
use hammer2_synchro::role::NodeSet;
use hammer2_synchro::{Error, Result};

use crate::cmd::{create, thread_op, ThreadOp};
use crate::handles;

/// Largest file `write` creates.
const MAX_WRITE: usize = 1 << 20;

fn num<T: core::str::FromStr>(w: Option<&str>) -> Result<T> {
    w.and_then(|s| s.parse().ok()).ok_or(Error::Invalid)
}

fn node_set(w: Option<&str>, n: usize) -> Result<NodeSet> {
    NodeSet::parse(w.ok_or(Error::Invalid)?, n).map_err(|_| Error::Invalid)
}

fn path(w: Option<&str>) -> Result<&[u8]> {
    match w {
        Some(p) if p.starts_with('/') && p.len() > 1 => Ok(p.as_bytes()),
        _ => Err(Error::Invalid),
    }
}

/// Run one command, writing its answer to `out`.
pub fn run(cmd: &[u8], out: &mut dyn Write) -> Result<()> {
    let text = core::str::from_utf8(cmd).map_err(|_| Error::Invalid)?;
    let mut words = text.split_ascii_whitespace();
    let verb = words.next().ok_or(Error::Invalid)?;
    let op = match verb {
        "create" => {
            let rest = text
                .trim_start()
                .strip_prefix("create")
                .ok_or(Error::Invalid)?;
            let h = create(rest.as_bytes())?;
            let _ = writeln!(out, "handle {}", h);
            return Ok(());
        }
        "list" => {
            let mut live = [0u32; handles::H2S_MAX_CLUSTERS];
            let n = handles::live(&mut live);
            for h in &live[..n] {
                let _ = writeln!(out, "handle {}", h);
            }
            return Ok(());
        }
        "destroy" => return handles::destroy(num(words.next())?),
        "idle" | "mkdir" | "write" | "status" => return cluster_cmd(verb, &mut words, out),
        w => ThreadOp::parse(w).ok_or(Error::Invalid)?,
    };
    let u = handles::get(num(words.next())?)?;
    let n = u.cluster().len();
    let nodes = node_set(words.next(), n)?;
    for i in nodes.iter() {
        if let Err(e) = thread_op(&u, i, op) {
            let _ = writeln!(out, "node {}: {}", i, e);
            return Err(e);
        }
    }
    Ok(())
}

fn cluster_cmd<'a>(
    verb: &str,
    words: &mut impl Iterator<Item = &'a str>,
    out: &mut dyn Write,
) -> Result<()> {
    let u = handles::get(num(words.next())?)?;
    let c = u.cluster();
    let applied = match verb {
        "idle" => {
            let ms: u64 = num(words.next())?;
            c.set_thread_idle_poll(Duration::from_millis(ms.max(1)));
            return Ok(());
        }
        "status" => return c.write_status(out).map_err(|_| Error::TooBig),
        "mkdir" => {
            let set = node_set(words.next(), c.len())?;
            c.apply(set, FrontendOp::Mkdir(path(words.next())?))
        }
        _ => {
            let set = node_set(words.next(), c.len())?;
            let p = path(words.next())?;
            let len: usize = num(words.next())?;
            if len > MAX_WRITE {
                return Err(Error::TooBig);
            }
            let mut data = Vec::new();
            data.try_reserve_exact(len)?;
            data.extend((0..len).map(|i| (i * 131 + 7) as u8));
            c.apply(set, FrontendOp::Write(p, &data))
        }
    };
    match applied {
        Ok(tid) => {
            let _ = writeln!(out, "tid {}", tid);
            Ok(())
        }
        Err((node, e)) => {
            let _ = writeln!(out, "node {}: {}", node, e);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_requests_without_a_thread_succeed() {
        crate::testhost::ensure_init();
        let mut out = alloc::string::String::new();
        run(b"create master slave", &mut out).unwrap();
        let h: u32 = out.trim().strip_prefix("handle ").unwrap().parse().unwrap();
        for cmd in ["freeze", "unfreeze", "remaster", "signal", "stop"] {
            let line = alloc::format!("{cmd} {h} *");
            assert_eq!(run(line.as_bytes(), &mut out), Ok(()), "{line}");
        }
        // Still refused: a node beyond the cluster.
        let line = alloc::format!("freeze {h} 2");
        assert_eq!(run(line.as_bytes(), &mut out), Err(Error::Invalid));
        run(alloc::format!("destroy {h}").as_bytes(), &mut out).unwrap();
    }

    #[test]
    fn clusters_are_created_in_either_layout() {
        crate::testhost::ensure_init();
        for (spec, layout) in [
            ("master slave", "index"),
            ("layout=index master slave", "index"),
            ("layout=seed master slave", "seed"),
        ] {
            let mut out = alloc::string::String::new();
            run(alloc::format!("create {spec}").as_bytes(), &mut out).unwrap();
            let h: u32 = out.trim().strip_prefix("handle ").unwrap().parse().unwrap();
            for cmd in ["mkdir {h} * /d", "write {h} 0 /d/f 700", "start {h} *"] {
                let line = cmd.replace("{h}", &alloc::format!("{h}"));
                run(line.as_bytes(), &mut out).unwrap();
            }
            let mut status = alloc::string::String::new();
            run(alloc::format!("status {h}").as_bytes(), &mut status).unwrap();
            let want = alloc::format!("2 nodes, layout {layout},");
            assert!(status.contains(&want), "{spec}: {status}");
            // The slave's thread copies the master's file, in either layout.
            let u = handles::get(h).unwrap();
            let c = u.cluster();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while c.read_file(1, b"/d/f").map(|d| d.len()) != Ok(700) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{spec}: slave never synced"
                );
                c.thread_request(1, hammer2_synchro::thread::Request::Signal)
                    .unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            drop(u);
            run(alloc::format!("destroy {h}").as_bytes(), &mut out).unwrap();
        }
    }

    #[test]
    fn malformed_commands_are_invalid() {
        crate::testhost::ensure_init();
        let mut s = alloc::string::String::new();
        for bad in [
            &b""[..],
            b"   ",
            b"frobnicate",
            b"destroy",
            b"destroy x",
            b"destroy 0",
            b"freeze 77 0",
            b"stop 1",
            b"idle 1 5",
            b"status 0",
            b"\xff\xfe",
            b"create",
            b"create wizard",
            b"create layout=flat master",
            b"create master layout=seed",
        ] {
            assert_eq!(run(bad, &mut s), Err(Error::Invalid), "{:?}", bad);
        }
    }

    #[test]
    fn node_sets_are_the_core_ones() {
        assert_eq!(node_set(Some("0,2"), 3), Ok(NodeSet(0b101)));
        assert_eq!(node_set(Some("3"), 3), Err(Error::Invalid));
        assert_eq!(node_set(None, 3), Err(Error::Invalid));
    }
}
