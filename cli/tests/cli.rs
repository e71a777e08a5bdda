//! The command line as a user meets it: help, usage errors, exit statuses, rejection output.

use std::path::Path;
use std::process::{Command, Output};

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
            "run [--status MS] FILE",
            "check FILE",
            "EXIT STATUS",
            "docs/SCENARIOS.md",
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
fn bad_usage_exits_2() {
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
