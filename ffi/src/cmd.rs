//! What the C API and its test console do, behind their raw arguments: role parsing, cluster
//! creation, thread operations, the status text and the self-test suites. The `extern "C"`
//! wrappers (`crate::api`) and the console (`crate::ctl`) both call into here, never into each
//! other.

use core::fmt::{self, Write};

use hammer2_synchro::cluster::Cluster;
use hammer2_synchro::role::{Role, RoleList};
use hammer2_synchro::store::Layout;
use hammer2_synchro::testkit::selftest::{run_cases, Case};
use hammer2_synchro::thread::Request;
use hammer2_synchro::Error;

use crate::handles;
use crate::host::KERNEL_HOST;
use crate::pool::POOL;

/// Parse a cluster's description: an optional `layout=seed|index` (default today's layout,
/// `index`), then a role list such as `master master slave` (spaces, tabs or newlines between
/// words), as the scenario language's `cluster` line.
pub(crate) fn parse_cluster(text: &[u8]) -> Result<(Layout, RoleList), Error> {
    let text = core::str::from_utf8(text).map_err(|_| Error::Invalid)?;
    let mut words = text.split_ascii_whitespace().peekable();
    let mut layout = Layout::default();
    if let Some(name) = words.peek().and_then(|w| w.strip_prefix("layout=")) {
        layout = Layout::parse(name).ok_or(Error::Invalid)?;
        words.next();
    }
    let roles = Role::parse_list(words).map_err(|_| Error::Invalid)?;
    Ok((layout, roles))
}

pub(crate) fn create(text: &[u8]) -> Result<u32, Error> {
    let (layout, roles) = parse_cluster(text)?;
    let cluster = Cluster::with_layout(&KERNEL_HOST, &roles, layout)?;
    handles::insert(cluster)
}

/// What `h2s_thread_op` does to a node's thread: start it, or make a [`Request`] of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadOp {
    /// Start the node's sync thread (`-EBUSY` if one runs); C value 0.
    Start,
    /// A request to the running thread; C value [`Request::raw`] (1 to 5).
    Request(Request),
}

impl ThreadOp {
    /// The operation for a C value, if valid.
    pub fn from_raw(v: u32) -> Option<Self> {
        match v {
            0 => Some(ThreadOp::Start),
            v => Request::from_raw(v).map(ThreadOp::Request),
        }
    }

    /// The operation named `word` (`start` or a request's name), if any.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "start" => Some(ThreadOp::Start),
            w => Request::parse(w).map(ThreadOp::Request),
        }
    }
}

/// Apply `op` to node `node`'s thread of the cluster in `u`.
pub(crate) fn thread_op(u: &handles::Use, node: usize, op: ThreadOp) -> Result<(), Error> {
    let c = u.cluster();
    if node >= c.len() {
        return Err(Error::Invalid);
    }
    match op {
        ThreadOp::Start => u.pinned().thread_start(node),
        ThreadOp::Request(req) => c.thread_request(node, req),
    }
}

/// The library's status (`h2s_status`): pool use, live handles, then every cluster.
pub(crate) fn write_status(out: &mut dyn Write) -> fmt::Result {
    let (used, size) = POOL.usage();
    writeln!(out, "pool: {} of {} bytes in use", used, size)?;
    let mut live = [0u32; handles::H2S_MAX_CLUSTERS];
    let n = handles::live(&mut live);
    write!(out, "handles:")?;
    for h in &live[..n] {
        write!(out, " {}", h)?;
    }
    writeln!(out, "{}", if n == 0 { " none" } else { "" })?;
    hammer2_synchro::cluster::write_all_status(out)
}

/// The self-test suites `h2s_selftest` runs, in order.
pub(crate) const SUITES: &[(&str, &[(&str, Case)])] = &[
    (
        "host-conformance",
        hammer2_synchro::testkit::conformance::CASES,
    ),
    ("kernel-host", crate::hostcheck::CASES),
    ("thread-protocol", hammer2_synchro::testkit::selftest::CASES),
];

/// What `h2s_selftest_hang` runs: the stress run that hangs on purpose and leaves a thread
/// unjoined (its expected verdict is `not ok`, reporting the hang).
pub(crate) const HANG_SUITES: &[(&str, &[(&str, Case)])] = &[(
    "stress-hang",
    &[(
        "stress_hang",
        hammer2_synchro::testkit::selftest::stress::hang_case,
    )],
)];

/// Run every suite of `suites` on the kernel host, as KTAP: one parent result per suite, each
/// with its subtest block. Returns the leaf counts.
pub fn run_selftests(suites: &[(&str, &[(&str, Case)])], out: &mut dyn Write) -> (u32, u32) {
    let (mut passed, mut failed) = (0, 0);
    let _ = writeln!(out, "KTAP version 1");
    let _ = writeln!(out, "1..{}", suites.len());
    for (i, (name, cases)) in suites.iter().enumerate() {
        let (p, f) = run_cases(&KERNEL_HOST, name, cases, out);
        passed += p;
        failed += f;
        let verdict = if f == 0 { "ok" } else { "not ok" };
        let _ = writeln!(out, "{} {} {}", verdict, i + 1, name);
    }
    let _ = writeln!(out, "# {} passed, {} failed", passed, failed);
    (passed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_lists_parse() {
        let (layout, r) = parse_cluster(b" master\tslave\nsoft_master  cache soft_slave ").unwrap();
        assert_eq!(layout, Layout::Index, "today's layout by default");
        assert_eq!(
            &r[..],
            &[
                Role::Master,
                Role::Slave,
                Role::SoftMaster,
                Role::Cache,
                Role::SoftSlave
            ]
        );
    }

    #[test]
    fn a_layout_option_comes_first() {
        let (layout, r) = parse_cluster(b"layout=seed master slave").unwrap();
        assert_eq!(
            (layout, &r[..]),
            (Layout::Seed, &[Role::Master, Role::Slave][..])
        );
        let (layout, _) = parse_cluster(b"\tlayout=index master").unwrap();
        assert_eq!(layout, Layout::Index);
        for bad in [
            &b"layout=flat master"[..],
            b"master layout=seed",
            b"layout=seed",
            b"layout=seed layout=index master",
            b"layout= master",
        ] {
            assert_eq!(parse_cluster(bad).err(), Some(Error::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn thread_op_c_values_are_unchanged() {
        assert_eq!(ThreadOp::from_raw(0), Some(ThreadOp::Start));
        let names = ["freeze", "unfreeze", "remaster", "stop", "signal"];
        for (v, name) in (1..).zip(names) {
            let op = ThreadOp::from_raw(v).unwrap();
            assert_eq!(ThreadOp::parse(name), Some(op), "{name}");
        }
        assert_eq!(ThreadOp::from_raw(6), None);
        assert_eq!(ThreadOp::parse("start"), Some(ThreadOp::Start));
    }
}
