//! Oracle property tests: random clusters of 1 to 8 nodes with random roles
//! and random divergent histories, checked against an independent reference model.
//!
//! The reference model (`oracle/model.rs`) replays the history into plain maps, in either
//! layout, and simulates synchronization by the per-key quorum rule; `oracle/gen.rs` generates
//! histories (proptest shrinks them); `oracle/scn.rs` prints a failing case as a `.scn` scenario.
//!
//! Two kinds of history:
//! - *committed*: every committed change reached a fixed quorum of masters, other nodes got a
//!   prefix of those and then only uncommitted changes. The simple root-level rule applies:
//!   every node must end up holding exactly the committed history's tree (nothing committed is
//!   lost, everything uncommitted is rolled back);
//! - *arbitrary*: node subsets at random. TID equality hides divergence there (an inode whose
//!   TID equals the focus's is not looked into: the frontend atomicity gap of HAMMER2-FACTS §6),
//!   so only the model's exact prediction holds, and it holds: the model stamps what the store
//!   stamps and skips what the synchronizer skips, so it ends with the same hidden divergence.
//!
//! Both layouts run the exact prediction: today's (the default; `Case::on_index`), chain by
//! chain (`real::chain_lines`: every index inode, DIRENT and DATA chain with its modify_tid and
//! content) and path by path after every round, and the seed's (path by path, a smaller sample).
//! Committed histories in today's layout are also checked against an independent replay of
//! names and inodes (`oracle/index.rs`) that knows nothing of TIDs or the model.
//!
//! Catch-up cases (arbitrary histories, one node in catch-up mode, random read stalls of 0 to
//! 3 ms per node): where the root has no quorum, the catch-up node ends `same` as the highest
//! master and holds every path it holds, whatever the stalls. One restriction, in both layouts:
//! the round-by-round match is not asserted when a node is stalled and two nodes hold different
//! contents under one TID (see [`catchup_against_cluster`]).

mod oracle {
    pub mod gen;
    pub mod index;
    pub mod model;
    pub mod prop;
    pub mod real;
    pub mod scn;
}

use oracle::gen::{raw_catchup_case, resolve, resolve_catchup, Case, Class, RawCase, RawOp};
use oracle::model::{self, quorum, tids_honest, Inode, Rule, Tid, World};
use oracle::{prop, real};

use std::sync::atomic::{AtomicUsize, Ordering};

use hammer2_synchro::role::Role;
use hammer2_synchro::store::Layout;
use hammer2_synchro::sync::ScanMode;

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

/// A committed-class case's model, synchronized under `rule` (None for other cases).
fn synced_committed(case: &Case, rule: Rule) -> Result<Option<World>, String> {
    if !matches!(case.class, Class::Committed { .. }) {
        return Ok(None);
    }
    let (mut w, _) = case.replay();
    let (_, done) = w.sync_all(rule, 16);
    if !done {
        return Err("model did not converge".into());
    }
    Ok(Some(w))
}

/// The committed-class property on the model alone, under `rule`.
fn model_committed(case: &Case, rule: Rule) -> Result<(), String> {
    match synced_committed(case, rule)? {
        Some(w) => all_equal(&w, &case.committed_tree()),
        None => Ok(()),
    }
}

/// The committed-class property on the model alone in today's layout, under `rule`: once
/// synchronized, every node shows every path as the independent replay of the committed changes
/// (`oracle/index.rs`) does (inode numbers and TIDs aside: uncommitted creations take numbers too).
fn model_committed_index(case: &Case, rule: Rule) -> Result<(), String> {
    let Some(w) = synced_committed(case, rule)? else {
        return Ok(());
    };
    let want = oracle::index::Names::committed(case);
    let d = real::defaults();
    for (i, t) in w.trees.iter().enumerate() {
        for p in named(case) {
            let (got, exp) = (
                untimed(real::expect(t.get(&p))),
                want.expect(&p, d.dir, d.file),
            );
            if got != exp {
                let p = String::from_utf8_lossy(&p);
                return Err(format!("node {i} {p}: model {got:?}, committed {exp:?}"));
            }
        }
    }
    Ok(())
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
    prop::run_index("model_index_committed", 400, 24, |c| {
        model_committed_index(c, quorum)
    });
}

