//! Oracle property tests (issue 4 item 2): random clusters of 1 to 8 nodes with random roles
//! and random divergent histories, checked against an independent reference model.
//!
//! The reference model (`oracle/model.rs`) replays the history into plain path maps and
//! simulates synchronization by the per-key quorum rule; `oracle/gen.rs` generates histories
//! (proptest shrinks them); `oracle/scn.rs` prints a failing case as a `.scn` scenario.
//!
//! Two kinds of history:
//! - *committed*: every committed change reached a fixed quorum of masters, other nodes got a
//!   prefix of those and then only uncommitted changes. The simple root-level rule applies:
//!   every node must end up holding exactly the committed history's tree (nothing committed is
//!   lost, everything uncommitted is rolled back);
//! - *arbitrary*: node subsets at random. TID equality hides divergence there (an inode whose
//!   TID equals the focus's is not looked into), so only the model's exact prediction holds.

mod oracle {
    pub mod gen;
    pub mod model;
    pub mod prop;
    pub mod scn;
}

use oracle::gen::{resolve, Case, Class, RawCase, RawOp};
use oracle::model::{self, quorum, Inode, Rule, Tid, World};
use oracle::prop;

use hammer2_synchro::cluster::Role;

/// Every node's tree equals `want`, or the first difference.
fn all_equal(w: &World, want: &Inode) -> Result<(), String> {
    for (i, t) in w.trees.iter().enumerate() {
        if t != want {
            let got: Vec<_> = t
                .walk()
                .into_iter()
                .map(|(p, x)| (String::from_utf8_lossy(&p).into_owned(), x.tid))
                .collect();
            let exp: Vec<_> = want
                .walk()
                .into_iter()
                .map(|(p, x)| (String::from_utf8_lossy(&p).into_owned(), x.tid))
                .collect();
            return Err(format!(
                "node {i} ({}) differs from the committed tree:\n got  {got:?}\n want {exp:?}",
                w.roles[i].name()
            ));
        }
    }
    Ok(())
}

/// The committed-class property on the model alone, under `rule`.
fn model_committed(case: &Case, rule: Rule) -> Result<(), String> {
    if !matches!(case.class, Class::Committed { .. }) {
        return Ok(());
    }
    let (mut w, _) = case.replay();
    let (_, done) = w.sync_all(rule, 16);
    if !done {
        return Err("model did not converge".into());
    }
    all_equal(&w, &case.committed_tree())
}

/// With no quorum at the root, synchronization changes nothing, under `rule`.
fn model_no_quorum(case: &Case, rule: Rule) -> Result<(), String> {
    let (mut w, _) = case.replay();
    if w.focus_root().is_some() {
        return Ok(());
    }
    let before = w.clone();
    w.sync_all(rule, 16);
    if w != before {
        return Err("no quorum, yet the model changed a node".into());
    }
    Ok(())
}

/// A deliberately wrong rule: every node votes and the highest TID wins without any quorum.
fn highest_wins(_: usize, votes: &[(usize, Role, Tid)]) -> Option<(usize, Tid)> {
    votes
        .iter()
        .max_by_key(|v| (v.2, std::cmp::Reverse(v.0)))
        .map(|v| (v.0, v.2))
}

#[test]
fn model_committed_history_wins_everywhere() {
    // The per-key simulation and the root-level rule agree on committed histories: this is what
    // makes the model trustworthy as an oracle.
    prop::run("model_committed", 400, 24, |c| model_committed(c, quorum));
}

#[test]
fn model_no_quorum_changes_nothing() {
    prop::run("model_no_quorum", 200, 16, |c| model_no_quorum(c, quorum));
}

#[test]
fn generated_histories_are_valid_and_mixed() {
    // Over a batch of raw cases, every kind of change and both classes occur.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strat = oracle::gen::raw_case(24);
    let mut kinds = [0usize; 5];
    let (mut committed, mut big, mut direct_edge, mut nomaster) = (0, 0, 0, 0);
    for _ in 0..300 {
        let raw = proptest::strategy::ValueTree::current(
            &proptest::strategy::Strategy::new_tree(&strat, &mut runner).unwrap(),
        );
        let case = resolve(&raw);
        committed += usize::from(matches!(case.class, Class::Committed { .. }));
        nomaster += usize::from(!case.roles.contains(&Role::Master));
        for (_, op, _) in &case.ops {
            kinds[match op {
                model::Op::Mkdir(_) => 0,
                model::Op::Write { bytes, .. } => {
                    big += usize::from(*bytes > model::BLOCK);
                    direct_edge +=
                        usize::from(*bytes == model::DIRECT_MAX || *bytes == model::DIRECT_MAX + 1);
                    1
                }
                model::Op::Rm(_) => 2,
                model::Op::Chmod(..) => 3,
                model::Op::Link(..) => 4,
            }] += 1;
        }
        // Replay asserts validity of every change on every node of its set.
        case.replay();
    }
    assert!(kinds.iter().all(|&k| k > 10), "op mix {kinds:?}");
    assert!(committed > 50 && committed < 250, "committed {committed}");
    assert!(
        big > 0 && direct_edge > 0 && nomaster > 0,
        "big {big} edge {direct_edge} nomaster {nomaster}"
    );
}

fn op(kind: u8, pick: u16, mask: u8, commit: bool) -> RawOp {
    RawOp {
        kind,
        pick,
        pick2: 0,
        mask,
        size: 0,
        size_fine: 5,
        seed: 1,
        commit,
    }
}

/// A committed history with a lagging slave that holds an uncommitted change.
fn lagging_slave_case() -> Case {
    let raw = RawCase {
        roles: vec![0, 0, 0, 9, 0, 0, 0, 0],
        n: 4,
        committed: true,
        qmask: 0b0111,
        cuts: vec![255, 255, 255, 0, 255, 255, 255, 255],
        ops: vec![
            op(0, 0, 0, true),
            op(3, 0, 0, true),
            op(3, 1, 0b1000, false),
        ],
    };
    let case = resolve(&raw);
    assert_eq!(case.ops.len(), 3, "{case:?}");
    case
}

#[test]
fn negative_control_wrong_rule_is_caught() {
    // Without a quorum requirement, the slave's uncommitted write wins and spreads to the masters:
    // the committed-history check must say so.
    let case = lagging_slave_case();
    assert!(model_committed(&case, quorum).is_ok());
    let err = model_committed(&case, highest_wins).unwrap_err();
    assert!(err.contains("differs from the committed tree"), "{err}");
}

#[test]
#[should_panic(expected = "minimal case as a scenario")]
fn negative_control_property_runner_shrinks_and_prints() {
    prop::run("negative_control", 200, 12, |c| {
        model_committed(c, highest_wins)
    });
}

#[test]
fn scenario_text_of_a_case() {
    let case = lagging_slave_case();
    let (mut w, paths) = case.replay();
    w.sync_all(quorum, 16);
    let s = oracle::scn::render(&case, &w, &paths, "demo");
    assert!(
        s.starts_with("# demo\ncluster master master master slave\n"),
        "{s}"
    );
    assert!(s.contains("\nsync\n"), "{s}");
    assert!(s.contains("expect tid 3 / "), "{s}");
    assert!(s.contains("expect focus 2\n"), "{s}");
}
