//! The command line as a user meets it: help, usage errors, exit statuses, rejection output.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hammer2-synchro"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("run hammer2-synchro")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_explains_commands_and_exit_codes() {
    for flag in ["--help", "-h", "help"] {
        let o = cli(&[flag]);
        assert_eq!(o.status.code(), Some(0), "{flag}");
        let t = text(&o.stdout);
        for needle in [
            "run [--status MS] [--mem-limit SIZE] FILE",
            "check [--mem-limit SIZE] FILE",
            "--mem-limit SIZE   the most memory the run may hold at once (default 1G)",
            "EXIT STATUS",
            "docs/SCENARIOS.md",
            "ls IMAGE[@LABEL] [PATH]",
            "export IMAGE@LABEL DIR",
            "fsck IMAGE",
            "EXAMPLE",
        ] {
            assert!(t.contains(needle), "{flag}: help lacks {needle}");
        }
    }
}

#[test]
fn bad_usage_exits_2_with_a_message() {
    for args in [
        &[][..],
        &["frob"],
        &["run"],
        &["check", "--verbose", "x.scn"],
    ] {
        let o = cli(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            text(&o.stderr).contains("usage: hammer2-synchro"),
            "{args:?}"
        );
    }
}

#[test]
fn unreadable_file_exits_2() {
    let o = cli(&["check", "no/such/file.scn"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("no/such/file.scn"));
}

#[test]
fn rejected_file_prints_its_line_and_exits_2() {
    let o = cli(&["run", "qemu-tests/cases/reject/bad-node-index.scn"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o.stdout),
        "line 4: bad node index 9 (cluster has 4 nodes)\n"
    );
}

#[test]
fn check_accepts_the_example_and_the_worst_status_wins() {
    let o = cli(&["check", "qemu-tests/cases/example.scn"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("example.scn: ok (20 commands, 7 checks)"));
    let o = cli(&[
        "check",
        "qemu-tests/cases/example.scn",
        "qemu-tests/cases/reject/arity.scn",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stdout).contains("arity.scn: line 3: mkdir: expected 2 arguments"));
}

/// A scenario file in a fresh temporary directory (removed by the caller's `Drop` of the dir).
fn temp_scn(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("h2s-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.scn"));
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn run_prints_ktap_and_the_worst_status_wins() {
    let o = cli(&["run", "qemu-tests/cases/example.scn"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let out = text(&o.stdout);
    assert!(out.starts_with("KTAP version 1\n1..7\n"), "{out}");
    assert!(out.ends_with("# 7 passed, 0 failed\n"), "{out}");

    let failing = temp_scn(
        "failing",
        "cluster master slave\nwrite 0 /a \"x\"\nexpect file 1 /a \"x\"\n",
    );
    let failing = failing.to_str().unwrap();
    let o = cli(&["run", failing]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout)
        .contains("not ok 1 line 3: expect file 1 /a \"x\"\n# node 1: /a: not found\n"));

    let o = cli(&["run", "qemu-tests/cases/example.scn", failing]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.starts_with("# file: qemu-tests/cases/example.scn\nKTAP version 1\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("# file: {failing}\nKTAP version 1\n")),
        "{out}"
    );

    let o = cli(&["run", failing, "qemu-tests/cases/reject/arity.scn"]);
    assert_eq!(o.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(std::path::Path::new(failing).parent().unwrap());
}

#[test]
fn run_with_status_prints_live_clusters_to_stderr() {
    let dir = std::env::temp_dir().join(format!("h2s-cli-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("s.scn");
    std::fs::write(
        &f,
        "cluster master master slave\nmkdir 0,1 /d\nsleep 400ms\nexpect dir 0 /d\n",
    )
    .unwrap();
    let o = cli(&["run", "--status", "50", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(err.contains("status: cluster"), "no status lines:\n{err}");
    assert!(err.contains("3 nodes"), "{err}");
    assert!(text(&o.stdout).contains("# 1 passed, 0 failed"));
    for bad in [
        &["run", "--status"][..],
        &["run", "--status", "0", "x.scn"],
        &["run", "--status", "x", "y.scn"],
    ] {
        assert_eq!(cli(bad).status.code(), Some(2), "{bad:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn status_names_the_disagreeing_masters_when_no_quorum_is_possible() {
    let dir = std::env::temp_dir().join(format!("h2s-cli-disc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("d.scn");
    std::fs::write(
        &f,
        "cluster master master master slave\nmkdir * /d\nwrite 0 /d/a \"x\"\n\
         write 1 /d/b \"y\"\nwrite 2 /d/c \"z\"\nsleep 400ms\nexpect quorum none\n\
         expect status 3 out-of-sync-masters\n",
    )
    .unwrap();
    let o = cli(&["run", "--status", "50", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(
        err.contains(
            "discrepancy: no quorum among the masters: node 0 tid 2 node 1 tid 3 node 2 tid 4"
        ),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_check_text_holding_a_directive_is_escaped_in_ktap() {
    let f = temp_scn(
        "directive",
        "cluster master slave\nwrite 0 /a \"x\"\nexpect file 1 /a \"x # SKIP \\\\ y\"\n",
    );
    let o = cli(&["run", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.contains("\nnot ok 1 line 3: expect file 1 /a \"x \\# SKIP \\\\\\\\ y\"\n"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(f.parent().unwrap());
}

#[test]
fn an_endless_or_oversized_input_is_read_only_up_to_the_limit() {
    for cmd in ["check", "run"] {
        let o = cli(&[cmd, "/dev/zero"]);
        assert_eq!(o.status.code(), Some(2), "{cmd}");
        assert!(
            text(&o.stderr).contains("/dev/zero: too big (more than 1048576 bytes"),
            "{cmd}: {}",
            text(&o.stderr)
        );
    }
    let big = temp_scn("big", &"#".repeat((1 << 20) + 1));
    let o = cli(&["check", big.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("too big"), "{}", text(&o.stderr));
    // Exactly at the limit is still read (and judged by the parser).
    std::fs::write(&big, "#".repeat(1 << 20)).unwrap();
    let o = cli(&["check", big.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stdout).contains("line 1: no cluster command"),
        "{}",
        text(&o.stdout)
    );
    let _ = std::fs::remove_dir_all(big.parent().unwrap());
}

/// Run the CLI with standard output going to `stdout`.
fn cli_to(args: &[&str], stdout: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hammer2-synchro"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("run hammer2-synchro")
}

#[test]
fn a_full_output_device_is_status_2_with_a_message() {
    for args in [
        &["help"][..],
        &["run", "qemu-tests/cases/example.scn"],
        &["check", "qemu-tests/cases/example.scn"],
        &["ls", "--help"],
        &["export", "--help"],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = cli_to(args, Stdio::from(full));
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            text(&o.stderr).contains("standard output: No space left on device"),
            "{args:?}: {}",
            text(&o.stderr)
        );
    }
}

#[test]
fn a_closed_pipe_ends_the_run_at_once_with_status_2() {
    // The first check's result is written after the sleep, when the reader is surely gone; the
    // run must end there, not sleep on with nobody to read its verdicts.
    let f = temp_scn(
        "pipe",
        "cluster master\nsleep 300ms\nexpect dir 0 /\nsleep 60s\nexpect dir 0 /\n",
    );
    let t0 = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hammer2-synchro"))
        .args(["run", f.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "", "a closed pipe ends quietly");
    assert!(
        t0.elapsed().as_secs() < 30,
        "the run went on after its reader left"
    );
    let _ = std::fs::remove_dir_all(f.parent().unwrap());
}

#[test]
fn a_run_over_its_memory_budget_ends_with_out_of_memory() {
    // One 16 MiB file on four nodes and its expected content: about 100 MiB at the peak.
    let f = temp_scn(
        "budget",
        "cluster master slave slave slave\nwrite * /f bytes=16777216 seed=1\n\
         expect file * /f bytes=16777216 seed=1\n",
    );
    let o = cli(&["run", "--mem-limit", "64M", f.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}{}", text(&o.stderr));
    assert!(out.contains("\n# line 2: "), "{out}");
    assert!(out.contains(": out of memory\n"), "{out}");
    assert!(
        out.ends_with("# SKIP not run\n# 0 passed, 1 failed\n"),
        "{out}"
    );
    // The default budget holds it.
    let o = cli(&["run", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let _ = std::fs::remove_dir_all(f.parent().unwrap());
}

#[test]
fn a_run_ends_cleanly_at_every_memory_limit() {
    // Threads, frontend changes, snapshots, syncs and checks, each limit cutting it elsewhere:
    // every run must end with a whole KTAP document and status 0 or 1, never an abort.
    let f = temp_scn(
        "sweep",
        "cluster master master master slave\nmkdir * /d\nwrite 0,1 /d/big bytes=300000 seed=3\n\
         write 0,1 /d/e bytes=5000 seed=4\nlink 0,1 /d/e /d/hl\nstart\n\
         wait synced timeout=300ms\nexpect same 0 3\nexpect file * /d/big bytes=300000 seed=3\n\
         stop *\nwrite 0,1,2 /d/new \"later\"\nrm 0,1,2 /d/e\nsync\nsnapshot s0 3\nexpect missing 3 /d/e\n\
         expect unchanged s0 3\n",
    );
    let mut outcomes = [0; 2];
    for kib in (1024..3072).step_by(64) {
        let limit = format!("{kib}K");
        let o = cli(&["run", "--mem-limit", &limit, f.to_str().unwrap()]);
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        match o.status.code() {
            Some(c @ (0 | 1)) => outcomes[c as usize] += 1,
            c => panic!("--mem-limit {limit}: status {c:?}\n{out}{err}"),
        }
        assert!(err.is_empty(), "--mem-limit {limit}: {err}");
        assert!(
            out.starts_with("KTAP version 1\n1..4\n") && out.ends_with(" failed\n"),
            "--mem-limit {limit}: {out}"
        );
    }
    // The sweep spans runs cut short and runs that pass.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    let _ = std::fs::remove_dir_all(f.parent().unwrap());
}

// ---- ls and export without a volume at hand (real volumes: export_fixtures.rs) ----

#[test]
fn help_per_command() {
    for cmd in ["ls", "export"] {
        let o = cli(&[cmd, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{cmd}");
        let t = text(&o.stdout);
        assert!(
            t.contains("IMAGE@LABEL") && t.contains("EXIT STATUS"),
            "{cmd}: {t}"
        );
    }
}

#[test]
fn volume_commands_bad_usage_exits_2() {
    for args in [
        &["ls"][..],
        &["ls", "a", "b", "c"],
        &["ls", "@DATA", "/"],
        &["export", "img@DATA"],
        &["export", "img", "dir"],
        &["ls", "/nonexistent/image@DATA"],
        &["export", "/nonexistent/image@DATA", "/tmp/never"],
    ] {
        let o = cli(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(text(&o.stderr).starts_with("hammer2-synchro: "), "{args:?}");
    }
}

#[test]
fn not_a_volume_exits_1_with_the_fault() {
    let dir = std::env::temp_dir().join(format!("h2-cli-vol-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("zeros.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let spec = format!("{}@DATA", img.display());
    for args in [
        vec!["ls", img.to_str().unwrap()],
        vec!["ls", &spec],
        vec!["export", &spec, dir.join("out").to_str().unwrap()],
    ] {
        let o = cli(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            text(&o.stderr).contains("bad volume header magic"),
            "{args:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fsck_help_usage_and_exit_statuses() {
    let o = cli(&["fsck", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = text(&o.stdout);
    assert!(
        help.contains("hammer2-synchro fsck [--progress] IMAGE") && help.contains("EXIT STATUS")
    );
    for args in [&["fsck"][..], &["fsck", "a", "b"]] {
        let o = cli(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(text(&o.stderr).contains("expected IMAGE"), "{args:?}");
    }
    let o = cli(&["fsck", "no/such/image"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("no/such/image"));
    // Not a HAMMER2 volume: a finding (no usable header), status 1.
    let img = std::env::temp_dir().join(format!("h2-fsck-zeros-{}", std::process::id()));
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let o = cli(&["fsck", img.to_str().unwrap()]);
    std::fs::remove_file(&img).unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.contains("0 at 0x0: refused: bad volume header magic")
            && out.contains("FINDING no usable volume header")
            && out.contains(": 2 findings"),
        "{out}"
    );
}