#[test]
fn model_no_quorum_changes_nothing() {
    prop::run("model_no_quorum", 200, 16, |c| model_no_quorum(c, quorum));
    prop::run_index("model_index_no_quorum", 200, 16, |c| {
        model_no_quorum(c, quorum)
    });
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
        reroles: None,
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
    let case = case.on_index();
    assert!(model_committed_index(&case, quorum).is_ok());
    let err = model_committed_index(&case, highest_wins).unwrap_err();
    assert!(err.contains("/a: model"), "{err}");
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
        s.starts_with("# demo\ncluster layout=seed master master master slave\n"),
        "{s}"
    );
    assert!(s.contains("\nsync\n"), "{s}");
    assert!(s.contains("expect tid 3 / "), "{s}");
    assert!(s.contains("expect focus 2\n"), "{s}");
}

// ---------------------------------------------------------------------------------------------
// Against the real cluster.

/// The oracle property on one case (see the module doc), in both scan modes.
fn against_cluster(case: &Case) -> Result<(), String> {
    for mode in [ScanMode::Pruned, ScanMode::Original] {
        against_cluster_mode(case, mode).map_err(|e| format!("scan mode {mode:?}: {e}"))?;
    }
    Ok(())
}

fn against_cluster_mode(case: &Case, mode: ScanMode) -> Result<(), String> {
    let n = case.roles.len();
    let (mut w, paths) = case.replay();
    let c = real::build_model(case)?;
    c.set_scan_mode(mode);
    let chains = |c: &hammer2_synchro::cluster::Cluster, w: &World| match case.layout {
        Layout::Index => real::diff_chains(c, w),
        Layout::Seed => Ok(()),
    };
    real::diff(&c, &w, &paths).map_err(|e| format!("after the history, before any sync:\n{e}"))?;
    chains(&c, &w).map_err(|e| format!("after the history, before any sync:\n{e}"))?;
    let want_focus = w.focus_root().map(|f| f.1);
    if real::focus_root(&c).map(|f| f.1) != want_focus {
        return Err(format!(
            "focus_root: cluster {:?}, model {want_focus:?}",
            real::focus_root(&c)
        ));
    }
    let before = real::snapshot(&c, n, &paths);
    let (rounds, done) = w.sync_all(quorum, 12);
    if !done {
        return Err("the model did not converge in 12 rounds".into());
    }
    for (r, mw) in rounds.iter().enumerate() {
        real::sync_round(&c, n)?;
        real::diff(&c, mw, &paths).map_err(|e| format!("after sync round {}:\n{e}", r + 1))?;
        chains(&c, mw).map_err(|e| format!("after sync round {}:\n{e}", r + 1))?;
    }
    // With no quorum at the root (and no node in catch-up mode), nothing changes anywhere.
    if want_focus.is_none() && case.catchup == 0 && real::snapshot(&c, n, &paths) != before {
        return Err("no quorum, yet a node changed".into());
    }
    // Committed histories: every node holds exactly the committed tree (nothing committed lost,
    // nothing uncommitted kept), by the simple root-level rule (the seed's layout; today's has
    // its own check, `committed_on_index`).
    if let (Class::Committed { .. }, Layout::Seed) = (&case.class, case.layout) {
        let t = case.committed_tree();
        let mut cw = World::new(&case.roles);
        cw.trees = vec![t; n];
        real::diff(&c, &cw, &paths)
            .map_err(|e| format!("committed history not on every node:\n{e}"))?;
    }
    // The full-fidelity comparison agrees with the model: nodes whose model trees are equal
    // compare equal; nodes that look different through `stat` compare different.
    for a in 0..n {
        for b in a + 1..n {
            let model_same = w.trees[a] == model::same_root_identity(&w.trees[a], &w.trees[b]);
            let visible_diff = paths
                .iter()
                .any(|p| real::expect(w.trees[a].get(p)) != real::expect(w.trees[b].get(p)));
            let got = real::same(&c, a, b)?;
            if (model_same && !got) || (visible_diff && got) {
                return Err(format!("compare({a}, {b}) = {got}, model: same {model_same}, visibly different {visible_diff}"));
            }
        }
    }
    // in_sync agrees with the root TIDs.
    let focus = w.focus_root().map(|f| f.1);
    for i in 0..n {
        let want = focus == Some(w.trees[i].tid);
        if c.in_sync(i) != want {
            return Err(format!("in_sync({i}) = {}, model {want}", c.in_sync(i)));
        }
    }
    Ok(())
}

