//! Fuzzing the scenario parser on stable Rust: the checked-in cases of
//! `qemu-tests/cases/` (accepted and rejected ones) are the seed corpus; line-, token- and
//! byte-level mutations of them go through `scenario::check`. No input may panic; a rejection
//! names a line that exists (or the one after the last) as `line N: <reason>`; an accepted
//! script is consistent (1 to 8 nodes, no more checks than steps); parsing is deterministic.
//!
//! `FUZZ_ITERS=n` and `FUZZ_SEED=n` scale and vary the run.

mod fuzz_common;

use fuzz_common::{corpus, iterations, mutate, run_one, seed, Rng};
use hammer2_synchro::scenario;

/// Words the mutator splices in: every command, role, status word and argument shape.
const DICT: &[&str] = &[
    "cluster",
    "mkdir",
    "write",
    "rm",
    "chmod",
    "link",
    "start",
    "stop",
    "freeze",
    "unfreeze",
    "remaster",
    "signal",
    "sync",
    "wait",
    "synced",
    "expect",
    "same",
    "file",
    "dir",
    "missing",
    "mode",
    "tid",
    "frozen",
    "running",
    "stopped",
    "focus",
    "quorum",
    "none",
    "snapshot",
    "unchanged",
    "status",
    "stall",
    "fail",
    "catchup",
    "on",
    "off",
    "role",
    "master",
    "slave",
    "soft_master",
    "soft_slave",
    "cache",
    "masters-all-good",
    "!quorum/rw",
    "quorum/ro",
    "no-slaves-visible",
    "*",
    "0",
    "7",
    "8",
    "0,1",
    "0,1,2,3,4,5,6,7",
    "0,,1",
    "-1",
    "18446744073709551616",
    "/docs",
    "/docs/readme",
    "/",
    "//",
    "/a/../b",
    "relative",
    "\"hello\"",
    "\"esc\\\"aped\\n\"",
    "\"unterminated",
    "\"\\x00\"",
    "bytes=65536",
    "bytes=99999999999",
    "seed=3",
    "timeout=10s",
    "timeout=0s",
    "timeout=1ms",
    "0755",
    "0o777",
    "#",
    "# comment",
    "\t",
    "",
    "\u{e9}",
    "\u{0}",
];

fn mutate_lines(rng: &mut Rng, text: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    for _ in 0..1 + rng.below(4) {
        let n = lines.len();
        match rng.below(6) {
            0 if n > 1 => {
                lines.remove(rng.below(n));
            }
            1 => {
                let l = lines[rng.below(n)].clone();
                lines.insert(rng.below(n + 1), l);
            }
            2 if n > 1 => {
                let (a, b) = (rng.below(n), rng.below(n));
                lines.swap(a, b);
            }
            3 => {
                // Replace one token of a line with a dictionary word.
                let i = rng.below(n);
                let line = String::from_utf8_lossy(&lines[i]).into_owned();
                let mut toks: Vec<&str> = line.split(' ').collect();
                let t = rng.below(toks.len());
                toks[t] = DICT[rng.below(DICT.len())];
                lines[i] = toks.join(" ").into_bytes();
            }
            4 => {
                // Append a dictionary word to a line.
                let i = rng.below(n);
                lines[i].push(b' ');
                lines[i].extend_from_slice(DICT[rng.below(DICT.len())].as_bytes());
            }
            _ => {
                // A line from another case.
                let other = &others[rng.below(others.len())];
                let ol: Vec<&[u8]> = other.split(|&b| b == b'\n').collect();
                lines.insert(rng.below(n + 1), ol[rng.below(ol.len())].to_vec());
            }
        }
    }
    lines.join(&b'\n')
}

fn exercise(input: &[u8], accepted: &mut usize) {
    let nlines = input.split(|&b| b == b'\n').count();
    match scenario::check(input) {
        Ok(script) => {
            *accepted += 1;
            assert!(
                (1..=8).contains(&script.roles.len()),
                "{} roles",
                script.roles.len()
            );
            assert!(script.checks <= script.steps.len());
            let again = scenario::check(input).expect("deterministic");
            assert_eq!(format!("{again:?}"), format!("{script:?}"));
        }
        Err(e) => {
            let line = e.line as usize;
            assert!(line >= 1 && line <= nlines + 1, "line {line} of {nlines}");
            let shown = e.to_string();
            assert!(shown.starts_with(&format!("line {line}: ")), "{shown}");
            let again = scenario::check(input)
                .map(|_| ())
                .expect_err("deterministic");
            assert_eq!(again.to_string(), shown);
        }
    }
}

#[test]
fn mutated_scenarios_never_panic() {
    let good = corpus("qemu-tests/cases", Some("scn"));
    let mut seeds = good.clone();
    seeds.extend(corpus("qemu-tests/cases/reject", Some("scn")));
    assert!(!good.is_empty());
    let mut rng = Rng::new(seed(0x5343_4e46_555a_5a21));
    let iters = iterations(200_000) / 4;
    let mut accepted = 0;
    for iter in 0..iters {
        // Half from accepted cases, so mutations stay near the parser's success paths.
        let base = if rng.chance(2) {
            &good[rng.below(good.len())]
        } else {
            &seeds[rng.below(seeds.len())]
        };
        let mut input = mutate_lines(&mut rng, base, &seeds);
        if rng.chance(3) {
            mutate(&mut rng, &mut input, &seeds);
        }
        run_one("scenario", iter, &input, |i| exercise(i, &mut accepted));
    }
    eprintln!("{iters} scenarios: {accepted} accepted");
    // Both outcomes must stay reachable, or the checks above would check nothing.
    assert!(accepted > iters / 50, "accepted only {accepted} of {iters}");
    assert!(accepted < iters, "nothing rejected");
}
