//! Every scenario case of `qemu-tests/cases/` (the files the QEMU suite runs in the kernel), run
//! on the userland host; and every malformed case of `qemu-tests/cases/reject/`, which must be
//! rejected at the line and with the reason its first line names.

use std::path::{Path, PathBuf};

use hammer2_synchro::scenario::{self, Outcome};
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
    for path in &all {
        let text = std::fs::read(path).unwrap();
        let mut out = String::new();
        let outcome = scenario::run(host(), &text, &mut out);
        if outcome != Outcome::Passed {
            eprintln!("==== {} ({outcome:?})\n{out}", path.display());
            failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
        } else {
            assert!(out.ends_with(" 0 failed\n"), "{}: {out}", path.display());
        }
    }
    assert!(failed.is_empty(), "cases not passing: {failed:?}");
}