// Case budgets fit a debug-build `cargo test` in seconds; H2S_ORACLE_SCALE multiplies them,
// H2S_ORACLE_SEED runs one seed instead of the fixed one plus a rotating one (oracle/prop.rs),
// H2S_ORACLE_OPS sets the longest history of the main property.

#[test]
fn oracle_cluster_matches_model() {
    let ops = prop::env_num("H2S_ORACLE_OPS", 14) as usize;
    prop::run("cluster_matches_model", 200, ops, against_cluster);
}

#[test]
fn oracle_cluster_small_histories() {
    // Many small cases: the shapes where quorum arithmetic matters most.
    prop::run("cluster_small", 400, 5, against_cluster);
}

#[test]
fn oracle_index_cluster_matches_model() {
    let ops = prop::env_num("H2S_ORACLE_OPS", 14) as usize;
    prop::run_index("index_matches_model", 500, ops, against_cluster);
}

#[test]
fn oracle_index_cluster_small_histories() {
    prop::run_index("index_small", 1000, 5, against_cluster);
}

#[test]
fn oracle_index_cluster_long_histories() {
    prop::run_index("index_long", 80, 40, against_cluster);
}

#[test]
fn oracle_cluster_long_histories() {
    // Fewer, longer histories: deeper trees, more overwrites and type changes.
    prop::run("cluster_long", 30, 40, against_cluster);
}

// ---------------------------------------------------------------------------------------------
// Catch-up mode, with random read delays.

/// The catch-up node of `case` and the master it must end as: the root has no quorum, the
/// node is below the highest other master, and their equal TIDs mean equal subtrees.
fn catchup_target(case: &Case, w: &World) -> Option<(usize, usize)> {
    let i = case.catchup.trailing_zeros() as usize;
    if w.focus_root().is_some() || i >= w.trees.len() {
        return None;
    }
    let m = w.highest_master(i)?;
    (w.trees[i].tid < w.trees[m].tid && tids_honest(&w.trees[i], &w.trees[m])).then_some((i, m))
}

/// The catch-up properties on one case: the cluster matches the model round by round (in both
/// scan modes), and where the root has no quorum the catch-up node ends `same` as the highest
/// master, holding every path it holds as it holds it; a node at or above it is unchanged.
///
/// The round-by-round match is asserted only where equal TIDs mean equal subtrees on every
/// pair of nodes, or nothing stalls: a quorum's focus among masters at one TID is the
/// lowest-indexed unless that one is stalled (the stall tolerance), which picks a different
/// tree only where equal TIDs hide different ones. Catch-up itself never depends on a stall.
fn catchup_against_cluster(case: &Case) -> Result<(), String> {
    let (w0, _) = case.replay();
    let honest = w0
        .trees
        .iter()
        .all(|a| w0.trees.iter().all(|b| tids_honest(a, b)));
    for mode in [ScanMode::Pruned, ScanMode::Original] {
        if honest || case.stalls.is_empty() {
            against_cluster_mode(case, mode).map_err(|e| format!("scan mode {mode:?}: {e}"))?;
        }
        let (mut w, paths) = case.replay();
        let target = catchup_target(case, &w);
        let c = real::build_model(case)?;
        c.set_scan_mode(mode);
        let i = case.catchup.trailing_zeros() as usize;
        let before: Vec<_> = paths.iter().map(|p| real::observe(&c, i, p)).collect();
        let ahead = w.focus_root().is_none()
            && w.highest_master(i)
                .is_some_and(|m| w.trees[i].tid >= w.trees[m].tid);
        let (_, done) = w.sync_all(quorum, 12);
        if !done {
            return Err("the model did not converge in 12 rounds".into());
        }
        for _ in 0..3 {
            real::sync_round(&c, case.roles.len())?;
        }
        let Some((i, m)) = target else {
            let after: Vec<_> = paths.iter().map(|p| real::observe(&c, i, p)).collect();
            if ahead && after != before {
                return Err(format!(
                    "{mode:?}: node {i} was at or above every master, yet changed"
                ));
            }
            continue;
        };
        if w.trees[i] != model::same_root_identity(&w.trees[i], &w.trees[m]) {
            return Err(format!(
                "{mode:?}: the model's node {i} is not master {m}'s tree"
            ));
        }
        for p in &paths {
            let (want, got) = (real::observe(&c, m, p), real::observe(&c, i, p));
            if want != real::Seen::Missing && got != want {
                return Err(format!(
                    "{mode:?}: node {i} lost {} of master {m}: {got:?}, master {want:?}",
                    String::from_utf8_lossy(p)
                ));
            }
        }
        if !real::same(&c, m, i)? {
            return Err(format!("{mode:?}: node {i} is not `same` as master {m}"));
        }
    }
    Ok(())
}

