//! Every scenario case of `qemu-tests/cases/` (the files the QEMU suite runs in the kernel), run
//! on the userland host; and every malformed case of `qemu-tests/cases/reject/`, which must be
//! rejected at the line and with the reason its first line names.

use std::path::{Path, PathBuf};

use hammer2_synchro::scenario::{self, Outcome};
use hammer2_synchro::sync::ScanMode;
use hammer2_synchro::userland::host;

fn cases(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "scn"))
        .collect();
    v.sort();
    v
}

/// `# expect-reject: line N: <reason prefix>` from a reject case's first line.
fn expected_rejection(text: &[u8], path: &Path) -> (u32, String) {
    let first = text.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let first = String::from_utf8_lossy(first);
    let want = first
        .strip_prefix("# expect-reject: line ")
        .unwrap_or_else(|| {
            panic!(
                "{}: first line must be '# expect-reject: line N: ...'",
                path.display()
            )
        });
    let (n, reason) = want.split_once(": ").expect("line N: reason");
    (n.parse().expect("line number"), reason.to_string())
}

#[test]
fn malformed_cases_are_rejected_at_their_line() {
    let all = cases("qemu-tests/cases/reject");
    assert!(all.len() >= 10, "too few reject cases: {}", all.len());
    for path in all {
        let text = std::fs::read(&path).unwrap();
        let (line, reason) = expected_rejection(&text, &path);
        let err = scenario::check(&text)
            .err()
            .unwrap_or_else(|| panic!("{}: was accepted", path.display()));
        assert_eq!(err.line, line, "{}: {err}", path.display());
        assert!(
            err.reason.as_str().starts_with(&reason),
            "{}: got '{err}', want a reason starting '{reason}'",
            path.display()
        );
        // Through the runner: rejected, and the output is exactly the one rejection line.
        let mut out = String::new();
        let outcome = scenario::run(host(), &text, &mut out);
        assert_eq!(outcome, Outcome::Rejected, "{}", path.display());
        assert_eq!(out, format!("{err}\n"), "{}", path.display());
    }
}

#[test]
fn every_case_parses() {
    let all = cases("qemu-tests/cases");
    for path in all {
        let text = std::fs::read(&path).unwrap();
        if let Err(e) = scenario::check(&text) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn every_case_passes_on_the_userland_host() {
    let all = cases("qemu-tests/cases");
    assert!(all.len() >= 30, "too few cases: {}", all.len());
    let mut failed = Vec::new();
    // Every case in both scan modes: they must give the same trees, so the same verdicts.
    for (path, mode) in all
        .iter()
        .flat_map(|p| [ScanMode::Pruned, ScanMode::Original].map(|m| (p, m)))
    {
        let text = std::fs::read(path).unwrap();
        let mut out = String::new();
        let outcome = scenario::run_mode(host(), &text, &mut out, mode);
        if outcome != Outcome::Passed {
            eprintln!("==== {} {mode:?} ({outcome:?})\n{out}", path.display());
            failed.push(format!(
                "{} ({mode:?})",
                path.file_name().unwrap().to_string_lossy()
            ));
        } else {
            assert!(out.ends_with(" 0 failed\n"), "{}: {out}", path.display());
        }
    }
    assert!(failed.is_empty(), "cases not passing: {failed:?}");
}

/// `text` with its `cluster` line given `opts` in place of any `layout=` option.
fn with_cluster_options(text: &str, opts: &str) -> String {
    let mut done = false;
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            if done || !t.starts_with("cluster ") {
                return format!("{l}\n");
            }
            done = true;
            let rest: Vec<&str> = t["cluster ".len()..]
                .split_whitespace()
                .filter(|w| !w.starts_with("layout="))
                .collect();
            format!("cluster {opts} {}\n", rest.join(" "))
        })
        .collect()
}

