//! The protocol tests of [`crate::testkit::selftest`], one `#[test]` each, on the userland host.

use alloc::string::String;

use crate::testkit::selftest::CASES;

fn run(name: &str) {
    let (_, case) = CASES
        .iter()
        .find(|(n, _)| *n == name)
        .expect("no such case");
    let mut diag = String::new();
    if let Err(msg) = case(crate::userland::host(), &mut diag) {
        panic!("{name}: {msg}\n{diag}");
    }
}

macro_rules! cases {
    ($($name:ident)*) => {
        $(#[test] fn $name() { run(stringify!($name)); })*
        #[test]
        fn every_case_has_a_test() {
            let names = [$(stringify!($name)),*];
            for (n, _) in CASES {
                assert!(names.contains(n), "case {n} has no #[test]");
            }
        }
    };
}

cases! {
    ops_on_idle_slot_are_noops
    each_request_acknowledged
    freeze_during_pass
    stop_while_frozen
    stop_after_pass_is_prompt
    freeze_unfreeze_1000
    remaster_runs_reset
    concurrent_freeze_vs_stop
    concurrent_unfreeze_vs_remaster
    concurrent_stop_vs_stop
    concurrent_freeze_vs_unfreeze
    restart_cycles
    freeze_during_real_sync
    stress
}