/// The model alone: where the root has no quorum, a catch-up node ends as the highest master's
/// tree.
fn model_catchup(case: &Case) -> Result<(), String> {
    let (mut w, _) = case.replay();
    let Some((i, m)) = catchup_target(case, &w) else {
        return Ok(());
    };
    w.sync_all(quorum, 16);
    if w.trees[i] != model::same_root_identity(&w.trees[i], &w.trees[m]) {
        return Err(format!("node {i} is not master {m}'s tree"));
    }
    Ok(())
}

#[test]
fn model_catchup_ends_as_the_highest_master() {
    prop::run_with(
        "model_catchup",
        400,
        16,
        raw_catchup_case(16),
        resolve_catchup,
        model_catchup,
    );
}

#[test]
fn model_index_catchup_ends_as_the_highest_master() {
    prop::run_with(
        "model_index_catchup",
        400,
        16,
        raw_catchup_case(16),
        |r| resolve_catchup(r).on_index(),
        model_catchup,
    );
}

#[test]
fn catchup_takes_the_highest_masters_subtree() {
    let case = highest_master_case();
    let (w0, _) = case.replay();
    assert_eq!(catchup_target(&case, &w0), Some((3, 0)));
    catchup_against_cluster(&case).unwrap();
    let case = case.on_index();
    let (w0, _) = case.replay();
    assert_eq!(catchup_target(&case, &w0), Some((3, 0)));
    catchup_against_cluster(&case).unwrap();
}

fn highest_master_case() -> Case {
    // Master 0 is the highest; masters 1 and 2 agree on /d at an older TID and each hold a key
    // master 0 lacks; master 0, the slowest, is read last.
    let w = |p: &str, seed: u64| model::Op::Write {
        path: p.as_bytes().to_vec(),
        bytes: 3,
        seed,
    };
    let mut case = Case::arbitrary(
        vec![Role::Master, Role::Master, Role::Master, Role::Slave],
        vec![
            (0b1111, model::Op::Mkdir(b"/d".to_vec())),
            (0b1111, w("/d/x", 1)),
            (0b0001, w("/d/x", 2)),
            (0b0010, w("/p", 3)),
            (0b0100, w("/q", 4)),
            (0b0001, w("/r", 5)),
        ],
    );
    case.catchup = 0b1000;
    case.stalls = vec![(0, 3)];
    case
}

#[test]
fn oracle_catchup_with_stalls() {
    let ops = prop::env_num("H2S_ORACLE_OPS", 10) as usize;
    prop::run_with(
        "catchup_with_stalls",
        40,
        ops,
        raw_catchup_case(ops),
        resolve_catchup,
        catchup_against_cluster,
    );
}

#[test]
fn oracle_index_catchup_with_stalls() {
    let ops = prop::env_num("H2S_ORACLE_OPS", 10) as usize;
    prop::run_with(
        "index_catchup_with_stalls",
        80,
        ops,
        raw_catchup_case(ops),
        |r| resolve_catchup(r).on_index(),
        catchup_against_cluster,
    );
}