/// `text` (already with `volumes=on`) with every node remounted (committed to its volume and
/// loaded back) before the first `expect` line after any other command, so every check reads
/// what the volumes hold.
fn with_remounts(text: &str) -> String {
    let mut nodes = 0;
    let mut out = String::new();
    let mut dirty = false;
    for l in text.lines() {
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix("cluster ") {
            let words = rest.split('#').next().unwrap_or("");
            nodes = words
                .split_whitespace()
                .filter(|w| !w.contains('='))
                .count();
        } else if t.starts_with("expect ") {
            if dirty {
                for i in 0..nodes {
                    out.push_str(&format!("remount {i}\n"));
                }
            }
            dirty = false;
        } else if !t.is_empty() && !t.starts_with('#') {
            dirty = true;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The verdicts of a KTAP run (`ok` / `not ok` and the check as written), without
/// diagnostics and line numbers (inserted lines move them).
fn verdicts(ktap: &str) -> Vec<String> {
    ktap.lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "))
        .map(|l| {
            let verdict = if l.starts_with("ok ") { "ok" } else { "not ok" };
            let check = l.split_once(": ").map_or(l, |(_, c)| c);
            format!("{verdict} {check}")
        })
        .collect()
}

#[test]
fn every_case_gives_the_same_verdicts_with_its_nodes_on_volumes() {
    let all = cases("qemu-tests/cases");
    let mut differ = Vec::new();
    for path in &all {
        let text = std::fs::read_to_string(path).unwrap();
        let (mem_text, vol_text) = (
            with_cluster_options(&text, "layout=index"),
            with_remounts(&with_cluster_options(&text, "volumes=on")),
        );
        // A case whose threads race may end differently from run to run in either form: the
        // forms agree when some run on volumes ends as some run in memory did (four each at
        // most; one each for a case that always ends the same way).
        let (mut mems, mut vols) = (Vec::new(), Vec::new());
        let agree = (0..4).any(|_| {
            let mut mem = String::new();
            let in_memory = scenario::run(host(), mem_text.as_bytes(), &mut mem);
            let mut vol = String::new();
            let on_volumes = scenario::run(host(), vol_text.as_bytes(), &mut vol);
            mems.push((in_memory, verdicts(&mem)));
            vols.push((on_volumes, verdicts(&vol)));
            let same = mems.iter().any(|m| vols.contains(m));
            if !same {
                eprintln!(
                    "==== {} in memory ({in_memory:?})\n{mem}==== on volumes ({on_volumes:?})\n{vol}",
                    path.display()
                );
            }
            same
        });
        if !agree {
            differ.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(differ.is_empty(), "verdicts differ on volumes: {differ:?}");
}

/// Run an inline scenario; return its outcome and KTAP text.
fn run_text(text: &str) -> (Outcome, String) {
    let mut out = String::new();
    let outcome = scenario::run(host(), text.as_bytes(), &mut out);
    (outcome, out)
}

#[test]
fn a_passing_run_prints_exact_ktap() {
    let (o, out) = run_text(
        "cluster master slave\nwrite 0 /a \"x\"   # a comment\nsync\n  expect file * /a \"x\"  # trailing\nexpect tid 1 / 1\n",
    );
    assert_eq!(o, Outcome::Passed, "{out}");
    assert_eq!(
        out,
        "KTAP version 1\n1..2\nok 1 line 4: expect file * /a \"x\"\nok 2 line 5: expect tid 1 / 1\n# 2 passed, 0 failed\n"
    );
}

#[test]
fn a_failing_check_is_reported_and_the_run_goes_on() {
    let (o, out) = run_text(
        "cluster master slave\nwrite 0 /a \"x\"\nexpect file 1 /a \"x\"\nexpect missing 1 /a\nwrite 0 /a \"y\"\nexpect file 0 /a \"x\"\n",
    );
    assert_eq!(o, Outcome::Failed);
    assert_eq!(
        out,
        "KTAP version 1\n1..3\nnot ok 1 line 3: expect file 1 /a \"x\"\n# node 1: /a: not found\n\
         ok 2 line 4: expect missing 1 /a\nnot ok 3 line 6: expect file 0 /a \"x\"\n\
         # node 0: /a: content differs at byte 0\n# 1 passed, 2 failed\n"
    );
}

#[test]
fn a_failing_command_stops_the_run_and_skips_the_rest() {
    let (o, out) = run_text(
        "cluster master master\nexpect missing * /a\nmkdir * /a/b\nexpect dir * /a/b\nstart\nexpect running *\n",
    );
    assert_eq!(o, Outcome::Failed);
    assert_eq!(
        out,
        "KTAP version 1\n1..3\nok 1 line 2: expect missing * /a\n# line 3: node 0: mkdir /a/b: not found\n\
         not ok 2 line 4: expect dir * /a/b # SKIP not run\nnot ok 3 line 6: expect running * # SKIP not run\n\
         # 1 passed, 2 failed\n"
    );
}

#[test]
fn run_time_errors_name_their_line_and_reason() {
    let cases = [
        (
            "cluster master slave\nstart 1\nstart 1\n",
            "# line 3: node 1: start: a sync thread already runs",
        ),
        (
            "cluster master\nwrite * /f \"x\"\nmkdir * /f/g\n",
            "# line 3: node 0: mkdir /f/g: not a directory",
        ),
        (
            // Two masters that disagree never reach a focus: the wait times out.
            "cluster master master slave\nwrite 0 /a \"a\"\nstart\nwait synced timeout=100ms\n",
            "# line 4: wait synced: timed out after 100ms; not in sync: node 0,1,2 (no focus: ",
        ),
    ];
    for (text, want) in cases {
        let (o, out) = run_text(text);
        assert_eq!(o, Outcome::Failed, "{text}");
        assert!(out.contains(want), "{text}: {out}");
        assert!(out.ends_with("# 0 passed, 0 failed\n"), "{text}: {out}");
    }
}

#[test]
fn threads_left_running_are_stopped_at_the_end() {
    // The run returns (and the cluster is dropped) with threads started and one frozen; a thread
    // left behind would keep the test process busy or crash on the freed cluster.
    let (o, out) = run_text(
        "cluster master slave slave\nstart\nfreeze 2\nexpect frozen 2\nexpect running 0,1\n",
    );
    assert_eq!(o, Outcome::Passed, "{out}");
}

#[test]
fn status_and_snapshot_checks_report_what_differs() {
    let (o, out) = run_text(
        "cluster master master slave\nsnapshot empty 2\nwrite * /a \"a\"\nexpect unchanged empty 2\n\
         expect status 2 !quorum/rw\n",
    );
    assert_eq!(o, Outcome::Failed);
    assert!(
        out.contains("not ok 1 line 4: expect unchanged empty 2\n# node 2: /: modify_tid 1"),
        "{out}"
    );
    assert!(
        out.contains(
            "not ok 2 line 5: expect status 2 !quorum/rw\n# node 2: status word quorum/rw present"
        ),
        "{out}"
    );
}

#[test]
fn a_cluster_on_volumes_remounts_and_crashes() {
    let (o, out) = run_text(
        "cluster volumes=on master master slave\n\
         write 0,1 /a \"hello\"\nmkdir 0,1 /d\nwrite 0,1 /d/big bytes=200000 seed=3\n\
         start\nwait synced\nremount 2\n\
         expect file 2 /d/big bytes=200000 seed=3\nexpect same 0 2\n\
         freeze 2\nwrite 0,1 /later \"new\"\nsync 2\nexpect file 2 /later \"new\"\n\
         crash 2\nexpect missing 2 /later\nexpect frozen 2\n\
         unfreeze 2\nwait synced\nexpect file 2 /later \"new\"\n\
         remount 0\nremount 2\nexpect same 0 2\n",
    );
    assert_eq!(o, Outcome::Passed, "{out}");
    // Not on volumes: a run-time error at its line.
    let (o, out) = run_text("cluster master\nremount 0\nexpect dir 0 /\n");
    assert_eq!(o, Outcome::Failed, "{out}");
    assert!(
        out.contains("line 2: remount: the cluster is not on volumes"),
        "{out}"
    );
}