#[test]
fn negative_control_skipped_sync_is_caught() {
    // The same checker, fed a cluster that was never synchronized, must object.
    let case = lagging_slave_case();
    let (mut w, paths) = case.replay();
    let c = real::build_seed(&case).unwrap();
    w.sync_all(quorum, 12);
    let err = real::diff(&c, &w, &paths).unwrap_err();
    assert!(err.contains("node 3"), "{err}");
}

#[test]
fn printed_scenarios_pass_in_the_interpreter() {
    // The `.scn` a failure prints must be a faithful, runnable scenario: for generated cases
    // (the model's expectations after `sync`), the interpreter must report every check passed.
    prop::run("printed_scenarios", 60, 10, printed_scenario_passes);
    prop::run_index("printed_index_scenarios", 60, 10, printed_scenario_passes);
}

/// The scenario `case` prints, with the model's expectations after `sync`, passes.
fn printed_scenario_passes(case: &Case) -> Result<(), String> {
    let (mut w, paths) = case.replay();
    w.sync_all(quorum, 12);
    let text = oracle::scn::render(case, &w, &paths, "generated");
    let mut out = String::new();
    let outcome = hammer2_synchro::scenario::run(real::host(), text.as_bytes(), &mut out);
    if outcome != hammer2_synchro::scenario::Outcome::Passed {
        return Err(format!("{outcome:?}:\n{out}"));
    }
    Ok(())
}

/// The reference model's quorum rule on hand-made examples. Lives here, not in the model,
/// so binaries that only borrow the model (the allocation-failure tests measure every thread's
/// allocations) run no unrelated test beside theirs.
#[test]
fn model_quorum_rule_examples() {
    use hammer2_synchro::role::Role::*;
    // Bug 11's case: 10, 5, 5 → 5 by two of three.
    let v = [(0, Master, 10), (1, Master, 5), (2, Master, 5)];
    assert_eq!(oracle::model::quorum(3, &v), Some((1, 5)));
    // Slaves never vote.
    let v = [(0, Slave, 9), (1, Master, 5), (2, Slave, 9)];
    assert_eq!(oracle::model::quorum(1, &v), Some((1, 5)));
    assert_eq!(oracle::model::quorum(3, &v), None);
    // The excluded node still counts toward nmasters: 2 masters need both.
    assert_eq!(oracle::model::quorum(2, &[(1, Master, 4)]), None);
    assert_eq!(oracle::model::quorum(0, &[(1, Slave, 4)]), None);
}

// ---------------------------------------------------------------------------------------------
// Today's layout (the default): committed histories.

/// What a path shows but its modify_tid: today's layout stamps other chains than the model's
/// (seed era) layout does, so TIDs below the root are not the model's.
fn untimed(s: real::Seen) -> real::Seen {
    match s {
        real::Seen::Inode {
            objtype,
            perm,
            size,
            data,
            ..
        } => real::Seen::Inode {
            objtype,
            perm,
            size,
            tid: 0,
            data,
        },
        missing => missing,
    }
}

/// A committed history in today's layout: once synchronized, every node is in sync, shows every
/// path the history named as the committed changes left it in this layout (hardlinks as names
/// of one inode: `oracle/index.rs`), and compares equal in full (inode numbers, `nlinks`,
/// entries, TIDs) with node 0.
fn committed_on_index(case: &Case) -> Result<(), String> {
    if !matches!(case.class, Class::Committed { .. }) {
        return Ok(());
    }
    INDEX_CASES.fetch_add(1, Ordering::Relaxed);
    if case
        .ops
        .iter()
        .any(|(_, op, _)| matches!(op, model::Op::Link(..)))
    {
        INDEX_LINK_CASES.fetch_add(1, Ordering::Relaxed);
    }
    let n = case.roles.len();
    let paths = named(case);
    let want = oracle::index::Names::committed(case);
    let d = real::defaults();
    for mode in [ScanMode::Pruned, ScanMode::Original] {
        let c = real::build(case)?;
        c.set_scan_mode(mode);
        let mut rounds = 0;
        while !(0..n).all(|i| c.in_sync(i)) {
            rounds += 1;
            if rounds > 12 {
                return Err(format!("{mode:?}: not in sync after 12 rounds"));
            }
            real::sync_round(&c, n)?;
        }
        for i in 0..n {
            for p in &paths {
                let got = untimed(real::observe(&c, i, p));
                let exp = want.expect(p, d.dir, d.file);
                if got != exp {
                    let p = String::from_utf8_lossy(p);
                    return Err(format!(
                        "{mode:?}: node {i} {p}: {got:?}, committed {exp:?}"
                    ));
                }
            }
            if !real::same(&c, 0, i)? {
                return Err(format!("{mode:?}: node {i} differs from node 0"));
            }
        }
    }
    Ok(())
}

/// Every path `case` names but the root.
fn named(case: &Case) -> Vec<Vec<u8>> {
    let paths = case.replay().1;
    paths.into_iter().filter(|p| p.as_slice() != b"/").collect()
}

/// The history generated histories once left out of today's layout: `/l` hardlinks `/b`, `/b`
/// is removed and written again on a quorum while node 2 still holds the old `/b`. The new
/// `/b` is a new inode beside `/l`'s, on the cluster as in the model, and node 2 ends with both.
#[test]
fn oracle_index_file_written_again_beside_its_old_hardlink() {
    let write = |p: &[u8], seed| model::Op::Write {
        path: p.to_vec(),
        bytes: 100,
        seed,
    };
    let ops = vec![
        (0b111, write(b"/b", 1), true),
        (0b111, model::Op::Link(b"/b".to_vec(), b"/l".to_vec()), true),
        (0b011, model::Op::Rm(b"/b".to_vec()), true),
        (0b011, write(b"/b", 2), true),
    ];
    let case = Case {
        ops,
        class: Class::Committed { q: 0b011 },
        ..Case::arbitrary(vec![Role::Master; 3], Vec::new())
    }
    .on_index();
    against_cluster(&case).unwrap();
    model_committed_index(&case, quorum).unwrap();
    committed_on_index(&case).unwrap();
    let c = real::build(&case).unwrap();
    real::sync_round(&c, 3).unwrap();
    let want = oracle::index::Names::committed(&case);
    let d = real::defaults();
    for p in [&b"/b"[..], b"/l"] {
        assert_eq!(
            untimed(real::observe(&c, 2, p)),
            want.expect(p, d.dir, d.file)
        );
    }
}

/// How many committed cases [`committed_on_index`] checked, and how many of them had hardlinks.
static INDEX_CASES: AtomicUsize = AtomicUsize::new(0);
static INDEX_LINK_CASES: AtomicUsize = AtomicUsize::new(0);

#[test]
fn oracle_index_layout_committed_histories() {
    let ops = prop::env_num("H2S_ORACLE_OPS", 14) as usize;
    prop::run_index("index_committed", 600, ops, committed_on_index);
    let n = INDEX_CASES.load(Ordering::Relaxed);
    let l = INDEX_LINK_CASES.load(Ordering::Relaxed);
    assert!(
        n >= 100 && l >= 20,
        "only {n} committed histories ({l} with hardlinks) checked"
    );
}

#[test]
fn negative_control_index_property_sees_a_skipped_sync() {
    // What the committed-history check of today's layout reads, on the lagging slave's cluster
    // before any sync: node 0 shows the committed tree, the slave does not.
    let case = lagging_slave_case();
    let c = real::build(&case).unwrap();
    let paths = named(&case);
    let want = oracle::index::Names::committed(&case);
    let d = real::defaults();
    let seen = |i: usize| -> Vec<real::Seen> {
        paths
            .iter()
            .map(|p| untimed(real::observe(&c, i, p)))
            .collect()
    };
    let wanted: Vec<real::Seen> = paths
        .iter()
        .map(|p| want.expect(p, d.dir, d.file))
        .collect();
    assert!(seen(0) == wanted, "node 0 holds the committed tree");
    assert!(seen(3) != wanted, "the unsynchronized slave differs");
    assert!(!c.in_sync(3));
}
